//! The transport's counters, kept by the runner for every daemon alike:
//! connections and bytes per side (from the reactors), closes by reason
//! per side, and PDUs in and out by command per peer kind.
//!
//! These are facts about sockets, not decisions, so they are what the
//! runner counts (with the waits for room in a full worker queue, a fact
//! about the runner itself); everything a daemon decides is counted by its
//! App.

use teamtalk_conn::CloseReason;
use teamtalk_net::Handle;
use teamtalk_proto::CommandKey;

use super::wire::Wire;
use crate::metrics::{CloseCounters, CommandCounters, CounterMap, Scrape, render_net};

/// One side: its reactor and the closes of its connections.
pub(crate) struct Side {
    pub(crate) name: &'static str,
    pub(crate) net: Handle<Wire>,
    /// The side's stats group when it shares its reactor with other sides.
    pub(crate) group: Option<usize>,
    pub(crate) closes: CloseCounters,
    /// Closes of HTTP connections, by the HTTP machine's reason label.
    pub(crate) http_closes: CounterMap,
}

/// PDU counters of one peer kind.
pub(crate) struct Peer {
    pub(crate) name: &'static str,
    pub(crate) pdus_in: CommandCounters,
    pub(crate) pdus_out: CommandCounters,
}

/// Every transport counter of one daemon; shared with its metrics source.
pub(crate) struct Traffic {
    pub(crate) sides: Vec<Side>,
    pub(crate) peers: Vec<Peer>,
    /// Server-port peers admitted, by whether they authenticated.
    pub(crate) admitted: CounterMap,
    /// Server-port peers turned away on accept by the peer policy.
    pub(crate) refused: std::sync::atomic::AtomicU64,
    /// Jobs the App could hand to a worker only after waiting for room in
    /// its full queue (the App's thread, and with it the reading of its
    /// connections, stood still meanwhile).
    pub(crate) worker_waits: std::sync::atomic::AtomicU64,
}

impl Traffic {
    /// The index of `name` among the peers, adding it if new.
    pub(crate) fn peer_index(peers: &mut Vec<Peer>, name: &'static str) -> usize {
        if let Some(i) = peers.iter().position(|p| p.name == name) {
            return i;
        }
        peers.push(Peer {
            name,
            pdus_in: CommandCounters::new(),
            pdus_out: CommandCounters::new(),
        });
        peers.len() - 1
    }

    pub(crate) fn pdu_in(&self, peer: usize, key: CommandKey) {
        if let Some(p) = self.peers.get(peer) {
            p.pdus_in.inc(key);
        }
    }

    pub(crate) fn pdu_out(&self, peer: usize, key: CommandKey) {
        if let Some(p) = self.peers.get(peer) {
            p.pdus_out.inc(key);
        }
    }

    pub(crate) fn closed(&self, side: usize, reason: &CloseReason) {
        if let Some(s) = self.sides.get(side) {
            s.closes.inc(reason);
        }
    }

    pub(crate) fn peer_admitted(&self, authenticated: bool) {
        self.admitted.inc(if authenticated {
            "authenticated"
        } else {
            "unauthenticated"
        });
    }

    pub(crate) fn peer_refused(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn worker_waited(&self) {
        self.worker_waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn http_closed(&self, side: usize, label: &'static str) {
        if let Some(s) = self.sides.get(side) {
            s.http_closes.inc(label);
        }
    }

    pub(crate) fn collect(&self, out: &mut Scrape) {
        for s in &self.sides {
            let side = [("side", s.name)];
            let stats = match s.group {
                Some(g) => s.net.group_stats(g).unwrap_or_default(),
                None => s.net.stats(),
            };
            render_net(out, &side, &stats);
            s.closes.render(out, &side);
            s.http_closes.render(
                out,
                "teamtalk_http_closes_total",
                "HTTP connections closed, by reason (done, peer_closed, header_timed_out, …).",
                &side,
                "reason",
            );
        }
        for p in &self.peers {
            p.pdus_in.render_in(out, p.name);
            p.pdus_out.render_out(out, p.name);
        }
        self.admitted.render(
            out,
            "teamtalk_peers_admitted_total",
            "Server-port peers admitted, by whether they proved the cluster secret.",
            &[],
            "auth",
        );
        out.counter(
            "teamtalk_peers_refused_total",
            "Server-port peers closed on accept: no cluster secret and not in AllowUnauthenticatedPeers.",
            &[],
            self.refused.load(std::sync::atomic::Ordering::Relaxed),
        );
        out.counter(
            "teamtalk_worker_queue_full_waits_total",
            "Jobs handed to a worker (a store lane, a disk job) only after waiting for room in its full queue: the worker is the bottleneck, and the daemon read nothing meanwhile.",
            &[],
            self.worker_waits.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
}
