//! Requests to other ActivityPub servers: signed GETs and POSTs, each to
//! an address checked after DNS resolution, so that no remote party can
//! make this node reach its own machine or its private network.
//!
//! Refused, whatever the name resolves to: plain `http://`, loopback,
//! private (RFC 1918, ULA), shared (100.64/10), link-local (which holds the
//! cloud metadata address 169.254.169.254), multicast, unspecified and
//! broadcast addresses. `--insecure-federation` lifts the `http://` and
//! loopback refusals, for tests on one machine. A request connects to the
//! address that passed the check (never resolves again), follows at most
//! [`MAX_REDIRECTS`] redirects (GET only, each checked the same way), reads
//! at most [`MAX_BODY`] and takes at most [`TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request};
use rustls::pki_types::ServerName;
use url::Url;

use super::key::ActorKey;
use super::signature::{self, Signature};

/// Longest a request may take, connecting and reading included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read: an actor, a note or a collection page is a few KB.
pub const MAX_BODY: usize = 1024 * 1024;
/// Redirects a GET follows.
pub const MAX_REDIRECTS: usize = 3;
/// What this node says it is.
pub const USER_AGENT: &str = concat!("capsule/", env!("CARGO_PKG_VERSION"));

/// The media type of ActivityPub documents.
pub const ACTIVITY_JSON: &str = "application/activity+json";

