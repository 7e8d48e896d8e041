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

#[test]
fn a_group_is_created_with_its_creator_and_read_back() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 4);
    let g = store.create_group(&tmp(1, &[3, 2, 3])).unwrap();
    assert_eq!(
        g.member_ids(),
        [1, 2, 3],
        "creator included, duplicates gone"
    );
    assert_eq!(
        (g.version, g.group_type, g.creator, g.last_msg_id, g.created),
        (1, GroupType::Tmp, 1, 0, 500)
    );
    assert!(g.members.iter().all(|m| !m.shield && m.joined == 500));
    assert_eq!(store.group(g.id).unwrap(), Some(g.clone()));
    assert_eq!(store.group(g.id + 1).unwrap(), None);
    let normal = store
        .create_group(&NewGroup {
            group_type: GroupType::Normal,
            ..tmp(4, &[2])
        })
        .unwrap();
    assert_eq!(store.groups().unwrap(), [g.clone(), normal.clone()]);
    let v = |id, version| GroupVersion { id, version };
    assert_eq!(
        store.user_groups(2, None).unwrap(),
        [v(g.id, 1), v(normal.id, 1)]
    );
    assert_eq!(
        store.user_groups(2, Some(GroupType::Normal)).unwrap(),
        [v(normal.id, 1)]
    );
    assert_eq!(store.user_groups(3, Some(GroupType::Normal)).unwrap(), []);
    // The administration's NORMAL group (creator 0): it is no member.
    let admin = store
        .create_group(&NewGroup {
            group_type: GroupType::Normal,
            ..tmp(0, &[3, 2])
        })
        .unwrap();
    assert_eq!((admin.creator, admin.member_ids()), (0, vec![2, 3]));
    assert!(matches!(
        store.create_group(&NewGroup {
            group_type: GroupType::Normal,
            ..tmp(0, &[0, 2])
        }),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn a_group_that_cannot_be_created_leaves_nothing() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 3);
    assert!(matches!(
        store.create_group(&tmp(1, &[2, 99])),
        Err(StoreError::NoSuchUser(99))
    ));
    assert!(matches!(
        store.create_group(&tmp(42, &[2])),
        Err(StoreError::NoSuchUser(42))
    ));
    assert!(matches!(
        store.create_group(&NewGroup {
            name: String::new(),
            ..tmp(1, &[2])
        }),
        Err(StoreError::Invalid(_))
    ));
    // Creator 0 (the administration) makes NORMAL groups only.
    assert!(matches!(
        store.create_group(&tmp(0, &[2])),
        Err(StoreError::Invalid("user id 0 is not a user"))
    ));
    assert!(store.groups().unwrap().is_empty());
    assert!(store.user_groups(2, None).unwrap().is_empty());
}

#[test]
fn member_changes_follow_the_rule_and_bump_the_version() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 6);
    let g = store.create_group(&tmp(1, &[2, 3])).unwrap().id;
    let change = |actor, kind, users: &[UserId]| store.change_group_members(actor, g, kind, users);
    use Actor::{Admin, User};
    use MemberChange::{Add, Remove};

    // Any member adds to a TMP group; only the new ones count as changed.
    let c = change(User(2), Add, &[3, 4, 4]).unwrap();
    assert_eq!(
        (c.version, c.changed, c.members),
        (2, vec![4], vec![1, 2, 3, 4])
    );
    // Nothing new: no change, no new version.
    let c = change(User(2), Add, &[4]).unwrap();
    assert_eq!((c.version, c.changed.len()), (2, 0));
    // Strangers may do nothing; a missing user cannot be added.
    assert!(matches!(
        change(User(5), Add, &[5]),
        Err(StoreError::Refused(ChangeRefused::NotMember))
    ));
    assert!(matches!(
        change(User(2), Add, &[77]),
        Err(StoreError::NoSuchUser(77))
    ));
    // A member cannot remove another, but can leave.
    assert!(matches!(
        change(User(2), Remove, &[3]),
        Err(StoreError::Refused(ChangeRefused::NotCreator))
    ));
    let c = change(User(2), Remove, &[2]).unwrap();
    assert_eq!(
        (c.version, c.changed, c.members),
        (3, vec![2], vec![1, 3, 4])
    );
    // The creator removes anyone; removing a non-member changes nothing.
    let c = change(User(1), Remove, &[4, 6]).unwrap();
    assert_eq!((c.version, c.changed, c.members), (4, vec![4], vec![1, 3]));
    assert!(matches!(
        change(User(1), Add, &[0]),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.change_group_members(User(1), 999, Add, &[2]),
        Err(StoreError::NoSuchGroup(999))
    ));

    // NORMAL groups: the creator only; the administration anything.
    let n = store
        .create_group(&NewGroup {
            group_type: GroupType::Normal,
            ..tmp(1, &[2])
        })
        .unwrap()
        .id;
    for (actor, users) in [(User(2), &[3][..]), (User(2), &[2][..])] {
        assert!(matches!(
            store.change_group_members(actor, n, Add, users),
            Err(StoreError::Refused(ChangeRefused::NotCreator))
        ));
    }
    assert!(matches!(
        store.change_group_members(User(2), n, Remove, &[2]),
        Err(StoreError::Refused(ChangeRefused::NotCreator))
    ));
    let c = store.change_group_members(Admin, n, Remove, &[1]).unwrap();
    assert_eq!((c.version, c.members), (2, vec![2]));
    let c = store.change_group_members(Admin, n, Add, &[5]).unwrap();
    assert_eq!((c.version, c.members), (3, vec![2, 5]));
    assert_eq!(store.group(n).unwrap().unwrap().version, 3);
}

