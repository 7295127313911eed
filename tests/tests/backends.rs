//! Backend selection: the same server binary on machines with and without GPUs.

mod support;

use std::process::{Command, Stdio};

use support::*;

fn has_nvidia_driver() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

#[test]
fn backend_cuda_without_a_driver_fails_with_a_message_naming_what_is_missing() {
    if has_nvidia_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let dir = TempDir::new("cuda");
    let out = Command::new(remora())
        .args([
            "serve",
            "--backend",
            "cuda",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&dir.0)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("--backend cuda") && t.contains("libcuda"), "{t}");
}

#[test]
fn backend_auto_falls_back_to_emulated_without_a_gpu() {
    if has_nvidia_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let dir = TempDir::new("auto");
    let mut child = Command::new(remora())
        .args([
            "serve",
            "--backend",
            "auto",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&dir.0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = wait_line(&mut out, "remora: serving");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("emulated"), "{line}");
}
