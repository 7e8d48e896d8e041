//! [`HttpMsgApp`] in virtual time: answers, the requests to db_proxy, the
//! notices to route_server, deadlines, links going down, bounds. The
//! daemon against real db_proxy, route and msg_servers is
//! `daemons/tests/http_msg_server.rs`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use teamtalk_conn::{CloseReason, HttpCloseReason, OversizedBody};
use teamtalk_proto::attach::Attach;
use teamtalk_proto::pb::im::ext::ImRequestFailed;
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberNotify, ImGroupChangeMemberRsp, ImGroupCreateRsp,
};
use teamtalk_proto::{Command, Message, Pdu};

use super::*;
use crate::runtime::{Action, App, CloseCause, Conn, Input, LinkId, NoJob, Now, Out, Response};

const DB1: LinkId = LinkId(0);
const DB2: LinkId = LinkId(1);
const ROUTE: LinkId = LinkId(2);
const KEY: &str = "back-office-key";

struct H {
    app: HttpMsgApp,
    now: Now,
}

fn limits() -> HttpMsgLimits {
    HttpMsgLimits {
        request_timeout: Duration::from_secs(10),
        max_pending: 4,
        linger: Duration::from_secs(60),
        max_notices: 2,
    }
}

impl H {
    fn new(limits: HttpMsgLimits) -> Self {
        let links = Upstreams {
            db: vec![DB1, DB2],
            route: vec![ROUTE],
        };
        Self {
            app: HttpMsgApp::new(AppKeys::new([KEY, "other"]), links, limits),
            now: Now::new(
                crate::clock::now(),
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            ),
        }
    }

    /// All links up.
    fn up() -> Self {
        let mut h = Self::new(limits());
        for l in [DB1, DB2, ROUTE] {
            assert!(h.step(Input::LinkUp(l)).is_empty());
        }
        h
    }

    fn step(&mut self, input: Input<'_, NoJob>) -> Vec<Action<NoJob>> {
        let mut out = Out::new();
        self.app.handle(self.now, input, &mut out);
        out.take()
    }

    fn advance(&mut self, secs: u64) -> Vec<Action<NoJob>> {
        self.now = self.now.plus(Duration::from_secs(secs));
        self.step(Input::Tick)
    }

    fn post(&mut self, conn: u32, path: &str, body: &serde_json::Value) -> Vec<Action<NoJob>> {
        let req = http::Request::post(path)
            .body(Bytes::from(body.to_string()))
            .unwrap();
        self.step(Input::Http {
            conn: Conn::test(conn),
            request: &req,
        })
    }

    fn reply(&mut self, link: LinkId, pdu: &Pdu) -> Vec<Action<NoJob>> {
        self.step(Input::LinkPdu(link, pdu))
    }
}

fn create_body(key: &str, members: &[u32]) -> serde_json::Value {
    serde_json::json!({"req_user_id": 0, "app_key": key, "group_name": "ops",
        "group_type": 1, "group_avatar": "", "user_id_list": members})
}

fn change_body(group: u32, modify: u32, members: &[u32]) -> serde_json::Value {
    serde_json::json!({"req_user_id": 7, "app_key": KEY, "group_id": group,
        "modify_type": modify, "user_id_list": members})
}

/// The one HTTP answer in `out`: its connection, status and JSON body.
fn answer(out: &[Action<NoJob>]) -> (Conn, StatusCode, Answer) {
    let answers: Vec<(Conn, &Response)> = out
        .iter()
        .filter_map(|a| match a {
            Action::Respond(c, r) => Some((*c, r)),
            _ => None,
        })
        .collect();
    let [(conn, r)] = answers[..] else {
        panic!("expected one answer: {out:?}")
    };
    (
        conn,
        r.status(),
        serde_json::from_slice(r.body()).expect("JSON answer"),
    )
}

fn code(out: &[Action<NoJob>]) -> u32 {
    answer(out).2.error_code
}

/// The PDUs sent on `link`.
fn sent(out: &[Action<NoJob>], link: LinkId) -> Vec<Message> {
    out.iter()
        .filter_map(|a| match a {
            Action::Link(l, p) if *l == link => Some(Message::decode(p).unwrap()),
            _ => None,
        })
        .collect()
}

