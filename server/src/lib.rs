//! The Remora server.
//!
//! Listens for QUIC connections, checks each client's token before anything else, opens one
//! isolated [`session::Session`] per client on a [`backend::Backend`], and executes the client's
//! requests in order. When a client disconnects or dies, its session is dropped and everything
//! it held is freed.
//!
//! It does not know which GPU does the work: the emulated backend ([`emulated`]) and the real
//! one ([`cuda`]) implement the same trait.

pub mod backend;
pub mod busy;
pub mod connection;
pub mod cuda;
pub mod emulated;
pub mod session;
mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use remora_protocol::messages::ServerInfo;
use remora_transport::endpoint::{self, EndpointError, Identity};

pub use backend::{Backend, CuError, DeviceSession};

/// How a server is set up.
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub token: String,
    pub identity: Identity,
    pub backend: Arc<dyn Backend>,
    pub name: String,
    /// Most device memory one client may hold at once (all devices together); `None`: no
    /// limit beyond the devices' own.
    pub session_memory: Option<u64>,
}

/// State shared by every connection of a server.
pub(crate) struct Shared {
    pub token: String,
    pub backend: Arc<dyn Backend>,
    pub info: ServerInfo,
    /// Module images by content hash, so each is uploaded once per server.
    pub images: Mutex<HashMap<[u8; 32], Arc<[u8]>>>,
    /// Bytes that module uploads in progress may hold, over all connections.
    pub upload_budget: Arc<tokio::sync::Semaphore>,
    pub session_memory: Option<u64>,
    /// Sessions open now, for `remora status`.
    pub sessions: Mutex<std::collections::BTreeMap<u64, SessionEntry>>,
    pub next_session: std::sync::atomic::AtomicU64,
}

/// A session as `remora status` shows it.
pub(crate) struct SessionEntry {
    pub remote: SocketAddr,
    pub since: std::time::Instant,
    pub quota: Option<u64>,
}

/// A bound, not yet running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the endpoint. Must be called inside a tokio runtime.
    pub fn bind(cfg: ServerConfig) -> Result<Self, EndpointError> {
        let endpoint = endpoint::server(cfg.listen, &cfg.identity)?;
        let info = ServerInfo {
            driver_version: cfg.backend.driver_version(),
            server_name: cfg.name,
            devices: cfg.backend.devices().to_vec(),
            lease: cfg.backend.lease(),
        };
        let shared = Arc::new(Shared {
            token: cfg.token,
            backend: cfg.backend,
            info,
            images: Mutex::new(HashMap::new()),
            upload_budget: upload::budget(),
            session_memory: cfg.session_memory,
            sessions: Mutex::new(Default::default()),
            next_session: std::sync::atomic::AtomicU64::new(1),
        });
        Ok(Self { endpoint, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves until the endpoint is closed.
    pub async fn run(self) {
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        while let Some(incoming) = self.endpoint.accept().await {
            use std::sync::atomic::Ordering;
            if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                tracing::warn!(remote = %incoming.remote_address(), "refusing a connection: {MAX_CONNECTIONS} already open");
                incoming.refuse();
                continue;
            }
            let shared = self.shared.clone();
            let guard = ConnectionCount::new(active.clone());
            tokio::spawn(async move {
                let _guard = guard;
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => connection::serve(conn, shared).await,
                    Err(e) => tracing::info!(%remote, "handshake failed: {e}"),
                }
            });
        }
    }
}

/// Most clients served at once; more are refused at the QUIC handshake.
pub const MAX_CONNECTIONS: usize = 256;

/// Counts a connection for as long as it lives.
struct ConnectionCount(Arc<std::sync::atomic::AtomicUsize>);

impl ConnectionCount {
    fn new(n: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A random token of 32 hex digits.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}
