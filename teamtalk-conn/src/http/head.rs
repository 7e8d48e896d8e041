//! The request head: finding its end, parsing it with `httparse`, and
//! turning it into an `http::Request<()>` plus what the connection needs to
//! know about it (body framing, keep-alive, `Expect`, `Upgrade`).

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::{BadRequest, HttpCloseReason};

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed head.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) request: Request<()>,
    pub(super) framing: Framing,
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
    /// `Connection: keep-alive`.
    pub(super) keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub(super) expect_continue: bool,
    /// An HTTP/1.1 request with `Upgrade` and `Connection: upgrade`.
    pub(super) upgrade: bool,
}

/// Where the incremental search for the end of a head stands.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Bytes before this offset hold no terminator start.
    from: usize,
    /// A line feed was seen: the request line is complete.
    pub(super) line_seen: bool,
}

impl Scan {
    /// Looks for the empty line that ends a head (`\n\r\n` or `\n\n`,
    /// as `httparse` accepts bare line feeds) in the bytes not yet
    /// scanned. Returns the offset just past it. Every byte is looked at
    /// about once, however the head is split across reads.
    pub(super) fn terminator(&mut self, buf: &[u8]) -> Option<usize> {
        let mut i = self.from;
        while let Some(p) = buf
            .get(i..)
            .and_then(|b| b.iter().position(|&c| c == b'\n'))
        {
            let nl = i + p;
            self.line_seen = true;
            match (buf.get(nl + 1), buf.get(nl + 2)) {
                (Some(b'\n'), _) => {
                    self.from = nl + 1;
                    return Some(nl + 2);
                }
                (Some(b'\r'), Some(b'\n')) => {
                    self.from = nl + 1;
                    return Some(nl + 3);
                }
                (None, _) | (Some(b'\r'), None) => {
                    // Undecided until more bytes arrive: look here again.
                    self.from = nl;
                    return None;
                }
                _ => i = nl + 1,
            }
        }
        self.from = buf.len();
        None
    }
}

/// What `httparse` makes of the bytes so far.
pub(super) enum Parsed {
    /// A whole head of this many bytes.
    Complete(usize),
    /// Valid so far; more bytes needed.
    Partial,
}

/// Runs `httparse` over `buf` (a head, possibly incomplete, possibly
/// followed by body bytes) and classifies a failure.
pub(super) fn check(buf: &[u8], max_headers: usize) -> Result<Parsed, HttpCloseReason> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Parsed::Complete(n)),
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Err(e) => Err(classify(e, buf)),
    }
}

fn classify(e: httparse::Error, buf: &[u8]) -> HttpCloseReason {
    match e {
        httparse::Error::TooManyHeaders => HttpCloseReason::HeadTooLarge,
        httparse::Error::Version if names_other_version(buf) => {
            HttpCloseReason::VersionNotSupported
        }
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            HttpCloseReason::BadRequest(BadRequest::Header)
        }
        _ => HttpCloseReason::BadRequest(BadRequest::Syntax),
    }
}

/// Whether the request line's version looks like `HTTP/<digit>`: a real
/// HTTP version we do not speak (505) rather than garbage (400).
fn names_other_version(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(line, |end| &line[..end]);
    line.split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .nth(2)
        .and_then(|v| v.strip_prefix(b"HTTP/"))
        .is_some_and(|rest| rest.first().is_some_and(u8::is_ascii_digit))
}

/// Parses a complete head (exactly the bytes `check` reported) into a
/// request without body. Header values and the target share `head`'s
/// memory.
pub(super) fn parse(head: &Bytes, max_headers: usize) -> Result<Head, HttpCloseReason> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpCloseReason::BadRequest(BadRequest::Syntax));
        }
        Err(e) => return Err(classify(e, head)),
    }
    let bad = HttpCloseReason::BadRequest;
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad(BadRequest::Syntax));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad(BadRequest::Method))?;
    let uri = Uri::from_maybe_shared(head.slice_ref(path.as_bytes()))
        .map_err(|_| bad(BadRequest::Target))?;
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad(BadRequest::Header))?;
        let value = if h.value.is_empty() {
            HeaderValue::from_static("")
        } else {
            HeaderValue::from_maybe_shared(head.slice_ref(h.value))
                .map_err(|_| bad(BadRequest::Header))?
        };
        map.append(name, value);
    }

    let framing = framing(&map, version)?;
    let (mut close, mut keep_alive_token, mut upgrade_token) = (false, false, false);
    for token in tokens(&map, &CONNECTION) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
        upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
    }
    let http11 = version == Version::HTTP_11;
    let keep_alive = !close && (http11 || keep_alive_token);
    let expect_continue = http11
        && map
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored.
    let upgrade = http11 && upgrade_token && map.contains_key(UPGRADE);

    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Ok(Head {
        request,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    })
}

