//! One virtual GPU backed by several pool members (`remora run --virtual-gpu M`): real client
//! programs get the same results as on one GPU, splittable launches are split, the rest run
//! whole, and what happened shows in `remora status`.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

fn members(n: usize) -> Vec<Server> {
    (0..n).map(|_| Server::start()).collect()
}

fn pool_of(ms: &[Server]) -> Pool {
    let files: Vec<&std::path::Path> = ms.iter().map(|m| m.connection.as_path()).collect();
    Pool::start(&files, &[])
}

fn run_on(pool: &Pool, m: u32, prog: &std::path::Path, args: &[&str]) -> Command {
    let mut c = pool.command_virtual_gpu(m, prog);
    c.args(args);
    c
}

fn split_kernels() -> std::path::PathBuf {
    c_program_with("split_kernels", &["-lnvrtc"])
}

fn passed(out: &Output, what: &str) -> String {
    let t = text(out);
    assert!(out.status.success() && t.contains(what), "{t}");
    t
}

#[test]
fn chained_split_and_whole_kernels_give_the_cpus_results_on_2_and_3_members() {
    // `--split always`: every launch the footprints allow is split, however small.
    let ms = members(3);
    let files: Vec<&std::path::Path> = ms.iter().map(|m| m.connection.as_path()).collect();
    let metrics = metrics_port();
    let pool = Pool::start(&files, &["--split", "always", "--metrics", &metrics]);
    let mut split = 0.0;
    for m in [2, 3] {
        let out = run_on(&pool, m, &split_kernels(), &["check"])
            .output()
            .unwrap();
        let t = passed(&out, "split_kernels: all passed");
        assert!(t.contains(&format!("Remora virtual GPU ({m} x")), "{t}");
        let page = scrape(&metrics);
        let now = sample(&page, "remora_pool_vgpu_launches_total{how=\"split\"}");
        // sgemm x3, scale x2, saxpy x3, the last sgemm: 9 launches split each time.
        assert!(now - split >= 9.0, "{page}");
        split = now;
        assert!(
            sample(&page, "remora_pool_vgpu_bytes_moved_total") > 0.0,
            "{page}"
        );
        assert!(
            sample(&page, "remora_pool_vgpu_launches_total{how=\"whole\"}") >= 2.0,
            "the histogram runs whole: {page}"
        );
    }
}

#[test]
fn with_split_never_every_launch_runs_whole_and_results_are_the_same() {
    let ms = members(2);
    let files: Vec<&std::path::Path> = ms.iter().map(|m| m.connection.as_path()).collect();
    let metrics = metrics_port();
    let pool = Pool::start(&files, &["--split", "never", "--metrics", &metrics]);
    let out = run_on(&pool, 2, &split_kernels(), &["check"])
        .output()
        .unwrap();
    passed(&out, "split_kernels: all passed");
    let page = scrape(&metrics);
    let split = sample(&page, "remora_pool_vgpu_launches_total{how=\"split\"}");
    assert_eq!(split, 0.0, "{page}");
    let whole = sample(&page, "remora_pool_vgpu_launches_total{how=\"whole\"}");
    assert!(whole >= 11.0, "{page}");
}

#[test]
fn status_shows_split_launches_the_reasons_for_the_rest_and_the_bytes_moved() {
    let ms = members(2);
    let pool = pool_of(&ms);
    // A long SGEMM run keeps the session open while status is read.
    let mut child = run_on(&pool, 2, &split_kernels(), &["sgemm", "256", "30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let s = pool.wait_for(|s| {
        s["sessions"].as_array().is_some_and(|x| {
            x.iter()
                .any(|v| v["virtual_gpu"]["launches_split"].as_u64().unwrap_or(0) > 0)
        })
    });
    // `remora status` shows it as a table while the run goes on.
    let table = Command::new(remora())
        .args(["status", "--connection"])
        .arg(&pool.connection)
        .output()
        .unwrap();
    let table = text(&table);
    assert!(table.contains("virtual GPU over"), "{table}");
    assert!(
        table.contains("not split: sgemm: its first launch"),
        "{table}"
    );
    let out = exit_within(&mut child, Duration::from_secs(120));
    assert!(out.success());
    let v = &s["sessions"][0]["virtual_gpu"];
    assert_eq!(v["members"].as_array().unwrap().len(), 2, "{s:#}");
    assert!(v["bytes_moved"].as_u64().unwrap() > 0, "{s:#}");
    let reasons = v["not_split_because"].as_object().unwrap();
    assert!(
        reasons
            .keys()
            .any(|k| k.starts_with("sgemm: its first launch")),
        "{s:#}"
    );
    let blocks = v["blocks_per_member"].as_array().unwrap();
    assert!(blocks.iter().all(|b| b.as_u64().unwrap() > 0), "{s:#}");
}

#[test]
fn driver_copies_memsets_and_their_errors_are_intact_on_a_virtual_gpu() {
    let ms = members(2);
    let pool = pool_of(&ms);
    let out = run_on(&pool, 2, &c_program("driver_memory"), &[])
        .output()
        .unwrap();
    passed(&out, "driver_memory: all passed");
}

#[test]
fn nvrtc_and_cudart_programs_pass_on_a_virtual_gpu() {
    let ms = members(2);
    let pool = pool_of(&ms);
    let out = run_on(
        &pool,
        2,
        &c_program_with("nvrtc_kernels", &["-lnvrtc"]),
        &["compute"],
    )
    .output()
    .unwrap();
    passed(&out, "nvrtc_kernels compute: all passed");
}

#[test]
fn an_nvcc_built_program_with_its_fatbin_passes_on_a_virtual_gpu() {
    let ms = members(2);
    let pool = pool_of(&ms);
    let mut c = run_on(&pool, 2, &nvcc_program("vector_add", true, true), &[]);
    c.env("LD_LIBRARY_PATH", cuda_env("CUDA13_LIB"));
    passed(&c.output().unwrap(), "vector_add passed");
}

#[test]
fn more_members_than_the_pool_has_is_refused_at_once_with_the_reason() {
    let ms = members(2);
    let pool = pool_of(&ms);
    let started = Instant::now();
    let out = run_on(&pool, 3, &split_kernels(), &["check"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("virtual GPU over 3 members"), "{t}");
    assert!(started.elapsed() < Duration::from_secs(15), "{t}");
}

#[test]
fn a_single_server_refuses_a_virtual_gpu_and_says_why() {
    let server = Server::start();
    let mut c = server.command(&split_kernels());
    c.arg("check").env("REMORA_VIRTUAL_GPU", "2");
    let out = c.output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("needs a pool"), "{t}");
}

#[test]
fn a_lost_member_ends_the_session_with_an_error_not_a_hang() {
    let mut ms = members(2);
    let pool = pool_of(&ms);
    let mut child = run_on(&pool, 2, &split_kernels(), &["sgemm", "128", "400"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    pool.wait_for(|s| {
        s["sessions"].as_array().is_some_and(|x| {
            x.iter()
                .any(|v| v["virtual_gpu"]["launches_split"].as_u64().unwrap_or(0) > 0)
        })
    });
    ms[1].kill();
    let status = exit_within(&mut child, Duration::from_secs(30));
    assert!(!status.success());
    let mut err = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("CUDA_ERROR_DEVICE_UNAVAILABLE") || err.contains("-> 46"),
        "{err}"
    );
}
