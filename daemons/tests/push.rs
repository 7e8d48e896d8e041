//! Push notifications end to end: a real system (db_proxy, route, login,
//! msg_servers, push_server) whose push_server talks to stand-ins for FCM
//! (HTTP/1.1, with Google's OAuth2 token endpoint), APNs (HTTP/2 over
//! TLS) and a webhook, started by the test on 127.0.0.1. Requests are
//! checked against the services' published formats: paths, headers,
//! JSON fields, and JWTs verified with the test's public keys.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{T, World, send, sync_route, world_with};
use daemons::client::Client;
use daemons::push::{self, ApnsSettings, PushConfig, SinkKind, Sinks, WebhookSettings};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::Value;
use teamtalk_proto::Command;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::group::ImGroupShieldReq;
use teamtalk_proto::pb::im::login::ImDeviceTokenReq;

/// One request a stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    version: http::Version,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

type Reply = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// An HTTP server on 127.0.0.1 recording every request: HTTP/1.1 in
/// plain text, or HTTP/2 only over TLS (as APNs).
struct StandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    fn start(h2_tls: bool, reply: Reply) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            // Two workers: a reply may hold its request back (a test's
            // gate) while others are answered.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let tls = h2_tls.then(|| {
                    let pki = teamtalk_conn::tls::testing::TestPki::shared();
                    let mut cfg = (*pki.server_config(false)).clone();
                    cfg.alpn_protocols = vec![b"h2".to_vec()];
                    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
                });
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let log = Arc::clone(&log);
                    let reply = Arc::clone(&reply);
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: http::Request<Incoming>| {
                            let log = Arc::clone(&log);
                            let reply = Arc::clone(&reply);
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let seen = Seen {
                                    version: parts.version,
                                    path: parts.uri.path().to_owned(),
                                    headers: parts.headers,
                                    body,
                                };
                                let (status, text) = reply(&seen);
                                log.lock().unwrap().push(seen);
                                Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(text)))
                                        .unwrap(),
                                )
                            }
                        });
                        match tls {
                            Some(acceptor) => {
                                let Ok(stream) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let _ =
                                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                        .serve_connection(TokioIo::new(stream), svc)
                                        .await;
                            }
                            None => {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            }
                        }
                    });
                }
            });
        });
        Self { addr, seen }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    fn requests(&self, path_prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    /// Waits until `n` requests to `path_prefix` came, then a little more
    /// for any that should not come.
    fn wait_for(&self, path_prefix: &str, n: usize) -> Vec<Seen> {
        for _ in 0..POLLS {
            if self.requests(path_prefix).len() >= n {
                break;
            }
            std::thread::sleep(POLL);
        }
        std::thread::sleep(Duration::from_millis(500));
        self.requests(path_prefix)
    }
}

/// Waiting in steps of [`POLL`], at most [`T`] in all.
const POLL: Duration = Duration::from_millis(20);
const POLLS: u32 = 500;

const PROJECT: &str = "tt-test";
const ACCESS_TOKEN: &str = "ya29.test-access-token";

/// Logs `name` in as `ct`, registers `token`, and leaves (the connection
/// closes: the phone app went to the background, it did not log out,
/// which would unregister the token as in TeamTalk).
fn phone_goes_offline(w: &World, name: &str, ct: ClientType, token: &str) {
    let mut c = w.login(0, name, ct);
    let me = c.user_id().unwrap();
    let req = ImDeviceTokenReq {
        user_id: me,
        device_token: token.into(),
        client_type: Some(ct as i32),
        invalid_token: None,
        attach_data: None,
    };
    c.request(
        Command::LoginReqDevicetoken,
        &req,
        Command::LoginResDevicetoken,
        T,
    )
    .expect("token stored");
    let before = w.sys.msg_servers()[0].inspect(|a| a.logged_in()).unwrap();
    drop(c);
    let mut polls = 0;
    while w.sys.msg_servers()[0].inspect(|a| a.logged_in()).unwrap() >= before {
        polls += 1;
        assert!(polls < POLLS, "{name}'s session never closed");
        std::thread::sleep(POLL);
    }
}

fn alice(w: &World) -> Client {
    let mut a = w.login(0, "alice", ClientType::Windows);
    let me = a.user_id().unwrap();
    sync_route(&mut a, me);
    a
}

struct Services {
    http: StandIn,
    apns: StandIn,
    apns_public: String,
    _dir: tempfile::TempDir,
    cfg: PushConfig,
}

