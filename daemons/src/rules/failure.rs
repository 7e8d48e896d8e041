//! The failure answer of every request: what a server sends back when it
//! cannot serve a request (its store failed, it does not implement the
//! command, the body was unreadable), so the requester is never left
//! waiting and never mistakes a failure for an empty success.
//!
//! The rule, for each request a client or a msg_server can send:
//!
//! - if the request's reply type has a `result_code`, the answer is that
//!   reply with a failure code ([`FailureAnswer::Reply`]), the request's
//!   `attach_data` and identifying fields echoed;
//! - otherwise the reply cannot say "failed" (an empty user list reads as
//!   "no users"), so it is [`FailureAnswer::Close`]: msg_server closes the
//!   client's session with a logged reason rather than answer something
//!   false, and a server answering another server (db_proxy to msg_server)
//!   sends our extension `IMRequestFailed` (0x0007/0x0790, [`request_failed`])
//!   with the request's ids and `attach_data`.
//!
//! Commands that are not requests (replies, notifications, one-way acks
//! such as `CID_MSG_READ_ACK`, heartbeats) have no failure answer:
//! [`failure_reply`] gives `None`. A server may still report their failure
//! to a peer server with `IMRequestFailed`.
//!
//! | request | reply | failure answer |
//! |---|---|---|
//! | 0x0101 msg_server choice | 0x0102 | reply, `result_code` `REFUSE_REASON_NO_MSG_SERVER` (1) |
//! | 0x0103 login | 0x0104 | reply, `result_code` `REFUSE_REASON_NO_DB_SERVER` (3), `server_time` 0 (the sender sets its clock) |
//! | 0x0105 logout | 0x0106 | reply, `result_code` 1 |
//! | 0x0108 device token | 0x0109 | close (no result field) |
//! | 0x010a kick my PC | 0x010b | reply, `result_code` 1 |
//! | 0x010c push shield set | 0x010d | reply, `result_code` 1, no `shield_status` |
//! | 0x010e push shield query | 0x010f | reply, `result_code` 1, no `shield_status` |
//! | 0x0201 recent sessions | 0x0202 | close |
//! | 0x0204 users by id | 0x0205 | close |
//! | 0x0206 remove session | 0x0207 | reply, `result_code` 1, session echoed |
//! | 0x0208 changed users | 0x0209 | close |
//! | 0x020a users' status | 0x020b | close |
//! | 0x020c change avatar | 0x020d | reply, `result_code` 1 |
//! | 0x0210 departments | 0x0211 | close |
//! | 0x0213 change sign info | 0x0214 | reply, `result_code` 1, no `sign_info` |
//! | 0x0301 message | 0x0302 ack (db_proxy: 0x0301) | close (see below) |
//! | 0x0305 server time | 0x0306 | close |
//! | 0x0307 unread counts | 0x0308 | close |
//! | 0x0309 history | 0x030a | close |
//! | 0x030b latest message id | 0x030c | close |
//! | 0x030d messages by id | 0x030e | close |
//! | 0x0401 my groups | 0x0402 | close |
//! | 0x0403 group details | 0x0404 | close |
//! | 0x0405 create group | 0x0406 | reply, `result_code` 1, `group_name` echoed, no `group_id` |
//! | 0x0407 change members | 0x0408 | reply, `result_code` 1, `change_type` and `group_id` echoed, empty lists |
//! | 0x0409 mute group | 0x040a | reply, `result_code` 1, `group_id` echoed |
//! | 0x0501 file_server login | 0x0502 | reply, `result_code` 1, `task_id` echoed |
//! | 0x0504 pull file data | 0x0505 | reply, `result_code` 1, empty data |
//! | 0x0506 offer a file | 0x0507 | reply, `result_code` 1, no task, no addresses |
//! | 0x0509 offline files | 0x050a | close |
//! | 0x0703 validate login | 0x0704 | reply, `result_code` 2 (TeamTalk's "server error") |
//! | 0x0705 device tokens | 0x0706 | close |
//! | 0x070f push to users | 0x0710 | close |
//! | 0x0711 group shield of members | 0x0712 | close |
//! | 0x0731 open a file transfer | 0x0732 | reply, `result_code` 1, no task |
//! | 0x0733 file_server addresses | 0x0734 | close |
//!
//! `CID_MSG_DATA` is the one request whose reply differs by hop: the sender
//! gets a 0x0302 ack (no result field, hence close), while db_proxy answers
//! msg_server with the message itself, `msg_id` set. There `msg_id` 0 stays
//! what it has always meant, "refused, not storable" (to oneself, empty, a
//! group message from a non-member): a decided answer, not a failure. A message db_proxy could not store because its store failed is
//! answered with `IMRequestFailed`.
//!
//! 0x050b and 0x050c (offline file added / deleted) have no reply in
//! TeamTalk and are not requests here.
//!
//! In `user_id` fields of the reply [`failure_reply`] puts the `user_id`
//! it is given (the authenticated user on msg_server, [`requester`] on
//! db_proxy); every other field is echoed from the request or left empty.
//! `attach_data` is copied as the request has it, absent stays absent.

