//! Cross-origin resource sharing for browser clients: which origins may
//! call an endpoint, and the headers that tell the browser so.

use std::time::Duration;

use ::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD,
    HeaderValue, ORIGIN, VARY,
};
use ::http::{HeaderName, Method, Request, Response, StatusCode};
use bytes::Bytes;

use super::response;

/// A CORS policy: allowed origins, methods and request headers.
///
/// Origins are compared exactly (scheme, host and port, as browsers send
/// them: `https://chat.example.com`); `"*"` allows any origin, without
/// credentials. The matching origin is echoed back with `Vary: Origin`,
/// never a wildcard, so caches keep answers per origin apart.
///
/// ```
/// use bytes::Bytes;
/// use daemons::http::{Cors, text};
/// use http::{Method, Request, StatusCode};
///
/// let cors = Cors::new(["https://chat.example.com"]);
/// let req = Request::get("/api/users").header("origin", "https://chat.example.com").body(Bytes::new())?;
/// // Preflights are answered by the policy itself.
/// assert!(cors.preflight(&req).is_none());
/// let mut resp = text(StatusCode::OK, "[]");
/// cors.apply(&req, &mut resp);
/// assert_eq!(resp.headers()["access-control-allow-origin"], "https://chat.example.com");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<String>,
    any: bool,
    methods: HeaderValue,
    headers: HeaderValue,
    max_age: HeaderValue,
    credentials: bool,
}

impl Cors {
    /// Allows `origins` (exact matches; `"*"` for any) to use GET, HEAD,
    /// POST, PUT, DELETE with `Content-Type` and `Authorization` headers;
    /// preflights are cached for 10 minutes.
    pub fn new<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let origins: Vec<String> = origins
            .into_iter()
            .map(|o| o.into().trim_end_matches('/').to_owned())
            .collect();
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins,
            methods: HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE"),
            headers: HeaderValue::from_static("content-type, authorization"),
            max_age: HeaderValue::from_static("600"),
            credentials: false,
        }
    }

    /// Allows these methods (preflight `Access-Control-Allow-Methods`).
    #[must_use]
    pub fn methods(mut self, methods: &[Method]) -> Self {
        let list = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&list) {
            self.methods = v;
        }
        self
    }

    /// Allows these request headers (`Access-Control-Allow-Headers`).
    #[must_use]
    pub fn headers(mut self, headers: &[HeaderName]) -> Self {
        let list = headers
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&list) {
            self.headers = v;
        }
        self
    }

    /// How long browsers may cache a preflight answer.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = HeaderValue::from(age.as_secs());
        self
    }

    /// Lets browsers send cookies and credentials. Ignored for `"*"`:
    /// browsers refuse credentials with a wildcard policy, and echoing any
    /// origin with credentials would let every site act as the user.
    #[must_use]
    pub fn allow_credentials(mut self, yes: bool) -> Self {
        self.credentials = yes;
        self
    }

    /// The request's `Origin`, if the policy allows it: what
    /// [`Cors::apply_allowed`] needs when the answer is built later than
    /// the request is read (by a worker).
    #[must_use]
    pub fn allowed_origin<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        let origin = req.headers().get(ORIGIN)?;
        let s = origin.to_str().ok()?;
        (self.any || self.origins.iter().any(|o| o == s)).then(|| origin.clone())
    }

    /// Answers a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`): 204 with the policy's headers when
    /// the origin is allowed, 403 otherwise. `None` when `req` is not a
    /// preflight: handle it normally, then call [`Cors::apply`].
    #[must_use]
    pub fn preflight<B>(&self, req: &Request<B>) -> Option<Response<Bytes>> {
        if req.method() != Method::OPTIONS
            || !req.headers().contains_key(ORIGIN)
            || !req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let Some(origin) = self.allowed_origin(req) else {
            return Some(response::error(StatusCode::FORBIDDEN, "origin not allowed"));
        };
        let mut resp = response::empty(StatusCode::NO_CONTENT);
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone());
        h.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        self.credentials_header(h);
        h.append(VARY, HeaderValue::from_static("origin"));
        Some(resp)
    }

    /// Adds the CORS headers to `resp` when `req` comes from an allowed
    /// origin; leaves it alone otherwise (the browser then hides the
    /// response from the page).
    pub fn apply<B>(&self, req: &Request<B>, resp: &mut Response<Bytes>) {
        if let Some(origin) = self.allowed_origin(req) {
            self.apply_allowed(origin, resp);
        }
    }

    /// Adds the CORS headers for an origin [`Cors::allowed_origin`]
    /// returned.
    pub fn apply_allowed(&self, origin: HeaderValue, resp: &mut Response<Bytes>) {
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        self.credentials_header(h);
        h.append(VARY, HeaderValue::from_static("origin"));
    }

    fn credentials_header(&self, h: &mut ::http::HeaderMap) {
        if self.credentials && !self.any {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, origin: Option<&str>, preflight: bool) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/api");
        if let Some(o) = origin {
            b = b.header(ORIGIN, o);
        }
        if preflight {
            b = b.header(ACCESS_CONTROL_REQUEST_METHOD, "POST");
        }
        b.body(()).unwrap()
    }

    #[test]
    fn preflights_from_allowed_origins_get_the_policy() {
        let cors = Cors::new(["https://a.example/", "http://localhost:3000"])
            .methods(&[Method::GET, Method::POST])
            .max_age(Duration::from_secs(60))
            .allow_credentials(true);
        let r = cors
            .preflight(&req(Method::OPTIONS, Some("https://a.example"), true))
            .unwrap();
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(
            h[ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, authorization"
        );
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "60");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[VARY], "origin");

        let denied = cors
            .preflight(&req(Method::OPTIONS, Some("https://evil.example"), true))
            .unwrap();
        assert_eq!(denied.status(), 403);
        assert!(!denied.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));

        // Not preflights: plain OPTIONS, or no Origin.
        assert!(
            cors.preflight(&req(Method::OPTIONS, Some("https://a.example"), false))
                .is_none()
        );
        assert!(cors.preflight(&req(Method::OPTIONS, None, true)).is_none());
        assert!(
            cors.preflight(&req(Method::GET, Some("https://a.example"), false))
                .is_none()
        );
    }

    #[test]
    fn simple_requests_get_the_origin_echoed_only_when_allowed() {
        let cors = Cors::new(["https://a.example"]);
        let mut resp = response::empty(StatusCode::OK);
        cors.apply(
            &req(Method::GET, Some("https://a.example"), false),
            &mut resp,
        );
        assert_eq!(
            resp.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert!(
            !resp
                .headers()
                .contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS)
        );

        let mut resp = response::empty(StatusCode::OK);
        cors.apply(
            &req(Method::GET, Some("https://b.example"), false),
            &mut resp,
        );
        cors.apply(&req(Method::GET, None, false), &mut resp);
        assert!(resp.headers().is_empty());
    }

    #[test]
    fn a_wildcard_allows_any_origin_but_never_credentials() {
        let cors = Cors::new(["*"]).allow_credentials(true);
        let mut resp = response::empty(StatusCode::OK);
        cors.apply(
            &req(Method::GET, Some("https://x.example"), false),
            &mut resp,
        );
        assert_eq!(
            resp.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://x.example"
        );
        assert!(
            !resp
                .headers()
                .contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS)
        );
    }
}
