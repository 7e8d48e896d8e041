//! msg_server's logic as a pure state machine: events in, actions out.
//!
//! [`MsgApp`] never touches a socket. The shared runtime feeds it what
//! the reactors report (client logins and PDUs, upstream links going up
//! and down and their PDUs) and carries out the [`Action`]s it returns.
//! Tests drive it with plain integers as connection ids.
//!
//! Rules kept here, each in one place (those shared with other daemons in
//! [`crate::rules`]):
//! - identity: every user id a client names about itself is replaced with
//!   the authenticated session's ([`crate::rules::requests::scope`]);
//! - replies from db_proxy and route_server find their client through the
//!   pending-request table (request ids in `attach_data`, never socket
//!   handles), and a reply whose connection has gone is dropped;
//! - a message is acknowledged only when db_proxy has stored it (its reply
//!   carries the `msg_id`), then delivered to every local session of the
//!   recipient and the sender's other sessions, and relayed to
//!   route_server for the other msg_servers;
//! - presence pushes (`CID_BUDDY_LIST_STATUS_NOTIFY`) go to the PC sessions
//!   that have asked about other users (the directory or their statuses),
//!   which TeamTalk's PC clients do right after logging in. TeamTalk pushes
//!   every change to every PC session, so filling a server with N sessions
//!   costs O(N²) notices even when nobody looks; sessions that never ask
//!   get none here;
//! - file transfer (`app/files.rs`): offers go to a file_server whose
//!   link is up, online or offline as TeamTalk decides, every offer is
//!   answered, offline records are scoped to the session's user.

use crate::runtime::log_gate::LogGate;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::Instant;

use teamtalk_conn::{ClientClass, KickReason, Presence};
use teamtalk_proto::pb::im::base_define::{
    ClientType, ResultType, ServerUserStat, SessionType, UserStatType,
};
use teamtalk_proto::pb::im::buddy::{ImRemoveSessionNotify, ImpcLoginStatusNotify};
use teamtalk_proto::pb::im::ext::{
    ImGroupSubscription, ImUserGroupsReq, ImUserGroupsRsp, RequestFailedCode,
};
use teamtalk_proto::pb::im::group::ImGroupChangeMemberNotify;
use teamtalk_proto::pb::im::login::{ImKickPcClientRsp, ImKickUser, ImLoginRes, ImLogoutRsp};
use teamtalk_proto::pb::im::message::{ImClientTimeRsp, ImMsgData, ImMsgDataReadNotify};
use teamtalk_proto::pb::im::server::{
    ImMsgServInfo, ImOnlineUserInfo, ImRoleSet, ImServerKickUser, ImUserCntUpdate,
    ImUserStatusUpdate, ImValidateReq,
};
use teamtalk_proto::{Attach, Command, CommandKey, Message, Pdu};
use tracing::{debug, info, warn};

use super::groups::{ChangeLog, Changes, GroupIndex};
use crate::clip::clip;
use crate::metrics::{CounterMap, Histogram, Scrape};
use crate::rules::failure::{FailureAnswer, failure_reply, request_failed};
use crate::rules::relay::{Audience, audience};
use crate::rules::requests::{ServedBy, forwarded, scope};
use crate::rules::sessions::{is_group_message, session_type_of};
use crate::runtime::{self, Conn, Input, LinkId, NoJob, Now, Out, PortId};

/// The TCP client port: the plan's first listener.
const CLIENT_PORT: PortId = PortId(0);
/// No such listener.
const NO_PORT: PortId = PortId(u8::MAX);

/// The file-transfer half: file_server links, offers, offline records.
mod admin;
mod files;
/// The push path: offline recipients notified through push_server.
pub mod push;

pub use admin::LocalSession;

/// The servers msg_server keeps links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Upstream {
    /// db_proxy_server: logins, storage, every query.
    Db,
    /// login_server: registration and load reports.
    Login,
    /// route_server: presence and relay to the other msg_servers.
    Route,
    /// file_server: file transfer tasks. Optional: without one, file
    /// requests are answered with a failure, logins are not refused.
    File,
    /// push_server: notifications for recipients without a phone online.
    /// Optional: without one, nothing is pushed.
    Push,
}

impl Upstream {
    /// Every upstream a login needs (a login is refused while one of these
    /// kinds has no link up; [`Upstream::File`] is not one of them).
    pub const ALL: [Self; 3] = [Self::Db, Self::Login, Self::Route];

    /// Every kind, in [`Upstream::slot`] order.
    const KINDS: [Self; 5] = [Self::Db, Self::Login, Self::Route, Self::File, Self::Push];

    /// Its index in [`Upstream::KINDS`] (and in per-kind arrays).
    const fn slot(self) -> usize {
        match self {
            Self::Db => 0,
            Self::Login => 1,
            Self::Route => 2,
            Self::File => 3,
            Self::Push => 4,
        }
    }

    /// The `kind` label of `teamtalk_msg_link_up`.
    fn label(self) -> &'static str {
        match self {
            Self::Db => "db",
            Self::Login => "login",
            Self::Route => "route",
            Self::File => "file",
            Self::Push => "push",
        }
    }

    /// The daemon at the other end, for health reasons.
    fn daemon(self) -> &'static str {
        match self {
            Self::Db => "db_proxy_server",
            Self::Login => "login_server",
            Self::Route => "route_server",
            Self::File => "file_server",
            Self::Push => "push_server",
        }
    }

    /// The login refusal code TeamTalk sends while this link is down.
    fn refusal(self) -> ResultType {
        match self {
            // Logins never wait on a file_server; db_proxy's code is the
            // nearest "a server is unreachable".
            Self::Db | Self::File | Self::Push => ResultType::RefuseReasonNoDbServer,
            Self::Login => ResultType::RefuseReasonNoLoginServer,
            Self::Route => ResultType::RefuseReasonNoRouteServer,
        }
    }
}

/// What msg_server asks the runner to do.
pub type Action<C> = runtime::Action<NoJob, C>;

/// One upstream link, as the plan declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLink {
    /// The link's id in the plan.
    pub id: LinkId,
    /// Which server it leads to.
    pub kind: Upstream,
    /// Its address, for the link gauge and health reasons.
    pub addr: SocketAddr,
}

/// How this msg_server describes itself to login_server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Address clients should try first.
    pub ip1: String,
    /// Fallback address.
    pub ip2: String,
    /// Client port.
    pub port: u16,
    /// Most client sessions this server takes.
    pub max_conn_cnt: u32,
    /// Host name, for operators.
    pub host_name: String,
    /// The WebSocket port for browsers, announced to login_server (a
    /// teamtalk-rs extension field); 0 until bound.
    pub ws_port: Option<u16>,
    /// Whether that port is wss.
    pub ws_tls: bool,
}

/// Counters the metrics endpoint and logs report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Logins accepted.
    pub logins_ok: u64,
    /// Logins refused, by any reason.
    pub logins_refused: u64,
    /// Messages acknowledged to their sender after being stored.
    pub messages_acked: u64,
    /// Messages refused (to oneself, empty, unsupported type, store failed,
    /// db_proxy down).
    pub messages_refused: u64,
    /// PDUs delivered to local sessions.
    pub delivered: u64,
    /// Replies dropped because their request was unknown or its session gone.
    pub stale_replies: u64,
    /// Requests that could not be forwarded (link down, table full).
    pub forward_failed: u64,
    /// Commands answered as unsupported.
    pub unsupported: u64,
    /// Messages refused for exceeding the per-session rate limit.
    pub rate_limited: u64,
    /// Resent messages db_proxy had stored already (acked with the first
    /// id, stored once).
    pub duplicates: u64,
    /// File offers (0x0506) a file_server opened a task for.
    pub files_offered: u64,
    /// File offers and offline-file records refused (invalid, no
    /// file_server, refused by it).
    pub files_refused: u64,
}

/// Requests waiting for an upstream reply, bounded so a silent upstream
/// cannot grow memory without limit.
const MAX_PENDING: usize = 200_000;
/// Pending requests older than this are answered with their failure by
/// [`MsgApp::tick`].
pub(crate) const PENDING_TTL_SECS: u32 = 30;
/// Pending logins older than this are refused (`NO_DB_SERVER`) by the
/// tick: sooner than the 15 s a client gets to complete its login, so a
/// client waiting on a frozen db_proxy hears why instead of being cut off.
pub(crate) const LOGIN_TTL_SECS: u32 = 10;
/// PDUs a client session may send before msg_server has dealt with them
/// (its PDU credit at the start; see [`MsgApp::step`]).
pub const CLIENT_PDU_CREDIT: u32 = 16;
/// While a session has this many bytes of requests waiting upstream, its
/// credit is not paid back: it is not read until replies come back.
const SESSION_INFLIGHT_BYTES: usize = 1 << 20;
/// While all sessions together have this many bytes waiting upstream, no
/// session's credit is paid back.
const GLOBAL_INFLIGHT_BYTES: usize = 16 << 20;

/// Longest user name or password accepted from a client: TeamTalk's
/// passwords are 32 hex digits, and names are short; anything longer is
/// refused at the door, before it reaches a log, a table or db_proxy.
pub const MAX_CREDENTIAL_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    Login {
        client_type: u32,
        online_status: i32,
        /// [`ChangeLog::mark`] when the login was sent: groups read with
        /// it are trusted only if no change about the user passed since.
        changes_at: u64,
    },
    Message,
    /// A query whose reply goes back to the client as it is (attach cleared).
    Reply(Command),
    /// The groups of a user who just logged in, for the group index.
    UserGroups(u32),
    /// route_server's presence of a file's receiver, to choose online or
    /// offline transfer (the offer is in [`Pending::offer`]).
    FileStatus,
    /// A file_server (this link) opening a transfer task.
    FileTransfer(LinkId),
    /// A step of a message's push (the plan is in [`Pending::push`]).
    Push(push::PushStep),
}

/// What a pending login remembers, for [`MsgApp::validated`].
#[derive(Debug, Clone, Copy)]
struct ValidatedLogin {
    client_type: u32,
    online_status: i32,
    changes_at: u64,
}

