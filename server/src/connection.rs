//! One client connection: admission (`admission.rs`: the hello and what its token allows),
//! the address windows, then every call in order until the client leaves or the session is
//! ended (token revoked, server draining).
//!
//! Bytes become typed calls at the edge (`remora_transport::server::Calls`, over the protocol's
//! `ServerConn`); [`Session::handle`] is the one dispatch; what is left here is moving bulk
//! bytes between the stream and device memory, chunk by chunk, and replying.

use std::sync::Arc;

use remora_protocol::messages::{Reply, ReplyBody, Request, ServerInfo, Window};
use remora_protocol::{CuStatus, ServerEvent};
use remora_transport::server::{Calls, ServeError, CHUNK};

use crate::admission::{admit, Admission};
use crate::backend::{CuError, CuResult};
use crate::session::{Session, Step};
use crate::upload::{self, Upload};
use crate::{lock_sessions, Shared};

pub(crate) async fn serve(conn: quinn::Connection, shared: Arc<Shared>) {
    let remote = conn.remote_address();
    tracing::info!(%remote, "client connected");
    match run(&conn, &shared).await {
        Ok(()) => tracing::info!(%remote, "client disconnected"),
        Err(e) => {
            tracing::info!(%remote, "session ended: {e}");
            conn.close(1u32.into(), e.to_string().as_bytes());
        }
    }
}

/// What a call with a payload does with its bytes.
enum Inbound {
    /// Device data, written at `dst + offset` while `result` is good.
    Copy {
        dst: u64,
        offset: u64,
        result: CuResult<()>,
    },
    /// A module image being gathered and checked as it arrives.
    Image(Upload),
    /// Consumed and dropped: the call already failed with `result`.
    Discard { result: CuResult<ReplyBody> },
}

