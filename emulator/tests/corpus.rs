//! PTX corpus tests: real NVRTC output (`tests/ptx` from NVRTC 12.9, `tests/ptx13` from NVRTC
//! 13, both generated from `tests/cuda` by `gen_ptx.py`) run on the emulator against results
//! computed on the CPU. A test that loads a corpus file takes the folder as `dir` and runs once
//! per compiler (`nvrtc12::name`, `nvrtc13::name`, listed at the end); hand-written PTX runs once.

mod common;

use std::sync::Arc;

use common::*;
use remora_emulator::{
    AddressSpace, DeviceMemory, LaunchConfig, LaunchOptions, LoadedModule, Module,
};

fn saxpy_exact(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let n = 1000;
    let x = randf(n, 1);
    let y = randf(n, 2);
    let (px, py) = (g.f32s(&x), g.f32s(&y));
    let out = g.launch(
        "saxpy",
        (n as u32).div_ceil(128),
        128,
        &[A::I32(n as i32), A::F32(2.5), A::Ptr(px), A::Ptr(py)],
    );
    out.result.unwrap();
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(x, y)| 2.5f32.mul_add(*x, *y))
        .collect();
    assert_close(&g.get_f32(py, n), &want, 0, "saxpy");
    assert!(out.thread_instructions > n as u64 * 10);
}

fn grid_stride_loop(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let n = 5000;
    let x = randf(n, 3);
    let y = randf(n, 4);
    let (px, py) = (g.f32s(&x), g.f32s(&y));
    g.launch(
        "grid_stride",
        4,
        96,
        &[A::I32(n as i32), A::F32(-1.5), A::Ptr(px), A::Ptr(py)],
    )
    .result
    .unwrap();
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(x, y)| (-1.5f32).mul_add(*x, *y))
        .collect();
    assert_close(&g.get_f32(py, n), &want, 0, "grid_stride");
}

fn vector_add_int_float_double(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let n = 777;
    let a: Vec<i32> = (0..n as i32).map(|i| i * 7 - 1000).collect();
    let b: Vec<i32> = (0..n as i32).map(|i| i32::MAX - i).collect();
    let (pa, pb, pc) = (g.i32s(&a), g.i32s(&b), g.zeros(n * 4));
    g.launch(
        "vadd_i32",
        7,
        128,
        &[A::I32(n as i32), A::Ptr(pa), A::Ptr(pb), A::Ptr(pc)],
    )
    .result
    .unwrap();
    let want: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x.wrapping_add(*y)).collect();
    assert_eq!(g.get_i32(pc, n), want);

    let fa = randf(n, 5);
    let fb = randf(n, 6);
    let (pa, pb, pc) = (g.f32s(&fa), g.f32s(&fb), g.zeros(n * 4));
    g.launch(
        "vadd_f32",
        7,
        128,
        &[A::I32(n as i32), A::Ptr(pa), A::Ptr(pb), A::Ptr(pc)],
    )
    .result
    .unwrap();
    assert_close(
        &g.get_f32(pc, n),
        &fa.iter().zip(&fb).map(|(x, y)| x + y).collect::<Vec<_>>(),
        0,
        "vadd_f32",
    );

    let da: Vec<f64> = fa.iter().map(|&x| x as f64 / 3.0).collect();
    let db: Vec<f64> = fb.iter().map(|&x| x as f64 * 1.1).collect();
    let (pa, pb, pc) = (g.f64s(&da), g.f64s(&db), g.zeros(n * 8));
    g.launch(
        "vadd_f64",
        7,
        128,
        &[A::I32(n as i32), A::Ptr(pa), A::Ptr(pb), A::Ptr(pc)],
    )
    .result
    .unwrap();
    assert_eq!(
        g.get_f64(pc, n),
        da.iter().zip(&db).map(|(x, y)| x + y).collect::<Vec<_>>()
    );
}

fn divergent_branches(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let n = 300;
    let input: Vec<i32> = (0..n as i32).map(|i| i * 13 - 500).collect();
    let (pi, po) = (g.i32s(&input), g.zeros(n * 4));
    g.launch(
        "divergent",
        3,
        128,
        &[A::I32(n as i32), A::Ptr(pi), A::Ptr(po)],
    )
    .result
    .unwrap();
    let want: Vec<i32> = input.iter().map(|&v| divergent_ref(v)).collect();
    assert_eq!(g.get_i32(po, n), want);
}

fn device_function_call(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let n = 100;
    let x = randf(n, 7);
    let (px, py) = (g.f32s(&x), g.zeros(n * 4));
    g.launch(
        "devcall",
        1,
        128,
        &[A::I32(n as i32), A::Ptr(px), A::Ptr(py)],
    )
    .result
    .unwrap();
    let want: Vec<f32> = x.iter().map(|&x| 2.0 * x * x + (-3.0) * x + 1.0).collect();
    assert_close(&g.get_f32(py, n), &want, 2, "devcall");
}

fn constant_memory(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let (addr, size) = g.lm.global("cscale").unwrap();
    assert_eq!(size, 4);
    g.space.write(addr, &3i32.to_le_bytes()).unwrap();
    let n = 64;
    let x = randf(n, 8);
    let (px, py) = (g.f32s(&x), g.zeros(n * 4));
    g.launch(
        "constmem",
        1,
        64,
        &[A::I32(n as i32), A::Ptr(px), A::Ptr(py)],
    )
    .result
    .unwrap();
    let want: Vec<f32> = x
        .iter()
        .map(|&v| (1.0 + v * (0.5 + v * (0.25 + v * 0.125))) * 3.0)
        .collect();
    assert_close(&g.get_f32(py, n), &want, 4, "constmem");
}

fn struct_by_value_param(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let n = 50;
    // struct Params { int n; float scale; double offset; int pad[3]; float bias; } = 32 bytes
    let mut s = Vec::new();
    s.extend((n as i32).to_le_bytes());
    s.extend(2.0f32.to_le_bytes());
    s.extend(0.25f64.to_le_bytes());
    for p in [10i32, 20, 30] {
        s.extend(p.to_le_bytes());
    }
    s.extend(0.5f32.to_le_bytes());
    let x = randf(n, 9);
    let (px, py) = (g.f32s(&x), g.zeros(n * 8));
    g.launch("structparam", 1, 64, &[A::Bytes(s), A::Ptr(px), A::Ptr(py)])
        .result
        .unwrap();
    let got = g.get_f64(py, n);
    for i in 0..n {
        let want = (x[i] * 2.0) as f64 + 0.25 + 0.5 + 20.0;
        assert!((got[i] - want).abs() < 1e-9, "{i}: {} vs {want}", got[i]);
    }
}

fn int64_math(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let n = 200;
    let mut r = rng(11);
    let a: Vec<i64> = (0..n).map(|_| r() as i64 >> (r() % 40)).collect();
    let b: Vec<u64> = (0..n).map(|_| r() >> (r() % 50)).collect();
    let (pa, pb, po) = (
        g.i64s(&a),
        g.i64s(&b.iter().map(|&x| x as i64).collect::<Vec<_>>()),
        g.zeros(n * 8),
    );
    g.launch(
        "int64math",
        2,
        128,
        &[A::I32(n as i32), A::Ptr(pa), A::Ptr(pb), A::Ptr(po)],
    )
    .result
    .unwrap();
    let want: Vec<i64> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| {
            let mut r = x
                .wrapping_mul((y | 1) as i64)
                .wrapping_add((y >> 7) as i64)
                .wrapping_sub(x / 7)
                .wrapping_add(x % 13);
            r ^= ((y as u128 * 0x9E3779B97F4A7C15u128) >> 64) as i64;
            r = r.wrapping_add(y.count_ones() as i64 + (y | 1).leading_zeros() as i64);
            r
        })
        .collect();
    assert_eq!(g.get_i64(po, n), want);
}

fn block_reduction_with_shared_memory(dir: &str) {
    let g = gpu(dir, "reduce.ptx");
    let n = 1000;
    let x: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.5).collect();
    let (px, po) = (g.f32s(&x), g.zeros(4 * 4));
    g.launch("block_reduce", 4, 256, &[A::I32(n), A::Ptr(px), A::Ptr(po)])
        .result
        .unwrap();
    let got = g.get_f32(po, 4);
    for (b, chunk) in x.chunks(256).enumerate() {
        let want: f32 = chunk.iter().sum();
        assert!(
            (got[b] - want).abs() < 1e-3,
            "block {b}: {} vs {want}",
            got[b]
        );
    }
}

fn warp_reduction_with_shuffles(dir: &str) {
    let g = gpu(dir, "reduce.ptx");
    let n = 256;
    let x: Vec<i32> = (0..n).map(|i| i * 3 - 100).collect();
    let (px, po) = (g.i32s(&x), g.zeros(8 * 4));
    g.launch("warp_reduce", 2, 128, &[A::I32(n), A::Ptr(px), A::Ptr(po)])
        .result
        .unwrap();
    let want: Vec<i32> = x.chunks(32).map(|c| c.iter().sum()).collect();
    assert_eq!(g.get_i32(po, 8), want);
}

fn vote_and_ballot(dir: &str) {
    let g = gpu(dir, "reduce.ptx");
    let n = 96;
    let x: Vec<i32> = (0..n)
        .map(|i| {
            if i < 32 {
                1
            } else if i < 64 {
                i % 3
            } else {
                -1
            }
        })
        .collect();
    let (px, pb, pf) = (g.i32s(&x), g.zeros(12), g.zeros(12));
    g.launch(
        "vote",
        1,
        96,
        &[A::I32(n), A::Ptr(px), A::Ptr(pb), A::Ptr(pf)],
    )
    .result
    .unwrap();
    let ballots: Vec<u32> = g.get_i32(pb, 3).iter().map(|&v| v as u32).collect();
    let mut want1 = 0u32;
    for l in 0..32 {
        if x[32 + l] > 0 {
            want1 |= 1 << l;
        }
    }
    assert_eq!(ballots, vec![u32::MAX, want1, 0]);
    assert_eq!(g.get_i32(pf, 3), vec![3, 1, 0]);
}

fn atomics_global(dir: &str) {
    let g = gpu(dir, "reduce.ptx");
    let n = 1000;
    let x: Vec<i32> = (0..n).map(|i| (i * 37) % 101 - 20).collect();
    let (px, sum, fsum, mx, cas) = (
        g.i32s(&x),
        g.zeros(4),
        g.zeros(4),
        g.i32s(&[i32::MIN]),
        g.zeros(4),
    );
    g.launch(
        "atomics",
        8,
        128,
        &[
            A::I32(n),
            A::Ptr(px),
            A::Ptr(sum),
            A::Ptr(fsum),
            A::Ptr(mx),
            A::Ptr(cas),
        ],
    )
    .result
    .unwrap();
    assert_eq!(g.get_i32(sum, 1)[0], x.iter().sum::<i32>());
    let fwant: f32 = x.iter().map(|&v| (v & 15) as f32 * 0.5).sum();
    assert_eq!(
        g.get_f32(fsum, 1)[0],
        fwant,
        "sums of halves are exact in any order"
    );
    assert_eq!(g.get_i32(mx, 1)[0], *x.iter().max().unwrap());
    let c = g.get_i32(cas, 1)[0];
    assert!(c >= 1 && c <= n, "exactly one CAS wins: {c}");
}

fn histogram_with_shared_atomics(dir: &str) {
    let g = gpu(dir, "reduce.ptx");
    let n = 10000;
    let mut r = rng(12);
    let data: Vec<u8> = (0..n).map(|_| r() as u8).collect();
    let (pd, ph) = (g.upload(&data), g.zeros(64 * 4));
    g.launch("histogram", 4, 128, &[A::I32(n), A::Ptr(pd), A::Ptr(ph)])
        .result
        .unwrap();
    let mut want = vec![0i32; 64];
    for &d in &data {
        want[(d & 63) as usize] += 1;
    }
    assert_eq!(g.get_i32(ph, 64), want);
}

fn prefix_scan_dynamic_shared(dir: &str) {
    let g = gpu(dir, "reduce.ptx");
    let n = 200;
    let x: Vec<i32> = (0..n as i32).map(|i| i % 7 - 2).collect();
    let (px, po) = (g.i32s(&x), g.zeros(n * 4));
    g.launch_opts(
        "scan",
        [1, 1, 1],
        [256, 1, 1],
        256 * 4,
        &[A::I32(n as i32), A::Ptr(px), A::Ptr(po)],
        LaunchOptions::default(),
    )
    .result
    .unwrap();
    let mut acc = 0;
    let want: Vec<i32> = x
        .iter()
        .map(|v| {
            acc += v;
            acc
        })
        .collect();
    assert_eq!(g.get_i32(po, n), want);
}

