//! `teamtalk bench` against an in-process cluster on 127.0.0.1 (kernel
//! ports), through the same argument parsing as the command line and with
//! the `--json` output parsed back. Only what must hold is asserted (no
//! message lost or duplicated, every send acked, every login accepted,
//! the run's verdict), never rates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use daemons::bench::{BenchError, run, run_until};
use daemons::cli::{Cli, Commands};
use daemons::password::{HashParams, md5_hex};
use daemons::system::{self, RunningSystem, SystemConfig};
use serde_json::Value;

const USERS: u32 = 16;

struct Cluster {
    sys: RunningSystem,
    _dir: tempfile::TempDir,
}

fn cluster() -> Cluster {
    cluster_of(1)
}

fn cluster_of(msg_servers: u16) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SystemConfig::ephemeral(dir.path(), msg_servers);
    cfg.hash_params = HashParams::INSECURE_FAST;
    let sys = system::start(cfg).expect("system starts");
    assert!(
        sys.wait_ready(Duration::from_secs(10)),
        "msg_server registered"
    );
    sys.store()
        .seed_users("b", USERS, &md5_hex(b"pw"))
        .expect("seed users");
    Cluster { sys, _dir: dir }
}

fn bench_args(c: &Cluster, kind: &str, extra: &[&str]) -> daemons::bench::BenchArgs {
    let http = c.sys.http_addr().to_string();
    let mut argv = vec![
        "teamtalk", "bench", kind, "--prefix", "b", "--quiet", "--json",
    ];
    if !extra.contains(&"--msg-server") {
        argv.extend(["--http", &http]);
    }
    if !extra.contains(&"--password") {
        argv.extend(["--password", "pw"]);
    }
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).expect("arguments parse").command {
        Commands::Bench(args) => args,
        other => panic!("not a bench command: {other:?}"),
    }
}

/// A clean run's summary.
fn bench(c: &Cluster, kind: &str, extra: &[&str]) -> Value {
    let (v, result) = bench_result(c, kind, extra);
    if let Err(e) = result {
        panic!("bench run not clean: {e}: {v}");
    }
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["interrupted"], false, "{v}");
    v
}

/// Any run's summary and verdict.
fn bench_result(c: &Cluster, kind: &str, extra: &[&str]) -> (Value, Result<(), BenchError>) {
    let args = bench_args(c, kind, extra);
    let mut out = Vec::new();
    let result = run(&args, &mut out);
    (summary(&out), result)
}

