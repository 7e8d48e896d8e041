//! Unit tests of the msg_server [`MsgApp`], with integers as connection
//! ids.

use bytes::Bytes;
use teamtalk_proto::pb::im::base_define::{ClientType, UserInfo};
use teamtalk_proto::pb::im::group::ImGroupChangeMemberNotify;
use teamtalk_proto::pb::im::login::ImLoginReq;
use teamtalk_proto::pb::im::message::{ImMsgData, ImUnreadMsgCntReq};
use teamtalk_proto::pb::im::server::{ImValidateReq, ImValidateRsp};
use teamtalk_proto::{Attach, Command, Message, Pdu};

use super::app::{Action, MsgApp, Registration, Upstream, UpstreamLink};
use crate::runtime::LinkId;

type A = Action<u32>;

/// The test server's links: one of each kind.
const DB: LinkId = LinkId(0);
const LOGIN: LinkId = LinkId(1);
const ROUTE: LinkId = LinkId(2);

/// A msg_server for unit tests with these upstream links (all at
/// 127.0.0.1:1, none up yet) and its clock set; the one builder every msg
/// test file uses.
pub(super) fn app_with_links<C: Copy + Eq + std::hash::Hash + std::fmt::Debug>(
    links: &[(LinkId, Upstream)],
) -> MsgApp<C> {
    let links = links
        .iter()
        .map(|&(id, kind)| UpstreamLink {
            id,
            kind,
            addr: "127.0.0.1:1".parse().unwrap(),
        })
        .collect();
    let mut app = MsgApp::new(
        Registration {
            ip1: "127.0.0.1".into(),
            ip2: "127.0.0.1".into(),
            port: 8000,
            max_conn_cnt: 10,
            host_name: "test".into(),
            ws_port: None,
            ws_tls: false,
        },
        links,
    );
    app.set_time(1_700_000_000);
    app
}

fn app() -> MsgApp<u32> {
    let mut app = app_with_links(&[
        (DB, Upstream::Db),
        (LOGIN, Upstream::Login),
        (ROUTE, Upstream::Route),
    ]);
    for l in [DB, LOGIN, ROUTE] {
        let _ = app.link_up(l);
    }
    app
}

