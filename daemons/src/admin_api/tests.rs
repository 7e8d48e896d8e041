//! The API against a real (in-memory) store and a recording cluster:
//! routing, validation, errors, and what each change asks of the
//! msg_servers.

use std::sync::{Arc, Mutex};

use ::http::header::{CONTENT_TYPE, HOST, ORIGIN};
use serde_json::{Value, json};

use super::*;
use crate::http::ErrorBody;
use crate::password::HashParams;
use crate::store::{SqliteStore, StoreOptions};

#[derive(Default)]
struct Recorder {
    kicked: Mutex<Vec<UserId>>,
    announced: Mutex<Vec<ImGroupChangeMemberNotify>>,
}

impl Cluster for Recorder {
    fn sessions(&self, user: UserId) -> Result<Vec<OnlineSession>, ClusterError> {
        Ok(vec![OnlineSession {
            server: "127.0.0.1:8000".into(),
            client_type: 1,
            client: client_name(1).into(),
            addr: Some(format!("10.0.0.{user}:5000")),
            status: 1,
        }])
    }

    fn kick(&self, user: UserId) -> Result<Option<u32>, ClusterError> {
        self.kicked.lock().unwrap().push(user);
        Ok(Some(1))
    }

    fn announce(&self, notify: ImGroupChangeMemberNotify) -> Result<(), ClusterError> {
        self.announced.lock().unwrap().push(notify);
        Ok(())
    }
}

struct Fixture {
    api: AdminApi,
    store: Arc<SqliteStore>,
    cluster: Arc<Recorder>,
}

fn fixture() -> Fixture {
    let store = Arc::new(
        SqliteStore::open_in_memory(StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            ..StoreOptions::default()
        })
        .unwrap(),
    );
    let cluster = Arc::new(Recorder::default());
    Fixture {
        api: AdminApi::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::clone(&cluster) as Arc<dyn Cluster>,
        ),
        store,
        cluster,
    }
}

fn request(method: &str, path: &str, body: Option<&str>) -> Request {
    let mut b = ::http::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "127.0.0.1:8090");
    if body.is_some() {
        b = b.header(CONTENT_TYPE, "application/json");
    }
    b.body(Bytes::copy_from_slice(body.unwrap_or("").as_bytes()))
        .unwrap()
}

use bytes::Bytes;

impl Fixture {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        let r = self.api.handle(&request(method, path, text.as_deref()));
        let status = r.status().as_u16();
        let v = if r.body().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(r.body()).unwrap()
        };
        if status >= 400 {
            // Every error is the one JSON error body, with its status.
            let e: ErrorBody = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(e.status, status);
        }
        (status, v)
    }

    fn user(&self, name: &str) -> u32 {
        let (s, v) = self.call(
            "POST",
            "/api/users",
            Some(json!({"name": name, "password": "pw"})),
        );
        assert_eq!(s, 201, "{v}");
        u32::try_from(v["id"].as_u64().unwrap()).unwrap()
    }
}

