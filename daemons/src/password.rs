//! Password checks for TeamTalk logins.
//!
//! TeamTalk clients never send the password itself: they send
//! `md5hex(password)` (32 lowercase hex digits), and that string is what the
//! server must check. The C++ server stored `md5hex(md5hex(password) + salt)`
//! with a 4-digit salt, which a leaked table gives away in seconds. We store an
//! Argon2id hash of the client's md5hex string instead, and keep verifying the
//! TeamTalk form for accounts imported from an existing MySQL database.
//!
//! The client value stays a password equivalent on the wire (the protocol has no
//! TLS); fixing that needs client changes and is out of scope here.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Why a password could not be hashed or a stored hash could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The Argon2 cost parameters are out of range.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed (for example the system random source is unavailable).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A stored hash is not a PHC string we can verify against.
    #[error("stored password hash is malformed: {0}")]
    Malformed(String),
}

/// `md5(data)` as 32 lowercase hex digits, the form TeamTalk clients send.
pub fn md5_hex(data: &[u8]) -> String {
    let digest = Md5::digest(data);
    let mut out = String::with_capacity(32);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// TeamTalk's stored form: `md5hex(client_value + salt)`.
///
/// Needed to import users from an existing TeamTalk database and to check them.
pub fn teamtalk_salted(client_md5hex: &str, salt: &str) -> String {
    let mut input = String::with_capacity(client_md5hex.len() + salt.len());
    input.push_str(client_md5hex);
    input.push_str(salt);
    md5_hex(input.as_bytes())
}

/// Checks a client value against a TeamTalk `(password, salt)` pair in constant
/// time, so response timing does not reveal how much of the hash matched.
///
/// The stored hex is compared case-insensitively (MySQL admins may have written
/// it in upper case).
pub fn verify_teamtalk(client_md5hex: &str, salt: &str, stored_md5hex: &str) -> bool {
    let computed = teamtalk_salted(client_md5hex, salt);
    let stored = stored_md5hex.to_ascii_lowercase();
    computed.as_bytes().ct_eq(stored.as_bytes()).into()
}

/// Argon2id cost settings for new password hashes.
///
/// Verification always uses the parameters recorded in the stored hash, so
/// changing these only affects hashes made afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl HashParams {
    /// OWASP's Argon2id baseline (19 MiB, 2 passes, 1 lane): about 18 ms per
    /// verification on one x86-64 core in a release build (measured for this
    /// crate), cheap enough for login bursts while making brute force of a
    /// leaked table expensive. Debug builds are many times slower; tests use
    /// [`HashParams::INSECURE_FAST`].
    pub const RECOMMENDED: Self = Self {
        m_cost_kib: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    /// The cheapest valid settings. For tests and load-test seeding only: a hash
    /// made with these protects nothing.
    pub const INSECURE_FAST: Self = Self {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    /// The least memory an operator may choose: Argon2's own minimum for
    /// one lane.
    pub const MIN_MEMORY_KIB: u32 = 8;
    /// The most memory an operator may choose (1 GiB): every login of a
    /// user hashed so allocates this much while it is checked, once per
    /// login lane at a time.
    pub const MAX_MEMORY_KIB: u32 = 1 << 20;
    /// The most passes an operator may choose.
    pub const MAX_PASSES: u32 = 64;
    /// OWASP's cheapest Argon2id settings (7 MiB with 5 passes, 19 MiB with
    /// 2, 46 MiB with 1) all cost about this many KiB·passes; less is
    /// weaker than its recommendation.
    pub const OWASP_MIN_KIB_PASSES: u64 = 7 * 1024 * 5;

    /// Settings an operator chose (`Argon2MemoryKiB`/`Argon2Passes` in
    /// `dbproxyserver.conf`, `--argon2-memory-kib`/`--argon2-passes` on
    /// the command line), one lane. They apply to passwords hashed from
    /// then on; each stored hash keeps its own, so a login costs what its
    /// hash was made with.
    ///
    /// # Errors
    /// [`PasswordError::Params`] when memory is outside
    /// [`MIN_MEMORY_KIB`](Self::MIN_MEMORY_KIB)..=[`MAX_MEMORY_KIB`](Self::MAX_MEMORY_KIB)
    /// or passes outside 1..=[`MAX_PASSES`](Self::MAX_PASSES).
    pub fn new(m_cost_kib: u32, t_cost: u32) -> Result<Self, PasswordError> {
        if !(Self::MIN_MEMORY_KIB..=Self::MAX_MEMORY_KIB).contains(&m_cost_kib) {
            return Err(PasswordError::Params(format!(
                "memory {m_cost_kib} KiB is outside {}..={} KiB",
                Self::MIN_MEMORY_KIB,
                Self::MAX_MEMORY_KIB
            )));
        }
        if !(1..=Self::MAX_PASSES).contains(&t_cost) {
            return Err(PasswordError::Params(format!(
                "{t_cost} passes is outside 1..={}",
                Self::MAX_PASSES
            )));
        }
        let params = Self {
            m_cost_kib,
            t_cost,
            p_cost: 1,
        };
        params.hasher()?;
        Ok(params)
    }

    /// Settings from optional memory and passes, each defaulting to
    /// [`RECOMMENDED`](Self::RECOMMENDED)'s.
    ///
    /// # Errors
    /// As [`HashParams::new`].
    pub fn with_overrides(
        m_cost_kib: Option<u32>,
        t_cost: Option<u32>,
    ) -> Result<Self, PasswordError> {
        Self::new(
            m_cost_kib.unwrap_or(Self::RECOMMENDED.m_cost_kib),
            t_cost.unwrap_or(Self::RECOMMENDED.t_cost),
        )
    }

    /// Whether these settings cost less than OWASP's cheapest
    /// recommendation ([`OWASP_MIN_KIB_PASSES`](Self::OWASP_MIN_KIB_PASSES)):
    /// worth a warning, since a leaked table is then cheaper to attack.
    #[must_use]
    pub fn weaker_than_owasp(&self) -> bool {
        u64::from(self.m_cost_kib) * u64::from(self.t_cost) < Self::OWASP_MIN_KIB_PASSES
    }

    fn hasher(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl std::fmt::Display for HashParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Argon2id m={} KiB, t={}, p={}",
            self.m_cost_kib, self.t_cost, self.p_cost
        )
    }
}

impl Default for HashParams {
    fn default() -> Self {
        Self::RECOMMENDED
    }
}

/// Hashes a client's md5hex value with Argon2id and a fresh random salt,
/// returning the PHC string (`$argon2id$v=19$m=...`) to store.
pub fn hash_password(params: &HashParams, client_md5hex: &str) -> Result<String, PasswordError> {
    let hash = params
        .hasher()?
        .hash_password(client_md5hex.as_bytes())
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Checks a client's md5hex value against a stored Argon2 PHC string.
///
/// `Ok(false)` means the password is wrong; `Err` means the stored string is
/// unusable, which deserves a log line rather than a silent login failure.
/// The comparison inside `argon2` is constant time.
pub fn verify_argon2(client_md5hex: &str, phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::Malformed(e.to_string()))?;
    match Argon2::default().verify_password(client_md5hex.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(PasswordError::Malformed(e.to_string())),
    }
}

/// A stored credential in either supported form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// Our own form: an Argon2 PHC string over the client's md5hex value.
    Argon2(String),
    /// Imported TeamTalk form: `md5hex(client_value + salt)` and the salt.
    TeamTalk {
        /// 32 hex digits.
        hash: String,
        /// TeamTalk's salt (a short decimal string in stock databases).
        salt: String,
    },
}

