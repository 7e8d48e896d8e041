//! Recent sessions (`cmd/sessions.rs`).

use teamtalk_proto::pb::im::buddy::{
    ImRecentContactSessionReq, ImRecentContactSessionRsp, ImRemoveSessionReq, ImRemoveSessionRsp,
};

use super::{NOON, attach, call, call_failing, failing_fixture, fixture, send, text};
use crate::db_proxy::RESULT_FAILED;
use crate::store::Store;

/// A `ContactSessionInfo` as a tuple, in field order.
type SessionRow<'a> = (u32, i32, i32, u32, u32, &'a [u8], i32, u32);

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
    // An invalid session type is answered with a failure (TeamTalk sent
    // nothing).
    let bad = ImRemoveSessionReq {
        user_id: 1,
        session_type: 9,
        session_id: 3,
        attach_data: None,
    };
    let rsp: ImRemoveSessionRsp = call(&f.proxy, 1, &bad);
    assert_eq!(
        (
            rsp.user_id,
            rsp.result_code,
            rsp.session_type,
            rsp.session_id
        ),
        (1, RESULT_FAILED, 9, 3)
    );
    assert_eq!(f.proxy.stats().failures, 1);
}

// ------------------------------------------------------- store failures

#[test]
fn a_failed_session_list_is_request_failed_not_an_empty_list() {
    let f = failing_fixture();
    send(&f.proxy, &text(1, 2, "hello"));
    f.store.fail("recent_sessions");
    let failed = call_failing(
        &f.proxy,
        4,
        &ImRecentContactSessionReq {
            user_id: 1,
            latest_update_time: 0,
            attach_data: attach(),
        },
    );
    assert!(failed.reason.is_some());
    assert_eq!(f.proxy.stats().store_errors, 1);
}

#[test]
fn a_failed_removal_answers_1_and_can_be_repeated() {
    let f = failing_fixture();
    send(&f.proxy, &text(3, 1, "hi"));
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
    for op in ["clear_unread", "remove_session"] {
        f.store.fail(op);
        let rsp = remove(5);
        assert_eq!(
            (
                rsp.user_id,
                rsp.result_code,
                rsp.session_type,
                rsp.session_id
            ),
            (1, RESULT_FAILED, 1, 3),
            "{op} failing"
        );
        assert_eq!(rsp.attach_data, attach());
        f.store.heal(op);
        // Nothing was hidden: the session is still listed.
        assert_eq!(f.store.recent_sessions(1, 0).unwrap().len(), 1, "{op}");
    }
    // Once the store works, the same removal succeeds.
    assert_eq!(remove(6).result_code, 0);
    assert!(f.store.recent_sessions(1, 0).unwrap().is_empty());
    assert_eq!(f.store.unread(1).unwrap().total, 0);
    assert_eq!(f.proxy.stats().failures, 2);
}
