//! Property tests: random step sequences against every machine, with the
//! contract's invariants checked after each step (see `crate::fuzzing`).

use proptest::prelude::*;

use bytes::Bytes;
use teamtalk_proto::{CommandKey, Pdu};

use crate::fuzzing::{
    HONEST_LINK_OPENING, HONEST_PEER_OPENING, Step, after, run_auth_link, run_auth_peer_session,
    run_link, run_peer_session, run_session, test_auth,
};
use crate::machine::{Input, Machine, Output};
use crate::{PeerAuth, Session, SessionConfig, SessionEvent};

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<u16>().prop_map(Step::Advance),
        // Long silences too: up to ~18 minutes in one step.
        2 => (0u16..=u16::MAX).prop_map(|ms| Step::Advance(ms.saturating_mul(16))),
        3 => proptest::collection::vec(any::<u8>(), 0..48).prop_map(Step::Recv),
        // Valid-looking partial headers with lengths near the frame limit.
        1 => (0u32..2048, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(len, rest)| {
            let mut v = len.to_be_bytes().to_vec();
            v.extend(rest);
            Step::Recv(v)
        }),
        6 => (prop_oneof![0u8..4, 0x80u8..0x84], any::<u16>(), any::<u8>())
            .prop_map(|(kind, seq, body_len)| Step::RecvPdu { kind, seq, body_len }),
        1 => Just(Step::Connected),
        1 => Just(Step::ConnectFailed),
        1 => Just(Step::Closed),
        4 => (0u16..1200).prop_map(Step::Send),
        2 => (any::<u32>(), prop_oneof![Just(0x01u8), Just(0x02), Just(0x11), Just(0x12), any::<u8>()])
            .prop_map(|(user_id, client_type)| Step::AcceptLogin { user_id, client_type }),
        1 => Just(Step::RejectLogin),
        1 => Just(Step::Close),
        2 => (0u16..6000).prop_map(Step::Backlog),
        1 => any::<u8>().prop_map(Step::SetGreeting),
        3 => any::<u8>().prop_map(Step::AuthHello),
        3 => any::<u8>().prop_map(Step::AuthProof),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 0..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn client_session_keeps_the_contract(steps in steps()) {
        run_session(&steps);
    }

    #[test]
    fn server_peer_session_keeps_the_contract(steps in steps()) {
        run_peer_session(&steps);
    }

    #[test]
    fn link_keeps_the_contract(steps in steps()) {
        run_link(&steps);
    }

    /// Half the runs start with an honest handshake, so that the steps
    /// also hit an authenticated connection.
    #[test]
    fn authenticating_link_keeps_the_contract(steps in steps(), honest in any::<bool>()) {
        if honest {
            let run = run_auth_link(&after(&HONEST_LINK_OPENING, &steps));
            prop_assert!(run.authenticated >= 1);
        } else {
            let _ = run_auth_link(&steps);
        }
    }

    #[test]
    fn authenticating_session_keeps_the_contract(
        steps in steps(),
        allow in any::<bool>(),
        honest in any::<bool>(),
    ) {
        if honest {
            let run = run_auth_peer_session(&after(&HONEST_PEER_OPENING, &steps), allow);
            prop_assert_eq!(run.authenticated, 1);
        } else {
            let _ = run_auth_peer_session(&steps, allow);
        }
    }

    /// Whatever bytes a peer without the secret sends (raw, or PDUs under
    /// any command, the handshake's included, with arbitrary bodies, cut
    /// anywhere), a session that requires authentication raises no PDU
    /// event, admits nobody and sends nothing but handshake PDUs.
    #[test]
    fn arbitrary_bytes_never_get_through_an_authenticating_session(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (0x0780u16..0x0784, proptest::collection::vec(any::<u8>(), 0..80))
                    .prop_map(|(cid, body)| Pdu::new(CommandKey::new(7, cid), 0, Bytes::from(body))
                        .to_bytes().to_vec()),
                (any::<u16>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40))
                    .prop_map(|(sid, cid, body)| Pdu::new(CommandKey::new(sid, cid), 0, Bytes::from(body))
                        .to_bytes().to_vec()),
            ],
            1..12,
        ),
        seed in any::<u64>(),
    ) {
        let t = crate::fuzzing::t0();
        let cfg = SessionConfig::server_peer().with_auth(test_auth(seed));
        let mut s = Session::new(cfg, "127.0.0.1:1".parse().unwrap(), t);
        let mut sent = Vec::new();
        for chunk in &chunks {
            s.handle_input(Input::Received(t, chunk));
            loop {
                match s.poll_output() {
                    Output::Event(SessionEvent::Pdu(p) | SessionEvent::LoginRequest(p)) => {
                        prop_assert!(false, "{} delivered", p.key());
                    }
                    Output::Event(SessionEvent::Admitted(how)) => {
                        prop_assert!(false, "admitted as {how:?}");
                    }
                    Output::Transmit(b) => sent.extend_from_slice(&b),
                    Output::Timeout(_) | Output::Finished => break,
                    _ => {}
                }
            }
            prop_assert_eq!(s.peer_auth() == PeerAuth::Authenticated, false);
        }
        for p in super::pdus(&sent) {
            prop_assert!(crate::auth::is_handshake(p.key()), "{} sent", p.key());
        }
    }
}

/// The runners reach the success paths, not only the refusals: scripted
/// honest peers get through, and a replay after them does not.
#[test]
fn auth_runners_reach_success_and_refusal() {
    use Step::{Advance, AuthHello, AuthProof, Connected, RecvPdu, Send};
    let link = run_auth_link(&[
        Connected,
        AuthHello(0),
        Send(10),
        Advance(9000),
        AuthProof(1),
    ]);
    assert_eq!((link.authenticated, link.refused), (1, 1), "{link:?}");
    let session = run_auth_peer_session(&[AuthHello(0), AuthProof(0), Send(10)], false);
    assert_eq!(
        (session.authenticated, session.refused),
        (1, 0),
        "{session:?}"
    );
    for bad in [AuthProof(1), AuthProof(2), AuthProof(3)] {
        let session = run_auth_peer_session(&[AuthHello(0), bad.clone()], false);
        assert_eq!((session.authenticated, session.refused), (0, 1), "{bad:?}");
    }
    let hatch = [
        RecvPdu {
            kind: 0,
            seq: 1,
            body_len: 0,
        },
        Send(3),
    ];
    assert_eq!(run_auth_peer_session(&hatch, true).unauthenticated, 1);
    assert_eq!(run_auth_peer_session(&hatch, false).refused, 1);
}

/// The checker itself must catch a violation, or the properties above
/// prove nothing.
#[test]
#[should_panic(expected = "transmit with a partial PDU")]
fn checker_rejects_partial_transmits() {
    use bytes::Bytes;

    use crate::Machine;
    use crate::machine::{Input, Output};

    struct Broken(bool);
    impl Machine for Broken {
        type Event = ();
        fn handle_input(&mut self, _: Input<'_>) {}
        fn poll_output(&mut self) -> Output<()> {
            self.0 = !self.0;
            if self.0 {
                Output::Transmit(Bytes::from_static(&[0, 0, 0, 20, 0]))
            } else {
                Output::Timeout(crate::fuzzing::t0())
            }
        }
    }
    crate::fuzzing::check_drain(&mut Broken(false));
}
