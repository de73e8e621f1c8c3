//! Finding a node by its domain: `GET https://DOMAIN/.well-known/capsule`
//! over WebPKI-verified HTTPS, which names the author key and the sync
//! address (`capsule follow alice.example`).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::identity::AuthorKey;
use crate::sync::transport::PeerAddr;

/// Largest answer read.
pub const MAX_ANSWER: u64 = 64 * 1024;

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
) -> Result<(AuthorKey, Option<String>, Option<String>)> {
    let target = target.trim();
    if target.contains('@') {
        let peer: PeerAddr = target.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        return Ok((peer.key, Some(peer.host_port), None));
    }
    if is_domain(target) {
        let found =
            lookup(target, extra_root).with_context(|| format!("cannot look up {target}"))?;
        return Ok((
            found.author,
            found.sync.map(|s| s.host_port),
            Some(origin_of(target)),
        ));
    }
    match target.parse::<AuthorKey>() {
        Ok(key) => Ok((key, None, None)),
        Err(e) => bail!("{target:?} is not a domain, KEY@HOST:PORT or an author key ({e})"),
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
pub fn lookup(target: &str, extra_root: Option<&Path>) -> Result<Found> {
    let origin = origin_of(target);
    let raw = crate::web_client::get_raw(&origin, "/.well-known/capsule", extra_root, MAX_ANSWER)?;
    ensure!(!raw.is_empty(), "{origin} sent nothing");
    parse(&raw).with_context(|| format!("{origin} is not a capsule node"))
}

/// Reads an HTTP answer carrying the well-known JSON.
pub fn parse(raw: &[u8]) -> Result<Found> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    ensure!(status == "200", "/.well-known/capsule answered {status}");
    let body = &raw[split + 4..];
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "a chunked answer (a capsule node sends a length)"
    );
    let json: serde_json::Value = serde_json::from_slice(body).context("not JSON")?;
    let author: AuthorKey = json["author"]
        .as_str()
        .context("no author key")?
        .parse()
        .map_err(|e| anyhow::anyhow!("bad author key: {e}"))?;
    let sync = match json["sync"].as_str() {
        Some(s) => {
            let peer: PeerAddr = s.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            ensure!(
                peer.key == author,
                "the sync address names another key than the author"
            );
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
        let ok = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{{\"author\":\"{key}\",\"sync\":\"{key}@alice.example:4433\"}}"
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
