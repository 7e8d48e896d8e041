#[test]
fn departments_incremental() {
    let clock = TestClock::new(100);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let root = store.add_department("Company", 0, 0).unwrap();
    clock.set(200);
    let child = store.add_department("Sales", 5, root).unwrap();
    let all = store.departments_updated_since(0).unwrap();
    assert_eq!(
        all,
        vec![
            Department {
                id: root,
                priority: 0,
                name: "Company".into(),
                parent_id: 0,
                status: 0,
                updated: 100
            },
            Department {
                id: child,
                priority: 5,
                name: "Sales".into(),
                parent_id: root,
                status: 0,
                updated: 200
            },
        ]
    );
    let newer = store.departments_updated_since(100).unwrap();
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].id, child);
    assert!(store.departments_updated_since(200).unwrap().is_empty());
}

#[test]
fn teamtalk_imported_users_log_in() {
    let clock = TestClock::new(50);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let client = md5hex(b"123456");
    // TeamTalk's stored form, computed here independently of `password.rs`.
    let stored = md5hex(format!("{client}8342").as_bytes());
    let id = store
        .import_teamtalk_user(&user("old"), &stored, "8342")
        .unwrap();
    assert_eq!(
        store.verify_login("old", &client).unwrap().map(|u| u.id),
        Some(id)
    );
    assert!(
        store
            .verify_login("old", &md5hex(b"1234567"))
            .unwrap()
            .is_none()
    );
    assert!(store.verify_login("old", &stored).unwrap().is_none());
}

#[test]
fn departed_users_cannot_log_in_and_leave_full_directory() {
    let clock = TestClock::new(10);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let pw = md5hex(b"x");
    let mut gone = user("gone");
    gone.status = USER_STATUS_DEPARTED;
    let gone_id = store.add_user(&gone, &pw).unwrap();
    let here = store.add_user(&user("here"), &pw).unwrap();
    assert!(store.verify_login("gone", &pw).unwrap().is_none());
    let all: Vec<_> = store
        .users_updated_since(0)
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(all, vec![here]);
    // An incremental fetch does report the departure so clients can hide them.
    let changed: Vec<_> = store
        .users_updated_since(10)
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(changed, vec![gone_id, here]);
}

#[test]
fn users_incremental_sign_info_and_lookup() {
    let clock = TestClock::new(100);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let pw = md5hex(b"pw");
    let a = store.add_user(&user("a"), &pw).unwrap();
    let b = store.add_user(&user("b"), &pw).unwrap();
    assert_eq!(store.user_count().unwrap(), 2);
    clock.set(300);
    assert!(store.update_sign_info(b, "busy").unwrap());
    assert!(!store.update_sign_info(999, "nobody").unwrap());
    let changed = store.users_updated_since(200).unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, b);
    assert_eq!(changed[0].sign_info, "busy");
    assert_eq!(changed[0].updated, 300);
    // `updated >= t`, as TeamTalk.
    assert_eq!(store.users_updated_since(300).unwrap().len(), 1);
    assert!(store.users_updated_since(301).unwrap().is_empty());

    let got = store.users_by_ids(&[b, 999, a, b]).unwrap();
    assert_eq!(got.iter().map(|u| u.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(got[0].email, "a@example.com");
    assert!(store.users_by_ids(&[]).unwrap().is_empty());
}

#[test]
fn push_shield_and_device_tokens() {
    let clock = TestClock::new(1);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let pw = md5hex(b"pw");
    let a = store.add_user(&user("a"), &pw).unwrap();
    let b = store.add_user(&user("b"), &pw).unwrap();

    assert_eq!(store.push_shield(a).unwrap(), Some(false));
    assert!(store.set_push_shield(a, true).unwrap());
    assert_eq!(store.push_shield(a).unwrap(), Some(true));
    assert!(store.users_by_ids(&[a]).unwrap()[0].push_shield);
    assert!(store.set_push_shield(a, false).unwrap());
    assert_eq!(store.push_shield(a).unwrap(), Some(false));
    assert_eq!(store.push_shield(999).unwrap(), None);
    assert!(!store.set_push_shield(999, true).unwrap());

    store.set_device_token(a, 0x11, "tok-a").unwrap();
    store.set_device_token(b, 0x12, "tok-b").unwrap();
    assert_eq!(
        store.device_tokens(&[b, a, 77]).unwrap(),
        vec![
            DeviceToken {
                user_id: a,
                client_type: 0x11,
                token: "tok-a".into()
            },
            DeviceToken {
                user_id: b,
                client_type: 0x12,
                token: "tok-b".into()
            },
        ]
    );
    // Replacing a user's token.
    store.set_device_token(a, 0x11, "tok-a2").unwrap();
    assert_eq!(store.device_tokens(&[a]).unwrap()[0].token, "tok-a2");
    // The same device logs in as another user: the token moves.
    store.set_device_token(b, 0x11, "tok-a2").unwrap();
    assert_eq!(
        store.device_tokens(&[a, b]).unwrap(),
        vec![DeviceToken {
            user_id: b,
            client_type: 0x11,
            token: "tok-a2".into()
        }]
    );
    // An empty token (logout) clears it.
    store.set_device_token(b, 0x11, "").unwrap();
    assert!(store.device_tokens(&[a, b]).unwrap().is_empty());
}

#[test]
fn an_invalid_device_token_is_removed_only_while_current() {
    let clock = TestClock::new(1);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let pw = md5hex(b"pw");
    let a = store.add_user(&user("a"), &pw).unwrap();
    store.set_device_token(a, 0x11, "old").unwrap();
    // The user registered a new token before push_server's verdict on the
    // old one came back: the new one stays.
    store.set_device_token(a, 0x11, "new").unwrap();
    assert!(!store.forget_device_token(a, "old").unwrap());
    assert_eq!(store.device_tokens(&[a]).unwrap()[0].token, "new");
    // Not the user's token at all, or no token: nothing removed.
    assert!(!store.forget_device_token(a, "someone-else").unwrap());
    assert!(!store.forget_device_token(999, "new").unwrap());
    // Still the current one: removed, and a later registration of the
    // same token (the device came back) works as before.
    assert!(store.forget_device_token(a, "new").unwrap());
    assert!(store.device_tokens(&[a]).unwrap().is_empty());
    assert!(!store.forget_device_token(a, "new").unwrap());
    store.set_device_token(a, 0x12, "new").unwrap();
    assert_eq!(store.device_tokens(&[a]).unwrap()[0].client_type, 0x12);
}

#[test]
fn seed_users_share_one_valid_hash() {
    let clock = TestClock::new(1);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let pw = md5hex(b"load");
    let ids = store.seed_users("load", 50, &pw).unwrap();
    assert_eq!(ids.len(), 50);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.user_count().unwrap(), 50);
    let u = store
        .verify_login("load37", &pw)
        .unwrap()
        .expect("seeded login");
    assert_eq!(u.id, ids[36]);
    assert_eq!(u.nick, "load37");
    assert!(store.verify_login("load51", &pw).unwrap().is_none());
    // A clash rolls the whole batch back.
    assert!(matches!(
        store.seed_users("load", 60, &pw),
        Err(StoreError::NameTaken(n)) if n == "load1"
    ));
    assert_eq!(store.user_count().unwrap(), 50);
    assert!(store.seed_users("none", 0, &pw).unwrap().is_empty());
}

