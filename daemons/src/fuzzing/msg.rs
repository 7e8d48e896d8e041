//! [`run_msg_app`]: msg_server's App under arbitrary clients and upstreams.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use teamtalk_conn::{CloseReason, HttpCloseReason};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::UserInfo;
use teamtalk_proto::pb::im::buddy::{ImChangeSignInfoRsp, ImRemoveSessionRsp};
use teamtalk_proto::pb::im::ext::{ImRequestFailed, ImUserGroupsRsp};
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberNotify, ImGroupChangeMemberRsp, ImGroupCreateRsp,
};
use teamtalk_proto::pb::im::login::ImLoginReq;
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::pb::im::server::{
    ImServerKickUser, ImServerPcLoginStatusNotify, ImValidateRsp,
};
use teamtalk_proto::{Attach, Command, CommandKey, Message, Pdu};

use super::body::{Body, command};
use super::{addr, pick, start_time, user_id, violated};
use crate::msg::app::{CLIENT_PDU_CREDIT, LOGIN_TTL_SECS, PENDING_TTL_SECS};
use crate::msg::{Action, MsgApp, Registration, SessionLimits, Upstream, UpstreamLink};
use crate::rules::failure::{failure_reply, reply_command, requester};
use crate::runtime::{CloseCause, Input, LinkId, NoJob, Now, Out, PortId};

/// The upstream links of the App under test, by [`LinkId`] index: two
/// db_proxies and two route_servers, so "the first link of its kind that
/// is up" and a link dying while its twin lives are both exercised.
const LINKS: [Upstream; 5] = [
    Upstream::Db,
    Upstream::Db,
    Upstream::Login,
    Upstream::Route,
    Upstream::Route,
];
/// Steps per run at most.
const MAX_STEPS: usize = 256;
/// Upstream requests remembered for replies.
const MAX_SENT: usize = 64;

/// Client types: Windows, Mac, iOS, Android, and two TeamTalk never sends.
const CLIENT_TYPES: [u32; 6] = [0x01, 0x02, 0x11, 0x12, 0, 0x63];

/// One thing that happens to msg_server.
#[derive(Debug, Arbitrary)]
enum Step {
    /// A client connects.
    Open { addr: u8 },
    /// A client asks to log in (a long name or password is refused at the
    /// door; `garbage` sends an undecodable body).
    Login {
        conn: u8,
        name: u16,
        password: u16,
        client_type: u8,
        online_status: u8,
        garbage: bool,
    },
    /// A logged-in client sends a command with a well-formed body.
    Request { conn: u8, command: u16, body: Body },
    /// A logged-in client sends a chat message.
    Text {
        conn: u8,
        to: u8,
        msg_type: u8,
        len: u16,
        time: u8,
    },
    /// A client sends a command with an arbitrary body.
    Raw {
        conn: u8,
        command: u16,
        bytes: Vec<u8>,
    },
    /// A client sends a command id outside TeamTalk's table.
    Unknown {
        conn: u8,
        service: u16,
        id: u16,
        body: Body,
    },
    /// A client's connection ends.
    Leave { conn: u8 },
    /// An upstream link comes up.
    LinkUp(u8),
    /// An upstream link goes down.
    LinkDown(u8),
    /// A connect attempt fails.
    LinkUnreachable(u8),
    /// An upstream answers one of the requests msg_server sent it.
    Reply { pick: u8, how: Reply },
    /// An upstream sends something of its own (a relay, a stale reply).
    Upstream { link: u8, command: u16, body: Body },
    /// route_server relays a kick.
    RouteKick {
        user: u8,
        client_type: u8,
        reason: u8,
    },
    /// route_server relays a change of a group's members.
    RouteMembers {
        group: u8,
        change_type: u8,
        changed: Vec<u8>,
        current: Vec<u8>,
    },
    /// route_server says whether a user's PC is on.
    RoutePcStatus { user: u8, on: bool },
    /// Time passes (seconds), then a tick.
    Tick { secs: u8 },
    /// An HTTP request reaches msg_server (it has no HTTP port).
    Http,
}

/// How an upstream answers a request.
#[derive(Debug, Arbitrary)]
enum Reply {
    /// The answer the request asked for: a login accepted (`ok`) as `user`
    /// or refused, a message stored (`ok`) with an id or refused, groups,
    /// a created group, a change of members, a removed session, a
    /// signature; any other request gets its reply type, fields default.
    Proper {
        user: u8,
        ok: bool,
        n: u8,
        flag: bool,
        ids: Vec<u8>,
    },
    /// The reply type with fuzzer-chosen fields, `attach_data` echoed.
    Generic(Body),
    /// `IMRequestFailed` with this code, `attach_data` echoed.
    Failed(u8),
    /// Another command altogether, `attach_data` echoed where it has one.
    WrongType { command: u16, body: Body },
    /// The proper reply with its `attach_data` replaced.
    Corrupt(Vec<u8>),
}

/// Where a client session stands, as the runtime's session sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected, no login yet.
    Awaiting,
    /// Its login request went to the App.
    LoginPending,
    /// Accepted as this user.
    LoggedIn(u32),
    /// The App closed it (or refused its login); PDUs already read may
    /// still arrive (`Some(user)` when it had logged in).
    Closing(Option<u32>),
}

