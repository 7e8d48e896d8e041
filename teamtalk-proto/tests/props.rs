//! Property tests of the framing and of every typed message.
//!
//! The typed round trip does not hand-write a generator per message: it
//! walks the descriptors of our own `.proto` files (compiled here with
//! protox, exactly as `build.rs` does) and writes random *canonical*
//! proto2 encodings for each command's message: fields in ascending number
//! order, required fields always present, repeated scalars unpacked. A
//! correct prost type must decode such bytes and re-encode them unchanged,
//! which is the byte-compatibility property the C++ peers rely on.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use teamtalk_proto::{Command, CommandKey, FrameError, Message, Pdu, PduCodec};

fn arb_pdu() -> impl Strategy<Value = Pdu> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(sid, cid, seq, body)| {
            Pdu::new(CommandKey::new(sid, cid), seq, Bytes::from(body))
        })
}

proptest! {
    /// A stream of PDUs cut at arbitrary points decodes to the same PDUs.
    #[test]
    fn stream_cut_anywhere_decodes_the_same(
        pdus in proptest::collection::vec(arb_pdu(), 1..20),
        cuts in proptest::collection::vec(1usize..64, 1..50),
    ) {
        let mut wire = BytesMut::new();
        for p in &pdus {
            p.encode(&mut wire);
        }
        let mut codec = PduCodec::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < wire.len() {
            let n = (*cut.next().unwrap()).min(wire.len() - pos);
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some(p) = codec.decode(&mut buf).unwrap() {
                got.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, pdus);
    }

    /// One byte at a time, too.
    #[test]
    fn stream_one_byte_at_a_time(pdus in proptest::collection::vec(arb_pdu(), 1..5)) {
        let mut wire = BytesMut::new();
        for p in &pdus {
            p.encode(&mut wire);
        }
        let mut codec = PduCodec::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(p) = codec.decode(&mut buf).unwrap() {
                got.push(p);
            }
        }
        prop_assert_eq!(got, pdus);
    }

    /// Lengths outside 16..=max are refused before the buffer grows.
    #[test]
    fn bad_lengths_refused_without_allocation(
        len in prop_oneof![0u32..16, 1025u32..=u32::MAX],
        tail in proptest::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut codec = PduCodec::new(1024);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(len);
        buf.extend_from_slice(&tail);
        let cap = buf.capacity();
        let before = buf.clone();
        let err = codec.decode(&mut buf).unwrap_err();
        match err {
            FrameError::TooShort(l) => prop_assert!(l < 16 && l == len),
            FrameError::TooLong { len: l, max } => prop_assert!(l == len && max == 1024),
            other => prop_assert!(false, "unexpected {other:?}"),
        }
        prop_assert_eq!(buf.capacity(), cap);
        prop_assert_eq!(buf, before);
    }

    /// Random canonical messages of every command's type decode and
    /// re-encode to the same bytes.
    #[test]
    fn every_message_type_round_trips(pick in 0usize..1000, seed in any::<u64>()) {
        let command = Command::ALL[pick % Command::ALL.len()];
        let set = descriptors();
        let desc = find_message(set, command.message_name())
            .unwrap_or_else(|| panic!("no descriptor for {}", command.message_name()));
        let mut rng = Rng(seed | 1);
        let body = encode_random(set, desc, &mut rng, 0);
        let pdu = Pdu::new(command.key(), 9, body.clone());
        let msg = Message::decode(&pdu).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(msg.command(), Some(command));
        prop_assert_eq!(msg.encode_body(), body);
        prop_assert_eq!(msg.to_pdu(9), pdu);
    }
}

#[test]
fn every_command_has_a_descriptor() {
    let set = descriptors();
    for c in Command::ALL {
        assert!(
            find_message(set, c.message_name()).is_some(),
            "{} names {}, which no .proto defines",
            c.name(),
            c.message_name()
        );
    }
}

/// `Message::attached_mut` covers exactly the messages whose descriptor has
/// field 20.
#[test]
fn attached_list_matches_descriptors() {
    let set = descriptors();
    for &c in Command::ALL {
        let desc = find_message(set, c.message_name()).expect("descriptor");
        let has_field = desc.field.iter().any(|f| f.number() == 20);
        let mut msg = c.decode_body(Bytes::new()).expect("defaults decode");
        assert_eq!(msg.attached_mut().is_some(), has_field, "{}", c.name());
    }
}

/// `Message::result_code` covers exactly the messages whose descriptor has
/// a field named `result_code`, and reads that field.
#[test]
fn result_code_list_matches_descriptors() {
    let set = descriptors();
    for &c in Command::ALL {
        let desc = find_message(set, c.message_name()).expect("descriptor");
        let field = desc.field.iter().find(|f| f.name() == "result_code");
        let empty = c.decode_body(Bytes::new()).expect("defaults decode");
        assert_eq!(
            empty.result_code().is_some(),
            field.is_some(),
            "{}",
            c.name()
        );
        if let Some(f) = field {
            // A body holding only result_code = 5 reads back as 5.
            let tag = u8::try_from(f.number() << 3).expect("small field number");
            let msg = c
                .decode_body(Bytes::from(vec![tag, 5]))
                .expect("one varint field decodes");
            assert_eq!(msg.result_code(), Some(5), "{}", c.name());
        }
    }
}

