//! Virtual-time tests of the machines: [`Drive`] steps one machine through
//! scripted inputs (a client-side fake; `http_conn` drives an HTTP
//! connection the same way), `sim` pairs a link with a
//! server-peer session over in-memory pipes.

mod auth;
mod backpressure;
mod client;
mod http_conn;
mod link;
mod prop;
mod session;
mod sim;
mod tls;
mod ws;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_proto::{Command, CommandKey, Pdu, PduCodec};

use crate::machine::{Input, Machine, Output};

pub(crate) use crate::fuzzing::t0;

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

pub(crate) fn heartbeat(seq: u16) -> Pdu {
    Pdu::new(Command::OtherHeartbeat.key(), seq, Bytes::new())
}

pub(crate) fn login_req(seq: u16) -> Pdu {
    Pdu::new(
        Command::LoginReqUserlogin.key(),
        seq,
        Bytes::from_static(b"\x0a\x05alice"),
    )
}

/// `CID_MSG_DATA`: an ordinary command that needs a login.
pub(crate) const MSG_DATA: CommandKey = CommandKey::new(3, 0x0301);

pub(crate) fn msg(seq: u16, len: usize) -> Pdu {
    Pdu::new(MSG_DATA, seq, Bytes::from(vec![b'm'; len]))
}

/// Splits a byte stream into PDUs (panics on a partial or bad one).
pub(crate) fn pdus(bytes: &[u8]) -> Vec<Pdu> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(p) = PduCodec::default().decode(&mut buf).unwrap() {
        out.push(p);
    }
    assert!(buf.is_empty(), "partial PDU in a transmit");
    out
}

/// One machine driven in virtual time, recording every output.
pub(crate) struct Drive<M: Machine> {
    pub(crate) m: M,
    pub(crate) now: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) outputs: Vec<(Instant, Output<M::Event>)>,
}

impl<M: Machine> Drive<M> {
    pub(crate) fn new(m: M, now: Instant) -> Self {
        let mut d = Self {
            m,
            now,
            deadline: None,
            outputs: Vec::new(),
        };
        d.drain();
        d
    }

    pub(crate) fn drain(&mut self) {
        loop {
            let out = self.m.poll_output();
            match out {
                Output::Timeout(t) => {
                    assert!(t > self.now, "deadline not after the last input");
                    self.deadline = Some(t);
                    return;
                }
                Output::Finished => {
                    self.deadline = None;
                    self.outputs.push((self.now, Output::Finished));
                    return;
                }
                other => self.outputs.push((self.now, other)),
            }
        }
    }

    pub(crate) fn input(&mut self, input: Input<'_>) {
        self.m.handle_input(input);
        self.drain();
    }

    /// Applies an application call, then drains.
    pub(crate) fn call<R>(&mut self, f: impl FnOnce(&mut M) -> R) -> R {
        let r = f(&mut self.m);
        self.drain();
        r
    }

    pub(crate) fn recv(&mut self, bytes: &[u8]) {
        self.m.handle_input(Input::Received(self.now, bytes));
        self.drain();
    }

    /// Lets virtual time pass until `t`, firing every deadline on the way
    /// exactly when it is due.
    pub(crate) fn advance_to(&mut self, t: Instant) {
        while let Some(d) = self.deadline.filter(|d| *d <= t) {
            self.now = d;
            self.m.handle_input(Input::Timeout(d));
            self.drain();
        }
        self.now = t;
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.advance_to(self.now + by);
    }

    pub(crate) fn finished(&self) -> bool {
        matches!(self.outputs.last(), Some((_, Output::Finished)))
    }

    pub(crate) fn events(&self) -> Vec<&M::Event> {
        self.outputs
            .iter()
            .filter_map(|(_, o)| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Every byte transmitted, concatenated.
    pub(crate) fn transmitted(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for (_, o) in &self.outputs {
            if let Output::Transmit(b) = o {
                all.extend_from_slice(b);
            }
        }
        all
    }

    /// Transmitted PDUs with the time they went out.
    pub(crate) fn sent_pdus(&self) -> Vec<(Instant, Pdu)> {
        self.outputs
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Transmit(b) => Some(pdus(b).into_iter().map(|p| (*t, p))),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub(crate) fn clear(&mut self) {
        self.outputs.clear();
    }
}
