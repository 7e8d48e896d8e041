//! What push_server sends to each service and how it reads the answers:
//! pure functions, so every field and every status rule is unit-tested
//! without a network (the workers in [`super::worker`] only move bytes).
//!
//! Formats, from the services' published references:
//! - **FCM HTTP v1**: `POST {base}/v1/projects/{project}/messages:send`
//!   with `Authorization: Bearer <OAuth2 access token>` and
//!   `{"message":{"token",…}}`; errors carry `error.details[].errorCode`
//!   (`UNREGISTERED` for a dead token, HTTP 404).
//! - **APNs provider API** (HTTP/2): `POST {base}/3/device/{token}` with
//!   `authorization: bearer <ES256 JWT>`, `apns-topic`, `apns-push-type`
//!   (`alert`, or `background` for a silent push), `apns-priority` (10, or
//!   5 for background), `apns-expiration`; errors are `{"reason":…}`
//!   (`BadDeviceToken`, `Unregistered`, `ExpiredProviderToken`, …).
//! - **Webhook** (ours): `POST {url}` with the JSON of [`webhook_body`].

use std::sync::Arc;

use serde_json::{Value, json};

/// `ClientType` wire values of the two push platforms.
pub const CLIENT_TYPE_IOS: i32 = 0x11;
/// Android's `ClientType`.
pub const CLIENT_TYPE_ANDROID: i32 = 0x12;
/// How long a notification is worth delivering: TeamTalk's APNs expiry
/// (now + 3600 s), used for FCM's `ttl` too.
pub const EXPIRY_SECS: u64 = 3600;

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkKind {
    /// A JSON POST to the operator's own gateway.
    Webhook,
    /// Firebase Cloud Messaging, HTTP v1 API.
    Fcm,
    /// Apple's HTTP/2 provider API, token-based authentication.
    Apns,
}

impl SinkKind {
    /// The `sink` label of the metrics, and the conf value.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Fcm => "fcm",
            Self::Apns => "apns",
        }
    }
}

/// The device's platform (from `UserTokenInfo.user_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// `CLIENT_TYPE_IOS`.
    Ios,
    /// `CLIENT_TYPE_ANDROID`.
    Android,
}

impl Platform {
    /// The platform of a TeamTalk client type; `None` for desktop clients.
    #[must_use]
    pub const fn of(client_type: i32) -> Option<Self> {
        match client_type {
            CLIENT_TYPE_IOS => Some(Self::Ios),
            CLIENT_TYPE_ANDROID => Some(Self::Android),
            _ => None,
        }
    }

    /// Its name in the webhook body.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Ios => "ios",
            Self::Android => "android",
        }
    }
}

/// One notification for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The service that delivers it.
    pub sink: SinkKind,
    /// The device owner.
    pub user_id: u32,
    /// The device's platform.
    pub platform: Platform,
    /// The device token the service knows the device by.
    pub token: String,
    /// The notification text (TeamTalk's `flash`).
    pub flash: Arc<str>,
    /// TeamTalk's `data` JSON (`{"msg_type","from_id"[,"group_id"]}`).
    pub data: Arc<str>,
    /// The badge: the user's unread messages (`push_count`).
    pub badge: u32,
    /// `push_type` 2: no alert, no sound (the user is at a PC).
    pub silent: bool,
    /// The message's key, when msg_server sent one.
    pub push_key: Option<Arc<str>>,
}

impl Delivery {
    /// `data` as a JSON value: the object TeamTalk built, or the string
    /// itself when it is not JSON.
    fn data_value(&self) -> Value {
        serde_json::from_str::<Value>(&self.data)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| Value::String(self.data.to_string()))
    }
}

/// What came of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service took the notification.
    Delivered,
    /// The service says the token is dead or not its own: never retried,
    /// and the token is removed.
    Invalid(String),
    /// A passing failure (network, 429, 5xx, an expired credential):
    /// retried after `after` seconds if the service said so.
    Retry {
        /// Why.
        reason: String,
        /// The service's `Retry-After`, in seconds.
        after: Option<u64>,
    },
    /// A failure another attempt would not fix (a refused payload, a
    /// wrong project, a sink not configured).
    Failed(String),
}

