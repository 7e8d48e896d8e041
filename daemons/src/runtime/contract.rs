//! The daemon contract: what every App takes in and gives out.

use std::net::SocketAddr;
use std::num::NonZeroU8;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use teamtalk_conn::{CloseReason, HttpCloseReason};
use teamtalk_net::ConnId;
use teamtalk_proto::Pdu;

use crate::metrics::Scrape;

/// An HTTP request as Apps see it: head and whole body.
pub type Request = http::Request<bytes::Bytes>;
/// An HTTP response an App gives back.
pub type Response = http::Response<bytes::Bytes>;

/// The time an input happened, read once by the runner for a batch of
/// inputs: the only clock an App sees.
///
/// Apps never read a clock themselves, so every timing rule can be tested
/// by handing in whatever time the test wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub mono: Instant,
    /// Wall-clock time, for the timestamps TeamTalk puts on the wire.
    pub wall: SystemTime,
}

impl Now {
    /// `mono` and `wall` as given.
    #[must_use]
    pub const fn new(mono: Instant, wall: SystemTime) -> Self {
        Self { mono, wall }
    }

    /// Wall-clock seconds since the Unix epoch, as TeamTalk's `u32`
    /// timestamps (saturating in 2106).
    #[must_use]
    pub fn unix(&self) -> u32 {
        let secs = self
            .wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// The same instant moved forward by `d` (tests step time with it).
    #[must_use]
    pub fn plus(&self, d: Duration) -> Self {
        Self {
            mono: self.mono + d,
            wall: self.wall + d,
        }
    }
}

/// One connection a daemon accepted: a client session, a server peer or
/// an HTTP connection. Stable for the connection's life; never reused for
/// another (the reactor's id carries a generation).
///
/// `Debug` and `Display` print the same `side:shard.slot.generation`, so
/// every log line spells a connection one way whichever the App used.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conn {
    /// The side plus one: never zero, so an `Option<Conn>` (a presence
    /// slot, one pair per user online) takes no more room than a `Conn`.
    side: NonZeroU8,
    id: ConnId,
}

impl Conn {
    /// Connection `id` of reactor `side` (a daemon has a handful of
    /// sides; 254 and above share one number).
    pub(crate) const fn new(side: u8, id: ConnId) -> Self {
        let side = match NonZeroU8::new(side.saturating_add(1)) {
            Some(s) => s,
            None => NonZeroU8::MAX,
        };
        Self { side, id }
    }

    /// A connection id for App unit tests, which run without sockets.
    /// Distinct `n` give distinct ids.
    #[must_use]
    pub const fn test(n: u32) -> Self {
        Self {
            side: NonZeroU8::MAX,
            id: ConnId::from_parts(0, n, 0),
        }
    }

    pub(crate) const fn side(self) -> u8 {
        self.side.get() - 1
    }

    pub(crate) const fn id(self) -> ConnId {
        self.id
    }
}

impl std::fmt::Display for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.side(), self.id)
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Why an accepted connection ended, as its machine reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// A TeamTalk session (client or server peer).
    Pdu(CloseReason),
    /// An HTTP connection.
    Http(HttpCloseReason),
}

impl std::fmt::Display for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pdu(r) => r.fmt(f),
            Self::Http(r) => f.write_str(r.label()),
        }
    }
}

/// One of the outbound links a daemon's [`Plan`](super::Plan) declared, by
/// declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u16);

/// One of the listeners a daemon's [`Plan`](super::Plan) declared, by
/// declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u8);

