//! `remora-relay`: a simulated network between a Remora client and server, for machines whose
//! kernel has no `tc netem`.
//!
//! ```text
//! remora-relay --listen 127.0.0.1:5555 --upstream 127.0.0.1:4433 --delay-ms 50 \
//!     [--jitter-ms 1] [--rate-mbit 100] [--loss 0.01] [--queue-kib 4096] [--seed 1]
//! ```
//!
//! Every option applies to each direction, so `--delay-ms 50` is a 100 ms round trip. Point a
//! copy of the server's connection file (its `address = ` line) at the `--listen` address. The
//! first line printed is `remora-relay listening on ADDR`; it runs until interrupted, then
//! prints its counters.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use remora_benches::{DirectionStats, Link, Relay, RelayConfig};

/// Relays UDP (QUIC) datagrams to one server, adding delay, jitter, a bandwidth cap and loss
/// each way.
#[derive(Parser, Debug)]
#[command(name = "remora-relay", version)]
struct Args {
    /// Address clients send to (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The server's address (host:port).
    #[arg(long)]
    upstream: String,
    /// One-way delay in milliseconds, each way.
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Uniform jitter of the one-way delay (+/-), in milliseconds; never reorders.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Bandwidth cap in Mbit/s (10^6 bits), each way; none if absent.
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// Probability of losing a datagram, each way, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Router queue in KiB in front of the capped link (default: twice the bandwidth-delay
    /// product, at least 256 KiB).
    #[arg(long)]
    queue_kib: Option<u64>,
    /// Seed for jitter and loss (default: random).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream = args
        .upstream
        .to_socket_addrs()
        .with_context(|| format!("resolving --upstream {}", args.upstream))?
        .next()
        .with_context(|| format!("--upstream {} has no address", args.upstream))?;
    let rate_bytes_per_s = match args.rate_mbit {
        None => None,
        Some(mbit) if mbit.is_finite() && mbit > 0.0 => Some((mbit * 1e6 / 8.0).round() as u64),
        Some(mbit) => bail!("--rate-mbit {mbit} must be above 0"),
    };
    let link = Link {
        delay: millis(args.delay_ms, "--delay-ms")?,
        jitter: millis(args.jitter_ms, "--jitter-ms")?,
        rate_bytes_per_s,
        loss: args.loss,
        queue_bytes: args.queue_kib.map(|kib| kib * 1024),
    };
    let mut config = RelayConfig::symmetric(args.listen, upstream, link);
    config.seed = args.seed;
    let relay = Relay::start(config).context("starting the relay")?;
    println!("remora-relay listening on {}", relay.local_addr());
    println!(
        "forwarding to {upstream}; each way: delay {} ms, jitter +/-{} ms, rate {}, loss {}",
        args.delay_ms,
        args.jitter_ms,
        args.rate_mbit
            .map_or("uncapped".to_string(), |m| format!("{m} Mbit/s")),
        args.loss,
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(wait_for_signal())?;
    let stats = relay.stats();
    drop(relay);
    eprintln!("remora-relay: {} clients", stats.clients);
    print_direction("client -> server", &stats.to_upstream);
    print_direction("server -> client", &stats.to_client);
    Ok(())
}

fn millis(ms: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .with_context(|| format!("{flag} {ms} is not a non-negative number of milliseconds"))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

fn print_direction(name: &str, s: &DirectionStats) {
    eprintln!(
        "remora-relay: {name}: forwarded {} datagrams ({} bytes); dropped {} ({} bytes): \
         {} lost, {} queue full, {} failed",
        s.forwarded_datagrams,
        s.forwarded_bytes,
        s.dropped_datagrams,
        s.dropped_bytes,
        s.lost_datagrams,
        s.overflowed_datagrams,
        s.failed_datagrams,
    );
}
