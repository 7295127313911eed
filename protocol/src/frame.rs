//! Framing: a 16-byte prefix, an rkyv header, then raw payload bytes.
//!
//! ```text
//! u32 header_len | u32 flags | u64 payload_len | header (rkyv) | payload (raw bytes)
//! ```
//! Bulk data (copies, module images) rides in the payload so it can be streamed straight into
//! its destination in chunks instead of being buffered whole inside a message.

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

/// A whole frame, payload included (the in-memory form used by tests and small messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: u32,
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Incremental decoder: feed bytes as they arrive, take frames as they complete.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an error for bytes no
    /// correct peer sends (the connection should then be closed).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(prefix_bytes) = self.buf.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        let mut p = [0u8; PREFIX_LEN];
        p.copy_from_slice(prefix_bytes);
        let prefix = FramePrefix::parse(&p)?;
        let header_end = PREFIX_LEN + prefix.header_len as usize;
        let Some(total) = usize::try_from(prefix.payload_len)
            .ok()
            .and_then(|n| header_end.checked_add(n))
        else {
            return Err(FrameError::PayloadTooLarge(prefix.payload_len));
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let header = self.buf[PREFIX_LEN..header_end].to_vec();
        let payload = self.buf[header_end..total].to_vec();
        self.buf.drain(..total);
        Ok(Some(Frame {
            flags: prefix.flags,
            header,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{decode, encode, Request};

    #[test]
    fn frames_split_at_every_byte_reassemble() {
        let req = Request::MemcpyHtoD {
            ctx: 1,
            stream: 0,
            dst: 0x7000_0000_0000,
        };
        let header = encode(&req);
        let mut wire = Vec::new();
        encode_prefixed(&mut wire, &header, 0, 5);
        wire.extend_from_slice(b"hello");
        encode_prefixed(&mut wire, &header, FLAG_REPLY, 0);
        for split in 0..wire.len() {
            let mut d = FrameDecoder::new();
            d.feed(&wire[..split]);
            let mut frames = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            d.feed(&wire[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            assert_eq!(frames.len(), 2, "split at {split}");
            assert_eq!(frames[0].payload, b"hello");
            assert!(frames[1].flags & FLAG_REPLY != 0);
            assert_eq!(decode::<Request>(&frames[0].header).unwrap(), req);
        }
    }

    #[test]
    fn oversized_and_bad_flags_are_errors_not_allocations() {
        let mut d = FrameDecoder::new();
        d.feed(
            &FramePrefix {
                header_len: u32::MAX,
                flags: 0,
                payload_len: 0,
            }
            .to_bytes(),
        );
        assert_eq!(d.next_frame(), Err(FrameError::HeaderTooLarge(u32::MAX)));
        let mut d = FrameDecoder::new();
        d.feed(
            &FramePrefix {
                header_len: 1,
                flags: 0x80,
                payload_len: 0,
            }
            .to_bytes(),
        );
        assert_eq!(d.next_frame(), Err(FrameError::BadFlags(0x80)));
        let mut d = FrameDecoder::new();
        d.feed(
            &FramePrefix {
                header_len: 1,
                flags: 0,
                payload_len: u64::MAX,
            }
            .to_bytes(),
        );
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn incomplete_frame_is_none() {
        let mut d = FrameDecoder::new();
        d.feed(&[1, 0, 0]);
        assert_eq!(d.next_frame(), Ok(None));
    }
}
