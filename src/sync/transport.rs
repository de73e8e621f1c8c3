//! QUIC for `capsule/1`: quinn over UDP, TLS 1.3, mutual authentication by
//! node key.
//!
//! Each node presents a self-signed certificate (rcgen) for its ed25519 node
//! key (the author key). There are no certificate authorities: the dialler
//! checks that the certificate carries the key it expects, the listener
//! records the key the dialler presents. Both check the TLS handshake
//! signature themselves against that same key, so a certificate can never
//! claim one key while the handshake is signed by another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_consensus::{Signature, VerificationKey};
use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

use crate::identity::{AuthorKey, Identity};

/// The ALPN of protocol version 1.
pub const ALPN: &[u8] = b"capsule/1";

/// How long a dial waits for the peer's handshake: a node that is down
/// never answers (UDP), and the mesh must move on to other peers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with no packet for this long is dead (QUIC's idle timeout).
/// Keep-alives every third of it keep a quiet but live session open.
pub const CONNECTION_IDLE: Duration = Duration::from_secs(30);

/// The DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte
/// key follows it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an ed25519 PKCS#8 v1 private key (RFC 8410); the
/// 32-byte seed follows it.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Errors setting up QUIC.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The certificate for the node key could not be made.
    #[error("the node's certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// TLS set-up failed.
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS configuration does not suit QUIC.
    #[error("TLS set-up for QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host and port.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// A host name resolved to no address.
    #[error("cannot resolve {0}: no address found")]
    NoAddress(String),
    /// Dialling could not start.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: quinn::ConnectError,
    },
    /// The handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Handshake {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: quinn::ConnectionError,
    },
    /// The peer did not answer the handshake in time.
    #[error("cannot connect to {addr}: no answer within {} s (is the node up, and UDP open?)", HANDSHAKE_TIMEOUT.as_secs())]
    NoAnswer {
        /// The address.
        addr: SocketAddr,
    },
}

