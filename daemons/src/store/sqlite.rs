//! Embedded SQLite implementation of [`Store`].
//!
//! One connection behind a mutex: SQLite allows a single writer anyway, and with
//! WAL plus `synchronous=FULL` each commit is one fsync of the log, which is what
//! bounds write throughput. Password hashing (tens of milliseconds) always runs
//! outside the lock so logins do not stall message storage.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};

use super::files::{self, NewOfflineFile, OfflineFile};
use super::{
    Actor, CredentialStamp, DEDUPE_WINDOW_SECS, DEPT_STATUS_DELETED, Department, DeptId,
    DeviceToken, Group, GroupId, GroupType, GroupVersion, LatestMessage, MAX_DEDUPE_KEY_LEN,
    MAX_DEDUPE_KEYS, MAX_LIST_BODY_BYTES, MAX_MSG_DATA_LEN, MAX_MSG_LIST, MAX_MSGS_BY_ID,
    MAX_RECENT_SESSIONS, MemberChange, MembersChanged, MsgId, NewGroup, NewMessage, NewUser,
    RecentSession, SessionType, Store, StoreError, StoreResult, Stored, StoredMessage,
    USER_STATUS_DEPARTED, UnreadSession, UnreadSummary, User, UserCredential, UserId, UserUpdate,
};
use crate::password::{self, HashParams, StoredPassword};

mod admin;
mod dedupe;
mod groups;
mod journal;
mod staged;

use dedupe::DedupeIndex;
pub use journal::JOURNAL_FILE_PREFIX;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use journal::check_scan as check_message_log_scan;
#[cfg(test)]
pub(super) use staged::APPLY_AT;
use staged::MessageLog;

/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "teamtalk.sqlite3";

/// File whose exclusive lock marks the process that owns the message log.
pub const LOG_LOCK_FILE_NAME: &str = "teamtalk.msglog.lock";

/// Schema migrations; entry `i` brings `user_version` from `i` to `i + 1`.
///
/// Append only: a released entry is never edited, so every existing database
/// can be brought forward by running the missing tail.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: users, departments, single chat, sessions, device tokens.
    "
    CREATE TABLE department (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT    NOT NULL,
        priority    INTEGER NOT NULL DEFAULT 0,
        parent_id   INTEGER NOT NULL DEFAULT 0,
        status      INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL,
        updated     INTEGER NOT NULL
    );
    CREATE INDEX department_updated ON department(updated);

    CREATE TABLE user (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT    NOT NULL UNIQUE,
        nick        TEXT    NOT NULL DEFAULT '',
        sex         INTEGER NOT NULL DEFAULT 0,
        dept_id     INTEGER NOT NULL DEFAULT 0,
        avatar      TEXT    NOT NULL DEFAULT '',
        email       TEXT    NOT NULL DEFAULT '',
        phone       TEXT    NOT NULL DEFAULT '',
        domain      TEXT    NOT NULL DEFAULT '',
        status      INTEGER NOT NULL DEFAULT 0,
        sign_info   TEXT    NOT NULL DEFAULT '',
        push_shield INTEGER NOT NULL DEFAULT 0,
        -- Argon2 PHC string when salt IS NULL; TeamTalk md5hex(md5hex + salt) otherwise.
        password    TEXT    NOT NULL,
        salt        TEXT,
        created     INTEGER NOT NULL,
        updated     INTEGER NOT NULL
    );
    CREATE INDEX user_updated ON user(updated);

    -- One row per pair of users who ever talked; last_msg_id is the
    -- per-conversation message id counter.
    CREATE TABLE relation (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        small_id    INTEGER NOT NULL,
        big_id      INTEGER NOT NULL,
        last_msg_id INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL,
        UNIQUE (small_id, big_id)
    );

    CREATE TABLE message (
        relation_id INTEGER NOT NULL REFERENCES relation(id),
        msg_id      INTEGER NOT NULL,
        from_id     INTEGER NOT NULL,
        to_id       INTEGER NOT NULL,
        msg_type    INTEGER NOT NULL,
        content     BLOB    NOT NULL,
        status      INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL,
        PRIMARY KEY (relation_id, msg_id)
    ) WITHOUT ROWID;

    CREATE TABLE single_unread (
        user_id     INTEGER NOT NULL,
        peer_id     INTEGER NOT NULL,
        count       INTEGER NOT NULL,
        PRIMARY KEY (user_id, peer_id)
    ) WITHOUT ROWID;

    CREATE TABLE session (
        user_id      INTEGER NOT NULL,
        peer_id      INTEGER NOT NULL,
        session_type INTEGER NOT NULL,
        status       INTEGER NOT NULL DEFAULT 0,
        created      INTEGER NOT NULL,
        updated      INTEGER NOT NULL,
        PRIMARY KEY (user_id, peer_id, session_type)
    ) WITHOUT ROWID;
    CREATE INDEX session_recent ON session(user_id, updated);

    CREATE TABLE device_token (
        user_id     INTEGER PRIMARY KEY,
        client_type INTEGER NOT NULL,
        token       TEXT    NOT NULL UNIQUE,
        updated     INTEGER NOT NULL
    );
    ",
    // 2: message dedupe keys (resends are not stored twice). `seq` orders the
    // keys by insertion, so the oldest beyond MAX_DEDUPE_KEYS go first.
    "
    CREATE TABLE message_dedupe (
        seq         INTEGER PRIMARY KEY,
        from_id     INTEGER NOT NULL,
        to_id       INTEGER NOT NULL,
        key         BLOB    NOT NULL,
        msg_id      INTEGER NOT NULL,
        created     INTEGER NOT NULL,
        UNIQUE (from_id, to_id, key)
    );
    CREATE INDEX message_dedupe_created ON message_dedupe(created);
    ",
    // 3: groups (see `super::groups`), and dedupe keys told apart by session
    // type, since a group id and a user id may be equal.
    //
    // A member's unread count is `chat_group.last_msg_id - read_msg_id`; they
    // read messages after `joined_msg_id`; their group session is hidden
    // until a message newer than `hidden_msg_id` (NULL: shown).
    "
    CREATE TABLE chat_group (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT    NOT NULL,
        avatar      TEXT    NOT NULL DEFAULT '',
        creator     INTEGER NOT NULL,
        group_type  INTEGER NOT NULL,
        status      INTEGER NOT NULL DEFAULT 0,
        version     INTEGER NOT NULL DEFAULT 1,
        last_msg_id INTEGER NOT NULL DEFAULT 0,
        last_chated INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL,
        updated     INTEGER NOT NULL
    );

    CREATE TABLE group_member (
        group_id      INTEGER NOT NULL REFERENCES chat_group(id),
        user_id       INTEGER NOT NULL,
        status        INTEGER NOT NULL DEFAULT 0,
        shield        INTEGER NOT NULL DEFAULT 0,
        read_msg_id   INTEGER NOT NULL,
        joined_msg_id INTEGER NOT NULL,
        hidden_msg_id INTEGER,
        joined        INTEGER NOT NULL,
        updated       INTEGER NOT NULL,
        PRIMARY KEY (group_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX group_member_user ON group_member(user_id, status, group_id);

    CREATE TABLE group_message (
        group_id    INTEGER NOT NULL REFERENCES chat_group(id),
        msg_id      INTEGER NOT NULL,
        from_id     INTEGER NOT NULL,
        msg_type    INTEGER NOT NULL,
        content     BLOB    NOT NULL,
        status      INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL,
        PRIMARY KEY (group_id, msg_id)
    ) WITHOUT ROWID;

    CREATE TABLE message_dedupe_v3 (
        seq          INTEGER PRIMARY KEY,
        session_type INTEGER NOT NULL,
        from_id      INTEGER NOT NULL,
        to_id        INTEGER NOT NULL,
        key          BLOB    NOT NULL,
        msg_id       INTEGER NOT NULL,
        created      INTEGER NOT NULL,
        UNIQUE (session_type, from_id, to_id, key)
    );
    INSERT INTO message_dedupe_v3 (seq, session_type, from_id, to_id, key, msg_id, created)
        SELECT seq, 1, from_id, to_id, key, msg_id, created FROM message_dedupe;
    DROP TABLE message_dedupe;
    ALTER TABLE message_dedupe_v3 RENAME TO message_dedupe;
    CREATE INDEX message_dedupe_created ON message_dedupe(created);
    ",
    // 4: offline files (TeamTalk's IMTransmitFile).
    super::files::MIGRATION,
    // 5: department names are unique, so a name names one department
    // (`teamtalk user add --dept NAME`). Duplicates made before get their id
    // appended; the first of each name keeps it.
    "
    -- Deleted departments (status 1) keep their rows for clients that
    -- sync incrementally but free their names.
    UPDATE department SET name = name || ' #' || id
        WHERE status = 0
          AND id NOT IN (SELECT min(id) FROM department WHERE status = 0 GROUP BY name);
    CREATE UNIQUE INDEX department_name ON department(name) WHERE status = 0;
    ",
    // 6: the message log's position (see `staged`).
    staged::MIGRATION,
    // 7: dedupe keys are pruned by `seq` (see `prune_dedupe`).
    "DROP INDEX message_dedupe_created;",
    // 8: dedupe keys are looked up in memory (`dedupe`); the table only keeps
    // them across restarts, appended in `seq` order, so it needs no index
    // of its own (the unique one cost two B-tree writes per message).
    "
    CREATE TABLE message_dedupe_v8 (
        seq          INTEGER PRIMARY KEY,
        session_type INTEGER NOT NULL,
        from_id      INTEGER NOT NULL,
        to_id        INTEGER NOT NULL,
        key          BLOB    NOT NULL,
        msg_id       INTEGER NOT NULL,
        created      INTEGER NOT NULL
    );
    INSERT INTO message_dedupe_v8 (seq, session_type, from_id, to_id, key, msg_id, created)
        SELECT seq, session_type, from_id, to_id, key, msg_id, created FROM message_dedupe
        ORDER BY seq;
    DROP TABLE message_dedupe;
    ALTER TABLE message_dedupe_v8 RENAME TO message_dedupe;
    ",
];

/// A source of wall-clock time in Unix seconds, for `created`/`updated` columns.
pub type Clock = Arc<dyn Fn() -> u32 + Send + Sync>;

/// The nice value the serving daemons give the message log's applier
/// thread (db_proxy_server's `ApplierNice` default, `teamtalk up`): the
/// lowest priority, so that on a busy machine the threads acknowledging
/// messages go first (docs/performance.md, "The applier's priority").
pub const SERVING_APPLIER_NICE: i32 = 19;

/// How a [`SqliteStore`] hashes passwords, tells time and runs its applier.
#[derive(Clone)]
pub struct StoreOptions {
    /// Argon2 costs for new password hashes.
    pub hash_params: HashParams,
    /// Wall clock; tests inject a fixed one so timestamps are predictable.
    pub clock: Clock,
    /// Nice value of the message log's applier thread (Linux; 0 leaves it
    /// as any thread). An apply is a burst of CPU every 100 ms; a higher
    /// value keeps it off the cores acknowledgements need, and the log's
    /// backlog bound makes storing wait if the applier falls too far
    /// behind. See [`SERVING_APPLIER_NICE`].
    pub applier_nice: i32,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("hash_params", &self.hash_params)
            .field("applier_nice", &self.applier_nice)
            .finish_non_exhaustive()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            hash_params: HashParams::RECOMMENDED,
            clock: Arc::new(system_clock),
            applier_nice: 0,
        }
    }
}

