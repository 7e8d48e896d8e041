//! Data as TeamTalk's C++ db_proxy (and its PHP admin) writes it, read back
//! by [`MysqlStore`]: rows inserted with the C++ code's column lists and
//! values, Redis keys with its names and encodings. Then our writes go on
//! from where the C++ counters were.

use mysql::prelude::Queryable;

use super::testing;
use super::*;
use crate::password::{HashParams, md5_hex};

fn options() -> StoreOptions {
    StoreOptions {
        hash_params: HashParams::INSECURE_FAST,
        clock: Arc::new(|| 2_000_000_000),
        applier_nice: 0,
    }
}

#[test]
fn what_the_cpp_db_proxy_wrote_is_read_back() {
    let Some(config) = testing::fresh_config() else {
        return;
    };
    let store = MysqlStore::open(&config, options()).unwrap();
    let mut db = store.conn().unwrap();
    let redis = redis::Client::open(config.redis.unread.as_str()).unwrap();
    let mut r = redis.get_connection().unwrap();

    // Users as the PHP admin makes them: md5(md5(pw) . salt), salt 0..9999.
    let salted =
        |pw: &str, salt: &str| md5_hex(format!("{}{salt}", md5_hex(pw.as_bytes())).as_bytes());
    for (id, name, salt) in [(7u32, "zhang", "1234"), (9, "li", "77")] {
        db.exec_drop(
            "INSERT INTO IMUser (id, sex, name, domain, nick, password, salt, phone, email, avatar,
                                 departId, status, created, updated, push_shield_status, sign_info)
             VALUES (?, 1, ?, ?, ?, ?, ?, '13800000000', '', '', 1, 0, 1400000000, 1400000000, 0, '')",
            (id, name, name, name.to_uppercase(), salted("secret", salt), salt),
        )
        .unwrap();
    }
    let ok = store.verify_login("zhang", &md5_hex(b"secret")).unwrap();
    assert_eq!(ok.map(|u| (u.id, u.nick)), Some((7, "ZHANG".into())));
    assert!(
        store
            .verify_login("zhang", &md5_hex(b"wrong"))
            .unwrap()
            .is_none()
    );

    // A conversation of 3 messages: relation row, IMMessage_<relateId % 8>,
    // msg_id_<relateId>, and unread_<to> for the one li has not read.
    db.exec_drop(
        "INSERT INTO IMRelationShip (id, smallId, bigId, status, created, updated)
         VALUES (13, 7, 9, 0, 1400000000, 1400000000)",
        (),
    )
    .unwrap();
    for (msg_id, from, to, body) in [
        (1u32, 7u32, 9u32, "aGVsbG8="),
        (2, 9, 7, "aGk="),
        (3, 7, 9, "Ynll"),
    ] {
        db.exec_drop(
            "INSERT INTO IMMessage_5 (relateId, fromId, toId, msgId, content, status, type,
                                      created, updated)
             VALUES (13, ?, ?, ?, ?, 0, 1, ?, ?)",
            (
                from,
                to,
                msg_id,
                body,
                1_400_000_000 + msg_id,
                1_400_000_000 + msg_id,
            ),
        )
        .unwrap();
    }
    redis::cmd("SET")
        .arg("msg_id_13")
        .arg(3)
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("HSET")
        .arg("unread_9")
        .arg("7")
        .arg("1")
        .query::<()>(&mut r)
        .unwrap();
    db.exec_drop(
        "INSERT INTO IMRecentSession (userId, peerId, type, status, created, updated)
         VALUES (9, 7, 1, 0, 1400000003, 1400000003), (7, 9, 1, 0, 1400000003, 1400000003)",
        (),
    )
    .unwrap();

    let history = store.message_list(9, 7, 0, 10).unwrap();
    assert_eq!(
        history
            .iter()
            .map(|m| (m.msg_id, m.from, m.data.as_slice()))
            .collect::<Vec<_>>(),
        [(3, 7, &b"Ynll"[..]), (2, 9, b"aGk="), (1, 7, b"aGVsbG8=")]
    );
    assert_eq!(history[0].create_time, 1_400_000_003);
    assert_eq!(store.latest_msg_id(7, 9).unwrap(), 3);
    let unread = store.unread(9).unwrap();
    assert_eq!(unread.total, 1);
    assert_eq!(unread.sessions[0].peer, 7);
    assert_eq!(unread.sessions[0].latest.msg_id, 3);
    let sessions = store.recent_sessions(9, 0).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (sessions[0].peer, sessions[0].latest.data.as_slice()),
        (7, &b"Ynll"[..])
    );

    // Ours continues the C++ counter, in the same shard, and counts unread
    // in the same hash.
    let next = store
        .store_message(&NewMessage {
            from: 7,
            to: 9,
            session_type: SessionType::Single,
            msg_type: 1,
            create_time: 1_500_000_000,
            data: b"again".to_vec(),
            dedupe_key: None,
        })
        .unwrap();
    assert_eq!(next.msg_id(), 4);
    let n: u32 = db
        .exec_first("SELECT COUNT(*) FROM IMMessage_5 WHERE relateId = 13", ())
        .unwrap()
        .unwrap();
    assert_eq!(n, 4);
    let count: String = redis::cmd("HGET")
        .arg("unread_9")
        .arg("7")
        .query(&mut r)
        .unwrap();
    assert_eq!(count, "2");

    // A group as GroupModel writes it: IMGroup, IMGroupMember (status 0),
    // the group_member_<gid> cache, IMGroupMessage_<gid % 8>, the
    // group_msg_id_ counter, the total and one member's snapshot, a shield.
    db.exec_drop(
        "INSERT INTO IMGroup (id, name, avatar, creator, type, userCnt, status, version,
                              lastChated, updated, created)
         VALUES (11, 'team', '', 7, 2, 2, 0, 3, 1400000100, 1400000000, 1400000000)",
        (),
    )
    .unwrap();
    for user in [7u32, 9] {
        db.exec_drop(
            "INSERT INTO IMGroupMember (groupId, userId, status, created, updated)
             VALUES (11, ?, 0, 1400000000, 1400000000)",
            (user,),
        )
        .unwrap();
        redis::cmd("HSET")
            .arg("group_member_11")
            .arg(user)
            .arg(1_400_000_000)
            .query::<()>(&mut r)
            .unwrap();
    }
    for msg_id in 1..=2u32 {
        db.exec_drop(
            "INSERT INTO IMGroupMessage_3 (groupId, userId, msgId, content, type, status,
                                           updated, created)
             VALUES (11, 7, ?, ?, 17, 0, ?, ?)",
            (msg_id, format!("g{msg_id}"), 1_400_000_100, 1_400_000_100),
        )
        .unwrap();
    }
    redis::cmd("SET")
        .arg("group_msg_id_11")
        .arg(2)
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("HSET")
        .arg("11_im_group_msg")
        .arg("count")
        .arg(2)
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("HSET")
        .arg("7_11_im_user_group")
        .arg("count")
        .arg(2)
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("HSET")
        .arg("group_set_11")
        .arg("9_1")
        .arg("1")
        .query::<()>(&mut r)
        .unwrap();
    // A device token as MessageCounter.cpp sets it.
    redis::cmd("SET")
        .arg("device_9")
        .arg("ios:abcdef")
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("SET")
        .arg("device_abcdef")
        .arg("9")
        .query::<()>(&mut r)
        .unwrap();

    let group = store.group(11).unwrap().expect("the group");
    assert_eq!(
        (group.version, group.last_msg_id, group.member_ids()),
        (3, 2, vec![7, 9])
    );
    assert!(group.member(9).unwrap().shield && !group.member(7).unwrap().shield);
    assert_eq!(store.user_groups(9, None).unwrap()[0].version, 3);
    // li never read the group: TeamTalk's total − (no) snapshot.
    assert_eq!(store.unread(9).unwrap().total, 2 + 2);
    assert_eq!(store.unread(7).unwrap().total, 0);
    let g = store.group_message_list(9, 11, 0, 10).unwrap();
    assert_eq!(g.iter().map(|m| m.msg_id).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(
        store.group_shields(11, &[7, 9]).unwrap(),
        [(7, false), (9, true)]
    );
    assert_eq!(
        store.device_tokens(&[9]).unwrap(),
        [DeviceToken {
            user_id: 9,
            client_type: 0x11,
            token: "abcdef".into()
        }]
    );
    // Our post continues the group counter; the sender's snapshot follows.
    let posted = store
        .store_message(&NewMessage {
            from: 9,
            to: 11,
            session_type: SessionType::Group,
            msg_type: 17,
            create_time: 1_500_000_000,
            data: b"g3".to_vec(),
            dedupe_key: None,
        })
        .unwrap();
    assert_eq!(posted.msg_id(), 3);
    assert_eq!(store.unread(9).unwrap().total, 2, "posting reads the group");
    assert_eq!(store.unread(7).unwrap().total, 1);
    let total: String = redis::cmd("HGET")
        .arg("11_im_group_msg")
        .arg("count")
        .query(&mut r)
        .unwrap();
    assert_eq!(total, "3");
}

