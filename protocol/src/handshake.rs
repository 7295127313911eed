//! The versioned handshake that opens every connection, as two small state machines.
//!
//! Its fixed part is raw bytes, not rkyv, so that peers of *different* protocol versions can
//! still read each other's hello and say clearly why they cannot talk.
//!
//! ```text
//! client: MAGIC | u32 version | u16 token_len | token | u32 request_len | request (rkyv SessionRequest)
//! server: MAGIC | u32 version | u8 outcome | u32 body_len | body
//!         (outcome 0: body is rkyv ServerInfo; 4: body is the u32 place in the queue, and
//!          another server hello follows; otherwise body is a UTF-8 message)
//! ```
//!
//! The server's policy: the token is checked before anything else, the version included, so an
//! unauthenticated peer learns nothing but that it was refused. A pool may then keep the client
//! waiting in its queue (outcome 4, repeated as the place changes) before it accepts.

use crate::messages::{decode, encode, ServerInfo, SessionRequest};
use crate::{FrameError, MAGIC, PROTOCOL_VERSION};

/// What a server answers a hello with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Accepted = 0,
    VersionMismatch = 1,
    BadToken = 2,
    Refused = 3,
    /// Not yet: the client waits in a queue; the body is its place (1 is next).
    Queued = 4,
    /// No GPU can be given: none could ever satisfy the request, or the queue timed out.
    NoDevice = 5,
}

/// Longest token accepted.
pub const MAX_TOKEN: usize = 1024;
/// Longest session request accepted.
pub const MAX_REQUEST: usize = 4096;

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
    #[error("no GPU for this session: {0}")]
    NoDevice(String),
    #[error("malformed handshake: {0}")]
    Malformed(String),
}

pub fn client_hello(token: &str, request: &SessionRequest) -> Vec<u8> {
    let token = &token.as_bytes()[..token.len().min(MAX_TOKEN)];
    let request = encode(request);
    let mut out = Vec::with_capacity(14 + token.len() + request.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&(token.len() as u16).to_le_bytes());
    out.extend_from_slice(token);
    out.extend_from_slice(&(request.len() as u32).to_le_bytes());
    out.extend_from_slice(&request);
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

/// Tells a waiting client its place in the queue (1: next).
pub fn server_queued(place: u32) -> Vec<u8> {
    server_hello(Outcome::Queued, &place.to_le_bytes())
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

/// What a client learns from one server hello.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerAnswer {
    Accepted(ServerInfo),
    Queued(u32),
}

/// Interprets a complete server hello body.
pub fn finish_server_hello(
    version: u32,
    outcome: u8,
    body: &[u8],
) -> Result<ServerAnswer, HandshakeError> {
    let text = || String::from_utf8_lossy(body).into_owned();
    match outcome {
        0 if version == PROTOCOL_VERSION => decode::<ServerInfo>(body)
            .map(ServerAnswer::Accepted)
            .map_err(|e: FrameError| HandshakeError::Malformed(e.to_string())),
        0 | 1 => Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        }),
        2 => Err(HandshakeError::BadToken(text())),
        4 => match <[u8; 4]>::try_from(body) {
            Ok(b) => Ok(ServerAnswer::Queued(u32::from_le_bytes(b))),
            Err(_) => Err(HandshakeError::Malformed("queue place".into())),
        },
        5 => Err(HandshakeError::NoDevice(text())),
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

/// The client's side of the handshake: send the hello [`ClientHandshake::new`] gives, then
/// feed what the server sends until [`ClientHandshake::poll`] gives an answer. A `Queued`
/// answer is followed by more; bytes after the accepting hello belong to the call pipeline and
/// are handed back with it.
#[derive(Debug)]
pub struct ClientHandshake {
    buf: Vec<u8>,
}

/// What the client's handshake learned.
#[derive(Debug, PartialEq)]
pub enum ClientEvent {
    /// Waiting in the server's queue, at this place (1: next); more will follow.
    Queued(u32),
    /// The session begins. `rest` arrived after the server's hello.
    Accepted { info: ServerInfo, rest: Vec<u8> },
}

impl ClientHandshake {
    /// The handshake, and the hello to send.
    pub fn new(token: &str, request: &SessionRequest) -> (Self, Vec<u8>) {
        (Self { buf: Vec::new() }, client_hello(token, request))
    }

    /// Feeds bytes from the server; the next answer once one is complete, `None` while more
    /// bytes are needed. Call with an empty slice to take further answers already fed.
    pub fn poll(&mut self, bytes: &[u8]) -> Option<Result<ClientEvent, HandshakeError>> {
        self.buf.extend_from_slice(bytes);
        let prefix: &[u8; 13] = self.buf.get(..13)?.try_into().ok()?;
        let (version, outcome, len) = match parse_server_hello_prefix(prefix) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let body = self.buf.get(13..13 + len)?;
        let answer = finish_server_hello(version, outcome, body);
        let rest = self.buf.split_off(13 + len);
        self.buf = Vec::new();
        Some(answer.map(|a| match a {
            ServerAnswer::Queued(place) => {
                self.buf = rest;
                ClientEvent::Queued(place)
            }
            ServerAnswer::Accepted(info) => ClientEvent::Accepted { info, rest },
        }))
    }
}

/// What the server's handshake decided about a client's hello.
#[derive(Debug)]
pub enum ServerDecision {
    /// The token is right and the versions match: the server now accepts
    /// ([`server_accept`]), queues ([`server_queued`]) or refuses the session. `rest` is what
    /// the client sent after its hello.
    Hello {
        request: SessionRequest,
        rest: Vec<u8>,
        /// Which of the server's tokens the client presented (its index).
        token: usize,
    },
    /// Send `reply`, then close: `why` is for the server's log.
    Refuse { reply: Vec<u8>, why: String },
}

/// The server's side of the handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    tokens: Vec<String>,
    buf: Vec<u8>,
}