#[derive(Debug, Clone)]
struct Pending<C> {
    conn: C,
    seq: u16,
    user_id: u32,
    upstream: Upstream,
    /// The link it went out on: its reply can only come back on that
    /// connection.
    link: LinkId,
    kind: PendingKind,
    created: u32,
    /// When it was forwarded (monotonic), for the reply-time histogram.
    sent: Option<Instant>,
    /// The request's command, for `IMRequestFailed`.
    request: CommandKey,
    /// What the client gets if no reply comes (the rules' failure answer,
    /// computed when the request was forwarded).
    on_failure: FailureAnswer,
    /// Bytes of the request as forwarded, counted against the session's
    /// and the server's in-flight budgets.
    bytes: usize,
    /// Whether this request holds one PDU credit of its session, paid back
    /// when the request ends.
    holds_credit: bool,
    /// The file a client offered, for the file-transfer requests.
    offer: Option<files::FileOffer>,
    /// A message's push, for the push path's requests.
    push: Option<Box<push::PushPlan>>,
}

/// What [`MsgApp::forward_with`] may do beyond [`MsgApp::forward`].
#[derive(Debug, Default)]
struct Forward {
    /// Send on this link (which must be up), not the first of its kind.
    link: Option<LinkId>,
    /// The client's answer if no reply comes, instead of the forwarded
    /// request's own failure answer.
    on_failure: Option<FailureAnswer>,
    /// The file offered.
    offer: Option<files::FileOffer>,
    /// The push under way.
    push: Option<Box<push::PushPlan>>,
}

#[derive(Debug, Clone, Default)]
struct ConnState {
    /// `(user_id, client_type)` once logged in.
    user: Option<(u32, u32)>,
    online_status: i32,
    /// The second (wall clock) the message count below is for.
    rate_second: u32,
    /// Messages this session sent in `rate_second`.
    rate_count: u32,
    /// Bytes of this session's requests waiting upstream.
    inflight_bytes: usize,
    /// PDU credits dealt with but not paid back yet (over a budget).
    owed: u32,
    /// The client's address, for db_proxy's login-failure limiter.
    addr: Option<PeerAddr>,
}

/// A client's address in 16 bytes rather than a `SocketAddr`'s 32 (one
/// per session, tens of thousands per msg_server): IPv4 inline, IPv6
/// (with its flow and scope) boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerAddr {
    V4(std::net::SocketAddrV4),
    V6(Box<std::net::SocketAddrV6>),
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(v4) => Self::V4(v4),
            SocketAddr::V6(v6) => Self::V6(Box::new(v6)),
        }
    }
}

impl PeerAddr {
    fn get(&self) -> SocketAddr {
        match self {
            Self::V4(v4) => SocketAddr::V4(*v4),
            Self::V6(v6) => SocketAddr::V6(**v6),
        }
    }
}

/// Limits a msg_server applies to each client session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SessionLimits {
    /// Most messages (`CID_MSG_DATA`) one session may send per second;
    /// beyond it a message is answered with `IMRequestFailed`
    /// (`REQUEST_FAILED_RATE_LIMITED`) and not stored. `None`: no limit.
    /// TeamTalk drops messages beyond 20 a second without a word.
    pub messages_per_second: Option<u32>,
}

/// msg_server's state. See the [module docs](self).
pub struct MsgApp<C> {
    registration: Registration,
    /// The WebSocket listener, if any (its bound port is announced).
    ws_port_id: PortId,
    /// Wall-clock seconds of the input being handled.
    now: u32,
    /// Monotonic time of the input being handled (`None` before the
    /// first), for the reply-time histograms.
    mono: Option<Instant>,
    /// Time from forwarding a request upstream to its reply, per
    /// [`Upstream::slot`]: where a client's wait goes when it is not here.
    reply_times: [Histogram; Upstream::KINDS.len()],
    /// Every upstream link and whether it is up, in plan order (the first
    /// link of a kind that is up is the one requests go to).
    links: Vec<(UpstreamLink, bool)>,
    /// Logins refused, by TeamTalk result code name.
    logins_refused: CounterMap,
    limits: SessionLimits,
    /// Which local online users are in which group.
    groups: GroupIndex,
    /// Users whose groups could not be loaded yet; retried every tick.
    groups_to_load: HashSet<u32>,
    /// Whose membership changed while logins were under way.
    member_changes: ChangeLog,
    /// The client session whose PDU is being handled (it spent one
    /// credit), and whether a pending request took that credit over.
    credit: Option<(C, bool)>,
    /// Bytes of all sessions' requests waiting upstream.
    inflight_bytes: usize,
    /// Sessions owed credit, paid when the server's budget frees up.
    owed: HashSet<C>,
    conns: HashMap<C, ConnState>,
    presence: Presence<C>,
    /// PC sessions that asked about other users (directory or status), and
    /// so get presence changes pushed. See [`App::client_pdu`].
    presence_watchers: HashSet<C>,
    pending: HashMap<u32, Pending<C>>,
    next_request: u32,
    logged_in: u32,
    stats: AppStats,
    /// The file_servers' client addresses, by link.
    files: files::FileLinks,
    /// Refused logins and kicks: one INFO line per interval (a client can
    /// cause thousands), the rest at debug; the counters count them all.
    refusal_log: LogGate<u32>,
    kick_log: LogGate<u32>,
    /// The push path's settings and counters.
    push: push::PushState,
    /// login_server links this msg_server registered on (since they came
    /// up). Registration waits for db_proxy and route_server: a msg_server
    /// login_server hands out must be able to log clients in.
    registered: HashSet<LinkId>,
    /// [`MAX_PENDING`], [`SESSION_INFLIGHT_BYTES`] and
    /// [`GLOBAL_INFLIGHT_BYTES`], smaller under test so the limits are
    /// reached.
    caps: Caps,
}

/// The bounds of the pending table and of the in-flight budgets.
#[derive(Debug, Clone, Copy)]
struct Caps {
    max_pending: usize,
    session_inflight: usize,
    global_inflight: usize,
}

impl<C: Debug> Debug for MsgApp<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgApp")
            .field("registration", &self.registration)
            .field("links", &self.links)
            .field("conns", &self.conns.len())
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

type Actions<C> = Vec<Action<C>>;

impl<C: Copy + Eq + Hash + Debug> MsgApp<C> {
    /// A msg_server with `links` (every one down) and no sessions.
    #[must_use]
    pub fn new(registration: Registration, links: Vec<UpstreamLink>) -> Self {
        Self {
            registration,
            ws_port_id: NO_PORT,
            now: 0,
            mono: None,
            reply_times: std::array::from_fn(|_| Histogram::latency()),
            links: links.into_iter().map(|l| (l, false)).collect(),
            logins_refused: CounterMap::new(),
            limits: SessionLimits::default(),
            groups: GroupIndex::new(),
            groups_to_load: HashSet::new(),
            member_changes: ChangeLog::default(),
            credit: None,
            inflight_bytes: 0,
            owed: HashSet::new(),
            conns: HashMap::new(),
            presence: Presence::new(),
            presence_watchers: HashSet::new(),
            pending: HashMap::new(),
            next_request: 0,
            logged_in: 0,
            stats: AppStats::default(),
            files: files::FileLinks::default(),
            refusal_log: LogGate::default(),
            kick_log: LogGate::default(),
            push: push::PushState::default(),
            registered: HashSet::new(),
            caps: Caps {
                max_pending: MAX_PENDING,
                session_inflight: SESSION_INFLIGHT_BYTES,
                global_inflight: GLOBAL_INFLIGHT_BYTES,
            },
        }
    }

    /// Decodes message text for push notifications with this `aesKey`
    /// (TeamTalk's default otherwise).
    #[must_use]
    pub fn with_aes_key(mut self, key: Option<[u8; 32]>) -> Self {
        self.push.aes_key = key;
        self
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> AppStats {
        self.stats
    }

    /// push_server's answers so far, by result code (0 delivered, 2
    /// invalid token, …; see [`crate::push::app`]).
    #[must_use]
    pub fn push_results(&self) -> std::collections::BTreeMap<u32, u64> {
        self.push.results.clone()
    }

    /// Logged-in client sessions.
    #[must_use]
    pub fn logged_in(&self) -> u32 {
        self.logged_in
    }

    /// Whether some link of this kind is up.
    #[must_use]
    pub fn is_up(&self, upstream: Upstream) -> bool {
        self.links.iter().any(|(l, up)| *up && l.kind == upstream)
    }

    /// Declares which listener is the WebSocket port, so its bound port
    /// is announced to login_server.
    #[must_use]
    pub fn with_ws_port(mut self, port: PortId) -> Self {
        self.ws_port_id = port;
        self
    }

    /// Applies `limits` to every session from now on.
    #[must_use]
    pub fn with_limits(mut self, limits: SessionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Counts one message of `conn` against its per-second limit; false
    /// when over it.
    fn within_rate(&mut self, conn: C) -> bool {
        let Some(limit) = self.limits.messages_per_second else {
            return true;
        };
        let now = self.now;
        let Some(state) = self.conns.get_mut(&conn) else {
            return true;
        };
        if state.rate_second != now {
            state.rate_second = now;
            state.rate_count = 0;
        }
        state.rate_count = state.rate_count.saturating_add(1);
        state.rate_count <= limit
    }

    /// Sets the wall-clock time of the input being handled (the runner's
    /// [`Now`]; tests set it directly).
    pub fn set_time(&mut self, unix_secs: u32) {
        self.now = unix_secs;
    }

    /// The links of `kind` that are up, in plan order.
    fn up_links(&self, kind: Upstream) -> impl Iterator<Item = LinkId> + '_ {
        self.links
            .iter()
            .filter(move |(l, up)| *up && l.kind == kind)
            .map(|(l, _)| l.id)
    }

    fn link(&self, id: LinkId) -> Option<UpstreamLink> {
        self.links.iter().find(|(l, _)| l.id == id).map(|(l, _)| *l)
    }

    /// Requests waiting for a reply.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn now(&self) -> u32 {
        self.now
    }

    /// Replaces the bound of the pending table and the per-session and
    /// server in-flight budgets (bytes), so tests and the fuzz harness
    /// reach them with a handful of requests.
    #[cfg(any(test, feature = "fuzzing"))]
    #[must_use]
    pub fn with_capacity_limits(
        mut self,
        max_pending: usize,
        session_inflight: usize,
        global_inflight: usize,
    ) -> Self {
        self.caps = Caps {
            max_pending,
            session_inflight,
            global_inflight,
        };
        self
    }

    /// The bound of the pending table.
    #[cfg(any(test, feature = "fuzzing"))]
    #[must_use]
    pub fn max_pending(&self) -> usize {
        self.caps.max_pending
    }

    /// Client sessions known (opened and not closed yet).
    #[cfg(any(test, feature = "fuzzing"))]
    #[must_use]
    pub fn sessions(&self) -> usize {
        self.conns.len()
    }

