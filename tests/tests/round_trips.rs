//! Round trips counted with `REMORA_STATS=1`: each saving is guarded by its count.

mod support;

use support::*;

fn stats_of(out: &std::process::Output) -> String {
    let all = text(out);
    assert!(out.status.success(), "{all}");
    all.lines()
        .filter(|l| l.starts_with("remora: stats:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_trial_costs_one_round_trip_and_its_module_load_allocation_and_last_synchronisation_none() {
    let server = Server::start();
    let prog = c_program("pool_trial");
    let out = server
        .command(&prog)
        .args(["5", "0"])
        .env("REMORA_STATS", "1")
        .output()
        .unwrap();
    let stats = stats_of(&out);
    // MemcpyDtoH only: the address windows, the module load (its PTX read by the shim, the
    // load posted), the allocation (placed by the shim inside the server's memory lease),
    // every launch and the memset are queued, and the cuCtxSynchronize after the copy has
    // nothing left to wait for.
    assert!(
        stats.contains(
            "10 asynchronous calls, 1 round trips, 1 synchronising calls answered locally"
        ),
        "{stats}"
    );
    assert!(
        stats.contains("round trips by call: MemcpyDtoH 1\n"),
        "{stats}"
    );
    assert!(
        !stats
            .lines()
            .any(|l| l.contains("round trips by call:") && l.contains("ModuleLoad")),
        "the load is not waited for: {stats}"
    );
    assert!(stats.contains("ModuleLoad 1"), "posted: {stats}");
    assert!(stats.contains("MemAllocAt 1"), "{stats}");
    assert!(
        stats.contains("answered locally by call: CtxSynchronize 1"),
        "{stats}"
    );
    assert!(stats.contains("asynchronous by call: Launch 5"), "{stats}");
}

#[test]
fn work_queued_before_a_synchronisation_makes_it_a_round_trip() {
    let server = Server::start();
    let prog = c_program("pool_trial");
    // Holding the GPU: each 50 ms a memset, then cuCtxSynchronize, which must ask the server.
    let out = server
        .command(&prog)
        .args(["1", "300"])
        .env("REMORA_STATS", "1")
        .output()
        .unwrap();
    let stats = stats_of(&out);
    let syncs: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("remora: stats: round trips by call: "))
        .and_then(|l| {
            l.split(", ")
                .find_map(|kv| kv.strip_prefix("CtxSynchronize "))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    assert!(
        syncs >= 3,
        "each synchronisation after a memset is a round trip: {stats}"
    );
    // Without REMORA_STATS nothing is printed.
    let out = server.command(&prog).args(["1", "0"]).output().unwrap();
    assert!(!text(&out).contains("remora: stats"), "{}", text(&out));
}

#[test]
fn past_the_lease_an_allocation_asks_the_server_which_refuses_it_at_the_call() {
    // A 16 MiB quota leases 16 MiB: the trial's 256 KiB buffer is placed by the shim, a further
    // 100 MiB past the lease is a round trip, refused at the call with OUT_OF_MEMORY.
    let server = Server::start_with(&["--session-memory", "16M"]);
    let out = server
        .command(&c_program("pool_trial"))
        .args(["3", "0", "100"])
        .env("REMORA_STATS", "1")
        .output()
        .unwrap();
    let stats = stats_of(&out);
    assert!(text(&out).contains("alloc 100 MiB -> 2"), "{}", text(&out));
    assert!(
        stats.contains("MemAlloc 1"),
        "the refused one was a round trip: {stats}"
    );
    assert!(stats.contains("MemAllocAt 1"), "{stats}");
}