/// The request id in a db_proxy request's attach_data.
fn id_of(msg: &mut Message) -> Bytes {
    let raw = msg.attached_mut().unwrap().attach_data().unwrap().clone();
    assert!(Attach::decode(&raw).is_ok());
    raw
}

#[test]
fn create_group_goes_to_db_proxy_as_the_administration_and_is_announced() {
    let mut h = H::up();
    let out = h.post(1, "/query/CreateGroup", &create_body(KEY, &[3, 2]));
    assert!(
        out.iter().all(|a| !matches!(a, Action::Respond(..))),
        "waits for db_proxy"
    );
    let [mut m] = sent(&out, DB1).try_into().unwrap();
    let attach = id_of(&mut m);
    let Message::GroupCreateRequest(req) = m else {
        unreachable!()
    };
    assert_eq!(
        (
            req.user_id,
            req.group_type,
            req.group_name.as_str(),
            &req.member_id_list[..]
        ),
        (0, 1, "ops", &[3, 2][..])
    );
    assert_eq!(h.app.pending(), 1);

    let rsp = ImGroupCreateRsp {
        user_id: 0,
        result_code: 0,
        group_id: Some(41),
        group_name: "ops".into(),
        user_id_list: vec![2, 3],
        attach_data: Some(attach),
    };
    let out = h.reply(DB1, &Command::GroupCreateResponse.pdu(0, &rsp));
    let (conn, status, a) = answer(&out);
    assert_eq!((conn, status), (Conn::test(1), StatusCode::OK));
    assert_eq!(a, Answer::with_group(ErrorCode::Success, 41));
    assert_eq!(
        sent(&out, ROUTE),
        [Message::GroupChangeMemberNotify(
            ImGroupChangeMemberNotify {
                user_id: 0,
                change_type: 1,
                group_id: 41,
                cur_user_id_list: vec![2, 3],
                chg_user_id_list: vec![2, 3],
            }
        )]
    );
    assert_eq!(h.app.pending(), 0);
    // The same reply again finds nothing: counted, not answered twice.
    let out = h.reply(DB1, &Command::GroupCreateResponse.pdu(0, &rsp));
    assert!(out.is_empty());
    assert_eq!(h.app.stats().late_replies, 1);
}

#[test]
fn change_members_answers_then_notifies_route_and_failures_are_teamtalks_codes() {
    let mut h = H::up();
    // Round robin over the db_proxy links that are up.
    let out = h.post(1, "/query/ChangeMembers", &change_body(41, 1, &[4]));
    let [mut m] = sent(&out, DB1).try_into().unwrap();
    let Message::GroupChangeMemberRequest(req) = &m else {
        panic!()
    };
    assert_eq!(
        (
            req.user_id,
            req.change_type,
            req.group_id,
            &req.member_id_list[..]
        ),
        (0, 1, 41, &[4][..])
    );
    let attach = id_of(&mut m);
    let ok = ImGroupChangeMemberRsp {
        user_id: 0,
        change_type: 1,
        result_code: 0,
        group_id: 41,
        cur_user_id_list: vec![2, 3, 4],
        chg_user_id_list: vec![4],
        attach_data: Some(attach),
    };
    let out = h.reply(DB1, &Command::GroupChangeMemberResponse.pdu(0, &ok));
    assert_eq!(answer(&out).2, Answer::of(ErrorCode::Success));
    let [Message::GroupChangeMemberNotify(n)] = &sent(&out, ROUTE)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (n.group_id, &n.chg_user_id_list[..], &n.cur_user_id_list[..]),
        (41, &[4][..], &[2, 3, 4][..])
    );

    // Nothing changed (already in): answered, nothing announced.
    let out = h.post(2, "/query/ChangeMembers", &change_body(41, 1, &[4]));
    let [mut m] = sent(&out, DB2).try_into().unwrap();
    let unchanged = ImGroupChangeMemberRsp {
        chg_user_id_list: vec![],
        attach_data: Some(id_of(&mut m)),
        ..ok.clone()
    };
    let out = h.reply(DB2, &Command::GroupChangeMemberResponse.pdu(0, &unchanged));
    assert_eq!(code(&out), 0);
    assert!(sent(&out, ROUTE).is_empty());

    // Refused by db_proxy: 12; a failed creation: 11 with group_id 0;
    // IMRequestFailed: 10.
    let out = h.post(3, "/query/ChangeMembers", &change_body(41, 2, &[9]));
    let [mut m] = sent(&out, DB1).try_into().unwrap();
    let refused = ImGroupChangeMemberRsp {
        result_code: 1,
        attach_data: Some(id_of(&mut m)),
        ..ok.clone()
    };
    let out = h.reply(DB1, &Command::GroupChangeMemberResponse.pdu(0, &refused));
    assert_eq!(answer(&out).2, Answer::of(ErrorCode::ChangeMember));
    assert!(sent(&out, ROUTE).is_empty());

    let out = h.post(4, "/query/CreateGroup", &create_body(KEY, &[2]));
    let [mut m] = sent(&out, DB2).try_into().unwrap();
    let failed = ImGroupCreateRsp {
        user_id: 0,
        result_code: 1,
        group_id: None,
        group_name: "ops".into(),
        user_id_list: vec![],
        attach_data: Some(id_of(&mut m)),
    };
    let out = h.reply(DB2, &Command::GroupCreateResponse.pdu(0, &failed));
    assert_eq!(
        answer(&out).2,
        Answer::with_group(ErrorCode::CreateGroup, 0)
    );

    let out = h.post(5, "/query/CreateGroup", &create_body(KEY, &[2]));
    let [mut m] = sent(&out, DB1).try_into().unwrap();
    let f = ImRequestFailed {
        service_id: 4,
        command_id: 0x405,
        result_code: 1,
        reason: Some("store failed".into()),
        attach_data: Some(id_of(&mut m)),
    };
    let out = h.reply(DB1, &Command::OtherRequestFailed.pdu(0, &f));
    assert_eq!(answer(&out).2, Answer::of(ErrorCode::ServerException));
    let stats = h.app.stats();
    assert_eq!(stats.answers[&("change_members", 0)], 2);
    assert_eq!(stats.answers[&("create_group", 11)], 1);
    assert_eq!(stats.notices_sent, 1);
}