/// Why a connection or one of its streams failed, once set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Setting up or dialling failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The connection was lost or closed.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// Reading a stream failed or it ended early.
    #[error(transparent)]
    Read(#[from] quinn::ReadExactError),
    /// Writing a stream failed.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// The stream was already closed.
    #[error(transparent)]
    Stream(#[from] quinn::ClosedStream),
    /// Our side of the session's queues closed: the connection is gone.
    #[error("the connection closed")]
    Closed,
    /// The peer ended the session's stream before the session was done.
    #[error("the peer closed the session")]
    PeerClosed,
    /// The two sides stopped without both being done (a bug's loop bound).
    #[error("the session stalled before both sides were done")]
    Stalled,
    /// The peer broke the live-connection protocol.
    #[error("{0}")]
    Live(&'static str),
    /// The peer speaks another version of live notices.
    #[error("the peer speaks live notices version {0}, this node 1")]
    NoticeVersion(u8),
    /// A task of the session ended abnormally.
    #[error("a task of the session failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The node key in a certificate: the key of its ed25519 SubjectPublicKeyInfo,
/// which must occur exactly once.
pub fn key_of_certificate(der: &[u8]) -> Option<AuthorKey> {
    let mut found = None;
    for at in 0..der.len().saturating_sub(ED25519_SPKI_PREFIX.len() + 32) + 1 {
        if der[at..].starts_with(&ED25519_SPKI_PREFIX) {
            if found.is_some() {
                return None;
            }
            let start = at + ED25519_SPKI_PREFIX.len();
            found = Some(AuthorKey(der.get(start..start + 32)?.try_into().ok()?));
        }
    }
    found
}

/// A self-signed certificate for the node key, and the key in PKCS#8.
pub fn certificate(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TransportError> {
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&identity.signing_key().to_bytes());
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    let key_pair = rcgen::KeyPair::try_from(&der)?;
    let mut params = rcgen::CertificateParams::new(vec!["capsule".to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.author().to_string());
    let cert = params.self_signed(&key_pair)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let bad = || rustls::Error::General("the handshake signature does not verify".into());
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(bad());
    }
    let key = key_of_certificate(cert).ok_or_else(bad)?;
    let key = VerificationKey::try_from(key.0).map_err(|_| bad())?;
    let signature: [u8; 64] = dss.signature().try_into().map_err(|_| bad())?;
    key.verify(&Signature::from(signature), message)
        .map_err(|_| bad())?;
    Ok(HandshakeSignatureValid::assertion())
}

/// The dialler's check: the responder's certificate carries `expected`.
#[derive(Debug)]
struct ExpectKey(AuthorKey);

impl ServerCertVerifier for ExpectKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match key_of_certificate(end_entity) {
            Some(k) if k == self.0 => Ok(ServerCertVerified::assertion()),
            Some(k) => Err(rustls::Error::General(format!(
                "the peer is {k}, not the expected {}",
                self.0
            ))),
            None => Err(rustls::Error::General(
                "the peer's certificate carries no node key".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The listener's check: any node key, recorded from the certificate.
#[derive(Debug)]
struct AnyKey;

impl ClientCertVerifier for AnyKey {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        key_of_certificate(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or_else(|| rustls::Error::General("the certificate carries no node key".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The congestion controller of every sync and live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// BBR (quinn's, after Google's QUIC BBRv1): paces at the bandwidth and
    /// round trip it measures, so a random loss does not halve the rate.
    Bbr,
    /// CUBIC, quinn's default: backs off by 30 % on each loss.
    Cubic,
    /// NewReno: halves its window on each loss.
    NewReno,
}

/// Names another congestion controller for the measurements of `capsule
/// bench sync --congestion`, which sets it for the nodes it starts; a
/// node's owner has no reason to.
pub const CONGESTION_ENV: &str = "CAPSULE_CONGESTION";

impl Congestion {
    /// The controller nodes use, chosen by measurement: `capsule bench sync
    /// --authors 10 --entries-per-author 2000 --rtt-ms 50 --loss 0.01
    /// --congestion …` (20,000 entries, 5.4 MB, through a relay adding
    /// 25 ms each way), three seeds each. With 1 % loss BBR kept 0.86–1.00
    /// of its loss-free rate, CUBIC 0.05–0.07 (about 12 s instead of 1 s:
    /// each random loss cuts its window, which then grows by one datagram a
    /// round trip). Without loss BBR paid about 12 % (50 ms links) and 10–15
    /// % (loopback) for its pacing. Real links lose packets; a sync that
    /// takes ten times longer on them is the worse trade. quinn calls its
    /// BBR experimental (an early BBRv1, less fair to other flows on a
    /// saturated link than CUBIC); sync moves bursts of a few megabytes,
    /// not long flows.
    pub const DEFAULT: Congestion = Congestion::Bbr;

    /// [`Congestion::DEFAULT`], or what [`CONGESTION_ENV`] names.
    pub fn chosen() -> Congestion {
        static CHOSEN: std::sync::OnceLock<Congestion> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            std::env::var(CONGESTION_ENV)
                .ok()
                .and_then(|name| Congestion::parse(&name).ok())
                .unwrap_or(Congestion::DEFAULT)
        })
    }

    /// `bbr`, `cubic` or `newreno`.
    pub fn parse(name: &str) -> Result<Congestion, String> {
        match name {
            "bbr" => Ok(Congestion::Bbr),
            "cubic" => Ok(Congestion::Cubic),
            "newreno" => Ok(Congestion::NewReno),
            other => Err(format!(
                "{other:?} is not a congestion controller: bbr, cubic or newreno"
            )),
        }
    }

    /// The name [`Congestion::parse`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Bbr => "bbr",
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
        }
    }

    fn factory(self) -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
        match self {
            Congestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
            Congestion::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            Congestion::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
        }
    }
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.congestion_controller_factory(Congestion::chosen().factory());
    t.max_idle_timeout(Some(
        CONNECTION_IDLE.try_into().expect("a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(CONNECTION_IDLE / 3));
    // Sessions use one stream each, blob fetches one each (up to 8 at
    // once, src/mesh/fetch.rs), besides checks and peer exchange: a
    // session is never kept waiting behind pictures. One unidirectional
    // stream: a live connection's notices.
    t.max_concurrent_bidi_streams(16u32.into());
    t.max_concurrent_uni_streams(1u32.into());
    // Large windows keep a loopback or LAN link busy while the receiver
    // verifies: 8 MiB per stream, 16 MiB per connection.
    t.stream_receive_window((8u32 * 1024 * 1024).into());
    t.receive_window((16u32 * 1024 * 1024).into());
    t.send_window(16 * 1024 * 1024);
    Arc::new(t)
}

/// ALPN of a live connection (src/mesh/live.rs): sessions on demand, and
/// the peer's change notices.
pub const ALPN_LIVE: &[u8] = b"capsule-live/1";

/// A client configuration for the protocol `alpn` that accepts only
/// `expected` as the peer.
pub fn client_config_for(
    identity: &Identity,
    expected: AuthorKey,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TransportError> {
    let (cert, key) = certificate(identity)?;
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectKey(expected)))
        .with_client_auth_cert(vec![cert], key)?;
    crypto.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config());
    Ok(config)
}

/// A server configuration presenting this node's key and requiring one
/// from every dialler.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, TransportError> {
    let (cert, key) = certificate(identity)?;
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyKey))
        .with_single_cert(vec![cert], key)?;
    crypto.alpn_protocols = vec![ALPN.to_vec(), ALPN_LIVE.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport_config());
    Ok(config)
}

/// A listening endpoint (which can also dial).
pub fn listen(identity: &Identity, addr: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
    quinn::Endpoint::server(server_config(identity)?, addr)
        .map_err(|source| TransportError::Bind { addr, source })
}

/// An endpoint for dialling only, on an ephemeral port of the right family.
pub fn dialler(peer: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
    let addr: SocketAddr = if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    quinn::Endpoint::client(addr).map_err(|source| TransportError::Bind { addr, source })
}

/// Dials `addr` and demands that the peer is `expected`.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    expected: AuthorKey,
    addr: SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    connect_for(endpoint, identity, expected, addr, ALPN).await
}

/// [`connect`] for the protocol `alpn`.
pub async fn connect_for(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    expected: AuthorKey,
    addr: SocketAddr,
    alpn: &[u8],
) -> Result<quinn::Connection, TransportError> {
    let connecting = endpoint
        .connect_with(
            client_config_for(identity, expected, alpn)?,
            addr,
            "capsule",
        )
        .map_err(|source| TransportError::Connect { addr, source })?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(connected) => connected.map_err(|source| TransportError::Handshake { addr, source }),
        Err(_) => Err(TransportError::NoAnswer { addr }),
    }
}

