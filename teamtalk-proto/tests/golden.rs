//! Golden PDUs written out byte by byte from the wire rules, independent of
//! prost: each must decode to the expected typed values and re-encode to
//! exactly the same bytes.
//!
//! Reminders for reading the bytes:
//! - header: u32 length (whole PDU), u16 version = 1, u16 flag = 0,
//!   u16 service, u16 command, u16 seq, u16 reserved = 0, all big-endian;
//! - a protobuf tag byte is `(field number << 3) | wire type`, wire type 0
//!   for varints (integers, enums) and 2 for length-delimited data (strings,
//!   bytes, messages);
//! - varints carry 7 bits per byte, least significant group first, with the
//!   top bit set on every byte but the last.

use bytes::{Bytes, BytesMut};
use teamtalk_proto::pb::im::base_define::{
    ClientType, MsgType, ResultType, SessionType, UserStatType,
};
use teamtalk_proto::{Command, Message, PduCodec};

/// Frames `wire`, checks it is one whole PDU of `cmd` with sequence `seq`,
/// decodes it, re-encodes it and checks the bytes are unchanged.
fn decode_golden(wire: &[u8], cmd: Command, seq: u16) -> Message {
    assert_eq!(
        u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize,
        wire.len(),
        "length field of the golden PDU"
    );
    let mut buf = BytesMut::from(wire);
    let pdu = PduCodec::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(pdu.key(), cmd.key());
    assert_eq!(pdu.seq(), seq);
    let msg = Message::decode(&pdu).unwrap();
    assert_eq!(msg.command(), Some(cmd));
    assert_eq!(
        &msg.to_pdu(seq).to_bytes()[..],
        wire,
        "re-encoding of {cmd}"
    );
    msg
}

#[test]
fn login_request() {
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x42][..], // length 66 = 16 + 50
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x01],                 // SID_LOGIN
        &[0x01, 0x03],                 // CID_LOGIN_REQ_USERLOGIN
        &[0x00, 0x01],                 // seq 1
        &[0x00, 0x00],                 // reserved
        // body: IMLoginReq
        &[0x0a, 0x05], // field 1 user_name, LEN, 5 bytes
        b"user1",
        &[0x12, 0x20], // field 2 password, LEN, 32 bytes (hex MD5 of "123456")
        b"e10adc3949ba59abbe56e057f20f883e",
        &[0x18, 0x01], // field 3 online_status, varint 1 = USER_STATUS_ONLINE
        &[0x20, 0x12], // field 4 client_type, varint 0x12 = CLIENT_TYPE_ANDROID
        &[0x2a, 0x03], // field 5 client_version, LEN, 3 bytes
        b"1.0",
    ]
    .concat();

    let Message::LoginReqUserlogin(req) = decode_golden(&wire, Command::LoginReqUserlogin, 1)
    else {
        panic!("not a login request");
    };
    assert_eq!(req.user_name, "user1");
    assert_eq!(req.password, "e10adc3949ba59abbe56e057f20f883e");
    assert_eq!(req.online_status, UserStatType::UserStatusOnline as i32);
    assert_eq!(req.client_type, ClientType::Android as i32);
    assert_eq!(req.client_version.as_deref(), Some("1.0"));
}

