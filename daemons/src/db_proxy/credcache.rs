//! Remembers recently verified logins so a reconnecting client does not pay
//! for Argon2 again.
//!
//! Argon2id costs about 18 ms of a core per check by design, which bounds
//! a 2-core db_proxy to ~100 logins/s: a reconnect storm (mobile clients
//! after a network blip, a restarted msg_server) would queue behind it.
//! After a successful check we keep, per user name, a keyed BLAKE2b digest
//! of the client's password value and the user id, for a limited time. A
//! later login with the same value matches the digest instead of running
//! Argon2; any other value goes through Argon2 as usual, and a failed check
//! forgets the entry.
//!
//! The key is random per process and never stored, so the digests are
//! useless outside this process; the cache lives in memory only.
//!
//! # Changes made elsewhere
//!
//! The store can be changed by another process while db_proxy runs
//! (`teamtalk user passwd` and `user disable` edit the SQLite file
//! directly), so a remembered login is not trusted on its own: each entry
//! keeps the [`CredentialStamp`] of the stored credential it was verified
//! against, and a hit ([`CredentialCache::check_current`]) re-reads the
//! user's row by primary key (no password hashing) and answers from the
//! cache only if the stamp is unchanged, the name still the user's, and the
//! user not departed. A changed password or a disabled user therefore stops
//! working at the next login, not ten minutes later; the entry is then
//! forgotten and the store decides.
//!
//! It is keyed by user name, which is client input, so it is bounded in
//! bytes ([`CredentialCache::max_bytes`]): each entry is charged its name's
//! length plus [`ENTRY_OVERHEAD`]. Only names the store verified get in,
//! and db_proxy refuses names over
//! [`MAX_CREDENTIAL_LEN`](crate::rules::sizing::MAX_CREDENTIAL_LEN) bytes
//! before, but the bound does not rely on either.

use std::collections::HashMap;
use std::sync::Mutex;

use blake2::{Blake2b512, Digest};
use subtle::ConstantTimeEq;

use crate::store::{CredentialStamp, USER_STATUS_DEPARTED, User, UserCredential};

/// How long a verified login is remembered, in seconds.
pub const DEFAULT_TTL_SECS: u32 = 600;
/// Default byte budget: 200,000 logins with 64-byte names.
pub const DEFAULT_MAX_BYTES: usize = 200_000 * (ENTRY_OVERHEAD + 64);
/// Bytes an entry is charged besides its name: the map slot, the digest,
/// the id, the credential stamp and expiry, and the allocation around the
/// name.
pub const ENTRY_OVERHEAD: usize = 112;

#[derive(Debug, Clone, Copy)]
struct Entry {
    digest: [u8; 32],
    user_id: u32,
    credential: CredentialStamp,
    expires: u32,
}

/// What a cache hit knows before it is checked against the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedLogin {
    /// The user the login was verified for.
    pub user_id: u32,
    /// The stamp of the stored credential it was verified against.
    pub credential: CredentialStamp,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct CredentialCache {
    key: [u8; 32],
    ttl_secs: u32,
    max_bytes: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
}

fn cost(name: &str) -> usize {
    ENTRY_OVERHEAD + name.len()
}