impl ServerHandshake {
    pub fn new(token: &str) -> Self {
        Self::with_tokens(vec![token.to_string()])
    }

    /// A server that accepts any of `tokens` (one per person); the decision says which.
    pub fn with_tokens(tokens: Vec<String>) -> Self {
        Self {
            tokens,
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
        // Every token is compared, so the time taken says nothing about which one came close.
        let matched = self.tokens.iter().enumerate().fold(None, |found, (i, t)| {
            if token_matches(t, token) {
                Some(i)
            } else {
                found
            }
        });
        let Some(matched) = matched else {
            return Some(Ok(ServerDecision::Refuse {
                reply: server_hello(
                    Outcome::BadToken,
                    b"invalid token: check the connection file's token",
                ),
                why: "invalid token".into(),
            }));
        };
        if version != PROTOCOL_VERSION {
            let why = format!(
                "server speaks Remora protocol {PROTOCOL_VERSION}, client speaks {version}"
            );
            return Some(Ok(ServerDecision::Refuse {
                reply: server_hello(Outcome::VersionMismatch, why.as_bytes()),
                why,
            }));
        }
        let at = 10 + len;
        let n = u32::from_le_bytes(self.buf.get(at..at + 4)?.try_into().ok()?) as usize;
        if n > MAX_REQUEST {
            return Some(Err(HandshakeError::Malformed(format!(
                "session request of {n} bytes"
            ))));
        }
        let body = self.buf.get(at + 4..at + 4 + n)?;
        Some(
            decode::<SessionRequest>(body)
                .map_err(|e| HandshakeError::Malformed(e.to_string()))
                .map(|request| ServerDecision::Hello {
                    request,
                    rest: self.buf[at + 4 + n..].to_vec(),
                    token: matched,
                }),
        )
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
            lease: 0,
        }
    }

    fn request() -> SessionRequest {
        SessionRequest {
            gpus: 2,
            memory: 1 << 30,
            queue_timeout_ms: 5000,
            observer: false,
            virtual_gpu: 0,
        }
    }

    /// Runs a hello (as `tweak` leaves it) through the server byte by byte, answers as `answer`
    /// says, and returns what the client makes of the answer.
    fn run(
        token: &str,
        server_token: &str,
        tweak: impl Fn(&mut Vec<u8>),
        answer: &[Vec<u8>],
    ) -> Result<Vec<ClientEvent>, HandshakeError> {
        let (mut client, mut hello) = ClientHandshake::new(token, &request());
        tweak(&mut hello);
        let n = hello.len();
        hello.extend_from_slice(b"first request");
        let mut server = ServerHandshake::new(server_token);
        // Byte by byte: the server may not decide before the hello is whole.
        for b in &hello[..n - 1] {
            if let Some(d) = server.poll(std::slice::from_ref(b)) {
                match d {
                    Ok(ServerDecision::Refuse { reply, .. }) => {
                        return client.poll(&reply).unwrap().map(|e| vec![e])
                    }
                    Ok(ServerDecision::Hello { .. }) => panic!("decided early"),
                    Err(e) => return Err(e),
                }
            }
        }
        let reply = match server
            .poll(&hello[n - 1..])
            .expect("a whole hello decides")?
        {
            ServerDecision::Hello {
                request: r, rest, ..
            } => {
                assert_eq!(r, request());
                assert_eq!(rest, b"first request", "bytes after the hello are kept");
                answer.concat()
            }
            ServerDecision::Refuse { reply, .. } => reply,
        };
        let (last, most) = reply.split_last().unwrap();
        let mut events = Vec::new();
        let mut next = client.poll(most);
        loop {
            match next {
                Some(e) => events.push(e?),
                None if events.len() < answer.len().max(1) => {
                    next = client.poll(std::slice::from_ref(last));
                    continue;
                }
                None => return Ok(events),
            }
            next = client.poll(&[]);
        }
    }

