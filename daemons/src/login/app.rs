//! [`LoginApp`]: login_server as a pure state machine: the msg_server
//! port, the legacy client port and the `/msg_server` HTTP endpoint over
//! one [`Directory`] of registered msg_servers.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

use ::http::{HeaderValue, Method, StatusCode, header};
use bytes::Bytes;

use teamtalk_conn::{LoadTable, MsgServerLoad, ServiceUrls, WsOrigins};
use teamtalk_proto::pb::im::base_define::ResultType;
use teamtalk_proto::pb::im::login::ImMsgServRsp;
use teamtalk_proto::pb::im::server::{ImMsgServInfo, ImUserCntUpdate};
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, info, warn};

use crate::metrics::{CounterMap, Scrape};
use crate::runtime::{self, CloseCause, Conn, Input, NoJob, Now, Out, PortId, Request, Response};

use super::web::WebClient;

/// `user_action` of `CID_OTHER_USER_CNT_UPDATE`: a client connected.
const USER_CNT_INC: u32 = 1;
/// `user_action` of `CID_OTHER_USER_CNT_UPDATE`: a client left.
const USER_CNT_DEC: u32 = 2;

/// The registered msg_servers with their load, and the URLs handed out
/// with them: what every answer of login_server is made from.
#[derive(Debug)]
pub struct Directory<C> {
    table: LoadTable<C>,
    /// The registered ids, for listing them in a stable order
    /// ([`LoadTable`] only looks up by id).
    ids: BTreeSet<C>,
    urls: ServiceUrls,
}

impl<C: Copy + Ord> Directory<C> {
    /// An empty table handing out `urls`.
    #[must_use]
    pub fn new(urls: ServiceUrls) -> Self {
        Self {
            table: LoadTable::new(),
            ids: BTreeSet::new(),
            urls,
        }
    }

    /// Registers msg_server `id` or replaces what it announced.
    pub fn register(&mut self, id: C, load: MsgServerLoad) {
        self.table.upsert(id, load);
        self.ids.insert(id);
    }

    /// Forgets msg_server `id`.
    pub fn unregister(&mut self, id: C) -> Option<MsgServerLoad> {
        self.ids.remove(&id);
        self.table.remove(id)
    }

    /// One client connection more or less on `id`; false if `id` never
    /// registered.
    pub fn user_connected(&mut self, id: C, connected: bool) -> bool {
        self.table.user_connected(id, connected)
    }

    /// The body of the `/msg_server` HTTP answer (for a `browser`: a
    /// msg_server with a WebSocket port), as a preview: nothing is
    /// counted against the msg_server it names.
    #[must_use]
    pub fn msg_server_json(&self, browser: bool) -> String {
        self.table.msg_server_json(&self.urls, browser)
    }

    /// The `/msg_server` answer for a client asking at `now`: the
    /// msg_server it names counts it as in flight until it reports a
    /// login ([`LoadTable::assign`]), so a burst of clients spreads.
    /// Without a time (an input handled outside [`LoginApp::step`]), a
    /// preview.
    pub fn assign_json(&mut self, now: Option<Instant>, browser: bool) -> String {
        match now {
            Some(now) => self.table.assign_json(now, &self.urls, browser),
            None => self.msg_server_json(browser),
        }
    }

    /// The legacy TCP answer (`CID_LOGIN_RES_MSGSERVER`): the same choice
    /// as HTTP, refusals as TeamTalk's `ResultType` codes, counted
    /// against the msg_server it names as [`Directory::assign_json`] does.
    pub fn msg_serv_rsp(&mut self, now: Option<Instant>) -> ImMsgServRsp {
        let choice = match now {
            Some(now) => self.table.assign(now),
            None => self.table.pick(),
        };
        match choice {
            Ok((_, s)) => ImMsgServRsp {
                result_code: ResultType::RefuseReasonNone as i32,
                prior_ip: Some(s.ip1.clone()),
                backip_ip: Some(s.ip2.clone()),
                port: Some(u32::from(s.port)),
            },
            Err(refusal) => ImMsgServRsp {
                result_code: i32::try_from(refusal.code()).unwrap_or(i32::MAX),
                prior_ip: None,
                backip_ip: None,
                port: None,
            },
        }
    }

