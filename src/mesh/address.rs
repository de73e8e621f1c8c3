//! A peer's address, `KEY@HOST:PORT`: the node key it must present and
//! where its sync listener is. Given on the command line (`--peer`,
//! `capsule sync`), in config.toml, by `/.well-known/capsule`, and told by
//! peer exchange.

use std::net::SocketAddr;

use crate::identity::AuthorKey;
use crate::sync::transport::TransportError;

/// Why text is not a peer address.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// No `@` between key and address.
    #[error("{0:?} is not KEY@HOST:PORT (no @)")]
    NoAt(String),
    /// The part before `@` is not a node key.
    #[error("bad node key: {0}")]
    Key(#[from] crate::identity::ParseKeyError),
    /// The part after `@` is not `HOST:PORT`.
    #[error("{0:?} is not HOST:PORT")]
    HostPort(String),
}

/// Checks that `text` is `HOST:PORT`: a non-empty host and a port number.
pub fn check_host_port(text: &str) -> Result<(), AddressError> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(AddressError::HostPort(text.to_string())),
    }
}

/// A peer to dial: its node key and where it listens, written
/// `KEY@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The node key the peer must present.
    pub key: AuthorKey,
    /// Host (name or address) and port.
    pub host_port: String,
}

impl std::str::FromStr for PeerAddr {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, host_port) = s
            .split_once('@')
            .ok_or_else(|| AddressError::NoAt(s.to_string()))?;
        let key = key.parse()?;
        check_host_port(host_port)?;
        Ok(PeerAddr {
            key,
            host_port: host_port.to_string(),
        })
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.key, self.host_port)
    }
}

impl PeerAddr {
    /// Resolves the host (the first address found).
    pub async fn resolve(&self) -> Result<SocketAddr, TransportError> {
        tokio::net::lookup_host(&self.host_port)
            .await
            .map_err(|source| TransportError::Resolve {
                host: self.host_port.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| TransportError::NoAddress(self.host_port.clone()))
    }
}