#[test]
fn users_are_created_read_listed_in_pages_and_changed() {
    let f = fixture();
    let (s, dept) = f.call("POST", "/api/departments", Some(json!({"name": "dev"})));
    assert_eq!(s, 201);
    let (s, v) = f.call(
        "POST",
        "/api/users",
        Some(json!({"name": "alice", "password": "pw", "nick": "Alice", "dept_id": dept["id"]})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "alice");
    assert_eq!(v["nick"], "Alice");
    assert_eq!(v["dept_id"], dept["id"]);
    assert_eq!(v["disabled"], false);
    let alice = v["id"].as_u64().unwrap();
    assert!(
        f.store
            .verify_login("alice", &md5_hex(b"pw"))
            .unwrap()
            .is_some()
    );

    let (s, v) = f.call("GET", &format!("/api/users/{alice}"), None);
    assert_eq!((s, v["name"].as_str()), (200, Some("alice")));

    for i in 0..5 {
        f.user(&format!("u{i}"));
    }
    let (s, page) = f.call("GET", "/api/users?offset=2&limit=2", None);
    assert_eq!(s, 200);
    assert_eq!(page["total"], 6);
    let names: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["u1", "u2"]);
    let (_, page) = f.call("GET", "/api/users?q=ALI", None);
    assert_eq!(page["total"], 1);
    let (_, page) = f.call("GET", "/api/users?name=u3", None);
    assert_eq!(page["users"][0]["name"], "u3");
    let (_, page) = f.call("GET", "/api/users?limit=100000", None);
    assert_eq!(page["limit"], MAX_PAGE);
    assert_eq!(f.call("GET", "/api/users?offset=x", None).0, 400);

    let (s, v) = f.call(
        "PATCH",
        &format!("/api/users/{alice}"),
        Some(json!({"nick": "Alice B", "dept_id": 0, "email": "a@example.com"})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["nick"].as_str(), v["dept_id"].as_u64()),
        (Some("Alice B"), Some(0))
    );
    assert_eq!(v["email"], "a@example.com");
    assert_eq!(
        f.call(
            "PATCH",
            &format!("/api/users/{alice}"),
            Some(json!({"dept_id": 99}))
        )
        .0,
        404
    );
    assert_eq!(
        f.call("PATCH", "/api/users/999", Some(json!({"nick": "x"})))
            .0,
        404
    );
    assert!(f.cluster.kicked.lock().unwrap().is_empty());
}

