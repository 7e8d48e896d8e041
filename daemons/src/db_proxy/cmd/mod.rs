//! db_proxy's requests, served by domain, one file per family (in the
//! manner of mini-redis's `cmd/`):
//!
//! | file | requests |
//! |---|---|
//! | [`login`] | 0x0703 validate, with the failure limiter and the credential cache |
//! | [`users`] | 0x0204 users by id, 0x0208 changed users, 0x0210 departments, 0x0213 sign info (0x020c avatar: not stored yet) |
//! | [`messages`] | 0x0301 store (one by one or batched, single and group), 0x0303 read ack, 0x0307 unread, 0x0309 history, 0x030b latest id, 0x030d by id |
//! | [`sessions`] | 0x0201 recent sessions, 0x0206 remove a session |
//! | [`push`] | 0x0108 device token, 0x010c / 0x010e push shield, 0x0705 device tokens |
//! | [`groups`] | 0x0401–0x0409 groups, 0x0711 group shield of members, 0x0791 a user's groups |
//! | [`files`] | 0x0509 offline files waiting, 0x050b / 0x050c record / forget one |
//!
//! [`domain`] is the dispatch table: the one place that says which file
//! serves a command. A new family gets a [`Domain`] variant and an arm in
//! [`DbProxy::serve`].
//!
//! Each handler returns its typed reply or a [`Failed`]; it never builds a
//! failure answer itself. [`DbProxy::fail`] turns every [`Failed`] into the
//! answer `crate::rules::failure` prescribes.

pub(super) mod files;
pub(super) mod groups;
pub(super) mod login;
pub(super) mod messages;
pub(super) mod push;
pub(super) mod sessions;
pub(super) mod users;

use bytes::Bytes;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::{MsgInfo, UserInfo};
use teamtalk_proto::pb::im::ext::RequestFailedCode;
use teamtalk_proto::{Command, Message, Pdu};

use tracing::{debug, warn};

use super::handler::{DbProxy, bump};
use crate::rules::sizing::{self, Filled};
use crate::store::{LatestMessage, StoredMessage, User};

/// Why a request was not served. Handlers return it; [`DbProxy::fail`]
/// answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failed {
    /// What goes into `IMRequestFailed.result_code`.
    pub(super) code: RequestFailedCode,
    /// What could not be done, for logs and `IMRequestFailed.reason`.
    pub(super) what: &'static str,
}

impl Failed {
    /// The store failed (already logged by `DbProxy::store_failed`).
    pub(super) const fn store(what: &'static str) -> Self {
        Self {
            code: RequestFailedCode::RequestFailedServerError,
            what,
        }
    }

    /// A request of a domain db_proxy does not store yet.
    pub(super) const fn not_implemented(what: &'static str) -> Self {
        Self {
            code: RequestFailedCode::RequestFailedNotImplemented,
            what,
        }
    }

    /// An unreadable body or an invalid value.
    pub(super) const fn bad_request(what: &'static str) -> Self {
        Self {
            code: RequestFailedCode::RequestFailedBadRequest,
            what,
        }
    }

    /// A command db_proxy never serves.
    pub(super) const fn unsupported(what: &'static str) -> Self {
        Self {
            code: RequestFailedCode::RequestFailedUnsupported,
            what,
        }
    }

    /// Not even one entry of the reply fits a frame (see
    /// [`crate::rules::sizing`]): a server error, since the data, not the
    /// request, is at fault.
    pub(super) const fn too_large(what: &'static str) -> Self {
        Self {
            code: RequestFailedCode::RequestFailedServerError,
            what,
        }
    }
}

/// A handler's result.
pub(super) type Served<T> = Result<T, Failed>;

/// The families of requests db_proxy serves, one file each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Domain {
    /// [`login`].
    Login,
    /// [`users`].
    Users,
    /// [`messages`].
    Messages,
    /// [`sessions`].
    Sessions,
    /// [`push`].
    Push,
    /// [`groups`].
    Groups,
    /// [`files`].
    Files,
}

