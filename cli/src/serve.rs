//! `remora serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use remora_protocol::ConnectionFile;
use remora_server::emulated::EmulatedBackend;
use remora_server::{Backend, Server, ServerConfig};
use remora_transport::endpoint::Identity;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum BackendKind {
    /// Every real GPU found, else emulated ones.
    Auto,
    /// Real GPUs through the CUDA driver (fails if there is none).
    Cuda,
    /// GPUs emulated on this machine's CPUs: runs PTX kernels.
    Emulated,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (UDP). Use 0.0.0.0:PORT to accept other machines.
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// Whose GPUs to serve (default: auto). A pool (--member, --members-dns) serves its
    /// members' GPUs only.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Number of emulated devices.
    #[arg(long, default_value_t = 1)]
    devices: u32,
    /// Memory of each emulated device (e.g. 512M, 4G).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    device_memory: u64,
    /// Where to write the connection file clients use (default: STATE_DIR/connection).
    #[arg(long)]
    connection_file: Option<PathBuf>,
    /// Where the server keeps its key, certificate and token.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Address written into the connection file, when it differs from --listen (NAT, 0.0.0.0).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Warp instructions an emulated kernel may run before it fails with
    /// CUDA_ERROR_LAUNCH_TIMEOUT (702).
    #[arg(long, default_value_t = 1 << 36)]
    kernel_budget: u64,
    /// Worker threads of each emulated device's kernels (default: one per CPU); 1 simulates a
    /// one-core "low-end card".
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Most device memory one client may hold at once (e.g. 2G); default: no quota.
    #[arg(long, value_parser = parse_size)]
    session_memory: Option<u64>,
    /// Serve as a pool: a member's connection file (repeatable). Clients are placed on the
    /// members' GPUs.
    #[arg(long = "member", value_name = "FILE")]
    members: Vec<PathBuf>,
    /// Serve as a pool of every address NAME resolves to (asked again every few seconds), at
    /// PORT, with the certificate and token of --member-credentials.
    #[arg(long, value_name = "NAME:PORT", requires = "member_credentials")]
    members_dns: Option<String>,
    /// A connection file holding the certificate and token the DNS-found members share (its
    /// address is ignored).
    #[arg(long, value_name = "FILE")]
    member_credentials: Option<PathBuf>,
    /// At most this many sessions share one GPU of a pool.
    #[arg(long, default_value_t = 1)]
    sessions_per_gpu: u32,
    /// Seconds a pool keeps a session waiting for GPUs when the client does not say.
    #[arg(long, default_value_t = 600.0)]
    queue_timeout: f64,
    /// When a pool's virtual GPUs split a provably splittable launch over their members:
    /// `auto` when the timing model says it pays, `always` (to test), `never`.
    #[arg(long, default_value = "auto", value_name = "auto|always|never")]
    split: remora_pool::vgpu::SplitPolicy,
    /// A tokens file (`remora token add`): one token per person, with limits. Read again
    /// when it changes, or at once on SIGHUP. The server's own token keeps working.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at ADDR (e.g. 127.0.0.1:9464), path /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// On SIGTERM or SIGINT, how long running sessions may go on (new ones are refused)
    /// before they are ended with "server shutting down" (e.g. 30s, 2m, 0).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_grace: std::time::Duration,
}

/// A duration as people write it: `30s`, `2m`, `500ms`, `1h` or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .and_then(|v| std::time::Duration::try_from_secs_f64(v * scale).ok())
        .ok_or_else(|| format!("`{s}` is not a duration like 30s or 2m"))
}

pub use remora_protocol::size::parse_size;

pub(crate) fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("remora");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/remora"),
        None => PathBuf::from(".remora"),
    }
}

fn load_or_create_token(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let t = remora_server::new_token();
    std::fs::write(&path, &t).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(t)
}

fn choose_backend(args: &ServeArgs, seed: [u8; 16]) -> anyhow::Result<Arc<dyn Backend>> {
    let emulated = || -> Arc<dyn Backend> {
        Arc::new(
            EmulatedBackend::new(args.devices, args.device_memory, seed)
                .with_instruction_budget(args.kernel_budget)
                .with_threads(args.threads),
        )
    };
    match args.backend.unwrap_or(BackendKind::Auto) {
        BackendKind::Emulated => Ok(emulated()),
        BackendKind::Cuda => {
            remora_server::cuda::probe().map_err(|why| anyhow::anyhow!("--backend cuda: {why}"))
        }
        BackendKind::Auto => match remora_server::cuda::probe() {
            Ok(b) => Ok(b),
            Err(why) => {
                tracing::info!("no real GPU ({why}); serving emulated GPUs");
                Ok(emulated())
            }
        },
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    let state = args.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let identity = Identity::load_or_create(&state).context("server identity")?;
    let token = load_or_create_token(&state)?;
    if !args.members.is_empty() || args.members_dns.is_some() {
        return serve_pool(args, &state, identity, token);
    }
    let mut seed = [0u8; 16];
    seed.copy_from_slice(&identity.fingerprint()[..16]);
    let backend = choose_backend(&args, seed)?;
    // One worker: the endpoint, every connection and its session run on one thread, which
    // measured best (docs/ARCHITECTURE.md, "Transport facts that shaped the design"); kernels
    // leave it through block_in_place.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let kind = backend.kind();
        let ndev = backend.devices().len();
        let server = Server::bind(ServerConfig {
            listen: args.listen,
            token: token.clone(),
            identity: identity.clone(),
            backend,
            name: hostname(),
            session_memory: args.session_memory,
            tokens_file: args.tokens.clone(),
        })
        .with_context(|| format!("starting the server on {}", args.listen))?;
        let local = server.local_addr()?;
        let control = server.control();
        if let Some(addr) = args.metrics {
            let c = control.clone();
            serve_metrics(addr, move || c.metrics()).await?;
        }
        // Before the connection file exists: whoever waits for it may signal at once.
        let mut signals = Signals::new()?;
        let emulated = Some(kind == "emulated");
        let path = write_connection_file(&args, &state, &identity, token, local, emulated)?;
        println!("remora: serving {ndev} {kind} device(s) on {local}");
        println!("remora: connection file {}", path.display());
        let run = tokio::spawn(server.run());
        while let Signal::Reload = signals.next().await {
            tracing::info!("SIGHUP: reading the tokens file again");
            control.reload();
        }
        println!(
            "remora: draining: no new sessions; running ones may go on for {:?}",
            args.drain_grace
        );
        control.drain(args.drain_grace).await;
        run.abort();
        println!("remora: stopped");
        Ok(0)
    })
}

