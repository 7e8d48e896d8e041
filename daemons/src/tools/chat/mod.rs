//! `teamtalk chat`: a terminal TeamTalk client.
//!
//! It behaves like the real clients because it is driven by the same
//! [`teamtalk_conn::Client`] machine as every tool here: it asks
//! login_server's HTTP port which msg_server to use, logs in over TCP with
//! the md5hex of the password, sends heartbeats, acknowledges deliveries,
//! and when the connection drops it goes back through login_server and
//! logs in again after a backoff. It uses nothing of our servers beyond the
//! protocol, so it works against the C++ ones too. Addresses may be host
//! names (`--login localhost:8080` or `--login http://host:8080`).
//!
//! Scripted use runs the given steps in order and exits:
//! `teamtalk chat --user alice --password pw --send bob "hi" --receive 1`.
//! Without steps it is interactive: incoming messages print as they arrive
//! and lines typed are commands (`/help`). On a terminal, lines are edited
//! with rustyline (history with the arrow keys, Ctrl-R) and incoming lines
//! print above the prompt instead of into what is being typed. Unread
//! messages are listed at login and after each reconnect. A request that
//! fails (a user not found, a reply that does not come, a message to
//! oneself) prints why; only Ctrl-D, `/logout`, a kick or a refused login
//! end the session.
//!
//! Users are named by login name or nick (any case) or by id, so it also
//! works against a backend that serves no directory.
//!
//! Text goes out encoded the way TeamTalk's own clients encode it
//! ([`crate::tools::client::text`]), so they can read it; `--plain` sends raw
//! UTF-8 instead. Incoming bodies are shown decoded when they are in that
//! form and as they are otherwise.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, TryRecvError};
use rustyline::ExternalPrinter;
use teamtalk_conn::client::Credentials;
use teamtalk_conn::{ClientConfig, ClientEvent, StopReason};
use teamtalk_proto::pb::im::base_define::{ClientType, SessionType, UserInfo, UserStatType};
use teamtalk_proto::pb::im::buddy::{ImAllUserReq, ImUsersStatReq};
use teamtalk_proto::pb::im::message::{
    ImGetMsgListReq, ImMsgData, ImMsgDataReadAck, ImUnreadMsgCntReq,
};
use teamtalk_proto::{Command, Message, Pdu};

use crate::clock;
use crate::tools::addr::{AddrError, ServerAddr};
use crate::tools::client::{AssignError, Client, ClientError, ClientOptions, text};

/// How long a request may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect attempts in a row before giving up.
const RECONNECT_ATTEMPTS: u32 = 8;

/// Arguments of `teamtalk chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// login_server's HTTP address: `host:port` or `http://host:port`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub login: ServerAddr,
    /// Connect to this msg_server (`host:port`) directly instead of asking
    /// login_server.
    #[arg(long)]
    pub msg_server: Option<ServerAddr>,
    /// User name.
    #[arg(long)]
    pub user: String,
    /// Password in plain text (sent as its md5hex, like TeamTalk clients).
    #[arg(long)]
    pub password: String,
    /// Client type to present: windows, mac, ios or android.
    #[arg(long, default_value = "windows", value_parser = parse_client_type)]
    pub client_type: ClientType,
    /// Send a message: `--send USER TEXT` (repeatable; scripted mode).
    #[arg(long, num_args = 2, value_names = ["USER", "TEXT"])]
    pub send: Vec<String>,
    /// Wait for this many incoming messages, print them, then continue.
    #[arg(long)]
    pub receive: Option<u32>,
    /// Print the history with a user (scripted mode).
    #[arg(long)]
    pub history: Option<String>,
    /// Print unread counts (scripted mode).
    #[arg(long)]
    pub unread: bool,
    /// Print who is online (scripted mode).
    #[arg(long)]
    pub online: bool,
    /// Send text as raw UTF-8 instead of TeamTalk's client encoding.
    #[arg(long)]
    pub plain: bool,
    /// How long `--receive` waits, in seconds.
    #[arg(long, default_value_t = 30)]
    pub wait_secs: u64,
    /// Print when users come online or go offline (off by default: a load
    /// test's users would flood the screen; `/presence on` in a session).
    #[arg(long)]
    pub presence: bool,
}

