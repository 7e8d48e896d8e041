//! Socket setup with socket2: listeners and nonblocking outbound connects.
//!
//! Every socket the drivers use is created here, so the options a
//! TeamTalk server needs (address reuse, a deep accept backlog, no Nagle
//! delay on small PDUs, nonblocking mode) are set in one place.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Accept backlog used when the configuration does not say otherwise.
///
/// TeamTalk's C++ servers pass 64, which drops SYNs as soon as a few
/// hundred clients reconnect at once after a restart; the kernel caps the
/// value at `net.core.somaxconn` anyway.
pub const DEFAULT_BACKLOG: i32 = 4096;

/// Binds a nonblocking TCP listener with `SO_REUSEADDR` and the given
/// accept backlog.
///
/// `SO_REUSEADDR` lets a restarted daemon bind its port while connections
/// of the previous process linger in `TIME_WAIT`.
///
/// # Errors
///
/// Any error from creating, configuring, binding or listening on the socket.
pub fn bind_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Starts a nonblocking connect to `addr` and returns the socket at once.
///
/// The connect completes later: the socket becomes writable, and its
/// pending error (`SO_ERROR`) tells whether it succeeded. `TCP_NODELAY` is set
/// before connecting because TeamTalk traffic is many small PDUs that
/// must not wait for Nagle's algorithm.
///
/// # Errors
///
/// Errors the kernel reports synchronously (no route, no free port, ...).
pub fn start_connect(addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Whether a nonblocking connect is still under way rather than failed.
fn in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

/// What a socket that was connecting reports once it is writable (or has
/// an error pending).
#[derive(Debug)]
pub(crate) enum ConnectState {
    /// The connect succeeded.
    Connected,
    /// Not finished yet (a spurious wakeup).
    Pending,
    /// The connect failed.
    Failed(io::Error),
}

/// Checks a nonblocking connect, as mio documents: first the pending
/// socket error, then whether the socket has a peer.
pub(crate) fn connect_result(stream: &mio::net::TcpStream) -> ConnectState {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return ConnectState::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => ConnectState::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected || in_progress(&e) => {
            ConnectState::Pending
        }
        Err(e) => ConnectState::Failed(e),
    }
}

/// Disables Nagle's algorithm on an accepted stream; failures are only
/// logged because the connection works without it.
pub(crate) fn set_nodelay<S>(stream: &S)
where
    for<'a> SockRef<'a>: From<&'a S>,
{
    if let Err(e) = SockRef::from(stream).set_tcp_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY failed");
    }
}