    /// Every registered msg_server with its current load, in id order.
    #[must_use]
    pub fn msg_servers(&self) -> Vec<MsgServerLoad> {
        self.ids
            .iter()
            .filter_map(|&id| self.table.get(id).cloned())
            .collect()
    }

    /// Client connections over all msg_servers.
    #[must_use]
    pub fn total_online(&self) -> u64 {
        self.table.total_online()
    }

    /// The URLs handed out with a msg_server.
    #[must_use]
    pub fn urls(&self) -> &ServiceUrls {
        &self.urls
    }
}

/// Which door a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerKind {
    /// The msg_server port.
    MsgServer,
    /// The legacy client port.
    Client,
    /// The HTTP port (`/msg_server`).
    Http,
}

/// What [`LoginApp`] asks the runner to do.
pub type Action<C> = runtime::Action<NoJob, C>;

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginCounters {
    /// Legacy TCP queries answered.
    pub tcp_queries: u64,
    /// Commands a peer had no business sending (the connection is kept
    /// for msg_servers, closed for clients).
    pub unexpected: u64,
    /// Bodies that do not decode or carry impossible values.
    pub malformed: u64,
}

/// login_server's state and rules. The runtime reports connections
/// ([`LoginApp::connected`] / [`LoginApp::disconnected`]), PDUs
/// ([`LoginApp::handle_pdu`]) and HTTP requests ([`LoginApp::http`]); `C`
/// identifies a connection ([`Conn`] in the daemon, integers in tests).
#[derive(Debug)]
pub struct LoginApp<C> {
    dir: Directory<C>,
    peers: HashMap<C, PeerKind>,
    /// Which door each listener is.
    ports: HashMap<PortId, PeerKind>,
    counters: LoginCounters,
    /// `/msg_server` requests by outcome (`200`, `404`, or `dropped`).
    http: CounterMap,
    /// Web pages on other origins allowed to read `/msg_server` (CORS).
    cors: Option<WsOrigins>,
    /// The web client served at the root; `None` answers 404 there.
    web: Option<WebClient>,
    /// Web client requests by status (`200`, `304`, `405`).
    web_requests: CounterMap,
    /// When the input being handled arrived ([`LoginApp::step`]); the
    /// time an answer naming a msg_server is counted from.
    now: Option<Instant>,
}

impl<C: Copy + Eq + Hash + Ord + Debug> LoginApp<C> {
    /// An app over `dir`, whose listeners are the doors in `ports`.
    #[must_use]
    pub fn new(dir: Directory<C>, ports: HashMap<PortId, PeerKind>) -> Self {
        Self {
            dir,
            peers: HashMap::new(),
            ports,
            counters: LoginCounters::default(),
            http: CounterMap::new(),
            cors: None,
            web: None,
            web_requests: CounterMap::new(),
            now: None,
        }
    }

    /// Serves the web client at the root of the HTTP port (`/`,
    /// `/app.js`, `/proto/…`); `/msg_server` is unchanged.
    #[must_use]
    pub fn with_web_client(mut self, web: Option<WebClient>) -> Self {
        self.web = web;
        self
    }

    /// Lets pages of `origins` read `/msg_server` from another origin
    /// (`Access-Control-Allow-Origin`), e.g. a web client hosted apart.
    #[must_use]
    pub fn with_cors(mut self, origins: Option<WsOrigins>) -> Self {
        self.cors = origins;
        self
    }

    /// The directory of msg_servers.
    #[must_use]
    pub fn directory(&self) -> &Directory<C> {
        &self.dir
    }

    /// The counters so far.
    #[must_use]
    pub fn counters(&self) -> LoginCounters {
        self.counters
    }

    /// A connection arrived through door `kind`. A msg_server is offered
    /// only once it has announced itself.
    pub fn connected(&mut self, conn: C, kind: PeerKind) {
        self.peers.insert(conn, kind);
    }

    /// A connection ended; a msg_server behind it is no longer offered.
    pub fn disconnected(&mut self, conn: C) {
        if self.peers.remove(&conn) == Some(PeerKind::MsgServer) {
            match self.dir.unregister(conn) {
                Some(s) => info!(?conn, host = %s.host_name, ip = %s.ip1, port = s.port,
                    "msg_server unregistered"),
                None => info!(?conn, "msg_server left without registering"),
            }
        }
    }

