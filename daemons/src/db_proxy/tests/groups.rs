//! Groups (`cmd/groups.rs`) and group sessions everywhere single sessions
//! work (`cmd/messages.rs`, `cmd/sessions.rs`).

use bytes::Bytes;
use prost::Message as _;
use teamtalk_proto::Command;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::GroupVersionInfo;
use teamtalk_proto::pb::im::buddy::{
    ImRecentContactSessionReq, ImRecentContactSessionRsp, ImRemoveSessionReq, ImRemoveSessionRsp,
};
use teamtalk_proto::pb::im::ext::{ImUserGroupsReq, ImUserGroupsRsp, RequestFailedCode};
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberReq, ImGroupChangeMemberRsp, ImGroupCreateReq, ImGroupCreateRsp,
    ImGroupInfoListReq, ImGroupInfoListRsp, ImGroupShieldReq, ImGroupShieldRsp,
    ImNormalGroupListReq, ImNormalGroupListRsp,
};
use teamtalk_proto::pb::im::message::{
    ImGetLatestMsgIdReq, ImGetLatestMsgIdRsp, ImGetMsgByIdReq, ImGetMsgByIdRsp, ImGetMsgListReq,
    ImGetMsgListRsp, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq, ImUnreadMsgCntRsp,
};
use teamtalk_proto::pb::im::server::{ImGroupGetShieldReq, ImGroupGetShieldRsp};

use super::{attach, call, failing_fixture, fixture, request_failed, run, text};
use crate::db_proxy::{DbProxy, RESULT_FAILED};
use crate::rules::sizing::{MAX_FRAME_LEN, PAGE_SLACK};
use crate::store::{GroupType, NewGroup, Store};

const FORBIDDEN: u32 = RequestFailedCode::RequestFailedForbidden as u32;
const BAD_REQUEST: u32 = RequestFailedCode::RequestFailedBadRequest as u32;

fn create_req(user: u32, group_type: i32, members: &[u32]) -> ImGroupCreateReq {
    ImGroupCreateReq {
        user_id: user,
        group_type,
        group_name: "team".into(),
        group_avatar: "http://x/t.png".into(),
        member_id_list: members.to_vec(),
        attach_data: attach(),
    }
}

/// Creates a TMP group through the handler; returns its id.
fn create(proxy: &DbProxy, user: u32, members: &[u32]) -> u32 {
    let rsp: ImGroupCreateRsp = call(proxy, 3, &create_req(user, 2, members));
    assert_eq!(rsp.result_code, 0);
    rsp.group_id.expect("group id")
}

fn change_req(user: u32, change: i32, group: u32, members: &[u32]) -> ImGroupChangeMemberReq {
    ImGroupChangeMemberReq {
        user_id: user,
        change_type: change,
        group_id: group,
        member_id_list: members.to_vec(),
        attach_data: attach(),
    }
}

fn change(
    proxy: &DbProxy,
    user: u32,
    kind: i32,
    group: u32,
    members: &[u32],
) -> ImGroupChangeMemberRsp {
    call(proxy, 4, &change_req(user, kind, group, members))
}

fn info(proxy: &DbProxy, user: u32, known: &[(u32, u32)]) -> ImGroupInfoListRsp {
    call(
        proxy,
        5,
        &ImGroupInfoListReq {
            user_id: user,
            group_version_list: known
                .iter()
                .map(|&(group_id, version)| GroupVersionInfo { group_id, version })
                .collect(),
            attach_data: attach(),
        },
    )
}

fn group_text(from: u32, group: u32, body: &str) -> ImMsgData {
    ImMsgData {
        msg_type: 0x11,
        ..text(from, group, body)
    }
}

fn post(proxy: &DbProxy, from: u32, group: u32, body: &str) -> ImMsgData {
    call(proxy, 7, &group_text(from, group, body))
}

/// Sends `req` and expects `IMRequestFailed` with `code` and the attach
/// data echoed.
fn refused<Q: CommandMessage>(proxy: &DbProxy, req: &Q, code: u32) {
    let reply = proxy
        .handle(&req.to_pdu(11))
        .unwrap_or_else(|| panic!("{} not answered", Q::COMMAND));
    let f = request_failed(&reply, 11, Q::COMMAND);
    assert_eq!(f.result_code, code, "{}", Q::COMMAND);
}

