//! Unit tests of msg_server's file-transfer half (`app/files.rs`), with
//! integers as connection ids.

use teamtalk_proto::pb::im::base_define::{ClientType, IpAddr, UserInfo, UserStat};
use teamtalk_proto::pb::im::buddy::ImUsersStatRsp;
use teamtalk_proto::pb::im::ext::ImRequestFailed;
use teamtalk_proto::pb::im::file::{
    ImFileAddOfflineReq, ImFileDelOfflineReq, ImFileHasOfflineReq, ImFileHasOfflineRsp,
    ImFileNotify, ImFileReq, ImFileRsp,
};
use teamtalk_proto::pb::im::login::ImLoginReq;
use teamtalk_proto::pb::im::server::{
    ImFileServerIpRsp, ImFileTransferReq, ImFileTransferRsp, ImValidateRsp,
};
use teamtalk_proto::{Command, Message, Pdu};

use super::app::{Action, MsgApp, Upstream};
use crate::runtime::LinkId;

type A = Action<u32>;

const DB: LinkId = LinkId(0);
const LOGIN: LinkId = LinkId(1);
const ROUTE: LinkId = LinkId(2);
const FILE1: LinkId = LinkId(3);
const FILE2: LinkId = LinkId(4);
const ALICE: u32 = 10;
const BOB: u32 = 20;
const TASK: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const OFFLINE: i32 = 2;
const ONLINE: i32 = 1;

/// A msg_server with every link up and two file_servers that told their
/// addresses.
fn app() -> MsgApp<u32> {
    let mut app = super::tests::app_with_links(&[
        (DB, Upstream::Db),
        (LOGIN, Upstream::Login),
        (ROUTE, Upstream::Route),
        (FILE1, Upstream::File),
        (FILE2, Upstream::File),
    ]);
    for l in [DB, LOGIN, ROUTE] {
        let _ = app.link_up(l);
    }
    for (l, port) in [(FILE1, 8600), (FILE2, 9600)] {
        let out = app.link_up(l);
        assert_eq!(
            upstream_of(&out, l, Command::OtherFileServerIpReq).len(),
            1,
            "addresses asked on connect"
        );
        assert!(addresses(&mut app, l, port).is_empty());
    }
    app
}

fn addresses(app: &mut MsgApp<u32>, link: LinkId, port: u32) -> Vec<A> {
    let rsp = ImFileServerIpRsp {
        ip_addr_list: vec![IpAddr {
            ip: "10.0.0.9".into(),
            port,
        }],
    };
    app.upstream_pdu(link, &Command::OtherFileServerIpRsp.pdu(0, &rsp))
}

fn upstream_of(actions: &[A], link: LinkId, command: Command) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Link(l, p) if *l == link && p.is(command.key()) => Message::decode(p).ok(),
            _ => None,
        })
        .collect()
}

fn sent_to(actions: &[A], conn: u32, command: Command) -> Vec<Pdu> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, p) if *c == conn && p.is(command.key()) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn log_in(app: &mut MsgApp<u32>, conn: u32, user_id: u32, client_type: ClientType) {
    app.client_open(conn);
    let login = Command::LoginReqUserlogin.pdu(
        5,
        &ImLoginReq {
            user_name: "u".into(),
            password: "x".into(),
            online_status: 1,
            client_type: client_type as i32,
            client_version: None,
        },
    );
    let out = app.login_request(conn, &login);
    let [Message::OtherValidateReq(req)] = &upstream_of(&out, DB, Command::OtherValidateReq)[..]
    else {
        panic!("{out:?}")
    };
    let rsp = ImValidateRsp {
        groups: None,
        user_name: req.user_name.clone(),
        result_code: 0,
        result_string: None,
        user_info: Some(UserInfo {
            user_id,
            ..UserInfo::default()
        }),
        attach_data: req.attach_data.clone(),
    };
    let out = app.upstream_pdu(DB, &Command::OtherValidateRsp.pdu(5, &rsp));
    assert!(out.iter().any(|a| matches!(a, Action::Accept { .. })));
}

fn offer(to: u32, mode: i32) -> ImFileReq {
    ImFileReq {
        from_user_id: 999,
        to_user_id: to,
        file_name: "C:/docs/report.pdf".into(),
        file_size: 40_000,
        trans_mode: mode,
    }
}

