//! [`DbProxyApp`]: db_proxy_server's network side on the shared runtime.
//! It takes requests from msg_servers, hands them to the store lane or a
//! login lane, and sends each reply back to the connection that asked.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::server::ImStopReceivePacket;
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, info, warn};

use super::DbProxyConfig;
use super::handler::DbProxy;
use super::sessions::{SessionQueries, SessionsAnswer};
use super::worker::{DbWorker, Job, Reply};
use crate::admin_api::{AdminApi, DbProxyLinks};
use crate::metrics::{Histogram, Scrape};
use crate::runtime::{self, App, Conn, DaemonError, Input, Now, Out, Plan, PortKind, Running};
use crate::store::Store;

/// A running db_proxy_server.
pub type DbProxyServer = Running<DbProxyApp>;

/// The store lane's worker index in the plan.
const STORE_LANE: usize = 0;

/// db_proxy_server's decisions: which lane a request goes to, where a
/// reply goes, and the goodbye to peers when stopping.
pub struct DbProxyApp {
    proxy: Arc<DbProxy>,
    peers: BTreeSet<Conn>,
    /// Each msg_server connection's peer address (the admin API's
    /// sessions answers name it).
    peer_addrs: HashMap<Conn, SocketAddr>,
    /// The admin API's sessions queries waiting for the msg_servers.
    session_queries: SessionQueries,
    login_lanes: usize,
    next_login: usize,
    /// Requests handed to the store lane and not answered yet.
    store_queued: usize,
    store_latency: Arc<Histogram>,
    store_wait: Arc<Histogram>,
}

impl std::fmt::Debug for DbProxyApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbProxyApp")
            .field("peers", &self.peers.len())
            .field("store_queued", &self.store_queued)
            .finish_non_exhaustive()
    }
}

impl DbProxyApp {
    /// The request handler (e.g. to reach its store).
    #[must_use]
    pub fn proxy(&self) -> &Arc<DbProxy> {
        &self.proxy
    }

    /// The lane a request goes to: logins to the login lanes in turn (so
    /// an Argon2 check never stalls message storing), everything else to
    /// the store lane, in arrival order.
    /// Sends an instruction of the admin API (a kick, a group notice) to
    /// every msg_server connected; returns how many.
    pub fn instruct(&self, pdu: &Pdu, out: &mut Out<Job<Conn>>) -> usize {
        for conn in &self.peers {
            out.send(*conn, pdu.clone());
        }
        self.peers.len()
    }

    /// Asks every msg_server connected which sessions `user` has there;
    /// the answer comes on `reply` (see [`super::sessions`]).
    pub fn ask_sessions(
        &mut self,
        user: u32,
        now: Now,
        reply: crossbeam_channel::Sender<SessionsAnswer>,
        out: &mut Out<Job<Conn>>,
    ) {
        for (conn, pdu) in self
            .session_queries
            .ask(user, &self.peer_addrs, now.mono, reply)
        {
            out.send(conn, pdu);
        }
    }

    fn lane(&mut self, pdu: &Pdu) -> usize {
        if self.login_lanes > 0 && DbProxy::is_login(pdu) {
            self.next_login = (self.next_login + 1) % self.login_lanes;
            1 + self.next_login
        } else {
            STORE_LANE
        }
    }
}

