//! Handler, worker and loopback tests for db_proxy, by the same domains as
//! `cmd/`: each file tests one family's answers and its store-failure
//! answers (on [`FailingStore`]); `unserved` covers what db_proxy does not
//! serve, `captured` the byte-for-byte replies, `worker` the store worker,
//! the conf and a loopback server.

mod captured;
mod files;
mod groups;
mod login;
mod messages;
mod push;
mod sessions;
mod sizing;
mod unserved;
mod users;
mod worker;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::ext::ImRequestFailed;
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::pb::im::server::{ImValidateReq, ImValidateRsp};
use teamtalk_proto::{Command, Pdu};

use super::{DbProxy, DbProxyOptions};
use crate::password::HashParams;
use crate::store::{
    Actor, Department, DeviceToken, Group, GroupId, GroupType, GroupVersion, MemberChange,
    MembersChanged, MsgId, NewGroup, NewMessage, NewUser, RecentSession, SessionType, SqliteStore,
    Store, StoreError, StoreOptions, StoreResult, Stored, StoredMessage, UnreadSummary, User,
    UserCredential, UserId,
};

/// A 12-byte `CDbAttachData` as msg_server sends it (type 1, handle 14).
const ATTACH: &[u8] = &[0, 0, 0, 1, 0, 0, 0, 0x0e, 0, 0, 0, 0];
/// Mid-day UTC (2026-11-24 12:00:00).
const NOON: u32 = 1_795_521_600;

fn attach() -> Option<Bytes> {
    Some(Bytes::from_static(ATTACH))
}

#[derive(Clone)]
struct TestClock(Arc<AtomicU32>);