fn summary(out: &[u8]) -> Value {
    let text = String::from_utf8(out.to_vec()).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(&text).expect("valid JSON")
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

#[test]
fn msg_bench_delivers_every_message_once_and_every_send_is_acked() {
    let c = cluster();
    let v = bench(
        &c,
        "msg",
        &[
            "--pairs",
            "4",
            "--window",
            "8",
            "--size",
            "64",
            "--duration",
            "2",
            "--threads",
            "2",
        ],
    );
    assert_eq!(n(&v, "logged_in"), 8, "{v}");
    assert_eq!(n(&v, "pairs_active"), 4, "{v}");
    let sent = n(&v, "sent");
    assert!(n(&v, "delivered") > 0, "{v}");
    assert_eq!(n(&v, "delivered"), sent, "{v}");
    assert_eq!(n(&v, "acked"), sent, "{v}");
    for zero in [
        "lost",
        "duplicates",
        "unacked",
        "refused",
        "login_refused",
        "login_failed",
        "foreign",
        "disconnects",
        "duplicate_acks",
    ] {
        assert_eq!(n(&v, zero), 0, "{zero} in {v}");
    }
    let p50 = v["latency_p50_us"].as_f64().expect("latency measured");
    let p99 = v["latency_p99_us"].as_f64().expect("p99");
    let max = v["latency_max_us"].as_f64().expect("max");
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{v}");
    assert!(v["bench_cpu_pct"].as_f64().is_some(), "{v}");
}

#[test]
fn msg_bench_paces_sends_to_the_offered_rate() {
    let c = cluster();
    let v = bench(
        &c,
        "msg",
        &["--pairs", "2", "--rate", "200", "--duration", "1"],
    );
    let sent = n(&v, "sent");
    let secs = v["duration_s"].as_f64().expect("duration");
    assert!(sent > 0, "{v}");
    // Pacing never sends ahead of the rate (a little slack for the
    // moment workers notice the end of the run).
    assert!(
        sent as f64 <= 200.0 * (secs + 0.1) + 2.0,
        "{sent} sent in {secs} s"
    );
    assert_eq!(n(&v, "lost"), 0, "{v}");
    assert_eq!(n(&v, "acked"), sent, "{v}");
}

#[test]
fn login_bench_counts_logins_and_refusals() {
    let c = cluster();
    let v = bench(
        &c,
        "login",
        &["--concurrency", "2", "--users", "4", "--count", "20"],
    );
    assert_eq!(n(&v, "count"), 20, "{v}");
    assert_eq!(n(&v, "refused"), 0, "{v}");
    assert_eq!(n(&v, "failed"), 0, "{v}");
    assert_eq!(n(&v, "unclean_logouts"), 0, "{v}");
    assert!(v["login_latency_p99_us"].as_f64().is_some(), "{v}");

    // The slots spread over two reactor threads record into their own
    // totals; the summary merges every one of them.
    let v = bench(
        &c,
        "login",
        &[
            "--concurrency",
            "3",
            "--users",
            "6",
            "--count",
            "30",
            "--threads",
            "2",
        ],
    );
    assert_eq!(n(&v, "count"), 30, "{v}");
    assert_eq!((n(&v, "refused"), n(&v, "failed")), (0, 0), "{v}");
    assert!(v["cycle_latency_p50_us"].as_f64().is_some(), "{v}");

    // Refusals: the summary is written, then the run fails (exit 1).
    let (v, result) = bench_result(
        &c,
        "login",
        &["--concurrency", "1", "--count", "3", "--password", "wrong"],
    );
    assert_eq!((n(&v, "count"), n(&v, "refused")), (0, 3), "{v}");
    assert_eq!(v["clean"], false, "{v}");
    match result {
        Err(BenchError::Unclean(why)) => assert!(why.contains("3 refused"), "{why}"),
        other => panic!("refusals must fail the run: {other:?}"),
    }
}

#[test]
fn conns_bench_holds_every_connection() {
    let c = cluster();
    let pid = std::process::id().to_string();
    let v = bench(
        &c,
        "conns",
        &[
            "--connections",
            "6",
            "--duration",
            "1",
            "--heartbeat",
            "0.2",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(n(&v, "logged_in"), 6, "{v}");
    assert_eq!(n(&v, "held"), 6, "{v}");
    assert_eq!(n(&v, "disconnects"), 0, "{v}");
    assert!(n(&v, "heartbeats") >= 6, "every connection heartbeats: {v}");
    assert!(v["server_rss_after_kib"].as_f64().is_some(), "{v}");
    assert!(n(&v, "server_rss_samples") >= 1, "{v}");
    // The slope is a number or absent (too few connections to fit one),
    // never a missing key.
    let slope = &v["server_bytes_per_conn"];
    assert!(slope.is_null() || slope.is_f64(), "{v}");
}

#[test]
fn an_unreachable_target_fails_without_a_summary() {
    let c = cluster();
    let args = bench_args(
        &c,
        "msg",
        &[
            "--msg-server",
            "127.0.0.1:1",
            "--pairs",
            "1",
            "--duration",
            "1",
        ],
    );
    let mut out = Vec::new();
    let err = run(&args, &mut out).expect_err("nothing to connect to");
    assert!(matches!(err, BenchError::NoLogin(_)), "{err}");
}

#[test]
fn an_interrupted_run_writes_what_it_measured() {
    let c = cluster();
    let args = bench_args(
        &c,
        "msg",
        &["--pairs", "2", "--duration", "60", "--window", "4"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let ctrl_c = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        flag.store(true, Ordering::Relaxed);
    });
    let started = daemons::clock::now();
    let mut out = Vec::new();
    let result = run_until(&args, &mut out, &stop);
    ctrl_c.join().expect("timer thread");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the run stopped at the interrupt"
    );
    assert!(matches!(result, Err(BenchError::Interrupted)), "{result:?}");
    let v = summary(&out);
    assert_eq!(v["interrupted"], true, "{v}");
    assert_eq!(v["clean"], false, "{v}");
    assert_eq!(n(&v, "logged_in"), 4, "{v}");
    assert!(n(&v, "sent") > 0, "{v}");
    // What was in flight at the interrupt is waited for, not called lost.
    assert_eq!(n(&v, "lost"), 0, "{v}");
    assert_eq!(n(&v, "duplicates"), 0, "{v}");
    assert!(v["duration_s"].as_f64().is_some_and(|d| d < 30.0), "{v}");
}

#[test]
fn a_run_whose_connections_are_all_gone_stops_and_fails() {
    let c = cluster();
    let args = bench_args(&c, "msg", &["--pairs", "2", "--duration", "60"]);
    let Cluster { sys, _dir } = c;
    let servers_down = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        sys.shutdown();
        _dir
    });
    let started = daemons::clock::now();
    let mut out = Vec::new();
    let result = run(&args, &mut out);
    let _dir = servers_down.join().expect("shutdown thread");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the run stopped when its connections were gone"
    );
    let v = summary(&out);
    assert_eq!(n(&v, "disconnects"), 4, "{v}");
    assert_eq!(v["clean"], false, "{v}");
    match result {
        Err(BenchError::Unclean(why)) => assert!(why.contains("disconnects"), "{why}"),
        other => panic!("lost connections must fail the run: {other:?}"),
    }
}

