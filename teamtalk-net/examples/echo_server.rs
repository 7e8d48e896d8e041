//! A heartbeat-echo server on the blocking reactor, built on `Session`.
//!
//! Heartbeats are echoed by the session itself (as msg_server does for
//! clients); every other PDU is echoed by the application through
//! `Handle::exec`, batched per connection. It is also the server half of
//! the echo benchmark (`echo_load`) and of `link_ping`.
//!
//! ```text
//! cargo run --release -p teamtalk-net --example echo_server -- [addr] [shard threads] [app threads]
//! ```
//! Defaults: `127.0.0.1:8008`, one shard per core, one app thread. Prints
//! the reactor's counters every second.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use teamtalk_conn::{Session, SessionConfig, SessionEvent};
use teamtalk_net::{ConnId, NetEvent, Reactor, ReactorConfig, raise_fd_limit};
use teamtalk_proto::Pdu;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8008").parse()?;
    let defaults = ReactorConfig::default();
    let threads = args.next().map_or(Ok(defaults.threads), |s| s.parse())?;
    let app_threads: usize = args.next().map_or(Ok(1), |s| s.parse())?;
    let fds = raise_fd_limit()?;

    let reactor = Reactor::<Session>::new(ReactorConfig {
        threads,
        ..defaults
    })?;
    // A client-style session without the login gate: it echoes
    // heartbeats and allows 120 s of silence.
    let mut cfg = SessionConfig::client();
    cfg.login_timeout = None;
    let local = reactor.listen(addr, move |peer, now| Session::new(cfg.clone(), peer, now))?;
    println!(
        "echo_server on {local}: {threads} shard threads, {app_threads} app threads, fd limit {fds}"
    );

    for _ in 0..app_threads {
        let (handle, events) = (reactor.handle(), reactor.events());
        std::thread::spawn(move || {
            let mut batch: HashMap<ConnId, Vec<Pdu>> = HashMap::new();
            while let Ok(first) = events.recv() {
                // Take whatever else is already waiting, so one command
                // carries many PDUs to the same connection.
                for (id, ev) in std::iter::once(first).chain(events.try_iter().take(4095)) {
                    if let NetEvent::Machine(SessionEvent::Pdu(pdu)) = ev {
                        batch.entry(id).or_default().push(pdu);
                    }
                }
                for (id, pdus) in batch.drain() {
                    // A send error closes the session; nothing to do here.
                    let _ = handle.exec(id, move |s| {
                        for p in &pdus {
                            if s.send(p).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
    }

    let mut last = reactor.stats();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = reactor.stats();
        println!(
            "open {:6}  accepted {:7}  refused {:4}  in {:8.1} MB/s  out {:8.1} MB/s  queued {} B",
            s.open,
            s.accepted,
            s.refused_over_limit,
            (s.bytes_in - last.bytes_in) as f64 / 1e6,
            (s.bytes_out - last.bytes_out) as f64 / 1e6,
            s.queued_bytes,
        );
        last = s;
    }
}
