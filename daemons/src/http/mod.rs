//! What every HTTP endpoint of the daemons shares, without the policy of
//! any one daemon.
//!
//! Connections are `teamtalk_conn::http::HttpConn` machines on a
//! `teamtalk_net` reactor: they deliver an `http::Request<Bytes>` (body
//! complete and within the listener's limit) and take an
//! `http::Response<Bytes>`. This module is what sits between:
//!
//! - [`Route`]: method, percent-decoded path segments and query pairs, for
//!   a `match`; traversal segments are refused.
//! - Responses: [`json()`], [`text()`], [`bytes()`], [`empty()`], and the standard
//!   error body ([`error`], [`ErrorBody`], [`not_found`], [`bad_request`],
//!   [`method_not_allowed`], [`internal_error`]).
//! - [`parse_json`]: a JSON body into a typed struct, with a typed,
//!   bounded [`JsonError`] that knows its status (400, 413, 415).
//! - [`content_type_for`]: `Content-Type` by file extension.
//! - [`decide_range`] / [`range_response`]: single `Range: bytes=`
//!   requests into 206 or 416; several ranges get the whole body (200).
//!   [`partial_response`] / [`unsatisfiable_response`] answer for a file
//!   read in part.
//! - [`Cors`]: allowed origins into preflight answers and response
//!   headers, for browser clients.
//! - [`parse_multipart`]: `multipart/form-data` uploads into [`Part`]s,
//!   within [`MultipartLimits`].
//!
//! A handler in full:
//!
//! ```
//! use bytes::Bytes;
//! use daemons::http::{Route, json, method_not_allowed, not_found, parse_json};
//! use http::{Method, Request, Response, StatusCode};
//!
//! #[derive(serde::Deserialize)]
//! struct NewGroup {
//!     name: String,
//! }
//!
//! fn handle(req: &Request<Bytes>) -> Response<Bytes> {
//!     let route = match Route::of(req) {
//!         Ok(r) => r,
//!         Err(e) => return e.response(),
//!     };
//!     match (route.method(), route.segments().as_slice()) {
//!         (&Method::POST, ["groups"]) => match parse_json::<NewGroup>(req, 4096) {
//!             Ok(g) => json(StatusCode::CREATED, &serde_json::json!({ "name": g.name })),
//!             Err(e) => e.response(),
//!         },
//!         (_, ["groups"]) => method_not_allowed(&[Method::POST]),
//!         _ => not_found(),
//!     }
//! }
//!
//! let ok = Request::post("/groups").body(Bytes::from_static(br#"{"name":"dev"}"#))?;
//! assert_eq!(handle(&ok).status(), StatusCode::CREATED);
//! let bad = Request::post("/groups").body(Bytes::from_static(b"{"))?;
//! assert_eq!(handle(&bad).status(), StatusCode::BAD_REQUEST);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod content_type;
mod cors;
mod json;
mod multipart;
mod range;
mod response;
mod route;

pub use content_type::{OCTET_STREAM, content_type_for};
pub use cors::Cors;
pub use json::{JsonError, parse_json};
pub use multipart::{MultipartError, MultipartLimits, Part, parse_multipart};
pub use range::{
    RangeDecision, decide_range, partial_response, range_response, unsatisfiable_response,
};
pub use response::{
    ErrorBody, JSON, MAX_ERROR_MESSAGE, TEXT, bad_request, bytes, empty, error, internal_error,
    json, method_not_allowed, not_found, text,
};
pub use route::{MAX_QUERY_PAIRS, MAX_SEGMENTS, Route, RouteError};
