//! End to end: the four daemons on 127.0.0.1 with kernel-chosen ports (one
//! store, one route_server, one login_server, two msg_servers), driven over
//! TCP by a client that speaks the TeamTalk protocol like the real ones.

use std::time::Duration;

use bytes::Bytes;
use daemons::client::{Client, ClientError, query_msg_server};
use daemons::password::{HashParams, md5_hex};
use daemons::store::{NewUser, Store};
use daemons::system::{self, RunningSystem, SystemConfig};
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::buddy::ImUsersStatReq;
use teamtalk_proto::pb::im::message::{
    ImGetMsgListReq, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq,
};
use teamtalk_proto::{Command, Message};

const T: Duration = Duration::from_secs(10);

struct World {
    sys: RunningSystem,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SystemConfig::ephemeral(dir.path(), 2);
    cfg.hash_params = HashParams::INSECURE_FAST;
    cfg.link_timers = Some((Duration::from_millis(200), Duration::from_secs(3)));
    let sys = system::start(cfg).expect("system starts");
    assert!(
        sys.wait_ready(T),
        "msg_servers registered with login_server"
    );
    let store = sys.store();
    for name in ["alice", "bob", "carol"] {
        let user = NewUser {
            name: name.into(),
            nick: name.to_uppercase(),
            ..NewUser::default()
        };
        store
            .add_user(&user, &md5_hex(b"secret"))
            .expect("add user");
    }
    World { sys, _dir: dir }
}

impl World {
    fn msg(&self, i: usize) -> std::net::SocketAddr {
        self.sys.msg_addrs()[i]
    }

    fn login(&self, i: usize, name: &str, ct: ClientType) -> Client {
        let mut c = Client::connect(self.msg(i), T).expect("connect");
        c.login(name, "secret", ct, T).expect("login");
        let me = c.user_id().expect("user id");
        sync_route(&mut c, me);
        c
    }

    fn user_id(&self, name: &str) -> u32 {
        self.sys
            .store()
            .verify_login(name, &md5_hex(b"secret"))
            .expect("store")
            .expect("user exists")
            .id
    }
}

fn text(to: u32, body: &str) -> ImMsgData {
    ImMsgData {
        from_user_id: 0,
        to_session_id: to,
        msg_id: 0,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::copy_from_slice(body.as_bytes()),
        attach_data: None,
    }
}

/// Sends a message and waits for its ack; returns the server's msg_id.
fn send(c: &mut Client, to: u32, body: &str) -> u32 {
    let reply = c
        .request(Command::MsgData, &text(to, body), Command::MsgDataAck, T)
        .expect("ack");
    let Message::MsgDataAck(ack) = reply else {
        panic!("not an ack: {reply:?}")
    };
    assert_eq!(ack.session_id, to);
    ack.msg_id
}

/// A round trip through route_server on this client's msg_server link.
/// route_server reads that link in order, so once the answer is back it
/// has also seen the presence update of this client's login: a relay to
/// this user from another msg_server cannot race it any more.
fn sync_route(c: &mut Client, user: u32) {
    let req = ImUsersStatReq {
        user_id: 0,
        user_id_list: vec![user],
        attach_data: None,
    };
    c.request(
        Command::BuddyListUsersStatusRequest,
        &req,
        Command::BuddyListUsersStatusResponse,
        T,
    )
    .expect("users status answered by route_server");
}

