//! CuPy and numba-cuda, unmodified, through the shim on the emulated GPU; results compared with
//! NumPy inside the scripts. `remora run` supplies the emulated-GPU settings itself.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// NVIDIA's nvJitLink made findable, as it is in an ordinary install.
fn library_path() -> String {
    format!(
        "{}:{}/nvidia/nvjitlink/lib",
        cuda_env("CUDA12_LIB"),
        cuda_env("CUDA_PY")
    )
}

fn python(server: &Server, script: &str) -> std::process::Output {
    python_args(server, script, &[])
}

fn python_args(server: &Server, script: &str, args: &[&str]) -> std::process::Output {
    python_with(server.command(Path::new("python3")), script, args)
}

/// `script` run by `python3` under `base` (a `remora run ... -- python3` command).
fn python_with(mut base: Command, script: &str, args: &[&str]) -> std::process::Output {
    nvjitlink_off();
    nvrtc_stand_ins();
    // CuPy compiles with NVRTC and needs the CUDA headers under $CUDA_PATH/include.
    let cuda_path = target_dir().join("cuda-path");
    std::fs::create_dir_all(&cuda_path).unwrap();
    let include = cuda_path.join("include");
    if std::fs::symlink_metadata(&include).is_err() {
        let _ = std::os::unix::fs::symlink(cuda_env("CUDA12_INCLUDE"), &include);
    }
    let dir = root().join("tests/python");
    base.arg(dir.join("run_site.py"))
        .arg(cuda_env("CUDA_PY"))
        .arg(dir.join(script))
        .args(args)
        .env("CUDA_PATH", &cuda_path)
        // Make NVIDIA's nvJitLink findable, as it is in an ordinary install: numba-cuda would
        // then link to machine code, unless `remora run` steers it to the driver's linker.
        .env("LD_LIBRARY_PATH", library_path())
        .env("CUPY_CACHE_DIR", target_dir().join("cupy-cache"))
        .env("NUMBA_CACHE_DIR", target_dir().join("numba-cache"))
        .output()
        .unwrap()
}

#[test]
fn cupy_elementwise_kernels_and_reductions_match_numpy() {
    let server = Server::start();
    let out = python(&server, "test_cupy.py");
    let t = text(&out);
    assert!(out.status.success() && t.contains("cupy passed"), "{t}");
}

/// `script` on one virtual GPU over two members of a pool.
fn python_on_a_virtual_gpu(script: &str) -> String {
    let members = [Server::start(), Server::start()];
    // Every launch the footprints allow is split, however small: the results must not change.
    let pool = Pool::start(
        &[&members[0].connection, &members[1].connection],
        &["--split", "always"],
    );
    let out = python_with(
        pool.command_virtual_gpu(2, Path::new("python3")),
        script,
        &[],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t
}

#[test]
fn cupy_elementwise_kernels_and_reductions_match_numpy_on_a_virtual_gpu() {
    let t = python_on_a_virtual_gpu("test_cupy.py");
    assert!(t.contains("cupy passed"), "{t}");
}

#[test]
fn numba_jit_kernels_match_numpy_on_a_virtual_gpu() {
    let t = python_on_a_virtual_gpu("test_numba.py");
    assert!(t.contains("numba passed"), "{t}");
}

#[test]
fn cupy_stream_capture_graphs_and_the_async_memory_pool_match_numpy() {
    let server = Server::start();
    let out = python(&server, "test_cupy_graphs.py");
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("cupy graphs passed"),
        "{t}"
    );
}

#[test]
fn numba_jit_kernels_with_shared_memory_and_atomics_match_numpy() {
    let server = Server::start();
    let out = python(&server, "test_numba.py");
    let t = text(&out);
    assert!(out.status.success() && t.contains("numba passed"), "{t}");
}

/// One case of `test_numba_cases.py` (numba programs issue 13 found going wrong).
fn numba_case(server: &Server, case: &str) {
    let out = python_args(server, "test_numba_cases.py", &[case]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains(&format!("{case} passed")),
        "{t}"
    );
}