/// The 0x0507 the client got, decoded.
fn file_rsp(out: &[A], conn: u32, seq: u16) -> ImFileRsp {
    let rsp = sent_to(out, conn, Command::FileResponse);
    assert_eq!(rsp.len(), 1, "{out:?}");
    assert_eq!(rsp[0].seq(), seq);
    rsp[0].decode_body().unwrap()
}

/// The one 0x0731 sent to a file_server: its link and body.
fn transfer_req(out: &[A]) -> (LinkId, ImFileTransferReq) {
    let reqs: Vec<(LinkId, ImFileTransferReq)> = out
        .iter()
        .filter_map(|a| match a {
            Action::Link(l, p) if p.is(Command::OtherFileTransferReq.key()) => {
                Some((*l, p.decode_body().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(reqs.len(), 1, "{out:?}");
    reqs.into_iter().next().unwrap()
}

fn task_created(app: &mut MsgApp<u32>, link: LinkId, req: &ImFileTransferReq) -> Vec<A> {
    let rsp = ImFileTransferRsp {
        result_code: 0,
        from_user_id: req.from_user_id,
        to_user_id: req.to_user_id,
        file_name: Some(req.file_name.clone()),
        file_size: Some(req.file_size),
        task_id: Some(TASK.into()),
        trans_mode: Some(req.trans_mode),
        attach_data: req.attach_data.clone(),
    };
    app.upstream_pdu(link, &Command::OtherFileTransferRsp.pdu(0, &rsp))
}

#[test]
fn offline_offer_gets_a_task_and_the_receivers_pcs_hear_of_it() {
    let mut app = app();
    log_in(&mut app, 1, ALICE, ClientType::Windows);
    log_in(&mut app, 2, BOB, ClientType::Windows);
    log_in(&mut app, 3, BOB, ClientType::Android);
    let out = app.client_pdu(1, &Command::FileRequest.pdu(7, &offer(BOB, OFFLINE)));
    let (link, req) = transfer_req(&out);
    assert_eq!(
        (
            req.from_user_id,
            req.to_user_id,
            req.trans_mode,
            req.file_size
        ),
        (ALICE, BOB, OFFLINE, 40_000),
        "the sender is the session's user"
    );
    assert!(req.attach_data.is_some(), "request id attached");
    let out = task_created(&mut app, link, &req);
    let rsp = file_rsp(&out, 1, 7);
    assert_eq!(
        (
            rsp.result_code,
            rsp.task_id.as_str(),
            rsp.trans_mode,
            rsp.to_user_id
        ),
        (0, TASK, OFFLINE, BOB)
    );
    let port = if link == FILE1 { 8600 } else { 9600 };
    assert_eq!(rsp.ip_addr_list[0].port, port, "that file_server's address");
    let notify: ImFileNotify = sent_to(&out, 2, Command::FileNotify)[0]
        .decode_body()
        .unwrap();
    assert_eq!(
        (
            notify.from_user_id,
            notify.task_id.as_str(),
            notify.offline_ready
        ),
        (ALICE, TASK, 0)
    );
    assert!(
        sent_to(&out, 3, Command::FileNotify).is_empty(),
        "not to phones"
    );
    assert_eq!(upstream_of(&out, ROUTE, Command::FileNotify).len(), 1);
    assert_eq!(app.stats().files_offered, 1);
}

#[test]
fn tasks_go_to_the_file_servers_in_turn() {
    let mut app = app();
    log_in(&mut app, 1, ALICE, ClientType::Windows);
    let mut links = Vec::new();
    for seq in 1..=4 {
        let out = app.client_pdu(1, &Command::FileRequest.pdu(seq, &offer(BOB, OFFLINE)));
        links.push(transfer_req(&out).0);
    }
    assert_eq!(links, [FILE2, FILE1, FILE2, FILE1]);
    // A file_server that went down takes no more, and what it had is
    // answered with a failure.
    let _ = app.link_down(FILE2);
    let out = app.client_pdu(1, &Command::FileRequest.pdu(9, &offer(BOB, OFFLINE)));
    assert_eq!(transfer_req(&out).0, FILE1);
}

#[test]
fn online_mode_follows_the_receivers_pc() {
    let mut app = app();
    log_in(&mut app, 1, ALICE, ClientType::Windows);
    // Bob's PC is here: online at once.
    log_in(&mut app, 2, BOB, ClientType::Mac);
    let out = app.client_pdu(1, &Command::FileRequest.pdu(3, &offer(BOB, ONLINE)));
    assert_eq!(transfer_req(&out).1.trans_mode, ONLINE);
    // Carol (30) is not here: route_server is asked.
    for (status, mode) in [(1, ONLINE), (2, OFFLINE)] {
        let out = app.client_pdu(1, &Command::FileRequest.pdu(4, &offer(30, ONLINE)));
        let [Message::BuddyListUsersStatusRequest(q)] =
            &upstream_of(&out, ROUTE, Command::BuddyListUsersStatusRequest)[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!((q.user_id, q.user_id_list.as_slice()), (ALICE, &[30][..]));
        let rsp = ImUsersStatRsp {
            user_id: ALICE,
            user_stat_list: vec![UserStat {
                user_id: 30,
                status,
                mobile_sessions: None,
            }],
            attach_data: q.attach_data.clone(),
        };
        let out = app.upstream_pdu(ROUTE, &Command::BuddyListUsersStatusResponse.pdu(4, &rsp));
        let (_, req) = transfer_req(&out);
        assert_eq!(req.trans_mode, mode, "status {status}");
        assert!(sent_to(&out, 1, Command::BuddyListUsersStatusResponse).is_empty());
    }
    // route_server cannot say: offline.
    let out = app.client_pdu(1, &Command::FileRequest.pdu(5, &offer(30, ONLINE)));
    let [Message::BuddyListUsersStatusRequest(q)] =
        &upstream_of(&out, ROUTE, Command::BuddyListUsersStatusRequest)[..]
    else {
        panic!()
    };
    let failed = ImRequestFailed {
        service_id: 2,
        command_id: 0x020a,
        result_code: 1,
        reason: None,
        attach_data: q.attach_data.clone(),
    };
    let out = app.upstream_pdu(ROUTE, &Command::OtherRequestFailed.pdu(5, &failed));
    assert_eq!(transfer_req(&out).1.trans_mode, OFFLINE);
    // No answer in time: offline too.
    app.client_pdu(1, &Command::FileRequest.pdu(6, &offer(30, ONLINE)));
    app.set_time(1_700_000_030);
    let out = app.tick();
    assert_eq!(transfer_req(&out).1.trans_mode, OFFLINE);
}

#[test]
fn every_offer_is_answered_even_when_it_cannot_be_served() {
    let mut app = app();
    log_in(&mut app, 1, ALICE, ClientType::Windows);
    let refused = |app: &mut MsgApp<u32>, req: ImFileReq, seq| {
        let out = app.client_pdu(1, &Command::FileRequest.pdu(seq, &req));
        let rsp = file_rsp(&out, 1, seq);
        assert_eq!(rsp.result_code, 1, "{req:?}");
        assert!(rsp.task_id.is_empty() && rsp.ip_addr_list.is_empty());
        assert!(!out.iter().any(|a| matches!(a, Action::Close { .. })));
    };
    refused(&mut app, offer(ALICE, OFFLINE), 1);
    refused(&mut app, offer(0, OFFLINE), 2);
    refused(
        &mut app,
        ImFileReq {
            file_name: "n".repeat(513),
            ..offer(BOB, OFFLINE)
        },
        3,
    );
    refused(
        &mut app,
        ImFileReq {
            file_size: 0,
            ..offer(BOB, OFFLINE)
        },
        4,
    );
    refused(&mut app, offer(BOB, 7), 5);
    // The file_server refuses.
    let out = app.client_pdu(1, &Command::FileRequest.pdu(6, &offer(BOB, OFFLINE)));
    let (link, req) = transfer_req(&out);
    let rsp = ImFileTransferRsp {
        result_code: 1,
        from_user_id: ALICE,
        to_user_id: BOB,
        file_name: None,
        file_size: None,
        task_id: Some(String::new()),
        trans_mode: Some(OFFLINE),
        attach_data: req.attach_data,
    };
    let out = app.upstream_pdu(link, &Command::OtherFileTransferRsp.pdu(0, &rsp));
    assert_eq!(file_rsp(&out, 1, 6).result_code, 1);
    assert!(upstream_of(&out, ROUTE, Command::FileNotify).is_empty());
    // Its link goes down with the task asked.
    let out = app.client_pdu(1, &Command::FileRequest.pdu(7, &offer(BOB, OFFLINE)));
    let (link, _) = transfer_req(&out);
    let out = app.link_down(link);
    assert_eq!(file_rsp(&out, 1, 7).result_code, 1);
    // No answer in time.
    let out = app.client_pdu(1, &Command::FileRequest.pdu(8, &offer(BOB, OFFLINE)));
    transfer_req(&out);
    app.set_time(1_700_000_030);
    assert_eq!(file_rsp(&app.tick(), 1, 8).result_code, 1);
    // No file_server at all; logins still work.
    let _ = app.link_down(FILE1);
    let _ = app.link_down(FILE2);
    refused(&mut app, offer(BOB, OFFLINE), 9);
    log_in(&mut app, 2, BOB, ClientType::Windows);
}

/// A runtime msg_server (health is defined for `Conn` ids) with one
/// db_proxy link, up.
fn app_conn_view() -> MsgApp<crate::runtime::Conn> {
    let mut app = super::tests::app_with_links(&[(DB, Upstream::Db)]);
    let _ = app.link_up(DB);
    app
}

#[test]
fn health_names_the_file_servers_only_when_configured() {
    let mut problems = Vec::new();
    let mut app = app_conn_view();
    let _ = app.link_down(DB);
    crate::runtime::App::health(&app, &mut problems);
    assert!(
        problems.iter().all(|p| !p.contains("file_server")),
        "{problems:?}"
    );
    let app: MsgApp<crate::runtime::Conn> =
        super::tests::app_with_links(&[(FILE1, Upstream::File)]);
    let mut problems = Vec::new();
    crate::runtime::App::health(&app, &mut problems);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no file_server link up (127.0.0.1:1)")),
        "{problems:?}"
    );
}

#[test]
fn offline_records_are_scoped_and_the_receiver_told() {
    let mut app = app();
    log_in(&mut app, 1, ALICE, ClientType::Windows);
    log_in(&mut app, 2, BOB, ClientType::Windows);
    let add = ImFileAddOfflineReq {
        from_user_id: 77,
        to_user_id: BOB,
        task_id: TASK.into(),
        file_name: "report.pdf".into(),
        file_size: 40_000,
    };
    let out = app.client_pdu(1, &Command::FileAddOfflineReq.pdu(3, &add));
    let [Message::FileAddOfflineReq(stored)] =
        &upstream_of(&out, DB, Command::FileAddOfflineReq)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        stored.from_user_id, ALICE,
        "the sender is the session's user"
    );
    let notify: ImFileNotify = sent_to(&out, 2, Command::FileNotify)[0]
        .decode_body()
        .unwrap();
    assert_eq!((notify.offline_ready, notify.trans_mode), (1, OFFLINE));
    assert_eq!(notify.ip_addr_list.len(), 1);
    assert_eq!(upstream_of(&out, ROUTE, Command::FileNotify).len(), 1);
    // Malformed ones go nowhere.
    for bad in [
        ImFileAddOfflineReq {
            task_id: "../x".into(),
            ..add.clone()
        },
        ImFileAddOfflineReq {
            to_user_id: ALICE,
            ..add.clone()
        },
        ImFileAddOfflineReq {
            file_name: "n".repeat(513),
            ..add.clone()
        },
    ] {
        let out = app.client_pdu(1, &Command::FileAddOfflineReq.pdu(4, &bad));
        assert!(out.is_empty(), "{out:?}");
    }

    // A deletion by the receiver names it as receiver, whatever it says;
    // every file_server is told to remove the file.
    let del = ImFileDelOfflineReq {
        from_user_id: ALICE,
        to_user_id: 55,
        task_id: TASK.into(),
    };
    let out = app.client_pdu(2, &Command::FileDelOfflineReq.pdu(5, &del));
    let [Message::FileDelOfflineReq(d)] = &upstream_of(&out, DB, Command::FileDelOfflineReq)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!((d.from_user_id, d.to_user_id), (ALICE, BOB));
    for link in [FILE1, FILE2] {
        let [Message::OtherFileTaskDelete(t)] =
            &upstream_of(&out, link, Command::OtherFileTaskDelete)[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!((t.task_id.as_str(), t.user_id), (TASK, BOB));
    }
    // The sender may delete its own.
    let del = ImFileDelOfflineReq {
        from_user_id: ALICE,
        to_user_id: BOB,
        task_id: TASK.into(),
    };
    let out = app.client_pdu(1, &Command::FileDelOfflineReq.pdu(6, &del));
    let [Message::FileDelOfflineReq(d)] = &upstream_of(&out, DB, Command::FileDelOfflineReq)[..]
    else {
        panic!()
    };
    assert_eq!((d.from_user_id, d.to_user_id), (ALICE, BOB));
}

#[test]
fn waiting_offline_files_come_with_file_server_addresses() {
    let mut app = app();
    log_in(&mut app, 2, BOB, ClientType::Windows);
    let req = ImFileHasOfflineReq {
        user_id: 1,
        attach_data: None,
    };
    let out = app.client_pdu(2, &Command::FileHasOfflineReq.pdu(11, &req));
    let [Message::FileHasOfflineReq(fwd)] = &upstream_of(&out, DB, Command::FileHasOfflineReq)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(fwd.user_id, BOB);
    let rsp = ImFileHasOfflineRsp {
        user_id: BOB,
        offline_file_list: vec![teamtalk_proto::pb::im::base_define::OfflineFileInfo {
            from_user_id: ALICE,
            task_id: TASK.into(),
            file_name: "report.pdf".into(),
            file_size: 40_000,
        }],
        ip_addr_list: Vec::new(),
        attach_data: fwd.attach_data.clone(),
    };
    let out = app.upstream_pdu(DB, &Command::FileHasOfflineRes.pdu(0, &rsp));
    let back = sent_to(&out, 2, Command::FileHasOfflineRes);
    assert_eq!(back[0].seq(), 11);
    let back: ImFileHasOfflineRsp = back[0].decode_body().unwrap();
    assert_eq!(back.offline_file_list.len(), 1);
    assert_eq!(back.ip_addr_list.len(), 1);
    assert_eq!(back.attach_data, None);
}

#[test]
fn relayed_file_notices_reach_pc_sessions_only() {
    let mut app = app();
    log_in(&mut app, 2, BOB, ClientType::Windows);
    log_in(&mut app, 3, BOB, ClientType::Ios);
    let notify = Command::FileNotify.pdu(
        0,
        &ImFileNotify {
            from_user_id: ALICE,
            to_user_id: BOB,
            file_name: "f".into(),
            file_size: 1,
            task_id: TASK.into(),
            ip_addr_list: vec![],
            trans_mode: ONLINE,
            offline_ready: 0,
        },
    );
    let out = app.upstream_pdu(ROUTE, &notify);
    assert_eq!(out, vec![Action::Send(2, notify)]);
}

#[test]
fn file_server_addresses_are_bounded() {
    let mut app = app();
    let rsp = ImFileServerIpRsp {
        ip_addr_list: (0..20)
            .map(|i| IpAddr {
                ip: if i == 0 {
                    "x".repeat(300)
                } else {
                    format!("10.0.0.{i}")
                },
                port: if i == 1 { 0 } else { 8600 },
            })
            .collect(),
    };
    let _ = app.upstream_pdu(FILE1, &Command::OtherFileServerIpRsp.pdu(0, &rsp));
    log_in(&mut app, 1, ALICE, ClientType::Windows);
    // Round robin: the second offer goes to FILE1.
    let out = app.client_pdu(1, &Command::FileRequest.pdu(1, &offer(BOB, OFFLINE)));
    let (link, req) = transfer_req(&out);
    let (link, req) = if link == FILE1 {
        (link, req)
    } else {
        let out = app.client_pdu(1, &Command::FileRequest.pdu(2, &offer(BOB, OFFLINE)));
        transfer_req(&out)
    };
    let out = task_created(&mut app, link, &req);
    let rsp: ImFileRsp = sent_to(&out, 1, Command::FileResponse)[0]
        .decode_body()
        .unwrap();
    assert_eq!(
        rsp.ip_addr_list.len(),
        crate::rules::files::MAX_FILE_SERVER_ADDRS
    );
    assert!(
        rsp.ip_addr_list
            .iter()
            .all(|a| a.ip.len() < 20 && a.port == 8600)
    );
}
