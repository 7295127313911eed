//! A pool of real member servers on loopback: placement, the queue, quotas, member loss.

mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A free UDP port on loopback (for members that must come back at the same address).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-thread emulated member with 1 GiB, optionally on a fixed port.
fn member(port: Option<u16>) -> Server {
    let listen = format!("127.0.0.1:{}", port.unwrap_or(0));
    Server::start_with(&["--threads", "1", "--listen", &listen])
}

fn done(c: Child) -> Output {
    c.wait_with_output().unwrap()
}

#[test]
fn sessions_spread_over_members_and_a_third_queues_until_one_finishes() {
    let (a, b) = (member(None), member(None));
    let pool = Pool::start(&[&a.connection, &b.connection], &[]);
    let t1 = pool.trial(&["20", "1500"], &[]).spawn().unwrap();
    let t2 = pool.trial(&["20", "1500"], &[]).spawn().unwrap();
    let s = pool.wait_for(|s| s["sessions"].as_array().is_some_and(|x| x.len() == 2));
    let on: Vec<&str> = s["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["member"].as_str().unwrap())
        .collect();
    assert_ne!(on[0], on[1], "spread over members first: {s:#}");
    // Each member reports the memory its GPU has in use: at least the session's lease (an
    // eighth of its 1 GiB).
    pool.wait_for(|s| {
        s["members"].as_array().is_some_and(|m| {
            m.iter()
                .all(|m| m["gpus"][0]["used_mem"].as_u64().unwrap_or(0) >= 128 << 20)
        })
    });
    let t3 = pool.trial(&["20", "0"], &[]).spawn().unwrap();
    let s = pool.wait_for(|s| s["queue"]["length"] == 1);
    assert_eq!(s["sessions"].as_array().unwrap().len(), 2);
    for (i, t) in [t1, t2, t3].into_iter().enumerate() {
        let out = done(t);
        let all = text(&out);
        assert!(out.status.success(), "trial {i}: {all}");
        assert!(
            all.contains("trial devices=1 value=1.999998"),
            "trial {i}: {all}"
        );
        if i == 2 {
            assert!(
                all.contains("place 1 in the queue"),
                "the third waited: {all}"
            );
        }
    }
    pool.wait_for(|s| s["sessions"].as_array().is_some_and(|x| x.is_empty()));
}

#[test]
fn memory_is_a_quota_and_impossible_requests_fail_at_once() {
    let a = member(None);
    let pool = Pool::start(&[&a.connection], &[]);
    let out = done(
        pool.trial(&["3", "0", "100"], &["--memory", "64M"])
            .spawn()
            .unwrap(),
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("alloc 100 MiB -> 2"),
        "OUT_OF_MEMORY past the quota: {all}"
    );
    let out = done(
        pool.trial(&["3", "0", "16"], &["--memory", "64M"])
            .spawn()
            .unwrap(),
    );
    assert!(text(&out).contains("alloc 16 MiB -> 0"), "{}", text(&out));

    for (opts, says) in [
        (&["--memory", "64G"][..], "MiB"),
        (&["--gpus", "2"][..], "2 GPUs"),
    ] {
        let started = Instant::now();
        let out = done(pool.trial(&["1", "0"], opts).spawn().unwrap());
        let all = text(&out);
        assert!(!out.status.success(), "{opts:?}: {all}");
        assert!(all.contains("-> 100"), "CUDA_ERROR_NO_DEVICE: {all}");
        assert!(all.contains(says), "{opts:?} says why: {all}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "at once, not queued"
        );
    }
}

#[test]
fn a_session_that_waits_past_its_queue_timeout_gets_no_device() {
    let a = member(None);
    let pool = Pool::start(&[&a.connection], &[]);
    let hold = pool.trial(&["3", "4000"], &[]).spawn().unwrap();
    pool.wait_for(|s| s["sessions"].as_array().is_some_and(|x| x.len() == 1));
    let started = Instant::now();
    let out = done(
        pool.trial(&["1", "0"], &["--queue-timeout", "1"])
            .spawn()
            .unwrap(),
    );
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("-> 100") && all.contains("REMORA_QUEUE_TIMEOUT"),
        "{all}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(done(hold).status.success());
}

#[test]
fn a_killed_member_fails_only_its_session_within_10_s_and_is_used_again_when_back() {
    let port = free_port();
    let mut a = member(Some(port));
    let b = member(None);
    let pool = Pool::start(&[&a.connection, &b.connection], &[]);
    let on_a = a.connection.clone();
    let long = |p: &Pool| p.trial(&["5", "30000"], &[]).spawn().unwrap();
    let t1 = long(&pool);
    let t2 = pool.trial(&["20", "2500"], &[]).spawn().unwrap();
    let s = pool.wait_for(|s| s["sessions"].as_array().is_some_and(|x| x.len() == 2));
    // Which trial is on the member about to die?
    let a_addr = std::fs::read_to_string(&on_a).unwrap();
    let a_addr = a_addr
        .lines()
        .find_map(|l| l.strip_prefix("address = "))
        .unwrap()
        .to_string();
    let ids_on_a: Vec<u64> = s["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["member"] == a_addr.as_str())
        .map(|x| x["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids_on_a.len(), 1, "{s:#}");
    let first_on_a = ids_on_a[0] == s["sessions"][0]["id"].as_u64().unwrap()
        && s["sessions"][0]["id"].as_u64() < s["sessions"][1]["id"].as_u64();
    let killed = Instant::now();
    a.kill();
    let (doomed, survivor) = if first_on_a { (t1, t2) } else { (t2, t1) };
    let out = done(doomed);
    let waited = killed.elapsed();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(waited < Duration::from_secs(10), "failed after {waited:?}");
    pool.wait_for(|s| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["state"] == "missing")
    });
    // A retry lands on the live member.
    let retry = pool.trial(&["20", "0"], &[]).output().unwrap();
    assert!(retry.status.success(), "{}", text(&retry));
    let _ = survivor.wait_with_output();
    // The member comes back at the same address and is used again.
    let _a2 = Server::start_with(&[
        "--threads",
        "1",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--state-dir",
        a.dir.0.to_str().unwrap(),
    ]);
    pool.wait_for(|s| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] == "up")
    });
}

