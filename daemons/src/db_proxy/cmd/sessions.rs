//! Recent sessions: 0x0201 recent sessions → 0x0202, 0x0206 remove a
//! session → 0x0207.
//!
//! # Wire rules (TeamTalk)
//!
//! - Recent sessions: those updated after `latest_update_time`, newest
//!   first, each with its latest message; removed ones are left out (at
//!   most [`MAX_RECENT_SESSIONS`](crate::store::MAX_RECENT_SESSIONS)).
//!   The groups the user is in are sessions too (type 2), changed by their
//!   last message or by the user's joining.
//! - Remove: hides the session until its next message; `result_code` 0 on
//!   success, 1 when there was no such session (or, for a group, the user
//!   is not a member); `session_type` and `session_id` echoed. Removing a
//!   session also clears its unread count.
//!
//! # Where we differ
//!
//! - A store failure is a failure answer: `IMRequestFailed` for the list
//!   (TeamTalk answered an empty one, which reads as "no sessions"), 0x0207
//!   with `result_code` 1 for a removal.
//! - The list is a page below the frame limit ([`crate::rules::sizing`]):
//!   each session carries its latest message, which may be large. When
//!   they do not all fit, the page holds the oldest changes (listed newest
//!   first as usual): the client keeps the newest `updated_time` it got as
//!   its watermark, so its next request returns the sessions left out;
//!   had the page kept the newest, those would never come. A page does not
//!   end inside one second, since the next request asks for `updated > t`.
//! - A removal with an invalid session type is answered with
//!   `result_code` 1; TeamTalk sent nothing.
//! - The unread count is cleared before the session is hidden, so a
//!   removal that fails half-way leaves the session visible and can simply
//!   be repeated.

use teamtalk_proto::pb::im::base_define::ContactSessionInfo;
use teamtalk_proto::pb::im::buddy::{
    ImRecentContactSessionReq, ImRecentContactSessionRsp, ImRemoveSessionReq, ImRemoveSessionRsp,
};
use teamtalk_proto::{Message, Pdu};
use tracing::warn;

use prost::Message as _;

use super::{Failed, Served, echo, latest_fields, misrouted, watermark_cut, wire_i32, wire_u32};
use crate::db_proxy::handler::{DbProxy, RESULT_FAILED};
use crate::store::SessionType;

/// `IMRecentContactSessionRsp.contact_session_list`, for sizing its pages.
const SESSIONS_TAG: u32 = 2;

impl DbProxy {
    /// The session family's share of the dispatch table.
    pub(super) fn serve_sessions(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        match msg {
            Message::BuddyListRecentContactSessionRequest(req) => {
                self.answer(seq, self.recent_sessions(req))
            }
            Message::BuddyListRemoveSessionReq(req) => self.answer(seq, self.remove_session(req)),
            other => misrouted(other),
        }
    }

    fn recent_sessions(
        &self,
        req: &ImRecentContactSessionReq,
    ) -> Served<ImRecentContactSessionRsp> {
        let sessions = self
            .store
            .recent_sessions(req.user_id, req.latest_update_time)
            .map_err(|e| self.store_failed("listing recent sessions", &e))?;
        // Oldest change first for the page (see the module docs), newest
        // first on the wire.
        let mut list: Vec<ContactSessionInfo> = sessions
            .into_iter()
            .rev()
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
        let mut rsp = ImRecentContactSessionRsp {
            user_id: req.user_id,
            contact_session_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        let fits = self
            .page(
                "recent sessions",
                rsp.encoded_len(),
                SESSIONS_TAG,
                list.iter().cloned(),
            )?
            .page
            .len();
        let updated: Vec<u32> = list.iter().map(|s| s.updated_time).collect();
        list.truncate(watermark_cut(&updated, fits, true));
        list.reverse();
        rsp.contact_session_list = list;
        Ok(rsp)
    }

    fn remove_session(&self, req: &ImRemoveSessionReq) -> Served<ImRemoveSessionRsp> {
        let Some(kind) = SessionType::from_u32(wire_u32(req.session_type)) else {
            warn!(
                session_type = req.session_type,
                "remove session: invalid session type"
            );
            return Err(Failed::bad_request("invalid session type"));
        };
        // A removed conversation no longer counts as unread.
        let cleared = match kind {
            SessionType::Single => self.store.clear_unread(req.user_id, req.session_id),
            SessionType::Group => self.store.clear_group_unread(req.user_id, req.session_id),
        };
        let removed = match cleared {
            // Not a member: there is no such session.
            Err(e) if e.is_refusal() => false,
            Err(e) => {
                return Err(self.store_failed("clearing unread before removing a session", &e));
            }
            Ok(()) => self
                .store
                .remove_session(req.user_id, req.session_id, kind)
                .map_err(|e| self.store_failed("removing a session", &e))?,
        };
        Ok(ImRemoveSessionRsp {
            user_id: req.user_id,
            result_code: if removed { 0 } else { RESULT_FAILED },
            session_type: req.session_type,
            session_id: req.session_id,
            attach_data: echo(&req.attach_data),
        })
    }
}
