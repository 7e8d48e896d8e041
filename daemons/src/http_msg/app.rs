//! [`HttpMsgApp`]: the whole http_msg_server as a pure state machine.
//!
//! An HTTP request becomes one request to db_proxy (0x0405 or 0x0407,
//! `user_id` 0: the administration) carrying a request id in its
//! `attach_data`, and a pending entry with a deadline. db_proxy's reply
//! finds the entry by that id and is answered in TeamTalk's JSON; a
//! successful change (or creation) is announced to route_server as a
//! 0x040b, which relays it to every msg_server with a member online.
//!
//! Every request gets one answer: at once when no db_proxy link is up or
//! too many requests wait, when its db_proxy link goes down, when its
//! deadline passes, or when the daemon stops. An entry whose deadline
//! passed is kept a while longer (`linger`), so a late success is still
//! announced to the members even though its HTTP client was told
//! "server error"; an HTTP client that hung up is treated the same way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use teamtalk_conn::OversizedBody;
use teamtalk_proto::attach::Attach;
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberNotify, ImGroupChangeMemberReq, ImGroupCreateReq,
};
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, info, warn};

use super::api::{self, Answer, Api, AppKeys, ErrorCode, Query};
use crate::clip::clip;
use crate::metrics::Scrape;
use crate::runtime::{self, Conn, Input, LinkId, NoJob, Now, Out, Request};

/// Bounds and timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpMsgLimits {
    /// How long a request waits for db_proxy before it is answered
    /// "server error" (`RequestTimeoutSecs`, 10 s).
    pub request_timeout: Duration,
    /// Requests waiting for db_proxy at once (`MaxPending`, 1024); more
    /// are answered 503 at once.
    pub max_pending: usize,
    /// How long a request stays known after its deadline, so a late
    /// success is still announced to the members.
    pub linger: Duration,
    /// Change notices held while no route_server link is up; the oldest
    /// is dropped beyond it.
    pub max_notices: usize,
}

impl Default for HttpMsgLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_pending: 1024,
            linger: Duration::from_secs(60),
            max_notices: 1024,
        }
    }
}

/// Which links go where, by the plan's ids.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// db_proxy links (`DBServerIP<n>`).
    pub db: Vec<LinkId>,
    /// route_server links (`RouteServerIP<n>`).
    pub route: Vec<LinkId>,
}

#[derive(Debug)]
struct Pending {
    /// The HTTP connection still waiting; `None` once it was answered
    /// (deadline) or went away.
    conn: Option<Conn>,
    api: Api,
    link: LinkId,
    deadline: Instant,
}

/// What the App counts.
#[derive(Debug, Default, Clone)]
pub struct HttpMsgStats {
    /// Answers by interface label and `error_code`.
    pub answers: BTreeMap<(&'static str, u32), u64>,
    /// Requests answered "server error" because db_proxy was too slow.
    pub timeouts: u64,
    /// db_proxy replies for requests already answered or gone.
    pub late_replies: u64,
    /// Change notices sent to route_server.
    pub notices_sent: u64,
    /// Change notices dropped (no route_server link for too long).
    pub notices_dropped: u64,
}

/// http_msg_server's logic; see the [module docs](self).
#[derive(Debug)]
pub struct HttpMsgApp {
    keys: AppKeys,
    links: Upstreams,
    up: HashSet<LinkId>,
    next_db: usize,
    next_id: u32,
    pending: HashMap<u32, Pending>,
    notices: VecDeque<Pdu>,
    limits: HttpMsgLimits,
    stats: HttpMsgStats,
}

impl HttpMsgApp {
    /// An App checking `keys`, talking to `links`.
    #[must_use]
    pub fn new(keys: AppKeys, links: Upstreams, limits: HttpMsgLimits) -> Self {
        Self {
            keys,
            links,
            up: HashSet::new(),
            next_db: 0,
            next_id: 1,
            pending: HashMap::new(),
            notices: VecDeque::new(),
            limits,
            stats: HttpMsgStats::default(),
        }
    }

    /// What was counted so far.
    #[must_use]
    pub fn stats(&self) -> HttpMsgStats {
        self.stats.clone()
    }

    /// Requests known: waiting for db_proxy, or answered and lingering.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn answer(
        &mut self,
        out: &mut Out<NoJob>,
        conn: Conn,
        label: &'static str,
        status: StatusCode,
        a: &Answer,
    ) {
        *self.stats.answers.entry((label, a.error_code)).or_default() += 1;
        out.respond(conn, a.response(status));
    }

