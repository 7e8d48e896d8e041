//! [`PushApp`] in virtual time: routing, answers, retries with backoff,
//! give-up, dedupe and the queue bound. The HTTP side is tested against
//! local servers in `daemons/tests/push.rs`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use teamtalk_proto::pb::im::base_define::UserTokenInfo;
use teamtalk_proto::pb::im::server::{ImPushToUserReq, ImPushToUserRsp};
use teamtalk_proto::{Command, Message, Pdu};

use super::app::{
    RESULT_DELIVERED, RESULT_FAILED, RESULT_INVALID_TOKEN, RESULT_NO_SINK, RESULT_QUEUE_FULL,
};
use super::*;
use crate::runtime::{Action, App, Conn, Input, Now, Out, PortId};

const MSG: Conn = Conn::test(1);

struct H {
    app: PushApp,
    now: Now,
}

impl H {
    fn new(routes: Routes, limits: PushLimits) -> Self {
        let now = Now::new(
            crate::clock::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let mut h = Self {
            app: PushApp::new(routes, limits, 2),
            now,
        };
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        h.step(Input::Opened {
            conn: MSG,
            port: PortId(0),
            peer,
        });
        h
    }

    fn step(&mut self, input: Input<'_, PushDone>) -> Vec<Action<PushJob>> {
        let mut out = Out::new();
        self.app.handle(self.now, input, &mut out);
        out.take()
    }

    fn request(&mut self, key: Option<&str>, tokens: &[(u32, i32, &str)]) -> Vec<Action<PushJob>> {
        let req = ImPushToUserReq {
            flash: "alice:hello".into(),
            data: r#"{"msg_type":1,"from_id":3}"#.into(),
            user_token_list: tokens
                .iter()
                .map(|&(user_id, user_type, token)| UserTokenInfo {
                    user_id,
                    user_type,
                    token: token.into(),
                    push_count: 2,
                    push_type: 1,
                })
                .collect(),
            push_key: key.map(str::to_owned),
        };
        let pdu = Command::OtherPushToUserReq.pdu(7, &req);
        self.step(Input::Pdu {
            conn: MSG,
            pdu: &pdu,
        })
    }

    fn done(&mut self, job: &PushJob, outcome: Outcome) -> Vec<Action<PushJob>> {
        self.step(Input::Done(PushDone {
            id: job.id,
            worker: 0,
            outcome,
        }))
    }

    fn advance(&mut self, secs: u64) -> Vec<Action<PushJob>> {
        self.now = self.now.plus(Duration::from_secs(secs));
        self.step(Input::Tick)
    }
}

fn jobs(actions: &[Action<PushJob>]) -> Vec<PushJob> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Job { job, .. } => Some(job.clone()),
            _ => None,
        })
        .collect()
}

/// One 0x0710: its seq and (token, result, user) per token.
type Answered = (u16, Vec<(String, u32, Option<u32>)>);

