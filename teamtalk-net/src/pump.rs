//! Work that runs on a one-shard reactor's own thread, between two polls.
//!
//! An application normally sits on its own thread: the shard sends it
//! events over a channel and it sends commands back, each crossing a
//! thread boundary (a futex wake one way, an eventfd write the other, and
//! a context switch each). For an application that is one state machine
//! anyway, those hand-offs are most of the cost of a short exchange such
//! as a login. A [`Pump`] installed with [`Handle::set_pump`] runs on the
//! shard thread instead: after every round of socket I/O, commands and
//! timers, the shard calls it; it takes the events already queued
//! ([`Reactor::events`]), issues commands with [`Handle::exec`] (applied
//! right after it returns, without a wake-up), and says when it wants to
//! run again. Sources the shard does not watch (a worker's results, a
//! question from another thread) call [`Handle::wake`] after queueing.
//!
//! [`Handle::set_pump`]: crate::Handle::set_pump
//! [`Handle::exec`]: crate::Handle::exec
//! [`Handle::wake`]: crate::Handle::wake
//! [`Reactor::events`]: crate::Reactor::events

use std::time::Instant;

/// What a [`Pump`] wants after one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pumped {
    /// Nothing left to do now: call again on the next event, wake-up or
    /// command, and at the latest at this instant (`None`: no deadline).
    Idle(Option<Instant>),
    /// Work is left (a budget ran out): call again at once, after the
    /// shard has polled its sockets without waiting.
    More,
    /// Finished: the shard drops the pump and goes on without it.
    Done,
}

/// Work run on a one-shard reactor's thread after every round (see the
/// module docs). It must not block for long: while it runs, no socket of
/// the shard is served.
pub trait Pump: Send {
    /// Runs once, with the instant the shard read for this round.
    fn pump(&mut self, now: Instant) -> Pumped;
}

/// How many times in a row the shard calls a pump whose commands keep
/// producing events, before it polls its sockets again.
pub(crate) const PUMP_ROUNDS: usize = 4;
