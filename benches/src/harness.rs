//! What the bench binaries share: the release binaries and CUDA paths they run against, C
//! programs compiled with gcc against the release shim, a `remora serve` child, temporary
//! folders and the small statistics their reports use.
//!
//! The benches (`benches/benches/transport.rs`, `pool.rs`, `distance.rs`) run the release
//! `remora` and `libremora_shim.so`, built outside them; [`Paths::find`] says which
//! `cargo build --release` to run when one is missing.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context};

/// Whether this is a full benchmark run: `cargo bench` passes `--bench`, `cargo test --benches`
/// does not (and gets a quick self-check instead).
pub fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Under `cargo test --benches` (no `--bench`), runs the bench's quick `check` and says it
/// passed, naming how to run the benchmark; true then, false in a full benchmark run.
pub fn self_check_only(bench: &str, check: impl FnOnce()) -> bool {
    if is_bench_run() {
        return false;
    }
    check();
    println!(
        "{bench} bench self-check passed (`cargo bench -p remora-benches --bench {bench}` runs the benchmark)"
    );
    true
}

/// The variable `name` from the environment as a usize, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a bench needs built before it runs, for [`Paths::find`] to check and name.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// Also `libremora_nvjitlink_off.so` (`-p remora-nvjitlink-off`).
    pub nvjitlink_off: bool,
    /// How the bench is run, for the message: `cargo bench -p remora-benches --bench pool`.
    pub run: &'static str,
}

impl Needs {
    /// The `cargo build --release` that makes what the bench needs.
    pub fn build_command(&self) -> &'static str {
        if self.nvjitlink_off {
            "cargo build --release -p remora -p remora-shim -p remora-nvjitlink-off"
        } else {
            "cargo build --release -p remora -p remora-shim"
        }
    }
}

/// The workspace, its target folder, the release binaries and the folder holding `cuda.h`.
#[derive(Clone, Debug)]
pub struct Paths {
    pub root: PathBuf,
    pub target: PathBuf,
    /// The release `remora`.
    pub remora: PathBuf,
    /// The release `libremora_shim.so`.
    pub shim: PathBuf,
    pub cuda_include: PathBuf,
    needs: Needs,
}

impl Paths {
    /// Finds the workspace and the release binaries `needs` names (an error naming the build
    /// to run when one is missing), and `cuda.h` as [`cuda_include`] does.
    pub fn find(needs: Needs, setup_cuda: SetupCuda) -> anyhow::Result<Self> {
        let root = workspace_root()?;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let target = if target.is_relative() {
            root.join(target)
        } else {
            target
        };
        let remora = target.join("release/remora");
        let shim = target.join("release/libremora_shim.so");
        let mut built = vec![&remora, &shim];
        let jitlink = target.join("release/libremora_nvjitlink_off.so");
        if needs.nvjitlink_off {
            built.push(&jitlink);
        }
        for p in built {
            ensure!(
                p.exists(),
                "{} is missing: run `{}` before `{}`",
                p.display(),
                needs.build_command(),
                needs.run
            );
        }
        let cuda_include = cuda_include(&root, setup_cuda)?;
        Ok(Self {
            root,
            target,
            remora,
            shim,
            cuda_include,
            needs,
        })
    }

    /// The release binaries are built outside the benches; says so on stderr when the sources
    /// are newer.
    pub fn warn_if_stale(&self) {
        fn newest(dir: &Path, acc: &mut Option<SystemTime>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    newest(&p, acc);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                        *acc = Some(acc.map_or(m, |a| a.max(m)));
                    }
                }
            }
        }
        let mut src = None;
        for d in [
            "shim/src",
            "server/src",
            "protocol/src",
            "transport/src",
            "pool/src",
            "cli/src",
        ] {
            newest(&self.root.join(d), &mut src);
        }
        let oldest_bin = [&self.remora, &self.shim]
            .iter()
            .filter_map(|p| p.metadata().and_then(|m| m.modified()).ok())
            .min();
        if let (Some(src), Some(bin)) = (src, oldest_bin) {
            if src > bin {
                eprintln!(
                    "warning: sources are newer than the release binaries; rerun `{}`",
                    self.needs.build_command()
                );
            }
        }
    }

    /// Compiles the C program `src` with gcc (`flags`, then `-I` the CUDA headers), linked
    /// `-lcuda -lm` against the release shim, into `target/<folder>/<its stem>`.
    pub fn compile_c(&self, src: &Path, folder: &str, flags: &[&str]) -> anyhow::Result<PathBuf> {
        self.compile_c_linked(src, folder, flags, &[])
    }

    /// As [`Paths::compile_c`], with `libs` (`-L...`, `-l...`) after the source.
    pub fn compile_c_linked(
        &self,
        src: &Path,
        folder: &str,
        flags: &[&str],
        libs: &[String],
    ) -> anyhow::Result<PathBuf> {
        let dir = self.target.join(folder);
        let lib = dir.join("lib");
        std::fs::create_dir_all(&lib)?;
        // Linked under a name of this process's own, then renamed: another bench building at
        // the same time never sees the link missing.
        let tmp_link = lib.join(format!("libcuda.so.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&self.shim, &tmp_link)?;
        std::fs::rename(&tmp_link, lib.join("libcuda.so"))?;
        let name = src
            .file_stem()
            .with_context(|| format!("{} names no program", src.display()))?;
        let out = dir.join(name);
        let status = Command::new("gcc")
            .args(flags)
            .arg("-I")
            .arg(&self.cuda_include)
            .arg(src)
            .arg("-o")
            .arg(&out)
            .arg("-L")
            .arg(&lib)
            .args(libs)
            .args(["-lcuda", "-lm"])
            .status()
            .context("running gcc")?;
        ensure!(
            status.success(),
            "gcc could not compile {} ({status})",
            src.display()
        );
        Ok(out)
    }
}

/// The workspace root: the folder above `benches/`.
pub fn workspace_root() -> anyhow::Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("benches/ has no parent")?
        .to_path_buf())
}

