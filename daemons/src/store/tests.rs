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

#[test]
fn opens_with_wal_full_sync_and_schema_version() {
    let clock = TestClock::new(10);
    let (dir, store) = temp_store(&clock);
    assert_eq!(
        store.schema_version().unwrap(),
        SqliteStore::latest_schema_version()
    );
    let conn = store.lock();
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
fn departments_incremental() {
    let clock = TestClock::new(100);
    let (_dir, store) = temp_store(&clock);
    let root = store.add_department("Company", 0, 0).unwrap();
    clock.set(200);
    let child = store.add_department("Sales", 5, root).unwrap();
    let all = store.departments_updated_since(0).unwrap();
    assert_eq!(
        all,
        vec![
            Department {
                id: root,
                priority: 0,
                name: "Company".into(),
                parent_id: 0,
                status: 0,
                updated: 100
            },
            Department {
                id: child,
                priority: 5,
                name: "Sales".into(),
                parent_id: root,
                status: 0,
                updated: 200
            },
        ]
    );
    let newer = store.departments_updated_since(100).unwrap();
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].id, child);
    assert!(store.departments_updated_since(200).unwrap().is_empty());
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
fn teamtalk_imported_users_log_in() {
    let clock = TestClock::new(50);
    let (_dir, store) = temp_store(&clock);
    let client = md5hex(b"123456");
    // TeamTalk's stored form, computed here independently of `password.rs`.
    let stored = md5hex(format!("{client}8342").as_bytes());
    let id = store
        .import_teamtalk_user(&user("old"), &stored, "8342")
        .unwrap();
    assert_eq!(
        store.verify_login("old", &client).unwrap().map(|u| u.id),
        Some(id)
    );
    assert!(
        store
            .verify_login("old", &md5hex(b"1234567"))
            .unwrap()
            .is_none()
    );
    assert!(store.verify_login("old", &stored).unwrap().is_none());
}

#[test]
fn departed_users_cannot_log_in_and_leave_full_directory() {
    let clock = TestClock::new(10);
    let (_dir, store) = temp_store(&clock);
    let pw = md5hex(b"x");
    let mut gone = user("gone");
    gone.status = USER_STATUS_DEPARTED;
    let gone_id = store.add_user(&gone, &pw).unwrap();
    let here = store.add_user(&user("here"), &pw).unwrap();
    assert!(store.verify_login("gone", &pw).unwrap().is_none());
    let all: Vec<_> = store
        .users_updated_since(0)
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(all, vec![here]);
    // An incremental fetch does report the departure so clients can hide them.
    let changed: Vec<_> = store
        .users_updated_since(10)
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(changed, vec![gone_id, here]);
}

