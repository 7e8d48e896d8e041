//! Slow HTTP clients against login_server's `/msg_server` and the admin
//! port: they are cut off by the HTTP layer's deadlines and per-source
//! caps, and never keep another client from being answered.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use common::*;
use socket2::{Domain, Socket, Type};

/// A connection from `source` (any 127.x address: all loopback on Linux).
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddrV4::new(source, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// One whole `GET path` from `source`: the status line, or an error.
fn get_from(source: Ipv4Addr, to: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = connect_from(source, to)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Opens `n` connections from 127.0.0.1 that send the start of a request
/// and then one header line every 2 s, as in the finding; they are kept in
/// the returned vector (dropped when the test ends).
fn slowloris(to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = connect_from(Ipv4Addr::LOCALHOST, to) {
            let _ = s.write_all(b"GET /msg_server HTTP/1.1\r\n");
            held.push(s);
        }
    }
    held
}

#[test]
fn slow_clients_never_keep_others_from_the_msg_server_answer() {
    let w = world();
    let http = w.sys.http_addr();
    let mut held = slowloris(http, 300);
    // A client from elsewhere is answered at once, again and again.
    for _ in 0..3 {
        let status = get_from(Ipv4Addr::new(127, 0, 0, 2), http, "/msg_server")
            .expect("answered despite 300 slow clients");
        assert_eq!(status, "HTTP/1.1 200 OK");
        for s in &mut held {
            let _ = s.write_all(b"X-Slow: 1\r\n");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn idle_admin_connections_never_stall_healthz() {
    let w = world();
    let admin = w.sys.admin_addr().expect("admin port");
    // Healthy first (every link up: file_server's may come a moment after
    // the msg_servers registered), so the answer below is about the idle
    // connections only.
    let deadline = daemons::clock::now() + Duration::from_secs(20);
    while get_from(Ipv4Addr::LOCALHOST, admin, "/healthz")
        .ok()
        .as_deref()
        != Some("HTTP/1.1 200 OK")
    {
        assert!(daemons::clock::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _idle: Vec<TcpStream> = (0..6)
        .filter_map(|_| connect_from(Ipv4Addr::LOCALHOST, admin).ok())
        .collect();
    let started = daemons::clock::now();
    let status = get_from(Ipv4Addr::LOCALHOST, admin, "/healthz").expect("answered");
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Not a timing assertion about speed: the finding was a 12 s stall;
    // anything under the 5 s read timeout above proves it gone.
    assert!(started.elapsed() < Duration::from_secs(5));
}
