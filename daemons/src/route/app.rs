//! [`RouteApp`]: route_server's protocol as a pure state machine.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

use bytes::Bytes;
use prost::Message as _;
use teamtalk_conn::is_mobile;
use teamtalk_proto::pb::im::base_define::{ServerUserStat, UserStat, UserStatType};
use teamtalk_proto::pb::im::buddy::{ImUserStatNotify, ImUsersStatReq, ImUsersStatRsp};
use teamtalk_proto::pb::im::ext::RequestFailedCode;
use teamtalk_proto::pb::im::server::ImServerPcLoginStatusNotify;
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, info, warn};

use crate::metrics::Scrape;
use crate::rules::failure::request_failed;
use crate::rules::relay::{Audience, audience};
use crate::rules::sizing::{MAX_STATUS_IDS, fits_frame};
use crate::runtime::{self, Conn, Input, NoJob, Now, Out};

/// What [`RouteApp`] asks for: sends to msg_server connections.
pub type Action<C> = runtime::Action<NoJob, C>;

/// `login_status` of `CID_OTHER_LOGIN_STATUS_NOTIFY`: the user's PC is on.
const PC_LOGIN_ON: u32 = 1;
/// `login_status` of `CID_OTHER_LOGIN_STATUS_NOTIFY`: no PC session left.
const PC_LOGIN_OFF: u32 = 0;

/// Counters for metrics and tests. Every PDU that is not acted upon lands
/// in exactly one of the drop counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCounters {
    /// PDUs received from msg_servers (heartbeats excluded: the session
    /// absorbs them).
    pub received: u64,
    /// PDU copies sent to msg_servers (relays, notices and answers).
    pub sent: u64,
    /// Relayable PDUs none of whose recipients is online on another
    /// msg_server, so nobody got them.
    pub no_recipient: u64,
    /// Notices of a feature route_server does not relay. None is left
    /// (group-member and file notices are relayed now); the counter stays
    /// for the metric's sake.
    pub unsupported: u64,
    /// Commands a msg_server has no business sending to route_server.
    pub unexpected: u64,
    /// Bodies that do not decode or carry impossible values.
    pub malformed: u64,
    /// Logouts for sessions route_server never saw log in.
    pub stray_offline: u64,
    /// Requests answered with `IMRequestFailed`: a users-status request
    /// naming more than [`MAX_STATUS_IDS`] users, or whose reply would not
    /// fit a frame.
    pub refused: u64,
}

/// One user's sessions on one msg_server: client type -> number of
/// sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sessions(BTreeMap<u32, u32>);

impl Sessions {
    fn pc(&self) -> u32 {
        self.0
            .iter()
            .filter(|&(&ct, _)| !is_mobile(ct))
            .map(|(_, &n)| n)
            .sum()
    }

    fn add(&mut self, client_type: u32) {
        let n = self.0.entry(client_type).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// False when there was no such session.
    fn remove(&mut self, client_type: u32) -> bool {
        match self.0.get_mut(&client_type) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.0.remove(&client_type);
                true
            }
            None => false,
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// route_server's state and rules. See the [module docs](super).
///
/// The driver reports connections with [`RouteApp::server_connected`] /
/// [`RouteApp::server_disconnected`] and every PDU with
/// [`RouteApp::handle_pdu`], then performs the returned [`Action`]s in
/// order. `C` identifies a msg_server connection (the reactor's `ConnId`
/// in the daemon, integers in tests).
#[derive(Debug)]
pub struct RouteApp<C> {
    /// Connected msg_servers, in connection order (deterministic fan-out).
    servers: Vec<C>,
    /// The peers that announced their users (0x0708, what every msg_server
    /// sends when its link comes up): msg_servers, as opposed to a peer
    /// such as http_msg_server that only relays notices.
    announced: HashSet<C>,
    /// msg_server -> users with at least one session there.
    hosted: HashMap<C, HashSet<u32>>,
    /// user -> msg_server -> sessions.
    users: HashMap<u32, HashMap<C, Sessions>>,
    /// group -> the msg_servers hosting a member online
    /// (`IMGroupSubscription`).
    subscribers: HashMap<u32, HashSet<C>>,
    /// msg_server -> the groups it subscribed to.
    subscriptions: HashMap<C, HashSet<u32>>,
    counters: RouteCounters,
}

/// Most group subscriptions one msg_server may hold; beyond, a
/// subscription is refused with a warning (the msg_server is
/// authenticated, so this only guards against a broken one).
pub(crate) const MAX_SUBSCRIPTIONS_PER_SERVER: usize = 1_000_000;

impl<C> Default for RouteApp<C> {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            announced: HashSet::new(),
            hosted: HashMap::new(),
            users: HashMap::new(),
            subscribers: HashMap::new(),
            subscriptions: HashMap::new(),
            counters: RouteCounters::default(),
        }
    }
}

impl<C: Copy + Eq + Hash + Debug> RouteApp<C> {
    /// No msg_servers, nobody online.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A msg_server connected. From now on it receives the directory-wide
    /// notices (presence, signature changes), even before its snapshot.
    pub fn server_connected(&mut self, conn: C) {
        if !self.servers.contains(&conn) {
            self.servers.push(conn);
            self.hosted.insert(conn, HashSet::new());
        }
    }

    /// A msg_server's connection ended: its users are forgotten, and those
    /// left without any PC session are announced offline.
    pub fn server_disconnected(&mut self, conn: C) -> Vec<Action<C>> {
        let Some(users) = self.hosted.remove(&conn) else {
            return Vec::new();
        };
        self.servers.retain(|&s| s != conn);
        self.announced.remove(&conn);
        self.unsubscribe_all(conn);
        let affected: BTreeSet<u32> = users.into_iter().collect();
        let before = self.pc_counts(&affected);
        for &user in &affected {
            self.forget(user, conn);
        }
        let mut out = Vec::new();
        self.announce_changes(&before, &mut out);
        out
    }

