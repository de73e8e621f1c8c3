//! `<data>/config.toml`: the settings of `capsule up`, for a node that
//! should start the same way every time (a service unit that runs plain
//! `capsule up`). Every key is optional and named like the flag it stands
//! for; a flag given on the command line wins, and `peer` flags add to
//! `peers`.
//!
//! ```toml
//! domain = "alice.example"
//! email = "alice@example.com"
//! sync_listen = "0.0.0.0:4433"
//! peers = ["KEY@bob.example:4433"]
//! sync_interval = 60
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file's name in the data dir.
pub const FILE: &str = "config.toml";

/// What the file may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
    /// `--sync-interval`.
    pub sync_interval: Option<f64>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
}

/// Why config.toml could not be used.
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
}

/// Reads `<dir>/config.toml`; no file is an empty config.
pub fn load(dir: &Path) -> Result<Config, ConfigError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    toml::from_str(&text).map_err(|source| ConfigError::Invalid { path, source })
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
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("domian"), "{e}");
    }
}
