//! Session behaviour, driven by a scripted client in virtual time.

use std::net::SocketAddr;

use bytes::Bytes;
use teamtalk_proto::{FrameError, Pdu};

use super::{Drive, MSG_DATA, heartbeat, login_req, ms, msg, pdus, secs, t0};
use crate::{
    CloseReason, Input, Login, LoginError, Output, SendError, Session, SessionConfig, SessionEvent,
};

const WINDOWS: u32 = 0x01;
const ANDROID: u32 = 0x12;

fn peer() -> SocketAddr {
    "198.51.100.9:51000".parse().unwrap()
}

fn client() -> Drive<Session> {
    let t = t0();
    Drive::new(Session::new(SessionConfig::client(), peer(), t), t)
}

fn closed_with(d: &Drive<Session>) -> Option<CloseReason> {
    d.events().into_iter().find_map(|e| match e {
        SessionEvent::Closed(r) => Some(*r),
        _ => None,
    })
}

/// Ends with Close, Closed(reason), Finished, in that order.
fn assert_closed(d: &Drive<Session>, reason: CloseReason) {
    let n = d.outputs.len();
    assert!(n >= 3, "{:?}", d.outputs);
    assert_eq!(d.outputs[n - 3].1, Output::Close);
    assert_eq!(
        d.outputs[n - 2].1,
        Output::Event(SessionEvent::Closed(reason))
    );
    assert_eq!(d.outputs[n - 1].1, Output::Finished);
}

fn logged_in(client_type: u32) -> Drive<Session> {
    let mut d = client();
    d.recv(&login_req(1).to_bytes());
    d.call(|s| s.accept_login(7, client_type)).unwrap();
    d
}

#[test]
fn login_deadline_is_15s_not_14_999() {
    let mut d = client();
    let t = d.now;
    d.advance_to(t + secs(15) - ms(1));
    assert!(!d.finished());
    assert!(d.outputs.is_empty());
    d.advance_to(t + secs(15));
    assert_closed(&d, CloseReason::LoginTimedOut);
    assert_eq!(d.outputs[0].0, t + secs(15));
}

#[test]
fn login_deadline_still_runs_while_the_app_checks_credentials() {
    let mut d = client();
    let t = d.now;
    d.advance(secs(10));
    d.recv(&login_req(1).to_bytes());
    assert_eq!(d.m.login(), Login::Pending);
    d.advance_to(t + secs(15));
    assert_closed(&d, CloseReason::LoginTimedOut);
    // The app's late answer is refused with a typed error.
    assert_eq!(d.m.accept_login(1, WINDOWS), Err(LoginError::Closed));
}

#[test]
fn accepted_login_lifts_the_deadline() {
    let mut d = logged_in(WINDOWS);
    d.advance(secs(100));
    assert!(!d.finished());
    assert_eq!(
        d.m.login(),
        Login::LoggedIn {
            user_id: 7,
            client_type: WINDOWS
        }
    );
    assert_eq!(
        d.events(),
        [&SessionEvent::LoginRequest(login_req(1))],
        "the login request is raised once"
    );
}

#[test]
fn command_before_login_closes_unauthenticated() {
    let mut d = client();
    d.recv(&msg(1, 10).to_bytes());
    assert_closed(&d, CloseReason::Unauthenticated(MSG_DATA));
    assert_eq!(d.events().len(), 1, "no PDU event for the intruder");
}

#[test]
fn command_while_login_pending_closes_unauthenticated() {
    let mut d = client();
    // Login and a message in one read: the message is refused.
    let mut bytes = login_req(1).to_bytes().to_vec();
    bytes.extend_from_slice(&msg(2, 3).to_bytes());
    d.recv(&bytes);
    assert_eq!(d.events()[0], &SessionEvent::LoginRequest(login_req(1)));
    assert_closed(&d, CloseReason::Unauthenticated(MSG_DATA));
}

#[test]
fn second_login_request_closes_pending_or_logged_in() {
    let mut d = client();
    d.recv(&login_req(1).to_bytes());
    d.recv(&login_req(2).to_bytes());
    assert_closed(&d, CloseReason::DuplicateLogin);

    let mut d = logged_in(WINDOWS);
    d.recv(&login_req(3).to_bytes());
    assert_closed(&d, CloseReason::DuplicateLogin);
}

