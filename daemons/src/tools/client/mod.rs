//! A blocking TeamTalk client for tests, scripts and `teamtalk chat`.
//!
//! All protocol behaviour (login with the md5hex of the password,
//! heartbeats, silence detection, seq correlation, reconnects) lives in
//! the sans-IO [`teamtalk_conn::Client`] machine; this module only drives
//! machines over `teamtalk-net`'s reactor and waits for their events, so a
//! caller can write `request` and get the reply. The HTTP assignment
//! (`GET /msg_server`, [`query_msg_server`]) is done here when the machine
//! asks for it.
//!
//! Each thread that uses clients gets one reactor (one shard thread),
//! shared by its clients and shut down when the last of them is dropped.
//! That is why a [`Client`] is not `Send`: its events arrive on its
//! thread's reactor.
//!
//! It uses nothing of our servers beyond the protocol, so the end-to-end
//! tests, `teamtalk chat` and `teamtalk bench` can point it at the C++
//! servers too.

mod assign;
pub mod text;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use teamtalk_conn::client::Credentials;
use teamtalk_conn::{ClientConfig, ClientEvent, CloseReason, SendError, StopReason};
use teamtalk_net::{ConnId, EventRx, Handle, NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::login::{ImKickUser, ImLoginRes};
use teamtalk_proto::{BodyError, Command, Message, Pdu};

pub use assign::{AssignError, Assigner, Assignment, query_msg_server};

use crate::clock;
use crate::tools::addr::ServerAddr;

/// The machine every client runs.
type Machine = teamtalk_conn::Client;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The reactor could not be started.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The connect failed or timed out.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The msg_server.
        addr: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
    /// The server sent a PDU whose body does not parse.
    #[error("bad body from server: {0}")]
    Body(#[from] BodyError),
    /// Nothing matching arrived in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    /// The connection is gone (closed by the server, lost, logged out or
    /// kicked).
    #[error("server closed the connection")]
    Closed,
    /// The server answered with something the protocol does not allow here.
    #[error("unexpected reply: {0}")]
    Unexpected(&'static str),
    /// The server refused the login.
    #[error("login refused: result code {code} ({text})")]
    LoginRefused {
        /// `ResultType` value.
        code: i32,
        /// `result_string`.
        text: String,
    },
    /// The machine refused to send (not logged in, too many requests, …).
    #[error("cannot send: {0}")]
    Send(#[from] SendError),
}

/// One reactor per thread, shared by that thread's clients.
struct Runtime {
    /// Kept for its drop: the last client of the thread stops the reactor.
    _reactor: Reactor<Machine>,
    handle: Handle<Machine>,
    events: EventRx<ClientEvent>,
    /// Events read while another client of this thread was waiting, by
    /// connection. Only registered (live) clients have an entry.
    inboxes: RefCell<HashMap<ConnId, VecDeque<ClientEvent>>>,
}

/// Events buffered for one client that is not reading before it is closed:
/// a server flooding a client nobody reads costs bounded memory.
const MAX_INBOX: usize = 100_000;
/// How long a command to the reactor may take to run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests sent with [`Client::send`] wait this long for a reply the
/// caller may look for with [`Client::wait_for`].
const SEND_TIMEOUT: Duration = Duration::from_secs(600);
/// Remembered ends of unanswered requests (bounded).
const MAX_UNANSWERED: usize = 4096;

thread_local! {
    static RUNTIME: RefCell<Weak<Runtime>> = const { RefCell::new(Weak::new()) };
}

impl Runtime {
    /// This thread's runtime, started if no client holds one.
    fn get() -> Result<Rc<Self>, ClientError> {
        RUNTIME.with(|slot| {
            if let Some(rt) = slot.borrow().upgrade() {
                return Ok(rt);
            }
            let reactor = Reactor::new(ReactorConfig {
                threads: 1,
                shutdown_grace: Duration::from_secs(1),
                close_linger: Duration::from_secs(1),
                ..ReactorConfig::default()
            })?;
            let rt = Rc::new(Self {
                handle: reactor.handle(),
                events: reactor.events(),
                _reactor: reactor,
                inboxes: RefCell::new(HashMap::new()),
            });
            *slot.borrow_mut() = Rc::downgrade(&rt);
            Ok(rt)
        })
    }

    /// The next event of connection `id`, waiting until `deadline`;
    /// `None` on timeout. Events of the thread's other clients are kept
    /// for them.
    fn next(
        &self,
        id: ConnId,
        deadline: Instant,
    ) -> Result<Option<NetEvent<ClientEvent>>, ClientError> {
        loop {
            if let Some(e) = self
                .inboxes
                .borrow_mut()
                .get_mut(&id)
                .and_then(VecDeque::pop_front)
            {
                return Ok(Some(NetEvent::Machine(e)));
            }
            match self.events.recv_deadline(deadline) {
                Ok((cid, ev)) if cid == id => return Ok(Some(ev)),
                Ok((cid, NetEvent::Machine(e))) => {
                    let mut inboxes = self.inboxes.borrow_mut();
                    if let Some(q) = inboxes.get_mut(&cid) {
                        q.push_back(e);
                        if q.len() > MAX_INBOX {
                            tracing::warn!(conn = %cid, "client not reading its events; closing it");
                            q.clear();
                            let _ = self.handle.exec(cid, Machine::close);
                        }
                    }
                }
                Ok(_) => {}
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Ok(None),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(ClientError::Closed);
                }
            }
        }
    }
}

/// How to start a [`Client`] with [`Client::start`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The machine's settings (credentials, timers, reconnects, …).
    pub config: ClientConfig,
    /// login_server's HTTP address, asked before each connect when
    /// `config.msg_server` is `None`.
    pub login_server: Option<ServerAddr>,
    /// Timeout of one assignment query.
    pub assign_timeout: Duration,
}

impl ClientOptions {
    /// Options for `config`, asking `login_server` for assignments.
    #[must_use]
    pub fn new(config: ClientConfig, login_server: Option<ServerAddr>) -> Self {
        Self {
            config,
            login_server,
            assign_timeout: Duration::from_secs(10),
        }
    }
}

/// A connection to a msg_server, driven by a [`teamtalk_conn::Client`]
/// machine. Not thread-safe and not `Send` (see the module docs).
pub struct Client {
    rt: Rc<Runtime>,
    id: ConnId,
    assigner: Option<Assigner>,
    /// The first loss ends the connection (no reconnects).
    one_shot: bool,
    user_id: Option<u32>,
    /// PDUs received and not taken yet, oldest first.
    backlog: VecDeque<Pdu>,
    /// Requests that ended without a reply (timed out or failed).
    unanswered: HashSet<u16>,
    /// The last login outcome not taken yet.
    login_outcome: Option<Result<Box<ImLoginRes>, ClientError>>,
    /// Set once the machine stopped.
    stopped: Option<StopReason>,
    /// The last loss, for errors.
    lost: Option<CloseReason>,
    /// The last failed assignment not taken yet.
    assign_error: Option<AssignError>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a TCP connection to a msg_server, without logging in (call
    /// [`Client::login`] next). The first loss of the connection ends it.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the connect fails or times out.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ClientError> {
        let mut cfg = ClientConfig::without_login().with_msg_server(addr);
        cfg.reconnect = false;
        cfg.connect_timeout = timeout;
        // Callers of this API ack deliveries themselves when they want to.
        cfg.ack_deliveries = false;
        cfg.max_pending = 4096;
        let mut c = Self::start(ClientOptions::new(cfg, None))?;
        let deadline = clock::now() + timeout + Duration::from_secs(1);
        loop {
            match c.event(deadline)? {
                Some(ClientEvent::Connected(_)) => return Ok(c),
                Some(ClientEvent::Disconnected(reason)) => {
                    return Err(ClientError::Connect { addr, reason });
                }
                Some(_) => {}
                None => {
                    return Err(ClientError::Connect {
                        addr,
                        reason: CloseReason::ConnectTimedOut,
                    });
                }
            }
        }
    }

    /// Starts a client machine with `opts` on this thread's reactor and
    /// returns at once; events then come through [`Client::event`],
    /// [`Client::recv`] and the waiting calls.
    ///
    /// # Errors
    /// [`ClientError::Io`] when the reactor cannot start.
    pub fn start(opts: ClientOptions) -> Result<Self, ClientError> {
        let rt = Runtime::get()?;
        let one_shot = !opts.config.reconnect;
        let machine = Machine::new(opts.config, clock::now());
        let id = rt.handle.open(machine).map_err(|e| match e {
            teamtalk_net::NetError::Io(e) => ClientError::Io(e),
            _ => ClientError::Closed,
        })?;
        rt.inboxes.borrow_mut().insert(id, VecDeque::new());
        Ok(Self {
            rt,
            id,
            assigner: opts
                .login_server
                .as_ref()
                .map(|l| Assigner::new(l, opts.assign_timeout)),
            one_shot,
            user_id: None,
            backlog: VecDeque::new(),
            unanswered: HashSet::new(),
            login_outcome: None,
            stopped: None,
            lost: None,
            assign_error: None,
        })
    }

    /// The user id the server assigned at login.
    #[must_use]
    pub fn user_id(&self) -> Option<u32> {
        self.user_id
    }

    /// Runs `f` on the machine (on the reactor thread) and returns its
    /// result.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Machine) -> R + Send + 'static,
    ) -> Result<R, ClientError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.rt
            .handle
            .exec(self.id, move |m| {
                let _ = tx.send(f(m));
            })
            .map_err(|_| ClientError::Closed)?;
        // A closure that never ran (the machine finished) drops `tx`.
        rx.recv_timeout(EXEC_TIMEOUT)
            .map_err(|_| ClientError::Closed)
    }

    /// The next event of this client, waiting until `deadline`; `None` on
    /// timeout. Assignment requests are answered here (an HTTP query to
    /// login_server), and the client's own bookkeeping (user id, backlog
    /// of PDUs for [`Client::recv`]) is updated before the event is
    /// returned.
    ///
    /// # Errors
    /// [`ClientError::Closed`] once the machine has finished and every
    /// event was taken.
    pub fn event(&mut self, deadline: Instant) -> Result<Option<ClientEvent>, ClientError> {
        loop {
            match self.rt.next(self.id, deadline)? {
                Some(NetEvent::Machine(e)) => {
                    self.note(&e);
                    return Ok(Some(e));
                }
                Some(NetEvent::Finished) => {
                    self.stopped.get_or_insert(StopReason::Closed);
                    return Err(ClientError::Closed);
                }
                Some(_) => {}
                None if self.stopped.is_some() => return Err(ClientError::Closed),
                None => return Ok(None),
            }
        }
    }

    /// Bookkeeping for one event.
    fn note(&mut self, e: &ClientEvent) {
        match e {
            ClientEvent::AssignmentNeeded => self.assign(),
            ClientEvent::LoggedIn(res) => {
                self.user_id = res.user_info.as_ref().map(|u| u.user_id);
                self.login_outcome = Some(Ok(res.clone()));
            }
            ClientEvent::LoginRefused { code, text, .. } => {
                self.login_outcome = Some(Err(ClientError::LoginRefused {
                    code: *code,
                    text: text.clone(),
                }));
            }
            ClientEvent::Push(pdu) | ClientEvent::Reply { pdu, .. } => {
                self.backlog.push_back(pdu.clone());
            }
            ClientEvent::Kicked { reason, .. } => {
                // Callers see the notice as the server sent it.
                let kick = ImKickUser {
                    user_id: self.user_id.unwrap_or(0),
                    kick_reason: *reason,
                };
                self.backlog.push_back(kick.to_pdu(0));
            }
            ClientEvent::RequestTimedOut { seq, .. } | ClientEvent::RequestFailed { seq, .. } => {
                if self.unanswered.len() >= MAX_UNANSWERED {
                    self.unanswered.clear();
                }
                self.unanswered.insert(*seq);
            }
            ClientEvent::Disconnected(reason) => self.lost = Some(*reason),
            ClientEvent::Stopped(why) => self.stopped = Some(why.clone()),
            _ => {}
        }
    }

    /// Answers the machine's assignment question over HTTP.
    fn assign(&mut self) {
        let now = clock::now;
        let Some(assigner) = &self.assigner else {
            let _ = self.rt.handle.exec(self.id, move |m| {
                m.assignment_failed(now(), "no login_server");
            });
            return;
        };
        match assigner.query().and_then(|a| a.addr()) {
            Ok(addr) => {
                let _ = self
                    .rt
                    .handle
                    .exec(self.id, move |m| m.assigned(now(), addr));
            }
            Err(e) => {
                tracing::debug!(error = %e, "assignment failed");
                let why = e.to_string();
                self.assign_error = Some(e);
                let _ = self
                    .rt
                    .handle
                    .exec(self.id, move |m| m.assignment_failed(now(), &why));
            }
        }
    }

    /// Processes events until `done` says so or `deadline` passes.
    /// `Ok(false)` on timeout.
    fn pump_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Result<bool, ClientError> {
        loop {
            if done(self) {
                return Ok(true);
            }
            if self.ended() {
                return Err(ClientError::Closed);
            }
            if self.event(deadline)?.is_none() {
                return Ok(done(self));
            }
        }
    }

    /// Whether the connection is over for good as far as callers waiting
    /// for PDUs are concerned.
    fn ended(&self) -> bool {
        self.stopped.is_some() || (self.one_shot && self.lost.is_some())
    }

    /// Logs in with a plaintext password, sent as its md5hex like TeamTalk
    /// clients do, and waits for the answer.
    ///
    /// # Errors
    /// [`ClientError::LoginRefused`] with the server's result code,
    /// [`ClientError::Timeout`], [`ClientError::Closed`].
    pub fn login(
        &mut self,
        user_name: &str,
        password: &str,
        client_type: ClientType,
        timeout: Duration,
    ) -> Result<ImLoginRes, ClientError> {
        let creds = Credentials::new(user_name, password, client_type);
        self.call(move |m| m.login(clock::now(), creds))?;
        self.wait_logged_in(timeout)
    }

    /// Waits for the next login outcome (after [`Client::start`] with
    /// credentials, or a reconnect).
    ///
    /// # Errors
    /// As [`Client::login`].
    pub fn wait_logged_in(&mut self, timeout: Duration) -> Result<ImLoginRes, ClientError> {
        let deadline = clock::now() + timeout;
        let got = self.pump_until(deadline, |c| c.login_outcome.is_some());
        if let Some(outcome) = self.login_outcome.take() {
            return outcome.map(|res| *res);
        }
        match got {
            Ok(_) => Err(ClientError::Timeout(timeout, "login answer")),
            Err(e) => Err(e),
        }
    }

    /// Sends a typed message as a request under a fresh seq, returning the
    /// seq; its reply (if any) comes through [`Client::recv`] and
    /// [`Client::wait_for`] like any PDU.
    ///
    /// # Errors
    /// [`ClientError::Send`] or [`ClientError::Closed`].
    pub fn send(
        &mut self,
        command: Command,
        msg: &impl prost::Message,
    ) -> Result<u16, ClientError> {
        let pdu = command.pdu(0, msg);
        Ok(self.call(move |m| m.request_with_timeout(clock::now(), &pdu, SEND_TIMEOUT))??)
    }

    /// Sends a PDU as it is (its own seq; nothing awaited).
    ///
    /// # Errors
    /// [`ClientError::Send`] or [`ClientError::Closed`].
    pub fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), ClientError> {
        let pdu = pdu.clone();
        Ok(self.call(move |m| m.send(clock::now(), &pdu))??)
    }

    /// The next PDU, from the backlog first, waiting at most `timeout`.
    /// `Ok(None)` on timeout.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the connection is over and every PDU
    /// was taken.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Pdu>, ClientError> {
        let deadline = clock::now() + timeout;
        match self.pump_until(deadline, |c| !c.backlog.is_empty()) {
            Ok(_) | Err(ClientError::Closed) if !self.backlog.is_empty() => {
                Ok(self.backlog.pop_front())
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for the first PDU matching `pred`, keeping the others in the
    /// backlog for later [`recv`](Self::recv) calls.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when nothing matches in time,
    /// [`ClientError::Closed`] when the connection ends first.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &'static str,
        mut pred: impl FnMut(&Pdu) -> bool,
    ) -> Result<Pdu, ClientError> {
        let deadline = clock::now() + timeout;
        let mut found = None;
        let mut seen = 0;
        let done = self.pump_until(deadline, |c| {
            if let Some(i) = c.backlog.iter().skip(seen).position(&mut pred) {
                found = c.backlog.remove(seen + i);
                return true;
            }
            seen = c.backlog.len();
            false
        });
        match (found, done) {
            (Some(p), _) => Ok(p),
            (None, Ok(_)) => Err(ClientError::Timeout(timeout, what)),
            (None, Err(e)) => Err(e),
        }
    }

    /// Waits for the next PDU of `command`.
    ///
    /// # Errors
    /// As [`wait_for`](Self::wait_for), plus a body that does not parse.
    pub fn wait_command(
        &mut self,
        command: Command,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        let pdu = self.wait_for(timeout, command.name(), |p| p.is(command.key()))?;
        Ok(Message::decode(&pdu)?)
    }

    /// Sends a request and waits for the reply of `reply` with the same seq.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when no reply came in time (the machine's
    /// request deadline), [`ClientError::Closed`] when the connection
    /// ended first, and the errors of [`Client::send`].
    pub fn request(
        &mut self,
        command: Command,
        msg: &impl prost::Message,
        reply: Command,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        let pdu = command.pdu(0, msg);
        let seq = self.call(move |m| m.request_with_timeout(clock::now(), &pdu, timeout))??;
        // The machine times the request out; the margin only guards
        // against a reactor that stopped answering.
        let deadline = clock::now() + timeout + Duration::from_secs(1);
        let key = reply.key();
        let mut found = None;
        let done = self.pump_until(deadline, |c| {
            if let Some(i) = c.backlog.iter().position(|p| p.is(key) && p.seq() == seq) {
                found = c.backlog.remove(i);
                return true;
            }
            c.unanswered.remove(&seq)
        });
        match (found, done) {
            (Some(p), _) => Ok(Message::decode(&p)?),
            (None, Ok(true)) if self.ended() => Err(ClientError::Closed),
            (None, Ok(_)) => Err(ClientError::Timeout(timeout, reply.name())),
            (None, Err(e)) => Err(e),
        }
    }

    /// Logs out and waits (at most the machine's logout timeout) for the
    /// answer and the server's close. Returns whether the logout was
    /// clean: answered, and the connection closed by the server.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the reactor is gone.
    pub fn logout(&mut self) -> Result<bool, ClientError> {
        if self.stopped.is_none() {
            self.call(|m| m.logout(clock::now()))?;
        }
        let deadline = clock::now() + Duration::from_secs(30);
        let _ = self.pump_until(deadline, |c| c.stopped.is_some());
        Ok(matches!(
            self.stopped,
            Some(StopReason::LoggedOut { clean: true })
        ))
    }

    /// The last failed assignment query, if any, since the last call.
    pub fn take_assign_error(&mut self) -> Option<AssignError> {
        self.assign_error.take()
    }

    /// A PDU already received, without waiting.
    pub fn try_recv(&mut self) -> Option<Pdu> {
        self.backlog.pop_front()
    }

    /// Why the connection ended, once it has.
    #[must_use]
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stopped.as_ref()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.rt.inboxes.borrow_mut().remove(&self.id);
        if self.stopped.is_none() {
            let _ = self.rt.handle.exec(self.id, Machine::close);
        }
        // The last client of the thread drops the runtime: its reactor
        // flushes what was queued (bounded) and stops.
    }
}
