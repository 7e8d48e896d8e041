//! [`Cluster`]s: how the API reaches the msg_servers.
//!
//! [`MsgServers`] is the in-process one (`teamtalk up`): it acts on each
//! msg_server's App through its [`Controller`], between two of its inputs,
//! so a kick or a group notice leaves as if the msg_server had decided it.
//!
//! [`DbProxyLinks`] is db_proxy_server's (separate daemons): the
//! instructions go as PDUs to every msg_server connected to it, which act
//! on them for their own sessions (`OtherServerKickUser` kicks every
//! session of the user; `GroupChangeMemberNotify` reaches the members
//! online there), and the sessions of a user are asked of each of them
//! (`crate::db_proxy::sessions`). Every msg_server links to the db_proxy_server serving
//! its store, so all of them are told; a msg_server whose link is down
//! misses a kick (the user's next request to db_proxy finds them
//! disabled) or a notice (members see the change at their next login).

use std::net::SocketAddr;
use std::time::Duration;

use teamtalk_proto::pb::im::group::ImGroupChangeMemberNotify;
use teamtalk_proto::pb::im::server::ImServerKickUser;
use teamtalk_proto::{Command, Pdu};
use tracing::warn;

use super::types::client_name;
use super::{Cluster, ClusterError, OnlineSession};
use crate::db_proxy::DbProxyApp;
use crate::db_proxy::sessions::QUERY_TTL;
use crate::msg::MsgApp;
use crate::runtime::{Conn, Controller};
use crate::store::UserId;

/// The msg_servers of this process, by client address.
#[derive(Debug, Clone, Default)]
pub struct MsgServers {
    servers: Vec<(SocketAddr, Controller<MsgApp<Conn>>)>,
}

impl MsgServers {
    /// Acting on these msg_servers.
    #[must_use]
    pub fn new(servers: Vec<(SocketAddr, Controller<MsgApp<Conn>>)>) -> Self {
        Self { servers }
    }

    /// Runs `f` on every msg_server; the results of those that answered,
    /// or an error when none did (a msg_server that does not answer is
    /// logged: it is stopping, or wedged).
    fn each<R: Send + 'static>(
        &self,
        f: impl Fn(&Controller<MsgApp<Conn>>) -> Result<R, crate::runtime::DaemonError>,
    ) -> Result<Vec<(SocketAddr, R)>, ClusterError> {
        let mut out = Vec::with_capacity(self.servers.len());
        let mut failed = Vec::new();
        for (addr, c) in &self.servers {
            match f(c) {
                Ok(r) => out.push((*addr, r)),
                Err(e) => {
                    warn!(msg_server = %addr, error = %e, "admin API: msg_server did not answer");
                    failed.push(addr.to_string());
                }
            }
        }
        if out.is_empty() && !failed.is_empty() {
            return Err(ClusterError::Unavailable(failed.join(", ")));
        }
        Ok(out)
    }
}

impl Cluster for MsgServers {
    fn sessions(&self, user: UserId) -> Result<Vec<OnlineSession>, ClusterError> {
        let found = self.each(|c| c.inspect(move |app| app.user_sessions(user)))?;
        Ok(found
            .into_iter()
            .flat_map(|(server, sessions)| {
                sessions.into_iter().map(move |s| OnlineSession {
                    server: server.to_string(),
                    client_type: s.client_type,
                    client: client_name(s.client_type).to_owned(),
                    addr: s.addr.map(|a| a.to_string()),
                    status: s.online_status,
                })
            })
            .collect())
    }

    fn kick(&self, user: UserId) -> Result<Option<u32>, ClusterError> {
        let kicked = self.each(|c| {
            c.act(move |app, now, out| {
                app.set_time(now.unix());
                let (n, actions) = app.kick_user(user);
                out.extend(actions);
                n
            })
        })?;
        Ok(Some(kicked.iter().map(|(_, n)| n).sum()))
    }

    fn announce(&self, notify: ImGroupChangeMemberNotify) -> Result<(), ClusterError> {
        // Every msg_server delivers to its own members: none relays, so a
        // route_server link that is down loses nothing.
        self.each(|c| {
            let n = notify.clone();
            c.act(move |app, now, out| {
                app.set_time(now.unix());
                out.extend(app.deliver_group_change(&n));
            })
        })?;
        Ok(())
    }
}

/// db_proxy_server's msg_server links (separate daemons): kicks and group
/// notices go as PDUs to every msg_server connected to db_proxy_server,
/// and a user's sessions are asked of each of them.
#[derive(Debug, Clone)]
pub struct DbProxyLinks {
    db: Controller<DbProxyApp>,
}

impl DbProxyLinks {
    /// Through the running db_proxy_server's App.
    #[must_use]
    pub fn new(db: Controller<DbProxyApp>) -> Self {
        Self { db }
    }

    fn send(&self, pdu: Pdu) -> Result<usize, ClusterError> {
        let told = self
            .db
            .act(move |app, _now, out| app.instruct(&pdu, out))
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        if told == 0 {
            return Err(ClusterError::Unavailable(
                "no msg_server is connected to this db_proxy_server".into(),
            ));
        }
        Ok(told)
    }
}

impl Cluster for DbProxyLinks {
    fn sessions(&self, user: UserId) -> Result<Vec<OnlineSession>, ClusterError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.db
            .act(move |app, now, out| app.ask_sessions(user, now, tx, out))
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        // db_proxy answers by QUERY_TTL with whatever came.
        let answer = rx
            .recv_timeout(QUERY_TTL + Duration::from_secs(3))
            .map_err(|_| ClusterError::Unavailable("db_proxy_server did not answer".into()))?;
        if !answer.silent.is_empty() {
            warn!(silent = ?answer.silent, "admin API: msg_servers did not say who is online");
        }
        Ok(answer
            .sessions
            .into_iter()
            .map(|(link, s)| {
                let client_type = u32::try_from(s.client_type).unwrap_or(0);
                OnlineSession {
                    server: format!("msg_server link from {link}"),
                    client_type,
                    client: client_name(client_type).to_owned(),
                    addr: None,
                    status: s.status,
                }
            })
            .collect())
    }

    fn kick(&self, user: UserId) -> Result<Option<u32>, ClusterError> {
        let kick = ImServerKickUser {
            user_id: user,
            client_type: 0,
            reason: teamtalk_conn::KickReason::DuplicateUser.code(),
        };
        self.send(Command::OtherServerKickUser.pdu(0, &kick))?;
        Ok(None)
    }

    fn announce(&self, notify: ImGroupChangeMemberNotify) -> Result<(), ClusterError> {
        self.send(Command::GroupChangeMemberNotify.pdu(0, &notify))?;
        Ok(())
    }
}
