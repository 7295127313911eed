//! The split-launch footprint analysis (`remora_emulator::footprint`) and the guard rewrite
//! (`remora_emulator::guard`): the share of the corpus proven splittable (with a floor),
//! negative cases that must be refused with the right reason, and exact regions for saxpy,
//! a grid-stride loop, a tiled SGEMM and a CuPy-like by-value struct parameter.

use remora_emulator::footprint::{plan, Analysis, KernelFootprint, Region};
use remora_emulator::guard::guard_ptx;
use remora_emulator::Module;

const HEAD: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

fn corpus() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["ptx", "ptx13", "ptx_numba", "ptx_cupy"] {
        let d = format!("{}/tests/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            out.push((
                format!("{dir}/{}", f.file_name().unwrap().to_string_lossy()),
                text,
            ));
        }
    }
    out
}

fn analyze(m: &Module, k: &str) -> Analysis {
    m.footprint(k).unwrap_or_else(|| panic!("no kernel {k}"))
}

fn fp(ptx: &str, k: &str) -> KernelFootprint {
    let m = Module::from_ptx(&format!("{HEAD}{ptx}")).unwrap();
    match analyze(&m, k) {
        Analysis::Splittable(f) => f,
        Analysis::NotSplittable(why) => panic!("{k}: {why}"),
    }
}

fn refused(ptx: &str, k: &str) -> String {
    let m = Module::from_ptx(&format!("{HEAD}{ptx}")).unwrap();
    match analyze(&m, k) {
        Analysis::Splittable(f) => panic!("{k} proven splittable: {f:?}"),
        Analysis::NotSplittable(why) => why,
    }
}

