//! [`DbProxy`]: one request PDU in, at most one reply PDU out, against a
//! [`Store`]. No sockets, no threads; the worker and the network glue build
//! on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::{
    ContactSessionInfo, DepartInfo, MsgInfo, UnreadInfo, UserInfo, UserTokenInfo,
};
use teamtalk_proto::pb::im::buddy::{
    ImAllUserReq, ImAllUserRsp, ImChangeAvatarReq, ImChangeAvatarRsp, ImChangeSignInfoReq,
    ImChangeSignInfoRsp, ImDepartmentReq, ImDepartmentRsp, ImRecentContactSessionReq,
    ImRecentContactSessionRsp, ImRemoveSessionReq, ImRemoveSessionRsp, ImUsersInfoReq,
    ImUsersInfoRsp,
};
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberReq, ImGroupChangeMemberRsp, ImGroupCreateReq, ImGroupCreateRsp,
    ImGroupShieldReq, ImGroupShieldRsp,
};
use teamtalk_proto::pb::im::login::{
    ImDeviceTokenReq, ImDeviceTokenRsp, ImPushShieldReq, ImPushShieldRsp, ImQueryPushShieldReq,
    ImQueryPushShieldRsp,
};
use teamtalk_proto::pb::im::message::{
    ImGetLatestMsgIdReq, ImGetLatestMsgIdRsp, ImGetMsgByIdReq, ImGetMsgByIdRsp, ImGetMsgListReq,
    ImGetMsgListRsp, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq, ImUnreadMsgCntRsp,
};
use teamtalk_proto::pb::im::server::{
    ImGetDeviceTokenReq, ImGetDeviceTokenRsp, ImValidateReq, ImValidateRsp,
};
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, error, info, warn};

use super::credcache::{CredentialCache, DEFAULT_CAPACITY, DEFAULT_TTL_SECS};
use super::limiter::LoginLimiter;
use crate::store::{
    Clock, LatestMessage, NewMessage, SessionType, Store, StoreError, StoreResult, StoredMessage,
    USER_STATUS_DEPARTED, User,
};

/// `IMValidateRsp.result_code`: the password matched.
pub const VALIDATE_OK: u32 = 0;
/// `IMValidateRsp.result_code`: unknown name, wrong password or departed user.
pub const VALIDATE_BAD_CREDENTIALS: u32 = 1;
/// `IMValidateRsp.result_code`: the request could not be read, or the store
/// failed.
pub const VALIDATE_INTERNAL_ERROR: u32 = 2;
/// `IMValidateRsp.result_code`: too many failures for this name
/// (TeamTalk's `DB_VALIDATE_FAILED`, 6).
pub const VALIDATE_TOO_MANY_FAILURES: u32 = 6;

/// Generic failure code of replies with a `result_code` field.
pub const RESULT_FAILED: u32 = 1;

/// `MsgType` wire values.
const MSG_TYPE_SINGLE_TEXT: i32 = 0x01;
const MSG_TYPE_SINGLE_AUDIO: i32 = 0x02;
const MSG_TYPE_GROUP_TEXT: i32 = 0x11;
const MSG_TYPE_GROUP_AUDIO: i32 = 0x12;
/// `ClientType` wire values of the two push platforms.
const CLIENT_TYPE_IOS: u32 = 0x11;
const CLIENT_TYPE_ANDROID: u32 = 0x12;
/// `UserTokenInfo.push_type` TeamTalk's db_proxy always answers (normal
/// push; msg_server downgrades to silent when a PC is online).
const PUSH_TYPE_NORMAL: u32 = 1;

/// Quiet hours for iOS users with push shield on: from 22:00 up to 07:59 local
/// time their tokens are left out (TeamTalk's rule).
const QUIET_FROM_HOUR: u32 = 22;
const QUIET_UNTIL_HOUR: u32 = 7;

/// How a [`DbProxy`] tells time.
#[derive(Clone)]
pub struct DbProxyOptions {
    /// Wall clock in Unix seconds: the login limiter and the iOS quiet hours.
    /// Tests inject one they move by hand.
    pub clock: Clock,
    /// Offset of local time from UTC in seconds, for the quiet hours (TeamTalk
    /// used the server's time zone; we do not read the system's).
    pub utc_offset_secs: i32,
}

impl std::fmt::Debug for DbProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbProxyOptions")
            .field("utc_offset_secs", &self.utc_offset_secs)
            .finish_non_exhaustive()
    }
}

