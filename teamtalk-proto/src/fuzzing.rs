//! Entry points for the fuzz targets in `teamtalk-proto/fuzz`.
//!
//! Each function takes raw fuzzer bytes and must never panic; the fuzz
//! crate's replay test runs the committed corpus through them on stable.

use bytes::BytesMut;

use crate::codec::PduCodec;
use crate::command::Message;

/// Feeds `data` to a streaming decoder in chunks whose sizes come from the
/// data itself, then decodes every complete PDU into its typed message and
/// re-encodes the ones that parsed.
///
/// Checks, besides not panicking: every PDU the codec yields respects the
/// limit, and a typed message re-encodes to a body that decodes to the same
/// message.
pub fn decode_stream(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut codec = PduCodec::new(4096);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(pdu)) => {
                    assert!(pdu.wire_len() <= 4096, "codec yielded an over-limit pdu");
                    typed_round_trip(&pdu);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Decodes `data` as one PDU body under every known command.
pub fn decode_bodies(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let all = crate::command::Command::ALL;
    let command = all[usize::from(pick) % all.len()];
    let pdu = crate::Pdu::new(command.key(), 0, bytes::Bytes::copy_from_slice(body));
    typed_round_trip(&pdu);
}

fn typed_round_trip(pdu: &crate::Pdu) {
    if let Ok(msg) = Message::decode(pdu) {
        let again = msg.to_pdu(pdu.seq());
        let reparsed = Message::decode(&again).expect("re-encoded body must parse");
        assert_eq!(reparsed, msg, "typed round trip changed the message");
    }
}
