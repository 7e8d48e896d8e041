//! [`Store`] on TeamTalk's own MySQL/MariaDB schema and Redis keys, so our
//! db_proxy_server runs over an existing TeamTalk deployment (and beside its
//! C++ db_proxy), and several of ours share one database.
//!
//! # Where each thing lives (as the C++ db_proxy keeps it)
//!
//! | what | where |
//! |---|---|
//! | users, departments | `IMUser`, `IMDepart` |
//! | a conversation | `IMRelationShip(smallId, bigId)`, its `id` the `relateId` |
//! | single messages | `IMMessage_<relateId % 8>` |
//! | single message ids | Redis `INCR msg_id_<relateId>` (pool `unread`) |
//! | single unread | Redis hash `unread_<uid>`: peer → count |
//! | recent sessions | `IMRecentSession(userId, peerId, type, status, updated)` |
//! | groups, members | `IMGroup`, `IMGroupMember` (status 0 live); Redis hash `group_member_<gid>`: uid → join time |
//! | group messages | `IMGroupMessage_<gid % 8>`, ids from `INCR group_msg_id_<gid>` |
//! | group unread | Redis `<gid>_im_group_msg {count}` − `<uid>_<gid>_im_user_group {count}` |
//! | group push shields | Redis hash `group_set_<gid>`: `"<uid>_1"` → `"0"`/`"1"` (pool `group_set`) |
//! | user push shield | `IMUser.push_shield_status` |
//! | device tokens | Redis `device_<uid>` = `ios:<tok>` / `android:<tok>`, `device_<tok>` = uid (pool `token`) |
//! | offline files | `IMTransmitFile`, `status = 0` waiting |
//!
//! Ours alone, which the C++ db_proxy never reads: `rs_user_password`
//! (Argon2 hashes of users we create), `rs_msg_dedupe` (idempotency keys)
//! and `rs_group_member` (join and hide points) (see `schema.rs`).
//!
//! # Durability and several db_proxies
//!
//! A message's id comes from Redis `INCR`, atomic whichever db_proxy asks,
//! so several of ours (and C++ ones) can serve one conversation. A batch of
//! messages is one MySQL transaction (group commit) of a handful of
//! statements: the dedupe keys looked up at once, the ids taken in one
//! Redis pipeline, multi-row INSERTs per shard table, the keys, and (where
//! `IMRecentSession` has our unique key) both parties' sessions; the
//! answers are given only after the commit. A statement the server refuses
//! sends the batch through a savepoint per message, so only that message
//! fails. Counters in Redis (unread, group totals) and a group's chat time
//! move after the commit, as TeamTalk's did: a crash between the two loses
//! an unread increment, never a message. An id taken by a transaction that
//! then failed is not reused (a gap, as in TeamTalk).
//!
//! Redis must keep its data (AOF or RDB): losing `msg_id_*` would restart a
//! conversation's ids, which the unique `(relateId, msgId)` key of our
//! schema refuses rather than store twice.

mod groups;
pub mod import;
mod schema;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{
    Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, PooledConn, Row, Transaction, TxOpts,
};

use super::files::{self, NewOfflineFile, OfflineFile};
use super::{
    Actor, CredentialStamp, DEDUPE_WINDOW_SECS, Department, DeptId, DeviceToken, Group, GroupId,
    GroupType, GroupVersion, LatestMessage, MAX_DEDUPE_KEYS, MAX_LIST_BODY_BYTES, MAX_MSG_LIST,
    MAX_MSGS_BY_ID, MAX_RECENT_SESSIONS, MemberChange, MembersChanged, MsgId, NewGroup, NewMessage,
    NewUser, RecentSession, SessionType, Store, StoreError, StoreOptions, StoreResult, Stored,
    StoredMessage, USER_STATUS_DEPARTED, UnreadSession, UnreadSummary, User, UserCredential,
    UserId,
};
use crate::password::{self, StoredPassword};
use crate::rules::files::MAX_OFFLINE_FILES;

/// MySQL's "duplicate entry" error.
const ER_DUP_ENTRY: u16 = 1062;
/// Most conversations whose `relateId` is remembered in memory.
const MAX_CACHED_RELATIONS: usize = 100_000;
/// Idle Redis connections kept per instance.
const REDIS_IDLE: usize = 16;
/// Most rows one multi-row INSERT (or dedupe lookup) carries.
const INSERT_ROWS: usize = 200;
/// Most body bytes one multi-row INSERT carries (MySQL's
/// `max_allowed_packet` is 16 MiB by default; one body alone may be 1 MiB).
const INSERT_BYTES: usize = 4 << 20;

/// Where the Redis instances of TeamTalk's `CacheInstances` are: each a
/// `redis://host:port/db` URL. TeamTalk's conf names five; the `sync` one
/// (the C++ SyncCenter's watermarks) is not used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrls {
    /// Unread counters and message id counters (`unread`).
    pub unread: String,
    /// Group push shields (`group_set`).
    pub group_set: String,
    /// Device tokens (`token`).
    pub token: String,
    /// The group membership cache (`group_member`).
    pub group_member: String,
}

impl RedisUrls {
    /// All four on one URL.
    #[must_use]
    pub fn all(url: &str) -> Self {
        Self {
            unread: url.to_owned(),
            group_set: url.to_owned(),
            token: url.to_owned(),
            group_member: url.to_owned(),
        }
    }
}

/// Where a [`MysqlStore`] keeps its data.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/dbname` (TeamTalk's
    /// `teamtalk_master_*` keys); `?require_ssl=true` for TLS.
    pub mysql_url: String,
    /// Most MySQL connections open at once (`teamtalk_master_maxconncnt`).
    pub max_connections: usize,
    /// The Redis instances.
    pub redis: RedisUrls,
}

impl std::fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("mysql", &self.describe())
            .field("max_connections", &self.max_connections)
            .field("redis", &self.redis)
            .finish()
    }
}

impl MysqlConfig {
    /// MySQL at `mysql_url`, every Redis instance at `redis_url`, 16
    /// connections.
    #[must_use]
    pub fn new(mysql_url: &str, redis_url: &str) -> Self {
        Self {
            mysql_url: mysql_url.to_owned(),
            max_connections: 16,
            redis: RedisUrls::all(redis_url),
        }
    }

    /// Where the data is, for logs: the MySQL URL without its password, and
    /// the unread Redis.
    #[must_use]
    pub fn describe(&self) -> String {
        let mysql = match Opts::from_url(&self.mysql_url) {
            Ok(o) => format!(
                "mysql://{}@{}:{}/{}",
                o.get_user().unwrap_or(""),
                o.get_ip_or_hostname(),
                o.get_tcp_port(),
                o.get_db_name().unwrap_or("")
            ),
            Err(_) => "mysql://(unparsable URL)".to_owned(),
        };
        format!("{mysql} + {}", self.redis.unread)
    }
}

fn my(context: &'static str) -> impl FnOnce(mysql::Error) -> StoreError {
    move |source| StoreError::Mysql {
        context,
        source: Box::new(source),
    }
}

fn rd(context: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis {
        context,
        source: Box::new(source),
    }
}

fn is_dup(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(m) if m.code == ER_DUP_ENTRY)
}

/// A few Redis connections to one instance, opened on demand; one that
/// failed is dropped rather than reused.
struct RedisPool {
    client: redis::Client,
    idle: Mutex<Vec<redis::Connection>>,
}

impl RedisPool {
    fn open(url: &str) -> StoreResult<Self> {
        let client = redis::Client::open(url).map_err(rd("parsing a Redis URL"))?;
        let pool = Self {
            client,
            idle: Mutex::new(Vec::new()),
        };
        // Fail at startup, not at the first message, when it is unreachable.
        pool.run("connecting to Redis", |c| {
            redis::cmd("PING").query::<String>(c)
        })?;
        Ok(pool)
    }

    fn run<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> StoreResult<T> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match taken {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_connection_with_timeout(Duration::from_secs(5))
                    .map_err(rd(context))?;
                c.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(rd(context))?;
                c.set_write_timeout(Some(Duration::from_secs(10)))
                    .map_err(rd(context))?;
                c
            }
        };
        let out = f(&mut conn).map_err(rd(context))?;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < REDIS_IDLE {
            idle.push(conn);
        }
        Ok(out)
    }
}

/// The Redis instances by role (shared when two roles name one URL).
struct Cache {
    unread: Arc<RedisPool>,
    group_set: Arc<RedisPool>,
    token: Arc<RedisPool>,
    group_member: Arc<RedisPool>,
}

impl Cache {
    fn open(urls: &RedisUrls) -> StoreResult<Self> {
        let mut by_url: HashMap<String, Arc<RedisPool>> = HashMap::new();
        let mut get = |url: &str| -> StoreResult<Arc<RedisPool>> {
            if let Some(p) = by_url.get(url) {
                return Ok(Arc::clone(p));
            }
            let p = Arc::new(RedisPool::open(url)?);
            by_url.insert(url.to_owned(), Arc::clone(&p));
            Ok(p)
        };
        Ok(Self {
            unread: get(&urls.unread)?,
            group_set: get(&urls.group_set)?,
            token: get(&urls.token)?,
            group_member: get(&urls.group_member)?,
        })
    }
}

/// [`Store`] on MySQL/MariaDB and Redis with TeamTalk's tables and keys
/// (see the [module docs](self)).
pub struct MysqlStore {
    pool: Pool,
    cache: Cache,
    options: StoreOptions,
    /// `(smallId, bigId)` → `relateId`; a conversation's id never changes.
    relations: Mutex<HashMap<(UserId, UserId), u32>>,
    describe: String,
    /// `IMRecentSession` has a unique key on (userId, peerId, type) (ours
    /// does; TeamTalk's setup does not), so sessions are upserted in one
    /// statement rather than row by row.
    session_key: bool,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("at", &self.describe)
            .finish_non_exhaustive()
    }
}

