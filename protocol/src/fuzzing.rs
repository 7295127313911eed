//! Bodies of the fuzz targets (`fuzz/`), kept here so the corpus also runs as an ordinary test.
//! They drive the same state machines production uses.

use bytes::Bytes;

use crate::client::{ClientConn, Sink};
use crate::handshake::{ClientHandshake, ServerHandshake};
use crate::messages::{decode, Reply, Request, ServerInfo, SessionRequest};
use crate::server::ServerConn;
use crate::ConnectionFile;

struct Discard;

impl Sink for Discard {
    fn write(&mut self, _dst: u64, _offset: u64, _bytes: &[u8]) {}
}

/// Feeds `data`, in two pieces, to a server's end as a client's requests and to a client's end
/// (with two replies owed, one carrying data) as a server's replies. Must never panic, whatever
/// the bytes.
pub fn frames(data: &[u8]) {
    let (a, b) = halves(data);

    let mut server = ServerConn::new();
    for piece in [a, b] {
        server.feed(Bytes::copy_from_slice(piece));
        while let Ok(Some(_)) = server.poll_event() {}
    }

    let mut client = ClientConn::new();
    let _ = client.post_read(&Request::Flush, 0, 16);
    let _ = client.call(&Request::Flush, &[], Some((64, 8)));
    for piece in [a, b] {
        let _ = client.handle_bytes(Bytes::copy_from_slice(piece), &mut Discard);
    }
}

/// The two pieces a target feeds its input in: the first byte chooses where to cut, so the
/// fuzzer explores every split of a message across reads.
fn halves(data: &[u8]) -> (&[u8], &[u8]) {
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    data.split_at(split)
}

/// Every message type a peer decodes from the network, from arbitrary bytes: rkyv's checks
/// must refuse what is not a valid archive, never read out of bounds or panic.
pub fn messages(data: &[u8]) {
    let _ = decode::<Request>(data);
    let _ = decode::<Reply>(data);
    let _ = decode::<ServerInfo>(data);
    let _ = decode::<SessionRequest>(data);
}

/// Both ends of the handshake fed arbitrary bytes in two pieces, then drained: each must
/// answer, refuse or wait, and never panic or loop.
pub fn handshake(data: &[u8]) {
    let (a, b) = halves(data);
    let mut server = ServerHandshake::new("fuzz-token");
    let mut client = ClientHandshake::new("fuzz-token", &SessionRequest::default()).0;
    for piece in [a, b] {
        let _ = server.poll(piece);
        // A client keeps reading queue places until accepted; each needs new bytes, so a
        // bounded number of polls drains what was fed.
        let mut more = client.poll(piece);
        for _ in 0..data.len() + 1 {
            match more {
                Some(Ok(crate::handshake::ClientEvent::Queued(_))) => more = client.poll(&[]),
                _ => break,
            }
        }
    }
}

/// The connection-file parser on arbitrary text.
pub fn connection_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ConnectionFile::parse(text, "fuzz");
    }
}
