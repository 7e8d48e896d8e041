//! Storage behind `db_proxy_server`: users, departments, groups, single and
//! group messages, unread counters, recent sessions, push settings.
//!
//! The C++ db_proxy spread this over MySQL (eight sharded message tables) and
//! five Redis pools, with message ids from a Redis `INCR` outside any
//! transaction. Here one [`Store`] call is one transaction: storing a message
//! assigns its per-conversation id, inserts it, bumps the recipient's unread
//! counter and refreshes both recent-session rows atomically, and returns only
//! after the commit is durable. Nothing acknowledged to a client can then be
//! lost or half-applied.
//!
//! [`Store`] is a synchronous, object-safe trait (`Arc<dyn Store>`) with two
//! implementations the daemons cannot tell apart: the embedded
//! [`SqliteStore`], and [`MysqlStore`] on TeamTalk's own MySQL schema and
//! Redis keys ([`mysql_redis`]), where message ids come from Redis `INCR`
//! as in TeamTalk and the commit of the MySQL transaction still precedes
//! every answer. One conformance suite (`suite_tests.rs`) runs against both. Its types are our own, not the prost messages: the
//! protocol layer maps between them, and the store stays free of wire details.
//!
//! # Semantics kept from TeamTalk
//!
//! - Message ids are per conversation (a pair of users), start at 1 and grow by
//!   one per stored message; clients sort by them.
//! - Unread counters are per (reader, peer) and are cleared as a whole by a read
//!   ack; there are no per-message read marks.
//! - Incremental lists take the client's `latest_update_time`: departments and
//!   recent sessions return rows with `updated > t`, users rows with
//!   `updated >= t` (all users except departed ones, status 3, when `t == 0`).
//! - Recent sessions: at most [`MAX_RECENT_SESSIONS`], newest first, removed ones
//!   hidden until a new message revives them.
//!
//! # Groups
//!
//! Groups, their members and their messages are modelled as TeamTalk does
//! (see [`groups`] for the model, the unread design and the permission
//! rule). Group messages go through [`Store::store_message`] and
//! [`Store::store_messages`] like single ones ([`NewMessage::session_type`]),
//! so they share the group commit and the dedupe keys; storing one costs the
//! same few writes whatever the group's size. Group sessions appear in
//! [`Store::recent_sessions`] and [`Store::unread`] beside single ones; they
//! are derived from the membership and the group's last message rather than
//! written per member.
//!
//! # Offline files
//!
//! Offline files (TeamTalk's `IMTransmitFile`) are in `files.rs`: a
//! `transmit_file` table, `status = 0` meaning waiting.

pub mod directory;
mod files;
pub mod groups;
mod lock;
pub mod mysql_redis;
mod sqlite;

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod tests;

pub use files::{NewOfflineFile, OfflineFile};
pub use groups::{
    Actor, ChangeRefused, Group, GroupId, GroupMember, GroupType, GroupVersion, MAX_GROUP_MEMBERS,
    MAX_GROUPS_PER_USER, MemberChange, MembersChanged, NewGroup,
};
pub use lock::{LOCK_FILE_NAME, LockError, ServeLock};
pub use mysql_redis::{MysqlConfig, MysqlStore, RedisUrls};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use sqlite::check_message_log_scan;
pub use sqlite::{
    Clock, DB_FILE_NAME, JOURNAL_FILE_PREFIX, LOG_LOCK_FILE_NAME, OpenMode, SERVING_APPLIER_NICE,
    SqliteStore, StoreOptions,
};

use crate::password::PasswordError;

/// A user id (TeamTalk's `IMUser.id`, `uint32` on the wire).
pub type UserId = u32;
/// A department id.
pub type DeptId = u32;
/// A per-conversation message id.
pub type MsgId = u32;

