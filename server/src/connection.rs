//! One client connection: handshake, then requests read and executed in order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use remora_protocol::frame::{self, FramePrefix, PREFIX_LEN};
use remora_protocol::handshake::{self, Outcome};
use remora_protocol::messages::{decode, encode, Reply, ReplyBody, Request, Window};
use remora_protocol::{CuStatus, PROTOCOL_VERSION};
use sha2::Digest;

use crate::backend::{CuError, CuResult};
use crate::session::Session;
use crate::Shared;

/// Bulk copies move in chunks of this size, straight between the stream and device memory.
const CHUNK: usize = 1 << 20;
/// A client must open its stream and say hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest module image accepted.
const MAX_IMAGE: u64 = 1 << 30;
/// Bytes of module images the server keeps by hash (shared by all clients).
const MAX_CACHED_BYTES: usize = 2 << 30;

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream: {0}")]
    ReadChunk(#[from] quinn::ReadError),
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("connection: {0}")]
    Conn(#[from] quinn::ConnectionError),
    #[error("protocol: {0}")]
    Frame(#[from] remora_protocol::FrameError),
    #[error("handshake: {0}")]
    Handshake(#[from] handshake::HandshakeError),
    #[error("{0}")]
    Refused(String),
    #[error("timed out waiting for the client's hello")]
    Timeout,
}

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

async fn run(conn: &quinn::Connection, shared: &Shared) -> Result<(), ConnError> {
    let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| ConnError::Timeout)??;
    let mut hello = [0u8; 10];
    tokio::time::timeout(HELLO_TIMEOUT, recv.read_exact(&mut hello))
        .await
        .map_err(|_| ConnError::Timeout)??;
    let (version, token_len) = handshake::parse_client_hello_prefix(&hello)?;
    let mut token = vec![0u8; token_len];
    recv.read_exact(&mut token).await?;
    // The token is checked before anything else, version included, so an unauthenticated peer
    // learns nothing but that it was refused.
    if !handshake::token_matches(&shared.token, &token) {
        refuse(
            &mut send,
            Outcome::BadToken,
            "invalid token: check the connection file's token",
        )
        .await;
        return Err(ConnError::Refused("invalid token".into()));
    }
    if version != PROTOCOL_VERSION {
        let msg =
            format!("server speaks Remora protocol {PROTOCOL_VERSION}, client speaks {version}");
        refuse(&mut send, Outcome::VersionMismatch, &msg).await;
        return Err(ConnError::Refused(msg));
    }
    send.write_all(&handshake::server_accept(&shared.info))
        .await?;

    // First request: the client's address windows, which the backend's session is placed in.
    let (_, req) = read_request(&mut recv)
        .await?
        .ok_or_else(|| ConnError::Refused("closed before set-up".into()))?;
    let Request::SetWindows { windows } = req else {
        return Err(ConnError::Refused(format!(
            "expected SetWindows first, got {}",
            req.name()
        )));
    };
    let opened = check_windows(&windows, shared.info.devices.len())
        .and_then(|()| shared.backend.open(&windows));
    let mut session = match opened {
        Ok(b) => {
            reply(&mut send, Reply::ok(ReplyBody::None), 0).await?;
            Session::new(b, shared.info.devices.len() as u32, shared.session_memory)
        }
        Err(e) => {
            reply(&mut send, Reply::error(e.status, e.message.clone()), 0).await?;
            drain(&mut send).await;
            return Err(ConnError::Refused(e.message));
        }
    };

    while let Some((prefix, req)) = read_request(&mut recv).await? {
        let wants_reply = prefix.wants_reply();
        let name = req.name();
        let result: CuResult<ReplyBody> = match req {
            Request::MemcpyHtoD { ctx, stream, dst } => copy_in(
                &mut session,
                &mut recv,
                ctx,
                stream,
                dst,
                prefix.payload_len,
            )
            .await?
            .map(|()| ReplyBody::None),
            Request::MemcpyDtoH {
                ctx,
                stream,
                src,
                size,
            } => {
                let check = session.begin_read(ctx, stream, src, size);
                match check {
                    Ok(()) if wants_reply => {
                        // The data follows the reply header; errors before it were checked.
                        let body = session.settle(Ok(()));
                        let status = body.as_ref().err().cloned();
                        let mut r = match status {
                            None => Reply::ok(ReplyBody::Data),
                            Some(e) => Reply {
                                body: ReplyBody::Data,
                                ..Reply::error(e.status, e.message)
                            },
                        };
                        r.output = session.take_output();
                        copy_out(&mut session, &mut send, reply_bytes(&r, size), src, size).await?;
                        continue;
                    }
                    Ok(()) => Err(CuError::new(
                        CuStatus::INVALID_VALUE,
                        "device-to-host copy without a reply",
                    )),
                    Err(e) => Err(e),
                }
            }
            Request::ModuleHave { hash } => {
                skip_payload(&mut recv, prefix.payload_len).await?;
                let present = lock(shared).contains_key(&hash);
                Ok(ReplyBody::Have { present })
            }
            Request::ModuleLoad { ctx, module, hash } => {
                let image = receive_image(shared, &mut recv, hash, prefix.payload_len).await?;
                match image {
                    // Parsing a large image is CPU work: let the runtime move other tasks away.
                    Ok(img) => {
                        tokio::task::block_in_place(|| session.load_module(ctx, module, hash, img))
                    }
                    Err(e) => Err(e),
                }
            }
            launch @ Request::Launch { .. } => {
                skip_payload(&mut recv, prefix.payload_len).await?;
                // Kernels run for as long as they run: keep the QUIC driver (keep-alives, other
                // clients) off this thread meanwhile.
                tokio::task::block_in_place(|| session.handle(launch))
            }
            other => {
                skip_payload(&mut recv, prefix.payload_len).await?;
                session.handle(other)
            }
        };
        if wants_reply {
            let r = match session.settle(result) {
                Ok(body) => Reply::ok(body),
                Err(e) => {
                    tracing::debug!(request = name, %e, "request failed");
                    Reply::error(e.status, e.message)
                }
            };
            let r = Reply {
                output: session.take_output(),
                ..r
            };
            write_reply(&mut send, &r, 0).await?;
        } else if let Err(e) = result {
            session.defer(e);
        }
    }
    Ok(())
}

fn lock(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], Arc<[u8]>>> {
    shared.images.lock().unwrap_or_else(|e| e.into_inner())
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

async fn refuse(send: &mut SendStream, outcome: Outcome, msg: &str) {
    let _ = send
        .write_all(&handshake::server_hello(outcome, msg.as_bytes()))
        .await;
    drain(send).await;
}

/// Finishes the stream and gives what was written time to reach the client before the
/// connection is closed (closing at once could drop a refusal's explanation).
async fn drain(send: &mut SendStream) {
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

/// The next request, or `None` when the client closed its stream cleanly.
async fn read_request(recv: &mut RecvStream) -> Result<Option<(FramePrefix, Request)>, ConnError> {
    let mut p = [0u8; PREFIX_LEN];
    match recv.read_exact(&mut p).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let prefix = FramePrefix::parse(&p)?;
    let mut header = vec![0u8; prefix.header_len as usize];
    recv.read_exact(&mut header).await?;
    let req = decode::<Request>(&header)?;
    Ok(Some((prefix, req)))
}

/// A reply's frame prefix and header, ready to be followed by `payload_len` bytes.
fn reply_bytes(r: &Reply, payload_len: u64) -> Vec<u8> {
    let header = encode(r);
    let mut buf =
        Vec::with_capacity(PREFIX_LEN + header.len() + payload_len.min(CHUNK as u64) as usize);
    frame::encode_prefixed(&mut buf, &header, 0, payload_len);
    buf
}

async fn write_reply(send: &mut SendStream, r: &Reply, payload_len: u64) -> Result<(), ConnError> {
    send.write_all(&reply_bytes(r, payload_len)).await?;
    Ok(())
}

async fn reply(send: &mut SendStream, r: Reply, payload_len: u64) -> Result<(), ConnError> {
    write_reply(send, &r, payload_len).await
}

async fn skip_payload(recv: &mut RecvStream, mut len: u64) -> Result<(), ConnError> {
    while len > 0 {
        match recv
            .read_chunk(len.min(CHUNK as u64) as usize, true)
            .await?
        {
            Some(c) => len -= c.bytes.len() as u64,
            None => return Err(ConnError::Refused("stream ended inside a payload".into())),
        }
    }
    Ok(())
}

/// Streams a host-to-device payload into device memory chunk by chunk. The outer result is the
/// connection's; the inner one the copy's (an invalid copy still consumes its bytes).
async fn copy_in(
    session: &mut Session,
    recv: &mut RecvStream,
    ctx: u64,
    stream: u64,
    dst: u64,
    len: u64,
) -> Result<CuResult<()>, ConnError> {
    if let Err(e) = session.begin_write(ctx, stream, dst, len) {
        skip_payload(recv, len).await?;
        return Ok(Err(e));
    }
    let mut off = 0u64;
    let mut result = Ok(());
    while off < len {
        let Some(chunk) = recv
            .read_chunk((len - off).min(CHUNK as u64) as usize, true)
            .await?
        else {
            return Err(ConnError::Refused("stream ended inside a copy".into()));
        };
        if result.is_ok() {
            result = session.write_chunk(dst + off, &chunk.bytes);
        }
        off += chunk.bytes.len() as u64;
    }
    Ok(result)
}

/// Streams device memory to the client after its reply header. Small copies go out with the
/// header in one write (one datagram, one wake-up on the client); large ones in chunks.
async fn copy_out(
    session: &mut Session,
    send: &mut SendStream,
    header: Vec<u8>,
    src: u64,
    len: u64,
) -> Result<(), ConnError> {
    if len <= CHUNK as u64 {
        let mut buf = header;
        let start = buf.len();
        buf.resize(start + len as usize, 0);
        // Checked by begin_read; a backend fault here is reported by the next call.
        if let Err(e) = session.read_chunk(src, &mut buf[start..]) {
            session.defer(e);
        }
        send.write_all(&buf).await?;
        return Ok(());
    }
    send.write_all(&header).await?;
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        if let Err(e) = session.read_chunk(src + off, &mut buf) {
            session.defer(e);
        }
        send.write_chunk(Bytes::from(buf)).await?;
        off += n as u64;
    }
    Ok(())
}

async fn receive_image(
    shared: &Shared,
    recv: &mut RecvStream,
    hash: [u8; 32],
    len: u64,
) -> Result<CuResult<Arc<[u8]>>, ConnError> {
    if len == 0 {
        return Ok(lock(shared).get(&hash).cloned().ok_or_else(|| {
            CuError::new(
                CuStatus::INVALID_VALUE,
                "module image is not cached on the server; send it",
            )
        }));
    }
    if len > MAX_IMAGE {
        skip_payload(recv, len).await?;
        return Ok(Err(CuError::new(
            CuStatus::INVALID_IMAGE,
            format!("module image of {len} bytes is too large"),
        )));
    }
    let mut image = vec![0u8; len as usize];
    recv.read_exact(&mut image).await?;
    // The cache is shared between clients: never trust a client's claim about its content.
    let actual: [u8; 32] = sha2::Sha256::digest(&image).into();
    if actual != hash {
        return Ok(Err(CuError::new(
            CuStatus::INVALID_IMAGE,
            "module image does not match its content hash",
        )));
    }
    let image: Arc<[u8]> = image.into();
    let mut cache = lock(shared);
    let held: usize = cache.values().map(|i| i.len()).sum();
    if held + image.len() > MAX_CACHED_BYTES {
        // Sessions keep their own references: dropping the cache only costs a re-upload.
        cache.clear();
    }
    cache.insert(hash, image.clone());
    Ok(Ok(image))
}