/// Reads until the server closes the connection (other PDUs, such as
/// presence notices, may come first).
fn closed(c: &mut Client) -> bool {
    loop {
        match c.recv(T) {
            Err(ClientError::Closed) => return true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

fn receive(c: &mut Client) -> ImMsgData {
    match c.wait_command(Command::MsgData, T).expect("delivery") {
        Message::MsgData(m) => m,
        other => panic!("{other:?}"),
    }
}

fn history(c: &mut Client, peer: u32) -> Vec<(u32, u32, String)> {
    let req = ImGetMsgListReq {
        user_id: 0,
        session_type: 1,
        session_id: peer,
        msg_id_begin: 0,
        msg_cnt: 100,
        attach_data: None,
    };
    let Message::MsgListResponse(rsp) = c
        .request(Command::MsgListRequest, &req, Command::MsgListResponse, T)
        .expect("history")
    else {
        panic!()
    };
    rsp.msg_list
        .into_iter()
        .map(|m| {
            (
                m.msg_id,
                m.from_session_id,
                String::from_utf8_lossy(&m.msg_data).into_owned(),
            )
        })
        .collect()
}

fn unread(c: &mut Client) -> (u32, Vec<(u32, u32)>) {
    let Message::MsgUnreadCntResponse(rsp) = c
        .request(
            Command::MsgUnreadCntRequest,
            &ImUnreadMsgCntReq {
                user_id: 0,
                attach_data: None,
            },
            Command::MsgUnreadCntResponse,
            T,
        )
        .expect("unread")
    else {
        panic!()
    };
    let per = rsp
        .unreadinfo_list
        .iter()
        .map(|u| (u.session_id, u.unread_cnt))
        .collect();
    (rsp.total_cnt, per)
}

#[test]
fn login_through_http_assignment_and_refusals() {
    let w = world();
    let assignment = query_msg_server(w.sys.http_addr(), T).expect("assignment");
    let addr = assignment.addr().expect("address");
    assert!(w.sys.msg_addrs().contains(&addr), "{addr} is one of ours");
    let mut c = Client::connect(addr, T).unwrap();
    let res = c.login("alice", "secret", ClientType::Windows, T).unwrap();
    let info = res.user_info.expect("user info");
    assert_eq!(
        (info.user_id, info.user_nick_name.as_str()),
        (w.user_id("alice"), "ALICE")
    );

    for (name, pw) in [("alice", "wrong"), ("nobody", "secret")] {
        let mut c = Client::connect(addr, T).unwrap();
        match c.login(name, pw, ClientType::Windows, T) {
            Err(ClientError::LoginRefused { code: 6, .. }) => {}
            other => panic!("{name}: {other:?}"),
        }
        // A refused login closes the connection.
        assert!(closed(&mut c));
    }
}

#[test]
fn chat_across_msg_servers_online_and_offline_with_unread_history_and_read_ack() {
    let w = world();
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut bob = w.login(1, "bob", ClientType::Windows);

    // Online, across msg_servers.
    let id1 = send(&mut alice, bob_id, "hello bob");
    let got = receive(&mut bob);
    assert_eq!(
        (got.from_user_id, got.msg_id, &got.msg_data[..]),
        (alice_id, id1, &b"hello bob"[..])
    );
    let id2 = send(&mut bob, alice_id, "hi alice");
    assert!(id2 > id1, "msg ids increase per conversation");
    assert_eq!(receive(&mut alice).msg_id, id2);

    // Offline: bob leaves, alice writes twice, bob comes back elsewhere.
    drop(bob);
    let id3 = send(&mut alice, bob_id, "are you there?");
    let id4 = send(&mut alice, bob_id, "ping");
    assert!(id4 > id3 && id3 > id2);
    let mut bob = w.login(0, "bob", ClientType::Windows);
    let (total, per) = unread(&mut bob);
    assert_eq!(total, 3, "hello bob + 2 offline");
    assert_eq!(per, vec![(alice_id, 3)]);
    let h = history(&mut bob, alice_id);
    let ids: Vec<u32> = h.iter().map(|m| m.0).collect();
    assert_eq!(ids, vec![id4, id3, id2, id1], "newest first");
    assert_eq!(h[0].2, "ping");

    // Read ack clears bob's unread and tells bob's other session.
    let mut bob_phone = w.login(1, "bob", ClientType::Android);
    bob.send(
        Command::MsgReadAck,
        &ImMsgDataReadAck {
            user_id: 0,
            session_id: alice_id,
            msg_id: id4,
            session_type: 1,
        },
    )
    .unwrap();
    let Message::MsgReadNotify(n) = bob_phone.wait_command(Command::MsgReadNotify, T).unwrap()
    else {
        panic!()
    };
    assert_eq!((n.user_id, n.session_id, n.msg_id), (bob_id, alice_id, id4));
    assert_eq!(unread(&mut bob).0, 0);
}

#[test]
fn both_client_types_of_a_user_receive_and_the_senders_other_device_too() {
    let w = world();
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut bob_pc = w.login(0, "bob", ClientType::Mac);
    let mut bob_phone = w.login(1, "bob", ClientType::Ios);
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut alice_phone = w.login(1, "alice", ClientType::Android);
    let id = send(&mut alice, bob_id, "to all of bob");
    for c in [&mut bob_pc, &mut bob_phone, &mut alice_phone] {
        let m = receive(c);
        assert_eq!(
            (m.msg_id, m.from_user_id, m.to_session_id),
            (id, alice_id, bob_id)
        );
    }
}

#[test]
fn spoofed_sender_is_replaced_by_the_session_user() {
    let w = world();
    let (alice_id, bob_id, carol_id) = (w.user_id("alice"), w.user_id("bob"), w.user_id("carol"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let mut forged = text(bob_id, "i am carol");
    forged.from_user_id = carol_id;
    let Message::MsgDataAck(ack) = alice
        .request(Command::MsgData, &forged, Command::MsgDataAck, T)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(ack.user_id, alice_id);
    assert_eq!(receive(&mut bob).from_user_id, alice_id);
    let h = history(&mut bob, alice_id);
    assert_eq!(h[0].1, alice_id);
    assert!(
        history(&mut bob, carol_id).is_empty(),
        "nothing stored as carol"
    );
}

#[test]
fn duplicate_login_kicks_the_older_session_across_msg_servers() {
    let w = world();
    let first = w.login(0, "alice", ClientType::Windows);
    let mut first = first;
    let _second = w.login(1, "alice", ClientType::Mac);
    let Message::LoginKickUser(kick) = first.wait_command(Command::LoginKickUser, T).unwrap()
    else {
        panic!()
    };
    assert_eq!(kick.kick_reason, 1, "DUPLICATE_USER");
    assert!(closed(&mut first));
    // Same server, same class, too.
    let mut phone = w.login(0, "alice", ClientType::Android);
    let _phone2 = w.login(0, "alice", ClientType::Ios);
    assert!(phone.wait_command(Command::LoginKickUser, T).is_ok());
}

#[test]
fn commands_before_login_and_malformed_frames_close_only_that_connection() {
    let w = world();
    let bob_id = w.user_id("bob");
    let mut alice = w.login(0, "alice", ClientType::Windows);

    let mut early = Client::connect(w.msg(0), T).unwrap();
    early
        .send(Command::MsgData, &text(bob_id, "sneaky"))
        .unwrap();
    assert!(closed(&mut early));

    let mut early_query = Client::connect(w.msg(0), T).unwrap();
    early_query
        .send(
            Command::BuddyListUsersStatusRequest,
            &ImUsersStatReq {
                user_id: 1,
                user_id_list: vec![1],
                attach_data: None,
            },
        )
        .unwrap();
    assert!(closed(&mut early_query));

    // One 16-byte frame announcing length 15: the C++ msg_server's killer.
    let mut bad = Client::connect(w.msg(0), T).unwrap();
    bad.send_raw(&[0, 0, 0, 15, 0, 1, 0, 0, 0, 7, 7, 1, 0, 0, 0, 0])
        .unwrap();
    assert!(closed(&mut bad));
    // An oversized length, too.
    let mut huge = Client::connect(w.msg(0), T).unwrap();
    huge.send_raw(&[0xff, 0xff, 0xff, 0xff, 0, 1, 0, 0, 0, 7, 7, 1, 0, 0, 0, 0])
        .unwrap();
    assert!(closed(&mut huge));

    // Everyone else carries on.
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let id = send(&mut alice, bob_id, "still here");
    assert_eq!(receive(&mut bob).msg_id, id);
}

#[test]
fn db_proxy_restart_mid_conversation_loses_no_acked_message() {
    let mut w = world();
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut acked = vec![send(&mut alice, bob_id, "before")];

    w.sys.stop_db();
    // While db_proxy is down nothing is acknowledged.
    let seq = alice
        .send(Command::MsgData, &text(bob_id, "during"))
        .unwrap();
    assert!(
        alice
            .wait_for(Duration::from_millis(500), "ack", |p| p
                .is(Command::MsgDataAck.key())
                && p.seq() == seq)
            .is_err(),
        "no ack without a store"
    );
    w.sys.restart_db().expect("db_proxy restarts");

    // The msg_server reconnects by itself; later messages flow again.
    let deadline = daemons::clock::now() + Duration::from_secs(30);
    loop {
        let seq = alice
            .send(Command::MsgData, &text(bob_id, "after"))
            .unwrap();
        match alice.wait_for(Duration::from_millis(500), "ack", |p| {
            p.is(Command::MsgDataAck.key()) && p.seq() == seq
        }) {
            Ok(p) => {
                let Ok(Message::MsgDataAck(ack)) = Message::decode(&p) else {
                    panic!()
                };
                acked.push(ack.msg_id);
                break;
            }
            Err(_) => assert!(
                daemons::clock::now() < deadline,
                "msg_server never reconnected to db_proxy"
            ),
        }
    }
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let stored: Vec<u32> = history(&mut bob, alice_id).iter().map(|m| m.0).collect();
    for id in acked {
        assert!(
            stored.contains(&id),
            "acked message {id} missing from {stored:?}"
        );
    }
}
