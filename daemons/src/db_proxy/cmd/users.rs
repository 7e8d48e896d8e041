//! The directory: 0x0204 users by id → 0x0205, 0x0208 changed users →
//! 0x0209, 0x0210 departments → 0x0211, 0x0213 sign info → 0x0214, and
//! 0x020c avatar → 0x020d (not stored yet).
//!
//! # Wire rules (TeamTalk)
//!
//! - `UserInfo` carries every field, empty strings and zeros included;
//!   `sign_info` is always present.
//! - Users by id: the users among the ids that exist, by id; unknown ids
//!   are left out.
//! - Changed users and departments: those changed after
//!   `latest_update_time` (0 = all), and the reply's `latest_update_time`
//!   is the newest change returned (the request's when nothing changed),
//!   which the client keeps as its watermark for the next request.
//! - Sign info: `result_code` 0 and the new `sign_info` echoed on success,
//!   1 and no `sign_info` for an unknown user.
//!
//! # Where we differ
//!
//! - A store failure is a failure answer: 0x0214 with `result_code` 1, or
//!   `IMRequestFailed` for the three lists, whose reply cannot say
//!   "failed". TeamTalk answered an empty list, which a client takes as
//!   "nothing changed" and so would never ask for those users again.
//! - 0x020c avatar changes are answered 0x020d with `result_code` 1 (not
//!   stored yet); TeamTalk's db_proxy did not answer them at all.
//! - Every list is a page below the frame limit
//!   ([`crate::rules::sizing`]). Changed users and departments are filled
//!   oldest change first, so the `latest_update_time` returned (the newest
//!   change in the page) never passes one left out, and the client's next
//!   request gets the rest; the page is then listed by id as before. For
//!   departments (`updated > t`) a page does not end inside one second.
//! - More than [`MAX_USERS_INFO_IDS`] ids in one 0x0204 is a bad request
//!   (failure answer); TeamTalk had no limit, so one request could make it
//!   read the whole directory into one reply too large to send.
//! - A signature longer than [`MAX_SIGN_INFO_LEN`] bytes is refused
//!   (`result_code` 1): TeamTalk's column held 128 characters, and without
//!   a bound one user's signature could fill a directory page alone.

use teamtalk_proto::pb::im::base_define::DepartInfo;
use teamtalk_proto::pb::im::buddy::{
    ImAllUserReq, ImAllUserRsp, ImChangeSignInfoReq, ImChangeSignInfoRsp, ImDepartmentReq,
    ImDepartmentRsp, ImUsersInfoReq, ImUsersInfoRsp,
};
use teamtalk_proto::{Message, Pdu};

use prost::Message as _;
use tracing::warn;

use super::{Failed, Served, echo, misrouted, too_many_ids, user_info, watermark_cut, wire_i32};
use crate::clip::clip;
use crate::db_proxy::handler::{DbProxy, RESULT_FAILED};
use crate::rules::sizing::{MAX_SIGN_INFO_LEN, MAX_USERS_INFO_IDS};
use crate::store::Department;

/// Field numbers of the lists in the replies, for sizing their pages.
const USERS_INFO_TAG: u32 = 2; // IMUsersInfoRsp.user_info_list
const ALL_USERS_TAG: u32 = 3; // IMAllUserRsp.user_list
const DEPARTMENTS_TAG: u32 = 3; // IMDepartmentRsp.dept_list

fn depart_info(d: &Department) -> DepartInfo {
    DepartInfo {
        dept_id: d.id,
        priority: d.priority,
        dept_name: d.name.clone(),
        parent_dept_id: d.parent_id,
        dept_status: wire_i32(d.status),
    }
}

impl DbProxy {
    /// The directory family's share of the dispatch table.
    pub(super) fn serve_users(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        match msg {
            Message::BuddyListUserInfoRequest(req) => self.answer(seq, self.users_info(req)),
            Message::BuddyListAllUserRequest(req) => self.answer(seq, self.all_users(req)),
            Message::BuddyListDepartmentRequest(req) => self.answer(seq, self.departments(req)),
            Message::BuddyListChangeSignInfoRequest(req) => {
                self.answer(seq, self.change_sign_info(req))
            }
            Message::BuddyListChangeAvatarRequest(_) => {
                Err(Failed::not_implemented("avatars are not stored yet"))
            }
            other => misrouted(other),
        }
    }