    /// Handles one PDU from msg_server `from`.
    pub fn handle_pdu(&mut self, from: C, pdu: &Pdu) -> Vec<Action<C>> {
        self.server_connected(from);
        self.counters.received += 1;
        let msg = match Message::decode(pdu) {
            Ok(msg) => msg,
            Err(e) => {
                warn!(?from, error = %e, "undecodable PDU from msg_server dropped");
                self.counters.malformed += 1;
                return Vec::new();
            }
        };
        debug!(?from, cmd = ?msg.command(), seq = pdu.seq(), "pdu from msg_server");
        let mut out = Vec::new();
        match msg {
            Message::OtherOnlineUserInfo(info) => {
                self.announced.insert(from);
                self.replace_snapshot(from, &info.user_stat_list, &mut out);
            }
            Message::OtherUserStatusUpdate(u) => {
                self.status_update(from, u.user_status, u.user_id, u.client_type, &mut out);
            }
            Message::BuddyListUsersStatusRequest(req) => {
                let answer = self
                    .users_stat_rsp(pdu.seq(), req)
                    .unwrap_or_else(|failed| {
                        self.counters.refused += 1;
                        failed
                    });
                out.push(Action::Send(from, answer));
            }
            Message::OtherGroupSubscription(sub) => self.subscribe(from, &sub),
            ref m @ (Message::MsgData(_)
            | Message::MsgReadNotify(_)
            | Message::SwitchP2pCmd(_)
            | Message::OtherServerKickUser(_)
            | Message::BuddyListRemoveSessionNotify(_)
            | Message::BuddyListSignInfoChangedNotify(_)
            | Message::GroupChangeMemberNotify(_)
            | Message::FileNotify(_)) => match audience(m) {
                Some(Audience::Group(group)) => {
                    // One copy to each msg_server with a member online;
                    // each delivers to its own members.
                    self.relay_to_group(from, pdu, group, &[], &mut out);
                }
                Some(Audience::GroupAndUsers(group, users)) => {
                    self.relay_to_group(from, pdu, group, &users, &mut out);
                }
                Some(Audience::Everyone) => {
                    // Everyone, the sender included: its msg_server tells
                    // its own clients when this comes back.
                    self.broadcast(pdu, None, &mut out);
                }
                Some(a) => self.relay(from, pdu, a.users(), &mut out),
                None => {
                    warn!(?from, key = %pdu.key(), "relayed PDU of unknown type dropped");
                    self.counters.malformed += 1;
                }
            },
            Message::OtherRoleSet(r) => {
                debug!(
                    ?from,
                    master = r.master,
                    "msg_server set our role (informational)"
                );
            }
            Message::OtherHeartbeat(_) => {}
            other => {
                warn!(?from, key = ?other.key(), "unexpected command from msg_server dropped");
                self.counters.unexpected += 1;
            }
        }
        self.counters.sent += out.len() as u64;
        out
    }

    /// The counters so far.
    #[must_use]
    pub fn counters(&self) -> RouteCounters {
        self.counters
    }

    /// Connected peers: msg_servers, and others that relay through us
    /// (http_msg_server).
    #[must_use]
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Connected msg_servers: the peers that announced their users.
    #[must_use]
    pub fn msg_server_count(&self) -> usize {
        self.announced.len()
    }

    /// Users with at least one session anywhere.
    #[must_use]
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// PC sessions of `user` over all msg_servers.
    #[must_use]
    pub fn pc_sessions(&self, user: u32) -> u32 {
        self.users
            .get(&user)
            .map_or(0, |m| m.values().map(Sessions::pc).sum())
    }

    /// Sessions of `user` over all msg_servers, PC and mobile.
    #[must_use]
    pub fn sessions(&self, user: u32) -> u32 {
        self.users.get(&user).map_or(0, |m| {
            m.values().flat_map(|s| s.0.values()).copied().sum::<u32>()
        })
    }

    /// The msg_servers where `user` has a session, in connection order.
    #[must_use]
    pub fn hosts(&self, user: u32) -> Vec<C> {
        let Some(m) = self.users.get(&user) else {
            return Vec::new();
        };
        self.servers
            .iter()
            .copied()
            .filter(|s| m.contains_key(s))
            .collect()
    }

    /// TeamTalk's presence value for `user`: online only with a PC session.
    #[must_use]
    pub fn status(&self, user: u32) -> UserStatType {
        if self.pc_sessions(user) > 0 {
            UserStatType::UserStatusOnline
        } else {
            UserStatType::UserStatusOffline
        }
    }

    fn status_update(
        &mut self,
        from: C,
        status: u32,
        user: u32,
        client_type: i32,
        out: &mut Vec<Action<C>>,
    ) {
        let Ok(ct) = u32::try_from(client_type) else {
            warn!(
                ?from,
                user, client_type, "status update with a negative client type"
            );
            self.counters.malformed += 1;
            return;
        };
        let online = match UserStatType::try_from(i32::try_from(status).unwrap_or(-1)) {
            Ok(UserStatType::UserStatusOnline) => true,
            Ok(UserStatType::UserStatusOffline) => false,
            _ => {
                warn!(?from, user, status, "status update with an unknown status");
                self.counters.malformed += 1;
                return;
            }
        };
        let pc = !is_mobile(ct);
        debug!(?from, user, client_type = ct, online, "user status");
        if online {
            self.add_session(from, user, ct);
        } else if !self.remove_session(from, user, ct) {
            debug!(
                ?from,
                user,
                client_type = ct,
                "logout of an unknown session"
            );
            self.counters.stray_offline += 1;
        }
        let pc_left = self.pc_sessions(user);
        // Presence is directory-wide: every msg_server tells its PC clients.
        // A PC logout is not news while another PC session remains.
        if pc && (online || pc_left == 0) {
            let status = if online {
                UserStatType::UserStatusOnline
            } else {
                UserStatType::UserStatusOffline
            };
            self.broadcast(&stat_notify(user, status), None, out);
        }
        // The user's phones want to know whether a PC is on: after any
        // login while a PC is on (a phone that just arrived learns it), and
        // when the last PC goes.
        if online && pc_left > 0 {
            self.to_hosts(user, &pc_login_notify(user, PC_LOGIN_ON), out);
        } else if !online && pc && pc_left == 0 {
            self.to_hosts(user, &pc_login_notify(user, PC_LOGIN_OFF), out);
        }
    }

    fn replace_snapshot(&mut self, from: C, stats: &[ServerUserStat], out: &mut Vec<Action<C>>) {
        let mut affected: BTreeSet<u32> = self
            .hosted
            .get(&from)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        affected.extend(stats.iter().map(|s| s.user_id));
        let before = self.pc_counts(&affected);
        for &user in &affected {
            self.forget(user, from);
        }
        let mut taken = 0usize;
        for s in stats {
            match (
                UserStatType::try_from(s.status),
                u32::try_from(s.client_type),
            ) {
                (Ok(UserStatType::UserStatusOnline), Ok(ct)) => {
                    self.add_session(from, s.user_id, ct);
                    taken += 1;
                }
                (Ok(UserStatType::UserStatusOffline), Ok(_)) => {}
                _ => {
                    warn!(
                        ?from,
                        user = s.user_id,
                        status = s.status,
                        client_type = s.client_type,
                        "snapshot entry with an impossible status or client type skipped"
                    );
                    self.counters.malformed += 1;
                }
            }
        }
        debug!(?from, sessions = taken, "msg_server sent its online users");
        self.announce_changes(&before, out);
    }

