//! Forwarding one session's calls to the member it was placed on, in order, with device
//! numbers translated; and the ends of a forwarded session (revoked token, drained pool).

use std::time::Duration;

use remora_protocol::access::Account;
use remora_protocol::client::{Buffers, INLINE_PAYLOAD};
use remora_protocol::messages::{Reply, Request, Window};
use remora_protocol::{ConnError, CuStatus, ServerEvent, Ticket};
use remora_transport::client::Link;
use remora_transport::server::{Calls, ServeError};

use crate::placement::Placement;
use crate::Pool;

/// A device number no member has: requests naming a device the session was not given carry it,
/// so the member refuses them in order, as it refuses any bad device.
const NO_SUCH_DEVICE: u32 = u32::MAX;

/// Resolves with the reason once the pool ends its sessions (the end of a drain).
async fn ended(pool: &Pool) -> String {
    let mut rx = pool.ending.subscribe();
    loop {
        if let Some(why) = rx.borrow_and_update().clone() {
            return why;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
/// Resolves once `account` is revoked (never for the pool's own token).
async fn revoked(account: Option<&Account>) {
    match account {
        Some(a) => {
            while !a.revoked() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        None => std::future::pending().await,
    }
}
/// Resolves with the reason a running session must end: its token was revoked, or the pool
/// ended its sessions (the end of a drain).
pub(crate) async fn stopped(account: Option<&Account>, pool: &Pool) -> ServeError {
    tokio::select! {
        () = revoked(account) => {
            let name = account.map_or("", |a| a.name.as_str());
            ServeError::Refused(format!("token `{name}` was revoked by the pool's operator"))
        }
        why = ended(pool) => ServeError::Refused(why),
    }
}

/// Which side of a forwarded session failed.
pub(crate) enum Forward {
    Client(ServeError),
    Member(ConnError),
}

impl From<ServeError> for Forward {
    fn from(e: ServeError) -> Self {
        Forward::Client(e)
    }
}

impl From<ConnError> for Forward {
    fn from(e: ConnError) -> Self {
        Forward::Member(e)
    }
}

/// Forwards the client's calls to the member in order: calls that want no reply are queued on
/// the link (batched, as the shim batches them), calls that want one are a round trip to the
/// member whose reply (and data) goes back to the client.
pub(crate) async fn forward(
    mut calls: Calls,
    link: &Link<Buffers>,
    placement: &Placement,
    member_devices: u32,
    account: Option<&Account>,
    pool: &Pool,
) -> Result<(), Forward> {
    let mut next_read = 0u64;
    let mut payload = Vec::new();
    loop {
        let next = tokio::select! {
            ev = calls.next() => ev?,
            e = stopped(account, pool) => return Err(e.into()),
        };
        let Some(ev) = next else { break };
        let ServerEvent::Call {
            mut req,
            wants_reply,
            payload_len,
        } = ev
        else {
            return Err(ServeError::Refused("payload without a call".into()).into());
        };
        translate(&mut req, placement, member_devices);
        if payload_len > INLINE_PAYLOAD as u64 {
            if let Some(ticket) = relay(&mut calls, link, &req, payload_len, wants_reply).await? {
                let reply = answer(&mut calls, link.wait(ticket).await).await?;
                calls.reply(&reply, 0);
                calls.flush().await?;
            }
            continue;
        }
        collect(&mut calls, payload_len, &mut payload).await?;
        if !wants_reply {
            link.post_large(&req, &payload).await?;
            continue;
        }
        let read = match req {
            Request::MemcpyDtoH { size, .. } => {
                next_read += 1;
                Some((next_read, size))
            }
            _ => None,
        };
        let reply = answer(&mut calls, link.call(&req, &payload, read).await).await?;
        let data = read
            .and_then(|(id, _)| link.with_sink(|b| b.0.remove(&id)))
            .unwrap_or_default();
        let n = match read {
            Some((_, size)) if data.len() as u64 == size => data.len(),
            _ => 0,
        };
        calls.reply(&reply, n as u64);
        calls.reply_data().extend_from_slice(&data[..n]);
        calls.flush().await?;
    }
    Ok(())
}

/// Relays a large payload to `link` piece by piece as it arrives, never holding it whole;
/// the ticket to wait for when the call wants a reply.
pub(crate) async fn relay(
    calls: &mut Calls,
    link: &Link<Buffers>,
    req: &Request,
    payload_len: u64,
    wants_reply: bool,
) -> Result<Option<Ticket>, Forward> {
    let mut w = link.begin_payload(req, payload_len, wants_reply).await?;
    let mut got = 0u64;
    while got < payload_len {
        match calls.next().await? {
            Some(ServerEvent::Payload { chunk, .. }) => {
                got += chunk.len() as u64;
                w.write(&chunk).await?;
            }
            _ => return Err(ServeError::Truncated.into()),
        }
    }
    Ok(w.finish()?)
}

/// Reads a call's payload of `len` bytes into `out` (emptied first).
pub(crate) async fn collect(calls: &mut Calls, len: u64, out: &mut Vec<u8>) -> Result<(), Forward> {
    out.clear();
    while (out.len() as u64) < len {
        match calls.next().await? {
            Some(ServerEvent::Payload { chunk, .. }) => out.extend_from_slice(&chunk),
            _ => return Err(ServeError::Truncated.into()),
        }
    }
    Ok(())
}

/// The member's reply to a call the client waits for; when the member is lost, the client is
/// told why before the session ends.
async fn answer(calls: &mut Calls, r: Result<Reply, ConnError>) -> Result<Reply, Forward> {
    match r {
        Ok(r) => Ok(r),
        Err(ConnError::Lost(why)) => {
            let r = Reply::error(
                CuStatus::DEVICE_UNAVAILABLE,
                format!("the pool lost the member holding this session's GPU: {why}"),
            );
            calls.reply(&r, 0);
            let _ = calls.flush().await;
            Err(ConnError::Lost(why).into())
        }
    }
}

/// Renumbers devices from the client's view (0..N-1) to the member's. A device the session was
/// not given becomes one no member has, so the member refuses it. The member wants an address
/// window for each of its devices: those the session was not given get windows of their own,
/// away from the client's, that nothing will ever use.
pub(crate) fn translate(req: &mut Request, placement: &Placement, member_devices: u32) {
    let map = |d: u32| {
        placement
            .gpus
            .get(d as usize)
            .copied()
            .unwrap_or(NO_SUCH_DEVICE)
    };
    match req {
        Request::CtxCreate { device, .. } | Request::MemGetInfo { device } => {
            *device = map(*device)
        }
        Request::SetWindows { windows } => {
            let mut out: Vec<Window> = windows
                .iter()
                .map(|w| Window {
                    device: map(w.device),
                    ..*w
                })
                .collect();
            let mut base = 1u64 << 44;
            for d in (0..member_devices).filter(|d| !placement.gpus.contains(d)) {
                while out
                    .iter()
                    .any(|w| base < w.base.saturating_add(w.size) && w.base < base + (1 << 30))
                {
                    base += 1 << 40;
                }
                out.push(Window {
                    device: d,
                    base,
                    size: 1 << 30,
                });
                base += 1 << 40;
            }
            *windows = out;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use remora_protocol::messages::CtxId;

    use super::*;

    #[test]
    fn devices_are_renumbered_and_others_refused() {
        let p = Placement {
            member: 0,
            gpus: vec![2, 0],
            memory_per_gpu: 0,
            also: Vec::new(),
        };
        let mut r = Request::CtxCreate {
            ctx: CtxId(1),
            device: 0,
            flags: 0,
        };
        translate(&mut r, &p, 3);
        assert!(matches!(r, Request::CtxCreate { device: 2, .. }));
        let mut r = Request::MemGetInfo { device: 2 };
        translate(&mut r, &p, 3);
        assert_eq!(
            r,
            Request::MemGetInfo {
                device: NO_SUCH_DEVICE
            }
        );
    }

    #[test]
    fn every_member_device_gets_a_window_and_none_overlap() {
        let p = Placement {
            member: 0,
            gpus: vec![1],
            memory_per_gpu: 0,
            also: Vec::new(),
        };
        // The client's window sits exactly where the first spare one would go.
        let mut r = Request::SetWindows {
            windows: vec![Window {
                device: 0,
                base: 1 << 44,
                size: 1 << 40,
            }],
        };
        translate(&mut r, &p, 3);
        let Request::SetWindows { windows } = r else {
            unreachable!()
        };
        let mut devices: Vec<u32> = windows.iter().map(|w| w.device).collect();
        devices.sort();
        assert_eq!(devices, [0, 1, 2]);
        assert_eq!(windows[0].device, 1, "the client's window is for its GPU");
        for (i, a) in windows.iter().enumerate() {
            for b in &windows[i + 1..] {
                assert!(
                    a.base + a.size <= b.base || b.base + b.size <= a.base,
                    "{a:?} {b:?}"
                );
            }
        }
    }
}