/// file_server's client port: its clients open with `CID_FILE_LOGIN_REQ`
/// (0x0501), which is their login; msg_server's login is then just
/// another command before login.
#[test]
fn login_command_is_configurable() {
    let file_login = teamtalk_proto::CommandKey::new(5, 0x0501);
    let cfg = SessionConfig::client().with_login_command(file_login);
    let t = t0();
    let mut d = Drive::new(Session::new(cfg.clone(), peer(), t), t);
    let req = Pdu::new(file_login, 1, Bytes::from_static(b"\x08\x07"));
    d.recv(&req.to_bytes());
    assert_eq!(d.events(), [&SessionEvent::LoginRequest(req)]);
    d.call(|s| s.accept_login(7, WINDOWS)).unwrap();
    d.recv(&msg(2, 3).to_bytes());
    assert_eq!(d.events()[1], &SessionEvent::Pdu(msg(2, 3)));
    // The deadline and the gate are the same as msg_server's.
    let mut d = Drive::new(Session::new(cfg.clone(), peer(), t), t);
    d.advance_to(t + secs(15));
    assert_closed(&d, CloseReason::LoginTimedOut);
    let mut d = Drive::new(Session::new(cfg, peer(), t), t);
    d.recv(&login_req(1).to_bytes());
    assert_closed(
        &d,
        CloseReason::Unauthenticated(teamtalk_proto::Command::LoginReqUserlogin.key()),
    );
}

#[test]
fn heartbeats_are_echoed_byte_for_byte_before_and_after_login() {
    let mut d = client();
    // Unusual flag and reserved values must survive the echo too.
    let mut raw = heartbeat(0xbeef).to_bytes().to_vec();
    raw[6..8].copy_from_slice(&[0x12, 0x34]);
    raw[14..16].copy_from_slice(&[0x56, 0x78]);
    d.recv(&raw);
    assert_eq!(d.transmitted(), raw);
    assert!(
        d.events().is_empty(),
        "heartbeats are not application events"
    );

    d.clear();
    d.recv(&login_req(1).to_bytes());
    d.call(|s| s.accept_login(9, WINDOWS)).unwrap();
    let hb = heartbeat(7).to_bytes();
    d.recv(&hb);
    assert_eq!(d.transmitted(), hb);
    let echoed = pdus(&d.transmitted());
    assert_eq!(echoed[0].seq(), 7);
}

#[test]
fn pc_client_idles_out_at_120s_mobile_at_300s() {
    for (client_type, limit) in [(WINDOWS, secs(120)), (ANDROID, secs(300))] {
        let mut d = logged_in(client_type);
        d.advance(secs(50));
        d.recv(&heartbeat(1).to_bytes());
        let last_rx = d.now;
        d.advance_to(last_rx + limit - ms(1));
        assert!(!d.finished(), "type {client_type:#x} closed early");
        d.advance_to(last_rx + limit);
        assert_closed(&d, CloseReason::TimedOut);
        assert_eq!(d.outputs.last().unwrap().0, last_rx + limit);
    }
}

#[test]
fn mobile_timeout_counts_from_the_last_byte_not_from_the_accept() {
    let mut d = client();
    d.recv(&login_req(1).to_bytes());
    let last_rx = d.now;
    d.advance(secs(5)); // db_proxy takes 5 s to answer
    d.call(|s| s.accept_login(7, ANDROID)).unwrap();
    assert_eq!(d.deadline, Some(last_rx + secs(300)));
}

#[test]
fn heartbeating_client_stays_for_hours() {
    let mut d = logged_in(WINDOWS);
    for _ in 0..(6 * 3600 / 60) {
        d.advance(secs(60));
        d.recv(&heartbeat(0).to_bytes());
    }
    assert!(!d.finished());
}

#[test]
fn logged_in_pdus_reach_the_app_even_split_across_reads() {
    let mut d = logged_in(WINDOWS);
    let wire = msg(5, 40).to_bytes();
    for chunk in wire.chunks(7) {
        d.recv(chunk);
    }
    assert_eq!(d.events().last(), Some(&&SessionEvent::Pdu(msg(5, 40))));
}

