//! Bodies of the fuzz targets (`fuzz/`), kept here so the corpus also runs as an ordinary test.

use crate::frame::FrameDecoder;
use crate::messages::{decode, Reply, Request};

/// Feeds `data` to the frame decoder in two pieces and decodes every frame as a request and
/// as a reply. Must never panic, whatever the bytes.
pub fn frames(data: &[u8]) {
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut d = FrameDecoder::new();
    d.feed(&data[..split]);
    for chunk in [&data[split..], &[][..]] {
        while let Ok(Some(f)) = d.next_frame() {
            let _ = decode::<Request>(&f.header);
            let _ = decode::<Reply>(&f.header);
        }
        d.feed(chunk);
    }
}