    fn http(&mut self, now: Now, conn: Conn, req: &Request, out: &mut Out<NoJob>) {
        let Some(api) = Api::of_path(req.uri().path()) else {
            debug!(%conn, path = %clip(req.uri().path()), "no such interface");
            self.answer(
                out,
                conn,
                "other",
                StatusCode::NOT_FOUND,
                &Answer::of(ErrorCode::Interface),
            );
            return;
        };
        let label = api.label();
        if req.method() != Method::POST {
            let mut resp =
                Answer::of(ErrorCode::Interface).response(StatusCode::METHOD_NOT_ALLOWED);
            resp.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
            *self
                .stats
                .answers
                .entry((label, ErrorCode::Interface.code()))
                .or_default() += 1;
            out.respond(conn, resp);
            return;
        }
        if req.extensions().get::<OversizedBody>().is_some() {
            self.answer(
                out,
                conn,
                label,
                StatusCode::PAYLOAD_TOO_LARGE,
                &Answer::of(ErrorCode::Parameter),
            );
            return;
        }
        let query = match api::parse(api, req.body(), &self.keys) {
            Ok(q) => q,
            Err(refusal) => {
                info!(%conn, api = label, %refusal, "request refused");
                self.answer(
                    out,
                    conn,
                    label,
                    refusal.status(),
                    &Answer::of(refusal.code()),
                );
                return;
            }
        };
        if self.pending.len() >= self.limits.max_pending {
            warn!(%conn, api = label, waiting = self.pending.len(), "too many requests waiting for db_proxy");
            self.answer(
                out,
                conn,
                label,
                StatusCode::SERVICE_UNAVAILABLE,
                &Answer::of(ErrorCode::ServerException),
            );
            return;
        }
        let Some(link) = self.pick_db() else {
            warn!(%conn, api = label, "no db_proxy link up");
            self.answer(
                out,
                conn,
                label,
                StatusCode::OK,
                &Answer::of(ErrorCode::ServerException),
            );
            return;
        };
        let id = self.next_request_id();
        let attach = Some(Attach::handle(id).encode());
        let pdu = match query {
            Query::CreateGroup {
                requester,
                name,
                avatar,
                group_type,
                members,
            } => {
                info!(%conn, requester, name = %clip(&name), ?group_type, members = members.len(), "create group");
                Command::GroupCreateRequest.pdu(
                    0,
                    &ImGroupCreateReq {
                        user_id: 0,
                        group_type: i32::try_from(group_type.as_u32()).unwrap_or(0),
                        group_name: name,
                        group_avatar: avatar,
                        member_id_list: members,
                        attach_data: attach,
                    },
                )
            }
            Query::ChangeMembers {
                requester,
                group_id,
                change,
                members,
            } => {
                info!(%conn, requester, group_id, ?change, members = members.len(), "change members");
                Command::GroupChangeMemberRequest.pdu(
                    0,
                    &ImGroupChangeMemberReq {
                        user_id: 0,
                        change_type: i32::try_from(change.as_u32()).unwrap_or(0),
                        group_id,
                        member_id_list: members,
                        attach_data: attach,
                    },
                )
            }
        };
        let deadline = now.mono + self.limits.request_timeout;
        self.pending.insert(
            id,
            Pending {
                conn: Some(conn),
                api,
                link,
                deadline,
            },
        );
        out.link(link, pdu);
    }

