//! TLS in virtual time: a `Tls<Link>` client against `Tls<Session>`
//! servers over in-memory pipes ([`Pair`], the generic sibling of
//! `sim::Sim`), and single wrappers driven by hand ([`Drive`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use teamtalk_proto::{Command, Pdu};

use super::{Drive, MSG_DATA, heartbeat, login_req, ms, msg, secs, t0};
use crate::tls::testing::TestPki;
use crate::{
    Backoff, CloseReason, DEFAULT_HANDSHAKE_TIMEOUT, Input, Link, LinkConfig, LinkEvent, Machine,
    Output, SendError, Session, SessionConfig, SessionEvent, Tls, TlsError,
};

/// TLS `AlertDescription` codes the tests expect.
const UNKNOWN_CA: u8 = 48;
const CERTIFICATE_REQUIRED: u8 = 116;

fn addr() -> SocketAddr {
    "127.0.0.1:10600".parse().unwrap()
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

#[derive(Debug)]
enum Deliver {
    Bytes(Bytes),
    Fin,
    ConnectResult(bool),
}

#[derive(Debug)]
struct Flight {
    at: Instant,
    to_server: bool,
    conn: u32,
    what: Deliver,
}

/// Any client machine against servers built by a factory for every
/// accepted connection, joined by pipes with a fixed latency. Time jumps
/// to the next delivery or deadline.
struct Pair<C: Machine, S: Machine> {
    now: Instant,
    latency: Duration,
    client: C,
    client_deadline: Option<Instant>,
    client_conn: u32,
    new_server: Box<dyn FnMut(Instant) -> S>,
    server: Option<S>,
    server_conn: u32,
    server_deadline: Option<Instant>,
    flights: VecDeque<Flight>,
    /// The server accepts connects.
    listening: bool,
    /// FINs are lost (only a TLS close_notify can tell the peer).
    drop_fins: bool,
    client_events: Vec<(Instant, C::Event)>,
    server_events: Vec<(Instant, u32, S::Event)>,
    /// Every byte either side put on the wire.
    wire: Vec<u8>,
    connects: usize,
}

impl<C: Machine, S: Machine> Pair<C, S> {
    fn new(client: C, new_server: impl FnMut(Instant) -> S + 'static) -> Self {
        let mut pair = Self {
            now: t0(),
            latency: ms(10),
            client,
            client_deadline: None,
            client_conn: 0,
            new_server: Box::new(new_server),
            server: None,
            server_conn: 0,
            server_deadline: None,
            flights: VecDeque::new(),
            listening: true,
            drop_fins: false,
            client_events: Vec::new(),
            server_events: Vec::new(),
            wire: Vec::new(),
            connects: 0,
        };
        pair.drain_client();
        pair
    }

    fn send(&mut self, to_server: bool, conn: u32, what: Deliver) {
        if matches!(what, Deliver::Fin) && self.drop_fins {
            return;
        }
        self.flights.push_back(Flight {
            at: self.now + self.latency,
            to_server,
            conn,
            what,
        });
    }

    fn drain_client(&mut self) {
        loop {
            match self.client.poll_output() {
                Output::Transmit(b) => {
                    self.wire.extend_from_slice(&b);
                    self.send(true, self.client_conn, Deliver::Bytes(b));
                }
                Output::Connect(_) => {
                    self.client_conn += 1;
                    self.connects += 1;
                    let ok = self.listening;
                    self.send(false, self.client_conn, Deliver::ConnectResult(ok));
                }
                Output::Close => {
                    self.send(true, self.client_conn, Deliver::Fin);
                    self.client_conn += 1;
                }
                Output::Event(e) => self.client_events.push((self.now, e)),
                Output::Timeout(t) => {
                    assert!(t > self.now, "deadline not after the last input");
                    self.client_deadline = Some(t);
                    return;
                }
                Output::Finished => {
                    self.client_deadline = None;
                    return;
                }
            }
        }
    }

    fn drain_server(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let mut sends = Vec::new();
        loop {
            match server.poll_output() {
                Output::Transmit(b) => sends.push(Deliver::Bytes(b)),
                Output::Close => sends.push(Deliver::Fin),
                Output::Event(e) => self.server_events.push((self.now, self.server_conn, e)),
                Output::Connect(_) => panic!("servers never connect"),
                Output::Timeout(t) => {
                    assert!(t > self.now, "deadline not after the last input");
                    self.server_deadline = Some(t);
                    break;
                }
                Output::Finished => {
                    self.server = None;
                    self.server_deadline = None;
                    break;
                }
            }
        }
        for what in sends {
            if let Deliver::Bytes(b) = &what {
                self.wire.extend_from_slice(b);
            }
            self.send(false, self.server_conn, what);
        }
    }

    fn step(&mut self, limit: Instant) -> bool {
        let flight_at = self.flights.front().map(|f| f.at);
        let next = [flight_at, self.client_deadline, self.server_deadline]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next.filter(|t| *t <= limit) else {
            return false;
        };
        self.now = next;
        if flight_at == Some(next) {
            let f = self.flights.pop_front().expect("front");
            self.deliver(f);
        } else if self.client_deadline == Some(next) {
            self.client.handle_input(Input::Timeout(next));
            self.drain_client();
        } else if let Some(server) = self.server.as_mut() {
            server.handle_input(Input::Timeout(next));
            self.drain_server();
        }
        true
    }

    fn deliver(&mut self, f: Flight) {
        let now = self.now;
        if f.to_server {
            let Some(server) = self.server.as_mut().filter(|_| f.conn == self.server_conn) else {
                return;
            };
            match f.what {
                Deliver::Bytes(b) => server.handle_input(Input::Received(now, &b)),
                Deliver::Fin => server.handle_input(Input::Closed(now)),
                Deliver::ConnectResult(_) => unreachable!(),
            }
            self.drain_server();
        } else {
            if f.conn != self.client_conn {
                return;
            }
            match f.what {
                Deliver::Bytes(b) => self.client.handle_input(Input::Received(now, &b)),
                Deliver::Fin => self.client.handle_input(Input::Closed(now)),
                Deliver::ConnectResult(true) => {
                    self.server_conn = f.conn;
                    self.server = Some((self.new_server)(now));
                    self.drain_server();
                    self.client.handle_input(Input::Connected(now));
                }
                Deliver::ConnectResult(false) => {
                    self.client.handle_input(Input::ConnectFailed(now));
                }
            }
            self.drain_client();
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
    }

    /// An application call on the client, then a drain.
    fn client_call<R>(&mut self, f: impl FnOnce(&mut C) -> R) -> R {
        let r = f(&mut self.client);
        self.drain_client();
        r
    }

    /// An application call on the current server, then a drain.
    fn server_call<R>(&mut self, f: impl FnOnce(&mut S) -> R) -> R {
        let r = f(self.server.as_mut().expect("a server connection"));
        self.drain_server();
        r
    }

    /// The server process dies: its connection vanishes with a reset.
    fn kill_server(&mut self) {
        if self.server.take().is_some() {
            self.server_deadline = None;
            self.flights.push_back(Flight {
                at: self.now + self.latency,
                to_server: false,
                conn: self.server_conn,
                what: Deliver::Fin,
            });
        }
    }

    fn client_events(&self) -> Vec<&C::Event> {
        self.client_events.iter().map(|(_, e)| e).collect()
    }

    fn server_events(&self) -> Vec<&S::Event> {
        self.server_events.iter().map(|(_, _, e)| e).collect()
    }
}

type TlsPair = Pair<Tls<Link>, Tls<Session>>;

fn link_cfg() -> LinkConfig {
    LinkConfig::new(addr()).with_backoff(Backoff::teamtalk())
}

/// A TLS link (trusting `trust`'s CA, presenting a client certificate
/// when `client_cert`) against TLS server-peer sessions of `server`'s PKI.
fn tls_pair(
    server: &'static TestPki,
    client_auth: bool,
    trust: &'static TestPki,
    client_cert: bool,
) -> TlsPair {
    let t = t0();
    let client_config = trust.client_config(trust, client_cert);
    let link = Tls::client(client_config, name(), Link::new(link_cfg(), t), t);
    let server_config = server.server_config(client_auth);
    Pair::new(link, move |now| {
        let session = Session::new(SessionConfig::server_peer(), peer(), now);
        Tls::server(Arc::clone(&server_config), session, now)
    })
}

fn other_pki() -> &'static TestPki {
    static OTHER: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    OTHER.get_or_init(TestPki::generate)
}

fn server_pdus(p: &TlsPair) -> Vec<Pdu> {
    p.server_events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::Pdu(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn client_pdus(p: &TlsPair) -> Vec<Pdu> {
    p.client_events()
        .into_iter()
        .filter_map(|e| match e {
            LinkEvent::Pdu(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn link_comes_up_over_tls_and_pdus_flow_both_ways_encrypted() {
    let pki = TestPki::shared();
    let mut p = tls_pair(pki, false, pki, false);
    let greeting = Pdu::new(MSG_DATA, 1, Bytes::from_static(b"greeting-marker"));
    p.client_call(|l| l.set_greeting(std::slice::from_ref(&greeting)))
        .unwrap();
    // The link is not up while the handshake runs.
    assert_eq!(
        p.client_call(|l| l.send(&heartbeat(0))),
        Err(SendError::NotConnected)
    );
    p.run_for(ms(200));
    assert_eq!(p.client_events(), [&LinkEvent::Up]);
    assert!(p.client.is_established());
    assert!(p.server.as_ref().unwrap().is_established());
    assert_eq!(
        p.client.peer_certificates().map(<[_]>::len),
        Some(1),
        "the server's chain was seen"
    );
    assert_eq!(server_pdus(&p), [greeting]);

    let up = Pdu::new(MSG_DATA, 2, Bytes::from_static(b"link-to-server-marker"));
    let down = Pdu::new(MSG_DATA, 3, Bytes::from_static(b"server-to-link-marker"));
    p.client_call(|l| l.send(&up)).unwrap();
    p.server_call(|s| s.send(&down)).unwrap();
    p.run_for(ms(100));
    assert_eq!(server_pdus(&p).last(), Some(&up));
    assert_eq!(client_pdus(&p), [down]);

    // Nothing readable went over the wire, and it is not TeamTalk framing.
    for marker in [
        &b"greeting-marker"[..],
        b"link-to-server-marker",
        b"server-to-link-marker",
    ] {
        assert!(!contains(&p.wire, marker), "plaintext on the wire");
    }
    assert_eq!(p.wire[0], 0x16, "starts with a TLS handshake record");
}

#[test]
fn heartbeats_keep_a_tls_link_up_for_an_idle_hour() {
    let pki = TestPki::shared();
    let mut p = tls_pair(pki, false, pki, false);
    p.run_for(secs(3600));
    // Both sides heartbeat every 5 s inside TLS; neither idle timeout
    // (30 s) ever fires.
    assert_eq!(p.client_events(), [&LinkEvent::Up]);
    assert!(p.server.is_some());
    assert!(p.server_events().is_empty());
    // 720 heartbeats from each side, each a TLS 1.3 record of 38 bytes
    // (5 header, 16 PDU, 1 content type, 16 tag).
    let bytes = p.wire.len();
    assert!(bytes > 2 * 700 * 38, "heartbeats went out: {bytes} bytes");
}

#[test]
fn one_mebibyte_pdus_cross_in_both_directions() {
    let pki = TestPki::shared();
    let mut p = tls_pair(pki, false, pki, false);
    p.run_for(ms(100));
    let body = |fill: u8| Bytes::from(vec![fill; (1 << 20) - 16]);
    let up = Pdu::new(MSG_DATA, 7, body(b'u'));
    let down = Pdu::new(MSG_DATA, 8, body(b'd'));
    assert_eq!(up.wire_len(), 1 << 20);
    p.client_call(|l| l.send(&up)).unwrap();
    p.server_call(|s| s.send(&down)).unwrap();
    p.run_for(ms(100));
    assert_eq!(server_pdus(&p), [up]);
    assert_eq!(client_pdus(&p), [down]);
    assert_eq!(p.client_events().first(), Some(&&LinkEvent::Up));
}

#[test]
fn wrong_ca_closes_both_sides_with_a_tls_reason_and_every_retry_fails_alike() {
    // The client trusts another CA than the one that signed the server.
    let mut p = tls_pair(TestPki::shared(), false, other_pki(), false);
    p.run_for(ms(200));
    assert_eq!(
        p.client_events(),
        [&LinkEvent::Unreachable(CloseReason::Tls(
            TlsError::BadCertificate
        ))]
    );
    assert_eq!(
        p.server_events(),
        [&SessionEvent::Closed(CloseReason::Tls(TlsError::Alert(
            UNKNOWN_CA
        )))]
    );
    // The link backs off (4 s, TeamTalk schedule) and tries again with a
    // fresh TLS session, which fails the same way.
    p.run_for(secs(5));
    assert_eq!(p.connects, 2);
    let bad = LinkEvent::Unreachable(CloseReason::Tls(TlsError::BadCertificate));
    assert_eq!(p.client_events(), [&bad, &bad]);
    assert_eq!(p.server_events().len(), 2);
}

#[test]
fn client_certificates_are_required_when_the_server_asks() {
    let pki = TestPki::shared();
    // With a certificate from the right CA: up.
    let mut p = tls_pair(pki, true, pki, true);
    p.run_for(ms(200));
    assert_eq!(p.client_events(), [&LinkEvent::Up]);
    let seen = p.server.as_ref().unwrap().peer_certificates().unwrap();
    assert_eq!(seen, pki.client_chain());

    // Without one: the server refuses it, the client hears why. In TLS 1.3
    // the client finishes its side first, so its link was briefly up.
    let mut p = tls_pair(pki, true, pki, false);
    p.run_for(ms(200));
    assert_eq!(
        p.server_events(),
        [&SessionEvent::Closed(CloseReason::Tls(
            TlsError::NoCertificate
        ))]
    );
    assert_eq!(
        p.client_events(),
        [
            &LinkEvent::Up,
            &LinkEvent::Down(CloseReason::Tls(TlsError::Alert(CERTIFICATE_REQUIRED)))
        ]
    );
}

#[test]
fn each_reconnect_gets_a_fresh_tls_session() {
    let pki = TestPki::shared();
    let mut p = tls_pair(pki, false, pki, false);
    let greeting = Pdu::new(MSG_DATA, 1, Bytes::from_static(b"hello"));
    p.client_call(|l| l.set_greeting(std::slice::from_ref(&greeting)))
        .unwrap();
    p.run_for(ms(100));
    p.kill_server();
    p.run_for(ms(100));
    assert_eq!(
        p.client_events(),
        [&LinkEvent::Up, &LinkEvent::Down(CloseReason::PeerClosed)]
    );
    assert!(!p.client.is_handshaking() && !p.client.is_established());
    // TeamTalk backoff: 4 s, then a new TCP connection and a new handshake.
    p.run_for(secs(5));
    assert_eq!(p.connects, 2);
    assert_eq!(p.client_events().last(), Some(&&LinkEvent::Up));
    assert_eq!(server_pdus(&p), [greeting.clone(), greeting]);
    let pdu = msg(5, 100);
    p.client_call(|l| l.send(&pdu)).unwrap();
    p.run_for(ms(100));
    assert_eq!(server_pdus(&p).last(), Some(&pdu));
}

#[test]
fn close_sends_close_notify_which_the_peer_sees_without_a_fin() {
    let pki = TestPki::shared();
    let mut p = tls_pair(pki, false, pki, false);
    p.run_for(ms(100));
    p.drop_fins = true;
    let bye = msg(9, 10);
    p.server_call(|s| {
        s.send(&bye).unwrap();
        s.close();
    });
    p.run_for(ms(100));
    // The PDU queued before the close arrives, then the close_notify
    // closes the link although no FIN ever arrived.
    assert_eq!(
        p.client_events(),
        [
            &LinkEvent::Up,
            &LinkEvent::Pdu(bye),
            &LinkEvent::Down(CloseReason::PeerClosed)
        ]
    );
    assert_eq!(
        p.server_events(),
        [&SessionEvent::Closed(CloseReason::Local)]
    );
}

#[test]
fn plaintext_teamtalk_client_on_a_tls_port_is_closed() {
    let pki = TestPki::shared();
    let t = t0();
    let session = Session::new(SessionConfig::client(), peer(), t);
    let mut d = Drive::new(Tls::server(pki.server_config(false), session, t), t);
    d.advance(secs(1));
    d.recv(&login_req(1).to_bytes());
    assert_eq!(
        d.events(),
        [&SessionEvent::Closed(CloseReason::Tls(TlsError::NotTls))]
    );
    assert!(d.finished());
    // The only bytes sent back are a TLS alert record, then the close.
    let sent = d.transmitted();
    assert_eq!(&sent[..3], &[0x15, 0x03, 0x03]);
    assert!(matches!(
        d.outputs[d.outputs.len() - 3..],
        [
            (_, Output::Close),
            (_, Output::Event(_)),
            (_, Output::Finished)
        ]
    ));
}

#[test]
fn a_server_handshake_never_completed_is_closed_at_its_deadline() {
    let pki = TestPki::shared();
    let t = t0();
    // A server peer: its own idle timeout (30 s) is later than the
    // handshake deadline.
    let session = Session::new(SessionConfig::server_peer(), peer(), t);
    let mut d = Drive::new(Tls::server(pki.server_config(false), session, t), t);
    assert_eq!(d.deadline, Some(t + secs(5)), "the session's heartbeat");
    // The session's heartbeats wait for the handshake, which never comes
    // (a client that only trickles the first bytes of a hello).
    d.advance(secs(3));
    d.recv(&[0x16, 0x03, 0x01]);
    d.advance_to(t + DEFAULT_HANDSHAKE_TIMEOUT - ms(1));
    assert!(d.events().is_empty());
    assert!(
        d.transmitted().is_empty(),
        "nothing leaves before the handshake"
    );
    assert_eq!(d.deadline, Some(t + DEFAULT_HANDSHAKE_TIMEOUT));
    d.advance_to(t + DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!(
        d.events(),
        [&SessionEvent::Closed(CloseReason::Tls(
            TlsError::HandshakeTimedOut
        ))]
    );
    assert!(d.finished());
}

#[test]
fn handshake_timeout_is_configurable_and_a_late_input_still_fires_it() {
    let pki = TestPki::shared();
    let t = t0();
    let session = Session::new(SessionConfig::client(), peer(), t);
    let tls = Tls::server(pki.server_config(false), session, t).with_handshake_timeout(secs(2));
    let mut d = Drive::new(tls, t);
    assert_eq!(d.deadline, Some(t + secs(2)));
    // The driver woke late and reports bytes first: the deadline is
    // checked before they are read.
    d.now = t + secs(3);
    d.recv(&[0x16]);
    assert_eq!(
        d.events(),
        [&SessionEvent::Closed(CloseReason::Tls(
            TlsError::HandshakeTimedOut
        ))]
    );
}

#[test]
fn a_zero_handshake_timeout_still_gives_a_deadline_after_now() {
    let pki = TestPki::shared();
    let t = t0();
    let session = Session::new(SessionConfig::client(), peer(), t);
    let tls =
        Tls::server(pki.server_config(false), session, t).with_handshake_timeout(Duration::ZERO);
    // `Drive` asserts every deadline is after the last input.
    let mut d = Drive::new(tls, t);
    assert_eq!(d.deadline, Some(t + ms(1)));
    d.advance(ms(1));
    assert!(d.finished());
}

#[test]
fn a_client_handshake_is_bounded_by_the_link_connect_timeout_or_its_own() {
    let pki = TestPki::shared();
    let t = t0();
    let config = pki.client_config(pki, false);
    // The server accepts TCP but never answers the hello: the link's 5 s
    // connect timeout covers the handshake.
    let link = Link::new(link_cfg(), t);
    let mut d = Drive::new(Tls::client(Arc::clone(&config), name(), link, t), t);
    d.advance(ms(10));
    d.input(Input::Connected(d.now));
    assert!(d.m.is_handshaking());
    assert_eq!(d.transmitted()[0], 0x16, "the client hello went out");
    d.advance_to(t + secs(5));
    assert_eq!(
        d.events(),
        [&LinkEvent::Unreachable(CloseReason::ConnectTimedOut)]
    );
    // A close_notify, then the close.
    assert!(matches!(
        d.outputs[d.outputs.len() - 3..],
        [
            (_, Output::Transmit(_)),
            (_, Output::Close),
            (_, Output::Event(_))
        ]
    ));

    // With a longer connect timeout, the handshake timeout decides.
    let mut cfg = link_cfg();
    cfg.connect_timeout = secs(60);
    let link = Link::new(cfg, t);
    let tls = Tls::client(config, name(), link, t).with_handshake_timeout(secs(3));
    let mut d = Drive::new(tls, t);
    d.input(Input::Connected(t));
    assert_eq!(d.deadline, Some(t + secs(3)));
    d.advance_to(t + secs(3));
    assert_eq!(
        d.events(),
        [&LinkEvent::Unreachable(CloseReason::Tls(
            TlsError::HandshakeTimedOut
        ))]
    );
}

#[test]
fn a_peer_closing_mid_handshake_is_a_tls_failure() {
    let pki = TestPki::shared();
    let t = t0();
    let link = Link::new(link_cfg(), t);
    let mut d = Drive::new(
        Tls::client(pki.client_config(pki, false), name(), link, t),
        t,
    );
    d.input(Input::Connected(t));
    // A plaintext TeamTalk server cannot parse the hello and hangs up.
    d.advance(ms(5));
    d.input(Input::Closed(d.now));
    assert_eq!(
        d.events(),
        [&LinkEvent::Unreachable(CloseReason::Tls(
            TlsError::ClosedDuringHandshake
        ))]
    );
}

#[test]
fn sends_before_the_handshake_wait_and_count_towards_the_send_cap() {
    let pki = TestPki::shared();
    let t = t0();
    let mut cfg = SessionConfig::client();
    cfg.max_tx_bytes = 1000;
    let session = Session::new(cfg, peer(), t);
    let mut d = Drive::new(Tls::server(pki.server_config(false), session, t), t);
    // The application sends before the client said anything (a notice,
    // say): held by the wrapper, counted by the session.
    d.call(|s| s.send(&msg(1, 400))).unwrap();
    d.call(|s| s.send(&msg(2, 400))).unwrap();
    assert!(d.transmitted().is_empty());
    assert_eq!(d.m.pending_len(), 832);
    // The driver reports 100 unsent bytes: 932 in all, under the cap.
    d.call(|s| s.set_backlog(t, 100));
    assert!(d.events().is_empty());
    // One more PDU: the session counts the wrapper's 832 bytes and refuses
    // it (seeing only the driver's 100, it would have queued it).
    assert_eq!(d.call(|s| s.send(&msg(3, 400))), Err(SendError::BufferFull));
    assert_eq!(
        d.events(),
        [&SessionEvent::Closed(CloseReason::SendBufferFull)]
    );
    assert_eq!(d.m.pending_len(), 0);
    assert!(d.finished());

    // The wrapper's own report can be what crosses the cap, too.
    let mut cfg = SessionConfig::client();
    cfg.max_tx_bytes = 1000;
    let session = Session::new(cfg, peer(), t);
    let mut d = Drive::new(Tls::server(pki.server_config(false), session, t), t);
    d.call(|s| s.send(&msg(1, 400))).unwrap();
    d.call(|s| s.send(&msg(2, 400))).unwrap();
    d.call(|s| s.set_backlog(t, 200));
    assert_eq!(
        d.events(),
        [&SessionEvent::Closed(CloseReason::SendBufferFull)]
    );
}

#[test]
fn a_slow_reader_closes_a_tls_link_by_its_send_cap() {
    let pki = TestPki::shared();
    let mut p = tls_pair(pki, false, pki, false);
    p.run_for(ms(100));
    let now = p.now;
    // The driver says 4 MiB + 1 of encrypted bytes are still unsent.
    p.client_call(|l| l.set_backlog(now, crate::DEFAULT_MAX_TX_BYTES + 1));
    assert_eq!(
        p.client_events(),
        [
            &LinkEvent::Up,
            &LinkEvent::Down(CloseReason::SendBufferFull)
        ]
    );
}

#[test]
fn heartbeat_echo_and_login_work_through_a_tls_client_session() {
    // A client session (login gate, heartbeat echo) behind TLS, with a
    // TLS link standing in for the client.
    let pki = TestPki::shared();
    let t = t0();
    let client_config = pki.client_config(pki, false);
    let link = Tls::client(client_config, name(), Link::new(link_cfg(), t), t);
    let server_config = pki.server_config(false);
    let mut p: TlsPair = Pair::new(link, move |now| {
        Tls::server(
            Arc::clone(&server_config),
            Session::new(SessionConfig::client(), peer(), now),
            now,
        )
    });
    p.client_call(|l| l.set_greeting(&[login_req(1)])).unwrap();
    p.run_for(ms(100));
    assert_eq!(
        p.server_events(),
        [&SessionEvent::LoginRequest(login_req(1))]
    );
    p.server_call(|s| s.accept_login(7, 0x01)).unwrap();
    p.server_call(|s| s.send(&Pdu::new(Command::LoginReqUserlogin.key(), 1, Bytes::new())))
        .unwrap();
    // The link heartbeats every 5 s; the session echoes each one, so the
    // link's 30 s idle timeout never fires.
    p.run_for(secs(120));
    assert_eq!(p.client_events().len(), 2, "up and the login reply only");
    assert!(
        p.server.as_ref().unwrap().login()
            == crate::Login::LoggedIn {
                user_id: 7,
                client_type: 1
            }
    );
}
