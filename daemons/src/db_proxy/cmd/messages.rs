//! Messages, single and group: 0x0301 store → 0x0301, 0x0303 read ack (no
//! reply), 0x0307 unread counts → 0x0308, 0x0309 history → 0x030a, 0x030b
//! latest id → 0x030c, 0x030d by id → 0x030e.
//!
//! # Wire rules (TeamTalk)
//!
//! - The reply to 0x0301 is the request itself with `msg_id` set (absent
//!   `attach_data` stays absent). `msg_id` 0 means "not stored": msg_server
//!   then sends the sender no ack, so the client may resend.
//! - A read ack clears the reader's unread count of that conversation and
//!   has no reply.
//! - History: ids up to `msg_id_begin` (0 = from the latest), newest first,
//!   at most `msg_cnt`; by id: the listed ids that exist, newest first.
//!   Unknown ids are simply absent.
//! - Latest id: 0 for a conversation without messages.
//! - Unread: per conversation the count and its latest message, plus the
//!   total.
//! - Group messages (types 0x11 / 0x12) take the group's own id sequence;
//!   the sender must be a member (else `msg_id` 0). A group read ack
//!   clears the member's unread count of the group; group history, by id
//!   and latest id read the group's messages posted since the member
//!   joined (see `crate::store::groups`).
//!
//! # Where we differ
//!
//! - Storable messages are taken out by [`DbProxy::prepare_message`] and
//!   stored in runs with one commit each ([`DbProxy::store_prepared`],
//!   group commit), in arrival order.
//! - Messages that cannot be stored by rule (unknown types, empty bodies,
//!   to oneself, from user 0, to a group that does not exist or from a
//!   non-member) are answered with `msg_id` 0; TeamTalk sent nothing for
//!   some of these (a group message from a non-member among them).
//! - A message the store failed to write is answered with `IMRequestFailed`
//!   (0x0301's reply has no result field), not `msg_id` 0: "try again
//!   later", not "refused".
//! - History is capped at [`MAX_MSG_LIST`](crate::store::MAX_MSG_LIST)
//!   per page (TeamTalk had no cap), and every list reply (history, by id,
//!   unread) is a page below the frame limit ([`crate::rules::sizing`]): a
//!   history page of large messages holds fewer than `msg_cnt`, never
//!   none, and the client asks for the next one below the last `msg_id` it
//!   got; by id, the ids left out can be asked again; unread lists stop
//!   while `total_cnt` still counts every conversation. Before, such a
//!   reply went over the frame limit and was dropped: one user could make
//!   another's history unreadable by sending a few large messages.
//! - More than [`MAX_MSGS_BY_ID`](crate::store::MAX_MSGS_BY_ID) ids in one
//!   0x030d is a bad request (failure answer), not a silently shorter list.
//! - Bodies over [`MAX_MSG_DATA_LEN`](crate::store::MAX_MSG_DATA_LEN) are
//!   refused as not storable (`msg_id` 0), so one message always fits a
//!   page.
//! - Resends are stored once: a message whose `dedupe_key` (our field 100,
//!   set by msg_server, docs/protocol.md "Idempotent message storing") was
//!   stored within 24 hours is answered with the first `msg_id` and
//!   `duplicate` (field 101) true, and nothing is stored again.
//! - Store failures and invalid session types are failure answers
//!   (`IMRequestFailed`: these replies cannot say "failed"); TeamTalk sent
//!   an empty list or, for an invalid session type, nothing. A read ack
//!   that could not be applied is reported the same way, though nothing
//!   waits for it.
//! - A non-member's group history, by id, latest id and read ack are
//!   failure answers (`IMRequestFailed`, code 6 forbidden); TeamTalk
//!   answered an empty list, which reads as "no messages".
//! - Group messages are batched with single ones (group commit) and
//!   deduplicated by their `dedupe_key` like them.

