//! msg_server: holds client connections, logs users in through db_proxy,
//! delivers messages, and keeps links to db_proxy, login and route servers
//! and to the file_servers and push_servers its conf names.
//!
//! The logic is [`MsgApp`], a pure state machine; [`spawn`] runs it on the
//! shared [`crate::runtime`] (one listener of client sessions and
//! one link per configured upstream server).

pub mod app;
mod config;
pub mod groups;

use std::sync::Arc;

use teamtalk_conn::LinkConfig;
use teamtalk_net::ReactorConfig;

pub use app::{
    Action, AppStats, LocalSession, MAX_CREDENTIAL_LEN, MsgApp, Registration, SessionLimits,
    Upstream, UpstreamLink,
};
pub(crate) use config::resolve;
pub use config::{KNOWN_KEYS, MsgConfig, MsgConfigError, WebSocketPort, parse_origins};

use crate::runtime::{self, AdminSettings, Conn, DaemonError, NoWorker, Plan, PortKind, Running};
use crate::tls::LinkTls;

/// A running msg_server.
pub type RunningMsg = Running<MsgApp<Conn>>;

/// Starts a msg_server.
///
/// # Errors
/// [`DaemonError`] when the client port cannot be bound, a reactor cannot
/// start, or a required upstream kind has no address.
pub fn spawn(cfg: MsgConfig) -> Result<RunningMsg, DaemonError> {
    let mut plan = Plan::<NoWorker>::new();
    plan.side(
        "clients",
        ReactorConfig {
            threads: cfg.threads,
            max_connections: cfg.max_connections,
            ..ReactorConfig::default()
        },
    );
    plan.listen(
        "clients",
        "client",
        cfg.listen,
        PortKind::Clients(cfg.session.clone()),
    );
    if let Some((addr, tls)) = &cfg.tls_listen {
        plan.listen_tls(
            "clients",
            "client",
            *addr,
            PortKind::Clients(cfg.session.clone()),
            Arc::clone(tls),
        );
    }
    let mut ws_port = None;
    if let Some(ws) = &cfg.websocket {
        ws_port = Some(plan.listen_ws(
            "clients",
            "browser",
            ws.addr,
            PortKind::Clients(cfg.session.clone()),
            ws.ws.clone(),
            ws.tls.clone(),
        ));
    }
    let link_tls = LinkTls::from_settings(cfg.link_tls.as_ref()).map_err(tls_error)?;
    let mut links = Vec::new();
    for (kind, addrs) in [
        (Upstream::Db, &cfg.db),
        (Upstream::Login, &cfg.login),
        (Upstream::Route, &cfg.route),
        (Upstream::File, &cfg.file),
        (Upstream::Push, &cfg.push),
    ] {
        if addrs.is_empty() && !matches!(kind, Upstream::File | Upstream::Push) {
            return Err(DaemonError::Config {
                daemon: "msg_server",
                reason: format!("no {kind:?} server configured"),
            });
        }
        for addr in addrs {
            let mut lc = LinkConfig::new(*addr);
            if let Some((heartbeat, idle)) = cfg.link_timers {
                lc.heartbeat_interval = heartbeat;
                lc.idle_timeout = idle;
            }
            let id = plan
                .link_over("upstream", lc, link_tls.as_ref())
                .map_err(tls_error)?;
            links.push(UpstreamLink {
                id,
                kind,
                addr: *addr,
            });
        }
    }
    plan.admin(
        cfg.admin
            .map(|a| AdminSettings::with_token(a, cfg.admin_token.clone())),
    );
    plan.peer_policy(cfg.peers.clone());
    plan.client_credit(Some(app::CLIENT_PDU_CREDIT));
    let mut registration = cfg.registration.clone();
    registration.ws_tls = cfg.websocket.as_ref().is_some_and(|w| w.tls.is_some());
    let mut app = MsgApp::new(registration, links)
        .with_limits(cfg.limits)
        .with_aes_key(cfg.aes_key);
    if let Some(id) = ws_port {
        app = app.with_ws_port(id);
    }
    runtime::start(app, plan)
}

fn tls_error(e: crate::tls::TlsConfError) -> DaemonError {
    DaemonError::Config {
        daemon: "msg_server",
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod tests;
