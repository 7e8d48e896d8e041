//! route_server's metrics and health.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use teamtalk_conn::Session;
use teamtalk_net::Handle;

use super::run::RouteStats;
use crate::metrics::{CloseCounters, CommandCounters, MetricsSource, Scrape, render_net};

/// Counters of one route_server: PDU and close counters bumped by the
/// application thread, plus the snapshot it publishes after every event.
pub struct RouteMetrics {
    net: Handle<Session>,
    pub(super) pdus_in: CommandCounters,
    pub(super) pdus_out: CommandCounters,
    pub(super) closes: CloseCounters,
    pub(super) stats: Mutex<RouteStats>,
    pub(super) running: AtomicBool,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics").finish_non_exhaustive()
    }
}

impl RouteMetrics {
    pub(super) fn new(net: Handle<Session>) -> Self {
        Self {
            net,
            pdus_in: CommandCounters::new(),
            pdus_out: CommandCounters::new(),
            closes: CloseCounters::new(),
            stats: Mutex::new(RouteStats::default()),
            running: AtomicBool::new(true),
        }
    }

    /// The latest snapshot.
    #[must_use]
    pub fn stats(&self) -> RouteStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MetricsSource for RouteMetrics {
    fn collect(&self, out: &mut Scrape) {
        let side = [("side", "peers")];
        render_net(out, &side, &self.net.stats());
        self.closes.render(out, &side);
        self.pdus_in.render_in(out, "msg_server");
        self.pdus_out.render_out(out, "msg_server");
        let s = self.stats();
        out.gauge(
            "teamtalk_route_msg_servers",
            "msg_servers connected.",
            &[],
            s.servers as f64,
        );
        out.gauge(
            "teamtalk_route_users_online",
            "Users with at least one session on some msg_server.",
            &[],
            s.users as f64,
        );
        let c = s.counters;
        for (name, help, v) in [
            (
                "teamtalk_route_received_total",
                "PDUs received from msg_servers.",
                c.received,
            ),
            (
                "teamtalk_route_sent_total",
                "PDU copies sent to msg_servers.",
                c.sent,
            ),
            (
                "teamtalk_route_no_recipient_total",
                "Relayable PDUs dropped because no recipient was online on another msg_server.",
                c.no_recipient,
            ),
            (
                "teamtalk_route_unsupported_total",
                "Group-member and file notices dropped (not supported yet).",
                c.unsupported,
            ),
            (
                "teamtalk_route_unexpected_total",
                "Commands a msg_server has no business sending here.",
                c.unexpected,
            ),
            (
                "teamtalk_route_malformed_total",
                "Bodies that did not decode or carried impossible values.",
                c.malformed,
            ),
            (
                "teamtalk_route_stray_offline_total",
                "Logouts for sessions never seen logging in.",
                c.stray_offline,
            ),
        ] {
            out.counter(name, help, &[], v);
        }
    }

    fn health(&self, problems: &mut Vec<String>) {
        if !self.running.load(Ordering::Relaxed) {
            problems.push("application thread stopped".into());
        }
    }
}
