//! Client behaviour in virtual time, against a scripted server: every timer
//! (connect, login reply, heartbeat, silence, request deadline, logout,
//! backoff), request correlation, refusals, kicks and limits.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::{ClientType, UserInfo};
use teamtalk_proto::pb::im::buddy::{ImAllUserReq, ImAllUserRsp};
use teamtalk_proto::pb::im::login::{ImKickUser, ImLoginRes, ImLogoutRsp};
use teamtalk_proto::pb::im::message::{ImMsgData, ImMsgDataAck};
use teamtalk_proto::{Command, Message, Pdu};

use super::{Drive, heartbeat, ms, secs, t0};
use crate::client::{
    CLIENT_SILENCE_TIMEOUT, Client, ClientConfig, ClientEvent, ClientState, Credentials,
    DEFAULT_REQUEST_TIMEOUT, StopReason, is_transient_refusal, md5_hex,
};
use crate::{Backoff, CloseReason, Input, Machine, Output, SendError};

fn addr() -> SocketAddr {
    "127.0.0.1:8000".parse().unwrap()
}

fn creds() -> Credentials {
    Credentials::new("alice", "secret", ClientType::Windows)
}

/// A client with a fixed msg_server and TeamTalk's unjittered backoff.
fn cfg() -> ClientConfig {
    ClientConfig::new(creds())
        .with_msg_server(addr())
        .with_backoff(Backoff::teamtalk())
}

fn login_ok(user_id: u32) -> Pdu {
    ImLoginRes {
        server_time: 1_700_000_000,
        result_code: 0,
        result_string: None,
        online_status: Some(1),
        user_info: Some(UserInfo {
            user_id,
            user_nick_name: "Alice".into(),
            ..UserInfo::default()
        }),
    }
    .to_pdu(1)
}

fn login_refused(code: i32) -> Pdu {
    ImLoginRes {
        server_time: 1,
        result_code: code,
        result_string: Some("no".into()),
        ..ImLoginRes::default()
    }
    .to_pdu(1)
}

fn all_users() -> Pdu {
    ImAllUserReq {
        user_id: 0,
        latest_update_time: 0,
        attach_data: None,
    }
    .to_pdu(0)
}

fn all_users_reply(seq: u16) -> Pdu {
    ImAllUserRsp::default().to_pdu(seq)
}

/// Connected at `t + 10 ms` and logged in at `t + 20 ms`, outputs cleared.
fn online(cfg: ClientConfig) -> Drive<Client> {
    let t = t0();
    let mut d = Drive::new(Client::new(cfg, t), t);
    d.advance(ms(10));
    let now = d.now;
    d.input(Input::Connected(now));
    d.advance(ms(10));
    d.recv(&login_ok(7).to_bytes());
    assert!(d.m.is_online(), "{:?}", d.events());
    d.clear();
    d
}

/// A request for the user list, at the drive's current time.
fn req(d: &mut Drive<Client>) -> Result<u16, SendError> {
    let now = d.now;
    d.call(|c| c.request(now, &all_users()))
}

fn events(d: &Drive<Client>) -> Vec<ClientEvent> {
    d.events().into_iter().cloned().collect()
}

fn sent_keys(d: &Drive<Client>) -> Vec<(Instant, teamtalk_proto::CommandKey)> {
    d.sent_pdus()
        .into_iter()
        .map(|(t, p)| (t, p.key()))
        .collect()
}

