//! push_server's decisions, sans-IO: which sink takes each token, the
//! bounded queue, retries with backoff, one send per message and device,
//! and the 0x0710 answer once every token of a request has its result.
//!
//! Result codes (`PushResult.result_code`): 0 delivered (or a duplicate
//! of a delivery already made or under way), 1 no sink for the platform
//! (TeamTalk's code for a non-iOS token), 2 invalid token (the service
//! refused it, or it is empty or too long), 3 failed (a refusal another
//! attempt would not fix, or `MaxAttempts` used up), 4 queue full.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use teamtalk_proto::pb::im::base_define::PushResult;
use teamtalk_proto::pb::im::server::{ImPushToUserReq, ImPushToUserRsp};
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, info, warn};

use super::sink::{Delivery, Outcome, Platform, SinkKind};
use super::worker::{PushDone, PushJob};
use crate::clip::clip;
use crate::metrics::Scrape;
use crate::runtime::{self, Conn, Input, Now, Out};

/// Result: delivered.
pub const RESULT_DELIVERED: u32 = 0;
/// Result: no sink serves the token's platform.
pub const RESULT_NO_SINK: u32 = 1;
/// Result: the token is invalid.
pub const RESULT_INVALID_TOKEN: u32 = 2;
/// Result: delivery failed.
pub const RESULT_FAILED: u32 = 3;
/// Result: the queue was full.
pub const RESULT_QUEUE_FULL: u32 = 4;

/// Longest device token taken (APNs tokens are 64 hex digits, FCM's a
/// few hundred characters).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest notification text kept; longer is cut (APNs takes 4 KiB in all).
pub const MAX_FLASH_LEN: usize = 1024;
/// Longest `data` JSON taken.
pub const MAX_DATA_LEN: usize = 2048;

/// Which sink serves which platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routes {
    /// iOS tokens.
    pub ios: Option<SinkKind>,
    /// Android tokens.
    pub android: Option<SinkKind>,
}

impl Routes {
    fn sink(self, p: Platform) -> Option<SinkKind> {
        match p {
            Platform::Ios => self.ios,
            Platform::Android => self.android,
        }
    }
}

/// Bounds and timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushLimits {
    /// Deliveries held at once (queued, in flight or waiting to retry).
    pub max_queue: usize,
    /// Attempts per delivery before it is given up.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each time.
    pub retry_base: Duration,
    /// Longest wait between attempts (a `Retry-After` included).
    pub retry_cap: Duration,
    /// How long a delivered (message, device) pair is remembered.
    pub dedupe_for: Duration,
    /// Attempts one worker runs at once (its share of the queue).
    pub per_worker: usize,
    /// (message, device) pairs remembered at most.
    pub max_remembered: usize,
}

impl Default for PushLimits {
    fn default() -> Self {
        Self {
            max_queue: 10_000,
            max_attempts: 4,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            dedupe_for: Duration::from_secs(3600),
            per_worker: 8,
            max_remembered: 200_000,
        }
    }
}

/// A 0x070f waiting for its answer.
#[derive(Debug)]
struct Answer {
    conn: Conn,
    seq: u16,
    results: Vec<PushResult>,
    left: usize,
}

#[derive(Debug)]
struct Item {
    request: u64,
    slot: usize,
    delivery: Delivery,
    attempts: u32,
    /// When it may be tried again (None: queued or in flight).
    due: Option<Instant>,
    key: Option<DedupeKey>,
}

type DedupeKey = (Arc<str>, String);

/// Counters.
#[derive(Debug, Default)]
struct Stats {
    requests: u64,
    duplicates: u64,
    /// (sink, result) -> count; results: delivered, invalid, failed, gave_up.
    finished: BTreeMap<(&'static str, &'static str), u64>,
    retries: BTreeMap<&'static str, u64>,
    refused: BTreeMap<&'static str, u64>,
}