    /// Checks that the App's tables agree with each other between two
    /// inputs; the first disagreement found, in words. For the fuzz
    /// harness and property tests.
    ///
    /// # Errors
    /// A description of the broken invariant.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.credit.is_some() {
            return Err("a PDU's credit is still being handled between inputs".into());
        }
        if self.pending.len() > self.caps.max_pending {
            return Err(format!(
                "{} pending requests over the cap of {}",
                self.pending.len(),
                self.caps.max_pending
            ));
        }
        let total: usize = self.pending.values().map(|p| p.bytes).sum();
        if total != self.inflight_bytes {
            return Err(format!(
                "in-flight bytes {} but pending requests hold {total}",
                self.inflight_bytes
            ));
        }
        for (conn, state) in &self.conns {
            let mine: usize = self
                .pending
                .values()
                .filter(|p| p.conn == *conn)
                .map(|p| p.bytes)
                .sum();
            if mine != state.inflight_bytes {
                return Err(format!(
                    "session {conn:?}: in-flight bytes {} but its pending requests hold {mine}",
                    state.inflight_bytes
                ));
            }
            if (state.owed > 0) != self.owed.contains(conn) {
                return Err(format!(
                    "session {conn:?} owed {} but the owed set says otherwise",
                    state.owed
                ));
            }
            if let Some((user, client_type)) = state.user {
                let class = ClientClass::of(client_type);
                if self.presence.session(user, class) != Some(*conn) {
                    return Err(format!(
                        "session {conn:?} logged in as {user} is not in the presence table"
                    ));
                }
            }
        }
        for conn in &self.owed {
            if !self.conns.contains_key(conn) {
                return Err(format!("credit owed to a closed session {conn:?}"));
            }
        }
        for conn in &self.presence_watchers {
            if !self.conns.contains_key(conn) {
                return Err(format!("closed session {conn:?} still watches presence"));
            }
        }
        let logged_in = self.conns.values().filter(|c| c.user.is_some()).count();
        if u32::try_from(logged_in).ok() != Some(self.logged_in) {
            return Err(format!(
                "logged_in says {} but {logged_in} sessions are logged in",
                self.logged_in
            ));
        }
        for (conn, state) in &self.conns {
            if let Some((user, _)) = state.user {
                for other in self.presence.sessions(user) {
                    let owner = self.conns.get(&other).and_then(|c| c.user).map(|u| u.0);
                    if owner != Some(user) {
                        return Err(format!(
                            "presence lists {other:?} for user {user} (seen from {conn:?}), \
                             but that session is not logged in as them"
                        ));
                    }
                }
            }
        }
        self.groups.check_invariants()?;
        for user in self.groups.indexed_users() {
            if self.presence.sessions(user).next().is_none() {
                return Err(format!(
                    "groups of user {user} indexed with no session here"
                ));
            }
        }
        Ok(())
    }

    // ----- upstream links -------------------------------------------------

    /// A link came up: register with login_server, or give route_server the
    /// snapshot of who is online here, as TeamTalk does on every connect.
    /// The greeting goes to the link that came up, not to every link of
    /// its kind.
    pub fn link_up(&mut self, link: LinkId) -> Actions<C> {
        let Some(l) = self.link(link) else {
            warn!(?link, "unknown link up");
            return Vec::new();
        };
        info!(upstream = ?l.kind, addr = %l.addr, "link up");
        for (x, up) in &mut self.links {
            if x.id == link {
                *up = true;
            }
        }
        let greeting = match l.kind {
            // db_proxy and route_server up may complete what registration
            // waits for, on every login link up and not registered yet.
            Upstream::Db => return self.register_where_ready(),
            Upstream::Login => {
                let mut out = self.register_where_ready();
                if !self.registered.contains(&link) {
                    debug!(addr = %l.addr, "registration with login_server waits for db_proxy and route_server");
                }
                out.retain(|a| matches!(a, Action::Link(to, _) if *to == link));
                return out;
            }
            Upstream::Route => {
                let user_stat_list = self
                    .conns
                    .values()
                    .filter_map(|c| c.user)
                    .map(|(user_id, client_type)| ServerUserStat {
                        user_id,
                        status: UserStatType::UserStatusOnline as i32,
                        client_type: client_type as i32,
                    })
                    .collect();
                vec![
                    Command::OtherOnlineUserInfo.pdu(0, &ImOnlineUserInfo { user_stat_list }),
                    Command::OtherRoleSet.pdu(0, &ImRoleSet { master: 1 }),
                    Command::OtherGroupSubscription.pdu(
                        0,
                        &ImGroupSubscription {
                            subscribe: true,
                            group_id_list: self.groups.hosted(),
                            replace: Some(true),
                        },
                    ),
                ]
            }
            // As TeamTalk, on every (re)connect: where do clients reach you?
            Upstream::File => vec![
                Command::OtherFileServerIpReq
                    .pdu(0, &teamtalk_proto::pb::im::server::ImFileServerIpReq {}),
            ],
            Upstream::Push => Vec::new(),
        };
        let mut out: Actions<C> = greeting
            .into_iter()
            .map(|pdu| Action::Link(link, pdu))
            .collect();
        if l.kind == Upstream::Route {
            out.extend(self.register_where_ready());
        }
        out
    }

    /// `IMMsgServInfo` to every login_server link that is up and not
    /// registered on yet, once db_proxy and route_server are up.
    fn register_where_ready(&mut self) -> Actions<C> {
        if !(self.is_up(Upstream::Db) && self.is_up(Upstream::Route)) {
            return Vec::new();
        }
        let info = self.serv_info(true);
        let todo: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(l, up)| *up && l.kind == Upstream::Login && !self.registered.contains(&l.id))
            .map(|(l, _)| l.id)
            .collect();
        todo.into_iter()
            .map(|link| {
                self.registered.insert(link);
                Action::Link(link, Command::OtherMsgServInfo.pdu(0, &info))
            })
            .collect()
    }

    /// What this msg_server announces to login_server (0x0709): its
    /// addresses and load, with no room at all when it is not `available`.
    fn serv_info(&self, available: bool) -> ImMsgServInfo {
        let r = &self.registration;
        ImMsgServInfo {
            ip1: r.ip1.clone(),
            ip2: r.ip2.clone(),
            port: u32::from(r.port),
            max_conn_cnt: if available { r.max_conn_cnt } else { 0 },
            cur_conn_cnt: self.logged_in,
            host_name: r.host_name.clone(),
            ws_port: r.ws_port.map(u32::from),
            ws_tls: r.ws_port.map(|_| r.ws_tls),
        }
    }

    /// The last db_proxy link is down: nobody can log in here until one
    /// is back, so login_server should send clients elsewhere. Every
    /// login_server registered on hears 0x0709 again with no room
    /// (`max_conn_cnt` 0: a full server is never offered), and the
    /// registration is forgotten, so that the link up of a db_proxy
    /// registers again with the real figures ([`Self::register_where_ready`]).
    /// A C++ login_server keeps the first registration of a connection and
    /// ignores this; ours replaces it.
    fn stand_down(&mut self) -> Actions<C> {
        if self.registered.is_empty() {
            return Vec::new();
        }
        info!("no db_proxy link up: telling login_server to send clients elsewhere");
        let info = self.serv_info(false);
        let mut links: Vec<LinkId> = self.registered.drain().collect();
        links.sort_unstable();
        links
            .into_iter()
            .map(|link| Action::Link(link, Command::OtherMsgServInfo.pdu(0, &info)))
            .collect()
    }

    /// A link went down. Every request that went out on it gets its
    /// failure answer now (logins TeamTalk's refusal code for that
    /// server), even while another link of its kind is up: its reply could
    /// only have come back on the connection that is gone, so nothing was
    /// acknowledged and nobody may wait for it (the fuzz harness found
    /// requests left to their 30 s limit). Requests on the other links of
    /// the kind go on waiting for their replies.
    pub fn link_down(&mut self, link: LinkId) -> Actions<C> {
        let Some(l) = self.link(link) else {
            return Vec::new();
        };
        for (x, up) in &mut self.links {
            if x.id == link && *up {
                *up = false;
                // The link itself logs it at WARN with the next retry.
                debug!(upstream = ?l.kind, addr = %l.addr, "link down");
            }
        }
        // A login_server that comes back gets the registration again.
        self.registered.remove(&link);
        let upstream = l.kind;
        if upstream == Upstream::File {
            return self.file_link_down(link);
        }
        let lost: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.link == link)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in lost {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            self.release(&p, &mut out);
            self.fail_pending(
                p,
                upstream.refusal(),
                RequestFailedCode::RequestFailedServerError,
                "upstream server unreachable",
                &mut out,
            );
        }
        if upstream == Upstream::Db && !self.is_up(Upstream::Db) {
            out.extend(self.stand_down());
        }
        out
    }

    /// A PDU from an upstream server.
    pub fn upstream_pdu(&mut self, link: LinkId, pdu: &Pdu) -> Actions<C> {
        let Some(upstream) = self.link(link).map(|l| l.kind) else {
            return Vec::new();
        };
        let msg = match Message::decode(pdu) {
            Ok(m) => m,
            Err(e) => {
                warn!(?upstream, error = %e, "undecodable pdu from upstream");
                return Vec::new();
            }
        };
        match upstream {
            Upstream::Route => self.route_pdu(pdu, msg),
            Upstream::Db => match self.db_instruction(link, pdu, &msg) {
                Some(actions) => actions,
                None => self.reply_pdu(upstream, pdu, msg),
            },
            Upstream::File => self.file_link_pdu(link, pdu, msg),
            Upstream::Push => {
                let mut out = Vec::new();
                self.push_answer(msg, &mut out);
                out
            }
            Upstream::Login => {
                debug!(key = %pdu.key(), "ignoring pdu from login_server");
                Vec::new()
            }
        }
    }

    /// Answers requests that have waited too long with their failure
    /// answer, so a peer that never answers can neither fill the table nor
    /// leave a client waiting. Call about once a second.
    pub fn tick(&mut self) -> Actions<C> {
        let now = self.now();
        // A login waits at most LOGIN_TTL_SECS: older changes cannot
        // concern one still under way.
        self.member_changes
            .prune(now.saturating_sub(LOGIN_TTL_SECS + 1));
        let mut retries = Vec::new();
        for user in std::mem::take(&mut self.groups_to_load) {
            if let Some(conn) = self.presence.sessions(user).next() {
                retries.push((user, conn));
            }
        }
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                let ttl = match p.kind {
                    PendingKind::Login { .. } => LOGIN_TTL_SECS,
                    _ => PENDING_TTL_SECS,
                };
                now.saturating_sub(p.created) >= ttl
            })
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for (user, conn) in retries {
            self.load_groups(user, conn, &mut out);
        }
        if !expired.is_empty() {
            warn!(expired = expired.len(), "requests expired without a reply");
        }
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                self.release(&p, &mut out);
                let refusal = p.upstream.refusal();
                self.fail_pending(
                    p,
                    refusal,
                    RequestFailedCode::RequestFailedServerError,
                    "no reply from the upstream server in time",
                    &mut out,
                );
            }
        }
        out
    }

    // ----- client sessions ------------------------------------------------

    /// A client connection was accepted.
    pub fn client_open(&mut self, conn: C) {
        self.conns.insert(conn, ConnState::default());
    }

    /// A client connection was accepted from `peer`.
    pub fn client_open_from(&mut self, conn: C, peer: SocketAddr) {
        self.conns.insert(
            conn,
            ConnState {
                addr: Some(peer.into()),
                ..ConnState::default()
            },
        );
    }

    /// A client asks to log in.
    pub fn login_request(&mut self, conn: C, pdu: &Pdu) -> Actions<C> {
        let mut out = Vec::new();
        let Ok(Message::LoginReqUserlogin(req)) = Message::decode(pdu) else {
            warn!(?conn, "undecodable login request");
            self.refuse_login(
                conn,
                pdu.seq(),
                ResultType::RefuseReasonDbValidateFailed,
                &mut out,
            );
            return out;
        };
        if req.user_name.len() > MAX_CREDENTIAL_LEN || req.password.len() > MAX_CREDENTIAL_LEN {
            if let Some(held_back) = self.refusal_log.pass_secs(self.now) {
                info!(
                    ?conn,
                    name_len = req.user_name.len(),
                    password_len = req.password.len(),
                    held_back,
                    "login refused: user name or password too long"
                );
            }
            self.refuse_login(
                conn,
                pdu.seq(),
                ResultType::RefuseReasonDbValidateFailed,
                &mut out,
            );
            return out;
        }
        if let Some(down) = Upstream::ALL.into_iter().find(|u| !self.is_up(*u)) {
            if let Some(held_back) = self.refusal_log.pass_secs(self.now) {
                info!(?conn, user = %clip(&req.user_name), ?down, held_back, "login refused: link down");
            } else {
                debug!(?conn, user = %clip(&req.user_name), ?down, "login refused: link down");
            }
            self.refuse_login(conn, pdu.seq(), down.refusal(), &mut out);
            return out;
        }
        let kind = PendingKind::Login {
            client_type: req.client_type as u32,
            online_status: req.online_status,
            changes_at: self.member_changes.mark(),
        };
        let validate = ImValidateReq {
            user_name: req.user_name,
            password: req.password,
            attach_data: None,
            client_addr: self
                .conns
                .get(&conn)
                .and_then(|c| c.addr.as_ref())
                .map(|a| a.get().ip().to_string()),
        };
        if !self.forward(
            conn,
            pdu.seq(),
            0,
            Upstream::Db,
            kind,
            validate.into(),
            &mut out,
        ) {
            self.refuse_login(
                conn,
                pdu.seq(),
                ResultType::RefuseReasonNoDbServer,
                &mut out,
            );
        }
        out
    }

    /// A client session ended, for whatever reason.
    pub fn client_closed(&mut self, conn: C) -> Actions<C> {
        let mut out = Vec::new();
        self.owed.remove(&conn);
        self.presence_watchers.remove(&conn);
        if let Some(state) = self.conns.remove(&conn)
            && let Some((user_id, client_type)) = state.user
        {
            self.presence.logout(user_id, conn);
            if self.presence.sessions(user_id).next().is_none() {
                self.push.nicks.remove(&user_id);
            }
            self.went_offline(user_id, client_type, &mut out);
            self.maybe_forget_groups(user_id, &mut out);
        }
        out
    }

    /// A PDU from a logged-in client (the session has already checked the
    /// login and handled heartbeats).
    pub fn client_pdu(&mut self, conn: C, pdu: &Pdu) -> Actions<C> {
        let mut out = Vec::new();
        let Some((user_id, client_type)) = self.conns.get(&conn).and_then(|c| c.user) else {
            warn!(?conn, key = %pdu.key(), "pdu from a session that is not logged in");
            return out;
        };
        let mut msg = match Message::decode(pdu) {
            Ok(m) => m,
            Err(e) => {
                warn!(?conn, user_id, error = %e, "undecodable pdu from client; closing");
                self.end_session(conn, &mut out);
                out.push(Action::Close { conn, notice: None });
                return out;
            }
        };
        let seq = pdu.seq();
        if ClientClass::of(client_type) == ClientClass::Pc
            && matches!(
                msg,
                Message::BuddyListAllUserRequest(_) | Message::BuddyListUsersStatusRequest(_)
            )
        {
            self.presence_watchers.insert(conn);
        }
        match &mut msg {
            Message::MsgData(m) => self.client_message(conn, seq, user_id, m.clone(), &mut out),
            Message::MsgDataAck(_) => {
                // Delivery acks: TeamTalk only used them to count misses;
                // history and unread counts are the recovery path.
                debug!(?conn, user_id, "delivery ack");
            }
            Message::MsgReadAck(m) => {
                m.user_id = user_id;
                let notify = ImMsgDataReadNotify {
                    user_id,
                    session_id: m.session_id,
                    msg_id: m.msg_id,
                    session_type: m.session_type,
                };
                self.send_upstream(Upstream::Db, Command::MsgReadAck.pdu(seq, m), &mut out);
                let notify = Command::MsgReadNotify.pdu(0, &notify);
                self.deliver(user_id, Some(conn), &notify, &mut out);
                self.send_upstream(Upstream::Route, notify, &mut out);
            }
            Message::FileRequest(m) => {
                self.client_file_request(conn, seq, user_id, m.clone(), &mut out);
            }
            Message::FileAddOfflineReq(m) => {
                self.client_add_offline(conn, user_id, m.clone(), &mut out);
            }
            Message::FileDelOfflineReq(m) => {
                self.client_del_offline(conn, user_id, m.clone(), &mut out);
            }
            Message::MsgTimeRequest(_) => {
                let rsp = ImClientTimeRsp {
                    server_time: self.now(),
                };
                out.push(Action::Send(conn, Command::MsgTimeResponse.pdu(seq, &rsp)));
            }
            Message::SwitchP2pCmd(m) => {
                m.from_user_id = user_id;
                let relay = Command::SwitchP2pCmd.pdu(seq, m);
                self.deliver(m.to_user_id, None, &relay, &mut out);
                self.deliver(user_id, Some(conn), &relay, &mut out);
                self.send_upstream(Upstream::Route, relay, &mut out);
            }
            Message::LoginReqLoginout(_) => {
                let rsp = Command::LoginResLoginout.pdu(seq, &ImLogoutRsp { result_code: 0 });
                self.end_session(conn, &mut out);
                out.push(Action::Close {
                    conn,
                    notice: Some(rsp),
                });
            }
            Message::LoginReqKickpcclient(_) => {
                let result_code = if ClientClass::of(client_type) == ClientClass::Mobile {
                    if let Some(kick) = self.presence.mobile_kick_pc(user_id, conn) {
                        self.kick(kick.session, user_id, kick.reason, &mut out);
                    }
                    let kick = ImServerKickUser {
                        user_id,
                        client_type: ClientType::Windows as i32,
                        reason: KickReason::MobileKick.code(),
                    };
                    self.send_upstream(
                        Upstream::Route,
                        Command::OtherServerKickUser.pdu(0, &kick),
                        &mut out,
                    );
                    0
                } else {
                    1
                };
                let rsp = ImKickPcClientRsp {
                    user_id,
                    result_code,
                };
                out.push(Action::Send(
                    conn,
                    Command::LoginResKickpcclient.pdu(seq, &rsp),
                ));
            }
            Message::GroupCreateRequest(r)
                if r.group_type != teamtalk_proto::pb::im::base_define::GroupType::Tmp as i32 =>
            {
                // Normal groups come from the admin side (TeamTalk drops a
                // client's request silently; this one is answered).
                info!(
                    ?conn,
                    user_id,
                    group_type = r.group_type,
                    "client asked for a normal group; refused"
                );
                let refused = msg.clone();
                self.fail_request(
                    conn,
                    seq,
                    user_id,
                    &refused,
                    RequestFailedCode::RequestFailedBadRequest,
                    "clients create temporary groups only",
                    &mut out,
                );
            }
            _ => {
                let Some(command) = msg.command() else {
                    warn!(?conn, user_id, key = %pdu.key(), "unknown command from client");
                    self.stats.unsupported += 1;
                    self.fail_request(
                        conn,
                        seq,
                        user_id,
                        &msg,
                        RequestFailedCode::RequestFailedUnsupported,
                        "unknown command",
                        &mut out,
                    );
                    return out;
                };
                match forwarded(command) {
                    Some((served_by, reply)) if scope(&mut msg, user_id) => {
                        let upstream = match served_by {
                            ServedBy::Db => Upstream::Db,
                            ServedBy::Route => Upstream::Route,
                        };
                        let kind = PendingKind::Reply(reply);
                        if !self.forward(conn, seq, user_id, upstream, kind, msg.clone(), &mut out)
                        {
                            debug!(?conn, %command, "request not forwarded");
                            self.fail_request(
                                conn,
                                seq,
                                user_id,
                                &msg,
                                RequestFailedCode::RequestFailedServerError,
                                "upstream server unreachable",
                                &mut out,
                            );
                        }
                    }
                    _ => {
                        warn!(?conn, user_id, %command, "command not supported by this msg_server");
                        self.stats.unsupported += 1;
                        self.fail_request(
                            conn,
                            seq,
                            user_id,
                            &msg,
                            RequestFailedCode::RequestFailedNotImplemented,
                            "not supported by this msg_server",
                            &mut out,
                        );
                    }
                }
            }
        }
        out
    }

    // ----- messages -------------------------------------------------------

    fn client_message(
        &mut self,
        conn: C,
        seq: u16,
        user_id: u32,
        mut m: ImMsgData,
        out: &mut Actions<C>,
    ) {
        let refusal = if session_type_of(m.msg_type).is_none() {
            Some((
                RequestFailedCode::RequestFailedBadRequest,
                "unknown message type",
            ))
        } else if !is_group_message(m.msg_type) && m.to_session_id == user_id {
            Some((
                RequestFailedCode::RequestFailedBadRequest,
                "a message to oneself",
            ))
        } else if m.to_session_id == 0 {
            Some((RequestFailedCode::RequestFailedBadRequest, "no recipient"))
        } else if m.msg_data.is_empty() {
            Some((
                RequestFailedCode::RequestFailedBadRequest,
                "an empty message",
            ))
        } else {
            None
        };
        if refusal.is_none() && !self.within_rate(conn) {
            // Over the rate: told so, not closed (the session is healthy,
            // just too fast), and not stored.
            self.stats.rate_limited += 1;
            debug!(?conn, user_id, "message over the session's rate limit");
            let failed = request_failed(
                Command::MsgData.key(),
                None,
                RequestFailedCode::RequestFailedRateLimited,
                "too many messages per second",
                seq,
            );
            out.push(Action::Send(conn, failed));
            return;
        }
        if let Some((code, reason)) = refusal {
            warn!(
                ?conn,
                user_id,
                to = m.to_session_id,
                msg_type = m.msg_type,
                reason,
                "message refused"
            );
            self.stats.messages_refused += 1;
            self.fail_request(conn, seq, user_id, &Message::MsgData(m), code, reason, out);
            return;
        }
        m.dedupe_key = Some(bytes::Bytes::from(dedupe_key(user_id, &m)));
        m.duplicate = None;
        m.from_user_id = user_id;
        m.create_time = self.now();
        m.msg_id = 0;
        let msg = Message::MsgData(m);
        if !self.forward(
            conn,
            seq,
            user_id,
            Upstream::Db,
            PendingKind::Message,
            msg.clone(),
            out,
        ) {
            self.stats.messages_refused += 1;
            self.fail_request(
                conn,
                seq,
                user_id,
                &msg,
                RequestFailedCode::RequestFailedServerError,
                "db_proxy_server unreachable",
                out,
            );
        }
    }

    fn stored_message(&mut self, p: Pending<C>, mut m: ImMsgData, out: &mut Actions<C>) {
        if m.msg_id == 0 {
            warn!(conn = ?p.conn, user_id = p.user_id, "db_proxy refused to store the message");
            self.stats.messages_refused += 1;
            self.fail_pending(
                p,
                ResultType::RefuseReasonNoDbServer,
                RequestFailedCode::RequestFailedBadRequest,
                "db_proxy_server refused to store the message",
                out,
            );
            return;
        }
        m.attach_data = None;
        if m.duplicate == Some(true) {
            // A resend of a message stored before: acked with the id it got
            // then (and delivered, since the first reply, and so the first
            // delivery, may be what was lost).
            self.stats.duplicates += 1;
            debug!(conn = ?p.conn, msg_id = m.msg_id, "resent message stored once");
        }
        m.dedupe_key = None;
        m.duplicate = None;
        let group = is_group_message(m.msg_type);
        if self.conns.contains_key(&p.conn) {
            let ack = teamtalk_proto::pb::im::message::ImMsgDataAck {
                user_id: m.from_user_id,
                session_id: m.to_session_id,
                msg_id: m.msg_id,
                session_type: if group {
                    SessionType::Group as i32
                } else {
                    SessionType::Single as i32
                },
            };
            out.push(Action::Send(p.conn, Command::MsgDataAck.pdu(p.seq, &ack)));
            self.stats.messages_acked += 1;
        }
        let delivery = Command::MsgData.pdu(0, &m);
        // Pushed from here only, the sender's msg_server (push.rs); a
        // resend too: the first push may never have gone, and push_server
        // sends one message to one device once.
        self.start_push(p.conn, &m, out);
        if group {
            // Every local member (the sender's other sessions included),
            // not the sending session; one copy to route_server for the
            // other msg_servers with a member online.
            self.deliver_to_group(m.to_session_id, Some(p.conn), &delivery, out);
        } else {
            self.deliver(m.to_session_id, None, &delivery, out);
            self.deliver(m.from_user_id, Some(p.conn), &delivery, out);
        }
        self.send_upstream(Upstream::Route, delivery, out);
    }

    // ----- groups -----------------------------------------------------------

    /// Asks db_proxy for the groups of a user who just logged in here.
    fn load_groups(&mut self, user: u32, conn: C, out: &mut Actions<C>) {
        let req = ImUserGroupsReq {
            user_id: user,
            attach_data: None,
        };
        let kind = PendingKind::UserGroups(user);
        if !self.forward(conn, 0, user, Upstream::Db, kind, req.into(), out) {
            self.groups_to_load.insert(user);
        }
    }

    fn groups_loaded(&mut self, user: u32, rsp: &ImUserGroupsRsp, out: &mut Actions<C>) {
        if self.presence.sessions(user).next().is_none() {
            debug!(user, "groups arrived after the user left");
            return;
        }
        let changes = self.groups.load(user, rsp.group_id_list.iter().copied());
        self.report_subscriptions(changes, out);
    }

    /// Forgets the groups of a user whose last session here ended.
    fn maybe_forget_groups(&mut self, user: u32, out: &mut Actions<C>) {
        if self.presence.sessions(user).next().is_some() {
            return;
        }
        self.groups_to_load.remove(&user);
        let changes = self.groups.forget(user);
        self.report_subscriptions(changes, out);
    }

    /// Tells route_server which groups this msg_server started or stopped
    /// hosting members of.
    fn report_subscriptions(&mut self, changes: Changes, out: &mut Actions<C>) {
        for (subscribe, groups) in [(true, changes.joined), (false, changes.left)] {
            if groups.is_empty() {
                continue;
            }
            let sub = ImGroupSubscription {
                subscribe,
                group_id_list: groups,
                replace: None,
            };
            self.send_upstream(
                Upstream::Route,
                Command::OtherGroupSubscription.pdu(0, &sub),
                out,
            );
        }
    }

    /// Sends `pdu` to every local session of every local member of
    /// `group`, except `skip`.
    fn deliver_to_group(&mut self, group: u32, skip: Option<C>, pdu: &Pdu, out: &mut Actions<C>) {
        let members: Vec<u32> = self.groups.members(group).collect();
        for user in members {
            self.deliver(user, skip, pdu, out);
        }
    }

    /// A change of a group's members, from a reply here or relayed by
    /// route_server: the index follows, and the changed users and the
    /// current members online here hear of it.
    fn member_change(&mut self, n: &ImGroupChangeMemberNotify, pdu: &Pdu, out: &mut Actions<C>) {
        // GroupModifyType: 1 add, 2 delete.
        let (added, removed): (&[u32], &[u32]) = match n.change_type {
            1 => (&n.chg_user_id_list, &[]),
            2 => (&[], &n.chg_user_id_list),
            other => {
                warn!(
                    change_type = other,
                    group = n.group_id,
                    "member change of unknown type"
                );
                return;
            }
        };
        let changes = self.groups.change(n.group_id, added, removed);
        self.report_subscriptions(changes, out);
        if !self.pending.is_empty() {
            // A login under way may carry groups read before this change.
            let now = self.now();
            self.member_changes
                .record(n.chg_user_id_list.iter().copied(), now);
        }
        // A changed user online here whose groups are still loading: the
        // list in flight may have been read before this change, and would
        // then replace the index without it. Ask again; db_proxy answers
        // in order on the link, so this answer comes last and wins.
        let loading: Vec<(u32, C)> = n
            .chg_user_id_list
            .iter()
            .filter(|&&u| !self.groups.is_loaded(u))
            .filter_map(|&u| self.presence.sessions(u).next().map(|c| (u, c)))
            .collect();
        for (user, conn) in loading {
            debug!(
                user,
                group = n.group_id,
                "member change while loading groups; reloading"
            );
            self.load_groups(user, conn, out);
        }
        let mut told: HashSet<u32> = HashSet::new();
        for &user in n.chg_user_id_list.iter().chain(&n.cur_user_id_list) {
            if told.insert(user) {
                self.deliver(user, None, pdu, out);
            }
        }
    }

    /// After db_proxy changed a group's members (or created a group): the
    /// notice for everyone concerned, here and on the other msg_servers.
    fn announce_member_change(&mut self, n: ImGroupChangeMemberNotify, out: &mut Actions<C>) {
        let pdu = Command::GroupChangeMemberNotify.pdu(0, &n);
        self.member_change(&n, &pdu, out);
        self.send_upstream(Upstream::Route, pdu, out);
    }

    /// Groups with a member online here.
    #[must_use]
    pub fn hosted_groups(&self) -> usize {
        self.groups.group_count()
    }

    // ----- replies from db_proxy and route_server --------------------------

    fn reply_pdu(&mut self, upstream: Upstream, pdu: &Pdu, mut msg: Message) -> Actions<C> {
        let mut out = Vec::new();
        if let Message::OtherStopRecvPacket(_) = msg {
            info!(?upstream, "upstream is shutting down");
            return out;
        }
        if let Message::LoginResDevicetoken(r) = &msg
            && r.attach_data.is_none()
        {
            // db_proxy removed a token push_server found invalid.
            return out;
        }
        let Some(p) = self.take_pending(&mut msg) else {
            debug!(?upstream, key = %pdu.key(), "reply without a pending request");
            self.stats.stale_replies += 1;
            return out;
        };
        if let (Some(sent), Some(now)) = (p.sent, self.mono) {
            self.reply_times[p.upstream.slot()]
                .observe_duration(now.saturating_duration_since(sent));
        }
        self.release(&p, &mut out);
        match (p.kind, msg) {
            (PendingKind::Push(step), msg) => self.push_reply(p, step, msg, &mut out),
            (
                PendingKind::Login {
                    client_type,
                    online_status,
                    changes_at,
                },
                Message::OtherValidateRsp(rsp),
            ) => {
                let login = ValidatedLogin {
                    client_type,
                    online_status,
                    changes_at,
                };
                self.validated(p, login, rsp, &mut out);
            }
            (PendingKind::Message, Message::MsgData(m)) => self.stored_message(p, m, &mut out),
            (PendingKind::UserGroups(user), Message::OtherUserGroupsRsp(rsp)) => {
                self.groups_loaded(user, &rsp, &mut out);
            }
            (PendingKind::FileStatus, Message::BuddyListUsersStatusResponse(rsp)) => {
                self.file_status_answered(p, &rsp, &mut out);
            }
            (PendingKind::FileTransfer(link), Message::OtherFileTransferRsp(rsp)) => {
                self.file_transfer_answered(p, link, rsp, &mut out);
            }
            (_, Message::OtherRequestFailed(f)) => {
                let code = RequestFailedCode::try_from(i32::try_from(f.result_code).unwrap_or(1))
                    .unwrap_or(RequestFailedCode::RequestFailedServerError);
                info!(conn = ?p.conn, user_id = p.user_id, code = f.result_code,
                    reason = f.reason.as_deref().unwrap_or(""), "upstream could not serve a request");
                self.fail_pending(
                    p,
                    ResultType::RefuseReasonNoDbServer,
                    code,
                    "the upstream server could not serve the request",
                    &mut out,
                );
            }
            (PendingKind::Reply(expected), mut msg) if msg.command() == Some(expected) => {
                if !self.conns.contains_key(&p.conn) {
                    self.stats.stale_replies += 1;
                    return out;
                }
                self.complete_file_reply(&mut msg);
                self.reply_side_effects(&p, &msg, &mut out);
                out.push(Action::Send(p.conn, msg.to_pdu(p.seq)));
            }
            (kind, msg) => {
                warn!(?kind, command = ?msg.command(), "reply of the wrong type");
                self.stats.stale_replies += 1;
                self.fail_pending(
                    p,
                    ResultType::RefuseReasonNoDbServer,
                    RequestFailedCode::RequestFailedServerError,
                    "the upstream server answered with the wrong reply",
                    &mut out,
                );
            }
        }
        out
    }

    /// Answers a request that will get no reply: a login with TeamTalk's
    /// refusal code `refusal`; anything else with its failure answer
    /// (computed from the request when it was forwarded).
    fn fail_pending(
        &mut self,
        p: Pending<C>,
        refusal: ResultType,
        code: RequestFailedCode,
        reason: &str,
        out: &mut Actions<C>,
    ) {
        if let PendingKind::Push(step) = p.kind {
            self.push_failed(step);
            return;
        }
        self.stats.forward_failed += 1;
        if p.kind == PendingKind::FileStatus {
            // Not knowing where the receiver is, the file goes offline.
            self.file_status_failed(p, out);
            return;
        }
        if let PendingKind::UserGroups(user) = p.kind {
            warn!(user, reason, "could not load the user's groups; retrying");
            self.groups_to_load.insert(user);
            return;
        }
        if !self.conns.contains_key(&p.conn) {
            return;
        }
        match p.kind {
            PendingKind::Login { .. } => self.refuse_login(p.conn, p.seq, refusal, out),
            // Nobody waits for this one: try again at the next tick.
            PendingKind::UserGroups(user) => {
                self.groups_to_load.insert(user);
            }
            _ => self.apply_failure(p.conn, p.seq, p.request, p.on_failure, code, reason, out),
        }
    }

    /// Answers a client request that this msg_server cannot serve, as
    /// [`rules::failure`](crate::rules::failure) prescribes.
    #[allow(clippy::too_many_arguments)]
    fn fail_request(
        &mut self,
        conn: C,
        seq: u16,
        user_id: u32,
        request: &Message,
        code: RequestFailedCode,
        reason: &str,
        out: &mut Actions<C>,
    ) {
        match failure_reply(request, user_id, seq) {
            Some(answer) => {
                self.apply_failure(conn, seq, request.key(), answer, code, reason, out);
            }
            // Not a request (a client sending a notice only servers send):
            // nothing waits for an answer.
            None => debug!(?conn, user_id, key = %request.key(), "not a request; ignored"),
        }
    }

    /// A failure answer on the wire: the reply with its failure code, or
    /// `IMRequestFailed` (for clients that understand our extension) and
    /// a close, when the reply type cannot say "failed".
    #[allow(clippy::too_many_arguments)]
    fn apply_failure(
        &mut self,
        conn: C,
        seq: u16,
        request: CommandKey,
        answer: FailureAnswer,
        code: RequestFailedCode,
        reason: &str,
        out: &mut Actions<C>,
    ) {
        match answer {
            FailureAnswer::Reply(pdu) => out.push(Action::Send(conn, pdu)),
            FailureAnswer::Close => {
                info!(?conn, key = %request, reason, "closing the session: its request failed and the reply cannot say so");
                out.push(Action::Send(
                    conn,
                    request_failed(request, None, code, reason, seq),
                ));
                self.end_session(conn, out);
                out.push(Action::Close { conn, notice: None });
            }
        }
    }

    fn take_pending(&mut self, msg: &mut Message) -> Option<Pending<C>> {
        let attached = msg.attached_mut()?;
        let raw = attached.attach_data()?.clone();
        attached.set_attach_data(None);
        let attach = Attach::decode(&raw).ok()?;
        self.pending.remove(&attach.handle)
    }

    fn reply_side_effects(&mut self, p: &Pending<C>, msg: &Message, out: &mut Actions<C>) {
        match msg {
            Message::BuddyListRemoveSessionRes(rsp) if rsp.result_code == 0 => {
                let notify = ImRemoveSessionNotify {
                    user_id: p.user_id,
                    session_type: rsp.session_type,
                    session_id: rsp.session_id,
                };
                let notify = Command::BuddyListRemoveSessionNotify.pdu(0, &notify);
                self.deliver(p.user_id, Some(p.conn), &notify, out);
                self.send_upstream(Upstream::Route, notify, out);
            }
            // Nothing added or removed (all were in already, or out):
            // nothing to announce.
            Message::GroupChangeMemberResponse(rsp)
                if rsp.result_code == 0 && !rsp.chg_user_id_list.is_empty() =>
            {
                let n = ImGroupChangeMemberNotify {
                    user_id: p.user_id,
                    change_type: rsp.change_type,
                    group_id: rsp.group_id,
                    cur_user_id_list: rsp.cur_user_id_list.clone(),
                    chg_user_id_list: rsp.chg_user_id_list.clone(),
                };
                self.announce_member_change(n, out);
            }
            Message::GroupCreateResponse(rsp) if rsp.result_code == 0 => {
                if let Some(group_id) = rsp.group_id {
                    // TeamTalk tells nobody; every msg_server must learn
                    // the new members to deliver the group's messages, so
                    // the creation is announced as an addition.
                    let n = ImGroupChangeMemberNotify {
                        user_id: p.user_id,
                        change_type: 1,
                        group_id,
                        cur_user_id_list: rsp.user_id_list.clone(),
                        chg_user_id_list: rsp.user_id_list.clone(),
                    };
                    self.announce_member_change(n, out);
                }
            }
            Message::BuddyListChangeSignInfoResponse(rsp) if rsp.result_code == 0 => {
                let notify = teamtalk_proto::pb::im::buddy::ImSignInfoChangedNotify {
                    changed_user_id: p.user_id,
                    sign_info: rsp.sign_info.clone().unwrap_or_default(),
                };
                // route_server sends it back to every msg_server, this one
                // included, which then tells its clients.
                self.send_upstream(
                    Upstream::Route,
                    Command::BuddyListSignInfoChangedNotify.pdu(0, &notify),
                    out,
                );
            }
            _ => {}
        }
    }

    fn validated(
        &mut self,
        p: Pending<C>,
        login: ValidatedLogin,
        mut rsp: teamtalk_proto::pb::im::server::ImValidateRsp,
        out: &mut Actions<C>,
    ) {
        let ValidatedLogin {
            client_type,
            online_status,
            changes_at,
        } = login;
        if !self.conns.contains_key(&p.conn) {
            debug!(conn = ?p.conn, "validated a session that has gone");
            return;
        }
        let user = match (rsp.result_code, rsp.user_info) {
            (0, Some(user)) => user,
            (code, _) => {
                if let Some(held_back) = self.refusal_log.pass_secs(self.now) {
                    info!(conn = ?p.conn, user = %clip(&rsp.user_name), code, held_back,
                        "login refused by db_proxy");
                } else {
                    debug!(conn = ?p.conn, user = %clip(&rsp.user_name), code, "login refused by db_proxy");
                }
                self.refuse_login(p.conn, p.seq, ResultType::RefuseReasonDbValidateFailed, out);
                return;
            }
        };
        let user_id = user.user_id;
        self.push
            .nicks
            .insert(user_id, user.user_nick_name.as_str().into());
        if let Some(kick) = self.presence.login(user_id, client_type, p.conn) {
            self.kick(kick.session, user_id, kick.reason, out);
        }
        let kick_elsewhere = ImServerKickUser {
            user_id,
            client_type: client_type as i32,
            reason: KickReason::DuplicateUser.code(),
        };
        self.send_upstream(
            Upstream::Route,
            Command::OtherServerKickUser.pdu(0, &kick_elsewhere),
            out,
        );
        if let Some(state) = self.conns.get_mut(&p.conn) {
            state.user = Some((user_id, client_type));
            state.online_status = online_status;
        }
        self.went_online(user_id, client_type, out);
        if !self.groups.is_loaded(user_id) {
            // Our db_proxy read them with the login: indexed at once,
            // unless a change about the user passed meanwhile (it was not
            // online here to apply it to).
            match rsp.groups.take() {
                Some(g) if !self.member_changes.changed_since(user_id, changes_at) => {
                    let changes = self.groups.load(user_id, g.group_id_list);
                    self.report_subscriptions(changes, out);
                }
                _ => self.load_groups(user_id, p.conn, out),
            }
        }
        self.stats.logins_ok += 1;
        let reply = ImLoginRes {
            server_time: self.now(),
            result_code: ResultType::RefuseReasonNone as i32,
            result_string: Some(String::new()),
            online_status: Some(online_status),
            user_info: Some(user),
        };
        out.push(Action::Accept {
            conn: p.conn,
            user_id,
            client_type,
            reply: Command::LoginResUserlogin.pdu(p.seq, &reply),
        });
    }

    // ----- PDUs relayed by route_server ------------------------------------

    /// A PDU route_server relayed from another msg_server: delivered to
    /// the local sessions of its audience ([`rules::relay`]), except the
    /// few that carry instructions rather than content (kicks, the answer
    /// to a status query).
    ///
    /// [`rules::relay`]: crate::rules::relay
    fn route_pdu(&mut self, pdu: &Pdu, msg: Message) -> Actions<C> {
        let mut out = Vec::new();
        match msg {
            Message::OtherLoginStatusNotify(m) => {
                let notify = ImpcLoginStatusNotify {
                    user_id: m.user_id,
                    login_stat: if m.login_status == 1 {
                        UserStatType::UserStatusOnline as i32
                    } else {
                        UserStatType::UserStatusOffline as i32
                    },
                };
                if let Some(mobile) = self.presence.session(m.user_id, ClientClass::Mobile) {
                    let notify = Command::BuddyListPcLoginStatusNotify.pdu(0, &notify);
                    out.push(Action::Send(mobile, notify));
                    self.stats.delivered += 1;
                }
            }
            Message::OtherServerKickUser(m) => {
                let class = if m.reason == KickReason::MobileKick.code() {
                    ClientClass::Pc
                } else {
                    ClientClass::of(m.client_type as u32)
                };
                if let Some(old) = self.presence.session(m.user_id, class) {
                    self.presence.logout(m.user_id, old);
                    let reason = if m.reason == KickReason::MobileKick.code() {
                        KickReason::MobileKick
                    } else {
                        KickReason::DuplicateUser
                    };
                    self.kick(old, m.user_id, reason, &mut out);
                }
            }
            msg @ (Message::BuddyListUsersStatusResponse(_) | Message::OtherRequestFailed(_)) => {
                return self.reply_pdu(Upstream::Route, pdu, msg);
            }
            Message::GroupChangeMemberNotify(n) => self.member_change(&n, pdu, &mut out),
            msg => match audience(&msg) {
                Some(Audience::Group(group)) => self.deliver_to_group(group, None, pdu, &mut out),
                Some(Audience::Users(users)) => {
                    self.deliver(users[0], None, pdu, &mut out);
                    if users[1] != users[0] {
                        self.deliver(users[1], None, pdu, &mut out);
                    }
                }
                Some(Audience::User(user)) => self.deliver(user, None, pdu, &mut out),
                Some(Audience::PcsOf(user)) => self.deliver_pc(user, pdu, &mut out),
                Some(Audience::Everyone) => {
                    let all: Vec<C> = self.logged_in_sessions(|_| true);
                    self.send_all(&all, pdu, &mut out);
                }
                Some(Audience::PresenceWatchers) => {
                    let watchers: Vec<C> = self.presence_watchers.iter().copied().collect();
                    self.send_all(&watchers, pdu, &mut out);
                }
                other => {
                    debug!(command = ?msg.command(), audience = ?other,
                        "route pdu not handled by this msg_server");
                }
            },
        }
        out
    }

    // ----- helpers ---------------------------------------------------------

    fn logged_in_sessions(&self, class: impl Fn(u32) -> bool) -> Vec<C> {
        self.conns
            .iter()
            .filter_map(|(c, s)| s.user.filter(|(_, ct)| class(*ct)).map(|_| *c))
            .collect()
    }

    fn send_all(&mut self, conns: &[C], pdu: &Pdu, out: &mut Actions<C>) {
        for c in conns {
            out.push(Action::Send(*c, pdu.clone()));
        }
        self.stats.delivered += conns.len() as u64;
    }

    /// Sends `pdu` to every local session of `user_id` except `skip`.
    fn deliver(&mut self, user_id: u32, skip: Option<C>, pdu: &Pdu, out: &mut Actions<C>) {
        let targets: Vec<C> = self
            .presence
            .sessions(user_id)
            .filter(|c| Some(*c) != skip)
            .collect();
        self.send_all(&targets, pdu, out);
    }

    /// Sends `pdu` to the links of `upstream` it belongs on: registration
    /// and load go to every login_server; presence and kicks to every
    /// route_server (each keeps the whole user map); everything else to
    /// one link, the first of its kind that is up (TeamTalk's "master").
    fn send_upstream(&mut self, upstream: Upstream, pdu: Pdu, out: &mut Actions<C>) {
        let to_all = match upstream {
            Upstream::Login => true,
            Upstream::Route => [
                Command::OtherUserStatusUpdate,
                Command::OtherOnlineUserInfo,
                Command::OtherServerKickUser,
                Command::OtherGroupSubscription,
            ]
            .iter()
            .any(|c| pdu.is(c.key())),
            Upstream::Db | Upstream::File | Upstream::Push => false,
        };
        let targets: Vec<LinkId> = if to_all {
            self.up_links(upstream).collect()
        } else {
            self.up_links(upstream).take(1).collect()
        };
        if targets.is_empty() {
            debug!(?upstream, key = %pdu.key(), "link down; not sent");
            self.stats.forward_failed += 1;
        }
        for id in targets {
            out.push(Action::Link(id, pdu.clone()));
        }
    }

    /// Records a pending request and sends `msg` upstream with its id in
    /// `attach_data`. Returns false when the request could not be sent.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        conn: C,
        seq: u16,
        user_id: u32,
        upstream: Upstream,
        kind: PendingKind,
        msg: Message,
        out: &mut Actions<C>,
    ) -> bool {
        self.forward_with(
            conn,
            seq,
            user_id,
            upstream,
            kind,
            msg,
            Forward::default(),
            out,
        )
    }

    /// [`Self::forward`] with the options of [`Forward`].
    #[allow(clippy::too_many_arguments)]
    fn forward_with(
        &mut self,
        conn: C,
        seq: u16,
        user_id: u32,
        upstream: Upstream,
        kind: PendingKind,
        mut msg: Message,
        options: Forward,
        out: &mut Actions<C>,
    ) -> bool {
        let link_up = |app: &Self, l: LinkId| app.links.iter().any(|(x, up)| x.id == l && *up);
        let reachable = match options.link {
            Some(l) => link_up(self, l),
            None => self.is_up(upstream),
        };
        if !reachable || self.pending.len() >= self.caps.max_pending {
            warn!(
                ?conn,
                ?upstream,
                pending = self.pending.len(),
                "cannot forward request"
            );
            self.stats.forward_failed += 1;
            return false;
        }
        let Some(attached) = msg.attached_mut() else {
            warn!(command = ?msg.command(), "request without attach_data cannot be tracked");
            return false;
        };
        let id = loop {
            self.next_request = self.next_request.wrapping_add(1);
            if !self.pending.contains_key(&self.next_request) {
                break self.next_request;
            }
        };
        let Some(link) = options.link.or_else(|| self.up_links(upstream).next()) else {
            return false;
        };
        attached.set_attach_data(Some(Attach::handle(id).encode()));
        let created = self.now();
        let on_failure = options
            .on_failure
            .or_else(|| failure_reply(&msg, user_id, seq))
            .unwrap_or(FailureAnswer::Close);
        let request = msg.key();
        let pdu = msg.to_pdu(seq);
        let bytes = pdu.wire_len();
        let holds_credit = match &mut self.credit {
            Some((c, taken)) if *c == conn && !*taken => {
                *taken = true;
                true
            }
            _ => false,
        };
        self.inflight_bytes += bytes;
        if let Some(state) = self.conns.get_mut(&conn) {
            state.inflight_bytes += bytes;
        }
        self.pending.insert(
            id,
            Pending {
                conn,
                seq,
                user_id,
                upstream,
                link,
                kind,
                created,
                sent: self.mono,
                request,
                on_failure,
                bytes,
                holds_credit,
                offer: options.offer,
                push: options.push,
            },
        );
        out.push(Action::Link(link, pdu));
        true
    }

    // ----- credit: each client session's share of upstream capacity ---------

    /// A pending request ended (answered, failed or expired): its bytes
    /// leave the budgets and its credit is paid back.
    fn release(&mut self, p: &Pending<C>, out: &mut Actions<C>) {
        self.inflight_bytes = self.inflight_bytes.saturating_sub(p.bytes);
        if let Some(state) = self.conns.get_mut(&p.conn) {
            state.inflight_bytes = state.inflight_bytes.saturating_sub(p.bytes);
        }
        if p.holds_credit {
            self.repay(p.conn, out);
        }
        self.pay_owed(out);
    }

    /// Pays one credit back to `conn`, or owes it while the session or the
    /// server is over its in-flight budget.
    fn repay(&mut self, conn: C, out: &mut Actions<C>) {
        let server_full = self.inflight_bytes >= self.caps.global_inflight;
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        if server_full || state.inflight_bytes >= self.caps.session_inflight {
            state.owed += 1;
            self.owed.insert(conn);
            return;
        }
        out.push(Action::Grant(conn, 1));
    }

    /// Pays what is owed to sessions now under their budget (and only while
    /// the server is under its own).
    fn pay_owed(&mut self, out: &mut Actions<C>) {
        if self.owed.is_empty() || self.inflight_bytes >= self.caps.global_inflight {
            return;
        }
        let owed: Vec<C> = self.owed.iter().copied().collect();
        for conn in owed {
            let Some(state) = self.conns.get_mut(&conn) else {
                self.owed.remove(&conn);
                continue;
            };
            if state.inflight_bytes < self.caps.session_inflight {
                let n = std::mem::take(&mut state.owed);
                self.owed.remove(&conn);
                if n > 0 {
                    out.push(Action::Grant(conn, n));
                }
            }
        }
    }

    fn refuse_login(&mut self, conn: C, seq: u16, code: ResultType, out: &mut Actions<C>) {
        self.stats.logins_refused += 1;
        self.logins_refused.inc(code.as_str_name());
        let reply = ImLoginRes {
            server_time: self.now(),
            result_code: code as i32,
            result_string: Some(refusal_text(code).to_owned()),
            online_status: None,
            user_info: None,
        };
        out.push(Action::Refuse {
            conn,
            reply: Command::LoginResUserlogin.pdu(seq, &reply),
        });
    }

    /// Logs out a session this App has decided to close, at once rather
    /// than when the runner reports the connection gone: from here on its
    /// user is offline (announced upstream), gets no deliveries through it,
    /// and needs no groups loaded for it (a closing session's groups were
    /// otherwise asked of db_proxy at every tick until it ended, found by
    /// the `msg_app` fuzz target). Later PDUs from it are dropped as from a
    /// session that is not logged in.
    fn end_session(&mut self, conn: C, out: &mut Actions<C>) {
        self.presence_watchers.remove(&conn);
        if let Some(state) = self.conns.get_mut(&conn)
            && let Some((uid, ct)) = state.user.take()
        {
            self.presence.logout(uid, conn);
            self.went_offline(uid, ct, out);
            self.maybe_forget_groups(uid, out);
        }
    }

    fn kick(&mut self, conn: C, user_id: u32, reason: KickReason, out: &mut Actions<C>) {
        if let Some(held_back) = self.kick_log.pass_secs(self.now) {
            info!(?conn, user_id, ?reason, held_back, "kicking session");
        } else {
            debug!(?conn, user_id, ?reason, "kicking session");
        }
        self.presence_watchers.remove(&conn);
        if let Some(state) = self.conns.get_mut(&conn)
            && let Some((uid, ct)) = state.user.take()
        {
            self.went_offline(uid, ct, out);
            self.maybe_forget_groups(uid, out);
        }
        let notice = ImKickUser {
            user_id,
            kick_reason: reason.code() as i32,
        };
        out.push(Action::Close {
            conn,
            notice: Some(Command::LoginKickUser.pdu(0, &notice)),
        });
    }

    fn went_online(&mut self, user_id: u32, client_type: u32, out: &mut Actions<C>) {
        self.logged_in += 1;
        self.status_update(user_id, client_type, true, out);
    }

    fn went_offline(&mut self, user_id: u32, client_type: u32, out: &mut Actions<C>) {
        self.logged_in = self.logged_in.saturating_sub(1);
        self.status_update(user_id, client_type, false, out);
    }

    fn status_update(
        &mut self,
        user_id: u32,
        client_type: u32,
        online: bool,
        out: &mut Actions<C>,
    ) {
        let cnt = ImUserCntUpdate {
            user_action: if online { 1 } else { 2 },
            user_id,
        };
        self.send_upstream(
            Upstream::Login,
            Command::OtherUserCntUpdate.pdu(0, &cnt),
            out,
        );
        let status = ImUserStatusUpdate {
            user_status: if online {
                UserStatType::UserStatusOnline as u32
            } else {
                UserStatType::UserStatusOffline as u32
            },
            user_id,
            client_type: client_type as i32,
        };
        self.send_upstream(
            Upstream::Route,
            Command::OtherUserStatusUpdate.pdu(0, &status),
            out,
        );
    }
}