    /// What a link goes to, for log lines.
    fn upstream(&self, link: LinkId) -> &'static str {
        if self.links.db.contains(&link) {
            "db_proxy"
        } else {
            "route_server"
        }
    }

    /// The next db_proxy link that is up, round robin.
    fn pick_db(&mut self) -> Option<LinkId> {
        let n = self.links.db.len();
        for i in 0..n {
            let link = self.links.db[(self.next_db + i) % n];
            if self.up.contains(&link) {
                self.next_db = (self.next_db + i + 1) % n;
                return Some(link);
            }
        }
        None
    }

    fn next_request_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    fn db_reply(&mut self, link: LinkId, pdu: &Pdu, out: &mut Out<NoJob>) {
        let mut msg = match Message::decode(pdu) {
            Ok(m) => m,
            Err(e) => {
                warn!(?link, key = %pdu.key(), error = %e, "unreadable PDU from db_proxy");
                return;
            }
        };
        if !matches!(
            msg,
            Message::GroupCreateResponse(_)
                | Message::GroupChangeMemberResponse(_)
                | Message::OtherRequestFailed(_)
        ) {
            debug!(?link, key = %pdu.key(), "PDU from db_proxy ignored");
            return;
        }
        let id = msg
            .attached_mut()
            .and_then(|a| a.attach_data().cloned())
            .and_then(|raw| Attach::decode(&raw).ok())
            .map(|a| a.handle);
        let Some(p) = id.and_then(|id| self.pending.remove(&id)) else {
            debug!(?link, key = %pdu.key(), "db_proxy reply for no request");
            self.stats.late_replies += 1;
            return;
        };
        let (answer, notice) = match msg {
            Message::GroupCreateResponse(r) => match (r.result_code, r.group_id) {
                (0, Some(group_id)) => {
                    info!(group_id, members = r.user_id_list.len(), "group created");
                    // TeamTalk tells nobody; members online learn of the
                    // group at once, as when a client creates one.
                    let notice = (!r.user_id_list.is_empty()).then(|| ImGroupChangeMemberNotify {
                        user_id: r.user_id,
                        change_type: 1,
                        group_id,
                        cur_user_id_list: r.user_id_list.clone(),
                        chg_user_id_list: r.user_id_list,
                    });
                    (Answer::with_group(ErrorCode::Success, group_id), notice)
                }
                (code, _) => {
                    info!(code, name = %clip(&r.group_name), "db_proxy did not create the group");
                    (Answer::with_group(ErrorCode::CreateGroup, 0), None)
                }
            },
            Message::GroupChangeMemberResponse(r) if r.result_code == 0 => {
                info!(
                    group_id = r.group_id,
                    changed = r.chg_user_id_list.len(),
                    "members changed"
                );
                let notice =
                    (!r.chg_user_id_list.is_empty()).then_some(ImGroupChangeMemberNotify {
                        user_id: r.user_id,
                        change_type: r.change_type,
                        group_id: r.group_id,
                        cur_user_id_list: r.cur_user_id_list,
                        chg_user_id_list: r.chg_user_id_list,
                    });
                (Answer::of(ErrorCode::Success), notice)
            }
            Message::GroupChangeMemberResponse(r) => {
                info!(
                    group_id = r.group_id,
                    code = r.result_code,
                    "db_proxy did not change the members"
                );
                (Answer::of(ErrorCode::ChangeMember), None)
            }
            Message::OtherRequestFailed(f) => {
                warn!(code = f.result_code, reason = %clip(f.reason.as_deref().unwrap_or("")), "db_proxy could not serve the request");
                (Answer::of(ErrorCode::ServerException), None)
            }
            _ => return,
        };
        match p.conn {
            Some(conn) => self.answer(out, conn, p.api.label(), StatusCode::OK, &answer),
            None => self.stats.late_replies += 1,
        }
        if let Some(n) = notice {
            self.notices
                .push_back(Command::GroupChangeMemberNotify.pdu(0, &n));
            while self.notices.len() > self.limits.max_notices {
                self.notices.pop_front();
                self.stats.notices_dropped += 1;
                warn!("change notice dropped: no route_server link for too long");
            }
            self.flush_notices(out);
        }
    }

    /// Sends the held notices to the first route_server link that is up.
    fn flush_notices(&mut self, out: &mut Out<NoJob>) {
        let Some(&link) = self.links.route.iter().find(|l| self.up.contains(l)) else {
            if !self.notices.is_empty() {
                debug!(
                    held = self.notices.len(),
                    "no route_server link up; notices held"
                );
            }
            return;
        };
        while let Some(pdu) = self.notices.pop_front() {
            self.stats.notices_sent += 1;
            out.link(link, pdu);
        }
    }

    /// Answers "server error" to every request waiting on `link` (or on
    /// any link, for `None`), and forgets them: no reply comes over a
    /// link that went down.
    fn fail_waiting(&mut self, link: Option<LinkId>, out: &mut Out<NoJob>) {
        let ids: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| link.is_none_or(|l| p.link == l))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = self.pending.remove(&id)
                && let Some(conn) = p.conn
            {
                self.answer(
                    out,
                    conn,
                    p.api.label(),
                    StatusCode::OK,
                    &Answer::of(ErrorCode::ServerException),
                );
            }
        }
    }

    /// Answers the requests whose deadline passed, and forgets those
    /// whose linger passed too. A scan: the table holds at most
    /// `max_pending` entries and this runs once a second.
    fn tick(&mut self, now: Now, out: &mut Out<NoJob>) {
        let mut overdue: Vec<(Conn, Api)> = Vec::new();
        let linger = self.limits.linger;
        self.pending.retain(|_, p| {
            if p.deadline <= now.mono
                && let Some(conn) = p.conn.take()
            {
                overdue.push((conn, p.api));
            }
            p.deadline + linger > now.mono
        });
        for (conn, api) in overdue {
            warn!(%conn, api = api.label(), "db_proxy did not answer in time");
            self.stats.timeouts += 1;
            self.answer(
                out,
                conn,
                api.label(),
                StatusCode::OK,
                &Answer::of(ErrorCode::ServerException),
            );
        }
    }
}

