//! Link authentication in the machines, in virtual time: a [`Link`] and a
//! [`Session`] each against a scripted peer that holds (or lacks) the
//! secret, then the two against each other in [`Sim`].

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::ext::{ImLinkAuthProof, ImLinkAuthResult};
use teamtalk_proto::{Command, Message, Pdu};

use super::sim::Sim;
use super::{Drive, MSG_DATA, heartbeat, ms, msg, secs, t0};
use crate::auth::{Initiator, Responder, is_handshake};
use crate::fuzzing::{other_key, seeded_nonces, test_auth, test_key};
use crate::{
    AuthFailure, Backoff, CloseReason, ClusterAuth, Input, Link, LinkConfig, LinkEvent, LinkState,
    Output, PeerAuth, SendError, Session, SessionConfig, SessionEvent,
};

fn addr() -> SocketAddr {
    "10.0.0.2:10600".parse().unwrap()
}

fn peer() -> SocketAddr {
    "10.0.0.1:41000".parse().unwrap()
}

fn auth_link_cfg(seed: u64) -> LinkConfig {
    LinkConfig::new(addr())
        .with_backoff(Backoff::teamtalk())
        .with_auth(test_auth(seed))
}

/// A link that has connected and sent its hello (returned).
fn connected_link(seed: u64) -> (Drive<Link>, Pdu) {
    let t = t0();
    let mut d = Drive::new(Link::new(auth_link_cfg(seed), t), t);
    d.input(Input::Connected(t));
    let sent = d.sent_pdus();
    assert_eq!(sent.len(), 1, "only the hello: {sent:?}");
    let hello = sent[0].1.clone();
    assert!(hello.is(Command::OtherLinkAuthHello.key()));
    d.clear();
    (d, hello)
}

fn link_events(d: &Drive<Link>) -> Vec<LinkEvent> {
    d.events().into_iter().cloned().collect()
}

fn session_events(d: &Drive<Session>) -> Vec<SessionEvent> {
    d.events().into_iter().cloned().collect()
}

fn refusal_code(p: &Pdu) -> u32 {
    match Message::decode(p) {
        Ok(Message::OtherLinkAuthResult(r)) => r.result_code,
        other => panic!("not a refusal: {other:?}"),
    }
}

fn auth_failed(f: AuthFailure) -> CloseReason {
    CloseReason::AuthFailed(f)
}

// ---------------------------------------------------------------- links

#[test]
fn link_authenticates_before_its_greeting_and_before_up() {
    let (mut d, hello) = connected_link(1);
    let t = d.now;
    assert!(link_events(&d).is_empty(), "no Up before the handshake");
    assert_eq!(
        d.m.state(),
        LinkState::Authenticating {
            deadline: t + secs(5)
        }
    );
    assert_eq!(d.m.peer_auth(), PeerAuth::Pending);
    assert!(!d.m.is_up());
    assert_eq!(d.m.send(&msg(1, 3)), Err(SendError::NotConnected));
    let greeting = msg(9, 4);
    d.m.set_greeting(std::slice::from_ref(&greeting)).unwrap();

    // 20 ms later the genuine challenge arrives.
    d.advance(ms(20));
    let key = test_key();
    let (responder, challenge) = Responder::on_hello(&key, &hello, [7; 32]).unwrap();
    d.recv(&challenge.to_bytes());
    assert_eq!(link_events(&d), [LinkEvent::Up]);
    assert_eq!(d.m.peer_auth(), PeerAuth::Authenticated);
    let sent: Vec<Pdu> = d.sent_pdus().into_iter().map(|(_, p)| p).collect();
    assert_eq!(sent.len(), 2, "proof, then greeting: {sent:?}");
    assert!(sent[0].is(Command::OtherLinkAuthProof.key()));
    responder.on_proof(&key, &sent[0]).unwrap();
    assert_eq!(sent[1], greeting);
    // Heartbeats run from here: the next one 5 s after the proof.
    d.clear();
    d.advance(secs(5) - ms(1));
    assert!(d.sent_pdus().is_empty());
    d.advance(ms(1));
    assert_eq!(d.sent_pdus()[0].1.key(), Command::OtherHeartbeat.key());
}

