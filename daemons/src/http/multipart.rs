//! `multipart/form-data` uploads from a complete in-memory body.
//!
//! Parsing is done by `multer`, the multipart parser behind axum and
//! Rocket: maintained, with per-field and whole-stream size limits, and
//! careful about boundaries split across reads. It is async (a `Stream` of
//! chunks), but given the whole body as a single, already-available chunk
//! every future it returns is ready at the first poll, so a no-op waker
//! drives it on the calling thread: no runtime, no thread. The older
//! synchronous `multipart` crate is unmaintained.
//!
//! [`HttpConn`](teamtalk_conn::http::HttpConn) delivers a request only
//! once its whole body arrived within the listener's body limit, so a
//! buffered body is what the daemons have anyway.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use ::http::header::CONTENT_TYPE;
use ::http::{Request, Response, StatusCode};
use bytes::Bytes;
use multer::{Constraints, Multipart, SizeLimit};

use super::response::{self, MAX_ERROR_MESSAGE, truncate};

/// Limits on one form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartLimits {
    /// Most parts in one form.
    pub max_parts: usize,
    /// Largest part (its data, after the part's headers).
    pub max_part_bytes: usize,
}

impl Default for MultipartLimits {
    /// 16 parts of at most 10 MiB (msfs' largest image).
    fn default() -> Self {
        Self {
            max_parts: 16,
            max_part_bytes: 10 << 20,
        }
    }
}

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The form field name (`Content-Disposition: form-data; name=…`).
    pub name: Option<String>,
    /// The client's file name, as sent: untrusted, may contain `/`, `..`
    /// or anything else. Never use it as a path. A name that is not UTF-8
    /// (some clients send their system's code page) comes out with
    /// replacement characters rather than as no name at all.
    pub filename: Option<String>,
    /// The part's `Content-Type` (`type/subtype`, parameters dropped), if
    /// it had one.
    pub content_type: Option<String>,
    /// The part's data.
    pub data: Bytes,
}

/// Why a form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    /// No `Content-Type: multipart/form-data; boundary=…`.
    #[error("not multipart/form-data with a boundary")]
    NotMultipart,
    /// More than `max_parts` parts.
    #[error("more than {max} parts")]
    TooManyParts {
        /// The limit.
        max: usize,
    },
    /// A part is longer than `max_part_bytes`.
    #[error("a part exceeds {max} bytes")]
    PartTooLarge {
        /// The limit.
        max: usize,
    },
    /// The body is not a well-formed form (the parser's message, cut to
    /// [`MAX_ERROR_MESSAGE`] bytes).
    #[error("malformed multipart body: {0}")]
    Malformed(String),
}

impl MultipartError {
    /// The status for this error: 415, 413 or 400.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotMultipart => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PartTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyParts { .. } | Self::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The standard error response for this error.
    #[must_use]
    pub fn response(&self) -> Response<Bytes> {
        response::error(self.status(), &self.to_string())
    }
}

/// The whole body as one ready chunk.
struct OneChunk(Option<Bytes>);

impl futures_core::Stream for OneChunk {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

/// Polls `f` once: everything multer does on a ready, complete body is
/// ready at once.
fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Splits `req`'s `multipart/form-data` body into its parts.
///
/// # Errors
/// [`MultipartError`]; answer with [`MultipartError::response`].
pub fn parse_multipart(
    req: &Request<Bytes>,
    limits: MultipartLimits,
) -> Result<Vec<Part>, MultipartError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or(MultipartError::NotMultipart)?;
    let boundary =
        multer::parse_boundary(content_type).map_err(|_| MultipartError::NotMultipart)?;
    let constraints = Constraints::new().size_limit(
        SizeLimit::new().per_field(u64::try_from(limits.max_part_bytes).unwrap_or(u64::MAX)),
    );
    let mut form =
        Multipart::with_constraints(OneChunk(Some(req.body().clone())), boundary, constraints);
    let stuck = || MultipartError::Malformed("parser waited for more input".to_owned());
    let mut parts = Vec::new();
    while let Some(field) = now_or_never(form.next_field())
        .ok_or_else(stuck)?
        .map_err(|e| map_error(&e, limits))?
    {
        if parts.len() == limits.max_parts {
            return Err(MultipartError::TooManyParts {
                max: limits.max_parts,
            });
        }
        let name = field.name().map(str::to_owned);
        let filename = field
            .file_name()
            .map(str::to_owned)
            .or_else(|| lossy_filename(field.headers()));
        let content_type = field.content_type().map(|m| m.essence_str().to_owned());
        let data = now_or_never(field.bytes())
            .ok_or_else(stuck)?
            .map_err(|e| map_error(&e, limits))?;
        parts.push(Part {
            name,
            filename,
            content_type,
            data,
        });
    }
    Ok(parts)
}