#[test]
fn message_data_with_attach_data() {
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x31][..], // length 49 = 16 + 33
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x03],                 // SID_MSG
        &[0x03, 0x01],                 // CID_MSG_DATA
        &[0x00, 0x09],                 // seq 9
        &[0x00, 0x00],                 // reserved
        // body: IMMsgData
        &[0x08, 0x01], // field 1 from_user_id = 1
        &[0x10, 0x02], // field 2 to_session_id = 2
        &[0x18, 0x00], // field 3 msg_id = 0 (required, so written even when 0)
        // field 4 create_time = 1700000000: 7-bit groups 0x00 0x62 0x4f 0x2a
        // 0x06, continuation bit on the first four
        &[0x20, 0x80, 0xe2, 0xcf, 0xaa, 0x06],
        &[0x28, 0x01], // field 5 msg_type = MSG_TYPE_SINGLE_TEXT
        &[0x32, 0x02], // field 6 msg_data, LEN, 2 bytes
        b"hi",
        // field 20 attach_data, LEN: tag (20 << 3) | 2 = 162 is the two-byte
        // varint 0xa2 0x01; then length 12
        &[0xa2, 0x01, 0x0c],
        // a 12-byte handle record: type 1, conn handle 7, service type 0
        &[0x00, 0x00, 0x00, 0x01],
        &[0x00, 0x00, 0x00, 0x07],
        &[0x00, 0x00, 0x00, 0x00],
    ]
    .concat();

    let Message::MsgData(data) = decode_golden(&wire, Command::MsgData, 9) else {
        panic!("not a message");
    };
    assert_eq!(data.from_user_id, 1);
    assert_eq!(data.to_session_id, 2);
    assert_eq!(data.msg_id, 0);
    assert_eq!(data.create_time, 1_700_000_000);
    assert_eq!(data.msg_type, MsgType::SingleText as i32);
    assert_eq!(data.msg_data, Bytes::from_static(b"hi"));
    assert_eq!(
        data.attach_data,
        Some(Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0]))
    );
}

#[test]
fn message_data_extension_fields() {
    // Our fields 100 (dedupe_key) and 101 (duplicate) after attach_data:
    // tags (100 << 3) | 2 = 802 and (101 << 3) | 0 = 808 are two-byte varints.
    let wire: Vec<u8> = [
        &[0x00, 0x00, 0x00, 0x34][..], // length 52 = 16 + 36
        &[0x00, 0x01],
        &[0x00, 0x00],
        &[0x00, 0x03], // SID_MSG
        &[0x03, 0x01], // CID_MSG_DATA
        &[0x00, 0x02], // seq 2
        &[0x00, 0x00],
        &[0x08, 0x01], // from_user_id = 1
        &[0x10, 0x02], // to_session_id = 2
        &[0x18, 0x05], // msg_id = 5
        &[0x20, 0x00], // create_time = 0
        &[0x28, 0x01], // msg_type = MSG_TYPE_SINGLE_TEXT
        &[0x32, 0x02], // msg_data, 2 bytes
        b"hi",
        &[0xa2, 0x06, 0x10], // field 100 dedupe_key, LEN, 16 bytes
        &[0x5a; 16],
        &[0xa8, 0x06, 0x01], // field 101 duplicate = true
    ]
    .concat();
    let Message::MsgData(data) = decode_golden(&wire, Command::MsgData, 2) else {
        panic!("not a message");
    };
    assert_eq!(data.msg_id, 5);
    assert_eq!(data.attach_data, None);
    assert_eq!(data.dedupe_key, Some(Bytes::from_static(&[0x5a; 16])));
    assert_eq!(data.duplicate, Some(true));
}

#[test]
fn validate_request_with_client_addr() {
    let wire: Vec<u8> = [
        &[0x00, 0x00, 0x00, 0x2b][..], // length 43 = 16 + 27
        &[0x00, 0x01],
        &[0x00, 0x00],
        &[0x00, 0x07], // SID_OTHER
        &[0x07, 0x03], // CID_OTHER_VALIDATE_REQ
        &[0x00, 0x01], // seq 1
        &[0x00, 0x00],
        &[0x0a, 0x01], // user_name, 1 byte
        b"a",
        &[0x12, 0x01], // password, 1 byte
        b"p",
        &[0xa2, 0x01, 0x00], // attach_data, empty
        // field 100 client_addr, LEN, 15 bytes
        &[0xa2, 0x06, 0x0f],
        b"192.0.2.7:51234",
    ]
    .concat();
    let Message::OtherValidateReq(req) = decode_golden(&wire, Command::OtherValidateReq, 1) else {
        panic!("not a validate request");
    };
    assert_eq!(req.user_name, "a");
    assert_eq!(req.client_addr.as_deref(), Some("192.0.2.7:51234"));
}

