//! The one machine type the runner's reactors drive: whichever
//! teamtalk-conn machine a connection needs.
//!
//! A daemon listens for clients, server peers and HTTP, and keeps links;
//! each is its own teamtalk-conn machine. Wrapping them in one enum lets
//! one reactor type (and one event loop) carry them all, while every
//! protocol rule stays in the machine it belongs to.

use teamtalk_conn::{
    CloseReason, HttpConn, HttpEvent, Input, Link, LinkEvent, Machine, Output, Session,
    SessionEvent, Tls, Ws,
};

/// A connection's machine.
// Sessions are nearly every connection a daemon holds, so theirs is the
// variant kept inline (boxing it would add an allocation per session and
// save nothing); the rare ones are boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Wire {
    /// An accepted TeamTalk connection: a client or a server peer.
    Session(Session),
    /// The same over TLS.
    TlsSession(Box<Tls<Session>>),
    /// A client session over WebSocket (a browser).
    WsSession(Box<Ws<Session>>),
    /// The same over TLS (wss).
    TlsWsSession(Box<Tls<Ws<Session>>>),
    /// An outbound server link (boxed, as is HTTP: a daemon has a few
    /// links and short-lived HTTP connections, and tens of thousands of
    /// sessions, each the size of the largest variant).
    Link(Box<Link>),
    /// The same over TLS.
    TlsLink(Box<Tls<Link>>),
    /// An accepted HTTP/1.1 connection.
    Http(Box<HttpConn>),
}

impl Wire {
    /// The session inside, plain or over TLS.
    pub(crate) fn session(&mut self) -> Option<&mut Session> {
        match self {
            Self::Session(s) => Some(s),
            Self::TlsSession(t) => Some(&mut **t),
            Self::WsSession(w) => Some(&mut **w),
            Self::TlsWsSession(t) => Some(&mut ***t),
            _ => None,
        }
    }

    /// The link inside, plain or over TLS.
    pub(crate) fn link(&mut self) -> Option<&mut Link> {
        match self {
            Self::Link(l) => Some(&mut **l),
            Self::TlsLink(t) => Some(&mut **t),
            _ => None,
        }
    }
}

/// An event of any of the machines.
#[derive(Debug)]
pub(crate) enum WireEvent {
    /// From a session.
    Session(SessionEvent),
    /// From a link.
    Link(LinkEvent),
    /// From an HTTP connection.
    Http(HttpEvent),
}

impl Machine for Wire {
    type Event = WireEvent;

    fn handle_input(&mut self, input: Input<'_>) {
        match self {
            Self::Session(m) => m.handle_input(input),
            Self::TlsSession(m) => m.handle_input(input),
            Self::WsSession(m) => m.handle_input(input),
            Self::TlsWsSession(m) => m.handle_input(input),
            Self::Link(m) => m.handle_input(input),
            Self::TlsLink(m) => m.handle_input(input),
            Self::Http(m) => m.handle_input(input),
        }
    }

    fn poll_output(&mut self) -> Output<WireEvent> {
        match self {
            Self::Session(m) => map(m.poll_output(), WireEvent::Session),
            Self::TlsSession(m) => map(m.poll_output(), WireEvent::Session),
            Self::WsSession(m) => map(m.poll_output(), WireEvent::Session),
            Self::TlsWsSession(m) => map(m.poll_output(), WireEvent::Session),
            Self::Link(m) => map(m.poll_output(), WireEvent::Link),
            Self::TlsLink(m) => map(m.poll_output(), WireEvent::Link),
            Self::Http(m) => map(m.poll_output(), WireEvent::Http),
        }
    }

    fn wants_read(&self) -> bool {
        match self {
            Self::Session(m) => m.wants_read(),
            Self::TlsSession(m) => m.wants_read(),
            Self::WsSession(m) => m.wants_read(),
            Self::TlsWsSession(m) => m.wants_read(),
            Self::Link(m) => m.wants_read(),
            Self::TlsLink(m) => m.wants_read(),
            Self::Http(m) => m.wants_read(),
        }
    }

    fn set_backlog(&mut self, now: std::time::Instant, bytes: usize) {
        match self {
            Self::Session(m) => m.set_backlog(now, bytes),
            Self::TlsSession(m) => m.set_backlog(now, bytes),
            Self::WsSession(m) => m.set_backlog(now, bytes),
            Self::TlsWsSession(m) => m.set_backlog(now, bytes),
            Self::Link(m) => m.set_backlog(now, bytes),
            Self::TlsLink(m) => m.set_backlog(now, bytes),
            Self::Http(m) => m.set_backlog(now, bytes),
        }
    }

    fn transport_failed(&mut self, now: std::time::Instant, reason: CloseReason) {
        match self {
            Self::Session(m) => m.transport_failed(now, reason),
            Self::TlsSession(m) => m.transport_failed(now, reason),
            Self::WsSession(m) => m.transport_failed(now, reason),
            Self::TlsWsSession(m) => m.transport_failed(now, reason),
            Self::Link(m) => m.transport_failed(now, reason),
            Self::TlsLink(m) => m.transport_failed(now, reason),
            Self::Http(m) => m.transport_failed(now, reason),
        }
    }
}

fn map<E>(out: Output<E>, f: impl FnOnce(E) -> WireEvent) -> Output<WireEvent> {
    match out {
        Output::Transmit(b) => Output::Transmit(b),
        Output::Connect(a) => Output::Connect(a),
        Output::Close => Output::Close,
        Output::Event(e) => Output::Event(f(e)),
        Output::Timeout(t) => Output::Timeout(t),
        Output::Finished => Output::Finished,
    }
}
