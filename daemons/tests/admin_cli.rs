//! `teamtalk user|dept|group` over the admin API while the system runs:
//! found through the data directory (as `teamtalk up` advertises it) or
//! named with `--admin`, with the token from a file; the changes take
//! effect at once (sessions kicked, members told), which the store alone
//! could not do.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{T, closed, world_with};
use daemons::cli::remote::{self, Advertised};
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::{Command as Cmd, Message};

fn teamtalk(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_teamtalk"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TEAMTALK_DATA_DIR")
        .env_remove(remote::ADMIN_URL_ENV)
        .env_remove(remote::ADMIN_TOKEN_ENV)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let out = teamtalk(data_dir, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn directory_commands_go_through_the_running_systems_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "cli-token\n").unwrap();
    let w = world_with(|cfg| {
        cfg.data_dir.clone_from(&data);
        cfg.admin_token = Some("cli-token".into());
    });
    let admin = w.sys.admin_addr().unwrap();
    remote::advertise(
        &data,
        &Advertised {
            url: format!("http://{admin}"),
            token_file: Some(token_file.clone()),
        },
    )
    .unwrap();

    // Found through the data directory.
    let out = ok(&data, &["dept", "add", "ops"]);
    assert!(out.contains("added department ops"), "{out}");
    let out = ok(
        &data,
        &["user", "add", "dave", "--password", "pw", "--dept", "ops"],
    );
    assert!(out.contains("added user dave with id"), "{out}");
    let out = ok(&data, &["user", "list"]);
    assert!(out.contains("dave") && out.contains("4 users"), "{out}");
    let out = ok(&data, &["dept", "list"]);
    assert!(
        out.contains("ops") && out.contains("1 departments"),
        "{out}"
    );

    // A disable kicks the open session at once.
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let out = ok(&data, &["user", "disable", "bob"]);
    assert!(out.contains("disabled bob"), "{out}");
    assert!(closed(&mut bob), "bob's session was kicked");
    ok(&data, &["user", "enable", "bob"]);

    // Group changes reach members online.
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let out = ok(&data, &["group", "create", "team", "--creator", "alice"]);
    assert!(out.contains("created group"), "{out}");
    let _ = alice.wait_command(Cmd::GroupChangeMemberNotify, T).unwrap();
    let gid: String = out
        .split_whitespace()
        .nth(2)
        .expect("the group id")
        .to_owned();
    let out = ok(&data, &["group", "add", &gid, "carol", "dave"]);
    assert!(out.contains("now version"), "{out}");
    match alice.wait_command(Cmd::GroupChangeMemberNotify, T).unwrap() {
        Message::GroupChangeMemberNotify(n) => {
            assert_eq!(n.change_type, 1);
            assert_eq!(n.chg_user_id_list.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    let out = ok(&data, &["group", "show", &gid]);
    assert!(out.contains("3 members") && out.contains("carol"), "{out}");
    ok(&data, &["group", "remove", &gid, "dave"]);
    let out = ok(&data, &["group", "list"]);
    assert!(out.contains("team") && out.contains("1 groups"), "{out}");

    ok(&data, &["user", "passwd", "dave", "--password", "pw2"]);
    ok(&data, &["dept", "rename", "ops", "operations"]);
    ok(&data, &["user", "del", "dave"]);
    ok(&data, &["dept", "del", "operations"]);
    let out = ok(&data, &["user", "list"]);
    assert!(!out.contains("dave") && out.contains("3 users"), "{out}");

    // Named with --admin and a token file, from anywhere; a wrong token
    // is refused with a hint.
    let elsewhere = dir.path().join("elsewhere");
    let url = format!("http://{admin}");
    let out = ok(
        &elsewhere,
        &[
            "user",
            "list",
            "--admin",
            &url,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(out.contains("alice"), "{out}");
    std::fs::write(dir.path().join("wrong"), "nope\n").unwrap();
    let bad = teamtalk(
        &elsewhere,
        &[
            "user",
            "list",
            "--admin",
            &url,
            "--token-file",
            dir.path().join("wrong").to_str().unwrap(),
        ],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("401") && err.contains("--token-file"), "{err}");
    assert!(!elsewhere.exists(), "no store was created");
}
