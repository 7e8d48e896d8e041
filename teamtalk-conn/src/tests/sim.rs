//! A deterministic network in virtual time: one [`Link`] (the msg_server
//! side) and the server-peer [`Session`] it gets on the other end, joined
//! by in-memory pipes with a fixed latency. Time jumps straight to the next
//! deadline or delivery, so hours of protocol run in milliseconds
//! (quinn's `Pair`, str0m's `progress`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_proto::Pdu;

use super::{pdus, t0};
use crate::{
    Input, Link, LinkConfig, LinkEvent, Machine, Output, Session, SessionConfig, SessionEvent,
};

#[derive(Debug)]
enum Deliver {
    Bytes(Bytes),
    /// FIN/RST: the other side closed.
    Fin,
    /// Answer to a connect: accepted or refused.
    ConnectResult(bool),
}

#[derive(Debug)]
struct Flight {
    at: Instant,
    to_server: bool,
    conn: u32,
    what: Deliver,
}

pub(crate) struct Sim {
    pub(crate) now: Instant,
    pub(crate) latency: Duration,
    pub(crate) link: Link,
    link_deadline: Option<Instant>,
    pub(crate) link_finished: bool,
    /// Id of the link's current socket (bumped on every connect).
    link_conn: u32,
    pub(crate) server: Option<Session>,
    server_conn: u32,
    server_deadline: Option<Instant>,
    pub(crate) server_cfg: SessionConfig,
    /// Connects are accepted (else refused).
    pub(crate) listening: bool,
    /// Connects get no answer at all.
    pub(crate) blackhole: bool,
    /// Everything in flight is lost.
    pub(crate) partitioned: bool,
    /// The server reads its socket; when false, the link's bytes pile up in
    /// its driver's write queue.
    pub(crate) server_reads: bool,
    link_backlog: usize,
    flights: VecDeque<Flight>,
    /// (time, event) raised by the link.
    pub(crate) link_events: Vec<(Instant, LinkEvent)>,
    /// (time, connection id, event) raised by server sessions.
    pub(crate) server_events: Vec<(Instant, u32, SessionEvent)>,
    /// PDUs the link transmitted.
    pub(crate) link_sent: Vec<(Instant, Pdu)>,
    /// PDUs server sessions transmitted.
    pub(crate) server_sent: Vec<(Instant, Pdu)>,
    /// When the link received bytes.
    pub(crate) link_rx: Vec<Instant>,
    /// When the link asked to connect.
    pub(crate) connects: Vec<Instant>,
}

impl Sim {
    pub(crate) fn new(cfg: LinkConfig, latency: Duration) -> Self {
        let now = t0();
        let mut sim = Self {
            now,
            latency,
            link: Link::new(cfg, now),
            link_deadline: None,
            link_finished: false,
            link_conn: 0,
            server: None,
            server_conn: 0,
            server_deadline: None,
            server_cfg: SessionConfig::server_peer(),
            listening: true,
            blackhole: false,
            partitioned: false,
            server_reads: true,
            link_backlog: 0,
            flights: VecDeque::new(),
            link_events: Vec::new(),
            server_events: Vec::new(),
            link_sent: Vec::new(),
            server_sent: Vec::new(),
            link_rx: Vec::new(),
            connects: Vec::new(),
        };
        sim.drain_link();
        sim
    }

    fn send(&mut self, to_server: bool, conn: u32, what: Deliver) {
        let at = self.now + self.latency;
        self.flights.push_back(Flight {
            at,
            to_server,
            conn,
            what,
        });
    }

    pub(crate) fn drain_link(&mut self) {
        loop {
            match self.link.poll_output() {
                Output::Transmit(bytes) => {
                    for p in pdus(&bytes) {
                        self.link_sent.push((self.now, p));
                    }
                    if self.server_reads {
                        self.send(true, self.link_conn, Deliver::Bytes(bytes));
                    } else {
                        self.link_backlog += bytes.len();
                        self.link.set_backlog(self.now, self.link_backlog);
                    }
                }
                Output::Connect(_) => {
                    self.link_conn += 1;
                    self.link_backlog = 0;
                    self.connects.push(self.now);
                    if !self.blackhole {
                        let ok = self.listening;
                        self.send(false, self.link_conn, Deliver::ConnectResult(ok));
                    }
                }
                Output::Close => {
                    self.send(true, self.link_conn, Deliver::Fin);
                    // Nothing more reaches the socket we just shut.
                    self.link_conn += 1;
                    self.link_backlog = 0;
                }
                Output::Event(e) => self.link_events.push((self.now, e)),
                Output::Timeout(t) => {
                    assert!(t > self.now, "deadline not after the last input");
                    self.link_deadline = Some(t);
                    return;
                }
                Output::Finished => {
                    self.link_finished = true;
                    self.link_deadline = None;
                    return;
                }
            }
        }
    }

