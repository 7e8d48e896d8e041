//! Replays the committed corpus through the fuzz entry points on stable, so
//! the targets cannot rot: `cargo test --manifest-path teamtalk-proto/fuzz/Cargo.toml`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        run(&data);
        n += 1;
    }
    assert!(n > 0, "empty corpus for {target}");
}

#[test]
fn decode_stream_corpus() {
    replay("decode_stream", teamtalk_proto::fuzzing::decode_stream);
}

#[test]
fn decode_bodies_corpus() {
    replay("decode_bodies", teamtalk_proto::fuzzing::decode_bodies);
}