/// What to do once a message's transaction committed.
enum After {
    /// `HINCRBY unread_<to> <from> 1`.
    Unread { to: UserId, from: UserId },
    /// `HINCRBY <gid>_im_group_msg count 1`, then the sender's snapshot.
    GroupPosted { group: GroupId, from: UserId },
}

/// A row's column `i` as `T`, NULL as `T::default()`.
fn take<T: mysql::prelude::FromValue + Default>(row: &mut Row, i: usize) -> StoreResult<T> {
    match row.take_opt::<Option<T>, usize>(i) {
        Some(Ok(v)) => Ok(v.unwrap_or_default()),
        Some(Err(_)) => Err(StoreError::Invalid(
            "a stored value does not have the expected type",
        )),
        None => Err(StoreError::Invalid("a stored row lacks a column")),
    }
}

fn pair(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b { (a, b) } else { (b, a) }
}

fn shard(id: u32) -> u32 {
    id % schema::SHARDS
}

/// Columns read into a [`User`], in [`user_from_row`]'s order.
const USER_COLUMNS: &str = "u.id, u.name, u.nick, u.sex, u.departId, u.avatar, u.email, u.phone,
    u.domain, u.status, u.sign_info, u.push_shield_status, u.created, u.updated";

fn user_from_row(row: &mut Row) -> StoreResult<User> {
    Ok(User {
        id: take(row, 0)?,
        name: take(row, 1)?,
        nick: take(row, 2)?,
        sex: take(row, 3)?,
        dept_id: take(row, 4)?,
        avatar: take(row, 5)?,
        email: take(row, 6)?,
        phone: take(row, 7)?,
        domain: take(row, 8)?,
        status: take(row, 9)?,
        sign_info: take(row, 10)?,
        push_shield: take::<u32>(row, 11)? != 0,
        created: take(row, 12)?,
        updated: take(row, 13)?,
    })
}

/// `msgId, fromId, toId, type, created, content` of a single message.
fn message_from_row(mut row: Row) -> StoreResult<StoredMessage> {
    Ok(StoredMessage {
        msg_id: take(&mut row, 0)?,
        from: take(&mut row, 1)?,
        to: take(&mut row, 2)?,
        msg_type: take(&mut row, 3)?,
        create_time: take(&mut row, 4)?,
        data: take(&mut row, 5)?,
    })
}

/// Keeps messages until their bodies reach [`MAX_LIST_BODY_BYTES`].
fn bounded(rows: Vec<StoredMessage>) -> Vec<StoredMessage> {
    let mut out = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    for m in rows {
        bytes = bytes.saturating_add(m.data.len());
        out.push(m);
        if bytes >= MAX_LIST_BODY_BYTES {
            break;
        }
    }
    out
}

/// TeamTalk's device token value for a client type.
fn token_value(client_type: u32, token: &str) -> String {
    match client_type {
        0x11 => format!("ios:{token}"),
        0x12 => format!("android:{token}"),
        other => format!("{other}:{token}"),
    }
}

/// A `device_<uid>` value back into (client type, token).
fn parse_token_value(value: &str) -> Option<(u32, String)> {
    let (kind, token) = value.split_once(':')?;
    let client_type = match kind {
        "ios" => 0x11,
        "android" => 0x12,
        n => n.parse().ok()?,
    };
    (!token.is_empty()).then(|| (client_type, token.to_owned()))
}

/// A Redis counter value as a message id.
fn as_msg_id(v: i64) -> Option<MsgId> {
    u32::try_from(v).ok().filter(|&v| v > 0)
}

impl MysqlStore {
    /// Connects (creating the database named in the URL when it does not
    /// exist), creates TeamTalk's tables that are missing and ours, and
    /// checks every Redis instance answers.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a malformed URL; [`StoreError::Mysql`] or
    /// [`StoreError::Redis`] when a server cannot be reached or refuses.
    pub fn open(config: &MysqlConfig, options: StoreOptions) -> StoreResult<Self> {
        Self::connect(config, options, true)
    }

    /// Connects to an existing deployment without creating anything: for
    /// reading it (`teamtalk import`), never for serving.
    ///
    /// # Errors
    /// As [`MysqlStore::open`].
    pub fn open_existing(config: &MysqlConfig) -> StoreResult<Self> {
        Self::connect(config, StoreOptions::default(), false)
    }

