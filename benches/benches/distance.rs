//! Distance benchmark: Remora through a user-space latency relay (`remora_benches::relay`) at
//! 0.2, 5, 30 and 150 ms round trip, each row against a floor measured in the same run.
//!
//! 1. A driver-API training step (`benches/programs/step_loop.c`: K = 20 or 200 launches of a
//!    small PTX kernel, then one 4-byte `cuMemcpyDtoH`): ms per step against the floor, one
//!    round trip plus the same loop through the relay at no delay (goal: <= 1.1x at 30 ms).
//! 2. The same step in CuPy (`step_cupy.py`: 20 in-place elementwise kernels on 256 floats,
//!    then `float(w[0])`) and numba-cuda (`step_numba.py`: a @cuda.jit kernel launched 20
//!    times, then one element copied back): same columns and goal.
//! 3. Start-up to the first kernel result, in round trips: counted by the shim
//!    (`REMORA_STATS=1`; the QUIC and session handshakes and `remora run`'s own probe of the
//!    server are not calls, so not counted there), and by time from the start of `remora run`:
//!    (time at 150 ms - time at no delay) / 150 ms, best of 2 runs each, which counts
//!    everything (goal: <= 8 for C, <= 12 for CuPy; numba is reported).
//! 4. Bulk: one 256 MiB `cuMemcpyHtoD` and one `cuMemcpyDtoH` (`bulk_copy.c`) through a
//!    1 Gbit/s link at 30 ms round trip, without loss and with 1 % loss each way, against the
//!    cap (goal: >= 0.9x without loss, >= 0.7x with); with the default congestion controller,
//!    then with quinn's Cubic and BBR for comparison.
//!
//! Round trips per step come from `REMORA_STATS=1` too: (round trips of a run of W warm-up and
//! S measured steps - those of a run of W warm-up steps alone) / S, so start-up cancels.
//!
//! Every program runs under the release `remora run --connection FILE`, where FILE is a copy of
//! the server's connection file with the relay's address; the server is one release
//! `remora serve --backend emulated` on loopback for the whole run. Build first, then run:
//!
//! ```text
//! cargo build --release -p remora -p remora-shim -p remora-nvjitlink-off
//! cargo bench -p remora-benches --bench distance
//! ```
//!
//! It needs gcc, `.cache/cuda/env.sh` (`scripts/setup-cuda.sh`: CUDA headers, CuPy and
//! numba-cuda) and takes a few minutes. REMORA_BENCH_DISTANCE_BULK_MIB overrides the 256 MiB;
//! REMORA_BENCH_DISTANCE_ONLY=bulk runs only the bulk rows, =connect only the connection set-up.
//! `cargo test -p remora-benches --benches` runs only a self-check of the parsing and the
//! arithmetic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use remora_benches::harness::{
    self, env_usize, loadavg, tempdir, Needs, Server, SetupCuda, TempDir,
};
use remora_benches::{Link, Relay, RelayConfig, RelayHandle};

