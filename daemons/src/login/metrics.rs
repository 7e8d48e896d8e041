//! login_server's metrics and health.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use teamtalk_conn::Session;
use teamtalk_net::{ConnId, Handle};

use super::app::{Directory, LoginCounters, PeerKind};
use crate::metrics::{
    CloseCounters, CommandCounters, CounterMap, MetricsSource, Scrape, render_net,
};

/// Counters of one login_server: PDU and close counters bumped by the
/// application thread, the directory read at scrape time, HTTP outcomes
/// counted by the HTTP threads.
pub struct LoginMetrics {
    net: Handle<Session>,
    dir: Directory<ConnId>,
    pub(super) msg_server_in: CommandCounters,
    pub(super) msg_server_out: CommandCounters,
    pub(super) client_in: CommandCounters,
    pub(super) client_out: CommandCounters,
    pub(super) closes: CloseCounters,
    pub(super) http: Arc<CounterMap>,
    pub(super) counters: Mutex<LoginCounters>,
    pub(super) running: AtomicBool,
}

impl std::fmt::Debug for LoginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginMetrics").finish_non_exhaustive()
    }
}

impl LoginMetrics {
    pub(super) fn new(net: Handle<Session>, dir: Directory<ConnId>) -> Self {
        Self {
            net,
            dir,
            msg_server_in: CommandCounters::new(),
            msg_server_out: CommandCounters::new(),
            client_in: CommandCounters::new(),
            client_out: CommandCounters::new(),
            closes: CloseCounters::new(),
            http: Arc::new(CounterMap::new()),
            counters: Mutex::new(LoginCounters::default()),
            running: AtomicBool::new(true),
        }
    }

    /// The PDU counters of one kind of peer, `(in, out)`.
    pub(super) fn pdus(&self, kind: PeerKind) -> (&CommandCounters, &CommandCounters) {
        match kind {
            PeerKind::MsgServer => (&self.msg_server_in, &self.msg_server_out),
            PeerKind::Client => (&self.client_in, &self.client_out),
        }
    }
}

impl MetricsSource for LoginMetrics {
    fn collect(&self, out: &mut Scrape) {
        let side = [("side", "peers")];
        render_net(out, &side, &self.net.stats());
        self.closes.render(out, &side);
        self.msg_server_in.render_in(out, "msg_server");
        self.client_in.render_in(out, "client");
        self.msg_server_out.render_out(out, "msg_server");
        self.client_out.render_out(out, "client");
        out.gauge(
            "teamtalk_login_msg_servers",
            "msg_servers registered (offered to clients when not full).",
            &[],
            self.dir.msg_servers().len() as f64,
        );
        out.gauge(
            "teamtalk_login_online_users",
            "Client connections over all msg_servers, as they report them.",
            &[],
            self.dir.total_online() as f64,
        );
        let c = *self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        out.counter(
            "teamtalk_login_tcp_queries_total",
            "Legacy TCP msg_server queries answered.",
            &[],
            c.tcp_queries,
        );
        out.counter(
            "teamtalk_login_unexpected_total",
            "Commands a peer had no business sending.",
            &[],
            c.unexpected,
        );
        out.counter(
            "teamtalk_login_malformed_total",
            "PDU bodies that did not decode or carried impossible values.",
            &[],
            c.malformed,
        );
        self.http.render(
            out,
            "teamtalk_login_http_requests_total",
            "HTTP requests by outcome: the status sent, or dropped (too large, too slow, too many connections).",
            &[],
            "status",
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        if !self.running.load(Ordering::Relaxed) {
            problems.push("application thread stopped".into());
        }
    }
}
