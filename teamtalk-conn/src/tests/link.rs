//! Link behaviour: heartbeats, idle timeout, connect timeout, backoff,
//! greeting, send cap. Paired scenarios run in [`Sim`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_proto::{Command, CommandKey, Pdu};

use super::sim::Sim;
use super::{Drive, heartbeat, ms, msg, secs, t0};
use crate::{
    Backoff, CloseReason, Input, Link, LinkConfig, LinkEvent, LinkState, Output, SendError,
    SessionEvent,
};

fn addr() -> SocketAddr {
    "10.0.0.2:10600".parse().unwrap()
}

fn teamtalk_cfg() -> LinkConfig {
    LinkConfig::new(addr()).with_backoff(Backoff::teamtalk())
}

/// `CID_OTHER_MSG_SERV_INFO`: what msg_server sends login_server on connect.
fn registration() -> Pdu {
    Pdu::new(
        CommandKey::new(7, 0x0709),
        0,
        Bytes::from_static(b"\x0a\x0810.0.0.1"),
    )
}

fn connect_times(d: &Drive<Link>) -> Vec<Instant> {
    d.outputs
        .iter()
        .filter(|(_, o)| matches!(o, Output::Connect(_)))
        .map(|(t, _)| *t)
        .collect()
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn connects_at_once_then_times_out_the_attempt_after_5s() {
    let t = t0();
    let mut d = Drive::new(Link::new(teamtalk_cfg(), t), t);
    assert_eq!(d.outputs, [(t, Output::Connect(addr()))]);
    assert_eq!(d.deadline, Some(t + secs(5)));
    assert_eq!(
        d.m.state(),
        LinkState::Connecting {
            deadline: t + secs(5)
        }
    );
    d.advance_to(t + secs(5) - ms(1));
    assert_eq!(d.outputs.len(), 1, "nothing before the connect deadline");
    d.advance_to(t + secs(5));
    assert_eq!(
        &d.outputs[1..],
        [
            (t + secs(5), Output::Close),
            (
                t + secs(5),
                Output::Event(LinkEvent::Unreachable(CloseReason::ConnectTimedOut))
            ),
        ]
    );
    assert_eq!(d.m.state(), LinkState::Backoff { until: t + secs(9) });
    assert_eq!(d.m.send(&heartbeat(0)), Err(SendError::NotConnected));
}

#[test]
fn teamtalk_backoff_sequence_when_connects_keep_failing() {
    let t = t0();
    let mut d = Drive::new(Link::new(teamtalk_cfg(), t), t);
    for _ in 0..7 {
        let now = d.now;
        d.input(Input::ConnectFailed(now));
        d.advance_to(d.deadline.unwrap());
    }
    let waits = gaps(&connect_times(&d));
    assert_eq!(waits, [4, 8, 16, 32, 64, 4, 8].map(secs));
    let failures = d
        .events()
        .into_iter()
        .filter(|e| **e == LinkEvent::Unreachable(CloseReason::ConnectFailed))
        .count();
    assert_eq!(failures, 7);
}

/// Log lines written while `f` runs, at WARN and above.
fn warnings_during(f: impl FnOnce()) -> Vec<String> {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn failed_connects_are_warned_from_the_first_with_the_next_retry_then_rate_limited() {
    let lines = warnings_during(|| {
        let t = t0();
        let mut d = Drive::new(Link::new(teamtalk_cfg(), t), t);
        // Attempts fail at 0, 4, 12, 28, 60, 124, 128 s (TeamTalk's backoff).
        for _ in 0..7 {
            let now = d.now;
            d.input(Input::ConnectFailed(now));
            d.advance_to(d.deadline.unwrap());
        }
    });
    let failed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("link connect failed; retrying"))
        .collect();
    // The first at once, then one a minute: at 0 s, 60 s (three held back
    // in between) and 124 s.
    assert_eq!(failed.len(), 3, "{lines:#?}");
    assert!(
        failed
            .iter()
            .all(|l| l.contains("WARN") && l.contains("10.0.0.2:10600"))
    );
    assert!(
        failed[0].contains("retry_in=4s") && failed[0].contains("held_back=0"),
        "{}",
        failed[0]
    );
    assert!(failed[1].contains("held_back=3"), "{}", failed[1]);
}

#[test]
fn capped_exponential_backoff_is_jittered_bounded_and_seeded() {
    let run = |seed| {
        let t = t0();
        let cfg = LinkConfig::new(addr()).with_backoff(Backoff::default_jittered(seed));
        let mut d = Drive::new(Link::new(cfg, t), t);
        for _ in 0..12 {
            // Black-holed peer: every attempt runs into the connect timeout.
            d.advance_to(d.deadline.unwrap());
            d.advance_to(d.deadline.unwrap());
        }
        let c = connect_times(&d);
        // Subtract the 5 s connect timeout from each gap: the backoff wait.
        c.windows(2)
            .map(|w| w[1] - w[0] - secs(5))
            .collect::<Vec<_>>()
    };
    let waits = run(1);
    assert_eq!(waits.len(), 12);
    for (n, w) in waits.iter().enumerate() {
        let ceiling = secs(1 << n.min(6)).min(secs(60));
        assert!(*w >= ceiling / 2 && *w <= ceiling, "wait {n}: {w:?}");
    }
    assert_eq!(waits, run(1), "same seed, same schedule");
    assert_ne!(waits, run(2), "another seed spreads differently");
}

#[test]
fn backoff_resets_after_a_successful_connect() {
    let t = t0();
    let mut d = Drive::new(Link::new(teamtalk_cfg(), t), t);
    d.input(Input::ConnectFailed(t)); // wait 4
    d.advance_to(d.deadline.unwrap());
    d.input(Input::ConnectFailed(d.now)); // wait 8
    d.advance_to(d.deadline.unwrap());
    d.input(Input::Connected(d.now));
    assert!(d.m.is_up());
    d.advance(secs(1));
    d.input(Input::Closed(d.now));
    let down_at = d.now;
    assert_eq!(
        d.m.state(),
        LinkState::Backoff {
            until: down_at + secs(4)
        }
    );
}

#[test]
fn idle_timeout_is_exactly_30s_after_the_last_byte() {
    let t = t0();
    let mut d = Drive::new(Link::new(teamtalk_cfg(), t), t);
    d.input(Input::Connected(t + ms(10)));
    d.advance_to(t + secs(7));
    d.recv(&heartbeat(0).to_bytes());
    let last_rx = d.now;
    d.advance_to(last_rx + secs(30) - ms(1));
    assert!(d.m.is_up(), "still up 1 ms before the deadline");
    assert!(
        !d.events()
            .contains(&&LinkEvent::Down(CloseReason::TimedOut))
    );
    d.advance_to(last_rx + secs(30));
    assert!(!d.m.is_up());
    let (when, _) = d
        .outputs
        .iter()
        .find(|(_, o)| *o == Output::Event(LinkEvent::Down(CloseReason::TimedOut)))
        .unwrap();
    assert_eq!(*when, last_rx + secs(30));
}

#[test]
fn heartbeats_only_when_nothing_was_sent_for_5s() {
    let t = t0();
    let mut d = Drive::new(Link::new(teamtalk_cfg(), t), t);
    d.input(Input::Connected(t));
    // The application sends every 3 s for a minute: no heartbeat needed.
    for _ in 0..20 {
        d.advance(secs(3));
        d.recv(&heartbeat(0).to_bytes()); // keep the link from idling out
        d.call(|l| l.send(&msg(1, 10))).unwrap();
    }
    let hb = Command::OtherHeartbeat.key();
    assert!(d.sent_pdus().iter().all(|(_, p)| !p.is(hb)));
    // Then silence on our side: heartbeats at +5 s, +10 s, …
    let quiet_from = d.now;
    d.advance(secs(12));
    let beats: Vec<_> = d
        .sent_pdus()
        .into_iter()
        .filter(|(_, p)| p.is(hb))
        .map(|(at, _)| at)
        .collect();
    assert_eq!(beats, [quiet_from + secs(5), quiet_from + secs(10)]);
}

#[test]
fn greeting_goes_first_and_send_needs_up() {
    let t = t0();
    let mut d = Drive::new(Link::new(teamtalk_cfg(), t), t);
    d.call(|l| l.set_greeting(&[registration()])).unwrap();
    assert_eq!(d.m.send(&msg(1, 1)), Err(SendError::NotConnected));
    d.input(Input::Connected(t));
    let after_connect = &d.outputs[1..];
    assert_eq!(
        after_connect,
        [
            (t, Output::Event(LinkEvent::Up)),
            (t, Output::Transmit(registration().to_bytes())),
        ]
    );
    let too_big = Pdu::new(
        Command::OtherHeartbeat.key(),
        0,
        Bytes::from(vec![0; 2 << 20]),
    );
    assert!(matches!(
        d.m.send(&too_big),
        Err(SendError::TooLarge { .. })
    ));
    assert!(matches!(
        d.m.set_greeting(&[too_big]),
        Err(SendError::TooLarge { .. })
    ));
    d.call(Link::close);
    assert!(d.finished());
    assert_eq!(d.m.send(&msg(1, 1)), Err(SendError::Closed));
    assert!(d.events().contains(&&LinkEvent::Down(CloseReason::Local)));
}

#[test]
fn bad_frame_drops_the_link_and_reconnects() {
    let t = t0();
    let mut d = Drive::new(Link::new(teamtalk_cfg(), t), t);
    d.input(Input::Connected(t));
    d.recv(&[0, 0, 0, 3, 1, 2, 3]);
    assert!(d.events().contains(&&LinkEvent::Down(CloseReason::Frame(
        teamtalk_proto::FrameError::TooShort(3)
    ))));
    d.advance(secs(4));
    assert_eq!(connect_times(&d).len(), 2);
}

// ---- paired scenarios in the simulator ----

#[test]
fn ten_idle_hours_heartbeat_every_5s_both_ways_and_never_drop() {
    let mut sim = Sim::new(teamtalk_cfg(), ms(20));
    // Connected after one latency; run ten hours from there.
    sim.run_for(secs(10 * 3600) + ms(20));
    assert_eq!(
        sim.link_events
            .iter()
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>(),
        [LinkEvent::Up]
    );
    let hb = Command::OtherHeartbeat.key();
    let link_beats: Vec<_> = sim
        .link_sent
        .iter()
        .filter(|(_, p)| p.is(hb))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(link_beats.len(), 10 * 3600 / 5);
    assert!(gaps(&link_beats).iter().all(|g| *g == secs(5)));
    let server_beats = sim.server_sent.iter().filter(|(_, p)| p.is(hb)).count();
    assert_eq!(server_beats, 10 * 3600 / 5);
    // Heartbeats are liveness only: the server application never sees one.
    assert!(sim.server_events.is_empty());
}

#[test]
fn partition_drops_the_link_at_exactly_30s_of_silence() {
    let mut sim = Sim::new(teamtalk_cfg(), ms(20));
    sim.run_for(secs(62));
    sim.partitioned = true;
    sim.run_for(secs(60));
    let last_rx = *sim.link_rx.last().unwrap();
    let downs: Vec<_> = sim
        .link_events
        .iter()
        .filter(|(_, e)| matches!(e, LinkEvent::Down(_)))
        .collect();
    assert_eq!(
        downs[0],
        &(last_rx + secs(30), LinkEvent::Down(CloseReason::TimedOut))
    );
}

#[test]
fn reconnects_after_server_restart_and_greets_again() {
    let mut sim = Sim::new(teamtalk_cfg(), ms(5));
    sim.link.set_greeting(&[registration()]).unwrap();
    sim.drain_link();
    sim.run_for(secs(20));
    let killed = sim.now;
    sim.kill_server();
    sim.run_for(secs(40)); // down; the retries at +4, +12 and +28 s are refused
    sim.start_server();
    sim.run_for(secs(60)); // the retry at +60 s succeeds
    let ups = sim
        .link_events
        .iter()
        .filter(|(_, e)| *e == LinkEvent::Up)
        .count();
    assert_eq!(ups, 2);
    assert!(
        sim.link_events
            .iter()
            .any(|(_, e)| *e == LinkEvent::Down(CloseReason::PeerClosed))
    );
    assert!(
        sim.link_events
            .iter()
            .any(|(_, e)| *e == LinkEvent::Unreachable(CloseReason::ConnectFailed))
    );
    // Each server-side connection's first PDU is the registration.
    let mut conns: Vec<u32> = sim.server_events.iter().map(|(_, c, _)| *c).collect();
    conns.dedup();
    assert_eq!(conns.len(), 2);
    for conn in conns {
        let first = sim
            .server_events
            .iter()
            .find(|(_, c, _)| *c == conn)
            .map(|(_, _, e)| e.clone());
        assert_eq!(first, Some(SessionEvent::Pdu(registration())));
    }
    // TeamTalk schedule: the reset reaches the link after one latency,
    // then waits of 4, 8, 16 and 32 s, each attempt's refusal taking
    // one latency.
    let c = &sim.connects;
    assert_eq!(c[1], killed + ms(5) + secs(4));
    assert_eq!(
        gaps(&c[1..]),
        [secs(8) + ms(5), secs(16) + ms(5), secs(32) + ms(5)]
    );
}

#[test]
fn slow_server_fills_the_send_queue_and_the_link_drops_then_recovers() {
    let mut cfg = teamtalk_cfg();
    cfg.max_tx_bytes = 64 * 1024;
    let mut sim = Sim::new(cfg, ms(1));
    sim.run_for(secs(1));
    sim.server_reads = false;
    let mut refused = None;
    for i in 0..1000u16 {
        if let Err(e) = sim.link_send(&msg(i, 1000)) {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("the cap is reached");
    assert_eq!(e, SendError::BufferFull);
    // 1016-byte PDUs: 64 fit under 64 KiB, the 65th overflows.
    assert_eq!(i, 64);
    assert!(
        sim.link_events
            .iter()
            .any(|(_, e)| *e == LinkEvent::Down(CloseReason::SendBufferFull))
    );
    sim.server_reads = true;
    sim.run_for(secs(10));
    assert!(sim.link.is_up(), "reconnected after the backoff");
}
