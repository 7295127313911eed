//! The server's end of the call pipeline, sans-IO: bytes in, typed calls and payload chunks
//! out; replies in, bytes out.
//!
//! Calls are handed out in the order they arrive. A call whose request carries bytes
//! ([`Request::carries_payload`]: host-to-device copies, module images) is followed by its
//! payload as [`ServerEvent::Payload`] chunks; any payload on a request that takes none is
//! consumed here, so the dispatcher never sees bytes it did not ask for.

use bytes::Bytes;

use crate::frame::{self, FrameDecoder, FrameError, FrameEvent};
use crate::messages::{decode, encode, Reply, Request};

/// What the client sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A request. `payload_len` bytes follow as [`ServerEvent::Payload`] chunks when the request
    /// carries a payload (and only then).
    Call {
        req: Request,
        wants_reply: bool,
        payload_len: u64,
    },
    /// The next piece of the current call's payload; `last` completes it.
    Payload { chunk: Bytes, last: bool },
}

/// The server's end of one connection's call pipeline.
#[derive(Debug, Default)]
pub struct ServerConn {
    decoder: FrameDecoder,
    /// The current frame's payload is skipped rather than handed out.
    skipping: bool,
    out: Vec<u8>,
}

impl ServerConn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes over bytes that arrived with the handshake.
    pub fn with_received(rest: Vec<u8>) -> Self {
        let mut s = Self::new();
        s.decoder.feed(Bytes::from(rest));
        s
    }

    pub fn feed(&mut self, bytes: Bytes) {
        self.decoder.feed(bytes);
    }

    /// Whether bytes fed are still to be handed out.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// The next event, `Ok(None)` when more bytes are needed, or an error for bytes no correct
    /// client sends (close the connection).
    pub fn poll_event(&mut self) -> Result<Option<ServerEvent>, FrameError> {
        loop {
            match self.decoder.next_event()? {
                None => return Ok(None),
                Some(FrameEvent::Header { prefix, header }) => {
                    let req = decode::<Request>(&header)?;
                    let carries = req.carries_payload();
                    self.skipping = !carries && prefix.payload_len > 0;
                    return Ok(Some(ServerEvent::Call {
                        req,
                        wants_reply: prefix.wants_reply(),
                        payload_len: if carries { prefix.payload_len } else { 0 },
                    }));
                }
                Some(FrameEvent::Payload { chunk, last }) => {
                    if self.skipping {
                        self.skipping = !last;
                        continue;
                    }
                    return Ok(Some(ServerEvent::Payload { chunk, last }));
                }
            }
        }
    }

    /// Queues a reply; when `payload_len` is not 0, that many bytes must follow through
    /// [`ServerConn::reply_data`] before the next reply.
    pub fn reply(&mut self, reply: &Reply, payload_len: u64) {
        frame::encode_prefixed(&mut self.out, &encode(reply), 0, payload_len);
    }

    /// Queues bytes of the current reply's payload.
    pub fn reply_data(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Bytes queued for the client.
    pub fn pending_transmit(&self) -> usize {
        self.out.len()
    }

    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}