fn tiled_matmul(dir: &str) {
    let g = gpu(dir, "matrix.ptx");
    let n = 40;
    let a = randf(n * n, 13);
    let b = randf(n * n, 14);
    let (pa, pb, pc) = (g.f32s(&a), g.f32s(&b), g.zeros(n * n * 4));
    let t = (n as u32).div_ceil(16);
    g.launch_opts(
        "matmul",
        [t, t, 1],
        [16, 16, 1],
        0,
        &[A::I32(n as i32), A::Ptr(pa), A::Ptr(pb), A::Ptr(pc)],
        LaunchOptions::default(),
    )
    .result
    .unwrap();
    // The loop count (n + 15) / 16 is known at launch and the tile loads are clipped by
    // `row < n && k < n`: the split into 2 and 3 ranges of rows is accepted and matches.
    assert_eq!(common::oracle::splits("matmul"), vec![(2, true), (3, true)]);
    let got = g.get_f32(pc, n * n);
    for i in 0..n {
        for j in 0..n {
            // Same order of fused multiply-adds as the kernel: exact.
            let mut acc = 0.0f32;
            for k in 0..n {
                acc = a[i * n + k].mul_add(b[k * n + j], acc);
            }
            assert_eq!(got[i * n + j], acc, "c[{i}][{j}]");
        }
    }
}

fn transpose_tiles(dir: &str) {
    let g = gpu(dir, "matrix.ptx");
    let (w, h) = (70usize, 45usize);
    let x: Vec<f32> = (0..w * h).map(|i| i as f32).collect();
    let (pi, po) = (g.f32s(&x), g.zeros(w * h * 4));
    g.launch_opts(
        "transpose",
        [(w as u32).div_ceil(32), (h as u32).div_ceil(32), 1],
        [32, 32, 1],
        0,
        &[A::I32(w as i32), A::I32(h as i32), A::Ptr(pi), A::Ptr(po)],
        LaunchOptions::default(),
    )
    .result
    .unwrap();
    // Reads and writes clipped by both `x < w && y < h`: the split over the 2 rows of tiles
    // is accepted (their last rows no longer overlap) and matches.
    assert_eq!(common::oracle::splits("transpose"), vec![(2, true)]);
    let got = g.get_f32(po, w * h);
    for y in 0..h {
        for xx in 0..w {
            assert_eq!(got[xx * h + y], x[y * w + xx]);
        }
    }
}

fn bitonic_sort(dir: &str) {
    let g = gpu(dir, "matrix.ptx");
    let mut r = rng(15);
    let data: Vec<i32> = (0..512).map(|_| (r() % 10000) as i32 - 5000).collect();
    let p = g.i32s(&data);
    g.launch_opts(
        "bitonic",
        [2, 1, 1],
        [256, 1, 1],
        256 * 4,
        &[A::Ptr(p)],
        LaunchOptions::default(),
    )
    .result
    .unwrap();
    let got = g.get_i32(p, 512);
    for blk in 0..2 {
        let mut want = data[blk * 256..(blk + 1) * 256].to_vec();
        want.sort();
        assert_eq!(&got[blk * 256..(blk + 1) * 256], &want[..]);
    }
}

fn softmax_expf(dir: &str) {
    let g = gpu(dir, "matrix.ptx");
    let (rows, cols) = (20, 33);
    let x = randf(rows * cols, 16);
    let (pi, po) = (g.f32s(&x), g.zeros(rows * cols * 4));
    g.launch(
        "softmax",
        1,
        32,
        &[
            A::I32(rows as i32),
            A::I32(cols as i32),
            A::Ptr(pi),
            A::Ptr(po),
        ],
    )
    .result
    .unwrap();
    let got = g.get_f32(po, rows * cols);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for c in 0..cols {
            let want = ((row[c] as f64 - m).exp() / s) as f32;
            // expf is within 2 ulp; the sum accumulates in f32.
            assert!(
                ulps(got[r * cols + c], want) <= 64,
                "[{r}][{c}] {} vs {want}",
                got[r * cols + c]
            );
        }
    }
}

fn layer_norm(dir: &str) {
    let g = gpu(dir, "matrix.ptx");
    let (rows, cols) = (8, 64);
    let x = randf(rows * cols, 17);
    let gamma: Vec<f32> = (0..cols).map(|i| 1.0 + i as f32 / 64.0).collect();
    let beta: Vec<f32> = (0..cols).map(|i| i as f32 / 128.0).collect();
    let (pi, pg, pb, po) = (
        g.f32s(&x),
        g.f32s(&gamma),
        g.f32s(&beta),
        g.zeros(rows * cols * 4),
    );
    g.launch(
        "layernorm",
        1,
        32,
        &[
            A::I32(rows as i32),
            A::I32(cols as i32),
            A::Ptr(pi),
            A::Ptr(pg),
            A::Ptr(pb),
            A::Ptr(po),
        ],
    )
    .result
    .unwrap();
    let got = g.get_f32(po, rows * cols);
    for r in 0..rows {
        let row: Vec<f64> = x[r * cols..(r + 1) * cols]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
        for c in 0..cols {
            let want = (row[c] - mean) / (var + 1e-5).sqrt() * gamma[c] as f64 + beta[c] as f64;
            assert!(
                (got[r * cols + c] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                "[{r}][{c}]"
            );
        }
    }
}

fn nbody_step(dir: &str) {
    let g = gpu(dir, "matrix.ptx");
    let n = 64;
    let p = randf(n * 4, 18);
    let pos: Vec<f32> = p
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 4 == 3 { v.abs() + 0.1 } else { v })
        .collect();
    let vel = vec![0.0f32; n * 4];
    let (pp, pv) = (g.f32s(&pos), g.f32s(&vel));
    g.launch(
        "nbody",
        2,
        32,
        &[A::I32(n as i32), A::Ptr(pp), A::Ptr(pv), A::F32(0.01)],
    )
    .result
    .unwrap();
    let got = g.get_f32(pv, n * 4);
    for i in 0..n {
        let mut acc = [0f64; 3];
        for j in 0..n {
            let d = [0, 1, 2].map(|k| (pos[j * 4 + k] - pos[i * 4 + k]) as f64);
            let d2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] + 0.01;
            let inv = 1.0 / d2.sqrt();
            let s = pos[j * 4 + 3] as f64 * inv * inv * inv;
            for k in 0..3 {
                acc[k] += d[k] * s;
            }
        }
        for k in 0..3 {
            let want = acc[k] * 0.01;
            assert!(
                (got[i * 4 + k] as f64 - want).abs() < 1e-3 * (1.0 + want.abs()),
                "v[{i}].{k}: {} vs {want}",
                got[i * 4 + k]
            );
        }
    }
}

fn half_arithmetic(dir: &str) {
    use half::f16;
    let g = gpu(dir, "misc.ptx");
    let n = 100;
    let a: Vec<f16> = (0..n)
        .map(|i| f16::from_f32(i as f32 * 0.25 - 10.0))
        .collect();
    let b: Vec<f16> = (0..n)
        .map(|i| f16::from_f32(1.0 + i as f32 / 64.0))
        .collect();
    let bytes = |v: &[f16]| {
        v.iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect::<Vec<_>>()
    };
    let (pa, pb, po, pf) = (
        g.upload(&bytes(&a)),
        g.upload(&bytes(&b)),
        g.zeros(n * 2),
        g.zeros(n * 4),
    );
    g.launch(
        "half_math",
        1,
        128,
        &[
            A::I32(n as i32),
            A::Ptr(pa),
            A::Ptr(pb),
            A::Ptr(po),
            A::Ptr(pf),
        ],
    )
    .result
    .unwrap();
    let got: Vec<f16> = g
        .read(po, n * 2)
        .chunks(2)
        .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    let gotf = g.get_f32(pf, n);
    for i in 0..n {
        let r = f16::from_f64(a[i].to_f64().mul_add(b[i].to_f64(), 1.5));
        let sq = f16::from_f64(a[i].to_f64() * a[i].to_f64());
        let want = f16::from_f64(r.to_f64() + sq.to_f64());
        assert_eq!(got[i], want, "{i}");
        assert_eq!(gotf[i], a[i].to_f32() * b[i].to_f32());
    }
}

fn printf_output_in_thread_order(dir: &str) {
    let g = gpu(dir, "misc.ptx");
    let x = [1.5f32, -2.25, 3.0];
    let px = g.f32s(&x);
    let out = g.launch("printer", 1, 32, &[A::I32(3), A::Ptr(px)]);
    out.result.unwrap();
    assert_eq!(
        out.printf,
        "thread 0 value 1.500000 hex 0 str ok\nthread 1 value -2.250000 hex 11 str ok\nthread 2 value 3.000000 hex 22 str ok\n"
    );
}

fn math_functions_within_tolerance(dir: &str) {
    let g = gpu(dir, "misc.ptx");
    let n = 256;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 - 128.0) * 0.37).collect();
    let px = g.f32s(&x);
    let bufs: Vec<u64> = (0..4).map(|_| g.zeros(n * 4)).collect();
    let pd = g.zeros(n * 8);
    g.launch(
        "mathfun",
        2,
        128,
        &[
            A::I32(n as i32),
            A::Ptr(px),
            A::Ptr(bufs[0]),
            A::Ptr(bufs[1]),
            A::Ptr(bufs[2]),
            A::Ptr(bufs[3]),
            A::Ptr(pd),
        ],
    )
    .result
    .unwrap();
    let s = g.get_f32(bufs[0], n);
    let c = g.get_f32(bufs[1], n);
    let l = g.get_f32(bufs[2], n);
    let e = g.get_f32(bufs[3], n);
    let d = g.get_f64(pd, n);
    for i in 0..n {
        let v = x[i] as f64;
        // CUDA's sinf/cosf/logf/powf are within 2-4 ulp of the correctly rounded result.
        assert!(ulps(s[i], v.sin() as f32) <= 4, "sin {v}: {}", s[i]);
        assert!(ulps(c[i], v.cos() as f32) <= 4, "cos {v}: {}", c[i]);
        assert!(
            ulps(l[i], (v.abs() + 1.0).ln() as f32) <= 4,
            "log {v}: {}",
            l[i]
        );
        assert!(
            ulps(e[i], (v.abs().powf(1.7)) as f32) <= 8,
            "pow {v}: {}",
            e[i]
        );
        let dw = v.abs().sqrt() + (v * 0.1).exp() + (v as i32) as f64;
        assert!(
            (d[i] - dw).abs() <= 4.0 * f64::EPSILON * dw.abs().max(1.0),
            "double {v}: {} vs {dw}",
            d[i]
        );
    }
}

// ---- negative tests ----

fn out_of_bounds_store_is_700(dir: &str) {
    let g = gpu(dir, "misc.ptx");
    let p = g.zeros(64);
    let ok = g.launch("store_at", 1, 1, &[A::Ptr(p), A::I32(15), A::I32(1)]);
    ok.result.unwrap();
    // Past the 64 bytes but inside the allocation's 512-byte granule: tolerated, as on a GPU.
    let ok = g.launch("store_at", 1, 1, &[A::Ptr(p), A::I32(127), A::I32(1)]);
    ok.result.unwrap();
    let out = g.launch("store_at", 1, 1, &[A::Ptr(p), A::I32(128), A::I32(1)]);
    assert_eq!(out.result.unwrap_err().cuda_code(), 700);
    let out = g.launch("store_at", 1, 1, &[A::Ptr(0), A::I32(0), A::I32(1)]);
    assert_eq!(out.result.unwrap_err().cuda_code(), 700);
}

fn misaligned_store_is_716(dir: &str) {
    let g = gpu(dir, "misc.ptx");
    let p = g.zeros(64);
    g.launch("store_misaligned", 1, 1, &[A::Ptr(p), A::I32(8)])
        .result
        .unwrap();
    let out = g.launch("store_misaligned", 1, 1, &[A::Ptr(p), A::I32(2)]);
    assert_eq!(out.result.unwrap_err().cuda_code(), 716);
}

fn assert_is_710_with_cuda_message(dir: &str) {
    let g = gpu(dir, "misc.ptx");
    let p = g.i32s(&[1, 2, -3, 4]);
    let out = g.launch("asserter", 1, 32, &[A::I32(4), A::Ptr(p)]);
    assert_eq!(out.result.unwrap_err().cuda_code(), 710);
    assert!(
        out.printf.contains("misc.cu:")
            && out.printf.contains(
                "asserter: block: [0,0,0], thread: [2,0,0] Assertion `x[i] >= 0` failed."
            ),
        "{}",
        out.printf
    );
    let ok = g.launch("asserter", 1, 32, &[A::I32(2), A::Ptr(p)]);
    ok.result.unwrap();
}

fn trap_is_719(dir: &str) {
    let g = gpu(dir, "misc.ptx");
    assert_eq!(
        g.launch("trapper", 1, 32, &[A::I32(1)])
            .result
            .unwrap_err()
            .cuda_code(),
        719
    );
    g.launch("trapper", 1, 32, &[A::I32(0)]).result.unwrap();
}

