//! Response builders: JSON, text, bytes with a content type, empty, and
//! the standard error body every endpoint uses.

use ::http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use ::http::{Method, Response, StatusCode};
use bytes::Bytes;
use serde::Serialize;

/// `Content-Type` of JSON bodies.
pub const JSON: &str = "application/json";
/// `Content-Type` of text bodies.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// A response with `body` as `content_type`.
///
/// A content type that is not a valid header value (it never is when it
/// comes from [`content_type_for`](super::content_type_for)) is sent as
/// `application/octet-stream`.
#[must_use]
pub fn bytes(status: StatusCode, content_type: &str, body: Bytes) -> Response<Bytes> {
    let value = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, value);
    resp
}

/// `value` serialised as JSON. A value serde_json cannot serialise (a map
/// with non-string keys, a failing `Serialize`) is a bug of ours, not the
/// client's: it becomes a 500 with the standard error body.
#[must_use]
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Bytes> {
    match serde_json::to_vec(value) {
        Ok(body) => bytes(status, JSON, Bytes::from(body)),
        Err(e) => {
            tracing::error!(error = %e, "response not serialisable as JSON");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "response not serialisable",
            )
        }
    }
}

/// UTF-8 text.
#[must_use]
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Bytes> {
    bytes(status, TEXT, Bytes::from(body.into()))
}

/// No body (`Content-Length: 0`, or none for 204 and 304).
#[must_use]
pub fn empty(status: StatusCode) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = status;
    resp
}

/// The body of every error response: `{"status": 404, "error": "Not
/// Found", "message": "…"}`. `error` is the status's reason phrase, so a
/// client can branch on `status` and show `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The HTTP status code, repeated for clients that only see bodies.
    pub status: u16,
    /// The status's reason phrase.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// Longest `message` in an error body: messages may quote client input.
pub const MAX_ERROR_MESSAGE: usize = 200;

/// The standard error response: `status` with an [`ErrorBody`]. The
/// message is cut to [`MAX_ERROR_MESSAGE`] bytes (at a character
/// boundary).
#[must_use]
pub fn error(status: StatusCode, message: &str) -> Response<Bytes> {
    let body = ErrorBody {
        status: status.as_u16(),
        error: status.canonical_reason().unwrap_or("").to_owned(),
        message: truncate(message, MAX_ERROR_MESSAGE).to_owned(),
    };
    // An ErrorBody always serialises.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    bytes(status, JSON, Bytes::from(body))
}

/// 404 with the standard body.
#[must_use]
pub fn not_found() -> Response<Bytes> {
    error(StatusCode::NOT_FOUND, "no such resource")
}

/// 400 with the standard body.
#[must_use]
pub fn bad_request(message: &str) -> Response<Bytes> {
    error(StatusCode::BAD_REQUEST, message)
}

/// 405 with the standard body and `Allow` listing `allowed`.
#[must_use]
pub fn method_not_allowed(allowed: &[Method]) -> Response<Bytes> {
    let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    let list = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&list) {
        resp.headers_mut().insert(ALLOW, v);
    }
    resp
}

/// 500 with the standard body; log the cause before.
#[must_use]
pub fn internal_error() -> Response<Bytes> {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn body(r: &Response<Bytes>) -> &str {
        std::str::from_utf8(r.body()).unwrap()
    }

    #[test]
    fn json_text_bytes_and_empty_set_status_and_type() {
        #[derive(Serialize)]
        struct Server<'a> {
            code: u32,
            ip: &'a str,
        }
        let r = json(
            StatusCode::OK,
            &Server {
                code: 0,
                ip: "10.0.0.1",
            },
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], JSON);
        assert_eq!(body(&r), r#"{"code":0,"ip":"10.0.0.1"}"#);

        let r = text(StatusCode::ACCEPTED, "ok\n");
        assert_eq!((r.status(), body(&r)), (StatusCode::ACCEPTED, "ok\n"));
        assert_eq!(r.headers()[CONTENT_TYPE], TEXT);

        let r = bytes(StatusCode::OK, "image/png", Bytes::from_static(b"\x89PNG"));
        assert_eq!(r.headers()[CONTENT_TYPE], "image/png");
        let r = bytes(StatusCode::OK, "bad\nvalue", Bytes::new());
        assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");

        let r = empty(StatusCode::NO_CONTENT);
        assert!(r.body().is_empty() && r.headers().is_empty());
    }

    #[test]
    fn unserialisable_json_is_a_500_with_the_error_body() {
        let mut bad = BTreeMap::new();
        bad.insert(vec![1u8], 1);
        let r = json(StatusCode::OK, &bad);
        assert_eq!(r.status(), 500);
        let e: ErrorBody = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(e.status, 500);
        assert_eq!(e.error, "Internal Server Error");
    }

    #[test]
    fn error_bodies_are_uniform_and_bounded() {
        let r = error(StatusCode::NOT_FOUND, "no image 42");
        let e: ErrorBody = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            e,
            ErrorBody {
                status: 404,
                error: "Not Found".into(),
                message: "no image 42".into()
            }
        );
        let long = "é".repeat(300);
        let e: ErrorBody = serde_json::from_slice(bad_request(&long).body()).unwrap();
        assert_eq!(e.message.len(), MAX_ERROR_MESSAGE);
        assert_eq!(not_found().status(), 404);
        assert_eq!(internal_error().status(), 500);
        let r = method_not_allowed(&[Method::GET, Method::HEAD]);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }
}
