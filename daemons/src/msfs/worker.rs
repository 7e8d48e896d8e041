//! [`MsfsWorker`]: the blocking half of msfs. Parses uploads, hashes and
//! writes them; opens, reads and answers downloads. Several run at once
//! (`GetThreadCount` for downloads, `PostThreadCount` for uploads); none
//! keeps state but the store's directory.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};
use tracing::warn;

use super::name::{RequestName, StoredName};
use super::store::BlobStore;
use super::upload::{UploadError, parse_upload};
use crate::http::{
    OCTET_STREAM, RangeDecision, content_type_for, decide_range, partial_response,
    unsatisfiable_response,
};
use crate::runtime::{Conn, Worker};

/// Work for a worker.
#[derive(Debug)]
#[non_exhaustive]
pub enum Job {
    /// Store the file of an upload.
    Upload {
        /// The connection to answer.
        conn: Conn,
        /// The request's `Content-Type` (with the form's boundary).
        content_type: Option<HeaderValue>,
        /// The request's body.
        body: Bytes,
        /// What the answer's URL starts with (`http://host:port/`).
        base_url: String,
    },
    /// Answer a download.
    Download {
        /// The connection to answer.
        conn: Conn,
        /// The file.
        name: RequestName,
        /// A `HEAD` request: headers only.
        head: bool,
        /// `Range` and `If-None-Match`, if sent.
        headers: HeaderMap,
    },
}

/// A file an upload stored (or found stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its name.
    pub name: StoredName,
    /// Its length.
    pub len: u64,
    /// Whether this upload wrote it (false: the same bytes were there).
    pub created: bool,
}

/// What a download came to, for the App's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Served {
    /// 200 with this many bytes (0 for `HEAD`).
    Whole(u64),
    /// 206 with this many bytes.
    Part(u64),
    /// 304: the client's copy is current.
    NotModified,
    /// 416.
    Unsatisfiable,
    /// 404.
    NotFound,
    /// 500: the file could not be read, or is too large to send whole.
    Failed,
}

impl Served {
    /// The status sent, as a metric label.
    #[must_use]
    pub fn status(self) -> &'static str {
        match self {
            Self::Whole(_) => "200",
            Self::Part(_) => "206",
            Self::NotModified => "304",
            Self::Unsatisfiable => "416",
            Self::NotFound => "404",
            Self::Failed => "500",
        }
    }

    /// Body bytes sent.
    #[must_use]
    pub fn bytes(self) -> u64 {
        match self {
            Self::Whole(n) | Self::Part(n) => n,
            _ => 0,
        }
    }
}

/// A worker's result.
#[derive(Debug)]
#[non_exhaustive]
pub enum Done {
    /// An upload was stored or refused.
    Upload {
        /// The connection to answer.
        conn: Conn,
        /// The bytes the App reserved for it (the body's length).
        reserved: u64,
        /// What happened.
        result: Result<Stored, UploadError>,
        /// From the job.
        base_url: String,
    },
    /// A download was answered.
    Download {
        /// The connection to answer.
        conn: Conn,
        /// The answer.
        response: Response<Bytes>,
        /// What it was.
        served: Served,
    },
}

/// One msfs worker thread.
#[derive(Debug)]
pub struct MsfsWorker {
    store: Arc<BlobStore>,
    max_upload: usize,
    max_serve: u64,
}

impl MsfsWorker {
    /// A worker on `store` accepting files of `max_upload` bytes and
    /// sending bodies of at most `max_serve` bytes (the HTTP layer's
    /// response limit less room for the head).
    #[must_use]
    pub fn new(store: Arc<BlobStore>, max_upload: usize, max_serve: u64) -> Self {
        Self {
            store,
            max_upload,
            max_serve,
        }
    }

