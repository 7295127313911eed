//! The relay with plain UDP sockets: delay, bandwidth cap, loss, several clients, stopping, and
//! what it does with an unreachable server and a full queue. Lower bounds on time are strict
//! (the relay must never be faster than the link it simulates); upper bounds are generous, as
//! these machines are shared and noisy.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use remora_benches::{Link, Relay, RelayConfig, RelayHandle, RelayStats};

const LOCALHOST: &str = "127.0.0.1:0";

/// A UDP server on its own thread: echoes every datagram (with the sender's address appended
/// when `tag` is set), or only counts them when `echo` is off.
struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<std::sync::Mutex<Vec<(Instant, usize)>>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone, Copy)]
enum Mode {
    Echo,
    EchoTagged,
    Sink,
}

impl Upstream {
    fn start(mode: Mode) -> Self {
        Self::start_on(UdpSocket::bind(LOCALHOST).expect("bind upstream"), mode)
    }

    fn start_on(socket: UdpSocket, mode: Mode) -> Self {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (thread_stop, thread_received) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !thread_stop.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                thread_received
                    .lock()
                    .expect("lock")
                    .push((Instant::now(), len));
                match mode {
                    Mode::Echo => {
                        let _ = socket.send_to(&buf[..len], from);
                    }
                    Mode::EchoTagged => {
                        let mut reply = buf[..len].to_vec();
                        reply.extend_from_slice(format!(" from {from}").as_bytes());
                        let _ = socket.send_to(&reply, from);
                    }
                    Mode::Sink => {}
                }
            }
        });
        Self {
            addr,
            stop,
            received,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<(Instant, usize)> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("upstream thread");
        }
    }
}

fn relay(upstream: SocketAddr, link: Link) -> RelayHandle {
    let mut config = RelayConfig::symmetric(LOCALHOST.parse().expect("addr"), upstream, link);
    config.seed = Some(1);
    Relay::start(config).expect("start relay")
}

fn client(relay: &RelayHandle, timeout: Duration) -> UdpSocket {
    let socket = UdpSocket::bind(LOCALHOST).expect("bind client");
    socket.connect(relay.local_addr()).expect("connect");
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    socket
}