impl Default for DbProxyOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(system_unix_secs),
            utc_offset_secs: 0,
        }
    }
}

/// Unix seconds from the system clock, saturated into the protocol's `u32`.
#[allow(clippy::disallowed_methods)] // db_proxy's single wall-clock read
fn system_unix_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Counters of a [`DbProxy`], readable while it runs.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    replies: AtomicU64,
    unimplemented: AtomicU64,
    unexpected: AtomicU64,
    decode_errors: AtomicU64,
    store_errors: AtomicU64,
    messages_stored: AtomicU64,
    messages_refused: AtomicU64,
    message_batches: AtomicU64,
    logins_ok: AtomicU64,
    logins_cached: AtomicU64,
    logins_failed: AtomicU64,
    logins_locked: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of [`DbProxy`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbProxyStats {
    /// PDUs handled (message stores included).
    pub requests: u64,
    /// Replies produced.
    pub replies: u64,
    /// Requests for features not stored yet (groups, group shield, offline
    /// files, avatars).
    pub unimplemented: u64,
    /// PDUs db_proxy never serves (e.g. client-only commands, unknown ids).
    pub unexpected: u64,
    /// Bodies that did not decode as their command's message.
    pub decode_errors: u64,
    /// Store operations that failed.
    pub store_errors: u64,
    /// Single-chat messages stored.
    pub messages_stored: u64,
    /// Messages answered with `msg_id` 0.
    pub messages_refused: u64,
    /// Store transactions used for messages (one per group commit).
    pub message_batches: u64,
    /// Successful logins.
    pub logins_ok: u64,
    /// Successful logins answered from the credential cache (no Argon2).
    pub logins_cached: u64,
    /// Logins refused for bad credentials.
    pub logins_failed: u64,
    /// Logins refused by the failure limiter.
    pub logins_locked: u64,
}

/// A single-chat message accepted for storing, waiting for its batch.
///
/// Made by [`DbProxy::prepare_message`], consumed by
/// [`DbProxy::store_prepared`].
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    seq: u16,
    request: ImMsgData,
    new: NewMessage,
}

/// db_proxy's request handler: decodes a PDU, runs it against the store and
/// builds the reply TeamTalk's db_proxy would send.
///
/// # Wire rules kept from TeamTalk
///
/// - A reply echoes the request's `seq`.
/// - `attach_data` (field 20) comes back byte for byte. TeamTalk copies the
///   field even when the request did not carry it, so such replies carry an
///   empty but present field; we do the same, so msg_servers see the bytes
///   they are used to. The `IMMsgData` reply is the request itself with
///   `msg_id` set, so there an absent field stays absent.
/// - Every field TeamTalk sets is set, zeros and empty strings included
///   (`result_code: 0`, `UserInfo.sign_info`).
///
/// # Trust
///
/// db_proxy serves only servers: the msg_server authenticated the client and
/// already replaced the user ids in the request with the logged-in user. So,
/// like TeamTalk, db_proxy takes the ids it is given at face value. Its port
/// must therefore be reachable only from the msg_servers (bind it to a
/// private address or firewall it).
pub struct DbProxy {
    store: Arc<dyn Store>,
    limiter: LoginLimiter,
    /// Recently verified logins; `None` when the OS gave no randomness for
    /// its key (then every login runs Argon2).
    credentials: Option<CredentialCache>,
    options: DbProxyOptions,
    counters: Counters,
}

impl std::fmt::Debug for DbProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbProxy")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The reply's `attach_data`: the request's bytes, present even when the
/// request had none (see [`DbProxy`]).
fn echo(attach: &Option<Bytes>) -> Option<Bytes> {
    Some(attach.clone().unwrap_or_default())
}

fn user_info(u: &User) -> UserInfo {
    UserInfo {
        user_id: u.id,
        user_gender: u.sex,
        user_nick_name: u.nick.clone(),
        avatar_url: u.avatar.clone(),
        department_id: u.dept_id,
        email: u.email.clone(),
        user_real_name: u.name.clone(),
        user_tel: u.phone.clone(),
        user_domain: u.domain.clone(),
        status: u.status,
        sign_info: Some(u.sign_info.clone()),
    }
}

fn msg_info(m: StoredMessage) -> MsgInfo {
    MsgInfo {
        msg_id: m.msg_id,
        from_session_id: m.from,
        create_time: m.create_time,
        msg_type: wire_i32(m.msg_type),
        msg_data: Bytes::from(m.data),
    }
}

