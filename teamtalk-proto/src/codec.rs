//! [`PduCodec`]: splits a byte stream into PDUs.
//!
//! The contract is tokio-util's `Decoder`: [`PduCodec::decode`] returns
//! `Ok(None)` until a whole PDU is buffered, then splits it off the front
//! of the buffer without copying. The announced length is checked against
//! `16..=max_len` *before* the buffer is grown for the body, so a hostile
//! header cannot make us allocate.

use bytes::{Buf, BytesMut};

use crate::error::FrameError;
use crate::header::Header;
use crate::pdu::Pdu;

/// Default upper bound for one PDU: 1 MiB.
///
/// The largest PDU TeamTalk clients produce in practice is an all-users
/// directory reply (about 1 MB for 20,000 users); bodies above this limit
/// are refused rather than buffered.
pub const DEFAULT_MAX_PDU_LEN: u32 = 1 << 20;

/// Streaming PDU decoder and encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduCodec {
    max_len: u32,
}

impl Default for PduCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PDU_LEN)
    }
}

impl PduCodec {
    /// A codec refusing PDUs longer than `max_len` bytes (header included).
    /// Values below 16 are raised to 16.
    #[must_use]
    pub fn new(max_len: u32) -> Self {
        Self {
            max_len: max_len.max(Header::LEN as u32),
        }
    }

    /// The largest PDU length accepted.
    #[must_use]
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// Checks the header at the front of `src`, without consuming anything.
    ///
    /// Returns the whole PDU length once a header is buffered, `None`
    /// before.
    ///
    /// # Errors
    /// [`FrameError`] when the announced length is out of bounds.
    pub fn check(&self, src: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(head) = src.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head);
        if len < Header::LEN as u32 {
            return Err(FrameError::TooShort(len));
        }
        if len > self.max_len {
            return Err(FrameError::TooLong {
                len,
                max: self.max_len,
            });
        }
        Ok(Some(len as usize))
    }

    /// Splits the next whole PDU off the front of `src`.
    ///
    /// `Ok(None)` means more bytes are needed; `src` may then have been
    /// reserved up to the announced length (never beyond `max_len`).
    ///
    /// # Errors
    /// [`FrameError`] when the next header announces a length outside
    /// `16..=max_len`. The buffer is left as it was; the stream cannot be
    /// resynchronised and the connection should be closed.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, FrameError> {
        let Some(len) = self.check(src)? else {
            return Ok(None);
        };
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(len);
        let Some(raw) = frame.first_chunk::<{ Header::LEN }>() else {
            unreachable!("check() guarantees len >= Header::LEN");
        };
        let header = Header::decode(raw);
        frame.advance(Header::LEN);
        Ok(Some(Pdu {
            header,
            body: frame.freeze(),
        }))
    }

    /// Appends `pdu` to `dst`.
    ///
    /// # Errors
    /// [`FrameError::TooLong`] when the PDU exceeds this codec's limit,
    /// so that we never send what a peer with the same limit would refuse.
    pub fn encode(&self, pdu: &Pdu, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = u32::try_from(pdu.wire_len()).unwrap_or(u32::MAX);
        if len > self.max_len {
            return Err(FrameError::TooLong {
                len,
                max: self.max_len,
            });
        }
        dst.reserve(pdu.wire_len());
        pdu.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::header::CommandKey;

    const HEARTBEAT: CommandKey = CommandKey::new(7, 0x0701);

    #[test]
    fn waits_for_header_then_body() {
        let mut codec = PduCodec::default();
        let pdu = Pdu::new(HEARTBEAT, 3, Bytes::from_static(b"abc"));
        let wire = pdu.to_bytes();
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            assert_eq!(codec.decode(&mut buf).unwrap(), None, "early at {i}");
            buf.extend_from_slice(&[*b]);
        }
        let got = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, pdu);
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_short_length_without_consuming() {
        let mut codec = PduCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 15, 0, 1][..]);
        assert_eq!(codec.decode(&mut buf), Err(FrameError::TooShort(15)));
        assert_eq!(buf.len(), 6);
    }

    #[test]
    fn refuses_long_length_before_reserving() {
        let mut codec = PduCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let cap = buf.capacity();
        assert_eq!(
            codec.decode(&mut buf),
            Err(FrameError::TooLong {
                len: u32::MAX,
                max: 1024
            })
        );
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn encode_refuses_over_limit() {
        let codec = PduCodec::new(20);
        let pdu = Pdu::new(HEARTBEAT, 0, Bytes::from(vec![0u8; 5]));
        let mut out = BytesMut::new();
        assert!(codec.encode(&pdu, &mut out).is_err());
        assert!(out.is_empty());
    }
}