fn login_pdu(name: &str, client_type: ClientType, seq: u16) -> Pdu {
    Command::LoginReqUserlogin.pdu(
        seq,
        &ImLoginReq {
            user_name: name.into(),
            password: "x".into(),
            online_status: 1,
            client_type: client_type as i32,
            client_version: None,
        },
    )
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

/// Runs a whole login of `conn` as `user_id`, answering db_proxy's validate.
fn log_in(app: &mut MsgApp<u32>, conn: u32, user_id: u32, client_type: ClientType) -> Vec<A> {
    app.client_open(conn);
    let out = app.login_request(conn, &login_pdu("u", client_type, 5));
    let [Message::OtherValidateReq(req)] = &upstream_of(&out, DB, Command::OtherValidateReq)[..]
    else {
        panic!("no validate request in {out:?}");
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
    let mut out = app.upstream_pdu(DB, &Command::OtherValidateRsp.pdu(5, &rsp));
    // The index of the user's groups: none, unless a test says otherwise.
    let mut more = Vec::new();
    answer_groups(app, &out, &[], &mut more);
    out.extend(more);
    out
}

/// Answers every `IMUserGroupsReq` in `seen` with `groups`, appending what
/// the app does.
fn answer_groups(app: &mut MsgApp<u32>, seen: &[A], groups: &[u32], out: &mut Vec<A>) {
    for m in upstream_of(seen, DB, Command::OtherUserGroupsReq) {
        let Message::OtherUserGroupsReq(req) = m else {
            continue;
        };
        let rsp = teamtalk_proto::pb::im::ext::ImUserGroupsRsp {
            user_id: req.user_id,
            group_id_list: groups.to_vec(),
            attach_data: req.attach_data,
        };
        out.extend(app.upstream_pdu(DB, &Command::OtherUserGroupsRsp.pdu(0, &rsp)));
    }
}

#[test]
fn login_refused_while_a_link_is_down() {
    let mut app = app();
    let _ = app.link_down(ROUTE);
    app.client_open(1);
    let out = app.login_request(1, &login_pdu("alice", ClientType::Windows, 3));
    let [Action::Refuse { conn: 1, reply }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(reply.seq(), 3);
    let Ok(Message::LoginResUserlogin(res)) = Message::decode(reply) else {
        panic!()
    };
    assert_eq!(res.result_code, 5, "NO_ROUTE_SERVER");
}

#[test]
fn login_accepts_and_announces_presence() {
    let mut app = app();
    let out = log_in(&mut app, 1, 42, ClientType::Windows);
    let accept = out
        .iter()
        .find_map(|a| match a {
            Action::Accept {
                conn: 1,
                user_id: 42,
                client_type: 1,
                reply,
            } => Some(reply.clone()),
            _ => None,
        })
        .expect("accepted");
    assert_eq!(accept.seq(), 5);
    assert_eq!(
        upstream_of(&out, LOGIN, Command::OtherUserCntUpdate).len(),
        1
    );
    assert_eq!(
        upstream_of(&out, ROUTE, Command::OtherUserStatusUpdate).len(),
        1
    );
    assert_eq!(
        upstream_of(&out, ROUTE, Command::OtherServerKickUser).len(),
        1
    );
    assert_eq!(app.logged_in(), 1);
}

#[test]
fn bad_credentials_refused_with_code_6() {
    let mut app = app();
    app.client_open(1);
    let out = app.login_request(1, &login_pdu("u", ClientType::Windows, 9));
    let [Message::OtherValidateReq(req)] = &upstream_of(&out, DB, Command::OtherValidateReq)[..]
    else {
        panic!()
    };
    let rsp = ImValidateRsp {
        groups: None,
        user_name: "u".into(),
        result_code: 1,
        result_string: None,
        user_info: None,
        attach_data: req.attach_data.clone(),
    };
    let out = app.upstream_pdu(DB, &Command::OtherValidateRsp.pdu(9, &rsp));
    let [Action::Refuse { conn: 1, reply }] = &out[..] else {
        panic!("{out:?}")
    };
    let Ok(Message::LoginResUserlogin(res)) = Message::decode(reply) else {
        panic!()
    };
    assert_eq!((res.result_code, reply.seq()), (6, 9));
}

#[test]
fn duplicate_login_kicks_the_older_session_of_the_same_class() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let _ = log_in(&mut app, 2, 42, ClientType::Android);
    let out = log_in(&mut app, 3, 42, ClientType::Mac);
    let kicked: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Close {
                conn,
                notice: Some(n),
            } if n.is(Command::LoginKickUser.key()) => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(
        kicked,
        vec![1],
        "Mac login displaces the Windows session only"
    );
    assert_eq!(app.logged_in(), 2);
    // The kicked session's close is not counted twice.
    let out = app.client_closed(1);
    assert!(upstream_of(&out, LOGIN, Command::OtherUserCntUpdate).is_empty());
    assert_eq!(app.logged_in(), 2);
}

#[test]
fn message_identity_comes_from_the_session_and_ack_follows_the_store() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let _ = log_in(&mut app, 2, 42, ClientType::Android);
    let _ = log_in(&mut app, 3, 7, ClientType::Windows);
    let spoofed = ImMsgData {
        from_user_id: 999,
        to_session_id: 7,
        msg_id: 55,
        create_time: 1,
        msg_type: 1,
        msg_data: Bytes::from_static(b"hi"),
        attach_data: Some(Bytes::from_static(b"client junk")),
        dedupe_key: None,
        duplicate: None,
    };
    let out = app.client_pdu(1, &Command::MsgData.pdu(77, &spoofed));
    assert!(
        sent_to(&out, 1, Command::MsgDataAck).is_empty(),
        "no ack before the store"
    );
    let [Message::MsgData(fwd)] = &upstream_of(&out, DB, Command::MsgData)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(fwd.from_user_id, 42);
    assert_eq!(fwd.msg_id, 0);
    assert_eq!(fwd.create_time, 1_700_000_000);
    let mut stored = fwd.clone();
    stored.msg_id = 1234;
    let out = app.upstream_pdu(DB, &Command::MsgData.pdu(77, &stored));
    let [ack] = &sent_to(&out, 1, Command::MsgDataAck)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(ack.seq(), 77);
    let Ok(Message::MsgDataAck(ack)) = Message::decode(ack) else {
        panic!()
    };
    assert_eq!((ack.user_id, ack.session_id, ack.msg_id), (42, 7, 1234));
    // Recipient and the sender's other device get it; the sender's own
    // session does not; route_server gets a copy for other msg_servers.
    assert_eq!(sent_to(&out, 3, Command::MsgData).len(), 1);
    assert_eq!(sent_to(&out, 2, Command::MsgData).len(), 1);
    assert!(sent_to(&out, 1, Command::MsgData).is_empty());
    let relayed = upstream_of(&out, ROUTE, Command::MsgData);
    let [Message::MsgData(r)] = &relayed[..] else {
        panic!()
    };
    assert_eq!(
        (r.from_user_id, r.msg_id, r.attach_data.clone()),
        (42, 1234, None)
    );
}

#[test]
fn the_time_a_request_waits_upstream_is_measured_in_virtual_time() {
    use crate::runtime::{Input, Now, Out};
    use std::time::{Duration, UNIX_EPOCH};
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let _ = log_in(&mut app, 3, 7, ClientType::Windows);
    let t0 = Now::new(crate::clock::now(), UNIX_EPOCH).plus(Duration::from_secs(1_700_000_000));
    let msg = ImMsgData {
        from_user_id: 42,
        to_session_id: 7,
        msg_id: 0,
        create_time: 1,
        msg_type: 1,
        msg_data: Bytes::from_static(b"hi"),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    let mut out = Out::new();
    let pdu = Command::MsgData.pdu(5, &msg);
    app.step(t0, Input::Pdu { conn: 1, pdu: &pdu }, &mut out);
    let [Message::MsgData(fwd)] = &upstream_of(&out.take(), DB, Command::MsgData)[..] else {
        panic!()
    };
    let mut stored = fwd.clone();
    stored.msg_id = 9;
    // db_proxy answers 7 ms later (virtual time).
    let reply = Command::MsgData.pdu(5, &stored);
    app.step(
        t0.plus(Duration::from_millis(7)),
        Input::LinkPdu(DB, &reply),
        &mut out,
    );
    assert_eq!(sent_to(&out.take(), 1, Command::MsgDataAck).len(), 1);
    let mut scrape = crate::metrics::Scrape::new();
    app.collect_reply_times(&mut scrape);
    let text = scrape.render();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        line("teamtalk_msg_upstream_reply_seconds_count{kind=\"db\"}"),
        "1"
    );
    let sum: f64 = line("teamtalk_msg_upstream_reply_seconds_sum{kind=\"db\"}")
        .parse()
        .unwrap();
    assert!((sum - 0.007).abs() < 1e-9, "{sum}");
    // Nothing went to route_server that waits for a reply.
    assert_eq!(
        line("teamtalk_msg_upstream_reply_seconds_count{kind=\"route\"}"),
        "0"
    );
}

#[test]
fn store_failure_is_not_acked() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let msg = ImMsgData {
        from_user_id: 42,
        to_session_id: 7,
        msg_id: 0,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::from_static(b"x"),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    let out = app.client_pdu(1, &Command::MsgData.pdu(3, &msg));
    let [Message::MsgData(fwd)] = &upstream_of(&out, DB, Command::MsgData)[..] else {
        panic!()
    };
    let out = app.upstream_pdu(DB, &Command::MsgData.pdu(3, fwd));
    assert!(
        sent_to(&out, 1, Command::MsgDataAck).is_empty(),
        "msg_id 0 means not stored: {out:?}"
    );
    assert_failed_and_closed(&out, 1, Command::MsgData, 3);
    assert_eq!(app.stats().messages_refused, 1);
}

/// `conn` got `IMRequestFailed` for `request` with `seq`, then a close:
/// the failure answer of requests whose reply cannot say "failed".
fn assert_failed_and_closed(out: &[A], conn: u32, request: Command, seq: u16) {
    let [failed] = &sent_to(out, conn, Command::OtherRequestFailed)[..] else {
        panic!("no IMRequestFailed in {out:?}")
    };
    assert_eq!(failed.seq(), seq);
    let Ok(Message::OtherRequestFailed(f)) = Message::decode(failed) else {
        panic!()
    };
    assert_eq!(
        (f.service_id, f.command_id),
        (
            u32::from(request.key().service_id),
            u32::from(request.key().command_id)
        )
    );
    assert!(f.result_code != 0);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Close { conn: c, notice: None } if *c == conn)),
        "not closed: {out:?}"
    );
}

#[test]
fn a_message_to_oneself_is_answered_not_dropped() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let msg = ImMsgData {
        from_user_id: 42,
        to_session_id: 42,
        msg_id: 0,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::from_static(b"me"),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    let out = app.client_pdu(1, &Command::MsgData.pdu(6, &msg));
    assert!(upstream_of(&out, DB, Command::MsgData).is_empty());
    assert_failed_and_closed(&out, 1, Command::MsgData, 6);
}

#[test]
fn pending_requests_are_answered_when_the_db_link_dies_or_they_expire() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let req = ImUnreadMsgCntReq {
        user_id: 42,
        attach_data: None,
    };
    let _ = app.client_pdu(1, &Command::MsgUnreadCntRequest.pdu(8, &req));
    let sign = teamtalk_proto::pb::im::buddy::ImChangeSignInfoReq {
        user_id: 42,
        sign_info: "hi".into(),
        attach_data: None,
    };
    let _ = app.client_pdu(1, &Command::BuddyListChangeSignInfoRequest.pdu(9, &sign));
    assert_eq!(app.pending(), 2);
    let out = app.link_down(DB);
    // The reply with a result code says so; the other cannot, so the
    // session hears IMRequestFailed and is closed.
    let [sign_rsp] = &sent_to(&out, 1, Command::BuddyListChangeSignInfoResponse)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(sign_rsp.seq(), 9);
    let Ok(Message::BuddyListChangeSignInfoResponse(r)) = Message::decode(sign_rsp) else {
        panic!()
    };
    assert_ne!(r.result_code, 0);
    assert_failed_and_closed(&out, 1, Command::MsgUnreadCntRequest, 8);
    assert_eq!(app.pending(), 0);

    // Expiry: a request older than the limit is answered by the tick.
    let mut app = self::app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let _ = app.client_pdu(1, &Command::BuddyListChangeSignInfoRequest.pdu(4, &sign));
    app.set_time(1_700_000_000 + 29);
    assert!(app.tick().is_empty());
    app.set_time(1_700_000_000 + 30);
    let out = app.tick();
    assert_eq!(
        sent_to(&out, 1, Command::BuddyListChangeSignInfoResponse).len(),
        1
    );
    assert_eq!(app.pending(), 0);
}