    fn connect(config: &MysqlConfig, options: StoreOptions, create: bool) -> StoreResult<Self> {
        let opts = Opts::from_url(&config.mysql_url)
            .map_err(|e| StoreError::Config(format!("MySQL URL: {e}")))?;
        let db = opts.get_db_name().unwrap_or("").to_owned();
        if db.is_empty() {
            return Err(StoreError::Config(
                "the MySQL URL names no database (mysql://user:pw@host:port/dbname)".into(),
            ));
        }
        if !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Config(format!(
                "database name {db:?}: letters, digits and _ only"
            )));
        }
        let base = OptsBuilder::from_opts(opts.clone())
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(5)))
            .read_timeout(Some(Duration::from_secs(30)))
            .write_timeout(Some(Duration::from_secs(30)))
            .stmt_cache_size(256)
            // Matched rows, not changed ones: "does this user exist" from an
            // UPDATE that sets a value it already had.
            .additional_capabilities(mysql::consts::CapabilityFlags::CLIENT_FOUND_ROWS)
            .init(vec![
                "SET NAMES utf8mb4",
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            ]);
        // The database itself, when the server is new to TeamTalk.
        if create {
            let mut conn = mysql::Conn::new(base.clone().db_name(None::<String>))
                .map_err(my("connecting to MySQL"))?;
            conn.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ))
            .map_err(my("creating the database"))?;
        }
        let max = config.max_connections.max(1);
        let constraints = PoolConstraints::new(1, max)
            .ok_or_else(|| StoreError::Config("bad connection count".into()))?;
        let pool = Pool::new(base.pool_opts(PoolOpts::default().with_constraints(constraints)))
            .map_err(my("connecting to MySQL"))?;
        if create {
            let mut conn = pool.get_conn().map_err(my("connecting to MySQL"))?;
            for stmt in schema::statements() {
                conn.query_drop(stmt).map_err(my("creating tables"))?;
            }
        }
        let cache = Cache::open(&config.redis)?;
        let session_key = {
            let mut conn = pool.get_conn().map_err(my("connecting to MySQL"))?;
            let uniques: Vec<(String, String)> = conn
                .exec(
                    "SELECT index_name, GROUP_CONCAT(column_name ORDER BY seq_in_index)
                     FROM information_schema.statistics
                     WHERE table_schema = DATABASE() AND table_name = 'IMRecentSession'
                       AND non_unique = 0
                     GROUP BY index_name",
                    (),
                )
                .map_err(my("reading the schema"))?;
            uniques
                .iter()
                .any(|(_, cols)| cols.eq_ignore_ascii_case("userId,peerId,type"))
        };
        Ok(Self {
            pool,
            cache,
            options,
            relations: Mutex::new(HashMap::new()),
            describe: config.describe(),
            session_key,
        })
    }

    /// Where the data is (no password), for the startup log.
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn now(&self) -> u32 {
        (self.options.clock)()
    }

    fn conn(&self) -> StoreResult<PooledConn> {
        self.pool
            .get_conn()
            .map_err(my("taking a MySQL connection"))
    }

    /// The conversation's `relateId`, `None` if they never talked.
    fn relation(&self, conn: &mut PooledConn, a: UserId, b: UserId) -> StoreResult<Option<u32>> {
        let key = pair(a, b);
        if let Some(&id) = self
            .relations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(Some(id));
        }
        // Several rows can exist (TeamTalk's table has no unique key, and
        // two db_proxies may create one at once): the oldest is the one.
        let id: Option<Option<u32>> = conn
            .exec_first(
                "SELECT MIN(id) FROM IMRelationShip WHERE smallId = ? AND bigId = ? AND status = 0",
                (key.0, key.1),
            )
            .map_err(my("looking up a conversation"))?;
        let id = id.flatten();
        if let Some(id) = id {
            let mut cache = self
                .relations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_CACHED_RELATIONS {
                cache.clear();
            }
            cache.insert(key, id);
        }
        Ok(id)
    }

    /// The conversation's `relateId`, created if needed. The row is
    /// committed on its own before it is read back, so two db_proxies
    /// creating it at once agree on the oldest.
    fn relation_or_create(&self, conn: &mut PooledConn, a: UserId, b: UserId) -> StoreResult<u32> {
        if let Some(id) = self.relation(conn, a, b)? {
            return Ok(id);
        }
        let (small, big) = pair(a, b);
        let now = self.now();
        conn.exec_drop(
            "INSERT INTO IMRelationShip (smallId, bigId, status, created, updated)
             VALUES (?, ?, 0, ?, ?)",
            (small, big, now, now),
        )
        .map_err(my("creating a conversation"))?;
        self.relation(conn, a, b)?.ok_or(StoreError::Invalid(
            "a new conversation could not be read back",
        ))
    }

    fn insert_user(
        &self,
        user: &NewUser,
        password: &str,
        salt: &str,
        phc: Option<&str>,
    ) -> StoreResult<UserId> {
        let now = self.now();
        let mut conn = self.conn()?;
        let mut tx = tx(&mut conn)?;
        let taken: Option<u32> = tx
            .exec_first(
                "SELECT id FROM IMUser WHERE name = ? LIMIT 1",
                (&user.name,),
            )
            .map_err(my("looking up a user name"))?;
        if taken.is_some() {
            return Err(StoreError::NameTaken(user.name.clone()));
        }
        let res = tx.exec_drop(
            "INSERT INTO IMUser (name, nick, sex, departId, avatar, email, phone, domain, status,
                                 sign_info, password, salt, created, updated)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            mysql::Params::Positional(vec![
                user.name.as_str().into(),
                user.nick.as_str().into(),
                user.sex.into(),
                user.dept_id.into(),
                user.avatar.as_str().into(),
                user.email.as_str().into(),
                user.phone.as_str().into(),
                user.domain.as_str().into(),
                user.status.into(),
                user.sign_info.as_str().into(),
                password.into(),
                salt.into(),
                now.into(),
                now.into(),
            ]),
        );
        match res {
            Ok(()) => {}
            Err(e) if is_dup(&e) => return Err(StoreError::NameTaken(user.name.clone())),
            Err(e) => return Err(my("inserting a user")(e)),
        }
        let id = tx
            .last_insert_id()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or(StoreError::Invalid("id space exhausted (ids are 32-bit)"))?;
        if let Some(phc) = phc {
            tx.exec_drop(
                "INSERT INTO rs_user_password (userId, phc) VALUES (?, ?)",
                (id, phc),
            )
            .map_err(my("storing a password hash"))?;
        }
        tx.commit().map_err(my("committing a user"))?;
        Ok(id)
    }

    fn seed(
        &self,
        prefix: &str,
        count: u32,
        password: &str,
        salt: &str,
        phc: Option<&str>,
    ) -> StoreResult<Vec<UserId>> {
        let now = self.now();
        let mut conn = self.conn()?;
        let mut tx = tx(&mut conn)?;
        let mut ids = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for i in 1..=count {
            let name = format!("{prefix}{i}");
            let taken: Option<u32> = tx
                .exec_first("SELECT id FROM IMUser WHERE name = ? LIMIT 1", (&name,))
                .map_err(my("seeding users"))?;
            if taken.is_some() {
                return Err(StoreError::NameTaken(name));
            }
            match tx.exec_drop(
                "INSERT INTO IMUser (name, nick, password, salt, created, updated)
                 VALUES (?, ?, ?, ?, ?, ?)",
                (&name, &name, password, salt, now, now),
            ) {
                Ok(()) => {}
                Err(e) if is_dup(&e) => return Err(StoreError::NameTaken(name)),
                Err(e) => return Err(my("seeding users")(e)),
            }
            let id = tx
                .last_insert_id()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or(StoreError::Invalid("id space exhausted (ids are 32-bit)"))?;
            if let Some(phc) = phc {
                tx.exec_drop(
                    "INSERT INTO rs_user_password (userId, phc) VALUES (?, ?)",
                    (id, phc),
                )
                .map_err(my("seeding users"))?;
            }
            ids.push(id);
        }
        tx.commit().map_err(my("committing seeded users"))?;
        Ok(ids)
    }

    /// Upserts a recent-session row on TeamTalk's table without a unique
    /// key: an UPDATE first and an INSERT only when nothing matched (the
    /// batch's sessions go in their own transaction after the messages
    /// committed: holding session rows in the message transaction would
    /// make two writers of one conversation deadlock).
    fn touch_session(
        conn: &mut Transaction<'_>,
        user: UserId,
        peer: UserId,
        session_type: SessionType,
        now: u32,
    ) -> StoreResult<()> {
        let kind = session_type.as_u32();
        for _ in 0..2 {
            conn.exec_drop(
                "UPDATE IMRecentSession SET status = 0, updated = GREATEST(updated, ?)
                 WHERE userId = ? AND peerId = ? AND type = ?",
                (now, user, peer, kind),
            )
            .map_err(my("updating a session"))?;
            if conn.affected_rows() > 0 {
                return Ok(());
            }
            match conn.exec_drop(
                "INSERT INTO IMRecentSession (userId, peerId, type, status, created, updated)
                 VALUES (?, ?, ?, 0, ?, ?)",
                (user, peer, kind, now, now),
            ) {
                Ok(()) => return Ok(()),
                Err(e) if is_dup(&e) => {}
                Err(e) => return Err(my("inserting a session")(e)),
            }
        }
        Ok(())
    }

    /// The id a resend of `msg` got, if its key was stored within the
    /// window; an expired entry is removed.
    fn find_duplicate(
        tx: &mut Transaction<'_>,
        msg: &NewMessage,
        key: &[u8],
        now: u32,
    ) -> StoreResult<Option<MsgId>> {
        let kind = msg.session_type.as_u32();
        let found: Option<(MsgId, u32)> = tx
            .exec_first(
                "SELECT msgId, created FROM rs_msg_dedupe
                 WHERE sessionType = ? AND fromId = ? AND toId = ? AND dkey = ?",
                (kind, msg.from, msg.to, key),
            )
            .map_err(my("looking up a dedupe key"))?;
        match found {
            Some((id, created)) if created >= now.saturating_sub(DEDUPE_WINDOW_SECS) => {
                Ok(Some(id))
            }
            Some(_) => {
                tx.exec_drop(
                    "DELETE FROM rs_msg_dedupe
                     WHERE sessionType = ? AND fromId = ? AND toId = ? AND dkey = ?",
                    (kind, msg.from, msg.to, key),
                )
                .map_err(my("forgetting an expired dedupe key"))?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Takes the next id of a conversation or group from Redis.
    fn next_id(&self, counter: &str) -> StoreResult<Option<MsgId>> {
        let v: i64 = self.cache.unread.run("taking a message id", |c| {
            redis::cmd("INCR").arg(counter).query(c)
        })?;
        Ok(as_msg_id(v))
    }

    /// Stores one checked message inside `tx` (under the caller's
    /// savepoint). `relate` is the conversation of a single message.
    fn insert_keyed(
        &self,
        tx: &mut Transaction<'_>,
        msg: &NewMessage,
        relate: u32,
        now: u32,
        after: &mut Vec<After>,
    ) -> StoreResult<Stored> {
        if msg.session_type == SessionType::Group {
            groups::check_poster(tx, msg.from, msg.to)?;
        }
        let key = msg.dedupe_key.as_deref().filter(|k| !k.is_empty());
        if let Some(key) = key
            && let Some(id) = Self::find_duplicate(tx, msg, key, now)?
        {
            return Ok(Stored::Duplicate(id));
        }
        let msg_id = match msg.session_type {
            SessionType::Single => {
                let Some(id) = self.next_id(&format!("msg_id_{relate}"))? else {
                    let (s, b) = pair(msg.from, msg.to);
                    return Err(StoreError::MsgIdsExhausted(s, b));
                };
                tx.exec_drop(
                    format!(
                        "INSERT INTO IMMessage_{} (relateId, fromId, toId, msgId, content, type,
                                                   status, created, updated)
                         VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                        shard(relate)
                    ),
                    (
                        relate,
                        msg.from,
                        msg.to,
                        id,
                        &msg.data,
                        msg.msg_type,
                        msg.create_time,
                        msg.create_time,
                    ),
                )
                .map_err(my("inserting a message"))?;
                after.push(After::Unread {
                    to: msg.to,
                    from: msg.from,
                });
                id
            }
            SessionType::Group => {
                let Some(id) = self.next_id(&format!("group_msg_id_{}", msg.to))? else {
                    return Err(StoreError::GroupMsgIdsExhausted(msg.to));
                };
                groups::insert_message(tx, msg, id)?;
                after.push(After::GroupPosted {
                    group: msg.to,
                    from: msg.from,
                });
                id
            }
        };
        if let Some(key) = key {
            match tx.exec_drop(
                "INSERT INTO rs_msg_dedupe (sessionType, fromId, toId, dkey, msgId, created)
                 VALUES (?, ?, ?, ?, ?, ?)",
                (
                    msg.session_type.as_u32(),
                    msg.from,
                    msg.to,
                    key,
                    msg_id,
                    now,
                ),
            ) {
                Ok(()) => {}
                // Another db_proxy stored the same resend a moment ago.
                Err(e) if is_dup(&e) => return Err(StoreError::DuplicateRace),
                Err(e) => return Err(my("remembering a dedupe key")(e)),
            }
        }
        Ok(Stored::New(msg.stored_as(msg_id)))
    }

    /// Both parties' session rows of single messages, `pairs` sorted, in
    /// multi-row upserts (IMRecentSession with our unique key).
    fn upsert_sessions(
        tx: &mut Transaction<'_>,
        pairs: &[(UserId, UserId)],
        now: u32,
    ) -> StoreResult<()> {
        for chunk in pairs.chunks(INSERT_ROWS) {
            let query = format!(
                "INSERT INTO IMRecentSession (userId, peerId, type, status, created, updated)
                 VALUES {}
                 ON DUPLICATE KEY UPDATE status = 0, updated = GREATEST(updated, VALUES(updated))",
                vec!["(?, ?, 1, 0, ?, ?)"; chunk.len()].join(", ")
            );
            let mut values: Vec<mysql::Value> = Vec::with_capacity(chunk.len() * 4);
            for &(user, peer) in chunk {
                values.extend([user.into(), peer.into(), now.into(), now.into()]);
            }
            tx.exec_drop(query, mysql::Params::Positional(values))
                .map_err(my("updating sessions"))?;
        }
        Ok(())
    }

    /// Applies what follows committed messages: both parties' sessions
    /// (in a fixed order, each row once) and a group's last chat time in
    /// MySQL, then the counters in Redis.
    fn apply_after(&self, after: Vec<After>, now: u32, sessions_done: bool) -> StoreResult<()> {
        if after.is_empty() {
            return Ok(());
        }
        let mut sessions = std::collections::BTreeSet::new();
        let mut chated = std::collections::BTreeSet::new();
        for a in &after {
            match *a {
                After::Unread { to, from } if !sessions_done => {
                    sessions.insert((from, to));
                    sessions.insert((to, from));
                }
                After::Unread { .. } => {}
                After::GroupPosted { group, .. } => {
                    chated.insert(group);
                }
            }
        }
        if !sessions.is_empty() || !chated.is_empty() {
            // One transaction (one commit, one log flush) for the batch's
            // sessions and groups, rows taken in ascending order so two
            // batches never wait on each other in a cycle.
            let mut conn = self.conn()?;
            let mut tx = tx(&mut conn)?;
            let sessions: Vec<(UserId, UserId)> = sessions.into_iter().collect();
            if self.session_key {
                Self::upsert_sessions(&mut tx, &sessions, now)?;
            } else {
                for (user, peer) in sessions {
                    Self::touch_session(&mut tx, user, peer, SessionType::Single, now)?;
                }
            }
            for group in chated {
                tx.exec_drop(
                    "UPDATE IMGroup SET lastChated = GREATEST(lastChated, ?) WHERE id = ?",
                    (now, group),
                )
                .map_err(my("marking a group chatted"))?;
            }
            tx.commit().map_err(my("committing sessions"))?;
        }
        let mut totals: Vec<(GroupId, UserId)> = Vec::new();
        self.cache.unread.run("counting unread messages", |c| {
            let mut pipe = redis::pipe();
            for a in &after {
                match *a {
                    After::Unread { to, from } => {
                        pipe.cmd("HINCRBY")
                            .arg(format!("unread_{to}"))
                            .arg(from)
                            .arg(1)
                            .ignore();
                    }
                    After::GroupPosted { group, from } => {
                        pipe.cmd("HINCRBY")
                            .arg(groups::total_key(group))
                            .arg("count")
                            .arg(1);
                        totals.push((group, from));
                    }
                }
            }
            let counts: Vec<i64> = pipe.query(c)?;
            // The sender has read what they posted: their snapshot is the
            // new total (TeamTalk's incMessageCount).
            if !totals.is_empty() {
                let mut pipe = redis::pipe();
                for ((group, from), count) in totals.iter().zip(counts) {
                    pipe.cmd("HSET")
                        .arg(groups::snapshot_key(*from, *group))
                        .arg("count")
                        .arg(count)
                        .ignore();
                }
                pipe.query::<()>(c)?;
            }
            Ok(())
        })
    }

    /// Forgets dedupe keys past the window and the oldest beyond
    /// [`MAX_DEDUPE_KEYS`], a bounded number per call.
    fn prune_dedupe(tx: &mut Transaction<'_>, now: u32) -> StoreResult<()> {
        tx.exec_drop(
            "DELETE FROM rs_msg_dedupe WHERE created < ? LIMIT 1000",
            (now.saturating_sub(DEDUPE_WINDOW_SECS),),
        )
        .map_err(my("pruning expired dedupe keys"))?;
        let top: Option<Option<u64>> = tx
            .exec_first("SELECT MAX(seq) FROM rs_msg_dedupe", ())
            .map_err(my("pruning dedupe keys"))?;
        if let Some(top) = top.flatten()
            && top > MAX_DEDUPE_KEYS
        {
            tx.exec_drop(
                "DELETE FROM rs_msg_dedupe WHERE seq <= ? LIMIT 1000",
                (top - MAX_DEDUPE_KEYS,),
            )
            .map_err(my("pruning the oldest dedupe keys"))?;
        }
        Ok(())
    }

    /// The latest message of a conversation; empty when none.
    fn latest_message(
        &self,
        conn: &mut PooledConn,
        a: UserId,
        b: UserId,
    ) -> StoreResult<LatestMessage> {
        let Some(relate) = self.relation(conn, a, b)? else {
            return Ok(LatestMessage::default());
        };
        let row: Option<Row> = conn
            .exec_first(
                format!(
                    "SELECT msgId, fromId, type, content FROM IMMessage_{}
                     WHERE relateId = ? AND status = 0 ORDER BY msgId DESC LIMIT 1",
                    shard(relate)
                ),
                (relate,),
            )
            .map_err(my("reading a conversation's latest message"))?;
        latest_from_row(row)
    }

    fn store_batch(&self, msgs: &[NewMessage]) -> StoreResult<Vec<StoreResult<Stored>>> {
        let now = self.now();
        let mut conn = self.conn()?;
        // Conversations first, each committed on its own (see
        // `relation_or_create`), so the message transaction holds one
        // connection only.
        let mut relates = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let r = match super::sqlite::check_message(msg) {
                Err(e) => Err(e),
                Ok(()) if msg.session_type == SessionType::Single => {
                    self.relation_or_create(&mut conn, msg.from, msg.to)
                }
                Ok(()) => Ok(0),
            };
            relates.push(r);
        }
        let mut sessions_done = false;
        let (out, after) = match self.store_together(&mut conn, msgs, &relates, now)? {
            Some((done, after)) => {
                sessions_done = self.session_key;
                let out = done
                    .into_iter()
                    .zip(relates)
                    .map(|(r, relate)| match (r, relate) {
                        (Some(r), _) => r,
                        (None, Err(e)) => Err(e),
                        (None, Ok(_)) => Err(StoreError::Invalid("a message got no result")),
                    })
                    .collect();
                (out, after)
            }
            // A statement of the batch failed (another db_proxy stored the
            // same resend a moment ago, a body TeamTalk's column refuses):
            // the batch again, one savepoint per message, so only that
            // message fails.
            None => self.store_each(&mut conn, msgs, relates, now)?,
        };
        drop(conn);
        // Sessions and counters move only for what is committed. A failure
        // here loses a count or a session's place, not a message: the
        // messages are answered as stored.
        if let Err(e) = self.apply_after(after, now, sessions_done) {
            tracing::warn!(error = %e, "unread counters not updated after a commit");
        }
        Ok(out)
    }

    /// The batch in one transaction with a handful of statements whatever
    /// its size: the dedupe keys looked up in one query, the ids taken in one
    /// Redis pipeline, the rows inserted by multi-row INSERTs per table.
    /// `Ok(None)` when a statement failed on the server: nothing was stored
    /// (the ids taken are skipped) and the caller goes message by message.
    /// Entries left `None` are those whose `relates` is an error.
    #[allow(clippy::type_complexity)]
    fn store_together(
        &self,
        conn: &mut PooledConn,
        msgs: &[NewMessage],
        relates: &[StoreResult<u32>],
        now: u32,
    ) -> StoreResult<Option<(Vec<Option<StoreResult<Stored>>>, Vec<After>)>> {
        type Key = (u32, UserId, UserId, Vec<u8>);
        let mut res: Vec<Option<StoreResult<Stored>>> = msgs.iter().map(|_| None).collect();
        let mut tx = tx(conn)?;
        // Group posters: each (sender, group) checked once, in the
        // transaction (see `groups::check_poster`).
        let mut pending = Vec::with_capacity(msgs.len());
        let mut posters: HashMap<(UserId, GroupId), u8> = HashMap::new();
        for (i, msg) in msgs.iter().enumerate() {
            if relates[i].is_err() {
                continue;
            }
            if msg.session_type == SessionType::Group {
                let verdict = match posters.get(&(msg.from, msg.to)) {
                    Some(&v) => v,
                    None => {
                        let v = match groups::check_poster(&mut tx, msg.from, msg.to) {
                            Ok(()) => 0,
                            Err(StoreError::NoSuchGroup(_)) => 1,
                            Err(StoreError::NotMember { .. }) => 2,
                            Err(e) => return Err(e),
                        };
                        posters.insert((msg.from, msg.to), v);
                        v
                    }
                };
                match verdict {
                    1 => {
                        res[i] = Some(Err(StoreError::NoSuchGroup(msg.to)));
                        continue;
                    }
                    2 => {
                        res[i] = Some(Err(StoreError::NotMember {
                            user: msg.from,
                            group: msg.to,
                        }));
                        continue;
                    }
                    _ => {}
                }
            }
            pending.push(i);
        }
        // Dedupe keys known already, in one query per few hundred.
        let key_of = |m: &NewMessage| -> Option<Key> {
            m.dedupe_key
                .as_ref()
                .filter(|k| !k.is_empty())
                .map(|k| (m.session_type.as_u32(), m.from, m.to, k.clone()))
        };
        let keys: Vec<Key> = pending.iter().filter_map(|&i| key_of(&msgs[i])).collect();
        let mut known: HashMap<Key, (MsgId, u32)> = HashMap::new();
        for chunk in keys.chunks(INSERT_ROWS) {
            let query = format!(
                "SELECT sessionType, fromId, toId, dkey, msgId, created FROM rs_msg_dedupe
                 WHERE (sessionType, fromId, toId, dkey) IN ({})",
                vec!["(?, ?, ?, ?)"; chunk.len()].join(", ")
            );
            let mut values = Vec::with_capacity(chunk.len() * 4);
            for k in chunk {
                values.extend([k.0.into(), k.1.into(), k.2.into(), k.3.as_slice().into()]);
            }
            let rows: Vec<(u32, u32, u32, Vec<u8>, u32, u32)> = tx
                .exec(query, mysql::Params::Positional(values))
                .map_err(my("looking up dedupe keys"))?;
            for (kind, from, to, key, id, created) in rows {
                known.insert((kind, from, to, key), (id, created));
            }
        }
        let cutoff = now.saturating_sub(DEDUPE_WINDOW_SECS);
        let mut first: HashMap<Key, usize> = HashMap::new();
        let mut dup_of: Vec<(usize, usize)> = Vec::new();
        let mut to_store = Vec::with_capacity(pending.len());
        for i in pending {
            if let Some(key) = key_of(&msgs[i]) {
                match known.get(&key) {
                    Some(&(id, created)) if created >= cutoff => {
                        res[i] = Some(Ok(Stored::Duplicate(id)));
                        continue;
                    }
                    Some(_) => {
                        tx.exec_drop(
                            "DELETE FROM rs_msg_dedupe
                             WHERE sessionType = ? AND fromId = ? AND toId = ? AND dkey = ?",
                            (key.0, key.1, key.2, key.3.as_slice()),
                        )
                        .map_err(my("forgetting an expired dedupe key"))?;
                        known.remove(&key);
                    }
                    None => {}
                }
                if let Some(&j) = first.get(&key) {
                    dup_of.push((i, j));
                    continue;
                }
                first.insert(key, i);
            }
            to_store.push(i);
        }
        // Ids, in batch order, in one round trip.
        let counters: Vec<i64> = if to_store.is_empty() {
            Vec::new()
        } else {
            self.cache.unread.run("taking message ids", |c| {
                let mut pipe = redis::pipe();
                for &i in &to_store {
                    let m = &msgs[i];
                    let key = match m.session_type {
                        SessionType::Single => {
                            format!("msg_id_{}", relates[i].as_ref().copied().unwrap_or(0))
                        }
                        SessionType::Group => format!("group_msg_id_{}", m.to),
                    };
                    pipe.cmd("INCR").arg(key);
                }
                pipe.query(c)
            })?
        };
        let mut stored: Vec<(usize, MsgId)> = Vec::with_capacity(to_store.len());
        for (&i, v) in to_store.iter().zip(counters) {
            let m = &msgs[i];
            match (as_msg_id(v), m.session_type) {
                (Some(id), _) => stored.push((i, id)),
                (None, SessionType::Single) => {
                    let (a, b) = pair(m.from, m.to);
                    res[i] = Some(Err(StoreError::MsgIdsExhausted(a, b)));
                }
                (None, SessionType::Group) => {
                    res[i] = Some(Err(StoreError::GroupMsgIdsExhausted(m.to)));
                }
            }
        }
        // Rows by table, a few hundred (and a few MB) per statement.
        let mut tables: std::collections::BTreeMap<String, Vec<(usize, MsgId)>> =
            std::collections::BTreeMap::new();
        for &(i, id) in &stored {
            let m = &msgs[i];
            let table = match m.session_type {
                SessionType::Single => {
                    format!(
                        "IMMessage_{}",
                        shard(relates[i].as_ref().copied().unwrap_or(0))
                    )
                }
                SessionType::Group => format!("IMGroupMessage_{}", shard(m.to)),
            };
            tables.entry(table).or_default().push((i, id));
        }
        for (table, rows) in &tables {
            let single = table.starts_with("IMMessage_");
            let mut start = 0;
            while start < rows.len() {
                let mut end = start;
                let mut bytes = 0usize;
                while end < rows.len()
                    && end - start < INSERT_ROWS
                    && (end == start || bytes + msgs[rows[end].0].data.len() <= INSERT_BYTES)
                {
                    bytes += msgs[rows[end].0].data.len();
                    end += 1;
                }
                let part = &rows[start..end];
                let (head, row) = if single {
                    (
                        "(relateId, fromId, toId, msgId, content, type, status, created, updated)",
                        "(?, ?, ?, ?, ?, ?, 0, ?, ?)",
                    )
                } else {
                    (
                        "(groupId, userId, msgId, content, type, status, created, updated)",
                        "(?, ?, ?, ?, ?, 0, ?, ?)",
                    )
                };
                let mut values: Vec<mysql::Value> = Vec::with_capacity(part.len() * 8);
                for &(i, id) in part {
                    let m = &msgs[i];
                    if single {
                        values.push(relates[i].as_ref().copied().unwrap_or(0).into());
                        values.push(m.from.into());
                        values.push(m.to.into());
                    } else {
                        values.push(m.to.into());
                        values.push(m.from.into());
                    }
                    values.extend([
                        id.into(),
                        m.data.as_slice().into(),
                        m.msg_type.into(),
                        m.create_time.into(),
                        m.create_time.into(),
                    ]);
                }
                let query = format!(
                    "INSERT INTO {table} {head} VALUES {}",
                    vec![row; part.len()].join(", ")
                );
                match tx.exec_drop(query, mysql::Params::Positional(values)) {
                    Ok(()) => {}
                    Err(mysql::Error::MySqlError(e)) => {
                        tracing::debug!(error = %e, "a batch insert failed; storing one by one");
                        return Ok(None);
                    }
                    Err(e) => return Err(my("inserting messages")(e)),
                }
                start = end;
            }
        }
        let ids: HashMap<usize, MsgId> = stored.iter().copied().collect();
        let keyed: Vec<(Key, MsgId)> = stored
            .iter()
            .filter_map(|&(i, id)| key_of(&msgs[i]).map(|k| (k, id)))
            .collect();
        for chunk in keyed.chunks(INSERT_ROWS) {
            let query = format!(
                "INSERT INTO rs_msg_dedupe (sessionType, fromId, toId, dkey, msgId, created)
                 VALUES {}",
                vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            );
            let mut values = Vec::with_capacity(chunk.len() * 6);
            for (k, id) in chunk {
                values.extend([
                    k.0.into(),
                    k.1.into(),
                    k.2.into(),
                    k.3.as_slice().into(),
                    (*id).into(),
                    now.into(),
                ]);
            }
            match tx.exec_drop(query, mysql::Params::Positional(values)) {
                Ok(()) => {}
                // Another db_proxy stored one of these resends meanwhile.
                Err(mysql::Error::MySqlError(_)) => return Ok(None),
                Err(e) => return Err(my("remembering dedupe keys")(e)),
            }
        }
        for (i, j) in dup_of {
            match ids.get(&j) {
                Some(&id) => res[i] = Some(Ok(Stored::Duplicate(id))),
                // Its first copy was not stored: decide message by message.
                None => return Ok(None),
            }
        }
        if !keys.is_empty() {
            Self::prune_dedupe(&mut tx, now)?;
        }
        if self.session_key {
            // In the messages' transaction: one log flush per batch. Rows
            // in ascending order, so concurrent batches cannot deadlock.
            let mut pairs: Vec<(UserId, UserId)> = stored
                .iter()
                .filter(|&&(i, _)| msgs[i].session_type == SessionType::Single)
                .flat_map(|&(i, _)| [(msgs[i].from, msgs[i].to), (msgs[i].to, msgs[i].from)])
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            Self::upsert_sessions(&mut tx, &pairs, now)?;
        }
        tx.commit().map_err(my("committing messages"))?;
        let mut after = Vec::with_capacity(stored.len());
        for (i, id) in stored {
            let m = &msgs[i];
            after.push(match m.session_type {
                SessionType::Single => After::Unread {
                    to: m.to,
                    from: m.from,
                },
                SessionType::Group => After::GroupPosted {
                    group: m.to,
                    from: m.from,
                },
            });
            res[i] = Some(Ok(Stored::New(m.stored_as(id))));
        }
        Ok(Some((res, after)))
    }

    /// The batch in one transaction, message by message under savepoints.
    fn store_each(
        &self,
        conn: &mut PooledConn,
        msgs: &[NewMessage],
        relates: Vec<StoreResult<u32>>,
        now: u32,
    ) -> StoreResult<(Vec<StoreResult<Stored>>, Vec<After>)> {
        let mut after = Vec::new();
        let mut tx = tx(conn)?;
        let mut out = Vec::with_capacity(msgs.len());
        for (msg, relate) in msgs.iter().zip(relates) {
            let relate = match relate {
                Ok(r) => r,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            tx.query_drop("SAVEPOINT msg")
                .map_err(my("starting a message savepoint"))?;
            let mut mine = Vec::new();
            match self.insert_keyed(&mut tx, msg, relate, now, &mut mine) {
                Ok(stored) => {
                    tx.query_drop("RELEASE SAVEPOINT msg")
                        .map_err(my("releasing a message savepoint"))?;
                    after.extend(mine);
                    out.push(Ok(stored));
                }
                Err(e) => {
                    tx.query_drop("ROLLBACK TO SAVEPOINT msg")
                        .map_err(my("rolling back a message"))?;
                    let e = match e {
                        StoreError::DuplicateRace => {
                            let key = msg.dedupe_key.as_deref().unwrap_or_default();
                            match Self::find_duplicate(&mut tx, msg, key, now)? {
                                Some(id) => {
                                    out.push(Ok(Stored::Duplicate(id)));
                                    continue;
                                }
                                None => StoreError::Invalid("a dedupe key vanished"),
                            }
                        }
                        e => e,
                    };
                    out.push(Err(e));
                }
            }
        }
        if msgs.iter().any(|m| m.dedupe_key.is_some()) {
            Self::prune_dedupe(&mut tx, now)?;
        }
        tx.commit().map_err(my("committing messages"))?;
        Ok((out, after))
    }
}

/// A user row with `password, salt, phc` after [`USER_COLUMNS`]: the user,
/// the stored password to verify against and its stamp. Ours (an Argon2
/// string in `rs_user_password`) wins over TeamTalk's columns.
fn credential_from_row(mut row: Row) -> StoreResult<(User, StoredPassword, CredentialStamp)> {
    let user = user_from_row(&mut row)?;
    let hash: String = take(&mut row, 14)?;
    let salt: String = take(&mut row, 15)?;
    let phc: Option<String> = match row.take_opt::<Option<String>, usize>(16) {
        Some(Ok(v)) => v,
        _ => None,
    };
    Ok(match phc {
        Some(phc) => {
            let stamp = CredentialStamp::of(&phc, None);
            (user, StoredPassword::Argon2(phc), stamp)
        }
        None => {
            let stamp = CredentialStamp::of(&hash, Some(&salt));
            (user, StoredPassword::TeamTalk { hash, salt }, stamp)
        }
    })
}

/// Starts a transaction on `conn` (READ COMMITTED, set when it opened).
fn tx(conn: &mut PooledConn) -> StoreResult<Transaction<'_>> {
    conn.start_transaction(TxOpts::default())
        .map_err(my("starting a transaction"))
}