#[test]
fn link_handshake_deadline_is_exact_and_retries_after_backoff() {
    let (mut d, _) = connected_link(2);
    let t = d.now;
    d.advance_to(t + secs(5) - ms(1));
    assert!(d.outputs.is_empty(), "nothing before the auth deadline");
    d.advance_to(t + secs(5));
    assert_eq!(
        d.outputs,
        [
            (t + secs(5), Output::Close),
            (
                t + secs(5),
                Output::Event(LinkEvent::Unreachable(auth_failed(AuthFailure::TimedOut)))
            ),
        ]
    );
    // No heartbeat went out while waiting for the challenge.
    assert!(d.sent_pdus().is_empty());
    // TeamTalk backoff: 4 s, then a new connect and a fresh hello.
    assert_eq!(d.m.state(), LinkState::Backoff { until: t + secs(9) });
    d.advance_to(t + secs(9));
    assert_eq!(d.outputs.last().unwrap().1, Output::Connect(addr()));
}

#[test]
fn a_custom_auth_timeout_is_honoured() {
    let t = t0();
    let cfg = LinkConfig::new(addr()).with_auth(test_auth(3).with_timeout(secs(2)));
    let mut d = Drive::new(Link::new(cfg, t), t);
    d.input(Input::Connected(t));
    assert_eq!(
        d.m.state(),
        LinkState::Authenticating {
            deadline: t + secs(2)
        }
    );
    d.advance_to(t + secs(2));
    assert_eq!(
        link_events(&d),
        [LinkEvent::Unreachable(auth_failed(AuthFailure::TimedOut))]
    );
}

/// An impostor without the secret: its challenge does not verify, the
/// link says why, closes, and backs off ever longer (a failed handshake
/// does not reset the backoff).
#[test]
fn link_refuses_an_impostor_and_backs_off_longer_each_time() {
    let t = t0();
    let mut d = Drive::new(Link::new(auth_link_cfg(4), t), t);
    let impostor = other_key();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let now = d.now;
        d.clear();
        d.input(Input::Connected(now));
        // The impostor ignores the key id and answers the link's nonce
        // with a proof made with its own guess at the secret.
        let Ok(Message::OtherLinkAuthHello(mut hello)) = Message::decode(&d.sent_pdus()[0].1)
        else {
            panic!("no hello");
        };
        hello.key_id = Bytes::copy_from_slice(&impostor.id());
        let (_, challenge) = Responder::on_hello(&impostor, &hello.to_pdu(0), [2; 32]).unwrap();
        d.clear();
        d.recv(&challenge.to_bytes());
        let sent = d.sent_pdus();
        assert_eq!(sent.len(), 1, "only the refusal: {sent:?}");
        assert_eq!(refusal_code(&sent[0].1), 1);
        assert_eq!(
            link_events(&d),
            [LinkEvent::Unreachable(auth_failed(AuthFailure::BadProof))]
        );
        let LinkState::Backoff { until } = d.m.state() else {
            panic!("not backing off: {:?}", d.m.state());
        };
        waits.push(until - d.now);
        d.advance_to(until);
    }
    assert_eq!(waits, [secs(4), secs(8), secs(16)]);
}

