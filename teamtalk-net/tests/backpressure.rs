//! Read backpressure over real sockets on 127.0.0.1 (port 0), under both
//! drivers: a session whose reading is paused (by hand or by its PDU
//! credit) is not read at all, however much its peer sends, while the
//! other connections of the same driver are served; once reading resumes,
//! everything arrives whole and in order.
//!
//! Every wait has a generous timeout and no assertion is about how long
//! something took. The check that nothing is read while paused is the
//! driver's byte counter, which must not move.

use std::any::Any;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use teamtalk_conn::{CloseReason, Session, SessionConfig, SessionEvent};
use teamtalk_net::{ConnId, NetEvent, Reactor, ReactorConfig, StatsSnapshot};
use teamtalk_proto::{Command, Pdu};

/// How long any single wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the flooded connection is watched for reads that must not
/// happen.
const SETTLE: Duration = Duration::from_millis(300);
/// PDUs of the flood: 320 of 64 KiB on the wire, 20 MiB in all.
const FLOOD_PDUS: u16 = 320;
const FLOOD_PDU_LEN: usize = 64 << 10;

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A session with heartbeat echo and no login gate.
fn echo_session(peer: SocketAddr, t: Instant) -> Session {
    let mut cfg = SessionConfig::client();
    cfg.login_timeout = None;
    Session::new(cfg, peer, t)
}

/// The flood's PDU number `seq`: 64 KiB on the wire, a body that differs
/// for every PDU and every position, so a lost, repeated, reordered or
/// damaged byte shows.
fn flood_pdu(seq: u16) -> Pdu {
    let body: Vec<u8> = (0..FLOOD_PDU_LEN - 16)
        .map(|i| (usize::from(seq) * 7 + i / 3) as u8)
        .collect();
    Pdu::new(Command::MsgData.key(), seq, Bytes::from(body))
}

fn flood_bytes(n: u16) -> Vec<u8> {
    let mut all = Vec::with_capacity(usize::from(n) * FLOOD_PDU_LEN);
    for seq in 0..n {
        all.extend_from_slice(&flood_pdu(seq).to_bytes());
    }
    all
}

fn heartbeat(seq: u16) -> Bytes {
    Pdu::new(Command::OtherHeartbeat.key(), seq, Bytes::new()).to_bytes()
}

type Call = Box<dyn FnOnce(&mut Session) + Send>;

/// A listening server under either driver, seen the same way: its
/// address, its events, `exec` and its counters.
struct Server {
    addr: SocketAddr,
    events: Receiver<(ConnId, NetEvent<SessionEvent>)>,
    exec: Box<dyn Fn(ConnId, Call)>,
    stats: Box<dyn Fn() -> StatsSnapshot>,
    /// The reactor or the runtime; dropped last.
    _driver: Box<dyn Any>,
}

impl Server {
    fn reactor(factory: fn(SocketAddr, Instant) -> Session) -> Self {
        let reactor = Reactor::<Session>::new(ReactorConfig {
            // One shard: the flooded connection and the others share it.
            threads: 1,
            ..ReactorConfig::default()
        })
        .expect("reactor");
        let addr = reactor.listen(any_port(), factory).expect("listen");
        let (handle, events) = (reactor.handle(), reactor.events());
        let stats = reactor.handle();
        Self {
            addr,
            events,
            exec: Box::new(move |id, f| handle.exec(id, f).expect("exec")),
            stats: Box::new(move || stats.stats()),
            _driver: Box::new(reactor),
        }
    }

