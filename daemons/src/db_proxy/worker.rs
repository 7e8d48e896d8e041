//! The store worker: one thread applies requests in arrival order and stores
//! messages with group commit.
//!
//! # Why one thread
//!
//! TeamTalk's db_proxy handed each request to a random thread of a pool, so
//! two messages of one conversation could be stored, numbered and answered in
//! either order. Here every request goes through one bounded queue to one
//! thread, so requests are applied, and answered, in the order they arrived:
//! a conversation's messages get increasing ids in arrival order, and a read
//! sees every write that arrived before it.
//!
//! # Why that is still fast: group commit
//!
//! A durable SQLite commit costs an fsync, which bounds one-at-a-time storing
//! to a few hundred messages per second on ordinary disks. The worker takes
//! everything queued (up to [`WorkerConfig::batch_limit`]) and stores each run
//! of consecutive messages with [`Store::store_messages`](crate::store::Store::store_messages):
//! one transaction, one fsync, then the replies, in order. Under light load a
//! batch is one message and nothing waits; under heavy load batches grow and
//! so does throughput (see `benches/db_store.rs`). Other requests split the
//! runs, so a read that follows a write in the same batch sees it. Nothing is
//! answered before it is durable.
//!
//! # Logins aside
//!
//! A login check costs an Argon2 verification (tens of milliseconds) and
//! touches nothing that messages write, so validations run on
//! [`WorkerConfig::login_threads`] threads of their own instead of stalling
//! the queue. Their replies may therefore overtake earlier requests of the
//! same connection; msg_server pairs replies by `attach_data`, and TeamTalk
//! gave no ordering at all.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use teamtalk_proto::Pdu;

use super::handler::{DbProxy, PreparedMessage};
use crate::metrics::{Histogram, HistogramSnapshot};

/// Default capacity of the request queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Default largest group commit.
pub const DEFAULT_BATCH_LIMIT: usize = 256;
/// Default number of login threads.
pub const DEFAULT_LOGIN_THREADS: usize = 2;

/// How the worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Requests queued before [`Submitter::submit`] blocks (backpressure).
    pub queue_capacity: usize,
    /// Most requests taken for one batch.
    pub batch_limit: usize,
    /// Threads that check logins; 0 checks them in the store worker, in
    /// order with everything else.
    pub login_threads: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            batch_limit: DEFAULT_BATCH_LIMIT,
            login_threads: DEFAULT_LOGIN_THREADS,
        }
    }
}

impl WorkerConfig {
    /// The defaults with another batch limit (at least 1).
    #[must_use]
    pub fn with_batch_limit(mut self, batch_limit: usize) -> Self {
        self.batch_limit = batch_limit.max(1);
        self
    }

    /// The defaults with another number of login threads.
    #[must_use]
    pub fn with_login_threads(mut self, login_threads: usize) -> Self {
        self.login_threads = login_threads;
        self
    }
}

/// The worker has stopped; the request was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("db_proxy worker stopped")]
pub struct WorkerStopped;

/// Where replies go: called with the request's destination and the reply,
/// on a worker thread, in order for the store worker's replies.
pub type ReplySink<T> = Arc<dyn Fn(T, Pdu) + Send + Sync>;

struct Job<T> {
    to: T,
    pdu: Pdu,
}

/// Hands requests to a running [`StoreWorker`]; cheap to clone.
pub struct Submitter<T> {
    store_tx: Sender<Job<T>>,
    login_tx: Option<Sender<Job<T>>>,
}

