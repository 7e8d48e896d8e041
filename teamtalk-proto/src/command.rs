//! The command table: every (service id, command id) pair TeamTalk defines,
//! plus our extensions in SID_OTHER 0x0780–0x07ff (`IM.Ext`, see
//! `proto/IM.Ext.proto`), its `CID_*` name and the protobuf message its body
//! carries.
//!
//! The table in this file is the single place where these three facts are
//! written down. Everything else is generated from it:
//!
//! - [`Command`], one variant per command, with its [`CommandKey`], its
//!   `CID_*` name and its message name;
//! - [`Message`], one variant per command holding the decoded prost message,
//!   plus [`Message::Unknown`] for PDUs whose ids are not in the table;
//! - [`CommandMessage`], implemented by every prost message type, which
//!   names the command that carries it, so that building a PDU from a typed
//!   message cannot pick the wrong ids.
//!
//! Every TeamTalk message type is carried by exactly one command, which is
//! what makes [`CommandMessage`] possible.
//!
//! ```
//! use teamtalk_proto::command::{Command, CommandMessage, Message};
//! use teamtalk_proto::pb::im::other::ImHeartBeat;
//!
//! let pdu = ImHeartBeat {}.to_pdu(7);
//! assert_eq!(pdu.key(), Command::OtherHeartbeat.key());
//! let msg = Message::decode(&pdu).unwrap();
//! assert_eq!(msg.command(), Some(Command::OtherHeartbeat));
//! assert_eq!(msg.to_pdu(7), pdu);
//! ```

use std::fmt;

use bytes::Bytes;

use crate::error::BodyError;
use crate::header::CommandKey;
use crate::pb;
use crate::pdu::Pdu;

/// A prost message that TeamTalk sends under exactly one command.
///
/// Implemented for every message type of the table. It ties a message type
/// to its command, so a daemon builds a reply with `rsp.to_pdu(seq)` and
/// cannot put a body under the wrong (service, command) pair.
pub trait CommandMessage: prost::Message + Default + Into<Message> {
    /// The command whose body is this message.
    const COMMAND: Command;

    /// This message as the body of a PDU of [`Self::COMMAND`] with the
    /// given sequence number.
    fn to_pdu(&self, seq: u16) -> Pdu
    where
        Self: Sized,
    {
        Pdu::from_message(Self::COMMAND.key(), seq, self)
    }
}

/// Expands the command table into [`Command`], [`Message`] and the
/// [`CommandMessage`] impls.
///
/// One row per command:
/// `Variant = service / command, "CID_NAME", module::RustType, "IM.Package.ProtoName";`
macro_rules! command_table {
    ($(
        $variant:ident = $sid:literal / $cid:literal,
            $name:literal, $module:ident :: $ty:ident, $msg:literal;
    )*) => {
        /// Every command TeamTalk defines, named after its `CID_*` constant,
        /// and the teamtalk-rs extensions (SID_OTHER 0x0780–0x07ff, package
        /// `IM.Ext`), which TeamTalk peers ignore.
        ///
        /// A command is the (service id, command id) pair of a PDU header;
        /// it decides which protobuf message the body holds. Variant names
        /// are the `CID_*` names without the prefix, in CamelCase.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Command {
            $(
                #[doc = concat!(
                    "`", $name, "` (service ", stringify!($sid), ", command ",
                    stringify!($cid), "), carrying `", $msg, "`."
                )]
                $variant,
            )*
        }

        impl Command {
            /// Every command of the table, in ascending (service, command)
            /// order, for code that must cover all of them (dispatch
            /// tables, tests).
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The (service id, command id) pair that goes into the header.
            #[must_use]
            pub const fn key(self) -> CommandKey {
                match self {
                    $(Self::$variant => CommandKey::new($sid, $cid),)*
                }
            }

            /// The command a header names, or `None` when the pair is not in
            /// TeamTalk's table (including a known command id under the
            /// wrong service id).
            #[must_use]
            pub const fn from_key(key: CommandKey) -> Option<Self> {
                match (key.service_id, key.command_id) {
                    $(($sid, $cid) => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The `CID_*` name from TeamTalk's enums, e.g. `CID_MSG_DATA`,
            /// for logs and error messages that must match TeamTalk's
            /// vocabulary.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// Full protobuf name of the message the body carries, e.g.
            /// `IM.Message.IMMsgData`.
            #[must_use]
            pub const fn message_name(self) -> &'static str {
                match self {
                    $(Self::$variant => $msg,)*
                }
            }

            /// Parses `body` as this command's message.
            ///
            /// Like every prost decoder this does not insist on proto2
            /// `required` fields: a missing one decodes as its default.
            ///
            /// # Errors
            /// [`BodyError`] naming the command and the message when the
            /// body is not valid protobuf for that message.
            pub fn decode_body(self, body: Bytes) -> Result<Message, BodyError> {
                let key = self.key();
                let fail = |source| BodyError {
                    key,
                    name: self.name(),
                    message: self.message_name(),
                    source,
                };
                match self {
                    $(Self::$variant => {
                        <pb::im::$module::$ty as prost::Message>::decode(body)
                            .map(Message::$variant)
                            .map_err(fail)
                    })*
                }
            }

            /// The prost type's own full name, to check the table against
            /// the generated code.
            #[cfg(test)]
            fn generated_message_name(self) -> String {
                match self {
                    $(Self::$variant => {
                        <pb::im::$module::$ty as prost::Name>::full_name()
                    })*
                }
            }
        }

        /// A PDU body decoded according to its command.
        ///
        /// Variants are named like [`Command`]'s. A PDU whose ids are not in
        /// the table is kept whole as [`Message::Unknown`], so a relay can
        /// still forward it untouched.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Message {
            $(
                #[doc = concat!(
                    "Body of `", $name, "`: [`pb::im::", stringify!($module), "::",
                    stringify!($ty), "`] (`", $msg, "`)."
                )]
                $variant(pb::im::$module::$ty),
            )*
            /// A PDU whose (service, command) pair TeamTalk does not define,
            /// kept as received.
            Unknown(Pdu),
        }

        impl Message {
            /// The command this message travels under; `None` for
            /// [`Message::Unknown`].
            #[must_use]
            pub const fn command(&self) -> Option<Command> {
                match self {
                    $(Self::$variant(_) => Some(Command::$variant),)*
                    Self::Unknown(_) => None,
                }
            }

            /// The (service, command) pair this message travels under, for
            /// unknown PDUs too.
            #[must_use]
            pub fn key(&self) -> CommandKey {
                match self {
                    $(Self::$variant(_) => Command::$variant.key(),)*
                    Self::Unknown(pdu) => pdu.key(),
                }
            }

            /// The body as it goes on the wire.
            ///
            /// Fields come out in field-number order, `required` fields
            /// always, `optional` ones when set, repeated scalars unpacked:
            /// the same bytes TeamTalk's C++ peers write.
            #[must_use]
            pub fn encode_body(&self) -> Bytes {
                match self {
                    $(Self::$variant(m) => Bytes::from(prost::Message::encode_to_vec(m)),)*
                    Self::Unknown(pdu) => pdu.body.clone(),
                }
            }
        }

        $(
            impl CommandMessage for pb::im::$module::$ty {
                const COMMAND: Command = Command::$variant;
            }

            impl From<pb::im::$module::$ty> for Message {
                fn from(msg: pb::im::$module::$ty) -> Self {
                    Self::$variant(msg)
                }
            }
        )*
    };
}

