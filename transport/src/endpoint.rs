//! QUIC endpoints with TLS 1.3 for both sides, tuned as measured on loopback (docs/ARCHITECTURE.md).
//!
//! The server presents a self-signed certificate it made at first start; the client trusts
//! exactly that certificate, pinned by its SHA-256 in the connection file, and nothing else.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// How long a silent peer is given before its connection is declared dead. The client sends
/// keep-alives at a third of this, so only a dead or unreachable peer ever reaches it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(6);
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// SNI name; the certificate is pinned by hash, so the name itself proves nothing.
pub const SERVER_NAME: &str = "remora";

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot make a certificate: {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("QUIC configuration: {0}")]
    Quic(String),
}

/// A server's certificate and private key (DER).
#[derive(Clone)]
pub struct Identity {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Identity {
    pub fn generate() -> Result<Self, EndpointError> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| EndpointError::Certificate(e.to_string()))?;
        Ok(Self {
            cert_der: ck.cert.der().to_vec(),
            key_der: ck.key_pair.serialize_der(),
        })
    }

    /// Loads `cert.der` and `key.der` from `dir`, making and keeping them on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, EndpointError> {
        let (cert, key) = (dir.join("cert.der"), dir.join("key.der"));
        if let (Ok(cert_der), Ok(key_der)) = (std::fs::read(&cert), std::fs::read(&key)) {
            return Ok(Self { cert_der, key_der });
        }
        std::fs::create_dir_all(dir)?;
        let id = Self::generate()?;
        std::fs::write(&cert, &id.cert_der)?;
        write_private(&key, &id.key_der)?;
        Ok(id)
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path)?.write_all(bytes)
}

pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// ring, with AES-128-GCM first: measured 30% faster than ChaCha20 here.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

fn transport(loopback: bool) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(6000))),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // Flow-control windows must cover the bandwidth-delay product (1 Gbit/s at 150 ms is
    // 19 MB); REMORA_WINDOW raises them for faster or longer links.
    let window = std::env::var("REMORA_WINDOW")
        .ok()
        .and_then(|v| remora_protocol::size::parse_size(&v).ok())
        .unwrap_or(128 << 20)
        .clamp(1 << 20, (1 << 62) - 1);
    t.stream_receive_window(quinn::VarInt::from_u64(window / 2).unwrap_or(quinn::VarInt::MAX));
    t.receive_window(quinn::VarInt::from_u64(window).unwrap_or(quinn::VarInt::MAX));
    t.send_window(window);
    t.congestion_controller_factory(congestion());
    if loopback {
        // Datagram size is the big lever on loopback (3x); GSO must then be off, or segments
        // above the kernel's 64 KiB limit are dropped silently.
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(65_527);
        t.mtu_discovery_config(Some(mtu));
        t.enable_segmentation_offload(false);
    }
    t
}

/// The congestion controller: Remora's own loss-tolerant Cubic ([`crate::congestion`]) by
/// default; `REMORA_CONGESTION=tolerant|cubic|bbr|newreno` chooses.
///
/// Measured through the relay (`cargo bench -p remora-benches --bench distance`, 256 MiB each
/// way, 1 Gbit/s, 30 ms, a drop-tail queue of twice the bandwidth-delay product; two runs on a
/// shared 2-core machine, load average about 3 with the benchmark's own processes):
///
/// | controller | clean link | 1 % random loss each way |
/// | --- | --- | --- |
/// | loss-tolerant Cubic (default) | 0.86-0.92x of the cap | 0.83-0.89x |
/// | quinn's Cubic (`cubic`) | 0.87-0.92x | 0.20-0.28x (it cuts at every random loss) |
/// | quinn's BBR (`bbr`, `REMORA_WINDOW=8M`) | 0.78-0.91x | 0.18-0.67x |
///
/// The clean link is slow start's to lose (4-5 round trips from 240 KB to the product, and the
/// first copy's time includes them), the same for all three. quinn's BBR also collapsed once
/// (0.19x) on a clean link when its start-up overshot the queue. On loopback (`--bench
/// transport`) the default moved 256 MiB at 1.8-2.3 GB/s up and 1.4-1.9 down, quinn's Cubic
/// 0.8-2.3 and 1.0-1.9 (noise).
///
/// The initial window is 240 KB (quinn's BBR default) rather than RFC 9002's 14.7 KB: a
/// session starts by sending module images (a CuPy import loads tens of MB) and device facts,
/// and at 150 ms each extra slow-start round costs 150 ms (measured: start-up of a C program
/// 10.5 round trips with 14.7 KB, 7.4 with 240 KB).
fn congestion() -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
    use crate::congestion::LossTolerantConfig;
    use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    const INITIAL_WINDOW: u64 = 200 * 1200;
    match std::env::var("REMORA_CONGESTION").as_deref() {
        Ok("bbr") => Arc::new(BbrConfig::default()),
        Ok("newreno") => {
            let mut c = NewRenoConfig::default();
            c.initial_window(INITIAL_WINDOW);
            Arc::new(c)
        }
        Ok("cubic") => {
            let mut c = CubicConfig::default();
            c.initial_window(INITIAL_WINDOW);
            Arc::new(c)
        }
        _ => {
            let mut c = LossTolerantConfig::default();
            c.initial_window(INITIAL_WINDOW);
            Arc::new(c)
        }
    }
}

