//! Messages stored per second by db_proxy's SQLite store with group commit,
//! and what a group message costs by the size of its group.
//!
//! Each iteration stores one batch of single-chat messages with
//! `Store::store_messages` (one durable transaction: WAL, `synchronous=FULL`,
//! so one fsync per batch). Batch 1 is what one-message-per-transaction
//! storing costs; 16 and 256 are what the db_proxy worker reaches when
//! requests queue up. The database lives under the target directory, on a
//! real disk, because a tmpfs would make fsync free and the numbers
//! meaningless. divan reports the rate as items (messages) per second.
//!
//! `store_group_messages` stores group messages (0x11) into a TMP group of
//! 10, 100 or 1,000 members, one message per transaction (what a quiet
//! group costs: one fsync each) and 64 per transaction (the CPU cost per
//! message once commits are shared). Before measuring it checks, by
//! counting every table's rows, that a group message adds the same rows
//! whatever the group's size: the store writes per message, never per
//! member. `store_group_messages_64_tmpfs` repeats the batched case on
//! `/dev/shm`, where fsync is free, to show the CPU work alone.
//!
//! Run with `cargo bench -p teamtalk-daemons --bench db_store`.

use daemons::password::{HashParams, md5_hex};
use daemons::store::{
    DB_FILE_NAME, GroupType, NewGroup, NewMessage, SessionType, SqliteStore, Store, StoreOptions,
};

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

fn open_store(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open_with(
        dir,
        StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

/// Rows in every table of the store's database file.
fn rows(dir: &std::path::Path) -> u64 {
    let db = rusqlite::Connection::open(dir.join(DB_FILE_NAME)).expect("open db file");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("list tables");
    tables
        .iter()
        .map(|t| {
            db.query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| {
                r.get::<_, i64>(0)
            })
            .expect("count rows")
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
        .sum()
}

fn group_messages(group: u32, senders: u32, n: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|i| NewMessage {
            from: 1 + (i as u32 % senders),
            to: group,
            session_type: SessionType::Group,
            msg_type: 0x11,
            create_time: 1_795_521_600,
            data: vec![b'Q'; 64],
            dedupe_key: None,
        })
        .collect()
}

/// Rows added by storing 10 group messages into a fresh group of
/// `members`.
fn rows_per_ten_messages(members: u32) -> u64 {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let (store, group) = group_store(dir.path(), members);
    let before = rows(dir.path());
    let results = store
        .store_messages(&group_messages(group, 4, 10))
        .expect("batch commit");
    assert!(results.iter().all(Result::is_ok));
    rows(dir.path()) - before
}

/// A store with users 1..=members in one TMP group; the group's id.
fn group_store(dir: &std::path::Path, members: u32) -> (SqliteStore, u32) {
    let store = open_store(dir);
    store
        .seed_users("m", members, &md5_hex(b"pw"))
        .expect("seed users");
    let group = store
        .create_group(&NewGroup {
            name: format!("bench {members}"),
            avatar: String::new(),
            creator: 1,
            group_type: GroupType::Tmp,
            members: (2..=members).collect(),
        })
        .expect("create group");
    (store, group.id)
}

/// One group message per transaction (one fsync each).
#[divan::bench(args = [10, 100, 1000], sample_count = 20, sample_size = 4)]
fn store_group_message(bencher: divan::Bencher<'_, '_>, members: u32) {
    bench_group(bencher, members, 1, env!("CARGO_TARGET_TMPDIR"));
}

/// 64 group messages per transaction: the per-message work once commits
/// are shared.
#[divan::bench(args = [10, 100, 1000], sample_count = 20, sample_size = 4)]
fn store_group_messages_64(bencher: divan::Bencher<'_, '_>, members: u32) {
    bench_group(bencher, members, 64, env!("CARGO_TARGET_TMPDIR"));
}

/// The same on tmpfs (`/dev/shm`, where fsync costs nothing): the CPU
/// work per message alone, which the disk's flushes hide above.
#[divan::bench(args = [10, 100, 1000], sample_count = 20, sample_size = 4)]
fn store_group_messages_64_tmpfs(bencher: divan::Bencher<'_, '_>, members: u32) {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
    };
    bench_group(bencher, members, 64, base);
}

fn bench_group(
    bencher: divan::Bencher<'_, '_>,
    members: u32,
    batch: usize,
    base: impl AsRef<std::path::Path>,
) {
    // Same rows per message at every size, or the figures mean nothing.
    assert_eq!(
        rows_per_ten_messages(members),
        rows_per_ten_messages(10),
        "a group message of {members} members writes more rows than one of 10"
    );
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let (store, group) = group_store(dir.path(), members);
    let msgs = group_messages(group, 4, batch);
    bencher
        .counter(divan::counter::ItemsCount::new(batch))
        .bench_local(|| {
            let results = store.store_messages(&msgs).expect("batch commit");
            assert!(results.iter().all(Result::is_ok));
            results
        });
}
