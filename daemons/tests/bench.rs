//! `teamtalk bench` against an in-process cluster on 127.0.0.1 (kernel
//! ports), through the same argument parsing as the command line and with
//! the `--json` output parsed back. Only what must hold is asserted (no
//! message lost or duplicated, every send acked, every login accepted),
//! never rates.

use std::time::Duration;

use clap::Parser;
use daemons::bench::{BenchError, run};
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
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SystemConfig::ephemeral(dir.path(), 1);
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
        "teamtalk", "bench", kind, "--http", &http, "--prefix", "b", "--quiet", "--json",
    ];
    if !extra.contains(&"--password") {
        argv.extend(["--password", "pw"]);
    }
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).expect("arguments parse").command {
        Commands::Bench(args) => args,
        other => panic!("not a bench command: {other:?}"),
    }
}

fn bench(c: &Cluster, kind: &str, extra: &[&str]) -> Value {
    let args = bench_args(c, kind, extra);
    let mut out = Vec::new();
    run(&args, &mut out).expect("bench runs");
    let text = String::from_utf8(out).expect("utf-8");
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

    let v = bench(
        &c,
        "login",
        &["--concurrency", "1", "--count", "3", "--password", "wrong"],
    );
    assert_eq!((n(&v, "count"), n(&v, "refused")), (0, 3), "{v}");
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
}

#[test]
fn group_bench_parses_but_refuses_without_group_support() {
    let c = cluster();
    let args = bench_args(&c, "group", &["--members", "5", "--groups", "2"]);
    let mut out = Vec::new();
    let err = run(&args, &mut out).expect_err("group is not supported yet");
    assert!(matches!(err, BenchError::GroupUnsupported), "{err}");
    assert!(err.to_string().contains("group support"), "{err}");
    assert!(out.is_empty(), "nothing measured, nothing printed");
}