    /// Handles one PDU from `conn`. A connection never announced counts as
    /// a msg_server (the driver always announces first).
    pub fn handle_pdu(&mut self, conn: C, pdu: &Pdu) -> Vec<Action<C>> {
        let kind = *self.peers.entry(conn).or_insert(PeerKind::MsgServer);
        let msg = match Message::decode(pdu) {
            Ok(msg) => msg,
            Err(e) => {
                warn!(?conn, ?kind, error = %e, "undecodable PDU");
                self.counters.malformed += 1;
                return match kind {
                    PeerKind::Client | PeerKind::Http => {
                        vec![Action::Close { conn, notice: None }]
                    }
                    PeerKind::MsgServer => Vec::new(),
                };
            }
        };
        debug!(?conn, ?kind, cmd = ?msg.command(), seq = pdu.seq(), "pdu");
        match kind {
            PeerKind::MsgServer => {
                self.msg_server_pdu(conn, msg);
                Vec::new()
            }
            PeerKind::Client => self.client_pdu(conn, pdu.seq(), msg),
            PeerKind::Http => vec![Action::Close { conn, notice: None }],
        }
    }

    fn msg_server_pdu(&mut self, conn: C, msg: Message) {
        match msg {
            Message::OtherMsgServInfo(info) => self.register(conn, info),
            Message::OtherUserCntUpdate(ImUserCntUpdate {
                user_action,
                user_id,
            }) => {
                let connected = match user_action {
                    USER_CNT_INC => true,
                    USER_CNT_DEC => false,
                    other => {
                        warn!(
                            ?conn,
                            user_action = other,
                            "user count update with an unknown action"
                        );
                        self.counters.malformed += 1;
                        return;
                    }
                };
                if self.dir.user_connected(conn, connected) {
                    debug!(?conn, user_id, connected, "msg_server load changed");
                } else {
                    warn!(?conn, "user count update from an unregistered msg_server");
                    self.counters.unexpected += 1;
                }
            }
            Message::OtherHeartbeat(_) => {}
            other => {
                warn!(?conn, key = ?other.key(), "unexpected command from msg_server dropped");
                self.counters.unexpected += 1;
            }
        }
    }

    fn register(&mut self, conn: C, info: ImMsgServInfo) {
        let Ok(port) = u16::try_from(info.port) else {
            warn!(
                ?conn,
                port = info.port,
                "msg_server announced an impossible port"
            );
            self.counters.malformed += 1;
            return;
        };
        info!(?conn, host = %info.host_name, ip1 = %info.ip1, ip2 = %info.ip2, port,
            max = info.max_conn_cnt, cur = info.cur_conn_cnt, "msg_server registered");
        self.dir.register(
            conn,
            MsgServerLoad {
                ip1: info.ip1,
                ip2: info.ip2,
                port,
                max_conn_cnt: info.max_conn_cnt,
                cur_conn_cnt: info.cur_conn_cnt,
                host_name: info.host_name,
                ws_port: info.ws_port.and_then(|p| u16::try_from(p).ok()),
                ws_tls: info.ws_tls.unwrap_or(false),
            },
        );
    }

    fn client_pdu(&mut self, conn: C, seq: u16, msg: Message) -> Vec<Action<C>> {
        match msg {
            Message::LoginReqMsgserver(_) => {
                let rsp = self.dir.msg_serv_rsp(self.now);
                debug!(
                    ?conn,
                    result = rsp.result_code,
                    "legacy msg_server query answered"
                );
                self.counters.tcp_queries += 1;
                vec![
                    Action::Send(conn, Command::LoginResMsgserver.pdu(seq, &rsp)),
                    Action::Close { conn, notice: None },
                ]
            }
            other => {
                warn!(?conn, key = ?other.key(), "unexpected command on the client port; closing");
                self.counters.unexpected += 1;
                vec![Action::Close { conn, notice: None }]
            }
        }
    }
}

/// The only path login_server serves; matched by prefix, as TeamTalk does
/// (`/msg_server?anything` and `/msg_server/` are the same request).
pub const MSG_SERVER_PATH: &str = "/msg_server";