/// Something that happened, for the App to decide about.
///
/// `C` is the connection id, as for [`Action`].
///
/// For one connection the order is: `Opened`, then its `LoginRequest`s,
/// `Pdu`s or `Http` requests, then exactly one `Closed`. For one link:
/// any number of `LinkUp` … `LinkDown` rounds with `LinkPdu`s between,
/// and `LinkUnreachable` for failed attempts.
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a, D, C = Conn> {
    /// A listener is bound, before any other input: where it really
    /// listens (the port chosen when the plan asked for port 0).
    Listening {
        /// Which listener.
        port: PortId,
        /// Its bound address.
        addr: SocketAddr,
    },
    /// About once a second: expire what has waited too long.
    Tick,
    /// A listener accepted a connection.
    Opened {
        /// The new connection.
        conn: C,
        /// Which listener.
        port: PortId,
        /// The remote address.
        peer: SocketAddr,
    },
    /// A client asks to log in (client ports only): answer with
    /// [`Action::Accept`] or [`Action::Refuse`].
    LoginRequest {
        /// The session.
        conn: C,
        /// The login request as received.
        pdu: &'a Pdu,
    },
    /// A PDU from a logged-in client or a server peer (heartbeats are
    /// handled by the session).
    Pdu {
        /// Who sent it.
        conn: C,
        /// The PDU.
        pdu: &'a Pdu,
    },
    /// An HTTP request (HTTP ports only): answer with
    /// [`Action::Respond`].
    Http {
        /// The connection.
        conn: C,
        /// The whole request, body included.
        request: &'a Request,
    },
    /// The connection is gone; its id will not be seen again.
    Closed {
        /// The connection.
        conn: C,
        /// Why, as far as the connection's machine knew.
        reason: CloseCause,
    },
    /// A link connected (and sent its greeting, if any).
    LinkUp(LinkId),
    /// A link that was up went down; it reconnects by itself.
    LinkDown(LinkId, CloseReason),
    /// A connect attempt failed; the link retries after its backoff.
    LinkUnreachable(LinkId, CloseReason),
    /// A PDU arrived on a link.
    LinkPdu(LinkId, &'a Pdu),
    /// A job the App handed to a worker is done.
    Done(D),
    /// The daemon is stopping: say goodbye to peers. Nothing is read after
    /// this, but jobs still finish and their answers are sent.
    Stopping,
}

/// What an App asks the runner to do, in order per connection.
///
/// `C` is the connection id: [`Conn`] under the runner; App unit tests
/// may use plain integers for Apps whose logic is generic over it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action<J, C = Conn> {
    /// Send a PDU on an accepted connection.
    Send(C, Pdu),
    /// Accept the session's pending login as this user, then send `reply`.
    Accept {
        /// The session.
        conn: C,
        /// The authenticated user.
        user_id: u32,
        /// TeamTalk client type.
        client_type: u32,
        /// The login reply.
        reply: Pdu,
    },
    /// Answer the session's pending login with `reply`, then close it.
    Refuse {
        /// The session.
        conn: C,
        /// The login reply with its refusal code.
        reply: Pdu,
    },
    /// Send `notice` if any, then close the connection.
    Close {
        /// The connection.
        conn: C,
        /// A last PDU (a kick notice, a logout reply).
        notice: Option<Pdu>,
    },
    /// Send a PDU on a link. Links that are down drop it (the App knows
    /// which links are up from `LinkUp`/`LinkDown`).
    Link(LinkId, Pdu),
    /// Lets a client session read this many more PDUs (client ports with
    /// a PDU credit, see [`Plan::client_credit`](super::Plan::client_credit)):
    /// how an App pays back each PDU it has dealt with, or holds back a
    /// client that has too much in flight.
    Grant(C, u32),
    /// Answer an HTTP request.
    Respond(C, Response),
    /// Hand a job to worker `worker` (index into the plan's workers). Jobs
    /// to one worker run in the order given.
    Job {
        /// Which worker.
        worker: usize,
        /// The work.
        job: J,
    },
}

impl<J: PartialEq, C: PartialEq> PartialEq for Action<J, C> {
    /// Responses compare by status, headers and body (`http::Response`
    /// has no equality of its own); for App tests.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Send(a, p), Self::Send(b, q)) => a == b && p == q,
            (
                Self::Accept {
                    conn: a,
                    user_id: u,
                    client_type: t,
                    reply: p,
                },
                Self::Accept {
                    conn: b,
                    user_id: v,
                    client_type: w,
                    reply: q,
                },
            ) => a == b && u == v && t == w && p == q,
            (Self::Refuse { conn: a, reply: p }, Self::Refuse { conn: b, reply: q }) => {
                a == b && p == q
            }
            (Self::Close { conn: a, notice: p }, Self::Close { conn: b, notice: q }) => {
                a == b && p == q
            }
            (Self::Link(a, p), Self::Link(b, q)) => a == b && p == q,
            (Self::Grant(a, n), Self::Grant(b, m)) => a == b && n == m,
            (Self::Respond(a, r), Self::Respond(b, s)) => {
                a == b
                    && r.status() == s.status()
                    && r.headers() == s.headers()
                    && r.body() == s.body()
            }
            (Self::Job { worker: a, job: j }, Self::Job { worker: b, job: k }) => a == b && j == k,
            _ => false,
        }
    }
}

/// Where an App puts its actions while handling one input.
#[derive(Debug)]
pub struct Out<J, C = Conn> {
    actions: Vec<Action<J, C>>,
}

impl<J, C> Default for Out<J, C> {
    fn default() -> Self {
        Self {
            actions: Vec::new(),
        }
    }
}

