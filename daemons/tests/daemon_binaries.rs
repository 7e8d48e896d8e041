//! The daemon binaries drop in where TeamTalk's ran: conf from the working
//! directory by TeamTalk's name, `server.pid`, `-v`, `--help` listing the
//! keys; logs fit a pipe; one store, one server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use daemons::clock::now;

const T: Duration = Duration::from_secs(20);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = now() + T;
    while !ok() {
        assert!(now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn term(child: &Child) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

/// Stderr lines until `pred` matches one (or the stream ends).
fn read_until(child: &mut Child, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let stderr = child.stderr.take().expect("piped");
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("utf-8 log line");
        let done = pred(&line);
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

#[test]
fn route_server_reads_its_conf_from_the_working_directory_and_writes_server_pid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("routeserver.conf"),
        "ListenIP=127.0.0.1\nListenMsgPort=0\n",
    )
    .unwrap();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_route_server"))
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid_file = dir.path().join("server.pid");
    wait_for("server.pid", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == child.0.id().to_string())
    });
    let lines = read_until(&mut child.0, |l| l.contains("running"));
    assert!(lines.iter().any(|l| l.contains("running")), "{lines:?}");
    for l in &lines {
        assert!(!l.contains('\u{1b}'), "escape codes in a pipe: {l:?}");
    }
    term(&child.0);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!pid_file.exists(), "server.pid removed on a clean stop");
}

#[test]
fn without_a_conf_the_error_names_the_file_it_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_msg_server"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("msgserver.conf") && err.contains("-c"),
        "{err}"
    );
}

#[test]
fn version_and_help_say_what_an_operator_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_msg_server"))
        .arg("-v")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("msg_server "), "{v}");
    assert!(
        v.contains(env!("CARGO_PKG_VERSION")) && v.contains('('),
        "{v}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_db_proxy_server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "ListenPort",
        "DataDir",
        "UtcOffsetMinutes",
        "AdminListen",
        "ClusterSecretFile",
    ] {
        assert!(help.contains(key), "--help lacks {key}:\n{help}");
    }
}

fn db_proxy(dir: &Path, data: &Path, extra: &[&str]) -> Command {
    std::fs::write(
        dir.join("dbproxyserver.conf"),
        format!(
            "ListenIP=127.0.0.1\nListenPort=0\nDataDir={}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_db_proxy_server"));
    c.current_dir(dir).args(["--no-pid-file"]).args(extra);
    c
}

#[test]
fn a_second_db_proxy_on_one_store_is_refused_naming_the_holder() {
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let data = first_dir.path().join("data");
    let mut first = Killed(
        db_proxy(first_dir.path(), &data, &[])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    read_until(&mut first.0, |l| l.contains("running"));
    let out = db_proxy(second_dir.path(), &data, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already served") && err.contains(&format!("pid {}", first.0.id())),
        "{err}"
    );
}

#[test]
fn json_logs_and_a_bad_rust_log_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Killed(
        db_proxy(
            dir.path(),
            &dir.path().join("data"),
            &["--log-format", "json"],
        )
        .env("RUST_LOG", "info,=,[")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let lines = read_until(&mut child.0, |l| l.contains("running"));
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("level").is_some(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("RUST_LOG is not a valid filter")),
        "{lines:?}"
    );
}
