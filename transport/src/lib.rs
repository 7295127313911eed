//! Remora over QUIC.
//!
//! QUIC/TLS 1.3 endpoints for both sides, tuned as measured on loopback and LAN ([`endpoint`]),
//! the server certificate pinned by its SHA-256 from the connection file, and the thin drivers
//! that pump `remora-protocol`'s sans-IO state machines over one quinn stream:
//! [`client::Link`] (the shim's connection, and a pool's links to its members) and
//! [`server::accept`] with [`server::Calls`] (a server's side of one connection).
//!
//! What calls mean is decided elsewhere: the protocol crate decides batching, reply order and
//! deferred errors; the server decides what a request does. This crate only moves bytes.

pub mod client;
pub mod congestion;
pub mod endpoint;
pub mod server;

pub use endpoint::{EndpointError, Identity};