/// Unix seconds from the system clock, saturating into `u32` as the protocol
/// carries times as `uint32`.
#[allow(clippy::disallowed_methods)] // the store's single wall-clock read
fn system_clock() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// How [`SqliteStore::open_mode`] treats a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenMode {
    /// Create the directory and the database when missing (the daemons,
    /// `teamtalk up`, `teamtalk user add --create`).
    Create,
    /// Open an existing database for reading and writing;
    /// [`StoreError::NoStore`] when there is none, so that a command
    /// pointed at the wrong directory says so instead of starting an empty
    /// store there.
    Existing,
    /// Open an existing database without writing anything (no migration):
    /// listings on a store this process may read but not write. An older
    /// schema is read as it is.
    ReadOnly,
}

/// [`Store`] on an embedded SQLite database.
///
/// One-to-one messages of a database file go through its message log first
/// (modules `journal` and `staged`): durable and acknowledged after one append,
/// written into the tables in large transactions, and before anything reads
/// or writes what they touch.
pub struct SqliteStore {
    inner: Arc<Mutex<Inner>>,
    /// The message log of a database file (`None` in memory and read-only,
    /// where messages go straight into the tables).
    log: Option<Arc<MessageLog>>,
    /// The log's applier thread.
    applier: Option<std::thread::JoinHandle<()>>,
    /// The lock that makes this process the log's owner (released when the
    /// store closes, after the applier ended).
    log_lock: Option<std::fs::File>,
    /// Another process owns the data directory's message log.
    log_elsewhere: bool,
    /// The dedupe keys of the latest messages (see `dedupe`): a leaf lock,
    /// taken briefly under the log's state or the connection's lock.
    dedupe: Arc<Mutex<DedupeIndex>>,
    options: StoreOptions,
    /// The database file (`None` in memory).
    path: Option<PathBuf>,
}

/// What the store's mutex guards: the connection every write but the
/// message log's goes through (the applier's included).
#[derive(Debug)]
struct Inner {
    conn: Connection,
}

impl Drop for SqliteStore {
    /// A clean stop applies the rest of the log (the applier does, then
    /// ends).
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.close();
        }
        if let Some(applier) = self.applier.take()
            && applier.join().is_err()
        {
            tracing::warn!(
                "message log: the applier thread panicked; the next start applies the log"
            );
        }
    }
}

/// The locked connection.
pub(super) struct Conn<'a>(MutexGuard<'a, Inner>);

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0.conn
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { context, source }
}

/// The error of a failed open or first write: permission problems named
/// with the file (what an operator can act on), the rest as SQLite said.
pub(super) fn open_error(file: &Path, context: &'static str, e: rusqlite::Error) -> StoreError {
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::ReadOnly) => StoreError::PermissionDenied {
            path: file.to_path_buf(),
            what: "this process may not write the database",
        },
        Some(ErrorCode::PermissionDenied) => StoreError::PermissionDenied {
            path: file.to_path_buf(),
            what: "this process may not open the database",
        },
        Some(ErrorCode::CannotOpen) => match std::fs::File::open(file) {
            Err(io) if io.kind() == ErrorKind::PermissionDenied => StoreError::PermissionDenied {
                path: file.to_path_buf(),
                what: "this process may not read the database",
            },
            Ok(_) => match file.parent() {
                // Readable, yet SQLite cannot open it: it could not create
                // the -wal and -shm files beside it.
                Some(dir) if is_read_only(dir) => StoreError::PermissionDenied {
                    path: dir.to_path_buf(),
                    what: "SQLite keeps its -wal and -shm files in the data directory, which \
                           this process may not write",
                },
                _ => StoreError::Sql { context, source: e },
            },
            Err(_) => StoreError::Sql { context, source: e },
        },
        _ => StoreError::Sql { context, source: e },
    }
}

/// Whether a directory's permission bits refuse writing (a hint only: the
/// superuser writes anyway).
fn is_read_only(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly())
}

