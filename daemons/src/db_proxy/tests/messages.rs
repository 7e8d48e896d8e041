//! Single-chat messages (`cmd/messages.rs`).

use std::sync::Mutex;

use bytes::Bytes;
use prost::Message as _;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::ext::RequestFailedCode;
use teamtalk_proto::pb::im::message::{
    ImGetLatestMsgIdReq, ImGetLatestMsgIdRsp, ImGetMsgByIdReq, ImGetMsgByIdRsp, ImGetMsgListReq,
    ImGetMsgListRsp, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq, ImUnreadMsgCntRsp,
};
use teamtalk_proto::{Command, Pdu};

use super::{attach, call, call_failing, failing_fixture, fixture, request_failed, send, text};
use crate::db_proxy::DbProxy;
use crate::store::Store;

/// An `UnreadInfo` as a tuple, in field order.
type UnreadRow<'a> = (u32, i32, u32, u32, &'a [u8], i32, u32);

#[test]
fn message_store_sets_msg_id_and_echoes_the_rest() {
    let f = fixture();
    let m = text(1, 2, "hi");
    let rsp: ImMsgData = call(&f.proxy, 27, &m);
    assert_eq!(
        rsp,
        ImMsgData {
            msg_id: 1,
            ..m.clone()
        }
    );
    assert_eq!(send(&f.proxy, &text(2, 1, "yo")), 2);
    // Without attach_data the reply has none either: it is the request.
    let bare = ImMsgData {
        attach_data: None,
        ..text(1, 2, "x")
    };
    let rsp: ImMsgData = call(&f.proxy, 28, &bare);
    assert_eq!(rsp, ImMsgData { msg_id: 3, ..bare });
    // Audio is stored too.
    let audio = ImMsgData {
        msg_type: 2,
        ..text(3, 4, "\0\0\0\x03amr")
    };
    assert_eq!(send(&f.proxy, &audio), 1);
    assert_eq!(f.proxy.stats().messages_stored, 4);
}

#[test]
fn messages_that_cannot_be_stored_get_msg_id_0() {
    let f = fixture();
    let group = ImMsgData {
        msg_type: 0x11,
        ..text(1, 9, "group")
    };
    let group_audio = ImMsgData {
        msg_type: 0x12,
        ..text(1, 9, "group")
    };
    let unknown_type = ImMsgData {
        msg_type: 0x33,
        ..text(1, 2, "?")
    };
    let empty = text(1, 2, "");
    let to_self = text(2, 2, "me");
    let from_zero = text(0, 2, "anon");
    for m in [
        &group,
        &group_audio,
        &unknown_type,
        &empty,
        &to_self,
        &from_zero,
    ] {
        let rsp: ImMsgData = call(&f.proxy, 5, m);
        assert_eq!(
            rsp,
            ImMsgData {
                msg_id: 0,
                ..m.clone()
            }
        );
        // msg_id 0 is on the wire (field 3 = 0).
        assert!(rsp.encode_to_vec().windows(2).any(|w| w == [0x18, 0x00]));
    }
    let s = f.proxy.stats();
    assert_eq!(s.messages_refused, 6);
    assert_eq!(s.messages_stored, 0);
    assert_eq!(
        s.unimplemented, 0,
        "groups are stored: group 9 does not exist"
    );
    assert_eq!(f.store.latest_msg_id(1, 2).unwrap(), 0);
}

#[test]
fn read_ack_clears_unread_without_reply() {
    let f = fixture();
    send(&f.proxy, &text(2, 1, "a"));
    send(&f.proxy, &text(2, 1, "b"));
    send(&f.proxy, &text(3, 1, "c"));
    let rsp: ImUnreadMsgCntRsp = call(
        &f.proxy,
        2,
        &ImUnreadMsgCntReq {
            user_id: 1,
            attach_data: attach(),
        },
    );
    assert_eq!((rsp.user_id, rsp.total_cnt), (1, 3));
    assert_eq!(rsp.attach_data, attach());
    let u: Vec<UnreadRow<'_>> = rsp
        .unreadinfo_list
        .iter()
        .map(|u| {
            (
                u.session_id,
                u.session_type,
                u.unread_cnt,
                u.latest_msg_id,
                u.latest_msg_data.as_ref(),
                u.latest_msg_type,
                u.latest_msg_from_user_id,
            )
        })
        .collect();
    assert_eq!(
        u,
        [(2, 1, 2, 2, &b"b"[..], 1, 2), (3, 1, 1, 1, &b"c"[..], 1, 3)]
    );

    let ack = ImMsgDataReadAck {
        user_id: 1,
        session_id: 2,
        msg_id: 2,
        session_type: 1,
    };
    assert!(f.proxy.handle(&ack.to_pdu(8)).is_none());
    assert_eq!(f.store.unread(1).unwrap().total, 1);
    // A read ack of a group the reader is not in is reported (nothing
    // waits for it, but the failure is not silent).
    let group_ack = ImMsgDataReadAck {
        session_type: 2,
        ..ack
    };
    let reply = f.proxy.handle(&group_ack.to_pdu(8)).expect("reported");
    let failed = request_failed(&reply, 8, Command::MsgReadAck);
    assert_eq!(
        failed.result_code,
        RequestFailedCode::RequestFailedForbidden as u32
    );
}