/// Fuzz finding (`msg_app`): a request forwarded on a db link that went
/// down while a second db link stayed up waited for its 30 s limit,
/// though its reply could only have come back on the dead connection.
#[test]
fn a_request_on_a_link_that_dies_is_answered_even_while_its_twin_is_up() {
    const DB2: LinkId = LinkId(3);
    let mut app: MsgApp<u32> = app_with_links(&[
        (DB, Upstream::Db),
        (LOGIN, Upstream::Login),
        (ROUTE, Upstream::Route),
        (DB2, Upstream::Db),
    ]);
    for l in [DB, LOGIN, ROUTE, DB2] {
        let _ = app.link_up(l);
    }
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let sign = teamtalk_proto::pb::im::buddy::ImChangeSignInfoReq {
        user_id: 42,
        sign_info: "hi".into(),
        attach_data: None,
    };
    let out = app.client_pdu(1, &Command::BuddyListChangeSignInfoRequest.pdu(9, &sign));
    assert_eq!(
        upstream_of(&out, DB, Command::BuddyListChangeSignInfoRequest).len(),
        1,
        "the first db link that is up serves it"
    );
    let out = app.link_down(DB);
    let [rsp] = &sent_to(&out, 1, Command::BuddyListChangeSignInfoResponse)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(rsp.seq(), 9);
    assert_eq!(app.pending(), 0);
    // The next request goes to the db link still up, and waits there.
    let out = app.client_pdu(1, &Command::BuddyListChangeSignInfoRequest.pdu(10, &sign));
    assert_eq!(
        upstream_of(&out, DB2, Command::BuddyListChangeSignInfoRequest).len(),
        1
    );
    let out = app.link_down(LOGIN);
    assert!(sent_to(&out, 1, Command::BuddyListChangeSignInfoResponse).is_empty());
    assert_eq!(app.pending(), 1);
}

#[test]
fn request_failed_from_db_proxy_reaches_the_client() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let req = ImUnreadMsgCntReq {
        user_id: 42,
        attach_data: None,
    };
    let out = app.client_pdu(1, &Command::MsgUnreadCntRequest.pdu(5, &req));
    let [Message::MsgUnreadCntRequest(fwd)] =
        &upstream_of(&out, DB, Command::MsgUnreadCntRequest)[..]
    else {
        panic!("{out:?}")
    };
    let failed = crate::rules::failure::request_failed(
        Command::MsgUnreadCntRequest.key(),
        fwd.attach_data.clone(),
        teamtalk_proto::pb::im::ext::RequestFailedCode::RequestFailedServerError,
        "store failed",
        5,
    );
    let out = app.upstream_pdu(DB, &failed);
    assert_failed_and_closed(&out, 1, Command::MsgUnreadCntRequest, 5);
    assert_eq!(app.pending(), 0);
}

#[test]
fn queries_are_scoped_to_the_session_user_and_replies_restore_seq() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let req = ImUnreadMsgCntReq {
        user_id: 999,
        attach_data: None,
    };
    let out = app.client_pdu(1, &Command::MsgUnreadCntRequest.pdu(31, &req));
    let [Action::Link(DB, fwd)] = &out[..] else {
        panic!("{out:?}")
    };
    let Ok(Message::MsgUnreadCntRequest(fwd_req)) = Message::decode(fwd) else {
        panic!()
    };
    assert_eq!(fwd_req.user_id, 42);
    let attach = Attach::decode(fwd_req.attach_data.as_ref().unwrap()).unwrap();
    let rsp = teamtalk_proto::pb::im::message::ImUnreadMsgCntRsp {
        user_id: 42,
        total_cnt: 3,
        unreadinfo_list: vec![],
        attach_data: Some(attach.encode()),
    };
    let out = app.upstream_pdu(DB, &Command::MsgUnreadCntResponse.pdu(31, &rsp));
    let [reply] = &sent_to(&out, 1, Command::MsgUnreadCntResponse)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(reply.seq(), 31);
    let Ok(Message::MsgUnreadCntResponse(r)) = Message::decode(reply) else {
        panic!()
    };
    assert_eq!(
        (r.total_cnt, r.attach_data),
        (3, None),
        "attach cleared for the client"
    );
    // The same reply again is stale: dropped, never misdelivered.
    let out = app.upstream_pdu(DB, &Command::MsgUnreadCntResponse.pdu(31, &rsp));
    assert!(out.is_empty());
    assert_eq!(app.stats().stale_replies, 1);
}

#[test]
fn db_link_down_refuses_pending_logins() {
    let mut app = app();
    app.client_open(1);
    let _ = app.login_request(1, &login_pdu("u", ClientType::Windows, 4));
    let out = app.link_down(DB);
    // The refusal, and login_server told there is no room here.
    let [Action::Refuse { conn: 1, reply }, Action::Link(LOGIN, _)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(upstream_of(&out, LOGIN, Command::OtherMsgServInfo).len(), 1);
    let Ok(Message::LoginResUserlogin(res)) = Message::decode(reply) else {
        panic!()
    };
    assert_eq!(res.result_code, 3, "NO_DB_SERVER");
    assert_eq!(app.pending(), 0);
}

#[test]
fn route_relays_reach_every_local_session_of_the_user() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 7, ClientType::Windows);
    let _ = log_in(&mut app, 2, 7, ClientType::Ios);
    let msg = ImMsgData {
        from_user_id: 42,
        to_session_id: 7,
        msg_id: 9,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::from_static(b"x"),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    let out = app.upstream_pdu(ROUTE, &Command::MsgData.pdu(0, &msg));
    assert_eq!(sent_to(&out, 1, Command::MsgData).len(), 1);
    assert_eq!(sent_to(&out, 2, Command::MsgData).len(), 1);
}

#[test]
fn registration_and_snapshot_on_link_up() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 7, ClientType::Windows);
    let _ = app.link_down(LOGIN);
    let out = app.link_up(LOGIN);
    let [Message::OtherMsgServInfo(info)] =
        &upstream_of(&out, LOGIN, Command::OtherMsgServInfo)[..]
    else {
        panic!()
    };
    assert_eq!(
        (info.cur_conn_cnt, info.max_conn_cnt, info.port),
        (1, 10, 8000)
    );
    let out = app.link_up(ROUTE);
    let [Message::OtherOnlineUserInfo(snap)] =
        &upstream_of(&out, ROUTE, Command::OtherOnlineUserInfo)[..]
    else {
        panic!()
    };
    assert_eq!(snap.user_stat_list.len(), 1);
    assert_eq!(snap.user_stat_list[0].user_id, 7);
}

#[test]
fn registration_waits_until_db_proxy_and_route_server_are_up() {
    // login_server hands clients to registered msg_servers: one that
    // cannot reach db_proxy would refuse every login it was sent.
    let mut app: MsgApp<u32> = app_with_links(&[
        (DB, Upstream::Db),
        (LOGIN, Upstream::Login),
        (ROUTE, Upstream::Route),
    ]);
    let registrations = |out: &Vec<A>| upstream_of(out, LOGIN, Command::OtherMsgServInfo).len();
    assert_eq!(registrations(&app.link_up(LOGIN)), 0);
    assert_eq!(registrations(&app.link_up(DB)), 0);
    assert_eq!(registrations(&app.link_up(ROUTE)), 1, "all up: registered");
    // Once per login link up: route_server flapping does not register
    // again…
    let _ = app.link_down(ROUTE);
    assert_eq!(registrations(&app.link_up(ROUTE)), 0);
    // …a login_server that comes back does.
    let _ = app.link_down(LOGIN);
    assert_eq!(registrations(&app.link_up(LOGIN)), 1);
}