#[test]
fn users_incremental_sign_info_and_lookup() {
    let clock = TestClock::new(100);
    let (_dir, store) = temp_store(&clock);
    let pw = md5hex(b"pw");
    let a = store.add_user(&user("a"), &pw).unwrap();
    let b = store.add_user(&user("b"), &pw).unwrap();
    assert_eq!(store.user_count().unwrap(), 2);
    clock.set(300);
    assert!(store.update_sign_info(b, "busy").unwrap());
    assert!(!store.update_sign_info(999, "nobody").unwrap());
    let changed = store.users_updated_since(200).unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, b);
    assert_eq!(changed[0].sign_info, "busy");
    assert_eq!(changed[0].updated, 300);
    // `updated >= t`, as TeamTalk.
    assert_eq!(store.users_updated_since(300).unwrap().len(), 1);
    assert!(store.users_updated_since(301).unwrap().is_empty());

    let got = store.users_by_ids(&[b, 999, a, b]).unwrap();
    assert_eq!(got.iter().map(|u| u.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(got[0].email, "a@example.com");
    assert!(store.users_by_ids(&[]).unwrap().is_empty());
}

#[test]
fn push_shield_and_device_tokens() {
    let clock = TestClock::new(1);
    let (_dir, store) = temp_store(&clock);
    let pw = md5hex(b"pw");
    let a = store.add_user(&user("a"), &pw).unwrap();
    let b = store.add_user(&user("b"), &pw).unwrap();

    assert_eq!(store.push_shield(a).unwrap(), Some(false));
    assert!(store.set_push_shield(a, true).unwrap());
    assert_eq!(store.push_shield(a).unwrap(), Some(true));
    assert!(store.users_by_ids(&[a]).unwrap()[0].push_shield);
    assert!(store.set_push_shield(a, false).unwrap());
    assert_eq!(store.push_shield(a).unwrap(), Some(false));
    assert_eq!(store.push_shield(999).unwrap(), None);
    assert!(!store.set_push_shield(999, true).unwrap());

    store.set_device_token(a, 0x11, "tok-a").unwrap();
    store.set_device_token(b, 0x12, "tok-b").unwrap();
    assert_eq!(
        store.device_tokens(&[b, a, 77]).unwrap(),
        vec![
            DeviceToken {
                user_id: a,
                client_type: 0x11,
                token: "tok-a".into()
            },
            DeviceToken {
                user_id: b,
                client_type: 0x12,
                token: "tok-b".into()
            },
        ]
    );
    // Replacing a user's token.
    store.set_device_token(a, 0x11, "tok-a2").unwrap();
    assert_eq!(store.device_tokens(&[a]).unwrap()[0].token, "tok-a2");
    // The same device logs in as another user: the token moves.
    store.set_device_token(b, 0x11, "tok-a2").unwrap();
    assert_eq!(
        store.device_tokens(&[a, b]).unwrap(),
        vec![DeviceToken {
            user_id: b,
            client_type: 0x11,
            token: "tok-a2".into()
        }]
    );
    // An empty token (logout) clears it.
    store.set_device_token(b, 0x11, "").unwrap();
    assert!(store.device_tokens(&[a, b]).unwrap().is_empty());
}

#[test]
fn seed_users_share_one_valid_hash() {
    let clock = TestClock::new(1);
    let (_dir, store) = temp_store(&clock);
    let pw = md5hex(b"load");
    let ids = store.seed_users("load", 50, &pw).unwrap();
    assert_eq!(ids.len(), 50);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.user_count().unwrap(), 50);
    let u = store
        .verify_login("load37", &pw)
        .unwrap()
        .expect("seeded login");
    assert_eq!(u.id, ids[36]);
    assert_eq!(u.nick, "load37");
    assert!(store.verify_login("load51", &pw).unwrap().is_none());
    // A clash rolls the whole batch back.
    assert!(matches!(
        store.seed_users("load", 60, &pw),
        Err(StoreError::NameTaken(n)) if n == "load1"
    ));
    assert_eq!(store.user_count().unwrap(), 50);
    assert!(store.seed_users("none", 0, &pw).unwrap().is_empty());
}

#[test]
fn store_message_assigns_ids_and_updates_counters_and_sessions() {
    let clock = TestClock::new(1_000);
    let (_dir, store) = temp_store(&clock);
    let m1 = new(store.store_message(&msg(1, 2, "hi")));
    assert_eq!(m1.msg_id, 1);
    assert_eq!((m1.from, m1.to, m1.data.as_slice()), (1, 2, &b"hi"[..]));
    clock.set(1_001);
    let m2 = new(store.store_message(&msg(2, 1, "hello")));
    assert_eq!(
        m2.msg_id, 2,
        "one sequence per conversation, both directions"
    );
    let other = new(store.store_message(&msg(1, 3, "yo")));
    assert_eq!(other.msg_id, 1, "another conversation starts at 1");
    clock.set(1_002);
    store.store_message(&msg(1, 2, "again")).unwrap();

    assert_eq!(store.latest_msg_id(1, 2).unwrap(), 3);
    assert_eq!(store.latest_msg_id(2, 1).unwrap(), 3);
    assert_eq!(store.latest_msg_id(2, 3).unwrap(), 0);

    // User 2: two unread from 1, latest message is "again".
    let u2 = store.unread(2).unwrap();
    assert_eq!(u2.total, 2);
    assert_eq!(
        u2.sessions,
        vec![UnreadSession {
            peer: 1,
            session_type: SessionType::Single,
            count: 2,
            latest: LatestMessage {
                msg_id: 3,
                from: 1,
                msg_type: 1,
                data: b"again".to_vec()
            },
        }]
    );
    // User 1: one from 2.
    let u1 = store.unread(1).unwrap();
    assert_eq!(u1.total, 1);
    assert_eq!(u1.sessions[0].peer, 2);
    assert_eq!(u1.sessions[0].latest.msg_id, 3);
    assert_eq!(store.unread(3).unwrap().total, 1);

    store.clear_unread(2, 1).unwrap();
    assert_eq!(store.unread(2).unwrap(), UnreadSummary::default());
    assert_eq!(
        store.unread(1).unwrap().total,
        1,
        "only the reader's counter is cleared"
    );
    store.clear_unread(2, 1).unwrap();

    // Recent sessions of user 1: peer 2 (updated 1002) before peer 3 (1001).
    let s = store.recent_sessions(1, 0).unwrap();
    assert_eq!(
        s.iter().map(|s| (s.peer, s.updated)).collect::<Vec<_>>(),
        vec![(2, 1_002), (3, 1_001)]
    );
    assert_eq!(s[0].latest.data, b"again");
    assert_eq!(s[0].status, 0);
    assert_eq!(
        s[1].latest,
        LatestMessage {
            msg_id: 1,
            from: 1,
            msg_type: 1,
            data: b"yo".to_vec()
        }
    );
    assert_eq!(store.recent_sessions(1, 1_001).unwrap().len(), 1);
    assert_eq!(store.recent_sessions(3, 0).unwrap()[0].peer, 1);

    // Removing hides it until the next message.
    assert!(store.remove_session(1, 3, SessionType::Single).unwrap());
    assert!(!store.remove_session(1, 3, SessionType::Single).unwrap());
    assert!(!store.remove_session(1, 3, SessionType::Group).unwrap());
    assert_eq!(store.recent_sessions(1, 0).unwrap().len(), 1);
    assert_eq!(
        store.recent_sessions(3, 0).unwrap().len(),
        1,
        "peer keeps theirs"
    );
    clock.set(1_003);
    store.store_message(&msg(3, 1, "back")).unwrap();
    let s = store.recent_sessions(1, 0).unwrap();
    assert_eq!(s[0].peer, 3);
    assert_eq!(s[0].updated, 1_003);
}