impl<C: Copy + Eq + Hash + Debug> MsgApp<C> {
    /// Handles a client PDU, which spent one of its session's credits:
    /// the credit is paid back at once unless the PDU became a request
    /// waiting upstream, which pays it back when it ends ([`release`]).
    /// So a session can have at most [`CLIENT_PDU_CREDIT`] requests in
    /// flight, and none while it has too many bytes in flight: beyond, its
    /// socket is simply not read (TCP backpressure on that client alone),
    /// and a shared upstream link never overflows because of it.
    ///
    /// [`release`]: Self::release
    fn with_credit(&mut self, conn: C, f: impl FnOnce(&mut Self) -> Actions<C>) -> Actions<C> {
        self.credit = Some((conn, false));
        let mut out = f(self);
        if let Some((conn, taken)) = self.credit.take()
            && !taken
        {
            self.repay(conn, &mut out);
        }
        out
    }

    /// Adds `teamtalk_msg_upstream_reply_seconds`, one histogram per
    /// upstream kind.
    pub(crate) fn collect_reply_times(&self, out: &mut Scrape) {
        for kind in Upstream::KINDS {
            out.histogram(
                "teamtalk_msg_upstream_reply_seconds",
                "Time from forwarding a client's request upstream to the reply.",
                &[("kind", kind.label())],
                &self.reply_times[kind.slot()].snapshot(),
            );
        }
    }

