//! Cooperative launches and grid-wide barriers: nvcc 13's inline `cooperative_groups` grid
//! sync (`tests/ptx13/grid_sync.ptx`, from `tests/cuda_cg/grid_sync.cu`) and numba's
//! `cuda.cg.this_grid().sync()` (`tests/ptx_numba/grid_sync.ptx`), which calls into the
//! device runtime: linked here with Remora's (`shim/src/devrt.ptx`), as the shim's linkers
//! link it in place of `libcudadevrt.a`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use remora_emulator::{
    AddressSpace, DeviceMemory, LaunchConfig, LaunchOptions, LaunchOutcome, LoadedModule, Module,
};

/// Remora's device runtime, as the linkers add it (the shim owns it: it links on the client).
const DEVRT: &str = include_str!("../../shim/src/devrt.ptx");

fn opts(threads: usize) -> LaunchOptions {
    LaunchOptions {
        threads,
        instruction_budget: 1 << 32,
    }
}

fn cfg(grid: [u32; 3], block: [u32; 3], cooperative: bool) -> LaunchConfig {
    LaunchConfig {
        grid,
        block,
        dynamic_shared_bytes: 0,
        cooperative,
    }
}

/// What `grid_rotate` leaves in `out` for `n` threads in blocks of `block`.
fn rotated(n: usize, block: usize, rounds: usize) -> Vec<i32> {
    let mut v: Vec<i32> = (0..n as i32).collect();
    for _ in 0..rounds {
        v = (0..n).map(|i| v[(i + block + 1) % n] + 1).collect();
    }
    v
}

fn rotate(
    g: &Gpu,
    kernel: &str,
    c: &LaunchConfig,
    rounds: i32,
    threads: usize,
) -> (LaunchOutcome, Vec<i32>) {
    let n = (c.grid.iter().product::<u32>() * c.block.iter().product::<u32>()) as usize;
    let buf = g.zeros(n * 4);
    let out = g.i32s(&vec![-1; n]);
    let args = if kernel == "grid_rotate" {
        vec![A::Ptr(buf), A::Ptr(out), A::I32(rounds)]
    } else {
        // numba: two 1-D int32 arrays and the round count.
        let arr = |p: u64| {
            let n = n as u64;
            vec![
                A::Ptr(0),
                A::Ptr(0),
                A::Ptr(n),
                A::Ptr(4),
                A::Ptr(p),
                A::Ptr(n),
                A::Ptr(4),
            ]
        };
        [arr(buf), arr(out), vec![A::I32(rounds)]].concat()
    };
    let r = g.launch_cfg(kernel, c, &args, opts(threads));
    (r, g.get_i32(out, n))
}

/// numba's grid-sync module linked with the device runtime (or not).
fn numba_gpu(with_runtime: bool) -> (Gpu, String) {
    let path = format!(
        "{}/tests/ptx_numba/grid_sync.ptx",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(path).unwrap();
    if with_runtime {
        for line in DEVRT.lines() {
            let t = line.trim_start();
            if !(t.starts_with(".version")
                || t.starts_with(".target")
                || t.starts_with(".address_size"))
            {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    let module = Arc::new(Module::from_ptx(&text).unwrap());
    let space = AddressSpace::new(DeviceMemory::new(1 << 32), 0x7f00_0000_0000, 1 << 36);
    let lm = LoadedModule::new(module, &space).unwrap();
    let name = lm.module().kernels()[0].name.clone();
    (Gpu { space, lm }, name)
}

#[test]
fn nvcc_grid_sync_in_a_loop_sees_every_blocks_writes() {
    let g = gpu("ptx13", "grid_sync.ptx");
    // More blocks than workers, one worker, and a grid of one block.
    for (grid, block, rounds, threads) in [
        (12u32, 64u32, 6, 2),
        (7, 96, 3, 1),
        (1, 32, 4, 2),
        (64, 32, 2, 2),
    ] {
        let t = Instant::now();
        let (r, out) = rotate(
            &g,
            "grid_rotate",
            &cfg([grid, 1, 1], [block, 1, 1], true),
            rounds,
            threads,
        );
        r.result.unwrap();
        let n = (grid * block) as usize;
        assert_eq!(
            out,
            rotated(n, block as usize, rounds as usize),
            "grid {grid} block {block}"
        );
        assert!(
            t.elapsed().as_secs() < 20,
            "grid sync took {:?}",
            t.elapsed()
        );
    }
    // The workspace is the launch's: nothing stays allocated.
    let used = g.space.used();
    let (r, _) = rotate(&g, "grid_rotate", &cfg([4, 1, 1], [32, 1, 1], true), 1, 2);
    r.result.unwrap();
    assert_eq!(g.space.used(), used + 2 * 128 * 4);
}

#[test]
fn nvcc_grid_sync_over_a_2d_grid_of_2d_blocks() {
    let g = gpu("ptx13", "grid_sync.ptx");
    let (grid, block) = ([3u32, 2, 1], [8u32, 4, 1]);
    let n = 6 * 32;
    let x: Vec<i32> = (0..n as i32).map(|i| i * 7 % 13 - 5).collect();
    let xs = g.i32s(&x);
    let partial = g.zeros(6 * 4);
    let out = g.zeros(n * 4);
    let r = g.launch_cfg(
        "grid_total",
        &cfg(grid, block, true),
        &[A::Ptr(xs), A::Ptr(partial), A::Ptr(out)],
        opts(2),
    );
    r.result.unwrap();
    let sums: Vec<i32> = x.chunks(32).map(|c| c.iter().sum()).collect();
    let total: i32 = sums.iter().sum();
    let want: Vec<i32> = (0..n).map(|i| total - sums[i / 32]).collect();
    assert_eq!(g.get_i32(partial, 6), sums);
    assert_eq!(g.get_i32(out, n), want);
}

#[test]
fn nvcc_grid_sync_outside_a_cooperative_launch_traps() {
    let g = gpu("ptx13", "grid_sync.ptx");
    let (r, _) = rotate(&g, "grid_rotate", &cfg([4, 1, 1], [32, 1, 1], false), 2, 2);
    let e = r.result.unwrap_err();
    assert_eq!(e.cuda_code(), 719, "{e}");
}

#[test]
fn numba_grid_sync_through_the_device_runtime() {
    let (g, k) = numba_gpu(true);
    for (grid, block, rounds) in [(10u32, 64u32, 5), (3, 128, 2)] {
        let (r, out) = rotate(&g, &k, &cfg([grid, 1, 1], [block, 1, 1], true), rounds, 2);
        r.result.unwrap();
        assert_eq!(
            out,
            rotated((grid * block) as usize, block as usize, rounds as usize)
        );
    }
    // Not launched cooperatively: no workspace, so the sync traps instead of being skipped.
    let (r, _) = rotate(&g, &k, &cfg([4, 1, 1], [32, 1, 1], false), 1, 2);
    assert_eq!(r.result.unwrap_err().cuda_code(), 719);
}

#[test]
fn numba_grid_sync_without_the_device_runtime_names_what_is_missing() {
    let (g, k) = numba_gpu(false);
    let (r, _) = rotate(&g, &k, &cfg([2, 1, 1], [32, 1, 1], true), 1, 2);
    let e = r.result.unwrap_err();
    assert_eq!(e.cuda_code(), 801, "{e}");
    assert!(e.to_string().contains("cudaCG"), "{e}");
}
