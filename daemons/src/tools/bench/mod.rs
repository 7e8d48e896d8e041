//! `teamtalk bench`: a load generator for any TeamTalk-protocol cluster.
//!
//! It speaks only the client protocol (HTTP assignment from login_server,
//! then TCP to a msg_server), so it measures the C++ servers as well as
//! ours. Four workloads:
//!
//! - `msg`: sender/receiver pairs with a window of messages in flight;
//!   delivered/s, acked/s, send→delivery latency, lost, duplicates and
//!   refused (unacked) messages. A server-side rate limit shows up as
//!   unacked and lost messages, never hidden.
//! - `login`: connect, log in, log out at a given concurrency.
//! - `conns`: many idle logged-in connections with heartbeats, and the
//!   server's memory per connection (the slope of its RSS over the
//!   connections as they log in).
//! - `group`: G TMP groups of M members, created over the protocol by
//!   their first member; S senders per group; deliveries/s, latency, and
//!   every member's lost and duplicate deliveries.
//!
//! Users are the ones `teamtalk user seed --prefix P --count N` creates:
//! `P1`…`PN`. A progress line goes to stderr once per second; the summary
//! (or, with `--json`, one JSON object) goes to the given writer. A run
//! that lost, refused or duplicated anything, or lost connections, writes
//! its summary and then fails with [`BenchError::Unclean`]; an
//! interrupted one (Ctrl-C) writes what it measured so far and fails with
//! [`BenchError::Interrupted`]; a run whose connections are all gone stops
//! there.
//!
//! Every connection is a [`teamtalk_conn::Client`] machine run by a
//! `teamtalk-net` reactor, the same client behaviour as every other tool:
//! `msg`, `conns` and `group` run a few workers, each one reactor plus one
//! thread reading its machines' events (`engine.rs`); `login` runs one
//! machine per concurrent slot that logs in and out as the slot's users in
//! turn, its script on the reactor thread (`login.rs`). Addresses may be
//! host names. The bench reports its own CPU use so a saturated bench is
//! visible.

mod conns;
mod engine;
mod group;
pub mod hist;
mod login;
mod msg;
mod pace;
mod report;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Subcommand;

use crate::tools::addr::ServerAddr;
use crate::tools::client::{AssignError, Assigner};

/// How to get load users cheaply, for every workload's help.
const SEEDING: &str = "Users are PREFIX1, PREFIX2, ... with one password. Seed them cheaply, \
with TeamTalk's md5 password form instead of Argon2id (a login then costs microseconds, not \
~18 ms of a core):\n\n  teamtalk user seed --prefix load --count 1000 --password pw \
--teamtalk-md5 --data-dir DIR\n\n(with --create for a new store; against the C++ servers, insert users into their MySQL \
the same way). The exit status is 0 only for a clean run: anything lost, refused, duplicated, \
or a connection lost makes it 1, after the summary; Ctrl-C prints the summary so far and \
exits 1.";

/// Arguments of `teamtalk bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = SEEDING, after_help = "Seed load users cheaply with `teamtalk user seed --teamtalk-md5` (see --help).")]
pub struct BenchArgs {
    /// Which workload.
    #[command(subcommand)]
    pub kind: BenchKind,
}

/// The workloads.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum BenchKind {
    /// One-to-one messages between sender/receiver pairs.
    #[command(after_long_help = SEEDING)]
    Msg(MsgArgs),
    /// Logins per second: connect, log in, log out.
    #[command(after_long_help = SEEDING)]
    Login(LoginArgs),
    /// Idle logged-in connections held open, and the server's memory per connection.
    #[command(after_long_help = SEEDING)]
    Conns(ConnsArgs),
    /// Fan-out to group members: G TMP groups of M members made over the
    /// protocol, S senders per group.
    #[command(after_long_help = SEEDING)]
    Group(GroupArgs),
}