#[test]
fn store_message_assigns_ids_and_updates_counters_and_sessions() {
    let clock = TestClock::new(1_000);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let m1 = new(store.store_message(&msg(1, 2, "hi")));
    assert_eq!(m1.msg_id, 1);
    assert_eq!((m1.from, m1.to, m1.data.as_slice()), (1, 2, &b"hi"[..]));
    clock.set(1_001);
    let m2 = new(store.store_message(&msg(2, 1, "hello")));
    assert_eq!(
        m2.msg_id, 2,
        "one sequence per conversation, both directions"
    );
    let other = new(store.store_message(&msg(1, 3, "yo")));
    assert_eq!(other.msg_id, 1, "another conversation starts at 1");
    clock.set(1_002);
    store.store_message(&msg(1, 2, "again")).unwrap();

    assert_eq!(store.latest_msg_id(1, 2).unwrap(), 3);
    assert_eq!(store.latest_msg_id(2, 1).unwrap(), 3);
    assert_eq!(store.latest_msg_id(2, 3).unwrap(), 0);

    // User 2: two unread from 1, latest message is "again".
    let u2 = store.unread(2).unwrap();
    assert_eq!(u2.total, 2);
    assert_eq!(
        u2.sessions,
        vec![UnreadSession {
            peer: 1,
            session_type: SessionType::Single,
            count: 2,
            latest: LatestMessage {
                msg_id: 3,
                from: 1,
                msg_type: 1,
                data: b"again".to_vec()
            },
        }]
    );
    // User 1: one from 2.
    let u1 = store.unread(1).unwrap();
    assert_eq!(u1.total, 1);
    assert_eq!(u1.sessions[0].peer, 2);
    assert_eq!(u1.sessions[0].latest.msg_id, 3);
    assert_eq!(store.unread(3).unwrap().total, 1);

    store.clear_unread(2, 1).unwrap();
    assert_eq!(store.unread(2).unwrap(), UnreadSummary::default());
    assert_eq!(
        store.unread(1).unwrap().total,
        1,
        "only the reader's counter is cleared"
    );
    store.clear_unread(2, 1).unwrap();

    // Recent sessions of user 1: peer 2 (updated 1002) before peer 3 (1001).
    let s = store.recent_sessions(1, 0).unwrap();
    assert_eq!(
        s.iter().map(|s| (s.peer, s.updated)).collect::<Vec<_>>(),
        vec![(2, 1_002), (3, 1_001)]
    );
    assert_eq!(s[0].latest.data, b"again");
    assert_eq!(s[0].status, 0);
    assert_eq!(
        s[1].latest,
        LatestMessage {
            msg_id: 1,
            from: 1,
            msg_type: 1,
            data: b"yo".to_vec()
        }
    );
    assert_eq!(store.recent_sessions(1, 1_001).unwrap().len(), 1);
    assert_eq!(store.recent_sessions(3, 0).unwrap()[0].peer, 1);

    // Removing hides it until the next message.
    assert!(store.remove_session(1, 3, SessionType::Single).unwrap());
    assert!(!store.remove_session(1, 3, SessionType::Single).unwrap());
    assert!(!store.remove_session(1, 3, SessionType::Group).unwrap());
    assert_eq!(store.recent_sessions(1, 0).unwrap().len(), 1);
    assert_eq!(
        store.recent_sessions(3, 0).unwrap().len(),
        1,
        "peer keeps theirs"
    );
    clock.set(1_003);
    store.store_message(&msg(3, 1, "back")).unwrap();
    let s = store.recent_sessions(1, 0).unwrap();
    assert_eq!(s[0].peer, 3);
    assert_eq!(s[0].updated, 1_003);
}

