//! One-to-one messages that are durable in the message log
//! ([`super::journal`]) and not yet in SQLite's tables, and the thread that
//! moves them there.
//!
//! # The contract
//!
//! [`MessageLog::log`] gives each message its id, decides duplicates and
//! appends the batch to the log (one write, one `fdatasync`); from then on
//! the message is stored, and its [`Stored`] answer may be acknowledged.
//! The applier thread ([`run_applier`]) moves what is logged into SQLite, many
//! batches in one transaction (rows, unread counts, sessions, dedupe keys,
//! and the last record's sequence number in `journal_state`), then removes
//! the log segments it emptied. Every read or write of the store other
//! than the directory's (users, departments, device tokens, group
//! definitions) first waits until everything logged is applied
//! ([`MessageLog::flush`]), so it sees every message acknowledged before
//! it: the store lane's promise that a read sees the writes that arrived
//! before it.
//!
//! # Why it is faster
//!
//! SQLite's cost per commit is the distinct pages it dirties, and a
//! conversation's pages are the same from one message to the next. Applying
//! thousands of messages at once writes each conversation's last page of
//! messages, its dedupe keys, both unread rows and both sessions once for
//! all of them, and the per-conversation counters, unread counts and
//! sessions are one statement per conversation, not per message. The
//! applier runs beside the store lane, so a message's acknowledgement never
//! waits for an apply, only for its own append.
//!
//! # What the state holds
//!
//! For the logged messages not yet applied only (bounded by
//! [`MAX_BACKLOG`]): each conversation's last id handed out, so ids continue
//! before the first of them reaches SQLite; other conversations' last ids are
//! looked up in SQLite on a connection of the log's own, read-only, which
//! never waits for the applier's. Resends are recognised by the store's
//! in-memory dedupe index ([`super::dedupe`]), which remembers a key as soon
//! as its message is logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::super::{MsgId, NewMessage, SessionType, StoreError, StoreResult, Stored, UserId};
use super::dedupe::{self, DedupeIndex};
use super::journal::{self, Entry, Journal};
use super::{
    COUNT_UNREAD_SQL, CREATE_RELATION_SQL, INSERT_DEDUPE_SQL, INSERT_MESSAGE_SQL, Inner,
    MAX_DEDUPE_KEYS, TOUCH_SESSION_SQL, check_message, pair, prune_dedupe, sql,
};
#[cfg(doc)]
use crate::store::DEDUPE_WINDOW_SECS;

/// Logged messages at which the applier starts at once instead of waiting
/// for [`APPLY_AFTER`].
pub(crate) const APPLY_AT: usize = 4096;
/// Longest a logged message waits before the applier takes it, under light
/// load (so reads seldom have to wait for an apply).
const APPLY_AFTER: Duration = Duration::from_millis(100);
/// Logged, unapplied messages at which logging waits for the applier
/// (backpressure on the store lane, and the bound of the in-memory state).
pub(crate) const MAX_BACKLOG: usize = 65_536;
/// Bytes of logged, unapplied bodies at which logging waits likewise.
const MAX_BACKLOG_BYTES: usize = 64 << 20;
/// Wait before retrying an apply that failed (doubling to 5 s).
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Creates the table holding the last applied sequence number (migration 6).
pub(crate) const MIGRATION: &str = "
    -- The message log's last record whose messages are in these tables,
    -- written in the transaction that applies them.
    CREATE TABLE journal_state (
        id          INTEGER PRIMARY KEY CHECK (id = 0),
        applied_seq INTEGER NOT NULL
    );
    INSERT INTO journal_state (id, applied_seq) VALUES (0, 0);
";

