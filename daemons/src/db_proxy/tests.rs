//! Handler, worker and loopback tests for db_proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use prost::Message as _;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::UserInfo;
use teamtalk_proto::pb::im::buddy::{
    ImAllUserReq, ImAllUserRsp, ImChangeAvatarReq, ImChangeAvatarRsp, ImChangeSignInfoReq,
    ImChangeSignInfoRsp, ImDepartmentReq, ImDepartmentRsp, ImRecentContactSessionReq,
    ImRecentContactSessionRsp, ImRemoveSessionReq, ImRemoveSessionRsp, ImUsersInfoReq,
    ImUsersInfoRsp,
};
use teamtalk_proto::pb::im::group::{
    ImGroupCreateReq, ImGroupCreateRsp, ImGroupShieldReq, ImGroupShieldRsp, ImNormalGroupListReq,
};
use teamtalk_proto::pb::im::login::{
    ImDeviceTokenReq, ImDeviceTokenRsp, ImLoginReq, ImPushShieldReq, ImPushShieldRsp,
    ImQueryPushShieldReq, ImQueryPushShieldRsp,
};
use teamtalk_proto::pb::im::message::{
    ImGetLatestMsgIdReq, ImGetLatestMsgIdRsp, ImGetMsgByIdReq, ImGetMsgByIdRsp, ImGetMsgListReq,
    ImGetMsgListRsp, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq, ImUnreadMsgCntRsp,
};
use teamtalk_proto::pb::im::other::ImHeartBeat;
use teamtalk_proto::pb::im::server::{
    ImGetDeviceTokenReq, ImGetDeviceTokenRsp, ImValidateReq, ImValidateRsp,
};
use teamtalk_proto::{Command, Pdu};

use super::limiter::FAILURE_WINDOW_SECS;
use super::*;
use crate::password::HashParams;
use crate::runtime::Worker;
use crate::store::{NewUser, SqliteStore, Store, StoreOptions};

/// A 12-byte `CDbAttachData` as msg_server sends it (type 1, handle 14).
const ATTACH: &[u8] = &[0, 0, 0, 1, 0, 0, 0, 0x0e, 0, 0, 0, 0];
/// Mid-day UTC (2026-11-24 12:00:00).
const NOON: u32 = 1_795_521_600;

/// A `ContactSessionInfo` as a tuple, in field order.
type SessionRow<'a> = (u32, i32, i32, u32, u32, &'a [u8], i32, u32);
/// An `UnreadInfo` as a tuple, in field order.
type UnreadRow<'a> = (u32, i32, u32, u32, &'a [u8], i32, u32);

fn attach() -> Option<Bytes> {
    Some(Bytes::from_static(ATTACH))
}

#[derive(Clone)]
struct TestClock(Arc<AtomicU32>);

