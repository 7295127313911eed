//! Memory pools and stream-ordered allocation (`cuMemAllocAsync`), kept by the shim: a C
//! program on the driver API against a real server over QUIC; reuse without messages is
//! counted with `REMORA_STATS=1`, and out of memory is reported at the call.

mod support;

use support::*;

#[test]
fn pools_reuse_memory_keep_their_attributes_and_refuse_what_the_driver_refuses() {
    let server = Server::start();
    let out = server.run(&c_program("mempool"), &["200"]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("mempool: all passed"),
        "{t}"
    );
    for line in [
        "ok   200 rounds of alloc/free async",
        "cuMemAllocAsync(&b, 32 << 10, s) -> 2",
        "cuMemPoolDestroy(def) -> 1",
        "cuMemFreeAsync(0x1234, s) -> 1",
        "ok   captured allocation and free: 2 nodes",
    ] {
        assert!(t.contains(line), "missing {line:?} in {t}");
    }
}

#[test]
fn a_hundred_allocations_freed_in_stream_order_are_one_block_and_no_round_trip() {
    let server = Server::start();
    let out = server
        .command(&c_program("mempool"))
        .args(["loop", "100"])
        .env("REMORA_STATS", "1")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("mempool: all passed"),
        "{t}"
    );
    // The result buffer and one pool block (placed in the lease, or asked of a server that has
    // none); every later allocation reuses the block freed before it, without a message.
    assert_eq!(calls(&t, "MemAllocAt") + calls(&t, "MemAlloc"), 2, "{t}");
    assert_eq!(calls(&t, "MemFree"), 1, "{t}");
    assert_eq!(calls(&t, "StreamSynchronize"), 2, "{t}");
}

/// How often the stats say `name` was sent, queued or as a round trip.
fn calls(all: &str, name: &str) -> u64 {
    all.lines()
        .filter_map(|l| l.strip_prefix("remora: stats: "))
        .filter(|l| l.contains(" by call: "))
        .flat_map(|l| l.split(": ").nth(1).unwrap_or("").split(", "))
        .filter_map(|kv| kv.rsplit_once(' '))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

#[test]
fn out_of_memory_is_reported_by_the_allocating_call() {
    let server = Server::start();
    let prog = c_program("mempool");
    // The server has 1 GiB: 4 GiB cannot be had, 1 MiB can.
    let out = server.run(&prog, &["oom", "4294967296"]);
    assert!(
        text(&out).contains("alloc async 4294967296 -> 2"),
        "{}",
        text(&out)
    );
    let out = server.run(&prog, &["oom", "1048576"]);
    assert!(
        text(&out).contains("alloc async 1048576 -> 0"),
        "{}",
        text(&out)
    );
}
