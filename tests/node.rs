//! `capsule up` as a person runs it: a real process serving real HTTP on
//! loopback, with its sync listener; stopped by SIGTERM.

use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::common::{Up, capsule_bin, capsule_ok, get, init, raw_request};

/// The node as a library: `node::run` on listeners bound to port 0 in this
/// process serves the owner's posts, and returns when its shutdown future
/// resolves, leaving the store closed (it opens again at once).
#[test]
fn a_node_runs_in_process_until_told_to_stop() {
    use capsule::node::config::Settings;
    use capsule::node::{self, Listeners, NodeConfig};

    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    capsule_ok(dir.path(), &["post", "served in process"]);
    let data = capsule::data_dir::DataDir::new(dir.path().to_path_buf());
    let identity = capsule::identity::Identity::load(&data.identity()).unwrap();
    let store = capsule::store::Store::open(&data.store()).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = Settings {
        listen: Some(any),
        sync_listen: Some(any),
        ..Settings::default()
    };
    let config = NodeConfig::new(dir.path(), settings).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listeners = Listeners::bind(&config, &identity).await.unwrap();
        let web = listeners.web.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(node::run(identity, store, config, listeners, async {
            let _ = stopped.await;
        }));
        let (status, _, body) = tokio::task::spawn_blocking(move || get(&web, "/"))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("served in process"));
        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), running)
            .await
            .expect("the node stops when told")
            .unwrap()
            .unwrap();
    });
    capsule::store::Store::open(&data.store())
        .unwrap()
        .close()
        .unwrap();
}

