//! The client's driver: a [`ClientConn`] pumped over one quinn stream.
//!
//! Queuing an asynchronous call takes one short lock and no I/O. Whoever needs the wire takes
//! the send half, and with it everything queued so far, so frames leave in the order they were
//! queued. Whoever waits for a reply reads the stream when nobody else does, feeding every
//! reply it finds to the state machine (its own and other threads'), then wakes the others; so
//! a thread waiting for its reply never stops other threads from queuing work, and the common
//! single-threaded call writes and reads in one turn of the runtime with no thread hop.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use remora_protocol::handshake::{ClientEvent, ClientHandshake, HandshakeError};
use remora_protocol::messages::{Reply, Request, ServerInfo, SessionRequest};
use remora_protocol::{ClientConn, ConnError, ConnectionFile, Flush, Sink, Ticket};

use crate::endpoint::{self, SERVER_NAME};

/// Replies are read in pieces of at most this size.
const READ_CHUNK: usize = 1 << 20;

/// A connected, authenticated client, before its call pipeline starts.
pub struct Connected {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub info: ServerInfo,
    /// Bytes the server sent after its hello.
    pub rest: Vec<u8>,
    /// The session resumed an earlier one and its hello went with the first flight (0-RTT),
    /// accepted by the server: connecting cost one round trip.
    pub zero_rtt: bool,
}

/// Connects to the server a connection file names, pins its certificate, presents the token
/// and the session request, and completes the versioned handshake, calling `queued` with the
/// place each time a pool says the session waits in its queue. Must be polled with a tokio
/// runtime entered. Errors are sentences for a person; a [`ConnectError::NoDevice`] means no
/// GPU could be given (CUDA's `CUDA_ERROR_NO_DEVICE`).
pub async fn connect(
    file: &ConnectionFile,
    request: &SessionRequest,
    timeout: Duration,
    mut queued: impl FnMut(u32),
) -> Result<Connected, ConnectError> {
    let addr = file.address;
    let fail = |e: &dyn std::fmt::Display| {
        ConnectError::Failed(format!(
            "cannot connect to the Remora server at {addr}: {e}"
        ))
    };
    let endpoint = endpoint::client(addr, file.cert_sha256).map_err(|e| fail(&e))?;
    let connecting = endpoint.connect(addr, SERVER_NAME).map_err(|e| fail(&e))?;
    // With a ticket from an earlier connection to this server, the hello leaves with the
    // first flight (0-RTT) and its answer comes back with the server's: one round trip.
    let (conn, early) = match connecting.into_0rtt() {
        Ok((conn, accepted)) => (conn, Some(accepted)),
        Err(connecting) => (
            tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_| fail(&format!("no answer within {timeout:?}")))?
                .map_err(|e| fail(&e))?,
            None,
        ),
    };
    let zero_rtt = early.is_some();
    let (mut send, mut recv, mut hs) = send_hello(&conn, file, request)
        .await
        .map_err(|e| fail(&e))?;
    // The first answer comes at once; a queued session waits as long as it asked to.
    let mut wait = timeout;
    let mut early = early;
    let accepted = loop {
        let mut answer = hs.poll(&[]);
        while answer.is_none() {
            let chunk = match tokio::time::timeout(wait, recv.read_chunk(READ_CHUNK, true))
                .await
                .map_err(|_| fail(&"no handshake reply"))?
            {
                // The server lost or refused the ticket (it restarted, or the ticket was used):
                // the hello sent early never reached it, so it goes again, after the handshake.
                Err(quinn::ReadError::ZeroRttRejected) if early.take().is_some() => {
                    (send, recv, hs) = send_hello(&conn, file, request)
                        .await
                        .map_err(|e| fail(&e))?;
                    continue;
                }
                r => r.map_err(|e| fail(&e))?,
            };
            let chunk =
                chunk.ok_or_else(|| fail(&"the server closed the stream during the handshake"))?;
            answer = hs.poll(&chunk.bytes);
        }
        let said = |e: HandshakeError| format!("Remora server at {addr}: {e}");
        match answer {
            Some(Ok(ClientEvent::Queued(place))) => {
                queued(place);
                wait = timeout + Duration::from_millis(request.queue_timeout_ms.max(600_000));
            }
            Some(Ok(ClientEvent::Accepted { info, rest })) => break (info, rest),
            Some(Err(e @ HandshakeError::NoDevice(_))) => {
                return Err(ConnectError::NoDevice(said(e)))
            }
            Some(Err(e)) => return Err(ConnectError::Failed(said(e))),
            None => unreachable!("the loop above waits for an answer"),
        }
    };
    // Whether the hello really went early is known once the handshake completes, which it
    // has by the time the server's answer was read.
    let zero_rtt = match early {
        Some(accepted) => zero_rtt && accepted.await,
        None => false,
    };
    Ok(Connected {
        endpoint,
        conn,
        send,
        recv,
        info: accepted.0,
        rest: accepted.1,
        zero_rtt,
    })
}

