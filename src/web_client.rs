//! A small HTTPS client for talking to other nodes' gateways: one GET on a
//! fresh connection, WebPKI-verified (plus an extra root for a private or
//! test CA), with a deadline and a bound on what is read.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rustls::pki_types::{CertificateDer, ServerName};

/// How long one request may take to connect, and between reads.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `https://HOST[:PORT]` split into host and port.
pub fn split_origin(origin: &str) -> Result<(String, u16)> {
    let rest = origin
        .strip_prefix("https://")
        .with_context(|| format!("{origin} is not an https:// origin"))?
        .trim_end_matches('/');
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().context("bad port")?),
        None => (rest.to_string(), 443),
    })
}

/// A TLS client config trusting the WebPKI roots, plus `extra_root` (a PEM
/// file of certificates) if given: for a private or test CA.
pub fn client(extra_root: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_root {
        use rustls::pki_types::pem::PemObject;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            roots.add(cert?)?;
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    ))
}

/// GET `path` from `origin` (`https://HOST[:PORT]`): the status and at most
/// `max` bytes of body. The raw answer (head and body) is returned too, for
/// callers that parse it themselves.
pub fn get(
    origin: &str,
    path: &str,
    extra_root: Option<&Path>,
    max: u64,
) -> Result<(u16, Vec<u8>)> {
    let raw = get_raw(origin, path, extra_root, max)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    ensure!(
        !head.contains("transfer-encoding: chunked"),
        "a chunked answer (a capsule node sends a length)"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let body = raw[split + 4..].to_vec();
    if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        ensure!(body.len() == length, "the answer was cut short");
    }
    Ok((status, body))
}

/// The raw answer to GET `path` from `origin`, at most `max` bytes of body
/// (plus a head of at most 16 KiB).
pub fn get_raw(origin: &str, path: &str, extra_root: Option<&Path>, max: u64) -> Result<Vec<u8>> {
    let (host, port) = split_origin(origin)?;
    let name = ServerName::try_from(host.clone()).context("not a host name")?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_write_timeout(Some(TIMEOUT))?;
    let connection = rustls::ClientConnection::new(client(extra_root)?, name)?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("HTTPS to {host}:{port} failed"))?;
    let mut raw = Vec::new();
    let read = (&mut tls).take(max + 16 * 1024).read_to_end(&mut raw);
    // Servers may close without close_notify; what arrived is judged by
    // its length.
    if raw.is_empty() {
        read.with_context(|| format!("HTTPS to {host}:{port} failed"))?;
    }
    Ok(raw)
}