impl<T> Clone for Submitter<T> {
    fn clone(&self) -> Self {
        Self {
            store_tx: self.store_tx.clone(),
            login_tx: self.login_tx.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Submitter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("queued", &self.store_tx.len())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Submitter<T> {
    /// Queues a request whose reply goes to `to`. Blocks while the queue is
    /// full, which slows the caller (the network side) down to the store's
    /// pace instead of letting memory grow.
    ///
    /// # Errors
    /// [`WorkerStopped`] after the worker shut down.
    pub fn submit(&self, to: T, pdu: Pdu) -> Result<(), WorkerStopped> {
        let tx = match &self.login_tx {
            Some(login) if DbProxy::is_login(&pdu) => login,
            _ => &self.store_tx,
        };
        tx.send(Job { to, pdu }).map_err(|_| WorkerStopped)
    }

    /// Like [`Submitter::submit`] but never blocks; gives the request back
    /// when the queue is full.
    ///
    /// # Errors
    /// `Err(Some((to, pdu)))` when the queue is full, `Err(None)` after the
    /// worker shut down.
    #[allow(clippy::type_complexity)]
    pub fn try_submit(&self, to: T, pdu: Pdu) -> Result<(), Option<(T, Pdu)>> {
        let tx = match &self.login_tx {
            Some(login) if DbProxy::is_login(&pdu) => login,
            _ => &self.store_tx,
        };
        tx.try_send(Job { to, pdu }).map_err(|e| match e {
            TrySendError::Full(job) => Some((job.to, job.pdu)),
            TrySendError::Disconnected(_) => None,
        })
    }

    /// Requests waiting in the store queue.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.store_tx.len()
    }
}

/// What the store worker measures, readable from any thread while it runs.
pub struct WorkerMetrics {
    store_latency: Histogram,
    alive: AtomicBool,
    queued: Box<dyn Fn() -> usize + Send + Sync>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics")
            .field("alive", &self.alive())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    /// Seconds each group commit of messages took (one observation per
    /// store transaction, whatever its size).
    #[must_use]
    pub fn store_latency(&self) -> HistogramSnapshot {
        self.store_latency.snapshot()
    }

    /// Whether the store thread is running (false once it ended, by
    /// shutdown or by a panic).
    #[must_use]
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Requests waiting in the store queue.
    #[must_use]
    pub fn queued(&self) -> usize {
        (self.queued)()
    }
}

/// Clears [`WorkerMetrics::alive`] when the store thread ends, however.
struct AliveGuard(Arc<WorkerMetrics>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Relaxed);
    }
}

/// The store worker thread and the login threads. See the `db_proxy` module docs.
///
/// Dropping it (or [`StoreWorker::shutdown`]) lets the threads finish what was
/// queued, once every [`Submitter`] is gone, and joins them.
pub struct StoreWorker<T> {
    submitter: Option<Submitter<T>>,
    threads: Vec<JoinHandle<()>>,
    metrics: Arc<WorkerMetrics>,
}