use teamtalk_proto::pb::im::base_define::UnreadInfo;
use teamtalk_proto::pb::im::message::{
    ImGetLatestMsgIdReq, ImGetLatestMsgIdRsp, ImGetMsgByIdReq, ImGetMsgByIdRsp, ImGetMsgListReq,
    ImGetMsgListRsp, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq, ImUnreadMsgCntRsp,
};
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, error, info, warn};

use prost::Message as _;

use super::{
    Failed, Served, echo, latest_fields, misrouted, msg_info, too_many_ids, wire_i32, wire_u32,
};
use crate::db_proxy::handler::{DbProxy, bump};
use crate::store::{MAX_MSGS_BY_ID, NewMessage, SessionType, StoreError, Stored};

/// Field numbers of the lists in the replies, for sizing their pages.
const UNREAD_LIST_TAG: u32 = 3; // IMUnreadMsgCntRsp.unreadinfo_list
const MSG_LIST_TAG: u32 = 5; // IMGetMsgListRsp.msg_list
const MSG_BY_ID_TAG: u32 = 4; // IMGetMsgByIdRsp.msg_list

/// `MsgType` wire values.
const MSG_TYPE_SINGLE_TEXT: i32 = 0x01;
const MSG_TYPE_SINGLE_AUDIO: i32 = 0x02;
const MSG_TYPE_GROUP_TEXT: i32 = 0x11;
const MSG_TYPE_GROUP_AUDIO: i32 = 0x12;

/// A message (single or group) accepted for storing, waiting for its batch.
///
/// Made by [`DbProxy::prepare_message`], consumed by
/// [`DbProxy::store_prepared`].
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    seq: u16,
    request: ImMsgData,
    new: NewMessage,
}

impl DbProxy {
    /// If `pdu` is a storable `CID_MSG_DATA` (single or group), takes it
    /// out for batching; `None` for anything else (including messages that
    /// will be refused: [`DbProxy::handle`] answers those). Counts the
    /// request.
    pub fn prepare_message(&self, pdu: &Pdu) -> Option<PreparedMessage> {
        if !pdu.is(Command::MsgData.key()) {
            return None;
        }
        let request: ImMsgData = pdu.decode_body().ok()?;
        let session_type = match request.msg_type {
            MSG_TYPE_SINGLE_TEXT | MSG_TYPE_SINGLE_AUDIO => SessionType::Single,
            MSG_TYPE_GROUP_TEXT | MSG_TYPE_GROUP_AUDIO => SessionType::Group,
            _ => return None,
        };
        if request.msg_data.is_empty() {
            return None;
        }
        bump(&self.counters.requests);
        let new = NewMessage {
            from: request.from_user_id,
            to: request.to_session_id,
            session_type,
            msg_type: wire_u32(request.msg_type),
            create_time: request.create_time,
            data: request.msg_data.to_vec(),
            dedupe_key: request
                .dedupe_key
                .as_ref()
                .filter(|k| !k.is_empty())
                .map(|k| k.to_vec()),
        };
        Some(PreparedMessage {
            seq: pdu.seq(),
            request,
            new,
        })
    }

    /// Stores a run of prepared messages in one transaction (group commit)
    /// and returns their replies in the same order: the request with
    /// `msg_id` set, `msg_id` 0 for a message refused as not storable, or
    /// `IMRequestFailed` for one the store failed to write (every message
    /// of the run when the transaction itself failed).
    pub fn store_prepared(&self, batch: Vec<PreparedMessage>) -> Vec<Pdu> {
        if batch.is_empty() {
            return Vec::new();
        }
        let news: Vec<NewMessage> = batch.iter().map(|p| p.new.clone()).collect();
        bump(&self.counters.message_batches);
        let mut results = match self.store.store_messages(&news) {
            Ok(r) => r.into_iter(),
            Err(e) => {
                error!(error = %e, count = news.len(), "storing a message batch failed");
                bump(&self.counters.store_errors);
                Vec::new().into_iter()
            }
        };
        batch
            .into_iter()
            .map(|p| {
                let seq = p.seq;
                // Cheap (the bodies are shared): for the failure answer of
                // a reply that would not fit a frame.
                let request = Message::MsgData(p.request.clone());
                let reply = match results.next() {
                    Some(Ok(Stored::New(stored))) => {
                        bump(&self.counters.messages_stored);
                        self.stored_reply(p, stored.msg_id, false)
                    }
                    Some(Ok(Stored::Duplicate(msg_id))) => {
                        bump(&self.counters.messages_duplicate);
                        debug!(
                            from = p.new.from,
                            to = p.new.to,
                            msg_id,
                            "resend not stored again"
                        );
                        self.stored_reply(p, msg_id, true)
                    }
                    Some(Err(e)) => match self.message_store_failed(&p.new, &e) {
                        None => self.stored_reply(p, 0, false),
                        Some(failed) => self.fail(seq, &request, failed),
                    },
                    // The whole batch failed (logged above).
                    None => self.fail(seq, &request, Failed::store("storing a message batch")),
                };
                self.within_frame(seq, &request, reply)
            })
            .collect()
    }