/// Opens the call stream and writes the hello on it.
async fn send_hello(
    conn: &quinn::Connection,
    file: &ConnectionFile,
    request: &SessionRequest,
) -> Result<(quinn::SendStream, quinn::RecvStream, ClientHandshake), quinn::WriteError> {
    let (mut send, recv) = conn.open_bi().await?;
    let (hs, hello) = ClientHandshake::new(&file.token, request);
    send.write_all(&hello).await?;
    Ok((send, recv, hs))
}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The server cannot be reached, refused the token, or speaks another protocol.
    #[error("{0}")]
    Failed(String),
    /// The server (a pool) has no GPU for this session and will not have one in time.
    #[error("{0}")]
    NoDevice(String),
}

/// One connection's call pipeline, shared by every thread (or task) that makes calls.
///
/// `S` receives the data of device-to-host copies, whichever thread happens to read it.
pub struct Link<S> {
    pub address: SocketAddr,
    pub info: ServerInfo,
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    state: Mutex<(ClientConn, S)>,
    send: tokio::sync::Mutex<quinn::SendStream>,
    recv: tokio::sync::Mutex<quinn::RecvStream>,
    replies: tokio::sync::Notify,
    waited_ns: std::sync::atomic::AtomicU64,
}

impl<S: Sink + Send> Link<S> {
    pub fn new(c: Connected, sink: S) -> Self {
        Self {
            address: c.conn.remote_address(),
            info: c.info,
            endpoint: c.endpoint,
            conn: c.conn,
            state: Mutex::new((ClientConn::with_received(c.rest), sink)),
            send: tokio::sync::Mutex::new(c.send),
            recv: tokio::sync::Mutex::new(c.recv),
            replies: tokio::sync::Notify::new(),
            waited_ns: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, (ClientConn, S)> {
        // A panic while holding the lock leaves the state machine consistent between calls.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the sink (to take data a call's reply delivered).
    pub fn with_sink<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        f(&mut self.state().1)
    }

    /// Runs `f` on the state machine (counters, pending reads, ...).
    pub fn with_conn<T>(&self, f: impl FnOnce(&mut ClientConn) -> T) -> T {
        f(&mut self.state().0)
    }

    /// Queues an asynchronous call with a payload of at most
    /// [`remora_protocol::client::INLINE_PAYLOAD`] bytes, captured now. `Flush::Now` asks the
    /// caller to [`Link::flush`] soon (the batch is large).
    pub fn post(&self, req: &Request, payload: &[u8]) -> Result<Flush, ConnError> {
        debug_assert!(payload.len() <= remora_protocol::client::INLINE_PAYLOAD);
        self.state().0.post(req, payload)
    }

    /// Queues an asynchronous call with a payload of any size; returns once the payload has
    /// been handed to the transport (so the caller may reuse its memory).
    pub async fn post_large(&self, req: &Request, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() <= remora_protocol::client::INLINE_PAYLOAD {
            return match self.post(req, payload)? {
                Flush::Later => Ok(()),
                _ => self.flush().await,
            };
        }
        // Held from queuing to the payload's last byte: nothing may come between the two.
        let mut send = self.send.lock().await;
        let (bytes, flush) = {
            let mut st = self.state();
            let flush = st.0.post(req, payload)?;
            (st.0.take_transmit(), flush)
        };
        self.write(
            &mut send,
            &bytes,
            (flush == Flush::NowThenPayload).then_some(payload),
        )
        .await
    }

    /// Queues a posted call (a module load whose reply nobody waits for yet), its payload
    /// of any size handed to the transport before this returns; the reply is kept for
    /// [`Link::wait_posted`] by the ticket returned, and its error is also reported by the next
    /// synchronising call ([`ClientConn::post_call`]).
    pub async fn post_call(&self, req: &Request, payload: &[u8]) -> Result<Ticket, ConnError> {
        if payload.len() <= remora_protocol::client::INLINE_PAYLOAD {
            let (ticket, flush) = self.state().0.post_call(req, payload)?;
            if flush != Flush::Later {
                self.flush().await?;
            }
            return Ok(ticket);
        }
        // Held from queuing to the payload's last byte: nothing may come between the two.
        let mut send = self.send.lock().await;
        let (bytes, ticket) = {
            let mut st = self.state();
            let (ticket, _) = st.0.post_call(req, payload)?;
            (st.0.take_transmit(), ticket)
        };
        self.write(&mut send, &bytes, Some(payload)).await?;
        Ok(ticket)
    }

    /// Waits for the reply of a posted call ([`Link::post_call`]); a wait that finds it not
    /// yet arrived counts as a round trip of its request, and its time as time waited. A
    /// batch queued since is written first, as a synchronising call writes it.
    pub async fn wait_posted(&self, ticket: Ticket) -> Result<Reply, ConnError> {
        let arrived = {
            let mut st = self.state();
            st.0.waiting_for(ticket);
            st.0.take_reply(ticket)
        };
        if let Some(r) = arrived {
            return r;
        }
        let started = std::time::Instant::now();
        let r = async {
            self.flush().await?;
            self.wait(ticket).await
        }
        .await;
        self.waited_ns.fetch_add(
            started.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        r
    }

    /// Drops a posted call's reply: nobody will wait for it.
    pub fn forget(&self, ticket: Ticket) {
        self.state().0.forget(ticket);
    }

    /// Queues an asynchronous device-to-host copy into `dst` (`len` bytes), delivered through
    /// the sink when replies are next read.
    pub fn post_read(&self, req: &Request, dst: u64, len: u64) -> Result<Ticket, ConnError> {
        self.state().0.post_read(req, dst, len)
    }

    /// Starts a call whose `len` bytes of payload arrive from elsewhere and are streamed
    /// through [`PayloadWriter::write`] without being held whole; the stream is this call's
    /// until [`PayloadWriter::finish`]. With `wants_reply`, `finish` gives the ticket to
    /// [`Link::wait`] for.
    pub async fn begin_payload(
        &self,
        req: &Request,
        len: u64,
        wants_reply: bool,
    ) -> Result<PayloadWriter<'_, S>, ConnError> {
        let mut send = self.send.lock().await;
        let (bytes, ticket) = {
            let mut st = self.state();
            let ticket = st.0.queue_streamed(req, len, wants_reply)?;
            (st.0.take_transmit(), ticket)
        };
        self.write(&mut send, &bytes, None).await?;
        Ok(PayloadWriter {
            link: self,
            send,
            left: len,
            ticket,
        })
    }

    /// Writes everything queued.
    pub async fn flush(&self) -> Result<(), ConnError> {
        let mut send = self.send.lock().await;
        let bytes = self.state().0.take_transmit();
        self.write(&mut send, &bytes, None).await
    }

    async fn write(
        &self,
        send: &mut quinn::SendStream,
        bytes: &[u8],
        payload: Option<&[u8]>,
    ) -> Result<(), ConnError> {
        let r = async {
            if !bytes.is_empty() {
                send.write_all(bytes).await?;
            }
            if let Some(p) = payload {
                send.write_all(p).await?;
            }
            Ok::<_, quinn::WriteError>(())
        }
        .await;
        r.map_err(|e| self.lost(e))
    }

    fn lost(&self, e: impl std::fmt::Display) -> ConnError {
        // A stream error only says "connection lost"; the connection knows why (a server that
        // ends a session says so in its close reason: revoked token, shutting down).
        let e = match self.conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(c)) if !c.reason.is_empty() => {
                format!(
                    "the server ended the session: {}",
                    String::from_utf8_lossy(&c.reason)
                )
            }
            _ => e.to_string(),
        };
        let why = format!(
            "lost the connection to the Remora server at {}: {e}",
            self.address
        );
        let e = self.state().0.fail(why);
        self.replies.notify_waiters();
        e
    }