fn latest_from_row(row: Option<Row>) -> StoreResult<LatestMessage> {
    let Some(mut row) = row else {
        return Ok(LatestMessage::default());
    };
    Ok(LatestMessage {
        msg_id: take(&mut row, 0)?,
        from: take(&mut row, 1)?,
        msg_type: take(&mut row, 2)?,
        data: take(&mut row, 3)?,
    })
}

impl Store for MysqlStore {
    fn add_department(&self, name: &str, priority: u32, parent_id: DeptId) -> StoreResult<DeptId> {
        let now = self.now();
        let mut conn = self.conn()?;
        let mut tx = tx(&mut conn)?;
        // Live names are unique (TeamTalk's table has no such key).
        let taken: Option<u32> = tx
            .exec_first(
                "SELECT id FROM IMDepart WHERE departName = ? AND status = 0 LIMIT 1 FOR UPDATE",
                (name,),
            )
            .map_err(my("looking up a department name"))?;
        if taken.is_some() {
            return Err(StoreError::DeptNameTaken(name.to_owned()));
        }
        tx.exec_drop(
            "INSERT INTO IMDepart (departName, priority, parentId, status, created, updated)
             VALUES (?, ?, ?, 0, ?, ?)",
            (name, priority, parent_id, now, now),
        )
        .map_err(my("inserting a department"))?;
        let id = tx
            .last_insert_id()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or(StoreError::Invalid("id space exhausted (ids are 32-bit)"))?;
        tx.commit().map_err(my("committing a department"))?;
        Ok(id)
    }