#[test]
fn without_db_proxy_login_server_is_told_there_is_no_room_until_it_is_back() {
    const DB2: LinkId = LinkId(9);
    let mut app: MsgApp<u32> = app_with_links(&[
        (DB, Upstream::Db),
        (DB2, Upstream::Db),
        (LOGIN, Upstream::Login),
        (ROUTE, Upstream::Route),
    ]);
    let announced = |out: &Vec<A>| -> Vec<(u32, u32)> {
        upstream_of(out, LOGIN, Command::OtherMsgServInfo)
            .iter()
            .map(|m| match m {
                Message::OtherMsgServInfo(i) => (i.max_conn_cnt, i.cur_conn_cnt),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let _ = app.link_up(LOGIN);
    let _ = app.link_up(ROUTE);
    let _ = app.link_up(DB2);
    assert_eq!(announced(&app.link_up(DB)), [], "registered once, by DB2");
    let _ = log_in(&mut app, 1, 7, ClientType::Windows);
    // One db_proxy of two down: logins still work here.
    assert_eq!(announced(&app.link_down(DB)), []);
    // The last one down: no room (a full msg_server is never offered),
    // the sessions it has counted.
    assert_eq!(announced(&app.link_down(DB2)), [(0, 1)]);
    // Still none: nothing more to say.
    assert_eq!(announced(&app.tick()), []);
    // A db_proxy back: registered again with the real figures.
    assert_eq!(announced(&app.link_up(DB2)), [(10, 1)]);
    assert_eq!(announced(&app.link_up(DB)), []);
    // A login_server that came back while db_proxy was down is told once
    // db_proxy is up, not before.
    let _ = app.link_down(DB);
    let _ = app.link_down(DB2);
    let _ = app.link_down(LOGIN);
    assert_eq!(announced(&app.link_up(LOGIN)), []);
    assert_eq!(announced(&app.link_up(DB)), [(10, 1)]);
}

#[test]
fn clients_create_temporary_groups_only_and_unknown_commands_are_answered() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 7, ClientType::Windows);
    let mut req = teamtalk_proto::pb::im::group::ImGroupCreateReq {
        user_id: 999,
        group_type: 2,
        group_name: "g".into(),
        group_avatar: "a".into(),
        member_id_list: vec![1],
        attach_data: None,
    };
    // Temporary: forwarded to db_proxy as the session's user.
    let out = app.client_pdu(1, &Command::GroupCreateRequest.pdu(8, &req));
    let [Message::GroupCreateRequest(fwd)] =
        &upstream_of(&out, DB, Command::GroupCreateRequest)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(fwd.user_id, 7);
    // Normal: refused here, with TeamTalk's failure code.
    req.group_type = 1;
    let out = app.client_pdu(1, &Command::GroupCreateRequest.pdu(9, &req));
    assert!(upstream_of(&out, DB, Command::GroupCreateRequest).is_empty());
    let [reply] = &sent_to(&out, 1, Command::GroupCreateResponse)[..] else {
        panic!("{out:?}")
    };
    let Ok(Message::GroupCreateResponse(r)) = Message::decode(reply) else {
        panic!()
    };
    assert_eq!((r.result_code, reply.seq()), (1, 9));
    // A command msg_server does not serve (avatars) gets its failure reply.
    let avatar = teamtalk_proto::pb::im::buddy::ImChangeAvatarReq {
        user_id: 7,
        avatar_url: "x".into(),
        attach_data: None,
    };
    let out = app.client_pdu(1, &Command::BuddyListChangeAvatarRequest.pdu(3, &avatar));
    assert_eq!(
        sent_to(&out, 1, Command::BuddyListChangeAvatarResponse).len(),
        1
    );
    assert_eq!(app.stats().unsupported, 1);
}

/// Logs `conn` in as `user` with `groups` as the user's groups; returns
/// everything the app did.
fn log_in_with_groups(app: &mut MsgApp<u32>, conn: u32, user: u32, groups: &[u32]) -> Vec<A> {
    app.client_open(conn);
    let out = app.login_request(conn, &login_pdu("u", ClientType::Windows, 5));
    let [Message::OtherValidateReq(req)] = &upstream_of(&out, DB, Command::OtherValidateReq)[..]
    else {
        panic!("no validate request in {out:?}");
    };
    let rsp = ImValidateRsp {
        groups: None,
        user_name: req.user_name.clone(),
        result_code: 0,
        result_string: None,
        user_info: Some(UserInfo {
            user_id: user,
            ..UserInfo::default()
        }),
        attach_data: req.attach_data.clone(),
    };
    let mut out = app.upstream_pdu(DB, &Command::OtherValidateRsp.pdu(5, &rsp));
    let mut more = Vec::new();
    answer_groups(app, &out, groups, &mut more);
    out.extend(more);
    out
}

fn subscriptions(actions: &[A]) -> Vec<(bool, Vec<u32>)> {
    upstream_of(actions, ROUTE, Command::OtherGroupSubscription)
        .into_iter()
        .filter_map(|m| match m {
            Message::OtherGroupSubscription(s) => Some((s.subscribe, s.group_id_list)),
            _ => None,
        })
        .collect()
}

fn group_text(from: u32, group: u32) -> ImMsgData {
    ImMsgData {
        from_user_id: from,
        to_session_id: group,
        msg_id: 0,
        create_time: 0,
        msg_type: 0x11,
        msg_data: Bytes::from_static(b"hello group"),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    }
}

#[test]
fn group_messages_are_acked_after_the_store_and_fanned_out_once() {
    let mut app = app();
    let out = log_in_with_groups(&mut app, 1, 7, &[50, 60]);
    assert_eq!(subscriptions(&out), [(true, vec![50, 60])]);
    // The same user's phone: the groups are known already.
    let out = log_in(&mut app, 2, 7, ClientType::Android);
    assert!(upstream_of(&out, DB, Command::OtherUserGroupsReq).is_empty());
    assert_eq!(app.hosted_groups(), 2);
    let _ = log_in_with_groups(&mut app, 3, 8, &[50]);
    let _ = log_in_with_groups(&mut app, 4, 9, &[]);

    let out = app.client_pdu(1, &Command::MsgData.pdu(21, &group_text(999, 50)));
    assert!(
        sent_to(&out, 1, Command::MsgDataAck).is_empty(),
        "not before the store"
    );
    let [Message::MsgData(fwd)] = &upstream_of(&out, DB, Command::MsgData)[..] else {
        panic!("{out:?}")
    };
    assert_eq!((fwd.from_user_id, fwd.to_session_id), (7, 50));
    let mut stored = fwd.clone();
    stored.msg_id = 3;
    let out = app.upstream_pdu(DB, &Command::MsgData.pdu(21, &stored));
    let [ack] = &sent_to(&out, 1, Command::MsgDataAck)[..] else {
        panic!("{out:?}")
    };
    let Ok(Message::MsgDataAck(ack)) = Message::decode(ack) else {
        panic!()
    };
    assert_eq!((ack.session_id, ack.msg_id, ack.session_type), (50, 3, 2));
    // The sender's other session and the other member; not the sending
    // session, not the non-member.
    assert_eq!(sent_to(&out, 2, Command::MsgData).len(), 1);
    assert_eq!(sent_to(&out, 3, Command::MsgData).len(), 1);
    assert!(sent_to(&out, 1, Command::MsgData).is_empty());
    assert!(sent_to(&out, 4, Command::MsgData).is_empty());
    assert_eq!(
        upstream_of(&out, ROUTE, Command::MsgData).len(),
        1,
        "one copy for route"
    );

    // From another msg_server through route_server: every local member.
    let relayed = Command::MsgData.pdu(0, &stored);
    let out = app.upstream_pdu(ROUTE, &relayed);
    for c in [1, 2, 3] {
        assert_eq!(sent_to(&out, c, Command::MsgData).len(), 1, "conn {c}");
    }
    assert!(sent_to(&out, 4, Command::MsgData).is_empty());
}

#[test]
fn member_changes_update_the_index_and_reach_everyone_concerned() {
    use teamtalk_proto::pb::im::group::{ImGroupChangeMemberReq, ImGroupChangeMemberRsp};
    let mut app = app();
    let _ = log_in_with_groups(&mut app, 1, 7, &[50]);
    let _ = log_in_with_groups(&mut app, 2, 8, &[]);
    // 7 adds 8 to group 50.
    let req = ImGroupChangeMemberReq {
        user_id: 7,
        change_type: 1,
        group_id: 50,
        member_id_list: vec![8],
        attach_data: None,
    };
    let out = app.client_pdu(1, &Command::GroupChangeMemberRequest.pdu(4, &req));
    let [Message::GroupChangeMemberRequest(fwd)] =
        &upstream_of(&out, DB, Command::GroupChangeMemberRequest)[..]
    else {
        panic!("{out:?}")
    };
    let rsp = ImGroupChangeMemberRsp {
        user_id: 7,
        change_type: 1,
        result_code: 0,
        group_id: 50,
        cur_user_id_list: vec![7, 8],
        chg_user_id_list: vec![8],
        attach_data: fwd.attach_data.clone(),
    };
    let out = app.upstream_pdu(DB, &Command::GroupChangeMemberResponse.pdu(4, &rsp));
    assert_eq!(
        sent_to(&out, 1, Command::GroupChangeMemberResponse).len(),
        1
    );
    assert_eq!(sent_to(&out, 1, Command::GroupChangeMemberNotify).len(), 1);
    assert_eq!(sent_to(&out, 2, Command::GroupChangeMemberNotify).len(), 1);
    assert_eq!(
        upstream_of(&out, ROUTE, Command::GroupChangeMemberNotify).len(),
        1
    );
    // Adding 8 again changes nothing: answered, not announced.
    let out = app.client_pdu(1, &Command::GroupChangeMemberRequest.pdu(5, &req));
    let [Message::GroupChangeMemberRequest(fwd)] =
        &upstream_of(&out, DB, Command::GroupChangeMemberRequest)[..]
    else {
        panic!("{out:?}")
    };
    let unchanged = ImGroupChangeMemberRsp {
        chg_user_id_list: Vec::new(),
        attach_data: fwd.attach_data.clone(),
        ..rsp.clone()
    };
    let out = app.upstream_pdu(DB, &Command::GroupChangeMemberResponse.pdu(5, &unchanged));
    assert_eq!(
        sent_to(&out, 1, Command::GroupChangeMemberResponse).len(),
        1
    );
    assert!(sent_to(&out, 2, Command::GroupChangeMemberNotify).is_empty());
    assert!(upstream_of(&out, ROUTE, Command::GroupChangeMemberNotify).is_empty());
    // 8 now receives the group's messages.
    let mut m = group_text(7, 50);
    m.msg_id = 1;
    let out = app.upstream_pdu(ROUTE, &Command::MsgData.pdu(0, &m));
    assert_eq!(sent_to(&out, 2, Command::MsgData).len(), 1);

    // Removed elsewhere (relayed): 8 leaves; 7 leaves too, so the group is
    // no longer hosted here.
    let n = ImGroupChangeMemberNotify {
        user_id: 99,
        change_type: 2,
        group_id: 50,
        cur_user_id_list: vec![99],
        chg_user_id_list: vec![7, 8],
    };
    let out = app.upstream_pdu(ROUTE, &Command::GroupChangeMemberNotify.pdu(0, &n));
    assert_eq!(sent_to(&out, 1, Command::GroupChangeMemberNotify).len(), 1);
    assert_eq!(sent_to(&out, 2, Command::GroupChangeMemberNotify).len(), 1);
    assert_eq!(subscriptions(&out), [(false, vec![50])]);
    let out = app.upstream_pdu(ROUTE, &Command::MsgData.pdu(0, &m));
    assert!(out.is_empty(), "no member here any more: {out:?}");
}

/// A member change that overtakes the user's group list at login: the
/// list may predate the change, so it is asked for again, and the later
/// answer (with the change) is what the index keeps.
#[test]
fn a_member_change_during_the_group_load_loads_again() {
    use teamtalk_proto::pb::im::group::ImGroupChangeMemberNotify;
    let mut app = app();
    app.client_open(1);
    let out = app.login_request(1, &login_pdu("u", ClientType::Windows, 5));
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
            user_id: 7,
            ..UserInfo::default()
        }),
        attach_data: req.attach_data.clone(),
    };
    let first_load = app.upstream_pdu(DB, &Command::OtherValidateRsp.pdu(5, &rsp));
    assert_eq!(
        upstream_of(&first_load, DB, Command::OtherUserGroupsReq).len(),
        1
    );
    // User 7 is added to group 60 before the list arrives.
    let n = ImGroupChangeMemberNotify {
        user_id: 1,
        change_type: 1,
        group_id: 60,
        cur_user_id_list: vec![1, 7],
        chg_user_id_list: vec![7],
    };
    let out = app.upstream_pdu(ROUTE, &Command::GroupChangeMemberNotify.pdu(0, &n));
    assert_eq!(sent_to(&out, 1, Command::GroupChangeMemberNotify).len(), 1);
    let second_load = upstream_of(&out, DB, Command::OtherUserGroupsReq);
    assert_eq!(second_load.len(), 1, "asked again: {out:?}");
    // The stale list, then the fresh one.
    let mut more = Vec::new();
    answer_groups(&mut app, &first_load, &[], &mut more);
    answer_groups(&mut app, &out, &[60], &mut more);
    assert_eq!(subscriptions(&more), [(true, vec![60])]);
    assert_eq!(app.hosted_groups(), 1);
    // A change about a user whose groups are loaded asks nothing.
    let n = ImGroupChangeMemberNotify { group_id: 61, ..n };
    let out = app.upstream_pdu(ROUTE, &Command::GroupChangeMemberNotify.pdu(0, &n));
    assert!(upstream_of(&out, DB, Command::OtherUserGroupsReq).is_empty());
    assert_eq!(subscriptions(&out), [(true, vec![61])]);
}