command_table! {
    // SID_LOGIN: msg_server choice (login_server), sign in and out, kicks,
    // device tokens, push shield.
    LoginReqMsgserver = 0x0001 / 0x0101,
        "CID_LOGIN_REQ_MSGSERVER", login::ImMsgServReq, "IM.Login.IMMsgServReq";
    LoginResMsgserver = 0x0001 / 0x0102,
        "CID_LOGIN_RES_MSGSERVER", login::ImMsgServRsp, "IM.Login.IMMsgServRsp";
    LoginReqUserlogin = 0x0001 / 0x0103,
        "CID_LOGIN_REQ_USERLOGIN", login::ImLoginReq, "IM.Login.IMLoginReq";
    LoginResUserlogin = 0x0001 / 0x0104,
        "CID_LOGIN_RES_USERLOGIN", login::ImLoginRes, "IM.Login.IMLoginRes";
    LoginReqLoginout = 0x0001 / 0x0105,
        "CID_LOGIN_REQ_LOGINOUT", login::ImLogoutReq, "IM.Login.IMLogoutReq";
    LoginResLoginout = 0x0001 / 0x0106,
        "CID_LOGIN_RES_LOGINOUT", login::ImLogoutRsp, "IM.Login.IMLogoutRsp";
    LoginKickUser = 0x0001 / 0x0107,
        "CID_LOGIN_KICK_USER", login::ImKickUser, "IM.Login.IMKickUser";
    LoginReqDevicetoken = 0x0001 / 0x0108,
        "CID_LOGIN_REQ_DEVICETOKEN", login::ImDeviceTokenReq, "IM.Login.IMDeviceTokenReq";
    LoginResDevicetoken = 0x0001 / 0x0109,
        "CID_LOGIN_RES_DEVICETOKEN", login::ImDeviceTokenRsp, "IM.Login.IMDeviceTokenRsp";
    LoginReqKickpcclient = 0x0001 / 0x010a,
        "CID_LOGIN_REQ_KICKPCCLIENT", login::ImKickPcClientReq, "IM.Login.IMKickPCClientReq";
    LoginResKickpcclient = 0x0001 / 0x010b,
        "CID_LOGIN_RES_KICKPCCLIENT", login::ImKickPcClientRsp, "IM.Login.IMKickPCClientRsp";
    LoginReqPushShield = 0x0001 / 0x010c,
        "CID_LOGIN_REQ_PUSH_SHIELD", login::ImPushShieldReq, "IM.Login.IMPushShieldReq";
    LoginResPushShield = 0x0001 / 0x010d,
        "CID_LOGIN_RES_PUSH_SHIELD", login::ImPushShieldRsp, "IM.Login.IMPushShieldRsp";
    LoginReqQueryPushShield = 0x0001 / 0x010e,
        "CID_LOGIN_REQ_QUERY_PUSH_SHIELD", login::ImQueryPushShieldReq,
        "IM.Login.IMQueryPushShieldReq";
    LoginResQueryPushShield = 0x0001 / 0x010f,
        "CID_LOGIN_RES_QUERY_PUSH_SHIELD", login::ImQueryPushShieldRsp,
        "IM.Login.IMQueryPushShieldRsp";

    // SID_BUDDY_LIST: sessions, directory, presence, departments, avatar,
    // signature.
    BuddyListRecentContactSessionRequest = 0x0002 / 0x0201,
        "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST", buddy::ImRecentContactSessionReq,
        "IM.Buddy.IMRecentContactSessionReq";
    BuddyListRecentContactSessionResponse = 0x0002 / 0x0202,
        "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE", buddy::ImRecentContactSessionRsp,
        "IM.Buddy.IMRecentContactSessionRsp";
    BuddyListStatusNotify = 0x0002 / 0x0203,
        "CID_BUDDY_LIST_STATUS_NOTIFY", buddy::ImUserStatNotify, "IM.Buddy.IMUserStatNotify";
    BuddyListUserInfoRequest = 0x0002 / 0x0204,
        "CID_BUDDY_LIST_USER_INFO_REQUEST", buddy::ImUsersInfoReq, "IM.Buddy.IMUsersInfoReq";
    BuddyListUserInfoResponse = 0x0002 / 0x0205,
        "CID_BUDDY_LIST_USER_INFO_RESPONSE", buddy::ImUsersInfoRsp, "IM.Buddy.IMUsersInfoRsp";
    BuddyListRemoveSessionReq = 0x0002 / 0x0206,
        "CID_BUDDY_LIST_REMOVE_SESSION_REQ", buddy::ImRemoveSessionReq,
        "IM.Buddy.IMRemoveSessionReq";
    BuddyListRemoveSessionRes = 0x0002 / 0x0207,
        "CID_BUDDY_LIST_REMOVE_SESSION_RES", buddy::ImRemoveSessionRsp,
        "IM.Buddy.IMRemoveSessionRsp";
    BuddyListAllUserRequest = 0x0002 / 0x0208,
        "CID_BUDDY_LIST_ALL_USER_REQUEST", buddy::ImAllUserReq, "IM.Buddy.IMAllUserReq";
    BuddyListAllUserResponse = 0x0002 / 0x0209,
        "CID_BUDDY_LIST_ALL_USER_RESPONSE", buddy::ImAllUserRsp, "IM.Buddy.IMAllUserRsp";
    BuddyListUsersStatusRequest = 0x0002 / 0x020a,
        "CID_BUDDY_LIST_USERS_STATUS_REQUEST", buddy::ImUsersStatReq, "IM.Buddy.IMUsersStatReq";
    BuddyListUsersStatusResponse = 0x0002 / 0x020b,
        "CID_BUDDY_LIST_USERS_STATUS_RESPONSE", buddy::ImUsersStatRsp, "IM.Buddy.IMUsersStatRsp";
    BuddyListChangeAvatarRequest = 0x0002 / 0x020c,
        "CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST", buddy::ImChangeAvatarReq,
        "IM.Buddy.IMChangeAvatarReq";
    BuddyListChangeAvatarResponse = 0x0002 / 0x020d,
        "CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE", buddy::ImChangeAvatarRsp,
        "IM.Buddy.IMChangeAvatarRsp";
    BuddyListPcLoginStatusNotify = 0x0002 / 0x020e,
        "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY", buddy::ImpcLoginStatusNotify,
        "IM.Buddy.IMPCLoginStatusNotify";
    BuddyListRemoveSessionNotify = 0x0002 / 0x020f,
        "CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY", buddy::ImRemoveSessionNotify,
        "IM.Buddy.IMRemoveSessionNotify";
    BuddyListDepartmentRequest = 0x0002 / 0x0210,
        "CID_BUDDY_LIST_DEPARTMENT_REQUEST", buddy::ImDepartmentReq, "IM.Buddy.IMDepartmentReq";
    BuddyListDepartmentResponse = 0x0002 / 0x0211,
        "CID_BUDDY_LIST_DEPARTMENT_RESPONSE", buddy::ImDepartmentRsp, "IM.Buddy.IMDepartmentRsp";
    // TeamTalk's note on IMAvatarChangedNotify says 0x02012; the enum says 0x0212.
    BuddyListAvatarChangedNotify = 0x0002 / 0x0212,
        "CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY", buddy::ImAvatarChangedNotify,
        "IM.Buddy.IMAvatarChangedNotify";
    BuddyListChangeSignInfoRequest = 0x0002 / 0x0213,
        "CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST", buddy::ImChangeSignInfoReq,
        "IM.Buddy.IMChangeSignInfoReq";
    BuddyListChangeSignInfoResponse = 0x0002 / 0x0214,
        "CID_BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE", buddy::ImChangeSignInfoRsp,
        "IM.Buddy.IMChangeSignInfoRsp";
    BuddyListSignInfoChangedNotify = 0x0002 / 0x0215,
        "CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY", buddy::ImSignInfoChangedNotify,
        "IM.Buddy.IMSignInfoChangedNotify";

    // SID_MSG: chat messages, acks, unread counts, history.
    MsgData = 0x0003 / 0x0301,
        "CID_MSG_DATA", message::ImMsgData, "IM.Message.IMMsgData";
    MsgDataAck = 0x0003 / 0x0302,
        "CID_MSG_DATA_ACK", message::ImMsgDataAck, "IM.Message.IMMsgDataAck";
    MsgReadAck = 0x0003 / 0x0303,
        "CID_MSG_READ_ACK", message::ImMsgDataReadAck, "IM.Message.IMMsgDataReadAck";
    MsgReadNotify = 0x0003 / 0x0304,
        "CID_MSG_READ_NOTIFY", message::ImMsgDataReadNotify, "IM.Message.IMMsgDataReadNotify";
    MsgTimeRequest = 0x0003 / 0x0305,
        "CID_MSG_TIME_REQUEST", message::ImClientTimeReq, "IM.Message.IMClientTimeReq";
    MsgTimeResponse = 0x0003 / 0x0306,
        "CID_MSG_TIME_RESPONSE", message::ImClientTimeRsp, "IM.Message.IMClientTimeRsp";
    MsgUnreadCntRequest = 0x0003 / 0x0307,
        "CID_MSG_UNREAD_CNT_REQUEST", message::ImUnreadMsgCntReq, "IM.Message.IMUnreadMsgCntReq";
    MsgUnreadCntResponse = 0x0003 / 0x0308,
        "CID_MSG_UNREAD_CNT_RESPONSE", message::ImUnreadMsgCntRsp,
        "IM.Message.IMUnreadMsgCntRsp";
    MsgListRequest = 0x0003 / 0x0309,
        "CID_MSG_LIST_REQUEST", message::ImGetMsgListReq, "IM.Message.IMGetMsgListReq";
    MsgListResponse = 0x0003 / 0x030a,
        "CID_MSG_LIST_RESPONSE", message::ImGetMsgListRsp, "IM.Message.IMGetMsgListRsp";
    MsgGetLatestMsgIdReq = 0x0003 / 0x030b,
        "CID_MSG_GET_LATEST_MSG_ID_REQ", message::ImGetLatestMsgIdReq,
        "IM.Message.IMGetLatestMsgIdReq";
    MsgGetLatestMsgIdRsp = 0x0003 / 0x030c,
        "CID_MSG_GET_LATEST_MSG_ID_RSP", message::ImGetLatestMsgIdRsp,
        "IM.Message.IMGetLatestMsgIdRsp";
    MsgGetByMsgIdReq = 0x0003 / 0x030d,
        "CID_MSG_GET_BY_MSG_ID_REQ", message::ImGetMsgByIdReq, "IM.Message.IMGetMsgByIdReq";
    MsgGetByMsgIdRes = 0x0003 / 0x030e,
        "CID_MSG_GET_BY_MSG_ID_RES", message::ImGetMsgByIdRsp, "IM.Message.IMGetMsgByIdRsp";

    // SID_GROUP: lists, details, creation, membership, shield.
    GroupNormalListRequest = 0x0004 / 0x0401,
        "CID_GROUP_NORMAL_LIST_REQUEST", group::ImNormalGroupListReq,
        "IM.Group.IMNormalGroupListReq";
    GroupNormalListResponse = 0x0004 / 0x0402,
        "CID_GROUP_NORMAL_LIST_RESPONSE", group::ImNormalGroupListRsp,
        "IM.Group.IMNormalGroupListRsp";
    GroupInfoRequest = 0x0004 / 0x0403,
        "CID_GROUP_INFO_REQUEST", group::ImGroupInfoListReq, "IM.Group.IMGroupInfoListReq";
    GroupInfoResponse = 0x0004 / 0x0404,
        "CID_GROUP_INFO_RESPONSE", group::ImGroupInfoListRsp, "IM.Group.IMGroupInfoListRsp";
    GroupCreateRequest = 0x0004 / 0x0405,
        "CID_GROUP_CREATE_REQUEST", group::ImGroupCreateReq, "IM.Group.IMGroupCreateReq";
    GroupCreateResponse = 0x0004 / 0x0406,
        "CID_GROUP_CREATE_RESPONSE", group::ImGroupCreateRsp, "IM.Group.IMGroupCreateRsp";
    GroupChangeMemberRequest = 0x0004 / 0x0407,
        "CID_GROUP_CHANGE_MEMBER_REQUEST", group::ImGroupChangeMemberReq,
        "IM.Group.IMGroupChangeMemberReq";
    GroupChangeMemberResponse = 0x0004 / 0x0408,
        "CID_GROUP_CHANGE_MEMBER_RESPONSE", group::ImGroupChangeMemberRsp,
        "IM.Group.IMGroupChangeMemberRsp";
    GroupShieldGroupRequest = 0x0004 / 0x0409,
        "CID_GROUP_SHIELD_GROUP_REQUEST", group::ImGroupShieldReq, "IM.Group.IMGroupShieldReq";
    GroupShieldGroupResponse = 0x0004 / 0x040a,
        "CID_GROUP_SHIELD_GROUP_RESPONSE", group::ImGroupShieldRsp, "IM.Group.IMGroupShieldRsp";
    GroupChangeMemberNotify = 0x0004 / 0x040b,
        "CID_GROUP_CHANGE_MEMBER_NOTIFY", group::ImGroupChangeMemberNotify,
        "IM.Group.IMGroupChangeMemberNotify";

    // SID_FILE: 0x0501-0x0505 client <-> file_server, the rest client <-> msg_server.
    FileLoginReq = 0x0005 / 0x0501,
        "CID_FILE_LOGIN_REQ", file::ImFileLoginReq, "IM.File.IMFileLoginReq";
    FileLoginRes = 0x0005 / 0x0502,
        "CID_FILE_LOGIN_RES", file::ImFileLoginRsp, "IM.File.IMFileLoginRsp";
    FileState = 0x0005 / 0x0503,
        "CID_FILE_STATE", file::ImFileState, "IM.File.IMFileState";
    FilePullDataReq = 0x0005 / 0x0504,
        "CID_FILE_PULL_DATA_REQ", file::ImFilePullDataReq, "IM.File.IMFilePullDataReq";
    FilePullDataRsp = 0x0005 / 0x0505,
        "CID_FILE_PULL_DATA_RSP", file::ImFilePullDataRsp, "IM.File.IMFilePullDataRsp";
    FileRequest = 0x0005 / 0x0506,
        "CID_FILE_REQUEST", file::ImFileReq, "IM.File.IMFileReq";
    FileResponse = 0x0005 / 0x0507,
        "CID_FILE_RESPONSE", file::ImFileRsp, "IM.File.IMFileRsp";
    FileNotify = 0x0005 / 0x0508,
        "CID_FILE_NOTIFY", file::ImFileNotify, "IM.File.IMFileNotify";
    FileHasOfflineReq = 0x0005 / 0x0509,
        "CID_FILE_HAS_OFFLINE_REQ", file::ImFileHasOfflineReq, "IM.File.IMFileHasOfflineReq";
    FileHasOfflineRes = 0x0005 / 0x050a,
        "CID_FILE_HAS_OFFLINE_RES", file::ImFileHasOfflineRsp, "IM.File.IMFileHasOfflineRsp";
    FileAddOfflineReq = 0x0005 / 0x050b,
        "CID_FILE_ADD_OFFLINE_REQ", file::ImFileAddOfflineReq, "IM.File.IMFileAddOfflineReq";
    FileDelOfflineReq = 0x0005 / 0x050c,
        "CID_FILE_DEL_OFFLINE_REQ", file::ImFileDelOfflineReq, "IM.File.IMFileDelOfflineReq";

    // SID_SWITCH_SERVICE: relayed client-to-client signals.
    SwitchP2pCmd = 0x0006 / 0x0601,
        "CID_SWITCH_P2P_CMD", switch_service::Imp2pCmdMsg, "IM.SwitchService.IMP2PCmdMsg";

    // SID_OTHER: heartbeat (IM.Other) and the daemons' own traffic (IM.Server).
    // 0x070c is not defined. The file-transfer commands are 0x0731-0x0734 on
    // the wire, not the 0x0715-0x0718 of TeamTalk's notes on the messages.
    OtherHeartbeat = 0x0007 / 0x0701,
        "CID_OTHER_HEARTBEAT", other::ImHeartBeat, "IM.Other.IMHeartBeat";
    OtherStopRecvPacket = 0x0007 / 0x0702,
        "CID_OTHER_STOP_RECV_PACKET", server::ImStopReceivePacket,
        "IM.Server.IMStopReceivePacket";
    OtherValidateReq = 0x0007 / 0x0703,
        "CID_OTHER_VALIDATE_REQ", server::ImValidateReq, "IM.Server.IMValidateReq";
    OtherValidateRsp = 0x0007 / 0x0704,
        "CID_OTHER_VALIDATE_RSP", server::ImValidateRsp, "IM.Server.IMValidateRsp";
    OtherGetDeviceTokenReq = 0x0007 / 0x0705,
        "CID_OTHER_GET_DEVICE_TOKEN_REQ", server::ImGetDeviceTokenReq,
        "IM.Server.IMGetDeviceTokenReq";
    OtherGetDeviceTokenRsp = 0x0007 / 0x0706,
        "CID_OTHER_GET_DEVICE_TOKEN_RSP", server::ImGetDeviceTokenRsp,
        "IM.Server.IMGetDeviceTokenRsp";
    OtherRoleSet = 0x0007 / 0x0707,
        "CID_OTHER_ROLE_SET", server::ImRoleSet, "IM.Server.IMRoleSet";
    OtherOnlineUserInfo = 0x0007 / 0x0708,
        "CID_OTHER_ONLINE_USER_INFO", server::ImOnlineUserInfo, "IM.Server.IMOnlineUserInfo";
    OtherMsgServInfo = 0x0007 / 0x0709,
        "CID_OTHER_MSG_SERV_INFO", server::ImMsgServInfo, "IM.Server.IMMsgServInfo";
    OtherUserStatusUpdate = 0x0007 / 0x070a,
        "CID_OTHER_USER_STATUS_UPDATE", server::ImUserStatusUpdate,
        "IM.Server.IMUserStatusUpdate";
    OtherUserCntUpdate = 0x0007 / 0x070b,
        "CID_OTHER_USER_CNT_UPDATE", server::ImUserCntUpdate, "IM.Server.IMUserCntUpdate";
    OtherServerKickUser = 0x0007 / 0x070d,
        "CID_OTHER_SERVER_KICK_USER", server::ImServerKickUser, "IM.Server.IMServerKickUser";
    OtherLoginStatusNotify = 0x0007 / 0x070e,
        "CID_OTHER_LOGIN_STATUS_NOTIFY", server::ImServerPcLoginStatusNotify,
        "IM.Server.IMServerPCLoginStatusNotify";
    OtherPushToUserReq = 0x0007 / 0x070f,
        "CID_OTHER_PUSH_TO_USER_REQ", server::ImPushToUserReq, "IM.Server.IMPushToUserReq";
    OtherPushToUserRsp = 0x0007 / 0x0710,
        "CID_OTHER_PUSH_TO_USER_RSP", server::ImPushToUserRsp, "IM.Server.IMPushToUserRsp";
    OtherGetShieldReq = 0x0007 / 0x0711,
        "CID_OTHER_GET_SHIELD_REQ", server::ImGroupGetShieldReq, "IM.Server.IMGroupGetShieldReq";
    OtherGetShieldRsp = 0x0007 / 0x0712,
        "CID_OTHER_GET_SHIELD_RSP", server::ImGroupGetShieldRsp, "IM.Server.IMGroupGetShieldRsp";
    OtherFileTransferReq = 0x0007 / 0x0731,
        "CID_OTHER_FILE_TRANSFER_REQ", server::ImFileTransferReq, "IM.Server.IMFileTransferReq";
    OtherFileTransferRsp = 0x0007 / 0x0732,
        "CID_OTHER_FILE_TRANSFER_RSP", server::ImFileTransferRsp, "IM.Server.IMFileTransferRsp";
    OtherFileServerIpReq = 0x0007 / 0x0733,
        "CID_OTHER_FILE_SERVER_IP_REQ", server::ImFileServerIpReq, "IM.Server.IMFileServerIPReq";
    OtherFileServerIpRsp = 0x0007 / 0x0734,
        "CID_OTHER_FILE_SERVER_IP_RSP", server::ImFileServerIpRsp, "IM.Server.IMFileServerIPRsp";

    // teamtalk-rs extensions (IM.Ext): 0x0780-0x07ff of SID_OTHER is ours,
    // empty in TeamTalk; 0x0780-0x078f is kept for link authentication.
    // TeamTalk peers log and drop commands they do not know.
    OtherLinkAuthHello = 0x0007 / 0x0780,
        "CID_OTHER_LINK_AUTH_HELLO", ext::ImLinkAuthHello, "IM.Ext.IMLinkAuthHello";
    OtherLinkAuthChallenge = 0x0007 / 0x0781,
        "CID_OTHER_LINK_AUTH_CHALLENGE", ext::ImLinkAuthChallenge, "IM.Ext.IMLinkAuthChallenge";
    OtherLinkAuthProof = 0x0007 / 0x0782,
        "CID_OTHER_LINK_AUTH_PROOF", ext::ImLinkAuthProof, "IM.Ext.IMLinkAuthProof";
    OtherLinkAuthResult = 0x0007 / 0x0783,
        "CID_OTHER_LINK_AUTH_RESULT", ext::ImLinkAuthResult, "IM.Ext.IMLinkAuthResult";
    OtherRequestFailed = 0x0007 / 0x0790,
        "CID_OTHER_REQUEST_FAILED", ext::ImRequestFailed, "IM.Ext.IMRequestFailed";
    OtherUserGroupsReq = 0x0007 / 0x0791,
        "CID_OTHER_USER_GROUPS_REQ", ext::ImUserGroupsReq, "IM.Ext.IMUserGroupsReq";
    OtherUserGroupsRsp = 0x0007 / 0x0792,
        "CID_OTHER_USER_GROUPS_RSP", ext::ImUserGroupsRsp, "IM.Ext.IMUserGroupsRsp";
    OtherGroupSubscription = 0x0007 / 0x0793,
        "CID_OTHER_GROUP_SUBSCRIPTION", ext::ImGroupSubscription, "IM.Ext.IMGroupSubscription";
    OtherFileTaskDelete = 0x0007 / 0x07a0,
        "CID_OTHER_FILE_TASK_DELETE", ext::ImFileTaskDelete, "IM.Ext.IMFileTaskDelete";
}