/// The protocol a connection agreed on (ALPN).
pub fn protocol(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The node key a connected peer presented.
pub fn peer_key(connection: &quinn::Connection) -> Option<AuthorKey> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    key_of_certificate(certs.first()?)
}

/// Application close codes of Capsule's QUIC connections, so the peer's
/// log says why a connection ended.
pub mod close {
    /// The work is done, or the node is shutting down.
    pub const DONE: u32 = 0;
    /// The peer presented no usable node key.
    pub const NO_KEY: u32 = 1;
    /// A limit was reached (connections, sessions, live slots).
    pub const REFUSED: u32 = 2;
    /// The peer broke the protocol, or the session failed; the reason
    /// follows.
    pub const FAILED: u32 = 3;
}

/// Why a length-prefixed frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over the limit of the stream's protocol.
    #[error("a frame of {len} bytes, over the limit of {max}")]
    TooLarge {
        /// What the prefix claimed.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The stream failed or ended inside a frame.
    #[error(transparent)]
    Read(#[from] quinn::ReadExactError),
}

/// Writes one frame: the body's length as u32 BE, then the body.
pub async fn write_frame(
    send: &mut quinn::SendStream,
    body: &[u8],
) -> Result<(), quinn::WriteError> {
    send.write_all(&(body.len() as u32).to_be_bytes()).await?;
    send.write_all(body).await
}

/// Reads one frame of at most `max` bytes, refusing a larger one before
/// allocating; `None` when the stream ended cleanly before a frame.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(prefix);
    if len as usize > max {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max,
        });
    }
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body).await?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_node_key_once() {
        let identity = Identity::from_seed([7; 32]);
        let (cert, _) = certificate(&identity).unwrap();
        assert_eq!(key_of_certificate(&cert), Some(identity.author()));
        // A certificate naming two keys names none.
        let mut doubled = cert.to_vec();
        doubled.extend_from_slice(&ED25519_SPKI_PREFIX);
        doubled.extend_from_slice(&[1; 32]);
        assert_eq!(key_of_certificate(&doubled), None);
        assert_eq!(key_of_certificate(&[]), None);
    }
}
