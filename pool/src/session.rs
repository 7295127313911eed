//! One client of the pool: its hello, its place in the queue, then its calls forwarded to the
//! member it was placed on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use remora_protocol::access::Account;
use remora_protocol::client::Buffers;
use remora_protocol::handshake::Outcome;
use remora_protocol::messages::{Reply, ReplyBody, Request, ServerInfo, SessionRequest};
use remora_protocol::{ConnError, CuStatus, ServerEvent};
use remora_transport::client::Link;
use remora_transport::server::{self, Hello, ServeError};

use crate::forward::{forward, Forward};
use crate::placement::{Placement, SessionId, State, Want};
use crate::Pool;

/// A client must say hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a member is given to open a session's link.
const LINK_TIMEOUT: Duration = Duration::from_secs(3);
/// Members a session is offered before the pool gives up on it.
const MAX_ATTEMPTS: u32 = 3;

/// Counts a connection among the pool's active ones while it lives (a drain waits for them).
struct Active<'a>(&'a Pool);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

const DRAINING: &str = "pool shutting down: it takes no new sessions; try again when it is back";

pub(crate) async fn serve(conn: quinn::Connection, pool: Arc<Pool>) {
    pool.active
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _active = Active(&pool);
    let remote = conn.remote_address();
    match run(&conn, &pool).await {
        Ok(()) => tracing::info!(%remote, "client done"),
        Err(e) => {
            tracing::info!(%remote, "session ended: {e}");
            conn.close(1u32.into(), e.to_string().as_bytes());
        }
    }
}

/// Memory reserved out of a person's limit for one session, given back when it ends.
struct Reserved(Arc<Account>, u64);

impl Drop for Reserved {
    fn drop(&mut self) {
        self.0.release_memory(self.1);
    }
}

/// Gives the session's GPUs (or its place in the queue) back when it ends, however it ends.
struct Release<'a>(&'a Pool, SessionId);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.sched().release(self.1);
        self.0.changed.notify_waiters();
    }
}

