//! Login checks: 0x0703 `CID_OTHER_VALIDATE_REQ` → 0x0704.
//!
//! # Wire rules (TeamTalk)
//!
//! - `result_code` 0: the password matched; `user_info` is set, with
//!   `status` 0 whatever the stored status, and `result_string` says "ok".
//! - 1: unknown name, wrong password, or a departed user; no `user_info`.
//! - 2: the request could not be read or the store failed (the failure
//!   answer of `crate::rules::failure`).
//! - 6: too many failures for this name
//!   ([`limiter`](crate::db_proxy::limiter)): the password is not even
//!   looked at, and `result_string` says when to try again.
//! - `user_name` and `attach_data` are echoed.
//!
//! # Where we differ
//!
//! - Passwords are stored as Argon2id hashes; users imported from TeamTalk
//!   keep TeamTalk's salted MD5 form so they can still log in.
//! - A login whose password value the store verified in the last few
//!   minutes is answered from the [credential
//!   cache](crate::db_proxy::credcache) without running Argon2 again; a
//!   failed check forgets the name's entry.
//! - The limiter's table is bounded (see its docs).

use teamtalk_proto::pb::im::server::{ImValidateReq, ImValidateRsp};
use teamtalk_proto::{Message, Pdu};
use tracing::{debug, info, warn};

use super::{Served, misrouted, user_info};
use crate::db_proxy::handler::{
    DbProxy, VALIDATE_BAD_CREDENTIALS, VALIDATE_OK, VALIDATE_TOO_MANY_FAILURES, bump,
};
use crate::store::{StoreResult, USER_STATUS_DEPARTED, User};

impl DbProxy {
    /// The login family's share of the dispatch table.
    pub(super) fn serve_login(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        match msg {
            Message::OtherValidateReq(req) => self.answer(seq, self.validate(req)),
            other => misrouted(other),
        }
    }

    /// Checks a login: the credential cache first, then the store (Argon2
    /// or TeamTalk's salted MD5), remembering what the store verified.
    fn verify(&self, name: &str, password: &str, now: u32) -> StoreResult<Option<User>> {
        if let Some(cache) = &self.credentials
            && let Some(id) = cache.check(name, password, now)
            && let Some(user) = self.store.users_by_ids(&[id])?.into_iter().next()
            && user.name == name
            && user.status != USER_STATUS_DEPARTED
        {
            bump(&self.counters.logins_cached);
            return Ok(Some(user));
        }
        let user = self.store.verify_login(name, password)?;
        if let (Some(cache), Some(u)) = (&self.credentials, &user) {
            cache.remember(name, password, u.id, now);
        }
        Ok(user)
    }

    fn validate(&self, req: &ImValidateReq) -> Served<ImValidateRsp> {
        let now = (self.options.clock)();
        let mut rsp = ImValidateRsp {
            user_name: req.user_name.clone(),
            result_code: VALIDATE_OK,
            result_string: None,
            user_info: None,
            attach_data: super::echo(&req.attach_data),
        };
        if let Err(locked) = self.limiter.check(&req.user_name, now) {
            bump(&self.counters.logins_locked);
            warn!(user = %req.user_name, until = locked.until, "login refused: too many failures");
            rsp.result_code = VALIDATE_TOO_MANY_FAILURES;
            rsp.result_string = Some(format!(
                "too many wrong passwords for this user name; try again in {} minutes",
                locked.until.saturating_sub(now).div_ceil(60)
            ));
            return Ok(rsp);
        }
        let verified = self
            .verify(&req.user_name, &req.password, now)
            .map_err(|e| self.store_failed("checking a login", &e))?;
        if let Some(user) = verified {
            bump(&self.counters.logins_ok);
            self.limiter.record_success(&req.user_name);
            debug!(user = %req.user_name, id = user.id, "login validated");
            let mut ui = user_info(&user);
            // TeamTalk reports status 0 in the login reply.
            ui.status = 0;
            rsp.result_string = Some("ok".to_owned());
            rsp.user_info = Some(ui);
        } else {
            if let Some(cache) = &self.credentials {
                cache.forget(&req.user_name);
            }
            bump(&self.counters.logins_failed);
            self.limiter.record_failure(&req.user_name, now);
            info!(user = %req.user_name, "login refused: bad credentials");
            rsp.result_code = VALIDATE_BAD_CREDENTIALS;
            rsp.result_string = Some("wrong user name or password".to_owned());
        }
        Ok(rsp)
    }
}
