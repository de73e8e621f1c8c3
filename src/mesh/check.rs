//! "Dial me back": a node asks a peer, on a live connection, to try its
//! advertised sync address and HTTPS origin from the outside and to say
//! what it saw and what time it is. `capsule doctor` learns from it
//! whether UDP 4433 and TCP 443 get through the provider's firewall, and
//! how far the node's clock is from its peers'.
//!
//! A stream of this kind starts with [`STREAM_CHECK`], then a version byte
//! ([`CHECK_VERSION`]); the asker writes one frame (u32 BE length, postcard
//! [`CheckRequest`]) and the peer answers one ([`CheckAnswer`]). A peer
//! answers only for the asker's own addresses — a name that resolves to
//! the address the connection comes from — so nobody can make it dial a
//! third party, and at most once per [`MIN_INTERVAL`] per asker and
//! [`MAX_PER_MINUTE`] in all. schema/sync.md documents the bytes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::identity::{AuthorKey, Identity};
use crate::sync::transport::{self, FrameError, read_frame, write_frame};

/// First byte of a bidirectional stream on a live connection: a check
/// follows.
pub const STREAM_CHECK: u8 = 3;

/// The version byte after [`STREAM_CHECK`].
pub const CHECK_VERSION: u8 = 1;

/// Largest frame either way: two addresses, or an answer with two short
/// reasons.
pub const MAX_CHECK_FRAME: usize = 4096;

/// How long the peer tries each address.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// One asker is answered at most this often.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Checks a node answers in a minute, whoever asks.
pub const MAX_PER_MINUTE: usize = 16;

/// Askers remembered for [`MIN_INTERVAL`]; past it, the oldest are forgotten.
const MAX_REMEMBERED: usize = 1024;

/// What the asker wants tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    /// Its advertised sync address, `HOST:PORT`.
    pub sync: Option<String>,
    /// Its HTTPS origin, `https://HOST[:PORT]`.
    pub web: Option<String>,
    /// Its plain HTTP origin, `http://HOST[:PORT]` (port 80 redirects to
    /// HTTPS, and the CA comes there first).
    pub http: Option<String>,
}

/// What became of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Not asked for.
    NotAsked,
    /// Reached, and it presented the asker's key.
    Reached,
    /// Tried, and this is what failed.
    Failed(String),
    /// Not tried: why.
    Refused(String),
}

/// The peer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// The peer's clock when it answered, µs since the epoch.
    pub now_us: u64,
    /// The sync address.
    pub sync: Outcome,
    /// The HTTPS origin.
    pub web: Outcome,
    /// The plain HTTP origin.
    pub http: Outcome,
}

/// Why a check could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The stream failed.
    #[error("the check stream failed: {0}")]
    Stream(String),
    /// A frame could not be read.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame did not decode, or the version is unknown.
    #[error("the peer sent a check it does not follow: {0}")]
    Malformed(String),
}

fn stream(e: impl std::fmt::Display) -> CheckError {
    CheckError::Stream(e.to_string())
}

/// Who asked lately, to answer each at most once a [`MIN_INTERVAL`].
#[derive(Debug, Default)]
pub struct Limiter {
    asked: Mutex<HashMap<AuthorKey, Instant>>,
}

impl Limiter {
    /// Whether `peer` may be answered now (and counts it if so).
    pub fn admit(&self, peer: AuthorKey, now: Instant) -> bool {
        let mut asked = self.asked.lock().expect("not poisoned");
        asked.retain(|_, at| now.duration_since(*at) < MIN_INTERVAL);
        let recent = asked
            .values()
            .filter(|at| now.duration_since(**at) < Duration::from_secs(60))
            .count();
        if asked.contains_key(&peer) || recent >= MAX_PER_MINUTE || asked.len() >= MAX_REMEMBERED {
            return false;
        }
        asked.insert(peer, now);
        true
    }
}

/// Whether `host` (a name or an address) resolves to `ip`: only then is
/// it the asker's own.
async fn resolves_to(host: &str, port: u16, ip: IpAddr) -> Result<bool, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?;
    Ok(found.into_iter().any(|a| a.ip().to_canonical() == ip))
}

