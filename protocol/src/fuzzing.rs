//! Bodies of the fuzz targets (`fuzz/`), kept here so the corpus also runs as an ordinary test.
//! They drive the same state machines production uses.

use bytes::Bytes;

use crate::client::{ClientConn, Sink};
use crate::messages::Request;
use crate::server::ServerConn;

struct Discard;

impl Sink for Discard {
    fn write(&mut self, _dst: u64, _offset: u64, _bytes: &[u8]) {}
}

/// Feeds `data`, in two pieces, to a server's end as a client's requests and to a client's end
/// (with two replies owed, one carrying data) as a server's replies. Must never panic, whatever
/// the bytes.
pub fn frames(data: &[u8]) {
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let (a, b) = data.split_at(split);

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
