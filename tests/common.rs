//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
