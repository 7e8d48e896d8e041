//! The admin port: `GET /metrics` (Prometheus text) and `GET /healthz`
//! (200 `ok`, or 503 with one reason per line), as a daemon of its own on
//! the shared runtime.
//!
//! It is an ordinary App with one HTTP listener: slow or idle clients are
//! cut off by the HTTP machine's deadlines and a per-source connection
//! cap, so they never delay another scrape. Collecting asks every daemon's
//! App thread (a blocking question with a time limit), so that work runs
//! on the admin's worker, never on its App thread.
//!
//! With an [`AdminApi`] (under `teamtalk up`, and on db_proxy_server) the
//! same port serves the admin REST API under `/api/` and the web console
//! at `/` ([`crate::admin_api`]); API calls run on the worker too, since
//! they write the store.
//!
//! Listening beyond loopback requires a bearer token (`AdminToken=`):
//! metrics and health say a lot about a deployment. With a token, every
//! request must carry `Authorization: Bearer <token>`; the comparison
//! takes the same time whatever the guess.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::{Method, StatusCode, header};
use bytes::Bytes;
use subtle::ConstantTimeEq;
use teamtalk_conn::{HttpConfig, OversizedBody};
use tracing::{debug, info};

use super::contract::{App, Conn, Input, Now, Out, Request, Response, Worker};
use super::error::DaemonError;
use super::plan::{Plan, PortKind};
use super::running::Running;
use crate::admin_api::{AdminApi, Console, MAX_BODY};
use crate::http;
use crate::metrics::{CONTENT_TYPE, MetricsSource, Scrape};

/// Largest request head; scrapers send a few hundred bytes.
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// API bodies over [`MAX_BODY`] and up to this long are answered with the
/// API's JSON 413.
pub const MAX_DISCARD: usize = 1 << 20;
/// Connections one address may hold on the admin port.
pub const MAX_PER_SOURCE: usize = 16;

/// Where and how to serve the admin port.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminSettings {
    /// Listen address (port 0 picks one).
    pub addr: SocketAddr,
    /// Bearer token every request must carry; required when `addr` is not
    /// a loopback address.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl AdminSettings {
    /// Loopback-only settings without a token.
    #[must_use]
    pub fn local(addr: SocketAddr) -> Self {
        Self { addr, token: None }
    }

    /// `addr` with `token`.
    #[must_use]
    pub fn with_token(addr: SocketAddr, token: Option<String>) -> Self {
        Self { addr, token }
    }
}

/// Reads `AdminListen=` as every daemon's conf has it: unset, the admin
/// endpoint is on, on loopback with a port the kernel picks (logged at
/// start); `off` (or `none`, `no`, `false`) serves none; otherwise an
/// `IP:PORT`.
///
/// # Errors
/// A value that is none of these.
pub fn listen_from_conf(
    conf: &crate::conf::Conf,
) -> Result<Option<SocketAddr>, crate::conf::ConfError> {
    match conf.get("AdminListen") {
        None => Ok(Some(SocketAddr::from(([127, 0, 0, 1], 0)))),
        Some(v) if ["off", "none", "no", "false"].contains(&v.to_ascii_lowercase().as_str()) => {
            Ok(None)
        }
        Some(_) => conf.get_parsed("AdminListen"),
    }
}

/// What the worker is asked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AdminQuery {
    /// `/metrics`.
    Metrics,
    /// `/healthz`.
    Health,
    /// A request to the admin API (`/api/…`).
    Api(Box<Request>),
}

/// The admin port's decisions: which path, whether the token is right.
pub struct AdminApp {
    token: Option<Vec<u8>>,
    /// The web console, served when the port has the API.
    console: Option<Console>,
    answered: u64,
    refused: u64,
}

impl std::fmt::Debug for AdminApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApp")
            .field("answered", &self.answered)
            .finish_non_exhaustive()
    }
}