    /// The reply to a stored (or refused, `msg_id` 0) message; a resend
    /// carries `duplicate` (absent otherwise, so the reply is still the
    /// request byte for byte but for `msg_id`).
    fn stored_reply(&self, p: PreparedMessage, msg_id: u32, duplicate: bool) -> Pdu {
        let mut reply = p.request;
        reply.msg_id = msg_id;
        reply.duplicate = duplicate.then_some(true);
        self.reply(p.seq, &reply)
    }

    /// One message of a batch was not stored: `None` when the store refused
    /// it (invalid, or a group message to a group that does not exist or
    /// from a non-member: answered `msg_id` 0), else the failure to answer.
    fn message_store_failed(&self, m: &NewMessage, e: &StoreError) -> Option<Failed> {
        if e.is_refusal() {
            bump(&self.counters.messages_refused);
            info!(from = m.from, to = m.to, error = %e, "message refused");
            None
        } else {
            bump(&self.counters.store_errors);
            error!(from = m.from, to = m.to, error = %e, "storing a message failed");
            Some(Failed::store("storing a message"))
        }
    }

    /// The message family's share of the dispatch table (storable messages
    /// never get here: [`DbProxy::handle`] batches them first).
    pub(super) fn serve_messages(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        match msg {
            Message::MsgData(req) => Ok(Some(self.refuse_message(seq, req.clone()))),
            Message::MsgReadAck(req) => self.read_ack(req).map(|()| None),
            Message::MsgUnreadCntRequest(req) => self.answer(seq, self.unread(req)),
            Message::MsgListRequest(req) => self.answer(seq, self.message_list(req)),
            Message::MsgGetLatestMsgIdReq(req) => self.answer(seq, self.latest_msg_id(req)),
            Message::MsgGetByMsgIdReq(req) => self.answer(seq, self.messages_by_id(req)),
            other => misrouted(other),
        }
    }

