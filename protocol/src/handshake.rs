//! The versioned handshake that opens every connection.
//!
//! Its fixed part is raw bytes, not rkyv, so that peers of *different* protocol versions can
//! still read each other's hello and say clearly why they cannot talk.
//!
//! ```text
//! client: MAGIC | u32 version | u16 token_len | token
//! server: MAGIC | u32 version | u8 outcome | u32 body_len | body
//!         (outcome 0: body is rkyv ServerInfo; otherwise body is a UTF-8 message)
//! ```

use crate::messages::{decode, encode, ServerInfo};
use crate::{FrameError, MAGIC, PROTOCOL_VERSION};

/// Why a server refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Accepted = 0,
    VersionMismatch = 1,
    BadToken = 2,
    Refused = 3,
}

/// Longest token accepted.
pub const MAX_TOKEN: usize = 1024;

/// What went wrong in a handshake, from either side's point of view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the peer is not a Remora endpoint (bad magic)")]
    NotRemora,
    #[error("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}; use matching Remora releases")]
    VersionMismatch { ours: u32, theirs: u32 },
    #[error("the server refused the token: {0}")]
    BadToken(String),
    #[error("the server refused the connection: {0}")]
    Refused(String),
    #[error("malformed handshake: {0}")]
    Malformed(String),
}

pub fn client_hello(token: &str) -> Vec<u8> {
    let token = &token.as_bytes()[..token.len().min(MAX_TOKEN)];
    let mut out = Vec::with_capacity(10 + token.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&(token.len() as u16).to_le_bytes());
    out.extend_from_slice(token);
    out
}

/// The fixed part of a client hello: 10 bytes, then `token_len` bytes of token.
pub fn parse_client_hello_prefix(bytes: &[u8; 10]) -> Result<(u32, usize), HandshakeError> {
    if bytes[..4] != MAGIC {
        return Err(HandshakeError::NotRemora);
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    if len > MAX_TOKEN {
        return Err(HandshakeError::Malformed(format!("token of {len} bytes")));
    }
    Ok((version, len))
}

pub fn server_hello(outcome: Outcome, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(outcome as u8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

pub fn server_accept(info: &ServerInfo) -> Vec<u8> {
    server_hello(Outcome::Accepted, &encode(info))
}

/// The fixed part of a server hello: 13 bytes. Returns (version, outcome byte, body length).
pub fn parse_server_hello_prefix(bytes: &[u8; 13]) -> Result<(u32, u8, usize), HandshakeError> {
    if bytes[..4] != MAGIC {
        return Err(HandshakeError::NotRemora);
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let len = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]) as usize;
    if len > crate::frame::MAX_HEADER as usize {
        return Err(HandshakeError::Malformed(format!(
            "server hello of {len} bytes"
        )));
    }
    Ok((version, bytes[8], len))
}

/// Interprets a complete server hello body.
pub fn finish_server_hello(
    version: u32,
    outcome: u8,
    body: &[u8],
) -> Result<ServerInfo, HandshakeError> {
    let text = || String::from_utf8_lossy(body).into_owned();
    match outcome {
        0 if version == PROTOCOL_VERSION => decode::<ServerInfo>(body)
            .map_err(|e: FrameError| HandshakeError::Malformed(e.to_string())),
        0 | 1 => Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        }),
        2 => Err(HandshakeError::BadToken(text())),
        _ => Err(HandshakeError::Refused(text())),
    }
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timing.
pub fn token_matches(expected: &str, got: &[u8]) -> bool {
    let e = expected.as_bytes();
    if e.len() != got.len() {
        return false;
    }
    e.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::DeviceInfo;

    fn info() -> ServerInfo {
        ServerInfo {
            driver_version: 13000,
            server_name: "t".into(),
            devices: vec![DeviceInfo {
                name: "Remora Emulated GPU".into(),
                uuid: [7; 16],
                total_mem: 1 << 30,
                attributes: vec![(75, 8)],
                emulated: true,
            }],
        }
    }

    #[test]
    fn accepted_hello_round_trips() {
        let hello = client_hello("secret");
        let (v, len) = parse_client_hello_prefix(hello[..10].try_into().unwrap()).unwrap();
        assert_eq!((v, len), (PROTOCOL_VERSION, 6));
        assert!(token_matches("secret", &hello[10..]));
        assert!(!token_matches("secret", b"secreT"));
        let reply = server_accept(&info());
        let (v, o, len) = parse_server_hello_prefix(reply[..13].try_into().unwrap()).unwrap();
        assert_eq!(
            finish_server_hello(v, o, &reply[13..13 + len]).unwrap(),
            info()
        );
    }

    #[test]
    fn version_mismatch_and_refusals_say_why() {
        let mut reply = server_hello(Outcome::VersionMismatch, b"server speaks 99");
        reply[4..8].copy_from_slice(&99u32.to_le_bytes());
        let (v, o, len) = parse_server_hello_prefix(reply[..13].try_into().unwrap()).unwrap();
        let err = finish_server_hello(v, o, &reply[13..13 + len]).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 99
            }
        );
        let reply = server_hello(Outcome::BadToken, b"wrong token");
        let err = finish_server_hello(PROTOCOL_VERSION, reply[8], &reply[13..]).unwrap_err();
        assert!(err.to_string().contains("wrong token"));
        assert_eq!(
            parse_client_hello_prefix(b"HTTP/1.1 2"),
            Err(HandshakeError::NotRemora)
        );
    }
}