    fn upload(
        &self,
        content_type: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Stored, UploadError> {
        let file = parse_upload(content_type, body, self.max_upload)?;
        let put = self.store.put(&file.data).map_err(|e| {
            warn!(error = %e, dir = %self.store.base().display(), "upload could not be stored");
            UploadError::Storage
        })?;
        Ok(Stored {
            name: StoredName {
                digest: put.digest,
                suffix: file.suffix,
            },
            len: put.len,
            created: put.created,
        })
    }

    /// The answer to a download (see the module docs of
    /// [`crate::msfs`] for the headers).
    #[must_use]
    pub fn download(
        &self,
        name: &RequestName,
        head: bool,
        headers: &HeaderMap,
    ) -> (Response<Bytes>, Served) {
        let path = name.disk_path(self.store.base());
        let (mut file, len) = match BlobStore::open_file(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return (crate::http::not_found(), Served::NotFound);
            }
            Err(e) => {
                warn!(error = %e, path = %path.display(), "stored file could not be opened");
                return (crate::http::internal_error(), Served::Failed);
            }
        };
        let ct = media_type(name.ext());
        let etag = match name {
            RequestName::Stored(s) => Some(format!("\"{}\"", s.digest.hex())),
            RequestName::Legacy { .. } => None,
        };
        if let Some(tag) = &etag
            && headers
                .get(IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
        {
            let mut resp = crate::http::empty(StatusCode::NOT_MODIFIED);
            decorate(&mut resp, name, etag.as_deref());
            return (resp, Served::NotModified);
        }
        let (range, whole) = match decide_range(headers, len) {
            RangeDecision::Full => (0..len, true),
            RangeDecision::Partial(r) => (r, false),
            RangeDecision::Unsatisfiable => {
                let mut resp = unsatisfiable_response(len);
                decorate(&mut resp, name, etag.as_deref());
                return (resp, Served::Unsatisfiable);
            }
        };
        let n = range.end - range.start;
        if n > self.max_serve {
            warn!(path = %path.display(), len, "stored file too large to send in one response");
            return (
                crate::http::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "file too large to send whole; ask for a Range",
                ),
                Served::Failed,
            );
        }
        let body = if head {
            Bytes::new()
        } else {
            match BlobStore::read_range(&mut file, range.clone()) {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, path = %path.display(), "stored file could not be read");
                    return (crate::http::internal_error(), Served::Failed);
                }
            }
        };
        let sent = body.len() as u64;
        let mut resp = if whole {
            let mut r = crate::http::bytes(StatusCode::OK, ct, body);
            r.headers_mut().insert(
                http::header::ACCEPT_RANGES,
                HeaderValue::from_static("bytes"),
            );
            r
        } else {
            partial_response(ct, range, len, body)
        };
        if head {
            resp.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        decorate(&mut resp, name, etag.as_deref());
        let served = if whole {
            Served::Whole(sent)
        } else {
            Served::Part(sent)
        };
        (resp, served)
    }
}

/// Caching and sniffing headers of every download answer.
fn decorate(resp: &mut Response<Bytes>, name: &RequestName, etag: Option<&str>) {
    let h = resp.headers_mut();
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert(ETAG, tag);
    }
    let cache = match name {
        // A name is its content: it never changes.
        RequestName::Stored(_) => "public, max-age=31536000, immutable",
        RequestName::Legacy { .. } => "public, max-age=86400",
    };
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
}

/// The `Content-Type` of a download by its type: images and audio as
/// themselves; anything else (including SVG and HTML, which a browser
/// would run) as `application/octet-stream`, so an upload named `.html`
/// cannot become a page on msfs's origin.
#[must_use]
pub fn media_type(ext: &str) -> &'static str {
    let ct = content_type_for(&format!("f.{ext}"));
    if (ct.starts_with("image/") && ct != "image/svg+xml") || ct.starts_with("audio/") {
        ct
    } else {
        OCTET_STREAM
    }
}

impl Worker for MsfsWorker {
    type Job = Job;
    type Done = Done;