/// What the operator's signals ask for.
enum Signal {
    /// SIGHUP: read the tokens file again.
    Reload,
    /// SIGTERM or SIGINT: drain, then stop.
    Stop,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Writes the connection file clients use (to --connection-file, else STATE_DIR/connection),
/// naming --advertise, else where the server listens (loopback for 0.0.0.0); returns its path.
fn write_connection_file(
    args: &ServeArgs,
    state: &std::path::Path,
    identity: &Identity,
    token: String,
    local: SocketAddr,
    emulated: Option<bool>,
) -> anyhow::Result<PathBuf> {
    let mut address = args.advertise.unwrap_or(local);
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let file = ConnectionFile {
        address,
        cert_sha256: identity.fingerprint(),
        token,
        emulated,
    };
    let path = args
        .connection_file
        .clone()
        .unwrap_or_else(|| state.join("connection"));
    file.write(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `remora serve --member ...`: a pool of other servers' GPUs.
fn serve_pool(
    args: ServeArgs,
    state: &std::path::Path,
    identity: Identity,
    token: String,
) -> anyhow::Result<i32> {
    if args.backend.is_some() {
        anyhow::bail!(
            "a pool serves its members' GPUs only: run `remora serve --backend ...` separately and add it with --member"
        );
    }
    let members = args
        .members
        .iter()
        .map(|p| ConnectionFile::read(p).with_context(|| format!("--member {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dns = match (&args.members_dns, &args.member_credentials) {
        (Some(name), Some(creds)) => {
            let (host, port) = name
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .with_context(|| format!("--members-dns {name}: expected NAME:PORT"))?;
            let creds = ConnectionFile::read(creds)
                .with_context(|| format!("--member-credentials {}", creds.display()))?;
            Some((host, port, creds))
        }
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let pool = remora_pool::PoolServer::bind(remora_pool::PoolConfig {
            listen: args.listen,
            token: token.clone(),
            identity: identity.clone(),
            name: hostname(),
            members,
            dns,
            sessions_per_gpu: args.sessions_per_gpu,
            queue_timeout: std::time::Duration::from_secs_f64(args.queue_timeout.max(0.0)),
            tokens_file: args.tokens.clone(),
            split: args.split,
        })
        .with_context(|| format!("starting the pool on {}", args.listen))?;
        let local = pool.local_addr()?;
        let control = pool.control();
        if let Some(addr) = args.metrics {
            let c = control.clone();
            serve_metrics(addr, move || c.metrics()).await?;
        }
        let mut signals = Signals::new()?;
        // Members may differ: clients ask the pool what its GPUs are.
        let path = write_connection_file(&args, state, &identity, token, local, None)?;
        println!(
            "remora: pool of {} member(s){} on {local}",
            args.members.len(),
            if args.members_dns.is_some() {
                " and DNS"
            } else {
                ""
            }
        );
        println!("remora: connection file {}", path.display());
        let endpoint = pool.endpoint();
        let run = tokio::spawn(pool.run());
        while let Signal::Reload = signals.next().await {
            tracing::info!("SIGHUP: reading the tokens file again");
            control.reload();
        }
        println!(
            "remora: draining: no new sessions; running ones may go on for {:?}",
            args.drain_grace
        );
        // A pool holds no device state: its sessions' members free everything as the links
        // close.
        control
            .drain(args.drain_grace, || {
                endpoint.close(0u32.into(), b"pool shutting down")
            })
            .await;
        run.abort();
        println!("remora: stopped");
        Ok(0)
    })
}

/// Serves `--metrics ADDR` (a server's or a pool's) and says where.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: impl Fn() -> String + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let at = crate::metrics::serve(addr, Arc::new(metrics))
        .await
        .with_context(|| format!("--metrics {addr}"))?;
    println!("remora: metrics on http://{at}/metrics");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "remora".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_people_write_them() {
        let d = std::time::Duration::from_secs_f64;
        assert_eq!(parse_duration("30s"), Ok(d(30.0)));
        assert_eq!(parse_duration("2m"), Ok(d(120.0)));
        assert_eq!(parse_duration("500ms"), Ok(d(0.5)));
        assert_eq!(parse_duration("0"), Ok(d(0.0)));
        assert_eq!(parse_duration("1.5h"), Ok(d(5400.0)));
        for bad in ["", "soon", "-1s", "1d", "NaNs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
