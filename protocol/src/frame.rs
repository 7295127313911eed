//! Framing: a 16-byte prefix, an rkyv header, then raw payload bytes.
//!
//! ```text
//! u32 header_len | u32 flags | u64 payload_len | header (rkyv) | payload (raw bytes)
//! ```
//! Bulk data (copies, module images) rides in the payload so it can be streamed straight into
//! its destination in chunks instead of being buffered whole inside a message. The one
//! [`FrameDecoder`] here is what both ends of a connection use: it hands out headers whole and
//! payloads as chunks, slicing (not copying) the buffers it was fed.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// The frame wants a reply (a synchronising call).
pub const FLAG_REPLY: u32 = 1;

pub const PREFIX_LEN: usize = 16;
/// Largest header a peer may send; more is a protocol violation, not an allocation.
pub const MAX_HEADER: u32 = 64 << 20;
/// Largest payload a frame may announce (1 TiB).
pub const MAX_PAYLOAD: u64 = 1 << 40;

/// What can be wrong with bytes a peer sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame header of {0} bytes exceeds the limit of {MAX_HEADER}")]
    HeaderTooLarge(u32),
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    PayloadTooLarge(u64),
    #[error("unknown frame flags {0:#x}")]
    BadFlags(u32),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// The fixed-size start of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePrefix {
    pub header_len: u32,
    pub flags: u32,
    pub payload_len: u64,
}

impl FramePrefix {
    pub fn parse(bytes: &[u8; PREFIX_LEN]) -> Result<Self, FrameError> {
        let le32 =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let header_len = le32(0);
        let flags = le32(4);
        let mut p = [0u8; 8];
        p.copy_from_slice(&bytes[8..16]);
        let payload_len = u64::from_le_bytes(p);
        if header_len > MAX_HEADER {
            return Err(FrameError::HeaderTooLarge(header_len));
        }
        if payload_len > MAX_PAYLOAD {
            return Err(FrameError::PayloadTooLarge(payload_len));
        }
        if flags & !FLAG_REPLY != 0 {
            return Err(FrameError::BadFlags(flags));
        }
        Ok(Self {
            header_len,
            flags,
            payload_len,
        })
    }

    pub fn to_bytes(self) -> [u8; PREFIX_LEN] {
        let mut out = [0u8; PREFIX_LEN];
        out[0..4].copy_from_slice(&self.header_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.payload_len.to_le_bytes());
        out
    }

    pub fn wants_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }
}

/// Appends a frame whose payload (if any) the caller writes right after.
pub fn encode_prefixed(out: &mut Vec<u8>, header: &[u8], flags: u32, payload_len: u64) {
    let prefix = FramePrefix {
        header_len: header.len() as u32,
        flags,
        payload_len,
    };
    out.extend_from_slice(&prefix.to_bytes());
    out.extend_from_slice(header);
}

/// What the decoder found next in the bytes it was fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A frame's prefix and its whole header; `prefix.payload_len` bytes of payload follow as
    /// [`FrameEvent::Payload`] chunks.
    Header { prefix: FramePrefix, header: Bytes },
    /// The next piece of the current frame's payload; `last` when it completes the frame.
    Payload { chunk: Bytes, last: bool },
}

#[derive(Debug, Clone, Copy)]
enum State {
    Prefix,
    Header(FramePrefix),
    Payload {
        remaining: u64,
    },
    /// A peer sent bytes no correct peer sends; nothing after them can be trusted.
    Failed,
}

