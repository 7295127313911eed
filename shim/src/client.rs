//! The connection to the Remora server, opened lazily on the first call that needs it.
//!
//! One QUIC connection per process, one long-lived bidirectional stream for calls, pumped by
//! `remora_transport::client::Link` (batching, reply order and deferred errors are the
//! protocol's `ClientConn`). The connection is driven by whichever thread is waiting on it: an
//! application thread making a call runs the (current-thread) tokio runtime itself, so a round
//! trip costs no thread hops on the client. While the application makes no calls, a background
//! thread drives the runtime briefly every few milliseconds, so keep-alives and
//! acknowledgements still flow. Asynchronous calls cost a memcpy into the batch, not a packet.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use remora_protocol::client::INLINE_PAYLOAD;
use remora_protocol::messages::{Reply, Request, ServerInfo, SessionRequest, Window};
use remora_protocol::{ConnError, ConnectionFile, CuStatus, Flush, Sink, Ticket};
use remora_transport::client::{ConnectError, Link};

use crate::ffi::{ShimError, ShimResult};

/// The environment variable naming the connection file (`remora run` sets it).
pub const CONNECTION_ENV: &str = "REMORA_CONNECTION";
/// Address space reserved per device for its allocations (never backed by host memory).
pub const WINDOW_SIZE: u64 = 1 << 40;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the background driver lets the connection rest between turns.
const IDLE_DRIVE: Duration = Duration::from_millis(20);

/// Device-to-host data lands in the application's memory, at the address it named.
struct HostMemory;

impl Sink for HostMemory {
    fn write(&mut self, dst: u64, offset: u64, bytes: &[u8]) {
        // SAFETY: every destination was named by `Client::post_read` (whose caller keeps it
        // valid until the next synchronising call returns, as CUDA requires of an asynchronous
        // copy) or by `Client::call_read` (a slice borrowed until its reply has been taken);
        // the protocol checked that the data is exactly as long as the destination.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (dst + offset) as usize as *mut u8,
                bytes.len(),
            )
        };
    }
}

pub struct Client {
    pub info: ServerInfo,
    pub windows: Vec<Window>,
    pub address: SocketAddr,
    link: Link<HostMemory>,
    rt: Arc<tokio::runtime::Runtime>,
    driver: std::thread::Thread,
    /// Set at process exit: the driver thread then sends the close and stops.
    closing: Arc<std::sync::atomic::AtomicBool>,
    closed: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// An error already returned by the call that met it, which the application must also
    /// see at its next synchronising call ([`Client::hold_for_next_sync`]).
    held: Mutex<Option<ShimError>>,
}

/// The connection, or why there is none: `NO_DEVICE` when a pool has no GPU for this
/// session, else the server is unreachable.
static CLIENT: OnceLock<Result<Arc<Client>, (CuStatus, String)>> = OnceLock::new();

/// The process's connection, opened on first use.
pub fn client() -> ShimResult<&'static Client> {
    match CLIENT.get_or_init(|| {
        connect()
            .map(Arc::new)
            .inspect_err(|e| eprintln!("remora: {}", e.1))
    }) {
        Ok(c) => Ok(c),
        Err((CuStatus::NO_DEVICE, e)) => Err(ShimError::new(CuStatus::NO_DEVICE, e.clone())),
        Err((_, e)) => Err(ShimError::Unreachable(e.clone())),
    }
}

/// The connection if it is already open (for calls that must not open one).
pub fn existing() -> Option<&'static Client> {
    CLIENT.get().and_then(|r| r.as_ref().ok()).map(|c| &**c)
}

