//! The web client, served by login_server at the root of its HTTP address.
//!
//! The page lives in `daemons/web/client/` (plain HTML, CSS and ES
//! modules, vendored libraries under `vendor/`, see that folder's README)
//! and is embedded in the binary with `include_bytes!`, so an installed
//! login_server is self-contained. Our `.proto` files are served under
//! `/proto/` from [`teamtalk_proto::PROTO_FILES`]: the browser parses the
//! same schema the daemons are generated from.
//!
//! The page is served from login_server because it must ask
//! `/msg_server?transport=ws` where to connect: on the same origin that
//! needs no CORS, and `teamtalk up` lets pages of exactly this origin
//! open the msg_servers' WebSocket ports.

use std::collections::HashMap;

use ::http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_NONE_MATCH,
};
use ::http::{Method, StatusCode};
use blake2::Digest;
use bytes::Bytes;

use crate::http::{content_type_for, method_not_allowed};
use crate::runtime::{Request, Response};

/// The page's files, by path below the root (`""` is `/`).
const FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../../web/client/index.html")),
    ("style.css", include_bytes!("../../web/client/style.css")),
    ("app.js", include_bytes!("../../web/client/app.js")),
    (
        "teamtalk.js",
        include_bytes!("../../web/client/teamtalk.js"),
    ),
    (
        "favicon.svg",
        include_bytes!("../../web/client/favicon.svg"),
    ),
    (
        "vendor/protobufjs/protobuf.min.js",
        include_bytes!("../../web/client/vendor/protobufjs/protobuf.min.js"),
    ),
    (
        "vendor/noble-ciphers/aes.js",
        include_bytes!("../../web/client/vendor/noble-ciphers/aes.js"),
    ),
    (
        "vendor/noble-ciphers/_polyval.js",
        include_bytes!("../../web/client/vendor/noble-ciphers/_polyval.js"),
    ),
    (
        "vendor/noble-ciphers/utils.js",
        include_bytes!("../../web/client/vendor/noble-ciphers/utils.js"),
    ),
    (
        "vendor/noble-hashes/legacy.js",
        include_bytes!("../../web/client/vendor/noble-hashes/legacy.js"),
    ),
    (
        "vendor/noble-hashes/_md.js",
        include_bytes!("../../web/client/vendor/noble-hashes/_md.js"),
    ),
    (
        "vendor/noble-hashes/_u64.js",
        include_bytes!("../../web/client/vendor/noble-hashes/_u64.js"),
    ),
    (
        "vendor/noble-hashes/utils.js",
        include_bytes!("../../web/client/vendor/noble-hashes/utils.js"),
    ),
];

/// The page's Content-Security-Policy. Scripts only from this origin;
/// `'unsafe-eval'` because protobuf.js compiles each message type's
/// encoder and decoder with `new Function` (it has no other mode). The
/// page connects to the msg_servers' WebSocket ports and uploads to msfs,
/// both on other origins that login_server only learns at run time, and
/// shows images from msfs wherever it is: `connect-src` and `img-src`
/// allow any http(s)/ws(s) origin. Nothing may frame the page.
const CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-eval'; \
    style-src 'self'; img-src 'self' data: blob: http: https:; \
    connect-src 'self' ws: wss: http: https:; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One file ready to send.
#[derive(Debug, Clone)]
struct Asset {
    content_type: HeaderValue,
    body: Bytes,
    etag: HeaderValue,
    html: bool,
}

/// The embedded web client: answers `GET`/`HEAD` for its files.
#[derive(Debug, Clone)]
pub struct WebClient {
    assets: HashMap<String, Asset>,
    csp: &'static str,
}

impl Default for WebClient {
    fn default() -> Self {
        Self::new()
    }
}

impl WebClient {
    /// The page's files and our `.proto` files, with their types and
    /// ETags (computed once here, not per request).
    #[must_use]
    pub fn new() -> Self {
        let files = FILES.iter().map(|(p, b)| ((*p).to_owned(), *b)).chain(
            teamtalk_proto::PROTO_FILES
                .iter()
                .map(|(name, text)| (format!("proto/{name}"), text.as_bytes())),
        );
        Self::of_files(files, CSP)
    }

