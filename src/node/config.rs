//! The settings of a running node: one [`NodeConfig`] with a default for
//! every field, built from layers of [`Settings`]: `<data>/config.toml`,
//! then the command line's flags on top (a flag wins; `--peer` adds to
//! `peers`). A node that should start the same way every time (a service
//! unit that runs plain `capsule up`) keeps its settings in the file; every
//! key is optional and named like the flag it stands for:
//!
//! ```toml
//! domain = "alice.example"
//! email = "alice@example.com"
//! peers = ["KEY@bob.example:4433"]
//! sync_interval = 60
//! media_budget = "2GiB"
//! handle = "alice"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::gateway::{https, passphrase};
use crate::mesh::address::{AddressError, PeerAddr, check_host_port};
use crate::mesh::scheduler::{MeshConfig, SYNC_INTERVAL};
use crate::node::admin;

/// The file's name in the data dir.
pub const FILE: &str = "config.toml";

/// Plain HTTP without a domain: loopback, so a node started with no
/// settings at all serves its owner and nobody else.
pub const LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// Plain HTTP with a domain: port 80 on every address, where browsers and
/// the ACME CA arrive first; it only redirects to HTTPS.
pub const LISTEN_WITH_DOMAIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 80);

/// HTTPS with a domain: port 443 on every address (TLS-ALPN-01 is
/// validated there too).
pub const HTTPS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 443);

/// The sync listener (QUIC, UDP) without a domain: loopback, like the web.
pub const SYNC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4433);

/// The sync listener with a domain: UDP 4433 on every address, IPv6 and
/// IPv4 alike (one dual-stack socket), since `/.well-known/capsule` tells
/// the world to dial the domain there.
pub const SYNC_LISTEN_WITH_DOMAIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 4433);

/// The shortest sync interval accepted: below it a node would spend its
/// time dialling.
pub const MIN_SYNC_INTERVAL: f64 = 0.1;