/// Starts db_proxy_server on `config.listen` with `store`.
///
/// Connections are server peers (TeamTalk's msg_servers): no login, a
/// heartbeat from us after 5 s without sending, closed after 30 s without
/// receiving. Peers' heartbeats are consumed by the session and never
/// echoed, as TeamTalk's db_proxy does.
///
/// Stopping is clean: peers get `CID_OTHER_STOP_RECV_PACKET`, requests
/// already taken are stored and answered, replies are flushed. Requests
/// arriving meanwhile are not read, so their senders can retry elsewhere
/// without creating duplicates.
///
/// # Errors
/// The address cannot be bound or a thread cannot start.
pub fn spawn(config: DbProxyConfig, store: Arc<dyn Store>) -> Result<DbProxyServer, DaemonError> {
    let proxy = Arc::new(DbProxy::with_options(
        Arc::clone(&store),
        config.options.clone(),
    ));
    let store_latency = Arc::new(Histogram::latency());
    let store_wait = Arc::new(Histogram::latency());
    let mut plan = Plan::new();
    plan.side(
        "peers",
        teamtalk_net::ReactorConfig {
            threads: config.reactor_threads.max(1),
            ..teamtalk_net::ReactorConfig::default()
        },
    );
    let kind = PortKind::Peers(teamtalk_conn::SessionConfig::server_peer());
    match &config.peer_tls {
        Some(tls) => plan.listen_tls("peers", "msg_server", config.listen, kind, Arc::clone(tls)),
        None => plan.listen("peers", "msg_server", config.listen, kind),
    };
    plan.worker_limits(config.worker.queue_capacity, config.worker.batch_limit);
    let store_lane = plan.worker(DbWorker::store(
        Arc::clone(&proxy),
        Arc::clone(&store_latency),
        Arc::clone(&store_wait),
    ));
    debug_assert_eq!(store_lane, STORE_LANE);
    for _ in 0..config.worker.login_threads {
        plan.worker(DbWorker::login(Arc::clone(&proxy)));
    }
    plan.peer_policy(config.peers.clone());
    let app = DbProxyApp {
        proxy,
        peers: BTreeSet::new(),
        peer_addrs: HashMap::new(),
        session_queries: SessionQueries::default(),
        login_lanes: config.worker.login_threads,
        next_login: 0,
        store_queued: 0,
        store_latency,
        store_wait,
    };
    let mut running = runtime::start(app, plan)?;
    if let Some(addr) = config.admin {
        // The admin API: this process holds the store; kicks and group
        // notices go to the msg_servers on their links here.
        let api = AdminApi::new(store, Arc::new(DbProxyLinks::new(running.controller())));
        running.serve_admin_api(
            &runtime::AdminSettings::with_token(addr, config.admin_token.clone()),
            Some(Arc::new(api)),
        )?;
    }
    Ok(running)
}

impl App for DbProxyApp {
    type Job = Job<Conn>;
    type Done = Reply<Conn>;

