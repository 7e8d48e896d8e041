//! Step runners that drive the daemons' Apps with arbitrary sequences of
//! client and peer inputs while checking their invariants. Shared by the
//! property tests in this crate and by the cargo-fuzz targets in
//! `daemons/fuzz` (feature `fuzzing`), the way `teamtalk_conn::fuzzing`
//! serves teamtalk-conn's.
//!
//! Each runner takes raw bytes, reads steps from them with
//! [`arbitrary::Unstructured`], feeds them to the App as the runtime
//! would (honouring the runtime's contract: `Opened` before anything on a
//! connection, one `Closed`, PDUs from a client session only while its PDU
//! credit lasts, link PDUs only while the link is up) and panics on the
//! first broken invariant, which is what both proptest and libFuzzer
//! report:
//!
//! - [`run_msg_app`]: `msg::MsgApp` with client sessions, logins, client
//!   PDUs of every command, upstream links and their replies (echoing the
//!   `attach_data` of requests the App sent), route_server relays and
//!   ticks;
//! - [`run_route_app`]: `route::RouteApp` with msg_servers connecting,
//!   leaving, reporting presence and relaying, checked against a model;
//! - [`DbProxyFuzz`]: `db_proxy::DbProxy` over a SQLite store fed
//!   arbitrary requests, singly and in group-commit batches;
//! - [`run_login_app`]: `login::LoginApp` with msg_servers registering,
//!   legacy clients and HTTP requests.
//!
//! Well-formed bodies of any command come from [`Body`]: protobuf fields
//! chosen by the fuzzer, each kept only if the body still decodes as the
//! command's message, so the deep paths (known users, real message types,
//! lists of ids) are reached without a schema here.

mod body;
mod db_proxy;
mod login;
mod msg;
mod route;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

pub use body::{Body, Field, Leaf, Value, command};
pub use db_proxy::DbProxyFuzz;
pub use login::run_login_app;
pub use msg::run_msg_app;
pub use route::run_route_app;

/// Arbitrary bytes as a segment of the SQLite store's message log: read
/// without panicking, and every record read re-encodes to its own bytes
/// (what recovery after a crash relies on).
pub fn run_message_log(data: &[u8]) {
    crate::store::check_message_log_scan(data);
}

use crate::runtime::Now;

/// The time every runner starts at: a fixed wall clock (2023-11-14), so a
/// run reproduces, on a monotonic origin read once per process.
#[must_use]
pub fn start_time() -> Now {
    Now::new(
        mono_origin(),
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    )
}

fn mono_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(crate::clock::now)
}

/// A client address from a small pool (two addresses share a /64 and an
/// IPv4 address repeats), so per-source tables see repeats.
fn addr(n: u8) -> SocketAddr {
    match n % 4 {
        0 => SocketAddr::from(([192, 0, 2, 7], 40_000)),
        1 => SocketAddr::from(([198, 51, 100, 1], 40_001)),
        2 => "[2001:db8::1]:40002"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
        _ => "[2001:db8::2]:40003"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    }
}

/// A user id from the pool the runners share: mostly 1..=6 (ids the
/// fake db_proxy hands out and the seeded store holds), sometimes 0 or a
/// large id.
#[must_use]
pub fn user_id(n: u8) -> u32 {
    match n % 9 {
        7 => 0,
        8 => 0x7fff_fff0,
        k => u32::from(k) + 1,
    }
}

/// Picks one of `items` by `n`, `None` when there are none.
fn pick<T>(items: &[T], n: u8) -> Option<&T> {
    if items.is_empty() {
        None
    } else {
        items.get(usize::from(n) % items.len())
    }
}

/// Ends a run with a message naming the broken invariant and the steps so
/// far, so a crash report says what happened.
#[track_caller]
fn violated(what: impl std::fmt::Display, history: &[String]) -> ! {
    let tail = history.len().saturating_sub(40);
    panic!(
        "invariant broken: {what}\nlast steps:\n  {}",
        history[tail..].join("\n  ")
    );
}
