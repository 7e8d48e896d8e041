//! `bench group`: G TMP groups of M members, created over the protocol by
//! their first member (0x0405, which TeamTalk's servers and ours both
//! serve), S members of each posting group messages; every delivery is
//! matched to its send, so lost and duplicated deliveries are exact.
//!
//! Group `g`'s members are users `P(g×M+1)`…`P(g×M+M)`; its first S
//! members send. Connections are spread over the msg_servers: with
//! `--msg-server` in turn; through login_server (`--http`/`--login`) each
//! connection asks for its assignment just before it connects, so
//! login_server balances them by the load it sees as they log in.
//!
//! A message from a member is expected at every other member that was
//! ready when the run began (see the engine's module docs for "ready");
//! members that never got ready are reported, and make the run unclean,
//! but their missing deliveries are not counted as lost.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use super::engine::{
    BitSet, CREATE, EngineConfig, GroupState, HEADER_LEN, PlanConn, PlanCreate, PlanMember, SETTLE,
    WorkerPlan,
};
use super::msg::{
    Workers, ack_and_connection_figures, common_head, cpu_figures, rate, setup_figures,
};
use super::report::{Report, thousands};
use super::{BenchError, GroupArgs, Stop, Target, cpu_ticks, outcome, verdict};
use crate::clock;
use crate::password::md5_hex;

/// Members of one group at most: the servers' limit
/// (`store::MAX_GROUP_MEMBERS`; TeamTalk's own have none but the frame
/// size).
const MAX_MEMBERS: u32 = 10_000;
/// Connections of one run at most.
const MAX_CONNS: u64 = 200_000;

/// Deliveries matched against sends.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Deliveries the sends called for (ready members but the sender).
    expected: u64,
    /// Of those, delivered.
    delivered: u64,
    /// Received by ready members but never sent (should not happen).
    unsent: u64,
    /// Members not ready when the run began.
    not_ready: u64,
    /// Deliveries those members got anyway.
    to_not_ready: u64,
    /// Repeated deliveries.
    duplicates: u64,
}

