//! [`run_route_app`]: route_server's App under arbitrary msg_servers,
//! checked against a model of who is online where.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use teamtalk_conn::is_mobile;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::ServerUserStat;
use teamtalk_proto::pb::im::buddy::{
    ImRemoveSessionNotify, ImSignInfoChangedNotify, ImUsersStatReq,
};
use teamtalk_proto::pb::im::ext::ImGroupSubscription;
use teamtalk_proto::pb::im::group::ImGroupChangeMemberNotify;
use teamtalk_proto::pb::im::message::{ImMsgData, ImMsgDataReadNotify};
use teamtalk_proto::pb::im::server::{ImOnlineUserInfo, ImServerKickUser, ImUserStatusUpdate};
use teamtalk_proto::pb::im::switch_service::Imp2pCmdMsg;
use teamtalk_proto::{Command, Message, Pdu};

use super::body::{Body, command};
use super::{pick, user_id, violated};
use crate::route::{Action, RouteApp};
use crate::rules::relay::{Audience, audience};
use crate::rules::sizing::MAX_FRAME_LEN;

/// Steps per run at most.
const MAX_STEPS: usize = 256;
/// Client types: Windows, Mac, iOS, Android, none, and impossible ones.
const CLIENT_TYPES: [i32; 7] = [0x01, 0x02, 0x11, 0x12, 0, -1, i32::MAX];
/// Statuses: online, offline, leave, and impossible ones.
const STATUSES: [u32; 5] = [1, 2, 3, 0, 99];

/// One thing that happens to route_server.
#[derive(Debug, Arbitrary)]
enum Step {
    /// A msg_server connects.
    Connect,
    /// A msg_server's connection ends.
    Disconnect(u8),
    /// A user's session on a msg_server logs in or out.
    Status {
        server: u8,
        user: u8,
        status: u8,
        client_type: u8,
    },
    /// A msg_server's whole list of online users.
    Snapshot {
        server: u8,
        entries: Vec<(u8, u8, u8)>,
    },
    /// A msg_server (un)subscribes to groups.
    Subscribe {
        server: u8,
        subscribe: bool,
        replace: Option<bool>,
        groups: Vec<u8>,
    },
    /// A msg_server relays a PDU for users elsewhere.
    Relay {
        server: u8,
        kind: u8,
        a: u8,
        b: u8,
        n: u8,
        ids: Vec<u8>,
    },
    /// A users-status request (`extra` more ids, to pass the bound).
    UsersStatus {
        server: u8,
        users: Vec<u8>,
        extra: u16,
        attach: Option<Vec<u8>>,
        big_attach: u8,
    },
    /// Any command with a well-formed body.
    Generic {
        server: u8,
        command: u16,
        body: Body,
    },
    /// Any command with arbitrary bytes.
    Raw {
        server: u8,
        command: u16,
        bytes: Vec<u8>,
    },
}

/// Sessions by (server, user, client type), as route_server should see
/// them.
#[derive(Debug, Default)]
struct Model {
    sessions: BTreeMap<(u32, u32, u32), u32>,
    subscriptions: HashMap<u32, BTreeSet<u32>>,
}

impl Model {
    fn pc(&self, user: u32) -> u32 {
        self.sessions
            .iter()
            .filter(|((_, u, ct), _)| *u == user && !is_mobile(*ct))
            .map(|(_, n)| n)
            .sum()
    }

    fn all(&self, user: u32) -> u32 {
        self.sessions
            .iter()
            .filter(|((_, u, _), _)| *u == user)
            .map(|(_, n)| n)
            .sum()
    }

    fn hosts(&self, server: u32, user: u32) -> bool {
        self.sessions
            .keys()
            .any(|(s, u, _)| *s == server && *u == user)
    }

    fn forget_server(&mut self, server: u32) {
        self.sessions.retain(|(s, _, _), _| *s != server);
    }

    fn users(&self) -> BTreeSet<u32> {
        self.sessions.keys().map(|(_, u, _)| *u).collect()
    }
}

