//! Helpers shared by the integration tests.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use capsule::identity::Identity;
use capsule::log::builder::LogBuilder;
use capsule::log::record::Record;
use capsule::log::verify::Unverified;

/// The built `capsule` binary.
pub fn capsule_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_capsule"))
}

/// Runs `capsule ARGS` with `--data-dir dir`.
pub fn capsule(dir: &Path, args: &[&str]) -> Output {
    Command::new(capsule_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CAPSULE_HOME")
        .output()
        .expect("capsule runs")
}

/// Runs `capsule ARGS` and demands success; returns stdout.
pub fn capsule_ok(dir: &Path, args: &[&str]) -> String {
    let out = capsule(dir, args);
    assert!(
        out.status.success(),
        "capsule {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `capsule init` in `dir` and returns the author key it printed.
pub fn init(dir: &Path) -> String {
    capsule_ok(dir, &["init"])
        .lines()
        .find_map(|l| l.strip_prefix("Your author key: ").map(str::to_string))
        .expect("init prints the author key")
}

/// A fixed identity for tests.
pub fn test_identity(n: u8) -> Identity {
    Identity::from_seed([n; 32])
}

/// A log of `n` posts by `identity`, with payloads.
pub fn make_log(identity: &Identity, n: u64) -> Vec<Unverified> {
    let mut builder = LogBuilder::new(identity);
    (1..=n)
        .map(|seq| {
            let payload = Record::post(format!("post {seq}")).encode().unwrap();
            (
                builder.next(1_764_000_000_000_000 + seq, &payload),
                Some(payload),
            )
        })
        .collect()
}

/// A child process whose standard output is read line by line on a thread,
/// killed when dropped (so a failing test leaves nothing running).
pub struct Proc {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line seen so far.
    pub seen: Vec<String>,
}

impl Proc {
    /// Starts `command` with stdout piped (stderr inherited unless set).
    pub fn spawn(command: &mut Command) -> Proc {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the process starts");
        let out = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits up to `secs` for a line satisfying `f`; returns it.
    pub fn wait_line(&mut self, secs: u64, f: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if f(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no such line within {secs} s; saw {:#?}", self.seen),
            }
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 for TCP (and, usually, UDP) right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `tool` is on the PATH (tests of optional system parts skip
/// without it outside CI, and fail inside it).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sets the owner's passphrase with `capsule passwd`, as a script would:
/// one line on standard input.
pub fn set_passphrase(dir: &Path, passphrase: &str) {
    use std::io::Write;
    let mut passwd = Command::new(capsule_bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(passwd.stdin.take().unwrap(), "{passphrase}").unwrap();
    assert!(passwd.wait().unwrap().success());
}

/// Whether every tool a test of system parts needs is there. Outside CI a
/// missing one skips the test with a SKIPPED line; in CI (where `.ci/test`
/// has installed them) it fails it.
pub fn tools_present(tools: &[&str], package: &str) -> bool {
    if tools.iter().all(|t| have(t)) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{package} is missing; .ci/test installs it"
    );
    eprintln!("SKIPPED: {package} is not installed (`bash .ci/test` installs it)");
    false
}

/// Whether the tests run as root, which `what` needs; outside CI a test
/// that needs it prints SKIPPED (CI runs as root, so there it must be).
pub fn is_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI runs as root: {what}");
    eprintln!("SKIPPED: {what} needs root");
    false
}

/// Unmounts a file system the test mounted, when dropped.
pub struct Unmount(pub std::path::PathBuf);

impl Unmount {
    /// Mounts a tmpfs of `size` (`6m`, say) on a new folder `at` (needs
    /// root: see [`is_root`]).
    pub fn tmpfs(at: &Path, size: &str) -> Unmount {
        std::fs::create_dir(at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(mounted.success());
        Unmount(at.to_path_buf())
    }
}

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Debian's libfaketime (package faketime): preloaded, it moves the clock
/// of the process itself (FAKETIME=+10m), which stays the process a test
/// waits for.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Whether libfaketime is installed; outside CI a test without it prints
/// SKIPPED.
pub fn faketime_present() -> bool {
    if Path::new(FAKETIME_LIB).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "faketime is missing; .ci/test installs it"
    );
    eprintln!("SKIPPED: faketime is not installed (`bash .ci/test` installs it)");
    false
}

/// Writes a `width` × `height` PNG (a colour gradient) to `path`.
pub fn write_png(path: &Path, width: u32, height: u32) {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 96])
    });
    image
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

/// A `width` × `height` JPEG (a colour gradient, quality 90).
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 96])
    });
    jpeg_of(image)
}

