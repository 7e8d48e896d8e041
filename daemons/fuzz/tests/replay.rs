//! Replays every committed corpus file through its target's entry point,
//! so `cargo test` on stable keeps the seeds (and any crash reproducer
//! added to the corpus) passing without libFuzzer.

use std::fs;
use std::path::Path;

fn replay(target: &str, run: impl Fn(&[u8])) {
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

/// Every folder under corpus/ is some target's: a new target's corpus
/// cannot be committed without a replay test here.
#[test]
fn every_corpus_is_replayed() {
    let known = [
        "msfs_upload",
        "msg_app",
        "route_app",
        "login_app",
        "db_proxy",
        "message_log",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for entry in fs::read_dir(&dir).expect("corpus dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            known.contains(&name.as_ref()),
            "corpus/{name} is not replayed"
        );
    }
}

#[test]
fn msfs_upload_corpus() {
    replay("msfs_upload", teamtalk_daemons_fuzz::run_msfs_upload);
}

#[test]
fn msg_app_corpus() {
    replay("msg_app", daemons::fuzzing::run_msg_app);
}

#[test]
fn route_app_corpus() {
    replay("route_app", daemons::fuzzing::run_route_app);
}

#[test]
fn login_app_corpus() {
    replay("login_app", daemons::fuzzing::run_login_app);
}

#[test]
fn db_proxy_corpus() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fuzz = daemons::fuzzing::DbProxyFuzz::open(dir.path()).expect("store");
    replay("db_proxy", |data| fuzz.run(data));
}

#[test]
fn message_log_corpus() {
    replay("message_log", daemons::fuzzing::run_message_log);
}
