//! Two whole systems (each with its own db_proxy_server) on one MariaDB +
//! Redis (`.ci/services`): the scaling path. A user writes one conversation
//! through both at once; message ids come from Redis `INCR`, so they are
//! unique and gap-free across the two db_proxies, each connection sees its
//! own acks in increasing order, and the history read through either system
//! holds every acknowledged message once.

mod common;

use std::collections::BTreeSet;

use common::{T, text};
use daemons::client::Client;
use daemons::password::{HashParams, md5_hex};
use daemons::store::NewUser;
use daemons::store::mysql_redis::testing;
use daemons::system::{self, SystemConfig};
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::message::ImGetMsgListReq;
use teamtalk_proto::{Command, Message};

const PER_SYSTEM: u32 = 150;

#[test]
fn two_db_proxies_on_one_database_share_a_conversation() {
    let Some(mysql) = testing::fresh_config() else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let systems: Vec<_> = dirs
        .iter()
        .map(|d| {
            let mut cfg = SystemConfig::ephemeral(d.path(), 1);
            cfg.hash_params = HashParams::INSECURE_FAST;
            cfg.mysql = Some(mysql.clone());
            let sys = system::start(cfg).expect("system on MariaDB");
            assert!(sys.wait_ready(T));
            sys
        })
        .collect();
    // Users made through one system exist for the other: one database.
    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let user = NewUser {
            name: name.into(),
            nick: name.into(),
            ..NewUser::default()
        };
        ids.push(
            systems[0]
                .store()
                .add_user(&user, &md5_hex(b"secret"))
                .unwrap(),
        );
    }
    let bob = ids[1];

    // alice on both systems at once, each pipelining a burst to bob.
    let threads: Vec<_> = systems
        .iter()
        .enumerate()
        .map(|(i, sys)| {
            let addr = sys.msg_addrs()[0];
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, T).expect("connect");
                c.login("alice", "secret", ClientType::Windows, T)
                    .expect("login");
                for n in 0..PER_SYSTEM {
                    c.send(Command::MsgData, &text(bob, &format!("via {i}: {n}")))
                        .expect("send");
                }
                let mut acked = Vec::new();
                while acked.len() < PER_SYSTEM as usize {
                    let p = c
                        .wait_for(T, "ack", |p| p.is(Command::MsgDataAck.key()))
                        .expect("ack");
                    if let Ok(Message::MsgDataAck(a)) = Message::decode(&p) {
                        acked.push(a.msg_id);
                    }
                }
                acked
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in threads {
        let acked = t.join().expect("sender");
        // One db_proxy stores a connection's messages in order.
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "acks of one connection increase: {acked:?}"
        );
        for id in acked {
            assert!(all.insert(id), "msg_id {id} given twice");
        }
    }
    let total = 2 * PER_SYSTEM;
    assert_eq!(all, (1..=total).collect::<BTreeSet<_>>(), "gap-free");

    // bob reads the whole conversation through the second system.
    let mut c = Client::connect(systems[1].msg_addrs()[0], T).unwrap();
    c.login("bob", "secret", ClientType::Windows, T).unwrap();
    let mut seen = BTreeSet::new();
    let mut begin = 0;
    loop {
        let req = ImGetMsgListReq {
            user_id: 0,
            session_type: 1,
            session_id: ids[0],
            msg_id_begin: begin,
            msg_cnt: 100,
            attach_data: None,
        };
        let Message::MsgListResponse(page) = c
            .request(Command::MsgListRequest, &req, Command::MsgListResponse, T)
            .unwrap()
        else {
            panic!("no history")
        };
        let Some(last) = page.msg_list.last().map(|m| m.msg_id) else {
            break;
        };
        seen.extend(page.msg_list.iter().map(|m| m.msg_id));
        if last <= 1 {
            break;
        }
        begin = last - 1;
    }
    assert_eq!(seen, all, "every acked message is in the history once");
    // And the unread count both systems kept in one Redis hash.
    let unread = systems[0].store().unread(bob).unwrap();
    assert_eq!(unread.total, total);
}

/// MariaDB killed (SIGKILL) and restarted under a stream of messages:
/// while it is down each message is answered with a failure (never an
/// ack), service resumes by itself once it is back, and every message
/// acked before, during or after is in the history.
#[test]
fn a_mariadb_restart_mid_stream_loses_no_acked_message() {
    let Some((dir, services)) = testing::private_services("restart") else {
        return;
    };
    let mysql = testing::config_on(&services);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = SystemConfig::ephemeral(data.path(), 1);
    cfg.hash_params = HashParams::INSECURE_FAST;
    cfg.mysql = Some(mysql);
    let sys = system::start(cfg).expect("system on MariaDB");
    assert!(sys.wait_ready(T));
    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let user = NewUser {
            name: name.into(),
            nick: name.into(),
            ..NewUser::default()
        };
        ids.push(sys.store().add_user(&user, &md5_hex(b"secret")).unwrap());
    }
    let addr = sys.msg_addrs()[0];
    let short = std::time::Duration::from_secs(5);
    // A session that got a failure may be closed by msg_server (its
    // answer to some failures): a real client logs in again, and so does
    // this one, which may fail too while MariaDB is down.
    let mut session: Option<Client> = None;
    let mut acked = Vec::new();
    let mut send = |n: u32| -> bool {
        if session.is_none() {
            let Ok(mut c) = Client::connect(addr, short) else {
                return false;
            };
            if c.login("alice", "secret", ClientType::Windows, short)
                .is_err()
            {
                return false;
            }
            session = Some(c);
        }
        let Some(c) = session.as_mut() else {
            return false;
        };
        let body = text(ids[1], &format!("m{n}"));
        match c.request(Command::MsgData, &body, Command::MsgDataAck, short) {
            Ok(Message::MsgDataAck(a)) => {
                acked.push(a.msg_id);
                true
            }
            _ => {
                session = None;
                false
            }
        }
    };
    for n in 0..20 {
        assert!(send(n), "before the restart every message is acked");
    }
    let restart = std::thread::spawn(move || testing::restart_mysql(&dir, 2));
    let mut failed = 0;
    let mut n = 100;
    while !restart.is_finished() {
        if !send(n) {
            failed += 1;
        }
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    restart.join().unwrap();
    assert!(
        failed > 0,
        "messages sent while MariaDB was down were not acked"
    );
    // Service resumes without any restart of ours.
    let deadline = daemons::clock::now() + std::time::Duration::from_secs(30);
    while !send(n) {
        assert!(daemons::clock::now() < deadline, "service did not resume");
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for k in 0..20 {
        assert!(send(1000 + k), "after the restart every message is acked");
    }
    let mut bob = Client::connect(sys.msg_addrs()[0], T).unwrap();
    bob.login("bob", "secret", ClientType::Windows, T).unwrap();
    let req = ImGetMsgListReq {
        user_id: 0,
        session_type: 1,
        session_id: ids[0],
        msg_id_begin: 0,
        msg_cnt: 200,
        attach_data: None,
    };
    let Message::MsgListResponse(page) = bob
        .request(Command::MsgListRequest, &req, Command::MsgListResponse, T)
        .unwrap()
    else {
        panic!("no history")
    };
    let stored: BTreeSet<u32> = page.msg_list.iter().map(|m| m.msg_id).collect();
    for id in &acked {
        assert!(stored.contains(id), "acked msg_id {id} lost");
    }
}
