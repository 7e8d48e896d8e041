//! Real sockets on 127.0.0.1 (port 0): the blocking reactor driving
//! teamtalk-conn's `Link` and `Session`.
//!
//! Every wait has a generous timeout and every assertion is about what
//! happened, never about how long it took.

mod support;
use support::{PATIENCE, any_port, now, wait_event, wait_until};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use teamtalk_conn::{
    Backoff, CloseReason, Link, LinkConfig, LinkEvent, Session, SessionConfig, SessionEvent,
};
use teamtalk_net::{
    ListenOptions, NetEvent, Reactor, ReactorConfig, StatsSnapshot, raise_fd_limit,
};
use teamtalk_proto::{Command, Pdu};

fn reactor_cfg(threads: usize) -> ReactorConfig {
    ReactorConfig {
        threads,
        close_linger: Duration::from_millis(200),
        ..ReactorConfig::default()
    }
}

/// A session that echoes heartbeats and has no login gate.
fn echo_cfg() -> SessionConfig {
    let mut cfg = SessionConfig::client();
    cfg.login_timeout = None;
    cfg
}

fn link_cfg(addr: SocketAddr) -> LinkConfig {
    LinkConfig::new(addr).with_backoff(Backoff::exponential(
        Duration::from_millis(20),
        Duration::from_millis(200),
        7,
    ))
}

fn heartbeat(seq: u16) -> Bytes {
    Pdu::new(Command::OtherHeartbeat.key(), seq, Bytes::new()).to_bytes()
}

fn data_pdu(seq: u16, body: &'static [u8]) -> Pdu {
    Pdu::new(Command::MsgData.key(), seq, Bytes::from_static(body))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads exactly `n` bytes, or returns what arrived before EOF.
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    buf.truncate(got);
    buf
}

/// True once the peer has closed: EOF or a reset.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn link_reconnects_after_its_peer_restarts() {
    let server = Reactor::<Session>::new(reactor_cfg(1)).expect("server");
    let addr = server
        .listen(any_port(), |peer, t| {
            Session::new(SessionConfig::server_peer(), peer, t)
        })
        .expect("listen");
    let client = Reactor::<Link>::new(reactor_cfg(1)).expect("client");
    let events = client.events();
    let link = client.open(Link::new(link_cfg(addr), now())).expect("open");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });

    server.shutdown();
    let (_, down) = wait_event(&events, |id, ev| {
        id == link && matches!(ev, NetEvent::Machine(LinkEvent::Down(_)))
    });
    assert!(matches!(
        down,
        NetEvent::Machine(LinkEvent::Down(CloseReason::PeerClosed))
    ));

    // Bring a new server up on the same port; retry while the port is
    // briefly taken (SO_REUSEADDR covers TIME_WAIT, not other sockets).
    let restarted = Reactor::<Session>::new(reactor_cfg(1)).expect("server 2");
    wait_until("the port to be free again", || {
        restarted
            .listen(addr, |peer, t| {
                Session::new(SessionConfig::server_peer(), peer, t)
            })
            .is_ok()
    });
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });
    wait_until("the restarted server to accept", || {
        restarted.stats().accepted >= 1
    });
}

#[test]
fn heartbeats_keep_an_idle_link_alive() {
    let every = Duration::from_millis(10);
    let idle = Duration::from_secs(2);
    let mut peer_cfg = SessionConfig::server_peer();
    peer_cfg.heartbeat = teamtalk_conn::Heartbeat::Send(every);
    peer_cfg.idle_timeout = idle;
    let server = Reactor::<Session>::new(reactor_cfg(1)).expect("server");
    let server_events = server.events();
    let addr = server
        .listen(any_port(), move |peer, t| {
            Session::new(peer_cfg.clone(), peer, t)
        })
        .expect("listen");
    let mut cfg = link_cfg(addr);
    cfg.heartbeat_interval = every;
    cfg.idle_timeout = idle;
    let client = Reactor::<Link>::new(reactor_cfg(1)).expect("client");
    let events = client.events();
    let link = client.open(Link::new(cfg, now())).expect("open");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });

    // Nothing but heartbeats (16-byte PDUs) flows. Wait for enough of
    // them in both directions to span well over the idle timeout.
    let enough = 16 * 3 * u64::try_from(idle.as_millis() / every.as_millis()).expect("fits");
    wait_until("heartbeats both ways", || {
        server.stats().bytes_in >= enough && client.stats().bytes_in >= enough
    });
    assert_eq!(server.stats().bytes_in % 16, 0, "only whole heartbeats");

    // No side ever timed out.
    let link_events: Vec<_> = events.try_iter().collect();
    assert!(
        link_events.is_empty(),
        "unexpected link events: {link_events:?}"
    );
    let server_side: Vec<_> = server_events.try_iter().collect();
    assert_eq!(server_side.len(), 1, "{server_side:?}");
    assert!(matches!(server_side[0].1, NetEvent::Accepted { .. }));
}