#[test]
fn wrong_keys_bad_bodies_and_urls_are_answered_at_once() {
    let mut h = H::up();
    let out = h.post(1, "/query/CreateGroup", &create_body("guess", &[2]));
    let (_, status, a) = answer(&out);
    assert_eq!((status, a), (StatusCode::OK, Answer::of(ErrorCode::AppKey)));
    assert!(sent(&out, DB1).is_empty() && sent(&out, DB2).is_empty());

    let out = h.post(1, "/query/ChangeMembers", &change_body(41, 3, &[2]));
    assert_eq!(answer(&out).2, Answer::of(ErrorCode::Parameter));

    let out = h.post(1, "/query/SendMessageByXiaoT", &change_body(41, 1, &[2]));
    let (_, status, a) = answer(&out);
    assert_eq!(
        (status, a),
        (StatusCode::NOT_FOUND, Answer::of(ErrorCode::Interface))
    );

    let req = http::Request::get("/query/CreateGroup")
        .body(Bytes::new())
        .unwrap();
    let out = h.step(Input::Http {
        conn: Conn::test(1),
        request: &req,
    });
    let Action::Respond(_, r) = &out[0] else {
        panic!()
    };
    assert_eq!(
        (r.status(), &r.headers()[http::header::ALLOW]),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            &http::HeaderValue::from_static("POST")
        )
    );
    assert_eq!(req.method(), Method::GET);

    let req = http::Request::post("/query/CreateGroup")
        .body(Bytes::from_static(b"{oops"))
        .unwrap();
    let out = h.step(Input::Http {
        conn: Conn::test(1),
        request: &req,
    });
    let (_, status, a) = answer(&out);
    assert_eq!(
        (status, a),
        (StatusCode::BAD_REQUEST, Answer::of(ErrorCode::Parameter))
    );

    let mut req = http::Request::post("/query/CreateGroup")
        .body(Bytes::new())
        .unwrap();
    req.extensions_mut()
        .insert(OversizedBody { length: 1 << 20 });
    let out = h.step(Input::Http {
        conn: Conn::test(1),
        request: &req,
    });
    assert_eq!(answer(&out).1, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.app.pending(), 0);
}