/// Sends `conn`'s login and returns the validate request it made.
fn validate_request(app: &mut MsgApp<u32>, conn: u32) -> ImValidateReq {
    app.client_open(conn);
    let out = app.login_request(conn, &login_pdu("u", ClientType::Windows, 5));
    let [Message::OtherValidateReq(req)] = &upstream_of(&out, DB, Command::OtherValidateReq)[..]
    else {
        panic!("no validate request in {out:?}");
    };
    req.clone()
}

/// Answers `req` as db_proxy: `user` accepted, with `groups` in the reply
/// (our db_proxy's field) or none (a C++ db_proxy).
fn validated_with_groups(
    app: &mut MsgApp<u32>,
    req: &ImValidateReq,
    user: u32,
    groups: Option<&[u32]>,
) -> Vec<A> {
    let rsp = ImValidateRsp {
        groups: groups.map(|g| teamtalk_proto::pb::im::server::ImValidateGroups {
            group_id_list: g.to_vec(),
        }),
        user_name: req.user_name.clone(),
        result_code: 0,
        result_string: None,
        user_info: Some(UserInfo {
            user_id: user,
            ..UserInfo::default()
        }),
        attach_data: req.attach_data.clone(),
    };
    app.upstream_pdu(DB, &Command::OtherValidateRsp.pdu(5, &rsp))
}