#[test]
fn rejects_self_and_zero_messages() {
    let clock = TestClock::new(1);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    assert!(matches!(
        store.store_message(&msg(4, 4, "me")),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.store_message(&msg(0, 4, "x")),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.latest_msg_id(4, 4).unwrap(), 0);
}

#[test]
fn message_list_pages_newest_first() {
    let clock = TestClock::new(1);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    for i in 1..=250u32 {
        let (from, to) = if i % 2 == 0 { (7, 9) } else { (9, 7) };
        let m = new(store.store_message(&msg(from, to, &format!("m{i}"))));
        assert_eq!(m.msg_id, i);
    }
    let page = store.message_list(7, 9, 0, 10).unwrap();
    assert_eq!(
        page.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        (241..=250).rev().collect::<Vec<_>>()
    );
    assert_eq!(page[0].data, b"m250");
    assert_eq!(page[0].from, 7);
    let next = store.message_list(9, 7, 240, 10).unwrap();
    assert_eq!(next.first().map(|m| m.msg_id), Some(240));
    assert_eq!(next.last().map(|m| m.msg_id), Some(231));
    // Capped.
    assert_eq!(
        store.message_list(7, 9, 0, 10_000).unwrap().len(),
        MAX_MSG_LIST as usize
    );
    assert_eq!(store.message_list(7, 9, 3, 10).unwrap().len(), 3);
    assert!(store.message_list(7, 9, 0, 0).unwrap().is_empty());
    assert!(store.message_list(7, 8, 0, 10).unwrap().is_empty());

    let by_id = store.messages_by_ids(9, 7, &[5, 300, 2, 5]).unwrap();
    assert_eq!(
        by_id.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        vec![5, 2]
    );
    assert_eq!(by_id[0].data, b"m5");
    assert!(store.messages_by_ids(1, 2, &[1]).unwrap().is_empty());
    let many: Vec<MsgId> = (1..=250).collect();
    assert_eq!(
        store.messages_by_ids(7, 9, &many).unwrap().len(),
        MAX_MSGS_BY_ID
    );
}

#[test]
fn msg_ids_are_gapless_per_conversation_under_concurrent_writers() {
    let clock = TestClock::new(1);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let store: Arc<dyn Store> = store;
    const THREADS: u32 = 4;
    const PER_THREAD: u32 = 40;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..PER_THREAD {
                    // All threads share conversation (1, 2); each also has its own with 100 + t.
                    let (from, to) = if (t + i) % 2 == 0 { (1, 2) } else { (2, 1) };
                    let m = new(store.store_message(&msg(from, to, "c")));
                    mine.push(m.msg_id);
                    store
                        .store_message(&msg(1, 100 + t, "own"))
                        .expect("store own");
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        let mine = h.join().expect("thread");
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "monotonic per writer");
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=THREADS * PER_THREAD).collect::<Vec<_>>());
    for t in 0..THREADS {
        assert_eq!(store.latest_msg_id(1, 100 + t).unwrap(), PER_THREAD);
    }
    let unread_1 = store.unread(1).unwrap();
    let unread_2 = store.unread(2).unwrap();
    assert_eq!(unread_1.total + unread_2.total, THREADS * PER_THREAD);
}

#[test]
fn store_messages_commits_a_batch_and_keeps_each_result() {
    let clock = TestClock::new(50);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let batch = [
        msg(1, 2, "a"),
        msg(2, 1, "b"),
        msg(3, 3, "self"),
        msg(1, 3, "c"),
        msg(0, 1, "zero"),
        msg(1, 2, "d"),
    ];
    let results = store.store_messages(&batch).unwrap();
    assert_eq!(results.len(), batch.len());
    let ids: Vec<Option<MsgId>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(Stored::msg_id))
        .collect();
    assert_eq!(ids, [Some(1), Some(2), None, Some(1), None, Some(3)]);
    assert!(matches!(results[2], Err(StoreError::Invalid(_))));
    // Everything that succeeded is there, with its side effects.
    assert_eq!(store.latest_msg_id(2, 1).unwrap(), 3);
    assert_eq!(store.latest_msg_id(3, 1).unwrap(), 1);
    let page = store.message_list(1, 2, 0, 10).unwrap();
    let bodies: Vec<&[u8]> = page.iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(bodies, [&b"d"[..], b"b", b"a"]);
    let unread = store.unread(2).unwrap();
    assert_eq!(unread.total, 2);
    assert_eq!(store.unread(1).unwrap().total, 1);
    // An empty batch is a no-op.
    assert_eq!(store.store_messages(&[]).unwrap().len(), 0);
}

#[test]
fn store_messages_matches_one_by_one() {
    let clock = TestClock::new(7);
    let Some((_d1, batched)) = make(&clock) else {
        return;
    };
    let Some((_d2, single)) = make(&clock) else {
        return;
    };
    let msgs: Vec<NewMessage> = (0..40u32)
        .map(|i| msg(1 + i % 3, 1 + (i + 1) % 3, &format!("m{i}")))
        .collect();
    let a: Vec<MsgId> = batched
        .store_messages(&msgs)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().msg_id())
        .collect();
    let b: Vec<MsgId> = msgs
        .iter()
        .map(|m| single.store_message(m).unwrap().msg_id())
        .collect();
    assert_eq!(a, b);
    assert_eq!(batched.unread(2).unwrap(), single.unread(2).unwrap());
}

#[test]
fn a_resend_with_a_known_key_is_not_stored_again() {
    let clock = TestClock::new(1_000);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    assert_eq!(
        store.store_message(&keyed(1, 2, "hi", 1)).unwrap().msg_id(),
        1
    );
    assert_eq!(
        store.store_message(&keyed(1, 2, "hi", 1)).unwrap(),
        Stored::Duplicate(1)
    );
    assert_eq!(store.latest_msg_id(1, 2).unwrap(), 1);
    assert_eq!(store.unread(2).unwrap().total, 1, "counted once");
    // Another key, another sender or another recipient is another message.
    assert_eq!(new(store.store_message(&keyed(1, 2, "hi", 2))).msg_id, 2);
    assert_eq!(new(store.store_message(&keyed(2, 1, "hi", 1))).msg_id, 3);
    assert_eq!(new(store.store_message(&keyed(1, 3, "hi", 1))).msg_id, 1);
    // No key: stored every time, as TeamTalk does; an empty key is no key.
    assert_eq!(new(store.store_message(&msg(1, 2, "hi"))).msg_id, 4);
    assert_eq!(new(store.store_message(&msg(1, 2, "hi"))).msg_id, 5);
    let empty = NewMessage {
        dedupe_key: Some(Vec::new()),
        ..msg(1, 2, "e")
    };
    assert_eq!(new(store.store_message(&empty)).msg_id, 6);
    assert_eq!(new(store.store_message(&empty)).msg_id, 7);
}