fn parse_client_type(s: &str) -> Result<ClientType, String> {
    match s.to_ascii_lowercase().as_str() {
        "windows" | "pc" => Ok(ClientType::Windows),
        "mac" => Ok(ClientType::Mac),
        "ios" => Ok(ClientType::Ios),
        "android" => Ok(ClientType::Android),
        other => Err(format!(
            "unknown client type {other:?} (windows, mac, ios, android)"
        )),
    }
}

/// What can go wrong in a chat.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// login_server refused or was unreachable.
    #[error(transparent)]
    Assign(#[from] AssignError),
    /// An address did not resolve.
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// The msg_server refused or the connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A user name that is not in the directory.
    #[error("no user named {0:?} in the directory (a user id works too)")]
    NoSuchUser(String),
    /// A message to oneself: TeamTalk servers drop it without an answer.
    #[error("you cannot send messages to yourself")]
    ToSelf,
    /// An empty message: TeamTalk clients never send one.
    #[error("empty message not sent")]
    EmptyMessage,
    /// `--receive` did not get its messages in time.
    #[error("received {got} of {want} messages within {secs} s")]
    NotReceived {
        /// Messages received.
        got: u32,
        /// Messages wanted.
        want: u32,
        /// Time waited.
        secs: u64,
    },
    /// The first connection to the msg_server failed.
    #[error("cannot reach the msg_server: {0}")]
    Unreachable(teamtalk_conn::CloseReason),
    /// The connection could not be brought back.
    #[error("connection lost; gave up after {0} reconnect attempts")]
    GaveUp(u32),
    /// The client stopped (kicked, or the login refused after a reconnect).
    #[error("stopped: {0}")]
    Stopped(String),
    /// The terminal.
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
}

/// A logged-in chat: the connection plus the directory.
struct Chat {
    args: ChatArgs,
    client: Client,
    me: u32,
    users: HashMap<u32, UserInfo>,
    /// Whether presence changes are printed.
    presence: bool,
}

impl Chat {
    /// Starts the client machine and waits for the first login. Until it
    /// succeeds a failure is final, as a user typing a wrong address or
    /// password wants to hear at once.
    fn connect(args: &ChatArgs) -> Result<Self, ChatError> {
        let creds = Credentials::new(&args.user, &args.password, args.client_type);
        let mut cfg = ClientConfig::new(creds);
        cfg.request_timeout = REPLY_TIMEOUT;
        cfg.msg_server = args
            .msg_server
            .as_ref()
            .map(ServerAddr::resolve)
            .transpose()?;
        let mut opts = ClientOptions::new(cfg, Some(args.login.clone()));
        opts.assign_timeout = REPLY_TIMEOUT;
        let mut client = Client::start(opts)?;
        let deadline = clock::now() + REPLY_TIMEOUT * 2;
        let me = loop {
            match client.event(deadline)? {
                Some(ClientEvent::LoggedIn(res)) => break res.user_info.map_or(0, |u| u.user_id),
                Some(ClientEvent::LoginRefused { code, text, .. }) => {
                    return Err(ClientError::LoginRefused { code, text }.into());
                }
                Some(ClientEvent::Disconnected(reason)) => {
                    return Err(ChatError::Unreachable(reason));
                }
                Some(ClientEvent::Reconnecting { .. }) => {
                    if let Some(e) = client.take_assign_error() {
                        return Err(e.into());
                    }
                }
                Some(_) => {}
                None => return Err(ClientError::Timeout(REPLY_TIMEOUT * 2, "login").into()),
            }
        };
        let mut chat = Self {
            args: args.clone(),
            client,
            me,
            users: HashMap::new(),
            presence: args.presence,
        };
        chat.load_directory()?;
        Ok(chat)
    }

