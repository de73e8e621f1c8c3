//! `capsule up --domain` against a real ACME server (Debian's `pebble`, with
//! `pebble-challtestsrv` answering its DNS): the node obtains a certificate
//! by TLS-ALPN-01, serves HTTPS with it, redirects plain HTTP there, and
//! after a restart serves the same certificate from its cache. Another node
//! follows it by domain (`localhost`: pebble issues for it, and it resolves
//! here without a DNS server of our own).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::common::{Proc, capsule_bin, free_port};
use crate::doctor::{line, only_fault};

/// The node's domain.
const DOMAIN: &str = "localhost";

/// Pebble and its DNS server, running until dropped.
struct Pebble {
    _dns: Proc,
    _pebble: Proc,
    directory: String,
    management: u16,
    /// The pebble listener's own certificate (PEM), which the ACME client
    /// must trust.
    listener_pem: std::path::PathBuf,
}

impl Pebble {
    /// Starts pebble with TLS-ALPN-01 validation against `tls_port`.
    fn start(dir: &Path, tls_port: u16) -> Pebble {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let listener_pem = dir.join("pebble-cert.pem");
        std::fs::write(&listener_pem, cert.cert.pem()).unwrap();
        std::fs::write(dir.join("pebble-key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let (dns, dns_management, acme, management) =
            (free_port(), free_port(), free_port(), free_port());
        let mut dns_server = Proc::spawn(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .stderr(Stdio::null()),
        );
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let pebble = Proc::spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                // Pebble refuses 5 % of nonces by default to exercise
                // clients' retries; the test is about the certificate.
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stderr(Stdio::null()),
        );
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", acme)).is_ok()
                && TcpStream::connect(("127.0.0.1", management)).is_ok()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = &mut dns_server;
        Pebble {
            _dns: dns_server,
            _pebble: pebble,
            directory: format!("https://127.0.0.1:{acme}/dir"),
            management,
            listener_pem,
        }
    }

    /// Pebble's root CA (a new one at every pebble start).
    /// The CA's root, written as PEM into `dir`; its path.
    fn root_pem(&self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("pebble-root.pem");
        std::fs::write(
            &path,
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                data_encoding::BASE64.encode(&self.root())
            ),
        )
        .unwrap();
        path
    }

    fn root(&self) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        let trust = roots_from_pem(&std::fs::read(&self.listener_pem).unwrap());
        let (status, body, _) = https_get(trust, "localhost", self.management, "/roots/0");
        assert_eq!(status, 200);
        CertificateDer::from_pem_slice(&body).unwrap()
    }
}

fn roots_from_pem(pem: &[u8]) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// GET `path` from `name` (resolved to 127.0.0.1) on `port` over TLS
/// trusting only `roots`: (status, body, the server's leaf certificate).
fn https_get(
    roots: rustls::RootCertStore,
    name: &str,
    port: u16,
    path: &str,
) -> (u16, Vec<u8>, Vec<u8>) {
    let (status, _, body, leaf) = https_request(roots, name, port, path);
    (status, body, leaf)
}

/// Like [`https_get`], with the response head too.
fn https_request(
    roots: rustls::RootCertStore,
    name: &str,
    port: u16,
    path: &str,
) -> (u16, String, Vec<u8>, Vec<u8>) {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server = ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    // Servers may close without close_notify; what arrived is enough.
    let _ = tls.read_to_end(&mut raw);
    let leaf = tls.conn.peer_certificates().unwrap()[0].to_vec();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec(), leaf)
}

/// Starts the domain node. Its well-known sync address names `dead_sync`,
/// where nothing listens: a follower cannot reach it over QUIC (as when UDP
/// is blocked on the way) and must pull over HTTPS.
fn start_node(data: &Path, pebble: &Pebble, https: u16, http: u16, dead_sync: u16) -> Proc {
    Proc::spawn(
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(data)
            .args(["up", "--domain", DOMAIN])
            .args(["--https-listen", &format!("127.0.0.1:{https}")])
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--sync-listen", "127.0.0.1:0"])
            .args(["--public-sync", &format!("127.0.0.1:{dead_sync}")])
            .args(["--acme-directory", &pebble.directory])
            .arg("--acme-root")
            .arg(&pebble.listener_pem)
            .args(["--email", "owner@capsule.test"])
            .stderr(Stdio::null()),
    )
}