/// The message log of one database file: the state under one mutex, and a
/// condition variable on which the applier waits for work and `flush` and
/// a full backlog wait for the applier.
#[derive(Debug)]
pub(crate) struct MessageLog {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    dir: PathBuf,
    /// The segment appends go to.
    segment: Journal,
    /// Older segments whose records are not all applied yet.
    closed: Vec<PathBuf>,
    /// The log's read-only connection for ids and dedupe keys.
    lookup: Connection,
    /// Logged, not yet taken by the applier, in log order.
    entries: Vec<Entry>,
    /// Bytes of their bodies.
    entry_bytes: usize,
    /// When the first of `entries` was logged.
    oldest: Option<Instant>,
    /// Entries the applier is writing now.
    applying: usize,
    /// Last id handed out per conversation (smaller id, larger id) among
    /// the logged messages not yet applied.
    last_ids: HashMap<(UserId, UserId), MsgId>,
    /// The store's dedupe index: a logged message's key is remembered there
    /// as soon as its append is durable (a key counts for
    /// [`DEDUPE_WINDOW_SECS`] after that).
    dedupe: Arc<Mutex<DedupeIndex>>,
    /// Sequence number of the last record appended.
    last_seq: u64,
    /// Someone waits in `flush`: apply without waiting for more.
    urgent: bool,
    /// Why the last apply failed, until one succeeds.
    failure: Option<String>,
    /// The store is closing: apply the rest, then end.
    closing: bool,
    /// Tests: end without applying, as a crash would.
    #[cfg(test)]
    abandon: bool,
    /// Tests: apply nothing until the store closes.
    #[cfg(test)]
    paused: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn applied_seq(conn: &Connection) -> StoreResult<u64> {
    let seq: i64 = conn
        .query_row(
            "SELECT applied_seq FROM journal_state WHERE id = 0",
            [],
            |r| r.get(0),
        )
        .map_err(sql("reading the message log's position"))?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

impl MessageLog {
    /// Opens the log of the database in `dir`: applies what its segments
    /// hold beyond the tables (messages acknowledged before a crash), removes
    /// them and starts a fresh segment. `lookup` is a second connection to
    /// the same database.
    pub(crate) fn open(
        dir: &Path,
        writer: &mut Connection,
        lookup: Connection,
        dedupe: Arc<Mutex<DedupeIndex>>,
    ) -> StoreResult<Self> {
        let recovered = journal::recover(dir)?;
        let old = journal::segments(dir)?;
        let applied = applied_seq(writer)?;
        let mut last_seq = applied;
        let mut entries = Vec::new();
        for (seq, mut batch) in recovered.records {
            last_seq = last_seq.max(seq);
            if seq > applied {
                entries.append(&mut batch);
            }
        }
        if !entries.is_empty() {
            tracing::info!(
                messages = entries.len(),
                "message log: applying messages logged before the last stop"
            );
            apply_entries(writer, &entries, last_seq)?;
        }
        for segment in &old {
            journal::retire(dir, segment)?;
        }
        let segment = Journal::create(dir, last_seq + 1)?;
        journal::ensure_spare(dir)?;
        Ok(Self {
            state: Mutex::new(State {
                dir: dir.to_path_buf(),
                segment,
                closed: Vec::new(),
                lookup,
                entries: Vec::new(),
                entry_bytes: 0,
                oldest: None,
                applying: 0,
                last_ids: HashMap::new(),
                dedupe,
                last_seq,
                urgent: false,
                failure: None,
                closing: false,
                #[cfg(test)]
                abandon: false,
                #[cfg(test)]
                paused: false,
            }),
            changed: Condvar::new(),
        })
    }

    /// Stores a batch of one-to-one messages through the log: ids, dedupe
    /// and one durable append. One result per message, in order; an error of
    /// the whole (the log could not be written) stores none of them.
    pub(crate) fn log(
        &self,
        msgs: &[NewMessage],
        now: u32,
    ) -> StoreResult<Vec<StoreResult<Stored>>> {
        let mut st = lock(&self.state);
        while st.entries.len() + st.applying >= MAX_BACKLOG || st.entry_bytes >= MAX_BACKLOG_BYTES {
            if let Some(why) = &st.failure {
                return Err(StoreError::LogApply(why.clone()));
            }
            st.urgent = true;
            self.changed.notify_all();
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let was_empty = st.entries.is_empty();
        let out = st.log(msgs, now)?;
        // The applier waits without a deadline while nothing is logged, and
        // with one (the oldest message's) otherwise.
        if (was_empty && !st.entries.is_empty()) || st.entries.len() >= APPLY_AT {
            self.changed.notify_all();
        }
        Ok(out)
    }

    /// Waits until everything logged is in the tables. Fails at once with
    /// the last apply error if the applier cannot apply.
    pub(crate) fn flush(&self) -> StoreResult<()> {
        let mut st = lock(&self.state);
        loop {
            if st.entries.is_empty() && st.applying == 0 {
                return Ok(());
            }
            if let Some(why) = &st.failure {
                return Err(StoreError::LogApply(why.clone()));
            }
            st.urgent = true;
            self.changed.notify_all();
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Tells the applier to apply the rest and end.
    pub(crate) fn close(&self) {
        lock(&self.state).closing = true;
        self.changed.notify_all();
    }

    /// Tells the applier to end without applying anything more, as a crash
    /// would leave things.
    #[cfg(test)]
    pub(crate) fn abandon(&self) {
        let mut st = lock(&self.state);
        st.closing = true;
        st.abandon = true;
        drop(st);
        self.changed.notify_all();
    }

    /// Stops applying until the store closes (a read would then wait
    /// forever: tests only log and crash).
    #[cfg(test)]
    pub(crate) fn pause(&self) {
        lock(&self.state).paused = true;
    }

    /// Applies again after [`Self::pause`].
    #[cfg(test)]
    pub(crate) fn resume(&self) {
        lock(&self.state).paused = false;
        self.changed.notify_all();
    }

    /// Bytes in the segment appends go to.
    #[cfg(test)]
    pub(crate) fn segment_len(&self) -> u64 {
        lock(&self.state).segment.len()
    }
}

impl State {
    fn log(&mut self, msgs: &[NewMessage], now: u32) -> StoreResult<Vec<StoreResult<Stored>>> {
        let mut out = Vec::with_capacity(msgs.len());
        let mut fresh: Vec<Entry> = Vec::with_capacity(msgs.len());
        // Ids and keys of this batch, merged into the state only once the
        // append succeeded.
        let mut batch_ids: HashMap<(UserId, UserId), MsgId> = HashMap::new();
        let mut batch_keys: HashMap<dedupe::Name, MsgId> = HashMap::new();
        let index = self.dedupe.clone();
        let index = index.lock().unwrap_or_else(PoisonError::into_inner);
        // One read transaction for the batch's lookups: SQLite takes its file
        // locks once instead of around every statement (they were 4 % of the
        // store thread's time, `fcntl` calls, at 40,000 messages/s).
        let reading = self
            .lookup
            .unchecked_transaction()
            .map_err(sql("starting the message log's lookups"))?;
        for msg in msgs {
            if let Err(e) = check_message(msg) {
                out.push(Err(e));
                continue;
            }
            let key = msg.dedupe_key.as_deref().filter(|k| !k.is_empty());
            let name = key.map(|k| dedupe::name(SessionType::Single, msg.from, msg.to, k));
            if let Some(name) = &name
                && let Some(id) = batch_keys
                    .get(name)
                    .copied()
                    .or_else(|| index.find(name, now))
            {
                out.push(Ok(Stored::Duplicate(id)));
                continue;
            }
            let conv = pair(msg.from, msg.to);
            let last = match batch_ids.get(&conv).or_else(|| self.last_ids.get(&conv)) {
                Some(id) => *id,
                None => stored_last_id(&reading, conv)?,
            };
            let Some(msg_id) = last.checked_add(1) else {
                out.push(Err(StoreError::MsgIdsExhausted(conv.0, conv.1)));
                continue;
            };
            batch_ids.insert(conv, msg_id);
            if let Some(name) = name {
                batch_keys.insert(name, msg_id);
            }
            fresh.push(Entry {
                from: msg.from,
                to: msg.to,
                msg_id,
                msg_type: msg.msg_type,
                create_time: msg.create_time,
                now,
                key: key.map(<[u8]>::to_vec),
                data: msg.data.clone(),
            });
            out.push(Ok(Stored::New(msg.stored_as(msg_id))));
        }
        // A read: ending it by rollback releases the snapshot the same way.
        drop(reading);
        if fresh.is_empty() {
            return Ok(out);
        }
        let seq = self.last_seq + 1;
        self.segment.append(seq, &fresh)?;
        self.last_seq = seq;
        self.last_ids.extend(batch_ids);
        let mut index = index;
        for (name, id) in batch_keys {
            index.remember(name, id, now);
        }
        drop(index);
        self.entry_bytes += fresh.iter().map(|e| e.data.len()).sum::<usize>();
        if self.entries.is_empty() {
            self.oldest = Some(crate::clock::now());
        }
        self.entries.extend(fresh);
        Ok(out)
    }

    /// Whether the applier should take the logged messages now.
    fn ready(&self, now: Instant) -> bool {
        #[cfg(test)]
        if self.paused && !self.closing {
            return false;
        }
        !self.entries.is_empty()
            && (self.urgent
                || self.closing
                || self.entries.len() >= APPLY_AT
                || self
                    .oldest
                    .is_some_and(|t| now.saturating_duration_since(t) >= APPLY_AFTER))
    }

    /// Takes the logged messages for an apply, starting a new segment so
    /// that the ones they are in can be removed once they are applied.
    fn take(&mut self) -> StoreResult<(Vec<Entry>, Vec<PathBuf>, u64)> {
        if self.segment.len() > 0 {
            let fresh = Journal::create(&self.dir, self.last_seq + 1)?;
            let full = std::mem::replace(&mut self.segment, fresh);
            self.closed.push(full.path().to_path_buf());
        }
        let entries = std::mem::take(&mut self.entries);
        self.applying = entries.len();
        self.entry_bytes = 0;
        self.oldest = None;
        Ok((entries, std::mem::take(&mut self.closed), self.last_seq))
    }

    /// After a successful apply: forgets the ids that SQLite now holds
    /// (unless a later message of the conversation is still logged).
    fn applied(&mut self, entries: &[Entry]) {
        for e in entries {
            let conv = pair(e.from, e.to);
            if self.last_ids.get(&conv) == Some(&e.msg_id) {
                self.last_ids.remove(&conv);
            }
        }
    }
}

/// The applier thread's body: waits for logged messages, applies them in
/// one transaction on the store's writer connection, removes the segments
/// they were in, and wakes whoever waits. Ends when the store closes, after
/// applying the rest.
pub(crate) fn run_applier(log: &MessageLog, inner: &Mutex<Inner>, nice: i32) {
    lower_priority(nice);
    let mut retry = RETRY_FIRST;
    loop {
        let mut st = lock(&log.state);
        let taken = loop {
            #[cfg(test)]
            if st.abandon {
                return;
            }
            let now = crate::clock::now();
            if st.ready(now) {
                break st.take();
            }
            if st.closing && st.entries.is_empty() {
                return;
            }
            st = match st.oldest {
                None => log.changed.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(t) => {
                    let left = APPLY_AFTER.saturating_sub(now.saturating_duration_since(t));
                    log.changed
                        .wait_timeout(st, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        };
        let (entries, segments, last_seq) = match taken {
            Ok(t) => t,
            Err(e) => {
                st.failure = Some(e.to_string());
                drop(st);
                log.changed.notify_all();
                tracing::warn!(error = %e, retry_in = ?retry, "message log: cannot start a segment");
                std::thread::sleep(retry);
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        drop(st);
        let result = {
            let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
            apply_entries(&mut inner.conn, &entries, last_seq)
        };
        let mut st = lock(&log.state);
        st.applying = 0;
        match result {
            Ok(()) => {
                st.applied(&entries);
                st.failure = None;
                if st.entries.is_empty() {
                    st.urgent = false;
                }
                retry = RETRY_FIRST;
                drop(st);
                log.changed.notify_all();
                let dir = lock(&log.state).dir.clone();
                for segment in &segments {
                    if let Err(e) = journal::retire(&dir, segment) {
                        // Harmless but for disk space: the next open skips
                        // its records by sequence number and removes it.
                        tracing::warn!(error = %e, "message log: an applied segment left on disk");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "message log: applying to the tables failed; retrying");
                st.failure = Some(e.to_string());
                // Back in front, in order, with their segments.
                let later = std::mem::replace(&mut st.entries, entries);
                st.entry_bytes = st.entries.iter().map(|e| e.data.len()).sum();
                st.entries.extend(later);
                st.oldest = Some(crate::clock::now());
                let later = std::mem::replace(&mut st.closed, segments);
                st.closed.extend(later);
                drop(st);
                log.changed.notify_all();
                std::thread::sleep(retry);
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Gives the calling thread (the applier) the nice value `nice`
/// ([`StoreOptions::applier_nice`](super::StoreOptions::applier_nice)).
///
/// An apply is a burst of CPU every [`APPLY_AFTER`] on a machine whose
/// other threads carry acknowledgements; at nice 0 it took a core from
/// them for a few milliseconds each time, and the messages arriving then
/// waited. The applier still gets every idle cycle, and if other work
/// keeps every core busy the backlog bound ([`MAX_BACKLOG`]) makes logging
/// wait for it, so it cannot fall behind without limit. Failing to set it
/// is harmless: the applier then competes as any thread does.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice != 0 {
        // On Linux a thread id names that one thread to `setpriority`.
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::warn!(error = %e, nice, "message log: cannot set the applier's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Starts the applier of `log` on its own thread.
pub(crate) fn spawn_applier(
    log: Arc<MessageLog>,
    inner: Arc<Mutex<Inner>>,
    nice: i32,
) -> StoreResult<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-applier".into())
        .spawn(move || run_applier(&log, &inner, nice))
        .map_err(|source| StoreError::Journal {
            path: PathBuf::new(),
            what: "starting the message log's applier thread",
            source,
        })
}

/// The conversation's last id in SQLite (0 when it never had a message).
fn stored_last_id(conn: &Connection, (small, big): (UserId, UserId)) -> StoreResult<MsgId> {
    conn.prepare_cached("SELECT last_msg_id FROM relation WHERE small_id = ?1 AND big_id = ?2")
        .and_then(|mut s| s.query_row(params![small, big], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(sql("reading a conversation's last id"))
}

/// Writes `entries` into the tables in one transaction, with `last_seq` as
/// the log's applied position.
fn apply_entries(conn: &mut Connection, entries: &[Entry], last_seq: u64) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting to apply the message log"))?;
    write_entries(&tx, entries)?;
    let latest = entries.iter().map(|e| e.now).max().unwrap_or(0);
    if entries.iter().any(|e| e.key.is_some()) {
        prune_dedupe(&tx, latest, MAX_DEDUPE_KEYS)?;
    }
    tx.execute(
        "UPDATE journal_state SET applied_seq = max(applied_seq, ?1) WHERE id = 0",
        params![i64::try_from(last_seq).unwrap_or(i64::MAX)],
    )
    .map_err(sql("recording the message log's position"))?;
    tx.commit().map_err(sql("committing the message log"))
}

/// Writes `entries` inside the caller's transaction: per conversation its
/// row and counter, per message its row and key, per (user, peer) the unread
/// count and both recent sessions.
fn write_entries(conn: &Connection, entries: &[Entry]) -> StoreResult<()> {
    // Conversation → (its last id among the entries, its row id, the time
    // of its first entry: `created` if the conversation is new).
    let mut convs: HashMap<(UserId, UserId), (MsgId, i64, u32)> = HashMap::new();
    let mut unread: HashMap<(UserId, UserId), u32> = HashMap::new();
    let mut sessions: HashMap<(UserId, UserId), u32> = HashMap::new();
    for e in entries {
        let last = convs.entry(pair(e.from, e.to)).or_insert((0, 0, e.now));
        last.0 = last.0.max(e.msg_id);
        *unread.entry((e.to, e.from)).or_default() += 1;
        for side in [(e.from, e.to), (e.to, e.from)] {
            let t = sessions.entry(side).or_default();
            *t = (*t).max(e.now);
        }
    }
    {
        let mut create = conn
            .prepare_cached(CREATE_RELATION_SQL)
            .map_err(sql("creating conversation"))?;
        let mut advance = conn
            .prepare_cached(
                "UPDATE relation SET last_msg_id = max(last_msg_id, ?3)
                 WHERE small_id = ?1 AND big_id = ?2 RETURNING id",
            )
            .map_err(sql("assigning message id"))?;
        for (&(small, big), (last, row, first)) in &mut convs {
            create
                .execute(params![small, big, *first])
                .map_err(sql("creating conversation"))?;
            *row = advance
                .query_row(params![small, big, *last], |r| r.get(0))
                .map_err(sql("assigning message id"))?;
        }
    }
    {
        let mut insert = conn
            .prepare_cached(INSERT_MESSAGE_SQL)
            .map_err(sql("inserting message"))?;
        let mut remember = conn
            .prepare_cached(INSERT_DEDUPE_SQL)
            .map_err(sql("remembering dedupe key"))?;
        let single = SessionType::Single.as_u32();
        for e in entries {
            let row = convs.get(&pair(e.from, e.to)).map_or(0, |c| c.1);
            insert
                .execute(params![
                    row,
                    e.msg_id,
                    e.from,
                    e.to,
                    e.msg_type,
                    e.data,
                    e.create_time
                ])
                .map_err(sql("inserting message"))?;
            if let Some(key) = &e.key {
                remember
                    .execute(params![single, e.from, e.to, key, e.msg_id, e.now])
                    .map_err(sql("remembering dedupe key"))?;
            }
        }
    }
    let mut count = conn
        .prepare_cached(COUNT_UNREAD_SQL)
        .map_err(sql("counting unread"))?;
    for ((user, peer), n) in unread {
        count
            .execute(params![user, peer, n])
            .map_err(sql("counting unread"))?;
    }
    let mut touch = conn
        .prepare_cached(TOUCH_SESSION_SQL)
        .map_err(sql("updating sessions"))?;
    let single = SessionType::Single.as_u32();
    for ((user, peer), at) in sessions {
        touch
            .execute(params![user, peer, single, at])
            .map_err(sql("updating sessions"))?;
    }
    Ok(())
}