    /// Announces users whose PC presence flipped since `before` was taken.
    fn announce_changes(&self, before: &BTreeMap<u32, u32>, out: &mut Vec<Action<C>>) {
        for (&user, &was) in before {
            let now = self.pc_sessions(user);
            let (status, login) = match (was > 0, now > 0) {
                (false, true) => (UserStatType::UserStatusOnline, PC_LOGIN_ON),
                (true, false) => (UserStatType::UserStatusOffline, PC_LOGIN_OFF),
                _ => continue,
            };
            self.broadcast(&stat_notify(user, status), None, out);
            self.to_hosts(user, &pc_login_notify(user, login), out);
        }
    }

    fn pc_counts(&self, users: &BTreeSet<u32>) -> BTreeMap<u32, u32> {
        users.iter().map(|&u| (u, self.pc_sessions(u))).collect()
    }

    fn add_session(&mut self, server: C, user: u32, client_type: u32) {
        self.users
            .entry(user)
            .or_default()
            .entry(server)
            .or_default()
            .add(client_type);
        self.hosted.entry(server).or_default().insert(user);
    }

    /// False when `server` had no such session of `user`.
    fn remove_session(&mut self, server: C, user: u32, client_type: u32) -> bool {
        let Some(per_server) = self.users.get_mut(&user) else {
            return false;
        };
        let Some(sessions) = per_server.get_mut(&server) else {
            return false;
        };
        let removed = sessions.remove(client_type);
        if sessions.is_empty() {
            self.forget(user, server);
        }
        removed
    }

    /// Drops every session of `user` on `server`.
    fn forget(&mut self, user: u32, server: C) {
        if let Some(per_server) = self.users.get_mut(&user) {
            per_server.remove(&server);
            if per_server.is_empty() {
                self.users.remove(&user);
            }
        }
        if let Some(h) = self.hosted.get_mut(&server) {
            h.remove(&user);
        }
    }

    /// The presence of the users `req` names, or (`Err`) the failure
    /// answer when it names more than [`MAX_STATUS_IDS`] or the reply would
    /// not fit a frame: 0x020b has no result field, so a failure is
    /// `IMRequestFailed` with the request's `attach_data`
    /// ([`crate::rules::failure`]). Before, such a reply was built, found too
    /// large to send and dropped, and the client waited forever.
    fn users_stat_rsp(&self, seq: u16, req: ImUsersStatReq) -> Result<Pdu, Pdu> {
        let refuse = |attach: Option<Bytes>, code, reason: &str| {
            // An attach_data of nearly a frame cannot come back either.
            let attach = attach.filter(|a| fits_frame(a.len() + 64));
            request_failed(
                Command::BuddyListUsersStatusRequest.key(),
                attach,
                code,
                reason,
                seq,
            )
        };
        if req.user_id_list.len() > MAX_STATUS_IDS {
            warn!(
                user = req.user_id,
                ids = req.user_id_list.len(),
                max = MAX_STATUS_IDS,
                "users-status request names too many users"
            );
            return Err(refuse(
                req.attach_data,
                RequestFailedCode::RequestFailedBadRequest,
                "too many user ids",
            ));
        }
        let server_query = req.user_id == 0;
        let rsp = ImUsersStatRsp {
            user_id: req.user_id,
            user_stat_list: req
                .user_id_list
                .iter()
                .map(|&user_id| UserStat {
                    user_id,
                    status: self.status(user_id) as i32,
                    // A server's query (msg_server's push path) also learns
                    // whether a phone is online; clients' replies stay
                    // TeamTalk's.
                    mobile_sessions: server_query
                        .then(|| self.sessions(user_id) - self.pc_sessions(user_id)),
                })
                .collect(),
            attach_data: req.attach_data,
        };
        let len = rsp.encoded_len();
        if !fits_frame(len) {
            warn!(
                user = rsp.user_id,
                bytes = len,
                "users-status reply would not fit a frame"
            );
            return Err(refuse(
                rsp.attach_data,
                RequestFailedCode::RequestFailedBadRequest,
                "reply would exceed the frame limit",
            ));
        }
        Ok(Command::BuddyListUsersStatusResponse.pdu(seq, &rsp))
    }

    /// Forwards `pdu` to the msg_servers hosting any of `recipients`, except
    /// `from`.
    fn relay(&mut self, from: C, pdu: &Pdu, recipients: &[u32], out: &mut Vec<Action<C>>) {
        let start = out.len();
        for &server in &self.servers {
            if server == from {
                continue;
            }
            let hosts_one = recipients.iter().any(|u| {
                self.users
                    .get(u)
                    .is_some_and(|per_server| per_server.contains_key(&server))
            });
            if hosts_one {
                out.push(Action::Send(server, pdu.clone()));
            }
        }
        if out.len() == start {
            debug!(?from, key = ?pdu.key(), ?recipients, "no recipient online elsewhere");
            self.counters.no_recipient += 1;
        }
    }

    /// A msg_server's group subscriptions changed.
    fn subscribe(&mut self, from: C, sub: &teamtalk_proto::pb::im::ext::ImGroupSubscription) {
        if sub.replace == Some(true) {
            self.unsubscribe_all(from);
        }
        let mine = self.subscriptions.entry(from).or_default();
        for &g in &sub.group_id_list {
            if sub.subscribe {
                if mine.len() >= MAX_SUBSCRIPTIONS_PER_SERVER {
                    warn!(?from, "group subscription over the limit refused");
                    self.counters.malformed += 1;
                    break;
                }
                if mine.insert(g) {
                    self.subscribers.entry(g).or_default().insert(from);
                }
            } else if mine.remove(&g)
                && let Some(servers) = self.subscribers.get_mut(&g)
            {
                servers.remove(&from);
                if servers.is_empty() {
                    self.subscribers.remove(&g);
                }
            }
        }
        debug!(?from, groups = mine.len(), "group subscriptions");
    }

    fn unsubscribe_all(&mut self, server: C) {
        for g in self.subscriptions.remove(&server).unwrap_or_default() {
            if let Some(servers) = self.subscribers.get_mut(&g) {
                servers.remove(&server);
                if servers.is_empty() {
                    self.subscribers.remove(&g);
                }
            }
        }
    }

    /// Forwards `pdu` once to each msg_server subscribed to `group` or
    /// hosting one of `users`, except `from`, in connection order.
    fn relay_to_group(
        &mut self,
        from: C,
        pdu: &Pdu,
        group: u32,
        users: &[u32],
        out: &mut Vec<Action<C>>,
    ) {
        let start = out.len();
        let subscribed = self.subscribers.get(&group);
        for &server in &self.servers {
            if server == from {
                continue;
            }
            let wanted = subscribed.is_some_and(|s| s.contains(&server))
                || users.iter().any(|u| {
                    self.users
                        .get(u)
                        .is_some_and(|per_server| per_server.contains_key(&server))
                });
            if wanted {
                out.push(Action::Send(server, pdu.clone()));
            }
        }
        if out.len() == start {
            debug!(?from, group, "no other msg_server hosts a member");
            self.counters.no_recipient += 1;
        }
    }

    /// Groups with a subscriber.
    #[must_use]
    pub fn subscribed_groups(&self) -> usize {
        self.subscribers.len()
    }