/// Options every workload takes: where the cluster is, which users, output.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// login_server's HTTP address as a URL (`http://host:port`); each
    /// connection asks it for a msg_server, like real clients. The default
    /// when no target is given is http://127.0.0.1:8080.
    #[arg(long, value_name = "URL", conflicts_with_all = ["http", "msg_server"])]
    pub login: Option<String>,
    /// login_server's HTTP address as `host:port` (same as `--login`).
    #[arg(long, value_name = "ADDR", conflicts_with = "msg_server")]
    pub http: Option<String>,
    /// Connect straight to this msg_server (repeat for several, used in turn).
    #[arg(long = "msg-server", value_name = "ADDR")]
    pub msg_server: Vec<String>,
    /// User name prefix: users are PREFIX1, PREFIX2, … (`teamtalk user
    /// seed --prefix P --count N --password PW --teamtalk-md5` makes them
    /// cheap to log in).
    #[arg(long)]
    pub prefix: String,
    /// Password of every user.
    #[arg(long)]
    pub password: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// A server process to watch: its CPU use and memory (VmRSS) are
    /// reported (the pid of `teamtalk up`, or of a msg_server). Repeat it
    /// for several: `conns` reports each one's memory per connection (a
    /// msg_server's own connections; for any other process, such as
    /// route_server or db_proxy_server, per online user), and
    /// `server_cpu_pct` is their sum.
    #[arg(long, value_name = "PID")]
    pub server_pid: Vec<u32>,
}

/// `teamtalk bench msg`.
#[derive(Debug, Clone, clap::Args)]
pub struct MsgArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Sender/receiver pairs (users PREFIX1…PREFIX<2×pairs>).
    #[arg(long, default_value_t = 100)]
    pub pairs: u32,
    /// Messages in flight (sent, not yet acked) per sender.
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Message body (`msg_data`) size in bytes; at least 24.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds of sending.
    #[arg(long, default_value = "10", value_parser = secs)]
    pub duration: Duration,
    /// Pace all senders together to this many messages per second, each
    /// sender to an even share on its own, never above it (default: as
    /// fast as the windows allow).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Worker threads, each owning many connections.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// A message not acked within this many seconds leaves the window and
    /// counts as unacked (servers that drop silently would stall it).
    #[arg(long, default_value = "5", value_parser = secs)]
    pub ack_timeout: Duration,
    /// After sending stops, wait at most this long for acks and deliveries.
    #[arg(long, default_value = "3", value_parser = secs)]
    pub grace: Duration,
    /// Give up waiting for logins after this long.
    #[arg(long, default_value = "60", value_parser = secs)]
    pub setup_timeout: Duration,
    /// Heartbeat interval, seconds.
    #[arg(long, default_value = "30", value_parser = secs)]
    pub heartbeat: Duration,
}

/// `teamtalk bench login`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Logins in progress at once (one client machine each).
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Users to cycle through, `PREFIX1`…`PREFIX<users>` (default: concurrency);
    /// no user logs in twice at the same time.
    #[arg(long)]
    pub users: Option<u32>,
    /// Seconds to run (default 10 unless --count is given).
    #[arg(long, value_parser = secs)]
    pub duration: Option<Duration>,
    /// Stop after this many logins instead.
    #[arg(long)]
    pub count: Option<u64>,
    /// Reactor threads running the slots. One keeps the bench's own cost
    /// per login lowest (its wake-ups serve several slots at once), which
    /// matters when it shares the cores with the servers; more help only
    /// with many slots on many cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
}

