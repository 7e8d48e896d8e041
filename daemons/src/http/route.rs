//! A match-friendly view of a request's method, path and query.

use std::borrow::Cow;

use ::http::{Method, Request};
use bytes::Bytes;

use super::response;

/// Why a request target could not be split into a [`Route`] (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A path segment is not UTF-8 after percent-decoding.
    #[error("path is not UTF-8")]
    NotUtf8,
    /// A segment is `.` or `..`, or decodes to one containing `/` or NUL:
    /// refused so that no handler can be tricked into another directory.
    #[error("path segment not allowed")]
    Segment,
    /// More than [`MAX_SEGMENTS`] segments or [`MAX_QUERY_PAIRS`] query
    /// pairs.
    #[error("path or query too long")]
    TooLong,
}

impl RouteError {
    /// The 400 response for this error.
    #[must_use]
    pub fn response(self) -> ::http::Response<Bytes> {
        response::bad_request(&self.to_string())
    }
}

/// Most path segments accepted.
pub const MAX_SEGMENTS: usize = 32;
/// Most query pairs accepted.
pub const MAX_QUERY_PAIRS: usize = 64;

/// A request's method, percent-decoded path segments and query pairs,
/// ready for a `match`:
///
/// ```
/// use bytes::Bytes;
/// use daemons::http::{Route, json, not_found};
/// use http::{Method, Request, StatusCode};
///
/// let req = Request::get("/img/a%20b.png?size=small&size=big").body(Bytes::new())?;
/// let route = Route::of(&req)?;
/// let resp = match (route.method(), route.segments().as_slice()) {
///     (&Method::GET, ["img", name]) => {
///         json(StatusCode::OK, &(name, route.query("size"), route.query_all("size").count()))
///     }
///     _ => not_found(),
/// };
/// assert_eq!(&resp.body()[..], br#"["a b.png","small",2]"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Empty segments are dropped (`/a//b/` is `["a", "b"]`). Query pairs are
/// `application/x-www-form-urlencoded` (`+` is a space), decoded with the
/// `form_urlencoded` crate; invalid UTF-8 there is replaced, not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
}

impl Route {
    /// Splits `req`'s target.
    ///
    /// # Errors
    /// [`RouteError`] for a path that is not UTF-8, a `.`/`..` segment or
    /// one hiding `/` or NUL, or too many segments or query pairs.
    pub fn of<B>(req: &Request<B>) -> Result<Self, RouteError> {
        let uri = req.uri();
        let mut segments = Vec::new();
        for raw in uri.path().split('/').filter(|s| !s.is_empty()) {
            if segments.len() == MAX_SEGMENTS {
                return Err(RouteError::TooLong);
            }
            let seg: Cow<'_, str> = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| RouteError::NotUtf8)?;
            if seg == "." || seg == ".." || seg.contains(['/', '\0']) {
                return Err(RouteError::Segment);
            }
            segments.push(seg.into_owned());
        }
        let mut query = Vec::new();
        if let Some(q) = uri.query() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if query.len() == MAX_QUERY_PAIRS {
                    return Err(RouteError::TooLong);
                }
                query.push((k.into_owned(), v.into_owned()));
            }
        }
        Ok(Self {
            method: req.method().clone(),
            segments,
            query,
        })
    }

    /// The method.
    #[must_use]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The decoded path segments, for slice patterns.
    #[must_use]
    pub fn segments(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    /// The first value of query parameter `name`.
    #[must_use]
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `name`, in order.
    pub fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All query pairs, in order.
    #[must_use]
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(target: &str) -> Result<Route, RouteError> {
        Route::of(&Request::get(target).body(()).unwrap())
    }

    #[test]
    fn segments_are_decoded_and_empty_ones_dropped() {
        let r = route("/a//b%2Bc/%E4%B8%AD/").unwrap();
        assert_eq!(r.segments(), ["a", "b+c", "中"]);
        assert!(route("/").unwrap().segments().is_empty());
        // `OPTIONS *` keeps its asterisk.
        assert_eq!(route("*").unwrap().segments(), ["*"]);
        let r = route("http://h.example/x/y?z=1").unwrap();
        assert_eq!(r.segments(), ["x", "y"]);
        assert_eq!(r.query("z"), Some("1"));
    }

    #[test]
    fn query_pairs_follow_form_encoding() {
        let r = route("/q?a=1&b=x+y&a=2&c&d=%26%3D").unwrap();
        assert_eq!(r.query("a"), Some("1"));
        assert_eq!(r.query_all("a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(r.query("b"), Some("x y"));
        assert_eq!(r.query("c"), Some(""));
        assert_eq!(r.query("d"), Some("&="));
        assert_eq!(r.query("none"), None);
        assert_eq!(r.query_pairs().len(), 5);
    }

    #[test]
    fn traversal_and_oversized_targets_are_refused() {
        for bad in ["/img/../etc", "/img/%2e%2E/x", "/a/./b", "/a%2Fb", "/a%00"] {
            assert_eq!(route(bad), Err(RouteError::Segment), "{bad}");
        }
        assert_eq!(route("/%ff"), Err(RouteError::NotUtf8));
        assert_eq!(
            route(&"/a".repeat(MAX_SEGMENTS + 1)),
            Err(RouteError::TooLong)
        );
        assert!(route(&"/a".repeat(MAX_SEGMENTS)).is_ok());
        let many = format!("/?{}", "k=v&".repeat(MAX_QUERY_PAIRS + 1));
        assert_eq!(route(&many), Err(RouteError::TooLong));
        assert_eq!(RouteError::Segment.response().status(), 400);
    }
}
