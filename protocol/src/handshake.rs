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


/// The client's side of the handshake: send [`ClientHandshake::hello`], then feed what the
/// server sends until [`ClientHandshake::poll`] gives its answer. Bytes after the server's
/// hello belong to the call pipeline and are handed back with it.
#[derive(Debug)]
pub struct ClientHandshake {
    buf: Vec<u8>,
}

/// A completed client handshake.
#[derive(Debug)]
pub struct Accepted {
    pub info: ServerInfo,
    /// Bytes that arrived after the server's hello.
    pub rest: Vec<u8>,
}

impl ClientHandshake {
    /// The handshake, and the hello to send.
    pub fn new(token: &str) -> (Self, Vec<u8>) {
        (Self { buf: Vec::new() }, client_hello(token))
    }

    /// The server's answer once its hello is complete, `None` while more bytes are needed.
    pub fn poll(&mut self, bytes: &[u8]) -> Option<Result<Accepted, HandshakeError>> {
        self.buf.extend_from_slice(bytes);
        let prefix: &[u8; 13] = self.buf.get(..13)?.try_into().ok()?;
        let (version, outcome, len) = match parse_server_hello_prefix(prefix) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let body = self.buf.get(13..13 + len)?;
        Some(
            finish_server_hello(version, outcome, body).map(|info| Accepted {
                info,
                rest: self.buf[13 + len..].to_vec(),
            }),
        )
    }
}

/// What the server decided about a client's hello.
#[derive(Debug)]
pub enum ServerDecision {
    /// Send `reply`; the session begins. `rest` is what the client sent after its hello.
    Accept { reply: Vec<u8>, rest: Vec<u8> },
    /// Send `reply`, then close: `why` is for the server's log.
    Refuse { reply: Vec<u8>, why: String },
}

/// The server's side of the handshake. Its policy: the token is checked before anything else,
/// the version included, so an unauthenticated peer learns nothing but that it was refused.
#[derive(Debug)]
pub struct ServerHandshake {
    token: String,
    accept: Vec<u8>,
    buf: Vec<u8>,
}

impl ServerHandshake {
    pub fn new(token: &str, info: &ServerInfo) -> Self {
        Self {
            token: token.to_string(),
            accept: server_accept(info),
            buf: Vec::new(),
        }
    }

    /// The decision once the client's hello is complete; `Err` for bytes that are not a
    /// Remora hello at all (close without answering), `None` while more bytes are needed.
    pub fn poll(&mut self, bytes: &[u8]) -> Option<Result<ServerDecision, HandshakeError>> {
        self.buf.extend_from_slice(bytes);
        let prefix: &[u8; 10] = self.buf.get(..10)?.try_into().ok()?;
        let (version, len) = match parse_client_hello_prefix(prefix) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let token = self.buf.get(10..10 + len)?;
        let decision = if !token_matches(&self.token, token) {
            ServerDecision::Refuse {
                reply: server_hello(
                    Outcome::BadToken,
                    b"invalid token: check the connection file's token",
                ),
                why: "invalid token".into(),
            }
        } else if version != PROTOCOL_VERSION {
            let why =
                format!("server speaks Remora protocol {PROTOCOL_VERSION}, client speaks {version}");
            ServerDecision::Refuse {
                reply: server_hello(Outcome::VersionMismatch, why.as_bytes()),
                why,
            }
        } else {
            ServerDecision::Accept {
                reply: std::mem::take(&mut self.accept),
                rest: self.buf[10 + len..].to_vec(),
            }
        };
        Some(Ok(decision))
    }
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

    fn run(token: &str, server_token: &str, tweak: impl Fn(&mut Vec<u8>)) -> Result<Accepted, HandshakeError> {
        let (mut client, mut hello) = ClientHandshake::new(token);
        tweak(&mut hello);
        let n = hello.len();
        hello.extend_from_slice(b"first request");
        let mut server = ServerHandshake::new(server_token, &info());
        // Byte by byte: the server may not decide before the hello is whole.
        for b in &hello[..n - 1] {
            if let Some(d) = server.poll(std::slice::from_ref(b)) {
                assert!(d.is_err(), "decided early");
                return Err(d.unwrap_err());
            }
        }
        let decision = server.poll(&hello[n - 1..]);
        let reply = match decision.expect("a whole hello decides") {
            Ok(ServerDecision::Accept { reply, rest }) => {
                assert_eq!(rest, b"first request", "bytes after the hello are kept");
                reply
            }
            Ok(ServerDecision::Refuse { reply, .. }) => reply,
            Err(e) => return Err(e),
        };
        let (last, most) = reply.split_last().unwrap();
        assert!(client.poll(most).is_none());
        client.poll(std::slice::from_ref(last)).unwrap()
    }

    #[test]
    fn state_machines_accept_the_right_token() {
        let a = run("secret", "secret", |_| {}).unwrap();
        assert_eq!(a.info, info());
        assert!(a.rest.is_empty());
    }

    #[test]
    fn state_machines_refuse_a_wrong_token_before_looking_at_the_version() {
        let bump = |h: &mut Vec<u8>| h[4..8].copy_from_slice(&77u32.to_le_bytes());
        let e = run("guess", "secret", bump).unwrap_err();
        assert!(matches!(e, HandshakeError::BadToken(ref m) if m.contains("invalid token")), "{e}");
        let e = run("secret", "secret", bump).unwrap_err();
        assert_eq!(e, HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: PROTOCOL_VERSION });
        let e = run("secret", "secret", |h| h[0] = b'X').unwrap_err();
        assert_eq!(e, HandshakeError::NotRemora);
    }
}
