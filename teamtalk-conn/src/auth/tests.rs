//! The handshake on its own: both state machines, every refusal, and a
//! known-answer vector so the MAC input cannot drift.

use bytes::Bytes;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::ext::{
    ImLinkAuthChallenge, ImLinkAuthHello, ImLinkAuthProof, ImLinkAuthResult,
};
use teamtalk_proto::{Command, CommandKey, Message, Pdu};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key() -> ClusterKey {
    ClusterKey::new(SECRET).unwrap()
}

fn other_key() -> ClusterKey {
    ClusterKey::new(b"another secret of the same size!").unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn nonce(first: u8) -> Nonce {
    std::array::from_fn(|i| first.wrapping_add(i as u8))
}

fn decoded(pdu: &Pdu) -> Message {
    Message::decode(pdu).expect("a handshake PDU decodes")
}

fn result_code(rejection: &Rejection) -> Option<u32> {
    rejection.notify.as_ref().map(|pdu| match decoded(pdu) {
        Message::OtherLinkAuthResult(r) => r.result_code,
        other => panic!("notify is not a result: {other:?}"),
    })
}

/// A full handshake between `ik` (initiator) and `rk` (responder) with
/// the given nonces: the hello, the challenge, the proof.
fn handshake(
    ik: &ClusterKey,
    rk: &ClusterKey,
    ni: Nonce,
    nr: Nonce,
) -> Result<(Pdu, Pdu, Pdu), Rejection> {
    let initiator = Initiator::new(ni);
    let hello = initiator.hello(ik);
    let (responder, challenge) = Responder::on_hello(rk, &hello, nr)?;
    let proof = initiator.on_challenge(ik, &challenge)?;
    responder.on_proof(rk, &proof)?;
    Ok((hello, challenge, proof))
}

/// The MAC input as docs/protocol.md writes it, checked against values
/// computed independently (Python's `hmac` module).
#[test]
fn known_answer_vector() {
    let k = key();
    assert_eq!(k.id_hex(), "db7fdf23efba1a7c");
    let (hello, challenge, proof) = handshake(&k, &k, nonce(0), nonce(32)).unwrap();
    let Message::OtherLinkAuthHello(h) = decoded(&hello) else {
        panic!("not a hello");
    };
    assert_eq!((h.version, hex(&h.key_id)), (1, k.id_hex()));
    assert_eq!(&h.nonce[..], &nonce(0));
    let Message::OtherLinkAuthChallenge(c) = decoded(&challenge) else {
        panic!("not a challenge");
    };
    assert_eq!(&c.nonce[..], &nonce(32));
    assert_eq!(
        hex(&c.proof),
        "5684dd81fcf8d24d7a90741f43a11968e39afec6337795ba60cbf0a4cb7faf0e"
    );
    let Message::OtherLinkAuthProof(p) = decoded(&proof) else {
        panic!("not a proof");
    };
    assert_eq!(
        hex(&p.proof),
        "d5de94a5938b10284773ad8deb934e780bd93a084fe7329213c7c9be5216fed5"
    );
    for pdu in [&hello, &challenge, &proof] {
        assert!(is_handshake(pdu.key()));
        assert_eq!(pdu.seq(), 0);
    }
}

#[test]
fn same_secret_authenticates_both_ways() {
    let (a, b) = (key(), key());
    assert_eq!(a, b);
    assert!(handshake(&a, &b, nonce(1), nonce(2)).is_ok());
    assert!(handshake(&b, &a, nonce(3), nonce(4)).is_ok());
}

#[test]
fn short_secret_is_refused() {
    assert_eq!(
        ClusterKey::new(b"fifteen bytes!!").unwrap_err(),
        KeyError::TooShort(15)
    );
    assert!(ClusterKey::new(&[7; MIN_SECRET_LEN]).is_ok());
}

#[test]
fn debug_never_shows_the_secret() {
    let text = format!(
        "{:?}",
        ClusterAuth::new(key(), NonceSource::new(|| [0; 32]))
    );
    assert!(text.contains("db7fdf23efba1a7c"), "{text}");
    assert!(!text.contains("0123456789abcdef"), "{text}");
    assert!(!text.contains(&hex(SECRET)), "{text}");
}

/// A responder with another secret is told apart by its key id before it
/// proves anything; the initiator is told why.
#[test]
fn responder_with_another_secret_refuses_the_key_id() {
    let initiator = Initiator::new(nonce(1));
    let hello = initiator.hello(&key());
    let err = Responder::on_hello(&other_key(), &hello, nonce(2)).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::UnknownKey));
    assert_eq!(result_code(&err), Some(2));
    // The initiator reads the refusal as such.
    let refusal = err.notify.unwrap();
    let seen = initiator.on_challenge(&key(), &refusal).unwrap_err();
    assert_eq!(
        seen.reason,
        CloseReason::AuthFailed(AuthFailure::Refused(2))
    );
    assert_eq!(seen.notify, None);
}

