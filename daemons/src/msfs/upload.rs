//! Uploads as TeamTalk clients send them, and the JSON they read back.
//!
//! Every client posts `multipart/form-data` to the msfs URL login_server
//! gave it (Android to it as is, Windows to `<it>upload/`), with one part
//! carrying a file name:
//!
//! | client | form | file name |
//! |---|---|---|
//! | Android | `name="file0";filename="…"` (no spaces), `Content-Type:application/octet-stream` | the photo's own name |
//! | iOS, Mac (AFNetworking) | a `type=im_image` field, then `name="image"; filename="…"`, `image/jpeg` | `image.png_<W>x<H>.png`, `image.<type>` |
//! | Windows | `name="image"; filename="…"`, `Content-Type: image/.<type>` | `<file name>_<W>x<H>.<type>` |
//!
//! They read `error_code` (0 is success), `error_msg` (shown to the user),
//! `path` (Windows builds its own URL from it) and `url` (the others send
//! it in the message), from a `200` answer with
//! `Content-Type: text/html;charset=utf-8` (AFNetworking accepts nothing
//! else) on one line (Android reads the first line). Every upload answer
//! is that, failures included, as in TeamTalk.
//!
//! Android writes a blank line after the file's bytes and before the
//! closing boundary, so its files keep two extra bytes (`\r\n`): as with
//! TeamTalk's msfs, which also stored them; image decoders ignore them.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};

use super::name::{FileNameError, Suffix};
use crate::http::{MultipartError, MultipartLimits, parse_multipart};

/// The `Content-Type` of every upload answer, as TeamTalk sends it.
pub const REPLY_CONTENT_TYPE: &str = "text/html;charset=utf-8";
/// Most parts a form may have.
pub const MAX_PARTS: usize = 8;

/// Why an upload was refused. Codes 1 to 11 are TeamTalk's (its messages
/// are 上传文件过大 "file too large" for 1 and 格式错误 "bad format" for the
/// others); 12 and up are ours, for refusals TeamTalk did not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// 1: the file (or the whole request) is over the size limit.
    #[error("file too large")]
    TooLarge,
    /// 3: no part has a file name.
    #[error("no file in the form")]
    NoFile,
    /// 4: not `multipart/form-data` with a boundary.
    #[error("not a multipart form")]
    NotMultipart,
    /// 5: the body holds no part at all.
    #[error("no part in the form")]
    NoPart,
    /// 8: the form is malformed or unterminated.
    #[error("malformed form")]
    Malformed,
    /// 9, 10, 11: the file name.
    #[error("file name: {0}")]
    FileName(FileNameError),
    /// 12 (ours): storing it would exceed `QuotaBytes`.
    #[error("storage quota reached")]
    QuotaFull,
    /// 13 (ours): this source sent more than `UploadsPerMinute`.
    #[error("too many uploads from this address")]
    RateLimited,
    /// 14 (ours): too many uploads are being written already.
    #[error("too many uploads in progress")]
    Busy,
    /// 15 (ours): the file could not be written.
    #[error("the file could not be stored")]
    Storage,
}

impl UploadError {
    /// The `error_code` clients read.
    #[must_use]
    pub fn code(self) -> u32 {
        match self {
            Self::TooLarge => 1,
            Self::NoFile => 3,
            Self::NotMultipart => 4,
            Self::NoPart => 5,
            Self::Malformed => 8,
            Self::FileName(FileNameError::BadType) => 9,
            Self::FileName(FileNameError::NoType) => 10,
            Self::FileName(FileNameError::TooLong) => 11,
            Self::QuotaFull => 12,
            Self::RateLimited => 13,
            Self::Busy => 14,
            Self::Storage => 15,
        }
    }

    /// The `error_msg` clients show: TeamTalk's words (its clients' users
    /// read Chinese) for its codes, the same style for ours.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::TooLarge => "上传文件过大",
            Self::QuotaFull => "存储空间已满",
            Self::RateLimited => "上传过于频繁",
            Self::Busy => "服务器繁忙",
            Self::Storage => "存储失败",
            _ => "格式错误",
        }
    }

    /// A stable label for the refusal metrics.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NoFile | Self::NotMultipart | Self::NoPart | Self::Malformed => "malformed",
            Self::FileName(_) => "bad_name",
            Self::QuotaFull => "quota",
            Self::RateLimited => "rate_limited",
            Self::Busy => "busy",
            Self::Storage => "storage_error",
        }
    }
}

