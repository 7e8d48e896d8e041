//! Byte buffers shared by every machine: the receive buffer with its
//! [`PduCodec`], the bounded transmit buffer, and the queue of outputs
//! waiting to be drained.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use teamtalk_proto::{FrameError, Pdu, PduCodec};

use crate::error::SendError;
use crate::machine::{Input, Output};

/// Receive and transmit buffers of one socket.
#[derive(Debug)]
pub(crate) struct Wire {
    rx: BytesMut,
    tx: BytesMut,
    codec: PduCodec,
    max_tx_bytes: usize,
    /// Bytes handed out with `Output::Transmit` that the driver says the
    /// socket has not accepted yet.
    backlog: usize,
}

impl Wire {
    pub(crate) fn new(max_frame_len: u32, max_tx_bytes: usize) -> Self {
        Self {
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            codec: PduCodec::new(max_frame_len),
            max_tx_bytes,
            backlog: 0,
        }
    }

    /// Forgets everything of the previous socket.
    pub(crate) fn reset(&mut self) {
        self.rx.clear();
        self.tx.clear();
        self.backlog = 0;
    }

    pub(crate) fn receive(&mut self, data: &[u8]) {
        self.rx.extend_from_slice(data);
    }

    pub(crate) fn next_pdu(&mut self) -> Result<Option<Pdu>, FrameError> {
        let next = self.codec.decode(&mut self.rx);
        if matches!(next, Ok(None)) && self.rx.is_empty() {
            // Let the allocation go with the last PDU split off it: an idle
            // connection keeps no receive buffer. Even with no capacity
            // left (the read ended exactly at a frame's end, as a lone
            // login or heartbeat does) an emptied buffer still holds its
            // share of the allocation, so it is dropped whatever its
            // capacity.
            self.rx = BytesMut::new();
        }
        next
    }

    /// Queues `pdu`, refusing it when it is over the frame limit or would
    /// push the unsent total over `max_tx_bytes`.
    pub(crate) fn queue(&mut self, pdu: &Pdu) -> Result<(), SendError> {
        let len = pdu.wire_len();
        let max = self.codec.max_len();
        if u32::try_from(len).map_or(true, |l| l > max) {
            return Err(SendError::TooLarge { len, max });
        }
        self.reserve(len)?;
        pdu.encode(&mut self.tx);
        Ok(())
    }

    /// Queues bytes already encoded (and checked against the frame limit).
    pub(crate) fn queue_encoded(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.reserve(bytes.len())?;
        self.tx.extend_from_slice(bytes);
        Ok(())
    }

    fn reserve(&self, len: usize) -> Result<(), SendError> {
        if self.unsent().saturating_add(len) > self.max_tx_bytes {
            return Err(SendError::BufferFull);
        }
        Ok(())
    }

    /// Bytes not yet accepted by the socket: ours plus the driver's.
    pub(crate) fn unsent(&self) -> usize {
        self.tx.len().saturating_add(self.backlog)
    }

    pub(crate) fn set_backlog(&mut self, bytes: usize) {
        self.backlog = bytes;
    }

    pub(crate) fn over_cap(&self) -> bool {
        self.unsent() > self.max_tx_bytes
    }

    pub(crate) fn max_frame_len(&self) -> u32 {
        self.codec.max_len()
    }

    /// Everything queued since the last call, as one buffer. The whole
    /// allocation goes with it (not just the filled part), so it is freed
    /// once the driver has written it and an idle connection keeps none.
    pub(crate) fn take_tx(&mut self) -> Option<Bytes> {
        (!self.tx.is_empty()).then(|| std::mem::take(&mut self.tx).freeze())
    }

    pub(crate) fn clear_tx(&mut self) {
        self.tx.clear();
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> (usize, usize) {
        (self.rx.len(), self.tx.len())
    }
}

/// Outputs waiting to be drained, in order. Transmit bytes that are not
/// followed by anything else stay in [`Wire`] so that consecutive sends
/// coalesce into one `Output::Transmit`.
///
/// The queue exists only while outputs wait (boxed, so an idle machine,
/// one of tens of thousands, carries one pointer for it).
#[derive(Debug)]
pub(crate) struct Outbox<E> {
    // Boxed on purpose: one pointer in the machine instead of the deque's
    // 32 bytes, allocated only while outputs wait.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Output<E>>>>,
    finished: bool,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Self {
            queue: None,
            finished: false,
        }
    }
}

impl<E> Outbox<E> {
    pub(crate) fn push(&mut self, out: Output<E>) {
        self.queue.get_or_insert_with(Box::default).push_back(out);
    }

    pub(crate) fn event(&mut self, event: E) {
        self.push(Output::Event(event));
    }

    /// Moves the bytes queued so far in front of the outputs pushed next
    /// (so that a reply goes out before the `Close` that follows it).
    pub(crate) fn flush(&mut self, wire: &mut Wire) {
        if let Some(bytes) = wire.take_tx() {
            self.push(Output::Transmit(bytes));
        }
    }

    /// After the queued outputs, the machine reports `Finished` forever.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// One step of a drain: queued outputs first, then pending transmit
    /// bytes, then `Finished` or the next deadline.
    pub(crate) fn poll(&mut self, wire: &mut Wire, next: impl FnOnce() -> Output<E>) -> Output<E> {
        if let Some(out) = self.queue.as_mut().and_then(|q| q.pop_front()) {
            return out;
        }
        // Drained: an idle connection keeps no output queue.
        self.queue = None;
        if self.finished {
            return Output::Finished;
        }
        if let Some(bytes) = wire.take_tx() {
            return Output::Transmit(bytes);
        }
        next()
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len())
    }
}

/// A short name for an input, for logs (without its bytes).
pub(crate) fn input_kind(input: &Input<'_>) -> &'static str {
    match input {
        Input::Timeout(_) => "timeout",
        Input::Connected(_) => "connected",
        Input::ConnectFailed(_) => "connect failed",
        Input::Received(..) => "received",
        Input::Closed(_) => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PDU split off the receive buffer is the allocation's only owner
    /// once the buffer has been drained, however the read ended.
    #[test]
    fn a_drained_receive_buffer_lets_its_allocation_go() {
        let pdu = Pdu::new(
            teamtalk_proto::CommandKey::new(7, 0x0301),
            3,
            Bytes::from_static(b"hello"),
        );
        let one = pdu.to_bytes();
        // The read ends exactly at the frame's end, or with room to spare.
        for spare in [0, 100] {
            let mut w = Wire::new(1 << 20, 1 << 20);
            w.rx.reserve(one.len() + spare);
            w.receive(&one);
            let got = w.next_pdu().expect("a frame").expect("a whole PDU");
            assert_eq!(got.body, pdu.body);
            assert!(!got.body.is_unique(), "still shared with the buffer");
            assert!(matches!(w.next_pdu(), Ok(None)));
            assert!(
                got.body.is_unique(),
                "spare {spare}: the buffer kept its share"
            );
            assert_eq!(w.rx.capacity(), 0);
        }
        // A partial frame stays buffered.
        let mut w = Wire::new(1 << 20, 1 << 20);
        w.receive(&one[..5]);
        assert!(matches!(w.next_pdu(), Ok(None)));
        assert_eq!(w.buffered().0, 5);
    }
}
