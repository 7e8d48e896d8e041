//! `bench conns`: N idle logged-in connections with heartbeats, held for
//! `--duration`, and the servers' memory per connection.
//!
//! # Several processes
//!
//! A process may hold only as many sockets as its open-file limit, so
//! `--processes N` spreads the connections over this process and N-1
//! copies of the same executable, each started with the same target and
//! users and a hidden `--worker K/N`: connection `i` (user `P(i+1)`) is
//! opened by the process whose contiguous share holds `i`, and with
//! `--msg-server A --msg-server B` it goes to the `i`-th address in turn,
//! exactly as in one process. A worker writes one JSON line to stdout
//! every 50 ms (its [`Progress`]), one when its share has logged in
//! ([`Line::Ready`]) and, at the end, its exact counts and login latency
//! histogram ([`Line::Result`]); it reads `hold` (start the hold) and
//! `end` (stop and report) from stdin, and stops by itself when stdin
//! closes, so a worker never outlives the run. This process waits until
//! every share is ready (or `--setup-timeout`), tells them all to hold at
//! once, ends them together after `--duration`, and writes one summary:
//! the same keys as a one-process run, summed, plus the new ones below.
//!
//! # Per msg_server, per server process
//!
//! Each connection's msg_server is known (planned, or the one
//! login_server assigned it just before it connected), so the summary
//! gives the connections held per msg_server (`msg_server_held`), which
//! shows how evenly login_server spread them. Every `--server-pid` is
//! sampled every 100 ms while the connections log in: its VmRSS against
//! the connections on the msg_servers it listens on (found in
//! `/proc/PID/fd` and `/proc/PID/net/tcp*`), or, for a process that is no
//! msg_server of the run (route_server, db_proxy_server), against all
//! connections, i.e. per online user. The least-squares slope of those
//! points is its memory per connection (`servers`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::engine::{Counts, EngineConfig, HEADER_LEN, PlanConn, RUN, WorkerPlan, WorkerResult};
use super::hist::Histogram;
use super::msg::{Workers, common_head, cpu_figures, rate, setup_figures};
use super::report::{Report, real, thousands};
use super::{
    BenchError, ConnsArgs, MAX_PROCESSES, Stop, Target, WorkerSlot, cpu_pct, cpu_ticks, outcome,
    rss_kib, verdict,
};
use crate::clock;
use crate::password::md5_hex;

/// How often a worker process reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);
/// How often the servers' memory is sampled while connections log in.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long a worker process may take to report after `end` (it asks its
/// machines for their heartbeat counts and closes its connections).
const END_WAIT: Duration = Duration::from_secs(60);
/// Longest line a worker process may write (its result carries a
/// histogram of at most a few thousand buckets).
const MAX_LINE: u64 = 4 << 20;

/// One process's counters right now.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    logged_in: u64,
    refused: u64,
    failed: u64,
    /// Logged in now.
    open: u64,
    disconnects: u64,
    /// Logged in now per msg_server.
    servers: BTreeMap<SocketAddr, u64>,
}

impl Progress {
    fn of(ws: &Workers) -> Self {
        let t = ws.ctl.totals();
        Self {
            logged_in: t.logged_in,
            refused: t.refused,
            failed: t.failed,
            open: t.open,
            disconnects: t.disconnects,
            servers: ws.ctl.open_by_server(),
        }
    }

    fn add(&mut self, o: &Self) {
        self.logged_in += o.logged_in;
        self.refused += o.refused;
        self.failed += o.failed;
        self.open += o.open;
        self.disconnects += o.disconnects;
        for (a, n) in &o.servers {
            *self.servers.entry(*a).or_default() += n;
        }
    }

    /// Connections whose login is over, one way or the other.
    fn done(&self) -> u64 {
        self.logged_in + self.refused + self.failed
    }
}

/// What a worker process writes, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Line {
    /// Its counters now.
    Progress(Progress),
    /// Its share has logged in (or given up): it waits for `hold`.
    Ready {
        /// Seconds its logins took.
        setup_s: f64,
    },
    /// Its exact figures, after `end`.
    Result(Box<ShareResult>),
}

/// A worker process's figures.
#[derive(Debug, Serialize, Deserialize)]
struct ShareResult {
    counts: Counts,
    /// [`Histogram::to_json`] of its login latencies.
    login_latency: Value,
    held_by_server: BTreeMap<SocketAddr, u64>,
    /// It stopped on an interrupt of its own.
    interrupted: bool,
}

