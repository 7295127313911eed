//! The pool's members: how to reach each, what it offers, whether it answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use remora_protocol::client::Buffers;
use remora_protocol::messages::{ReplyBody, Request, ServerInfo, SessionRequest};
use remora_protocol::{ConnError, ConnectionFile};
use remora_transport::client::Link;

use crate::placement::MemberId;
use crate::Pool;

/// How long a member is given to answer a connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts to reach a member that does not answer.
const RETRY: Duration = Duration::from_secs(1);
/// How often a member is asked how much memory its GPUs have in use.
const USAGE_EVERY: Duration = Duration::from_secs(1);
/// How often DNS is asked again for the members' addresses.
const RESOLVE_EVERY: Duration = Duration::from_secs(3);

/// What the pool knows of one member.
#[derive(Clone)]
pub struct Member {
    pub file: ConnectionFile,
    /// What it said when it last answered.
    pub info: Option<ServerInfo>,
    pub state: MemberState,
    /// Why it did not answer, last time it did not.
    pub last_error: Option<String>,
    /// Woken when a session could not reach the member: the watcher checks it again at once.
    pub recheck: Arc<tokio::sync::Notify>,
    /// Device memory in use on each of its GPUs (all sessions), as it last reported.
    pub used: Vec<Option<u64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Not reached yet.
    Connecting,
    Up,
    /// Silent, or refusing: nothing new is placed there until it answers.
    Missing,
    /// No longer listed by DNS.
    Removed,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Connecting => "connecting",
            MemberState::Up => "up",
            MemberState::Missing => "missing",
            MemberState::Removed => "removed",
        }
    }
}

/// Every member, by the id the scheduler knows it by.
#[derive(Default)]
pub struct Members(Mutex<Vec<Member>>);

impl Members {
    pub fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: MemberId) -> Option<Member> {
        self.lock().get(id).cloned()
    }
}

/// Lists a member; its watcher must be started separately.
pub fn add(pool: &Pool, file: ConnectionFile) -> MemberId {
    let mut members = pool.members.lock();
    let id = pool.sched().add_member(file.address.to_string());
    debug_assert_eq!(id, members.len());
    members.push(Member {
        file,
        info: None,
        state: MemberState::Connecting,
        last_error: None,
        recheck: Arc::new(tokio::sync::Notify::new()),
        used: Vec::new(),
    });
    id
}

/// A session could not reach member `id`: nothing more is placed there until its watcher has
/// reached it again.
pub fn suspect(pool: &Pool, id: MemberId, why: &str) {
    let recheck = pool.members.get(id).map(|m| m.recheck.clone());
    set(pool, id, |m| {
        if m.state == MemberState::Up {
            m.state = MemberState::Missing;
        }
        m.last_error = Some(why.to_string());
    });
    pool.sched().member_down(id);
    if let Some(r) = recheck {
        r.notify_one();
    }
}

fn set(pool: &Pool, id: MemberId, f: impl FnOnce(&mut Member)) {
    if let Some(m) = pool.members.lock().get_mut(id) {
        f(m);
    }
}

