//! `--metrics ADDR`: the Prometheus text a server or pool renders, over a minimal HTTP/1.1
//! responder (one request per connection, `GET /metrics` only), so no HTTP stack is needed for
//! the one page a scraper asks for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Renders the page at the moment of the scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Longest request head read; scrapers send a few hundred bytes.
const MAX_HEAD: usize = 8192;
/// Scrapes answered at once; more wait for their turn.
const MAX_SCRAPES: usize = 16;

/// Binds `addr` (an error here, where the operator sees it) and serves scrapes in the
/// background of the current runtime.
pub async fn serve(addr: SocketAddr, render: Render) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, render)).await;
            });
        }
    });
    Ok(local)
}

async fn answer(mut stream: tokio::net::TcpStream, render: Render) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "remora serves its metrics at /metrics\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".into(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}
