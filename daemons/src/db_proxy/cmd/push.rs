//! Mobile push settings: 0x0108 device token → 0x0109, 0x010c push shield
//! set → 0x010d, 0x010e push shield query → 0x010f, and 0x0705 device
//! tokens (msg_server's own request before a push) → 0x0706.
//!
//! # Wire rules (TeamTalk)
//!
//! - Device token: an empty token unregisters (msg_server sends one, with
//!   no `client_type`, at logout); a token belongs to one device, so it is
//!   taken from any other user. The reply carries no result.
//! - Push shield set: `result_code` 0 and the new `shield_status` on
//!   success, 1 and no status for an unknown user. Query: the same shape.
//! - Device tokens: iOS (0x11) and Android (0x12) tokens of the listed
//!   users, `push_count` = the user's total unread, `push_type` 1 (normal;
//!   msg_server downgrades to silent when a PC is online). iOS users with
//!   the shield on are left out from 22:00 to 07:59 local time.
//!
//! # Where we differ
//!
//! - A store failure is a failure answer: 0x010d / 0x010f with
//!   `result_code` 1, and `IMRequestFailed` for 0x0108 and 0x0705, whose
//!   replies cannot say "failed". TeamTalk answered 0x0108 whatever
//!   happened, and 0x0705 with the tokens it managed to read.
//! - An empty token with `invalid_token` (our field 100, what msg_server
//!   sends for a token push_server found invalid) removes the user's token
//!   only while it is still that one, so a token registered since stays;
//!   TeamTalk removed whatever the user had.
//! - Local time comes from `DbProxyOptions::utc_offset_secs`, not the
//!   system's time zone.
//! - A device token longer than
//!   [`MAX_DEVICE_TOKEN_LEN`](crate::rules::sizing::MAX_DEVICE_TOKEN_LEN)
//!   bytes is a bad request (failure answer), not stored; 0x0705 names at
//!   most [`MAX_USERS_INFO_IDS`](crate::rules::sizing::MAX_USERS_INFO_IDS)
//!   users, and its reply is a page below the frame limit
//!   ([`crate::rules::sizing`]); `push_count` is read without reading any
//!   message.

use prost::Message as _;
use teamtalk_proto::pb::im::base_define::UserTokenInfo;
use teamtalk_proto::pb::im::login::{
    ImDeviceTokenReq, ImDeviceTokenRsp, ImPushShieldReq, ImPushShieldRsp, ImQueryPushShieldReq,
    ImQueryPushShieldRsp,
};
use teamtalk_proto::pb::im::server::{ImGetDeviceTokenReq, ImGetDeviceTokenRsp};
use teamtalk_proto::{Message, Pdu};
use tracing::{debug, warn};

use super::{Failed, Served, echo, misrouted, too_many_ids, wire_i32, wire_u32};
use crate::clip::clip;
use crate::db_proxy::handler::{DbProxy, RESULT_FAILED};
use crate::rules::sizing::{MAX_DEVICE_TOKEN_LEN, MAX_USERS_INFO_IDS};

/// `IMGetDeviceTokenRsp.user_token_info`, for sizing its pages.
const TOKENS_TAG: u32 = 1;

/// `ClientType` wire values of the two push platforms.
const CLIENT_TYPE_IOS: u32 = 0x11;
const CLIENT_TYPE_ANDROID: u32 = 0x12;
/// `UserTokenInfo.push_type` TeamTalk's db_proxy always answers (normal
/// push; msg_server downgrades to silent when a PC is online).
const PUSH_TYPE_NORMAL: u32 = 1;

/// Quiet hours for iOS users with push shield on: from 22:00 up to 07:59 local
/// time their tokens are left out (TeamTalk's rule).
const QUIET_FROM_HOUR: u32 = 22;
const QUIET_UNTIL_HOUR: u32 = 7;

impl DbProxy {
    /// The push family's share of the dispatch table.
    pub(super) fn serve_push(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        match msg {
            Message::LoginReqPushShield(req) => self.answer(seq, self.set_push_shield(req)),
            Message::LoginReqQueryPushShield(req) => self.answer(seq, self.query_push_shield(req)),
            Message::LoginReqDevicetoken(req) => self.answer(seq, self.set_device_token(req)),
            Message::OtherGetDeviceTokenReq(req) => self.answer(seq, self.device_tokens(req)),
            other => misrouted(other),
        }
    }

