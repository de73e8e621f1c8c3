//! The actor's RSA key: what ActivityPub servers verify this node's HTTP
//! signatures with. Mastodon releases verify RSA only, so the actor has an
//! RSA-2048 key beside the node's ed25519 identity: `<data>/actor-key.pem`
//! (PKCS#8, mode 0600), made on first use.
//!
//! The `rsa` crate generates the key and reads and writes PEM; `ring` does
//! every signature and verification. (The `rsa` crate's private-key
//! operations are not constant-time, RUSTSEC-2023-0071; this node never
//! signs or decrypts with it, and generation happens once, offline.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

/// The key file's name in the data folder.
pub const FILE: &str = "actor-key.pem";

/// Size of a new key, in bits.
pub const BITS: usize = 2048;

/// Why the actor key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not an RSA private key this node can use.
    #[error("{path} is not a PKCS#8 RSA private key: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The actor's key pair.
pub struct ActorKey {
    pair: ring::rsa::KeyPair,
    public_pem: String,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for ActorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorKey").finish_non_exhaustive()
    }
}

impl ActorKey {
    /// Reads `<dir>/actor-key.pem`, or makes a key and writes it there
    /// (durably, readable by the owner only) when there is none.
    pub fn load_or_create(dir: &Path) -> Result<ActorKey, KeyError> {
        let path = dir.join(FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(pem) => Self::from_pem(&pem).map_err(|reason| KeyError::Bad {
                path: path.clone(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, BITS).map_err(|e| {
                    KeyError::Bad {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| KeyError::Bad {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                match crate::data_dir::write_private(&path, pem.as_bytes(), false) {
                    // Another process made one first: theirs is the key.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Self::load_or_create(dir);
                    }
                    done => done.map_err(io)?,
                }
                Self::from_pem(&pem).map_err(|reason| KeyError::Bad {
                    path: path.clone(),
                    reason,
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key from its PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<ActorKey, String> {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
        let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
        let pair = ring::rsa::KeyPair::from_pkcs8(der.as_bytes()).map_err(|e| e.to_string())?;
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?;
        Ok(ActorKey {
            pair,
            public_pem,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// The public key as `-----BEGIN PUBLIC KEY-----` PEM (SPKI), as the
    /// actor document publishes it.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &self.rng,
                message,
                &mut signature,
            )
            .expect("signing with a valid key into a buffer of its size");
        signature
    }
}

/// A signature asked of the [`Signers`]: the message, and where the
/// signature goes.
type Job = (Vec<u8>, tokio::sync::oneshot::Sender<Vec<u8>>);

/// Threads that sign with the actor key at a low CPU priority (nice
/// [`NICE`]): a fan-out to thousands of inboxes signs on whatever the
/// cores have spare, and a post or a page never waits behind it.
pub struct Signers {
    key: Arc<ActorKey>,
    jobs: tokio::sync::mpsc::Sender<Job>,
}

/// How much lower than the node's other threads the signing threads run.
pub const NICE: i32 = 10;

impl Signers {
    /// `threads` signing threads (one per core is right: they only take
    /// what is spare). They stop when the `Signers` is dropped.
    pub fn start(key: Arc<ActorKey>, threads: usize) -> Signers {
        let (jobs, queue) = tokio::sync::mpsc::channel::<Job>(1024);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads.max(1) {
            let (key, queue) = (Arc::clone(&key), Arc::clone(&queue));
            let started = std::thread::Builder::new()
                .name(format!("capsule-sign-{n}"))
                .spawn(move || {
                    // On Linux a thread is a task of its own: this lowers
                    // this thread only.
                    // SAFETY: gettid and setpriority have no preconditions.
                    unsafe {
                        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                        libc::setpriority(libc::PRIO_PROCESS, tid, NICE);
                    }
                    loop {
                        let job = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .blocking_recv();
                        let Some((message, reply)) = job else { break };
                        let _ = reply.send(key.sign(&message));
                    }
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start a signing thread; signing inline");
            }
        }
        Signers { key, jobs }
    }

    /// The signature of `message`, from a signing thread (or made here if
    /// none runs).
    pub async fn sign(&self, message: Vec<u8>) -> Vec<u8> {
        let (reply, signature) = tokio::sync::oneshot::channel();
        match self.jobs.send((message, reply)).await {
            Ok(()) => match signature.await {
                Ok(s) => s,
                Err(_) => unreachable_signer(),
            },
            Err(tokio::sync::mpsc::error::SendError((message, _))) => self.key.sign(&message),
        }
    }
}

#[cold]
fn unreachable_signer() -> Vec<u8> {
    panic!("a signing thread dropped a job without answering")
}

/// An RSA public key in PEM, SPKI (`BEGIN PUBLIC KEY`) or PKCS#1
/// (`BEGIN RSA PUBLIC KEY`), as the PKCS#1 DER ring verifies with.
pub fn pkcs1_from_pem(pem: &str) -> Option<Vec<u8>> {
    let key = rsa::RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .ok()?;
    Some(key.to_pkcs1_der().ok()?.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_made_once_kept_private_and_verifies_its_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let key = ActorKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ActorKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.public_pem(), again.public_pem());
        let signature = key.sign(b"hello");
        let public = pkcs1_from_pem(again.public_pem()).unwrap();
        assert!(super::super::signature::verify_rsa(
            &public, b"hello", &signature
        ));
        assert!(!super::super::signature::verify_rsa(
            &public, b"hellO", &signature
        ));
        assert!(
            pkcs1_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_none()
        );
    }
}