impl CredentialCache {
    /// A cache with a fresh random key.
    ///
    /// # Errors
    /// When the operating system cannot provide randomness.
    pub fn new(ttl_secs: u32, max_bytes: usize) -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self {
            key,
            ttl_secs,
            max_bytes,
            entries: Mutex::new(Entries::default()),
        })
    }

    /// The byte budget (see the [module docs](self)).
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Bytes the remembered logins are charged.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.bytes)
    }

    /// Logins remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.map.len())
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn digest(&self, name: &str, password: &str) -> [u8; 32] {
        let mut h = Blake2b512::new();
        h.update(self.key);
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update(password.as_bytes());
        let full = h.finalize();
        let mut out = [0u8; 32];
        out.copy_from_slice(&full[..32]);
        out
    }

    /// What is remembered of `name` logging in with this exact `password`
    /// value within the last TTL; to be confirmed against the store
    /// ([`check_current`](Self::check_current) does both).
    #[must_use]
    pub fn check(&self, name: &str, password: &str, now: u32) -> Option<CachedLogin> {
        let want = self.digest(name, password);
        let entries = self.entries.lock().ok()?;
        let e = entries.map.get(name)?;
        (e.expires > now && bool::from(e.digest.ct_eq(&want))).then_some(CachedLogin {
            user_id: e.user_id,
            credential: e.credential,
        })
    }

    /// The user, if `name` logged in with this exact `password` value
    /// within the last TTL and the store still holds the credential it was
    /// verified against: `current` reads the user's row and stamp by id
    /// (one indexed read, no hashing). `Ok(None)` means the store must
    /// check the login; an entry found stale (another password, a departed
    /// or deleted or renamed user) is forgotten.
    ///
    /// # Errors
    /// What `current` returns.
    pub fn check_current<E>(
        &self,
        name: &str,
        password: &str,
        now: u32,
        current: impl FnOnce(u32) -> Result<Option<UserCredential>, E>,
    ) -> Result<Option<User>, E> {
        let Some(hit) = self.check(name, password, now) else {
            return Ok(None);
        };
        match current(hit.user_id)? {
            Some(c)
                if c.credential == hit.credential
                    && c.user.name == name
                    && c.user.status != USER_STATUS_DEPARTED =>
            {
                Ok(Some(c.user))
            }
            _ => {
                self.forget(name);
                Ok(None)
            }
        }
    }

    /// Records a login the store just verified against the stored
    /// credential `credential`.
    pub fn remember(
        &self,
        name: &str,
        password: &str,
        user_id: u32,
        credential: CredentialStamp,
        now: u32,
    ) {
        let entry = Entry {
            digest: self.digest(name, password),
            user_id,
            credential,
            expires: now.saturating_add(self.ttl_secs),
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if let Some(e) = entries.map.get_mut(name) {
            *e = entry;
            return;
        }
        let cost = cost(name);
        if entries.bytes.saturating_add(cost) > self.max_bytes {
            let mut freed = 0;
            entries.map.retain(|n, e| {
                let keep = e.expires > now;
                if !keep {
                    freed += self::cost(n);
                }
                keep
            });
            entries.bytes = entries.bytes.saturating_sub(freed);
            if entries.bytes.saturating_add(cost) > self.max_bytes {
                return;
            }
        }
        entries.bytes += cost;
        entries.map.insert(name.to_owned(), entry);
    }

    /// Drops what is known about `name` (after a failed check).
    pub fn forget(&self, name: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && entries.map.remove(name).is_some()
        {
            entries.bytes = entries.bytes.saturating_sub(cost(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: CredentialStamp = CredentialStamp([7; 16]);

    fn id(c: Option<CachedLogin>) -> Option<u32> {
        c.map(|c| c.user_id)
    }

    #[test]
    fn remembers_only_the_same_value_within_the_ttl() {
        let c = CredentialCache::new(60, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(c.check("alice", "pw", 100), None);
        c.remember("alice", "pw", 7, STAMP, 100);
        assert_eq!(
            c.check("alice", "pw", 159),
            Some(CachedLogin {
                user_id: 7,
                credential: STAMP
            })
        );
        assert_eq!(c.check("alice", "other", 120), None);
        assert_eq!(c.check("bob", "pw", 120), None);
        assert_eq!(c.check("alice", "pw", 160), None, "expired");
        c.forget("alice");
        assert_eq!(c.check("alice", "pw", 120), None);
    }

    fn user(id: u32, name: &str, status: u32) -> User {
        User {
            id,
            name: name.to_owned(),
            nick: String::new(),
            sex: 0,
            dept_id: 0,
            avatar: String::new(),
            email: String::new(),
            phone: String::new(),
            domain: String::new(),
            status,
            sign_info: String::new(),
            push_shield: false,
            created: 0,
            updated: 0,
        }
    }

    fn stored(id: u32, name: &str, status: u32, credential: CredentialStamp) -> UserCredential {
        UserCredential {
            user: user(id, name, status),
            credential,
        }
    }

    /// A hit is trusted only while the store holds the credential it was
    /// verified against, for the same user, not departed; a stale entry is
    /// forgotten.
    #[test]
    fn a_hit_is_confirmed_against_the_stored_credential() {
        let c = CredentialCache::new(60, DEFAULT_MAX_BYTES).unwrap();
        let ok = |_: u32| Ok::<_, ()>(Some(stored(7, "alice", 0, STAMP)));
        assert_eq!(c.check_current("alice", "pw", 1, ok), Ok(None), "empty");
        c.remember("alice", "pw", 7, STAMP, 0);
        let mut asked = None;
        let got = c.check_current("alice", "pw", 1, |id| {
            asked = Some(id);
            ok(id)
        });
        assert_eq!(got.map(|u| u.map(|u| u.id)), Ok(Some(7)));
        assert_eq!(asked, Some(7), "the store is asked by id");

        let other = CredentialStamp([8; 16]);
        for (why, now) in [
            ("password changed", Some(stored(7, "alice", 0, other))),
            (
                "disabled",
                Some(stored(7, "alice", USER_STATUS_DEPARTED, STAMP)),
            ),
            ("renamed", Some(stored(7, "alicia", 0, STAMP))),
            ("deleted", None),
        ] {
            c.remember("alice", "pw", 7, STAMP, 0);
            let got = c.check_current("alice", "pw", 1, |_| Ok::<_, ()>(now.clone()));
            assert_eq!(got, Ok(None), "{why}");
            assert_eq!(id(c.check("alice", "pw", 1)), None, "{why}: forgotten");
        }
        c.remember("alice", "pw", 7, STAMP, 0);
        assert_eq!(
            c.check_current("alice", "pw", 1, |_| Err::<Option<UserCredential>, _>(
                "down"
            )),
            Err("down"),
            "a store failure is the caller's"
        );
        assert_eq!(
            id(c.check("alice", "pw", 1)),
            Some(7),
            "and forgets nothing"
        );
    }

    #[test]
    fn the_byte_budget_is_a_hard_bound() {
        let c = CredentialCache::new(60, 2 * (ENTRY_OVERHEAD + 1)).unwrap();
        c.remember("a", "x", 1, STAMP, 0);
        c.remember("b", "x", 2, STAMP, 0);
        c.remember("c", "x", 3, STAMP, 0);
        assert_eq!(id(c.check("c", "x", 1)), None, "full: not added");
        assert_eq!(c.bytes(), 2 * (ENTRY_OVERHEAD + 1));
        c.remember("a", "y", 1, STAMP, 1);
        assert_eq!(
            id(c.check("a", "y", 2)),
            Some(1),
            "replacing costs nothing more"
        );
        c.remember("d", "x", 4, STAMP, 100);
        assert_eq!(
            id(c.check("d", "x", 101)),
            Some(4),
            "expired entries make room"
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), ENTRY_OVERHEAD + 1);
        c.forget("d");
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn long_names_are_charged_their_length() {
        let c = CredentialCache::new(60, 1 << 20).unwrap();
        let big = "n".repeat(1 << 20);
        c.remember(&big, "x", 1, STAMP, 0);
        assert!(
            c.is_empty(),
            "a megabyte name does not fit a megabyte budget"
        );
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn two_processes_make_different_digests() {
        let a = CredentialCache::new(60, 2).unwrap();
        let b = CredentialCache::new(60, 2).unwrap();
        assert_ne!(a.digest("alice", "pw"), b.digest("alice", "pw"));
    }
}
