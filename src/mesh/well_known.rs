//! Finding a node by its domain: `GET https://DOMAIN/.well-known/capsule`
//! over WebPKI-verified HTTPS, which names the author key and the sync
//! address (`capsule follow alice.example`).

use std::path::Path;

use super::address::{AddressError, PeerAddr};
use super::web_client::{self, WebError};
use crate::identity::AuthorKey;

/// Largest answer read.
pub const MAX_ANSWER: u64 = 64 * 1024;

/// Why a follow target or a domain's answer was not understood.
#[derive(Debug, thiserror::Error)]
pub enum WellKnownError {
    /// The target is none of the three forms.
    #[error("{target:?} is not a domain, KEY@HOST:PORT or an author key ({reason})")]
    Target {
        /// What was given.
        target: String,
        /// Why it is not a key.
        reason: crate::identity::ParseKeyError,
    },
    /// `KEY@HOST:PORT` that does not parse.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The domain could not be asked.
    #[error("cannot look up {origin}: {source}")]
    Lookup {
        /// Whom we asked.
        origin: String,
        /// What went wrong.
        source: WebError,
    },
    /// The answer is not a capsule node's.
    #[error("{origin} is not a capsule node: {reason}")]
    NotANode {
        /// Whom we asked.
        origin: String,
        /// Why not.
        reason: Box<WellKnownError>,
    },
    /// Not an HTTP answer this client reads.
    #[error(transparent)]
    Answer(#[from] WebError),
    /// Another status than 200.
    #[error("/.well-known/capsule answered {0}")]
    Status(u16),
    /// A body that is not what the well-known holds.
    #[error("{0}")]
    Body(String),
}

/// What a domain's `/.well-known/capsule` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The author (and node) key.
    pub author: AuthorKey,
    /// Where the node syncs, if it said.
    pub sync: Option<PeerAddr>,
}

/// What `capsule follow TARGET` (or the web's follow form) means: a domain
/// is looked up; `KEY@HOST:PORT` gives both; a key alone gives no address.
/// Returns the author, where its node syncs if known, and the origin of
/// its gateway when it was looked up by domain.
pub fn follow_target(
    target: &str,
    extra_root: Option<&Path>,
) -> Result<(AuthorKey, Option<String>, Option<String>), WellKnownError> {
    let target = target.trim();
    if target.contains('@') {
        let peer: PeerAddr = target.parse()?;
        return Ok((peer.key, Some(peer.host_port), None));
    }
    if is_domain(target) {
        let found = lookup(target, extra_root)?;
        return Ok((
            found.author,
            found.sync.map(|s| s.host_port),
            Some(origin_of(target)),
        ));
    }
    match target.parse::<AuthorKey>() {
        Ok(key) => Ok((key, None, None)),
        Err(reason) => Err(WellKnownError::Target {
            target: target.to_string(),
            reason,
        }),
    }
}

/// Whether `target` looks like a domain (with an optional port) rather
/// than a key or `KEY@HOST:PORT`.
pub fn is_domain(target: &str) -> bool {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    !target.contains('@')
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && (host.contains('.') || host == "localhost")
}

/// The `https://` origin of `target` (`DOMAIN` or `DOMAIN:PORT`).
pub fn origin_of(target: &str) -> String {
    let target = target.trim_start_matches("https://").trim_end_matches('/');
    format!("https://{target}")
}

/// Asks `target` (`DOMAIN` or `DOMAIN:PORT`, port 443 by default) who it
/// is, trusting the WebPKI roots and `extra_root` (a PEM file) if given.
pub fn lookup(target: &str, extra_root: Option<&Path>) -> Result<Found, WellKnownError> {
    let origin = origin_of(target);
    let raw = web_client::get_raw(&origin, "/.well-known/capsule", extra_root, MAX_ANSWER)
        .map_err(|source| WellKnownError::Lookup {
            origin: origin.clone(),
            source,
        })?;
    parse(&raw).map_err(|reason| WellKnownError::NotANode {
        origin,
        reason: Box::new(reason),
    })
}

/// Reads an HTTP answer carrying the well-known JSON.
pub fn parse(raw: &[u8]) -> Result<Found, WellKnownError> {
    let answer = web_client::parse_answer(raw)?;
    if answer.status != 200 {
        return Err(WellKnownError::Status(answer.status));
    }
    let body = |reason: &str| WellKnownError::Body(reason.to_string());
    let json: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|_| body("not JSON"))?;
    let author: AuthorKey = json["author"]
        .as_str()
        .ok_or_else(|| body("no author key"))?
        .parse()
        .map_err(|e| WellKnownError::Body(format!("bad author key: {e}")))?;
    let sync = match json["sync"].as_str() {
        Some(s) => {
            let peer: PeerAddr = s.parse()?;
            if peer.key != author {
                return Err(body("the sync address names another key than the author"));
            }
            Some(peer)
        }
        None => None,
    };
    Ok(Found { author, sync })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_answers() {
        assert!(is_domain("alice.example"));
        assert!(is_domain("alice.example:8443"));
        assert!(is_domain("localhost:443"));
        assert!(!is_domain(
            "a3qapzdw2ophzuuvfgaapps6x5i255cwb5rs47edqj4rhvnuxvyq"
        ));
        assert!(!is_domain("KEY@host:1"));
        let key = "a3qapzdw2ophzuuvfgaapps6x5i255cwb5rs47edqj4rhvnuxvyq";
        let json = format!("{{\"author\":\"{key}\",\"sync\":\"{key}@alice.example:4433\"}}");
        let ok = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{json}",
            json.len()
        );
        let found = parse(ok.as_bytes()).unwrap();
        assert_eq!(found.author.to_string(), key);
        assert_eq!(found.sync.unwrap().host_port, "alice.example:4433");
        let other = "b3qapzdw2ophzuuvfgaapps6x5i255cwb5rs47edqj4rhvnuxvyq";
        let lying = format!(
            "HTTP/1.1 200 OK\r\n\r\n{{\"author\":\"{key}\",\"sync\":\"{other}@x.example:1\"}}"
        );
        assert!(parse(lying.as_bytes()).is_err());
        assert!(parse(b"HTTP/1.1 404 Not Found\r\n\r\n{}").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