impl Command {
    /// Builds a PDU of this command around `msg`.
    ///
    /// For code that picks the command at run time. The message type is not
    /// checked against the table; when the type is known statically, prefer
    /// [`CommandMessage::to_pdu`], which cannot mismatch.
    #[must_use]
    pub fn pdu(self, seq: u16, msg: &impl prost::Message) -> Pdu {
        Pdu::from_message(self.key(), seq, msg)
    }
}

impl fmt::Display for Command {
    /// Writes the `CID_*` name, the vocabulary of TeamTalk's logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Command> for CommandKey {
    fn from(cmd: Command) -> Self {
        cmd.key()
    }
}

impl Message {
    /// Decodes a PDU's body according to its header.
    ///
    /// A (service, command) pair outside the table is not an error: the PDU
    /// comes back as [`Message::Unknown`], so the caller decides whether to
    /// ignore, relay or refuse it. The body shares the PDU's buffer where
    /// the message has `bytes` fields.
    ///
    /// # Errors
    /// [`BodyError`] naming the command and the message when a known
    /// command's body is not valid protobuf for its message.
    pub fn decode(pdu: &Pdu) -> Result<Self, BodyError> {
        match Command::from_key(pdu.key()) {
            Some(cmd) => cmd.decode_body(pdu.body.clone()),
            None => Ok(Self::Unknown(pdu.clone())),
        }
    }

