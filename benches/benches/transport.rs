//! Transport benchmarks: calls through the shim against raw quinn on the same machine, with the
//! same endpoint configuration (`remora_transport::endpoint`), measured in the same run.
//!
//! 1. Round trip of a synchronising call: a 4-byte `cuMemcpyDtoH` vs a 128 B request / 64 B
//!    reply on one long-lived bidirectional stream (target: shim/raw <= 1.3x at p50).
//! 2. Bulk: 256 MiB `cuMemcpyHtoD` / `cuMemcpyDtoH` vs 256 MiB over one raw stream each way
//!    (target: >= 0.8x); memcpy into a reused buffer is printed for context.
//! 3. Async enqueue: 4-byte `cuMemsetD32Async` calls then one `cuStreamSynchronize`, vs the raw
//!    round-trip rate 1/RTT (target: far above 1x; the verdict asks for 10x).
//!
//! Run with `cargo build --release -p remora -p remora-shim && cargo bench -p remora-benches`.
//! The shim side is `benches/programs/bench_calls.c`, compiled with gcc against the release shim
//! and run under `remora run --connection` against a `remora serve --backend emulated` started
//! here. `cargo test -p remora-benches --benches` runs only a small raw-quinn smoke check.
//!
//! Sizes can be overridden with REMORA_BENCH_RTT_ITERS, REMORA_BENCH_BULK_MIB,
//! REMORA_BENCH_BULK_REPS and REMORA_BENCH_ASYNC_CALLS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use remora_benches::harness::{self, env_usize, mean, percentile, Needs, Paths, Server, SetupCuda};
use remora_transport::endpoint::{self, Identity, SERVER_NAME};

const REQUEST: usize = 128;
const REPLY: usize = 64;
/// The raw server reads and writes bulk data through a reused buffer of this size (the Remora
/// server moves bulk copies in 1 MiB chunks too).
const CHUNK: usize = 1 << 20;

