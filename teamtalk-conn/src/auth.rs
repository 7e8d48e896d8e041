//! Link authentication: both ends of a server-to-server connection prove
//! that they hold the cluster secret before any other PDU is accepted.
//!
//! TeamTalk's servers trust whoever connects to them: anyone who reaches
//! db_proxy's, route_server's or login_server's server port can read and
//! forge messages, kick users or redirect clients. This module is the
//! handshake that closes those doors. It is pure: the nonces come in from
//! the caller (a [`NonceSource`]), nothing here reads a clock or the OS.
//!
//! # The handshake
//!
//! ```text
//! initiator (the side that connected)              responder (the listener)
//!   Hello { version 1, key_id, nonce_i }  ───────▶
//!                                         ◀───────  Challenge { nonce_r, proof_r }
//!   Proof { proof_i }                     ───────▶
//!   (its first ordinary PDUs, back to back)
//! ```
//!
//! ```text
//! proof_r = HMAC-SHA256(secret, transcript("responder"))
//! proof_i = HMAC-SHA256(secret, transcript("initiator"))
//! transcript(role) = "teamtalk-rs link auth" 0x00 role 0x00
//!                    version (u32 big-endian) key_id (8) nonce_i (32) nonce_r (32)
//! key_id = HMAC-SHA256(secret, "teamtalk-rs link auth key id")[..8]
//! ```
//!
//! - **Both directions.** The responder proves itself first, in the
//!   challenge, so a link never sends anything but its hello to an
//!   impostor; the initiator proves itself next, and the responder delivers
//!   nothing of it to the application before that proof checks out.
//! - **Replay-safe.** Each side picks a fresh 32-byte nonce per handshake,
//!   and each proof covers both. A recorded proof answers a nonce that will
//!   not come again.
//! - **No reflection.** The role is in the MAC input, so the responder's
//!   proof never passes as the initiator's, even over the same nonces.
//! - **Refusals are typed.** A side that refuses sends
//!   `IMLinkAuthResult` with the reason (bad proof, unknown key, version,
//!   malformed) and closes; the close carries an [`AuthFailure`].
//!
//! It authenticates, it does not encrypt: someone who can read the wire
//! reads the traffic, and someone who can rewrite it can take over the TCP
//! connection after the handshake. TLS is the answer to those, separately.
//!
//! [`Link`](crate::Link) runs the initiator and [`Session`](crate::Session)
//! the responder when their configs carry a [`ClusterAuth`]; the types
//! below are public so that other drivers (test clients, tools) can speak
//! the handshake too.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::ext::{
    ImLinkAuthChallenge, ImLinkAuthHello, ImLinkAuthProof, ImLinkAuthResult, LinkAuthResultCode,
};
use teamtalk_proto::{Command, CommandKey, Pdu};

use crate::error::{AuthFailure, CloseReason};

/// Bytes of a nonce (each side's fresh randomness per handshake).
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 output).
pub const PROOF_LEN: usize = 32;
/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 8;
/// Shortest cluster secret accepted: a shorter one could be guessed from a
/// single recorded handshake.
pub const MIN_SECRET_LEN: usize = 16;
/// The handshake version this crate speaks (`LINK_AUTH_VERSION_1`).
pub const LINK_AUTH_VERSION: u32 = 1;
/// How long a handshake may take, from the connect (links) or from the
/// accept (sessions), by default.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Prefix of every MAC input: domain separation from any other use of the
/// same secret.
const LABEL: &[u8] = b"teamtalk-rs link auth";
const KEY_ID_LABEL: &[u8] = b"teamtalk-rs link auth key id";
const INITIATOR: &[u8] = b"initiator";
const RESPONDER: &[u8] = b"responder";

/// A random nonce, from a [`NonceSource`].
pub type Nonce = [u8; NONCE_LEN];

/// Why a cluster secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Shorter than [`MIN_SECRET_LEN`].
    #[error("cluster secret is {0} bytes, shorter than the minimum of {MIN_SECRET_LEN}")]
    TooShort(usize),
}

/// The cluster secret every daemon of one deployment shares, ready to MAC.
///
/// The raw secret is not kept: only the HMAC state keyed with it, which is
/// wiped from memory when the key (or any clone) is dropped (`sha2`'s
/// `zeroize` feature, checked at compile time). The caller wipes its own
/// copy of the secret. `Debug` prints the key id only, never the secret.
#[derive(Clone)]
pub struct ClusterKey {
    mac: Hmac<Sha256>,
    id: [u8; KEY_ID_LEN],
}