/// Waits until `done` holds for the relay's counters, or panics after `limit`.
fn wait_for(
    relay: &RelayHandle,
    limit: Duration,
    done: impl Fn(&RelayStats) -> bool,
) -> RelayStats {
    let start = Instant::now();
    loop {
        let stats = relay.stats();
        if done(&stats) {
            return stats;
        }
        assert!(start.elapsed() < limit, "timed out; stats: {stats:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `count` datagrams of `len` bytes, 10 per millisecond at most, so that the kernel's
/// socket buffers (not the relay) never drop.
fn send_paced(socket: &UdpSocket, count: usize, len: usize) {
    let payload = vec![0xabu8; len];
    for i in 0..count {
        socket.send(&payload).expect("send");
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Counts replies on another thread until none comes for the socket's read timeout, so that
/// replies never pile up in the client's socket buffer while it is still sending.
fn count_replies(socket: &UdpSocket) -> JoinHandle<usize> {
    let socket = socket.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        while socket.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    })
}

#[test]
fn round_trip_takes_both_delays() {
    let upstream = Upstream::start(Mode::Echo);
    let relay = relay(upstream.addr, Link::delay(Duration::from_millis(20)));
    let socket = client(&relay, Duration::from_secs(2));
    let mut buf = [0u8; 64];
    for i in 0..5u8 {
        let start = Instant::now();
        socket.send(&[i; 32]).expect("send");
        let len = socket.recv(&mut buf).expect("reply through the relay");
        let rtt = start.elapsed();
        assert_eq!(&buf[..len], &[i; 32]);
        assert!(
            rtt >= Duration::from_millis(40),
            "round trip {rtt:?} is shorter than 40 ms"
        );
        assert!(
            rtt < Duration::from_millis(40 + 60),
            "round trip {rtt:?} is far above 40 ms"
        );
    }
    // A reply can overtake the relay's own count of it.
    let stats = wait_for(&relay, Duration::from_secs(1), |s| {
        s.to_client.forwarded_datagrams == 5
    });
    assert_eq!(stats.to_upstream.forwarded_datagrams, 5);
    assert_eq!(stats.to_upstream.forwarded_bytes, 5 * 32);
    assert_eq!(
        stats.to_upstream.dropped_datagrams + stats.to_client.dropped_datagrams,
        0
    );
}

#[test]
fn sub_millisecond_delay_is_not_rounded_to_a_timer_tick() {
    let upstream = Upstream::start(Mode::Echo);
    let relay = relay(upstream.addr, Link::delay(Duration::from_micros(100)));
    let socket = client(&relay, Duration::from_secs(2));
    let mut buf = [0u8; 64];
    let mut best = Duration::MAX;
    for _ in 0..20 {
        let start = Instant::now();
        socket.send(b"ping").expect("send");
        socket.recv(&mut buf).expect("reply");
        best = best.min(start.elapsed());
    }
    assert!(
        best >= Duration::from_micros(200),
        "round trip {best:?} is shorter than 0.2 ms"
    );
    // Tokio's 1 ms timer would make it at least 2 ms.
    assert!(
        best < Duration::from_micros(1500),
        "best round trip {best:?} of 0.2 ms"
    );
}

#[test]
fn bandwidth_cap_paces_a_megabyte_over_a_second() {
    let upstream = Upstream::start(Mode::Sink);
    // 8 Mbit/s = 1,000,000 bytes/s toward the server; a queue that holds the whole burst.
    let mut config = RelayConfig::symmetric(
        LOCALHOST.parse().expect("addr"),
        upstream.addr,
        Link {
            rate_bytes_per_s: Some(1_000_000),
            queue_bytes: Some(2_000_000),
            ..Link::default()
        },
    );
    config.to_client = Link::default();
    let relay = Relay::start(config).expect("start relay");
    let socket = client(&relay, Duration::from_secs(1));
    let start = Instant::now();
    send_paced(&socket, 1000, 1000);
    wait_for(&relay, Duration::from_secs(10), |s| {
        s.to_upstream.forwarded_datagrams == 1000
    });
    // The last datagram forwarded may still be on its way to the upstream's socket.
    let deadline = Instant::now() + Duration::from_secs(2);
    while upstream.received().len() < 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let received = upstream.received();
    assert_eq!(received.len(), 1000);
    let elapsed = received
        .last()
        .map(|(at, _)| *at - start)
        .expect("received");
    // The link needs exactly 1 s to send 1 MB, and the first datagram left after `start`.
    assert!(
        elapsed >= Duration::from_secs(1),
        "1 MB at 1 MB/s took only {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2000),
        "1 MB at 1 MB/s took {elapsed:?}"
    );
    assert_eq!(relay.stats().to_upstream.dropped_datagrams, 0);
}

#[test]
fn loss_one_drops_everything() {
    let upstream = Upstream::start(Mode::Echo);
    let relay = relay(
        upstream.addr,
        Link {
            loss: 1.0,
            ..Link::default()
        },
    );
    let socket = client(&relay, Duration::from_millis(300));
    let replies = count_replies(&socket);
    send_paced(&socket, 1000, 100);
    let stats = wait_for(&relay, Duration::from_secs(10), |s| {
        s.to_upstream.lost_datagrams == 1000
    });
    assert_eq!(stats.to_upstream.forwarded_datagrams, 0);
    assert_eq!(stats.to_upstream.dropped_datagrams, 1000);
    assert_eq!(stats.to_upstream.dropped_bytes, 100_000);
    assert_eq!(replies.join().expect("receiver"), 0);
    assert!(upstream.received().is_empty());
}

#[test]
fn loss_zero_drops_nothing() {
    let upstream = Upstream::start(Mode::Echo);
    let relay = relay(
        upstream.addr,
        Link {
            delay: Duration::from_millis(1),
            ..Link::default()
        },
    );
    let socket = client(&relay, Duration::from_millis(500));
    let replies = count_replies(&socket);
    send_paced(&socket, 1000, 100);
    let stats = wait_for(&relay, Duration::from_secs(10), |s| {
        s.to_client.forwarded_datagrams == 1000
    });
    assert_eq!(stats.to_upstream.dropped_datagrams, 0);
    assert_eq!(stats.to_client.dropped_datagrams, 0);
    assert_eq!(replies.join().expect("receiver"), 1000);
}

#[test]
fn partial_loss_is_near_its_rate() {
    let upstream = Upstream::start(Mode::Sink);
    let relay = relay(
        upstream.addr,
        Link {
            loss: 0.25,
            ..Link::default()
        },
    );
    let socket = client(&relay, Duration::from_millis(200));
    send_paced(&socket, 2000, 10);
    let stats = wait_for(&relay, Duration::from_secs(10), |s| {
        s.to_upstream.forwarded_datagrams + s.to_upstream.dropped_datagrams == 2000
    });
    let lost = stats.to_upstream.lost_datagrams;
    assert!((400..600).contains(&lost), "lost {lost} of 2000 at 25 %");
}

#[test]
fn each_client_gets_its_own_replies() {
    let upstream = Upstream::start(Mode::EchoTagged);
    let relay = relay(upstream.addr, Link::delay(Duration::from_millis(2)));
    let a = client(&relay, Duration::from_secs(2));
    let b = client(&relay, Duration::from_secs(2));
    let mut buf = [0u8; 256];
    let mut seen_as = Vec::new();
    for round in 0..3 {
        a.send(format!("a{round}").as_bytes()).expect("send a");
        b.send(format!("b{round}").as_bytes()).expect("send b");
        for (socket, name) in [(&a, "a"), (&b, "b")] {
            let len = socket.recv(&mut buf).expect("reply");
            let reply = std::str::from_utf8(&buf[..len]).expect("utf-8");
            let (payload, from) = reply.split_once(" from ").expect("tagged");
            assert_eq!(payload, format!("{name}{round}"));
            seen_as.push((name, from.to_string()));
        }
    }
    // The server sees one address per client, stable across datagrams, and two in all.
    let a_addrs: Vec<_> = seen_as
        .iter()
        .filter(|(n, _)| *n == "a")
        .map(|(_, f)| f)
        .collect();
    let b_addrs: Vec<_> = seen_as
        .iter()
        .filter(|(n, _)| *n == "b")
        .map(|(_, f)| f)
        .collect();
    assert!(a_addrs.iter().all(|f| *f == a_addrs[0]));
    assert!(b_addrs.iter().all(|f| *f == b_addrs[0]));
    assert_ne!(a_addrs[0], b_addrs[0]);
    assert_eq!(relay.stats().clients, 2);
}

#[test]
fn dropping_the_handle_stops_the_relay() {
    let upstream = Upstream::start(Mode::Echo);
    let relay = relay(upstream.addr, Link::default());
    let addr = relay.local_addr();
    let socket = client(&relay, Duration::from_millis(300));
    let mut buf = [0u8; 16];
    socket.send(b"alive").expect("send");
    assert!(socket.recv(&mut buf).is_ok(), "the running relay answers");
    drop(relay);
    // The port is closed: a datagram is refused (ICMP port unreachable) or goes unanswered,
    // and the port can be bound again.
    let _ = socket.send(b"anyone?");
    assert!(socket.recv(&mut buf).is_err(), "a stopped relay answered");
    assert_eq!(upstream.received().len(), 1);
    UdpSocket::bind(addr).expect("the relay's port is free again");
}

#[test]
fn invalid_config_is_refused() {
    let addr: SocketAddr = LOCALHOST.parse().expect("addr");
    for link in [
        Link {
            loss: 2.0,
            ..Link::default()
        },
        Link {
            rate_bytes_per_s: Some(0),
            ..Link::default()
        },
    ] {
        let err = Relay::start(RelayConfig::symmetric(addr, addr, link))
            .err()
            .expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[test]
fn listen_address_in_use_is_an_error() {
    let taken = UdpSocket::bind(LOCALHOST).expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = Relay::start(RelayConfig::symmetric(addr, addr, Link::default())).err();
    assert_eq!(err.expect("refused").kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn unreachable_upstream_does_not_stop_the_relay() {
    // A port nobody listens on: the kernel answers with ICMP port unreachable, which the
    // relay's connected upstream socket reports as ECONNREFUSED.
    let placeholder = UdpSocket::bind(LOCALHOST).expect("bind");
    let upstream_addr = placeholder.local_addr().expect("addr");
    drop(placeholder);
    let relay = relay(upstream_addr, Link::default());
    let socket = client(&relay, Duration::from_millis(100));
    for _ in 0..20 {
        socket.send(b"hello?").expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "no server, no reply");
    let stats = wait_for(&relay, Duration::from_secs(5), |s| {
        s.to_upstream.forwarded_datagrams + s.to_upstream.dropped_datagrams == 20
    });
    let refusals = stats.upstream_errors + stats.to_upstream.failed_datagrams;
    assert!(refusals > 0, "refusals are counted: {stats:?}");

    // The server appears on that port: the same client, through the same relay, now gets
    // replies, so neither the relay nor the client's upstream socket gave up.
    let upstream = Upstream::start_on(UdpSocket::bind(upstream_addr).expect("rebind"), Mode::Echo);
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket.send(b"now?").expect("send");
    let len = socket
        .recv(&mut buf)
        .expect("reply once the server is there");
    assert_eq!(&buf[..len], b"now?");
    assert_eq!(relay.stats().clients, 1);
    drop(upstream);
}

#[test]
fn full_queue_drops_and_counts_instead_of_growing() {
    let upstream = Upstream::start(Mode::Sink);
    // 100 KB/s with a 10 KB queue: a burst of 100 KB mostly overflows.
    let link = Link {
        rate_bytes_per_s: Some(100_000),
        queue_bytes: Some(10_000),
        ..Link::default()
    };
    let relay = relay(upstream.addr, link);
    let socket = client(&relay, Duration::from_millis(100));
    let payload = [7u8; 1000];
    for _ in 0..100 {
        socket.send(&payload).expect("send");
    }
    let stats = wait_for(&relay, Duration::from_secs(10), |s| {
        s.to_upstream.forwarded_datagrams + s.to_upstream.dropped_datagrams == 100
    });
    let up = stats.to_upstream;
    // About 10 fit the queue, plus what the link sent while the burst arrived.
    assert!(
        up.overflowed_datagrams >= 50,
        "only {} overflowed: {up:?}",
        up.overflowed_datagrams
    );
    assert!(up.forwarded_datagrams >= 10, "{up:?}");
    assert_eq!(up.dropped_datagrams, up.overflowed_datagrams);
    assert_eq!(up.dropped_bytes, up.overflowed_datagrams * 1000);
    // The last datagram forwarded may still be on its way to the upstream's socket.
    let deadline = Instant::now() + Duration::from_secs(2);
    while (upstream.received().len() as u64) < up.forwarded_datagrams && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(upstream.received().len() as u64, up.forwarded_datagrams);
}

#[test]
fn large_datagrams_pass_whole() {
    let upstream = Upstream::start(Mode::Echo);
    let relay = relay(upstream.addr, Link::delay(Duration::from_millis(1)));
    let socket = client(&relay, Duration::from_secs(2));
    let payload: Vec<u8> = (0..65_507u32).map(|i| i as u8).collect();
    socket.send(&payload).expect("send 64 KiB");
    let mut buf = vec![0u8; 1 << 16];
    let len = socket.recv(&mut buf).expect("reply");
    assert_eq!(&buf[..len], &payload[..]);
}
