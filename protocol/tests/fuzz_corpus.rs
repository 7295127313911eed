//! Runs the frame fuzz target over its committed corpus, so CI replays every input that ever
//! mattered without a fuzzer.

use std::path::Path;

#[test]
fn frame_corpus_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/frames");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        remora_protocol::fuzzing::frames(&data);
        n += 1;
    }
    assert!(n >= 10, "corpus has only {n} inputs");
}
