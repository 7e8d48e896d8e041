//! End to end: groups over two msg_servers sharing db_proxy, route_server
//! and login_server (real daemons on 127.0.0.1, kernel-chosen ports),
//! driven by clients speaking the TeamTalk protocol.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use daemons::cli::groups as admin;
use daemons::client::{Client, ClientError};
use daemons::db_proxy::{self, DbProxyConfig};
use daemons::password::md5_hex;
use daemons::store::{NewUser, Store};
use teamtalk_proto::pb::im::base_define::{ClientType, GroupVersionInfo};
use teamtalk_proto::pb::im::buddy::{
    ImDepartmentReq, ImRecentContactSessionReq, ImRecentContactSessionRsp,
};
use teamtalk_proto::pb::im::ext::{ImRequestFailed, RequestFailedCode};
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberNotify, ImGroupChangeMemberReq, ImGroupChangeMemberRsp, ImGroupCreateReq,
    ImGroupCreateRsp, ImGroupInfoListReq, ImGroupInfoListRsp, ImGroupShieldReq, ImGroupShieldRsp,
    ImNormalGroupListReq, ImNormalGroupListRsp,
};
use teamtalk_proto::pb::im::message::{
    ImClientTimeReq, ImGetMsgListReq, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq,
};
use teamtalk_proto::pb::im::server::{ImGroupGetShieldReq, ImGroupGetShieldRsp};
use teamtalk_proto::{Command, Message};

const ADD: i32 = 1;
const REMOVE: i32 = 2;
const GROUP_TEXT: i32 = 0x11;
const GROUP_SESSION: i32 = 2;

/// Sends a request and returns its typed reply.
macro_rules! ask {
    ($client:expr, $req:ident, $msg:expr, $rsp:ident) => {{
        match $client
            .request(Command::$req, &$msg, Command::$rsp, T)
            .expect(stringify!($req))
        {
            Message::$rsp(r) => r,
            other => panic!("{other:?}"),
        }
    }};
}

fn add_users(w: &World, names: &[&str]) {
    for name in names {
        let user = NewUser {
            name: (*name).into(),
            nick: name.to_uppercase(),
            ..NewUser::default()
        };
        w.sys
            .store()
            .add_user(&user, &md5_hex(b"secret"))
            .expect("add user");
    }
}

/// Logs in and waits until this user's groups are indexed by their
/// msg_server and route_server knows it hosts them: the group list is
/// asked of db_proxy at login, so a db_proxy round trip after the login
/// comes back after it (db_proxy answers in order), and the subscription
/// it caused is on the route link before `sync_route`'s question.
fn login_settled(w: &World, i: usize, name: &str, ct: ClientType) -> Client {
    let mut c = w.login(i, name, ct);
    let _ = ask!(
        c,
        BuddyListDepartmentRequest,
        ImDepartmentReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None
        },
        BuddyListDepartmentResponse
    );
    let me = c.user_id().expect("logged in");
    sync_route(&mut c, me);
    c
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

fn create(c: &mut Client, group_type: i32, members: &[u32]) -> ImGroupCreateRsp {
    ask!(
        c,
        GroupCreateRequest,
        ImGroupCreateReq {
            user_id: 0,
            group_type,
            group_name: "trip".into(),
            group_avatar: String::new(),
            member_id_list: members.to_vec(),
            attach_data: None,
        },
        GroupCreateResponse
    )
}

fn change(c: &mut Client, kind: i32, group: u32, members: &[u32]) -> ImGroupChangeMemberRsp {
    ask!(
        c,
        GroupChangeMemberRequest,
        ImGroupChangeMemberReq {
            user_id: 0,
            change_type: kind,
            group_id: group,
            member_id_list: members.to_vec(),
            attach_data: None,
        },
        GroupChangeMemberResponse
    )
}

/// The next member-change notice.
fn notified(c: &mut Client) -> ImGroupChangeMemberNotify {
    match c
        .wait_command(Command::GroupChangeMemberNotify, T)
        .expect("member change notice")
    {
        Message::GroupChangeMemberNotify(n) => n,
        other => panic!("{other:?}"),
    }
}

