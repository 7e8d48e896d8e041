//! `bench login`: C logins in flight at once, each asking for a msg_server
//! (with `--http`/`--login`), connecting, logging in and logging out, as a
//! client starting up does.
//!
//! Each of the C slots is one [`teamtalk_conn::Client`] machine on a
//! `teamtalk-net` reactor that stays after a logout (`stop_after_logout`
//! off), the way a client signs out and in again as another user. The
//! slot's script (log out once logged in, log in as the slot's next user
//! once logged out) is a thin [`Machine`] around the client that runs on
//! the reactor thread: the client machine does every protocol step, and no
//! thread hand-off sits between a server answer and the next request, so
//! the figures are the servers'. Each slot records its measurements
//! itself (a [`Totals`] of its own behind an uncontended lock), so a login
//! costs the bench no wake-up of this thread: the bench shares the cores
//! with the servers it measures, and two thread hand-offs per login were a
//! fifth of its CPU. This thread only answers assignment questions through
//! a few HTTP threads (with a login_server, before every login, as a client
//! starting up does), restarts a slot whose machine stopped, prints the
//! progress line and merges the slots' totals at the end.
//!
//! A logout waits for the server to close (the machine's clean logout), so
//! the server, not the bench, holds the TIME_WAIT and the bench's
//! ephemeral ports are reused at once.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use teamtalk_conn::client::Credentials;
use teamtalk_conn::{Client, ClientConfig, ClientEvent, Input, Machine, Output, StopReason};
use teamtalk_net::{ConnId, Handle, NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::pb::im::base_define::ClientType;

use super::hist::Histogram;
use super::report::{Report, thousands};
use super::{
    BenchError, LoginArgs, NET_TIMEOUT, Stop, Target, cpu_pct, cpu_ticks, outcome, verdict,
};
use crate::clock;
use crate::tools::client::Assigner;

/// What every slot shares with the event loop.
#[derive(Debug)]
struct Shared {
    /// Logins started so far.
    started: AtomicU64,
    /// Stop after this many logins.
    count: Option<u64>,
    /// The run is over: start no more logins.
    stop: AtomicBool,
    password: String,
}

impl Shared {
    /// Claims one more login, unless the run is over.
    fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        self.count.is_none_or(|c| n < c)
    }
}

/// What a slot asks of the event loop (its measurements it records
/// itself, in its [`Totals`]).
#[derive(Debug)]
enum SlotEvent {
    /// The machine asks which msg_server to use.
    AssignmentNeeded,
    /// The slot's machine stops: a failure, a loss after the login, or no
    /// more logins.
    Stopped {
        /// The slot has logins left (start a new machine).
        more: bool,
        /// The index of the slot's next user.
        next: usize,
    },
}

/// One slot's measurements, shared by the machines the slot runs in turn
/// and read by the event loop for the progress line and the summary.
type SlotTotals = Arc<Mutex<Totals>>;

fn creds(user: &str, password: &str) -> Credentials {
    let mut c = Credentials::new(user, password, ClientType::Windows);
    c.client_version = "teamtalk-rs bench".to_owned();
    c
}

/// One slot: a client machine plus the script logging it in and out as
/// the slot's users in turn.
struct SlotMachine {
    client: Client,
    shared: Arc<Shared>,
    totals: SlotTotals,
    users: Arc<[String]>,
    /// Index of the next user.
    next: usize,
    user: String,
    started: Instant,
    logged_in: bool,
    failed: bool,
    /// The run ended for this slot: no more logins.
    done: bool,
}

impl SlotMachine {
    /// A slot machine starting its first login (already claimed) as user
    /// `next`.
    fn new(
        addr: Option<SocketAddr>,
        shared: Arc<Shared>,
        totals: SlotTotals,
        users: Arc<[String]>,
        next: usize,
    ) -> Self {
        let user = users[next % users.len()].clone();
        let mut cfg = ClientConfig::new(creds(&user, &shared.password));
        cfg.msg_server = addr;
        cfg.reconnect = false;
        cfg.stop_after_logout = false;
        cfg.connect_timeout = NET_TIMEOUT;
        cfg.login_timeout = NET_TIMEOUT;
        cfg.logout_timeout = Duration::from_secs(2);
        let now = clock::now();
        Self {
            client: Client::new(cfg, now),
            shared,
            totals,
            users,
            next: next + 1,
            user,
            started: now,
            logged_in: false,
            failed: false,
            done: false,
        }
    }

