//! Property tests: random step sequences against every machine, with the
//! contract's invariants checked after each step (see `crate::fuzzing`).

use proptest::prelude::*;

use bytes::Bytes;
use teamtalk_proto::{CommandKey, Pdu};

use crate::fuzzing::{
    ClientStep, HONEST_LINK_OPENING, HONEST_PEER_OPENING, Step, after, run_auth_link,
    run_auth_peer_session, run_client, run_link, run_peer_session, run_session, run_tls_session,
    test_auth,
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
        2 => Just(Step::PauseReading),
        2 => Just(Step::ResumeReading),
        2 => any::<u8>().prop_map(Step::Credit),
        2 => (any::<u8>(), any::<u16>(), any::<u8>())
            .prop_map(|(count, seq, body_len)| Step::RecvBurst { count, seq, body_len }),
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

mod http {
    //! HttpConn: splits, arbitrary bytes and step sequences.

    use std::net::SocketAddr;

    use ::http::{Request, Response};
    use bytes::Bytes;
    use proptest::prelude::*;

    use crate::fuzzing::{HttpStep, run_http, sample_request, t0};
    use crate::http::{HttpCloseReason, HttpConfig, HttpConn, HttpEvent};
    use crate::tests::secs;
    use crate::{Input, Machine, Output};

    fn peer() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 4000))
    }

    /// Feeds `pieces` in order, answering each request with 200; returns
    /// the requests.
    fn feed(pieces: &[&[u8]]) -> Vec<Request<Bytes>> {
        let t = t0();
        let mut m = HttpConn::new(HttpConfig::default(), peer(), t);
        let mut reqs = Vec::new();
        let drain = |m: &mut HttpConn, reqs: &mut Vec<Request<Bytes>>| loop {
            match m.poll_output() {
                Output::Event(HttpEvent::Request(r)) => {
                    reqs.push(r);
                    m.respond(Response::new(Bytes::from_static(b"ok"))).unwrap();
                }
                Output::Timeout(_) | Output::Finished => return,
                _ => {}
            }
        };
        drain(&mut m, &mut reqs);
        for p in pieces {
            m.handle_input(Input::Received(t, p));
            drain(&mut m, &mut reqs);
        }
        reqs
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z][a-zA-Z0-9-]{0,12}"
    }

    /// A valid HTTP/1.0 or HTTP/1.1 request.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        request_of(any::<bool>())
    }

    /// A valid request: method, target, fields, and a body sent with
    /// `Content-Length` or chunked in random pieces; HTTP/1.0 when
    /// `http10` says so.
    fn request_of(http10: impl Strategy<Value = bool>) -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![
                Just("GET"),
                Just("POST"),
                Just("PUT"),
                Just("DELETE"),
                Just("OPTIONS")
            ],
            proptest::collection::vec("[a-z0-9._~-]{1,8}", 0..4),
            proptest::option::of("[a-z]{1,5}=[a-z0-9%]{0,6}"),
            proptest::collection::vec((token(), "[ -~]{0,20}"), 0..6),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::option::of(proptest::collection::vec(1usize..80, 1..6)),
            http10,
        )
            .prop_map(|(method, segs, query, fields, body, chunks, http10)| {
                let mut target = format!("/{}", segs.join("/"));
                if let Some(q) = query {
                    target = format!("{target}?{q}");
                }
                let chunked = chunks.is_some() && !http10;
                let version = if http10 { "1.0" } else { "1.1" };
                let mut out = format!("{method} {target} HTTP/{version}\r\n").into_bytes();
                for (name, value) in fields {
                    let lower = name.to_ascii_lowercase();
                    if [
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "expect",
                        "upgrade",
                    ]
                    .contains(&lower.as_str())
                    {
                        continue;
                    }
                    out.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
                }
                if chunked {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    let sizes = chunks.unwrap_or_default();
                    let mut rest = &body[..];
                    let mut i = 0;
                    while !rest.is_empty() {
                        let n = sizes[i % sizes.len()].min(rest.len());
                        out.extend_from_slice(format!("{n:X}\r\n").as_bytes());
                        out.extend_from_slice(&rest[..n]);
                        out.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                        i += 1;
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                } else {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    out.extend_from_slice(&body);
                }
                out
            })
    }

    fn describe(r: &Request<Bytes>) -> String {
        let mut fields: Vec<String> = r
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}={v:?}"))
            .collect();
        fields.sort();
        format!(
            "{} {} {:?} {fields:?} {:?}",
            r.method(),
            r.uri(),
            r.version(),
            r.body()
        )
    }

    fn http_step() -> impl Strategy<Value = HttpStep> {
        prop_oneof![
            5 => (0u16..5000).prop_map(HttpStep::Advance),
            1 => (0u16..=u16::MAX).prop_map(|ms| HttpStep::Advance(ms.saturating_mul(8))),
            1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(HttpStep::Recv),
            // Printable junk and header-looking lines.
            1 => "[ -~\r\n]{0,80}".prop_map(|s| HttpStep::Recv(s.into_bytes())),
            8 => (any::<u8>(), 0u16..5000, 1u8..6)
                .prop_map(|(kind, body_len, pieces)| HttpStep::RecvRequest { kind, body_len, pieces }),
            8 => (any::<u16>(), prop_oneof![0u32..100, 0u32..300_000], any::<bool>())
                .prop_map(|(status, body_len, close)| HttpStep::Respond { status, body_len, close }),
            1 => Just(HttpStep::TakeUpgrade),
            1 => Just(HttpStep::Close),
            1 => Just(HttpStep::Closed),
            1 => any::<u32>().prop_map(HttpStep::Backlog),
            2 => (0u32..300_000).prop_map(HttpStep::Backlog),
            2 => Just(HttpStep::Backlog(0)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_split_of_a_valid_request_gives_the_same_request(
            req in request(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let whole = feed(&[&req]);
            prop_assert_eq!(whole.len(), 1);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(req.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for a in at {
                pieces.push(&req[start..a]);
                start = a;
            }
            pieces.push(&req[start..]);
            let split = feed(&pieces);
            prop_assert_eq!(split.len(), 1);
            prop_assert_eq!(describe(&whole[0]), describe(&split[0]));
        }

        #[test]
        fn two_pipelined_requests_in_any_split_are_both_served(
            // Only HTTP/1.1 keeps the connection for a second request.
            a in request_of(Just(false)),
            b in 0u8..8,
            cut in any::<prop::sample::Index>(),
        ) {
            let b = sample_request(b % 4, 10);
            let all = [a.clone(), b].concat();
            let at = cut.index(all.len() + 1);
            let reqs = feed(&[&all[..at], &all[at..]]);
            prop_assert_eq!(reqs.len(), 2);
        }

        #[test]
        fn arbitrary_bytes_end_in_a_request_or_a_close(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..12),
        ) {
            let t = t0();
            let mut m = HttpConn::new(HttpConfig::default(), peer(), t);
            let mut request = false;
            let mut closed = false;
            let mut drain = |m: &mut HttpConn| loop {
                match m.poll_output() {
                    Output::Event(HttpEvent::Request(_)) => request = true,
                    Output::Event(HttpEvent::Closed(_)) => closed = true,
                    Output::Timeout(_) | Output::Finished => return,
                    _ => {}
                }
            };
            drain(&mut m);
            for c in &chunks {
                m.handle_input(Input::Received(t, c));
                drain(&mut m);
            }
            m.handle_input(Input::Timeout(t + secs(3600)));
            drain(&mut m);
            prop_assert!(request || closed);
        }

        #[test]
        fn http_conn_keeps_the_contract(steps in proptest::collection::vec(http_step(), 0..80)) {
            let _ = run_http(&steps);
        }
    }

    /// The step runner reaches the machine: a scripted run through a
    /// chunked upload, a large response, a 100-continue and keep-alive.
    #[test]
    fn the_step_runner_serves_requests() {
        let run = run_http(&[
            HttpStep::RecvRequest {
                kind: 3,
                body_len: 700,
                pieces: 4,
            },
            HttpStep::Respond {
                status: 5,
                body_len: 150_000,
                close: false,
            },
            HttpStep::Backlog(100_000),
            HttpStep::Backlog(0),
            HttpStep::RecvRequest {
                kind: 4,
                body_len: 20,
                pieces: 2,
            },
            HttpStep::Respond {
                status: 3,
                body_len: 10,
                close: false,
            },
            HttpStep::RecvRequest {
                kind: 7,
                body_len: 0,
                pieces: 1,
            },
            HttpStep::Respond {
                status: 5,
                body_len: 1,
                close: false,
            },
        ]);
        assert_eq!(run.requests, 3);
        assert_eq!(run.responses, 3);
        assert_eq!(run.closed, Some(HttpCloseReason::Done));
        let idle = run_http(&[HttpStep::RecvRequest {
            kind: 0,
            body_len: 0,
            pieces: 1,
        }]);
        assert_eq!((idle.requests, idle.closed), (1, None));
    }
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