fn group_text(group: u32, body: &str) -> ImMsgData {
    ImMsgData {
        msg_type: GROUP_TEXT,
        ..text(group, body)
    }
}

/// Posts to a group and waits for the ack; returns the msg_id.
fn post(c: &mut Client, group: u32, body: &str) -> u32 {
    let Message::MsgDataAck(ack) = c
        .request(
            Command::MsgData,
            &group_text(group, body),
            Command::MsgDataAck,
            T,
        )
        .expect("ack")
    else {
        panic!()
    };
    assert_eq!(
        (ack.session_id, ack.session_type),
        (group, GROUP_SESSION),
        "acked as a group message"
    );
    ack.msg_id
}

/// A round trip on `c`'s connection, then: nothing delivered to it. The
/// msg_server answers in order, so a delivery made before the answer has
/// arrived by then.
fn nothing_delivered(c: &mut Client) {
    c.request(
        Command::MsgTimeRequest,
        &ImClientTimeReq {},
        Command::MsgTimeResponse,
        T,
    )
    .expect("time");
    match c.wait_for(Duration::ZERO, "a delivery", |p| {
        p.is(Command::MsgData.key())
    }) {
        Err(ClientError::Timeout(..)) => {}
        other => panic!("delivered: {other:?}"),
    }
}

/// The request was refused: `IMRequestFailed` for `command`, then the
/// session is closed. Returns its code.
fn refused_and_closed(c: &mut Client, command: Command) -> u32 {
    let Message::OtherRequestFailed(f) = c
        .wait_command(Command::OtherRequestFailed, T)
        .expect("a refusal")
    else {
        panic!()
    };
    let f: ImRequestFailed = f;
    let key = command.key();
    assert_eq!(
        (f.service_id, f.command_id),
        (u32::from(key.service_id), u32::from(key.command_id))
    );
    assert!(closed(c), "closed after the refusal");
    f.result_code
}

fn history_req(group: u32, begin: u32, count: u32) -> ImGetMsgListReq {
    ImGetMsgListReq {
        user_id: 0,
        session_type: GROUP_SESSION,
        session_id: group,
        msg_id_begin: begin,
        msg_cnt: count,
        attach_data: None,
    }
}

fn group_history(c: &mut Client, group: u32, begin: u32, count: u32) -> Vec<u32> {
    let rsp = ask!(
        c,
        MsgListRequest,
        history_req(group, begin, count),
        MsgListResponse
    );
    rsp.msg_list.iter().map(|m| m.msg_id).collect()
}

/// `(total, [(session, type, count)])`.
fn unread_of(c: &mut Client) -> (u32, Vec<(u32, i32, u32)>) {
    let rsp = ask!(
        c,
        MsgUnreadCntRequest,
        ImUnreadMsgCntReq {
            user_id: 0,
            attach_data: None
        },
        MsgUnreadCntResponse
    );
    let per = rsp
        .unreadinfo_list
        .iter()
        .map(|u| (u.session_id, u.session_type, u.unread_cnt))
        .collect();
    (rsp.total_cnt, per)
}

fn info(c: &mut Client, known: &[(u32, u32)]) -> ImGroupInfoListRsp {
    ask!(
        c,
        GroupInfoRequest,
        ImGroupInfoListReq {
            user_id: 0,
            group_version_list: known
                .iter()
                .map(|&(group_id, version)| GroupVersionInfo { group_id, version })
                .collect(),
            attach_data: None,
        },
        GroupInfoResponse
    )
}

fn normal_list(c: &mut Client) -> Vec<(u32, u32)> {
    let rsp: ImNormalGroupListRsp = ask!(
        c,
        GroupNormalListRequest,
        ImNormalGroupListReq {
            user_id: 0,
            attach_data: None
        },
        GroupNormalListResponse
    );
    rsp.group_version_list
        .iter()
        .map(|v| (v.group_id, v.version))
        .collect()
}

