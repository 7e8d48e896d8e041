//! Which messages carry `attach_data` (field 20) and which carry a
//! `result_code`, in one place.
//!
//! Servers correlate asynchronous replies through `attach_data` (see
//! [`crate::attach`]); a msg_server sets it on what it forwards and clears it
//! before a reply reaches a client. `result_code` is how a reply says it
//! failed, where its type has the field. The lists below are the messages
//! whose `.proto` definition has field 20, and those with a field named
//! `result_code`; `tests/props.rs` checks both against the descriptors so
//! they cannot drift.

use bytes::Bytes;

use crate::command::Message;
use crate::pb::im;

/// A message with an `attach_data` field.
pub trait Attached {
    /// The field's current value.
    fn attach_data(&self) -> Option<&Bytes>;
    /// Replaces the field's value.
    fn set_attach_data(&mut self, value: Option<Bytes>);
}

macro_rules! attached {
    ($($module:ident :: $ty:ident),* $(,)?) => {
        $(impl Attached for im::$module::$ty {
            fn attach_data(&self) -> Option<&Bytes> {
                self.attach_data.as_ref()
            }
            fn set_attach_data(&mut self, value: Option<Bytes>) {
                self.attach_data = value;
            }
        })*
    };
}

attached!(
    login::ImDeviceTokenReq,
    login::ImDeviceTokenRsp,
    login::ImPushShieldReq,
    login::ImPushShieldRsp,
    login::ImQueryPushShieldReq,
    login::ImQueryPushShieldRsp,
    buddy::ImRecentContactSessionReq,
    buddy::ImRecentContactSessionRsp,
    buddy::ImUsersInfoReq,
    buddy::ImUsersInfoRsp,
    buddy::ImRemoveSessionReq,
    buddy::ImRemoveSessionRsp,
    buddy::ImAllUserReq,
    buddy::ImAllUserRsp,
    buddy::ImUsersStatReq,
    buddy::ImUsersStatRsp,
    buddy::ImChangeAvatarReq,
    buddy::ImChangeAvatarRsp,
    buddy::ImDepartmentReq,
    buddy::ImDepartmentRsp,
    buddy::ImChangeSignInfoReq,
    buddy::ImChangeSignInfoRsp,
    message::ImMsgData,
    message::ImUnreadMsgCntReq,
    message::ImUnreadMsgCntRsp,
    message::ImGetMsgListReq,
    message::ImGetMsgListRsp,
    message::ImGetLatestMsgIdReq,
    message::ImGetLatestMsgIdRsp,
    message::ImGetMsgByIdReq,
    message::ImGetMsgByIdRsp,
    group::ImNormalGroupListReq,
    group::ImNormalGroupListRsp,
    group::ImGroupInfoListReq,
    group::ImGroupInfoListRsp,
    group::ImGroupCreateReq,
    group::ImGroupCreateRsp,
    group::ImGroupChangeMemberReq,
    group::ImGroupChangeMemberRsp,
    group::ImGroupShieldReq,
    group::ImGroupShieldRsp,
    file::ImFileHasOfflineReq,
    file::ImFileHasOfflineRsp,
    server::ImValidateReq,
    server::ImValidateRsp,
    server::ImGetDeviceTokenReq,
    server::ImGetDeviceTokenRsp,
    server::ImGroupGetShieldReq,
    server::ImGroupGetShieldRsp,
    server::ImFileTransferReq,
    server::ImFileTransferRsp,
    ext::ImRequestFailed,
    ext::ImUserGroupsReq,
    ext::ImUserGroupsRsp,
);

