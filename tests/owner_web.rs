//! The owner's web interface over plain HTTP on a real node: logging in
//! (rate-limited, counted in the metrics), forms refused from other sites,
//! muting and blocking from an author's page.

use std::process::{Command, Stdio};

use crate::common::{Up, capsule_bin, capsule_ok, csrf_in, init, raw_request, try_login};

#[test]
fn login_is_rate_limited_and_counted_in_metrics() {
    use crate::common::Proc;
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    crate::common::set_passphrase(dir.path(), "the right passphrase");

    // Metrics stay on the machine.
    let out = crate::common::capsule(
        dir.path(),
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--sync-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "0.0.0.0:0",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a loopback address"));

    let mut node = Proc::spawn(
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--sync-listen",
                "127.0.0.1:0",
            ])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stderr(Stdio::null()),
    );
    let metrics = node.wait_line(20, |l| l.starts_with("metrics: http://"));
    let metrics = metrics["metrics: http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let up = node.wait_line(20, |l| l.starts_with("Capsule is up: http://"));
    let web = up["Capsule is up: http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();

    let (status, answer) = try_login(&web, "the right passphrase");
    assert_eq!(status, 303, "{answer}");
    assert!(answer.contains("capsule_session="));
    for _ in 0..5 {
        assert_eq!(try_login(&web, "a wrong passphrase").0, 401);
    }
    // Over the limit, even the right passphrase waits.
    let (status, answer) = try_login(&web, "the right passphrase");
    assert_eq!(status, 429, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: "));

    let text = raw_request(
        &metrics,
        &format!("GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"),
    );
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    assert!(
        text.contains("\ncapsule_login_failures_total 5\n"),
        "{text}"
    );
    assert!(
        text.contains("\ncapsule_http_responses_total{class=\"4xx\"} 6\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE capsule_store_authors gauge"),
        "{text}"
    );
    assert!(node.terminate().success());
}

/// A form posted from another site is refused even with the owner's real
/// session cookie and CSRF token: the browser says where it comes from
/// (`Origin`, `Sec-Fetch-Site`), and nothing is published. The same form
/// from the node's own pages goes through.
#[test]
fn a_form_from_another_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    crate::common::set_passphrase(dir.path(), "the right passphrase");
    let node = Up::start(dir.path());
    let web = node.web.clone();
    let session = crate::common::login(&web, "the right passphrase");
    let home = raw_request(
        &web,
        &format!(
            "GET / HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\nCookie: capsule_session={session}\r\n\r\n"
        ),
    );
    let csrf = csrf_in(&home);
    let post = |extra: &str, text: &str| {
        let body = format!("text={text}&csrf={csrf}");
        let answer = raw_request(
            &web,
            &format!(
                "POST /post HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
                 Cookie: capsule_session={session}\r\n{extra}\r\n{body}",
                body.len()
            ),
        );
        answer
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    assert_eq!(post("Origin: https://evil.example\r\n", "from+evil"), 403);
    assert_eq!(post("Sec-Fetch-Site: cross-site\r\n", "from+a+frame"), 403);
    assert_eq!(post("Origin: null\r\n", "from+nowhere"), 403);
    let log = capsule_ok(dir.path(), &["log"]);
    assert!(
        !log.contains("from evil") && !log.contains("from a frame"),
        "{log}"
    );
    assert_eq!(
        post(
            &format!("Origin: http://{web}\r\nSec-Fetch-Site: same-origin\r\n"),
            "from+home"
        ),
        303
    );
    assert!(capsule_ok(dir.path(), &["log"]).contains("from home"));
    assert!(node.stop().success());
}

/// The owner mutes and blocks from an author's page: a muted author's
/// posts leave the home timeline (and come back when unmuted); a blocked
/// author's page shows the owner only the Unblock button, and everyone
/// else a 403.
#[test]
fn the_owner_mutes_and_blocks_from_the_web() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    crate::common::set_passphrase(dir.path(), "the right passphrase");
    let x = crate::common::test_identity(5);
    let x_key = x.author().to_string();
    let mut w = capsule::archive::ArchiveWriter::new(Vec::new()).unwrap();
    let payload = capsule::log::record::Record::post("a post by X")
        .encode()
        .unwrap();
    let entry = capsule::log::builder::LogBuilder::new(&x).next(1_764_000_000_000_000, &payload);
    w.write_entry(&entry, Some(&payload)).unwrap();
    let archive = dir.path().join("x.capsule");
    std::fs::write(&archive, w.finish().unwrap()).unwrap();
    capsule_ok(dir.path(), &["import", archive.to_str().unwrap()]);
    capsule_ok(dir.path(), &["follow", &x_key]);
    let node = Up::start(dir.path());
    let web = node.web.clone();
    let session = crate::common::login(&web, "the right passphrase");
    let get = |path: &str, cookie: bool| {
        let cookie = if cookie {
            format!("Cookie: capsule_session={session}\r\n")
        } else {
            String::new()
        };
        raw_request(
            &web,
            &format!("GET {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n{cookie}\r\n"),
        )
    };
    let page = get(&format!("/@{x_key}"), true);
    assert!(
        page.contains("value=\"mute\"") && page.contains("value=\"block\""),
        "{page}"
    );
    let csrf = csrf_in(&page);
    let act = |action: &str| {
        let body = format!("author={x_key}&action={action}&csrf={csrf}");
        let answer = raw_request(
            &web,
            &format!(
                "POST /block HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
                 Cookie: capsule_session={session}\r\n\r\n{body}",
                body.len()
            ),
        );
        answer
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    assert!(
        get("/", true).contains("a post by X"),
        "followed: on the home timeline"
    );
    assert_eq!(act("mute"), 303);
    assert!(
        !get("/", true).contains("a post by X"),
        "muted: off the home timeline"
    );
    assert!(
        get(&format!("/@{x_key}"), false).contains("a post by X"),
        "a mute hides nothing else"
    );
    assert_eq!(act("unmute"), 303);
    assert!(get("/", true).contains("a post by X"));
    assert_eq!(act("block"), 303);
    let page = get(&format!("/@{x_key}"), true);
    assert!(
        page.contains("its owner blocks them") && page.contains("value=\"unblock\""),
        "{page}"
    );
    assert!(!page.contains("a post by X"));
    assert!(get(&format!("/@{x_key}"), false).starts_with("HTTP/1.1 403"));
    assert!(!get("/", true).contains("a post by X"));
    let status = capsule_ok(dir.path(), &["status"]);
    assert!(
        status.contains("blocked 1:") && status.contains(&x_key),
        "{status}"
    );
    assert!(node.stop().success());
}
