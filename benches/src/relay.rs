//! A user-space stand-in for `tc netem`: a UDP relay between QUIC clients and one server that
//! adds one-way delay, jitter, a bandwidth cap with a drop-tail queue, and random loss, each
//! configured per direction.
//!
//! Every client address gets its own upstream-facing socket, so the server sees one peer per
//! client and replies find their way back. Each direction of each client is a [`Link`] modelled
//! as a router in front of a wire: a datagram waits in the router's queue until the link is free
//! (`bytes / rate` per datagram, dropped at the tail when the queue is full), may be lost on the
//! wire, and arrives `delay ± jitter` after it left. Datagrams are never reordered: jitter moves
//! a datagram's arrival within `±jitter`, but never before the previous one's (one path, as with
//! `netem` plus `rate`). It deliberately does not duplicate, corrupt or reorder datagrams, and
//! never forgets a client (a relay lives as long as one benchmark or test; clients are capped at
//! [`MAX_CLIENTS`]).
//!
//! Tokio's timer ticks once a millisecond, so the last stretch before a datagram is due is slept
//! on a blocking thread with the operating system's high-resolution timer: a 0.1 ms delay is
//! 0.1 ms plus scheduling noise, not 1 ms. A datagram never leaves before it is due.
//!
//! [`Relay::start`] runs the relay on its own thread with its own current-thread runtime, so
//! synchronous tests and benchmarks can use it; dropping the [`RelayHandle`] stops it and closes
//! its sockets.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, Notify};

/// Clients beyond this many are not served; their datagrams count as dropped with an error.
pub const MAX_CLIENTS: usize = 1024;

/// Without a rate cap there is no router queue, only the wire; this bounds the bytes a relay
/// holds per client and direction (a 150 ms delay at loopback speed would otherwise hold GBs).
pub const MAX_HELD_BYTES: u64 = 256 << 20;

/// The default router queue is twice the bandwidth-delay product, but never less than this, so
/// that a burst of a few 64 KiB datagrams (quinn's on loopback) fits even at sub-millisecond
/// delays.
pub const MIN_DEFAULT_QUEUE_BYTES: u64 = 256 << 10;

/// Large enough for any UDP datagram (65,507 bytes over IPv4, 65,527 over IPv6).
const MAX_DATAGRAM: usize = 1 << 16;

/// Asked for on every socket; the kernel caps it at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Tokio's timer granularity: waits longer than a few ticks go to tokio, the rest to a
/// blocking thread's `sleep`.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// What the relay does to the datagrams of one direction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Link {
    /// One-way delay added to every datagram after it has left the queue.
    pub delay: Duration,
    /// Each datagram's delay is `delay` plus a uniform offset in `[-jitter, +jitter]` (never
    /// below zero), held back where needed so that it does not overtake the one before it.
    pub jitter: Duration,
    /// The link's rate; `None` is an infinitely fast link with no queue.
    pub rate_bytes_per_s: Option<u64>,
    /// Probability in `[0, 1]` that a datagram is lost on the wire (after it used the link).
    pub loss: f64,
    /// Bytes the router's queue holds while waiting for the link; a datagram that does not fit
    /// is dropped (drop-tail). `None`: twice the bandwidth-delay product of the round trip (both
    /// directions' delays), at least [`MIN_DEFAULT_QUEUE_BYTES`]. Unused without a rate cap.
    pub queue_bytes: Option<u64>,
}

impl Link {
    /// A link that only delays.
    pub fn delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }
}

/// Where the relay listens, where it forwards to, and what it does each way.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The address clients send to; port 0 picks a free one ([`RelayHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The server every client's datagrams go to.
    pub upstream: SocketAddr,
    /// Client to server.
    pub to_upstream: Link,
    /// Server to client.
    pub to_client: Link,
    /// Seeds jitter and loss, for reproducible runs; `None` seeds from the operating system.
    pub seed: Option<u64>,
}

impl RelayConfig {
    /// The same link both ways.
    pub fn symmetric(listen: SocketAddr, upstream: SocketAddr, link: Link) -> Self {
        Self {
            listen,
            upstream,
            to_upstream: link.clone(),
            to_client: link,
            seed: None,
        }
    }
}

/// Counters of one direction, summed over clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams sent on after their delay.
    pub forwarded_datagrams: u64,
    pub forwarded_bytes: u64,
    /// All drops: `lost + overflowed + failed`.
    pub dropped_datagrams: u64,
    pub dropped_bytes: u64,
    /// Dropped by the random loss rate.
    pub lost_datagrams: u64,
    /// Dropped because the queue (or [`MAX_HELD_BYTES`]) was full.
    pub overflowed_datagrams: u64,
    /// Dropped because a socket could not be opened or the send failed, or [`MAX_CLIENTS`] was
    /// reached. (A refusal by the server's host usually shows in
    /// [`RelayStats::upstream_errors`] instead: whichever of send and receive comes next on the
    /// socket reports it, and one is always waiting to receive.)
    pub failed_datagrams: u64,
}