/// An impostor that copies our key id but not the secret: the initiator
/// detects the forged challenge, the responder a forged proof.
#[test]
fn forged_proofs_are_detected_on_each_side() {
    let (good, bad) = (key(), other_key());
    // Initiator side: the challenge was made with another secret.
    let initiator = Initiator::new(nonce(1));
    let challenge = ImLinkAuthChallenge {
        nonce: Bytes::copy_from_slice(&nonce(2)),
        proof: Bytes::copy_from_slice(&bad.proof(RESPONDER, &nonce(1), &nonce(2))),
    }
    .to_pdu(0);
    let err = initiator.on_challenge(&good, &challenge).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::BadProof));
    assert_eq!(result_code(&err), Some(1));
    // Responder side: the proof was made with another secret.
    let hello = initiator.hello(&good);
    let (responder, _) = Responder::on_hello(&good, &hello, nonce(2)).unwrap();
    let proof = ImLinkAuthProof {
        proof: Bytes::copy_from_slice(&bad.proof(INITIATOR, &nonce(1), &nonce(2))),
    }
    .to_pdu(0);
    let err = responder.on_proof(&good, &proof).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::BadProof));
    assert_eq!(result_code(&err), Some(1));
}

/// A handshake recorded on one connection does not pass on the next: the
/// other side's fresh nonce changes what the proof must be.
#[test]
fn replayed_handshake_is_refused() {
    let k = key();
    let (old_hello, old_challenge, old_proof) = handshake(&k, &k, nonce(1), nonce(2)).unwrap();
    // An attacker replays the initiator's messages to the responder, which
    // picks a fresh nonce.
    let (responder, _) = Responder::on_hello(&k, &old_hello, nonce(3)).unwrap();
    let err = responder.on_proof(&k, &old_proof).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::BadProof));
    // An attacker replays the responder's challenge to an initiator, which
    // picked a fresh nonce.
    let err = Initiator::new(nonce(4))
        .on_challenge(&k, &old_challenge)
        .unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::BadProof));
}

/// The responder's own proof sent back as the initiator's, over the very
/// same nonces, does not pass: the role is in the MAC input.
#[test]
fn reflected_proof_is_refused() {
    let k = key();
    let initiator = Initiator::new(nonce(9));
    let (responder, challenge) = Responder::on_hello(&k, &initiator.hello(&k), nonce(10)).unwrap();
    let Message::OtherLinkAuthChallenge(c) = decoded(&challenge) else {
        panic!("not a challenge");
    };
    let reflected = ImLinkAuthProof { proof: c.proof }.to_pdu(0);
    let err = responder.on_proof(&k, &reflected).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::BadProof));
}

/// A peer that does not speak the handshake is closed as unauthenticated,
/// and not told anything.
#[test]
fn anything_else_first_is_unexpected() {
    let k = key();
    let heartbeat = Pdu::new(Command::OtherHeartbeat.key(), 1, Bytes::new());
    let msg = Pdu::new(CommandKey::new(3, 0x0301), 1, Bytes::from_static(b"x"));
    for pdu in [&heartbeat, &msg] {
        let err = Responder::on_hello(&k, pdu, nonce(1)).unwrap_err();
        assert_eq!(err.reason, CloseReason::Unauthenticated(pdu.key()));
        assert_eq!(err.notify, None);
        let err = Initiator::new(nonce(1)).on_challenge(&k, pdu).unwrap_err();
        assert_eq!(err.reason, CloseReason::Unauthenticated(pdu.key()));
    }
    // Steps out of order are unexpected too: a proof instead of a hello, a
    // hello instead of a proof.
    let initiator = Initiator::new(nonce(1));
    let hello = initiator.hello(&k);
    let proof = ImLinkAuthProof {
        proof: Bytes::from_static(&[0; 32]),
    }
    .to_pdu(0);
    let err = Responder::on_hello(&k, &proof, nonce(2)).unwrap_err();
    assert_eq!(
        err.reason,
        CloseReason::Unauthenticated(Command::OtherLinkAuthProof.key())
    );
    let (responder, _) = Responder::on_hello(&k, &hello, nonce(2)).unwrap();
    let err = responder.on_proof(&k, &hello).unwrap_err();
    assert_eq!(
        err.reason,
        CloseReason::Unauthenticated(Command::OtherLinkAuthHello.key())
    );
}

