//! Login checks: 0x0703 `CID_OTHER_VALIDATE_REQ` → 0x0704.
//!
//! # Wire rules (TeamTalk)
//!
//! - `result_code` 0: the password matched; `user_info` is set, with
//!   `status` 0 whatever the stored status, and `result_string` says "ok".
//! - 1: unknown name, wrong password, or a departed user; no `user_info`.
//! - 2: the request could not be read or the store failed (the failure
//!   answer of `crate::rules::failure`).
//! - 6: too many failures ([`limiter`](crate::db_proxy::limiter)): the
//!   password is not even looked at, and `result_string` says when to try
//!   again.
//! - `user_name` and `attach_data` are echoed.
//!
//! # Where we differ
//!
//! - An accepted login's reply carries the user's groups (`groups`, our
//!   field 100: what 0x0791 answers), read in the same lane, so msg_server
//!   indexes them without a second request through the store lane (which
//!   would wait behind message commits). A store failure reading them
//!   leaves the field out and the login accepted; msg_server then asks.
//! - Passwords are stored as Argon2id hashes; users imported from TeamTalk
//!   keep TeamTalk's salted MD5 form so they can still log in.
//! - A login whose password value the store verified in the last few
//!   minutes is answered from the [credential
//!   cache](crate::db_proxy::credcache) without running Argon2 again, as
//!   long as the stored credential is still the one verified (a password
//!   changed or a user disabled by `teamtalk user` in another process takes
//!   effect at once); a failed check forgets the name's entry.
//! - A disabled user (status 3, departed) is refused like a wrong password
//!   (1; the client sees TeamTalk's 6, `DB_VALIDATE_FAILED`). TeamTalk's
//!   query let in status 0 only; other statuses are employment states here
//!   and log in.
//! - The limiter counts failures per (client address, user name) and per
//!   address when msg_server sends the client's address
//!   (`IMValidateReq.client_addr`, our field 100), per name otherwise, and
//!   refuses with growing delays of at most five minutes instead of
//!   TeamTalk's 30-minute lock of the name: a stranger's wrong passwords no
//!   longer lock the user out. Its table and the credential cache are
//!   bounded in bytes (see their docs).
//! - A user name or password longer than
//!   [`MAX_CREDENTIAL_LEN`](crate::rules::sizing::MAX_CREDENTIAL_LEN) (256)
//!   bytes is refused before anything else looks at it, with the failure
//!   answer (2) and an empty `user_name` (what was too long is not echoed);
//!   it reaches no table, and logs show it clipped
//!   ([`clip`](crate::clip::clip)), as they show every user name.

use teamtalk_proto::pb::im::server::{ImValidateGroups, ImValidateReq, ImValidateRsp};
use teamtalk_proto::{Message, Pdu};
use tracing::{debug, info, warn};

use super::{Failed, Served, misrouted, user_info};
use crate::clip::clip;
use crate::db_proxy::handler::{
    DbProxy, VALIDATE_BAD_CREDENTIALS, VALIDATE_OK, VALIDATE_TOO_MANY_FAILURES, bump,
};
use crate::db_proxy::limiter::Source;
use crate::rules::sizing::MAX_CREDENTIAL_LEN;
use crate::store::{StoreResult, User};

/// Whether a login's name or password is longer than any real one
/// ([`MAX_CREDENTIAL_LEN`]).
fn oversized(req: &ImValidateReq) -> bool {
    req.user_name.len() > MAX_CREDENTIAL_LEN || req.password.len() > MAX_CREDENTIAL_LEN
}

impl DbProxy {
    /// The login family's share of the dispatch table.
    pub(super) fn serve_login(&self, seq: u16, msg: &Message) -> Served<Option<Pdu>> {
        match msg {
            Message::OtherValidateReq(req) if oversized(req) => {
                bump(&self.counters.logins_oversized);
                warn!(
                    user = %clip(&req.user_name),
                    password_len = req.password.len(),
                    "login refused: user name or password too long"
                );
                // The failure answer, without echoing what was too long.
                let blank = ImValidateReq {
                    user_name: String::new(),
                    password: String::new(),
                    ..req.clone()
                };
                Ok(Some(self.fail(
                    seq,
                    &Message::OtherValidateReq(blank),
                    Failed::bad_request("user name or password too long"),
                )))
            }
            Message::OtherValidateReq(req) => self.answer(seq, self.validate(req)),
            other => misrouted(other),
        }
    }