struct Harness {
    app: RouteApp<u32>,
    model: Model,
    /// Connected msg_servers, in connection order.
    servers: Vec<u32>,
    next: u32,
    /// The presence last announced for each user.
    announced: HashMap<u32, i32>,
    history: Vec<String>,
}

/// Drives a [`RouteApp`] with the steps `data` encodes, checking after
/// every step: no panic; the indexes agree with each other
/// ([`RouteApp::check_invariants`]) and with a model of the sessions the
/// msg_servers reported (sessions and PC sessions per user, hosts); a
/// relayed PDU reaches exactly the other msg_servers hosting a recipient
/// (or subscribed to its group), once each, never its sender (but for the
/// signature notice meant for everyone); a users-status request is
/// answered once, to its sender, with its seq, the model's presence and
/// its `attach_data`, or refused with `IMRequestFailed`, within a frame;
/// nothing goes to a msg_server that is not connected; the presence
/// announced last for each user is its state.
///
/// # Panics
/// On the first broken invariant, naming it and the last steps.
pub fn run_route_app(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut h = Harness {
        app: RouteApp::new(),
        model: Model::default(),
        servers: Vec::new(),
        next: 0,
        announced: HashMap::new(),
        history: Vec::new(),
    };
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
    for (user, status) in &h.announced {
        let now = h.app.status(*user) as i32;
        if *status != now {
            h.fail(format!("user {user} last announced {status}, now {now}"));
        }
    }
}

