//! Running a server for others: tokens with limits (`remora token`, `serve --tokens`), reloads
//! without a restart, revocation, Prometheus metrics over HTTP, and draining on SIGTERM. Real
//! C programs under `remora run`, against a real `remora serve` over QUIC on loopback.

mod support;

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A server with a tokens file (and metrics at a free port), and how to act as its operator.
struct Operated {
    server: Server,
    tokens: PathBuf,
    metrics: String,
    _dir: TempDir,
}

impl Operated {
    fn start(extra: &[&str]) -> Self {
        let dir = TempDir::new("tokens");
        let tokens = dir.0.join("tokens");
        let metrics = metrics_port();
        let mut args = vec![
            "--tokens",
            tokens.to_str().unwrap(),
            "--metrics",
            metrics.as_str(),
        ];
        args.extend_from_slice(extra);
        let server = Server::start_with(&args);
        Self {
            server,
            tokens,
            metrics,
            _dir: dir,
        }
    }

    /// `remora token ARGS --tokens FILE` for this server.
    fn token(&self, args: &[&str]) -> Output {
        token(&self.tokens, &self.server.dir.0, args)
    }

    /// Adds `name` with `limits` and returns their connection file.
    fn add(&self, name: &str, limits: &[&str]) -> PathBuf {
        add_token(&self.tokens, &self.server.dir.0, name, limits)
    }

