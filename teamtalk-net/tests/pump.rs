//! A [`Pump`] on a one-shard reactor: the application's loop runs on the
//! shard thread, takes the events already queued and answers with
//! commands, and other threads reach it with [`Handle::wake`].

mod support;
use support::{PATIENCE, any_port, wait_until};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use teamtalk_conn::{Session, SessionConfig, SessionEvent};
use teamtalk_net::{EventRx, Handle, NetError, NetEvent, Pump, Pumped, Reactor, ReactorConfig};
use teamtalk_proto::{Command, Pdu};

fn one_shard() -> ReactorConfig {
    ReactorConfig {
        threads: 1,
        close_linger: Duration::from_millis(200),
        ..ReactorConfig::default()
    }
}

/// Echoes every PDU from the shard thread; counts what it did; takes
/// numbers from a channel of its own (woken with `Handle::wake`) and adds
/// them up; finishes when told.
struct Echo {
    events: EventRx<SessionEvent>,
    net: Handle<Session>,
    echoed: Arc<AtomicU64>,
    on_shard_thread: Arc<AtomicBool>,
    numbers: Receiver<u64>,
    sum: Arc<AtomicU64>,
    finish: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Pump for Echo {
    fn pump(&mut self, _now: Instant) -> Pumped {
        let name = std::thread::current().name().map(str::to_owned);
        if name.as_deref() == Some("teamtalk-net-0") {
            self.on_shard_thread.store(true, Ordering::SeqCst);
        }
        while let Ok(n) = self.numbers.try_recv() {
            self.sum.fetch_add(n, Ordering::SeqCst);
        }
        while let Ok((id, ev)) = self.events.try_recv() {
            if let NetEvent::Machine(SessionEvent::Pdu(pdu)) = ev {
                self.echoed.fetch_add(1, Ordering::SeqCst);
                self.net
                    .exec(id, move |s: &mut Session| {
                        let _ = s.send(&pdu);
                    })
                    .expect("reactor runs");
            }
        }
        if self.finish.load(Ordering::SeqCst) {
            Pumped::Done
        } else {
            Pumped::Idle(None)
        }
    }
}

#[test]
fn a_pump_answers_from_the_shard_thread_and_wakes_for_its_own_channel() {
    let reactor = Reactor::<Session>::new(one_shard()).expect("reactor");
    let addr = reactor
        .listen(any_port(), |peer, t| {
            let mut cfg = SessionConfig::client();
            cfg.login_timeout = None;
            Session::new(cfg, peer, t)
        })
        .expect("listen");
    let (numbers_tx, numbers_rx) = crossbeam_channel::unbounded();
    let echoed = Arc::new(AtomicU64::new(0));
    let sum = Arc::new(AtomicU64::new(0));
    let on_shard_thread = Arc::new(AtomicBool::new(false));
    let finish = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let handle = reactor.handle();
    handle
        .set_pump(Box::new(Echo {
            events: reactor.events(),
            net: reactor.handle(),
            echoed: Arc::clone(&echoed),
            on_shard_thread: Arc::clone(&on_shard_thread),
            numbers: numbers_rx,
            sum: Arc::clone(&sum),
            finish: Arc::clone(&finish),
            dropped: Arc::clone(&dropped),
        }))
        .expect("one shard");

    // Echo: the PDU comes back, answered by the pump on the shard thread.
    let mut client = TcpStream::connect(addr).expect("connect");
    client
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    for seq in 1..=3u16 {
        let pdu = Pdu::new(Command::MsgData.key(), seq, Bytes::from_static(b"hello"));
        let bytes = pdu.to_bytes();
        client.write_all(&bytes).expect("write");
        let mut back = vec![0; bytes.len()];
        client.read_exact(&mut back).expect("echo");
        assert_eq!(back, bytes.to_vec());
    }
    assert_eq!(echoed.load(Ordering::SeqCst), 3);
    assert!(on_shard_thread.load(Ordering::SeqCst));

    // A channel the shard does not watch: without the wake-up the pump,
    // which asked for no deadline, would never look at it.
    numbers_tx.send(40).expect("send");
    numbers_tx.send(2).expect("send");
    handle.wake().expect("wake");
    wait_until("the pump summed the numbers", || {
        sum.load(Ordering::SeqCst) == 42
    });

    // Done: the shard drops the pump and keeps running.
    finish.store(true, Ordering::SeqCst);
    handle.wake().expect("wake");
    wait_until("the pump was dropped", || dropped.load(Ordering::SeqCst));
    reactor.shutdown();
}

#[test]
fn a_pump_needs_exactly_one_shard() {
    let reactor = Reactor::<Session>::new(ReactorConfig {
        threads: 2,
        ..one_shard()
    })
    .expect("reactor");
    let (_tx, numbers) = crossbeam_channel::unbounded();
    let pump = Echo {
        events: reactor.events(),
        net: reactor.handle(),
        echoed: Arc::default(),
        on_shard_thread: Arc::default(),
        numbers,
        sum: Arc::default(),
        finish: Arc::default(),
        dropped: Arc::default(),
    };
    assert!(matches!(
        reactor.handle().set_pump(Box::new(pump)),
        Err(NetError::PumpNeedsOneShard)
    ));
    reactor.shutdown();
}

#[test]
fn shutting_down_drops_the_pump() {
    let reactor = Reactor::<Session>::new(one_shard()).expect("reactor");
    let dropped = Arc::new(AtomicBool::new(false));
    let (_tx, numbers) = crossbeam_channel::unbounded();
    reactor
        .handle()
        .set_pump(Box::new(Echo {
            events: reactor.events(),
            net: reactor.handle(),
            echoed: Arc::default(),
            on_shard_thread: Arc::default(),
            numbers,
            sum: Arc::default(),
            finish: Arc::default(),
            dropped: Arc::clone(&dropped),
        }))
        .expect("one shard");
    reactor.shutdown();
    assert!(dropped.load(Ordering::SeqCst));
}
