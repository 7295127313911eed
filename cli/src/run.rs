//! `remora run`: a command with the shim as its CUDA driver.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

#[derive(Args)]
pub struct RunArgs {
    /// Connection file of the server to use. Without one (and without $REMORA_CONNECTION) an
    /// embedded emulated server runs on loopback for the life of the command.
    #[arg(long)]
    connection: Option<PathBuf>,
    /// Emulated devices of the embedded server.
    #[arg(long, default_value_t = 1)]
    devices: u32,
    /// Memory of each emulated device of the embedded server.
    #[arg(long, default_value = "4G")]
    device_memory: String,
    /// GPUs this session asks for (a pool places it on that many GPUs of one member).
    #[arg(long)]
    gpus: Option<u32>,
    /// Device memory this session may hold, all GPUs together (e.g. 2G): a quota the server
    /// enforces and a pool reserves.
    #[arg(long)]
    memory: Option<String>,
    /// Seconds to wait in a pool's queue for GPUs before failing with CUDA_ERROR_NO_DEVICE.
    #[arg(long)]
    queue_timeout: Option<f64>,
    /// One virtual GPU backed by this many of a pool's members: launches that provably split
    /// run on all of them, the rest on one (needs `--connection` to a pool).
    #[arg(long, value_name = "M")]
    virtual_gpu: Option<u32>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

/// The shim library: $REMORA_SHIM, or beside this executable.
fn shim_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("REMORA_SHIM") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no folder")?;
    for cand in [
        dir.join("libremora_shim.so"),
        dir.join("../lib/libremora_shim.so"),
    ] {
        if cand.exists() {
            return Ok(cand.canonicalize()?);
        }
    }
    bail!(
        "cannot find libremora_shim.so beside {}; set REMORA_SHIM",
        exe.display()
    )
}

