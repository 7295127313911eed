//! Virtual GPU benchmark: one virtual GPU over M = 2 one-thread emulated members
//! (`remora run --virtual-gpu 2` through a pool), against one such member alone (an ordinary
//! session through the same pool), in the same run, on three kernels of
//! `tests/programs/split_kernels.c` (compiled by NVRTC at run time):
//!
//! 1. a tiled SGEMM of 512 x 512 (compute-bound, provably splittable): goal >= 1.8x on the
//!    kernel time and >= 1.5x end to end (copies in, every launch, the copy out);
//! 2. saxpy over 4 Mi floats (memory-bound): goal >= 0.95x (the timing model declines to split
//!    when the copies would cost more than the kernel saves);
//! 3. a histogram with global atomics (never split): goal >= 0.95x.
//!
//! Each workload runs ITERS launches after one warm-up launch (which the virtual GPU runs
//! whole, to time it); the kernel time is the mean launch after the warm-up, the end-to-end
//! time everything from the first copy in to the last copy out. It also prints the share of
//! the PTX corpus's kernels (`emulator/tests/ptx*`: NVRTC, numba, CuPy) proven splittable, with the reasons for
//! the rest.
//!
//! ```text
//! cargo build --release -p remora -p remora-shim -p remora-nvjitlink-off
//! cargo bench -p remora-benches --bench virtual_gpu
//! ```
//!
//! `cargo test -p remora-benches --benches` runs only the corpus count.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use remora_benches::harness::{self, env_usize, loadavg, Paths, Server, SetupCuda};

const MEMBERS: usize = 2;

struct Workload {
    kernel: &'static str,
    n: usize,
    iters: usize,
    goal_kernel: f64,
    goal_total: f64,
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            kernel: "sgemm",
            n: env_usize("REMORA_BENCH_VGPU_N", 512),
            iters: env_usize("REMORA_BENCH_VGPU_ITERS", 4),
            goal_kernel: 1.8,
            goal_total: 1.5,
        },
        Workload {
            kernel: "saxpy",
            n: 4 << 20,
            iters: 10,
            goal_kernel: 0.95,
            goal_total: 0.95,
        },
        Workload {
            kernel: "atomics",
            n: 4 << 20,
            iters: 10,
            goal_kernel: 0.95,
            goal_total: 0.95,
        },
    ]
}

