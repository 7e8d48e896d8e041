//! The 16-byte PDU header.
//!
//! ```text
//!  0               4       6       8       10      12      14      16
//!  +---------------+-------+-------+-------+-------+-------+-------+------ - -
//!  | length (u32)  |version| flag  |service|command|  seq  |reserved| body …
//!  +---------------+-------+-------+-------+-------+-------+-------+------ - -
//! ```
//!
//! All fields are big-endian. `length` counts the whole PDU, header
//! included, so the smallest valid PDU is 16 bytes long.

use std::fmt;

use bytes::BufMut;

/// The protocol version every TeamTalk peer writes.
pub const PDU_VERSION: u16 = 1;

/// A (service id, command id) pair: what a PDU is.
///
/// TeamTalk's command ids carry the service id in their high byte, and the
/// C++ daemons dispatch on the command id alone; we keep the pair so that a
/// PDU whose two ids disagree is recognised as unknown instead of being
/// mistaken for another command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandKey {
    /// `SID_*` value.
    pub service_id: u16,
    /// `CID_*` value.
    pub command_id: u16,
}

impl CommandKey {
    /// Builds a key from its two ids.
    #[must_use]
    pub const fn new(service_id: u16, command_id: u16) -> Self {
        Self {
            service_id,
            command_id,
        }
    }
}

impl fmt::Display for CommandKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}/{:#06x}", self.service_id, self.command_id)
    }
}

/// The fixed 16-byte header in front of every PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Length of the whole PDU, header included.
    pub length: u32,
    /// Protocol version, [`PDU_VERSION`] on every known peer.
    pub version: u16,
    /// Unused by TeamTalk; always 0 on the wire.
    pub flag: u16,
    /// `SID_*` service id.
    pub service_id: u16,
    /// `CID_*` command id.
    pub command_id: u16,
    /// Sequence number; replies echo the request's.
    pub seq_num: u16,
    /// Unused by TeamTalk; always 0 on the wire.
    pub reserved: u16,
}

impl Header {
    /// Size of the header on the wire.
    pub const LEN: usize = 16;

    /// Reads a header from exactly 16 bytes. Infallible: limits on
    /// `length` are the codec's business.
    #[must_use]
    pub fn decode(src: &[u8; Self::LEN]) -> Self {
        let u16_at = |i: usize| u16::from_be_bytes([src[i], src[i + 1]]);
        Self {
            length: u32::from_be_bytes([src[0], src[1], src[2], src[3]]),
            version: u16_at(4),
            flag: u16_at(6),
            service_id: u16_at(8),
            command_id: u16_at(10),
            seq_num: u16_at(12),
            reserved: u16_at(14),
        }
    }

    /// Writes the header's 16 bytes.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u32(self.length);
        dst.put_u16(self.version);
        dst.put_u16(self.flag);
        dst.put_u16(self.service_id);
        dst.put_u16(self.command_id);
        dst.put_u16(self.seq_num);
        dst.put_u16(self.reserved);
    }

    /// The header as an array.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        self.encode(&mut &mut out[..]);
        out
    }

    /// The (service, command) pair.
    #[must_use]
    pub fn key(&self) -> CommandKey {
        CommandKey::new(self.service_id, self.command_id)
    }

    /// Body length implied by `length`, or `None` when `length < 16`.
    #[must_use]
    pub fn body_len(&self) -> Option<usize> {
        (self.length as usize).checked_sub(Self::LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_big_endian() {
        let h = Header {
            length: 0x0102_0304,
            version: 1,
            flag: 0x0506,
            service_id: 0x0007,
            command_id: 0x0701,
            seq_num: 0xfffe,
            reserved: 0x0a0b,
        };
        let bytes = h.to_bytes();
        assert_eq!(
            bytes,
            [1, 2, 3, 4, 0, 1, 5, 6, 0, 7, 7, 1, 0xff, 0xfe, 0x0a, 0x0b]
        );
        assert_eq!(Header::decode(&bytes), h);
    }

    #[test]
    fn body_len_refuses_short_lengths() {
        let mut h = Header::decode(&[0; 16]);
        h.length = 15;
        assert_eq!(h.body_len(), None);
        h.length = 16;
        assert_eq!(h.body_len(), Some(0));
    }
}