/// A C++ server does not speak the handshake: it sends its heartbeat
/// instead of a challenge. The link closes without a word and never
/// delivers it.
#[test]
fn link_closes_on_anything_but_a_challenge() {
    let (mut d, _) = connected_link(5);
    d.recv(&heartbeat(3).to_bytes());
    assert_eq!(
        link_events(&d),
        [LinkEvent::Unreachable(CloseReason::Unauthenticated(
            Command::OtherHeartbeat.key()
        ))]
    );
    assert!(d.sent_pdus().is_empty());

    let (mut d, _) = connected_link(6);
    d.recv(&msg(1, 10).to_bytes());
    assert_eq!(
        link_events(&d),
        [LinkEvent::Unreachable(CloseReason::Unauthenticated(
            MSG_DATA
        ))]
    );
}

#[test]
fn link_reads_a_refusal_and_a_peer_that_hangs_up() {
    let (mut d, _) = connected_link(7);
    d.recv(&ImLinkAuthResult { result_code: 2 }.to_pdu(0).to_bytes());
    assert_eq!(
        link_events(&d),
        [LinkEvent::Unreachable(auth_failed(AuthFailure::Refused(2)))]
    );
    assert!(d.sent_pdus().is_empty(), "a refusal is not answered");

    let (mut d, _) = connected_link(8);
    d.input(Input::Closed(d.now));
    assert_eq!(
        link_events(&d),
        [LinkEvent::Unreachable(CloseReason::PeerClosed)]
    );
}

/// A challenge recorded on one connection does not pass on the next: the
/// link's nonce is fresh on every connect.
#[test]
fn link_refuses_a_challenge_replayed_from_an_earlier_connection() {
    let (mut d, hello) = connected_link(9);
    let (_, challenge) = Responder::on_hello(&test_key(), &hello, [3; 32]).unwrap();
    d.recv(&challenge.to_bytes());
    assert_eq!(link_events(&d), [LinkEvent::Up]);
    d.input(Input::Closed(d.now));
    let LinkState::Backoff { until } = d.m.state() else {
        panic!("not backing off");
    };
    d.advance_to(until);
    d.clear();
    d.input(Input::Connected(d.now));
    let second_hello = d.sent_pdus()[0].1.clone();
    assert_ne!(second_hello, hello, "a fresh nonce per connection");
    d.clear();
    d.recv(&challenge.to_bytes());
    assert_eq!(
        link_events(&d),
        [LinkEvent::Unreachable(auth_failed(AuthFailure::BadProof))]
    );
}

/// Once up, a refusal of our proof takes the link down (the peer closes
/// right after sending it).
#[test]
fn link_goes_down_when_the_peer_refuses_its_proof() {
    let (mut d, hello) = connected_link(10);
    let (_, challenge) = Responder::on_hello(&test_key(), &hello, [4; 32]).unwrap();
    d.recv(&challenge.to_bytes());
    d.clear();
    d.recv(&ImLinkAuthResult { result_code: 1 }.to_pdu(0).to_bytes());
    assert_eq!(
        link_events(&d),
        [LinkEvent::Down(auth_failed(AuthFailure::Refused(1)))]
    );
}

#[test]
fn links_without_auth_are_unchanged() {
    let t = t0();
    let mut d = Drive::new(Link::new(LinkConfig::new(addr()), t), t);
    d.input(Input::Connected(t));
    assert_eq!(link_events(&d), [LinkEvent::Up]);
    assert_eq!(d.m.peer_auth(), PeerAuth::NotRequired);
    // Handshake PDUs are ordinary PDUs to a link that does not authenticate.
    let hello = Initiator::new([0; 32]).hello(&test_key());
    d.recv(&hello.to_bytes());
    assert_eq!(link_events(&d)[1], LinkEvent::Pdu(hello));
}

// ------------------------------------------------------------- sessions

fn strict_session(seed: u64) -> Drive<Session> {
    let t = t0();
    let cfg = SessionConfig::server_peer().with_auth(test_auth(seed));
    Drive::new(Session::new(cfg, peer(), t), t)
}

fn lenient_session(seed: u64) -> Drive<Session> {
    let t = t0();
    let cfg = SessionConfig::server_peer()
        .with_auth(test_auth(seed))
        .with_unauthenticated_allowed(true);
    Drive::new(Session::new(cfg, peer(), t), t)
}