/// FCM (and Google's token endpoint) on HTTP/1.1, APNs on HTTP/2 + TLS,
/// and the push_server configuration pointing at them.
fn services() -> Services {
    let http = StandIn::start(
        false,
        Arc::new(|s: &Seen| {
            if s.path == "/token" {
                (
                    200,
                    format!(
                        r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":3599,"token_type":"Bearer"}}"#
                    ),
                )
            } else {
                (
                    200,
                    format!(r#"{{"name":"projects/{PROJECT}/messages/1"}}"#),
                )
            }
        }),
    );
    let apns = StandIn::start(true, Arc::new(|_: &Seen| (200, String::new())));
    let dir = tempfile::tempdir().unwrap();
    let account = serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "client_email": "push@tt-test.iam.gserviceaccount.com",
        "private_key": include_str!("data/fcm-test-key.pem"),
        "token_uri": format!("{}/token", http.url("http")),
    });
    let path = dir.path().join("service-account.json");
    std::fs::write(&path, account.to_string()).unwrap();
    let mut fcm = push::fcm_from_file(&path).expect("service account");
    fcm.base_url = http.url("http");
    let key = rcgen::KeyPair::generate().unwrap();
    let sinks = Sinks {
        webhook: None,
        fcm: Some(fcm),
        apns: Some(ApnsSettings {
            key: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            topic: "com.example.teamtalk".into(),
            base_url: apns.url("https"),
        }),
    };
    let mut cfg = PushConfig::new("127.0.0.1:0".parse().unwrap(), sinks.clone());
    cfg.routes = push::default_routes(&sinks);
    cfg.extra_roots = vec![
        teamtalk_conn::tls::testing::TestPki::shared()
            .ca_pem()
            .as_bytes()
            .to_vec(),
    ];
    Services {
        http,
        apns,
        apns_public: key.public_key_pem(),
        _dir: dir,
        cfg,
    }
}

fn world_pushing_to(cfg: PushConfig) -> World {
    world_with(move |c| {
        c.link_timers = Some((Duration::from_millis(200), Duration::from_secs(8)));
        c.push = cfg;
    })
}

#[test]
fn offline_phones_get_one_push_each_through_fcm_and_apns() {
    let s = services();
    let w = world_pushing_to(s.cfg.clone());
    phone_goes_offline(&w, "bob", ClientType::Android, "fcm-token-bob");
    phone_goes_offline(&w, "carol", ClientType::Ios, "apns-token-carol");
    let mut a = alice(&w);
    let bob = w.user_id("bob");
    let carol = w.user_id("carol");
    let alice_id = w.user_id("alice");

    let msg_id = send(&mut a, bob, "hello bob");
    let sends = s.http.wait_for("/v1/", 1);
    assert_eq!(sends.len(), 1, "one FCM send for one message: {sends:?}");
    let f = &sends[0];
    assert_eq!(f.path, format!("/v1/projects/{PROJECT}/messages:send"));
    assert_eq!(f.header("authorization"), format!("Bearer {ACCESS_TOKEN}"));
    assert!(f.header("content-type").starts_with("application/json"));
    let m = &f.json()["message"];
    assert_eq!(m["token"], "fcm-token-bob");
    assert_eq!(m["notification"]["body"], "ALICE:hello bob");
    let data: Value = serde_json::from_str(m["data"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        data,
        serde_json::json!({"msg_type": 1, "from_id": alice_id})
    );
    assert_eq!(m["data"]["badge"], "1");
    assert_eq!(m["android"]["priority"], "HIGH");
    let _ = msg_id;

    // The OAuth2 grant: an RS256 assertion Google would accept.
    let grants = s.http.requests("/token");
    assert_eq!(grants.len(), 1, "the access token is reused");
    let form: Vec<(String, String)> = form_urlencoded::parse(&grants[0].body)
        .into_owned()
        .collect();
    assert!(form.contains(&(
        "grant_type".into(),
        "urn:ietf:params:oauth:grant-type:jwt-bearer".into()
    )));
    let assertion = &form.iter().find(|(k, _)| k == "assertion").unwrap().1;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[format!("{}/token", s.http.url("http"))]);
    v.set_issuer(&["push@tt-test.iam.gserviceaccount.com"]);
    let public = DecodingKey::from_rsa_pem(include_bytes!("data/fcm-test-key.pub.pem")).unwrap();
    let claims = jsonwebtoken::decode::<Value>(assertion, &public, &v)
        .expect("assertion verifies")
        .claims;
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );

    send(&mut a, carol, "hello carol");
    let pushes = s.apns.wait_for("/3/device/", 1);
    assert_eq!(pushes.len(), 1, "one APNs request: {pushes:?}");
    let p = &pushes[0];
    assert_eq!(p.version, http::Version::HTTP_2);
    assert_eq!(p.path, "/3/device/apns-token-carol");
    assert_eq!(p.header("apns-topic"), "com.example.teamtalk");
    assert_eq!(p.header("apns-push-type"), "alert");
    assert_eq!(p.header("apns-priority"), "10");
    assert!(p.header("apns-expiration").parse::<u64>().is_ok());
    let body = p.json();
    assert_eq!(body["aps"]["alert"], "ALICE:hello carol");
    assert_eq!(body["aps"]["sound"], "default");
    assert_eq!(body["aps"]["badge"], 1);
    let jwt = p
        .header("authorization")
        .strip_prefix("bearer ")
        .expect("bearer");
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
    let mut v = Validation::new(Algorithm::ES256);
    v.required_spec_claims = HashSet::new();
    v.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(
        jwt,
        &DecodingKey::from_ec_pem(s.apns_public.as_bytes()).unwrap(),
        &v,
    )
    .expect("provider token verifies")
    .claims;
    assert_eq!(claims["iss"], "TEAM123456");
    assert!(claims["iat"].as_u64().is_some());
    // Bob got nothing more.
    assert_eq!(s.http.requests("/v1/").len(), 1);

    // A phone online: no push.
    let _bob = w.login(0, "bob", ClientType::Android);
    send(&mut a, bob, "are you there");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        s.http.requests("/v1/").len(),
        1,
        "no push to a connected phone"
    );
}