#[test]
fn group_bench_delivers_every_message_to_every_other_member_once() {
    let c = cluster_of(2);
    // Two groups of 6 over two msg_servers, straight to them (members in
    // turn) so both host members of both groups.
    let addrs: Vec<String> = c.sys.msg_addrs().iter().map(ToString::to_string).collect();
    let v = bench(
        &c,
        "group",
        &[
            "--msg-server",
            &addrs[0],
            "--msg-server",
            &addrs[1],
            "--groups",
            "2",
            "--members",
            "6",
            "--senders",
            "2",
            "--window",
            "4",
            "--size",
            "64",
            "--duration",
            "1.5",
        ],
    );
    assert_eq!(n(&v, "logged_in"), 12, "{v}");
    assert_eq!(n(&v, "groups_created"), 2, "{v}");
    assert_eq!(n(&v, "members_ready"), 12, "{v}");
    assert_eq!(n(&v, "msg_servers"), 2, "{v}");
    let sent = n(&v, "sent");
    assert!(sent > 0, "{v}");
    // Every message reaches the five other members of its group.
    assert_eq!(n(&v, "expected"), 5 * sent, "{v}");
    assert_eq!(n(&v, "delivered"), 5 * sent, "{v}");
    assert_eq!(n(&v, "acked"), sent, "{v}");
    for zero in [
        "lost",
        "duplicates",
        "unsent",
        "unacked",
        "refused",
        "login_failed",
        "members_not_ready",
        "foreign",
        "disconnects",
    ] {
        assert_eq!(n(&v, zero), 0, "{zero} in {v}");
    }
    let p50 = v["latency_p50_us"].as_f64().expect("latency measured");
    assert!(p50 > 0.0, "{v}");
}

