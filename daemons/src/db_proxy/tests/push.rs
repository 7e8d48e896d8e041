//! Push settings and device tokens (`cmd/push.rs`).

use std::sync::Arc;

use prost::Message as _;
use teamtalk_proto::pb::im::login::{
    ImDeviceTokenReq, ImDeviceTokenRsp, ImPushShieldReq, ImPushShieldRsp, ImQueryPushShieldReq,
    ImQueryPushShieldRsp,
};
use teamtalk_proto::pb::im::server::{ImGetDeviceTokenReq, ImGetDeviceTokenRsp};

use super::{NOON, attach, call, call_failing, failing_fixture, fixture, send, text};
use crate::db_proxy::{DbProxy, DbProxyOptions, RESULT_FAILED};
use crate::store::Store;

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
            invalid_token: None,
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

/// msg_server's request for a token push_server found invalid.
fn forget_invalid(proxy: &DbProxy, user: u32, invalid: &str) {
    let rsp: ImDeviceTokenRsp = call(
        proxy,
        3,
        &ImDeviceTokenReq {
            user_id: user,
            device_token: String::new(),
            client_type: None,
            invalid_token: Some(invalid.to_owned()),
            attach_data: attach(),
        },
    );
    assert_eq!(rsp.user_id, user);
}

#[test]
fn an_invalid_token_is_removed_only_while_it_is_the_users() {
    let f = fixture();
    set_token(&f.proxy, 1, Some(0x11), "ios-old");
    // The device registered a new token before push_server answered.
    set_token(&f.proxy, 1, Some(0x11), "ios-new");
    forget_invalid(&f.proxy, 1, "ios-old");
    let left: Vec<String> = tokens(&f.proxy, &[1])
        .user_token_info
        .into_iter()
        .map(|t| t.token)
        .collect();
    assert_eq!(left, ["ios-new"]);
    forget_invalid(&f.proxy, 1, "ios-new");
    assert!(tokens(&f.proxy, &[1]).user_token_info.is_empty());
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

// ------------------------------------------------------- store failures

#[test]
fn push_shield_store_failures_answer_1_without_a_status() {
    let f = failing_fixture();
    f.store.fail("set_push_shield");
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
        (2, RESULT_FAILED, None)
    );
    assert_eq!(rsp.attach_data, attach());
    f.store.fail("push_shield");
    let q: ImQueryPushShieldRsp = call(
        &f.proxy,
        10,
        &ImQueryPushShieldReq {
            user_id: 2,
            attach_data: None,
        },
    );
    assert_eq!(
        (q.user_id, q.result_code, q.shield_status),
        (2, RESULT_FAILED, None)
    );
    // An absent attach_data comes back present and empty, as every reply's.
    assert_eq!(q.attach_data, Some(bytes::Bytes::new()));
    let s = f.proxy.stats();
    assert_eq!((s.store_errors, s.failures), (2, 2));
}

#[test]
fn device_token_store_failures_are_request_failed() {
    let f = failing_fixture();
    // 0x0109 has no result field: a failed registration is IMRequestFailed,
    // not a reply that reads as success.
    f.store.fail("set_device_token");
    call_failing(
        &f.proxy,
        3,
        &ImDeviceTokenReq {
            user_id: 1,
            device_token: "ios-1".into(),
            client_type: Some(0x11),
            invalid_token: None,
            attach_data: attach(),
        },
    );
    f.store.heal("set_device_token");
    set_token(&f.proxy, 1, Some(0x11), "ios-1");
    let req = ImGetDeviceTokenReq {
        user_id: vec![1],
        attach_data: attach(),
    };
    // Each read behind 0x0705 failing makes the whole answer a failure,
    // never a token list with holes or a zero badge.
    for op in ["device_tokens", "unread", "push_shield"] {
        f.store.fail(op);
        if op == "push_shield" {
            // The shield is read for iOS tokens in quiet hours only.
            f.clock.set(NOON + 11 * 3600);
        }
        call_failing(&f.proxy, 0, &req);
        f.store.heal(op);
    }
    assert_eq!(f.proxy.stats().failures, 4);
    assert_eq!(tokens(&f.proxy, &[1]).user_token_info.len(), 1);
}