/// A gate a stand-in's reply waits at until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Gate {
    fn wait(&self) {
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let _open = self
            .opened
            .wait_timeout_while(open, T, |open| !*open)
            .unwrap();
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn an_invalid_token_is_removed_but_one_registered_meanwhile_stays() {
    let mut s = services();
    // FCM: "dead-token" is unregistered, answered only once the gate opens.
    let gate = Arc::new(Gate::default());
    let held = Arc::clone(&gate);
    let fcm = StandIn::start(
        false,
        Arc::new(move |seen: &Seen| {
            if seen.path == "/token" {
                return (
                    200,
                    format!(r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":3599}}"#),
                );
            }
            if seen.json()["message"]["token"] == "dead-token" {
                held.wait();
                return (
                    404,
                    r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}"#
                        .to_owned(),
                );
            }
            (
                200,
                format!(r#"{{"name":"projects/{PROJECT}/messages/2"}}"#),
            )
        }),
    );
    let fcm_settings = s.cfg.sinks.fcm.as_mut().unwrap();
    fcm_settings.base_url = fcm.url("http");
    fcm_settings.token_uri = format!("{}/token", fcm.url("http"));
    let w = world_pushing_to(s.cfg.clone());
    let results = |w: &World| {
        w.sys.msg_servers()[0]
            .inspect(|a| a.push_results())
            .unwrap()
    };

    phone_goes_offline(&w, "bob", ClientType::Android, "dead-token");
    let mut a = alice(&w);
    let bob = w.user_id("bob");
    send(&mut a, bob, "first");
    let mut polls = 0;
    while gate.waiting() == 0 {
        polls += 1;
        assert!(polls < POLLS, "FCM never asked about the dead token");
        std::thread::sleep(POLL);
    }
    // While FCM makes up its mind, the phone comes back with a new token.
    phone_goes_offline(&w, "bob", ClientType::Android, "fresh-token");
    gate.open();
    let mut polls = 0;
    while results(&w).get(&2).copied().unwrap_or(0) == 0 {
        polls += 1;
        assert!(
            polls < POLLS,
            "the invalid token's verdict never came back: {:?}",
            results(&w)
        );
        std::thread::sleep(POLL);
    }
    // The removal asked for "dead-token" only; the next message still
    // reaches the phone's new token (db_proxy takes msg_server's requests
    // in order, so the token read for it follows the removal).
    send(&mut a, bob, "second");
    let sends = fcm.wait_for("/v1/", 2);
    let tokens: Vec<Value> = sends
        .iter()
        .map(|f| f.json()["message"]["token"].clone())
        .collect();
    assert_eq!(tokens, ["dead-token", "fresh-token"], "{sends:?}");
}

#[test]
fn a_shielded_group_member_gets_no_push_and_the_others_one() {
    let s = services();
    let w = world_pushing_to(s.cfg.clone());
    let (alice_id, bob, carol) = (w.user_id("alice"), w.user_id("bob"), w.user_id("carol"));
    let group = w
        .sys
        .store()
        .create_group(&daemons::store::NewGroup {
            name: "team".into(),
            avatar: String::new(),
            creator: alice_id,
            group_type: daemons::store::GroupType::Normal,
            members: vec![bob, carol],
        })
        .expect("group")
        .id;
    // Bob mutes the group before leaving.
    let mut b = w.login(0, "bob", ClientType::Android);
    let shield = ImGroupShieldReq {
        user_id: bob,
        group_id: group,
        shield_status: 1,
        attach_data: None,
    };
    b.request(
        Command::GroupShieldGroupRequest,
        &shield,
        Command::GroupShieldGroupResponse,
        T,
    )
    .expect("shield set");
    drop(b);
    phone_goes_offline(&w, "bob", ClientType::Android, "fcm-token-bob");
    phone_goes_offline(&w, "carol", ClientType::Ios, "apns-token-carol");
    let mut a = alice(&w);
    let mut m = common::text(group, "hi team");
    m.msg_type = 0x11;
    a.request(Command::MsgData, &m, Command::MsgDataAck, T)
        .expect("ack");
    let pushes = s.apns.wait_for("/3/device/", 1);
    assert_eq!(pushes.len(), 1, "carol pushed once: {pushes:?}");
    let body = pushes[0].json();
    assert_eq!(body["data"]["group_id"], group);
    assert_eq!(body["data"]["msg_type"], 0x11);
    assert!(
        s.http.requests("/v1/").is_empty(),
        "bob muted the group: no FCM request"
    );
}

#[test]
fn the_webhook_gets_one_post_and_a_failing_one_is_retried_then_given_up() {
    let hook = StandIn::start(
        false,
        Arc::new(|s: &Seen| {
            if s.json()["token"] == "failing-token" {
                (503, "{}".into())
            } else {
                (204, String::new())
            }
        }),
    );
    let sinks = Sinks {
        webhook: Some(WebhookSettings {
            url: format!("{}/push", hook.url("http")),
            bearer: Some("hook-secret".into()),
        }),
        ..Sinks::default()
    };
    let mut cfg = PushConfig::new("127.0.0.1:0".parse().unwrap(), sinks.clone());
    cfg.routes = push::default_routes(&sinks);
    cfg.limits.max_attempts = 3;
    cfg.limits.retry_base = Duration::from_secs(1);
    let w = world_pushing_to(cfg);
    phone_goes_offline(&w, "bob", ClientType::Android, "good-token");
    phone_goes_offline(&w, "carol", ClientType::Ios, "failing-token");
    let mut a = alice(&w);
    let (alice_id, bob, carol) = (w.user_id("alice"), w.user_id("bob"), w.user_id("carol"));

    send(&mut a, bob, "ping");
    let posts = hook.wait_for("/push", 1);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].header("authorization"), "Bearer hook-secret");
    let b = posts[0].json();
    assert_eq!(b["user_id"], bob);
    assert_eq!(b["platform"], "android");
    assert_eq!(b["token"], "good-token");
    assert_eq!(b["flash"], "ALICE:ping");
    assert_eq!(b["data"]["from_id"], alice_id);
    assert_eq!(b["silent"], false);

    send(&mut a, carol, "ping");
    // Three attempts (1 s, then 2 s apart), then given up.
    let mut polls = 0;
    let gave_up = || {
        w.sys
            .push()
            .inspect(|app| app.finished(SinkKind::Webhook, "gave_up"))
            .unwrap()
    };
    while gave_up() == 0 {
        polls += 1;
        assert!(polls < POLLS, "never given up");
        std::thread::sleep(POLL);
    }
    let failing: Vec<Seen> = hook
        .requests("/push")
        .into_iter()
        .filter(|s| s.json()["token"] == "failing-token")
        .collect();
    assert_eq!(failing.len(), 3, "retried up to MaxAttempts");
    let mut scrape = daemons::metrics::Scrape::new();
    w.sys.push().metrics().collect(&mut scrape);
    let text = scrape.render();
    assert!(
        text.contains(r#"teamtalk_push_deliveries_total{sink="webhook",result="gave_up"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"teamtalk_push_retries_total{sink="webhook"} 2"#),
        "{text}"
    );
}
