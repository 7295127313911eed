//! Round trips at a distance: programs run through `remora-relay` at 2 ms each way (4 ms round
//! trip, so these stay quick), and their `REMORA_STATS=1` counts are pinned. The programs are the
//! distance benchmark's own (`benches/programs/step_loop.c`, `step_cupy.py`), so what the
//! benchmark measures is what these guard. A relay that drops everything must make the program
//! fail with a clear error, not hang.
//!
//! The relay is the debug `remora-relay` binary (`cargo build -p remora-benches --bin
//! remora-relay`; `cargo nextest run --workspace` builds it with the relay's own tests).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// One way; the round trip is twice this.
const DELAY_MS: &str = "2";

/// Start-up round trips of `step_loop` before its steps, as counted by the shim: the first
/// result's 4-byte MemcpyDtoH. Everything else is queued or answered locally: cuInit,
/// cuDeviceGet, cuCtxCreate and the session's SetWindows travel with the next round trip, the
/// module load is posted (the shim reads the PTX's kernels itself), cuMemAlloc is placed by the
/// shim inside the server's memory lease, cuModuleGetFunction is answered from what the shim
/// read, and the launches and the cuMemsetD32 are queued. (The QUIC and session handshakes,
/// and `remora run`'s probe of the server, are not calls and are not counted here.)
const STEP_LOOP_STARTUP_ROUND_TRIPS: u64 = 1;

/// A server, a relay in front of it, and a connection file that names the relay.
struct Distant {
    server: Server,
    relay: RelayProc,
    connection: PathBuf,
}

impl Distant {
    fn start(relay_args: &[&str]) -> Self {
        let server = Server::start();
        let relay = RelayProc::start(&server_address(&server), relay_args);
        let connection = server.connection_with("address", &relay.address);
        Self {
            server,
            relay,
            connection,
        }
    }

    fn command(&self, prog: &Path) -> Command {
        let mut c = Command::new(remora());
        c.arg("run")
            .arg("--connection")
            .arg(&self.connection)
            .arg("--")
            .arg(prog);
        c.env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
        c
    }
}

/// `benches/programs/step_loop.c`, built as [`c_program`] builds the tests' own programs.
fn step_loop() -> PathBuf {
    c_program_at(&root().join("benches/programs/step_loop.c"), &[])
}

/// Runs `cmd` to its end, failing the test if it takes longer than `limit` (a hang).
fn output_within(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("remora run");
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let read = |r: Option<Box<dyn std::io::Read + Send>>| {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        };
        let out = std::thread::spawn(move || read(stdout.map(|s| Box::new(s) as _)));
        let err = read(stderr.map(|s| Box::new(s) as _));
        let status = child.wait().expect("wait");
        let _ = done.send(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err,
        });
    });
    match wait.recv_timeout(limit) {
        Ok(out) => (out, start.elapsed()),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("`remora run` (pid {pid}) still running after {limit:?}: it hangs");
        }
    }
}

/// The shim's round trips (total, and by call) from its `remora: stats:` lines.
fn round_trips(out: &Output) -> (u64, String) {
    let all = text(out);
    assert!(out.status.success(), "{all}");
    let total = all
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("remora: stats: ")?;
            let (_, after) = rest.split_once(" asynchronous calls, ")?;
            after.split_once(" round trips")?.0.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `remora: stats:` totals in:\n{all}"));
    let by_call = all
        .lines()
        .find_map(|l| l.strip_prefix("remora: stats: round trips by call: "))
        .unwrap_or("")
        .to_string();
    (total, by_call)
}

#[test]
fn the_c_step_loop_costs_one_round_trip_per_step_through_the_relay() {
    let d = Distant::start(&["--delay-ms", DELAY_MS]);
    let prog = step_loop();
    for (k, steps) in [(20u64, 10u64), (200, 5)] {
        let mut cmd = d.command(&prog);
        cmd.args([k.to_string(), "0".into(), steps.to_string()])
            .env("REMORA_STATS", "1");
        let (out, _) = output_within(cmd, Duration::from_secs(60));
        let (total, by_call) = round_trips(&out);
        // Every launch is queued; the step's 4-byte copy back is its one round trip.
        assert_eq!(
            total,
            steps + STEP_LOOP_STARTUP_ROUND_TRIPS,
            "K = {k}, {steps} steps: round trips by call: {by_call}\n{}",
            text(&out)
        );
        assert!(
            by_call.contains(&format!("MemcpyDtoH {}", steps + 1)),
            "K = {k}: {by_call}"
        );
        assert!(
            !by_call.contains("ModuleLoad"),
            "K = {k}: the module load is not waited for: {by_call}"
        );
        assert!(text(&out).contains(&format!("steps {steps} launches_per_step {k} ok")));
    }
}