/// push_server's App.
#[derive(Debug)]
pub struct PushApp {
    routes: Routes,
    limits: PushLimits,
    workers: usize,
    inflight: Vec<usize>,
    peers: HashSet<Conn>,
    answers: HashMap<u64, Answer>,
    items: HashMap<u64, Item>,
    ready: VecDeque<u64>,
    /// Pairs delivered (until when they are remembered) or under way (None).
    seen: HashMap<DedupeKey, Option<Instant>>,
    seen_order: VecDeque<(Instant, DedupeKey)>,
    next_id: u64,
    stats: Stats,
    /// Whether "no sink" was logged already (once, not per request).
    no_sink_logged: bool,
    /// Answers to send after the input.
    sends: Vec<(Conn, Pdu)>,
    unix: u64,
}

impl PushApp {
    /// An App sending through `routes` on `workers` worker threads.
    #[must_use]
    pub fn new(routes: Routes, limits: PushLimits, workers: usize) -> Self {
        if routes.ios.is_none() && routes.android.is_none() {
            warn!("push_server has no sink configured: every token will be answered with result 1");
        }
        Self {
            routes,
            limits,
            workers: workers.max(1),
            inflight: vec![0; workers.max(1)],
            peers: HashSet::new(),
            answers: HashMap::new(),
            items: HashMap::new(),
            ready: VecDeque::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            next_id: 0,
            stats: Stats::default(),
            no_sink_logged: false,
            sends: Vec::new(),
            unix: 0,
        }
    }

    /// Deliveries held (queued, in flight, waiting to retry).
    #[must_use]
    pub fn held(&self) -> usize {
        self.items.len()
    }

    /// Deliveries finished with `result` (delivered, invalid, failed,
    /// gave_up) through `sink`.
    #[must_use]
    pub fn finished(&self, sink: SinkKind, result: &str) -> u64 {
        self.stats
            .finished
            .iter()
            .filter(|((s, r), _)| *s == sink.label() && *r == result)
            .map(|(_, n)| *n)
            .sum()
    }

    fn push_request(&mut self, conn: Conn, pdu: &Pdu, req: ImPushToUserReq) {
        self.stats.requests += 1;
        let mut flash = req.flash;
        if flash.len() > MAX_FLASH_LEN {
            let mut cut = MAX_FLASH_LEN;
            while !flash.is_char_boundary(cut) {
                cut -= 1;
            }
            flash.truncate(cut);
        }
        let flash: Arc<str> = flash.into();
        let data: Arc<str> = if req.data.len() > MAX_DATA_LEN {
            warn!(
                bytes = req.data.len(),
                "push data too long; sent without it"
            );
            "{}".into()
        } else {
            req.data.into()
        };
        let push_key: Option<Arc<str>> = req.push_key.filter(|k| !k.is_empty()).map(Into::into);
        let id = self.next_id();
        let mut answer = Answer {
            conn,
            seq: pdu.seq(),
            results: Vec::with_capacity(req.user_token_list.len()),
            left: 0,
        };
        for t in req.user_token_list {
            let slot = answer.results.len();
            answer.results.push(PushResult {
                user_token: t.token.clone(),
                result_code: RESULT_DELIVERED,
                user_id: Some(t.user_id),
            });
            let code = match Platform::of(t.user_type) {
                None => Some(self.refuse("not_mobile", RESULT_NO_SINK)),
                Some(_) if t.token.is_empty() || t.token.len() > MAX_TOKEN_LEN => {
                    Some(self.refuse("bad_token", RESULT_INVALID_TOKEN))
                }
                Some(p) => match self.routes.sink(p) {
                    None => {
                        if !self.no_sink_logged {
                            self.no_sink_logged = true;
                            warn!(
                                platform = p.label(),
                                "a push for a platform no sink serves; answered with result 1 \
                                 (logged once)"
                            );
                        }
                        Some(self.refuse("no_sink", RESULT_NO_SINK))
                    }
                    Some(sink) => {
                        let key = push_key.clone().map(|k| (k, t.token.clone()));
                        if key.as_ref().is_some_and(|k| self.seen.contains_key(k)) {
                            self.stats.duplicates += 1;
                            debug!(user = t.user_id, "duplicate push; not sent again");
                            Some(RESULT_DELIVERED)
                        } else if self.items.len() >= self.limits.max_queue {
                            Some(self.refuse("queue_full", RESULT_QUEUE_FULL))
                        } else {
                            let item_id = self.next_id();
                            if let Some(k) = &key {
                                self.seen.insert(k.clone(), None);
                            }
                            self.items.insert(
                                item_id,
                                Item {
                                    request: id,
                                    slot,
                                    delivery: Delivery {
                                        sink,
                                        user_id: t.user_id,
                                        platform: p,
                                        token: t.token,
                                        flash: Arc::clone(&flash),
                                        data: Arc::clone(&data),
                                        badge: t.push_count,
                                        silent: t.push_type == 2,
                                        push_key: push_key.clone(),
                                    },
                                    attempts: 0,
                                    due: None,
                                    key,
                                },
                            );
                            self.ready.push_back(item_id);
                            None
                        }
                    }
                },
            };
            match code {
                Some(c) => answer.results[slot].result_code = c,
                None => answer.left += 1,
            }
        }
        if answer.left == 0 {
            self.answer(answer);
        } else {
            self.answers.insert(id, answer);
        }
    }

