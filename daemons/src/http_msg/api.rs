//! TeamTalk's back-office API as it is on the wire: the two URLs, their
//! JSON bodies, the answer codes and texts (`doc/http接口定义.md` and
//! `HttpQuery.h` in TeamTalk), and the app-key check TeamTalk left as a
//! stub.
//!
//! Bodies are read with serde_json in two steps, in TeamTalk's order: the
//! body must be a JSON object (else no answer in TeamTalk; a 400 here),
//! then its `app_key` is checked, then its fields are read into a typed
//! request. A field that is missing, `null`, of the wrong type or out of
//! range is TeamTalk's "parameter error" (1); unknown fields are ignored.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clip::clip;
use crate::store::{GroupType, MAX_GROUP_MEMBERS, MemberChange};

/// Creates a group: `{req_user_id, app_key, group_name, group_type,
/// group_avatar, user_id_list}` → `{error_code, error_msg, group_id}`.
pub const CREATE_GROUP_PATH: &str = "/query/CreateGroup";
/// Adds or removes members: `{req_user_id, app_key, group_id,
/// modify_type, user_id_list}` → `{error_code, error_msg}`.
pub const CHANGE_MEMBERS_PATH: &str = "/query/ChangeMembers";

/// `Content-Type` of every answer. TeamTalk labels its JSON
/// `text/html;charset=utf-8`; the body is the same.
pub const ANSWER_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// TeamTalk's answer codes (`HTTP_ERROR_CODE`) this daemon gives, with
/// TeamTalk's texts. TeamTalk's text table has no entry for its
/// `HTTP_ERROR_MAX` (9), so codes 10 to 12 carry the texts at index 9 to
/// 11; the pairs here are the ones TeamTalk really sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 0 "成功": done.
    Success,
    /// 1 "参数错误": a field missing, `null`, of the wrong type or out of
    /// range, or a body that is not a JSON object.
    Parameter,
    /// 2 "appKey不存在": the app key is not one of the configured keys.
    AppKey,
    /// 5 "未授权的接口": no such interface (TeamTalk closed the
    /// connection without an answer).
    Interface,
    /// 10 "服务器异常": no db_proxy link, or db_proxy did not answer in
    /// time.
    ServerException,
    /// 11 "创建群失败": db_proxy refused or failed the creation.
    CreateGroup,
    /// 12 "更改群成员失败": db_proxy refused or failed the change.
    ChangeMember,
}

impl ErrorCode {
    /// The number in `error_code`.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::Success => 0,
            Self::Parameter => 1,
            Self::AppKey => 2,
            Self::Interface => 5,
            Self::ServerException => 10,
            Self::CreateGroup => 11,
            Self::ChangeMember => 12,
        }
    }

    /// TeamTalk's text in `error_msg`.
    #[must_use]
    pub const fn text(self) -> &'static str {
        match self {
            Self::Success => "成功",
            Self::Parameter => "参数错误",
            Self::AppKey => "appKey不存在",
            Self::Interface => "未授权的接口",
            Self::ServerException => "服务器异常",
            Self::CreateGroup => "创建群失败",
            Self::ChangeMember => "更改群成员失败",
        }
    }
}

/// An answer body: `{error_code, error_msg}`, and `group_id` in the
/// answers to a creation db_proxy decided (0 when it failed), as TeamTalk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// [`ErrorCode::code`].
    pub error_code: u32,
    /// [`ErrorCode::text`].
    pub error_msg: String,
    /// The new group's id (CreateGroup, once db_proxy answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<u32>,
}

impl Answer {
    /// The answer for `code`, without a group id.
    #[must_use]
    pub fn of(code: ErrorCode) -> Self {
        Self {
            error_code: code.code(),
            error_msg: code.text().to_owned(),
            group_id: None,
        }
    }

    /// The answer for `code` with a group id.
    #[must_use]
    pub fn with_group(code: ErrorCode, group_id: u32) -> Self {
        Self {
            group_id: Some(group_id),
            ..Self::of(code)
        }
    }