impl AdminApp {
    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        given.ct_eq(token).into()
    }

    fn route(&mut self, request: &Request) -> Result<AdminQuery, Box<Response>> {
        let path = request.uri().path();
        let query = match path {
            "/metrics" => AdminQuery::Metrics,
            "/healthz" => AdminQuery::Health,
            path if self.console.is_some() && AdminApi::owns(path) => {
                if !self.authorized(request) {
                    self.refused += 1;
                    let mut r = http::error(StatusCode::UNAUTHORIZED, "bearer token required");
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                    return Err(Box::new(r));
                }
                if self.token.is_none() && !host_is_an_address(request) {
                    // Without a token, only a page that names the port by
                    // its address gets in: a name could be a DNS-rebinding
                    // page of another site pointed at loopback.
                    self.refused += 1;
                    return Err(Box::new(http::error(
                        StatusCode::FORBIDDEN,
                        "without an AdminToken the API answers requests to the port's address \
                         (127.0.0.1, localhost) only",
                    )));
                }
                if let Some(o) = request.extensions().get::<OversizedBody>() {
                    return Err(Box::new(http::error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("body of {} bytes exceeds {MAX_BODY}", o.length),
                    )));
                }
                return Ok(AdminQuery::Api(Box::new(request.clone())));
            }
            _ => {
                // The console's files need no token: they hold nothing
                // but the page, which asks for the token.
                if let Some(r) = self.console.as_ref().and_then(|c| c.respond(request)) {
                    return Err(Box::new(r));
                }
                return Err(Box::new(http::text(
                    StatusCode::NOT_FOUND,
                    "not found; try /metrics or /healthz\n",
                )));
            }
        };
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return Err(Box::new(http::method_not_allowed(&[
                Method::GET,
                Method::HEAD,
            ])));
        }
        if !self.authorized(request) {
            self.refused += 1;
            let mut r = http::text(StatusCode::UNAUTHORIZED, "bearer token required\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return Err(Box::new(r));
        }
        Ok(query)
    }
}

impl App for AdminApp {
    type Job = (Conn, AdminQuery);
    type Done = (Conn, Response);

    fn name(&self) -> &'static str {
        "admin"
    }

    fn handle(&mut self, _now: Now, input: Input<'_, Self::Done>, out: &mut Out<Self::Job>) {
        match input {
            Input::Http { conn, request } => match self.route(request) {
                Ok(query) => out.job(0, (conn, query)),
                Err(response) => out.respond(conn, *response),
            },
            Input::Done((conn, response)) => {
                self.answered += 1;
                out.respond(conn, response);
            }
            other => debug!(input = ?other, "input the admin port does not use"),
        }
    }

    fn collect(&self, scrape: &mut Scrape) {
        scrape.counter(
            "teamtalk_admin_answered_total",
            "Admin requests answered.",
            &[],
            self.answered,
        );
        scrape.counter(
            "teamtalk_admin_unauthorized_total",
            "Admin requests refused for a missing or wrong token.",
            &[],
            self.refused,
        );
    }

    fn health(&self, _problems: &mut Vec<String>) {}
}

/// Whether the request's `Host` is an IP address or `localhost` (with an
/// optional port), not a DNS name, or absent (HTTP/1.0 tools).
fn host_is_an_address(request: &Request) -> bool {
    let Some(host) = request.headers().get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    if host.parse::<SocketAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.parse::<u16>().is_ok() {
            name
        } else {
            host
        }
    });
    name.eq_ignore_ascii_case("localhost")
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Collects from the daemons and serves the API, off the admin's App
/// thread.
pub struct AdminWorker {
    source: Arc<dyn MetricsSource>,
    api: Option<Arc<AdminApi>>,
}

impl Worker for AdminWorker {
    type Job = (Conn, AdminQuery);
    type Done = (Conn, Response);

    fn run(&mut self, jobs: Vec<Self::Job>, done: &mut Vec<Self::Done>) {
        for (conn, query) in jobs {
            let response = match (query, &self.api) {
                (AdminQuery::Api(request), Some(api)) => api.handle(&request),
                (AdminQuery::Api(_), None) => http::not_found(),
                (query, _) => answer(&*self.source, query),
            };
            done.push((conn, response));
        }
    }
}