/// The file of an upload: its bytes and what its name keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    /// The bytes, as the form carried them.
    pub data: Bytes,
    /// Type and size from the file name.
    pub suffix: Suffix,
}

/// Finds the file in a TeamTalk client's upload: the first part with a
/// file name, at most `max_bytes` long.
///
/// # Errors
/// [`UploadError`] with TeamTalk's code for what is wrong.
pub fn parse_upload(
    content_type: Option<&HeaderValue>,
    body: Bytes,
    max_bytes: usize,
) -> Result<UploadedFile, UploadError> {
    let mut req = Request::new(body);
    if let Some(ct) = content_type {
        req.headers_mut().insert(CONTENT_TYPE, ct.clone());
    }
    let limits = MultipartLimits {
        max_parts: MAX_PARTS,
        max_part_bytes: max_bytes,
    };
    let parts = parse_multipart(&req, limits).map_err(|e| match e {
        MultipartError::NotMultipart => UploadError::NotMultipart,
        MultipartError::PartTooLarge { .. } => UploadError::TooLarge,
        _ if !has_delimiter(&req) => UploadError::NoPart,
        _ => UploadError::Malformed,
    })?;
    if parts.is_empty() {
        return Err(UploadError::NoPart);
    }
    let part = parts
        .into_iter()
        .find(|p| p.filename.is_some())
        .ok_or(UploadError::NoFile)?;
    let name = part.filename.as_deref().unwrap_or("");
    let suffix = Suffix::from_upload(name).map_err(UploadError::FileName)?;
    Ok(UploadedFile {
        data: part.data,
        suffix,
    })
}

/// Whether the body contains `--<boundary>` at all.
fn has_delimiter(req: &Request<Bytes>) -> bool {
    let Some(boundary) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
    else {
        return false;
    };
    let delimiter = format!("--{boundary}");
    memchr::memmem::find(req.body(), delimiter.as_bytes()).is_some()
}

/// The answer to a stored upload: `error_code` 0, the path and its URL.
#[must_use]
pub fn success(path: &str, url: &str) -> Response<Bytes> {
    reply(0, "成功", path, url)
}

/// The answer to a refused upload (`path` and `url` empty).
#[must_use]
pub fn failure(e: UploadError) -> Response<Bytes> {
    reply(e.code(), e.message(), "", "")
}

