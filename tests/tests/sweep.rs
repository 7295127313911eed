//! The Optuna sweep of `examples/sweep` against a pool of two one-thread emulated members:
//! it finds the best learning rate using both members, retries a trial whose member was
//! killed, and reports a trial that timed out in the queue as failed instead of hanging. Also
//! validates `deploy/kubernetes` with a Kubernetes schema validator (from PyPI, installed by
//! `scripts/setup-cuda.sh --python`), and that the validator rejects broken copies.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// How long one sweep may take before the test calls it hung (trials take a few seconds each,
/// more on a loaded two-core machine).
const SWEEP_DEADLINE: Duration = Duration::from_secs(300);

/// The learning rates the tests sweep: after trial.py's 50 steps, lr 1 has loss 0.352, lr 0.1
/// 0.437, lr 0.01 0.633, and lr 100 diverges to 2.11, so the best one is unambiguous.
const GRID: &str = "0.01,0.1,1,100";

/// A one-thread emulated member with 1 GiB.
fn member() -> Server {
    Server::start_with(&["--threads", "1"])
}

/// The `address = ...` of a connection file, as `remora status` names members.
fn address(connection: &Path) -> String {
    std::fs::read_to_string(connection)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("address = "))
        .expect("connection file has an address")
        .trim()
        .to_string()
}

/// A running `sweep.py`, its output going to files (so that nothing blocks on a full pipe while
/// the test polls the pool); killed on drop.
struct Sweep {
    child: Child,
    dir: TempDir,
}

/// What a finished sweep printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    all: String,
    took: Duration,
}

impl Sweep {
    /// `python3 examples/sweep/sweep.py --connection POOL ARGS...`, with Optuna from
    /// `$SWEEP_PY` for the sweep and CuPy from `$CUDA_PY` for its trials.
    fn start(pool: &Path, args: &[&str]) -> Self {
        nvjitlink_off();
        // CuPy compiles its kernels with NVRTC, which wants the CUDA headers in
        // $CUDA_PATH/include.
        let cuda_path = target_dir().join("cuda-path");
        std::fs::create_dir_all(&cuda_path).unwrap();
        let include = cuda_path.join("include");
        if std::fs::symlink_metadata(&include).is_err() {
            let _ = std::os::unix::fs::symlink(cuda_env("CUDA12_INCLUDE"), &include);
        }
        let dir = TempDir::new("sweep");
        let child = Command::new("python3")
            .arg(root().join("examples/sweep/sweep.py"))
            .arg("--connection")
            .arg(pool)
            .arg("--remora")
            .arg(remora())
            .args(["--python", "python3", "--trial-pythonpath"])
            .arg(cuda_env("CUDA_PY"))
            .args(args)
            .env("PYTHONPATH", cuda_env("SWEEP_PY"))
            .env("CUDA_PATH", &cuda_path)
            .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"))
            .env("CUPY_CACHE_DIR", target_dir().join("cupy-cache"))
            .stdout(std::fs::File::create(dir.0.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.0.join("stderr")).unwrap())
            .spawn()
            .expect("python3 examples/sweep/sweep.py");
        Self { child, dir }
    }

    /// Waits for the sweep to end, calling `tick` every 100 ms meanwhile; fails the test if it
    /// runs past [`SWEEP_DEADLINE`].
    fn finish(mut self, mut tick: impl FnMut()) -> Finished {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > SWEEP_DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the sweep hung for {SWEEP_DEADLINE:?}: {}", self.output().1);
            }
            tick();
            std::thread::sleep(Duration::from_millis(100));
        };
        let (stdout, all) = self.output();
        Finished {
            status,
            stdout,
            all,
            took: started.elapsed(),
        }
    }

    fn output(&self) -> (String, String) {
        let read = |name: &str| std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default();
        let stdout = read("stdout");
        let all = format!("{stdout}{}", read("stderr"));
        (stdout, all)
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_sweep_finds_the_best_learning_rate_using_both_members() {
    let (a, b) = (member(), member());
    let pool = Pool::start(&[&a.connection, &b.connection], &[]);
    let sweep = Sweep::start(&pool.connection, &["--grid", GRID, "--jobs", "2"]);
    let mut seen = BTreeSet::new();
    let done = sweep.finish(|| seen.extend(pool.busy_members()));
    let out = &done.all;
    assert!(done.status.success(), "{out}");
    assert!(
        done.stdout.contains("completed 4, failed 0, retried 0"),
        "{out}"
    );
    let best = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("best lr=1 loss="))
        .unwrap_or_else(|| panic!("best lr is 1: {out}"));
    let loss: f64 = best.parse().unwrap();
    assert!((loss - 0.352).abs() < 0.005, "lr 1 trains to 0.352: {out}");
    for (lr, want) in [("0.01", 0.633), ("0.1", 0.437), ("100", 2.11)] {
        let got: f64 = done
            .stdout
            .lines()
            .find_map(|l| {
                l.split_once(&format!(" lr={lr} loss="))?
                    .1
                    .split(' ')
                    .next()
            })
            .unwrap_or_else(|| panic!("no result for lr {lr}: {out}"))
            .parse()
            .unwrap();
        assert!(
            (got - want).abs() < 0.01,
            "lr {lr}: loss {got}, want {want}: {out}"
        );
    }
    let want: BTreeSet<String> = [address(&a.connection), address(&b.connection)].into();
    assert_eq!(seen, want, "both members ran trials: {out}");
}