/// The dispatch table: which family serves `command`; `None` for commands
/// db_proxy never serves (client-only commands, replies, notifications).
pub(super) const fn domain(command: Command) -> Option<Domain> {
    use Command as C;
    Some(match command {
        C::OtherValidateReq => Domain::Login,
        C::BuddyListUserInfoRequest
        | C::BuddyListAllUserRequest
        | C::BuddyListDepartmentRequest
        | C::BuddyListChangeSignInfoRequest
        | C::BuddyListChangeAvatarRequest => Domain::Users,
        C::MsgData
        | C::MsgReadAck
        | C::MsgUnreadCntRequest
        | C::MsgListRequest
        | C::MsgGetLatestMsgIdReq
        | C::MsgGetByMsgIdReq => Domain::Messages,
        C::BuddyListRecentContactSessionRequest | C::BuddyListRemoveSessionReq => Domain::Sessions,
        C::LoginReqDevicetoken
        | C::LoginReqPushShield
        | C::LoginReqQueryPushShield
        | C::OtherGetDeviceTokenReq => Domain::Push,
        C::GroupNormalListRequest
        | C::GroupInfoRequest
        | C::GroupCreateRequest
        | C::GroupChangeMemberRequest
        | C::GroupShieldGroupRequest
        | C::OtherGetShieldReq
        | C::OtherUserGroupsReq => Domain::Groups,
        C::FileHasOfflineReq | C::FileAddOfflineReq | C::FileDelOfflineReq => Domain::Files,
        _ => return None,
    })
}

impl DbProxy {
    /// Serves one decoded request through the dispatch table: the reply,
    /// `None` for a request that has none (a read ack), or why it failed.
    pub(super) fn serve(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        let Some(command) = msg.command() else {
            return Err(Failed::unsupported("command id outside TeamTalk's table"));
        };
        match domain(command) {
            Some(Domain::Login) => self.serve_login(seq, msg),
            Some(Domain::Users) => self.serve_users(seq, msg),
            Some(Domain::Messages) => self.serve_messages(seq, msg),
            Some(Domain::Sessions) => self.serve_sessions(seq, msg),
            Some(Domain::Push) => self.serve_push(seq, msg),
            Some(Domain::Groups) => self.serve_groups(seq, msg),
            Some(Domain::Files) => self.serve_files(seq, msg),
            None => Err(Failed::unsupported("db_proxy does not serve this command")),
        }
    }

    /// A served reply as a PDU.
    fn answer<M: CommandMessage>(&self, seq: u16, served: Served<M>) -> Served<Option<Pdu>> {
        served.map(|rsp| Some(self.reply(seq, &rsp)))
    }

    /// The page of `items` a reply whose other fields encode to `base_len`
    /// bytes can carry in its list field `tag` ([`crate::rules::sizing`]).
    /// A page that leaves entries out is logged and counted; a reply that
    /// cannot carry even one is the failure `Failed::too_large`.
    fn page<M: prost::Message>(
        &self,
        what: &'static str,
        base_len: usize,
        tag: u32,
        items: impl IntoIterator<Item = M>,
    ) -> Served<Filled<M>> {
        match sizing::fill(base_len, tag, items) {
            Ok(filled) => {
                if filled.left_out > 0 {
                    bump(&self.counters.pages_cut);
                    debug!(
                        what,
                        taken = filled.page.len(),
                        left_out = filled.left_out,
                        "reply page full below the frame limit"
                    );
                }
                Ok(filled)
            }
            Err(e) => {
                warn!(what, needed = e.needed, "reply cannot fit a frame");
                Err(Failed::too_large("reply would exceed the frame limit"))
            }
        }
    }
}