async fn run(conn: &quinn::Connection, shared: &Shared) -> Result<(), ServeError> {
    let (hello, admitted) = admit(conn, shared).await?;
    let Admission {
        account,
        slot,
        offered,
        quota,
        lease,
    } = admitted;
    let ndev = shared.info.devices.len() as u32;
    let info = ServerInfo {
        lease: lease.bytes,
        devices: shared.info.devices[..offered as usize].to_vec(),
        ..shared.info.clone()
    };
    let mut calls = hello.accept(&info).await?;

    // First call: the client's address windows, which the backend's session is placed in
    // (`remora status` asks for the report first, and may stop there).
    // The client may post its windows without waiting (saving a round trip at start-up): then
    // only a failure is answered, by closing the connection with the reason.
    let (windows, wants_reply) = loop {
        match calls.next().await? {
            Some(ServerEvent::Call {
                req: Request::Status,
                ..
            }) => {
                calls.reply(
                    &Reply::ok(ReplyBody::Status {
                        json: status(shared),
                    }),
                    0,
                );
                calls.flush().await?;
                continue;
            }
            Some(ServerEvent::Call {
                req: Request::SetWindows { windows },
                wants_reply,
                ..
            }) => break (windows, wants_reply),
            Some(ServerEvent::Call { req, .. }) => {
                return Err(ServeError::Refused(format!(
                    "expected SetWindows first, got {}",
                    req.name()
                )))
            }
            _ => return Ok(()),
        }
    };
    let opened = check_windows(&windows, offered as usize)
        .and_then(|()| shared.backend.open(&spare_windows(windows, offered, ndev)))
        .and_then(|b| {
            let mut s = Session::new(b, offered, quota).with_account(account.clone());
            s.grant_lease(lease.bytes)?;
            lease.taken();
            Ok(s)
        });
    let registered;
    let end = Arc::new(crate::Ending::default());
    let mut session = match opened {
        Ok(b) => {
            if wants_reply {
                calls.reply(&Reply::ok(ReplyBody::None), 0);
            }
            let n = shared
                .next_session
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            lock_sessions(shared).insert(
                n,
                crate::SessionEntry {
                    remote: conn.remote_address(),
                    since: std::time::Instant::now(),
                    quota,
                    account: account.clone(),
                    end: end.clone(),
                },
            );
            registered = Registered(shared, n);
            shared.metrics.session_opened(
                account
                    .as_ref()
                    .map_or(crate::metrics::OWN_TOKEN, |a| a.name.as_str()),
            );
            // A revocation or a drain that came while the session opened still ends it.
            if account.as_ref().is_some_and(|a| a.revoked()) {
                end.end("token was revoked by the server's operator".into());
            }
            b
        }
        Err(e) => {
            if wants_reply {
                calls.reply(&Reply::error(e.status, e.message.clone()), 0);
            }
            calls.finish().await;
            return Err(ServeError::Refused(e.message));
        }
    };

    loop {
        let next = tokio::select! {
            ev = calls.next() => ev?,
            why = end.wait() => {
                tracing::info!(remote = %conn.remote_address(), "ending the session: {why}");
                conn.close(ENDED.into(), why.as_bytes());
                break;
            }
        };
        let Some(ev) = next else { break };
        let ServerEvent::Call {
            req,
            wants_reply,
            payload_len,
        } = ev
        else {
            return Err(ServeError::Refused("payload without a call".into()));
        };
        let name = req.name();
        shared.metrics.call(name, wants_reply);
        // A posted module load's reply carries its own outcome only, and its failure is
        // remembered for the module's launches (`Request::ModuleLoad::kernels`).
        let posted = match &req {
            Request::ModuleLoad {
                ctx,
                module,
                kernels: Some(_),
                ..
            } => Some((*ctx, *module)),
            _ => None,
        };
        // Kernels run for as long as they run, and parsing a large image is CPU work: keep the
        // QUIC driver (keep-alives, other clients) off this thread meanwhile.
        let step = if matches!(req, Request::Launch { .. }) {
            let t = std::time::Instant::now();
            let step = tokio::task::block_in_place(|| session.handle(req));
            shared.metrics.launches.inc();
            shared
                .metrics
                .kernel_seconds
                .inc_by(t.elapsed().as_secs_f64());
            step
        } else {
            session.handle(req)
        };
        let result = match step {
            Step::Reply(r) => r,
            Step::Status => Ok(ReplyBody::Status {
                json: status(shared),
            }),
            Step::HaveImage { hash } => Ok(ReplyBody::Have {
                present: upload::lock(shared).contains_key(&hash),
            }),
            Step::Send { src, size, check } => {
                if wants_reply {
                    let sent = send(&mut session, &mut calls, src, size, check).await?;
                    shared.metrics.payload(false, sent);
                    continue;
                }
                Err(CuError::new(
                    CuStatus::INVALID_VALUE,
                    "device-to-host copy without a reply",
                ))
            }
            Step::Receive { ctx, stream, dst } => {
                let inbound = match session.begin_write(ctx, stream, dst, payload_len) {
                    Ok(()) => Inbound::Copy {
                        dst,
                        offset: 0,
                        result: Ok(()),
                    },
                    Err(e) => Inbound::Discard { result: Err(e) },
                };
                receive(&mut session, shared, &mut calls, inbound, payload_len).await?
            }
            Step::ReceiveImage {
                ctx,
                module,
                hash,
                kernels,
            } => {
                let inbound = match Upload::begin(ctx, module, hash, kernels, payload_len) {
                    Ok(up) => Inbound::Image(up),
                    Err(e) => Inbound::Discard { result: Err(e) },
                };
                receive(&mut session, shared, &mut calls, inbound, payload_len).await?
            }
        };
        if let Err(e) = &result {
            shared.metrics.error(e.status);
        }
        if let (Some((ctx, module)), Err(e)) = (posted, &result) {
            session.posted_load_failed(ctx, module, e.clone());
        }
        if wants_reply {
            let result = if posted.is_some() {
                result
            } else {
                session.settle(result)
            };
            let r = match result {
                Ok(body) => Reply::ok(body),
                Err(e) => {
                    tracing::debug!(request = name, %e, "request failed");
                    Reply::error(e.status, e.message)
                }
            };
            let r = Reply {
                output: session.take_output(),
                idle: session.idle(),
                ..r
            };
            calls.reply(&r, 0);
            calls.flush().await?;
        } else if let Err(e) = result {
            session.defer(e);
        }
    }
    drop(registered);
    drop(session);
    drop(slot);
    Ok(())
}

/// The QUIC close code of a session the server ended (token revoked, server shutting down);
/// the reason is the sentence the client reads.
const ENDED: u32 = 2;

/// The client's windows, plus windows nothing will use for the server's devices this session
/// was not given (its token's GPU limit): backends want one per device, and the session refuses
/// any device number past what it was offered.
fn spare_windows(mut windows: Vec<Window>, offered: u32, devices: u32) -> Vec<Window> {
    windows.retain(|w| w.device < offered);
    let mut base = 1u64 << 44;
    for d in offered..devices {
        while windows
            .iter()
            .any(|w| base < w.base.saturating_add(w.size) && w.base < base + (1 << 30))
        {
            base += 1 << 40;
        }
        windows.push(Window {
            device: d,
            base,
            size: 1 << 30,
        });
        base += 1 << 40;
    }
    windows
}

/// Keeps a session listed for `remora status` while it lives.
struct Registered<'a>(&'a Shared, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock_sessions(self.0).remove(&self.1);
    }
}