/// One layer of settings, every one optional: what config.toml says, or
/// what the flags say.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--sync-listen`.
    pub sync_listen: Option<SocketAddr>,
    /// `--domain`.
    pub domain: Option<String>,
    /// `--email`.
    pub email: Option<String>,
    /// `--acme-directory`.
    pub acme_directory: Option<String>,
    /// `--https-listen`.
    pub https_listen: Option<SocketAddr>,
    /// `--public-sync`.
    pub public_sync: Option<String>,
    /// `--peer`, each.
    #[serde(default)]
    pub peers: Vec<String>,
    /// `--sync-interval`, in seconds.
    pub sync_interval: Option<f64>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--media-budget`, such as `2GiB` or `500MB`.
    pub media_budget: Option<String>,
    /// `--handle`: the fediverse user name.
    pub handle: Option<String>,
    /// `--insecure-federation` (a flag only, for tests on one machine).
    #[serde(skip)]
    pub insecure_federation: bool,
    /// `--acme-root` (a flag only: a test CA's root).
    #[serde(skip)]
    pub acme_root: Option<PathBuf>,
    /// `--ca-root` (a flag only: a test CA's root for pulls).
    #[serde(skip)]
    pub ca_root: Option<PathBuf>,
}

impl Settings {
    /// These settings over `base`: each one given here wins; peers add up.
    pub fn over(self, base: Settings) -> Settings {
        let mut peers = base.peers;
        peers.extend(self.peers);
        Settings {
            listen: self.listen.or(base.listen),
            sync_listen: self.sync_listen.or(base.sync_listen),
            domain: self.domain.or(base.domain),
            email: self.email.or(base.email),
            acme_directory: self.acme_directory.or(base.acme_directory),
            https_listen: self.https_listen.or(base.https_listen),
            public_sync: self.public_sync.or(base.public_sync),
            peers,
            sync_interval: self.sync_interval.or(base.sync_interval),
            metrics_listen: self.metrics_listen.or(base.metrics_listen),
            media_budget: self.media_budget.or(base.media_budget),
            handle: self.handle.or(base.handle),
            insecure_federation: self.insecure_federation || base.insecure_federation,
            acme_root: self.acme_root.or(base.acme_root),
            ca_root: self.ca_root.or(base.ca_root),
        }
    }
}

/// HTTPS on a domain.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    /// Where HTTPS listens ([`HTTPS_LISTEN`]).
    pub listen: SocketAddr,
    /// The certificate: domain, CA, cache.
    pub acme: https::Acme,
}

/// Everything a node runs with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory.
    pub root: PathBuf,
    /// Plain HTTP: the gateway itself, or with `https` only a redirect
    /// ([`LISTEN`], or [`LISTEN_WITH_DOMAIN`]).
    pub listen: SocketAddr,
    /// The sync listener ([`SYNC_LISTEN`]).
    pub sync_listen: SocketAddr,
    /// HTTPS with an ACME certificate, when a domain is given (none by
    /// default: a node without a domain is for its owner on loopback).
    pub https: Option<HttpsConfig>,
    /// The owner's passphrase file (`<data>/passphrase`).
    pub passphrase: PathBuf,
    /// Where `/metrics` is served (loopback only); nowhere by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Bootstrap peers (none by default: followed authors' nodes and peer
    /// exchange are found as the owner follows).
    pub peers: Vec<PeerAddr>,
    /// How the node dials its peers ([`SYNC_INTERVAL`] apart).
    pub mesh: MeshConfig,
    /// The sync address to tell others (`HOST:PORT`); by default the
    /// domain (or listen address) and the sync port.
    pub public_sync: Option<String>,
    /// The admin socket (`<data>/admin.sock`).
    pub admin_socket: PathBuf,
    /// Bytes of other authors' pictures kept at most
    /// ([`crate::mesh::budget::DEFAULT_BUDGET`]).
    pub media_budget: u64,
    /// The fediverse account's user name: `--handle`, or by default the
    /// domain's first label ([`crate::fediverse::default_handle`]).
    pub handle: String,
    /// Whether to federate over plain http with loopback addresses (tests
    /// on one machine only).
    pub insecure_federation: bool,
}

/// A size such as `2GiB`, `500MB`, `5MiB` or `1048576` (bytes), in bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: f64 = number.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = number * scale as f64;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not TOML, or names a setting that does not exist.
    #[error("{path} is not a valid configuration: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        source: toml::de::Error,
    },
    /// A peer is not `KEY@HOST:PORT`.
    #[error("peer {peer:?}: {source}")]
    Peer {
        /// As given.
        peer: String,
        /// Why not.
        source: AddressError,
    },
    /// The sync interval is not a number of seconds, or too short.
    #[error("--sync-interval {0} is not a number of seconds of at least {MIN_SYNC_INTERVAL}")]
    SyncInterval(f64),
    /// The handle is not a user name Mastodon accepts.
    #[error("--handle {0:?} is not a user name: letters, digits and _ only, at most 30")]
    Handle(String),
    /// The media budget is not a size.
    #[error("--media-budget {0:?} is not a size such as 2GiB, 500MB or 0")]
    MediaBudget(String),
    /// HTTPS settings without a domain.
    #[error("--email, --https-listen and --acme-directory need --domain")]
    NeedsDomain,
    /// The advertised sync address is not `HOST:PORT`.
    #[error("--public-sync {0:?} is not HOST:PORT")]
    PublicSync(String),
    /// Peers would be told an address the sync listener does not answer on.
    #[error(
        "sync would listen on {listen} only, but /.well-known/capsule would tell peers to dial {advertised}, where no other machine reaches it: {hint}"
    )]
    Unreachable {
        /// Where sync listens.
        listen: SocketAddr,
        /// What peers would be told (`HOST:PORT`).
        advertised: String,
        /// What to do.
        hint: &'static str,
    },
}

/// Reads `<dir>/config.toml`; no file is an empty layer.
pub fn load(dir: &Path) -> Result<Settings, ConfigError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    toml::from_str(&text).map_err(|source| ConfigError::Invalid { path, source })
}

impl NodeConfig {
    /// The node of data dir `root` with `settings` (the layers already
    /// merged), every other field at its default; checked.
    pub fn new(root: &Path, settings: Settings) -> Result<NodeConfig, ConfigError> {
        let peers = settings
            .peers
            .iter()
            .map(|peer| {
                peer.parse().map_err(|source| ConfigError::Peer {
                    peer: peer.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<PeerAddr>, _>>()?;
        let interval = settings
            .sync_interval
            .unwrap_or(SYNC_INTERVAL.as_secs_f64());
        if !(interval.is_finite() && interval >= MIN_SYNC_INTERVAL) {
            return Err(ConfigError::SyncInterval(interval));
        }
        if settings.domain.is_none()
            && (settings.email.is_some()
                || settings.https_listen.is_some()
                || settings.acme_directory.is_some()
                || settings.acme_root.is_some())
        {
            return Err(ConfigError::NeedsDomain);
        }
        if let Some(given) = &settings.public_sync {
            check_host_port(given).map_err(|_| ConfigError::PublicSync(given.clone()))?;
        }
        let sync_listen = settings.sync_listen.unwrap_or(match settings.domain {
            Some(_) => SYNC_LISTEN_WITH_DOMAIN,
            None => SYNC_LISTEN,
        });
        if let Some(domain) = &settings.domain {
            let advertised = settings
                .public_sync
                .clone()
                .unwrap_or_else(|| format!("{domain}:{}", sync_listen.port()));
            check_reachable(sync_listen, &advertised)?;
        }
        let media_budget = match &settings.media_budget {
            None => crate::mesh::budget::DEFAULT_BUDGET,
            Some(text) => parse_size(text).ok_or_else(|| ConfigError::MediaBudget(text.clone()))?,
        };
        let handle = match &settings.handle {
            Some(h) if crate::fediverse::valid_handle(h) => h.clone(),
            Some(h) => return Err(ConfigError::Handle(h.clone())),
            None => {
                crate::fediverse::default_handle(settings.domain.as_deref().unwrap_or_default())
            }
        };
        let https = settings.domain.map(|domain| HttpsConfig {
            listen: settings.https_listen.unwrap_or(HTTPS_LISTEN),
            acme: https::Acme {
                domain,
                email: settings.email,
                directory: settings
                    .acme_directory
                    .unwrap_or_else(|| https::LETS_ENCRYPT.to_string()),
                cache: root.join("acme"),
                extra_root: settings.acme_root,
            },
        });
        Ok(NodeConfig {
            root: root.to_path_buf(),
            listen: settings.listen.unwrap_or(match https {
                Some(_) => LISTEN_WITH_DOMAIN,
                None => LISTEN,
            }),
            sync_listen,
            https,
            passphrase: root.join(passphrase::FILE),
            metrics_listen: settings.metrics_listen,
            peers,
            mesh: MeshConfig {
                interval: Duration::from_secs_f64(interval),
                web_root: settings.ca_root,
                ..MeshConfig::default()
            },
            public_sync: settings.public_sync,
            admin_socket: root.join(admin::SOCKET_FILE),
            media_budget,
            handle,
            insecure_federation: settings.insecure_federation,
        })
    }
}

/// Refuses to advertise `advertised` (`HOST:PORT`) when the sync listener
/// on `listen` cannot be reached there: a loopback listener behind a name
/// or address other machines dial, or a listener on one address behind
/// another address. A port that differs is allowed (a router may forward
/// it); a name is taken at its word (DNS is `capsule doctor`'s to check).
pub fn check_reachable(listen: SocketAddr, advertised: &str) -> Result<(), ConfigError> {
    let host = advertised
        .rsplit_once(':')
        .map_or(advertised, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let literal: Option<std::net::IpAddr> = host.parse().ok();
    let advertised_loopback = literal.map_or(host.eq_ignore_ascii_case("localhost"), |ip| {
        ip.is_loopback()
    });
    let unreachable = |hint| ConfigError::Unreachable {
        listen,
        advertised: advertised.to_string(),
        hint,
    };
    if listen.ip().is_loopback() && !advertised_loopback {
        return Err(unreachable(
            "leave out --sync-listen (with --domain, sync listens on every address) or give one that peers reach, such as [::]:4433",
        ));
    }
    if let Some(ip) = literal
        && !listen.ip().is_unspecified()
        && ip != listen.ip()
    {
        return Err(unreachable(
            "listen where the address points (or on [::]), or advertise the listening address with --public-sync",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_documents_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().domain.is_none());
        std::fs::write(
            dir.path().join(FILE),
            "domain = \"alice.example\"\nsync_listen = \"0.0.0.0:4433\"\npeers = [\"a@b:1\"]\nsync_interval = 60\n",
        )
        .unwrap();
        let c = load(dir.path()).unwrap();
        assert_eq!(c.domain.as_deref(), Some("alice.example"));
        assert_eq!(c.peers, vec!["a@b:1".to_string()]);
        assert_eq!(c.sync_interval, Some(60.0));
        std::fs::write(dir.path().join(FILE), "domian = \"typo.example\"\n").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("domian"), "{e}");
    }

    #[test]
    fn defaults_then_the_file_then_the_flags() {
        let root = Path::new("/data");
        let plain = NodeConfig::new(root, Settings::default()).unwrap();
        assert_eq!(plain.listen, LISTEN);
        assert_eq!(plain.sync_listen, SYNC_LISTEN);
        assert!(plain.https.is_none() && plain.peers.is_empty());
        assert_eq!(plain.mesh.interval, SYNC_INTERVAL);
        assert_eq!(plain.admin_socket, root.join(admin::SOCKET_FILE));

        let key = crate::identity::Identity::from_seed([1; 32]).author();
        let file = Settings {
            domain: Some("alice.example".into()),
            sync_interval: Some(30.0),
            peers: vec![format!("{key}@bob.example:4433")],
            ..Settings::default()
        };
        let flags = Settings {
            sync_interval: Some(5.0),
            peers: vec![format!("{key}@carol.example:4433")],
            ..Settings::default()
        };
        let c = NodeConfig::new(root, flags.over(file)).unwrap();
        assert_eq!(c.listen, LISTEN_WITH_DOMAIN);
        assert_eq!(
            c.sync_listen, SYNC_LISTEN_WITH_DOMAIN,
            "public with a domain"
        );
        assert_eq!(c.https.as_ref().unwrap().listen, HTTPS_LISTEN);
        assert_eq!(c.mesh.interval, Duration::from_secs(5), "the flag wins");
        assert_eq!(c.peers.len(), 2, "peers add up");

        let refused = |s: Settings| NodeConfig::new(root, s).unwrap_err().to_string();
        assert!(
            refused(Settings {
                email: Some("a@b".into()),
                ..Settings::default()
            })
            .contains("need --domain")
        );
        assert!(
            refused(Settings {
                sync_interval: Some(0.01),
                ..Settings::default()
            })
            .contains("--sync-interval")
        );
        assert!(
            refused(Settings {
                peers: vec!["nobody".into()],
                ..Settings::default()
            })
            .contains("nobody")
        );
        assert!(
            refused(Settings {
                public_sync: Some("no-port".into()),
                ..Settings::default()
            })
            .contains("HOST:PORT")
        );
        // A domain with sync on loopback would advertise an address
        // nobody reaches.
        let on_loopback = refused(Settings {
            domain: Some("alice.example".into()),
            sync_listen: Some("127.0.0.1:4433".parse().unwrap()),
            ..Settings::default()
        });
        assert!(
            on_loopback.contains("127.0.0.1:4433 only")
                && on_loopback.contains("alice.example:4433"),
            "{on_loopback}"
        );
    }

    #[test]
    fn only_addresses_the_listener_answers_on_are_advertised() {
        let ok = |listen: &str, advertised: &str| {
            check_reachable(listen.parse().unwrap(), advertised).is_ok()
        };
        assert!(ok("[::]:4433", "alice.example:4433"));
        assert!(ok("0.0.0.0:4433", "203.0.113.5:4433"));
        assert!(ok("203.0.113.5:4433", "203.0.113.5:4433"));
        assert!(ok("[::]:4433", "alice.example:443"), "a forwarded port");
        assert!(ok("127.0.0.1:0", "localhost:4433"));
        assert!(ok("127.0.0.1:0", "127.0.0.1:9"));
        assert!(ok("[::1]:4433", "[::1]:4433"));
        assert!(!ok("127.0.0.1:4433", "alice.example:4433"));
        assert!(!ok("[::1]:4433", "203.0.113.5:4433"));
        assert!(!ok("192.0.2.1:4433", "203.0.113.5:4433"));
        assert!(!ok("192.0.2.1:4433", "[2001:db8::1]:4433"));
    }
}
