//! numba-cuda PTX (`tests/ptx_numba`, one kernel per file, generated from `tests/numba/kernels.py`
//! by `gen_ptx.py`) run on the emulator against results computed on the CPU.
//!
//! numba passes each array as 5 + 2*ndim 64-bit parameters: meminfo, parent, nitems, itemsize,
//! data, shape[ndim], strides[ndim] (bytes); kernel names are mangled, so each test takes the
//! module's only kernel. Float tolerances are stated per test, in ulps of the stored type.

mod common;

use common::*;
use remora_emulator::LaunchOptions;

/// The module `tests/ptx_numba/<name>.ptx` and its only kernel's name.
fn numba(name: &str) -> (Gpu, String) {
    let g = gpu("ptx_numba", &format!("{name}.ptx"));
    let kernels = g.lm.module().kernels();
    assert_eq!(kernels.len(), 1, "{name}: one kernel per module");
    let k = kernels[0].name.clone();
    (g, k)
}

/// A C-contiguous 1-D array of `n` items of `item` bytes at `p`.
fn arr(p: u64, n: usize, item: usize) -> Vec<A> {
    let (n, item) = (n as u64, item as u64);
    vec![
        A::Ptr(0),
        A::Ptr(0),
        A::Ptr(n),
        A::Ptr(item),
        A::Ptr(p),
        A::Ptr(n),
        A::Ptr(item),
    ]
}

/// A C-contiguous `rows` x `cols` array of `item`-byte items at `p`.
fn arr2(p: u64, rows: usize, cols: usize, item: usize) -> Vec<A> {
    let (r, c, i) = (rows as u64, cols as u64, item as u64);
    vec![
        A::Ptr(0),
        A::Ptr(0),
        A::Ptr(r * c),
        A::Ptr(i),
        A::Ptr(p),
        A::Ptr(r),
        A::Ptr(c),
        A::Ptr(c * i),
        A::Ptr(i),
    ]
}

fn args(parts: &[Vec<A>]) -> Vec<A> {
    parts.concat()
}

fn ulps64(a: f64, b: f64) -> u64 {
    if a == b {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let key = |v: i64| if v < 0 { i64::MIN - v } else { v } as i128;
    (key(a.to_bits() as i64) - key(b.to_bits() as i64)).unsigned_abs() as u64
}

fn randi(n: usize, seed: u64, lo: i64, hi: i64) -> Vec<i64> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| lo + (r() % (hi - lo + 1) as u64) as i64)
        .collect()
}

#[test]
fn numba_saxpy() {
    let (g, k) = numba("saxpy");
    let n = 1000;
    let (x, y) = (randf(n, 11), randf(n, 12));
    let (po, px, py) = (g.zeros(n * 4), g.f32s(&x), g.f32s(&y));
    let a = [
        arr(po, n, 4),
        vec![A::F32(2.5)],
        arr(px, n, 4),
        arr(py, n, 4),
    ];
    g.launch(&k, 8, 128, &args(&a)).result.unwrap();
    // NVVM may contract a*x+y into fma: 1 ulp from the fused result.
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(x, y)| 2.5f32.mul_add(*x, *y))
        .collect();
    assert_close(&g.get_f32(po, n), &want, 1, "saxpy");
}

#[test]
fn numba_grid_stride_loop() {
    let (g, k) = numba("grid_stride");
    let n = 5000;
    let x = randf(n, 13);
    let (px, po) = (g.f32s(&x), g.zeros(n * 4));
    g.launch(&k, 3, 64, &args(&[arr(px, n, 4), arr(po, n, 4)]))
        .result
        .unwrap();
    // f32 square, then `+ 1.0` in f64 (a float64 literal), stored as f32: 1 ulp.
    let want: Vec<f32> = x.iter().map(|v| ((v * v) as f64 + 1.0) as f32).collect();
    assert_close(&g.get_f32(po, n), &want, 1, "grid_stride");
}

#[test]
fn numba_block_reduction_with_syncthreads() {
    let (g, k) = numba("block_reduce");
    let n: usize = 1000;
    let blocks = n.div_ceil(128);
    let x = randf(n, 14);
    let (px, po) = (g.f32s(&x), g.zeros(blocks * 4));
    g.launch(
        &k,
        blocks as u32,
        128,
        &args(&[arr(px, n, 4), arr(po, blocks, 4)]),
    )
    .result
    .unwrap();
    // The same tree as the kernel: exact.
    let want: Vec<f32> = (0..blocks)
        .map(|b| {
            let mut buf: Vec<f32> = (0..128)
                .map(|t| x.get(b * 128 + t).copied().unwrap_or(0.0))
                .collect();
            let mut s = 64;
            while s > 0 {
                for t in 0..s {
                    buf[t] += buf[t + s];
                }
                s /= 2;
            }
            buf[0]
        })
        .collect();
    assert_close(&g.get_f32(po, blocks), &want, 0, "block_reduce");
}