#[test]
fn numba_recursive_device_function_returns_fib_10_55() {
    numba_case(&Server::start(), "recursion");
}

#[test]
fn numba_debug_device_functions_linked_twice() {
    numba_case(&Server::start(), "debug_calls");
}

#[test]
fn numba_small_overrun_is_tolerated_as_on_a_gpu() {
    numba_case(&Server::start(), "overrun");
}

#[test]
fn numba_bfloat16_fma_relu() {
    numba_case(&Server::start(), "bf16_relu");
}

#[test]
fn numba_runtime_allocates_and_frees_in_kernels() {
    numba_case(&Server::start(), "nrt");
}

#[test]
fn numba_links_cuda_cpp_compiled_by_nvrtc_through_the_stand_in() {
    numba_case(&Server::start(), "cuda_cpp_link");
}

#[test]
fn numba_kernel_on_two_gpus() {
    numba_case(&Server::start_with(&["--devices", "2"]), "multi_gpu");
}

#[test]
fn without_remora_cupy_finds_no_driver() {
    let out = Command::new("python3")
        .arg(root().join("tests/python/run_site.py"))
        .arg(cuda_env("CUDA_PY"))
        .arg(root().join("tests/python/test_cupy.py"))
        .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("cudaErrorInsufficientDriver") || t.contains("CUDA driver"),
        "{t}"
    );
}

#[test]
fn numba_linking_with_nvjitlink_gets_the_no_ptx_message() {
    // The shim alone, without `remora run`'s nvJitLink stand-in: numba links machine code,
    // which the emulated GPU refuses, and the user is told why.
    let server = Server::start();
    let dir = root().join("tests/python");
    let out = Command::new("python3")
        .arg(dir.join("run_site.py"))
        .arg(cuda_env("CUDA_PY"))
        .arg(dir.join("test_numba.py"))
        .env("LD_PRELOAD", shim())
        .env("REMORA_CONNECTION", &server.connection)
        .env("LD_LIBRARY_PATH", library_path())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("CUDA_ERROR_NO_BINARY_FOR_GPU") && t.contains("The emulated GPU runs PTX only"),
        "{t}"
    );
}

#[test]
fn numba_grid_sync_links_the_device_runtime_and_launches_cooperatively() {
    let server = Server::start();
    let out = python(&server, "test_numba_cooperative.py");
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("numba cooperative passed"),
        "{t}"
    );
}

#[test]
fn numba_managed_arrays_are_shared_by_host_and_kernels() {
    let server = Server::start();
    let out = python(&server, "test_numba_managed.py");
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("numba managed passed"),
        "{t}"
    );
}

#[test]
fn ctrl_c_in_python_arrives_when_the_cuda_call_returns_and_the_session_survives() {
    // As a terminal does: SIGINT to the whole process group of `remora run`, whose embedded
    // server must not go down while numba waits in cuCtxSynchronize for a kernel of seconds.
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::process::CommandExt;
    nvjitlink_off();
    let dir = root().join("tests/python");
    let mut child = Command::new(remora())
        .args(["run", "--"])
        .arg("python3")
        .arg(dir.join("run_site.py"))
        .arg(cuda_env("CUDA_PY"))
        .arg(dir.join("interrupt_numba.py"))
        .arg("60000000")
        .env("LD_LIBRARY_PATH", library_path())
        .env("NUMBA_CACHE_DIR", target_dir().join("numba-cache"))
        .env_remove("REMORA_CONNECTION")
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("waiting") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no 'waiting' line");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let group = format!("-{}", child.id());
    assert!(Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap()
        .success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        rest.contains("KeyboardInterrupt when the call returned"),
        "{rest}"
    );
    assert!(rest.contains("result True"), "{rest}");
    assert!(status.success(), "{status} {rest}");
}