#[test]
fn heartbeat_has_an_empty_body() {
    let wire = [
        0x00, 0x00, 0x00, 0x10, // length 16: header only
        0x00, 0x01, // version 1
        0x00, 0x00, // flag
        0x00, 0x07, // SID_OTHER
        0x07, 0x01, // CID_OTHER_HEARTBEAT
        0x00, 0x00, // seq 0
        0x00, 0x00, // reserved
    ];
    let msg = decode_golden(&wire, Command::OtherHeartbeat, 0);
    assert!(matches!(msg, Message::OtherHeartbeat(_)));
    assert!(msg.encode_body().is_empty());
}

#[test]
fn msg_server_choice_response() {
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x29][..], // length 41 = 16 + 25
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x01],                 // SID_LOGIN
        &[0x01, 0x02],                 // CID_LOGIN_RES_MSGSERVER
        &[0x00, 0x03],                 // seq 3
        &[0x00, 0x00],                 // reserved
        // body: IMMsgServRsp
        &[0x08, 0x00], // field 1 result_code = REFUSE_REASON_NONE
        &[0x12, 0x08], // field 2 prior_ip, LEN, 8 bytes
        b"10.0.0.1",
        &[0x1a, 0x08], // field 3 backip_ip, LEN, 8 bytes
        b"10.0.0.2",
        // field 4 port = 8000 = 0x1f40: low 7 bits 0x40 | 0x80, then 0x3e
        &[0x20, 0xc0, 0x3e],
    ]
    .concat();

    let Message::LoginResMsgserver(rsp) = decode_golden(&wire, Command::LoginResMsgserver, 3)
    else {
        panic!("not a msg_server response");
    };
    assert_eq!(rsp.result_code, ResultType::RefuseReasonNone as i32);
    assert_eq!(rsp.prior_ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(rsp.backip_ip.as_deref(), Some("10.0.0.2"));
    assert_eq!(rsp.port, Some(8000));
}

#[test]
fn message_ack() {
    let wire = [
        0x00, 0x00, 0x00, 0x19, // length 25 = 16 + 9
        0x00, 0x01, // version 1
        0x00, 0x00, // flag
        0x00, 0x03, // SID_MSG
        0x03, 0x02, // CID_MSG_DATA_ACK
        0x00, 0x09, // seq 9, echoing the message it acknowledges
        0x00, 0x00, // reserved
        // body: IMMsgDataAck
        0x08, 0x02, // field 1 user_id = 2
        0x10, 0x01, // field 2 session_id = 1
        0x18, 0xac, 0x02, // field 3 msg_id = 300 = 0x12c: 0x2c | 0x80, then 0x02
        0x20, 0x01, // field 4 session_type = SESSION_TYPE_SINGLE
    ];
    let Message::MsgDataAck(ack) = decode_golden(&wire, Command::MsgDataAck, 9) else {
        panic!("not an ack");
    };
    assert_eq!((ack.user_id, ack.session_id, ack.msg_id), (2, 1, 300));
    assert_eq!(ack.session_type, SessionType::Single as i32);
}

#[test]
fn failed_login_response_omits_unset_optionals() {
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x24][..], // length 36 = 16 + 20
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x01],                 // SID_LOGIN
        &[0x01, 0x04],                 // CID_LOGIN_RES_USERLOGIN
        &[0x00, 0x01],                 // seq 1
        &[0x00, 0x00],                 // reserved
        // body: IMLoginRes; online_status (4) and user_info (5) are unset
        // and therefore absent
        &[0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06], // field 1 server_time = 1700000000
        &[0x10, 0x06], // field 2 result_code = REFUSE_REASON_DB_VALIDATE_FAILED
        &[0x1a, 0x0a], // field 3 result_string, LEN, 10 bytes
        b"bad passwd",
    ]
    .concat();

    let Message::LoginResUserlogin(res) = decode_golden(&wire, Command::LoginResUserlogin, 1)
    else {
        panic!("not a login response");
    };
    assert_eq!(res.server_time, 1_700_000_000);
    assert_eq!(
        res.result_code,
        ResultType::RefuseReasonDbValidateFailed as i32
    );
    assert_eq!(res.result_string.as_deref(), Some("bad passwd"));
    assert_eq!(res.online_status, None);
    assert_eq!(res.user_info, None);
}