#[test]
fn numba_atomics_add_max_min() {
    let (g, k) = numba("atomics");
    let n = 3000;
    let x: Vec<i32> = randi(n, 15, -100_000, 100_000)
        .into_iter()
        .map(|v| v as i32)
        .collect();
    let px = g.i32s(&x);
    let psum = g.i32s(&[0]);
    let pmax = g.i32s(&[i32::MIN, i32::MAX]);
    let pf = g.f32s(&[0.0]);
    let a = [
        arr(px, n, 4),
        arr(psum, 1, 4),
        arr(pmax, 2, 4),
        arr(pf, 1, 4),
    ];
    g.launch(&k, 12, 256, &args(&a)).result.unwrap();
    assert_eq!(
        g.get_i32(psum, 1)[0],
        x.iter().fold(0i32, |s, v| s.wrapping_add(*v))
    );
    assert_eq!(
        g.get_i32(pmax, 2),
        vec![*x.iter().max().unwrap(), *x.iter().min().unwrap()]
    );
    // Python's % (non-negative for a positive divisor); small integers add exactly in f32.
    let fsum: i32 = x.iter().map(|v| v.rem_euclid(8)).sum();
    assert_eq!(g.get_f32(pf, 1)[0], fsum as f32);
}

#[test]
fn numba_device_function() {
    let (g, k) = numba("device_call");
    let n = 700;
    let x = randf(n, 16);
    let (px, po) = (g.f32s(&x), g.zeros(n * 4));
    g.launch(&k, 6, 128, &args(&[arr(px, n, 4), arr(po, n, 4)]))
        .result
        .unwrap();
    // The polynomial runs in f64 (float64 literals), clamped, stored as f32: 1 ulp.
    let want: Vec<f32> = x
        .iter()
        .map(|v| {
            let v = *v as f64;
            ((v * 0.5 + 1.0) * v - 3.0).clamp(-4.0, 20.0) as f32
        })
        .collect();
    assert_close(&g.get_f32(po, n), &want, 1, "device_call");
}

#[test]
fn numba_float64_math() {
    let (g, k) = numba("f64_math");
    let n = 1000;
    let x: Vec<f64> = randf(n, 17).into_iter().map(|v| v as f64 * 3.7).collect();
    let (px, po) = (g.f64s(&x), g.zeros(n * 8));
    g.launch(&k, 8, 128, &args(&[arr(px, n, 8), arr(po, n, 8)]))
        .result
        .unwrap();
    let got = g.get_f64(po, n);
    for (i, (v, got)) in x.iter().zip(got).enumerate() {
        let want = (v * 0.25).exp() + v.abs().sqrt() * 1.5 - (1.0 + v * v).ln();
        // libdevice exp and log are within 1 ulp, sqrt exact; after the sum: 4 ulps, or 1e-13
        // absolute where the terms cancel.
        assert!(
            ulps64(got, want) <= 4 || (got - want).abs() <= 1e-13,
            "f64_math[{i}] x={v}: got {got}, want {want}"
        );
    }
}

#[test]
fn numba_int64_math() {
    let (g, k) = numba("i64_math");
    let n = 900;
    let mut r = rng(18);
    let a: Vec<i64> = (0..n)
        .map(|i| {
            if i % 3 == 0 {
                r() as i64
            } else {
                (r() % 2_000_001) as i64 - 1_000_000
            }
        })
        .collect();
    let b: Vec<i64> = (0..n)
        .map(|i| {
            if i % 5 == 0 {
                r() as i64
            } else {
                (r() % 4001) as i64 - 2000
            }
        })
        .collect();
    let (pa, pb, po) = (g.i64s(&a), g.i64s(&b), g.zeros(n * 8));
    g.launch(
        &k,
        8,
        128,
        &args(&[arr(pa, n, 8), arr(pb, n, 8), arr(po, n, 8)]),
    )
    .result
    .unwrap();
    // Python semantics: // floors, % takes the divisor's sign; int64 wraps.
    let want: Vec<i64> = a
        .iter()
        .zip(&b)
        .map(|(&a, &b)| {
            a.wrapping_mul(b)
                .div_euclid(7)
                .wrapping_add(a.rem_euclid(13))
                .wrapping_sub(b >> 3)
                .wrapping_add(a ^ b)
                .wrapping_add(a.max(b))
        })
        .collect();
    assert_eq!(g.get_i64(po, n), want);
}