#[test]
fn reject_sends_the_reply_then_closes() {
    let mut d = client();
    d.recv(&login_req(1).to_bytes());
    d.clear();
    let reply = Pdu::new(login_req(1).key(), 1, Bytes::from_static(b"\x10\x06"));
    d.call(|s| s.reject_login(&reply)).unwrap();
    assert_eq!(d.outputs[0].1, Output::Transmit(reply.to_bytes()));
    assert_closed(&d, CloseReason::LoginRejected);
}

#[test]
fn login_answers_need_a_pending_request() {
    let mut d = client();
    assert_eq!(d.m.accept_login(1, WINDOWS), Err(LoginError::NotPending));
    let mut peer = Drive::new(
        Session::new(SessionConfig::server_peer(), peer(), d.now),
        d.now,
    );
    assert_eq!(peer.m.accept_login(1, WINDOWS), Err(LoginError::NotPending));
    peer.call(Session::close);
    assert_closed(&peer, CloseReason::Local);
    assert_eq!(peer.m.send(&msg(1, 1)), Err(SendError::Closed));
}

#[test]
fn slow_client_overflows_the_send_queue() {
    let mut cfg = SessionConfig::client();
    cfg.max_tx_bytes = 10_000;
    let t = t0();
    let mut d = Drive::new(Session::new(cfg, peer(), t), t);
    d.recv(&login_req(1).to_bytes());
    d.call(|s| s.accept_login(1, WINDOWS)).unwrap();
    // The client stops reading: the driver's queue only grows.
    let mut backlog = 0;
    let mut result = Ok(());
    for i in 0..100 {
        result = d.call(|s| s.send(&msg(i, 984)));
        if result.is_err() {
            break;
        }
        backlog += 1000;
        let now = d.now;
        d.call(|s| crate::Machine::set_backlog(s, now, backlog));
    }
    assert_eq!(result, Err(SendError::BufferFull));
    assert_eq!(backlog, 10_000, "exactly the cap was accepted");
    assert_closed(&d, CloseReason::SendBufferFull);

    // A driver report alone can trip the cap too.
    let mut d = logged_in(WINDOWS);
    let now = d.now;
    d.call(|s| crate::Machine::set_backlog(s, now, crate::DEFAULT_MAX_TX_BYTES + 1));
    assert_closed(&d, CloseReason::SendBufferFull);
}

#[test]
fn bad_frames_and_peer_close_have_typed_reasons() {
    let mut d = client();
    let mut h = heartbeat(0).header;
    h.length = 15;
    d.recv(&h.to_bytes());
    assert_closed(&d, CloseReason::Frame(FrameError::TooShort(15)));

    let mut d = client();
    d.recv(&u32::MAX.to_be_bytes());
    assert!(matches!(
        closed_with(&d),
        Some(CloseReason::Frame(FrameError::TooLong { .. }))
    ));

    let mut d = client();
    let now = d.now;
    d.input(Input::Closed(now));
    assert_closed(&d, CloseReason::PeerClosed);
    // Inputs after the end produce nothing.
    d.clear();
    d.input(Input::Received(now, &heartbeat(0).to_bytes()));
    assert_eq!(d.outputs, [(now, Output::Finished)]);
}

#[test]
fn server_peer_has_no_gate_heartbeats_every_5s_and_idles_out_at_30s() {
    let t = t0();
    let mut d = Drive::new(Session::new(SessionConfig::server_peer(), peer(), t), t);
    d.recv(&msg(1, 5).to_bytes());
    assert_eq!(d.events(), [&SessionEvent::Pdu(msg(1, 5))]);
    d.recv(&heartbeat(3).to_bytes());
    assert!(d.transmitted().is_empty(), "server peers do not echo");
    d.advance_to(t + secs(29) + ms(999));
    let beats: Vec<_> = d.sent_pdus().into_iter().map(|(at, _)| at).collect();
    assert_eq!(beats, [5, 10, 15, 20, 25].map(|s| t + secs(s)));
    assert!(!d.finished());
    d.advance_to(t + secs(30));
    assert_closed(&d, CloseReason::TimedOut);
}