    /// Handles one input: what [`runtime::App::handle`] does, for any
    /// connection id type (tests use integers).
    pub fn step(&mut self, now: Now, input: Input<'_, NoJob, C>, out: &mut Out<NoJob, C>) {
        self.now = now.unix();
        self.mono = Some(now.mono);
        let actions = match input {
            Input::Listening { port, addr } => {
                if port == self.ws_port_id {
                    self.registration.ws_port = Some(addr.port());
                } else if port == CLIENT_PORT && self.registration.port == 0 {
                    self.registration.port = addr.port();
                }
                return;
            }
            Input::Opened { conn, peer, .. } => {
                self.client_open_from(conn, peer);
                return;
            }
            Input::LoginRequest { conn, pdu } => {
                self.with_credit(conn, |app| app.login_request(conn, pdu))
            }
            Input::Pdu { conn, pdu } => self.with_credit(conn, |app| app.client_pdu(conn, pdu)),
            Input::Closed { conn, reason } => {
                debug!(?conn, %reason, "client session closed");
                self.client_closed(conn)
            }
            Input::LinkUp(link) => self.link_up(link),
            Input::LinkDown(link, reason) => {
                debug!(?link, %reason, "link down");
                self.link_down(link)
            }
            Input::LinkUnreachable(link, reason) => {
                if let Some(l) = self.link(link) {
                    debug!(upstream = ?l.kind, addr = %l.addr, %reason, "upstream unreachable; retrying");
                }
                return;
            }
            Input::LinkPdu(link, pdu) => self.upstream_pdu(link, pdu),
            Input::Tick => self.tick(),
            Input::Http { conn, .. } => {
                warn!(?conn, "HTTP request on msg_server; closing");
                vec![Action::Close { conn, notice: None }]
            }
            Input::Done(job) => match job {},
            Input::Stopping => return,
        };
        // Closes go last, so every answer queued for a session in this step
        // (several requests failing at once) reaches it before the close.
        let (closes, rest): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Close { .. }));
        out.extend(rest);
        out.extend(closes);
    }
}