impl Tally {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

/// Matches every member's deliveries with every sender's sends.
fn tally(
    senders: &[super::engine::SenderResult],
    members: &[super::engine::MemberResult],
    spg: u32,
) -> Tally {
    let sent: HashMap<u32, &BitSet> = senders.iter().map(|s| (s.flow, &s.sent)).collect();
    let empty = BitSet::default();
    let mut t = Tally::default();
    for m in members {
        t.duplicates += m.duplicates;
        if !m.settled {
            t.not_ready += 1;
            t.to_not_ready += m.received.iter().map(BitSet::len).sum::<u64>();
            continue;
        }
        for (s, got) in (0..spg).zip(&m.received) {
            let flow = u32::try_from(m.group)
                .unwrap_or(u32::MAX)
                .saturating_mul(spg)
                .saturating_add(s);
            let sent = sent.get(&flow).copied().unwrap_or(&empty);
            let matched = got.common(sent);
            t.unsent += got.len() - matched;
            if m.sender == Some(s) {
                continue;
            }
            t.expected += sent.len();
            t.delivered += matched;
        }
    }
    t
}

/// `bench group`.
pub(super) fn run_group(
    args: &GroupArgs,
    out: &mut dyn Write,
    stop: Stop<'_>,
) -> Result<(), BenchError> {
    let common = &args.common;
    if args.groups == 0 || args.window == 0 || args.threads == 0 {
        return Err(BenchError::Args(
            "--groups, --window and --threads must be at least 1".into(),
        ));
    }
    if !(2..=MAX_MEMBERS).contains(&args.members) {
        return Err(BenchError::Args(format!(
            "--members must be 2 to {MAX_MEMBERS}"
        )));
    }
    if args.senders == 0 || args.senders > args.members {
        return Err(BenchError::Args("--senders must be 1 to --members".into()));
    }
    if u64::from(args.groups) * u64::from(args.members) > MAX_CONNS {
        return Err(BenchError::Args(format!(
            "--groups × --members must be at most {MAX_CONNS}"
        )));
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
    let target = common.target()?;
    let (groups, m, spg) = (args.groups as usize, args.members as usize, args.senders);
    let n = groups * m;
    let workers = args.threads.min(n);
    let mut plans: Vec<WorkerPlan> = (0..workers)
        .map(|_| WorkerPlan {
            senders_per_group: spg,
            ..WorkerPlan::default()
        })
        .collect();
    let mut direct: BTreeMap<std::net::SocketAddr, u64> = BTreeMap::new();
    for j in 0..n {
        let (g, k) = (j / m, j % m);
        let addr = match &target {
            Target::Direct(v) => {
                let a = v[j % v.len()];
                *direct.entry(a).or_default() += 1;
                Some(a)
            }
            Target::Http(_) => None,
        };
        let plan = &mut plans[j % workers];
        let conn = plan.conns.len();
        plan.conns.push(PlanConn {
            addr,
            user: common.user(j as u64 + 1),
            global: j,
        });
        plan.members.push(PlanMember {
            conn,
            group: g,
            sender: u32::try_from(k).ok().filter(|&k| k < spg),
        });
        if k == 0 {
            plan.creates.push(PlanCreate {
                conn,
                group: g,
                members: (g * m..g * m + m).collect(),
            });
        }
    }
    let flows: Vec<usize> = plans
        .iter()
        .map(|p| p.members.iter().filter(|x| x.sender.is_some()).count())
        .collect();
    let total_flows: usize = flows.iter().sum();
    let cfg = EngineConfig {
        password_md5: md5_hex(common.password.as_bytes()),
        window: args.window as usize,
        size: args.size,
        rate: None,
        ack_timeout: args.ack_timeout,
        login_timeout: Duration::from_secs(30),
        heartbeat: args.heartbeat,
        max_connecting: 64,
        notice_timeout: args.notice_timeout,
        login_http: match &target {
            Target::Http(a) => Some(*a),
            Target::Direct(_) => None,
        },
    };
    let plans = plans
        .into_iter()
        .zip(&flows)
        .map(|(p, &f)| {
            let share = args.rate.map(|r| r * f as f64 / total_flows.max(1) as f64);
            (p, share)
        })
        .collect();
    common.progress(&format!(
        "logging in {} members ({} group(s) of {m}) via {}",
        thousands(n as u64),
        groups,
        target.describe()
    ));
    let ws = Workers::start(plans, &cfg, groups)?;
    let setup = ws.wait_logins(n as u64, args.setup_timeout, common, stop, |_| {});
    if ws.ctl.totals().logged_in == 0 {
        let res = ws.stop()?;
        if stop.is_set() {
            return Err(BenchError::Interrupted);
        }
        let why = res
            .counts
            .first_error
            .unwrap_or_else(|| "no connection attempted".into());
        return Err(BenchError::NoLogin(why));
    }

    // Create the groups, then let every member learn of its group.
    let group_start = clock::now();
    let deadline = group_start + args.setup_timeout;
    ws.ctl.set_phase(CREATE);
    common.progress(&format!("creating {groups} TMP group(s)"));
    while clock::now() < deadline && !stop.is_set() {
        if ws.ctl.groups.iter().all(|g| g.get() != GroupState::Pending) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ws.ctl.set_phase(SETTLE);
    let mut next_print = clock::now() + Duration::from_secs(1);
    loop {
        let t = ws.ctl.totals();
        let now = clock::now();
        if t.members_done >= n as u64 || now >= deadline || stop.is_set() {
            break;
        }
        if now >= next_print {
            next_print += Duration::from_secs(1);
            common.progress(&format!(
                "[groups {:>5.1} s] members ready or out: {} of {}",
                now.duration_since(group_start).as_secs_f64(),
                thousands(t.members_done),
                thousands(n as u64)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let group_setup = clock::now().duration_since(group_start);
    let created = ws
        .ctl
        .groups
        .iter()
        .filter(|g| matches!(g.get(), GroupState::Created(_)))
        .count() as u64;

    let cpu0 = cpu_ticks(None);
    let srv0 = common.server_ticks();
    let (elapsed, at_end) = if stop.is_set() {
        (Duration::ZERO, ws.ctl.totals())
    } else {
        ws.run_for(args.duration, common, stop, |t, now, last| {
            format!(
                "[{t:>5.1} s] sent {} acked {} delivered {}  {} deliveries/s",
                thousands(now.sent),
                thousands(now.acked),
                thousands(now.delivered),
                thousands(now.delivered.saturating_sub(last.delivered))
            )
        })
    };
    let cpu1 = cpu_ticks(None);
    let srv1 = common.server_ticks();
    let n_workers = ws.ctl.live.len() as u64;
    ws.drain(args.grace, |t| {
        t.settled == n_workers && t.delivered >= t.expected
    });
    let spread: BTreeMap<std::net::SocketAddr, u64> = match &target {
        Target::Direct(_) => direct,
        Target::Http(_) => ws
            .ctl
            .assigned
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default(),
    };
    let res = ws.stop()?;
    let interrupted = stop.is_set();
    let c = &res.counts;
    let t = tally(&res.senders, &res.members, spg);

    let mut r = Report::default();
    common_head(&mut r, "group", &target, common);
    r.int("groups", "groups", args.groups.into());
    r.int("groups_created", "groups created", created);
    r.int("members", "members per group", args.members.into());
    r.int("senders", "senders per group", spg.into());
    r.int("window", "window per sender (messages)", args.window.into());
    r.int("size", "message size (bytes)", args.size as u64);
    r.num("rate_target", "offered rate", args.rate, "msgs/s");
    r.int("threads", "bench worker threads", workers as u64);
    r.int("msg_servers", "msg_servers used", spread.len() as u64);
    r.text(
        "msg_server_spread",
        "connections per msg_server",
        spread
            .iter()
            .map(|(a, k)| format!("{a}={k}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    r.secs("duration_s", "duration", Some(elapsed.as_secs_f64()));
    setup_figures(&mut r, &res, 0, setup);
    r.secs(
        "group_setup_s",
        "group creation and member sync",
        Some(group_setup.as_secs_f64()),
    );
    r.int("members_ready", "members ready", n as u64 - t.not_ready);
    r.int("members_not_ready", "members not ready", t.not_ready);
    r.int("creation_notices", "creation notices received", c.notices);
    r.int(
        "relogins",
        "members logged in again (no notice)",
        c.relogins,
    );
    r.int("sent", "sent (messages)", c.sent);
    r.int("acked", "acked (messages)", c.acked);
    r.int("expected", "deliveries expected", t.expected);
    r.int("delivered", "delivered (deliveries)", t.delivered);
    r.num("sent_per_s", "sent", rate(at_end.sent, elapsed), "msgs/s");
    r.num(
        "delivered_per_s",
        "delivered",
        rate(at_end.delivered, elapsed),
        "deliveries/s",
    );
    r.latency("latency", "latency send→delivery", &res.latency);
    r.latency("ack_latency", "latency send→ack", &res.ack_latency);
    let unacked = c.sent.saturating_sub(c.acked);
    r.int("lost", "lost (expected, never delivered)", t.lost());
    r.int("duplicates", "duplicate deliveries", t.duplicates);
    r.int("unsent", "deliveries of messages never sent", t.unsent);
    r.int(
        "delivered_not_ready",
        "deliveries to members not ready",
        t.to_not_ready,
    );
    let refused = ack_and_connection_figures(&mut r, c, unacked);
    cpu_figures(&mut r, common, (cpu0, cpu1), (srv0, srv1), elapsed);
    let problems = [
        ("lost", t.lost()),
        ("duplicated", t.duplicates),
        ("refused", refused),
        ("login failures", c.login_failed),
        ("groups not created", args.groups as u64 - created),
        ("members not ready", t.not_ready),
        ("disconnects", c.disconnects + c.kicked),
    ];
    outcome(&mut r, interrupted, &problems);
    if let Some(e) = &c.first_error {
        r.text("first_error", "first error", e.clone());
    }
    r.write(common.json, out)?;
    verdict(interrupted, &problems)
}

#[cfg(test)]
mod tests {
    use super::super::engine::{MemberResult, SenderResult};
    use super::*;

    fn set(nos: &[u64]) -> BitSet {
        let mut b = BitSet::default();
        for &n in nos {
            b.insert(n);
        }
        b
    }

    fn member(group: usize, sender: Option<u32>, settled: bool, got: Vec<BitSet>) -> MemberResult {
        MemberResult {
            group,
            sender,
            settled,
            received: got,
            duplicates: 0,
        }
    }

    #[test]
    fn every_other_ready_member_is_expected_to_get_every_send() {
        // Group 0, two senders (flows 0 and 1); group 1's sender is flow 2.
        let senders = vec![
            SenderResult {
                flow: 0,
                sent: set(&[0, 1, 2]),
            },
            SenderResult {
                flow: 1,
                sent: set(&[0, 1]),
            },
            SenderResult {
                flow: 2,
                sent: set(&[0]),
            },
        ];
        let members = vec![
            // Sender 0 gets sender 1's messages, not its own.
            member(0, Some(0), true, vec![set(&[]), set(&[0, 1])]),
            // Sender 1 misses sender 0's message 2.
            member(0, Some(1), true, vec![set(&[0, 1]), set(&[])]),
            // A plain member gets everything, and one message never sent.
            member(0, None, true, vec![set(&[0, 1, 2]), set(&[0, 1, 9])]),
            // Not ready: not expected, counted aside.
            member(0, None, false, vec![set(&[0]), set(&[])]),
            // Group 1: sender 0 of group 1 is flow 2 (two senders per group).
            member(1, None, true, vec![set(&[0]), set(&[])]),
        ];
        let t = tally(&senders, &members, 2);
        assert_eq!(
            t,
            Tally {
                expected: 2 + 3 + 5 + 1,
                delivered: 2 + 2 + 5 + 1,
                unsent: 1,
                not_ready: 1,
                to_not_ready: 1,
                duplicates: 0,
            }
        );
        assert_eq!(t.lost(), 1);
    }
}
