//! Replies sized by bytes ([`crate::rules::sizing`]), over-large requests,
//! and resends stored once: every list reply of every family.

use bytes::Bytes;
use teamtalk_proto::Pdu;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::buddy::{
    ImAllUserReq, ImAllUserRsp, ImChangeSignInfoReq, ImChangeSignInfoRsp, ImDepartmentReq,
    ImDepartmentRsp, ImRecentContactSessionReq, ImRecentContactSessionRsp, ImUsersInfoReq,
    ImUsersInfoRsp,
};
use teamtalk_proto::pb::im::ext::RequestFailedCode;
use teamtalk_proto::pb::im::login::ImDeviceTokenReq;
use teamtalk_proto::pb::im::message::{
    ImGetMsgByIdReq, ImGetMsgByIdRsp, ImGetMsgListReq, ImGetMsgListRsp, ImMsgData,
    ImUnreadMsgCntReq, ImUnreadMsgCntRsp,
};
use teamtalk_proto::pb::im::server::ImGetDeviceTokenReq;

use super::{NOON, attach, call, fixture, new_user, pw, request_failed, run, send, text};
use crate::db_proxy::RESULT_FAILED;
use crate::rules::sizing::{MAX_FRAME_LEN, MAX_USERS_INFO_IDS, PAGE_SLACK};
use crate::store::{MAX_MSG_DATA_LEN, MAX_MSGS_BY_ID, NewUser, Store};

const KB200: usize = 200 * 1000;

/// A message of `len` bytes of `fill`.
fn big(from: u32, to: u32, fill: u8, len: usize) -> ImMsgData {
    ImMsgData {
        msg_data: Bytes::from(vec![fill; len]),
        ..text(from, to, "")
    }
}

/// Sends `req` and returns the raw reply, checking it fits a page.
fn raw<Q: CommandMessage>(f: &super::Fixture, req: &Q) -> Pdu {
    let reply = f.proxy.handle(&req.to_pdu(9)).expect("an answer");
    assert!(
        reply.wire_len() <= MAX_FRAME_LEN,
        "{} bytes, over the frame limit",
        reply.wire_len()
    );
    reply
}

fn history(f: &super::Fixture, user: u32, peer: u32, begin: u32, count: u32) -> ImGetMsgListRsp {
    let reply = raw(
        f,
        &ImGetMsgListReq {
            user_id: user,
            session_type: 1,
            session_id: peer,
            msg_id_begin: begin,
            msg_cnt: count,
            attach_data: attach(),
        },
    );
    assert!(reply.wire_len() <= MAX_FRAME_LEN - PAGE_SLACK);
    reply.decode_body().unwrap()
}

/// The finding: eight 200 KB messages from u1 made u2's history request
/// (msg_cnt 20) a 1.6 MB reply db_proxy could not send. Now the page stops
/// below the frame limit and the next page holds the rest.
#[test]
fn history_of_large_messages_is_paged_below_the_frame_limit() {
    let f = fixture();
    for i in 1..=8u8 {
        assert_eq!(send(&f.proxy, &big(1, 2, i, KB200)), u32::from(i));
    }
    let first = history(&f, 2, 1, 0, 20);
    let ids: Vec<u32> = first.msg_list.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, [8, 7, 6, 5, 4], "newest first, as many as fit");
    assert_eq!(first.attach_data, attach());
    assert!(first.msg_list.iter().all(|m| m.msg_data.len() == KB200));
    let next = history(&f, 2, 1, 3, 20);
    let ids: Vec<u32> = next.msg_list.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, [3, 2, 1]);
    assert!(f.proxy.stats().pages_cut >= 1);
    // Small messages still come 20 at a time.
    for _ in 0..30 {
        send(&f.proxy, &text(3, 4, "small"));
    }
    assert_eq!(history(&f, 3, 4, 0, 20).msg_list.len(), 20);
}

/// A page is never empty: the largest storable message goes out alone.
#[test]
fn the_largest_storable_message_fits_a_page_alone() {
    let f = fixture();
    assert_eq!(send(&f.proxy, &big(1, 2, b'a', MAX_MSG_DATA_LEN)), 1);
    assert_eq!(send(&f.proxy, &big(1, 2, b'b', MAX_MSG_DATA_LEN)), 2);
    // One byte more is refused as not storable.
    assert_eq!(send(&f.proxy, &big(1, 2, b'c', MAX_MSG_DATA_LEN + 1)), 0);
    let page = history(&f, 1, 2, 0, 20);
    let ids: Vec<u32> = page.msg_list.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, [2]);
    let page = history(&f, 1, 2, 1, 20);
    assert_eq!(page.msg_list.len(), 1);
}

