//! [`run_login_app`]: login_server's App under arbitrary msg_servers,
//! legacy clients and HTTP requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use teamtalk_conn::{ASSIGNMENT_TTL, CloseReason, HttpCloseReason, ServiceUrls};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::login::ImMsgServReq;
use teamtalk_proto::pb::im::server::{ImMsgServInfo, ImUserCntUpdate};
use teamtalk_proto::{Message, Pdu};

use super::body::{Body, command};
use super::{addr, pick, start_time, violated};
use crate::login::{Action, Directory, LoginApp, MSG_SERVER_PATH, PeerKind};
use crate::runtime::{CloseCause, Input, NoJob, Out, PortId, Request};

/// Steps per run at most.
const MAX_STEPS: usize = 256;
/// The App's listeners: msg_servers, legacy clients, HTTP.
const PORTS: [PeerKind; 3] = [PeerKind::MsgServer, PeerKind::Client, PeerKind::Http];

/// One thing that happens to login_server.
#[derive(Debug, Arbitrary)]
enum Step {
    /// A connection arrives through one of the three doors.
    Open { port: u8, addr: u8 },
    /// A connection ends (an HTTP one maybe answered by its machine).
    Close { conn: u8, answered: bool },
    /// A msg_server announces itself.
    Info {
        conn: u8,
        ip1: String,
        ip2: String,
        port: u32,
        max: u8,
        cur: u8,
        host: String,
        /// The WebSocket port extension (any value, valid or not).
        ws_port: Option<u32>,
        ws_tls: Option<bool>,
    },
    /// A msg_server reports a client more or less.
    Count { conn: u8, action: u8, user: u32 },
    /// A legacy client asks where to go.
    Query { conn: u8, seq: u16 },
    /// Any command with a well-formed body.
    Generic { conn: u8, command: u16, body: Body },
    /// Any command with arbitrary bytes.
    Raw {
        conn: u8,
        command: u16,
        bytes: Vec<u8>,
    },
    /// An HTTP request: method, path (under `/msg_server` when `ours`),
    /// headers and body from the fuzzer.
    Http {
        conn: u8,
        method: Vec<u8>,
        ours: bool,
        path: Vec<u8>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// Time passes (tenths of a second), so answers in flight expire.
    Wait { tenths: u8 },
}

/// A registered msg_server as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registered {
    ip1: String,
    ip2: String,
    port: u16,
    max: u32,
    cur: u32,
    /// The WebSocket port and whether it is wss, when announced valid.
    ws: Option<(u16, bool)>,
    /// When each answer naming it that no reported login settled yet was
    /// given, oldest first.
    pending: VecDeque<Instant>,
}

impl Registered {
    /// What the choice compares: reported plus in flight.
    fn load(&self) -> u64 {
        u64::from(self.cur) + self.pending.len() as u64
    }
}

struct Harness {
    app: LoginApp<u32>,
    conns: BTreeMap<u32, PeerKind>,
    next: u32,
    registered: BTreeMap<u32, Registered>,
    urls: ServiceUrls,
    history: Vec<String>,
    /// The time of the next input.
    now: Instant,
}

/// Drives a [`LoginApp`] with the steps `data` encodes, checking after
/// every step: no panic; every HTTP request gets exactly one response,
/// `/msg_server` (any method, any suffix) a 200 with `Connection: close`
/// and a JSON object whose `code` and fields are the model's choice (the
/// least-loaded msg_server below its maximum, counting the answers naming
/// it that no login has settled within the TTL, ties to the lowest id; 1
/// with none registered, 2 when all are full), anything else a 404; a legacy
/// query is answered with its seq and closed, any other client PDU
/// closed; msg_servers never get anything back; the registry holds exactly
/// the connected msg_servers that announced a valid port, with the loads
/// the model counted (bounded by the connections).
///
/// # Panics
/// On the first broken invariant, naming it and the last steps.
pub fn run_login_app(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let urls = ServiceUrls {
        msfs_prior: u.arbitrary().unwrap_or_default(),
        msfs_backup: u.arbitrary().unwrap_or_default(),
        discovery: u.arbitrary().unwrap_or_default(),
    };
    let mut h = Harness::new(urls);
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
}