/// Round trips of the rows, in milliseconds (each way is half).
const RTTS_MS: [f64; 4] = [0.2, 5.0, 30.0, 150.0];
/// The round trip the step goal is stated at.
const GOAL_RTT_MS: f64 = 30.0;
const GOAL_STEP_RATIO: f64 = 1.1;
/// The round trip the start-up count by time is taken at (the longest: least noise per trip).
const STARTUP_RTT_MS: f64 = 150.0;
const GOAL_STARTUP_C: f64 = 8.0;
const GOAL_STARTUP_CUPY: f64 = 12.0;
/// 1 Gbit/s.
const BULK_RATE_BYTES_PER_S: u64 = 125_000_000;
const BULK_RTT_MS: f64 = 30.0;
const BULK_LOSS: f64 = 0.01;
const GOAL_BULK: f64 = 0.9;
const GOAL_BULK_LOSSY: f64 = 0.7;
/// No single program may run longer than this (a collapse under loss shows as a timeout).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and gets the self-check.
    if harness::self_check_only("distance", self_check) {
        return Ok(());
    }
    let bulk_mib = env_usize("REMORA_BENCH_DISTANCE_BULK_MIB", 256);
    let paths = Paths::find()?;
    if std::env::var("REMORA_BENCH_DISTANCE_ONLY").as_deref() == Ok("connect") {
        report_connect(&measure_connect(&paths)?);
        return Ok(());
    }
    let step_loop = compile(&paths, "step_loop")?;
    let bulk_copy = compile(&paths, "bulk_copy")?;
    let server = start_server(&paths, &[])?;
    let started = Instant::now();
    println!(
        "remora distance benchmark: relay at {:?} ms round trip, floors through the relay at no delay (load average {})",
        RTTS_MS,
        loadavg()
    );
    let mut missed = 0;
    if std::env::var("REMORA_BENCH_DISTANCE_ONLY").as_deref() == Ok("bulk") {
        eprintln!("measuring bulk copies only ...");
        missed += report_bulk(
            &measure_bulk(&paths, &server, &bulk_copy, bulk_mib)?,
            bulk_mib,
        );
        return finish(missed, started);
    }

    let programs = [
        Program::c(&step_loop, 20),
        Program::c(&step_loop, 200),
        Program::python(&paths, "step_cupy.py", "CuPy 20 kernels + float(w[0])"),
        Program::python(&paths, "step_numba.py", "numba 20 launches + 1 element"),
    ];
    let mut results = Vec::new();
    for p in &programs {
        eprintln!("measuring {} ...", p.label);
        results.push(measure_steps(&paths, &server, p)?);
    }
    eprintln!("measuring start-up ...");
    let startup = [
        measure_startup(
            &paths,
            &server,
            &programs[0],
            "C (driver API)",
            Some(GOAL_STARTUP_C),
        )?,
        measure_startup(
            &paths,
            &server,
            &programs[2],
            "CuPy",
            Some(GOAL_STARTUP_CUPY),
        )?,
        measure_startup(&paths, &server, &programs[3], "numba", None)?,
    ];
    eprintln!("measuring connection set-up ...");
    let connects = measure_connect(&paths)?;
    eprintln!("measuring bulk copies ...");
    let bulk = measure_bulk(&paths, &server, &bulk_copy, bulk_mib)?;

    missed += report_steps(&results[..2], "1. driver-API C step (step_loop.c)");
    missed += report_steps(&results[2..], "2. CuPy and numba steps");
    missed += report_startup(&startup);
    report_connect(&connects);
    missed += report_bulk(&bulk, bulk_mib);
    finish(missed, started)
}