/// The `filename` parameter of a `Content-Disposition` that is not UTF-8
/// (multer only reads UTF-8 ones), decoded lossily: quoted up to the next
/// quote, or unquoted up to `;`.
fn lossy_filename(headers: &::http::HeaderMap) -> Option<String> {
    let raw = headers.get(::http::header::CONTENT_DISPOSITION)?.as_bytes();
    if std::str::from_utf8(raw).is_ok() {
        return None;
    }
    let text = String::from_utf8_lossy(raw);
    let mut rest = text.as_ref();
    while let Some(i) = rest.find("filename") {
        let before = rest[..i].chars().next_back();
        let after = rest[i + "filename".len()..].trim_start();
        rest = &rest[i + "filename".len()..];
        if !matches!(before, None | Some(';' | ' ' | '\t')) {
            continue;
        }
        let Some(value) = after.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        return Some(match value.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().unwrap_or("").to_owned(),
            None => value.split(';').next().unwrap_or("").trim().to_owned(),
        });
    }
    None
}

fn map_error(e: &multer::Error, limits: MultipartLimits) -> MultipartError {
    match e {
        multer::Error::FieldSizeExceeded { .. } => MultipartError::PartTooLarge {
            max: limits.max_part_bytes,
        },
        other => {
            MultipartError::Malformed(truncate(&other.to_string(), MAX_ERROR_MESSAGE).to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    /// Field name, file name, content type, data.
    type TestPart<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

    fn form(parts: &[TestPart<'_>]) -> Bytes {
        let mut b = Vec::new();
        for (name, filename, ct, data) in parts {
            b.extend_from_slice(b"--XyZ\r\n");
            let mut disp = format!("Content-Disposition: form-data; name=\"{name}\"");
            if let Some(f) = filename {
                disp.push_str(&format!("; filename=\"{f}\""));
            }
            b.extend_from_slice(disp.as_bytes());
            b.extend_from_slice(b"\r\n");
            if let Some(ct) = ct {
                b.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
            }
            b.extend_from_slice(b"\r\n");
            b.extend_from_slice(data);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--XyZ--\r\n");
        Bytes::from(b)
    }

    fn req(ct: &str, body: Bytes) -> Request<Bytes> {
        Request::post("/upload")
            .header(CONTENT_TYPE, ct)
            .body(body)
            .unwrap()
    }

    #[test]
    fn parts_come_out_with_names_files_types_and_bytes() {
        let png: &[u8] = b"\x89PNG\r\n\x1a\n--XyZ-not-a-boundary\r\n\x00\xff";
        let body = form(&[
            ("user", None, None, b"alice"),
            ("file", Some("../cat.png"), Some("image/png; q=1"), png),
            ("empty", Some(""), None, b""),
        ]);
        let parts = parse_multipart(&req(CT, body), MultipartLimits::default()).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].name.as_deref(), Some("user"));
        assert_eq!(
            (
                parts[0].filename.as_deref(),
                parts[0].content_type.as_deref()
            ),
            (None, None)
        );
        assert_eq!(&parts[0].data[..], b"alice");
        assert_eq!(parts[1].filename.as_deref(), Some("../cat.png"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/png"));
        assert_eq!(&parts[1].data[..], png);
        assert!(parts[2].data.is_empty());
        let none = parse_multipart(
            &req(CT, Bytes::from_static(b"--XyZ--\r\n")),
            MultipartLimits::default(),
        );
        assert_eq!(none, Ok(Vec::new()));
    }

    #[test]
    fn file_names_in_other_code_pages_are_kept_lossily() {
        // "中.png" in GBK: not UTF-8.
        let mut body =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"".to_vec();
        body.extend_from_slice(b"\xd6\xd0.png_10x20.png\"\r\n\r\nDATA\r\n--XyZ--\r\n");
        let parts =
            parse_multipart(&req(CT, Bytes::from(body)), MultipartLimits::default()).unwrap();
        assert_eq!(parts.len(), 1);
        let name = parts[0].filename.as_deref().unwrap();
        assert!(name.ends_with(".png_10x20.png"), "{name}");
        assert!(name.contains('\u{fffd}'), "{name}");
        assert_eq!(parts[0].name.as_deref(), Some("image"));
        assert_eq!(&parts[0].data[..], b"DATA");

        let mut h = ::http::HeaderMap::new();
        let unquoted =
            ::http::HeaderValue::from_bytes(b"form-data;name=a;filename=\xff.gif ; x=1").unwrap();
        h.insert(::http::header::CONTENT_DISPOSITION, unquoted);
        assert_eq!(lossy_filename(&h).as_deref(), Some("\u{fffd}.gif"));
        let none = ::http::HeaderValue::from_bytes(b"form-data; name=\"\xff\"").unwrap();
        h.insert(::http::header::CONTENT_DISPOSITION, none);
        assert_eq!(lossy_filename(&h), None);
    }

    #[test]
    fn limits_are_enforced() {
        let limits = MultipartLimits {
            max_parts: 2,
            max_part_bytes: 8,
        };
        let three = form(&[
            ("a", None, None, b"1"),
            ("b", None, None, b"2"),
            ("c", None, None, b"3"),
        ]);
        let e = parse_multipart(&req(CT, three), limits).unwrap_err();
        assert_eq!(e, MultipartError::TooManyParts { max: 2 });
        assert_eq!(e.response().status(), 400);

        let big = form(&[("a", None, None, b"123456789")]);
        let e = parse_multipart(&req(CT, big), limits).unwrap_err();
        assert_eq!(e, MultipartError::PartTooLarge { max: 8 });
        assert_eq!(e.response().status(), 413);
        let fits = form(&[("a", None, None, b"12345678")]);
        assert_eq!(
            parse_multipart(&req(CT, fits), limits).unwrap()[0]
                .data
                .len(),
            8
        );
    }

    #[test]
    fn wrong_types_and_broken_bodies_are_refused() {
        let body = form(&[("a", None, None, b"1")]);
        for ct in [
            "application/json",
            "multipart/form-data",
            "multipart/mixed; boundary=XyZ",
        ] {
            let e =
                parse_multipart(&req(ct, body.clone()), MultipartLimits::default()).unwrap_err();
            assert_eq!(e, MultipartError::NotMultipart, "{ct}");
            assert_eq!(e.response().status(), 415);
        }
        let no_ct = Request::post("/").body(body.clone()).unwrap();
        assert_eq!(
            parse_multipart(&no_ct, MultipartLimits::default()),
            Err(MultipartError::NotMultipart)
        );

        let truncated = body.slice(..body.len() - 9);
        let e = parse_multipart(&req(CT, truncated), MultipartLimits::default()).unwrap_err();
        assert!(matches!(e, MultipartError::Malformed(_)), "{e:?}");
        let garbage = Bytes::from_static(b"this is not a form");
        let e = parse_multipart(&req(CT, garbage), MultipartLimits::default()).unwrap_err();
        assert!(matches!(e, MultipartError::Malformed(_)), "{e:?}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(
            tail in proptest::collection::vec(proptest::sample::select(b"-XyZ\r\n:a\";=".to_vec()), 0..300),
            raw in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..200),
        ) {
            let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n".to_vec();
            body.extend_from_slice(&tail);
            let limits = MultipartLimits { max_parts: 4, max_part_bytes: 64 };
            if let Ok(parts) = parse_multipart(&req(CT, Bytes::from(body)), limits) {
                proptest::prop_assert!(parts.len() <= 4);
                proptest::prop_assert!(parts.iter().all(|p| p.data.len() <= 64));
            }
            let _ = parse_multipart(&req(CT, Bytes::from(raw)), limits);
        }
    }
}