/// `image` as a JPEG of quality 90.
pub fn jpeg_of(image: image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut out, 90,
        ))
        .unwrap();
    out
}

/// A running `capsule up` and the addresses it printed.
pub struct Up {
    /// The process.
    pub child: std::process::Child,
    /// The gateway's HOST:PORT.
    pub web: String,
    /// `KEY@HOST:PORT` of its sync listener.
    pub sync: String,
}

impl Up {
    /// Starts `capsule up` on loopback ports for `dir`.
    pub fn start(dir: &Path) -> Up {
        Up::start_with(dir, &[])
    }

    /// [`Up::start`] with more flags for `up`.
    pub fn start_with(dir: &Path, flags: &[&str]) -> Up {
        let mut child = Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(dir)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--sync-listen",
                "127.0.0.1:0",
            ])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("CAPSULE_TEST_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (mut web, mut sync) = (String::new(), String::new());
        let mut line = String::new();
        while web.is_empty() || sync.is_empty() {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "capsule up exited");
            if let Some(rest) = line.strip_prefix("Capsule is up: http://") {
                web = rest.split('/').next().unwrap().to_string();
            }
            if let Some(rest) = line.strip_prefix("sync: peers dial ") {
                sync = rest.trim().to_string();
            }
        }
        // Keep reading so the node never writes into a closed pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        Up { child, web, sync }
    }

    /// GET `path`: (status, content type, body).
    pub fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        get(&self.web, path)
    }

    /// GET `path` as text: (status, body).
    pub fn text(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.get(path);
        (status, String::from_utf8(body).unwrap())
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Up {
    /// A node a test did not stop (it failed, or it only served others)
    /// is killed with the test, not left running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from the gateway at `web` (HOST:PORT): (status, content type,
/// body).
pub fn get(web: &str, path: &str) -> (u16, String, Vec<u8>) {
    let (status, head, body) = get_with(web, path, "");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, content_type, body)
}

/// GET `path` from `web` with `extra` header lines (each ending in
/// CRLF): (status, the head, the body).
pub fn get_with(web: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    {
        let mut stream = TcpStream::connect(web).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {web}\r\n{extra}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head, raw[split + 4..].to_vec())
    }
}

/// The session cookie a successful login answer sets.
pub fn session_in(answer: &str) -> String {
    let after = answer
        .split("capsule_session=")
        .nth(1)
        .expect("a session cookie");
    after.split(';').next().unwrap().to_string()
}

/// The CSRF token of the first form on `page`.
pub fn csrf_in(page: &str) -> String {
    let after = page.split("name=\"csrf\" value=\"").nth(1).expect("a form");
    after.split('"').next().unwrap().to_string()
}

/// POSTs a login form with a fresh login cookie and token; the status.
pub fn try_login(web: &str, passphrase: &str) -> (u16, String) {
    let page = raw_request(
        web,
        &format!("GET /login HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"),
    );
    let token = csrf_in(&page);
    assert!(
        page.contains(&format!("capsule_login={token};")),
        "the login cookie carries the form's token"
    );
    assert!(page.contains("HttpOnly; SameSite=Strict"));
    let body = format!("passphrase={}&csrf={token}", passphrase.replace(' ', "+"));
    let answer = raw_request(
        web,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Cookie: capsule_login={token}\r\n\r\n{body}",
            body.len()
        ),
    );
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, answer)
}

/// A raw HTTP/1.1 request to `web`: the whole answer as text.
pub fn raw_request(web: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(web).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Logs the owner in with `passphrase`: the session cookie.
pub fn login(web: &str, passphrase: &str) -> String {
    let (status, answer) = try_login(web, passphrase);
    assert_eq!(status, 303, "{answer}");
    session_in(&answer)
}
