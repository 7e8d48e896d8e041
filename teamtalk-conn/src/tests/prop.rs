//! Property tests: random step sequences against every machine, with the
//! contract's invariants checked after each step (see `crate::fuzzing`).

use proptest::prelude::*;

use crate::fuzzing::{Step, run_link, run_peer_session, run_session, run_tls_session};

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
        6 => (0u8..4, any::<u16>(), any::<u8>())
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
}

proptest! {
    // Each case may run TLS handshakes: fewer cases.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A client session behind a TLS server wrapper, with an honest TLS
    /// client joining at a `Connected` step.
    #[test]
    fn tls_client_session_keeps_the_contract(steps in steps()) {
        run_tls_session(&steps);
    }

    /// Raw bytes into a TLS server never panic, and its handshake
    /// deadline always closes it.
    #[test]
    fn tls_server_survives_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        crate::fuzzing::run_tls_server_bytes(&data);
    }
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
