//! Replays the seed corpus of the `ptx` fuzz target (`fuzz/fuzz_targets/ptx.rs`) as an ordinary
//! test: every file under `tests/corpus/ptx/` (written by `tests/corpus/gen_seeds.py`, plus any
//! crash reproducers added since) goes through `fuzzing::ptx`, which must not panic.

use remora_emulator::fuzzing;

#[test]
fn ptx_seed_corpus_never_panics() {
    let dir = format!("{}/tests/corpus/ptx", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{dir}: {} seeds", files.len());
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let t = std::time::Instant::now();
        let ok = std::panic::catch_unwind(|| fuzzing::ptx(&data));
        assert!(ok.is_ok(), "{} panicked", path.display());
        assert!(
            t.elapsed().as_secs() < 10,
            "{} took {:?}",
            path.display(),
            t.elapsed()
        );
    }
}

/// The real modules of the test corpus load through the same entry point.
#[test]
fn ptx_entry_point_loads_real_modules() {
    for sub in ["ptx", "ptx13", "ptx_numba"] {
        let dir = format!("{}/tests/{sub}", env!("CARGO_MANIFEST_DIR"));
        for e in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            fuzzing::ptx(&data);
        }
    }
}

/// The `fatbin` target's corpus (`tests/corpus/fatbin/`, written by
/// `tests/corpus/gen_fatbin_seeds.py`, plus crash reproducers): none may panic or take long,
/// and the well-formed seeds really yield their PTX.
#[test]
fn fatbin_corpus_never_panics_and_good_seeds_yield_ptx() {
    let dir = format!("{}/tests/corpus/fatbin", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let t = std::time::Instant::now();
        let ok = std::panic::catch_unwind(|| fuzzing::fatbin(&data));
        assert!(ok.is_ok(), "{} panicked", path.display());
        assert!(
            t.elapsed().as_secs() < 5,
            "{} took {:?}",
            path.display(),
            t.elapsed()
        );
        n += 1;
    }
    assert!(n >= 10, "{dir}: {n} seeds");
    for good in [
        "ptx-plain",
        "ptx-lz4",
        "ptx-zstd",
        "ptx-and-sass",
        "two-containers",
    ] {
        let data = std::fs::read(format!("{dir}/{good}")).unwrap();
        let ptx = remora_emulator::loader::extract_ptx(&data, 80)
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        assert!(ptx.contains(".entry k"), "{good}: {ptx}");
    }
    let sass = std::fs::read(format!("{dir}/sass-only")).unwrap();
    let e = remora_emulator::loader::extract_ptx(&sass, 80).unwrap_err();
    assert_eq!(e.cuda_code(), 209, "NO_BINARY_FOR_GPU: {e}");
}
