//! Bulk data over real quinn connections (Remora's endpoint configuration and congestion
//! controller, `remora_transport::endpoint`) through the relay with a rate cap, a delay and
//! random loss: the copy must finish, and a lossy link must not collapse the way Cubic does.
//!
//! `REMORA_QUINN_BULK_TRACE=1` prints the sender's congestion window, round trip and losses
//! every 100 ms; `quinn_bulk_measure` (ignored; run it with `--ignored`) takes the link from
//! `REMORA_QUINN_BULK` (`MIB,MBIT,RTT_MS,LOSS_PERCENT`, default `64,1000,30,1`) and prints
//! what it got.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use remora_benches::{Link, Relay, RelayConfig};
use remora_transport::endpoint::{self, Identity};

const CHUNK: usize = 1 << 20;

struct Outcome {
    seconds: f64,
    /// The sender's congestion window at the end.
    cwnd: u64,
    lost_packets: u64,
    congestion_events: u64,
}

/// Sends `bytes` from a client to a server through a relay with `link` both ways.
fn bulk(bytes: u64, link: Link) -> anyhow::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let id = Identity::generate()?;
        let server = endpoint::server("127.0.0.1:0".parse()?, &id)?;
        let relay = Relay::start(RelayConfig::symmetric(
            "127.0.0.1:0".parse()?,
            server.local_addr()?,
            link,
        ))?;
        let receiver = tokio::spawn(async move {
            let conn = server
                .accept()
                .await
                .ok_or_else(|| anyhow::anyhow!("no client came"))?
                .await?;
            let mut recv = conn.accept_uni().await?;
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            while let Some(n) = recv.read(&mut buf).await? {
                got += n as u64;
            }
            conn.close(0u32.into(), b"done");
            anyhow::Ok(got)
        });
        let relay_addr: SocketAddr = relay.local_addr();
        let client = endpoint::client(relay_addr, id.fingerprint())?;
        let conn = client.connect(relay_addr, endpoint::SERVER_NAME)?.await?;
        let trace = std::env::var_os("REMORA_QUINN_BULK_TRACE").is_some();
        let watcher = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let s = conn.stats();
                    if trace {
                        eprintln!(
                            "{:>6.1} s cwnd {:>9} rtt {:>6.1} ms lost {:>5} events {:>5} sent {:>9} mtu {}",
                            start.elapsed().as_secs_f64(),
                            s.path.cwnd,
                            s.path.rtt.as_secs_f64() * 1e3,
                            s.path.lost_packets,
                            s.path.congestion_events,
                            s.udp_tx.bytes,
                            s.path.current_mtu,
                        );
                    }
                }
            })
        };
        let start = Instant::now();
        let mut send = conn.open_uni().await?;
        let chunk = vec![0x5a_u8; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            send.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        send.finish()?;
        let got = tokio::time::timeout(Duration::from_secs(300), receiver).await???;
        let seconds = start.elapsed().as_secs_f64();
        watcher.abort();
        anyhow::ensure!(got == bytes, "received {got} of {bytes} bytes");
        let s = conn.stats();
        client.close(0u32.into(), b"done");
        drop(relay);
        Ok(Outcome {
            seconds,
            cwnd: s.path.cwnd,
            lost_packets: s.path.lost_packets,
            congestion_events: s.path.congestion_events,
        })
    })
}

fn link(mbit: u64, rtt_ms: f64, loss: f64) -> Link {
    Link {
        delay: Duration::from_secs_f64(rtt_ms / 2e3),
        rate_bytes_per_s: Some(mbit * 125_000),
        loss,
        ..Link::default()
    }
}

/// 48 MiB at 1 Gbit/s and 30 ms with 1 % loss each way (the distance benchmark's lossy link,
/// a smaller copy): the loss-tolerant default got 0.70x of the cap with a window near the
/// bandwidth-delay product (3.75 MB) at the end; quinn's Cubic 0.17-0.29x with a fifth of it.
/// The bars are low, as a loaded machine slows everything, but far above a collapse.
#[test]
fn a_lossy_link_is_not_a_collapse() {
    let bytes = 48u64 << 20;
    let rate = 1000.0 * 125_000.0;
    let bdp = rate * 0.030;
    let o = bulk(bytes, link(1000, 30.0, 0.01)).expect("bulk copy through the relay");
    let ratio = bytes as f64 / o.seconds / rate;
    eprintln!(
        "48 MiB at 1 Gbit/s, 30 ms, 1 % loss: {:.2} s, {ratio:.2}x of the cap, window {} at the end, {} packets lost, {} congestion events",
        o.seconds, o.cwnd, o.lost_packets, o.congestion_events
    );
    assert!(o.lost_packets > 0, "the relay lost nothing");
    assert!(
        o.cwnd as f64 > bdp / 2.0,
        "the window ended at {} bytes, under half the bandwidth-delay product ({bdp})",
        o.cwnd
    );
    assert!(ratio > 0.35, "{ratio:.2}x of the cap");
}

#[test]
#[ignore = "a measurement: run with --ignored, REMORA_QUINN_BULK=MIB,MBIT,RTT_MS,LOSS_PERCENT"]
fn quinn_bulk_measure() {
    let spec = std::env::var("REMORA_QUINN_BULK").unwrap_or_else(|_| "64,1000,30,1".into());
    let v: Vec<f64> = spec.split(',').filter_map(|x| x.parse().ok()).collect();
    assert_eq!(
        v.len(),
        4,
        "REMORA_QUINN_BULK={spec}: want MIB,MBIT,RTT_MS,LOSS_PERCENT"
    );
    let bytes = (v[0] as u64) << 20;
    let o = bulk(bytes, link(v[1] as u64, v[2], v[3] / 100.0)).expect("bulk copy");
    let ratio = bytes as f64 / o.seconds / (v[1] * 125_000.0);
    println!(
        "{spec}: {:.2} s, {ratio:.3}x of the cap, window {} at the end, {} packets lost, {} congestion events",
        o.seconds, o.cwnd, o.lost_packets, o.congestion_events
    );
}
