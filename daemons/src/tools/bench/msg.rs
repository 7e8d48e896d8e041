//! `bench msg` and `bench conns`: set up the engine's workers, steer them
//! through their phases, print progress, and report.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{
    self, Control, DRAIN, EngineConfig, HEADER_LEN, LiveTotals, RUN, STOP, WorkerPlan, WorkerResult,
};
use super::report::{Report, thousands};
use super::{BenchError, Common, ConnsArgs, MsgArgs, cpu_pct, cpu_ticks, rss_kib};
use crate::clock;
use crate::password::md5_hex;

/// Running workers and their shared control.
struct Workers {
    ctl: Arc<Control>,
    handles: Vec<std::thread::JoinHandle<WorkerResult>>,
}

impl Workers {
    /// One worker per plan; each paces its sends to its own rate, if any.
    fn start(
        plans: Vec<(WorkerPlan, Option<f64>)>,
        cfg: &EngineConfig,
    ) -> Result<Self, BenchError> {
        let ctl = Arc::new(Control::new(plans.len()));
        let mut handles = Vec::with_capacity(plans.len());
        for (id, (plan, rate)) in plans.into_iter().enumerate() {
            let mut cfg = cfg.clone();
            cfg.rate = rate;
            match engine::spawn(id, plan, Arc::new(cfg), Arc::clone(&ctl)) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    ctl.set_phase(STOP);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(Self { ctl, handles })
    }

    /// Waits until every connection logged in, was refused or failed, or
    /// `timeout`; prints progress. Returns how long it took.
    fn wait_logins(&self, expected: u64, timeout: Duration, common: &Common) -> Duration {
        let start = clock::now();
        let mut next_print = start + Duration::from_secs(1);
        loop {
            let t = self.ctl.totals();
            let done = t.logged_in + t.refused + t.failed;
            let now = clock::now();
            if done >= expected || now.duration_since(start) >= timeout {
                return now.duration_since(start);
            }
            if now >= next_print {
                next_print += Duration::from_secs(1);
                common.progress(&format!(
                    "[setup {:>5.1}s] logged in {} of {expected}, refused {}, failed {}",
                    now.duration_since(start).as_secs_f64(),
                    thousands(t.logged_in),
                    t.refused,
                    t.failed
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs the RUN phase for `duration`, calling `line` once a second.
    /// Returns the measured run time and the counters at its end.
    fn run_for(
        &self,
        duration: Duration,
        common: &Common,
        line: impl Fn(f64, &LiveTotals, &LiveTotals) -> String,
    ) -> (Duration, LiveTotals) {
        let start = clock::now();
        self.ctl.set_phase(RUN);
        let end = start + duration;
        let mut last = LiveTotals::default();
        let mut tick = start;
        loop {
            let now = clock::now();
            if now >= end {
                break;
            }
            let next = (tick + Duration::from_secs(1)).min(end);
            std::thread::sleep(next.saturating_duration_since(now));
            tick = next;
            if tick < end {
                let t = self.ctl.totals();
                common.progress(&line(tick.duration_since(start).as_secs_f64(), &t, &last));
                last = t;
            }
        }
        let elapsed = clock::now().duration_since(start);
        (elapsed, self.ctl.totals())
    }

    fn stop(self) -> Result<WorkerResult, BenchError> {
        self.ctl.set_phase(STOP);
        let mut all = WorkerResult::default();
        let mut failed = false;
        for h in self.handles {
            match h.join() {
                Ok(r) => all.merge(&r),
                Err(_) => failed = true,
            }
        }
        if failed {
            return Err(BenchError::Worker);
        }
        Ok(all)
    }
}

/// msg_server assignments of every connection.
struct Assigned {
    target: super::Target,
    /// `None` where the assignment failed.
    addrs: Vec<Option<std::net::SocketAddr>>,
    failed: u64,
    first_error: Option<String>,
}

/// Asks for `n` connection assignments; failures are counted and left out.
fn assignments(common: &Common, n: usize) -> Result<Assigned, BenchError> {
    let target = common.target()?;
    if n > 0 {
        common.progress(&format!(
            "asking {} for {} msg_server assignments",
            target.describe(),
            thousands(n as u64)
        ));
    }
    let mut failed = 0;
    let mut first = None;
    let addrs = target
        .assign_all(n)
        .into_iter()
        .map(|r| match r {
            Ok(a) => Some(a),
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
                None
            }
        })
        .collect();
    Ok(Assigned {
        target,
        addrs,
        failed,
        first_error: first,
    })
}

fn rate(n: u64, d: Duration) -> Option<f64> {
    let s = d.as_secs_f64();
    (s > 0.0).then(|| n as f64 / s)
}

fn common_head(r: &mut Report, kind: &str, target: &super::Target, common: &Common) {
    r.text("bench", "bench", kind);
    r.text("target", "target", target.describe());
    r.text("users", "users", format!("{}1…", common.prefix));
}

fn setup_figures(r: &mut Report, res: &WorkerResult, assign_failed: u64, setup: Duration) {
    let c = &res.counts;
    r.int("logged_in", "logged in", c.logged_in);
    r.int("login_refused", "login refused", c.login_refused);
    r.int(
        "login_failed",
        "login failed (connect/assign/timeout)",
        c.login_failed + assign_failed,
    );
    r.num("setup_s", "setup time (s)", Some(setup.as_secs_f64()));
    r.latency("login_latency", "login latency", &res.login_latency);
}

fn cpu_figures(
    r: &mut Report,
    common: &Common,
    cpu: (Option<u64>, Option<u64>),
    server: (Option<u64>, Option<u64>),
    elapsed: Duration,
) {
    r.num(
        "bench_cpu_pct",
        "bench CPU (% of one core)",
        cpu_pct(cpu.0, cpu.1, elapsed),
    );
    if common.server_pid.is_some() {
        r.num(
            "server_cpu_pct",
            "server CPU (% of one core)",
            cpu_pct(server.0, server.1, elapsed),
        );
    }
}

/// `bench msg`.
pub(super) fn run_msg(args: &MsgArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let common = &args.common;
    if args.pairs == 0 || args.window == 0 || args.threads == 0 {
        return Err(BenchError::Args(
            "--pairs, --window and --threads must be at least 1".into(),
        ));
    }
    if args.size < HEADER_LEN {
        return Err(BenchError::Args(format!(
            "--size must be at least {HEADER_LEN} (the bench header in each message)"
        )));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(BenchError::Args("--rate must be positive".into()));
    }
    let _ = teamtalk_net::raise_fd_limit();
    let pairs = args.pairs as usize;
    let Assigned {
        target,
        addrs,
        failed: assign_failed,
        first_error: assign_err,
    } = assignments(common, 2 * pairs)?;
    let workers = args.threads.min(pairs);
    let mut plans: Vec<WorkerPlan> = (0..workers).map(|_| WorkerPlan::default()).collect();
    for k in 0..pairs {
        let (Some(sa), Some(ra)) = (addrs[2 * k], addrs[2 * k + 1]) else {
            continue;
        };
        let plan = &mut plans[k % workers];
        let s = plan.conns.len();
        plan.conns.push((sa, common.user(2 * k as u64 + 1)));
        plan.conns.push((ra, common.user(2 * k as u64 + 2)));
        plan.pairs.push((s, s + 1, k as u32));
    }
    let planned: Vec<usize> = plans.iter().map(|p| p.pairs.len()).collect();
    let total_planned: usize = planned.iter().sum();
    let expected = 2 * total_planned as u64;
    let cfg = EngineConfig {
        password_md5: md5_hex(common.password.as_bytes()),
        window: args.window as usize,
        size: args.size,
        rate: None,
        ack_timeout: args.ack_timeout,
        login_timeout: Duration::from_secs(30),
        heartbeat: args.heartbeat,
        max_connecting: 256,
    };
    // Each worker paces its share of the total rate.
    let ctl_plans: Vec<(WorkerPlan, Option<f64>)> = plans
        .into_iter()
        .zip(&planned)
        .map(|(p, &n)| {
            let share = args
                .rate
                .map(|r| r * n as f64 / total_planned.max(1) as f64);
            (p, share)
        })
        .collect();
    let ws = Workers::start(ctl_plans, &cfg)?;
    let setup = ws.wait_logins(expected, args.setup_timeout, common);
    if ws.ctl.totals().logged_in == 0 {
        let res = ws.stop()?;
        let why = res
            .counts
            .first_error
            .or(assign_err)
            .unwrap_or_else(|| "no connection attempted".into());
        return Err(BenchError::NoLogin(why));
    }
    let cpu0 = cpu_ticks(None);
    let srv0 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    let (elapsed, at_end) = ws.run_for(args.duration, common, |t, now, last| {
        format!(
            "[{t:>5.1}s] sent {} acked {} delivered {}  {}/s",
            thousands(now.sent),
            thousands(now.acked),
            thousands(now.delivered),
            thousands(now.delivered.saturating_sub(last.delivered))
        )
    });
    let cpu1 = cpu_ticks(None);
    let srv1 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    ws.ctl.set_phase(DRAIN);
    let grace_end = clock::now() + args.grace;
    while clock::now() < grace_end {
        if ws.ctl.totals().settled == ws.ctl.live.len() as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let res = ws.stop()?;
    let c = &res.counts;

    let mut r = Report::default();
    common_head(&mut r, "msg", &target, common);
    r.int("pairs", "pairs", args.pairs.into());
    r.int("pairs_active", "pairs that sent", c.pairs_active);
    r.int("window", "window per sender", args.window.into());
    r.int("size", "message size (bytes)", args.size as u64);
    r.num("rate_target", "offered rate (msgs/s)", args.rate);
    r.int("threads", "bench worker threads", workers as u64);
    r.num("duration_s", "duration (s)", Some(elapsed.as_secs_f64()));
    setup_figures(&mut r, &res, assign_failed, setup);
    r.int("sent", "sent", c.sent);
    r.int("acked", "acked", c.acked);
    r.int("delivered", "delivered", c.delivered);
    r.num("sent_per_s", "sent/s", rate(at_end.sent, elapsed));
    r.num("acked_per_s", "acked/s", rate(at_end.acked, elapsed));
    r.num(
        "delivered_per_s",
        "delivered/s",
        rate(at_end.delivered, elapsed),
    );
    r.latency("latency", "latency send→delivery", &res.latency);
    r.latency("ack_latency", "latency send→ack", &res.ack_latency);
    let lost = c.sent.saturating_sub(c.delivered);
    let unacked = c.sent.saturating_sub(c.acked);
    r.int("lost", "lost (sent, never delivered)", lost);
    r.int("duplicates", "duplicate deliveries", c.duplicates);
    r.int("unacked", "unacked (no server ack)", unacked);
    r.int(
        "ack_timeouts",
        "acks later than --ack-timeout",
        c.ack_timeouts,
    );
    r.int("late_acks", "acks after timeout", c.late_acks);
    r.int(
        "duplicate_acks",
        "duplicate or unknown acks",
        c.duplicate_acks,
    );
    r.int(
        "refused",
        "refused (login refusals + unacked)",
        c.login_refused + unacked,
    );
    r.int("foreign", "deliveries not sent by this run", c.foreign);
    r.int("disconnects", "disconnects while running", c.disconnects);
    r.int("kicked", "kicked", c.kicked);
    cpu_figures(&mut r, common, (cpu0, cpu1), (srv0, srv1), elapsed);
    if let Some(e) = c.first_error.as_ref().or(assign_err.as_ref()) {
        r.text("first_error", "first error", e.clone());
    }
    r.write(common.json, out)
}

/// `bench conns`.
pub(super) fn run_conns(args: &ConnsArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let common = &args.common;
    if args.threads == 0 || args.connect_concurrency == 0 {
        return Err(BenchError::Args(
            "--threads and --connect-concurrency must be at least 1".into(),
        ));
    }
    let fd_limit = teamtalk_net::raise_fd_limit().ok();
    let n = args.connections as usize;
    let rss0 = common.server_pid.and_then(rss_kib);
    let Assigned {
        target,
        addrs,
        failed: assign_failed,
        first_error: assign_err,
    } = assignments(common, n)?;
    let workers = args.threads.min(n.max(1));
    let mut plans: Vec<WorkerPlan> = (0..workers).map(|_| WorkerPlan::default()).collect();
    for (i, a) in addrs.iter().enumerate() {
        if let Some(a) = a {
            plans[i % workers]
                .conns
                .push((*a, common.user(i as u64 + 1)));
        }
    }
    let expected = plans.iter().map(|p| p.conns.len() as u64).sum();
    let cfg = EngineConfig {
        password_md5: md5_hex(common.password.as_bytes()),
        window: 0,
        size: HEADER_LEN,
        rate: None,
        ack_timeout: Duration::from_secs(5),
        login_timeout: Duration::from_secs(60),
        heartbeat: args.heartbeat,
        max_connecting: args.connect_concurrency,
    };
    let ws = Workers::start(plans.into_iter().map(|p| (p, None)).collect(), &cfg)?;
    let setup = ws.wait_logins(expected, args.setup_timeout, common);
    let rss1 = common.server_pid.and_then(rss_kib);
    let cpu0 = cpu_ticks(None);
    let srv0 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    let (elapsed, _) = ws.run_for(args.duration, common, |t, now, _| {
        format!(
            "[hold {t:>5.1}s] held {} disconnects {}",
            thousands(now.logged_in.saturating_sub(now.disconnects)),
            now.disconnects
        )
    });
    let cpu1 = cpu_ticks(None);
    let srv1 = common.server_pid.and_then(|p| cpu_ticks(Some(p)));
    let rss2 = common.server_pid.and_then(rss_kib);
    let res = ws.stop()?;
    let c = &res.counts;

    let mut r = Report::default();
    common_head(&mut r, "conns", &target, common);
    r.int(
        "connections",
        "connections requested",
        args.connections.into(),
    );
    r.int("threads", "bench worker threads", workers as u64);
    r.int("fd_limit", "bench fd limit", fd_limit.unwrap_or(0));
    setup_figures(&mut r, &res, assign_failed, setup);
    r.num(
        "logins_per_s",
        "logins/s during setup",
        rate(c.logged_in, setup),
    );
    r.num("hold_s", "held for (s)", Some(elapsed.as_secs_f64()));
    r.int("held", "held at the end", c.held);
    r.int("disconnects", "disconnects while held", c.disconnects);
    r.int("kicked", "kicked", c.kicked);
    r.int("heartbeats", "heartbeats sent", c.heartbeats);
    if common.server_pid.is_some() {
        let kib = |v: Option<u64>| v.map(|k| k as f64);
        r.num(
            "server_rss_before_kib",
            "server VmRSS before (KiB)",
            kib(rss0),
        );
        r.num(
            "server_rss_logged_in_kib",
            "server VmRSS all logged in (KiB)",
            kib(rss1),
        );
        r.num(
            "server_rss_after_kib",
            "server VmRSS after hold (KiB)",
            kib(rss2),
        );
        let per = match (rss0, rss2) {
            (Some(a), Some(b)) if c.held > 0 => {
                Some((b as f64 - a as f64) * 1024.0 / c.held as f64)
            }
            _ => None,
        };
        r.num(
            "server_bytes_per_conn",
            "server memory per connection (bytes)",
            per,
        );
    }
    cpu_figures(&mut r, common, (cpu0, cpu1), (srv0, srv1), elapsed);
    if let Some(e) = c.first_error.as_ref().or(assign_err.as_ref()) {
        r.text("first_error", "first error", e.clone());
    }
    r.write(common.json, out)
}
