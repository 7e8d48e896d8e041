//! db_proxy_server's metrics and health.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use teamtalk_conn::Session;
use teamtalk_net::Handle;

use super::handler::DbProxy;
use super::worker::WorkerMetrics;
use crate::metrics::{CloseCounters, CommandCounters, MetricsSource, Scrape, render_net};

/// Counters of one db_proxy_server: PDU and close counters bumped by the
/// event thread and the reply sink, the handler's own atomics, and the
/// store worker's latency histogram.
pub struct DbMetrics {
    net: Handle<Session>,
    proxy: Arc<DbProxy>,
    worker: Arc<WorkerMetrics>,
    pub(super) pdus_in: CommandCounters,
    pub(super) pdus_out: Arc<CommandCounters>,
    pub(super) closes: CloseCounters,
    pub(super) events_running: AtomicBool,
}

impl std::fmt::Debug for DbMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbMetrics").finish_non_exhaustive()
    }
}

impl DbMetrics {
    pub(super) fn new(
        net: Handle<Session>,
        proxy: Arc<DbProxy>,
        worker: Arc<WorkerMetrics>,
        pdus_out: Arc<CommandCounters>,
    ) -> Self {
        Self {
            net,
            proxy,
            worker,
            pdus_in: CommandCounters::new(),
            pdus_out,
            closes: CloseCounters::new(),
            events_running: AtomicBool::new(true),
        }
    }
}

impl MetricsSource for DbMetrics {
    fn collect(&self, out: &mut Scrape) {
        let side = [("side", "peers")];
        render_net(out, &side, &self.net.stats());
        self.closes.render(out, &side);
        self.pdus_in.render_in(out, "msg_server");
        self.pdus_out.render_out(out, "msg_server");
        let s = self.proxy.stats();
        for (name, help, v) in [
            (
                "teamtalk_db_requests_total",
                "Requests handled, message stores included.",
                s.requests,
            ),
            (
                "teamtalk_db_replies_total",
                "Replies produced, failure answers included.",
                s.replies,
            ),
            (
                "teamtalk_db_failures_total",
                "Requests answered with a failure: the reply's failure result_code, or IMRequestFailed.",
                s.failures,
            ),
            (
                "teamtalk_db_unimplemented_total",
                "Requests for features not stored yet (groups, group shield, offline files, avatars).",
                s.unimplemented,
            ),
            (
                "teamtalk_db_unexpected_total",
                "PDUs db_proxy never serves.",
                s.unexpected,
            ),
            (
                "teamtalk_db_decode_errors_total",
                "Bodies that did not decode as their command's message.",
                s.decode_errors,
            ),
            (
                "teamtalk_db_store_errors_total",
                "Store operations that failed.",
                s.store_errors,
            ),
            (
                "teamtalk_db_messages_stored_total",
                "Single-chat messages stored.",
                s.messages_stored,
            ),
            (
                "teamtalk_db_messages_refused_total",
                "Messages refused as not storable (answered with msg_id 0).",
                s.messages_refused,
            ),
            (
                "teamtalk_db_message_batches_total",
                "Store transactions used for messages (one per group commit).",
                s.message_batches,
            ),
            (
                "teamtalk_db_logins_ok_total",
                "Login validations that succeeded.",
                s.logins_ok,
            ),
            (
                "teamtalk_db_logins_cached_total",
                "Successful logins answered from the credential cache, without Argon2.",
                s.logins_cached,
            ),
            (
                "teamtalk_db_logins_failed_total",
                "Login validations refused for bad credentials.",
                s.logins_failed,
            ),
            (
                "teamtalk_db_logins_locked_total",
                "Login validations refused by the failure limiter.",
                s.logins_locked,
            ),
        ] {
            out.counter(name, help, &[], v);
        }
        out.histogram(
            "teamtalk_db_store_latency_seconds",
            "Time each group commit of messages took in the store worker.",
            &[],
            &self.worker.store_latency(),
        );
        out.gauge(
            "teamtalk_db_queue_depth",
            "Requests waiting in the store worker's queue.",
            &[],
            self.worker.queued() as f64,
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        if !self.worker.alive() {
            problems.push("store worker stopped".into());
        }
        if !self.events_running.load(Ordering::Relaxed) {
            problems.push("network event thread stopped".into());
        }
        if let Err(e) = self.proxy.store().user_count() {
            problems.push(format!("store unusable: {e}"));
        }
    }
}