/// Largest page [`Store::message_list`] returns, whatever the client asks for
/// (TeamTalk had no cap, so one request could read a whole history).
pub const MAX_MSG_LIST: u32 = 200;
/// Largest message body stored, in bytes: a few KiB under the 1 MiB frame
/// limit, so that a reply carrying one message (history, messages by id,
/// a session's or an unread count's latest message) always fits a frame
/// whatever the message (`crate::rules::sizing`). Longer bodies are refused
/// as [`StoreError::Invalid`]; a client cannot send one much longer anyway,
/// its own PDU being bound by the same frame limit.
pub const MAX_MSG_DATA_LEN: usize = teamtalk_proto::DEFAULT_MAX_PDU_LEN as usize - 4096;
/// Message bodies one list read holds in memory: [`Store::message_list`],
/// [`Store::messages_by_ids`], [`Store::unread`] and
/// [`Store::recent_sessions`] stop after the message whose body brings the
/// total to this many bytes (that one included). A reply page is smaller
/// than that anyway (`crate::rules::sizing`), so no more is ever needed,
/// and a history of large messages is not read whole for each page.
pub const MAX_LIST_BODY_BYTES: usize = 1 << 20;
/// How long a message's dedupe key is remembered, in seconds: a resend of it
/// within this time is not stored again (see [`NewMessage::dedupe_key`]).
pub const DEDUPE_WINDOW_SECS: u32 = 24 * 60 * 60;
/// Most dedupe keys remembered: beyond this the oldest are forgotten
/// even within [`DEDUPE_WINDOW_SECS`] (the SQLite store holds them in
/// memory, about 75 MiB for a million; resends come within minutes, so the
/// window that matters stays covered).
pub const MAX_DEDUPE_KEYS: u64 = 1_000_000;
/// Longest dedupe key accepted, in bytes (msg_server sends 16).
pub const MAX_DEDUPE_KEY_LEN: usize = 32;
/// Most ids [`Store::messages_by_ids`] looks up (TeamTalk's limit).
pub const MAX_MSGS_BY_ID: usize = 100;
/// Most rows [`Store::recent_sessions`] returns (TeamTalk's limit).
pub const MAX_RECENT_SESSIONS: u32 = 100;
/// TeamTalk's user status for someone who has left; such users cannot log in
/// and are left out of a full directory download.
pub const USER_STATUS_DEPARTED: u32 = 3;

/// A department's `status` once deleted (TeamTalk's `DEPT_STATUS_DELETE`).
/// The row stays, so clients that sync the directory incrementally learn
/// of the deletion; its name is free for a new department.
pub const DEPT_STATUS_DELETED: u32 = 1;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The database failed; `context` says which operation.
    #[error("{context}: {source}")]
    Sql {
        /// What the store was doing.
        context: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of this program.
    #[error("database schema version {found} is newer than the supported {supported}")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// Hashing a password failed, or a stored hash is unusable.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A user with this name already exists.
    #[error("user name {0:?} is already taken")]
    NameTaken(String),
    /// The request is not meaningful (e.g. a message to oneself).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// A conversation reached the largest message id (`u32::MAX`).
    #[error("conversation between {0} and {1} has used every message id")]
    MsgIdsExhausted(UserId, UserId),
    /// A group reached the largest message id (`u32::MAX`).
    #[error("group {0} has used every message id")]
    GroupMsgIdsExhausted(GroupId),
    /// No such group.
    #[error("no group {0}")]
    NoSuchGroup(GroupId),
    /// The user is not a member of the group, so may neither post to it nor
    /// read it.
    #[error("user {user} is not a member of group {group}")]
    NotMember {
        /// The user.
        user: UserId,
        /// The group.
        group: GroupId,
    },
    /// A member change the permission rule does not allow
    /// ([`groups::check_member_change`]).
    #[error("member change refused: {0}")]
    Refused(#[from] ChangeRefused),
    /// A user id that names no user (a group member to add).
    #[error("no user {0}")]
    NoSuchUser(UserId),
    /// MySQL failed ([`MysqlStore`]); `context` says which operation.
    #[error("{context}: {source}")]
    Mysql {
        /// What the store was doing.
        context: &'static str,
        /// The client's error (boxed: it is large).
        source: Box<::mysql::Error>,
    },
    /// Redis failed ([`MysqlStore`]); `context` says which operation.
    #[error("{context}: {source}")]
    Redis {
        /// What the store was doing.
        context: &'static str,
        /// The client's error.
        source: Box<::redis::RedisError>,
    },
    /// A store address or setting that cannot be used.
    #[error("store configuration: {0}")]
    Config(String),
    /// The embedded store's message log could not be read or written.
    #[error("{what} {path}: {source}")]
    Journal {
        /// The log file.
        path: std::path::PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// Another process owns this data directory's message log (it serves
    /// the store), so this one may not hand out one-to-one message ids.
    #[error("another process serves this store's messages (it holds the message log's lock)")]
    LogElsewhere,
    /// Logged messages cannot be written into the tables (the reason is the
    /// last attempt's error); the applier keeps trying, and what needs them
    /// applied fails meanwhile.
    #[error("the message log cannot be applied: {0}")]
    LogApply(String),
    /// A complete record of the message log does not decode: the file was
    /// damaged or written by something else. Nothing is applied.
    #[error("the message log {path} is damaged: {reason}")]
    JournalCorrupt {
        /// The log file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another db_proxy stored the same message (its dedupe key) a moment
    /// ago; the caller answers with that one's id. Never returned by a
    /// [`Store`] method.
    #[error("the same message was stored concurrently")]
    DuplicateRace,
    /// A department with this name already exists.
    #[error("department name {0:?} is already taken")]
    DeptNameTaken(String),
    /// A department to delete still has users or sub-departments.
    #[error(
        "department {id} is not empty: {users} users and {children} sub-departments are in it \
         (move or delete them first)"
    )]
    DeptNotEmpty {
        /// The department.
        id: DeptId,
        /// Users in it (disabled ones included).
        users: u64,
        /// Departments under it that are not deleted.
        children: u64,
    },
    /// The data directory is a file (or something else that is not a
    /// directory).
    #[error("{path}: not a directory (the data directory must be a directory)")]
    NotADirectory {
        /// The path given as the data directory.
        path: std::path::PathBuf,
    },
    /// There is no database in the data directory, and the caller asked
    /// not to create one (an administration command pointed at the wrong
    /// place would otherwise start an empty store beside the real one).
    #[error(
        "no store at {path}; point --data-dir (or TEAMTALK_DATA_DIR) at the directory of an \
         existing store, or create one there with --create (or by starting `teamtalk up` \
         once)"
    )]
    NoStore {
        /// The database file looked for.
        path: std::path::PathBuf,
    },
    /// The database file (or its directory) may not be written, or not
    /// even read, by this process.
    #[error("{path}: permission denied ({what})")]
    PermissionDenied {
        /// The file (or directory) refused.
        path: std::path::PathBuf,
        /// What was refused: reading, or writing.
        what: &'static str,
    },
    /// This store does not implement the operation (a store written before
    /// the admin API).
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Whether the request itself is at fault (a value that can never be
    /// stored, a group that does not exist, a non-member, a refused
    /// change), as opposed to the database failing: the first is answered
    /// as refused, the second as "try again later".
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_)
                | Self::NoSuchGroup(_)
                | Self::NotMember { .. }
                | Self::Refused(_)
                | Self::NoSuchUser(_)
                | Self::NameTaken(_)
                | Self::DeptNameTaken(_)
                | Self::DeptNotEmpty { .. }
        )
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A department of the company directory (TeamTalk's `IMDepart`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Department {
    /// Department id.
    pub id: DeptId,
    /// Display order among siblings.
    pub priority: u32,
    /// Name.
    pub name: String,
    /// Parent department, 0 for a root.
    pub parent_id: DeptId,
    /// 0 = ok, 1 = deleted (`DepartmentStatusType`).
    pub status: u32,
    /// Last change, seconds since the Unix epoch (for incremental sync).
    pub updated: u32,
}

