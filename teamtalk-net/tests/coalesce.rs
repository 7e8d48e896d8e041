//! Everything a round queues for one socket goes out in one write: ten
//! separate commands that each send one PDU on the same connection, issued
//! together, cost one system call (`StatsSnapshot::writes`), not ten.

mod support;
use support::{PATIENCE, now};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_conn::{Session, SessionConfig, SessionEvent};
use teamtalk_net::{EventRx, Handle, NetEvent, Pump, Pumped, Reactor, ReactorConfig};
use teamtalk_proto::{Command, Pdu};

const COPIES: usize = 10;

/// Answers every PDU with [`COPIES`] copies, each from a command of its
/// own, all issued in one pump call (so the shard applies them in one
/// round).
struct Copier {
    events: EventRx<SessionEvent>,
    net: Handle<Session>,
}

impl Pump for Copier {
    fn pump(&mut self, _now: Instant) -> Pumped {
        while let Ok((id, ev)) = self.events.try_recv() {
            if let NetEvent::Machine(SessionEvent::Pdu(pdu)) = ev {
                for _ in 0..COPIES {
                    let pdu = pdu.clone();
                    self.net
                        .exec(id, move |s: &mut Session| {
                            let _ = s.send(&pdu);
                        })
                        .expect("reactor runs");
                }
            }
        }
        Pumped::Idle(None)
    }
}

#[test]
fn a_rounds_pdus_for_one_socket_go_out_in_one_write() {
    let reactor = Reactor::<Session>::new(ReactorConfig {
        threads: 1,
        ..ReactorConfig::default()
    })
    .expect("reactor");
    let addr = reactor
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)), |peer, t| {
            let mut cfg = SessionConfig::client();
            cfg.login_timeout = None;
            Session::new(cfg, peer, t)
        })
        .expect("listen");
    let handle = reactor.handle();
    handle
        .set_pump(Box::new(Copier {
            events: reactor.events(),
            net: reactor.handle(),
        }))
        .expect("one shard");

    let mut client = TcpStream::connect(addr).expect("connect");
    client
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let pdu = Pdu::new(Command::MsgData.key(), 7, Bytes::from_static(b"hello"));
    let bytes = pdu.to_bytes();
    client.write_all(&bytes).expect("write");
    let mut back = vec![0; bytes.len() * COPIES];
    client.read_exact(&mut back).expect("all copies");
    for copy in back.chunks(bytes.len()) {
        assert_eq!(copy, &bytes[..]);
    }

    // The counters are published when the round ends, right after its
    // flush; the copies may arrive a moment before.
    let deadline = now() + PATIENCE;
    while handle.stats().writes == 0 {
        assert!(now() < deadline, "no write counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let stats = handle.stats();
    assert_eq!(
        stats.writes, 1,
        "{COPIES} PDUs queued in one round should cost one write"
    );
    assert_eq!(stats.bytes_out, (bytes.len() * COPIES) as u64);
    reactor.shutdown();
}
