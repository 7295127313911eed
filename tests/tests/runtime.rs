//! Unmodified applications on NVIDIA's runtime (cudart 12 and 13, shared and static, nvcc-built)
//! through the shim: export tables, integrity check, versioned cuGetProcAddress, fatbins.

mod support;

use std::process::Command;

use support::*;

fn runtime_program(cuda: u32) -> std::path::PathBuf {
    let name = format!("runtime_basics_cu{cuda}");
    let out_dir = target_dir().join("c");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(&name);
    let tmp = out_dir.join(format!("{name}.{}", std::process::id()));
    let status = Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&tmp)
        .arg(root().join("tests/programs/runtime_basics.c"))
        .arg(format!("-I{}", cuda_env(&format!("CUDA{cuda}_INCLUDE"))))
        .arg(format!("-L{}", cuda_env(&format!("CUDA{cuda}_LINK"))))
        .arg("-lcudart")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(&tmp, &exe).unwrap();
    exe
}

fn run_with_lib(server: &Server, prog: &std::path::Path, lib: &str) -> std::process::Output {
    server
        .command(prog)
        .env("LD_LIBRARY_PATH", cuda_env(lib))
        .output()
        .unwrap()
}

#[test]
fn cudart_12_shared_runs_the_runtime_api() {
    let server = Server::start();
    let out = run_with_lib(&server, &runtime_program(12), "CUDA12_LIB");
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("runtime_basics: all passed"),
        "{t}"
    );
    assert!(t.contains("runtime 12090"), "{t}");
}

#[test]
fn cudart_13_shared_runs_the_runtime_api() {
    let server = Server::start();
    let out = run_with_lib(&server, &runtime_program(13), "CUDA13_LIB");
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("runtime_basics: all passed"),
        "{t}"
    );
    assert!(t.contains("runtime 13"), "{t}");
}

#[test]
fn without_remora_cudart_reports_no_driver() {
    // Negative control: the same program with no libcuda.so.1 at all gets error 35.
    let out = Command::new(runtime_program(12))
        .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("-> 35"), "{t}");
}

fn nvcc_case(name: &str, shared: bool, compressed: bool) {
    let server = Server::start();
    let prog = nvcc_program(name, shared, compressed);
    let out = run_with_lib(&server, &prog, "CUDA13_LIB");
    let t = text(&out);
    assert!(
        out.status.success(),
        "{name} (shared cudart {shared}, compressed {compressed}): {t}"
    );
    assert!(t.contains(&format!("{name} passed")), "{t}");
}

#[test]
fn nvcc_vector_add_static_compressed() {
    nvcc_case("vector_add", false, true);
}

#[test]
fn nvcc_vector_add_shared_plain() {
    nvcc_case("vector_add", true, false);
}

#[test]
fn nvcc_tiled_matmul_static_plain() {
    nvcc_case("matmul", false, false);
}

#[test]
fn nvcc_cooperative_groups_grid_sync_too_large_and_non_cooperative() {
    nvcc_case("grid_sync", false, true);
}

#[test]
fn nvcc_tiled_matmul_shared_compressed() {
    nvcc_case("matmul", true, true);
}

#[test]
fn nvcc_reduction_static_compressed() {
    nvcc_case("reduction", false, true);
}

#[test]
fn nvcc_constant_memory_and_memcpy_to_symbol() {
    nvcc_case("constant", false, true);
    nvcc_case("constant", true, false);
}

#[test]
fn nvcc_streams_events_and_host_callbacks() {
    nvcc_case("streams", false, true);
    nvcc_case("streams", true, false);
}

#[test]
fn nvcc_kernel_printf() {
    let server = Server::start();
    let out = run_with_lib(&server, &nvcc_program("printf", true, true), "CUDA13_LIB");
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    for b in 0..2 {
        for th in 0..3 {
            let line = format!("block {b} thread {th}: {th} squared is {}\n", th * th);
            assert!(t.contains(&line), "missing `{line}` in {t}");
        }
    }
    assert!(t.ends_with("printf passed\n"), "{t}");
}

#[test]
fn without_remora_an_nvcc_program_reports_no_driver() {
    let out = Command::new(nvcc_program("vector_add", false, true))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("-> 35"), "{t}");
}

#[test]
fn a_machine_code_only_program_fails_clearly_on_the_emulated_gpu() {
    // Built for sm_80 machine code with no PTX: a real A100 runs it, the emulated GPU cannot.
    let server = Server::start();
    let dir = target_dir().join("nvcc");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("vector_add-sass-only");
    let out = Command::new(cuda_env("NVCC13"))
        .args(["-arch=compute_80", "-code=sm_80", "-o"])
        .arg(&exe)
        .arg(root().join("tests/programs/cuda/vector_add.cu"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = run_with_lib(&server, &exe, "CUDA13_LIB");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("needs a real GPU") && t.contains("SASS sm_80"),
        "{t}"
    );
}
