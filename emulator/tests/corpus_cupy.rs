//! CuPy elementwise kernels (PTX from CuPy's kernel cache, `tests/ptx_cupy/`), launched the way
//! CuPy launches them: 1-d `CArray`s by value (data pointer, size, shape[0], strides[0] in
//! bytes), a `CIndexer` (size, shape[0], index) last, 128 threads per block and
//! `ceil(n / 128)` blocks, or a small grid so that the grid-stride loop iterates several times.
//! Results are checked against the CPU; every launch also goes through the footprint oracle
//! (`common::oracle`), and the splits into 2 and 3 ranges must be accepted and match.

mod common;

use common::*;

use remora_emulator::footprint::{plan, Analysis};
use remora_emulator::Module;

/// A 1-d `CArray<T, 1>`: data, size, shape[0], strides[0] (bytes).
fn carray(data: u64, n: usize, stride: usize) -> A {
    A::Bytes(
        [data, n as u64, n as u64, stride as u64]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect(),
    )
}

/// A 1-d `CIndexer`: size, shape[0], index.
fn indexer(n: usize) -> A {
    A::Bytes(
        [n as u64, n as u64, 0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect(),
    )
}

/// The geometries: CuPy's own (one element per thread) and a small grid (grid-stride loop).
fn grids(n: usize) -> [u32; 2] {
    [(n as u32).div_ceil(128), 3]
}

fn split_ok(kernel: &str) {
    let s = common::oracle::splits(kernel);
    assert!(
        !s.is_empty() && s.iter().all(|x| x.1),
        "{kernel}: splits {s:?}"
    );
}

#[test]
fn absolute() {
    let g = gpu("ptx_cupy", "absolute.ptx");
    let k = "cupy_absolute__float32_float32";
    for n in [1000usize, 4097] {
        for grid in grids(n) {
            let x = randf(n, n as u64);
            let (px, py) = (g.f32s(&x), g.zeros(n * 4));
            g.launch(
                k,
                grid,
                128,
                &[carray(px, n, 4), carray(py, n, 4), indexer(n)],
            )
            .result
            .unwrap();
            let want: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            assert_eq!(g.get_f32(py, n), want, "n {n} grid {grid}");
        }
    }
    split_ok(k);
}

#[test]
fn add_strided_input() {
    let g = gpu("ptx_cupy", "add.ptx");
    let k = "cupy_add__float32_float32_float32";
    let n = 1500usize;
    for grid in grids(n) {
        // x is every other element of a 2n buffer (strides[0] = 8).
        let xb = randf(2 * n, 3);
        let y = randf(n, 4);
        let (px, py, pz) = (g.f32s(&xb), g.f32s(&y), g.zeros(n * 4));
        g.launch(
            k,
            grid,
            128,
            &[
                carray(px, n, 8),
                carray(py, n, 4),
                carray(pz, n, 4),
                indexer(n),
            ],
        )
        .result
        .unwrap();
        let want: Vec<f32> = (0..n).map(|i| xb[2 * i] + y[i]).collect();
        assert_eq!(g.get_f32(pz, n), want, "grid {grid}");
    }
    split_ok(k);
}

#[test]
fn add_scalar() {
    let g = gpu("ptx_cupy", "add_scalar.ptx");
    let k = "cupy_add__float32_float_float32";
    let n = 777usize;
    for grid in grids(n) {
        let x = randf(n, 5);
        let (px, py) = (g.f32s(&x), g.zeros(n * 4));
        g.launch(
            k,
            grid,
            128,
            &[carray(px, n, 4), A::F32(1.5), carray(py, n, 4), indexer(n)],
        )
        .result
        .unwrap();
        let want: Vec<f32> = x.iter().map(|v| v + 1.5).collect();
        assert_eq!(g.get_f32(py, n), want, "grid {grid}");
    }
    split_ok(k);
}

#[test]
fn fma3() {
    let g = gpu("ptx_cupy", "fma3.ptx");
    let n = 2000usize;
    for grid in grids(n) {
        let (a, b) = (randf(n, 6), randf(n, 7));
        let (pa, pb, pc) = (g.f32s(&a), g.f32s(&b), g.zeros(n * 4));
        g.launch(
            "fma3",
            grid,
            128,
            &[
                carray(pa, n, 4),
                carray(pb, n, 4),
                carray(pc, n, 4),
                indexer(n),
            ],
        )
        .result
        .unwrap();
        let want: Vec<f32> = (0..n).map(|i| a[i].mul_add(b[i], 3.0)).collect();
        assert_eq!(g.get_f32(pc, n), want, "grid {grid}");
    }
    split_ok("fma3");
}

fn cupy_module(file: &str) -> Module {
    let path = format!("{}/tests/ptx_cupy/{file}", env!("CARGO_MANIFEST_DIR"));
    Module::from_ptx(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn sign_extension_past_2_31_is_refused_at_launch() {
    // The index is sign-extended from 32 bits by `shl 32; shr.s64 32`: exact only while
    // index * stride < 2^31. A stride of 2^21 bytes over 2048 elements passes 2^31.
    let m = cupy_module("absolute.ptx");
    let Some(Analysis::Splittable(f)) = m.footprint("cupy_absolute__float32_float32") else {
        panic!("absolute not splittable")
    };
    let n = 2048usize;
    let buf = |stride: usize| {
        let mut b = Vec::new();
        for a in [
            carray(0x1000_0000, n, stride),
            carray(0x2000_0000, n, 4),
            indexer(n),
        ] {
            let A::Bytes(x) = a else { unreachable!() };
            b.extend(x);
        }
        b
    };
    let (grid, block) = ([16, 1, 1], [128, 1, 1]);
    let ranges = [(0, 8), (8, 16)];
    plan(&f, &buf(4), grid, block, &ranges).unwrap();
    let e = f
        .evaluate(&buf(1 << 21), grid, block, 0, 0, 16)
        .unwrap_err();
    assert!(e.contains("must lie in -2147483648..2147483648"), "{e}");
    assert!(plan(&f, &buf(1 << 21), grid, block, &ranges).is_err());
}

#[test]
fn sum_reduction_stays_unsplittable() {
    // cupy_sum reads its 2-d input at (i / shape[1], i % shape[1]) (CIndexer::set) with `i`
    // depending on the thread and the loop: the quotient and remainder of a per-thread value
    // are no polynomial, so the read address is not derived (the reads could only be bounded
    // by the whole input; its writes are exact per block).
    let m = cupy_module("sum.ptx");
    match m.footprint("cupy_sum") {
        Some(Analysis::NotSplittable(why)) => {
            assert!(why.contains("address not derived"), "{why}")
        }
        a => panic!("cupy_sum: {a:?}"),
    }
}
