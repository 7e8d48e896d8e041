//! The directory (`cmd/users.rs`).

use prost::Message as _;
use teamtalk_proto::pb::im::buddy::{
    ImAllUserReq, ImAllUserRsp, ImChangeSignInfoReq, ImChangeSignInfoRsp, ImDepartmentReq,
    ImDepartmentRsp, ImUsersInfoReq, ImUsersInfoRsp,
};

use super::{NOON, attach, call, call_failing, failing_fixture, fixture, hex};
use crate::db_proxy::RESULT_FAILED;
use crate::store::Store;

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

// ------------------------------------------------------- store failures

/// The three lists cannot say "failed" (an empty list reads as "nobody" or
/// "nothing changed"): a store failure is IMRequestFailed.
#[test]
fn failed_directory_reads_are_request_failed_not_empty_lists() {
    let f = failing_fixture();
    f.store.fail("users_by_ids");
    call_failing(
        &f.proxy,
        12,
        &ImUsersInfoReq {
            user_id: 1,
            user_id_list: vec![2, 3],
            attach_data: attach(),
        },
    );
    f.store.fail("users_updated_since");
    call_failing(
        &f.proxy,
        17,
        &ImAllUserReq {
            user_id: 1,
            latest_update_time: 0,
            attach_data: attach(),
        },
    );
    f.store.fail("departments_updated_since");
    call_failing(
        &f.proxy,
        14,
        &ImDepartmentReq {
            user_id: 1,
            latest_update_time: 0,
            attach_data: attach(),
        },
    );
    let s = f.proxy.stats();
    assert_eq!((s.store_errors, s.failures, s.replies), (3, 3, 3));
}

#[test]
fn a_failed_sign_info_change_answers_1() {
    let f = failing_fixture();
    f.store.fail("update_sign_info");
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
        (rsp.user_id, rsp.result_code, rsp.sign_info),
        (2, RESULT_FAILED, None)
    );
    assert_eq!(rsp.attach_data, attach());
    f.store.heal("update_sign_info");
    assert_eq!(f.store.users_by_ids(&[2]).unwrap()[0].sign_info, "");
}
