//! `attach_data` (field 20): how servers correlate asynchronous replies.
//!
//! A server that forwards a request (msg_server to db_proxy or
//! route_server) puts a small record in the request's `attach_data`, and
//! the answering server echoes it unchanged. TeamTalk uses two layouts, all
//! integers big-endian `u32`:
//!
//! ```text
//! handle only (12 bytes):  kind | handle | service_type
//! with a body (16+N):      kind | handle | service_type | len | len bytes of a protobuf body
//! ```
//!
//! The C++ msg_server puts a socket handle in `handle`; handles are reused,
//! so a late reply can reach the wrong connection. Our daemons put a
//! request id there instead (see `docs/protocol.md`), and only need this
//! module to stay readable by, and to read, the C++ servers.

use bytes::{BufMut, Bytes, BytesMut};

/// What an attach record carries, as TeamTalk numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttachKind {
    /// 1: a connection handle only.
    Handle,
    /// 2: a body only.
    Pdu,
    /// 3: a handle and a body (group fan-out carries the stored message).
    HandleAndPdu,
    /// 4: a body for the push path (handle 0).
    PduForPush,
    /// 5: a handle and a body for the file-transfer path.
    HandleAndPduForFile,
    /// Any other value, kept so a record round-trips.
    Other(u32),
}

impl AttachKind {
    /// The wire value.
    #[must_use]
    pub fn to_u32(self) -> u32 {
        match self {
            Self::Handle => 1,
            Self::Pdu => 2,
            Self::HandleAndPdu => 3,
            Self::PduForPush => 4,
            Self::HandleAndPduForFile => 5,
            Self::Other(v) => v,
        }
    }

    /// From the wire value.
    #[must_use]
    pub fn from_u32(v: u32) -> Self {
        match v {
            1 => Self::Handle,
            2 => Self::Pdu,
            3 => Self::HandleAndPdu,
            4 => Self::PduForPush,
            5 => Self::HandleAndPduForFile,
            other => Self::Other(other),
        }
    }
}

/// One decoded attach record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    /// What the record carries.
    pub kind: AttachKind,
    /// Connection handle (C++) or request id (ours).
    pub handle: u32,
    /// Always 0 in TeamTalk's own traffic.
    pub service_type: u32,
    /// The embedded protobuf body, for the 16+N layout. `None` means the
    /// 12-byte layout; `Some(empty)` is the 16-byte layout with length 0.
    pub body: Option<Bytes>,
}

/// An `attach_data` value that matches neither layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Fewer than 12 bytes.
    #[error("attach_data is {0} bytes, shorter than the 12-byte record")]
    TooShort(usize),
    /// The embedded length disagrees with the bytes present.
    #[error("attach_data announces a {announced}-byte body but carries {present}")]
    BadLength {
        /// Length field.
        announced: u32,
        /// Bytes after the length field.
        present: usize,
    },
}

impl Attach {
    /// A 12-byte handle record, as msg_server attaches to db_proxy requests.
    #[must_use]
    pub fn handle(handle: u32) -> Self {
        Self {
            kind: AttachKind::Handle,
            handle,
            service_type: 0,
            body: None,
        }
    }

    /// A record with an embedded body.
    #[must_use]
    pub fn with_body(kind: AttachKind, handle: u32, body: Bytes) -> Self {
        Self {
            kind,
            handle,
            service_type: 0,
            body: Some(body),
        }
    }

    /// Serializes the record.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let extra = self.body.as_ref().map_or(0, |b| 4 + b.len());
        let mut out = BytesMut::with_capacity(12 + extra);
        out.put_u32(self.kind.to_u32());
        out.put_u32(self.handle);
        out.put_u32(self.service_type);
        if let Some(body) = &self.body {
            out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
            out.put_slice(body);
        }
        out.freeze()
    }

    /// Parses a record, zero-copy for the embedded body.
    ///
    /// # Errors
    /// [`AttachError`] when the bytes match neither layout.
    pub fn decode(raw: &Bytes) -> Result<Self, AttachError> {
        let word = |i: usize| u32::from_be_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        if raw.len() < 12 {
            return Err(AttachError::TooShort(raw.len()));
        }
        let (kind, handle, service_type) = (AttachKind::from_u32(word(0)), word(4), word(8));
        let body = if raw.len() == 12 {
            None
        } else {
            let present = raw.len().saturating_sub(16);
            if raw.len() < 16 {
                return Err(AttachError::BadLength {
                    announced: 0,
                    present,
                });
            }
            let announced = word(12);
            if announced as usize != present {
                return Err(AttachError::BadLength { announced, present });
            }
            Some(raw.slice(16..))
        };
        Ok(Self {
            kind,
            handle,
            service_type,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_record_is_twelve_bytes() {
        let a = Attach::handle(0x0102_0304);
        let raw = a.encode();
        assert_eq!(&raw[..], &[0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(Attach::decode(&raw).unwrap(), a);
    }

    #[test]
    fn body_record_round_trips_and_checks_length() {
        let a = Attach::with_body(AttachKind::PduForPush, 0, Bytes::from_static(b"\x08\x01"));
        let raw = a.encode();
        assert_eq!(raw.len(), 18);
        assert_eq!(Attach::decode(&raw).unwrap(), a);
        let mut bad = raw.to_vec();
        bad[15] = 9;
        assert_eq!(
            Attach::decode(&Bytes::from(bad)),
            Err(AttachError::BadLength {
                announced: 9,
                present: 2
            })
        );
        assert_eq!(
            Attach::decode(&Bytes::from_static(&[0; 5])),
            Err(AttachError::TooShort(5))
        );
        let empty = Attach::with_body(AttachKind::Handle, 7, Bytes::new());
        assert_eq!(empty.encode().len(), 16);
        assert_eq!(Attach::decode(&empty.encode()).unwrap(), empty);
    }
}