/// A client request waiting for its answer.
#[derive(Debug, Clone)]
struct Waiting {
    /// What answers it: its reply command (or nothing but a close).
    reply: Option<CommandKey>,
    /// Wall-clock second it was sent.
    created: u32,
    /// A login (answered by `Accept`/`Refuse`, expired sooner).
    login: bool,
    /// The link the App forwarded it on, with that link's epoch.
    upstream: Option<(usize, u32)>,
    /// What it was, for messages.
    what: String,
}

#[derive(Debug)]
struct Client {
    phase: Phase,
    /// PDUs the App was handed (login request included).
    consumed: u32,
    /// PDU credit the App granted back.
    granted: u32,
    next_seq: u16,
    waiting: BTreeMap<u16, Waiting>,
}

impl Client {
    fn credit(&self) -> u32 {
        (CLIENT_PDU_CREDIT + self.granted).saturating_sub(self.consumed)
    }

    fn seq(&mut self) -> u16 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    fn user(&self) -> Option<u32> {
        match self.phase {
            Phase::LoggedIn(u) | Phase::Closing(Some(u)) => Some(u),
            _ => None,
        }
    }
}

/// A request the App sent upstream, which a later step may answer.
#[derive(Debug, Clone)]
struct Sent {
    link: usize,
    epoch: u32,
    seq: u16,
    msg: Message,
    /// The user the request was made for (the session's, at the time).
    user: Option<u32>,
}

/// Whom the actions of a step are on behalf of, for the identity check.
#[derive(Debug, Clone, Copy)]
enum Ctx {
    /// A PDU of a session logged in as this user.
    Client(u32),
    /// A reply to a request made for this user (not a login).
    Reply(u32),
    /// Anything else.
    Other,
}

struct Harness {
    app: MsgApp<u32>,
    now: Now,
    clients: BTreeMap<u32, Client>,
    /// HTTP connections open.
    http: HashSet<u32>,
    /// Connections whose `Closed` was handed in.
    closed: HashSet<u32>,
    next_conn: u32,
    up: [bool; LINKS.len()],
    /// Bumped each time a link comes up: a reply from an older connection
    /// of the link cannot arrive any more.
    epoch: [u32; LINKS.len()],
    sent: Vec<Sent>,
    /// Users some session was accepted as.
    authenticated: HashSet<u32>,
    history: Vec<String>,
}

/// Drives a [`MsgApp`] with the steps `data` encodes, checking after every
/// step:
///
/// - no panic, and the App's own tables agree
///   ([`MsgApp::check_invariants`]): pending requests within the cap,
///   in-flight bytes and owed credit consistent, presence and the group
///   index in step with the sessions;
/// - credit: the App never grants a session more PDUs than it has been
///   handed (a grant per PDU dealt with, at most), and once everything is
///   answered every open session has its whole credit back;
/// - every client request is answered with its seq (its reply or
///   `IMRequestFailed`), or its session closed: at once when its link goes
///   down, at the first tick after its time limit, and at the end after
///   time has passed every limit;
/// - identity: every PDU sent upstream for a session names the session's
///   authenticated user in its user-id fields, whatever the client wrote;
/// - nothing is sent to a connection that is closed, over a link that is
///   down, or undecodable to a client.
///
/// # Panics
/// On the first broken invariant, naming it and the last steps.
pub fn run_msg_app(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let rate: Option<u8> = u.arbitrary().unwrap_or(None);
    let pending_cap = 1 + usize::from(u.arbitrary::<u8>().unwrap_or(0) % 12);
    let session_budget = 256 + usize::from(u.arbitrary::<u16>().unwrap_or(0) % 4096);
    let global_budget = session_budget + usize::from(u.arbitrary::<u16>().unwrap_or(0) % 8192);
    let mut h = Harness::new(
        rate.map(|r| u32::from(r % 8)),
        pending_cap,
        session_budget,
        global_budget,
    );
    for _ in 0..MAX_STEPS {
        // `arbitrary` makes values out of nothing once the data is used
        // up; the run ends there instead.
        if u.is_empty() {
            break;
        }
        let Ok(step) = u.arbitrary::<Step>() else {
            break;
        };
        h.step(step);
    }
    h.drain();
}

