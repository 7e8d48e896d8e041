//! db_proxy's request handler over a SQLite store, fed arbitrary requests
//! singly and in group-commit batches. The store is made once per process
//! (under this package's target dir, deleted with it) and reused by every
//! input, as a long-lived daemon's would be.
#![no_main]

use std::sync::OnceLock;

use daemons::fuzzing::DbProxyFuzz;

fn fixture() -> &'static DbProxyFuzz {
    static FIXTURE: OnceLock<(tempfile::TempDir, DbProxyFuzz)> = OnceLock::new();
    let (_, fuzz) = FIXTURE.get_or_init(|| {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).expect("target dir");
        let dir = tempfile::Builder::new()
            .prefix("db_proxy-store-")
            .tempdir_in(base)
            .expect("temp dir");
        let fuzz = DbProxyFuzz::open(dir.path()).expect("store");
        (dir, fuzz)
    });
    fuzz
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| fixture().run(data));
