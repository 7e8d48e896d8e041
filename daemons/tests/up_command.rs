//! `teamtalk up` as a newcomer meets it: ports that clash, ports moved
//! together or one by one, impossible arguments, and a start-up log that
//! says what the banner does not.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use daemons::system::SystemConfig;

fn teamtalk(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_teamtalk"));
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    c
}

fn fails_with(c: &mut Command) -> String {
    let out = c.output().expect("run teamtalk");
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn zero_msg_servers_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails_with(teamtalk(dir.path()).args(["up", "--msg-servers", "0"]));
    assert!(
        err.contains("--msg-servers") && err.contains("1..=64"),
        "{err}"
    );
}

#[test]
fn a_port_clash_names_the_daemon_and_port_and_suggests_the_ways_out() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = fails_with(teamtalk(dir.path()).args([
        "up",
        "--any-ports",
        "--no-admin",
        "--port",
        &format!("route={port}"),
    ]));
    assert!(err.contains("route_server"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        err.contains("--any-ports") && err.contains("--port-offset"),
        "{err}"
    );
}

#[test]
fn bad_port_settings_say_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails_with(teamtalk(dir.path()).args(["up", "--port", "dbproxy=1"]));
    assert!(err.contains("db_proxy, route"), "{err}");
    let err = fails_with(teamtalk(dir.path()).args(["up", "--port-offset", "60000"]));
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn an_offset_moves_every_teamtalk_port_and_one_port_can_be_set() {
    let mut cfg = SystemConfig::teamtalk_ports("d", 2);
    cfg.ports.shift(10_000).unwrap();
    let p = &cfg.ports;
    assert_eq!(
        (p.db, p.route, p.login_msg, p.login_http, p.login_client),
        (20_600, 18_200, 18_100, 18_080, 18_008)
    );
    assert_eq!(
        (p.msg.clone(), p.msfs, p.file_client),
        (vec![18_000, 18_001], 18_700, 18_600)
    );
    cfg.ports.set("msg", 9_000).unwrap();
    assert_eq!(cfg.ports.msg, [9_000, 9_001]);
    assert!(cfg.ports.set("nope", 1).is_err());
}

#[test]
fn the_start_up_log_is_short_and_spells_connections_one_way() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = teamtalk(dir.path())
        .args(["up", "--any-ports"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start teamtalk up");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut banner = String::new();
    while !line.contains("Ctrl-C stops") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no banner");
        banner.push_str(&line);
    }
    // http_msg_server with the key generated for it (no --app-key).
    let http_msg = banner
        .lines()
        .find(|l| l.trim_start().starts_with("http_msg_server"))
        .unwrap_or_else(|| panic!("{banner}"));
    assert!(http_msg.contains("http://127.0.0.1:"), "{http_msg}");
    let key = http_msg
        .split("app_key ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{http_msg}"));
    assert!(
        key.len() == 32 && key.bytes().all(|c| c.is_ascii_hexdigit()),
        "{http_msg}"
    );
    // Give late start-up lines a moment, then stop it cleanly.
    std::thread::sleep(Duration::from_millis(300));
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let mut summary = String::new();
    stdout.read_to_string(&mut summary).unwrap();
    assert!(child.wait().unwrap().success(), "{log}");
    assert!(summary.contains("stopped cleanly"), "{summary}");
    let before_stop: Vec<&str> = log
        .lines()
        .take_while(|l| !l.contains("stopping"))
        .collect();
    assert!(
        before_stop.len() <= 12,
        "start-up log of {} lines:\n{}",
        before_stop.len(),
        before_stop.join("\n")
    );
    assert!(!log.contains("Conn {"), "{log}");
    assert!(
        !log.contains("listening daemon"),
        "the banner says it: {log}"
    );
    assert!(
        !log.contains("stopped daemon"),
        "the summary says it: {log}"
    );
}

#[test]
fn passwords_set_through_teamtalk_up_are_hashed_at_its_argon2_cost() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails_with(teamtalk(dir.path()).args(["up", "--argon2-passes", "0"]));
    assert!(err.contains("--argon2-passes"), "{err}");

    let mut child = teamtalk(dir.path())
        .args([
            "up",
            "--any-ports",
            "--argon2-memory-kib",
            "64",
            "--argon2-passes",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start teamtalk up");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("Ctrl-C stops") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no banner");
    }
    // The directory command finds the running system's admin API, which
    // hashes the password.
    let data = dir.path().join("teamtalk-data");
    let out = teamtalk(dir.path())
        .args(["user", "add", "alice", "--password", "pw", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = rusqlite::Connection::open(data.join("teamtalk.sqlite3")).unwrap();
    let hash: String = db
        .query_row("SELECT password FROM user WHERE name = 'alice'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(stopped);
    child.wait().unwrap();
}