    /// The message as a PDU with sequence number `seq`.
    ///
    /// A known message gets a fresh header (version 1, flag 0, reserved 0,
    /// as every TeamTalk peer writes). [`Message::Unknown`] keeps its own
    /// header and body, only the sequence number is replaced, so relaying
    /// an unknown PDU does not alter it.
    #[must_use]
    pub fn to_pdu(&self, seq: u16) -> Pdu {
        if let Self::Unknown(pdu) = self {
            let mut pdu = pdu.clone();
            pdu.header.seq_num = seq;
            return pdu;
        }
        Pdu::new(self.key(), seq, self.encode_body())
    }
}

impl TryFrom<&Pdu> for Message {
    type Error = BodyError;

    fn try_from(pdu: &Pdu) -> Result<Self, BodyError> {
        Self::decode(pdu)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::pb::im::base_define as bd;

    /// `CID_OTHER_HEARTBEAT` -> `OtherHeartbeat`.
    fn camel(cid_name: &str) -> String {
        let rest = cid_name.strip_prefix("CID_").expect("CID_ prefix");
        rest.split('_')
            .map(|word| {
                let lower = word.to_ascii_lowercase();
                let mut chars = lower.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect()
    }

    /// The `CID_*` name the proto enums give a command id, if any.
    fn proto_enum_name(command_id: u16) -> Option<&'static str> {
        let v = i32::from(command_id);
        match command_id >> 8 {
            1 => bd::LoginCmdId::try_from(v).ok().map(|e| e.as_str_name()),
            2 => bd::BuddyListCmdId::try_from(v)
                .ok()
                .map(|e| e.as_str_name()),
            3 => bd::MessageCmdId::try_from(v).ok().map(|e| e.as_str_name()),
            4 => bd::GroupCmdId::try_from(v).ok().map(|e| e.as_str_name()),
            5 => bd::FileCmdId::try_from(v).ok().map(|e| e.as_str_name()),
            6 => bd::SwitchServiceCmdId::try_from(v)
                .ok()
                .map(|e| e.as_str_name()),
            7 => bd::OtherCmdId::try_from(v)
                .ok()
                .map(|e| e.as_str_name())
                .or_else(|| {
                    pb::im::ext::ExtCmdId::try_from(v)
                        .ok()
                        .map(|e| e.as_str_name())
                }),
            _ => None,
        }
    }

    #[test]
    fn table_covers_every_cid_of_the_proto_enums_and_nothing_else() {
        let in_protos: Vec<u16> = (0..=u16::MAX)
            .filter(|&id| proto_enum_name(id).is_some())
            .collect();
        let in_table: Vec<u16> = Command::ALL.iter().map(|c| c.key().command_id).collect();
        assert_eq!(in_table, in_protos);
        assert_eq!(Command::ALL.len(), 104);
    }

    #[test]
    fn extensions_stay_in_their_reserved_range() {
        // Our commands are the only ones in SID_OTHER 0x0780-0x07ff, and
        // TeamTalk's never reach it.
        for &cmd in Command::ALL {
            let ours = cmd.message_name().starts_with("IM.Ext.");
            let key = cmd.key();
            let in_range = key.service_id == 0x0007 && (0x0780..=0x07ff).contains(&key.command_id);
            assert_eq!(ours, in_range, "{cmd}");
        }
        assert_eq!(
            Command::from_key(CommandKey::new(0x0007, 0x0790)),
            Some(Command::OtherRequestFailed)
        );
    }

    #[test]
    fn link_authentication_stays_in_its_reserved_block() {
        let auth: Vec<Command> = Command::ALL
            .iter()
            .copied()
            .filter(|c| c.name().starts_with("CID_OTHER_LINK_AUTH_"))
            .collect();
        assert_eq!(
            auth,
            [
                Command::OtherLinkAuthHello,
                Command::OtherLinkAuthChallenge,
                Command::OtherLinkAuthProof,
                Command::OtherLinkAuthResult,
            ]
        );
        for cmd in auth {
            let key = cmd.key();
            assert_eq!(key.service_id, 0x0007, "{cmd}");
            assert!((0x0780..=0x078f).contains(&key.command_id), "{cmd}");
        }
    }

    #[test]
    fn names_keys_and_variants_agree() {
        let mut keys = HashSet::new();
        let mut messages = HashSet::new();
        for &cmd in Command::ALL {
            let key = cmd.key();
            assert!(keys.insert(key), "{cmd:?}: duplicate key {key}");
            assert!(
                messages.insert(cmd.message_name()),
                "{cmd:?}: message reused"
            );
            assert_eq!(Command::from_key(key), Some(cmd));
            assert_eq!(key.service_id, key.command_id >> 8, "{cmd:?}");
            assert!(bd::ServiceId::try_from(i32::from(key.service_id)).is_ok());
            assert_eq!(proto_enum_name(key.command_id), Some(cmd.name()));
            assert_eq!(format!("{cmd:?}"), camel(cmd.name()));
            assert_eq!(cmd.to_string(), cmd.name());
            assert_eq!(cmd.generated_message_name(), cmd.message_name());
        }
        let mut sorted = Command::ALL.to_vec();
        sorted.sort_by_key(|c| c.key());
        assert_eq!(sorted, Command::ALL);
    }

    #[test]
    fn wrong_service_for_a_known_command_is_unknown() {
        assert_eq!(Command::from_key(CommandKey::new(1, 0x0701)), None);
        assert_eq!(Command::from_key(CommandKey::new(7, 0x070c)), None);
        assert_eq!(Command::from_key(CommandKey::new(8, 0x0801)), None);
        assert_eq!(
            Command::from_key(CommandKey::new(7, 0x0731)),
            Some(Command::OtherFileTransferReq)
        );
    }

    #[test]
    fn unknown_pdu_is_kept_and_relayed_untouched() {
        let mut pdu = Pdu::new(
            CommandKey::new(9, 0x0901),
            5,
            Bytes::from_static(b"\xff\x00"),
        );
        pdu.header.flag = 3;
        let msg = Message::decode(&pdu).unwrap();
        assert_eq!(msg, Message::Unknown(pdu.clone()));
        assert_eq!(msg.command(), None);
        assert_eq!(msg.key(), CommandKey::new(9, 0x0901));
        assert_eq!(msg.encode_body(), pdu.body);
        assert_eq!(msg.to_pdu(5), pdu);
        assert_eq!(msg.to_pdu(6).header.seq_num, 6);
        assert_eq!(msg.to_pdu(6).header.flag, 3);
    }

    #[test]
    fn bad_body_names_command_and_message() {
        // Field 1 as a length-delimited field claiming 5 bytes, with 1 present.
        let pdu = Pdu::new(
            Command::MsgData.key(),
            1,
            Bytes::from_static(&[0x0a, 0x05, 0x00]),
        );
        let err = Message::decode(&pdu).unwrap_err();
        assert_eq!(err.key, Command::MsgData.key());
        assert_eq!(err.name, "CID_MSG_DATA");
        assert_eq!(err.message, "IM.Message.IMMsgData");
        let text = err.to_string();
        assert!(text.contains("CID_MSG_DATA") && text.contains("IM.Message.IMMsgData"));
    }

    #[test]
    fn typed_messages_pick_their_own_command() {
        let ack = pb::im::message::ImMsgDataAck {
            user_id: 2,
            session_id: 1,
            msg_id: 9,
            session_type: bd::SessionType::Single as i32,
        };
        let pdu = ack.to_pdu(4);
        assert_eq!(pdu.key(), CommandKey::new(3, 0x0302));
        assert_eq!(pdu.seq(), 4);
        assert_eq!(Command::MsgDataAck.pdu(4, &ack), pdu);
        let msg = Message::from(ack);
        assert_eq!(msg.command(), Some(Command::MsgDataAck));
        assert_eq!(Message::try_from(&pdu).unwrap(), msg);
        assert_eq!(msg.to_pdu(4), pdu);
    }

    #[test]
    fn missing_required_field_decodes_as_default() {
        // TeamTalk's own proto default: a group creation without group_type
        // is a temporary group.
        let body = Bytes::from_static(&[0x08, 0x01, 0x1a, 0x00, 0x22, 0x00]);
        let msg = Command::GroupCreateRequest.decode_body(body).unwrap();
        let Message::GroupCreateRequest(req) = msg else {
            panic!("wrong variant: {msg:?}");
        };
        assert_eq!(req.group_type, bd::GroupType::Tmp as i32);
    }

    proptest! {
        /// Arbitrary bytes under any known command never panic, and what
        /// decodes re-encodes to a body that decodes to the same message.
        #[test]
        fn decode_is_total_and_reencoding_is_stable(
            idx in 0..Command::ALL.len(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            seq in any::<u16>(),
        ) {
            let cmd = Command::ALL[idx];
            let pdu = Pdu::new(cmd.key(), seq, Bytes::from(body));
            if let Ok(msg) = Message::decode(&pdu) {
                prop_assert_eq!(msg.command(), Some(cmd));
                let again = msg.to_pdu(seq);
                prop_assert_eq!(again.key(), cmd.key());
                prop_assert_eq!(Message::decode(&again).unwrap(), msg);
            }
        }
    }
}