#[test]
fn logs_in_with_the_md5hex_of_the_password_right_after_connecting() {
    let t = t0();
    let mut d = Drive::new(Client::new(cfg(), t), t);
    assert_eq!(d.outputs, [(t, Output::Connect(addr()))]);
    assert_eq!(d.m.state(), ClientState::Connecting { addr: addr() });
    d.input(Input::Connected(t + ms(3)));
    let sent = d.sent_pdus();
    assert_eq!(sent.len(), 1);
    let Ok(Message::LoginReqUserlogin(req)) = Message::decode(&sent[0].1) else {
        panic!("{sent:?}")
    };
    assert_eq!(req.user_name, "alice");
    assert_eq!(req.password, md5_hex(b"secret"));
    assert_eq!(req.password.len(), 32);
    assert_eq!(req.client_type, ClientType::Windows as i32);
    assert_eq!(req.online_status, 1);
    assert_ne!(sent[0].1.seq(), 0);
    assert!(
        events(&d).is_empty(),
        "with credentials the next event is the outcome"
    );
    assert_eq!(d.m.state(), ClientState::LoggingIn);

    d.recv(&login_ok(7).to_bytes());
    let ev = events(&d);
    let Some(ClientEvent::LoggedIn(res)) = ev.last() else {
        panic!("{ev:?}")
    };
    assert_eq!(res.server_time, 1_700_000_000);
    assert_eq!(res.user_info.as_ref().map(|u| u.user_id), Some(7));
    assert_eq!(d.m.user_id(), Some(7));
    assert_eq!(d.m.stats().logins, 1);
}

#[test]
fn connect_timeout_then_backoff_then_a_new_attempt() {
    let t = t0();
    let mut d = Drive::new(Client::new(cfg(), t), t);
    assert_eq!(d.deadline, Some(t + secs(5)));
    d.advance_to(t + secs(5) - ms(1));
    assert_eq!(d.outputs.len(), 1, "nothing before the connect deadline");
    d.advance_to(t + secs(5));
    assert_eq!(
        events(&d),
        [
            ClientEvent::Disconnected(CloseReason::ConnectTimedOut),
            ClientEvent::Reconnecting { after: secs(4) },
        ]
    );
    assert_eq!(d.m.state(), ClientState::Backoff { until: t + secs(9) });
    assert_eq!(req(&mut d), Err(SendError::NotConnected));
    d.advance_to(t + secs(9));
    let connects: Vec<Instant> = d
        .outputs
        .iter()
        .filter(|(_, o)| matches!(o, Output::Connect(_)))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(connects, [t, t + secs(9)]);
}

#[test]
fn backoff_grows_while_attempts_fail_and_resets_after_a_login() {
    let t = t0();
    let mut d = Drive::new(Client::new(cfg(), t), t);
    for _ in 0..4 {
        let now = d.now;
        d.input(Input::ConnectFailed(now));
        d.advance_to(d.deadline.unwrap());
    }
    let waits: Vec<_> = events(&d)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Reconnecting { after } => Some(after),
            _ => None,
        })
        .collect();
    assert_eq!(waits, [4, 8, 16, 32].map(secs));
    // Now one attempt succeeds and logs in: the schedule starts over.
    let now = d.now;
    d.input(Input::Connected(now));
    d.recv(&login_ok(7).to_bytes());
    d.clear();
    let now = d.now;
    d.input(Input::Closed(now));
    assert_eq!(
        events(&d),
        [
            ClientEvent::Disconnected(CloseReason::PeerClosed),
            ClientEvent::Reconnecting { after: secs(4) },
        ]
    );
}

#[test]
fn a_missing_login_reply_times_out_after_15s() {
    let t = t0();
    let mut d = Drive::new(Client::new(cfg(), t), t);
    d.input(Input::Connected(t));
    d.clear();
    // Heartbeats go out while waiting (the server's gate allows them).
    d.advance_to(t + secs(15) - ms(1));
    assert!(events(&d).is_empty());
    d.advance_to(t + secs(15));
    assert_eq!(
        events(&d)[0],
        ClientEvent::Disconnected(CloseReason::LoginTimedOut)
    );
    assert!(d.outputs.iter().any(|(_, o)| *o == Output::Close));
}

