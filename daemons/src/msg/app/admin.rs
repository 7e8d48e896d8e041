//! What the admin API asks of a msg_server: the sessions a user has here,
//! kicking them (a disabled or deleted user, a kick from the console),
//! and announcing a group change the administration made.
//!
//! Under `teamtalk up` the admin endpoint calls these directly through
//! the daemon's [`Controller`](crate::runtime::Controller); with separate
//! daemons db_proxy_server sends the same instructions as PDUs on each
//! msg_server's db link ([`MsgApp::db_instruction`]).

use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;

use teamtalk_conn::KickReason;
use teamtalk_proto::pb::im::base_define::ServerUserStat;
use teamtalk_proto::pb::im::group::ImGroupChangeMemberNotify;
use teamtalk_proto::pb::im::server::ImOnlineUserInfo;
use teamtalk_proto::{Command, Message, Pdu};
use tracing::info;

use super::{Action, Actions, MsgApp};
use crate::runtime::LinkId;

/// Most users one sessions query from db_proxy names (the admin API asks
/// about one).
const MAX_SESSION_QUERY: usize = 100;

/// A logged-in session of this msg_server, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalSession {
    /// TeamTalk's `ClientType` wire value (1 Windows, 2 Mac, 0x11 iOS,
    /// 0x12 Android, …).
    pub client_type: u32,
    /// The client's address, when the transport gave one.
    pub addr: Option<SocketAddr>,
    /// The status the client set (`UserStatType`: 1 online, 3 leave, …).
    pub online_status: i32,
}

impl<C: Copy + Eq + Hash + Debug> MsgApp<C> {
    /// The sessions `user` has logged in here.
    #[must_use]
    pub fn user_sessions(&self, user: u32) -> Vec<LocalSession> {
        self.presence
            .sessions(user)
            .filter_map(|c| self.conns.get(&c))
            .filter_map(|s| {
                s.user.map(|(_, client_type)| LocalSession {
                    client_type,
                    addr: s.addr.as_ref().map(super::PeerAddr::get),
                    online_status: s.online_status,
                })
            })
            .collect()
    }

    /// Kicks every session `user` has here, as a second login would (the
    /// client is told `IMKickUser` with TeamTalk's reason 1, which its
    /// clients answer by not reconnecting on their own), and returns how
    /// many there were with the actions that do it.
    pub fn kick_user(&mut self, user: u32) -> (u32, Actions<C>) {
        let mut out = Vec::new();
        let sessions: Vec<C> = self.presence.sessions(user).collect();
        for conn in &sessions {
            self.presence.logout(user, *conn);
            self.kick(*conn, user, KickReason::DuplicateUser, &mut out);
        }
        if !sessions.is_empty() {
            info!(
                user,
                sessions = sessions.len(),
                "kicked by the administration"
            );
        }
        (u32::try_from(sessions.len()).unwrap_or(u32::MAX), out)
    }

    /// A group change the administration made: the notice for everyone
    /// concerned, here and (through route_server) on the other
    /// msg_servers, as for a change a client asked for.
    pub fn announce_group_change(&mut self, notify: ImGroupChangeMemberNotify) -> Actions<C> {
        let mut out = Vec::new();
        self.announce_member_change(notify, &mut out);
        out
    }

    /// A group change the administration made, for the members online
    /// here only (the caller tells every msg_server itself).
    pub fn deliver_group_change(&mut self, notify: &ImGroupChangeMemberNotify) -> Actions<C> {
        let pdu = Command::GroupChangeMemberNotify.pdu(0, notify);
        let mut out = Vec::new();
        self.member_change(notify, &pdu, &mut out);
        out
    }

    /// An instruction db_proxy_server sent unasked on the db link (its
    /// admin API, with separate daemons): `OtherServerKickUser` kicks
    /// every session of the user here; `GroupChangeMemberNotify` is
    /// delivered to the members online here (db_proxy sends it to every
    /// msg_server, so none relays it); `BuddyListUsersStatusRequest` asks
    /// for the sessions of the users it names here, answered on the same
    /// link with `OtherOnlineUserInfo` (one entry per session) and the
    /// request's seq. `None` for any other PDU, which is then a reply.
    pub(super) fn db_instruction(
        &mut self,
        link: LinkId,
        pdu: &Pdu,
        msg: &Message,
    ) -> Option<Actions<C>> {
        match msg {
            Message::BuddyListUsersStatusRequest(req) => {
                let user_stat_list = req
                    .user_id_list
                    .iter()
                    .take(MAX_SESSION_QUERY)
                    .flat_map(|&user| {
                        self.user_sessions(user)
                            .into_iter()
                            .map(move |s| ServerUserStat {
                                user_id: user,
                                status: s.online_status,
                                client_type: s.client_type as i32,
                            })
                    })
                    .collect();
                let answer = Command::OtherOnlineUserInfo
                    .pdu(pdu.header.seq_num, &ImOnlineUserInfo { user_stat_list });
                Some(vec![Action::Link(link, answer)])
            }
            Message::OtherServerKickUser(k) => Some(self.kick_user(k.user_id).1),
            Message::GroupChangeMemberNotify(n) => {
                let mut out = Vec::new();
                self.member_change(n, pdu, &mut out);
                Some(out)
            }
            _ => None,
        }
    }
}