impl TestClock {
    fn get(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
    fn set(&self, t: u32) {
        self.0.store(t, Ordering::SeqCst);
    }
    fn clock(&self) -> crate::store::Clock {
        let c = Arc::clone(&self.0);
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

fn pw(n: u32) -> String {
    format!("{n:032x}")
}

fn new_user(i: u32) -> NewUser {
    NewUser {
        name: format!("user{i}"),
        nick: format!("nick{i}"),
        sex: 1,
        dept_id: 1,
        avatar: String::new(),
        email: format!("user{i}@example.com"),
        phone: format!("1380000000{i}"),
        domain: format!("user{i}"),
        status: 0,
        sign_info: String::new(),
    }
}

struct Fixture<S = SqliteStore> {
    clock: TestClock,
    store: Arc<S>,
    proxy: DbProxy,
}

/// In-memory store with department 1 and users 1..=4 (`user<i>`, password
/// `pw(i)`), the clock at noon UTC.
fn fixture() -> Fixture {
    let clock = TestClock(Arc::new(AtomicU32::new(NOON)));
    let store = Arc::new(seeded_store(&clock));
    let proxy = proxy_on(Arc::clone(&store) as Arc<dyn Store>, &clock);
    Fixture {
        clock,
        store,
        proxy,
    }
}

/// [`fixture`]'s data behind a [`FailingStore`], nothing failing yet.
fn failing_fixture() -> Fixture<FailingStore> {
    let clock = TestClock(Arc::new(AtomicU32::new(NOON)));
    let store = Arc::new(FailingStore {
        inner: seeded_store(&clock),
        failing: Mutex::new(HashSet::new()),
    });
    let proxy = proxy_on(Arc::clone(&store) as Arc<dyn Store>, &clock);
    Fixture {
        clock,
        store,
        proxy,
    }
}

fn seeded_store(clock: &TestClock) -> SqliteStore {
    let store = SqliteStore::open_in_memory(StoreOptions {
        hash_params: HashParams::INSECURE_FAST,
        clock: clock.clock(),
        applier_nice: 0,
    })
    .unwrap();
    store.add_department("dev", 0, 0).unwrap();
    for i in 1..=4 {
        assert_eq!(store.add_user(&new_user(i), &pw(i)).unwrap(), i);
    }
    store
}

fn proxy_on(store: Arc<dyn Store>, clock: &TestClock) -> DbProxy {
    DbProxy::with_options(
        store,
        DbProxyOptions {
            clock: clock.clock(),
            utc_offset_secs: 0,
        },
    )
}

/// Sends `req` with `seq`, expects a reply of type `R` with the same seq.
fn call<Q: CommandMessage, R: CommandMessage>(proxy: &DbProxy, seq: u16, req: &Q) -> R {
    let reply = proxy
        .handle(&req.to_pdu(seq))
        .unwrap_or_else(|| panic!("no reply to {}", Q::COMMAND));
    assert_eq!(reply.key(), R::COMMAND.key(), "reply command");
    assert_eq!(reply.seq(), seq, "seq echoed");
    reply.decode_body::<R>().unwrap()
}

/// Checks that `reply` is an `IMRequestFailed` for `request` with `seq`
/// and returns it.
fn request_failed(reply: &Pdu, seq: u16, request: Command) -> ImRequestFailed {
    assert_eq!(
        reply.key(),
        Command::OtherRequestFailed.key(),
        "answer to {request}"
    );
    assert_eq!(reply.seq(), seq, "seq echoed");
    let f: ImRequestFailed = reply.decode_body().unwrap();
    let key = request.key();
    assert_eq!(
        (f.service_id, f.command_id),
        (u32::from(key.service_id), u32::from(key.command_id)),
        "ids of the failed request"
    );
    f
}

/// Sends `req` (carrying [`ATTACH`]) and expects `IMRequestFailed` with
/// `result_code` 1 (server error) and the attach data echoed.
fn call_failing<Q: CommandMessage>(proxy: &DbProxy, seq: u16, req: &Q) -> ImRequestFailed {
    let reply = proxy
        .handle(&req.to_pdu(seq))
        .unwrap_or_else(|| panic!("no answer to {}", Q::COMMAND));
    let f = request_failed(&reply, seq, Q::COMMAND);
    assert_eq!(f.result_code, 1, "server error");
    assert_eq!(f.attach_data, attach(), "attach data echoed");
    f
}

fn text(from: u32, to: u32, body: &str) -> ImMsgData {
    ImMsgData {
        from_user_id: from,
        to_session_id: to,
        msg_id: 0,
        create_time: 1_000,
        msg_type: 1,
        msg_data: Bytes::from(body.to_owned()),
        attach_data: attach(),
        dedupe_key: None,
        duplicate: None,
    }
}

fn send(proxy: &DbProxy, m: &ImMsgData) -> u32 {
    let rsp: ImMsgData = call(proxy, 7, m);
    rsp.msg_id
}

/// Runs `jobs` as one batch of the store lane (group commit) and returns
/// the replies in order.
fn run<T>(proxy: &DbProxy, jobs: Vec<(T, Pdu)>) -> Vec<(T, Pdu)> {
    let out = Mutex::new(Vec::new());
    crate::db_proxy::worker::run_batch_for_test(proxy, jobs, &|to, pdu| {
        out.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((to, pdu));
    });
    out.into_inner().unwrap_or_else(PoisonError::into_inner)
}

fn validate(proxy: &DbProxy, name: &str, password: &str) -> ImValidateRsp {
    call(
        proxy,
        1,
        &ImValidateReq {
            user_name: name.to_owned(),
            password: password.to_owned(),
            attach_data: attach(),
            client_addr: None,
        },
    )
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A [`Store`] whose operations fail on demand, as a full disk or a lost
/// database file would: it wraps a working SQLite store and answers the
/// operations named in `failing` (by method name) with an I/O error.
/// `store_message` failing makes every message of a batch fail on its own;
/// `store_messages` failing fails the whole transaction.
struct FailingStore {
    inner: SqliteStore,
    failing: Mutex<HashSet<&'static str>>,
}

impl FailingStore {
    /// Makes `op` fail from now on.
    fn fail(&self, op: &'static str) {
        self.ops().insert(op);
    }

    /// Makes `op` work again.
    fn heal(&self, op: &'static str) {
        self.ops().remove(op);
    }

    fn ops(&self) -> std::sync::MutexGuard<'_, HashSet<&'static str>> {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self, op: &'static str) -> StoreResult<()> {
        if self.ops().contains(op) {
            return Err(io_error(op));
        }
        Ok(())
    }
}

fn io_error(context: &'static str) -> StoreError {
    StoreError::Sql {
        context,
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("disk I/O error (test double)".to_owned()),
        ),
    }
}

impl Store for FailingStore {
    fn add_department(&self, name: &str, priority: u32, parent_id: u32) -> StoreResult<u32> {
        self.check("add_department")?;
        self.inner.add_department(name, priority, parent_id)
    }
    fn departments_updated_since(&self, since: u32) -> StoreResult<Vec<Department>> {
        self.check("departments_updated_since")?;
        self.inner.departments_updated_since(since)
    }
    fn rename_department(&self, id: u32, name: &str) -> StoreResult<bool> {
        self.check("rename_department")?;
        self.inner.rename_department(id, name)
    }

    fn delete_department(&self, id: u32) -> StoreResult<bool> {
        self.check("delete_department")?;
        self.inner.delete_department(id)
    }

    fn add_user(&self, user: &NewUser, password_md5hex: &str) -> StoreResult<UserId> {
        self.check("add_user")?;
        self.inner.add_user(user, password_md5hex)
    }
    fn import_teamtalk_user(
        &self,
        user: &NewUser,
        password: &str,
        salt: &str,
    ) -> StoreResult<UserId> {
        self.check("import_teamtalk_user")?;
        self.inner.import_teamtalk_user(user, password, salt)
    }
    fn check_login(
        &self,
        name: &str,
        password_md5hex: &str,
    ) -> StoreResult<Option<UserCredential>> {
        self.check("verify_login")?;
        self.inner.check_login(name, password_md5hex)
    }
    fn user_with_credential(&self, id: UserId) -> StoreResult<Option<UserCredential>> {
        self.check("user_with_credential")?;
        self.inner.user_with_credential(id)
    }
    fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        self.check("user_by_name")?;
        self.inner.user_by_name(name)
    }
    fn all_users(&self) -> StoreResult<Vec<User>> {
        self.check("all_users")?;
        self.inner.all_users()
    }
    fn set_password(&self, user: UserId, password_md5hex: &str) -> StoreResult<bool> {
        self.check("set_password")?;
        self.inner.set_password(user, password_md5hex)
    }
    fn set_user_status(&self, user: UserId, status: u32) -> StoreResult<bool> {
        self.check("set_user_status")?;
        self.inner.set_user_status(user, status)
    }
    fn delete_user(&self, user: UserId) -> StoreResult<bool> {
        self.check("delete_user")?;
        self.inner.delete_user(user)
    }
    fn users_updated_since(&self, since: u32) -> StoreResult<Vec<User>> {
        self.check("users_updated_since")?;
        self.inner.users_updated_since(since)
    }
    fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        self.check("users_by_ids")?;
        self.inner.users_by_ids(ids)
    }
    fn update_sign_info(&self, user: UserId, sign_info: &str) -> StoreResult<bool> {
        self.check("update_sign_info")?;
        self.inner.update_sign_info(user, sign_info)
    }
    fn set_push_shield(&self, user: UserId, on: bool) -> StoreResult<bool> {
        self.check("set_push_shield")?;
        self.inner.set_push_shield(user, on)
    }
    fn push_shield(&self, user: UserId) -> StoreResult<Option<bool>> {
        self.check("push_shield")?;
        self.inner.push_shield(user)
    }
    fn set_device_token(&self, user: UserId, client_type: u32, token: &str) -> StoreResult<()> {
        self.check("set_device_token")?;
        self.inner.set_device_token(user, client_type, token)
    }
    fn forget_device_token(&self, user: UserId, token: &str) -> StoreResult<bool> {
        self.check("forget_device_token")?;
        self.inner.forget_device_token(user, token)
    }
    fn device_tokens(&self, users: &[UserId]) -> StoreResult<Vec<DeviceToken>> {
        self.check("device_tokens")?;
        self.inner.device_tokens(users)
    }
    fn user_count(&self) -> StoreResult<u64> {
        self.check("user_count")?;
        self.inner.user_count()
    }
    fn seed_users(
        &self,
        prefix: &str,
        count: u32,
        password_md5hex: &str,
    ) -> StoreResult<Vec<UserId>> {
        self.check("seed_users")?;
        self.inner.seed_users(prefix, count, password_md5hex)
    }
    fn seed_teamtalk_users(
        &self,
        prefix: &str,
        count: u32,
        password_md5hex: &str,
    ) -> StoreResult<Vec<UserId>> {
        self.check("seed_teamtalk_users")?;
        self.inner
            .seed_teamtalk_users(prefix, count, password_md5hex)
    }
    fn store_message(&self, msg: &NewMessage) -> StoreResult<Stored> {
        self.check("store_message")?;
        self.inner.store_message(msg)
    }
    fn store_messages(&self, msgs: &[NewMessage]) -> StoreResult<Vec<StoreResult<Stored>>> {
        self.check("store_messages")?;
        if self.check("store_message").is_err() {
            return Ok(msgs
                .iter()
                .map(|_| Err(io_error("store_message")))
                .collect());
        }
        self.inner.store_messages(msgs)
    }
    fn message_list(
        &self,
        user: UserId,
        peer: UserId,
        begin: MsgId,
        count: u32,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.check("message_list")?;
        self.inner.message_list(user, peer, begin, count)
    }
    fn messages_by_ids(
        &self,
        user: UserId,
        peer: UserId,
        ids: &[MsgId],
    ) -> StoreResult<Vec<StoredMessage>> {
        self.check("messages_by_ids")?;
        self.inner.messages_by_ids(user, peer, ids)
    }
    fn latest_msg_id(&self, user: UserId, peer: UserId) -> StoreResult<MsgId> {
        self.check("latest_msg_id")?;
        self.inner.latest_msg_id(user, peer)
    }
    fn unread(&self, user: UserId) -> StoreResult<UnreadSummary> {
        self.check("unread")?;
        self.inner.unread(user)
    }
    fn unread_total(&self, user: UserId) -> StoreResult<u32> {
        self.check("unread")?;
        self.inner.unread_total(user)
    }
    fn clear_unread(&self, reader: UserId, peer: UserId) -> StoreResult<()> {
        self.check("clear_unread")?;
        self.inner.clear_unread(reader, peer)
    }
    fn recent_sessions(&self, user: UserId, since: u32) -> StoreResult<Vec<RecentSession>> {
        self.check("recent_sessions")?;
        self.inner.recent_sessions(user, since)
    }
    fn remove_session(
        &self,
        user: UserId,
        peer: UserId,
        session_type: SessionType,
    ) -> StoreResult<bool> {
        self.check("remove_session")?;
        self.inner.remove_session(user, peer, session_type)
    }
    fn create_group(&self, group: &NewGroup) -> StoreResult<Group> {
        self.check("create_group")?;
        self.inner.create_group(group)
    }
    fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        self.check("group")?;
        self.inner.group(id)
    }
    fn groups(&self) -> StoreResult<Vec<Group>> {
        self.check("groups")?;
        self.inner.groups()
    }
    fn user_groups(
        &self,
        user: UserId,
        group_type: Option<GroupType>,
    ) -> StoreResult<Vec<GroupVersion>> {
        self.check("user_groups")?;
        self.inner.user_groups(user, group_type)
    }
    fn groups_newer_than(&self, user: UserId, known: &[GroupVersion]) -> StoreResult<Vec<Group>> {
        self.check("groups_newer_than")?;
        self.inner.groups_newer_than(user, known)
    }
    fn change_group_members(
        &self,
        actor: Actor,
        group: GroupId,
        change: MemberChange,
        users: &[UserId],
    ) -> StoreResult<MembersChanged> {
        self.check("change_group_members")?;
        self.inner.change_group_members(actor, group, change, users)
    }
    fn set_group_shield(&self, user: UserId, group: GroupId, on: bool) -> StoreResult<()> {
        self.check("set_group_shield")?;
        self.inner.set_group_shield(user, group, on)
    }
    fn group_shields(&self, group: GroupId, users: &[UserId]) -> StoreResult<Vec<(UserId, bool)>> {
        self.check("group_shields")?;
        self.inner.group_shields(group, users)
    }
    fn group_message_list(
        &self,
        user: UserId,
        group: GroupId,
        begin: MsgId,
        count: u32,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.check("group_message_list")?;
        self.inner.group_message_list(user, group, begin, count)
    }
    fn group_messages_by_ids(
        &self,
        user: UserId,
        group: GroupId,
        ids: &[MsgId],
    ) -> StoreResult<Vec<StoredMessage>> {
        self.check("group_messages_by_ids")?;
        self.inner.group_messages_by_ids(user, group, ids)
    }
    fn group_latest_msg_id(&self, user: UserId, group: GroupId) -> StoreResult<MsgId> {
        self.check("group_latest_msg_id")?;
        self.inner.group_latest_msg_id(user, group)
    }
    fn clear_group_unread(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        self.check("clear_group_unread")?;
        self.inner.clear_group_unread(user, group)
    }

    fn add_offline_file(&self, file: &crate::store::NewOfflineFile) -> StoreResult<bool> {
        self.check("add_offline_file")?;
        self.inner.add_offline_file(file)
    }
    fn offline_files(&self, to: UserId) -> StoreResult<Vec<crate::store::OfflineFile>> {
        self.check("offline_files")?;
        self.inner.offline_files(to)
    }
    fn delete_offline_file(&self, task_id: &str, from: UserId, to: UserId) -> StoreResult<bool> {
        self.check("delete_offline_file")?;
        self.inner.delete_offline_file(task_id, from, to)
    }
}

#[test]
fn the_failing_store_fails_only_what_it_is_told() {
    let f = failing_fixture();
    assert_eq!(f.store.user_count().unwrap(), 4);
    f.store.fail("user_count");
    assert!(matches!(
        f.store.user_count(),
        Err(StoreError::Sql {
            context: "user_count",
            ..
        })
    ));
    assert_eq!(f.store.users_by_ids(&[1]).unwrap().len(), 1);
    f.store.heal("user_count");
    assert_eq!(f.store.user_count().unwrap(), 4);
}
