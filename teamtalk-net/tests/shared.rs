//! Reactors on one `SharedThread`: each keeps its sockets, timers and
//! pump, all run on the one thread, a link between them works as between
//! reactors on threads of their own, and one shutting down leaves the
//! others running.

mod support;
use support::{now, wait_event, wait_until};

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_conn::{Backoff, Link, LinkConfig, LinkEvent, Session, SessionConfig, SessionEvent};
use teamtalk_net::{LocalNet, NetEvent, Pump, Pumped, Reactor, ReactorConfig, SharedThread};
use teamtalk_proto::{Command, Pdu};

fn cfg(net: &Arc<LocalNet>, thread: &SharedThread) -> ReactorConfig {
    ReactorConfig {
        threads: 1,
        close_linger: Duration::from_millis(200),
        local_net: Some(Arc::clone(net)),
        thread: Some(thread.clone()),
        ..ReactorConfig::default()
    }
}

fn serve(cfg: ReactorConfig, addr: SocketAddr) -> Option<(Reactor<Session>, SocketAddr)> {
    let server = Reactor::<Session>::new(cfg).expect("server");
    let bound = server
        .listen(addr, |peer, t| {
            Session::new(SessionConfig::server_peer(), peer, t)
        })
        .ok()?;
    Some((server, bound))
}

/// Records the threads it was called on.
struct Threads(Arc<Mutex<Vec<ThreadId>>>);

impl Pump for Threads {
    fn pump(&mut self, _now: Instant) -> Pumped {
        let me = std::thread::current().id();
        let mut seen = self.0.lock().expect("not poisoned");
        if !seen.contains(&me) {
            seen.push(me);
        }
        Pumped::Idle(None)
    }
}

#[test]
fn reactors_on_one_thread_link_up_and_answer_each_other() {
    let net = Arc::new(LocalNet::new());
    let thread = SharedThread::new("shared-test").expect("thread");
    let (server, addr) =
        serve(cfg(&net, &thread), SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
    let server_events = server.events();
    let client = Reactor::<Link>::new(cfg(&net, &thread)).expect("client");
    let events = client.events();

    let threads = Arc::new(Mutex::new(Vec::new()));
    for handle_pump in [
        server
            .handle()
            .set_pump(Box::new(Threads(Arc::clone(&threads)))),
        client
            .handle()
            .set_pump(Box::new(Threads(Arc::clone(&threads)))),
    ] {
        handle_pump.expect("one shard each");
    }

    let link = client
        .open(Link::new(LinkConfig::new(addr), now()))
        .expect("open");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });
    assert_eq!(net.connections(), 1, "the link is in-process");

    let pdu = Pdu::new(Command::MsgData.key(), 7, Bytes::from_static(b"there"));
    client
        .handle()
        .exec(link, move |l: &mut Link| {
            l.send(&pdu).expect("link up");
        })
        .expect("client runs");
    let (session, _) = wait_event(
        &server_events,
        |_, ev| matches!(ev, NetEvent::Machine(SessionEvent::Pdu(p)) if p.body == Bytes::from_static(b"there")),
    );
    let reply = Pdu::new(Command::MsgData.key(), 8, Bytes::from_static(b"back"));
    server
        .handle()
        .exec(session, move |s: &mut Session| {
            let _ = s.send(&reply);
        })
        .expect("server runs");
    wait_event(&events, |id, ev| {
        id == link
            && matches!(ev, NetEvent::Machine(LinkEvent::Pdu(p)) if p.body == Bytes::from_static(b"back"))
    });

    let seen = threads.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 1, "both pumps ran on one thread: {seen:?}");
    assert_ne!(seen[0], std::thread::current().id());
}

#[test]
fn one_reactor_stopping_leaves_the_others_running() {
    let net = Arc::new(LocalNet::new());
    let thread = SharedThread::new("shared-test").expect("thread");
    let (server, addr) =
        serve(cfg(&net, &thread), SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
    let client = Reactor::<Link>::new(cfg(&net, &thread)).expect("client");
    let events = client.events();
    let link = client
        .open(Link::new(
            LinkConfig::new(addr).with_backoff(Backoff::exponential(
                Duration::from_millis(20),
                Duration::from_millis(200),
                7,
            )),
            now(),
        ))
        .expect("open");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });

    // The server goes: the client, on the same thread, sees its link drop
    // and keeps retrying on its backoff timer.
    server.shutdown();
    wait_event(&events, |id, ev| {
        id == link && matches!(ev, NetEvent::Machine(LinkEvent::Down(_)))
    });

    // A new server on the same thread and address: the link's timer
    // fires and it comes up again.
    let mut restarted = None;
    wait_until("the port to be free again", || {
        restarted = serve(cfg(&net, &thread), addr);
        restarted.is_some()
    });
    let (restarted, _) = restarted.expect("listening");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });

    // The client goes; the server still takes connections.
    client.shutdown();
    let before = restarted.stats().accepted;
    let _tcp = TcpStream::connect(addr).expect("tcp connect");
    wait_until("the TCP connection to be accepted", || {
        restarted.stats().accepted > before
    });
}
