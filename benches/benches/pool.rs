//! Pool benchmark: K = 8 trials of one fixed workload on M = 2 one-thread emulated members behind
//! one pool (`remora serve --member A --member B --sessions-per-gpu 1`), against the ideal
//! schedule measured in the same run.
//!
//! 1. Makespan: the K trials started at once through the pool, against `ceil(K/M) x T`, where T
//!    is one trial alone through the pool (goal: at most 1.1x).
//! 2. Placement latency: from starting a session (connect, hello, placement on a free member, the
//!    pool's link to that member) to its first call served (SetWindows, as the shim sends it
//!    first, then one cuMemGetInfo round trip), p50 of 20 probes through the pool (goal: under
//!    100 ms), against the same directly on a member, interleaved. For context, a trial of 0
//!    iterations under `remora run` (process start to exit) through the pool and directly.
//! 3. Busy fraction: each member's share of the time it held a session while the pool's queue
//!    was not empty, from the pool's status report sampled every 50 ms during the makespan run
//!    (the `Status` request `remora status --json` makes, over one long-lived observer
//!    connection, so that sampling does not spawn 20 processes a second; goal: at least 90 %).
//!
//! The workload is `tests/programs/pool_trial.c ITERATIONS 0` (a PTX kernel ITERATIONS times
//! over 64 Ki floats, checked on the host), compiled with gcc against the release shim as the
//! tests compile it; ITERATIONS is tuned so one trial takes about 2 s on a one-thread member.
//!
//! Build the release binaries first, then run:
//!
//! ```text
//! cargo build --release -p remora -p remora-shim -p remora-nvjitlink-off
//! cargo bench -p remora-benches --bench pool
//! ```
//!
//! REMORA_BENCH_POOL_ITERS overrides ITERATIONS, REMORA_BENCH_POOL_TRIALS overrides K.
//! `cargo test -p remora-benches --benches` runs only a self-check of the report's arithmetic.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use remora_benches::harness::{
    self, env_usize, loadavg, mean, median, percentile, Needs, Paths, Server, SetupCuda,
};
use remora_protocol::messages::{ReplyBody, Request, SessionRequest, Window};
use remora_protocol::{ConnectionFile, Sink};
use remora_transport::client::Link;
use serde_json::Value;

/// Kernel launches per trial: about 2 s on a one-thread emulated member.
const ITERATIONS: usize = 300;
/// Trials started at once.
const TRIALS: usize = 8;
/// Members of the pool, each one emulated GPU on one worker thread.
const MEMBERS: usize = 2;
/// Interleaved pairs of session probes (pool, direct) for the placement latency.
const PROBE_PAIRS: usize = 20;
/// Interleaved pairs of 0-iteration trials (pool, direct), for context.
const LATENCY_PAIRS: usize = 5;
/// How often the pool's status is sampled during the makespan run.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