#[test]
fn clients_create_temporary_groups_and_members_read_them() {
    let f = fixture();
    let rsp: ImGroupCreateRsp = call(&f.proxy, 3, &create_req(1, 2, &[2, 3, 2]));
    assert_eq!(
        (
            rsp.user_id,
            rsp.result_code,
            rsp.group_name.as_str(),
            &rsp.user_id_list[..]
        ),
        (1, 0, "team", &[1, 2, 3][..]),
        "the creator is a member"
    );
    assert_eq!(rsp.attach_data, attach());
    let g = rsp.group_id.unwrap();
    // Unknown types and users are refused; so is a TMP group by user 0.
    for req in [
        create_req(1, 9, &[2]),
        create_req(1, 2, &[2, 99]),
        create_req(0, 2, &[2]),
    ] {
        let rsp: ImGroupCreateRsp = call(&f.proxy, 3, &req);
        assert_eq!(
            (rsp.result_code, rsp.group_id, rsp.group_name.as_str()),
            (RESULT_FAILED, None, "team")
        );
        assert_eq!(rsp.attach_data, attach());
    }
    let n = f
        .store
        .create_group(&NewGroup {
            name: "all hands".into(),
            avatar: String::new(),
            creator: 4,
            group_type: GroupType::Normal,
            members: vec![2, 3],
        })
        .unwrap()
        .id;

    // Every group of a user for msg_server, the normal ones for clients.
    let rsp: ImUserGroupsRsp = call(
        &f.proxy,
        6,
        &ImUserGroupsReq {
            user_id: 2,
            attach_data: attach(),
        },
    );
    assert_eq!((rsp.user_id, &rsp.group_id_list[..]), (2, &[g, n][..]));
    let rsp: ImNormalGroupListRsp = call(
        &f.proxy,
        8,
        &ImNormalGroupListReq {
            user_id: 2,
            attach_data: attach(),
        },
    );
    let list: Vec<(u32, u32)> = rsp
        .group_version_list
        .iter()
        .map(|v| (v.group_id, v.version))
        .collect();
    assert_eq!(list, [(n, 1)]);
    assert_eq!(rsp.attach_data, attach());

    // Details of the groups whose version moved, members included.
    let rsp = info(&f.proxy, 2, &[(g, 0), (n, 1), (999, 0)]);
    assert_eq!(rsp.user_id, 2);
    assert_eq!(
        rsp.group_info_list.len(),
        1,
        "n is current, 999 does not exist"
    );
    let gi = &rsp.group_info_list[0];
    assert_eq!(
        (
            gi.group_id,
            gi.version,
            gi.group_name.as_str(),
            gi.group_avatar.as_str(),
            gi.group_creator_id,
            gi.group_type,
            gi.shield_status,
            &gi.group_member_list[..]
        ),
        (g, 1, "team", "http://x/t.png", 1, 2, 0, &[1, 2, 3][..])
    );
    // A non-member gets nothing of it.
    assert!(info(&f.proxy, 4, &[(g, 0)]).group_info_list.is_empty());
    assert_eq!(info(&f.proxy, 4, &[(n, 0)]).group_info_list.len(), 1);
    // Over-large requests are refused, not cut.
    let too_many: Vec<(u32, u32)> = (0..=10_000).map(|i| (i, 0)).collect();
    let req = ImGroupInfoListReq {
        user_id: 2,
        group_version_list: too_many
            .iter()
            .map(|&(group_id, version)| GroupVersionInfo { group_id, version })
            .collect(),
        attach_data: attach(),
    };
    refused(&f.proxy, &req, BAD_REQUEST);
}

