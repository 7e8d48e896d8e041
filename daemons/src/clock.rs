//! The daemons' only doors to the clocks.
//!
//! `clippy.toml` forbids `Instant::now` and `SystemTime::now` workspace-wide
//! so that the sans-IO core cannot read time by accident; the daemons are
//! drivers and need the real clock, and take it from here.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now.
#[allow(clippy::disallowed_methods)]
#[must_use]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock now.
#[allow(clippy::disallowed_methods)]
#[must_use]
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// Wall-clock seconds since the Unix epoch, as TeamTalk's `u32` timestamps.
#[allow(clippy::disallowed_methods)]
#[must_use]
pub fn unix_secs() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}
