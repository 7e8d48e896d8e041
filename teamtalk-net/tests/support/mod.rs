//! What the reactor's socket tests share: patience, the clock, and
//! waiting for an event or a condition.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use teamtalk_net::{ConnId, NetEvent};

/// How long any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// 127.0.0.1, a port the kernel picks.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Waits for the first event matching `pred`, skipping others.
pub fn wait_event<E: std::fmt::Debug>(
    rx: &Receiver<(ConnId, NetEvent<E>)>,
    mut pred: impl FnMut(ConnId, &NetEvent<E>) -> bool,
) -> (ConnId, NetEvent<E>) {
    let deadline = now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(now());
        match rx.recv_timeout(left) {
            Ok((id, ev)) if pred(id, &ev) => return (id, ev),
            Ok(_) => {}
            Err(e) => panic!("no matching event: {e}"),
        }
    }
}

/// Polls `cond` until it holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = now() + PATIENCE;
    while !cond() {
        assert!(now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