#[test]
fn group_bench_through_login_server_assigns_every_member() {
    let c = cluster_of(2);
    let v = bench(
        &c,
        "group",
        &["--members", "8", "--senders", "1", "--duration", "1"],
    );
    assert_eq!(n(&v, "members_ready"), 8, "{v}");
    assert_eq!(n(&v, "lost"), 0, "{v}");
    assert_eq!(n(&v, "duplicates"), 0, "{v}");
    assert!(n(&v, "delivered") > 0, "{v}");
    assert_eq!(n(&v, "delivered"), 7 * n(&v, "sent"), "{v}");
    // Assigned by login_server as they connect (which of the two it
    // picks depends on the load reports that reached it by then).
    let spread = v["msg_server_spread"].as_str().expect("spread");
    let placed: u64 = spread
        .split(' ')
        .map(|s| {
            s.rsplit('=')
                .next()
                .and_then(|k| k.parse::<u64>().ok())
                .expect("addr=count")
        })
        .sum();
    assert_eq!(placed, 8, "{v}");
    assert!((1..=2).contains(&n(&v, "msg_servers")), "{v}");
}

#[test]
fn group_bench_refuses_bad_arguments() {
    let c = cluster();
    for extra in [
        &["--members", "1"][..],
        &["--members", "4", "--senders", "5"],
        &["--members", "4", "--size", "8"],
    ] {
        let args = bench_args(&c, "group", extra);
        let mut out = Vec::new();
        let err = run(&args, &mut out).expect_err("refused");
        assert!(matches!(err, BenchError::Args(_)), "{extra:?}: {err}");
        assert!(out.is_empty(), "nothing measured, nothing printed");
    }
}

/// `bench conns` arguments for users `PREFIX1…`, spreading over worker
/// processes that run the `teamtalk` binary built with these tests.
fn conns_args(prefix: &str, extra: &[&str]) -> daemons::bench::BenchArgs {
    let mut argv = vec![
        "teamtalk",
        "bench",
        "conns",
        "--prefix",
        prefix,
        "--password",
        "pw",
        "--quiet",
        "--json",
        "--worker-exe",
        env!("CARGO_BIN_EXE_teamtalk"),
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).expect("arguments parse").command {
        Commands::Bench(args) => args,
        other => panic!("not a bench command: {other:?}"),
    }
}

fn run_conns(args: &daemons::bench::BenchArgs) -> (Value, Result<(), BenchError>) {
    let mut out = Vec::new();
    let result = run(args, &mut out);
    (summary(&out), result)
}