/// Incremental decoder: feed buffers as they arrive, take events as they complete.
#[derive(Debug)]
pub struct FrameDecoder {
    input: VecDeque<Bytes>,
    buffered: usize,
    state: State,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self {
            input: VecDeque::new(),
            buffered: 0,
            state: State::Prefix,
        }
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.buffered += bytes.len();
            self.input.push_back(bytes);
        }
    }

    /// Bytes fed but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// True between frames (nothing half-decoded, nothing buffered).
    pub fn is_idle(&self) -> bool {
        self.buffered == 0 && matches!(self.state, State::Prefix)
    }

    /// The next event, `Ok(None)` if more bytes are needed, or an error for bytes no correct
    /// peer sends (the connection should then be closed; the decoder stays failed).
    pub fn next_event(&mut self) -> Result<Option<FrameEvent>, FrameError> {
        loop {
            match self.state {
                State::Prefix => {
                    let Some(p) = self.take(PREFIX_LEN) else {
                        return Ok(None);
                    };
                    let mut raw = [0u8; PREFIX_LEN];
                    raw.copy_from_slice(&p);
                    let prefix = FramePrefix::parse(&raw).inspect_err(|_| {
                        self.input.clear();
                        self.buffered = 0;
                        self.state = State::Failed;
                    })?;
                    self.state = State::Header(prefix);
                }
                State::Failed => {
                    return Err(FrameError::Malformed("the stream already failed".into()))
                }
                State::Header(prefix) => {
                    let Some(header) = self.take(prefix.header_len as usize) else {
                        return Ok(None);
                    };
                    self.state = if prefix.payload_len == 0 {
                        State::Prefix
                    } else {
                        State::Payload {
                            remaining: prefix.payload_len,
                        }
                    };
                    return Ok(Some(FrameEvent::Header { prefix, header }));
                }
                State::Payload { remaining } => {
                    let Some(front) = self.input.front_mut() else {
                        return Ok(None);
                    };
                    let n = (front.len() as u64).min(remaining) as usize;
                    let chunk = front.split_to(n);
                    if front.is_empty() {
                        self.input.pop_front();
                    }
                    self.buffered -= n;
                    let remaining = remaining - n as u64;
                    let last = remaining == 0;
                    self.state = if last {
                        State::Prefix
                    } else {
                        State::Payload { remaining }
                    };
                    return Ok(Some(FrameEvent::Payload { chunk, last }));
                }
            }
        }
    }

    /// Exactly `n` bytes from the front of the input: a slice when one buffer holds them, a
    /// copy when they span several; `None` (consuming nothing) when fewer are buffered.
    fn take(&mut self, n: usize) -> Option<Bytes> {
        if self.buffered < n {
            return None;
        }
        self.buffered -= n;
        if n == 0 {
            return Some(Bytes::new());
        }
        let front = self.input.front_mut()?;
        if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.input.pop_front();
            }
            return Some(out);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let front = self.input.front_mut()?;
            let k = front.len().min(n - out.len());
            out.extend_from_slice(&front.split_to(k));
            if front.is_empty() {
                self.input.pop_front();
            }
        }
        Some(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{decode, encode, CtxId, Request, StreamId};

    fn events(d: &mut FrameDecoder) -> Vec<FrameEvent> {
        let mut out = Vec::new();
        while let Some(e) = d.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    /// Headers whole, payload chunks concatenated: what a consumer reassembles.
    fn frames(evs: &[FrameEvent]) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(u32, Vec<u8>, Vec<u8>)> = Vec::new();
        for e in evs {
            match e {
                FrameEvent::Header { prefix, header } => {
                    out.push((prefix.flags, header.to_vec(), Vec::new()))
                }
                FrameEvent::Payload { chunk, .. } => {
                    out.last_mut().unwrap().2.extend_from_slice(chunk)
                }
            }
        }
        out
    }

    #[test]
    fn frames_split_at_every_byte_reassemble() {
        let req = Request::MemcpyHtoD {
            ctx: CtxId(1),
            stream: StreamId(0),
            dst: 0x7000_0000_0000,
        };
        let header = encode(&req);
        let mut wire = Vec::new();
        encode_prefixed(&mut wire, &header, 0, 5);
        wire.extend_from_slice(b"hello");
        encode_prefixed(&mut wire, &header, FLAG_REPLY, 0);
        for split in 0..wire.len() {
            let mut d = FrameDecoder::new();
            d.feed(Bytes::copy_from_slice(&wire[..split]));
            let mut evs = events(&mut d);
            d.feed(Bytes::copy_from_slice(&wire[split..]));
            evs.extend(events(&mut d));
            let f = frames(&evs);
            assert_eq!(f.len(), 2, "split at {split}");
            assert_eq!(f[0].2, b"hello");
            assert!(f[1].0 & FLAG_REPLY != 0);
            assert_eq!(decode::<Request>(&f[0].1).unwrap(), req);
            assert!(d.is_idle());
        }
    }

    #[test]
    fn payload_chunks_are_slices_of_the_input_and_the_last_says_so() {
        let mut wire = Vec::new();
        encode_prefixed(&mut wire, b"h", 0, 6);
        let mut d = FrameDecoder::new();
        d.feed(Bytes::from(wire));
        d.feed(Bytes::from_static(b"abc"));
        d.feed(Bytes::from_static(b"def"));
        let evs = events(&mut d);
        assert_eq!(
            evs[1..],
            [
                FrameEvent::Payload {
                    chunk: Bytes::from_static(b"abc"),
                    last: false
                },
                FrameEvent::Payload {
                    chunk: Bytes::from_static(b"def"),
                    last: true
                }
            ]
        );
    }

    #[test]
    fn oversized_and_bad_flags_are_errors_not_allocations() {
        let bad = |prefix: FramePrefix| {
            let mut d = FrameDecoder::new();
            d.feed(Bytes::copy_from_slice(&prefix.to_bytes()));
            let first = d.next_event();
            // A failed decoder stays failed.
            assert!(d.next_event().is_err());
            first
        };
        assert_eq!(
            bad(FramePrefix {
                header_len: u32::MAX,
                flags: 0,
                payload_len: 0,
            }),
            Err(FrameError::HeaderTooLarge(u32::MAX))
        );
        assert_eq!(
            bad(FramePrefix {
                header_len: 1,
                flags: 0x80,
                payload_len: 0,
            }),
            Err(FrameError::BadFlags(0x80))
        );
        assert!(matches!(
            bad(FramePrefix {
                header_len: 1,
                flags: 0,
                payload_len: u64::MAX,
            }),
            Err(FrameError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn incomplete_frame_is_none() {
        let mut d = FrameDecoder::new();
        d.feed(Bytes::from_static(&[1, 0, 0]));
        assert_eq!(d.next_event(), Ok(None));
        assert_eq!(d.buffered(), 3);
    }
}