/// Compile-time guard that the keyed HMAC state (all a [`ClusterKey`]
/// keeps of the secret: the two SHA-256 states absorbed from the key's
/// inner and outer pads) wipes itself on drop. `Hmac` has no `Drop` of its
/// own; its two hash cores do, with `sha2`'s `zeroize` feature. This fails
/// to build if the feature goes missing.
const _: fn() = || {
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wiped_on_drop::<<Sha256 as hmac::EagerHash>::Core>();
};

impl ClusterKey {
    /// A key from the secret's bytes (for example the `ClusterSecret=` conf
    /// value as written: 64 hex characters of `openssl rand -hex 32`).
    ///
    /// # Errors
    /// [`KeyError::TooShort`] below [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::TooShort(secret.len()));
        }
        // HMAC takes keys of any length: this cannot fail.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .map_err(|_| KeyError::TooShort(secret.len()))?;
        let mut derive = mac.clone();
        derive.update(KEY_ID_LABEL);
        let full = derive.finalize().into_bytes();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&full[..KEY_ID_LEN]);
        Ok(Self { mac, id })
    }

    /// The key's public name, sent in the hello so that a responder tells
    /// "another secret" from "a forged proof" (and, later, picks among
    /// several keys during a rotation). Derived from the secret; it reveals
    /// nothing a recorded proof does not.
    #[must_use]
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// The key id as 16 lowercase hex digits, for logs.
    #[must_use]
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The proof of `role` over both nonces.
    fn proof(&self, role: &[u8], nonce_i: &[u8], nonce_r: &[u8]) -> [u8; PROOF_LEN] {
        let mut mac = self.mac.clone();
        mac.update(LABEL);
        mac.update(&[0]);
        mac.update(role);
        mac.update(&[0]);
        mac.update(&LINK_AUTH_VERSION.to_be_bytes());
        mac.update(&self.id);
        mac.update(nonce_i);
        mac.update(nonce_r);
        let out = mac.finalize().into_bytes();
        let mut proof = [0; PROOF_LEN];
        proof.copy_from_slice(&out);
        proof
    }

    /// Whether `claimed` is the proof of `role`, compared in constant time.
    fn verify(&self, role: &[u8], nonce_i: &[u8], nonce_r: &[u8], claimed: &[u8]) -> bool {
        let expected = self.proof(role, nonce_i, nonce_r);
        bool::from(expected.ct_eq(claimed))
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("id", &self.id_hex())
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClusterKey {
    /// Keys are equal when their ids are: 64 bits of HMAC output tell
    /// secrets apart (this is for comparing configs, never for
    /// authenticating anyone).
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ClusterKey {}

/// Where a machine gets its handshake nonces: a function returning 32
/// fresh random bytes on every call.
///
/// Machines read no OS randomness, like they read no clock: the driver
/// supplies it. Daemons fill it from the OS generator:
///
/// ```
/// use teamtalk_conn::NonceSource;
///
/// // In a daemon (`getrandom` is a workspace dependency):
/// // NonceSource::new(|| {
/// //     let mut n = [0; 32];
/// //     getrandom::fill(&mut n).expect("the OS random generator works");
/// //     n
/// // })
/// # let counter = std::sync::atomic::AtomicU8::new(0);
/// let source = NonceSource::new(move || [counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed); 32]);
/// assert_ne!(source.next(), source.next());
/// ```
///
/// Tests use a seeded generator (`fuzzing::seeded_nonces`). A source that
/// repeats itself defeats the replay protection: only ever use a
/// cryptographic generator outside tests.
#[derive(Clone)]
pub struct NonceSource(Arc<dyn Fn() -> Nonce + Send + Sync>);

impl NonceSource {
    /// Wraps `f`, called once per handshake.
    pub fn new(f: impl Fn() -> Nonce + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A fresh nonce.
    #[must_use]
    pub fn next(&self) -> Nonce {
        (self.0)()
    }
}

impl fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceSource(..)")
    }
}

impl PartialEq for NonceSource {
    /// The same source (clones of one `NonceSource`).
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }
}

impl Eq for NonceSource {}

/// Link authentication settings of a [`LinkConfig`](crate::LinkConfig) or
/// [`SessionConfig`](crate::SessionConfig): the key, where nonces come
/// from, and how long the handshake may take.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterAuth {
    /// The cluster secret.
    pub key: ClusterKey,
    /// One nonce per handshake.
    pub nonces: NonceSource,
    /// The handshake must complete this long after the connect (links),
    /// the accept (sessions that require it) or the hello (sessions that
    /// also admit unauthenticated peers); else the connection closes with
    /// [`AuthFailure::TimedOut`]. [`DEFAULT_AUTH_TIMEOUT`] by default.
    pub timeout: Duration,
}