fn answers(actions: &[Action<PushJob>]) -> Vec<Answered> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, pdu) if *c == MSG => Some(pdu),
            _ => None,
        })
        .map(|pdu: &Pdu| match Message::decode(pdu).unwrap() {
            Message::OtherPushToUserRsp(ImPushToUserRsp { push_result_list }) => (
                pdu.seq(),
                push_result_list
                    .into_iter()
                    .map(|r| (r.user_token, r.result_code, r.user_id))
                    .collect(),
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn both() -> Routes {
    Routes {
        ios: Some(SinkKind::Apns),
        android: Some(SinkKind::Fcm),
    }
}

fn retry() -> Outcome {
    Outcome::Retry {
        reason: "503".into(),
        after: None,
    }
}

#[test]
fn tokens_go_to_their_platform_sink_and_the_answer_waits_for_all() {
    let mut h = H::new(both(), PushLimits::default());
    let out = h.request(
        Some("3:7:9"),
        &[(7, 0x11, "ios"), (8, 0x12, "droid"), (9, 0x01, "pc")],
    );
    let js = jobs(&out);
    assert_eq!(js.len(), 2);
    assert_eq!(js[0].delivery.sink, SinkKind::Apns);
    assert_eq!(js[0].delivery.token, "ios");
    assert_eq!(&*js[0].delivery.flash, "alice:hello");
    assert_eq!(js[1].delivery.sink, SinkKind::Fcm);
    assert!(
        answers(&out).is_empty(),
        "answered before the deliveries ended"
    );
    assert!(answers(&h.done(&js[0], Outcome::Delivered)).is_empty());
    let out = h.done(&js[1], Outcome::Invalid("404".into()));
    assert_eq!(
        answers(&out),
        vec![(
            7,
            vec![
                ("ios".into(), RESULT_DELIVERED, Some(7)),
                ("droid".into(), RESULT_INVALID_TOKEN, Some(8)),
                ("pc".into(), RESULT_NO_SINK, Some(9)),
            ]
        )]
    );
    assert_eq!(h.app.held(), 0);
}

#[test]
fn no_sink_answers_at_once_with_result_1() {
    let mut h = H::new(Routes::default(), PushLimits::default());
    let out = h.request(None, &[(7, 0x11, "ios"), (8, 0x12, "droid")]);
    assert!(jobs(&out).is_empty());
    assert_eq!(
        answers(&out),
        vec![(
            7,
            vec![
                ("ios".into(), RESULT_NO_SINK, Some(7)),
                ("droid".into(), RESULT_NO_SINK, Some(8))
            ]
        )]
    );
}

#[test]
fn retries_back_off_then_give_up() {
    let limits = PushLimits {
        max_attempts: 3,
        ..PushLimits::default()
    };
    let mut h = H::new(both(), limits);
    let first = jobs(&h.request(Some("k"), &[(8, 0x12, "droid")]));
    assert_eq!(first.len(), 1);
    assert!(jobs(&h.done(&first[0], retry())).is_empty());
    // First retry after 1 s.
    let second = jobs(&h.advance(1));
    assert_eq!(second.len(), 1);
    assert!(jobs(&h.done(&second[0], retry())).is_empty());
    // Second after 2 s more: not at 1.
    assert!(jobs(&h.advance(1)).is_empty());
    let third = jobs(&h.advance(1));
    assert_eq!(third.len(), 1);
    let out = h.done(&third[0], retry());
    assert_eq!(
        answers(&out),
        vec![(7, vec![("droid".into(), RESULT_FAILED, Some(8))])]
    );
    assert_eq!(h.app.finished(SinkKind::Fcm, "gave_up"), 1);
    // Given up: not sent again, and the key is free for a later attempt.
    assert!(jobs(&h.advance(60)).is_empty());
    assert_eq!(jobs(&h.request(Some("k"), &[(8, 0x12, "droid")])).len(), 1);
}

#[test]
fn retry_after_is_honoured_up_to_the_cap() {
    let mut h = H::new(both(), PushLimits::default());
    let first = jobs(&h.request(None, &[(8, 0x12, "droid")]));
    let _ = h.done(
        &first[0],
        Outcome::Retry {
            reason: "429".into(),
            after: Some(10),
        },
    );
    assert!(jobs(&h.advance(9)).is_empty());
    assert_eq!(jobs(&h.advance(1)).len(), 1);
}

#[test]
fn one_message_goes_to_one_device_once() {
    let mut h = H::new(both(), PushLimits::default());
    let first = jobs(&h.request(Some("3:7:9"), &[(8, 0x12, "droid")]));
    // Asked again while the first is under way: not sent, answered 0.
    let out = h.request(Some("3:7:9"), &[(8, 0x12, "droid")]);
    assert!(jobs(&out).is_empty());
    assert_eq!(answers(&out)[0].1[0].1, RESULT_DELIVERED);
    let _ = h.done(&first[0], Outcome::Delivered);
    // And after it was delivered.
    assert!(jobs(&h.request(Some("3:7:9"), &[(8, 0x12, "droid")])).is_empty());
    // Another message, or another device, is sent.
    assert_eq!(
        jobs(&h.request(Some("3:7:10"), &[(8, 0x12, "droid")])).len(),
        1
    );
    assert_eq!(
        jobs(&h.request(Some("3:7:9"), &[(9, 0x12, "other")])).len(),
        1
    );
    // Forgotten after DedupeSecs.
    let _ = h.advance(3601);
    assert_eq!(
        jobs(&h.request(Some("3:7:9"), &[(8, 0x12, "droid")])).len(),
        1
    );
}

#[test]
fn the_queue_is_bounded_and_workers_get_their_share() {
    let limits = PushLimits {
        max_queue: 20,
        per_worker: 4,
        ..PushLimits::default()
    };
    let mut h = H::new(both(), limits);
    let tokens: Vec<String> = (0..25).map(|i| format!("t{i}")).collect();
    let list: Vec<(u32, i32, &str)> = tokens.iter().map(|t| (8, 0x12, t.as_str())).collect();
    let out = h.request(None, &list);
    // Two workers, four each at once.
    let js = jobs(&out);
    assert_eq!(js.len(), 8);
    assert_eq!(h.app.held(), 20);
    // One finishing makes room for one more.
    let more = jobs(&h.done(&js[0], Outcome::Delivered));
    assert_eq!(more.len(), 1);
    // Drain: the answer says five were refused for the full queue.
    let mut pending: Vec<PushJob> = js[1..].to_vec();
    pending.extend(more);
    let mut answered = Vec::new();
    while let Some(j) = pending.pop() {
        let out = h.done(&j, Outcome::Delivered);
        pending.extend(jobs(&out));
        answered.extend(answers(&out));
    }
    assert_eq!(answered.len(), 1);
    let full = answered[0]
        .1
        .iter()
        .filter(|r| r.1 == RESULT_QUEUE_FULL)
        .count();
    assert_eq!(full, 5);
}

#[test]
fn anything_but_push_requests_closes_the_session() {
    let mut h = H::new(both(), PushLimits::default());
    let pdu = Command::MsgTimeRequest.pdu(1, &teamtalk_proto::pb::im::message::ImClientTimeReq {});
    let out = h.step(Input::Pdu {
        conn: MSG,
        pdu: &pdu,
    });
    assert!(matches!(out.as_slice(), [Action::Close { conn, .. }] if *conn == MSG));
}

#[test]
fn conf_routes_and_errors() {
    let conf = crate::conf::Conf::parse_str(
        "ListenPort=0\nWebhookUrl=http://127.0.0.1:9/hook\nCertPath=x.pem\n",
        "pushserver.conf",
    )
    .unwrap();
    let cfg = PushConfig::from_conf(&conf).unwrap();
    assert_eq!(cfg.routes.ios, Some(SinkKind::Webhook));
    assert_eq!(cfg.routes.android, Some(SinkKind::Webhook));
    let conf = crate::conf::Conf::parse_str("IosSink=apns\n", "pushserver.conf").unwrap();
    let e = PushConfig::from_conf(&conf).unwrap_err().to_string();
    assert!(e.contains("IosSink") && e.contains("not configured"), "{e}");
    let conf = crate::conf::Conf::parse_str("WebhookUrl=ftp://x\n", "pushserver.conf").unwrap();
    assert!(PushConfig::from_conf(&conf).is_err());
    let conf = crate::conf::Conf::parse_str("", "pushserver.conf").unwrap();
    let cfg = PushConfig::from_conf(&conf).unwrap();
    assert_eq!(cfg.routes, Routes::default());
    assert_eq!(cfg.port, DEFAULT_PORT);
}