impl Message {
    /// The message's `attach_data` field, for the commands whose message
    /// has one; `None` for the others.
    #[must_use]
    pub fn attached_mut(&mut self) -> Option<&mut dyn Attached> {
        match self {
            Self::LoginReqDevicetoken(m) => Some(m),
            Self::LoginResDevicetoken(m) => Some(m),
            Self::LoginReqPushShield(m) => Some(m),
            Self::LoginResPushShield(m) => Some(m),
            Self::LoginReqQueryPushShield(m) => Some(m),
            Self::LoginResQueryPushShield(m) => Some(m),
            Self::BuddyListRecentContactSessionRequest(m) => Some(m),
            Self::BuddyListRecentContactSessionResponse(m) => Some(m),
            Self::BuddyListUserInfoRequest(m) => Some(m),
            Self::BuddyListUserInfoResponse(m) => Some(m),
            Self::BuddyListRemoveSessionReq(m) => Some(m),
            Self::BuddyListRemoveSessionRes(m) => Some(m),
            Self::BuddyListAllUserRequest(m) => Some(m),
            Self::BuddyListAllUserResponse(m) => Some(m),
            Self::BuddyListUsersStatusRequest(m) => Some(m),
            Self::BuddyListUsersStatusResponse(m) => Some(m),
            Self::BuddyListChangeAvatarRequest(m) => Some(m),
            Self::BuddyListChangeAvatarResponse(m) => Some(m),
            Self::BuddyListDepartmentRequest(m) => Some(m),
            Self::BuddyListDepartmentResponse(m) => Some(m),
            Self::BuddyListChangeSignInfoRequest(m) => Some(m),
            Self::BuddyListChangeSignInfoResponse(m) => Some(m),
            Self::MsgData(m) => Some(m),
            Self::MsgUnreadCntRequest(m) => Some(m),
            Self::MsgUnreadCntResponse(m) => Some(m),
            Self::MsgListRequest(m) => Some(m),
            Self::MsgListResponse(m) => Some(m),
            Self::MsgGetLatestMsgIdReq(m) => Some(m),
            Self::MsgGetLatestMsgIdRsp(m) => Some(m),
            Self::MsgGetByMsgIdReq(m) => Some(m),
            Self::MsgGetByMsgIdRes(m) => Some(m),
            Self::GroupNormalListRequest(m) => Some(m),
            Self::GroupNormalListResponse(m) => Some(m),
            Self::GroupInfoRequest(m) => Some(m),
            Self::GroupInfoResponse(m) => Some(m),
            Self::GroupCreateRequest(m) => Some(m),
            Self::GroupCreateResponse(m) => Some(m),
            Self::GroupChangeMemberRequest(m) => Some(m),
            Self::GroupChangeMemberResponse(m) => Some(m),
            Self::GroupShieldGroupRequest(m) => Some(m),
            Self::GroupShieldGroupResponse(m) => Some(m),
            Self::FileHasOfflineReq(m) => Some(m),
            Self::FileHasOfflineRes(m) => Some(m),
            Self::OtherValidateReq(m) => Some(m),
            Self::OtherValidateRsp(m) => Some(m),
            Self::OtherGetDeviceTokenReq(m) => Some(m),
            Self::OtherGetDeviceTokenRsp(m) => Some(m),
            Self::OtherGetShieldReq(m) => Some(m),
            Self::OtherGetShieldRsp(m) => Some(m),
            Self::OtherFileTransferReq(m) => Some(m),
            Self::OtherFileTransferRsp(m) => Some(m),
            Self::OtherRequestFailed(m) => Some(m),
            Self::OtherUserGroupsReq(m) => Some(m),
            Self::OtherUserGroupsRsp(m) => Some(m),
            _ => None,
        }
    }

    /// The reply's `result_code` (0 is success) for the messages that have
    /// one; `None` for the others, whose type cannot say that a request
    /// failed. The two `ResultType` fields (`IMMsgServRsp`, `IMLoginRes`)
    /// come back as their wire value.
    #[must_use]
    pub fn result_code(&self) -> Option<u32> {
        let wire = |v: i32| u32::from_ne_bytes(v.to_ne_bytes());
        Some(match self {
            Self::LoginResMsgserver(m) => wire(m.result_code),
            Self::LoginResUserlogin(m) => wire(m.result_code),
            Self::LoginResLoginout(m) => m.result_code,
            Self::LoginResKickpcclient(m) => m.result_code,
            Self::LoginResPushShield(m) => m.result_code,
            Self::LoginResQueryPushShield(m) => m.result_code,
            Self::BuddyListRemoveSessionRes(m) => m.result_code,
            Self::BuddyListChangeAvatarResponse(m) => m.result_code,
            Self::BuddyListChangeSignInfoResponse(m) => m.result_code,
            Self::GroupCreateResponse(m) => m.result_code,
            Self::GroupChangeMemberResponse(m) => m.result_code,
            Self::GroupShieldGroupResponse(m) => m.result_code,
            Self::FileLoginRes(m) => m.result_code,
            Self::FilePullDataRsp(m) => m.result_code,
            Self::FileResponse(m) => m.result_code,
            Self::OtherValidateRsp(m) => m.result_code,
            Self::OtherFileTransferRsp(m) => m.result_code,
            Self::OtherLinkAuthResult(m) => m.result_code,
            Self::OtherRequestFailed(m) => m.result_code,
            _ => return None,
        })
    }

    /// The `attach_data` bytes, if the message has the field and it is set.
    #[must_use]
    pub fn attach_data(&mut self) -> Option<Bytes> {
        self.attached_mut().and_then(|m| m.attach_data().cloned())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::command::{Command, Message};

    /// Every command whose message has field 20 exposes it, and no other:
    /// checked by setting the field and finding tag 20 (`a2 01`) on the wire.
    #[test]
    fn attached_list_matches_the_wire() {
        for &command in Command::ALL {
            let mut msg = command
                .decode_body(Bytes::new())
                .expect("empty body decodes to defaults");
            let has = msg.attached_mut().is_some();
            if let Some(m) = msg.attached_mut() {
                m.set_attach_data(Some(Bytes::from_static(b"x")));
            }
            let body = msg.encode_body();
            let on_wire = body.windows(3).any(|w| w == [0xa2, 0x01, 0x01]);
            assert_eq!(has, on_wire, "{command}");
            let mut back = Message::decode(&msg.to_pdu(0)).expect("round trip");
            assert_eq!(back.attach_data().is_some(), has, "{command}");
        }
    }
}