#[test]
fn a_client_sending_garbage_is_closed_while_others_continue() {
    let server = Reactor::<Session>::new(reactor_cfg(2)).expect("server");
    let events = server.events();
    let handle = server.handle();
    let addr = server
        .listen(any_port(), |peer, t| Session::new(echo_cfg(), peer, t))
        .expect("listen");
    // The application echoes every data PDU back.
    let app = std::thread::spawn(move || {
        let mut closes = Vec::new();
        while let Ok((id, ev)) = events.recv() {
            match ev {
                NetEvent::Machine(SessionEvent::Pdu(pdu)) => {
                    let _ = handle.exec(id, move |s| {
                        let _ = s.send(&pdu);
                    });
                }
                NetEvent::Machine(SessionEvent::Closed(reason)) => closes.push(reason),
                _ => {}
            }
        }
        closes
    });

    let mut good: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    for (i, s) in good.iter_mut().enumerate() {
        let hb = heartbeat(u16::try_from(i).expect("small"));
        s.write_all(&hb).expect("write");
        assert_eq!(read_n(s, hb.len()), hb, "heartbeat echoed");
    }

    let mut bad = connect(addr);
    // A length field of 5 is shorter than the header itself.
    bad.write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8])
        .expect("write garbage");
    assert!(
        closed_by_peer(&mut bad),
        "the garbage sender is disconnected"
    );

    for (i, s) in good.iter_mut().enumerate() {
        let pdu = data_pdu(u16::try_from(i).expect("small"), b"still here").to_bytes();
        s.write_all(&pdu).expect("write");
        assert_eq!(read_n(s, pdu.len()), pdu, "data echoed by the application");
    }
    wait_until("five connections accepted", || server.stats().accepted == 5);
    assert_eq!(server.stats().open, 4);

    drop(good);
    drop(bad);
    wait_until("all closed", || server.stats().open == 0);
    server.shutdown();
    let closes = app.join().expect("app thread");
    assert_eq!(closes.len(), 5);
    assert_eq!(
        closes
            .iter()
            .filter(|r| matches!(r, CloseReason::Frame(_)))
            .count(),
        1,
        "{closes:?}"
    );
}

#[test]
fn a_reader_that_never_reads_is_closed_with_bounded_memory() {
    const CAP: usize = 256 << 10;
    let mut cfg = SessionConfig::server_peer();
    cfg.max_tx_bytes = CAP;
    let server = Reactor::<Session>::new(reactor_cfg(1)).expect("server");
    let events = server.events();
    let addr = server
        .listen(any_port(), move |peer, t| {
            Session::new(cfg.clone(), peer, t)
        })
        .expect("listen");
    let stalled = connect(addr);
    let (id, _) = wait_event(&events, |_, ev| matches!(ev, NetEvent::Accepted { .. }));

    let body = Bytes::from(vec![b'x'; 1000]);
    let pdu = Pdu::new(Command::MsgData.key(), 1, body);
    let refused = Arc::new(AtomicBool::new(false));
    let mut peak = 0;
    while !refused.load(Ordering::SeqCst) {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let (pdu, refused) = (pdu.clone(), Arc::clone(&refused));
        server
            .exec(id, move |s| {
                for _ in 0..64 {
                    if s.send(&pdu).is_err() {
                        refused.store(true, Ordering::SeqCst);
                        break;
                    }
                }
                let _ = done_tx.send(());
            })
            .expect("exec");
        if done_rx.recv_timeout(PATIENCE).is_err() {
            // The closure was dropped: the session is gone already.
            break;
        }
        peak = peak.max(server.stats().queued_bytes);
    }
    let (_, closed) = wait_event(&events, |i, ev| {
        i == id && matches!(ev, NetEvent::Machine(SessionEvent::Closed(_)))
    });
    assert_eq!(
        closed,
        NetEvent::Machine(SessionEvent::Closed(CloseReason::SendBufferFull))
    );
    wait_event(&events, |i, ev| i == id && *ev == NetEvent::Finished);
    assert!(peak as usize <= CAP, "driver queue peaked at {peak} bytes");
    wait_until("the lingering socket to go", || {
        let s = server.stats();
        s.open == 0 && s.queued_bytes == 0
    });
    drop(stalled);

    // The reactor still serves others.
    let mut other = connect(addr);
    wait_event(&events, |_, ev| matches!(ev, NetEvent::Accepted { .. }));
    assert_eq!(server.stats().open, 1);
    drop(other.write_all(&heartbeat(1)));
}

