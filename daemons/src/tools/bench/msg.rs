//! `bench msg`, and what `conns` and `group` share with it: set up the
//! engine's workers, steer them through their phases, print progress, and
//! report.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{
    self, Control, DRAIN, EngineConfig, HEADER_LEN, LiveTotals, PlanConn, RUN, STOP, WorkerPlan,
    WorkerResult,
};
use super::report::{Report, thousands};
use super::{BenchError, Common, MsgArgs, Stop, cpu_pct, cpu_ticks, outcome, verdict};
use crate::clock;
use crate::password::md5_hex;

/// Running workers and their shared control.
pub(super) struct Workers {
    pub(super) ctl: Arc<Control>,
    handles: Vec<std::thread::JoinHandle<WorkerResult>>,
}

impl Workers {
    /// One worker per plan; each paces its sends to its own rate, if any.
    /// `groups`: the groups of a group run (0 otherwise).
    pub(super) fn start(
        plans: Vec<(WorkerPlan, Option<f64>)>,
        cfg: &EngineConfig,
        groups: usize,
    ) -> Result<Self, BenchError> {
        let conns = plans
            .iter()
            .flat_map(|(p, _)| p.conns.iter().map(|c| c.global + 1))
            .max()
            .unwrap_or(0);
        let ctl = Arc::new(Control::new(plans.len(), conns, groups));
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

    /// Waits until every connection logged in, was refused or failed,
    /// `timeout`, or an interrupt; prints progress and calls `sample`
    /// every 100 ms. Returns how long it took.
    pub(super) fn wait_logins(
        &self,
        expected: u64,
        timeout: Duration,
        common: &Common,
        stop: Stop<'_>,
        mut sample: impl FnMut(&LiveTotals),
    ) -> Duration {
        let start = clock::now();
        let mut next_print = start + Duration::from_secs(1);
        let mut next_sample = start;
        loop {
            let t = self.ctl.totals();
            let done = t.logged_in + t.refused + t.failed;
            let now = clock::now();
            if now >= next_sample {
                next_sample += Duration::from_millis(100);
                sample(&t);
            }
            if done >= expected || now.duration_since(start) >= timeout || stop.is_set() {
                sample(&t);
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
    /// Stops early on an interrupt or once every connection is gone.
    /// Returns the measured run time and the counters at its end.
    pub(super) fn run_for(
        &self,
        duration: Duration,
        common: &Common,
        stop: Stop<'_>,
        line: impl Fn(f64, &LiveTotals, &LiveTotals) -> String,
    ) -> (Duration, LiveTotals) {
        let start = clock::now();
        self.ctl.set_phase(RUN);
        let end = start + duration;
        let mut last = LiveTotals::default();
        let mut tick = start + Duration::from_secs(1);
        loop {
            let now = clock::now();
            if now >= end || stop.is_set() {
                break;
            }
            let t = self.ctl.totals();
            if t.logged_in > 0 && t.open == 0 {
                common.progress("every connection is gone; stopping");
                break;
            }
            if now >= tick {
                common.progress(&line(tick.duration_since(start).as_secs_f64(), &t, &last));
                last = t;
                tick += Duration::from_secs(1);
            }
            let next = tick.min(end).min(now + Duration::from_millis(50));
            std::thread::sleep(next.saturating_duration_since(now));
        }
        let elapsed = clock::now().duration_since(start);
        (elapsed, self.ctl.totals())
    }

    /// DRAIN: waits at most `grace` until `done`. An interrupted run
    /// drains too: what was in flight at Ctrl-C is then counted as
    /// delivered or lost, not as lost because the bench stopped looking.
    pub(super) fn drain(&self, grace: Duration, done: impl Fn(&LiveTotals) -> bool) {
        self.ctl.set_phase(DRAIN);
        let grace_end = clock::now() + grace;
        while clock::now() < grace_end {
            if done(&self.ctl.totals()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(super) fn stop(self) -> Result<WorkerResult, BenchError> {
        self.ctl.set_phase(STOP);
        let mut all = WorkerResult::default();
        let mut failed = false;
        for h in self.handles {
            match h.join() {
                Ok(r) => all.merge(r),
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
pub(super) struct Assigned {
    pub(super) target: super::Target,
    /// `None` where the assignment failed.
    pub(super) addrs: Vec<Option<std::net::SocketAddr>>,
    pub(super) failed: u64,
    pub(super) first_error: Option<String>,
}

/// Asks for `n` connection assignments; failures are counted and left out.
pub(super) fn assignments(common: &Common, n: usize) -> Result<Assigned, BenchError> {
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

pub(super) fn rate(n: u64, d: Duration) -> Option<f64> {
    let s = d.as_secs_f64();
    (s > 0.0).then(|| n as f64 / s)
}

pub(super) fn common_head(r: &mut Report, kind: &str, target: &super::Target, common: &Common) {
    r.text("bench", "bench", kind);
    r.text("target", "target", target.describe());
    r.text("users", "users", format!("{}1…", common.prefix));
}

pub(super) fn setup_figures(
    r: &mut Report,
    res: &WorkerResult,
    assign_failed: u64,
    setup: Duration,
) {
    let c = &res.counts;
    r.int("logged_in", "logged in", c.logged_in);
    r.int("login_refused", "login refused", c.login_refused);
    r.int(
        "login_failed",
        "login failed (connect/assign/timeout)",
        c.login_failed + assign_failed,
    );
    r.secs("setup_s", "setup time", Some(setup.as_secs_f64()));
    r.latency("login_latency", "login latency", &res.login_latency);
}

/// The rows every message workload reports the same way: acks (missing,
/// late, duplicated), refusals, foreign deliveries, disconnects and kicks.
/// Returns the refused count (login refusals and unacked sends) for the
/// verdict.
pub(super) fn ack_and_connection_figures(r: &mut Report, c: &engine::Counts, unacked: u64) -> u64 {
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
    let refused = c.login_refused + unacked;
    r.int("refused", "refused (login refusals + unacked)", refused);
    r.int("foreign", "deliveries not sent by this run", c.foreign);
    r.int("disconnects", "disconnects while running", c.disconnects);
    r.int("kicked", "kicked", c.kicked);
    refused
}

pub(super) fn cpu_figures(
    r: &mut Report,
    common: &Common,
    cpu: (Option<u64>, Option<u64>),
    server: (Option<u64>, Option<u64>),
    elapsed: Duration,
) {
    r.num(
        "bench_cpu_pct",
        "bench CPU",
        cpu_pct(cpu.0, cpu.1, elapsed),
        "% of one core",
    );
    if !common.server_pid.is_empty() {
        r.num(
            "server_cpu_pct",
            "server CPU",
            cpu_pct(server.0, server.1, elapsed),
            "% of one core",
        );
    }
}

/// `bench msg`.
pub(super) fn run_msg(
    args: &MsgArgs,
    out: &mut dyn Write,
    stop: Stop<'_>,
) -> Result<(), BenchError> {
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
        plan.conns.push(PlanConn {
            addr: Some(sa),
            user: common.user(2 * k as u64 + 1),
            global: 2 * k,
        });
        plan.conns.push(PlanConn {
            addr: Some(ra),
            user: common.user(2 * k as u64 + 2),
            global: 2 * k + 1,
        });
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
        notice_timeout: Duration::from_secs(5),
        login_http: None,
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
    let ws = Workers::start(ctl_plans, &cfg, 0)?;
    let setup = ws.wait_logins(expected, args.setup_timeout, common, stop, |_| {});
    if ws.ctl.totals().logged_in == 0 {
        let res = ws.stop()?;
        if stop.is_set() {
            return Err(BenchError::Interrupted);
        }
        let why = res
            .counts
            .first_error
            .or(assign_err)
            .unwrap_or_else(|| "no connection attempted".into());
        return Err(BenchError::NoLogin(why));
    }
    let cpu0 = cpu_ticks(None);
    let srv0 = common.server_ticks();
    let (elapsed, at_end) = ws.run_for(args.duration, common, stop, |t, now, last| {
        format!(
            "[{t:>5.1} s] sent {} acked {} delivered {}  {} deliveries/s",
            thousands(now.sent),
            thousands(now.acked),
            thousands(now.delivered),
            thousands(now.delivered.saturating_sub(last.delivered))
        )
    });
    let cpu1 = cpu_ticks(None);
    let srv1 = common.server_ticks();
    let n_workers = ws.ctl.live.len() as u64;
    ws.drain(args.grace, |t| t.settled == n_workers);
    let res = ws.stop()?;
    let interrupted = stop.is_set();
    let c = &res.counts;

    let mut r = Report::default();
    common_head(&mut r, "msg", &target, common);
    r.int("pairs", "pairs", args.pairs.into());
    r.int("pairs_active", "pairs that sent", c.pairs_active);
    r.int("window", "window per sender (messages)", args.window.into());
    r.int("size", "message size (bytes)", args.size as u64);
    r.num("rate_target", "offered rate", args.rate, "msgs/s");
    r.int("threads", "bench worker threads", workers as u64);
    r.secs("duration_s", "duration", Some(elapsed.as_secs_f64()));
    setup_figures(&mut r, &res, assign_failed, setup);
    r.int("sent", "sent (messages)", c.sent);
    r.int("acked", "acked (messages)", c.acked);
    r.int("delivered", "delivered (messages)", c.delivered);
    r.num("sent_per_s", "sent", rate(at_end.sent, elapsed), "msgs/s");
    r.num(
        "acked_per_s",
        "acked",
        rate(at_end.acked, elapsed),
        "msgs/s",
    );
    r.num(
        "delivered_per_s",
        "delivered",
        rate(at_end.delivered, elapsed),
        "msgs/s",
    );
    r.latency("latency", "latency send→delivery", &res.latency);
    r.latency("ack_latency", "latency send→ack", &res.ack_latency);
    let lost = c.sent.saturating_sub(c.delivered);
    let unacked = c.sent.saturating_sub(c.acked);
    r.int("lost", "lost (sent, never delivered)", lost);
    r.int("duplicates", "duplicate deliveries", c.duplicates);
    let refused = ack_and_connection_figures(&mut r, c, unacked);
    cpu_figures(&mut r, common, (cpu0, cpu1), (srv0, srv1), elapsed);
    let problems = [
        ("lost", lost),
        ("duplicated", c.duplicates),
        ("refused", refused),
        ("login failures", c.login_failed + assign_failed),
        ("disconnects", c.disconnects + c.kicked),
    ];
    outcome(&mut r, interrupted, &problems);
    if let Some(e) = c.first_error.as_ref().or(assign_err.as_ref()) {
        r.text("first_error", "first error", e.clone());
    }
    r.write(common.json, out)?;
    verdict(interrupted, &problems)
}