fn finish(missed: usize, started: Instant) -> anyhow::Result<()> {
    println!();
    println!(
        "{missed} goal(s) missed; {:.0} s in all; load average now {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What runs.

/// A step program and how it is started; `args(w, s)` are its WARMUP and STEPS.
struct Program {
    label: String,
    exe: PathBuf,
    prefix: Vec<String>,
    env: Vec<(String, String)>,
    /// Steps measured at no delay and at each of RTTS_MS, after `warmup` unmeasured ones.
    steps_floor: usize,
    steps: [usize; 4],
    warmup: usize,
}

impl Program {
    fn c(exe: &Path, k: usize) -> Self {
        Self {
            label: format!("C K={k} launches + 4 B DtoH"),
            exe: exe.to_path_buf(),
            prefix: vec![k.to_string()],
            env: Vec::new(),
            steps_floor: 100,
            steps: [100, 100, 30, 10],
            warmup: 3,
        }
    }

    /// A script in `benches/programs`, run as the tests run CuPy and numba: through
    /// `tests/python/run_site.py` with the packages `scripts/setup-cuda.sh` installed.
    fn python(paths: &Paths, script: &str, label: &str) -> Self {
        let cuda_path = paths.target.join("cuda-path");
        let _ = std::fs::create_dir_all(&cuda_path);
        let include = cuda_path.join("include");
        if std::fs::symlink_metadata(&include).is_err() {
            let _ = std::os::unix::fs::symlink(&paths.cuda_include, &include);
        }
        Self {
            label: label.to_string(),
            exe: PathBuf::from("python3"),
            prefix: vec![
                paths
                    .root
                    .join("tests/python/run_site.py")
                    .display()
                    .to_string(),
                paths.cuda_py.display().to_string(),
                paths
                    .root
                    .join("benches/programs")
                    .join(script)
                    .display()
                    .to_string(),
            ],
            env: vec![
                // CuPy compiles with NVRTC and needs the CUDA headers under $CUDA_PATH/include.
                ("CUDA_PATH".into(), cuda_path.display().to_string()),
                (
                    "LD_LIBRARY_PATH".into(),
                    format!(
                        "{}:{}/nvidia/nvjitlink/lib",
                        paths.cuda_lib.display(),
                        paths.cuda_py.display()
                    ),
                ),
                (
                    "CUPY_CACHE_DIR".into(),
                    paths.target.join("cupy-cache").display().to_string(),
                ),
                (
                    "NUMBA_CACHE_DIR".into(),
                    paths.target.join("numba-cache").display().to_string(),
                ),
            ],
            steps_floor: 30,
            steps: [30, 20, 10, 5],
            warmup: 3,
        }
    }

    fn run(&self, paths: &Paths, conn: &Path, warmup: usize, steps: usize) -> anyhow::Result<Run> {
        let mut args = self.prefix.clone();
        args.push(warmup.to_string());
        args.push(steps.to_string());
        run_program(paths, conn, &self.exe, &args, &self.env)
    }
}

/// One program run under `remora run`.
struct Run {
    /// `key value` lines of its stdout.
    values: BTreeMap<String, f64>,
    stats: Stats,
    /// Wall-clock time `remora run` was started.
    spawned_unix_ms: f64,
    wall: Duration,
}

impl Run {
    fn get(&self, key: &str) -> anyhow::Result<f64> {
        self.values
            .get(key)
            .copied()
            .with_context(|| format!("the program printed no `{key}`"))
    }

    /// From the start of `remora run` to the first kernel result in the program.
    fn startup_ms(&self) -> anyhow::Result<f64> {
        Ok(self.get("first_result_unix_ms")? - self.spawned_unix_ms)
    }
}

/// What `REMORA_STATS=1` printed at exit.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    round_trips: u64,
    by_call: BTreeMap<String, u64>,
}

/// Parses the shim's `remora: stats:` lines (see `shim/src/client.rs`, `stats_report`).
fn parse_stats(text: &str) -> Option<Stats> {
    let mut stats = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("remora: stats: ") else {
            continue;
        };
        if let Some(calls) = rest.strip_prefix("round trips by call: ") {
            let s: &mut Stats = stats.get_or_insert_with(Stats::default);
            for kv in calls.split(", ").filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.rsplit_once(' ')?;
                s.by_call.insert(k.to_string(), v.parse().ok()?);
            }
        } else if let Some((_, after)) = rest.split_once(" asynchronous calls, ") {
            let n = after.split_once(" round trips")?.0.parse().ok()?;
            stats.get_or_insert_with(Stats::default).round_trips = n;
        }
    }
    stats
}