    /// Another static page served the same way (ETags, `no-cache`, the
    /// security headers, `csp` on its HTML): the admin console.
    pub(crate) fn of_files(
        files: impl IntoIterator<Item = (String, &'static [u8])>,
        csp: &'static str,
    ) -> Self {
        let mut assets = HashMap::new();
        for (path, body) in files {
            let content_type = if path.ends_with(".proto") {
                "text/plain; charset=utf-8"
            } else {
                content_type_for(&path)
            };
            assets.insert(
                path.clone(),
                Asset {
                    content_type: HeaderValue::from_static(content_type),
                    etag: etag(body),
                    body: Bytes::from_static(body),
                    html: path.ends_with(".html"),
                },
            );
        }
        Self { assets, csp }
    }

    /// The answer for `request` if its path is one of the client's files
    /// (`/` is `index.html`); `None` for any other path.
    #[must_use]
    pub fn respond(&self, request: &Request) -> Option<Response> {
        let path = request.uri().path().strip_prefix('/')?;
        let path = if path.is_empty() { "index.html" } else { path };
        let asset = self.assets.get(path)?;
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut r = method_not_allowed(&[Method::GET, Method::HEAD]);
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(r);
        }
        let fresh = request
            .headers()
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == asset.etag
            });
        let mut response = if fresh {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut r = Response::new(asset.body.clone());
            r.headers_mut()
                .insert(CONTENT_TYPE, asset.content_type.clone());
            r
        };
        let h = response.headers_mut();
        h.insert(ETAG, asset.etag.clone());
        // Revalidate every time (a 304 is cheap): a new binary serves a
        // new page at once, never a cached mix of old and new modules.
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        );
        if asset.html {
            h.insert(
                HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static(self.csp),
            );
            h.insert(
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            );
        }
        Some(response)
    }

    /// The served paths (without the leading `/`), sorted.
    #[must_use]
    pub fn paths(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.assets.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// A strong ETag from the content: 128 bits of BLAKE2b, quoted.
fn etag(body: &[u8]) -> HeaderValue {
    let mut h = blake2::Blake2b::<blake2::digest::consts::U16>::new();
    h.update(body);
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Option<Response> {
        WebClient::new().respond(&::http::Request::get(path).body(Bytes::new()).unwrap())
    }

    #[test]
    fn the_root_is_the_page_with_its_security_headers() {
        let r = get("/").unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let body = std::str::from_utf8(r.body()).unwrap();
        assert!(body.contains("<script type=\"module\" src=\"app.js\">"));
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
        assert_eq!(get("/index.html").unwrap().body(), r.body());
    }

    #[test]
    fn every_file_the_page_names_is_served_with_its_type() {
        let web = WebClient::new();
        for path in web.paths() {
            let r = get(&format!("/{path}")).unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert!(!r.body().is_empty(), "{path}");
            let ct = r.headers()[CONTENT_TYPE].to_str().unwrap();
            let want = match path.rsplit('.').next() {
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("html") => "text/html; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("proto") => "text/plain; charset=utf-8",
                other => panic!("unexpected file type {other:?}"),
            };
            assert_eq!(ct, want, "{path}");
            assert!(
                !r.headers().contains_key("content-security-policy") || path.ends_with(".html")
            );
        }
        // The modules' relative imports all resolve to served files.
        for (path, body) in FILES.iter().filter(|(p, _)| p.ends_with(".js")) {
            let text = String::from_utf8_lossy(body);
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            for spec in text.split("from \"").skip(1) {
                let Some(target) = spec.split('"').next().and_then(|s| s.strip_prefix("./")) else {
                    continue;
                };
                let full = if dir.is_empty() {
                    target.to_owned()
                } else {
                    format!("{dir}/{target}")
                };
                assert!(web.assets.contains_key(&full), "{path} imports {full}");
            }
        }
        // The page loads the protocol files the client asks for.
        let client =
            std::str::from_utf8(FILES.iter().find(|f| f.0 == "teamtalk.js").unwrap().1).unwrap();
        for (name, _) in teamtalk_proto::PROTO_FILES {
            let served = web.assets.contains_key(&format!("proto/{name}"));
            assert!(served, "{name}");
        }
        assert!(client.contains("\"IM.Message.proto\""));
    }

    #[test]
    fn other_paths_and_methods_are_not_pages() {
        assert!(get("/msg_server").is_none());
        assert!(get("/nothing.js").is_none());
        assert!(get("/vendor/").is_none());
        assert!(get("/../Cargo.toml").is_none());
        assert!(get("//app.js").is_none());
        let post = ::http::Request::post("/app.js").body(Bytes::new()).unwrap();
        let r = WebClient::new().respond(&post).unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn a_matching_etag_gets_304_without_a_body() {
        let web = WebClient::new();
        let first = get("/app.js").unwrap();
        let tag = first.headers()[ETAG].clone();
        let again = ::http::Request::get("/app.js")
            .header(IF_NONE_MATCH, tag.clone())
            .body(Bytes::new())
            .unwrap();
        let r = web.respond(&again).unwrap();
        assert_eq!(r.status(), 304);
        assert!(r.body().is_empty());
        assert_eq!(r.headers()[ETAG], tag);
        let stale = ::http::Request::get("/app.js")
            .header(IF_NONE_MATCH, "\"other\"")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(web.respond(&stale).unwrap().status(), 200);
        assert_ne!(get("/style.css").unwrap().headers()[ETAG], tag);
    }
}
