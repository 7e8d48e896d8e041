//! 0x0703 login checks (`cmd/login.rs`).

use bytes::Bytes;
use prost::Message as _;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::UserInfo;
use teamtalk_proto::pb::im::server::{ImValidateReq, ImValidateRsp};
use teamtalk_proto::{Command, Pdu};

use super::{Fixture, attach, call, failing_fixture, fixture, pw, validate};
use crate::db_proxy::{
    VALIDATE_BAD_CREDENTIALS, VALIDATE_INTERNAL_ERROR, VALIDATE_OK, VALIDATE_TOO_MANY_FAILURES,
};
use crate::store::Store;

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

/// The reply to an accepted login carries the user's groups (our field),
/// the same list 0x0791 answers, from the credential cache too; a refused
/// login carries none, and a store failure reading them only leaves them
/// out.
#[test]
fn an_accepted_login_carries_the_users_groups() {
    use crate::store::{GroupType, NewGroup};
    let f = fixture();
    let rsp = validate(&f.proxy, "user2", &pw(2));
    assert_eq!(rsp.groups.map(|g| g.group_id_list), Some(Vec::new()));
    let group = |members: Vec<u32>| NewGroup {
        name: "team".into(),
        avatar: String::new(),
        creator: 1,
        group_type: GroupType::Tmp,
        members,
    };
    let a = f.store.create_group(&group(vec![1, 2])).unwrap().id;
    let b = f.store.create_group(&group(vec![1, 2, 3])).unwrap().id;
    let _ = f.store.create_group(&group(vec![1, 3])).unwrap();
    for _ in 0..2 {
        let rsp = validate(&f.proxy, "user2", &pw(2));
        assert_eq!(rsp.result_code, VALIDATE_OK);
        assert_eq!(rsp.groups.map(|g| g.group_id_list), Some(vec![a, b]));
    }
    assert!(
        f.proxy.stats().logins_cached >= 1,
        "the second from the cache"
    );
    let rsp = validate(&f.proxy, "user2", "wrong");
    assert_eq!(
        (rsp.result_code, rsp.groups),
        (VALIDATE_BAD_CREDENTIALS, None)
    );

    let f = failing_fixture();
    f.store.fail("user_groups");
    let rsp = validate(&f.proxy, "user2", &pw(2));
    assert_eq!((rsp.result_code, rsp.groups), (VALIDATE_OK, None));
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

/// A password changed or a user disabled behind db_proxy's back (by
/// `teamtalk user` on the same file) takes effect at the next login,
/// although the old password is in the credential cache.
#[test]
fn a_changed_password_or_a_disabled_user_is_not_answered_from_the_cache() {
    let f = fixture();
    let login = |f: &Fixture, password: &str| validate(&f.proxy, "user2", password).result_code;
    assert_eq!(login(&f, &pw(2)), VALIDATE_OK);
    assert_eq!(login(&f, &pw(2)), VALIDATE_OK);
    assert_eq!(f.proxy.stats().logins_cached, 1, "remembered");

    assert!(f.store.set_password(2, &pw(22)).unwrap());
    assert_eq!(login(&f, &pw(2)), VALIDATE_BAD_CREDENTIALS, "old password");
    assert_eq!(f.proxy.stats().logins_cached, 1);
    assert_eq!(login(&f, &pw(22)), VALIDATE_OK, "new password");
    assert_eq!(login(&f, &pw(22)), VALIDATE_OK);
    assert_eq!(f.proxy.stats().logins_cached, 2, "the new one is cached");

    // Setting the same password again makes a new hash: the cache asks
    // the store again rather than trust a credential no longer stored.
    assert!(f.store.set_password(2, &pw(22)).unwrap());
    assert_eq!(login(&f, &pw(22)), VALIDATE_OK);
    assert_eq!(f.proxy.stats().logins_cached, 2);

    assert!(
        f.store
            .set_user_status(2, crate::store::USER_STATUS_DEPARTED)
            .unwrap()
    );
    let rsp = validate(&f.proxy, "user2", &pw(22));
    assert_eq!(rsp.result_code, VALIDATE_BAD_CREDENTIALS, "disabled");
    assert!(rsp.user_info.is_none());
    assert!(f.store.set_user_status(2, 0).unwrap());
    assert_eq!(login(&f, &pw(22)), VALIDATE_OK, "enabled again");

    assert!(f.store.delete_user(2).unwrap());
    assert_eq!(login(&f, &pw(22)), VALIDATE_BAD_CREDENTIALS, "deleted");
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

fn validate_from(f: &Fixture, name: &str, password: &str, addr: &str) -> ImValidateRsp {
    call(
        &f.proxy,
        1,
        &ImValidateReq {
            user_name: name.to_owned(),
            password: password.to_owned(),
            attach_data: attach(),
            client_addr: Some(addr.to_owned()),
        },
    )
}

/// Without the client's address (a C++ msg_server), TeamTalk's threshold
/// per name, but a delay of a second (growing, at most five minutes)
/// instead of a 30-minute lock.
#[test]
fn without_an_address_the_limiter_refuses_with_6_for_seconds() {
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
    // Twelfth attempt within the delay, right password: refused without
    // checking it.
    f.clock.set(start + 100);
    let rsp = validate(&f.proxy, "user3", &pw(3));
    assert_eq!(rsp.result_code, VALIDATE_TOO_MANY_FAILURES);
    assert!(rsp.user_info.is_none());
    let msg = rsp.result_string.unwrap();
    assert!(
        msg.contains("too many") && msg.contains("1 seconds"),
        "{msg}"
    );
    assert_eq!(f.proxy.stats().logins_locked, 1);
    // Another user is not affected.
    assert_eq!(validate(&f.proxy, "user1", &pw(1)).result_code, 0);
    // A second later the password is checked again.
    f.clock.set(start + 101);
    assert_eq!(validate(&f.proxy, "user3", &pw(3)).result_code, 0);
    // Success forgot the failures.
    assert_eq!(validate(&f.proxy, "user3", "wrong").result_code, 1);
    assert_eq!(validate(&f.proxy, "user3", &pw(3)).result_code, 0);
}

/// The finding: eleven wrong passwords from a stranger's address do not
/// stop the user logging in from elsewhere, and slow the stranger down.
#[test]
fn a_strangers_failures_do_not_lock_the_user_out() {
    let f = fixture();
    let now = f.clock.get();
    let mut refused = 0;
    for _ in 0..11 {
        match validate_from(&f, "user3", "wrong", "198.51.100.9:40000").result_code {
            1 => {}
            6 => refused += 1,
            other => panic!("result {other}"),
        }
    }
    // Five checked, then a delay of a second: the rest refused unchecked.
    assert_eq!(refused, 6);
    assert_eq!(f.proxy.stats().logins_failed, 5);
    let rsp = validate_from(&f, "user3", &pw(3), "203.0.113.5:50000");
    assert_eq!(rsp.result_code, VALIDATE_OK);
    // The stranger's address is still delayed, even with the right password.
    assert_eq!(
        validate_from(&f, "user3", &pw(3), "198.51.100.9:40001").result_code,
        VALIDATE_TOO_MANY_FAILURES
    );
    // And a C++ msg_server's logins (no address) are counted apart.
    assert_eq!(validate(&f.proxy, "user3", &pw(3)).result_code, VALIDATE_OK);
    f.clock.set(now + 1);
    assert_eq!(
        validate_from(&f, "user3", &pw(3), "198.51.100.9").result_code,
        VALIDATE_OK
    );
}

#[test]
fn an_unreadable_client_addr_counts_by_name() {
    let f = fixture();
    for _ in 0..11 {
        validate_from(&f, "user2", "wrong", "somewhere");
    }
    assert_eq!(
        validate(&f.proxy, "user2", &pw(2)).result_code,
        VALIDATE_TOO_MANY_FAILURES,
        "counted under the name alone, like a login without an address"
    );
}

/// The finding: megabyte user names are refused before any table, reply
/// or log line holds them.
#[test]
fn oversized_names_and_passwords_get_the_failure_answer() {
    let f = fixture();
    let big = "n".repeat(1 << 20);
    for (name, password) in [
        (big.as_str(), pw(1)),
        ("user1", "p".repeat(257)),
        (&big[..257], pw(1)),
    ] {
        let reply = f
            .proxy
            .handle(
                &ImValidateReq {
                    user_name: name.to_owned(),
                    password: password.clone(),
                    attach_data: attach(),
                    client_addr: Some("198.51.100.9:1".into()),
                }
                .to_pdu(4),
            )
            .unwrap();
        assert!(reply.wire_len() < 200, "{}", reply.wire_len());
        let rsp: ImValidateRsp = reply.decode_body().unwrap();
        assert_eq!(rsp.result_code, VALIDATE_INTERNAL_ERROR);
        assert_eq!(rsp.user_name, "");
        assert_eq!(rsp.attach_data, attach());
    }
    let s = f.proxy.stats();
    assert_eq!((s.logins_oversized, s.logins_failed, s.failures), (3, 0, 3));
    assert_eq!(f.proxy.limiter().tracked(), 0);
    // 256 bytes is still a name (unknown here).
    let rsp = validate(&f.proxy, &big[..256], &pw(1));
    assert_eq!(rsp.result_code, VALIDATE_BAD_CREDENTIALS);
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
        client_addr: None,
    };
    let reply = f.proxy.handle(&req.to_pdu(3)).unwrap();
    assert!(reply.body.ends_with(&[0xa2, 0x01, 0x00]));
}

#[test]
fn a_store_failure_is_2_and_not_a_wrong_password() {
    let f = failing_fixture();
    f.store.fail("verify_login");
    for _ in 0..12 {
        let rsp = validate(&f.proxy, "user2", &pw(2));
        assert_eq!(rsp.result_code, VALIDATE_INTERNAL_ERROR);
        assert_eq!(rsp.user_name, "user2");
        assert_eq!(rsp.user_info, None);
        assert!(rsp.result_string.is_some());
        assert_eq!(rsp.attach_data, attach());
    }
    let s = f.proxy.stats();
    assert_eq!((s.store_errors, s.failures, s.logins_failed), (12, 12, 0));
    // Store failures are not password failures: the limiter did not lock
    // the name, so the login works once the store does.
    f.store.heal("verify_login");
    assert_eq!(validate(&f.proxy, "user2", &pw(2)).result_code, VALIDATE_OK);
}
