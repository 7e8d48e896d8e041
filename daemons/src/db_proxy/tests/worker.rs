//! The store worker (`worker.rs`), the conf reader and a loopback server.

use std::sync::{Arc, Mutex};

use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::message::{
    ImGetLatestMsgIdReq, ImGetLatestMsgIdRsp, ImGetMsgListReq, ImGetMsgListRsp, ImMsgData,
    ImMsgDataReadAck,
};
use teamtalk_proto::pb::im::server::{ImValidateReq, ImValidateRsp};
use teamtalk_proto::{Command, Pdu};

use super::{attach, fixture, new_user, pw, text};
use crate::db_proxy::{
    DEFAULT_DATA_DIR, DbProxy, DbProxyConfig, DbWorker, Job, config_from_conf, spawn,
};
use crate::password::HashParams;
use crate::runtime::Worker;
use crate::store::{SqliteStore, Store, StoreOptions};

fn latest_req(seq: u16) -> Pdu {
    ImGetLatestMsgIdReq {
        user_id: 1,
        session_type: 1,
        session_id: 2,
        attach_data: None,
    }
    .to_pdu(seq)
}

#[test]
fn a_batch_splits_runs_so_reads_see_earlier_writes() {
    let f = fixture();
    let jobs: Vec<(usize, Pdu)> = vec![
        (0, text(1, 2, "a").to_pdu(1)),
        (1, text(2, 1, "b").to_pdu(2)),
        (2, latest_req(3)),
        (
            3,
            ImMsgData {
                msg_type: 0x11,
                ..text(1, 9, "g")
            }
            .to_pdu(4),
        ),
        (4, text(1, 2, "c").to_pdu(5)),
        (
            5,
            ImMsgDataReadAck {
                user_id: 2,
                session_id: 1,
                msg_id: 3,
                session_type: 1,
            }
            .to_pdu(6),
        ),
        (6, text(1, 2, "d").to_pdu(7)),
        (7, latest_req(8)),
    ];
    let out = Mutex::new(Vec::new());
    crate::db_proxy::worker::run_batch_for_test(&f.proxy, jobs, &|to, pdu| {
        out.lock().unwrap().push((to, pdu));
    });
    let out = out.into_inner().unwrap();
    // Every request but the read ack answered, in order, with its own seq.
    assert_eq!(
        out.iter().map(|(to, p)| (*to, p.seq())).collect::<Vec<_>>(),
        [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (6, 7), (7, 8)]
    );
    let id = |i: usize| out[i].1.decode_body::<ImMsgData>().unwrap().msg_id;
    let latest = |i: usize| {
        out[i]
            .1
            .decode_body::<ImGetLatestMsgIdRsp>()
            .unwrap()
            .latest_msg_id
    };
    assert_eq!(
        (id(0), id(1), latest(2), id(3), id(4), id(5), latest(6)),
        (1, 2, 2, 0, 3, 4, 4)
    );
    // The ack cleared user 2's count before message 4 arrived.
    assert_eq!(f.store.unread(2).unwrap().total, 1);
    // Three runs of messages: [a b] [c] [d].
    assert_eq!(f.proxy.stats().message_batches, 3);
}