/// The server's report for `remora status`.
fn status(shared: &Shared) -> String {
    let sessions: Vec<serde_json::Value> = lock_sessions(shared)
        .iter()
        .map(|(id, s)| {
            serde_json::json!({
                "id": id,
                "client": s.remote.to_string(),
                "memory_quota": s.quota,
                "token": s.account.as_ref().map(|a| a.name.clone()),
                "age_s": s.since.elapsed().as_secs_f64(),
            })
        })
        .collect();
    let devices: Vec<serde_json::Value> = shared
        .info
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            serde_json::json!({
                "index": i,
                "name": d.name,
                "total_mem": d.total_mem,
                "used_mem": shared.backend.memory_used(i as u32),
                "emulated": d.emulated,
            })
        })
        .collect();
    serde_json::json!({
        "kind": "server",
        "name": shared.info.server_name,
        "backend": shared.backend.kind(),
        "devices": devices,
        "sessions": sessions,
    })
    .to_string()
}

/// Consumes a call's payload (`len` bytes, as chunk events) into its destination; the call's
/// result once the last byte is in.
async fn receive(
    session: &mut Session,
    shared: &Shared,
    calls: &mut Calls,
    mut inbound: Inbound,
    len: u64,
) -> Result<CuResult<ReplyBody>, ServeError> {
    let mut got = 0u64;
    while got < len {
        let Some(ServerEvent::Payload { chunk, last }) = calls.next().await? else {
            return Err(ServeError::Truncated);
        };
        got += chunk.len() as u64;
        shared.metrics.payload(true, chunk.len() as u64);
        match &mut inbound {
            Inbound::Copy {
                dst,
                offset,
                result,
            } => {
                if result.is_ok() {
                    *result = session.write_chunk(*dst + *offset, &chunk);
                }
                *offset += chunk.len() as u64;
            }
            Inbound::Image(up) => {
                if let Err(e) = up.push(&shared.upload_budget, &chunk).await {
                    // Refused part-way: the rest of the payload is read and dropped.
                    inbound = Inbound::Discard { result: Err(e) };
                }
            }
            Inbound::Discard { .. } => {}
        }
        if last {
            break;
        }
    }
    Ok(match inbound {
        Inbound::Copy { result, .. } => result.map(|()| ReplyBody::None),
        Inbound::Discard { result } => result,
        Inbound::Image(mut up) => {
            let (ctx, module, hash, kernels) = (up.ctx, up.module, up.hash, up.kernels.take());
            let image = if len == 0 {
                upload::cached(shared, &hash)
            } else {
                up.finish(shared)
            };
            match image {
                Ok(img) => tokio::task::block_in_place(|| {
                    session.load_module(ctx, module, hash, img, kernels.as_deref())
                }),
                Err(e) => Err(e),
            }
        }
    })
}

/// Replies to a device-to-host copy: the reply, then the data, streamed from device memory in
/// chunks. A copy that failed its checks is an error reply without data. Returns the bytes sent.
async fn send(
    session: &mut Session,
    calls: &mut Calls,
    src: u64,
    size: u64,
    check: CuResult<()>,
) -> Result<u64, ServeError> {
    let (reply, len) = match session.settle(check) {
        Ok(()) => (Reply::ok(ReplyBody::Data), size),
        Err(e) => (Reply::error(e.status, e.message), 0),
    };
    let reply = Reply {
        output: session.take_output(),
        idle: session.idle(),
        ..reply
    };
    calls.reply(&reply, len);
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        let buf = calls.reply_data();
        let start = buf.len();
        buf.resize(start + n, 0);
        // Checked above; a backend fault here is reported by the next call.
        if let Err(e) = session.read_chunk(src + off, &mut buf[start..]) {
            session.defer(e);
        }
        calls.flush_if_full().await?;
        off += n as u64;
    }
    calls.flush().await?;
    Ok(len)
}

fn check_windows(windows: &[Window], devices: usize) -> CuResult<()> {
    for (i, w) in windows.iter().enumerate() {
        if w.base == 0 || w.base.checked_add(w.size).is_none() || w.size < (1 << 30) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("address window {i} is unusable"),
            ));
        }
        for o in &windows[i + 1..] {
            if w.device == o.device || (w.base < o.base + o.size && o.base < w.base + w.size) {
                return Err(CuError::new(
                    CuStatus::INVALID_VALUE,
                    "address windows overlap",
                ));
            }
        }
    }
    if windows.len() < devices {
        return Err(CuError::new(
            CuStatus::INVALID_VALUE,
            format!("{} windows for {devices} devices", windows.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_offered_fewer_gpus_gets_spare_windows_away_from_its_own() {
        let client = vec![
            Window {
                device: 0,
                base: 1 << 44,
                size: 1 << 40,
            },
            // A window for a device the session was not offered is not the client's to name.
            Window {
                device: 2,
                base: 1 << 43,
                size: 1 << 30,
            },
        ];
        let w = spare_windows(client, 1, 3);
        assert_eq!(
            w.iter().map(|w| w.device).collect::<Vec<_>>(),
            [0, 1, 2],
            "{w:?}"
        );
        assert_eq!(
            w[0].base,
            1 << 44,
            "the client's own window is kept as it is"
        );
        check_windows(&w, 3).expect("one window per device, none overlapping");
        assert_eq!(spare_windows(w.clone(), 3, 3), w, "nothing to add");
    }
}