use bytes::Bytes;
use teamtalk_proto::pb::im::base_define::ResultType;
use teamtalk_proto::pb::im::buddy::{ImChangeAvatarRsp, ImChangeSignInfoRsp, ImRemoveSessionRsp};
use teamtalk_proto::pb::im::ext::{ImRequestFailed, RequestFailedCode};
use teamtalk_proto::pb::im::file::{ImFileLoginRsp, ImFilePullDataRsp, ImFileRsp};
use teamtalk_proto::pb::im::group::{ImGroupChangeMemberRsp, ImGroupCreateRsp, ImGroupShieldRsp};
use teamtalk_proto::pb::im::login::{
    ImKickPcClientRsp, ImLoginRes, ImLogoutRsp, ImMsgServRsp, ImPushShieldRsp, ImQueryPushShieldRsp,
};
use teamtalk_proto::pb::im::server::{ImFileTransferRsp, ImValidateRsp};
use teamtalk_proto::{Command, CommandKey, Message, Pdu};

/// The failure `result_code` of replies whose field is a plain `uint32`
/// (0 is success there; TeamTalk's peers treat any other value as failed).
pub const RESULT_FAILED: u32 = 1;
/// The failure `result_code` of `IMValidateRsp` (0x0704): TeamTalk's
/// db_proxy answers 2 when it could not check a login.
pub const VALIDATE_SERVER_ERROR: u32 = 2;
/// Longest `reason` [`request_failed`] puts on the wire, in bytes.
pub const MAX_REASON_LEN: usize = 200;

/// What a request that cannot be served is answered with.
#[derive(Debug, Clone, PartialEq)]
pub enum FailureAnswer {
    /// The request's own reply, carrying a failure `result_code`, the
    /// request's seq and `attach_data`. Send it.
    Reply(Pdu),
    /// The reply type has no way to say "failed". msg_server closes the
    /// client's session with a logged reason; a server answering another
    /// server sends [`request_failed`] instead.
    Close,
}