/// Splits `HOST:PORT`.
fn host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// Why `text` (naming `host`:`port`) may not be tried for a check that
/// comes from `from`, if it may not: it must resolve to `from`.
async fn not_own(text: &str, host: &str, port: u16, from: IpAddr) -> Option<Outcome> {
    match resolves_to(host, port, from).await {
        Ok(true) => None,
        Ok(false) => Some(Outcome::Refused(format!(
            "{text} is not your address: this check comes from {from}"
        ))),
        Err(e) => Some(Outcome::Failed(e)),
    }
}

/// `tried`, given [`DIAL_TIMEOUT`], as an outcome.
async fn within(tried: impl Future<Output = Result<(), String>>) -> Outcome {
    match tokio::time::timeout(DIAL_TIMEOUT, tried).await {
        Ok(Ok(())) => Outcome::Reached,
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Failed(format!("no answer within {DIAL_TIMEOUT:?}")),
    }
}

/// Tries `text` (`HOST:PORT`) over QUIC, demanding `peer`'s key.
async fn dial_sync(identity: &Identity, peer: AuthorKey, text: &str, from: IpAddr) -> Outcome {
    let Some((host, port)) = host_port(text) else {
        return Outcome::Refused(format!("{text:?} is not HOST:PORT"));
    };
    if let Some(refused) = not_own(text, host, port, from).await {
        return refused;
    }
    let addr = std::net::SocketAddr::new(from, port);
    within(async {
        let endpoint = transport::dialler(addr).map_err(|e| e.to_string())?;
        let connection = transport::connect(&endpoint, identity, peer, addr)
            .await
            .map_err(|e| e.to_string())?;
        connection.close(transport::close::DONE.into(), b"checked");
        endpoint.wait_idle().await;
        Ok(())
    })
    .await
}

