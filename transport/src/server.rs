//! The server's driver: the handshake, then a [`ServerConn`] pumped over one quinn stream.

use std::time::Duration;

use remora_protocol::handshake::{self, HandshakeError, Outcome, ServerDecision, ServerHandshake};
use remora_protocol::messages::{Reply, ServerInfo, SessionRequest};
use remora_protocol::{FrameError, ServerConn, ServerEvent};

/// Reads from the stream in pieces of at most this size; replies are written once this much
/// is queued.
pub const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("connection: {0}")]
    Conn(#[from] quinn::ConnectionError),
    #[error("protocol: {0}")]
    Frame(#[from] FrameError),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("timed out waiting for the client's hello")]
    Timeout,
    #[error("the client closed its stream inside a frame")]
    Truncated,
}

/// Accepts a connection attempt. The connection is handed out before the TLS handshake
/// completes, so a client's hello sent as 0-RTT data is answered at once, with the server's
/// first flight (0.5-RTT data): nothing is sent on it before [`hello`] has read a valid token,
/// and a handshake that then fails closes the connection, ending whatever was started.
pub async fn accept(
    incoming: quinn::Incoming,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let connecting = incoming.accept()?;
    match connecting.into_0rtt() {
        Ok((conn, _)) => Ok(conn),
        // quinn documents that this never happens on a server; wait for the handshake.
        Err(connecting) => connecting.await,
    }
}

/// Accepts a client's call stream and reads its hello: a token that is none of `tokens`
/// (checked first) or another protocol version is refused, with the reason, before this
/// returns. The server then decides with [`Hello::accept`], [`Hello::queued`] or
/// [`Hello::refuse`]; [`Hello::token`] says which token the client presented.
pub async fn hello(
    conn: &quinn::Connection,
    tokens: Vec<String>,
    timeout: Duration,
) -> Result<Hello, ServeError> {
    let (mut send, mut recv) = tokio::time::timeout(timeout, conn.accept_bi())
        .await
        .map_err(|_| ServeError::Timeout)??;
    let mut hs = ServerHandshake::with_tokens(tokens);
    let decision = tokio::time::timeout(timeout, async {
        loop {
            let chunk = recv
                .read_chunk(CHUNK, true)
                .await?
                .ok_or(ServeError::Truncated)?;
            if let Some(d) = hs.poll(&chunk.bytes) {
                return Ok::<_, ServeError>(d?);
            }
        }
    })
    .await
    .map_err(|_| ServeError::Timeout)??;
    match decision {
        ServerDecision::Hello {
            request,
            rest,
            token,
        } => Ok(Hello {
            request,
            token,
            send,
            recv,
            rest,
        }),
        ServerDecision::Refuse { reply, why } => {
            let _ = send.write_all(&reply).await;
            drain(&mut send).await;
            Err(ServeError::Refused(why))
        }
    }
}

/// An authenticated client whose session is not decided yet.
pub struct Hello {
    pub request: SessionRequest,
    /// The index, in the tokens given to [`hello`], of the one the client presented.
    pub token: usize,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: Vec<u8>,
}

impl Hello {
    /// Starts the session: the client learns the devices it gets.
    pub async fn accept(mut self, info: &ServerInfo) -> Result<Calls, ServeError> {
        self.send.write_all(&handshake::server_accept(info)).await?;
        Ok(Calls {
            send: self.send,
            recv: self.recv,
            conn: ServerConn::with_received(self.rest),
        })
    }

    /// Tells the client its place in the queue (1: next).
    pub async fn queued(&mut self, place: u32) -> Result<(), ServeError> {
        self.send
            .write_all(&handshake::server_queued(place))
            .await?;
        Ok(())
    }

    /// Refuses the session, telling the client why.
    pub async fn refuse(&mut self, outcome: Outcome, why: &str) -> ServeError {
        let _ = self
            .send
            .write_all(&handshake::server_hello(outcome, why.as_bytes()))
            .await;
        drain(&mut self.send).await;
        ServeError::Refused(why.to_string())
    }

    /// Resolves when the client goes away while it waits.
    pub async fn gone(&mut self) {
        let _ = self.send.stopped().await;
    }
}

/// Finishes the stream and gives what was written time to reach the client before the
/// connection is closed (closing at once could drop a refusal's explanation).
async fn drain(send: &mut quinn::SendStream) {
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

/// One client's calls, in order, and the replies to them.
pub struct Calls {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    conn: ServerConn,
}

impl Calls {
    /// The next event, or `None` when the client closed its stream between calls. Replies
    /// queued so far are written before this waits for the client.
    pub async fn next(&mut self) -> Result<Option<ServerEvent>, ServeError> {
        loop {
            if let Some(ev) = self.conn.poll_event()? {
                return Ok(Some(ev));
            }
            self.flush().await?;
            match self.recv.read_chunk(CHUNK, true).await? {
                Some(c) => self.conn.feed(c.bytes),
                None if self.conn.buffered() == 0 => return Ok(None),
                None => return Err(ServeError::Truncated),
            }
        }
    }

    /// Queues a reply; `payload_len` bytes must follow through [`Calls::reply_data`].
    pub fn reply(&mut self, reply: &Reply, payload_len: u64) {
        self.conn.reply(reply, payload_len);
    }

    /// The buffer a reply's payload is appended to; call [`Calls::flush_if_full`] between
    /// pieces of a large one.
    pub fn reply_data(&mut self) -> &mut Vec<u8> {
        self.conn.reply_data()
    }

    pub async fn flush_if_full(&mut self) -> Result<(), ServeError> {
        if self.conn.pending_transmit() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ServeError> {
        if self.conn.pending_transmit() > 0 {
            let bytes = self.conn.take_transmit();
            self.send.write_chunk(bytes.into()).await?;
        }
        Ok(())
    }

    /// Writes what is queued, finishes the stream and waits briefly for it to arrive (used
    /// before closing a session on an error the client should read).
    pub async fn finish(mut self) {
        let _ = self.flush().await;
        drain(&mut self.send).await;
    }
}
