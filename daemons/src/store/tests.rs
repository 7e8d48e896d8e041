use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use md5::{Digest, Md5};
use proptest::prelude::*;

use super::*;
use crate::password::HashParams;

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<AtomicU32>);

impl TestClock {
    fn new(start: u32) -> Self {
        Self(Arc::new(AtomicU32::new(start)))
    }
    fn set(&self, t: u32) {
        self.0.store(t, Ordering::SeqCst);
    }
    fn options(&self) -> StoreOptions {
        let c = self.0.clone();
        StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            clock: Arc::new(move || c.load(Ordering::SeqCst)),
            applier_nice: 0,
        }
    }
}

fn md5hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn user(name: &str) -> NewUser {
    NewUser {
        name: name.to_owned(),
        nick: format!("{name} nick"),
        sex: 1,
        dept_id: 1,
        avatar: format!("http://avatars/{name}.png"),
        email: format!("{name}@example.com"),
        phone: "555".to_owned(),
        domain: name.to_owned(),
        status: 0,
        sign_info: String::new(),
    }
}

fn msg(from: UserId, to: UserId, body: &str) -> NewMessage {
    NewMessage {
        from,
        to,
        session_type: SessionType::Single,
        msg_type: 1,
        create_time: 1_000,
        data: body.as_bytes().to_vec(),
        dedupe_key: None,
    }
}

/// The message a store call stored now (not a duplicate).
fn new(r: StoreResult<Stored>) -> StoredMessage {
    r.expect("stored")
        .new_message()
        .expect("stored now, not a duplicate")
}

fn temp_store(clock: &TestClock) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_with(dir.path().join("data"), clock.options()).expect("open");
    (dir, store)
}

// ---- model test ----

#[derive(Debug, Clone)]
enum Op {
    Send {
        from: UserId,
        to: UserId,
        body: Vec<u8>,
    },
    Clear {
        reader: UserId,
        peer: UserId,
    },
    List {
        user: UserId,
        peer: UserId,
        begin: MsgId,
        count: u32,
    },
    ById {
        user: UserId,
        peer: UserId,
        ids: Vec<MsgId>,
    },
    Unread {
        user: UserId,
    },
    Sessions {
        user: UserId,
        since: u32,
    },
    Remove {
        user: UserId,
        peer: UserId,
    },
}

fn uid() -> impl Strategy<Value = UserId> {
    1u32..=4
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (uid(), uid(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(from, to, body)| Op::Send { from, to, body }),
        1 => (uid(), uid()).prop_map(|(reader, peer)| Op::Clear { reader, peer }),
        1 => (uid(), uid(), 0u32..12, 0u32..6)
            .prop_map(|(user, peer, begin, count)| Op::List { user, peer, begin, count }),
        1 => (uid(), uid(), proptest::collection::vec(0u32..12, 0..5))
            .prop_map(|(user, peer, ids)| Op::ById { user, peer, ids }),
        1 => uid().prop_map(|user| Op::Unread { user }),
        1 => (uid(), 0u32..40).prop_map(|(user, since)| Op::Sessions { user, since }),
        1 => (uid(), uid()).prop_map(|(user, peer)| Op::Remove { user, peer }),
    ]
}

#[derive(Default)]
struct Model {
    /// (small, big) -> messages in id order (id = index + 1).
    convs: HashMap<(UserId, UserId), Vec<StoredMessage>>,
    /// (reader, peer) -> count.
    unread: HashMap<(UserId, UserId), u32>,
    /// (user, peer) -> (removed, updated).
    sessions: HashMap<(UserId, UserId), (bool, u32)>,
}

impl Model {
    fn conv(&self, a: UserId, b: UserId) -> &[StoredMessage] {
        let key = if a <= b { (a, b) } else { (b, a) };
        self.convs.get(&key).map_or(&[], Vec::as_slice)
    }