/// Endpoint settings: on loopback, allow 64 KiB datagrams. Each side advertises this limit and
/// MTU discovery never grows past the peer's, so both must raise it.
fn endpoint_config(loopback: bool) -> quinn::EndpointConfig {
    let mut c = quinn::EndpointConfig::default();
    if loopback {
        let _ = c.max_udp_payload_size(65_527);
    }
    c
}

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket, EndpointError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // 4 MiB buffers remove UDP drops under bulk load; the kernel may cap them, which is fine.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A listening server endpoint. Must be called inside a tokio runtime.
pub fn server(addr: SocketAddr, id: &Identity) -> Result<quinn::Endpoint, EndpointError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(id.cert_der.clone())], key)?;
    tls.alpn_protocols = vec![remora_protocol::ALPN.to_vec()];
    // 0-RTT: a client that connected before in this process may send its hello with its
    // first flight (see `client_tls`). rustls accepts early data only with its stateful
    // session cache, whose tickets are single use (`take`): a replayed first flight finds its
    // ticket gone and is answered with a full handshake, its early data dropped unread. QUIC
    // requires the maximum to be exactly u32::MAX.
    tls.max_early_data_size = u32::MAX;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| EndpointError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(addr.ip().is_loopback())));
    let socket = udp_socket(addr)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| EndpointError::Quic("no async runtime".into()))?;
    Ok(quinn::Endpoint::new(
        endpoint_config(addr.ip().is_loopback()),
        Some(cfg),
        socket,
        runtime,
    )?)
}

/// A client endpoint configured to trust only the certificate with `pinned` SHA-256.
/// Must be called inside a tokio runtime.
pub fn client(server_addr: SocketAddr, pinned: [u8; 32]) -> Result<quinn::Endpoint, EndpointError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(pinned)?)
        .map_err(|e| EndpointError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(server_addr.ip().is_loopback())));
    let bind: SocketAddr = if server_addr.is_ipv6() {
        "[::]:0".parse()
    } else {
        "0.0.0.0:0".parse()
    }
    .map_err(|_| EndpointError::Quic("bind address".into()))?;
    let socket = udp_socket(bind)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| EndpointError::Quic("no async runtime".into()))?;
    let mut ep = quinn::Endpoint::new(
        endpoint_config(server_addr.ip().is_loopback()),
        None,
        socket,
        runtime,
    )?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// The client's TLS: trusts only the pinned certificate and resumes sessions with it.
///
/// Session tickets (and the configuration) are kept per pinned certificate for the life of the process, so a process
/// that connects again to the same server (a pool's link to a member for each session, a
/// member watch that reconnects, a second client in one program) resumes, and sends its hello
/// as 0-RTT data: the connection and the hello then cost one round trip instead of two.
/// Keying by the pin means a ticket is only ever offered to the server that issued it, and
/// never skips the pin check for another certificate. rustls offers no way to write a ticket
/// out, so a new process (each `remora run`) starts with a full handshake.
fn client_tls(pinned: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, EndpointError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    // One configuration per pin, not just one ticket store: rustls resumes a ticket only with
    // the very verifier (the same `Arc`) that checked the certificate it was issued under.
    static CONFIGS: OnceLock<Mutex<HashMap<[u8; 32], Arc<rustls::ClientConfig>>>> = OnceLock::new();
    let mut configs = CONFIGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = configs.get(&pinned) {
        return Ok(c.clone());
    }
    let provider = provider();
    let verifier = Arc::new(PinnedCert {
        pinned,
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![remora_protocol::ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::in_memory_sessions(32);
    tls.enable_early_data = true;
    let tls = Arc::new(tls);
    configs.insert(pinned, tls.clone());
    Ok(tls)
}

/// Trusts exactly one certificate, named by its SHA-256 (the connection file's pin).
#[derive(Debug)]
struct PinnedCert {
    pinned: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate SHA-256 {} does not match the pinned {} from the connection file",
                hex::encode(fingerprint(end_entity)),
                hex::encode(self.pinned)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
