//! Driver behaviours that numba's and CuPy's own test suites rely on: function attributes
//! from kernel directives, launches refused at the call, profiler ranges, `fork`, and signals
//! during a blocking call. Real C programs through the shim against a real server.

mod support;

use std::io::{BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn function_attributes_follow_the_kernels_directives() {
    let server = Server::start();
    let out = server.run(&c_program("function_attributes"), &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("function_attributes: all passed"), "{t}");
}

#[test]
fn cu_link_takes_libcudadevrt_and_cooperative_launches_grid_sync() {
    let server = Server::start();
    let devrt = format!("{}/libcudadevrt.a", cuda_env("CUDA12_LIB"));
    let out = server.run(&c_program("cooperative_link"), &[&devrt]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("cooperative_link: all passed"), "{t}");
}

#[test]
fn profiler_ranges_need_a_context_and_initialize_is_deprecated() {
    let server = Server::start();
    let out = server.run(&c_program("process_rules"), &["profiler"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("process_rules profiler: all passed"), "{t}");
}

#[test]
fn a_child_forked_after_cu_init_is_not_initialized_and_the_parent_carries_on() {
    let server = Server::start();
    let out = server.run(&c_program("process_rules"), &["fork"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("ok   cuInit(0) -> 3"), "{t}");
    assert!(t.contains("ok   the parent still works"), "{t}");
    assert!(t.contains("process_rules fork: all passed"), "{t}");
}

#[test]
fn sigint_with_the_default_action_ends_a_process_blocked_in_synchronize() {
    let server = Server::start();
    let mut child = server
        .command(&c_program("process_rules"))
        .arg("sigint")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let line = wait_line(&mut out, "pid ");
    let pid = line.trim_start_matches("pid ").trim();
    // Let the synchronisation begin waiting.
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-INT", pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("synchronize returned"), "{rest}");
    // `remora run` reports a child killed by signal 2 as 128 + 2.
    assert_eq!(status.code(), Some(130), "{rest}");
}