    #[test]
    fn the_right_token_is_accepted_after_any_places_in_the_queue() {
        let ev = run("secret", "secret", |_| {}, &[server_accept(&info())]).unwrap();
        assert_eq!(
            ev,
            [ClientEvent::Accepted {
                info: info(),
                rest: vec![]
            }]
        );
        let ev = run(
            "secret",
            "secret",
            |_| {},
            &[server_queued(2), server_queued(1), server_accept(&info())],
        )
        .unwrap();
        assert_eq!(ev[..2], [ClientEvent::Queued(2), ClientEvent::Queued(1)]);
        assert!(matches!(ev[2], ClientEvent::Accepted { .. }));
    }

    #[test]
    fn a_wrong_token_is_refused_before_the_version_is_looked_at() {
        let bump = |h: &mut Vec<u8>| h[4..8].copy_from_slice(&77u32.to_le_bytes());
        let e = run("guess", "secret", bump, &[]).unwrap_err();
        assert!(
            matches!(e, HandshakeError::BadToken(ref m) if m.contains("invalid token")),
            "{e}"
        );
        let e = run("secret", "secret", bump, &[]).unwrap_err();
        assert_eq!(
            e,
            HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION
            }
        );
        let e = run("secret", "secret", |h| h[0] = b'X', &[]).unwrap_err();
        assert_eq!(e, HandshakeError::NotRemora);
    }

    #[test]
    fn no_device_and_refusals_say_why() {
        let e = run(
            "s",
            "s",
            |_| {},
            &[
                server_queued(1),
                server_hello(Outcome::NoDevice, b"the queue timed out after 5 s"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e,
            HandshakeError::NoDevice("the queue timed out after 5 s".into())
        );
        let mut reply = server_hello(Outcome::VersionMismatch, b"server speaks 99");
        reply[4..8].copy_from_slice(&99u32.to_le_bytes());
        let (v, o, len) = parse_server_hello_prefix(reply[..13].try_into().unwrap()).unwrap();
        assert_eq!(
            finish_server_hello(v, o, &reply[13..13 + len]).unwrap_err(),
            HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 99
            }
        );
        assert_eq!(
            parse_client_hello_prefix(b"HTTP/1.1 2"),
            Err(HandshakeError::NotRemora)
        );
        assert!(token_matches("secret", b"secret"));
        assert!(!token_matches("secret", b"secreT"));
    }

    #[test]
    fn a_server_of_many_tokens_says_which_one_was_presented() {
        let tokens = vec!["alice-token".to_string(), "bob-token".to_string()];
        let mut server = ServerHandshake::with_tokens(tokens.clone());
        match server.poll(&client_hello("bob-token", &request())) {
            Some(Ok(ServerDecision::Hello { token, .. })) => assert_eq!(token, 1),
            other => panic!("{other:?}"),
        }
        let mut server = ServerHandshake::with_tokens(tokens);
        assert!(matches!(
            server.poll(&client_hello("carol-token", &request())),
            Some(Ok(ServerDecision::Refuse { .. }))
        ));
        let mut nobody = ServerHandshake::with_tokens(Vec::new());
        assert!(matches!(
            nobody.poll(&client_hello("", &request())),
            Some(Ok(ServerDecision::Refuse { .. }))
        ));
    }

    #[test]
    fn an_oversized_session_request_is_malformed() {
        let mut hello = client_hello("t", &request());
        let at = 10 + 1;
        hello[at..at + 4].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let mut server = ServerHandshake::new("t");
        assert!(matches!(
            server.poll(&hello),
            Some(Err(HandshakeError::Malformed(_)))
        ));
    }
}