/// What we write is what the C++ db_proxy reads: the same rows and keys.
#[test]
fn what_we_write_is_in_the_cpp_form() {
    let Some(config) = testing::fresh_config() else {
        return;
    };
    let store = MysqlStore::open(&config, options()).unwrap();
    let ids = store.seed_teamtalk_users("u", 3, &md5_hex(b"pw")).unwrap();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let sent = store
        .store_message(&NewMessage {
            from: a,
            to: b,
            session_type: SessionType::Single,
            msg_type: 1,
            create_time: 1_500_000_000,
            data: b"x".to_vec(),
            dedupe_key: None,
        })
        .unwrap();
    let mut db = store.conn().unwrap();
    let relate: u32 = db
        .exec_first(
            "SELECT id FROM IMRelationShip WHERE smallId = ? AND bigId = ?",
            (a, b),
        )
        .unwrap()
        .unwrap();
    let row: Option<(u32, u32, u32, Vec<u8>)> = db
        .exec_first(
            format!(
                "SELECT fromId, toId, msgId, content FROM IMMessage_{} WHERE relateId = ?",
                relate % 8
            ),
            (relate,),
        )
        .unwrap();
    assert_eq!(row, Some((a, b, sent.msg_id(), b"x".to_vec())));
    let mut r = redis::Client::open(config.redis.unread.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let counter: u32 = redis::cmd("GET")
        .arg(format!("msg_id_{relate}"))
        .query(&mut r)
        .unwrap();
    assert_eq!(counter, sent.msg_id());
    let unread: u32 = redis::cmd("HGET")
        .arg(format!("unread_{b}"))
        .arg(a)
        .query(&mut r)
        .unwrap();
    assert_eq!(unread, 1);
    let sessions: u32 = db
        .exec_first(
            "SELECT COUNT(*) FROM IMRecentSession WHERE type = 1 AND status = 0",
            (),
        )
        .unwrap()
        .unwrap();
    assert_eq!(sessions, 2);

    let g = store
        .create_group(&NewGroup {
            name: "g".into(),
            avatar: String::new(),
            creator: a,
            group_type: GroupType::Tmp,
            members: vec![b],
        })
        .unwrap();
    store
        .change_group_members(Actor::Admin, g.id, MemberChange::Add, &[c])
        .unwrap();
    store.set_group_shield(c, g.id, true).unwrap();
    let members: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("group_member_{}", g.id))
        .query(&mut r)
        .unwrap();
    let mut keys: Vec<_> = members.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, [a.to_string(), b.to_string(), c.to_string()]);
    let shield: String = redis::cmd("HGET")
        .arg(format!("group_set_{}", g.id))
        .arg(format!("{c}_1"))
        .query(&mut r)
        .unwrap();
    assert_eq!(shield, "1");
    let (version, count, status): (u32, u32, u32) = db
        .exec_first(
            "SELECT version, userCnt, status FROM IMGroup WHERE id = ?",
            (g.id,),
        )
        .unwrap()
        .unwrap();
    assert_eq!((version, count, status), (2, 3, 0));
    store.set_device_token(a, 0x12, "tok").unwrap();
    let v: String = redis::cmd("GET")
        .arg(format!("device_{a}"))
        .query(&mut r)
        .unwrap();
    assert_eq!(v, "android:tok");
    let owner: String = redis::cmd("GET").arg("device_tok").query(&mut r).unwrap();
    assert_eq!(owner, a.to_string());
}

