//! Drivers for teamtalk-conn machines (documentation below is filled in
//! with the threading model).
#![forbid(unsafe_code)]

mod clock;
mod handle;
mod limits;
mod reactor;
pub mod socket;
mod stats;
mod timer_heap;
#[cfg(feature = "tokio")]
pub mod tokio;
mod txqueue;

pub use handle::{ConnId, Handle, NetError, NetEvent};
pub use limits::raise_fd_limit;
pub use reactor::{EventRx, Reactor, ReactorConfig};
pub use stats::{Stats, StatsSnapshot};