#[test]
fn refusals_are_json_errors_with_their_status() {
    let f = fixture();
    f.user("alice");
    let cases: Vec<(&str, &str, Option<Value>, u16)> = vec![
        (
            "POST",
            "/api/users",
            Some(json!({"name": "alice", "password": "x"})),
            409,
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"name": "", "password": "x"})),
            422,
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"name": "a b", "password": "x"})),
            422,
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"name": "x", "password": "x", "nick": "n".repeat(33)})),
            422,
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"name": "bob", "password": ""})),
            422,
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"name": "bob", "password": "x".repeat(300)})),
            422,
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"name": "bob", "password": "x", "sex": 7})),
            422,
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"name": "bob", "password": "x", "admin": true})),
            400,
        ),
        ("POST", "/api/users", Some(json!({"name": "bob"})), 400),
        (
            "POST",
            "/api/users",
            Some(json!({"name": "bob", "password": "x", "dept_id": 5})),
            404,
        ),
        ("PATCH", "/api/users/1", Some(json!({})), 422),
        ("PATCH", "/api/users/1", Some(json!({"status": 9})), 422),
        (
            "PATCH",
            "/api/users/1",
            Some(json!({"nick": "a\u{7}"})),
            422,
        ),
        ("GET", "/api/users/0", None, 404),
        ("GET", "/api/users/abc", None, 404),
        ("GET", "/api/users/77", None, 404),
        ("PUT", "/api/users", None, 405),
        ("GET", "/api/users/1/password", None, 405),
        ("GET", "/api/nothing", None, 404),
        ("GET", "/api/%2e%2e/x", None, 400),
        (
            "POST",
            "/api/groups",
            Some(json!({"name": "g", "creator": 0})),
            422,
        ),
        (
            "POST",
            "/api/groups",
            Some(json!({"name": "g", "creator": 1, "members": [77]})),
            404,
        ),
        (
            "POST",
            "/api/groups/1/members",
            Some(json!({"users": []})),
            422,
        ),
        ("DELETE", "/api/groups/5", None, 404),
    ];
    for (method, path, body, want) in cases {
        let (got, v) = f.call(method, path, body.clone());
        assert_eq!(got, want, "{method} {path} {body:?}: {v}");
    }
    let (_, v) = f.call("PUT", "/api/users", None);
    assert_eq!(v["error"], "Method Not Allowed");

    // Not JSON, or not saying so.
    let mut r = request(
        "POST",
        "/api/users",
        Some(r#"{"name":"bob","password":"x"}"#),
    );
    r.headers_mut()
        .insert(CONTENT_TYPE, "text/plain".parse().unwrap());
    assert_eq!(f.api.handle(&r).status(), 415);
    r.headers_mut().remove(CONTENT_TYPE);
    assert_eq!(f.api.handle(&r).status(), 415);
    let r = request("POST", "/api/users", Some("{not json"));
    assert_eq!(f.api.handle(&r).status(), 400);
    // Bodies are bounded.
    let big = format!(r#"{{"name":"bob","password":"{}"}}"#, "x".repeat(MAX_BODY));
    assert_eq!(
        f.api
            .handle(&request("POST", "/api/users", Some(&big)))
            .status(),
        413
    );
}

#[test]
fn cross_origin_requests_are_refused() {
    let f = fixture();
    let mut r = request(
        "POST",
        "/api/users",
        Some(r#"{"name":"bob","password":"x"}"#),
    );
    r.headers_mut()
        .insert(ORIGIN, "http://evil.example".parse().unwrap());
    assert_eq!(f.api.handle(&r).status(), 403);
    r.headers_mut()
        .insert(ORIGIN, "http://127.0.0.1:8090".parse().unwrap());
    assert_eq!(f.api.handle(&r).status(), 201);
    let mut r = request("GET", "/api/users", None);
    r.headers_mut().insert(ORIGIN, "null".parse().unwrap());
    assert_eq!(f.api.handle(&r).status(), 403);
}

#[test]
fn disabling_kicks_and_refuses_logins_and_passwords_change_at_once() {
    let f = fixture();
    let alice = f.user("alice");
    let (s, v) = f.call("POST", &format!("/api/users/{alice}/disable"), None);
    assert_eq!((s, &v["disabled"]), (200, &json!(true)));
    assert_eq!(*f.cluster.kicked.lock().unwrap(), [alice]);
    assert!(
        f.store
            .verify_login("alice", &md5_hex(b"pw"))
            .unwrap()
            .is_none()
    );
    // Disabled users are still listed (and can be enabled again).
    let (_, page) = f.call("GET", "/api/users", None);
    assert_eq!(page["users"][0]["disabled"], true);
    let (s, v) = f.call("POST", &format!("/api/users/{alice}/enable"), None);
    assert_eq!((s, &v["status"]), (200, &json!(0)));
    assert!(
        f.store
            .verify_login("alice", &md5_hex(b"pw"))
            .unwrap()
            .is_some()
    );
    // PATCH status 3 is the same as disable.
    let (s, _) = f.call(
        "PATCH",
        &format!("/api/users/{alice}"),
        Some(json!({"status": 3})),
    );
    assert_eq!(s, 200);
    assert_eq!(f.cluster.kicked.lock().unwrap().len(), 2);
    f.call("POST", &format!("/api/users/{alice}/enable"), None);

    let (s, _) = f.call(
        "PUT",
        &format!("/api/users/{alice}/password"),
        Some(json!({"password": "new"})),
    );
    assert_eq!(s, 204);
    assert!(
        f.store
            .verify_login("alice", &md5_hex(b"pw"))
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .verify_login("alice", &md5_hex(b"new"))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        f.call(
            "PUT",
            "/api/users/99/password",
            Some(json!({"password": "x"}))
        )
        .0,
        404
    );
}

#[test]
fn sessions_are_listed_and_kicked() {
    let f = fixture();
    let alice = f.user("alice");
    let (s, v) = f.call("GET", &format!("/api/users/{alice}/sessions"), None);
    assert_eq!(s, 200);
    assert_eq!(v[0]["client"], "windows");
    let (s, v) = f.call("DELETE", &format!("/api/users/{alice}/sessions"), None);
    assert_eq!((s, &v["kicked"]), (200, &json!(1)));
    assert_eq!(*f.cluster.kicked.lock().unwrap(), [alice]);
    assert_eq!(f.call("GET", "/api/users/42/sessions", None).0, 404);
}

#[test]
fn departments_are_created_renamed_and_deleted_when_empty() {
    let f = fixture();
    let (s, dev) = f.call("POST", "/api/departments", Some(json!({"name": " dev "})));
    assert_eq!((s, dev["name"].as_str()), (201, Some("dev")));
    let dev = dev["id"].as_u64().unwrap();
    let (s, _) = f.call("POST", "/api/departments", Some(json!({"name": "dev"})));
    assert_eq!(s, 409);
    let (s, ops) = f.call(
        "POST",
        "/api/departments",
        Some(json!({"name": "ops", "parent_id": dev})),
    );
    assert_eq!((s, ops["parent_id"].as_u64()), (201, Some(dev)));
    let ops = ops["id"].as_u64().unwrap();
    assert_eq!(
        f.call(
            "POST",
            "/api/departments",
            Some(json!({"name": "x", "parent_id": 77}))
        )
        .0,
        404
    );
    assert_eq!(
        f.call(
            "PATCH",
            &format!("/api/departments/{ops}"),
            Some(json!({"name": "dev"}))
        )
        .0,
        409
    );
    let (s, v) = f.call(
        "PATCH",
        &format!("/api/departments/{ops}"),
        Some(json!({"name": "operations"})),
    );
    assert_eq!((s, v["name"].as_str()), (200, Some("operations")));
    // dev holds ops: not empty.
    assert_eq!(
        f.call("DELETE", &format!("/api/departments/{dev}"), None).0,
        409
    );
    let (s, _) = f.call(
        "POST",
        "/api/users",
        Some(json!({"name": "bob", "password": "x", "dept_id": ops})),
    );
    assert_eq!(s, 201);
    assert_eq!(
        f.call("DELETE", &format!("/api/departments/{ops}"), None).0,
        409
    );
    f.call("PATCH", "/api/users/1", Some(json!({"dept_id": 0})));
    assert_eq!(
        f.call("DELETE", &format!("/api/departments/{ops}"), None).0,
        204
    );
    assert_eq!(
        f.call("DELETE", &format!("/api/departments/{ops}"), None).0,
        404
    );
    let (_, all) = f.call("GET", "/api/departments", None);
    assert_eq!(all.as_array().unwrap().len(), 1);
    // Its name is free again.
    assert_eq!(
        f.call(
            "POST",
            "/api/departments",
            Some(json!({"name": "operations"}))
        )
        .0,
        201
    );
}

#[test]
fn group_changes_are_stored_and_announced() {
    let f = fixture();
    let a = f.user("alice");
    let b = f.user("bob");
    let c = f.user("carol");
    let (s, g) = f.call(
        "POST",
        "/api/groups",
        Some(json!({"name": "team", "creator": a, "members": [b]})),
    );
    assert_eq!(s, 201, "{g}");
    assert_eq!(g["type"], "normal");
    assert_eq!(g["members"], json!([a, b]));
    let gid = g["id"].as_u64().unwrap();
    {
        let n = f.cluster.announced.lock().unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].change_type, &n[0].chg_user_id_list), (1, &vec![a, b]));
    }
    let (s, g) = f.call(
        "POST",
        &format!("/api/groups/{gid}/members"),
        Some(json!({"users": [c]})),
    );
    assert_eq!((s, &g["members"]), (200, &json!([a, b, c])));
    let (s, g) = f.call("DELETE", &format!("/api/groups/{gid}/members/{b}"), None);
    assert_eq!((s, &g["members"]), (200, &json!([a, c])));
    // Removing someone not in the group changes nothing and tells no one.
    f.call("DELETE", &format!("/api/groups/{gid}/members/{b}"), None);
    {
        let n = f.cluster.announced.lock().unwrap();
        assert_eq!(n.len(), 3);
        assert_eq!((n[1].change_type, &n[1].chg_user_id_list), (1, &vec![c]));
        assert_eq!((n[2].change_type, &n[2].chg_user_id_list), (2, &vec![b]));
        assert_eq!(n[2].cur_user_id_list, [a, c]);
    }
    let (_, all) = f.call("GET", "/api/groups", None);
    assert_eq!(all.as_array().unwrap().len(), 1);

    // Deleting a user takes them out of their groups, announced.
    assert_eq!(f.call("DELETE", &format!("/api/users/{c}"), None).0, 204);
    assert_eq!(f.call("GET", &format!("/api/users/{c}"), None).0, 404);
    assert_eq!(*f.cluster.kicked.lock().unwrap(), [c]);
    {
        let n = f.cluster.announced.lock().unwrap();
        assert_eq!((n[3].change_type, &n[3].chg_user_id_list), (2, &vec![c]));
        assert_eq!(n[3].cur_user_id_list, [a]);
    }

    assert_eq!(f.call("DELETE", &format!("/api/groups/{gid}"), None).0, 204);
    assert_eq!(f.call("GET", &format!("/api/groups/{gid}"), None).0, 404);
    let n = f.cluster.announced.lock().unwrap();
    assert_eq!((n[4].change_type, &n[4].chg_user_id_list), (2, &vec![a]));
    assert!(n[4].cur_user_id_list.is_empty());
}