/// What this process asks of the server: `REMORA_GPUS`, `REMORA_MEMORY` (bytes, or with a
/// K/M/G/T suffix), `REMORA_QUEUE_TIMEOUT` (seconds) and `REMORA_VIRTUAL_GPU` (members
/// backing one virtual GPU, from a pool), as `remora run` sets them.
fn session_request() -> Result<SessionRequest, String> {
    fn var(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
    let bad = |name: &str, v: &str| format!("{name}={v} is not valid");
    let gpus = match var("REMORA_GPUS") {
        Some(v) => v.trim().parse().map_err(|_| bad("REMORA_GPUS", &v))?,
        None => 0,
    };
    let memory = match var("REMORA_MEMORY") {
        Some(v) => remora_protocol::size::parse_size(&v).map_err(|_| bad("REMORA_MEMORY", &v))?,
        None => 0,
    };
    let queue_timeout_ms = match var("REMORA_QUEUE_TIMEOUT") {
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0)
            .map(|s| (s * 1000.0) as u64)
            .ok_or_else(|| bad("REMORA_QUEUE_TIMEOUT", &v))?,
        None => 0,
    };
    let virtual_gpu = match var("REMORA_VIRTUAL_GPU") {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| bad("REMORA_VIRTUAL_GPU", &v))?,
        None => 0,
    };
    Ok(SessionRequest {
        gpus,
        memory,
        queue_timeout_ms,
        observer: false,
        virtual_gpu,
    })
}

fn connect() -> Result<Client, (CuStatus, String)> {
    let unreachable = |e: String| (CuStatus::DEVICE_UNAVAILABLE, e);
    connect_inner().map_err(|e| match e {
        ConnectError::NoDevice(e) => (CuStatus::NO_DEVICE, e),
        ConnectError::Failed(e) => unreachable(e),
    })
}

fn connect_inner() -> Result<Client, ConnectError> {
    let fail = ConnectError::Failed;
    let request = session_request().map_err(fail)?;
    let path = std::env::var_os(CONNECTION_ENV).ok_or_else(|| {
        format!("{CONNECTION_ENV} is not set: run the application under `remora run` or point it at a server's connection file")
    });
    let path = path.map_err(fail)?;
    let file =
        ConnectionFile::read(std::path::Path::new(&path)).map_err(|e| fail(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the I/O runtime: {e}")))?;
    let rt = Arc::new(rt);
    let addr = file.address;
    // Connect on a helper thread: the calling thread may be inside a runtime of its own.
    let c = std::thread::scope(|s| {
        s.spawn(|| {
            rt.block_on(remora_transport::client::connect(
                &file,
                &request,
                CONNECT_TIMEOUT,
                |place| eprintln!("remora: waiting for a GPU: place {place} in the queue"),
            ))
        })
        .join()
    })
    .map_err(|_| fail("the connection attempt panicked".to_string()))??;
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let driver = {
        let (rt, closing, endpoint) = (rt.clone(), closing.clone(), c.endpoint.clone());
        std::thread::Builder::new()
            .name("remora-io".into())
            .spawn(move || drive_in_background(&rt, &closing, &endpoint, done_tx))
            .map_err(|e| fail(format!("cannot start the I/O thread: {e}")))?
            .thread()
            .clone()
    };
    let windows = reserve_windows(c.info.devices.len()).map_err(fail)?;
    let info = c.info.clone();
    let client = Client {
        info,
        windows: windows.clone(),
        address: addr,
        link: Link::new(c, HostMemory),
        rt,
        driver,
        closing,
        closed: Mutex::new(Some(done_rx)),
        held: Mutex::new(None),
    };
    // Posted, not waited for: a server that cannot use the windows closes the connection
    // saying why, and the first call that waits reports it.
    client
        .post(&Request::SetWindows { windows }, &[])
        .map_err(|e| fail(format!("Remora server at {addr}: {e}")))?;
    // SAFETY: `close_at_exit` is a plain extern "C" fn with no arguments, as atexit expects.
    unsafe { libc::atexit(close_at_exit) };
    crate::fork::initialised();
    tracing::debug!(%addr, devices = client.info.devices.len(), "connected");
    Ok(client)
}

/// Reserves one inaccessible window per device, so device addresses can never be host ones.
fn reserve_windows(devices: usize) -> Result<Vec<Window>, String> {
    (0..devices)
        .map(|device| {
            // SAFETY: an anonymous PROT_NONE mapping at an address of the kernel's choosing
            // touches no existing memory; it is never unmapped, so the window stays reserved.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    WINDOW_SIZE as usize,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!(
                    "cannot reserve a device address window: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(Window {
                device: device as u32,
                base: p as u64,
                size: WINDOW_SIZE,
            })
        })
        .collect()
}

