//! msg_server's half of file transfer: the links to file_servers, the
//! client's file requests, and the notices to the receiver.
//!
//! ```text
//! sender ──0x0506──▶ msg_server ──0x020a──▶ route_server   (online asked, receiver's PC not here)
//!                        │ ◀──0x020b── (ONLINE: a PC somewhere → online, else offline)
//!                        ├──0x0731──▶ file_server ──0x0732 (task id)──▶ msg_server
//! sender ◀──0x0507 (task, file_server addresses, mode)──┤
//! receiver's PCs ◀──0x0508 (here, and through route_server)──┘
//! uploader ──0x050b──▶ msg_server ──▶ db_proxy (record) + 0x0508 offline_ready=1 to the receiver
//! receiver ──0x0509──▶ db_proxy ──0x050a──▶ (+ file_server addresses) ──▶ receiver
//! receiver ──0x050c──▶ db_proxy (forget) + our 0x07a0 to every file_server (remove the file)
//! ```
//!
//! Every user id a client names about itself is its session's; the
//! receiver of a record or deletion must be a party to it; task ids must
//! be well formed, names bounded. Every file request is answered: 0x0507
//! with `result_code` 1 when no file_server is up or it refused.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use teamtalk_conn::ClientClass;
use teamtalk_proto::pb::im::base_define::{IpAddr, UserStatType};
use teamtalk_proto::pb::im::buddy::{ImUsersStatReq, ImUsersStatRsp};
use teamtalk_proto::pb::im::ext::{ImFileTaskDelete, RequestFailedCode};
use teamtalk_proto::pb::im::file::{
    ImFileAddOfflineReq, ImFileDelOfflineReq, ImFileNotify, ImFileReq, ImFileRsp,
};
use teamtalk_proto::pb::im::server::{ImFileServerIpRsp, ImFileTransferReq, ImFileTransferRsp};
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, info, warn};

use super::{Action, Actions, Forward, MsgApp, Pending, PendingKind, Upstream};
use crate::clip::clip;
use crate::rules::failure::{RESULT_FAILED, failure_reply};
use crate::rules::files::{
    MAX_ADDR_LEN, MAX_FILE_NAME_LEN, MAX_FILE_SERVER_ADDRS, is_task_id, is_trans_mode,
};
use crate::runtime::LinkId;

/// `TransferFileType` wire values.
const ONLINE: i32 = 1;
const OFFLINE: i32 = 2;

/// A file a client offered (0x0506), kept with its pending requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileOffer {
    to: u32,
    name: String,
    size: u32,
}

/// The file_servers' client addresses (their 0x0734), by link, and which
/// link the next task goes to.
#[derive(Debug, Default)]
pub(super) struct FileLinks {
    addrs: HashMap<LinkId, Vec<IpAddr>>,
    next: usize,
}

impl<C: Copy + Eq + Hash + Debug> MsgApp<C> {
    /// The file_server links that are up and have told their addresses,
    /// in plan order.
    fn ready_file_links(&self) -> Vec<LinkId> {
        self.links
            .iter()
            .filter(|(l, up)| *up && l.kind == Upstream::File)
            .map(|(l, _)| l.id)
            .filter(|id| self.files.addrs.get(id).is_some_and(|a| !a.is_empty()))
            .collect()
    }

    /// The file_server the next task goes to: the ready links in turn.
    fn pick_file_link(&mut self) -> Option<LinkId> {
        let ready = self.ready_file_links();
        if ready.is_empty() {
            return None;
        }
        self.files.next = self.files.next.wrapping_add(1);
        Some(ready[self.files.next % ready.len()])
    }

    /// The addresses a client is given for a file on `link`.
    fn file_addrs(&self, link: LinkId) -> Vec<IpAddr> {
        self.files.addrs.get(&link).cloned().unwrap_or_default()
    }

    /// Some file_server's addresses, for replies that carry one list for
    /// files on any of them (TeamTalk's 0x050a and offline 0x0508).
    fn any_file_addrs(&self) -> Vec<IpAddr> {
        self.ready_file_links()
            .first()
            .map(|l| self.file_addrs(*l))
            .unwrap_or_default()
    }