    /// Records into the slot's totals.
    fn record(&self, f: impl FnOnce(&mut Totals)) {
        // A poisoned lock only means another machine of this slot panicked
        // while recording; its counts are still the best there are.
        f(&mut self.totals.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Runs the script for one client event, recording what it measures;
    /// returns what the event loop must act on.
    fn script(&mut self, e: ClientEvent) -> Option<SlotEvent> {
        let now = clock::now();
        match e {
            ClientEvent::AssignmentNeeded => Some(SlotEvent::AssignmentNeeded),
            ClientEvent::LoggedIn(_) => {
                self.logged_in = true;
                self.client.logout(now);
                let took = nanos(now.duration_since(self.started));
                self.record(|t| t.login.record(took));
                None
            }
            ClientEvent::LoggedOut { clean } => {
                let cycle = nanos(now.duration_since(self.started));
                self.record(|t| {
                    t.ok += 1;
                    t.cycle.record(cycle);
                    if !clean {
                        t.unclean_logouts += 1;
                    }
                });
                if self.shared.claim() {
                    self.user = self.users[self.next % self.users.len()].clone();
                    self.next += 1;
                    self.started = now;
                    self.logged_in = false;
                    self.failed = false;
                    self.client
                        .login(now, creds(&self.user, &self.shared.password));
                } else {
                    self.done = true;
                    self.client.close();
                }
                None
            }
            ClientEvent::LoginRefused { code, text, .. } => {
                self.failed = true;
                let why = format!("{}: code {code} ({text})", self.user);
                self.record(|t| {
                    t.refused += 1;
                    t.first_error.get_or_insert(why);
                });
                None
            }
            ClientEvent::Disconnected(reason) if !self.logged_in => {
                self.failed = true;
                let why = format!("{}: {reason}", self.user);
                self.record(|t| {
                    t.failed += 1;
                    t.first_error.get_or_insert(why);
                });
                None
            }
            ClientEvent::Stopped(why) => {
                // Lost after the login: the cycle so far counts (its
                // logout did not happen).
                let lost = (self.logged_in && !matches!(why, StopReason::Closed))
                    .then(|| nanos(now.duration_since(self.started)));
                // A failed assignment stops without a Disconnected.
                let failure = (!self.logged_in && !self.failed && !self.done)
                    .then(|| format!("{}: {why:?}", self.user));
                self.record(|t| {
                    if let Some(d) = lost {
                        t.ok += 1;
                        t.unclean_logouts += 1;
                        t.cycle.record(d);
                    }
                    if let Some(why) = failure {
                        t.failed += 1;
                        t.first_error.get_or_insert(why);
                    }
                });
                Some(SlotEvent::Stopped {
                    more: !self.done,
                    next: self.next,
                })
            }
            _ => None,
        }
    }
}

impl Machine for SlotMachine {
    type Event = SlotEvent;

    fn handle_input(&mut self, input: Input<'_>) {
        self.client.handle_input(input);
    }

    fn poll_output(&mut self) -> Output<SlotEvent> {
        loop {
            return match self.client.poll_output() {
                Output::Event(e) => match self.script(e) {
                    Some(ev) => Output::Event(ev),
                    None => continue,
                },
                Output::Transmit(b) => Output::Transmit(b),
                Output::Connect(a) => Output::Connect(a),
                Output::Close => Output::Close,
                Output::Timeout(t) => Output::Timeout(t),
                Output::Finished => Output::Finished,
            };
        }
    }

    fn set_backlog(&mut self, now: Instant, bytes: usize) {
        self.client.set_backlog(now, bytes);
    }
}

/// What the logins measured: one per slot, merged for the summary.
#[derive(Debug, Default)]
struct Totals {
    login: Histogram,
    cycle: Histogram,
    ok: u64,
    refused: u64,
    failed: u64,
    unclean_logouts: u64,
    first_error: Option<String>,
}

impl Totals {
    /// Adds `other`'s counts and histograms; its first error counts only
    /// when there was none yet.
    fn merge(&mut self, other: &Self) {
        self.login.merge(&other.login);
        self.cycle.merge(&other.cycle);
        self.ok += other.ok;
        self.refused += other.refused;
        self.failed += other.failed;
        self.unclean_logouts += other.unclean_logouts;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// Answers the machines' assignment questions over HTTP on a few threads.
struct Assigners {
    jobs: Option<Sender<ConnId>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Assigners {
    fn start(
        target: &Target,
        n: usize,
        handle: &Handle<SlotMachine>,
        first_error: &Arc<Mutex<Option<String>>>,
    ) -> Self {
        let Target::Http(login) = target else {
            return Self {
                jobs: None,
                threads: Vec::new(),
            };
        };
        let (tx, rx) = crossbeam_channel::unbounded::<ConnId>();
        let threads = (0..n)
            .map(|_| {
                let (rx, handle) = (rx.clone(), handle.clone());
                let assigner = Assigner::new(&(*login).into(), NET_TIMEOUT);
                let first_error = Arc::clone(first_error);
                std::thread::spawn(move || {
                    for id in rx {
                        let _ = match assigner.query().and_then(|a| a.addr()) {
                            Ok(addr) => {
                                handle.exec(id, move |m| m.client.assigned(clock::now(), addr))
                            }
                            Err(e) => {
                                let why = e.to_string();
                                if let Ok(mut f) = first_error.lock() {
                                    f.get_or_insert_with(|| why.clone());
                                }
                                handle.exec(id, move |m| {
                                    m.client.assignment_failed(clock::now(), &why);
                                })
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            jobs: Some(tx),
            threads,
        }
    }

    fn ask(&self, id: ConnId) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(id);
        }
    }

    fn stop(mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `bench login`.
pub(super) fn run_login(
    args: &LoginArgs,
    out: &mut dyn Write,
    stop: Stop<'_>,
) -> Result<(), BenchError> {
    let common = &args.common;
    let users = args.users.unwrap_or(args.concurrency);
    if args.concurrency == 0 || users < args.concurrency {
        return Err(BenchError::Args(
            "--concurrency must be at least 1 and --users at least --concurrency".into(),
        ));
    }
    if args.count == Some(0) {
        return Err(BenchError::Args("--count must be at least 1".into()));
    }
    let duration = match (args.duration, args.count) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let target = common.target()?;
    let c = args.concurrency as usize;
    let reactor = Reactor::<SlotMachine>::new(ReactorConfig {
        threads: usize::from(args.threads),
        shutdown_grace: Duration::from_secs(2),
        ..ReactorConfig::default()
    })?;
    let handle = reactor.handle();
    let events = reactor.events();
    let assign_error = Arc::new(Mutex::new(None));
    let assigners = Assigners::start(&target, c.min(16), &handle, &assign_error);
    let shared = Arc::new(Shared {
        started: AtomicU64::new(0),
        count: args.count,
        stop: AtomicBool::new(false),
        password: common.password.clone(),
    });
    // Slot t's users: t+1, t+1+C, … (never two logins of one user at once).
    let slot_users: Vec<Arc<[String]>> = (0..c)
        .map(|t| {
            (t..users as usize)
                .step_by(c)
                .map(|u| common.user(u as u64 + 1))
                .collect()
        })
        .collect();
    // Per slot: its measurements, the index of its next user, and when to
    // start a new machine (none running).
    let slot_totals: Vec<SlotTotals> = (0..c).map(|_| SlotTotals::default()).collect();
    let mut next_user = vec![0usize; c];
    let mut restart: Vec<Option<Instant>> = vec![Some(clock::now()); c];
    let mut running: HashMap<ConnId, usize> = HashMap::new();
    let mut opened = 0usize;
    let mut totals = Totals::default();
    let cpu0 = cpu_ticks(None);
    let srv0 = common.server_ticks();
    let start = clock::now();
    let mut next_print = start + Duration::from_secs(1);
    let mut last_ok = 0;
    loop {
        let now = clock::now();
        if duration.is_some_and(|d| now.duration_since(start) >= d) || stop.is_set() {
            break;
        }
        if running.is_empty() && restart.iter().all(Option::is_none) {
            break;
        }
        for k in 0..c {
            if restart[k].is_some_and(|t| t <= now) {
                restart[k] = None;
                if !shared.claim() {
                    continue;
                }
                let addr = match &target {
                    Target::Direct(v) => Some(v[opened % v.len()]),
                    Target::Http(_) => None,
                };
                opened += 1;
                let m = SlotMachine::new(
                    addr,
                    Arc::clone(&shared),
                    Arc::clone(&slot_totals[k]),
                    Arc::clone(&slot_users[k]),
                    next_user[k],
                );
                match handle.open(m) {
                    Ok(id) => {
                        running.insert(id, k);
                    }
                    Err(e) => {
                        totals.failed += 1;
                        totals
                            .first_error
                            .get_or_insert_with(|| format!("open: {e}"));
                        restart[k] = Some(now + Duration::from_millis(10));
                    }
                }
                next_user[k] += 1;
            }
        }
        if now >= next_print {
            next_print += Duration::from_secs(1);
            let mut so_far = Totals::default();
            so_far.merge(&totals);
            for t in &slot_totals {
                so_far.merge(&t.lock().unwrap_or_else(PoisonError::into_inner));
            }
            common.progress(&format!(
                "[{:>5.1}s] logins {} refused {} failed {}  {}/s",
                now.duration_since(start).as_secs_f64(),
                thousands(so_far.ok),
                so_far.refused,
                so_far.failed,
                thousands(so_far.ok - last_ok)
            ));
            last_ok = so_far.ok;
        }
        let mut next = events.recv_timeout(Duration::from_millis(5)).ok();
        // Bounded, so the clock and the progress line are looked at.
        let mut budget = 4096;
        while let Some((id, ev)) = next {
            budget -= 1;
            let Some(&k) = running.get(&id) else {
                next = if budget > 0 {
                    events.try_recv().ok()
                } else {
                    None
                };
                continue;
            };
            match ev {
                NetEvent::Machine(SlotEvent::AssignmentNeeded) => assigners.ask(id),
                NetEvent::Machine(SlotEvent::Stopped { more, next }) => {
                    next_user[k] = next;
                    // Do not spin on a dead server.
                    restart[k] = more.then(|| clock::now() + Duration::from_millis(10));
                }
                NetEvent::Finished => {
                    running.remove(&id);
                }
                _ => {}
            }
            next = if budget > 0 {
                events.try_recv().ok()
            } else {
                None
            };
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = clock::now().duration_since(start);
    let cpu1 = cpu_ticks(None);
    let srv1 = common.server_ticks();
    assigners.stop();
    reactor.shutdown();
    for t in &slot_totals {
        totals.merge(&t.lock().unwrap_or_else(PoisonError::into_inner));
    }
    if totals.first_error.is_none()
        && let Ok(mut e) = assign_error.lock()
    {
        totals.first_error = e.take();
    }

    let mut rep = Report::default();
    rep.text("bench", "bench", "login");
    rep.text("target", "target", target.describe());
    rep.text(
        "users",
        "users",
        format!("{}1…{}{users}", common.prefix, common.prefix),
    );
    rep.int("concurrency", "concurrency", args.concurrency.into());
    rep.secs("duration_s", "duration", Some(elapsed.as_secs_f64()));
    rep.int("count", "logins", totals.ok);
    rep.int("refused", "refused", totals.refused);
    rep.int("failed", "failed", totals.failed);
    rep.int(
        "unclean_logouts",
        "logouts not closed by server",
        totals.unclean_logouts,
    );
    let secs = elapsed.as_secs_f64();
    rep.num(
        "logins_per_s",
        "logins",
        (secs > 0.0).then(|| totals.ok as f64 / secs),
        "logins/s",
    );
    rep.latency("login_latency", "login latency", &totals.login);
    rep.latency("cycle_latency", "assign+login+logout", &totals.cycle);
    rep.num(
        "bench_cpu_pct",
        "bench CPU",
        cpu_pct(cpu0, cpu1, elapsed),
        "% of one core",
    );
    if !common.server_pid.is_empty() {
        rep.num(
            "server_cpu_pct",
            "server CPU",
            cpu_pct(srv0, srv1, elapsed),
            "% of one core",
        );
    }
    let interrupted = stop.is_set();
    // An unclean logout (the server did not close within 2 s) is
    // reported, not a failure: servers differ in who closes.
    let problems = [("refused", totals.refused), ("failed", totals.failed)];
    outcome(&mut rep, interrupted, &problems);
    if let Some(e) = totals.first_error {
        rep.text("first_error", "first error", e);
    }
    rep.write(common.json, out)?;
    verdict(interrupted, &problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_merge_adds_counts_and_keeps_the_first_error() {
        let mut a = Totals {
            ok: 3,
            ..Totals::default()
        };
        a.login.record(1_000);
        let mut b = Totals {
            ok: 2,
            refused: 1,
            failed: 4,
            unclean_logouts: 1,
            first_error: Some("b".into()),
            ..Totals::default()
        };
        b.login.record(5_000);
        b.cycle.record(9_000);
        a.merge(&b);
        assert_eq!((a.ok, a.refused, a.failed, a.unclean_logouts), (5, 1, 4, 1));
        assert_eq!((a.login.count(), a.login.max()), (2, 5_000));
        assert_eq!(a.cycle.count(), 1);
        assert_eq!(a.first_error.as_deref(), Some("b"));
        let c = Totals {
            first_error: Some("c".into()),
            ..Totals::default()
        };
        a.merge(&c);
        assert_eq!(a.first_error.as_deref(), Some("b"), "the first error stays");
    }
}
