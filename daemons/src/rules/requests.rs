//! Where each client request msg_server forwards is served, and how its
//! identity is scoped, written once.
//!
//! A client names itself in most requests (`user_id`, `from_user_id`).
//! TeamTalk's msg_server mostly trusted those fields; here every one of
//! them is overwritten with the session's authenticated user before the
//! request leaves msg_server ([`scope`]), and a request this table does
//! not know is never forwarded.

use teamtalk_proto::{Command, Message};

/// The server that answers a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServedBy {
    /// db_proxy_server.
    Db,
    /// route_server.
    Route,
}

/// Where a client request that msg_server forwards as it is goes, and the
/// reply command that comes back; `None` for requests msg_server answers
/// itself or handles with its own flow (login, messages, kicks, file
/// offers and offline-file records).
#[must_use]
pub fn forwarded(command: Command) -> Option<(ServedBy, Command)> {
    use Command as C;
    let db = |reply| Some((ServedBy::Db, reply));
    match command {
        C::LoginReqDevicetoken => db(C::LoginResDevicetoken),
        C::LoginReqPushShield => db(C::LoginResPushShield),
        C::LoginReqQueryPushShield => db(C::LoginResQueryPushShield),
        C::BuddyListRecentContactSessionRequest => db(C::BuddyListRecentContactSessionResponse),
        C::BuddyListUserInfoRequest => db(C::BuddyListUserInfoResponse),
        C::BuddyListRemoveSessionReq => db(C::BuddyListRemoveSessionRes),
        C::BuddyListAllUserRequest => db(C::BuddyListAllUserResponse),
        C::BuddyListDepartmentRequest => db(C::BuddyListDepartmentResponse),
        C::BuddyListChangeSignInfoRequest => db(C::BuddyListChangeSignInfoResponse),
        C::MsgUnreadCntRequest => db(C::MsgUnreadCntResponse),
        C::MsgListRequest => db(C::MsgListResponse),
        C::MsgGetLatestMsgIdReq => db(C::MsgGetLatestMsgIdRsp),
        C::MsgGetByMsgIdReq => db(C::MsgGetByMsgIdRes),
        C::GroupNormalListRequest => db(C::GroupNormalListResponse),
        C::GroupInfoRequest => db(C::GroupInfoResponse),
        C::GroupCreateRequest => db(C::GroupCreateResponse),
        C::GroupChangeMemberRequest => db(C::GroupChangeMemberResponse),
        C::GroupShieldGroupRequest => db(C::GroupShieldGroupResponse),
        C::FileHasOfflineReq => db(C::FileHasOfflineRes),
        C::BuddyListUsersStatusRequest => Some((ServedBy::Route, C::BuddyListUsersStatusResponse)),
        _ => None,
    }
}

/// Replaces every user id a client request names about its sender with
/// `user_id`, the session's authenticated user. Returns false for
/// messages it does not know, which must then not be forwarded: a request
/// only ever leaves msg_server with an identity we set.
pub fn scope(msg: &mut Message, user_id: u32) -> bool {
    match msg {
        Message::LoginReqDevicetoken(m) => m.user_id = user_id,
        Message::LoginReqPushShield(m) => m.user_id = user_id,
        Message::LoginReqQueryPushShield(m) => m.user_id = user_id,
        Message::BuddyListRecentContactSessionRequest(m) => m.user_id = user_id,
        Message::BuddyListUserInfoRequest(m) => m.user_id = user_id,
        Message::BuddyListRemoveSessionReq(m) => m.user_id = user_id,
        Message::BuddyListAllUserRequest(m) => m.user_id = user_id,
        Message::BuddyListDepartmentRequest(m) => m.user_id = user_id,
        Message::BuddyListChangeSignInfoRequest(m) => m.user_id = user_id,
        Message::BuddyListUsersStatusRequest(m) => m.user_id = user_id,
        Message::MsgUnreadCntRequest(m) => m.user_id = user_id,
        Message::MsgListRequest(m) => m.user_id = user_id,
        Message::MsgGetLatestMsgIdReq(m) => m.user_id = user_id,
        Message::MsgGetByMsgIdReq(m) => m.user_id = user_id,
        Message::GroupNormalListRequest(m) => m.user_id = user_id,
        Message::GroupInfoRequest(m) => m.user_id = user_id,
        Message::GroupCreateRequest(m) => m.user_id = user_id,
        Message::GroupChangeMemberRequest(m) => m.user_id = user_id,
        Message::GroupShieldGroupRequest(m) => m.user_id = user_id,
        Message::FileHasOfflineReq(m) => m.user_id = user_id,
        Message::FileRequest(m) => m.from_user_id = user_id,
        Message::FileAddOfflineReq(m) => m.from_user_id = user_id,
        Message::MsgReadAck(m) => m.user_id = user_id,
        Message::MsgData(m) => m.from_user_id = user_id,
        Message::SwitchP2pCmd(m) => m.from_user_id = user_id,
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::failure::{reply_command, requester};

    /// Every forwarded request is scoped, replies with the command the
    /// failure table expects, and names its sender where `requester`
    /// reads it.
    #[test]
    fn forwarded_requests_are_scoped_and_consistent_with_the_failure_table() {
        for &command in Command::ALL {
            let Some((_, reply)) = forwarded(command) else {
                continue;
            };
            assert_eq!(reply_command(command), Some(reply), "{command:?}");
            let mut msg = Message::decode(&command.pdu(1, &())).unwrap_or_else(|_| {
                Message::decode(&teamtalk_proto::Pdu::new(
                    command.key(),
                    1,
                    bytes::Bytes::new(),
                ))
                .expect("an empty body decodes")
            });
            assert!(scope(&mut msg, 77), "{command:?} not scoped");
            assert_eq!(requester(&msg), Some(77), "{command:?}");
        }
    }
}