#[test]
#[allow(clippy::too_many_lines)] // one story, told in order
fn a_temporary_group_across_two_msg_servers() {
    let w = world();
    add_users(&w, &["dave", "erin"]);
    let [alice, bob, carol, dave, erin] =
        ["alice", "bob", "carol", "dave", "erin"].map(|n| w.user_id(n));
    let mut alice_pc = login_settled(&w, 0, "alice", ClientType::Windows);
    let mut alice_phone = login_settled(&w, 1, "alice", ClientType::Android);
    let mut bob_c = login_settled(&w, 0, "bob", ClientType::Windows);
    let mut carol_c = login_settled(&w, 1, "carol", ClientType::Windows);
    let mut erin_c = login_settled(&w, 1, "erin", ClientType::Windows);
    let mut dave_c = login_settled(&w, 1, "dave", ClientType::Windows);

    // Alice creates a temporary group with bob and erin; she is in it.
    let rsp = create(&mut alice_pc, 2, &[bob, erin]);
    assert_eq!(rsp.result_code, 0);
    let g = rsp.group_id.expect("group id");
    assert_eq!(sorted(rsp.user_id_list), sorted(vec![alice, bob, erin]));
    // The creation is announced as an addition on both msg_servers.
    for c in [&mut alice_pc, &mut alice_phone, &mut bob_c, &mut erin_c] {
        let n = notified(c);
        assert_eq!((n.group_id, n.change_type), (g, ADD));
        assert_eq!(sorted(n.cur_user_id_list), sorted(vec![alice, bob, erin]));
    }

    // Any member adds to a temporary group: bob adds carol.
    let rsp = change(&mut bob_c, ADD, g, &[carol]);
    assert_eq!(rsp.result_code, 0);
    assert_eq!(rsp.chg_user_id_list, [carol]);
    assert_eq!(
        sorted(rsp.cur_user_id_list),
        sorted(vec![alice, bob, carol, erin])
    );
    for c in [
        &mut carol_c,
        &mut alice_phone,
        &mut erin_c,
        &mut bob_c,
        &mut alice_pc,
    ] {
        let n = notified(c);
        assert_eq!(
            (n.group_id, n.change_type, &n.chg_user_id_list[..]),
            (g, ADD, &[carol][..])
        );
    }
    // route_server has read msg_server 1's subscriptions by now.
    sync_route(&mut carol_c, carol);

    // A message reaches every member on both servers, the sender's other
    // session included, but not the session it came from, nor strangers.
    let id1 = post(&mut alice_pc, g, "hello all");
    for c in [&mut bob_c, &mut carol_c, &mut erin_c, &mut alice_phone] {
        let m = receive(c);
        assert_eq!(
            (
                m.msg_id,
                m.from_user_id,
                m.to_session_id,
                m.msg_type,
                &m.msg_data[..]
            ),
            (id1, alice, g, GROUP_TEXT, &b"hello all"[..])
        );
    }
    nothing_delivered(&mut alice_pc);
    nothing_delivered(&mut dave_c);

    // Only the creator removes others: bob cannot remove carol, alice
    // removes erin (on the other msg_server), and everyone concerned hears.
    let rsp = change(&mut bob_c, REMOVE, g, &[carol]);
    assert_eq!(rsp.result_code, 1);
    let rsp = change(&mut alice_pc, REMOVE, g, &[erin]);
    assert_eq!(
        (rsp.result_code, &rsp.chg_user_id_list[..]),
        (0, &[erin][..])
    );
    assert_eq!(
        sorted(rsp.cur_user_id_list),
        sorted(vec![alice, bob, carol])
    );
    for c in [
        &mut erin_c,
        &mut carol_c,
        &mut bob_c,
        &mut alice_phone,
        &mut alice_pc,
    ] {
        let n = notified(c);
        assert_eq!(
            (n.change_type, &n.chg_user_id_list[..]),
            (REMOVE, &[erin][..])
        );
    }
    let id2 = post(&mut bob_c, g, "erin has gone");
    assert_eq!(id2, id1 + 1, "the group's own sequence");
    for c in [&mut alice_pc, &mut carol_c, &mut alice_phone] {
        assert_eq!(receive(c).msg_id, id2);
    }
    nothing_delivered(&mut erin_c);
    nothing_delivered(&mut bob_c);

    // A removed member cannot post: refused, told, closed. Nor can a
    // stranger, who cannot read the history either.
    erin_c
        .send(Command::MsgData, &group_text(g, "still here?"))
        .unwrap();
    refused_and_closed(&mut erin_c, Command::MsgData);
    dave_c
        .send(Command::MsgData, &group_text(g, "let me in"))
        .unwrap();
    refused_and_closed(&mut dave_c, Command::MsgData);
    let mut dave_c = w.login(1, "dave", ClientType::Windows);
    dave_c
        .send(Command::MsgListRequest, &history_req(g, 0, 10))
        .unwrap();
    assert_eq!(
        refused_and_closed(&mut dave_c, Command::MsgListRequest),
        RequestFailedCode::RequestFailedForbidden as u32
    );
    let mut dave_c = w.login(1, "dave", ClientType::Windows);
    assert!(info(&mut dave_c, &[(g, 0)]).group_info_list.is_empty());

    // Unread per member: the last id minus what each has read (a sender
    // has read what they posted).
    assert_eq!(unread_of(&mut carol_c), (2, vec![(g, GROUP_SESSION, 2)]));
    assert_eq!(
        unread_of(&mut alice_phone),
        (1, vec![(g, GROUP_SESSION, 1)])
    );
    assert_eq!(unread_of(&mut bob_c).0, 0);
    // A read ack clears it, and the reader's other session hears of it.
    alice_pc
        .send(
            Command::MsgReadAck,
            &ImMsgDataReadAck {
                user_id: 0,
                session_id: g,
                msg_id: id2,
                session_type: GROUP_SESSION,
            },
        )
        .unwrap();
    let Message::MsgReadNotify(n) = alice_phone.wait_command(Command::MsgReadNotify, T).unwrap()
    else {
        panic!()
    };
    assert_eq!((n.session_id, n.session_type), (g, GROUP_SESSION));
    assert_eq!(unread_of(&mut alice_pc).0, 0);
    assert_eq!(unread_of(&mut carol_c).0, 2, "carol's own count is hers");

    // History pages, newest first, below the last id of the page before.
    let mut ids = vec![id2, id1];
    for i in 0..3 {
        ids.insert(0, post(&mut carol_c, g, &format!("more {i}")));
    }
    let mut paged = Vec::new();
    let mut begin = 0;
    loop {
        let page = group_history(&mut bob_c, g, begin, 2);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        begin = page[page.len() - 1] - 1;
        paged.extend(page);
        if begin == 0 {
            break;
        }
    }
    assert_eq!(paged, ids);

    // Recent sessions hold the group, with its latest message.
    let rsp: ImRecentContactSessionRsp = ask!(
        carol_c,
        BuddyListRecentContactSessionRequest,
        ImRecentContactSessionReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None
        },
        BuddyListRecentContactSessionResponse
    );
    let s = rsp
        .contact_session_list
        .iter()
        .find(|s| s.session_id == g && s.session_type == GROUP_SESSION)
        .expect("the group is a recent session");
    assert_eq!(s.latest_msg_id, ids[0]);

    // Details by version: create, add, remove made version 3.
    let rsp = info(&mut bob_c, &[(g, 0)]);
    let gi = &rsp.group_info_list[0];
    assert_eq!(
        (gi.version, gi.group_creator_id, gi.group_type),
        (3, alice, 2)
    );
    assert_eq!(
        sorted(gi.group_member_list.clone()),
        sorted(vec![alice, bob, carol])
    );
    assert!(info(&mut bob_c, &[(g, 3)]).group_info_list.is_empty());

    // Shield: set by a member, read back by msg_server's push path (here
    // asked of db_proxy directly, on the same store).
    let rsp: ImGroupShieldRsp = ask!(
        carol_c,
        GroupShieldGroupRequest,
        ImGroupShieldReq {
            user_id: 0,
            group_id: g,
            shield_status: 1,
            attach_data: None
        },
        GroupShieldGroupResponse
    );
    assert_eq!((rsp.group_id, rsp.result_code), (g, 0));
    assert_eq!(
        info(&mut carol_c, &[(g, 0)]).group_info_list[0].shield_status,
        1
    );
    let db = db_proxy::spawn(
        DbProxyConfig::new("127.0.0.1:0".parse().unwrap()),
        w.sys.store() as Arc<dyn Store>,
    )
    .expect("db_proxy starts");
    let mut peer = Client::connect(db.addr(), T).expect("connect to db_proxy");
    let rsp: ImGroupGetShieldRsp = ask!(
        peer,
        OtherGetShieldReq,
        ImGroupGetShieldReq {
            group_id: g,
            user_id: vec![alice, carol, dave],
            attach_data: None,
        },
        OtherGetShieldRsp
    );
    let got: Vec<(u32, u32)> = rsp
        .shield_status_list
        .iter()
        .map(|s| (s.user_id, s.shield_status))
        .collect();
    assert_eq!(
        sorted_pairs(got),
        sorted_pairs(vec![(alice, 0), (carol, 1)]),
        "members only"
    );
    db.stop();
}