/// The profile fields of a user, as given when creating one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewUser {
    /// Login name (unique); sent to clients as `user_real_name`.
    pub name: String,
    /// Display name.
    pub nick: String,
    /// 0 unknown, 1 male, 2 female.
    pub sex: u32,
    /// Department.
    pub dept_id: DeptId,
    /// Avatar URL.
    pub avatar: String,
    /// E-mail address.
    pub email: String,
    /// Telephone number.
    pub phone: String,
    /// Pinyin of the name, used by clients for search.
    pub domain: String,
    /// Employment status (0..=4, 3 = departed).
    pub status: u32,
    /// Signature line.
    pub sign_info: String,
}

/// A stored user, everything `UserInfo` needs plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub id: UserId,
    /// Login name (`user_real_name` on the wire).
    pub name: String,
    /// Display name.
    pub nick: String,
    /// 0 unknown, 1 male, 2 female.
    pub sex: u32,
    /// Department.
    pub dept_id: DeptId,
    /// Avatar URL.
    pub avatar: String,
    /// E-mail address.
    pub email: String,
    /// Telephone number.
    pub phone: String,
    /// Pinyin of the name.
    pub domain: String,
    /// Employment status.
    pub status: u32,
    /// Signature line.
    pub sign_info: String,
    /// Do-not-disturb for mobile pushes.
    pub push_shield: bool,
    /// Creation time (Unix seconds).
    pub created: u32,
    /// Last profile change (Unix seconds), for incremental directory sync.
    pub updated: u32,
}

/// A fingerprint of a user's stored credential: a digest of the stored
/// password hash and its salt.
///
/// It changes whenever the password is set (even to the same value: every
/// Argon2 hash has a fresh salt), so a process that remembered a verified
/// login (db_proxy's credential cache) can tell, by re-reading this one
/// value by primary key, whether the credential it verified is still the
/// one stored, even when another process (`teamtalk user passwd`) changed
/// it. It reveals nothing usable about the password: it is a digest of a
/// salted hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialStamp(pub [u8; 16]);