#[test]
fn repeated_ids_are_unpacked_and_packed_input_is_accepted() {
    let unpacked = [
        0x00, 0x00, 0x00, 0x16, // length 22 = 16 + 6
        0x00, 0x01, // version 1
        0x00, 0x00, // flag
        0x00, 0x02, // SID_BUDDY_LIST
        0x02, 0x0a, // CID_BUDDY_LIST_USERS_STATUS_REQUEST
        0x00, 0x05, // seq 5
        0x00, 0x00, // reserved
        // body: IMUsersStatReq
        0x08, 0x01, // field 1 user_id = 1
        0x10, 0x02, // field 2 user_id_list, one tag per element: 2
        0x10, 0x03, // field 2 again: 3
    ];
    let Message::BuddyListUsersStatusRequest(req) =
        decode_golden(&unpacked, Command::BuddyListUsersStatusRequest, 5)
    else {
        panic!("not a users status request");
    };
    assert_eq!(req.user_id, 1);
    assert_eq!(req.user_id_list, [2, 3]);
    assert_eq!(req.attach_data, None);

    // The same list packed (field 2 as LEN with the two varints inside), as
    // a proto3-minded peer might send it, decodes to the same message.
    let packed = [
        0x00, 0x00, 0x00, 0x16, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x02, 0x0a, 0x00, 0x05, 0x00,
        0x00, // header as above
        0x08, 0x01, // field 1 user_id = 1
        0x12, 0x02, 0x02, 0x03, // field 2, LEN, 2 bytes: 2, 3
    ];
    let mut buf = BytesMut::from(&packed[..]);
    let pdu = PduCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        Message::decode(&pdu).unwrap(),
        Message::BuddyListUsersStatusRequest(req)
    );
}

#[test]
fn request_failed_extension() {
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x2d][..], // length 45 = 16 + 29
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x07],                 // SID_OTHER
        &[0x07, 0x90],                 // CID_OTHER_REQUEST_FAILED (teamtalk-rs)
        &[0x00, 0x0b],                 // seq 11
        &[0x00, 0x00],                 // reserved
        // body: IM.Ext.IMRequestFailed
        &[0x08, 0x03], // field 1 service_id = SID_MSG
        // field 2 command_id = 0x0309 (777): 7-bit groups 0x09, 0x06
        &[0x10, 0x89, 0x06],
        &[0x18, 0x01], // field 3 result_code = REQUEST_FAILED_SERVER_ERROR
        &[0x22, 0x05], // field 4 reason, LEN, 5 bytes
        b"store",
        &[0xa2, 0x01, 0x0c], // field 20 attach_data, LEN, 12 bytes
        &[0x00, 0x00, 0x00, 0x01],
        &[0x00, 0x00, 0x00, 0x07],
        &[0x00, 0x00, 0x00, 0x00],
    ]
    .concat();

    let mut msg = decode_golden(&wire, Command::OtherRequestFailed, 11);
    let Message::OtherRequestFailed(failed) = &msg else {
        panic!("not a request failure");
    };
    assert_eq!(
        (failed.service_id, failed.command_id, failed.result_code),
        (0x0003, 0x0309, 1)
    );
    assert_eq!(failed.reason.as_deref(), Some("store"));
    assert_eq!(msg.result_code(), Some(1));
    assert_eq!(
        msg.attach_data(),
        Some(Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0]))
    );
}

