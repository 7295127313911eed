//! Benchmarks and the tools they share; each bench binary prints its baseline and the ratio.
//!
//! The library holds what benchmarks and tests need from outside Remora: [`relay`], a UDP relay
//! that puts a simulated network (delay, jitter, a bandwidth cap, loss) between a QUIC client
//! and server where the kernel has no `tc netem`, and [`harness`], what the bench binaries
//! share to run the release `remora` (paths, C programs built against the release shim, a
//! `remora serve` child, temporary folders, statistics). It does not measure anything itself.
//! Main types: [`Relay`], [`RelayConfig`], [`Link`], [`RelayHandle`], [`harness::Paths`],
//! [`harness::Server`].

pub mod harness;
pub mod relay;

pub use relay::{DirectionStats, Link, Relay, RelayConfig, RelayHandle, RelayStats};