/// The OpenAPI description names exactly the paths the router answers.
#[test]
fn openapi_describes_every_path() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.0.3");
    let mut described: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    described.sort();
    let mut answered = Vec::new();
    for template in &described {
        let concrete = template.replace("{id}", "1").replace("{user}", "1");
        let f = fixture();
        f.user("alice");
        f.call(
            "POST",
            "/api/groups",
            Some(json!({"name": "g", "creator": 1})),
        );
        f.call("POST", "/api/departments", Some(json!({"name": "d"})));
        let path_ops = doc["paths"][template].as_object().unwrap();
        for method in ["get", "post", "patch", "put", "delete"] {
            if !path_ops.contains_key(method) {
                continue;
            }
            let r = f.api.handle(&request(
                &method.to_uppercase(),
                &concrete,
                Some(r#"{"users":[1]}"#),
            ));
            assert!(
                r.status() != 404 || method == "delete" || template.contains("members"),
                "{method} {template} → {}",
                r.status()
            );
            assert_ne!(r.status(), 405, "{method} {template}");
        }
        answered.push(template.clone());
    }
    assert_eq!(answered, described);
    let (s, v) = fixture().call("GET", "/api/openapi.json", None);
    assert_eq!((s, &v["info"]["title"]), (200, &doc["info"]["title"]));
}

