//! The admin REST API end to end on `teamtalk up`'s admin port: each
//! operation over HTTP with the bearer token, and its effect on real
//! clients (logins refused, sessions kicked, group notices delivered) on
//! two msg_servers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{T, World, closed, world_with};
use daemons::client::{Client, ClientError};
use daemons::tools::admin_client::{AdminClient, AdminClientError};
use serde_json::{Value, json};
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::{Command, Message};

const TOKEN: &str = "test-admin-token";

fn world() -> World {
    world_with(|cfg| {
        cfg.link_timers = Some((
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(8),
        ));
        cfg.admin_token = Some(TOKEN.into());
    })
}

fn admin(w: &World) -> AdminClient {
    let addr = w.sys.admin_addr().expect("admin port");
    AdminClient::new(&addr.to_string(), Some(TOKEN.into()), T)
}

fn login(w: &World, i: usize, name: &str, pw: &str, ct: ClientType) -> Result<Client, ClientError> {
    let mut c = Client::connect(w.msg(i), T).expect("connect");
    c.login(name, pw, ct, T)?;
    let me = c.user_id().expect("user id");
    common::sync_route(&mut c, me);
    Ok(c)
}

fn id(v: &Value) -> u32 {
    u32::try_from(v["id"].as_u64().expect("an id")).unwrap()
}