impl ClusterAuth {
    /// `key` and `nonces` with the [`DEFAULT_AUTH_TIMEOUT`].
    #[must_use]
    pub fn new(key: ClusterKey, nonces: NonceSource) -> Self {
        Self {
            key,
            nonces,
            timeout: DEFAULT_AUTH_TIMEOUT,
        }
    }

    /// Replaces the handshake deadline.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// How the peer of a connection stands with link authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAuth {
    /// No authentication configured: every peer is taken as it comes, as
    /// TeamTalk does.
    NotRequired,
    /// The handshake has not completed yet; nothing from the peer reaches
    /// the application and nothing but the handshake reaches the peer.
    Pending,
    /// The peer proved that it holds the cluster secret.
    Authenticated,
    /// The peer did not authenticate and was let in anyway, because its
    /// session allowed unauthenticated peers
    /// ([`SessionConfig::allow_unauthenticated`](crate::SessionConfig::allow_unauthenticated))
    /// and its first PDU was not a hello: a C++ TeamTalk daemon.
    Unauthenticated,
}

/// Whether `key` is one of the link-authentication commands
/// (`CID_OTHER_LINK_AUTH_*`).
#[must_use]
pub fn is_handshake(key: CommandKey) -> bool {
    [
        Command::OtherLinkAuthHello,
        Command::OtherLinkAuthChallenge,
        Command::OtherLinkAuthProof,
        Command::OtherLinkAuthResult,
    ]
    .iter()
    .any(|c| c.key() == key)
}

/// A handshake step refused: close with `reason`, after sending `notify`
/// (an `IMLinkAuthResult`) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// Why the connection closes.
    pub reason: CloseReason,
    /// The refusal to send the peer before closing; `None` when the peer
    /// does not speak the handshake (it sent something else) or refused
    /// first.
    pub notify: Option<Pdu>,
}

impl Rejection {
    /// A failure the peer is told about.
    fn told(failure: AuthFailure) -> Self {
        let notify = failure.result_code().map(|code| {
            ImLinkAuthResult {
                result_code: code as u32,
            }
            .to_pdu(0)
        });
        Self {
            reason: CloseReason::AuthFailed(failure),
            notify,
        }
    }

    /// The peer sent a command that is not the expected handshake step.
    fn unexpected(key: CommandKey) -> Self {
        Self {
            reason: CloseReason::Unauthenticated(key),
            notify: None,
        }
    }

    /// The peer refused us with this result code.
    fn refused(pdu: &Pdu) -> Self {
        let code = decode::<ImLinkAuthResult>(pdu).map_or(0, |r| r.result_code);
        Self {
            reason: CloseReason::AuthFailed(AuthFailure::Refused(code)),
            notify: None,
        }
    }
}

impl AuthFailure {
    /// The `IMLinkAuthResult` code telling the peer why we refuse it;
    /// `None` when the peer is not to be told (it refused us, or the
    /// deadline passed).
    fn result_code(self) -> Option<LinkAuthResultCode> {
        match self {
            Self::BadProof => Some(LinkAuthResultCode::LinkAuthBadProof),
            Self::UnknownKey => Some(LinkAuthResultCode::LinkAuthUnknownKey),
            Self::Version(_) => Some(LinkAuthResultCode::LinkAuthUnsupportedVersion),
            Self::Malformed => Some(LinkAuthResultCode::LinkAuthMalformed),
            Self::Refused(_) | Self::TimedOut => None,
        }
    }
}

fn decode<M: CommandMessage>(pdu: &Pdu) -> Option<M> {
    M::decode(pdu.body.clone()).ok()
}

/// What a handshake PDU that arrives after the handshake means: the peer
/// refusing us (`Result`), or a peer out of step (anything else).
pub(crate) fn after_handshake(pdu: &Pdu) -> CloseReason {
    if pdu.is(Command::OtherLinkAuthResult.key()) {
        Rejection::refused(pdu).reason
    } else {
        CloseReason::AuthFailed(AuthFailure::Malformed)
    }
}

/// The connecting side of a handshake: sends the hello, checks the
/// challenge, answers with its proof.
#[derive(Clone, PartialEq, Eq)]
pub struct Initiator {
    nonce: Nonce,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator").finish_non_exhaustive()
    }
}

impl Initiator {
    /// A handshake with this fresh nonce.
    #[must_use]
    pub fn new(nonce: Nonce) -> Self {
        Self { nonce }
    }

    /// The hello, the first PDU on the connection.
    #[must_use]
    pub fn hello(&self, key: &ClusterKey) -> Pdu {
        ImLinkAuthHello {
            version: LINK_AUTH_VERSION,
            key_id: Bytes::copy_from_slice(&key.id),
            nonce: Bytes::copy_from_slice(&self.nonce),
        }
        .to_pdu(0)
    }