fn format_calls(by_call: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<_> = by_call.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

fn run_program(
    paths: &Paths,
    conn: &Path,
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
) -> anyhow::Result<Run> {
    let out_dir = tempdir("distance-run")?;
    let (stdout, stderr) = (out_dir.join("stdout"), out_dir.join("stderr"));
    let mut cmd = Command::new(&paths.remora);
    cmd.arg("run")
        .arg("--connection")
        .arg(conn)
        .arg("--")
        .arg(exe)
        .args(args)
        .env("REMORA_SHIM", &paths.shim)
        .env("REMORA_STATS", "1")
        .env("LD_LIBRARY_PATH", &paths.cuda_lib)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout)?)
        .stderr(std::fs::File::create(&stderr)?);
    let spawned_unix_ms = unix_ms();
    let t = Instant::now();
    let mut child = cmd.spawn().context("starting remora run")?;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&out_dir);
            bail!("{} {args:?} ran past {RUN_TIMEOUT:?}", exe.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = t.elapsed();
    let out = std::fs::read_to_string(&stdout).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out_dir);
    ensure!(
        status.success(),
        "{} {args:?} failed ({status}):\n{out}{err}",
        exe.display()
    );
    let values = harness::key_values(&out);
    let stats = parse_stats(&err)
        .with_context(|| format!("no `remora: stats:` lines from {}:\n{err}", exe.display()))?;
    Ok(Run {
        values,
        stats,
        spawned_unix_ms,
        wall,
    })
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// A relay between the programs and the server; its connection file names the relay.
struct Hop {
    _relay: RelayHandle,
    conn: PathBuf,
    _dir: TempDir,
}

fn hop(server: &Server, link: Link) -> anyhow::Result<Hop> {
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let relay = Relay::start(RelayConfig::symmetric(listen, server.addr, link))
        .context("starting the relay")?;
    let dir = TempDir::new("distance-hop")?;
    let conn = dir.0.join("connection");
    let text = std::fs::read_to_string(&server.connection)?;
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("address") {
                format!("address = {}", relay.local_addr())
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&conn, edited.join("\n") + "\n")?;
    Ok(Hop {
        _relay: relay,
        conn,
        _dir: dir,
    })
}

fn delay_link(rtt_ms: f64) -> Link {
    Link::delay(Duration::from_secs_f64(rtt_ms / 2.0 / 1e3))
}

struct StepRow {
    rtt_ms: f64,
    steps: usize,
    ms_per_step: f64,
    round_trips_per_step: f64,
}

struct StepResult {
    label: String,
    /// The same loop through the relay at no delay.
    floor_ms: f64,
    rows: Vec<StepRow>,
}

fn measure_steps(paths: &Paths, server: &Server, p: &Program) -> anyhow::Result<StepResult> {
    let zero = hop(server, Link::default())?;
    // Warm-up alone first: its count is subtracted from each row's.
    let warm = p.run(paths, &zero.conn, p.warmup, 0)?;
    let floor = p.run(paths, &zero.conn, p.warmup, p.steps_floor)?;
    let mut rows = Vec::new();
    for (i, &rtt_ms) in RTTS_MS.iter().enumerate() {
        let h = hop(server, delay_link(rtt_ms))?;
        let r = p.run(paths, &h.conn, p.warmup, p.steps[i])?;
        rows.push(StepRow {
            rtt_ms,
            steps: p.steps[i],
            ms_per_step: r.get("ms_per_step")?,
            round_trips_per_step: (r.stats.round_trips as f64 - warm.stats.round_trips as f64)
                / p.steps[i] as f64,
        });
        eprintln!(
            "  {rtt_ms} ms: {:.2} ms/step, run {:.1} s",
            rows.last().map_or(0.0, |r| r.ms_per_step),
            r.wall.as_secs_f64()
        );
    }
    Ok(StepResult {
        label: p.label.clone(),
        floor_ms: floor.get("ms_per_step")?,
        rows,
    })
}

/// Round trips the start-up of the runs that stop at the first result cost, and how long it
/// took at no delay and at each of STARTUP_RTTS_MS (best of STARTUP_RUNS: noise only adds).
struct Startup {
    name: &'static str,
    goal: Option<f64>,
    round_trips: u64,
    calls: String,
    ms_at_zero: f64,
    ms_at: Vec<(f64, f64)>,
}

const STARTUP_RTTS_MS: [f64; 2] = [30.0, STARTUP_RTT_MS];
const STARTUP_RUNS: usize = 2;