    /// One round trip: everything queued before it, then this call (and its payload), then
    /// its reply; or no round trip at all for a call that only waits when nothing is
    /// outstanding ([`ClientConn::answer_locally`]). With `read`, the reply's data goes to that destination through the sink
    /// before this returns. A reply with an error status is returned as it is.
    pub async fn call(
        &self,
        req: &Request,
        payload: &[u8],
        read: Option<(u64, u64)>,
    ) -> Result<Reply, ConnError> {
        if let Some(r) = self.state().0.answer_locally(req) {
            return Ok(r);
        }
        let started = std::time::Instant::now();
        let r = self.round_trip(req, payload, read).await;
        self.waited_ns.fetch_add(
            started.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        r
    }

    /// Time spent in round trips so far.
    pub fn waited(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.waited_ns.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn round_trip(
        &self,
        req: &Request,
        payload: &[u8],
        read: Option<(u64, u64)>,
    ) -> Result<Reply, ConnError> {
        let ticket = {
            let mut send = self.send.lock().await;
            let (ticket, flush, bytes) = {
                let mut st = self.state();
                let (t, flush) = st.0.call(req, payload, read)?;
                (t, flush, st.0.take_transmit())
            };
            let large = (flush == Flush::NowThenPayload).then_some(payload);
            self.write(&mut send, &bytes, large).await?;
            ticket
        };
        self.wait(ticket).await
    }

    /// Waits for `ticket`'s reply, reading the stream while nobody else does.
    pub async fn wait(&self, ticket: Ticket) -> Result<Reply, ConnError> {
        loop {
            let notified = self.replies.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.state().0.take_reply(ticket) {
                return r;
            }
            let Ok(mut recv) = self.recv.try_lock() else {
                notified.await;
                continue;
            };
            let chunk = recv.read_chunk(READ_CHUNK, true).await;
            let r = match chunk {
                Ok(Some(c)) => {
                    let mut st = self.state();
                    let (conn, sink) = &mut *st;
                    conn.handle_bytes(c.bytes, sink).map(|_| ())
                }
                Ok(None) => {
                    // The server's reason, if it closes the connection right behind the stream.
                    let why =
                        tokio::time::timeout(std::time::Duration::from_secs(1), self.conn.closed())
                            .await
                            .map(|e| e.to_string())
                            .unwrap_or_else(|_| "the server closed the call stream".into());
                    Err(self.lost(why))
                }
                Err(e) => Err(self.lost(e)),
            };
            drop(recv);
            self.replies.notify_waiters();
            r?;
        }
    }

    /// Closes the connection: the server frees everything this client held at once.
    pub fn close(&self, reason: &str) {
        self.conn.close(0u32.into(), reason.as_bytes());
    }
}

/// A call's payload on its way, piece by piece ([`Link::begin_payload`]).
pub struct PayloadWriter<'a, S> {
    link: &'a Link<S>,
    send: tokio::sync::MutexGuard<'a, quinn::SendStream>,
    left: u64,
    ticket: Option<Ticket>,
}

impl<S: Sink + Send> PayloadWriter<'_, S> {
    /// Writes the next piece of the payload.
    pub async fn write(&mut self, piece: &[u8]) -> Result<(), ConnError> {
        if piece.len() as u64 > self.left {
            return Err(self
                .link
                .lost("a streamed payload was longer than announced"));
        }
        self.link.write(&mut self.send, piece, None).await?;
        self.left -= piece.len() as u64;
        Ok(())
    }

    /// Ends the payload; the call's ticket when it wants a reply. A payload cut short leaves
    /// the stream unusable: the connection is then lost.
    pub fn finish(self) -> Result<Option<Ticket>, ConnError> {
        if self.left != 0 {
            return Err(self.link.lost("a streamed payload ended early"));
        }
        Ok(self.ticket)
    }
}