    fn users_info(&self, req: &ImUsersInfoReq) -> Served<ImUsersInfoRsp> {
        if req.user_id_list.len() > MAX_USERS_INFO_IDS {
            return Err(too_many_ids(
                "users by id",
                req.user_id_list.len(),
                MAX_USERS_INFO_IDS,
            ));
        }
        let users = self
            .store
            .users_by_ids(&req.user_id_list)
            .map_err(|e| self.store_failed("reading users", &e))?;
        let mut rsp = ImUsersInfoRsp {
            user_id: req.user_id,
            user_info_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        rsp.user_info_list = self
            .page(
                "users by id",
                rsp.encoded_len(),
                USERS_INFO_TAG,
                users.iter().map(user_info),
            )?
            .page;
        Ok(rsp)
    }

    fn all_users(&self, req: &ImAllUserReq) -> Served<ImAllUserRsp> {
        let mut users = self
            .store
            .users_updated_since(req.latest_update_time)
            .map_err(|e| self.store_failed("listing users", &e))?;
        // Oldest change first, so a page that cannot hold them all leaves
        // out only changes newer than the watermark it returns.
        users.sort_by_key(|u| (u.updated, u.id));
        let mut rsp = ImAllUserRsp {
            user_id: req.user_id,
            latest_update_time: req.latest_update_time,
            user_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        let fits = self
            .page(
                "changed users",
                rsp.encoded_len(),
                ALL_USERS_TAG,
                users.iter().map(user_info),
            )?
            .page
            .len();
        let updated: Vec<u32> = users.iter().map(|u| u.updated).collect();
        users.truncate(watermark_cut(&updated, fits, false));
        // The client keeps this as its watermark for the next request.
        rsp.latest_update_time = users
            .iter()
            .map(|u| u.updated)
            .fold(req.latest_update_time, u32::max);
        users.sort_by_key(|u| u.id);
        rsp.user_list = users.iter().map(user_info).collect();
        Ok(rsp)
    }

    fn departments(&self, req: &ImDepartmentReq) -> Served<ImDepartmentRsp> {
        let mut depts = self
            .store
            .departments_updated_since(req.latest_update_time)
            .map_err(|e| self.store_failed("listing departments", &e))?;
        depts.sort_by_key(|d| (d.updated, d.id));
        let mut rsp = ImDepartmentRsp {
            user_id: req.user_id,
            latest_update_time: req.latest_update_time,
            dept_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        let fits = self
            .page(
                "departments",
                rsp.encoded_len(),
                DEPARTMENTS_TAG,
                depts.iter().map(depart_info),
            )?
            .page
            .len();
        let updated: Vec<u32> = depts.iter().map(|d| d.updated).collect();
        depts.truncate(watermark_cut(&updated, fits, true));
        rsp.latest_update_time = depts
            .iter()
            .map(|d| d.updated)
            .fold(req.latest_update_time, u32::max);
        depts.sort_by_key(|d| d.id);
        rsp.dept_list = depts.iter().map(depart_info).collect();
        Ok(rsp)
    }

    fn change_sign_info(&self, req: &ImChangeSignInfoReq) -> Served<ImChangeSignInfoRsp> {
        if req.sign_info.len() > MAX_SIGN_INFO_LEN {
            warn!(
                user = req.user_id,
                sign_info = %clip(&req.sign_info),
                "sign info too long; not stored"
            );
            return Ok(ImChangeSignInfoRsp {
                user_id: req.user_id,
                result_code: RESULT_FAILED,
                sign_info: None,
                attach_data: echo(&req.attach_data),
            });
        }
        let ok = self
            .store
            .update_sign_info(req.user_id, &req.sign_info)
            .map_err(|e| self.store_failed("changing sign info", &e))?;
        Ok(ImChangeSignInfoRsp {
            user_id: req.user_id,
            result_code: if ok { 0 } else { RESULT_FAILED },
            sign_info: ok.then(|| req.sign_info.clone()),
            attach_data: echo(&req.attach_data),
        })
    }
}