/// How many entries of an incremental list (sorted oldest change first,
/// `updated` ascending) a reply carries when the first `fits` of them fit
/// its page. The client keeps the newest `updated` it got as its watermark
/// and next asks for what changed after it (`strict`: `updated > t`, as
/// for departments and sessions) or since it (`updated >= t`, users). With
/// `>`, entries sharing the watermark's time but left out would never be
/// sent, so the page ends before that time instead; when every entry of
/// the page shares it, the page is kept as it is (nothing better exists
/// within TeamTalk's one-number watermark).
fn watermark_cut(updated: &[u32], fits: usize, strict: bool) -> usize {
    if fits >= updated.len() || fits == 0 || !strict {
        return fits;
    }
    let boundary = updated[fits];
    let cut = updated[..fits].partition_point(|&u| u < boundary);
    if cut == 0 {
        warn!(
            updated = boundary,
            "a page of entries changed in the same second; some are left out for good"
        );
        return fits;
    }
    cut
}

/// Too many ids in one request: the failure answer, with a log line.
fn too_many_ids(what: &'static str, got: usize, max: usize) -> Failed {
    warn!(what, got, max, "request names too many ids");
    Failed::bad_request("request names too many ids")
}

/// A message routed to a family that does not serve it: a dispatch-table
/// slip, answered rather than panicking.
fn misrouted(msg: &Message) -> Served<Option<Pdu>> {
    tracing::error!(command = ?msg.command(), "dispatch table and handlers disagree");
    Err(Failed::unsupported("misrouted inside db_proxy"))
}

/// The reply's `attach_data`: the request's bytes, present even when the
/// request had none (see [`DbProxy`]).
#[allow(clippy::ref_option)] // matches the generated field's type
pub(super) fn echo(attach: &Option<Bytes>) -> Option<Bytes> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_cuts_never_split_a_second_under_strict_watermarks() {
        // Everything fits, or nothing to leave out.
        assert_eq!(watermark_cut(&[1, 2, 3], 3, true), 3);
        assert_eq!(watermark_cut(&[], 0, true), 0);
        // The cut falls between two times: kept.
        assert_eq!(watermark_cut(&[1, 2, 3, 4], 2, true), 2);
        // The cut splits second 2: the page ends before it.
        assert_eq!(watermark_cut(&[1, 2, 2, 2, 3], 2, true), 1);
        assert_eq!(watermark_cut(&[1, 1, 2, 2, 2], 4, true), 2);
        // `>=` watermarks send second 2 again: no need to step back.
        assert_eq!(watermark_cut(&[1, 2, 2, 2, 3], 2, false), 2);
        // A page wholly inside one second stays as it is.
        assert_eq!(watermark_cut(&[5, 5, 5], 2, true), 2);
    }

    /// Every command the table gives a served family is taken by that
    /// family's handler (a slip would answer "misrouted").
    #[test]
    fn every_routed_command_is_handled_by_its_family() {
        let store = crate::store::SqliteStore::open_in_memory(crate::store::StoreOptions {
            hash_params: crate::password::HashParams::INSECURE_FAST,
            clock: std::sync::Arc::new(|| 0),
            applier_nice: 0,
        })
        .unwrap();
        let proxy = DbProxy::new(std::sync::Arc::new(store));
        let mut routed = 0;
        for &command in Command::ALL {
            let Some(d) = domain(command) else {
                continue;
            };
            routed += 1;
            let msg = command.decode_body(Bytes::new()).unwrap();
            let result = proxy.serve(1, &msg);
            if let Err(f) = result {
                assert_ne!(
                    f.code,
                    RequestFailedCode::RequestFailedUnsupported,
                    "{command} routed to {d:?} but not handled there"
                );
            }
        }
        assert_eq!(routed, 28);
    }

    /// db_proxy serves only requests, and every request msg_server sends it
    /// is in the table.
    #[test]
    fn the_table_holds_requests_only() {
        for &command in Command::ALL {
            if domain(command).is_some() {
                let one_way = matches!(
                    command,
                    Command::MsgReadAck | Command::FileAddOfflineReq | Command::FileDelOfflineReq
                );
                assert_eq!(
                    crate::rules::failure::reply_command(command).is_some(),
                    !one_way,
                    "{command}"
                );
            }
        }
    }
}