fn infinite_loop_is_702(dir: &str) {
    let g = gpu(dir, "misc.ptx");
    let p = g.zeros(4);
    let out = g.launch_opts(
        "spinner",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[A::Ptr(p)],
        LaunchOptions {
            threads: 1,
            instruction_budget: 100_000,
        },
    );
    assert_eq!(out.result.unwrap_err().cuda_code(), 702);
    g.space.write(p, &1i32.to_le_bytes()).unwrap();
    g.launch_opts(
        "spinner",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[A::Ptr(p)],
        LaunchOptions {
            threads: 1,
            instruction_budget: 100_000,
        },
    )
    .result
    .unwrap();
}

fn bad_launch_configs(dir: &str) {
    let g = gpu(dir, "basic.ptx");
    let p = g.zeros(4);
    let out = g.launch_opts(
        "saxpy",
        [1, 1, 1],
        [1025, 1, 1],
        0,
        &[A::I32(0), A::F32(0.0), A::Ptr(p), A::Ptr(p)],
        LaunchOptions::default(),
    );
    assert_eq!(out.result.unwrap_err().cuda_code(), 1);
    let out = g.lm.launch(
        &g.space,
        "nope",
        &LaunchConfig {
            grid: [1; 3],
            block: [1; 3],
            dynamic_shared_bytes: 0,
            cooperative: false,
        },
        &[],
        &LaunchOptions::default(),
    );
    assert_eq!(out.result.unwrap_err().cuda_code(), 500);
}

#[test]
fn bad_ptx_is_218_with_line() {
    let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n  .reg .b32 %r<3>;\n  add.s32 %r1, %r2, %r9;\n  ret;\n}\n";
    let e = Module::load(src.as_bytes(), 80).unwrap_err();
    assert_eq!(e.cuda_code(), 218);
    assert!(e.to_string().contains("line 7"), "{e}");
    let e = Module::load(b".version 8.0\n.target sm_80\n.entry k( {\n", 80).unwrap_err();
    assert_eq!(e.cuda_code(), 218);
}

#[test]
fn unsupported_instruction_is_801() {
    let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n  .reg .b32 %r<9>;\n  mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%r1,%r2,%r3,%r4}, {%r1,%r2,%r3,%r4}, {%r1,%r2}, {%r5,%r6,%r7,%r8};\n  ret;\n}\n";
    let e = Module::load(src.as_bytes(), 80).unwrap_err();
    assert_eq!(e.cuda_code(), 801);
    assert!(e.to_string().contains("mma.sync"), "{e}");
}

/// Every real module: NVRTC 12, NVRTC 13 and numba output, sorted.
fn corpus_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = ["ptx", "ptx13", "ptx_numba"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(format!("{}/tests/{d}", env!("CARGO_MANIFEST_DIR"))).unwrap()
        })
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn parse_ptx_never_panics() {
    let mut r = rng(99);
    for path in corpus_files() {
        let src = std::fs::read(path).unwrap();
        // Truncations.
        for cut in (0..src.len()).step_by(src.len() / 60 + 1) {
            let _ = Module::load(&src[..cut], 80);
        }
        // Byte mutations, deletions and duplications.
        for _ in 0..60 {
            let mut m = src.clone();
            for _ in 0..(1 + r() % 8) {
                let i = (r() as usize) % m.len();
                match r() % 4 {
                    0 => m[i] = b"{}[]()<>;,.%@!|+-0123456789xfd_ \n"[(r() % 33) as usize],
                    1 => {
                        m.remove(i);
                    }
                    2 => {
                        let j = (i + (r() as usize % 64)).min(m.len());
                        let chunk = m[i..j].to_vec();
                        m.splice(i..i, chunk);
                    }
                    _ => m[i] = r() as u8,
                }
            }
            if let Ok(module) = Module::load(&m, 80) {
                let _ = module.kernels();
            }
        }
    }
}

// ---- warp collectives, barriers, bits, atomics, rounding (warp.ptx) ----

fn u32s_of(g: &Gpu, p: u64, n: usize) -> Vec<u32> {
    g.get_i32(p, n).into_iter().map(|v| v as u32).collect()
}

fn shuffle_modes(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let n = 64;
    let input: Vec<i32> = (0..n as i32).map(|i| i * 11 + 3).collect();
    let pi = g.i32s(&input);
    let outs: Vec<u64> = (0..4).map(|_| g.zeros(n * 4)).collect();
    g.launch(
        "shuffles",
        1,
        64,
        &[
            A::Ptr(pi),
            A::Ptr(outs[0]),
            A::Ptr(outs[1]),
            A::Ptr(outs[2]),
            A::Ptr(outs[3]),
        ],
    )
    .result
    .unwrap();
    let (up, idx, xr, seg) = (
        g.get_i32(outs[0], n),
        g.get_i32(outs[1], n),
        g.get_i32(outs[2], n),
        g.get_i32(outs[3], n),
    );
    for i in 0..n {
        let (w, lane) = (i / 32 * 32, i % 32);
        assert_eq!(
            up[i],
            if lane >= 3 { input[i - 3] } else { input[i] },
            "up {i}"
        );
        assert_eq!(idx[i], input[w + (lane * 7) % 32], "idx {i}");
        assert_eq!(xr[i], input[w + (lane ^ 5)], "xor {i}");
        let max_lane = (lane & 0x18) | 7;
        assert_eq!(
            seg[i],
            if lane + 2 <= max_lane {
                input[i + 2]
            } else {
                input[i]
            },
            "down width 8 {i}"
        );
    }
}

fn match_redux_activemask(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let input: Vec<i32> = (0..32).map(|i| (i * 5) % 7).collect();
    let pi = g.i32s(&input);
    let o: Vec<u64> = (0..5).map(|_| g.zeros(128)).collect();
    g.launch(
        "collectives",
        1,
        32,
        &[
            A::Ptr(pi),
            A::Ptr(o[0]),
            A::Ptr(o[1]),
            A::Ptr(o[2]),
            A::Ptr(o[3]),
            A::Ptr(o[4]),
        ],
    )
    .result
    .unwrap();
    let (any, all, sum, min, act) = (
        u32s_of(&g, o[0], 32),
        u32s_of(&g, o[1], 32),
        g.get_i32(o[2], 32),
        u32s_of(&g, o[3], 32),
        u32s_of(&g, o[4], 32),
    );
    let odd: u32 = (0..32)
        .filter(|&l| input[l] & 1 == 1)
        .map(|l| 1u32 << l)
        .sum();
    for l in 0..32 {
        let same: u32 = (0..32)
            .filter(|&k| input[k] == input[l])
            .map(|k| 1u32 << k)
            .sum();
        assert_eq!(any[l], same, "match.any {l}");
        assert_eq!(all[l], u32::MAX, "match.all {l}");
        assert_eq!(sum[l], input.iter().sum::<i32>());
        assert_eq!(min[l], 0);
        assert_eq!(
            act[l],
            if input[l] & 1 == 1 { odd } else { 0 },
            "activemask {l}"
        );
    }
}

fn counting_barriers_and_exited_threads(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let input: Vec<i32> = (0..256)
        .map(|i| if i < 128 { i - 30 } else { i * 10 })
        .collect();
    let (pi, po) = (g.i32s(&input), g.zeros(6 * 4));
    g.launch("barrier_counts", 2, 128, &[A::Ptr(pi), A::Ptr(po)])
        .result
        .unwrap();
    let got = g.get_i32(po, 6);
    for blk in 0..2 {
        let v = &input[blk * 128..(blk + 1) * 128];
        let want = [
            v.iter().filter(|&&x| x > 0).count() as i32,
            v.iter().all(|&x| x > -100) as i32,
            v.iter().any(|&x| x > 1000) as i32,
        ];
        assert_eq!(&got[blk * 3..blk * 3 + 3], &want, "block {blk}");
    }
    let po = g.zeros(128 * 4);
    g.launch("early_exit_barrier", 1, 128, &[A::I32(100), A::Ptr(po)])
        .result
        .unwrap();
    let got = g.get_i32(po, 100);
    for (t, v) in got.iter().enumerate() {
        assert_eq!(*v, 2 * ((t as i32 + 1) % 100));
    }
}

fn bit_manipulation(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let mut r = rng(21);
    let mut input: Vec<u32> = (0..64).map(|_| r() as u32 >> (r() % 32)).collect();
    input[0] = 0;
    input[1] = u32::MAX;
    let (pi, po) = (
        g.upload(
            &input
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        ),
        g.zeros(64 * 12 * 4),
    );
    g.launch("bits", 2, 32, &[A::Ptr(pi), A::Ptr(po)])
        .result
        .unwrap();
    let got = u32s_of(&g, po, 64 * 12);
    for (i, &v) in input.iter().enumerate() {
        let bytes = v as u64 | (0x12345678u64 << 32);
        let perm = (0..4)
            .map(|k| ((bytes >> (((0x7351u32 >> (4 * k)) & 7) * 8)) & 0xff) << (8 * k))
            .sum::<u64>() as u32;
        let want = [
            v.reverse_bits(),
            v.leading_zeros(),
            if v == 0 { 0 } else { v.trailing_zeros() + 1 },
            v.count_ones(),
            perm,
            ((v & 0xF0F0F0F0) ^ (!v & 0x0F0F00FF)) | (v >> 3),
            ((v as u64 * 0x9E3779B9) >> 32) as u32,
            ((v as i32 as i64 * -123456) >> 32) as u32,
            ((v as i32).wrapping_sub(77).unsigned_abs()).wrapping_add(5),
            v / 7 + v % 13,
            (((v as i32) >> 5) as u32).wrapping_add(v << (v & 31)),
            ((((0xABCDEF01u64 << 32) | v as u64) << (v & 31)) >> 32) as u32,
        ];
        assert_eq!(&got[i * 12..i * 12 + 12], &want, "v = {v:#x}");
    }
}

