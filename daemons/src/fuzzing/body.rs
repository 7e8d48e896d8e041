//! [`Body`]: well-formed protobuf bodies of any command, from fuzzer
//! choices.

use arbitrary::Arbitrary;
use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint};
use teamtalk_proto::{Command, Message};

use super::user_id;

/// Most fields one body gets (each is a trial decode).
const MAX_FIELDS: usize = 24;
/// Longest text or byte field.
const MAX_LEN: usize = 512;

/// A value inside a nested message (one level deep).
#[derive(Debug, Clone, Arbitrary)]
pub enum Leaf {
    /// A user id of the shared pool ([`user_id`]).
    Id(u8),
    /// Any varint.
    Varint(u32),
    /// An ASCII string: length and first character.
    Text(u8, u8),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// One field's value.
#[derive(Debug, Clone, Arbitrary)]
pub enum Value {
    /// A user id of the shared pool ([`user_id`]), as a varint.
    Id(u8),
    /// A small number (enums, types, counts): `n % 20`, or a message type
    /// TeamTalk uses (`0x11`, `0x12`) for 18 and 19.
    Small(u8),
    /// Any 32-bit varint.
    Varint(u32),
    /// Any 64-bit varint.
    Wide(u64),
    /// A negative number, sign-extended as protobuf does for `int32`.
    Negative(i8),
    /// An ASCII string: length and first character.
    Text(u16, u8),
    /// Any bytes (valid only in `bytes` fields, or as UTF-8 in strings).
    Bytes(Vec<u8>),
    /// A nested message of these fields (tag, value).
    Nested(Vec<(u8, Leaf)>),
    /// Packed user ids of the pool.
    Ids(Vec<u8>),
    /// A `fixed32`.
    Fixed32(u32),
    /// A `fixed64`.
    Fixed64(u64),
}

/// A field: tag choice and value.
#[derive(Debug, Clone, Arbitrary)]
pub struct Field {
    /// Field number: `1 + tag % 12` mostly, 20 (`attach_data`) for
    /// 200..=239, 100..=103 (our extensions) above.
    pub tag: u8,
    /// What it holds.
    pub value: Value,
}

/// A body built from fuzzer-chosen fields. See [`Body::build`].
#[derive(Debug, Clone, Default, Arbitrary)]
pub struct Body(pub Vec<Field>);

fn field_number(tag: u8) -> u32 {
    match tag {
        0..=199 => 1 + u32::from(tag % 12),
        200..=239 => 20,
        _ => 100 + u32::from(tag % 4),
    }
}

fn text(len: usize, first: u8) -> Vec<u8> {
    let len = len.min(MAX_LEN);
    (0..len)
        .map(|i| b' ' + (first.wrapping_add(i as u8) % 95))
        .collect()
}

fn put_len(number: u32, bytes: &[u8], buf: &mut BytesMut) {
    encode_key(number, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn put_leaf(number: u32, leaf: &Leaf, buf: &mut BytesMut) {
    match leaf {
        Leaf::Id(n) => {
            encode_key(number, WireType::Varint, buf);
            encode_varint(u64::from(user_id(*n)), buf);
        }
        Leaf::Varint(v) => {
            encode_key(number, WireType::Varint, buf);
            encode_varint(u64::from(*v), buf);
        }
        Leaf::Text(len, first) => put_len(number, &text(usize::from(*len), *first), buf),
        Leaf::Bytes(b) => put_len(number, &b[..b.len().min(MAX_LEN)], buf),
    }
}

fn put_value(number: u32, value: &Value, buf: &mut BytesMut) {
    match value {
        Value::Id(n) => {
            encode_key(number, WireType::Varint, buf);
            encode_varint(u64::from(user_id(*n)), buf);
        }
        Value::Small(n) => {
            let v = match n % 20 {
                18 => 0x11,
                19 => 0x12,
                k => k,
            };
            encode_key(number, WireType::Varint, buf);
            encode_varint(u64::from(v), buf);
        }
        Value::Varint(v) => {
            encode_key(number, WireType::Varint, buf);
            encode_varint(u64::from(*v), buf);
        }
        Value::Wide(v) => {
            encode_key(number, WireType::Varint, buf);
            encode_varint(*v, buf);
        }
        Value::Negative(v) => {
            encode_key(number, WireType::Varint, buf);
            // Sign extension to 64 bits, as protobuf encodes int32.
            encode_varint(i64::from(*v).cast_unsigned(), buf);
        }
        Value::Text(len, first) => put_len(number, &text(usize::from(*len), *first), buf),
        Value::Bytes(b) => put_len(number, &b[..b.len().min(MAX_LEN)], buf),
        Value::Nested(fields) => {
            let mut inner = BytesMut::new();
            for (tag, leaf) in fields.iter().take(MAX_FIELDS) {
                put_leaf(1 + u32::from(tag % 12), leaf, &mut inner);
            }
            put_len(number, &inner, buf);
        }
        Value::Ids(ids) => {
            let mut inner = BytesMut::new();
            for n in ids.iter().take(MAX_LEN) {
                encode_varint(u64::from(user_id(*n)), &mut inner);
            }
            put_len(number, &inner, buf);
        }
        Value::Fixed32(v) => {
            encode_key(number, WireType::ThirtyTwoBit, buf);
            buf.put_u32_le(*v);
        }
        Value::Fixed64(v) => {
            encode_key(number, WireType::SixtyFourBit, buf);
            buf.put_u64_le(*v);
        }
    }
}

impl Body {
    /// The body as bytes that decode as `command`'s message: each field is
    /// appended and kept only if the body still decodes (a field of the
    /// wrong wire type, or a non-UTF-8 string, is left out), so the result
    /// always decodes, to a message with whatever fields survived.
    #[must_use]
    pub fn build(&self, command: Command) -> Bytes {
        let mut body = BytesMut::new();
        for field in self.0.iter().take(MAX_FIELDS) {
            let keep = body.len();
            put_value(field_number(field.tag), &field.value, &mut body);
            if command.decode_body(body.clone().freeze()).is_err() {
                body.truncate(keep);
            }
        }
        body.freeze()
    }

    /// The decoded message [`Body::build`] gives for `command`.
    #[must_use]
    pub fn message(&self, command: Command) -> Message {
        command
            .decode_body(self.build(command))
            .unwrap_or_else(|_| {
                Message::Unknown(teamtalk_proto::Pdu::new(command.key(), 0, Bytes::new()))
            })
    }
}

/// A command of the whole table, by index.
#[must_use]
pub fn command(n: u16) -> Command {
    let all = Command::ALL;
    all[usize::from(n) % all.len()]
}
