//! Groups: 0x0401 normal group list → 0x0402, 0x0403 group details →
//! 0x0404, 0x0405 create → 0x0406, 0x0407 change members → 0x0408, 0x0409
//! shield → 0x040a, msg_server's 0x0711 shields of members → 0x0712 and
//! 0x0791 a user's groups → 0x0792. Group messages and group sessions are
//! served with single ones, in `messages.rs` and `sessions.rs`.
//!
//! # Wire rules (TeamTalk)
//!
//! - Normal group list: the NORMAL groups the user is in, with their
//!   versions.
//! - Group details: of the groups asked, those whose version is newer than
//!   the one given (0 for "never seen"), with their members and the
//!   requester's own shield status.
//! - Create: the reply names the group, its id and its members
//!   (`user_id_list`), `result_code` 0; the group starts at version 1.
//! - Change members: `result_code` 0, the members after the change
//!   (`cur_user_id_list`) and those actually added or removed
//!   (`chg_user_id_list`): msg_server builds its 0x040b notice from them.
//!   The version is bumped. Who may change what is
//!   [`check_member_change`](crate::store::groups::check_member_change).
//! - Shield: `result_code` 0 when set.
//! - Shields of members (0x0711, for the push path): one entry per member
//!   listed.
//!
//! # Where we differ
//!
//! - Trust split: every peer of db_proxy is an authenticated cluster
//!   server, so db_proxy creates NORMAL and TMP groups alike; the rule
//!   that clients create TMP groups only is msg_server's, which knows the
//!   client. NORMAL groups come from the administration: `teamtalk group`
//!   on the store, and http_msg_server over this link with creator
//!   `user_id` 0 (the administration, no member), as TeamTalk's sends it.
//!   An unknown type gets the failure reply (`result_code` 1), not
//!   silence.
//! - `user_id` 0 in a change of members is the administration
//!   ([`Actor::Admin`]): any group, any change (TeamTalk's rule for 0).
//! - The creator is always a member of the group created.
//! - Only members may read a group's details (a non-member's request is
//!   answered without that group) or change it; members may leave TMP
//!   groups; see `crate::store::groups` for the whole rule. A refused or
//!   failed change, creation or shield gets its reply with `result_code`
//!   1 (TeamTalk answered nothing for an unknown group or an invalid
//!   type).
//! - 0x0711 for a group that does not exist is a failure answer
//!   (`IMRequestFailed`, bad request); non-members listed are left out.
//! - Bounds: at most [`MAX_GROUPS_PER_USER`] groups in one 0x0403, at most
//!   [`MAX_USERS_INFO_IDS`] users in one 0x0711, at most
//!   [`MAX_GROUP_MEMBERS`](crate::store::MAX_GROUP_MEMBERS) members in a
//!   group (over-large requests get their failure answer); list replies are
//!   pages below the frame limit ([`crate::rules::sizing`]), the groups
//!   left out of a 0x0404 page can be asked again.
//! - 0x0791 / 0x0792 are ours (IM.Ext): every group of the user, NORMAL
//!   and TMP, for msg_server's group index.

use prost::Message as _;
use teamtalk_proto::pb::im::base_define::{GroupInfo, GroupVersionInfo, ShieldStatus};
use teamtalk_proto::pb::im::ext::{ImUserGroupsReq, ImUserGroupsRsp, RequestFailedCode};
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberReq, ImGroupChangeMemberRsp, ImGroupCreateReq, ImGroupCreateRsp,
    ImGroupInfoListReq, ImGroupInfoListRsp, ImGroupShieldReq, ImGroupShieldRsp,
    ImNormalGroupListReq, ImNormalGroupListRsp,
};
use teamtalk_proto::pb::im::server::{ImGroupGetShieldReq, ImGroupGetShieldRsp};
use teamtalk_proto::{Message, Pdu};
use tracing::{info, warn};

use super::{Failed, Served, echo, misrouted, too_many_ids, wire_i32, wire_u32};
use crate::clip::clip;
use crate::db_proxy::handler::DbProxy;
use crate::rules::sizing::MAX_USERS_INFO_IDS;
use crate::store::{
    Actor, Group, GroupType, GroupVersion, MAX_GROUPS_PER_USER, MemberChange, NewGroup, StoreError,
};

/// Field numbers of the lists in the replies, for sizing their pages.
const VERSION_LIST_TAG: u32 = 2; // IMNormalGroupListRsp.group_version_list
const INFO_LIST_TAG: u32 = 2; // IMGroupInfoListRsp.group_info_list
const SHIELD_LIST_TAG: u32 = 2; // IMGroupGetShieldRsp.shield_status_list