fn more_atomics_global_and_shared(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let n = 300;
    let inc = g.zeros(4);
    let dec = g.zeros(4);
    let exch = g.i32s(&[-1]);
    let bits = g.upload(
        &[0u32, u32::MAX, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    );
    let mn = g.i32s(&[i32::MAX]);
    let dsum = g.zeros(8);
    let fs = g.zeros(3 * 4);
    g.launch(
        "more_atomics",
        3,
        128,
        &[
            A::I32(n),
            A::Ptr(inc),
            A::Ptr(dec),
            A::Ptr(exch),
            A::Ptr(bits),
            A::Ptr(mn),
            A::Ptr(dsum),
            A::Ptr(fs),
        ],
    )
    .result
    .unwrap();
    assert_eq!(u32s_of(&g, inc, 1)[0], n as u32 % 10);
    assert_eq!(u32s_of(&g, dec, 1)[0], (6 - n as u32 % 6) % 6);
    let e = g.get_i32(exch, 1)[0];
    assert!((0..n).contains(&e));
    assert_eq!(
        u32s_of(&g, bits, 3),
        vec![u32::MAX, 0, (0..n as u32).fold(0, |a, i| a ^ i)]
    );
    assert_eq!(g.get_i32(mn, 1)[0], 1000 - (n - 1));
    assert_eq!(
        g.get_f64(dsum, 1)[0],
        (0..n).map(|i| i as f64 * 0.25).sum::<f64>()
    );
    assert_eq!(g.get_f32(fs, 3), vec![128.0, 128.0, 44.0]);
}

fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

/// `f64::next_up` and `next_down` are newer than the MSRV (1.85); finite inputs only.
fn next_up64(x: f64) -> f64 {
    if x == 0.0 {
        f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

fn next_down64(x: f64) -> f64 {
    -next_up64(-x)
}

fn directed_rounding_and_conversions(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let mut r = rng(31);
    let a: Vec<f32> = (0..32)
        .map(|i| {
            if i == 0 {
                2.5
            } else if i == 1 {
                -3.5
            } else {
                ((r() % 2_000_000) as f32 - 1e6) / 777.0
            }
        })
        .collect();
    let b: Vec<f32> = (0..32)
        .map(|_| ((r() % 2_000_000) as f32 + 1.0) / 3333.0 * if r() % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let (pa, pb, pf, pd, pr) = (
        g.f32s(&a),
        g.f32s(&b),
        g.zeros(32 * 8 * 4),
        g.zeros(32 * 4 * 8),
        g.zeros(32 * 6 * 4),
    );
    g.launch(
        "rounding",
        1,
        32,
        &[A::Ptr(pa), A::Ptr(pb), A::Ptr(pf), A::Ptr(pd), A::Ptr(pr)],
    )
    .result
    .unwrap();
    let f = g.get_f32(pf, 32 * 8);
    let d = g.get_f64(pd, 32 * 4);
    let ri = g.get_i32(pr, 32 * 6);
    for i in 0..32 {
        let (x, y) = (a[i], b[i]);
        let (xd, yd) = (x as f64, y as f64);
        let o = &f[i * 8..i * 8 + 8];
        // Exact values are representable in f64 for these magnitudes; check the bracket.
        let s = xd + yd;
        assert!(
            (o[0] as f64) <= s && (next_up(o[0]) as f64) > s,
            "add.rm {x} {y}"
        );
        assert!(
            (o[1] as f64) >= s && (next_down(o[1]) as f64) < s,
            "add.rp {x} {y}"
        );
        let p = xd * yd;
        assert!(
            (o[2] as f64).abs() <= p.abs() && (next_up(o[2].abs()) as f64) > p.abs(),
            "mul.rz {x} {y}"
        );
        // x / y rounded down: q*y <= x < next_up(q)*y for y > 0 (reversed for y < 0).
        let (lo, hi) = ((o[3] as f64) * yd, (next_up(o[3]) as f64) * yd);
        if y > 0.0 {
            assert!(lo <= xd && xd < hi, "div.rm {x} {y}");
        } else {
            assert!(lo >= xd && xd > hi, "div.rm {x} {y}");
        }
        let q = o[4] as f64;
        assert!(
            q * q >= xd.abs() && (next_down(o[4]) as f64).powi(2) < xd.abs(),
            "sqrt.rp {x}"
        );
        let e = p + 1.0;
        assert!(
            (o[5] as f64).abs() <= e.abs() && (next_up(o[5].abs()) as f64) > e.abs(),
            "fma.rz {x} {y}"
        );
        assert_eq!(o[6], x.clamp(0.0, 1.0));
        assert_eq!(o[7], x.min(y) + 1.0f32.copysign(y));
        let od = &d[i * 4..i * 4 + 4];
        let t = xd / 3.0;
        let (sum, err) = {
            let s = t + yd;
            let bb = s - t;
            (s, (t - (s - bb)) + (yd - bb))
        };
        assert_eq!(
            od[0],
            if err > 0.0 { next_up64(sum) } else { sum },
            "dadd.ru"
        );
        let (prod, perr) = (t * yd, t.mul_add(yd, -(t * yd)));
        assert_eq!(
            od[1],
            if perr < 0.0 { next_down64(prod) } else { prod },
            "dmul.rd"
        );
        let qd = od[2];
        assert!(
            qd.abs() <= (xd / yd).abs() + f64::EPSILON * (xd / yd).abs()
                && qd.abs() >= (xd / yd).abs() * (1.0 - 2.0 * f64::EPSILON),
            "ddiv.rz"
        );
        let fm = od[3];
        assert!(
            fm <= t.mul_add(yd, 1.0) && next_up64(fm) >= t.mul_add(yd, 1.0),
            "fma.rd"
        );
        let oi = &ri[i * 6..i * 6 + 6];
        assert_eq!(oi[0], x.round_ties_even() as i32, "rni {x}");
        assert_eq!(oi[1], x.floor() as i32, "rmi {x}");
        assert_eq!(oi[2], x.ceil() as i32, "rpi {x}");
        assert_eq!(oi[3], x.trunc() as i32, "rzi {x}");
        let k = (i as i32).wrapping_mul(16777219).wrapping_add(1) as i64;
        let mut kf = k as f32;
        if kf as i64 > k {
            kf = next_down(kf);
        }
        assert_eq!(oi[4], kf.to_bits() as i32, "cvt.rm.f32.s32 {k}");
        let yy = y * 1e9f32;
        assert_eq!(
            oi[5] as u32,
            if yy <= 0.0 {
                0
            } else {
                yy.round_ties_even().min(u32::MAX as f32) as u32
            },
            "cvt.rni.u32 {yy}"
        );
    }
}

fn intra_warp_spin_lock(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let (lock, counter) = (g.zeros(4), g.zeros(4));
    let out = g.launch_opts(
        "warp_lock",
        [2, 1, 1],
        [64, 1, 1],
        0,
        &[A::Ptr(lock), A::Ptr(counter)],
        LaunchOptions {
            threads: 2,
            instruction_budget: 1 << 26,
        },
    );
    out.result.unwrap();
    assert_eq!(g.get_i32(counter, 1)[0], 128);
}

fn block_waiting_for_a_later_block_is_parked(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let (flag, out) = (g.zeros(4), g.zeros(4));
    let r = g.launch_opts(
        "wait_for_other_block",
        [2, 1, 1],
        [32, 1, 1],
        0,
        &[A::Ptr(flag), A::Ptr(out)],
        LaunchOptions {
            threads: 1,
            instruction_budget: 1 << 30,
        },
    );
    r.result.unwrap();
    assert_eq!(g.get_i32(out, 1)[0], 42);
}

fn inline_asm_carry_chain(dir: &str) {
    let g = gpu(dir, "warp.ptx");
    let mut r = rng(41);
    let a: Vec<u64> = (0..64)
        .map(|i| if i < 2 { u64::MAX } else { r() })
        .collect();
    let b: Vec<u64> = (0..64).map(|i| if i == 0 { 1 } else { r() }).collect();
    let to_i = |v: &[u64]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
    let (pa, pb, po) = (g.i64s(&to_i(&a)), g.i64s(&to_i(&b)), g.zeros(64 * 8));
    g.launch("add_carry", 1, 32, &[A::Ptr(pa), A::Ptr(pb), A::Ptr(po)])
        .result
        .unwrap();
    let got = g.get_i64(po, 64);
    for i in 0..32 {
        let x = (a[2 * i] as u128) | ((a[2 * i + 1] as u128) << 64);
        let y = (b[2 * i] as u128) | ((b[2 * i + 1] as u128) << 64);
        let s = x.wrapping_add(y);
        assert_eq!(
            (got[2 * i] as u64, got[2 * i + 1] as u64),
            (s as u64, (s >> 64) as u64),
            "{i}"
        );
    }
}

fn debug_build_with_generic_addressing_and_sections(dir: &str) {
    let g = gpu(dir, "basic_G.ptx");
    let n = 300;
    let x = randf(n, 51);
    let y = randf(n, 52);
    let (px, py) = (g.f32s(&x), g.f32s(&y));
    g.launch(
        "saxpy",
        3,
        128,
        &[A::I32(n as i32), A::F32(0.5), A::Ptr(px), A::Ptr(py)],
    )
    .result
    .unwrap();
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(x, y)| 0.5f32.mul_add(*x, *y))
        .collect();
    // -G keeps mul and add separate: allow one rounding of difference.
    assert_close(&g.get_f32(py, n), &want, 1, "saxpy -G");
    let py = g.zeros(n * 4);
    g.launch(
        "devcall",
        3,
        128,
        &[A::I32(n as i32), A::Ptr(px), A::Ptr(py)],
    )
    .result
    .unwrap();
    let want: Vec<f32> = x.iter().map(|&x| 2.0 * x * x + (-3.0) * x + 1.0).collect();
    assert_close(&g.get_f32(py, n), &want, 4, "devcall -G");
    let input: Vec<i32> = (0..n as i32).map(|i| i * 13 - 500).collect();
    let (pi, po) = (g.i32s(&input), g.zeros(n * 4));
    g.launch(
        "divergent",
        3,
        128,
        &[A::I32(n as i32), A::Ptr(pi), A::Ptr(po)],
    )
    .result
    .unwrap();
    assert_eq!(
        g.get_i32(po, n),
        input.iter().map(|&v| divergent_ref(v)).collect::<Vec<_>>()
    );
}

fn divergent_ref(v: i32) -> i32 {
    if v % 3 == 0 {
        let mut r = v * 2;
        for k in 0..(v & 7) {
            r += k;
        }
        r
    } else if v % 3 == 1 {
        -v
    } else {
        v ^ 0x55
    }
}

// ---- half2/bf16, cp.async, local arrays, printf formats, templates (extra.ptx) ----

fn half2_and_bf16(dir: &str) {
    use half::{bf16, f16};
    let g = gpu(dir, "extra.ptx");
    let n = 64;
    let a = randf(2 * n, 61);
    let b: Vec<f32> = randf(2 * n, 62).iter().map(|v| v / 4.0).collect();
    let (pa, pb, po) = (g.f32s(&a), g.f32s(&b), g.zeros(3 * n * 4));
    g.launch(
        "half2_math",
        1,
        64,
        &[A::I32(n as i32), A::Ptr(pa), A::Ptr(pb), A::Ptr(po)],
    )
    .result
    .unwrap();
    let got = g.get_f32(po, 3 * n);
    for i in 0..n {
        for k in 0..2 {
            let x = f16::from_f32(a[2 * i + k]);
            let y = f16::from_f32(b[2 * i + k]);
            let s = f16::from_f64(x.to_f64() + y.to_f64());
            let want = f16::from_f64(x.to_f64().mul_add(y.to_f64(), s.to_f64()));
            assert_eq!(got[3 * i + k], want.to_f32(), "half2 {i}.{k}");
        }
        let (bx, by) = (bf16::from_f32(a[2 * i]), bf16::from_f32(b[2 * i]));
        assert_eq!(
            got[3 * i + 2],
            bf16::from_f64(bx.to_f64() * by.to_f64()).to_f32(),
            "bf16 {i}"
        );
    }
}

fn cp_async_and_mul24(dir: &str) {
    let g = gpu(dir, "extra.ptx");
    let input: Vec<i32> = (0..2 * 64 * 4).map(|i| i * 3 - 7).collect();
    let (pi, po) = (g.i32s(&input), g.zeros(128 * 4));
    g.launch("async_copy", 2, 64, &[A::Ptr(pi), A::Ptr(po)])
        .result
        .unwrap();
    let got = g.get_i32(po, 128);
    for blk in 0..2 {
        for t in 0..64 {
            let v = &input[(blk * 64 + 63 - t) * 4..][..4];
            assert_eq!(
                got[blk * 64 + t],
                v[0] + v[1] * 2 + v[2] * 3 + v[3] * 4 + t as i32 * 3
            );
        }
    }
}

fn local_memory_array(dir: &str) {
    let g = gpu(dir, "extra.ptx");
    let n = 100;
    let idx: Vec<i32> = (0..n).map(|i| (i * 37) % 1024).collect();
    let (pi, po) = (g.i32s(&idx), g.zeros(n as usize * 4));
    g.launch("local_array", 1, 128, &[A::I32(n), A::Ptr(pi), A::Ptr(po)])
        .result
        .unwrap();
    let got = g.get_i32(po, n as usize);
    for i in 0..n as usize {
        let t = |k: i32| k * k + i as i32;
        assert_eq!(got[i], t(idx[i] & 31) + t((idx[i] >> 5) & 31));
    }
}

fn printf_formats_and_block_order(dir: &str) {
    let g = gpu(dir, "extra.ptx");
    let s = g.upload(b"hello\0");
    let out = g.launch(
        "printf_formats",
        2,
        32,
        &[
            A::Bytes((-1234567890123i64).to_le_bytes().to_vec()),
            A::Bytes(1234.5678f64.to_le_bytes().to_vec()),
            A::Ptr(s),
        ],
    );
    out.result.unwrap();
    assert_eq!(
        out.printf,
        "block0 lane1\n[  -42|7   |009] -1234567890123 -1234567890123 18446742839141661493 Z 1.235e+03 1234.57 1234.57 hello beef\n"
    );
}

fn template_instantiations(dir: &str) {
    let g = gpu(dir, "extra.ptx");
    let input: Vec<f64> = (0..32).map(|i| i as f64 * 1.25 - 3.0).collect();
    let (pi, po, ps) = (g.f64s(&input), g.zeros(32 * 8), g.zeros(64));
    g.launch("templated", 1, 32, &[A::Ptr(pi), A::Ptr(po), A::Ptr(ps)])
        .result
        .unwrap();
    let got = g.get_f64(po, 32);
    let shorts: Vec<u16> = g
        .read(ps, 64)
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    for i in 0..32 {
        assert_eq!(got[i], (input[i] + input[i]) * 0.5 - 1.0 / 3.0);
        assert_eq!(shorts[i], ((i * 1000) as u16).wrapping_mul(2));
    }
}

// ---- hand-written PTX ----

fn ptx_kernel(body: &str, params: &str) -> Gpu {
    let src = format!(".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k({params})\n{{\n{body}\n}}\n");
    let module =
        Arc::new(Module::load(src.as_bytes(), 80).unwrap_or_else(|e| panic!("{e}\n{src}")));
    let space = AddressSpace::new(DeviceMemory::new(1 << 30), 0x7f00_0000_0000, 1 << 34);
    let lm = LoadedModule::new(module, &space).unwrap();
    Gpu { space, lm }
}

#[test]
fn warp_sz_is_the_warp_size() {
    let g = ptx_kernel(
        r#"
    .reg .b32 %r<3>;
    .reg .b64 %rd<2>;
    ld.param.u64 %rd1, [k_param_0];
    mov.u32 %r1, WARP_SZ;
    add.u32 %r2, %r1, WARP_SZ;
    st.global.u32 [%rd1], %r2;
    ret;"#,
        ".param .u64 k_param_0",
    );
    let p = g.zeros(4);
    g.launch("k", 1, 1, &[A::Ptr(p)]).result.unwrap();
    assert_eq!(u32s_of(&g, p, 1), [64]);
}

#[test]
fn set_slct_testp_isspacep_and_predicate_logic() {
    let g = ptx_kernel(
        r#"
    .reg .pred %p<6>;
    .reg .b32 %r<12>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b32 sh[4];
    ld.param.u64 %rd1, [k_param_0];
    mov.u32 %r1, %tid.x;
    set.lt.u32.s32 %r2, %r1, 3;
    cvt.rn.f32.u32 %f1, %r1;
    sub.f32 %f2, %f1, 0f40000000;
    slct.s32.f32 %r3, 100, 200, %f2;
    div.rn.f32 %f3, %f2, 0f00000000;
    testp.infinite.f32 %p1, %f3;
    selp.u32 %r4, 1, 0, %p1;
    mov.u64 %rd2, sh;
    cvta.shared.u64 %rd3, %rd2;
    isspacep.shared %p2, %rd3;
    isspacep.global %p3, %rd3;
    and.pred %p4, %p2, %p3;
    or.pred %p5, %p2, %p3;
    selp.u32 %r5, 1, 0, %p4;
    selp.u32 %r6, 1, 0, %p5;
    setp.gt.and.s32 %p1|%p3, %r1, 1, %p2;
    selp.u32 %r7, 1, 0, %p3;
    mul.wide.u32 %rd2, %r1, 24;
    add.s64 %rd2, %rd1, %rd2;
    st.global.v2.u32 [%rd2], {%r2, %r3};
    st.global.v2.u32 [%rd2+8], {%r4, %r5};
    st.global.v2.u32 [%rd2+16], {%r6, %r7};
    ret;"#,
        ".param .u64 k_param_0",
    );
    let p = g.zeros(4 * 24);
    g.launch("k", 1, 4, &[A::Ptr(p)]).result.unwrap();
    let got = u32s_of(&g, p, 4 * 6);
    for t in 0..4u32 {
        let row = &got[t as usize * 6..][..6];
        let f2 = t as f32 - 2.0;
        assert_eq!(
            row,
            &[
                if t < 3 { u32::MAX } else { 0 },
                if f2 >= 0.0 { 100 } else { 200 },
                (f2 != 0.0) as u32,
                0,
                1,
                (t <= 1) as u32
            ],
            "thread {t}"
        );
    }
}

#[test]
fn recursive_device_functions() {
    // Each lane recurses to its own depth: divergence inside recursion.
    let src = r#".version 8.0
.target sm_80
.address_size 64
.func (.param .b32 r) fact(.param .b32 a)
{
    .reg .pred %p;
    .reg .b32 %x, %y;
    ld.param.b32 %x, [a];
    setp.le.s32 %p, %x, 1;
    @%p bra BASE;
    {
    .param .b32 p0;
    .param .b32 r0;
    sub.s32 %y, %x, 1;
    st.param.b32 [p0], %y;
    call (r0), fact, (p0);
    ld.param.b32 %y, [r0];
    }
    mul.lo.s32 %x, %x, %y;
    st.param.b32 [r], %x;
    ret;
BASE:
    st.param.b32 [r], 1;
    ret;
}

.visible .entry k(.param .u64 out)
{
    .reg .b32 %t, %v;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [out];
    mov.u32 %t, %tid.x;
    rem.u32 %t, %t, 13;
    {
    .param .b32 p0;
    .param .b32 r0;
    st.param.b32 [p0], %t;
    call (r0), fact, (p0);
    ld.param.b32 %v, [r0];
    }
    mov.u32 %t, %tid.x;
    mul.wide.u32 %rd2, %t, 4;
    add.s64 %rd2, %rd1, %rd2;
    st.global.u32 [%rd2], %v;
    ret;
}
"#;
    let module = Arc::new(Module::load(src.as_bytes(), 80).unwrap());
    let space = AddressSpace::new(DeviceMemory::new(1 << 20), 0x7f00_0000_0000, 1 << 30);
    let lm = LoadedModule::new(module, &space).unwrap();
    let g = Gpu { space, lm };
    let p = g.zeros(64 * 4);
    g.launch("k", 1, 64, &[A::Ptr(p)]).result.unwrap();
    let fact = |n: i32| (1..=n).product::<i32>().max(1);
    let want: Vec<i32> = (0..64).map(|t| fact(t % 13)).collect();
    assert_eq!(g.get_i32(p, 64), want);
}

/// Linked numba modules as the shim joins them: the kernel's module declares `f2` (`.extern`)
/// and two more modules each carry the same `.weak` definition of it; `{second}` replaces the
/// second definition's linkage.
fn linked_modules(second: &str) -> String {
    let def = |linkage: &str, add: i32| {
        format!(
            ".{linkage} .func (.param .b32 r) f2(.param .b32 a)\n{{\n.reg .b32 %x;\nld.param.b32 %x, [a];\nadd.s32 %x, %x, {add};\nst.param.b32 [r], %x;\nret;\n}}\n"
        )
    };
    format!(
        r#".version 8.0
.target sm_80, debug
.address_size 64
.extern .func (.param .b32 r) f2(.param .b32 a);
.visible .entry k(.param .u64 out)
{{
    .reg .b32 %v;
    .reg .b64 %rd;
    ld.param.u64 %rd, [out];
    {{
    .param .b32 p0;
    .param .b32 r0;
    st.param.b32 [p0], 41;
    call (r0), f2, (p0);
    ld.param.b32 %v, [r0];
    }}
    st.global.u32 [%rd], %v;
    ret;
}}
{}{}"#,
        def("weak", 1),
        def(second, 2)
    )
}

#[test]
fn a_weak_function_defined_again_by_linking_keeps_one_definition() {
    let run = |src: String| {
        let module = Arc::new(Module::load(src.as_bytes(), 80).unwrap_or_else(|e| panic!("{e}")));
        let space = AddressSpace::new(DeviceMemory::new(1 << 20), 0x7f00_0000_0000, 1 << 30);
        let lm = LoadedModule::new(module, &space).unwrap();
        let g = Gpu { space, lm };
        let p = g.zeros(4);
        g.launch("k", 1, 1, &[A::Ptr(p)]).result.unwrap();
        g.get_i32(p, 1)[0]
    };
    // Two weak definitions: the first is kept. A non-weak one wins over a weak one.
    assert_eq!(run(linked_modules("weak")), 42);
    assert_eq!(run(linked_modules("visible")), 43);
    // Two non-weak definitions are a true duplicate.
    let e = Module::load(
        linked_modules("visible")
            .replacen(".weak", ".visible", 1)
            .as_bytes(),
        80,
    )
    .unwrap_err();
    assert_eq!(e.cuda_code(), 218, "{e}");
    assert!(e.to_string().contains("`f2` defined twice"), "{e}");
}

/// Functions called through pointers, as numba's NRT calls a destructor: from a table in a
/// global initialiser, from `mov` of a function's name, and with a prototype.
const INDIRECT: &str = r#".version 8.0
.target sm_80
.address_size 64
.func (.param .b32 r) add1(.param .b32 a)
{
    .reg .b32 %x;
    ld.param.b32 %x, [a];
    add.s32 %x, %x, 1;
    st.param.b32 [r], %x;
    ret;
}
.func (.param .b32 r) dbl(.param .b32 a)
{
    .reg .b32 %x;
    ld.param.b32 %x, [a];
    shl.b32 %x, %x, 1;
    st.param.b32 [r], %x;
    ret;
}
.extern .func (.param .b32 r) nobody(.param .b32 a);
.global .align 8 .u64 table[2] = {add1, dbl};

.visible .entry k(.param .u64 out, .param .u64 bad)
{
    .reg .pred %p;
    .reg .b32 %t, %v, %odd;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [out];
    mov.u32 %t, %tid.x;
    and.b32 %odd, %t, 1;
    mul.wide.u32 %rd2, %odd, 8;
    mov.u64 %rd3, table;
    add.s64 %rd3, %rd3, %rd2;
    ld.global.u64 %rd4, [%rd3];
    setp.eq.u32 %p, %t, 5;
    @%p mov.u64 %rd4, add1;
    ld.param.u64 %rd5, [bad];
    setp.ne.u64 %p, %rd5, 0;
    @%p mov.u64 %rd4, %rd5;
    {
    .param .b32 p0;
    .param .b32 r0;
    st.param.b32 [p0], %t;
    proto: .callprototype (.param .b32 _) _ (.param .b32 _);
    call (r0), %rd4, (p0), proto;
    ld.param.b32 %v, [r0];
    }
    mul.wide.u32 %rd6, %t, 4;
    add.s64 %rd6, %rd1, %rd6;
    st.global.u32 [%rd6], %v;
    ret;
}
.visible .entry to_nobody()
{
    .reg .b64 %rd;
    .reg .b32 %v;
    mov.u64 %rd, nobody;
    {
    .param .b32 p0;
    .param .b32 r0;
    st.param.b32 [p0], 1;
    proto: .callprototype (.param .b32 _) _ (.param .b32 _);
    call (r0), %rd, (p0), proto;
    ld.param.b32 %v, [r0];
    }
    ret;
}
"#;

#[test]
fn indirect_calls_through_function_pointers() {
    let module = Arc::new(Module::load(INDIRECT.as_bytes(), 80).unwrap_or_else(|e| panic!("{e}")));
    let space = AddressSpace::new(DeviceMemory::new(1 << 20), 0x7f00_0000_0000, 1 << 30);
    let lm = LoadedModule::new(module, &space).unwrap();
    let g = Gpu { space, lm };
    let p = g.zeros(64 * 4);
    // Even lanes call add1, odd lanes dbl (one warp, two targets), lane 5 add1 by name.
    g.launch("k", 1, 64, &[A::Ptr(p), A::Ptr(0)])
        .result
        .unwrap();
    let want: Vec<i32> = (0..64)
        .map(|t| if t % 2 == 0 || t == 5 { t + 1 } else { t * 2 })
        .collect();
    assert_eq!(g.get_i32(p, 64), want);
    // A pointer that is not a function is an invalid program counter (718), as is one to a
    // function that has no body.
    let e = g
        .launch("k", 1, 32, &[A::Ptr(p), A::Ptr(p)])
        .result
        .unwrap_err();
    assert_eq!(e.cuda_code(), 718, "{e}");
    let e = g.launch("to_nobody", 1, 1, &[]).result.unwrap_err();
    assert_eq!(e.cuda_code(), 718, "{e}");
}

const HEAP: &str = r#".version 8.0
.target sm_80
.address_size 64
.extern .func (.param .b64 r) malloc(.param .b64 n);
.extern .func free(.param .b64 p);

.visible .entry k(.param .u64 out, .param .u64 size, .param .u64 to_free)
{
    .reg .pred %p;
    .reg .b32 %t;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [out];
    ld.param.u64 %rd2, [size];
    mov.u32 %t, %tid.x;
    {
    .param .b64 p0;
    .param .b64 r0;
    st.param.b64 [p0], %rd2;
    call (r0), malloc, (p0);
    ld.param.b64 %rd3, [r0];
    }
    setp.eq.u64 %p, %rd3, 0;
    @%p bra NULL;
    cvt.u64.u32 %rd4, %t;
    st.u64 [%rd3], %rd4;
    st.u64 [%rd3+8], %rd4;
    ld.u64 %rd5, [%rd3+8];
    add.u64 %rd5, %rd5, 100;
    ld.param.u64 %rd6, [to_free];
    setp.ne.u64 %p, %rd6, 0;
    @%p mov.u64 %rd3, %rd6;
    {
    .param .b64 p0;
    st.param.b64 [p0], %rd3;
    call free, (p0);
    }
    bra DONE;
NULL:
    mov.u64 %rd5, 0;
DONE:
    mul.wide.u32 %rd7, %t, 8;
    add.s64 %rd7, %rd1, %rd7;
    st.global.u64 [%rd7], %rd5;
    ret;
}
"#;

#[test]
fn device_malloc_and_free() {
    let module = Arc::new(Module::load(HEAP.as_bytes(), 80).unwrap_or_else(|e| panic!("{e}")));
    let dev = DeviceMemory::new(1 << 20);
    let space = AddressSpace::new(dev.clone(), 0x7f00_0000_0000, 1 << 30);
    let lm = LoadedModule::new(module, &space).unwrap();
    let g = Gpu { space, lm };
    let p = g.zeros(64 * 8);
    let free_before = dev.free();
    g.launch("k", 1, 64, &[A::Ptr(p), A::Ptr(16), A::Ptr(0)])
        .result
        .unwrap();
    let want: Vec<i64> = (0..64).map(|t| t + 100).collect();
    assert_eq!(g.get_i64(p, 64), want);
    // Every thread freed what it took.
    assert_eq!(dev.free(), free_before);
    // More than the device holds: malloc returns NULL, the kernel carries on.
    g.launch("k", 1, 4, &[A::Ptr(p), A::Ptr(1 << 30), A::Ptr(0)])
        .result
        .unwrap();
    assert_eq!(g.get_i64(p, 4), [0; 4]);
    // free() of memory malloc did not return is an illegal address; the host cannot free
    // device-heap memory either.
    let e = g
        .launch("k", 1, 1, &[A::Ptr(p), A::Ptr(16), A::Ptr(p)])
        .result
        .unwrap_err();
    assert_eq!(e.cuda_code(), 700, "{e}");
    let h = g.space.heap_alloc(8).unwrap();
    assert!(g.space.free(h).is_err());
    assert!(g.space.heap_free(h).is_ok());
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    // Each activation has local memory of its own; endless recursion runs out of it and fails
    // the launch (719) instead of exhausting the host.
    let src = r#".version 8.0
.target sm_80
.address_size 64
.func down(.param .b64 a)
{
    .local .align 8 .b8 depot[512];
    .reg .b64 %p, %q;
    ld.param.b64 %p, [a];
    mov.u64 %q, depot;
    cvta.local.u64 %q, %q;
    st.u64 [%q], %p;
    {
    .param .b64 p0;
    st.param.b64 [p0], %q;
    call down, (p0);
    }
    ret;
}

.visible .entry k()
{
    {
    .param .b64 p0;
    st.param.b64 [p0], 0;
    call down, (p0);
    }
    ret;
}
"#;
    let module = Arc::new(Module::load(src.as_bytes(), 80).unwrap());
    let space = AddressSpace::new(DeviceMemory::new(1 << 20), 0x7f00_0000_0000, 1 << 30);
    let lm = LoadedModule::new(module, &space).unwrap();
    let g = Gpu { space, lm };
    let err = g.launch("k", 1, 32, &[]).result.unwrap_err();
    assert_eq!(err.cuda_code(), 719, "{err}");
    assert!(err.to_string().contains("stack overflow"), "{err}");
}

#[test]
fn barrier_deadlock_is_719() {
    let g = ptx_kernel(
        r#"
    .reg .pred %p1;
    .reg .b32 %r1;
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, 32;
    @%p1 bra SKIP;
    bar.sync 0;
SKIP:
    bar.sync 1, 64;
    ret;"#,
        "",
    );
    let out = g.launch("k", 1, 64, &[]);
    assert_eq!(out.result.unwrap_err().cuda_code(), 719);
}

#[test]
fn executing_mutated_kernels_never_panics() {
    let mut r = rng(77);
    let space = AddressSpace::new(DeviceMemory::new(1 << 26), 0x7f00_0000_0000, 1 << 30);
    let buf = space.alloc(1 << 16).unwrap();
    let mut ran = 0;
    for path in corpus_files() {
        let src = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = src.lines().collect();
        for _ in 0..60 {
            let mut m: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            for _ in 0..3 {
                let i = r() as usize % m.len();
                let j = r() as usize % m.len();
                match r() % 3 {
                    0 => m[i] = m[j].clone(),
                    1 => m.swap(i, j),
                    _ => {
                        m.remove(i);
                    }
                }
            }
            let Ok(module) = Module::load(m.join("\n").as_bytes(), 80) else {
                continue;
            };
            let module = Arc::new(module);
            let Ok(lm) = LoadedModule::new(module.clone(), &space) else {
                continue;
            };
            for k in module.kernels() {
                // Every 8-byte slot holds the buffer's address; small integers read its low half.
                let mut params = vec![0u8; k.params_size() as usize];
                for (i, b) in params.iter_mut().enumerate() {
                    *b = (buf + 64).to_le_bytes()[i % 8];
                }
                let cfg = LaunchConfig {
                    grid: [2, 1, 1],
                    block: [40, 1, 1],
                    dynamic_shared_bytes: 256,
                    cooperative: false,
                };
                let opts = LaunchOptions {
                    threads: 1,
                    instruction_budget: 20_000,
                };
                let _ = lm.launch(&space, &k.name, &cfg, &params, &opts);
                ran += 1;
            }
            lm.free(&space);
        }
    }
    assert!(ran > 200, "only {ran} mutated kernels ran");
}

fn dp4a_dp2a_and_half2_atomics(dir: &str) {
    let g = gpu(dir, "extra.ptx");
    let mut r = rng(71);
    let a: Vec<i32> = (0..32).map(|_| r() as i32).collect();
    let b: Vec<i32> = (0..32).map(|_| r() as i32).collect();
    let (pa, pb, po, pacc) = (g.i32s(&a), g.i32s(&b), g.zeros(96 * 4), g.zeros(4));
    g.launch(
        "int8_dots",
        1,
        32,
        &[A::Ptr(pa), A::Ptr(pb), A::Ptr(po), A::Ptr(pacc)],
    )
    .result
    .unwrap();
    let got = g.get_i32(po, 96);
    for i in 0..32 {
        let (x, y) = (a[i].to_le_bytes(), b[i].to_le_bytes());
        let s: i32 = (0..4)
            .map(|k| x[k] as i8 as i32 * y[k] as i8 as i32)
            .sum::<i32>()
            + i as i32;
        let u: u32 = (0..4)
            .map(|k| x[k] as u32 * y[k] as u32)
            .sum::<u32>()
            .wrapping_add(7);
        let h = |k: usize| (a[i] >> (16 * k)) as i16 as i32;
        let d2 = h(0) * y[2] as i8 as i32 + h(1) * y[3] as i8 as i32 - i as i32;
        assert_eq!(&got[3 * i..3 * i + 3], &[s, u as i32, d2], "{i}");
    }
    let acc = g.read(pacc, 4);
    let lo = half::f16::from_bits(u16::from_le_bytes([acc[0], acc[1]]));
    let hi = half::f16::from_bits(u16::from_le_bytes([acc[2], acc[3]]));
    assert_eq!((lo.to_f32(), hi.to_f32()), (16.0, 48.0));
}

#[test]
fn labels_are_scoped_to_inline_asm_blocks() {
    // The same label in two `{ }` scopes, as two expansions of one inline asm would produce.
    let g = ptx_kernel(
        r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [k_param_0];
    mov.u32 %r1, 0;
    {
    .reg .pred p;
    mov.u32 %r2, 0;
LOOP:
    add.u32 %r1, %r1, 1;
    add.u32 %r2, %r2, 1;
    setp.lt.u32 p, %r2, 3;
    @p bra LOOP;
    }
    {
    .reg .pred p;
    mov.u32 %r2, 0;
LOOP:
    add.u32 %r1, %r1, 10;
    add.u32 %r2, %r2, 1;
    setp.lt.u32 p, %r2, 2;
    @p bra LOOP;
    }
    st.global.u32 [%rd1], %r1;
    ret;"#,
        ".param .u64 k_param_0",
    );
    let p = g.zeros(4);
    g.launch("k", 1, 1, &[A::Ptr(p)]).result.unwrap();
    assert_eq!(g.get_i32(p, 1)[0], 23);
}

fn printf_output_is_capped_like_the_device_fifo(dir: &str) {
    let g = gpu(dir, "misc.ptx");
    let n = 20000;
    let x = g.f32s(&vec![1.0; n]);
    let out = g.launch(
        "printer",
        (n as u32).div_ceil(256),
        256,
        &[A::I32(n as i32), A::Ptr(x)],
    );
    out.result.unwrap();
    assert!(
        out.printf.len() <= 1 << 20 && out.printf.len() > 500_000,
        "{}",
        out.printf.len()
    );
    assert!(out.printf.starts_with("thread 0 value 1.000000"));
}

/// Runs one thread of `body` (which stores 32-bit results at [%rd1 + 4*k]) and returns them.
fn run_scalar(body: &str, n: usize) -> Vec<u32> {
    let g = ptx_kernel(
        &format!(
            "    .reg .pred %p<8>;\n    .reg .b32 %r<64>;\n    .reg .f32 %f<32>;\n    .reg .b64 %rd<16>;\n    .reg .f64 %fd<16>;\n    ld.param.u64 %rd1, [k_param_0];\n{body}\n    ret;"
        ),
        ".param .u64 k_param_0",
    );
    let p = g.zeros(n * 4);
    g.launch("k", 1, 1, &[A::Ptr(p)]).result.unwrap();
    u32s_of(&g, p, n)
}

#[test]
fn integer_instruction_table() {
    let got = run_scalar(
        r#"
    mov.u32 %r1, 0xF0F0A5A5;
    mov.u32 %r2, 0x12345678;
    mov.u32 %r3, 0x0FF000FF;
    lop3.b32 %r10, %r1, %r2, %r3, 0xE8;
    st.global.u32 [%rd1], %r10;
    bfe.u32 %r11, %r1, 4, 12;
    st.global.u32 [%rd1+4], %r11;
    bfe.s32 %r12, %r1, 28, 8;
    st.global.u32 [%rd1+8], %r12;
    bfi.b32 %r13, %r2, %r1, 8, 12;
    st.global.u32 [%rd1+12], %r13;
    sub.cc.u32 %r14, 5, 7;
    subc.u32 %r15, 10, 3;
    st.global.u32 [%rd1+16], %r14;
    st.global.u32 [%rd1+20], %r15;
    mad.lo.cc.u32 %r16, %r1, %r2, %r3;
    madc.hi.u32 %r17, %r1, %r2, 0;
    st.global.u32 [%rd1+24], %r16;
    st.global.u32 [%rd1+28], %r17;
    add.sat.s32 %r18, 0x7FFFFFF0, 0x100;
    st.global.u32 [%rd1+32], %r18;
    cvt.sat.u8.s32 %r19, -5;
    st.global.u32 [%rd1+36], %r19;
    cvt.s8.s32 %r20, 200;
    cvt.s32.s8 %r20, %r20;
    st.global.u32 [%rd1+40], %r20;
    bfind.s32 %r21, -1;
    st.global.u32 [%rd1+44], %r21;
    bfind.u32 %r22, 0x00010000;
    st.global.u32 [%rd1+48], %r22;
    shr.s32 %r23, -64, 40;
    st.global.u32 [%rd1+52], %r23;
    shl.b32 %r24, 1, 32;
    st.global.u32 [%rd1+56], %r24;
    rem.s32 %r25, -7, 3;
    st.global.u32 [%rd1+60], %r25;
    div.u32 %r26, 7, 0;
    st.global.u32 [%rd1+64], %r26;
    mul.hi.s32 %r27, -2, 0x40000000;
    st.global.u32 [%rd1+68], %r27;
    min.s32 %r28, -3, 2;
    max.u32 %r29, -3, 2;
    st.global.u32 [%rd1+72], %r28;
    st.global.u32 [%rd1+76], %r29;
    cnot.b32 %r30, 0;
    popc.b32 %r31, %r1;
    st.global.u32 [%rd1+80], %r30;
    st.global.u32 [%rd1+84], %r31;
    prmt.b32 %r32, %r1, %r2, 0x8F40;
    st.global.u32 [%rd1+88], %r32;
    mov.b64 %rd2, {%r1, %r2};
    shr.u64 %rd3, %rd2, 16;
    mov.b64 {%r33, %r34}, %rd3;
    st.global.u32 [%rd1+92], %r33;
    st.global.u32 [%rd1+96], %r34;
    "#,
        25,
    );
    let (a, b, c) = (0xF0F0A5A5u32, 0x12345678u32, 0x0FF000FFu32);
    let lop = (a & b) | (a & c) | (b & c); // 0xE8 is majority
    let p = (a as u64) * (b as u64);
    let lo = (p as u32).overflowing_add(c);
    let hi = ((p >> 32) as u32).wrapping_add(lo.1 as u32);
    let prmt = {
        let bytes = (a as u64) | ((b as u64) << 32);
        let sel = [0x0u32, 0x4, 0xF, 0x8];
        let mut r = 0u32;
        for (k, s) in sel.iter().enumerate() {
            let byte = ((bytes >> ((s & 7) * 8)) & 0xff) as u32;
            let byte = if s & 8 != 0 {
                if byte & 0x80 != 0 {
                    0xff
                } else {
                    0
                }
            } else {
                byte
            };
            r |= byte << (8 * k);
        }
        r
    };
    let packed = ((b as u64) << 32 | a as u64) >> 16;
    let want = [
        lop,
        (a >> 4) & 0xFFF,
        0xFFFF_FFFF, // bits 28..31 = 0xF, sign-extended
        (a & !(0xFFF << 8)) | ((b & 0xFFF) << 8),
        5u32.wrapping_sub(7),
        10 - 3 - 1, // borrow from the first subtraction
        lo.0,
        hi,
        i32::MAX as u32,
        0,
        (200u8 as i8) as i32 as u32,
        u32::MAX,
        16,
        u32::MAX,
        0,
        (-1i32) as u32,
        u32::MAX,
        ((-2i64 * 0x40000000) >> 32) as u32,
        (-3i32) as u32,
        (-3i32) as u32,
        1,
        a.count_ones(),
        prmt,
        packed as u32,
        (packed >> 32) as u32,
    ];
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "result {k}: {g:#x} vs {w:#x}");
    }
}

#[test]
fn relu_forms_of_half_fma_and_cvt() {
    // The bf16 kernels of CUDA's headers link `fma.rn.relu.bf16`; values by hand.
    let got = run_scalar(
        r#"
    .reg .b16 %h<8>;
    mov.b16 %h1, 0x4000;
    mov.b16 %h2, 0xC040;
    mov.b16 %h3, 0x3F80;
    fma.rn.relu.bf16 %h4, %h1, %h2, %h3;
    fma.rn.bf16 %h5, %h1, %h2, %h3;
    mov.b32 %r1, {%h4, %h5};
    st.global.u32 [%rd1], %r1;
    mov.b32 %r2, 0xC0404040;
    mov.b32 %r3, 0x40004000;
    mov.b32 %r4, 0x3F803F80;
    fma.rn.relu.bf16x2 %r5, %r2, %r3, %r4;
    st.global.u32 [%rd1+4], %r5;
    mov.b16 %h6, 0x7FC1;
    fma.rn.relu.bf16 %h7, %h6, %h3, %h3;
    mov.b32 %r6, {%h7, %h7};
    st.global.u32 [%rd1+8], %r6;
    mov.b32 %r7, 0xB800B800;
    mov.b32 %r8, 0x38003800;
    mov.b32 %r9, 0x30003000;
    fma.rn.ftz.relu.f16x2 %r10, %r7, %r8, %r9;
    st.global.u32 [%rd1+12], %r10;
    mov.f32 %f1, 0fC0000000;
    mov.f32 %f2, 0f40000000;
    cvt.rn.relu.bf16x2.f32 %r11, %f1, %f2;
    st.global.u32 [%rd1+16], %r11;
    mov.f32 %f3, 0f7FC00000;
    cvt.rn.relu.f16x2.f32 %r12, %f3, %f1;
    st.global.u32 [%rd1+20], %r12;
    "#,
        6,
    );
    // 2 * -3 + 1 = -5: 0 with .relu, 0xC0A0 without; bf16x2 lanes 7 (0x40E0) and -5 -> 0;
    // NaN -> canonical 0x7FFF; f16x2 -0.5 * 0.5 + 0.125 = -0.125 -> 0 in both lanes;
    // cvt packs its first source high: relu(-2) = 0 high, 2.0 (0x4000) low; NaN high.
    assert_eq!(
        got,
        [
            0xC0A0_0000,
            0x0000_40E0,
            0x7FFF_7FFF,
            0,
            0x0000_4000,
            0x7FFF_0000
        ],
        "{got:x?}"
    );
}

#[test]
fn min_max_nan_propagate_nan() {
    // numba's hmax_nan/hmin_nan: `.NaN` makes a NaN operand win; plain min/max drop it.
    let got = run_scalar(
        r#"
    .reg .b16 %h<8>;
    mov.f32 %f1, 0f7FC00000;
    mov.f32 %f2, 0f40000000;
    max.NaN.f32 %f3, %f1, %f2;
    min.NaN.f32 %f4, %f2, %f1;
    max.f32 %f5, %f1, %f2;
    st.global.f32 [%rd1], %f3;
    st.global.f32 [%rd1+4], %f4;
    st.global.f32 [%rd1+8], %f5;
    mov.b16 %h1, 0x7FC0;
    mov.b16 %h2, 0x4000;
    max.NaN.bf16 %h3, %h1, %h2;
    min.bf16 %h4, %h1, %h2;
    mov.b32 %r1, {%h3, %h4};
    st.global.u32 [%rd1+12], %r1;
    mov.b32 %r2, 0x7E004000;
    mov.b32 %r3, 0x3C003C00;
    min.NaN.f16x2 %r4, %r2, %r3;
    st.global.u32 [%rd1+16], %r4;
    "#,
        5,
    );
    assert_eq!(
        got,
        [
            0x7FFF_FFFF,
            0x7FFF_FFFF,
            0x4000_0000,
            0x4000_7FFF,
            0x7FFF_3C00
        ],
        "{got:x?}"
    );
    let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n.reg .b16 %h<4>;\n max.xorsign.abs.bf16 %h1, %h2, %h3;\n ret;\n}\n";
    let e = Module::load(src.as_bytes(), 80).unwrap_err();
    assert_eq!(e.cuda_code(), 801, "{e}");
}