#[test]
fn rejects_self_and_zero_messages() {
    let clock = TestClock::new(1);
    let (_dir, store) = temp_store(&clock);
    assert!(matches!(
        store.store_message(&msg(4, 4, "me")),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.store_message(&msg(0, 4, "x")),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.latest_msg_id(4, 4).unwrap(), 0);
}

#[test]
fn message_list_pages_newest_first() {
    let clock = TestClock::new(1);
    let (_dir, store) = temp_store(&clock);
    for i in 1..=250u32 {
        let (from, to) = if i % 2 == 0 { (7, 9) } else { (9, 7) };
        let m = new(store.store_message(&msg(from, to, &format!("m{i}"))));
        assert_eq!(m.msg_id, i);
    }
    let page = store.message_list(7, 9, 0, 10).unwrap();
    assert_eq!(
        page.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        (241..=250).rev().collect::<Vec<_>>()
    );
    assert_eq!(page[0].data, b"m250");
    assert_eq!(page[0].from, 7);
    let next = store.message_list(9, 7, 240, 10).unwrap();
    assert_eq!(next.first().map(|m| m.msg_id), Some(240));
    assert_eq!(next.last().map(|m| m.msg_id), Some(231));
    // Capped.
    assert_eq!(
        store.message_list(7, 9, 0, 10_000).unwrap().len(),
        MAX_MSG_LIST as usize
    );
    assert_eq!(store.message_list(7, 9, 3, 10).unwrap().len(), 3);
    assert!(store.message_list(7, 9, 0, 0).unwrap().is_empty());
    assert!(store.message_list(7, 8, 0, 10).unwrap().is_empty());

    let by_id = store.messages_by_ids(9, 7, &[5, 300, 2, 5]).unwrap();
    assert_eq!(
        by_id.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        vec![5, 2]
    );
    assert_eq!(by_id[0].data, b"m5");
    assert!(store.messages_by_ids(1, 2, &[1]).unwrap().is_empty());
    let many: Vec<MsgId> = (1..=250).collect();
    assert_eq!(
        store.messages_by_ids(7, 9, &many).unwrap().len(),
        MAX_MSGS_BY_ID
    );
}

#[test]
fn msg_ids_are_gapless_per_conversation_under_concurrent_writers() {
    let clock = TestClock::new(1);
    let (_dir, store) = temp_store(&clock);
    let store: Arc<dyn Store> = Arc::new(store);
    const THREADS: u32 = 4;
    const PER_THREAD: u32 = 40;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..PER_THREAD {
                    // All threads share conversation (1, 2); each also has its own with 100 + t.
                    let (from, to) = if (t + i) % 2 == 0 { (1, 2) } else { (2, 1) };
                    let m = new(store.store_message(&msg(from, to, "c")));
                    mine.push(m.msg_id);
                    store
                        .store_message(&msg(1, 100 + t, "own"))
                        .expect("store own");
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        let mine = h.join().expect("thread");
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "monotonic per writer");
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=THREADS * PER_THREAD).collect::<Vec<_>>());
    for t in 0..THREADS {
        assert_eq!(store.latest_msg_id(1, 100 + t).unwrap(), PER_THREAD);
    }
    let unread_1 = store.unread(1).unwrap();
    let unread_2 = store.unread(2).unwrap();
    assert_eq!(unread_1.total + unread_2.total, THREADS * PER_THREAD);
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