#[test]
fn a_cupy_step_costs_at_most_one_round_trip_after_warm_up() {
    nvjitlink_off();
    let d = Distant::start(&["--delay-ms", DELAY_MS]);
    // As tests/tests/python_clients.rs runs CuPy: NVRTC needs the headers under $CUDA_PATH.
    let cuda_path = target_dir().join("cuda-path");
    std::fs::create_dir_all(&cuda_path).unwrap();
    let include = cuda_path.join("include");
    if std::fs::symlink_metadata(&include).is_err() {
        let _ = std::os::unix::fs::symlink(cuda_env("CUDA12_INCLUDE"), &include);
    }
    let run = |steps: u64| {
        let mut cmd = d.command(Path::new("python3"));
        cmd.arg(root().join("tests/python/run_site.py"))
            .arg(cuda_env("CUDA_PY"))
            .arg(root().join("benches/programs/step_cupy.py"))
            .args(["3".to_string(), steps.to_string()])
            .env("REMORA_STATS", "1")
            .env("CUDA_PATH", &cuda_path)
            .env(
                "LD_LIBRARY_PATH",
                format!(
                    "{}:{}/nvidia/nvjitlink/lib",
                    cuda_env("CUDA12_LIB"),
                    cuda_env("CUDA_PY")
                ),
            )
            .env("CUPY_CACHE_DIR", target_dir().join("cupy-cache"));
        let (out, _) = output_within(cmd, Duration::from_secs(240));
        assert!(
            text(&out).contains(&format!("steps {steps} kernels_per_step 20 ok")),
            "{}",
            text(&out)
        );
        round_trips(&out)
    };
    // Both runs start up and warm up alike (3 steps): the difference is 10 steps' worth.
    let (short, short_calls) = run(5);
    let (long, long_calls) = run(15);
    assert!(
        long >= short && long - short <= 10,
        "10 more steps cost {} round trips (want at most 10): 5 steps: {short} ({short_calls}); \
         15 steps: {long} ({long_calls})",
        long as i64 - short as i64
    );
}

#[test]
fn a_relay_that_loses_everything_fails_the_program_with_a_clear_error() {
    let d = Distant::start(&["--delay-ms", DELAY_MS, "--loss", "1"]);
    let prog = step_loop();
    let mut cmd = d.command(&prog);
    cmd.args(["20", "0", "1"]);
    // `remora run` gives its probe of the server 5 s, the shim its connection 10 s.
    let (out, took) = output_within(cmd, Duration::from_secs(60));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("cannot connect to the Remora server") && t.contains(&d.relay.address),
        "the error should say which server could not be reached: {t}"
    );
    // The connection is made at the first call that needs the server (cuDeviceGet today);
    // that call fails, CUDA_ERROR_DEVICE_UNAVAILABLE, and the program says so.
    assert!(
        t.contains("step_loop: cu") && t.contains("failed: 46"),
        "{t}"
    );
    assert!(
        took < Duration::from_secs(30),
        "failing took {took:?}, beyond the connect timeouts"
    );
    drop(d.server);
}

/// Connects once to the server the connection file names, through the relay.
fn connect_once(rt: &tokio::runtime::Runtime, file: &Path) -> remora_transport::client::Connected {
    let file = remora_protocol::ConnectionFile::read(file).expect("connection file");
    rt.block_on(remora_transport::client::connect(
        &file,
        &Default::default(),
        Duration::from_secs(10),
        |_| {},
    ))
    .expect("connect")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A process that connects again (a pool's link to a member for each session) resumes its TLS
/// session and sends its hello with the first flight: one round trip, not two. A server that
/// restarted knows no ticket: the early hello is refused, sent again, and the session starts.
#[test]
fn a_second_connection_sends_its_hello_as_0rtt_and_a_restarted_server_still_takes_it() {
    let mut d = Distant::start(&["--delay-ms", DELAY_MS]);
    let rt = runtime();
    let first = connect_once(&rt, &d.connection);
    assert!(
        !first.zero_rtt,
        "a first connection has no ticket to resume"
    );
    assert!(!first.info.devices.is_empty());
    // The server's session tickets follow its handshake; give them a moment to arrive.
    std::thread::sleep(Duration::from_millis(200));
    let second = connect_once(&rt, &d.connection);
    assert!(
        second.zero_rtt,
        "the second connection did not resume with 0-RTT"
    );
    assert_eq!(second.info.devices.len(), first.info.devices.len());
    drop((first, second));

    // The same identity (state folder) and address, a new process: the tickets are unknown.
    let listen = server_address(&d.server);
    let state = d.server.dir.0.clone();
    d.server.kill();
    let _restarted =
        Server::start_with(&["--listen", &listen, "--state-dir", state.to_str().unwrap()]);
    let third = connect_once(&rt, &d.connection);
    assert!(
        !third.zero_rtt,
        "a restarted server cannot have accepted an old ticket"
    );
    assert!(!third.info.devices.is_empty());
}
