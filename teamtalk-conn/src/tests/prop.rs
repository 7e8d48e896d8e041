//! Property tests: random step sequences against every machine, with the
//! contract's invariants checked after each step (see `crate::fuzzing`).

use proptest::prelude::*;

use crate::fuzzing::{ClientStep, Step, run_client, run_link, run_peer_session, run_session};

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

fn client_step() -> impl Strategy<Value = ClientStep> {
    prop_oneof![
        12 => step().prop_map(ClientStep::Common),
        3 => prop_oneof![Just(0u8), Just(3), Just(6), any::<u8>()].prop_map(ClientStep::LoginReply),
        1 => any::<u8>().prop_map(ClientStep::Kick),
        1 => Just(ClientStep::LogoutReply),
        2 => (prop_oneof![Just(1u8), Just(0x11), any::<u8>()], any::<u16>())
            .prop_map(|(t, seq)| ClientStep::Delivery(t, seq)),
        4 => (any::<u8>(), proptest::bool::weighted(0.2))
            .prop_map(|(n, wrong)| ClientStep::ReplyTo { n, wrong }),
        5 => ((0u16..1200), proptest::option::of(any::<u16>()))
            .prop_map(|(len, t)| ClientStep::Request(len, t)),
        2 => Just(ClientStep::Assigned),
        1 => Just(ClientStep::AssignmentFailed),
        1 => Just(ClientStep::Login),
        1 => Just(ClientStep::Logout),
    ]
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

    #[test]
    fn client_keeps_the_contract_and_ends_every_request_once(
        steps in proptest::collection::vec(client_step(), 0..160)
    ) {
        let _ = run_client(&steps);
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

/// A scripted run through the client harness that reaches every phase
/// (login, requests answered, timed out and failed, reconnect, logout), so
/// the properties above are known to check more than the early states.
#[test]
fn client_harness_reaches_every_phase() {
    use ClientStep::{Common, LoginReply, Logout, LogoutReply, ReplyTo, Request};
    let script = [
        Common(Step::Connected),
        LoginReply(0),
        Request(10, None),
        Request(10, Some(100)),
        Request(10, None),
        ReplyTo { n: 0, wrong: false },
        Common(Step::Advance(200)),
        ReplyTo { n: 0, wrong: true },
        Common(Step::Closed),
        Common(Step::Advance(u16::MAX)),
        Common(Step::Connected),
        LoginReply(8),
        Request(5, None),
        Logout,
        LogoutReply,
        // 16 steps, even and not a multiple of 3: a fixed msg_server and
        // credentials.
        Common(Step::Closed),
    ];
    assert!(script.len().is_multiple_of(2) && !script.len().is_multiple_of(3));
    let s = run_client(&script);
    assert_eq!((s.connects, s.logins), (2, 2), "{s:?}");
    assert_eq!(
        (s.requests, s.replies, s.timed_out, s.failed),
        (4, 1, 1, 2),
        "{s:?}"
    );
}
