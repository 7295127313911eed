//! The connection to the Remora server, opened lazily on the first call that needs it.
//!
//! One QUIC connection per process, one long-lived bidirectional stream for calls. The
//! connection is driven by whichever thread is waiting on it: an application thread making a
//! call runs the (current-thread) tokio runtime itself, so a round trip costs no thread hops on
//! the client. While the application makes no calls, a background thread drives the runtime
//! briefly every few milliseconds, so keep-alives and acknowledgements still flow. Asynchronous calls are appended to a batch and written when a synchronising call needs
//! the wire, or when the batch grows large: fire-and-forget costs a memcpy, not a packet.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use remora_protocol::frame::{self, FramePrefix, FLAG_REPLY, PREFIX_LEN};
use remora_protocol::messages::{decode, encode, Reply, Request, ServerInfo, Window};
use remora_protocol::{ConnectionFile, CuStatus};

use crate::ffi::{ShimError, ShimResult};

/// The environment variable naming the connection file (`remora run` sets it).
pub const CONNECTION_ENV: &str = "REMORA_CONNECTION";
/// Address space reserved per device for its allocations (never backed by host memory).
pub const WINDOW_SIZE: u64 = 1 << 40;
/// Payloads up to this size are copied into the batch; larger ones go straight to the stream.
const INLINE_PAYLOAD: usize = 64 << 10;
/// A batch this large is written even before a synchronising call.
const BATCH_FLUSH: usize = 256 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    pub info: ServerInfo,
    pub windows: Vec<Window>,
    pub address: SocketAddr,
    io: Mutex<Io>,
    conn: quinn::Connection,
    rt: Arc<tokio::runtime::Runtime>,
    driver: std::thread::Thread,
    /// Set at process exit: the driver thread then sends the close and stops.
    closing: Arc<std::sync::atomic::AtomicBool>,
    closed: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// How long the background driver lets the connection rest between turns.
const IDLE_DRIVE: Duration = Duration::from_millis(20);

struct Io {
    send: SendStream,
    recv: RecvStream,
    batch: Vec<u8>,
    /// Queued device-to-host copies whose data arrives with the next synchronising call, in
    /// order: (destination address, length).
    pending_reads: std::collections::VecDeque<(usize, usize)>,
    /// Set once the connection failed; every later call reports it.
    broken: Option<String>,
}

static CLIENT: OnceLock<Result<Arc<Client>, String>> = OnceLock::new();

/// The process's connection, opened on first use.
pub fn client() -> ShimResult<&'static Client> {
    match CLIENT.get_or_init(|| {
        connect()
            .map(Arc::new)
            .inspect_err(|e| eprintln!("remora: {e}"))
    }) {
        Ok(c) => Ok(c),
        Err(e) => Err(ShimError::Unreachable(e.clone())),
    }
}

/// The connection if it is already open (for calls that must not open one).
pub fn existing() -> Option<&'static Client> {
    CLIENT.get().and_then(|r| r.as_ref().ok()).map(|c| &**c)
}