#[test]
fn a_trial_whose_member_is_killed_is_retried_on_the_other() {
    let mut a = member();
    let b = member();
    let pool = Pool::start(&[&a.connection, &b.connection], &[]);
    // Long enough (a few seconds each) that both trials are still running when `a` dies.
    let sweep = Sweep::start(
        &pool.connection,
        &["--grid", "0.1,1", "--jobs", "2", "--", "--steps", "300"],
    );
    pool.wait_for(|s| s["sessions"].as_array().is_some_and(|x| x.len() == 2));
    a.kill();
    let done = sweep.finish(|| {});
    let out = &done.all;
    assert!(done.status.success(), "{out}");
    assert!(done.stdout.contains("member lost, retrying"), "{out}");
    // Usually one retry; two if the first retry reached the pool before it had marked the
    // killed member missing.
    assert!(
        done.stdout.contains("completed 2, failed 0, retried "),
        "{out}"
    );
    assert!(!done.stdout.contains("retried 0"), "{out}");
    assert!(done.stdout.contains("best lr=1 "), "{out}");
}

#[test]
fn a_trial_that_times_out_in_the_queue_is_reported_failed_not_hung() {
    let a = member();
    let pool = Pool::start(&[&a.connection], &[]);
    // Holds the pool's only GPU for 60 s.
    let mut hold = Command::new(remora())
        .arg("run")
        .arg("--connection")
        .arg(&pool.connection)
        .arg("--")
        .arg(c_program("pool_trial"))
        .args(["3", "60000"])
        .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    pool.wait_for(|s| s["sessions"].as_array().is_some_and(|x| x.len() == 1));
    let sweep = Sweep::start(&pool.connection, &["--grid", "1", "--queue-timeout", "0.5"]);
    let done = sweep.finish(|| {});
    let _ = hold.kill();
    let _ = hold.wait();
    let out = &done.all;
    assert!(!done.status.success(), "no trial completed: {out}");
    assert!(done.stdout.contains("trial 0 lr=1 failed"), "{out}");
    assert!(
        done.stdout.contains("REMORA_QUEUE_TIMEOUT"),
        "says why: {out}"
    );
    assert!(
        done.stdout.contains("completed 0, failed 1, retried 0"),
        "a queue timeout is not a lost member: {out}"
    );
    assert!(
        done.took < Duration::from_secs(30),
        "took {:?}: {out}",
        done.took
    );
}

/// `kubernetes-validate --strict FILES`: (passed, its output).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(files)
        .env("PYTHONPATH", cuda_env("SWEEP_PY"))
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

fn manifests() -> Vec<PathBuf> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_kubernetes_manifest_passes_schema_validation() {
    let files = manifests();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "members-daemonset.yaml",
        "members-service.yaml",
        "pool-deployment.yaml",
        "pool-service.yaml",
        "secret.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let (ok, out) = validate(&files);
    assert!(ok, "{out}");
    for (file, kind) in [
        ("members-daemonset.yaml", "daemonset/remora-member"),
        ("members-service.yaml", "service/remora-members"),
        ("pool-deployment.yaml", "deployment/remora-pool"),
        ("pool-service.yaml", "service/remora-pool"),
        ("secret.yaml", "secret/remora-identity"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(file) && l.contains("passed") && l.contains(kind)),
            "{file} validated as {kind}: {out}"
        );
    }
}

#[test]
fn the_validator_rejects_broken_copies_of_the_manifests() {
    let dir = TempDir::new("k8s-broken");
    let original =
        std::fs::read_to_string(root().join("deploy/kubernetes/members-daemonset.yaml")).unwrap();
    for (what, from, to) in [
        (
            "a required field missing",
            "      containers:",
            "      container:",
        ),
        (
            "an unknown field",
            "      nodeSelector:",
            "      nodeSelektor:",
        ),
        ("a wrong type", "maxUnavailable: 1", "maxUnavailable: [1]"),
    ] {
        assert!(original.contains(from), "{from:?} in the DaemonSet");
        let broken = dir.0.join("broken.yaml");
        std::fs::write(&broken, original.replacen(from, to, 1)).unwrap();
        let (ok, out) = validate(&[broken]);
        assert!(!ok, "{what} passed validation: {out}");
        assert!(out.contains("did not validate"), "{what}: {out}");
    }
}

