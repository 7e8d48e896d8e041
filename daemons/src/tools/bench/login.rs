//! `bench login`: C logins in flight at once, each asking for a msg_server
//! (with `--http`/`--login`), connecting, logging in and logging out, as a
//! client starting up does.
//!
//! Each of the C slots is one [`teamtalk_conn::Client`] machine on a
//! `teamtalk-net` reactor that stays after a logout
//! (`stop_after_logout` off), the way a client signs out and in again as
//! another user: this thread reads the machines' events, logs a machine
//! out once it is in, and logs it in as the slot's next user when the
//! logout is over. Every login is a new connection; with a login_server
//! the machine first asks for its assignment
//! ([`ClientEvent::AssignmentNeeded`]) and a few threads perform the HTTP
//! queries, as a client starting up does.
//!
//! A logout waits for the server to close (the machine's clean logout), so
//! the server, not the bench, holds the TIME_WAIT and the bench's
//! ephemeral ports are reused at once.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use teamtalk_conn::client::Credentials;
use teamtalk_conn::{Client, ClientConfig, ClientEvent, StopReason};
use teamtalk_net::{ConnId, Handle, NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::pb::im::base_define::ClientType;

use super::hist::Histogram;
use super::report::{Report, thousands};
use super::{BenchError, LoginArgs, NET_TIMEOUT, Target, cpu_pct, cpu_ticks};
use crate::clock;
use crate::tools::client::Assigner;

/// One slot: a machine logging in and out as the slot's users in turn.
#[derive(Debug)]
struct Slot {
    /// The machine, while it runs.
    id: Option<ConnId>,
    /// Users of this slot (never logged in by another slot).
    users: Vec<String>,
    /// Logins started by this slot.
    next: usize,
    /// The login in progress: its user, when it started, how far it got.
    user: String,
    started: Instant,
    logged_in: bool,
    /// This login was already counted as failed.
    failed: bool,
    /// No login in progress; start the next one at this instant.
    idle_until: Option<Instant>,
    /// No more logins for this slot (`--count` reached).
    done: bool,
}

impl Slot {
    /// The next user, marking a new login as started at `now`.
    fn begin(&mut self, now: Instant) -> String {
        self.user = self.users[self.next % self.users.len()].clone();
        self.next += 1;
        self.started = now;
        self.logged_in = false;
        self.failed = false;
        self.idle_until = None;
        self.user.clone()
    }
}

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

/// Work for the assigners.
enum Job {
    /// The machine asks for an assignment.
    Ask(ConnId),
    /// Log the machine in again as this user, after asking login_server
    /// (the answer is handed over with the login, so the machine needs no
    /// round trip through the event loop to ask).
    Relogin(ConnId, Credentials),
}

/// Performs the HTTP assignments on a few threads.
struct Assigners {
    jobs: Option<Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Assigners {
    fn start(
        target: &Target,
        n: usize,
        handle: &Handle<Client>,
        first_error: &Arc<Mutex<Option<String>>>,
    ) -> Self {
        let Target::Http(login) = target else {
            return Self {
                jobs: None,
                threads: Vec::new(),
            };
        };
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..n)
            .map(|_| {
                let (rx, handle) = (rx.clone(), handle.clone());
                let assigner = Assigner::new(&(*login).into(), NET_TIMEOUT);
                let first_error = Arc::clone(first_error);
                std::thread::spawn(move || {
                    for job in rx {
                        let assigned = assigner.query().and_then(|a| a.addr());
                        if let Err(e) = &assigned
                            && let Ok(mut f) = first_error.lock()
                        {
                            f.get_or_insert_with(|| e.to_string());
                        }
                        let _ = match (job, assigned) {
                            (Job::Ask(id), Ok(addr)) => {
                                handle.exec(id, move |m| m.assigned(clock::now(), addr))
                            }
                            (Job::Ask(id), Err(e)) => {
                                let why = e.to_string();
                                handle.exec(id, move |m| m.assignment_failed(clock::now(), &why))
                            }
                            (Job::Relogin(id, creds), Ok(addr)) => handle.exec(id, move |m| {
                                let now = clock::now();
                                m.assigned(now, addr);
                                m.login(now, creds);
                            }),
                            // The machine asks again itself, and fails
                            // properly if login_server stays away.
                            (Job::Relogin(id, creds), Err(_)) => {
                                handle.exec(id, move |m| m.login(clock::now(), creds))
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

    /// Whether assignments are asked at all (`--http`/`--login`).
    fn active(&self) -> bool {
        self.jobs.is_some()
    }

    fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
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

fn creds(user: &str, password: &str) -> Credentials {
    let mut c = Credentials::new(user, password, ClientType::Windows);
    c.client_version = "teamtalk-rs bench".to_owned();
    c
}

/// The machine of a slot, logging in as `user` first.
fn machine(addr: Option<SocketAddr>, user: &str, password: &str, now: Instant) -> Client {
    let mut cfg = ClientConfig::new(creds(user, password));
    cfg.msg_server = addr;
    cfg.reconnect = false;
    cfg.stop_after_logout = false;
    cfg.connect_timeout = NET_TIMEOUT;
    cfg.login_timeout = NET_TIMEOUT;
    cfg.logout_timeout = Duration::from_secs(2);
    Client::new(cfg, now)
}

/// The event loop's state.
struct Run<'a> {
    args: &'a LoginArgs,
    target: Target,
    handle: Handle<Client>,
    slots: Vec<Slot>,
    by_id: HashMap<ConnId, usize>,
    totals: Totals,
    /// Logins started.
    started: u64,
    /// Machines opened (for spreading them over several msg_servers).
    opened: usize,
}

impl Run<'_> {
    fn may_start(&self) -> bool {
        self.args.count.is_none_or(|n| self.started < n)
    }

    /// Opens a new machine for slot `k`, logging in as its next user.
    fn open(&mut self, k: usize, now: Instant) {
        let user = self.slots[k].begin(now);
        self.started += 1;
        let addr = match &self.target {
            Target::Direct(v) => Some(v[self.opened % v.len()]),
            Target::Http(_) => None,
        };
        self.opened += 1;
        let m = machine(addr, &user, &self.args.common.password, now);
        match self.handle.open(m) {
            Ok(id) => {
                self.by_id.insert(id, k);
                self.slots[k].id = Some(id);
            }
            Err(e) => {
                self.totals.failed += 1;
                self.totals
                    .first_error
                    .get_or_insert_with(|| format!("open: {e}"));
                self.slots[k].idle_until = Some(now + Duration::from_millis(10));
            }
        }
    }

    /// Starts the next login of slot `k`: on its machine when it has one,
    /// on a new machine otherwise.
    fn next_login(&mut self, k: usize, now: Instant, assigners: &Assigners) {
        if !self.may_start() {
            self.slots[k].idle_until = None;
            self.slots[k].done = true;
            return;
        }
        let Some(id) = self.slots[k].id else {
            return self.open(k, now);
        };
        let user = self.slots[k].begin(now);
        self.started += 1;
        let c = creds(&user, &self.args.common.password);
        if assigners.active() {
            return assigners.submit(Job::Relogin(id, c));
        }
        if self
            .handle
            .exec(id, move |m| m.login(clock::now(), c))
            .is_err()
        {
            self.slots[k].id = None;
            self.slots[k].idle_until = Some(now);
        }
    }

    fn on_event(&mut self, id: ConnId, ev: NetEvent<ClientEvent>, assigners: &Assigners) {
        let Some(&k) = self.by_id.get(&id) else {
            return;
        };
        let ev = match ev {
            NetEvent::Machine(ev) => ev,
            NetEvent::Finished => {
                self.by_id.remove(&id);
                return;
            }
            _ => return,
        };
        let now = clock::now();
        let slot = &mut self.slots[k];
        match ev {
            ClientEvent::AssignmentNeeded => assigners.submit(Job::Ask(id)),
            ClientEvent::LoggedIn(_) => {
                slot.logged_in = true;
                self.totals
                    .login
                    .record(nanos(now.duration_since(slot.started)));
                let _ = self.handle.exec(id, |m| m.logout(clock::now()));
            }
            ClientEvent::LoggedOut { clean } => {
                self.totals.ok += 1;
                self.totals
                    .cycle
                    .record(nanos(now.duration_since(slot.started)));
                if !clean {
                    self.totals.unclean_logouts += 1;
                }
                self.next_login(k, now, assigners);
            }
            ClientEvent::LoginRefused { code, text, .. } => {
                self.totals.refused += 1;
                let user = &slot.user;
                self.totals
                    .first_error
                    .get_or_insert_with(|| format!("{user}: code {code} ({text})"));
                slot.failed = true;
            }
            ClientEvent::Disconnected(reason) if !slot.logged_in => {
                self.totals.failed += 1;
                slot.failed = true;
                let user = &slot.user;
                self.totals
                    .first_error
                    .get_or_insert_with(|| format!("{user}: {reason}"));
            }
            ClientEvent::Stopped(why) => {
                slot.id = None;
                let mut wait = Duration::ZERO;
                if slot.logged_in {
                    // Lost after the login: the logout did not happen.
                    self.totals.ok += 1;
                    self.totals.unclean_logouts += 1;
                } else if !matches!(why, StopReason::LoginRefused { .. }) {
                    // A failed assignment stops without a Disconnected.
                    if !slot.failed {
                        self.totals.failed += 1;
                    }
                    // Do not spin on a dead server.
                    wait = Duration::from_millis(10);
                }
                slot.idle_until = Some(now + wait);
            }
            _ => {}
        }
    }
}

/// `bench login`.
pub(super) fn run_login(args: &LoginArgs, out: &mut dyn Write) -> Result<(), BenchError> {
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
    let reactor = Reactor::<Client>::new(ReactorConfig {
        threads: 2,
        shutdown_grace: Duration::from_secs(2),
        ..ReactorConfig::default()
    })?;
    let events = reactor.events();
    let assign_error = Arc::new(Mutex::new(None));
    let assigners = Assigners::start(&target, c.min(16), &reactor.handle(), &assign_error);
    let start = clock::now();
    // Slot t's users: t+1, t+1+C, … (never two logins of one user at once).
    let slots = (0..c)
        .map(|t| Slot {
            id: None,
            users: (t..users as usize)
                .step_by(c)
                .map(|u| common.user(u as u64 + 1))
                .collect(),
            next: 0,
            user: String::new(),
            started: start,
            logged_in: false,
            failed: false,
            idle_until: Some(start),
            done: false,
        })
        .collect();
    let mut run = Run {
        args,
        target,
        handle: reactor.handle(),
        slots,
        by_id: HashMap::new(),
        totals: Totals::default(),
        started: 0,
        opened: 0,
    };
    let cpu0 = cpu_ticks(None);
    let srv0 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    let mut next_print = start + Duration::from_secs(1);
    let mut last_ok = 0;
    loop {
        let now = clock::now();
        if duration.is_some_and(|d| now.duration_since(start) >= d) {
            break;
        }
        if run.slots.iter().all(|s| s.done) {
            break;
        }
        for k in 0..run.slots.len() {
            if run.slots[k].idle_until.is_some_and(|t| t <= now) {
                run.next_login(k, now, &assigners);
            }
        }
        if now >= next_print {
            next_print += Duration::from_secs(1);
            let t = &run.totals;
            common.progress(&format!(
                "[{:>5.1}s] logins {} refused {} failed {}  {}/s",
                now.duration_since(start).as_secs_f64(),
                thousands(t.ok),
                t.refused,
                t.failed,
                thousands(t.ok - last_ok)
            ));
            last_ok = t.ok;
        }
        let Ok((id, ev)) = events.recv_timeout(Duration::from_millis(5)) else {
            continue;
        };
        run.on_event(id, ev, &assigners);
        while let Ok((id, ev)) = events.try_recv() {
            run.on_event(id, ev, &assigners);
        }
    }
    let elapsed = clock::now().duration_since(start);
    let cpu1 = cpu_ticks(None);
    let srv1 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    assigners.stop();
    reactor.shutdown();
    let mut totals = run.totals;
    if totals.first_error.is_none()
        && let Ok(mut e) = assign_error.lock()
    {
        totals.first_error = e.take();
    }
    let target = run.target;

    let mut rep = Report::default();
    rep.text("bench", "bench", "login");
    rep.text("target", "target", target.describe());
    rep.text(
        "users",
        "users",
        format!("{}1…{}{users}", common.prefix, common.prefix),
    );
    rep.int("concurrency", "concurrency", args.concurrency.into());
    rep.num("duration_s", "duration (s)", Some(elapsed.as_secs_f64()));
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
        "logins/s",
        (secs > 0.0).then(|| totals.ok as f64 / secs),
    );
    rep.latency("login_latency", "login latency", &totals.login);
    rep.latency("cycle_latency", "assign+login+logout", &totals.cycle);
    rep.num(
        "bench_cpu_pct",
        "bench CPU (% of one core)",
        cpu_pct(cpu0, cpu1, elapsed),
    );
    if common.server_pid.is_some() {
        rep.num(
            "server_cpu_pct",
            "server CPU (% of one core)",
            cpu_pct(srv0, srv1, elapsed),
        );
    }
    if let Some(e) = totals.first_error {
        rep.text("first_error", "first error", e);
    }
    rep.write(common.json, out)
}