    /// As an HTTP response with `status`. TeamTalk sends 200 with every
    /// answer it gives; the other statuses are for what TeamTalk closed
    /// the connection on (not JSON, no such URL, too large) and for our
    /// own overload answer.
    #[must_use]
    pub fn response(&self, status: StatusCode) -> Response<Bytes> {
        // An Answer always serialises (strings and integers only).
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut resp = Response::new(Bytes::from(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ANSWER_CONTENT_TYPE));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The configured app keys, kept as SHA-256 digests and compared in
/// constant time, so neither a key's bytes nor its length leak through
/// timing.
#[derive(Clone, Default)]
pub struct AppKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AppKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppKeys({} keys)", self.digests.len())
    }
}

impl AppKeys {
    /// The keys given (empty ones are left out).
    #[must_use]
    pub fn new<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Self {
        let digests = keys
            .into_iter()
            .filter(|k| !k.as_ref().is_empty())
            .map(|k| Sha256::digest(k.as_ref().as_bytes()).into())
            .collect();
        Self { digests }
    }

    /// How many keys there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there is none (then every request is refused).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `key` is one of them. Every key is compared, whichever
    /// matches.
    #[must_use]
    pub fn accepts(&self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        let given: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = subtle::Choice::from(0);
        for d in &self.digests {
            found |= d.ct_eq(&given);
        }
        found.into()
    }
}

/// Which interface a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// `/query/CreateGroup`.
    CreateGroup,
    /// `/query/ChangeMembers`.
    ChangeMembers,
}

impl Api {
    /// The interface named by a request path, if any.
    #[must_use]
    pub fn of_path(path: &str) -> Option<Self> {
        match path {
            CREATE_GROUP_PATH => Some(Self::CreateGroup),
            CHANGE_MEMBERS_PATH => Some(Self::ChangeMembers),
            _ => None,
        }
    }

    /// Its metric label.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::CreateGroup => "create_group",
            Self::ChangeMembers => "change_members",
        }
    }

    /// What a failure db_proxy decided is answered with.
    #[must_use]
    pub const fn failure(self) -> ErrorCode {
        match self {
            Self::CreateGroup => ErrorCode::CreateGroup,
            Self::ChangeMembers => ErrorCode::ChangeMember,
        }
    }
}

/// A `/query/CreateGroup` body, after the app-key check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreateGroupBody {
    /// Who asks; TeamTalk reads it and sends 0 to db_proxy whatever it
    /// is, and so do we (the group is the administration's).
    pub req_user_id: u32,
    /// The group's name.
    pub group_name: String,
    /// 1 NORMAL, 2 TMP.
    pub group_type: u32,
    /// The group's avatar URL.
    pub group_avatar: String,
    /// Its members.
    pub user_id_list: Vec<u32>,
}

/// A `/query/ChangeMembers` body, after the app-key check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChangeMembersBody {
    /// Who asks (logged; the change is the administration's).
    pub req_user_id: u32,
    /// The group.
    pub group_id: u32,
    /// 1 add, 2 remove.
    pub modify_type: u32,
    /// The users added or removed.
    pub user_id_list: Vec<u32>,
}

/// A request read and checked, ready for db_proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Create a group.
    CreateGroup {
        /// `req_user_id`, for the log.
        requester: u32,
        /// Name.
        name: String,
        /// Avatar URL.
        avatar: String,
        /// NORMAL or TMP.
        group_type: GroupType,
        /// Members.
        members: Vec<u32>,
    },
    /// Change a group's members.
    ChangeMembers {
        /// `req_user_id`, for the log.
        requester: u32,
        /// The group.
        group_id: u32,
        /// Add or remove.
        change: MemberChange,
        /// Who.
        members: Vec<u32>,
    },
}

/// Why a body was refused, and with which code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a JSON object (TeamTalk closes the connection).
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    /// `app_key` missing or not configured.
    #[error("unknown app_key")]
    AppKey,
    /// A field missing, `null`, mistyped or out of range.
    #[error("parameter error: {0}")]
    Parameter(String),
}