    /// Where a login comes from, for the limiter: msg_server's
    /// `client_addr`, or `None` (counted by name alone) when it sent none
    /// or one that is not an address.
    fn login_source(req: &ImValidateReq) -> Option<Source> {
        let text = req.client_addr.as_deref()?;
        let source = Source::parse(text);
        if source.is_none() {
            warn!(
                client_addr = %clip(text),
                "unreadable client address; login failures counted by user name alone"
            );
        }
        source
    }

    /// Checks a login: the credential cache first (confirmed against the
    /// stored credential's stamp, one indexed read), then the store (Argon2
    /// or TeamTalk's salted MD5), remembering what the store verified.
    fn verify(&self, name: &str, password: &str, now: u32) -> StoreResult<Option<User>> {
        if let Some(cache) = &self.credentials
            && let Some(user) = cache.check_current(name, password, now, |id| {
                self.store.user_with_credential(id)
            })?
        {
            bump(&self.counters.logins_cached);
            return Ok(Some(user));
        }
        let Some(verified) = self.store.check_login(name, password)? else {
            return Ok(None);
        };
        if let Some(cache) = &self.credentials {
            cache.remember(name, password, verified.user.id, verified.credential, now);
        }
        Ok(Some(verified.user))
    }

    /// The groups of a user who just logged in, for the reply's `groups`
    /// (our extension): what 0x0791 would answer, read here so msg_server
    /// asks no second request per login. A store failure only leaves them
    /// out (msg_server then asks); the login itself succeeded.
    fn login_groups(&self, user: u32) -> Option<ImValidateGroups> {
        match self.store.user_groups(user, None) {
            Ok(groups) => Some(ImValidateGroups {
                group_id_list: groups.into_iter().map(|g| g.id).collect(),
            }),
            Err(e) => {
                warn!(user, error = %e, "reading the groups of a login failed; msg_server will ask");
                None
            }
        }
    }

    fn validate(&self, req: &ImValidateReq) -> Served<ImValidateRsp> {
        let now = (self.options.clock)();
        let mut rsp = ImValidateRsp {
            groups: None,
            user_name: req.user_name.clone(),
            result_code: VALIDATE_OK,
            result_string: None,
            user_info: None,
            attach_data: super::echo(&req.attach_data),
        };
        let source = Self::login_source(req);
        if let Err(locked) = self.limiter.check(source, &req.user_name, now) {
            bump(&self.counters.logins_locked);
            warn!(
                user = %clip(&req.user_name),
                source = %source.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                until = locked.until,
                "login refused: too many failures"
            );
            rsp.result_code = VALIDATE_TOO_MANY_FAILURES;
            rsp.result_string = Some(format!(
                "too many wrong passwords; try again in {} seconds",
                locked.until.saturating_sub(now).max(1)
            ));
            return Ok(rsp);
        }
        let verified = self
            .verify(&req.user_name, &req.password, now)
            .map_err(|e| self.store_failed("checking a login", &e))?;
        if let Some(user) = verified {
            bump(&self.counters.logins_ok);
            self.limiter.record_success(source, &req.user_name);
            debug!(user = %clip(&req.user_name), id = user.id, "login validated");
            let mut ui = user_info(&user);
            // TeamTalk reports status 0 in the login reply.
            ui.status = 0;
            rsp.result_string = Some("ok".to_owned());
            rsp.user_info = Some(ui);
            rsp.groups = self.login_groups(user.id);
        } else {
            if let Some(cache) = &self.credentials {
                cache.forget(&req.user_name);
            }
            bump(&self.counters.logins_failed);
            self.limiter.record_failure(source, &req.user_name, now);
            // A guessing client can cause thousands a second: counted
            // always (logins_failed), one INFO line per interval.
            if let Some(held_back) = self
                .refusal_log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pass_secs(now)
            {
                info!(user = %clip(&req.user_name), held_back, "login refused: bad credentials");
            } else {
                debug!(user = %clip(&req.user_name), "login refused: bad credentials");
            }
            rsp.result_code = VALIDATE_BAD_CREDENTIALS;
            rsp.result_string = Some("wrong user name or password".to_owned());
        }
        Ok(rsp)
    }
}