#[test]
fn no_db_proxy_link_is_a_server_error_at_once() {
    let mut h = H::new(limits());
    let out = h.post(1, "/query/CreateGroup", &create_body(KEY, &[2]));
    let (_, status, a) = answer(&out);
    assert_eq!(
        (status, a),
        (StatusCode::OK, Answer::of(ErrorCode::ServerException))
    );
    let mut problems = Vec::new();
    h.app.health(&mut problems);
    assert_eq!(problems, ["no db_proxy link up", "no route_server link up"]);
    // The second link is used when the first is down.
    h.step(Input::LinkUp(DB2));
    let out = h.post(1, "/query/CreateGroup", &create_body(KEY, &[2]));
    assert_eq!(sent(&out, DB2).len(), 1);
}

#[test]
fn the_deadline_answers_and_a_late_success_is_still_announced() {
    let mut h = H::up();
    let out = h.post(1, "/query/ChangeMembers", &change_body(41, 2, &[3]));
    let [mut m] = sent(&out, DB1).try_into().unwrap();
    let attach = id_of(&mut m);
    assert!(h.advance(9).is_empty(), "not yet");
    let out = h.advance(1);
    let (conn, _, a) = answer(&out);
    assert_eq!(
        (conn, a),
        (Conn::test(1), Answer::of(ErrorCode::ServerException))
    );
    assert_eq!(h.app.stats().timeouts, 1);
    assert!(h.advance(1).is_empty(), "answered once");
    // db_proxy answers late: no second HTTP answer, but the members hear.
    let rsp = ImGroupChangeMemberRsp {
        user_id: 0,
        change_type: 2,
        result_code: 0,
        group_id: 41,
        cur_user_id_list: vec![2],
        chg_user_id_list: vec![3],
        attach_data: Some(attach.clone()),
    };
    let out = h.reply(DB1, &Command::GroupChangeMemberResponse.pdu(0, &rsp));
    assert!(out.iter().all(|a| !matches!(a, Action::Respond(..))));
    assert_eq!(sent(&out, ROUTE).len(), 1);
    assert_eq!(h.app.stats().late_replies, 1);

    // After the linger, a request is forgotten.
    let out = h.post(2, "/query/ChangeMembers", &change_body(41, 2, &[3]));
    assert_eq!(sent(&out, DB2).len(), 1);
    h.advance(10);
    assert_eq!(h.app.pending(), 1);
    h.advance(60);
    assert_eq!(h.app.pending(), 0);
}

#[test]
fn a_client_that_left_still_gets_its_change_announced() {
    let mut h = H::up();
    let out = h.post(1, "/query/ChangeMembers", &change_body(41, 1, &[5]));
    let [mut m] = sent(&out, DB1).try_into().unwrap();
    let attach = id_of(&mut m);
    h.step(Input::Closed {
        conn: Conn::test(1),
        reason: CloseCause::Http(HttpCloseReason::PeerClosed),
    });
    let rsp = ImGroupChangeMemberRsp {
        user_id: 0,
        change_type: 1,
        result_code: 0,
        group_id: 41,
        cur_user_id_list: vec![5],
        chg_user_id_list: vec![5],
        attach_data: Some(attach),
    };
    let out = h.reply(DB1, &Command::GroupChangeMemberResponse.pdu(0, &rsp));
    assert!(out.iter().all(|a| !matches!(a, Action::Respond(..))));
    assert_eq!(sent(&out, ROUTE).len(), 1);
}

#[test]
fn a_db_link_going_down_answers_its_requests_and_stopping_answers_all() {
    let mut h = H::up();
    let out = h.post(1, "/query/CreateGroup", &create_body(KEY, &[2]));
    assert_eq!(sent(&out, DB1).len(), 1);
    let out = h.post(2, "/query/CreateGroup", &create_body(KEY, &[2]));
    assert_eq!(sent(&out, DB2).len(), 1);
    let out = h.step(Input::LinkDown(DB1, CloseReason::PeerClosed));
    let (conn, _, a) = answer(&out);
    assert_eq!((conn, a.error_code), (Conn::test(1), 10));
    let out = h.step(Input::Stopping);
    let (conn, _, a) = answer(&out);
    assert_eq!((conn, a.error_code), (Conn::test(2), 10));
    assert_eq!(h.app.pending(), 0);
}

#[test]
fn requests_waiting_are_bounded() {
    let mut h = H::up();
    for c in 0..4 {
        let out = h.post(c, "/query/CreateGroup", &create_body(KEY, &[2]));
        assert!(out.iter().all(|a| !matches!(a, Action::Respond(..))));
    }
    let out = h.post(9, "/query/CreateGroup", &create_body(KEY, &[2]));
    let (_, status, a) = answer(&out);
    assert_eq!(
        (status, a.error_code),
        (StatusCode::SERVICE_UNAVAILABLE, 10)
    );
}

