//! The push path: after a message is stored, its recipients whose phones
//! are not connected anywhere in the cluster are notified through a
//! push_server.
//!
//! Only the msg_server that stored the message (the sender's) pushes, so
//! a group message is pushed once per member however many msg_servers
//! fan it out (TeamTalk ran the path on every msg_server, pushing
//! duplicates). Its steps, each a request with its id in `attach_data`:
//!
//! 1. group message: the members (0x0403 to db_proxy, as the sender), then
//!    the members' group shields (0x0711): muted members are left out;
//! 2. presence over the cluster (0x020a to route_server with `user_id` 0,
//!    which makes route_server add each user's mobile sessions, our
//!    extension): a recipient with a phone online gets the message on it
//!    and no push; one with only a PC online is pushed silently
//!    (`push_type` 2, TeamTalk's rule), one offline normally;
//! 3. device tokens (0x0705; db_proxy leaves out iOS tokens of users in
//!    quiet hours with their push shield on);
//! 4. 0x070f to the first push_server link up, with TeamTalk's `flash`
//!    (`nick:text` cut at 40 bytes, or TeamTalk's generic text for images
//!    and unknown senders) and `data` (`{"from_id","group_id","msg_type"}`),
//!    and `push_key` = `from:to:msg_id` so push_server sends once.
//!
//! 0x0710's results are counted; an invalid token's user has it removed
//! (0x0108 with an empty token to db_proxy, as at logout, naming the token
//! in `invalid_token` so that a token the user registered meanwhile stays).
//! Without a push_server link configured none of this runs.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

use teamtalk_proto::pb::im::base_define::{GroupVersionInfo, UserTokenInfo};
use teamtalk_proto::pb::im::buddy::ImUsersStatReq;
use teamtalk_proto::pb::im::group::ImGroupInfoListReq;
use teamtalk_proto::pb::im::login::ImDeviceTokenReq;
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::pb::im::server::{ImGetDeviceTokenReq, ImGroupGetShieldReq, ImPushToUserReq};
use teamtalk_proto::{Command, Message};
use tracing::{debug, info, warn};

use super::{Actions, MsgApp, Pending, PendingKind, Upstream};
use crate::rules::sessions::{is_audio, is_group_message};
use crate::rules::sizing::MAX_USERS_INFO_IDS;

/// TeamTalk's limit on the notification text (`IOS_PUSH_FLASH_MAX_LENGTH`).
const FLASH_MAX: usize = 40;
/// TeamTalk's text for images and unknown senders ("you received a message").
pub const GENERIC_FLASH: &str = "您收到了一条消息";
/// TeamTalk's markers around an image link in a message.
const PIC_PREFIX: &str = "&$#@~^@[{:";
const PIC_SUFFIX: &str = ":}]&$~@#@";
/// `push_type` of a silent push.
const PUSH_SILENT: u32 = 2;
/// push_server's result for a token the service refused.
const RESULT_INVALID_TOKEN: u32 = 2;

/// Where a push is along its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushStep {
    Members,
    Shields,
    Presence,
    Tokens,
}

/// One message's push, carried from step to step.
#[derive(Debug, Clone)]
pub(super) struct PushPlan {
    from: u32,
    to: u32,
    group: bool,
    flash: String,
    data: String,
    key: String,
    /// Recipients with only a PC online (pushed silently).
    pc_online: HashSet<u32>,
}

/// The push path's settings and counters.
#[derive(Debug, Default)]
pub(super) struct PushState {
    /// The `aesKey` messages are encoded with (TeamTalk's default).
    pub(super) aes_key: Option<[u8; 32]>,
    /// Nick names of users logged in here (for the flash text).
    /// (`Box<str>`: one per user online here, and never appended to.)
    pub(super) nicks: std::collections::HashMap<u32, Box<str>>,
    /// Push requests (0x070f) sent.
    pub(super) requests: u64,
    /// Tokens in them.
    pub(super) tokens: u64,
    /// Recipients not pushed: a phone of theirs is online.
    pub(super) skipped_online: u64,
    /// Members not pushed: they muted the group.
    pub(super) skipped_shielded: u64,
    /// Pushes abandoned (a step failed or no push_server was up).
    pub(super) failed: u64,
    /// push_server results, by code.
    pub(super) results: std::collections::BTreeMap<u32, u64>,
}