#[test]
fn a_group_is_bounded_in_members() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 3);
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    let too_many: Vec<UserId> = (1..=u32::try_from(MAX_GROUP_MEMBERS).unwrap() + 1).collect();
    assert!(matches!(
        store.change_group_members(Actor::Admin, g, MemberChange::Add, &too_many),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn group_messages_have_their_own_ids_and_only_members_post() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 4);
    let a = store.create_group(&tmp(1, &[2, 3])).unwrap().id;
    let b = store.create_group(&tmp(2, &[3])).unwrap().id;
    assert_eq!(posted(&store, 1, a, "one"), 1);
    assert_eq!(posted(&store, 2, a, "two"), 2);
    assert_eq!(
        posted(&store, 2, b, "other"),
        1,
        "each group its own sequence"
    );
    // A single chat between users whose ids equal the group's is unrelated.
    let single = NewMessage {
        session_type: SessionType::Single,
        msg_type: 1,
        ..post(1, 2, "hi")
    };
    assert_eq!(store.store_message(&single).unwrap().msg_id(), 1);
    assert_eq!(posted(&store, 3, a, "three"), 3);

    // Non-members, removed members and missing groups cannot post.
    assert!(matches!(
        store.store_message(&post(4, a, "let me in")),
        Err(StoreError::NotMember { user: 4, group }) if group == a
    ));
    assert!(matches!(
        store.store_message(&post(1, 999, "?")),
        Err(StoreError::NoSuchGroup(999))
    ));
    store
        .change_group_members(Actor::User(1), a, MemberChange::Remove, &[3])
        .unwrap();
    let e = store.store_message(&post(3, a, "still here?")).unwrap_err();
    assert!(e.is_refusal(), "{e}");
    // In a batch, the refused one fails alone.
    let results = store
        .store_messages(&[post(1, a, "x"), post(3, a, "y"), post(2, a, "z")])
        .unwrap();
    let got: Vec<Option<MsgId>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(Stored::msg_id))
        .collect();
    assert_eq!(got, [Some(4), None, Some(5)]);
    // A group may be posted to by a member whose id equals the group's.
    assert_eq!(posted(&store, 1, a, "self-named"), 6);
    let h = store.group_message_list(1, a, 0, 10).unwrap();
    assert_eq!(ids(&h), [6, 5, 4, 3, 2, 1]);
    assert_eq!(
        (h[0].from, h[0].to, h[0].msg_type, &h[0].data[..]),
        (1, a, 0x11, &b"self-named"[..])
    );
}

#[test]
fn unread_is_the_last_id_minus_the_read_point() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 4);
    let g = store.create_group(&tmp(1, &[2, 3])).unwrap().id;
    posted(&store, 1, g, "a");
    posted(&store, 1, g, "b");
    posted(&store, 2, g, "c");
    // The sender has read up to what they posted.
    assert_eq!(group_unread(&store, 1, g), 1);
    assert_eq!(group_unread(&store, 2, g), 0);
    assert_eq!(group_unread(&store, 3, g), 3);
    let u3 = store.unread(3).unwrap();
    assert_eq!(u3.total, 3);
    assert_eq!(
        u3.sessions[0].latest,
        LatestMessage {
            msg_id: 3,
            from: 2,
            msg_type: 0x11,
            data: b"c".to_vec()
        }
    );
    // Single and group counts add up in the total and the badge.
    let single = NewMessage {
        session_type: SessionType::Single,
        msg_type: 1,
        ..post(4, 3, "dm")
    };
    store.store_message(&single).unwrap();
    let u3 = store.unread(3).unwrap();
    assert_eq!(u3.total, 4);
    let kinds: Vec<(SessionType, UserId, u32)> = u3
        .sessions
        .iter()
        .map(|s| (s.session_type, s.peer, s.count))
        .collect();
    assert_eq!(
        kinds,
        [(SessionType::Single, 4, 1), (SessionType::Group, g, 3)]
    );
    assert_eq!(store.unread_total(3).unwrap(), 4);
    // A read ack clears the group alone.
    store.clear_group_unread(3, g).unwrap();
    assert_eq!(store.unread_total(3).unwrap(), 1);
    assert!(matches!(
        store.clear_group_unread(4, g),
        Err(StoreError::NotMember { .. })
    ));
    // A new member starts with nothing unread; a removed one has none.
    store
        .change_group_members(Actor::User(2), g, MemberChange::Add, &[4])
        .unwrap();
    assert_eq!(group_unread(&store, 4, g), 0);
    posted(&store, 1, g, "d");
    assert_eq!(group_unread(&store, 4, g), 1);
    store
        .change_group_members(Actor::User(4), g, MemberChange::Remove, &[4])
        .unwrap();
    assert_eq!(group_unread(&store, 4, g), 0);
    assert_eq!(store.unread_total(4).unwrap(), 0);
}