/// What the schemas cannot see: the names that tie the manifests together.
#[test]
fn the_pool_finds_its_members_by_the_headless_services_name() {
    let read = |f: &str| std::fs::read_to_string(root().join("deploy/kubernetes").join(f)).unwrap();
    let (svc, pool, ds, secret) = (
        read("members-service.yaml"),
        read("pool-deployment.yaml"),
        read("members-daemonset.yaml"),
        read("secret.yaml"),
    );
    assert!(svc.contains("clusterIP: None"), "headless: {svc}");
    assert!(svc.contains("name: remora-members\n"), "{svc}");
    assert!(svc.contains("namespace: remora\n"), "{svc}");
    assert!(
        pool.contains("- remora-members.remora.svc.cluster.local:4433\n"),
        "the pool resolves the headless Service: {pool}"
    );
    assert!(
        svc.contains("app.kubernetes.io/name: remora-member\n")
            && ds.contains("app.kubernetes.io/name: remora-member\n"),
        "the Service selects the DaemonSet's pods"
    );
    for key in ["cert.der", "key.der", "token", "member.conn"] {
        assert!(
            secret.contains(&format!("  {key}:")),
            "the Secret has {key}"
        );
    }
    assert!(
        ds.contains("- 0.0.0.0:4433\n") && ds.contains("- /var/lib/remora\n"),
        "{ds}"
    );
    assert!(pool.contains("- /etc/remora/member.conn\n"), "{pool}");
    assert!(pool.contains("mountPath: /etc/remora\n"), "{pool}");
}

/// A free UDP port on loopback.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The container arguments of a DaemonSet's or Deployment's first container, read with PyYAML
/// (installed beside the validator).
fn container_args(file: &str) -> Vec<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
             d = yaml.safe_load(open(sys.argv[1]))\n\
             print(json.dumps(d['spec']['template']['spec']['containers'][0]['args']))",
        )
        .arg(root().join("deploy/kubernetes").join(file))
        .env("PYTHONPATH", cuda_env("SWEEP_PY"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The manifests' own arguments, with the cluster's addresses and mounts replaced by loopback
/// ones: members and pool share one identity from one (Secret-like) state dir, the pool finds
/// the member through --members-dns with the Secret's member.conn, and a client reaches the member through the
/// pool with that connection file and the pool's address.
#[test]
fn the_manifests_arguments_make_a_working_pool_on_loopback() {
    let dir = TempDir::new("k8s-loopback");
    let identity = dir.0.join("identity");
    // Made once, as secret.yaml's comment says.
    let mut maker = Command::new(remora())
        .args(["serve", "--backend", "emulated", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(&identity)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let member_conn = identity.join("connection");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !member_conn.exists() {
        assert!(Instant::now() < deadline, "no identity written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = maker.kill();
    let _ = maker.wait();
    let (member_port, pool_port) = (free_port(), free_port());
    let backend = std::env::var("REMORA_TEST_BACKEND").unwrap_or_else(|_| "emulated".into());
    let local = |args: Vec<String>, port: u16, name: &str| -> Vec<String> {
        args.into_iter()
            .map(|a| match a.as_str() {
                "0.0.0.0:4433" => format!("127.0.0.1:{port}"),
                "cuda" => backend.clone(),
                "/var/lib/remora" => identity.display().to_string(),
                "/run/remora/connection" => dir.0.join(name).display().to_string(),
                "remora-members.remora.svc.cluster.local:4433" => {
                    // An address, not `localhost`, which may also resolve to ::1 (a second,
                    // unreachable member); names resolving to several members are pool.rs's.
                    format!("127.0.0.1:{member_port}")
                }
                "/etc/remora/member.conn" => member_conn.display().to_string(),
                _ => a,
            })
            .collect()
    };
    let spawn = |args: &[String]| {
        Command::new(remora())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let member_args = local(container_args("members-daemonset.yaml"), member_port, "m");
    assert!(member_args.contains(&backend), "{member_args:?}");
    let _member = KillOnDrop(spawn(&member_args));
    let pool_args = local(container_args("pool-deployment.yaml"), pool_port, "pool");
    assert!(
        pool_args.contains(&format!("127.0.0.1:{member_port}")),
        "{pool_args:?}"
    );
    let pool_child = spawn(&pool_args);
    // The client's connection file: the Secret's member.conn with the pool's address.
    let client_conn = dir.0.join("client.conn");
    let conn = std::fs::read_to_string(&member_conn).unwrap();
    let conn: Vec<String> = conn
        .lines()
        .map(|l| match l.starts_with("address") {
            true => format!("address = 127.0.0.1:{pool_port}"),
            false => l.to_string(),
        })
        .collect();
    std::fs::write(&client_conn, conn.join("\n")).unwrap();
    let pool = Pool {
        child: pool_child,
        dir: TempDir::new("k8s-pool"),
        connection: client_conn.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let up = loop {
        let out = Command::new(remora())
            .args(["status", "--json", "--connection"])
            .arg(&client_conn)
            .output()
            .unwrap();
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if s["members"][0]["state"] == "up" {
            break s;
        }
        assert!(Instant::now() < deadline, "member never up: {}", text(&out));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(up["members"].as_array().unwrap().len(), 1, "{up:#}");
    let out = Command::new(remora())
        .arg("run")
        .arg("--connection")
        .arg(&pool.connection)
        .arg("--")
        .arg(c_program("pool_trial"))
        .args(["3", "0"])
        .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("trial devices=1"), "{}", text(&out));
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