impl runtime::App for MsgApp<Conn> {
    type Job = NoJob;
    type Done = NoJob;

    fn name(&self) -> &'static str {
        "msg_server"
    }

    fn handle(&mut self, now: Now, input: Input<'_, NoJob>, out: &mut Out<NoJob>) {
        self.step(now, input, out);
    }

    fn collect(&self, out: &mut Scrape) {
        self.collect_push(out);
        let s = self.stats;
        out.counter(
            "teamtalk_msg_logins_ok_total",
            "Client logins accepted.",
            &[],
            s.logins_ok,
        );
        self.logins_refused.render(
            out,
            "teamtalk_msg_logins_refused_total",
            "Client logins refused, by result code.",
            &[],
            "reason",
        );
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
            (
                "teamtalk_msg_duplicates_total",
                "Resent messages db_proxy had already stored: acked with their first id, not stored again.",
                s.duplicates,
            ),
            (
                "teamtalk_msg_rate_limited_total",
                "Messages refused for exceeding the per-session rate limit (MsgRateLimit).",
                s.rate_limited,
            ),
            (
                "teamtalk_msg_files_offered_total",
                "File offers (0x0506) a file_server opened a task for.",
                s.files_offered,
            ),
            (
                "teamtalk_msg_files_refused_total",
                "File offers and offline-file records refused (invalid, no file_server, refused by it).",
                s.files_refused,
            ),
        ] {
            out.counter(name, help, &[], v);
        }
        out.gauge(
            "teamtalk_msg_pending_requests",
            "Requests waiting for an upstream reply.",
            &[],
            self.pending.len() as f64,
        );
        out.gauge(
            "teamtalk_msg_logged_in_sessions",
            "Logged-in client sessions.",
            &[],
            f64::from(self.logged_in),
        );
        self.collect_reply_times(out);
        for (l, up) in &self.links {
            let addr = l.addr.to_string();
            out.gauge(
                "teamtalk_msg_link_up",
                "1 while the link to this upstream server is up, else 0.",
                &[("kind", l.kind.label()), ("addr", &addr)],
                if *up { 1.0 } else { 0.0 },
            );
        }
    }

    fn health(&self, problems: &mut Vec<String>) {
        let files_configured = self.links.iter().any(|(l, _)| l.kind == Upstream::File);
        let kinds = Upstream::ALL
            .into_iter()
            .chain(files_configured.then_some(Upstream::File))
            .chain(self.push_configured().then_some(Upstream::Push));
        for kind in kinds {
            if !self.is_up(kind) {
                let addrs: Vec<String> = self
                    .links
                    .iter()
                    .filter(|(l, _)| l.kind == kind)
                    .map(|(l, _)| l.addr.to_string())
                    .collect();
                problems.push(format!(
                    "no {} link up ({})",
                    kind.daemon(),
                    addrs.join(", ")
                ));
            }
        }
    }
}

