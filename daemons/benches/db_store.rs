//! Messages stored per second by db_proxy's SQLite store with group commit.
//!
//! Each iteration stores one batch of single-chat messages with
//! `Store::store_messages` (one durable transaction: WAL, `synchronous=FULL`,
//! so one fsync per batch). Batch 1 is what one-message-per-transaction
//! storing costs; 16 and 256 are what the db_proxy worker reaches when
//! requests queue up. The database lives under the target directory, on a
//! real disk, because a tmpfs would make fsync free and the numbers
//! meaningless. divan reports the rate as items (messages) per second.
//!
//! Run with `cargo bench -p teamtalk-daemons --bench db_store`.

use daemons::password::HashParams;
use daemons::store::{NewMessage, SessionType, SqliteStore, Store, StoreOptions};

fn main() {
    divan::main();
}

fn messages(n: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|i| {
            // Several conversations, both directions, a typical encrypted
            // text body (~64 bytes of base64).
            let a = 1 + (i % 8) as u32;
            let (from, to) = if i % 2 == 0 {
                (a, a + 100)
            } else {
                (a + 100, a)
            };
            NewMessage {
                from,
                to,
                session_type: SessionType::Single,
                msg_type: 1,
                create_time: 1_795_521_600,
                data: vec![b'Q'; 64],
                dedupe_key: None,
            }
        })
        .collect()
}

#[divan::bench(args = [1, 16, 256], sample_count = 20, sample_size = 4)]
fn store_messages(bencher: divan::Bencher<'_, '_>, batch: usize) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let store = SqliteStore::open_with(
        dir.path(),
        StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            ..StoreOptions::default()
        },
    )
    .expect("open store");
    let msgs = messages(batch);
    bencher
        .counter(divan::counter::ItemsCount::new(batch))
        .bench_local(|| {
            let results = store.store_messages(&msgs).expect("batch commit");
            assert!(results.iter().all(Result::is_ok));
            results
        });
}