async fn run(conn: &quinn::Connection, pool: &Pool) -> Result<(), ServeError> {
    let (tokens, owners) = pool.access.tokens();
    let mut hello = match server::hello(conn, tokens, HELLO_TIMEOUT).await {
        Ok(h) => h,
        Err(e) => {
            if matches!(&e, ServeError::Refused(_)) {
                pool.metrics.refused("bad_token_or_version");
            }
            return Err(e);
        }
    };
    let account = owners.get(hello.token).cloned().flatten();
    let request = hello.request.clone();
    if request.observer {
        return observe(hello, pool).await;
    }
    if pool.draining.load(std::sync::atomic::Ordering::SeqCst) {
        pool.metrics.refused("draining");
        return Err(hello.refuse(Outcome::Refused, DRAINING).await);
    }
    let mut memory = request.memory;
    let mut _slot = None;
    let mut _reserved = None;
    if let Some(a) = &account {
        let limits = a.limits();
        if let Some(g) = limits.gpus.filter(|&g| request.gpus.max(1) > g) {
            pool.metrics.refused("gpus_limit");
            let why = format!(
                "token `{}` may use at most {g} GPU(s) per session; this session asked for {}",
                a.name, request.gpus
            );
            return Err(hello.refuse(Outcome::NoDevice, &why).await);
        }
        match a.open_session() {
            Ok(s) => _slot = Some(s),
            Err(why) => {
                pool.metrics.refused("sessions_limit");
                return Err(hello.refuse(Outcome::Refused, &why).await);
            }
        }
        // The person's memory limit is shared by their sessions: this one reserves what it
        // asked for (all that is left when it did not say), and the member enforces that as
        // its quota.
        if let Some(limit) = limits.memory {
            let left = limit.saturating_sub(a.memory());
            memory = if memory == 0 { left } else { memory.min(left) };
            if memory == 0 || a.reserve_memory(memory).is_err() {
                pool.metrics.refused("memory_limit");
                let why = format!(
                    "token `{}` has all of its device memory limit held by its other sessions",
                    a.name
                );
                return Err(hello.refuse(Outcome::Refused, &why).await);
            }
            _reserved = Some(Reserved(a.clone(), memory));
        }
    }
    let _active = pool.metrics.session(
        account
            .as_ref()
            .map_or(crate::metrics::OWN_TOKEN, |a| a.name.as_str()),
    );
    let virtual_gpu = request.virtual_gpu.max(1);
    let want = Want {
        gpus: if virtual_gpu > 1 {
            1
        } else {
            request.gpus.max(1)
        },
        memory,
        members: virtual_gpu,
    };
    let asked = pool.sched().request(want);
    let id = match asked {
        Ok(id) => id,
        Err(why) => return Err(hello.refuse(Outcome::NoDevice, &why).await),
    };
    let _release = Release(pool, id);
    // A member that does not take the session (it died a moment ago) is suspected, and the
    // session waits first in line for another.
    let mut attempts = 0;
    let (placement, links) = loop {
        let placement = match wait_for_gpus(&mut hello, pool, id, &request).await? {
            Some(p) => p,
            None => return Ok(()),
        };
        match connect_members(pool, &placement, memory).await {
            Ok(links) => break (placement, links),
            Err((member, why)) => {
                tracing::warn!("{why}");
                attempts += 1;
                if attempts == MAX_ATTEMPTS {
                    return Err(hello.refuse(Outcome::Refused, &why).await);
                }
                crate::members::suspect(pool, member, &why);
                pool.sched().requeue(id);
                pool.changed.notify_waiters();
            }
        }
    };
    if virtual_gpu > 1 {
        let members: Vec<crate::vgpu::Member> = links
            .into_iter()
            .map(|(p, l)| crate::vgpu::Member {
                devices: l.info.devices.len() as u32,
                placement: p,
                link: l,
            })
            .collect();
        let info = crate::vgpu::info(&pool.name, &members);
        tracing::info!(members = members.len(), "virtual GPU placed");
        let calls = hello.accept(&info).await?;
        let stats = pool.vgpu_stats(id);
        let mut vgpu =
            crate::vgpu::Vgpu::new(members, stats, pool.split, pool.metrics.vgpu.clone());
        let stop = Box::pin(crate::forward::stopped(account.as_deref(), pool));
        let r = crate::vgpu::serve(calls, &mut vgpu, stop).await;
        vgpu.close("session over");
        if let Some(stats) = pool.vgpus().remove(&id) {
            let stats = stats.lock().unwrap_or_else(|e| e.into_inner());
            tracing::info!("virtual GPU session over: {}", stats.json());
        }
        return r.map_err(|e| match e {
            Forward::Client(e) => e,
            Forward::Member(ConnError::Lost(why)) => {
                ServeError::Refused(format!("the pool lost a member of the virtual GPU: {why}"))
            }
        });
    }
    let Some((_, link)) = links.into_iter().next() else {
        return Err(ServeError::Refused("no member placed".into()));
    };
    let addr = link.address;
    let member_devices = link.info.devices.len() as u32;
    let info = ServerInfo {
        driver_version: link.info.driver_version,
        server_name: format!("{} (pool) on {}", pool.name, link.info.server_name),
        devices: placement
            .gpus
            .iter()
            .filter_map(|&g| link.info.devices.get(g as usize).cloned())
            .collect(),
        // The member granted it; the client's own allocations pass through unchanged (the
        // addresses are the same on both sides).
        lease: link.info.lease,
    };
    tracing::info!(member = %addr, gpus = ?placement.gpus, "session placed");
    let calls = hello.accept(&info).await?;
    let r = forward(
        calls,
        &link,
        &placement,
        member_devices,
        account.as_deref(),
        pool,
    )
    .await;
    link.close("session over");
    r.map_err(|e| match e {
        Forward::Client(e) => e,
        Forward::Member(ConnError::Lost(why)) => {
            ServeError::Refused(format!("the pool lost member {addr}: {why}"))
        }
    })
}

/// Opens the session's link to each member of its placement (one for an ordinary session, one
/// per member for a virtual GPU), each as a placement of its own GPUs there. A member that
/// does not answer is named with the reason.
async fn connect_members(
    pool: &Pool,
    placement: &Placement,
    memory: u64,
) -> Result<Vec<(Placement, Link<Buffers>)>, (usize, String)> {
    let to_member = SessionRequest {
        gpus: 0,
        memory,
        queue_timeout_ms: 0,
        observer: false,
        virtual_gpu: 0,
    };
    let to_member = &to_member;
    let mut parts = vec![Placement {
        also: Vec::new(),
        ..placement.clone()
    }];
    parts.extend(placement.also.iter().map(|&(member, g)| Placement {
        member,
        gpus: vec![g],
        memory_per_gpu: placement.memory_per_gpu,
        also: Vec::new(),
    }));
    // Every member at once: a virtual GPU's start costs one member's set-up, not M of them.
    let tries = parts.into_iter().map(|p| async move {
        let Some(member) = pool.members.get(p.member) else {
            return Err((p.member, "member vanished".to_string()));
        };
        let addr = member.file.address;
        match remora_transport::client::connect(&member.file, to_member, LINK_TIMEOUT, |_| {}).await
        {
            Ok(c) => Ok((p, Link::new(c, Buffers::default()))),
            Err(e) => {
                let why = format!("the pool's member {addr} did not take the session: {e}");
                Err((p.member, why))
            }
        }
    });
    let mut links = Vec::new();
    let mut failed = None;
    for r in futures_util::future::join_all(tries).await {
        match r {
            Ok(l) => links.push(l),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        for (_, l) in &links {
            l.close("the session went elsewhere");
        }
        return Err(e);
    }
    Ok(links)
}

/// Waits in the queue, telling the client its place whenever it changes. `None` when the
/// client went away while waiting.
async fn wait_for_gpus(
    hello: &mut Hello,
    pool: &Pool,
    id: SessionId,
    request: &SessionRequest,
) -> Result<Option<Placement>, ServeError> {
    let timeout = match request.queue_timeout_ms {
        0 => pool.queue_timeout,
        ms => Duration::from_millis(ms),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut told = 0;
    loop {
        let changed = pool.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if pool.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(hello.refuse(Outcome::Refused, DRAINING).await);
        }
        let state = pool.sched().state(id);
        match state {
            Some(State::Placed(p)) => return Ok(Some(p)),
            Some(State::Queued { place }) if place != told => {
                hello.queued(place).await?;
                told = place;
            }
            Some(State::Queued { .. }) => {}
            None => return Ok(None),
        }
        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep_until(deadline) => {
                let why = format!(
                    "no GPU of the pool became free within {} s (REMORA_QUEUE_TIMEOUT)",
                    timeout.as_secs_f64()
                );
                return Err(hello.refuse(Outcome::NoDevice, &why).await);
            }
            () = hello.gone() => return Ok(None),
        }
    }
}