/// Our db_proxy sends the groups with the login: indexed at once, no
/// second request; an empty list is a list (no groups), not a missing one.
#[test]
fn groups_that_come_with_the_login_need_no_request() {
    let mut app = app();
    let req = validate_request(&mut app, 1);
    let out = validated_with_groups(&mut app, &req, 7, Some(&[50, 60]));
    assert!(matches!(
        out.last(),
        Some(Action::Accept {
            conn: 1,
            user_id: 7,
            ..
        })
    ));
    assert!(upstream_of(&out, DB, Command::OtherUserGroupsReq).is_empty());
    assert_eq!(subscriptions(&out), [(true, vec![50, 60])]);
    assert_eq!(app.hosted_groups(), 2);
    let req = validate_request(&mut app, 2);
    let out = validated_with_groups(&mut app, &req, 8, Some(&[]));
    assert!(upstream_of(&out, DB, Command::OtherUserGroupsReq).is_empty());
    assert!(subscriptions(&out).is_empty());
    // A C++ db_proxy sends none: asked as before.
    let req = validate_request(&mut app, 3);
    let out = validated_with_groups(&mut app, &req, 9, None);
    assert_eq!(upstream_of(&out, DB, Command::OtherUserGroupsReq).len(), 1);
    app.check_invariants().unwrap();
}

/// The groups in a login's reply were read before the user was online
/// here: a change-member notice about the user that passes meanwhile
/// (and so could not be applied) makes msg_server ask for them again; one
/// about somebody else does not.
#[test]
fn a_member_change_during_the_login_makes_its_groups_asked_again() {
    let mut app = app();
    // Somebody online, so the notice has a session to reach.
    let _ = log_in(&mut app, 9, 1, ClientType::Windows);
    let seven = validate_request(&mut app, 1);
    let eight = validate_request(&mut app, 2);
    let n = ImGroupChangeMemberNotify {
        user_id: 1,
        change_type: 1,
        group_id: 60,
        cur_user_id_list: vec![1, 7],
        chg_user_id_list: vec![7],
    };
    let _ = app.upstream_pdu(ROUTE, &Command::GroupChangeMemberNotify.pdu(0, &n));
    // User 7's reply still lacks group 60: not trusted, asked again.
    let out = validated_with_groups(&mut app, &seven, 7, Some(&[50]));
    assert!(subscriptions(&out).is_empty(), "{out:?}");
    let mut more = Vec::new();
    answer_groups(&mut app, &out, &[50, 60], &mut more);
    assert_eq!(subscriptions(&more), [(true, vec![50, 60])]);
    // User 8 was not concerned: the reply's groups are used.
    let out = validated_with_groups(&mut app, &eight, 8, Some(&[70]));
    assert!(upstream_of(&out, DB, Command::OtherUserGroupsReq).is_empty());
    assert_eq!(subscriptions(&out), [(true, vec![70])]);
    // A login sent after the change trusts its reply.
    let again = validate_request(&mut app, 3);
    let out = validated_with_groups(&mut app, &again, 7, Some(&[50, 60]));
    assert!(upstream_of(&out, DB, Command::OtherUserGroupsReq).is_empty());
    app.check_invariants().unwrap();
}

/// Fuzz finding (`msg_app`, corpus `crash-groups-retry-of-closing-session`):
/// a session the App closed stayed logged in until the runner reported the
/// connection gone, so a groups load that had failed for its user was
/// asked of db_proxy again at every tick meanwhile. Now the close logs the
/// session out at once: offline upstream, groups forgotten, nothing retried,
/// and the connection's end announces nothing twice.
#[test]
fn a_session_the_app_closes_is_logged_out_at_once() {
    for close in ["logout", "undecodable"] {
        let mut app = app();
        app.client_open(1);
        let out = app.login_request(1, &login_pdu("u", ClientType::Windows, 5));
        let [Message::OtherValidateReq(req)] =
            &upstream_of(&out, DB, Command::OtherValidateReq)[..]
        else {
            panic!("no validate request in {out:?}");
        };
        let rsp = ImValidateRsp {
            groups: None,
            user_name: req.user_name.clone(),
            result_code: 0,
            result_string: None,
            user_info: Some(UserInfo {
                user_id: 7,
                ..UserInfo::default()
            }),
            attach_data: req.attach_data.clone(),
        };
        let out = app.upstream_pdu(DB, &Command::OtherValidateRsp.pdu(5, &rsp));
        assert_eq!(upstream_of(&out, DB, Command::OtherUserGroupsReq).len(), 1);
        // db_proxy never answers the groups: the load expires and is due
        // again at the next tick.
        app.set_time(1_700_000_000 + 3600);
        let _ = app.tick();
        assert_eq!(app.pending(), 0);
        let out = match close {
            "logout" => app.client_pdu(
                1,
                &Command::LoginReqLoginout.pdu(6, &teamtalk_proto::pb::im::login::ImLogoutReq {}),
            ),
            _ => app.client_pdu(
                1,
                &Pdu::new(
                    Command::MsgUnreadCntRequest.key(),
                    6,
                    Bytes::from_static(&[0xff, 0xff]),
                ),
            ),
        };
        assert!(
            matches!(out.last(), Some(Action::Close { conn: 1, .. })),
            "{close}: {out:?}"
        );
        assert_eq!(
            upstream_of(&out, LOGIN, Command::OtherUserCntUpdate).len(),
            1
        );
        assert_eq!(
            upstream_of(&out, ROUTE, Command::OtherUserStatusUpdate).len(),
            1
        );
        assert_eq!(app.logged_in(), 0);
        app.check_invariants().unwrap();
        let out = app.tick();
        assert!(
            upstream_of(&out, DB, Command::OtherUserGroupsReq).is_empty(),
            "{close}: the closing session's groups asked again: {out:?}"
        );
        assert_eq!(app.pending(), 0);
        // What it sends before the runner closes it is not its user's.
        let out = app.client_pdu(
            1,
            &Command::MsgUnreadCntRequest.pdu(7, &ImUnreadMsgCntReq::default()),
        );
        assert!(out.is_empty(), "{close}: {out:?}");
        let out = app.client_closed(1);
        assert!(out.is_empty(), "{close}: offline announced twice: {out:?}");
        app.check_invariants().unwrap();
    }
}

#[test]
fn a_users_last_session_takes_their_groups_along() {
    let mut app = app();
    let _ = log_in_with_groups(&mut app, 1, 7, &[50]);
    let _ = log_in(&mut app, 2, 7, ClientType::Android);
    assert!(
        subscriptions(&app.client_closed(1)).is_empty(),
        "one session left"
    );
    assert_eq!(subscriptions(&app.client_closed(2)), [(false, vec![50])]);
    assert_eq!(app.hosted_groups(), 0);
    // Reconnecting route_server gets the whole set (empty here).
    let out = app.link_up(ROUTE);
    assert_eq!(subscriptions(&out), [(true, vec![])]);
}

