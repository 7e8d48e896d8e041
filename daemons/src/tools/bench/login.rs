//! `bench login`: C threads, each repeatedly asking for a msg_server (with
//! `--http`/`--login`), connecting, logging in and logging out, as a
//! client starting up does. Blocking clients are the right tool here: the
//! concurrency is small and each step waits for the previous one.
//!
//! After the logout answer the bench waits for the server to close, so the
//! server, not the bench, holds the TIME_WAIT and the bench's ephemeral
//! ports are reused at once.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use teamtalk_proto::Command;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::login::ImLogoutReq;

use super::hist::Histogram;
use super::report::{Report, thousands};
use super::{BenchError, LoginArgs, NET_TIMEOUT, Target, cpu_pct, cpu_ticks};
use crate::client::{Client, ClientError};
use crate::clock;

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    started: AtomicU64,
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug, Default)]
struct ThreadResult {
    login: Histogram,
    cycle: Histogram,
    ok: u64,
    refused: u64,
    failed: u64,
    unclean_logouts: u64,
    first_error: Option<String>,
}

enum Outcome {
    Ok {
        login: Duration,
        cycle: Duration,
        clean: bool,
    },
    Refused(String),
    Failed(String),
}

fn one_login(target: &Target, i: usize, user: &str, password: &str) -> Outcome {
    let t0 = clock::now();
    let addr = match target.assign(i) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut c = match Client::connect(addr, NET_TIMEOUT) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("connect {addr}: {e}")),
    };
    match c.login(user, password, ClientType::Windows, NET_TIMEOUT) {
        Ok(_) => {}
        Err(ClientError::LoginRefused { code, text }) => {
            return Outcome::Refused(format!("{user}: code {code} ({text})"));
        }
        Err(e) => return Outcome::Failed(format!("{user}: {e}")),
    }
    let login = clock::now().duration_since(t0);
    let clean = logout(&mut c);
    Outcome::Ok {
        login,
        cycle: clock::now().duration_since(t0),
        clean,
    }
}

/// Logs out and waits for the server to close; `false` if it did not
/// answer or close in time (the cycle still counts as a login).
fn logout(c: &mut Client) -> bool {
    let Ok(seq) = c.send(Command::LoginReqLoginout, &ImLogoutReq {}) else {
        return false;
    };
    let key = Command::LoginResLoginout.key();
    if c.wait_for(NET_TIMEOUT, "logout answer", |p| {
        p.is(key) && p.seq() == seq
    })
    .is_err()
    {
        return false;
    }
    let deadline = clock::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(clock::now());
        if left.is_zero() {
            return false;
        }
        match c.recv(left) {
            Err(ClientError::Closed) => return true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

fn worker(t: u32, args: &LoginArgs, users: u32, target: &Target, shared: &Shared) -> ThreadResult {
    let c = args.concurrency;
    // This thread's users: t+1, t+1+C, … (never shared with another thread).
    let mine: Vec<String> = (t..users)
        .step_by(c as usize)
        .map(|u| args.common.user(u64::from(u) + 1))
        .collect();
    let mut r = ThreadResult::default();
    let mut k = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(count) = args.count
            && shared.started.fetch_add(1, Ordering::Relaxed) >= count
        {
            break;
        }
        let user = &mine[k % mine.len()];
        let i = k * c as usize + t as usize;
        k += 1;
        match one_login(target, i, user, &args.common.password) {
            Outcome::Ok {
                login,
                cycle,
                clean,
            } => {
                r.ok += 1;
                r.login.record(nanos(login));
                r.cycle.record(nanos(cycle));
                if !clean {
                    r.unclean_logouts += 1;
                }
                shared.ok.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Refused(e) => {
                r.refused += 1;
                r.first_error.get_or_insert(e);
                shared.refused.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(e) => {
                r.failed += 1;
                r.first_error.get_or_insert(e);
                shared.failed.fetch_add(1, Ordering::Relaxed);
                // Do not spin on a dead server.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    r
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
    let shared = Shared::default();
    let cpu0 = cpu_ticks(None);
    let srv0 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    let start = clock::now();
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.concurrency)
            .map(|t| {
                let (target, shared) = (&target, &shared);
                s.spawn(move || worker(t, args, users, target, shared))
            })
            .collect();
        watch(&handles, duration, start, &shared, common);
        shared.stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = clock::now().duration_since(start);
    let cpu1 = cpu_ticks(None);
    let srv1 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));

    let mut all = ThreadResult::default();
    for r in &results {
        all.login.merge(&r.login);
        all.cycle.merge(&r.cycle);
        all.ok += r.ok;
        all.refused += r.refused;
        all.failed += r.failed;
        all.unclean_logouts += r.unclean_logouts;
        if all.first_error.is_none() {
            all.first_error.clone_from(&r.first_error);
        }
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
    rep.num("duration_s", "duration (s)", Some(elapsed.as_secs_f64()));
    rep.int("count", "logins", all.ok);
    rep.int("refused", "refused", all.refused);
    rep.int("failed", "failed", all.failed);
    rep.int(
        "unclean_logouts",
        "logouts not closed by server",
        all.unclean_logouts,
    );
    let secs = elapsed.as_secs_f64();
    rep.num(
        "logins_per_s",
        "logins/s",
        (secs > 0.0).then(|| all.ok as f64 / secs),
    );
    rep.latency("login_latency", "login latency", &all.login);
    rep.latency("cycle_latency", "assign+login+logout", &all.cycle);
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
    if let Some(e) = all.first_error {
        rep.text("first_error", "first error", e);
    }
    rep.write(common.json, out)
}

/// Prints progress once a second until `duration` passes or every thread
/// finished (count mode).
fn watch<T>(
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
    duration: Option<Duration>,
    start: Instant,
    shared: &Shared,
    common: &super::Common,
) {
    let mut next = start + Duration::from_secs(1);
    let mut last = 0;
    loop {
        let now = clock::now();
        if duration.is_some_and(|d| now.duration_since(start) >= d)
            || handles
                .iter()
                .all(std::thread::ScopedJoinHandle::is_finished)
        {
            return;
        }
        if now >= next {
            next += Duration::from_secs(1);
            let ok = shared.ok.load(Ordering::Relaxed);
            common.progress(&format!(
                "[{:>5.1}s] logins {} refused {} failed {}  {}/s",
                now.duration_since(start).as_secs_f64(),
                thousands(ok),
                shared.refused.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
                thousands(ok - last)
            ));
            last = ok;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