const GOAL_MAKESPAN_RATIO: f64 = 1.1;
const GOAL_PLACEMENT_MS: f64 = 100.0;
const GOAL_BUSY: f64 = 0.90;

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and gets the self-check.
    if harness::self_check_only("pool", self_check) {
        return Ok(());
    }
    let iters = env_usize("REMORA_BENCH_POOL_ITERS", ITERATIONS);
    let trials = env_usize("REMORA_BENCH_POOL_TRIALS", TRIALS).max(1);
    let paths = Paths::find(
        Needs {
            nvjitlink_off: true,
            run: "cargo bench -p remora-benches --bench pool",
        },
        SetupCuda::Ask,
    )?;
    paths.warn_if_stale();
    // Built as the tests build it (against the debug shim there).
    let trial = paths.compile_c(
        &paths.root.join("tests/programs/pool_trial.c"),
        "bench-pool",
        &[
            "-O1",
            "-Wall",
            "-Wno-deprecated-declarations",
            "-Wno-unused-function",
        ],
    )?;
    let load_before = loadavg();

    let members: Vec<Server> = (0..MEMBERS)
        .map(|i| start_member(&paths, i))
        .collect::<anyhow::Result<_>>()?;
    let member_files: Vec<&Path> = members.iter().map(|m| m.connection.as_path()).collect();
    let pool = start_pool(&paths, &member_files)?;
    println!(
        "remora pool benchmark: K = {trials} trials of `pool_trial {iters} 0` on M = {MEMBERS} \
         one-thread emulated members behind one pool (--sessions-per-gpu 1); {} CPUs, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before
    );
    let run = |conn: &Path, iters: usize| run_trial(&paths, &trial, conn, iters);

    // Warm both paths (page cache, the pool's first placement) before measuring anything.
    run(&pool.connection, 0)?;
    run(&members[0].connection, 0)?;

    println!(
        "measuring placement latency ({PROBE_PAIRS} interleaved pairs of session probes, \
         {LATENCY_PAIRS} of 0-iteration trials)..."
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut probe_pool, mut probe_direct) = (Vec::new(), Vec::new());
    for _ in 0..PROBE_PAIRS {
        probe_pool.push(first_call(&rt, &pool.connection)?);
        probe_direct.push(first_call(&rt, &members[0].connection)?);
    }
    drop(rt);
    let (mut via_pool, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..LATENCY_PAIRS {
        via_pool.push(run(&pool.connection, 0)?.as_secs_f64());
        direct.push(run(&members[0].connection, 0)?.as_secs_f64());
    }

    println!("measuring T (one trial alone through the pool, twice) and one trial directly on a member...");
    let t_runs: Vec<f64> = (0..2)
        .map(|_| run(&pool.connection, iters).map(|d| d.as_secs_f64()))
        .collect::<anyhow::Result<_>>()?;
    let t = mean(&t_runs);
    let t_direct = run(&members[0].connection, iters)?.as_secs_f64();

    println!("measuring the makespan of {trials} trials started at once through the pool...");
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (conn, stop) = (pool.connection.clone(), stop.clone());
        std::thread::spawn(move || poll_status(&conn, &stop))
    };
    // Let the poller connect and take its first sample before the trials start.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let children: Vec<Child> = (0..trials)
        .map(|_| spawn_trial(&paths, &trial, &pool.connection, iters))
        .collect::<anyhow::Result<_>>()?;
    let mut ends = Vec::new();
    let mut failures = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output()?;
        ends.push(started.elapsed().as_secs_f64());
        if let Err(e) = check_trial(&out, iters) {
            failures.push(format!("trial {i}: {e}"));
        }
    }
    // Children are waited in order; the makespan is when the last one is done.
    let makespan = ends.iter().copied().fold(0.0, f64::max);
    stop.store(true, Ordering::Relaxed);
    let samples = poller.join().expect("the status poller panicked")?;
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    let samples: Vec<Sample> = samples
        .into_iter()
        .map(|mut s| {
            s.t -= started.duration_since(s.origin).as_secs_f64();
            s
        })
        .collect();

    let addresses: Vec<String> = members
        .iter()
        .map(|m| {
            ConnectionFile::read(&m.connection)
                .map(|f| f.address.to_string())
                .unwrap_or_else(|_| "?".into())
        })
        .collect();
    let busy = busy_fractions(&samples, &addresses);
    let rounds = trials.div_ceil(MEMBERS);
    let ideal = rounds as f64 * t;
    report(&Report {
        trials,
        iters,
        t,
        t_runs,
        t_direct,
        makespan,
        rounds,
        ideal,
        probe_pool,
        probe_direct,
        via_pool,
        direct,
        busy,
        addresses,
        samples: samples.len(),
        load_before,
        load_after: loadavg(),
    });
    drop(pool);
    drop(members);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The servers and the trial program.

fn start_member(paths: &Paths, i: usize) -> anyhow::Result<Server> {
    Server::start(
        paths,
        &format!("member{i}"),
        [
            "--backend",
            "emulated",
            "--threads",
            "1",
            "--device-memory",
            "1G",
        ],
        &[],
    )
}