/// Two stores (two db_proxies) on one database and Redis, writing one
/// conversation at once: ids unique and gap-free, none lost.
#[test]
fn two_stores_share_a_conversation() {
    let Some(config) = testing::fresh_config() else {
        return;
    };
    let one = Arc::new(MysqlStore::open(&config, options()).unwrap());
    let two = Arc::new(MysqlStore::open(&config, options()).unwrap());
    let ids = one.seed_teamtalk_users("u", 2, &md5_hex(b"pw")).unwrap();
    let (a, b) = (ids[0], ids[1]);
    let threads: Vec<_> = [Arc::clone(&one), Arc::clone(&two)]
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for n in 0..50 {
                    let batch: Vec<NewMessage> = (0..4)
                        .map(|k| NewMessage {
                            from: if (n + k) % 2 == 0 { a } else { b },
                            to: if (n + k) % 2 == 0 { b } else { a },
                            session_type: SessionType::Single,
                            msg_type: 1,
                            create_time: 1_500_000_000,
                            data: format!("{i}-{n}-{k}").into_bytes(),
                            dedupe_key: None,
                        })
                        .collect();
                    for r in store.store_messages(&batch).unwrap() {
                        got.push(r.unwrap().msg_id());
                    }
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let got = t.join().unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "increasing per db_proxy"
        );
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<_>>());
    let mut seen: Vec<u32> = Vec::new();
    let mut begin = 0;
    loop {
        let page = two.message_list(a, b, begin, 200).unwrap();
        let Some(last) = page.last() else { break };
        begin = last.msg_id.saturating_sub(1);
        seen.extend(page.iter().map(|m| m.msg_id));
        if begin == 0 {
            break;
        }
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=400).collect::<Vec<_>>(),
        "every acked message stored once"
    );
    assert_eq!(
        one.unread(a).unwrap().total + one.unread(b).unwrap().total,
        400
    );
}