#[test]
fn relu_on_other_instructions_is_refused() {
    let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n.reg .f32 %f<4>;\n fma.rn.relu.f32 %f1, %f2, %f3, %f3;\n ret;\n}\n";
    let e = Module::load(src.as_bytes(), 80).unwrap_err();
    assert_eq!(e.cuda_code(), 801, "{e}");
    assert!(e.to_string().contains("fma.rn.relu.f32"), "{e}");
}

#[test]
fn float_instruction_table() {
    let got = run_scalar(
        r#"
    mov.f32 %f1, 0f3FC00000;
    mov.f32 %f2, 0fC0200000;
    mov.f32 %f3, 0f7FC00000;
    min.f32 %f4, %f1, %f3;
    st.global.f32 [%rd1], %f4;
    max.f32 %f5, %f3, %f2;
    st.global.f32 [%rd1+4], %f5;
    ex2.approx.f32 %f6, %f1;
    st.global.f32 [%rd1+8], %f6;
    lg2.approx.f32 %f7, %f1;
    st.global.f32 [%rd1+12], %f7;
    sin.approx.f32 %f8, %f1;
    st.global.f32 [%rd1+16], %f8;
    cos.approx.f32 %f9, %f1;
    st.global.f32 [%rd1+20], %f9;
    tanh.approx.f32 %f10, %f2;
    st.global.f32 [%rd1+24], %f10;
    rcp.approx.f32 %f11, %f2;
    st.global.f32 [%rd1+28], %f11;
    rsqrt.approx.f32 %f12, %f1;
    st.global.f32 [%rd1+32], %f12;
    mov.f64 %fd1, 0d3FF0000000000001;
    cvt.rn.f32.f64 %f13, %fd1;
    cvt.rp.f32.f64 %f14, %fd1;
    st.global.f32 [%rd1+36], %f13;
    st.global.f32 [%rd1+40], %f14;
    cvt.rzi.f32.f32 %f15, %f2;
    cvt.rmi.f32.f32 %f16, %f2;
    st.global.f32 [%rd1+44], %f15;
    st.global.f32 [%rd1+48], %f16;
    mov.f32 %f17, 0f00000001;
    add.ftz.f32 %f18, %f17, %f17;
    add.f32 %f19, %f17, %f17;
    st.global.f32 [%rd1+52], %f18;
    st.global.f32 [%rd1+56], %f19;
    mul.sat.f32 %f20, %f1, %f1;
    st.global.f32 [%rd1+60], %f20;
    setp.nan.f32 %p1, %f3, %f1;
    setp.equ.f32 %p2, %f3, %f1;
    setp.eq.f32 %p3, %f3, %f3;
    selp.u32 %r1, 1, 0, %p1;
    selp.u32 %r2, 1, 0, %p2;
    selp.u32 %r3, 1, 0, %p3;
    st.global.u32 [%rd1+64], %r1;
    st.global.u32 [%rd1+68], %r2;
    st.global.u32 [%rd1+72], %r3;
    cvt.rni.s32.f32 %r4, %f3;
    st.global.u32 [%rd1+76], %r4;
    mov.f32 %f21, 0f4F800000;
    cvt.rzi.s32.f32 %r5, %f21;
    st.global.u32 [%rd1+80], %r5;
    div.full.f32 %f22, %f1, %f2;
    st.global.f32 [%rd1+84], %f22;
    neg.f32 %f23, %f3;
    abs.f32 %f24, %f2;
    st.global.f32 [%rd1+88], %f24;
    "#,
        23,
    );
    let f = |k: usize| f32::from_bits(got[k]);
    assert_eq!(f(0), 1.5, "min with NaN returns the number");
    assert_eq!(f(1), -2.5);
    let close =
        |x: f32, want: f64, what: &str| assert!(ulps(x, want as f32) <= 2, "{what}: {x} vs {want}");
    close(f(2), 2f64.powf(1.5), "ex2");
    close(f(3), 1.5f64.log2(), "lg2");
    close(f(4), 1.5f64.sin(), "sin");
    close(f(5), 1.5f64.cos(), "cos");
    close(f(6), (-2.5f64).tanh(), "tanh");
    close(f(7), 1.0 / -2.5, "rcp");
    close(f(8), 1.0 / 1.5f64.sqrt(), "rsqrt");
    assert_eq!(f(9), 1.0);
    assert_eq!(f(10), next_up(1.0));
    assert_eq!(f(11), -2.0);
    assert_eq!(f(12), -3.0);
    assert_eq!(f(13), 0.0, "ftz flushes the subnormal sum");
    assert_eq!(got[14], 2, "without ftz the subnormal sum is exact");
    assert_eq!(f(15), 1.0, "sat clamps 2.25");
    assert_eq!(&got[16..19], &[1, 1, 0]);
    assert_eq!(got[19], 0, "NaN converts to 0");
    assert_eq!(got[20], i32::MAX as u32, "float to int saturates");
    assert_eq!(f(21), 1.5 / -2.5);
    assert_eq!(f(22), 2.5);
}

