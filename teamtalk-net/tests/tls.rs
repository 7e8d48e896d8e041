//! TLS over real sockets on 127.0.0.1 (port 0): `Tls<Session>` servers
//! and `Tls<Link>` clients under the blocking reactor and the tokio
//! adapter. The drivers know nothing of TLS: they move the wrapper's
//! encrypted bytes like any other machine's.
//!
//! Every wait has a generous timeout and every assertion is about what
//! happened, never about how long it took.

mod support;
use support::{PATIENCE, any_port, now, wait_event};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_conn::tls::rustls::pki_types::ServerName;
use teamtalk_conn::tls::testing::TestPki;
use teamtalk_conn::{
    Backoff, CloseReason, Link, LinkConfig, LinkEvent, Session, SessionConfig, SessionEvent, Tls,
    TlsError,
};
use teamtalk_net::{NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::{Command, Pdu};

/// `unknown_ca`: the alert a client sends when it does not trust the
/// server's issuer.
const UNKNOWN_CA: u8 = 48;

fn reactor_cfg() -> ReactorConfig {
    ReactorConfig {
        threads: 1,
        close_linger: Duration::from_millis(200),
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

fn pdu(seq: u16, body: Bytes) -> Pdu {
    Pdu::new(Command::MsgData.key(), seq, body)
}

fn other_pki() -> &'static TestPki {
    static OTHER: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    OTHER.get_or_init(TestPki::generate)
}

/// A TLS server-peer session of the shared PKI, for a listener factory.
fn tls_server_peer() -> impl Fn(SocketAddr, Instant) -> Tls<Session> + Send + 'static {
    let config = TestPki::shared().server_config(false);
    move |peer, t| {
        Tls::server(
            Arc::clone(&config),
            Session::new(SessionConfig::server_peer(), peer, t),
            t,
        )
    }
}

/// A TLS link to `addr` (by IP: the server certificate names 127.0.0.1)
/// trusting `trust`'s CA.
fn tls_link(addr: SocketAddr, trust: &TestPki) -> Tls<Link> {
    let name = ServerName::from(addr.ip());
    Tls::client(
        trust.client_config(trust, false),
        name,
        Link::new(link_cfg(addr), now()),
        now(),
    )
}

#[test]
fn tls_link_and_tls_session_exchange_pdus_up_to_one_mebibyte() {
    let server = Reactor::<Tls<Session>>::new(reactor_cfg()).expect("server");
    let (handle, server_events) = (server.handle(), server.events());
    let addr = server
        .listen(any_port(), tls_server_peer())
        .expect("listen");
    // The server application echoes every PDU.
    let app = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Ok((id, ev)) = server_events.recv_timeout(PATIENCE) {
            match ev {
                NetEvent::Machine(SessionEvent::Pdu(p)) => {
                    seen.push(p.seq());
                    handle
                        .exec(id, move |s| s.send(&p).expect("echo"))
                        .expect("exec");
                }
                NetEvent::Machine(SessionEvent::Closed(reason)) => {
                    return (seen, reason);
                }
                _ => {}
            }
        }
        panic!("the server session never closed");
    });

    let client = Reactor::<Tls<Link>>::new(reactor_cfg()).expect("client");
    let events = client.events();
    let link = client
        .open(tls_link(addr, TestPki::shared()))
        .expect("open");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Up)
    });
    let big = pdu(3, Bytes::from(vec![0xa5; (1 << 20) - 16]));
    let sent = [
        pdu(1, Bytes::from_static(b"small")),
        pdu(2, Bytes::from(vec![7; 100_000])),
        big,
    ];
    let to_send = sent.clone();
    client
        .exec(link, move |l| {
            for p in &to_send {
                l.send(p).expect("send");
            }
        })
        .expect("exec");
    let mut echoed = Vec::new();
    while echoed.len() < sent.len() {
        let (_, ev) = wait_event(&events, |id, ev| {
            id == link && matches!(ev, NetEvent::Machine(LinkEvent::Pdu(_)))
        });
        if let NetEvent::Machine(LinkEvent::Pdu(p)) = ev {
            echoed.push(p);
        }
    }
    assert_eq!(echoed, sent);

    // A local close: close_notify, then the socket; the server sees the
    // close_notify as the peer closing.
    client.exec(link, |l| l.close()).expect("exec");
    wait_event(&events, |id, ev| {
        id == link && *ev == NetEvent::Machine(LinkEvent::Down(CloseReason::Local))
    });
    let (seen, reason) = app.join().expect("app");
    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(reason, CloseReason::PeerClosed);
    client.shutdown();
    server.shutdown();
}

#[test]
fn a_link_that_does_not_trust_the_server_is_refused_on_both_sides() {
    let server = Reactor::<Tls<Session>>::new(reactor_cfg()).expect("server");
    let server_events = server.events();
    let addr = server
        .listen(any_port(), tls_server_peer())
        .expect("listen");
    let client = Reactor::<Tls<Link>>::new(reactor_cfg()).expect("client");
    let events = client.events();
    let link = client.open(tls_link(addr, other_pki())).expect("open");
    let (_, ev) = wait_event(&events, |id, ev| {
        id == link && matches!(ev, NetEvent::Machine(LinkEvent::Unreachable(_)))
    });
    assert_eq!(
        ev,
        NetEvent::Machine(LinkEvent::Unreachable(CloseReason::Tls(
            TlsError::BadCertificate
        )))
    );
    let (_, ev) = wait_event(&server_events, |_, ev| {
        matches!(ev, NetEvent::Machine(SessionEvent::Closed(_)))
    });
    assert_eq!(
        ev,
        NetEvent::Machine(SessionEvent::Closed(CloseReason::Tls(TlsError::Alert(
            UNKNOWN_CA
        ))))
    );
    client.shutdown();
    server.shutdown();
}

