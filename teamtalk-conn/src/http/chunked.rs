//! Decoding `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1)
//! incrementally, within the body limit.

use bytes::{Buf, BytesMut};

/// Longest chunk-size line accepted, extensions included: they carry
/// nothing we use, and an endless one must not grow the buffer.
pub(super) const MAX_CHUNK_LINE: usize = 4096;

/// Trailer fields accepted (and discarded) after the last chunk.
const MAX_TRAILERS: usize = 32;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkError {
    /// Not valid chunked coding (400).
    Malformed,
    /// The decoded body would exceed the limit (413).
    TooLarge,
    /// The trailer section is longer than the head limit (431).
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// This many data bytes of the current chunk still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    /// The body is complete.
    Done,
}

/// An incremental chunked decoder. Decoded data is copied into its own
/// buffer; the receive buffer keeps only a partial line at most.
#[derive(Debug)]
pub(super) struct Chunked {
    state: State,
    body: BytesMut,
}

impl Chunked {
    pub(super) fn new() -> Self {
        Self {
            state: State::Size,
            body: BytesMut::new(),
        }
    }

    /// Consumes what it can of `rx`. `Ok(true)` once the whole body
    /// (trailers included) has been read; bytes after it stay in `rx`.
    pub(super) fn decode(
        &mut self,
        rx: &mut BytesMut,
        max_body: usize,
        max_trailers: usize,
    ) -> Result<bool, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::Size => {
                    let Some(&first) = rx.first() else {
                        return Ok(false);
                    };
                    // httparse reads an empty size as zero; RFC 9112 wants
                    // at least one hex digit.
                    if !first.is_ascii_hexdigit() {
                        return Err(ChunkError::Malformed);
                    }
                    match httparse::parse_chunk_size(rx) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            rx.advance(n);
                            if size == 0 {
                                self.state = State::Trailers;
                            } else {
                                let total = u64::try_from(self.body.len())
                                    .unwrap_or(u64::MAX)
                                    .saturating_add(size);
                                if total > u64::try_from(max_body).unwrap_or(u64::MAX) {
                                    return Err(ChunkError::TooLarge);
                                }
                                self.state = State::Data(size);
                            }
                        }
                        Ok(httparse::Status::Partial) if rx.len() <= MAX_CHUNK_LINE => {
                            return Ok(false);
                        }
                        Ok(httparse::Status::Partial) | Err(_) => {
                            return Err(ChunkError::Malformed);
                        }
                    }
                }
                State::Data(left) => {
                    if rx.is_empty() {
                        return Ok(false);
                    }
                    let take = usize::try_from(left).map_or(rx.len(), |l| l.min(rx.len()));
                    self.body.extend_from_slice(&rx[..take]);
                    rx.advance(take);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => match rx.get(..2) {
                    Some(b"\r\n") => {
                        rx.advance(2);
                        self.state = State::Size;
                    }
                    Some(_) => return Err(ChunkError::Malformed),
                    None if rx.first().is_none_or(|&b| b == b'\r') => return Ok(false),
                    None => return Err(ChunkError::Malformed),
                },
                State::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
                    match httparse::parse_headers(rx, &mut fields) {
                        Ok(httparse::Status::Complete((n, _))) => {
                            rx.advance(n);
                            self.state = State::Done;
                        }
                        Ok(httparse::Status::Partial) if rx.len() <= max_trailers => {
                            return Ok(false);
                        }
                        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                            return Err(ChunkError::TrailersTooLarge);
                        }
                        Err(_) => return Err(ChunkError::Malformed),
                    }
                }
            }
        }
    }

    /// The decoded body (call once `decode` returned `Ok(true)`).
    pub(super) fn take_body(&mut self) -> BytesMut {
        std::mem::take(&mut self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8], max: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut c = Chunked::new();
        let mut rx = BytesMut::from(wire);
        assert!(c.decode(&mut rx, max, 1024)?, "incomplete");
        Ok((c.take_body().to_vec(), rx.to_vec()))
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_and_leave_the_rest() {
        let wire =
            b"4;name=v\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, rest) = decode_all(wire, 100).unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(rest, b"NEXT");
        assert_eq!(decode_all(b"0\r\n\r\n", 0).unwrap().0, b"");
    }

    #[test]
    fn any_split_gives_the_same_body() {
        let wire = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        for split in 0..=wire.len() {
            let mut c = Chunked::new();
            let mut rx = BytesMut::from(&wire[..split]);
            let done = c.decode(&mut rx, 100, 1024).unwrap();
            assert_eq!(done, split == wire.len());
            rx.extend_from_slice(&wire[split..]);
            assert!(c.decode(&mut rx, 100, 1024).unwrap());
            assert_eq!(&c.take_body()[..], b"abc0123456789abcdef");
        }
    }

    #[test]
    fn limits_and_malformed_coding_are_refused() {
        assert_eq!(
            decode_all(b"b\r\nhello world\r\n0\r\n\r\n", 10),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(
            decode_all(b"fffffffffffffff\r\n", 10),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(
            decode_all(b"ffffffffffffffff0\r\n", 10),
            Err(ChunkError::Malformed)
        );
        assert_eq!(decode_all(b"\r\n", 10), Err(ChunkError::Malformed));
        assert_eq!(decode_all(b"zz\r\n", 10), Err(ChunkError::Malformed));
        assert_eq!(decode_all(b"2\r\nabX\r\n", 10), Err(ChunkError::Malformed));
        assert_eq!(decode_all(b"2\r\nab\rX", 10), Err(ChunkError::Malformed));
        assert_eq!(
            decode_all(b"0\r\nbad header\r\n\r\n", 10),
            Err(ChunkError::Malformed)
        );
        let mut c = Chunked::new();
        let mut endless = BytesMut::from(&b"1;"[..]);
        endless.extend_from_slice(&[b'x'; MAX_CHUNK_LINE]);
        assert_eq!(c.decode(&mut endless, 10, 1024), Err(ChunkError::Malformed));
        let mut c = Chunked::new();
        let mut trailers = BytesMut::from(&b"0\r\n"[..]);
        trailers.extend_from_slice(&b"X-T: 1\r\n".repeat(200));
        assert_eq!(
            c.decode(&mut trailers, 10, 1024),
            Err(ChunkError::TrailersTooLarge)
        );
    }
}