/// TeamTalk's notification text for a message.
#[must_use]
pub fn flash_text(msg_type: i32, body: &[u8], nick: Option<&str>, key: &[u8; 32]) -> String {
    let Some(nick) = nick else {
        return GENERIC_FLASH.to_owned();
    };
    let text = if is_audio(msg_type) {
        if is_group_message(msg_type) {
            format!("{nick}在群聊中发送了一条语音消息")
        } else {
            format!("{nick}给您发送了一条语音消息")
        }
    } else {
        let Some(text) =
            crate::rules::text::decode(body, key).or_else(|| String::from_utf8(body.to_vec()).ok())
        else {
            return GENERIC_FLASH.to_owned();
        };
        if let (Some(a), Some(b)) = (text.find(PIC_PREFIX), text.find(PIC_SUFFIX))
            && a < b
        {
            return GENERIC_FLASH.to_owned();
        }
        format!("{nick}:{text}")
    };
    let max = FLASH_MAX - 3;
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// TeamTalk's `data` JSON.
#[must_use]
pub fn push_data(msg_type: i32, from: u32, to: u32) -> String {
    let mut v = serde_json::json!({ "msg_type": msg_type, "from_id": from });
    if is_group_message(msg_type) {
        v["group_id"] = serde_json::json!(to);
    }
    v.to_string()
}

impl<C: Copy + Eq + Hash + Debug> MsgApp<C> {
    /// Whether a push_server link is configured.
    pub(super) fn push_configured(&self) -> bool {
        self.links.iter().any(|(l, _)| l.kind == Upstream::Push)
    }

    /// Starts the push path for a stored message sent on `conn`.
    pub(super) fn start_push(&mut self, conn: C, m: &ImMsgData, out: &mut Actions<C>) {
        if !self.push_configured() {
            return;
        }
        let key = self
            .push
            .aes_key
            .unwrap_or(*crate::rules::text::DEFAULT_KEY);
        let nick = self.push.nicks.get(&m.from_user_id).map(AsRef::as_ref);
        let group = is_group_message(m.msg_type);
        let plan = PushPlan {
            from: m.from_user_id,
            to: m.to_session_id,
            group,
            flash: flash_text(m.msg_type, &m.msg_data, nick, &key),
            data: push_data(m.msg_type, m.from_user_id, m.to_session_id),
            key: format!("{}:{}:{}", m.from_user_id, m.to_session_id, m.msg_id),
            pc_online: HashSet::new(),
        };
        if group {
            let req = ImGroupInfoListReq {
                user_id: plan.from,
                group_version_list: vec![GroupVersionInfo {
                    group_id: plan.to,
                    version: 0,
                }],
                attach_data: None,
            };
            self.push_step(conn, PushStep::Members, plan, Upstream::Db, req.into(), out);
        } else {
            let to = plan.to;
            self.ask_presence(conn, plan, vec![to], out);
        }
    }

    fn push_step(
        &mut self,
        conn: C,
        step: PushStep,
        plan: PushPlan,
        upstream: Upstream,
        msg: Message,
        out: &mut Actions<C>,
    ) {
        let user = plan.from;
        let sent = self.forward_with(
            conn,
            0,
            user,
            upstream,
            PendingKind::Push(step),
            msg,
            super::Forward {
                push: Some(Box::new(plan)),
                ..super::Forward::default()
            },
            out,
        );
        if !sent {
            self.push.failed += 1;
            debug!(?step, "push step could not be sent");
        }
    }

    fn ask_presence(&mut self, conn: C, plan: PushPlan, users: Vec<u32>, out: &mut Actions<C>) {
        if users.is_empty() {
            return;
        }
        // user_id 0: a server's query (route_server adds mobile sessions).
        let req = ImUsersStatReq {
            user_id: 0,
            user_id_list: users,
            attach_data: None,
        };
        self.push_step(
            conn,
            PushStep::Presence,
            plan,
            Upstream::Route,
            req.into(),
            out,
        );
    }

    /// A reply to one of the push path's requests.
    pub(super) fn push_reply(
        &mut self,
        p: Pending<C>,
        step: PushStep,
        msg: Message,
        out: &mut Actions<C>,
    ) {
        let Some(mut plan) = p.push.map(|b| *b) else {
            return;
        };
        match (step, msg) {
            (PushStep::Members, Message::GroupInfoResponse(rsp)) => {
                let Some(info) = rsp
                    .group_info_list
                    .into_iter()
                    .find(|g| g.group_id == plan.to)
                else {
                    debug!(group = plan.to, "group not found for its push");
                    return;
                };
                let mut members: Vec<u32> = info
                    .group_member_list
                    .into_iter()
                    .filter(|&u| u != plan.from)
                    .collect();
                members.sort_unstable();
                members.dedup();
                if members.len() > MAX_USERS_INFO_IDS {
                    warn!(
                        group = plan.to,
                        members = members.len(),
                        "group too large to push to everyone; the first members only"
                    );
                    members.truncate(MAX_USERS_INFO_IDS);
                }
                if members.is_empty() {
                    return;
                }
                let req = ImGroupGetShieldReq {
                    group_id: plan.to,
                    user_id: members,
                    attach_data: None,
                };
                self.push_step(
                    p.conn,
                    PushStep::Shields,
                    plan,
                    Upstream::Db,
                    req.into(),
                    out,
                );
            }
            (PushStep::Shields, Message::OtherGetShieldRsp(rsp)) => {
                let muted: HashSet<u32> = rsp
                    .shield_status_list
                    .iter()
                    .filter(|s| s.shield_status == 1)
                    .map(|s| s.user_id)
                    .collect();
                let open: Vec<u32> = rsp
                    .shield_status_list
                    .iter()
                    .map(|s| s.user_id)
                    .filter(|u| !muted.contains(u))
                    .collect();
                self.push.skipped_shielded += muted.len() as u64;
                self.ask_presence(p.conn, plan, open, out);
            }
            (PushStep::Presence, Message::BuddyListUsersStatusResponse(rsp)) => {
                let mut targets = Vec::new();
                for s in rsp.user_stat_list {
                    if s.mobile_sessions.unwrap_or(0) > 0 {
                        self.push.skipped_online += 1;
                        continue;
                    }
                    if s.status
                        == teamtalk_proto::pb::im::base_define::UserStatType::UserStatusOnline
                            as i32
                    {
                        plan.pc_online.insert(s.user_id);
                    }
                    targets.push(s.user_id);
                }
                if targets.is_empty() {
                    return;
                }
                targets.truncate(MAX_USERS_INFO_IDS);
                let req = ImGetDeviceTokenReq {
                    user_id: targets,
                    attach_data: None,
                };
                self.push_step(
                    p.conn,
                    PushStep::Tokens,
                    plan,
                    Upstream::Db,
                    req.into(),
                    out,
                );
            }
            (PushStep::Tokens, Message::OtherGetDeviceTokenRsp(rsp)) => {
                let tokens: Vec<UserTokenInfo> = rsp
                    .user_token_info
                    .into_iter()
                    .filter(|t| t.user_id != plan.from && !t.token.is_empty())
                    .map(|mut t| {
                        if plan.pc_online.contains(&t.user_id) {
                            t.push_type = PUSH_SILENT;
                        }
                        t
                    })
                    .collect();
                if tokens.is_empty() {
                    return;
                }
                let Some(link) = self.up_links(Upstream::Push).next() else {
                    self.push.failed += 1;
                    info!(
                        tokens = tokens.len(),
                        "no push_server link up; push dropped"
                    );
                    return;
                };
                self.push.requests += 1;
                self.push.tokens += tokens.len() as u64;
                let req = ImPushToUserReq {
                    flash: plan.flash,
                    data: plan.data,
                    user_token_list: tokens,
                    push_key: Some(plan.key),
                };
                debug!(group = plan.group, "push sent");
                out.push(super::Action::Link(
                    link,
                    Command::OtherPushToUserReq.pdu(0, &req),
                ));
            }
            (step, other) => {
                self.push.failed += 1;
                debug!(?step, command = ?other.command(), "push step failed");
            }
        }
    }

    /// The push path's metrics.
    pub(super) fn collect_push(&self, out: &mut crate::metrics::Scrape) {
        let p = &self.push;
        out.counter(
            "teamtalk_msg_push_requests_total",
            "Push requests (0x070f) sent to push_server.",
            &[],
            p.requests,
        );
        out.counter(
            "teamtalk_msg_push_tokens_total",
            "Device tokens in those requests.",
            &[],
            p.tokens,
        );
        for (reason, n) in [
            ("phone_online", p.skipped_online),
            ("shielded", p.skipped_shielded),
        ] {
            out.counter(
                "teamtalk_msg_push_skipped_total",
                "Recipients not pushed, by reason (a phone online, the group muted).",
                &[("reason", reason)],
                n,
            );
        }
        out.counter(
            "teamtalk_msg_push_failed_total",
            "Pushes abandoned: a lookup failed or no push_server link was up.",
            &[],
            p.failed,
        );
        for (code, n) in &p.results {
            let code = code.to_string();
            out.counter(
                "teamtalk_msg_push_results_total",
                "push_server's per-token results (0x0710), by result code.",
                &[("code", code.as_str())],
                *n,
            );
        }
    }

    /// A push request expired, or its link went down.
    pub(super) fn push_failed(&mut self, step: PushStep) {
        debug!(?step, "push step got no answer");
        self.push.failed += 1;
    }

    /// push_server's answer: counted, invalid tokens forgotten.
    pub(super) fn push_answer(&mut self, msg: Message, out: &mut Actions<C>) {
        let Message::OtherPushToUserRsp(rsp) = msg else {
            debug!(command = ?msg.command(), "ignoring pdu from push_server");
            return;
        };
        for r in rsp.push_result_list {
            *self.push.results.entry(r.result_code).or_default() += 1;
            if r.result_code != RESULT_INVALID_TOKEN {
                continue;
            }
            let Some(user) = r.user_id else { continue };
            info!(user, "device token invalid; removing it");
            // Sent without attach_data: nobody waits for the reply, which
            // [`MsgApp::reply_pdu`] drops quietly.
            // Only this token: one the user registered since the push
            // was asked for stays.
            let req = ImDeviceTokenReq {
                user_id: user,
                device_token: String::new(),
                client_type: None,
                attach_data: None,
                invalid_token: Some(r.user_token),
            };
            self.send_upstream(Upstream::Db, Command::LoginReqDevicetoken.pdu(0, &req), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::text::{DEFAULT_KEY, encode};

    #[test]
    fn flash_follows_teamtalk() {
        let body = encode("hello", DEFAULT_KEY);
        assert_eq!(
            flash_text(1, body.as_bytes(), Some("alice"), DEFAULT_KEY),
            "alice:hello"
        );
        assert_eq!(
            flash_text(1, body.as_bytes(), None, DEFAULT_KEY),
            GENERIC_FLASH
        );
        let pic = encode("&$#@~^@[{:http://x/a.png:}]&$~@#@", DEFAULT_KEY);
        assert_eq!(
            flash_text(0x11, pic.as_bytes(), Some("a"), DEFAULT_KEY),
            GENERIC_FLASH
        );
        assert_eq!(
            flash_text(2, b"\0\0\0\x01abc", Some("bob"), DEFAULT_KEY),
            "bob给您发送了一条语音消息"
        );
        let long = encode(&"x".repeat(100), DEFAULT_KEY);
        let f = flash_text(1, long.as_bytes(), Some("a"), DEFAULT_KEY);
        assert_eq!(f.len(), 40);
        assert!(f.ends_with("..."));
        // Cut on a character boundary.
        let cn = encode(&"中".repeat(30), DEFAULT_KEY);
        let f = flash_text(1, cn.as_bytes(), Some("a"), DEFAULT_KEY);
        assert!(f.len() <= 40 && f.ends_with("..."));
    }

    #[test]
    fn data_is_teamtalks_json() {
        assert_eq!(push_data(1, 3, 7), r#"{"from_id":3,"msg_type":1}"#);
        assert_eq!(
            push_data(0x11, 3, 9),
            r#"{"from_id":3,"group_id":9,"msg_type":17}"#
        );
    }
}
