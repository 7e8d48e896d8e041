//! [`DbProxy`]: one request PDU in, at most one reply PDU out, against a
//! [`Store`]. No sockets, no threads; the worker and the network glue build
//! on it.
//!
//! This file holds the handler itself: its options, counters and entry
//! points, and the one place where a request that could not be served gets
//! its failure answer ([`DbProxy::fail`]). The requests are served by
//! domain in [`super::cmd`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::ext::RequestFailedCode;
use teamtalk_proto::{Command, CommandKey, Message, Pdu};
use tracing::{debug, error, warn};

use super::cmd::{Failed, echo};
use super::credcache::{CredentialCache, DEFAULT_MAX_BYTES, DEFAULT_TTL_SECS};
use super::limiter::LoginLimiter;
use crate::clip::clip;
use crate::rules::failure::{self, FailureAnswer};
use crate::rules::sizing;
use crate::store::{Clock, Store, StoreError};

pub use super::cmd::messages::PreparedMessage;

/// `IMValidateRsp.result_code`: the password matched.
pub const VALIDATE_OK: u32 = 0;
/// `IMValidateRsp.result_code`: unknown name, wrong password or departed user.
pub const VALIDATE_BAD_CREDENTIALS: u32 = 1;
/// `IMValidateRsp.result_code`: the request could not be read, or the store
/// failed (the failure answer of [`failure`]).
pub const VALIDATE_INTERNAL_ERROR: u32 = failure::VALIDATE_SERVER_ERROR;
/// `IMValidateRsp.result_code`: too many failures for this name
/// (TeamTalk's `DB_VALIDATE_FAILED`, 6).
pub const VALIDATE_TOO_MANY_FAILURES: u32 = 6;