impl CredentialStamp {
    /// The stamp of a stored password column and salt.
    #[must_use]
    pub fn of(password: &str, salt: Option<&str>) -> Self {
        use blake2::{Blake2b512, Digest};
        let mut h = Blake2b512::new();
        h.update((password.len() as u64).to_be_bytes());
        h.update(password.as_bytes());
        match salt {
            Some(salt) => {
                h.update([1]);
                h.update(salt.as_bytes());
            }
            None => h.update([0]),
        }
        let full = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        Self(out)
    }
}

/// A user with the stamp of their stored credential, as
/// [`Store::check_login`] verified it or [`Store::user_with_credential`]
/// read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredential {
    /// The user.
    pub user: User,
    /// The stamp of the credential stored when the row was read.
    pub credential: CredentialStamp,
}

/// Profile fields to change ([`Store::update_user`]); `None` keeps one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserUpdate {
    /// Display name.
    pub nick: Option<String>,
    /// Department.
    pub dept_id: Option<DeptId>,
    /// 0 unknown, 1 male, 2 female.
    pub sex: Option<u32>,
    /// Avatar URL.
    pub avatar: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Telephone number.
    pub phone: Option<String>,
    /// Pinyin of the name.
    pub domain: Option<String>,
    /// Signature line.
    pub sign_info: Option<String>,
}

/// A message to store, to a user or to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Sender (the authenticated user, never a client-supplied value).
    pub from: UserId,
    /// Recipient: a user, or a group for [`SessionType::Group`].
    pub to: UserId,
    /// Single chat, or a group message: then the sender must be a member
    /// of group `to` (checked in the storing transaction) and the id comes
    /// from the group's own sequence.
    pub session_type: SessionType,
    /// `MsgType` as on the wire (1 text, 2 audio, 0x11 / 0x12 for groups);
    /// kept raw so new types pass.
    pub msg_type: u32,
    /// Server time of sending (Unix seconds).
    pub create_time: u32,
    /// Message body, opaque (clients encrypt text).
    pub data: Vec<u8>,
    /// The message's idempotency key (`IMMsgData.dedupe_key`, a digest
    /// msg_server computes from the sender, the recipient, the type, the
    /// client's own time and id and the body): a message whose key was stored
    /// for the same sender, session type and recipient within
    /// [`DEDUPE_WINDOW_SECS`] is not
    /// stored again ([`Stored::Duplicate`]). `None` stores every time, as
    /// TeamTalk does. At most [`MAX_DEDUPE_KEY_LEN`] bytes.
    pub dedupe_key: Option<Vec<u8>>,
}

impl NewMessage {
    /// This message as stored under `msg_id`.
    #[must_use]
    pub fn stored_as(&self, msg_id: MsgId) -> StoredMessage {
        StoredMessage {
            msg_id,
            from: self.from,
            to: self.to,
            msg_type: self.msg_type,
            create_time: self.create_time,
            data: self.data.clone(),
        }
    }
}

/// What storing one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored now, with its new id.
    New(StoredMessage),
    /// Its dedupe key was stored within [`DEDUPE_WINDOW_SECS`]: nothing
    /// was stored now; this is the id the message got the first time.
    Duplicate(MsgId),
}

impl Stored {
    /// The message's id: new, or the one it got the first time.
    #[must_use]
    pub fn msg_id(&self) -> MsgId {
        match self {
            Self::New(m) => m.msg_id,
            Self::Duplicate(id) => *id,
        }
    }

    /// Whether this was a resend of a message already stored.
    #[must_use]
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Duplicate(_))
    }

    /// The message stored now, `None` for a duplicate.
    #[must_use]
    pub fn new_message(self) -> Option<StoredMessage> {
        match self {
            Self::New(m) => Some(m),
            Self::Duplicate(_) => None,
        }
    }
}

/// A message as stored, with its assigned id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Per-conversation id, from 1.
    pub msg_id: MsgId,
    /// Sender.
    pub from: UserId,
    /// Recipient.
    pub to: UserId,
    /// `MsgType` as on the wire.
    pub msg_type: u32,
    /// Sending time (Unix seconds).
    pub create_time: u32,
    /// Body.
    pub data: Vec<u8>,
}

/// Session kind, as TeamTalk's `SessionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionType {
    /// One-to-one chat (wire value 1).
    Single,
    /// Group chat (wire value 2).
    Group,
}