    /// SIGHUP, then waits until `n` people's tokens are in force.
    fn reload(&self, n: usize) {
        self.signal("-HUP");
        self.wait_metrics(&format!("{n} token(s) were not put in force"), |p| {
            sample(p, "remora_tokens") == n as f64
        });
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.server.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn scrape(&self) -> String {
        scrape(&self.metrics)
    }

    /// Waits (up to 10 s) until `ok` holds of the metrics page.
    fn wait_metrics(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = self.scrape();
            if ok(&page) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}; metrics:\n{page}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `remora run --connection CONN -- PROG ARGS`.
fn run_as(conn: &Path, prog: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(remora());
    c.arg("run")
        .arg("--connection")
        .arg(conn)
        .arg("--")
        .arg(prog)
        .args(args)
        .env("LD_LIBRARY_PATH", cuda_env("CUDA12_LIB"));
    c
}

fn output(c: &mut Command) -> (bool, String) {
    let o = c.output().expect("remora run");
    (o.status.success(), text(&o))
}

/// A client holding `mib` MiB until told to go on: `client_tool hold`.
struct Holder {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(conn: &Path, mib: u32) -> Self {
        let mut child = run_as(conn, &c_program("client_tool"), &["hold", &mib.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        wait_line(&mut stdout, "ptr ");
        Self { child, stdout }
    }

    /// Lets it read its memory back; its "after" line and its stderr.
    fn finish(mut self) -> (String, String) {
        let mut stdin = self.child.stdin.take().unwrap();
        let _ = stdin.write_all(b"go\n");
        drop(stdin);
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        let _ = self.child.wait();
        (rest, err)
    }
}

#[test]
fn a_token_added_works_and_a_revoked_one_is_refused_and_its_session_ended() {
    let op = Operated::start(&[]);
    let trial = c_program("pool_trial");
    // Added while the server runs: picked up without a restart (the file is polled).
    let alice = op.add("alice", &["--memory", "256M"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (ok, out) = loop {
        let (ok, out) = output(&mut run_as(&alice, &trial, &["3", "0"]));
        if ok || Instant::now() > deadline {
            break (ok, out);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(ok && out.contains("trial devices=1"), "{out}");
    // The server's own connection file keeps working next to the tokens file.
    let (ok, out) = output(op.server.command(&trial).args(["1", "0"]));
    assert!(ok, "{out}");

    let listed = text(&op.token(&["list"]));
    assert!(listed.contains("alice  memory 256M  gpus -"), "{listed}");
    assert!(!listed.contains(&std::fs::read_to_string(&alice).unwrap()[..20]));

    // A live session, then the token is revoked (SIGHUP: at once).
    let holder = Holder::start(&alice, 1);
    let o = op.token(&["revoke", "alice"]);
    assert!(o.status.success(), "{}", text(&o));
    op.signal("-HUP");
    op.wait_metrics("alice's session was not ended", |p| {
        sample(p, "remora_sessions_active{token=\"alice\"}") == 0.0
    });
    let (after, err) = holder.finish();
    assert!(after.contains("after 46 same 0"), "{after}{err}");
    assert!(err.contains("token `alice` was revoked"), "{after}{err}");

    let (ok, out) = output(&mut run_as(&alice, &trial, &["1", "0"]));
    assert!(!ok && out.contains("invalid token"), "{out}");
    // Revoking someone who is not there says so.
    let o = op.token(&["revoke", "alice"]);
    assert!(!o.status.success() && text(&o).contains("no token named `alice`"));
}

#[test]
fn an_invalid_tokens_file_changes_nothing_and_a_fixed_one_is_read() {
    let op = Operated::start(&[]);
    let bob = op.add("bob", &[]);
    op.reload(1);
    let meminfo = c_program("client_tool");
    let (ok, out) = output(&mut run_as(&bob, &meminfo, &["meminfo"]));
    assert!(ok, "{out}");
    let good = std::fs::read_to_string(&op.tokens).unwrap();
    std::fs::write(&op.tokens, format!("{good}\nsessoins = 3\n")).unwrap();
    op.signal("-HUP");
    op.wait_metrics("the invalid file was not noticed", |p| {
        sample(p, "remora_tokens_file_errors_total") == 1.0
    });
    let (ok, out) = output(&mut run_as(&bob, &meminfo, &["meminfo"]));
    assert!(ok, "bob's token stays in force: {out}");
    // `remora token` refuses to edit a file it cannot read.
    let o = op.token(&["list"]);
    assert!(!o.status.success() && text(&o).contains("unknown key `sessoins`"));
    std::fs::write(&op.tokens, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, out) = output(&mut run_as(&bob, &meminfo, &["meminfo"]));
        if !ok {
            assert!(out.contains("invalid token"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "an emptied file was not read");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn limits_are_enforced_per_token() {
    let op = Operated::start(&["--devices", "2"]);
    let trial = c_program("pool_trial");
    let carol = op.add("carol", &["--memory", "64M", "--sessions", "2"]);
    let dave = op.add("dave", &["--gpus", "1", "--sessions", "1"]);
    let erin = op.add("erin", &["--module-cache", "256"]);
    op.reload(3);

    // Memory: over the limit in one call, and across the token's sessions.
    let (ok, out) = output(&mut run_as(&carol, &trial, &["1", "0", "100"]));
    assert!(ok && out.contains("alloc 100 MiB -> 2"), "{out}");
    let holder = Holder::start(&carol, 40);
    let (ok, out) = output(&mut run_as(&carol, &trial, &["1", "0", "40"]));
    assert!(ok && out.contains("alloc 40 MiB -> 2"), "{out}");
    let (after, _) = holder.finish();
    assert!(after.contains("after 0 same 1"), "{after}");
    // Freed with the session: the same allocation fits now.
    let (ok, out) = output(&mut run_as(&carol, &trial, &["1", "0", "40"]));
    assert!(ok && out.contains("alloc 40 MiB -> 0"), "{out}");

    // GPUs: a two-device server shows dave one; asking for two is refused with the reason.
    let (ok, out) = output(&mut run_as(&dave, &trial, &["1", "0"]));
    assert!(ok && out.contains("trial devices=1"), "{out}");
    let (ok, out) = output(&mut run_as(&carol, &trial, &["1", "0"]));
    assert!(ok && out.contains("trial devices=2"), "{out}");
    let (ok, out) = output(run_as(&dave, &trial, &["1", "0"]).env("REMORA_GPUS", "2"));
    assert!(
        !ok && out.contains("may use at most 1 GPU(s) per session"),
        "{out}"
    );

    // Sessions: a second one at once is refused, saying why.
    let holder = Holder::start(&dave, 1);
    let (ok, out) = output(&mut run_as(&dave, &trial, &["1", "0"]));
    assert!(
        !ok && out.contains("token `dave` already has 1 session(s) open"),
        "{out}"
    );
    holder.finish();

    // Module cache: the trial's PTX image is larger than erin's 256 bytes. The shim read the
    // PTX and posted the load, so the refusal is reported by the next synchronising call (the
    // copy of the result), as a driver that loads lazily reports it; never a wrong result.
    let (ok, out) = output(&mut run_as(&erin, &trial, &["1", "0"]));
    assert!(
        !ok && out.contains("cuMemcpyDtoH") && out.contains("CUDA_ERROR_OUT_OF_MEMORY"),
        "{out}"
    );
    // Step by step: the load and the launch succeed at the call, the synchronisation reports
    // the refusal, a later launch fails again, and once the reply was taken (by
    // cuModuleGetGlobal, which reports it) launches fail at the call.
    let (ok, out) = output(&mut run_as(&erin, &c_program("module_loads"), &["refused"]));
    assert!(ok, "{out}");
    for line in [
        "load 0",
        "function 0",
        "launch 0",
        "sync 2",
        "again launch 0 sync 2",
        "global 2",
        "after launch 2",
        "final sync 0",
        "unload 0",
        "clean sync 0",
    ] {
        assert!(out.lines().any(|l| l == line), "`{line}` in:\n{out}");
    }

    // Bad limits never reach the file.
    let o = op.token(&["add", "frank", "--memory", "lots"]);
    assert!(!o.status.success() && text(&o).contains("not a size"));
    let o = op.token(&["add", "carol"]);
    assert!(!o.status.success() && text(&o).contains("`carol` already has a token"));
}

#[test]
fn metrics_count_what_a_program_did() {
    let op = Operated::start(&[]);
    let alice = op.add("alice", &["--memory", "64M"]);
    op.reload(1);
    let trial = c_program("pool_trial");
    let (ok, out) = output(&mut run_as(&alice, &trial, &["4", "0", "100"]));
    assert!(ok && out.contains("alloc 100 MiB -> 2"), "{out}");
    op.wait_metrics("the session did not end", |p| {
        !p.contains("remora_sessions_active{")
    });
    let page = op.scrape();
    for (series, at_least) in [
        ("remora_sessions_opened_total{token=\"alice\"}", 1.0),
        ("remora_kernel_launches_total", 4.0),
        ("remora_calls_total{call=\"Launch\",class=\"async\"}", 4.0),
        (
            "remora_calls_total{call=\"MemAlloc\",class=\"round_trip\"}",
            2.0,
        ),
        (
            "remora_errors_total{code=\"CUDA_ERROR_OUT_OF_MEMORY\"}",
            1.0,
        ),
        (
            "remora_payload_bytes_total{direction=\"to_client\"}",
            262144.0,
        ),
        ("remora_device_memory_used_bytes{device=\"0\"}", 0.0),
    ] {
        let v = sample(&page, series);
        assert!(v >= at_least, "{series} = {v}, want >= {at_least}\n{page}");
    }
    assert!(sample(&page, "remora_kernel_seconds_total") > 0.0, "{page}");
    assert!(
        page.contains("remora_token_memory_bytes{token=\"alice\"} 0"),
        "{page}"
    );
    assert!(page.ends_with("# EOF\n"), "{page}");
    // Anything but /metrics is not found.
    let mut s = std::net::TcpStream::connect(&op.metrics).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 404"), "{page}");
}

#[test]
fn sigterm_drains_running_sessions_then_ends_the_rest() {
    let mut op = Operated::start(&["--drain-grace", "4s"]);
    let trial = c_program("pool_trial");
    let spawn = |hold_ms: &str| {
        op.server
            .command(&trial)
            .args(["1", hold_ms])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let short = spawn("1500");
    let long = spawn("30000");
    op.wait_metrics("both clients did not connect", |p| {
        sample(p, "remora_sessions_active{token=\"(server)\"}") == 2.0
    });
    let t = Instant::now();
    op.signal("-TERM");
    op.wait_metrics("the server did not start draining", |p| {
        sample(p, "remora_draining") == 1.0
    });
    // New sessions are refused while it drains.
    let (ok, out) = output(op.server.command(&c_program("client_tool")).arg("meminfo"));
    assert!(!ok && out.contains("server shutting down"), "{out}");

    let short = short.wait_with_output().unwrap();
    assert!(short.status.success(), "{}", text(&short));
    assert!(text(&short).contains("trial devices=1"));
    let long = long.wait_with_output().unwrap();
    let said = text(&long);
    assert!(!long.status.success(), "{said}");
    assert!(said.contains("server shutting down"), "{said}");
    assert!(
        t.elapsed() >= Duration::from_secs(3) && t.elapsed() < Duration::from_secs(15),
        "ended after {:?}",
        t.elapsed()
    );
    let status = exit_within(&mut op.server.child, Duration::from_secs(10));
    assert!(status.success(), "exit {status}");
}

#[test]
fn an_idle_server_stops_at_once_on_sigint() {
    let mut op = Operated::start(&["--drain-grace", "30s"]);
    let t = Instant::now();
    op.signal("-INT");
    let status = op.server.child.wait().unwrap();
    assert!(status.success(), "exit {status}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn a_pool_checks_its_own_tokens_file_and_reports_its_members() {
    let member = Server::start();
    let dir = TempDir::new("pool-tokens");
    let tokens = dir.0.join("tokens");
    let metrics = metrics_port();
    let pool = Pool::start(
        &[&member.connection],
        &["--tokens", tokens.to_str().unwrap(), "--metrics", &metrics],
    );
    let gina = add_token(
        &tokens,
        &pool.dir.0,
        "gina",
        &["--memory", "64M", "--sessions", "1"],
    );
    let hugo = add_token(&tokens, &pool.dir.0, "hugo", &["--gpus", "1"]);
    let trial = c_program("pool_trial");
    // Picked up by polling (the pool was not told).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !output(&mut run_as(&hugo, &trial, &["1", "0"])).0 {
        assert!(
            Instant::now() < deadline,
            "the pool did not read its tokens file"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Memory: the session's quota on the member is what gina's limit leaves.
    let (ok, out) = output(&mut run_as(&gina, &trial, &["1", "0", "100"]));
    assert!(ok && out.contains("alloc 100 MiB -> 2"), "{out}");
    // Sessions: one at a time.
    let holder = Holder::start(&gina, 1);
    let (ok, out) = output(&mut run_as(&gina, &trial, &["1", "0"]));
    assert!(
        !ok && out.contains("token `gina` already has 1 session(s) open"),
        "{out}"
    );
    let page = scrape(&metrics);
    assert_eq!(
        sample(&page, "remora_pool_sessions_active{token=\"gina\"}"),
        1.0,
        "{page}"
    );
    // Revoked: the live session ends at its next call, new ones are refused.
    let o = token(&tokens, &pool.dir.0, &["revoke", "gina"]);
    assert!(o.status.success(), "{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(
        &scrape(&metrics),
        "remora_pool_sessions_active{token=\"gina\"}",
    ) != 0.0
    {
        assert!(Instant::now() < deadline, "gina's session was not ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (after, err) = holder.finish();
    assert!(after.contains("after 46"), "{after}{err}");
    assert!(err.contains("token `gina` was revoked"), "{after}{err}");
    let (ok, out) = output(&mut run_as(&gina, &trial, &["1", "0"]));
    assert!(!ok && out.contains("invalid token"), "{out}");

    // GPUs: asking for more than the limit is refused with the reason.
    let (ok, out) = output(run_as(&hugo, &trial, &["1", "0"]).env("REMORA_GPUS", "2"));
    assert!(
        !ok && out.contains("may use at most 1 GPU(s) per session"),
        "{out}"
    );
    let (ok, out) = output(&mut run_as(&hugo, &trial, &["1", "0"]));
    assert!(ok, "{out}");

    let page = scrape(&metrics);
    let up = format!(
        "remora_pool_member_up{{member=\"{}\",state=\"up\"}}",
        std::fs::read_to_string(&member.connection)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("address = "))
            .unwrap()
    );
    assert_eq!(sample(&page, &up), 1.0, "{up}\n{page}");
    for (series, at_least) in [
        ("remora_pool_sessions_opened_total{token=\"gina\"}", 2.0),
        (
            "remora_pool_sessions_refused_total{reason=\"sessions_limit\"}",
            1.0,
        ),
        (
            "remora_pool_sessions_refused_total{reason=\"gpus_limit\"}",
            1.0,
        ),
    ] {
        assert!(sample(&page, series) >= at_least, "{series}\n{page}");
    }
    assert!(page.contains("remora_pool_queue_length 0"), "{page}");
}