#[test]
fn messages_by_id_are_a_page_and_too_many_ids_fail() {
    let f = fixture();
    for i in 1..=8u8 {
        send(&f.proxy, &big(1, 2, i, KB200));
    }
    let req = |ids: Vec<u32>| ImGetMsgByIdReq {
        user_id: 2,
        session_type: 1,
        session_id: 1,
        msg_id_list: ids,
        attach_data: attach(),
    };
    let rsp: ImGetMsgByIdRsp = raw(&f, &req((1..=8).collect())).decode_body().unwrap();
    let ids: Vec<u32> = rsp.msg_list.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, [8, 7, 6, 5, 4]);
    let rsp: ImGetMsgByIdRsp = raw(&f, &req(vec![1, 2, 3])).decode_body().unwrap();
    assert_eq!(rsp.msg_list.len(), 3);

    // A huge id list is a bad request, answered, not truncated.
    let reply = raw(&f, &req((1..=100_000).collect()));
    let failed = request_failed(&reply, 9, teamtalk_proto::Command::MsgGetByMsgIdReq);
    assert_eq!(
        failed.result_code,
        RequestFailedCode::RequestFailedBadRequest as u32
    );
    assert_eq!(failed.attach_data, attach());
    let ok = raw(&f, &req((1..=MAX_MSGS_BY_ID as u32).collect()));
    assert!(ok.is(teamtalk_proto::Command::MsgGetByMsgIdRes.key()));
}

#[test]
fn unread_counts_are_a_page_and_the_total_counts_everything() {
    let f = fixture();
    for peer in 10..18u32 {
        send(&f.proxy, &big(peer, 1, 1, KB200));
        send(&f.proxy, &text(peer, 1, "and a short one"));
    }
    let rsp: ImUnreadMsgCntRsp = raw(
        &f,
        &ImUnreadMsgCntReq {
            user_id: 1,
            attach_data: attach(),
        },
    )
    .decode_body()
    .unwrap();
    assert_eq!(rsp.total_cnt, 16);
    // The latest messages are short: all eight fit.
    assert_eq!(rsp.unreadinfo_list.len(), 8);
    for peer in 10..18u32 {
        send(&f.proxy, &big(peer, 1, 2, KB200));
    }
    let rsp: ImUnreadMsgCntRsp = raw(
        &f,
        &ImUnreadMsgCntReq {
            user_id: 1,
            attach_data: attach(),
        },
    )
    .decode_body()
    .unwrap();
    assert_eq!(rsp.total_cnt, 24);
    let peers: Vec<u32> = rsp.unreadinfo_list.iter().map(|u| u.session_id).collect();
    assert_eq!(peers, [10, 11, 12, 13, 14]);
}

fn sessions(f: &super::Fixture, since: u32) -> ImRecentContactSessionRsp {
    raw(
        f,
        &ImRecentContactSessionReq {
            user_id: 1,
            latest_update_time: since,
            attach_data: attach(),
        },
    )
    .decode_body()
    .unwrap()
}

/// Sessions whose latest messages do not fit one page come oldest change
/// first, so the client's watermark brings the rest next time.
#[test]
fn recent_sessions_page_by_watermark() {
    let f = fixture();
    for (i, peer) in (10..18u32).enumerate() {
        f.clock.set(NOON + 10 * u32::try_from(i).unwrap());
        send(&f.proxy, &big(peer, 1, 1, KB200));
    }
    let first = sessions(&f, 0);
    let peers: Vec<u32> = first
        .contact_session_list
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(peers, [14, 13, 12, 11, 10], "the oldest, newest first");
    let watermark = first
        .contact_session_list
        .iter()
        .map(|s| s.updated_time)
        .max()
        .unwrap();
    let next = sessions(&f, watermark);
    let peers: Vec<u32> = next
        .contact_session_list
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(peers, [17, 16, 15]);
}

/// A page does not end inside one second: sessions updated in the same
/// second as the first one left out wait for the next page.
#[test]
fn recent_sessions_never_split_a_second() {
    let f = fixture();
    for (i, peer) in (10..18u32).enumerate() {
        // Two sessions per second.
        f.clock.set(NOON + u32::try_from(i / 2).unwrap());
        send(&f.proxy, &big(peer, 1, 1, KB200));
    }
    let first = sessions(&f, 0);
    let peers: Vec<u32> = first
        .contact_session_list
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(peers, [13, 12, 11, 10], "14 shares 15's second");
    let next = sessions(&f, NOON + 1);
    let peers: Vec<u32> = next
        .contact_session_list
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(peers, [17, 16, 15, 14]);
}