/// `teamtalk bench conns`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Connections to open and log in (users `PREFIX1`…`PREFIX<N>`).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: u32,
    /// Seconds to hold them once logged in.
    #[arg(long, default_value = "10", value_parser = secs)]
    pub duration: Duration,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Connections connecting or logging in at once, per worker.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Heartbeat interval, seconds.
    #[arg(long, default_value = "30", value_parser = secs)]
    pub heartbeat: Duration,
    /// Give up waiting for logins after this long.
    #[arg(long, default_value = "120", value_parser = secs)]
    pub setup_timeout: Duration,
    /// Bench processes: this one and N-1 copies of it, each opening its
    /// share of `--connections` (a process may hold only as many sockets
    /// as its open-file limit). They log in together, hold together, and
    /// this one writes one summary of them all.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub processes: usize,
    /// Run as share K of N (0-based) of a `--processes` run: JSON lines on
    /// stdout, steered by lines on stdin. Internal.
    #[arg(long, hide = true, value_name = "K/N", value_parser = WorkerSlot::parse)]
    pub worker: Option<WorkerSlot>,
    /// The executable the `--processes` copies run (default: this one).
    /// For embedding and tests, whose own executable is not `teamtalk`.
    #[arg(long, hide = true, value_name = "PATH")]
    pub worker_exe: Option<std::path::PathBuf>,
}

/// Which share of a `--processes` run a worker process opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlot {
    /// Its share, 0-based.
    pub index: usize,
    /// Processes in the run.
    pub of: usize,
}

impl WorkerSlot {
    /// `K/N` with `K < N` and `2 <= N <= MAX_PROCESSES`.
    fn parse(s: &str) -> Result<Self, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected K/N"))?;
        let index: usize = k.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let of: usize = n.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(2..=MAX_PROCESSES).contains(&of) || index >= of {
            return Err(format!("{s:?}: need K < N and 2 <= N <= {MAX_PROCESSES}"));
        }
        Ok(Self { index, of })
    }
}

/// Most bench processes of one `conns` run (each is a few threads; more
/// than this on one machine only competes with the servers).
pub const MAX_PROCESSES: usize = 64;