impl<T> std::fmt::Debug for StoreWorker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWorker")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> StoreWorker<T> {
    /// Starts the threads; replies go to `sink`.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn spawn(
        proxy: Arc<DbProxy>,
        cfg: &WorkerConfig,
        sink: impl Fn(T, Pdu) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let sink: ReplySink<T> = Arc::new(sink);
        let (store_tx, store_rx) = crossbeam_channel::bounded(cfg.queue_capacity.max(1));
        // A receiver does not keep the channel open for the worker: its
        // loop still ends once every sender is gone.
        let depth = store_rx.clone();
        let metrics = Arc::new(WorkerMetrics {
            store_latency: Histogram::latency(),
            alive: AtomicBool::new(true),
            queued: Box::new(move || depth.len()),
        });
        let mut worker = Self {
            submitter: None,
            threads: Vec::new(),
            metrics: Arc::clone(&metrics),
        };
        let batch_limit = cfg.batch_limit.max(1);
        {
            let proxy = Arc::clone(&proxy);
            let sink = Arc::clone(&sink);
            let spawned = std::thread::Builder::new()
                .name("db-proxy-store".to_owned())
                .spawn(move || {
                    let guard = AliveGuard(metrics);
                    store_loop(&proxy, &store_rx, batch_limit, &guard.0, &*sink);
                });
            match spawned {
                Ok(t) => worker.threads.push(t),
                Err(e) => {
                    worker.metrics.alive.store(false, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        let login_tx = if cfg.login_threads > 0 {
            let (tx, rx) = crossbeam_channel::bounded::<Job<T>>(cfg.queue_capacity.max(1));
            for i in 0..cfg.login_threads {
                let proxy = Arc::clone(&proxy);
                let sink = Arc::clone(&sink);
                let rx = rx.clone();
                worker.threads.push(
                    std::thread::Builder::new()
                        .name(format!("db-proxy-login-{i}"))
                        .spawn(move || {
                            for job in rx {
                                if let Some(reply) = proxy.handle(&job.pdu) {
                                    sink(job.to, reply);
                                }
                            }
                        })?,
                );
            }
            Some(tx)
        } else {
            None
        };
        worker.submitter = Some(Submitter { store_tx, login_tx });
        Ok(worker)
    }

    /// A handle for queueing requests.
    ///
    /// # Panics
    /// Never: the submitter exists from `spawn` until the worker is dropped.
    #[must_use]
    pub fn submitter(&self) -> Submitter<T> {
        self.submitter
            .clone()
            .unwrap_or_else(|| unreachable!("submitter taken only on drop"))
    }

    /// The worker's measurements (store latency, liveness, queue depth).
    #[must_use]
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Stops taking requests once every [`Submitter`] is dropped, finishes
    /// the queued ones (stored and answered) and joins the threads.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl<T> Drop for StoreWorker<T> {
    fn drop(&mut self) {
        self.submitter = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a db_proxy worker thread panicked");
            }
        }
    }
}

/// The store worker's loop: block for one request, take what else is queued
/// up to the batch limit, apply the batch.
fn store_loop<T>(
    proxy: &DbProxy,
    rx: &Receiver<Job<T>>,
    batch_limit: usize,
    metrics: &WorkerMetrics,
    sink: &dyn Fn(T, Pdu),
) {
    let mut batch = Vec::with_capacity(batch_limit);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < batch_limit {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(proxy, batch.drain(..), Some(&metrics.store_latency), sink);
    }
}

/// Applies one batch in order: consecutive storable messages are stored with
/// one commit; any other request first flushes the run before it, so it sees
/// those writes, then runs on its own.
fn run_batch<T>(
    proxy: &DbProxy,
    jobs: impl Iterator<Item = Job<T>>,
    latency: Option<&Histogram>,
    sink: &dyn Fn(T, Pdu),
) {
    let mut run: Vec<(T, PreparedMessage)> = Vec::new();
    for job in jobs {
        if let Some(prepared) = proxy.prepare_message(&job.pdu) {
            run.push((job.to, prepared));
            continue;
        }
        flush(proxy, &mut run, latency, sink);
        if let Some(reply) = proxy.handle(&job.pdu) {
            sink(job.to, reply);
        }
    }
    flush(proxy, &mut run, latency, sink);
}

fn flush<T>(
    proxy: &DbProxy,
    run: &mut Vec<(T, PreparedMessage)>,
    latency: Option<&Histogram>,
    sink: &dyn Fn(T, Pdu),
) {
    if run.is_empty() {
        return;
    }
    let (dests, prepared): (Vec<T>, Vec<PreparedMessage>) = run.drain(..).unzip();
    let started = crate::clock::now();
    let replies = proxy.store_prepared(prepared);
    if let Some(h) = latency {
        h.observe_duration(crate::clock::now().saturating_duration_since(started));
    }
    for (to, reply) in dests.into_iter().zip(replies) {
        sink(to, reply);
    }
}

#[cfg(test)]
pub(super) fn run_batch_for_test<T>(proxy: &DbProxy, jobs: Vec<(T, Pdu)>, sink: &dyn Fn(T, Pdu)) {
    run_batch(
        proxy,
        jobs.into_iter().map(|(to, pdu)| Job { to, pdu }),
        None,
        sink,
    );
}