impl<J, C> Out<J, C> {
    /// Nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds any action.
    pub fn push(&mut self, action: Action<J, C>) {
        self.actions.push(action);
    }

    /// Sends a PDU on an accepted connection.
    pub fn send(&mut self, conn: C, pdu: Pdu) {
        self.actions.push(Action::Send(conn, pdu));
    }

    /// Sends a PDU on a link.
    pub fn link(&mut self, link: LinkId, pdu: Pdu) {
        self.actions.push(Action::Link(link, pdu));
    }

    /// Closes a connection after an optional last PDU.
    pub fn close(&mut self, conn: C, notice: Option<Pdu>) {
        self.actions.push(Action::Close { conn, notice });
    }

    /// Answers an HTTP request.
    pub fn respond(&mut self, conn: C, response: Response) {
        self.actions.push(Action::Respond(conn, response));
    }

    /// Hands a job to a worker.
    pub fn job(&mut self, worker: usize, job: J) {
        self.actions.push(Action::Job { worker, job });
    }

    /// The actions so far, in order.
    #[must_use]
    pub fn actions(&self) -> &[Action<J, C>] {
        &self.actions
    }

    /// Whether no action was asked for.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Number of actions so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Adds several actions, in order.
    pub fn extend(&mut self, actions: impl IntoIterator<Item = Action<J, C>>) {
        self.actions.extend(actions);
    }

    /// Takes the actions, leaving none.
    pub fn take(&mut self) -> Vec<Action<J, C>> {
        std::mem::take(&mut self.actions)
    }
}

/// A daemon's logic: a pure state machine over [`Input`]s.
///
/// An App never touches a socket, a thread or a clock: the runner reads
/// the clock and hands in [`Now`] with every input, and carries out the
/// [`Action`]s the App pushes. Everything that is a decision (which
/// upstream gets a PDU, who receives a relay, what is counted) is made
/// here, so it is unit-tested here with [`Conn::test`] ids and made-up
/// times.
///
/// Blocking work (a store transaction, a disk write, an outbound HTTP
/// call) is a [`Job`](App::Job) for one of the plan's workers; its result
/// comes back as [`Input::Done`].
pub trait App: Send + 'static {
    /// Work for the plan's workers.
    type Job: Send + 'static;
    /// What a worker hands back.
    type Done: Send + 'static;

    /// The daemon's name, for logs, thread names and metric labels
    /// (`msg_server`, `route_server`, …).
    fn name(&self) -> &'static str;

    /// Handles one input, pushing what to do onto `out`.
    fn handle(&mut self, now: Now, input: Input<'_, Self::Done>, out: &mut Out<Self::Job>);

    /// Adds the App's own metrics (the runner adds the transport's).
    fn collect(&self, scrape: &mut Scrape);

    /// Pushes one line per reason the daemon cannot do its job right now;
    /// none means healthy.
    fn health(&self, problems: &mut Vec<String>);
}

/// Blocking work done off the App's thread, one thread per worker.
///
/// A worker takes what is queued for it as one batch (at most the plan's
/// batch limit), so a store can commit many requests in one transaction.
pub trait Worker: Send + 'static {
    /// One unit of work.
    type Job: Send + 'static;
    /// Its result.
    type Done: Send + 'static;

    /// Runs a batch in order, pushing results onto `done` (any number per
    /// job: none for work that needs no answer).
    fn run(&mut self, jobs: Vec<Self::Job>, done: &mut Vec<Self::Done>);
}

/// The job type of Apps that hand out no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoJob {}

/// A worker for Apps without jobs: plans of such Apps declare none.
#[derive(Debug)]
pub struct NoWorker;

impl Worker for NoWorker {
    type Job = NoJob;
    type Done = NoJob;

    fn run(&mut self, jobs: Vec<NoJob>, _done: &mut Vec<NoJob>) {
        // An empty enum has no values: there is never a job to run.
        if let Some(job) = jobs.into_iter().next() {
            match job {}
        }
    }
}

#[cfg(test)]
mod conn_spelling {
    use super::*;

    #[test]
    fn debug_and_display_spell_a_connection_alike() {
        let c = Conn::new(1, ConnId::from_parts(0, 7, 2));
        assert_eq!(format!("{c:?}"), format!("{c}"));
        assert_eq!(format!("{c}"), "1:0.7.2");
        assert_eq!(Conn::new(0, ConnId::from_parts(0, 7, 2)).side(), 0);
        // The niche keeps a presence slot (`Option<Conn>`) the size of a
        // connection id.
        assert_eq!(
            std::mem::size_of::<Option<Conn>>(),
            std::mem::size_of::<Conn>()
        );
    }
}
