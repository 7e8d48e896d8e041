//! [`MsfsApp`]: msfs's decisions, as a pure state machine. Which request
//! is a download and of what, which upload may go ahead (rate, quota,
//! bytes in flight), which worker gets it, what the answer's URL is, and
//! every counter. Files are only ever touched by the workers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Instant;

use http::header::{HOST, HeaderMap, IF_NONE_MATCH, RANGE};
use http::{Method, StatusCode};
use teamtalk_conn::OversizedBody;
use tracing::debug;

use super::name::{NameError, parse_request_path};
use super::store::Usage;
use super::upload::{self, UploadError};
use super::worker::{Done, Job};
use crate::http::Cors;
use crate::metrics::{CounterMap, Scrape};
use crate::runtime::{App, Conn, Input, Now, Out, Request, Response};

/// What bounds uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes stored in all (`QuotaBytes`); `None`: no limit.
    pub quota_bytes: Option<u64>,
    /// Uploads one source (IPv4 address or IPv6 /64) may start per minute
    /// (`UploadsPerMinute`), in bursts of as many; 0: no limit.
    pub uploads_per_minute: u32,
    /// Most upload bytes handed to the workers and not yet answered: past
    /// it, uploads are refused as busy rather than queued in memory.
    pub max_pending_bytes: u64,
    /// Most sources the rate limiter remembers at once.
    pub max_sources: usize,
}

/// Counts of what the App decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsfsCounts {
    /// Uploads that wrote a new file.
    pub stored: u64,
    /// Uploads whose bytes were stored already.
    pub duplicates: u64,
    /// File bytes of accepted uploads (new or not).
    pub upload_bytes: u64,
    /// Bytes newly written.
    pub stored_bytes: u64,
    /// Body bytes of downloads sent.
    pub download_bytes: u64,
}

/// Per-source token buckets: `per_minute` uploads at once, refilled at
/// `per_minute` a minute. A source whose bucket is full again is
/// forgotten, so the table holds only sources seen in the last minute.
#[derive(Debug)]
struct Limiter {
    per_minute: u32,
    max_sources: usize,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl Limiter {
    fn new(per_minute: u32, max_sources: usize) -> Self {
        Self {
            per_minute,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, tokens: f64, since: Instant, now: Instant) -> f64 {
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        (tokens + rate * now.saturating_duration_since(since).as_secs_f64()).min(cap)
    }

    /// Takes one upload from `ip`'s bucket, if there is one left.
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let key = teamtalk_net::source_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_sources {
            self.forget_full(now);
            if self.buckets.len() >= self.max_sources {
                // Every remembered source is limited: a new one waits too,
                // rather than growing the table without bound.
                return false;
            }
        }
        let cap = f64::from(self.per_minute);
        let (tokens, at) = self.buckets.get(&key).copied().unwrap_or((cap, now));
        let tokens = self.refill(tokens, at, now);
        if tokens >= 1.0 {
            self.buckets.insert(key, (tokens - 1.0, now));
            true
        } else {
            self.buckets.insert(key, (tokens, now));
            false
        }
    }

    /// Drops the sources whose bucket has refilled.
    fn forget_full(&mut self, now: Instant) {
        let cap = f64::from(self.per_minute);
        let refill = |tokens: f64, at: Instant| {
            (tokens + cap / 60.0 * now.saturating_duration_since(at).as_secs_f64()).min(cap)
        };
        self.buckets.retain(|_, (t, at)| refill(*t, *at) < cap);
    }
}

/// msfs's state and rules (see [`crate::msfs`]).
#[derive(Debug)]
pub struct MsfsApp {
    limits: Limits,
    public_url: Option<String>,
    download_workers: Range<usize>,
    upload_workers: Range<usize>,
    next_download: usize,
    next_upload: usize,
    /// The first bound address: the URL's host when a request names none.
    listen: Option<SocketAddr>,
    sources: HashMap<Conn, IpAddr>,
    limiter: Limiter,
    usage: Usage,
    /// Bytes of uploads handed to workers and not answered yet: reserved
    /// against the quota, and bounded by `max_pending_bytes`.
    pending: u64,
    counts: MsfsCounts,
    refused: CounterMap,
    downloads: CounterMap,
    /// The last upload could not be written (cleared by the next success).
    storage_failing: bool,
    /// Which web pages may read answers (`CorsOrigins`); `None`: no page.
    cors: Option<Cors>,
    /// The allowed `Origin` of each connection's latest request, for its
    /// answer (built later, by a worker). At most one per open connection.
    origins: HashMap<Conn, http::HeaderValue>,
}

impl MsfsApp {
    /// An App under `limits`, with `usage` already stored, handing
    /// downloads to the plan's workers `download_workers` and uploads to
    /// `upload_workers` (each range non-empty). `public_url`, when set,
    /// starts every URL it answers (else `http://<Host>/`).
    #[must_use]
    pub fn new(
        limits: Limits,
        public_url: Option<String>,
        usage: Usage,
        download_workers: Range<usize>,
        upload_workers: Range<usize>,
    ) -> Self {
        let public_url = public_url.map(|mut u| {
            if !u.ends_with('/') {
                u.push('/');
            }
            u
        });
        Self {
            limiter: Limiter::new(limits.uploads_per_minute, limits.max_sources),
            limits,
            public_url,
            download_workers,
            upload_workers,
            next_download: 0,
            next_upload: 0,
            listen: None,
            sources: HashMap::new(),
            usage,
            pending: 0,
            counts: MsfsCounts::default(),
            refused: CounterMap::new(),
            downloads: CounterMap::new(),
            storage_failing: false,
            cors: None,
            origins: HashMap::new(),
        }
    }