/// The query a browser adds (`/msg_server?transport=ws`): only msg_servers
/// with a WebSocket port are offered.
pub(crate) const BROWSER_QUERY: &str = "transport=ws";

/// The `Content-Type` TeamTalk's login_server sends with the JSON.
const TEAMTALK_CONTENT_TYPE: &str = "text/html;charset=utf-8";

impl<C: Copy + Eq + Hash + Ord + Debug> LoginApp<C> {
    /// Answers one HTTP request: `/msg_server` (any method, as in TeamTalk)
    /// with the JSON clients read, the web client's files when it is
    /// served, anything else with 404. One request per connection,
    /// `Connection: close`, as TeamTalk's clients expect.
    pub fn http(&mut self, request: &Request) -> Response {
        let page = if request.uri().path().starts_with(MSG_SERVER_PATH) {
            None
        } else {
            self.web.as_ref().and_then(|w| w.respond(request))
        };
        let mut response = if let Some(page) = page {
            self.web_requests.inc(match page.status() {
                StatusCode::OK => "200",
                StatusCode::NOT_MODIFIED => "304",
                _ => "405",
            });
            page
        } else if request.uri().path().starts_with(MSG_SERVER_PATH) {
            self.http.inc("200");
            let browser = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == BROWSER_QUERY));
            let body = self.dir.assign_json(self.now, browser);
            let mut r = Response::new(Bytes::from(body.into_bytes()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(TEAMTALK_CONTENT_TYPE),
            );
            r
        } else {
            self.http.inc("404");
            let hint = if self.web.is_some() {
                "not found; the web client is at /, TeamTalk clients use /msg_server\n"
            } else {
                "not found; try /msg_server\n"
            };
            crate::http::text(StatusCode::NOT_FOUND, hint)
        };
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if let (Some(cors), Some(origin)) = (&self.cors, origin)
            && cors.allows(Some(origin))
            && let Ok(value) = HeaderValue::from_str(origin)
        {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        if request.method() == Method::HEAD {
            debug!("HEAD /msg_server: headers only");
        }
        response
    }

    /// Handles one input that arrived at `now`: what
    /// [`runtime::App::handle`] does, for any connection id type (tests
    /// use integers).
    pub fn step(&mut self, now: Instant, input: Input<'_, NoJob, C>, out: &mut Out<NoJob, C>) {
        self.now = Some(now);
        let actions = match input {
            Input::Opened { conn, port, peer } => {
                let kind = self
                    .ports
                    .get(&port)
                    .copied()
                    .unwrap_or(PeerKind::MsgServer);
                match kind {
                    PeerKind::MsgServer => debug!(?conn, %peer, "msg_server connected"),
                    PeerKind::Client => debug!(?conn, %peer, "legacy client connected"),
                    PeerKind::Http => {}
                }
                self.connected(conn, kind);
                return;
            }
            Input::Pdu { conn, pdu } | Input::LoginRequest { conn, pdu } => {
                self.handle_pdu(conn, pdu)
            }
            Input::Http { conn, request } => vec![Action::Respond(conn, self.http(request))],
            Input::Closed { conn, reason } => {
                if let CloseCause::Http(r) = reason
                    && r.status().is_some()
                {
                    // Too large, too slow, malformed: answered by the HTTP
                    // machine, never by us.
                    self.http.inc("dropped");
                }
                self.disconnected(conn);
                return;
            }
            other => {
                debug!(input = ?other, "input login_server does not use");
                return;
            }
        };
        out.extend(actions);
    }
}

impl runtime::App for LoginApp<Conn> {
    type Job = NoJob;
    type Done = NoJob;

