//! `bench login`: C logins in flight at once, each asking for a msg_server
//! (with `--http`/`--login`), connecting, logging in and logging out, as a
//! client starting up does.
//!
//! Every login is one [`teamtalk_conn::Client`] machine on a `teamtalk-net`
//! reactor; this thread reads their events, logs each machine out once it
//! is in, and has the next login of a slot started when the previous one
//! ends. A few starter threads perform what may block: the HTTP
//! assignment (with a login_server, before each login, as a client
//! starting up does) and the reactor's open.
//!
//! A logout waits for the server to close (the machine's clean logout), so
//! the server, not the bench, holds the TIME_WAIT and the bench's
//! ephemeral ports are reused at once.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
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

/// One login in progress.
#[derive(Debug)]
struct InFlight {
    slot: usize,
    user: String,
    started: Instant,
    logged_in: bool,
    /// Already counted as failed.
    failed: bool,
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

/// A login to start: slot, user, connection number, when it was decided.
type Job = (usize, String, usize, Instant);

/// What a starter reports: the machine's id and its login, or a failure
/// to start (the slot, the error).
enum Started {
    Open(ConnId, InFlight),
    Failed(usize, String),
}

/// Starts logins on a few threads, so that neither an HTTP assignment nor
/// the reactor's open (a round trip to its thread) holds up the event
/// loop: with `--http`, a starter asks login_server first, as a client
/// starting up does, then opens a machine for the msg_server it names.
struct Starters {
    jobs: Option<Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Starters {
    fn start(
        target: &Target,
        n: usize,
        password: &str,
        handle: &Handle<Client>,
        done: &Sender<Started>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..n)
            .map(|_| {
                let (rx, handle, done) = (rx.clone(), handle.clone(), done.clone());
                let (target, password) = (target.clone(), password.to_owned());
                std::thread::spawn(move || {
                    for (slot, user, i, t0) in rx {
                        let addr = match target.assign(i) {
                            Ok(a) => a,
                            Err(e) => {
                                let _ = done.send(Started::Failed(slot, e.to_string()));
                                continue;
                            }
                        };
                        let m = machine(addr, &user, &password, clock::now());
                        let _ = done.send(match handle.open(m) {
                            Ok(id) => Started::Open(
                                id,
                                InFlight {
                                    slot,
                                    user,
                                    started: t0,
                                    logged_in: false,
                                    failed: false,
                                },
                            ),
                            Err(e) => Started::Failed(slot, format!("open: {e}")),
                        });
                    }
                })
            })
            .collect();
        Self {
            jobs: Some(tx),
            threads,
        }
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

/// The machine for one login.
fn machine(addr: SocketAddr, user: &str, password: &str, now: Instant) -> Client {
    let creds = Credentials::new(user, password, ClientType::Windows);
    let mut cfg = ClientConfig::new(creds).with_msg_server(addr);
    cfg.reconnect = false;
    cfg.connect_timeout = NET_TIMEOUT;
    cfg.login_timeout = NET_TIMEOUT;
    cfg.logout_timeout = Duration::from_secs(2);
    Client::new(cfg, now)
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
    // Slot t's users: t+1, t+1+C, … (never two logins of one user at once).
    let mine: Vec<Vec<String>> = (0..c)
        .map(|t| {
            (t..users as usize)
                .step_by(c)
                .map(|u| common.user(u as u64 + 1))
                .collect()
        })
        .collect();
    let reactor = Reactor::<Client>::new(ReactorConfig {
        threads: 1,
        shutdown_grace: Duration::from_secs(2),
        ..ReactorConfig::default()
    })?;
    let handle = reactor.handle();
    let events = reactor.events();
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let starters = Starters::start(&target, c.min(16), &common.password, &handle, &started_tx);
    drop(started_tx);
    // Events of machines whose start has not been reported yet.
    let mut early: HashMap<ConnId, Vec<NetEvent<ClientEvent>>> = HashMap::new();

    let mut totals = Totals::default();
    let mut inflight: HashMap<ConnId, InFlight> = HashMap::new();
    let mut next_user = vec![0usize; c];
    // Slots waiting to start their next login, and when.
    let mut idle: Vec<(usize, Instant)> = (0..c).map(|t| (t, clock::now())).collect();
    let mut started: u64 = 0;
    // Logins submitted to the starters and not reported back yet.
    let mut starting = 0usize;
    let cpu0 = cpu_ticks(None);
    let srv0 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    let start = clock::now();
    let mut next_print = start + Duration::from_secs(1);
    let mut last_ok = 0;
    loop {
        let now = clock::now();
        let over = duration.is_some_and(|d| now.duration_since(start) >= d);
        let counted_out = args.count.is_some_and(|n| started >= n);
        if over || (counted_out && inflight.is_empty() && starting == 0) {
            break;
        }
        // Start logins on idle slots whose time has come.
        if !counted_out {
            let mut k = 0;
            while k < idle.len() {
                let (slot, at) = idle[k];
                if at > now || args.count.is_some_and(|n| started >= n) {
                    k += 1;
                    continue;
                }
                idle.swap_remove(k);
                let list = &mine[slot];
                let user = list[next_user[slot] % list.len()].clone();
                let i = next_user[slot] * c + slot;
                next_user[slot] += 1;
                started += 1;
                starters.submit((slot, user, i, clock::now()));
                starting += 1;
            }
        }
        if now >= next_print {
            next_print += Duration::from_secs(1);
            common.progress(&format!(
                "[{:>5.1}s] logins {} refused {} failed {}  {}/s",
                now.duration_since(start).as_secs_f64(),
                thousands(totals.ok),
                totals.refused,
                totals.failed,
                thousands(totals.ok - last_ok)
            ));
            last_ok = totals.ok;
        }
        let next = crossbeam_channel::select! {
            recv(events) -> ev => ev.ok().map(Ok),
            recv(started_rx) -> st => st.ok().map(Err),
            default(Duration::from_millis(5)) => None,
        };
        let now = clock::now();
        // One event, or the start of a login (then its early events).
        let batch: Vec<(ConnId, NetEvent<ClientEvent>)> = match next {
            None => continue,
            Some(Err(Started::Failed(slot, why))) => {
                starting -= 1;
                totals.failed += 1;
                totals.first_error.get_or_insert(why);
                idle.push((slot, now + Duration::from_millis(10)));
                continue;
            }
            Some(Err(Started::Open(id, f))) => {
                starting -= 1;
                inflight.insert(id, f);
                early
                    .remove(&id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| (id, e))
                    .collect()
            }
            Some(Ok((id, ev))) => {
                if !inflight.contains_key(&id) {
                    // Only events of machines being started can be unknown.
                    if !matches!(ev, NetEvent::Finished) {
                        early.entry(id).or_default().push(ev);
                    } else {
                        early.remove(&id);
                    }
                    continue;
                }
                vec![(id, ev)]
            }
        };
        for (id, ev) in batch {
            let Some(f) = inflight.get_mut(&id) else {
                continue;
            };
            let NetEvent::Machine(ev) = ev else {
                continue;
            };
            match ev {
                ClientEvent::LoggedIn(_) => {
                    f.logged_in = true;
                    totals.login.record(nanos(now.duration_since(f.started)));
                    let _ = handle.exec(id, |m| m.logout(clock::now()));
                }
                ClientEvent::LoginRefused { code, text, .. } => {
                    totals.refused += 1;
                    let user = &f.user;
                    totals
                        .first_error
                        .get_or_insert_with(|| format!("{user}: code {code} ({text})"));
                }
                ClientEvent::Disconnected(reason) if !f.logged_in => {
                    totals.failed += 1;
                    f.failed = true;
                    let user = &f.user;
                    totals
                        .first_error
                        .get_or_insert_with(|| format!("{user}: {reason}"));
                }
                ClientEvent::Stopped(why) => {
                    let Some(f) = inflight.remove(&id) else {
                        continue;
                    };
                    let mut wait = Duration::ZERO;
                    match why {
                        StopReason::LoggedOut { clean } if f.logged_in => {
                            totals.ok += 1;
                            totals.cycle.record(nanos(now.duration_since(f.started)));
                            if !clean {
                                totals.unclean_logouts += 1;
                            }
                        }
                        StopReason::LoginRefused { .. } => {}
                        StopReason::Disconnected(_) if !f.logged_in => {
                            // A failed assignment stops the machine without a
                            // Disconnected event.
                            if !f.failed {
                                totals.failed += 1;
                            }
                            // Do not spin on a dead server.
                            wait = Duration::from_millis(10);
                        }
                        _ => {
                            if f.logged_in {
                                // Lost after the login: the logout did not happen.
                                totals.ok += 1;
                                totals.unclean_logouts += 1;
                            }
                        }
                    }
                    idle.push((f.slot, now + wait));
                }
                _ => {}
            }
        }
    }
    let elapsed = clock::now().duration_since(start);
    let cpu1 = cpu_ticks(None);
    let srv1 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    starters.stop();
    reactor.shutdown();

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