    /// A `CID_MSG_DATA` that [`DbProxy::prepare_message`] did not take:
    /// unknown types, empty bodies. Answered with `msg_id` 0, which
    /// msg_server treats as "not stored" (the sender gets no ack and may
    /// resend). TeamTalk sent no reply at all for some of these; answering
    /// keeps every request paired with a reply.
    fn refuse_message(&self, seq: u16, mut req: ImMsgData) -> Pdu {
        bump(&self.counters.messages_refused);
        match req.msg_type {
            t if !matches!(
                t,
                MSG_TYPE_SINGLE_TEXT
                    | MSG_TYPE_SINGLE_AUDIO
                    | MSG_TYPE_GROUP_TEXT
                    | MSG_TYPE_GROUP_AUDIO
            ) =>
            {
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

    fn read_ack(&self, req: &ImMsgDataReadAck) -> Served<()> {
        match query_kind(req.session_type, "read ack")? {
            SessionType::Single => self
                .store
                .clear_unread(req.user_id, req.session_id)
                .map_err(|e| self.store_failed("clearing unread", &e)),
            SessionType::Group => self
                .store
                .clear_group_unread(req.user_id, req.session_id)
                .map_err(|e| self.group_read_failed("clearing a group's unread count", &e)),
        }
    }

    fn unread(&self, req: &ImUnreadMsgCntReq) -> Served<ImUnreadMsgCntRsp> {
        let summary = self
            .store
            .unread(req.user_id)
            .map_err(|e| self.store_failed("reading unread counts", &e))?;
        let list: Vec<UnreadInfo> = summary
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
        let mut rsp = ImUnreadMsgCntRsp {
            user_id: req.user_id,
            total_cnt: summary.total,
            unreadinfo_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        rsp.unreadinfo_list = self
            .page("unread counts", rsp.encoded_len(), UNREAD_LIST_TAG, list)?
            .page;
        Ok(rsp)
    }

    fn message_list(&self, req: &ImGetMsgListReq) -> Served<ImGetMsgListRsp> {
        let msgs = match query_kind(req.session_type, "message list")? {
            SessionType::Single => self
                .store
                .message_list(req.user_id, req.session_id, req.msg_id_begin, req.msg_cnt)
                .map_err(|e| self.store_failed("listing messages", &e))?,
            SessionType::Group => self
                .store
                .group_message_list(req.user_id, req.session_id, req.msg_id_begin, req.msg_cnt)
                .map_err(|e| self.group_read_failed("listing group messages", &e))?,
        };
        let mut rsp = ImGetMsgListRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            msg_id_begin: req.msg_id_begin,
            msg_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        rsp.msg_list = self
            .page(
                "message list",
                rsp.encoded_len(),
                MSG_LIST_TAG,
                msgs.into_iter().map(msg_info),
            )?
            .page;
        Ok(rsp)
    }

    fn latest_msg_id(&self, req: &ImGetLatestMsgIdReq) -> Served<ImGetLatestMsgIdRsp> {
        let latest = match query_kind(req.session_type, "latest message id")? {
            SessionType::Single => self
                .store
                .latest_msg_id(req.user_id, req.session_id)
                .map_err(|e| self.store_failed("reading the latest message id", &e))?,
            SessionType::Group => self
                .store
                .group_latest_msg_id(req.user_id, req.session_id)
                .map_err(|e| self.group_read_failed("reading a group's latest message id", &e))?,
        };
        Ok(ImGetLatestMsgIdRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            latest_msg_id: latest,
            attach_data: echo(&req.attach_data),
        })
    }

    fn messages_by_id(&self, req: &ImGetMsgByIdReq) -> Served<ImGetMsgByIdRsp> {
        if req.msg_id_list.len() > MAX_MSGS_BY_ID {
            return Err(too_many_ids(
                "messages by id",
                req.msg_id_list.len(),
                MAX_MSGS_BY_ID,
            ));
        }
        let msgs = match query_kind(req.session_type, "messages by id")? {
            SessionType::Single => self
                .store
                .messages_by_ids(req.user_id, req.session_id, &req.msg_id_list)
                .map_err(|e| self.store_failed("reading messages by id", &e))?,
            SessionType::Group => self
                .store
                .group_messages_by_ids(req.user_id, req.session_id, &req.msg_id_list)
                .map_err(|e| self.group_read_failed("reading group messages by id", &e))?,
        };
        let mut rsp = ImGetMsgByIdRsp {
            user_id: req.user_id,
            session_type: req.session_type,
            session_id: req.session_id,
            msg_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        rsp.msg_list = self
            .page(
                "messages by id",
                rsp.encoded_len(),
                MSG_BY_ID_TAG,
                msgs.into_iter().map(msg_info),
            )?
            .page;
        Ok(rsp)
    }
}

/// The session kind of a message query, or a bad request for an invalid
/// one (TeamTalk sent no reply).
fn query_kind(session_type: i32, what: &'static str) -> Served<SessionType> {
    SessionType::from_u32(wire_u32(session_type)).ok_or_else(|| {
        warn!(session_type, "{what}: invalid session type");
        Failed::bad_request("invalid session type")
    })
}