    /// A PDU on a file_server link.
    pub(super) fn file_link_pdu(&mut self, link: LinkId, pdu: &Pdu, msg: Message) -> Actions<C> {
        match msg {
            Message::OtherFileServerIpRsp(rsp) => {
                self.file_addresses(link, &rsp);
                Vec::new()
            }
            msg @ (Message::OtherFileTransferRsp(_) | Message::OtherRequestFailed(_)) => {
                self.reply_pdu(Upstream::File, pdu, msg)
            }
            other => {
                debug!(?link, key = %other.key(), "ignoring PDU from file_server");
                Vec::new()
            }
        }
    }

    /// A file_server's 0x0734: the addresses its clients use. Kept as
    /// given, bounded in number and length.
    fn file_addresses(&mut self, link: LinkId, rsp: &ImFileServerIpRsp) {
        let addrs: Vec<IpAddr> = rsp
            .ip_addr_list
            .iter()
            .filter(|a| {
                !a.ip.is_empty() && a.ip.len() <= MAX_ADDR_LEN && (1..=65_535).contains(&a.port)
            })
            .take(MAX_FILE_SERVER_ADDRS)
            .cloned()
            .collect();
        if addrs.len() != rsp.ip_addr_list.len() {
            warn!(
                ?link,
                given = rsp.ip_addr_list.len(),
                kept = addrs.len(),
                "file_server addresses out of bounds left out"
            );
        }
        debug!(?link, addrs = ?addrs.iter().map(|a| format!("{}:{}", clip(&a.ip), a.port)).collect::<Vec<_>>(),
            "file_server addresses");
        self.files.addrs.insert(link, addrs);
    }