impl SessionType {
    /// The wire value.
    pub const fn as_u32(self) -> u32 {
        match self {
            Self::Single => 1,
            Self::Group => 2,
        }
    }

    /// From the wire value; `None` for values TeamTalk does not define.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Single),
            2 => Some(Self::Group),
            _ => None,
        }
    }
}

/// The latest message of a conversation, as shown in session and unread lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatestMessage {
    /// Its id (0 if the conversation has no message).
    pub msg_id: MsgId,
    /// Its sender (0 if none).
    pub from: UserId,
    /// Its type (0 if none).
    pub msg_type: u32,
    /// Its body (empty if none).
    pub data: Vec<u8>,
}

/// Unread messages from one peer or group (an `UnreadInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadSession {
    /// The peer, or the group (the session id on the wire).
    pub peer: UserId,
    /// Single chat or group.
    pub session_type: SessionType,
    /// How many messages the reader has not acknowledged.
    pub count: u32,
    /// The conversation's latest message.
    pub latest: LatestMessage,
}

/// Unread state of one user (`IMUnreadMsgCntRsp`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnreadSummary {
    /// Sum of all counts, groups included (the push badge).
    pub total: u32,
    /// One entry per peer with unread messages, by peer id, then one per
    /// group, by group id.
    pub sessions: Vec<UnreadSession>,
}

/// A recent-contact row (`ContactSessionInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentSession {
    /// The peer user (or group) id.
    pub peer: UserId,
    /// Session kind.
    pub session_type: SessionType,
    /// 0 = ok, 1 = removed (`SessionStatusType`).
    pub status: u32,
    /// Last activity (Unix seconds).
    pub updated: u32,
    /// The conversation's latest message.
    pub latest: LatestMessage,
}

/// A mobile device registered for pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceToken {
    /// Owner.
    pub user_id: UserId,
    /// `ClientType` wire value (0x11 iOS, 0x12 Android).
    pub client_type: u32,
    /// Push token as the client sent it.
    pub token: String,
}

/// Everything db_proxy needs from storage.
///
/// Calls block until done; writes return only after a durable commit. Every
/// method is safe to call from many threads at once.
pub trait Store: Send + Sync {
    // ---- departments ----

    /// Adds a department and returns its id.
    fn add_department(&self, name: &str, priority: u32, parent_id: DeptId) -> StoreResult<DeptId>;
    /// Departments changed after `since` (0 = all, deleted ones included
    /// with [`DEPT_STATUS_DELETED`]), by id.
    fn departments_updated_since(&self, since: u32) -> StoreResult<Vec<Department>>;
    /// Renames a department; `false` when there is no such department (or
    /// it is deleted). [`StoreError::DeptNameTaken`] when another has the
    /// name.
    fn rename_department(&self, id: DeptId, name: &str) -> StoreResult<bool>;
    /// Deletes a department ([`DEPT_STATUS_DELETED`]); `false` when there
    /// is no such department (or it is deleted already).
    /// [`StoreError::DeptNotEmpty`] while users or sub-departments are in
    /// it, so no user is left in a department clients no longer show.
    fn delete_department(&self, id: DeptId) -> StoreResult<bool>;

    // ---- users ----

