//! The store conformance suite: one set of tests run unchanged against
//! every [`Store`]: the embedded SQLite store and the MySQL/MariaDB + Redis
//! store on TeamTalk's schema (private servers from `.ci/services`, see
//! [`super::mysql_redis::testing`]). What only one store has (SQLite's
//! file format and migrations) is tested beside that store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use md5::{Digest, Md5};

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

/// Whatever must live as long as a store under test (a directory).
type Guard = Box<dyn std::any::Any>;

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

/// A user as the administration's tests make them: nick = name, no
/// department.
fn admin_user(name: &str) -> NewUser {
    NewUser {
        name: name.to_owned(),
        nick: name.to_owned(),
        ..NewUser::default()
    }
}

fn pw(text: &str) -> String {
    crate::password::md5_hex(text.as_bytes())
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

fn keyed(from: UserId, to: UserId, body: &str, key: u8) -> NewMessage {
    NewMessage {
        dedupe_key: Some(vec![key; 16]),
        ..msg(from, to, body)
    }
}

/// The message a store call stored now (not a duplicate).
fn new(r: StoreResult<Stored>) -> StoredMessage {
    r.expect("stored")
        .new_message()
        .expect("stored now, not a duplicate")
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

fn posted(store: &dyn Store, from: UserId, group: GroupId, body: &str) -> MsgId {
    store
        .store_message(&post(from, group, body))
        .expect("stored")
        .msg_id()
}

fn group_unread(store: &dyn Store, user: UserId, group: GroupId) -> u32 {
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

mod sqlite {
    use super::*;

    fn make(clock: &TestClock) -> Option<(Guard, Arc<dyn Store>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_with(dir.path().join("data"), clock.options()).expect("open");
        Some((Box::new(dir), Arc::new(store)))
    }

    /// A store with users 1..=`users`.
    fn store_with(clock: &TestClock, users: u32) -> Option<(Guard, Arc<dyn Store>)> {
        let store = SqliteStore::open_in_memory(clock.options()).unwrap();
        let ids = store
            .seed_teamtalk_users("u", users, "00000000000000000000000000000000")
            .unwrap();
        assert_eq!(ids, (1..=users).collect::<Vec<_>>());
        Some((Box::new(()), Arc::new(store)))
    }

    include!("suite_tests.rs");
}

mod mysql_redis {
    use super::*;
    use crate::store::mysql_redis::testing;

    fn make(clock: &TestClock) -> Option<(Guard, Arc<dyn Store>)> {
        let config = testing::fresh_config()?;
        let store = MysqlStore::open(&config, clock.options()).expect("open the MySQL store");
        Some((Box::new(()), Arc::new(store)))
    }

    fn store_with(clock: &TestClock, users: u32) -> Option<(Guard, Arc<dyn Store>)> {
        let (guard, store) = make(clock)?;
        let ids = store
            .seed_teamtalk_users("u", users, "00000000000000000000000000000000")
            .unwrap();
        assert_eq!(ids, (1..=users).collect::<Vec<_>>());
        Some((guard, store))
    }

    include!("suite_tests.rs");
}