impl StoredPassword {
    /// Checks the value a client sent against this credential.
    pub fn verify(&self, client_md5hex: &str) -> Result<bool, PasswordError> {
        match self {
            Self::Argon2(phc) => verify_argon2(client_md5hex, phc),
            Self::TeamTalk { hash, salt } => Ok(verify_teamtalk(client_md5hex, salt, hash)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_hex_matches_rfc1321_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_hex(b"message digest"),
            "f96b697d7cb7938d525a2f31aaf161d0"
        );
    }

    #[test]
    fn teamtalk_form_is_md5_of_concatenation() {
        let client = md5_hex(b"secret");
        let stored = teamtalk_salted(&client, "4821");
        assert_eq!(stored, md5_hex(format!("{client}4821").as_bytes()));
        assert!(verify_teamtalk(&client, "4821", &stored));
        assert!(verify_teamtalk(
            &client,
            "4821",
            &stored.to_ascii_uppercase()
        ));
        assert!(!verify_teamtalk(&client, "4822", &stored));
        assert!(!verify_teamtalk(&md5_hex(b"Secret"), "4821", &stored));
        assert!(!verify_teamtalk(&client, "4821", ""));
    }

    #[test]
    fn argon2_round_trip_and_rejects() {
        let client = md5_hex(b"hunter2");
        let phc = hash_password(&HashParams::INSECURE_FAST, &client).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert!(verify_argon2(&client, &phc).unwrap());
        assert!(!verify_argon2(&md5_hex(b"hunter3"), &phc).unwrap());
        // Fresh salt each time.
        let again = hash_password(&HashParams::INSECURE_FAST, &client).unwrap();
        assert_ne!(phc, again);
        assert!(verify_argon2(&client, &again).unwrap());
        assert!(matches!(
            verify_argon2(&client, "not a hash"),
            Err(PasswordError::Malformed(_))
        ));
    }

    #[test]
    fn bad_params_are_an_error() {
        let bad = HashParams {
            m_cost_kib: 1,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(matches!(
            hash_password(&bad, "x"),
            Err(PasswordError::Params(_))
        ));
        assert_eq!(HashParams::default(), HashParams::RECOMMENDED);
    }

    #[test]
    fn operator_settings_are_validated() {
        assert_eq!(
            HashParams::with_overrides(None, None).unwrap(),
            HashParams::RECOMMENDED
        );
        let p = HashParams::new(4096, 3).unwrap();
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (4096, 3, 1));
        assert_eq!(
            HashParams::with_overrides(Some(4096), None).unwrap().t_cost,
            HashParams::RECOMMENDED.t_cost
        );
        for (m, t) in [
            (0, 1),
            (7, 1),
            (HashParams::MAX_MEMORY_KIB + 1, 1),
            (4096, 0),
            (4096, HashParams::MAX_PASSES + 1),
        ] {
            assert!(
                matches!(HashParams::new(m, t), Err(PasswordError::Params(_))),
                "m={m} t={t}"
            );
        }
        assert!(HashParams::new(HashParams::MIN_MEMORY_KIB, 1).is_ok());
        assert!(HashParams::new(HashParams::MAX_MEMORY_KIB, HashParams::MAX_PASSES).is_ok());
        // The stored hash carries what it was made with.
        let p = HashParams::new(64, 2).unwrap();
        let phc = hash_password(&p, &md5_hex(b"pw")).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=2,p=1$"), "{phc}");
        assert!(verify_argon2(&md5_hex(b"pw"), &phc).unwrap());
        assert_eq!(p.to_string(), "Argon2id m=64 KiB, t=2, p=1");
    }

    #[test]
    fn owasp_floor() {
        assert!(!HashParams::RECOMMENDED.weaker_than_owasp());
        assert!(!HashParams::new(7 * 1024, 5).unwrap().weaker_than_owasp());
        assert!(!HashParams::new(46 * 1024, 1).unwrap().weaker_than_owasp());
        assert!(HashParams::new(19 * 1024, 1).unwrap().weaker_than_owasp());
        assert!(HashParams::INSECURE_FAST.weaker_than_owasp());
    }

    #[test]
    fn stored_password_dispatches() {
        let client = md5_hex(b"pw");
        let a = StoredPassword::Argon2(hash_password(&HashParams::INSECURE_FAST, &client).unwrap());
        let t = StoredPassword::TeamTalk {
            hash: teamtalk_salted(&client, "17"),
            salt: "17".into(),
        };
        assert!(a.verify(&client).unwrap());
        assert!(t.verify(&client).unwrap());
        assert!(!a.verify("wrong").unwrap());
        assert!(!t.verify("wrong").unwrap());
    }
}