#[test]
fn notices_wait_for_a_route_link_within_a_bound() {
    let mut h = H::new(limits());
    h.step(Input::LinkUp(DB1));
    let mut attaches = Vec::new();
    for c in 0..3 {
        let out = h.post(c, "/query/ChangeMembers", &change_body(41, 1, &[c + 10]));
        let [mut m] = sent(&out, DB1).try_into().unwrap();
        attaches.push(id_of(&mut m));
    }
    for (i, attach) in attaches.into_iter().enumerate() {
        let u = 10 + u32::try_from(i).unwrap();
        let rsp = ImGroupChangeMemberRsp {
            user_id: 0,
            change_type: 1,
            result_code: 0,
            group_id: 41,
            cur_user_id_list: vec![u],
            chg_user_id_list: vec![u],
            attach_data: Some(attach),
        };
        let out = h.reply(DB1, &Command::GroupChangeMemberResponse.pdu(0, &rsp));
        assert_eq!(code(&out), 0);
        assert!(sent(&out, ROUTE).is_empty());
    }
    assert_eq!(
        h.app.stats().notices_dropped,
        1,
        "two held, the oldest dropped"
    );
    let out = h.step(Input::LinkUp(ROUTE));
    let held: Vec<u32> = sent(&out, ROUTE)
        .into_iter()
        .map(|m| match m {
            Message::GroupChangeMemberNotify(n) => n.chg_user_id_list[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(held, [11, 12]);
}

#[test]
fn metrics_name_interfaces_and_codes() {
    let mut h = H::up();
    h.post(1, "/query/CreateGroup", &create_body("guess", &[2]));
    let mut scrape = crate::metrics::Scrape::new();
    h.app.collect(&mut scrape);
    let text = scrape.render();
    assert!(
        text.contains(r#"teamtalk_http_msg_answers_total{api="create_group",error_code="2"} 1"#),
        "{text}"
    );
    assert!(text.contains("teamtalk_http_msg_pending 0"), "{text}");
}

#[test]
fn conf_is_read_with_keys_from_the_file_and_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys"), "# back office\nfrom-file\n\n").unwrap();
    let text = "ListenIP=0.0.0.0\nListenPort=8400\nConcurrentDBConnCnt=4\n\
        DBServerIP1=127.0.0.1\nDBServerPort1=10600\nDBServerIP2=127.0.0.1\nDBServerPort2=10601\n\
        RouteServerIP1=localhost\nRouteServerPort1=8200\n\
        AppKey=one; two\nAppKeyFile=keys\nRequestTimeoutSecs=3\nMaxPending=9\n";
    let path = dir.path().join("httpmsgserver.conf");
    let conf = crate::conf::Conf::parse_str(text, &path.display().to_string()).unwrap();
    let cfg = HttpMsgConfig::from_conf(&conf).unwrap();
    assert_eq!(cfg.port, 8400);
    assert_eq!(cfg.db.len(), 2);
    assert_eq!(cfg.route, ["127.0.0.1:8200".parse().unwrap()]);
    assert_eq!(cfg.app_keys, ["one", "two", "from-file"]);
    assert_eq!(
        (cfg.limits.request_timeout, cfg.limits.max_pending),
        (Duration::from_secs(3), 9)
    );
    // TeamTalk's stock file has no key: refused, saying why.
    let stock = text.replace("AppKey=one; two\nAppKeyFile=keys\n", "");
    let conf = crate::conf::Conf::parse_str(&stock, "httpmsgserver.conf").unwrap();
    let err = HttpMsgConfig::from_conf(&conf).unwrap_err();
    assert!(err.to_string().contains("no AppKey"), "{err}");
    let conf = crate::conf::Conf::parse_str(
        &format!("{stock}AppKeyFile=missing\n"),
        "httpmsgserver.conf",
    )
    .unwrap();
    assert!(
        HttpMsgConfig::from_conf(&conf)
            .unwrap_err()
            .to_string()
            .contains("AppKeyFile")
    );
}

#[test]
fn generated_keys_are_32_hex_digits_and_differ() {
    let a = generate_app_key().unwrap();
    let b = generate_app_key().unwrap();
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}
