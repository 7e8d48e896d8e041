//! End to end: the four daemons on 127.0.0.1 with kernel-chosen ports (one
//! store, one route_server, one login_server, two msg_servers), driven over
//! TCP by a client that speaks the TeamTalk protocol like the real ones.

mod common;

use std::time::Duration;

use common::*;
use daemons::client::{Client, ClientError, query_msg_server};
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::buddy::ImUsersStatReq;
use teamtalk_proto::pb::im::message::ImMsgDataReadAck;
use teamtalk_proto::{Command, Message};

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

    // All of it went between daemons of one process: their links are
    // in-process (each msg_server's to db_proxy, route_server and
    // login_server at least).
    assert!(
        w.sys.local_links() >= 6,
        "in-process links: {}",
        w.sys.local_links()
    );
}

#[test]
fn with_local_links_off_the_daemons_link_over_tcp() {
    let w = world_with(|cfg| {
        cfg.link_timers = Some((Duration::from_millis(200), Duration::from_secs(8)));
        cfg.local_links = false;
    });
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let id = send(&mut alice, bob_id, "over tcp");
    let got = receive(&mut bob);
    assert_eq!((got.from_user_id, got.msg_id), (alice_id, id));
    assert_eq!(w.sys.local_links(), 0);
}

/// The daemons' App threads, sorted by daemon name.
fn threads_of(w: &World) -> Vec<(&'static str, String)> {
    let mut threads = w.sys.app_threads();
    threads.sort();
    threads
}

/// Which daemons run on the shared thread.
fn on_core(w: &World) -> Vec<&'static str> {
    threads_of(w)
        .into_iter()
        .filter(|(_, t)| t == "teamtalk-core")
        .map(|(d, _)| d)
        .collect()
}