/// The command that answers `request`, for the commands that are requests;
/// `None` for replies, notifications and one-way messages.
#[must_use]
pub const fn reply_command(request: Command) -> Option<Command> {
    use Command as C;
    Some(match request {
        C::LoginReqMsgserver => C::LoginResMsgserver,
        C::LoginReqUserlogin => C::LoginResUserlogin,
        C::LoginReqLoginout => C::LoginResLoginout,
        C::LoginReqDevicetoken => C::LoginResDevicetoken,
        C::LoginReqKickpcclient => C::LoginResKickpcclient,
        C::LoginReqPushShield => C::LoginResPushShield,
        C::LoginReqQueryPushShield => C::LoginResQueryPushShield,
        C::BuddyListRecentContactSessionRequest => C::BuddyListRecentContactSessionResponse,
        C::BuddyListUserInfoRequest => C::BuddyListUserInfoResponse,
        C::BuddyListRemoveSessionReq => C::BuddyListRemoveSessionRes,
        C::BuddyListAllUserRequest => C::BuddyListAllUserResponse,
        C::BuddyListUsersStatusRequest => C::BuddyListUsersStatusResponse,
        C::BuddyListChangeAvatarRequest => C::BuddyListChangeAvatarResponse,
        C::BuddyListDepartmentRequest => C::BuddyListDepartmentResponse,
        C::BuddyListChangeSignInfoRequest => C::BuddyListChangeSignInfoResponse,
        // The client's answer; db_proxy answers msg_server with CID_MSG_DATA.
        C::MsgData => C::MsgDataAck,
        C::MsgTimeRequest => C::MsgTimeResponse,
        C::MsgUnreadCntRequest => C::MsgUnreadCntResponse,
        C::MsgListRequest => C::MsgListResponse,
        C::MsgGetLatestMsgIdReq => C::MsgGetLatestMsgIdRsp,
        C::MsgGetByMsgIdReq => C::MsgGetByMsgIdRes,
        C::GroupNormalListRequest => C::GroupNormalListResponse,
        C::GroupInfoRequest => C::GroupInfoResponse,
        C::GroupCreateRequest => C::GroupCreateResponse,
        C::GroupChangeMemberRequest => C::GroupChangeMemberResponse,
        C::GroupShieldGroupRequest => C::GroupShieldGroupResponse,
        C::FileLoginReq => C::FileLoginRes,
        C::FilePullDataReq => C::FilePullDataRsp,
        C::FileRequest => C::FileResponse,
        C::FileHasOfflineReq => C::FileHasOfflineRes,
        C::OtherValidateReq => C::OtherValidateRsp,
        C::OtherGetDeviceTokenReq => C::OtherGetDeviceTokenRsp,
        C::OtherPushToUserReq => C::OtherPushToUserRsp,
        C::OtherGetShieldReq => C::OtherGetShieldRsp,
        C::OtherFileTransferReq => C::OtherFileTransferRsp,
        C::OtherFileServerIpReq => C::OtherFileServerIpRsp,
        C::OtherUserGroupsReq => C::OtherUserGroupsRsp,
        _ => return None,
    })
}