#[test]
fn users_by_id_over_the_bound_fail_and_pages_fit() {
    let f = fixture();
    let req = |ids: Vec<u32>| ImUsersInfoReq {
        user_id: 1,
        user_id_list: ids,
        attach_data: attach(),
    };
    // The finding: 200,000 ids.
    let reply = raw(&f, &req((1..=200_000).collect()));
    let failed = request_failed(&reply, 9, teamtalk_proto::Command::BuddyListUserInfoRequest);
    assert_eq!(
        failed.result_code,
        RequestFailedCode::RequestFailedBadRequest as u32
    );
    assert_eq!(failed.attach_data, attach());
    let rsp: ImUsersInfoRsp = raw(&f, &req((1..=MAX_USERS_INFO_IDS as u32).collect()))
        .decode_body()
        .unwrap();
    assert_eq!(rsp.user_info_list.len(), 4);

    // Users with large profiles (set by an administrator) are paged.
    for i in 0..30u32 {
        f.store
            .add_user(
                &NewUser {
                    nick: "n".repeat(50_000),
                    ..new_user(100 + i)
                },
                &pw(1),
            )
            .unwrap();
    }
    let rsp: ImUsersInfoRsp = raw(&f, &req((1..=40).collect())).decode_body().unwrap();
    assert!(rsp.user_info_list.len() < 34 && !rsp.user_info_list.is_empty());
}

#[test]
fn all_users_page_by_watermark() {
    let f = fixture();
    for i in 0..30u32 {
        f.clock.set(NOON + 100 + i);
        f.store
            .add_user(
                &NewUser {
                    nick: "n".repeat(50_000),
                    ..new_user(100 + i)
                },
                &pw(1),
            )
            .unwrap();
    }
    let mut since = 0;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let rsp: ImAllUserRsp = raw(
            &f,
            &ImAllUserReq {
                user_id: 1,
                latest_update_time: since,
                attach_data: attach(),
            },
        )
        .decode_body()
        .unwrap();
        let ids: Vec<u32> = rsp.user_list.iter().map(|u| u.user_id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id: {ids:?}");
        assert!(!ids.is_empty());
        seen.extend(ids);
        if rsp.latest_update_time == since {
            break;
        }
        since = rsp.latest_update_time;
    }
    assert_eq!(seen.len(), 34, "every user arrived over the pages");
    assert_eq!(since, NOON + 129);
}

#[test]
fn departments_page_by_watermark() {
    let f = fixture();
    for i in 0..30u32 {
        f.clock.set(NOON + 100 + i);
        f.store
            .add_department(&format!("{i:02}{}", "d".repeat(60_000)), 0, 0)
            .unwrap();
    }
    let mut since = 0;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let rsp: ImDepartmentRsp = raw(
            &f,
            &ImDepartmentReq {
                user_id: 1,
                latest_update_time: since,
                attach_data: attach(),
            },
        )
        .decode_body()
        .unwrap();
        if rsp.dept_list.is_empty() {
            break;
        }
        seen.extend(rsp.dept_list.iter().map(|d| d.dept_id));
        since = rsp.latest_update_time;
    }
    assert_eq!(seen.len(), 31);
}

#[test]
fn long_signatures_and_tokens_are_refused() {
    let f = fixture();
    let sign = |s: String| -> ImChangeSignInfoRsp {
        call(
            &f.proxy,
            2,
            &ImChangeSignInfoReq {
                user_id: 1,
                sign_info: s,
                attach_data: attach(),
            },
        )
    };
    let rsp = sign("s".repeat(513));
    assert_eq!((rsp.result_code, rsp.sign_info), (RESULT_FAILED, None));
    assert_eq!(f.store.users_by_ids(&[1]).unwrap()[0].sign_info, "");
    assert_eq!(sign("s".repeat(512)).result_code, 0);

    let reply = raw(
        &f,
        &ImDeviceTokenReq {
            user_id: 1,
            device_token: "t".repeat(513),
            client_type: Some(0x11),
            invalid_token: None,
            attach_data: attach(),
        },
    );
    let failed = request_failed(&reply, 9, teamtalk_proto::Command::LoginReqDevicetoken);
    assert_eq!(
        failed.result_code,
        RequestFailedCode::RequestFailedBadRequest as u32
    );
    assert!(f.store.device_tokens(&[1]).unwrap().is_empty());
    // The token to remove is bounded the same way.
    let reply = raw(
        &f,
        &ImDeviceTokenReq {
            user_id: 1,
            device_token: String::new(),
            client_type: None,
            invalid_token: Some("t".repeat(513)),
            attach_data: attach(),
        },
    );
    request_failed(&reply, 9, teamtalk_proto::Command::LoginReqDevicetoken);

    let reply = raw(
        &f,
        &ImGetDeviceTokenReq {
            user_id: (1..=200_000).collect(),
            attach_data: attach(),
        },
    );
    request_failed(&reply, 9, teamtalk_proto::Command::OtherGetDeviceTokenReq);
}

