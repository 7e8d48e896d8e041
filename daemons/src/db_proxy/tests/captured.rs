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