#[test]
fn thousand_messages_keep_arrival_order_through_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(
            dir.path(),
            StoreOptions {
                hash_params: HashParams::INSECURE_FAST,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    let proxy = Arc::new(DbProxy::new(Arc::clone(&store)));
    let latency = Arc::new(crate::metrics::Histogram::latency());
    let wait = Arc::new(crate::metrics::Histogram::latency());
    let mut lane = DbWorker::store(Arc::clone(&proxy), Arc::clone(&latency), Arc::clone(&wait));
    let queued_at = crate::clock::now();
    let mut queued: Vec<Job<(u32, u32)>> = Vec::new();
    // Four connections (two per user) interleaved in one conversation, plus
    // a read every 100 requests; tag = (connection, arrival index).
    const N: u32 = 1_000;
    let mut expected_reads = Vec::new();
    let mut stored = 0u32;
    for i in 0..N {
        let conn = i % 4;
        let tag = (conn, i);
        if i % 100 == 99 {
            expected_reads.push((i, stored));
            queued.push(Job {
                to: tag,
                pdu: latest_req(i as u16),
                queued: queued_at,
            });
        } else {
            let (from, to) = if conn < 2 { (1, 2) } else { (2, 1) };
            let m = ImMsgData {
                create_time: i,
                ..text(from, to, &format!("#{i}"))
            };
            queued.push(Job {
                to: tag,
                pdu: m.to_pdu(i as u16),
                queued: queued_at,
            });
            stored += 1;
        }
    }
    // The runtime hands the lane at most the batch limit at a time.
    let mut done = Vec::new();
    while !queued.is_empty() {
        let batch: Vec<_> = queued.drain(..queued.len().min(64)).collect();
        lane.run(batch, &mut done);
    }
    let replies: Vec<((u32, u32), Pdu)> = done
        .into_iter()
        .filter_map(|r| r.pdu.map(|p| (r.to, p)))
        .collect();
    assert_eq!(replies.len(), N as usize);
    // Every request's wait in the queue was measured once, reads too; the
    // last batches waited for the ones before them.
    let waited = wait.snapshot();
    assert_eq!(waited.count, u64::from(N));
    assert!(waited.sum > 0.0);
    let mut next_id = 1;
    let mut reads = Vec::new();
    for (k, ((conn, i), pdu)) in replies.iter().enumerate() {
        // Replies come out in arrival order, each to its own connection.
        assert_eq!((*i as usize, *conn), (k, *i % 4));
        assert_eq!(pdu.seq(), *i as u16);
        if pdu.is(Command::MsgData.key()) {
            let m: ImMsgData = pdu.decode_body().unwrap();
            assert_eq!(m.create_time, *i);
            assert_eq!(m.msg_id, next_id, "ids strictly increase in arrival order");
            next_id += 1;
        } else {
            let r: ImGetLatestMsgIdRsp = pdu.decode_body().unwrap();
            reads.push((*i, r.latest_msg_id));
        }
    }
    assert_eq!(reads, expected_reads, "each read sees every earlier write");
    // The stored history has the same order.
    let history = store.message_list(1, 2, 0, 200).unwrap();
    let bodies: Vec<u32> = history.iter().map(|m| m.create_time).collect();
    let mut sorted = bodies.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(bodies, sorted);
    let s = proxy.stats();
    assert_eq!(s.messages_stored, u64::from(stored));
    assert!(s.message_batches >= 10 && s.message_batches <= u64::from(stored));
    assert_eq!(latency.snapshot().count, s.message_batches);
}

#[test]
fn login_lanes_and_the_store_lane_both_answer() {
    let f = fixture();
    let proxy = Arc::new(f.proxy);
    let mut login = DbWorker::login(Arc::clone(&proxy));
    let mut store = DbWorker::store(
        Arc::clone(&proxy),
        Arc::new(crate::metrics::Histogram::latency()),
        Arc::new(crate::metrics::Histogram::latency()),
    );
    let mut done = Vec::new();
    let logins = (1..=4u32)
        .map(|i| Job {
            to: i,
            queued: crate::clock::now(),
            pdu: ImValidateReq {
                user_name: format!("user{i}"),
                password: pw(i),
                attach_data: attach(),
                client_addr: None,
            }
            .to_pdu(i as u16),
        })
        .collect();
    login.run(logins, &mut done);
    assert!(done.iter().all(|r| !r.from_store));
    store.run(
        vec![Job {
            to: 9,
            pdu: text(1, 2, "x").to_pdu(9),
            queued: crate::clock::now(),
        }],
        &mut done,
    );
    assert!(done.last().is_some_and(|r| r.from_store));
    let mut got: Vec<(u32, u16, u32)> = done
        .into_iter()
        .filter_map(|r| r.pdu.map(|p| (r.to, p)))
        .map(|(to, p)| {
            let code = if p.is(Command::OtherValidateRsp.key()) {
                p.decode_body::<ImValidateRsp>().unwrap().result_code
            } else {
                p.decode_body::<ImMsgData>().unwrap().msg_id
            };
            (to, p.seq(), code)
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [(1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 4, 0), (9, 9, 1)]);
}

// -------------------------------------------------------------- config

#[test]
fn config_from_stock_conf() {
    let text = "ListenIP=127.0.0.1\nListenPort=10601\nThreadNum=48\t\t# cores\nMsfsSite=127.0.0.1\n\
        DBInstances=teamtalk_master,teamtalk_slave\nteamtalk_master_host=127.0.0.1\n\
        teamtalk_master_port=3306\nteamtalk_slave_dbname=teamtalk\n\
        teamtalk_master_dbname=teamtalk_master_db\n\
        CacheInstances=unread,token\nunread_db=1\ntoken_maxconncnt=16\naesKey=0123\n\
        DataDir=/var/lib/teamtalk\nUtcOffsetMinutes=480\nListenPrt=1\n";
    let conf = crate::conf::Conf::parse_str(text, "dbproxyserver.conf").unwrap();
    let cfg = config_from_conf(&conf).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:10601".parse().unwrap());
    assert_eq!(cfg.data_dir, std::path::PathBuf::from("/var/lib/teamtalk"));
    assert_eq!(cfg.options.utc_offset_secs, 8 * 3600);
    // DBInstances selects MySQL + Redis: the master instance, each cache
    // role at its own db, the roles not listed on `unread`'s.
    let mysql = cfg.mysql.expect("DBInstances selects the MySQL store");
    assert_eq!(
        mysql.mysql_url,
        "mysql://root:@127.0.0.1:3306/teamtalk_master_db"
    );
    assert_eq!(mysql.redis.unread, "redis://127.0.0.1:6379/1");
    assert_eq!(mysql.redis.token, "redis://127.0.0.1:6379/0");
    assert_eq!(mysql.redis.group_set, mysql.redis.unread);
    assert_eq!(mysql.max_connections, 16);

    let empty = crate::conf::Conf::parse_str("", "x.conf").unwrap();
    let cfg = config_from_conf(&empty).unwrap();
    assert!(cfg.mysql.is_none(), "no DBInstances: SQLite");
    assert_eq!(cfg.listen, "0.0.0.0:10600".parse().unwrap());
    assert_eq!(cfg.data_dir, std::path::PathBuf::from(DEFAULT_DATA_DIR));

    // TeamTalk's own conf, with its user and password, escaped in the URL.
    let stock = "DBInstances=teamtalk_master,teamtalk_slave\nteamtalk_master_host=db\n\
        teamtalk_master_port=3307\nteamtalk_master_dbname=teamtalk\n\
        teamtalk_master_username=test\nteamtalk_master_password=p@ss:1\n\
        teamtalk_master_maxconncnt=8\nCacheInstances=unread,group_set,token,sync,group_member\n\
        unread_host=r\nunread_port=6380\nunread_db=1\ngroup_set_host=r\ngroup_set_db=1\n\
        sync_db=2\ntoken_host=t\ntoken_db=3\ngroup_member_host=r\ngroup_member_db=1\n";
    let conf = crate::conf::Conf::parse_str(stock, "dbproxyserver.conf").unwrap();
    let mysql = config_from_conf(&conf).unwrap().mysql.unwrap();
    assert_eq!(mysql.mysql_url, "mysql://test:p%40ss%3A1@db:3307/teamtalk");
    assert_eq!(mysql.max_connections, 8);
    assert_eq!(mysql.redis.unread, "redis://r:6380/1");
    assert_eq!(mysql.redis.group_set, "redis://r:6379/1");
    assert_eq!(mysql.redis.token, "redis://t:6379/3");
    assert!(
        !format!("{mysql:?}").contains("p@ss"),
        "no password in logs"
    );
    let no_cache =
        crate::conf::Conf::parse_str("DBInstances=m\nm_dbname=x\n", "dbproxyserver.conf").unwrap();
    let err = config_from_conf(&no_cache).unwrap_err().to_string();
    assert!(err.contains("CacheInstances"), "{err}");

    let bad = crate::conf::Conf::parse_str("ListenPort=99999\n", "x.conf").unwrap();
    let err = config_from_conf(&bad).unwrap_err().to_string();
    assert!(err.contains("ListenPort"), "{err}");
}

#[test]
fn argon2_cost_from_conf() {
    let parse = |text: &str| {
        config_from_conf(&crate::conf::Conf::parse_str(text, "dbproxyserver.conf").unwrap())
    };
    assert_eq!(parse("").unwrap().hash_params, HashParams::RECOMMENDED);
    let p = parse("Argon2MemoryKiB=4096\nArgon2Passes=3\n")
        .unwrap()
        .hash_params;
    assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (4096, 3, 1));
    // One key alone keeps the other's default.
    let p = parse("Argon2Passes=4\n").unwrap().hash_params;
    assert_eq!(
        (p.m_cost_kib, p.t_cost),
        (HashParams::RECOMMENDED.m_cost_kib, 4)
    );
    // Out of range or not a number: the error names the key.
    for (text, key) in [
        ("Argon2MemoryKiB=4\n", "Argon2MemoryKiB"),
        ("Argon2MemoryKiB=2000000\n", "Argon2MemoryKiB"),
        ("Argon2MemoryKiB=lots\n", "Argon2MemoryKiB"),
        ("Argon2Passes=0\n", "Argon2Passes"),
        ("Argon2MemoryKiB=4096\nArgon2Passes=65\n", "Argon2Passes"),
        ("Argon2Passes=-1\n", "Argon2Passes"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text:?}: {err}");
        assert!(err.contains("dbproxyserver.conf"), "{text:?}: {err}");
    }
}

#[test]
fn applier_nice_from_conf() {
    let parse = |text: &str| {
        config_from_conf(&crate::conf::Conf::parse_str(text, "dbproxyserver.conf").unwrap())
    };
    assert_eq!(
        parse("").unwrap().applier_nice,
        crate::store::SERVING_APPLIER_NICE
    );
    assert_eq!(parse("ApplierNice=0\n").unwrap().applier_nice, 0);
    assert_eq!(parse("ApplierNice=7\n").unwrap().applier_nice, 7);
    for text in ["ApplierNice=20\n", "ApplierNice=-1\n", "ApplierNice=low\n"] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("ApplierNice"), "{text:?}: {err}");
    }
}