#[test]
fn member_changes_answer_the_lists_msg_server_announces() {
    let f = fixture();
    let g = create(&f.proxy, 1, &[2, 3]);
    let rsp = change(&f.proxy, 2, 1, g, &[4, 3]);
    assert_eq!(
        (
            rsp.user_id,
            rsp.change_type,
            rsp.result_code,
            rsp.group_id,
            &rsp.cur_user_id_list[..],
            &rsp.chg_user_id_list[..]
        ),
        (2, 1, 0, g, &[1, 2, 3, 4][..], &[4][..])
    );
    assert_eq!(rsp.attach_data, attach());
    // A member may not remove another; refused with the reply's failure.
    let rsp = change(&f.proxy, 2, 2, g, &[3]);
    assert_eq!(
        (
            rsp.change_type,
            rsp.result_code,
            rsp.group_id,
            rsp.cur_user_id_list.len(),
            rsp.chg_user_id_list.len()
        ),
        (2, RESULT_FAILED, g, 0, 0)
    );
    assert_eq!(rsp.attach_data, attach());
    // But may leave; the creator removes anyone.
    let rsp = change(&f.proxy, 3, 2, g, &[3]);
    assert_eq!((rsp.result_code, &rsp.chg_user_id_list[..]), (0, &[3][..]));
    let rsp = change(&f.proxy, 1, 2, g, &[4]);
    assert_eq!(
        (rsp.result_code, &rsp.cur_user_id_list[..]),
        (0, &[1, 2][..])
    );
    // Strangers, unknown groups and unknown change types: refused.
    for (user, kind, group) in [(3, 1, g), (1, 1, 999), (1, 7, g)] {
        let rsp = change(&f.proxy, user, kind, group, &[4]);
        assert_eq!(rsp.result_code, RESULT_FAILED, "{user} {kind} {group}");
    }
    // Three changes: version 4.
    let rsp = info(&f.proxy, 1, &[(g, 1)]);
    assert_eq!(rsp.group_info_list[0].version, 4);
    assert!(info(&f.proxy, 1, &[(g, 4)]).group_info_list.is_empty());
    // NORMAL groups: the creator only (here through the store's rule).
    let n = f
        .store
        .create_group(&NewGroup {
            name: "n".into(),
            avatar: String::new(),
            creator: 1,
            group_type: GroupType::Normal,
            members: vec![2],
        })
        .unwrap()
        .id;
    assert_eq!(change(&f.proxy, 2, 1, n, &[3]).result_code, RESULT_FAILED);
    assert_eq!(change(&f.proxy, 2, 2, n, &[2]).result_code, RESULT_FAILED);
    assert_eq!(change(&f.proxy, 1, 1, n, &[3]).result_code, 0);
}

/// db_proxy's peers are cluster servers: a NORMAL group is created as
/// asked (msg_server refuses them from clients), and user 0 is the
/// administration, as http_msg_server sends it: creator of no membership,
/// allowed any change.
#[test]
fn peers_create_normal_groups_and_user_zero_is_the_administration() {
    let f = fixture();
    let rsp: ImGroupCreateRsp = call(&f.proxy, 3, &create_req(0, 1, &[3, 2]));
    assert_eq!(
        (rsp.user_id, rsp.result_code, &rsp.user_id_list[..]),
        (0, 0, &[2, 3][..]),
        "the administration is no member"
    );
    let g = rsp.group_id.unwrap();
    let stored = f.store.group(g).unwrap().unwrap();
    assert_eq!((stored.group_type, stored.creator), (GroupType::Normal, 0));
    // A NORMAL group asked by a user (a peer vouches for it): its creator.
    let rsp: ImGroupCreateRsp = call(&f.proxy, 3, &create_req(1, 1, &[2]));
    assert_eq!((rsp.result_code, &rsp.user_id_list[..]), (0, &[1, 2][..]));
    // Members cannot change the administration's group; user 0 can.
    assert_eq!(change(&f.proxy, 2, 1, g, &[4]).result_code, RESULT_FAILED);
    let rsp = change(&f.proxy, 0, 1, g, &[4]);
    assert_eq!(
        (
            rsp.result_code,
            &rsp.chg_user_id_list[..],
            &rsp.cur_user_id_list[..]
        ),
        (0, &[4][..], &[2, 3, 4][..])
    );
    let rsp = change(&f.proxy, 0, 2, g, &[2, 3]);
    assert_eq!((rsp.result_code, &rsp.cur_user_id_list[..]), (0, &[4][..]));
}