    fn rename_department(&self, id: DeptId, name: &str) -> StoreResult<bool> {
        let now = self.now();
        let mut conn = self.conn()?;
        let mut tx = tx(&mut conn)?;
        let taken: Option<u32> = tx
            .exec_first(
                "SELECT id FROM IMDepart WHERE departName = ? AND status = 0 AND id != ?
                 LIMIT 1 FOR UPDATE",
                (name, id),
            )
            .map_err(my("looking up a department name"))?;
        if taken.is_some() {
            return Err(StoreError::DeptNameTaken(name.to_owned()));
        }
        tx.exec_drop(
            "UPDATE IMDepart SET departName = ?, updated = ? WHERE id = ? AND status = 0",
            (name, now, id),
        )
        .map_err(my("renaming a department"))?;
        let found = tx.affected_rows() > 0;
        tx.commit().map_err(my("committing a department"))?;
        Ok(found)
    }

    fn delete_department(&self, id: DeptId) -> StoreResult<bool> {
        let now = self.now();
        let mut conn = self.conn()?;
        let mut tx = tx(&mut conn)?;
        let live: Option<u32> = tx
            .exec_first(
                "SELECT id FROM IMDepart WHERE id = ? AND status = 0 FOR UPDATE",
                (id,),
            )
            .map_err(my("reading a department"))?;
        if live.is_none() {
            return Ok(false);
        }
        let users: Option<u64> = tx
            .exec_first("SELECT COUNT(*) FROM IMUser WHERE departId = ?", (id,))
            .map_err(my("counting a department's members"))?;
        let children: Option<u64> = tx
            .exec_first(
                "SELECT COUNT(*) FROM IMDepart WHERE parentId = ? AND status = 0",
                (id,),
            )
            .map_err(my("counting a department's members"))?;
        let (users, children) = (users.unwrap_or(0), children.unwrap_or(0));
        if users > 0 || children > 0 {
            return Err(StoreError::DeptNotEmpty {
                id,
                users,
                children,
            });
        }
        tx.exec_drop(
            "UPDATE IMDepart SET status = ?, updated = ? WHERE id = ?",
            (super::DEPT_STATUS_DELETED, now, id),
        )
        .map_err(my("deleting a department"))?;
        tx.commit()
            .map_err(my("committing a department's deletion"))?;
        Ok(true)
    }