#[test]
fn presence_pushes_go_to_pc_sessions_that_asked_about_users() {
    use teamtalk_proto::pb::im::base_define::UserStat;
    use teamtalk_proto::pb::im::buddy::{ImAllUserReq, ImUserStatNotify};
    let mut app = app();
    let _ = log_in(&mut app, 1, 7, ClientType::Windows);
    let _ = log_in(&mut app, 2, 8, ClientType::Windows);
    let _ = log_in(&mut app, 3, 9, ClientType::Android);
    let ask = ImAllUserReq {
        user_id: 7,
        latest_update_time: 0,
        attach_data: None,
    };
    let _ = app.client_pdu(1, &Command::BuddyListAllUserRequest.pdu(2, &ask));
    let _ = app.client_pdu(3, &Command::BuddyListAllUserRequest.pdu(2, &ask));
    let notify = ImUserStatNotify {
        user_stat: UserStat {
            user_id: 42,
            status: 1,
            mobile_sessions: None,
        },
    };
    let out = app.upstream_pdu(ROUTE, &Command::BuddyListStatusNotify.pdu(0, &notify));
    assert_eq!(
        sent_to(&out, 1, Command::BuddyListStatusNotify).len(),
        1,
        "asked, PC"
    );
    assert!(
        sent_to(&out, 2, Command::BuddyListStatusNotify).is_empty(),
        "never asked"
    );
    assert!(
        sent_to(&out, 3, Command::BuddyListStatusNotify).is_empty(),
        "mobile"
    );
    let _ = app.client_closed(1);
    let out = app.upstream_pdu(ROUTE, &Command::BuddyListStatusNotify.pdu(0, &notify));
    assert!(out.is_empty(), "a closed watcher gets nothing: {out:?}");
}

#[test]
fn overlong_credentials_are_refused_at_the_door() {
    let mut app = app();
    app.client_open(1);
    let long = "x".repeat(super::app::MAX_CREDENTIAL_LEN + 1);
    let out = app.login_request(1, &login_pdu(&long, ClientType::Windows, 2));
    assert!(upstream_of(&out, DB, Command::OtherValidateReq).is_empty());
    let [Action::Refuse { conn: 1, reply }] = &out[..] else {
        panic!("{out:?}")
    };
    let Ok(Message::LoginResUserlogin(res)) = Message::decode(reply) else {
        panic!()
    };
    assert_eq!(res.result_code, 6, "DB_VALIDATE_FAILED");
}

#[test]
fn a_pending_login_is_refused_before_the_clients_own_deadline() {
    let mut app = app();
    app.client_open(1);
    let _ = app.login_request(1, &login_pdu("u", ClientType::Windows, 4));
    app.set_time(1_700_000_000 + 9);
    assert!(app.tick().is_empty());
    app.set_time(1_700_000_000 + 10);
    let out = app.tick();
    let [Action::Refuse { conn: 1, reply }] = &out[..] else {
        panic!("{out:?}")
    };
    let Ok(Message::LoginResUserlogin(res)) = Message::decode(reply) else {
        panic!()
    };
    assert_eq!(res.result_code, 3, "NO_DB_SERVER");
}

#[test]
fn messages_over_the_rate_are_answered_and_not_stored() {
    let mut app = app().with_limits(super::app::SessionLimits {
        messages_per_second: Some(2),
    });
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let msg = ImMsgData {
        from_user_id: 42,
        to_session_id: 7,
        msg_id: 0,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::from_static(b"x"),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    let mut stored = 0;
    let mut refused = 0;
    for seq in 0..5 {
        let out = app.client_pdu(1, &Command::MsgData.pdu(seq, &msg));
        stored += upstream_of(&out, DB, Command::MsgData).len();
        refused += sent_to(&out, 1, Command::OtherRequestFailed).len();
        assert!(
            !out.iter().any(|a| matches!(a, Action::Close { .. })),
            "never closed for speed"
        );
    }
    assert_eq!((stored, refused), (2, 3));
    assert_eq!(app.stats().rate_limited, 3);
    // The next second starts afresh.
    app.set_time(1_700_000_001);
    let out = app.client_pdu(1, &Command::MsgData.pdu(9, &msg));
    assert_eq!(upstream_of(&out, DB, Command::MsgData).len(), 1);
}

/// Runs one client PDU through `step`, as the runtime does (so credit is
/// accounted).
fn step_pdu(app: &mut MsgApp<u32>, conn: u32, pdu: &Pdu) -> Vec<A> {
    let mut out = crate::runtime::Out::new();
    let now = crate::runtime::Now::new(crate::clock::now(), std::time::UNIX_EPOCH)
        .plus(std::time::Duration::from_secs(1_700_000_000));
    app.step(now, crate::runtime::Input::Pdu { conn, pdu }, &mut out);
    out.take()
}

fn grants(actions: &[A], conn: u32) -> u32 {
    actions
        .iter()
        .map(|a| match a {
            Action::Grant(c, n) if *c == conn => *n,
            _ => 0,
        })
        .sum()
}

#[test]
fn credit_is_paid_back_when_a_pdu_is_dealt_with() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    // Answered here: paid back at once.
    let time = Command::MsgTimeRequest.pdu(3, &teamtalk_proto::pb::im::message::ImClientTimeReq {});
    assert_eq!(grants(&step_pdu(&mut app, 1, &time), 1), 1);
    // Waiting upstream: paid back with the reply.
    let req = ImUnreadMsgCntReq {
        user_id: 42,
        attach_data: None,
    };
    let out = step_pdu(&mut app, 1, &Command::MsgUnreadCntRequest.pdu(4, &req));
    assert_eq!(grants(&out, 1), 0);
    let [Message::MsgUnreadCntRequest(fwd)] =
        &upstream_of(&out, DB, Command::MsgUnreadCntRequest)[..]
    else {
        panic!("{out:?}")
    };
    let rsp = teamtalk_proto::pb::im::message::ImUnreadMsgCntRsp {
        user_id: 42,
        total_cnt: 0,
        unreadinfo_list: vec![],
        attach_data: fwd.attach_data.clone(),
    };
    let out = app.upstream_pdu(DB, &Command::MsgUnreadCntResponse.pdu(4, &rsp));
    assert_eq!(grants(&out, 1), 1);
}

#[test]
fn a_session_with_too_many_bytes_in_flight_is_not_paid_until_replies_return() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let big = ImMsgData {
        from_user_id: 42,
        to_session_id: 7,
        msg_id: 0,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::from(vec![b'x'; 300 << 10]),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    // Four 300 KB messages: all forwarded (each had a credit), none paid
    // back yet (they wait for db_proxy).
    let mut forwarded = Vec::new();
    for seq in 0..4 {
        let out = step_pdu(&mut app, 1, &Command::MsgData.pdu(seq, &big));
        assert_eq!(grants(&out, 1), 0);
        forwarded.extend(upstream_of(&out, DB, Command::MsgData));
    }
    assert_eq!(forwarded.len(), 4);
    // 1.2 MB in flight, over the session's budget: even a PDU answered at
    // once is not paid back (the socket stays unread until replies come).
    let time = Command::MsgTimeRequest.pdu(9, &teamtalk_proto::pb::im::message::ImClientTimeReq {});
    let out = step_pdu(&mut app, 1, &time);
    assert_eq!(
        sent_to(&out, 1, Command::MsgTimeResponse).len(),
        1,
        "still answered"
    );
    assert_eq!(grants(&out, 1), 0, "owed");
    let mut paid = 0;
    for (i, m) in forwarded.into_iter().enumerate() {
        let Message::MsgData(mut stored) = m else {
            panic!()
        };
        stored.msg_id = i as u32 + 1;
        let out = app.upstream_pdu(DB, &Command::MsgData.pdu(i as u16, &stored));
        paid += grants(&out, 1);
    }
    assert_eq!(paid, 5, "every credit comes back once the bytes are stored");
}