impl Harness {
    fn new(urls: ServiceUrls) -> Self {
        let ports: HashMap<PortId, PeerKind> = PORTS
            .iter()
            .enumerate()
            .map(|(i, &k)| (PortId(i as u8), k))
            .collect();
        Self {
            app: LoginApp::new(Directory::new(urls.clone()), ports),
            conns: BTreeMap::new(),
            next: 0,
            registered: BTreeMap::new(),
            urls,
            history: Vec::new(),
            now: start_time().mono,
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        violated(what, &self.history)
    }

    fn feed(&mut self, input: Input<'_, NoJob, u32>) -> Vec<Action<u32>> {
        let mut out = Out::new();
        self.app.step(self.now, input, &mut out);
        let actions = out.take();
        for a in &actions {
            let conn = match a {
                Action::Send(c, _) | Action::Respond(c, _) => *c,
                Action::Close { conn, .. } => *conn,
                other => self.fail(format!("unexpected action {other:?}")),
            };
            if !self.conns.contains_key(&conn) {
                self.fail(format!("action for conn {conn}, which is not open"));
            }
        }
        self.check_registry();
        actions
    }

    /// An open connection of `kind`, by `n`.
    fn conn(&self, n: u8, kinds: &[PeerKind]) -> Option<u32> {
        let of: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, k)| kinds.contains(k))
            .map(|(c, _)| *c)
            .collect();
        pick(&of, n).copied()
    }

    fn step(&mut self, step: Step) {
        self.history.push(format!("{step:?}"));
        let peers = [PeerKind::MsgServer, PeerKind::Client];
        match step {
            Step::Open { port, addr: a } => {
                let conn = self.next;
                self.next += 1;
                let port = usize::from(port) % PORTS.len();
                self.conns.insert(conn, PORTS[port]);
                let input = Input::Opened {
                    conn,
                    port: PortId(port as u8),
                    peer: addr(a),
                };
                if !self.feed(input).is_empty() {
                    self.fail("a new connection was answered");
                }
            }
            Step::Close { conn, answered } => {
                let Some(conn) = self.conn(conn, &PORTS) else {
                    return;
                };
                let kind = self.conns[&conn];
                let reason = match kind {
                    PeerKind::Http if answered => CloseCause::Http(HttpCloseReason::HeadTooLarge),
                    PeerKind::Http => CloseCause::Http(HttpCloseReason::PeerClosed),
                    _ => CloseCause::Pdu(CloseReason::PeerClosed),
                };
                self.registered.remove(&conn);
                if !self.feed(Input::Closed { conn, reason }).is_empty() {
                    self.fail("a closed connection was answered");
                }
                self.conns.remove(&conn);
                self.check_registry();
            }
            Step::Info {
                conn,
                ip1,
                ip2,
                port,
                max,
                cur,
                host,
                ws_port,
                ws_tls,
            } => {
                let Some(conn) = self.conn(conn, &peers) else {
                    return;
                };
                let port = if port.is_multiple_of(4) {
                    port
                } else {
                    port % 65_536
                };
                let info = ImMsgServInfo {
                    ip1,
                    ip2,
                    port,
                    max_conn_cnt: u32::from(max % 8),
                    cur_conn_cnt: u32::from(cur % 8),
                    host_name: host,
                    ws_port,
                    ws_tls,
                };
                self.pdu(conn, &info.to_pdu(0));
            }
            Step::Count { conn, action, user } => {
                let Some(conn) = self.conn(conn, &peers) else {
                    return;
                };
                let msg = ImUserCntUpdate {
                    user_action: u32::from(action % 4),
                    user_id: user,
                };
                self.pdu(conn, &msg.to_pdu(0));
            }
            Step::Query { conn, seq } => {
                let Some(conn) = self.conn(conn, &peers) else {
                    return;
                };
                self.pdu(conn, &ImMsgServReq {}.to_pdu(seq));
            }
            Step::Generic {
                conn,
                command: c,
                body,
            } => {
                let Some(conn) = self.conn(conn, &peers) else {
                    return;
                };
                let c = command(c);
                self.pdu(conn, &Pdu::new(c.key(), 1, body.build(c)));
            }
            Step::Raw {
                conn,
                command: c,
                bytes,
            } => {
                let Some(conn) = self.conn(conn, &peers) else {
                    return;
                };
                self.pdu(conn, &Pdu::new(command(c).key(), 1, Bytes::from(bytes)));
            }
            Step::Http {
                conn,
                method,
                ours,
                path,
                headers,
                body,
            } => {
                let Some(conn) = self.conn(conn, &[PeerKind::Http]) else {
                    return;
                };
                let request = http_request(&method, ours, &path, &headers, body);
                self.http(conn, &request);
            }
            Step::Wait { tenths } => {
                self.now += Duration::from_millis(100 * u64::from(tenths));
            }
        }
    }

    /// A PDU from a msg_server or a legacy client.
    fn pdu(&mut self, conn: u32, pdu: &Pdu) {
        let kind = self.conns[&conn];
        let msg = Message::decode(pdu);
        if kind == PeerKind::MsgServer {
            match &msg {
                Ok(Message::OtherMsgServInfo(info)) => {
                    if let Ok(port) = u16::try_from(info.port) {
                        // A re-announcement keeps the answers in flight.
                        let pending = self
                            .registered
                            .remove(&conn)
                            .map(|r| r.pending)
                            .unwrap_or_default();
                        self.registered.insert(
                            conn,
                            Registered {
                                ip1: info.ip1.clone(),
                                ip2: info.ip2.clone(),
                                port,
                                max: info.max_conn_cnt,
                                cur: info.cur_conn_cnt,
                                ws: info
                                    .ws_port
                                    .and_then(|p| u16::try_from(p).ok())
                                    .map(|p| (p, info.ws_tls.unwrap_or(false))),
                                pending,
                            },
                        );
                    }
                }
                Ok(Message::OtherUserCntUpdate(c)) => {
                    if let Some(r) = self.registered.get_mut(&conn) {
                        match c.user_action {
                            1 => {
                                r.cur = r.cur.saturating_add(1);
                                r.pending.pop_front();
                            }
                            2 => r.cur = r.cur.saturating_sub(1),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let legacy_choice = (kind == PeerKind::Client
            && matches!(msg, Ok(Message::LoginReqMsgserver(_))))
        .then(|| self.assign(false));
        let out = self.feed(Input::Pdu { conn, pdu });
        match kind {
            PeerKind::MsgServer => {
                if !out.is_empty() {
                    self.fail(format!("a msg_server's {} was answered", pdu.key()));
                }
            }
            _ => {
                let closed = matches!(out.last(), Some(Action::Close { conn: c, notice: None }) if *c == conn);
                if !closed {
                    self.fail(format!(
                        "a client's {} did not close its connection",
                        pdu.key()
                    ));
                }
                if let Ok(Message::LoginReqMsgserver(_)) = msg {
                    let [Action::Send(_, answer), _] = &out[..] else {
                        self.fail("a legacy query was not answered");
                    };
                    if answer.seq() != pdu.seq() {
                        self.fail("legacy answer with another seq");
                    }
                    let Ok(Message::LoginResMsgserver(rsp)) = Message::decode(answer) else {
                        self.fail("legacy answer of the wrong type");
                    };
                    let (code, chosen) = legacy_choice.unwrap_or((1, None));
                    let chosen = chosen.and_then(|c| self.registered.get(&c));
                    if rsp.result_code != code as i32
                        || rsp.prior_ip.as_ref() != chosen.map(|r| &r.ip1)
                        || rsp.port != chosen.map(|r| u32::from(r.port))
                    {
                        self.fail(format!(
                            "legacy answer {rsp:?}, the model chose {code} {chosen:?}"
                        ));
                    }
                } else if out.len() != 1 {
                    self.fail("a client's stray PDU was answered");
                }
            }
        }
    }

    /// What login_server should offer a client asking now: the code and
    /// the msg_server (for a `browser`, among those with a WebSocket
    /// port), which from then on counts the answer as in flight.
    fn assign(&mut self, browser: bool) -> (u32, Option<u32>) {
        let now = self.now;
        for r in self.registered.values_mut() {
            while r
                .pending
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= ASSIGNMENT_TTL)
            {
                r.pending.pop_front();
            }
        }
        let eligible = |r: &Registered| !browser || r.ws.is_some();
        if !self.registered.values().any(eligible) {
            return (1, None);
        }
        let best = self
            .registered
            .iter()
            .filter(|(_, r)| eligible(r) && r.cur < r.max)
            .fold(None::<(u32, &Registered)>, |b, (&c, r)| match b {
                Some(b) if b.1.load() <= r.load() => Some(b),
                _ => Some((c, r)),
            })
            .map(|(c, _)| c);
        match best {
            Some(c) => {
                if let Some(r) = self.registered.get_mut(&c) {
                    r.pending.push_back(now);
                }
                (0, Some(c))
            }
            None => (2, None),
        }
    }

    fn http(&mut self, conn: u32, request: &Request) {
        let browser = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "transport=ws"));
        let ours = request.uri().path().starts_with(MSG_SERVER_PATH);
        let choice = ours.then(|| self.assign(browser));
        let out = self.feed(Input::Http { conn, request });
        let [Action::Respond(to, response)] = &out[..] else {
            self.fail(format!("an HTTP request got {} actions", out.len()));
        };
        if *to != conn {
            self.fail("an HTTP response to another connection");
        }
        if response
            .headers()
            .get(http::header::CONNECTION)
            .map(HeaderValue::as_bytes)
            != Some(b"close".as_slice())
        {
            self.fail("an HTTP response without Connection: close");
        }
        if !request.uri().path().starts_with(MSG_SERVER_PATH) {
            if response.status() != StatusCode::NOT_FOUND {
                self.fail(format!("{} answered {}", request.uri(), response.status()));
            }
            return;
        }
        if response.status() != StatusCode::OK {
            self.fail(format!("{} answered {}", request.uri(), response.status()));
        }
        let json: serde_json::Value = match serde_json::from_slice(response.body()) {
            Ok(v) => v,
            Err(e) => self.fail(format!(
                "/msg_server answered invalid JSON ({e}): {:?}",
                String::from_utf8_lossy(response.body())
            )),
        };
        let (code, chosen) = choice.unwrap_or((1, None));
        let chosen = chosen.and_then(|c| self.registered.get(&c));
        if json["code"] != serde_json::json!(code) {
            self.fail(format!(
                "/msg_server answered {json}, the model chose code {code}"
            ));
        }
        if let Some(r) = chosen {
            let mut want = serde_json::json!({
                "code": 0,
                "msg": "",
                "priorIP": r.ip1,
                "backupIP": r.ip2,
                "msfsPrior": self.urls.msfs_prior,
                "msfsBackup": self.urls.msfs_backup,
                "discovery": self.urls.discovery,
                "port": r.port.to_string(),
            });
            if let Some((port, tls)) = r.ws {
                let scheme = if tls { "wss" } else { "ws" };
                let url = |ip: &str| {
                    let host = if ip.contains(':') {
                        format!("[{ip}]")
                    } else {
                        ip.to_owned()
                    };
                    format!("{scheme}://{host}:{port}/")
                };
                want["wsPrior"] = url(&r.ip1).into();
                want["wsBackup"] = url(&r.ip2).into();
            }
            if json != want {
                self.fail(format!(
                    "/msg_server answered {json}, the model wants {want}"
                ));
            }
        } else if !json["msg"].is_string() {
            self.fail(format!("/msg_server refusal without a message: {json}"));
        }
    }

    /// The registry is what the model says: the connected msg_servers that
    /// announced a valid port, with their loads.
    fn check_registry(&self) {
        let listed = self.app.directory().msg_servers();
        let want: Vec<&Registered> = self.registered.values().collect();
        let same = listed.len() == want.len()
            && listed.iter().zip(&want).all(|(l, r)| {
                l.ip1 == r.ip1
                    && l.ip2 == r.ip2
                    && l.port == r.port
                    && l.max_conn_cnt == r.max
                    && l.cur_conn_cnt == r.cur
            });
        if !same {
            self.fail(format!("registry {listed:?}, the model has {want:?}"));
        }
        for conn in self.registered.keys() {
            if self.conns.get(conn) != Some(&PeerKind::MsgServer) {
                self.fail(format!("conn {conn} registered but not an open msg_server"));
            }
        }
    }
}

/// An HTTP request as `HttpConn` could hand one over: the method and path
/// are the fuzzer's where they are valid (a token, an origin-form path),
/// headers that are valid are kept.
fn http_request(
    method: &[u8],
    ours: bool,
    path: &[u8],
    headers: &[(Vec<u8>, Vec<u8>)],
    body: Vec<u8>,
) -> Request {
    let method = Method::from_bytes(method).unwrap_or(Method::GET);
    let mut raw = Vec::new();
    if ours {
        raw.extend_from_slice(MSG_SERVER_PATH.as_bytes());
    } else {
        raw.push(b'/');
    }
    raw.extend_from_slice(path);
    let uri = Uri::try_from(raw)
        .unwrap_or_else(|_| Uri::from_static(if ours { MSG_SERVER_PATH } else { "/" }));
    let mut request = http::Request::new(Bytes::from(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    for (name, value) in headers.iter().take(16) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            request.headers_mut().append(n, v);
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(conn: u8) -> Step {
        Step::Info {
            conn,
            ip1: format!("10.0.0.{conn}"),
            ip2: "backup".into(),
            port: 8000,
            max: 7,
            cur: 0,
            host: "h".into(),
            ws_port: None,
            ws_tls: None,
        }
    }

    fn ask(conn: u8) -> Step {
        Step::Http {
            conn,
            method: b"GET".to_vec(),
            ours: true,
            path: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn pending(h: &Harness) -> Vec<usize> {
        h.registered.values().map(|r| r.pending.len()).collect()
    }

    /// Every answer is checked against the model as the run goes; this
    /// script makes sure the answers in flight, their settling by a
    /// reported login and their expiry are among what is checked.
    #[test]
    fn a_scripted_run_spreads_answers_then_expires_them() {
        let mut h = Harness::new(ServiceUrls::default());
        // Two msg_servers (door 0), two HTTP clients (door 2), one legacy
        // client (door 1).
        for (port, addr) in [(0, 0), (0, 1), (2, 2), (2, 3), (1, 0)] {
            h.step(Step::Open { port, addr });
        }
        h.step(info(0));
        h.step(info(1));
        // Nothing reported yet: four HTTP answers and a legacy one take
        // the two msg_servers in turn.
        for conn in [0, 1, 0, 1] {
            h.step(ask(conn));
        }
        h.step(Step::Query { conn: 2, seq: 7 });
        assert_eq!(pending(&h), [3, 2]);
        // A login reported on the first settles one of its answers.
        h.step(Step::Count {
            conn: 0,
            action: 1,
            user: 5,
        });
        assert_eq!(pending(&h), [2, 2]);
        // Ten seconds on, the answers no login settled are forgotten: the
        // next goes by the reported counts alone (0 against 1).
        h.step(Step::Wait { tenths: 100 });
        h.step(ask(0));
        assert_eq!(pending(&h), [0, 1]);
    }
}