    /// A file_server link went down: its addresses are forgotten, and the
    /// tasks asked of it are answered with their failure.
    pub(super) fn file_link_down(&mut self, link: LinkId) -> Actions<C> {
        self.files.addrs.remove(&link);
        let lost: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.kind == PendingKind::FileTransfer(link))
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in lost {
            if let Some(p) = self.pending.remove(&id) {
                self.release(&p, &mut out);
                self.fail_pending(
                    p,
                    Upstream::File.refusal(),
                    RequestFailedCode::RequestFailedServerError,
                    "file_server unreachable",
                    &mut out,
                );
            }
        }
        out
    }

    // ----- 0x0506: a client offers a file ------------------------------------------

    /// 0x0506. Offline, or online with the receiver's PC here: straight to
    /// a file_server. Online otherwise: route_server says whether the
    /// receiver has a PC online anywhere (TeamTalk's rule), which decides
    /// the mode.
    pub(super) fn client_file_request(
        &mut self,
        conn: C,
        seq: u16,
        user_id: u32,
        mut req: ImFileReq,
        out: &mut Actions<C>,
    ) {
        req.from_user_id = user_id;
        let refusal = if req.to_user_id == 0 || req.to_user_id == user_id {
            Some("no receiver, or oneself")
        } else if req.file_name.len() > MAX_FILE_NAME_LEN {
            Some("file name too long")
        } else if req.file_size == 0 {
            Some("an empty file")
        } else if !is_trans_mode(req.trans_mode) {
            Some("unknown transfer mode")
        } else if self.ready_file_links().is_empty() {
            Some("no file_server")
        } else {
            None
        };
        let msg = Message::FileRequest(req.clone());
        if let Some(reason) = refusal {
            info!(
                ?conn,
                user_id,
                to = req.to_user_id,
                reason,
                "file request refused"
            );
            self.stats.files_refused += 1;
            self.fail_request(
                conn,
                seq,
                user_id,
                &msg,
                RequestFailedCode::RequestFailedBadRequest,
                reason,
                out,
            );
            return;
        }
        let offer = FileOffer {
            to: req.to_user_id,
            name: req.file_name,
            size: req.file_size,
        };
        let to = offer.to;
        if req.trans_mode == OFFLINE || self.presence.session(to, ClientClass::Pc).is_some() {
            self.open_task(conn, seq, user_id, offer, req.trans_mode, out);
            return;
        }
        let query = ImUsersStatReq {
            user_id,
            user_id_list: vec![to],
            attach_data: None,
        };
        let options = Forward {
            on_failure: failure_reply(&msg, user_id, seq),
            offer: Some(offer.clone()),
            ..Forward::default()
        };
        if !self.forward_with(
            conn,
            seq,
            user_id,
            Upstream::Route,
            PendingKind::FileStatus,
            query.into(),
            options,
            out,
        ) {
            // Nobody to ask where the receiver is: offline always works.
            self.open_task(conn, seq, user_id, offer, OFFLINE, out);
        }
    }

    /// route_server said where the receiver is.
    pub(super) fn file_status_answered(
        &mut self,
        p: Pending<C>,
        rsp: &ImUsersStatRsp,
        out: &mut Actions<C>,
    ) {
        let Some(offer) = p.offer else {
            return;
        };
        let online = rsp
            .user_stat_list
            .iter()
            .any(|s| s.user_id == offer.to && s.status == UserStatType::UserStatusOnline as i32);
        let mode = if online { ONLINE } else { OFFLINE };
        debug!(conn = ?p.conn, to = offer.to, online, "receiver's presence for a file");
        self.open_task(p.conn, p.seq, p.user_id, offer, mode, out);
    }

    /// route_server could not say: the file goes offline.
    pub(super) fn file_status_failed(&mut self, p: Pending<C>, out: &mut Actions<C>) {
        if let Some(offer) = p.offer {
            self.open_task(p.conn, p.seq, p.user_id, offer, OFFLINE, out);
        }
    }

    /// Asks a file_server for a task in `mode`.
    fn open_task(
        &mut self,
        conn: C,
        seq: u16,
        user_id: u32,
        offer: FileOffer,
        mode: i32,
        out: &mut Actions<C>,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let request = ImFileReq {
            from_user_id: user_id,
            to_user_id: offer.to,
            file_name: offer.name.clone(),
            file_size: offer.size,
            trans_mode: mode,
        };
        let failure = failure_reply(&Message::FileRequest(request.clone()), user_id, seq);
        let Some(link) = self.pick_file_link() else {
            self.stats.files_refused += 1;
            if let Some(answer) = failure {
                self.apply_failure(
                    conn,
                    seq,
                    Command::FileRequest.key(),
                    answer,
                    RequestFailedCode::RequestFailedServerError,
                    "no file_server",
                    out,
                );
            }
            return;
        };
        let task = ImFileTransferReq {
            from_user_id: user_id,
            to_user_id: offer.to,
            file_name: offer.name.clone(),
            file_size: offer.size,
            trans_mode: mode,
            attach_data: None,
        };
        let options = Forward {
            link: Some(link),
            on_failure: failure.clone(),
            offer: Some(offer),
            push: None,
        };
        if !self.forward_with(
            conn,
            seq,
            user_id,
            Upstream::File,
            PendingKind::FileTransfer(link),
            task.into(),
            options,
            out,
        ) {
            self.stats.files_refused += 1;
            if let Some(answer) = failure {
                self.apply_failure(
                    conn,
                    seq,
                    Command::FileRequest.key(),
                    answer,
                    RequestFailedCode::RequestFailedServerError,
                    "file_server unreachable",
                    out,
                );
            }
        }
    }

    /// A file_server's 0x0732: the sender gets 0x0507 with the task and
    /// where to send it, the receiver's PCs (here and elsewhere) 0x0508.
    pub(super) fn file_transfer_answered(
        &mut self,
        p: Pending<C>,
        link: LinkId,
        rsp: ImFileTransferRsp,
        out: &mut Actions<C>,
    ) {
        let Some(offer) = p.offer else {
            return;
        };
        if !self.conns.contains_key(&p.conn) {
            // The task expires on the file_server unused.
            self.stats.stale_replies += 1;
            return;
        }
        let task_id = rsp.task_id.unwrap_or_default();
        let ok = rsp.result_code == 0 && is_task_id(&task_id);
        let mode = rsp
            .trans_mode
            .filter(|m| is_trans_mode(*m))
            .unwrap_or(OFFLINE);
        let addrs = self.file_addrs(link);
        let reply = ImFileRsp {
            result_code: if ok { 0 } else { RESULT_FAILED },
            from_user_id: p.user_id,
            to_user_id: offer.to,
            file_name: offer.name.clone(),
            task_id: if ok { task_id.clone() } else { String::new() },
            ip_addr_list: if ok { addrs.clone() } else { Vec::new() },
            trans_mode: mode,
        };
        out.push(Action::Send(
            p.conn,
            Command::FileResponse.pdu(p.seq, &reply),
        ));
        if !ok {
            info!(conn = ?p.conn, code = rsp.result_code, "file_server refused the task");
            self.stats.files_refused += 1;
            return;
        }
        self.stats.files_offered += 1;
        let notify = ImFileNotify {
            from_user_id: p.user_id,
            to_user_id: offer.to,
            file_name: offer.name,
            file_size: offer.size,
            task_id,
            ip_addr_list: addrs,
            trans_mode: mode,
            offline_ready: 0,
        };
        self.notify_receiver(&notify, out);
    }

    /// 0x0508 to the receiver's PC sessions here and, through
    /// route_server, on the msg_servers hosting it (TeamTalk's mobile
    /// clients have no file transfer).
    fn notify_receiver(&mut self, notify: &ImFileNotify, out: &mut Actions<C>) {
        let pdu = Command::FileNotify.pdu(0, notify);
        self.deliver_pc(notify.to_user_id, &pdu, out);
        self.send_upstream(Upstream::Route, pdu, out);
    }

    /// Sends `pdu` to every local PC session of `user`.
    pub(super) fn deliver_pc(&mut self, user: u32, pdu: &Pdu, out: &mut Actions<C>) {
        let pcs: Vec<C> = self
            .presence
            .sessions(user)
            .filter(|c| {
                self.conns
                    .get(c)
                    .and_then(|s| s.user)
                    .is_some_and(|(_, ct)| ClientClass::of(ct) == ClientClass::Pc)
            })
            .collect();
        self.send_all(&pcs, pdu, out);
    }

    // ----- offline records -----------------------------------------------------

    /// 0x050b: the sender uploaded an offline file. Recorded by db_proxy
    /// under the session's user as sender; the receiver's PCs hear it is
    /// ready. No reply exists.
    pub(super) fn client_add_offline(
        &mut self,
        conn: C,
        user_id: u32,
        mut req: ImFileAddOfflineReq,
        out: &mut Actions<C>,
    ) {
        req.from_user_id = user_id;
        if req.to_user_id == 0
            || req.to_user_id == user_id
            || !is_task_id(&req.task_id)
            || req.file_name.len() > MAX_FILE_NAME_LEN
        {
            warn!(?conn, user_id, to = req.to_user_id, task = %clip(&req.task_id),
                "offline-file record refused");
            self.stats.files_refused += 1;
            return;
        }
        let notify = ImFileNotify {
            from_user_id: user_id,
            to_user_id: req.to_user_id,
            file_name: req.file_name.clone(),
            file_size: req.file_size,
            task_id: req.task_id.clone(),
            ip_addr_list: self.any_file_addrs(),
            trans_mode: OFFLINE,
            offline_ready: 1,
        };
        self.send_upstream(Upstream::Db, Command::FileAddOfflineReq.pdu(0, &req), out);
        self.notify_receiver(&notify, out);
    }

    /// 0x050c: a party forgets an offline file: db_proxy deletes the
    /// record, every file_server the file. The requester must be the
    /// record's sender or receiver: unless it names itself as the sender,
    /// it is the receiver. No reply exists.
    pub(super) fn client_del_offline(
        &mut self,
        conn: C,
        user_id: u32,
        mut req: ImFileDelOfflineReq,
        out: &mut Actions<C>,
    ) {
        if !is_task_id(&req.task_id) {
            warn!(?conn, user_id, task = %clip(&req.task_id), "offline-file deletion refused");
            self.stats.files_refused += 1;
            return;
        }
        if req.from_user_id != user_id {
            req.to_user_id = user_id;
        }
        let task_id = req.task_id.clone();
        self.send_upstream(Upstream::Db, Command::FileDelOfflineReq.pdu(0, &req), out);
        let delete = Command::OtherFileTaskDelete.pdu(0, &ImFileTaskDelete { task_id, user_id });
        let links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(l, up)| *up && l.kind == Upstream::File)
            .map(|(l, _)| l.id)
            .collect();
        for link in links {
            out.push(Action::Link(link, delete.clone()));
        }
    }

    /// db_proxy's 0x050a on its way to the client gets the file_server
    /// addresses (TeamTalk's msg_server adds them the same way).
    pub(super) fn complete_file_reply(&self, msg: &mut Message) {
        if let Message::FileHasOfflineRes(rsp) = msg {
            rsp.ip_addr_list = self.any_file_addrs();
        }
    }

    /// Whether some file_server can take a task now (tests and health).
    #[must_use]
    pub fn file_server_ready(&self) -> bool {
        !self.ready_file_links().is_empty()
    }
}
