//! A pool: a Remora server whose GPUs are other servers' (its *members*).
//!
//! Clients connect to a pool exactly as to a server. Each session says in its hello how many
//! GPUs and how much memory it wants; the pool places it on free GPUs of one member
//! ([`placement`]), or keeps it waiting in a FIFO queue, telling it its place, until GPUs free
//! up or its queue timeout passes. A placed session is forwarded call by call to its member
//! over a link of its own (`remora_transport::client::Link`, the same call pipeline the shim
//! uses), with device numbers translated so the client sees its GPUs as 0..N-1 ([`session`]).
//! The member enforces the session's memory quota and frees everything when the link closes.
//!
//! Members are watched ([`members`]): each holds an observer connection whose QUIC keep-alives
//! tell within a few seconds that it went silent; a silent member gets nothing new, its
//! sessions' links fail by themselves within the idle timeout, and it rejoins when it answers.
//!
//! Tokens: the pool's own and, with a tokens file, one per person
//! (`remora_protocol::access`), read again when the file changes. The pool enforces a person's
//! sessions, GPUs per session and device memory (reserved per session out of the person's
//! limit and passed to the member as the session's quota); module images are the members'
//! business. [`metrics`] counts sessions, the queue and the members' health.
//!
//! The pool does not run kernels or hold device memory, and is not a `Backend`: forwarding
//! typed calls keeps the client's batching intact, where a per-call backend would turn every
//! asynchronous call into a round trip.

pub mod forward;
pub mod members;
pub mod metrics;
pub mod placement;
pub mod session;
pub mod vgpu;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use remora_protocol::access::Access;
use remora_protocol::tokens::TokensFileError;
use remora_protocol::ConnectionFile;
use remora_transport::endpoint::{self, EndpointError, Identity};

use crate::members::Members;
use crate::placement::Scheduler;

/// How a pool is set up.
pub struct PoolConfig {
    pub listen: SocketAddr,
    pub token: String,
    pub identity: Identity,
    pub name: String,
    /// Members given as connection files.
    pub members: Vec<ConnectionFile>,
    /// Members found by DNS: every address `host` resolves to, at `port`, with the
    /// certificate and token of `credentials` (its address is ignored).
    pub dns: Option<(String, u16, ConnectionFile)>,
    /// At most this many sessions share one GPU.
    pub sessions_per_gpu: u32,
    /// How long a session waits in the queue when it does not say.
    pub queue_timeout: Duration,
    /// One token per person, with limits; read again when it changes.
    pub tokens_file: Option<PathBuf>,
    /// When virtual GPUs split launches.
    pub split: vgpu::SplitPolicy,
}

/// Why a pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Tokens(#[from] TokensFileError),
}

/// State shared by the pool's tasks.
pub struct Pool {
    access: Access,
    metrics: metrics::PoolMetrics,
    name: String,
    queue_timeout: Duration,
    sched: Mutex<Scheduler>,
    members: Members,
    /// Woken whenever placements may have changed.
    changed: tokio::sync::Notify,
    /// Set on SIGTERM: new sessions are refused, queued ones told so.
    draining: std::sync::atomic::AtomicBool,
    /// Client connections being served (queued, placed, or saying hello).
    active: std::sync::atomic::AtomicUsize,
    /// Why the sessions still running were ended (at the end of a drain).
    ending: tokio::sync::watch::Sender<Option<String>>,
    split: vgpu::SplitPolicy,
    /// What each virtual GPU did, for `remora status`.
    vgpus: Mutex<BTreeMap<placement::SessionId, Arc<Mutex<vgpu::VgpuStats>>>>,
}

impl Pool {
    fn sched(&self) -> MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn vgpus(&self) -> MutexGuard<'_, BTreeMap<placement::SessionId, Arc<Mutex<vgpu::VgpuStats>>>> {
        self.vgpus.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new virtual GPU's statistics, shown by `remora status` while its session lives.
    fn vgpu_stats(&self, id: placement::SessionId) -> Arc<Mutex<vgpu::VgpuStats>> {
        self.vgpus().entry(id).or_default().clone()
    }
}