/// A pool over `members`, returned once every member is up.
fn start_pool(paths: &Paths, members: &[&Path]) -> anyhow::Result<Server> {
    let mut args: Vec<&OsStr> = vec!["--sessions-per-gpu".as_ref(), "1".as_ref()];
    for m in members {
        args.extend([OsStr::new("--member"), m.as_os_str()]);
    }
    let pool = Server::start(paths, "pool", args, &[])?;
    let observer = Observer::connect(&pool.connection)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = observer.status()?;
        let up = s["members"]
            .as_array()
            .is_some_and(|m| m.len() == members.len() && m.iter().all(|m| m["state"] == "up"));
        if up {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the pool's members did not come up within 20 s: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    observer.close();
    Ok(pool)
}

fn trial_command(paths: &Paths, trial: &Path, conn: &Path, iters: usize) -> Command {
    let mut c = Command::new(&paths.remora);
    c.arg("run")
        .arg("--connection")
        .arg(conn)
        .arg("--")
        .arg(trial)
        .args([iters.to_string(), "0".into()])
        .env("REMORA_SHIM", &paths.shim)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn spawn_trial(paths: &Paths, trial: &Path, conn: &Path, iters: usize) -> anyhow::Result<Child> {
    trial_command(paths, trial, conn, iters)
        .spawn()
        .context("starting remora run")
}

/// Runs one trial to the end and checks it; its wall time.
fn run_trial(paths: &Paths, trial: &Path, conn: &Path, iters: usize) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = spawn_trial(paths, trial, conn, iters)?.wait_with_output()?;
    let took = t0.elapsed();
    check_trial(&out, iters)?;
    Ok(took)
}

/// The trial succeeded and printed the value the host computes for `iters` steps.
fn check_trial(out: &Output, iters: usize) -> anyhow::Result<()> {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = 0.0f32;
    for _ in 0..iters {
        want = want.mul_add(0.5, 1.0);
    }
    let line = format!("trial devices=1 value={want:.6}");
    ensure!(
        out.status.success() && all.contains(&line),
        "pool_trial {iters} failed ({}), want `{line}`:\n{all}",
        out.status
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The pool's status, over one observer connection.

/// Status replies carry no data.
struct NoData;

impl Sink for NoData {
    fn write(&mut self, _dst: u64, _offset: u64, _bytes: &[u8]) {}
}

/// An observer session of the pool (what `remora status` opens), kept open for many reports.
struct Observer {
    rt: tokio::runtime::Runtime,
    link: Link<NoData>,
}

impl Observer {
    fn connect(conn: &Path) -> anyhow::Result<Self> {
        let file = ConnectionFile::read(conn)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let observer = SessionRequest {
            observer: true,
            ..Default::default()
        };
        let c = rt
            .block_on(remora_transport::client::connect(
                &file,
                &observer,
                Duration::from_secs(10),
                |_| {},
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            link: Link::new(c, NoData),
            rt,
        })
    }

    /// The report `remora status --json` prints.
    fn status(&self) -> anyhow::Result<Value> {
        let reply = self
            .rt
            .block_on(self.link.call(&Request::Status, &[], None))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        match reply.body {
            ReplyBody::Status { json } => Ok(serde_json::from_str(&json)?),
            _ if reply.status != 0 => bail!("{}", reply.message),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    fn close(self) {
        let Self { rt, link } = self;
        link.close("done");
        rt.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), link.endpoint.wait_idle()).await;
            drop(link);
        });
    }
}

/// Seconds from starting a session (connect, hello, placement, and through a pool its link to
/// the member) to its first call served: SetWindows, as the shim sends it first, then one
/// cuMemGetInfo round trip to the GPU. The session is closed before returning.
fn first_call(rt: &tokio::runtime::Runtime, conn: &Path) -> anyhow::Result<f64> {
    let file = ConnectionFile::read(conn)?;
    rt.block_on(async {
        let t0 = Instant::now();
        let request = SessionRequest {
            gpus: 1,
            ..Default::default()
        };
        let c = remora_transport::client::connect(&file, &request, Duration::from_secs(10), |_| {})
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let link = Link::new(c, NoData);
        let windows = vec![Window {
            device: 0,
            base: 1 << 40,
            size: 1 << 34,
        }];
        for req in [
            Request::SetWindows { windows },
            Request::MemGetInfo { device: 0 },
        ] {
            let reply = link
                .call(&req, &[], None)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", req.name()))?;
            ensure!(reply.status == 0, "{}: {}", req.name(), reply.message);
        }
        let took = t0.elapsed().as_secs_f64();
        link.close("done");
        let _ = tokio::time::timeout(Duration::from_secs(2), link.endpoint.wait_idle()).await;
        Ok(took)
    })
}

/// One status report: when (seconds after `origin`), the queue's length, and whether each
/// member (by address) held a session.
#[derive(Clone, Debug)]
struct Sample {
    origin: Instant,
    t: f64,
    queue: u64,
    busy: Vec<(String, bool)>,
}

fn sample(origin: Instant, t: f64, s: &Value) -> Sample {
    let busy = s["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let sessions: u64 = m["gpus"]
                        .as_array()
                        .map(|g| g.iter().filter_map(|g| g["sessions"].as_u64()).sum())
                        .unwrap_or(0);
                    (
                        m["address"].as_str().unwrap_or("?").to_string(),
                        sessions > 0,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Sample {
        origin,
        t,
        queue: s["queue"]["length"].as_u64().unwrap_or(0),
        busy,
    }
}

/// Samples the pool's status every [`SAMPLE_EVERY`] until `stop`.
fn poll_status(conn: &Path, stop: &AtomicBool) -> anyhow::Result<Vec<Sample>> {
    let observer = Observer::connect(conn)?;
    let origin = Instant::now();
    let mut out = Vec::new();
    let mut next = origin;
    while !stop.load(Ordering::Relaxed) {
        let s = observer.status()?;
        // Stamp a report halfway through its round trip.
        let t = (origin.elapsed().as_secs_f64() + next.duration_since(origin).as_secs_f64()) / 2.0;
        out.push(sample(origin, t, &s));
        next += SAMPLE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    out.push(sample(
        origin,
        origin.elapsed().as_secs_f64(),
        &observer.status()?,
    ));
    observer.close();
    Ok(out)
}

/// Per member: (busy fraction, seconds the queue was not empty), time-weighted: each sample's
/// state holds until the next sample.
fn busy_fractions(samples: &[Sample], addresses: &[String]) -> Vec<(f64, f64)> {
    addresses
        .iter()
        .map(|addr| {
            let (mut queued, mut busy) = (0.0, 0.0);
            for w in samples.windows(2) {
                if w[0].queue == 0 {
                    continue;
                }
                let dt = w[1].t - w[0].t;
                queued += dt;
                if w[0].busy.iter().any(|(a, b)| a == addr && *b) {
                    busy += dt;
                }
            }
            (
                if queued > 0.0 {
                    busy / queued
                } else {
                    f64::NAN
                },
                queued,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reporting.

struct Report {
    trials: usize,
    iters: usize,
    t: f64,
    t_runs: Vec<f64>,
    t_direct: f64,
    makespan: f64,
    rounds: usize,
    ideal: f64,
    probe_pool: Vec<f64>,
    probe_direct: Vec<f64>,
    via_pool: Vec<f64>,
    direct: Vec<f64>,
    busy: Vec<(f64, f64)>,
    addresses: Vec<String>,
    samples: usize,
    load_before: String,
    load_after: String,
}

fn report(r: &Report) {
    let mut missed = 0;
    let mut verdict = |ok: bool| {
        if !ok {
            missed += 1;
        }
        if ok {
            "PASS"
        } else {
            "FAIL"
        }
    };
    let ratio = r.makespan / r.ideal;
    println!();
    println!(
        "{:<40} {:>10} {:>12} {:>8}  {:<9} verdict",
        "benchmark", "measured", "baseline", "ratio", "goal"
    );
    println!("{}", "-".repeat(92));
    println!(
        "{:<40} {:>8.2} s {:>10.2} s {:>7.3}x  {:<9} {}",
        format!("makespan of {} trials vs ceil(K/M) x T", r.trials),
        r.makespan,
        r.ideal,
        ratio,
        format!("<= {GOAL_MAKESPAN_RATIO}x"),
        verdict(ratio <= GOAL_MAKESPAN_RATIO)
    );
    let placement_ms = median(&r.probe_pool) * 1e3;
    println!(
        "{:<40} {:>7.1} ms {:>9.1} ms {:>7.2}x  {:<9} {}",
        "placement latency, p50 (vs direct)",
        placement_ms,
        median(&r.probe_direct) * 1e3,
        median(&r.probe_pool) / median(&r.probe_direct),
        format!("< {GOAL_PLACEMENT_MS} ms"),
        verdict(placement_ms < GOAL_PLACEMENT_MS)
    );
    for (i, (frac, queued)) in r.busy.iter().enumerate() {
        println!(
            "{:<40} {:>8.1} % {:>10} {:>8}  {:<9} {}",
            format!("member {i} busy while queue not empty"),
            frac * 100.0,
            format!("{queued:.2} s"),
            "",
            format!(">= {:.0} %", GOAL_BUSY * 100.0),
            verdict(*frac >= GOAL_BUSY)
        );
    }
    println!("{}", "-".repeat(92));
    println!(
        "T = {:.3} s (mean of one trial alone through the pool: {}); directly on a member {:.3} s; \
         ceil({}/{MEMBERS}) = {} rounds; `pool_trial {} 0`",
        r.t,
        r.t_runs
            .iter()
            .map(|v| format!("{v:.3} s"))
            .collect::<Vec<_>>()
            .join(", "),
        r.t_direct,
        r.trials,
        r.rounds,
        r.iters
    );
    println!(
        "placement latency = a session's start (connect, hello, placement, the pool's link to the \
         member) to its first call served (SetWindows, then cuMemGetInfo's round trip); \
         p50/p90 through the pool {:.1}/{:.1} ms, directly on a member {:.1}/{:.1} ms; the pool \
         adds {:.1} ms at p50",
        median(&r.probe_pool) * 1e3,
        percentile(&r.probe_pool, 0.9) * 1e3,
        median(&r.probe_direct) * 1e3,
        percentile(&r.probe_direct, 0.9) * 1e3,
        (median(&r.probe_pool) - median(&r.probe_direct)) * 1e3
    );
    println!(
        "0-iteration trial under remora run (process start to exit): through the pool p50 {:.1} ms \
         ({}), directly p50 {:.1} ms ({})",
        median(&r.via_pool) * 1e3,
        ms_list(&r.via_pool),
        median(&r.direct) * 1e3,
        ms_list(&r.direct)
    );
    println!(
        "busy fraction: {} status samples every {} ms; baseline column = seconds the queue was \
         not empty; members {}",
        r.samples,
        SAMPLE_EVERY.as_millis(),
        r.addresses.join(", ")
    );
    println!(
        "load average before {} after {}",
        r.load_before, r.load_after
    );
    println!("{missed} goal(s) missed");
}

fn ms_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{:.0}", x * 1e3))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report's arithmetic on made-up samples (what `cargo test --benches` runs).
fn self_check() {
    let origin = Instant::now();
    let s = |t: f64, queue: u64, a: bool, b: bool| Sample {
        origin,
        t,
        queue,
        busy: vec![("a".into(), a), ("b".into(), b)],
    };
    // The queue is not empty from 0 to 1 s; b is idle from 0.5 to 0.75 s; after 1 s nothing counts.
    let samples = [
        s(0.0, 2, true, true),
        s(0.5, 1, true, false),
        s(0.75, 1, true, true),
        s(1.0, 0, false, false),
        s(2.0, 0, false, false),
    ];
    let f = busy_fractions(&samples, &["a".into(), "b".into()]);
    assert!(
        (f[0].0 - 1.0).abs() < 1e-9 && (f[0].1 - 1.0).abs() < 1e-9,
        "{f:?}"
    );
    assert!((f[1].0 - 0.75).abs() < 1e-9, "{f:?}");
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    let json = serde_json::json!({
        "members": [
            {"address": "x", "gpus": [{"sessions": 1}]},
            {"address": "y", "gpus": [{"sessions": 0}]},
        ],
        "queue": {"length": 3},
    });
    let one = sample(origin, 0.0, &json);
    assert_eq!(one.queue, 3);
    assert_eq!(one.busy, vec![("x".into(), true), ("y".into(), false)]);
}