impl Failed {
    /// The requester may not do this (not a member of the group).
    pub(super) const fn forbidden(what: &'static str) -> Self {
        Self {
            code: RequestFailedCode::RequestFailedForbidden,
            what,
        }
    }
}

impl DbProxy {
    /// The group family's share of the dispatch table.
    pub(super) fn serve_groups(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        match msg {
            Message::GroupNormalListRequest(req) => self.answer(seq, self.normal_groups(req)),
            Message::GroupInfoRequest(req) => self.answer(seq, self.group_info(req)),
            Message::GroupCreateRequest(req) => self.answer(seq, self.create_group(req)),
            Message::GroupChangeMemberRequest(req) => self.answer(seq, self.change_members(req)),
            Message::GroupShieldGroupRequest(req) => self.answer(seq, self.set_group_shield(req)),
            Message::OtherGetShieldReq(req) => self.answer(seq, self.group_shields(req)),
            Message::OtherUserGroupsReq(req) => self.answer(seq, self.user_groups(req)),
            other => misrouted(other),
        }
    }

    /// A group read or write the store would not do for this user (not a
    /// member, no such group, a refused change) is forbidden; anything
    /// else is the store failing.
    pub(super) fn group_read_failed(&self, what: &'static str, e: &StoreError) -> Failed {
        if e.is_refusal() {
            info!(error = %e, "{what}: refused");
            Failed::forbidden(what)
        } else {
            self.store_failed(what, e)
        }
    }