    fn name(&self) -> &'static str {
        "db_proxy_server"
    }

    fn handle(&mut self, now: Now, input: Input<'_, Reply<Conn>>, out: &mut Out<Job<Conn>>) {
        match input {
            Input::Opened { conn, peer, .. } => {
                debug!(%conn, %peer, "msg_server connected");
                self.peers.insert(conn);
                self.peer_addrs.insert(conn, peer);
            }
            Input::Pdu { conn, pdu } if pdu.is(Command::OtherOnlineUserInfo.key()) => {
                // Only the admin API's sessions queries are answered so.
                let from = self.peer_addrs.get(&conn).copied();
                let answered = match (from, Message::decode(pdu)) {
                    (Some(from), Ok(Message::OtherOnlineUserInfo(info))) => self
                        .session_queries
                        .answered(conn, from, pdu.header.seq_num, info),
                    _ => false,
                };
                if !answered {
                    debug!(%conn, "online-user list that answers no query; dropped");
                }
            }
            Input::Tick => self.session_queries.expire(now.mono, &self.peer_addrs),
            Input::Pdu { conn, pdu } => {
                let lane = self.lane(pdu);
                if lane == STORE_LANE {
                    self.store_queued += 1;
                }
                out.job(
                    lane,
                    Job {
                        to: conn,
                        pdu: pdu.clone(),
                        queued: now.mono,
                    },
                );
            }
            Input::Done(Reply {
                to,
                pdu,
                from_store,
            }) => {
                if from_store {
                    self.store_queued = self.store_queued.saturating_sub(1);
                }
                if let Some(pdu) = pdu {
                    out.send(to, pdu);
                }
            }
            Input::Closed { conn, reason } => {
                info!(%conn, %reason, "msg_server connection closed");
                self.peers.remove(&conn);
                self.peer_addrs.remove(&conn);
                self.session_queries.closed(conn);
            }
            Input::Stopping => {
                // TeamTalk's db_proxy tells its peers to stop sending before
                // it exits, so they can switch to another db_proxy instead
                // of losing requests.
                let notice = ImStopReceivePacket { result: 0 };
                for conn in &self.peers {
                    out.send(*conn, notice.to_pdu(0));
                }
            }
            Input::LoginRequest { conn, .. } => {
                // Server-peer sessions have no login gate.
                warn!(%conn, "login request on a server port; closing");
                out.close(conn, None);
            }
            other => debug!(input = ?other, "input db_proxy_server does not use"),
        }
    }

    fn collect(&self, out: &mut Scrape) {
        let s = self.proxy.stats();
        for (name, help, v) in [
            (
                "teamtalk_db_requests_total",
                "Requests handled, message stores included.",
                s.requests,
            ),
            (
                "teamtalk_db_replies_total",
                "Replies produced, failure answers included.",
                s.replies,
            ),
            (
                "teamtalk_db_failures_total",
                "Requests answered with a failure: the reply's failure result_code, or IMRequestFailed.",
                s.failures,
            ),
            (
                "teamtalk_db_unimplemented_total",
                "Requests for features not stored yet (offline files, avatars).",
                s.unimplemented,
            ),
            (
                "teamtalk_db_unexpected_total",
                "PDUs db_proxy never serves.",
                s.unexpected,
            ),
            (
                "teamtalk_db_decode_errors_total",
                "Bodies that did not decode as their command's message.",
                s.decode_errors,
            ),
            (
                "teamtalk_db_store_errors_total",
                "Store operations that failed.",
                s.store_errors,
            ),
            (
                "teamtalk_db_messages_stored_total",
                "Messages stored, single and group.",
                s.messages_stored,
            ),
            (
                "teamtalk_db_messages_refused_total",
                "Messages refused as not storable (answered with msg_id 0).",
                s.messages_refused,
            ),
            (
                "teamtalk_db_messages_duplicate_total",
                "Resent messages not stored again (dedupe key already stored), answered with the first msg_id.",
                s.messages_duplicate,
            ),
            (
                "teamtalk_db_pages_cut_total",
                "List replies that stopped below the frame limit and left entries for the next page.",
                s.pages_cut,
            ),
            (
                "teamtalk_db_message_batches_total",
                "Store transactions used for messages (one per group commit).",
                s.message_batches,
            ),
            (
                "teamtalk_db_logins_ok_total",
                "Login validations that succeeded.",
                s.logins_ok,
            ),
            (
                "teamtalk_db_logins_cached_total",
                "Successful logins answered from the credential cache, without Argon2.",
                s.logins_cached,
            ),
            (
                "teamtalk_db_logins_failed_total",
                "Login validations refused for bad credentials.",
                s.logins_failed,
            ),
            (
                "teamtalk_db_logins_locked_total",
                "Login validations refused by the failure limiter.",
                s.logins_locked,
            ),
            (
                "teamtalk_db_logins_oversized_total",
                "Login validations refused because the user name or password was longer than 256 bytes.",
                s.logins_oversized,
            ),
        ] {
            out.counter(name, help, &[], v);
        }
        out.histogram(
            "teamtalk_db_store_latency_seconds",
            "Time each group commit of messages took in the store worker.",
            &[],
            &self.store_latency.snapshot(),
        );
        out.histogram(
            "teamtalk_db_store_wait_seconds",
            "Time each request waited in the store worker's queue before its batch started.",
            &[],
            &self.store_wait.snapshot(),
        );
        let limiter = self.proxy.limiter();
        out.gauge(
            "teamtalk_db_login_limiter_bytes",
            "Bytes held by the login-failure limiter's table (bounded).",
            &[],
            limiter.bytes() as f64,
        );
        out.counter(
            "teamtalk_db_login_limiter_untracked_total",
            "Login failures not counted because the limiter's table was full.",
            &[],
            limiter.untracked(),
        );
        if let Some(cache) = self.proxy.credentials() {
            out.gauge(
                "teamtalk_db_credential_cache_bytes",
                "Bytes held by the credential cache (bounded).",
                &[],
                cache.bytes() as f64,
            );
        }
        out.gauge(
            "teamtalk_db_queue_depth",
            "Requests waiting in the store worker's queue.",
            &[],
            self.store_queued as f64,
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        if let Err(e) = self.proxy.store().user_count() {
            problems.push(format!("store unusable: {e}"));
        }
    }
}