#[test]
fn two_resends_in_one_batch_store_one_message() {
    let clock = TestClock::new(1_000);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let batch = [
        keyed(1, 2, "a", 9),
        keyed(1, 2, "a", 9),
        msg(1, 2, "b"),
        keyed(1, 2, "a", 9),
        keyed(3, 3, "self", 4),
        keyed(1, 3, "c", 4),
    ];
    let results = store.store_messages(&batch).unwrap();
    let got: Vec<Option<(MsgId, bool)>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|s| (s.msg_id(), s.is_duplicate())))
        .collect();
    assert_eq!(
        got,
        [
            Some((1, false)),
            Some((1, true)),
            Some((2, false)),
            Some((1, true)),
            None,
            Some((1, false)),
        ]
    );
    assert_eq!(store.unread(2).unwrap().total, 2);
    // The refused message left no key behind.
    let again = store.store_messages(&[keyed(3, 3, "self", 4)]).unwrap();
    assert!(matches!(again[0], Err(StoreError::Invalid(_))));
}

#[test]
fn oversized_bodies_and_keys_are_invalid() {
    let clock = TestClock::new(1);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let body = NewMessage {
        data: vec![0; MAX_MSG_DATA_LEN + 1],
        ..msg(1, 2, "")
    };
    assert!(matches!(
        store.store_message(&body),
        Err(StoreError::Invalid(_))
    ));
    let key = NewMessage {
        dedupe_key: Some(vec![0; MAX_DEDUPE_KEY_LEN + 1]),
        ..msg(1, 2, "x")
    };
    assert!(matches!(
        store.store_message(&key),
        Err(StoreError::Invalid(_))
    ));
    let fits = NewMessage {
        data: vec![0; MAX_MSG_DATA_LEN],
        dedupe_key: Some(vec![0; MAX_DEDUPE_KEY_LEN]),
        ..msg(1, 2, "")
    };
    assert_eq!(new(store.store_message(&fits)).msg_id, 1);
}

#[test]
fn list_reads_stop_after_a_megabyte_of_bodies() {
    let clock = TestClock::new(100);
    let Some((_dir, store)) = make(&clock) else {
        return;
    };
    let big = |from, to, i: u32| NewMessage {
        data: vec![u8::try_from(i % 250).unwrap(); 200_000],
        ..msg(from, to, "")
    };
    for i in 1..=8 {
        store.store_message(&big(1, 2, i)).unwrap();
    }
    let ids = |v: Vec<StoredMessage>| v.iter().map(|m| m.msg_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.message_list(2, 1, 0, 20).unwrap()),
        [8, 7, 6, 5, 4, 3]
    );
    assert_eq!(ids(store.message_list(2, 1, 2, 20).unwrap()), [2, 1]);
    assert_eq!(
        ids(store
            .messages_by_ids(2, 1, &(1..=8).collect::<Vec<_>>())
            .unwrap()),
        [8, 7, 6, 5, 4, 3]
    );
    for (i, peer) in (10..18u32).enumerate() {
        clock.set(200 + u32::try_from(i).unwrap());
        store.store_message(&big(peer, 3, 1)).unwrap();
    }
    let unread = store.unread(3).unwrap();
    assert_eq!(unread.total, 8);
    assert_eq!(unread.sessions.len(), 6);
    assert_eq!(store.unread_total(3).unwrap(), 8);
    let peers: Vec<UserId> = store
        .recent_sessions(3, 0)
        .unwrap()
        .iter()
        .map(|s| s.peer)
        .collect();
    assert_eq!(
        peers,
        [15, 14, 13, 12, 11, 10],
        "the oldest six, newest first"
    );
}

#[test]
fn a_group_is_created_with_its_creator_and_read_back() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 4) else {
        return;
    };
    let g = store.create_group(&tmp(1, &[3, 2, 3])).unwrap();
    assert_eq!(
        g.member_ids(),
        [1, 2, 3],
        "creator included, duplicates gone"
    );
    assert_eq!(
        (g.version, g.group_type, g.creator, g.last_msg_id, g.created),
        (1, GroupType::Tmp, 1, 0, 500)
    );
    assert!(g.members.iter().all(|m| !m.shield && m.joined == 500));
    assert_eq!(store.group(g.id).unwrap(), Some(g.clone()));
    assert_eq!(store.group(g.id + 1).unwrap(), None);
    let normal = store
        .create_group(&NewGroup {
            group_type: GroupType::Normal,
            ..tmp(4, &[2])
        })
        .unwrap();
    assert_eq!(store.groups().unwrap(), [g.clone(), normal.clone()]);
    let v = |id, version| GroupVersion { id, version };
    assert_eq!(
        store.user_groups(2, None).unwrap(),
        [v(g.id, 1), v(normal.id, 1)]
    );
    assert_eq!(
        store.user_groups(2, Some(GroupType::Normal)).unwrap(),
        [v(normal.id, 1)]
    );
    assert_eq!(store.user_groups(3, Some(GroupType::Normal)).unwrap(), []);
    // The administration's NORMAL group (creator 0): it is no member.
    let admin = store
        .create_group(&NewGroup {
            group_type: GroupType::Normal,
            ..tmp(0, &[3, 2])
        })
        .unwrap();
    assert_eq!((admin.creator, admin.member_ids()), (0, vec![2, 3]));
    assert!(matches!(
        store.create_group(&NewGroup {
            group_type: GroupType::Normal,
            ..tmp(0, &[0, 2])
        }),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn a_group_that_cannot_be_created_leaves_nothing() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 3) else {
        return;
    };
    assert!(matches!(
        store.create_group(&tmp(1, &[2, 99])),
        Err(StoreError::NoSuchUser(99))
    ));
    assert!(matches!(
        store.create_group(&tmp(42, &[2])),
        Err(StoreError::NoSuchUser(42))
    ));
    assert!(matches!(
        store.create_group(&NewGroup {
            name: String::new(),
            ..tmp(1, &[2])
        }),
        Err(StoreError::Invalid(_))
    ));
    // Creator 0 (the administration) makes NORMAL groups only.
    assert!(matches!(
        store.create_group(&tmp(0, &[2])),
        Err(StoreError::Invalid("user id 0 is not a user"))
    ));
    assert!(store.groups().unwrap().is_empty());
    assert!(store.user_groups(2, None).unwrap().is_empty());
}