/// Generic failure code of replies with a `result_code` field.
pub const RESULT_FAILED: u32 = failure::RESULT_FAILED;

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
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) replies: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) unimplemented: AtomicU64,
    pub(super) unexpected: AtomicU64,
    pub(super) decode_errors: AtomicU64,
    pub(super) store_errors: AtomicU64,
    pub(super) messages_stored: AtomicU64,
    pub(super) messages_refused: AtomicU64,
    pub(super) messages_duplicate: AtomicU64,
    pub(super) message_batches: AtomicU64,
    pub(super) pages_cut: AtomicU64,
    pub(super) logins_ok: AtomicU64,
    pub(super) logins_cached: AtomicU64,
    pub(super) logins_failed: AtomicU64,
    pub(super) logins_locked: AtomicU64,
    pub(super) logins_oversized: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of [`DbProxy`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbProxyStats {
    /// PDUs handled (message stores included).
    pub requests: u64,
    /// Replies produced, failure answers included.
    pub replies: u64,
    /// Requests answered with a failure: the reply's failure `result_code`
    /// or `IMRequestFailed` (see [`crate::rules::failure`]).
    pub failures: u64,
    /// Requests for features not stored yet (offline files, avatars).
    pub unimplemented: u64,
    /// PDUs db_proxy never serves (e.g. client-only commands, unknown ids).
    pub unexpected: u64,
    /// Bodies that did not decode as their command's message.
    pub decode_errors: u64,
    /// Store operations that failed.
    pub store_errors: u64,
    /// Messages stored (single and group).
    pub messages_stored: u64,
    /// Messages refused as not storable (a group message from a non-member
    /// among them), answered with `msg_id` 0.
    pub messages_refused: u64,
    /// Resends not stored again (their dedupe key was known), answered
    /// with the first `msg_id` and `duplicate` set.
    pub messages_duplicate: u64,
    /// Store transactions used for messages (one per group commit).
    pub message_batches: u64,
    /// List replies that left entries for the next page because the frame
    /// limit was near (`crate::rules::sizing`).
    pub pages_cut: u64,
    /// Successful logins.
    pub logins_ok: u64,
    /// Successful logins answered from the credential cache (no Argon2).
    pub logins_cached: u64,
    /// Logins refused for bad credentials.
    pub logins_failed: u64,
    /// Logins refused by the failure limiter.
    pub logins_locked: u64,
    /// Logins refused because the name or password was longer than
    /// [`MAX_CREDENTIAL_LEN`](crate::rules::sizing::MAX_CREDENTIAL_LEN).
    pub logins_oversized: u64,
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
/// # Where we differ: every request is answered
///
/// TeamTalk's db_proxy answered a failed store read with an empty list,
/// and some requests (unknown ones, undecodable bodies, invalid session
/// types) with nothing. Here a request that cannot be served gets the
/// failure answer of [`crate::rules::failure`]: its own reply with a
/// failure `result_code` where the reply type has one, else our extension
/// `IMRequestFailed` (0x0007/0x0790) with the request's ids, a
/// [`RequestFailedCode`] and the request's `attach_data`. Only heartbeats,
/// read acks that were applied, and `IMRequestFailed` itself get no answer.
///
/// # Trust
///
/// db_proxy serves only servers: the msg_server authenticated the client and
/// already replaced the user ids in the request with the logged-in user. So,
/// like TeamTalk, db_proxy takes the ids it is given at face value. Its port
/// must therefore be reachable only from the msg_servers (bind it to a
/// private address or firewall it).
pub struct DbProxy {
    pub(super) store: Arc<dyn Store>,
    pub(super) limiter: LoginLimiter,
    /// Recently verified logins; `None` when the OS gave no randomness for
    /// its key (then every login runs Argon2).
    pub(super) credentials: Option<CredentialCache>,
    pub(super) options: DbProxyOptions,
    pub(super) counters: Counters,
    /// Refused logins: one INFO line per interval, the rest at debug.
    pub(super) refusal_log: std::sync::Mutex<crate::runtime::log_gate::LogGate<u32>>,
}

impl std::fmt::Debug for DbProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbProxy")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Commands never answered, whatever happens to them: heartbeats (the
/// Session's business; TeamTalk's db_proxy never echoes them) and failure
/// answers from a peer (answering a failure with a failure could loop).
/// The reason given when a reply would exceed the frame limit.
const TOO_LARGE: &str = "reply would exceed the frame limit";

fn never_answered(key: CommandKey) -> bool {
    key == Command::OtherHeartbeat.key() || key == Command::OtherRequestFailed.key()
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
            refusal_log: std::sync::Mutex::default(),
            credentials: CredentialCache::new(DEFAULT_TTL_SECS, DEFAULT_MAX_BYTES)
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

    /// The login-failure limiter (e.g. to see how much it holds).
    #[must_use]
    pub fn limiter(&self) -> &LoginLimiter {
        &self.limiter
    }

    /// The credential cache; `None` when the OS gave no randomness for its
    /// key.
    #[must_use]
    pub fn credentials(&self) -> Option<&CredentialCache> {
        self.credentials.as_ref()
    }

    /// The counters right now.
    #[must_use]
    pub fn stats(&self) -> DbProxyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DbProxyStats {
            requests: get(&c.requests),
            replies: get(&c.replies),
            failures: get(&c.failures),
            unimplemented: get(&c.unimplemented),
            unexpected: get(&c.unexpected),
            decode_errors: get(&c.decode_errors),
            store_errors: get(&c.store_errors),
            messages_stored: get(&c.messages_stored),
            messages_refused: get(&c.messages_refused),
            messages_duplicate: get(&c.messages_duplicate),
            message_batches: get(&c.message_batches),
            pages_cut: get(&c.pages_cut),
            logins_ok: get(&c.logins_ok),
            logins_cached: get(&c.logins_cached),
            logins_failed: get(&c.logins_failed),
            logins_locked: get(&c.logins_locked),
            logins_oversized: get(&c.logins_oversized),
        }
    }

    /// Whether `pdu` is a login check. They cost an Argon2 verification (tens
    /// of milliseconds) and do not need ordering with message stores, so the
    /// worker runs them on their own threads.
    #[must_use]
    pub fn is_login(pdu: &Pdu) -> bool {
        pdu.is(Command::OtherValidateReq.key())
    }

    /// Handles one request and returns the reply: the answer, or the
    /// failure answer when the request could not be served. `None` only
    /// for what has no reply: applied read acks, heartbeats, and
    /// `IMRequestFailed` from a peer.
    pub fn handle(&self, pdu: &Pdu) -> Option<Pdu> {
        if let Some(prepared) = self.prepare_message(pdu) {
            return self.store_prepared(vec![prepared]).pop();
        }
        self.handle_other(pdu)
    }

    /// Builds a reply and counts it.
    pub(super) fn reply<M: CommandMessage>(&self, seq: u16, msg: &M) -> Pdu {
        bump(&self.counters.replies);
        msg.to_pdu(seq)
    }

    /// Logs and counts a store error; the request it broke is answered with
    /// the returned failure.
    pub(super) fn store_failed(&self, what: &'static str, e: &StoreError) -> Failed {
        bump(&self.counters.store_errors);
        error!(error = %e, "{what} failed");
        Failed::store(what)
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
                if never_answered(pdu.key()) {
                    return None;
                }
                // The failure answer is built from the command's empty
                // message: the request's own fields (attach_data included)
                // could not be read.
                let blank = Command::from_key(pdu.key())
                    .and_then(|c| c.decode_body(Bytes::new()).ok())
                    .unwrap_or_else(|| Message::Unknown(pdu.clone()));
                return Some(self.fail(seq, &blank, Failed::bad_request("undecodable body")));
            }
        };
        if never_answered(pdu.key()) {
            if let Message::OtherRequestFailed(f) = &msg {
                warn!(
                    service_id = f.service_id,
                    command_id = f.command_id,
                    code = f.result_code,
                    reason = %clip(f.reason.as_deref().unwrap_or("")),
                    "a peer could not serve a request of ours"
                );
            }
            return None;
        }
        let reply = match self.serve(seq, &msg) {
            Ok(reply) => reply,
            Err(failed) => Some(self.fail(seq, &msg, failed)),
        };
        reply.map(|r| self.within_frame(seq, &msg, r))
    }

    /// `reply` if it fits a frame; otherwise the failure answer, and when
    /// even that cannot carry the request's `attach_data` (nearly a frame
    /// of it, which no msg_server sends), `IMRequestFailed` without it.
    ///
    /// A reply echoes the request's `attach_data`, so a request that
    /// fits a frame can still make a reply that does not (a login, a user's
    /// info, a stored message's new id): found by the `db_proxy` fuzz
    /// target. Such a reply used to be built and then dropped by the
    /// runtime as too large, and the requester waited for nothing.
    pub(super) fn within_frame(&self, seq: u16, request: &Message, reply: Pdu) -> Pdu {
        if sizing::fits_frame(reply.body.len()) {
            return reply;
        }
        warn!(
            key = %reply.key(),
            bytes = reply.wire_len(),
            "reply over the frame limit; answering with the failure instead"
        );
        // The reply was counted; the failure answer replaces it.
        self.counters.replies.fetch_sub(1, Ordering::Relaxed);
        let failed = self.fail(seq, request, Failed::too_large(TOO_LARGE));
        if sizing::fits_frame(failed.body.len()) {
            return failed;
        }
        failure::request_failed(
            request.key(),
            None,
            RequestFailedCode::RequestFailedServerError,
            TOO_LARGE,
            seq,
        )
    }

    /// The failure answer to `request` (the one place that builds it): the
    /// reply with its failure `result_code` where the rule table of
    /// [`crate::rules::failure`] has one, else `IMRequestFailed`. Commands
    /// db_proxy never serves always get `IMRequestFailed`, which names the
    /// command, rather than a reply a msg_server would not expect from here.
    /// `attach_data` is echoed as in every reply (present, maybe empty).
    pub(super) fn fail(&self, seq: u16, request: &Message, failed: Failed) -> Pdu {
        bump(&self.counters.failures);
        bump(&self.counters.replies);
        let command = request.command().map_or("(unknown)", Command::name);
        let key = request.key();
        match failed.code {
            // Logged where the store failed, with the store's error.
            RequestFailedCode::RequestFailedServerError => {
                debug!(command, what = failed.what, "answered with a failure");
            }
            RequestFailedCode::RequestFailedNotImplemented => {
                bump(&self.counters.unimplemented);
                warn!(
                    command,
                    what = failed.what,
                    "not implemented by db_proxy yet"
                );
            }
            RequestFailedCode::RequestFailedUnsupported => {
                bump(&self.counters.unexpected);
                warn!(command, %key, "request db_proxy does not serve");
            }
            RequestFailedCode::RequestFailedBadRequest
            | RequestFailedCode::RequestFailedNone
            | RequestFailedCode::RequestFailedRateLimited => {
                warn!(command, what = failed.what, "bad request");
            }
            // A member-only group operation by a non-member: logged where
            // the store refused it.
            RequestFailedCode::RequestFailedForbidden => {
                debug!(command, what = failed.what, "refused: not allowed");
            }
        }
        let mut request = request.clone();
        let attach = request.attached_mut().map(|m| {
            let echoed = echo(&m.attach_data().cloned());
            m.set_attach_data(echoed.clone());
            echoed
        });
        if failed.code != RequestFailedCode::RequestFailedUnsupported {
            let user = failure::requester(&request).unwrap_or(0);
            if let Some(FailureAnswer::Reply(pdu)) = failure::failure_reply(&request, user, seq) {
                return pdu;
            }
        }
        failure::request_failed(key, attach.flatten(), failed.code, failed.what, seq)
    }
}