// ---- code in the wild (wild.ptx): 64-bit shuffles, tiles, 64-bit atomics, libdevice math ----

fn double_shuffles_and_tile_reductions(dir: &str) {
    let g = gpu(dir, "wild.ptx");
    let x: Vec<f64> = (0..32).map(|i| i as f64 * 0.5 + 1e-3).collect();
    let (px, po) = (g.f64s(&x), g.zeros(32 * 8));
    g.launch("shfl_double", 1, 32, &[A::Ptr(px), A::Ptr(po)])
        .result
        .unwrap();
    let got = g.get_f64(po, 32);
    // Butterfly: every lane ends with the same sum (in the butterfly's order).
    assert!(got.iter().all(|&v| v == got[0]));
    assert!((got[0] - x.iter().sum::<f64>()).abs() < 1e-9);

    let input: Vec<i32> = (0..64).map(|i| i * i - 100).collect();
    let (pi, po) = (g.i32s(&input), g.zeros(8 * 4));
    g.launch("tile_reduce", 1, 64, &[A::Ptr(pi), A::Ptr(po)])
        .result
        .unwrap();
    let want: Vec<i32> = input.chunks(8).map(|c| c.iter().sum()).collect();
    assert_eq!(g.get_i32(po, 8), want);
}

fn atomics_64_bit_and_clock(dir: &str) {
    let g = gpu(dir, "wild.ptx");
    let (sum, cas, clk) = (g.zeros(8), g.i64s(&[1]), g.zeros(8));
    g.launch("atomics64", 1, 64, &[A::Ptr(sum), A::Ptr(cas), A::Ptr(clk)])
        .result
        .unwrap();
    assert_eq!(
        g.get_i64(sum, 1)[0] as u64,
        (0..64u64).map(|t| t << 33).sum::<u64>()
    );
    // Every thread's CAS loop applied exactly once: the value is some order of x*3+t.
    let v = g.get_i64(cas, 1)[0] as u64;
    assert_ne!(v, 1);
    assert!(g.get_i64(clk, 1)[0] > 0, "clock64 advances");
}

