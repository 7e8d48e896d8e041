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

use teamtalk_proto::pb::im::base_define::DepartInfo;
use teamtalk_proto::pb::im::buddy::{
    ImAllUserReq, ImAllUserRsp, ImChangeSignInfoReq, ImChangeSignInfoRsp, ImDepartmentReq,
    ImDepartmentRsp, ImUsersInfoReq, ImUsersInfoRsp,
};
use teamtalk_proto::{Message, Pdu};

use super::{Failed, Served, echo, misrouted, user_info, wire_i32};
use crate::db_proxy::handler::{DbProxy, RESULT_FAILED};

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
        let users = self
            .store
            .users_by_ids(&req.user_id_list)
            .map_err(|e| self.store_failed("reading users", &e))?;
        Ok(ImUsersInfoRsp {
            user_id: req.user_id,
            user_info_list: users.iter().map(user_info).collect(),
            attach_data: echo(&req.attach_data),
        })
    }

    fn all_users(&self, req: &ImAllUserReq) -> Served<ImAllUserRsp> {
        let users = self
            .store
            .users_updated_since(req.latest_update_time)
            .map_err(|e| self.store_failed("listing users", &e))?;
        // The client keeps this as its watermark for the next request.
        let latest = users
            .iter()
            .map(|u| u.updated)
            .fold(req.latest_update_time, u32::max);
        Ok(ImAllUserRsp {
            user_id: req.user_id,
            latest_update_time: latest,
            user_list: users.iter().map(user_info).collect(),
            attach_data: echo(&req.attach_data),
        })
    }

    fn departments(&self, req: &ImDepartmentReq) -> Served<ImDepartmentRsp> {
        let depts = self
            .store
            .departments_updated_since(req.latest_update_time)
            .map_err(|e| self.store_failed("listing departments", &e))?;
        let latest = depts
            .iter()
            .map(|d| d.updated)
            .fold(req.latest_update_time, u32::max);
        Ok(ImDepartmentRsp {
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
        })
    }

    fn change_sign_info(&self, req: &ImChangeSignInfoReq) -> Served<ImChangeSignInfoRsp> {
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