impl Refusal {
    /// The code the answer carries.
    #[must_use]
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::NotJson(_) | Self::Parameter(_) => ErrorCode::Parameter,
            Self::AppKey => ErrorCode::AppKey,
        }
    }

    /// The HTTP status: 400 where TeamTalk gave no answer, else 200.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::NotJson(_) => StatusCode::BAD_REQUEST,
            Self::AppKey | Self::Parameter(_) => StatusCode::OK,
        }
    }
}

/// Reads `body` for `api`: a JSON object, an accepted `app_key`, then the
/// interface's fields, in TeamTalk's order (so a wrong key is reported
/// before a bad field).
///
/// # Errors
/// [`Refusal`] with the code to answer.
pub fn parse(api: Api, body: &[u8], keys: &AppKeys) -> Result<Query, Refusal> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::NotJson(clip(&e.to_string()).to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(Refusal::NotJson("not an object".to_owned()));
    };
    let key = object
        .get("app_key")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    if !keys.accepts(key) {
        return Err(Refusal::AppKey);
    }
    let param = |e: serde_json::Error| Refusal::Parameter(clip(&e.to_string()).to_string());
    let bounded = |list: &[u32]| {
        if list.len() > MAX_GROUP_MEMBERS {
            Err(Refusal::Parameter(format!(
                "user_id_list has {} ids, at most {MAX_GROUP_MEMBERS}",
                list.len()
            )))
        } else {
            Ok(())
        }
    };
    match api {
        Api::CreateGroup => {
            let b: CreateGroupBody = serde_json::from_value(value).map_err(param)?;
            bounded(&b.user_id_list)?;
            let group_type = GroupType::from_u32(b.group_type).ok_or_else(|| {
                Refusal::Parameter(format!("group_type {} is not 1 or 2", b.group_type))
            })?;
            Ok(Query::CreateGroup {
                requester: b.req_user_id,
                name: b.group_name,
                avatar: b.group_avatar,
                group_type,
                members: b.user_id_list,
            })
        }
        Api::ChangeMembers => {
            let b: ChangeMembersBody = serde_json::from_value(value).map_err(param)?;
            bounded(&b.user_id_list)?;
            let change = MemberChange::from_u32(b.modify_type).ok_or_else(|| {
                Refusal::Parameter(format!("modify_type {} is not 1 or 2", b.modify_type))
            })?;
            Ok(Query::ChangeMembers {
                requester: b.req_user_id,
                group_id: b.group_id,
                change,
                members: b.user_id_list,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keys() -> AppKeys {
        AppKeys::new(["asdfasdf", "second-key"])
    }

    #[test]
    fn teamtalks_documented_bodies_are_read() {
        let body = br#"{"req_user_id": 0, "app_key": "asdfasdf", "group_name": "abc",
            "group_type": 1, "group_avatar": "sdafdsf", "user_id_list": [1, 2, 3, 4, 5]}"#;
        assert_eq!(
            parse(Api::CreateGroup, body, &keys()),
            Ok(Query::CreateGroup {
                requester: 0,
                name: "abc".into(),
                avatar: "sdafdsf".into(),
                group_type: GroupType::Normal,
                members: vec![1, 2, 3, 4, 5],
            })
        );
        let body = br#"{"req_user_id": 0, "app_key": "second-key", "group_id": 1,
            "modify_type": 2, "user_id_list": [1, 2], "extra": {"ignored": true}}"#;
        assert_eq!(
            parse(Api::ChangeMembers, body, &keys()),
            Ok(Query::ChangeMembers {
                requester: 0,
                group_id: 1,
                change: MemberChange::Remove,
                members: vec![1, 2],
            })
        );
    }

    #[test]
    fn the_key_is_checked_before_the_fields() {
        for body in [
            &br#"{"app_key": "nope"}"#[..],
            br#"{"app_key": ""}"#,
            br#"{"app_key": 5, "group_id": 1}"#,
            br#"{"group_id": 1}"#,
            br#"{"app_key": "asdfasdfx"}"#,
        ] {
            assert_eq!(
                parse(Api::ChangeMembers, body, &keys()),
                Err(Refusal::AppKey)
            );
        }
        assert_eq!(
            parse(
                Api::ChangeMembers,
                br#"{"app_key":"x"}"#,
                &AppKeys::new([""; 0])
            ),
            Err(Refusal::AppKey),
            "no key configured: nothing is accepted"
        );
    }

    #[test]
    fn bad_fields_are_parameter_errors() {
        let ok = serde_json::json!({"req_user_id": 0, "app_key": "asdfasdf", "group_name": "a",
            "group_type": 2, "group_avatar": "", "user_id_list": [1]});
        assert!(parse(Api::CreateGroup, ok.to_string().as_bytes(), &keys()).is_ok());
        let with = |field: &str, v: serde_json::Value| {
            let mut b = ok.clone();
            match v {
                serde_json::Value::Null if field != "null" => {
                    b.as_object_mut().unwrap().remove(field);
                }
                v => {
                    b[field] = v;
                }
            }
            parse(Api::CreateGroup, b.to_string().as_bytes(), &keys())
        };
        use serde_json::json;
        for (field, v) in [
            ("group_type", json!(3)),
            ("group_type", json!(0)),
            ("group_type", json!("1")),
            ("group_type", serde_json::Value::Null),
            ("req_user_id", json!(-1)),
            ("req_user_id", json!(4_294_967_296_u64)),
            ("group_name", json!(7)),
            ("group_avatar", serde_json::Value::Null),
            ("user_id_list", json!([1, "2"])),
            ("user_id_list", json!(1)),
            ("user_id_list", json!(vec![1; MAX_GROUP_MEMBERS + 1])),
        ] {
            let r = with(field, v.clone());
            assert!(
                matches!(r, Err(Refusal::Parameter(_))),
                "{field}={v}: {r:?}"
            );
        }
        let mut b = ok.clone();
        b["group_name"] = serde_json::Value::Null;
        assert!(matches!(
            parse(Api::CreateGroup, b.to_string().as_bytes(), &keys()),
            Err(Refusal::Parameter(_))
        ));
        for body in [&b"not json"[..], b"[1,2]", b"", b"\"x\"", b"{\"a\":"] {
            let r = parse(Api::CreateGroup, body, &keys());
            assert!(matches!(r, Err(Refusal::NotJson(_))), "{r:?}");
            assert_eq!(r.unwrap_err().status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn answers_are_teamtalks_json() {
        let r = Answer::with_group(ErrorCode::Success, 7).response(StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], ANSWER_CONTENT_TYPE);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error_code": 0, "error_msg": "成功", "group_id": 7})
        );
        let r = Answer::of(ErrorCode::ServerException).response(StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error_code": 10, "error_msg": "服务器异常"})
        );
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        for (c, n) in [
            (ErrorCode::Parameter, 1),
            (ErrorCode::AppKey, 2),
            (ErrorCode::Interface, 5),
            (ErrorCode::CreateGroup, 11),
            (ErrorCode::ChangeMember, 12),
        ] {
            assert_eq!(c.code(), n);
        }
        assert_eq!(
            format!("{:?}", keys()),
            "AppKeys(2 keys)",
            "keys never logged"
        );
    }

    proptest! {
        /// Any body gets a decision, never a panic; a decision for a body
        /// without the right key is always the key refusal or "not JSON".
        #[test]
        fn any_body_is_decided(body in proptest::collection::vec(any::<u8>(), 0..300),
                               fields in proptest::collection::vec(("[a-z_]{1,12}", any::<i64>()), 0..8)) {
            let _ = parse(Api::CreateGroup, &body, &keys());
            let mut obj = serde_json::Map::new();
            for (k, v) in fields {
                obj.insert(k, serde_json::json!(v));
            }
            obj.insert("app_key".into(), serde_json::json!("asdfasdf"));
            for api in [Api::CreateGroup, Api::ChangeMembers] {
                let r = parse(api, serde_json::Value::Object(obj.clone()).to_string().as_bytes(), &keys());
                prop_assert!(matches!(r, Err(Refusal::Parameter(_)) | Ok(_)));
            }
            obj.insert("app_key".into(), serde_json::json!("wrong"));
            let r = parse(Api::ChangeMembers, serde_json::Value::Object(obj).to_string().as_bytes(), &keys());
            prop_assert_eq!(r, Err(Refusal::AppKey));
        }
    }
}