#[test]
fn a_resend_carries_the_same_dedupe_key_and_a_duplicate_is_acked() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 42, ClientType::Windows);
    let m = ImMsgData {
        from_user_id: 42,
        to_session_id: 7,
        msg_id: 123,
        create_time: 1_600_000_000,
        msg_type: 1,
        msg_data: Bytes::from_static(b"once"),
        attach_data: None,
        dedupe_key: Some(Bytes::from_static(b"client junk")),
        duplicate: Some(true),
    };
    let key_of = |app: &mut MsgApp<u32>, m: &ImMsgData, seq| {
        let out = app.client_pdu(1, &Command::MsgData.pdu(seq, m));
        let [Message::MsgData(fwd)] = &upstream_of(&out, DB, Command::MsgData)[..] else {
            panic!("{out:?}")
        };
        assert_eq!(fwd.duplicate, None, "a client cannot say duplicate");
        fwd.clone()
    };
    let first = key_of(&mut app, &m, 1);
    let again = key_of(&mut app, &m, 2);
    assert_eq!(first.dedupe_key.as_ref().map(Bytes::len), Some(16));
    assert_eq!(first.dedupe_key, again.dedupe_key);
    let other = key_of(
        &mut app,
        &ImMsgData {
            msg_data: Bytes::from_static(b"twice"),
            ..m.clone()
        },
        3,
    );
    assert_ne!(first.dedupe_key, other.dedupe_key);
    // The client's time leads the key, so a conversation's keys ascend and
    // the store's index takes them at its end (docs/protocol.md).
    let key = first.dedupe_key.clone().unwrap();
    assert_eq!(key[..4], 1_600_000_000u32.to_be_bytes());
    let later = key_of(
        &mut app,
        &ImMsgData {
            create_time: 1_600_000_001,
            ..m.clone()
        },
        4,
    );
    assert!(later.dedupe_key.unwrap() > key);

    // db_proxy says the second was stored before: acked with the first id,
    // and nothing extension-only reaches the clients.
    let mut stored = again;
    stored.msg_id = 77;
    stored.duplicate = Some(true);
    let out = app.upstream_pdu(DB, &Command::MsgData.pdu(2, &stored));
    let [ack] = &sent_to(&out, 1, Command::MsgDataAck)[..] else {
        panic!("{out:?}")
    };
    let Ok(Message::MsgDataAck(ack)) = Message::decode(ack) else {
        panic!()
    };
    assert_eq!(ack.msg_id, 77);
    let [Message::MsgData(relayed)] = &upstream_of(&out, ROUTE, Command::MsgData)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (relayed.dedupe_key.clone(), relayed.duplicate),
        (None, None)
    );
    assert_eq!(app.stats().duplicates, 1);
}

#[test]
fn the_clients_address_goes_to_db_proxys_limiter() {
    let mut app = app();
    app.client_open_from(1, "192.0.2.7:5000".parse().unwrap());
    let out = app.login_request(1, &login_pdu("u", ClientType::Windows, 1));
    let [Message::OtherValidateReq(req)] = &upstream_of(&out, DB, Command::OtherValidateReq)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(req.client_addr.as_deref(), Some("192.0.2.7"));
}

// ----- the admin API's instructions ---------------------------------------

#[test]
fn the_administration_lists_and_kicks_every_session_of_a_user() {
    let mut app = app();
    let _ = log_in(&mut app, 1, 7, ClientType::Windows);
    let _ = log_in(&mut app, 2, 7, ClientType::Android);
    let _ = log_in(&mut app, 3, 8, ClientType::Windows);
    let mut types: Vec<u32> = app.user_sessions(7).iter().map(|s| s.client_type).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [ClientType::Windows as u32, ClientType::Android as u32]
    );
    assert!(app.user_sessions(9).is_empty());

    let (n, out) = app.kick_user(7);
    assert_eq!(n, 2);
    let closed: Vec<u32> = out
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn, notice } => {
                let notice = notice.as_ref().expect("a kick notice");
                assert!(notice.is(Command::LoginKickUser.key()));
                Some(*conn)
            }
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 2);
    assert!(closed.contains(&1) && closed.contains(&2));
    // route_server learns they are gone.
    assert!(!upstream_of(&out, ROUTE, Command::OtherUserStatusUpdate).is_empty());
    assert!(app.user_sessions(7).is_empty());
    assert_eq!(app.user_sessions(8).len(), 1);
    assert_eq!(app.kick_user(7).0, 0, "nobody left to kick");
}

#[test]
fn kicks_and_member_notices_from_db_proxy_are_instructions_not_replies() {
    let mut app = app();
    let _ = log_in_with_groups(&mut app, 1, 7, &[]);
    let _ = log_in(&mut app, 2, 8, ClientType::Mac);
    // db_proxy's admin API adds 7 and 8 to group 40.
    let notify = ImGroupChangeMemberNotify {
        user_id: 7,
        change_type: 1,
        group_id: 40,
        cur_user_id_list: vec![7, 8],
        chg_user_id_list: vec![7, 8],
    };
    let out = app.upstream_pdu(DB, &Command::GroupChangeMemberNotify.pdu(0, &notify));
    assert_eq!(sent_to(&out, 1, Command::GroupChangeMemberNotify).len(), 1);
    assert_eq!(sent_to(&out, 2, Command::GroupChangeMemberNotify).len(), 1);
    // Delivered here only: db_proxy told every msg_server itself.
    assert!(upstream_of(&out, ROUTE, Command::GroupChangeMemberNotify).is_empty());
    assert_eq!(subscriptions(&out), [(true, vec![40])]);
    assert_eq!(app.stats().stale_replies, 0);

    let kick = teamtalk_proto::pb::im::server::ImServerKickUser {
        user_id: 8,
        client_type: 0,
        reason: 1,
    };
    let out = app.upstream_pdu(DB, &Command::OtherServerKickUser.pdu(0, &kick));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Close { conn: 2, .. }))
    );
    assert!(app.user_sessions(8).is_empty());

    // db_proxy asks who is online: answered on the db link, same seq.
    let ask = teamtalk_proto::pb::im::buddy::ImUsersStatReq {
        user_id: 0,
        user_id_list: vec![7, 8],
        attach_data: None,
    };
    let out = app.upstream_pdu(DB, &Command::BuddyListUsersStatusRequest.pdu(33, &ask));
    let [Action::Link(DB, answer)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(answer.header.seq_num, 33);
    let Ok(Message::OtherOnlineUserInfo(info)) = Message::decode(answer) else {
        panic!("{answer:?}")
    };
    let users: Vec<u32> = info.user_stat_list.iter().map(|s| s.user_id).collect();
    assert_eq!(users, [7], "8 was kicked");

    // The in-process path delivers the same way.
    let out = app.deliver_group_change(&ImGroupChangeMemberNotify {
        change_type: 2,
        chg_user_id_list: vec![7],
        cur_user_id_list: vec![],
        ..notify
    });
    assert_eq!(sent_to(&out, 1, Command::GroupChangeMemberNotify).len(), 1);
    assert_eq!(subscriptions(&out), [(false, vec![40])]);
}