#[test]
fn two_thousand_concurrent_connections_are_served() {
    const N: usize = 2000;
    let limit = raise_fd_limit().expect("raise the descriptor limit");
    assert!(
        limit >= 2 * N as u64 + 500,
        "descriptor limit {limit} too low for this test"
    );
    let server = Reactor::<Session>::new(reactor_cfg(2)).expect("server");
    let addr = server
        .listen(any_port(), |peer, t| Session::new(echo_cfg(), peer, t))
        .expect("listen");
    let mut clients: Vec<TcpStream> = (0..N).map(|_| connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&heartbeat(u16::try_from(i).expect("fits")))
            .expect("write");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let hb = heartbeat(u16::try_from(i).expect("fits"));
        assert_eq!(read_n(c, hb.len()), hb, "echo on connection {i}");
    }
    let s = server.stats();
    assert_eq!(s.accepted, N as u64);
    assert_eq!(s.open, N);
    assert_eq!(s.refused_over_limit, 0);
    drop(clients);
    wait_until("every connection closed", || server.stats().open == 0);
    assert_eq!(server.stats().closed, N as u64);
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    let server = Reactor::<Session>::new(ReactorConfig {
        max_connections: 3,
        ..reactor_cfg(2)
    })
    .expect("server");
    let addr = server
        .listen(any_port(), |peer, t| Session::new(echo_cfg(), peer, t))
        .expect("listen");
    let mut kept: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for c in &mut kept {
        c.write_all(&heartbeat(1)).expect("write");
        assert_eq!(read_n(c, 16), heartbeat(1));
    }
    for _ in 0..2 {
        let mut extra = connect(addr);
        assert!(
            closed_by_peer(&mut extra),
            "over the limit: closed, not left hanging"
        );
    }
    let s = server.stats();
    assert_eq!((s.accepted, s.refused_over_limit, s.open), (3, 2, 3));

    drop(kept.pop());
    wait_until("a slot to free up", || server.stats().open == 2);
    let mut late = connect(addr);
    late.write_all(&heartbeat(2)).expect("write");
    assert_eq!(read_n(&mut late, 16), heartbeat(2));
}