#[test]
fn member_changes_follow_the_rule_and_bump_the_version() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 6) else {
        return;
    };
    let g = store.create_group(&tmp(1, &[2, 3])).unwrap().id;
    let change = |actor, kind, users: &[UserId]| store.change_group_members(actor, g, kind, users);
    use Actor::{Admin, User};
    use MemberChange::{Add, Remove};

    // Any member adds to a TMP group; only the new ones count as changed.
    let c = change(User(2), Add, &[3, 4, 4]).unwrap();
    assert_eq!(
        (c.version, c.changed, c.members),
        (2, vec![4], vec![1, 2, 3, 4])
    );
    // Nothing new: no change, no new version.
    let c = change(User(2), Add, &[4]).unwrap();
    assert_eq!((c.version, c.changed.len()), (2, 0));
    // Strangers may do nothing; a missing user cannot be added.
    assert!(matches!(
        change(User(5), Add, &[5]),
        Err(StoreError::Refused(ChangeRefused::NotMember))
    ));
    assert!(matches!(
        change(User(2), Add, &[77]),
        Err(StoreError::NoSuchUser(77))
    ));
    // A member cannot remove another, but can leave.
    assert!(matches!(
        change(User(2), Remove, &[3]),
        Err(StoreError::Refused(ChangeRefused::NotCreator))
    ));
    let c = change(User(2), Remove, &[2]).unwrap();
    assert_eq!(
        (c.version, c.changed, c.members),
        (3, vec![2], vec![1, 3, 4])
    );
    // The creator removes anyone; removing a non-member changes nothing.
    let c = change(User(1), Remove, &[4, 6]).unwrap();
    assert_eq!((c.version, c.changed, c.members), (4, vec![4], vec![1, 3]));
    assert!(matches!(
        change(User(1), Add, &[0]),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.change_group_members(User(1), 999, Add, &[2]),
        Err(StoreError::NoSuchGroup(999))
    ));

    // NORMAL groups: the creator only; the administration anything.
    let n = store
        .create_group(&NewGroup {
            group_type: GroupType::Normal,
            ..tmp(1, &[2])
        })
        .unwrap()
        .id;
    for (actor, users) in [(User(2), &[3][..]), (User(2), &[2][..])] {
        assert!(matches!(
            store.change_group_members(actor, n, Add, users),
            Err(StoreError::Refused(ChangeRefused::NotCreator))
        ));
    }
    assert!(matches!(
        store.change_group_members(User(2), n, Remove, &[2]),
        Err(StoreError::Refused(ChangeRefused::NotCreator))
    ));
    let c = store.change_group_members(Admin, n, Remove, &[1]).unwrap();
    assert_eq!((c.version, c.members), (2, vec![2]));
    let c = store.change_group_members(Admin, n, Add, &[5]).unwrap();
    assert_eq!((c.version, c.members), (3, vec![2, 5]));
    assert_eq!(store.group(n).unwrap().unwrap().version, 3);
}

#[test]
fn a_group_is_bounded_in_members() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 3) else {
        return;
    };
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    let too_many: Vec<UserId> = (1..=u32::try_from(MAX_GROUP_MEMBERS).unwrap() + 1).collect();
    assert!(matches!(
        store.change_group_members(Actor::Admin, g, MemberChange::Add, &too_many),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn group_messages_have_their_own_ids_and_only_members_post() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 4) else {
        return;
    };
    let a = store.create_group(&tmp(1, &[2, 3])).unwrap().id;
    let b = store.create_group(&tmp(2, &[3])).unwrap().id;
    assert_eq!(posted(&*store, 1, a, "one"), 1);
    assert_eq!(posted(&*store, 2, a, "two"), 2);
    assert_eq!(
        posted(&*store, 2, b, "other"),
        1,
        "each group its own sequence"
    );
    // A single chat between users whose ids equal the group's is unrelated.
    let single = NewMessage {
        session_type: SessionType::Single,
        msg_type: 1,
        ..post(1, 2, "hi")
    };
    assert_eq!(store.store_message(&single).unwrap().msg_id(), 1);
    assert_eq!(posted(&*store, 3, a, "three"), 3);

    // Non-members, removed members and missing groups cannot post.
    assert!(matches!(
        store.store_message(&post(4, a, "let me in")),
        Err(StoreError::NotMember { user: 4, group }) if group == a
    ));
    assert!(matches!(
        store.store_message(&post(1, 999, "?")),
        Err(StoreError::NoSuchGroup(999))
    ));
    store
        .change_group_members(Actor::User(1), a, MemberChange::Remove, &[3])
        .unwrap();
    let e = store.store_message(&post(3, a, "still here?")).unwrap_err();
    assert!(e.is_refusal(), "{e}");
    // In a batch, the refused one fails alone.
    let results = store
        .store_messages(&[post(1, a, "x"), post(3, a, "y"), post(2, a, "z")])
        .unwrap();
    let got: Vec<Option<MsgId>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(Stored::msg_id))
        .collect();
    assert_eq!(got, [Some(4), None, Some(5)]);
    // A group may be posted to by a member whose id equals the group's.
    assert_eq!(posted(&*store, 1, a, "self-named"), 6);
    let h = store.group_message_list(1, a, 0, 10).unwrap();
    assert_eq!(ids(&h), [6, 5, 4, 3, 2, 1]);
    assert_eq!(
        (h[0].from, h[0].to, h[0].msg_type, &h[0].data[..]),
        (1, a, 0x11, &b"self-named"[..])
    );
}