/// `bench conns`.
pub(super) fn run_conns(
    args: &ConnsArgs,
    out: &mut dyn Write,
    stop: Stop<'_>,
) -> Result<(), BenchError> {
    check(args)?;
    match args.worker {
        Some(slot) => run_worker(args, slot, out, stop),
        None => coordinate(args, out, stop),
    }
}

fn check(args: &ConnsArgs) -> Result<(), BenchError> {
    if args.threads == 0 || args.connect_concurrency == 0 {
        return Err(BenchError::Args(
            "--threads and --connect-concurrency must be at least 1".into(),
        ));
    }
    if !(1..=MAX_PROCESSES).contains(&args.processes) {
        return Err(BenchError::Args(format!(
            "--processes must be between 1 and {MAX_PROCESSES}"
        )));
    }
    if args.processes > 1 && (args.connections as usize) < args.processes {
        return Err(BenchError::Args(
            "--processes must be at most --connections (every process opens a share)".into(),
        ));
    }
    if args.worker.is_some() && args.processes != 1 {
        return Err(BenchError::Args(
            "--worker is how --processes starts its copies; give only --processes".into(),
        ));
    }
    Ok(())
}

/// Connection indices of share `k` of `of`: contiguous, sizes differing
/// by at most one.
fn share(n: usize, of: usize, k: usize) -> Range<usize> {
    let at = |k: usize| (n as u128 * k as u128 / of.max(1) as u128) as usize;
    at(k)..at(k + 1)
}

/// Starts the workers of one process's share: returns them, the
/// connections they open and how many worker threads.
fn start_share(
    args: &ConnsArgs,
    target: &Target,
    range: Range<usize>,
) -> Result<(Workers, u64, usize), BenchError> {
    let common = &args.common;
    let workers = args.threads.min(range.len().max(1));
    let mut plans: Vec<WorkerPlan> = (0..workers).map(|_| WorkerPlan::default()).collect();
    for (j, i) in range.enumerate() {
        let addr = match target {
            Target::Direct(v) => Some(v[i % v.len()]),
            Target::Http(_) => None,
        };
        plans[j % workers].conns.push(PlanConn {
            addr,
            user: common.user(i as u64 + 1),
            global: j,
        });
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
        notice_timeout: Duration::from_secs(5),
        // Each connection asks login_server just before it connects, so
        // login_server balances by the load it sees as they log in (all
        // asked at once beforehand, every answer would name the same
        // least-loaded msg_server).
        login_http: match target {
            Target::Http(a) => Some(*a),
            Target::Direct(_) => None,
        },
    };
    let ws = Workers::start(plans.into_iter().map(|p| (p, None)).collect(), &cfg, 0)?;
    Ok((ws, expected, workers))
}

/// A worker process: its share, steered by stdin, reported on `out`.
fn run_worker(
    args: &ConnsArgs,
    slot: WorkerSlot,
    out: &mut dyn Write,
    stop: Stop<'_>,
) -> Result<(), BenchError> {
    let target = args.common.target()?;
    let _ = teamtalk_net::raise_fd_limit();
    let range = share(args.connections as usize, slot.of, slot.index);
    let (ws, expected, _) = start_share(args, &target, range)?;
    let commands = stdin_commands();
    let start = clock::now();
    let mut ready = false;
    let mut holding = false;
    'run: loop {
        let p = Progress::of(&ws);
        let became_ready = !ready
            && (p.done() >= expected
                || clock::now().duration_since(start) >= args.setup_timeout
                || stop.is_set());
        let mut lines = vec![Line::Progress(p)];
        if became_ready {
            ready = true;
            lines.push(Line::Ready {
                setup_s: clock::now().duration_since(start).as_secs_f64(),
            });
        }
        if write_lines(out, &lines).is_err() {
            // The coordinating process is gone.
            break;
        }
        loop {
            match commands.try_recv() {
                Ok(Cmd::Hold) if !holding => {
                    holding = true;
                    ws.ctl.set_phase(RUN);
                }
                Ok(Cmd::Hold) => {}
                Ok(Cmd::End) | Err(crossbeam_channel::TryRecvError::Disconnected) => break 'run,
                Err(crossbeam_channel::TryRecvError::Empty) => break,
            }
        }
        if stop.is_set() {
            break;
        }
        std::thread::sleep(PROGRESS_EVERY);
    }
    let res = ws.stop()?;
    let result = ShareResult {
        counts: res.counts,
        login_latency: res.login_latency.to_json(),
        held_by_server: res.held_by_server,
        interrupted: stop.is_set(),
    };
    write_lines(out, &[Line::Result(Box::new(result))])?;
    Ok(())
}

