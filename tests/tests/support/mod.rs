//! Shared by the end-to-end tests: building client programs, starting real servers, running
//! programs under `remora run`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The `remora` binary and the shim, built by `.ci/run` (or `cargo build -p remora -p remora-shim`).
pub fn remora() -> PathBuf {
    let p = target_dir().join("debug/remora");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p remora -p remora-shim` first",
        p.display()
    );
    p
}

/// Built beside the shim; `remora run` preloads it for emulated GPUs.
pub fn nvjitlink_off() -> PathBuf {
    let p = target_dir().join("debug/libremora_nvjitlink_off.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p remora-nvjitlink-off` first",
        p.display()
    );
    p
}

/// Built beside the shim; `remora run` preloads the first (`libnvrtc.so.12`) for emulated GPUs
/// and links the second as `libnvrtc.so.13` into its library folder.
pub fn nvrtc_stand_ins() -> [PathBuf; 2] {
    ["libremora_nvrtc.so", "libremora_nvrtc13.so"].map(|name| {
        let p = target_dir().join("debug").join(name);
        assert!(
            p.exists(),
            "{} is missing: run `cargo build -p remora-nvrtc -p remora-nvrtc13` first",
            p.display()
        );
        p
    })
}

pub fn shim() -> PathBuf {
    let p = target_dir().join("debug/libremora_shim.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p remora -p remora-shim` first",
        p.display()
    );
    p
}

/// Variables from `.cache/cuda/env.sh` (written by `scripts/setup-cuda.sh`).
pub fn cuda_env(name: &str) -> String {
    static ENV: OnceLock<Vec<(String, String)>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let script = root().join(".cache/cuda/env.sh");
        assert!(
            script.exists(),
            "{} is missing: run scripts/setup-cuda.sh",
            script.display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && env", script.display()))
            .output()
            .expect("bash");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    });
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{name} not in env.sh"))
}

/// Builds `tests/programs/NAME.c` against CUDA 12's `cuda.h`, linked `-lcuda` against the shim.
pub fn c_program(name: &str) -> PathBuf {
    c_program_with(name, &[])
}

/// As [`c_program`], with NVRTC and cudart 12 available to link (`-lnvrtc`, `-lcudart`).
pub fn c_program_with(name: &str, libs: &[&str]) -> PathBuf {
    c_program_at(
        &root().join("tests/programs").join(format!("{name}.c")),
        libs,
    )
}

/// Builds the C program `src` (anywhere in the repository) as [`c_program_with`] does, into
/// `target/c/` under its file stem.
pub fn c_program_at(src: &Path, libs: &[&str]) -> PathBuf {
    let name = src
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("a C source file")
        .to_string();
    build_c(src, &name, libs, "CUDA12_INCLUDE", "CUDA12_LINK")
}

/// As [`c_program_with`], against CUDA 13's headers and libraries (`-lnvrtc` is NVRTC 13's),
/// into `target/c/NAME-cuda13`.
pub fn c_program_cuda13(name: &str, libs: &[&str]) -> PathBuf {
    build_c(
        &root().join("tests/programs").join(format!("{name}.c")),
        &format!("{name}-cuda13"),
        libs,
        "CUDA13_INCLUDE",
        "CUDA13_LINK",
    )
}

