//! The owner's web passphrase: set with `capsule passwd`, checked at
//! `/login`. Stored as an argon2id PHC string (salted, memory-hard) in the
//! data dir, mode 0600; the node reads it at every login, so a new
//! passphrase applies without a restart.

use std::path::Path;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The file's name in the data dir.
pub const FILE: &str = "passphrase";

/// Shortest passphrase accepted, in characters.
pub const MIN_CHARS: usize = 10;

/// Longest passphrase accepted, in bytes: argon2 takes any length, but a
/// login form should not make the node hash megabytes.
pub const MAX_BYTES: usize = 1024;

/// argon2id with OWASP's recommended minimum: 19 MiB, 2 passes, 1 lane
/// (about 20–40 ms on one core).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a passphrase was not set or checked.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    /// None was set.
    #[error("no passphrase is set; run `capsule passwd` on the server")]
    NotSet,
    /// The proposed passphrase is unacceptable.
    #[error("{0}")]
    Weak(String),
    /// The file is not a PHC string this build reads.
    #[error("the passphrase file {0} is damaged; set a new one with `capsule passwd`")]
    Damaged(String),
    /// Reading or writing the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Checks a proposed passphrase's length.
pub fn acceptable(passphrase: &str) -> Result<(), PassphraseError> {
    let chars = passphrase.chars().count();
    if chars < MIN_CHARS {
        return Err(PassphraseError::Weak(format!(
            "the passphrase is {chars} characters; use at least {MIN_CHARS}"
        )));
    }
    if passphrase.len() > MAX_BYTES {
        return Err(PassphraseError::Weak(format!(
            "the passphrase is over {MAX_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Hashes `passphrase` and replaces the file at `path` atomically (a crash
/// leaves the old passphrase or the new one, never half of one).
pub fn set(path: &Path, passphrase: &str) -> Result<(), PassphraseError> {
    acceptable(passphrase)?;
    let salt = SaltString::generate(&mut OsRng);
    let phc = hasher()
        .hash_password(passphrase.as_bytes(), &salt)
        .map_err(|e| PassphraseError::Weak(e.to_string()))?
        .to_string();
    crate::data_dir::write_private(path, format!("{phc}\n").as_bytes(), true)?;
    Ok(())
}

/// Whether `passphrase` is the one stored at `path`. Slow on purpose.
pub fn check(path: &Path, passphrase: &str) -> Result<bool, PassphraseError> {
    let phc = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PassphraseError::NotSet),
        Err(e) => return Err(e.into()),
    };
    let hash = PasswordHash::new(phc.trim())
        .map_err(|_| PassphraseError::Damaged(path.display().to_string()))?;
    if passphrase.len() > MAX_BYTES {
        return Ok(false);
    }
    Ok(hasher()
        .verify_password(passphrase.as_bytes(), &hash)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert!(matches!(
            check(&path, "anything at all"),
            Err(PassphraseError::NotSet)
        ));
        assert!(matches!(set(&path, "short"), Err(PassphraseError::Weak(_))));
        set(&path, "correct horse battery").unwrap();
        assert!(check(&path, "correct horse battery").unwrap());
        assert!(!check(&path, "correct horse batterY").unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            check(&path, "correct horse battery"),
            Err(PassphraseError::Damaged(_))
        ));
    }
}