/// A node on loopback with no domain, trusting the CA's root for pulls
/// and lookups, with `extra` flags.
fn start_follower(data: &Path, root_pem: &Path, extra: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(data)
            .args(["up", "--listen", "127.0.0.1:0"])
            .args(["--sync-listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--ca-root")
            .arg(root_pem)
            .stderr(Stdio::null()),
    )
}

#[test]
fn a_node_gets_its_certificate_from_acme_and_keeps_it_across_restarts() {
    if !crate::common::tools_present(&["pebble", "pebble-challtestsrv"], "pebble") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let (https, http) = (free_port(), free_port());
    let pebble = Pebble::start(tmp.path(), https);

    let dead_sync = free_port();
    let mut node = start_node(&data, &pebble, https, http, dead_sync);
    let up = node.wait_line(20, |l| l.starts_with("Capsule is up: "));
    assert_eq!(
        up.split_whitespace().nth(3).unwrap(),
        format!("https://{DOMAIN}:{https}/")
    );
    node.wait_line(60, |l| {
        l == format!("certificate for {DOMAIN}: newly issued by the CA")
    });
    let root = pebble.root();
    let mut trust = rustls::RootCertStore::empty();
    trust.add(root.clone()).unwrap();
    let (status, body, first_leaf) = https_get(trust.clone(), DOMAIN, https, "/");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("<title>Capsule</title>"));
    let (status, body, _) = https_get(trust.clone(), DOMAIN, https, "/.well-known/capsule");
    assert_eq!(status, 200);
    let known: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        known["sync"].as_str().unwrap(),
        format!(
            "{}@127.0.0.1:{dead_sync}",
            known["author"].as_str().unwrap()
        ),
        "the well-known address is the one given with --public-sync"
    );

    // On HTTPS the owner's cookies are Secure.
    let (status, head, _, _) = https_request(trust.clone(), DOMAIN, https, "/login");
    assert_eq!(status, 200);
    assert!(head.contains("HttpOnly; SameSite=Strict; Secure"), "{head}");

    // Plain HTTP sends the browser to the same path over HTTPS.
    let mut plain = TcpStream::connect(("127.0.0.1", http)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        plain,
        "GET /feed.atom?x=1 HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("location: https://{DOMAIN}:{https}/feed.atom?x=1")),
        "{answer}"
    );

    // Another node follows this one by its domain: the lookup is HTTPS
    // verified against the CA's root, and gives the key and sync address.
    // That address is dead, so the follower falls back to pulling the log
    // over HTTPS, verified like any other.
    let root_pem = pebble.root_pem(tmp.path());
    let picture = tmp.path().join("picture.png");
    crate::common::write_png(&picture, 48, 32);
    crate::common::capsule_ok(
        &data,
        &[
            "post",
            "hello over https",
            "--attach",
            picture.to_str().unwrap(),
        ],
    );
    // The feed's links are absolute under the domain, its enclosures too.
    let (status, feed, _) = https_get(trust.clone(), DOMAIN, https, "/feed.atom");
    assert_eq!(status, 200);
    let feed = String::from_utf8(feed).unwrap();
    let origin = format!("https://{DOMAIN}:{https}");
    assert!(
        feed.contains(&format!("<link rel=\"self\" href=\"{origin}/feed.atom\"/>")),
        "{feed}"
    );
    let enclosure = "rel=\"enclosure\" type=\"image/png\"";
    assert!(
        feed.contains(enclosure) && feed.contains(&format!("href=\"{origin}/api/v1/blobs/")),
        "{feed}"
    );
    // The domain is a fediverse account without any test flag: WebFinger
    // over HTTPS names an https:// actor, which names its key and the
    // post's picture under the domain.
    let handle = DOMAIN.split('.').next().unwrap();
    let (status, jrd, _) = https_get(
        trust.clone(),
        DOMAIN,
        https,
        &format!("/.well-known/webfinger?resource=acct:{handle}@{DOMAIN}:{https}"),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&jrd));
    let jrd: serde_json::Value = serde_json::from_slice(&jrd).unwrap();
    let actor = jrd["links"][0]["href"].as_str().unwrap().to_string();
    assert!(actor.starts_with(&format!("{origin}/@")), "{actor}");
    let outbox = https_get(trust.clone(), DOMAIN, https, "/outbox?before=0").1;
    let outbox = String::from_utf8(outbox).unwrap();
    assert!(
        outbox.contains(&format!("{origin}/api/v1/blobs/")) && outbox.contains("hello over https"),
        "{outbox}"
    );
    let follower = tmp.path().join("follower");
    let mut b = start_follower(&follower, &root_pem, &["--sync-interval", "0.2"]);
    let up = b.wait_line(20, |l| l.starts_with("Capsule is up"));
    let b_web = up["Capsule is up: http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let target = format!("{DOMAIN}:{https}");
    // Without the CA's root the lookup is refused.
    let refused = crate::common::capsule(&follower, &["follow", &target]);
    assert!(!refused.status.success());
    let said = crate::common::capsule_ok(
        &follower,
        &["follow", &target, "--ca-root", root_pem.to_str().unwrap()],
    );
    let author = known["author"].as_str().unwrap();
    assert!(said.contains(&format!("{target} is {author}")), "{said}");
    let started = std::time::Instant::now();
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&crate::common::capsule_ok(&follower, &["status", "--json"]))
                .unwrap();
        if status["followed"][0]["seq"] == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The picture comes over HTTPS too (no QUIC connection gets through),
    // and the follower serves it.
    let entry = crate::common::capsule_ok(&follower, &["log", author, "--json"]);
    let entry: serde_json::Value = serde_json::from_str(entry.lines().next().unwrap()).unwrap();
    let hash = entry["record"]["attachments"][0]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    crate::pictures::eventually(30, "the follower serves the picture", || {
        crate::common::get_with(&b_web, &format!("/api/v1/blobs/{hash}"), "").0 == 200
    });
    assert!(b.terminate().success());
    let log = crate::common::capsule_ok(&follower, &["log", author]);
    assert!(log.contains("hello over https"), "{log}");
    crate::common::capsule_ok(&follower, &["verify", "--store"]);

    // The cache is private, and a restart does not ask the CA again.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("acme"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(node.terminate().success());
    drop(node);
    let mut node = start_node(&data, &pebble, https, http, dead_sync);
    node.wait_line(20, |l| {
        l == format!("certificate for {DOMAIN}: from the cache")
    });
    let (status, _, second_leaf) = https_get(trust, DOMAIN, https, "/");
    assert_eq!(status, 200);
    assert_eq!(first_leaf, second_leaf, "the cached certificate is served");
    assert!(!node.seen.iter().any(|l| l.contains("newly issued")));
    assert!(node.terminate().success());
}