fn write_lines(out: &mut dyn Write, lines: &[Line]) -> Result<(), BenchError> {
    for l in lines {
        serde_json::to_writer(&mut *out, l)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// What the coordinating process tells a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Hold,
    End,
}

/// Lines read from stdin on a thread of their own; the channel closes
/// when stdin does.
fn stdin_commands() -> crossbeam_channel::Receiver<Cmd> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        loop {
            line.clear();
            match (&mut stdin).take(256).read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let cmd = match line.trim() {
                "hold" => Cmd::Hold,
                "end" => Cmd::End,
                _ => continue,
            };
            if tx.send(cmd).is_err() {
                break;
            }
        }
    });
    rx
}

/// The command line of worker `slot`: the same run, addresses resolved.
fn worker_argv(args: &ConnsArgs, target: &Target, slot: WorkerSlot) -> Vec<String> {
    let c = &args.common;
    let secs = |d: Duration| d.as_secs_f64().to_string();
    let mut v: Vec<String> = vec!["bench".into(), "conns".into()];
    match target {
        Target::Http(a) => v.push(format!("--http={a}")),
        Target::Direct(list) => v.extend(list.iter().map(|a| format!("--msg-server={a}"))),
    }
    v.extend([
        format!("--prefix={}", c.prefix),
        format!("--password={}", c.password),
        "--quiet".into(),
        format!("--connections={}", args.connections),
        format!("--threads={}", args.threads),
        format!("--connect-concurrency={}", args.connect_concurrency),
        format!("--heartbeat={}", secs(args.heartbeat)),
        format!("--setup-timeout={}", secs(args.setup_timeout)),
        format!("--duration={}", secs(args.duration)),
        format!("--worker={}/{}", slot.index, slot.of),
    ]);
    v
}

/// A worker process and what it reported.
struct Remote {
    index: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<RemoteState>>,
    reader: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct RemoteState {
    progress: Progress,
    ready: bool,
    result: Option<ShareResult>,
    /// Its stdout closed (it exited, or will).
    closed: bool,
    /// What was wrong with its output, if anything.
    bad: Option<String>,
}

impl Remote {
    fn spawn(exe: &PathBuf, argv: &[String], index: usize) -> std::io::Result<Self> {
        let mut child = Command::new(exe)
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let state = Arc::new(Mutex::new(RemoteState::default()));
        let st = Arc::clone(&state);
        let reader = stdout.map(|o| std::thread::spawn(move || read_worker(o, &st)));
        if reader.is_none()
            && let Ok(mut s) = state.lock()
        {
            s.closed = true;
        }
        Ok(Self {
            index,
            child,
            stdin,
            state,
            reader,
        })
    }

    fn send(&mut self, cmd: &str) {
        if let Some(s) = &mut self.stdin
            && writeln!(s, "{cmd}").and_then(|()| s.flush()).is_err()
        {
            self.stdin = None;
        }
    }

    fn with<T>(&self, f: impl FnOnce(&RemoteState) -> T) -> Option<T> {
        self.state.lock().ok().map(|s| f(&s))
    }

    /// Ready to hold, or gone.
    fn settled(&self) -> bool {
        self.with(|s| s.ready || s.closed).unwrap_or(true)
    }

    /// Waits for its result until `deadline`, then reaps it (killing it
    /// if it has not exited by then).
    fn finish(mut self, deadline: std::time::Instant) -> Result<ShareResult, String> {
        while clock::now() < deadline && !self.with(|s| s.closed).unwrap_or(true) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if clock::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let (result, bad) = match self.state.lock() {
            Ok(mut s) => (s.result.take(), s.bad.take()),
            Err(_) => (None, None),
        };
        result.ok_or_else(|| {
            let why = bad.unwrap_or_else(|| {
                status.map_or_else(
                    || "did not exit".to_owned(),
                    |st| format!("exited ({st}) without a result"),
                )
            });
            format!("bench process {}: {why}", self.index)
        })
    }
}

/// Reads a worker's lines into its state until its stdout closes.
fn read_worker(stdout: std::process::ChildStdout, state: &Mutex<RemoteState>) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut bad = None;
    loop {
        buf.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                bad = Some(format!("reading its output: {e}"));
                break;
            }
        }
        if buf.last() != Some(&b'\n') && buf.len() as u64 >= MAX_LINE {
            bad = Some(format!("an output line longer than {MAX_LINE} bytes"));
            break;
        }
        let line = match serde_json::from_slice::<Line>(&buf) {
            Ok(l) => l,
            Err(e) => {
                let text = String::from_utf8_lossy(&buf);
                bad.get_or_insert_with(|| {
                    format!(
                        "unexpected output {:?}: {e}",
                        crate::clip::clip(text.trim())
                    )
                });
                continue;
            }
        };
        let Ok(mut s) = state.lock() else { return };
        match line {
            Line::Progress(p) => s.progress = p,
            Line::Ready { .. } => s.ready = true,
            Line::Result(r) => s.result = Some(*r),
        }
    }
    if let Ok(mut s) = state.lock() {
        s.closed = true;
        if s.bad.is_none() {
            s.bad = bad;
        }
    }
}

