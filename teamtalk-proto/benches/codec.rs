//! Framing and typed codec throughput, one core.
//!
//! `cargo bench -p teamtalk-proto --bench codec`
//!
//! Figures and the machine they were taken on are in docs/performance.md.
//! `memcpy_64k` is there as the yardstick: framing cannot beat copying the
//! same bytes once, so its distance from memcpy says how much work the
//! framing does per byte.

use bytes::{Bytes, BytesMut};
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::{Command, Message, Pdu, PduCodec};

fn main() {
    divan::main();
}

const BUF: usize = 64 * 1024;

/// A 100-byte PDU: 16 header bytes + an 84-byte IMMsgData body.
fn msg_data_100() -> Pdu {
    let mut msg = ImMsgData {
        from_user_id: 1_000_001,
        to_session_id: 1_000_002,
        msg_id: 123_456,
        create_time: 1_764_000_000,
        msg_type: 1,
        msg_data: Bytes::new(),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    let fixed = Command::MsgData.pdu(0, &msg).wire_len();
    // The empty bytes field is already on the wire (tag + zero length);
    // under 128 bytes its length stays one byte.
    msg.msg_data = Bytes::from(vec![b'x'; 100 - fixed]);
    let pdu = Command::MsgData.pdu(0, &msg);
    assert_eq!(pdu.wire_len(), 100);
    pdu
}

fn stream_64k() -> BytesMut {
    let one = msg_data_100().to_bytes();
    let mut buf = BytesMut::with_capacity(BUF);
    while buf.len() + one.len() <= BUF {
        buf.extend_from_slice(&one);
    }
    buf
}

#[divan::bench]
fn memcpy_64k(bencher: Bencher) {
    let src = stream_64k();
    let mut dst = vec![0u8; src.len()];
    bencher
        .counter(BytesCount::new(src.len()))
        .bench_local(|| dst.copy_from_slice(black_box(&src)));
}

#[divan::bench]
fn framing_64k(bencher: Bencher) {
    let src = stream_64k();
    let len = src.len();
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| src.clone())
        .bench_local_values(|mut buf| {
            let mut codec = PduCodec::default();
            let mut n = 0usize;
            while let Some(pdu) = codec.decode(&mut buf).expect("valid stream") {
                n += pdu.body.len();
            }
            n
        });
}

#[divan::bench]
fn typed_decode_msg_data(bencher: Bencher) {
    let pdu = msg_data_100();
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| Message::decode(black_box(&pdu)).expect("valid body"));
}

#[divan::bench]
fn typed_encode_msg_data(bencher: Bencher) {
    let Message::MsgData(msg) = Message::decode(&msg_data_100()).expect("valid") else {
        unreachable!()
    };
    let mut out = BytesMut::with_capacity(256);
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        out.clear();
        Pdu::encode_message(
            Command::MsgData.key(),
            black_box(3),
            black_box(&msg),
            &mut out,
        );
        out.len()
    });
}