/// `teamtalk bench group`.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Groups (group g's members are users PREFIX(g×M+1)…PREFIX(g×M+M)).
    #[arg(long, default_value_t = 1)]
    pub groups: u32,
    /// Members per group, at least 2; the first creates the group.
    #[arg(long, default_value_t = 500)]
    pub members: u32,
    /// Senders per group: its first S members post.
    #[arg(long, default_value_t = 4)]
    pub senders: u32,
    /// Messages in flight (sent, not yet acked) per sender.
    #[arg(long, default_value_t = 8)]
    pub window: u32,
    /// Pace all senders together to this many messages per second (each
    /// makes M-1 deliveries), each sender to an even share on its own,
    /// never above it: against TeamTalk's msg_server keep the share under
    /// its 20 messages/s per user (default: as fast as the windows allow).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Message body (`msg_data`) size in bytes; at least 24.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds of sending.
    #[arg(long, default_value = "10", value_parser = secs)]
    pub duration: Duration,
    /// Worker threads, each owning many connections.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// A message not acked within this many seconds leaves the window and
    /// counts as unacked.
    #[arg(long, default_value = "5", value_parser = secs)]
    pub ack_timeout: Duration,
    /// After sending stops, wait at most this long for acks and deliveries.
    #[arg(long, default_value = "3", value_parser = secs)]
    pub grace: Duration,
    /// Give up waiting for logins, group creation and members after this long.
    #[arg(long, default_value = "60", value_parser = secs)]
    pub setup_timeout: Duration,
    /// A member that has not been told of its group's creation this long
    /// after it was made logs in again (TeamTalk's servers tell nobody).
    #[arg(long, default_value = "5", value_parser = secs)]
    pub notice_timeout: Duration,
    /// Heartbeat interval, seconds.
    #[arg(long, default_value = "30", value_parser = secs)]
    pub heartbeat: Duration,
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The arguments do not make a valid run.
    #[error("bench: {0}")]
    Args(String),
    /// An address did not parse or resolve.
    #[error("bench: {0}")]
    Resolve(String),
    /// login_server gave no msg_server.
    #[error("bench: {0}")]
    Assign(#[from] AssignError),
    /// Nothing could log in, so nothing was measured.
    #[error("bench: no connection logged in ({0})")]
    NoLogin(String),
    /// The run finished and its summary was written, but something was
    /// lost, refused or duplicated, or connections were lost.
    #[error("bench: the run was not clean: {0} (summary above)")]
    Unclean(String),
    /// The run was interrupted (Ctrl-C); the summary so far was written.
    #[error("bench: interrupted; the summary covers the run so far")]
    Interrupted,
    /// A worker thread panicked.
    #[error("bench: a worker thread failed")]
    Worker,
    /// Socket, thread or output error.
    #[error("bench: {0}")]
    Io(#[from] std::io::Error),
    /// JSON output failed.
    #[error("bench: json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs a bench, writing the summary (or JSON) to `out` and the progress
/// line to stderr.
///
/// # Errors
/// [`BenchError`]: the run could not start or measure, or it was not clean
/// ([`BenchError::Unclean`], after the summary).
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    run_until(args, out, &AtomicBool::new(false))
}

/// [`run`] that stops early once `stop` is set (the CLI sets it on
/// Ctrl-C): the summary of what was measured so far is written, then
/// [`BenchError::Interrupted`] returned.
///
/// # Errors
/// As [`run`], and [`BenchError::Interrupted`].
pub fn run_until(
    args: &BenchArgs,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<(), BenchError> {
    let stop = Stop(stop);
    match &args.kind {
        BenchKind::Msg(a) => msg::run_msg(a, out, stop),
        BenchKind::Login(a) => login::run_login(a, out, stop),
        BenchKind::Conns(a) => conns::run_conns(a, out, stop),
        BenchKind::Group(a) => group::run_group(a, out, stop),
    }
}

/// The interrupt flag of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop<'a>(&'a AtomicBool);

impl Stop<'_> {
    pub(crate) fn is_set(self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The end of a run, after its summary: `Ok` only for a clean run.
/// `problems` are (what, how many); the non-zero ones make the run
/// unclean.
pub(crate) fn verdict(interrupted: bool, problems: &[(&str, u64)]) -> Result<(), BenchError> {
    if interrupted {
        return Err(BenchError::Interrupted);
    }
    let bad: Vec<String> = problems
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{} {what}", report::thousands(*n)))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(BenchError::Unclean(bad.join(", ")))
    }
}

/// The outcome row every summary ends with.
pub(crate) fn outcome(r: &mut report::Report, interrupted: bool, problems: &[(&str, u64)]) {
    r.flag("interrupted", "interrupted (Ctrl-C)", interrupted);
    r.flag(
        "clean",
        "clean run (exit status 0)",
        !interrupted && problems.iter().all(|(_, n)| *n == 0),
    );
}

fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?}: must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// How connections find their msg_server.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// Ask login_server's HTTP port, once per connection.
    Http(SocketAddr),
    /// Use these msg_servers in turn.
    Direct(Vec<SocketAddr>),
}

/// `host:port` or `http://host:port/...`, resolved.
fn resolve(addr: &str) -> Result<SocketAddr, BenchError> {
    ServerAddr::parse(addr)
        .and_then(|a| a.resolve())
        .map_err(|e| BenchError::Resolve(e.to_string()))
}

/// Timeout of one assignment query or connect.
pub(crate) const NET_TIMEOUT: Duration = Duration::from_secs(10);

impl Common {
    pub(crate) fn target(&self) -> Result<Target, BenchError> {
        if !self.msg_server.is_empty() {
            let addrs = self
                .msg_server
                .iter()
                .map(|a| resolve(a))
                .collect::<Result<_, _>>()?;
            return Ok(Target::Direct(addrs));
        }
        if let Some(url) = &self.login {
            return Ok(Target::Http(resolve(url)?));
        }
        Ok(Target::Http(resolve(
            self.http.as_deref().unwrap_or("127.0.0.1:8080"),
        )?))
    }

    pub(crate) fn user(&self, n: u64) -> String {
        format!("{}{n}", self.prefix)
    }

