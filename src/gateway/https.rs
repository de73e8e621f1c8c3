//! HTTPS for a node with a domain: a certificate from an ACME CA (Let's
//! Encrypt unless told otherwise), obtained and renewed by rustls-acme over
//! TLS-ALPN-01 on the HTTPS port itself, cached under the data dir so a
//! restart does not ask the CA again; and a listener that hands axum
//! finished TLS streams. Plain HTTP only redirects here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Redirect;
use futures_util::StreamExt;
use rustls::ServerConfig;
use rustls_acme::caches::DirCache;
use rustls_acme::{AcmeConfig, EventOk, is_tls_alpn_challenge};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; more connections wait in the kernel's
/// accept queue.
pub const MAX_HANDSHAKES: usize = 256;

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub struct Acme {
    /// The node's domain: the certificate's only name.
    pub domain: String,
    /// A contact address the CA may write to about the certificate.
    pub email: Option<String>,
    /// The CA's ACME directory URL.
    pub directory: String,
    /// Where the account key and certificate are cached (private keys:
    /// created 0700).
    pub cache: PathBuf,
    /// An extra root to trust for the CA's own API (a test CA's listener).
    pub extra_root: Option<PathBuf>,
}

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The certificate cache directory could not be made private.
    #[error("cannot create the certificate cache {path}: {source}")]
    Cache {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The ACME client's TLS roots could not be loaded.
    #[error(transparent)]
    Client(#[from] crate::mesh::web_client::WebError),
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
}

/// How certificate management went, for `capsule doctor`: the last
/// certificate deployed and the last failure, each with its time (µs since
/// the epoch, 0 = never).
#[derive(Debug, Default)]
pub struct Renewals {
    inner: std::sync::Mutex<RenewalState>,
}

/// What [`Renewals`] holds.
#[derive(Debug, Default, Clone)]
pub struct RenewalState {
    /// When a certificate was last deployed (from the cache or new).
    pub deployed_us: u64,
    /// When the last attempt failed, and why.
    pub failed: Option<(u64, String)>,
}

impl Renewals {
    /// What happened so far.
    pub fn state(&self) -> RenewalState {
        self.inner.lock().expect("not poisoned").clone()
    }

    fn deployed(&self) {
        self.inner.lock().expect("not poisoned").deployed_us = crate::clock::now_us();
    }

    fn failed(&self, why: String) {
        self.inner.lock().expect("not poisoned").failed = Some((crate::clock::now_us(), why));
    }
}

/// The certificate cached for the domain (PEM: key and chain), if any.
pub fn cached_certificate(cache: &Path) -> Option<Vec<u8>> {
    let entries = std::fs::read_dir(cache).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("cached_cert_"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .and_then(|e| std::fs::read(e.path()).ok())
}

/// Starts certificate management for `acme` and returns the TLS config of
/// ordinary connections and of TLS-ALPN-01 validation connections. The
/// certificate is loaded from the cache or ordered in the background; until
/// it is there, handshakes fail. `renewals` hears how it goes.
pub fn start(
    acme: &Acme,
    renewals: Arc<Renewals>,
) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), HttpsError> {
    create_private_dir(&acme.cache)?;
    let mut config = AcmeConfig::new_with_client_config(
        [&acme.domain],
        crate::mesh::web_client::client(acme.extra_root.as_deref())?,
    )
    .directory(&acme.directory)
    .cache(DirCache::new(acme.cache.clone()));
    if let Some(email) = &acme.email {
        config = config.contact_push(format!("mailto:{email}"));
    }
    let mut state = config.state();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut default = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(state.resolver());
    default.alpn_protocols = vec![b"http/1.1".to_vec()];
    let challenge = state.challenge_rustls_config_with_provider(provider);
    let domain = acme.domain.clone();
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(EventOk::DeployedCachedCert) => {
                    renewals.deployed();
                    tracing::info!(%domain, "certificate deployed from the cache");
                    println!("certificate for {domain}: from the cache");
                }
                Ok(EventOk::DeployedNewCert) => {
                    renewals.deployed();
                    tracing::info!(%domain, "new certificate deployed");
                    println!("certificate for {domain}: newly issued by the CA");
                }
                Ok(other) => tracing::debug!(%domain, event = ?other, "acme"),
                Err(e) => {
                    renewals.failed(e.to_string());
                    tracing::warn!(%domain, error = ?e, "certificate management failed; retrying")
                }
            }
        }
    });
    Ok((Arc::new(default), challenge))
}

fn create_private_dir(path: &Path) -> Result<(), HttpsError> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |source| HttpsError::Cache {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(failed)
}

/// A TCP listener whose connections come out TLS-terminated; TLS-ALPN-01
/// validation connections are answered and closed on the way.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp`, handshaking with `default` (or `challenge` for a
    /// validation connection), at most [`MAX_HANDSHAKES`] at a time.
    pub fn new(
        tcp: TcpListener,
        default: Arc<ServerConfig>,
        challenge: Arc<ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let (send, incoming) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait, not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (send, default, challenge) =
                    (send.clone(), Arc::clone(&default), Arc::clone(&challenge));
                tokio::spawn(async move {
                    let handshake = handshake(stream, default, challenge);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(Some(tls))) => {
                            drop(slot);
                            let _ = send.send((tls, peer)).await;
                        }
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { incoming, addr })
    }
}

/// One handshake; None for a validation connection (answered and closed).
async fn handshake(
    stream: TcpStream,
    default: Arc<ServerConfig>,
    challenge: Arc<ServerConfig>,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    if is_tls_alpn_challenge(&start.client_hello()) {
        tracing::info!("answering a TLS-ALPN-01 validation");
        let mut tls = start.into_stream(challenge).await?;
        tls.shutdown().await?;
        return Ok(None);
    }
    Ok(Some(start.into_stream(default).await?))
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accept task only ends with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// The plain-HTTP side of an HTTPS node: every request is sent, permanently,
/// to the same path on `origin` (`https://domain[:port]`).
pub fn redirect(origin: String) -> Router {
    Router::new().fallback(move |request: Request| {
        let origin = origin.clone();
        async move {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            Redirect::permanent(&format!("{origin}{path}"))
        }
    })
}

/// The origin URL of `domain` served on `port`.
pub fn origin(domain: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{domain}")
    } else {
        format!("https://{domain}:{port}")
    }
}