/// A stored `u32` enum value as prost's `i32` field (same bits on the wire).
fn wire_i32(v: u32) -> i32 {
    i32::from_ne_bytes(v.to_ne_bytes())
}

/// A prost `i32` enum field as the store's `u32`.
fn wire_u32(v: i32) -> u32 {
    u32::from_ne_bytes(v.to_ne_bytes())
}

fn latest_fields(l: LatestMessage) -> (u32, Bytes, i32, u32) {
    (l.msg_id, Bytes::from(l.data), wire_i32(l.msg_type), l.from)
}

impl DbProxy {
    /// A handler on `store` with the system clock and UTC quiet hours.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_options(store, DbProxyOptions::default())
    }

    /// A handler on `store` with the given clock and time zone.
    #[must_use]
    pub fn with_options(store: Arc<dyn Store>, options: DbProxyOptions) -> Self {
        Self {
            store,
            limiter: LoginLimiter::new(),
            credentials: CredentialCache::new(DEFAULT_TTL_SECS, DEFAULT_CAPACITY)
                .inspect_err(|e| warn!(error = %e, "no randomness for the credential cache; every login runs Argon2"))
                .ok(),
            options,
            counters: Counters::default(),
        }
    }

    /// The store behind the handler.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The counters right now.
    #[must_use]
    pub fn stats(&self) -> DbProxyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DbProxyStats {
            requests: get(&c.requests),
            replies: get(&c.replies),
            unimplemented: get(&c.unimplemented),
            unexpected: get(&c.unexpected),
            decode_errors: get(&c.decode_errors),
            store_errors: get(&c.store_errors),
            messages_stored: get(&c.messages_stored),
            messages_refused: get(&c.messages_refused),
            message_batches: get(&c.message_batches),
            logins_ok: get(&c.logins_ok),
            logins_cached: get(&c.logins_cached),
            logins_failed: get(&c.logins_failed),
            logins_locked: get(&c.logins_locked),
        }
    }

    /// Whether `pdu` is a login check. They cost an Argon2 verification (tens
    /// of milliseconds) and do not need ordering with message stores, so the
    /// worker runs them on their own threads.
    #[must_use]
    pub fn is_login(pdu: &Pdu) -> bool {
        pdu.is(Command::OtherValidateReq.key())
    }

    /// Handles one request and returns the reply, `None` for requests that
    /// have none (read acks, heartbeats, unreadable bodies, and what TeamTalk
    /// never answers either).
    pub fn handle(&self, pdu: &Pdu) -> Option<Pdu> {
        if let Some(prepared) = self.prepare_message(pdu) {
            return self.store_prepared(vec![prepared]).pop();
        }
        self.handle_other(pdu)
    }

    /// If `pdu` is a storable single-chat `CID_MSG_DATA`, takes it out for
    /// batching; `None` for anything else (including messages that will be
    /// refused: [`DbProxy::handle`] answers those). Counts the request.
    pub fn prepare_message(&self, pdu: &Pdu) -> Option<PreparedMessage> {
        if !pdu.is(Command::MsgData.key()) {
            return None;
        }
        let request: ImMsgData = pdu.decode_body().ok()?;
        if !matches!(
            request.msg_type,
            MSG_TYPE_SINGLE_TEXT | MSG_TYPE_SINGLE_AUDIO
        ) || request.msg_data.is_empty()
        {
            return None;
        }
        bump(&self.counters.requests);
        let new = NewMessage {
            from: request.from_user_id,
            to: request.to_session_id,
            msg_type: wire_u32(request.msg_type),
            create_time: request.create_time,
            data: request.msg_data.to_vec(),
        };
        Some(PreparedMessage {
            seq: pdu.seq(),
            request,
            new,
        })
    }

    /// Stores a run of prepared messages in one transaction (group commit)
    /// and returns their replies in the same order: the request with
    /// `msg_id` set, or 0 for a message that could not be stored.
    pub fn store_prepared(&self, batch: Vec<PreparedMessage>) -> Vec<Pdu> {
        if batch.is_empty() {
            return Vec::new();
        }
        let news: Vec<NewMessage> = batch.iter().map(|p| p.new.clone()).collect();
        bump(&self.counters.message_batches);
        let results = match self.store.store_messages(&news) {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, count = news.len(), "storing a message batch failed");
                bump(&self.counters.store_errors);
                Vec::new()
            }
        };
        let mut results = results.into_iter();
        batch
            .into_iter()
            .map(|p| {
                let msg_id = match results.next() {
                    Some(Ok(stored)) => {
                        bump(&self.counters.messages_stored);
                        stored.msg_id
                    }
                    Some(Err(e)) => {
                        self.message_store_failed(&p.new, &e);
                        0
                    }
                    // The whole batch failed (logged above).
                    None => {
                        bump(&self.counters.messages_refused);
                        0
                    }
                };
                let mut reply = p.request;
                reply.msg_id = msg_id;
                self.reply(p.seq, &reply)
            })
            .collect()
    }

    fn message_store_failed(&self, m: &NewMessage, e: &StoreError) {
        bump(&self.counters.messages_refused);
        if matches!(e, StoreError::Invalid(_)) {
            info!(from = m.from, to = m.to, error = %e, "message refused");
        } else {
            bump(&self.counters.store_errors);
            error!(from = m.from, to = m.to, error = %e, "storing a message failed");
        }
    }

    fn reply<M: CommandMessage>(&self, seq: u16, msg: &M) -> Pdu {
        bump(&self.counters.replies);
        msg.to_pdu(seq)
    }

    fn store_failed(&self, what: &'static str, e: &StoreError) {
        bump(&self.counters.store_errors);
        error!(error = %e, "{what} failed");
    }

    /// Everything but storable messages.
    fn handle_other(&self, pdu: &Pdu) -> Option<Pdu> {
        bump(&self.counters.requests);
        let seq = pdu.seq();
        let msg = match Message::decode(pdu) {
            Ok(m) => m,
            Err(e) => {
                bump(&self.counters.decode_errors);
                warn!(error = %e, "undecodable request");
                if Self::is_login(pdu) {
                    // TeamTalk answers an unreadable login with code 2.
                    let rsp = ImValidateRsp {
                        user_name: String::new(),
                        result_code: VALIDATE_INTERNAL_ERROR,
                        result_string: Some("unreadable login request".to_owned()),
                        user_info: None,
                        attach_data: Some(Bytes::new()),
                    };
                    return Some(self.reply(seq, &rsp));
                }
                return None;
            }
        };
        match msg {
            Message::OtherValidateReq(req) => Some(self.validate(seq, req)),
            Message::LoginReqPushShield(req) => Some(self.set_push_shield(seq, req)),
            Message::LoginReqQueryPushShield(req) => Some(self.query_push_shield(seq, req)),
            Message::LoginReqDevicetoken(req) => Some(self.set_device_token(seq, req)),
            Message::OtherGetDeviceTokenReq(req) => Some(self.device_tokens(seq, req)),
            Message::BuddyListRecentContactSessionRequest(req) => {
                Some(self.recent_sessions(seq, req))
            }
            Message::BuddyListUserInfoRequest(req) => Some(self.users_info(seq, req)),
            Message::BuddyListRemoveSessionReq(req) => self.remove_session(seq, req),
            Message::BuddyListAllUserRequest(req) => Some(self.all_users(seq, req)),
            Message::BuddyListDepartmentRequest(req) => Some(self.departments(seq, req)),
            Message::BuddyListChangeSignInfoRequest(req) => Some(self.change_sign_info(seq, req)),
            Message::MsgData(req) => Some(self.refuse_message(seq, req)),
            Message::MsgReadAck(req) => {
                self.read_ack(&req);
                None
            }
            Message::MsgUnreadCntRequest(req) => Some(self.unread(seq, req)),
            Message::MsgListRequest(req) => self.message_list(seq, req),
            Message::MsgGetLatestMsgIdReq(req) => self.latest_msg_id(seq, req),
            Message::MsgGetByMsgIdReq(req) => self.messages_by_id(seq, req),
            // Server heartbeats are the Session's business; one that gets
            // here is swallowed, as TeamTalk's db_proxy never echoes them.
            Message::OtherHeartbeat(_) => None,
            other => self.unimplemented(seq, other),
        }
    }

    /// Checks a login: the credential cache first, then the store (Argon2
    /// or TeamTalk's salted MD5), remembering what the store verified.
    fn verify(&self, name: &str, password: &str, now: u32) -> StoreResult<Option<User>> {
        if let Some(cache) = &self.credentials
            && let Some(id) = cache.check(name, password, now)
            && let Some(user) = self.store.users_by_ids(&[id])?.into_iter().next()
            && user.name == name
            && user.status != USER_STATUS_DEPARTED
        {
            bump(&self.counters.logins_cached);
            return Ok(Some(user));
        }
        let user = self.store.verify_login(name, password)?;
        if let (Some(cache), Some(u)) = (&self.credentials, &user) {
            cache.remember(name, password, u.id, now);
        }
        Ok(user)
    }

    fn validate(&self, seq: u16, req: ImValidateReq) -> Pdu {
        let now = (self.options.clock)();
        let mut rsp = ImValidateRsp {
            user_name: req.user_name.clone(),
            result_code: VALIDATE_OK,
            result_string: None,
            user_info: None,
            attach_data: echo(&req.attach_data),
        };
        if let Err(locked) = self.limiter.check(&req.user_name, now) {
            bump(&self.counters.logins_locked);
            warn!(user = %req.user_name, until = locked.until, "login refused: too many failures");
            rsp.result_code = VALIDATE_TOO_MANY_FAILURES;
            rsp.result_string = Some(format!(
                "too many wrong passwords for this user name; try again in {} minutes",
                locked.until.saturating_sub(now).div_ceil(60)
            ));
            return self.reply(seq, &rsp);
        }
        match self.verify(&req.user_name, &req.password, now) {
            Ok(Some(user)) => {
                bump(&self.counters.logins_ok);
                self.limiter.record_success(&req.user_name);
                debug!(user = %req.user_name, id = user.id, "login validated");
                let mut ui = user_info(&user);
                // TeamTalk reports status 0 in the login reply.
                ui.status = 0;
                rsp.result_string = Some("ok".to_owned());
                rsp.user_info = Some(ui);
            }
            Ok(None) => {
                if let Some(cache) = &self.credentials {
                    cache.forget(&req.user_name);
                }
                bump(&self.counters.logins_failed);
                self.limiter.record_failure(&req.user_name, now);
                info!(user = %req.user_name, "login refused: bad credentials");
                rsp.result_code = VALIDATE_BAD_CREDENTIALS;
                rsp.result_string = Some("wrong user name or password".to_owned());
            }
            Err(e) => {
                self.store_failed("checking a login", &e);
                rsp.result_code = VALIDATE_INTERNAL_ERROR;
                rsp.result_string = Some("server error; try again".to_owned());
            }
        }
        self.reply(seq, &rsp)
    }

    fn set_push_shield(&self, seq: u16, req: ImPushShieldReq) -> Pdu {
        let ok = self
            .store
            .set_push_shield(req.user_id, req.shield_status != 0)
            .unwrap_or_else(|e| {
                self.store_failed("setting push shield", &e);
                false
            });
        let rsp = ImPushShieldRsp {
            user_id: req.user_id,
            result_code: if ok { 0 } else { RESULT_FAILED },
            shield_status: ok.then_some(req.shield_status),
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    fn query_push_shield(&self, seq: u16, req: ImQueryPushShieldReq) -> Pdu {
        let status = self.store.push_shield(req.user_id).unwrap_or_else(|e| {
            self.store_failed("reading push shield", &e);
            None
        });
        let rsp = ImQueryPushShieldRsp {
            user_id: req.user_id,
            result_code: if status.is_some() { 0 } else { RESULT_FAILED },
            shield_status: status.map(u32::from),
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    fn set_device_token(&self, seq: u16, req: ImDeviceTokenReq) -> Pdu {
        let client_type = req.client_type.map_or(0, wire_u32);
        if let Err(e) = self
            .store
            .set_device_token(req.user_id, client_type, &req.device_token)
        {
            self.store_failed("setting a device token", &e);
        }
        // TeamTalk answers whatever happened; the reply carries no result.
        let rsp = ImDeviceTokenRsp {
            user_id: req.user_id,
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    fn in_quiet_hours(&self) -> bool {
        let local = i64::from((self.options.clock)()) + i64::from(self.options.utc_offset_secs);
        let hour = local.rem_euclid(86_400) / 3_600;
        let hour = u32::try_from(hour).unwrap_or(0);
        hour >= QUIET_FROM_HOUR || hour <= QUIET_UNTIL_HOUR
    }

    fn device_tokens(&self, seq: u16, req: ImGetDeviceTokenReq) -> Pdu {
        let tokens = self.store.device_tokens(&req.user_id).unwrap_or_else(|e| {
            self.store_failed("reading device tokens", &e);
            Vec::new()
        });
        let quiet = self.in_quiet_hours();
        let mut infos = Vec::with_capacity(tokens.len());
        for t in tokens {
            match t.client_type {
                CLIENT_TYPE_IOS => {
                    if quiet && self.store.push_shield(t.user_id).ok().flatten() == Some(true) {
                        debug!(
                            user = t.user_id,
                            "iOS push held back: shield on, quiet hours"
                        );
                        continue;
                    }
                }
                CLIENT_TYPE_ANDROID => {}
                other => {
                    debug!(
                        user = t.user_id,
                        client_type = other,
                        "token of a non-push client"
                    );
                    continue;
                }
            }
            let push_count = match self.store.unread(t.user_id) {
                Ok(u) => u.total,
                Err(e) => {
                    self.store_failed("counting unread messages", &e);
                    0
                }
            };
            infos.push(UserTokenInfo {
                user_id: t.user_id,
                user_type: wire_i32(t.client_type),
                token: t.token,
                push_count,
                push_type: PUSH_TYPE_NORMAL,
            });
        }
        let rsp = ImGetDeviceTokenRsp {
            user_token_info: infos,
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    fn recent_sessions(&self, seq: u16, req: ImRecentContactSessionReq) -> Pdu {
        let sessions = self
            .store
            .recent_sessions(req.user_id, req.latest_update_time)
            .unwrap_or_else(|e| {
                self.store_failed("listing recent sessions", &e);
                Vec::new()
            });
        let list = sessions
            .into_iter()
            .map(|s| {
                let (latest_msg_id, latest_msg_data, latest_msg_type, from) =
                    latest_fields(s.latest);
                ContactSessionInfo {
                    session_id: s.peer,
                    session_type: wire_i32(s.session_type.as_u32()),
                    session_status: wire_i32(s.status),
                    updated_time: s.updated,
                    latest_msg_id,
                    latest_msg_data,
                    latest_msg_type,
                    latest_msg_from_user_id: from,
                }
            })
            .collect();
        let rsp = ImRecentContactSessionRsp {
            user_id: req.user_id,
            contact_session_list: list,
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    fn users_info(&self, seq: u16, req: ImUsersInfoReq) -> Pdu {
        let users = self
            .store
            .users_by_ids(&req.user_id_list)
            .unwrap_or_else(|e| {
                self.store_failed("reading users", &e);
                Vec::new()
            });
        let rsp = ImUsersInfoRsp {
            user_id: req.user_id,
            user_info_list: users.iter().map(user_info).collect(),
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    fn remove_session(&self, seq: u16, req: ImRemoveSessionReq) -> Option<Pdu> {
        let Some(kind) = SessionType::from_u32(wire_u32(req.session_type)) else {
            // TeamTalk does not answer an invalid session type.
            warn!(
                session_type = req.session_type,
                "remove session: invalid session type"
            );
            return None;
        };
        let removed = self
            .store
            .remove_session(req.user_id, req.session_id, kind)
            .unwrap_or_else(|e| {
                self.store_failed("removing a session", &e);
                false
            });
        // A removed conversation no longer counts as unread.
        if removed
            && kind == SessionType::Single
            && let Err(e) = self.store.clear_unread(req.user_id, req.session_id)
        {
            self.store_failed("clearing unread after removing a session", &e);
        }
        let rsp = ImRemoveSessionRsp {
            user_id: req.user_id,
            result_code: if removed { 0 } else { RESULT_FAILED },
            session_type: req.session_type,
            session_id: req.session_id,
            attach_data: echo(&req.attach_data),
        };
        Some(self.reply(seq, &rsp))
    }

    fn all_users(&self, seq: u16, req: ImAllUserReq) -> Pdu {
        let users = self
            .store
            .users_updated_since(req.latest_update_time)
            .unwrap_or_else(|e| {
                self.store_failed("listing users", &e);
                Vec::new()
            });
        // The client keeps this as its watermark for the next request.
        let latest = users
            .iter()
            .map(|u| u.updated)
            .fold(req.latest_update_time, u32::max);
        let rsp = ImAllUserRsp {
            user_id: req.user_id,
            latest_update_time: latest,
            user_list: users.iter().map(user_info).collect(),
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    fn departments(&self, seq: u16, req: ImDepartmentReq) -> Pdu {
        let depts = self
            .store
            .departments_updated_since(req.latest_update_time)
            .unwrap_or_else(|e| {
                self.store_failed("listing departments", &e);
                Vec::new()
            });
        let latest = depts
            .iter()
            .map(|d| d.updated)
            .fold(req.latest_update_time, u32::max);
        let rsp = ImDepartmentRsp {
            user_id: req.user_id,
            latest_update_time: latest,
            dept_list: depts
                .into_iter()
                .map(|d| DepartInfo {
                    dept_id: d.id,
                    priority: d.priority,
                    dept_name: d.name,
                    parent_dept_id: d.parent_id,
                    dept_status: wire_i32(d.status),
                })
                .collect(),
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    fn change_sign_info(&self, seq: u16, req: ImChangeSignInfoReq) -> Pdu {
        let ok = self
            .store
            .update_sign_info(req.user_id, &req.sign_info)
            .unwrap_or_else(|e| {
                self.store_failed("changing sign info", &e);
                false
            });
        let rsp = ImChangeSignInfoRsp {
            user_id: req.user_id,
            result_code: if ok { 0 } else { RESULT_FAILED },
            sign_info: ok.then(|| req.sign_info.clone()),
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    /// A `CID_MSG_DATA` that [`DbProxy::prepare_message`] did not take: group
    /// messages (not stored yet), unknown types, empty bodies. Answered with
    /// `msg_id` 0, which msg_server treats as "not stored" (the sender gets no
    /// ack and may resend). TeamTalk sent no reply at all for some of these;
    /// answering keeps every request paired with a reply.
    fn refuse_message(&self, seq: u16, mut req: ImMsgData) -> Pdu {
        bump(&self.counters.messages_refused);
        match req.msg_type {
            MSG_TYPE_GROUP_TEXT | MSG_TYPE_GROUP_AUDIO => {
                bump(&self.counters.unimplemented);
                warn!(
                    from = req.from_user_id,
                    group = req.to_session_id,
                    "group message refused: group chat is not stored yet"
                );
            }
            t if t != MSG_TYPE_SINGLE_TEXT && t != MSG_TYPE_SINGLE_AUDIO => {
                warn!(
                    from = req.from_user_id,
                    msg_type = t,
                    "message of unknown type refused"
                );
            }
            _ => info!(
                from = req.from_user_id,
                to = req.to_session_id,
                "empty message refused"
            ),
        }
        req.msg_id = 0;
        self.reply(seq, &req)
    }

    fn read_ack(&self, req: &ImMsgDataReadAck) {
        match SessionType::from_u32(wire_u32(req.session_type)) {
            Some(SessionType::Single) => {
                if let Err(e) = self.store.clear_unread(req.user_id, req.session_id) {
                    self.store_failed("clearing unread", &e);
                }
            }
            Some(SessionType::Group) => {
                debug!(
                    user = req.user_id,
                    group = req.session_id,
                    "group read ack: no group unread kept"
                );
            }
            _ => warn!(
                session_type = req.session_type,
                "read ack: invalid session type"
            ),
        }
    }

    fn unread(&self, seq: u16, req: ImUnreadMsgCntReq) -> Pdu {
        let summary = self.store.unread(req.user_id).unwrap_or_else(|e| {
            self.store_failed("reading unread counts", &e);
            crate::store::UnreadSummary::default()
        });
        let list = summary
            .sessions
            .into_iter()
            .map(|s| {
                let (latest_msg_id, latest_msg_data, latest_msg_type, from) =
                    latest_fields(s.latest);
                UnreadInfo {
                    session_id: s.peer,
                    session_type: wire_i32(s.session_type.as_u32()),
                    unread_cnt: s.count,
                    latest_msg_id,
                    latest_msg_data,
                    latest_msg_type,
                    latest_msg_from_user_id: from,
                }
            })
            .collect();
        let rsp = ImUnreadMsgCntRsp {
            user_id: req.user_id,
            total_cnt: summary.total,
            unreadinfo_list: list,
            attach_data: echo(&req.attach_data),
        };
        self.reply(seq, &rsp)
    }

    /// The session kind of a message query; `None` (no reply, as TeamTalk)
    /// for an invalid one.
    fn query_kind(session_type: i32, what: &'static str) -> Option<SessionType> {
        let kind = SessionType::from_u32(wire_u32(session_type));
        if kind.is_none() {
            warn!(session_type, "{what}: invalid session type");
        }
        kind
    }

    fn message_list(&self, seq: u16, req: ImGetMsgListReq) -> Option<Pdu> {
        let kind = Self::query_kind(req.session_type, "message list")?;
        let msgs = if kind == SessionType::Single {
            self.store
                .message_list(req.user_id, req.session_id, req.msg_id_begin, req.msg_cnt)
                .unwrap_or_else(|e| {
                    self.store_failed("listing messages", &e);
                    Vec::new()
                })
        } else {
            // No group history is stored yet: an empty page, as TeamTalk
            // answers a user who is not in the group.
            Vec::new()
        };
        let rsp = ImGetMsgListRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            msg_id_begin: req.msg_id_begin,
            msg_list: msgs.into_iter().map(msg_info).collect(),
            attach_data: echo(&req.attach_data),
        };
        Some(self.reply(seq, &rsp))
    }

    fn latest_msg_id(&self, seq: u16, req: ImGetLatestMsgIdReq) -> Option<Pdu> {
        let kind = Self::query_kind(req.session_type, "latest message id")?;
        let latest = if kind == SessionType::Single {
            self.store
                .latest_msg_id(req.user_id, req.session_id)
                .unwrap_or_else(|e| {
                    self.store_failed("reading the latest message id", &e);
                    0
                })
        } else {
            0
        };
        let rsp = ImGetLatestMsgIdRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            latest_msg_id: latest,
            attach_data: echo(&req.attach_data),
        };
        Some(self.reply(seq, &rsp))
    }

    fn messages_by_id(&self, seq: u16, req: ImGetMsgByIdReq) -> Option<Pdu> {
        let kind = Self::query_kind(req.session_type, "messages by id")?;
        let msgs = if kind == SessionType::Single {
            self.store
                .messages_by_ids(req.user_id, req.session_id, &req.msg_id_list)
                .unwrap_or_else(|e| {
                    self.store_failed("reading messages by id", &e);
                    Vec::new()
                })
        } else {
            Vec::new()
        };
        let rsp = ImGetMsgByIdRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            msg_list: msgs.into_iter().map(msg_info).collect(),
            attach_data: echo(&req.attach_data),
        };
        Some(self.reply(seq, &rsp))
    }

    /// Requests for features db_proxy does not store yet, and anything else
    /// it never serves. Where the reply type has a `result_code`, the
    /// requester gets a failure so it is not left waiting.
    fn unimplemented(&self, seq: u16, msg: Message) -> Option<Pdu> {
        let command = msg.command();
        let name = command.map_or("(unknown)", Command::name);
        let reply = match msg {
            Message::GroupCreateRequest(req) => {
                let rsp = failed_group_create(&req);
                Some(self.reply(seq, &rsp))
            }
            Message::GroupChangeMemberRequest(req) => {
                let rsp = failed_group_change(&req);
                Some(self.reply(seq, &rsp))
            }
            Message::GroupShieldGroupRequest(req) => {
                let rsp = failed_group_shield(&req);
                Some(self.reply(seq, &rsp))
            }
            Message::BuddyListChangeAvatarRequest(req) => {
                let rsp = failed_change_avatar(&req);
                Some(self.reply(seq, &rsp))
            }
            Message::GroupNormalListRequest(_)
            | Message::GroupInfoRequest(_)
            | Message::OtherGetShieldReq(_)
            | Message::FileHasOfflineReq(_)
            | Message::FileAddOfflineReq(_)
            | Message::FileDelOfflineReq(_) => None,
            other => {
                bump(&self.counters.unexpected);
                warn!(
                    command = name,
                    key = ?other.key(),
                    "request db_proxy does not serve; ignored"
                );
                return None;
            }
        };
        bump(&self.counters.unimplemented);
        warn!(
            command = name,
            answered = reply.is_some(),
            "not implemented by db_proxy yet"
        );
        reply
    }
}

fn failed_group_create(req: &ImGroupCreateReq) -> ImGroupCreateRsp {
    ImGroupCreateRsp {
        user_id: req.user_id,
        result_code: RESULT_FAILED,
        group_id: None,
        group_name: req.group_name.clone(),
        user_id_list: Vec::new(),
        attach_data: echo(&req.attach_data),
    }
}

fn failed_group_change(req: &ImGroupChangeMemberReq) -> ImGroupChangeMemberRsp {
    ImGroupChangeMemberRsp {
        user_id: req.user_id,
        change_type: req.change_type,
        result_code: RESULT_FAILED,
        group_id: req.group_id,
        cur_user_id_list: Vec::new(),
        chg_user_id_list: Vec::new(),
        attach_data: echo(&req.attach_data),
    }
}

fn failed_group_shield(req: &ImGroupShieldReq) -> ImGroupShieldRsp {
    ImGroupShieldRsp {
        user_id: req.user_id,
        group_id: req.group_id,
        result_code: RESULT_FAILED,
        attach_data: echo(&req.attach_data),
    }
}

fn failed_change_avatar(req: &ImChangeAvatarReq) -> ImChangeAvatarRsp {
    ImChangeAvatarRsp {
        user_id: req.user_id,
        result_code: RESULT_FAILED,
        attach_data: echo(&req.attach_data),
    }
}
