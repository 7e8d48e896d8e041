//! End to end: TeamTalk's back-office API (http_msg_server) in a running
//! system of two msg_servers, db_proxy and route_server (real daemons on
//! 127.0.0.1, kernel-chosen ports), with clients logged in over TCP.

mod common;

use std::time::Duration;

use common::*;
use daemons::client::Client;
use daemons::store::GroupType;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberNotify, ImGroupCreateReq, ImNormalGroupListReq,
};
use teamtalk_proto::{Command, Message};

const KEY: &str = "back-office-secret";
const DEADLINE: Duration = Duration::from_secs(2);

fn start() -> World {
    let w = world_with(|cfg| {
        cfg.link_timers = Some((Duration::from_millis(200), Duration::from_secs(8)));
        cfg.http_msg.app_keys = vec![KEY.to_owned()];
        cfg.http_msg.limits.request_timeout = DEADLINE;
    });
    // Its links come up after the msg_servers registered.
    let until = daemons::clock::now() + T;
    loop {
        let problems = w
            .sys
            .http_msg()
            .inspect(|app| {
                let mut p = Vec::new();
                daemons::runtime::App::health(app, &mut p);
                p
            })
            .expect("http_msg_server answers");
        if problems.is_empty() {
            break;
        }
        assert!(daemons::clock::now() < until, "{problems:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    w
}

fn create_body(key: &str, members: &[u32]) -> serde_json::Value {
    serde_json::json!({"req_user_id": 0, "app_key": key, "group_name": "all hands",
        "group_type": 1, "group_avatar": "http://x/a.png", "user_id_list": members})
}

fn change_body(group: u64, modify: u32, members: &[u32]) -> serde_json::Value {
    serde_json::json!({"req_user_id": 0, "app_key": KEY, "group_id": group,
        "modify_type": modify, "user_id_list": members})
}

fn notified(c: &mut Client) -> ImGroupChangeMemberNotify {
    match c
        .wait_command(Command::GroupChangeMemberNotify, T)
        .expect("member change notice")
    {
        Message::GroupChangeMemberNotify(n) => n,
        other => panic!("{other:?}"),
    }
}

fn normal_groups(c: &mut Client) -> Vec<u32> {
    let req = ImNormalGroupListReq {
        user_id: 0,
        attach_data: None,
    };
    match c
        .request(
            Command::GroupNormalListRequest,
            &req,
            Command::GroupNormalListResponse,
            T,
        )
        .expect("normal group list")
    {
        Message::GroupNormalListResponse(r) => {
            r.group_version_list.iter().map(|v| v.group_id).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn back_office_creates_normal_groups_whose_members_see_them_on_every_msg_server() {
    let w = start();
    let http = w.sys.http_msg_addr();
    let (alice, bob, carol) = (w.user_id("alice"), w.user_id("bob"), w.user_id("carol"));
    let mut a = w.login(0, "alice", ClientType::Windows);
    let mut b = w.login(1, "bob", ClientType::Android);

    // A wrong key: TeamTalk's answer 2, nothing created.
    let (status, v) = post(
        http,
        "/query/CreateGroup",
        &create_body("guess", &[alice, bob]),
    );
    assert_eq!(
        (status, &v["error_code"]),
        (200, &serde_json::json!(2)),
        "{v}"
    );
    assert_eq!(v["error_msg"], "appKey不存在");
    assert!(w.sys.store().groups().unwrap().is_empty());

    // A client still cannot create a NORMAL group (msg_server's rule).
    let req = ImGroupCreateReq {
        user_id: 0,
        group_type: 1,
        group_name: "mine".into(),
        group_avatar: String::new(),
        member_id_list: vec![bob],
        attach_data: None,
    };
    match a
        .request(
            Command::GroupCreateRequest,
            &req,
            Command::GroupCreateResponse,
            T,
        )
        .expect("create answered")
    {
        Message::GroupCreateResponse(r) => assert_ne!(r.result_code, 0),
        other => panic!("{other:?}"),
    }
    assert!(w.sys.store().groups().unwrap().is_empty());

    // The right key: a NORMAL group of the administration.
    let (status, v) = post(http, "/query/CreateGroup", &create_body(KEY, &[alice, bob]));
    assert_eq!(
        (status, &v["error_code"]),
        (200, &serde_json::json!(0)),
        "{v}"
    );
    assert_eq!(v["error_msg"], "成功");
    let g = v["group_id"].as_u64().expect("group_id");
    let gid = u32::try_from(g).unwrap();
    let stored = w.sys.store().group(gid).unwrap().expect("stored");
    assert_eq!((stored.group_type, stored.creator), (GroupType::Normal, 0));
    assert_eq!(stored.member_ids(), [alice, bob]);

    // Both members hear of it at once, on their own msg_servers, and find
    // it in their group list.
    for c in [&mut a, &mut b] {
        let n = notified(c);
        assert_eq!((n.group_id, n.change_type), (gid, 1));
        assert_eq!(n.chg_user_id_list, [alice, bob]);
        assert_eq!(normal_groups(c), [gid]);
    }

    // Members added and removed: everyone concerned online is told.
    let (_, v) = post(http, "/query/ChangeMembers", &change_body(g, 1, &[carol]));
    assert_eq!(v["error_code"], 0, "{v}");
    for c in [&mut a, &mut b] {
        let n = notified(c);
        assert_eq!((n.group_id, n.change_type), (gid, 1));
        assert_eq!(n.chg_user_id_list, [carol]);
        assert_eq!(n.cur_user_id_list, [alice, bob, carol]);
    }
    let (_, v) = post(http, "/query/ChangeMembers", &change_body(g, 2, &[bob]));
    assert_eq!(v["error_code"], 0, "{v}");
    for c in [&mut a, &mut b] {
        let n = notified(c);
        assert_eq!((n.change_type, &n.chg_user_id_list[..]), (2, &[bob][..]));
        assert_eq!(n.cur_user_id_list, [alice, carol]);
    }
    assert!(normal_groups(&mut b).is_empty());

    // A group that does not exist: TeamTalk's "change failed".
    let (_, v) = post(
        http,
        "/query/ChangeMembers",
        &change_body(9_999, 1, &[carol]),
    );
    assert_eq!(
        (&v["error_code"], &v["error_msg"]),
        (&serde_json::json!(12), &serde_json::json!("更改群成员失败"))
    );
    // Not JSON, unknown interface: answered, not closed on.
    let (status, v) = post(
        http,
        "/query/GroupP2PMessage",
        &serde_json::json!({"app_key": KEY}),
    );
    assert_eq!((status, &v["error_code"]), (404, &serde_json::json!(5)));
}

#[test]
fn db_proxy_down_is_an_error_answer_within_the_deadline() {
    let mut w = start();
    let http = w.sys.http_msg_addr();
    let alice = w.user_id("alice");
    w.sys.stop_db();
    let started = daemons::clock::now();
    let (status, v) = post(http, "/query/CreateGroup", &create_body(KEY, &[alice]));
    assert_eq!(
        (status, &v["error_code"]),
        (200, &serde_json::json!(10)),
        "{v}"
    );
    assert_eq!(v["error_msg"], "服务器异常");
    assert!(
        started.elapsed() < DEADLINE + Duration::from_secs(2),
        "answered in {:?}",
        started.elapsed()
    );
    // Back up: served again once the link is.
    w.sys.restart_db().expect("db_proxy restarts");
    let until = daemons::clock::now() + T;
    loop {
        let (_, v) = post(http, "/query/CreateGroup", &create_body(KEY, &[alice]));
        if v["error_code"] == 0 {
            break;
        }
        assert!(daemons::clock::now() < until, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
