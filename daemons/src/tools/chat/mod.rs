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
//! and lines typed are commands (`/help`).
//!
//! Text goes out encoded the way TeamTalk's own clients encode it
//! ([`crate::tools::client::text`]), so they can read it; `--plain` sends raw
//! UTF-8 instead. Incoming bodies are shown decoded when they are in that
//! form and as they are otherwise.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, TryRecvError};
use teamtalk_conn::client::Credentials;
use teamtalk_conn::{ClientConfig, ClientEvent, StopReason};
use teamtalk_proto::pb::im::base_define::{ClientType, UserInfo, UserStatType};
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
    #[error("no user named {0:?} in the directory")]
    NoSuchUser(String),
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
        };
        chat.load_directory()?;
        Ok(chat)
    }

    fn load_directory(&mut self) -> Result<(), ChatError> {
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

    /// A user id from a login name, a nick or a number.
    fn resolve(&self, who: &str) -> Result<u32, ChatError> {
        if let Ok(id) = who.parse() {
            return Ok(id);
        }
        self.users
            .values()
            .find(|u| u.user_real_name == who || u.user_nick_name == who)
            .map(|u| u.user_id)
            .ok_or_else(|| ChatError::NoSuchUser(who.to_owned()))
    }

    fn name(&self, id: u32) -> String {
        self.users
            .get(&id)
            .map_or_else(|| format!("#{id}"), |u| u.user_real_name.clone())
    }

    fn send(&mut self, who: &str, text: &str, out: &mut dyn Write) -> Result<(), ChatError> {
        let to = self.resolve(who)?;
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
            Message::MsgDataAck(ack) => writeln!(out, "sent to {who} (msg_id {})", ack.msg_id)?,
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
            writeln!(out, "history with {who} (newest last):")?;
            for m in rsp.msg_list.iter().rev() {
                writeln!(
                    out,
                    "  #{} {}: {}",
                    m.msg_id,
                    self.name(m.from_session_id),
                    shown(&m.msg_data)
                )?;
            }
        }
        Ok(())
    }

    fn unread(&mut self, out: &mut dyn Write) -> Result<(), ChatError> {
        let req = ImUnreadMsgCntReq {
            user_id: self.me,
            attach_data: None,
        };
        if let Message::MsgUnreadCntResponse(rsp) = self.client.request(
            Command::MsgUnreadCntRequest,
            &req,
            Command::MsgUnreadCntResponse,
            REPLY_TIMEOUT,
        )? {
            writeln!(out, "{} unread", rsp.total_cnt)?;
            for u in &rsp.unreadinfo_list {
                writeln!(
                    out,
                    "  {}: {} (latest: {})",
                    self.name(u.session_id),
                    u.unread_cnt,
                    shown(&u.latest_msg_data)
                )?;
            }
        }
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
                    writeln!(out, "{}: {}", self.name(m.from_user_id), shown(&m.msg_data))?;
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
            chat.unread(out)?;
        }
        if args.online {
            chat.online(out)?;
        }
        chat.logout();
        return Ok(());
    }
    interactive(&mut chat, out)
}

const HELP: &str = "\
commands:
  @USER TEXT          send TEXT to USER (or /send USER TEXT)
  /history USER       the last 20 messages with USER
  /unread             unread counts
  /who                who is online
  /logout             log out and quit (also Ctrl-D)";

fn interactive(chat: &mut Chat, out: &mut dyn Write) -> Result<(), ChatError> {
    writeln!(out, "{HELP}")?;
    let lines = stdin_lines();
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
            Some(ClientEvent::Reconnecting { after }) => {
                attempts += 1;
                if attempts > RECONNECT_ATTEMPTS {
                    return Err(ChatError::GaveUp(RECONNECT_ATTEMPTS));
                }
                writeln!(
                    out,
                    "* reconnecting in {:.1} s (attempt {attempts})",
                    after.as_secs_f64()
                )?;
            }
            Some(ClientEvent::LoggedIn(_)) => {
                attempts = 0;
                writeln!(out, "* reconnected")?;
                chat.load_directory()?;
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

/// Runs one typed line; returns false to quit.
fn command(chat: &mut Chat, line: &str, out: &mut dyn Write) -> Result<bool, ChatError> {
    let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
    let result = match head {
        "" => Ok(()),
        "/logout" | "/quit" => return Ok(false),
        "/help" => writeln!(out, "{HELP}").map_err(ChatError::from),
        "/history" => chat.history(rest.trim(), out),
        "/unread" => chat.unread(out),
        "/who" => chat.online(out),
        "/send" => match rest.split_once(' ') {
            Some((who, text)) => chat.send(who, text, out),
            None => writeln!(out, "usage: /send USER TEXT").map_err(ChatError::from),
        },
        h if h.starts_with('@') => chat.send(&h[1..], rest, out),
        _ => writeln!(out, "unknown command; /help lists them").map_err(ChatError::from),
    };
    match result {
        Ok(()) => {}
        Err(ChatError::NoSuchUser(who)) => writeln!(out, "no user named {who:?}")?,
        Err(e) => return Err(e),
    }
    Ok(true)
}

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