// ------------------------------------------------------------ loopback

#[test]
fn loopback_validate_store_and_list_over_tcp() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open_with(
            dir.path(),
            StoreOptions {
                hash_params: HashParams::INSECURE_FAST,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    store.add_user(&new_user(1), &pw(1)).unwrap();
    store.add_user(&new_user(2), &pw(2)).unwrap();
    let server = spawn(
        DbProxyConfig::new("127.0.0.1:0".parse().unwrap()),
        store as Arc<dyn Store>,
    )
    .unwrap();
    let addr = server.addr();
    assert_ne!(addr.port(), 0);

    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut codec = teamtalk_proto::PduCodec::default();
    let mut buf = bytes::BytesMut::new();
    let mut next = |sock: &mut std::net::TcpStream| -> Pdu {
        loop {
            if let Some(p) = codec.decode(&mut buf).unwrap() {
                if p.is(Command::OtherHeartbeat.key()) {
                    continue;
                }
                return p;
            }
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    };

    // Raw bytes on the wire: validate.
    let req = ImValidateReq {
        user_name: "user1".into(),
        password: pw(1),
        attach_data: attach(),
        client_addr: None,
    }
    .to_pdu(1);
    sock.write_all(&req.to_bytes()).unwrap();
    let rsp = next(&mut sock);
    assert_eq!((rsp.key(), rsp.seq()), (Command::OtherValidateRsp.key(), 1));
    let v: ImValidateRsp = rsp.decode_body().unwrap();
    assert_eq!(v.result_code, 0);
    assert_eq!(v.user_info.unwrap().user_id, 1);

    // Three messages in one write, then the history.
    let mut wire = Vec::new();
    for (i, body) in ["one", "two", "three"].iter().enumerate() {
        wire.extend_from_slice(&text(1, 2, body).to_pdu(10 + i as u16).to_bytes());
    }
    sock.write_all(&wire).unwrap();
    for i in 0..3u16 {
        let p = next(&mut sock);
        assert_eq!(p.seq(), 10 + i);
        let m: ImMsgData = p.decode_body().unwrap();
        assert_eq!(m.msg_id, u32::from(i) + 1);
        assert_eq!(m.attach_data, attach());
    }
    let req = ImGetMsgListReq {
        user_id: 2,
        session_type: 1,
        session_id: 1,
        msg_id_begin: 0,
        msg_cnt: 10,
        attach_data: attach(),
    };
    sock.write_all(&req.to_pdu(20).to_bytes()).unwrap();
    let p = next(&mut sock);
    assert_eq!((p.key(), p.seq()), (Command::MsgListResponse.key(), 20));
    let l: ImGetMsgListRsp = p.decode_body().unwrap();
    let bodies: Vec<&[u8]> = l.msg_list.iter().map(|m| m.msg_data.as_ref()).collect();
    assert_eq!(bodies, [&b"three"[..], b"two", b"one"]);
    assert_eq!(
        server
            .inspect(|app| app.proxy().stats().messages_stored)
            .unwrap(),
        3
    );

    // Shutting down tells the peer to stop sending, then closes.
    server.stop();
    let p = next(&mut sock);
    assert_eq!(p.key(), Command::OtherStopRecvPacket.key());
    assert_eq!(p.body.as_ref(), [0x08, 0x00]);
}