/// The sync port a node with a domain takes by default.
const PUBLIC_SYNC_PORT: u16 = 4433;

/// `capsule up --domain` with no sync setting is public: sync listens on
/// every address at 4433, the well-known advertises the domain there, and
/// a second node that follows by domain keeps a live QUIC connection to
/// it: a new post arrives in under a second, long before its next session
/// (a minute away) or any pull over HTTPS.
#[test]
fn a_domain_node_is_public_and_pushes_posts_live_over_quic() {
    if !crate::common::tools_present(&["pebble", "pebble-challtestsrv"], "pebble") {
        return;
    }
    if std::net::UdpSocket::bind(("::", PUBLIC_SYNC_PORT)).is_err() {
        // Another node holds the port: outside CI, say so and stop.
        assert!(
            std::env::var_os("CI").is_none(),
            "UDP port {PUBLIC_SYNC_PORT} is taken: the default sync port cannot be tested"
        );
        eprintln!("SKIPPED: UDP port {PUBLIC_SYNC_PORT} is taken by another program");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let (https, http) = (free_port(), free_port());
    let pebble = Pebble::start(tmp.path(), https);
    let mut node = Proc::spawn(
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(&data)
            .args(["up", "--domain", DOMAIN])
            .args(["--https-listen", &format!("127.0.0.1:{https}")])
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--acme-directory", &pebble.directory])
            .arg("--acme-root")
            .arg(&pebble.listener_pem)
            .stderr(Stdio::null()),
    );
    let listening = node.wait_line(20, |l| l.starts_with("sync: listening on UDP "));
    assert_eq!(
        listening,
        format!("sync: listening on UDP [::]:{PUBLIC_SYNC_PORT}"),
        "every address, IPv6 and IPv4"
    );
    let dial = node.wait_line(20, |l| l.starts_with("sync: peers dial "));
    assert!(
        dial.ends_with(&format!("@{DOMAIN}:{PUBLIC_SYNC_PORT}")),
        "{dial}"
    );
    node.wait_line(60, |l| {
        l == format!("certificate for {DOMAIN}: newly issued by the CA")
    });
    let root_pem = pebble.root_pem(tmp.path());
    crate::common::capsule_ok(&data, &["post", "first, before the follow"]);
    // The doctor, through the running node: the domain resolves to this
    // machine, and the certificate is the CA's.
    let report: serde_json::Value =
        serde_json::from_str(&crate::common::capsule_ok(&data, &["doctor", "--json"]))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line(&report, "dns")["state"], "ok", "{report:#}");
    let certificate = line(&report, "certificate");
    assert_eq!(certificate["state"], "ok", "{report:#}");
    assert!(
        certificate["said"].as_str().unwrap().contains("Pebble"),
        "{certificate}"
    );

    // The follower syncs on the default interval (a minute): only a live
    // connection brings a post within a second.
    let follower = tmp.path().join("follower");
    let mut b = start_follower(&follower, &root_pem, &[]);
    b.wait_line(20, |l| l.starts_with("Capsule is up"));
    crate::common::capsule_ok(
        &follower,
        &[
            "follow",
            &format!("{DOMAIN}:{https}"),
            "--ca-root",
            root_pem.to_str().unwrap(),
        ],
    );
    let followed_seq = || {
        let status: serde_json::Value =
            serde_json::from_str(&crate::common::capsule_ok(&follower, &["status", "--json"]))
                .unwrap();
        status["followed"][0]["seq"].as_u64().unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while followed_seq() < 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "no first sync");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The session that brought the first post dialled the domain over QUIC
    // (its success is written to the address book just after).
    let dialled_ok = || {
        let peers: serde_json::Value =
            serde_json::from_str(&crate::common::capsule_ok(&follower, &["peers", "--json"]))
                .unwrap();
        let ok = peers.as_array().unwrap().iter().any(|p| {
            p["peer"]
                .as_str()
                .unwrap()
                .ends_with(&format!("@{DOMAIN}:{PUBLIC_SYNC_PORT}"))
                && !p["last_success"].is_null()
        });
        (ok, peers)
    };
    let started = std::time::Instant::now();
    loop {
        let (ok, peers) = dialled_ok();
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the follower never dialled the domain: {peers}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    for i in 0..3 {
        crate::common::capsule_ok(&data, &["post", &format!("live {i}")]);
        let posted = std::time::Instant::now();
        while followed_seq() < 2 + i {
            assert!(
                posted.elapsed() < Duration::from_secs(1),
                "post {i} took over a second: no live connection over QUIC"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // With the follower's live connection up, the doctor asks it to dial
    // back: the sync port, HTTPS and plain HTTP are reached from outside,
    // and the clocks agree.
    let report: serde_json::Value =
        serde_json::from_str(&crate::common::capsule_ok(&data, &["doctor", "--json"])).unwrap();
    for name in ["sync port", "https port", "http port", "clock"] {
        assert_eq!(line(&report, name)["state"], "ok", "{report:#}");
    }
    assert!(b.terminate().success());
    assert!(node.terminate().success());

    // The same certificate seen a day into its renewal window (the doctor
    // on the data directory, its clock moved by libfaketime): a warning
    // that it is due and not renewed yet.
    if !crate::common::faketime_present() {
        return;
    }
    let said = certificate["said"].as_str().unwrap();
    let renews_in: u64 = said
        .rsplit("renewed in ")
        .next()
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no renewal date in {said:?}"));
    // Stopped, the doctor finds the domain where a service keeps it; the
    // key is backed up, so the certificate is the one line not ok.
    let backup = tmp.path().join("key.bak");
    crate::common::capsule_ok(
        &data,
        &["export", "--identity", "-o", backup.to_str().unwrap()],
    );
    std::fs::write(data.join("config.toml"), format!("domain = \"{DOMAIN}\"\n")).unwrap();
    let out = Command::new(capsule_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["doctor", "--json"])
        .env("LD_PRELOAD", crate::common::FAKETIME_LIB)
        .env("FAKETIME", format!("+{}d", renews_in + 1))
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (check, state, said) = only_fault(&report);
    assert_eq!((check.as_str(), state.as_str()), ("certificate", "warning"));
    assert!(said.contains("within its renewal window"), "{said}");
}
