//! Remora's wire protocol, sans-IO (quinn-proto is the model).
//!
//! The messages a client (the shim, or a pool reaching its members) and a server exchange
//! ([`messages`]), how they are framed ([`frame`], one decoder for both ends), the versioned
//! handshake as two small state machines ([`handshake`]), and the two ends of the call
//! pipeline as state machines driven by bytes: [`ClientConn`] (batching, call classes, reply
//! order, pending device-to-host reads, deferred errors) and [`ServerConn`] (typed calls and
//! payload chunks in, replies out). Also the connection file a server writes for its clients,
//! and the tokens file that says who may use a server and how much of it.
//!
//! This crate does no I/O on networks and has no async runtime: `remora-transport` pumps these
//! state machines over QUIC, and the tests here pump them through memory. It knows nothing of
//! CUDA execution: it carries handles, addresses and byte counts, and CUDA status codes as the
//! open newtype [`CuStatus`].
#![forbid(unsafe_code)]

pub mod access;
pub mod client;
pub mod connection;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod messages;
pub mod server;
pub mod size;
pub mod status;
pub mod tokens;

pub use client::{ClientConn, ConnError, Flush, Sink, Ticket};
pub use connection::ConnectionFile;
pub use frame::{FrameDecoder, FrameError, FrameEvent, FramePrefix};
pub use messages::{Reply, ReplyBody, Request};
pub use server::{ServerConn, ServerEvent};
pub use status::CuStatus;
pub use tokens::{Limits, TokenEntry, TokensFile};

/// Bumped whenever a message changes shape: peers of different versions refuse each other in
/// the handshake with a message, instead of misreading each other's bytes.
pub const PROTOCOL_VERSION: u32 = 6;

/// Opens every handshake in both directions.
pub const MAGIC: [u8; 4] = *b"RMRA";

/// ALPN protocol name for QUIC.
pub const ALPN: &[u8] = b"remora/1";
