//! Serialising responses: the status line and headers the application
//! chose, with the framing headers (`Content-Length`, `Connection`) that
//! only the connection can get right.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{StatusCode, Version, response};

/// What the connection knows about the request being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Answering {
    /// A `HEAD` request: headers as for `GET`, no body.
    pub(super) head: bool,
    /// The request's version (HTTP/1.0 keep-alive must be confirmed).
    pub(super) version: Version,
}

/// A serialised response: the head, then the body (possibly empty).
#[derive(Debug)]
pub(super) struct Encoded {
    pub(super) head: BytesMut,
    pub(super) body: Bytes,
}

/// Whether responses with this status never carry a body
/// (RFC 9110 §6.4.1).
fn bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Serialises `parts` and `body` for a request described by `req`.
///
/// - The application's `Transfer-Encoding` is dropped (bodies are always
///   sent with `Content-Length`), and so are its `Content-Length` and
///   `Connection` except where noted below.
/// - `Content-Length` is the body's length, except: none for 1xx and 204;
///   for 304, and for a `HEAD` answered with an empty body, the
///   application's own value is kept (it describes the `GET`
///   representation).
/// - `HEAD`, 1xx, 204 and 304 responses go out without body.
/// - `Connection: close` when the connection closes after this response;
///   `Connection: keep-alive` for a kept HTTP/1.0 connection; 101 keeps the
///   application's `Connection: upgrade`.
pub(super) fn encode(parts: &response::Parts, body: Bytes, req: Answering, close: bool) -> Encoded {
    let status = parts.status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let send_body = !(req.head || bodiless(status));
    let keep_app_length =
        status == StatusCode::NOT_MODIFIED || (req.head && body.is_empty() && !bodiless(status));
    let mut head = BytesMut::with_capacity(
        64 + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>(),
    );
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let drop = *name == TRANSFER_ENCODING
            || (*name == CONTENT_LENGTH && !keep_app_length)
            || (*name == CONNECTION && !switching);
        if !drop {
            put_field(&mut head, name.as_str(), value.as_bytes());
        }
    }
    if !bodiless(status) && !keep_app_length {
        let mut n = String::with_capacity(20);
        let _ = write!(n, "{}", body.len());
        put_field(&mut head, "content-length", n.as_bytes());
    }
    if !switching {
        if close {
            put_field(&mut head, "connection", b"close");
        } else if req.version == Version::HTTP_10 {
            put_field(&mut head, "connection", b"keep-alive");
        }
    }
    head.put_slice(b"\r\n");
    Encoded {
        head,
        body: if send_body { body } else { Bytes::new() },
    }
}

/// Writes one header field with its name in the customary title case
/// (`Content-Type`). Names are case-insensitive, but TeamTalk's clients
/// and older HTTP code in the wild match some of them literally, and
/// TeamTalk's own servers send title case.
fn put_field(buf: &mut BytesMut, name: &str, value: &[u8]) {
    let mut upper = true;
    for b in name.bytes() {
        buf.put_u8(if upper { b.to_ascii_uppercase() } else { b });
        upper = b == b'-';
    }
    buf.put_slice(b": ");
    buf.put_slice(value);
    buf.put_slice(b"\r\n");
}

/// The response the connection sends on its own before closing after a
/// protocol error: status line, empty body, `Connection: close`.
pub(super) fn error(status: StatusCode) -> Bytes {
    let mut b = BytesMut::with_capacity(80);
    b.put_slice(b"HTTP/1.1 ");
    b.put_slice(status.as_str().as_bytes());
    b.put_u8(b' ');
    b.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    b.put_slice(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    b.freeze()
}

/// The interim response to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use http::{Response, header};

    use super::*;

    fn enc(resp: Response<&'static str>, req: Answering, close: bool) -> String {
        let (parts, body) = resp.into_parts();
        let e = encode(&parts, Bytes::from_static(body.as_bytes()), req, close);
        let mut all = e.head.to_vec();
        all.extend_from_slice(&e.body);
        String::from_utf8(all).unwrap()
    }

    const GET11: Answering = Answering {
        head: false,
        version: Version::HTTP_11,
    };

    #[test]
    fn framing_headers_are_the_connections() {
        let resp = Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::CONTENT_LENGTH, "999")
            .header(header::TRANSFER_ENCODING, "chunked")
            .header(header::CONNECTION, "keep-alive")
            .body("hello")
            .unwrap();
        assert_eq!(
            enc(resp, GET11, true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        let ten = Answering {
            head: false,
            version: Version::HTTP_10,
        };
        assert_eq!(
            enc(Response::new("x"), ten, false),
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx"
        );
    }

    #[test]
    fn head_204_304_and_101_go_without_body() {
        let head = Answering {
            head: true,
            version: Version::HTTP_11,
        };
        assert_eq!(
            enc(Response::new("four"), head, false),
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
        );
        let declared = Response::builder()
            .header(header::CONTENT_LENGTH, "1234")
            .body("")
            .unwrap();
        assert_eq!(
            enc(declared, head, false),
            "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        );
        let none = Response::builder().status(204).body("ignored").unwrap();
        assert_eq!(enc(none, GET11, false), "HTTP/1.1 204 No Content\r\n\r\n");
        let not_modified = Response::builder()
            .status(304)
            .header(header::CONTENT_LENGTH, "77")
            .body("")
            .unwrap();
        assert_eq!(
            enc(not_modified, GET11, false),
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 77\r\n\r\n"
        );
        let switching = Response::builder()
            .status(101)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .body("")
            .unwrap();
        assert_eq!(
            enc(switching, GET11, false),
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
        let odd = Response::builder().status(599).body("").unwrap();
        assert_eq!(
            enc(odd, GET11, false),
            "HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn error_responses_close() {
        assert_eq!(
            &error(StatusCode::REQUEST_TIMEOUT)[..],
            b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}