fn measure_startup(
    paths: &Paths,
    server: &Server,
    p: &Program,
    name: &'static str,
    goal: Option<f64>,
) -> anyhow::Result<Startup> {
    let best = |link: Link| -> anyhow::Result<(f64, Stats)> {
        let h = hop(server, link)?;
        let mut best = (f64::INFINITY, Stats::default());
        for _ in 0..STARTUP_RUNS {
            let r = p.run(paths, &h.conn, 0, 0)?;
            let ms = r.startup_ms()?;
            if ms < best.0 {
                best = (ms, r.stats);
            }
        }
        Ok(best)
    };
    let (ms_at_zero, stats) = best(Link::default())?;
    let mut ms_at = Vec::new();
    for rtt in STARTUP_RTTS_MS {
        ms_at.push((rtt, best(delay_link(rtt))?.0));
    }
    Ok(Startup {
        name,
        goal,
        round_trips: stats.round_trips,
        calls: format_calls(&stats.by_call),
        ms_at_zero,
        ms_at,
    })
}

/// Connection set-up (QUIC + TLS 1.3 + the session's hello) through the relay, at each
/// round trip: a process's first connection to a server, and later ones, which resume the TLS
/// session and send the hello as 0-RTT data.
struct ConnectRow {
    rtt_ms: f64,
    first_ms: f64,
    /// Median of CONNECT_AGAIN connections after the first.
    again_ms: f64,
    again_zero_rtt: usize,
}

const CONNECT_AGAIN: usize = 5;

fn measure_connect(paths: &Paths) -> anyhow::Result<Vec<ConnectRow>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &rtt_ms in &RTTS_MS {
        // A server of its own per row: this process holds no ticket for it yet.
        let server = start_server(paths, &[])?;
        let h = hop(&server, delay_link(rtt_ms))?;
        let file = remora_protocol::ConnectionFile::read(&h.conn)?;
        // Open connections stay open for the row, as a pool's links do: each receives the
        // server's new tickets after its handshake.
        let open = std::cell::RefCell::new(Vec::new());
        let connect = || -> anyhow::Result<(f64, bool)> {
            let t = Instant::now();
            let c = rt.block_on(remora_transport::client::connect(
                &file,
                &Default::default(),
                Duration::from_secs(30),
                |_| {},
            ))?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let zero_rtt = c.zero_rtt;
            open.borrow_mut().push(c);
            Ok((ms, zero_rtt))
        };
        let (first_ms, _) = connect()?;
        // The tickets follow the first handshake by half a round trip.
        std::thread::sleep(Duration::from_secs_f64(rtt_ms / 1e3 + 0.05));
        let mut again = Vec::new();
        let mut again_zero_rtt = 0;
        for _ in 0..CONNECT_AGAIN {
            let (ms, zero) = connect()?;
            again.push(ms);
            again_zero_rtt += usize::from(zero);
        }
        again.sort_by(f64::total_cmp);
        rows.push(ConnectRow {
            rtt_ms,
            first_ms,
            again_ms: again[again.len() / 2],
            again_zero_rtt,
        });
    }
    Ok(rows)
}

fn report_connect(rows: &[ConnectRow]) {
    println!();
    println!("4. connection set-up (QUIC, TLS 1.3 and the session's hello): a process's first connection, and again (TLS resumed, hello as 0-RTT data)");
    println!(
        "{:>8} | {:>12} {:>8} | {:>14} {:>8} {:>8}",
        "rtt ms", "first ms", "RT", "again ms (p50)", "RT", "0-RTT"
    );
    println!("{}", "-".repeat(72));
    for r in rows {
        let rt = |ms: f64| {
            if r.rtt_ms >= 5.0 {
                format!("{:.2}", ms / r.rtt_ms)
            } else {
                "-".into()
            }
        };
        println!(
            "{:>8} | {:>12.1} {:>8} | {:>14.1} {:>8} {:>5}/{}",
            r.rtt_ms,
            r.first_ms,
            rt(r.first_ms),
            r.again_ms,
            rt(r.again_ms),
            r.again_zero_rtt,
            CONNECT_AGAIN
        );
    }
    println!("{}", "-".repeat(72));
    println!("RT: ms / rtt. A new process (each `remora run`) always makes a first connection: rustls cannot write a ticket out.");
}