/// An observer (`remora status`, `remora devices`, `remora run`'s probe): sees every member's
/// GPUs and may ask for the pool's report; takes nothing.
async fn observe(hello: Hello, pool: &Pool) -> Result<(), ServeError> {
    let members = pool.members.lock().clone();
    let mut info = ServerInfo {
        driver_version: 0,
        server_name: format!("{} (pool)", pool.name),
        devices: Vec::new(),
        lease: 0,
    };
    for m in members.iter().filter_map(|m| m.info.as_ref()) {
        info.driver_version = info.driver_version.max(m.driver_version);
        info.devices.extend(m.devices.iter().cloned());
    }
    let mut calls = hello.accept(&info).await?;
    while let Some(ev) = calls.next().await? {
        let ServerEvent::Call {
            req, wants_reply, ..
        } = ev
        else {
            continue;
        };
        let reply = match req {
            Request::Status => Reply::ok(ReplyBody::Status { json: status(pool) }),
            other => Reply::error(
                CuStatus::NOT_PERMITTED,
                format!("{} from an observer: ask for a GPU first", other.name()),
            ),
        };
        if wants_reply {
            calls.reply(&reply, 0);
            calls.flush().await?;
        }
    }
    Ok(())
}

/// The pool's report for `remora status`.
pub fn status(pool: &Pool) -> String {
    let members = pool.members.lock().clone();
    let sched = pool.sched();
    let mut placed: HashMap<usize, Vec<serde_json::Value>> = HashMap::new();
    let sessions: Vec<serde_json::Value> = sched
        .sessions()
        .map(|(id, p, memory, age)| {
            placed
                .entry(p.member)
                .or_default()
                .push(serde_json::json!(id.0));
            let vgpu = pool
                .vgpus()
                .get(&id)
                .map(|v| v.lock().unwrap_or_else(|e| e.into_inner()).json());
            serde_json::json!({
                "id": id.0,
                "virtual_gpu": vgpu,
                "member": members.get(p.member).map(|m| m.file.address.to_string()),
                "gpus": p.gpus,
                "memory": memory,
                "age_s": age.as_secs_f64(),
            })
        })
        .collect();
    let member_list: Vec<serde_json::Value> = members
        .iter()
        .zip(sched.members())
        .map(|(m, s)| {
            let gpus: Vec<serde_json::Value> = s
                .gpus
                .iter()
                .map(|g| {
                    let name = m
                        .info
                        .as_ref()
                        .and_then(|i| i.devices.get(g.index as usize))
                        .map(|d| d.name.clone());
                    serde_json::json!({
                        "index": g.index,
                        "name": name,
                        "total_mem": g.total_mem,
                        "used_mem": m.used.get(g.index as usize).copied().flatten(),
                        "reserved": g.reserved,
                        "sessions": g.sessions,
                    })
                })
                .collect();
            serde_json::json!({
                "address": m.file.address.to_string(),
                "state": m.state.as_str(),
                "gpus": gpus,
                "last_error": m.last_error,
            })
        })
        .collect();
    let (length, oldest) = sched.queue();
    serde_json::json!({
        "kind": "pool",
        "name": pool.name,
        "members": member_list,
        "sessions": sessions,
        "queue": { "length": length, "oldest_wait_s": oldest.map(|d| d.as_secs_f64()) },
    })
    .to_string()
}