#[test]
fn unread_is_the_last_id_minus_the_read_point() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 4) else {
        return;
    };
    let g = store.create_group(&tmp(1, &[2, 3])).unwrap().id;
    posted(&*store, 1, g, "a");
    posted(&*store, 1, g, "b");
    posted(&*store, 2, g, "c");
    // The sender has read up to what they posted.
    assert_eq!(group_unread(&*store, 1, g), 1);
    assert_eq!(group_unread(&*store, 2, g), 0);
    assert_eq!(group_unread(&*store, 3, g), 3);
    let u3 = store.unread(3).unwrap();
    assert_eq!(u3.total, 3);
    assert_eq!(
        u3.sessions[0].latest,
        LatestMessage {
            msg_id: 3,
            from: 2,
            msg_type: 0x11,
            data: b"c".to_vec()
        }
    );
    // Single and group counts add up in the total and the badge.
    let single = NewMessage {
        session_type: SessionType::Single,
        msg_type: 1,
        ..post(4, 3, "dm")
    };
    store.store_message(&single).unwrap();
    let u3 = store.unread(3).unwrap();
    assert_eq!(u3.total, 4);
    let kinds: Vec<(SessionType, UserId, u32)> = u3
        .sessions
        .iter()
        .map(|s| (s.session_type, s.peer, s.count))
        .collect();
    assert_eq!(
        kinds,
        [(SessionType::Single, 4, 1), (SessionType::Group, g, 3)]
    );
    assert_eq!(store.unread_total(3).unwrap(), 4);
    // A read ack clears the group alone.
    store.clear_group_unread(3, g).unwrap();
    assert_eq!(store.unread_total(3).unwrap(), 1);
    assert!(matches!(
        store.clear_group_unread(4, g),
        Err(StoreError::NotMember { .. })
    ));
    // A new member starts with nothing unread; a removed one has none.
    store
        .change_group_members(Actor::User(2), g, MemberChange::Add, &[4])
        .unwrap();
    assert_eq!(group_unread(&*store, 4, g), 0);
    posted(&*store, 1, g, "d");
    assert_eq!(group_unread(&*store, 4, g), 1);
    store
        .change_group_members(Actor::User(4), g, MemberChange::Remove, &[4])
        .unwrap();
    assert_eq!(group_unread(&*store, 4, g), 0);
    assert_eq!(store.unread_total(4).unwrap(), 0);
}

#[test]
fn members_read_what_was_posted_after_they_joined() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 4) else {
        return;
    };
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    for i in 1..=5 {
        posted(&*store, 1, g, &format!("m{i}"));
    }
    store
        .change_group_members(Actor::User(1), g, MemberChange::Add, &[3])
        .unwrap();
    assert_eq!(
        store.group_latest_msg_id(3, g).unwrap(),
        0,
        "nothing since joining"
    );
    assert!(store.group_message_list(3, g, 0, 10).unwrap().is_empty());
    for i in 6..=9 {
        posted(&*store, 2, g, &format!("m{i}"));
    }
    // Paging: newest first, `begin` inclusive, never below the join point.
    assert_eq!(ids(&store.group_message_list(3, g, 0, 2).unwrap()), [9, 8]);
    assert_eq!(ids(&store.group_message_list(3, g, 7, 10).unwrap()), [7, 6]);
    assert_eq!(
        ids(&store.group_message_list(1, g, 7, 3).unwrap()),
        [7, 6, 5]
    );
    assert!(store.group_message_list(1, g, 0, 0).unwrap().is_empty());
    assert_eq!(
        ids(&store
            .group_messages_by_ids(3, g, &[2, 7, 9, 9, 50])
            .unwrap()),
        [9, 7]
    );
    assert_eq!(
        ids(&store.group_messages_by_ids(1, g, &[2, 7]).unwrap()),
        [7, 2]
    );
    assert_eq!(store.group_latest_msg_id(3, g).unwrap(), 9);
    // Non-members and missing groups: nothing at all.
    for (user, group) in [(4, g), (1, 999)] {
        assert!(matches!(
            store.group_message_list(user, group, 0, 10),
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.group_messages_by_ids(user, group, &[9]),
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.group_latest_msg_id(user, group),
            Err(StoreError::NotMember { .. })
        ));
    }
    // Someone removed reads nothing any more; back in, only what is new.
    store
        .change_group_members(Actor::User(1), g, MemberChange::Remove, &[3])
        .unwrap();
    assert!(store.group_message_list(3, g, 0, 10).is_err());
    store
        .change_group_members(Actor::User(2), g, MemberChange::Add, &[3])
        .unwrap();
    assert!(store.group_message_list(3, g, 0, 10).unwrap().is_empty());
}

