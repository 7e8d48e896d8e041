//! Replies compared byte for byte with the C++ db_proxy's.

use bytes::Bytes;
use teamtalk_proto::{Command, Pdu};

use super::{fixture, hex, send, text};

/// Request bodies and the C++ db_proxy's reply bodies from the captures
/// (`msg_server<->db_proxy`), replayed against the same data: users 1-4,
/// messages between 4 and 1.
#[test]
fn replies_match_captured_teamtalk_bytes() {
    let f = fixture();
    assert_eq!(send(&f.proxy, &text(1, 4, "a")), 1);
    assert_eq!(send(&f.proxy, &text(4, 1, "b")), 2);
    let attach16 = "a2011000000001000000110000000000000000";
    let cases: [(Command, String, String); 6] = [
        // push shield on, then off, for user 4
        (
            Command::LoginReqPushShield,
            format!("08041001{attach16}"),
            format!("080410001801{attach16}"),
        ),
        (
            Command::LoginReqPushShield,
            format!("08041000{attach16}"),
            format!("080410001800{attach16}"),
        ),
        (
            Command::LoginReqQueryPushShield,
            format!("0804{attach16}"),
            format!("080410001800{attach16}"),
        ),
        // logout: empty token, no client type, no attach
        (
            Command::LoginReqDevicetoken,
            "08031200".to_owned(),
            "0803a20100".to_owned(),
        ),
        (
            Command::MsgGetLatestMsgIdReq,
            "080410011801a2010c000000010000001100000000".to_owned(),
            "0804100118012002a2010c000000010000001100000000".to_owned(),
        ),
        (
            Command::MsgGetByMsgIdReq,
            "08021001180120fface204a2010c000000010000000f00000000".to_owned(),
            "080210011801a2010c000000010000000f00000000".to_owned(),
        ),
    ];
    for (i, (cmd, req, want)) in cases.iter().enumerate() {
        let pdu = Pdu::new(cmd.key(), 40 + i as u16, Bytes::from(hex(req)));
        let reply = f.proxy.handle(&pdu).unwrap();
        assert_eq!(reply.seq(), 40 + i as u16);
        assert_eq!(reply.body.as_ref(), hex(want).as_slice(), "case {i}: {cmd}");
    }
}

/// The C++ db_proxy's group replies from the captures, replayed against
/// the same data: users 1-4, NORMAL group 1 with all four (version 1),
/// then seven groups none of them is in, so the captured creation gets id
/// 9. Request and reply bodies are the captured ones (attach data type 1,
/// handle 14 or 15).
#[test]
fn group_replies_match_captured_teamtalk_bytes() {
    use crate::store::{GroupType, NewGroup, Store};
    let f = fixture();
    let group = |creator, group_type, members: Vec<u32>| NewGroup {
        name: "g".into(),
        avatar: String::new(),
        creator,
        group_type,
        members,
    };
    let normal = f
        .store
        .create_group(&group(1, GroupType::Normal, vec![2, 3, 4]))
        .unwrap();
    assert_eq!(normal.id, 1);
    for _ in 2..=8 {
        f.store
            .create_group(&group(2, GroupType::Tmp, Vec::new()))
            .unwrap();
    }
    let a14 = "a2010c000000010000000e00000000";
    let a15 = "a2010c000000010000000f00000000";
    let cases: [(Command, u16, String, String); 7] = [
        // user 1 creates "capture-group" with 1, 2, 3: id 9.
        (
            Command::GroupCreateRequest,
            24,
            format!("080110021a0d636170747572652d67726f75702200280128022803{a14}"),
            format!("080110001809220d636170747572652d67726f7570280128022803{a14}"),
        ),
        // details of 9 (unknown to the client) and 1 (current).
        (
            Command::GroupInfoRequest,
            25,
            "0801120408091000120408011001a20110000000010000000e0000000000000000".to_owned(),
            "08011221080910011a0d636170747572652d67726f75702200280130023800400140024003\
             a20110000000010000000e0000000000000000"
                .to_owned(),
        ),
        // user 1 adds 4 to 9, then removes 4.
        (
            Command::GroupChangeMemberRequest,
            26,
            format!("0801100118092004{a14}"),
            format!("080110011800200928012802280328043004{a14}"),
        ),
        (
            Command::GroupChangeMemberRequest,
            29,
            format!("0801100218092004{a14}"),
            format!("08011002180020092801280228033004{a14}"),
        ),
        // user 1's normal groups: 1 at version 1.
        (
            Command::GroupNormalListRequest,
            31,
            format!("0801{a14}"),
            format!("0801120408011001{a14}"),
        ),
        // user 2 mutes 9, then unmutes it.
        (
            Command::GroupShieldGroupRequest,
            10,
            format!("080210091801{a15}"),
            format!("080210091800{a15}"),
        ),
        (
            Command::GroupShieldGroupRequest,
            11,
            format!("080210091800{a15}"),
            format!("080210091800{a15}"),
        ),
    ];
    for (cmd, seq, req, want) in &cases {
        let pdu = Pdu::new(cmd.key(), *seq, Bytes::from(hex(req)));
        let reply = f.proxy.handle(&pdu).unwrap();
        assert_eq!(reply.seq(), *seq);
        assert_eq!(reply.body.as_ref(), hex(want).as_slice(), "{cmd} seq {seq}");
    }

    // msg_server's 0x0711 for group 1 (attach data: its handle and the
    // group message waiting for the answer).
    let attach = "a2014108011001180420d4c996d80628123222000000022321414d520a000102030405\
                  060708090a0b0c0d0e0f1011121314151617a2010c000000010000000e00000000";
    let req = format!("08011001100210031004{attach}");
    let want =
        format!("08011206080110011800120608021001180012060803100118001206080410011800{attach}");
    let pdu = Pdu::new(Command::OtherGetShieldReq.key(), 0, Bytes::from(hex(&req)));
    let reply = f.proxy.handle(&pdu).unwrap();
    assert_eq!(reply.key(), Command::OtherGetShieldRsp.key());
    assert_eq!(reply.body.as_ref(), hex(&want).as_slice());
}
