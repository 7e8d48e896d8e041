//! Read backpressure in virtual time: `Session::pause_reading`,
//! `resume_reading` and the PDU credit, with `Machine::wants_read` as the
//! driver sees it.

use std::net::SocketAddr;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use teamtalk_proto::{Command, FrameError, Pdu};

use super::{Drive, heartbeat, login_req, ms, msg, secs, t0};
use crate::tls::testing::TestPki;
use crate::{
    CloseReason, Input, Link, LinkConfig, Machine, Output, Session, SessionConfig, SessionEvent,
    Tls,
};

const WINDOWS: u32 = 0x01;

fn peer() -> SocketAddr {
    "198.51.100.9:51000".parse().unwrap()
}

fn logged_in() -> Drive<Session> {
    let t = t0();
    let mut d = Drive::new(Session::new(SessionConfig::client(), peer(), t), t);
    d.recv(&login_req(1).to_bytes());
    d.call(|s| s.accept_login(7, WINDOWS)).unwrap();
    d.clear();
    d
}

fn server_peer() -> Drive<Session> {
    let t = t0();
    Drive::new(Session::new(SessionConfig::server_peer(), peer(), t), t)
}

/// The PDUs of `n` messages, in one buffer, with sequence numbers from 1.
fn burst(n: u16) -> Vec<u8> {
    let mut all = Vec::new();
    for seq in 1..=n {
        all.extend_from_slice(&msg(seq, usize::from(seq) * 3).to_bytes());
    }
    all
}

fn pause(d: &mut Drive<Session>) {
    let now = d.now;
    d.call(|s| s.pause_reading(now));
}

fn resume(d: &mut Drive<Session>) {
    let now = d.now;
    d.call(|s| s.resume_reading(now));
}

fn credit(d: &mut Drive<Session>, credit: Option<u32>) {
    let now = d.now;
    d.call(|s| s.set_pdu_credit(now, credit));
}

fn grant(d: &mut Drive<Session>, n: u32) {
    let now = d.now;
    d.call(|s| s.grant_pdus(now, n));
}