    fn normal_groups(&self, req: &ImNormalGroupListReq) -> Served<ImNormalGroupListRsp> {
        let groups = self
            .store
            .user_groups(req.user_id, Some(GroupType::Normal))
            .map_err(|e| self.store_failed("listing normal groups", &e))?;
        let mut rsp = ImNormalGroupListRsp {
            user_id: req.user_id,
            group_version_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        rsp.group_version_list = self
            .page(
                "normal groups",
                rsp.encoded_len(),
                VERSION_LIST_TAG,
                groups.into_iter().map(|g| GroupVersionInfo {
                    group_id: g.id,
                    version: g.version,
                }),
            )?
            .page;
        Ok(rsp)
    }

    fn group_info(&self, req: &ImGroupInfoListReq) -> Served<ImGroupInfoListRsp> {
        if req.group_version_list.len() > MAX_GROUPS_PER_USER {
            return Err(too_many_ids(
                "group details",
                req.group_version_list.len(),
                MAX_GROUPS_PER_USER,
            ));
        }
        let known: Vec<GroupVersion> = req
            .group_version_list
            .iter()
            .map(|v| GroupVersion {
                id: v.group_id,
                version: v.version,
            })
            .collect();
        let groups = self
            .store
            .groups_newer_than(req.user_id, &known)
            .map_err(|e| self.store_failed("reading group details", &e))?;
        let mut rsp = ImGroupInfoListRsp {
            user_id: req.user_id,
            group_info_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        let user = req.user_id;
        rsp.group_info_list = self
            .page(
                "group details",
                rsp.encoded_len(),
                INFO_LIST_TAG,
                groups.iter().map(|g| group_info(g, user)),
            )?
            .page;
        Ok(rsp)
    }

    fn create_group(&self, req: &ImGroupCreateReq) -> Served<ImGroupCreateRsp> {
        // Every peer here is a cluster server: msg_server has already
        // refused NORMAL groups from clients (it knows who the client is);
        // http_msg_server asks for NORMAL groups with creator 0, the
        // administration.
        let Some(group_type) = GroupType::from_u32(wire_u32(req.group_type)) else {
            warn!(
                user = req.user_id,
                group_type = req.group_type,
                "create of a group of unknown type; refused"
            );
            return Err(Failed::bad_request("unknown group type"));
        };
        let new = NewGroup {
            name: req.group_name.clone(),
            avatar: req.group_avatar.clone(),
            creator: req.user_id,
            group_type,
            members: req.member_id_list.clone(),
        };
        let group = self.store.create_group(&new).map_err(|e| {
            if e.is_refusal() {
                info!(user = req.user_id, name = %clip(&req.group_name), error = %e, "group not created");
                Failed::bad_request("group not created")
            } else {
                self.store_failed("creating a group", &e)
            }
        })?;
        info!(
            user = req.user_id,
            group = group.id,
            ?group_type,
            members = group.members.len(),
            "group created"
        );
        Ok(ImGroupCreateRsp {
            user_id: req.user_id,
            result_code: 0,
            group_id: Some(group.id),
            group_name: group.name.clone(),
            user_id_list: group.member_ids(),
            attach_data: echo(&req.attach_data),
        })
    }

    fn change_members(&self, req: &ImGroupChangeMemberReq) -> Served<ImGroupChangeMemberRsp> {
        let Some(change) = MemberChange::from_u32(wire_u32(req.change_type)) else {
            warn!(change_type = req.change_type, "invalid member change type");
            return Err(Failed::bad_request("invalid member change type"));
        };
        let changed = self
            .store
            .change_group_members(
                actor(req.user_id),
                req.group_id,
                change,
                &req.member_id_list,
            )
            .map_err(|e| self.group_read_failed("changing group members", &e))?;
        info!(
            user = req.user_id,
            group = req.group_id,
            ?change,
            changed = changed.changed.len(),
            version = changed.version,
            "group members changed"
        );
        Ok(ImGroupChangeMemberRsp {
            user_id: req.user_id,
            change_type: req.change_type,
            result_code: 0,
            group_id: req.group_id,
            cur_user_id_list: changed.members,
            chg_user_id_list: changed.changed,
            attach_data: echo(&req.attach_data),
        })
    }

    fn set_group_shield(&self, req: &ImGroupShieldReq) -> Served<ImGroupShieldRsp> {
        self.store
            .set_group_shield(req.user_id, req.group_id, req.shield_status != 0)
            .map_err(|e| self.group_read_failed("setting a group shield", &e))?;
        Ok(ImGroupShieldRsp {
            user_id: req.user_id,
            group_id: req.group_id,
            result_code: 0,
            attach_data: echo(&req.attach_data),
        })
    }

    fn group_shields(&self, req: &ImGroupGetShieldReq) -> Served<ImGroupGetShieldRsp> {
        if req.user_id.len() > MAX_USERS_INFO_IDS {
            return Err(too_many_ids(
                "group shields",
                req.user_id.len(),
                MAX_USERS_INFO_IDS,
            ));
        }
        let shields = self
            .store
            .group_shields(req.group_id, &req.user_id)
            .map_err(|e| match e {
                StoreError::NoSuchGroup(_) => {
                    warn!(
                        group = req.group_id,
                        "shields asked of a group that does not exist"
                    );
                    Failed::bad_request("no such group")
                }
                e => self.store_failed("reading group shields", &e),
            })?;
        let mut rsp = ImGroupGetShieldRsp {
            group_id: req.group_id,
            shield_status_list: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        let group_id = req.group_id;
        rsp.shield_status_list = self
            .page(
                "group shields",
                rsp.encoded_len(),
                SHIELD_LIST_TAG,
                shields.into_iter().map(|(user_id, on)| ShieldStatus {
                    user_id,
                    group_id,
                    shield_status: u32::from(on),
                }),
            )?
            .page;
        Ok(rsp)
    }

    fn user_groups(&self, req: &ImUserGroupsReq) -> Served<ImUserGroupsRsp> {
        let groups = self
            .store
            .user_groups(req.user_id, None)
            .map_err(|e| self.store_failed("listing a user's groups", &e))?;
        // At most MAX_GROUPS_PER_USER ids of at most 6 bytes: far below a
        // frame, no page needed.
        Ok(ImUserGroupsRsp {
            user_id: req.user_id,
            group_id_list: groups.into_iter().map(|g| g.id).collect(),
            attach_data: echo(&req.attach_data),
        })
    }
}

/// Who asks for a member change: user 0 is the administration
/// (http_msg_server, as TeamTalk's sends it). msg_server puts the
/// session's user in every request it forwards, and no user has id 0.
fn actor(user_id: u32) -> Actor {
    if user_id == 0 {
        Actor::Admin
    } else {
        Actor::User(user_id)
    }
}

/// A group's details as `user` sees them (their own shield status).
fn group_info(g: &Group, user: u32) -> GroupInfo {
    GroupInfo {
        group_id: g.id,
        version: g.version,
        group_name: g.name.clone(),
        group_avatar: g.avatar.clone(),
        group_creator_id: g.creator,
        group_type: wire_i32(g.group_type.as_u32()),
        shield_status: g.member(user).map_or(0, |m| u32::from(m.shield)),
        group_member_list: g.member_ids(),
    }
}
