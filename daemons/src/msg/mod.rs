//! msg_server: holds client connections, logs users in through db_proxy,
//! delivers messages, and keeps links to db_proxy, login and route servers.
//!
//! The logic is [`app::App`], a pure state machine; this module runs it:
//! one reactor of client [`Session`]s, one reactor of upstream [`Link`]s,
//! and one application thread that owns the `App`, turns reactor events
//! into its inputs and its [`Action`]s into reactor commands.

pub mod app;
mod config;
mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select, tick};
use teamtalk_conn::{Link, LinkConfig, LinkEvent, Session, SessionEvent};
use teamtalk_net::{ConnId, NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::{Command, Pdu};
use tracing::{debug, info, warn};

pub use app::{Action, App, AppStats, Registration, Upstream};
pub use config::{MsgConfig, MsgConfigError};
pub use metrics::MsgMetrics;

use crate::metrics::{AdminServer, Labelled, MetricsSource};
use metrics::{AppSnapshot, LinkState};

/// Why msg_server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    /// Binding the client port or starting a reactor failed.
    #[error("msg_server: {0}")]
    Io(#[from] std::io::Error),
    /// The reactor refused a command while starting.
    #[error("msg_server: {0}")]
    Net(#[from] teamtalk_net::NetError),
    /// The configuration names no server of a required kind.
    #[error("msg_server: no {0:?} server configured")]
    MissingUpstream(Upstream),
}

/// A running msg_server. Dropping it stops it.
#[derive(Debug)]
pub struct RunningMsg {
    addr: SocketAddr,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<MsgMetrics>,
    admin: Option<AdminServer>,
}

impl RunningMsg {
    /// Where clients connect.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The application counters, as of the last second.
    #[must_use]
    pub fn stats(&self) -> AppStats {
        self.metrics.app_stats()
    }

    /// Every counter and the link states, for an admin endpoint (`teamtalk
    /// up` serves all daemons on one).
    #[must_use]
    pub fn metrics(&self) -> Arc<MsgMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The admin endpoint's address, when [`MsgConfig::admin`] asked for one.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// Stops accepting, closes links and sessions, waits for the threads.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningMsg {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Starts a msg_server.
///
/// # Errors
/// [`MsgError`] when the client port cannot be bound, a reactor cannot
/// start, or a required upstream kind has no address.
pub fn spawn(cfg: MsgConfig) -> Result<RunningMsg, MsgError> {
    for (kind, addrs) in [
        (Upstream::Db, &cfg.db),
        (Upstream::Login, &cfg.login),
        (Upstream::Route, &cfg.route),
    ] {
        if addrs.is_empty() {
            return Err(MsgError::MissingUpstream(kind));
        }
    }
    let clients: Reactor<Session> = Reactor::new(ReactorConfig {
        threads: cfg.threads,
        max_connections: cfg.max_connections,
        ..ReactorConfig::default()
    })?;
    let session_cfg = cfg.session.clone();
    let addr = clients.listen(cfg.listen, move |peer, now| {
        Session::new(session_cfg.clone(), peer, now)
    })?;
    let links: Reactor<Link> = Reactor::new(ReactorConfig {
        threads: 1,
        ..ReactorConfig::default()
    })?;
    let mut link_kinds = HashMap::new();
    let mut link_states = Vec::new();
    for (kind, addrs) in [
        (Upstream::Db, &cfg.db),
        (Upstream::Login, &cfg.login),
        (Upstream::Route, &cfg.route),
    ] {
        for a in addrs {
            let mut lc = LinkConfig::new(*a);
            if let Some(t) = cfg.link_timers {
                lc.heartbeat_interval = t.0;
                lc.idle_timeout = t.1;
            }
            let id = links.open(Link::new(lc, crate::clock::now()))?;
            link_kinds.insert(
                id,
                LinkSlot {
                    kind,
                    addr: *a,
                    up: false,
                },
            );
            link_states.push(LinkState {
                kind,
                addr: *a,
                up: false,
            });
        }
    }
    let mut registration = cfg.registration.clone();
    if registration.port == 0 {
        registration.port = addr.port();
    }
    let app = App::new(registration, Arc::new(crate::clock::unix_secs));
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let metrics = Arc::new(MsgMetrics::new(
        clients.handle(),
        links.handle(),
        link_states,
    ));
    let admin = match cfg.admin {
        Some(admin_addr) => {
            let source: Arc<dyn MetricsSource> = Arc::new(Labelled::new(
                "msg_server",
                addr.to_string(),
                Arc::clone(&metrics) as Arc<dyn MetricsSource>,
            ));
            Some(AdminServer::start(admin_addr, source)?)
        }
        None => None,
    };
    let runner = Runner {
        app,
        clients,
        links,
        link_kinds,
        metrics: Arc::clone(&metrics),
        outbox: Outbox::default(),
    };
    let thread = std::thread::Builder::new()
        .name("msg_server".into())
        .spawn(move || runner.run(&stop_rx))?;
    info!(%addr, "msg_server listening");
    Ok(RunningMsg {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
        metrics,
        admin,
    })
}

#[derive(Debug, Clone, Copy)]
struct LinkSlot {
    kind: Upstream,
    addr: SocketAddr,
    up: bool,
}

struct Runner {
    app: App<ConnId>,
    clients: Reactor<Session>,
    links: Reactor<Link>,
    link_kinds: HashMap<ConnId, LinkSlot>,
    metrics: Arc<MsgMetrics>,
    outbox: Outbox,
}

/// Events handled before the outbox is flushed. Under load, events queue
/// up; handling a batch and then sending each connection its PDUs in one
/// command (one channel send, one wake-up) is what keeps the application
/// thread from paying per PDU.
const EVENT_BATCH: usize = 512;

/// One thing to do to a client session, in order.
enum ClientOp {
    Send(Pdu),
    Accept {
        user_id: u32,
        client_type: u32,
        reply: Pdu,
    },
    Refuse(Pdu),
    Close(Option<Pdu>),
}

/// What the app asked for since the last flush, grouped by connection in
/// the order asked (order across connections does not matter; order on
/// one connection does, and is kept).
#[derive(Default)]
struct Outbox {
    clients: HashMap<ConnId, Vec<ClientOp>>,
    links: HashMap<ConnId, Vec<Pdu>>,
}

impl Runner {
    fn run(mut self, stop: &Receiver<()>) {
        let client_events = self.clients.events();
        let link_events = self.links.events();
        let ticker = tick(Duration::from_secs(1));
        loop {
            self.flush();
            select! {
                recv(client_events) -> ev => match ev {
                    Ok((id, ev)) => self.client_event(id, ev),
                    Err(_) => break,
                },
                recv(link_events) -> ev => match ev {
                    Ok((id, ev)) => self.link_event(id, ev),
                    Err(_) => break,
                },
                recv(ticker) -> _ => {
                    self.app.tick();
                    if let Ok(mut s) = self.metrics.app.lock() {
                        *s = AppSnapshot {
                            stats: self.app.stats(),
                            pending: self.app.pending(),
                            logged_in: self.app.logged_in(),
                        };
                    }
                }
                recv(stop) -> _ => break,
            }
            // Take what else is already queued before flushing.
            for _ in 0..EVENT_BATCH {
                let Ok((id, ev)) = client_events.try_recv() else {
                    break;
                };
                self.client_event(id, ev);
            }
            for _ in 0..EVENT_BATCH {
                let Ok((id, ev)) = link_events.try_recv() else {
                    break;
                };
                self.link_event(id, ev);
            }
        }
        self.flush();
        info!("msg_server stopping");
        let Self { clients, links, .. } = self;
        clients.shutdown();
        links.shutdown();
    }

    fn client_event(&mut self, id: ConnId, ev: NetEvent<SessionEvent>) {
        let actions = match ev {
            NetEvent::Accepted { .. } => {
                self.app.client_open(id);
                return;
            }
            NetEvent::Machine(SessionEvent::LoginRequest(pdu)) => {
                self.metrics.client_in.inc(pdu.key());
                self.app.login_request(id, &pdu)
            }
            NetEvent::Machine(SessionEvent::Pdu(pdu)) => {
                self.metrics.client_in.inc(pdu.key());
                self.app.client_pdu(id, &pdu)
            }
            NetEvent::Machine(SessionEvent::Closed(reason)) => {
                debug!(conn = %id, %reason, "client session closed");
                self.metrics.client_closes.inc(&reason);
                self.app.client_closed(id)
            }
            NetEvent::Finished => self.app.client_closed(id),
            _ => return,
        };
        self.execute(actions, None);
    }

    fn link_event(&mut self, id: ConnId, ev: NetEvent<LinkEvent>) {
        let Some(slot) = self.link_kinds.get(&id).copied() else {
            return;
        };
        let kind = slot.kind;
        let actions = match ev {
            NetEvent::Machine(LinkEvent::Up) => {
                self.set_up(id, true);
                let greeting = self.app.link_up(kind);
                // The greeting (registration, online snapshot) belongs to
                // the link that just connected, not to every link of its kind.
                self.execute(greeting, Some(id));
                return;
            }
            NetEvent::Machine(LinkEvent::Down(reason)) => {
                warn!(link = %id, ?kind, %reason, "upstream link down");
                self.metrics.link_closed(&reason);
                self.set_up(id, false);
                if self.any_up(kind) {
                    return;
                }
                self.app.link_down(kind)
            }
            NetEvent::Machine(LinkEvent::Unreachable(reason)) => {
                debug!(link = %id, ?kind, %reason, "upstream unreachable; retrying");
                self.metrics.link_closed(&reason);
                return;
            }
            NetEvent::Machine(LinkEvent::Pdu(pdu)) => {
                self.metrics.upstream_in.inc(pdu.key());
                self.app.upstream_pdu(kind, &pdu)
            }
            _ => return,
        };
        self.execute(actions, None);
    }

    fn set_up(&mut self, id: ConnId, up: bool) {
        if let Some(slot) = self.link_kinds.get_mut(&id) {
            slot.up = up;
            self.metrics.set_link(slot.addr, slot.kind, up);
        }
    }

    fn any_up(&self, kind: Upstream) -> bool {
        self.link_kinds.values().any(|s| s.kind == kind && s.up)
    }

    /// Links of `kind` that are up, in a stable order (the first is the
    /// "master" TeamTalk relays through).
    fn up_links(&self, kind: Upstream) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .link_kinds
            .iter()
            .filter(|(_, s)| s.kind == kind && s.up)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    fn execute(&mut self, actions: Vec<Action<ConnId>>, only_link: Option<ConnId>) {
        for action in actions {
            let (conn, op) = match action {
                Action::Send(conn, pdu) => {
                    self.metrics.client_out.inc(pdu.key());
                    (conn, ClientOp::Send(pdu))
                }
                Action::Accept {
                    conn,
                    user_id,
                    client_type,
                    reply,
                } => {
                    self.metrics.client_out.inc(reply.key());
                    self.metrics.logins_ok.fetch_add(1, Ordering::Relaxed);
                    let op = ClientOp::Accept {
                        user_id,
                        client_type,
                        reply,
                    };
                    (conn, op)
                }
                Action::Refuse { conn, reply } => {
                    self.metrics.client_out.inc(reply.key());
                    self.metrics.login_refused(&reply);
                    (conn, ClientOp::Refuse(reply))
                }
                Action::Close { conn, notice } => {
                    if let Some(n) = &notice {
                        self.metrics.client_out.inc(n.key());
                    }
                    (conn, ClientOp::Close(notice))
                }
                Action::Upstream(kind, pdu) => {
                    let targets = match only_link {
                        Some(id) => vec![id],
                        None => self.targets(kind, &pdu),
                    };
                    for id in targets {
                        self.metrics.upstream_out.inc(pdu.key());
                        self.outbox.links.entry(id).or_default().push(pdu.clone());
                    }
                    continue;
                }
            };
            self.outbox.clients.entry(conn).or_default().push(op);
        }
    }

    /// Hands every connection its queued operations in one reactor command.
    fn flush(&mut self) {
        // Upstream first: a login's presence update should be on its way to
        // route_server before the client hears it is logged in.
        for (id, pdus) in self.outbox.links.drain() {
            let sent = self.links.exec(id, move |l| {
                for pdu in pdus {
                    if let Err(e) = l.send(&pdu) {
                        debug!(error = %e, key = %pdu.key(), "upstream send failed");
                    }
                }
            });
            if sent.is_err() {
                warn!(link = %id, "link reactor stopped");
            }
        }
        for (conn, ops) in self.outbox.clients.drain() {
            let sent = self.clients.exec(conn, move |s| {
                for op in ops {
                    match op {
                        ClientOp::Send(pdu) => {
                            let _ = s.send(&pdu);
                        }
                        ClientOp::Accept {
                            user_id,
                            client_type,
                            reply,
                        } => {
                            if s.accept_login(user_id, client_type).is_ok() {
                                let _ = s.send(&reply);
                            }
                        }
                        ClientOp::Refuse(reply) => {
                            let _ = s.reject_login(&reply);
                        }
                        ClientOp::Close(notice) => {
                            if let Some(n) = notice {
                                let _ = s.send(&n);
                            }
                            s.close();
                        }
                    }
                }
            });
            if sent.is_err() {
                debug!(conn = %conn, "client reactor stopped");
            }
        }
    }

    /// Which links of `kind` get `pdu`: registration and load go to every
    /// login_server; presence goes to every route_server (each keeps the
    /// whole user map); everything else to one link, the first up.
    fn targets(&self, kind: Upstream, pdu: &Pdu) -> Vec<ConnId> {
        let all = self.up_links(kind);
        let to_all = match kind {
            Upstream::Login => true,
            Upstream::Route => [
                Command::OtherUserStatusUpdate,
                Command::OtherOnlineUserInfo,
                Command::OtherServerKickUser,
            ]
            .iter()
            .any(|c| pdu.is(c.key())),
            _ => false,
        };
        if to_all {
            all
        } else {
            all.into_iter().take(1).collect()
        }
    }
}

#[cfg(test)]
mod tests;