fn pdu_events(d: &Drive<Session>) -> Vec<Pdu> {
    d.events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::Pdu(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn seqs(d: &Drive<Session>) -> Vec<u16> {
    pdu_events(d).iter().map(Pdu::seq).collect()
}

#[test]
fn a_paused_session_holds_what_it_receives_and_raises_it_in_order_on_resume() {
    let mut d = logged_in();
    assert!(d.m.wants_read());
    pause(&mut d);
    assert!(d.m.is_reading_paused());
    assert!(!d.m.wants_read(), "the driver must stop reading");
    // The rest of a read that was under way still reaches the session.
    d.recv(&burst(3));
    assert!(d.events().is_empty(), "no PDU event while paused");
    assert!(!d.m.wants_read());
    resume(&mut d);
    assert!(d.m.wants_read());
    assert_eq!(pdu_events(&d), [msg(1, 3), msg(2, 6), msg(3, 9)]);
    // And reading goes on as before.
    d.recv(&msg(4, 1).to_bytes());
    assert_eq!(seqs(&d), [1, 2, 3, 4]);
}

#[test]
fn pause_and_resume_are_idempotent() {
    let mut d = logged_in();
    pause(&mut d);
    pause(&mut d);
    d.recv(&burst(1));
    resume(&mut d);
    resume(&mut d);
    assert_eq!(seqs(&d), [1]);
    assert!(!d.m.is_reading_paused());
}

#[test]
fn a_pdu_split_around_a_pause_arrives_whole() {
    let mut d = logged_in();
    let bytes = msg(9, 1000).to_bytes();
    d.recv(&bytes[..7]);
    pause(&mut d);
    d.recv(&bytes[7..600]);
    d.recv(&bytes[600..]);
    assert!(d.events().is_empty());
    resume(&mut d);
    assert_eq!(pdu_events(&d), [msg(9, 1000)]);

    // Paused with only a partial PDU held: resuming raises nothing until
    // the rest arrives.
    d.clear();
    d.recv(&bytes[..20]);
    pause(&mut d);
    resume(&mut d);
    assert!(d.events().is_empty());
    d.recv(&bytes[20..]);
    assert_eq!(pdu_events(&d), [msg(9, 1000)]);
}

#[test]
fn the_credit_stops_events_exactly_at_the_limit_within_one_read() {
    let mut d = logged_in();
    credit(&mut d, Some(2));
    assert!(d.m.wants_read());
    d.recv(&burst(5));
    assert_eq!(seqs(&d), [1, 2], "two PDUs out of five in one read");
    assert_eq!(d.m.pdu_credit(), Some(0));
    assert!(d.m.is_reading_paused());
    assert!(!d.m.wants_read());
    grant(&mut d, 1);
    assert_eq!(seqs(&d), [1, 2, 3]);
    assert!(!d.m.wants_read(), "the grant was used up by a held PDU");
    grant(&mut d, 10);
    assert_eq!(seqs(&d), [1, 2, 3, 4, 5]);
    assert_eq!(d.m.pdu_credit(), Some(8));
    assert!(d.m.wants_read());
    credit(&mut d, None);
    grant(&mut d, 3);
    assert_eq!(d.m.pdu_credit(), None, "no limit: grants do nothing");
}

#[test]
fn lifting_the_credit_raises_everything_held() {
    let mut d = logged_in();
    credit(&mut d, Some(0));
    assert!(!d.m.wants_read());
    d.recv(&burst(4));
    assert!(d.events().is_empty());
    credit(&mut d, None);
    assert_eq!(seqs(&d), [1, 2, 3, 4]);
    assert!(d.m.wants_read());
}

#[test]
fn credit_and_explicit_pause_combine() {
    let mut d = logged_in();
    credit(&mut d, Some(1));
    pause(&mut d);
    d.recv(&burst(2));
    grant(&mut d, 5);
    assert!(d.events().is_empty(), "still paused by hand");
    resume(&mut d);
    assert_eq!(seqs(&d), [1, 2]);
    assert_eq!(d.m.pdu_credit(), Some(4));
}

#[test]
fn the_login_request_takes_credit_and_heartbeats_do_not() {
    let t = t0();
    let mut d = Drive::new(Session::new(SessionConfig::client(), peer(), t), t);
    credit(&mut d, Some(1));
    let mut bytes = heartbeat(1).to_bytes().to_vec();
    bytes.extend_from_slice(&login_req(2).to_bytes());
    d.recv(&bytes);
    assert_eq!(d.events(), [&SessionEvent::LoginRequest(login_req(2))]);
    assert_eq!(super::pdus(&d.transmitted()), [heartbeat(1)], "echoed");
    assert_eq!(d.m.pdu_credit(), Some(0));
}

#[test]
fn heartbeats_held_while_paused_are_echoed_after_the_resume() {
    let mut d = logged_in();
    pause(&mut d);
    d.recv(&heartbeat(5).to_bytes());
    assert!(d.transmitted().is_empty(), "not read, so not echoed");
    resume(&mut d);
    assert_eq!(super::pdus(&d.transmitted()), [heartbeat(5)]);
}

#[test]
fn the_idle_deadline_is_suspended_while_paused_and_resumes_where_it_stood() {
    let mut d = logged_in();
    let t = d.now;
    // Last heard from at t; 100 s later the app pauses: 20 s remain.
    d.advance(secs(100));
    pause(&mut d);
    // An hour of our own silence does not close the session.
    d.advance(secs(3600));
    assert!(!d.finished(), "{:?}", d.outputs);
    let resumed = t + secs(3700);
    resume(&mut d);
    assert_eq!(d.deadline, Some(resumed + secs(20)));
    d.advance_to(resumed + secs(20) - ms(1));
    assert!(!d.finished());
    d.advance_to(resumed + secs(20));
    assert_eq!(
        d.events().last(),
        Some(&&SessionEvent::Closed(CloseReason::TimedOut))
    );
}

#[test]
fn bytes_received_while_paused_count_as_the_peer_being_heard() {
    let mut d = logged_in();
    let t = d.now;
    d.advance(secs(100));
    pause(&mut d);
    d.advance(secs(100));
    // The tail of a read, at t + 200: the peer was alive then.
    d.recv(&msg(1, 1).to_bytes()[..5]);
    d.advance(secs(300));
    resume(&mut d);
    // A full idle timeout from the resume, not from t + 200.
    assert_eq!(d.deadline, Some(t + secs(500) + secs(120)));
    assert!(!d.finished());
}

#[test]
fn a_credit_pause_suspends_the_idle_deadline_too() {
    let mut d = logged_in();
    let t = d.now;
    credit(&mut d, Some(1));
    d.recv(&burst(2));
    d.advance(secs(1000));
    assert!(!d.finished());
    // One credit back goes to the held PDU at once: still paused, the
    // deadline still suspended.
    grant(&mut d, 1);
    assert_eq!(seqs(&d), [1, 2]);
    assert!(d.m.is_reading_paused());
    d.advance(secs(1000));
    assert!(!d.finished());
    grant(&mut d, 1);
    assert!(!d.m.is_reading_paused());
    assert_eq!(d.deadline, Some(t + secs(2000) + secs(120)));
}

#[test]
fn accepting_a_login_while_paused_arms_the_mobile_timeout_only_on_resume() {
    let t = t0();
    let mut d = Drive::new(Session::new(SessionConfig::client(), peer(), t), t);
    d.recv(&login_req(1).to_bytes());
    pause(&mut d);
    d.advance(secs(5));
    d.call(|s| s.accept_login(7, 0x11)).unwrap();
    d.advance(secs(1000));
    assert!(!d.finished());
    resume(&mut d);
    // 300 s (mobile) from the last byte at t, moved by the 1005 s paused.
    assert_eq!(d.deadline, Some(t + secs(1005) + secs(300)));
}

#[test]
fn the_login_deadline_keeps_running_while_paused() {
    let t = t0();
    let mut d = Drive::new(Session::new(SessionConfig::client(), peer(), t), t);
    pause(&mut d);
    d.advance_to(t + secs(15));
    assert_eq!(
        d.events(),
        [&SessionEvent::Closed(CloseReason::LoginTimedOut)]
    );
}

#[test]
fn a_paused_server_peer_still_heartbeats_and_is_not_timed_out() {
    let mut d = server_peer();
    let t = d.now;
    pause(&mut d);
    d.advance(secs(60));
    assert!(!d.finished(), "30 s idle does not apply while paused");
    let beats = d.sent_pdus().len();
    assert_eq!(beats, 12, "our heartbeat every 5 s goes on");
    resume(&mut d);
    d.advance_to(t + secs(90) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(90));
    assert!(d.finished());
}

#[test]
fn sending_and_closing_work_while_paused() {
    let mut d = logged_in();
    pause(&mut d);
    d.call(|s| s.send(&msg(1, 4))).unwrap();
    assert_eq!(super::pdus(&d.transmitted()), [msg(1, 4)]);
    d.recv(&burst(2));
    d.call(Session::close);
    // Held PDUs of a closed session are not raised.
    assert_eq!(
        d.events(),
        [&SessionEvent::Closed(CloseReason::Local)],
        "{:?}",
        d.outputs
    );
    resume(&mut d);
    assert!(d.finished());
}

#[test]
fn a_bad_frame_held_while_paused_closes_on_resume_after_the_good_ones() {
    let mut d = logged_in();
    pause(&mut d);
    let mut bytes = burst(2);
    // A header claiming a length below the header size.
    bytes.extend_from_slice(&[0, 0, 0, 3]);
    bytes.extend_from_slice(&[0; 12]);
    d.recv(&bytes);
    assert!(d.events().is_empty());
    resume(&mut d);
    let events = d.events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(seqs(&d), [1, 2]);
    assert_eq!(
        events[2],
        &SessionEvent::Closed(CloseReason::Frame(FrameError::TooShort(3)))
    );
}

#[test]
fn the_peer_closing_while_paused_ends_the_session_and_drops_what_is_held() {
    let mut d = logged_in();
    pause(&mut d);
    d.recv(&burst(2));
    d.input(Input::Closed(d.now));
    assert_eq!(d.events(), [&SessionEvent::Closed(CloseReason::PeerClosed)]);
    assert!(d.finished());
}

#[test]
fn a_session_paused_from_the_start_raises_nothing_until_resumed() {
    let t = t0();
    let mut s = Session::new(SessionConfig::server_peer(), peer(), t);
    s.pause_reading(t);
    assert!(!s.wants_read());
    let mut d = Drive::new(s, t);
    d.recv(&burst(3));
    assert!(d.events().is_empty());
    resume(&mut d);
    assert_eq!(seqs(&d), [1, 2, 3]);
}

/// `Tls<Session>` passes the inner session's wish through once the
/// handshake is done, and reads the handshake whatever the session wants.
#[test]
fn tls_forwards_wants_read_but_always_reads_the_handshake() {
    let pki = TestPki::shared();
    let t = t0();
    let addr: SocketAddr = "127.0.0.1:10600".parse().unwrap();
    let mut session = Session::new(SessionConfig::server_peer(), peer(), t);
    session.pause_reading(t);
    let mut server = Tls::server(pki.server_config(false), session, t);
    let client_config = pki.client_config(pki, false);
    let name = ServerName::try_from("localhost").unwrap();
    let mut link = Tls::client(client_config, name, Link::new(LinkConfig::new(addr), t), t);
    assert!(server.is_handshaking());
    assert!(server.wants_read(), "the handshake is read while paused");

    let (mut to_server, mut to_link) = (Vec::new(), Vec::new());
    let mut server_events = Vec::new();
    let mut link_events = Vec::new();
    pump(&mut link, &mut to_server, &mut link_events);
    pump(&mut server, &mut to_link, &mut server_events);
    link.handle_input(Input::Connected(t));
    pump(&mut link, &mut to_server, &mut link_events);
    while !to_server.is_empty() || !to_link.is_empty() {
        server.handle_input(Input::Received(t, &std::mem::take(&mut to_server)));
        pump(&mut server, &mut to_link, &mut server_events);
        link.handle_input(Input::Received(t, &std::mem::take(&mut to_link)));
        pump(&mut link, &mut to_server, &mut link_events);
    }
    assert!(server.is_established());
    assert!(!server.wants_read(), "established: the session's wish");

    let pdu = Pdu::new(Command::MsgData.key(), 1, Bytes::from_static(b"held"));
    link.send(&pdu).unwrap();
    pump(&mut link, &mut to_server, &mut link_events);
    server.handle_input(Input::Received(t, &std::mem::take(&mut to_server)));
    pump(&mut server, &mut to_link, &mut server_events);
    assert!(server_events.is_empty(), "{server_events:?}");
    server.resume_reading(t);
    pump(&mut server, &mut to_link, &mut server_events);
    assert!(server.wants_read());
    assert_eq!(server_events, [SessionEvent::Pdu(pdu)]);
}

/// One drain: bytes to `wire`, events to `events`.
fn pump<M: Machine>(m: &mut M, wire: &mut Vec<u8>, events: &mut Vec<M::Event>) {
    loop {
        match m.poll_output() {
            Output::Transmit(bytes) => wire.extend_from_slice(&bytes),
            Output::Event(e) => events.push(e),
            Output::Connect(_) | Output::Close => {}
            Output::Timeout(_) | Output::Finished => return,
        }
    }
}

/// What the application does between two reads in
/// [`nothing_is_lost_or_reordered_whatever_the_pauses`].
#[derive(Debug, Clone)]
enum Op {
    Nothing,
    Pause,
    Resume,
    Credit(Option<u32>),
    Grant(u32),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => Just(Op::Nothing),
        2 => Just(Op::Pause),
        2 => Just(Op::Resume),
        1 => proptest::option::of(0u32..4).prop_map(Op::Credit),
        2 => (0u32..4).prop_map(Op::Grant),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// A driver that honours `wants_read` carries a stream of PDUs in
    /// arbitrary pieces while the application pauses, resumes and hands
    /// out credit at random: once everything is let through, the
    /// application has seen every PDU exactly once, in order, and never
    /// one while paused or beyond its credit.
    #[test]
    fn nothing_is_lost_or_reordered_whatever_the_pauses(
        bodies in proptest::collection::vec(0usize..300, 1..40),
        cuts in proptest::collection::vec(1usize..200, 1..60),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let sent: Vec<Pdu> = bodies
            .iter()
            .enumerate()
            .map(|(i, len)| msg(u16::try_from(i).unwrap(), *len))
            .collect();
        let stream: Vec<u8> = sent.iter().flat_map(|p| p.to_bytes().to_vec()).collect();
        let mut d = server_peer();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        let mut ops = ops.iter().cycle();
        let mut got: Vec<Pdu> = Vec::new();
        // The ops cycle, so a pause is eventually undone unless the ops
        // never resume; the last lines let everything through anyway.
        for _ in 0..2000 {
            if at == stream.len() {
                break;
            }
            match ops.next().unwrap() {
                Op::Nothing => {}
                Op::Pause => pause(&mut d),
                Op::Resume => resume(&mut d),
                Op::Credit(c) => credit(&mut d, *c),
                Op::Grant(n) => grant(&mut d, *n),
            }
            got.extend(pdu_events(&d));
            d.clear();
            if d.m.wants_read() {
                let credit_before = d.m.pdu_credit();
                let end = (at + cut.next().unwrap()).min(stream.len());
                d.recv(&stream[at..end]);
                at = end;
                let raised = pdu_events(&d);
                if let Some(c) = credit_before {
                    proptest::prop_assert!(raised.len() <= c as usize);
                }
                got.extend(raised);
                d.clear();
            }
        }
        resume(&mut d);
        credit(&mut d, None);
        if at < stream.len() {
            d.recv(&stream[at..]);
        }
        got.extend(pdu_events(&d));
        proptest::prop_assert_eq!(got, sent);
        proptest::prop_assert!(!d.finished());
    }
}
