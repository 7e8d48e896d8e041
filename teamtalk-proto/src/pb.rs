//! Generated prost types for the nine TeamTalk packages and our extension
//! package `IM.Ext` ([`im::ext`]).
//!
//! Built by `build.rs` from `proto/IM.*.proto`. Package `IM.BaseDefine`
//! becomes [`im::base_define`], `IM.Login` becomes [`im::login`], and so
//! on. Because the protos are proto2, `required` fields are plain values,
//! `optional` fields are `Option`s, enum-typed fields are `i32` (use the
//! generated enum's `try_from` to interpret them), and `bytes` fields are
//! [`bytes::Bytes`].
//!
//! Which command carries which message is recorded once, in
//! [`crate::command`].

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/pb.rs"));