    /// Loads the directory. A backend that does not answer for it (not
    /// every TeamTalk-protocol server has one) leaves it empty: users are
    /// then named by id.
    fn load_directory(&mut self) -> Result<(), ChatError> {
        match self.fetch_directory() {
            Ok(()) => Ok(()),
            Err(ChatError::Client(ClientError::Timeout(..) | ClientError::Unexpected(_))) => {
                tracing::warn!("no directory from the server; name users by id");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn fetch_directory(&mut self) -> Result<(), ChatError> {
        let req = ImAllUserReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None,
        };
        if let Message::BuddyListAllUserResponse(rsp) = self.client.request(
            Command::BuddyListAllUserRequest,
            &req,
            Command::BuddyListAllUserResponse,
            REPLY_TIMEOUT,
        )? {
            self.users = rsp.user_list.into_iter().map(|u| (u.user_id, u)).collect();
        }
        Ok(())
    }

    /// A user id from a login name or a nick (exact first, then in any
    /// case), or a number.
    fn resolve(&self, who: &str) -> Result<u32, ChatError> {
        let who = who.trim_start_matches('@');
        let exact = |u: &&UserInfo| u.user_real_name == who || u.user_nick_name == who;
        let lower = who.to_lowercase();
        let any_case = |u: &&UserInfo| {
            u.user_real_name.to_lowercase() == lower || u.user_nick_name.to_lowercase() == lower
        };
        // A name made of digits is a name before it is an id.
        if let Some(u) = self.users.values().find(exact) {
            return Ok(u.user_id);
        }
        if let Ok(id) = who.parse() {
            return Ok(id);
        }
        let mut found = self.users.values().filter(any_case);
        match (found.next(), found.next()) {
            (Some(u), None) => Ok(u.user_id),
            _ => Err(ChatError::NoSuchUser(who.to_owned())),
        }
    }

    fn name(&self, id: u32) -> String {
        self.users
            .get(&id)
            .map_or_else(|| format!("#{id}"), |u| u.user_real_name.clone())
    }

    fn send(&mut self, who: &str, text: &str, out: &mut dyn Write) -> Result<(), ChatError> {
        let to = self.resolve(who)?;
        if to == self.me {
            return Err(ChatError::ToSelf);
        }
        if text.trim().is_empty() {
            return Err(ChatError::EmptyMessage);
        }
        let msg = ImMsgData {
            from_user_id: self.me,
            to_session_id: to,
            msg_id: 0,
            create_time: clock::unix_secs(),
            msg_type: 1,
            msg_data: if self.args.plain {
                Bytes::copy_from_slice(text.as_bytes())
            } else {
                Bytes::from(text::encode(text, text::DEFAULT_KEY))
            },
            attach_data: None,
            dedupe_key: None,
            duplicate: None,
        };
        match self
            .client
            .request(Command::MsgData, &msg, Command::MsgDataAck, REPLY_TIMEOUT)?
        {
            Message::MsgDataAck(ack) => {
                writeln!(out, "sent to {} (msg_id {})", self.name(to), ack.msg_id)?
            }
            other => writeln!(out, "unexpected reply {:?}", other.command())?,
        }
        Ok(())
    }

    fn history(&mut self, who: &str, out: &mut dyn Write) -> Result<(), ChatError> {
        let peer = self.resolve(who)?;
        let req = ImGetMsgListReq {
            user_id: self.me,
            session_type: 1,
            session_id: peer,
            msg_id_begin: 0,
            msg_cnt: 20,
            attach_data: None,
        };
        if let Message::MsgListResponse(rsp) = self.client.request(
            Command::MsgListRequest,
            &req,
            Command::MsgListResponse,
            REPLY_TIMEOUT,
        )? {
            writeln!(out, "history with {} (newest last):", self.name(peer))?;
            for m in rsp.msg_list.iter().rev() {
                writeln!(
                    out,
                    "  #{} [{}] {}: {}",
                    m.msg_id,
                    when(m.create_time, true),
                    self.name(m.from_session_id),
                    shown(&m.msg_data)
                )?;
            }
        }
        Ok(())
    }

    /// The unread single-chat sessions (group ones are not shown here).
    fn unread_sessions(
        &mut self,
    ) -> Result<(u32, Vec<teamtalk_proto::pb::im::base_define::UnreadInfo>), ChatError> {
        let req = ImUnreadMsgCntReq {
            user_id: self.me,
            attach_data: None,
        };
        match self.client.request(
            Command::MsgUnreadCntRequest,
            &req,
            Command::MsgUnreadCntResponse,
            REPLY_TIMEOUT,
        )? {
            Message::MsgUnreadCntResponse(rsp) => Ok((rsp.total_cnt, rsp.unreadinfo_list)),
            _ => Err(ClientError::Unexpected("unread counts").into()),
        }
    }

    /// Prints the unread counts; with `quiet`, nothing when there are none.
    fn unread(&mut self, quiet: bool, out: &mut dyn Write) -> Result<(), ChatError> {
        let (total, list) = self.unread_sessions()?;
        if quiet && total == 0 {
            return Ok(());
        }
        writeln!(out, "{total} unread")?;
        for u in &list {
            let session = if u.session_type == SessionType::Group as i32 {
                format!("group {}", u.session_id)
            } else {
                self.name(u.session_id)
            };
            writeln!(
                out,
                "  {session}: {} (latest from {}: {})",
                u.unread_cnt,
                self.name(u.latest_msg_from_user_id),
                shown(&u.latest_msg_data)
            )?;
        }
        Ok(())
    }

    /// Marks the single chat with `who` read (all chats with `None`), as a
    /// client does when the user opens it.
    fn mark_read(&mut self, who: Option<&str>, out: &mut dyn Write) -> Result<(), ChatError> {
        let peer = who.map(|w| self.resolve(w)).transpose()?;
        let (_, list) = self.unread_sessions()?;
        let mut marked = 0;
        for u in list
            .iter()
            .filter(|u| peer.is_none_or(|p| p == u.session_id))
        {
            let read = ImMsgDataReadAck {
                user_id: self.me,
                session_id: u.session_id,
                msg_id: u.latest_msg_id,
                session_type: u.session_type,
            };
            self.client.send_pdu(&Command::MsgReadAck.pdu(0, &read))?;
            marked += u.unread_cnt;
        }
        writeln!(out, "marked {marked} messages read")?;
        Ok(())
    }

    fn online(&mut self, out: &mut dyn Write) -> Result<(), ChatError> {
        let req = ImUsersStatReq {
            user_id: self.me,
            user_id_list: self.users.keys().copied().collect(),
            attach_data: None,
        };
        if let Message::BuddyListUsersStatusResponse(rsp) = self.client.request(
            Command::BuddyListUsersStatusRequest,
            &req,
            Command::BuddyListUsersStatusResponse,
            REPLY_TIMEOUT,
        )? {
            let mut names: Vec<String> = rsp
                .user_stat_list
                .iter()
                .filter(|s| s.status == UserStatType::UserStatusOnline as i32)
                .map(|s| self.name(s.user_id))
                .collect();
            names.sort();
            writeln!(out, "online (on a PC client): {}", names.join(", "))?;
        }
        Ok(())
    }

    /// Handles one PDU the server pushed. Returns whether it was a message.
    fn incoming(&mut self, pdu: &Pdu, out: &mut dyn Write) -> Result<bool, ChatError> {
        match Message::decode(pdu) {
            Ok(Message::MsgData(m)) => {
                // The client machine has acked the delivery already.
                if m.from_user_id == self.me {
                    writeln!(
                        out,
                        "(you, elsewhere) -> {}: {}",
                        self.name(m.to_session_id),
                        shown(&m.msg_data)
                    )?;
                } else {
                    writeln!(
                        out,
                        "[{}] {}: {}",
                        when(m.create_time, false),
                        self.name(m.from_user_id),
                        shown(&m.msg_data)
                    )?;
                    let read = ImMsgDataReadAck {
                        user_id: self.me,
                        session_id: m.from_user_id,
                        msg_id: m.msg_id,
                        session_type: 1,
                    };
                    self.client.send_pdu(&Command::MsgReadAck.pdu(0, &read))?;
                }
                return Ok(true);
            }
            Ok(Message::LoginKickUser(k)) => {
                writeln!(
                    out,
                    "* logged out by the server (kick reason {})",
                    k.kick_reason
                )?;
            }
            Ok(Message::BuddyListStatusNotify(n)) => {
                let s = n.user_stat;
                if s.user_id == self.me || !self.presence {
                    return Ok(false);
                }
                let state = if s.status == UserStatType::UserStatusOnline as i32 {
                    "online"
                } else {
                    "offline"
                };
                writeln!(out, "* {} is {state}", self.name(s.user_id))?;
            }
            Ok(Message::BuddyListSignInfoChangedNotify(n)) => {
                writeln!(
                    out,
                    "* {} now signs {:?}",
                    self.name(n.changed_user_id),
                    n.sign_info
                )?;
            }
            _ => {}
        }
        Ok(false)
    }

    fn receive(&mut self, want: u32, out: &mut dyn Write) -> Result<(), ChatError> {
        let deadline = clock::now() + Duration::from_secs(self.args.wait_secs);
        let mut got = 0;
        while got < want {
            let left = deadline.saturating_duration_since(clock::now());
            if left.is_zero() {
                return Err(ChatError::NotReceived {
                    got,
                    want,
                    secs: self.args.wait_secs,
                });
            }
            if let Some(pdu) = self.client.recv(left)?
                && self.incoming(&pdu, out)?
            {
                got += 1;
            }
        }
        Ok(())
    }

    fn logout(&mut self) {
        let _ = self.client.logout();
    }
}

/// A message time for the terminal, in the local time zone: the time of
/// day, with the date when `date` (history) or when it is not today.
fn when(unix_secs: u32, date: bool) -> String {
    let tz = jiff::tz::TimeZone::system();
    let Ok(t) = jiff::Timestamp::from_second(i64::from(unix_secs)) else {
        return unix_secs.to_string();
    };
    let t = t.to_zoned(tz.clone());
    let today = jiff::Timestamp::from_second(i64::from(clock::unix_secs()))
        .map(|now| now.to_zoned(tz).date())
        .ok();
    if date || today != Some(t.date()) {
        t.strftime("%Y-%m-%d %H:%M").to_string()
    } else {
        t.strftime("%H:%M").to_string()
    }
}

/// A message body for the terminal: decoded TeamTalk text, or the raw
/// bytes (lossy UTF-8) when it is not in that form.
fn shown(body: &[u8]) -> String {
    text::decode(body, text::DEFAULT_KEY)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Runs `teamtalk chat`.
///
/// # Errors
/// [`ChatError`] when logging in fails, a named user does not exist, or a
/// scripted step fails.
pub fn run(args: &ChatArgs, out: &mut dyn Write) -> Result<(), ChatError> {
    let mut chat = Chat::connect(args)?;
    writeln!(out, "logged in as {} (id {})", args.user, chat.me)?;
    let scripted = !args.send.is_empty()
        || args.receive.is_some()
        || args.history.is_some()
        || args.unread
        || args.online;
    if scripted {
        for pair in args.send.chunks(2) {
            if let [who, text] = pair {
                chat.send(who, text, out)?;
            }
        }
        if let Some(n) = args.receive {
            chat.receive(n, out)?;
        }
        if let Some(who) = &args.history {
            chat.history(who, out)?;
        }
        if args.unread {
            chat.unread(false, out)?;
        }
        if args.online {
            chat.online(out)?;
        }
        chat.logout();
        return Ok(());
    }
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        let (lines, printer) = editor_lines()?;
        let mut out = PrinterOut {
            printer,
            pending: Vec::new(),
        };
        interactive(&mut chat, &mut out, &lines)
    } else {
        interactive(&mut chat, out, &stdin_lines())
    }
}

const HELP: &str = "\
commands (USER: login name or nick in any case, or user id):
  @USER TEXT          send TEXT to USER (or /send USER TEXT)
  /history USER       the last 20 messages with USER
  /unread             unread counts
  /read [USER]        mark the chat with USER (or every chat) read
  /who                who is online
  /presence on|off    print when users come online or go offline
  /logout             log out and quit (also Ctrl-D)";

fn interactive(
    chat: &mut Chat,
    out: &mut dyn Write,
    lines: &Receiver<String>,
) -> Result<(), ChatError> {
    writeln!(out, "{HELP}")?;
    report(chat.unread(true, out), out)?;
    out.flush()?;
    // Reconnect attempts since the connection was last up.
    let mut attempts = 0;
    loop {
        match lines.try_recv() {
            Ok(line) => {
                if !command(chat, line.trim(), out)? {
                    chat.logout();
                    return Ok(());
                }
            }
            Err(TryRecvError::Disconnected) => {
                chat.logout();
                return Ok(());
            }
            Err(TryRecvError::Empty) => {}
        }
        let event = chat
            .client
            .event(clock::now() + Duration::from_millis(100))?;
        while let Some(pdu) = chat.client.try_recv() {
            chat.incoming(&pdu, out)?;
        }
        match event {
            Some(ClientEvent::Disconnected(reason)) => {
                writeln!(out, "* connection lost ({reason})")?;
            }
            Some(ClientEvent::LoginRefused { code, text, .. }) => {
                writeln!(out, "* login refused (result code {code}: {text})")?;
            }
            Some(ClientEvent::Reconnecting { after }) => {
                attempts += 1;
                if attempts > RECONNECT_ATTEMPTS {
                    return Err(ChatError::GaveUp(RECONNECT_ATTEMPTS));
                }
                // Why the last attempt failed, when it was login_server.
                let why = chat
                    .client
                    .take_assign_error()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "* reconnecting in {:.1} s (attempt {attempts}){why}",
                    after.as_secs_f64()
                )?;
            }
            Some(ClientEvent::LoggedIn(_)) => {
                attempts = 0;
                writeln!(out, "* reconnected")?;
                report(chat.load_directory(), out)?;
                report(chat.unread(true, out), out)?;
            }
            Some(ClientEvent::Stopped(why)) => {
                return match why {
                    StopReason::LoginRefused { code } => Err(ClientError::LoginRefused {
                        code,
                        text: String::new(),
                    }
                    .into()),
                    StopReason::Kicked { .. } => Ok(()),
                    other => Err(ChatError::Stopped(format!("{other:?}"))),
                };
            }
            _ => {}
        }
        out.flush()?;
    }
}

/// Runs one typed line; returns false to quit. A failed request is
/// reported and the session goes on.
fn command(chat: &mut Chat, line: &str, out: &mut dyn Write) -> Result<bool, ChatError> {
    let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let usage =
        |out: &mut dyn Write, text: &str| writeln!(out, "usage: {text}").map_err(ChatError::from);
    let result = match head {
        "" => Ok(()),
        "/logout" | "/quit" => return Ok(false),
        "/help" => writeln!(out, "{HELP}").map_err(ChatError::from),
        "/history" if rest.is_empty() => usage(out, "/history USER"),
        "/history" => chat.history(rest, out),
        "/unread" => chat.unread(false, out),
        "/read" => chat.mark_read((!rest.is_empty()).then_some(rest), out),
        "/who" => chat.online(out),
        "/presence" => match rest {
            "on" | "off" => {
                chat.presence = rest == "on";
                writeln!(out, "presence lines {rest}").map_err(ChatError::from)
            }
            _ => usage(out, "/presence on|off"),
        },
        "/send" => match rest.split_once(' ') {
            Some((who, text)) => chat.send(who, text, out),
            None => usage(out, "/send USER TEXT"),
        },
        h if h.starts_with('@') && h.len() > 1 => chat.send(&h[1..], rest, out),
        _ => writeln!(out, "unknown command; /help lists them").map_err(ChatError::from),
    };
    report(result, out)?;
    Ok(true)
}

/// Prints a request's failure and goes on; only the terminal failing, or
/// the session being over, is returned.
fn report(result: Result<(), ChatError>, out: &mut dyn Write) -> Result<(), ChatError> {
    match result {
        Ok(()) => Ok(()),
        Err(e @ (ChatError::Io(_) | ChatError::Client(ClientError::Io(_)))) => Err(e),
        Err(ChatError::Client(ClientError::Closed | ClientError::Send(_))) => {
            writeln!(out, "! not connected now; try again once reconnected")?;
            Ok(())
        }
        Err(e) => {
            writeln!(out, "! {e}")?;
            Ok(())
        }
    }
}

/// Lines typed at a terminal, edited with rustyline (history included),
/// and a printer that shows lines above the prompt. The reader thread ends
/// at Ctrl-D or Ctrl-C, which closes the channel (the session then logs
/// out).
fn editor_lines() -> Result<(Receiver<String>, Box<dyn ExternalPrinter + Send>), ChatError> {
    let terminal = |e: rustyline::error::ReadlineError| std::io::Error::other(e.to_string());
    let mut editor = rustyline::DefaultEditor::new().map_err(terminal)?;
    let printer = editor.create_external_printer().map_err(terminal)?;
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::spawn(move || {
        while let Ok(line) = editor.readline("> ") {
            if !line.trim().is_empty() {
                let _ = editor.add_history_entry(line.as_str());
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((rx, Box::new(printer)))
}

/// `Write` over rustyline's external printer: whole lines go above the
/// prompt, so incoming messages never splice into what is being typed.
struct PrinterOut {
    printer: Box<dyn ExternalPrinter + Send>,
    pending: Vec<u8>,
}

impl Write for PrinterOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let lines: Vec<u8> = self.pending.drain(..=end).collect();
        let text = String::from_utf8_lossy(&lines[..lines.len() - 1]).into_owned();
        self.printer
            .print(text)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Lines from a stdin that is not a terminal (a pipe, a script).
fn stdin_lines() -> Receiver<String> {
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Printed(Arc<Mutex<Vec<String>>>);

    impl ExternalPrinter for Printed {
        fn print(&mut self, msg: String) -> rustyline::Result<()> {
            self.0.lock().unwrap().push(msg);
            Ok(())
        }
    }

    #[test]
    fn the_printer_gets_whole_lines_only() {
        let printed = Printed::default();
        let mut out = PrinterOut {
            printer: Box::new(printed.clone()),
            pending: Vec::new(),
        };
        write!(out, "bob: hel").unwrap();
        out.flush().unwrap();
        assert!(printed.0.lock().unwrap().is_empty(), "half a line waits");
        writeln!(out, "lo").unwrap();
        write!(out, "a\nb\nc").unwrap();
        out.flush().unwrap();
        assert_eq!(*printed.0.lock().unwrap(), ["bob: hello\na\nb"]);
        writeln!(out).unwrap();
        out.flush().unwrap();
        assert_eq!(printed.0.lock().unwrap().last().unwrap(), "c");
    }

    #[test]
    fn times_show_the_date_for_history_and_other_days() {
        let now = clock::unix_secs();
        let today = when(now, false);
        assert_eq!(today.len(), "12:34".len(), "{today}");
        assert!(today.contains(':'));
        let history = when(now, true);
        assert_eq!(history.len(), "2026-01-02 12:34".len(), "{history}");
        assert!(history.ends_with(&today), "{history} {today}");
        // Two days ago is another day in every time zone.
        assert_eq!(when(now - 2 * 86_400, false).len(), history.len());
    }
}