/// A connection from `src` (another loopback address: the whole 127/8
/// is local), for tests that need two sources.
fn connect_from(src: [u8; 4], addr: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from((src, 0)).into())
        .expect("bind source");
    s.connect(&addr.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Two connections per source: a third from the same address is closed at
/// once, another address is unaffected, and closed connections give their
/// places back (on whichever shard they lived), round after round.
fn per_source_scenario(addr: SocketAddr, stats: &dyn Fn() -> StatsSnapshot) {
    const ROUNDS: u64 = 3;
    for round in 0..ROUNDS {
        let mut kept: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
        for c in &mut kept {
            c.write_all(&heartbeat(1)).expect("write");
            assert_eq!(read_n(c, 16), heartbeat(1), "round {round}: admitted");
        }
        let mut extra = connect(addr);
        assert!(closed_by_peer(&mut extra), "round {round}: third is closed");
        let mut other = connect_from([127, 0, 0, 2], addr);
        other.write_all(&heartbeat(2)).expect("write");
        assert_eq!(read_n(&mut other, 16), heartbeat(2), "another source");
        drop((kept, extra, other));
        wait_until("every connection gone", || stats().open == 0);
    }
    let s = stats();
    assert_eq!(s.refused_per_source, ROUNDS);
    assert_eq!(s.refused_over_limit, 0);
    assert_eq!(s.accepted, 3 * ROUNDS);
}

#[test]
fn connections_over_the_per_source_limit_are_closed_at_once() {
    // Two shards and no slack: connections are adopted across shards and
    // close there.
    let server = Reactor::<Session>::new(ReactorConfig {
        adopt_slack: 0,
        ..reactor_cfg(2)
    })
    .expect("server");
    let opts = ListenOptions {
        max_per_source: Some(2),
        ..ListenOptions::default()
    };
    let addr = server
        .listen_with(any_port(), opts, |peer, t| {
            Session::new(echo_cfg(), peer, t)
        })
        .expect("listen");
    // A listener without the limit on the same reactor takes many.
    let open = server
        .listen(any_port(), |peer, t| Session::new(echo_cfg(), peer, t))
        .expect("listen");
    let mut many: Vec<TcpStream> = (0..5).map(|_| connect(open)).collect();
    for c in &mut many {
        c.write_all(&heartbeat(3)).expect("write");
        assert_eq!(read_n(c, 16), heartbeat(3));
    }
    drop(many);
    wait_until("unlimited ones gone", || server.stats().open == 0);
    let base = server.stats().accepted;
    per_source_scenario(addr, &|| {
        let mut s = server.stats();
        s.accepted -= base;
        s
    });
}

/// Which shard each connection accepted by `server` lives on, from the
/// `Accepted` events, until `n` have been seen.
fn accepted_shards(events: &teamtalk_net::EventRx<SessionEvent>, n: usize) -> Vec<usize> {
    let mut shards = Vec::new();
    while shards.len() < n {
        match events.recv_timeout(PATIENCE) {
            Ok((id, NetEvent::Accepted { .. })) => shards.push(id.shard()),
            Ok(_) => {}
            Err(e) => panic!("{} of {n} accepted: {e}", shards.len()),
        }
    }
    shards
}

#[test]
fn short_lived_connections_stay_on_the_accepting_shard_and_many_spread() {
    let server = Reactor::<Session>::new(ReactorConfig {
        adopt_slack: 4,
        ..reactor_cfg(2)
    })
    .expect("server");
    let events = server.events();
    let addr = server
        .listen(any_port(), |peer, t| Session::new(echo_cfg(), peer, t))
        .expect("listen");
    // One at a time, each closed before the next: no hand-off.
    let mut shards = Vec::new();
    for _ in 0..10 {
        let mut c = connect(addr);
        c.write_all(&heartbeat(1)).expect("write");
        assert_eq!(read_n(&mut c, 16), heartbeat(1));
        shards.extend(accepted_shards(&events, 1));
        drop(c);
        wait_until("closed", || server.stats().open == 0);
    }
    assert!(shards.iter().all(|&s| s == shards[0]), "{shards:?}");
    // Held open: spread within the slack of each other.
    let mut held: Vec<TcpStream> = (0..40).map(|_| connect(addr)).collect();
    for c in &mut held {
        c.write_all(&heartbeat(2)).expect("write");
        assert_eq!(read_n(c, 16), heartbeat(2));
    }
    let shards = accepted_shards(&events, 40);
    let on_first = shards.iter().filter(|&&s| s == 0).count();
    assert!(
        on_first.abs_diff(40 - on_first) <= 2 * 4 + 2,
        "{on_first} of 40 on shard 0"
    );
    drop(held);
}

#[test]
fn a_stale_id_never_reaches_a_reused_slot() {
    let server = Reactor::<Session>::new(reactor_cfg(1)).expect("server");
    let events = server.events();
    let addr = server
        .listen(any_port(), |peer, t| Session::new(echo_cfg(), peer, t))
        .expect("listen");
    let first = connect(addr);
    let (old, _) = wait_event(&events, |_, ev| matches!(ev, NetEvent::Accepted { .. }));
    drop(first);
    wait_event(&events, |id, ev| id == old && *ev == NetEvent::Finished);

    let mut second = connect(addr);
    let (new, _) = wait_event(&events, |_, ev| matches!(ev, NetEvent::Accepted { .. }));
    assert_ne!(old, new);
    let stale_ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stale_ran);
    server
        .exec(old, move |s| {
            flag.store(true, Ordering::SeqCst);
            let _ = s.send(&data_pdu(1, b"stale"));
        })
        .expect("exec");
    // Same shard, so the commands run in order: once the fresh one's PDU
    // arrives, the stale one has been looked at (and dropped).
    let fresh = data_pdu(2, b"fresh");
    let expected = fresh.to_bytes();
    server
        .exec(new, move |s| {
            let _ = s.send(&fresh);
        })
        .expect("exec");
    assert_eq!(read_n(&mut second, expected.len()), expected);
    assert!(!stale_ran.load(Ordering::SeqCst));
}