#[test]
fn shields_are_set_by_members_and_read_by_msg_server() {
    let f = fixture();
    let g = create(&f.proxy, 1, &[2, 3]);
    let shield = |user, group, on| -> ImGroupShieldRsp {
        call(
            &f.proxy,
            9,
            &ImGroupShieldReq {
                user_id: user,
                group_id: group,
                shield_status: on,
                attach_data: attach(),
            },
        )
    };
    let rsp = shield(2, g, 1);
    assert_eq!((rsp.user_id, rsp.group_id, rsp.result_code), (2, g, 0));
    assert_eq!(rsp.attach_data, attach());
    assert_eq!(shield(4, g, 1).result_code, RESULT_FAILED, "not a member");
    assert_eq!(
        shield(2, 999, 1).result_code,
        RESULT_FAILED,
        "no such group"
    );
    assert_eq!(
        info(&f.proxy, 2, &[(g, 0)]).group_info_list[0].shield_status,
        1
    );
    assert_eq!(
        info(&f.proxy, 3, &[(g, 0)]).group_info_list[0].shield_status,
        0
    );

    let rsp: ImGroupGetShieldRsp = call(
        &f.proxy,
        10,
        &ImGroupGetShieldReq {
            group_id: g,
            user_id: vec![3, 2, 4],
            attach_data: None,
        },
    );
    let got: Vec<(u32, u32, u32)> = rsp
        .shield_status_list
        .iter()
        .map(|s| (s.user_id, s.group_id, s.shield_status))
        .collect();
    assert_eq!(got, [(2, g, 1), (3, g, 0)], "non-members left out");
    assert_eq!(rsp.attach_data, Some(Bytes::new()));
    refused(
        &f.proxy,
        &ImGroupGetShieldReq {
            group_id: 999,
            user_id: vec![1],
            attach_data: attach(),
        },
        BAD_REQUEST,
    );
}

#[test]
fn group_messages_are_stored_for_members_only() {
    let f = fixture();
    let g = create(&f.proxy, 1, &[2, 3]);
    let m = group_text(1, g, "hello");
    let rsp: ImMsgData = call(&f.proxy, 7, &m);
    assert_eq!(rsp, ImMsgData { msg_id: 1, ..m }, "the request with its id");
    assert_eq!(post(&f.proxy, 2, g, "hi").msg_id, 2);
    let audio = ImMsgData {
        msg_type: 0x12,
        ..group_text(3, g, "\0\0\0\x01amr")
    };
    assert_eq!(call::<_, ImMsgData>(&f.proxy, 7, &audio).msg_id, 3);
    // Non-members and missing groups: msg_id 0.
    assert_eq!(post(&f.proxy, 4, g, "let me in").msg_id, 0);
    assert_eq!(post(&f.proxy, 1, 999, "anyone?").msg_id, 0);
    change(&f.proxy, 1, 2, g, &[3]);
    assert_eq!(post(&f.proxy, 3, g, "still here").msg_id, 0);
    let s = f.proxy.stats();
    assert_eq!((s.messages_stored, s.messages_refused), (3, 3));

    // A resend with its key is stored once.
    let keyed = ImMsgData {
        dedupe_key: Some(Bytes::from_static(&[9; 16])),
        ..group_text(2, g, "once")
    };
    let first: ImMsgData = call(&f.proxy, 7, &keyed);
    let again: ImMsgData = call(&f.proxy, 7, &keyed);
    assert_eq!((first.msg_id, first.duplicate), (4, None));
    assert_eq!((again.msg_id, again.duplicate), (4, Some(true)));

    // In one batch with single messages, each keeps its own answer.
    let out = run(
        &f.proxy,
        vec![
            (0, group_text(1, g, "a").to_pdu(1)),
            (1, text(1, 2, "dm").to_pdu(2)),
            (2, group_text(4, g, "no").to_pdu(3)),
            (3, group_text(2, g, "b").to_pdu(4)),
        ],
    );
    let ids: Vec<u32> = out
        .iter()
        .map(|(_, p)| p.decode_body::<ImMsgData>().unwrap().msg_id)
        .collect();
    assert_eq!(ids, [5, 1, 0, 6]);
}

fn unread(proxy: &DbProxy, user: u32) -> ImUnreadMsgCntRsp {
    call(
        proxy,
        12,
        &ImUnreadMsgCntReq {
            user_id: user,
            attach_data: attach(),
        },
    )
}

fn history_req(user: u32, group: u32, begin: u32, count: u32) -> ImGetMsgListReq {
    ImGetMsgListReq {
        user_id: user,
        session_type: 2,
        session_id: group,
        msg_id_begin: begin,
        msg_cnt: count,
        attach_data: attach(),
    }
}