impl Harness {
    fn new(rate: Option<u32>, pending: usize, session: usize, global: usize) -> Self {
        let links = LINKS
            .iter()
            .enumerate()
            .map(|(i, &kind)| UpstreamLink {
                id: LinkId(i as u16),
                kind,
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
            })
            .collect();
        let limits = SessionLimits {
            messages_per_second: rate,
        };
        let app = MsgApp::new(
            Registration {
                ip1: "127.0.0.1".into(),
                ip2: "127.0.0.1".into(),
                port: 0,
                max_conn_cnt: 100,
                host_name: "fuzz".into(),
                ws_port: None,
                ws_tls: false,
            },
            links,
        )
        .with_limits(limits)
        .with_capacity_limits(pending, session, global);
        let mut h = Self {
            app,
            now: start_time(),
            clients: BTreeMap::new(),
            http: HashSet::new(),
            closed: HashSet::new(),
            next_conn: 0,
            up: [false; LINKS.len()],
            epoch: [0; LINKS.len()],
            sent: Vec::new(),
            authenticated: HashSet::new(),
            history: Vec::new(),
        };
        let listening = Input::Listening {
            port: PortId(0),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8000)),
        };
        h.feed(listening, Ctx::Other);
        for link in 0..LINKS.len() {
            h.step(Step::LinkUp(link as u8));
        }
        h
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        violated(what, &self.history)
    }

    /// Hands one input to the App and checks what it did.
    fn feed(&mut self, input: Input<'_, NoJob, u32>, ctx: Ctx) -> Vec<Action<u32>> {
        let mut out = Out::new();
        self.app.step(self.now, input, &mut out);
        let actions = out.take();
        self.apply(&actions, ctx);
        if let Err(e) = self.app.check_invariants() {
            self.fail(e);
        }
        actions
    }

    /// Open client sessions (not closed yet), in id order.
    fn conns(&self) -> Vec<u32> {
        self.clients.keys().copied().collect()
    }

    fn client_conn(&self, n: u8) -> Option<u32> {
        pick(&self.conns(), n).copied()
    }

    fn step(&mut self, step: Step) {
        self.history.push(format!("{step:?}"));
        match step {
            Step::Open { addr: a } => {
                let conn = self.next_conn;
                self.next_conn += 1;
                self.clients.insert(
                    conn,
                    Client {
                        phase: Phase::Awaiting,
                        consumed: 0,
                        granted: 0,
                        next_seq: 0,
                        waiting: BTreeMap::new(),
                    },
                );
                let input = Input::Opened {
                    conn,
                    port: PortId(0),
                    peer: addr(a),
                };
                self.feed(input, Ctx::Other);
            }
            Step::Login {
                conn,
                name,
                password,
                client_type,
                online_status,
                garbage,
            } => self.login(conn, name, password, client_type, online_status, garbage),
            Step::Request {
                conn,
                command: c,
                body,
            } => {
                let c = command(c);
                let pdu = Pdu::new(c.key(), 0, body.build(c));
                self.client_pdu(conn, pdu);
            }
            Step::Text {
                conn,
                to,
                msg_type,
                len,
                time,
            } => {
                let msg = ImMsgData {
                    from_user_id: user_id(to.wrapping_add(1)),
                    to_session_id: if msg_type & 0x80 == 0 {
                        user_id(to)
                    } else {
                        1000 + u32::from(to % 4)
                    },
                    msg_id: u32::from(time),
                    create_time: 1_600_000_000 + u32::from(time),
                    msg_type: [1, 2, 0x11, 0x12, 7, 0][usize::from(msg_type % 6)],
                    msg_data: Bytes::from(vec![b'x'; usize::from(len % 2048)]),
                    attach_data: time
                        .is_multiple_of(3)
                        .then(|| Bytes::from_static(b"client junk")),
                    dedupe_key: time
                        .is_multiple_of(5)
                        .then(|| Bytes::from_static(b"forged key")),
                    duplicate: time.is_multiple_of(7).then_some(true),
                };
                self.client_pdu(conn, msg.to_pdu(0));
            }
            Step::Raw {
                conn,
                command: c,
                bytes,
            } => {
                self.client_pdu(conn, Pdu::new(command(c).key(), 0, Bytes::from(bytes)));
            }
            Step::Unknown {
                conn,
                service,
                id,
                body,
            } => {
                let key = CommandKey::new(service | 0x100, id);
                if Command::from_key(key).is_none() {
                    let any = command(id);
                    self.client_pdu(conn, Pdu::new(key, 0, body.build(any)));
                }
            }
            Step::Leave { conn } => {
                if let Some(conn) = self.client_conn(conn) {
                    self.close_client(conn, CloseReason::PeerClosed);
                }
            }
            Step::LinkUp(l) => {
                let l = usize::from(l) % LINKS.len();
                if !self.up[l] {
                    self.up[l] = true;
                    self.epoch[l] += 1;
                    self.feed(Input::LinkUp(LinkId(l as u16)), Ctx::Other);
                }
            }
            Step::LinkDown(l) => {
                let l = usize::from(l) % LINKS.len();
                if self.up[l] {
                    self.up[l] = false;
                    self.feed(
                        Input::LinkDown(LinkId(l as u16), CloseReason::PeerClosed),
                        Ctx::Other,
                    );
                    self.check_link_down(l);
                }
            }
            Step::LinkUnreachable(l) => {
                let l = usize::from(l) % LINKS.len();
                if !self.up[l] {
                    let input =
                        Input::LinkUnreachable(LinkId(l as u16), CloseReason::ConnectTimedOut);
                    self.feed(input, Ctx::Other);
                }
            }
            Step::Reply { pick: n, how } => self.reply(n, &how),
            Step::Upstream {
                link,
                command: c,
                body,
            } => {
                let l = usize::from(link) % LINKS.len();
                if self.up[l] {
                    let c = command(c);
                    let pdu = Pdu::new(c.key(), 0, body.build(c));
                    self.feed(Input::LinkPdu(LinkId(l as u16), &pdu), Ctx::Other);
                }
            }
            Step::RouteKick {
                user,
                client_type,
                reason,
            } => {
                let kick = ImServerKickUser {
                    user_id: user_id(user),
                    client_type: CLIENT_TYPES[usize::from(client_type) % CLIENT_TYPES.len()] as i32,
                    reason: u32::from(reason % 3),
                };
                self.route_pdu(&kick.to_pdu(0));
            }
            Step::RouteMembers {
                group,
                change_type,
                changed,
                current,
            } => {
                let n = ImGroupChangeMemberNotify {
                    user_id: user_id(group),
                    change_type: i32::from(change_type % 4),
                    group_id: 1000 + u32::from(group % 4),
                    cur_user_id_list: current.iter().map(|&i| user_id(i)).collect(),
                    chg_user_id_list: changed.iter().map(|&i| user_id(i)).collect(),
                };
                self.route_pdu(&n.to_pdu(0));
            }
            Step::RoutePcStatus { user, on } => {
                let n = ImServerPcLoginStatusNotify {
                    user_id: user_id(user),
                    login_status: u32::from(on),
                };
                self.route_pdu(&n.to_pdu(0));
            }
            Step::Tick { secs } => self.tick(u64::from(secs % 40)),
            Step::Http => {
                let conn = self.next_conn;
                self.next_conn += 1;
                self.http.insert(conn);
                let request = http::Request::new(Bytes::new());
                self.feed(
                    Input::Http {
                        conn,
                        request: &request,
                    },
                    Ctx::Other,
                );
                if self.http.remove(&conn) {
                    self.fail("an HTTP request on msg_server's client port was not closed");
                }
                self.closed.insert(conn);
                let closed = Input::Closed {
                    conn,
                    reason: CloseCause::Http(HttpCloseReason::Local),
                };
                self.feed(closed, Ctx::Other);
            }
        }
    }

    /// A PDU from route_server (the first route link that is up).
    fn route_pdu(&mut self, pdu: &Pdu) {
        if let Some(l) = (0..LINKS.len()).find(|&l| self.up[l] && LINKS[l] == Upstream::Route) {
            self.feed(Input::LinkPdu(LinkId(l as u16), pdu), Ctx::Other);
        }
    }

    fn login(
        &mut self,
        conn: u8,
        name: u16,
        password: u16,
        client_type: u8,
        online_status: u8,
        garbage: bool,
    ) {
        let Some(conn) = self.client_conn(conn) else {
            return;
        };
        let client = &self.clients[&conn];
        match client.phase {
            Phase::Awaiting if client.credit() > 0 => {}
            // The session closes a second login itself.
            Phase::LoginPending | Phase::LoggedIn(_) => {
                self.close_client(conn, CloseReason::DuplicateLogin);
                return;
            }
            _ => return,
        }
        let name_len = if name.is_multiple_of(16) {
            usize::from(name % 400)
        } else {
            1 + usize::from(name % 8)
        };
        let pdu = if garbage {
            Pdu::new(
                Command::LoginReqUserlogin.key(),
                0,
                Bytes::from_static(&[0xff, 0xff]),
            )
        } else {
            ImLoginReq {
                user_name: "u".repeat(name_len),
                password: "p".repeat(if password.is_multiple_of(16) {
                    usize::from(password % 400)
                } else {
                    32
                }),
                online_status: i32::from(online_status % 4),
                client_type: CLIENT_TYPES[usize::from(client_type) % CLIENT_TYPES.len()] as i32,
                client_version: None,
            }
            .to_pdu(0)
        };
        let client = self
            .clients
            .get_mut(&conn)
            .unwrap_or_else(|| unreachable!());
        let seq = client.seq();
        let pdu = Pdu::new(pdu.key(), seq, pdu.body.clone());
        client.consumed += 1;
        client.phase = Phase::LoginPending;
        client.waiting.insert(
            seq,
            Waiting {
                reply: Some(Command::LoginResUserlogin.key()),
                created: self.now.unix(),
                login: true,
                upstream: None,
                what: "login".into(),
            },
        );
        let actions = self.feed(Input::LoginRequest { conn, pdu: &pdu }, Ctx::Other);
        self.note_upstream(conn, seq, &actions);
    }

    /// A client PDU through its session: heartbeats stay in the session, a
    /// second login or anything before login closes it, and nothing is
    /// read while the session's credit is used up.
    fn client_pdu(&mut self, conn: u8, pdu: Pdu) {
        let Some(conn) = self.client_conn(conn) else {
            return;
        };
        if pdu.is(Command::OtherHeartbeat.key()) {
            return;
        }
        let client = &self.clients[&conn];
        let user = match client.phase {
            Phase::LoggedIn(u) | Phase::Closing(Some(u)) => u,
            Phase::Closing(None) => return,
            Phase::Awaiting | Phase::LoginPending => {
                let reason = CloseReason::Unauthenticated(pdu.key());
                self.close_client(conn, reason);
                return;
            }
        };
        if pdu.is(Command::LoginReqUserlogin.key()) {
            self.close_client(conn, CloseReason::DuplicateLogin);
            return;
        }
        if client.credit() == 0 {
            return;
        }
        let tracked = matches!(client.phase, Phase::LoggedIn(_));
        let client = self
            .clients
            .get_mut(&conn)
            .unwrap_or_else(|| unreachable!());
        client.consumed += 1;
        let seq = client.seq();
        let pdu = Pdu::new(pdu.key(), seq, pdu.body.clone());
        if tracked {
            // Requests want an answer; an undecodable body closes the
            // session (nothing but a close answers it).
            let reply = match Message::decode(&pdu) {
                Ok(msg) if failure_reply(&msg, 0, seq).is_some() => {
                    Some(msg.command().and_then(reply_command).map(Command::key))
                }
                Ok(_) => None,
                Err(_) => Some(None),
            };
            if let Some(reply) = reply {
                client.waiting.insert(
                    seq,
                    Waiting {
                        reply,
                        created: self.now.unix(),
                        login: false,
                        upstream: None,
                        what: format!("{}", pdu.key()),
                    },
                );
            }
        }
        self.history
            .push(format!("  -> conn {conn} seq {seq} {}", pdu.key()));
        let actions = self.feed(Input::Pdu { conn, pdu: &pdu }, Ctx::Client(user));
        self.note_upstream(conn, seq, &actions);
    }

    /// Remembers which link a request still waiting went out on.
    fn note_upstream(&mut self, conn: u32, seq: u16, actions: &[Action<u32>]) {
        let link = actions.iter().find_map(|a| match a {
            Action::Link(l, pdu) if handle_of(pdu).is_some() => Some(usize::from(l.0)),
            _ => None,
        });
        if let (Some(l), Some(w)) = (
            link,
            self.clients
                .get_mut(&conn)
                .and_then(|c| c.waiting.get_mut(&seq)),
        ) {
            w.upstream = Some((l, self.epoch[l]));
        }
    }

    /// The connection ends (the peer left, or the session closed itself).
    fn close_client(&mut self, conn: u32, reason: CloseReason) {
        if self.clients.remove(&conn).is_none() {
            return;
        }
        self.closed.insert(conn);
        self.feed(
            Input::Closed {
                conn,
                reason: CloseCause::Pdu(reason),
            },
            Ctx::Other,
        );
    }

    fn tick(&mut self, secs: u64) {
        self.now = self.now.plus(Duration::from_secs(secs));
        self.feed(Input::Tick, Ctx::Other);
        let now = self.now.unix();
        for (conn, c) in &self.clients {
            if matches!(c.phase, Phase::Closing(_)) {
                continue;
            }
            for (seq, w) in &c.waiting {
                let ttl = if w.login {
                    LOGIN_TTL_SECS
                } else {
                    PENDING_TTL_SECS
                };
                if now.saturating_sub(w.created) >= ttl {
                    self.fail(format!(
                        "conn {conn}: request seq {seq} ({}) still unanswered {}s after it was sent",
                        w.what,
                        now - w.created
                    ));
                }
            }
        }
    }

    /// After link `l` went down: nothing sent on it may still wait.
    fn check_link_down(&self, l: usize) {
        for (conn, c) in &self.clients {
            if matches!(c.phase, Phase::Closing(_)) {
                continue;
            }
            for (seq, w) in &c.waiting {
                if w.upstream.is_some_and(|(link, _)| link == l) {
                    self.fail(format!(
                        "conn {conn}: request seq {seq} ({}) forwarded on link {l}, which went \
                         down, is still unanswered",
                        w.what
                    ));
                }
            }
        }
    }

    fn reply(&mut self, n: u8, how: &Reply) {
        let live: Vec<Sent> = self
            .sent
            .iter()
            .filter(|s| self.up[s.link] && self.epoch[s.link] == s.epoch)
            .cloned()
            .collect();
        let Some(sent) = pick(&live, n).cloned() else {
            return;
        };
        let pdu = answer(&sent, how);
        // A corrupt attach_data may find another request, for another
        // user: only "some authenticated user" can be checked then.
        let ctx = match (&sent.msg, sent.user, how) {
            (Message::OtherValidateReq(_), _, _) | (_, None, _) | (_, _, Reply::Corrupt(_)) => {
                Ctx::Other
            }
            (_, Some(u), _) => Ctx::Reply(u),
        };
        self.history.push(format!(
            "  -> reply {} to {:?}",
            pdu.key(),
            sent.msg.command()
        ));
        self.feed(Input::LinkPdu(LinkId(sent.link as u16), &pdu), ctx);
    }

    /// Checks and applies what the App asked for.
    fn apply(&mut self, actions: &[Action<u32>], ctx: Ctx) {
        // A login's presence updates go upstream before its accept.
        for action in actions {
            if let Action::Accept { user_id, .. } = action {
                self.authenticated.insert(*user_id);
            }
        }
        for action in actions {
            match action {
                Action::Send(conn, pdu) => {
                    self.target(*conn);
                    if Message::decode(pdu).is_err() {
                        self.fail(format!("undecodable {} sent to conn {conn}", pdu.key()));
                    }
                    if let Some(c) = self.clients.get_mut(conn) {
                        resolve(c, pdu);
                    }
                }
                Action::Accept {
                    conn,
                    user_id,
                    reply,
                    ..
                } => {
                    self.target(*conn);
                    let Some(c) = self.clients.get_mut(conn) else {
                        self.fail(format!("login of conn {conn}, not a client, accepted"));
                    };
                    if c.phase != Phase::LoginPending {
                        let phase = c.phase;
                        self.fail(format!("conn {conn} accepted in phase {phase:?}"));
                    }
                    c.phase = Phase::LoggedIn(*user_id);
                    if c.waiting.remove(&reply.seq()).is_none() {
                        self.fail(format!("conn {conn} accepted with seq {}", reply.seq()));
                    }
                    self.authenticated.insert(*user_id);
                }
                Action::Refuse { conn, reply } => {
                    self.target(*conn);
                    let Some(c) = self.clients.get_mut(conn) else {
                        self.fail(format!("login of conn {conn}, not a client, refused"));
                    };
                    if c.phase != Phase::LoginPending {
                        let phase = c.phase;
                        self.fail(format!("conn {conn} refused in phase {phase:?}"));
                    }
                    if c.waiting.remove(&reply.seq()).is_none() {
                        self.fail(format!("conn {conn} refused with seq {}", reply.seq()));
                    }
                    c.phase = Phase::Closing(None);
                    c.waiting.clear();
                }
                Action::Close { conn, notice } => {
                    self.target(*conn);
                    if self.http.remove(conn) {
                        continue;
                    }
                    let Some(c) = self.clients.get_mut(conn) else {
                        continue;
                    };
                    if let Some(n) = notice {
                        resolve(c, n);
                    }
                    c.phase = Phase::Closing(c.user());
                    c.waiting.clear();
                }
                Action::Link(link, pdu) => self.upstream(*link, pdu, ctx),
                Action::Grant(conn, n) => {
                    self.target(*conn);
                    let Some(c) = self.clients.get_mut(conn) else {
                        self.fail(format!("credit granted to conn {conn}, not a client"));
                    };
                    c.granted += n;
                    if c.granted > c.consumed {
                        let (g, k) = (c.granted, c.consumed);
                        self.fail(format!(
                            "conn {conn} granted {g} PDUs back after handing in {k}"
                        ));
                    }
                }
                other => self.fail(format!("unexpected action {other:?}")),
            }
        }
    }

    /// An action names `conn`: it must be open.
    fn target(&self, conn: u32) {
        if self.closed.contains(&conn) {
            self.fail(format!("action for conn {conn}, which is closed"));
        }
        if !self.clients.contains_key(&conn) && !self.http.contains(&conn) {
            self.fail(format!("action for conn {conn}, which never opened"));
        }
    }

    fn upstream(&mut self, link: LinkId, pdu: &Pdu, ctx: Ctx) {
        let l = usize::from(link.0);
        if l >= LINKS.len() || !self.up[l] {
            self.fail(format!("{} sent on link {l}, which is down", pdu.key()));
        }
        let Ok(msg) = Message::decode(pdu) else {
            self.fail(format!("undecodable {} sent upstream", pdu.key()));
        };
        let named = sender_ids(&msg);
        match ctx {
            Ctx::Client(user) | Ctx::Reply(user) => {
                if let Some(id) = named.iter().find(|&&id| id != user) {
                    self.fail(format!(
                        "{:?} sent upstream for user {user} names user {id}",
                        msg.command()
                    ));
                }
            }
            Ctx::Other => {
                if let Some(id) = named.iter().find(|&id| !self.authenticated.contains(id)) {
                    self.fail(format!(
                        "{:?} sent upstream names user {id}, whom no session logged in as",
                        msg.command()
                    ));
                }
            }
        }
        if handle_of(pdu).is_some() {
            let user = match ctx {
                Ctx::Client(u) | Ctx::Reply(u) => Some(u),
                Ctx::Other => requester(&msg),
            };
            if self.sent.len() >= MAX_SENT {
                self.sent.remove(0);
            }
            self.sent.push(Sent {
                link: l,
                epoch: self.epoch[l],
                seq: pdu.seq(),
                msg,
                user,
            });
        }
    }

    /// Time passes every limit: every request still waiting must then have
    /// been answered, and every open session must have its credit back.
    fn drain(&mut self) {
        self.history.push("drain".into());
        for _ in 0..3 {
            self.tick(u64::from(PENDING_TTL_SECS) + 1);
        }
        for (conn, c) in &self.clients {
            if matches!(c.phase, Phase::Closing(_)) {
                continue;
            }
            if let Some((seq, w)) = c.waiting.iter().next() {
                self.fail(format!(
                    "conn {conn}: request seq {seq} ({}) never answered",
                    w.what
                ));
            }
            if c.granted != c.consumed {
                self.fail(format!(
                    "conn {conn}: handed in {} PDUs, got {} back once all was answered",
                    c.consumed, c.granted
                ));
            }
        }
        // The one request that may be pending now: the groups of a user
        // logged in here, asked again at every tick while db_proxy does
        // not answer (a session the App closes is logged out at once, so
        // its user's groups are not asked for).
        let users: HashSet<u32> = self
            .clients
            .values()
            .filter_map(|c| match c.phase {
                Phase::LoggedIn(u) => Some(u),
                _ => None,
            })
            .collect();
        if self.app.pending() > users.len() {
            self.fail(format!(
                "{} requests pending after every limit passed, with {} users online",
                self.app.pending(),
                users.len()
            ));
        }
        if self.app.sessions() != self.clients.len() {
            self.fail(format!(
                "the App knows {} sessions, {} are open",
                self.app.sessions(),
                self.clients.len()
            ));
        }
        if self.app.pending() > self.app.max_pending() {
            self.fail("pending table over its cap");
        }
    }
}