struct BulkRow {
    label: &'static str,
    goal: f64,
    htod_gbps: Option<f64>,
    dtoh_gbps: Option<f64>,
    note: String,
}

fn measure_bulk(
    paths: &Paths,
    server: &Server,
    exe: &Path,
    mib: usize,
) -> anyhow::Result<Vec<BulkRow>> {
    // The default is Remora's loss-tolerant Cubic (`transport/src/congestion.rs`); quinn's
    // Cubic and BBR run beside it for comparison. Cubic halves its window at every random loss;
    // quinn's BBR rides through it but collapses when its start-up overshoots a shallow
    // drop-tail queue, so it gets a flow-control window near twice the bandwidth-delay product
    // (3.75 MB here). The setting is read by both ends, so each has its own server.
    let cubic: Vec<(String, String)> = vec![("REMORA_CONGESTION".into(), "cubic".into())];
    let bbr: Vec<(String, String)> = vec![
        ("REMORA_CONGESTION".into(), "bbr".into()),
        ("REMORA_WINDOW".into(), "8M".into()),
    ];
    let cubic_server = start_server(paths, &cubic)?;
    let bbr_server = start_server(paths, &bbr)?;
    let mut rows = Vec::new();
    for (label, loss, goal, server, env) in [
        ("1 Gbit/s, 30 ms", 0.0, GOAL_BULK, server, &[][..]),
        (
            "1 Gbit/s, 30 ms, 1 % loss",
            BULK_LOSS,
            GOAL_BULK_LOSSY,
            server,
            &[][..],
        ),
        (
            "  same, quinn's Cubic",
            0.0,
            GOAL_BULK,
            &cubic_server,
            &cubic[..],
        ),
        (
            "  same, Cubic, 1 % loss",
            BULK_LOSS,
            GOAL_BULK_LOSSY,
            &cubic_server,
            &cubic[..],
        ),
        (
            "  same, BBR, 8M window",
            0.0,
            GOAL_BULK,
            &bbr_server,
            &bbr[..],
        ),
        (
            "  same, BBR, 8M, 1 % loss",
            BULK_LOSS,
            GOAL_BULK_LOSSY,
            &bbr_server,
            &bbr[..],
        ),
    ] {
        let link = Link {
            rate_bytes_per_s: Some(BULK_RATE_BYTES_PER_S),
            loss,
            ..delay_link(BULK_RTT_MS)
        };
        let h = hop(server, link)?;
        eprintln!("  {label} ...");
        let row = match run_program(paths, &h.conn, exe, &[mib.to_string()], env) {
            Ok(r) => BulkRow {
                label,
                goal,
                htod_gbps: r.values.get("htod_gbps").copied(),
                dtoh_gbps: r.values.get("dtoh_gbps").copied(),
                note: format!("{:.1} s in all", r.wall.as_secs_f64()),
            },
            // A collapse is a result, not a reason to lose the other tables.
            Err(e) => BulkRow {
                label,
                goal,
                htod_gbps: None,
                dtoh_gbps: None,
                note: format!("{e:#}").lines().next().unwrap_or("").to_string(),
            },
        };
        rows.push(row);
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Reporting.

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The floor of a step at `rtt_ms`: one round trip plus the loop at no delay.
fn step_floor(rtt_ms: f64, loop_ms: f64) -> f64 {
    rtt_ms + loop_ms
}

fn report_steps(results: &[StepResult], title: &str) -> usize {
    let mut missed = 0;
    println!();
    println!("{title}: ms per step against one round trip + the same loop at no delay; goal <= {GOAL_STEP_RATIO}x at {GOAL_RTT_MS} ms");
    println!(
        "{:<32} {:>8} {:>6} {:>10} {:>10} {:>7} {:>9} {:>9}  {:<8} verdict",
        "step", "rtt ms", "steps", "ms/step", "floor ms", "ratio", "RT/step", "RT by t", "goal"
    );
    println!("{}", "-".repeat(115));
    for r in results {
        println!(
            "{:<32} {:>8} {:>6} {:>10.2} {:>10} {:>7} {:>9} {:>9}",
            r.label, "0", "", r.floor_ms, "", "", "", ""
        );
        for row in &r.rows {
            let floor = step_floor(row.rtt_ms, r.floor_ms);
            let ratio = row.ms_per_step / floor;
            // Round trips the step costs by time: what it takes beyond the loop at no delay.
            let by_time = (row.ms_per_step - r.floor_ms) / row.rtt_ms;
            let (goal, v) = if row.rtt_ms == GOAL_RTT_MS {
                let ok = ratio <= GOAL_STEP_RATIO;
                missed += usize::from(!ok);
                (format!("<= {GOAL_STEP_RATIO}x"), verdict(ok))
            } else {
                (String::new(), "")
            };
            println!(
                "{:<32} {:>8} {:>6} {:>10.2} {:>10.2} {:>6.3}x {:>9.2} {:>9.2}  {:<8} {}",
                "",
                row.rtt_ms,
                row.steps,
                row.ms_per_step,
                floor,
                ratio,
                row.round_trips_per_step,
                by_time,
                goal,
                v
            );
        }
    }
    println!("{}", "-".repeat(115));
    println!("RT/step: round trips per step counted by the shim (REMORA_STATS); RT by t: (ms/step - loop at no delay) / rtt");
    missed
}

fn report_startup(rows: &[Startup]) -> usize {
    let mut missed = 0;
    println!();
    println!(
        "3. start-up to the first kernel result, from the start of `remora run`; goal <= {GOAL_STARTUP_C} round trips for C, <= {GOAL_STARTUP_CUPY} for CuPy"
    );
    println!(
        "{:<16} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<6} verdict",
        "program", "counted", "ms at 0", "ms at 30", "ms at 150", "RT by t30", "RT by t150", "goal"
    );
    println!("{}", "-".repeat(100));
    for r in rows {
        let at = |rtt: f64| {
            r.ms_at
                .iter()
                .find(|(x, _)| *x == rtt)
                .map_or(f64::NAN, |(_, ms)| *ms)
        };
        let by_time = |rtt: f64| (at(rtt) - r.ms_at_zero) / rtt;
        let (g, v) = match r.goal {
            Some(g) => {
                let ok = by_time(STARTUP_RTT_MS) <= g;
                missed += usize::from(!ok);
                (format!("<= {g}"), verdict(ok))
            }
            None => (String::new(), ""),
        };
        println!(
            "{:<16} {:>8} {:>10.0} {:>10.0} {:>10.0} {:>10.1} {:>10.1}  {:<6} {}",
            r.name,
            r.round_trips,
            r.ms_at_zero,
            at(30.0),
            at(STARTUP_RTT_MS),
            by_time(30.0),
            by_time(STARTUP_RTT_MS),
            g,
            v
        );
    }
    println!("{}", "-".repeat(100));
    println!(
        "best of {STARTUP_RUNS} runs each. counted: the shim's round trips (REMORA_STATS) up to the first result; RT by tN:\n\
         (start-up at N ms - at 0) / N ms, which also counts the QUIC and session handshakes and `remora run`'s\n\
         probe of the server; the verdict is on RT by t{STARTUP_RTT_MS}. Counted calls:"
    );
    for r in rows {
        println!("  {}: {}", r.name, r.calls);
    }
    missed
}

fn report_bulk(rows: &[BulkRow], mib: usize) -> usize {
    let cap = BULK_RATE_BYTES_PER_S as f64 / 1e9;
    let mut missed = 0;
    println!();
    println!(
        "4. bulk: one {mib} MiB cuMemcpyHtoD and one cuMemcpyDtoH through a {cap:.3} GB/s (1 Gbit/s) cap at {BULK_RTT_MS} ms round trip"
    );
    println!(
        "{:<28} {:<6} {:>8} {:>8} {:>7}  {:<7} {:<7} note",
        "link", "dir", "GB/s", "cap", "ratio", "goal", "verdict"
    );
    println!("{}", "-".repeat(90));
    for r in rows {
        for (dir, v) in [("HtoD", r.htod_gbps), ("DtoH", r.dtoh_gbps)] {
            let ratio = v.map_or(0.0, |v| v / cap);
            let ok = ratio >= r.goal;
            missed += usize::from(!ok);
            println!(
                "{:<28} {:<6} {:>8} {:>8.3} {:>6.3}x  {:<7} {:<7} {}",
                r.label,
                dir,
                v.map_or("-".to_string(), |v| format!("{v:.4}")),
                cap,
                ratio,
                format!(">= {}x", r.goal),
                verdict(ok),
                if dir == "HtoD" { r.note.as_str() } else { "" }
            );
        }
    }
    println!("{}", "-".repeat(90));
    missed
}

// ---------------------------------------------------------------------------------------------
// Set-up: paths, programs, the server.

/// The release binaries and CUDA headers ([`harness::Paths`]), with the CUDA libraries and
/// Python packages (`.cache/cuda/env.sh`) the CuPy and numba steps run with.
struct Paths {
    release: harness::Paths,
    cuda_lib: PathBuf,
    cuda_py: PathBuf,
}

impl std::ops::Deref for Paths {
    type Target = harness::Paths;

    fn deref(&self) -> &harness::Paths {
        &self.release
    }
}

impl Paths {
    fn find() -> anyhow::Result<Self> {
        let release = harness::Paths::find(
            Needs {
                nvjitlink_off: true,
                run: "cargo bench -p remora-benches --bench distance",
            },
            SetupCuda::Ask,
        )?;
        Ok(Self {
            cuda_lib: harness::cuda_env(&release.root, "CUDA12_LIB")?,
            cuda_py: harness::cuda_env(&release.root, "CUDA_PY")?,
            release,
        })
    }
}

/// `benches/programs/NAME.c`, built against the release shim.
fn compile(paths: &Paths, name: &str) -> anyhow::Result<PathBuf> {
    paths.compile_c(
        &paths.root.join(format!("benches/programs/{name}.c")),
        "bench-c",
        &["-O2", "-Wall"],
    )
}

/// A release `remora serve --backend emulated` on loopback for the programs, with `env` in its
/// environment (transport settings are read by both ends).
fn start_server(paths: &Paths, env: &[(String, String)]) -> anyhow::Result<Server> {
    Server::start(
        paths,
        "distance-server",
        ["--backend", "emulated", "--device-memory", "2G"],
        env,
    )
}

// ---------------------------------------------------------------------------------------------
// Self-check, run by `cargo test --benches`.

fn self_check() {
    let text = "noise\n\
        remora: stats: 104 asynchronous calls, 8 round trips, 0 synchronising calls answered locally\n\
        remora: stats: 12087 bytes sent, 656 bytes received, 25.667 ms waiting for the server\n\
        remora: stats: round trips by call: MemcpyDtoH 6, MemAlloc 1, ModuleLoad 1\n\
        remora: stats: asynchronous by call: Launch 101, CtxCreate 1\n\
        remora: stats: answered locally by call: \n";
    let s = parse_stats(text).expect("stats parse");
    assert_eq!(s.round_trips, 8);
    assert_eq!(s.by_call.get("MemcpyDtoH"), Some(&6));
    assert_eq!(s.by_call.values().sum::<u64>(), 8);
    assert_eq!(
        format_calls(&s.by_call),
        "MemcpyDtoH 6, MemAlloc 1, ModuleLoad 1"
    );
    assert!(parse_stats("no stats here\n").is_none());
    let empty = parse_stats("remora: stats: 0 asynchronous calls, 0 round trips, 0 x\nremora: stats: round trips by call: \n")
        .expect("empty stats parse");
    assert_eq!(empty, Stats::default());
    assert!((step_floor(30.0, 2.5) - 32.5).abs() < 1e-9);
    let l = delay_link(30.0);
    assert_eq!(l.delay, Duration::from_millis(15));
}