/// Keeps an observer connection to member `id`: marks it up with its GPUs when it answers,
/// missing when its connection goes silent (QUIC keep-alives: within the idle timeout), and
/// tries again every second. Stops when the member is removed.
pub async fn watch(pool: Arc<Pool>, id: MemberId) {
    let observer = SessionRequest {
        observer: true,
        ..Default::default()
    };
    let mut said: Option<String> = None;
    loop {
        let Some(m) = pool.members.get(id) else {
            return;
        };
        if m.state == MemberState::Removed {
            return;
        }
        let addr = m.file.address;
        match remora_transport::client::connect(&m.file, &observer, CONNECT_TIMEOUT, |_| {}).await {
            Ok(c) => {
                let gpus: Vec<(u32, u64)> = c
                    .info
                    .devices
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (i as u32, d.total_mem))
                    .collect();
                tracing::info!(member = %addr, gpus = gpus.len(), "member up");
                said = None;
                set(&pool, id, |m| {
                    m.info = Some(c.info.clone());
                    m.state = MemberState::Up;
                    m.last_error = None;
                });
                pool.sched().member_up(id, &gpus);
                pool.changed.notify_waiters();
                let recheck = m.recheck.clone();
                let conn = c.conn.clone();
                let link = Link::new(c, Buffers::default());
                let why = tokio::select! {
                    why = conn.closed() => why.to_string(),
                    () = removed(&pool, id) => {
                        conn.close(0u32.into(), b"removed from the pool");
                        return;
                    }
                    () = recheck.notified() => {
                        conn.close(0u32.into(), b"checking again");
                        "a session could not reach it".to_string()
                    }
                    why = report_usage(&pool, id, &link) => why,
                };
                tracing::warn!(member = %addr, "member missing: {why}");
                set(&pool, id, |m| {
                    m.state = MemberState::Missing;
                    m.last_error = Some(why);
                });
                pool.sched().member_down(id);
                pool.changed.notify_waiters();
                continue;
            }
            Err(e) => {
                let e = format!("member {addr}: {e}");
                if said.as_deref() != Some(e.as_str()) {
                    tracing::warn!("{e}; retrying");
                    said = Some(e.clone());
                }
                set(&pool, id, |m| {
                    if m.state != MemberState::Removed {
                        m.state = if m.info.is_some() {
                            MemberState::Missing
                        } else {
                            MemberState::Connecting
                        };
                    }
                    m.last_error = Some(e);
                });
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Asks the member for its report every few seconds and keeps the memory its GPUs have in use;
/// returns why, when it stops answering.
async fn report_usage(pool: &Pool, id: MemberId, link: &Link<Buffers>) -> String {
    loop {
        let reply = match link.call(&Request::Status, &[], None).await {
            Ok(r) => r,
            Err(ConnError::Lost(why)) => return why,
        };
        if let ReplyBody::Status { json } = reply.body {
            let used: Vec<Option<u64>> = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| {
                    v["devices"]
                        .as_array()
                        .map(|d| d.iter().map(|g| g["used_mem"].as_u64()).collect())
                })
                .unwrap_or_default();
            set(pool, id, |m| m.used = used);
        }
        tokio::time::sleep(USAGE_EVERY).await;
    }
}

/// Resolves once member `id` is removed.
async fn removed(pool: &Pool, id: MemberId) {
    while pool.members.get(id).map(|m| m.state) != Some(MemberState::Removed) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Finds members by DNS: every address `host` resolves to is a member (at `port`, with the
/// certificate and token of `creds`); asked again every few seconds, so members that appear
/// are added and members that disappear are removed.
pub async fn discover(pool: Arc<Pool>, host: String, port: u16, creds: ConnectionFile) {
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                let found: Vec<SocketAddr> = addrs.collect();
                reconcile(&pool, &found, &creds);
            }
            Err(e) => tracing::warn!("cannot resolve {host}: {e}"),
        }
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}

fn reconcile(pool: &Arc<Pool>, found: &[SocketAddr], creds: &ConnectionFile) {
    let listed: Vec<(SocketAddr, MemberState)> = pool
        .members
        .lock()
        .iter()
        .map(|m| (m.file.address, m.state))
        .collect();
    for (id, (addr, state)) in listed.iter().enumerate() {
        let present = found.contains(addr);
        if !present && *state != MemberState::Removed {
            tracing::info!(member = %addr, "member no longer in DNS: removed");
            set(pool, id, |m| m.state = MemberState::Removed);
            pool.sched().member_down(id);
            pool.changed.notify_waiters();
        } else if present && *state == MemberState::Removed {
            tracing::info!(member = %addr, "member back in DNS");
            set(pool, id, |m| m.state = MemberState::Connecting);
            tokio::spawn(watch(pool.clone(), id));
        }
    }
    for addr in found {
        if !listed.iter().any(|(a, _)| a == addr) {
            tracing::info!(member = %addr, "member found in DNS");
            let file = ConnectionFile {
                address: *addr,
                ..creds.clone()
            };
            let id = add(pool, file);
            tokio::spawn(watch(pool.clone(), id));
        }
    }
}
