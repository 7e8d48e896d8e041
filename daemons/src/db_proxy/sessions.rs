//! The admin API's sessions query on db_proxy_server (separate daemons):
//! db_proxy does not know who is online, so it asks every msg_server
//! connected to it (`BuddyListUsersStatusRequest` naming the user, on the
//! msg_server's own db link) and gathers their `OtherOnlineUserInfo`
//! answers, matched by seq, until all answered, their connection closed,
//! or [`QUERY_TTL`] passed (then with what came, the silent ones named).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use teamtalk_proto::pb::im::base_define::ServerUserStat;
use teamtalk_proto::pb::im::buddy::ImUsersStatReq;
use teamtalk_proto::pb::im::server::ImOnlineUserInfo;
use teamtalk_proto::{Command, Pdu};
use tracing::debug;

use crate::runtime::Conn;

/// How long the msg_servers have to answer.
pub const QUERY_TTL: Duration = Duration::from_secs(2);
/// Queries held at once (the admin API asks one at a time; timed-out ones
/// linger until the next tick).
const MAX_QUERIES: usize = 64;

/// The answer: each session found, with the address of the msg_server
/// link it came on (as db_proxy sees it), and the links that did not
/// answer in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionsAnswer {
    /// `(msg_server link's peer address, session)`.
    pub sessions: Vec<(SocketAddr, ServerUserStat)>,
    /// msg_server links that did not answer within [`QUERY_TTL`].
    pub silent: Vec<SocketAddr>,
}

struct Query {
    waiting: BTreeSet<Conn>,
    answer: SessionsAnswer,
    reply: Sender<SessionsAnswer>,
    deadline: Instant,
}

/// Sessions queries in flight.
#[derive(Default)]
pub(super) struct SessionQueries {
    queries: HashMap<u16, Query>,
    next: u16,
}

impl SessionQueries {
    /// Starts a query about `user` to every msg_server in `peers`; the
    /// PDUs to send. With no msg_server, answers at once (nobody online).
    pub(super) fn ask(
        &mut self,
        user: u32,
        peers: &HashMap<Conn, SocketAddr>,
        now: Instant,
        reply: Sender<SessionsAnswer>,
    ) -> Vec<(Conn, Pdu)> {
        if peers.is_empty() || self.queries.len() >= MAX_QUERIES {
            let _ = reply.try_send(SessionsAnswer::default());
            return Vec::new();
        }
        let mut seq = self.next;
        while self.queries.contains_key(&seq) {
            seq = seq.wrapping_add(1);
        }
        self.next = seq.wrapping_add(1);
        let req = ImUsersStatReq {
            user_id: 0,
            user_id_list: vec![user],
            attach_data: None,
        };
        let pdu = Command::BuddyListUsersStatusRequest.pdu(seq, &req);
        self.queries.insert(
            seq,
            Query {
                waiting: peers.keys().copied().collect(),
                answer: SessionsAnswer::default(),
                reply,
                deadline: now + QUERY_TTL,
            },
        );
        peers.keys().map(|c| (*c, pdu.clone())).collect()
    }

    /// An `OtherOnlineUserInfo` from `conn`: whether it answered a query
    /// (else it is not the API's).
    pub(super) fn answered(
        &mut self,
        conn: Conn,
        from: SocketAddr,
        seq: u16,
        info: ImOnlineUserInfo,
    ) -> bool {
        let Some(q) = self.queries.get_mut(&seq) else {
            return false;
        };
        if !q.waiting.remove(&conn) {
            return false;
        }
        q.answer
            .sessions
            .extend(info.user_stat_list.into_iter().map(|s| (from, s)));
        if q.waiting.is_empty() {
            self.finish(seq, &HashMap::new());
        }
        true
    }

    /// `conn` closed: it will not answer.
    pub(super) fn closed(&mut self, conn: Conn) {
        let done: Vec<u16> = self
            .queries
            .iter_mut()
            .filter_map(|(seq, q)| {
                (q.waiting.remove(&conn) && q.waiting.is_empty()).then_some(*seq)
            })
            .collect();
        for seq in done {
            self.finish(seq, &HashMap::new());
        }
    }

    /// Answers the queries past their deadline with what came.
    pub(super) fn expire(&mut self, now: Instant, peers: &HashMap<Conn, SocketAddr>) {
        let late: Vec<u16> = self
            .queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in late {
            self.finish(seq, peers);
        }
    }

    fn finish(&mut self, seq: u16, peers: &HashMap<Conn, SocketAddr>) {
        if let Some(mut q) = self.queries.remove(&seq) {
            q.answer.silent = q
                .waiting
                .iter()
                .filter_map(|c| peers.get(c).copied())
                .collect();
            if q.reply.try_send(q.answer).is_err() {
                debug!(seq, "sessions answer after the API stopped waiting");
            }
        }
    }

    /// Queries in flight.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(user: u32, ct: i32) -> ServerUserStat {
        ServerUserStat {
            user_id: user,
            status: 1,
            client_type: ct,
        }
    }

    #[test]
    fn answers_are_gathered_by_seq_until_all_came_closed_or_expired() {
        let (a, b) = (Conn::test(1), Conn::test(2));
        let addr_a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let addr_b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let peers: HashMap<Conn, SocketAddr> = [(a, addr_a), (b, addr_b)].into();
        let t0 = crate::clock::now();
        let mut q = SessionQueries::default();

        // Both answer.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sent = q.ask(7, &peers, t0, tx);
        assert_eq!(sent.len(), 2);
        let seq = sent[0].1.header.seq_num;
        assert!(!q.answered(a, addr_a, seq.wrapping_add(9), ImOnlineUserInfo::default()));
        assert!(q.answered(
            a,
            addr_a,
            seq,
            ImOnlineUserInfo {
                user_stat_list: vec![stat(7, 1)]
            }
        ));
        assert!(
            !q.answered(a, addr_a, seq, ImOnlineUserInfo::default()),
            "once per link"
        );
        assert!(rx.try_recv().is_err());
        assert!(q.answered(
            b,
            addr_b,
            seq,
            ImOnlineUserInfo {
                user_stat_list: vec![stat(7, 0x12)]
            }
        ));
        let got = rx.try_recv().unwrap();
        assert_eq!(
            got.sessions,
            [(addr_a, stat(7, 1)), (addr_b, stat(7, 0x12))]
        );
        assert!(got.silent.is_empty());

        // One closes, the other answers.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let seq = q.ask(7, &peers, t0, tx)[0].1.header.seq_num;
        q.closed(b);
        assert!(q.answered(a, addr_a, seq, ImOnlineUserInfo::default()));
        assert_eq!(rx.try_recv().unwrap(), SessionsAnswer::default());

        // One is silent: answered at the deadline, naming it.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let seq = q.ask(7, &peers, t0, tx)[0].1.header.seq_num;
        assert!(q.answered(
            b,
            addr_b,
            seq,
            ImOnlineUserInfo {
                user_stat_list: vec![stat(7, 2)]
            }
        ));
        q.expire(t0 + QUERY_TTL - Duration::from_millis(1), &peers);
        assert!(rx.try_recv().is_err());
        q.expire(t0 + QUERY_TTL, &peers);
        let got = rx.try_recv().unwrap();
        assert_eq!((got.sessions.len(), got.silent), (1, vec![addr_a]));
        assert_eq!(q.len(), 0);

        // Nobody connected: nobody online, at once.
        let (tx, rx) = crossbeam_channel::bounded(1);
        assert!(q.ask(7, &HashMap::new(), t0, tx).is_empty());
        assert_eq!(rx.try_recv().unwrap(), SessionsAnswer::default());
    }
}
