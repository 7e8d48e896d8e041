//! Drain-loop cost per received PDU: bytes of 1000 back-to-back 100-byte
//! `CID_MSG_DATA` PDUs go into a logged-in client [`Session`], which
//! decodes them, passes them through the login gate and raises one event
//! each; the bench drains everything. Divan reports PDUs per second.
//!
//! `cargo bench -p teamtalk-conn`

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use divan::Bencher;
use divan::counter::ItemsCount;
use teamtalk_conn::{Input, Machine, Output, Session, SessionConfig, SessionEvent};
use teamtalk_proto::{Command, CommandKey, Pdu};

const BATCH: usize = 1000;
const PDU_LEN: usize = 100;

fn main() {
    divan::main();
}

/// The bench's time origin; the machine itself never reads a clock.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn logged_in(now: Instant) -> Session {
    let mut s = Session::new(
        SessionConfig::client(),
        "127.0.0.1:40000".parse().expect("addr"),
        now,
    );
    let login = Pdu::new(Command::LoginReqUserlogin.key(), 1, Bytes::new());
    s.handle_input(Input::Received(now, &login.to_bytes()));
    while !matches!(s.poll_output(), Output::Timeout(_)) {}
    s.accept_login(42, 0x01).expect("login pending");
    while !matches!(s.poll_output(), Output::Timeout(_)) {}
    s
}

#[divan::bench]
fn received_100_byte_pdus(bencher: Bencher<'_, '_>) {
    let now = t0();
    let mut session = logged_in(now);
    let body = Bytes::from(vec![0x42; PDU_LEN - 16]);
    let mut stream = BytesMut::new();
    for seq in 0..BATCH {
        Pdu::new(CommandKey::new(3, 0x0301), seq as u16, body.clone()).encode(&mut stream);
    }
    let stream = stream.freeze();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        session.handle_input(Input::Received(now, black_box(&stream)));
        let mut events = 0usize;
        loop {
            match session.poll_output() {
                Output::Event(SessionEvent::Pdu(p)) => {
                    black_box(p);
                    events += 1;
                }
                Output::Timeout(_) => break,
                other => panic!("unexpected output {other:?}"),
            }
        }
        assert_eq!(events, BATCH);
    });
}
