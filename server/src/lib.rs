//! The Remora server.
//!
//! Listens for QUIC connections, checks each client's token before anything else, opens one
//! isolated [`session::Session`] per client on a [`backend::Backend`], and executes the client's
//! requests in order. When a client disconnects or dies, its session is dropped and everything
//! it held is freed. Tokens come from the server's own and an optional tokens file
//! (`remora_protocol::access`), read again when it changes; [`Control`] reloads it, drains the server before
//! it stops, and renders its [`metrics`].
//!
//! It does not know which GPU does the work: the emulated backend ([`emulated`]) and the real
//! one ([`cuda`]) implement the same trait.

mod admission;
pub mod backend;
pub mod busy;
pub mod connection;
pub mod cuda;
pub mod emulated;
pub mod ipc;
pub mod metrics;
pub mod session;
mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora_protocol::access::{Access, Account};
use remora_protocol::messages::ServerInfo;
use remora_protocol::tokens::TokensFileError;
use remora_transport::endpoint::{self, EndpointError, Identity};

use crate::metrics::Metrics;

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
    /// One token per person, with limits (`remora token`); read again when it changes.
    pub tokens_file: Option<PathBuf>,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Tokens(#[from] TokensFileError),
}

/// State shared by every connection of a server.
pub(crate) struct Shared {
    pub access: Access,
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
    /// Connections open now (sessions, observers, clients still saying hello).
    pub active: Arc<AtomicUsize>,
    /// Set when the server stops: new sessions are refused.
    pub draining: AtomicBool,
    pub metrics: Metrics,
}

/// A session as `remora status` shows it.
pub(crate) struct SessionEntry {
    pub remote: SocketAddr,
    pub since: std::time::Instant,
    pub quota: Option<u64>,
    /// Whose session it is (`None`: the server's own token).
    pub account: Option<Arc<Account>>,
    pub end: Arc<Ending>,
}

/// Tells a session's connection to end, and why (the client reads the reason).
#[derive(Default)]
pub(crate) struct Ending {
    why: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Ending {
    /// Asks the session to end; the first reason given is the one the client reads.
    pub fn end(&self, why: String) {
        self.why
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
        // notify_one keeps a permit, so an end asked before the connection waits still counts.
        self.notify.notify_one();
    }

    /// Resolves with the reason once [`Ending::end`] was called.
    pub async fn wait(&self) -> String {
        loop {
            if let Some(w) = self.why.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return w;
            }
            self.notify.notified().await;
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the endpoint. Must be called inside a tokio runtime.
    pub fn bind(cfg: ServerConfig) -> Result<Self, BindError> {
        let access = Access::new(cfg.token, cfg.tokens_file)?;
        let endpoint = endpoint::server(cfg.listen, &cfg.identity)?;
        let info = ServerInfo {
            driver_version: cfg.backend.driver_version(),
            server_name: cfg.name,
            devices: cfg.backend.devices().to_vec(),
            lease: cfg.backend.lease(),
        };
        let shared = Arc::new(Shared {
            access,
            backend: cfg.backend,
            info,
            images: Mutex::new(HashMap::new()),
            upload_budget: upload::budget(),
            session_memory: cfg.session_memory,
            sessions: Mutex::new(Default::default()),
            next_session: std::sync::atomic::AtomicU64::new(1),
            active: Arc::new(AtomicUsize::new(0)),
            draining: AtomicBool::new(false),
            metrics: Metrics::new(),
        });
        Ok(Self { endpoint, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// What the binary uses to reload tokens, drain and scrape metrics while this runs.
    pub fn control(&self) -> Control {
        Control {
            shared: self.shared.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    /// Serves until the endpoint is closed. With a tokens file, it is looked at twice a
    /// second and read again when its text changed.
    pub async fn run(self) {
        let control = self.control();
        let watcher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKENS_POLL).await;
                control.reload();
            }
        });
        let active = self.shared.active.clone();
        while let Some(incoming) = self.endpoint.accept().await {
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
                match remora_transport::server::accept(incoming).await {
                    Ok(conn) => connection::serve(conn, shared).await,
                    Err(e) => tracing::info!(%remote, "handshake failed: {e}"),
                }
            });
        }
        watcher.abort();
    }
}

/// How often the tokens file is looked at for changes.
const TOKENS_POLL: Duration = Duration::from_millis(500);

/// A running server's handle for the operator's actions.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
}

impl Control {
    /// Reads the tokens file again if it changed, ending the sessions of revoked tokens. An
    /// invalid file is logged and changes nothing.
    pub fn reload(&self) {
        match self.shared.access.reload() {
            Ok(r) if r.revoked.is_empty() => {}
            Ok(r) => {
                let names: Vec<&str> = r.revoked.iter().map(|a| a.name.as_str()).collect();
                tracing::warn!(
                    "tokens revoked: {}; {} token(s) in force",
                    names.join(", "),
                    r.people
                );
                for s in lock_sessions(&self.shared).values() {
                    if let Some(a) = s.account.as_ref().filter(|a| a.revoked()) {
                        s.end.end(format!(
                            "token `{}` was revoked by the server's operator",
                            a.name
                        ));
                    }
                }
            }
            Err(e) => {
                self.shared.metrics.tokens_file_errors.inc();
                tracing::error!("{e}; the tokens in force are unchanged");
            }
        }
    }

    /// Stops the server gently: new sessions are refused at once, running ones may finish
    /// within `grace`, then those left are ended with "server shutting down" and the endpoint
    /// closes. Returns once every connection is gone (or a few seconds after ending them).
    pub async fn drain(&self, grace: Duration) {
        let shared = &self.shared;
        shared.draining.store(true, Ordering::SeqCst);
        let idle = || shared.active.load(Ordering::SeqCst) == 0;
        let deadline = tokio::time::Instant::now() + grace;
        while !idle() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !idle() {
            let why = format!(
                "server shutting down: sessions still running after the drain grace period of {:.0} s were ended",
                grace.as_secs_f64()
            );
            for s in lock_sessions(shared).values() {
                s.end.end(why.clone());
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !idle() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.endpoint.close(0u32.into(), b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// The Prometheus text format of the server's metrics, now.
    pub fn metrics(&self) -> String {
        let shared = &self.shared;
        let sessions = lock_sessions(shared)
            .values()
            .map(|s| {
                s.account
                    .as_ref()
                    .map_or_else(|| metrics::OWN_TOKEN.to_string(), |a| a.name.clone())
            })
            .collect();
        let tokens = shared
            .access
            .accounts()
            .iter()
            .map(|a| (a.name.clone(), a.memory(), a.modules()))
            .collect();
        let module_cache = shared
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|i| i.len() as u64)
            .sum();
        let device_memory = (0..shared.info.devices.len() as u32)
            .map(|d| shared.backend.memory_used(d))
            .collect();
        shared.metrics.encode(metrics::Snapshot {
            sessions,
            tokens,
            module_cache,
            device_memory,
            draining: shared.draining.load(Ordering::Relaxed),
        })
    }
}

pub(crate) fn lock_sessions(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, SessionEntry>> {
    shared.sessions.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most clients served at once; more are refused at the QUIC handshake.
pub const MAX_CONNECTIONS: usize = 256;

/// Counts a connection for as long as it lives.
struct ConnectionCount(Arc<AtomicUsize>);

impl ConnectionCount {
    fn new(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A random token of 32 hex digits.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}
