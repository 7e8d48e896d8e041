//! db_proxy's request handler over a SQLite store, fed arbitrary requests
//! singly and in group-commit batches. The store is shared by a run of
//! inputs, as a long-lived daemon's would be, and made afresh every
//! [`FRESH_EVERY`] inputs: stored messages pile up (an on-disk store
//! reached 2.7 GB in a 10-minute run), and libFuzzer's RSS limit must not
//! fire on that. It is in memory: on disk every transaction waits for an
//! fsync (`synchronous=FULL`), which held the target to about ten inputs a
//! second; the SQL is the same. The corpus replay test uses a store on
//! disk.
#![no_main]

use std::sync::{Mutex, PoisonError};

use daemons::fuzzing::DbProxyFuzz;

/// Inputs one store serves before it is replaced.
const FRESH_EVERY: u32 = 1000;

static FIXTURE: Mutex<Option<(u32, DbProxyFuzz)>> = Mutex::new(None);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut slot = FIXTURE.lock().unwrap_or_else(PoisonError::into_inner);
    if slot
        .as_ref()
        .is_none_or(|(served, _)| *served >= FRESH_EVERY)
    {
        *slot = Some((0, DbProxyFuzz::in_memory().expect("store")));
    }
    if let Some((served, fuzz)) = slot.as_mut() {
        *served += 1;
        fuzz.run(data);
    }
});