/// The comma-separated tokens of every `name` field, trimmed, empty ones
/// skipped.
fn tokens<'a>(map: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    map.get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Body framing from `Transfer-Encoding` and `Content-Length`.
///
/// Request smuggling lives in disagreements about framing, so anything
/// ambiguous is refused: both fields at once (400), `Transfer-Encoding` on
/// HTTP/1.0 (400), conflicting or malformed lengths (400). The only
/// transfer coding is a single `chunked`; any other coding is 501, and
/// `chunked` twice or an empty list is 400.
fn framing(map: &HeaderMap, version: Version) -> Result<Framing, HttpCloseReason> {
    let bad = HttpCloseReason::BadRequest;
    if map.contains_key(TRANSFER_ENCODING) {
        if map.contains_key(CONTENT_LENGTH) {
            return Err(bad(BadRequest::LengthAndEncoding));
        }
        if version == Version::HTTP_10 {
            return Err(bad(BadRequest::TransferEncoding));
        }
        let mut chunked = 0usize;
        for t in tokens(map, &TRANSFER_ENCODING) {
            if t.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else {
                return Err(HttpCloseReason::NotImplemented);
            }
        }
        return if chunked == 1 {
            Ok(Framing::Chunked)
        } else {
            Err(bad(BadRequest::TransferEncoding))
        };
    }
    let mut length: Option<u64> = None;
    for t in tokens(map, &CONTENT_LENGTH) {
        let n = parse_length(t).ok_or_else(|| bad(BadRequest::ContentLength))?;
        if length.is_some_and(|l| l != n) {
            return Err(bad(BadRequest::ContentLength));
        }
        length = Some(n);
    }
    match length {
        Some(0) => Ok(Framing::None),
        Some(n) => Ok(Framing::Length(n)),
        None if map.contains_key(CONTENT_LENGTH) => Err(bad(BadRequest::ContentLength)),
        None => Ok(Framing::None),
    }
}

/// Decimal digits only (no sign, no spaces), without overflow.
fn parse_length(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Head, HttpCloseReason> {
        parse(&Bytes::copy_from_slice(s.as_bytes()), 32)
    }

    #[test]
    fn terminator_is_found_across_any_split_and_with_bare_line_feeds() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        for split in 0..text.len() {
            let mut scan = Scan::default();
            let first = scan.terminator(&text[..split]);
            let found = first.or_else(|| scan.terminator(text));
            assert_eq!(found, Some(27), "split at {split}");
        }
        let mut scan = Scan::default();
        assert_eq!(scan.terminator(b"GET / HTTP/1.1\nA: b\n\nx"), Some(21));
        let mut scan = Scan::default();
        assert_eq!(scan.terminator(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert!(scan.line_seen);
    }

    #[test]
    fn a_request_becomes_an_http_request_sharing_the_head() {
        let h = head("POST /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        assert_eq!(h.request.method(), Method::POST);
        assert_eq!(h.request.uri().path(), "/a/b");
        assert_eq!(h.request.uri().query(), Some("x=1"));
        assert_eq!(h.request.version(), Version::HTTP_11);
        let two: Vec<_> = h.request.headers().get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive && !h.expect_continue && !h.upgrade);
    }

    #[test]
    fn connection_semantics_follow_the_version() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !head("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let up = head(
            "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert!(up.upgrade);
        let old =
            head("GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(!old.upgrade);
        let cont =
            head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(cont.expect_continue);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let bad = |s: &str| head(s).unwrap_err();
        use BadRequest as B;
        use HttpCloseReason as R;
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            R::BadRequest(B::LengthAndEncoding)
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            R::BadRequest(B::ContentLength)
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"),
            R::BadRequest(B::ContentLength)
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"),
            R::BadRequest(B::ContentLength)
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            R::BadRequest(B::ContentLength)
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            R::NotImplemented
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            R::BadRequest(B::TransferEncoding)
        );
        assert_eq!(
            bad("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            R::BadRequest(B::TransferEncoding)
        );
        let same =
            head("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(same.framing, Framing::Length(3));
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(chunked.framing, Framing::Chunked);
    }

    #[test]
    fn failures_are_classified() {
        let c = |s: &str| check(s.as_bytes(), 4).err();
        assert_eq!(
            c("GET / HTTP/2.0\r\n\r\n"),
            Some(HttpCloseReason::VersionNotSupported)
        );
        assert_eq!(
            c("GET / HTTP/3"),
            Some(HttpCloseReason::VersionNotSupported)
        );
        assert_eq!(
            c("GET / FTP/1.0\r\n\r\n"),
            Some(HttpCloseReason::BadRequest(BadRequest::Syntax))
        );
        assert_eq!(
            c("\x00\x00\x00\x10"),
            Some(HttpCloseReason::BadRequest(BadRequest::Syntax))
        );
        assert_eq!(
            c("GET / HTTP/1.1\r\nA b: c\r\n\r\n"),
            Some(HttpCloseReason::BadRequest(BadRequest::Header))
        );
        assert_eq!(
            c("GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n"),
            Some(HttpCloseReason::HeadTooLarge)
        );
        assert_eq!(c("GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(c("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), None);
    }
}
