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

/// How long a verified login is remembered, in seconds.
pub const DEFAULT_TTL_SECS: u32 = 600;
/// Default byte budget: 200,000 logins with 64-byte names.
pub const DEFAULT_MAX_BYTES: usize = 200_000 * (ENTRY_OVERHEAD + 64);
/// Bytes an entry is charged besides its name: the map slot, the digest,
/// the id and expiry, and the allocation around the name.
pub const ENTRY_OVERHEAD: usize = 96;

#[derive(Debug, Clone, Copy)]
struct Entry {
    digest: [u8; 32],
    user_id: u32,
    expires: u32,
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

    /// The user id, if `name` logged in with this exact `password` value
    /// within the last TTL.
    #[must_use]
    pub fn check(&self, name: &str, password: &str, now: u32) -> Option<u32> {
        let want = self.digest(name, password);
        let entries = self.entries.lock().ok()?;
        let e = entries.map.get(name)?;
        (e.expires > now && bool::from(e.digest.ct_eq(&want))).then_some(e.user_id)
    }

    /// Records a login Argon2 just verified.
    pub fn remember(&self, name: &str, password: &str, user_id: u32, now: u32) {
        let entry = Entry {
            digest: self.digest(name, password),
            user_id,
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

    #[test]
    fn remembers_only_the_same_value_within_the_ttl() {
        let c = CredentialCache::new(60, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(c.check("alice", "pw", 100), None);
        c.remember("alice", "pw", 7, 100);
        assert_eq!(c.check("alice", "pw", 159), Some(7));
        assert_eq!(c.check("alice", "other", 120), None);
        assert_eq!(c.check("bob", "pw", 120), None);
        assert_eq!(c.check("alice", "pw", 160), None, "expired");
        c.forget("alice");
        assert_eq!(c.check("alice", "pw", 120), None);
    }

    #[test]
    fn the_byte_budget_is_a_hard_bound() {
        let c = CredentialCache::new(60, 2 * (ENTRY_OVERHEAD + 1)).unwrap();
        c.remember("a", "x", 1, 0);
        c.remember("b", "x", 2, 0);
        c.remember("c", "x", 3, 0);
        assert_eq!(c.check("c", "x", 1), None, "full: not added");
        assert_eq!(c.bytes(), 2 * (ENTRY_OVERHEAD + 1));
        c.remember("a", "y", 1, 1);
        assert_eq!(
            c.check("a", "y", 2),
            Some(1),
            "replacing costs nothing more"
        );
        c.remember("d", "x", 4, 100);
        assert_eq!(c.check("d", "x", 101), Some(4), "expired entries make room");
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
        c.remember(&big, "x", 1, 0);
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