    /// Creates a user whose password is the client's md5hex value, stored as an
    /// Argon2id hash.
    fn add_user(&self, user: &NewUser, password_md5hex: &str) -> StoreResult<UserId>;
    /// Creates a user imported from TeamTalk, keeping its
    /// `md5hex(md5hex(pw) + salt)` password and salt so it can still log in.
    fn import_teamtalk_user(
        &self,
        user: &NewUser,
        password: &str,
        salt: &str,
    ) -> StoreResult<UserId>;
    /// Checks a login; `Some(user)` on success, `None` for an unknown name, a
    /// wrong password or a departed (disabled) user.
    fn verify_login(&self, name: &str, password_md5hex: &str) -> StoreResult<Option<User>> {
        Ok(self.check_login(name, password_md5hex)?.map(|c| c.user))
    }
    /// Checks a login as [`Store::verify_login`] does, and returns the
    /// stamp of the credential it matched (read in the same row read as
    /// the hash it checked), for a cache of verified logins.
    fn check_login(&self, name: &str, password_md5hex: &str)
    -> StoreResult<Option<UserCredential>>;
    /// A user with the stamp of their stored credential, whatever their
    /// status; one read by primary key and no password hashing, so a cache
    /// of verified logins can afford it on every hit.
    fn user_with_credential(&self, id: UserId) -> StoreResult<Option<UserCredential>>;
    /// The user with this login name, whatever their status.
    fn user_by_name(&self, name: &str) -> StoreResult<Option<User>>;
    /// Every user, departed (disabled) ones included, by id, for the
    /// administration.
    fn all_users(&self) -> StoreResult<Vec<User>>;
    /// Sets a user's password (the client's md5hex value, stored as an
    /// Argon2id hash, replacing a TeamTalk salted-MD5 one too); `false` if
    /// no such user. The credential stamp changes, so cached logins with
    /// the old password stop working at once.
    fn set_password(&self, user: UserId, password_md5hex: &str) -> StoreResult<bool>;
    /// Sets a user's status (`status` of [`User`]; [`USER_STATUS_DEPARTED`]
    /// disables the login and takes them out of a full directory
    /// download) and bumps `updated`, so clients syncing the directory
    /// learn of it; `false` if no such user.
    fn set_user_status(&self, user: UserId, status: u32) -> StoreResult<bool>;
    /// Deletes a user: their row, push token, unread counters, recent
    /// sessions and group memberships (the groups' versions move). What
    /// they sent stays in the others' history. `false` if no such user.
    fn delete_user(&self, user: UserId) -> StoreResult<bool>;
    /// Users for an incremental directory download (see the module docs), by id.
    fn users_updated_since(&self, since: u32) -> StoreResult<Vec<User>>;
    /// The users among `ids` that exist, by id (duplicates and unknown ids dropped).
    fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<User>>;
    /// Sets a user's signature and bumps `updated`; `false` if no such user.
    fn update_sign_info(&self, user: UserId, sign_info: &str) -> StoreResult<bool>;
    /// Sets the do-not-disturb switch; `false` if no such user.
    fn set_push_shield(&self, user: UserId, on: bool) -> StoreResult<bool>;
    /// The do-not-disturb switch, `None` if no such user.
    fn push_shield(&self, user: UserId) -> StoreResult<Option<bool>>;
    /// Registers a user's push token; an empty token unregisters. A token
    /// belongs to one device, so it is taken away from any other user first.
    fn set_device_token(&self, user: UserId, client_type: u32, token: &str) -> StoreResult<()>;
    /// Removes a user's push token only while it is still `token` (one
    /// push_server found invalid): a token the user registered since
    /// stays. `true` if it was removed.
    fn forget_device_token(&self, user: UserId, token: &str) -> StoreResult<bool>;
    /// Registered tokens of the given users, by user id.
    fn device_tokens(&self, users: &[UserId]) -> StoreResult<Vec<DeviceToken>>;
    /// Number of users.
    fn user_count(&self) -> StoreResult<u64>;
    /// Load-test helper: creates `prefix1` ..= `prefix{count}`, all with
    /// `password_md5hex`, in one transaction, and returns their ids.
    ///
    /// The Argon2 hash is computed once per call and shared by every seeded user
    /// (it is still a valid, salted hash; the users just share a salt). Meant for
    /// test accounts only.
    fn seed_users(
        &self,
        prefix: &str,
        count: u32,
        password_md5hex: &str,
    ) -> StoreResult<Vec<UserId>>;
    /// Load-test helper like [`seed_users`](Self::seed_users), but storing
    /// TeamTalk's own `md5hex(md5hex + salt)` form, as users imported from a
    /// C++ deployment have. Logging in as them costs no Argon2, so a login
    /// benchmark over thousands of distinct users measures the servers, not
    /// the password hash. Test accounts only: the salted MD5 form is weak.
    fn seed_teamtalk_users(
        &self,
        prefix: &str,
        count: u32,
        password_md5hex: &str,
    ) -> StoreResult<Vec<UserId>>;

    // ---- messages ----