/// A group-member notice, waited for.
fn member_notice(c: &mut Client) -> (i32, u32, Vec<u32>) {
    match c
        .wait_command(Command::GroupChangeMemberNotify, T)
        .expect("member notice")
    {
        Message::GroupChangeMemberNotify(n) => (n.change_type, n.group_id, n.chg_user_id_list),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_token_is_required_and_errors_are_json() {
    let w = world();
    let addr = w.sys.admin_addr().unwrap();
    let anonymous = AdminClient::new(&addr.to_string(), None, T);
    let e = anonymous.call("GET", "/api/users", None).unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    let wrong = AdminClient::new(&addr.to_string(), Some("nope".into()), T);
    let (status, body) = wrong.raw("GET", "/api/users", None).unwrap();
    assert_eq!((status, &body["status"]), (401, &json!(401)));
    let api = admin(&w);
    let (status, body) = api.raw("GET", "/api/users/999", None).unwrap();
    assert_eq!((status, body["error"].as_str()), (404, Some("Not Found")));
    let doc = api.call("GET", "/api/openapi.json", None).unwrap();
    assert!(doc["paths"]["/api/users"]["post"].is_object());
    // A body over the bound is refused before it is parsed: with the
    // JSON error up to a point (read and dropped), bare beyond.
    let big = json!({"name": "x", "password": "y".repeat(200_000)});
    let (status, body) = api.raw("POST", "/api/users", Some(&big)).unwrap();
    assert_eq!((status, &body["status"]), (413, &json!(413)), "{body}");
    let mut s = TcpStream::connect_timeout(&addr, T).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "POST /api/users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{{"
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
}

#[test]
fn a_user_created_over_the_api_logs_in_and_is_listed() {
    let w = world();
    let api = admin(&w);
    let dept = api
        .call("POST", "/api/departments", Some(&json!({"name": "sales"})))
        .unwrap();
    let dave = api
        .call(
            "POST",
            "/api/users",
            Some(&json!({"name": "dave", "password": "pw1", "nick": "Dave", "dept_id": id(&dept)})),
        )
        .unwrap();
    assert_eq!(dave["dept_id"], dept["id"]);
    let mut c = login(&w, 0, "dave", "pw1", ClientType::Windows).expect("dave logs in");
    assert_eq!(c.user_id(), Some(id(&dave)));

    let page = api
        .call("GET", "/api/users?limit=2&offset=0", None)
        .unwrap();
    assert_eq!(page["total"], 4);
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    let page = api.call("GET", "/api/users?name=dave", None).unwrap();
    assert_eq!(page["users"][0]["nick"], "Dave");

    let changed = api
        .call(
            "PATCH",
            &format!("/api/users/{}", id(&dave)),
            Some(&json!({"nick": "David", "dept_id": 0})),
        )
        .unwrap();
    assert_eq!(
        (changed["nick"].as_str(), changed["dept_id"].as_u64()),
        (Some("David"), Some(0))
    );
    let renamed = api
        .call(
            "PATCH",
            &format!("/api/departments/{}", id(&dept)),
            Some(&json!({"name": "sales EU"})),
        )
        .unwrap();
    assert_eq!(renamed["name"], "sales EU");
    api.call("DELETE", &format!("/api/departments/{}", id(&dept)), None)
        .unwrap();
    assert!(
        api.call("GET", "/api/departments", None)
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Sessions on both msg_servers are listed, then kicked.
    let mut phone = login(&w, 1, "dave", "pw1", ClientType::Android).expect("phone");
    let sessions = api
        .call("GET", &format!("/api/users/{}/sessions", id(&dave)), None)
        .unwrap();
    let mut clients: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client"].as_str().unwrap())
        .collect();
    clients.sort_unstable();
    assert_eq!(clients, ["android", "windows"], "{sessions}");
    let servers: Vec<String> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["server"].as_str().unwrap().to_owned())
        .collect();
    assert!(servers.contains(&w.msg(0).to_string()) && servers.contains(&w.msg(1).to_string()));
    let kicked = api
        .call(
            "DELETE",
            &format!("/api/users/{}/sessions", id(&dave)),
            None,
        )
        .unwrap();
    assert_eq!(kicked["kicked"], 2);
    assert!(closed(&mut c), "the PC session was kicked");
    assert!(closed(&mut phone), "the phone session was kicked");
    let after = api
        .call("GET", &format!("/api/users/{}/sessions", id(&dave)), None)
        .unwrap();
    assert_eq!(after, json!([]));
}

#[test]
fn disable_kicks_and_refuses_login_until_enabled_and_delete_does_too() {
    let w = world();
    let api = admin(&w);
    let bob = w.user_id("bob");
    let mut c = login(&w, 1, "bob", "secret", ClientType::Windows).expect("bob logs in");
    let v = api
        .call("POST", &format!("/api/users/{bob}/disable"), None)
        .unwrap();
    assert_eq!(v["disabled"], true);
    assert!(closed(&mut c), "bob's session was kicked");
    match login(&w, 0, "bob", "secret", ClientType::Windows) {
        Err(ClientError::LoginRefused { .. }) => {}
        other => panic!("a disabled user logged in: {:?}", other.map(|_| ())),
    }
    api.call("POST", &format!("/api/users/{bob}/enable"), None)
        .unwrap();
    let c = login(&w, 0, "bob", "secret", ClientType::Windows).expect("enabled again");
    drop(c);

    let carol = w.user_id("carol");
    let mut c = login(&w, 0, "carol", "secret", ClientType::Mac).expect("carol logs in");
    api.call("DELETE", &format!("/api/users/{carol}"), None)
        .unwrap();
    assert!(closed(&mut c), "a deleted user's session is kicked");
    assert!(matches!(
        login(&w, 1, "carol", "secret", ClientType::Mac),
        Err(ClientError::LoginRefused { .. })
    ));
    let e = api
        .call("GET", &format!("/api/users/{carol}"), None)
        .unwrap_err();
    assert!(
        matches!(e, AdminClientError::Api { status: 404, .. }),
        "{e}"
    );
}

/// The credential cache: a login it remembers is not accepted with the old
/// password once the password is changed over the API.
#[test]
fn a_password_change_beats_the_credential_cache() {
    let w = world();
    let api = admin(&w);
    let alice = w.user_id("alice");
    for _ in 0..2 {
        drop(login(&w, 0, "alice", "secret", ClientType::Windows).expect("login"));
    }
    let cached = cached_logins(&w);
    assert!(cached >= 1.0, "the second login came from the cache");
    api.call(
        "PUT",
        &format!("/api/users/{alice}/password"),
        Some(&json!({"password": "n3w"})),
    )
    .unwrap();
    assert!(matches!(
        login(&w, 0, "alice", "secret", ClientType::Windows),
        Err(ClientError::LoginRefused { .. })
    ));
    drop(login(&w, 1, "alice", "n3w", ClientType::Windows).expect("the new password works"));
}

/// `teamtalk_db_logins_cached_total`, read from `/metrics` with the token.
fn cached_logins(w: &World) -> f64 {
    let addr = w.sys.admin_addr().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, T).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.lines()
        .filter(|l| l.starts_with("teamtalk_db_logins_cached_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn group_changes_reach_members_online_on_both_msg_servers() {
    let w = world();
    let api = admin(&w);
    let (alice, bob, carol) = (w.user_id("alice"), w.user_id("bob"), w.user_id("carol"));
    let mut a = w.login(0, "alice", ClientType::Windows);
    let mut b = w.login(1, "bob", ClientType::Windows);
    let mut c = w.login(1, "carol", ClientType::Android);

    let g = api
        .call(
            "POST",
            "/api/groups",
            Some(&json!({"name": "ops", "creator": alice, "members": [bob]})),
        )
        .unwrap();
    let gid = id(&g);
    assert_eq!(g["members"], json!([alice, bob]));
    for client in [&mut a, &mut b] {
        let (change, group, mut users) = member_notice(client);
        users.sort_unstable();
        assert_eq!((change, group, users), (1, gid, vec![alice, bob]));
    }

    // The group works for its members at once: a message reaches bob on
    // the other msg_server.
    let mut msg = common::text(gid, "hello ops");
    msg.msg_type = 0x11;
    a.request(Command::MsgData, &msg, Command::MsgDataAck, T)
        .expect("group message acked");
    assert_eq!(common::receive(&mut b).to_session_id, gid);

    api.call(
        "POST",
        &format!("/api/groups/{gid}/members"),
        Some(&json!({"users": [carol]})),
    )
    .unwrap();
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(member_notice(client), (1, gid, vec![carol]));
    }

    let g = api
        .call("DELETE", &format!("/api/groups/{gid}/members/{bob}"), None)
        .unwrap();
    assert_eq!(g["members"], json!([alice, carol]));
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(member_notice(client), (2, gid, vec![bob]));
    }

    let groups = api.call("GET", "/api/groups", None).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 1);
    api.call("DELETE", &format!("/api/groups/{gid}"), None)
        .unwrap();
    let (change, group, mut users) = member_notice(&mut a);
    users.sort_unstable();
    assert_eq!((change, group, users), (2, gid, vec![alice, carol]));
    assert_eq!(member_notice(&mut c).0, 2);
    assert!(
        api.call("GET", "/api/groups", None)
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_console_is_served_without_a_token_and_framing_is_refused() {
    let w = world();
    let addr = w.sys.admin_addr().unwrap();
    for (path, ty) in [
        ("/", "text/html"),
        ("/console.js", "javascript"),
        ("/console.css", "text/css"),
    ] {
        let mut s = TcpStream::connect_timeout(&addr, T).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(head.contains(ty), "{path}: {head}");
        if path == "/" {
            assert!(
                head.contains("content-security-policy: default-src 'self'"),
                "{head}"
            );
            assert!(head.contains("x-frame-options: deny"), "{head}");
        }
    }
}

/// Separate daemons: db_proxy_server's admin port serves the API; kicks
/// and group notices reach the msg_servers over their db links.
#[test]
fn db_proxy_serves_the_api_for_separate_daemons() {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use daemons::db_proxy::{self, DbProxyConfig};
    use daemons::login::{self, LoginConfig};
    use daemons::msg::{self, MsgConfig};
    use daemons::password::HashParams;
    use daemons::route::{self, RouteConfig};
    use daemons::store::{SqliteStore, Store, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(
            dir.path(),
            StoreOptions {
                hash_params: HashParams::INSECURE_FAST,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    let mut cfg = DbProxyConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    cfg.admin_token = Some(TOKEN.into());
    let db = db_proxy::spawn(cfg, store).unwrap();
    let route = route::spawn(RouteConfig::loopback()).unwrap();
    let login_server = login::spawn(LoginConfig::loopback()).unwrap();
    let msgs: Vec<_> = (0..2)
        .map(|_| {
            let mut m = MsgConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                db.addr(),
                login_server.msg_server_addr(),
                route.addr(),
            );
            m.threads = 1;
            msg::spawn(m).unwrap()
        })
        .collect();
    let deadline = daemons::clock::now() + T;
    while login_server.msg_servers().len() < 2 {
        assert!(daemons::clock::now() < deadline, "msg_servers registered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let api = AdminClient::new(
        &db.admin_addr().expect("db_proxy's admin port").to_string(),
        Some(TOKEN.into()),
        T,
    );
    let connect = |i: usize, name: &str, pw: &str, ct: ClientType| {
        let addr: SocketAddr = msgs[i].addr();
        let mut c = Client::connect(addr, T).expect("connect");
        c.login(name, pw, ct, T).map(|_| c)
    };
    let mut ids = Vec::new();
    for name in ["erin", "frank"] {
        let u = api
            .call(
                "POST",
                "/api/users",
                Some(&json!({"name": name, "password": "pw"})),
            )
            .unwrap();
        ids.push(id(&u));
    }
    let (erin, frank) = (ids[0], ids[1]);
    let mut e = connect(0, "erin", "pw", ClientType::Windows).expect("erin logs in");
    let mut f = connect(1, "frank", "pw", ClientType::Android).expect("frank logs in");

    let g = api
        .call(
            "POST",
            "/api/groups",
            Some(&json!({"name": "g", "creator": erin, "members": [frank]})),
        )
        .unwrap();
    for client in [&mut e, &mut f] {
        let (change, group, mut users) = member_notice(client);
        users.sort_unstable();
        assert_eq!((change, group, users), (1, id(&g), vec![erin, frank]));
    }

    // db_proxy asks every msg_server who is online.
    let sessions = api
        .call("GET", &format!("/api/users/{erin}/sessions"), None)
        .unwrap();
    let list = sessions.as_array().unwrap();
    assert_eq!(list.len(), 1, "{sessions}");
    assert_eq!(list[0]["client"], "windows");
    let phone = api
        .call("GET", &format!("/api/users/{frank}/sessions"), None)
        .unwrap();
    assert_eq!(phone[0]["client"], "android", "{phone}");

    let kicked = api
        .call("DELETE", &format!("/api/users/{erin}/sessions"), None)
        .unwrap();
    assert_eq!(kicked["kicked"], Value::Null);
    assert!(closed(&mut e), "erin was kicked");
    assert_eq!(
        api.call("GET", &format!("/api/users/{erin}/sessions"), None)
            .unwrap(),
        json!([])
    );

    api.call("POST", &format!("/api/users/{frank}/disable"), None)
        .unwrap();
    assert!(closed(&mut f), "frank was kicked when disabled");
    assert!(matches!(
        connect(0, "frank", "pw", ClientType::Android),
        Err(ClientError::LoginRefused { .. })
    ));
    api.call(
        "PUT",
        &format!("/api/users/{erin}/password"),
        Some(&json!({"password": "pw2"})),
    )
    .unwrap();
    assert!(matches!(
        connect(1, "erin", "pw", ClientType::Windows),
        Err(ClientError::LoginRefused { .. })
    ));
    connect(1, "erin", "pw2", ClientType::Windows).expect("the new password");
    for m in msgs {
        m.stop();
    }
}
