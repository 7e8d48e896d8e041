//! Offline files: 0x0509 files waiting for me → 0x050a, 0x050b an offline
//! file was uploaded (no reply), 0x050c forget an offline file (no reply).
//!
//! # Wire rules (TeamTalk)
//!
//! - 0x0509: the files waiting for `user_id`, oldest first, each with its
//!   sender, task id, name and size; msg_server adds the file_server
//!   addresses before the reply reaches the client.
//! - 0x050b: records `from_user_id → to_user_id` with the task id, name and
//!   size (`IMTransmitFile`, status 0). No reply.
//! - 0x050c: deletes the row of that task between `from_user_id` and
//!   `to_user_id`. No reply.
//!
//! # Where we differ
//!
//! - msg_server scopes every user id before the request comes here
//!   (0x050b's sender is the session's user; 0x050c's requester is the
//!   sender or the receiver), so db_proxy stores what it is given.
//! - A malformed task id, a name over
//!   [`MAX_FILE_NAME_LEN`](crate::rules::files::MAX_FILE_NAME_LEN) bytes,
//!   a file to oneself, or a receiver with
//!   [`MAX_OFFLINE_FILES`](crate::rules::files::MAX_OFFLINE_FILES) files
//!   waiting are refused (`IMRequestFailed`, bad request) instead of
//!   stored; TeamTalk stored whatever came, by string concatenation into
//!   SQL for the deletion. A resent 0x050b records nothing new.
//! - A store failure is `IMRequestFailed` (0x050a cannot say "failed"; an
//!   empty list would read as "nothing waiting"), also for the two
//!   requests without a reply, so msg_server can log it.
//! - The list holds at most `MAX_OFFLINE_FILES` files and is a page below
//!   the frame limit ([`crate::rules::sizing`]).

use prost::Message as _;
use teamtalk_proto::pb::im::base_define::OfflineFileInfo;
use teamtalk_proto::pb::im::file::{
    ImFileAddOfflineReq, ImFileDelOfflineReq, ImFileHasOfflineReq, ImFileHasOfflineRsp,
};
use teamtalk_proto::{Message, Pdu};
use tracing::{debug, warn};

use super::{Failed, Served, echo, misrouted};
use crate::clip::clip;
use crate::db_proxy::handler::DbProxy;
use crate::store::{NewOfflineFile, StoreError};

/// `IMFileHasOfflineRsp.offline_file_list`, for sizing its pages.
const FILES_TAG: u32 = 2;

impl DbProxy {
    /// The offline-file family's share of the dispatch table.
    pub(super) fn serve_files(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        match msg {
            Message::FileHasOfflineReq(req) => self.answer(seq, self.has_offline(req)),
            Message::FileAddOfflineReq(req) => self.add_offline(req).map(|()| None),
            Message::FileDelOfflineReq(req) => self.del_offline(req).map(|()| None),
            other => misrouted(other),
        }
    }

    fn has_offline(&self, req: &ImFileHasOfflineReq) -> Served<ImFileHasOfflineRsp> {
        let files = self
            .store
            .offline_files(req.user_id)
            .map_err(|e| self.store_failed("listing offline files", &e))?;
        let mut rsp = ImFileHasOfflineRsp {
            user_id: req.user_id,
            offline_file_list: Vec::new(),
            ip_addr_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        let list = files.into_iter().map(|f| OfflineFileInfo {
            from_user_id: f.from,
            task_id: f.task_id,
            file_name: f.file_name,
            file_size: f.size,
        });
        rsp.offline_file_list = self
            .page("offline files", rsp.encoded_len(), FILES_TAG, list)?
            .page;
        Ok(rsp)
    }

    fn add_offline(&self, req: &ImFileAddOfflineReq) -> Served<()> {
        let file = NewOfflineFile {
            from: req.from_user_id,
            to: req.to_user_id,
            task_id: req.task_id.clone(),
            file_name: req.file_name.clone(),
            size: req.file_size,
        };
        match self.store.add_offline_file(&file) {
            Ok(true) => Ok(()),
            Ok(false) => {
                debug!(task = %clip(&req.task_id), "offline file recorded already");
                Ok(())
            }
            Err(StoreError::Invalid(why)) => {
                warn!(from = req.from_user_id, to = req.to_user_id,
                    task = %clip(&req.task_id), why, "offline file not recorded");
                Err(Failed::bad_request(why))
            }
            Err(e) => Err(self.store_failed("recording an offline file", &e)),
        }
    }

    fn del_offline(&self, req: &ImFileDelOfflineReq) -> Served<()> {
        let deleted = self
            .store
            .delete_offline_file(&req.task_id, req.from_user_id, req.to_user_id)
            .map_err(|e| self.store_failed("deleting an offline file", &e))?;
        if !deleted {
            debug!(from = req.from_user_id, to = req.to_user_id,
                task = %clip(&req.task_id), "no such offline file to delete");
        }
        Ok(())
    }
}
