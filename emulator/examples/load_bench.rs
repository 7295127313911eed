//! PTX load speed (parse + lower) in MB/s over the test corpus.
//! Run with `cargo run --release -p remora-emulator --example load_bench`.

use std::time::Instant;

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ptx");
    let mut texts = Vec::new();
    for e in std::fs::read_dir(dir).expect("corpus") {
        let p = e.expect("entry").path();
        texts.push(std::fs::read(p).expect("read"));
    }
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let rounds = 50;
    let t = Instant::now();
    for _ in 0..rounds {
        for text in &texts {
            remora_emulator::Module::load(text, 80).expect("load");
        }
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "loaded {:.1} MB of PTX in {:.2} s: {:.1} MB/s",
        (bytes * rounds) as f64 / 1e6,
        dt,
        (bytes * rounds) as f64 / 1e6 / dt
    );
}
