//! Labelled counters the daemons bump on their hot paths, and renderers for
//! the counters other crates keep (reactor statistics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use teamtalk_conn::CloseReason;
use teamtalk_net::StatsSnapshot;
use teamtalk_proto::{Command, CommandKey};

use super::text::Scrape;

/// Every known command key, sorted, for a binary search from a PDU header
/// to a counter slot.
fn command_keys() -> &'static [(CommandKey, Command)] {
    static KEYS: OnceLock<Vec<(CommandKey, Command)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut v: Vec<(CommandKey, Command)> =
            Command::ALL.iter().map(|c| (c.key(), *c)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    })
}

/// PDUs counted by command, one atomic per TeamTalk command plus one for
/// keys outside the table (labelled `unknown`, so a hostile peer cannot
/// create series at will).
#[derive(Debug)]
pub struct CommandCounters {
    counts: Box<[AtomicU64]>,
}

impl Default for CommandCounters {
    fn default() -> Self {
        Self {
            counts: (0..=command_keys().len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl CommandCounters {
    /// All zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one PDU with this header key.
    pub fn inc(&self, key: CommandKey) {
        let keys = command_keys();
        let i = keys
            .binary_search_by_key(&key, |(k, _)| *k)
            .unwrap_or(keys.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for one command.
    #[must_use]
    pub fn get(&self, command: Command) -> u64 {
        let keys = command_keys();
        keys.binary_search_by_key(&command.key(), |(k, _)| *k)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Renders these counters as `teamtalk_pdus_in_total{peer}`: the one
    /// family every daemon uses for PDUs received, so its name and help are
    /// written once.
    pub fn render_in(&self, out: &mut Scrape, peer: &str) {
        self.render(
            out,
            "teamtalk_pdus_in_total",
            "PDUs received, by peer kind and command (heartbeats absorbed by the session excluded).",
            &[("peer", peer)],
        );
    }

    /// Renders these counters as `teamtalk_pdus_out_total{peer}`, the family
    /// for PDUs queued for sending (relays, notices and answers alike).
    pub fn render_out(&self, out: &mut Scrape, peer: &str) {
        self.render(
            out,
            "teamtalk_pdus_out_total",
            "PDUs queued for sending, by peer kind and command.",
            &[("peer", peer)],
        );
    }

    /// Adds one sample per command seen so far (zeros are left out: most
    /// daemons see a handful of the ~100 commands), labelled
    /// `command="CID_…"` or `command="unknown"`.
    pub fn render(
        &self,
        out: &mut Scrape,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) {
        let keys = command_keys();
        let mut all: Vec<(&str, &str)> = labels.to_vec();
        all.push(("command", ""));
        let last = all.len() - 1;
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            all[last].1 = keys.get(i).map_or("unknown", |(_, cmd)| cmd.name());
            out.counter(name, help, &all, n);
        }
    }
}

/// Why connections closed, by kind of [`CloseReason`].
#[derive(Debug, Default)]
pub struct CloseCounters {
    counts: [AtomicU64; CLOSE_KINDS.len()],
}

/// Label values of the close reasons, in slot order.
const CLOSE_KINDS: [&str; 15] = [
    "timed_out",
    "login_timed_out",
    "connect_timed_out",
    "connect_failed",
    "peer_closed",
    "frame",
    "unauthenticated",
    "duplicate_login",
    "login_rejected",
    "send_buffer_full",
    "local",
    "tls",
    "auth_failed",
    "websocket",
    "other",
];

/// The label value for a close reason.
#[must_use]
pub fn close_kind(reason: &CloseReason) -> &'static str {
    CLOSE_KINDS[close_slot(reason)]
}

fn close_slot(reason: &CloseReason) -> usize {
    match reason {
        CloseReason::TimedOut => 0,
        CloseReason::LoginTimedOut => 1,
        CloseReason::ConnectTimedOut => 2,
        CloseReason::ConnectFailed => 3,
        CloseReason::PeerClosed => 4,
        CloseReason::Frame(_) => 5,
        CloseReason::Unauthenticated(_) => 6,
        CloseReason::DuplicateLogin => 7,
        CloseReason::LoginRejected => 8,
        CloseReason::SendBufferFull => 9,
        CloseReason::Local => 10,
        CloseReason::Tls(_) => 11,
        CloseReason::AuthFailed(_) => 12,
        CloseReason::WebSocket(_) => 13,
        _ => 14,
    }
}

impl CloseCounters {
    /// All zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one close.
    pub fn inc(&self, reason: &CloseReason) {
        self.counts[close_slot(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// Closes of one kind so far (see [`close_kind`]).
    #[must_use]
    pub fn get(&self, reason: &CloseReason) -> u64 {
        self.counts[close_slot(reason)].load(Ordering::Relaxed)
    }

    /// Renders `teamtalk_closes_total{reason}` (non-zero kinds) and the two
    /// the issue tracker asks for by name, `teamtalk_frames_rejected_total`
    /// and `teamtalk_send_queue_overflows_total` (always present, so alerts
    /// can use `rate()` from the first scrape).
    pub fn render(&self, out: &mut Scrape, labels: &[(&str, &str)]) {
        let mut all: Vec<(&str, &str)> = labels.to_vec();
        all.push(("reason", ""));
        let last = all.len() - 1;
        for (kind, c) in CLOSE_KINDS.iter().zip(&self.counts) {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                all[last].1 = kind;
                out.counter(
                    "teamtalk_closes_total",
                    "Connections closed, by reason.",
                    &all,
                    n,
                );
            }
        }
        out.counter(
            "teamtalk_frames_rejected_total",
            "Connections closed because their byte stream was not valid TeamTalk framing.",
            labels,
            self.counts[5].load(Ordering::Relaxed),
        );
        out.counter(
            "teamtalk_send_queue_overflows_total",
            "Connections closed because the peer read too slowly and the send queue hit its cap.",
            labels,
            self.counts[9].load(Ordering::Relaxed),
        );
    }
}

/// Counters keyed by a label value that is rare to bump (login refusal
/// reasons, HTTP statuses): a mutex is fine off the hot path.
#[derive(Debug, Default)]
pub struct CounterMap {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl CounterMap {
    /// Empty.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one under `label`.
    pub fn inc(&self, label: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(label)
            .or_default() += 1;
    }

    /// The count under `label`.
    #[must_use]
    pub fn get(&self, label: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(label)
            .copied()
            .unwrap_or(0)
    }

    /// One sample per label value, under the label name `key`.
    pub fn render(
        &self,
        out: &mut Scrape,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        key: &'static str,
    ) {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut all: Vec<(&str, &str)> = labels.to_vec();
        all.push((key, ""));
        let last = all.len() - 1;
        for (value, n) in counts {
            all[last].1 = value;
            out.counter(name, help, &all, n);
        }
    }
}

/// Renders a reactor's counters under `labels` (typically
/// `side="clients"`).
pub fn render_net(out: &mut Scrape, labels: &[(&str, &str)], s: &StatsSnapshot) {
    out.gauge(
        "teamtalk_connections_open",
        "Connections held right now.",
        labels,
        s.open as f64,
    );
    out.counter(
        "teamtalk_connections_accepted_total",
        "Connections accepted.",
        labels,
        s.accepted,
    );
    out.counter(
        "teamtalk_connections_closed_total",
        "Connections whose socket is gone.",
        labels,
        s.closed,
    );
    out.counter(
        "teamtalk_connections_refused_over_limit_total",
        "Connections closed on accept because the connection limit was reached.",
        labels,
        s.refused_over_limit,
    );
    out.counter(
        "teamtalk_connections_refused_per_source_total",
        "Connections closed on accept because their source address held its listener's per-source limit.",
        labels,
        s.refused_per_source,
    );
    out.counter(
        "teamtalk_bytes_in_total",
        "Bytes read from sockets.",
        labels,
        s.bytes_in,
    );
    out.counter(
        "teamtalk_bytes_out_total",
        "Bytes written to sockets.",
        labels,
        s.bytes_out,
    );
    out.counter(
        "teamtalk_socket_writes_total",
        "System calls that wrote to sockets (everything a round queued for one socket goes in one).",
        labels,
        s.writes,
    );
    out.gauge(
        "teamtalk_send_queue_bytes",
        "Bytes queued for sending that sockets have not taken yet.",
        labels,
        s.queued_bytes as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use teamtalk_proto::FrameError;

    #[test]
    fn commands_count_by_name_and_unknown_keys_share_one_series() {
        let c = CommandCounters::new();
        c.inc(Command::MsgData.key());
        c.inc(Command::MsgData.key());
        c.inc(Command::OtherHeartbeat.key());
        c.inc(CommandKey::new(0x7777, 0x7777));
        c.inc(CommandKey::new(0x7777, 0x7778));
        assert_eq!(c.get(Command::MsgData), 2);
        assert_eq!(c.get(Command::LoginReqUserlogin), 0);
        let mut s = Scrape::new();
        c.render(&mut s, "p_total", "P.", &[("peer", "client")]);
        let text = s.render();
        assert!(
            text.contains("p_total{peer=\"client\",command=\"CID_MSG_DATA\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("command=\"CID_OTHER_HEARTBEAT\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("command=\"unknown\"} 2\n"), "{text}");
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn every_command_has_its_own_slot() {
        let c = CommandCounters::new();
        for cmd in Command::ALL {
            c.inc(cmd.key());
        }
        for cmd in Command::ALL {
            assert_eq!(c.get(*cmd), 1, "{}", cmd.name());
        }
    }

    #[test]
    fn closes_by_reason_and_the_named_two() {
        let c = CloseCounters::new();
        c.inc(&CloseReason::Frame(FrameError::TooShort(3)));
        c.inc(&CloseReason::SendBufferFull);
        c.inc(&CloseReason::PeerClosed);
        c.inc(&CloseReason::PeerClosed);
        assert_eq!(c.get(&CloseReason::PeerClosed), 2);
        assert_eq!(close_kind(&CloseReason::Local), "local");
        assert_eq!(
            close_kind(&CloseReason::Tls(teamtalk_conn::TlsError::NotTls)),
            "tls"
        );
        let mut s = Scrape::new();
        c.render(&mut s, &[("side", "clients")]);
        let text = s.render();
        assert!(
            text.contains("teamtalk_closes_total{side=\"clients\",reason=\"peer_closed\"} 2\n")
        );
        assert!(text.contains("teamtalk_frames_rejected_total{side=\"clients\"} 1\n"));
        assert!(text.contains("teamtalk_send_queue_overflows_total{side=\"clients\"} 1\n"));
        assert!(!text.contains("reason=\"local\""));
    }

    #[test]
    fn counter_maps_render_every_label() {
        let m = CounterMap::new();
        m.inc("200");
        m.inc("404");
        m.inc("200");
        assert_eq!(m.get("200"), 2);
        let mut s = Scrape::new();
        m.render(&mut s, "h_total", "H.", &[], "status");
        assert_eq!(
            s.render(),
            "# HELP h_total H.\n# TYPE h_total counter\nh_total{status=\"200\"} 2\nh_total{status=\"404\"} 1\n"
        );
    }
}