/// Checks the data directory exists and is a directory, creating it for
/// [`OpenMode::Create`].
fn check_data_dir(dir: &Path, file: &Path, mode: OpenMode) -> StoreResult<()> {
    let data_dir = |source| StoreError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound && mode == OpenMode::Create => {
            std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
                ErrorKind::NotADirectory | ErrorKind::AlreadyExists => StoreError::NotADirectory {
                    path: dir.to_path_buf(),
                },
                ErrorKind::PermissionDenied => StoreError::PermissionDenied {
                    path: dir.to_path_buf(),
                    what: "this process may not create the data directory",
                },
                _ => data_dir(e),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NoStore {
            path: file.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::NotADirectory => Err(StoreError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(StoreError::PermissionDenied {
            path: dir.to_path_buf(),
            what: "this process may not look into the data directory",
        }),
        Err(e) => Err(data_dir(e)),
    }
}

/// Opens `file` read-only. When SQLite cannot (a WAL database whose -shm
/// file is missing, in a directory this process may not write), it is
/// opened as immutable: read as it is on disk, which is what a listing
/// from a store nobody serves needs.
fn open_read_only(file: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let probe = |conn: Connection| -> rusqlite::Result<Connection> {
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(conn)
    };
    match Connection::open_with_flags(file, flags).and_then(probe) {
        Ok(conn) => Ok(conn),
        Err(first) => {
            let uri = format!(
                "file:{}?immutable=1",
                percent_encoding::utf8_percent_encode(&file.to_string_lossy(), &URI_PATH_ESCAPES)
            );
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .and_then(probe)
                .map_err(|_| open_error(file, "opening database read-only", first))
        }
    }
}

/// Characters escaped in a `file:` URI's path: controls, and what SQLite
/// would read as the end of the path (`?`, `#`) or an escape (`%`).
const URI_PATH_ESCAPES: percent_encoding::AsciiSet = percent_encoding::CONTROLS
    .add(b'?')
    .add(b'#')
    .add(b'%')
    .add(b' ');

/// The page cache of the store's connection, in KiB (SQLite's
/// `cache_size`; pages are allocated as they are used). SQLite's default of
/// 2 MiB holds too little of the hot indexes of a busy server (the latest
/// pages of every conversation, the recent sessions, the dedupe keys): under
/// a message load each miss was a `pread`, about a fifth of the store
/// thread's time (docs/performance.md, "The dedupe index").
const PAGE_CACHE_KIB: i64 = 64 * 1024;

/// WAL pages between automatic checkpoints of a store with a message log
/// (32 MiB of 4 KiB pages; SQLite's default is 1,000). Measured: the
/// applier's kernel time fell from 20 % to 12 % of a core at ~40,000
/// messages/s (docs/performance.md, "The message log").
const WAL_CHECKPOINT_PAGES: i64 = 8192;

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir`, with default options.
    pub fn open(data_dir: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(data_dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the database in `data_dir`.
    ///
    /// Creates the directory, switches to WAL with `synchronous=FULL` and brings
    /// the schema up to date.
    pub fn open_with(data_dir: impl AsRef<Path>, options: StoreOptions) -> StoreResult<Self> {
        Self::open_mode(data_dir, options, OpenMode::Create)
    }

    /// Opens the database in `data_dir` as `mode` says.
    ///
    /// # Errors
    /// Besides database failures: [`StoreError::NotADirectory`] when
    /// `data_dir` is a file, [`StoreError::NoStore`] when there is no
    /// database and `mode` does not create one,
    /// [`StoreError::PermissionDenied`] naming the file (or directory) this
    /// process may not read or write.
    pub fn open_mode(
        data_dir: impl AsRef<Path>,
        options: StoreOptions,
        mode: OpenMode,
    ) -> StoreResult<Self> {
        let dir = data_dir.as_ref();
        let file = dir.join(DB_FILE_NAME);
        check_data_dir(dir, &file, mode)?;
        if mode != OpenMode::Create {
            match std::fs::metadata(&file) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(StoreError::Invalid(
                        "the database path in the data directory is not a file",
                    ));
                }
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(StoreError::PermissionDenied {
                        path: file,
                        what: "this process may not look into the data directory",
                    });
                }
                Err(_) => return Err(StoreError::NoStore { path: file }),
            }
        }
        if mode == OpenMode::ReadOnly {
            let conn = open_read_only(&file)?;
            let found: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|e| open_error(&file, "reading schema version", e))?;
            let supported = Self::latest_schema_version();
            if found > supported {
                return Err(StoreError::SchemaTooNew { found, supported });
            }
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(sql("setting busy timeout"))?;
            return Ok(Self {
                inner: Arc::new(Mutex::new(Inner { conn })),
                log: None,
                applier: None,
                log_lock: None,
                log_elsewhere: false,
                dedupe: Arc::default(),
                options,
                path: Some(file),
            });
        }
        let conn = Connection::open(&file).map_err(|e| open_error(&file, "opening database", e))?;
        // SQLite quietly opens a file it may not write read-only, and
        // would fail only at the first write, mid-command.
        if conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|e| open_error(&file, "opening database", e))?
        {
            return Err(StoreError::PermissionDenied {
                path: file,
                what: "this process may not write the database",
            });
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| open_error(&file, "enabling WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid(
                "the database file system does not support WAL",
            ));
        }
        let mut store = Self::init(conn, options, Some(file.clone()))?;
        store.start_log(dir, &file)?;
        if !store.log_elsewhere {
            store.load_dedupe()?;
        }
        Ok(store)
    }

    /// Opens the message log beside the database, applies what it holds
    /// beyond the tables (messages acknowledged before a crash) and starts
    /// its applier.
    ///
    /// One process owns a data directory's log, the first to open the store
    /// for writing (in practice the serving one: db_proxy_server or
    /// `teamtalk up`, which hold `serve.lock`); it holds an exclusive lock
    /// on [`LOG_LOCK_FILE_NAME`] until it closes the store. Another process
    /// opening the store meanwhile (`teamtalk user …` editing the
    /// directory) leaves the log alone and writes straight into the tables;
    /// it does not see messages still in the owner's log, and it may not
    /// store one-to-one messages, whose ids the owner hands out.
    fn start_log(&mut self, dir: &Path, file: &Path) -> StoreResult<()> {
        let lock_path = dir.join(LOG_LOCK_FILE_NAME);
        let log_lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| StoreError::Journal {
                path: lock_path.clone(),
                what: "opening the message log's lock",
                source,
            })?;
        match log_lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::debug!(dir = %dir.display(), "message log owned by another process; writing straight into the tables");
                self.log_elsewhere = true;
                return Ok(());
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StoreError::Journal {
                    path: lock_path,
                    what: "locking the message log",
                    source,
                });
            }
        }
        self.log_lock = Some(log_lock);
        let lookup = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(file, "opening the message log's lookup connection", e))?;
        lookup
            .pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
            .map_err(sql("sizing the page cache"))?;
        lookup
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql("setting busy timeout"))?;
        let log = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            // Only the applier and rare writes use this connection, and no
            // acknowledgement waits for them: checkpoint every 32 MiB of WAL
            // instead of SQLite's 4 MiB, so a hot page (a conversation's last
            // page of messages, a session) is copied into the database once
            // per several applies instead of once per apply.
            inner
                .conn
                .pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
                .map_err(sql("setting the checkpoint interval"))?;
            Arc::new(MessageLog::open(
                dir,
                &mut inner.conn,
                lookup,
                self.dedupe.clone(),
            )?)
        };
        self.applier = Some(staged::spawn_applier(
            log.clone(),
            self.inner.clone(),
            self.options.applier_nice,
        )?);
        self.log = Some(log);
        Ok(())
    }

    /// Stops the applier without applying anything more and closes the
    /// store, as a crash would leave the files.
    #[cfg(test)]
    pub(super) fn crash(mut self) {
        if let Some(log) = self.log.take() {
            log.abandon();
        }
        if let Some(applier) = self.applier.take() {
            applier.join().unwrap();
        }
    }

    /// Stops the applier from applying until the store closes or crashes.
    #[cfg(test)]
    pub(super) fn pause_applier(&self) {
        if let Some(log) = &self.log {
            log.pause();
        }
    }

    /// Applies again after [`Self::pause_applier`].
    #[cfg(test)]
    pub(super) fn resume_applier(&self) {
        if let Some(log) = &self.log {
            log.resume();
        }
    }

    /// How often the cached statement `sql` was re-prepared so far (the
    /// statement cache's cost: see `open`'s query planner guarantee).
    #[cfg(test)]
    pub(super) fn reprepares(&self, sql: &str) -> i32 {
        self.lock()
            .expect("store")
            .prepare_cached(sql)
            .expect("prepared")
            .get_status(rusqlite::StatementStatus::RePrepare)
    }

    /// Bytes in the message log segment appends go to.
    #[cfg(test)]
    pub(super) fn log_segment_len(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.segment_len())
    }

    /// A private in-memory database, for tests of code built on the store.
    /// Nothing is durable.
    pub fn open_in_memory(options: StoreOptions) -> StoreResult<Self> {
        let conn = Connection::open_in_memory().map_err(sql("opening in-memory database"))?;
        let store = Self::init(conn, options, None)?;
        store.load_dedupe()?;
        Ok(store)
    }

    /// Reads the dedupe keys the table holds into the index (after the
    /// message log's recovery wrote those of the messages it applied).
    fn load_dedupe(&self) -> StoreResult<()> {
        let index = {
            let conn = self.lock()?;
            DedupeIndex::load(
                &conn,
                usize::try_from(MAX_DEDUPE_KEYS).unwrap_or(usize::MAX),
            )?
        };
        *self.dedupe.lock().unwrap_or_else(PoisonError::into_inner) = index;
        Ok(())
    }

    fn init(
        mut conn: Connection,
        options: StoreOptions,
        path: Option<PathBuf>,
    ) -> StoreResult<Self> {
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("enabling foreign keys"))?;
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
            .map_err(sql("sizing the page cache"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql("setting busy timeout"))?;
        // The query planner's stability guarantee: plans never depend on
        // the values bound. Without it SQLite marks a statement whose plan
        // looked at a bound value (a `LIMIT ?`, a range on the message
        // id) for re-preparing, and since rusqlite's statement cache
        // clears the bindings of every statement it takes back, such a
        // statement was parsed and planned again at every call (a history
        // page, the recent sessions of a login).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(sql("enabling the query planner stability guarantee"))?;
        migrate(&mut conn).map_err(|e| match (e, &path) {
            (StoreError::Sql { context, source }, Some(file)) => open_error(file, context, source),
            (e, _) => e,
        })?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner { conn })),
            log: None,
            applier: None,
            log_lock: None,
            log_elsewhere: false,
            dedupe: Arc::default(),
            options,
            path,
        })
    }

    /// The database file, `None` for an in-memory store.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.lock()?
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql("reading schema version"))
    }

    /// Newest schema version this build creates.
    pub const fn latest_schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }

    /// The connection, with every logged message written into the tables
    /// first, so what follows sees them. A panic while it was held cannot
    /// leave a transaction open (dropping a transaction rolls it back), so a
    /// poisoned lock is safe to take over.
    pub(super) fn lock(&self) -> StoreResult<Conn<'_>> {
        if let Some(log) = &self.log {
            log.flush()?;
        }
        Ok(self.lock_directory())
    }

    /// The connection without applying the message log: for reads of the
    /// directory (users, departments, device tokens, group definitions,
    /// offline files), which logged messages never touch. Logins take
    /// this path, so a login does not force an early apply.
    pub(super) fn lock_directory(&self) -> Conn<'_> {
        Conn(self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn now(&self) -> u32 {
        (self.options.clock)()
    }

    /// Inserts `prefix1` ..= `prefix{count}` sharing one stored password
    /// (`salt` set for TeamTalk's form), in one transaction.
    fn seed(
        &self,
        prefix: &str,
        count: u32,
        stored: &str,
        salt: Option<&str>,
    ) -> StoreResult<Vec<UserId>> {
        let now = self.now();
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("seeding users"))?;
        let mut ids = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO user (name, nick, password, salt, created, updated)
                     VALUES (?1, ?1, ?2, ?3, ?4, ?4)",
                )
                .map_err(sql("seeding users"))?;
            for i in 1..=count {
                let name = format!("{prefix}{i}");
                match stmt.execute(params![name, stored, salt, now]) {
                    Ok(_) => ids.push(row_id(tx.last_insert_rowid())?),
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::NameTaken(name)),
                    Err(e) => {
                        return Err(StoreError::Sql {
                            context: "seeding users",
                            source: e,
                        });
                    }
                }
            }
        }
        tx.commit().map_err(sql("committing seeded users"))?;
        Ok(ids)
    }

    fn insert_user(
        &self,
        user: &NewUser,
        password: &str,
        salt: Option<&str>,
    ) -> StoreResult<UserId> {
        let now = self.now();
        let conn = self.lock()?;
        let res = conn.execute(
            "INSERT INTO user (name, nick, sex, dept_id, avatar, email, phone, domain, status,
                               sign_info, password, salt, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
            params![
                user.name,
                user.nick,
                user.sex,
                user.dept_id,
                user.avatar,
                user.email,
                user.phone,
                user.domain,
                user.status,
                user.sign_info,
                password,
                salt,
                now
            ],
        );
        match res {
            Ok(_) => row_id(conn.last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::NameTaken(user.name.clone())),
            Err(e) => Err(StoreError::Sql {
                context: "inserting user",
                source: e,
            }),
        }
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting migration"))?;
    let current: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql("reading schema version"))?;
    let supported = SqliteStore::latest_schema_version();
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    let start = usize::try_from(current).unwrap_or(0);
    for (i, step) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(step).map_err(sql("migrating schema"))?;
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        tx.pragma_update(None, "user_version", version)
            .map_err(sql("recording schema version"))?;
    }
    tx.commit().map_err(sql("committing migration"))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// A rowid as a `u32` id; ids past `u32::MAX` cannot go on the wire.
fn row_id(id: i64) -> StoreResult<u32> {
    u32::try_from(id).map_err(|_| StoreError::Invalid("id space exhausted (ids are 32-bit)"))
}

fn pair(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b { (a, b) } else { (b, a) }
}

const USER_COLUMNS: &str = "id, name, nick, sex, dept_id, avatar, email, phone, domain, status,
                            sign_info, push_shield, created, updated";

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        nick: r.get(2)?,
        sex: r.get(3)?,
        dept_id: r.get(4)?,
        avatar: r.get(5)?,
        email: r.get(6)?,
        phone: r.get(7)?,
        domain: r.get(8)?,
        status: r.get(9)?,
        sign_info: r.get(10)?,
        push_shield: r.get::<_, i64>(11)? != 0,
        created: r.get(12)?,
        updated: r.get(13)?,
    })
}

/// A user row followed by its `password` and `salt` columns.
fn credential_row(r: &Row<'_>) -> rusqlite::Result<(User, String, Option<String>)> {
    Ok((user_from_row(r)?, r.get(14)?, r.get(15)?))
}

fn message_from_row(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        msg_id: r.get(0)?,
        from: r.get(1)?,
        to: r.get(2)?,
        msg_type: r.get(3)?,
        create_time: r.get(4)?,
        data: r.get(5)?,
    })
}

/// Reads a [`LatestMessage`] from four nullable columns starting at `at`
/// (id, from, type, data), as produced by a LEFT JOIN on the latest message.
fn latest_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<LatestMessage> {
    Ok(LatestMessage {
        msg_id: r.get::<_, Option<u32>>(at)?.unwrap_or(0),
        from: r.get::<_, Option<u32>>(at + 1)?.unwrap_or(0),
        msg_type: r.get::<_, Option<u32>>(at + 2)?.unwrap_or(0),
        data: r.get::<_, Option<Vec<u8>>>(at + 3)?.unwrap_or_default(),
    })
}

fn relation_id(conn: &Connection, a: UserId, b: UserId) -> StoreResult<Option<i64>> {
    let (small, big) = pair(a, b);
    conn.prepare_cached("SELECT id FROM relation WHERE small_id = ?1 AND big_id = ?2")
        .and_then(|mut s| s.query_row(params![small, big], |r| r.get(0)).optional())
        .map_err(sql("looking up conversation"))
}

/// Rejects messages that can never be stored, before touching the database.
pub(super) fn check_message(msg: &NewMessage) -> StoreResult<()> {
    if msg.session_type == SessionType::Single && msg.from == msg.to {
        return Err(StoreError::Invalid("a message to oneself is not stored"));
    }
    if msg.from == 0 || msg.to == 0 {
        return Err(StoreError::Invalid("id 0 is neither a user nor a group"));
    }
    if msg.data.len() > MAX_MSG_DATA_LEN {
        return Err(StoreError::Invalid(
            "message body longer than a reply page can carry",
        ));
    }
    if msg
        .dedupe_key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_DEDUPE_KEY_LEN)
    {
        return Err(StoreError::Invalid("dedupe key too long"));
    }
    Ok(())
}

/// The oldest time a dedupe key still counts at `now`.
fn dedupe_cutoff(now: u32) -> u32 {
    now.saturating_sub(DEDUPE_WINDOW_SECS)
}

/// Stores one checked message inside the caller's transaction, unless its
/// dedupe key names a message stored before (`known` says which): then a
/// duplicate. A group message is refused first if its sender is not a
/// member now (so not even a resend of what they posted before their
/// removal goes through). A new message's key is appended to
/// `message_dedupe`; the caller remembers its name in the index once the
/// transaction commits.
fn insert_keyed(
    conn: &Connection,
    msg: &NewMessage,
    name: Option<&dedupe::Name>,
    known: impl Fn(&dedupe::Name) -> Option<MsgId>,
    now: u32,
) -> StoreResult<Stored> {
    if msg.session_type == SessionType::Group {
        groups::check_poster(conn, msg.from, msg.to)?;
    }
    if let Some(id) = name.and_then(&known) {
        return Ok(Stored::Duplicate(id));
    }
    let stored = match msg.session_type {
        SessionType::Single => insert_message(conn, msg, now)?,
        SessionType::Group => groups::insert_group_message(conn, msg, now)?,
    };
    if let Some(key) = msg.dedupe_key.as_deref().filter(|k| !k.is_empty()) {
        conn.prepare_cached(INSERT_DEDUPE_SQL)
            .and_then(|mut s| {
                s.execute(params![
                    msg.session_type.as_u32(),
                    msg.from,
                    msg.to,
                    key,
                    stored.msg_id,
                    now
                ])
            })
            .map_err(sql("remembering dedupe key"))?;
    }
    Ok(Stored::New(stored))
}

/// Appends a dedupe key to the table that keeps them across restarts.
pub(super) const INSERT_DEDUPE_SQL: &str =
    "INSERT INTO message_dedupe (session_type, from_id, to_id, key, msg_id, created)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Most expired dedupe keys one prune forgets (the rest go at the next).
const PRUNE_EXPIRED_AT_ONCE: i64 = 10_000;

/// Forgets dedupe keys older than the window, and the oldest beyond
/// `max_keys` ([`MAX_DEDUPE_KEYS`]), inside the caller's transaction.
///
/// Keys are numbered (`seq`) in the order they are stored, which is the
/// order of their `created` times, so both deletes work from the low end of
/// the table's own key: expired keys are looked for only when the oldest
/// one has expired, a bounded run at a time. (An index on `created` did the
/// same and cost a B-tree insert and delete per message; migration 7 drops
/// it.)
pub(super) fn prune_dedupe(conn: &Connection, now: u32, max_keys: u64) -> StoreResult<()> {
    let cutoff = dedupe_cutoff(now);
    let oldest: Option<u32> = conn
        .prepare_cached("SELECT created FROM message_dedupe ORDER BY seq LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(sql("pruning expired dedupe keys"))?;
    if oldest.is_some_and(|t| t < cutoff) {
        conn.prepare_cached(
            "DELETE FROM message_dedupe
             WHERE seq IN (SELECT seq FROM message_dedupe ORDER BY seq LIMIT ?2)
               AND created < ?1",
        )
        .and_then(|mut s| s.execute(params![cutoff, PRUNE_EXPIRED_AT_ONCE]))
        .map_err(sql("pruning expired dedupe keys"))?;
    }
    conn.prepare_cached(
        "DELETE FROM message_dedupe
         WHERE seq <= (SELECT max(seq) FROM message_dedupe) - ?1",
    )
    .and_then(|mut s| s.execute(params![i64::try_from(max_keys).unwrap_or(i64::MAX)]))
    .map_err(sql("pruning the oldest dedupe keys"))?;
    Ok(())
}

/// The latest message between `a` and `b`; empty when there is none.
fn latest_message(conn: &Connection, a: UserId, b: UserId) -> StoreResult<LatestMessage> {
    let (small, big) = pair(a, b);
    let latest = conn
        .prepare_cached(
            "SELECT m.msg_id, m.from_id, m.msg_type, m.content
             FROM relation r JOIN message m ON m.relation_id = r.id AND m.msg_id = r.last_msg_id
             WHERE r.small_id = ?1 AND r.big_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![small, big], |r| latest_from_row(r, 0))
                .optional()
        })
        .map_err(sql("reading a conversation's latest message"))?;
    Ok(latest.unwrap_or_default())
}

/// Creates a conversation's row if it has none (`?3`: its creation time).
pub(super) const CREATE_RELATION_SQL: &str =
    "INSERT INTO relation (small_id, big_id, last_msg_id, created) VALUES (?1, ?2, 0, ?3)
     ON CONFLICT (small_id, big_id) DO NOTHING";
/// Inserts one one-to-one message under its conversation's row id.
pub(super) const INSERT_MESSAGE_SQL: &str =
    "INSERT INTO message (relation_id, msg_id, from_id, to_id, msg_type, content, status, created)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)";
/// Adds `?3` to what user `?1` has unread from `?2`.
pub(super) const COUNT_UNREAD_SQL: &str =
    "INSERT INTO single_unread (user_id, peer_id, count) VALUES (?1, ?2, ?3)
     ON CONFLICT (user_id, peer_id) DO UPDATE SET count = count + excluded.count";
/// Shows a session (user `?1`, peer `?2`, type `?3`) as live, updated at `?4`.
pub(super) const TOUCH_SESSION_SQL: &str =
    "INSERT INTO session (user_id, peer_id, session_type, status, created, updated)
     VALUES (?1, ?2, ?3, 0, ?4, ?4)
     ON CONFLICT (user_id, peer_id, session_type) DO UPDATE
     SET status = 0, updated = excluded.updated";

/// Stores one checked message inside the caller's transaction: assigns the
/// conversation's next id, counts it unread for the recipient and refreshes
/// both recent sessions.
fn insert_message(conn: &Connection, msg: &NewMessage, now: u32) -> StoreResult<StoredMessage> {
    let (small, big) = pair(msg.from, msg.to);
    conn.prepare_cached(CREATE_RELATION_SQL)
        .and_then(|mut s| s.execute(params![small, big, now]))
        .map_err(sql("creating conversation"))?;
    let next: Option<(i64, u32)> = conn
        .prepare_cached(
            "UPDATE relation SET last_msg_id = last_msg_id + 1
             WHERE small_id = ?1 AND big_id = ?2 AND last_msg_id < ?3
             RETURNING id, last_msg_id",
        )
        .and_then(|mut s| {
            s.query_row(params![small, big, u32::MAX], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(sql("assigning message id"))?;
    let Some((relation, msg_id)) = next else {
        return Err(StoreError::MsgIdsExhausted(small, big));
    };
    conn.prepare_cached(INSERT_MESSAGE_SQL)
        .and_then(|mut s| {
            s.execute(params![
                relation,
                msg_id,
                msg.from,
                msg.to,
                msg.msg_type,
                msg.data,
                msg.create_time
            ])
        })
        .map_err(sql("inserting message"))?;
    conn.prepare_cached(COUNT_UNREAD_SQL)
        .and_then(|mut s| s.execute(params![msg.to, msg.from, 1]))
        .map_err(sql("counting unread"))?;
    let mut touch = conn
        .prepare_cached(TOUCH_SESSION_SQL)
        .map_err(sql("updating sessions"))?;
    let single = SessionType::Single.as_u32();
    touch
        .execute(params![msg.from, msg.to, single, now])
        .map_err(sql("updating sender session"))?;
    touch
        .execute(params![msg.to, msg.from, single, now])
        .map_err(sql("updating recipient session"))?;
    Ok(msg.stored_as(msg_id))
}

/// Stores a batch straight into the tables in one transaction: a savepoint
/// per message, so a failing one is rolled back alone and the rest still
/// commits. Group messages take this path, and every message of a store
/// without a message log.
fn store_in_tables(
    conn: &mut Connection,
    dedupe: &Mutex<DedupeIndex>,
    msgs: &[NewMessage],
    now: u32,
) -> StoreResult<Vec<StoreResult<Stored>>> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting message batch"))?;
    let mut out = Vec::with_capacity(msgs.len());
    // Names stored by this batch, remembered in the index once it commits.
    let mut fresh: HashMap<dedupe::Name, MsgId> = HashMap::new();
    for msg in msgs {
        if let Err(e) = check_message(msg) {
            out.push(Err(e));
            continue;
        }
        let name = msg
            .dedupe_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(|k| dedupe::name(msg.session_type, msg.from, msg.to, k));
        let known = |n: &dedupe::Name| {
            fresh.get(n).copied().or_else(|| {
                dedupe
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .find(n, now)
            })
        };
        let sp = tx.savepoint().map_err(sql("starting message savepoint"))?;
        match insert_keyed(&sp, msg, name.as_ref(), known, now) {
            Ok(stored) => {
                sp.commit().map_err(sql("releasing message savepoint"))?;
                if let (Some(n), Stored::New(m)) = (name, &stored) {
                    fresh.insert(n, m.msg_id);
                }
                out.push(Ok(stored));
            }
            // Dropping the savepoint rolls this message back.
            Err(e) => out.push(Err(e)),
        }
    }
    if msgs.iter().any(|m| m.dedupe_key.is_some()) {
        prune_dedupe(&tx, now, MAX_DEDUPE_KEYS)?;
    }
    tx.commit().map_err(sql("committing message batch"))?;
    let mut index = dedupe.lock().unwrap_or_else(PoisonError::into_inner);
    for (n, id) in fresh {
        index.remember(n, id, now);
    }
    Ok(out)
}

const MSG_COLUMNS: &str = "msg_id, from_id, to_id, msg_type, created, content";

/// One page of a conversation's history, newest first.
static MESSAGE_LIST_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {MSG_COLUMNS} FROM message
         WHERE relation_id = ?1 AND status = 0 AND msg_id <= ?2
         ORDER BY msg_id DESC LIMIT ?3"
    )
});

/// A user's newest one-to-one or group session rows.
const RECENT_SESSIONS_SQL: &str = "SELECT peer_id, status, updated FROM session
                 WHERE user_id = ?1 AND status = 0 AND updated > ?2 AND session_type = ?4
                 ORDER BY updated DESC, peer_id DESC
                 LIMIT ?3";

impl Store for SqliteStore {
    fn add_department(&self, name: &str, priority: u32, parent_id: DeptId) -> StoreResult<DeptId> {
        let now = self.now();
        let conn = self.lock()?;
        match conn.execute(
            "INSERT INTO department (name, priority, parent_id, status, created, updated)
             VALUES (?1, ?2, ?3, 0, ?4, ?4)",
            params![name, priority, parent_id, now],
        ) {
            Ok(_) => row_id(conn.last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::DeptNameTaken(name.to_owned())),
            Err(e) => Err(StoreError::Sql {
                context: "inserting department",
                source: e,
            }),
        }
    }

    fn rename_department(&self, id: DeptId, name: &str) -> StoreResult<bool> {
        let now = self.now();
        let conn = self.lock()?;
        match conn.execute(
            "UPDATE department SET name = ?2, updated = ?3
             WHERE id = ?1 AND status = 0",
            params![id, name, now],
        ) {
            Ok(n) => Ok(n > 0),
            Err(e) if is_unique_violation(&e) => Err(StoreError::DeptNameTaken(name.to_owned())),
            Err(e) => Err(StoreError::Sql {
                context: "renaming a department",
                source: e,
            }),
        }
    }

    fn delete_department(&self, id: DeptId) -> StoreResult<bool> {
        let now = self.now();
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("deleting a department"))?;
        let count = |query: &str| -> StoreResult<u64> {
            tx.query_row(query, params![id], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(sql("counting a department's members"))
        };
        let users = count("SELECT count(*) FROM user WHERE dept_id = ?1")?;
        let children =
            count("SELECT count(*) FROM department WHERE parent_id = ?1 AND status = 0")?;
        let exists = count("SELECT count(*) FROM department WHERE id = ?1 AND status = 0")? > 0;
        if !exists {
            return Ok(false);
        }
        if users > 0 || children > 0 {
            return Err(StoreError::DeptNotEmpty {
                id,
                users,
                children,
            });
        }
        tx.execute(
            "UPDATE department SET status = ?2, updated = ?3 WHERE id = ?1",
            params![id, DEPT_STATUS_DELETED, now],
        )
        .map_err(sql("deleting a department"))?;
        tx.commit()
            .map_err(sql("committing a department's deletion"))?;
        Ok(true)
    }

    fn departments_updated_since(&self, since: u32) -> StoreResult<Vec<Department>> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, priority, name, parent_id, status, updated FROM department
                 WHERE updated > ?1 ORDER BY id",
            )
            .map_err(sql("listing departments"))?;
        let rows = stmt
            .query_map(params![since], |r| {
                Ok(Department {
                    id: r.get(0)?,
                    priority: r.get(1)?,
                    name: r.get(2)?,
                    parent_id: r.get(3)?,
                    status: r.get(4)?,
                    updated: r.get(5)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(sql("listing departments"))?;
        Ok(rows)
    }

    fn add_user(&self, user: &NewUser, password_md5hex: &str) -> StoreResult<UserId> {
        let phc = password::hash_password(&self.options.hash_params, password_md5hex)?;
        self.insert_user(user, &phc, None)
    }

    fn import_teamtalk_user(
        &self,
        user: &NewUser,
        password: &str,
        salt: &str,
    ) -> StoreResult<UserId> {
        self.insert_user(user, password, Some(salt))
    }

    fn check_login(
        &self,
        name: &str,
        password_md5hex: &str,
    ) -> StoreResult<Option<UserCredential>> {
        let found = {
            let conn = self.lock()?;
            conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS}, password, salt FROM user WHERE name = ?1"
            ))
            .and_then(|mut s| s.query_row(params![name], credential_row).optional())
            .map_err(sql("looking up login"))?
        };
        // The lock is released: hashing must not stall other requests.
        let Some((user, hash, salt)) = found else {
            return Ok(None);
        };
        if user.status == USER_STATUS_DEPARTED {
            return Ok(None);
        }
        let credential = CredentialStamp::of(&hash, salt.as_deref());
        let stored = match salt {
            Some(salt) => StoredPassword::TeamTalk { hash, salt },
            None => StoredPassword::Argon2(hash),
        };
        Ok(stored
            .verify(password_md5hex)?
            .then_some(UserCredential { user, credential }))
    }

    fn user_with_credential(&self, id: UserId) -> StoreResult<Option<UserCredential>> {
        let found = self
            .lock_directory()
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS}, password, salt FROM user WHERE id = ?1"
            ))
            .and_then(|mut s| s.query_row(params![id], credential_row).optional())
            .map_err(sql("reading a user's credential"))?;
        Ok(found.map(|(user, hash, salt)| UserCredential {
            user,
            credential: CredentialStamp::of(&hash, salt.as_deref()),
        }))
    }

    fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        self.lock()?
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM user WHERE name = ?1"))
            .and_then(|mut s| s.query_row(params![name], user_from_row).optional())
            .map_err(sql("looking up a user by name"))
    }

    fn all_users(&self) -> StoreResult<Vec<User>> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM user ORDER BY id"))
            .map_err(sql("listing users"))?;
        stmt.query_map([], user_from_row)
            .and_then(Iterator::collect)
            .map_err(sql("listing users"))
    }

    fn set_password(&self, user: UserId, password_md5hex: &str) -> StoreResult<bool> {
        // Hashed before taking the lock, as in `add_user`.
        let phc = password::hash_password(&self.options.hash_params, password_md5hex)?;
        let now = self.now();
        let n = self
            .lock_directory()
            .execute(
                "UPDATE user SET password = ?2, salt = NULL, updated = ?3 WHERE id = ?1",
                params![user, phc, now],
            )
            .map_err(sql("setting a password"))?;
        Ok(n > 0)
    }

    fn set_user_status(&self, user: UserId, status: u32) -> StoreResult<bool> {
        let now = self.now();
        let n = self
            .lock_directory()
            .execute(
                "UPDATE user SET status = ?2, updated = ?3 WHERE id = ?1",
                params![user, status, now],
            )
            .map_err(sql("setting a user's status"))?;
        Ok(n > 0)
    }

    fn delete_user(&self, user: UserId) -> StoreResult<bool> {
        let now = self.now();
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("deleting a user"))?;
        let n = tx
            .execute("DELETE FROM user WHERE id = ?1", params![user])
            .map_err(sql("deleting a user"))?;
        if n == 0 {
            return Ok(false);
        }
        for (context, statement) in [
            (
                "deleting a push token",
                "DELETE FROM device_token WHERE user_id = ?1",
            ),
            (
                "deleting unread counters",
                "DELETE FROM single_unread WHERE user_id = ?1",
            ),
            (
                "deleting sessions",
                "DELETE FROM session WHERE user_id = ?1",
            ),
            // Files waiting for them would wait forever; files they sent
            // stay, as their messages do.
            (
                "deleting offline files",
                "DELETE FROM transmit_file WHERE to_id = ?1",
            ),
        ] {
            tx.execute(statement, params![user]).map_err(sql(context))?;
        }
        groups::remove_everywhere(&tx, user, now)?;
        tx.commit().map_err(sql("committing a user's deletion"))?;
        Ok(true)
    }

    fn users_updated_since(&self, since: u32) -> StoreResult<Vec<User>> {
        let conn = self.lock()?;
        let query = if since == 0 {
            format!("SELECT {USER_COLUMNS} FROM user WHERE status != ?1 ORDER BY id")
        } else {
            format!("SELECT {USER_COLUMNS} FROM user WHERE updated >= ?1 ORDER BY id")
        };
        let arg = if since == 0 {
            USER_STATUS_DEPARTED
        } else {
            since
        };
        let mut stmt = conn.prepare_cached(&query).map_err(sql("listing users"))?;
        let rows = stmt
            .query_map(params![arg], user_from_row)
            .and_then(Iterator::collect)
            .map_err(sql("listing users"))?;
        Ok(rows)
    }

    fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM user WHERE id = ?1"))
            .map_err(sql("reading users"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(u) = stmt
                .query_row(params![id], user_from_row)
                .optional()
                .map_err(sql("reading users"))?
            {
                out.push(u);
            }
        }
        Ok(out)
    }

    fn update_sign_info(&self, user: UserId, sign_info: &str) -> StoreResult<bool> {
        let now = self.now();
        let n = self
            .lock_directory()
            .execute(
                "UPDATE user SET sign_info = ?2, updated = ?3 WHERE id = ?1",
                params![user, sign_info, now],
            )
            .map_err(sql("updating sign info"))?;
        Ok(n > 0)
    }

    fn set_push_shield(&self, user: UserId, on: bool) -> StoreResult<bool> {
        let n = self
            .lock_directory()
            .execute(
                "UPDATE user SET push_shield = ?2 WHERE id = ?1",
                params![user, i64::from(on)],
            )
            .map_err(sql("setting push shield"))?;
        Ok(n > 0)
    }

    fn push_shield(&self, user: UserId) -> StoreResult<Option<bool>> {
        let v: Option<i64> = self
            .lock_directory()
            .query_row(
                "SELECT push_shield FROM user WHERE id = ?1",
                params![user],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("reading push shield"))?;
        Ok(v.map(|v| v != 0))
    }

    fn set_device_token(&self, user: UserId, client_type: u32, token: &str) -> StoreResult<()> {
        let now = self.now();
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("setting device token"))?;
        if token.is_empty() {
            tx.execute("DELETE FROM device_token WHERE user_id = ?1", params![user])
                .map_err(sql("clearing device token"))?;
        } else {
            tx.execute(
                "DELETE FROM device_token WHERE token = ?1 AND user_id != ?2",
                params![token, user],
            )
            .map_err(sql("moving device token"))?;
            tx.execute(
                "INSERT INTO device_token (user_id, client_type, token, updated)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id) DO UPDATE
                 SET client_type = excluded.client_type, token = excluded.token,
                     updated = excluded.updated",
                params![user, client_type, token, now],
            )
            .map_err(sql("setting device token"))?;
        }
        tx.commit().map_err(sql("committing device token"))
    }

    fn forget_device_token(&self, user: UserId, token: &str) -> StoreResult<bool> {
        let conn = self.lock()?;
        let removed = conn
            .execute(
                "DELETE FROM device_token WHERE user_id = ?1 AND token = ?2",
                params![user, token],
            )
            .map_err(sql("removing an invalid device token"))?;
        Ok(removed > 0)
    }

    fn device_tokens(&self, users: &[UserId]) -> StoreResult<Vec<DeviceToken>> {
        let mut users = users.to_vec();
        users.sort_unstable();
        users.dedup();
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT client_type, token FROM device_token WHERE user_id = ?1")
            .map_err(sql("reading device tokens"))?;
        let mut out = Vec::new();
        for user_id in users {
            if let Some((client_type, token)) = stmt
                .query_row(params![user_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(sql("reading device tokens"))?
            {
                out.push(DeviceToken {
                    user_id,
                    client_type,
                    token,
                });
            }
        }
        Ok(out)
    }

    fn user_count(&self) -> StoreResult<u64> {
        let n: i64 = self
            .lock_directory()
            .query_row("SELECT count(*) FROM user", [], |r| r.get(0))
            .map_err(sql("counting users"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn seed_users(
        &self,
        prefix: &str,
        count: u32,
        password_md5hex: &str,
    ) -> StoreResult<Vec<UserId>> {
        let phc = password::hash_password(&self.options.hash_params, password_md5hex)?;
        self.seed(prefix, count, &phc, None)
    }

    fn seed_teamtalk_users(
        &self,
        prefix: &str,
        count: u32,
        password_md5hex: &str,
    ) -> StoreResult<Vec<UserId>> {
        const SALT: &str = "seed";
        let stored = password::teamtalk_salted(password_md5hex, SALT);
        self.seed(prefix, count, &stored, Some(SALT))
    }

    fn store_message(&self, msg: &NewMessage) -> StoreResult<Stored> {
        self.store_messages(std::slice::from_ref(msg))?
            .into_iter()
            .next()
            .unwrap_or(Err(StoreError::Invalid("no result for a stored message")))
    }

    fn store_messages(&self, msgs: &[NewMessage]) -> StoreResult<Vec<StoreResult<Stored>>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        if let Some(log) = &self.log
            && msgs.iter().all(|m| m.session_type == SessionType::Single)
        {
            return log.log(msgs, now);
        }
        // Only the log's owner knows every dedupe key (see `dedupe`), and it
        // hands out the one-to-one ids.
        if self.log_elsewhere {
            return Err(StoreError::LogElsewhere);
        }
        // Group messages (and the in-memory store) go straight into the
        // tables, after everything logged before them.
        let mut inner = self.lock()?;
        store_in_tables(&mut inner, &self.dedupe, msgs, now)
    }

    fn message_list(
        &self,
        user: UserId,
        peer: UserId,
        begin: MsgId,
        count: u32,
    ) -> StoreResult<Vec<StoredMessage>> {
        let limit = count.min(MAX_MSG_LIST);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let begin = if begin == 0 { u32::MAX } else { begin };
        let conn = self.lock()?;
        let Some(relation) = relation_id(&conn, user, peer)? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn
            .prepare_cached(&MESSAGE_LIST_SQL)
            .map_err(sql("listing messages"))?;
        let rows = stmt
            .query_map(params![relation, begin, limit], message_from_row)
            .map_err(sql("listing messages"))?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for row in rows {
            let m = row.map_err(sql("listing messages"))?;
            bytes = bytes.saturating_add(m.data.len());
            out.push(m);
            if bytes >= MAX_LIST_BODY_BYTES {
                break;
            }
        }
        Ok(out)
    }

    fn messages_by_ids(
        &self,
        user: UserId,
        peer: UserId,
        ids: &[MsgId],
    ) -> StoreResult<Vec<StoredMessage>> {
        let mut ids: Vec<MsgId> = ids.iter().copied().take(MAX_MSGS_BY_ID).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let conn = self.lock()?;
        let Some(relation) = relation_id(&conn, user, peer)? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {MSG_COLUMNS} FROM message
                 WHERE relation_id = ?1 AND msg_id = ?2 AND status = 0"
            ))
            .map_err(sql("reading messages"))?;
        let mut out = Vec::with_capacity(ids.len());
        let mut bytes = 0usize;
        for id in ids {
            if let Some(m) = stmt
                .query_row(params![relation, id], message_from_row)
                .optional()
                .map_err(sql("reading messages"))?
            {
                bytes = bytes.saturating_add(m.data.len());
                out.push(m);
                if bytes >= MAX_LIST_BODY_BYTES {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn latest_msg_id(&self, user: UserId, peer: UserId) -> StoreResult<MsgId> {
        let (small, big) = pair(user, peer);
        let id: Option<u32> = self
            .lock()?
            .query_row(
                "SELECT last_msg_id FROM relation WHERE small_id = ?1 AND big_id = ?2",
                params![small, big],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("reading latest message id"))?;
        Ok(id.unwrap_or(0))
    }

    fn unread(&self, user: UserId) -> StoreResult<UnreadSummary> {
        let conn = self.lock()?;
        // Counts first (small rows, by peer), then each conversation's latest
        // message by a point lookup, so the bodies read stop at the bound.
        let counts: Vec<(UserId, u32)> = conn
            .prepare_cached(
                "SELECT peer_id, count FROM single_unread
                 WHERE user_id = ?1 AND count > 0 ORDER BY peer_id",
            )
            .and_then(|mut s| {
                s.query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))
                    .and_then(Iterator::collect)
            })
            .map_err(sql("reading unread counts"))?;
        let group_counts = groups::unread_counts(&conn, user)?;
        let total = counts
            .iter()
            .chain(&group_counts)
            .fold(0u32, |acc, &(_, n)| acc.saturating_add(n));
        let mut sessions = Vec::new();
        let mut bytes = 0usize;
        let singles = counts.into_iter().map(|c| (SessionType::Single, c));
        let groups = group_counts.into_iter().map(|c| (SessionType::Group, c));
        for (session_type, (peer, count)) in singles.chain(groups) {
            let latest = match session_type {
                SessionType::Single => latest_message(&conn, user, peer)?,
                // Unread means posted after the read point, so after joining.
                SessionType::Group => groups::latest_message(&conn, peer, 0)?,
            };
            bytes = bytes.saturating_add(latest.data.len());
            sessions.push(UnreadSession {
                peer,
                session_type,
                count,
                latest,
            });
            if bytes >= MAX_LIST_BODY_BYTES {
                break;
            }
        }
        Ok(UnreadSummary { total, sessions })
    }

    fn unread_total(&self, user: UserId) -> StoreResult<u32> {
        let conn = self.lock()?;
        let counts: Vec<u32> = conn
            .prepare_cached("SELECT count FROM single_unread WHERE user_id = ?1 AND count > 0")
            .and_then(|mut s| {
                s.query_map(params![user], |r| r.get(0))
                    .and_then(Iterator::collect)
            })
            .map_err(sql("counting unread messages"))?;
        let groups = groups::unread_counts(&conn, user)?;
        Ok(counts
            .into_iter()
            .chain(groups.into_iter().map(|(_, n)| n))
            .fold(0u32, u32::saturating_add))
    }

    fn clear_unread(&self, reader: UserId, peer: UserId) -> StoreResult<()> {
        self.lock()?
            .execute(
                "DELETE FROM single_unread WHERE user_id = ?1 AND peer_id = ?2",
                params![reader, peer],
            )
            .map_err(sql("clearing unread count"))?;
        Ok(())
    }

    fn recent_sessions(&self, user: UserId, since: u32) -> StoreResult<Vec<RecentSession>> {
        let conn = self.lock()?;
        // The newest sessions first (small rows), then their latest messages
        // oldest session first, so that when the bodies reach the bound the
        // sessions left out are the newest ones (see the trait).
        // Single sessions are rows; group sessions are derived from the
        // membership (`groups::sessions`). Each list is the newest
        // MAX_RECENT_SESSIONS of its kind, so their merge holds the newest
        // of both. `floor` is the member's join point for groups.
        let mut rows: Vec<(u32, SessionType, u32, u32, MsgId)> = conn
            .prepare_cached(RECENT_SESSIONS_SQL)
            .and_then(|mut s| {
                s.query_map(
                    params![
                        user,
                        since,
                        MAX_RECENT_SESSIONS,
                        SessionType::Single.as_u32()
                    ],
                    |r| Ok((r.get(0)?, SessionType::Single, r.get(1)?, r.get(2)?, 0)),
                )
                .and_then(Iterator::collect)
            })
            .map_err(sql("listing recent sessions"))?;
        rows.extend(
            groups::sessions(&conn, user, since, MAX_RECENT_SESSIONS)?
                .into_iter()
                .map(|(group, updated, floor)| (group, SessionType::Group, 0, updated, floor)),
        );
        rows.sort_by_key(|r| std::cmp::Reverse((r.3, r.0, r.1.as_u32())));
        rows.truncate(usize::try_from(MAX_RECENT_SESSIONS).unwrap_or(usize::MAX));
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for (peer, session_type, status, updated, floor) in rows.into_iter().rev() {
            let latest = match session_type {
                SessionType::Single => latest_message(&conn, user, peer)?,
                SessionType::Group => groups::latest_message(&conn, peer, floor)?,
            };
            bytes = bytes.saturating_add(latest.data.len());
            out.push(RecentSession {
                peer,
                session_type,
                status,
                updated,
                latest,
            });
            if bytes >= MAX_LIST_BODY_BYTES {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    fn remove_session(
        &self,
        user: UserId,
        peer: UserId,
        session_type: SessionType,
    ) -> StoreResult<bool> {
        let now = self.now();
        let conn = self.lock()?;
        if session_type == SessionType::Group {
            return groups::hide_session(&conn, user, peer, now);
        }
        let n = conn
            .execute(
                "UPDATE session SET status = 1, updated = ?4
                 WHERE user_id = ?1 AND peer_id = ?2 AND session_type = ?3 AND status = 0",
                params![user, peer, session_type.as_u32(), now],
            )
            .map_err(sql("removing session"))?;
        Ok(n > 0)
    }

    fn create_group(&self, group: &NewGroup) -> StoreResult<Group> {
        let now = self.now();
        groups::create(&mut *self.lock()?, group, now)
    }

    fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        groups::load(&self.lock_directory(), id)
    }

    fn groups(&self) -> StoreResult<Vec<Group>> {
        groups::load_all(&self.lock_directory())
    }

    fn user_groups(
        &self,
        user: UserId,
        group_type: Option<GroupType>,
    ) -> StoreResult<Vec<GroupVersion>> {
        groups::of_user(&*self.lock()?, user, group_type)
    }

    fn groups_newer_than(&self, user: UserId, known: &[GroupVersion]) -> StoreResult<Vec<Group>> {
        groups::newer_than(&*self.lock()?, user, known)
    }

    fn change_group_members(
        &self,
        actor: Actor,
        group: GroupId,
        change: MemberChange,
        users: &[UserId],
    ) -> StoreResult<MembersChanged> {
        let now = self.now();
        groups::change_members(&mut *self.lock()?, actor, group, change, users, now)
    }

    fn set_group_shield(&self, user: UserId, group: GroupId, on: bool) -> StoreResult<()> {
        let now = self.now();
        groups::set_shield(&*self.lock()?, user, group, on, now)
    }

    fn group_shields(&self, group: GroupId, users: &[UserId]) -> StoreResult<Vec<(UserId, bool)>> {
        groups::shields(&self.lock_directory(), group, users)
    }

    fn group_message_list(
        &self,
        user: UserId,
        group: GroupId,
        begin: MsgId,
        count: u32,
    ) -> StoreResult<Vec<StoredMessage>> {
        groups::message_list(&*self.lock()?, user, group, begin, count)
    }

    fn group_messages_by_ids(
        &self,
        user: UserId,
        group: GroupId,
        ids: &[MsgId],
    ) -> StoreResult<Vec<StoredMessage>> {
        groups::messages_by_ids(&*self.lock()?, user, group, ids)
    }

    fn group_latest_msg_id(&self, user: UserId, group: GroupId) -> StoreResult<MsgId> {
        groups::latest_msg_id(&*self.lock()?, user, group)
    }

    fn clear_group_unread(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        groups::clear_unread(&*self.lock()?, user, group)
    }

    fn update_user(&self, user: UserId, update: &UserUpdate) -> StoreResult<Option<User>> {
        let now = self.now();
        admin::update_user(&mut *self.lock()?, user, update, now)
    }

    fn delete_group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        let now = self.now();
        admin::delete_group(&mut *self.lock()?, id, now)
    }

    fn add_offline_file(&self, file: &NewOfflineFile) -> StoreResult<bool> {
        let now = self.now();
        files::add(&mut *self.lock()?, file, now)
    }

    fn offline_files(&self, to: UserId) -> StoreResult<Vec<OfflineFile>> {
        files::list(&self.lock_directory(), to)
    }

    fn delete_offline_file(&self, task_id: &str, from: UserId, to: UserId) -> StoreResult<bool> {
        files::delete(&*self.lock()?, task_id, from, to)
    }
}

#[cfg(test)]
mod statement_tests {
    use super::*;
    use crate::password::HashParams;

    #[test]
    fn paged_queries_with_a_bound_limit_are_prepared_once() {
        let store = SqliteStore::open_in_memory(StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            ..StoreOptions::default()
        })
        .expect("store");
        let user = |name: &str| NewUser {
            name: name.into(),
            nick: name.into(),
            ..NewUser::default()
        };
        let a = store.add_user(&user("a"), "pw").unwrap();
        let b = store.add_user(&user("b"), "pw").unwrap();
        for i in 0..5u32 {
            store
                .store_message(&NewMessage {
                    from: a,
                    to: b,
                    session_type: SessionType::Single,
                    msg_type: 1,
                    create_time: 100 + i,
                    data: vec![b'x'],
                    dedupe_key: None,
                })
                .unwrap();
        }
        // Different page sizes, as clients ask.
        for count in [1, 3, 20, 2] {
            let page = store.message_list(a, b, 0, count).unwrap();
            assert_eq!(page.len(), count.min(5) as usize, "the limit still applies");
            store.recent_sessions(a, 0).unwrap();
            store.offline_files(b).unwrap();
        }
        for sql in [
            MESSAGE_LIST_SQL.as_str(),
            RECENT_SESSIONS_SQL,
            files::LIST_SQL,
        ] {
            assert_eq!(store.reprepares(sql), 0, "{sql}");
        }
    }
}