    #[cfg(feature = "tokio")]
    fn tokio(factory: fn(SocketAddr, Instant) -> Session) -> Self {
        use teamtalk_net::tokio::{DriveConfig, Driver};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (driver, mut rx) = Driver::<Session>::new(DriveConfig::default());
        let addr = {
            let _in_runtime = rt.enter();
            driver.listen(any_port(), factory).expect("listen")
        };
        let (tx, events) = crossbeam_channel::unbounded();
        rt.spawn(async move {
            while let Some(ev) = rx.recv().await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let stats = driver.clone();
        Self {
            addr,
            events,
            exec: Box::new(move |id, f| driver.exec(id, f).expect("exec")),
            stats: Box::new(move || stats.stats()),
            _driver: Box::new(rt),
        }
    }

    fn exec(&self, id: ConnId, f: impl FnOnce(&mut Session) + Send + 'static) {
        (self.exec)(id, Box::new(f));
    }

    fn stats(&self) -> StatsSnapshot {
        (self.stats)()
    }

    /// The next event, skipping none.
    fn next(&self) -> (ConnId, NetEvent<SessionEvent>) {
        self.events
            .recv_timeout(PATIENCE)
            .expect("an event in time")
    }

    fn accepted(&self) -> ConnId {
        loop {
            if let (id, NetEvent::Accepted { .. }) = self.next() {
                return id;
            }
        }
    }

    /// The next PDU of connection `id` (events of others are ignored).
    fn pdu_of(&self, id: ConnId) -> Pdu {
        loop {
            match self.next() {
                (i, NetEvent::Machine(SessionEvent::Pdu(p))) if i == id => return p,
                (i, NetEvent::Machine(SessionEvent::Closed(r))) if i == id => {
                    panic!("connection closed: {r}")
                }
                _ => {}
            }
        }
    }
}

/// Polls `cond` until it holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = now() + PATIENCE;
    while !cond() {
        assert!(now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read");
    buf
}

/// Writes as much of `data` as the kernel takes without blocking.
fn write_until_full(s: &mut TcpStream, data: &[u8]) -> usize {
    s.set_nonblocking(true).expect("nonblocking");
    let mut written = 0;
    while written < data.len() {
        match s.write(&data[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("write: {e}"),
        }
    }
    s.set_nonblocking(false).expect("blocking");
    written
}

/// Another client on the same server gets a heartbeat echoed (by its
/// session) and a data PDU echoed (by the application).
fn served(server: &Server, round: u16) {
    let mut c = connect(server.addr);
    let id = server.accepted();
    c.write_all(&heartbeat(round)).expect("write");
    assert_eq!(read_n(&mut c, 16), heartbeat(round), "heartbeat echoed");
    let pdu = Pdu::new(Command::MsgData.key(), round, Bytes::from_static(b"hi"));
    c.write_all(&pdu.to_bytes()).expect("write");
    let got = server.pdu_of(id);
    assert_eq!(got, pdu);
    server.exec(id, move |s| {
        let _ = s.send(&got);
    });
    assert_eq!(read_n(&mut c, pdu.wire_len()), pdu.to_bytes(), "echoed");
}

/// A client floods a session the application paused: the driver reads
/// none of it, other clients are served meanwhile, and after the resume
/// all 20 MiB arrive in order and intact.
fn paused_session_scenario(server: &Server) {
    let mut flooder = connect(server.addr);
    let id = server.accepted();
    server.exec(id, |s| s.pause_reading(now()));
    wait_until("the driver to stop reading", || {
        server.stats().reads_paused == 1
    });
    let before = server.stats();

    let flood = flood_bytes(FLOOD_PDUS);
    let written = write_until_full(&mut flooder, &flood);
    // Give a driver that wrongly reads the time to show it.
    std::thread::sleep(SETTLE);
    let more = write_until_full(&mut flooder, &flood[written..]);
    let during = server.stats();
    assert_eq!(
        during.bytes_in, before.bytes_in,
        "bytes read from a paused socket"
    );
    assert_eq!(during.queued_bytes, 0);
    assert!(
        written + more < flood.len(),
        "the peer was never held back: {written} + {more} bytes taken"
    );

    // The same driver serves everyone else meanwhile.
    for round in 1..=3 {
        served(server, round);
    }
    assert_eq!(server.stats().reads_paused, 1, "the flooder stays paused");

    // The rest of the flood goes in while the application resumes.
    let start = written + more;
    let writer = std::thread::spawn(move || {
        flooder
            .write_all(&flood[start..])
            .expect("rest of the flood");
        flooder
    });
    server.exec(id, |s| s.resume_reading(now()));
    for seq in 0..FLOOD_PDUS {
        let got = server.pdu_of(id);
        assert_eq!(got.seq(), seq, "in order");
        assert!(got == flood_pdu(seq), "PDU {seq} intact");
    }
    let _flooder = writer.join().expect("writer");
    assert_eq!(server.stats().reads_paused, 0);
}

/// A session with a PDU credit of [`CREDIT`] pauses itself: the
/// application never holds more than that many PDUs unanswered, however
/// fast the client sends, and gets them all in order by granting more.
fn credit_scenario(server: &Server) {
    const N: u16 = 96;
    let mut flooder = connect(server.addr);
    let id = server.accepted();
    let flood = flood_bytes(N);
    let writer = std::thread::spawn(move || {
        flooder.write_all(&flood).expect("flood");
        flooder
    });
    let mut outstanding = 0;
    let mut paused_seen = false;
    for seq in 0..N {
        let got = server.pdu_of(id);
        assert_eq!(got.seq(), seq, "in order");
        assert!(got == flood_pdu(seq), "PDU {seq} intact");
        outstanding += 1;
        assert!(
            outstanding <= CREDIT,
            "{outstanding} PDUs raised with a credit of {CREDIT}"
        );
        if outstanding == CREDIT {
            if !paused_seen {
                wait_until("the session to pause itself", || {
                    server.stats().reads_paused == 1
                });
                paused_seen = true;
                // The driver reads nothing more: the session holds at
                // most the rest of its last read.
                let held = server.stats().bytes_in;
                std::thread::sleep(SETTLE);
                assert_eq!(server.stats().bytes_in, held, "read while paused");
            }
            // The application answered them all.
            server.exec(id, |s| s.grant_pdus(now(), CREDIT_U32));
            outstanding = 0;
        }
    }
    let _flooder = writer.join().expect("writer");
    served(server, 9);
}

/// A peer that sends and closes while paused: its close is read like
/// data, after the PDUs it sent before, once reading resumes (nothing it
/// sent is lost). A reset, though, is noticed at once by the reactor.
fn close_while_paused_scenario(server: &Server, reset_noticed_at_once: bool) {
    let mut c = connect(server.addr);
    let id = server.accepted();
    server.exec(id, |s| s.pause_reading(now()));
    wait_until("paused", || server.stats().reads_paused == 1);
    for seq in 0..3 {
        c.write_all(&flood_pdu(seq).to_bytes()).expect("write");
    }
    drop(c);
    std::thread::sleep(SETTLE);
    assert!(
        server.events.try_recv().is_err(),
        "nothing happens while paused"
    );
    server.exec(id, |s| s.resume_reading(now()));
    for seq in 0..3 {
        assert!(server.pdu_of(id) == flood_pdu(seq), "PDU {seq} intact");
    }
    loop {
        match server.next() {
            (i, NetEvent::Machine(SessionEvent::Closed(r))) if i == id => {
                assert_eq!(r, CloseReason::PeerClosed);
                break;
            }
            (i, ev) => assert!(i != id, "unexpected {ev:?}"),
        }
    }
    wait_until("the socket gone", || {
        let s = server.stats();
        s.open == 0 && s.reads_paused == 0
    });

    // A reset (the peer closes with unread data or SO_LINGER 0).
    let c = connect(server.addr);
    let id = server.accepted();
    server.exec(id, |s| s.pause_reading(now()));
    wait_until("paused", || server.stats().reads_paused == 1);
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(c);
    if reset_noticed_at_once {
        let (i, ev) = server.next();
        assert_eq!(i, id);
        assert_eq!(
            ev,
            NetEvent::Machine(SessionEvent::Closed(CloseReason::PeerClosed))
        );
    } else {
        server.exec(id, |s| s.resume_reading(now()));
    }
    wait_until("the reset socket gone", || {
        let s = server.stats();
        s.open == 0 && s.reads_paused == 0
    });
}

const CREDIT: usize = 8;
const CREDIT_U32: u32 = 8;

fn credited_session(peer: SocketAddr, t: Instant) -> Session {
    let mut s = echo_session(peer, t);
    s.set_pdu_credit(t, Some(CREDIT_U32));
    s
}

#[test]
fn a_paused_session_is_not_read_while_others_are_served() {
    paused_session_scenario(&Server::reactor(echo_session));
}

#[test]
fn a_pdu_credit_bounds_what_the_application_is_given() {
    credit_scenario(&Server::reactor(credited_session));
}

#[test]
fn a_peer_closing_while_paused_is_read_after_its_pdus() {
    close_while_paused_scenario(&Server::reactor(echo_session), true);
}

#[cfg(feature = "tokio")]
#[test]
fn the_tokio_driver_reads_a_close_after_the_resume_too() {
    close_while_paused_scenario(&Server::tokio(echo_session), false);
}

#[cfg(feature = "tokio")]
#[test]
fn the_tokio_driver_does_not_read_a_paused_session_either() {
    paused_session_scenario(&Server::tokio(echo_session));
}

#[cfg(feature = "tokio")]
#[test]
fn the_tokio_driver_honours_a_pdu_credit() {
    credit_scenario(&Server::tokio(credited_session));
}