/// The webhook body: everything msg_server said, for the operator's
/// gateway to deliver however it likes.
#[must_use]
pub fn webhook_body(d: &Delivery) -> Value {
    json!({
        "user_id": d.user_id,
        "platform": d.platform.label(),
        "token": d.token,
        "flash": &*d.flash,
        "data": d.data_value(),
        "badge": d.badge,
        "silent": d.silent,
        "push_key": d.push_key.as_deref(),
    })
}

/// The FCM v1 `messages:send` body. A normal push is a notification
/// message (the system shows `flash`); a silent one is data only. The
/// data map (FCM wants string values) carries TeamTalk's `data` JSON as
/// it is and the badge.
#[must_use]
pub fn fcm_body(d: &Delivery) -> Value {
    let mut message = json!({
        "token": d.token,
        "data": {
            "data": &*d.data,
            "badge": d.badge.to_string(),
        },
        "android": {
            "priority": if d.silent { "NORMAL" } else { "HIGH" },
            "ttl": format!("{EXPIRY_SECS}s"),
        },
    });
    if !d.silent {
        message["notification"] = json!({ "body": &*d.flash });
    }
    json!({ "message": message })
}

/// The APNs request body: an alert with sound and badge, or for a silent
/// push `content-available` and the badge only (TeamTalk's rule: sound
/// only for `push_type` 1); TeamTalk's `data` beside `aps`.
#[must_use]
pub fn apns_body(d: &Delivery) -> Value {
    let aps = if d.silent {
        json!({ "content-available": 1, "badge": d.badge })
    } else {
        json!({ "alert": &*d.flash, "badge": d.badge, "sound": "default" })
    };
    json!({ "aps": aps, "data": d.data_value() })
}

/// The APNs headers besides `authorization`.
#[must_use]
pub fn apns_headers(d: &Delivery, topic: &str, now_unix: u64) -> Vec<(&'static str, String)> {
    let (push_type, priority) = if d.silent {
        ("background", "5")
    } else {
        ("alert", "10")
    };
    vec![
        ("apns-topic", topic.to_owned()),
        ("apns-push-type", push_type.to_owned()),
        ("apns-priority", priority.to_owned()),
        ("apns-expiration", (now_unix + EXPIRY_SECS).to_string()),
    ]
}

/// The `reason` of an APNs error body.
fn apns_reason(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// Reads APNs's answer.
#[must_use]
pub fn classify_apns(status: u16, body: &[u8], retry_after: Option<u64>) -> Outcome {
    let reason = apns_reason(body);
    match (status, reason.as_str()) {
        (200, _) => Outcome::Delivered,
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            Outcome::Invalid(format!("apns {status} {reason}"))
        }
        // The provider token is refreshed before the next attempt.
        (403, "ExpiredProviderToken" | "InvalidProviderToken") | (429 | 500 | 503, _) => {
            Outcome::Retry {
                reason: format!("apns {status} {reason}"),
                after: retry_after,
            }
        }
        _ => Outcome::Failed(format!("apns {status} {reason}")),
    }
}