/// The failure answer to `request` (see the module table), with `seq` and,
/// in the reply's user id field, `user_id`; `None` when `request` is not a
/// request.
#[must_use]
pub fn failure_reply(request: &Message, user_id: u32, seq: u16) -> Option<FailureAnswer> {
    use FailureAnswer::{Close, Reply};
    let answer = match request {
        Message::LoginReqMsgserver(_) => Reply(Command::LoginResMsgserver.pdu(
            seq,
            &ImMsgServRsp {
                result_code: ResultType::RefuseReasonNoMsgServer as i32,
                prior_ip: None,
                backip_ip: None,
                port: None,
            },
        )),
        Message::LoginReqUserlogin(_) => Reply(Command::LoginResUserlogin.pdu(
            seq,
            &ImLoginRes {
                server_time: 0,
                result_code: ResultType::RefuseReasonNoDbServer as i32,
                result_string: Some("server error; try again later".to_owned()),
                online_status: None,
                user_info: None,
            },
        )),
        Message::LoginReqLoginout(_) => Reply(Command::LoginResLoginout.pdu(
            seq,
            &ImLogoutRsp {
                result_code: RESULT_FAILED,
            },
        )),
        Message::LoginReqKickpcclient(_) => Reply(Command::LoginResKickpcclient.pdu(
            seq,
            &ImKickPcClientRsp {
                user_id,
                result_code: RESULT_FAILED,
            },
        )),
        Message::LoginReqPushShield(r) => Reply(Command::LoginResPushShield.pdu(
            seq,
            &ImPushShieldRsp {
                user_id,
                result_code: RESULT_FAILED,
                shield_status: None,
                attach_data: r.attach_data.clone(),
            },
        )),
        Message::LoginReqQueryPushShield(r) => Reply(Command::LoginResQueryPushShield.pdu(
            seq,
            &ImQueryPushShieldRsp {
                user_id,
                result_code: RESULT_FAILED,
                shield_status: None,
                attach_data: r.attach_data.clone(),
            },
        )),
        Message::BuddyListRemoveSessionReq(r) => Reply(Command::BuddyListRemoveSessionRes.pdu(
            seq,
            &ImRemoveSessionRsp {
                user_id,
                result_code: RESULT_FAILED,
                session_type: r.session_type,
                session_id: r.session_id,
                attach_data: r.attach_data.clone(),
            },
        )),
        Message::BuddyListChangeAvatarRequest(r) => {
            Reply(Command::BuddyListChangeAvatarResponse.pdu(
                seq,
                &ImChangeAvatarRsp {
                    user_id,
                    result_code: RESULT_FAILED,
                    attach_data: r.attach_data.clone(),
                },
            ))
        }
        Message::BuddyListChangeSignInfoRequest(r) => {
            Reply(Command::BuddyListChangeSignInfoResponse.pdu(
                seq,
                &ImChangeSignInfoRsp {
                    user_id,
                    result_code: RESULT_FAILED,
                    sign_info: None,
                    attach_data: r.attach_data.clone(),
                },
            ))
        }
        Message::GroupCreateRequest(r) => Reply(Command::GroupCreateResponse.pdu(
            seq,
            &ImGroupCreateRsp {
                user_id,
                result_code: RESULT_FAILED,
                group_id: None,
                group_name: r.group_name.clone(),
                user_id_list: Vec::new(),
                attach_data: r.attach_data.clone(),
            },
        )),
        Message::GroupChangeMemberRequest(r) => Reply(Command::GroupChangeMemberResponse.pdu(
            seq,
            &ImGroupChangeMemberRsp {
                user_id,
                change_type: r.change_type,
                result_code: RESULT_FAILED,
                group_id: r.group_id,
                cur_user_id_list: Vec::new(),
                chg_user_id_list: Vec::new(),
                attach_data: r.attach_data.clone(),
            },
        )),
        Message::GroupShieldGroupRequest(r) => Reply(Command::GroupShieldGroupResponse.pdu(
            seq,
            &ImGroupShieldRsp {
                user_id,
                group_id: r.group_id,
                result_code: RESULT_FAILED,
                attach_data: r.attach_data.clone(),
            },
        )),
        Message::FileLoginReq(r) => Reply(Command::FileLoginRes.pdu(
            seq,
            &ImFileLoginRsp {
                result_code: RESULT_FAILED,
                task_id: r.task_id.clone(),
            },
        )),
        Message::FilePullDataReq(r) => Reply(Command::FilePullDataRsp.pdu(
            seq,
            &ImFilePullDataRsp {
                result_code: RESULT_FAILED,
                task_id: r.task_id.clone(),
                user_id,
                offset: r.offset,
                file_data: Bytes::new(),
            },
        )),
        Message::FileRequest(r) => Reply(Command::FileResponse.pdu(
            seq,
            &ImFileRsp {
                result_code: RESULT_FAILED,
                from_user_id: user_id,
                to_user_id: r.to_user_id,
                file_name: r.file_name.clone(),
                task_id: String::new(),
                ip_addr_list: Vec::new(),
                trans_mode: r.trans_mode,
            },
        )),
        Message::OtherValidateReq(r) => Reply(Command::OtherValidateRsp.pdu(
            seq,
            &ImValidateRsp {
                groups: None,
                user_name: r.user_name.clone(),
                result_code: VALIDATE_SERVER_ERROR,
                result_string: Some("server error; try again".to_owned()),
                user_info: None,
                attach_data: r.attach_data.clone(),
            },
        )),
        Message::OtherFileTransferReq(r) => Reply(Command::OtherFileTransferRsp.pdu(
            seq,
            &ImFileTransferRsp {
                result_code: RESULT_FAILED,
                from_user_id: user_id,
                to_user_id: r.to_user_id,
                file_name: Some(r.file_name.clone()),
                file_size: Some(r.file_size),
                task_id: None,
                trans_mode: Some(r.trans_mode),
                attach_data: r.attach_data.clone(),
            },
        )),
        // The reply types below have no result field.
        Message::LoginReqDevicetoken(_)
        | Message::BuddyListRecentContactSessionRequest(_)
        | Message::BuddyListUserInfoRequest(_)
        | Message::BuddyListAllUserRequest(_)
        | Message::BuddyListUsersStatusRequest(_)
        | Message::BuddyListDepartmentRequest(_)
        | Message::MsgData(_)
        | Message::MsgTimeRequest(_)
        | Message::MsgUnreadCntRequest(_)
        | Message::MsgListRequest(_)
        | Message::MsgGetLatestMsgIdReq(_)
        | Message::MsgGetByMsgIdReq(_)
        | Message::GroupNormalListRequest(_)
        | Message::GroupInfoRequest(_)
        | Message::FileHasOfflineReq(_)
        | Message::OtherGetDeviceTokenReq(_)
        | Message::OtherPushToUserReq(_)
        | Message::OtherGetShieldReq(_)
        | Message::OtherFileServerIpReq(_)
        | Message::OtherUserGroupsReq(_) => Close,
        _ => return None,
    };
    Some(answer)
}

