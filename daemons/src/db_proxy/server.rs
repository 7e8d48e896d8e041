//! The network side of db_proxy: a listener whose connections are
//! server-peer [`Session`]s on the `teamtalk-net` reactor, feeding the
//! [`StoreWorker`] and sending its replies back.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use teamtalk_conn::{Session, SessionConfig, SessionEvent};
use teamtalk_net::{ConnId, Handle, NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::server::ImStopReceivePacket;
use tracing::{debug, info, warn};

use super::handler::{DbProxy, DbProxyStats};
use super::metrics::DbMetrics;
use super::worker::{StoreWorker, Submitter};
use super::{DbProxyConfig, DbProxyError};
use crate::metrics::{AdminServer, ClearOnDrop, CommandCounters, Labelled, MetricsSource};
use crate::store::Store;

/// A running db_proxy_server. Stops on [`DbProxyServer::shutdown`] or drop.
pub struct DbProxyServer {
    local_addr: SocketAddr,
    proxy: Arc<DbProxy>,
    stop_tx: Option<Sender<()>>,
    events: Option<JoinHandle<()>>,
    worker: Option<StoreWorker<ConnId>>,
    reactor: Option<Reactor<Session>>,
    metrics: Arc<DbMetrics>,
    admin: Option<AdminServer>,
}

impl std::fmt::Debug for DbProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbProxyServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Starts db_proxy_server on `config.listen` with `store`.
///
/// Connections are server peers (TeamTalk's msg_servers): no login, a
/// heartbeat from us after 5 s without sending, closed after 30 s without
/// receiving. Peers' heartbeats are consumed by the session and never
/// echoed, as TeamTalk's db_proxy does.
///
/// # Errors
/// The reactor or a worker thread could not start, or the address could not
/// be bound.
pub fn spawn(config: DbProxyConfig, store: Arc<dyn Store>) -> Result<DbProxyServer, DbProxyError> {
    let proxy = Arc::new(DbProxy::with_options(store, config.options.clone()));
    let reactor: Reactor<Session> = Reactor::new(ReactorConfig {
        threads: config.reactor_threads.max(1),
        ..ReactorConfig::default()
    })
    .map_err(DbProxyError::Io)?;
    let handle = reactor.handle();
    let sink_handle = handle.clone();
    let pdus_out = Arc::new(CommandCounters::new());
    let sink_out = Arc::clone(&pdus_out);
    let worker = StoreWorker::spawn(Arc::clone(&proxy), &config.worker, move |id, pdu| {
        sink_out.inc(pdu.key());
        send(&sink_handle, id, pdu);
    })
    .map_err(DbProxyError::Io)?;
    let metrics = Arc::new(DbMetrics::new(
        handle.clone(),
        Arc::clone(&proxy),
        worker.metrics(),
        pdus_out,
    ));
    let local_addr = reactor.listen(config.listen, |peer, now| {
        Session::new(SessionConfig::server_peer(), peer, now)
    })?;
    info!(%local_addr, "db_proxy_server listening");
    let admin = match config.admin {
        Some(addr) => {
            let source: Arc<dyn MetricsSource> = Arc::new(Labelled::new(
                "db_proxy_server",
                local_addr.to_string(),
                Arc::clone(&metrics) as Arc<dyn MetricsSource>,
            ));
            Some(
                AdminServer::start(addr, source)
                    .map_err(|source| DbProxyError::Admin { addr, source })?,
            )
        }
        None => None,
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let events = reactor.events();
    let submitter = worker.submitter();
    let loop_metrics = Arc::clone(&metrics);
    let events = std::thread::Builder::new()
        .name("db-proxy-events".to_owned())
        .spawn(move || {
            let _running = ClearOnDrop(&loop_metrics.events_running);
            event_loop(&events, &stop_rx, &submitter, &handle, &loop_metrics);
        })
        .map_err(DbProxyError::Io)?;
    Ok(DbProxyServer {
        local_addr,
        proxy,
        stop_tx: Some(stop_tx),
        events: Some(events),
        worker: Some(worker),
        reactor: Some(reactor),
        metrics,
        admin,
    })
}

/// Queues a reply on its connection. A connection that is gone (stale id)
/// or a stopped reactor just loses the reply: its peer is gone too.
fn send(handle: &Handle<Session>, id: ConnId, pdu: teamtalk_proto::Pdu) {
    let sent = handle.exec(id, move |s: &mut Session| {
        if let Err(e) = s.send(&pdu) {
            debug!(conn = %id, error = %e, "reply not sent");
        }
    });
    if sent.is_err() {
        debug!(conn = %id, "reply dropped: reactor stopped");
    }
}

/// Moves PDUs from the reactor to the worker, in arrival order, until told
/// to stop; then tells every peer to stop sending.
fn event_loop(
    events: &Receiver<(ConnId, NetEvent<SessionEvent>)>,
    stop: &Receiver<()>,
    submitter: &Submitter<ConnId>,
    handle: &Handle<Session>,
    metrics: &DbMetrics,
) {
    let mut conns: HashSet<ConnId> = HashSet::new();
    loop {
        crossbeam_channel::select! {
            recv(stop) -> _ => break,
            recv(events) -> ev => {
                let Ok((id, ev)) = ev else { break };
                match ev {
                    NetEvent::Accepted { peer, .. } => {
                        info!(conn = %id, %peer, "msg_server connected");
                        conns.insert(id);
                    }
                    NetEvent::Machine(SessionEvent::Pdu(pdu)) => {
                        metrics.pdus_in.inc(pdu.key());
                        if submitter.submit(id, pdu).is_err() {
                            break;
                        }
                    }
                    NetEvent::Machine(SessionEvent::Closed(reason)) => {
                        info!(conn = %id, %reason, "connection closed");
                        metrics.closes.inc(&reason);
                    }
                    NetEvent::Machine(SessionEvent::LoginRequest(_)) => {
                        // Server-peer sessions have no login gate.
                        warn!(conn = %id, "unexpected login request on a server link");
                    }
                    NetEvent::Finished => {
                        conns.remove(&id);
                    }
                    other => debug!(conn = %id, event = ?other, "ignored event"),
                }
            }
        }
    }
    // TeamTalk's db_proxy tells its peers to stop sending before it exits,
    // so they can switch to another db_proxy instead of losing requests.
    let notice = ImStopReceivePacket { result: 0 };
    for id in conns {
        let pdu = notice.to_pdu(0);
        metrics.pdus_out.inc(pdu.key());
        send(handle, id, pdu);
    }
}

impl DbProxyServer {
    /// The address the listener is bound to (the real port when 0 was asked).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The handler's counters.
    #[must_use]
    pub fn stats(&self) -> DbProxyStats {
        self.proxy.stats()
    }

    /// Every counter and the store latency histogram, for an admin
    /// endpoint (`teamtalk up` serves all daemons on one).
    #[must_use]
    pub fn metrics(&self) -> Arc<DbMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The admin endpoint's address, when [`DbProxyConfig::admin`] asked
    /// for one.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// The request handler (e.g. to reach its store).
    #[must_use]
    pub fn proxy(&self) -> &Arc<DbProxy> {
        &self.proxy
    }

    /// Stops cleanly: peers get `CID_OTHER_STOP_RECV_PACKET`, requests
    /// already taken are stored and answered, replies are flushed (for at
    /// most the reactor's shutdown grace), then every thread is joined.
    /// Requests arriving meanwhile are dropped unanswered and unstored, so
    /// their senders can retry elsewhere without creating duplicates.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.events.take()
            && t.join().is_err()
        {
            tracing::error!("db_proxy event thread panicked");
        }
        // The event thread's submitter is gone: the worker drains and ends.
        if let Some(w) = self.worker.take() {
            w.shutdown();
        }
        if let Some(r) = self.reactor.take() {
            r.shutdown();
        }
        info!(addr = %self.local_addr, "db_proxy_server stopped");
    }
}

impl Drop for DbProxyServer {
    fn drop(&mut self) {
        self.stop();
    }
}