#[test]
fn members_read_what_was_posted_after_they_joined() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 4);
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    for i in 1..=5 {
        posted(&store, 1, g, &format!("m{i}"));
    }
    store
        .change_group_members(Actor::User(1), g, MemberChange::Add, &[3])
        .unwrap();
    assert_eq!(
        store.group_latest_msg_id(3, g).unwrap(),
        0,
        "nothing since joining"
    );
    assert!(store.group_message_list(3, g, 0, 10).unwrap().is_empty());
    for i in 6..=9 {
        posted(&store, 2, g, &format!("m{i}"));
    }
    // Paging: newest first, `begin` inclusive, never below the join point.
    assert_eq!(ids(&store.group_message_list(3, g, 0, 2).unwrap()), [9, 8]);
    assert_eq!(ids(&store.group_message_list(3, g, 7, 10).unwrap()), [7, 6]);
    assert_eq!(
        ids(&store.group_message_list(1, g, 7, 3).unwrap()),
        [7, 6, 5]
    );
    assert!(store.group_message_list(1, g, 0, 0).unwrap().is_empty());
    assert_eq!(
        ids(&store
            .group_messages_by_ids(3, g, &[2, 7, 9, 9, 50])
            .unwrap()),
        [9, 7]
    );
    assert_eq!(
        ids(&store.group_messages_by_ids(1, g, &[2, 7]).unwrap()),
        [7, 2]
    );
    assert_eq!(store.group_latest_msg_id(3, g).unwrap(), 9);
    // Non-members and missing groups: nothing at all.
    for (user, group) in [(4, g), (1, 999)] {
        assert!(matches!(
            store.group_message_list(user, group, 0, 10),
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.group_messages_by_ids(user, group, &[9]),
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.group_latest_msg_id(user, group),
            Err(StoreError::NotMember { .. })
        ));
    }
    // Someone removed reads nothing any more; back in, only what is new.
    store
        .change_group_members(Actor::User(1), g, MemberChange::Remove, &[3])
        .unwrap();
    assert!(store.group_message_list(3, g, 0, 10).is_err());
    store
        .change_group_members(Actor::User(2), g, MemberChange::Add, &[3])
        .unwrap();
    assert!(store.group_message_list(3, g, 0, 10).unwrap().is_empty());
}

#[test]
fn group_sessions_come_from_the_membership() {
    let clock = TestClock::new(1_000);
    let store = store_with(&clock, 4);
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    // Joining makes the session appear, with no message yet.
    let s = store.recent_sessions(2, 0).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].peer, s[0].session_type, s[0].updated, &s[0].latest),
        (g, SessionType::Group, 1_000, &LatestMessage::default())
    );
    clock.set(1_010);
    let single = NewMessage {
        session_type: SessionType::Single,
        msg_type: 1,
        ..post(3, 2, "dm")
    };
    store.store_message(&single).unwrap();
    clock.set(1_020);
    posted(&store, 1, g, "hello group");
    let s = store.recent_sessions(2, 0).unwrap();
    let rows: Vec<(UserId, SessionType, u32, MsgId)> = s
        .iter()
        .map(|s| (s.peer, s.session_type, s.updated, s.latest.msg_id))
        .collect();
    assert_eq!(
        rows,
        [
            (g, SessionType::Group, 1_020, 1),
            (3, SessionType::Single, 1_010, 1)
        ]
    );
    assert_eq!(
        store.recent_sessions(2, 1_010).unwrap().len(),
        1,
        "incremental"
    );
    // Removing hides it (and a second removal finds nothing) until the
    // next message.
    assert!(store.remove_session(2, g, SessionType::Group).unwrap());
    assert!(!store.remove_session(2, g, SessionType::Group).unwrap());
    assert_eq!(store.recent_sessions(2, 0).unwrap().len(), 1);
    clock.set(1_030);
    posted(&store, 1, g, "again");
    let s = store.recent_sessions(2, 0).unwrap();
    assert_eq!((s[0].peer, s[0].updated, s[0].latest.msg_id), (g, 1_030, 2));
    // Members who left have no session; strangers cannot remove one.
    store
        .change_group_members(Actor::User(2), g, MemberChange::Remove, &[2])
        .unwrap();
    assert!(
        store
            .recent_sessions(2, 0)
            .unwrap()
            .iter()
            .all(|s| s.session_type == SessionType::Single)
    );
    assert!(!store.remove_session(4, g, SessionType::Group).unwrap());
    // Someone who joins later sees the session, without older messages.
    clock.set(1_040);
    store
        .change_group_members(Actor::User(1), g, MemberChange::Add, &[4])
        .unwrap();
    let s = store.recent_sessions(4, 0).unwrap();
    assert_eq!((s[0].peer, s[0].updated, s[0].latest.msg_id), (g, 1_040, 0));
}