    /// Stores a message, assigning the conversation's next id, counting it unread
    /// for the recipient and refreshing both recent sessions, in one durable
    /// transaction.
    ///
    /// A group message ([`SessionType::Group`]) takes the group's next id
    /// instead, after checking in the same transaction that the sender is a
    /// member, and moves the sender's read point to it: a handful of writes
    /// whatever the group's size (see [`groups`]).
    ///
    /// A message with a [`dedupe_key`](NewMessage::dedupe_key) already
    /// stored for the same sender and recipient within
    /// [`DEDUPE_WINDOW_SECS`] is not stored again: the answer is
    /// [`Stored::Duplicate`] with the first id. The key is written in the
    /// message's own transaction, so it is remembered exactly when the
    /// message is (a kill between the two is impossible), and it survives a
    /// restart.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a message that is never stored (to
    /// oneself, from or to user 0, a body over [`MAX_MSG_DATA_LEN`], a key
    /// over [`MAX_DEDUPE_KEY_LEN`]); [`StoreError::NoSuchGroup`] and
    /// [`StoreError::NotMember`] for a group message to a group that does not
    /// exist or from a non-member ([`StoreError::is_refusal`] tells these
    /// apart); any other error when the database failed.
    fn store_message(&self, msg: &NewMessage) -> StoreResult<Stored>;
    /// Stores several messages, in order, as [`Store::store_message`] would one
    /// by one, but with a single commit (group commit): one fsync for the whole
    /// batch instead of one per message, which is what bounds write throughput.
    ///
    /// Each message keeps its own result, and a failing message does not undo
    /// the others. Dedupe keys apply within the batch too: a resend later in
    /// the same batch is a [`Stored::Duplicate`] of the earlier one. The outer
    /// `Err` means the batch as a whole failed (the transaction could not start
    /// or commit) and nothing was stored, keys included. Returns only after the
    /// commit is durable.
    ///
    /// The default implementation stores the messages one at a time (one
    /// commit each); stores that can do better override it.
    fn store_messages(&self, msgs: &[NewMessage]) -> StoreResult<Vec<StoreResult<Stored>>> {
        Ok(msgs.iter().map(|m| self.store_message(m)).collect())
    }
    /// History between `user` and `peer`, newest first: ids `<= begin` (0 = from
    /// the latest), at most `count` capped at [`MAX_MSG_LIST`], and no more
    /// after the message whose body reaches [`MAX_LIST_BODY_BYTES`].
    fn message_list(
        &self,
        user: UserId,
        peer: UserId,
        begin: MsgId,
        count: u32,
    ) -> StoreResult<Vec<StoredMessage>>;
    /// The messages of the conversation with the given ids, newest first; at most
    /// [`MAX_MSGS_BY_ID`] ids are looked up, and no more after the message whose
    /// body reaches [`MAX_LIST_BODY_BYTES`].
    fn messages_by_ids(
        &self,
        user: UserId,
        peer: UserId,
        ids: &[MsgId],
    ) -> StoreResult<Vec<StoredMessage>>;
    /// Latest message id of the conversation, 0 if none.
    fn latest_msg_id(&self, user: UserId, peer: UserId) -> StoreResult<MsgId>;
    /// Unread counts of `user`, per peer and per group, with each
    /// conversation's latest message. `total` counts every conversation; the
    /// list stops after the one whose latest message brings the bodies to
    /// [`MAX_LIST_BODY_BYTES`].
    fn unread(&self, user: UserId) -> StoreResult<UnreadSummary>;
    /// The total of `user`'s unread counts, groups included (the push
    /// badge), without reading any message.
    fn unread_total(&self, user: UserId) -> StoreResult<u32> {
        self.unread(user).map(|u| u.total)
    }
    /// Marks everything from `peer` as read by `reader`.
    fn clear_unread(&self, reader: UserId, peer: UserId) -> StoreResult<()>;
    /// Recent sessions of `user` changed after `since`, newest first, at most
    /// [`MAX_RECENT_SESSIONS`]; removed sessions are left out.
    ///
    /// The groups the user is in are sessions too, changed when their last
    /// message was posted or when the user joined, whichever is later.
    ///
    /// When the latest messages of those sessions exceed
    /// [`MAX_LIST_BODY_BYTES`], the oldest of them are returned, up to the one
    /// that reaches the bound: a client keeps the newest `updated` it got as
    /// its watermark for the next request, which then must not pass a
    /// session it did not get.
    fn recent_sessions(&self, user: UserId, since: u32) -> StoreResult<Vec<RecentSession>>;
    /// Hides a recent session until the next message; `false` if there was
    /// none (for a group: the user is not a member).
    fn remove_session(
        &self,
        user: UserId,
        peer: UserId,
        session_type: SessionType,
    ) -> StoreResult<bool>;

    // ---- groups (see [`groups`]) ----