    fn departments_updated_since(&self, since: u32) -> StoreResult<Vec<Department>> {
        let rows: Vec<Row> = self
            .conn()?
            .exec(
                "SELECT id, priority, departName, parentId, status, updated FROM IMDepart
                 WHERE updated > ? ORDER BY id",
                (since,),
            )
            .map_err(my("listing departments"))?;
        rows.into_iter()
            .map(|mut r| {
                Ok(Department {
                    id: take(&mut r, 0)?,
                    priority: take(&mut r, 1)?,
                    name: take(&mut r, 2)?,
                    parent_id: take(&mut r, 3)?,
                    status: take(&mut r, 4)?,
                    updated: take(&mut r, 5)?,
                })
            })
            .collect()
    }

    fn add_user(&self, user: &NewUser, password_md5hex: &str) -> StoreResult<UserId> {
        let phc = password::hash_password(&self.options.hash_params, password_md5hex)?;
        self.insert_user(user, "", "", Some(&phc))
    }

    fn import_teamtalk_user(
        &self,
        user: &NewUser,
        password: &str,
        salt: &str,
    ) -> StoreResult<UserId> {
        self.insert_user(user, password, salt, None)
    }

    fn check_login(
        &self,
        name: &str,
        password_md5hex: &str,
    ) -> StoreResult<Option<UserCredential>> {
        let row: Option<Row> = self
            .conn()?
            .exec_first(
                format!(
                    "SELECT {USER_COLUMNS}, u.password, u.salt, p.phc
                     FROM IMUser u LEFT JOIN rs_user_password p ON p.userId = u.id
                     WHERE u.name = ? ORDER BY u.id LIMIT 1"
                ),
                (name,),
            )
            .map_err(my("looking up a login"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (user, stored, credential) = credential_from_row(row)?;
        if user.status == USER_STATUS_DEPARTED {
            return Ok(None);
        }
        Ok(stored
            .verify(password_md5hex)?
            .then_some(UserCredential { user, credential }))
    }

    fn user_with_credential(&self, id: UserId) -> StoreResult<Option<UserCredential>> {
        let row: Option<Row> = self
            .conn()?
            .exec_first(
                format!(
                    "SELECT {USER_COLUMNS}, u.password, u.salt, p.phc
                     FROM IMUser u LEFT JOIN rs_user_password p ON p.userId = u.id
                     WHERE u.id = ?"
                ),
                (id,),
            )
            .map_err(my("reading a user's credential"))?;
        row.map(|row| {
            let (user, _, credential) = credential_from_row(row)?;
            Ok(UserCredential { user, credential })
        })
        .transpose()
    }

    fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        let row: Option<Row> = self
            .conn()?
            .exec_first(
                format!(
                    "SELECT {USER_COLUMNS} FROM IMUser u WHERE u.name = ? ORDER BY u.id LIMIT 1"
                ),
                (name,),
            )
            .map_err(my("looking up a user by name"))?;
        row.map(|mut r| user_from_row(&mut r)).transpose()
    }

    fn all_users(&self) -> StoreResult<Vec<User>> {
        let rows: Vec<Row> = self
            .conn()?
            .exec(
                format!("SELECT {USER_COLUMNS} FROM IMUser u ORDER BY u.id"),
                (),
            )
            .map_err(my("listing users"))?;
        rows.into_iter()
            .map(|mut r| user_from_row(&mut r))
            .collect()
    }

    fn set_password(&self, user: UserId, password_md5hex: &str) -> StoreResult<bool> {
        // Hashed before any connection is taken, as in `add_user`.
        let phc = password::hash_password(&self.options.hash_params, password_md5hex)?;
        let now = self.now();
        let mut conn = self.conn()?;
        let mut tx = tx(&mut conn)?;
        // TeamTalk's columns emptied: the C++ db_proxy no longer accepts
        // the old password either.
        tx.exec_drop(
            "UPDATE IMUser SET password = '', salt = '', updated = ? WHERE id = ?",
            (now, user),
        )
        .map_err(my("setting a password"))?;
        if tx.affected_rows() == 0 {
            return Ok(false);
        }
        tx.exec_drop(
            "INSERT INTO rs_user_password (userId, phc) VALUES (?, ?)
             ON DUPLICATE KEY UPDATE phc = VALUES(phc)",
            (user, &phc),
        )
        .map_err(my("setting a password"))?;
        tx.commit().map_err(my("committing a password"))?;
        Ok(true)
    }

    fn set_user_status(&self, user: UserId, status: u32) -> StoreResult<bool> {
        let now = self.now();
        let mut conn = self.conn()?;
        conn.exec_drop(
            "UPDATE IMUser SET status = ?, updated = ? WHERE id = ?",
            (status, now, user),
        )
        .map_err(my("setting a user's status"))?;
        Ok(conn.affected_rows() > 0)
    }

    fn delete_user(&self, user: UserId) -> StoreResult<bool> {
        let now = self.now();
        let mut conn = self.conn()?;
        let groups: Vec<GroupId> = {
            let mut tx = tx(&mut conn)?;
            tx.exec_drop("DELETE FROM IMUser WHERE id = ?", (user,))
                .map_err(my("deleting a user"))?;
            if tx.affected_rows() == 0 {
                return Ok(false);
            }
            for (context, statement) in [
                (
                    "deleting a password",
                    "DELETE FROM rs_user_password WHERE userId = ?",
                ),
                (
                    "deleting sessions",
                    "DELETE FROM IMRecentSession WHERE userId = ?",
                ),
                // Files waiting for them would wait forever; files they
                // sent stay, as their messages do.
                (
                    "deleting offline files",
                    "DELETE FROM IMTransmitFile WHERE toId = ?",
                ),
            ] {
                tx.exec_drop(statement, (user,)).map_err(my(context))?;
            }
            let groups: Vec<GroupId> = tx
                .exec(
                    "SELECT DISTINCT groupId FROM IMGroupMember WHERE userId = ? AND status = 0
                     ORDER BY groupId",
                    (user,),
                )
                .map_err(my("reading a user's groups"))?;
            tx.exec_drop(
                "UPDATE IMGroupMember SET status = 1, updated = ? WHERE userId = ? AND status = 0",
                (now, user),
            )
            .map_err(my("removing a user from their groups"))?;
            for &g in &groups {
                tx.exec_drop(
                    "UPDATE IMGroup SET version = version + 1,
                         userCnt = IF(userCnt > 0, userCnt - 1, 0), updated = ?
                     WHERE id = ?",
                    (now, g),
                )
                .map_err(my("bumping a group version"))?;
            }
            tx.commit().map_err(my("committing a user's deletion"))?;
            groups
        };
        // Their counters, token and membership cache in Redis.
        self.cache.unread.run("deleting unread counters", |c| {
            redis::cmd("DEL")
                .arg(format!("unread_{user}"))
                .query::<()>(c)
        })?;
        self.set_device_token(user, 0, "")?;
        for g in groups {
            self.cache
                .group_member
                .run("updating the group member cache", |c| {
                    redis::cmd("HDEL")
                        .arg(format!("group_member_{g}"))
                        .arg(user)
                        .query::<()>(c)
                })?;
        }
        Ok(true)
    }

    fn users_updated_since(&self, since: u32) -> StoreResult<Vec<User>> {
        let mut conn = self.conn()?;
        let rows: Vec<Row> = if since == 0 {
            conn.exec(
                format!(
                    "SELECT {USER_COLUMNS} FROM IMUser u WHERE COALESCE(u.status, 0) != ?
                     ORDER BY u.id"
                ),
                (USER_STATUS_DEPARTED,),
            )
        } else {
            conn.exec(
                format!("SELECT {USER_COLUMNS} FROM IMUser u WHERE u.updated >= ? ORDER BY u.id"),
                (since,),
            )
        }
        .map_err(my("listing users"))?;
        rows.into_iter()
            .map(|mut r| user_from_row(&mut r))
            .collect()
    }

    fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut conn = self.conn()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<Row> = conn
                .exec_first(
                    format!("SELECT {USER_COLUMNS} FROM IMUser u WHERE u.id = ?"),
                    (id,),
                )
                .map_err(my("reading users"))?;
            if let Some(mut row) = row {
                out.push(user_from_row(&mut row)?);
            }
        }
        Ok(out)
    }

    fn update_sign_info(&self, user: UserId, sign_info: &str) -> StoreResult<bool> {
        let now = self.now();
        let mut conn = self.conn()?;
        conn.exec_drop(
            "UPDATE IMUser SET sign_info = ?, updated = ? WHERE id = ?",
            (sign_info, now, user),
        )
        .map_err(my("updating sign info"))?;
        Ok(conn.affected_rows() > 0)
    }

    fn set_push_shield(&self, user: UserId, on: bool) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        conn.exec_drop(
            "UPDATE IMUser SET push_shield_status = ? WHERE id = ?",
            (u32::from(on), user),
        )
        .map_err(my("setting push shield"))?;
        Ok(conn.affected_rows() > 0)
    }

    fn push_shield(&self, user: UserId) -> StoreResult<Option<bool>> {
        let v: Option<u32> = self
            .conn()?
            .exec_first(
                "SELECT push_shield_status FROM IMUser WHERE id = ?",
                (user,),
            )
            .map_err(my("reading push shield"))?;
        Ok(v.map(|v| v != 0))
    }

    fn set_device_token(&self, user: UserId, client_type: u32, token: &str) -> StoreResult<()> {
        self.cache.token.run("setting a device token", |c| {
            let me = format!("device_{user}");
            let old: Option<String> = redis::cmd("GET").arg(&me).query(c)?;
            // This user's previous device no longer maps to them.
            if let Some((_, old_tok)) = old.as_deref().and_then(parse_token_value) {
                let owner: Option<String> = redis::cmd("GET")
                    .arg(format!("device_{old_tok}"))
                    .query(c)?;
                if owner.as_deref() == Some(user.to_string().as_str()) {
                    redis::cmd("DEL")
                        .arg(format!("device_{old_tok}"))
                        .query::<()>(c)?;
                }
            }
            if token.is_empty() {
                return redis::cmd("DEL").arg(&me).query::<()>(c);
            }
            // A token belongs to one device: its previous owner loses it.
            let rev = format!("device_{token}");
            let owner: Option<String> = redis::cmd("GET").arg(&rev).query(c)?;
            if let Some(other) = owner.filter(|o| !o.is_empty() && *o != user.to_string()) {
                let theirs = format!("device_{other}");
                let value: Option<String> = redis::cmd("GET").arg(&theirs).query(c)?;
                if value
                    .as_deref()
                    .and_then(parse_token_value)
                    .is_some_and(|(_, t)| t == token)
                {
                    redis::cmd("DEL").arg(&theirs).query::<()>(c)?;
                }
            }
            redis::pipe()
                .cmd("SET")
                .arg(&me)
                .arg(token_value(client_type, token))
                .ignore()
                .cmd("SET")
                .arg(&rev)
                .arg(user)
                .ignore()
                .query::<()>(c)
        })
    }

    fn forget_device_token(&self, user: UserId, token: &str) -> StoreResult<bool> {
        self.cache
            .token
            .run("removing an invalid device token", |c| {
                let me = format!("device_{user}");
                let rev = format!("device_{token}");
                // WATCH makes the check and the removal one step: a token the
                // user registers in between aborts the transaction, and the
                // newer token stays.
                redis::transaction(c, &[&me, &rev], |c, pipe| {
                    let value: Option<String> = redis::cmd("GET").arg(&me).query(c)?;
                    let current = value
                        .as_deref()
                        .and_then(parse_token_value)
                        .is_some_and(|(_, t)| t == token);
                    if !current {
                        return Ok(Some(false));
                    }
                    let owner: Option<String> = redis::cmd("GET").arg(&rev).query(c)?;
                    pipe.cmd("DEL").arg(&me).ignore();
                    if owner.as_deref() == Some(user.to_string().as_str()) {
                        pipe.cmd("DEL").arg(&rev).ignore();
                    }
                    pipe.query::<Option<()>>(c).map(|done| done.map(|()| true))
                })
            })
    }

    fn device_tokens(&self, users: &[UserId]) -> StoreResult<Vec<DeviceToken>> {
        let mut users = users.to_vec();
        users.sort_unstable();
        users.dedup();
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = self.cache.token.run("reading device tokens", |c| {
            let mut cmd = redis::cmd("MGET");
            for u in &users {
                cmd.arg(format!("device_{u}"));
            }
            cmd.query(c)
        })?;
        Ok(users
            .into_iter()
            .zip(values)
            .filter_map(|(user_id, v)| {
                let (client_type, token) = parse_token_value(v.as_deref()?)?;
                Some(DeviceToken {
                    user_id,
                    client_type,
                    token,
                })
            })
            .collect())
    }

    fn user_count(&self) -> StoreResult<u64> {
        let n: Option<u64> = self
            .conn()?
            .exec_first("SELECT COUNT(*) FROM IMUser", ())
            .map_err(my("counting users"))?;
        Ok(n.unwrap_or(0))
    }

    fn seed_users(
        &self,
        prefix: &str,
        count: u32,
        password_md5hex: &str,
    ) -> StoreResult<Vec<UserId>> {
        let phc = password::hash_password(&self.options.hash_params, password_md5hex)?;
        self.seed(prefix, count, "", "", Some(&phc))
    }

    fn seed_teamtalk_users(
        &self,
        prefix: &str,
        count: u32,
        password_md5hex: &str,
    ) -> StoreResult<Vec<UserId>> {
        const SALT: &str = "seed";
        let stored = password::teamtalk_salted(password_md5hex, SALT);
        self.seed(prefix, count, &stored, SALT, None)
    }

    fn store_message(&self, msg: &NewMessage) -> StoreResult<Stored> {
        super::sqlite::check_message(msg)?;
        self.store_batch(std::slice::from_ref(msg))?
            .pop()
            .unwrap_or(Err(StoreError::Invalid("no result for a stored message")))
    }

    fn store_messages(&self, msgs: &[NewMessage]) -> StoreResult<Vec<StoreResult<Stored>>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        self.store_batch(msgs)
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
        let mut conn = self.conn()?;
        let Some(relate) = self.relation(&mut conn, user, peer)? else {
            return Ok(Vec::new());
        };
        // Rows one by one, so the bodies read stop at the bound.
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let iter = conn
            .exec_iter(
                format!(
                    "SELECT msgId, fromId, toId, type, created, content FROM IMMessage_{}
                     WHERE relateId = ? AND status = 0 AND msgId <= ?
                     ORDER BY msgId DESC LIMIT ?",
                    shard(relate)
                ),
                (relate, begin, limit),
            )
            .map_err(my("listing messages"))?;
        for row in iter {
            let m = message_from_row(row.map_err(my("listing messages"))?)?;
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
        let mut conn = self.conn()?;
        let Some(relate) = self.relation(&mut conn, user, peer)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<Row> = conn
                .exec_first(
                    format!(
                        "SELECT msgId, fromId, toId, type, created, content FROM IMMessage_{}
                         WHERE relateId = ? AND msgId = ? AND status = 0 LIMIT 1",
                        shard(relate)
                    ),
                    (relate, id),
                )
                .map_err(my("reading messages"))?;
            if let Some(row) = row {
                out.push(message_from_row(row)?);
            }
        }
        Ok(bounded(out))
    }

    fn latest_msg_id(&self, user: UserId, peer: UserId) -> StoreResult<MsgId> {
        let mut conn = self.conn()?;
        let Some(relate) = self.relation(&mut conn, user, peer)? else {
            return Ok(0);
        };
        let id: Option<Option<u32>> = conn
            .exec_first(
                format!(
                    "SELECT MAX(msgId) FROM IMMessage_{} WHERE relateId = ? AND status = 0",
                    shard(relate)
                ),
                (relate,),
            )
            .map_err(my("reading the latest message id"))?;
        Ok(id.flatten().unwrap_or(0))
    }

    fn unread(&self, user: UserId) -> StoreResult<UnreadSummary> {
        let mut singles = self.single_unread(user)?;
        singles.sort_unstable();
        let mut conn = self.conn()?;
        let group_counts = groups::unread_counts(self, &mut conn, user)?;
        let total = singles
            .iter()
            .chain(&group_counts)
            .fold(0u32, |acc, &(_, n)| acc.saturating_add(n));
        let mut sessions = Vec::new();
        let mut bytes = 0usize;
        let s = singles.into_iter().map(|c| (SessionType::Single, c));
        let g = group_counts.into_iter().map(|c| (SessionType::Group, c));
        for (session_type, (peer, count)) in s.chain(g) {
            let latest = match session_type {
                SessionType::Single => self.latest_message(&mut conn, user, peer)?,
                SessionType::Group => groups::latest_message(&mut conn, peer, 0)?,
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
        let singles = self.single_unread(user)?;
        let mut conn = self.conn()?;
        let groups = groups::unread_counts(self, &mut conn, user)?;
        Ok(singles
            .into_iter()
            .chain(groups)
            .fold(0u32, |acc, (_, n)| acc.saturating_add(n)))
    }

    fn clear_unread(&self, reader: UserId, peer: UserId) -> StoreResult<()> {
        self.cache.unread.run("clearing an unread count", |c| {
            redis::cmd("HDEL")
                .arg(format!("unread_{reader}"))
                .arg(peer)
                .query::<()>(c)
        })
    }

    fn recent_sessions(&self, user: UserId, since: u32) -> StoreResult<Vec<RecentSession>> {
        let mut conn = self.conn()?;
        let rows: Vec<(u32, u32, u32)> = conn
            .exec(
                "SELECT peerId, COALESCE(status, 0), updated FROM IMRecentSession
                 WHERE userId = ? AND type = ? AND status = 0 AND updated > ?
                 ORDER BY updated DESC, peerId DESC LIMIT ?",
                (
                    user,
                    SessionType::Single.as_u32(),
                    since,
                    MAX_RECENT_SESSIONS,
                ),
            )
            .map_err(my("listing recent sessions"))?;
        let mut seen = std::collections::HashSet::new();
        let mut rows: Vec<(u32, SessionType, u32, u32, MsgId)> = rows
            .into_iter()
            .filter(|r| seen.insert(r.0))
            .map(|(peer, status, updated)| (peer, SessionType::Single, status, updated, 0))
            .collect();
        rows.extend(
            groups::sessions(self, &mut conn, user, since, MAX_RECENT_SESSIONS)?
                .into_iter()
                .map(|(group, updated, floor)| (group, SessionType::Group, 0, updated, floor)),
        );
        rows.sort_by_key(|r| std::cmp::Reverse((r.3, r.0, r.1.as_u32())));
        rows.truncate(usize::try_from(MAX_RECENT_SESSIONS).unwrap_or(usize::MAX));
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for (peer, session_type, status, updated, floor) in rows.into_iter().rev() {
            let latest = match session_type {
                SessionType::Single => self.latest_message(&mut conn, user, peer)?,
                SessionType::Group => groups::latest_message(&mut conn, peer, floor)?,
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
        let mut conn = self.conn()?;
        if session_type == SessionType::Group {
            return groups::hide_session(self, &mut conn, user, peer);
        }
        conn.exec_drop(
            "UPDATE IMRecentSession SET status = 1, updated = ?
             WHERE userId = ? AND peerId = ? AND type = ? AND status = 0",
            (now, user, peer, session_type.as_u32()),
        )
        .map_err(my("removing a session"))?;
        Ok(conn.affected_rows() > 0)
    }

    fn create_group(&self, group: &NewGroup) -> StoreResult<Group> {
        groups::create(self, group, self.now())
    }

    fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        groups::load(self, &mut self.conn()?, id)
    }

    fn groups(&self) -> StoreResult<Vec<Group>> {
        groups::load_all(self)
    }

    fn user_groups(
        &self,
        user: UserId,
        group_type: Option<GroupType>,
    ) -> StoreResult<Vec<GroupVersion>> {
        groups::of_user(&mut self.conn()?, user, group_type)
    }

    fn groups_newer_than(&self, user: UserId, known: &[GroupVersion]) -> StoreResult<Vec<Group>> {
        groups::newer_than(self, user, known)
    }

    fn change_group_members(
        &self,
        actor: Actor,
        group: GroupId,
        change: MemberChange,
        users: &[UserId],
    ) -> StoreResult<MembersChanged> {
        groups::change_members(self, actor, group, change, users, self.now())
    }

    fn set_group_shield(&self, user: UserId, group: GroupId, on: bool) -> StoreResult<()> {
        groups::set_shield(self, user, group, on)
    }

    fn group_shields(&self, group: GroupId, users: &[UserId]) -> StoreResult<Vec<(UserId, bool)>> {
        groups::shields(self, group, users)
    }

    fn group_message_list(
        &self,
        user: UserId,
        group: GroupId,
        begin: MsgId,
        count: u32,
    ) -> StoreResult<Vec<StoredMessage>> {
        groups::message_list(self, user, group, begin, count)
    }

    fn group_messages_by_ids(
        &self,
        user: UserId,
        group: GroupId,
        ids: &[MsgId],
    ) -> StoreResult<Vec<StoredMessage>> {
        groups::messages_by_ids(self, user, group, ids)
    }

    fn group_latest_msg_id(&self, user: UserId, group: GroupId) -> StoreResult<MsgId> {
        groups::latest_msg_id(self, user, group)
    }

    fn clear_group_unread(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        groups::clear_unread(self, user, group)
    }

    fn add_offline_file(&self, file: &NewOfflineFile) -> StoreResult<bool> {
        files::check(file)?;
        let now = self.now();
        let mut conn = self.conn()?;
        let mut tx = tx(&mut conn)?;
        let known: Option<u32> = tx
            .exec_first(
                "SELECT id FROM IMTransmitFile WHERE taskId = ?",
                (&file.task_id,),
            )
            .map_err(my("looking up an offline file"))?;
        if known.is_some() {
            return Ok(false);
        }
        let waiting: Option<u64> = tx
            .exec_first(
                "SELECT COUNT(*) FROM IMTransmitFile WHERE toId = ? AND status = 0",
                (file.to,),
            )
            .map_err(my("counting offline files"))?;
        if usize::try_from(waiting.unwrap_or(0)).unwrap_or(usize::MAX) >= MAX_OFFLINE_FILES {
            return Err(StoreError::Invalid(
                "the receiver has too many offline files waiting",
            ));
        }
        match tx.exec_drop(
            "INSERT INTO IMTransmitFile (fromId, toId, fileName, size, taskId, status, created,
                                         updated)
             VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            (
                file.from,
                file.to,
                &file.file_name,
                file.size,
                &file.task_id,
                now,
                now,
            ),
        ) {
            Ok(()) => {}
            Err(e) if is_dup(&e) => return Ok(false),
            Err(e) => return Err(my("recording an offline file")(e)),
        }
        tx.commit().map_err(my("committing an offline file"))?;
        Ok(true)
    }

    fn offline_files(&self, to: UserId) -> StoreResult<Vec<OfflineFile>> {
        let rows: Vec<Row> = self
            .conn()?
            .exec(
                "SELECT fromId, toId, taskId, fileName, size, created FROM IMTransmitFile
                 WHERE toId = ? AND status = 0 ORDER BY id LIMIT ?",
                (to, u64::try_from(MAX_OFFLINE_FILES).unwrap_or(100)),
            )
            .map_err(my("listing offline files"))?;
        rows.into_iter()
            .map(|mut r| {
                Ok(OfflineFile {
                    from: take(&mut r, 0)?,
                    to: take(&mut r, 1)?,
                    task_id: take(&mut r, 2)?,
                    file_name: take(&mut r, 3)?,
                    size: take(&mut r, 4)?,
                    created: take(&mut r, 5)?,
                })
            })
            .collect()
    }

    fn delete_offline_file(&self, task_id: &str, from: UserId, to: UserId) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        conn.exec_drop(
            "DELETE FROM IMTransmitFile WHERE taskId = ? AND fromId = ? AND toId = ?",
            (task_id, from, to),
        )
        .map_err(my("deleting an offline file"))?;
        Ok(conn.affected_rows() > 0)
    }
}