/// Drives the runtime for a moment at a time while no application thread does; at exit, sends
/// the connection close.
fn drive_in_background(
    rt: &tokio::runtime::Runtime,
    closing: &std::sync::atomic::AtomicBool,
    endpoint: &quinn::Endpoint,
    done: std::sync::mpsc::Sender<()>,
) {
    use std::sync::atomic::Ordering;
    while !closing.load(Ordering::Acquire) {
        rt.block_on(async { tokio::time::sleep(Duration::from_micros(200)).await });
        std::thread::park_timeout(IDLE_DRIVE);
    }
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_millis(200), endpoint.wait_idle()).await;
    });
    let _ = done.send(());
}

extern "C" fn close_at_exit() {
    // A forked child holds a copy of the parent's connection: closing it would end the
    // parent's session.
    if crate::fork::forked() {
        return;
    }
    if let Some(c) = existing() {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if std::env::var_os("REMORA_STATS").is_some_and(|v| v != "0" && !v.is_empty()) {
                eprint!("{}", c.stats_report());
            }
            c.close()
        }));
    }
}

impl Client {
    /// Runs `f` to completion, driving the connection on this thread. An application thread
    /// that is itself inside a tokio runtime cannot enter ours: it waits while the background
    /// thread drives instead.
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.driver.unpark();
            futures_lite::future::block_on(f)
        } else {
            self.rt.block_on(f)
        }
    }

    fn lost(e: ConnError) -> ShimError {
        let ConnError::Lost(why) = e;
        ShimError::Unreachable(why)
    }

    /// Queues a call that wants no reply; its bytes are captured before this returns.
    pub fn post(&self, req: &Request, payload: &[u8]) -> ShimResult<()> {
        if payload.len() > INLINE_PAYLOAD {
            return self
                .block_on(self.link.post_large(req, payload))
                .map_err(Self::lost);
        }
        match self.link.post(req, payload).map_err(Self::lost)? {
            Flush::Later => Ok(()),
            _ => self.block_on(self.link.flush()).map_err(Self::lost),
        }
    }

    /// Queues a call whose reply carries `len` bytes for `dst`, written when the next
    /// synchronising call collects it (an asynchronous device-to-host copy).
    ///
    /// # Safety
    /// `dst` stays valid for writes of `len` bytes until the next synchronising call returns,
    /// as CUDA requires of an asynchronous copy's destination.
    pub unsafe fn post_read(&self, req: &Request, dst: *mut u8, len: usize) -> ShimResult<()> {
        self.link
            .post_read(req, dst as usize as u64, len as u64)
            .map(|_| ())
            .map_err(Self::lost)
    }

    /// Queues a posted call (a module load), its payload handed to the transport before this
    /// returns: nobody waits for its reply now; [`Client::wait_posted`] takes it later by the
    /// ticket, and its error is also reported by the next synchronising call.
    pub fn post_call(&self, req: &Request, payload: &[u8]) -> ShimResult<Ticket> {
        self.block_on(self.link.post_call(req, payload))
            .map_err(Self::lost)
    }

    /// The reply of a posted call, waiting for it if it has not arrived; an error status is
    /// returned as the error.
    pub fn wait_posted(&self, ticket: Ticket) -> ShimResult<Reply> {
        let reply = self.block_on(self.link.wait_posted(ticket)).map_err(|e| {
            let e = Self::lost(e);
            report_once(&e);
            e
        })?;
        deliver_output(&reply.output);
        if reply.status != 0 {
            return Err(ShimError::new(
                CuStatus(reply.status),
                reply.message.clone(),
            ));
        }
        Ok(reply)
    }

    /// Drops posted calls' replies nobody will wait for.
    pub fn forget(&self, tickets: &[Ticket]) {
        for &t in tickets {
            self.link.forget(t);
        }
    }

    /// Reports `e` again at the next synchronising call (stream, event or context
    /// synchronise, query, or a synchronous device-to-host copy), once. For errors that
    /// libraries between the driver and the application are known to drop, where results
    /// would silently be wrong (see `module::library_load_data`).
    pub fn hold_for_next_sync(&self, e: ShimError) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    /// Whether the last reply from the server reported an error.
    pub fn last_call_failed(&self) -> bool {
        self.link.with_conn(|c| c.failed())
    }

    /// Collects queued device-to-host copies now if any target `[p, p + len)` (the memory is
    /// about to be freed).
    pub fn settle_reads(&self, p: usize, len: usize) -> ShimResult<()> {
        if self
            .link
            .with_conn(|c| c.reads_pending(p as u64, len as u64))
        {
            self.call(&Request::Flush)?;
        }
        Ok(())
    }

    /// One round trip: everything queued before it, then this call, then its reply.
    pub fn call(&self, req: &Request) -> ShimResult<Reply> {
        self.call_with(req, &[], None)
    }

    /// A round trip whose reply carries `out.len()` bytes of data, read straight into `out`.
    pub fn call_read(&self, req: &Request, out: &mut [u8]) -> ShimResult<Reply> {
        let read =
            (!out.is_empty()).then_some((out.as_mut_ptr() as usize as u64, out.len() as u64));
        self.call_with(req, &[], read)
    }

    /// A round trip that sends `payload` with the request.
    pub fn call_write(&self, req: &Request, payload: &[u8]) -> ShimResult<Reply> {
        self.call_with(req, payload, None)
    }

    fn call_with(
        &self,
        req: &Request,
        payload: &[u8],
        read: Option<(u64, u64)>,
    ) -> ShimResult<Reply> {
        let reply = self
            .block_on(self.link.call(req, payload, read))
            .map_err(|e| {
                let e = Self::lost(e);
                report_once(&e);
                e
            })?;
        deliver_output(&reply.output);
        if reply.status == 0 && (req.waits_only() || matches!(req, Request::MemcpyDtoH { .. })) {
            if let Some(e) = self.held.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(e);
            }
        }
        if reply.status != 0 {
            // The server ends the session with this error (a pool lost the member holding
            // it): applications often print only the code, so say why once.
            if CuStatus(reply.status) == CuStatus::DEVICE_UNAVAILABLE {
                report_once(&ShimError::Unreachable(reply.message.clone()));
            }
            return Err(ShimError::new(
                CuStatus(reply.status),
                reply.message.clone(),
            ));
        }
        Ok(reply)
    }

    /// What `REMORA_STATS=1` prints at exit: calls by class, round trips by call name, bytes
    /// each way, time spent waiting.
    pub fn stats_report(&self) -> String {
        use remora_protocol::client::Stats;
        let s = self.link.with_conn(|c| c.stats().clone());
        let list = |m: &std::collections::BTreeMap<&'static str, u64>| {
            let mut v: Vec<(&str, u64)> = m.iter().map(|(k, n)| (*k, *n)).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            v.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "remora: stats: {} asynchronous calls, {} round trips, {} synchronising calls answered locally\n\
             remora: stats: {} bytes sent, {} bytes received, {:.3} ms waiting for the server\n\
             remora: stats: round trips by call: {}\n\
             remora: stats: asynchronous by call: {}\n\
             remora: stats: answered locally by call: {}\n",
            Stats::total(&s.posted),
            Stats::total(&s.round_trips),
            Stats::total(&s.local),
            s.bytes_out,
            s.bytes_in,
            self.link.waited().as_secs_f64() * 1e3,
            list(&s.round_trips),
            list(&s.posted),
            list(&s.local),
        )
    }

    /// Closes the connection at process exit, so the server frees this client's resources at
    /// once instead of after the idle timeout. Work still queued is dropped with the process,
    /// as a real driver drops it. Runs without this thread's thread-locals (they may be gone).
    fn close(&self) {
        self.link.close("client exit");
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.driver.unpark();
        let rx = self.closed.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = rx {
            let _ = rx.recv_timeout(Duration::from_millis(300));
        }
    }
}

/// Says once on stderr that the connection is gone (every later call fails the same way).
fn report_once(e: &ShimError) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("remora: {e}");
    }
}

/// Kernel `printf` output, written to C's stdout so it interleaves with the application's own.
fn deliver_output(text: &str) {
    if text.is_empty() {
        return;
    }
    extern "C" {
        static mut stdout: *mut libc::FILE;
    }
    // SAFETY: glibc's `stdout` is initialised before any user code runs; fwrite and fflush
    // are thread-safe and take a valid buffer of `len` bytes.
    unsafe {
        let f = stdout;
        libc::fwrite(text.as_ptr().cast(), 1, text.len(), f);
        libc::fflush(f);
    }
}
