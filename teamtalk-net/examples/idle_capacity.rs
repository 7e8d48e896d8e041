//! Idle-connection capacity: how many connections one server process
//! holds, and what each costs in user-space memory.
//!
//! ```text
//! cargo run --release -p teamtalk-net --example idle_capacity -- server 127.0.0.1:8009
//! cargo run --release -p teamtalk-net --example idle_capacity -- client 127.0.0.1:8009 19000
//! ```
//! Both halves raise `RLIMIT_NOFILE` to the hard limit first. The server
//! reads its resident set size (`VmRSS` in `/proc/self/status`) once its
//! shards are up and again whenever the number of open connections has
//! been stable for two seconds, and prints the growth per connection. The
//! client opens its connections one after another (each sends one
//! heartbeat, so every session has handled input once), then holds them
//! for the given number of seconds (default 30).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use teamtalk_conn::{Session, SessionConfig};
use teamtalk_net::{Reactor, ReactorConfig, raise_fd_limit};
use teamtalk_proto::{Command, Pdu};

/// Resident set size of this process in KiB, from `/proc/self/status`.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn server(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let fds = raise_fd_limit()?;
    let reactor = Reactor::<Session>::new(ReactorConfig {
        max_connections: usize::try_from(fds)?.saturating_sub(64),
        ..ReactorConfig::default()
    })?;
    // The application reads (and here ignores) every event, as a daemon
    // would; unread events would pile up in the channel.
    let events = reactor.events();
    std::thread::spawn(move || while events.recv().is_ok() {});
    let mut cfg = SessionConfig::client();
    cfg.login_timeout = None;
    let local = reactor.listen(addr, move |peer, now| Session::new(cfg.clone(), peer, now))?;
    std::thread::sleep(Duration::from_millis(200));
    let base = rss_kib().ok_or("no /proc/self/status")?;
    println!(
        "idle server on {local}, fd limit {fds}, VmRSS {base} KiB at start \
         (size of one Session: {} bytes)",
        std::mem::size_of::<Session>()
    );
    let (mut last_open, mut stable, mut reported) = (0, 0, 0);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = reactor.stats();
        stable = if s.open == last_open { stable + 1 } else { 0 };
        last_open = s.open;
        if stable == 2 && s.open > 0 && s.open != reported {
            reported = s.open;
            let rss = rss_kib().ok_or("no /proc/self/status")?;
            let per_conn = (rss.saturating_sub(base) * 1024) as f64 / s.open as f64;
            println!(
                "open {} (accepted {}, refused {}): VmRSS {rss} KiB, +{} KiB, {per_conn:.0} bytes per connection",
                s.open,
                s.accepted,
                s.refused_over_limit,
                rss.saturating_sub(base)
            );
        }
    }
}

fn client(addr: SocketAddr, n: usize, hold: u64) -> Result<(), Box<dyn std::error::Error>> {
    let fds = raise_fd_limit()?;
    println!("client: fd limit {fds}, opening {n} connections to {addr}");
    let hb = Pdu::new(Command::OtherHeartbeat.key(), 1, Bytes::new()).to_bytes();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                s.write_all(&hb)?;
                held.push(s);
            }
            Err(e) => {
                println!("connection {i} failed: {e}");
                break;
            }
        }
    }
    // Every echo back proves the server serves that connection.
    let mut echoed = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 16];
        if s.read_exact(&mut buf).is_ok() && buf[..] == hb[..] {
            echoed += 1;
        }
    }
    println!(
        "holding {} connections ({echoed} echoed a heartbeat) for {hold} s",
        held.len()
    );
    std::thread::sleep(Duration::from_secs(hold));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args
        .get(1)
        .map_or("127.0.0.1:8009", String::as_str)
        .parse()?;
    match args.first().map(String::as_str) {
        Some("server") => server(addr),
        Some("client") => {
            let n = args.get(2).map_or(Ok(19_000), |s| s.parse())?;
            let hold = args.get(3).map_or(Ok(30), |s| s.parse())?;
            client(addr, n, hold)
        }
        _ => Err(
            "usage: idle_capacity server [addr] | client [addr] [connections] [hold seconds]"
                .into(),
        ),
    }
}
