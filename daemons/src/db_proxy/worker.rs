//! The store workers: where db_proxy's blocking work runs, as
//! [`Worker`]s of the shared runtime.
//!
//! # Why one store lane
//!
//! TeamTalk's db_proxy handed each request to a random thread of a pool, so
//! two messages of one conversation could be stored, numbered and answered in
//! either order. Here every request but logins goes through one queue to one
//! thread (the store lane), so requests are applied, and answered, in the
//! order they arrived: a conversation's messages get increasing ids in
//! arrival order, and a read sees every write that arrived before it.
//!
//! # Why that is still fast: group commit
//!
//! A durable SQLite commit costs an fsync, which bounds one-at-a-time storing
//! to a few hundred messages per second on ordinary disks. The runtime hands
//! the lane everything queued (up to the plan's batch limit) as one batch,
//! and the lane stores each run of consecutive messages with
//! [`Store::store_messages`](crate::store::Store::store_messages): one
//! transaction, one fsync, then the replies, in order. Under light load a
//! batch is one message and nothing waits; under heavy load batches grow and
//! so does throughput (see `benches/db_store.rs`). Other requests split the
//! runs, so a read that follows a write in the same batch sees it. Nothing is
//! answered before it is durable.
//!
//! # Logins aside
//!
//! A login check costs an Argon2 verification (tens of milliseconds) and
//! touches nothing that messages write, so validations run on login lanes
//! of their own instead of stalling the store lane. Their replies may
//! therefore overtake earlier requests of the same connection; msg_server
//! pairs replies by `attach_data`, and TeamTalk gave no ordering at all.

use std::sync::Arc;
use std::time::Instant;

use teamtalk_proto::Pdu;

use super::handler::{DbProxy, PreparedMessage};
use crate::metrics::Histogram;
use crate::runtime::Worker;

/// Default capacity of each lane's queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Default largest group commit. With the SQLite store's message log a
/// batch of one-to-one messages costs one append and one `fdatasync`
/// whatever its size, so the lane takes everything a busy msg_server has in
/// flight at once (256 capped `teamtalk bench msg` at ~57,000 messages/s
/// with the fsync, not the CPU, setting the pace).
pub const DEFAULT_BATCH_LIMIT: usize = 2048;
/// Default number of login lanes.
pub const DEFAULT_LOGIN_THREADS: usize = 2;

/// How the lanes run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Requests queued per lane before the network side waits
    /// (backpressure).
    pub queue_capacity: usize,
    /// Most requests taken for one batch.
    pub batch_limit: usize,
    /// Login lanes; 0 checks logins in the store lane, in order with
    /// everything else.
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

    /// The defaults with another number of login lanes.
    #[must_use]
    pub fn with_login_threads(mut self, login_threads: usize) -> Self {
        self.login_threads = login_threads;
        self
    }
}

/// One request for a lane: the PDU and where its reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job<T> {
    /// The connection the reply goes to.
    pub to: T,
    /// The request.
    pub pdu: Pdu,
    /// When the App queued it (monotonic), for the store lane's queue-wait
    /// histogram.
    pub queued: Instant,
}

/// The outcome of one [`Job`]: exactly one per job, in the lane's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<T> {
    /// The requesting connection.
    pub to: T,
    /// The reply, or `None` for requests that have none (a read ack).
    pub pdu: Option<Pdu>,
    /// Whether the store lane ran it (for its queue-depth gauge).
    pub from_store: bool,
}

/// Which kind of lane a worker is.
#[derive(Debug, Clone)]
enum Lane {
    /// Everything but logins, in order, with group commit; measures each
    /// commit of messages and how long each request waited in the queue.
    Store {
        commit: Arc<Histogram>,
        wait: Arc<Histogram>,
    },
    /// Login validations only.
    Login,
}

/// A db_proxy lane: the store lane or a login lane.
#[derive(Debug)]
pub struct DbWorker<T> {
    proxy: Arc<DbProxy>,
    lane: Lane,
    _to: std::marker::PhantomData<fn() -> T>,
}

impl<T> DbWorker<T> {
    /// The store lane; each group commit's duration goes into `commit`,
    /// and each request's time in the queue (from the App queueing it to
    /// its batch starting) into `wait`.
    #[must_use]
    pub fn store(proxy: Arc<DbProxy>, commit: Arc<Histogram>, wait: Arc<Histogram>) -> Self {
        Self {
            proxy,
            lane: Lane::Store { commit, wait },
            _to: std::marker::PhantomData,
        }
    }

    /// A login lane.
    #[must_use]
    pub fn login(proxy: Arc<DbProxy>) -> Self {
        Self {
            proxy,
            lane: Lane::Login,
            _to: std::marker::PhantomData,
        }
    }
}

impl<T: Send + 'static> Worker for DbWorker<T> {
    type Job = Job<T>;
    type Done = Reply<T>;

    fn run(&mut self, jobs: Vec<Job<T>>, done: &mut Vec<Reply<T>>) {
        match &self.lane {
            Lane::Store { commit, wait } => {
                let started = crate::clock::now();
                for job in &jobs {
                    wait.observe_duration(started.saturating_duration_since(job.queued));
                }
                run_batch(&self.proxy, jobs, Some(commit), done);
            }
            Lane::Login => {
                for job in jobs {
                    done.push(Reply {
                        pdu: self.proxy.handle(&job.pdu),
                        to: job.to,
                        from_store: false,
                    });
                }
            }
        }
    }
}

/// Applies one batch in order: consecutive storable messages are stored with
/// one commit; any other request first flushes the run before it, so it sees
/// those writes, then runs on its own.
pub(super) fn run_batch<T>(
    proxy: &DbProxy,
    jobs: Vec<Job<T>>,
    latency: Option<&Histogram>,
    done: &mut Vec<Reply<T>>,
) {
    let mut run: Vec<(T, PreparedMessage)> = Vec::new();
    for job in jobs {
        if let Some(prepared) = proxy.prepare_message(&job.pdu) {
            run.push((job.to, prepared));
            continue;
        }
        flush(proxy, &mut run, latency, done);
        done.push(Reply {
            pdu: proxy.handle(&job.pdu),
            to: job.to,
            from_store: true,
        });
    }
    flush(proxy, &mut run, latency, done);
}

fn flush<T>(
    proxy: &DbProxy,
    run: &mut Vec<(T, PreparedMessage)>,
    latency: Option<&Histogram>,
    done: &mut Vec<Reply<T>>,
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
        done.push(Reply {
            to,
            pdu: Some(reply),
            from_store: true,
        });
    }
}

/// Runs one batch through the store lane's logic and hands each reply to
/// `sink`, for handler tests that do not care about lanes.
#[cfg(test)]
pub(super) fn run_batch_for_test<T>(proxy: &DbProxy, jobs: Vec<(T, Pdu)>, sink: &dyn Fn(T, Pdu)) {
    let queued = crate::clock::now();
    let jobs = jobs
        .into_iter()
        .map(|(to, pdu)| Job { to, pdu, queued })
        .collect();
    let mut done = Vec::new();
    run_batch(proxy, jobs, None, &mut done);
    for r in done {
        if let Some(pdu) = r.pdu {
            sink(r.to, pdu);
        }
    }
}