/// Builds `src` into `target/c/NAME`, with the headers of `include` and the libraries of `link`
/// (variables of `.cache/cuda/env.sh`), linked `-lcuda` against the shim.
fn build_c(src: &Path, name: &str, libs: &[&str], include: &str, link: &str) -> PathBuf {
    let out_dir = target_dir().join("c");
    let lib = out_dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    // Tests run in parallel processes (and threads, under `cargo test`): build under names
    // private to this process and call, then rename into place.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let pid = format!(
        "{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let tmp_link = lib.join(format!("libcuda.so.{pid}"));
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(shim(), &tmp_link).unwrap();
    std::fs::rename(&tmp_link, lib.join("libcuda.so")).unwrap();
    let exe = out_dir.join(name);
    let tmp = out_dir.join(format!("{name}.{pid}"));
    let status = Command::new("gcc")
        .args(["-O1", "-Wall", "-Wno-deprecated-declarations", "-o"])
        .arg(&tmp)
        .arg(src)
        .arg(format!("-I{}", cuda_env(include)))
        .arg(format!("-I{}", root().join("tests/programs").display()))
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-L{}", cuda_env(link)))
        .arg("-lcuda")
        .args(libs)
        .arg("-lm")
        .status()
        .expect("gcc");
    assert!(status.success(), "compiling {}", src.display());
    std::fs::rename(&tmp, &exe).unwrap();
    exe
}

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("remora-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real `remora serve` on loopback, killed on drop.
pub struct Server {
    pub child: Child,
    pub dir: TempDir,
    pub connection: PathBuf,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server on the backend `REMORA_TEST_BACKEND` names (`emulated` unless set; the GPU
    /// check sets `cuda`, so the same tests run against real GPUs).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = TempDir::new("server");
        let connection = dir.0.join("connection");
        let backend = std::env::var("REMORA_TEST_BACKEND").unwrap_or_else(|_| "emulated".into());
        let mut cmd = Command::new(remora());
        cmd.args(["serve", "--backend", &backend, "--device-memory", "1G"]);
        // `extra` may name its own address and state (a server restarted where it was).
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(&dir.0);
        }
        let child = cmd
            .args(extra)
            .arg("--connection-file")
            .arg(&connection)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting remora serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !connection.exists() {
            assert!(
                Instant::now() < deadline,
                "server did not write its connection file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            dir,
            connection,
        }
    }

    /// A copy of the connection file with one `key = value` line replaced.
    pub fn connection_with(&self, key: &str, value: &str) -> PathBuf {
        let path = self.dir.0.join(format!("connection-{key}"));
        let good = std::fs::read_to_string(&self.connection).unwrap();
        let edited: Vec<String> = good
            .lines()
            .map(|l| {
                if l.starts_with(key) {
                    format!("{key} = {value}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&path, edited.join("\n")).unwrap();
        path
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `remora run --connection` for this server.
    pub fn command(&self, prog: &Path) -> Command {
        let mut c = Command::new(remora());
        c.arg("run")
            .arg("--connection")
            .arg(&self.connection)
            .arg("--")
            .arg(prog);
        c.env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
        c
    }

    /// `prog` with the shim preloaded directly, not through `remora run`: none of the stand-ins
    /// (NVRTC, nvJitLink) that `remora run` adds on emulated GPUs.
    pub fn shim_only(&self, prog: &Path) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_PRELOAD", shim())
            .env("REMORA_CONNECTION", &self.connection)
            .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
        c
    }

    pub fn run(&self, prog: &Path, args: &[&str]) -> Output {
        self.command(prog).args(args).output().expect("remora run")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Reads lines from a child's stdout until one starts with `prefix`.
pub fn wait_line(reader: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("reading child output");
        assert!(n > 0, "child ended before printing `{prefix}`");
        if line.starts_with(prefix) {
            return line.trim().to_string();
        }
    }
}

/// Free memory of device 0 as a fresh client sees it.
pub fn free_memory(server: &Server) -> (u64, u64) {
    let o = server.run(&c_program("client_tool"), &["meminfo"]);
    let t = text(&o);
    let mut it = t.split_whitespace();
    let mut free = None;
    let mut total = None;
    while let Some(w) = it.next() {
        match w {
            "free" => free = it.next().and_then(|v| v.parse().ok()),
            "total" => total = it.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    (
        free.unwrap_or_else(|| panic!("meminfo: {t}")),
        total.unwrap_or(0),
    )
}

/// Builds `tests/programs/cuda/NAME.cu` with nvcc 13 to PTX for compute_80 (what the emulated
/// GPU runs), with static or shared cudart, and a compressed (nvcc's default) or plain fatbin.
pub fn nvcc_program(name: &str, shared_cudart: bool, compressed: bool) -> PathBuf {
    let out_dir = target_dir().join("nvcc");
    std::fs::create_dir_all(&out_dir).unwrap();
    let tag = format!(
        "{name}-{}-{}",
        if shared_cudart { "shared" } else { "static" },
        if compressed { "z" } else { "plain" }
    );
    let exe = out_dir.join(&tag);
    let tmp = out_dir.join(format!("{tag}.{}", std::process::id()));
    let src = root()
        .join("tests/programs/cuda")
        .join(format!("{name}.cu"));
    let mut cmd = Command::new(cuda_env("NVCC13"));
    cmd.args(["-arch=compute_80", "-code=compute_80", "-o"])
        .arg(&tmp)
        .arg(&src)
        // cooperative_groups includes CCCL's <nv/target>, which the nvcc 13 wheel lacks.
        .arg(format!(
            "-I{}/nvidia/cuda_cccl/include",
            cuda_env("CUDA_PY")
        ));
    if shared_cudart {
        cmd.args(["-cudart", "shared"])
            .arg(format!("-L{}", cuda_env("CUDA13_LINK")));
    }
    if !compressed {
        cmd.arg("-compress-mode=none");
    }
    let out = cmd.output().expect("nvcc");
    assert!(
        out.status.success(),
        "nvcc {}: {}",
        src.display(),
        text(&out)
    );
    std::fs::rename(&tmp, &exe).unwrap();
    exe
}

/// A pool (`remora serve --member ...`) on loopback, killed on drop.
pub struct Pool {
    pub child: Child,
    /// Holds the pool's state folder.
    pub dir: TempDir,
    pub connection: PathBuf,
}

impl Pool {
    /// A pool over `members` (connection files) with `extra` arguments; returns once every
    /// member is up.
    pub fn start(members: &[&Path], extra: &[&str]) -> Self {
        let pool = Self::spawn(|cmd| {
            for m in members {
                cmd.arg("--member").arg(m);
            }
            cmd.args(extra);
        });
        pool.wait_for(|s| {
            s["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["state"] == "up"))
        });
        pool
    }

    /// A pool whose members `configure` names; returns once it wrote its connection file.
    pub fn spawn(configure: impl FnOnce(&mut Command)) -> Self {
        let dir = TempDir::new("pool");
        let connection = dir.0.join("connection");
        let mut cmd = Command::new(remora());
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        configure(&mut cmd);
        let child = cmd
            .arg("--state-dir")
            .arg(&dir.0)
            .arg("--connection-file")
            .arg(&connection)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the pool");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !connection.exists() {
            assert!(
                Instant::now() < deadline,
                "the pool wrote no connection file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            dir,
            connection,
        }
    }

    /// `remora status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(remora())
            .args(["status", "--json", "--connection"])
            .arg(&self.connection)
            .output()
            .unwrap();
        assert!(out.status.success(), "remora status: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits (up to 20 s) until the pool's report satisfies `ok`.
    pub fn wait_for(&self, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.status();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "pool never got there: {s:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `remora run --connection POOL OPTS -- pool_trial ARGS`, output piped.
    pub fn trial(&self, args: &[&str], opts: &[&str]) -> Command {
        let mut c = Command::new(remora());
        c.arg("run")
            .arg("--connection")
            .arg(&self.connection)
            .args(opts)
            .arg("--")
            .arg(c_program("pool_trial"))
            .args(args);
        c.env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// `remora run --connection POOL --virtual-gpu M -- PROG`.
    pub fn command_virtual_gpu(&self, m: u32, prog: &Path) -> Command {
        let mut c = Command::new(remora());
        c.arg("run")
            .arg("--connection")
            .arg(&self.connection)
            .args(["--virtual-gpu", &m.to_string()])
            .arg("--")
            .arg(prog);
        c.env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
        c
    }

    /// The members the pool's sessions are on now.
    pub fn busy_members(&self) -> std::collections::BTreeSet<String> {
        self.status()["sessions"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x["member"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `remora-relay` in front of `upstream`, killed on drop; `address` is where clients send.
pub struct RelayProc {
    pub child: Child,
    pub address: String,
}

impl RelayProc {
    pub fn start(upstream: &str, extra: &[&str]) -> Self {
        let exe = target_dir().join("debug/remora-relay");
        assert!(
            exe.exists(),
            "{} is missing: run `cargo build -p remora-benches --bin remora-relay` first",
            exe.display()
        );
        let mut child = Command::new(exe)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                upstream,
                "--seed",
                "1",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting remora-relay");
        let mut out = BufReader::new(child.stdout.take().expect("relay stdout"));
        let line = wait_line(&mut out, "remora-relay listening on ");
        let address = line
            .strip_prefix("remora-relay listening on ")
            .expect("prefix")
            .to_string();
        // Keep reading (and dropping) its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Self { child, address }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's address, from its connection file.
pub fn server_address(server: &Server) -> String {
    let text = std::fs::read_to_string(&server.connection).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("address = "))
        .expect("address line")
        .trim()
        .to_string()
}

/// The pid of a descendant of `parent` whose command name is `name`.
pub fn find_child_pid(parent: u32, name: &str) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let comm = stat
                .split('(')
                .nth(1)
                .and_then(|s| s.split(')').next())
                .unwrap_or("");
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if comm == name && ppid == Some(parent) {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `remora token ARGS --tokens FILE --state-dir DIR` (the server's or pool's folder, where its
/// connection file is).
pub fn token(tokens: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(remora())
        .arg("token")
        .args(args)
        .arg("--tokens")
        .arg(tokens)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("remora token")
}

/// Adds `name` with `limits`; their connection file, written next to the server's.
pub fn add_token(tokens: &Path, state: &Path, name: &str, limits: &[&str]) -> PathBuf {
    let conn = state.join(format!("{name}.connection"));
    let server = state.join("connection");
    let mut args = vec!["add", name, "-o", conn.to_str().unwrap()];
    args.extend_from_slice(limits);
    args.extend_from_slice(&["--server-connection", server.to_str().unwrap()]);
    let o = token(tokens, state, &args);
    assert!(o.status.success(), "token add: {}", text(&o));
    conn
}

/// Waits up to `limit` for `child` to exit and returns its status; kills it and fails the test
/// if it does not.
pub fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on loopback, for `--metrics`.
pub fn metrics_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// The metrics page at `addr`, fetched over HTTP.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    page
}

/// The value of the sample `name{labels}` on a metrics page (0 when absent).
pub fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
