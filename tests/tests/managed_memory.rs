//! Managed memory (`cuMemAllocManaged`) through the shim, against a real server on loopback.

mod support;

use support::*;

#[test]
fn managed_memory_program_passes_against_a_server() {
    let server = Server::start();
    let out = server.run(&c_program("managed_memory"), &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("managed_memory: all passed"), "{t}");
    assert!(t.contains("ok   24 allocations touched"), "{t}");
}