    /// The responder's answer to the hello. On success, the proof to send
    /// (the responder is authentic from here on).
    ///
    /// # Errors
    /// A [`Rejection`]: the challenge's proof is wrong
    /// ([`AuthFailure::BadProof`]: the peer does not hold our secret, or
    /// replayed an old challenge), the challenge is malformed, the peer
    /// refused our hello (`IMLinkAuthResult`), or it sent anything else
    /// ([`CloseReason::Unauthenticated`]: it does not speak the handshake).
    pub fn on_challenge(&self, key: &ClusterKey, pdu: &Pdu) -> Result<Pdu, Rejection> {
        let pdu_key = pdu.key();
        if pdu_key == Command::OtherLinkAuthResult.key() {
            return Err(Rejection::refused(pdu));
        }
        if pdu_key != Command::OtherLinkAuthChallenge.key() {
            return Err(Rejection::unexpected(pdu_key));
        }
        let challenge = decode::<ImLinkAuthChallenge>(pdu)
            .filter(|c| c.nonce.len() == NONCE_LEN && c.proof.len() == PROOF_LEN)
            .ok_or_else(|| Rejection::told(AuthFailure::Malformed))?;
        if !key.verify(RESPONDER, &self.nonce, &challenge.nonce, &challenge.proof) {
            return Err(Rejection::told(AuthFailure::BadProof));
        }
        let proof = key.proof(INITIATOR, &self.nonce, &challenge.nonce);
        Ok(ImLinkAuthProof {
            proof: Bytes::copy_from_slice(&proof),
        }
        .to_pdu(0))
    }
}

/// The listening side of a handshake, after it answered a hello: holds
/// both nonces until the initiator's proof arrives.
#[derive(Clone, PartialEq, Eq)]
pub struct Responder {
    nonce_i: Nonce,
    nonce_r: Nonce,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

impl Responder {
    /// Answers the first PDU of a connection, which must be a hello, with
    /// the challenge carrying `nonce_r` (fresh) and our proof.
    ///
    /// # Errors
    /// A [`Rejection`]: the PDU is not a hello
    /// ([`CloseReason::Unauthenticated`]), asks for another version, names
    /// another key, or is malformed.
    pub fn on_hello(key: &ClusterKey, pdu: &Pdu, nonce_r: Nonce) -> Result<(Self, Pdu), Rejection> {
        let pdu_key = pdu.key();
        if pdu_key != Command::OtherLinkAuthHello.key() {
            return Err(Rejection::unexpected(pdu_key));
        }
        let hello = decode::<ImLinkAuthHello>(pdu)
            .ok_or_else(|| Rejection::told(AuthFailure::Malformed))?;
        if hello.version != LINK_AUTH_VERSION {
            return Err(Rejection::told(AuthFailure::Version(hello.version)));
        }
        let nonce_i: Nonce = hello
            .nonce
            .as_ref()
            .try_into()
            .ok()
            .filter(|_| hello.key_id.len() == KEY_ID_LEN)
            .ok_or_else(|| Rejection::told(AuthFailure::Malformed))?;
        if hello.key_id[..] != key.id {
            return Err(Rejection::told(AuthFailure::UnknownKey));
        }
        let proof = key.proof(RESPONDER, &nonce_i, &nonce_r);
        let challenge = ImLinkAuthChallenge {
            nonce: Bytes::copy_from_slice(&nonce_r),
            proof: Bytes::copy_from_slice(&proof),
        }
        .to_pdu(0);
        Ok((Self { nonce_i, nonce_r }, challenge))
    }

    /// Checks the initiator's proof: `Ok` means authenticated.
    ///
    /// # Errors
    /// A [`Rejection`]: the proof is wrong ([`AuthFailure::BadProof`]:
    /// no secret, a replay from an earlier connection, or our own proof
    /// reflected), malformed, the initiator refused our challenge, or it
    /// sent anything else.
    pub fn on_proof(&self, key: &ClusterKey, pdu: &Pdu) -> Result<(), Rejection> {
        let pdu_key = pdu.key();
        if pdu_key == Command::OtherLinkAuthResult.key() {
            return Err(Rejection::refused(pdu));
        }
        if pdu_key != Command::OtherLinkAuthProof.key() {
            return Err(Rejection::unexpected(pdu_key));
        }
        let proof = decode::<ImLinkAuthProof>(pdu)
            .filter(|p| p.proof.len() == PROOF_LEN)
            .ok_or_else(|| Rejection::told(AuthFailure::Malformed))?;
        if key.verify(INITIATOR, &self.nonce_i, &self.nonce_r, &proof.proof) {
            Ok(())
        } else {
            Err(Rejection::told(AuthFailure::BadProof))
        }
    }
}

#[cfg(test)]
mod tests;