fn libdevice_math_matches_the_host(dir: &str) {
    let g = gpu(dir, "wild.ptx");
    let n = 200;
    let x: Vec<f64> = (0..n)
        .map(|i| (i as f64 - 100.0) * 0.0731 + 0.013)
        .collect();
    let (px, po, pf) = (g.f64s(&x), g.zeros(n * 4 * 8), g.zeros(n * 2 * 4));
    g.launch(
        "heavy_math",
        2,
        128,
        &[A::I32(n as i32), A::Ptr(px), A::Ptr(po), A::Ptr(pf)],
    )
    .result
    .unwrap();
    let d = g.get_f64(po, n * 4);
    let f = g.get_f32(pf, n * 2);
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-300);
    for i in 0..n {
        let v = x[i];
        // libdevice double functions are within 1-4 ulp (lgamma near its zeros: absolute error).
        assert!(
            rel(d[4 * i], (v * 1e6).sin()) < 1e-14,
            "sin(1e6 * {v}): {}",
            d[4 * i]
        );
        let lg = libm_lgamma(v.abs() + 0.5);
        assert!(
            (d[4 * i + 1] - lg).abs() < 1e-13 * lg.abs().max(1.0),
            "lgamma {v}: {} vs {lg}",
            d[4 * i + 1]
        );
        assert!((d[4 * i + 2] - erf_ref(v / 10.0)).abs() < 1e-14, "erf {v}");
        let fm = v % 3.7 + v.cbrt();
        assert!(
            (d[4 * i + 3] - fm).abs() < 1e-14 * fm.abs().max(1.0),
            "fmod+cbrt {v}"
        );
        let fv = v as f32;
        assert!(
            ulps(f[2 * i], ((fv * 1000.0) as f64).sin() as f32) <= 2,
            "sinf(1000 * {fv}): {}",
            f[2 * i]
        );
        let t = ((fv / 20.0) as f64).tanh() + (fv as f64).atan2(3.0);
        assert!(
            (f[2 * i + 1] as f64 - t).abs() < 4.0 * f32::EPSILON as f64 * t.abs().max(1.0),
            "tanhf+atan2f {fv}"
        );
    }
}