/// Fetches `origin`'s `/.well-known/capsule` and demands `peer`'s key.
async fn fetch_web(
    peer: AuthorKey,
    origin: &str,
    from: IpAddr,
    web_root: Option<PathBuf>,
) -> Outcome {
    let target = origin.trim_start_matches("https://").trim_end_matches('/');
    if !origin.starts_with("https://") || !super::well_known::is_domain(target) {
        return Outcome::Refused(format!(
            "{origin:?} is not an https:// origin with a domain"
        ));
    }
    let (host, port) = host_port(target).unwrap_or((target, 443));
    if let Some(refused) = not_own(origin, host, port, from).await {
        return refused;
    }
    let target = target.to_string();
    within(async {
        let found = tokio::task::spawn_blocking(move || {
            super::well_known::lookup(&target, web_root.as_deref())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if found.author != peer {
            return Err(format!("{origin} answers as {}, not as you", found.author));
        }
        Ok(())
    })
    .await
}

/// Opens `origin` (`http://HOST[:PORT]`) and demands an HTTP answer.
async fn fetch_http(origin: &str, from: IpAddr) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(target) = origin.strip_prefix("http://") else {
        return Outcome::Refused(format!("{origin:?} is not an http:// origin"));
    };
    let target = target.trim_end_matches('/');
    let (host, port) = host_port(target).unwrap_or((target, 80));
    if let Some(refused) = not_own(origin, host, port, from).await {
        return refused;
    }
    within(async {
        let failed = |e: std::io::Error| e.to_string();
        let mut tcp = tokio::net::TcpStream::connect((from, port))
            .await
            .map_err(failed)?;
        let request = format!(
            "GET /.well-known/capsule HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.map_err(failed)?;
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.map_err(failed)?;
        match head.starts_with(b"HTTP/1.") {
            true => Ok(()),
            false => Err("the answer is not HTTP".to_string()),
        }
    })
    .await
}

/// The peer's side, after [`STREAM_CHECK`]: reads the request, tries the
/// asker's addresses if they are its own and it has not asked too often,
/// and answers.
pub async fn answer(
    connection: &quinn::Connection,
    identity: &Identity,
    peer: AuthorKey,
    limiter: &Limiter,
    web_root: Option<PathBuf>,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(), CheckError> {
    let mut version = [0u8; 1];
    recv.read_exact(&mut version).await.map_err(stream)?;
    if version[0] != CHECK_VERSION {
        return Err(CheckError::Malformed(format!("version {}", version[0])));
    }
    let body = read_frame(recv, MAX_CHECK_FRAME)
        .await?
        .ok_or_else(|| CheckError::Malformed("no request".into()))?;
    let request = decode_request(&body)?;
    let from = connection.remote_address().ip().to_canonical();
    let (sync, web, http) = if !limiter.admit(peer, Instant::now()) {
        let busy =
            || Outcome::Refused(format!("asked too often: once a {MIN_INTERVAL:?} per node"));
        (busy(), busy(), busy())
    } else {
        let sync = async {
            match &request.sync {
                Some(s) => dial_sync(identity, peer, s, from).await,
                None => Outcome::NotAsked,
            }
        };
        let web = async {
            match &request.web {
                Some(w) => fetch_web(peer, w, from, web_root).await,
                None => Outcome::NotAsked,
            }
        };
        let http = async {
            match &request.http {
                Some(h) => fetch_http(h, from).await,
                None => Outcome::NotAsked,
            }
        };
        tokio::join!(sync, web, http)
    };
    let answer = CheckAnswer {
        now_us: crate::clock::now_us(),
        sync,
        web,
        http,
    };
    let bytes = postcard::to_allocvec(&answer).map_err(|e| CheckError::Malformed(e.to_string()))?;
    write_frame(send, &bytes).await.map_err(stream)?;
    send.finish().map_err(stream)?;
    Ok(())
}

/// What one peer said, with the clock offset it implies (the peer's clock
/// minus ours at the middle of the round trip, µs).
#[derive(Debug, Clone)]
pub struct Heard {
    /// The peer.
    pub peer: AuthorKey,
    /// Its answer.
    pub answer: CheckAnswer,
    /// Its clock minus ours.
    pub offset_us: i64,
}

/// The asker's side: opens a check stream on `connection` and waits for
/// the answer.
pub async fn ask(
    connection: &quinn::Connection,
    peer: AuthorKey,
    request: &CheckRequest,
) -> Result<Heard, CheckError> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(stream)?;
    let sent = crate::clock::now_us();
    send.write_all(&[STREAM_CHECK, CHECK_VERSION])
        .await
        .map_err(stream)?;
    let bytes = postcard::to_allocvec(request).map_err(|e| CheckError::Malformed(e.to_string()))?;
    write_frame(&mut send, &bytes).await.map_err(stream)?;
    send.finish().map_err(stream)?;
    let body = tokio::time::timeout(2 * DIAL_TIMEOUT + Duration::from_secs(5), async {
        read_frame(&mut recv, MAX_CHECK_FRAME).await
    })
    .await
    .map_err(|_| CheckError::Stream("no answer".into()))??
    .ok_or_else(|| CheckError::Malformed("no answer".into()))?;
    let heard = crate::clock::now_us();
    let answer = decode_answer(&body)?;
    let middle = sent / 2 + heard / 2;
    Ok(Heard {
        peer,
        offset_us: answer.now_us as i64 - middle as i64,
        answer,
    })
}

/// Decodes a request as a peer reads it.
pub fn decode_request(body: &[u8]) -> Result<CheckRequest, CheckError> {
    postcard::from_bytes(body).map_err(|e| CheckError::Malformed(e.to_string()))
}

/// Decodes an answer as the asker reads it.
pub fn decode_answer(body: &[u8]) -> Result<CheckAnswer, CheckError> {
    postcard::from_bytes(body).map_err(|e| CheckError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_asker_once_a_minute_and_a_cap_for_all() {
        let limiter = Limiter::default();
        let now = Instant::now();
        let key = |i: u8| AuthorKey([i; 32]);
        assert!(limiter.admit(key(1), now));
        assert!(!limiter.admit(key(1), now + Duration::from_secs(1)));
        assert!(limiter.admit(key(1), now + MIN_INTERVAL));
        let later = now + MIN_INTERVAL * 3;
        for i in 0..MAX_PER_MINUTE as u8 {
            assert!(limiter.admit(key(10 + i), later));
        }
        assert!(!limiter.admit(key(200), later), "the cap holds");
    }

    #[test]
    fn frames_round_trip() {
        let request = CheckRequest {
            sync: Some("alice.example:4433".into()),
            web: Some("https://alice.example".into()),
            http: Some("http://alice.example".into()),
        };
        let bytes = postcard::to_allocvec(&request).unwrap();
        assert_eq!(decode_request(&bytes).unwrap(), request);
        let answer = CheckAnswer {
            now_us: 7,
            sync: Outcome::Reached,
            web: Outcome::Refused("no".into()),
            http: Outcome::Failed("closed".into()),
        };
        let bytes = postcard::to_allocvec(&answer).unwrap();
        assert_eq!(decode_answer(&bytes).unwrap(), answer);
    }
}