/// An embedded emulated server in its own process, stopped when dropped.
struct Embedded {
    child: Child,
    dir: PathBuf,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_embedded(args: &RunArgs) -> anyhow::Result<(Embedded, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("remora-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let conn = dir.join("connection");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--backend", "emulated"])
        .arg("--devices")
        .arg(args.devices.to_string())
        .arg("--device-memory")
        .arg(&args.device_memory)
        .arg("--state-dir")
        .arg(&dir)
        .arg("--connection-file")
        .arg(&conn)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // A process group of its own: a terminal's Ctrl-C goes to the command, which may outlive
    // it (Python finishes its CUDA call first), not to the server the command is using. The
    // server ends with `remora run` (below, and when `Embedded` drops).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to stop the server when
        // this process dies, so an interrupted `remora run` leaves no server behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let child = cmd.spawn().context("starting the embedded server")?;
    let mut embedded = Embedded { child, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !conn.exists() {
        if let Some(status) = embedded.child.try_wait()? {
            bail!("the embedded server exited before it was ready ({status})");
        }
        if Instant::now() > deadline {
            bail!("the embedded server did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((embedded, conn))
}

/// A folder with `libcuda.so` and `libcuda.so.1` naming the shim, for programs that dlopen
/// the unversioned name or an absolute-free path search; `extra` links (name, target) beside them.
fn link_dir(
    shim: &Path,
    nvml: Option<&Path>,
    extra: &[(&str, &Path)],
    base: &Path,
) -> anyhow::Result<PathBuf> {
    let dir = base.join("lib");
    std::fs::create_dir_all(&dir)?;
    let nvml = nvml
        .into_iter()
        .flat_map(|n| [("libnvidia-ml.so", n), ("libnvidia-ml.so.1", n)]);
    for (name, target) in [("libcuda.so", shim), ("libcuda.so.1", shim)]
        .into_iter()
        .chain(nvml)
        .chain(extra.iter().copied())
    {
        let l = dir.join(name);
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(target, &l)?;
    }
    Ok(dir)
}

/// `values`, then the variable's current value, joined with `:`.
fn prepend(var: &str, values: &[&Path]) -> OsString {
    let old = std::env::var_os(var).filter(|o| !o.is_empty());
    let parts: Vec<OsString> = values
        .iter()
        .map(|v| v.as_os_str().to_owned())
        .chain(old)
        .collect();
    parts.join(std::ffi::OsStr::new(":"))
}

/// Whether the server offers emulated GPUs: as its connection file says, else asked with a
/// handshake (false if it cannot be reached: the application will then report the failure).
fn serves_emulated(conn: &Path) -> bool {
    let Ok(file) = remora_protocol::ConnectionFile::read(conn) else {
        return false;
    };
    // The server said so in its connection file: no need to ask it (round trips at start-up).
    if let Some(emulated) = file.emulated {
        return emulated;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        let observer = remora_protocol::messages::SessionRequest {
            observer: true,
            ..Default::default()
        };
        match remora_transport::client::connect(&file, &observer, Duration::from_secs(5), |_| {})
            .await
        {
            Ok(c) => {
                c.conn.close(0u32.into(), b"probe");
                c.info.devices.iter().any(|d| d.emulated)
            }
            Err(_) => false,
        }
    })
}

/// What CUDA clients need to be told to run on the emulated GPU, which executes PTX only:
/// CuPy must compile kernels to PTX rather than machine code, and must not use CUB, whose
/// prebuilt module carries PTX only for compute_100. A value the user set wins.
const EMULATED_ENV: &[(&str, &str)] = &[("CUPY_COMPILE_WITH_PTX", "1"), ("CUPY_ACCELERATORS", "")];

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let shim = shim_path()?;
    let given = args
        .connection
        .clone()
        .or_else(|| std::env::var_os("REMORA_CONNECTION").map(PathBuf::from));
    let (embedded, conn) = match given {
        Some(c) => (None, c),
        None => {
            let (e, c) = start_embedded(&args)?;
            (Some(e), c)
        }
    };
    let conn = conn
        .canonicalize()
        .with_context(|| format!("connection file {}", conn.display()))?;
    let links_base = match &embedded {
        Some(e) => e.dir.clone(),
        None => {
            let d = std::env::temp_dir().join(format!("remora-run-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            d
        }
    };
    let emulated = embedded.is_some() || serves_emulated(&conn);
    // The NVML stand-in answers for the session's GPUs beside the shim, under NVML's names.
    let nvml = Some(shim.with_file_name("libremora_nvml.so")).filter(|p| p.exists());
    let beside = |name: &str| Some(shim.with_file_name(name)).filter(|p| emulated && p.exists());
    // Compilers and linkers that emit machine code are of no use to an emulated GPU, which runs
    // PTX only. nvJitLink: a stand-in that links PTX into PTX (numba-cuda, cuda-core). NVRTC:
    // NVIDIA's, forwarded to, except that a cubin asked for (--gpu-architecture=sm_XY, then
    // nvrtcGetCUBIN) is the PTX. Both are preloaded, which is how
    // cuda-pathfinder (it takes a library already loaded) and programs linked against them find
    // them. NVRTC 13's stand-in is not preloaded: cuda-pathfinder asks for libnvrtc.so.13
    // before libnvrtc.so.12, and would hand it to CUDA 12 clients too; it is in the links'
    // folder, on LD_LIBRARY_PATH, where programs linked against NVRTC 13 look for it.
    let no_jitlink = beside("libremora_nvjitlink_off.so");
    let nvrtc = beside("libremora_nvrtc.so");
    let nvrtc13 = beside("libremora_nvrtc13.so");
    let extra: Vec<(&str, &Path)> = nvrtc13
        .as_deref()
        .map(|p| ("libnvrtc.so.13", p))
        .into_iter()
        .collect();
    let libs = link_dir(&shim, nvml.as_deref(), &extra, &links_base)?;
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .env("REMORA_CONNECTION", &conn)
        .env("LD_LIBRARY_PATH", prepend("LD_LIBRARY_PATH", &[&libs]));
    let mut preload = vec![shim.as_path()];
    preload.extend(nvml.as_deref());
    if emulated {
        for (k, v) in EMULATED_ENV {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
    }
    preload.extend(no_jitlink.as_deref());
    preload.extend(nvrtc.as_deref());
    if let Some(g) = args.gpus {
        cmd.env("REMORA_GPUS", g.to_string());
    }
    if let Some(m) = &args.memory {
        crate::serve::parse_size(m).map_err(|e| anyhow::anyhow!("--memory: {e}"))?;
        cmd.env("REMORA_MEMORY", m);
    }
    if let Some(t) = args.queue_timeout {
        cmd.env("REMORA_QUEUE_TIMEOUT", t.to_string());
    }
    if let Some(m) = args.virtual_gpu {
        cmd.env("REMORA_VIRTUAL_GPU", m.to_string());
    }
    cmd.env("LD_PRELOAD", prepend("LD_PRELOAD", &preload));
    let status = {
        let _interrupts = Interrupts::left_to(&mut cmd);
        cmd.status()
    }
    .with_context(|| format!("running {:?}", args.command[0]))?;
    // The embedded server's folder holds the links too; otherwise they had a folder of their own.
    if embedded.is_none() {
        let _ = std::fs::remove_dir_all(&links_base);
    }
    drop(embedded);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// While the command runs, `remora run` ignores SIGINT and SIGQUIT, as `system(3)` does: a
/// Ctrl-C reaches the whole foreground process group, and the command decides what it means
/// (Python raises `KeyboardInterrupt` when its CUDA call returns). Were `remora run` to die at
/// once, its embedded server would go with it and the command's call in flight would fail
/// with `CUDA_ERROR_DEVICE_UNAVAILABLE` instead. The command itself starts with the
/// dispositions `remora run` was given.
struct Interrupts {
    int: libc::sighandler_t,
    quit: libc::sighandler_t,
}

impl Interrupts {
    fn left_to(cmd: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: `signal` with SIG_IGN installs no handler code; it returns the previous
        // disposition (SIG_DFL or SIG_IGN: this process installs no handler of its own).
        let (int, quit) = unsafe {
            (
                libc::signal(libc::SIGINT, libc::SIG_IGN),
                libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            )
        };
        // SAFETY: between fork and exec the closure only calls `signal`, which is
        // async-signal-safe, with dispositions that need no handler in this process.
        unsafe {
            cmd.pre_exec(move || {
                libc::signal(libc::SIGINT, int);
                libc::signal(libc::SIGQUIT, quit);
                Ok(())
            })
        };
        Self { int, quit }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        // SAFETY: restores the dispositions `left_to` found.
        unsafe {
            libc::signal(libc::SIGINT, self.int);
            libc::signal(libc::SIGQUIT, self.quit);
        }
    }
}