#[test]
fn heartbeat_after_5s_without_sending_and_30s_for_phones() {
    let mut d = online(cfg());
    let t = d.now;
    d.advance(secs(12));
    let hb = Command::OtherHeartbeat.key();
    // The login went out at connect time (t - 10 ms): 5 s after it, then every 5 s.
    assert_eq!(
        sent_keys(&d),
        [(t - ms(10) + secs(5), hb), (t - ms(10) + secs(10), hb)]
    );
    // A request counts as sending: the next heartbeat waits 5 s after it.
    d.clear();
    req(&mut d).unwrap();
    let sent_at = d.now;
    d.advance(secs(5) - ms(1));
    assert_eq!(sent_keys(&d).len(), 1, "only the request");
    d.advance(ms(1));
    assert_eq!(sent_keys(&d).last(), Some(&(sent_at + secs(5), hb)));
    assert_eq!(d.m.stats().heartbeats, 3);

    let mut phone = cfg();
    phone.credentials = Some(Credentials::new("alice", "secret", ClientType::Ios));
    let mut phone = online(ClientConfig::new(phone.credentials.unwrap()).with_msg_server(addr()));
    let t = phone.now;
    phone.advance(secs(29));
    assert!(phone.sent_pdus().is_empty());
    phone.advance(secs(1));
    assert_eq!(phone.sent_pdus().len(), 1);
    assert_eq!(phone.sent_pdus()[0].0, t - ms(10) + secs(30));
}

#[test]
fn silence_for_60s_drops_the_connection_but_any_pdu_keeps_it() {
    let mut d = online(cfg());
    let t = d.now;
    // The server echoes a heartbeat at 50 s: the deadline moves to 110 s.
    d.advance_to(t + secs(50));
    d.recv(&heartbeat(0).to_bytes());
    assert!(events(&d).is_empty(), "heartbeats are consumed");
    d.advance_to(t + secs(110) - ms(1));
    assert!(events(&d).is_empty());
    d.advance_to(t + secs(110));
    assert_eq!(
        events(&d),
        [
            ClientEvent::Disconnected(CloseReason::TimedOut),
            ClientEvent::Reconnecting { after: secs(4) },
        ]
    );
    assert_eq!(CLIENT_SILENCE_TIMEOUT, secs(60));
}

#[test]
fn replies_are_matched_by_seq_and_command() {
    let mut d = online(cfg());
    let a = req(&mut d).unwrap();
    let b = req(&mut d).unwrap();
    assert!(a != 0 && b != 0 && a != b);
    let sent = d.sent_pdus();
    assert_eq!((sent[0].1.seq(), sent[1].1.seq()), (a, b));
    assert_eq!(d.m.pending_requests(), 2);

    // A push with b's seq but another command is not b's reply.
    let push = ImMsgData {
        from_user_id: 3,
        to_session_id: 7,
        ..ImMsgData::default()
    }
    .to_pdu(b);
    d.recv(&push.to_bytes());
    // Replies may come in any order.
    d.recv(&all_users_reply(b).to_bytes());
    d.recv(&all_users_reply(a).to_bytes());
    let ev = events(&d);
    assert!(matches!(&ev[0], ClientEvent::Push(p) if p.seq() == b));
    assert_eq!(
        ev[1..],
        [
            ClientEvent::Reply {
                seq: b,
                pdu: all_users_reply(b)
            },
            ClientEvent::Reply {
                seq: a,
                pdu: all_users_reply(a)
            },
        ]
    );
    // A second answer to the same seq is just a push.
    d.clear();
    d.recv(&all_users_reply(a).to_bytes());
    assert!(matches!(&events(&d)[..], [ClientEvent::Push(_)]));
    assert_eq!(d.m.pending_requests(), 0);
}

#[test]
fn seqs_skip_zero_and_pending_ones_when_they_wrap() {
    let mut cfg = cfg();
    cfg.max_pending = 4;
    let mut d = online(cfg);
    d.m.set_last_seq(65_533);
    let first = req(&mut d).unwrap();
    assert_eq!(first, 65_534);
    let seqs: Vec<u16> = (0..3).map(|_| req(&mut d).unwrap()).collect();
    assert_eq!(seqs, [65_535, 1, 2]);
    assert_eq!(req(&mut d), Err(SendError::TooManyPending { max: 4 }));
    // Answer 1 and 2; 65534 and 65535 stay pending; the counter wraps to
    // them again and skips them.
    d.recv(&all_users_reply(1).to_bytes());
    d.recv(&all_users_reply(2).to_bytes());
    d.m.set_last_seq(65_533);
    assert_eq!(req(&mut d).unwrap(), 1);
}