#[test]
fn shutdown_flushes_what_is_queued() {
    const PDUS: usize = 2000;
    let server = Reactor::<Session>::new(ReactorConfig {
        shutdown_grace: PATIENCE,
        ..reactor_cfg(1)
    })
    .expect("server");
    let events = server.events();
    let addr = server
        .listen(any_port(), |peer, t| Session::new(echo_cfg(), peer, t))
        .expect("listen");
    let mut client = connect(addr);
    let (id, _) = wait_event(&events, |_, ev| matches!(ev, NetEvent::Accepted { .. }));
    let pdu = Pdu::new(Command::MsgData.key(), 3, Bytes::from(vec![7u8; 1000]));
    let wire = pdu.to_bytes();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    server
        .exec(id, move |s| {
            for _ in 0..PDUS {
                s.send(&pdu).expect("under the cap");
            }
            let _ = done_tx.send(());
        })
        .expect("exec");
    done_rx.recv_timeout(PATIENCE).expect("sent");
    // Shut down while most of it is still queued; the client reads
    // everything, then sees the close.
    let stopper = std::thread::spawn(move || server.shutdown());
    let mut all = Vec::new();
    client.read_to_end(&mut all).expect("read to EOF");
    stopper.join().expect("shutdown");
    assert_eq!(all.len(), PDUS * wire.len());
    assert!(all.chunks(wire.len()).all(|c| c == &wire[..]));
}

/// One scenario, both drivers: a link connects to a server-peer session,
/// sends three PDUs, gets them echoed by the application, and closes.
#[cfg(feature = "tokio")]
mod both_drivers {
    use teamtalk_net::tokio::{DriveConfig, Driver, drive};
    use tokio::sync::mpsc;

    use super::*;

    fn describe_link(ev: &LinkEvent) -> String {
        match ev {
            LinkEvent::Pdu(p) => format!("Pdu({})", p.seq()),
            other => format!("{other:?}"),
        }
    }

    fn describe_session(ev: &NetEvent<SessionEvent>) -> String {
        match ev {
            NetEvent::Accepted { .. } => "Accepted".to_owned(),
            NetEvent::Machine(SessionEvent::Pdu(p)) => format!("Pdu({})", p.seq()),
            NetEvent::Machine(e) => format!("{e:?}"),
            other => format!("{other:?}"),
        }
    }

    fn expected() -> (Vec<String>, Vec<String>) {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        (
            s(&[
                "Up",
                "Pdu(1)",
                "Pdu(2)",
                "Pdu(3)",
                "Down(Local)",
                "Finished",
            ]),
            s(&[
                "Accepted",
                "Pdu(1)",
                "Pdu(2)",
                "Pdu(3)",
                "Closed(PeerClosed)",
                "Finished",
            ]),
        )
    }

