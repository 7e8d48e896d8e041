//! [`Pdu`]: a header plus a body that shares the receive buffer.

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::{CommandKey, Header, PDU_VERSION};

/// One protocol data unit: the 16-byte header and a protobuf body.
///
/// The body is a [`Bytes`] view, so a PDU split off a receive buffer by
/// [`PduCodec`](crate::PduCodec) holds no copy of its bytes. `header.length`
/// is kept as received; [`Pdu::encode`] always writes the real length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// The header as received or as built.
    pub header: Header,
    /// The protobuf body (possibly empty).
    pub body: Bytes,
}

impl Pdu {
    /// Builds a PDU with version 1, flag 0 and reserved 0, as every
    /// TeamTalk peer writes them.
    ///
    /// # Panics
    /// Never for bodies a frame limit allows; a body over 4 GiB cannot be
    /// represented and saturates the length field (the codec on the other
    /// side then refuses it).
    #[must_use]
    pub fn new(key: CommandKey, seq_num: u16, body: Bytes) -> Self {
        let length = u32::try_from(body.len() + Header::LEN).unwrap_or(u32::MAX);
        Self {
            header: Header {
                length,
                version: PDU_VERSION,
                flag: 0,
                service_id: key.service_id,
                command_id: key.command_id,
                seq_num,
                reserved: 0,
            },
            body,
        }
    }

    /// Builds a PDU whose body is `msg` serialized.
    #[must_use]
    pub fn from_message(key: CommandKey, seq_num: u16, msg: &impl prost::Message) -> Self {
        Self::new(key, seq_num, Bytes::from(msg.encode_to_vec()))
    }

    /// The (service, command) pair.
    #[must_use]
    pub fn key(&self) -> CommandKey {
        self.header.key()
    }

    /// Whether this PDU is the given command.
    #[must_use]
    pub fn is(&self, key: CommandKey) -> bool {
        self.key() == key
    }

    /// Sequence number.
    #[must_use]
    pub fn seq(&self) -> u16 {
        self.header.seq_num
    }

    /// Length of the PDU on the wire.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        Header::LEN + self.body.len()
    }

    /// Parses the body as `M`.
    ///
    /// # Errors
    /// prost's error when the body is not a valid `M`.
    pub fn decode_body<M: prost::Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.body.clone())
    }

    /// Appends the PDU to `dst`, writing the real length whatever
    /// `header.length` says.
    pub fn encode(&self, dst: &mut impl BufMut) {
        let mut header = self.header;
        header.length = u32::try_from(self.wire_len()).unwrap_or(u32::MAX);
        header.encode(dst);
        dst.put_slice(&self.body);
    }

    /// Writes a PDU carrying `msg` straight into `dst`: header, then the
    /// body encoded in place. No intermediate `Pdu` or body allocation,
    /// which is what a hot send path wants.
    pub fn encode_message(
        key: CommandKey,
        seq_num: u16,
        msg: &impl prost::Message,
        dst: &mut BytesMut,
    ) {
        let body_len = msg.encoded_len();
        let header = Header {
            length: u32::try_from(body_len + Header::LEN).unwrap_or(u32::MAX),
            version: PDU_VERSION,
            flag: 0,
            service_id: key.service_id,
            command_id: key.command_id,
            seq_num,
            reserved: 0,
        };
        dst.reserve(Header::LEN + body_len);
        header.encode(dst);
        msg.encode_raw(dst);
    }

    /// The whole PDU as one buffer.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.wire_len());
        self.encode(&mut out);
        out.freeze()
    }
}