#[test]
fn validation_units() {
    let (u, pw) = UserCreate {
        name: "al".into(),
        password: "p".into(),
        ..UserCreate::default()
    }
    .validated()
    .unwrap();
    assert_eq!(
        (u.name.as_str(), u.nick.as_str(), pw.as_str()),
        ("al", "al", "p")
    );
    assert!(
        UserCreate {
            name: "x".repeat(257),
            password: "p".into(),
            ..UserCreate::default()
        }
        .validated()
        .is_err()
    );
    let e = UserUpdateBody::default().validated().unwrap_err();
    assert_eq!(e.field, "body");
    let (u, status) = UserUpdateBody {
        status: Some(3),
        ..UserUpdateBody::default()
    }
    .validated()
    .unwrap();
    assert_eq!((u, status), (UserUpdate::default(), Some(3)));
    assert!(
        DepartmentCreate {
            name: "\t".into(),
            ..DepartmentCreate::default()
        }
        .validated()
        .is_err()
    );
    assert!(
        MembersBody {
            users: vec![1; MAX_GROUP_MEMBERS_PLUS]
        }
        .validated()
        .is_err()
    );
    assert_eq!(client_name(0x12), "android");
    assert_eq!(client_name(0x99), "other");
}

const MAX_GROUP_MEMBERS_PLUS: usize = crate::store::MAX_GROUP_MEMBERS + 1;