#[test]
fn requests_time_out_at_their_deadline_and_late_replies_are_pushes() {
    let mut d = online(cfg());
    let t = d.now;
    let a = req(&mut d).unwrap();
    d.advance(secs(2));
    let b = d
        .call(|c| c.request_with_timeout(t + secs(2), &all_users(), secs(1)))
        .unwrap();
    d.advance_to(t + secs(3) - ms(1));
    assert!(events(&d).is_empty());
    d.advance_to(t + secs(3));
    assert_eq!(
        events(&d),
        [ClientEvent::RequestTimedOut {
            seq: b,
            command: Command::BuddyListAllUserRequest.key()
        }]
    );
    d.clear();
    d.advance_to(t + DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(
        events(&d),
        [ClientEvent::RequestTimedOut {
            seq: a,
            command: Command::BuddyListAllUserRequest.key()
        }]
    );
    d.clear();
    d.recv(&all_users_reply(a).to_bytes());
    assert!(matches!(&events(&d)[..], [ClientEvent::Push(_)]));
    assert_eq!(d.m.stats().timed_out, 2);
}

#[test]
fn a_lost_connection_fails_every_pending_request_then_reconnects_and_logs_in_again() {
    let mut d = online(cfg());
    let seqs: Vec<u16> = (0..3).map(|_| req(&mut d).unwrap()).collect();
    let now = d.now;
    d.input(Input::Closed(now));
    let mut expected: Vec<ClientEvent> = seqs
        .iter()
        .map(|&seq| ClientEvent::RequestFailed {
            seq,
            reason: CloseReason::PeerClosed,
        })
        .collect();
    expected.push(ClientEvent::Disconnected(CloseReason::PeerClosed));
    expected.push(ClientEvent::Reconnecting { after: secs(4) });
    assert_eq!(events(&d), expected);
    assert_eq!(d.m.pending_requests(), 0);

    d.clear();
    d.advance(secs(4));
    assert_eq!(d.outputs, [(d.now, Output::Connect(addr()))]);
    let now = d.now;
    d.input(Input::Connected(now));
    d.recv(&login_ok(7).to_bytes());
    assert!(d.m.is_online());
    assert_eq!(d.m.stats().logins, 2);
    assert_eq!(d.m.stats().failed, 3);
}

#[test]
fn asks_for_an_assignment_before_every_connect() {
    let t = t0();
    let mut cfg = cfg();
    cfg.msg_server = None;
    let mut d = Drive::new(Client::new(cfg, t), t);
    assert_eq!(events(&d), [ClientEvent::AssignmentNeeded]);
    assert_eq!(d.m.state(), ClientState::Assigning);
    // A failed assignment backs off and asks again.
    d.call(|c| c.assignment_failed(t, "login_server unreachable"));
    assert_eq!(
        events(&d)[1..],
        [ClientEvent::Reconnecting { after: secs(4) }]
    );
    d.clear();
    // An answer given ahead (during the backoff) is used for the next
    // connect, which then asks for none.
    let other: SocketAddr = "127.0.0.2:8000".parse().unwrap();
    d.call(|c| c.assigned(t, other));
    assert!(d.outputs.is_empty());
    d.advance(secs(4));
    assert_eq!(d.outputs, [(d.now, Output::Connect(other))]);
    assert!(events(&d).is_empty(), "{:?}", events(&d));
    let now = d.now;
    d.input(Input::ConnectFailed(now));
    d.clear();
    d.advance(secs(8));
    assert_eq!(events(&d), [ClientEvent::AssignmentNeeded]);
    d.clear();
    let now = d.now;
    d.call(|c| c.assigned(now, addr()));
    assert_eq!(d.outputs, [(d.now, Output::Connect(addr()))]);
    // After a loss, it asks again rather than reusing the old address.
    let now = d.now;
    d.input(Input::Connected(now));
    d.recv(&login_ok(7).to_bytes());
    d.clear();
    let now = d.now;
    d.input(Input::Closed(now));
    d.advance(secs(4));
    assert_eq!(events(&d).last(), Some(&ClientEvent::AssignmentNeeded));
}

#[test]
fn a_wrong_password_stops_without_retrying() {
    assert!(!is_transient_refusal(6) && !is_transient_refusal(7) && !is_transient_refusal(99));
    let t = t0();
    let mut d = Drive::new(Client::new(cfg(), t), t);
    d.input(Input::Connected(t));
    d.clear();
    d.recv(&login_refused(6).to_bytes());
    assert_eq!(
        events(&d),
        [
            ClientEvent::LoginRefused {
                code: 6,
                text: "no".into(),
                retrying: false
            },
            ClientEvent::Stopped(StopReason::LoginRefused { code: 6 }),
        ]
    );
    assert!(d.finished());
    assert_eq!(d.m.state(), ClientState::Stopped);
    assert_eq!(req(&mut d), Err(SendError::Closed));
}

#[test]
fn a_server_side_refusal_retries_with_backoff() {
    assert!(is_transient_refusal(3));
    let t = t0();
    let mut d = Drive::new(Client::new(cfg(), t), t);
    for _ in 0..3 {
        let now = d.now;
        d.input(Input::Connected(now));
        d.recv(&login_refused(3).to_bytes());
        d.advance_to(d.deadline.unwrap());
    }
    let ev = events(&d);
    let waits: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Reconnecting { after } => Some(*after),
            _ => None,
        })
        .collect();
    assert_eq!(waits, [4, 8, 16].map(secs));
    assert!(ev.contains(&ClientEvent::LoginRefused {
        code: 3,
        text: "no".into(),
        retrying: true
    }));
    assert!(!d.finished());
}

