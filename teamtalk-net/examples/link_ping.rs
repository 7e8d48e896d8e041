//! A `Link` on the blocking reactor that connects to `echo_server`,
//! heartbeats, and sends a ping PDU every second.
//!
//! ```text
//! cargo run -p teamtalk-net --example link_ping -- [addr] [heartbeat ms] [pings]
//! ```
//! Defaults: `127.0.0.1:8008`, 1000 ms, 5 pings. Stop the server and start
//! it again to watch the link go down and reconnect on its backoff.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_conn::{Link, LinkConfig, LinkEvent};
use teamtalk_net::{NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::{Command, Pdu};

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8008").parse()?;
    let heartbeat_ms: u64 = args.next().map_or(Ok(1000), |s| s.parse())?;
    let pings: u16 = args.next().map_or(Ok(5), |s| s.parse())?;

    let reactor = Reactor::<Link>::new(ReactorConfig {
        threads: 1,
        ..ReactorConfig::default()
    })?;
    let mut cfg = LinkConfig::new(addr);
    cfg.heartbeat_interval = Duration::from_millis(heartbeat_ms);
    let link = reactor.open(Link::new(cfg, now()))?;
    let events = reactor.events();

    let mut up = false;
    let mut seq = 0u16;
    let mut answered = 0u16;
    let mut next_ping = now();
    while answered < pings {
        let wait = next_ping.saturating_duration_since(now());
        match events.recv_timeout(wait) {
            Ok((_, NetEvent::Machine(LinkEvent::Pdu(pdu)))) => {
                answered += 1;
                println!("pong {} ({} body bytes)", pdu.seq(), pdu.body.len());
            }
            Ok((_, NetEvent::Machine(ev))) => {
                up = ev == LinkEvent::Up;
                println!("{ev:?}");
            }
            Ok((_, ev)) => println!("{ev:?}"),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(e) => return Err(e.into()),
        }
        if now() >= next_ping {
            next_ping = now() + Duration::from_secs(1);
            if up {
                seq = seq.wrapping_add(1);
                let n = seq;
                let pdu = Pdu::new(Command::MsgData.key(), n, Bytes::from_static(b"ping"));
                reactor.exec(link, move |l| match l.send(&pdu) {
                    Ok(()) => println!("ping {n}"),
                    Err(e) => println!("ping {n} not sent: {e}"),
                })?;
            }
        }
    }
    let stats = reactor.stats();
    println!(
        "done: {} bytes out, {} bytes in (heartbeats included)",
        stats.bytes_out, stats.bytes_in
    );
    Ok(())
}