/// A request answered by `pdu` (its seq, and its reply command or
/// `IMRequestFailed`) stops waiting.
fn resolve(c: &mut Client, pdu: &Pdu) {
    let seq = pdu.seq();
    let Some(w) = c.waiting.get(&seq) else {
        return;
    };
    if w.login {
        return;
    }
    if w.reply == Some(pdu.key()) || pdu.is(Command::OtherRequestFailed.key()) {
        c.waiting.remove(&seq);
    }
}

/// The request id msg_server put in a PDU's `attach_data`.
fn handle_of(pdu: &Pdu) -> Option<u32> {
    let mut msg = Message::decode(pdu).ok()?;
    let raw = msg.attach_data()?;
    Attach::decode(&raw).ok().map(|a| a.handle)
}

/// Every user id a PDU msg_server sends upstream names as the user it is
/// sent for (who asks, who sent, whose status changed).
fn sender_ids(msg: &Message) -> Vec<u32> {
    let mut ids: Vec<u32> = requester(msg).into_iter().collect();
    match msg {
        Message::MsgReadAck(m) => ids.push(m.user_id),
        Message::MsgReadNotify(m) => ids.push(m.user_id),
        Message::SwitchP2pCmd(m) => ids.push(m.from_user_id),
        Message::OtherServerKickUser(m) => ids.push(m.user_id),
        Message::OtherUserStatusUpdate(m) => ids.push(m.user_id),
        Message::OtherUserCntUpdate(m) => ids.push(m.user_id),
        Message::BuddyListRemoveSessionNotify(m) => ids.push(m.user_id),
        Message::BuddyListSignInfoChangedNotify(m) => ids.push(m.changed_user_id),
        Message::GroupChangeMemberNotify(m) => ids.push(m.user_id),
        _ => {}
    }
    ids
}