fn keyed(from: u32, to: u32, body: &str, key: &[u8]) -> ImMsgData {
    ImMsgData {
        dedupe_key: Some(Bytes::copy_from_slice(key)),
        ..text(from, to, body)
    }
}

/// The finding: a message resent after an error is stored once; the
/// resend is answered with the first id and `duplicate`.
#[test]
fn resends_with_a_dedupe_key_are_stored_once() {
    let f = fixture();
    let m = keyed(1, 2, "hello", &[7; 16]);
    let first: ImMsgData = call(&f.proxy, 3, &m);
    assert_eq!((first.msg_id, first.duplicate), (1, None));
    let again: ImMsgData = call(&f.proxy, 4, &m);
    assert_eq!((again.msg_id, again.duplicate), (1, Some(true)));
    assert_eq!(again.attach_data, attach());
    assert_eq!(f.store.unread(2).unwrap().total, 1);
    assert_eq!(history(&f, 2, 1, 0, 20).msg_list.len(), 1);
    let s = f.proxy.stats();
    assert_eq!((s.messages_stored, s.messages_duplicate), (1, 1));

    // Two resends in one batch (group commit): one stored.
    let batch = vec![
        (0u8, keyed(1, 2, "again", &[8; 16]).to_pdu(5)),
        (1, keyed(1, 2, "again", &[8; 16]).to_pdu(6)),
        (2, text(1, 2, "no key").to_pdu(7)),
        (3, text(1, 2, "no key").to_pdu(8)),
    ];
    let replies: Vec<ImMsgData> = run(&f.proxy, batch)
        .into_iter()
        .map(|(_, p)| p.decode_body().unwrap())
        .collect();
    let got: Vec<(u32, Option<bool>)> = replies.iter().map(|r| (r.msg_id, r.duplicate)).collect();
    assert_eq!(got, [(2, None), (2, Some(true)), (3, None), (4, None)]);
    // The same key from another sender is another message.
    assert_eq!(send(&f.proxy, &keyed(3, 2, "hello", &[7; 16])), 1);
}

/// Fuzz finding (`db_proxy`): a request that fits a frame, carrying nearly
/// a frame of `attach_data`, got a reply over the frame limit (the attach
/// echoed plus the reply's own fields), which the runtime then dropped.
/// Now the answer always fits: the failure answer with the attach, or
/// `IMRequestFailed` without it when not even that fits.
#[test]
fn a_near_frame_attach_never_makes_an_answer_over_the_frame() {
    use teamtalk_proto::Message;
    use teamtalk_proto::pb::im::ext::ImRequestFailed;
    use teamtalk_proto::pb::im::server::{ImValidateReq, ImValidateRsp};

    let f = fixture();
    for slack in [40, 64, 100, 300, 2_000] {
        let attach = Bytes::from(vec![0x5a; MAX_FRAME_LEN - 16 - slack]);
        let login = ImValidateReq {
            user_name: "user1".into(),
            password: pw(1),
            attach_data: Some(attach.clone()),
            client_addr: None,
        };
        let info = ImUsersInfoReq {
            user_id: 1,
            user_id_list: vec![1, 2],
            attach_data: Some(attach.clone()),
        };
        let message = ImMsgData {
            msg_id: 0,
            attach_data: Some(attach.clone()),
            ..text(1, 2, "x")
        };
        for req in [login.to_pdu(3), info.to_pdu(3), message.to_pdu(3)] {
            if req.wire_len() > MAX_FRAME_LEN {
                continue;
            }
            let reply = f.proxy.handle(&req).expect("an answer");
            assert!(
                reply.wire_len() <= MAX_FRAME_LEN,
                "{} answered with {} bytes (slack {slack})",
                req.key(),
                reply.wire_len()
            );
            assert_eq!(reply.seq(), 3);
            match Message::decode(&reply).unwrap() {
                Message::OtherRequestFailed(ImRequestFailed { attach_data, .. }) => {
                    // Without the attach only when it could not fit.
                    if attach_data.as_ref() != Some(&attach) {
                        assert!(attach_data.is_none() && slack < 300, "slack {slack}");
                    }
                }
                Message::OtherValidateRsp(ImValidateRsp { attach_data, .. }) => {
                    assert_eq!(attach_data.as_ref(), Some(&attach));
                }
                mut other => assert_eq!(
                    other.attach_data().as_ref(),
                    Some(&attach),
                    "{:?}",
                    other.command()
                ),
            }
        }
    }
}
