//! The owner's web interface in a real browser: Debian's headless Chromium,
//! driven over WebDriver (chromedriver) by a small client below. Logs in
//! (a wrong passphrase first), posts, sees the post on the timeline and its
//! page, replies, deletes, logs out; forms without the CSRF token are
//! refused. Screenshots of the timeline and a post page are saved under
//! `target/tmp/browser/` for a person to look at.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Proc, capsule_bin, capsule_ok, free_port, init};

const PASSPHRASE: &str = "correct horse battery staple";

/// One HTTP/1.1 request on a fresh connection: (status, headers, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    // Read the head, then exactly the body its length names (some servers
    // keep the connection open whatever the request says).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = read_some(&mut stream, &mut buf);
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let mut body = raw[split + 4..].to_vec();
    match length {
        Some(length) => {
            while body.len() < length {
                let n = read_some(&mut stream, &mut buf);
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut body).unwrap();
            if lower.contains("transfer-encoding: chunked") {
                body = dechunk(&body);
            }
        }
    }
    (status, head, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 2 + size + 2..];
    }
}

/// A WebDriver session with chromedriver.
struct Browser {
    _driver: Proc,
    addr: String,
    session: String,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let port = free_port();
        let driver = Proc::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stderr(Stdio::null()),
        );
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=480,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let mut browser = Browser {
            _driver: driver,
            addr,
            session: String::new(),
        };
        let answer = browser.call("POST", "/session", Some(capabilities));
        browser.session = answer["sessionId"].as_str().unwrap().to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let path = if self.session.is_empty() {
            path.to_string()
        } else {
            format!("/session/{}{path}", self.session)
        };
        let (status, _, answer) = http(
            &self.addr,
            method,
            &path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_string()
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Waits until the page's source satisfies `f`.
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let source = self.source();
            if f(&source) {
                return source;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {what}:\n{source}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&self, path: &Path) {
        use data_encoding::BASE64;
        let png = self.call("GET", "/screenshot", None);
        let bytes = BASE64.decode(png.as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::write(path, bytes).unwrap();
    }

    /// Runs `script` in the page: its return value.
    fn execute(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.call("GET", "/cookie", None)
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["value"].as_str().unwrap().to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(|| http(&self.addr, "DELETE", &path, &[], b""));
        }
    }
}

fn form_post(web: &str, path: &str, cookie: &str, body: &str) -> (u16, String) {
    let (status, head, _) = http(
        web,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie),
        ],
        body.as_bytes(),
    );
    (status, head)
}

/// `capsule up` on loopback for `data`: the process and its HOST:PORT.
fn start_node(data: &Path) -> (Proc, String) {
    let mut node = Proc::spawn(
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(data)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--sync-listen",
                "127.0.0.1:0",
            ])
            .stderr(Stdio::null()),
    );
    let up = node.wait_line(20, |l| l.starts_with("Capsule is up: http://"));
    let web = up["Capsule is up: http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    (node, web)
}