fn list_req(session_type: i32, begin: u32, count: u32) -> ImGetMsgListReq {
    ImGetMsgListReq {
        user_id: 1,
        session_type,
        session_id: 2,
        msg_id_begin: begin,
        msg_cnt: count,
        attach_data: attach(),
    }
}

fn list(proxy: &DbProxy, session_type: i32, begin: u32, count: u32) -> ImGetMsgListRsp {
    call(proxy, 6, &list_req(session_type, begin, count))
}

#[test]
fn message_list_latest_id_and_by_id() {
    let f = fixture();
    for i in 1..=250u32 {
        let (from, to) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
        assert_eq!(send(&f.proxy, &text(from, to, &format!("m{i}"))), i);
    }
    let rsp = list(&f.proxy, 1, 0, 3);
    assert_eq!(
        (
            rsp.user_id,
            rsp.session_type,
            rsp.session_id,
            rsp.msg_id_begin
        ),
        (1, 1, 2, 0)
    );
    assert_eq!(rsp.attach_data, attach());
    let got: Vec<(u32, u32, u32, i32, &[u8])> = rsp
        .msg_list
        .iter()
        .map(|m| {
            (
                m.msg_id,
                m.from_session_id,
                m.create_time,
                m.msg_type,
                m.msg_data.as_ref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (250, 1, 1_000, 1, &b"m250"[..]),
            (249, 2, 1_000, 1, b"m249"),
            (248, 1, 1_000, 1, b"m248")
        ]
    );
    let page = list(&f.proxy, 1, 100, 2);
    assert_eq!(page.msg_id_begin, 100);
    assert_eq!(
        page.msg_list.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        [100, 99]
    );
    assert_eq!(
        list(&f.proxy, 1, 0, 100_000).msg_list.len(),
        crate::store::MAX_MSG_LIST as usize
    );
    // A group the user is not in: forbidden, not an empty page.
    let reply = f.proxy.handle(&list_req(2, 0, 10).to_pdu(6)).unwrap();
    assert_eq!(
        request_failed(&reply, 6, Command::MsgListRequest).result_code,
        RequestFailedCode::RequestFailedForbidden as u32
    );
    // An invalid session type is a bad request (TeamTalk sent nothing).
    let reply = f.proxy.handle(&list_req(0, 0, 10).to_pdu(6)).unwrap();
    let failed = request_failed(&reply, 6, Command::MsgListRequest);
    assert_eq!(
        failed.result_code,
        RequestFailedCode::RequestFailedBadRequest as u32
    );
    assert_eq!(failed.attach_data, attach());

    let latest: ImGetLatestMsgIdRsp = call(
        &f.proxy,
        3,
        &ImGetLatestMsgIdReq {
            user_id: 2,
            session_type: 1,
            session_id: 1,
            attach_data: attach(),
        },
    );
    assert_eq!(
        (
            latest.user_id,
            latest.session_type,
            latest.session_id,
            latest.latest_msg_id
        ),
        (2, 1, 1, 250)
    );
    let none: ImGetLatestMsgIdRsp = call(
        &f.proxy,
        3,
        &ImGetLatestMsgIdReq {
            user_id: 3,
            session_type: 1,
            session_id: 4,
            attach_data: None,
        },
    );
    assert_eq!(none.latest_msg_id, 0);
    assert!(none.encode_to_vec().windows(2).any(|w| w == [0x20, 0x00]));

    let by_id: ImGetMsgByIdRsp = call(
        &f.proxy,
        6,
        &ImGetMsgByIdReq {
            user_id: 1,
            session_type: 1,
            session_id: 2,
            msg_id_list: vec![3, 9_999, 7],
            attach_data: attach(),
        },
    );
    assert_eq!(
        by_id.msg_list.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        [7, 3]
    );
    assert_eq!(by_id.attach_data, attach());
}

// ------------------------------------------------------- store failures

/// A message the store could not write is IMRequestFailed ("try again"),
/// not msg_id 0 ("refused"): for a failed transaction every message of the
/// run, for a message failing on its own just that one.
#[test]
fn unstored_messages_are_request_failed_in_order() {
    let f = failing_fixture();
    f.store.fail("store_messages");
    let jobs: Vec<(usize, Pdu)> = (0..3u16)
        .map(|i| (usize::from(i), text(1, 2, "x").to_pdu(40 + i)))
        .collect();
    let out = Mutex::new(Vec::new());
    crate::db_proxy::worker::run_batch_for_test(&f.proxy, jobs, &|to, pdu| {
        out.lock().unwrap().push((to, pdu));
    });
    let out = out.into_inner().unwrap();
    assert_eq!(out.len(), 3);
    for (i, (to, pdu)) in out.iter().enumerate() {
        assert_eq!(*to, i);
        let seq = 40 + u16::try_from(i).unwrap();
        let failed = request_failed(pdu, seq, Command::MsgData);
        assert_eq!(failed.result_code, 1);
        assert_eq!(failed.attach_data, attach());
    }
    f.store.heal("store_messages");

    // One by one through handle(): the message's own failure.
    f.store.fail("store_message");
    let failed = call_failing(&f.proxy, 7, &text(1, 2, "y"));
    assert!(failed.reason.is_some());
    // A message without attach_data gets an empty one back, as replies do.
    let bare = ImMsgData {
        attach_data: None,
        ..text(1, 2, "z")
    };
    let reply = f.proxy.handle(&bare.to_pdu(8)).unwrap();
    assert_eq!(
        request_failed(&reply, 8, Command::MsgData).attach_data,
        Some(Bytes::new())
    );
    f.store.heal("store_message");

    let s = f.proxy.stats();
    assert_eq!((s.messages_stored, s.messages_refused), (0, 0));
    assert_eq!((s.failures, s.store_errors), (5, 3));
    assert_eq!(f.store.latest_msg_id(1, 2).unwrap(), 0);
    assert_eq!(send(&f.proxy, &text(1, 2, "ok")), 1);
}

#[test]
fn failed_message_reads_are_request_failed_not_empty_answers() {
    let f = failing_fixture();
    send(&f.proxy, &text(2, 1, "a"));
    f.store.fail("unread");
    call_failing(
        &f.proxy,
        2,
        &ImUnreadMsgCntReq {
            user_id: 1,
            attach_data: attach(),
        },
    );
    f.store.fail("message_list");
    call_failing(&f.proxy, 6, &list_req(1, 0, 10));
    f.store.fail("latest_msg_id");
    call_failing(
        &f.proxy,
        3,
        &ImGetLatestMsgIdReq {
            user_id: 1,
            session_type: 1,
            session_id: 2,
            attach_data: attach(),
        },
    );
    f.store.fail("messages_by_ids");
    call_failing(
        &f.proxy,
        6,
        &ImGetMsgByIdReq {
            user_id: 1,
            session_type: 1,
            session_id: 2,
            msg_id_list: vec![1],
            attach_data: attach(),
        },
    );
    let s = f.proxy.stats();
    assert_eq!((s.store_errors, s.failures), (4, 4));
}

/// A read ack has no reply, but one that could not be applied is reported
/// to msg_server rather than dropped in silence.
#[test]
fn a_read_ack_that_fails_is_reported() {
    let f = failing_fixture();
    send(&f.proxy, &text(2, 1, "a"));
    f.store.fail("clear_unread");
    let ack = ImMsgDataReadAck {
        user_id: 1,
        session_id: 2,
        msg_id: 1,
        session_type: 1,
    };
    let reply = f.proxy.handle(&ack.to_pdu(8)).unwrap();
    let failed = request_failed(&reply, 8, Command::MsgReadAck);
    // IMMsgDataReadAck has no attach_data field to echo.
    assert_eq!((failed.result_code, failed.attach_data), (1, None));
    f.store.heal("clear_unread");
    assert_eq!(f.store.unread(1).unwrap().total, 1);
    assert!(f.proxy.handle(&ack.to_pdu(9)).is_none());
    assert_eq!(f.store.unread(1).unwrap().total, 0);
    // An invalid session type is a bad request.
    let bad = ImMsgDataReadAck {
        session_type: 5,
        ..ack
    };
    let reply = f.proxy.handle(&bad.to_pdu(10)).unwrap();
    assert_eq!(
        request_failed(&reply, 10, Command::MsgReadAck).result_code,
        RequestFailedCode::RequestFailedBadRequest as u32
    );
}