fn reply(code: u32, msg: &str, path: &str, url: &str) -> Response<Bytes> {
    let body = serde_json::json!({
        "error_code": code,
        "error_msg": msg,
        "path": path,
        "url": url,
    });
    let mut resp = Response::new(Bytes::from(body.to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(REPLY_CONTENT_TYPE));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upload exactly as the Windows client's HTTP library writes it.
    pub(crate) fn windows_form(boundary: &str, filename: &str, data: &[u8]) -> Vec<u8> {
        let mut b = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
             filename=\"{filename}\"\r\nContent-Type: image/.png\r\n\r\n"
        )
        .into_bytes();
        b.extend_from_slice(data);
        b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        b
    }

    fn ct(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn windows_uploads_give_the_file_and_its_size() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR--fake--\r\n";
        let body = windows_form("------__a1B2c3D4e5F6g7", "shot.png_640x480.png", png);
        let file = parse_upload(
            Some(&ct("multipart/form-data; boundary=------__a1B2c3D4e5F6g7")),
            Bytes::from(body),
            1 << 20,
        )
        .unwrap();
        assert_eq!(&file.data[..], png);
        assert_eq!(file.suffix.render(), "_640x480.png");
    }

    #[test]
    fn android_uploads_keep_their_trailing_line_as_teamtalk_did() {
        // MoGuHttpClient.uploadImage3, byte for byte.
        let jpg = b"\xff\xd8\xff\xe0JFIF\xff\xd9";
        let mut body = b"-----------7d4a6d158c9\r\nContent-Disposition: form-data;name=\"file0\";filename=\"IMG_20150101_123456.jpg\"\r\nContent-Type:application/octet-stream\r\n\r\n".to_vec();
        body.extend_from_slice(jpg);
        body.extend_from_slice(b"\r\n\r\n-----------7d4a6d158c9--\r\n");
        let file = parse_upload(
            Some(&ct("multipart/form-data; boundary=---------7d4a6d158c9")),
            Bytes::from(body),
            1 << 20,
        )
        .unwrap();
        let mut want = jpg.to_vec();
        want.extend_from_slice(b"\r\n");
        assert_eq!(&file.data[..], &want[..]);
        assert_eq!(file.suffix.render(), ".jpg");
    }

    #[test]
    fn ios_uploads_skip_the_type_field() {
        let body = b"--Boundary+0xAbCdEfGbOuNdArY\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nim_image\r\n--Boundary+0xAbCdEfGbOuNdArY\r\nContent-Disposition: form-data; name=\"image\"; filename=\"image.png_0x0.png\"\r\nContent-Type: image/jpeg\r\n\r\nJPEGDATA\r\n--Boundary+0xAbCdEfGbOuNdArY--\r\n";
        let file = parse_upload(
            Some(&ct(
                "multipart/form-data; boundary=Boundary+0xAbCdEfGbOuNdArY",
            )),
            Bytes::from_static(body),
            1 << 20,
        )
        .unwrap();
        assert_eq!(&file.data[..], b"JPEGDATA");
        assert_eq!(file.suffix.render(), "_0x0.png");
    }

    #[test]
    fn refusals_carry_teamtalks_codes() {
        let mp = ct("multipart/form-data; boundary=B");
        let form = |filename: &str, data: &[u8]| Bytes::from(windows_form("B", filename, data));
        let cases: Vec<(Option<HeaderValue>, Bytes, u32)> = vec![
            (Some(mp.clone()), form("a.png", &[0; 11]), 1),
            (
                Some(mp.clone()),
                Bytes::from_static(
                    b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--B--\r\n",
                ),
                3,
            ),
            (None, form("a.png", b"1"), 4),
            (Some(ct("application/json")), form("a.png", b"1"), 4),
            (Some(mp.clone()), Bytes::from_static(b"no form here"), 5),
            (Some(mp.clone()), Bytes::from_static(b"--B--\r\n"), 5),
            (
                Some(mp.clone()),
                Bytes::from_static(
                    b"--B\r\nContent-Disposition: form-data; name=\"i\"; filename=\"a.png\"\r\n\r\nabc",
                ),
                8,
            ),
            (Some(mp.clone()), form("a.0123456789abcdef", b"1"), 9),
            (Some(mp.clone()), form("a.p$g", b"1"), 9),
            (Some(mp.clone()), form("noext", b"1"), 10),
            (Some(mp), form(&"a".repeat(300), b"1"), 11),
        ];
        for (ct, body, code) in cases {
            let e = parse_upload(ct.as_ref(), body.clone(), 10).unwrap_err();
            assert_eq!(e.code(), code, "{e:?} for {body:?}");
        }
    }

    #[test]
    fn answers_are_teamtalks_json_on_one_line() {
        let ok = success("g0/ab/cd/x.png", "http://h:8700/g0/ab/cd/x.png");
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()[CONTENT_TYPE], "text/html;charset=utf-8");
        let text = std::str::from_utf8(ok.body()).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(
            text,
            r#"{"error_code":0,"error_msg":"成功","path":"g0/ab/cd/x.png","url":"http://h:8700/g0/ab/cd/x.png"}"#
        );
        let v: serde_json::Value =
            serde_json::from_slice(failure(UploadError::TooLarge).body()).unwrap();
        assert_eq!(v["error_code"], 1);
        assert_eq!(v["error_msg"], "上传文件过大");
        assert_eq!(v["url"], "");
        let v: serde_json::Value =
            serde_json::from_slice(failure(UploadError::QuotaFull).body()).unwrap();
        assert_eq!(v["error_code"], 12);
    }
}
