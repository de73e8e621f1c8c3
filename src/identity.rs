//! The node's identity: one ed25519 key pair, which is both the person's author
//! key and (later) the node's transport key.
//!
//! The secret seed lives in a small versioned key file, `identity.key`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | magic `capsule-identity` |
//! | 16 | 1 | file version = 1 |
//! | 17 | 32 | ed25519 secret seed |
//! | 49 | 32 | public key derived from the seed (detects a damaged file) |

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use data_encoding::{Encoding, Specification};
use ed25519_consensus::SigningKey;

/// Magic bytes at the start of a key file.
pub const KEY_FILE_MAGIC: &[u8; 16] = b"capsule-identity";
/// The key file version this build writes and reads.
pub const KEY_FILE_VERSION: u8 = 1;
/// Size of a version-1 key file.
pub const KEY_FILE_LEN: usize = 16 + 1 + 32 + 32;

/// Errors reading or writing an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("cannot access key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a Capsule key file at all.
    #[error(
        "{path} is not a Capsule key file (wrong size or magic bytes); restore identity.key from your backup"
    )]
    NotAKeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// The key file was written by a newer Capsule.
    #[error(
        "{path} is a version {version} key file, but this capsule reads version {KEY_FILE_VERSION}; upgrade capsule"
    )]
    UnknownVersion {
        /// The key file.
        path: PathBuf,
        /// The version found.
        version: u8,
    },
    /// The stored public key does not match the seed: the file is damaged.
    #[error(
        "{path} is damaged: its public key does not match its secret seed; restore identity.key from your backup"
    )]
    Damaged {
        /// The key file.
        path: PathBuf,
    },
}

/// An author's public key: 32 bytes of an ed25519 verification key.
///
/// Its textual form is RFC 4648 base32, lowercase, without padding: 52
/// characters, short enough to be one DNS label.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuthorKey(pub [u8; 32]);

fn base32() -> Encoding {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.check_trailing_bits = true;
    spec.encoding().expect("valid base32 specification")
}

impl AuthorKey {
    /// Length of the textual form.
    pub const TEXT_LEN: usize = 52;
}

impl fmt::Display for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32().encode(&self.0))
    }
}

impl fmt::Debug for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorKey({self})")
    }
}

/// Why a string is not an author key.
#[derive(Debug, thiserror::Error)]
#[error(
    "{input:?} is not an author key: expected 52 base32 characters (a-z, 2-7), as `capsule init` prints"
)]
pub struct ParseKeyError {
    input: String,
}

impl FromStr for AuthorKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseKeyError {
            input: s.to_string(),
        };
        if s.len() != Self::TEXT_LEN {
            return Err(err());
        }
        let bytes = base32()
            .decode(s.to_ascii_lowercase().as_bytes())
            .map_err(|_| err())?;
        Ok(AuthorKey(bytes.try_into().map_err(|_| err())?))
    }
}

/// The node's secret identity.
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// An identity from a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Identity {
            signing: SigningKey::from(seed),
        }
    }

    /// A fresh identity from the operating system's random source.
    pub fn generate() -> Self {
        Identity {
            signing: SigningKey::new(rand_core::OsRng),
        }
    }

    /// The public author key.
    pub fn author(&self) -> AuthorKey {
        AuthorKey(self.signing.verification_key().to_bytes())
    }

    /// The signing key, for making entries.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The key file's bytes.
    pub fn to_file_bytes(&self) -> [u8; KEY_FILE_LEN] {
        let mut out = [0u8; KEY_FILE_LEN];
        out[..16].copy_from_slice(KEY_FILE_MAGIC);
        out[16] = KEY_FILE_VERSION;
        out[17..49].copy_from_slice(self.signing.as_bytes());
        out[49..].copy_from_slice(&self.author().0);
        out
    }

    /// Parses a key file's bytes; `path` only names the file in errors.
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<Self, IdentityError> {
        let path = path.to_path_buf();
        if bytes.len() < 17 || &bytes[..16] != KEY_FILE_MAGIC {
            return Err(IdentityError::NotAKeyFile { path });
        }
        if bytes[16] != KEY_FILE_VERSION {
            return Err(IdentityError::UnknownVersion {
                path,
                version: bytes[16],
            });
        }
        if bytes.len() != KEY_FILE_LEN {
            return Err(IdentityError::NotAKeyFile { path });
        }
        let seed: [u8; 32] = bytes[17..49].try_into().expect("32 bytes");
        let identity = Identity::from_seed(seed);
        if identity.author().0[..] != bytes[49..] {
            return Err(IdentityError::Damaged { path });
        }
        Ok(identity)
    }

    /// Loads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        if path.is_dir() {
            return Err(IdentityError::NotAKeyFile {
                path: path.to_path_buf(),
            });
        }
        let bytes = fs::read(path).map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_file_bytes(&bytes, path)
    }

    /// Writes a new key file at `path` with mode 0600, refusing to replace an
    /// existing one. The file is written under a temporary name, synced, then
    /// renamed, so a crash never leaves half a key.
    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
        crate::data_dir::write_private(path, &self.to_file_bytes(), false).map_err(|source| {
            IdentityError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trip_is_52_lowercase_chars() {
        let id = Identity::from_seed([7; 32]);
        let text = id.author().to_string();
        assert_eq!(text.len(), 52);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        );
        assert_eq!(text.parse::<AuthorKey>().unwrap(), id.author());
        assert_eq!(
            text.to_uppercase().parse::<AuthorKey>().unwrap(),
            id.author()
        );
    }

    #[test]
    fn key_text_rejects_garbage() {
        assert!("abc".parse::<AuthorKey>().is_err());
        assert!("1".repeat(52).parse::<AuthorKey>().is_err());
        // 52 characters carry 260 bits: the 4 trailing bits must be zero,
        // or one key would have many spellings. Every last character
        // either is refused or spells a key whose text is that spelling.
        let key = Identity::from_seed([1; 32]).author();
        let text = key.to_string();
        let mut accepted = Vec::new();
        for c in "abcdefghijklmnopqrstuvwxyz234567".chars() {
            let spelling = format!("{}{c}", &text[..51]);
            if let Ok(parsed) = spelling.parse::<AuthorKey>() {
                assert_eq!(parsed.to_string(), spelling, "a key has one spelling");
                accepted.push(parsed);
            }
        }
        assert!(accepted.contains(&key));
        // The last character holds 1 bit of the key and 4 trailing bits.
        assert_eq!(accepted.len(), 2);
    }

    #[test]
    fn key_file_round_trip_and_damage() {
        let id = Identity::from_seed([9; 32]);
        let bytes = id.to_file_bytes();
        let p = Path::new("k");
        assert_eq!(
            Identity::from_file_bytes(&bytes, p).unwrap().author(),
            id.author()
        );
        let mut bad = bytes;
        bad[20] ^= 1;
        assert!(matches!(
            Identity::from_file_bytes(&bad, p),
            Err(IdentityError::Damaged { .. })
        ));
        let mut v2 = bytes;
        v2[16] = 2;
        assert!(matches!(
            Identity::from_file_bytes(&v2, p),
            Err(IdentityError::UnknownVersion { version: 2, .. })
        ));
        assert!(matches!(
            Identity::from_file_bytes(b"hello", p),
            Err(IdentityError::NotAKeyFile { .. })
        ));
    }
}
