//! Throughput of the interpreter on a converged saxpy kernel: thread-instructions per second
//! on 1 and 2 worker threads. Run with `cargo run --release -p remora-emulator --example saxpy_bench`.

use std::sync::Arc;
use std::time::Instant;

use remora_emulator::{
    AddressSpace, DeviceMemory, LaunchConfig, LaunchOptions, LoadedModule, Module,
};

fn main() {
    let src = include_str!("../tests/ptx/basic.ptx");
    let module = Arc::new(Module::load(src.as_bytes(), 80).expect("load"));
    let space = AddressSpace::new(DeviceMemory::new(1 << 32), 0x7f00_0000_0000, 1 << 36);
    let lm = LoadedModule::new(module.clone(), &space).expect("globals");
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1 << 22);
    let x = space.alloc(n as u64 * 4).expect("alloc");
    let y = space.alloc(n as u64 * 4).expect("alloc");
    let ones: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    space.write(x, &ones).expect("write");
    space.write(y, &ones).expect("write");
    let info = module.kernel("saxpy").expect("saxpy");
    let mut params = vec![0u8; info.params_size() as usize];
    params[0..4].copy_from_slice(&(n as i32).to_le_bytes());
    params[4..8].copy_from_slice(&2.0f32.to_le_bytes());
    params[8..16].copy_from_slice(&x.to_le_bytes());
    params[16..24].copy_from_slice(&y.to_le_bytes());
    let cfg = LaunchConfig {
        grid: [(n as u32).div_ceil(256), 1, 1],
        block: [256, 1, 1],
        dynamic_shared_bytes: 0,
        cooperative: false,
    };
    // With one worker the launch runs on this thread: its CPU time shows the per-core rate
    // even on a loaded machine.
    let cpu0 = thread_cpu_ns();
    let out = lm.launch(
        &space,
        "saxpy",
        &cfg,
        &params,
        &LaunchOptions {
            threads: 1,
            instruction_budget: u64::MAX,
        },
    );
    out.result.expect("launch");
    if let (Some(a), Some(b)) = (cpu0, thread_cpu_ns()) {
        let secs = (b - a) as f64 / 1e9;
        println!(
            "saxpy n={n} threads=1: {:.0} M thread-instr per CPU-second",
            out.thread_instructions as f64 / secs / 1e6
        );
    }
    for threads in [1usize, 2] {
        let mut best = f64::MAX;
        let mut ti = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let out = lm.launch(
                &space,
                "saxpy",
                &cfg,
                &params,
                &LaunchOptions {
                    threads,
                    instruction_budget: u64::MAX,
                },
            );
            let dt = t.elapsed().as_secs_f64();
            out.result.expect("launch");
            best = best.min(dt);
            ti = out.thread_instructions;
        }
        println!(
            "saxpy n={n} threads={threads}: {:.1} ms, {ti} thread-instructions, {:.0} M thread-instr/s",
            best * 1e3,
            ti as f64 / best / 1e6
        );
    }
    matmul(1);
    matmul(2);
}

/// A 256x256 tiled matmul (shared memory, barriers) for comparison.
fn matmul(threads: usize) {
    let src = include_str!("../tests/ptx/matrix.ptx");
    let module = Arc::new(Module::load(src.as_bytes(), 80).expect("load"));
    let space = AddressSpace::new(DeviceMemory::new(1 << 32), 0x7f00_0000_0000, 1 << 36);
    let lm = LoadedModule::new(module.clone(), &space).expect("globals");
    let n = 256u32;
    let bytes = (n * n * 4) as u64;
    let (a, b, c) = (
        space.alloc(bytes).expect("a"),
        space.alloc(bytes).expect("b"),
        space.alloc(bytes).expect("c"),
    );
    let info = module.kernel("matmul").expect("matmul");
    let mut params = vec![0u8; info.params_size() as usize];
    params[0..4].copy_from_slice(&(n as i32).to_le_bytes());
    params[8..16].copy_from_slice(&a.to_le_bytes());
    params[16..24].copy_from_slice(&b.to_le_bytes());
    params[24..32].copy_from_slice(&c.to_le_bytes());
    let cfg = LaunchConfig {
        grid: [n / 16, n / 16, 1],
        block: [16, 16, 1],
        dynamic_shared_bytes: 0,
        cooperative: false,
    };
    let t = Instant::now();
    let out = lm.launch(
        &space,
        "matmul",
        &cfg,
        &params,
        &LaunchOptions {
            threads,
            instruction_budget: u64::MAX,
        },
    );
    let dt = t.elapsed().as_secs_f64();
    out.result.expect("launch");
    println!(
        "matmul 256x256 threads={threads}: {:.1} ms, {:.0} M thread-instr/s",
        dt * 1e3,
        out.thread_instructions as f64 / dt / 1e6
    );
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat), if available.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}
