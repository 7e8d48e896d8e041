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
fn session_steps_corpus() {
    replay("session_steps", teamtalk_conn::fuzzing::run_session_steps);
}

#[test]
fn link_steps_corpus() {
    replay("link_steps", teamtalk_conn::fuzzing::run_link_steps);
}

#[test]
fn http_steps_corpus() {
    replay("http_steps", teamtalk_conn::fuzzing::run_http_steps);
}

#[test]
fn tls_session_steps_corpus() {
    replay(
        "tls_session_steps",
        teamtalk_conn::fuzzing::run_tls_session_steps,
    );
}

#[test]
fn tls_server_bytes_corpus() {
    replay(
        "tls_server_bytes",
        teamtalk_conn::fuzzing::run_tls_server_bytes,
    );
}

#[test]
fn client_steps_corpus() {
    replay("client_steps", teamtalk_conn::fuzzing::run_client_steps);
}