/// The answer to one admin query.
#[must_use]
pub fn answer(source: &dyn MetricsSource, query: AdminQuery) -> Response {
    match query {
        AdminQuery::Metrics => {
            let mut scrape = Scrape::new();
            source.collect(&mut scrape);
            http::bytes(
                StatusCode::OK,
                CONTENT_TYPE,
                Bytes::from(scrape.render().into_bytes()),
            )
        }
        AdminQuery::Api(_) => http::not_found(),
        AdminQuery::Health => {
            let mut problems = Vec::new();
            source.health(&mut problems);
            if problems.is_empty() {
                http::text(StatusCode::OK, "ok\n")
            } else {
                let mut body = String::from("unhealthy\n");
                for p in problems {
                    body.push_str(&p);
                    body.push('\n');
                }
                http::text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        }
    }
}

/// Serves `/metrics` and `/healthz` for `source` as `settings` say.
///
/// # Errors
/// [`DaemonError::Config`] when the address is not loopback and no token
/// is set; [`DaemonError::Listen`] when it cannot be bound.
pub fn serve_admin(
    settings: &AdminSettings,
    source: Arc<dyn MetricsSource>,
) -> Result<Running<AdminApp>, DaemonError> {
    serve_admin_api(settings, source, None)
}

/// Serves `/metrics` and `/healthz` for `source` and, with `api`, the
/// admin API under `/api/` and the web console at `/`.
///
/// # Errors
/// As [`serve_admin`].
pub fn serve_admin_api(
    settings: &AdminSettings,
    source: Arc<dyn MetricsSource>,
    api: Option<Arc<AdminApi>>,
) -> Result<Running<AdminApp>, DaemonError> {
    if !settings.addr.ip().is_loopback() && settings.token.as_deref().is_none_or(str::is_empty) {
        return Err(DaemonError::Config {
            daemon: "admin",
            reason: format!(
                "the admin port {} is not on loopback: set AdminToken= (a bearer token every \
                 request must carry) or listen on 127.0.0.1",
                settings.addr
            ),
        });
    }
    let mut plan = Plan::new();
    plan.listen(
        "admin",
        "admin",
        settings.addr,
        PortKind::Http {
            config: HttpConfig {
                header_timeout: REQUEST_TIMEOUT,
                body_timeout: REQUEST_TIMEOUT,
                max_head_bytes: MAX_REQUEST,
                max_body_bytes: if api.is_some() { MAX_BODY } else { 0 },
                // Somewhat larger API bodies are read and dropped, to be
                // answered with the API's JSON error; far larger ones get
                // the machine's bare 413.
                max_discard_bytes: if api.is_some() { MAX_DISCARD } else { 0 },
                ..HttpConfig::default()
            },
            max_per_source: Some(MAX_PER_SOURCE),
        },
    );
    let has_api = api.is_some();
    let console = has_api.then(Console::new);
    plan.worker(AdminWorker { source, api });
    let app = AdminApp {
        token: settings.token.as_ref().map(|t| t.as_bytes().to_vec()),
        console,
        answered: 0,
        refused: 0,
    };
    let running = super::start(app, plan)?;
    if has_api {
        info!(addr = %running.addr(), token = settings.token.is_some(),
            "admin endpoint: /metrics, /healthz, the admin API under /api/ and the console at /");
    } else {
        info!(addr = %running.addr(), token = settings.token.is_some(), "admin endpoint: /metrics and /healthz");
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn app(token: Option<&str>) -> AdminApp {
        AdminApp {
            token: token.map(|t| t.as_bytes().to_vec()),
            console: None,
            answered: 0,
            refused: 0,
        }
    }

    fn req(method: &str, path: &str, auth: Option<&str>) -> Request {
        let mut b = ::http::Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(Bytes::new()).unwrap()
    }

    #[test]
    fn paths_methods_and_tokens() {
        let mut open = app(None);
        assert!(matches!(
            open.route(&req("GET", "/metrics", None)),
            Ok(AdminQuery::Metrics)
        ));
        assert!(matches!(
            open.route(&req("HEAD", "/healthz?x=1", None)),
            Ok(AdminQuery::Health)
        ));
        let r = open.route(&req("POST", "/metrics", None)).unwrap_err();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = open.route(&req("GET", "/", None)).unwrap_err();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        let mut locked = app(Some("s3cret"));
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Bearer s3cre"),
        ] {
            let r = locked.route(&req("GET", "/metrics", auth)).unwrap_err();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        }
        assert!(matches!(
            locked.route(&req("GET", "/metrics", Some("Bearer s3cret"))),
            Ok(AdminQuery::Metrics)
        ));
        assert_eq!(locked.refused, 4);
    }

    #[test]
    fn with_the_api_the_console_is_open_and_the_api_needs_the_token() {
        let mut a = app(Some("s3cret"));
        a.console = Some(Console::new());
        let page = a.route(&req("GET", "/", None)).unwrap_err();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers().contains_key("content-security-policy"));
        let js = a.route(&req("GET", "/console.js", None)).unwrap_err();
        assert_eq!(js.status(), StatusCode::OK);
        let r = a.route(&req("GET", "/api/users", None)).unwrap_err();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], http::JSON);
        assert!(matches!(
            a.route(&req("POST", "/api/users", Some("Bearer s3cret"))),
            Ok(AdminQuery::Api(r)) if r.uri().path() == "/api/users"
        ));
        assert_eq!(
            a.route(&req("GET", "/nothing", None)).unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
        // Without a token, a request naming the port by a DNS name (a
        // rebinding page) is refused; addresses and localhost pass.
        let mut open = app(None);
        open.console = Some(Console::new());
        let named = |host: &str| {
            let mut r = req("GET", "/api/users", None);
            r.headers_mut().insert(header::HOST, host.parse().unwrap());
            r
        };
        for host in [
            "127.0.0.1:8090",
            "localhost:8090",
            "[::1]:8090",
            "localhost",
            "10.0.0.1",
        ] {
            assert!(
                matches!(open.route(&named(host)), Ok(AdminQuery::Api(_))),
                "{host}"
            );
        }
        for host in [
            "evil.example:8090",
            "evil.example",
            "localhost.evil.example",
        ] {
            assert_eq!(
                open.route(&named(host)).unwrap_err().status(),
                StatusCode::FORBIDDEN,
                "{host}"
            );
        }
        // With a token any name will do.
        let mut r = named("admin.example:8090");
        r.headers_mut()
            .insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(matches!(a.route(&r), Ok(AdminQuery::Api(_))));

        // Without the API, /api is just another unknown path.
        let mut plain = app(None);
        assert_eq!(
            plain
                .route(&req("GET", "/api/users", None))
                .unwrap_err()
                .status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            plain.route(&req("GET", "/", None)).unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
    }

    struct Fake(AtomicBool);

    impl MetricsSource for Fake {
        fn collect(&self, out: &mut Scrape) {
            out.counter("fake_total", "Fake.", &[], 3);
        }

        fn health(&self, problems: &mut Vec<String>) {
            if !self.0.load(Ordering::Relaxed) {
                problems.push("fake link down".into());
            }
        }
    }

    #[test]
    fn answers_render_metrics_and_health() {
        let fake = Fake(AtomicBool::new(true));
        let m = answer(&fake, AdminQuery::Metrics);
        assert_eq!(m.status(), StatusCode::OK);
        assert_eq!(m.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert!(
            std::str::from_utf8(m.body())
                .unwrap()
                .contains("fake_total 3\n")
        );
        assert_eq!(answer(&fake, AdminQuery::Health).body().as_ref(), b"ok\n");
        fake.0.store(false, Ordering::Relaxed);
        let h = answer(&fake, AdminQuery::Health);
        assert_eq!(h.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.body().as_ref(), b"unhealthy\nfake link down\n");
    }

    #[test]
    fn beyond_loopback_a_token_is_required() {
        let source: Arc<dyn MetricsSource> = Arc::new(Fake(AtomicBool::new(true)));
        let open = AdminSettings::local("0.0.0.0:0".parse().unwrap());
        let err = serve_admin(&open, Arc::clone(&source)).unwrap_err();
        assert!(err.to_string().contains("AdminToken"), "{err}");
        let empty = AdminSettings::with_token("0.0.0.0:0".parse().unwrap(), Some(String::new()));
        assert!(serve_admin(&empty, Arc::clone(&source)).is_err());
        let ok = AdminSettings::with_token("0.0.0.0:0".parse().unwrap(), Some("t".into()));
        serve_admin(&ok, source).unwrap().stop();
    }
}