/// The user a request is made for, as its own fields say (`user_id`, or
/// `from_user_id` for messages and file offers); `None` for requests that
/// name no single user (login by name, device tokens of a list, server
/// lookups). db_proxy passes it to [`failure_reply`]; msg_server passes the
/// authenticated user instead.
#[must_use]
pub fn requester(request: &Message) -> Option<u32> {
    Some(match request {
        Message::LoginReqDevicetoken(r) => r.user_id,
        Message::LoginReqKickpcclient(r) => r.user_id,
        Message::LoginReqPushShield(r) => r.user_id,
        Message::LoginReqQueryPushShield(r) => r.user_id,
        Message::BuddyListRecentContactSessionRequest(r) => r.user_id,
        Message::BuddyListUserInfoRequest(r) => r.user_id,
        Message::BuddyListRemoveSessionReq(r) => r.user_id,
        Message::BuddyListAllUserRequest(r) => r.user_id,
        Message::BuddyListUsersStatusRequest(r) => r.user_id,
        Message::BuddyListChangeAvatarRequest(r) => r.user_id,
        Message::BuddyListDepartmentRequest(r) => r.user_id,
        Message::BuddyListChangeSignInfoRequest(r) => r.user_id,
        Message::MsgData(r) => r.from_user_id,
        Message::MsgUnreadCntRequest(r) => r.user_id,
        Message::MsgListRequest(r) => r.user_id,
        Message::MsgGetLatestMsgIdReq(r) => r.user_id,
        Message::MsgGetByMsgIdReq(r) => r.user_id,
        Message::GroupNormalListRequest(r) => r.user_id,
        Message::GroupInfoRequest(r) => r.user_id,
        Message::GroupCreateRequest(r) => r.user_id,
        Message::GroupChangeMemberRequest(r) => r.user_id,
        Message::GroupShieldGroupRequest(r) => r.user_id,
        Message::FileLoginReq(r) => r.user_id,
        Message::FilePullDataReq(r) => r.user_id,
        Message::FileRequest(r) => r.from_user_id,
        Message::FileHasOfflineReq(r) => r.user_id,
        Message::OtherFileTransferReq(r) => r.from_user_id,
        _ => return None,
    })
}