/// A snapshot of the relay's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub to_upstream: DirectionStats,
    pub to_client: DirectionStats,
    /// Client addresses seen (each has its own upstream-facing socket).
    pub clients: u64,
    /// Errors the upstream-facing sockets reported while waiting for the server's datagrams,
    /// almost always `ECONNREFUSED`: the server's host answered an earlier datagram with ICMP
    /// port unreachable (nobody listens there, yet). The relay keeps going.
    pub upstream_errors: u64,
}

/// The relay; see the module documentation.
pub struct Relay;

impl Relay {
    /// Binds `config.listen` and starts relaying on a new thread. Errors: the configuration is
    /// invalid (`InvalidInput`: a loss rate outside `[0, 1]`, a zero rate) or the socket, the
    /// runtime or the thread cannot be created.
    pub fn start(config: RelayConfig) -> io::Result<RelayHandle> {
        let rtt = config.to_upstream.delay + config.to_client.delay;
        let to_upstream = LinkParams::new(&config.to_upstream, rtt)?;
        let to_client = LinkParams::new(&config.to_client, rtt)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listen = {
            let _guard = runtime.enter();
            UdpSocket::from_std(bind_udp(config.listen)?)?
        };
        let local_addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: config.upstream,
            to_upstream,
            to_client,
            seed: config.seed,
            counters: Counters::default(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("remora-relay {local_addr}"))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        () = serve(Arc::new(listen), thread_shared) => {}
                    }
                });
                // Dropping the runtime here cancels every client task and closes its sockets.
            })?;
        Ok(RelayHandle {
            local_addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running relay; dropping it stops the relay and closes its sockets before `drop` returns.
pub struct RelayHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RelayHandle {
    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        let c = &self.shared.counters;
        RelayStats {
            to_upstream: c.to_upstream.snapshot(),
            to_client: c.to_client.snapshot(),
            clients: c.clients.load(Ordering::Relaxed),
            upstream_errors: c.upstream_errors.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the relay's thread has already ended; joining below still waits.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the relay's thread is not re-raised in a destructor.
            let _ = thread.join();
        }
    }
}

/// A [`Link`] checked and with its queue size resolved.
#[derive(Clone, Debug)]
struct LinkParams {
    delay: Duration,
    jitter: Duration,
    rate: Option<u64>,
    loss: f64,
    queue_bytes: u64,
}

impl LinkParams {
    fn new(link: &Link, rtt: Duration) -> io::Result<Self> {
        if !(0.0..=1.0).contains(&link.loss) {
            return Err(invalid(format!("loss rate {} is not in [0, 1]", link.loss)));
        }
        if link.rate_bytes_per_s == Some(0) {
            return Err(invalid("a rate cap of 0 bytes/s passes nothing".into()));
        }
        let queue_bytes = match (link.queue_bytes, link.rate_bytes_per_s) {
            (Some(bytes), _) => bytes,
            (None, Some(rate)) => {
                let bdp = rate as f64 * rtt.as_secs_f64();
                ((2.0 * bdp) as u64).max(MIN_DEFAULT_QUEUE_BYTES)
            }
            (None, None) => MAX_HELD_BYTES,
        };
        Ok(Self {
            delay: link.delay,
            jitter: link.jitter,
            rate: link.rate_bytes_per_s,
            loss: link.loss,
            queue_bytes,
        })
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

struct Shared {
    upstream: SocketAddr,
    to_upstream: LinkParams,
    to_client: LinkParams,
    seed: Option<u64>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    to_upstream: DirectionCounters,
    to_client: DirectionCounters,
    clients: AtomicU64,
    upstream_errors: AtomicU64,
}

#[derive(Default)]
struct DirectionCounters {
    forwarded_datagrams: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped_bytes: AtomicU64,
    lost: AtomicU64,
    overflowed: AtomicU64,
    failed: AtomicU64,
}

impl DirectionCounters {
    fn forwarded(&self, len: usize) {
        self.forwarded_datagrams.fetch_add(1, Ordering::Relaxed);
        self.forwarded_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
    }

    fn dropped(&self, cause: DropCause, len: usize) {
        let counter = match cause {
            DropCause::Lost => &self.lost,
            DropCause::Overflow => &self.overflowed,
            DropCause::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.dropped_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirectionStats {
        let lost = self.lost.load(Ordering::Relaxed);
        let overflowed = self.overflowed.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        DirectionStats {
            forwarded_datagrams: self.forwarded_datagrams.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
            dropped_datagrams: lost + overflowed + failed,
            dropped_bytes: self.dropped_bytes.load(Ordering::Relaxed),
            lost_datagrams: lost,
            overflowed_datagrams: overflowed,
            failed_datagrams: failed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DropCause {
    Lost,
    Overflow,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Send at this time.
    Deliver(Instant),
    Drop(DropCause),
}

/// The sans-IO core of one direction: decides when each datagram arrives, or that it is
/// dropped, from the time it reached the relay.
struct Shaper {
    link: LinkParams,
    /// When the link finishes sending what is already queued (rate-capped links only).
    link_free: Option<Instant>,
    /// The latest arrival handed out, so that jitter never reorders.
    last_due: Option<Instant>,
    rng: StdRng,
}

impl Shaper {
    fn new(link: LinkParams, rng: StdRng) -> Self {
        Self {
            link,
            link_free: None,
            last_due: None,
            rng,
        }
    }

    fn admit(&mut self, now: Instant, len: usize) -> Verdict {
        let mut sent = now;
        if let Some(rate) = self.link.rate {
            let free = self.link_free.map_or(now, |free| free.max(now));
            let backlog = ((free - now).as_secs_f64() * rate as f64) as u64;
            if backlog + len as u64 > self.link.queue_bytes {
                return Verdict::Drop(DropCause::Overflow);
            }
            sent = free + Duration::from_secs_f64(len as f64 / rate as f64);
            self.link_free = Some(sent);
        }
        // Lost after the queue: a datagram lost on the wire still used the link.
        if self.link.loss > 0.0 && self.rng.gen_bool(self.link.loss) {
            return Verdict::Drop(DropCause::Lost);
        }
        let mut due = sent + self.link.delay;
        let jitter = self.link.jitter.as_nanos() as i128;
        if jitter > 0 {
            let offset = self.rng.gen_range(-jitter..=jitter);
            let magnitude = Duration::from_nanos(offset.unsigned_abs() as u64);
            due = if offset >= 0 {
                due + magnitude
            } else {
                due.checked_sub(magnitude).unwrap_or(sent).max(sent)
            };
        }
        if let Some(last) = self.last_due {
            due = due.max(last);
        }
        self.last_due = Some(due);
        Verdict::Deliver(due)
    }
}

/// One direction of one client: the shaper, the datagrams waiting for their time, and the task
/// that sends them ([`Pipe::drain`]).
struct Pipe {
    state: Mutex<PipeState>,
    /// Wakes the drain task when a datagram is queued into an empty pipe.
    queued: Notify,
}

struct PipeState {
    shaper: Shaper,
    /// Ordered by due time, as the shaper never hands out an earlier one than the last.
    waiting: VecDeque<(Instant, Vec<u8>)>,
    held_bytes: u64,
}

/// Where a pipe's datagrams go.
enum Out {
    /// The client's own connected upstream-facing socket.
    Upstream(Arc<UdpSocket>),
    /// The listening socket, back to the client's address.
    Client(Arc<UdpSocket>, SocketAddr),
}

impl Out {
    async fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        match self {
            Out::Upstream(socket) => socket.send(datagram).await,
            Out::Client(socket, to) => socket.send_to(datagram, *to).await,
        }
    }
}

impl Pipe {
    fn new(shaper: Shaper) -> Self {
        Self {
            state: Mutex::new(PipeState {
                shaper,
                waiting: VecDeque::new(),
                held_bytes: 0,
            }),
            queued: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PipeState> {
        // A panic while holding the lock leaves consistent state (every update is a single
        // push or pop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn offer(&self, datagram: &[u8], counters: &DirectionCounters) {
        let len = datagram.len();
        let mut state = self.lock();
        if state.held_bytes + len as u64 > MAX_HELD_BYTES {
            counters.dropped(DropCause::Overflow, len);
            return;
        }
        match state.shaper.admit(Instant::now(), len) {
            Verdict::Drop(cause) => counters.dropped(cause, len),
            Verdict::Deliver(due) => {
                let was_empty = state.waiting.is_empty();
                state.waiting.push_back((due, datagram.to_vec()));
                state.held_bytes += len as u64;
                drop(state);
                if was_empty {
                    self.queued.notify_one();
                }
            }
        }
    }

    async fn drain(&self, out: Out, counters: &DirectionCounters) {
        let mut due_now = Vec::new();
        loop {
            let next = self.lock().waiting.front().map(|(due, _)| *due);
            let Some(due) = next else {
                // `notify_one` keeps a permit when nobody waits, so a datagram queued between
                // the check above and this wait is not missed.
                self.queued.notified().await;
                continue;
            };
            sleep_until_precise(due).await;
            {
                let now = Instant::now();
                let mut state = self.lock();
                while state.waiting.front().is_some_and(|(due, _)| *due <= now) {
                    if let Some((_, datagram)) = state.waiting.pop_front() {
                        state.held_bytes -= datagram.len() as u64;
                        due_now.push(datagram);
                    }
                }
            }
            for datagram in due_now.drain(..) {
                match out.send(&datagram).await {
                    Ok(_) => counters.forwarded(datagram.len()),
                    Err(_) => counters.dropped(DropCause::Failed, datagram.len()),
                }
            }
        }
    }
}

/// Sleeps until `due`, never returning early, to well under a millisecond late.
async fn sleep_until_precise(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > 3 * TIMER_TICK {
            // Tokio rounds up to its next tick; waking two ticks early leaves the rest below.
            tokio::time::sleep_until((due - 2 * TIMER_TICK).into()).await;
        } else {
            // The OS timer is precise to tens of microseconds; tokio's is a millisecond. A
            // blocking-pool thread sleeps so that the relay's thread keeps serving meanwhile.
            let _ = tokio::task::spawn_blocking(move || sleep_until_blocking(due)).await;
        }
    }
}

/// Linux wakes a sleeping thread up to its timer slack (50 us by default) late; the last
/// stretch is spent yielding instead, which costs at most that much CPU per wake.
fn sleep_until_blocking(due: Instant) {
    const SLACK: Duration = Duration::from_micros(60);
    let left = due.saturating_duration_since(Instant::now());
    if left > SLACK {
        std::thread::sleep(left - SLACK);
    }
    while Instant::now() < due {
        std::thread::yield_now();
    }
}

async fn serve(listen: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut clients: HashMap<SocketAddr, Arc<Pipe>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = match listen.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(_) => {
                // Linux reports ICMP errors on unconnected sockets only with IP_RECVERR, which
                // is not set; anything else is transient. Yield so that it cannot spin.
                tokio::task::yield_now().await;
                continue;
            }
        };
        let counters = &shared.counters.to_upstream;
        let to_upstream = match clients.get(&from) {
            Some(pipe) => pipe.clone(),
            None if clients.len() >= MAX_CLIENTS => {
                counters.dropped(DropCause::Failed, len);
                continue;
            }
            None => match open_client(&listen, from, &shared, clients.len() as u64) {
                Ok(pipe) => {
                    shared.counters.clients.fetch_add(1, Ordering::Relaxed);
                    clients.insert(from, pipe.clone());
                    pipe
                }
                Err(_) => {
                    counters.dropped(DropCause::Failed, len);
                    continue;
                }
            },
        };
        to_upstream.offer(&buf[..len], counters);
    }
}

/// Opens the client's upstream-facing socket and starts its three tasks: both drains and the
/// reader of the server's replies. Returns the client-to-server pipe.
fn open_client(
    listen: &Arc<UdpSocket>,
    client: SocketAddr,
    shared: &Arc<Shared>,
    index: u64,
) -> io::Result<Arc<Pipe>> {
    let unspecified = match shared.upstream.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let std_socket = bind_udp(SocketAddr::new(unspecified, 0))?;
    std_socket.connect(shared.upstream)?;
    let upstream = Arc::new(UdpSocket::from_std(std_socket)?);

    let rng = |direction: u64| match shared.seed {
        Some(seed) => StdRng::seed_from_u64(seed.wrapping_add(index * 2 + direction)),
        None => StdRng::from_entropy(),
    };
    let to_upstream = Arc::new(Pipe::new(Shaper::new(shared.to_upstream.clone(), rng(0))));
    let to_client = Arc::new(Pipe::new(Shaper::new(shared.to_client.clone(), rng(1))));

    let (pipe, out, s) = (
        to_upstream.clone(),
        Out::Upstream(upstream.clone()),
        shared.clone(),
    );
    tokio::spawn(async move { pipe.drain(out, &s.counters.to_upstream).await });
    let (pipe, out, s) = (
        to_client.clone(),
        Out::Client(listen.clone(), client),
        shared.clone(),
    );
    tokio::spawn(async move { pipe.drain(out, &s.counters.to_client).await });
    let s = shared.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match upstream.recv(&mut buf).await {
                Ok(len) => to_client.offer(&buf[..len], &s.counters.to_client),
                // ECONNREFUSED after an ICMP port unreachable: the server is not (yet) there.
                // Keep the client; the next datagram may find it.
                Err(_) => {
                    s.counters.upstream_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    Ok(to_upstream)
}

/// A non-blocking UDP socket with large buffers: quinn sends bursts of 64 KiB datagrams on
/// loopback, and the default buffers hold only a few of them.
fn bind_udp(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps the sizes silently, and a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaper(link: Link) -> Shaper {
        let params = LinkParams::new(&link, link.delay * 2).expect("valid link");
        Shaper::new(params, StdRng::seed_from_u64(7))
    }

    fn due(verdict: Verdict) -> Instant {
        match verdict {
            Verdict::Deliver(due) => due,
            Verdict::Drop(cause) => panic!("dropped: {cause:?}"),
        }
    }

    #[test]
    fn delay_only_adds_the_delay() {
        let mut s = shaper(Link::delay(Duration::from_millis(20)));
        let now = Instant::now();
        assert_eq!(due(s.admit(now, 1200)), now + Duration::from_millis(20));
    }

    #[test]
    fn rate_serializes_datagrams_back_to_back() {
        let mut s = shaper(Link {
            delay: Duration::from_millis(10),
            rate_bytes_per_s: Some(1_000_000),
            ..Link::default()
        });
        let now = Instant::now();
        let dues: Vec<Instant> = (0..10).map(|_| due(s.admit(now, 1000))).collect();
        for (i, d) in dues.iter().enumerate() {
            let expected = Duration::from_millis(10) + Duration::from_millis(i as u64 + 1);
            let got = *d - now;
            assert!(
                got.abs_diff(expected) < Duration::from_micros(1),
                "{i}: {got:?}"
            );
        }
    }

    #[test]
    fn full_queue_drops_the_tail_and_drains_with_time() {
        let mut s = shaper(Link {
            rate_bytes_per_s: Some(100_000),
            queue_bytes: Some(10_000),
            ..Link::default()
        });
        let now = Instant::now();
        let verdicts: Vec<Verdict> = (0..20).map(|_| s.admit(now, 1000)).collect();
        let delivered = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Deliver(_)))
            .count();
        assert_eq!(delivered, 10);
        assert_eq!(verdicts[10], Verdict::Drop(DropCause::Overflow));
        // 50 ms later the link has sent 5 KB, so 5 more fit.
        let later = now + Duration::from_millis(50);
        let more = (0..10)
            .filter(|_| matches!(s.admit(later, 1000), Verdict::Deliver(_)))
            .count();
        assert_eq!(more, 5);
    }

    #[test]
    fn jitter_stays_in_bounds_and_never_reorders() {
        let mut s = shaper(Link {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(2),
            ..Link::default()
        });
        let start = Instant::now();
        let mut last = start;
        for i in 0..1000u64 {
            let now = start + Duration::from_micros(i * 10);
            let d = due(s.admit(now, 100));
            assert!(d >= last, "reordered at {i}");
            assert!(d >= now + Duration::from_millis(3), "{i}: too early");
            // Held back behind an earlier datagram at most by that one's jitter.
            assert!(d <= now + Duration::from_millis(7), "{i}: too late");
            last = d;
        }
    }

    #[test]
    fn loss_one_drops_everything_and_zero_nothing() {
        let mut all = shaper(Link {
            loss: 1.0,
            ..Link::default()
        });
        let mut none = shaper(Link::default());
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(all.admit(now, 10), Verdict::Drop(DropCause::Lost));
            assert!(matches!(none.admit(now, 10), Verdict::Deliver(_)));
        }
    }

    #[test]
    fn invalid_links_are_refused() {
        for link in [
            Link {
                loss: 1.5,
                ..Link::default()
            },
            Link {
                loss: -0.1,
                ..Link::default()
            },
            Link {
                loss: f64::NAN,
                ..Link::default()
            },
            Link {
                rate_bytes_per_s: Some(0),
                ..Link::default()
            },
        ] {
            let err = LinkParams::new(&link, Duration::ZERO).expect_err("invalid");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn default_queue_is_twice_the_bandwidth_delay_product() {
        let link = Link {
            rate_bytes_per_s: Some(125_000_000),
            ..Link::default()
        };
        let params = LinkParams::new(&link, Duration::from_millis(30)).expect("valid");
        assert_eq!(params.queue_bytes, 7_500_000);
        let params = LinkParams::new(&link, Duration::ZERO).expect("valid");
        assert_eq!(params.queue_bytes, MIN_DEFAULT_QUEUE_BYTES);
    }
}
