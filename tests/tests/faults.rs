//! Faults an operator meets: the server SIGKILLed mid-copy, mid-kernel and mid-module-upload,
//! the network cut (a relay between client and server, killed), and a client SIGSTOPped while
//! it holds memory. Each must end in a clear error, within a bounded time, on the side that lost
//! its peer, and the server must free everything the lost client held.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// A peer is declared lost after the transport's idle timeout (6 s); this leaves room for a
/// loaded machine.
const BOUND: Duration = Duration::from_secs(20);

/// `client_tool MODE` under `remora run`, its output piped.
fn spawn_tool(mut cmd: Command, args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("remora run");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// The first line starting with `prefix` within `limit`, read on a thread so that a client
/// that hangs fails the test instead of hanging it; the child is killed if it does not come.
fn line_within(
    child: &mut Child,
    out: BufReader<ChildStdout>,
    prefix: &'static str,
    limit: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if line.starts_with(prefix) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    match rx.recv_timeout(limit) {
        Ok(line) => (line, start.elapsed()),
        Err(_) => {
            let _ = child.kill();
            panic!("no `{prefix}` line within {limit:?}: the client hung or ended silently");
        }
    }
}

/// The client must end cleanly once it has reported the error.
fn exits_within(child: &mut Child, limit: Duration) {
    let status = exit_within(child, limit);
    assert!(status.success(), "client exited with {status}");
}

/// Kills the server while the client is in MODE (after it printed `ready`); the client must
/// report CUDA_ERROR_DEVICE_UNAVAILABLE (46) within the bound and exit.
fn server_killed_during(mode: &str, ready: &str) {
    let mut server = Server::start();
    let (mut child, mut out) = spawn_tool(server.command(&c_program("client_tool")), &[mode]);
    wait_line(&mut out, ready);
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    let (line, took) = line_within(&mut child, out, "error ", BOUND);
    assert_eq!(
        line, "error 46",
        "DEVICE_UNAVAILABLE expected; took {took:?}"
    );
    exits_within(&mut child, Duration::from_secs(5));
}

#[test]
fn a_server_killed_mid_copy_fails_the_copy_within_a_bounded_time() {
    server_killed_during("copy-loop", "copying");
}

#[test]
fn a_server_killed_mid_kernel_fails_the_synchronize_within_a_bounded_time() {
    server_killed_during("kernel-loop", "running");
}

#[test]
fn a_server_killed_mid_module_upload_fails_the_load_within_a_bounded_time() {
    server_killed_during("upload-loop", "uploading");
}

/// Polls until a fresh client sees all of device 0's memory free again.
fn memory_returns(server: &Server, total: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (free, _) = free_memory(server);
        if free == total {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "the lost client's memory was not freed: {free} of {total} free"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_cut_network_fails_the_client_and_frees_its_memory_on_the_server() {
    let server = Server::start();
    let (_, total) = free_memory(&server);
    let mut relay = RelayProc::start(&server_address(&server), &[]);
    let connection = server.connection_with("address", &relay.address);
    let mut cmd = Command::new(remora());
    cmd.arg("run")
        .arg("--connection")
        .arg(&connection)
        .arg("--")
        .arg(c_program("client_tool"))
        .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
    let (mut child, mut out) = spawn_tool(cmd, &["hold", "64"]);
    wait_line(&mut out, "ptr ");
    // The cable is cut: nothing passes either way from now on.
    let _ = relay.child.kill();
    let _ = relay.child.wait();
    let cut = Instant::now();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let (line, took) = line_within(&mut child, out, "after ", BOUND);
    assert!(line.starts_with("after 46"), "{line} after {took:?}");
    exits_within(&mut child, Duration::from_secs(5));
    // The server's side: the session is dropped and its 64 MiB freed.
    memory_returns(&server, total, BOUND.saturating_sub(cut.elapsed()) + BOUND);
}

#[test]
fn a_stopped_client_is_dropped_its_memory_freed_and_it_learns_why_when_resumed() {
    let server = Server::start();
    let (_, total) = free_memory(&server);
    let (mut child, mut out) =
        spawn_tool(server.command(&c_program("client_tool")), &["hold", "64"]);
    wait_line(&mut out, "ptr ");
    let app = find_child_pid(child.id(), "client_tool").expect("the client process");
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &app.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let (held, _) = free_memory(&server);
    assert!(
        held < total,
        "the stopped client still holds its memory at first"
    );
    let freed_after = memory_returns(&server, total, BOUND + BOUND);
    signal("-CONT");
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let (line, _) = line_within(&mut child, out, "after ", BOUND);
    assert!(
        line.starts_with("after 46"),
        "{line}: the resumed client must learn its session is gone (freed after {freed_after:?})"
    );
    exits_within(&mut child, Duration::from_secs(5));
}