/// The `errorCode` of an FCM error body (or its `status`).
fn fcm_error(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let err = &v["error"];
    err["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str())
        .or_else(|| err["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Reads FCM's answer.
#[must_use]
pub fn classify_fcm(status: u16, body: &[u8], retry_after: Option<u64>) -> Outcome {
    let code = fcm_error(body);
    match (status, code.as_str()) {
        (200, _) => Outcome::Delivered,
        (404, _) | (_, "UNREGISTERED" | "SENDER_ID_MISMATCH") => {
            Outcome::Invalid(format!("fcm {status} {code}"))
        }
        // 401: the access token expired early; a new one is fetched.
        (401 | 429 | 500 | 503, _) | (_, "UNAVAILABLE" | "INTERNAL" | "QUOTA_EXCEEDED") => {
            Outcome::Retry {
                reason: format!("fcm {status} {code}"),
                after: retry_after,
            }
        }
        _ => Outcome::Failed(format!("fcm {status} {code}")),
    }
}

/// Reads the webhook's answer: 2xx delivered, 410 Gone the token is dead,
/// 408, 429 and 5xx retried, any other status refused for good.
#[must_use]
pub fn classify_webhook(status: u16, retry_after: Option<u64>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        410 => Outcome::Invalid("webhook 410".to_owned()),
        408 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("webhook {status}"),
            after: retry_after,
        },
        _ => Outcome::Failed(format!("webhook {status}")),
    }
}

/// Whether an outcome asks for a fresh credential before the next try.
#[must_use]
pub fn needs_new_credential(sink: SinkKind, status: u16, body: &[u8]) -> bool {
    match sink {
        SinkKind::Apns => {
            status == 403
                && matches!(
                    apns_reason(body).as_str(),
                    "ExpiredProviderToken" | "InvalidProviderToken"
                )
        }
        SinkKind::Fcm => status == 401,
        SinkKind::Webhook => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(silent: bool) -> Delivery {
        Delivery {
            sink: SinkKind::Fcm,
            user_id: 7,
            platform: Platform::Android,
            token: "tok".into(),
            flash: "alice:hi".into(),
            data: r#"{"msg_type":1,"from_id":3}"#.into(),
            badge: 4,
            silent,
            push_key: Some("3:7:9".into()),
        }
    }

    #[test]
    fn fcm_notification_and_silent_data_message() {
        let v = fcm_body(&delivery(false));
        assert_eq!(v["message"]["token"], "tok");
        assert_eq!(v["message"]["notification"]["body"], "alice:hi");
        assert_eq!(
            v["message"]["data"]["data"],
            r#"{"msg_type":1,"from_id":3}"#
        );
        assert_eq!(v["message"]["data"]["badge"], "4");
        assert_eq!(v["message"]["android"]["priority"], "HIGH");
        assert_eq!(v["message"]["android"]["ttl"], "3600s");
        let s = fcm_body(&delivery(true));
        assert!(s["message"].get("notification").is_none());
        assert_eq!(s["message"]["android"]["priority"], "NORMAL");
    }

    #[test]
    fn apns_alert_and_background() {
        let v = apns_body(&delivery(false));
        assert_eq!(v["aps"]["alert"], "alice:hi");
        assert_eq!(v["aps"]["badge"], 4);
        assert_eq!(v["aps"]["sound"], "default");
        assert_eq!(v["data"]["from_id"], 3);
        let s = apns_body(&delivery(true));
        assert_eq!(s["aps"]["content-available"], 1);
        assert!(s["aps"].get("sound").is_none());
        let h = apns_headers(&delivery(true), "com.example.tt", 1000);
        assert!(h.contains(&("apns-push-type", "background".into())));
        assert!(h.contains(&("apns-priority", "5".into())));
        assert!(h.contains(&("apns-expiration", "4600".into())));
        assert!(h.contains(&("apns-topic", "com.example.tt".into())));
    }

    #[test]
    fn webhook_carries_everything() {
        let v = webhook_body(&delivery(false));
        assert_eq!(v["user_id"], 7);
        assert_eq!(v["platform"], "android");
        assert_eq!(v["data"]["msg_type"], 1);
        assert_eq!(v["push_key"], "3:7:9");
        assert_eq!(v["silent"], false);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify_apns(200, b"", None), Outcome::Delivered);
        assert!(matches!(
            classify_apns(410, br#"{"reason":"Unregistered"}"#, None),
            Outcome::Invalid(_)
        ));
        assert!(matches!(
            classify_apns(400, br#"{"reason":"BadDeviceToken"}"#, None),
            Outcome::Invalid(_)
        ));
        assert!(matches!(
            classify_apns(400, br#"{"reason":"PayloadTooLarge"}"#, None),
            Outcome::Failed(_)
        ));
        assert_eq!(
            classify_apns(429, br#"{"reason":"TooManyRequests"}"#, Some(5)),
            Outcome::Retry {
                reason: "apns 429 TooManyRequests".into(),
                after: Some(5)
            }
        );
        assert!(needs_new_credential(
            SinkKind::Apns,
            403,
            br#"{"reason":"ExpiredProviderToken"}"#
        ));
        let unreg = br#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        assert!(matches!(
            classify_fcm(404, unreg, None),
            Outcome::Invalid(_)
        ));
        assert!(matches!(
            classify_fcm(503, b"", None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify_fcm(400, br#"{"error":{"status":"INVALID_ARGUMENT"}}"#, None),
            Outcome::Failed(_)
        ));
        assert_eq!(classify_webhook(204, None), Outcome::Delivered);
        assert!(matches!(classify_webhook(410, None), Outcome::Invalid(_)));
        assert!(matches!(classify_webhook(502, None), Outcome::Retry { .. }));
        assert!(matches!(classify_webhook(403, None), Outcome::Failed(_)));
    }
}
