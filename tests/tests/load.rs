//! Load: 64 clients at once, each doing checksummed copies of random sizes both ways,
//! device-to-device copies and a kernel whose every output word is checked, with allocations
//! churning. Zero corrupted or lost bytes, every client finishes, the server's memory stays
//! bounded and it leaks no file descriptors.
//!
//! Sized for a 2-core CI machine: 10 s of load by default; `REMORA_LOAD_SECONDS=60` runs the
//! full minute. nextest runs it alone (`.config/nextest.toml`), so it measures the server, not
//! the other tests.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

const CLIENTS: usize = 64;
/// Device memory of the server under load.
const DEVICE_MEMORY: u64 = 1 << 30;

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn sixty_four_clients_copy_and_compute_with_no_corruption_bounded_memory_and_no_leaks() {
    let seconds: f64 = std::env::var("REMORA_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let server = Server::start();
    let pid = server.child.id();
    let tool = c_program("client_tool");
    // One client first, so the server's steady state (runtime, caches) is the baseline.
    let warm = server.run(&tool, &["load", "0.5", "999"]);
    assert!(text(&warm).contains("load ok"), "{}", text(&warm));
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = open_fds(pid);
    let rss_before = proc_status_kib(pid, "VmRSS:");

    let secs = seconds.to_string();
    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            server
                .command(&tool)
                .args(["load", &secs, &(i + 1).to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("remora run")
        })
        .collect();
    // Sample the server while the clients run.
    let mut rss_peak = rss_before;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds * 4.0 + 120.0);
    while clients.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
        rss_peak = rss_peak.max(proc_status_kib(pid, "VmRSS:"));
        assert!(
            Instant::now() < deadline,
            "clients still running long after their time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mut bytes, mut kernels) = (0u64, 0u64);
    for (i, c) in clients.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let t = text(&out);
        let line = t
            .lines()
            .find(|l| l.starts_with("load ok"))
            .unwrap_or_else(|| panic!("client {i} did not finish cleanly: {t}"));
        let field = |name: &str| -> u64 {
            let mut w = line.split_whitespace();
            w.find(|x| *x == name);
            w.next().and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        bytes += field("bytes");
        kernels += field("kernels");
        assert!(out.status.success(), "client {i}: {t}");
    }
    // Sessions close as their clients exit (a close lost on the way is noticed after the idle
    // timeout): give the server that long to drop them all.
    let settle = Instant::now() + Duration::from_secs(20);
    let (mut free, mut total) = free_memory(&server);
    while free != total && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(500));
        (free, total) = free_memory(&server);
    }
    let fds_after = open_fds(pid);
    eprintln!(
        "load: {CLIENTS} clients x {seconds} s: {} MiB checked, {kernels} kernels checked; \
         server RSS {} -> peak {} MiB; fds {fds_before} -> {fds_after}",
        bytes >> 20,
        rss_before >> 10,
        rss_peak >> 10
    );
    assert!(bytes > 0 && kernels > 0);
    assert!(
        fds_after <= fds_before,
        "file descriptors leaked: {fds_before} -> {fds_after}"
    );
    assert_eq!(
        free, total,
        "device memory not all freed after the clients left"
    );
    // Bounded: device memory (touched pages only) plus the server's own working set, whatever
    // the number of clients; 64 clients each buffering copies would exceed it.
    let bound_kib = (DEVICE_MEMORY >> 10) + (512 << 10);
    assert!(
        rss_peak < bound_kib,
        "server RSS peaked at {} MiB (bound {} MiB)",
        rss_peak >> 10,
        bound_kib >> 10
    );
    assert!(server_alive(&server));
}

fn server_alive(server: &Server) -> bool {
    std::fs::metadata(format!("/proc/{}", server.child.id())).is_ok()
}