    fn latest(&self, a: UserId, b: UserId) -> LatestMessage {
        self.conv(a, b)
            .last()
            .map_or_else(LatestMessage::default, |m| LatestMessage {
                msg_id: m.msg_id,
                from: m.from,
                msg_type: m.msg_type,
                data: m.data.clone(),
            })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let clock = TestClock::new(0);
        let store = SqliteStore::open_in_memory(clock.options()).unwrap();
        let mut model = Model::default();
        for (step, op) in ops.into_iter().enumerate() {
            let now = u32::try_from(step).unwrap() + 1;
            clock.set(now);
            match op {
                Op::Send { from, to, body } => {
                    let sent = NewMessage { from, to, session_type: SessionType::Single, msg_type: 1, create_time: now, data: body, dedupe_key: None };
                    let res = store.store_message(&sent);
                    if from == to {
                        prop_assert!(matches!(res, Err(StoreError::Invalid(_))));
                        continue;
                    }
                    let got = new(res);
                    let key = if from <= to { (from, to) } else { (to, from) };
                    let conv = model.convs.entry(key).or_default();
                    let want = StoredMessage {
                        msg_id: u32::try_from(conv.len()).unwrap() + 1,
                        from, to, msg_type: 1, create_time: now, data: sent.data.clone(),
                    };
                    prop_assert_eq!(&got, &want);
                    conv.push(want);
                    *model.unread.entry((to, from)).or_default() += 1;
                    model.sessions.insert((from, to), (false, now));
                    model.sessions.insert((to, from), (false, now));
                }
                Op::Clear { reader, peer } => {
                    store.clear_unread(reader, peer).unwrap();
                    model.unread.remove(&(reader, peer));
                }
                Op::List { user, peer, begin, count } => {
                    let got = store.message_list(user, peer, begin, count).unwrap();
                    let want: Vec<StoredMessage> = model
                        .conv(user, peer)
                        .iter()
                        .rev()
                        .filter(|m| begin == 0 || m.msg_id <= begin)
                        .take(count as usize)
                        .cloned()
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::ById { user, peer, ids } => {
                    let got = store.messages_by_ids(user, peer, &ids).unwrap();
                    let want: Vec<StoredMessage> = model
                        .conv(user, peer)
                        .iter()
                        .rev()
                        .filter(|m| ids.contains(&m.msg_id))
                        .cloned()
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Unread { user } => {
                    let got = store.unread(user).unwrap();
                    let mut peers: Vec<(UserId, u32)> = model
                        .unread
                        .iter()
                        .filter(|&(&(r, _), &n)| r == user && n > 0)
                        .map(|(&(_, p), &n)| (p, n))
                        .collect();
                    peers.sort_unstable();
                    let want = UnreadSummary {
                        total: peers.iter().map(|&(_, n)| n).sum(),
                        sessions: peers
                            .into_iter()
                            .map(|(peer, count)| UnreadSession {
                                peer,
                                session_type: SessionType::Single,
                                count,
                                latest: model.latest(user, peer),
                            })
                            .collect(),
                    };
                    prop_assert_eq!(got, want);
                }
                Op::Sessions { user, since } => {
                    let got = store.recent_sessions(user, since).unwrap();
                    let mut want: Vec<(u32, UserId)> = model
                        .sessions
                        .iter()
                        .filter(|&(&(u, _), &(removed, updated))| u == user && !removed && updated > since)
                        .map(|(&(_, p), &(_, updated))| (updated, p))
                        .collect();
                    want.sort_unstable_by(|a, b| b.cmp(a));
                    let want: Vec<RecentSession> = want
                        .into_iter()
                        .map(|(updated, peer)| RecentSession {
                            peer,
                            session_type: SessionType::Single,
                            status: 0,
                            updated,
                            latest: model.latest(user, peer),
                        })
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Remove { user, peer } => {
                    let got = store.remove_session(user, peer, SessionType::Single).unwrap();
                    let want = match model.sessions.get_mut(&(user, peer)) {
                        Some(s) if !s.0 => {
                            *s = (true, now);
                            true
                        }
                        _ => false,
                    };
                    prop_assert_eq!(got, want);
                }
            }
        }
        for a in 1..=4 {
            for b in 1..=4 {
                let want = u32::try_from(model.conv(a, b).len()).unwrap();
                let want = if a == b { 0 } else { want };
                prop_assert_eq!(store.latest_msg_id(a, b).unwrap(), want);
            }
        }
    }
}

fn keyed(from: UserId, to: UserId, body: &str, key: u8) -> NewMessage {
    NewMessage {
        dedupe_key: Some(vec![key; 16]),
        ..msg(from, to, body)
    }
}

/// The keys are in the database, written with the message: a resend
/// after db_proxy was killed and restarted is still recognised.
/// Lists stop reading bodies after MAX_LIST_BODY_BYTES (the one that
/// crosses included), so a page of large messages is never read whole.

#[test]
fn opens_with_wal_full_sync_and_schema_version() {
    let clock = TestClock::new(10);
    let (dir, store) = temp_store(&clock);
    assert_eq!(
        store.schema_version().unwrap(),
        SqliteStore::latest_schema_version()
    );
    let conn = store.lock().unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "FULL");
    drop(conn);
    assert!(dir.path().join("data").join(DB_FILE_NAME).exists());
}

#[test]
fn refuses_a_newer_schema() {
    let clock = TestClock::new(10);
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = SqliteStore::open_with(dir.path(), clock.options()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn works_as_a_trait_object() {
    let clock = TestClock::new(10);
    let (_dir, store) = temp_store(&clock);
    let store: Arc<dyn Store> = Arc::new(store);
    let s2 = Arc::clone(&store);
    let id = std::thread::spawn(move || s2.add_department("R&D", 1, 0))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(store.departments_updated_since(0).unwrap()[0].id, id);
}

#[test]
fn argon2_users_log_in_with_md5hex() {
    let clock = TestClock::new(50);
    let (_dir, store) = temp_store(&clock);
    let pw = md5hex(b"correct horse");
    let id = store.add_user(&user("alice"), &pw).unwrap();
    let u = store.verify_login("alice", &pw).unwrap().expect("login ok");
    assert_eq!(u.id, id);
    assert_eq!(u.nick, "alice nick");
    assert_eq!(u.created, 50);
    assert!(
        store
            .verify_login("alice", &md5hex(b"wrong"))
            .unwrap()
            .is_none()
    );
    assert!(store.verify_login("bob", &pw).unwrap().is_none());
    // The stored form is a PHC string, never the md5hex itself.
    let stored: String = store
        .lock()
        .unwrap()
        .query_row("SELECT password FROM user WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains(&pw));
    // Names are unique.
    assert!(matches!(
        store.add_user(&user("alice"), &pw),
        Err(StoreError::NameTaken(n)) if n == "alice"
    ));
}

#[test]
fn data_survives_reopen() {
    let clock = TestClock::new(5);
    let dir = tempfile::tempdir().unwrap();
    let pw = md5hex(b"pw");
    {
        let store = SqliteStore::open_with(dir.path(), clock.options()).unwrap();
        store.add_user(&user("keep"), &pw).unwrap();
        store.add_department("D", 1, 0).unwrap();
        store.store_message(&msg(1, 2, "one")).unwrap();
        store.store_message(&msg(2, 1, "two")).unwrap();
        store.set_device_token(1, 0x11, "t").unwrap();
    }
    let store = SqliteStore::open_with(dir.path(), clock.options()).unwrap();
    assert!(store.verify_login("keep", &pw).unwrap().is_some());
    assert_eq!(store.departments_updated_since(0).unwrap().len(), 1);
    assert_eq!(store.latest_msg_id(1, 2).unwrap(), 2);
    assert_eq!(store.unread(2).unwrap().total, 1);
    assert_eq!(store.device_tokens(&[1]).unwrap().len(), 1);
    let m = new(store.store_message(&msg(1, 2, "three")));
    assert_eq!(m.msg_id, 3, "the sequence continues after reopening");
}

#[test]
fn session_type_wire_values() {
    assert_eq!(SessionType::Single.as_u32(), 1);
    assert_eq!(SessionType::Group.as_u32(), 2);
    assert_eq!(SessionType::from_u32(1), Some(SessionType::Single));
    assert_eq!(SessionType::from_u32(2), Some(SessionType::Group));
    assert_eq!(SessionType::from_u32(0), None);
}

#[test]
fn a_resend_after_reopening_the_store_is_recognised() {
    let clock = TestClock::new(1_000);
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open_with(dir.path(), clock.options()).unwrap();
        let r = store.store_messages(&[keyed(1, 2, "x", 5)]).unwrap();
        assert_eq!(r[0].as_ref().unwrap().msg_id(), 1);
    }
    let store = SqliteStore::open_with(dir.path(), clock.options()).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        SqliteStore::latest_schema_version()
    );
    let r = store.store_messages(&[keyed(1, 2, "x", 5)]).unwrap();
    assert_eq!(r[0].as_ref().unwrap(), &Stored::Duplicate(1));
    assert_eq!(store.latest_msg_id(1, 2).unwrap(), 1);
}

#[test]
fn keys_are_forgotten_after_a_day() {
    let clock = TestClock::new(1_000);
    let (_dir, store) = temp_store(&clock);
    store.store_message(&keyed(1, 2, "x", 5)).unwrap();
    clock.set(1_000 + DEDUPE_WINDOW_SECS);
    assert!(
        store
            .store_message(&keyed(1, 2, "x", 5))
            .unwrap()
            .is_duplicate()
    );
    clock.set(1_001 + DEDUPE_WINDOW_SECS);
    assert_eq!(new(store.store_message(&keyed(1, 2, "x", 5))).msg_id, 2);
    // The old row was replaced and expired ones are pruned.
    let rows: i64 = store
        .lock()
        .unwrap()
        .query_row("SELECT count(*) FROM message_dedupe", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

/// The table keeps the newest keys (the index in memory has its own bound,
/// tested in `sqlite::dedupe`), and a restart remembers what it kept.
#[test]
fn the_key_table_is_bounded() {
    let clock = TestClock::new(1_000);
    let (dir, store) = temp_store(&clock);
    for k in 0..5u8 {
        store.store_message(&keyed(1, 2, "x", k)).unwrap();
    }
    {
        let conn = store.lock().unwrap();
        super::sqlite::prune_dedupe(&conn, 1_000, 3).unwrap();
        let left: Vec<Vec<u8>> = conn
            .prepare("SELECT key FROM message_dedupe ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, [vec![2u8; 16], vec![3; 16], vec![4; 16]]);
    }
    drop(store);
    let store = SqliteStore::open_with(dir.path().join("data"), clock.options()).expect("reopen");
    // The oldest keys are forgotten: their resends are stored anew.
    assert!(
        !store
            .store_message(&keyed(1, 2, "x", 0))
            .unwrap()
            .is_duplicate()
    );
    assert!(
        store
            .store_message(&keyed(1, 2, "x", 4))
            .unwrap()
            .is_duplicate()
    );
}

// ----- the message log ----------------------------------------------------

/// What a reader sees of the conversation 1 ↔ 2: ids, user 2's unread count
/// from 1, and how many of the two have the session.
fn conversation_state(store: &SqliteStore) -> (Vec<MsgId>, u32, usize) {
    let ids = store
        .message_list(1, 2, 0, 100)
        .unwrap()
        .into_iter()
        .map(|m| m.msg_id)
        .collect();
    let unread = store
        .unread(2)
        .unwrap()
        .sessions
        .iter()
        .find(|s| s.peer == 1)
        .map_or(0, |s| s.count);
    let sessions =
        store.recent_sessions(1, 0).unwrap().len() + store.recent_sessions(2, 0).unwrap().len();
    (ids, unread, sessions)
}

/// The message log's segment files in `data`, with their contents.
fn log_files(data: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(JOURNAL_FILE_PREFIX))
                .and_then(|n| n.strip_suffix(".log"))
                .is_some_and(|seq| seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn acknowledged_messages_survive_a_crash_before_they_reach_the_tables() {
    let clock = TestClock::new(1_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open_with(&data, clock.options()).unwrap();
    store.pause_applier();
    let out = store
        .store_messages(&(0..5u8).map(|i| keyed(1, 2, "hi", i)).collect::<Vec<_>>())
        .unwrap();
    let ids: Vec<MsgId> = out.iter().map(|r| r.as_ref().unwrap().msg_id()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    // Acknowledged: in the log, and only there.
    assert!(store.log_segment_len() > 0);
    store.crash();
    let store = SqliteStore::open_with(&data, clock.options()).unwrap();
    assert_eq!(conversation_state(&store), (vec![5, 4, 3, 2, 1], 5, 2));
    // Ids go on, and a resend from before the crash is still known.
    assert!(
        store
            .store_message(&keyed(1, 2, "hi", 4))
            .unwrap()
            .is_duplicate()
    );
    assert_eq!(
        store.store_message(&keyed(1, 2, "hi", 9)).unwrap().msg_id(),
        6
    );
}

#[test]
fn a_resend_while_its_first_copy_is_only_logged_is_a_duplicate() {
    let clock = TestClock::new(1_000);
    let (_dir, store) = temp_store(&clock);
    store.pause_applier();
    let first = store.store_message(&keyed(1, 2, "hi", 7)).unwrap();
    let again = store
        .store_messages(&[keyed(1, 2, "hi", 7), keyed(1, 2, "hi", 7)])
        .unwrap();
    assert_eq!(first.msg_id(), 1);
    for r in again {
        let r = r.unwrap();
        assert!(r.is_duplicate());
        assert_eq!(r.msg_id(), 1);
    }
    // A day later the logged key no longer counts.
    clock.set(1_001 + DEDUPE_WINDOW_SECS);
    assert_eq!(
        store.store_message(&keyed(1, 2, "hi", 7)).unwrap().msg_id(),
        2
    );
    store.crash();
}

#[test]
fn a_log_whose_removal_was_lost_is_not_applied_twice() {
    let clock = TestClock::new(1_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open_with(&data, clock.options()).unwrap();
    store.pause_applier();
    for i in 0..3u8 {
        store.store_message(&keyed(1, 2, "hi", i)).unwrap();
    }
    let logged = log_files(&data);
    assert!(store.log_segment_len() > 0);
    store.resume_applier();
    // A read applies the log; its segment is removed...
    assert_eq!(conversation_state(&store), (vec![3, 2, 1], 3, 2));
    drop(store);
    // ...but the removal never reached the disk.
    for (path, bytes) in &logged {
        std::fs::write(path, bytes).unwrap();
    }
    let store = SqliteStore::open_with(&data, clock.options()).unwrap();
    assert_eq!(conversation_state(&store), (vec![3, 2, 1], 3, 2));
    assert_eq!(store.store_message(&msg(1, 2, "next")).unwrap().msg_id(), 4);
}

#[test]
fn a_torn_last_append_is_cut_and_what_was_whole_is_applied() {
    let clock = TestClock::new(1_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open_with(&data, clock.options()).unwrap();
    store.pause_applier();
    store
        .store_messages(&[msg(1, 2, "one"), msg(1, 2, "two")])
        .unwrap();
    let end = usize::try_from(store.log_segment_len()).unwrap();
    store.crash();
    // Right after the record, the first half of another append (never
    // acknowledged).
    let (path, mut bytes) = log_files(&data).pop().unwrap();
    let half = bytes[..end / 2].to_vec();
    bytes[end..end + half.len()].copy_from_slice(&half);
    std::fs::write(&path, &bytes).unwrap();
    let store = SqliteStore::open_with(&data, clock.options()).unwrap();
    assert_eq!(conversation_state(&store).0, vec![2, 1]);
}

#[test]
fn a_damaged_whole_record_refuses_the_open_naming_the_log() {
    let clock = TestClock::new(1_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(SqliteStore::open_with(&data, clock.options()).unwrap());
    // A record with a valid checksum over a payload no store writes: a
    // 200-byte key.
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u64.to_le_bytes());
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&[0; 24]);
    payload.push(200);
    payload.extend_from_slice(&[0; 204]);
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    let (segment, _) = log_files(&data).pop().unwrap();
    std::fs::write(&segment, &record).unwrap();
    let err = SqliteStore::open_with(&data, clock.options()).unwrap_err();
    assert!(
        matches!(&err, StoreError::JournalCorrupt { path, .. } if *path == segment),
        "{err}"
    );
}

#[test]
fn reads_see_logged_messages_and_group_messages_follow_them() {
    let clock = TestClock::new(1_000);
    let (_dir, store) = temp_store(&clock);
    let a = store.add_user(&user("a"), &md5hex(b"pw")).unwrap();
    let b = store.add_user(&user("b"), &md5hex(b"pw")).unwrap();
    store.store_message(&msg(a, b, "logged")).unwrap();
    // Whether or not the applier ran, every read sees it.
    assert_eq!(store.latest_msg_id(a, b).unwrap(), 1);
    store.store_message(&msg(a, b, "logged 2")).unwrap();
    let group = store
        .create_group(&NewGroup {
            name: "g".into(),
            avatar: String::new(),
            creator: a,
            group_type: GroupType::Tmp,
            members: vec![a, b],
        })
        .unwrap();
    // A batch with a group message waits for the log to be applied, then
    // stores everything in order.
    let out = store
        .store_messages(&[
            msg(a, b, "third"),
            NewMessage {
                session_type: SessionType::Group,
                ..msg(a, group.id, "to the group")
            },
        ])
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].as_ref().unwrap().msg_id(), 3);
    assert_eq!(out[1].as_ref().unwrap().msg_id(), 1);
    let ids: Vec<MsgId> = store
        .message_list(b, a, 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(ids, [3, 2, 1]);
}

#[test]
fn many_batches_are_applied_and_ids_continue_through_applies() {
    let clock = TestClock::new(1_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open_with(&data, clock.options()).unwrap();
    let batch: Vec<NewMessage> = (0..512)
        .map(|i| {
            if i % 2 == 0 {
                msg(1, 2, "x")
            } else {
                msg(3, 4, "y")
            }
        })
        .collect();
    let rounds = super::sqlite::APPLY_AT / 512 * 2 + 1;
    let mut ids = Vec::new();
    for _ in 0..rounds {
        for (i, r) in store
            .store_messages(&batch)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            if i % 2 == 0 {
                ids.push(r.unwrap().msg_id());
            }
        }
    }
    // Gap-free and increasing in one conversation, whatever the applier
    // took when.
    assert_eq!(ids, (1..=(rounds * 256) as u32).collect::<Vec<_>>());
    let end = (rounds * 256) as u32;
    assert_eq!(store.latest_msg_id(1, 2).unwrap(), end);
    assert_eq!(store.latest_msg_id(4, 3).unwrap(), end);
    assert_eq!(store.unread_total(2).unwrap(), end);
    drop(store);
    // A clean close applied everything: one segment is left, with nothing
    // in it that the reopen below would apply twice.
    assert_eq!(log_files(&data).len(), 1);
    let store = SqliteStore::open_with(&data, clock.options()).unwrap();
    assert_eq!(
        store.store_message(&msg(2, 1, "back")).unwrap().msg_id(),
        end + 1
    );
}

/// The applier runs at the nice value the options give it (Linux), read
/// back from `/proc` (the thread sets it itself as it starts).
#[cfg(target_os = "linux")]
#[test]
fn the_applier_runs_at_the_nice_value_it_is_given() {
    let clock = TestClock::new(1_000);
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        applier_nice: 13,
        ..clock.options()
    };
    let _store = SqliteStore::open_with(dir.path().join("data"), options).unwrap();
    // Field 19 of a thread's stat is its nice value; other tests' appliers
    // run at 0, so a store-applier at 13 is this one.
    let appliers_at_13 = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                let after_name = stat.rsplit_once(')')?.1;
                let nice: i32 = after_name.split_whitespace().nth(16)?.parse().ok()?;
                (comm.trim() == "store-applier" && nice == 13).then_some(())
            })
            .count()
    };
    let deadline = crate::clock::now() + std::time::Duration::from_secs(10);
    while appliers_at_13() == 0 {
        assert!(
            crate::clock::now() < deadline,
            "no store-applier thread at nice 13"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_second_process_on_the_store_leaves_the_log_to_its_owner() {
    let clock = TestClock::new(1_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let owner = SqliteStore::open_with(&data, clock.options()).unwrap();
    owner.pause_applier();
    owner.store_message(&msg(1, 2, "logged")).unwrap();
    // `teamtalk user …` while the server runs: directory edits go straight
    // into the tables; message ids stay the owner's to hand out.
    let other = SqliteStore::open_with(&data, clock.options()).unwrap();
    let id = other.add_user(&user("late"), &md5hex(b"pw")).unwrap();
    assert!(matches!(
        other.store_message(&msg(1, 2, "from elsewhere")),
        Err(StoreError::LogElsewhere)
    ));
    // Nor group messages: only the owner's dedupe index knows every key.
    let to_group = NewMessage {
        session_type: SessionType::Group,
        ..msg(1, 2, "to a group from elsewhere")
    };
    assert!(matches!(
        other.store_message(&to_group),
        Err(StoreError::LogElsewhere)
    ));
    drop(other);
    owner.resume_applier();
    assert_eq!(owner.user_by_name("late").unwrap().map(|u| u.id), Some(id));
    assert_eq!(owner.store_message(&msg(1, 2, "next")).unwrap().msg_id(), 2);
    drop(owner);
    // Closed: the next opener owns the log.
    let next = SqliteStore::open_with(&data, clock.options()).unwrap();
    assert_eq!(next.store_message(&msg(2, 1, "again")).unwrap().msg_id(), 3);
}

#[test]
fn expired_keys_are_pruned_from_the_oldest_and_younger_ones_kept() {
    let clock = TestClock::new(1_000);
    let (_dir, store) = temp_store(&clock);
    store.store_message(&keyed(1, 2, "a", 1)).unwrap();
    store.store_message(&keyed(1, 2, "b", 2)).unwrap();
    clock.set(1_000 + DEDUPE_WINDOW_SECS / 2);
    store.store_message(&keyed(1, 2, "c", 3)).unwrap();
    clock.set(1_001 + DEDUPE_WINDOW_SECS);
    store.store_message(&keyed(1, 2, "d", 4)).unwrap();
    let keys: Vec<Vec<u8>> = store
        .lock()
        .unwrap()
        .prepare("SELECT key FROM message_dedupe ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(keys, [vec![3u8; 16], vec![4; 16]]);
    // The one kept still counts as a resend.
    assert!(
        store
            .store_message(&keyed(1, 2, "c", 3))
            .unwrap()
            .is_duplicate()
    );
}
