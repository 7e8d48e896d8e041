//! Metrics and health: what every daemon serves on its admin port.
//!
//! Why our own registry instead of the `prometheus` or
//! `prometheus-client` crates: the daemons already keep their counters
//! (atomics, or a snapshot their single application thread publishes), so
//! all that is missing is reading them at scrape time and writing text
//! format 0.0.4, a few hundred lines with no dependency. The pieces:
//!
//! - [`Scrape`]: collects samples per family and renders the text, with
//!   `# HELP`/`# TYPE` lines and label escaping; [`Scrape::scoped`] adds
//!   labels such as `daemon` to whatever a source adds.
//! - [`Histogram`] (fixed buckets, lock-free), [`CommandCounters`] (PDUs
//!   by command, one atomic each), [`CloseCounters`] (closes by reason),
//!   [`CounterMap`] (rare labelled events).
//! - [`MetricsSource`]: what a daemon implements; [`Labelled`] puts its
//!   samples under `daemon`/`instance` labels and adds `teamtalk_healthy`.
//! - The admin port serving `GET /metrics` and `GET /healthz` is a daemon
//!   of its own on the shared runtime: [`crate::runtime::admin`].
//!
//! The metric names and their meaning are listed in `docs/operations.md`.

mod counters;
mod histogram;
mod text;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use counters::{CloseCounters, CommandCounters, CounterMap, close_kind, render_net};
pub use histogram::{Histogram, HistogramSnapshot, LATENCY_BUCKETS};
pub use text::{CONTENT_TYPE, Kind, Scrape};

/// A daemon (or a whole system) as the admin endpoint sees it.
///
/// Implementations read counters that the daemon's threads keep anyway;
/// nothing here may block for long, since scrapes are served on one thread.
pub trait MetricsSource: Send + Sync {
    /// Adds the current value of every metric.
    fn collect(&self, out: &mut Scrape);

    /// Pushes one human-readable line per reason the daemon cannot do its
    /// job right now (a required link down, the store worker gone); none
    /// means healthy.
    fn health(&self, problems: &mut Vec<String>);
}

/// Clears a liveness flag when dropped: held by a daemon thread for its
/// whole life, it reports the thread stopped however it ends, panics
/// included.
#[derive(Debug)]
pub struct ClearOnDrop<'a>(pub &'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// A source whose samples get `daemon` and `instance` labels and whose
/// health reasons are prefixed with them, so several daemons can share one
/// endpoint. Adds `teamtalk_healthy` (1 or 0) per daemon.
pub struct Labelled {
    daemon: &'static str,
    instance: String,
    inner: Arc<dyn MetricsSource>,
}

impl std::fmt::Debug for Labelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Labelled")
            .field("daemon", &self.daemon)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Labelled {
    /// `inner` labelled `daemon="<daemon>",instance="<instance>"`
    /// (conventionally the daemon's main listen address).
    #[must_use]
    pub fn new(
        daemon: &'static str,
        instance: impl Into<String>,
        inner: Arc<dyn MetricsSource>,
    ) -> Self {
        Self {
            daemon,
            instance: instance.into(),
            inner,
        }
    }
}

impl MetricsSource for Labelled {
    fn collect(&self, out: &mut Scrape) {
        let mut problems = Vec::new();
        self.inner.health(&mut problems);
        out.scoped(
            &[("daemon", self.daemon), ("instance", &self.instance)],
            |out| {
                out.gauge(
                    "teamtalk_healthy",
                    "1 when the daemon's /healthz conditions hold, else 0.",
                    &[],
                    if problems.is_empty() { 1.0 } else { 0.0 },
                );
                self.inner.collect(out);
            },
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        let mut own = Vec::new();
        self.inner.health(&mut own);
        problems.extend(
            own.into_iter()
                .map(|p| format!("{} {}: {p}", self.daemon, self.instance)),
        );
    }
}

/// Several sources behind one endpoint; healthy when all are.
impl MetricsSource for Vec<Arc<dyn MetricsSource>> {
    fn collect(&self, out: &mut Scrape) {
        for s in self {
            s.collect(out);
        }
    }

    fn health(&self, problems: &mut Vec<String>) {
        for s in self {
            s.health(problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(bool);

    impl MetricsSource for One {
        fn collect(&self, out: &mut Scrape) {
            out.counter("one_total", "One.", &[], 1);
        }

        fn health(&self, problems: &mut Vec<String>) {
            if !self.0 {
                problems.push("db link down".into());
            }
        }
    }

    #[test]
    fn clear_on_drop_reports_a_panicked_thread_stopped() {
        let flag = Arc::new(AtomicBool::new(true));
        let f = Arc::clone(&flag);
        let ended = std::thread::spawn(move || {
            let _running = ClearOnDrop(&f);
            panic!("the thread dies");
        })
        .join();
        assert!(ended.is_err());
        assert!(!flag.load(Ordering::Relaxed));
    }

    #[test]
    fn labelled_sources_share_families_and_prefix_reasons() {
        let all: Vec<Arc<dyn MetricsSource>> = vec![
            Arc::new(Labelled::new("msg_server", "a:1", Arc::new(One(true)))),
            Arc::new(Labelled::new("msg_server", "b:2", Arc::new(One(false)))),
        ];
        let mut s = Scrape::new();
        all.collect(&mut s);
        let text = s.render();
        assert_eq!(text.matches("# TYPE one_total counter").count(), 1);
        assert!(text.contains("one_total{daemon=\"msg_server\",instance=\"a:1\"} 1\n"));
        assert!(text.contains("teamtalk_healthy{daemon=\"msg_server\",instance=\"b:2\"} 0\n"));
        let mut problems = Vec::new();
        all.health(&mut problems);
        assert_eq!(problems, vec!["msg_server b:2: db link down".to_owned()]);
    }
}