/// Why a request to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not one this node requests.
    #[error("{url}: {why}")]
    Refused {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// The name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// Connecting, TLS, writing or reading failed, or the time ran out.
    #[error("{url}: {why}")]
    Failed {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
}

/// A server's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, at most [`MAX_BODY`].
    pub body: Bytes,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Seconds a `Retry-After` header asks to wait (a number of seconds or
    /// an HTTP date).
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self.headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        let when = httpdate::parse_http_date(v).ok()?;
        Some(
            when.duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
    }
}

/// Whether an address is one a request may reach. `insecure` lets
/// loopback through (tests on one machine), never the rest.
pub fn reachable(ip: IpAddr, insecure: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if ip.is_loopback() {
        return insecure;
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_multicast()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Makes the signed requests of one actor.
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    key_id: String,
    insecure: bool,
    /// RSA signing is the heavy part of a delivery: it runs on low-priority
    /// threads, one per core, so that a fan-out to thousands of inboxes
    /// takes only what posting and serving pages leave.
    signers: super::key::Signers,
}

/// Signing threads: one per core.
pub fn signers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Client {
    /// A client signing as `key_id` (the actor's `…#main-key`).
    pub fn new(key: Arc<ActorKey>, key_id: String, insecure: bool) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            signers: super::key::Signers::start(Arc::clone(&key), signers()),
            key_id,
            insecure,
        }
    }

    /// Whether http and loopback are allowed (tests only).
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// A signed GET for an ActivityPub document, following redirects.
    pub async fn get(&self, url: &str) -> Result<Reply, FetchError> {
        self.get_accepting(url, ACTIVITY_JSON).await
    }

    /// A signed GET asking for `accept`, following redirects.
    pub async fn get_accepting(&self, url: &str, accept: &str) -> Result<Reply, FetchError> {
        let mut url = self.check(url)?;
        for _ in 0..=MAX_REDIRECTS {
            let reply = self.send(Method::GET, &url, accept, None).await?;
            if !matches!(reply.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(reply);
            }
            let location = reply
                .headers
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| FetchError::Failed {
                    url: url.to_string(),
                    why: "a redirect without a Location".into(),
                })?;
            let next = url.join(location).map_err(|e| FetchError::Refused {
                url: location.to_string(),
                why: e.to_string(),
            })?;
            url = self.check(next.as_str())?;
        }
        Err(FetchError::Failed {
            url: url.to_string(),
            why: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// A signed POST of an activity (JSON) to an inbox. Redirects are not
    /// followed: a body is never sent somewhere it was not addressed.
    pub async fn post(&self, url: &str, body: Bytes) -> Result<Reply, FetchError> {
        let url = self.check(url)?;
        self.send(Method::POST, &url, ACTIVITY_JSON, Some(body))
            .await
    }

    /// Parses a URL and refuses schemes this node does not request.
    pub fn check(&self, url: &str) -> Result<Url, FetchError> {
        let refused = |why: &str| FetchError::Refused {
            url: url.to_string(),
            why: why.to_string(),
        };
        let parsed = Url::parse(url).map_err(|e| refused(&e.to_string()))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.insecure => {}
            "http" => return Err(refused("plain http:// is refused (HTTPS only)")),
            _ => return Err(refused("not an https:// URL")),
        }
        if parsed.host_str().is_none() || !parsed.username().is_empty() {
            return Err(refused("no host, or a user name in the URL"));
        }
        Ok(parsed)
    }

    /// Resolves `url`'s host and returns the first address that may be
    /// reached, refusing the URL if any it resolves to may not (a name
    /// with one private address among public ones is not trusted).
    pub async fn resolve(&self, url: &Url) -> Result<SocketAddr, FetchError> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|_| FetchError::Resolve(host.to_string()))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(FetchError::Resolve(host.to_string()));
        }
        if let Some(bad) = addrs.iter().find(|a| !reachable(a.ip(), self.insecure)) {
            return Err(FetchError::Refused {
                url: url.to_string(),
                why: format!(
                    "{host} resolves to {}, a private or local address",
                    bad.ip()
                ),
            });
        }
        Ok(addrs[0])
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        accept: &str,
        body: Option<Bytes>,
    ) -> Result<Reply, FetchError> {
        let failed = |why: String| FetchError::Failed {
            url: url.to_string(),
            why,
        };
        let addr = self.resolve(url).await?;
        let request = self.signed(&method, url, accept, body).await?;
        let work = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            if url.scheme() == "https" {
                let name = ServerName::try_from(url.host_str().unwrap_or_default().to_string())
                    .map_err(|e| failed(e.to_string()))?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                exchange(hyper_util::rt::TokioIo::new(tls), request).await
            } else {
                exchange(hyper_util::rt::TokioIo::new(tcp), request).await
            }
            .map_err(failed)
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| failed(format!("no answer within {} s", TIMEOUT.as_secs())))?
    }

    /// The request with its Host, Date, Digest and Signature headers.
    async fn signed(
        &self,
        method: &Method,
        url: &Url,
        accept: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, FetchError> {
        // `check` refused user names, so the authority is HOST[:PORT].
        let host = url.authority().to_string();
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let digest = body.as_ref().map(|b| signature::digest(b));
        let names: Vec<&str> = if digest.is_some() {
            signature::OUTGOING.to_vec()
        } else {
            signature::OUTGOING[..3].to_vec()
        };
        let message = signature::signing_string(&names, method.as_str(), &target, |n| match n {
            "host" => Some(host.clone()),
            "date" => Some(date.clone()),
            "digest" => digest.clone(),
            _ => None,
        })
        .expect("every signed header is given");
        let signature = Signature {
            key_id: self.key_id.clone(),
            algorithm: Some("rsa-sha256".into()),
            headers: names.iter().map(|n| n.to_string()).collect(),
            signature: self.signers.sign(message.into_bytes()).await,
            created: None,
            expires: None,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&target)
            .header(header::HOST, &host)
            .header(header::DATE, &date)
            .header(header::ACCEPT, accept)
            .header(header::USER_AGENT, USER_AGENT)
            .header("signature", signature.to_header());
        if let Some(d) = &digest {
            request = request.header("digest", d).header(
                header::CONTENT_TYPE,
                HeaderValue::from_static(ACTIVITY_JSON),
            );
        }
        request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| FetchError::Refused {
                url: url.to_string(),
                why: e.to_string(),
            })
    }
}

async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<Reply, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let result = match answer {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map(|b| Reply {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: b.to_bytes(),
                })
                .map_err(|e| format!("reading the answer: {e}"))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!reachable(bad.parse().unwrap(), false), "{bad}");
        }
        for good in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
            assert!(reachable(good.parse().unwrap(), false), "{good}");
        }
        assert!(reachable("127.0.0.1".parse().unwrap(), true));
        assert!(!reachable("169.254.169.254".parse().unwrap(), true));
        assert!(!reachable("10.0.0.1".parse().unwrap(), true));
    }
}