/// Sends a hello from `initiator` and returns the session's challenge.
fn hello_to(d: &mut Drive<Session>, initiator: &Initiator) -> Pdu {
    d.recv(&initiator.hello(&test_key()).to_bytes());
    let sent = d.sent_pdus();
    let last = sent.last().expect("a challenge").1.clone();
    assert!(last.is(Command::OtherLinkAuthChallenge.key()), "{last:?}");
    last
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

#[test]
fn session_admits_a_peer_with_the_secret_and_only_then_delivers() {
    let mut d = strict_session(11);
    let t = d.now;
    // Silent and sending nothing (no heartbeat) while it waits.
    d.advance(secs(4));
    assert!(d.outputs.is_empty());
    assert_eq!(d.m.peer_auth(), PeerAuth::Pending);
    let initiator = Initiator::new([5; 32]);
    let challenge = hello_to(&mut d, &initiator);
    assert_eq!(d.sent_pdus().len(), 1, "only the challenge");
    assert_eq!(d.m.send(&msg(1, 3)), Err(SendError::NotAuthenticated));
    // The proof and the first PDUs arrive in one read.
    let proof = initiator.on_challenge(&test_key(), &challenge).unwrap();
    let first = msg(2, 6);
    d.clear();
    d.recv(&[proof.to_bytes(), first.to_bytes()].concat());
    assert_eq!(
        session_events(&d),
        [
            SessionEvent::Admitted(PeerAuth::Authenticated),
            SessionEvent::Pdu(first)
        ]
    );
    assert_eq!(d.m.peer_auth(), PeerAuth::Authenticated);
    d.m.send(&msg(3, 3)).unwrap();
    // Our heartbeats start with the admission, at 4 s: the next is due at
    // 9 s if nothing else is sent (the send above counts).
    d.clear();
    d.advance_to(t + secs(9) - ms(1));
    assert!(d.sent_pdus().iter().all(|(_, p)| !p.is(heartbeat(0).key())));
    d.advance_to(t + secs(9));
    assert!(d.sent_pdus().iter().any(|(_, p)| p.is(heartbeat(0).key())));
}

#[test]
fn session_handshake_deadline_is_exact_from_the_accept() {
    let mut d = strict_session(12);
    let t = d.now;
    d.advance_to(t + secs(5) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(5));
    assert_closed(&d, auth_failed(AuthFailure::TimedOut));
    assert!(d.sent_pdus().is_empty(), "nothing was ever sent");

    // A hello does not extend it.
    let mut d = strict_session(13);
    let t = d.now;
    d.advance(secs(3));
    hello_to(&mut d, &Initiator::new([6; 32]));
    d.advance_to(t + secs(5) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(5));
    assert_closed(&d, auth_failed(AuthFailure::TimedOut));
}

#[test]
fn session_closes_on_anything_but_a_hello_first() {
    for first in [
        msg(1, 3),
        heartbeat(1),
        ImLinkAuthProof::default().to_pdu(0),
    ] {
        let mut d = strict_session(14);
        d.recv(&[first.to_bytes(), msg(2, 3).to_bytes()].concat());
        assert_closed(&d, CloseReason::Unauthenticated(first.key()));
        assert_eq!(session_events(&d).len(), 1, "only the close");
        assert!(d.sent_pdus().is_empty(), "not even a refusal");
    }
}

/// A peer with another secret: the hello's key id gives it away, the
/// session says so and closes.
#[test]
fn session_refuses_another_secret() {
    let mut d = strict_session(15);
    let hello = Initiator::new([8; 32]).hello(&other_key());
    d.recv(&[hello.to_bytes(), msg(1, 3).to_bytes()].concat());
    let sent = d.sent_pdus();
    assert_eq!(sent.len(), 1);
    assert_eq!(refusal_code(&sent[0].1), 2);
    assert_closed(&d, auth_failed(AuthFailure::UnknownKey));
}

/// The session's challenge with a forged proof (a flipped byte) and a
/// PDU behind it: refused, and the PDU never delivered.
#[test]
fn session_refuses_a_forged_proof_and_what_follows_it() {
    let mut d = strict_session(16);
    let initiator = Initiator::new([9; 32]);
    let challenge = hello_to(&mut d, &initiator);
    let proof = initiator.on_challenge(&test_key(), &challenge).unwrap();
    let mut body = proof.body.to_vec();
    body[5] ^= 0x80;
    let forged = Pdu::new(proof.key(), 0, Bytes::from(body));
    d.clear();
    d.recv(&[forged.to_bytes(), msg(1, 3).to_bytes()].concat());
    assert_eq!(refusal_code(&d.sent_pdus()[0].1), 1);
    assert_closed(&d, auth_failed(AuthFailure::BadProof));
    assert_eq!(session_events(&d).len(), 1, "only the close");
}

/// Everything an eavesdropper recorded of a successful handshake, replayed
/// on a new connection, fails: the new session's nonce is fresh.
#[test]
fn session_refuses_a_handshake_replayed_from_an_earlier_connection() {
    let nonces = seeded_nonces(17);
    let cfg = SessionConfig::server_peer().with_auth(ClusterAuth::new(test_key(), nonces));
    let t = t0();
    let mut first = Drive::new(Session::new(cfg.clone(), peer(), t), t);
    let initiator = Initiator::new([10; 32]);
    let hello = initiator.hello(&test_key());
    let challenge = hello_to(&mut first, &initiator);
    let proof = initiator.on_challenge(&test_key(), &challenge).unwrap();
    first.recv(&proof.to_bytes());
    assert_eq!(first.m.peer_auth(), PeerAuth::Authenticated);

    let mut replay = Drive::new(Session::new(cfg, peer(), t), t);
    replay.recv(&[hello.to_bytes(), proof.to_bytes(), msg(1, 3).to_bytes()].concat());
    let sent = replay.sent_pdus();
    assert_ne!(sent[0].1, challenge, "a fresh challenge");
    assert_eq!(refusal_code(&sent[1].1), 1);
    assert_closed(&replay, auth_failed(AuthFailure::BadProof));
}

/// The session's own proof sent back as the peer's: refused.
#[test]
fn session_refuses_its_own_proof_reflected() {
    let mut d = strict_session(18);
    let challenge = hello_to(&mut d, &Initiator::new([11; 32]));
    let Ok(Message::OtherLinkAuthChallenge(c)) = Message::decode(&challenge) else {
        panic!("not a challenge");
    };
    d.recv(&ImLinkAuthProof { proof: c.proof }.to_pdu(0).to_bytes());
    assert_closed(&d, auth_failed(AuthFailure::BadProof));
}

/// After admission the handshake is over: a late handshake message closes.
#[test]
fn session_closes_on_a_handshake_message_after_admission() {
    let mut d = strict_session(19);
    let initiator = Initiator::new([12; 32]);
    let challenge = hello_to(&mut d, &initiator);
    d.recv(
        &initiator
            .on_challenge(&test_key(), &challenge)
            .unwrap()
            .to_bytes(),
    );
    d.recv(&initiator.hello(&test_key()).to_bytes());
    assert_closed(&d, auth_failed(AuthFailure::Malformed));
}

/// The escape hatch: a peer allowed by address may skip the handshake (a
/// C++ daemon sends its heartbeat or a request first) and is admitted as
/// unauthenticated; one that starts a handshake must finish it.
#[test]
fn allowed_peers_may_skip_the_handshake_but_not_fail_it() {
    for first in [heartbeat(1), msg(1, 4)] {
        let mut d = lenient_session(20);
        d.recv(&first.to_bytes());
        let mut expected = vec![SessionEvent::Admitted(PeerAuth::Unauthenticated)];
        if !first.is(heartbeat(0).key()) {
            expected.push(SessionEvent::Pdu(first.clone()));
        }
        assert_eq!(session_events(&d), expected);
        assert_eq!(d.m.peer_auth(), PeerAuth::Unauthenticated);
        d.m.send(&msg(2, 2)).unwrap();
    }

    let mut d = lenient_session(21);
    let initiator = Initiator::new([13; 32]);
    let challenge = hello_to(&mut d, &initiator);
    d.recv(
        &initiator
            .on_challenge(&test_key(), &challenge)
            .unwrap()
            .to_bytes(),
    );
    assert_eq!(
        session_events(&d),
        [SessionEvent::Admitted(PeerAuth::Authenticated)]
    );

    let mut d = lenient_session(22);
    let initiator = Initiator::new([14; 32]);
    hello_to(&mut d, &initiator);
    d.recv(&msg(1, 3).to_bytes());
    assert_closed(&d, CloseReason::Unauthenticated(MSG_DATA));
}

/// An allowed peer that says nothing is left to the idle timeout (a C++
/// daemon's first heartbeat comes 5 s or more after it connects); once it
/// sends a hello, the handshake deadline runs.
#[test]
fn allowed_peers_have_no_handshake_deadline_until_their_hello() {
    let mut d = lenient_session(23);
    let t = d.now;
    d.advance_to(t + secs(29));
    assert!(d.outputs.is_empty(), "no deadline, no heartbeat");
    d.recv(&heartbeat(1).to_bytes());
    assert_eq!(d.m.peer_auth(), PeerAuth::Unauthenticated);

    let mut d = lenient_session(24);
    let t = d.now;
    d.advance_to(t + secs(10));
    hello_to(&mut d, &Initiator::new([15; 32]));
    d.advance_to(t + secs(15));
    assert_closed(&d, auth_failed(AuthFailure::TimedOut));

    let mut d = lenient_session(25);
    let t = d.now;
    d.advance_to(t + secs(30));
    assert_closed(&d, CloseReason::TimedOut);
}

#[test]
fn sessions_without_auth_are_unchanged() {
    let t = t0();
    let mut d = Drive::new(Session::new(SessionConfig::server_peer(), peer(), t), t);
    assert_eq!(d.m.peer_auth(), PeerAuth::NotRequired);
    let hello = Initiator::new([0; 32]).hello(&test_key());
    d.recv(&[hello.to_bytes(), msg(1, 2).to_bytes()].concat());
    assert_eq!(
        session_events(&d),
        [SessionEvent::Pdu(hello), SessionEvent::Pdu(msg(1, 2))]
    );
    d.m.send(&msg(2, 2)).unwrap();
}

// ----------------------------------------------- link against session

fn times_of(events: &[(Instant, LinkEvent)], want: &LinkEvent) -> Vec<Instant> {
    events
        .iter()
        .filter(|(_, e)| e == want)
        .map(|(t, _)| *t)
        .collect()
}

/// Both ends with the secret: the link is up after one and a half round
/// trips, the session admits it before the greeting, and an hour of
/// heartbeats passes without a drop.
#[test]
fn authenticated_pair_greets_after_the_handshake_and_stays_up() {
    let latency = ms(20);
    let mut link = LinkConfig::new(addr()).with_auth(test_auth(30));
    link.backoff = Backoff::teamtalk();
    let mut sim = Sim::new(link, latency);
    sim.server_cfg = SessionConfig::server_peer().with_auth(test_auth(31));
    let greeting = msg(1, 8);
    sim.link
        .set_greeting(std::slice::from_ref(&greeting))
        .unwrap();
    sim.run_for(secs(3600));
    let t = sim.connects[0];
    // connect answer at +20 ms, hello at +40, challenge back at +60.
    assert_eq!(times_of(&sim.link_events, &LinkEvent::Up), [t + ms(60)]);
    assert_eq!(sim.connects.len(), 1, "never reconnected");
    let server: Vec<&SessionEvent> = sim.server_events.iter().map(|(_, _, e)| e).collect();
    assert_eq!(
        server,
        [
            &SessionEvent::Admitted(PeerAuth::Authenticated),
            &SessionEvent::Pdu(greeting)
        ]
    );
    // Each side sent nothing but the handshake before its peer was in.
    let first_server_heartbeat = sim
        .server_sent
        .iter()
        .find(|(_, p)| !is_handshake(p.key()))
        .map(|(at, _)| *at)
        .unwrap();
    assert!(
        first_server_heartbeat >= t + ms(80),
        "after the proof arrived"
    );
}

/// Different secrets: the session refuses the key id, the link reads the
/// refusal, and it retries with a growing backoff; the session never
/// delivers a PDU.
#[test]
fn mismatched_secrets_never_connect() {
    let mut sim = Sim::new(auth_link_cfg(32), ms(5));
    sim.server_cfg =
        SessionConfig::server_peer().with_auth(ClusterAuth::new(other_key(), seeded_nonces(33)));
    sim.run_for(secs(60));
    let refused = LinkEvent::Unreachable(auth_failed(AuthFailure::Refused(2)));
    assert!(sim.link_events.iter().all(|(_, e)| *e == refused));
    assert_eq!(sim.link_events.len(), sim.connects.len());
    let gaps: Vec<_> = sim.connects.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "{gaps:?}");
    assert!(
        sim.server_events
            .iter()
            .all(|(_, _, e)| *e == SessionEvent::Closed(auth_failed(AuthFailure::UnknownKey)))
    );
}