#[test]
fn store_messages_commits_a_batch_and_keeps_each_result() {
    let clock = TestClock::new(50);
    let (_dir, store) = temp_store(&clock);
    let batch = [
        msg(1, 2, "a"),
        msg(2, 1, "b"),
        msg(3, 3, "self"),
        msg(1, 3, "c"),
        msg(0, 1, "zero"),
        msg(1, 2, "d"),
    ];
    let results = store.store_messages(&batch).unwrap();
    assert_eq!(results.len(), batch.len());
    let ids: Vec<Option<MsgId>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(Stored::msg_id))
        .collect();
    assert_eq!(ids, [Some(1), Some(2), None, Some(1), None, Some(3)]);
    assert!(matches!(results[2], Err(StoreError::Invalid(_))));
    // Everything that succeeded is there, with its side effects.
    assert_eq!(store.latest_msg_id(2, 1).unwrap(), 3);
    assert_eq!(store.latest_msg_id(3, 1).unwrap(), 1);
    let page = store.message_list(1, 2, 0, 10).unwrap();
    let bodies: Vec<&[u8]> = page.iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(bodies, [&b"d"[..], b"b", b"a"]);
    let unread = store.unread(2).unwrap();
    assert_eq!(unread.total, 2);
    assert_eq!(store.unread(1).unwrap().total, 1);
    // An empty batch is a no-op.
    assert_eq!(store.store_messages(&[]).unwrap().len(), 0);
}

#[test]
fn store_messages_matches_one_by_one() {
    let clock = TestClock::new(7);
    let (_d1, batched) = temp_store(&clock);
    let (_d2, single) = temp_store(&clock);
    let msgs: Vec<NewMessage> = (0..40u32)
        .map(|i| msg(1 + i % 3, 1 + (i + 1) % 3, &format!("m{i}")))
        .collect();
    let a: Vec<MsgId> = batched
        .store_messages(&msgs)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().msg_id())
        .collect();
    let b: Vec<MsgId> = msgs
        .iter()
        .map(|m| single.store_message(m).unwrap().msg_id())
        .collect();
    assert_eq!(a, b);
    assert_eq!(batched.unread(2).unwrap(), single.unread(2).unwrap());
}

fn keyed(from: UserId, to: UserId, body: &str, key: u8) -> NewMessage {
    NewMessage {
        dedupe_key: Some(vec![key; 16]),
        ..msg(from, to, body)
    }
}

#[test]
fn a_resend_with_a_known_key_is_not_stored_again() {
    let clock = TestClock::new(1_000);
    let (_dir, store) = temp_store(&clock);
    assert_eq!(
        store.store_message(&keyed(1, 2, "hi", 1)).unwrap().msg_id(),
        1
    );
    assert_eq!(
        store.store_message(&keyed(1, 2, "hi", 1)).unwrap(),
        Stored::Duplicate(1)
    );
    assert_eq!(store.latest_msg_id(1, 2).unwrap(), 1);
    assert_eq!(store.unread(2).unwrap().total, 1, "counted once");
    // Another key, another sender or another recipient is another message.
    assert_eq!(new(store.store_message(&keyed(1, 2, "hi", 2))).msg_id, 2);
    assert_eq!(new(store.store_message(&keyed(2, 1, "hi", 1))).msg_id, 3);
    assert_eq!(new(store.store_message(&keyed(1, 3, "hi", 1))).msg_id, 1);
    // No key: stored every time, as TeamTalk does; an empty key is no key.
    assert_eq!(new(store.store_message(&msg(1, 2, "hi"))).msg_id, 4);
    assert_eq!(new(store.store_message(&msg(1, 2, "hi"))).msg_id, 5);
    let empty = NewMessage {
        dedupe_key: Some(Vec::new()),
        ..msg(1, 2, "e")
    };
    assert_eq!(new(store.store_message(&empty)).msg_id, 6);
    assert_eq!(new(store.store_message(&empty)).msg_id, 7);
}