#[test]
fn group_sessions_come_from_the_membership() {
    let clock = TestClock::new(1_000);
    let Some((_dir, store)) = store_with(&clock, 4) else {
        return;
    };
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    // Joining makes the session appear, with no message yet.
    let s = store.recent_sessions(2, 0).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].peer, s[0].session_type, s[0].updated, &s[0].latest),
        (g, SessionType::Group, 1_000, &LatestMessage::default())
    );
    clock.set(1_010);
    let single = NewMessage {
        session_type: SessionType::Single,
        msg_type: 1,
        ..post(3, 2, "dm")
    };
    store.store_message(&single).unwrap();
    clock.set(1_020);
    posted(&*store, 1, g, "hello group");
    let s = store.recent_sessions(2, 0).unwrap();
    let rows: Vec<(UserId, SessionType, u32, MsgId)> = s
        .iter()
        .map(|s| (s.peer, s.session_type, s.updated, s.latest.msg_id))
        .collect();
    assert_eq!(
        rows,
        [
            (g, SessionType::Group, 1_020, 1),
            (3, SessionType::Single, 1_010, 1)
        ]
    );
    assert_eq!(
        store.recent_sessions(2, 1_010).unwrap().len(),
        1,
        "incremental"
    );
    // Removing hides it (and a second removal finds nothing) until the
    // next message.
    assert!(store.remove_session(2, g, SessionType::Group).unwrap());
    assert!(!store.remove_session(2, g, SessionType::Group).unwrap());
    assert_eq!(store.recent_sessions(2, 0).unwrap().len(), 1);
    clock.set(1_030);
    posted(&*store, 1, g, "again");
    let s = store.recent_sessions(2, 0).unwrap();
    assert_eq!((s[0].peer, s[0].updated, s[0].latest.msg_id), (g, 1_030, 2));
    // Members who left have no session; strangers cannot remove one.
    store
        .change_group_members(Actor::User(2), g, MemberChange::Remove, &[2])
        .unwrap();
    assert!(
        store
            .recent_sessions(2, 0)
            .unwrap()
            .iter()
            .all(|s| s.session_type == SessionType::Single)
    );
    assert!(!store.remove_session(4, g, SessionType::Group).unwrap());
    // Someone who joins later sees the session, without older messages.
    clock.set(1_040);
    store
        .change_group_members(Actor::User(1), g, MemberChange::Add, &[4])
        .unwrap();
    let s = store.recent_sessions(4, 0).unwrap();
    assert_eq!((s[0].peer, s[0].updated, s[0].latest.msg_id), (g, 1_040, 0));
}

#[test]
fn shields_are_per_member() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 4) else {
        return;
    };
    let g = store.create_group(&tmp(1, &[2, 3])).unwrap().id;
    store.set_group_shield(2, g, true).unwrap();
    assert_eq!(
        store.group_shields(g, &[3, 2, 4, 2]).unwrap(),
        [(2, true), (3, false)],
        "non-members left out"
    );
    assert!(store.group(g).unwrap().unwrap().member(2).unwrap().shield);
    store.set_group_shield(2, g, false).unwrap();
    assert_eq!(store.group_shields(g, &[2]).unwrap(), [(2, false)]);
    assert!(matches!(
        store.set_group_shield(4, g, true),
        Err(StoreError::NotMember { .. })
    ));
    assert!(matches!(
        store.set_group_shield(1, 999, true),
        Err(StoreError::NoSuchGroup(999))
    ));
    assert!(matches!(
        store.group_shields(999, &[1]),
        Err(StoreError::NoSuchGroup(999))
    ));
    // The version is the group's and its members', not a member's setting.
    assert_eq!(store.group(g).unwrap().unwrap().version, 1);
}

#[test]
fn details_are_given_to_members_whose_copy_is_older() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 4) else {
        return;
    };
    let a = store.create_group(&tmp(1, &[2])).unwrap().id;
    let b = store.create_group(&tmp(3, &[2])).unwrap().id;
    let c = store.create_group(&tmp(3, &[4])).unwrap().id;
    store
        .change_group_members(Actor::User(3), b, MemberChange::Add, &[1])
        .unwrap();
    let v = |id, version| GroupVersion { id, version };
    let got = store
        .groups_newer_than(2, &[v(b, 1), v(a, 1), v(c, 0), v(b, 0), v(999, 0)])
        .unwrap();
    let got: Vec<(GroupId, u32, Vec<UserId>)> = got
        .into_iter()
        .map(|g| (g.id, g.version, g.member_ids()))
        .collect();
    assert_eq!(
        got,
        [(b, 2, vec![1, 2, 3])],
        "a is current, c is not theirs"
    );
    assert_eq!(store.groups_newer_than(2, &[v(a, 0)]).unwrap().len(), 1);
}

#[test]
fn a_group_resend_is_stored_once_and_keys_do_not_cross_session_types() {
    let clock = TestClock::new(500);
    let Some((_dir, store)) = store_with(&clock, 3) else {
        return;
    };
    let g = store.create_group(&tmp(1, &[2])).unwrap().id;
    assert_eq!(g, 1);
    let keyed = NewMessage {
        dedupe_key: Some(vec![7; 16]),
        ..post(1, g, "once")
    };
    let first = store.store_message(&keyed).unwrap();
    assert_eq!((first.is_duplicate(), first.msg_id()), (false, 1));
    assert_eq!(store.store_message(&keyed).unwrap(), Stored::Duplicate(1));
    assert_eq!(store.group_latest_msg_id(2, g).unwrap(), 1, "stored once");
    assert_eq!(group_unread(&*store, 2, g), 1);
    // The same key on a single chat to user 1 (whose id is the group's).
    let single = NewMessage {
        session_type: SessionType::Single,
        msg_type: 1,
        from: 2,
        to: 1,
        ..keyed.clone()
    };
    let from_two = NewMessage {
        from: 2,
        ..keyed.clone()
    };
    assert!(
        !store.store_message(&from_two).unwrap().is_duplicate(),
        "another sender"
    );
    assert!(
        !store.store_message(&single).unwrap().is_duplicate(),
        "another session type"
    );
    assert!(store.store_message(&single).unwrap().is_duplicate());
}

