//! CUDA IPC between two client processes of one server (`tests/programs/ipc.c`): the importer
//! sees the exporter's bytes and its writes are seen back; opens are counted; a handle dies
//! with its allocation; and a handle is worth nothing to another person's client, or when
//! guessed.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The exporter, started, with the handle it printed.
fn export(
    mut cmd: Command,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
) {
    let mut child = cmd
        .arg("export")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let line = wait_line(&mut out, "handle ");
    let hex = line.strip_prefix("handle ").unwrap().to_string();
    (child, out, hex)
}

#[test]
fn two_processes_share_memory_through_an_ipc_handle_until_it_is_freed() {
    let server = Server::start();
    let prog = c_program("ipc");
    let (mut exporter, mut out, hex) = export(server.command(&prog));

    let o = server.run(&prog, &["import", &hex]);
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("ipc import: all passed"),
        "{t}"
    );

    exporter
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"check\n")
        .unwrap();
    let seen = wait_line(&mut out, "sees ");
    assert_eq!(seen, "sees the importer's write 1, rest intact 1");
    wait_line(&mut out, "freed");
    // Freed: the handle opens nothing any more.
    let o = server.run(&prog, &["open", &hex]);
    assert!(text(&o).contains("open 1"), "INVALID_VALUE: {}", text(&o));
    exporter
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"done\n")
        .unwrap();
    let mut rest = String::new();
    for l in out.lines() {
        rest.push_str(&l.unwrap());
        rest.push('\n');
    }
    assert!(
        exporter.wait().unwrap().success() && rest.contains("ipc export: all passed"),
        "{rest}"
    );
}

#[test]
fn another_persons_client_cannot_open_a_handle() {
    let dir = TempDir::new("ipc-tokens");
    let tokens = dir.0.join("tokens");
    let server = Server::start_with(&["--tokens", tokens.to_str().unwrap()]);
    let alice = add_token(&tokens, &server.dir.0, "alice", &[]);
    let bob = add_token(&tokens, &server.dir.0, "bob", &[]);
    let prog = c_program("ipc");
    let as_ = |conn: &std::path::Path| {
        let mut c = Command::new(remora());
        c.arg("run")
            .arg("--connection")
            .arg(conn)
            .arg("--")
            .arg(&prog)
            .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
        c
    };
    // The server reads its tokens file twice a second: wait until alice is let in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut exporter, _out, hex) = loop {
        let probe = as_(&alice)
            .arg("open")
            .arg("00".repeat(64))
            .output()
            .unwrap();
        if text(&probe).contains("open ") {
            break export(as_(&alice));
        }
        assert!(
            Instant::now() < deadline,
            "alice's token never took: {}",
            text(&probe)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Bob presents a token of his own: alice's handle is as good as a guess.
    let o = as_(&bob).args(["open", &hex]).output().unwrap();
    assert!(
        text(&o).contains("open 1"),
        "INVALID_VALUE for bob: {}",
        text(&o)
    );
    // Alice's second process opens it.
    let o = as_(&alice).args(["open", &hex]).output().unwrap();
    assert!(
        text(&o).contains("open 0"),
        "alice's own process: {}",
        text(&o)
    );
    let _ = exporter.kill();
}
