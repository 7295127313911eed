//! NVRTC's cubins on the emulated GPU: programs linked against NVRTC (12 and 13) that compile
//! for the device's machine architecture and load the cubin run unmodified under `remora run`,
//! whose NVRTC stand-in (`shim/nvrtc`) hands out PTX for it. Everything else NVRTC does is
//! NVIDIA's: compile errors, a program compiled for compute_XY, a missing NVRTC said clearly.
//! (The same through cuda-bindings: tests/tests/python_clients.rs.)

mod support;

use std::process::Command;

use support::*;

fn nvrtc_cubin_12() -> std::path::PathBuf {
    nvrtc_stand_ins();
    c_program_with("nvrtc_cubin", &["-lnvrtc"])
}

fn nvrtc_cubin_13() -> std::path::PathBuf {
    nvrtc_stand_ins();
    c_program_cuda13("nvrtc_cubin", &["-lnvrtc"])
}

/// The kernels the program ran: all five spellings on the emulated GPU; on a real GPU (the GPU
/// check, without the stand-in) NVIDIA's sm_90a cubin does not run on an older GPU.
fn launched(t: &str) -> usize {
    let n = t.matches("loads and vectorAdd is right").count();
    let emulated =
        std::env::var("REMORA_TEST_BACKEND").unwrap_or_else(|_| "emulated".into()) == "emulated";
    if !emulated && n == 4 && t.contains("skip -arch=sm_90a") {
        return 5;
    }
    n
}

/// `remora run` of a program linked against NVRTC 13, which finds it on LD_LIBRARY_PATH.
fn run_13(server: &Server, args: &[&str]) -> std::process::Output {
    server
        .command(&nvrtc_cubin_13())
        .args(args)
        .env("LD_LIBRARY_PATH", cuda_env("CUDA13_LIB"))
        .output()
        .unwrap()
}

#[test]
fn a_program_linked_with_nvrtc_12_loads_the_cubin_it_asked_for() {
    let server = Server::start();
    let out = server.run(&nvrtc_cubin_12(), &["cubin"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("NVRTC 12."), "{t}");
    // --gpu-architecture=sm_XY, -arch=sm_XY, each as one option and as two, and sm_XYa.
    assert_eq!(launched(&t), 5, "{t}");
    assert!(t.contains("nvrtc_cubin cubin: all passed"), "{t}");
}

#[test]
fn a_program_linked_with_nvrtc_13_loads_the_cubin_it_asked_for() {
    let server = Server::start();
    let out = run_13(&server, &["cubin"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("NVRTC 13."), "{t}");
    assert_eq!(launched(&t), 5, "{t}");
    assert!(t.contains("nvrtc_cubin cubin: all passed"), "{t}");
}

/// The program's line about a compute_XY program's cubin, run with the shim alone (NVIDIA's
/// NVRTC, no stand-in), for comparison.
fn compute_line_without_the_stand_in(server: &Server) -> String {
    let out = server
        .shim_only(&nvrtc_cubin_12())
        .arg("negative")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t.lines()
        .find(|l| l.starts_with("compute_XY:"))
        .unwrap_or_else(|| panic!("{t}"))
        .to_string()
}

#[test]
fn compile_errors_and_compute_xy_programs_are_as_with_nvidias_nvrtc() {
    let server = Server::start();
    let nvidia = compute_line_without_the_stand_in(&server);
    for out in [
        server.run(&nvrtc_cubin_12(), &["negative"]),
        run_13(&server, &["negative"]),
    ] {
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(
            t.contains("a compile error: NVRTC_ERROR_COMPILATION, its log names the error"),
            "{t}"
        );
        // NVIDIA's NVRTC: nvrtcGetCUBINSize succeeds with size 0 (no machine code was made).
        assert!(t.contains(&nvidia), "{nvidia} expected in {t}");
        assert!(t.contains("nvrtc_cubin negative: all passed"), "{t}");
    }
    assert_eq!(nvidia, "compute_XY: nvrtcGetCUBINSize 0 size 0");
}

#[test]
fn without_nvidias_nvrtc_calls_fail_with_a_reason_and_nothing_crashes() {
    let server = Server::start();
    let out = server
        .command(&nvrtc_cubin_12())
        .arg("missing")
        .env("REMORA_NVRTC_LIBRARY", "/nonexistent/libnvrtc.so.12")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("nvrtcVersion 11 (NVRTC_ERROR_INTERNAL_ERROR), nvrtcCreateProgram 11"),
        "{t}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NVRTC stand-in (libnvrtc.so.12): NVIDIA's NVRTC was not found")
            && stderr.contains("REMORA_NVRTC_LIBRARY=/nonexistent/libnvrtc.so.12")
            && stderr.contains("no such file"),
        "{t}"
    );
    // Said once, however many calls failed.
    assert_eq!(stderr.matches("was not found").count(), 1, "{t}");

    let out = server
        .command(&nvrtc_cubin_13())
        .arg("missing")
        .env("LD_LIBRARY_PATH", cuda_env("CUDA13_LIB"))
        .env("REMORA_NVRTC13_LIBRARY", "/nonexistent/libnvrtc.so.13")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("nvrtcVersion 11"), "{t}");
    assert!(
        t.contains("NVRTC stand-in (libnvrtc.so.13): NVIDIA's NVRTC was not found")
            && t.contains("REMORA_NVRTC13_LIBRARY=/nonexistent/libnvrtc.so.13"),
        "{t}"
    );
}

#[test]
fn the_stand_ins_export_nvrtcs_whole_api_at_nvrtcs_symbol_version() {
    // Programs linked against NVIDIA's NVRTC bind `nvrtcX@libnvrtc.so.N`: every function of
    // NVRTC 12 and 13 is there, at the version of its major (so a program linked against
    // NVRTC 13 does not bind to the preloaded NVRTC 12 stand-in).
    let defined = |lib: &std::path::Path| -> Vec<String> {
        let out = Command::new("objdump").arg("-T").arg(lib).output().unwrap();
        assert!(out.status.success(), "objdump -T {}", lib.display());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("*UND*"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 2).then(|| format!("{} {}", f[f.len() - 2], f[f.len() - 1]))
            })
            .collect()
    };
    let nvidia = |var: &str, soname: &str| -> Vec<String> {
        let out = Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(std::path::Path::new(&cuda_env(var)).join(soname))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter_map(|s| s.split_once("@@").map(|(n, _)| n.to_string()))
            .filter(|n| n.contains("nvrtc"))
            .collect()
    };
    let [twelve, thirteen] = nvrtc_stand_ins();
    let mut all = nvidia("CUDA12_LIB", "libnvrtc.so.12");
    all.extend(nvidia("CUDA13_LIB", "libnvrtc.so.13"));
    assert!(all.len() > 50, "{all:?}");
    for (lib, version) in [(twelve, "libnvrtc.so.12"), (thirteen, "libnvrtc.so.13")] {
        let have = defined(&lib);
        for name in &all {
            assert!(
                have.contains(&format!("{version} {name}")),
                "{} lacks {name}@@{version}: {have:?}",
                lib.display()
            );
        }
    }
}