fn params(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn share_of_the_corpus_proven_splittable() {
    let mut total = 0;
    let mut yes = 0;
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    let mut verdict = std::collections::HashMap::new();
    for (file, text) in corpus() {
        let m = Module::from_ptx(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for k in m.kernels() {
            total += 1;
            let a = analyze(&m, &k.name);
            match &a {
                Analysis::Splittable(_) => yes += 1,
                Analysis::NotSplittable(why) => {
                    let short = why.split(" at line").next().unwrap_or(why).to_string();
                    *reasons.entry(short).or_default() += 1;
                    println!("{file}: {}: {why}", k.name);
                }
            }
            verdict.insert(format!("{file}:{}", k.name), a);
        }
    }
    println!(
        "footprint: {yes} of {total} corpus kernels proven splittable ({:.0}%)",
        100.0 * yes as f64 / total as f64
    );
    for (r, n) in &reasons {
        println!("  {n:3} not splittable: {r}");
    }
    for k in [
        "ptx/basic.ptx:saxpy",
        "ptx/basic.ptx:vadd_f32",
        "ptx/basic.ptx:grid_stride",
        "ptx/matrix.ptx:matmul",
        "ptx/matrix.ptx:transpose",
        "ptx13/matrix.ptx:matmul",
        "ptx13/matrix.ptx:transpose",
        "ptx_cupy/absolute.ptx:cupy_absolute",
        "ptx_cupy/add.ptx:cupy_add",
        "ptx_cupy/add_scalar.ptx:cupy_add",
        "ptx_cupy/fma3.ptx:fma3",
        "ptx_numba/saxpy.ptx:",
        "ptx_numba/grid2d.ptx:",
        "ptx_numba/i64_math.ptx:",
        "ptx_numba/f64_math.ptx:",
        "ptx_numba/local_array.ptx:",
        "ptx_numba/device_call.ptx:",
    ] {
        let hit = verdict
            .iter()
            .find(|(name, _)| name.starts_with(k))
            .unwrap_or_else(|| panic!("{k} not in the corpus"));
        assert!(matches!(hit.1, Analysis::Splittable(_)), "{k}: {:?}", hit.1);
    }
    for (k, why) in [
        ("ptx/reduce.ptx:atomics", "global atomics"),
        ("ptx/reduce.ptx:histogram", "global atomics"),
    ] {
        match &verdict[k] {
            Analysis::NotSplittable(w) => assert!(w.contains(why), "{k}: {w}"),
            a => panic!("{k}: {a:?}"),
        }
    }
    // 89 of 139 before uniform values, launch-checked assumptions and conjunctions of
    // bound checks; 99 of 144 with the CuPy kernels since.
    assert!(yes >= 99, "only {yes} of {total} splittable");
}

#[test]
fn guarded_corpus_parses_and_lowers() {
    for (file, text) in corpus() {
        let g = guard_ptx(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let m = Module::from_ptx(&g).unwrap_or_else(|e| panic!("{file}: guarded: {e}"));
        let orig = Module::from_ptx(&text).unwrap();
        for k in orig.kernels() {
            let gk = m.kernel(&k.name).unwrap();
            assert_eq!(gk.params.len(), k.params.len() + 3, "{file}: {}", k.name);
        }
    }
}

const SAXPY: &str =
    ".visible .entry saxpy(.param .u32 n, .param .f32 a, .param .u64 x, .param .u64 y)
{
    .reg .pred %p<2>; .reg .f32 %f<5>; .reg .b32 %r<6>; .reg .b64 %rd<8>;
    ld.param.u32 %r2, [n]; ld.param.f32 %f1, [a];
    ld.param.u64 %rd1, [x]; ld.param.u64 %rd2, [y];
    mov.u32 %r3, %ctaid.x; mov.u32 %r4, %ntid.x; mov.u32 %r5, %tid.x;
    mad.lo.s32 %r1, %r3, %r4, %r5;
    setp.ge.s32 %p1, %r1, %r2;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd3, %rd1; cvta.to.global.u64 %rd4, %rd2;
    mul.wide.s32 %rd5, %r1, 4;
    add.s64 %rd6, %rd3, %rd5; add.s64 %rd7, %rd4, %rd5;
    ld.global.f32 %f2, [%rd6]; ld.global.f32 %f3, [%rd7];
    fma.rn.f32 %f4, %f2, %f1, %f3;
    st.global.f32 [%rd7], %f4;
DONE:
    ret;
}";

#[test]
fn saxpy_regions_are_exact_per_range() {
    let f = fp(SAXPY, "saxpy");
    let (x, y) = (0x10000u64, 0x20000u64);
    // n = 1000, 4 blocks of 256: the last range is clipped at n.
    let p = [
        &1000u32.to_le_bytes()[..],
        &2f32.to_le_bytes(),
        &x.to_le_bytes(),
        &y.to_le_bytes(),
    ]
    .concat();
    let (dim, fps) = plan(&f, &p, [4, 1, 1], [256, 1, 1], &[(0, 2), (2, 4)]).unwrap();
    assert_eq!(dim, 0);
    assert_eq!(
        fps[0].reads,
        vec![Region::plain(x, 2048), Region::plain(y, 2048)]
    );
    assert_eq!(fps[0].writes, vec![Region::plain(y, 2048)]);
    assert_eq!(fps[1].writes, vec![Region::plain(y + 2048, 4000 - 2048)]);
    assert!(fps[1].unbounded_reads.is_empty());
}

#[test]
fn grid_stride_loop_rows_and_pitch() {
    let text = std::fs::read_to_string(format!(
        "{}/tests/ptx/basic.ptx",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let m = Module::from_ptx(&text).unwrap();
    let Analysis::Splittable(f) = analyze(&m, "grid_stride") else {
        panic!()
    };
    let (x, y) = (0x10000u64, 0x40000u64);
    let p = |n: u32| {
        [
            &n.to_le_bytes()[..],
            &2f32.to_le_bytes(),
            &x.to_le_bytes(),
            &y.to_le_bytes(),
        ]
        .concat()
    };
    // Stride 4*128 = 512 elements, n = 2048: 4 iterations; blocks 0..2 cover 256 of each 512.
    let r = f
        .evaluate(&p(2048), [4, 1, 1], [128, 1, 1], 0, 0, 2)
        .unwrap();
    let want = Region {
        offset: y,
        width: 1024,
        pitch: 2048,
        rows: 4,
    };
    assert_eq!(r.writes, vec![want]);
    // The stride covers n: one row.
    let r = f
        .evaluate(&p(300), [4, 1, 1], [128, 1, 1], 0, 0, 2)
        .unwrap();
    assert_eq!(r.writes, vec![Region::plain(y, 1024)]);
    // Clipped at n in the last row.
    let r = f
        .evaluate(&p(1000), [4, 1, 1], [128, 1, 1], 0, 2, 4)
        .unwrap();
    assert_eq!(
        r.writes,
        vec![
            Region::plain(y + 1024, 1024),
            Region::plain(y + 3072, 4000 - 3072)
        ]
    );
}

#[test]
fn tiled_sgemm_reads_rows_of_a_and_all_of_b() {
    let text = std::fs::read_to_string(format!(
        "{}/tests/ptx/matrix.ptx",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let m = Module::from_ptx(&text).unwrap();
    let Analysis::Splittable(f) = analyze(&m, "matmul") else {
        panic!()
    };
    let (a, b, c) = (0x100000u64, 0x200000u64, 0x300000u64);
    let n = 64u32;
    let p = [
        &n.to_le_bytes()[..],
        &[0u8; 4],
        &a.to_le_bytes(),
        &b.to_le_bytes(),
        &c.to_le_bytes(),
    ]
    .concat();
    // TILE = 16: grid 4x4, split along y; range 1..3 is rows 16..48.
    let r = f.evaluate(&p, [4, 4, 1], [16, 16, 1], 1, 1, 3).unwrap();
    let row = 64 * 4;
    // The loop runs (n + 15) / 16 times, a uniform value computed at launch: the range reads
    // its rows of A and all of B; C's rows are exact.
    assert!(r.unbounded_reads.is_empty(), "{r:?}");
    assert_eq!(
        r.reads,
        vec![
            Region::plain(a + 16 * row, 32 * row),
            Region::plain(b, 64 * row)
        ]
    );
    assert_eq!(r.writes, vec![Region::plain(c + 16 * row, 32 * row)]);
}

#[test]
fn cupy_struct_parameter() {
    // struct { float *data; long size; long shape; long stride; } passed by value (32 bytes).
    let ptx = ".visible .entry k(.param .align 8 .b8 arr[32], .param .u64 out)
{
    .reg .pred %p<2>; .reg .f32 %f<2>; .reg .b32 %r<4>; .reg .b64 %rd<10>;
    ld.param.u64 %rd1, [arr]; ld.param.u64 %rd2, [arr+8]; ld.param.u64 %rd9, [out];
    mov.u32 %r1, %ctaid.x; mov.u32 %r2, %ntid.x; mov.u32 %r3, %tid.x;
    mad.lo.s32 %r1, %r1, %r2, %r3;
    cvt.s64.s32 %rd3, %r1;
    setp.ge.s64 %p1, %rd3, %rd2;
    @%p1 bra DONE;
    shl.b64 %rd4, %rd3, 2;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.f32 %f1, [%rd5];
    add.s64 %rd6, %rd9, %rd4;
    st.global.f32 [%rd6], %f1;
DONE:
    ret;
}";
    let f = fp(ptx, "k");
    let p = params(&[0x1000, 100, 100, 4, 0x9000]);
    let (_, fps) = plan(&f, &p, [2, 1, 1], [64, 1, 1], &[(0, 1), (1, 2)]).unwrap();
    assert_eq!(fps[0].reads, vec![Region::plain(0x1000, 256)]);
    assert_eq!(fps[1].reads, vec![Region::plain(0x1100, 144)]);
    assert_eq!(fps[1].writes, vec![Region::plain(0x9100, 144)]);
}

/// numba's negative-index wrap: `idx = i + off; if idx < 0 { idx += shape }` as
/// `shr.s64 t, idx, 63; and.b64 u, t, shape; add.s64 j, idx, u`.
const NUMBA_WRAP: &str = ".visible .entry k(.param .u64 x, .param .u64 shape, .param .u64 off)
{
    .reg .pred %p<2>; .reg .b32 %r<4>; .reg .b64 %rd<12>;
    ld.param.u64 %rd1, [x]; ld.param.u64 %rd2, [shape]; ld.param.u64 %rd3, [off];
    mov.u32 %r1, %tid.x; mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x;
    mul.wide.s32 %rd4, %r2, %r3;
    cvt.s64.s32 %rd5, %r1;
    add.s64 %rd6, %rd4, %rd5;
    add.s64 %rd6, %rd6, %rd3;
    shr.s64 %rd7, %rd6, 63;
    and.b64 %rd8, %rd7, %rd2;
    add.s64 %rd9, %rd8, %rd6;
    shl.b64 %rd10, %rd9, 2;
    add.s64 %rd11, %rd1, %rd10;
    st.global.u32 [%rd11], %r1;
    ret;
}";

#[test]
fn negative_index_wrap_is_exact_when_the_index_is_not_negative() {
    let f = fp(NUMBA_WRAP, "k");
    let x = 0x10000u64;
    let r = f
        .evaluate(&params(&[x, 1024, 16]), [4, 1, 1], [64, 1, 1], 0, 1, 3)
        .unwrap();
    assert_eq!(r.writes, vec![Region::plain(x + (64 + 16) * 4, 128 * 4)]);
    // An offset that makes the first threads' index negative: the wrap adds `shape`, which
    // the footprint does not model, so the launch is refused with the reason.
    let e = f
        .evaluate(
            &params(&[x, 1024, (-10i64) as u64]),
            [4, 1, 1],
            [64, 1, 1],
            0,
            0,
            4,
        )
        .unwrap_err();
    assert!(e.contains("must lie in 0..9223372036854775808"), "{e}");
    assert!(e.contains("may be -10..="), "{e}");
    // The same offset is fine for ranges whose indices stay non-negative.
    f.evaluate(
        &params(&[x, 1024, (-10i64) as u64]),
        [4, 1, 1],
        [64, 1, 1],
        0,
        1,
        4,
    )
    .unwrap();
}

#[test]
fn uniform_values_are_computed_at_launch() {
    // y[i] for i < (n + 15) / 16 * 16 + (n % 7) with n / 16 as in NVRTC's rounding idiom.
    let f = fp(
        ".visible .entry k(.param .u32 n, .param .u64 y)
{
    .reg .pred %p<2>; .reg .b32 %r<12>; .reg .b64 %rd<5>;
    ld.param.u32 %r1, [n]; ld.param.u64 %rd1, [y];
    add.s32 %r2, %r1, 15;
    shr.s32 %r3, %r2, 31;
    shr.u32 %r4, %r3, 28;
    add.s32 %r5, %r2, %r4;
    shr.s32 %r6, %r5, 4;
    shl.b32 %r7, %r6, 4;
    rem.s32 %r8, %r1, 7;
    add.s32 %r9, %r7, %r8;
    mov.u32 %r10, %tid.x; mov.u32 %r11, %ctaid.x;
    mad.lo.s32 %r10, %r11, 64, %r10;
    setp.ge.s32 %p1, %r10, %r9;
    @%p1 bra DONE;
    mul.wide.s32 %rd2, %r10, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r10;
DONE:
    ret;
}",
        "k",
    );
    let y = 0x20000u64;
    for n in [1u32, 17, 100, 160] {
        let bound = n.div_ceil(16) * 16 + n % 7;
        let p = [&n.to_le_bytes()[..], &[0u8; 4], &y.to_le_bytes()].concat();
        let r = f.evaluate(&p, [8, 1, 1], [64, 1, 1], 0, 0, 8).unwrap();
        assert_eq!(r.writes, vec![Region::plain(y, bound as u64 * 4)], "n {n}");
    }
}

#[test]
fn pointer_chasing_is_refused() {
    let why = refused(
        ".visible .entry k(.param .u64 p) {
    .reg .b64 %rd<4>; .reg .b32 %r<2>;
    ld.param.u64 %rd1, [p];
    ld.global.u64 %rd2, [%rd1];
    ld.global.u32 %r1, [%rd2];
    st.global.u32 [%rd1], %r1;
    ret; }",
        "k",
    );
    assert!(why.contains("address loaded from memory"), "{why}");
}

#[test]
fn global_atomics_are_refused() {
    let why = refused(
        ".visible .entry k(.param .u64 p) {
    .reg .b64 %rd<4>; .reg .b32 %r<2>;
    ld.param.u64 %rd1, [p];
    atom.global.add.u32 %r1, [%rd1], 1;
    ret; }",
        "k",
    );
    assert!(why.contains("global atomics"), "{why}");
}

#[test]
fn module_globals_are_refused_const_reads_are_not() {
    let why = refused(
        ".global .align 4 .u32 g[4];
.visible .entry k(.param .u64 p) {
    .reg .b64 %rd<4>; .reg .b32 %r<2>;
    ld.param.u64 %rd1, [p];
    ld.global.u32 %r1, [g];
    st.global.u32 [%rd1], %r1;
    ret; }",
        "k",
    );
    assert!(why.contains("module global"), "{why}");
    fp(
        ".const .align 4 .u32 c[4];
.visible .entry k(.param .u64 p) {
    .reg .b64 %rd<4>; .reg .b32 %r<2>;
    ld.param.u64 %rd1, [p];
    ld.const.u32 %r1, [c];
    st.global.u32 [%rd1], %r1;
    ret; }",
        "k",
    );
}

#[test]
fn unbounded_loop_write_is_refused() {
    // while (x[i] != 0) { y[i] = 1; i++; }: the trip count depends on memory.
    let f = fp(
        ".visible .entry k(.param .u64 x, .param .u64 y) {
    .reg .pred %p<2>; .reg .b64 %rd<8>; .reg .b32 %r<3>;
    ld.param.u64 %rd1, [x]; ld.param.u64 %rd2, [y];
    mov.u64 %rd3, 0;
L:
    shl.b64 %rd4, %rd3, 2;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.u32 %r1, [%rd5];
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra DONE;
    add.s64 %rd6, %rd2, %rd4;
    st.global.u32 [%rd6], 1;
    add.s64 %rd3, %rd3, 1;
    bra L;
DONE:
    ret; }",
        "k",
    );
    let e = f
        .evaluate(&params(&[0x1000, 0x2000]), [2, 1, 1], [32, 1, 1], 0, 0, 1)
        .unwrap_err();
    assert!(e.contains("cannot be bounded"), "{e}");
}

#[test]
fn overlapping_ranges_are_refused() {
    // Every block writes y[0].
    let f = fp(
        ".visible .entry k(.param .u64 y) {
    .reg .b64 %rd<2>;
    ld.param.u64 %rd1, [y];
    st.global.u32 [%rd1], 1;
    ret; }",
        "k",
    );
    let e = plan(
        &f,
        &params(&[0x1000]),
        [2, 1, 1],
        [32, 1, 1],
        &[(0, 1), (1, 2)],
    )
    .unwrap_err();
    assert!(e.contains("both write"), "{e}");
    // y[i + 1] = y[i]: a range reads what the next one writes.
    let f = fp(
        ".visible .entry k(.param .u64 y) {
    .reg .b64 %rd<6>; .reg .b32 %r<5>;
    ld.param.u64 %rd1, [y];
    mov.u32 %r1, %ctaid.x; mov.u32 %r2, %ntid.x; mov.u32 %r3, %tid.x;
    mad.lo.s32 %r4, %r1, %r2, %r3;
    mul.wide.s32 %rd2, %r4, 4;
    add.s64 %rd3, %rd1, %rd2;
    ld.global.u32 %r1, [%rd3];
    st.global.u32 [%rd3+4], %r1;
    ret; }",
        "k",
    );
    let e = plan(
        &f,
        &params(&[0x1000]),
        [2, 1, 1],
        [32, 1, 1],
        &[(0, 1), (1, 2)],
    )
    .unwrap_err();
    assert!(e.contains("reads"), "{e}");
}
