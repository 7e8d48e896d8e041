//! [`LoginApp`]: login_server's PDU side as a pure state machine, and the
//! [`Directory`] it shares with the HTTP side.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use teamtalk_conn::{LoadTable, MsgServerLoad, ServiceUrls};
use teamtalk_proto::pb::im::base_define::ResultType;
use teamtalk_proto::pb::im::login::ImMsgServRsp;
use teamtalk_proto::pb::im::server::{ImMsgServInfo, ImUserCntUpdate};
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, info, warn};

/// `user_action` of `CID_OTHER_USER_CNT_UPDATE`: a client connected.
const USER_CNT_INC: u32 = 1;
/// `user_action` of `CID_OTHER_USER_CNT_UPDATE`: a client left.
const USER_CNT_DEC: u32 = 2;

/// Registered msg_servers plus the ids, since [`LoadTable`] only looks up
/// by id.
#[derive(Debug)]
struct Registry<C> {
    table: LoadTable<C>,
    ids: BTreeSet<C>,
}

/// The msg_server load table and the URLs handed out with it, shared
/// between the PDU side (which writes it) and the HTTP threads (which read
/// it). Cloning shares the same table.
#[derive(Debug)]
pub struct Directory<C> {
    inner: Arc<Mutex<Registry<C>>>,
    urls: Arc<ServiceUrls>,
}

impl<C> Clone for Directory<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            urls: Arc::clone(&self.urls),
        }
    }
}

impl<C: Copy + Ord> Directory<C> {
    /// An empty table handing out `urls`.
    #[must_use]
    pub fn new(urls: ServiceUrls) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry {
                table: LoadTable::new(),
                ids: BTreeSet::new(),
            })),
            urls: Arc::new(urls),
        }
    }

    /// A poisoned lock only means another thread panicked mid-update of a
    /// plain table; the data is still usable, and login_server must keep
    /// answering.
    fn lock(&self) -> MutexGuard<'_, Registry<C>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers msg_server `id` or replaces what it announced.
    pub fn register(&self, id: C, load: MsgServerLoad) {
        let mut reg = self.lock();
        reg.table.upsert(id, load);
        reg.ids.insert(id);
    }

    /// Forgets msg_server `id`.
    pub fn unregister(&self, id: C) -> Option<MsgServerLoad> {
        let mut reg = self.lock();
        reg.ids.remove(&id);
        reg.table.remove(id)
    }

    /// One client connection more or less on `id`; false if `id` never
    /// registered.
    pub fn user_connected(&self, id: C, connected: bool) -> bool {
        self.lock().table.user_connected(id, connected)
    }

    /// The body of the `/msg_server` HTTP answer.
    #[must_use]
    pub fn msg_server_json(&self) -> String {
        self.lock().table.msg_server_json(&self.urls)
    }

    /// The legacy TCP answer (`CID_LOGIN_RES_MSGSERVER`): the same choice
    /// as HTTP, refusals as TeamTalk's `ResultType` codes.
    #[must_use]
    pub fn msg_serv_rsp(&self) -> ImMsgServRsp {
        match self.lock().table.pick() {
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
        let reg = self.lock();
        reg.ids
            .iter()
            .filter_map(|&id| reg.table.get(id).cloned())
            .collect()
    }

    /// Client connections over all msg_servers.
    #[must_use]
    pub fn total_online(&self) -> u64 {
        self.lock().table.total_online()
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
}

/// What [`LoginApp`] asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action<C> {
    /// Send this PDU on this connection.
    Send(C, Pdu),
    /// Close this connection once what was queued is sent.
    Close(C),
}

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

/// login_server's PDU side. The driver reports connections with
/// [`LoginApp::connected`] / [`LoginApp::disconnected`] and PDUs with
/// [`LoginApp::handle_pdu`], and performs the returned [`Action`]s in
/// order. `C` identifies a connection (`ConnId` in the daemon, integers in
/// tests).
#[derive(Debug)]
pub struct LoginApp<C> {
    dir: Directory<C>,
    peers: HashMap<C, PeerKind>,
    counters: LoginCounters,
}

impl<C: Copy + Eq + Hash + Ord + Debug> LoginApp<C> {
    /// An app writing `dir`.
    #[must_use]
    pub fn new(dir: Directory<C>) -> Self {
        Self {
            dir,
            peers: HashMap::new(),
            counters: LoginCounters::default(),
        }
    }

    /// The shared directory.
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
                    PeerKind::Client => vec![Action::Close(conn)],
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
            },
        );
    }

    fn client_pdu(&mut self, conn: C, seq: u16, msg: Message) -> Vec<Action<C>> {
        match msg {
            Message::LoginReqMsgserver(_) => {
                let rsp = self.dir.msg_serv_rsp();
                debug!(
                    ?conn,
                    result = rsp.result_code,
                    "legacy msg_server query answered"
                );
                self.counters.tcp_queries += 1;
                vec![
                    Action::Send(conn, Command::LoginResMsgserver.pdu(seq, &rsp)),
                    Action::Close(conn),
                ]
            }
            other => {
                warn!(?conn, key = ?other.key(), "unexpected command on the client port; closing");
                self.counters.unexpected += 1;
                vec![Action::Close(conn)]
            }
        }
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
        LoginApp::new(Directory::new(ServiceUrls {
            msfs_prior: "http://msfs/".into(),
            msfs_backup: "http://msfs/".into(),
            discovery: "http://d/".into(),
        }))
    }

    fn json(app: &LoginApp<u32>) -> serde_json::Value {
        serde_json::from_str(&app.directory().msg_server_json()).unwrap()
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
        let rsp = app.directory().msg_serv_rsp();
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
        assert_eq!(out[1], Action::Close(50));
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
            [Action::Close(51)]
        );
        let garbage = Pdu::new(
            Command::LoginReqMsgserver.key(),
            0,
            Bytes::from_static(b"\xff"),
        );
        assert_eq!(app.handle_pdu(51, &garbage), [Action::Close(51)]);
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
