//! Replays every committed corpus file through its target's entry point,
//! so `cargo test` on stable keeps the seeds (and any crash reproducer
//! added to the corpus) passing without libFuzzer.

use std::fs;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        run(&data);
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}

#[test]
fn msfs_upload_corpus() {
    replay("msfs_upload", teamtalk_daemons_fuzz::run_msfs_upload);
}
