//! Real C programs on the CUDA driver API, through the shim, against a real server on loopback.

mod support;

use std::io::{BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn driver_memory_program_passes_against_a_server() {
    let server = Server::start();
    let out = server.run(&c_program("driver_memory"), &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("driver_memory: all passed"), "{t}");
    assert!(t.contains("round trip 67108864 bytes"), "{t}");
}

#[test]
fn remora_run_without_a_connection_starts_an_embedded_server() {
    let prog = c_program("driver_memory");
    let out = std::process::Command::new(remora())
        .arg("run")
        .arg("--")
        .arg(&prog)
        .env_remove("REMORA_CONNECTION")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("all passed"), "{t}");
}

#[test]
fn without_the_shim_the_program_finds_no_driver() {
    // Negative control: the same binary without Remora fails to load libcuda.so.1 at all.
    let prog = c_program("driver_memory");
    let out = std::process::Command::new(&prog)
        .env_remove("LD_PRELOAD")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("libcuda.so.1"), "{}", text(&out));
}

#[test]
fn wrong_token_is_refused_with_a_reason() {
    let server = Server::start();
    let bad = server.connection_with("token", "not-the-token");
    let out = std::process::Command::new(remora())
        .args(["run", "--connection"])
        .arg(&bad)
        .arg("--")
        .arg(c_program("driver_memory"))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("refused the token") || t.contains("invalid token"),
        "{t}"
    );
}

#[test]
fn wrong_certificate_is_refused_with_a_reason() {
    let server = Server::start();
    let bad = server.connection_with("cert_sha256", &"ab".repeat(32));
    let out = std::process::Command::new(remora())
        .args(["devices", "--connection"])
        .arg(&bad)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("certificate"), "{t}");
    // And through the shim: the program gets an error, not a hang or a crash.
    let out = std::process::Command::new(remora())
        .args(["run", "--connection"])
        .arg(&bad)
        .arg("--")
        .arg(c_program("driver_memory"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("certificate"), "{}", text(&out));
}

#[test]
fn remora_devices_lists_the_emulated_devices() {
    let server = Server::start_with(&["--devices", "2"]);
    let out = std::process::Command::new(remora())
        .args(["devices", "--connection"])
        .arg(&server.connection)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("GPU 0: Remora Emulated GPU") && t.contains("GPU 1:"),
        "{t}"
    );
}

#[test]
fn a_dead_server_fails_the_next_call_within_a_bounded_time() {
    let mut server = Server::start();
    let mut child = server
        .command(&c_program("client_tool"))
        .args(["hold", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_line(&mut out, "ptr ");
    server.kill();
    let start = Instant::now();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let line = wait_line(&mut out, "after ");
    let took = start.elapsed();
    // 46: CUDA_ERROR_DEVICE_UNAVAILABLE, reported once the connection's idle timeout expires.
    assert!(line.starts_with("after 46"), "{line}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn a_killed_client_leaves_the_server_serving_with_its_memory_freed() {
    let server = Server::start();
    let (free_before, total) = free_memory(&server);
    assert_eq!(free_before, total);
    let mut child = server
        .command(&c_program("client_tool"))
        .arg("copy-loop")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_line(&mut out, "copying");
    std::thread::sleep(Duration::from_millis(300));
    // `remora run` forwards nothing: kill the application process itself, mid-copy.
    let app = find_child_pid(child.id(), "client_tool").expect("the client process");
    // SAFETY-free: plain kill(1).
    std::process::Command::new("kill")
        .args(["-9", &app.to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let (during, _) = free_memory(&server);
    assert!(
        during < total,
        "the killed client's 64 MiB should still be held until detected"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (free, _) = free_memory(&server);
        if free == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "memory not freed: {free} of {total}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_client_cannot_touch_another_clients_allocation() {
    let server = Server::start();
    let mut owner = server
        .command(&c_program("client_tool"))
        .args(["hold", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(owner.stdout.take().unwrap());
    let ptr = wait_line(&mut out, "ptr ")
        .trim_start_matches("ptr ")
        .to_string();
    let thief = server.run(&c_program("client_tool"), &["steal", &ptr]);
    let t = text(&thief);
    assert!(
        t.contains("read 1") && t.contains("write 1") && t.contains("free 1"),
        "{t}"
    );
    owner.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let line = wait_line(&mut out, "after ");
    assert_eq!(line, "after 0 same 1");
    assert!(owner.wait().unwrap().success());
}

#[test]
fn a_client_cannot_allocate_past_its_quota_and_others_are_unaffected() {
    let server = Server::start_with(&["--session-memory", "16M"]);
    let out = server.run(&c_program("client_tool"), &["hold", "32"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("cuMemAlloc(&d, n) -> 2 (CUDA_ERROR_OUT_OF_MEMORY)"),
        "{t}"
    );
    let (free, total) = free_memory(&server);
    assert_eq!(free, total, "the refused client holds nothing");
}

#[test]
fn threads_sharing_a_context_each_get_their_own_replies() {
    let server = Server::start();
    let prog = c_program_with("threads", &["-lpthread"]);
    let out = server.run(&prog, &[]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("threads: all passed"),
        "{t}"
    );
}

#[test]
fn copies_between_two_devices_of_one_server() {
    let server = Server::start_with(&["--devices", "2"]);
    let out = server.run(&c_program("client_tool"), &["peer"]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("peer copy matches, distinct 1"),
        "{t}"
    );
}
