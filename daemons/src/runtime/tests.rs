//! The runner against real sockets on 127.0.0.1, with tiny Apps.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use teamtalk_conn::{LinkConfig, SessionConfig};
use teamtalk_proto::pb::im::message::ImClientTimeReq;
use teamtalk_proto::{Command, Pdu, PduCodec};

use super::*;
use crate::metrics::Scrape;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn pdu(seq: u16) -> Pdu {
    Command::MsgTimeRequest.pdu(seq, &ImClientTimeReq {})
}

/// Reads PDUs until one that is not a heartbeat.
fn read_pdu(sock: &mut TcpStream, buf: &mut BytesMut) -> Pdu {
    let mut codec = PduCodec::default();
    loop {
        if let Some(p) = codec.decode(buf).unwrap() {
            if p.is(Command::OtherHeartbeat.key()) {
                continue;
            }
            return p;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Echoes PDUs; remembers what the runner told it.
#[derive(Default)]
struct Echo {
    listening: Vec<SocketAddr>,
    ticks: u32,
    opened: u32,
    closed: u32,
    last: Option<Conn>,
}

impl App for Echo {
    type Job = NoJob;
    type Done = NoJob;

    fn name(&self) -> &'static str {
        "echo"
    }

    fn handle(&mut self, _now: Now, input: Input<'_, NoJob>, out: &mut Out<NoJob>) {
        match input {
            Input::Listening { addr, .. } => self.listening.push(addr),
            Input::Tick => self.ticks += 1,
            Input::Opened { conn, .. } => {
                self.opened += 1;
                self.last = Some(conn);
            }
            Input::Closed { .. } => self.closed += 1,
            Input::Pdu { conn, pdu } => out.send(conn, pdu.clone()),
            _ => {}
        }
    }

    fn collect(&self, scrape: &mut Scrape) {
        scrape.gauge(
            "echo_opened",
            "Connections opened.",
            &[],
            f64::from(self.opened),
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        if self.closed > 0 {
            problems.push("a peer left".into());
        }
    }
}

fn echo() -> Running<Echo> {
    let mut plan = Plan::<NoWorker>::new();
    plan.listen(
        "peers",
        "peer",
        loopback(),
        PortKind::Peers(SessionConfig::server_peer()),
    );
    start(Echo::default(), plan).unwrap()
}

#[test]
fn listening_comes_first_and_inspect_sees_the_app() {
    let d = echo();
    let mut s = connect(d.addr());
    let mut buf = BytesMut::new();
    s.write_all(&pdu(3).to_bytes()).unwrap();
    assert_eq!(read_pdu(&mut s, &mut buf), pdu(3));
    let (listening, opened) = d.inspect(|e| (e.listening.clone(), e.opened)).unwrap();
    assert_eq!(listening, vec![d.addr()]);
    assert_eq!(opened, 1);
    drop(s);
    // The close arrives as one Closed input.
    let deadline = crate::clock::now() + Duration::from_secs(10);
    while d.inspect(|e| e.closed).unwrap() == 0 {
        assert!(crate::clock::now() < deadline, "no Closed input");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(d.inspect(|e| e.closed).unwrap(), 1);
}

#[test]
fn metrics_carry_transport_and_app_samples_and_health() {
    let d = echo();
    let mut s = connect(d.addr());
    let mut buf = BytesMut::new();
    s.write_all(&pdu(1).to_bytes()).unwrap();
    let _ = read_pdu(&mut s, &mut buf);
    let source = d.metrics();
    let mut scrape = Scrape::new();
    scrape.scoped(&[("daemon", "echo")], |out| source.collect(out));
    let text = scrape.render();
    assert!(text.contains("echo_opened{daemon=\"echo\"} 1\n"), "{text}");
    assert!(
        text.contains("teamtalk_pdus_in_total{daemon=\"echo\",peer=\"peer\",command=\"CID_MSG_TIME_REQUEST\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("teamtalk_connections_open{daemon=\"echo\",side=\"peers\"} 1\n"),
        "{text}"
    );
    let mut problems = Vec::new();
    source.health(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    d.stop();
    let mut problems = Vec::new();
    source.health(&mut problems);
    assert_eq!(problems, vec!["not running".to_owned()]);
}

/// Forwards whatever a client sends over its one link, and what comes back
/// to the client that sent last: exercises ids of an accepted connection
/// and a link that are equal inside their own reactors.
#[derive(Default)]
struct Relay {
    client: Option<Conn>,
    link_up: bool,
}

impl App for Relay {
    type Job = NoJob;
    type Done = NoJob;

    fn name(&self) -> &'static str {
        "relay"
    }

    fn handle(&mut self, _now: Now, input: Input<'_, NoJob>, out: &mut Out<NoJob>) {
        match input {
            Input::LinkUp(_) => self.link_up = true,
            Input::Pdu { conn, pdu } => {
                self.client = Some(conn);
                out.link(LinkId(0), pdu.clone());
            }
            Input::LinkPdu(_, pdu) => {
                if let Some(c) = self.client {
                    out.send(c, pdu.clone());
                }
            }
            _ => {}
        }
    }

    fn collect(&self, _scrape: &mut Scrape) {}

    fn health(&self, _problems: &mut Vec<String>) {}
}

/// A [`Relay`] with a peers port and a link to `far`, its App on the
/// reactor's thread or (`app_thread`) its own; returned once the link is up.
fn relay_linked_to(far: &Running<Echo>, app_thread: bool) -> Running<Relay> {
    let mut plan = Plan::<NoWorker>::new();
    plan.listen(
        "peers",
        "peer",
        loopback(),
        PortKind::Peers(SessionConfig::server_peer()),
    );
    plan.link("far", LinkConfig::new(far.addr()));
    plan.app_thread(app_thread);
    let relay = start(Relay::default(), plan).unwrap();
    let deadline = crate::clock::now() + Duration::from_secs(10);
    while !relay.inspect(|r| r.link_up).unwrap() {
        assert!(crate::clock::now() < deadline, "link never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
    relay
}

#[test]
fn accepted_connections_and_links_never_mix_up() {
    let far = echo();
    let relay = relay_linked_to(&far, false);
    let mut s = connect(relay.addr());
    let mut buf = BytesMut::new();
    for seq in 1..=3 {
        s.write_all(&pdu(seq).to_bytes()).unwrap();
        assert_eq!(read_pdu(&mut s, &mut buf), pdu(seq));
    }
}

/// Sums numbers on a worker; answers each PDU with the running total in
/// its seq once the worker is done.
struct Summer;

struct Adder {
    total: u16,
}

impl Worker for Adder {
    type Job = (Conn, u16);
    type Done = (Conn, u16, usize);

    fn run(&mut self, jobs: Vec<(Conn, u16)>, done: &mut Vec<(Conn, u16, usize)>) {
        let batch = jobs.len();
        for (conn, n) in jobs {
            self.total = self.total.wrapping_add(n);
            done.push((conn, self.total, batch));
        }
    }
}

impl App for Summer {
    type Job = (Conn, u16);
    type Done = (Conn, u16, usize);

    fn name(&self) -> &'static str {
        "summer"
    }

    fn handle(&mut self, _now: Now, input: Input<'_, Self::Done>, out: &mut Out<Self::Job>) {
        match input {
            Input::Pdu { conn, pdu } => out.job(0, (conn, pdu.seq())),
            Input::Done((conn, total, _)) => out.send(conn, pdu(total)),
            _ => {}
        }
    }

    fn collect(&self, _scrape: &mut Scrape) {}

    fn health(&self, _problems: &mut Vec<String>) {}
}

/// A plan with one server-peer port on loopback.
fn peers_plan<W: Worker>() -> Plan<W> {
    let mut plan = Plan::new();
    plan.listen(
        "peers",
        "peer",
        loopback(),
        PortKind::Peers(SessionConfig::server_peer()),
    );
    plan
}

/// Sends 1..=`n` to a [`Summer`] in one write and checks each running
/// total comes back, in order; returns the connection.
fn sums_come_back(addr: SocketAddr, n: u16) -> TcpStream {
    let mut s = connect(addr);
    let mut wire = Vec::new();
    for i in 1..=n {
        wire.extend_from_slice(&pdu(i).to_bytes());
    }
    s.write_all(&wire).unwrap();
    let mut buf = BytesMut::new();
    let mut total = 0u16;
    for i in 1..=n {
        total += i;
        assert_eq!(
            read_pdu(&mut s, &mut buf).seq(),
            total,
            "nothing lost or reordered"
        );
    }
    s
}

#[test]
fn jobs_run_in_order_on_the_worker_and_answers_come_back() {
    let mut plan = peers_plan();
    plan.worker(Adder { total: 0 });
    let d = start(Summer, plan).unwrap();
    sums_come_back(d.addr(), 100);
    d.stop();
}

/// [`Adder`] taking its time over every batch.
struct SlowAdder(Adder);

impl Worker for SlowAdder {
    type Job = (Conn, u16);
    type Done = (Conn, u16, usize);

    fn run(&mut self, jobs: Vec<(Conn, u16)>, done: &mut Vec<(Conn, u16, usize)>) {
        std::thread::sleep(Duration::from_millis(5));
        self.0.run(jobs, done);
    }
}

#[test]
fn a_full_worker_queue_holds_the_app_back_and_is_counted() {
    let mut plan = peers_plan();
    plan.worker_limits(1, 1);
    plan.worker(SlowAdder(Adder { total: 0 }));
    let d = start(Summer, plan).unwrap();
    sums_come_back(d.addr(), 30);
    let source = d.metrics();
    let mut scrape = Scrape::new();
    source.collect(&mut scrape);
    let text = scrape.render();
    let waits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("teamtalk_worker_queue_full_waits_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no waits counter in {text}"));
    // Thirty jobs into a queue of one, each batch taking 5 ms: the App
    // waited for room most of the time.
    assert!(waits >= 10, "{waits} waits");
    d.stop();
}

#[test]
fn a_port_in_use_is_an_error_naming_it() {
    let d = echo();
    let mut plan = Plan::<NoWorker>::new();
    plan.listen(
        "peers",
        "peer",
        d.addr(),
        PortKind::Peers(SessionConfig::server_peer()),
    );
    let err = start(Echo::default(), plan).unwrap_err();
    assert!(matches!(err, DaemonError::Listen { addr, .. } if addr == d.addr()));
    assert!(err.to_string().contains(&d.addr().to_string()), "{err}");
}

#[test]
fn a_controller_acts_on_the_app_as_an_input_would() {
    let d = echo();
    let mut s = connect(d.addr());
    let mut buf = BytesMut::new();
    s.write_all(&pdu(1).to_bytes()).unwrap();
    let _ = read_pdu(&mut s, &mut buf);
    let c = d.controller();
    let from_thread = std::thread::spawn({
        let c = c.clone();
        move || {
            c.act(|app, _now, out| {
                let conn = app.last.expect("a connection");
                out.send(conn, pdu(42));
                app.opened
            })
        }
    })
    .join()
    .unwrap();
    assert_eq!(from_thread.unwrap(), 1);
    assert_eq!(
        read_pdu(&mut s, &mut buf),
        pdu(42),
        "the action was carried out"
    );
    assert_eq!(c.inspect(|app| app.opened).unwrap(), 1);
    d.stop();
    assert!(matches!(
        c.act(|_, _, _| ()),
        Err(DaemonError::Stopped("echo"))
    ));
}

/// Starts [`Summer`] with one worker, its App on its reactor's thread or
/// (`app_thread`) on its own.
fn summer(app_thread: bool) -> Running<Summer> {
    let mut plan = peers_plan();
    plan.worker(Adder { total: 0 });
    plan.app_thread(app_thread);
    start(Summer, plan).unwrap()
}

#[test]
fn the_app_runs_on_the_reactor_thread_unless_asked_for_its_own() {
    let inline = summer(false);
    let thread = inline
        .inspect(|_| std::thread::current().name().map(str::to_owned))
        .unwrap();
    assert_eq!(thread.as_deref(), Some("teamtalk-net-0"));
    inline.stop();
    let own = summer(true);
    let thread = own
        .inspect(|_| std::thread::current().name().map(str::to_owned))
        .unwrap();
    assert_eq!(thread.as_deref(), Some("summer"));
    own.stop();
}

#[test]
fn either_way_jobs_come_back_and_a_stop_with_workers_is_prompt() {
    for app_thread in [false, true] {
        let d = summer(app_thread);
        let mut s = sums_come_back(d.addr(), 50);
        // The workers' exit must reach the App at once: waiting for it
        // would otherwise run into the 30 s patience of a stop.
        let started = crate::clock::now();
        d.stop();
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "stop waited for its patience (app_thread {app_thread})"
        );
        // The stop closed the client's connection.
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(std::io::Read::read_to_end(&mut s, &mut rest).is_ok());
    }
}

#[test]
fn sides_sharing_a_reactor_keep_their_own_gauges() {
    let far = echo();
    let relay = relay_linked_to(&far, false);
    let mut scrape = Scrape::new();
    relay.metrics().collect(&mut scrape);
    let text = scrape.render();
    // One link, no accepted peer yet.
    assert!(
        text.contains("teamtalk_connections_open{side=\"links\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("teamtalk_connections_open{side=\"peers\"} 0\n"),
        "{text}"
    );
    let _client = connect(relay.addr());
    let deadline = crate::clock::now() + Duration::from_secs(10);
    loop {
        let mut scrape = Scrape::new();
        relay.metrics().collect(&mut scrape);
        let text = scrape.render();
        if text.contains("teamtalk_connections_open{side=\"peers\"} 1\n") {
            assert!(
                text.contains("teamtalk_connections_open{side=\"links\"} 1\n"),
                "{text}"
            );
            break;
        }
        assert!(crate::clock::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn with_its_own_thread_links_and_accepted_connections_still_never_mix_up() {
    let far = echo();
    let relay = relay_linked_to(&far, true);
    let mut s = connect(relay.addr());
    let mut buf = BytesMut::new();
    for seq in 1..=3 {
        s.write_all(&pdu(seq).to_bytes()).unwrap();
        assert_eq!(read_pdu(&mut s, &mut buf), pdu(seq));
    }
}
