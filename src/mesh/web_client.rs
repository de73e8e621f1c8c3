//! A small HTTPS client for talking to other nodes' gateways: one GET on a
//! fresh connection, WebPKI-verified (plus an extra root for a private or
//! test CA), with a deadline and a bound on what is read.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

/// How long one request may take to connect, and between reads.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer head read: far over what a node sends, small enough to
/// bound a hostile server.
pub const MAX_HEAD: u64 = 16 * 1024;

/// Why a request to another node's gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The origin is not `https://HOST[:PORT]`.
    #[error("{0} is not an https:// origin with a valid port")]
    Origin(String),
    /// The host is not a name a certificate can be for.
    #[error("{0} is not a host name")]
    HostName(String),
    /// The name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The name resolved to nothing.
    #[error("{0} has no address")]
    NoAddress(String),
    /// Connecting, writing or reading failed.
    #[error("HTTPS to {host}:{port} failed: {source}")]
    Io {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// What the OS or TLS said.
        source: std::io::Error,
    },
    /// The extra root certificate file could not be read.
    #[error("cannot read the root certificate {path}: {reason}")]
    Root {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: rustls::pki_types::pem::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// The bytes are not an HTTP answer this client reads.
    #[error("{0}")]
    Answer(&'static str),
}

/// An HTTP answer: status, head (lower case), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The head, lower-cased, without the blank line.
    pub head: String,
    /// The body, as received.
    pub body: Vec<u8>,
}

/// Reads the raw bytes of an HTTP/1.1 answer: a head with a status, and a
/// body whose length, when the head gives one, must match. Chunked answers
/// are refused (a capsule node always sends a length).
pub fn parse_answer(raw: &[u8]) -> Result<Answer, WebError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(WebError::Answer("no HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return Err(WebError::Answer(
            "a chunked answer (a capsule node sends a length)",
        ));
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(WebError::Answer("no status"))?;
    let body = raw[split + 4..].to_vec();
    if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        && body.len() != length
    {
        return Err(WebError::Answer("the answer was cut short"));
    }
    Ok(Answer { status, head, body })
}

/// `https://HOST[:PORT]` split into host and port.
pub fn split_origin(origin: &str) -> Result<(String, u16), WebError> {
    let bad = || WebError::Origin(origin.to_string());
    let rest = origin
        .strip_prefix("https://")
        .ok_or_else(bad)?
        .trim_end_matches('/');
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
        None => (rest.to_string(), 443),
    })
}

/// A TLS client config trusting the WebPKI roots, plus `extra_root` (a PEM
/// file of certificates) if given: for a private or test CA.
pub fn client(extra_root: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, WebError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_root {
        use rustls::pki_types::pem::PemObject;
        let root = |reason| WebError::Root {
            path: path.to_path_buf(),
            reason,
        };
        for cert in CertificateDer::pem_file_iter(path).map_err(root)? {
            roots.add(cert.map_err(root)?)?;
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

/// GET `path` from `origin` (`https://HOST[:PORT]`): the answer, with at
/// most `max` bytes of body.
pub fn get(
    origin: &str,
    path: &str,
    extra_root: Option<&Path>,
    max: u64,
) -> Result<Answer, WebError> {
    parse_answer(&get_raw(origin, path, extra_root, max)?)
}

/// The raw answer to GET `path` from `origin`, at most `max` bytes of body
/// (plus a head of at most [`MAX_HEAD`]).
pub fn get_raw(
    origin: &str,
    path: &str,
    extra_root: Option<&Path>,
    max: u64,
) -> Result<Vec<u8>, WebError> {
    let (host, port) = split_origin(origin)?;
    let name = ServerName::try_from(host.clone()).map_err(|_| WebError::HostName(host.clone()))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|source| WebError::Resolve {
            host: host.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| WebError::NoAddress(host.clone()))?;
    let io = |source| WebError::Io {
        host: host.clone(),
        port,
        source,
    };
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    tcp.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    tcp.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let connection = rustls::ClientConnection::new(client(extra_root)?, name)?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    let read = (&mut tls).take(max + MAX_HEAD).read_to_end(&mut raw);
    // Servers may close without close_notify; what arrived is judged by
    // its length.
    if raw.is_empty() {
        read.map_err(io)?;
    }
    Ok(raw)
}
