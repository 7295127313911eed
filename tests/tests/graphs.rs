//! CUDA graphs and stream capture, kept by the shim: a C program on the driver API captures,
//! builds, updates and launches graphs on a real server over QUIC, and the capture errors the
//! documentation gives come back; a graph launch is one batch, counted with `REMORA_STATS=1`.

mod support;

use support::*;

fn stats_line<'a>(all: &'a str, prefix: &str) -> &'a str {
    all.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in {all}"))
}

#[test]
fn captured_and_hand_built_graphs_run_and_capture_errors_are_the_drivers() {
    let server = Server::start();
    let out = server.run(&c_program("graphs"), &["100"]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("graphs: all passed"),
        "{t}"
    );
    // The negative cases ran and answered as the driver does.
    for line in [
        "ok   100 launches of a captured graph",
        "ok   child graph node with new parameters = 6",
        "ok   cuGraphExecChildGraphNodeSetParams(exec, c1, child) -> 1",
        "ok   cuGraphExecChildGraphNodeSetParams(exec, pset, child5) -> 1",
        "cuStreamEndCapture(s, &g) -> 401",
        "cuStreamSynchronize(s) -> 900",
        "cuMemsetD32Async(x, 0, N, s) -> 901",
        "cuCtxSynchronize() -> 900",
        "cuMemcpyDtoH(h, x, sizeof h) -> 900",
        "cuStreamEndCapture(s1, &g2) -> 904",
        "cuGraphInstantiateWithFlags(&bad, g, 0) -> 1",
        "fork/join b = 22",
        // Host, event, child graph and memory nodes, by hand and captured.
        "ok   host node y[0] = 30, event record and wait nodes",
        "cuGraphHostNodeGetParams(k, &got) -> 1",
        "cuGraphAddHostNode(&bad, NULL, NULL, 0, &hp) -> 1",
        "cuGraphEventRecordNodeGetEvent(wait, &e) -> 1",
        "ok   child graph twice = 2",
        "ok   cloned parent = 2",
        "cuGraphAddChildGraphNode(&cbad, parent, NULL, 0, gm) -> 1",
        "ok   memory nodes = 3",
        "ok   allocation freed outside the graph = 4",
        "cuGraphMemFreeNodeGetParams(alloc, &freed) -> 1",
        "ok   captured host function y[0] = 20",
        "cuMemFreeAsync(not_graph, s) -> 1",
    ] {
        assert!(t.contains(line), "missing {line:?} in {t}");
    }
}

#[test]
fn a_graph_launch_of_100_kernels_costs_no_round_trip() {
    let server = Server::start();
    let prog = c_program("graphs");
    let run = |kernels: &str| {
        let out = server
            .command(&prog)
            .args(["launch", kernels])
            .env("REMORA_STATS", "1")
            .output()
            .unwrap();
        let t = text(&out);
        assert!(
            out.status.success() && t.contains("graphs: all passed"),
            "{t}"
        );
        t
    };
    let one = run("1");
    let hundred = run("100");
    // Capture sends nothing; the launch's kernels ride in the batch of the synchronisation
    // after it: as many round trips for 100 kernels as for 1.
    let trips = |t: &str| stats_line(t, "remora: stats: round trips by call: ").to_string();
    assert_eq!(trips(&one), trips(&hundred), "{one}\n{hundred}");
    // The module load is posted (the shim reads its PTX): not a round trip.
    assert_eq!(trips(&hundred), "StreamSynchronize 2, MemcpyDtoH 1");
    assert!(
        stats_line(&hundred, "remora: stats: asynchronous by call: ").contains("Launch 100,"),
        "{hundred}"
    );
    assert!(
        stats_line(&one, "remora: stats: asynchronous by call: ").contains("Launch 1,"),
        "{one}"
    );
}
