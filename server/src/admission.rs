//! Admission: what a client's token lets its session have, decided between the hello and the
//! session's start. A token from the tokens file brings its person's limits (sessions open,
//! GPUs offered, memory); a draining server or a revoked token admits nobody.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use remora_protocol::access::{Account, SessionSlot};
use remora_protocol::handshake::Outcome;
use remora_transport::server::{self, Hello, ServeError};

use crate::backend::LeaseReservation;
use crate::Shared;

/// A client must open its stream and say hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What a session was granted.
pub(crate) struct Admission {
    /// Whose session it is (`None`: the server's own token).
    pub account: Option<Arc<Account>>,
    /// Counts the session against its person's limit while it lives.
    pub slot: Option<SessionSlot>,
    /// The server's first `offered` devices are the session's.
    pub offered: u32,
    pub quota: Option<u64>,
    /// Device memory set aside on each offered device for the session's lease.
    pub lease: LeaseReservation,
}

/// Reads the client's hello and decides what its session gets, or refuses it with the
/// reason (the client reads it).
pub(crate) async fn admit(
    conn: &quinn::Connection,
    shared: &Shared,
) -> Result<(Hello, Admission), ServeError> {
    let (tokens, owners) = shared.access.tokens();
    let mut hello = match server::hello(conn, tokens, HELLO_TIMEOUT).await {
        Ok(h) => h,
        Err(e) => {
            if matches!(&e, ServeError::Refused(_)) {
                shared.metrics.refused("bad_token_or_version");
            }
            return Err(e);
        }
    };
    let account = owners.get(hello.token).cloned().flatten();
    if shared.draining.load(Ordering::SeqCst) {
        shared.metrics.refused("draining");
        return Err(hello
            .refuse(
                Outcome::Refused,
                "server shutting down: it takes no new sessions; try again when it is back",
            )
            .await);
    }
    // A token revoked between the snapshot above and now is refused like an unknown one.
    if account.as_ref().is_some_and(|a| a.revoked()) {
        shared.metrics.refused("bad_token_or_version");
        return Err(hello
            .refuse(Outcome::BadToken, "invalid token: it was revoked")
            .await);
    }
    if hello.request.virtual_gpu > 1 {
        shared.metrics.refused("virtual_gpu");
        let why = format!(
            "a virtual GPU over {} members needs a pool (`remora pool`); this is a single server",
            hello.request.virtual_gpu
        );
        return Err(hello.refuse(Outcome::NoDevice, &why).await);
    }
    let ndev = shared.info.devices.len() as u32;
    let mut offered = ndev;
    let mut slot = None;
    if let Some(a) = &account {
        let limits = a.limits();
        if let Some(g) = limits.gpus {
            if hello.request.gpus > g {
                shared.metrics.refused("gpus_limit");
                let why = format!(
                    "token `{}` may use at most {g} GPU(s) per session; this session asked for {}",
                    a.name, hello.request.gpus
                );
                return Err(hello.refuse(Outcome::NoDevice, &why).await);
            }
            offered = offered.min(g);
        }
        if !hello.request.observer {
            match a.open_session() {
                Ok(s) => slot = Some(s),
                Err(why) => {
                    shared.metrics.refused("sessions_limit");
                    return Err(hello.refuse(Outcome::Refused, &why).await);
                }
            }
        }
    }
    // A session may ask for a smaller quota than the server's own, never a larger one.
    let quota = match (shared.session_memory, hello.request.memory) {
        (q, 0) => q,
        (Some(q), m) => Some(q.min(m)),
        (None, m) => Some(m),
    };
    // The token's memory limit spans its sessions: one session never gets more than all of it.
    let quota = match (quota, account.as_ref().and_then(|a| a.limits().memory)) {
        (Some(q), Some(t)) => Some(q.min(t)),
        (q, t) => q.or(t),
    };
    // The lease is part of the quota: never more than an even share of it per device.
    let lease = quota.map_or(shared.info.lease, |q| {
        shared.info.lease.min(q / u64::from(offered.max(1)))
    });
    // A person's sessions share their memory limit, so none of them reserves a lease out of
    // it (another of their sessions may need those bytes): their allocations are round trips,
    // and out-of-memory is reported at the call.
    let lease = if account
        .as_ref()
        .is_some_and(|a| a.limits().memory.is_some())
    {
        0
    } else {
        lease
    };
    // Leases together never take more than half of a device, so allocations that are round
    // trips always find room; each new lease is at most a quarter of what is left of that
    // half, so sessions arriving at once all get some. It is set aside now: what the hello
    // promises is certain however many sessions arrive together.
    let leasable = (0..offered as usize)
        .map(|d| {
            let total = shared.info.devices[d].total_mem;
            let used = shared.backend.memory_used(d as u32).unwrap_or(total);
            (total - total / 2).saturating_sub(used)
        })
        .min()
        .unwrap_or(0);
    let lease = shared
        .backend
        .reserve_lease(offered, lease.min(leasable / 4));
    Ok((
        hello,
        Admission {
            account,
            slot,
            offered,
            quota,
            lease,
        },
    ))
}