fn sorted_pairs(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    v.sort_unstable();
    v
}

#[test]
fn a_normal_group_from_the_administration() {
    let w = world();
    add_users(&w, &["dave", "erin"]);
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(|n| w.user_id(n));
    let store = w.sys.store();
    let g = admin::create_normal_group(&*store, "all hands", "", alice, &[bob])
        .expect("created")
        .id;
    let c = admin::add_members(&*store, g, &[carol]).expect("added");
    assert_eq!(c.version, 2);

    // Members find it in their normal group list at login, with details
    // for the versions they do not have.
    let mut bob_c = login_settled(&w, 1, "bob", ClientType::Mac);
    assert_eq!(normal_list(&mut bob_c), [(g, 2)]);
    let rsp = info(&mut bob_c, &[(g, 0)]);
    let gi = &rsp.group_info_list[0];
    assert_eq!(
        (
            gi.group_id,
            gi.version,
            gi.group_name.as_str(),
            gi.group_creator_id,
            gi.group_type
        ),
        (g, 2, "all hands", alice, 1)
    );
    assert_eq!(
        sorted(gi.group_member_list.clone()),
        sorted(vec![alice, bob, carol])
    );
    assert!(info(&mut bob_c, &[(g, 2)]).group_info_list.is_empty());

    // They chat in it from login on, across msg_servers.
    let mut carol_c = login_settled(&w, 0, "carol", ClientType::Windows);
    let mut alice_c = login_settled(&w, 0, "alice", ClientType::Windows);
    let id = post(&mut bob_c, g, "good morning");
    for c in [&mut carol_c, &mut alice_c] {
        let m = receive(c);
        assert_eq!((m.msg_id, m.from_user_id, m.to_session_id), (id, bob, g));
    }

    // From a client, only the creator changes a NORMAL group, and nobody
    // creates one.
    assert_eq!(change(&mut bob_c, ADD, g, &[dave]).result_code, 1);
    assert_eq!(
        change(&mut bob_c, REMOVE, g, &[bob]).result_code,
        1,
        "no leaving"
    );
    let rsp = create(&mut bob_c, 1, &[carol]);
    assert_eq!((rsp.result_code, rsp.group_id), (1, None));
    let rsp = change(&mut alice_c, ADD, g, &[dave]);
    assert_eq!(rsp.result_code, 0);
    let n = notified(&mut bob_c);
    assert_eq!((n.group_id, &n.chg_user_id_list[..]), (g, &[dave][..]));

    // Bob's copy (version 2) is stale: the details come again.
    let rsp = info(&mut bob_c, &[(g, 2)]);
    assert_eq!(rsp.group_info_list[0].version, 3);
    assert!(rsp.group_info_list[0].group_member_list.contains(&dave));

    // Dave, logging in afterwards, has it, and receives its messages.
    let mut dave_c = login_settled(&w, 1, "dave", ClientType::Windows);
    assert_eq!(normal_list(&mut dave_c), [(g, 3)]);
    let id2 = post(&mut carol_c, g, "welcome dave");
    assert_eq!(receive(&mut dave_c).msg_id, id2);
    // Not erin, who is in no group.
    let mut erin_c = login_settled(&w, 1, "erin", ClientType::Windows);
    assert!(normal_list(&mut erin_c).is_empty());
    nothing_delivered(&mut erin_c);
}
