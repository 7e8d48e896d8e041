//! msg_server's metrics and health, read by the admin endpoint while the
//! runner thread writes them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use teamtalk_conn::{CloseReason, Link, Session};
use teamtalk_net::Handle;
use teamtalk_proto::Pdu;
use teamtalk_proto::pb::im::base_define::ResultType;
use teamtalk_proto::pb::im::login::ImLoginRes;

use super::app::{AppStats, Upstream};
use crate::metrics::{
    CloseCounters, CommandCounters, CounterMap, MetricsSource, Scrape, render_net,
};

/// One upstream link's state, for the `teamtalk_msg_link_up` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LinkState {
    pub(super) kind: Upstream,
    pub(super) addr: SocketAddr,
    pub(super) up: bool,
}

/// Counters of one msg_server. PDU and close counters are atomics bumped
/// by the runner as events pass; the application's own counters
/// ([`AppStats`]) are a snapshot the runner publishes every second.
pub struct MsgMetrics {
    clients: Handle<Session>,
    links: Handle<Link>,
    pub(super) client_in: CommandCounters,
    pub(super) client_out: CommandCounters,
    pub(super) upstream_in: CommandCounters,
    pub(super) upstream_out: CommandCounters,
    pub(super) client_closes: CloseCounters,
    pub(super) link_closes: CloseCounters,
    pub(super) logins_ok: AtomicU64,
    pub(super) logins_refused: CounterMap,
    pub(super) app: Mutex<AppSnapshot>,
    pub(super) link_states: Mutex<Vec<LinkState>>,
}

/// What the runner copies out of the `App` once a second.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AppSnapshot {
    pub(super) stats: AppStats,
    pub(super) pending: usize,
    pub(super) logged_in: u32,
}

impl std::fmt::Debug for MsgMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgMetrics").finish_non_exhaustive()
    }
}

impl MsgMetrics {
    pub(super) fn new(
        clients: Handle<Session>,
        links: Handle<Link>,
        states: Vec<LinkState>,
    ) -> Self {
        Self {
            clients,
            links,
            client_in: CommandCounters::new(),
            client_out: CommandCounters::new(),
            upstream_in: CommandCounters::new(),
            upstream_out: CommandCounters::new(),
            client_closes: CloseCounters::new(),
            link_closes: CloseCounters::new(),
            logins_ok: AtomicU64::new(0),
            logins_refused: CounterMap::new(),
            app: Mutex::new(AppSnapshot::default()),
            link_states: Mutex::new(states),
        }
    }

    /// The application counters as of the last second.
    #[must_use]
    pub fn app_stats(&self) -> AppStats {
        self.app
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats
    }

    /// Counts a login refusal under the reply's result code name
    /// (`REFUSE_REASON_DB_VALIDATE_FAILED`, …).
    pub(super) fn login_refused(&self, reply: &Pdu) {
        let reason = reply
            .decode_body::<ImLoginRes>()
            .ok()
            .and_then(|r| ResultType::try_from(r.result_code).ok())
            .map_or("unknown", |r| r.as_str_name());
        self.logins_refused.inc(reason);
    }

    pub(super) fn link_closed(&self, reason: &CloseReason) {
        self.link_closes.inc(reason);
    }

    pub(super) fn set_link(&self, addr: SocketAddr, kind: Upstream, up: bool) {
        let mut states = self
            .link_states
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = states.iter_mut().find(|s| s.addr == addr && s.kind == kind) {
            s.up = up;
        }
    }
}

fn kind_label(kind: Upstream) -> &'static str {
    match kind {
        Upstream::Db => "db",
        Upstream::Login => "login",
        Upstream::Route => "route",
    }
}

fn daemon_name(kind: Upstream) -> &'static str {
    match kind {
        Upstream::Db => "db_proxy_server",
        Upstream::Login => "login_server",
        Upstream::Route => "route_server",
    }
}

impl MetricsSource for MsgMetrics {
    fn collect(&self, out: &mut Scrape) {
        render_net(out, &[("side", "clients")], &self.clients.stats());
        render_net(out, &[("side", "links")], &self.links.stats());
        self.client_closes.render(out, &[("side", "clients")]);
        self.link_closes.render(out, &[("side", "links")]);
        self.client_in.render_in(out, "client");
        self.upstream_in.render_in(out, "upstream");
        self.client_out.render_out(out, "client");
        self.upstream_out.render_out(out, "upstream");
        out.counter(
            "teamtalk_msg_logins_ok_total",
            "Client logins accepted.",
            &[],
            self.logins_ok.load(Ordering::Relaxed),
        );
        self.logins_refused.render(
            out,
            "teamtalk_msg_logins_refused_total",
            "Client logins refused, by result code.",
            &[],
            "reason",
        );
        let snap = *self.app.lock().unwrap_or_else(PoisonError::into_inner);
        let s = snap.stats;
        for (name, help, v) in [
            (
                "teamtalk_msg_messages_acked_total",
                "Messages stored and acknowledged to their sender.",
                s.messages_acked,
            ),
            (
                "teamtalk_msg_messages_refused_total",
                "Messages refused (to oneself, empty, unsupported type, store failed, db_proxy down).",
                s.messages_refused,
            ),
            (
                "teamtalk_msg_delivered_total",
                "PDUs delivered to local sessions.",
                s.delivered,
            ),
            (
                "teamtalk_msg_stale_replies_total",
                "Upstream replies whose request or session was gone.",
                s.stale_replies,
            ),
            (
                "teamtalk_msg_forward_failed_total",
                "Requests that could not be forwarded upstream.",
                s.forward_failed,
            ),
            (
                "teamtalk_msg_unsupported_total",
                "Client commands answered as unsupported.",
                s.unsupported,
            ),
        ] {
            out.counter(name, help, &[], v);
        }
        out.gauge(
            "teamtalk_msg_pending_requests",
            "Requests waiting for an upstream reply.",
            &[],
            snap.pending as f64,
        );
        out.gauge(
            "teamtalk_msg_logged_in_sessions",
            "Logged-in client sessions.",
            &[],
            f64::from(snap.logged_in),
        );
        let states = self
            .link_states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for st in states {
            let addr = st.addr.to_string();
            out.gauge(
                "teamtalk_msg_link_up",
                "1 while the link to this upstream server is up, else 0.",
                &[("kind", kind_label(st.kind)), ("addr", &addr)],
                if st.up { 1.0 } else { 0.0 },
            );
        }
    }

    fn health(&self, problems: &mut Vec<String>) {
        let states = self
            .link_states
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for kind in [Upstream::Db, Upstream::Login, Upstream::Route] {
            let of_kind: Vec<&LinkState> = states.iter().filter(|s| s.kind == kind).collect();
            if !of_kind.iter().any(|s| s.up) {
                let addrs: Vec<String> = of_kind.iter().map(|s| s.addr.to_string()).collect();
                problems.push(format!(
                    "no {} link up ({})",
                    daemon_name(kind),
                    addrs.join(", ")
                ));
            }
        }
    }
}