/// A variable `.cache/cuda/env.sh` exports (the file `scripts/setup-cuda.sh` writes), as a path.
pub fn cuda_env(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let env_sh = root.join(".cache/cuda/env.sh");
    let text = std::fs::read_to_string(&env_sh)
        .with_context(|| format!("{} is missing: run scripts/setup-cuda.sh", env_sh.display()))?;
    let prefix = format!("export {name}=");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .map(|v| PathBuf::from(v.trim().trim_matches(|c| c == '\'' || c == '"')))
        .with_context(|| {
            format!(
                "{name} is not in {}: run scripts/setup-cuda.sh",
                env_sh.display()
            )
        })
}

/// What [`cuda_include`] does when `cuda.h` is not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupCuda {
    /// Runs `scripts/setup-cuda.sh` (idempotent) and looks again.
    Run,
    /// Fails, asking for `scripts/setup-cuda.sh`.
    Ask,
}

/// The folder holding `cuda.h`: $CUDA12_INCLUDE, else the one `.cache/cuda/env.sh` names.
pub fn cuda_include(root: &Path, setup: SetupCuda) -> anyhow::Result<PathBuf> {
    let has_header = |p: &Path| p.join("cuda.h").exists();
    if let Some(p) = std::env::var_os("CUDA12_INCLUDE")
        .map(PathBuf::from)
        .filter(|p| has_header(p))
    {
        return Ok(p);
    }
    let from_env_sh = || -> anyhow::Result<PathBuf> {
        let p = cuda_env(root, "CUDA12_INCLUDE")?;
        ensure!(
            has_header(&p),
            "{} has no cuda.h: run scripts/setup-cuda.sh",
            p.display()
        );
        Ok(p)
    };
    match from_env_sh() {
        Ok(p) => Ok(p),
        Err(e) if setup == SetupCuda::Ask => Err(e),
        Err(_) => {
            eprintln!("CUDA headers not found; running scripts/setup-cuda.sh");
            let status = Command::new("bash")
                .arg("scripts/setup-cuda.sh")
                .current_dir(root)
                .status()?;
            ensure!(status.success(), "scripts/setup-cuda.sh failed ({status})");
            from_env_sh().context("scripts/setup-cuda.sh ran, but cuda.h is still not found")
        }
    }
}

/// A new empty folder under the system's temporary folder, `remora-bench-TAG-PID-N`.
pub fn tempdir(tag: &str) -> anyhow::Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "remora-bench-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A folder removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new one, as [`tempdir`] makes it.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        tempdir(tag).map(Self)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A release `remora serve --listen 127.0.0.1:0` child with its state folder and connection
/// file, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The address its connection file names.
    pub addr: SocketAddr,
    pub connection: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// Starts `remora serve --listen 127.0.0.1:0 ARGS` with `env` added to its environment and
    /// returns once its connection file names an address (within 20 s). `tag` names it in
    /// errors and in its folder's name.
    pub fn start<I, S>(
        paths: &Paths,
        tag: &str,
        args: I,
        env: &[(String, String)],
    ) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let dir = TempDir::new(tag)?;
        let connection = dir.0.join("connection");
        let child = Command::new(&paths.remora)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--state-dir")
            .arg(&dir.0)
            .arg("--connection-file")
            .arg(&connection)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting remora serve ({tag})"))?;
        let mut server = Self {
            child,
            addr: "0.0.0.0:0".parse()?,
            connection,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("remora serve ({tag}) exited before it was ready ({status})");
            }
            // The file is written in one go; read it until it names an address.
            let text = std::fs::read_to_string(&server.connection).unwrap_or_default();
            if let Some(a) = text
                .lines()
                .find_map(|l| l.strip_prefix("address = "))
                .and_then(|a| a.trim().parse().ok())
            {
                server.addr = a;
                return Ok(server);
            }
            ensure!(
                Instant::now() < deadline,
                "remora serve ({tag}) wrote no connection file within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `key value` lines of a program's output whose value is a number; other lines are
/// passed over.
pub fn key_values(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them, else `?`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The arithmetic mean (NaN for none).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The nearest-rank percentile, `p` in 0..=1 (NaN for none).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)]
}

/// The median, the mean of the middle two for an even count (NaN for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(percentile(&[4.0, 1.0, 2.0, 3.0], 0.5), 3.0);
        assert_eq!(percentile(&[5.0, 1.0], 0.99), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
    }

    #[test]
    fn key_values_keeps_numeric_pairs() {
        let v =
            key_values("rtt_us_p50 12.5\nnoise\nbulk_copy ok\nsteps 3 launches_per_step 20 ok\n");
        assert_eq!(v.len(), 2);
        assert_eq!(v["rtt_us_p50"], 12.5);
        assert_eq!(v["steps"], 3.0);
    }

    #[test]
    fn build_command_names_what_is_needed() {
        let n = Needs {
            nvjitlink_off: true,
            run: "cargo bench -p remora-benches --bench pool",
        };
        assert!(n.build_command().ends_with("-p remora-nvjitlink-off"));
        let n = Needs {
            nvjitlink_off: false,
            ..n
        };
        assert_eq!(
            n.build_command(),
            "cargo build --release -p remora -p remora-shim"
        );
    }

    #[test]
    fn temp_dirs_are_removed_on_drop() {
        let d = TempDir::new("selftest").unwrap();
        let p = d.0.clone();
        assert!(p.is_dir());
        drop(d);
        assert!(!p.exists());
    }
}