#[test]
fn numba_2d_grid() {
    let (g, k) = numba("grid2d");
    let (rows, cols) = (37, 53);
    let m = randf(rows * cols, 19);
    let (pm, po) = (g.f32s(&m), g.zeros(rows * cols * 4));
    let a = args(&[arr2(pm, rows, cols, 4), arr2(po, rows, cols, 4)]);
    let opts = LaunchOptions {
        threads: 2,
        instruction_budget: 1 << 32,
    };
    let grid = [(rows as u32).div_ceil(8), (cols as u32).div_ceil(8), 1];
    g.launch_opts(&k, grid, [8, 8, 1], 0, &a, opts)
        .result
        .unwrap();
    // f64 arithmetic of exact terms, rounded once to f32: exact.
    let want: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            (m[i] as f64 * 2.0 + r as f64 - c as f64) as f32
        })
        .collect();
    assert_close(&g.get_f32(po, rows * cols), &want, 0, "grid2d");
}

#[test]
fn numba_warp_shuffle_sum() {
    let (g, k) = numba("warp_sum");
    let n: usize = 1000;
    let warps = n.div_ceil(32);
    let x: Vec<i32> = randi(n, 20, -1 << 30, 1 << 30)
        .into_iter()
        .map(|v| v as i32)
        .collect();
    let (px, po) = (g.i32s(&x), g.zeros(warps * 4));
    // 1024 threads: the last warp reads zeros past the end.
    g.launch(&k, 8, 128, &args(&[arr(px, n, 4), arr(po, warps, 4)]))
        .result
        .unwrap();
    let want: Vec<i32> = x
        .chunks(32)
        .map(|c| c.iter().fold(0i32, |s, v| s.wrapping_add(*v)))
        .collect();
    assert_eq!(g.get_i32(po, warps), want);
}

#[test]
fn numba_shared_memory_histogram() {
    let (g, k) = numba("shared_histogram");
    let n = 5000;
    let x: Vec<i32> = randi(n, 21, i32::MIN as i64, i32::MAX as i64)
        .into_iter()
        .map(|v| v as i32)
        .collect();
    let (px, ph) = (g.i32s(&x), g.zeros(16 * 4));
    g.launch(&k, 20, 256, &args(&[arr(px, n, 4), arr(ph, 16, 4)]))
        .result
        .unwrap();
    let mut want = vec![0i32; 16];
    for v in &x {
        want[(v & 15) as usize] += 1;
    }
    assert_eq!(g.get_i32(ph, 16), want);
}

#[test]
fn numba_local_array() {
    let (g, k) = numba("local_array");
    let n = 300;
    let x: Vec<f64> = randf(n * 8, 22).into_iter().map(f64::from).collect();
    let (px, po) = (g.f64s(&x), g.zeros(n * 8));
    g.launch(&k, 3, 128, &args(&[arr(px, n * 8, 8), arr(po, n, 8)]))
        .result
        .unwrap();
    // Exact: the same operations in the same order.
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let mut acc = [0.0f64; 8];
            for k in 0..8 {
                acc[(i + k) % 8] += x[i * 8 + k];
            }
            acc.iter().fold(0.0, |s, a| s * 0.5 + a)
        })
        .collect();
    assert_eq!(g.get_f64(po, n), want);
}

#[test]
fn numba_recursive_device_function() {
    // numba's `fib` returns through a pointer into its caller's local frame: the result was 0
    // when recursive activations shared one frame.
    let (g, k) = numba("recursion");
    let n = 70;
    let depth: Vec<i64> = (0..n as i64).map(|i| (i * 7) % 16).collect();
    let (pn, po) = (g.i64s(&depth), g.zeros(n * 8));
    g.launch(&k, 2, 64, &args(&[arr(pn, n, 8), arr(po, n, 8)]))
        .result
        .unwrap();
    let fib = |d: i64| (0..d).fold((0i64, 1i64), |(a, b), _| (b, a + b)).0;
    let want: Vec<i64> = depth.iter().map(|&d| fib(d)).collect();
    assert_eq!(g.get_i64(po, n), want);
    assert_eq!((depth[6], want[6]), (10, 55));
}