    /// Files and bytes stored.
    #[must_use]
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The counters so far.
    #[must_use]
    pub fn counts(&self) -> MsfsCounts {
        self.counts
    }

    /// Refusals so far under `reason` (the metric's label).
    #[must_use]
    pub fn refused(&self, reason: &str) -> u64 {
        self.refused.get(reason)
    }

    fn pick(range: &Range<usize>, next: &mut usize) -> usize {
        let n = range.len().max(1);
        let w = range.start + *next % n;
        *next = next.wrapping_add(1);
        w
    }

    /// `http://<host>/`: the configured public URL, else the request's
    /// `Host` (as TeamTalk did) when it is a plain `host[:port]`, else
    /// the address msfs listens on.
    fn base_url(&self, request: &Request) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = request
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| valid_host(h));
        match (host, self.listen) {
            (Some(h), _) => format!("http://{h}/"),
            (None, Some(addr)) => format!("http://{addr}/"),
            (None, None) => "http://127.0.0.1/".to_owned(),
        }
    }

    /// Lets pages of `origins` (`*` for any) read upload answers: a web
    /// client served elsewhere (login_server's, under `teamtalk up`).
    #[must_use]
    pub fn with_cors(mut self, origins: &[String]) -> Self {
        self.cors = (!origins.is_empty()).then(|| {
            Cors::new(origins.iter().cloned())
                .methods(&[Method::GET, Method::HEAD, Method::POST])
                .headers(&[http::header::CONTENT_TYPE])
        });
        self
    }

    /// Answers `conn`, with the CORS headers when its request came from an
    /// allowed origin. Every answer goes through here.
    fn respond(&mut self, out: &mut Out<Job>, conn: Conn, mut response: Response) {
        if let (Some(cors), Some(origin)) = (&self.cors, self.origins.get(&conn)) {
            cors.apply_allowed(origin.clone(), &mut response);
        }
        out.respond(conn, response);
    }

    fn refuse(&mut self, conn: Conn, e: UploadError, out: &mut Out<Job>) {
        debug!(%conn, reason = e.label(), "upload refused");
        self.refused.inc(e.label());
        self.respond(out, conn, upload::failure(e));
    }

    fn request(&mut self, now: Now, conn: Conn, request: &Request, out: &mut Out<Job>) {
        if let Some(cors) = &self.cors {
            if let Some(answer) = cors.preflight(request) {
                return out.respond(conn, answer);
            }
            match cors.allowed_origin(request) {
                Some(origin) => self.origins.insert(conn, origin),
                None => self.origins.remove(&conn),
            };
        }
        let method = request.method().clone();
        if request.extensions().get::<OversizedBody>().is_some() {
            if method == Method::POST {
                return self.refuse(conn, UploadError::TooLarge, out);
            }
            self.refused.inc("too_large");
            return self.respond(
                out,
                conn,
                crate::http::error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            );
        }
        match method {
            Method::GET | Method::HEAD => self.download(conn, request, method == Method::HEAD, out),
            Method::POST => {
                if request.uri().path().contains("..") {
                    self.refused.inc("traversal");
                    return self.respond(out, conn, crate::http::bad_request("path not allowed"));
                }
                self.upload(now, conn, request, out);
            }
            _ => {
                self.refused.inc("method");
                self.respond(
                    out,
                    conn,
                    crate::http::method_not_allowed(&[Method::GET, Method::HEAD, Method::POST]),
                );
            }
        }
    }

    fn download(&mut self, conn: Conn, request: &Request, head: bool, out: &mut Out<Job>) {
        match parse_request_path(request.uri().path()) {
            Err(NameError::Traversal) => {
                self.refused.inc("traversal");
                self.respond(out, conn, crate::http::bad_request("path not allowed"));
            }
            Err(NameError::NotFound) => {
                self.downloads.inc("404");
                self.respond(out, conn, crate::http::not_found());
            }
            Ok(name) => {
                let mut headers = HeaderMap::new();
                for h in [RANGE, IF_NONE_MATCH] {
                    if let Some(v) = request.headers().get(&h) {
                        headers.insert(h, v.clone());
                    }
                }
                let worker = Self::pick(&self.download_workers, &mut self.next_download);
                out.job(
                    worker,
                    Job::Download {
                        conn,
                        name,
                        head,
                        headers,
                    },
                );
            }
        }
    }

    fn upload(&mut self, now: Now, conn: Conn, request: &Request, out: &mut Out<Job>) {
        let len = request.body().len() as u64;
        let source = self
            .sources
            .get(&conn)
            .copied()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if !self.limiter.allow(source, now.mono) {
            return self.refuse(conn, UploadError::RateLimited, out);
        }
        if let Some(quota) = self.limits.quota_bytes
            && self
                .usage
                .bytes
                .saturating_add(self.pending)
                .saturating_add(len)
                > quota
        {
            return self.refuse(conn, UploadError::QuotaFull, out);
        }
        if self.pending.saturating_add(len) > self.limits.max_pending_bytes {
            return self.refuse(conn, UploadError::Busy, out);
        }
        self.pending += len;
        let worker = Self::pick(&self.upload_workers, &mut self.next_upload);
        out.job(
            worker,
            Job::Upload {
                conn,
                content_type: request.headers().get(http::header::CONTENT_TYPE).cloned(),
                body: request.body().clone(),
                base_url: self.base_url(request),
            },
        );
    }

    fn done(&mut self, done: Done, out: &mut Out<Job>) {
        match done {
            Done::Upload {
                conn,
                reserved,
                result,
                base_url,
            } => {
                self.pending = self.pending.saturating_sub(reserved);
                match result {
                    Ok(stored) => {
                        self.storage_failing = false;
                        self.counts.upload_bytes += stored.len;
                        if stored.created {
                            self.counts.stored += 1;
                            self.counts.stored_bytes += stored.len;
                            self.usage.files += 1;
                            self.usage.bytes += stored.len;
                        } else {
                            self.counts.duplicates += 1;
                        }
                        let path = stored.name.path();
                        let url = format!("{base_url}{path}");
                        self.respond(out, conn, upload::success(&path, &url));
                    }
                    Err(e) => {
                        if e == UploadError::Storage {
                            self.storage_failing = true;
                        }
                        self.refuse(conn, e, out);
                    }
                }
            }
            Done::Download {
                conn,
                response,
                served,
            } => {
                self.downloads.inc(served.status());
                self.counts.download_bytes += served.bytes();
                self.respond(out, conn, response);
            }
        }
    }
}

