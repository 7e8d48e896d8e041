//! Reactors sharing a `LocalNet`: a link to a listener of the same
//! process goes over a socket pair, not TCP; the listener still takes TCP
//! from everyone else; and a connect to an address no live reactor of the
//! registry listens on is TCP again.

mod support;
use support::{now, wait_event, wait_until};

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_conn::{Backoff, Link, LinkConfig, LinkEvent, Session, SessionConfig, SessionEvent};
use teamtalk_net::{ConnId, EventRx, LocalNet, NetEvent, Pump, Pumped, Reactor, ReactorConfig};
use teamtalk_proto::{Command, Pdu};

fn cfg(net: Option<&Arc<LocalNet>>) -> ReactorConfig {
    ReactorConfig {
        threads: 1,
        close_linger: Duration::from_millis(200),
        local_net: net.cloned(),
        ..ReactorConfig::default()
    }
}

fn link_cfg(addr: SocketAddr) -> LinkConfig {
    LinkConfig::new(addr).with_backoff(Backoff::exponential(
        Duration::from_millis(20),
        Duration::from_millis(200),
        7,
    ))
}

fn serve(net: Option<&Arc<LocalNet>>, addr: SocketAddr) -> Option<(Reactor<Session>, SocketAddr)> {
    let server = Reactor::<Session>::new(cfg(net)).expect("server");
    let bound = server
        .listen(addr, |peer, t| {
            Session::new(SessionConfig::server_peer(), peer, t)
        })
        .ok()?;
    Some((server, bound))
}

/// A reactor on `net` with a link to `addr`, once the link is up.
fn link_up(net: &Arc<LocalNet>, addr: SocketAddr) -> (Reactor<Link>, EventRx<LinkEvent>, ConnId) {
    let client = Reactor::<Link>::new(cfg(Some(net))).expect("client");
    let events = client.events();
    let link = client.open(Link::new(link_cfg(addr), now())).expect("open");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });
    (client, events, link)
}

#[test]
fn a_link_to_a_listener_of_the_same_process_goes_in_process() {
    let net = Arc::new(LocalNet::new());
    let (server, addr) = serve(Some(&net), SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
    assert!(net.listens_on(addr));
    let server_events = server.events();

    let (client, events, link) = link_up(&net, addr);
    assert_eq!(net.connections(), 1);

    // Accepted from the listener's own IP, port 0: an in-process peer.
    let (_, accepted) = wait_event(&server_events, |_, ev| {
        matches!(ev, NetEvent::Accepted { .. })
    });
    let NetEvent::Accepted { peer, local } = accepted else {
        unreachable!("matched above")
    };
    assert_eq!(peer, SocketAddr::new(addr.ip(), 0));
    assert_eq!(local, addr);

    // PDUs both ways: the link's reaches the session, and the session's
    // answer comes back on the link.
    let pdu = Pdu::new(Command::MsgData.key(), 9, Bytes::from_static(b"in-process"));
    let sent = pdu.clone();
    client
        .handle()
        .exec(link, move |l: &mut Link| {
            l.send(&sent).expect("link up");
        })
        .expect("client runs");
    let (session, got) = wait_event(&server_events, |_, ev| {
        matches!(ev, NetEvent::Machine(SessionEvent::Pdu(_)))
    });
    let NetEvent::Machine(SessionEvent::Pdu(got)) = got else {
        unreachable!("matched above")
    };
    assert_eq!(got.body, pdu.body);
    let reply = Pdu::new(Command::MsgData.key(), 10, Bytes::from_static(b"back"));
    server
        .handle()
        .exec(session, move |s: &mut Session| {
            let _ = s.send(&reply);
        })
        .expect("server runs");
    let (_, back) = wait_event(&events, |id, ev| {
        id == link && matches!(ev, NetEvent::Machine(LinkEvent::Pdu(_)))
    });
    let NetEvent::Machine(LinkEvent::Pdu(back)) = back else {
        unreachable!("matched above")
    };
    assert_eq!(back.body, Bytes::from_static(b"back"));
    assert!(server.stats().bytes_in > 0 && server.stats().bytes_out > 0);

    // Everyone else still reaches the listener over TCP.
    let _tcp = TcpStream::connect(addr).expect("tcp connect");
    wait_until("the TCP connection to be accepted", || {
        server.stats().accepted >= 2
    });
    assert_eq!(net.connections(), 1);
}

#[test]
fn after_the_listener_stops_the_link_reconnects_over_tcp() {
    let net = Arc::new(LocalNet::new());
    let (server, addr) = serve(Some(&net), SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
    let (_client, events, link) = link_up(&net, addr);
    assert_eq!(net.connections(), 1);

    server.shutdown();
    wait_event(&events, |id, ev| {
        id == link && matches!(ev, NetEvent::Machine(LinkEvent::Down(_)))
    });

    // The port taken again by a server outside the registry (another
    // process, as far as the link can tell): the stale entry is dropped
    // and the link comes up over TCP.
    let mut restarted = None;
    wait_until("the port to be free again", || {
        restarted = serve(None, addr);
        restarted.is_some()
    });
    let (restarted, _) = restarted.expect("listening");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });
    wait_until("the restarted server to accept", || {
        restarted.stats().accepted >= 1
    });
    assert_eq!(net.connections(), 1, "the second connection is TCP");
    assert!(!net.listens_on(addr));
}

/// Counts the rounds of the shard it runs on.
struct Rounds(Arc<AtomicU64>);

impl Pump for Rounds {
    fn pump(&mut self, _now: Instant) -> Pumped {
        self.0.fetch_add(1, Ordering::SeqCst);
        Pumped::Idle(None)
    }
}

/// A socket pair reports each read of one end as write space on the
/// other; a writer registered for writability all the time would be woken
/// by every read of its peer. It asks for writability only while bytes
/// wait, so sending N PDUs costs its shard about N rounds, not 2N.
#[test]
fn a_writer_is_not_woken_when_its_peer_reads() {
    let net = Arc::new(LocalNet::new());
    let (server, addr) = serve(Some(&net), SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
    let server_events = server.events();
    let (client, _events, link) = link_up(&net, addr);
    let rounds = Arc::new(AtomicU64::new(0));
    client
        .handle()
        .set_pump(Box::new(Rounds(Arc::clone(&rounds))))
        .expect("one shard");
    wait_until("the pump runs", || rounds.load(Ordering::SeqCst) > 0);

    const N: u16 = 200;
    let before = rounds.load(Ordering::SeqCst);
    for seq in 1..=N {
        let pdu = Pdu::new(Command::MsgData.key(), seq, Bytes::from_static(b"x"));
        client
            .handle()
            .exec(link, move |l: &mut Link| {
                l.send(&pdu).expect("link up");
            })
            .expect("client runs");
        // The server has read it before the next one goes.
        wait_event(
            &server_events,
            |_, ev| matches!(ev, NetEvent::Machine(SessionEvent::Pdu(p)) if p.seq() == seq),
        );
    }
    let spent = rounds.load(Ordering::SeqCst) - before;
    assert!(
        spent < u64::from(N) * 3 / 2,
        "{spent} rounds of the writer's shard for {N} PDUs"
    );
}