    /// Whether msg_server `server` subscribed to `group`.
    #[must_use]
    pub fn is_subscribed(&self, server: C, group: u32) -> bool {
        self.subscribers
            .get(&group)
            .is_some_and(|s| s.contains(&server))
    }

    /// Checks that the indexes agree between two inputs: every user's
    /// sessions are listed under the msg_servers that host them and back,
    /// no empty entry lingers, only connected msg_servers appear, and the
    /// two subscription maps mirror each other. For the fuzz harness and
    /// property tests.
    ///
    /// # Errors
    /// A description of the first disagreement.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.hosted.len() != self.servers.len() {
            return Err(format!(
                "{} servers but {} hosted entries",
                self.servers.len(),
                self.hosted.len()
            ));
        }
        for (user, per_server) in &self.users {
            if per_server.is_empty() {
                return Err(format!("user {user} listed with no msg_server"));
            }
            for (server, sessions) in per_server {
                if sessions.is_empty() {
                    return Err(format!("user {user} on {server:?} with no session"));
                }
                if !self.hosted.get(server).is_some_and(|h| h.contains(user)) {
                    return Err(format!("user {user} on {server:?}, not in its hosted set"));
                }
            }
        }
        for (server, users) in &self.hosted {
            if !self.servers.contains(server) {
                return Err(format!("hosted set of {server:?}, which is not connected"));
            }
            for u in users {
                if !self.users.get(u).is_some_and(|m| m.contains_key(server)) {
                    return Err(format!("{server:?} hosts {u}, who has no session there"));
                }
            }
        }
        for (server, groups) in &self.subscriptions {
            if !self.servers.contains(server) {
                return Err(format!(
                    "subscriptions of {server:?}, which is not connected"
                ));
            }
            if groups.len() > MAX_SUBSCRIPTIONS_PER_SERVER {
                return Err(format!("{server:?} holds {} subscriptions", groups.len()));
            }
            for g in groups {
                if !self.is_subscribed(*server, *g) {
                    return Err(format!(
                        "{server:?} subscribed to {g}, not among its subscribers"
                    ));
                }
            }
        }
        for (g, servers) in &self.subscribers {
            if servers.is_empty() {
                return Err(format!("group {g} listed with no subscriber"));
            }
            for s in servers {
                if !self.subscriptions.get(s).is_some_and(|gs| gs.contains(g)) {
                    return Err(format!("group {g} lists {s:?}, which did not subscribe"));
                }
            }
        }
        Ok(())
    }

    /// Sends `pdu` to every msg_server but `except`.
    fn broadcast(&self, pdu: &Pdu, except: Option<C>, out: &mut Vec<Action<C>>) {
        for &server in &self.servers {
            if Some(server) != except {
                out.push(Action::Send(server, pdu.clone()));
            }
        }
    }

    /// Sends `pdu` to the msg_servers where `user` has a session.
    fn to_hosts(&self, user: u32, pdu: &Pdu, out: &mut Vec<Action<C>>) {
        for server in self.hosts(user) {
            out.push(Action::Send(server, pdu.clone()));
        }
    }
}

impl runtime::App for RouteApp<Conn> {
    type Job = NoJob;
    type Done = NoJob;

    fn name(&self) -> &'static str {
        "route_server"
    }

    fn handle(&mut self, _now: Now, input: Input<'_, NoJob>, out: &mut Out<NoJob>) {
        let actions = match input {
            Input::Opened { conn, peer, .. } => {
                debug!(%conn, %peer, "msg_server connected");
                self.server_connected(conn);
                return;
            }
            Input::Pdu { conn, pdu } => self.handle_pdu(conn, pdu),
            Input::Closed { conn, reason } => {
                let actions = self.server_disconnected(conn);
                info!(%conn, %reason, servers = self.server_count(), "msg_server disconnected");
                actions
            }
            other => {
                debug!(input = ?other, "input route_server does not use");
                return;
            }
        };
        out.extend(actions);
    }

    fn collect(&self, out: &mut Scrape) {
        out.gauge(
            "teamtalk_route_msg_servers",
            "msg_servers connected (peers that announced their users; http_msg_server is not one).",
            &[],
            self.msg_server_count() as f64,
        );
        out.gauge(
            "teamtalk_route_users_online",
            "Users with at least one session on some msg_server.",
            &[],
            self.user_count() as f64,
        );
        let c = self.counters;
        for (name, help, v) in [
            (
                "teamtalk_route_received_total",
                "PDUs received from msg_servers.",
                c.received,
            ),
            (
                "teamtalk_route_sent_total",
                "PDU copies sent to msg_servers.",
                c.sent,
            ),
            (
                "teamtalk_route_no_recipient_total",
                "Relayable PDUs dropped because no recipient was online on another msg_server.",
                c.no_recipient,
            ),
            (
                "teamtalk_route_unsupported_total",
                "File notices dropped (not supported yet).",
                c.unsupported,
            ),
            (
                "teamtalk_route_unexpected_total",
                "Commands a msg_server has no business sending here.",
                c.unexpected,
            ),
            (
                "teamtalk_route_malformed_total",
                "Bodies that did not decode or carried impossible values.",
                c.malformed,
            ),
            (
                "teamtalk_route_stray_offline_total",
                "Logouts for sessions never seen logging in.",
                c.stray_offline,
            ),
            (
                "teamtalk_route_refused_total",
                "Users-status requests answered with IMRequestFailed (too many ids, or a reply over the frame limit).",
                c.refused,
            ),
        ] {
            out.counter(name, help, &[], v);
        }
    }

    fn health(&self, _problems: &mut Vec<String>) {
        // route_server needs nothing but its own thread, which the runner
        // watches.
    }
}

/// `CID_BUDDY_LIST_STATUS_NOTIFY` for `user`.
fn stat_notify(user_id: u32, status: UserStatType) -> Pdu {
    let msg = ImUserStatNotify {
        user_stat: UserStat {
            user_id,
            status: status as i32,
            mobile_sessions: None,
        },
    };
    Command::BuddyListStatusNotify.pdu(0, &msg)
}