impl TestClock {
    fn get(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
    fn set(&self, t: u32) {
        self.0.store(t, Ordering::SeqCst);
    }
    fn clock(&self) -> crate::store::Clock {
        let c = Arc::clone(&self.0);
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

fn pw(n: u32) -> String {
    format!("{n:032x}")
}

fn new_user(i: u32) -> NewUser {
    NewUser {
        name: format!("user{i}"),
        nick: format!("nick{i}"),
        sex: 1,
        dept_id: 1,
        avatar: String::new(),
        email: format!("user{i}@example.com"),
        phone: format!("1380000000{i}"),
        domain: format!("user{i}"),
        status: 0,
        sign_info: String::new(),
    }
}

struct Fixture {
    clock: TestClock,
    store: Arc<SqliteStore>,
    proxy: DbProxy,
}

/// In-memory store with department 1 and users 1..=4 (`user<i>`, password
/// `pw(i)`), the clock at noon UTC.
fn fixture() -> Fixture {
    let clock = TestClock(Arc::new(AtomicU32::new(NOON)));
    let store = Arc::new(
        SqliteStore::open_in_memory(StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            clock: clock.clock(),
        })
        .unwrap(),
    );
    store.add_department("dev", 0, 0).unwrap();
    for i in 1..=4 {
        assert_eq!(store.add_user(&new_user(i), &pw(i)).unwrap(), i);
    }
    let proxy = DbProxy::with_options(
        Arc::clone(&store) as Arc<dyn Store>,
        DbProxyOptions {
            clock: clock.clock(),
            utc_offset_secs: 0,
        },
    );
    Fixture {
        clock,
        store,
        proxy,
    }
}

/// Sends `req` with `seq`, expects a reply of type `R` with the same seq.
fn call<Q: CommandMessage, R: CommandMessage>(proxy: &DbProxy, seq: u16, req: &Q) -> R {
    let reply = proxy
        .handle(&req.to_pdu(seq))
        .unwrap_or_else(|| panic!("no reply to {}", Q::COMMAND));
    assert_eq!(reply.key(), R::COMMAND.key(), "reply command");
    assert_eq!(reply.seq(), seq, "seq echoed");
    reply.decode_body::<R>().unwrap()
}

fn text(from: u32, to: u32, body: &str) -> ImMsgData {
    ImMsgData {
        from_user_id: from,
        to_session_id: to,
        msg_id: 0,
        create_time: 1_000,
        msg_type: 1,
        msg_data: Bytes::from(body.to_owned()),
        attach_data: attach(),
    }
}

fn send(proxy: &DbProxy, m: &ImMsgData) -> u32 {
    let rsp: ImMsgData = call(proxy, 7, m);
    rsp.msg_id
}

fn validate(proxy: &DbProxy, name: &str, password: &str) -> ImValidateRsp {
    call(
        proxy,
        1,
        &ImValidateReq {
            user_name: name.to_owned(),
            password: password.to_owned(),
            attach_data: attach(),
        },
    )
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------- login

#[test]
fn validate_fills_user_info_like_teamtalk() {
    let f = fixture();
    let rsp = validate(&f.proxy, "user2", &pw(2));
    assert_eq!(rsp.result_code, VALIDATE_OK);
    assert_eq!(rsp.user_name, "user2");
    assert!(rsp.result_string.is_some());
    assert_eq!(rsp.attach_data, attach());
    assert_eq!(
        rsp.user_info,
        Some(UserInfo {
            user_id: 2,
            user_gender: 1,
            user_nick_name: "nick2".into(),
            avatar_url: String::new(),
            department_id: 1,
            email: "user2@example.com".into(),
            user_real_name: "user2".into(),
            user_tel: "13800000002".into(),
            user_domain: "user2".into(),
            status: 0,
            sign_info: Some(String::new()),
        })
    );
    // Empty strings and zeros are on the wire: avatar_url (field 4) and
    // sign_info (field 11) present and empty, status (field 10) 0.
    let body = rsp.user_info.unwrap().encode_to_vec();
    assert!(body.windows(2).any(|w| w == [0x22, 0x00]));
    assert!(body.ends_with(&[0x50, 0x00, 0x5a, 0x00]));
    assert_eq!(f.proxy.stats().logins_ok, 1);
}

#[test]
fn repeated_logins_skip_argon2_until_a_wrong_password() {
    let f = fixture();
    let good = |f: &Fixture| validate(&f.proxy, "user2", &pw(2)).result_code;
    assert_eq!(good(&f), VALIDATE_OK);
    assert_eq!(
        f.proxy.stats().logins_cached,
        0,
        "first login runs the hash"
    );
    assert_eq!(good(&f), VALIDATE_OK);
    assert_eq!(good(&f), VALIDATE_OK);
    assert_eq!(f.proxy.stats().logins_cached, 2);
    // Another value is checked by the store, refused, and forgets the entry.
    let bad = validate(&f.proxy, "user2", &pw(1));
    assert_eq!(bad.result_code, VALIDATE_BAD_CREDENTIALS);
    assert_eq!(good(&f), VALIDATE_OK);
    assert_eq!(
        f.proxy.stats().logins_cached,
        2,
        "verified by the store again"
    );
    // The cached answer is the same user info the store gives.
    let cached = validate(&f.proxy, "user2", &pw(2));
    assert_eq!(f.proxy.stats().logins_cached, 3);
    assert_eq!(cached.user_info.map(|u| u.user_id), Some(2));
}

#[test]
fn validate_refuses_bad_credentials_with_1() {
    let f = fixture();
    for (name, password) in [("user1", pw(2)), ("nobody", pw(1)), ("", String::new())] {
        let rsp = validate(&f.proxy, name, &password);
        assert_eq!(rsp.result_code, VALIDATE_BAD_CREDENTIALS, "{name}");
        assert_eq!(rsp.user_name, name);
        assert!(rsp.user_info.is_none());
        assert!(rsp.result_string.is_some());
        assert_eq!(rsp.attach_data, attach());
    }
    assert_eq!(f.proxy.stats().logins_failed, 3);
}

#[test]
fn limiter_refuses_with_6_then_unlocks_after_thirty_minutes() {
    let f = fixture();
    let start = f.clock.get();
    for i in 0..11 {
        f.clock.set(start + i * 10);
        assert_eq!(
            validate(&f.proxy, "user3", "wrong").result_code,
            1,
            "try {i}"
        );
    }
    // Twelfth attempt, right password: refused without checking it.
    f.clock.set(start + 200);
    let rsp = validate(&f.proxy, "user3", &pw(3));
    assert_eq!(rsp.result_code, VALIDATE_TOO_MANY_FAILURES);
    assert!(rsp.user_info.is_none());
    let msg = rsp.result_string.unwrap();
    assert!(msg.contains("too many"), "{msg}");
    assert_eq!(f.proxy.stats().logins_locked, 1);
    // Another user is not affected.
    assert_eq!(validate(&f.proxy, "user1", &pw(1)).result_code, 0);
    // Once the first failure is older than the window, ten remain: allowed.
    f.clock.set(start + FAILURE_WINDOW_SECS + 1);
    assert_eq!(validate(&f.proxy, "user3", &pw(3)).result_code, 0);
    // Success forgot the failures.
    assert_eq!(validate(&f.proxy, "user3", "wrong").result_code, 1);
    assert_eq!(validate(&f.proxy, "user3", &pw(3)).result_code, 0);
}

#[test]
fn unreadable_validate_gets_2_and_absent_attach_comes_back_empty() {
    let f = fixture();
    let bad = Pdu::new(
        Command::OtherValidateReq.key(),
        5,
        Bytes::from_static(&[0xff]),
    );
    let rsp: ImValidateRsp = f.proxy.handle(&bad).unwrap().decode_body().unwrap();
    assert_eq!(rsp.result_code, VALIDATE_INTERNAL_ERROR);
    // A request without attach_data gets an empty one, as TeamTalk's copy
    // of an absent field produces (a2 01 00).
    let req = ImValidateReq {
        user_name: "user1".into(),
        password: "x".into(),
        attach_data: None,
    };
    let reply = f.proxy.handle(&req.to_pdu(3)).unwrap();
    assert!(reply.body.ends_with(&[0xa2, 0x01, 0x00]));
}

// ------------------------------------------------- byte-for-byte replies

/// Request bodies and the C++ db_proxy's reply bodies from the captures
/// (`msg_server<->db_proxy`), replayed against the same data: users 1-4,
/// messages between 4 and 1.
#[test]
fn replies_match_captured_teamtalk_bytes() {
    let f = fixture();
    assert_eq!(send(&f.proxy, &text(1, 4, "a")), 1);
    assert_eq!(send(&f.proxy, &text(4, 1, "b")), 2);
    let attach16 = "a2011000000001000000110000000000000000";
    let cases: [(Command, String, String); 6] = [
        // push shield on, then off, for user 4
        (
            Command::LoginReqPushShield,
            format!("08041001{attach16}"),
            format!("080410001801{attach16}"),
        ),
        (
            Command::LoginReqPushShield,
            format!("08041000{attach16}"),
            format!("080410001800{attach16}"),
        ),
        (
            Command::LoginReqQueryPushShield,
            format!("0804{attach16}"),
            format!("080410001800{attach16}"),
        ),
        // logout: empty token, no client type, no attach
        (
            Command::LoginReqDevicetoken,
            "08031200".to_owned(),
            "0803a20100".to_owned(),
        ),
        (
            Command::MsgGetLatestMsgIdReq,
            "080410011801a2010c000000010000001100000000".to_owned(),
            "0804100118012002a2010c000000010000001100000000".to_owned(),
        ),
        (
            Command::MsgGetByMsgIdReq,
            "08021001180120fface204a2010c000000010000000f00000000".to_owned(),
            "080210011801a2010c000000010000000f00000000".to_owned(),
        ),
    ];
    for (i, (cmd, req, want)) in cases.iter().enumerate() {
        let pdu = Pdu::new(cmd.key(), 40 + i as u16, Bytes::from(hex(req)));
        let reply = f.proxy.handle(&pdu).unwrap();
        assert_eq!(reply.seq(), 40 + i as u16);
        assert_eq!(reply.body.as_ref(), hex(want).as_slice(), "case {i}: {cmd}");
    }
}

// ------------------------------------------------------ push settings

#[test]
fn push_shield_set_and_query() {
    let f = fixture();
    let rsp: ImPushShieldRsp = call(
        &f.proxy,
        9,
        &ImPushShieldReq {
            user_id: 2,
            shield_status: 1,
            attach_data: attach(),
        },
    );
    assert_eq!(
        (rsp.user_id, rsp.result_code, rsp.shield_status),
        (2, 0, Some(1))
    );
    assert_eq!(rsp.attach_data, attach());
    let q: ImQueryPushShieldRsp = call(
        &f.proxy,
        10,
        &ImQueryPushShieldReq {
            user_id: 2,
            attach_data: attach(),
        },
    );
    assert_eq!((q.result_code, q.shield_status), (0, Some(1)));
    // Unknown user: failure, no status.
    let q: ImQueryPushShieldRsp = call(
        &f.proxy,
        11,
        &ImQueryPushShieldReq {
            user_id: 99,
            attach_data: None,
        },
    );
    assert_eq!((q.result_code, q.shield_status), (RESULT_FAILED, None));
    let rsp: ImPushShieldRsp = call(
        &f.proxy,
        12,
        &ImPushShieldReq {
            user_id: 99,
            shield_status: 1,
            attach_data: None,
        },
    );
    assert_eq!((rsp.result_code, rsp.shield_status), (RESULT_FAILED, None));
}

fn set_token(proxy: &DbProxy, user: u32, client_type: Option<i32>, token: &str) {
    let rsp: ImDeviceTokenRsp = call(
        proxy,
        3,
        &ImDeviceTokenReq {
            user_id: user,
            device_token: token.to_owned(),
            client_type,
            attach_data: attach(),
        },
    );
    assert_eq!(rsp.user_id, user);
    assert_eq!(rsp.attach_data, attach());
}

fn tokens(proxy: &DbProxy, users: &[u32]) -> ImGetDeviceTokenRsp {
    call(
        proxy,
        0,
        &ImGetDeviceTokenReq {
            user_id: users.to_vec(),
            attach_data: attach(),
        },
    )
}

#[test]
fn device_tokens_with_unread_badge_and_quiet_hours() {
    let f = fixture();
    set_token(&f.proxy, 1, Some(0x11), "ios-1");
    set_token(&f.proxy, 2, Some(0x12), "android-2");
    set_token(&f.proxy, 3, Some(0x01), "windows-3");
    send(&f.proxy, &text(4, 1, "x"));
    send(&f.proxy, &text(4, 1, "y"));
    send(&f.proxy, &text(3, 1, "z"));
    let rsp = tokens(&f.proxy, &[1, 2, 3, 4]);
    assert_eq!(rsp.attach_data, attach());
    let got: Vec<(u32, i32, &str, u32, u32)> = rsp
        .user_token_info
        .iter()
        .map(|t| {
            (
                t.user_id,
                t.user_type,
                t.token.as_str(),
                t.push_count,
                t.push_type,
            )
        })
        .collect();
    assert_eq!(
        got,
        [(1, 0x11, "ios-1", 3, 1), (2, 0x12, "android-2", 0, 1)]
    );

    // Shield on: iOS left out from 22:00 to 07:59 local time only.
    f.store.set_push_shield(1, true).unwrap();
    f.store.set_push_shield(2, true).unwrap();
    f.clock.set(NOON + 11 * 3600); // 23:00 UTC
    let ids: Vec<u32> = tokens(&f.proxy, &[1, 2])
        .user_token_info
        .iter()
        .map(|t| t.user_id)
        .collect();
    assert_eq!(ids, [2]);
    f.clock.set(NOON + 20 * 3600 - 60); // 07:59 UTC next day
    assert_eq!(tokens(&f.proxy, &[1]).user_token_info.len(), 0);
    f.clock.set(NOON + 20 * 3600); // 08:00
    assert_eq!(tokens(&f.proxy, &[1]).user_token_info.len(), 1);

    // The logout path clears the token.
    set_token(&f.proxy, 1, None, "");
    let rsp = tokens(&f.proxy, &[1]);
    assert!(rsp.user_token_info.is_empty());
    // An empty list encodes as attach only.
    assert_eq!(rsp.encode_to_vec()[..3], [0xa2, 0x01, 0x0c]);
}

#[test]
fn quiet_hours_follow_the_configured_offset() {
    let f = fixture();
    let proxy = DbProxy::with_options(
        Arc::clone(&f.store) as Arc<dyn Store>,
        DbProxyOptions {
            clock: f.clock.clock(),
            utc_offset_secs: 8 * 3600,
        },
    );
    set_token(&proxy, 1, Some(0x11), "ios-1");
    f.store.set_push_shield(1, true).unwrap();
    // Noon UTC is 20:00 at +08:00: pushes go out.
    assert_eq!(tokens(&proxy, &[1]).user_token_info.len(), 1);
    // 15:00 UTC is 23:00 at +08:00: held back.
    f.clock.set(NOON + 3 * 3600);
    assert_eq!(tokens(&proxy, &[1]).user_token_info.len(), 0);
}

// ------------------------------------------------------------ buddies

#[test]
fn recent_sessions_and_remove_session() {
    let f = fixture();
    send(&f.proxy, &text(1, 2, "hello"));
    f.clock.set(NOON + 5);
    send(&f.proxy, &text(3, 1, "later"));
    let rsp: ImRecentContactSessionRsp = call(
        &f.proxy,
        4,
        &ImRecentContactSessionReq {
            user_id: 1,
            latest_update_time: 0,
            attach_data: attach(),
        },
    );
    assert_eq!(rsp.user_id, 1);
    assert_eq!(rsp.attach_data, attach());
    let list: Vec<SessionRow<'_>> = rsp
        .contact_session_list
        .iter()
        .map(|s| {
            (
                s.session_id,
                s.session_type,
                s.session_status,
                s.updated_time,
                s.latest_msg_id,
                s.latest_msg_data.as_ref(),
                s.latest_msg_type,
                s.latest_msg_from_user_id,
            )
        })
        .collect();
    assert_eq!(
        list,
        [
            (3, 1, 0, NOON + 5, 1, &b"later"[..], 1, 3),
            (2, 1, 0, NOON, 1, &b"hello"[..], 1, 1),
        ]
    );
    // Incremental: only sessions changed after the given time.
    let rsp: ImRecentContactSessionRsp = call(
        &f.proxy,
        4,
        &ImRecentContactSessionReq {
            user_id: 1,
            latest_update_time: NOON,
            attach_data: None,
        },
    );
    assert_eq!(rsp.contact_session_list.len(), 1);

    // Removing clears the unread count too.
    assert_eq!(f.store.unread(1).unwrap().total, 1);
    let remove = |seq| -> ImRemoveSessionRsp {
        call(
            &f.proxy,
            seq,
            &ImRemoveSessionReq {
                user_id: 1,
                session_type: 1,
                session_id: 3,
                attach_data: attach(),
            },
        )
    };
    let rsp = remove(20);
    assert_eq!(
        (
            rsp.user_id,
            rsp.result_code,
            rsp.session_type,
            rsp.session_id
        ),
        (1, 0, 1, 3)
    );
    assert_eq!(rsp.attach_data, attach());
    assert_eq!(f.store.unread(1).unwrap().total, 0);
    assert_eq!(remove(21).result_code, RESULT_FAILED);
    // An invalid session type gets no reply, as in TeamTalk.
    let bad = ImRemoveSessionReq {
        user_id: 1,
        session_type: 9,
        session_id: 3,
        attach_data: None,
    };
    assert!(f.proxy.handle(&bad.to_pdu(1)).is_none());
}

#[test]
fn users_info_all_users_and_departments() {
    let f = fixture();
    let rsp: ImUsersInfoRsp = call(
        &f.proxy,
        12,
        &ImUsersInfoReq {
            user_id: 1,
            user_id_list: vec![2, 99, 4],
            attach_data: attach(),
        },
    );
    assert_eq!(rsp.user_id, 1);
    let ids: Vec<u32> = rsp.user_info_list.iter().map(|u| u.user_id).collect();
    assert_eq!(ids, [2, 4]);
    assert!(rsp.user_info_list.iter().all(|u| u.sign_info.is_some()));
    assert_eq!(rsp.attach_data, attach());

    let all = |since| -> ImAllUserRsp {
        call(
            &f.proxy,
            17,
            &ImAllUserReq {
                user_id: 1,
                latest_update_time: since,
                attach_data: attach(),
            },
        )
    };
    let rsp = all(0);
    assert_eq!(rsp.user_list.len(), 4);
    assert_eq!(rsp.latest_update_time, NOON);
    // Nothing changed since: the watermark is echoed.
    f.clock.set(NOON + 100);
    let rsp = all(NOON + 50);
    assert!(rsp.user_list.is_empty());
    assert_eq!(rsp.latest_update_time, NOON + 50);
    // A change moves the watermark to it.
    f.store.update_sign_info(3, "busy").unwrap();
    let rsp = all(NOON + 50);
    assert_eq!(rsp.user_list.len(), 1);
    assert_eq!(rsp.user_list[0].sign_info.as_deref(), Some("busy"));
    assert_eq!(rsp.latest_update_time, NOON + 100);

    let rsp: ImDepartmentRsp = call(
        &f.proxy,
        14,
        &ImDepartmentReq {
            user_id: 1,
            latest_update_time: 0,
            attach_data: attach(),
        },
    );
    assert_eq!(rsp.latest_update_time, NOON);
    assert_eq!(rsp.dept_list.len(), 1);
    let d = &rsp.dept_list[0];
    assert_eq!(
        (
            d.dept_id,
            d.priority,
            d.dept_name.as_str(),
            d.parent_dept_id,
            d.dept_status
        ),
        (1, 0, "dev", 0, 0)
    );
    // Captured TeamTalk bytes of this department, with our timestamp.
    assert!(
        rsp.encode_to_vec()
            .windows(15)
            .any(|w| w == hex("1a0d080110001a0364657620002800"))
    );
}

#[test]
fn change_sign_info() {
    let f = fixture();
    let rsp: ImChangeSignInfoRsp = call(
        &f.proxy,
        9,
        &ImChangeSignInfoReq {
            user_id: 2,
            sign_info: "on holiday".into(),
            attach_data: attach(),
        },
    );
    assert_eq!(
        (rsp.user_id, rsp.result_code, rsp.sign_info.as_deref()),
        (2, 0, Some("on holiday"))
    );
    assert_eq!(rsp.attach_data, attach());
    assert_eq!(
        f.store.users_by_ids(&[2]).unwrap()[0].sign_info,
        "on holiday"
    );
    let rsp: ImChangeSignInfoRsp = call(
        &f.proxy,
        9,
        &ImChangeSignInfoReq {
            user_id: 77,
            sign_info: "x".into(),
            attach_data: None,
        },
    );
    assert_eq!((rsp.result_code, rsp.sign_info), (RESULT_FAILED, None));
}

// ------------------------------------------------------------ messages

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
    assert_eq!(s.unimplemented, 2, "group messages count as unimplemented");
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
    // Group acks have nothing to clear yet; still no reply.
    let group_ack = ImMsgDataReadAck {
        session_type: 2,
        ..ack
    };
    assert!(f.proxy.handle(&group_ack.to_pdu(8)).is_none());
}

fn list(proxy: &DbProxy, session_type: i32, begin: u32, count: u32) -> Option<ImGetMsgListRsp> {
    let req = ImGetMsgListReq {
        user_id: 1,
        session_type,
        session_id: 2,
        msg_id_begin: begin,
        msg_cnt: count,
        attach_data: attach(),
    };
    proxy
        .handle(&req.to_pdu(6))
        .map(|p| p.decode_body().unwrap())
}

#[test]
fn message_list_latest_id_and_by_id() {
    let f = fixture();
    for i in 1..=250u32 {
        let (from, to) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
        assert_eq!(send(&f.proxy, &text(from, to, &format!("m{i}"))), i);
    }
    let rsp = list(&f.proxy, 1, 0, 3).unwrap();
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
    let page = list(&f.proxy, 1, 100, 2).unwrap();
    assert_eq!(page.msg_id_begin, 100);
    assert_eq!(
        page.msg_list.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        [100, 99]
    );
    assert_eq!(
        list(&f.proxy, 1, 0, 100_000).unwrap().msg_list.len(),
        crate::store::MAX_MSG_LIST as usize
    );
    assert!(list(&f.proxy, 2, 0, 10).unwrap().msg_list.is_empty());
    assert!(list(&f.proxy, 0, 0, 10).is_none());

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

// ------------------------------------------------ unimplemented & junk

#[test]
fn unimplemented_commands_fail_or_stay_silent_and_are_counted() {
    let f = fixture();
    let rsp: ImGroupCreateRsp = call(
        &f.proxy,
        24,
        &ImGroupCreateReq {
            user_id: 1,
            group_type: 2,
            group_name: "team".into(),
            group_avatar: String::new(),
            member_id_list: vec![1, 2, 3],
            attach_data: attach(),
        },
    );
    assert_eq!(
        (
            rsp.user_id,
            rsp.result_code,
            rsp.group_id,
            rsp.group_name.as_str()
        ),
        (1, RESULT_FAILED, None, "team")
    );
    assert_eq!(rsp.attach_data, attach());
    let rsp: ImGroupShieldRsp = call(
        &f.proxy,
        10,
        &ImGroupShieldReq {
            user_id: 2,
            group_id: 9,
            shield_status: 1,
            attach_data: attach(),
        },
    );
    assert_eq!((rsp.user_id, rsp.group_id, rsp.result_code), (2, 9, 1));
    let rsp: ImChangeAvatarRsp = call(
        &f.proxy,
        19,
        &ImChangeAvatarReq {
            user_id: 1,
            avatar_url: "http://x/a.png".into(),
            attach_data: None,
        },
    );
    assert_eq!((rsp.user_id, rsp.result_code), (1, 1));
    let list = ImNormalGroupListReq {
        user_id: 1,
        attach_data: attach(),
    };
    assert!(f.proxy.handle(&list.to_pdu(31)).is_none());
    assert_eq!(f.proxy.stats().unimplemented, 4);

    // Commands db_proxy never serves, heartbeats and junk: no reply.
    let login = ImLoginReq {
        user_name: "u".into(),
        password: "p".into(),
        online_status: 1,
        client_type: 1,
        client_version: None,
    };
    assert!(f.proxy.handle(&login.to_pdu(1)).is_none());
    assert!(f.proxy.handle(&ImHeartBeat {}.to_pdu(0)).is_none());
    let unknown = Pdu::new(
        teamtalk_proto::CommandKey::new(0x0009, 0x0901),
        1,
        Bytes::new(),
    );
    assert!(f.proxy.handle(&unknown).is_none());
    let junk = Pdu::new(
        Command::MsgListRequest.key(),
        1,
        Bytes::from_static(&[0x0a]),
    );
    assert!(f.proxy.handle(&junk).is_none());
    let s = f.proxy.stats();
    assert_eq!((s.unexpected, s.decode_errors, s.unimplemented), (2, 1, 4));
}

// -------------------------------------------------------------- worker

fn latest_req(seq: u16) -> Pdu {
    ImGetLatestMsgIdReq {
        user_id: 1,
        session_type: 1,
        session_id: 2,
        attach_data: None,
    }
    .to_pdu(seq)
}

#[test]
fn a_batch_splits_runs_so_reads_see_earlier_writes() {
    let f = fixture();
    let jobs: Vec<(usize, Pdu)> = vec![
        (0, text(1, 2, "a").to_pdu(1)),
        (1, text(2, 1, "b").to_pdu(2)),
        (2, latest_req(3)),
        (
            3,
            ImMsgData {
                msg_type: 0x11,
                ..text(1, 9, "g")
            }
            .to_pdu(4),
        ),
        (4, text(1, 2, "c").to_pdu(5)),
        (
            5,
            ImMsgDataReadAck {
                user_id: 2,
                session_id: 1,
                msg_id: 3,
                session_type: 1,
            }
            .to_pdu(6),
        ),
        (6, text(1, 2, "d").to_pdu(7)),
        (7, latest_req(8)),
    ];
    let jobs = jobs.into_iter().map(|(to, pdu)| Job { to, pdu }).collect();
    let mut done = Vec::new();
    super::worker::run_batch(&f.proxy, jobs, None, &mut done);
    let out: Vec<(usize, Pdu)> = done
        .into_iter()
        .filter_map(|r| r.pdu.map(|p| (r.to, p)))
        .collect();
    // Every request but the read ack answered, in order, with its own seq.
    assert_eq!(
        out.iter().map(|(to, p)| (*to, p.seq())).collect::<Vec<_>>(),
        [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (6, 7), (7, 8)]
    );
    let id = |i: usize| out[i].1.decode_body::<ImMsgData>().unwrap().msg_id;
    let latest = |i: usize| {
        out[i]
            .1
            .decode_body::<ImGetLatestMsgIdRsp>()
            .unwrap()
            .latest_msg_id
    };
    assert_eq!(
        (id(0), id(1), latest(2), id(3), id(4), id(5), latest(6)),
        (1, 2, 2, 0, 3, 4, 4)
    );
    // The ack cleared user 2's count before message 4 arrived.
    assert_eq!(f.store.unread(2).unwrap().total, 1);
    // Three runs of messages: [a b] [c] [d].
    assert_eq!(f.proxy.stats().message_batches, 3);
}

#[test]
fn thousand_messages_keep_arrival_order_through_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(
            dir.path(),
            StoreOptions {
                hash_params: HashParams::INSECURE_FAST,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    let proxy = Arc::new(DbProxy::new(Arc::clone(&store)));
    let latency = Arc::new(crate::metrics::Histogram::latency());
    let mut lane = DbWorker::store(Arc::clone(&proxy), Arc::clone(&latency));
    let mut queued: Vec<Job<(u32, u32)>> = Vec::new();
    // Four connections (two per user) interleaved in one conversation, plus
    // a read every 100 requests; tag = (connection, arrival index).
    const N: u32 = 1_000;
    let mut expected_reads = Vec::new();
    let mut stored = 0u32;
    for i in 0..N {
        let conn = i % 4;
        let tag = (conn, i);
        if i % 100 == 99 {
            expected_reads.push((i, stored));
            queued.push(Job {
                to: tag,
                pdu: latest_req(i as u16),
            });
        } else {
            let (from, to) = if conn < 2 { (1, 2) } else { (2, 1) };
            let m = ImMsgData {
                create_time: i,
                ..text(from, to, &format!("#{i}"))
            };
            queued.push(Job {
                to: tag,
                pdu: m.to_pdu(i as u16),
            });
            stored += 1;
        }
    }
    // The runtime hands the lane at most the batch limit at a time.
    let mut done = Vec::new();
    while !queued.is_empty() {
        let batch: Vec<_> = queued.drain(..queued.len().min(64)).collect();
        lane.run(batch, &mut done);
    }
    let replies: Vec<((u32, u32), Pdu)> = done
        .into_iter()
        .filter_map(|r| r.pdu.map(|p| (r.to, p)))
        .collect();
    assert_eq!(replies.len(), N as usize);
    let mut next_id = 1;
    let mut reads = Vec::new();
    for (k, ((conn, i), pdu)) in replies.iter().enumerate() {
        // Replies come out in arrival order, each to its own connection.
        assert_eq!((*i as usize, *conn), (k, *i % 4));
        assert_eq!(pdu.seq(), *i as u16);
        if pdu.is(Command::MsgData.key()) {
            let m: ImMsgData = pdu.decode_body().unwrap();
            assert_eq!(m.create_time, *i);
            assert_eq!(m.msg_id, next_id, "ids strictly increase in arrival order");
            next_id += 1;
        } else {
            let r: ImGetLatestMsgIdRsp = pdu.decode_body().unwrap();
            reads.push((*i, r.latest_msg_id));
        }
    }
    assert_eq!(reads, expected_reads, "each read sees every earlier write");
    // The stored history has the same order.
    let history = store.message_list(1, 2, 0, 200).unwrap();
    let bodies: Vec<u32> = history.iter().map(|m| m.create_time).collect();
    let mut sorted = bodies.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(bodies, sorted);
    let s = proxy.stats();
    assert_eq!(s.messages_stored, u64::from(stored));
    assert!(s.message_batches >= 10 && s.message_batches <= u64::from(stored));
    assert_eq!(latency.snapshot().count, s.message_batches);
}

#[test]
fn login_lanes_and_the_store_lane_both_answer() {
    let f = fixture();
    let proxy = Arc::new(f.proxy);
    let mut login = DbWorker::login(Arc::clone(&proxy));
    let mut store = DbWorker::store(
        Arc::clone(&proxy),
        Arc::new(crate::metrics::Histogram::latency()),
    );
    let mut done = Vec::new();
    let logins = (1..=4u32)
        .map(|i| Job {
            to: i,
            pdu: ImValidateReq {
                user_name: format!("user{i}"),
                password: pw(i),
                attach_data: attach(),
            }
            .to_pdu(i as u16),
        })
        .collect();
    login.run(logins, &mut done);
    assert!(done.iter().all(|r| !r.from_store));
    store.run(
        vec![Job {
            to: 9,
            pdu: text(1, 2, "x").to_pdu(9),
        }],
        &mut done,
    );
    assert!(done.last().is_some_and(|r| r.from_store));
    let mut got: Vec<(u32, u16, u32)> = done
        .into_iter()
        .filter_map(|r| r.pdu.map(|p| (r.to, p)))
        .map(|(to, p)| {
            let code = if p.is(Command::OtherValidateRsp.key()) {
                p.decode_body::<ImValidateRsp>().unwrap().result_code
            } else {
                p.decode_body::<ImMsgData>().unwrap().msg_id
            };
            (to, p.seq(), code)
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [(1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 4, 0), (9, 9, 1)]);
}

// -------------------------------------------------------------- config

#[test]
fn config_from_stock_conf() {
    let text = "ListenIP=127.0.0.1\nListenPort=10601\nThreadNum=48\t\t# cores\nMsfsSite=127.0.0.1\n\
        DBInstances=teamtalk_master,teamtalk_slave\nteamtalk_master_host=127.0.0.1\n\
        teamtalk_master_port=3306\nteamtalk_slave_dbname=teamtalk\n\
        CacheInstances=unread,token\nunread_db=1\ntoken_maxconncnt=16\naesKey=0123\n\
        DataDir=/var/lib/teamtalk\nUtcOffsetMinutes=480\nListenPrt=1\n";
    let conf = crate::conf::Conf::parse_str(text, "dbproxyserver.conf").unwrap();
    let cfg = config_from_conf(&conf).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:10601".parse().unwrap());
    assert_eq!(cfg.data_dir, std::path::PathBuf::from("/var/lib/teamtalk"));
    assert_eq!(cfg.options.utc_offset_secs, 8 * 3600);

    let empty = crate::conf::Conf::parse_str("", "x.conf").unwrap();
    let cfg = config_from_conf(&empty).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:10600".parse().unwrap());
    assert_eq!(cfg.data_dir, std::path::PathBuf::from(DEFAULT_DATA_DIR));

    let bad = crate::conf::Conf::parse_str("ListenPort=99999\n", "x.conf").unwrap();
    let err = config_from_conf(&bad).unwrap_err().to_string();
    assert!(err.contains("ListenPort"), "{err}");
}

// ------------------------------------------------------------ loopback

#[test]
fn loopback_validate_store_and_list_over_tcp() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open_with(
            dir.path(),
            StoreOptions {
                hash_params: HashParams::INSECURE_FAST,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    store.add_user(&new_user(1), &pw(1)).unwrap();
    store.add_user(&new_user(2), &pw(2)).unwrap();
    let server = spawn(
        DbProxyConfig::new("127.0.0.1:0".parse().unwrap()),
        store as Arc<dyn Store>,
    )
    .unwrap();
    let addr = server.addr();
    assert_ne!(addr.port(), 0);

    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut codec = teamtalk_proto::PduCodec::default();
    let mut buf = bytes::BytesMut::new();
    let mut next = |sock: &mut std::net::TcpStream| -> Pdu {
        loop {
            if let Some(p) = codec.decode(&mut buf).unwrap() {
                if p.is(Command::OtherHeartbeat.key()) {
                    continue;
                }
                return p;
            }
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    };

    // Raw bytes on the wire: validate.
    let req = ImValidateReq {
        user_name: "user1".into(),
        password: pw(1),
        attach_data: attach(),
    }
    .to_pdu(1);
    sock.write_all(&req.to_bytes()).unwrap();
    let rsp = next(&mut sock);
    assert_eq!((rsp.key(), rsp.seq()), (Command::OtherValidateRsp.key(), 1));
    let v: ImValidateRsp = rsp.decode_body().unwrap();
    assert_eq!(v.result_code, 0);
    assert_eq!(v.user_info.unwrap().user_id, 1);

    // Three messages in one write, then the history.
    let mut wire = Vec::new();
    for (i, body) in ["one", "two", "three"].iter().enumerate() {
        wire.extend_from_slice(&text(1, 2, body).to_pdu(10 + i as u16).to_bytes());
    }
    sock.write_all(&wire).unwrap();
    for i in 0..3u16 {
        let p = next(&mut sock);
        assert_eq!(p.seq(), 10 + i);
        let m: ImMsgData = p.decode_body().unwrap();
        assert_eq!(m.msg_id, u32::from(i) + 1);
        assert_eq!(m.attach_data, attach());
    }
    let req = ImGetMsgListReq {
        user_id: 2,
        session_type: 1,
        session_id: 1,
        msg_id_begin: 0,
        msg_cnt: 10,
        attach_data: attach(),
    };
    sock.write_all(&req.to_pdu(20).to_bytes()).unwrap();
    let p = next(&mut sock);
    assert_eq!((p.key(), p.seq()), (Command::MsgListResponse.key(), 20));
    let l: ImGetMsgListRsp = p.decode_body().unwrap();
    let bodies: Vec<&[u8]> = l.msg_list.iter().map(|m| m.msg_data.as_ref()).collect();
    assert_eq!(bodies, [&b"three"[..], b"two", b"one"]);
    assert_eq!(
        server
            .inspect(|app| app.proxy().stats().messages_stored)
            .unwrap(),
        3
    );

    // Shutting down tells the peer to stop sending, then closes.
    server.stop();
    let p = next(&mut sock);
    assert_eq!(p.key(), Command::OtherStopRecvPacket.key());
    assert_eq!(p.body.as_ref(), [0x08, 0x00]);
}