    fn name(&self) -> &'static str {
        "login_server"
    }

    fn handle(&mut self, now: Now, input: Input<'_, NoJob>, out: &mut Out<NoJob>) {
        self.step(now.mono, input, out);
    }

    fn collect(&self, out: &mut Scrape) {
        out.gauge(
            "teamtalk_login_msg_servers",
            "msg_servers registered (offered to clients when not full).",
            &[],
            self.dir.msg_servers().len() as f64,
        );
        out.gauge(
            "teamtalk_login_online_users",
            "Client connections over all msg_servers, as they report them.",
            &[],
            self.dir.total_online() as f64,
        );
        let c = self.counters;
        out.counter(
            "teamtalk_login_tcp_queries_total",
            "Legacy TCP msg_server queries answered.",
            &[],
            c.tcp_queries,
        );
        out.counter(
            "teamtalk_login_unexpected_total",
            "Commands a peer had no business sending.",
            &[],
            c.unexpected,
        );
        out.counter(
            "teamtalk_login_malformed_total",
            "PDU bodies that did not decode or carried impossible values.",
            &[],
            c.malformed,
        );
        self.http.render(
            out,
            "teamtalk_login_http_requests_total",
            "HTTP requests by outcome: the status sent, or dropped (too large, too slow, malformed).",
            &[],
            "status",
        );
        self.web_requests.render(
            out,
            "teamtalk_login_web_requests_total",
            "Requests for the web client's files, by the status sent (200, 304, 405).",
            &[],
            "status",
        );
    }

    fn health(&self, _problems: &mut Vec<String>) {
        // login_server needs nothing but its own thread, which the runner
        // watches; no msg_server registered is a state clients are told
        // about (code 1), not a fault of this daemon.
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use teamtalk_proto::pb::im::login::ImMsgServReq;

    use super::*;

    fn info(ip: &str, port: u32, cur: u32, max: u32) -> Pdu {
        let msg = ImMsgServInfo {
            ip1: ip.to_owned(),
            ip2: format!("{ip}-2"),
            port,
            max_conn_cnt: max,
            cur_conn_cnt: cur,
            host_name: format!("host-{ip}"),
            ..Default::default()
        };
        Command::OtherMsgServInfo.pdu(0, &msg)
    }

    fn cnt(action: u32) -> Pdu {
        Command::OtherUserCntUpdate.pdu(
            0,
            &ImUserCntUpdate {
                user_action: action,
                user_id: 9,
            },
        )
    }

    fn app() -> LoginApp<u32> {
        LoginApp::new(
            Directory::new(ServiceUrls {
                msfs_prior: "http://msfs/".into(),
                msfs_backup: "http://msfs/".into(),
                discovery: "http://d/".into(),
            }),
            HashMap::new(),
        )
    }

    fn json(app: &LoginApp<u32>) -> serde_json::Value {
        serde_json::from_str(&app.directory().msg_server_json(false)).unwrap()
    }

    #[test]
    fn registers_counts_and_forgets_msg_servers() {
        let mut app = app();
        assert_eq!(json(&app)["code"], 1);
        app.connected(1, PeerKind::MsgServer);
        app.connected(2, PeerKind::MsgServer);
        assert!(
            app.handle_pdu(1, &info("10.0.0.1", 8000, 5, 100))
                .is_empty()
        );
        assert!(
            app.handle_pdu(2, &info("10.0.0.3", 8001, 3, 100))
                .is_empty()
        );
        let v = json(&app);
        assert_eq!(v["code"], 0);
        assert_eq!(v["priorIP"], "10.0.0.3");
        assert_eq!(v["backupIP"], "10.0.0.3-2");
        assert_eq!(v["port"], "8001");
        assert_eq!(v["msfsPrior"], "http://msfs/");
        assert_eq!(v["discovery"], "http://d/");

        for _ in 0..3 {
            app.handle_pdu(2, &cnt(1));
        }
        assert_eq!(json(&app)["priorIP"], "10.0.0.1");
        app.handle_pdu(2, &cnt(2));
        app.handle_pdu(2, &cnt(2));
        assert_eq!(json(&app)["priorIP"], "10.0.0.3");
        assert_eq!(app.directory().total_online(), 5 + 4);
        let hosts: Vec<String> = app
            .directory()
            .msg_servers()
            .into_iter()
            .map(|s| s.host_name)
            .collect();
        assert_eq!(hosts, ["host-10.0.0.1", "host-10.0.0.3"]);

        app.disconnected(2);
        assert_eq!(json(&app)["priorIP"], "10.0.0.1");
        app.disconnected(1);
        assert_eq!(json(&app)["code"], 1);
        assert!(app.directory().msg_servers().is_empty());
    }

    #[test]
    fn full_servers_are_refused_with_code_2() {
        let mut app = app();
        app.connected(1, PeerKind::MsgServer);
        app.handle_pdu(1, &info("10.0.0.1", 8000, 1, 2));
        app.handle_pdu(1, &cnt(1));
        assert_eq!(json(&app)["code"], 2);
        let rsp = app.dir.msg_serv_rsp(None);
        assert_eq!(rsp.result_code, 2);
        assert_eq!(rsp.prior_ip, None);
    }

    #[test]
    fn bad_msg_server_input_is_counted_not_fatal() {
        let mut app = app();
        app.connected(1, PeerKind::MsgServer);
        // Count before registering, unknown action, impossible port.
        app.handle_pdu(1, &cnt(1));
        app.handle_pdu(1, &cnt(7));
        app.handle_pdu(1, &info("10.0.0.1", 70_000, 0, 10));
        assert!(app.directory().msg_servers().is_empty());
        let garbage = Pdu::new(
            Command::OtherMsgServInfo.key(),
            0,
            Bytes::from_static(b"\x0a"),
        );
        assert!(app.handle_pdu(1, &garbage).is_empty());
        let stray = Command::LoginReqMsgserver.pdu(0, &ImMsgServReq {});
        assert!(app.handle_pdu(1, &stray).is_empty());
        let c = app.counters();
        assert_eq!((c.unexpected, c.malformed), (2, 3));
        // A re-announcement replaces the entry.
        app.handle_pdu(1, &info("10.0.0.1", 8000, 0, 10));
        app.handle_pdu(1, &info("10.0.0.9", 8000, 4, 10));
        let servers = app.directory().msg_servers();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].ip1, "10.0.0.9");
        assert_eq!(servers[0].cur_conn_cnt, 4);
    }

    #[test]
    fn legacy_client_gets_an_answer_then_close() {
        let mut app = app();
        app.connected(1, PeerKind::MsgServer);
        app.handle_pdu(1, &info("10.0.0.1", 8000, 0, 10));
        app.connected(50, PeerKind::Client);
        let out = app.handle_pdu(50, &Command::LoginReqMsgserver.pdu(33, &ImMsgServReq {}));
        assert_eq!(out.len(), 2);
        let Action::Send(50, pdu) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            out[1],
            Action::Close {
                conn: 50,
                notice: None
            }
        );
        assert_eq!(pdu.seq(), 33);
        let Message::LoginResMsgserver(rsp) = Message::decode(pdu).unwrap() else {
            panic!("{pdu:?}")
        };
        assert_eq!(rsp.result_code, 0);
        assert_eq!(rsp.prior_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(rsp.backip_ip.as_deref(), Some("10.0.0.1-2"));
        assert_eq!(rsp.port, Some(8000));
        assert_eq!(app.counters().tcp_queries, 1);
        // A client disconnecting does not touch the table.
        app.disconnected(50);
        assert_eq!(app.directory().msg_servers().len(), 1);

        // Anything else from a client closes it; so does garbage.
        app.connected(51, PeerKind::Client);
        assert_eq!(
            app.handle_pdu(51, &info("1.2.3.4", 1, 0, 1)),
            [Action::Close {
                conn: 51,
                notice: None
            }]
        );
        let garbage = Pdu::new(
            Command::LoginReqMsgserver.key(),
            0,
            Bytes::from_static(b"\xff"),
        );
        assert_eq!(
            app.handle_pdu(51, &garbage),
            [Action::Close {
                conn: 51,
                notice: None
            }]
        );
        assert_eq!(app.directory().msg_servers().len(), 1);

        // With nobody registered: code 1 (no msg_server).
        app.disconnected(1);
        let out = app.handle_pdu(52, &Command::LoginReqMsgserver.pdu(1, &ImMsgServReq {}));
        assert!(
            out.is_empty(),
            "unannounced connections count as msg_servers"
        );
        app.connected(53, PeerKind::Client);
        let out = app.handle_pdu(53, &Command::LoginReqMsgserver.pdu(1, &ImMsgServReq {}));
        let Action::Send(_, pdu) = &out[0] else {
            panic!("{out:?}")
        };
        let Message::LoginResMsgserver(rsp) = Message::decode(pdu).unwrap() else {
            panic!("{pdu:?}")
        };
        assert_eq!(rsp.result_code, 1);
    }
}