fn main() -> anyhow::Result<()> {
    if harness::self_check_only("virtual_gpu", || {
        corpus_share().expect("the corpus share");
    }) {
        return Ok(());
    }
    let paths = Paths::find(
        harness::Needs {
            nvjitlink_off: true,
            run: "cargo bench -p remora-benches --bench virtual_gpu",
        },
        SetupCuda::Ask,
    )?;
    paths.warn_if_stale();
    let link = harness::cuda_env(&paths.root, "CUDA12_LINK")?;
    let lib = harness::cuda_env(&paths.root, "CUDA12_LIB")?;
    let inc = paths.root.join("tests/programs");
    let prog = paths.compile_c_linked(
        &paths.root.join("tests/programs/split_kernels.c"),
        "bench-vgpu",
        &[
            "-O2",
            "-Wall",
            "-Wno-deprecated-declarations",
            "-I",
            inc.to_str().context("path")?,
        ],
        &[format!("-L{}", link.display()), "-lnvrtc".into()],
    )?;
    let members: Vec<Server> = (0..MEMBERS)
        .map(|i| {
            Server::start(
                &paths,
                &format!("member{i}"),
                [
                    "--backend",
                    "emulated",
                    "--threads",
                    "1",
                    "--device-memory",
                    "2G",
                ],
                &[],
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let mut args: Vec<&OsStr> = vec![];
    for m in &members {
        args.extend([OsStr::new("--member"), m.connection.as_os_str()]);
    }
    let pool = Server::start(&paths, "pool", args, &[])?;
    wait_up(&paths, &pool.connection, MEMBERS)?;
    println!(
        "remora virtual GPU benchmark: M = {MEMBERS} one-thread emulated members behind one pool, \
         against one of them alone through the same pool; {} CPUs, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let run = |vgpu: bool, w: &Workload| -> anyhow::Result<(f64, f64)> {
        let mut c = Command::new(&paths.remora);
        c.arg("run").arg("--connection").arg(&pool.connection);
        if vgpu {
            c.args(["--virtual-gpu", &MEMBERS.to_string()]);
        }
        c.arg("--")
            .arg(&prog)
            .args([w.kernel.to_string(), w.n.to_string(), w.iters.to_string()])
            .env("REMORA_SHIM", &paths.shim)
            .env("LD_LIBRARY_PATH", &lib)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = c.output().context("remora run")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.status.success() && text.contains("split_kernels: all passed"),
            "{} ({}) failed:\n{text}",
            w.kernel,
            if vgpu { "virtual GPU" } else { "one member" }
        );
        let line = text
            .lines()
            .find(|l| l.starts_with(w.kernel) && l.contains("kernel_ms"))
            .context("no timing line")?;
        let value = |key: &str| -> anyhow::Result<f64> {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| *w == key)
                .context("no such key")?;
            Ok(words.get(at + 1).context("no value")?.parse()?)
        };
        Ok((value("kernel_ms")?, value("total_ms")?))
    };
    let mut rows = Vec::new();
    for w in workloads() {
        println!("measuring {} n={} x{} ...", w.kernel, w.n, w.iters);
        let one = run(false, &w)?;
        let split = run(true, &w)?;
        println!(
            "  one member: kernel {:.1} ms, total {:.1} ms; virtual GPU: kernel {:.1} ms, total {:.1} ms",
            one.0, one.1, split.0, split.1
        );
        rows.push((w, one, split));
    }
    let (share, total, reasons) = corpus_share()?;
    println!();
    println!(
        "{:<10} {:>12} {:>12} {:>8} {:>6}   {:>12} {:>12} {:>8} {:>6}",
        "kernel",
        "kernel 1 ms",
        "kernel vGPU",
        "ratio",
        "goal",
        "total 1 ms",
        "total vGPU",
        "ratio",
        "goal"
    );
    let mut missed = Vec::new();
    for (w, (k1, t1), (k2, t2)) in &rows {
        let (rk, rt) = (k1 / k2, t1 / t2);
        println!(
            "{:<10} {:>12.1} {:>12.1} {:>7.2}x {:>5.2}x   {:>12.1} {:>12.1} {:>7.2}x {:>5.2}x",
            w.kernel, k1, k2, rk, w.goal_kernel, t1, t2, rt, w.goal_total
        );
        if rk < w.goal_kernel {
            missed.push(format!(
                "{} kernel {rk:.2}x < {:.2}x",
                w.kernel, w.goal_kernel
            ));
        }
        if rt < w.goal_total {
            missed.push(format!(
                "{} end to end {rt:.2}x < {:.2}x",
                w.kernel, w.goal_total
            ));
        }
    }
    println!();
    println!(
        "corpus: {share} of {total} kernels proven splittable ({:.0} %)",
        100.0 * share as f64 / total.max(1) as f64
    );
    for (why, n) in &reasons {
        println!("  {n:>3} not splittable: {why}");
    }
    println!("load after: {}", loadavg());
    if missed.is_empty() {
        println!("all goals met");
    } else {
        println!("goals missed: {}", missed.join("; "));
    }
    Ok(())
}

/// Waits until the pool reports `n` members up.
fn wait_up(paths: &Paths, conn: &Path, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(&paths.remora)
            .args(["status", "--json", "--connection"])
            .arg(conn)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.matches("\"state\":\"up\"").count() >= n {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "members not up: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kernels of the PTX corpus proven splittable, of all, and why the others are not (the
/// reason without its line number, counted).
fn corpus_share() -> anyhow::Result<(usize, usize, BTreeMap<String, usize>)> {
    let root = harness::workspace_root()?;
    let (mut yes, mut all) = (0, 0);
    let mut reasons = BTreeMap::new();
    for dir in ["ptx", "ptx13", "ptx_numba", "ptx_cupy"] {
        let d = root.join("emulator/tests").join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .with_context(|| d.display().to_string())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)?;
            for (_, a) in remora_emulator::footprint::analyze_ptx(&text) {
                all += 1;
                match a {
                    remora_emulator::footprint::Analysis::Splittable(_) => yes += 1,
                    remora_emulator::footprint::Analysis::NotSplittable(why) => {
                        let general = why.split(" at line").next().unwrap_or(&why).to_string();
                        *reasons.entry(general).or_default() += 1;
                    }
                }
            }
        }
    }
    Ok((yes, all, reasons))
}