/// An `IMRequestFailed` (0x0007/0x0790) answering the request whose header
/// ids are `request`, with its `attach_data` and `seq`. `reason` is for the
/// peer's logs; it is cut to [`MAX_REASON_LEN`] bytes (at a character
/// boundary) and left out when empty.
#[must_use]
pub fn request_failed(
    request: CommandKey,
    attach_data: Option<Bytes>,
    code: RequestFailedCode,
    reason: &str,
    seq: u16,
) -> Pdu {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    let msg = ImRequestFailed {
        service_id: u32::from(request.service_id),
        command_id: u32::from(request.command_id),
        result_code: u32::try_from(code as i32).unwrap_or(0),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
        attach_data,
    };
    Command::OtherRequestFailed.pdu(seq, &msg)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use teamtalk_proto::pb::im::group::ImGroupCreateReq;
    use teamtalk_proto::pb::im::message::ImGetMsgListReq;

    use super::*;

    const ATTACH: &[u8] = &[0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0];

    /// A request message with every field at its default, `attach_data`
    /// set where the message has the field.
    fn request(command: Command) -> Message {
        let mut msg = command
            .decode_body(Bytes::new())
            .expect("an empty body decodes to defaults");
        if let Some(m) = msg.attached_mut() {
            m.set_attach_data(Some(Bytes::from_static(ATTACH)));
        }
        msg
    }

    /// Requests, told apart by TeamTalk's naming (`*_REQ`, `*_REQUEST`,
    /// `*_REQ_*`) rather than by the table under test, plus `CID_MSG_DATA`;
    /// less the two offline-file records, which have no reply, and our
    /// `CID_OTHER_REQUEST_FAILED`, itself an answer.
    fn is_request_by_name(command: Command) -> bool {
        let name = command.name();
        command == Command::MsgData
            || (name.contains("_REQ")
                && !matches!(
                    command,
                    Command::FileAddOfflineReq
                        | Command::FileDelOfflineReq
                        | Command::OtherRequestFailed
                ))
    }

    #[test]
    fn every_request_has_a_failure_answer_and_nothing_else_does() {
        let mut requests = 0;
        for &command in Command::ALL {
            let answer = failure_reply(&request(command), 7, 33);
            assert_eq!(
                answer.is_some(),
                is_request_by_name(command),
                "{command}: failure answer {answer:?}"
            );
            assert_eq!(
                reply_command(command).is_some(),
                is_request_by_name(command),
                "{command}: reply command"
            );
            if answer.is_some() {
                requests += 1;
            }
        }
        assert_eq!(
            requests, 37,
            "requests in the command table (36 of TeamTalk, 1 of ours)"
        );
    }

    #[test]
    fn replies_pair_with_their_request() {
        for &command in Command::ALL {
            let Some(reply) = reply_command(command) else {
                continue;
            };
            let (req, rsp) = (command.key(), reply.key());
            assert_eq!(rsp.service_id, req.service_id, "{command}");
            assert_eq!(rsp.command_id, req.command_id + 1, "{command}");
        }
    }

    /// A reply with a result field is the answer exactly when one exists;
    /// it carries a failure code, the seq, the user and the attach data.
    #[test]
    fn reply_when_the_reply_type_has_a_result_code_else_close() {
        for &command in Command::ALL {
            let req = request(command);
            let Some(answer) = failure_reply(&req, 7, 33) else {
                continue;
            };
            let reply = reply_command(command).expect("a request");
            let has_result = reply
                .decode_body(Bytes::new())
                .expect("defaults")
                .result_code()
                .is_some();
            match answer {
                FailureAnswer::Close => assert!(!has_result, "{command} should reply"),
                FailureAnswer::Reply(pdu) => {
                    assert!(has_result, "{command} replies without a result field");
                    assert_eq!(pdu.key(), reply.key(), "{command}");
                    assert_eq!(pdu.seq(), 33, "{command}");
                    let mut msg = Message::decode(&pdu).expect("decodes");
                    let code = msg.result_code().expect("has a result");
                    assert_ne!(code, 0, "{command}: failure must not read as success");
                    let mut req = req.clone();
                    assert_eq!(msg.attach_data(), req.attach_data(), "{command}");
                }
            }
        }
    }

    #[test]
    fn failure_codes_follow_teamtalk() {
        let code = |command| {
            let Some(FailureAnswer::Reply(pdu)) = failure_reply(&request(command), 7, 1) else {
                panic!("{command} has no failure reply");
            };
            Message::decode(&pdu).unwrap().result_code().unwrap()
        };
        assert_eq!(
            code(Command::LoginReqMsgserver),
            ResultType::RefuseReasonNoMsgServer as u32
        );
        assert_eq!(
            code(Command::LoginReqUserlogin),
            ResultType::RefuseReasonNoDbServer as u32
        );
        assert_eq!(code(Command::OtherValidateReq), VALIDATE_SERVER_ERROR);
        for command in [
            Command::LoginReqLoginout,
            Command::LoginReqKickpcclient,
            Command::LoginReqPushShield,
            Command::LoginReqQueryPushShield,
            Command::BuddyListRemoveSessionReq,
            Command::BuddyListChangeAvatarRequest,
            Command::BuddyListChangeSignInfoRequest,
            Command::GroupCreateRequest,
            Command::GroupChangeMemberRequest,
            Command::GroupShieldGroupRequest,
            Command::FileLoginReq,
            Command::FilePullDataReq,
            Command::FileRequest,
            Command::OtherFileTransferReq,
        ] {
            assert_eq!(code(command), RESULT_FAILED, "{command}");
        }
    }

    #[test]
    fn identifying_fields_are_echoed() {
        let req = Message::GroupCreateRequest(ImGroupCreateReq {
            user_id: 99,
            group_type: 2,
            group_name: "team".into(),
            group_avatar: String::new(),
            member_id_list: vec![1, 2],
            attach_data: None,
        });
        let Some(FailureAnswer::Reply(pdu)) = failure_reply(&req, 4, 8) else {
            panic!("group creation has a failure reply");
        };
        let rsp: ImGroupCreateRsp = pdu.decode_body().unwrap();
        assert_eq!(
            rsp,
            ImGroupCreateRsp {
                user_id: 4,
                result_code: RESULT_FAILED,
                group_id: None,
                group_name: "team".into(),
                user_id_list: Vec::new(),
                attach_data: None,
            }
        );
        assert_eq!(requester(&req), Some(99));
    }

    #[test]
    fn requester_is_known_for_requests_naming_one_user() {
        let list = Message::MsgListRequest(ImGetMsgListReq {
            user_id: 5,
            ..ImGetMsgListReq::default()
        });
        assert_eq!(requester(&list), Some(5));
        // Requests by name or for many users name no single requester.
        assert_eq!(requester(&request(Command::OtherValidateReq)), None);
        assert_eq!(requester(&request(Command::OtherGetDeviceTokenReq)), None);
        // Every request with a user id in the reply names its requester.
        for command in [
            Command::LoginReqPushShield,
            Command::BuddyListRemoveSessionReq,
            Command::GroupShieldGroupRequest,
            Command::FileRequest,
        ] {
            assert_eq!(requester(&request(command)), Some(0), "{command}");
        }
    }

    #[test]
    fn request_failed_carries_the_request_ids_and_a_bounded_reason() {
        let pdu = request_failed(
            Command::MsgListRequest.key(),
            Some(Bytes::from_static(ATTACH)),
            RequestFailedCode::RequestFailedServerError,
            "listing messages failed",
            12,
        );
        assert_eq!(pdu.key(), Command::OtherRequestFailed.key());
        assert_eq!(pdu.seq(), 12);
        let msg: ImRequestFailed = pdu.decode_body().unwrap();
        assert_eq!(
            msg,
            ImRequestFailed {
                service_id: 0x0003,
                command_id: 0x0309,
                result_code: 1,
                reason: Some("listing messages failed".into()),
                attach_data: Some(Bytes::from_static(ATTACH)),
            }
        );
        let long = "é".repeat(MAX_REASON_LEN);
        let pdu = request_failed(
            CommandKey::new(9, 0x0901),
            None,
            RequestFailedCode::RequestFailedUnsupported,
            &long,
            0,
        );
        let msg: ImRequestFailed = pdu.decode_body().unwrap();
        let reason = msg.reason.unwrap();
        assert!(reason.len() <= MAX_REASON_LEN && reason.chars().all(|c| c == 'é'));
        assert_eq!(
            (msg.service_id, msg.command_id, msg.result_code),
            (9, 0x0901, 4)
        );
        let silent = request_failed(
            CommandKey::new(9, 0x0901),
            None,
            RequestFailedCode::RequestFailedBadRequest,
            "",
            0,
        );
        assert_eq!(
            silent.decode_body::<ImRequestFailed>().unwrap().reason,
            None
        );
    }
}