/// A link that authenticates, against a listener that does not (a C++
/// server, or a daemon not configured yet): the hello goes unanswered,
/// the link gives up at the deadline and never sends anything else.
#[test]
fn authenticating_link_against_a_plain_server_times_out() {
    let mut sim = Sim::new(auth_link_cfg(34), ms(5));
    sim.run_for(secs(6));
    assert_eq!(
        sim.link_events.first().map(|(_, e)| e.clone()),
        Some(LinkEvent::Unreachable(auth_failed(AuthFailure::TimedOut)))
    );
    assert!(sim.link_sent.iter().all(|(_, p)| is_handshake(p.key())));
}

/// A plain link (a C++ msg_server) against a session that requires
/// authentication: refused at its first PDU, allowed through the escape
/// hatch.
#[test]
fn plain_link_against_an_authenticating_server() {
    let plain = || LinkConfig::new(addr()).with_backoff(Backoff::teamtalk());
    let mut sim = Sim::new(plain(), ms(5));
    sim.server_cfg = SessionConfig::server_peer().with_auth(test_auth(35));
    sim.link.set_greeting(&[msg(1, 3)]).unwrap();
    sim.run_for(secs(1));
    assert_eq!(
        sim.server_events
            .iter()
            .map(|(_, _, e)| e.clone())
            .collect::<Vec<_>>(),
        [SessionEvent::Closed(CloseReason::Unauthenticated(MSG_DATA))]
    );
    assert!(sim.server_sent.is_empty());

    let mut sim = Sim::new(plain(), ms(5));
    sim.server_cfg = SessionConfig::server_peer()
        .with_auth(test_auth(36))
        .with_unauthenticated_allowed(true);
    sim.link.set_greeting(&[msg(1, 3)]).unwrap();
    sim.run_for(secs(60));
    assert_eq!(
        sim.server_events
            .iter()
            .map(|(_, _, e)| e.clone())
            .collect::<Vec<_>>(),
        [
            SessionEvent::Admitted(PeerAuth::Unauthenticated),
            SessionEvent::Pdu(msg(1, 3))
        ]
    );
    assert_eq!(sim.connects.len(), 1);
}