impl MysqlStore {
    /// `user`'s single-chat unread counts (`unread_<uid>`), non-zero ones.
    fn single_unread(&self, user: UserId) -> StoreResult<Vec<(UserId, u32)>> {
        let all: HashMap<String, i64> = self.cache.unread.run("reading unread counts", |c| {
            redis::cmd("HGETALL").arg(format!("unread_{user}")).query(c)
        })?;
        Ok(all
            .into_iter()
            .filter_map(|(peer, n)| {
                let peer = peer.parse::<UserId>().ok()?;
                let n = u32::try_from(n).ok().filter(|&n| n > 0)?;
                Some((peer, n))
            })
            .collect())
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn token_values_as_teamtalk_writes_them() {
        assert_eq!(token_value(0x11, "abc"), "ios:abc");
        assert_eq!(token_value(0x12, "abc"), "android:abc");
        assert_eq!(parse_token_value("ios:abc"), Some((0x11, "abc".into())));
        assert_eq!(parse_token_value("android:a:b"), Some((0x12, "a:b".into())));
        assert_eq!(
            parse_token_value(&token_value(1, "x")),
            Some((1, "x".into()))
        );
        assert_eq!(parse_token_value(""), None);
        assert_eq!(parse_token_value("ios:"), None);
        assert_eq!(parse_token_value("weird:x"), None);
    }

    #[test]
    fn describe_hides_the_password() {
        let c = MysqlConfig::new(
            "mysql://tt:secret@db.example:3307/teamtalk",
            "redis://r:6379/1",
        );
        let d = c.describe();
        assert!(!d.contains("secret"), "{d}");
        assert!(d.contains("db.example:3307/teamtalk"), "{d}");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn shards_as_teamtalk() {
        assert_eq!(shard(8), 0);
        assert_eq!(shard(13), 5);
        assert_eq!(as_msg_id(0), None);
        assert_eq!(as_msg_id(i64::from(u32::MAX) + 1), None);
        assert_eq!(as_msg_id(7), Some(7));
    }
}
