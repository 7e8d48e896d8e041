//! A connection's queue of bytes the socket has not taken yet, shared by
//! both drivers.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};

/// Buffers handed to one vectored write.
const MAX_IOV: usize = 64;

/// Bytes from `Output::Transmit`, in order, not yet written.
///
/// Empty and allocation-free for idle connections, and one pointer wide
/// in every connection's slot: the queue is only allocated while the
/// socket is full, and given back once it drains.
#[derive(Debug, Default)]
pub(crate) struct TxQueue(Option<Box<Queued>>);

/// What a full socket has not taken yet (never empty).
#[derive(Debug, Default)]
struct Queued {
    bufs: VecDeque<Bytes>,
    len: usize,
}

impl TxQueue {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Drops everything queued (the socket is gone).
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Queues `bytes` without trying to write.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            let q = self.0.get_or_insert_with(Box::default);
            q.len += bytes.len();
            q.bufs.push_back(bytes);
        }
    }

    /// Writes `bytes` at once when nothing is queued before them, and
    /// queues what the socket did not take. Returns the bytes written.
    /// (The tokio driver's way; the mio reactor queues and flushes once
    /// per round.)
    #[cfg(any(feature = "tokio", test))]
    pub(crate) fn write_or_queue(
        &mut self,
        bytes: Bytes,
        mut write: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut written = 0;
        if self.is_empty() {
            while written < bytes.len() {
                match write(&bytes[written..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if written < bytes.len() {
            self.push(bytes.slice(written..));
        }
        Ok(written)
    }

    /// Writes queued bytes with vectored writes until the queue is empty
    /// or the socket full. Returns the bytes written.
    pub(crate) fn flush(
        &mut self,
        mut writev: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut total = 0;
        let Some(q) = &mut self.0 else {
            return Ok(0);
        };
        let result = loop {
            if q.bufs.is_empty() {
                break Ok(total);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (slot, b) in slices.iter_mut().zip(q.bufs.iter()) {
                *slot = IoSlice::new(b);
                count += 1;
            }
            match writev(&slices[..count]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    q.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if q.bufs.is_empty() {
            // Drained: an idle connection keeps no queue memory.
            self.0 = None;
        }
        result
    }
}

impl Queued {
    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.bufs.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.bufs.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_keep_order_and_count() {
        let mut q = TxQueue::default();
        // The socket takes 3 bytes, then is full.
        let mut budget = 3;
        let mut sink = Vec::new();
        let mut write = |b: &[u8]| {
            if budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(budget);
            budget -= n;
            sink.extend_from_slice(&b[..n]);
            Ok(n)
        };
        assert_eq!(
            q.write_or_queue(Bytes::from_static(b"hello"), &mut write)
                .unwrap(),
            3
        );
        // Queued bytes go first: this one is not written directly.
        assert_eq!(
            q.write_or_queue(Bytes::from_static(b"!!"), &mut write)
                .unwrap(),
            0
        );
        assert_eq!(q.len(), 4);
        let mut out = Vec::new();
        let flushed = q
            .flush(|slices| {
                let n = slices.iter().map(|s| s.len()).sum();
                for s in slices {
                    out.extend_from_slice(s);
                }
                Ok(n)
            })
            .unwrap();
        assert_eq!(flushed, 4);
        assert!(q.is_empty());
        assert!(q.0.is_none(), "a drained queue keeps no allocation");
        assert_eq!([sink, out].concat(), b"hello!!");
    }

    #[test]
    fn flush_stops_when_the_socket_is_full() {
        let mut q = TxQueue::default();
        q.push(Bytes::from_static(b"abcdef"));
        q.push(Bytes::from_static(b"gh"));
        let mut calls = 0;
        let n = q
            .flush(|_| {
                calls += 1;
                if calls == 1 {
                    Ok(7)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            })
            .unwrap();
        assert_eq!((n, q.len()), (7, 1));
        let mut rest = Vec::new();
        q.flush(|s| {
            rest.extend_from_slice(&s[0]);
            Ok(s[0].len())
        })
        .unwrap();
        assert_eq!(rest, b"h");
    }
}
