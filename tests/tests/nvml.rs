//! The NVML stand-in (`libnvidia-ml.so.1`) that `remora run` preloads beside the shim: a C
//! program linked with `-lnvidia-ml` and NVIDIA's own Python bindings (pynvml) see the
//! session's GPUs, with memory and utilisation asked of the server; without the shim, NVML
//! says the driver is not loaded.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

fn nvml() -> PathBuf {
    let p = target_dir().join("debug/libremora_nvml.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p remora-nvml` first",
        p.display()
    );
    p
}

/// `tests/programs/nvml_query.c`, linked against the stand-in as `-lnvidia-ml`.
fn nvml_program() -> PathBuf {
    let dir = target_dir().join("c/nvml-lib");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("libnvidia-ml.so");
    let tmp = dir.join(format!("libnvidia-ml.so.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(nvml(), &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    let l = format!("-L{}", dir.display());
    c_program_with("nvml_query", &[&l, "-lnvidia-ml"])
}

#[test]
fn a_c_program_sees_the_sessions_gpus_memory_and_utilisation_through_nvml() {
    let server = Server::start_with(&["--devices", "2"]);
    let out = server.run(&nvml_program(), &[]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("nvml_query: all passed"),
        "{t}"
    );
}

fn pynvml(server: Option<&Server>, args: &[&str]) -> std::process::Output {
    let script = root().join("tests/python/test_nvml.py");
    let mut cmd = match server {
        Some(s) => s.command(std::path::Path::new("python3")),
        None => {
            // NVML alone, without the shim: as if someone preloaded only the stand-in.
            let mut c = Command::new("python3");
            c.env("LD_PRELOAD", nvml());
            c
        }
    };
    cmd.arg(script)
        .args(args)
        .env("PYTHONPATH", cuda_env("NVML_PY"))
        .output()
        .unwrap()
}

#[test]
fn pynvml_finds_the_sessions_gpus() {
    let server = Server::start_with(&["--devices", "2"]);
    let out = pynvml(Some(&server), &["2"]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("nvml passed"), "{t}");
}

#[test]
fn without_the_shim_nvml_says_the_driver_is_not_loaded() {
    let out = pynvml(None, &["--expect-no-driver"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("Remora shim") && t.contains("remora run"), "{t}");
}

#[test]
fn nvml_reports_a_lost_gpu_when_the_server_dies() {
    let mut server = Server::start();
    let script = r#"
import sys, pynvml as nv
nv.nvmlInit()
h = nv.nvmlDeviceGetHandleByIndex(0)
nv.nvmlDeviceGetMemoryInfo(h)
print("ready", flush=True)
sys.stdin.readline()
try:
    nv.nvmlDeviceGetMemoryInfo(h)
    print("memory answered after the server died")
except nv.NVMLError_GpuIsLost:
    print("gpu lost")
"#;
    let mut child = server
        .command(std::path::Path::new("python3"))
        .args(["-c", script])
        .env("PYTHONPATH", cuda_env("NVML_PY"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    wait_line(&mut stdout, "ready");
    server.kill();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains("gpu lost"), "{rest}{}", text(&out));
}