#[test]
fn numba_links_through_the_ptx_only_nvjitlink_without_warnings_and_keeps_max_registers() {
    let server = Server::start();
    let out = python(&server, "test_numba_linker.py");
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("numba linker passed"),
        "{t}"
    );
    assert!(!t.contains("too old"), "{t}");
}

#[test]
fn a_library_the_emulated_gpu_cannot_load_is_an_error_never_a_silent_wrong_result() {
    let server = Server::start();
    let out = python(&server, "test_cupy_no_silent_wrong_result.py");
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("no silent wrong result passed"),
        "{t}"
    );
}

/// `tests/programs/nvrtc_cubin.py MODE` under `remora run`, with `env` added.
fn nvrtc_sample(server: &Server, mode: &str, env: &[(&str, &str)]) -> std::process::Output {
    let script = root().join("tests/programs/nvrtc_cubin.py");
    let mut cmd = server.command(Path::new("python3"));
    cmd.arg(root().join("tests/python/run_site.py"))
        .arg(cuda_env("CUDA_PY"))
        .arg(script)
        .arg(mode)
        .env("LD_LIBRARY_PATH", library_path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    nvjitlink_off();
    nvrtc_stand_ins();
    cmd.output().unwrap()
}

#[test]
fn cuda_bindings_nvrtc_cubins_load_unmodified_as_in_nvidias_samples() {
    // --gpu-architecture=sm_XY from cudaDeviceGetAttribute and cuDeviceGetAttribute,
    // nvrtcGetCUBIN, cuModuleLoadData, vectorAdd checked: cuda-pathfinder finds the preloaded
    // NVRTC stand-in, which forwards to NVIDIA's NVRTC on LD_LIBRARY_PATH.
    let server = Server::start();
    let out = nvrtc_sample(&server, "cubin", &[]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("nvrtc cubin passed"),
        "{t}"
    );
    assert!(t.contains("NVRTC 12."), "{t}");
    assert_eq!(t.matches("loads and vectorAdd is right").count(), 5, "{t}");
}

#[test]
fn the_nvrtc_stand_in_finds_nvidias_nvrtc_in_the_wheel_beside_the_python_packages() {
    // No NVRTC on LD_LIBRARY_PATH: the stand-in takes the nvidia-cuda-nvrtc wheel's, beside
    // the cuda-bindings it was loaded for (where cuda-pathfinder would have looked).
    let server = Server::start();
    let jitlink = format!("{}/nvidia/nvjitlink/lib", cuda_env("CUDA_PY"));
    let out = nvrtc_sample(&server, "cubin", &[("LD_LIBRARY_PATH", &jitlink)]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("nvrtc cubin passed"),
        "{t}"
    );
}

#[test]
fn cuda_bindings_nvrtc_compile_errors_and_compute_xy_programs_are_nvidias() {
    let server = Server::start();
    let out = nvrtc_sample(&server, "negative", &[]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("nvrtc negative passed"),
        "{t}"
    );
    assert!(
        t.contains("a compile error: NVRTC_ERROR_COMPILATION"),
        "{t}"
    );
    // As NVIDIA's NVRTC (tests/tests/nvrtc.rs compares): no machine code, an empty cubin.
    assert!(t.contains("compute_XY cubin size 0"), "{t}");
}

#[test]
fn cuda_bindings_without_nvidias_nvrtc_get_an_nvrtc_error_and_the_reason() {
    let server = Server::start();
    let out = nvrtc_sample(
        &server,
        "cubin",
        &[("REMORA_NVRTC_LIBRARY", "/nonexistent/libnvrtc.so.12")],
    );
    let t = text(&out);
    // A Python exception (exit status 1), not a crash.
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("NVRTC_ERROR_INTERNAL_ERROR"), "{t}");
    assert!(
        t.contains(
            "NVIDIA's NVRTC was not found (REMORA_NVRTC_LIBRARY=/nonexistent/libnvrtc.so.12"
        ),
        "{t}"
    );
}