/// Where screenshots go, for a person to look at.
fn screenshots() -> PathBuf {
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

#[test]
fn the_owner_writes_from_a_real_browser() {
    if !crate::common::tools_present(&["chromium", "chromedriver"], "chromium") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    init(&data);
    crate::common::set_passphrase(&data, PASSPHRASE);
    capsule_ok(
        &data,
        &[
            "profile",
            "--name",
            "Ada",
            "--bio",
            "Writes from her own node.",
        ],
    );

    let (mut node, web) = start_node(&data);
    let base = format!("http://{web}");
    let shots = screenshots();
    let browser = Browser::start(&tmp.path().join("chromium"));

    // A wrong passphrase is refused; the right one logs in.
    browser.go(&format!("{base}/login"));
    browser.type_into("#passphrase", "not the passphrase");
    browser.click("form.compose button");
    browser.wait_for("the refusal", |s| s.contains("Wrong passphrase."));
    browser.type_into("#passphrase", PASSPHRASE);
    browser.click("form.compose button");
    let home = browser.wait_for("the compose form", |s| s.contains("New post"));
    assert!(home.contains("Ada") && home.contains("Writes from her own node."));

    // Post; the browser lands on the post's page.
    browser.type_into("#text", "Hello from a real browser <b>not bold</b>");
    browser.click("form.compose button");
    let page = browser.wait_for("the new post", |s| s.contains("Hello from a real browser"));
    assert!(
        page.contains("&lt;b&gt;not bold&lt;/b&gt;"),
        "text is escaped"
    );
    let post_url = browser.url();
    assert!(post_url.contains("/@"), "{post_url}");

    // Reply to it from its page; the reply shows its parent, the parent its reply.
    browser.type_into("#text", "And a reply to it");
    browser.click("form.compose button");
    let reply = browser.wait_for("the reply", |s| s.contains("And a reply to it"));
    assert!(reply.contains("in reply to") && reply.contains("Hello from a real browser"));
    browser.go(&post_url);
    let thread = browser.wait_for("the thread", |s| s.contains("1 reply"));
    assert!(thread.contains("And a reply to it"));
    browser.screenshot(&shots.join("permalink.png"));

    browser.go(&format!("{base}/"));
    let timeline = browser.wait_for("the timeline", |s| s.contains("And a reply to it"));
    assert!(timeline.contains("Hello from a real browser"));
    browser.screenshot(&shots.join("timeline.png"));

    // Forms without the session's CSRF token are refused, whatever the cookie.
    let session = browser.cookie("capsule_session").expect("a session cookie");
    let cookie = format!("capsule_session={session}");
    let (status, _) = form_post(&web, "/post", &cookie, "text=forged");
    assert_eq!(status, 403);
    let (status, _) = form_post(
        &web,
        "/post",
        &cookie,
        &format!("text=forged&csrf={}", "0".repeat(64)),
    );
    assert_eq!(status, 403);
    let (status, _) = form_post(&web, "/delete", &cookie, "seq=2");
    assert_eq!(status, 403);
    assert!(!browser.source().contains("forged"));

    // Delete the first post from the timeline (its button is the last one).
    let buttons = browser.call(
        "POST",
        "/elements",
        Some(json!({ "using": "css selector", "value": "button.danger" })),
    );
    let buttons = buttons.as_array().unwrap();
    assert_eq!(buttons.len(), 2, "one delete button per live post");
    let last = buttons
        .last()
        .unwrap()
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    browser.call(
        "POST",
        &format!("/element/{}/click", last.as_str().unwrap()),
        Some(json!({})),
    );
    browser.wait_for("the deletion", |s| s.contains("deleted by its author"));
    assert!(!browser.source().contains("Hello from a real browser"));

    // Follow an author by key from the home page's form.
    let someone = crate::common::test_identity(9).author().to_string();
    browser.go(&format!("{base}/"));
    browser.type_into("#target", &someone);
    browser.click("form.follow button");
    browser.wait_for("the follow", |s| s.contains("the 1 author you follow"));
    browser.go(&format!("{base}/"));
    browser.type_into("#target", "not a key or a domain");
    browser.click("form.follow button");
    browser.wait_for("the refusal", |s| s.contains("Not followed"));
    browser.go(&format!("{base}/"));

    // Log out: the session is gone, in the browser and on the server.
    browser.click("nav.bar button");
    browser.wait_for("the login link", |s| s.contains("Log in"));
    let (status, head) = form_post(&web, "/post", &cookie, "text=late");
    assert_eq!(status, 303);
    assert!(
        head.to_ascii_lowercase().contains("location: /login"),
        "{head}"
    );

    drop(browser);
    assert!(node.terminate().success());
    let log = capsule_ok(&data, &["log"]);
    assert!(log.contains("And a reply to it"), "{log}");
    eprintln!("screenshots: {}", shots.display());
}

/// The owner attaches two pictures with alt text in the compose form, and
/// a profile picture in the profile form; the post's page and the timeline
/// show them at their size, loaded, with their alt text.
#[test]
fn the_owner_posts_pictures_from_a_real_browser() {
    if !crate::common::tools_present(&["chromium", "chromedriver"], "chromium") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    init(&data);
    crate::common::set_passphrase(&data, PASSPHRASE);
    capsule_ok(&data, &["profile", "--name", "Ada"]);
    let (photo, drawing, face) = (
        tmp.path().join("harbour.jpg"),
        tmp.path().join("drawing.png"),
        tmp.path().join("face.jpg"),
    );
    std::fs::write(&photo, crate::common::jpeg(1600, 900)).unwrap();
    crate::common::write_png(&drawing, 300, 400);
    std::fs::write(&face, crate::common::jpeg(500, 400)).unwrap();
    let (mut node, web) = start_node(&data);
    let base = format!("http://{web}");
    let shots = screenshots();
    let browser = Browser::start(&tmp.path().join("chromium"));
    browser.go(&format!("{base}/login"));
    browser.type_into("#passphrase", PASSPHRASE);
    browser.click("form.compose button");
    browser.wait_for("the compose form", |s| s.contains("New post"));

    browser.type_into("#text", "Two pictures from the harbour");
    browser.click("details.pictures summary");
    browser.type_into("#picture1", photo.to_str().unwrap());
    browser.type_into("#alt1", "boats in the harbour at dawn");
    browser.type_into("#picture2", drawing.to_str().unwrap());
    browser.type_into("#alt2", "a drawing of the harbour");
    browser.click("form.compose button[type=submit]");
    browser.wait_for("the post's page", |s| {
        s.contains("boats in the harbour at dawn")
    });
    let shown = |browser: &Browser| {
        browser.call(
            "POST",
            "/execute/sync",
            Some(json!({
                "script": "return [...document.querySelectorAll('.pictures img')].map(i => ({alt: i.alt, width: i.getAttribute('width'), height: i.getAttribute('height'), loaded: i.complete && i.naturalWidth > 0, lazy: i.loading}))",
                "args": [],
            })),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let images = loop {
        let images = shown(&browser);
        let all_loaded = images
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["loaded"] == true);
        if all_loaded || Instant::now() > deadline {
            break images;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The photo is shown by its 1200 × 675 thumbnail, the drawing whole,
    // each at two image pixels per CSS pixel.
    assert_eq!(
        images,
        json!([
            {"alt": "boats in the harbour at dawn", "width": "600", "height": "338", "loaded": true, "lazy": "lazy"},
            {"alt": "a drawing of the harbour", "width": "150", "height": "200", "loaded": true, "lazy": "lazy"},
        ])
    );
    browser.screenshot(&shots.join("pictures-permalink.png"));
    browser.go(&format!("{base}/"));
    browser.wait_for("the timeline", |s| s.contains("a drawing of the harbour"));
    browser.screenshot(&shots.join("pictures-timeline.png"));

    // A profile picture from the browser.
    browser.click("details.profile-form summary");
    browser.type_into("#avatar", face.to_str().unwrap());
    browser.click("details.profile-form button[type=submit]");
    let page = browser.wait_for("the profile picture", |s| {
        s.contains("img class=\"avatar\"")
    });
    assert!(page.contains("Ada's picture"), "{page}");
    browser.screenshot(&shots.join("pictures-profile.png"));
    drop(browser);
    assert!(node.terminate().success());
    let log = capsule_ok(&data, &["log"]);
    assert!(
        log.contains("[2 pictures] Two pictures from the harbour"),
        "{log}"
    );
}

/// One `read`, again when a signal interrupted it (the crash tests stop and
/// resume their children, and each stop tells this process).
fn read_some(stream: &mut impl Read, buf: &mut [u8]) -> usize {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.unwrap(),
        }
    }
}

/// A fediverse reply carrying a script, an event handler and a javascript:
/// link, as a browser renders the post's page: no script element, no
/// handler attribute, no such link, and no dialog opened.
#[test]
fn a_hostile_fediverse_reply_is_inert_in_a_browser() {
    if !crate::common::tools_present(&["chromium", "chromedriver"], "chromium") {
        return;
    }
    let Some(peer) = crate::fediverse::Peer::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = crate::fediverse::alice(&tmp.path().join("alice"));
    let author = crate::fediverse::author_of(&tmp.path().join("alice"));
    let actor = format!("http://{}/@{author}", node.web);
    capsule_ok(&tmp.path().join("alice"), &["post", "a post to answer"]);
    let note = format!("{actor}/1");
    peer.control(
        "note",
        &json!({
            "to": actor,
            "inReplyTo": note,
            "content": "<p>hostile <script>alert(1)</script><img src=x onerror=alert(2)><a href=\"javascript:alert(3)\">click</a><b onmouseover=alert(4)>bold</b></p>",
        }),
    );
    let browser = Browser::start(&tmp.path().join("profile"));
    let page = format!("http://{}/@{author}/1", node.web);
    crate::fediverse::eventually(20, "the reply shows", || {
        browser.go(&page);
        browser.source().contains("hostile")
    });
    let found = browser.execute(
        "return [document.scripts.length, \
                 document.querySelectorAll('[onerror],[onmouseover],[onclick]').length, \
                 document.querySelectorAll('a[href^=\"javascript\"]').length, \
                 document.querySelectorAll('img[src=\"x\"]').length];",
    );
    assert_eq!(found, json!([0, 0, 0, 0]), "{}", browser.source());
    // No dialog was opened: WebDriver has no alert to read.
    let (status, _, _) = http(
        &browser.addr,
        "GET",
        &format!("/session/{}/alert/text", browser.session),
        &[],
        b"",
    );
    assert_eq!(status, 404, "a dialog opened");
    browser.screenshot(&screenshots().join("fediverse-reply.png"));
}