#[test]
fn a_member_with_wrong_credentials_is_named_and_retried_not_fatal() {
    let a = member(None);
    let b = member(None);
    let wrong = b.connection_with("token", "0000");
    let pool = Pool::spawn(|c| {
        c.arg("--member").arg(&a.connection);
        c.arg("--member").arg(&wrong);
    });
    let s = pool.wait_for(|s| {
        s["members"][1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("token"))
    });
    assert_eq!(s["members"][0]["state"], "up");
    assert_ne!(s["members"][1]["state"], "up");
    let out = pool.trial(&["3", "0"], &[]).output().unwrap();
    assert!(
        out.status.success(),
        "the good member serves: {}",
        text(&out)
    );
}

#[test]
fn remora_status_shows_a_plain_servers_devices_and_sessions() {
    let server = Server::start();
    let mut c = server.command(&c_program("pool_trial"));
    let t = c
        .args(["3", "1500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(remora())
            .args(["status", "--connection"])
            .arg(&server.connection)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{}", text(&out));
        assert!(s.contains("GPU 0: Remora Emulated GPU"), "{s}");
        assert!(s.contains("MiB in use"), "{s}");
        if s.contains("sessions: 1") {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(done(t).status.success());
    // A wrong token is refused with a sentence.
    let out = Command::new(remora())
        .args(["status", "--connection"])
        .arg(server.connection_with("token", "nope"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("token"), "{}", text(&out));
}

/// Lines added to `/etc/hosts` for one test, taken out again on drop.
struct Hosts {
    added: Vec<String>,
}

impl Hosts {
    const PATH: &'static str = "/etc/hosts";

    /// `None` where `/etc/hosts` cannot be written (not root): the test says so and stops.
    fn open() -> Option<Self> {
        let h = Self { added: Vec::new() };
        std::fs::OpenOptions::new()
            .append(true)
            .open(Self::PATH)
            .ok()
            .map(|_| h)
    }

    fn add(&mut self, line: &str) {
        let mut s = std::fs::read_to_string(Self::PATH).unwrap();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(line);
        s.push('\n');
        std::fs::write(Self::PATH, s).unwrap();
        self.added.push(line.to_string());
    }

    fn remove(&mut self, line: &str) {
        let s = std::fs::read_to_string(Self::PATH).unwrap();
        let kept: Vec<&str> = s.lines().filter(|l| *l != line).collect();
        std::fs::write(Self::PATH, kept.join("\n") + "\n").unwrap();
        self.added.retain(|l| l != line);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for l in self.added.clone() {
            self.remove(&l);
        }
    }
}

#[test]
fn members_found_by_dns_are_added_and_removed_while_the_pool_runs() {
    let Some(mut hosts) = Hosts::open() else {
        eprintln!("skipped: /etc/hosts is not writable here (run as root to test DNS discovery)");
        return;
    };
    let name = format!("remora-members-{}.test", std::process::id());
    // Two members on two loopback addresses, one port, one identity (as a DaemonSet's pods).
    let port = loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.3", p)).is_ok() {
            break p;
        }
    };
    let a = Server::start_with(&["--threads", "1", "--listen", &format!("127.0.0.2:{port}")]);
    let b = Server::start_with(&[
        "--threads",
        "1",
        "--listen",
        &format!("127.0.0.3:{port}"),
        "--state-dir",
        a.dir.0.to_str().unwrap(),
    ]);
    let line_a = format!("127.0.0.2 {name}");
    let line_b = format!("127.0.0.3 {name}");
    hosts.add(&line_a);
    let pool = Pool::spawn(|c| {
        c.arg("--members-dns").arg(format!("{name}:{port}"));
        c.arg("--member-credentials").arg(&a.connection);
    });
    let state = |s: &serde_json::Value, ip: &str| -> String {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["address"].as_str().unwrap().starts_with(ip))
            .map(|m| m["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    pool.wait_for(|s| state(s, "127.0.0.2:") == "up");
    hosts.add(&line_b);
    pool.wait_for(|s| state(s, "127.0.0.3:") == "up");
    hosts.remove(&line_a);
    pool.wait_for(|s| state(s, "127.0.0.2:") == "removed");
    // New sessions go to the member still listed.
    let t = pool.trial(&["3", "1000"], &[]).spawn().unwrap();
    let s = pool.wait_for(|s| s["sessions"].as_array().is_some_and(|x| x.len() == 1));
    assert!(
        s["sessions"][0]["member"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.3:"),
        "{s:#}"
    );
    assert!(done(t).status.success());
    hosts.add(&line_a);
    pool.wait_for(|s| state(s, "127.0.0.2:") == "up");
    drop(b);
}

#[test]
fn a_programs_copies_large_and_small_pass_through_the_pool_intact() {
    // driver_memory checks every byte of copies up to 64 MiB each way, async copies, memsets
    // and its errors; through a pool, large payloads are relayed piece by piece.
    let a = member(None);
    let pool = Pool::start(&[&a.connection], &[]);
    let mut c = Command::new(remora());
    c.arg("run")
        .arg("--connection")
        .arg(&pool.connection)
        .arg("--")
        .arg(c_program("driver_memory"))
        .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
    let out = c.output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("driver_memory: all passed"), "{t}");
    assert!(t.contains("round trip 67108864 bytes"), "{t}");
}

#[test]
fn sigterm_drains_a_pool_then_ends_the_sessions_left() {
    let member = Server::start_with(&["--devices", "2"]);
    let mut pool = Pool::start(&[&member.connection], &["--drain-grace", "3s"]);
    let spawn = |hold_ms: &str| {
        pool.trial(&["1", hold_ms], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let short = spawn("1500");
    let long = spawn("30000");
    pool.wait_for(|s| s["sessions"].as_array().is_some_and(|x| x.len() == 2));
    let t = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &pool.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // New sessions are refused while it drains.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = pool.trial(&["1", "0"], &[]).output().unwrap();
        if text(&o).contains("pool shutting down") {
            assert!(!o.status.success());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not refused while draining: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let short = short.wait_with_output().unwrap();
    assert!(short.status.success(), "{}", text(&short));
    let long = long.wait_with_output().unwrap();
    let said = text(&long);
    assert!(
        !long.status.success() && said.contains("pool shutting down"),
        "{said}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(15),
        "ended after {:?}",
        t.elapsed()
    );
    let status = exit_within(&mut pool.child, Duration::from_secs(10));
    assert!(status.success(), "exit {status}");
}