#[test]
fn two_resends_in_one_batch_store_one_message() {
    let clock = TestClock::new(1_000);
    let (_dir, store) = temp_store(&clock);
    let batch = [
        keyed(1, 2, "a", 9),
        keyed(1, 2, "a", 9),
        msg(1, 2, "b"),
        keyed(1, 2, "a", 9),
        keyed(3, 3, "self", 4),
        keyed(1, 3, "c", 4),
    ];
    let results = store.store_messages(&batch).unwrap();
    let got: Vec<Option<(MsgId, bool)>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|s| (s.msg_id(), s.is_duplicate())))
        .collect();
    assert_eq!(
        got,
        [
            Some((1, false)),
            Some((1, true)),
            Some((2, false)),
            Some((1, true)),
            None,
            Some((1, false)),
        ]
    );
    assert_eq!(store.unread(2).unwrap().total, 2);
    // The refused message left no key behind.
    let again = store.store_messages(&[keyed(3, 3, "self", 4)]).unwrap();
    assert!(matches!(again[0], Err(StoreError::Invalid(_))));
}

/// The keys are in the database, written with the message: a resend
/// after db_proxy was killed and restarted is still recognised.
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
        .query_row("SELECT count(*) FROM message_dedupe", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn the_key_table_is_bounded() {
    let clock = TestClock::new(1_000);
    let (_dir, store) = temp_store(&clock);
    for k in 0..5u8 {
        store.store_message(&keyed(1, 2, "x", k)).unwrap();
    }
    {
        let conn = store.lock();
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

#[test]
fn oversized_bodies_and_keys_are_invalid() {
    let clock = TestClock::new(1);
    let (_dir, store) = temp_store(&clock);
    let body = NewMessage {
        data: vec![0; MAX_MSG_DATA_LEN + 1],
        ..msg(1, 2, "")
    };
    assert!(matches!(
        store.store_message(&body),
        Err(StoreError::Invalid(_))
    ));
    let key = NewMessage {
        dedupe_key: Some(vec![0; MAX_DEDUPE_KEY_LEN + 1]),
        ..msg(1, 2, "x")
    };
    assert!(matches!(
        store.store_message(&key),
        Err(StoreError::Invalid(_))
    ));
    let fits = NewMessage {
        data: vec![0; MAX_MSG_DATA_LEN],
        dedupe_key: Some(vec![0; MAX_DEDUPE_KEY_LEN]),
        ..msg(1, 2, "")
    };
    assert_eq!(new(store.store_message(&fits)).msg_id, 1);
}

/// Lists stop reading bodies after MAX_LIST_BODY_BYTES (the one that
/// crosses included), so a page of large messages is never read whole.
#[test]
fn list_reads_stop_after_a_megabyte_of_bodies() {
    let clock = TestClock::new(100);
    let (_dir, store) = temp_store(&clock);
    let big = |from, to, i: u32| NewMessage {
        data: vec![u8::try_from(i % 250).unwrap(); 200_000],
        ..msg(from, to, "")
    };
    for i in 1..=8 {
        store.store_message(&big(1, 2, i)).unwrap();
    }
    let ids = |v: Vec<StoredMessage>| v.iter().map(|m| m.msg_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.message_list(2, 1, 0, 20).unwrap()),
        [8, 7, 6, 5, 4, 3]
    );
    assert_eq!(ids(store.message_list(2, 1, 2, 20).unwrap()), [2, 1]);
    assert_eq!(
        ids(store
            .messages_by_ids(2, 1, &(1..=8).collect::<Vec<_>>())
            .unwrap()),
        [8, 7, 6, 5, 4, 3]
    );
    for (i, peer) in (10..18u32).enumerate() {
        clock.set(200 + u32::try_from(i).unwrap());
        store.store_message(&big(peer, 3, 1)).unwrap();
    }
    let unread = store.unread(3).unwrap();
    assert_eq!(unread.total, 8);
    assert_eq!(unread.sessions.len(), 6);
    assert_eq!(store.unread_total(3).unwrap(), 8);
    let peers: Vec<UserId> = store
        .recent_sessions(3, 0)
        .unwrap()
        .iter()
        .map(|s| s.peer)
        .collect();
    assert_eq!(
        peers,
        [15, 14, 13, 12, 11, 10],
        "the oldest six, newest first"
    );
}
