//! What db_proxy does not serve: features not stored yet (avatars),
//! commands it never serves, unreadable bodies. Each gets a failure
//! answer, never silence.

use bytes::Bytes;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::buddy::{ImChangeAvatarReq, ImChangeAvatarRsp};
use teamtalk_proto::pb::im::ext::{ImRequestFailed, RequestFailedCode};
use teamtalk_proto::pb::im::login::ImLoginReq;
use teamtalk_proto::pb::im::other::ImHeartBeat;
use teamtalk_proto::{Command, CommandKey, Pdu};

use super::{call, fixture, request_failed};

const UNSUPPORTED: u32 = RequestFailedCode::RequestFailedUnsupported as u32;
const BAD_REQUEST: u32 = RequestFailedCode::RequestFailedBadRequest as u32;

#[test]
fn features_not_stored_yet_get_their_failure_answer_and_are_counted() {
    let f = fixture();
    // Replies with a result_code carry the failure there.
    let rsp: ImChangeAvatarRsp = call(
        &f.proxy,
        19,
        &ImChangeAvatarReq {
            user_id: 1,
            avatar_url: "http://x/a.png".into(),
            attach_data: None,
        },
    );
    assert_eq!((rsp.user_id, rsp.result_code), (1, 1));

    let s = f.proxy.stats();
    assert_eq!((s.unimplemented, s.failures), (1, 1));
}

#[test]
fn commands_never_served_and_junk_get_request_failed() {
    let f = fixture();
    // A client-only command: "unsupported", never the command's own reply.
    let login = ImLoginReq {
        user_name: "u".into(),
        password: "p".into(),
        online_status: 1,
        client_type: 1,
        client_version: None,
    };
    let reply = f.proxy.handle(&login.to_pdu(1)).unwrap();
    let failed = request_failed(&reply, 1, Command::LoginReqUserlogin);
    assert_eq!(
        (failed.result_code, failed.attach_data),
        (UNSUPPORTED, None)
    );
    // Ids outside the table.
    let unknown = Pdu::new(CommandKey::new(0x0009, 0x0901), 2, Bytes::new());
    let reply = f.proxy.handle(&unknown).unwrap();
    assert_eq!(reply.key(), Command::OtherRequestFailed.key());
    assert_eq!(reply.seq(), 2);
    let failed: ImRequestFailed = reply.decode_body().unwrap();
    assert_eq!(
        (failed.service_id, failed.command_id, failed.result_code),
        (0x0009, 0x0901, UNSUPPORTED)
    );
    // A body that does not decode: "bad request", with the attach_data of
    // the command's empty message (the real one could not be read).
    let junk = Pdu::new(
        Command::MsgListRequest.key(),
        3,
        Bytes::from_static(&[0x0a]),
    );
    let reply = f.proxy.handle(&junk).unwrap();
    let failed = request_failed(&reply, 3, Command::MsgListRequest);
    assert_eq!(
        (failed.result_code, failed.attach_data),
        (BAD_REQUEST, Some(Bytes::new()))
    );

    // Heartbeats and failure answers from a peer are never answered, so
    // two servers cannot bounce failures back and forth.
    assert!(f.proxy.handle(&ImHeartBeat {}.to_pdu(0)).is_none());
    let theirs = ImRequestFailed {
        service_id: 7,
        command_id: 0x0705,
        result_code: 1,
        reason: None,
        attach_data: None,
    };
    assert!(f.proxy.handle(&theirs.to_pdu(4)).is_none());
    let bad_theirs = Pdu::new(
        Command::OtherRequestFailed.key(),
        5,
        Bytes::from_static(&[0x0a]),
    );
    assert!(f.proxy.handle(&bad_theirs).is_none());

    let s = f.proxy.stats();
    assert_eq!((s.unexpected, s.decode_errors, s.unimplemented), (2, 2, 0));
    assert_eq!((s.failures, s.replies), (3, 3));
}