    fn refuse(&mut self, reason: &'static str, code: u32) -> u32 {
        *self.stats.refused.entry(reason).or_default() += 1;
        code
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Queues the 0x0710 for `a` (sent after the input), unless its
    /// msg_server has gone.
    fn answer(&mut self, a: Answer) {
        if !self.peers.contains(&a.conn) {
            debug!(conn = %a.conn, "push answer for a closed connection dropped");
            return;
        }
        let rsp = ImPushToUserRsp {
            push_result_list: a.results,
        };
        self.sends
            .push((a.conn, Command::OtherPushToUserRsp.pdu(a.seq, &rsp)));
    }

    fn done(&mut self, d: PushDone, now: Instant) {
        if let Some(n) = self.inflight.get_mut(d.worker) {
            *n = n.saturating_sub(1);
        }
        let Some(item) = self.items.get_mut(&d.id) else {
            return;
        };
        let sink = item.delivery.sink.label();
        let (code, result) = match d.outcome {
            Outcome::Delivered => (RESULT_DELIVERED, "delivered"),
            Outcome::Invalid(why) => {
                info!(user = item.delivery.user_id, sink, why = %clip(&why), "device token refused by the service");
                (RESULT_INVALID_TOKEN, "invalid")
            }
            Outcome::Failed(why) => {
                warn!(user = item.delivery.user_id, sink, why = %clip(&why), "push failed");
                (RESULT_FAILED, "failed")
            }
            Outcome::Retry { reason, after } => {
                if item.attempts >= self.limits.max_attempts {
                    warn!(user = item.delivery.user_id, sink, attempts = item.attempts,
                        why = %clip(&reason), "push given up after its retries");
                    (RESULT_FAILED, "gave_up")
                } else {
                    let shift = item.attempts.saturating_sub(1).min(16);
                    let backoff = self.limits.retry_base.saturating_mul(1 << shift);
                    let wait = after
                        .map_or(backoff, |s| backoff.max(Duration::from_secs(s)))
                        .min(self.limits.retry_cap);
                    debug!(user = item.delivery.user_id, sink, ?wait, why = %clip(&reason), "push retried later");
                    item.due = Some(now + wait);
                    *self.stats.retries.entry(sink).or_default() += 1;
                    return;
                }
            }
        };
        *self.stats.finished.entry((sink, result)).or_default() += 1;
        self.finish(d.id, code, now);
    }

    fn finish(&mut self, id: u64, code: u32, now: Instant) {
        let Some(item) = self.items.remove(&id) else {
            return;
        };
        if let Some(key) = item.key {
            if code == RESULT_DELIVERED {
                let until = now + self.limits.dedupe_for;
                self.seen.insert(key.clone(), Some(until));
                self.seen_order.push_back((until, key));
                while self.seen_order.len() > self.limits.max_remembered {
                    if let Some((_, k)) = self.seen_order.pop_front() {
                        self.seen.remove(&k);
                    }
                }
            } else {
                self.seen.remove(&key);
            }
        }
        let Some(a) = self.answers.get_mut(&item.request) else {
            return;
        };
        if let Some(r) = a.results.get_mut(item.slot) {
            r.result_code = code;
        }
        a.left = a.left.saturating_sub(1);
        if a.left == 0
            && let Some(a) = self.answers.remove(&item.request)
        {
            self.answer(a);
        }
    }

    fn tick(&mut self, now: Instant) {
        let mut due: Vec<u64> = self
            .items
            .iter()
            .filter(|(_, i)| i.due.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        for id in due {
            if let Some(i) = self.items.get_mut(&id) {
                i.due = None;
                self.ready.push_back(id);
            }
        }
        while let Some((until, _)) = self.seen_order.front() {
            if *until > now {
                break;
            }
            if let Some((_, k)) = self.seen_order.pop_front()
                && self
                    .seen
                    .get(&k)
                    .is_some_and(|u| u.is_some_and(|u| u <= now))
            {
                self.seen.remove(&k);
            }
        }
    }

    /// Hands queued deliveries to workers with room.
    fn dispatch(&mut self, out: &mut Out<PushJob>) {
        while !self.ready.is_empty() {
            let Some(worker) = (0..self.workers)
                .filter(|w| self.inflight[*w] < self.limits.per_worker)
                .min_by_key(|w| self.inflight[*w])
            else {
                return;
            };
            let Some(id) = self.ready.pop_front() else {
                return;
            };
            let Some(item) = self.items.get_mut(&id) else {
                continue;
            };
            item.attempts += 1;
            self.inflight[worker] += 1;
            out.job(
                worker,
                PushJob {
                    id,
                    delivery: item.delivery.clone(),
                    unix: self.unix,
                },
            );
        }
    }
}

impl runtime::App for PushApp {
    type Job = PushJob;
    type Done = PushDone;

    fn name(&self) -> &'static str {
        "push_server"
    }

    fn handle(&mut self, now: Now, input: Input<'_, PushDone>, out: &mut Out<PushJob>) {
        self.unix = u64::from(now.unix());
        match input {
            Input::Opened { conn, peer, .. } => {
                info!(%conn, %peer, "msg_server connected");
                self.peers.insert(conn);
            }
            Input::Pdu { conn, pdu } => match Message::decode(pdu) {
                Ok(Message::OtherPushToUserReq(req)) => {
                    self.push_request(conn, pdu, req);
                }
                Ok(Message::OtherHeartbeat(_)) => {}
                Ok(other) => {
                    // TeamTalk's push_server closes a session that sends
                    // anything else.
                    warn!(%conn, command = ?other.command(), "unexpected pdu; closing");
                    out.close(conn, None);
                }
                Err(e) => {
                    warn!(%conn, error = %e, "undecodable pdu; closing");
                    out.close(conn, None);
                }
            },
            Input::Closed { conn, reason } if self.peers.remove(&conn) => {
                info!(%conn, %reason, "msg_server disconnected");
            }
            Input::Done(d) => self.done(d, now.mono),
            Input::Tick => self.tick(now.mono),
            Input::Http { conn, .. } | Input::LoginRequest { conn, .. } => out.close(conn, None),
            _ => {}
        }
        for (conn, pdu) in std::mem::take(&mut self.sends) {
            out.send(conn, pdu);
        }
        self.dispatch(out);
    }

    fn collect(&self, out: &mut Scrape) {
        out.counter(
            "teamtalk_push_requests_total",
            "Push requests (0x070f) received from msg_servers.",
            &[],
            self.stats.requests,
        );
        for ((sink, result), n) in &self.stats.finished {
            out.counter(
                "teamtalk_push_deliveries_total",
                "Deliveries finished, by sink and result (delivered, invalid, failed, gave_up).",
                &[("sink", sink), ("result", result)],
                *n,
            );
        }
        for (sink, n) in &self.stats.retries {
            out.counter(
                "teamtalk_push_retries_total",
                "Attempts that failed and were scheduled again, by sink.",
                &[("sink", sink)],
                *n,
            );
        }
        for (reason, n) in &self.stats.refused {
            out.counter(
                "teamtalk_push_refused_total",
                "Tokens not sent, by reason (not_mobile, bad_token, no_sink, queue_full).",
                &[("reason", reason)],
                *n,
            );
        }
        out.counter(
            "teamtalk_push_duplicates_total",
            "Tokens not sent again: the same message went to that device already.",
            &[],
            self.stats.duplicates,
        );
        out.gauge(
            "teamtalk_push_queue",
            "Deliveries held: queued, in flight or waiting to retry.",
            &[],
            self.items.len() as f64,
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        if self.items.len() >= self.limits.max_queue {
            problems.push("push queue full".to_owned());
        }
    }
}
