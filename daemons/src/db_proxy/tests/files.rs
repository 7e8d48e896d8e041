//! Offline files (`cmd/files.rs`).

use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::ext::RequestFailedCode;
use teamtalk_proto::pb::im::file::{
    ImFileAddOfflineReq, ImFileDelOfflineReq, ImFileHasOfflineReq, ImFileHasOfflineRsp,
};
use teamtalk_proto::{Command, Pdu};

use super::{attach, call, call_failing, failing_fixture, fixture, request_failed};
use crate::db_proxy::DbProxy;
use crate::rules::files::MAX_OFFLINE_FILES;

fn task(n: usize) -> String {
    format!("6f1c2a00-0000-4000-8000-{n:012x}")
}

fn add(from: u32, to: u32, task_id: &str, name: &str) -> ImFileAddOfflineReq {
    ImFileAddOfflineReq {
        from_user_id: from,
        to_user_id: to,
        task_id: task_id.to_owned(),
        file_name: name.to_owned(),
        file_size: 40_000,
    }
}

fn waiting(proxy: &DbProxy, user: u32) -> Vec<(u32, String, String, u32)> {
    let rsp: ImFileHasOfflineRsp = call(
        proxy,
        7,
        &ImFileHasOfflineReq {
            user_id: user,
            attach_data: attach(),
        },
    );
    assert_eq!(rsp.user_id, user);
    assert_eq!(rsp.attach_data, attach());
    assert!(rsp.ip_addr_list.is_empty(), "msg_server adds the addresses");
    rsp.offline_file_list
        .into_iter()
        .map(|f| (f.from_user_id, f.task_id, f.file_name, f.file_size))
        .collect()
}

/// One-way requests: no reply on success.
fn one_way(proxy: &DbProxy, pdu: &Pdu) {
    assert_eq!(proxy.handle(pdu), None, "{}", pdu.key());
}

#[test]
fn record_list_and_forget_offline_files() {
    let f = fixture();
    assert!(waiting(&f.proxy, 2).is_empty());
    one_way(&f.proxy, &add(1, 2, &task(1), "a.txt").to_pdu(1));
    // A resend records nothing new and is not an error.
    one_way(&f.proxy, &add(1, 2, &task(1), "a.txt").to_pdu(2));
    one_way(&f.proxy, &add(3, 2, &task(2), "b.txt").to_pdu(3));
    assert_eq!(
        waiting(&f.proxy, 2),
        [
            (1, task(1), "a.txt".to_owned(), 40_000),
            (3, task(2), "b.txt".to_owned(), 40_000)
        ]
    );
    assert!(waiting(&f.proxy, 1).is_empty());
    // Forgetting names the sender and the receiver, as TeamTalk's SQL did.
    let del = |from, to, t: &str| ImFileDelOfflineReq {
        from_user_id: from,
        to_user_id: to,
        task_id: t.to_owned(),
    };
    one_way(&f.proxy, &del(2, 1, &task(1)).to_pdu(4));
    assert_eq!(waiting(&f.proxy, 2).len(), 2, "wrong pair: nothing deleted");
    one_way(&f.proxy, &del(1, 2, &task(1)).to_pdu(5));
    assert_eq!(
        waiting(&f.proxy, 2),
        [(3, task(2), "b.txt".to_owned(), 40_000)]
    );
    assert_eq!(f.proxy.stats().failures, 0);
}

#[test]
fn invalid_records_are_refused_with_bad_request() {
    let f = fixture();
    let bad_request = |req: ImFileAddOfflineReq| {
        let reply = f.proxy.handle(&req.to_pdu(9)).expect("answered");
        let failed = request_failed(&reply, 9, Command::FileAddOfflineReq);
        assert_eq!(
            failed.result_code,
            RequestFailedCode::RequestFailedBadRequest as u32,
            "{req:?}"
        );
    };
    bad_request(add(1, 2, "../../etc/passwd", "x"));
    bad_request(add(1, 1, &task(1), "x"));
    bad_request(add(1, 2, &task(1), &"n".repeat(513)));
    for n in 0..MAX_OFFLINE_FILES {
        one_way(&f.proxy, &add(1, 2, &task(n), "f").to_pdu(1));
    }
    bad_request(add(3, 2, &task(1000), "one too many"));
    assert_eq!(waiting(&f.proxy, 2).len(), MAX_OFFLINE_FILES);
}

#[test]
fn store_failures_are_answered() {
    let f = failing_fixture();
    for op in ["offline_files", "add_offline_file", "delete_offline_file"] {
        f.store.fail(op);
    }
    call_failing(
        &f.proxy,
        3,
        &ImFileHasOfflineReq {
            user_id: 2,
            attach_data: attach(),
        },
    );
    // No reply exists for these two; the failure is still reported.
    for pdu in [
        add(1, 2, &task(1), "a").to_pdu(4),
        ImFileDelOfflineReq {
            from_user_id: 1,
            to_user_id: 2,
            task_id: task(1),
        }
        .to_pdu(5),
    ] {
        let reply = f.proxy.handle(&pdu).expect("answered");
        let command = Command::from_key(pdu.key()).unwrap();
        let failed = request_failed(&reply, pdu.seq(), command);
        assert_eq!(
            failed.result_code,
            RequestFailedCode::RequestFailedServerError as u32
        );
    }
    assert_eq!(f.proxy.stats().store_errors, 3);
}