impl Harness {
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        violated(what, &self.history)
    }

    fn server(&self, n: u8) -> Option<u32> {
        pick(&self.servers, n).copied()
    }

    fn step(&mut self, step: Step) {
        self.history.push(format!("{step:?}"));
        match step {
            Step::Connect => {
                let s = self.next;
                self.next += 1;
                self.servers.push(s);
                self.app.server_connected(s);
                self.check(&[]);
            }
            Step::Disconnect(n) => {
                let Some(s) = self.server(n) else { return };
                self.servers.retain(|&x| x != s);
                self.model.forget_server(s);
                self.model.subscriptions.remove(&s);
                let out = self.app.server_disconnected(s);
                self.check(&out);
            }
            Step::Status {
                server,
                user,
                status,
                client_type,
            } => {
                let Some(s) = self.server(server) else { return };
                let (user, status) = (user_id(user), STATUSES[usize::from(status) % 5]);
                let ct = CLIENT_TYPES[usize::from(client_type) % CLIENT_TYPES.len()];
                if let Ok(ct) = u32::try_from(ct) {
                    let key = (s, user, ct);
                    match status {
                        1 => *self.model.sessions.entry(key).or_insert(0) += 1,
                        2 => {
                            if let Some(n) = self.model.sessions.get_mut(&key) {
                                *n -= 1;
                                if *n == 0 {
                                    self.model.sessions.remove(&key);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let pdu = ImUserStatusUpdate {
                    user_status: status,
                    user_id: user,
                    client_type: ct,
                }
                .to_pdu(0);
                self.pdu(s, &pdu);
            }
            Step::Snapshot { server, entries } => {
                let Some(s) = self.server(server) else { return };
                let stats: Vec<ServerUserStat> = entries
                    .iter()
                    .take(64)
                    .map(|&(u, st, ct)| ServerUserStat {
                        user_id: user_id(u),
                        status: STATUSES[usize::from(st) % 5] as i32,
                        client_type: CLIENT_TYPES[usize::from(ct) % CLIENT_TYPES.len()],
                    })
                    .collect();
                self.model.forget_server(s);
                for st in &stats {
                    if let (1, Ok(ct)) = (st.status, u32::try_from(st.client_type)) {
                        *self.model.sessions.entry((s, st.user_id, ct)).or_insert(0) += 1;
                    }
                }
                let pdu = ImOnlineUserInfo {
                    user_stat_list: stats,
                }
                .to_pdu(0);
                self.pdu(s, &pdu);
            }
            Step::Subscribe {
                server,
                subscribe,
                replace,
                groups,
            } => {
                let Some(s) = self.server(server) else { return };
                let groups: Vec<u32> = groups.iter().map(|&g| group(g)).collect();
                let mine = self.model.subscriptions.entry(s).or_default();
                if replace == Some(true) {
                    mine.clear();
                }
                for g in &groups {
                    if subscribe {
                        mine.insert(*g);
                    } else {
                        mine.remove(g);
                    }
                }
                let pdu = ImGroupSubscription {
                    subscribe,
                    group_id_list: groups,
                    replace,
                }
                .to_pdu(0);
                self.pdu(s, &pdu);
            }
            Step::Relay {
                server,
                kind,
                a,
                b,
                n,
                ids,
            } => {
                let Some(s) = self.server(server) else { return };
                let pdu = relay_pdu(kind, a, b, n, &ids);
                self.pdu(s, &pdu);
            }
            Step::UsersStatus {
                server,
                users,
                extra,
                attach,
                big_attach,
            } => {
                let Some(s) = self.server(server) else { return };
                let mut ids: Vec<u32> = users.iter().map(|&u| user_id(u)).collect();
                // Now and then a request names many more, up to past the
                // bound.
                if extra.is_multiple_of(64) {
                    ids.extend((0..u32::from(extra) * 2).map(|i| 1 + i % 7));
                }
                let attach = if big_attach > 250 {
                    Some(Bytes::from(vec![
                        7;
                        MAX_FRAME_LEN
                            - 64
                            - usize::from(big_attach)
                    ]))
                } else {
                    attach.map(Bytes::from)
                };
                let req = ImUsersStatReq {
                    user_id: user_id(server),
                    user_id_list: ids,
                    attach_data: attach,
                };
                let pdu = req.to_pdu(extra);
                if pdu.wire_len() <= MAX_FRAME_LEN {
                    self.pdu(s, &pdu);
                }
            }
            Step::Generic {
                server,
                command: c,
                body,
            } => {
                let Some(s) = self.server(server) else { return };
                let c = command(c);
                if matches!(
                    c,
                    Command::OtherOnlineUserInfo
                        | Command::OtherUserStatusUpdate
                        | Command::OtherGroupSubscription
                ) {
                    // Those change the model: they have their own steps.
                    return;
                }
                let pdu = Pdu::new(c.key(), 0, body.build(c));
                self.pdu(s, &pdu);
            }
            Step::Raw {
                server,
                command: c,
                bytes,
            } => {
                let Some(s) = self.server(server) else { return };
                let c = command(c);
                let pdu = Pdu::new(c.key(), 0, Bytes::from(bytes));
                if Message::decode(&pdu).is_ok()
                    && matches!(
                        c,
                        Command::OtherOnlineUserInfo
                            | Command::OtherUserStatusUpdate
                            | Command::OtherGroupSubscription
                    )
                {
                    return;
                }
                self.pdu(s, &pdu);
            }
        }
    }

    /// A PDU from msg_server `from`; checks what route_server did with it.
    fn pdu(&mut self, from: u32, pdu: &Pdu) {
        let out = self.app.handle_pdu(from, pdu);
        self.check(&out);
        let sends: Vec<(u32, &Pdu)> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send(to, p) => Some((*to, p)),
                _ => None,
            })
            .collect();
        let Ok(msg) = Message::decode(pdu) else {
            if !sends.is_empty() {
                self.fail("an undecodable PDU was acted upon");
            }
            return;
        };
        let copies: Vec<u32> = sends
            .iter()
            .filter(|(_, p)| *p == pdu)
            .map(|(to, _)| *to)
            .collect();
        match &msg {
            Message::MsgData(_)
            | Message::MsgReadNotify(_)
            | Message::SwitchP2pCmd(_)
            | Message::OtherServerKickUser(_)
            | Message::BuddyListRemoveSessionNotify(_)
            | Message::BuddyListSignInfoChangedNotify(_)
            | Message::GroupChangeMemberNotify(_)
            | Message::FileNotify(_) => {
                let expected: Vec<u32> = match audience(&msg) {
                    Some(Audience::Everyone) => self.servers.clone(),
                    Some(Audience::Group(g)) => self.others(from, |s| self.subscribed(s, g)),
                    Some(Audience::GroupAndUsers(g, users)) => self.others(from, |s| {
                        self.subscribed(s, g) || users.iter().any(|&u| self.model.hosts(s, u))
                    }),
                    Some(a) => {
                        let users = a.users().to_vec();
                        self.others(from, |s| users.iter().any(|&u| self.model.hosts(s, u)))
                    }
                    None => Vec::new(),
                };
                if copies != expected {
                    self.fail(format!(
                        "{:?} from {from} relayed to {copies:?}, expected {expected:?}",
                        msg.command()
                    ));
                }
                if sends.len() != copies.len() {
                    self.fail("a relay came with other PDUs");
                }
            }
            Message::BuddyListUsersStatusRequest(req) => {
                self.check_status_answer(from, pdu, req, &sends)
            }
            _ => {
                if !copies.is_empty()
                    && !matches!(
                        msg,
                        Message::OtherOnlineUserInfo(_) | Message::OtherUserStatusUpdate(_)
                    )
                {
                    self.fail(format!("{:?} was sent on as it came", msg.command()));
                }
            }
        }
    }

    /// The connected msg_servers but `from` for which `wanted` holds, in
    /// connection order.
    fn others(&self, from: u32, wanted: impl Fn(u32) -> bool) -> Vec<u32> {
        self.servers
            .iter()
            .copied()
            .filter(|&s| s != from && wanted(s))
            .collect()
    }

    fn subscribed(&self, server: u32, group: u32) -> bool {
        self.model
            .subscriptions
            .get(&server)
            .is_some_and(|g| g.contains(&group))
    }

    fn check_status_answer(
        &self,
        from: u32,
        pdu: &Pdu,
        req: &ImUsersStatReq,
        sends: &[(u32, &Pdu)],
    ) {
        let [(to, answer)] = sends else {
            self.fail(format!(
                "users-status request answered {} times",
                sends.len()
            ));
        };
        if *to != from || answer.seq() != pdu.seq() {
            self.fail("users-status answer to the wrong server or seq");
        }
        if answer.wire_len() > MAX_FRAME_LEN {
            self.fail("users-status answer over the frame limit");
        }
        match Message::decode(answer) {
            Ok(Message::BuddyListUsersStatusResponse(rsp)) => {
                if rsp.attach_data != req.attach_data || rsp.user_id != req.user_id {
                    self.fail("users-status answer without the request's attach_data or user");
                }
                if rsp.user_stat_list.len() != req.user_id_list.len() {
                    self.fail("users-status answer of another length");
                }
                let mut presence: HashMap<u32, i32> = HashMap::new();
                for (s, &u) in rsp.user_stat_list.iter().zip(&req.user_id_list) {
                    let want = *presence
                        .entry(u)
                        .or_insert_with(|| if self.model.pc(u) > 0 { 1 } else { 2 });
                    if s.user_id != u || s.status != want {
                        self.fail(format!("user {u} answered {} instead of {want}", s.status));
                    }
                }
            }
            Ok(Message::OtherRequestFailed(f)) => {
                let key = Command::BuddyListUsersStatusRequest.key();
                if (f.service_id, f.command_id)
                    != (u32::from(key.service_id), u32::from(key.command_id))
                {
                    self.fail("IMRequestFailed naming another request");
                }
            }
            other => self.fail(format!("users-status answered with {other:?}")),
        }
    }

    /// After every input: the App's indexes agree with each other and with
    /// the model, and nothing went to a msg_server that is not connected.
    fn check(&mut self, out: &[Action<u32>]) {
        if let Err(e) = self.app.check_invariants() {
            self.fail(e);
        }
        if self.app.server_count() != self.servers.len() {
            self.fail(format!(
                "{} msg_servers known, {} connected",
                self.app.server_count(),
                self.servers.len()
            ));
        }
        for action in out {
            let Action::Send(to, p) = action else {
                self.fail(format!("unexpected action {action:?}"));
            };
            if !self.servers.contains(to) {
                self.fail(format!("{} sent to {to}, which is not connected", p.key()));
            }
            if let Ok(Message::BuddyListStatusNotify(n)) = Message::decode(p) {
                self.announced
                    .insert(n.user_stat.user_id, n.user_stat.status);
            }
        }
        if self.servers.is_empty() {
            // Nobody is left to have heard anything.
            self.announced.clear();
        }
        let mut users = self.model.users();
        users.extend((0..9).map(user_id));
        for u in users {
            if self.app.sessions(u) != self.model.all(u)
                || self.app.pc_sessions(u) != self.model.pc(u)
            {
                self.fail(format!(
                    "user {u}: {} sessions ({} PC) known, the model has {} ({} PC)",
                    self.app.sessions(u),
                    self.app.pc_sessions(u),
                    self.model.all(u),
                    self.model.pc(u)
                ));
            }
            let hosts: Vec<u32> = self.others(u32::MAX, |s| self.model.hosts(s, u));
            if self.app.hosts(u) != hosts {
                self.fail(format!(
                    "user {u} hosted on {:?}, the model says {hosts:?}",
                    self.app.hosts(u)
                ));
            }
        }
        if self.app.user_count() != self.model.users().len() {
            self.fail("more users indexed than online");
        }
        for &s in &self.servers {
            for g in 0..6 {
                let g = group(g);
                if self.app.is_subscribed(s, g) != self.subscribed(s, g) {
                    self.fail(format!("subscription of {s} to {g} differs from the model"));
                }
            }
        }
    }
}

fn group(n: u8) -> u32 {
    1000 + u32::from(n % 6)
}

/// A PDU of one of the kinds msg_servers relay.
fn relay_pdu(kind: u8, a: u8, b: u8, n: u8, ids: &[u8]) -> Pdu {
    let (a, b) = (user_id(a), user_id(b));
    match kind % 8 {
        0 | 1 => ImMsgData {
            from_user_id: a,
            to_session_id: if kind.is_multiple_of(8) { b } else { group(n) },
            msg_id: u32::from(n),
            create_time: 0,
            msg_type: [1, 2, 0x11, 0x12, 7][usize::from(n % 5)],
            msg_data: Bytes::from_static(b"hi"),
            attach_data: None,
            dedupe_key: None,
            duplicate: None,
        }
        .to_pdu(0),
        2 => ImMsgDataReadNotify {
            user_id: a,
            session_id: b,
            msg_id: u32::from(n),
            session_type: 1,
        }
        .to_pdu(0),
        3 => Imp2pCmdMsg {
            from_user_id: a,
            to_user_id: b,
            cmd_msg_data: "shake".into(),
        }
        .to_pdu(0),
        4 => ImServerKickUser {
            user_id: a,
            client_type: CLIENT_TYPES[usize::from(n) % CLIENT_TYPES.len()],
            reason: u32::from(n % 3),
        }
        .to_pdu(0),
        5 => ImRemoveSessionNotify {
            user_id: a,
            session_type: 1,
            session_id: b,
        }
        .to_pdu(0),
        6 => ImSignInfoChangedNotify {
            changed_user_id: a,
            sign_info: "hello".into(),
        }
        .to_pdu(0),
        _ => ImGroupChangeMemberNotify {
            user_id: a,
            change_type: i32::from(n % 3),
            group_id: group(n),
            cur_user_id_list: ids.iter().map(|&i| user_id(i)).collect(),
            chg_user_id_list: ids.iter().rev().take(3).map(|&i| user_id(i)).collect(),
        }
        .to_pdu(0),
    }
}