#[test]
fn plaintext_and_silent_clients_on_a_tls_port_are_closed() {
    let server = Reactor::<Tls<Session>>::new(reactor_cfg()).expect("server");
    let server_events = server.events();
    let config = TestPki::shared().server_config(false);
    let addr = server
        .listen(any_port(), move |peer, t| {
            Tls::server(
                Arc::clone(&config),
                Session::new(SessionConfig::client(), peer, t),
                t,
            )
            .with_handshake_timeout(Duration::from_millis(300))
        })
        .expect("listen");

    // A TeamTalk client speaking plaintext: one TLS alert back, then EOF.
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let login = Pdu::new(
        Command::LoginReqUserlogin.key(),
        1,
        Bytes::from_static(b"\x0a\x05alice"),
    );
    plain.write_all(&login.to_bytes()).expect("write");
    let mut back = Vec::new();
    let _ = plain.read_to_end(&mut back);
    assert_eq!(back.first(), Some(&0x15), "a TLS alert record: {back:?}");
    let (_, ev) = wait_event(&server_events, |_, ev| {
        matches!(ev, NetEvent::Machine(SessionEvent::Closed(_)))
    });
    assert_eq!(
        ev,
        NetEvent::Machine(SessionEvent::Closed(CloseReason::Tls(TlsError::NotTls)))
    );

    // A client that connects and never says anything: closed at the
    // handshake deadline.
    let mut silent = TcpStream::connect(addr).expect("connect");
    silent.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut back = Vec::new();
    let _ = silent.read_to_end(&mut back);
    assert!(back.is_empty(), "nothing sent to a silent client: {back:?}");
    let (_, ev) = wait_event(&server_events, |_, ev| {
        matches!(ev, NetEvent::Machine(SessionEvent::Closed(_)))
    });
    assert_eq!(
        ev,
        NetEvent::Machine(SessionEvent::Closed(CloseReason::Tls(
            TlsError::HandshakeTimedOut
        )))
    );
    server.shutdown();
}

/// The same exchange with the tokio adapter on both sides: a
/// `Driver<Tls<Session>>` echoing, and a bare `drive` loop for the link.
#[cfg(feature = "tokio")]
#[test]
fn the_tokio_adapter_runs_tls_machines_too() {
    use teamtalk_net::tokio::{Command as Cmd, DriveConfig, Driver, drive};
    use tokio::sync::mpsc;

    async fn scenario() -> (Vec<Pdu>, CloseReason) {
        let (server, mut server_events) = Driver::<Tls<Session>>::new(DriveConfig::default());
        let addr = server
            .listen(any_port(), tls_server_peer())
            .expect("listen");
        let app = tokio::spawn(async move {
            while let Some((id, ev)) = server_events.recv().await {
                match ev {
                    NetEvent::Machine(SessionEvent::Pdu(p)) => server
                        .exec(id, move |s| s.send(&p).expect("echo"))
                        .expect("exec"),
                    NetEvent::Machine(SessionEvent::Closed(reason)) => return reason,
                    _ => {}
                }
            }
            panic!("the server session never closed");
        });

        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (ev_tx, mut ev_rx) = mpsc::channel(16);
        let task = tokio::spawn(drive(
            tls_link(addr, TestPki::shared()),
            None,
            cmd_rx,
            ev_tx,
        ));
        let sent = vec![
            pdu(1, Bytes::from_static(b"ping")),
            pdu(2, Bytes::from(vec![9; (1 << 20) - 16])),
        ];
        let mut echoed = Vec::new();
        while let Some(e) = ev_rx.recv().await {
            match e {
                LinkEvent::Up => {
                    let to_send = sent.clone();
                    let send: Cmd<Tls<Link>> = Box::new(move |l| {
                        for p in &to_send {
                            l.send(p).expect("send");
                        }
                    });
                    assert!(cmd_tx.send(send).await.is_ok(), "command taken");
                }
                LinkEvent::Pdu(p) => {
                    echoed.push(p);
                    if echoed.len() == sent.len() {
                        let close: Cmd<Tls<Link>> = Box::new(|l| l.close());
                        assert!(cmd_tx.send(close).await.is_ok(), "close taken");
                    }
                }
                other => assert_eq!(other, LinkEvent::Down(CloseReason::Local)),
            }
        }
        task.await.expect("drive");
        assert_eq!(echoed, sent);
        (echoed, app.await.expect("app"))
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (echoed, reason) = rt.block_on(async {
        tokio::time::timeout(PATIENCE, scenario())
            .await
            .expect("tokio scenario in time")
    });
    assert_eq!(echoed.len(), 2);
    assert_eq!(reason, CloseReason::PeerClosed);
}