/// An upstream's answer to `sent`.
fn answer(sent: &Sent, how: &Reply) -> Pdu {
    let mut req = sent.msg.clone();
    let attach = req.attach_data();
    let seq = sent.seq;
    let with_attach = |mut m: Message, attach: Option<Bytes>| {
        if let Some(a) = m.attached_mut() {
            a.set_attach_data(attach);
        }
        m.to_pdu(seq)
    };
    let reply_of = |c: Command| reply_command(c).unwrap_or(Command::OtherRequestFailed);
    match how {
        Reply::Proper {
            user,
            ok,
            n,
            flag,
            ids,
        } => proper(&sent.msg, attach, seq, *user, *ok, *n, *flag, ids),
        Reply::Generic(body) => {
            let c = sent
                .msg
                .command()
                .map_or(Command::OtherRequestFailed, reply_of);
            with_attach(body.message(c), attach)
        }
        Reply::Failed(code) => {
            let key = sent.msg.key();
            ImRequestFailed {
                service_id: u32::from(key.service_id),
                command_id: u32::from(key.command_id),
                result_code: u32::from(code % 6),
                reason: Some("fuzz".into()),
                attach_data: attach,
            }
            .to_pdu(seq)
        }
        Reply::WrongType { command: c, body } => with_attach(body.message(command(*c)), attach),
        Reply::Corrupt(bytes) => proper(
            &sent.msg,
            Some(Bytes::copy_from_slice(bytes)),
            seq,
            0,
            true,
            1,
            false,
            &[],
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn proper(
    req: &Message,
    attach: Option<Bytes>,
    seq: u16,
    user: u8,
    ok: bool,
    n: u8,
    flag: bool,
    ids: &[u8],
) -> Pdu {
    let users = || ids.iter().map(|&i| user_id(i)).collect::<Vec<u32>>();
    let group = 1000 + u32::from(n % 4);
    let code = u32::from(!ok);
    match req {
        Message::OtherValidateReq(r) => ImValidateRsp {
            // Our db_proxy's groups with the login, or none (a C++ one).
            groups: n
                .is_multiple_of(2)
                .then(|| teamtalk_proto::pb::im::server::ImValidateGroups {
                    group_id_list: ids.iter().map(|&i| 1000 + u32::from(i % 4)).collect(),
                }),
            user_name: r.user_name.clone(),
            result_code: if ok { 0 } else { 1 + u32::from(n % 6) },
            result_string: None,
            user_info: (ok || flag).then(|| UserInfo {
                user_id: user_id(user),
                ..UserInfo::default()
            }),
            attach_data: attach,
        }
        .to_pdu(seq),
        Message::MsgData(m) => {
            let mut m = m.clone();
            m.msg_id = if ok { 1 + u32::from(n) } else { 0 };
            m.duplicate = flag.then_some(true);
            m.attach_data = attach;
            m.to_pdu(seq)
        }
        Message::OtherUserGroupsReq(r) => ImUserGroupsRsp {
            user_id: r.user_id,
            group_id_list: ids.iter().map(|&i| 1000 + u32::from(i % 4)).collect(),
            attach_data: attach,
        }
        .to_pdu(seq),
        Message::GroupCreateRequest(r) => ImGroupCreateRsp {
            user_id: r.user_id,
            result_code: code,
            group_id: (ok || flag).then_some(group),
            group_name: r.group_name.clone(),
            user_id_list: users(),
            attach_data: attach,
        }
        .to_pdu(seq),
        Message::GroupChangeMemberRequest(r) => ImGroupChangeMemberRsp {
            user_id: r.user_id,
            change_type: if flag {
                r.change_type
            } else {
                1 + i32::from(n % 2)
            },
            result_code: code,
            group_id: if flag { r.group_id } else { group },
            cur_user_id_list: users(),
            chg_user_id_list: r.member_id_list.clone(),
            attach_data: attach,
        }
        .to_pdu(seq),
        Message::BuddyListRemoveSessionReq(r) => ImRemoveSessionRsp {
            user_id: r.user_id,
            result_code: code,
            session_type: r.session_type,
            session_id: r.session_id,
            attach_data: attach,
        }
        .to_pdu(seq),
        Message::BuddyListChangeSignInfoRequest(r) => ImChangeSignInfoRsp {
            user_id: r.user_id,
            result_code: code,
            sign_info: Some(r.sign_info.clone()),
            attach_data: attach,
        }
        .to_pdu(seq),
        other => {
            let c = other
                .command()
                .and_then(reply_command)
                .unwrap_or(Command::OtherRequestFailed);
            let mut m = c
                .decode_body(Bytes::new())
                .unwrap_or_else(|_| unreachable!("an empty body decodes"));
            if let Some(a) = m.attached_mut() {
                a.set_attach_data(attach);
            }
            m.to_pdu(seq)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last request sent upstream that is still answerable, as a
    /// `Reply` pick.
    fn last(h: &Harness) -> u8 {
        let live = h
            .sent
            .iter()
            .filter(|s| h.up[s.link] && h.epoch[s.link] == s.epoch)
            .count();
        u8::try_from(live - 1).unwrap()
    }

    fn ok() -> Reply {
        Reply::Proper {
            user: 2,
            ok: true,
            n: 7,
            flag: false,
            ids: vec![1],
        }
    }

    /// A scripted run through the harness reaches what the fuzzer must:
    /// a login accepted through db_proxy, a message stored and acked, a
    /// query answered, a request failed by its link going down while the
    /// twin link is up, and everything checked at the end.
    #[test]
    fn a_scripted_run_reaches_the_deep_paths() {
        let mut h = Harness::new(None, 8, 4096, 16_384);
        h.step(Step::Open { addr: 0 });
        h.step(Step::Login {
            conn: 0,
            name: 1,
            password: 1,
            client_type: 0,
            online_status: 1,
            garbage: false,
        });
        assert_eq!(h.clients[&0].phase, Phase::LoginPending);
        h.step(Step::Reply {
            pick: last(&h),
            how: ok(),
        });
        assert_eq!(h.clients[&0].phase, Phase::LoggedIn(user_id(2)));
        // The groups request that follows a login.
        h.step(Step::Reply {
            pick: last(&h),
            how: ok(),
        });
        h.step(Step::Text {
            conn: 0,
            to: 0,
            msg_type: 0,
            len: 5,
            time: 1,
        });
        assert_eq!(h.clients[&0].waiting.len(), 1, "waiting for the store");
        h.step(Step::Reply {
            pick: last(&h),
            how: ok(),
        });
        assert!(h.clients[&0].waiting.is_empty(), "acked");
        assert_eq!(h.app.stats().messages_acked, 1);
        // A query forwarded on db link 0, which then dies while link 1 is
        // up: answered at once (checked by the harness).
        h.step(Step::Request {
            conn: 0,
            command: Command::ALL
                .iter()
                .position(|c| *c == Command::MsgUnreadCntRequest)
                .and_then(|i| u16::try_from(i).ok())
                .unwrap(),
            body: Body::default(),
        });
        assert_eq!(h.clients[&0].waiting.len(), 1);
        h.step(Step::LinkDown(0));
        assert!(
            h.clients
                .get(&0)
                .is_none_or(|c| c.waiting.is_empty() || matches!(c.phase, Phase::Closing(_)))
        );
        h.drain();
        assert_eq!(h.app.stats().logins_ok, 1);
    }
}