/// A bound, not yet running pool.
pub struct PoolServer {
    endpoint: quinn::Endpoint,
    pool: Arc<Pool>,
    dns: Option<(String, u16, ConnectionFile)>,
}

impl PoolServer {
    /// Binds the endpoint. Must be called inside a tokio runtime.
    pub fn bind(cfg: PoolConfig) -> Result<Self, BindError> {
        let access = Access::new(cfg.token, cfg.tokens_file)?;
        let endpoint = endpoint::server(cfg.listen, &cfg.identity)?;
        let pool = Arc::new(Pool {
            access,
            metrics: metrics::PoolMetrics::new(),
            name: cfg.name,
            queue_timeout: cfg.queue_timeout,
            sched: Mutex::new(Scheduler::new(cfg.sessions_per_gpu)),
            members: Members::default(),
            changed: tokio::sync::Notify::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            active: std::sync::atomic::AtomicUsize::new(0),
            ending: tokio::sync::watch::Sender::new(None),
            vgpus: Mutex::new(BTreeMap::new()),
            split: cfg.split,
        });
        for file in cfg.members {
            members::add(&pool, file);
        }
        Ok(Self {
            endpoint,
            pool,
            dns: cfg.dns,
        })
    }

    /// The endpoint, for closing it at the end of a drain.
    pub fn endpoint(&self) -> quinn::Endpoint {
        self.endpoint.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn control(&self) -> PoolControl {
        PoolControl(self.pool.clone())
    }

    /// Serves until the endpoint is closed.
    pub async fn run(self) {
        let control = self.control();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKENS_POLL).await;
                control.reload();
            }
        });
        for id in 0..self.pool.members.len() {
            tokio::spawn(members::watch(self.pool.clone(), id));
        }
        if let Some((host, port, creds)) = self.dns {
            tokio::spawn(members::discover(self.pool.clone(), host, port, creds));
        }
        while let Some(incoming) = self.endpoint.accept().await {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match remora_transport::server::accept(incoming).await {
                    Ok(conn) => session::serve(conn, pool).await,
                    Err(e) => tracing::info!(%remote, "handshake failed: {e}"),
                }
            });
        }
    }
}

/// How often the tokens file is looked at for changes.
const TOKENS_POLL: Duration = Duration::from_millis(500);

/// A running pool's handle for the operator's actions.
#[derive(Clone)]
pub struct PoolControl(Arc<Pool>);

impl PoolControl {
    /// Reads the tokens file again if it changed; sessions of revoked tokens end at their
    /// next call. An invalid file is logged and changes nothing.
    pub fn reload(&self) {
        match self.0.access.reload() {
            Ok(r) => {
                for a in &r.revoked {
                    tracing::warn!("token `{}` revoked", a.name);
                }
                if !r.revoked.is_empty() {
                    self.0.changed.notify_waiters();
                }
            }
            Err(e) => tracing::error!("{e}; the tokens in force are unchanged"),
        }
    }

    /// Stops taking sessions (queued ones are refused), lets running ones go on for `grace`,
    /// then ends those left with the reason, as a server's drain does.
    pub async fn drain(&self, grace: Duration, endpoint_close: impl FnOnce()) {
        use std::sync::atomic::Ordering;
        let pool = &self.0;
        pool.draining.store(true, Ordering::SeqCst);
        pool.changed.notify_waiters();
        let idle = || pool.active.load(Ordering::SeqCst) == 0;
        let deadline = tokio::time::Instant::now() + grace;
        while !idle() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !idle() {
            pool.ending.send_replace(Some(format!(
                "pool shutting down: sessions still running after the drain grace period of \
                 {:.0} s were ended",
                grace.as_secs_f64()
            )));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !idle() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        endpoint_close();
    }

    /// The Prometheus text format of the pool's metrics, now.
    pub fn metrics(&self) -> String {
        let pool = &self.0;
        let queue = pool.sched().queue().0;
        let members = pool
            .members
            .lock()
            .iter()
            .map(|m| (m.file.address.to_string(), m.state.as_str()))
            .collect();
        pool.metrics.encode(metrics::Snapshot { queue, members })
    }
}