#[test]
fn a_duplicate_login_kick_stops_unless_configured_to_reconnect() {
    let kick = ImKickUser {
        user_id: 7,
        kick_reason: 1,
    }
    .to_pdu(0);
    let mut d = online(cfg());
    let seq = req(&mut d).unwrap();
    d.recv(&kick.to_bytes());
    assert_eq!(
        events(&d),
        [
            ClientEvent::RequestFailed {
                seq,
                reason: CloseReason::Kicked
            },
            ClientEvent::Kicked {
                reason: 1,
                reconnecting: false
            },
            ClientEvent::Stopped(StopReason::Kicked { reason: 1 }),
        ]
    );
    assert!(d.finished());

    let mut cfg = cfg();
    cfg.reconnect_after_kick = true;
    let mut d = online(cfg);
    d.recv(&kick.to_bytes());
    assert_eq!(
        events(&d),
        [
            ClientEvent::Kicked {
                reason: 1,
                reconnecting: true
            },
            ClientEvent::Reconnecting { after: secs(4) },
        ]
    );
}

#[test]
fn without_reconnect_the_first_loss_stops_the_client() {
    let mut cfg = cfg();
    cfg.reconnect = false;
    let mut d = online(cfg);
    d.advance(CLIENT_SILENCE_TIMEOUT);
    assert_eq!(
        events(&d),
        [
            ClientEvent::Disconnected(CloseReason::TimedOut),
            ClientEvent::Stopped(StopReason::Disconnected(CloseReason::TimedOut)),
        ]
    );
    assert!(d.finished());
}

#[test]
fn logout_waits_for_the_answer_and_the_servers_close() {
    let mut d = online(cfg());
    let seq = req(&mut d).unwrap();
    let now = d.now;
    d.call(|c| c.logout(now));
    assert_eq!(
        sent_keys(&d).last().map(|k| k.1),
        Some(Command::LoginReqLoginout.key())
    );
    assert_eq!(d.m.state(), ClientState::LoggingOut);
    assert_eq!(req(&mut d), Err(SendError::NotLoggedIn));
    // An earlier request is still answered.
    d.recv(&all_users_reply(seq).to_bytes());
    d.recv(&ImLogoutRsp { result_code: 0 }.to_pdu(9).to_bytes());
    assert!(!d.finished(), "waits for the server to close");
    let now = d.now;
    d.input(Input::Closed(now));
    assert_eq!(
        events(&d),
        [
            ClientEvent::Reply {
                seq,
                pdu: all_users_reply(seq)
            },
            ClientEvent::Stopped(StopReason::LoggedOut { clean: true }),
        ]
    );
    assert!(d.finished());
}