fn connect() -> Result<Client, String> {
    let path = std::env::var_os(CONNECTION_ENV).ok_or_else(|| {
        format!("{CONNECTION_ENV} is not set: run the application under `remora run` or point it at a server's connection file")
    })?;
    let file = ConnectionFile::read(std::path::Path::new(&path)).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
    let rt = Arc::new(rt);
    let addr = file.address;
    // Connect on a helper thread: the calling thread may be inside a runtime of its own.
    let c = std::thread::scope(|s| {
        s.spawn(|| rt.block_on(remora_protocol::endpoint::connect(&file, CONNECT_TIMEOUT)))
            .join()
    })
    .map_err(|_| "the connection attempt panicked".to_string())??;
    let (endpoint, conn, send, recv, info) = (c.endpoint, c.conn, c.send, c.recv, c.info);
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let driver = {
        let (rt, closing, endpoint) = (rt.clone(), closing.clone(), endpoint.clone());
        std::thread::Builder::new()
            .name("remora-io".into())
            .spawn(move || drive_in_background(&rt, &closing, &endpoint, done_tx))
            .map_err(|e| format!("cannot start the I/O thread: {e}"))?
            .thread()
            .clone()
    };
    let windows = reserve_windows(info.devices.len())?;
    let client = Client {
        info,
        windows: windows.clone(),
        address: addr,
        io: Mutex::new(Io {
            send,
            recv,
            batch: Vec::with_capacity(BATCH_FLUSH * 2),
            pending_reads: std::collections::VecDeque::new(),
            broken: None,
        }),
        conn,
        rt,
        driver,
        closing,
        closed: Mutex::new(Some(done_rx)),
    };
    client
        .call(&Request::SetWindows { windows })
        .map_err(|e| format!("Remora server at {addr}: {e}"))?;
    // SAFETY: `close_at_exit` is a plain extern "C" fn with no arguments, as atexit expects.
    unsafe { libc::atexit(close_at_exit) };
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
    if let Some(c) = existing() {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.close()));
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

    fn io(&self) -> ShimResult<MutexGuard<'_, Io>> {
        let io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        match &io.broken {
            Some(why) => Err(ShimError::Unreachable(why.clone())),
            None => Ok(io),
        }
    }

    fn lost(&self, io: &mut Io, e: impl std::fmt::Display) -> ShimError {
        let why = format!(
            "lost the connection to the Remora server at {}: {e}",
            self.address
        );
        if io.broken.is_none() {
            eprintln!("remora: {why}");
            io.broken = Some(why.clone());
        }
        ShimError::Unreachable(why)
    }

    fn flush(&self, io: &mut Io) -> ShimResult<()> {
        if io.batch.is_empty() {
            return Ok(());
        }
        let r = self.block_on(io.send.write_all(&io.batch));
        io.batch.clear();
        r.map_err(|e| self.lost(io, e))
    }

    /// Queues a call that wants no reply; its bytes are captured before this returns.
    pub fn post(&self, req: &Request, payload: &[u8]) -> ShimResult<()> {
        let mut io = self.io()?;
        let header = encode(req);
        frame::encode_prefixed(&mut io.batch, &header, 0, payload.len() as u64);
        if payload.len() <= INLINE_PAYLOAD {
            io.batch.extend_from_slice(payload);
        } else {
            self.flush(&mut io)?;
            let r = self.block_on(io.send.write_all(payload));
            r.map_err(|e| self.lost(&mut io, e))?;
        }
        if io.batch.len() >= BATCH_FLUSH {
            self.flush(&mut io)?;
        }
        Ok(())
    }

    /// Queues a call whose reply carries `len` bytes for `dst`, written when the next
    /// synchronising call collects it (an asynchronous device-to-host copy).
    ///
    /// # Safety
    /// `dst` stays valid for writes of `len` bytes until the next synchronising call returns,
    /// as CUDA requires of an asynchronous copy's destination.
    pub unsafe fn post_read(&self, req: &Request, dst: *mut u8, len: usize) -> ShimResult<()> {
        let mut io = self.io()?;
        let header = encode(req);
        frame::encode_prefixed(&mut io.batch, &header, FLAG_REPLY, 0);
        io.pending_reads.push_back((dst as usize, len));
        Ok(())
    }

    /// Collects queued device-to-host copies now if any target `[p, p + len)` (the memory is
    /// about to be freed).
    pub fn settle_reads(&self, p: usize, len: usize) -> ShimResult<()> {
        let owed = {
            let io = self.io()?;
            io.pending_reads
                .iter()
                .any(|&(d, n)| d < p + len && p < d + n)
        };
        if owed {
            self.call(&Request::Flush)?;
        }
        Ok(())
    }

    /// One round trip: everything queued before it, then this call, then its reply.
    pub fn call(&self, req: &Request) -> ShimResult<Reply> {
        self.call_with(req, &[], &mut [])
    }

    /// A round trip whose reply carries `out.len()` bytes of data, read straight into `out`.
    pub fn call_read(&self, req: &Request, out: &mut [u8]) -> ShimResult<Reply> {
        self.call_with(req, &[], out)
    }

    /// A round trip that sends `payload` with the request.
    pub fn call_write(&self, req: &Request, payload: &[u8]) -> ShimResult<Reply> {
        self.call_with(req, payload, &mut [])
    }

    fn call_with(&self, req: &Request, payload: &[u8], out: &mut [u8]) -> ShimResult<Reply> {
        let mut io = self.io()?;
        let header = encode(req);
        frame::encode_prefixed(&mut io.batch, &header, FLAG_REPLY, payload.len() as u64);
        let large = payload.len() > INLINE_PAYLOAD;
        if !large {
            io.batch.extend_from_slice(payload);
        }
        let io = &mut *io;
        let batch = std::mem::take(&mut io.batch);
        let pending: Vec<(usize, usize)> = io.pending_reads.drain(..).collect();
        // One turn of the runtime for the whole call: queued work, the request, the replies of
        // queued device-to-host copies, then this call's reply.
        let r = self.block_on(async {
            io.send.write_all(&batch).await.map_err(|e| e.to_string())?;
            if large {
                io.send
                    .write_all(payload)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let mut deferred = None;
            for &(dst, len) in &pending {
                // SAFETY: post_read's caller keeps the destination valid until now.
                let out = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, len) };
                let reply = read_reply(&mut io.recv, out).await?;
                if reply.status != 0 && deferred.is_none() {
                    deferred = Some(reply);
                }
            }
            let reply = read_reply(&mut io.recv, out).await?;
            Ok::<_, String>(match deferred {
                // An earlier asynchronous copy failed: report it here, as CUDA reports
                // asynchronous errors at the next synchronising call.
                Some(d) if reply.status == 0 => Reply {
                    output: reply.output + &d.output,
                    ..d
                },
                _ => reply,
            })
        });
        // Keep the batch's allocation for the next calls.
        io.batch = batch;
        io.batch.clear();
        let reply = r.map_err(|e| self.lost(io, e))?;
        deliver_output(&reply.output);
        if reply.status != 0 {
            return Err(ShimError::new(
                CuStatus(reply.status),
                reply.message.clone(),
            ));
        }
        Ok(reply)
    }

    /// Closes the connection at process exit, so the server frees this client's resources at
    /// once instead of after the idle timeout. Work still queued is dropped with the process,
    /// as a real driver drops it. Runs without this thread's thread-locals (they may be gone).
    fn close(&self) {
        self.conn.close(0u32.into(), b"client exit");
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.driver.unpark();
        let rx = self.closed.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = rx {
            let _ = rx.recv_timeout(Duration::from_millis(300));
        }
    }
}

/// Reads one reply frame, its payload (if any) into `out`.
async fn read_reply(recv: &mut RecvStream, out: &mut [u8]) -> Result<Reply, String> {
    let mut p = [0u8; PREFIX_LEN];
    recv.read_exact(&mut p).await.map_err(|e| e.to_string())?;
    let prefix = FramePrefix::parse(&p).map_err(|e| e.to_string())?;
    let mut header = vec![0u8; prefix.header_len as usize];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| e.to_string())?;
    let reply = decode::<Reply>(&header).map_err(|e| e.to_string())?;
    if prefix.payload_len != out.len() as u64 && prefix.payload_len != 0 {
        return Err(format!(
            "reply carries {} bytes, {} expected",
            prefix.payload_len,
            out.len()
        ));
    }
    if prefix.payload_len > 0 {
        recv.read_exact(out).await.map_err(|e| e.to_string())?;
    }
    Ok(reply)
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
