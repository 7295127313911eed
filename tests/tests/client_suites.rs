//! The clients' own test suites, unmodified, on the emulated GPU: the quick subset that CI runs.
//! `scripts/client-suites.sh numba --quick` runs each numba-cuda test module listed in
//! `tests/suites/numba-quick.txt` (modules that pass today, about a minute in all) under its own
//! `remora run`; every one must pass with no failure, error or time-out, so a regression in the
//! shim or the emulator that numba's own tests catch shows here. The full suites (all of
//! numba-cuda's modules, ten CuPy test files) are opt-in: `scripts/client-suites.sh all`.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Runs `tests/suites/summarize.py` over `run` and returns its exit status and output.
fn summarize(run: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(root().join("tests/suites/summarize.py"))
        .arg(run)
        .args(["--causes", "5"])
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

/// The row of `module` in a summary table: passed, failed, skipped, errors.
fn row(summary: &str, module: &str) -> [u32; 4] {
    let line = summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(module))
        .unwrap_or_else(|| panic!("no row for {module} in\n{summary}"));
    let n: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .take(4)
        .map(|v| v.parse().unwrap())
        .collect();
    [n[0], n[1], n[2], n[3]]
}

#[test]
fn numba_cuda_quick_modules_pass() {
    // The script does not build: make sure what it runs is there.
    remora();
    shim();
    nvjitlink_off();
    nvrtc_stand_ins();
    let out = Command::new("bash")
        .arg(root().join("scripts/client-suites.sh"))
        .args(["numba", "--quick", "--no-setup"])
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let summary =
        std::fs::read_to_string(target_dir().join("client-suites/numba-quick/summary.txt"))
            .unwrap();
    let list = std::fs::read_to_string(root().join("tests/suites/numba-quick.txt")).unwrap();
    let modules: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(modules.len() >= 5, "{list}");
    for module in modules {
        let name = format!("numba.{}", module.trim_end_matches(".py").replace('/', "."));
        let [passed, failed, _, errors] = row(&summary, &name);
        assert!(passed > 0 && failed == 0 && errors == 0, "{name}:\n{t}");
    }
}

#[test]
fn summary_counts_failures_errors_and_time_outs() {
    // Negative control of the counting that the test above relies on: one module with a failed
    // and an errored test, one killed at its time limit, one that crashed after passing.
    let run = TempDir::new("suite-summary");
    let dir = &run.0;
    std::fs::write(
        dir.join("modules.tsv"),
        "m.fails\t1\t3\nm.late\t124\t300\nm.crash\t139\t2\nm.good\t0\t1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("m.fails.xml"),
        r#"<testsuites><testsuite>
<testcase name="a"/>
<testcase name="b"><failure message="AssertionError: 1 != 2">x</failure></testcase>
<testcase name="c"><error message="CudaAPIError: [700] CUDA_ERROR_ILLEGAL_ADDRESS">x</error></testcase>
<testcase name="d"><skipped message="needs 2 GPUs"/></testcase>
</testsuite></testsuites>"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("m.late.log"),
        "t.py::T::test_a[x=1, y=2] PASSED [ 33%]\nt.py::T::test_b FAILED [ 66%]\nt.py::T::test_c ",
    )
    .unwrap();
    std::fs::write(
        dir.join("m.crash.xml"),
        r#"<testsuites><testsuite><testcase name="a"/></testsuite></testsuites>"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("m.good.xml"),
        r#"<testsuites><testsuite><testcase name="a"/><testcase name="b"/></testsuite></testsuites>"#,
    )
    .unwrap();
    let (ok, t) = summarize(dir);
    assert!(!ok, "{t}");
    assert_eq!(row(&t, "m.fails"), [1, 1, 1, 1], "{t}");
    assert_eq!(row(&t, "m.late"), [1, 1, 0, 0], "{t}");
    assert_eq!(row(&t, "m.crash"), [1, 0, 0, 1], "{t}");
    assert_eq!(row(&t, "m.good"), [2, 0, 0, 0], "{t}");
    assert!(t.contains("[700] CUDA_ERROR_ILLEGAL_ADDRESS"), "{t}");
    assert!(t.contains("module killed at its time limit"), "{t}");
    assert!(t.contains("pass rate 55.6%"), "{t}");

    // The same run with only the good module passes.
    std::fs::write(dir.join("modules.tsv"), "m.good\t0\t1\n").unwrap();
    let (ok, t) = summarize(dir);
    assert!(ok, "{t}");
}
