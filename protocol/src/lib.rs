//! Remora's wire protocol.
//!
//! The messages a client (the shim) and a server exchange, how they are framed, the versioned
//! handshake that opens every connection, the connection file a server writes for its clients,
//! and (in [`endpoint`], the only module that touches sockets) the QUIC/TLS set-up both sides
//! share. Everything except [`endpoint`] is sans-IO: bytes in, bytes out, tested without a
//! network.
//!
//! This crate knows nothing of CUDA execution: it carries handles, addresses and byte counts,
//! and CUDA status codes as the open newtype [`CuStatus`].
#![forbid(unsafe_code)]

pub mod connection;
pub mod endpoint;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod messages;
pub mod status;

pub use connection::ConnectionFile;
pub use frame::{Frame, FrameDecoder, FrameError, FramePrefix};
pub use messages::{Reply, ReplyBody, Request};
pub use status::CuStatus;

/// Bumped whenever a message changes shape: peers of different versions refuse each other in
/// the handshake with a message, instead of misreading each other's bytes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Opens every handshake in both directions.
pub const MAGIC: [u8; 4] = *b"RMRA";

/// ALPN protocol name for QUIC.
pub const ALPN: &[u8] = b"remora/1";