#[test]
fn the_node_serves_its_timeline_feed_and_api_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let key = init(dir.path());
    capsule_ok(dir.path(), &["post", "hello <b>world</b> & friends"]);
    capsule_ok(dir.path(), &["post", "second post"]);
    let node = Up::start(dir.path());

    let (status, home) = node.text("/");
    assert_eq!(status, 200);
    assert!(
        home.contains("hello &lt;b&gt;world&lt;/b&gt; &amp; friends"),
        "{home}"
    );
    assert!(
        home.find("second post") < home.find("hello &lt;b&gt;"),
        "newest first"
    );
    let (_, content_type, _) = node.get("/");
    assert!(content_type.starts_with("text/html"));

    let (status, permalink) = node.text(&format!("/@{key}/2"));
    assert_eq!(status, 200);
    assert!(permalink.contains("second post"));
    assert_eq!(node.get(&format!("/@{key}/99")).0, 404);

    let css = home
        .split("href=\"")
        .find(|s| s.starts_with("/assets/") && s.contains("style.css"))
        .unwrap();
    let css = &css[..css.find('"').unwrap()];
    let (status, content_type, _) = node.get(css);
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/css; charset=utf-8")
    );
    assert_eq!(node.get("/assets/0000000000000000/style.css").0, 404);

    let (status, feed) = node.text("/feed.atom");
    assert_eq!(status, 200);
    assert!(feed.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\">"));
    // A real feed parser reads it as Atom, entries matching the posts.
    let parsed = feed_rs::parser::parse(feed.as_bytes()).expect("valid Atom");
    assert_eq!(parsed.feed_type, feed_rs::model::FeedType::Atom);
    let texts: Vec<String> = parsed
        .entries
        .iter()
        .map(|e| e.content.as_ref().and_then(|c| c.body.clone()).unwrap())
        .collect();
    assert_eq!(texts, ["second post", "hello <b>world</b> & friends"]);
    assert_eq!(parsed.entries[0].id, format!("urn:capsule:{key}:2"));
    assert!(parsed.entries[0].updated.is_some());

    let (status, known) = node.text("/.well-known/capsule");
    assert_eq!(status, 200);
    let known: serde_json::Value = serde_json::from_str(&known).unwrap();
    assert_eq!(known["author"], key.as_str());
    assert_eq!(known["sync"], node.sync.as_str());

    let (status, entries) = node.text(&format!("/api/v1/authors/{key}/entries?from=2"));
    assert_eq!(status, 200);
    let entries: serde_json::Value = serde_json::from_str(&entries).unwrap();
    assert_eq!(entries["entries"][0]["record"]["text"], "second post");
    assert_eq!(entries["head"], 2);

    // Raw entries verify on their own.
    let (status, _, raw) = node.get(&format!("/api/v1/authors/{key}/entries.bin"));
    assert_eq!(status, 200);
    assert_eq!(raw.len(), 2 * capsule::log::entry::ENTRY_LEN);
    for chunk in raw.chunks(capsule::log::entry::ENTRY_LEN) {
        let entry = capsule::log::entry::Entry::decode(chunk).unwrap();
        assert!(capsule::log::verify::signature_valid(&entry));
    }

    for bad in [
        format!("/api/v1/authors/{key}/entries?from=0"),
        format!("/api/v1/authors/{key}/entries?limit=abc"),
        format!("/api/v1/authors/{key}/entries.bin?limit=1000000"),
        "/api/v1/authors/nokey/entries".to_string(),
        "/api/v1/entries/zz".to_string(),
        "/api/v1/payloads/12".to_string(),
    ] {
        let (status, content_type, body) = node.get(&bad);
        assert_eq!(status, 400, "{bad}");
        assert_eq!(content_type, "application/json", "{bad}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].is_string(), "{bad}");
    }

    // While the node runs, commands reach it through its admin socket.
    let socket = dir.path().join("admin.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may talk to the node");
    let out = capsule_ok(dir.path(), &["post", "posted while up"]);
    assert!(out.starts_with("published entry 3 "), "{out}");
    assert!(node.text("/").1.contains("posted while up"));
    capsule_ok(dir.path(), &["delete", "1"]);
    assert!(!node.text("/").1.contains("hello &lt;b&gt;"));
    let refused = crate::common::capsule(dir.path(), &["delete", "99"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("your log has no entry 99"));
    // Reading the log works while the node holds the store: it writes it.
    let log = capsule_ok(dir.path(), &["log"]);
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(
        log.contains("posted while up") && log.contains("(deleted by entry 4)"),
        "{log}"
    );
    let lines = capsule_ok(dir.path(), &["log", "--json"]);
    for line in lines.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    let other = crate::common::test_identity(7).author().to_string();
    assert!(capsule_ok(dir.path(), &["log", &other]).contains("no entries of"));
    assert!(capsule_ok(dir.path(), &["mirror", &other]).contains("now mirroring"));
    assert!(capsule_ok(dir.path(), &["mirror", &other]).contains("already mirroring"));
    assert!(capsule_ok(dir.path(), &["unmirror", &other]).contains("no longer mirroring"));

    assert!(node.stop().success());
    assert!(!socket.exists(), "the socket goes with the node");
    capsule_ok(dir.path(), &["verify", "--store"]);
    // Stopped, the command line writes to the store itself.
    capsule_ok(dir.path(), &["post", "after the node stopped"]);
}

#[test]
fn a_mirror_shows_a_verified_copy_of_anothers_log() {
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let alice = init(alice_dir.path());
    init(bob_dir.path());
    capsule_ok(alice_dir.path(), &["post", "from alice's node"]);
    let alice_node = Up::start(alice_dir.path());
    capsule_ok(bob_dir.path(), &["mirror", &alice]);
    let report = capsule_ok(bob_dir.path(), &["sync", &alice_node.sync]);
    assert!(report.contains("received 1 entries"), "{report}");
    assert!(alice_node.stop().success());

    // Alice's node is down; bob's serves her post, marked as a verified copy.
    let bob_node = Up::start(bob_dir.path());
    let (status, page) = bob_node.text(&format!("/@{alice}"));
    assert_eq!(status, 200);
    assert!(
        page.contains("from alice&#39;s node") || page.contains("from alice's node"),
        "{page}"
    );
    assert!(page.contains("verified copy"));
    assert_eq!(bob_node.get("/@aaaa").0, 404);
    assert!(bob_node.stop().success());
}

/// schemathesis (from PyPI; .ci/test installs it) against schema/openapi.yaml
/// on a running node with data: no server error, no response that breaks
/// the schema, no valid request refused.
#[test]
fn the_api_conforms_to_its_openapi_description() {
    if !crate::common::tools_present(&["schemathesis"], "schemathesis") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    // Every post has a picture, so that wherever schemathesis's walk
    // through the links lands, the entry's link leads on to a blob (with
    // one picture among six entries, some walks never reached one).
    for i in 1..=5 {
        let picture = dir.path().join(format!("picture{i}.png"));
        crate::common::write_png(&picture, 64 + i, 48);
        capsule_ok(
            dir.path(),
            &[
                "post",
                &format!("post {i} <for> the API & its tests"),
                "--attach",
                picture.to_str().unwrap(),
                "--alt",
                "a gradient",
            ],
        );
    }
    capsule_ok(dir.path(), &["delete", "2"]);
    let picture = dir.path().join("picture.png");
    crate::common::write_png(&picture, 64, 48);
    capsule_ok(
        dir.path(),
        &[
            "post",
            "a picture",
            "--attach",
            picture.to_str().unwrap(),
            "--alt",
            "a gradient",
        ],
    );
    let node = Up::start(dir.path());
    let (status, yaml) = node.text("/api/v1/openapi.yaml");
    assert_eq!(status, 200);
    assert!(yaml.starts_with("openapi: 3"));
    let run = Command::new("schemathesis")
        .args(["run", &format!("http://{}/api/v1/openapi.yaml", node.web)])
        .args(["--checks", "all", "--max-examples", "40"])
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis runs (pip install schemathesis; .ci/run installs it)");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
    // The description's links lead it from the authors list to real keys,
    // seqs, entry ids and payload hashes, not only to 404s.
    let covered: u32 = report
        .split(" covered / ")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no links covered: {report}"));
    assert!(covered >= 5, "{covered} of the 8 links followed: {report}");
    assert!(!report.contains("Missing test data"), "{report}");
    assert!(node.stop().success());
}

/// The admin socket outlives running out of file descriptors: with the
/// node held at 64 open files and its gateway flooded with connections, a
/// `capsule status` waits instead of breaking the socket, and answers once
/// the connections are gone; posting works again after.
#[test]
fn the_admin_socket_survives_running_out_of_file_descriptors() {
    if !crate::common::tools_present(&["prlimit"], "util-linux (prlimit)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let node = Up::start(dir.path());
    let limited = Command::new("prlimit")
        .args(["--pid", &node.child.id().to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(limited.success());
    let flood: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&node.web).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = Command::new(capsule_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["status", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it meet the exhausted node before the descriptors come back.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(flood);
    let out = status.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = capsule_ok(dir.path(), &["post", "after the flood"]);
    assert!(again.contains("published entry 1"), "{again}");
    assert!(node.stop().success());
}

/// A full disk is an error the node recovers from: with its data dir on a
/// 6 MiB tmpfs, posting fails with words about the full disk (the same for
/// every later post while it is full, not "the writer stopped"); once the
/// tmpfs grows, the next post goes through without a restart, and the store
/// verifies. Needs root for mount (CI runs as root).
#[test]
fn a_full_disk_is_a_recoverable_error() {
    if !crate::common::is_root("mounting a tmpfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("small");
    let _unmount = crate::common::Unmount::tmpfs(&mount, "6m");
    let dir = mount.join("data");
    init(&dir);
    let node = Up::start(&dir);
    // 40 KB posts that do not compress: the disk fills in about 100.
    let text: String = (0..40_000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    let post = |text: &str| crate::common::capsule(&dir, &["post", text]);
    let mut published = 0;
    let refusal = loop {
        let out = post(&format!("{published} {text}"));
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).to_string();
        }
        published += 1;
        assert!(published < 1000, "the disk never filled");
    };
    assert!(
        refusal.contains("disk") && refusal.contains("full"),
        "{refusal}"
    );
    let again = post("one more while the disk is full");
    assert!(!again.status.success());
    let again = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(
        again.contains("full") && !again.contains("stopped"),
        "{again}"
    );

    let grown = Command::new("mount")
        .args(["-o", "remount,size=32m"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(grown.success());
    let out = post("after space came back");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("published entry {}", published + 1))
    );
    assert!(node.stop().success());
    let verified = capsule_ok(&dir, &["verify", "--store"]);
    assert!(
        verified.contains(&format!("verified {} entries", published + 1)),
        "{verified}"
    );
}

/// Numbers in paths and queries follow one rule, the API description's
/// int64: digits only, at most 2^63 − 1. A sign or a larger number is
/// refused, in a path as in a query.
#[test]
fn numbers_in_paths_and_queries_follow_the_api_description() {
    let dir = tempfile::tempdir().unwrap();
    let key = init(dir.path());
    capsule_ok(dir.path(), &["post", "one"]);
    let node = Up::start(dir.path());
    let api = |path: &str| node.get(&format!("/api/v1/authors/{key}{path}")).0;
    assert_eq!(api("/entries?from=1"), 200);
    assert_eq!(api("/entries?from=9223372036854775807"), 200);
    assert_eq!(api("/entries?from=9223372036854775808"), 400);
    assert_eq!(api("/entries?from=+1"), 400);
    assert_eq!(api("/entries?limit=+5"), 400);
    assert_eq!(api("/certificate/1"), 200);
    assert_eq!(api("/certificate/+1"), 400);
    assert_eq!(api("/certificate/9223372036854775808"), 400);
    assert_eq!(node.get(&format!("/@{key}/1")).0, 200);
    assert_eq!(node.get(&format!("/@{key}/+1")).0, 404);
    assert!(node.stop().success());
}

/// Every error under /api/v1 is JSON, as the description promises: an
/// unknown route and a method the API does not take too.
#[test]
fn api_errors_are_json_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let node = Up::start(dir.path());
    let (status, content_type, body) = node.get("/api/v1/no/such/route");
    assert_eq!(status, 404);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("/api/v1/no/such/route")
    );
    let web = node.web.clone();
    let answer = raw_request(
        &web,
        &format!("DELETE /api/v1/node HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json"), "{answer}");
    assert!(lower.contains("allow: get, head"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    // A path segment that is not UTF-8, and a request line too long to read.
    for (path, status) in [
        ("/api/v1/authors/%FF/entries".to_string(), 400),
        ("/api/v1/entries/%C3%28".to_string(), 400),
        (format!("/api/v1/entries/{}", "a".repeat(9000)), 414),
    ] {
        let (got, content_type, body) = node.get(&path);
        assert_eq!(got, status, "{path}");
        assert!(
            content_type.starts_with("application/json"),
            "{path}: {content_type}"
        );
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{json}"
        );
    }
    assert!(node.stop().success());
}

/// What search engines and browsers look for besides the page: every page
/// describes itself (a post by its own words), the site has an icon (no
/// request for a missing /favicon.ico, an error in the browser's console),
/// and /robots.txt says what may be indexed.
#[test]
fn pages_describe_themselves_and_the_site_has_an_icon_and_robots_txt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let key = init(&data);
    capsule_ok(
        &data,
        &["profile", "--name", "Ada", "--bio", "Engines and poems."],
    );
    let long = "word ".repeat(60);
    capsule_ok(
        &data,
        &["post", &format!("On the analytical engine: {long}")],
    );
    let node = Up::start(&data);
    let description = |page: &str| {
        let at = page.find("<meta name=\"description\" content=\"").unwrap();
        let rest = &page[at + "<meta name=\"description\" content=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    let (status, home) = node.text("/");
    assert_eq!(status, 200);
    assert_eq!(description(&home), "Engines and poems.");
    let (status, post) = node.text(&format!("/@{key}/2"));
    assert_eq!(status, 200);
    let said = description(&post);
    assert!(said.starts_with("On the analytical engine: word"), "{said}");
    assert!(said.ends_with('…') && said.chars().count() <= 155, "{said}");
    let icon = home
        .split("<link rel=\"icon\" type=\"image/svg+xml\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let (status, content_type, body) = node.get(icon);
    assert_eq!((status, content_type.as_str()), (200, "image/svg+xml"));
    assert!(body.starts_with(b"<svg"));
    let (status, content_type, robots) = node.get("/robots.txt");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let robots = String::from_utf8(robots).unwrap();
    assert!(
        robots.starts_with("User-agent: *\n") && robots.contains("Allow: /"),
        "{robots}"
    );
    assert!(node.stop().success());
}