impl runtime::App for HttpMsgApp {
    type Job = NoJob;
    type Done = NoJob;

    fn name(&self) -> &'static str {
        "http_msg_server"
    }

    fn handle(&mut self, now: Now, input: Input<'_, NoJob>, out: &mut Out<NoJob>) {
        match input {
            Input::Http { conn, request } => self.http(now, conn, request, out),
            Input::Closed { conn, .. } => {
                for p in self.pending.values_mut() {
                    if p.conn == Some(conn) {
                        p.conn = None;
                    }
                }
            }
            Input::LinkUp(link) => {
                // At debug: `teamtalk up`'s banner says the daemons are up.
                debug!(upstream = self.upstream(link), "link up");
                self.up.insert(link);
                if self.links.route.contains(&link) {
                    self.flush_notices(out);
                }
            }
            Input::LinkDown(link, reason) => {
                warn!(upstream = self.upstream(link), %reason, "link down");
                self.up.remove(&link);
                if self.links.db.contains(&link) {
                    self.fail_waiting(Some(link), out);
                }
            }
            Input::LinkUnreachable(link, _) => {
                self.up.remove(&link);
            }
            Input::LinkPdu(link, pdu) => {
                if self.links.db.contains(&link) {
                    self.db_reply(link, pdu, out);
                } else {
                    // route_server relays to every peer what is for every
                    // msg_server (sign-info changes); none is for us.
                    debug!(?link, key = %pdu.key(), "PDU from route_server ignored");
                }
            }
            Input::Tick => self.tick(now, out),
            Input::Stopping => self.fail_waiting(None, out),
            Input::Done(job) => match job {},
            _ => {}
        }
    }

    fn collect(&self, out: &mut Scrape) {
        for ((api, code), n) in &self.stats.answers {
            out.counter(
                "teamtalk_http_msg_answers_total",
                "Answers given, by interface (create_group, change_members, other) and TeamTalk error_code.",
                &[("api", api), ("error_code", &code.to_string())],
                *n,
            );
        }
        out.counter(
            "teamtalk_http_msg_timeouts_total",
            "Requests answered \"server error\" because db_proxy did not answer in time.",
            &[],
            self.stats.timeouts,
        );
        out.counter(
            "teamtalk_http_msg_late_replies_total",
            "db_proxy replies that came after their request was answered or its client left.",
            &[],
            self.stats.late_replies,
        );
        out.counter(
            "teamtalk_http_msg_notices_total",
            "Member-change notices (0x040b) sent to route_server, or dropped while no route_server link was up.",
            &[("result", "sent")],
            self.stats.notices_sent,
        );
        out.counter(
            "teamtalk_http_msg_notices_total",
            "Member-change notices (0x040b) sent to route_server, or dropped while no route_server link was up.",
            &[("result", "dropped")],
            self.stats.notices_dropped,
        );
        out.gauge(
            "teamtalk_http_msg_pending",
            "Requests known: waiting for db_proxy, or answered and kept for a late reply.",
            &[],
            self.pending.len() as f64,
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        if !self.links.db.iter().any(|l| self.up.contains(l)) {
            problems.push("no db_proxy link up".to_owned());
        }
        if !self.links.route.iter().any(|l| self.up.contains(l)) {
            problems.push("no route_server link up".to_owned());
        }
    }
}
