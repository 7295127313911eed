//! Throughput of the emulated GPU's interpreter, in thread-instructions per second (active lanes
//! summed over executed warp instructions), on a converged kernel (saxpy) and on a tiled matrix
//! multiply with shared memory and barriers, on one worker thread and on all cores. The
//! baseline is the one-thread run in the same process: the printed ratio is the scaling.
//!
//! `cargo bench -p remora-benches --bench emulator` (under `cargo test --benches` it runs a
//! small size only, to keep the bench from rotting).

use std::sync::Arc;
use std::time::Instant;

use remora_emulator::{
    AddressSpace, DeviceMemory, LaunchConfig, LaunchOptions, LoadedModule, Module,
};

const BASIC: &str = include_str!("../../emulator/tests/ptx/basic.ptx");
const MATRIX: &str = include_str!("../../emulator/tests/ptx/matrix.ptx");

struct Case {
    name: String,
    module: Arc<Module>,
    kernel: &'static str,
    cfg: LaunchConfig,
    params: Vec<u8>,
}

fn space() -> AddressSpace {
    AddressSpace::new(DeviceMemory::new(1 << 33), 0x7f00_0000_0000, 1 << 36)
}

fn floats(space: &AddressSpace, n: usize, f: impl Fn(usize) -> f32) -> u64 {
    let p = space.alloc(n as u64 * 4).expect("alloc");
    let bytes: Vec<u8> = (0..n).flat_map(|i| f(i).to_le_bytes()).collect();
    space.write(p, &bytes).expect("write");
    p
}

fn saxpy(space: &AddressSpace, n: usize) -> Case {
    let module = Arc::new(Module::load(BASIC.as_bytes(), 80).expect("basic.ptx"));
    let (x, y) = (
        floats(space, n, |i| i as f32),
        floats(space, n, |i| 1.0 - i as f32),
    );
    let mut params = Vec::new();
    params.extend((n as i32).to_le_bytes());
    params.extend(2.0f32.to_le_bytes());
    params.extend(x.to_le_bytes());
    params.extend(y.to_le_bytes());
    let cfg = LaunchConfig {
        grid: [(n as u32).div_ceil(256), 1, 1],
        block: [256, 1, 1],
        dynamic_shared_bytes: 0,
        cooperative: false,
    };
    Case {
        name: format!("saxpy n={n}"),
        module,
        kernel: "saxpy",
        cfg,
        params,
    }
}

fn matmul(space: &AddressSpace, n: usize) -> Case {
    let module = Arc::new(Module::load(MATRIX.as_bytes(), 80).expect("matrix.ptx"));
    let a = floats(space, n * n, |i| (i % 7) as f32);
    let b = floats(space, n * n, |i| (i % 5) as f32);
    let c = floats(space, n * n, |_| 0.0);
    let mut params = Vec::new();
    params.extend((n as i32).to_le_bytes());
    params.extend([0u8; 4]); // the next parameter is 8-byte aligned
    params.extend(a.to_le_bytes());
    params.extend(b.to_le_bytes());
    params.extend(c.to_le_bytes());
    let tiles = (n as u32).div_ceil(16);
    let cfg = LaunchConfig {
        grid: [tiles, tiles, 1],
        block: [16, 16, 1],
        dynamic_shared_bytes: 0,
        cooperative: false,
    };
    Case {
        name: format!("tiled matmul {n}x{n}"),
        module,
        kernel: "matmul",
        cfg,
        params,
    }
}

/// Best of `reps` runs: (seconds, thread-instructions).
fn run(case: &Case, space: &AddressSpace, threads: usize, reps: usize) -> (f64, u64) {
    let lm = LoadedModule::new(case.module.clone(), space).expect("globals");
    let opts = LaunchOptions {
        threads,
        instruction_budget: u64::MAX,
    };
    let mut best = (f64::MAX, 0);
    for _ in 0..reps {
        let t = Instant::now();
        let out = lm.launch(space, case.kernel, &case.cfg, &case.params, &opts);
        let dt = t.elapsed().as_secs_f64();
        out.result.expect("launch");
        if dt < best.0 {
            best = (dt, out.thread_instructions);
        }
    }
    best
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let space = space();
    let cases = if quick {
        vec![saxpy(&space, 1 << 12), matmul(&space, 32)]
    } else {
        vec![saxpy(&space, 1 << 22), matmul(&space, 256)]
    };
    let reps = if quick { 1 } else { 5 };
    println!(
        "emulated GPU interpreter, {cores} core(s); M = million thread-instructions per second"
    );
    println!(
        "{:<24} {:>12} {:>14} {:>14} {:>9}",
        "kernel", "instr", "1 thread M/s", "all cores M/s", "scaling"
    );
    for case in &cases {
        let (t1, n1) = run(case, &space, 1, reps);
        let (tn, nn) = run(case, &space, 0, reps);
        let (r1, rn) = (n1 as f64 / t1 / 1e6, nn as f64 / tn / 1e6);
        println!(
            "{:<24} {:>12} {:>14.0} {:>14.0} {:>8.2}x",
            case.name,
            n1,
            r1,
            rn,
            rn / r1
        );
    }
    println!("targets: >= 300 M/s per core on the converged kernel, >= 1.7x on two cores");
}
