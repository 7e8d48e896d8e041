//! JSON request bodies into typed structs, with typed, bounded errors.

use ::http::header::CONTENT_TYPE;
use ::http::{Request, Response, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::response::{self, MAX_ERROR_MESSAGE, truncate};

/// Why a JSON body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// A `Content-Type` other than `application/json` (or `…+json`).
    #[error("content type is not JSON")]
    ContentType,
    /// The body is longer than the endpoint accepts.
    #[error("body of {len} bytes exceeds {max}")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The endpoint's limit.
        max: usize,
    },
    /// Not JSON, or not the expected shape. The message is serde_json's,
    /// cut to [`MAX_ERROR_MESSAGE`] bytes (it may quote the input).
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Invalid {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What was wrong.
        message: String,
    },
}

impl JsonError {
    /// The status for this error: 415, 413 or 400.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The standard error response for this error.
    #[must_use]
    pub fn response(&self) -> Response<Bytes> {
        response::error(self.status(), &self.to_string())
    }
}

/// Whether `req` declares a JSON body, or declares nothing (curl and
/// small clients often omit the header; the body is parsed either way).
fn is_json<B>(req: &Request<B>) -> bool {
    let Some(ct) = req.headers().get(CONTENT_TYPE) else {
        return true;
    };
    let Ok(ct) = ct.to_str() else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses `req`'s body as a `T`, refusing bodies over `max` bytes.
///
/// # Errors
/// [`JsonError`]; answer with [`JsonError::response`].
pub fn parse_json<T: DeserializeOwned>(req: &Request<Bytes>, max: usize) -> Result<T, JsonError> {
    if !is_json(req) {
        return Err(JsonError::ContentType);
    }
    let body = req.body();
    if body.len() > max {
        return Err(JsonError::TooLarge {
            len: body.len(),
            max,
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; we report them apart.
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        JsonError::Invalid {
            line: e.line(),
            column: e.column(),
            message: truncate(message, MAX_ERROR_MESSAGE).to_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Login {
        user: String,
        client_type: u32,
    }

    fn req(ct: Option<&str>, body: &str) -> Request<Bytes> {
        let mut b = Request::post("/login");
        if let Some(ct) = ct {
            b = b.header(CONTENT_TYPE, ct);
        }
        b.body(Bytes::copy_from_slice(body.as_bytes())).unwrap()
    }

    #[test]
    fn a_json_body_becomes_a_struct() {
        let body = r#"{"user":"alice","client_type":17}"#;
        for ct in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("application/vnd.teamtalk+json"),
        ] {
            let login: Login = parse_json(&req(ct, body), 1024).unwrap();
            assert_eq!(
                login,
                Login {
                    user: "alice".into(),
                    client_type: 17
                }
            );
        }
    }

    #[test]
    fn refusals_are_typed_bounded_and_answered() {
        let body = r#"{"user":"alice","client_type":17}"#;
        let e = parse_json::<Login>(&req(Some("text/plain"), body), 1024).unwrap_err();
        assert_eq!(e, JsonError::ContentType);
        assert_eq!(e.response().status(), 415);

        let e = parse_json::<Login>(&req(None, body), 10).unwrap_err();
        assert_eq!(
            e,
            JsonError::TooLarge {
                len: body.len(),
                max: 10
            }
        );
        assert_eq!(e.response().status(), 413);

        let e = parse_json::<Login>(&req(None, "{\n  \"user\": 5}"), 1024).unwrap_err();
        let JsonError::Invalid { line, message, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*line, 2);
        assert!(
            message.starts_with("invalid type: integer `5`"),
            "{message}"
        );
        assert_eq!(e.response().status(), 400);

        let huge = format!(r#"{{"user":"{}","client_type":"x"}}"#, "a".repeat(5000));
        let e = parse_json::<Login>(&req(None, &huge), 1 << 20).unwrap_err();
        let JsonError::Invalid { message, .. } = e else {
            panic!()
        };
        assert!(message.len() <= MAX_ERROR_MESSAGE);

        let e = parse_json::<Login>(&req(None, r#"{"user":"a","client_type":1,"x":1}"#), 1024);
        assert!(matches!(e, Err(JsonError::Invalid { .. })));
        assert!(matches!(
            parse_json::<Login>(&req(None, "not json"), 1024),
            Err(JsonError::Invalid { .. })
        ));
    }
}