#[test]
fn shields_are_per_member() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 4);
    let g = store.create_group(&tmp(1, &[2, 3])).unwrap().id;
    store.set_group_shield(2, g, true).unwrap();
    assert_eq!(
        store.group_shields(g, &[3, 2, 4, 2]).unwrap(),
        [(2, true), (3, false)],
        "non-members left out"
    );
    assert!(store.group(g).unwrap().unwrap().member(2).unwrap().shield);
    store.set_group_shield(2, g, false).unwrap();
    assert_eq!(store.group_shields(g, &[2]).unwrap(), [(2, false)]);
    assert!(matches!(
        store.set_group_shield(4, g, true),
        Err(StoreError::NotMember { .. })
    ));
    assert!(matches!(
        store.set_group_shield(1, 999, true),
        Err(StoreError::NoSuchGroup(999))
    ));
    assert!(matches!(
        store.group_shields(999, &[1]),
        Err(StoreError::NoSuchGroup(999))
    ));
    // The version is the group's and its members', not a member's setting.
    assert_eq!(store.group(g).unwrap().unwrap().version, 1);
}

#[test]
fn details_are_given_to_members_whose_copy_is_older() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 4);
    let a = store.create_group(&tmp(1, &[2])).unwrap().id;
    let b = store.create_group(&tmp(3, &[2])).unwrap().id;
    let c = store.create_group(&tmp(3, &[4])).unwrap().id;
    store
        .change_group_members(Actor::User(3), b, MemberChange::Add, &[1])
        .unwrap();
    let v = |id, version| GroupVersion { id, version };
    let got = store
        .groups_newer_than(2, &[v(b, 1), v(a, 1), v(c, 0), v(b, 0), v(999, 0)])
        .unwrap();
    let got: Vec<(GroupId, u32, Vec<UserId>)> = got
        .into_iter()
        .map(|g| (g.id, g.version, g.member_ids()))
        .collect();
    assert_eq!(
        got,
        [(b, 2, vec![1, 2, 3])],
        "a is current, c is not theirs"
    );
    assert_eq!(store.groups_newer_than(2, &[v(a, 0)]).unwrap().len(), 1);
}

#[test]
fn a_group_resend_is_stored_once_and_keys_do_not_cross_session_types() {
    let clock = TestClock::new(500);
    let store = store_with(&clock, 3);
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    assert_eq!(g, 1);
    let keyed = NewMessage {
        dedupe_key: Some(vec![7; 16]),
        ..post(1, g, "once")
    };
    let first = store.store_message(&keyed).unwrap();
    assert_eq!((first.is_duplicate(), first.msg_id()), (false, 1));
    assert_eq!(store.store_message(&keyed).unwrap(), Stored::Duplicate(1));
    assert_eq!(store.group_latest_msg_id(2, g).unwrap(), 1, "stored once");
    assert_eq!(group_unread(&store, 2, g), 1);
    // The same key on a single chat to user 1 (whose id is the group's).
    let single = NewMessage {
        session_type: SessionType::Single,
        msg_type: 1,
        from: 2,
        to: 1,
        ..keyed.clone()
    };
    let from_two = NewMessage {
        from: 2,
        ..keyed.clone()
    };
    assert!(
        !store.store_message(&from_two).unwrap().is_duplicate(),
        "another sender"
    );
    assert!(
        !store.store_message(&single).unwrap().is_duplicate(),
        "another session type"
    );
    assert!(store.store_message(&single).unwrap().is_duplicate());
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