    fn blocking() -> (Vec<String>, Vec<String>) {
        let server = Reactor::<Session>::new(reactor_cfg(2)).expect("server");
        let (handle, server_events) = (server.handle(), server.events());
        let addr = server
            .listen(any_port(), |peer, t| {
                Session::new(SessionConfig::server_peer(), peer, t)
            })
            .expect("listen");
        let app = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Ok((id, ev)) = server_events.recv_timeout(PATIENCE) {
                seen.push(describe_session(&ev));
                if let NetEvent::Machine(SessionEvent::Pdu(pdu)) = ev {
                    handle
                        .exec(id, move |s| s.send(&pdu).expect("echo"))
                        .expect("exec");
                } else if ev == NetEvent::Finished {
                    break;
                }
            }
            seen
        });

        let client = Reactor::<Link>::new(reactor_cfg(1)).expect("client");
        let events = client.events();
        let link = client.open(Link::new(link_cfg(addr), now())).expect("open");
        let mut seen = Vec::new();
        let mut echoed = 0;
        while let Ok((id, ev)) = events.recv_timeout(PATIENCE) {
            assert_eq!(id, link);
            match ev {
                NetEvent::Machine(e) => {
                    seen.push(describe_link(&e));
                    match e {
                        LinkEvent::Up => client
                            .exec(link, |l| {
                                for seq in 1..=3 {
                                    l.send(&data_pdu(seq, b"ping")).expect("send");
                                }
                            })
                            .expect("exec"),
                        LinkEvent::Pdu(_) => {
                            echoed += 1;
                            if echoed == 3 {
                                client.exec(link, Link::close).expect("exec");
                            }
                        }
                        _ => {}
                    }
                }
                NetEvent::Finished => {
                    seen.push("Finished".to_owned());
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (seen, app.join().expect("app"))
    }

    async fn with_tokio() -> (Vec<String>, Vec<String>) {
        let (server, mut server_events) = Driver::<Session>::new(DriveConfig::default());
        let addr = server
            .listen(any_port(), |peer, t| {
                Session::new(SessionConfig::server_peer(), peer, t)
            })
            .expect("listen");
        let app = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((id, ev)) = server_events.recv().await {
                seen.push(describe_session(&ev));
                if let NetEvent::Machine(SessionEvent::Pdu(pdu)) = ev {
                    server
                        .exec(id, move |s| s.send(&pdu).expect("echo"))
                        .expect("exec");
                } else if ev == NetEvent::Finished {
                    break;
                }
            }
            seen
        });

        // The client side uses the bare `drive` loop.
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (ev_tx, mut ev_rx) = mpsc::channel(16);
        let task = tokio::spawn(drive(Link::new(link_cfg(addr), now()), None, cmd_rx, ev_tx));
        let mut seen = Vec::new();
        let mut echoed = 0;
        while let Some(e) = ev_rx.recv().await {
            seen.push(describe_link(&e));
            match e {
                LinkEvent::Up => {
                    let send: teamtalk_net::tokio::Command<Link> = Box::new(|l| {
                        for seq in 1..=3 {
                            l.send(&data_pdu(seq, b"ping")).expect("send");
                        }
                    });
                    assert!(cmd_tx.send(send).await.is_ok(), "command taken");
                }
                LinkEvent::Pdu(_) => {
                    echoed += 1;
                    if echoed == 3 {
                        let close: teamtalk_net::tokio::Command<Link> = Box::new(Link::close);
                        assert!(cmd_tx.send(close).await.is_ok(), "close taken");
                    }
                }
                _ => {}
            }
        }
        task.await.expect("drive");
        seen.push("Finished".to_owned());
        (seen, app.await.expect("app"))
    }

    #[test]
    fn the_tokio_driver_enforces_the_per_source_limit_too() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (server, mut events) = Driver::<Session>::new(DriveConfig::default());
        let opts = ListenOptions {
            max_per_source: Some(2),
            ..ListenOptions::default()
        };
        let addr = {
            let _in_runtime = rt.enter();
            server
                .listen_with(any_port(), opts, |peer, t| {
                    Session::new(echo_cfg(), peer, t)
                })
                .expect("listen")
        };
        // Nobody needs the events; keep the channel open and drained.
        rt.spawn(async move { while events.recv().await.is_some() {} });
        per_source_scenario(addr, &|| server.stats());
    }

    #[test]
    fn the_same_scenario_gives_the_same_events() {
        let blocking = blocking();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let tokio = rt.block_on(async {
            tokio::time::timeout(PATIENCE, with_tokio())
                .await
                .expect("tokio scenario in time")
        });
        assert_eq!(blocking, expected());
        assert_eq!(tokio, blocking);
    }
}