    fn set_push_shield(&self, req: &ImPushShieldReq) -> Served<ImPushShieldRsp> {
        let ok = self
            .store
            .set_push_shield(req.user_id, req.shield_status != 0)
            .map_err(|e| self.store_failed("setting push shield", &e))?;
        Ok(ImPushShieldRsp {
            user_id: req.user_id,
            result_code: if ok { 0 } else { RESULT_FAILED },
            shield_status: ok.then_some(req.shield_status),
            attach_data: echo(&req.attach_data),
        })
    }

    fn query_push_shield(&self, req: &ImQueryPushShieldReq) -> Served<ImQueryPushShieldRsp> {
        let status = self
            .store
            .push_shield(req.user_id)
            .map_err(|e| self.store_failed("reading push shield", &e))?;
        Ok(ImQueryPushShieldRsp {
            user_id: req.user_id,
            result_code: if status.is_some() { 0 } else { RESULT_FAILED },
            shield_status: status.map(u32::from),
            attach_data: echo(&req.attach_data),
        })
    }

    fn set_device_token(&self, req: &ImDeviceTokenReq) -> Served<ImDeviceTokenRsp> {
        let longest = req
            .device_token
            .len()
            .max(req.invalid_token.as_ref().map_or(0, String::len));
        if longest > MAX_DEVICE_TOKEN_LEN {
            warn!(
                user = req.user_id,
                token = %clip(&req.device_token),
                "device token too long; not stored"
            );
            return Err(Failed::bad_request("device token too long"));
        }
        match req.invalid_token.as_deref() {
            // push_server found this token invalid: remove it only if the
            // user still has it.
            Some(invalid) if req.device_token.is_empty() => {
                let removed = self
                    .store
                    .forget_device_token(req.user_id, invalid)
                    .map_err(|e| self.store_failed("removing an invalid device token", &e))?;
                debug!(user = req.user_id, removed, "invalid device token");
            }
            _ => {
                let client_type = req.client_type.map_or(0, wire_u32);
                self.store
                    .set_device_token(req.user_id, client_type, &req.device_token)
                    .map_err(|e| self.store_failed("setting a device token", &e))?;
            }
        }
        Ok(ImDeviceTokenRsp {
            user_id: req.user_id,
            attach_data: echo(&req.attach_data),
        })
    }

    fn in_quiet_hours(&self) -> bool {
        let local = i64::from((self.options.clock)()) + i64::from(self.options.utc_offset_secs);
        let hour = local.rem_euclid(86_400) / 3_600;
        let hour = u32::try_from(hour).unwrap_or(0);
        hour >= QUIET_FROM_HOUR || hour <= QUIET_UNTIL_HOUR
    }

    fn device_tokens(&self, req: &ImGetDeviceTokenReq) -> Served<ImGetDeviceTokenRsp> {
        if req.user_id.len() > MAX_USERS_INFO_IDS {
            return Err(too_many_ids(
                "device tokens",
                req.user_id.len(),
                MAX_USERS_INFO_IDS,
            ));
        }
        let tokens = self
            .store
            .device_tokens(&req.user_id)
            .map_err(|e| self.store_failed("reading device tokens", &e))?;
        let quiet = self.in_quiet_hours();
        let mut infos = Vec::with_capacity(tokens.len());
        for t in tokens {
            match t.client_type {
                CLIENT_TYPE_IOS => {
                    let shielded = quiet
                        && self
                            .store
                            .push_shield(t.user_id)
                            .map_err(|e| self.store_failed("reading push shield", &e))?
                            == Some(true);
                    if shielded {
                        debug!(
                            user = t.user_id,
                            "iOS push held back: shield on, quiet hours"
                        );
                        continue;
                    }
                }
                CLIENT_TYPE_ANDROID => {}
                other => {
                    debug!(
                        user = t.user_id,
                        client_type = other,
                        "token of a non-push client"
                    );
                    continue;
                }
            }
            let push_count = self
                .store
                .unread_total(t.user_id)
                .map_err(|e| self.store_failed("counting unread messages", &e))?;
            infos.push(UserTokenInfo {
                user_id: t.user_id,
                user_type: wire_i32(t.client_type),
                token: t.token,
                push_count,
                push_type: PUSH_TYPE_NORMAL,
            });
        }
        let mut rsp = ImGetDeviceTokenRsp {
            user_token_info: Vec::new(),
            attach_data: echo(&req.attach_data),
        };
        rsp.user_token_info = self
            .page("device tokens", rsp.encoded_len(), TOKENS_TAG, infos)?
            .page;
        Ok(rsp)
    }
}
