//! The drivers' only clock.

use std::time::Instant;

/// Reads the monotonic clock.
///
/// Machines never read a clock (the workspace's clippy configuration
/// forbids `Instant::now`); drivers read it here, once per poll turn, and
/// pass the instant into every input.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}
