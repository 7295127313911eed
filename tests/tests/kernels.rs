//! Kernels on the emulated GPU through the shim: NVRTC-compiled PTX loaded and launched by a C
//! driver-API program; printf; every device fault, sticky in its context, harmless to others.

mod support;

use support::*;

fn nvrtc_program() -> std::path::PathBuf {
    c_program_with("nvrtc_kernels", &["-lnvrtc"])
}

#[test]
fn nvrtc_compiled_kernels_compute_checked_results() {
    let server = Server::start();
    let out = server.run(&nvrtc_program(), &["compute"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("nvrtc_kernels compute: all passed"), "{t}");
}

#[test]
fn without_remora_run_an_nvrtc_cubin_is_refused_on_the_emulated_gpu_with_the_way_to_ptx() {
    // NVIDIA's cuda-python samples compile with --gpu-architecture=sm_XY and load the cubin:
    // machine code only, which the emulated GPU cannot run. `remora run` preloads an NVRTC that
    // hands out PTX instead (tests/tests/nvrtc.rs); with the shim alone, NVIDIA's NVRTC makes
    // the cubin, and the load must say why it fails and how to get PTX.
    let server = Server::start();
    let out = server
        .shim_only(&nvrtc_program())
        .arg("cubin")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("cubin load 209"), "{t}");
    assert!(t.contains("ELF cubin (SASS only)"), "{t}");
    assert!(t.contains("The emulated GPU runs PTX only"), "{t}");
    assert!(t.contains("`remora run` arranges that for NVRTC"), "{t}");
    assert!(t.contains("NVRTC: compute_XY and nvrtcGetPTX"), "{t}");
    assert!(t.contains("nvrtc_kernels cubin: done"), "{t}");
}

#[test]
fn a_library_kernel_runs_in_another_devices_context() {
    let server = Server::start_with(&["--devices", "2"]);
    let out = server.run(&nvrtc_program(), &["libraries"]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("nvrtc_kernels libraries: all passed"),
        "{t}"
    );
}

#[test]
fn kernel_printf_reaches_stdout_at_synchronisation() {
    let server = Server::start();
    let out = server.run(&nvrtc_program(), &["printf"]);
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    let expected = "hello from thread 0 value 100\nhello from thread 1 value 101\nhello from thread 2 value 102\nhello from thread 3 value 103\nafter sync\n";
    assert!(t.ends_with(expected), "{t}");
}

/// Runs one faulting kernel and checks the synchronising call's error, that the context stays
/// broken, and that another client of the same server is unaffected.
fn fault(server: &Server, kind: &str, code: u32) {
    let out = server.run(&nvrtc_program(), &["fault", kind]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("sync {code} ")), "{kind}: {t}");
    assert!(t.contains(&format!("sticky alloc {code}")), "{kind}: {t}");
    assert!(t.contains(&format!("sticky sync {code}")), "{kind}: {t}");
    let other = server.run(&nvrtc_program(), &["compute"]);
    assert!(other.status.success(), "after {kind}: {}", text(&other));
}

#[test]
fn out_of_bounds_access_is_700_and_sticky() {
    fault(&Server::start(), "oob", 700);
}

#[test]
fn misaligned_access_is_716_and_sticky() {
    fault(&Server::start(), "misaligned", 716);
}

#[test]
fn device_assert_is_710_with_cudas_message() {
    let server = Server::start();
    fault(&server, "assert", 710);
    let t = text(&server.run(&nvrtc_program(), &["fault", "assert"]));
    assert!(
        t.contains("block: [0,0,0], thread: [0,0,0] Assertion `v == 42` failed."),
        "{t}"
    );
}

#[test]
fn trap_is_719_and_sticky() {
    fault(&Server::start(), "trap", 719);
}

#[test]
fn a_kernel_that_never_ends_is_702_after_its_budget() {
    fault(
        &Server::start_with(&["--kernel-budget", "2000000"]),
        "hang",
        702,
    );
}

#[test]
fn bad_ptx_is_218_with_the_line_and_unsupported_instructions_are_801_by_name() {
    let server = Server::start();
    let out = server.run(&nvrtc_program(), &["bad-modules"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let bad = t
        .lines()
        .find(|l| l.starts_with("bad ptx "))
        .unwrap_or_default();
    assert!(
        bad.starts_with("bad ptx 218 ") && bad.contains("line 7"),
        "{t}"
    );
    let unsupported = t
        .lines()
        .find(|l| l.starts_with("unsupported "))
        .unwrap_or_default();
    assert!(
        unsupported.starts_with("unsupported 801 ") && unsupported.contains("tex"),
        "{t}"
    );
    assert!(t.contains("after alloc 0"), "{t}");
}