#[test]
fn group_sessions_have_unread_history_read_acks_and_sessions() {
    let f = fixture();
    let g = create(&f.proxy, 1, &[2]);
    for i in 1..=5 {
        post(&f.proxy, 1, g, &format!("m{i}"));
    }
    // Unread: the group is a session of type 2 with its latest message.
    let rsp = unread(&f.proxy, 2);
    assert_eq!(rsp.total_cnt, 5);
    let u = &rsp.unreadinfo_list[0];
    assert_eq!(
        (
            u.session_id,
            u.session_type,
            u.unread_cnt,
            u.latest_msg_id,
            u.latest_msg_data.as_ref(),
            u.latest_msg_type,
            u.latest_msg_from_user_id
        ),
        (g, 2, 5, 5, &b"m5"[..], 0x11, 1)
    );
    assert_eq!(unread(&f.proxy, 1).total_cnt, 0, "the sender read them");

    // History, newest first, paged.
    let page: ImGetMsgListRsp = call(&f.proxy, 13, &history_req(2, g, 0, 2));
    let ids: Vec<(u32, u32)> = page
        .msg_list
        .iter()
        .map(|m| (m.msg_id, m.from_session_id))
        .collect();
    assert_eq!(ids, [(5, 1), (4, 1)]);
    assert_eq!((page.session_type, page.session_id), (2, g));
    let page: ImGetMsgListRsp = call(&f.proxy, 13, &history_req(2, g, 3, 10));
    assert_eq!(
        page.msg_list.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    let latest: ImGetLatestMsgIdRsp = call(
        &f.proxy,
        14,
        &ImGetLatestMsgIdReq {
            user_id: 2,
            session_type: 2,
            session_id: g,
            attach_data: attach(),
        },
    );
    assert_eq!(latest.latest_msg_id, 5);
    let by_id: ImGetMsgByIdRsp = call(
        &f.proxy,
        15,
        &ImGetMsgByIdReq {
            user_id: 2,
            session_type: 2,
            session_id: g,
            msg_id_list: vec![2, 4, 77],
            attach_data: attach(),
        },
    );
    assert_eq!(
        by_id.msg_list.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        [4, 2]
    );

    // A read ack clears the group; no reply.
    let ack = ImMsgDataReadAck {
        user_id: 2,
        session_id: g,
        msg_id: 5,
        session_type: 2,
    };
    assert!(f.proxy.handle(&ack.to_pdu(16)).is_none());
    assert_eq!(unread(&f.proxy, 2).total_cnt, 0);

    // Recent sessions hold the group; removing it hides it until the next
    // message.
    let sessions = |user| -> ImRecentContactSessionRsp {
        call(
            &f.proxy,
            17,
            &ImRecentContactSessionReq {
                user_id: user,
                latest_update_time: 0,
                attach_data: attach(),
            },
        )
    };
    let s = sessions(2);
    let rows: Vec<(u32, i32, u32)> = s
        .contact_session_list
        .iter()
        .map(|c| (c.session_id, c.session_type, c.latest_msg_id))
        .collect();
    assert_eq!(rows, [(g, 2, 5)]);
    let remove = |user| -> ImRemoveSessionRsp {
        call(
            &f.proxy,
            18,
            &ImRemoveSessionReq {
                user_id: user,
                session_type: 2,
                session_id: g,
                attach_data: attach(),
            },
        )
    };
    assert_eq!(remove(2).result_code, 0);
    assert!(sessions(2).contact_session_list.is_empty());
    assert_eq!(remove(4).result_code, RESULT_FAILED, "not a member");
    post(&f.proxy, 1, g, "back");
    assert_eq!(sessions(2).contact_session_list.len(), 1);
}

#[test]
fn non_members_read_nothing_and_are_told_so() {
    let f = fixture();
    let g = create(&f.proxy, 1, &[2]);
    post(&f.proxy, 1, g, "secret");
    for group in [g, 999] {
        refused(&f.proxy, &history_req(3, group, 0, 10), FORBIDDEN);
        refused(
            &f.proxy,
            &ImGetLatestMsgIdReq {
                user_id: 3,
                session_type: 2,
                session_id: group,
                attach_data: attach(),
            },
            FORBIDDEN,
        );
        refused(
            &f.proxy,
            &ImGetMsgByIdReq {
                user_id: 3,
                session_type: 2,
                session_id: group,
                msg_id_list: vec![1],
                attach_data: attach(),
            },
            FORBIDDEN,
        );
    }
    assert_eq!(unread(&f.proxy, 3).total_cnt, 0);
    // A member removed a moment ago is a non-member.
    change(&f.proxy, 1, 2, g, &[2]);
    refused(&f.proxy, &history_req(2, g, 0, 10), FORBIDDEN);
    assert_eq!(unread(&f.proxy, 2).total_cnt, 0);
}

#[test]
fn store_failures_get_failure_answers() {
    let f = failing_fixture();
    let g = create(&f.proxy, 1, &[2]);
    f.store.fail("create_group");
    let rsp: ImGroupCreateRsp = call(&f.proxy, 3, &create_req(1, 2, &[2]));
    assert_eq!((rsp.result_code, rsp.group_id), (RESULT_FAILED, None));
    f.store.fail("change_group_members");
    assert_eq!(change(&f.proxy, 1, 1, g, &[3]).result_code, RESULT_FAILED);
    f.store.fail("set_group_shield");
    let rsp: ImGroupShieldRsp = call(
        &f.proxy,
        9,
        &ImGroupShieldReq {
            user_id: 2,
            group_id: g,
            shield_status: 1,
            attach_data: attach(),
        },
    );
    assert_eq!(rsp.result_code, RESULT_FAILED);
    for op in ["user_groups", "groups_newer_than", "group_message_list"] {
        f.store.fail(op);
    }
    let server_error = RequestFailedCode::RequestFailedServerError as u32;
    refused(
        &f.proxy,
        &ImNormalGroupListReq {
            user_id: 2,
            attach_data: attach(),
        },
        server_error,
    );
    refused(
        &f.proxy,
        &ImUserGroupsReq {
            user_id: 2,
            attach_data: attach(),
        },
        server_error,
    );
    refused(
        &f.proxy,
        &ImGroupInfoListReq {
            user_id: 2,
            group_version_list: vec![GroupVersionInfo {
                group_id: g,
                version: 0,
            }],
            attach_data: attach(),
        },
        server_error,
    );
    refused(&f.proxy, &history_req(2, g, 0, 10), server_error);
    // A store failure while storing a group message: "try again later".
    f.store.fail("store_message");
    let reply = f.proxy.handle(&group_text(1, g, "x").to_pdu(20)).unwrap();
    assert_eq!(
        request_failed(&reply, 20, Command::MsgData).result_code,
        server_error
    );
}

/// Group details of large groups are pages below the frame limit; the
/// groups left out are asked again.
#[test]
fn group_details_are_a_page() {
    let f = fixture();
    let n = 10_000;
    let users = f.store.seed_teamtalk_users("big", n, "00").unwrap();
    let mut groups = Vec::new();
    // Member ids take 3 bytes each: 30 kB a group, 1.2 MB for 40.
    for _ in 0..40 {
        let g = f
            .store
            .create_group(&NewGroup {
                name: "big".into(),
                avatar: String::new(),
                creator: 1,
                group_type: GroupType::Normal,
                members: users[..9_999].to_vec(),
            })
            .unwrap();
        groups.push((g.id, 0));
    }
    let first = f
        .proxy
        .handle(
            &ImGroupInfoListReq {
                user_id: 1,
                group_version_list: groups
                    .iter()
                    .map(|&(group_id, version)| GroupVersionInfo { group_id, version })
                    .collect(),
                attach_data: attach(),
            }
            .to_pdu(5),
        )
        .unwrap();
    assert!(first.wire_len() <= MAX_FRAME_LEN - PAGE_SLACK);
    let first: ImGroupInfoListRsp = first.decode_body().unwrap();
    let got = first.group_info_list.len();
    assert!(got > 0 && got < groups.len(), "{got} of {}", groups.len());
    assert!(
        first
            .group_info_list
            .iter()
            .all(|g| g.group_member_list.len() == 10_000)
    );
    let rest = info(&f.proxy, 1, &groups[got..]);
    assert_eq!(got + rest.group_info_list.len(), groups.len());
    assert!(rest.encoded_len() < MAX_FRAME_LEN);
    // Shields of every member fit too.
    let mut all = users[..9_999].to_vec();
    all.push(1);
    let shields = f
        .proxy
        .handle(
            &ImGroupGetShieldReq {
                group_id: groups[0].0,
                user_id: all,
                attach_data: None,
            }
            .to_pdu(6),
        )
        .unwrap();
    let rsp: ImGroupGetShieldRsp = shields.decode_body().unwrap();
    assert_eq!(rsp.shield_status_list.len(), 10_000);
}