#[test]
fn malformed_and_foreign_versions_are_refused_with_their_code() {
    let k = key();
    let hello = |version: u32, key_id: &[u8], nonce: &[u8]| {
        ImLinkAuthHello {
            version,
            key_id: Bytes::copy_from_slice(key_id),
            nonce: Bytes::copy_from_slice(nonce),
        }
        .to_pdu(0)
    };
    let id = k.id();
    let cases = [
        (hello(2, &id, &[1; 32]), AuthFailure::Version(2), 3),
        (hello(0, &id, &[1; 32]), AuthFailure::Version(0), 3),
        (hello(1, &id, &[1; 31]), AuthFailure::Malformed, 4),
        (hello(1, &id[..7], &[1; 32]), AuthFailure::Malformed, 4),
        (hello(1, &[0; 8], &[1; 32]), AuthFailure::UnknownKey, 2),
        (
            Pdu::new(
                Command::OtherLinkAuthHello.key(),
                0,
                Bytes::from_static(b"\x0a\x05ab"),
            ),
            AuthFailure::Malformed,
            4,
        ),
    ];
    for (pdu, failure, code) in cases {
        let err = Responder::on_hello(&k, &pdu, nonce(1)).unwrap_err();
        assert_eq!(err.reason, CloseReason::AuthFailed(failure));
        assert_eq!(result_code(&err), Some(code), "{failure:?}");
    }
    // A challenge or proof of the wrong length.
    let initiator = Initiator::new(nonce(1));
    let short = ImLinkAuthChallenge {
        nonce: Bytes::from_static(&[0; 32]),
        proof: Bytes::from_static(&[0; 16]),
    }
    .to_pdu(0);
    let err = initiator.on_challenge(&k, &short).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::Malformed));
    let (responder, _) = Responder::on_hello(&k, &initiator.hello(&k), nonce(2)).unwrap();
    let long = ImLinkAuthProof {
        proof: Bytes::from_static(&[0; 33]),
    }
    .to_pdu(0);
    let err = responder.on_proof(&k, &long).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::Malformed));
}

/// A refusal from the peer is read as such on either side, and we never
/// answer a refusal with one.
#[test]
fn refusals_from_the_peer() {
    let k = key();
    let refusal = ImLinkAuthResult { result_code: 1 }.to_pdu(0);
    let initiator = Initiator::new(nonce(1));
    let err = initiator.on_challenge(&k, &refusal).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::Refused(1)));
    assert_eq!(err.notify, None);
    let (responder, _) = Responder::on_hello(&k, &initiator.hello(&k), nonce(2)).unwrap();
    let err = responder.on_proof(&k, &refusal).unwrap_err();
    assert_eq!(err.reason, CloseReason::AuthFailed(AuthFailure::Refused(1)));
    assert_eq!(err.notify, None);
    assert_eq!(
        after_handshake(&refusal),
        CloseReason::AuthFailed(AuthFailure::Refused(1))
    );
    assert_eq!(
        after_handshake(&initiator.hello(&k)),
        CloseReason::AuthFailed(AuthFailure::Malformed)
    );
}

#[test]
fn only_the_four_auth_commands_are_handshake() {
    let auth: Vec<Command> = Command::ALL
        .iter()
        .copied()
        .filter(|c| is_handshake(c.key()))
        .collect();
    assert_eq!(
        auth,
        [
            Command::OtherLinkAuthHello,
            Command::OtherLinkAuthChallenge,
            Command::OtherLinkAuthProof,
            Command::OtherLinkAuthResult,
        ]
    );
    assert_eq!(
        <ImLinkAuthHello as CommandMessage>::COMMAND,
        Command::OtherLinkAuthHello
    );
}

#[test]
fn nonce_sources_compare_by_identity() {
    let a = NonceSource::new(|| [1; 32]);
    let b = NonceSource::new(|| [1; 32]);
    assert_eq!(a, a.clone());
    assert_ne!(a, b);
    assert_eq!(a.next(), [1; 32]);
    let auth = ClusterAuth::new(key(), a.clone()).with_timeout(std::time::Duration::from_secs(2));
    assert_eq!(auth.timeout, std::time::Duration::from_secs(2));
    assert_eq!(auth, auth.clone());
    assert_ne!(auth, ClusterAuth::new(other_key(), a));
}