/// lgamma for x > 0 by the Lanczos approximation (g = 7, n = 9), good to ~1e-15.
fn libm_lgamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln()
            - libm_lgamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (k, g) in G.iter().enumerate().skip(1) {
        a += g / (x + k as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// erf by its Taylor series (|x| <= 1 here), summed until the terms vanish.
fn erf_ref(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x;
    let mut k = 0.0;
    while term.abs() > 1e-20 {
        sum += term / (2.0 * k + 1.0);
        k += 1.0;
        term *= -x * x / k;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn static_shared_memory_is_laid_out_per_kernel() {
    // Two kernels with 150 KB of shared memory each: together over the limit, each fine.
    let src = r#".version 8.0
.target sm_80
.address_size 64
.shared .align 4 .b8 big_a[153600];
.visible .entry ka(.param .u64 p)
{
    .reg .b32 %r<3>;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [p];
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 2;
    st.shared.u32 [big_a+153596], 7;
    bar.sync 0;
    ld.shared.u32 %r1, [big_a+153596];
    st.global.u32 [%rd1], %r1;
    ret;
}

.visible .entry kb(.param .u64 p)
{
    .shared .align 16 .b8 big_b[153600];
    .reg .b32 %r<3>;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [p];
    mov.u32 %r2, big_b;
    st.shared.u32 [%r2+16], 9;
    ld.shared.u32 %r1, [big_b+16];
    st.global.u32 [%rd1+4], %r1;
    ret;
}
"#;
    let module = Arc::new(Module::load(src.as_bytes(), 80).unwrap());
    for k in module.kernels() {
        assert_eq!(k.static_shared_bytes, 153600, "{}", k.name);
    }
    let space = AddressSpace::new(DeviceMemory::new(1 << 30), 0x7f00_0000_0000, 1 << 34);
    let lm = LoadedModule::new(module, &space).unwrap();
    let g = Gpu { space, lm };
    let p = g.zeros(8);
    g.launch("ka", 1, 64, &[A::Ptr(p)]).result.unwrap();
    g.launch("kb", 1, 64, &[A::Ptr(p)]).result.unwrap();
    assert_eq!(g.get_i32(p, 2), vec![7, 9]);
    // Plus 80 KB of dynamic shared memory is more than a block may have.
    let out = g.launch_opts(
        "ka",
        [1, 1, 1],
        [32, 1, 1],
        80 * 1024,
        &[A::Ptr(p)],
        LaunchOptions::default(),
    );
    assert_eq!(out.result.unwrap_err().cuda_code(), 1);
}

#[test]
fn cache_policies_are_hints() {
    let got = run_scalar(
        r#"
    createpolicy.fractional.L2::evict_last.b64 %rd2, 1.0;
    st.global.u32 [%rd1+4], 5;
    ld.global.L2::cache_hint.u32 %r1, [%rd1+4], %rd2;
    add.u32 %r1, %r1, 1;
    st.global.L2::cache_hint.u32 [%rd1], %r1, %rd2;
    prefetch.global.L2::evict_last [%rd1];
    fence.acq_rel.gpu;
    membar.sys;
    "#,
        2,
    );
    assert_eq!(got, vec![6, 5]);
}

#[test]
fn extreme_operands_are_errors_not_panics() {
    // Each body is run on its own; it may fail, but must not panic (debug builds check overflow).
    let bodies = [
        "mov.u64 %rd2, -4;\n ld.global.u32 %r1, [%rd2];",
        "mov.u64 %rd2, -8;\n st.global.u64 [%rd2], %rd2;",
        "mov.u64 %rd2, -16;\n ld.global.v4.u32 {%r1,%r2,%r3,%r4}, [%rd2];",
        "mov.u64 %rd2, -4;\n atom.global.add.u32 %r1, [%rd2], 1;",
        "mov.u64 %rd2, -4;\n ld.u32 %r1, [%rd2];",
        "mov.u64 %rd2, 0xF0000000FFFFFFFC;\n ld.u32 %r1, [%rd2];",
        "mov.u64 %rd2, 0xF10000FFFFFFFFFC;\n st.u32 [%rd2], 1;",
        "mov.u64 %rd2, 0xF2000000FFFFFFFC;\n ld.u32 %r1, [%rd2];",
        "mov.u32 %r2, -4;\n ld.shared.u32 %r1, [%r2];",
        "mov.u64 %rd2, -4;\n ld.local.u32 %r1, [%rd2];",
        "mov.u64 %rd2, -4;\n ld.param.u32 %r1, [%rd2];",
        "mov.u64 %rd2, -4;\n atom.shared.add.u32 %r1, [%rd2], 1;",
        "cvta.to.shared.u64 %rd2, 0;\n ld.shared.u32 %r1, [%rd2];",
        "cvta.local.u64 %rd2, -1;\n ld.u8 %r1, [%rd2];",
        "div.s32 %r1, -2147483648, -1;\n rem.s32 %r2, -2147483648, -1;\n div.s64 %rd2, -9223372036854775808, -1;",
        "shl.b32 %r1, 1, -1;\n shr.s32 %r2, -1, -1;\n shr.u64 %rd2, -1, 4294967295;",
        "bfe.u32 %r1, -1, 255, 255;\n bfe.s64 %rd2, -1, 200, 100;\n bfi.b32 %r2, -1, 0, 255, 255;",
        "mov.f32 %f1, 0f7F800000;\n cvt.rzi.s32.f32 %r1, %f1;\n cvt.rni.u64.f32 %rd2, %f1;\n cvt.rn.f32.u64 %f2, -1;",
        "mov.f64 %fd1, 0dFFF8000000000000;\n cvt.rzi.s64.f64 %rd2, %fd1;\n cvt.rn.f16.f64 %r1, %fd1;",
        "shfl.sync.idx.b32 %r1, %r2, -1, -1, -1;\n shfl.sync.up.b32 %r1|%p1, %r2, 4294967295, 0, -1;",
        "bar.sync 15, -1;",
        "bar.arrive 3, 64;\n bar.arrive 3, 64;",
        "mul.wide.s32 %rd2, -2147483648, -2147483648;\n mul.hi.s64 %rd3, -9223372036854775808, -1;\n mad.hi.u64 %rd4, -1, -1, -1;",
        "add.sat.s32 %r1, 2147483647, 2147483647;\n sub.sat.s32 %r2, -2147483648, 1;\n abs.s32 %r3, -2147483648;\n neg.s64 %rd2, -9223372036854775808;",
        "clz.b64 %r1, 0;\n bfind.u64 %r2, 0;\n brev.b64 %rd2, -1;\n popc.b64 %r3, -1;",
        "prmt.b32 %r1, -1, -1, -1;\n lop3.b32 %r2, -1, 0, -1, 255;\n shf.r.clamp.b32 %r3, -1, -1, -1;",
        "cvt.sat.s8.s64 %r1, -9223372036854775808;\n cvt.u8.s64 %r2, -1;",
        "vote.sync.ballot.b32 %r1, %p1, 0;\n match.any.sync.b64 %rd2, %rd1, 0;\n redux.sync.min.s32 %r2, %r1, 0;",
    ];
    for body in bodies {
        let g = ptx_kernel(
            &format!("    .reg .pred %p<4>;\n    .reg .b32 %r<8>;\n    .reg .f32 %f<4>;\n    .reg .b64 %rd<8>;\n    .reg .f64 %fd<4>;\n    {body}\n    ret;"),
            "",
        );
        let out = g.launch_opts(
            "k",
            [1, 1, 1],
            [33, 1, 1],
            0,
            &[],
            LaunchOptions {
                threads: 1,
                instruction_budget: 10_000,
            },
        );
        if let Err(e) = out.result {
            assert!([700, 716, 719, 702].contains(&e.cuda_code()), "{body}: {e}");
        }
    }
}

fn recursive_fibonacci_from_nvrtc(dir: &str) {
    let g = gpu(dir, "extra.ptx");
    let p = g.zeros(64 * 4);
    g.launch("fib_kernel", 1, 64, &[A::Ptr(p)]).result.unwrap();
    fn fib(n: i32) -> i32 {
        if n < 2 {
            n
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }
    assert_eq!(
        g.get_i32(p, 64),
        (0..64).map(|t| fib(t % 16)).collect::<Vec<_>>()
    );
}

#[test]
fn half2_comparisons_set_two_predicates() {
    let got = run_scalar(
        r#"
    mov.b32 %r1, 0x3C004000;
    mov.b32 %r2, 0x3E003E00;
    setp.lt.f16x2 %p1|%p2, %r1, %r2;
    selp.u32 %r3, 1, 0, %p1;
    selp.u32 %r4, 1, 0, %p2;
    st.global.v2.u32 [%rd1], {%r3, %r4};
    "#,
        2,
    );
    // Lower halves: 2.0 < 1.5 is false; upper: 1.0 < 1.5 is true.
    assert_eq!(got, vec![0, 1]);
}

#[test]
fn modules_with_thousands_of_kernels_load_quickly() {
    let mut src = String::from(".version 8.0\n.target sm_80\n.address_size 64\n");
    let n = 3000;
    for k in 0..n {
        src.push_str(&format!(
            ".shared .align 4 .b8 sh{k}[64];\n.func (.param .b32 r) f{k}(.param .b32 a)\n{{\n .reg .b32 %x;\n ld.param.b32 %x, [a];\n add.s32 %x, %x, {k};\n st.param.b32 [r], %x;\n ret;\n}}\n.visible .entry k{k}(.param .u64 p)\n{{\n .reg .b32 %v;\n .reg .b64 %rd;\n ld.param.u64 %rd, [p];\n {{\n .param .b32 a0;\n .param .b32 r0;\n st.param.b32 [a0], 1;\n call (r0), f{k}, (a0);\n ld.param.b32 %v, [r0];\n }}\n st.shared.u32 [sh{k}], %v;\n ld.shared.u32 %v, [sh{k}];\n st.global.u32 [%rd], %v;\n ret;\n}}\n"
        ));
    }
    let t = std::time::Instant::now();
    let module = Arc::new(Module::load(src.as_bytes(), 80).unwrap());
    assert!(t.elapsed().as_secs_f64() < 10.0, "{:?}", t.elapsed());
    assert_eq!(module.kernels().len(), n);
    assert!(module.kernels().iter().all(|k| k.static_shared_bytes == 64));
    let space = AddressSpace::new(DeviceMemory::new(1 << 20), 0x7f00_0000_0000, 1 << 30);
    let lm = LoadedModule::new(module, &space).unwrap();
    let g = Gpu { space, lm };
    let p = g.zeros(4);
    g.launch("k2999", 1, 1, &[A::Ptr(p)]).result.unwrap();
    assert_eq!(g.get_i32(p, 1)[0], 3000);
}

// ---- every test above that takes `dir` runs on the output of both compilers ----

macro_rules! on_nvrtc_12_and_13 {
    ($($name:ident),* $(,)?) => {
        mod nvrtc12 {
            $(#[test] fn $name() { super::$name("ptx") })*
        }
        mod nvrtc13 {
            $(#[test] fn $name() { super::$name("ptx13") })*
        }
    };
}

on_nvrtc_12_and_13!(
    saxpy_exact,
    grid_stride_loop,
    vector_add_int_float_double,
    divergent_branches,
    device_function_call,
    constant_memory,
    struct_by_value_param,
    int64_math,
    block_reduction_with_shared_memory,
    warp_reduction_with_shuffles,
    vote_and_ballot,
    atomics_global,
    histogram_with_shared_atomics,
    prefix_scan_dynamic_shared,
    tiled_matmul,
    transpose_tiles,
    bitonic_sort,
    softmax_expf,
    layer_norm,
    nbody_step,
    half_arithmetic,
    printf_output_in_thread_order,
    math_functions_within_tolerance,
    out_of_bounds_store_is_700,
    misaligned_store_is_716,
    assert_is_710_with_cuda_message,
    trap_is_719,
    infinite_loop_is_702,
    bad_launch_configs,
    shuffle_modes,
    match_redux_activemask,
    counting_barriers_and_exited_threads,
    bit_manipulation,
    more_atomics_global_and_shared,
    directed_rounding_and_conversions,
    intra_warp_spin_lock,
    block_waiting_for_a_later_block_is_parked,
    inline_asm_carry_chain,
    debug_build_with_generic_addressing_and_sections,
    half2_and_bf16,
    cp_async_and_mul24,
    local_memory_array,
    printf_formats_and_block_order,
    template_instantiations,
    dp4a_dp2a_and_half2_atomics,
    printf_output_is_capped_like_the_device_fifo,
    double_shuffles_and_tile_reductions,
    atomics_64_bit_and_clock,
    libdevice_math_matches_the_host,
    recursive_fibonacci_from_nvrtc,
);