/// The worker processes; any still running when this is dropped (an
/// error on the way) are killed and reaped.
struct Remotes(Vec<Remote>);

impl Remotes {
    fn progress(&self) -> Progress {
        let mut p = Progress::default();
        for r in &self.0 {
            if let Some(rp) = r.with(|s| s.progress.clone()) {
                p.add(&rp);
            }
        }
        p
    }

    fn send(&mut self, cmd: &str) {
        for r in &mut self.0 {
            r.send(cmd);
        }
    }

    fn ticks(&self) -> Option<u64> {
        self.0.iter().map(|r| cpu_ticks(Some(r.child.id()))).sum()
    }

    /// Ends them all and collects their results.
    fn finish(mut self) -> Vec<Result<ShareResult, String>> {
        self.send("end");
        for r in &mut self.0 {
            r.stdin = None;
        }
        let deadline = clock::now() + END_WAIT;
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|r| r.finish(deadline))
            .collect()
    }
}

impl Drop for Remotes {
    fn drop(&mut self) {
        for r in &mut self.0 {
            r.stdin = None;
            if !matches!(r.child.try_wait(), Ok(Some(_))) {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }
}

/// A `--server-pid` process and its samples.
#[derive(Debug)]
struct Watched {
    pid: u32,
    /// Its command name (`/proc/PID/comm`).
    name: String,
    /// Where it listens for TCP connections.
    listens: Vec<SocketAddr>,
    rss: [Option<u64>; 3],
    cpu: (Option<u64>, Option<u64>),
    /// (connections on its msg_servers, all connections, VmRSS bytes).
    samples: Vec<(f64, f64, f64)>,
    /// The run's msg_servers it is (it listens on their addresses).
    serves: BTreeSet<SocketAddr>,
}

/// Figures of one watched process.
#[derive(Debug, Clone, PartialEq)]
struct ServerFigures {
    /// The run's msg_servers it is; empty: figures per online user.
    msg_servers: Vec<SocketAddr>,
    /// Connections the figures are per, at the end of the hold.
    connections: u64,
    slope: Option<f64>,
    samples: usize,
    before_after: Option<f64>,
}

impl Watched {
    fn new(pid: u32) -> Self {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            pid,
            name,
            listens: listening(pid),
            rss: [rss_kib(pid), None, None],
            cpu: (None, None),
            samples: Vec::new(),
            serves: BTreeSet::new(),
        }
    }

    fn listens_on(&self, a: SocketAddr) -> bool {
        self.listens
            .iter()
            .any(|l| l.port() == a.port() && (l.ip() == a.ip() || l.ip().is_unspecified()))
    }

    fn sample(&mut self, p: &Progress) {
        let mut own = 0;
        for (a, n) in &p.servers {
            if self.listens_on(*a) {
                self.serves.insert(*a);
                own += n;
            }
        }
        if let Some(kib) = rss_kib(self.pid) {
            self.samples
                .push((own as f64, p.open as f64, kib as f64 * 1024.0));
        }
    }

    fn figures(&self, held: &BTreeMap<SocketAddr, u64>, held_total: u64) -> ServerFigures {
        let mut serves = self.serves.clone();
        serves.extend(held.keys().filter(|a| self.listens_on(**a)));
        let own = !serves.is_empty();
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|&(o, t, r)| (if own { o } else { t }, r))
            .collect();
        // The slope needs connections spread over the samples; too few
        // to say anything report none.
        let lo = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.0).fold(0.0, f64::max);
        let slope_v = if hi - lo >= 2.0 { slope(&points) } else { None };
        let connections = if own {
            serves.iter().filter_map(|a| held.get(a)).sum()
        } else {
            held_total
        };
        let before_after = match (self.rss[0], self.rss[2]) {
            (Some(a), Some(b)) if connections > 0 => {
                Some((b as f64 - a as f64) * 1024.0 / connections as f64)
            }
            _ => None,
        };
        ServerFigures {
            msg_servers: serves.into_iter().collect(),
            connections,
            slope: slope_v,
            samples: points.len(),
            before_after,
        }
    }
}