    /// CPU ticks of every `--server-pid` together; `None` when none is
    /// given or one cannot be read.
    pub(crate) fn server_ticks(&self) -> Option<u64> {
        if self.server_pid.is_empty() {
            return None;
        }
        self.server_pid
            .iter()
            .map(|&p| cpu_ticks(Some(p)))
            .sum::<Option<u64>>()
    }

    pub(crate) fn progress(&self, line: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

impl Target {
    /// The msg_server for connection number `i`.
    pub(crate) fn assign(&self, i: usize) -> Result<SocketAddr, BenchError> {
        match self {
            Self::Http(http) => Ok(Assigner::new(&(*http).into(), NET_TIMEOUT)
                .query()?
                .addr()?),
            Self::Direct(v) => Ok(v[i % v.len()]),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Http(a) => format!("http://{a}"),
            Self::Direct(v) => v
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Assignments for `n` connections, asked in parallel.
    pub(crate) fn assign_all(&self, n: usize) -> Vec<Result<SocketAddr, String>> {
        let threads = 16.min(n.max(1));
        let mut out: Vec<Result<SocketAddr, String>> = Vec::with_capacity(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t..n)
                            .step_by(threads)
                            .map(|i| (i, self.assign(i).map_err(|e| e.to_string())))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(usize, Result<SocketAddr, String>)> = handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec![(usize::MAX, Err("panicked".to_owned()))])
                })
                .collect();
            all.sort_by_key(|(i, _)| *i);
            out.extend(all.into_iter().filter(|(i, _)| *i < n).map(|(_, r)| r));
        });
        out.resize_with(n, || Err("assignment thread failed".to_owned()));
        out
    }
}

/// Kernel-reported clock ticks per second in `/proc/*/stat` (`USER_HZ`,
/// fixed at 100 on Linux whatever the kernel's internal tick rate).
const USER_HZ: f64 = 100.0;

/// utime + stime of a process (`None`: this process), in ticks.
pub(crate) fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU use between two tick readings over `elapsed`, in % of one core.
pub(crate) fn cpu_pct(before: Option<u64>, after: Option<u64>, elapsed: Duration) -> Option<f64> {
    let (b, a) = (before?, after?);
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| a.saturating_sub(b) as f64 / USER_HZ / secs * 100.0)
}

/// Resident memory of a process in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_and_memory_are_readable() {
        assert!(cpu_ticks(None).is_some());
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert_eq!(
            cpu_pct(Some(100), Some(150), Duration::from_secs(1)),
            Some(50.0)
        );
        assert_eq!(cpu_pct(None, Some(1), Duration::from_secs(1)), None);
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(secs("2.5"), Ok(Duration::from_millis(2500)));
        assert!(secs("0").is_err() && secs("-1").is_err() && secs("x").is_err());
    }

    #[test]
    fn targets_parse() {
        let common = |login: Option<&str>, http: Option<&str>, msg: &[&str]| Common {
            login: login.map(str::to_owned),
            http: http.map(str::to_owned),
            msg_server: msg.iter().map(|s| (*s).to_owned()).collect(),
            prefix: "u".into(),
            password: "p".into(),
            json: false,
            quiet: true,
            server_pid: Vec::new(),
        };
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(matches!(
            common(Some("http://127.0.0.1:9/msg_server"), None, &[]).target(),
            Ok(Target::Http(a)) if a == addr("127.0.0.1:9")
        ));
        assert!(matches!(
            common(None, None, &[]).target(),
            Ok(Target::Http(a)) if a == addr("127.0.0.1:8080")
        ));
        let Ok(Target::Direct(v)) = common(None, None, &["127.0.0.1:1", "127.0.0.1:2"]).target()
        else {
            panic!("direct")
        };
        let t = Target::Direct(v);
        assert_eq!(t.assign(3).unwrap(), addr("127.0.0.1:2"));
        assert_eq!(t.assign_all(3).len(), 3);
        assert!(
            common(None, Some("nowhere.invalid:x"), &[])
                .target()
                .is_err()
        );
    }
}