#[test]
fn an_unanswered_logout_closes_after_its_timeout() {
    let mut d = online(cfg());
    let t = d.now;
    let now = d.now;
    d.call(|c| c.logout(now));
    d.advance_to(t + secs(5) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(5));
    assert_eq!(
        events(&d),
        [ClientEvent::Stopped(StopReason::LoggedOut { clean: false })]
    );
    assert!(d.outputs.iter().any(|(_, o)| *o == Output::Close));
    assert!(d.finished());
}

#[test]
fn deliveries_are_acked_like_teamtalk_clients_do() {
    let mut d = online(cfg());
    let single = ImMsgData {
        from_user_id: 3,
        to_session_id: 7,
        msg_id: 41,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::from_static(b"hi"),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    let group = ImMsgData {
        to_session_id: 900,
        msg_type: 0x11,
        ..single.clone()
    };
    d.recv(&single.to_pdu(5).to_bytes());
    d.recv(&group.to_pdu(6).to_bytes());
    let acks: Vec<(u16, ImMsgDataAck)> = d
        .sent_pdus()
        .into_iter()
        .map(|(_, p)| (p.seq(), p.decode_body().unwrap()))
        .collect();
    assert_eq!(
        acks,
        [
            (
                5,
                ImMsgDataAck {
                    user_id: 7,
                    session_id: 3,
                    msg_id: 41,
                    session_type: 1
                }
            ),
            (
                6,
                ImMsgDataAck {
                    user_id: 7,
                    session_id: 900,
                    msg_id: 41,
                    session_type: 2
                }
            ),
        ]
    );
    assert_eq!(events(&d).len(), 2, "both delivered to the application");

    let mut cfg = cfg();
    cfg.ack_deliveries = false;
    let mut d = online(cfg);
    d.recv(&single.to_pdu(5).to_bytes());
    assert!(d.sent_pdus().is_empty());
}

#[test]
fn without_credentials_it_waits_connected_until_told_to_log_in() {
    let t = t0();
    let mut d = Drive::new(
        Client::new(ClientConfig::without_login().with_msg_server(addr()), t),
        t,
    );
    d.input(Input::Connected(t));
    assert_eq!(events(&d), [ClientEvent::Connected(addr())]);
    assert_eq!(d.m.state(), ClientState::Connected);
    assert!(d.sent_pdus().is_empty(), "no login yet");
    // The application may send what it likes (the server decides).
    let seq = req(&mut d).unwrap();
    d.call(|c| c.login(t, creds()));
    let sent = d.sent_pdus();
    assert_eq!(sent[0].1.seq(), seq);
    assert_eq!(sent[1].1.key(), Command::LoginReqUserlogin.key());
    assert_eq!(req(&mut d), Err(SendError::NotLoggedIn));
}

#[test]
fn limits_pending_requests_unsent_bytes_and_frames() {
    let mut cfg = cfg();
    cfg.max_pending = 2;
    cfg.max_tx_bytes = 1000;
    cfg.max_frame_len = 200;
    let mut d = online(cfg);
    req(&mut d).unwrap();
    req(&mut d).unwrap();
    assert_eq!(req(&mut d), Err(SendError::TooManyPending { max: 2 }));
    let big = Pdu::new(Command::MsgData.key(), 0, Bytes::from(vec![0; 300]));
    assert!(matches!(
        d.m.send(d.now, &big),
        Err(SendError::TooLarge { len: 316, max: 200 })
    ));
    // The socket stops taking bytes: over the cap the connection goes.
    d.clear();
    let now = d.now;
    d.m.set_backlog(now, 1001);
    d.drain();
    let ev = events(&d);
    assert!(
        ev.contains(&ClientEvent::Disconnected(CloseReason::SendBufferFull)),
        "{ev:?}"
    );
    // A frame over the limit from the server is a protocol failure.
    let mut d = online({
        let mut c = self::cfg();
        c.max_frame_len = 200;
        c
    });
    d.recv(&Pdu::new(Command::MsgData.key(), 0, Bytes::from(vec![0; 300])).to_bytes());
    assert!(matches!(
        events(&d)[0],
        ClientEvent::Disconnected(CloseReason::Frame(_))
    ));
}

#[test]
fn close_fails_pending_requests_and_stops() {
    let mut d = online(cfg());
    let seq = req(&mut d).unwrap();
    d.call(Client::close);
    assert_eq!(
        events(&d),
        [
            ClientEvent::RequestFailed {
                seq,
                reason: CloseReason::Local
            },
            ClientEvent::Stopped(StopReason::Closed),
        ]
    );
    assert!(d.finished());
    // Stopped for good: inputs are ignored.
    d.clear();
    let now = d.now;
    d.m.handle_input(Input::Connected(now));
    assert_eq!(d.m.poll_output(), Output::Finished);
}

#[test]
fn a_malformed_login_reply_or_kick_is_handled_without_panicking() {
    let t = t0();
    let mut d = Drive::new(Client::new(cfg(), t), t);
    d.input(Input::Connected(t));
    d.clear();
    d.recv(
        &Pdu::new(
            Command::LoginResUserlogin.key(),
            1,
            Bytes::from_static(b"\xff\xff"),
        )
        .to_bytes(),
    );
    assert_eq!(
        events(&d)[0],
        ClientEvent::Disconnected(CloseReason::Malformed(Command::LoginResUserlogin.key()))
    );
    let mut d = online(cfg());
    d.recv(&Pdu::new(Command::LoginKickUser.key(), 0, Bytes::from_static(b"\xff")).to_bytes());
    assert_eq!(
        events(&d)[0],
        ClientEvent::Kicked {
            reason: 0,
            reconnecting: false
        }
    );
}

#[test]
fn an_online_client_runs_for_hours_of_virtual_time() {
    let mut d = online(cfg());
    let t = d.now;
    // The server echoes every heartbeat; the client sends one every 5 s.
    while d.now < t + secs(4 * 3600) {
        let next = d.deadline.unwrap();
        d.advance_to(next);
        d.recv(&heartbeat(0).to_bytes());
    }
    assert!(d.m.is_online());
    assert!(events(&d).is_empty(), "{:?}", events(&d));
    assert!(d.m.stats().heartbeats >= 4 * 3600 / 5);
}

#[test]
fn a_client_that_stays_after_logout_signs_in_again_as_another_user() {
    let mut cfg = cfg();
    cfg.stop_after_logout = false;
    let mut d = online(cfg);
    let now = d.now;
    d.call(|c| c.logout(now));
    d.recv(&ImLogoutRsp { result_code: 0 }.to_pdu(9).to_bytes());
    let now = d.now;
    d.input(Input::Closed(now));
    assert_eq!(events(&d), [ClientEvent::LoggedOut { clean: true }]);
    assert!(!d.finished());
    assert_eq!(d.m.state(), ClientState::LoggedOut);
    assert_eq!(req(&mut d), Err(SendError::NotConnected));
    // Idle: no timers but the fallback wake-up, nothing sent.
    d.clear();
    d.advance(secs(600));
    assert!(d.outputs.is_empty(), "{:?}", d.outputs);

    let bob = Credentials::new("bob", "pw", ClientType::Mac);
    let now = d.now;
    d.call(|c| c.login(now, bob));
    assert_eq!(d.outputs, [(d.now, Output::Connect(addr()))]);
    let now = d.now;
    d.input(Input::Connected(now));
    let Ok(Message::LoginReqUserlogin(req)) = Message::decode(&d.sent_pdus()[0].1) else {
        panic!()
    };
    assert_eq!(req.user_name, "bob");
    d.recv(&login_ok(8).to_bytes());
    assert!(d.m.is_online());
    assert_eq!(d.m.user_id(), Some(8));

    // An unanswered logout also leaves it idle, not clean.
    d.clear();
    let t = d.now;
    d.call(|c| c.logout(t));
    d.advance(secs(5));
    assert_eq!(events(&d), [ClientEvent::LoggedOut { clean: false }]);
    assert!(d.outputs.iter().any(|(_, o)| *o == Output::Close));
}