#[test]
fn the_stamp_moves_with_each_password_set_and_only_then() {
    let Some((_dir, store)) = make(&TestClock::new(1_000)) else {
        return;
    };
    let id = store.add_user(&admin_user("alice"), &pw("one")).unwrap();
    let first = store.check_login("alice", &pw("one")).unwrap().unwrap();
    assert_eq!(first.user.id, id);
    let read = store.user_with_credential(id).unwrap().unwrap();
    assert_eq!(read, first, "a login and a read by id agree");
    assert!(store.user_with_credential(99).unwrap().is_none());

    // A profile change leaves the credential alone.
    store.update_sign_info(id, "hi").unwrap();
    let after_sign = store.user_with_credential(id).unwrap().unwrap();
    assert_eq!(after_sign.credential, first.credential);

    assert!(store.set_password(id, &pw("two")).unwrap());
    let second = store.user_with_credential(id).unwrap().unwrap().credential;
    assert_ne!(second, first.credential);
    assert!(store.verify_login("alice", &pw("one")).unwrap().is_none());
    assert_eq!(
        store
            .check_login("alice", &pw("two"))
            .unwrap()
            .map(|c| c.credential),
        Some(second)
    );
    // The same password again: a new salt, so a new stamp.
    assert!(store.set_password(id, &pw("two")).unwrap());
    assert_ne!(
        store.user_with_credential(id).unwrap().unwrap().credential,
        second
    );
    assert!(!store.set_password(99, &pw("x")).unwrap(), "no such user");
}

#[test]
fn a_disabled_user_cannot_log_in_and_is_still_listed_for_the_admin() {
    let Some((_dir, store)) = make(&TestClock::new(1_000)) else {
        return;
    };
    let id = store.add_user(&admin_user("alice"), &pw("pw")).unwrap();
    store.add_user(&admin_user("bob"), &pw("pw")).unwrap();
    assert!(store.set_user_status(id, USER_STATUS_DEPARTED).unwrap());
    assert!(store.verify_login("alice", &pw("pw")).unwrap().is_none());
    assert_eq!(
        store.user_by_name("alice").unwrap().map(|u| u.status),
        Some(USER_STATUS_DEPARTED)
    );
    assert_eq!(store.users_updated_since(0).unwrap().len(), 1);
    assert_eq!(store.all_users().unwrap().len(), 2);
    assert!(store.set_user_status(id, 0).unwrap());
    assert!(store.verify_login("alice", &pw("pw")).unwrap().is_some());
    assert!(!store.set_user_status(99, 0).unwrap());
    assert!(store.user_by_name("nobody").unwrap().is_none());
}

#[test]
fn deleting_a_user_takes_them_out_of_groups_and_frees_the_name() {
    let Some((_dir, store)) = make(&TestClock::new(1_000)) else {
        return;
    };
    let a = store.add_user(&admin_user("a"), &pw("pw")).unwrap();
    let b = store.add_user(&admin_user("b"), &pw("pw")).unwrap();
    let g = store
        .create_group(&NewGroup {
            name: "team".into(),
            avatar: String::new(),
            creator: a,
            group_type: GroupType::Normal,
            members: vec![b],
        })
        .unwrap();
    let msg = NewMessage {
        from: b,
        to: a,
        session_type: SessionType::Single,
        msg_type: 1,
        create_time: 1,
        data: b"hi".to_vec(),
        dedupe_key: None,
    };
    store.store_message(&msg).unwrap();
    store.set_device_token(b, 0x11, "token").unwrap();

    assert!(store.delete_user(b).unwrap());
    assert!(!store.delete_user(b).unwrap(), "already gone");
    assert!(store.verify_login("b", &pw("pw")).unwrap().is_none());
    let after = store.group(g.id).unwrap().unwrap();
    assert_eq!(after.member_ids(), vec![a]);
    assert_eq!(after.version, g.version + 1, "members' clients refetch");
    assert!(store.device_tokens(&[b]).unwrap().is_empty());
    assert!(store.recent_sessions(b, 0).unwrap().is_empty());
    // What they sent stays in the peer's history.
    assert_eq!(store.message_list(a, b, 0, 10).unwrap().len(), 1);
    let again = store.add_user(&admin_user("b"), &pw("pw")).unwrap();
    assert_ne!(again, b, "ids are not reused");
}

#[test]
fn department_names_are_unique() {
    let Some((_dir, store)) = make(&TestClock::new(1_000)) else {
        return;
    };
    store.add_department("sales", 0, 0).unwrap();
    let e = store.add_department("sales", 0, 0).unwrap_err();
    assert!(
        matches!(&e, StoreError::DeptNameTaken(n) if n == "sales"),
        "{e}"
    );
    assert!(e.is_refusal());
    store.add_department("Sales", 0, 0).expect("another name");
}

#[test]
fn departments_are_renamed_and_deleted_only_when_empty() {
    let Some((_dir, store)) = make(&TestClock::new(1_000)) else {
        return;
    };
    let sales = store.add_department("sales", 0, 0).unwrap();
    let dev = store.add_department("dev", 0, 0).unwrap();
    let sub = store.add_department("dev-tools", 0, dev).unwrap();

    assert!(store.rename_department(sales, "Sales").unwrap());
    assert!(matches!(
        store.rename_department(sales, "dev"),
        Err(StoreError::DeptNameTaken(n)) if n == "dev"
    ));
    assert!(!store.rename_department(999, "x").unwrap());

    let mut u = admin_user("alice");
    u.dept_id = sales;
    let alice = store.add_user(&u, &pw("pw")).unwrap();
    let e = store.delete_department(sales).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::DeptNotEmpty {
                users: 1,
                children: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_refusal());
    let e = store.delete_department(dev).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::DeptNotEmpty {
                users: 0,
                children: 1,
                ..
            }
        ),
        "{e}"
    );

    assert!(store.delete_department(sub).unwrap());
    assert!(!store.delete_department(sub).unwrap(), "deleted already");
    assert!(!store.rename_department(sub, "y").unwrap(), "deleted");
    assert!(store.delete_department(dev).unwrap(), "empty now");
    assert!(store.delete_user(alice).unwrap());
    assert!(store.delete_department(sales).unwrap());

    // Clients syncing incrementally see the deletions; the names are free.
    let all = store.departments_updated_since(0).unwrap();
    assert_eq!(all.len(), 3);
    assert!(
        all.iter().all(|d| d.status == DEPT_STATUS_DELETED),
        "{all:?}"
    );
    store
        .add_department("dev", 0, 0)
        .expect("the name is free again");
    assert!(!store.delete_department(999).unwrap());
}
