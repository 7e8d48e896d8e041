//! Groups in the store: creation, the permission rule, versions, group
//! messages (ids, membership, dedupe), unread arithmetic, what members see,
//! sessions, shields, and the migration from schema 2.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;

use super::*;
use crate::password::HashParams;

#[derive(Clone)]
struct TestClock(Arc<AtomicU32>);

impl TestClock {
    fn new(start: u32) -> Self {
        Self(Arc::new(AtomicU32::new(start)))
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

/// An in-memory store with users 1..=`users`.
fn store_with(clock: &TestClock, users: u32) -> SqliteStore {
    let store = SqliteStore::open_in_memory(clock.options()).unwrap();
    let ids = store
        .seed_teamtalk_users("u", users, "00000000000000000000000000000000")
        .unwrap();
    assert_eq!(ids, (1..=users).collect::<Vec<_>>());
    store
}

fn tmp(creator: UserId, members: &[UserId]) -> NewGroup {
    NewGroup {
        name: "team".into(),
        avatar: "http://x/a.png".into(),
        creator,
        group_type: GroupType::Tmp,
        members: members.to_vec(),
    }
}

fn post(from: UserId, group: GroupId, body: &str) -> NewMessage {
    NewMessage {
        from,
        to: group,
        session_type: SessionType::Group,
        msg_type: 0x11,
        create_time: 1_000,
        data: body.as_bytes().to_vec(),
        dedupe_key: None,
    }
}

fn posted(store: &SqliteStore, from: UserId, group: GroupId, body: &str) -> MsgId {
    store
        .store_message(&post(from, group, body))
        .expect("stored")
        .msg_id()
}

fn group_unread(store: &SqliteStore, user: UserId, group: GroupId) -> u32 {
    store
        .unread(user)
        .unwrap()
        .sessions
        .iter()
        .find(|s| s.session_type == SessionType::Group && s.peer == group)
        .map_or(0, |s| s.count)
}

fn ids(msgs: &[StoredMessage]) -> Vec<MsgId> {
    msgs.iter().map(|m| m.msg_id).collect()
}

/// What a random run of posts, reads, joins and leaves does to one group.
#[derive(Debug, Clone)]
enum Op {
    Post(UserId),
    Read(UserId),
    Add(UserId),
    Remove(UserId),
}

fn op() -> impl Strategy<Value = Op> {
    let user = 1u32..=5;
    prop_oneof![
        4 => user.clone().prop_map(Op::Post),
        2 => user.clone().prop_map(Op::Read),
        1 => user.clone().prop_map(Op::Add),
        1 => user.prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever members post, read, join and leave, each user's unread
    /// count, latest id and history are the model's: the group's last id
    /// minus the read point, what came after the join point.
    #[test]
    fn unread_arithmetic_matches_a_model(ops in proptest::collection::vec(op(), 1..50)) {
        let clock = TestClock::new(100);
        let store = store_with(&clock, 5);
        let g = store.create_group(&tmp(1, &[2])).unwrap().id;
        let mut last: MsgId = 0;
        let mut members: BTreeSet<UserId> = [1, 2].into();
        let mut read: BTreeMap<UserId, MsgId> = BTreeMap::new();
        let mut floor: BTreeMap<UserId, MsgId> = BTreeMap::new();
        for u in [1, 2] {
            read.insert(u, 0);
            floor.insert(u, 0);
        }
        for op in ops {
            match op {
                Op::Post(u) => {
                    let r = store.store_message(&post(u, g, "x"));
                    if members.contains(&u) {
                        last += 1;
                        prop_assert_eq!(r.unwrap().msg_id(), last);
                        read.insert(u, last);
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Read(u) => {
                    let r = store.clear_group_unread(u, g);
                    prop_assert_eq!(r.is_ok(), members.contains(&u));
                    if members.contains(&u) {
                        read.insert(u, last);
                    }
                }
                Op::Add(u) => {
                    store.change_group_members(Actor::Admin, g, MemberChange::Add, &[u]).unwrap();
                    if members.insert(u) {
                        read.insert(u, last);
                        floor.insert(u, last);
                    }
                }
                Op::Remove(u) => {
                    store.change_group_members(Actor::Admin, g, MemberChange::Remove, &[u]).unwrap();
                    members.remove(&u);
                }
            }
            for u in 1..=5 {
                let want = if members.contains(&u) { last - read[&u] } else { 0 };
                prop_assert_eq!(group_unread(&store, u, g), want, "unread of {}", u);
                prop_assert_eq!(store.unread_total(u).unwrap(), want);
                if members.contains(&u) {
                    let visible: Vec<MsgId> = (floor[&u] + 1..=last).rev().collect();
                    prop_assert_eq!(ids(&store.group_message_list(u, g, 0, 200).unwrap()), visible.clone());
                    prop_assert_eq!(
                        store.group_latest_msg_id(u, g).unwrap(),
                        visible.first().copied().unwrap_or(0)
                    );
                } else {
                    prop_assert!(store.group_message_list(u, g, 0, 200).is_err());
                }
            }
        }
    }
}

#[test]
fn a_schema_2_database_is_migrated_with_its_dedupe_keys() {
    let clock = TestClock::new(500);
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
        for step in &super::sqlite::MIGRATIONS[..2] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO user (name, password, created, updated) VALUES ('a', 'x', 1, 1), ('b', 'x', 1, 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO message_dedupe (from_id, to_id, key, msg_id, created) VALUES (1, 2, x'0707', 41, 500)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open_with(dir.path(), clock.options()).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        SqliteStore::latest_schema_version()
    );
    let resend = NewMessage {
        from: 1,
        to: 2,
        session_type: SessionType::Single,
        msg_type: 1,
        create_time: 1,
        data: b"x".to_vec(),
        dedupe_key: Some(vec![7, 7]),
    };
    assert_eq!(store.store_message(&resend).unwrap(), Stored::Duplicate(41));
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    assert_eq!(posted(&store, 2, g, "after the migration"), 1);
}
