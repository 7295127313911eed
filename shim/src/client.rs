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
    /// The sending side: queued frames, in order. Held only while frames are appended or
    /// written, never while waiting for a reply, so one thread's long wait never stops
    /// another thread from queuing work.
    tx: Mutex<Sender>,
    /// The receiving side: replies are read in the order their requests were sent, each
    /// caller waiting for its turn.
    rx: Mutex<Receiver>,
    turn: std::sync::Condvar,
    /// Set once the connection failed; every later call reports it.
    broken: Mutex<Option<String>>,
    conn: quinn::Connection,
    rt: Arc<tokio::runtime::Runtime>,
    driver: std::thread::Thread,
    /// Set at process exit: the driver thread then sends the close and stops.
    closing: Arc<std::sync::atomic::AtomicBool>,
    closed: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// How long the background driver lets the connection rest between turns.
const IDLE_DRIVE: Duration = Duration::from_millis(20);

struct Sender {
    send: SendStream,
    batch: Vec<u8>,
    /// Queued device-to-host copies whose data arrives with the next synchronising call, in
    /// order: (destination address, length).
    pending_reads: std::collections::VecDeque<(usize, usize)>,
    /// Replies the server owes for everything sent or claimed so far.
    owed: u64,
}

struct Receiver {
    recv: RecvStream,
    /// The number of the next reply to arrive.
    next: u64,
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
        tx: Mutex::new(Sender {
            send,
            batch: Vec::with_capacity(BATCH_FLUSH * 2),
            pending_reads: std::collections::VecDeque::new(),
            owed: 0,
        }),
        rx: Mutex::new(Receiver { recv, next: 0 }),
        turn: std::sync::Condvar::new(),
        broken: Mutex::new(None),
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

    fn check(&self) -> ShimResult<()> {
        match &*self.broken.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(ShimError::Unreachable(why.clone())),
            None => Ok(()),
        }
    }

    fn sender(&self) -> ShimResult<MutexGuard<'_, Sender>> {
        self.check()?;
        Ok(self.tx.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn lost(&self, e: impl std::fmt::Display) -> ShimError {
        let why = format!(
            "lost the connection to the Remora server at {}: {e}",
            self.address
        );
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if broken.is_none() {
            eprintln!("remora: {why}");
            *broken = Some(why.clone());
        }
        drop(broken);
        // Callers waiting for their turn must learn it too.
        self.turn.notify_all();
        ShimError::Unreachable(why)
    }

    fn flush(&self, tx: &mut Sender) -> ShimResult<()> {
        if tx.batch.is_empty() {
            return Ok(());
        }
        let r = self.block_on(tx.send.write_all(&tx.batch));
        tx.batch.clear();
        r.map_err(|e| self.lost(e))
    }

    /// Queues a call that wants no reply; its bytes are captured before this returns.
    pub fn post(&self, req: &Request, payload: &[u8]) -> ShimResult<()> {
        let mut tx = self.sender()?;
        let header = encode(req);
        frame::encode_prefixed(&mut tx.batch, &header, 0, payload.len() as u64);
        if payload.len() <= INLINE_PAYLOAD {
            tx.batch.extend_from_slice(payload);
        } else {
            self.flush(&mut tx)?;
            let r = self.block_on(tx.send.write_all(payload));
            r.map_err(|e| self.lost(e))?;
        }
        if tx.batch.len() >= BATCH_FLUSH {
            self.flush(&mut tx)?;
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
        let mut tx = self.sender()?;
        let header = encode(req);
        frame::encode_prefixed(&mut tx.batch, &header, FLAG_REPLY, 0);
        tx.pending_reads.push_back((dst as usize, len));
        Ok(())
    }

    /// Collects queued device-to-host copies now if any target `[p, p + len)` (the memory is
    /// about to be freed).
    pub fn settle_reads(&self, p: usize, len: usize) -> ShimResult<()> {
        let owed = self
            .sender()?
            .pending_reads
            .iter()
            .any(|&(d, n)| d < p + len && p < d + n);
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
        // Queued work, queued copies' claims, then this request go out in one write. The
        // replies this call reads are numbered `first..first + pending.len() + 1`.
        let mut tx = self.sender()?;
        let header = encode(req);
        frame::encode_prefixed(&mut tx.batch, &header, FLAG_REPLY, payload.len() as u64);
        let large = payload.len() > INLINE_PAYLOAD;
        if !large {
            tx.batch.extend_from_slice(payload);
        }
        let pending: Vec<(usize, usize)> = tx.pending_reads.drain(..).collect();
        let first = tx.owed;
        tx.owed += pending.len() as u64 + 1;
        // Replies come back in the order requests were sent: wait for this call's turn. When
        // it is already here (the common, single-threaded case) the write and the read share
        // one turn of the runtime.
        match self.rx.try_lock() {
            Ok(rx) if rx.next == first => self.finish_call(
                rx,
                &pending,
                out,
                Some(Box::pin(write_frames(tx, payload, large))),
            ),
            other => {
                drop(other);
                self.block_on(write_frames(tx, payload, large))
                    .map_err(|e| self.lost(e))?;
                let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
                while rx.next != first {
                    self.check()?;
                    rx = self.turn.wait(rx).unwrap_or_else(|e| e.into_inner());
                }
                self.finish_call(rx, &pending, out, None)
            }
        }
    }

    /// Reads this call's replies (its turn has come), after completing its write if that is
    /// still to do, all in one turn of the runtime.
    fn finish_call<'a>(
        &self,
        mut rx: MutexGuard<'_, Receiver>,
        pending: &[(usize, usize)],
        out: &mut [u8],
        write: Option<PendingWrite<'a>>,
    ) -> ShimResult<Reply> {
        let recv = &mut rx.recv;
        let r = self.block_on(async {
            if let Some(w) = write {
                w.await?;
            }
            let mut deferred = None;
            for &(dst, len) in pending {
                // SAFETY: post_read's caller keeps the destination valid until now.
                let out = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, len) };
                let reply = read_reply(recv, out).await?;
                if reply.status != 0 && deferred.is_none() {
                    deferred = Some(reply);
                }
            }
            let reply = read_reply(recv, out).await?;
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
        rx.next += pending.len() as u64 + 1;
        drop(rx);
        self.turn.notify_all();
        let reply = r.map_err(|e| self.lost(e))?;
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

/// Writes the queued frames (and a large payload after them), then releases the sender so
/// other threads can queue work while this call waits for its reply.
///
/// The sender's lock is held across the writes on purpose: frames must leave in the order
/// they were queued. The future runs to completion in `block_on` on the locking thread, which
/// takes no other lock meanwhile.
#[allow(clippy::await_holding_lock)]
async fn write_frames<'a>(
    mut tx: MutexGuard<'a, Sender>,
    payload: &'a [u8],
    large: bool,
) -> Result<(), String> {
    let tx = &mut *tx;
    let r = async {
        tx.send.write_all(&tx.batch).await?;
        if large {
            tx.send.write_all(payload).await?;
        }
        Ok::<_, quinn::WriteError>(())
    }
    .await;
    tx.batch.clear();
    r.map_err(|e| e.to_string())
}

/// A call's write, still to be driven together with its read.
type PendingWrite<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + 'a>>;

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
