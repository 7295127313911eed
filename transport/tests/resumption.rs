//! Connection set-up over real QUIC on loopback, both ends in this process: a second
//! connection to the same server resumes its TLS session and sends its hello as 0-RTT data,
//! answered with the server's first flight; a server that lost its tickets (a restart, another
//! process with the same certificate) refuses the early hello, and the client sends it again.

use std::net::SocketAddr;
use std::time::Duration;

use remora_protocol::messages::ServerInfo;
use remora_protocol::ConnectionFile;
use remora_transport::{client, endpoint, server, Identity};

const TOKEN: &str = "resumption-test-token";

/// A server endpoint that accepts every session with `info`, until dropped.
struct Served {
    endpoint: quinn::Endpoint,
    file: ConnectionFile,
}

impl Served {
    fn start(id: &Identity) -> Self {
        let endpoint = endpoint::server("127.0.0.1:0".parse().unwrap(), id).unwrap();
        let address: SocketAddr = endpoint.local_addr().unwrap();
        let ep = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = server::accept(incoming).await else {
                        return;
                    };
                    let Ok(hello) =
                        server::hello(&conn, vec![TOKEN.into()], Duration::from_secs(5)).await
                    else {
                        return;
                    };
                    let info = ServerInfo {
                        driver_version: 12090,
                        server_name: "resumption".into(),
                        devices: Vec::new(),
                        lease: 0,
                    };
                    if let Ok(mut calls) = hello.accept(&info).await {
                        while let Ok(Some(_)) = calls.next().await {}
                    }
                });
            }
        });
        let file = ConnectionFile {
            address,
            cert_sha256: id.fingerprint(),
            token: TOKEN.into(),
            emulated: None,
        };
        Self { endpoint, file }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"done");
    }
}

async fn connect(file: &ConnectionFile) -> Result<client::Connected, client::ConnectError> {
    client::connect(file, &Default::default(), Duration::from_secs(5), |_| {}).await
}

/// Connects until a connection resumes (the tickets follow the first handshake, so the second
/// try may come before they did); returns how many tries that took.
async fn resumed_within(file: &ConnectionFile, tries: usize) -> Option<usize> {
    for n in 1..=tries {
        let c = connect(file).await.expect("connect");
        assert_eq!(c.info.server_name, "resumption");
        if c.zero_rtt {
            return Some(n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_sends_its_hello_as_0rtt() {
    let id = Identity::generate().unwrap();
    let served = Served::start(&id);
    let first = connect(&served.file).await.expect("connect");
    assert!(
        !first.zero_rtt,
        "a first connection has no ticket to resume"
    );
    let n = resumed_within(&served.file, 5).await;
    assert!(n.is_some(), "no connection resumed with 0-RTT in 5 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_its_tickets_gets_the_hello_again() {
    let id = Identity::generate().unwrap();
    let before = Served::start(&id);
    connect(&before.file).await.expect("connect");
    assert!(resumed_within(&before.file, 5).await.is_some());
    // Tickets in hand, the client meets another server with the same certificate: it offers
    // a ticket and an early hello, the server refuses both, and the session still starts.
    let after = Served::start(&id);
    let c = connect(&after.file)
        .await
        .expect("connect after the early hello was refused");
    assert!(!c.zero_rtt);
    assert_eq!(c.info.server_name, "resumption");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_on_a_resumed_connection_too() {
    let id = Identity::generate().unwrap();
    let served = Served::start(&id);
    connect(&served.file).await.expect("connect");
    assert!(resumed_within(&served.file, 5).await.is_some());
    let mut wrong = served.file.clone();
    wrong.token = "not-the-token".into();
    let e = match connect(&wrong).await {
        Ok(_) => panic!("a wrong token was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("token"), "{e}");
}