    /// Creates a group, version 1, with its creator and members (the
    /// creator always one of them), and returns it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for what [`groups::normalize_new_group`]
    /// refuses, [`StoreError::NoSuchUser`] for a member who does not exist.
    fn create_group(&self, group: &NewGroup) -> StoreResult<Group>;
    /// A group with its members; `None` if there is no such group.
    fn group(&self, id: GroupId) -> StoreResult<Option<Group>>;
    /// Every group, by id, with its members (for the administration).
    fn groups(&self) -> StoreResult<Vec<Group>>;
    /// The groups `user` is in with their versions, by group id, only those
    /// of `group_type` if given; at most [`MAX_GROUPS_PER_USER`].
    fn user_groups(
        &self,
        user: UserId,
        group_type: Option<GroupType>,
    ) -> StoreResult<Vec<GroupVersion>>;
    /// The groups among `known` that `user` is a member of and whose
    /// version is newer than the one given, with their members, in the
    /// order asked (a group named twice, once). Groups the user is not in
    /// are left out.
    fn groups_newer_than(&self, user: UserId, known: &[GroupVersion]) -> StoreResult<Vec<Group>>;
    /// Adds or removes members as `actor` asks, if [`groups::check_member_change`]
    /// allows it, and bumps the version when anyone was added or removed.
    /// Added users start with nothing unread and read only what is posted
    /// after they joined; removed users no longer see the group's session.
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`], [`StoreError::Refused`],
    /// [`StoreError::NoSuchUser`] for a user to add who does not exist,
    /// [`StoreError::Invalid`] for a change naming more than
    /// [`MAX_GROUP_MEMBERS`] users or user 0, or leaving the group with more.
    fn change_group_members(
        &self,
        actor: Actor,
        group: GroupId,
        change: MemberChange,
        users: &[UserId],
    ) -> StoreResult<MembersChanged>;
    /// Mutes (or unmutes) the group for `user`'s pushes.
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`], [`StoreError::NotMember`].
    fn set_group_shield(&self, user: UserId, group: GroupId, on: bool) -> StoreResult<()>;
    /// The push shields of those of `users` who are members of `group`, by
    /// user id (non-members are left out).
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`].
    fn group_shields(&self, group: GroupId, users: &[UserId]) -> StoreResult<Vec<(UserId, bool)>>;
    /// The group's history as `user` may read it (posted after they
    /// joined), newest first, as [`Store::message_list`].
    ///
    /// # Errors
    /// [`StoreError::NotMember`] (also for a group that does not exist).
    fn group_message_list(
        &self,
        user: UserId,
        group: GroupId,
        begin: MsgId,
        count: u32,
    ) -> StoreResult<Vec<StoredMessage>>;
    /// The group's messages with the given ids that `user` may read, as
    /// [`Store::messages_by_ids`].
    ///
    /// # Errors
    /// [`StoreError::NotMember`].
    fn group_messages_by_ids(
        &self,
        user: UserId,
        group: GroupId,
        ids: &[MsgId],
    ) -> StoreResult<Vec<StoredMessage>>;
    /// The group's latest message id as `user` sees it: 0 when nothing was
    /// posted since they joined.
    ///
    /// # Errors
    /// [`StoreError::NotMember`].
    fn group_latest_msg_id(&self, user: UserId, group: GroupId) -> StoreResult<MsgId>;
    /// Marks everything posted to the group as read by `user`.
    ///
    /// # Errors
    /// [`StoreError::NotMember`].
    fn clear_group_unread(&self, user: UserId, group: GroupId) -> StoreResult<()>;
    // ---- administration (the admin API) ----

    /// Changes the profile fields `update` names and bumps `updated`, so
    /// clients syncing the directory learn of it; the user as it is now,
    /// `None` if no such user.
    fn update_user(&self, user: UserId, update: &UserUpdate) -> StoreResult<Option<User>> {
        let _ = (user, update);
        Err(StoreError::Unsupported("changing a user's profile"))
    }
    /// Deletes a group (its messages stay stored, unreachable): it is gone
    /// from every member's lists. Returns the group as it was, for the
    /// notice to its members; `None` if no such group.
    fn delete_group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        let _ = id;
        Err(StoreError::Unsupported("deleting a group"))
    }

    // ---- offline files ----

    /// Records an offline file for its receiver; `false` when its task id
    /// is recorded already.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed task id, a name over
    /// [`MAX_FILE_NAME_LEN`](crate::rules::files::MAX_FILE_NAME_LEN), a file
    /// to oneself, or a receiver with
    /// [`MAX_OFFLINE_FILES`](crate::rules::files::MAX_OFFLINE_FILES)
    /// files waiting.
    fn add_offline_file(&self, file: &NewOfflineFile) -> StoreResult<bool>;
    /// The offline files waiting for `to`, oldest first, at most
    /// [`MAX_OFFLINE_FILES`](crate::rules::files::MAX_OFFLINE_FILES).
    fn offline_files(&self, to: UserId) -> StoreResult<Vec<OfflineFile>>;
    /// Forgets the offline file `task_id` sent by `from` to `to`; `false`
    /// if there was none.
    fn delete_offline_file(&self, task_id: &str, from: UserId, to: UserId) -> StoreResult<bool>;
}