/// `CID_OTHER_LOGIN_STATUS_NOTIFY` for `user`.
fn pc_login_notify(user_id: u32, login_status: u32) -> Pdu {
    let msg = ImServerPcLoginStatusNotify {
        user_id,
        login_status,
    };
    Command::OtherLoginStatusNotify.pdu(0, &msg)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use teamtalk_proto::pb::im::base_define::{ClientType, MsgType, SessionType};
    use teamtalk_proto::pb::im::buddy::{ImRemoveSessionNotify, ImSignInfoChangedNotify};
    use teamtalk_proto::pb::im::group::ImGroupChangeMemberNotify;
    use teamtalk_proto::pb::im::message::{ImMsgData, ImMsgDataReadNotify};
    use teamtalk_proto::pb::im::server::{
        ImOnlineUserInfo, ImRoleSet, ImServerKickUser, ImUserStatusUpdate,
    };
    use teamtalk_proto::pb::im::switch_service::Imp2pCmdMsg;

    use super::*;

    const WIN: ClientType = ClientType::Windows;
    const MAC: ClientType = ClientType::Mac;
    const IOS: ClientType = ClientType::Ios;
    const ONLINE: u32 = 1;
    const OFFLINE: u32 = 2;

    fn update(user_id: u32, status: u32, ct: ClientType) -> Pdu {
        let msg = ImUserStatusUpdate {
            user_status: status,
            user_id,
            client_type: ct as i32,
        };
        Command::OtherUserStatusUpdate.pdu(0, &msg)
    }

    fn snapshot(entries: &[(u32, ClientType)]) -> Pdu {
        let msg = ImOnlineUserInfo {
            user_stat_list: entries
                .iter()
                .map(|&(user_id, ct)| ServerUserStat {
                    user_id,
                    status: ONLINE as i32,
                    client_type: ct as i32,
                })
                .collect(),
        };
        Command::OtherOnlineUserInfo.pdu(0, &msg)
    }

    fn msg_data(from: u32, to: u32, msg_type: MsgType, seq: u16) -> Pdu {
        let msg = ImMsgData {
            from_user_id: from,
            to_session_id: to,
            msg_id: 7,
            create_time: 1_700_000_000,
            msg_type: msg_type as i32,
            msg_data: Bytes::from_static(b"hello"),
            attach_data: None,
            dedupe_key: None,
            duplicate: None,
        };
        Command::MsgData.pdu(seq, &msg)
    }

    fn stats_req(seq: u16, users: &[u32], attach: Option<&'static [u8]>) -> Pdu {
        let msg = ImUsersStatReq {
            user_id: 1,
            user_id_list: users.to_vec(),
            attach_data: attach.map(Bytes::from_static),
        };
        Command::BuddyListUsersStatusRequest.pdu(seq, &msg)
    }

    fn subscription(subscribe: bool, groups: &[u32], replace: bool) -> Pdu {
        Command::OtherGroupSubscription.pdu(
            0,
            &teamtalk_proto::pb::im::ext::ImGroupSubscription {
                subscribe,
                group_id_list: groups.to_vec(),
                replace: Some(replace),
            },
        )
    }

    /// The targets of every `Send` of `pdu`'s command, in order.
    fn targets(actions: &[Action<u32>], cmd: Command) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(to, p) if p.is(cmd.key()) => Some(*to),
                _ => None,
            })
            .collect()
    }

    fn decoded(actions: &[Action<u32>], cmd: Command) -> Vec<(u32, Message)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(to, p) if p.is(cmd.key()) => {
                    Some((*to, Message::decode(p).expect("valid body")))
                }
                _ => None,
            })
            .collect()
    }

    /// Servers 1, 2, 3 connected, in that order.
    fn three_servers() -> RouteApp<u32> {
        let mut app = RouteApp::new();
        for s in 1..=3 {
            app.server_connected(s);
        }
        app
    }

    #[test]
    fn single_messages_go_only_where_recipients_are_and_verbatim() {
        let mut app = three_servers();
        // User 10 on a PC at server 1; user 20 on a phone at server 2 and a
        // PC at server 3; user 30 nowhere.
        app.handle_pdu(1, &update(10, ONLINE, WIN));
        app.handle_pdu(2, &update(20, ONLINE, IOS));
        app.handle_pdu(3, &update(20, ONLINE, MAC));

        let pdu = msg_data(10, 20, MsgType::SingleText, 42);
        let out = app.handle_pdu(1, &pdu);
        assert_eq!(
            out,
            vec![Action::Send(2, pdu.clone()), Action::Send(3, pdu.clone())]
        );

        // The sender's other devices count as recipients: 20 writes to 10
        // from server 3, so server 1 (10) and server 2 (20's phone) get it.
        let pdu = msg_data(20, 10, MsgType::SingleAudio, 5);
        assert_eq!(targets(&app.handle_pdu(3, &pdu), Command::MsgData), [1, 2]);

        // Never back to the sender, even when the recipient is there too.
        app.handle_pdu(1, &update(30, ONLINE, WIN));
        let out = app.handle_pdu(1, &msg_data(10, 30, MsgType::SingleText, 1));
        assert!(out.is_empty());
        // Nobody online: dropped and counted.
        let before = app.counters().no_recipient;
        assert!(
            app.handle_pdu(1, &msg_data(10, 99, MsgType::SingleText, 1))
                .is_empty()
        );
        assert_eq!(app.counters().no_recipient, before + 1);
    }

    #[test]
    fn other_relays_route_by_their_user_fields() {
        let mut app = three_servers();
        app.handle_pdu(2, &update(20, ONLINE, WIN));
        app.handle_pdu(3, &update(30, ONLINE, IOS));

        let read = Command::MsgReadNotify.pdu(
            0,
            &ImMsgDataReadNotify {
                user_id: 20,
                session_id: 30,
                msg_id: 3,
                session_type: SessionType::Single as i32,
            },
        );
        assert_eq!(
            targets(&app.handle_pdu(1, &read), Command::MsgReadNotify),
            [2]
        );

        let p2p = Command::SwitchP2pCmd.pdu(
            9,
            &Imp2pCmdMsg {
                from_user_id: 20,
                to_user_id: 30,
                cmd_msg_data: "{\"typing\":1}".into(),
            },
        );
        let out = app.handle_pdu(1, &p2p);
        assert_eq!(
            out,
            vec![Action::Send(2, p2p.clone()), Action::Send(3, p2p)]
        );

        let kick = Command::OtherServerKickUser.pdu(
            0,
            &ImServerKickUser {
                user_id: 30,
                client_type: IOS as i32,
                reason: 1,
            },
        );
        assert_eq!(
            targets(&app.handle_pdu(2, &kick), Command::OtherServerKickUser),
            [3]
        );

        let remove = Command::BuddyListRemoveSessionNotify.pdu(
            0,
            &ImRemoveSessionNotify {
                user_id: 20,
                session_type: SessionType::Single as i32,
                session_id: 30,
            },
        );
        assert!(app.handle_pdu(2, &remove).is_empty());
        assert_eq!(
            targets(
                &app.handle_pdu(3, &remove),
                Command::BuddyListRemoveSessionNotify
            ),
            [2]
        );
    }

    #[test]
    fn broadcasts_sign_info_to_all_and_group_messages_to_others() {
        let mut app = three_servers();
        let sign = Command::BuddyListSignInfoChangedNotify.pdu(
            0,
            &ImSignInfoChangedNotify {
                changed_user_id: 5,
                sign_info: "busy".into(),
            },
        );
        assert_eq!(
            targets(
                &app.handle_pdu(2, &sign),
                Command::BuddyListSignInfoChangedNotify
            ),
            [1, 2, 3]
        );
        // Group messages go to the msg_servers subscribed to the group,
        // never back to the sender's; nobody subscribed: nobody.
        let group = msg_data(5, 900, MsgType::GroupText, 3);
        assert!(targets(&app.handle_pdu(2, &group), Command::MsgData).is_empty());
        assert_eq!(app.counters().no_recipient, 1);
        for server in [1, 2, 3] {
            app.handle_pdu(server, &subscription(true, &[900], false));
        }
        assert_eq!(
            targets(&app.handle_pdu(2, &group), Command::MsgData),
            [1, 3]
        );
        app.handle_pdu(3, &subscription(false, &[900], false));
        assert_eq!(targets(&app.handle_pdu(2, &group), Command::MsgData), [1]);
        // A replacing subscription forgets the rest; a disconnect too.
        app.handle_pdu(1, &subscription(true, &[901], true));
        assert!(targets(&app.handle_pdu(2, &group), Command::MsgData).is_empty());
        app.handle_pdu(3, &subscription(true, &[900], false));
        app.server_disconnected(3);
        assert!(targets(&app.handle_pdu(2, &group), Command::MsgData).is_empty());
        assert_eq!(app.subscribed_groups(), 2, "901 on 1, 900 on 2");
    }

    #[test]
    fn member_changes_reach_subscribers_and_the_changed_users() {
        let mut app = three_servers();
        app.handle_pdu(1, &subscription(true, &[9], false));
        // User 20 (removed from 9) is on server 3, which is not subscribed.
        app.handle_pdu(3, &update(20, ONLINE, WIN));
        let notify = Command::GroupChangeMemberNotify.pdu(
            0,
            &ImGroupChangeMemberNotify {
                user_id: 1,
                change_type: 2,
                group_id: 9,
                cur_user_id_list: vec![1],
                chg_user_id_list: vec![20],
            },
        );
        assert_eq!(
            targets(
                &app.handle_pdu(2, &notify),
                Command::GroupChangeMemberNotify
            ),
            [1, 3]
        );
    }

    #[test]
    fn snapshot_replaces_the_servers_entries() {
        let mut app = three_servers();
        let out = app.handle_pdu(1, &snapshot(&[(10, WIN), (11, IOS), (10, IOS)]));
        // 10 came online (PC): everyone hears it, server 1 tells 10's phone.
        let notes = decoded(&out, Command::BuddyListStatusNotify);
        assert_eq!(notes.len(), 3);
        assert!(notes.iter().all(|(_, m)| matches!(m,
            Message::BuddyListStatusNotify(n) if n.user_stat.user_id == 10 && n.user_stat.status == 1)));
        assert_eq!(targets(&out, Command::OtherLoginStatusNotify), [1]);
        assert_eq!(app.sessions(10), 2);
        assert_eq!(app.sessions(11), 1);
        assert_eq!(app.hosts(10), [1]);

        // A new snapshot from the same server replaces, not adds.
        let out = app.handle_pdu(1, &snapshot(&[(11, IOS), (12, MAC)]));
        assert_eq!(app.sessions(10), 0);
        assert_eq!(app.sessions(11), 1);
        assert_eq!(app.sessions(12), 1);
        assert_eq!(app.user_count(), 2);
        let notes = decoded(&out, Command::BuddyListStatusNotify);
        let mut flips: Vec<(u32, i32)> = notes
            .iter()
            .filter_map(|(_, m)| match m {
                Message::BuddyListStatusNotify(n) => {
                    Some((n.user_stat.user_id, n.user_stat.status))
                }
                _ => None,
            })
            .collect();
        flips.dedup();
        assert_eq!(flips, [(10, 2), (12, 1)]);

        // An empty snapshot (a msg_server restarted with nobody) clears it.
        app.handle_pdu(1, &snapshot(&[]));
        assert_eq!(app.user_count(), 0);
        // Another server's users are untouched by server 1's snapshot.
        app.handle_pdu(2, &update(20, ONLINE, WIN));
        app.handle_pdu(1, &snapshot(&[(21, WIN)]));
        assert_eq!(app.hosts(20), [2]);
    }

    #[test]
    fn status_counts_two_pc_sessions_on_two_servers() {
        let mut app = three_servers();
        // First PC login: everyone hears "online"; 0x070e ON to host 1.
        let out = app.handle_pdu(1, &update(7, ONLINE, WIN));
        assert_eq!(targets(&out, Command::BuddyListStatusNotify), [1, 2, 3]);
        assert_eq!(targets(&out, Command::OtherLoginStatusNotify), [1]);
        assert_eq!(app.status(7), UserStatType::UserStatusOnline);

        // Second PC session on server 2 (e.g. Mac).
        let out = app.handle_pdu(2, &update(7, ONLINE, MAC));
        assert_eq!(targets(&out, Command::BuddyListStatusNotify), [1, 2, 3]);
        assert_eq!(targets(&out, Command::OtherLoginStatusNotify), [1, 2]);
        assert_eq!(app.pc_sessions(7), 2);

        // A phone logs in on server 3: no presence notice (mobile), but it
        // learns the PC is on.
        let out = app.handle_pdu(3, &update(7, ONLINE, IOS));
        assert!(targets(&out, Command::BuddyListStatusNotify).is_empty());
        let on = decoded(&out, Command::OtherLoginStatusNotify);
        assert_eq!(on.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(on.iter().all(|(_, m)| matches!(m,
            Message::OtherLoginStatusNotify(n) if n.user_id == 7 && n.login_status == 1)));

        // First PC leaves: still online through the other PC, so silence.
        let out = app.handle_pdu(1, &update(7, OFFLINE, WIN));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(app.status(7), UserStatType::UserStatusOnline);
        assert_eq!(app.hosts(7), [2, 3]);

        // Last PC leaves: offline to everyone, OFF to the phone's server.
        let out = app.handle_pdu(2, &update(7, OFFLINE, MAC));
        let notes = decoded(&out, Command::BuddyListStatusNotify);
        assert_eq!(notes.len(), 3);
        assert!(notes.iter().all(|(_, m)| matches!(m,
            Message::BuddyListStatusNotify(n) if n.user_stat.status == 2)));
        let off = decoded(&out, Command::OtherLoginStatusNotify);
        assert_eq!(off.len(), 1);
        assert!(matches!(&off[0], (3, Message::OtherLoginStatusNotify(n)) if n.login_status == 0));
        assert_eq!(app.status(7), UserStatType::UserStatusOffline);
        assert_eq!(app.sessions(7), 1);

        // The phone leaves: mobile, so no notices at all.
        assert!(app.handle_pdu(3, &update(7, OFFLINE, IOS)).is_empty());
        assert_eq!(app.user_count(), 0);

        // Two sessions of the same type on one server are counted.
        app.handle_pdu(1, &update(8, ONLINE, WIN));
        app.handle_pdu(1, &update(8, ONLINE, WIN));
        app.handle_pdu(1, &update(8, OFFLINE, WIN));
        assert_eq!(app.pc_sessions(8), 1);
    }

    #[test]
    fn stray_and_malformed_updates() {
        let mut app = three_servers();
        // A logout never seen logging in: counted; still announced offline
        // (nobody has a PC session for that user), as TeamTalk does.
        let out = app.handle_pdu(1, &update(5, OFFLINE, WIN));
        assert_eq!(app.counters().stray_offline, 1);
        assert_eq!(targets(&out, Command::BuddyListStatusNotify), [1, 2, 3]);
        // A logout on the wrong server does not remove the session elsewhere.
        app.handle_pdu(1, &update(6, ONLINE, WIN));
        app.handle_pdu(2, &update(6, OFFLINE, WIN));
        assert_eq!(app.pc_sessions(6), 1);

        assert!(app.handle_pdu(1, &update(5, 3, WIN)).is_empty());
        let bad = Command::OtherUserStatusUpdate.pdu(
            0,
            &ImUserStatusUpdate {
                user_status: ONLINE,
                user_id: 5,
                client_type: -1,
            },
        );
        assert!(app.handle_pdu(1, &bad).is_empty());
        let garbage = Pdu::new(
            Command::OtherUserStatusUpdate.key(),
            0,
            Bytes::from_static(b"\xff\xff"),
        );
        assert!(app.handle_pdu(1, &garbage).is_empty());
        assert_eq!(app.counters().malformed, 3);
    }

    #[test]
    fn only_peers_that_announce_their_users_count_as_msg_servers() {
        let mut app = three_servers();
        assert_eq!((app.server_count(), app.msg_server_count()), (3, 0));
        // msg_servers 1 and 2 send their snapshots on link up; peer 3
        // (an http_msg_server) only relays.
        app.handle_pdu(1, &snapshot(&[(10, WIN)]));
        app.handle_pdu(2, &snapshot(&[]));
        app.handle_pdu(3, &update(11, ONLINE, WIN));
        assert_eq!((app.server_count(), app.msg_server_count()), (3, 2));
        let _ = app.server_disconnected(1);
        let _ = app.server_disconnected(3);
        assert_eq!((app.server_count(), app.msg_server_count()), (1, 1));
    }

    #[test]
    fn disconnect_forgets_users_and_announces_lost_pcs() {
        let mut app = three_servers();
        app.handle_pdu(1, &update(10, ONLINE, WIN)); // only on 1
        app.handle_pdu(1, &update(11, ONLINE, WIN)); // on 1 and 2 (PCs)
        app.handle_pdu(2, &update(11, ONLINE, MAC));
        app.handle_pdu(1, &update(12, ONLINE, WIN)); // PC on 1, phone on 3
        app.handle_pdu(3, &update(12, ONLINE, IOS));
        app.handle_pdu(1, &update(13, ONLINE, IOS)); // phone only on 1

        let out = app.server_disconnected(1);
        assert_eq!(app.server_count(), 2);
        let notes: Vec<(u32, u32, i32)> = decoded(&out, Command::BuddyListStatusNotify)
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::BuddyListStatusNotify(n) => {
                    Some((to, n.user_stat.user_id, n.user_stat.status))
                }
                _ => None,
            })
            .collect();
        assert_eq!(notes, [(2, 10, 2), (3, 10, 2), (2, 12, 2), (3, 12, 2)]);
        let off: Vec<(u32, u32)> = decoded(&out, Command::OtherLoginStatusNotify)
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::OtherLoginStatusNotify(n) if n.login_status == 0 => Some((to, n.user_id)),
                _ => None,
            })
            .collect();
        assert_eq!(off, [(3, 12)]);
        assert_eq!(app.sessions(10), 0);
        assert_eq!(app.hosts(11), [2]);
        assert_eq!(app.sessions(12), 1);
        assert_eq!(app.sessions(13), 0);
        // Relays no longer target the departed server.
        assert!(
            app.handle_pdu(2, &msg_data(11, 10, MsgType::SingleText, 1))
                .is_empty()
        );
        // Twice is harmless.
        assert!(app.server_disconnected(1).is_empty());
    }

    #[test]
    fn users_stat_answers_pc_presence_with_seq_and_attach() {
        let mut app = three_servers();
        app.handle_pdu(2, &update(20, ONLINE, WIN));
        app.handle_pdu(3, &update(30, ONLINE, IOS));
        let out = app.handle_pdu(
            1,
            &stats_req(77, &[20, 30, 40, 20], Some(b"\x00\x00\x00\x02ctx")),
        );
        assert_eq!(out.len(), 1);
        let Action::Send(to, pdu) = &out[0] else {
            panic!("expected a send, got {:?}", out[0]);
        };
        assert_eq!(*to, 1);
        assert_eq!(pdu.seq(), 77);
        let Message::BuddyListUsersStatusResponse(rsp) = Message::decode(pdu).unwrap() else {
            panic!("wrong reply {pdu:?}");
        };
        assert_eq!(rsp.user_id, 1);
        assert_eq!(
            rsp.attach_data.as_deref(),
            Some(&b"\x00\x00\x00\x02ctx"[..])
        );
        let stats: Vec<(u32, i32)> = rsp
            .user_stat_list
            .iter()
            .map(|s| (s.user_id, s.status))
            .collect();
        // 30 is on a phone only: offline, as TeamTalk reports it.
        assert_eq!(stats, [(20, 1), (30, 2), (40, 2), (20, 1)]);

        let out = app.handle_pdu(1, &stats_req(0, &[], None));
        let Action::Send(_, pdu) = &out[0] else {
            panic!("expected a send, got {:?}", out[0]);
        };
        let Message::BuddyListUsersStatusResponse(rsp) = Message::decode(pdu).unwrap() else {
            panic!("wrong reply");
        };
        assert!(rsp.user_stat_list.is_empty());
        assert_eq!(rsp.attach_data, None);
    }

    /// The finding: 200,000 ids no longer make a reply too large to send
    /// and no answer; the request gets `IMRequestFailed` with its
    /// `attach_data`, and the bound is exact.
    #[test]
    fn users_stat_over_the_bound_gets_request_failed() {
        let mut app = three_servers();
        let many: Vec<u32> = (1..=200_000).collect();
        let req = stats_req(9, &many, Some(b"\x00\x00\x00\x02ctx"));
        assert!(fits_frame(req.body.len()), "the request itself fits");
        let out = app.handle_pdu(1, &req);
        let Action::Send(to, pdu) = &out[0] else {
            panic!("expected a send, got {:?}", out[0]);
        };
        assert_eq!((*to, pdu.seq()), (1, 9));
        let Message::OtherRequestFailed(f) = Message::decode(pdu).unwrap() else {
            panic!("wrong reply {:?}", pdu.key());
        };
        let key = Command::BuddyListUsersStatusRequest.key();
        assert_eq!(
            (f.service_id, f.command_id),
            (u32::from(key.service_id), u32::from(key.command_id))
        );
        assert_eq!(
            f.result_code,
            RequestFailedCode::RequestFailedBadRequest as u32
        );
        assert_eq!(f.attach_data.as_deref(), Some(&b"\x00\x00\x00\x02ctx"[..]));
        assert_eq!(app.counters().refused, 1);

        // Exactly the bound, all with large ids, is answered in full.
        let most: Vec<u32> = (0..MAX_STATUS_IDS as u32).map(|i| u32::MAX - i).collect();
        let out = app.handle_pdu(1, &stats_req(10, &most, None));
        let Action::Send(_, pdu) = &out[0] else {
            panic!("expected a send");
        };
        assert!(pdu.wire_len() <= crate::rules::sizing::MAX_FRAME_LEN);
        let Message::BuddyListUsersStatusResponse(rsp) = Message::decode(pdu).unwrap() else {
            panic!("wrong reply {:?}", pdu.key());
        };
        assert_eq!(rsp.user_stat_list.len(), MAX_STATUS_IDS);
        assert_eq!(app.counters().refused, 1);
    }

    /// A reply that cannot fit a frame is refused even under the id bound
    /// (here because of a huge attach_data, which is then not echoed).
    #[test]
    fn users_stat_reply_over_the_frame_is_refused() {
        let mut app = three_servers();
        let attach: &'static [u8] = Box::leak(vec![7u8; (1 << 20) - 1400].into_boxed_slice());
        let ids: Vec<u32> = (1000..1300).collect();
        let req = stats_req(3, &ids, Some(attach));
        assert!(fits_frame(req.body.len()), "the request itself fits");
        let out = app.handle_pdu(1, &req);
        let Action::Send(_, pdu) = &out[0] else {
            panic!("expected a send");
        };
        let Message::OtherRequestFailed(f) = Message::decode(pdu).unwrap() else {
            panic!("wrong reply {:?}", pdu.key());
        };
        assert_eq!(f.attach_data, Some(Bytes::from_static(attach)));
        assert!(pdu.wire_len() <= crate::rules::sizing::MAX_FRAME_LEN);
        assert_eq!(app.counters().refused, 1);
    }

    #[test]
    fn role_set_unsupported_and_unexpected() {
        let mut app = three_servers();
        let role = Command::OtherRoleSet.pdu(0, &ImRoleSet { master: 1 });
        assert!(app.handle_pdu(1, &role).is_empty());
        let login = Pdu::new(Command::LoginReqUserlogin.key(), 1, Bytes::new());
        assert!(app.handle_pdu(1, &login).is_empty());
        let unknown = Pdu::new(
            teamtalk_proto::CommandKey::new(0x0009, 0x0901),
            1,
            Bytes::new(),
        );
        assert!(app.handle_pdu(1, &unknown).is_empty());
        assert_eq!(app.counters().unexpected, 2);
        assert_eq!(app.counters().received, 3);
        assert_eq!(app.counters().sent, 0);
    }

    /// A file notice goes where its receiver is, like a message.
    #[test]
    fn file_notices_go_to_the_receivers_msg_servers() {
        let mut app = three_servers();
        app.handle_pdu(2, &update(20, ONLINE, WIN));
        let notify = Command::FileNotify.pdu(
            0,
            &teamtalk_proto::pb::im::file::ImFileNotify {
                from_user_id: 10,
                to_user_id: 20,
                file_name: "f".into(),
                file_size: 1,
                task_id: "t".into(),
                ip_addr_list: vec![],
                trans_mode: 1,
                offline_ready: 0,
            },
        );
        assert_eq!(
            app.handle_pdu(1, &notify),
            vec![Action::Send(2, notify.clone())]
        );
        // Nobody gets one for a user online nowhere else.
        assert!(app.handle_pdu(2, &notify).is_empty());
        assert_eq!(app.counters().unsupported, 0);
    }

    #[test]
    fn a_pdu_from_an_unannounced_connection_registers_it() {
        let mut app: RouteApp<u32> = RouteApp::new();
        app.handle_pdu(9, &snapshot(&[]));
        assert_eq!(app.server_count(), 1);
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Step {
            Update(u32, u32, bool, bool),
            Snapshot(u32, Vec<(u32, bool)>),
            Disconnect(u32),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (0..3u32, 0..4u32, any::<bool>(), any::<bool>())
                    .prop_map(|(s, u, on, pc)| Step::Update(s, u, on, pc)),
                (
                    0..3u32,
                    proptest::collection::vec((0..4u32, any::<bool>()), 0..4)
                )
                    .prop_map(|(s, e)| Step::Snapshot(s, e)),
                (0..3u32).prop_map(Step::Disconnect),
            ]
        }

        proptest! {
            /// Whatever the order of events, the two indexes agree, and the
            /// presence announced last for a user matches the state.
            #[test]
            fn indexes_stay_consistent(steps in proptest::collection::vec(step(), 0..40)) {
                let mut app: RouteApp<u32> = RouteApp::new();
                let mut announced: HashMap<u32, i32> = HashMap::new();
                for s in steps {
                    let out = match s {
                        Step::Update(server, user, on, pc) => {
                            let ct = if pc { WIN } else { IOS };
                            app.handle_pdu(server, &update(user, if on { ONLINE } else { OFFLINE }, ct))
                        }
                        Step::Snapshot(server, entries) => {
                            let e: Vec<(u32, ClientType)> = entries
                                .into_iter()
                                .map(|(u, pc)| (u, if pc { WIN } else { IOS }))
                                .collect();
                            app.handle_pdu(server, &snapshot(&e))
                        }
                        Step::Disconnect(server) => app.server_disconnected(server),
                    };
                    for p in out.iter().filter_map(|a| match a {
                        Action::Send(_, p) => Some(p),
                        _ => None,
                    }) {
                        if let Ok(Message::BuddyListStatusNotify(n)) = Message::decode(p) {
                            announced.insert(n.user_stat.user_id, n.user_stat.status);
                        }
                    }
                    if app.server_count() == 0 {
                        // Nobody is left to have heard anything.
                        announced.clear();
                    }
                    for (user, per_server) in &app.users {
                        prop_assert!(!per_server.is_empty());
                        for (server, sessions) in per_server {
                            prop_assert!(!sessions.is_empty());
                            prop_assert!(app.hosted[server].contains(user));
                        }
                    }
                    for (server, users) in &app.hosted {
                        prop_assert!(app.servers.contains(server));
                        for u in users {
                            prop_assert!(app.users[u].contains_key(server));
                        }
                    }
                }
                for (user, status) in announced {
                    prop_assert_eq!(status, app.status(user) as i32, "user {}", user);
                }
            }
        }
    }
}
