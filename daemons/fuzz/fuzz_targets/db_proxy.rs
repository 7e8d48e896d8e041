//! db_proxy's request handler over a SQLite store, fed arbitrary requests
//! singly and in group-commit batches. The store is made once per process
//! and reused by every input, as a long-lived daemon's would be. It is in
//! memory: on disk every transaction waits for an fsync
//! (`synchronous=FULL`), which held the target to about ten inputs a
//! second; the SQL is the same. The corpus replay test uses a store on
//! disk.
#![no_main]

use std::sync::OnceLock;

use daemons::fuzzing::DbProxyFuzz;

fn fixture() -> &'static DbProxyFuzz {
    static FIXTURE: OnceLock<DbProxyFuzz> = OnceLock::new();
    FIXTURE.get_or_init(|| DbProxyFuzz::in_memory().expect("store"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| fixture().run(data));