fn descriptors() -> &'static FileDescriptorSet {
    static SET: std::sync::OnceLock<FileDescriptorSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
        let files: Vec<_> = std::fs::read_dir(dir)
            .expect("proto dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "proto"))
            .collect();
        protox::compile(&files, [dir]).expect("our .proto files compile")
    })
}

/// Finds `IM.Pkg.Name` (or `.IM.Pkg.Name`) in the set.
fn find_message<'a>(set: &'a FileDescriptorSet, full: &str) -> Option<&'a DescriptorProto> {
    let full = full.trim_start_matches('.');
    set.file.iter().find_map(|f| {
        let pkg = f.package();
        let name = full.strip_prefix(pkg)?.strip_prefix('.')?;
        f.message_type.iter().find(|m| m.name() == name)
    })
}

fn find_enum_values(set: &FileDescriptorSet, full: &str) -> Vec<i32> {
    let full = full.trim_start_matches('.');
    set.file
        .iter()
        .find_map(|f| {
            let name = full.strip_prefix(f.package())?.strip_prefix('.')?;
            f.enum_type.iter().find(|e| e.name() == name)
        })
        .map(|e| e.value.iter().map(|v| v.number()).collect())
        .unwrap_or_else(|| vec![0])
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic per proptest seed, good enough to pick shapes.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn encode_random(
    set: &FileDescriptorSet,
    desc: &DescriptorProto,
    rng: &mut Rng,
    depth: u32,
) -> Bytes {
    let mut fields: Vec<_> = desc.field.iter().collect();
    fields.sort_by_key(|f| f.number());
    let mut out = BytesMut::new();
    for f in fields {
        let count = match f.label() {
            Label::Required => 1,
            Label::Optional => rng.below(2),
            Label::Repeated => {
                if depth > 3 {
                    0
                } else {
                    rng.below(4)
                }
            }
        };
        for _ in 0..count {
            encode_field(set, f, rng, depth, &mut out);
        }
    }
    out.freeze()
}

fn encode_field(
    set: &FileDescriptorSet,
    f: &prost_types::FieldDescriptorProto,
    rng: &mut Rng,
    depth: u32,
    out: &mut BytesMut,
) {
    let num = u64::from(f.number() as u32);
    let key = |wire: u64| (num << 3) | wire;
    match f.r#type() {
        Type::Uint32 => {
            put_varint(out, key(0));
            put_varint(out, rng.next() >> (rng.below(4) * 8 + 32));
        }
        Type::Uint64 => {
            put_varint(out, key(0));
            put_varint(out, rng.next() >> (rng.below(8) * 8));
        }
        Type::Int32 | Type::Int64 => {
            put_varint(out, key(0));
            // Negative values are sign-extended to 10 bytes, as prost writes them.
            put_varint(out, (rng.next() as i32) as i64 as u64);
        }
        Type::Bool => {
            put_varint(out, key(0));
            put_varint(out, rng.below(2));
        }
        Type::Enum => {
            let values = find_enum_values(set, f.type_name());
            put_varint(out, key(0));
            let v = values[rng.below(values.len() as u64) as usize];
            put_varint(out, v as i64 as u64);
        }
        Type::String => {
            let len = rng.below(12) as usize;
            let s: String = (0..len)
                .map(|_| ['a', 'Z', '0', ' ', 'é', '中', '/'][rng.below(7) as usize])
                .collect();
            put_varint(out, key(2));
            put_varint(out, s.len() as u64);
            out.put_slice(s.as_bytes());
        }
        Type::Bytes => {
            let len = rng.below(20) as usize;
            put_varint(out, key(2));
            put_varint(out, len as u64);
            for _ in 0..len {
                out.put_u8(rng.next() as u8);
            }
        }
        Type::Message => {
            let inner = find_message(set, f.type_name())
                .unwrap_or_else(|| panic!("unknown type {}", f.type_name()));
            let body = encode_random(set, inner, rng, depth + 1);
            put_varint(out, key(2));
            put_varint(out, body.len() as u64);
            out.put_slice(&body);
        }
        Type::Fixed32 | Type::Sfixed32 => {
            put_varint(out, key(5));
            out.put_u32_le(rng.next() as u32);
        }
        Type::Fixed64 | Type::Sfixed64 => {
            put_varint(out, key(1));
            out.put_u64_le(rng.next());
        }
        other => panic!("field type {other:?} not used by TeamTalk; extend the generator"),
    }
}
