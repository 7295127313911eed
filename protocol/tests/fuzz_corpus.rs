//! Runs every fuzz target's body over its committed corpus (`tests/corpus/<target>/`: seeds,
//! and any input a fuzzer found that once crashed), so CI replays every input that ever
//! mattered without a fuzzer. `scripts/fuzz.sh` runs the fuzzers and adds what they find.
//!
//! The seeds are written by the ignored test at the end:
//! `cargo test -p remora-protocol --test fuzz_corpus -- --ignored write_seeds`.

use std::path::{Path, PathBuf};

use remora_protocol::fuzzing;
use remora_protocol::handshake::{
    client_hello, server_accept, server_hello, server_queued, Outcome,
};
use remora_protocol::messages::{
    encode, CtxId, DeviceInfo, Reply, ReplyBody, Request, ServerInfo, SessionRequest, StreamId,
};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

/// Feeds every file of a target's corpus to its body; none may panic or take long.
fn replay(target: &str, body: fn(&[u8]), at_least: usize) {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus(target)).expect("corpus folder") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let t = std::time::Instant::now();
        let ok = std::panic::catch_unwind(|| body(&data));
        assert!(ok.is_ok(), "{} panicked", path.display());
        assert!(
            t.elapsed().as_secs() < 5,
            "{} took {:?}",
            path.display(),
            t.elapsed()
        );
        n += 1;
    }
    assert!(n >= at_least, "{target} corpus has only {n} inputs");
}

#[test]
fn frame_corpus_never_panics() {
    replay("frames", fuzzing::frames, 10);
}

#[test]
fn message_corpus_never_panics() {
    replay("messages", fuzzing::messages, 8);
}

#[test]
fn handshake_corpus_never_panics() {
    replay("handshake", fuzzing::handshake, 8);
}

#[test]
fn connection_file_corpus_never_panics() {
    replay("connection_file", fuzzing::connection_file, 5);
}

fn info() -> ServerInfo {
    ServerInfo {
        driver_version: 13050,
        server_name: "seed".into(),
        devices: vec![DeviceInfo {
            name: "Remora Emulated GPU (sm_80)".into(),
            uuid: [7; 16],
            total_mem: 1 << 30,
            attributes: vec![(75, 8), (76, 0)],
            emulated: true,
        }],
        lease: 256 << 20,
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand when message shapes change"]
fn write_seeds() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(corpus(target)).unwrap();
        std::fs::write(corpus(target).join(name), bytes).unwrap();
    };
    let requests = [
        Request::Flush,
        Request::MemGetInfo { device: 0 },
        Request::CtxCreate {
            ctx: CtxId(1),
            device: 0,
            flags: 0,
        },
        Request::MemAlloc {
            ctx: CtxId(1),
            size: 4096,
        },
        Request::MemcpyHtoD {
            ctx: CtxId(1),
            stream: StreamId(0),
            dst: 0x7000_0000_0000,
        },
        Request::Status,
    ];
    for (i, r) in requests.iter().enumerate() {
        write("messages", &format!("request-{i}"), &encode(r));
    }
    let replies = [
        Reply::ok(ReplyBody::None),
        Reply::ok(ReplyBody::Ptr { ptr: 0x1000 }),
        Reply::error(remora_protocol::CuStatus::INVALID_VALUE, "bad"),
    ];
    for (i, r) in replies.iter().enumerate() {
        write("messages", &format!("reply-{i}"), &encode(r));
    }
    write("messages", "server-info", &encode(&info()));
    write(
        "messages",
        "session-request",
        &encode(&SessionRequest::default()),
    );

    let hello = client_hello("fuzz-token", &SessionRequest::default());
    write("handshake", "client-hello", &hello);
    write(
        "handshake",
        "client-hello-wrong-token",
        &client_hello("other", &SessionRequest::default()),
    );
    write(
        "handshake",
        "client-hello-truncated",
        &hello[..hello.len() / 2],
    );
    let accept = server_accept(&info());
    write("handshake", "server-accept", &accept);
    write(
        "handshake",
        "server-accept-truncated",
        &accept[..accept.len() - 3],
    );
    let mut queued = server_queued(3);
    queued.extend_from_slice(&server_queued(1));
    queued.extend_from_slice(&accept);
    write("handshake", "server-queued-then-accept", &queued);
    write(
        "handshake",
        "server-bad-token",
        &server_hello(Outcome::BadToken, b"invalid token"),
    );
    write("handshake", "bad-magic", b"HTTP/1.1 200 OK\r\n\r\n");
    write("handshake", "empty", b"");

    let file = "# Remora connection file\naddress = 127.0.0.1:4433\ncert_sha256 = \
                3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f\ntoken = abc\n";
    write("connection_file", "valid", file.as_bytes());
    write(
        "connection_file",
        "with-gpus",
        format!("{file}gpus = emulated\n").as_bytes(),
    );
    write(
        "connection_file",
        "ipv6",
        file.replace("127.0.0.1", "[::1]").as_bytes(),
    );
    write(
        "connection_file",
        "short-pin",
        b"address = 1.2.3.4:1\ncert_sha256 = 3f\ntoken = x\n",
    );
    write("connection_file", "no-equals", b"address 1.2.3.4:1\n");
    write("connection_file", "empty", b"");
}