    fn drain_server(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        loop {
            match server.poll_output() {
                Output::Transmit(bytes) => {
                    for p in pdus(&bytes) {
                        self.server_sent.push((self.now, p));
                    }
                    self.flights.push_back(Flight {
                        at: self.now + self.latency,
                        to_server: false,
                        conn: self.server_conn,
                        what: Deliver::Bytes(bytes),
                    });
                }
                Output::Close => self.flights.push_back(Flight {
                    at: self.now + self.latency,
                    to_server: false,
                    conn: self.server_conn,
                    what: Deliver::Fin,
                }),
                Output::Event(e) => self.server_events.push((self.now, self.server_conn, e)),
                Output::Connect(_) => unreachable!("sessions never connect"),
                Output::Timeout(t) => {
                    assert!(t > self.now, "deadline not after the last input");
                    self.server_deadline = Some(t);
                    return;
                }
                Output::Finished => {
                    self.server = None;
                    self.server_deadline = None;
                    return;
                }
            }
        }
    }

    /// The server process dies: its session vanishes, the link sees a
    /// reset, and connects are refused until [`Sim::start_server`].
    pub(crate) fn kill_server(&mut self) {
        self.listening = false;
        if self.server.take().is_some() {
            self.server_deadline = None;
            self.send(false, self.server_conn, Deliver::Fin);
        }
    }

    pub(crate) fn start_server(&mut self) {
        self.listening = true;
    }

    /// Processes the earliest pending thing if it is due by `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        let flight_at = self.flights.front().map(|f| f.at);
        let next = [flight_at, self.link_deadline, self.server_deadline]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next.filter(|t| *t <= limit) else {
            return false;
        };
        self.now = next;
        if flight_at == Some(next) {
            let f = self.flights.pop_front().expect("front exists");
            self.deliver(f);
        } else if self.link_deadline == Some(next) {
            self.link.handle_input(Input::Timeout(next));
            self.drain_link();
        } else if let Some(server) = self.server.as_mut() {
            server.handle_input(Input::Timeout(next));
            self.drain_server();
        }
        true
    }

    fn deliver(&mut self, f: Flight) {
        if self.partitioned {
            return;
        }
        let now = self.now;
        if f.to_server {
            if f.conn != self.server_conn {
                return;
            }
            let Some(server) = self.server.as_mut() else {
                return;
            };
            match f.what {
                Deliver::Bytes(b) => server.handle_input(Input::Received(now, &b)),
                Deliver::Fin => server.handle_input(Input::Closed(now)),
                Deliver::ConnectResult(_) => unreachable!(),
            }
            self.drain_server();
        } else {
            if f.conn != self.link_conn {
                return;
            }
            match f.what {
                Deliver::Bytes(b) => {
                    self.link_rx.push(now);
                    self.link.handle_input(Input::Received(now, &b));
                }
                Deliver::Fin => self.link.handle_input(Input::Closed(now)),
                Deliver::ConnectResult(true) => {
                    // The server accepts: a fresh session for this socket.
                    self.server_conn = f.conn;
                    let peer = "127.0.0.1:40000".parse().expect("addr");
                    self.server = Some(Session::new(self.server_cfg.clone(), peer, now));
                    self.drain_server();
                    self.link.handle_input(Input::Connected(now));
                }
                Deliver::ConnectResult(false) => {
                    self.link.handle_input(Input::ConnectFailed(now));
                }
            }
            self.drain_link();
        }
    }

    pub(crate) fn run_until(&mut self, t: Instant) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// The application sends on the link (and the driver drains).
    pub(crate) fn link_send(&mut self, pdu: &Pdu) -> Result<(), crate::SendError> {
        let r = self.link.send(pdu);
        self.drain_link();
        r
    }
}