/// A `Host` value fit to put in a URL: `host[:port]` without user info,
/// path or anything a client could use to point the URL elsewhere.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && !h.contains(['@', '/', '?', '#'])
        && h.parse::<http::uri::Authority>().is_ok()
}

impl App for MsfsApp {
    type Job = Job;
    type Done = Done;

    fn name(&self) -> &'static str {
        "msfs"
    }

    fn handle(&mut self, now: Now, input: Input<'_, Done>, out: &mut Out<Job>) {
        match input {
            Input::Listening { addr, .. } => {
                if self.listen.is_none() {
                    self.listen = Some(addr);
                }
            }
            Input::Opened { conn, peer, .. } => {
                self.sources.insert(conn, peer.ip());
            }
            Input::Closed { conn, .. } => {
                self.sources.remove(&conn);
                self.origins.remove(&conn);
            }
            Input::Http { conn, request } => self.request(now, conn, request, out),
            Input::Done(done) => self.done(done, out),
            Input::Tick => self.limiter.forget_full(now.mono),
            other => debug!(input = ?other, "input msfs does not use"),
        }
    }

    fn collect(&self, out: &mut Scrape) {
        let c = self.counts;
        out.counter(
            "teamtalk_msfs_uploads_total",
            "Uploads answered with a path, by whether they wrote a new file.",
            &[("result", "stored")],
            c.stored,
        );
        out.counter(
            "teamtalk_msfs_uploads_total",
            "Uploads answered with a path, by whether they wrote a new file.",
            &[("result", "duplicate")],
            c.duplicates,
        );
        out.counter(
            "teamtalk_msfs_upload_bytes_total",
            "File bytes of uploads answered with a path (duplicates included).",
            &[],
            c.upload_bytes,
        );
        out.counter(
            "teamtalk_msfs_stored_bytes_total",
            "Bytes written as new files.",
            &[],
            c.stored_bytes,
        );
        self.refused.render(
            out,
            "teamtalk_msfs_refused_total",
            "Requests refused, by reason (too_large, malformed, bad_name, quota, rate_limited, \
             busy, storage_error, traversal, method).",
            &[],
            "reason",
        );
        self.downloads.render(
            out,
            "teamtalk_msfs_downloads_total",
            "Download requests answered, by status.",
            &[],
            "status",
        );
        out.counter(
            "teamtalk_msfs_download_bytes_total",
            "Body bytes of download answers.",
            &[],
            c.download_bytes,
        );
        out.gauge(
            "teamtalk_msfs_files",
            "Files stored.",
            &[],
            self.usage.files as f64,
        );
        out.gauge(
            "teamtalk_msfs_used_bytes",
            "Bytes stored (what QuotaBytes limits).",
            &[],
            self.usage.bytes as f64,
        );
        out.gauge(
            "teamtalk_msfs_quota_bytes",
            "QuotaBytes (0: no quota).",
            &[],
            self.limits.quota_bytes.unwrap_or(0) as f64,
        );
        out.gauge(
            "teamtalk_msfs_pending_upload_bytes",
            "Upload bytes handed to the workers and not answered yet.",
            &[],
            self.pending as f64,
        );
        out.gauge(
            "teamtalk_msfs_rate_limited_sources",
            "Sources the upload rate limiter remembers.",
            &[],
            self.limiter.buckets.len() as f64,
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        if self.storage_failing {
            problems.push("the last upload could not be written to BaseDir".to_owned());
        }
        if let Some(q) = self.limits.quota_bytes
            && self.usage.bytes >= q
        {
            problems.push(format!(
                "quota full: {} of {q} bytes used",
                self.usage.bytes
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, ORIGIN};

    use super::*;
    use crate::msfs::name::{Digest, StoredName, Suffix};
    use crate::msfs::worker::{Served, Stored};
    use crate::runtime::{Action, CloseCause, PortId};

    fn limits() -> Limits {
        Limits {
            quota_bytes: Some(10_000),
            uploads_per_minute: 3,
            max_pending_bytes: 2500,
            max_sources: 4,
        }
    }

    fn app(limits: Limits) -> MsfsApp {
        MsfsApp::new(limits, None, Usage::default(), 0..2, 2..3)
    }

    fn now() -> Now {
        Now::new(crate::clock::now(), crate::clock::wall())
    }

    fn open(app: &mut MsfsApp, now: Now, n: u32, ip: &str) -> Conn {
        let conn = Conn::test(n);
        let mut out = Out::new();
        app.handle(
            now,
            Input::Opened {
                conn,
                port: PortId(0),
                peer: SocketAddr::new(ip.parse().unwrap(), 40000),
            },
            &mut out,
        );
        conn
    }

    fn post(len: usize, host: Option<&str>) -> Request {
        let mut b =
            http::Request::post("/").header(CONTENT_TYPE, "multipart/form-data; boundary=B");
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(Bytes::from(vec![b'x'; len])).unwrap()
    }

    fn handle(app: &mut MsfsApp, now: Now, conn: Conn, req: &Request) -> Out<Job> {
        let mut out = Out::new();
        app.handle(now, Input::Http { conn, request: req }, &mut out);
        out
    }

    /// The upload error code answered, or None when the upload became a job.
    fn answered_code(out: &Out<Job>) -> Option<u64> {
        match out.actions() {
            [Action::Respond(_, r)] => {
                let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
                v["error_code"].as_u64()
            }
            [
                Action::Job {
                    job: Job::Upload { .. },
                    ..
                },
            ] => None,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn stored(len: u64, created: bool) -> Stored {
        Stored {
            name: StoredName {
                digest: Digest::of(&len.to_be_bytes()),
                suffix: Suffix {
                    size: Some((4, 3)),
                    ext: "png".into(),
                },
            },
            len,
            created,
        }
    }

    #[test]
    fn pages_of_allowed_origins_read_upload_answers_and_others_do_not() {
        let mut a = app(limits()).with_cors(&["http://chat.example:8080".to_owned()]);
        let t = now();
        let c = open(&mut a, t, 1, "192.0.2.1");
        let from = |origin: &str| {
            let mut r = post(10, Some("img.example"));
            r.headers_mut().insert(ORIGIN, origin.parse().unwrap());
            r
        };
        let answer = |a: &mut MsfsApp| {
            let mut out = Out::new();
            a.handle(
                t,
                Input::Done(Done::Upload {
                    conn: c,
                    reserved: 10,
                    result: Ok(stored(8, true)),
                    base_url: "http://img.example/".into(),
                }),
                &mut out,
            );
            let [Action::Respond(_, r)] = out.actions() else {
                panic!("{:?}", out.actions());
            };
            r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).cloned()
        };
        // The answer is built by a worker, later: the origin is remembered.
        let _ = handle(&mut a, t, c, &from("http://chat.example:8080"));
        assert_eq!(answer(&mut a).unwrap(), "http://chat.example:8080");
        let _ = handle(&mut a, t, c, &from("http://evil.example"));
        assert_eq!(answer(&mut a), None);
        // A preflight is answered at once, without a job.
        let pre = http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/")
            .header(ORIGIN, "http://chat.example:8080")
            .header("access-control-request-method", "POST")
            .body(Bytes::new())
            .unwrap();
        let out = handle(&mut a, t, c, &pre);
        let [Action::Respond(_, r)] = out.actions() else {
            panic!("{:?}", out.actions());
        };
        assert_eq!(r.status(), 204);
        // Closing forgets the connection's origin.
        let mut out = Out::new();
        a.handle(
            t,
            Input::Closed {
                conn: c,
                reason: CloseCause::Pdu(teamtalk_conn::CloseReason::PeerClosed),
            },
            &mut out,
        );
        assert!(a.origins.is_empty());
    }

    #[test]
    fn uploads_go_to_the_upload_workers_with_the_hosts_url() {
        let mut a = app(limits());
        let t = now();
        let c = open(&mut a, t, 1, "192.0.2.1");
        let out = handle(&mut a, t, c, &post(10, Some("img.example:8700")));
        let [
            Action::Job {
                worker,
                job: Job::Upload { base_url, body, .. },
            },
        ] = out.actions()
        else {
            panic!("{:?}", out.actions());
        };
        assert_eq!(*worker, 2);
        assert_eq!(base_url, "http://img.example:8700/");
        assert_eq!(body.len(), 10);
        assert_eq!(a.pending, 10);

        let mut out = Out::new();
        a.handle(
            t,
            Input::Done(Done::Upload {
                conn: c,
                reserved: 10,
                result: Ok(stored(8, true)),
                base_url: base_url.clone(),
            }),
            &mut out,
        );
        let [Action::Respond(to, r)] = out.actions() else {
            panic!();
        };
        assert_eq!(*to, c);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        let path = stored(8, true).name.path();
        assert_eq!(v["error_code"], 0);
        assert_eq!(v["path"], path.as_str());
        assert_eq!(v["url"], format!("http://img.example:8700/{path}").as_str());
        assert!(path.ends_with("_4x3.png"));
        assert_eq!(a.pending, 0);
        assert_eq!(a.usage(), Usage { files: 1, bytes: 8 });
        assert_eq!(a.counts().stored, 1);

        // The same bytes again: answered, counted as a duplicate, no usage.
        let mut out = Out::new();
        a.handle(
            t,
            Input::Done(Done::Upload {
                conn: c,
                reserved: 10,
                result: Ok(stored(8, false)),
                base_url: "http://h/".into(),
            }),
            &mut out,
        );
        assert_eq!(a.usage(), Usage { files: 1, bytes: 8 });
        assert_eq!(a.counts().duplicates, 1);
        assert_eq!(a.counts().upload_bytes, 16);
    }

    #[test]
    fn urls_come_from_public_url_host_or_the_listen_address() {
        let t = now();
        let mut a = MsfsApp::new(
            limits(),
            Some("https://cdn.example/msfs".into()),
            Usage::default(),
            0..1,
            1..2,
        );
        let c = open(&mut a, t, 1, "192.0.2.1");
        let out = handle(&mut a, t, c, &post(1, Some("evil.example")));
        let [
            Action::Job {
                job: Job::Upload { base_url, .. },
                ..
            },
        ] = out.actions()
        else {
            panic!();
        };
        assert_eq!(base_url, "https://cdn.example/msfs/");

        let mut a = app(Limits {
            uploads_per_minute: 0,
            ..limits()
        });
        let mut out = Out::new();
        a.handle(
            t,
            Input::Listening {
                port: PortId(0),
                addr: "127.0.0.1:8700".parse().unwrap(),
            },
            &mut out,
        );
        for (host, want) in [
            (None, "http://127.0.0.1:8700/"),
            (Some("a@evil.example"), "http://127.0.0.1:8700/"),
            (Some("evil.example/x?"), "http://127.0.0.1:8700/"),
            (Some("[::1]:8700"), "http://[::1]:8700/"),
            (Some("msfs.tt.example"), "http://msfs.tt.example/"),
        ] {
            let out = handle(&mut a, t, c, &post(1, host));
            let [
                Action::Job {
                    job: Job::Upload { base_url, .. },
                    ..
                },
            ] = out.actions()
            else {
                panic!();
            };
            assert_eq!(base_url, want, "{host:?}");
        }
    }

    #[test]
    fn each_source_gets_its_uploads_per_minute() {
        let mut a = app(Limits {
            quota_bytes: None,
            max_pending_bytes: u64::MAX,
            ..limits()
        });
        let t = now();
        let c = open(&mut a, t, 1, "192.0.2.1");
        // The same /64 is one source.
        let d = open(&mut a, t, 2, "2001:db8::1");
        let e = open(&mut a, t, 3, "2001:db8::2");
        for _ in 0..3 {
            assert_eq!(answered_code(&handle(&mut a, t, c, &post(1, None))), None);
        }
        assert_eq!(
            answered_code(&handle(&mut a, t, c, &post(1, None))),
            Some(13)
        );
        for conn in [d, e, d] {
            assert_eq!(
                answered_code(&handle(&mut a, t, conn, &post(1, None))),
                None
            );
        }
        assert_eq!(
            answered_code(&handle(&mut a, t, e, &post(1, None))),
            Some(13)
        );
        // One more after 20 s (3 a minute), none more yet.
        let later = t.plus(Duration::from_secs(20));
        assert_eq!(
            answered_code(&handle(&mut a, later, c, &post(1, None))),
            None
        );
        assert_eq!(
            answered_code(&handle(&mut a, later, c, &post(1, None))),
            Some(13)
        );
        assert_eq!(a.refused("rate_limited"), 3);
        // Refilled sources are forgotten at the tick.
        let mut out = Out::new();
        a.handle(t.plus(Duration::from_secs(120)), Input::Tick, &mut out);
        assert!(a.limiter.buckets.is_empty());
    }

    #[test]
    fn the_rate_table_is_bounded() {
        let mut a = app(Limits {
            quota_bytes: None,
            max_pending_bytes: u64::MAX,
            uploads_per_minute: 1,
            max_sources: 2,
        });
        let t = now();
        let conns: Vec<Conn> = (0..3)
            .map(|i| open(&mut a, t, i, &format!("192.0.2.{}", i + 1)))
            .collect();
        assert_eq!(
            answered_code(&handle(&mut a, t, conns[0], &post(1, None))),
            None
        );
        assert_eq!(
            answered_code(&handle(&mut a, t, conns[1], &post(1, None))),
            None
        );
        // Both remembered sources are limited: a third waits.
        assert_eq!(
            answered_code(&handle(&mut a, t, conns[2], &post(1, None))),
            Some(13)
        );
        assert!(a.limiter.buckets.len() <= 2);
        // Once they refill, there is room.
        let later = t.plus(Duration::from_secs(61));
        assert_eq!(
            answered_code(&handle(&mut a, later, conns[2], &post(1, None))),
            None
        );
    }

    #[test]
    fn the_quota_and_bytes_in_flight_bound_uploads() {
        let mut a = MsfsApp::new(
            Limits {
                uploads_per_minute: 0,
                ..limits()
            },
            None,
            Usage {
                files: 10,
                bytes: 9_000,
            },
            0..1,
            1..2,
        );
        let t = now();
        let c = open(&mut a, t, 1, "192.0.2.1");
        assert_eq!(answered_code(&handle(&mut a, t, c, &post(600, None))), None);
        // 9000 stored + 600 pending + 500 > 10000.
        assert_eq!(
            answered_code(&handle(&mut a, t, c, &post(500, None))),
            Some(12)
        );
        assert_eq!(answered_code(&handle(&mut a, t, c, &post(400, None))), None);
        assert_eq!(a.refused("quota"), 1);

        let mut a = app(Limits {
            uploads_per_minute: 0,
            quota_bytes: None,
            ..limits()
        });
        let c = open(&mut a, t, 1, "192.0.2.1");
        assert_eq!(
            answered_code(&handle(&mut a, t, c, &post(2000, None))),
            None
        );
        assert_eq!(
            answered_code(&handle(&mut a, t, c, &post(501, None))),
            Some(14)
        );
        let mut out = Out::new();
        a.handle(
            t,
            Input::Done(Done::Upload {
                conn: c,
                reserved: 2000,
                result: Err(UploadError::Storage),
                base_url: String::new(),
            }),
            &mut out,
        );
        assert_eq!(answered_code(&out), Some(15));
        let mut problems = Vec::new();
        a.health(&mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(answered_code(&handle(&mut a, t, c, &post(501, None))), None);
    }

    #[test]
    fn oversized_uploads_get_teamtalks_error_json() {
        let mut a = app(limits());
        let t = now();
        let c = open(&mut a, t, 1, "192.0.2.1");
        let mut req = post(0, None);
        req.extensions_mut()
            .insert(OversizedBody { length: 50 << 20 });
        let out = handle(&mut a, t, c, &req);
        assert_eq!(answered_code(&out), Some(1));
        let [Action::Respond(_, r)] = out.actions() else {
            panic!();
        };
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html;charset=utf-8");
        assert_eq!(a.refused("too_large"), 1);
    }

    #[test]
    fn downloads_are_parsed_here_and_read_by_the_download_workers() {
        let mut a = app(limits());
        let t = now();
        let c = open(&mut a, t, 1, "192.0.2.1");
        let path = stored(8, true).name.path();
        let req = http::Request::get(format!("/{path}"))
            .header(RANGE, "bytes=0-1")
            .header("x-other", "dropped")
            .body(Bytes::new())
            .unwrap();
        let workers: Vec<usize> = (0..3)
            .map(|_| {
                let out = handle(&mut a, t, c, &req);
                match out.actions() {
                    [
                        Action::Job {
                            worker,
                            job: Job::Download { headers, head, .. },
                        },
                    ] => {
                        assert!(!head);
                        assert_eq!(headers.len(), 1);
                        *worker
                    }
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(workers, [0, 1, 0]);

        for (method, path, status) in [
            ("GET", "/g0/../../etc/passwd", 400),
            ("GET", "/g0/%2e%2e/x", 400),
            ("HEAD", "/nothing.png", 404),
            ("POST", "/upload/../x", 400),
            ("DELETE", "/x", 405),
            ("PUT", "/x", 405),
        ] {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .body(Bytes::new())
                .unwrap();
            let out = handle(&mut a, t, c, &req);
            let [Action::Respond(_, r)] = out.actions() else {
                panic!("{method} {path}: {:?}", out.actions());
            };
            assert_eq!(r.status(), status, "{method} {path}");
        }
        assert_eq!(a.refused("traversal"), 3);

        let mut out = Out::new();
        a.handle(
            t,
            Input::Done(Done::Download {
                conn: c,
                response: crate::http::empty(StatusCode::PARTIAL_CONTENT),
                served: Served::Part(2),
            }),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(a.counts().download_bytes, 2);
        let mut s = Scrape::new();
        a.collect(&mut s);
        let text = s.render();
        assert!(
            text.contains("teamtalk_msfs_downloads_total{status=\"206\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("teamtalk_msfs_downloads_total{status=\"404\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("teamtalk_msfs_refused_total{reason=\"traversal\"} 3"),
            "{text}"
        );
        assert!(text.contains("teamtalk_msfs_quota_bytes 10000"), "{text}");

        let mut out = Out::new();
        a.handle(
            t,
            Input::Closed {
                conn: c,
                reason: CloseCause::Http(teamtalk_conn::HttpCloseReason::Done),
            },
            &mut out,
        );
        assert!(a.sources.is_empty());
    }
}