    fn run(&mut self, jobs: Vec<Job>, done: &mut Vec<Done>) {
        for job in jobs {
            done.push(match job {
                Job::Upload {
                    conn,
                    content_type,
                    body,
                    base_url,
                } => {
                    let reserved = body.len() as u64;
                    Done::Upload {
                        conn,
                        reserved,
                        result: self.upload(content_type.as_ref(), body),
                        base_url,
                    }
                }
                Job::Download {
                    conn,
                    name,
                    head,
                    headers,
                } => {
                    let (response, served) = self.download(&name, head, &headers);
                    Done::Download {
                        conn,
                        response,
                        served,
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use http::header::{ACCEPT_RANGES, CONTENT_RANGE, CONTENT_TYPE, RANGE};

    use super::*;
    use crate::msfs::name::{Suffix, parse_request_path};

    fn worker(dir: &std::path::Path) -> MsfsWorker {
        let (store, _) = BlobStore::open(dir).unwrap();
        MsfsWorker::new(Arc::new(store), 1 << 20, 1 << 20)
    }

    fn stored(w: &MsfsWorker, data: &[u8], ext: &str) -> RequestName {
        let put = w.store.put(data).unwrap();
        RequestName::Stored(StoredName {
            digest: put.digest,
            suffix: Suffix {
                size: None,
                ext: ext.into(),
            },
        })
    }

    fn with(name: http::HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn downloads_answer_whole_parts_heads_and_revalidations() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path());
        let name = stored(&w, b"0123456789", "png");
        let (r, s) = w.download(&name, false, &HeaderMap::new());
        assert_eq!((r.status(), s), (StatusCode::OK, Served::Whole(10)));
        assert_eq!(&r.body()[..], b"0123456789");
        assert_eq!(r.headers()[CONTENT_TYPE], "image/png");
        assert_eq!(r.headers()[ACCEPT_RANGES], "bytes");
        assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            r.headers()[CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let etag = r.headers()[ETAG].clone();

        let (r, s) = w.download(&name, false, &with(RANGE, "bytes=2-4"));
        assert_eq!(
            (r.status(), s),
            (StatusCode::PARTIAL_CONTENT, Served::Part(3))
        );
        assert_eq!(&r.body()[..], b"234");
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes 2-4/10");

        let (r, s) = w.download(&name, false, &with(RANGE, "bytes=10-"));
        assert_eq!(
            (r.status(), s),
            (StatusCode::RANGE_NOT_SATISFIABLE, Served::Unsatisfiable)
        );
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes */10");

        let (r, s) = w.download(&name, true, &HeaderMap::new());
        assert_eq!((r.status(), s), (StatusCode::OK, Served::Whole(0)));
        assert!(r.body().is_empty());
        assert_eq!(r.headers()[CONTENT_LENGTH], "10");
        let (r, _) = w.download(&name, true, &with(RANGE, "bytes=-4"));
        assert_eq!(r.headers()[CONTENT_LENGTH], "4");
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes 6-9/10");

        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, etag);
        let (r, s) = w.download(&name, false, &h);
        assert_eq!(
            (r.status(), s),
            (StatusCode::NOT_MODIFIED, Served::NotModified)
        );
        assert!(r.body().is_empty());
    }

    #[test]
    fn missing_files_are_404_and_types_are_safe() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path());
        let missing = RequestName::Stored(StoredName {
            digest: crate::msfs::name::Digest::of(b"never stored"),
            suffix: Suffix {
                size: None,
                ext: "jpg".into(),
            },
        });
        let (r, s) = w.download(&missing, false, &HeaderMap::new());
        assert_eq!((r.status(), s), (StatusCode::NOT_FOUND, Served::NotFound));

        let page = stored(&w, b"<script>alert(1)</script>", "html");
        let (r, _) = w.download(&page, false, &HeaderMap::new());
        assert_eq!(r.headers()[CONTENT_TYPE], OCTET_STREAM);
        for (ext, ct) in [
            ("jpg", "image/jpeg"),
            ("GIF", "image/gif"),
            ("webp", "image/webp"),
            ("amr", "audio/amr"),
            ("svg", OCTET_STREAM),
            ("js", OCTET_STREAM),
            ("exe", OCTET_STREAM),
        ] {
            assert_eq!(media_type(ext), ct, "{ext}");
        }
    }

    #[test]
    fn files_of_a_cpp_msfs_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path());
        std::fs::create_dir_all(dir.path().join("000/012")).unwrap();
        std::fs::write(dir.path().join("000/012/141_140_64x32.png"), b"old").unwrap();
        let name = parse_request_path("/g0/000/012/141_140_64x32.png").unwrap();
        let (r, s) = w.download(&name, false, &HeaderMap::new());
        assert_eq!((r.status(), s), (StatusCode::OK, Served::Whole(3)));
        assert_eq!(r.headers()[CONTENT_TYPE], "image/png");
        assert!(r.headers().get(ETAG).is_none());
    }

    #[test]
    fn files_too_large_for_one_response_need_a_range() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlobStore::open(dir.path()).unwrap();
        let w = MsfsWorker::new(Arc::new(store), 1 << 20, 4);
        let name = stored(&w, b"0123456789", "png");
        let (r, s) = w.download(&name, false, &HeaderMap::new());
        assert_eq!(
            (r.status(), s),
            (StatusCode::INTERNAL_SERVER_ERROR, Served::Failed)
        );
        let (r, _) = w.download(&name, false, &with(RANGE, "bytes=0-3"));
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    }
}