/// The link-authentication hello: 16-byte header, then version, an 8-byte
/// key id and a 32-byte nonce.
#[test]
fn link_auth_hello_extension() {
    let key_id = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    let nonce: Vec<u8> = (0u8..32).collect();
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x3e][..], // length 62 = 16 + 46
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x07],                 // SID_OTHER
        &[0x07, 0x80],                 // CID_OTHER_LINK_AUTH_HELLO (teamtalk-rs)
        &[0x00, 0x00],                 // seq 0
        &[0x00, 0x00],                 // reserved
        // body: IM.Ext.IMLinkAuthHello
        &[0x08, 0x01], // field 1 version = LINK_AUTH_VERSION_1
        &[0x12, 0x08], // field 2 key_id, LEN, 8 bytes
        &key_id,
        &[0x1a, 0x20], // field 3 nonce, LEN, 32 bytes
        &nonce,
    ]
    .concat();
    let msg = decode_golden(&wire, Command::OtherLinkAuthHello, 0);
    let Message::OtherLinkAuthHello(hello) = &msg else {
        panic!("not a hello");
    };
    assert_eq!(hello.version, 1);
    assert_eq!(&hello.key_id[..], &key_id);
    assert_eq!(&hello.nonce[..], &nonce[..]);
}

/// The responder's challenge: its nonce and its proof, 32 bytes each.
#[test]
fn link_auth_challenge_extension() {
    let nonce = [0xa5; 32];
    let proof = [0x5a; 32];
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x54][..], // length 84 = 16 + 68
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x07],                 // SID_OTHER
        &[0x07, 0x81],                 // CID_OTHER_LINK_AUTH_CHALLENGE (teamtalk-rs)
        &[0x00, 0x00],                 // seq 0
        &[0x00, 0x00],                 // reserved
        // body: IM.Ext.IMLinkAuthChallenge
        &[0x0a, 0x20], // field 1 nonce, LEN, 32 bytes
        &nonce,
        &[0x12, 0x20], // field 2 proof, LEN, 32 bytes
        &proof,
    ]
    .concat();
    let msg = decode_golden(&wire, Command::OtherLinkAuthChallenge, 0);
    let Message::OtherLinkAuthChallenge(challenge) = &msg else {
        panic!("not a challenge");
    };
    assert_eq!(&challenge.nonce[..], &nonce);
    assert_eq!(&challenge.proof[..], &proof);
}

/// The initiator's proof.
#[test]
fn link_auth_proof_extension() {
    let proof: Vec<u8> = (0u8..32).rev().collect();
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x32][..], // length 50 = 16 + 34
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x07],                 // SID_OTHER
        &[0x07, 0x82],                 // CID_OTHER_LINK_AUTH_PROOF (teamtalk-rs)
        &[0x00, 0x00],                 // seq 0
        &[0x00, 0x00],                 // reserved
        // body: IM.Ext.IMLinkAuthProof
        &[0x0a, 0x20], // field 1 proof, LEN, 32 bytes
        &proof,
    ]
    .concat();
    let msg = decode_golden(&wire, Command::OtherLinkAuthProof, 0);
    let Message::OtherLinkAuthProof(p) = &msg else {
        panic!("not a proof");
    };
    assert_eq!(&p.proof[..], &proof[..]);
}

/// A refusal: the peer's proof was wrong.
#[test]
fn link_auth_result_extension() {
    let wire: Vec<u8> = [
        // header
        &[0x00, 0x00, 0x00, 0x12][..], // length 18 = 16 + 2
        &[0x00, 0x01],                 // version 1
        &[0x00, 0x00],                 // flag
        &[0x00, 0x07],                 // SID_OTHER
        &[0x07, 0x83],                 // CID_OTHER_LINK_AUTH_RESULT (teamtalk-rs)
        &[0x00, 0x00],                 // seq 0
        &[0x00, 0x00],                 // reserved
        // body: IM.Ext.IMLinkAuthResult
        &[0x08, 0x01], // field 1 result_code = LINK_AUTH_BAD_PROOF
    ]
    .concat();
    let msg = decode_golden(&wire, Command::OtherLinkAuthResult, 0);
    assert_eq!(msg.result_code(), Some(1));
}