/// Least-squares slope of `y` over `x`: `None` with fewer than two
/// distinct `x`.
pub(super) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// TCP addresses process `pid` listens on, from `/proc` (Linux); empty
/// where they cannot be read (another user's process, another system).
fn listening(pid: u32) -> Vec<SocketAddr> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: HashSet<u64> = dir
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
        .flat_map(|table| listeners(&table, &inodes))
        .collect()
}

/// Listening sockets (state `0A`) of a `/proc/net/tcp` or `tcp6` table
/// whose inode is in `inodes`.
fn listeners(table: &str, inodes: &HashSet<u64>) -> Vec<SocketAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" || !inodes.contains(&inode.parse().ok()?) {
                return None;
            }
            proc_addr(local)
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word of the address is printed as the host-order number of its bytes.
fn proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(8 * i..8 * i + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The process the user started: its share, the worker processes', and
/// the summary of them all.
#[allow(clippy::too_many_lines)]
fn coordinate(args: &ConnsArgs, out: &mut dyn Write, stop: Stop<'_>) -> Result<(), BenchError> {
    let common = &args.common;
    let fd_limit = teamtalk_net::raise_fd_limit().ok();
    let target = common.target()?;
    let n = args.connections as usize;
    let procs = args.processes;
    let mut watched: Vec<Watched> = common.server_pid.iter().map(|&p| Watched::new(p)).collect();
    let mut remotes = Remotes(Vec::new());
    if procs > 1 {
        let exe = match &args.worker_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        for k in 1..procs {
            let argv = worker_argv(
                args,
                &target,
                WorkerSlot {
                    index: k,
                    of: procs,
                },
            );
            let r = Remote::spawn(&exe, &argv, k).map_err(|e| {
                BenchError::Io(std::io::Error::new(
                    e.kind(),
                    format!("starting bench process {k} ({}): {e}", exe.display()),
                ))
            })?;
            remotes.0.push(r);
        }
        common.progress(&format!(
            "{procs} bench processes, about {} connections each",
            thousands((n / procs) as u64)
        ));
    }
    let (ws, expected, workers) = start_share(args, &target, share(n, procs, 0))?;
    let all = |ws: &Workers, remotes: &Remotes| {
        let mut p = Progress::of(ws);
        p.add(&remotes.progress());
        p
    };

    // Setup: every share logs in; the servers' memory is sampled.
    let start = clock::now();
    let mut next_print = start + Duration::from_secs(1);
    let setup = loop {
        let local_done = Progress::of(&ws).done() >= expected;
        let remotes_done = remotes.0.iter().all(Remote::settled);
        let p = all(&ws, &remotes);
        for w in &mut watched {
            w.sample(&p);
        }
        let now = clock::now();
        let elapsed = now.duration_since(start);
        if (local_done && remotes_done) || elapsed >= args.setup_timeout || stop.is_set() {
            break elapsed;
        }
        if now >= next_print {
            next_print += Duration::from_secs(1);
            common.progress(&format!(
                "[setup {:>5.1}s] logged in {} of {n}, refused {}, failed {}",
                elapsed.as_secs_f64(),
                thousands(p.logged_in),
                p.refused,
                p.failed
            ));
        }
        std::thread::sleep(SAMPLE_EVERY);
    };
    for w in &mut watched {
        w.rss[1] = rss_kib(w.pid);
        w.cpu.0 = cpu_ticks(Some(w.pid));
    }

    // Hold: every process at once.
    let cpu0 = cpu_ticks(None).zip(remotes.ticks()).map(|(a, b)| a + b);
    remotes.send("hold");
    ws.ctl.set_phase(RUN);
    let hold_start = clock::now();
    let end = hold_start + args.duration;
    let mut tick = hold_start + Duration::from_secs(1);
    loop {
        let now = clock::now();
        if now >= end || stop.is_set() {
            break;
        }
        let p = all(&ws, &remotes);
        if p.logged_in > 0 && p.open == 0 {
            common.progress("every connection is gone; stopping");
            break;
        }
        if now >= tick {
            common.progress(&format!(
                "[hold {:>5.1} s] held {} disconnects {}",
                tick.duration_since(hold_start).as_secs_f64(),
                thousands(p.open),
                p.disconnects
            ));
            tick += Duration::from_secs(1);
        }
        let next = tick.min(end).min(now + Duration::from_millis(50));
        std::thread::sleep(next.saturating_duration_since(now));
    }
    let elapsed = clock::now().duration_since(hold_start);
    let cpu1 = cpu_ticks(None).zip(remotes.ticks()).map(|(a, b)| a + b);
    for w in &mut watched {
        w.cpu.1 = cpu_ticks(Some(w.pid));
        w.rss[2] = rss_kib(w.pid);
    }

    // Results: this process's share and every worker's.
    let remote_results = std::mem::replace(&mut remotes, Remotes(Vec::new())).finish();
    let mut res: WorkerResult = ws.stop()?;
    let mut procs_failed = 0u64;
    let mut remote_interrupted = false;
    for r in remote_results {
        let parsed = r.and_then(|s| {
            Histogram::from_json(&s.login_latency)
                .map(|h| (s, h))
                .ok_or_else(|| "a login latency histogram that does not read back".to_owned())
        });
        match parsed {
            Ok((s, h)) => {
                res.counts.merge(&s.counts);
                res.login_latency.merge(&h);
                for (a, k) in s.held_by_server {
                    *res.held_by_server.entry(a).or_default() += k;
                }
                remote_interrupted |= s.interrupted;
            }
            Err(why) => {
                procs_failed += 1;
                res.counts.first_error.get_or_insert(why);
            }
        }
    }
    let interrupted = stop.is_set() || remote_interrupted;
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
    setup_figures(&mut r, &res, 0, setup);
    r.num(
        "logins_per_s",
        "logins during setup",
        rate(c.logged_in, setup),
        "logins/s",
    );
    r.secs("hold_s", "held for", Some(elapsed.as_secs_f64()));
    r.int("held", "held at the end", c.held);
    r.int("disconnects", "disconnects while held", c.disconnects);
    r.int("kicked", "kicked", c.kicked);
    r.int("heartbeats", "heartbeats sent", c.heartbeats);
    let figures: Vec<ServerFigures> = watched
        .iter()
        .map(|w| w.figures(&res.held_by_server, c.held))
        .collect();
    if let (Some(w), Some(f)) = (watched.first(), figures.first()) {
        // The first --server-pid under the keys a one-server run always had.
        let kib = |v: Option<u64>| v.map(|k| k as f64);
        r.num(
            "server_rss_before_kib",
            "server VmRSS before",
            kib(w.rss[0]),
            "KiB",
        );
        r.num(
            "server_rss_logged_in_kib",
            "server VmRSS all logged in",
            kib(w.rss[1]),
            "KiB",
        );
        r.num(
            "server_rss_after_kib",
            "server VmRSS after hold",
            kib(w.rss[2]),
            "KiB",
        );
        r.num(
            "server_bytes_per_conn",
            "server bytes/connection (RSS slope)",
            f.slope,
            "bytes",
        );
        r.int(
            "server_rss_samples",
            "RSS samples in the slope",
            f.samples as u64,
        );
        r.num(
            "server_bytes_per_conn_before_after",
            "server bytes/connection (after-before)",
            f.before_after,
            "bytes",
        );
    }
    r.int("processes", "bench processes", procs as u64);
    r.int(
        "processes_failed",
        "bench processes without a result",
        procs_failed,
    );
    spread_figures(&mut r, &res.held_by_server);
    if !watched.is_empty() {
        server_figures(&mut r, &watched, &figures, elapsed);
    }
    cpu_figures(
        &mut r,
        common,
        (cpu0, cpu1),
        (
            watched.iter().map(|w| w.cpu.0).sum(),
            watched.iter().map(|w| w.cpu.1).sum(),
        ),
        elapsed,
    );
    let problems = [
        ("login refusals", c.login_refused),
        ("login failures", c.login_failed),
        ("disconnects", c.disconnects + c.kicked),
        ("bench processes without a result", procs_failed),
    ];
    outcome(&mut r, interrupted, &problems);
    if let Some(e) = &c.first_error {
        r.text("first_error", "first error", e.clone());
    }
    r.write(common.json, out)?;
    verdict(interrupted, &problems)
}

/// Connections held per msg_server, and how far apart the most and the
/// least loaded are.
fn spread_figures(r: &mut Report, held: &BTreeMap<SocketAddr, u64>) {
    r.int("msg_servers", "msg_servers used", held.len() as u64);
    r.text(
        "msg_server_spread",
        "connections per msg_server",
        held.iter()
            .map(|(a, k)| format!("{a}={k}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    r.value(
        "msg_server_held",
        "held per msg_server (JSON object)",
        Value::Object(
            held.iter()
                .map(|(a, k)| (a.to_string(), Value::from(*k)))
                .collect(),
        ),
        format!("{} msg_servers", held.len()),
    );
    let total: u64 = held.values().sum();
    let imbalance = (!held.is_empty() && total > 0).then(|| {
        let max = held.values().copied().max().unwrap_or(0) as f64;
        let min = held.values().copied().min().unwrap_or(0) as f64;
        (max - min) / (total as f64 / held.len() as f64) * 100.0
    });
    r.num(
        "msg_server_imbalance_pct",
        "(most - least) / mean per msg_server",
        imbalance,
        "%",
    );
}

/// Every watched process: one table line each, one `servers` array in
/// the JSON.
fn server_figures(r: &mut Report, watched: &[Watched], figures: &[ServerFigures], held: Duration) {
    let mut rows = Vec::new();
    for (w, f) in watched.iter().zip(figures) {
        let per = if f.msg_servers.is_empty() {
            "online_user"
        } else {
            "connection"
        };
        let cpu = cpu_pct(w.cpu.0, w.cpu.1, held);
        rows.push(json!({
            "pid": w.pid,
            "name": w.name,
            "msg_servers": f.msg_servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "per": per,
            "connections": f.connections,
            "rss_before_kib": w.rss[0],
            "rss_logged_in_kib": w.rss[1],
            "rss_after_kib": w.rss[2],
            "bytes_per_conn": f.slope.map(|v| (v * 100.0).round() / 100.0),
            "samples": f.samples,
            "bytes_per_conn_before_after": f.before_after.map(|v| (v * 100.0).round() / 100.0),
            "cpu_pct": cpu.map(|v| (v * 100.0).round() / 100.0),
        }));
        let kib = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), thousands);
        let what = if f.msg_servers.is_empty() {
            "online user".to_owned()
        } else {
            format!(
                "connection on {}",
                f.msg_servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        r.table_only(
            &format!("server {} {}", w.pid, w.name),
            format!(
                "{} bytes per {what} (slope of {} samples; {} held); VmRSS {} → {} → {} KiB; CPU {}",
                f.slope.map_or_else(|| "-".to_owned(), real),
                f.samples,
                thousands(f.connections),
                kib(w.rss[0]),
                kib(w.rss[1]),
                kib(w.rss[2]),
                cpu.map_or_else(|| "-".to_owned(), |c| format!("{} %", real(c))),
            ),
        );
    }
    r.value(
        "servers",
        "watched server processes",
        Value::Array(rows),
        format!("{} (above)", watched.len()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_least_squares() {
        assert_eq!(slope(&[]), None);
        assert_eq!(slope(&[(1.0, 5.0), (1.0, 7.0)]), None);
        let s = slope(&[(0.0, 100.0), (10.0, 8_100.0), (20.0, 16_100.0)]).unwrap();
        assert!((s - 800.0).abs() < 1e-9, "{s}");
        // A step from glibc's retained heap does not dominate the fit
        // the way it dominates one before/after difference.
        let pts: Vec<(f64, f64)> = (0..100)
            .map(|i| {
                (
                    f64::from(i),
                    1_000.0 * f64::from(i) + if i == 0 { 500_000.0 } else { 0.0 },
                )
            })
            .collect();
        let s = slope(&pts).unwrap();
        assert!(s > 500.0 && s < 1_500.0, "{s}");
    }

    #[test]
    fn shares_cover_every_connection_once() {
        for (n, of) in [(100, 2), (7, 3), (100_000, 6), (5, 5), (64, 64)] {
            let mut next = 0;
            for k in 0..of {
                let r = share(n, of, k);
                assert_eq!(r.start, next, "{n}/{of}");
                assert!(
                    r.len() == n / of || r.len() == n / of + 1,
                    "{n}/{of}: {r:?}"
                );
                next = r.end;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn proc_net_tcp_addresses_parse() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
0: 0100007F:9470 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n   \
1: 0100007F:9471 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0 100 0 0 10 0\n   \
2: 0100007F:9470 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0 100 0 0 10 0\n";
        let inodes: HashSet<u64> = [4242, 4243].into_iter().collect();
        let got = listeners(table, &inodes);
        assert_eq!(got, vec!["127.0.0.1:38000".parse().unwrap()]);
        assert_eq!(
            proc_addr("00000000000000000000000001000000:1F90"),
            Some("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            proc_addr("0000000000000000FFFF00000100007F:0050"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        for bad in [
            "",
            "x",
            "0100007F",
            "0100007Z:0050",
            "01007F:0050",
            "0100007F:FFFFF",
        ] {
            assert_eq!(proc_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_process_is_found_listening() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut w = Watched::new(std::process::id());
        assert!(w.listens_on(addr), "{addr} in {:?}", w.listens);
        assert!(!w.listens_on(SocketAddr::new(addr.ip(), 1)));
        // Its samples count its own msg_server's connections; a process
        // that is no msg_server of the run counts them all.
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for k in 1..=10u64 {
            w.sample(&Progress {
                open: 3 * k,
                servers: [(addr, k), (other, 2 * k)].into_iter().collect(),
                ..Progress::default()
            });
        }
        let held: BTreeMap<SocketAddr, u64> = [(addr, 10), (other, 20)].into_iter().collect();
        let f = w.figures(&held, 30);
        assert_eq!(
            (f.msg_servers, f.connections, f.samples),
            (vec![addr], 10, 10)
        );
        let mut route = Watched::new(std::process::id());
        route.listens.clear();
        route.sample(&Progress {
            open: 30,
            servers: held.clone(),
            ..Progress::default()
        });
        let f = route.figures(&held, 30);
        assert!(f.msg_servers.is_empty());
        assert_eq!(f.connections, 30);
    }

    fn conns_args(argv: &[&str]) -> ConnsArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
        match cli.command {
            crate::cli::Commands::Bench(b) => match b.kind {
                super::super::BenchKind::Conns(a) => a,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn worker_command_lines_parse_back() {
        let args = conns_args(&[
            "teamtalk",
            "bench",
            "conns",
            "--msg-server",
            "127.0.0.1:5",
            "--msg-server",
            "127.0.0.1:6",
            "--prefix=-odd",
            "--password",
            "p w=x",
            "--connections",
            "100",
            "--processes",
            "2",
            "--heartbeat",
            "0.25",
            "--server-pid",
            "1",
        ]);
        let target = args.common.target().unwrap();
        let slot = WorkerSlot { index: 1, of: 2 };
        let mut argv = vec!["teamtalk".to_owned()];
        argv.extend(worker_argv(&args, &target, slot));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let back = conns_args(&argv);
        assert_eq!(back.worker, Some(slot));
        assert_eq!(back.processes, 1);
        assert_eq!(back.common.msg_server, ["127.0.0.1:5", "127.0.0.1:6"]);
        assert_eq!(
            (back.common.prefix.as_str(), back.common.password.as_str()),
            ("-odd", "p w=x")
        );
        assert!(back.common.quiet && back.common.server_pid.is_empty());
        assert_eq!(back.connections, 100);
        assert_eq!(back.heartbeat, Duration::from_millis(250));
        assert_eq!(
            (
                back.threads,
                back.connect_concurrency,
                back.setup_timeout,
                back.duration
            ),
            (
                args.threads,
                args.connect_concurrency,
                args.setup_timeout,
                args.duration
            )
        );
        check(&back).expect("a worker's arguments are valid");
    }

    #[test]
    fn bad_spreads_are_refused() {
        let base = [
            "teamtalk",
            "bench",
            "conns",
            "--prefix",
            "p",
            "--password",
            "x",
        ];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            check(&conns_args(&v))
        };
        assert!(with(&["--processes", "2", "--connections", "10"]).is_ok());
        for extra in [
            &["--processes", "0"][..],
            &["--processes", "65"],
            &["--processes", "3", "--connections", "2"],
            &["--processes", "2", "--worker", "1/2"],
            &["--threads", "0"],
        ] {
            assert!(matches!(with(extra), Err(BenchError::Args(_))), "{extra:?}");
        }
        use clap::Parser;
        for slot in ["2/2", "0/1", "1/65", "x/2", "1", "1/2/3", "-1/2"] {
            let mut v = base.to_vec();
            v.extend(["--worker", slot]);
            assert!(crate::cli::Cli::try_parse_from(v).is_err(), "{slot}");
        }
    }

    #[test]
    fn worker_lines_round_trip() {
        let p = Progress {
            logged_in: 3,
            open: 2,
            servers: [("127.0.0.1:9".parse().unwrap(), 2)].into_iter().collect(),
            ..Progress::default()
        };
        let text = serde_json::to_string(&Line::Progress(p.clone())).unwrap();
        assert!(text.contains("\"127.0.0.1:9\":2"), "{text}");
        match serde_json::from_str::<Line>(&text).unwrap() {
            Line::Progress(back) => assert_eq!(back, p),
            other => panic!("{other:?}"),
        }
        assert!(serde_json::from_str::<Line>("{\"t\":\"nonsense\"}").is_err());
    }
}