fn main() -> anyhow::Result<()> {
    if std::env::var_os(RAW_SERVER_ENV).is_some() {
        return raw_server_process();
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not, and gets the smoke check.
    let full = harness::is_bench_run();
    let cfg = Config::new(full);
    if !full {
        let raw = raw_quinn(&cfg)?;
        println!(
            "transport smoke check (raw quinn only; `cargo bench -p remora-benches` runs the benchmark): \
             rtt p50 {:.1} us, up {:.2} GB/s, down {:.2} GB/s",
            percentile(&raw.rtt_us, 0.5),
            best(&raw.up_gbps),
            best(&raw.down_gbps)
        );
        return Ok(());
    }
    let paths = Paths::find(
        Needs {
            nvjitlink_off: false,
            run: "cargo bench -p remora-benches",
        },
        SetupCuda::Run,
    )?;
    paths.warn_if_stale();
    let bench = paths.compile_c(
        &paths.root.join("benches/programs/bench_calls.c"),
        "bench-c",
        &["-O2", "-Wall"],
    )?;
    println!(
        "remora transport benchmarks: rtt {} calls, bulk {} MiB x {}, async {} calls",
        cfg.rtt_iters, cfg.bulk_mib, cfg.bulk_reps, cfg.async_calls
    );
    println!("measuring raw quinn baselines...");
    let raw = raw_quinn(&cfg)?;
    let memcpy = memcpy_gbps(cfg.bulk_mib << 20, cfg.bulk_reps);
    println!("measuring the shim...");
    let shim = run_shim(&paths, &bench, &cfg)?;
    report(&cfg, &raw, &memcpy, &shim)
}

struct Config {
    rtt_iters: usize,
    bulk_mib: usize,
    bulk_reps: usize,
    async_calls: usize,
}

impl Config {
    fn new(full: bool) -> Self {
        if full {
            Self {
                rtt_iters: env_usize("REMORA_BENCH_RTT_ITERS", 20_000),
                bulk_mib: env_usize("REMORA_BENCH_BULK_MIB", 256),
                bulk_reps: env_usize("REMORA_BENCH_BULK_REPS", 5).max(1),
                async_calls: env_usize("REMORA_BENCH_ASYNC_CALLS", 200_000),
            }
        } else {
            Self {
                rtt_iters: 200,
                bulk_mib: 4,
                bulk_reps: 1,
                async_calls: 0,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw quinn baselines: one connection, one long-lived bidirectional stream, client and server
// each on a current_thread runtime on their own thread, endpoints from remora_transport.

struct Raw {
    rtt_us: Vec<f64>,
    up_gbps: Vec<f64>,
    down_gbps: Vec<f64>,
    /// Bulk bytes per UDP datagram sent on this machine during the raw bulk phases (Linux,
    /// system-wide counter): shows whether MTU discovery lifted datagrams above 1472 B.
    bulk_bytes_per_datagram: Option<f64>,
}

/// The kernel's count of UDP datagrams sent, system-wide.
fn udp_out_datagrams() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "OutDatagrams")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Phases on the raw stream start with a 9-byte header: an opcode and a little-endian u64.
const OP_RTT: u8 = b'r';
const OP_UP: u8 = b'u';
const OP_DOWN: u8 = b'd';

fn header(op: u8, n: u64) -> [u8; 9] {
    let mut h = [op; 9];
    h[1..].copy_from_slice(&n.to_le_bytes());
    h
}

/// Set in the child process that serves the raw baseline.
const RAW_SERVER_ENV: &str = "REMORA_BENCH_RAW_SERVER";

/// The raw server runs in a process of its own, as `remora serve` does: on these VMs a wake-up
/// across processes and vCPUs costs tens of microseconds, so a baseline with both ends in one
/// process would compare unlike with like.
fn raw_server_process() -> anyhow::Result<()> {
    let id = Identity::generate()?;
    let pin = id.fingerprint();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        if let Ok(addr) = addr_rx.recv() {
            let hex: String = pin.iter().map(|b| format!("{b:02x}")).collect();
            println!("{addr} {hex}");
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(raw_server(id, addr_tx))
}

fn raw_quinn(cfg: &Config) -> anyhow::Result<Raw> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(RAW_SERVER_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the raw quinn server process")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("raw server stdout")?)
        .read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let addr: SocketAddr = words.next().context("raw server address")?.parse()?;
    let hex = words.next().context("raw server pin")?;
    let mut pin = [0u8; 32];
    for (i, b) in pin.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).context("pin")?, 16)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let raw = rt.block_on(raw_client(addr, pin, cfg));
    let status = child.wait()?;
    let raw = raw?;
    anyhow::ensure!(status.success(), "the raw server failed: {status}");
    Ok(raw)
}

async fn raw_server(
    id: Identity,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
) -> anyhow::Result<()> {
    let ep = endpoint::server("127.0.0.1:0".parse()?, &id)?;
    addr_tx.send(ep.local_addr()?)?;
    let conn = ep.accept().await.context("no client came")?.await?;
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut h = [0u8; 9];
        match recv.read_exact(&mut h).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => break,
            Err(e) => return Err(e.into()),
        }
        let n = u64::from_le_bytes(h[1..].try_into()?);
        match h[0] {
            OP_RTT => {
                let mut req = [0u8; REQUEST];
                let rep = [0x5a_u8; REPLY];
                for _ in 0..n {
                    recv.read_exact(&mut req).await?;
                    send.write_all(&rep).await?;
                }
            }
            OP_UP => {
                let mut left = n as usize;
                while left > 0 {
                    let want = left.min(CHUNK);
                    match recv.read(&mut buf[..want]).await? {
                        Some(k) => left -= k,
                        None => bail!("stream ended inside a bulk upload"),
                    }
                }
                send.write_all(&[1]).await?;
            }
            OP_DOWN => {
                let mut left = n as usize;
                while left > 0 {
                    let k = left.min(CHUNK);
                    send.write_all(&buf[..k]).await?;
                    left -= k;
                }
            }
            op => bail!("unknown raw phase {op}"),
        }
    }
    send.finish()?;
    conn.closed().await;
    ep.wait_idle().await;
    Ok(())
}

async fn raw_client(addr: SocketAddr, pin: [u8; 32], cfg: &Config) -> anyhow::Result<Raw> {
    let ep = endpoint::client(addr, pin)?;
    let conn = ep.connect(addr, SERVER_NAME)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;

    let warm = cfg.rtt_iters / 10 + 100;
    let req = [0xa5_u8; REQUEST];
    let mut rep = [0u8; REPLY];
    send.write_all(&header(OP_RTT, (warm + cfg.rtt_iters) as u64))
        .await?;
    for _ in 0..warm {
        send.write_all(&req).await?;
        recv.read_exact(&mut rep).await?;
    }
    let mut rtt_us = Vec::with_capacity(cfg.rtt_iters);
    for _ in 0..cfg.rtt_iters {
        let t0 = Instant::now();
        send.write_all(&req).await?;
        recv.read_exact(&mut rep).await?;
        rtt_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }

    // The same shapes as the shim's copies: one write of the whole user buffer up, one
    // read_exact into the whole user buffer down.
    let n = cfg.bulk_mib << 20;
    let data: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(131).wrapping_add(7))
        .collect();
    let mut back = vec![0u8; n];
    let (mut up_gbps, mut down_gbps) = (Vec::new(), Vec::new());
    let datagrams_before = udp_out_datagrams();
    for _ in 0..cfg.bulk_reps {
        let t0 = Instant::now();
        send.write_all(&header(OP_UP, n as u64)).await?;
        send.write_all(&data).await?;
        let mut ack = [0u8; 1];
        recv.read_exact(&mut ack).await?;
        up_gbps.push(n as f64 / t0.elapsed().as_secs_f64() / 1e9);

        let t0 = Instant::now();
        send.write_all(&header(OP_DOWN, n as u64)).await?;
        recv.read_exact(&mut back).await?;
        down_gbps.push(n as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    let bulk_bytes_per_datagram = match (datagrams_before, udp_out_datagrams()) {
        (Some(a), Some(b)) if b > a => Some((2 * n * cfg.bulk_reps) as f64 / (b - a) as f64),
        _ => None,
    };
    send.finish()?;
    // The server finishes its side once it sees ours finished; wait for that before closing.
    let mut rest = [0u8; 1];
    let _ = recv.read(&mut rest).await;
    conn.close(0u32.into(), b"done");
    ep.wait_idle().await;
    Ok(Raw {
        rtt_us,
        up_gbps,
        down_gbps,
        bulk_bytes_per_datagram,
    })
}

/// memcpy of the bulk size into a reused buffer, GB/s per repetition.
fn memcpy_gbps(n: usize, reps: usize) -> Vec<f64> {
    let src: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let mut dst = vec![0u8; n];
    dst.copy_from_slice(&src); // fault the pages in
    (0..reps.max(3))
        .map(|_| {
            let t0 = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            n as f64 / t0.elapsed().as_secs_f64() / 1e9
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The shim side: bench_calls.c under `remora run`, against a `remora serve` started here.

fn run_shim(paths: &Paths, bench: &Path, cfg: &Config) -> anyhow::Result<BTreeMap<String, f64>> {
    let server = Server::start(
        paths,
        "transport",
        ["--backend", "emulated", "--device-memory", "2G"],
        &[],
    )?;
    let out = Command::new(&paths.remora)
        .arg("run")
        .arg("--connection")
        .arg(&server.connection)
        .arg("--")
        .arg(bench)
        .args([cfg.rtt_iters, cfg.bulk_mib, cfg.bulk_reps, cfg.async_calls].map(|v| v.to_string()))
        .env("REMORA_SHIM", &paths.shim)
        .stderr(Stdio::inherit())
        .output()
        .context("running bench_calls under remora run")?;
    drop(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("bench_calls failed ({}); its output:\n{stdout}", out.status);
    }
    Ok(harness::key_values(&stdout))
}

// ---------------------------------------------------------------------------------------------
// Reporting.

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// The upper median, as `bench_calls.c` reports the shim's (not [`harness::median`], which
/// averages the middle two).
fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

fn report(
    cfg: &Config,
    raw: &Raw,
    memcpy: &[f64],
    shim: &BTreeMap<String, f64>,
) -> anyhow::Result<()> {
    // A phase switched off by its size variable leaves its keys out; its rows show NaN.
    let get = |k: &str| -> anyhow::Result<f64> { Ok(shim.get(k).copied().unwrap_or(f64::NAN)) };
    let raw_p50 = percentile(&raw.rtt_us, 0.5);
    let raw_rate = 1e6 / raw_p50;
    let mut failed = 0;
    let mut row = |name: &str, unit: &str, shim: f64, base: f64, target: Option<(bool, f64)>| {
        let ratio = shim / base;
        let (tgt, verdict) = match target {
            _ if ratio.is_nan() => (String::new(), "n/a"),
            Some((true, t)) => (format!("<= {t}x"), if ratio <= t { "PASS" } else { "FAIL" }),
            Some((false, t)) => (format!(">= {t}x"), if ratio >= t { "PASS" } else { "FAIL" }),
            None => (String::new(), ""),
        };
        if verdict == "FAIL" {
            failed += 1;
        }
        println!(
            "{name:<34} {unit:<8} {shim:>12.2} {base:>12.2} {ratio:>8.3}x  {tgt:<9} {verdict}"
        );
    };
    println!();
    println!(
        "{:<34} {:<8} {:>12} {:>12} {:>9}  {:<9} verdict",
        "benchmark", "unit", "shim", "baseline", "ratio", "target"
    );
    println!("{}", "-".repeat(98));
    println!(
        "1. synchronising call: 4 B cuMemcpyDtoH vs raw quinn 128 B/64 B, {} calls",
        cfg.rtt_iters
    );
    row(
        "   round trip p50",
        "us",
        get("rtt_us_p50")?,
        raw_p50,
        Some((true, 1.3)),
    );
    row(
        "   round trip mean",
        "us",
        get("rtt_us_mean")?,
        mean(&raw.rtt_us),
        Some((true, 1.3)),
    );
    row(
        "   round trip p99",
        "us",
        get("rtt_us_p99")?,
        percentile(&raw.rtt_us, 0.99),
        None,
    );
    println!(
        "2. bulk: {} MiB, {} repetitions, vs raw quinn one stream",
        cfg.bulk_mib, cfg.bulk_reps
    );
    row(
        "   cuMemcpyHtoD best",
        "GB/s",
        get("htod_gbps_best")?,
        best(&raw.up_gbps),
        Some((false, 0.8)),
    );
    row(
        "   cuMemcpyHtoD median",
        "GB/s",
        get("htod_gbps_median")?,
        median(&raw.up_gbps),
        None,
    );
    row(
        "   cuMemcpyDtoH best",
        "GB/s",
        get("dtoh_gbps_best")?,
        best(&raw.down_gbps),
        Some((false, 0.8)),
    );
    row(
        "   cuMemcpyDtoH median",
        "GB/s",
        get("dtoh_gbps_median")?,
        median(&raw.down_gbps),
        None,
    );
    row(
        "   context: HtoD best vs memcpy",
        "GB/s",
        get("htod_gbps_best")?,
        best(memcpy),
        None,
    );
    println!(
        "3. async enqueue: {} x 4 B cuMemsetD32Async + 1 cuStreamSynchronize, vs 1/raw RTT p50",
        cfg.async_calls
    );
    row(
        "   calls/s incl. synchronize",
        "calls/s",
        get("async_calls_per_s")?,
        raw_rate,
        Some((false, 10.0)),
    );
    row(
        "   calls/s enqueue only",
        "calls/s",
        get("async_enqueue_calls_per_s")?,
        raw_rate,
        None,
    );
    println!("{}", "-".repeat(98));
    println!(
        "raw quinn: rtt p50 {:.1} us mean {:.1} us; up best {:.2} median {:.2} GB/s; down best {:.2} median {:.2} GB/s; memcpy best {:.2} GB/s",
        raw_p50,
        mean(&raw.rtt_us),
        best(&raw.up_gbps),
        median(&raw.up_gbps),
        best(&raw.down_gbps),
        median(&raw.down_gbps),
        best(memcpy)
    );
    if let Some(b) = raw.bulk_bytes_per_datagram {
        println!("raw quinn bulk: {b:.0} bytes per UDP datagram (1472 B means MTU discovery stayed at the Ethernet size)");
    }
    println!(
        "shim: final cuStreamSynchronize after the async calls took {:.0} us",
        shim.get("async_sync_us").copied().unwrap_or(f64::NAN)
    );
    println!("{failed} target(s) missed");
    Ok(())
}