/// The idempotency key of a message (`IMMsgData.dedupe_key`): a resend
/// carries the same sender, recipient, type, content and the client's own
/// `create_time` and temporary `msg_id`, so it gets the same key and
/// db_proxy stores it once. Computed before msg_server overwrites the time
/// and id.
///
/// Layout (16 bytes): the client's `create_time` big-endian, then a keyed
/// BLAKE2b-96 over all those fields, each length-prefixed. The time comes
/// first because the store indexes keys by (sender, recipient, key): keys
/// of one conversation then arrive in ascending order and land on the last
/// page of that conversation's range, instead of a random page of an index
/// of up to a million keys (which cost a page read and a page write per
/// message; docs/performance.md, "The dedupe index").
fn dedupe_key(user_id: u32, m: &ImMsgData) -> Vec<u8> {
    use blake2::Digest;
    let mut h = blake2::Blake2b::<blake2::digest::consts::U12>::new();
    h.update(b"teamtalk-rs msg dedupe v2");
    for n in [
        user_id,
        m.to_session_id,
        m.msg_type as u32,
        m.create_time,
        m.msg_id,
    ] {
        h.update(n.to_be_bytes());
    }
    h.update((m.msg_data.len() as u64).to_be_bytes());
    h.update(&m.msg_data);
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&m.create_time.to_be_bytes());
    key.extend_from_slice(&h.finalize());
    key
}

fn refusal_text(code: ResultType) -> &'static str {
    match code {
        ResultType::RefuseReasonNone => "",
        ResultType::RefuseReasonNoMsgServer => "no msg_server available",
        ResultType::RefuseReasonMsgServerFull => "msg_server is full",
        ResultType::RefuseReasonNoDbServer => "db_proxy_server is unreachable",
        ResultType::RefuseReasonNoLoginServer => "login_server is unreachable",
        ResultType::RefuseReasonNoRouteServer => "route_server is unreachable",
        ResultType::RefuseReasonDbValidateFailed => "wrong user name or password",
        ResultType::RefuseReasonVersionTooOld => "client version too old",
    }
}

#[cfg(test)]
mod peer_addr_tests {
    use super::*;

    #[test]
    fn a_peer_address_reads_back_whole_in_half_the_room() {
        for a in ["192.0.2.7:40000", "[2001:db8::1]:40002"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(PeerAddr::from(a).get(), a);
        }
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            8000,
            7,
            2,
        ));
        assert_eq!(PeerAddr::from(scoped).get(), scoped);
        assert_eq!(std::mem::size_of::<Option<PeerAddr>>(), 16);
    }
}