#[test]
fn the_daemons_a_login_crosses_share_one_thread_and_keep_it_across_a_restart() {
    let w = world_with(|cfg| {
        cfg.link_timers = Some((Duration::from_millis(200), Duration::from_secs(8)));
        cfg.ports.msg.truncate(1);
        cfg.ports.ws.truncate(1);
    });
    let core = [
        "db_proxy_server",
        "login_server",
        "msg_server",
        "route_server",
    ];
    assert_eq!(on_core(&w), core, "{:?}", threads_of(&w));
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut bob = w.login(0, "bob", ClientType::Windows);
    let id = send(&mut alice, bob_id, "one thread");
    let got = receive(&mut bob);
    assert_eq!((got.from_user_id, got.msg_id), (alice_id, id));
    drop((alice, bob));

    // A restarted db_proxy goes back on the shared thread, and the
    // msg_server there links to it again.
    let mut w = w;
    w.sys.restart_db().expect("db_proxy restarts");
    assert_eq!(on_core(&w), core, "{:?}", threads_of(&w));
    let deadline = daemons::clock::now() + Duration::from_secs(30);
    let mut alice = loop {
        assert!(
            daemons::clock::now() < deadline,
            "msg_server never reconnected to db_proxy"
        );
        if let Ok(mut c) = Client::connect(w.msg(0), T)
            && c.login("alice", "secret", ClientType::Windows, T).is_ok()
        {
            break c;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut bob = w.login(0, "bob", ClientType::Windows);
    let id = send(&mut alice, bob_id, "after the restart");
    assert_eq!(receive(&mut bob).msg_id, id);
}

#[test]
fn with_several_msg_servers_or_the_shared_thread_off_the_daemons_keep_their_own() {
    // Several msg_servers are there for several cores: only the others
    // share.
    let w = world();
    assert_eq!(
        on_core(&w),
        ["db_proxy_server", "login_server", "route_server"],
        "{:?}",
        threads_of(&w)
    );
    let w = world_with(|cfg| cfg.shared_thread = false);
    assert!(on_core(&w).is_empty(), "{:?}", threads_of(&w));
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let id = send(&mut alice, bob_id, "own threads");
    let got = receive(&mut bob);
    assert_eq!((got.from_user_id, got.msg_id), (alice_id, id));
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

/// Writes `bytes` on a fresh connection; true when the server then closes it.
fn raw_closed(addr: std::net::SocketAddr, bytes: &[u8]) -> bool {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, T).expect("connect");
    s.write_all(bytes).expect("write");
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
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
    // A well-behaved client cannot send such bytes, so a raw socket does.
    assert!(raw_closed(
        w.msg(0),
        &[0, 0, 0, 15, 0, 1, 0, 0, 0, 7, 7, 1, 0, 0, 0, 0]
    ));
    // An oversized length, too.
    assert!(raw_closed(
        w.msg(0),
        &[0xff, 0xff, 0xff, 0xff, 0, 1, 0, 0, 0, 7, 7, 1, 0, 0, 0, 0]
    ));

    // Everyone else carries on.
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let id = send(&mut alice, bob_id, "still here");
    assert_eq!(receive(&mut bob).msg_id, id);
}

/// Polls login_server's `/msg_server` until `want` holds of the answer.
fn assignment_until(
    w: &World,
    what: &str,
    want: impl Fn(&Result<daemons::client::Assignment, daemons::client::AssignError>) -> bool,
) {
    let deadline = daemons::clock::now() + Duration::from_secs(30);
    loop {
        let got = query_msg_server(w.sys.http_addr(), T);
        if want(&got) {
            return;
        }
        assert!(
            daemons::clock::now() < deadline,
            "{what}: last answer {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn login_server_offers_no_msg_server_while_db_proxy_is_down() {
    // TeamTalk's link timers (5 s heartbeats, 30 s timeout): the links
    // stay up between the daemons' heartbeats, so what login_server
    // answers comes from the registrations alone.
    let mut w = world_with(|_| {});
    assignment_until(&w, "registered", Result::is_ok);
    w.sys.stop_db();
    // Every msg_server lost its db_proxy: none is offered (2, all full),
    // instead of clients being sent where every login is refused.
    assignment_until(&w, "no msg_server offered", |a| {
        matches!(
            a,
            Err(daemons::client::AssignError::Refused { code: 2, .. })
        )
    });
    w.sys.restart_db().expect("db_proxy restarts");
    assignment_until(&w, "offered again", Result::is_ok);
    let addr = query_msg_server(w.sys.http_addr(), T)
        .unwrap()
        .addr()
        .unwrap();
    let mut c = Client::connect(addr, T).unwrap();
    c.login("alice", "secret", ClientType::Windows, T)
        .expect("the msg_server offered logs in");
}

#[test]
fn db_proxy_restart_mid_conversation_loses_no_acked_message() {
    let mut w = world();
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut acked = vec![send(&mut alice, bob_id, "before")];

    w.sys.stop_db();
    // While db_proxy is down nothing is acknowledged: the message is
    // answered with IMRequestFailed at once and, since an ack cannot say
    // "failed", the session is closed for the client to come back.
    let seq = alice
        .send(Command::MsgData, &text(bob_id, "during"))
        .unwrap();
    let failed = alice
        .wait_for(Duration::from_secs(10), "failure answer", |p| {
            p.is(Command::MsgDataAck.key()) || p.is(Command::OtherRequestFailed.key())
        })
        .expect("the message is answered");
    assert!(
        failed.is(Command::OtherRequestFailed.key()) && failed.seq() == seq,
        "no ack without a store: {failed:?}"
    );
    w.sys.restart_db().expect("db_proxy restarts");

    // The msg_server reconnects by itself; a new session's messages flow.
    let deadline = daemons::clock::now() + Duration::from_secs(30);
    loop {
        assert!(
            daemons::clock::now() < deadline,
            "msg_server never reconnected to db_proxy"
        );
        let Ok(mut c) = Client::connect(w.msg(0), T) else {
            continue;
        };
        if c.login("alice", "secret", ClientType::Windows, T).is_err() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let seq = c.send(Command::MsgData, &text(bob_id, "after")).unwrap();
        if let Ok(p) = c.wait_for(Duration::from_secs(5), "ack", |p| {
            p.is(Command::MsgDataAck.key()) && p.seq() == seq
        }) {
            let Ok(Message::MsgDataAck(ack)) = Message::decode(&p) else {
                panic!()
            };
            acked.push(ack.msg_id);
            break;
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
