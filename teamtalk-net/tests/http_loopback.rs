//! teamtalk-conn's `HttpConn` over real sockets on 127.0.0.1: slow clients
//! are cut off at their deadline while others are served, and large
//! responses go out whole through the driver's backlog window, under the
//! blocking reactor and the tokio driver alike.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use teamtalk_conn::http::{HttpCloseReason, HttpConfig, HttpConn, HttpEvent};
use teamtalk_net::{ConnId, ListenOptions, NetEvent, Reactor, ReactorConfig};

const PATIENCE: Duration = Duration::from_secs(30);

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A short header deadline so the slow clients are cut off within a
/// second; the others generous, for a loaded machine.
fn cfg() -> HttpConfig {
    HttpConfig {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        max_tx_bytes: 8 << 20,
        ..HttpConfig::default()
    }
}

/// The application: `/big` gets 7 MiB (more than loopback socket buffers
/// hold, so the driver's queue and the machine's window are exercised),
/// anything else its path back.
fn respond_to(req: &http::Request<Bytes>) -> http::Response<Bytes> {
    if req.uri().path() == "/big" {
        http::Response::new(big_body())
    } else {
        http::Response::new(Bytes::copy_from_slice(req.uri().path().as_bytes()))
    }
}

fn big_body() -> Bytes {
    Bytes::from(
        (0..7u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Reads one response with a `Content-Length` body; returns (head, body).
fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read head"), 1, "EOF in head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("utf-8 head");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().expect("length"));
    let mut body = vec![0; len];
    s.read_exact(&mut body).expect("read body");
    (head, body)
}

/// True once the peer has closed (EOF or reset), after any bytes.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Slow clients each send a header line every 100 ms; meanwhile a normal
/// client is served, a large response is read late but whole, and every
/// slow client gets 408 at its header deadline.
fn scenario(addr: SocketAddr) {
    const SLOW: usize = 20;
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| connect(addr)).collect();
    let started = now();
    for s in &mut slow {
        s.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    }
    // They trickle in the background, well inside their 1 s deadline
    // (writing to a connection the server has closed would reset it).
    let trickle = std::thread::spawn(move || {
        let mut line = 0;
        while now() < started + Duration::from_millis(600) {
            line += 1;
            for s in &mut slow {
                s.write_all(format!("X-{line}: x\r\n").as_bytes())
                    .expect("write");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        slow
    });

    let mut fast = connect(addr);
    fast.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let (head, body) = read_response(&mut fast);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"/hello");

    // A large response, read late: it arrives whole.
    fast.write_all(b"GET /big HTTP/1.1\r\n\r\n").expect("write");
    std::thread::sleep(Duration::from_millis(50));
    let (head, body) = read_response(&mut fast);
    assert!(head.contains("Content-Length: 7340032\r\n"), "{head}");
    assert!(body == big_body(), "large body intact");

    for mut s in trickle.join().expect("trickle") {
        let mut head = [0u8; 28];
        s.read_exact(&mut head).expect("408 status line");
        assert_eq!(&head, b"HTTP/1.1 408 Request Timeout");
        assert!(closed_by_peer(&mut s));
    }
}

/// Answers requests and collects close reasons until the events stop.
fn serve_blocking(
    events: Receiver<(ConnId, NetEvent<HttpEvent>)>,
    handle: teamtalk_net::Handle<HttpConn>,
) -> std::thread::JoinHandle<Vec<HttpCloseReason>> {
    std::thread::spawn(move || {
        let mut closes = Vec::new();
        while let Ok((id, ev)) = events.recv_timeout(Duration::from_secs(3)) {
            match ev {
                NetEvent::Machine(HttpEvent::Request(req)) => {
                    let resp = respond_to(&req);
                    handle
                        .exec(id, move |c| c.respond(resp).expect("respond"))
                        .expect("exec");
                }
                NetEvent::Machine(HttpEvent::Closed(r)) => closes.push(r),
                _ => {}
            }
        }
        closes
    })
}

#[test]
fn slow_clients_are_cut_off_while_others_are_served_by_the_reactor() {
    let reactor = Reactor::<HttpConn>::new(ReactorConfig {
        threads: 2,
        ..ReactorConfig::default()
    })
    .expect("reactor");
    let addr = reactor
        .listen_with(any_port(), ListenOptions::default(), |peer, t| {
            HttpConn::new(cfg(), peer, t)
        })
        .expect("listen");
    let app = serve_blocking(reactor.events(), reactor.handle());
    scenario(addr);
    reactor.shutdown();
    let closes = app.join().expect("app");
    let timed_out = closes
        .iter()
        .filter(|r| **r == HttpCloseReason::HeaderTimedOut)
        .count();
    assert_eq!(timed_out, 20, "{closes:?}");
}

#[cfg(feature = "tokio")]
#[test]
fn slow_clients_are_cut_off_while_others_are_served_by_the_tokio_driver() {
    use teamtalk_net::tokio::{DriveConfig, Driver};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (driver, mut events) = Driver::<HttpConn>::new(DriveConfig::default());
    let addr = {
        let _in_runtime = rt.enter();
        driver
            .listen(any_port(), |peer, t| HttpConn::new(cfg(), peer, t))
            .expect("listen")
    };
    let server = driver.clone();
    let app = rt.spawn(async move {
        let mut timed_out = 0;
        while let Ok(Some((id, ev))) =
            tokio::time::timeout(Duration::from_secs(3), events.recv()).await
        {
            match ev {
                NetEvent::Machine(HttpEvent::Request(req)) => {
                    let resp = respond_to(&req);
                    server
                        .exec(id, move |c| c.respond(resp).expect("respond"))
                        .expect("exec");
                }
                NetEvent::Machine(HttpEvent::Closed(HttpCloseReason::HeaderTimedOut)) => {
                    timed_out += 1;
                }
                _ => {}
            }
        }
        timed_out
    });
    scenario(addr);
    assert_eq!(rt.block_on(app).expect("app"), 20);
}

/// The login_server finding, on the reactor: 300 connections from one
/// address each sending a header line every 100 ms. With a per-source cap
/// of 50 the rest are refused at once; the 50 are cut off with 408 at
/// their header deadline; and clients from another address are served
/// at once all along.
#[test]
fn three_hundred_slowloris_connections_do_not_starve_other_clients() {
    const SLOW: usize = 300;
    const CAP: usize = 50;
    let reactor = Reactor::<HttpConn>::new(ReactorConfig {
        threads: 2,
        ..ReactorConfig::default()
    })
    .expect("reactor");
    let opts = ListenOptions {
        max_per_source: Some(CAP),
        ..ListenOptions::default()
    };
    let addr = reactor
        .listen_with(any_port(), opts, |peer, t| {
            HttpConn::new(
                HttpConfig {
                    header_timeout: Duration::from_secs(2),
                    ..cfg()
                },
                peer,
                t,
            )
        })
        .expect("listen");
    let app = serve_blocking(reactor.events(), reactor.handle());

    let started = now();
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| connect(addr)).collect();
    for s in &mut slow {
        // Refused ones may already be gone: ignore write errors.
        let _ = s.write_all(b"GET /msg_server HTTP/1.1\r\n");
    }
    // Trickle well inside the 2 s deadline (writing to a connection the
    // server has closed would reset it and could swallow its 408).
    for round in 0..5 {
        if now() > started + Duration::from_secs(1) {
            break;
        }
        for s in &mut slow {
            let _ = s.write_all(format!("X-{round}: x\r\n").as_bytes());
        }
        // Another address is served at once, every round.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .expect("bind");
        s.connect(&addr.into()).expect("connect");
        let mut other: TcpStream = s.into();
        other.set_read_timeout(Some(PATIENCE)).expect("timeout");
        other
            .write_all(b"GET /msg_server HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("write");
        let (head, body) = read_response(&mut other);
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n"),
            "round {round}: {head}"
        );
        assert_eq!(body, b"/msg_server");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut timed_out = 0;
    let mut refused = 0;
    for mut s in slow {
        let mut all = Vec::new();
        match s.read_to_end(&mut all) {
            Ok(_) if all.starts_with(b"HTTP/1.1 408 ") => timed_out += 1,
            Ok(_) if all.is_empty() => refused += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
            other => panic!("unexpected end of a slow client: {other:?} {all:?}"),
        }
    }
    assert_eq!((timed_out, refused), (CAP, SLOW - CAP));
    let stats = reactor.stats();
    assert_eq!(stats.refused_per_source, (SLOW - CAP) as u64);
    reactor.shutdown();
    let closes = app.join().expect("app");
    let header_timeouts = closes
        .iter()
        .filter(|r| **r == HttpCloseReason::HeaderTimedOut)
        .count();
    assert_eq!(header_timeouts, CAP);
}