#[test]
fn conns_bench_spreads_over_processes_and_msg_servers() {
    let c = cluster_of(2);
    c.sys
        .store()
        .seed_users("p", 100, &md5_hex(b"pw"))
        .expect("seed users");
    let addrs: Vec<String> = c.sys.msg_addrs().iter().map(ToString::to_string).collect();
    let pid = std::process::id().to_string();
    let args = conns_args(
        "p",
        &[
            "--msg-server",
            &addrs[0],
            "--msg-server",
            &addrs[1],
            "--connections",
            "100",
            "--processes",
            "2",
            "--duration",
            "1",
            "--heartbeat",
            "0.3",
            "--server-pid",
            &pid,
        ],
    );
    let (v, result) = run_conns(&args);
    result.unwrap_or_else(|e| panic!("not clean: {e}: {v}"));
    assert_eq!(n(&v, "processes"), 2, "{v}");
    assert_eq!(n(&v, "processes_failed"), 0, "{v}");
    assert_eq!(n(&v, "logged_in"), 100, "{v}");
    assert_eq!(n(&v, "held"), 100, "{v}");
    assert_eq!(n(&v, "disconnects"), 0, "{v}");
    assert_eq!(n(&v, "login_failed"), 0, "{v}");
    assert!(
        n(&v, "heartbeats") >= 100,
        "every connection heartbeats: {v}"
    );
    // Connections take the addresses in turn, whichever process opens them.
    assert_eq!(n(&v, "msg_servers"), 2, "{v}");
    for a in &addrs {
        assert_eq!(v["msg_server_held"][a], 50, "{a} in {v}");
    }
    assert!(
        v["login_latency_p50_us"].as_f64().is_some_and(|l| l > 0.0),
        "both processes' latencies: {v}"
    );
    // This test process is both msg_servers: its figures are per
    // connection on them, over all 100.
    let s = &v["servers"][0];
    assert_eq!(s["pid"], std::process::id(), "{v}");
    assert_eq!(s["per"], "connection", "{v}");
    assert_eq!(s["connections"], 100, "{v}");
    let mut served: Vec<&str> = s["msg_servers"]
        .as_array()
        .expect("msg_servers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    served.sort_unstable();
    let mut want: Vec<&str> = addrs.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(served, want, "{v}");
    assert!(n(s, "samples") >= 1, "{v}");
    assert!(v["server_rss_after_kib"].as_f64().is_some(), "{v}");
}

#[test]
fn conns_bench_processes_through_login_server() {
    let c = cluster_of(2);
    c.sys
        .store()
        .seed_users("h", 60, &md5_hex(b"pw"))
        .expect("seed users");
    let http = c.sys.http_addr().to_string();
    let args = conns_args(
        "h",
        &[
            "--http",
            &http,
            "--connections",
            "60",
            "--processes",
            "3",
            "--duration",
            "0.5",
        ],
    );
    let (v, result) = run_conns(&args);
    result.unwrap_or_else(|e| panic!("not clean: {e}: {v}"));
    assert_eq!(n(&v, "processes"), 3, "{v}");
    assert_eq!(n(&v, "held"), 60, "{v}");
    // login_server counts each answer against the msg_server it names
    // until that one reports the login, so even a burst of clients that
    // all ask before any has logged in is split evenly.
    let held = v["msg_server_held"].as_object().expect("per msg_server");
    assert_eq!(held.len(), 2, "{v}");
    for a in c.sys.msg_addrs() {
        assert_eq!(held[&a.to_string()], 30, "{a} in {v}");
    }
    assert_eq!(n(&v, "msg_servers"), 2, "{v}");
    assert_eq!(v["msg_server_imbalance_pct"], 0.0, "{v}");
}

#[test]
fn conns_bench_counts_a_worker_process_that_gives_no_result() {
    let c = cluster();
    let http = c.sys.http_addr().to_string();
    let mut args = conns_args(
        "b",
        &[
            "--http",
            &http,
            "--connections",
            "12",
            "--processes",
            "2",
            "--duration",
            "0.5",
        ],
    );
    // A "copy" that exits at once without a word.
    if let daemons::bench::BenchKind::Conns(a) = &mut args.kind {
        a.worker_exe = Some("true".into());
    }
    let (v, result) = run_conns(&args);
    assert_eq!(n(&v, "processes_failed"), 1, "{v}");
    assert_eq!(n(&v, "held"), 6, "this process's share still ran: {v}");
    assert_eq!(v["clean"], false, "{v}");
    match result {
        Err(BenchError::Unclean(why)) => assert!(why.contains("without a result"), "{why}"),
        other => panic!("a missing share must fail the run: {other:?}"),
    }
    assert!(
        v["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("bench process 1")),
        "{v}"
    );
}

#[test]
fn conns_bench_refuses_bad_spreads_without_output() {
    let c = cluster();
    let http = c.sys.http_addr().to_string();
    for extra in [
        &["--processes", "0"][..],
        &["--processes", "5", "--connections", "4"],
        &["--processes", "65"],
    ] {
        let mut argv = vec!["--http", &http];
        argv.extend_from_slice(extra);
        let mut out = Vec::new();
        let err = run(&conns_args("b", &argv), &mut out).expect_err("refused");
        assert!(matches!(err, BenchError::Args(_)), "{extra:?}: {err}");
        assert!(out.is_empty(), "nothing measured, nothing printed");
    }
    let mut args = conns_args(
        "b",
        &["--http", &http, "--connections", "4", "--processes", "2"],
    );
    if let daemons::bench::BenchKind::Conns(a) = &mut args.kind {
        a.worker_exe = Some("/nonexistent/teamtalk".into());
    }
    let mut out = Vec::new();
    let err = run(&args, &mut out).expect_err("no such executable");
    assert!(
        matches!(err, BenchError::Io(_)) && err.to_string().contains("bench process 1"),
        "{err}"
    );
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}
