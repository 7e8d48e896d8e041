//! `Range: bytes=` requests (RFC 9110 §14) into 200/206/416 answers.

use std::ops::Range;

use ::http::header::{ACCEPT_RANGES, CONTENT_RANGE, HeaderValue, RANGE};
use ::http::{HeaderMap, Response, StatusCode};
use bytes::Bytes;

use super::response;

/// What to answer a request for a representation of a given length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// 200 with the whole body: no `Range`, a unit other than `bytes`, a
    /// malformed header (RFC 9110 lets a server ignore it), or several
    /// ranges (answered whole: simpler than `multipart/byteranges`, and
    /// what clients fetching images ask for is one range).
    Full,
    /// 206 with these bytes (clamped to the length).
    Partial(Range<u64>),
    /// 416: the range starts at or after the end (or the body is empty).
    Unsatisfiable,
}

/// Decides how to answer `headers`' `Range` for a body of `len` bytes.
#[must_use]
pub fn decide_range(headers: &HeaderMap, len: u64) -> RangeDecision {
    let mut values = headers.get_all(RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return RangeDecision::Full;
    };
    let Some(spec) = value
        .to_str()
        .ok()
        .and_then(|v| strip_prefix_ignore_case(v.trim(), "bytes="))
    else {
        return RangeDecision::Full;
    };
    if spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (number(first), number(last)) {
        // bytes=-n: the last n bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || len == 0 {
                RangeDecision::Unsatisfiable
            } else {
                RangeDecision::Partial(len.saturating_sub(n)..len)
            }
        }
        // bytes=a- : from a to the end.
        (Some(a), None) if last.is_empty() => from(a, len, u64::MAX),
        // bytes=a-b
        (Some(a), Some(b)) if a <= b => from(a, len, b),
        _ => RangeDecision::Full,
    }
}

fn from(first: u64, len: u64, last: u64) -> RangeDecision {
    if first >= len {
        RangeDecision::Unsatisfiable
    } else {
        RangeDecision::Partial(first..last.saturating_add(1).min(len))
    }
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The response for `body` under `headers`' `Range`: 200 with the whole
/// body, 206 with the range and `Content-Range: bytes a-b/len`, or 416
/// with `Content-Range: bytes */len` and the standard error body. All say
/// `Accept-Ranges: bytes`. The body is sliced, not copied.
#[must_use]
pub fn range_response(headers: &HeaderMap, content_type: &str, body: Bytes) -> Response<Bytes> {
    let len = body.len() as u64;
    match decide_range(headers, len) {
        RangeDecision::Full => {
            let mut resp = response::bytes(StatusCode::OK, content_type, body);
            resp.headers_mut()
                .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            resp
        }
        RangeDecision::Partial(r) => {
            // Both ends are within the body, which is in memory.
            let slice = body
                .slice(usize::try_from(r.start).unwrap_or(0)..usize::try_from(r.end).unwrap_or(0));
            partial_response(content_type, r, len, slice)
        }
        RangeDecision::Unsatisfiable => unsatisfiable_response(len),
    }
}

/// 206 for `range` of a representation of `total` bytes that is not in
/// memory as a whole (a file read in part): `Content-Range: bytes
/// a-b/total`, `Accept-Ranges: bytes`. `part` holds the range's bytes
/// (empty for a `HEAD`, whose caller sets `Content-Length`); the range
/// comes from [`decide_range`] and is not empty.
#[must_use]
pub fn partial_response(
    content_type: &str,
    range: Range<u64>,
    total: u64,
    part: Bytes,
) -> Response<Bytes> {
    let (start, last) = (range.start, range.end.saturating_sub(1).max(range.start));
    let mut resp = response::bytes(StatusCode::PARTIAL_CONTENT, content_type, part);
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{last}/{total}")) {
        resp.headers_mut().insert(CONTENT_RANGE, v);
    }
    resp.headers_mut()
        .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

/// 416 for a representation of `total` bytes: `Content-Range: bytes
/// */total`, the standard error body, `Accept-Ranges: bytes`.
#[must_use]
pub fn unsatisfiable_response(total: u64) -> Response<Bytes> {
    let mut resp = response::error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
        resp.headers_mut().insert(CONTENT_RANGE, v);
    }
    resp.headers_mut()
        .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    #[test]
    fn single_ranges_are_partial_and_clamped() {
        use RangeDecision::{Full, Partial, Unsatisfiable};
        let cases = [
            ("bytes=0-99", Partial(0..100)),
            ("bytes=10-", Partial(10..1000)),
            ("bytes=-100", Partial(900..1000)),
            ("bytes=-5000", Partial(0..1000)),
            ("bytes=990-5000", Partial(990..1000)),
            ("Bytes = 5-5", Full),
            ("BYTES=5-5", Partial(5..6)),
            ("bytes= 5 - 9 ", Partial(5..10)),
            ("bytes=1000-", Unsatisfiable),
            ("bytes=1000-2000", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=9-5", Full),
            ("bytes=0-1,5-6", Full),
            ("items=0-1", Full),
            ("bytes=abc", Full),
            ("bytes=-", Full),
            ("bytes=+1-2", Full),
            ("bytes=99999999999999999999-", Full),
        ];
        for (range, want) in cases {
            assert_eq!(decide_range(&with(range), 1000), want, "{range}");
        }
        assert_eq!(decide_range(&HeaderMap::new(), 1000), Full);
        assert_eq!(decide_range(&with("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(decide_range(&with("bytes=-1"), 0), Unsatisfiable);
        let mut two = with("bytes=0-1");
        two.append(RANGE, HeaderValue::from_static("bytes=2-3"));
        assert_eq!(decide_range(&two, 1000), Full);
    }

    #[test]
    fn responses_carry_the_range_headers() {
        let body = Bytes::from_static(b"0123456789");
        let r = range_response(&with("bytes=2-4"), "image/png", body.clone());
        assert_eq!(r.status(), 206);
        assert_eq!(&r.body()[..], b"234");
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(r.headers()[ACCEPT_RANGES], "bytes");
        assert_eq!(r.headers()["content-type"], "image/png");

        let r = range_response(&with("bytes=20-"), "image/png", body.clone());
        assert_eq!(r.status(), 416);
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes */10");

        let r = range_response(&HeaderMap::new(), "image/png", body.clone());
        assert_eq!(r.status(), 200);
        assert_eq!(r.body(), &body);
        assert_eq!(r.headers()[ACCEPT_RANGES], "bytes");
    }

    #[test]
    fn parts_of_larger_representations() {
        let r = partial_response("audio/amr", 1000..1003, 5000, Bytes::from_static(b"abc"));
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes 1000-1002/5000");
        assert_eq!(r.headers()[ACCEPT_RANGES], "bytes");
        assert_eq!(r.headers()["content-type"], "audio/amr");
        assert_eq!(&r.body()[..], b"abc");
        let r = unsatisfiable_response(5000);
        assert_eq!(r.status(), 416);
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes */5000");
    }
}