/// On TeamTalk's own message columns (`varchar(4096)` text) a body the
/// column refuses fails that message alone; the rest of its batch is
/// stored.
#[test]
fn a_body_teamtalks_column_refuses_fails_only_its_own_message() {
    let Some(config) = testing::fresh_config() else {
        return;
    };
    let store = MysqlStore::open(&config, options()).unwrap();
    let ids = store.seed_teamtalk_users("u", 2, &md5_hex(b"pw")).unwrap();
    let mut db = store.conn().unwrap();
    for n in 0..8 {
        db.query_drop(format!(
            "ALTER TABLE IMMessage_{n} MODIFY content varchar(4096)
             CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT ''"
        ))
        .unwrap();
    }
    // And TeamTalk's IMRecentSession, without a unique key: sessions are
    // updated row by row, never duplicated.
    db.query_drop("ALTER TABLE IMRecentSession DROP INDEX uniq_userId_peerId_type")
        .unwrap();
    let store = MysqlStore::open(&config, options()).unwrap();
    assert!(!store.session_key);
    let msg = |data: Vec<u8>| NewMessage {
        from: ids[0],
        to: ids[1],
        session_type: SessionType::Single,
        msg_type: 1,
        create_time: 1_500_000_000,
        data,
        dedupe_key: None,
    };
    let results = store
        .store_messages(&[
            msg(b"first".to_vec()),
            msg(vec![0xff, 0xfe, 0x00]),
            msg(b"second".to_vec()),
            msg(vec![b'x'; 5000]),
        ])
        .unwrap();
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, false, true, false]);
    let history = store.message_list(ids[1], ids[0], 0, 10).unwrap();
    assert_eq!(
        history
            .iter()
            .map(|m| m.data.as_slice())
            .collect::<Vec<_>>(),
        [&b"second"[..], b"first"]
    );
    assert!(history[0].msg_id > history[1].msg_id);
    store.store_message(&msg(b"third".to_vec())).unwrap();
    let rows: Option<u32> = db
        .exec_first("SELECT COUNT(*) FROM IMRecentSession", ())
        .unwrap();
    assert_eq!(rows, Some(2), "one row each way");
    assert_eq!(store.recent_sessions(ids[0], 0).unwrap().len(), 1);
}
