//! A blocking TeamTalk client, speaking the protocol exactly like the real
//! clients: HTTP assignment from login_server, TCP login with the md5hex of
//! the password, heartbeats, requests matched to replies by seq.
//!
//! It uses nothing of our servers beyond the protocol, so the end-to-end
//! tests, `teamtalk chat` and `teamtalk bench` can point it at the C++
//! servers too.

mod assign;
pub mod text;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use teamtalk_proto::pb::im::base_define::{ClientType, UserStatType};
use teamtalk_proto::pb::im::login::{ImLoginReq, ImLoginRes};
use teamtalk_proto::{BodyError, Command, FrameError, Message, Pdu, PduCodec};

pub use assign::{AssignError, Assignment, query_msg_server};

use crate::clock;
use crate::password::md5_hex;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The server sent bytes that are not PDUs.
    #[error("bad frame from server: {0}")]
    Frame(#[from] FrameError),
    /// The server sent a PDU whose body does not parse.
    #[error("bad body from server: {0}")]
    Body(#[from] BodyError),
    /// Nothing matching arrived in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    /// The server closed the connection.
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
}

/// A connected client. Not thread-safe; one per connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    codec: PduCodec,
    rx: BytesMut,
    seq: u16,
    /// PDUs received while waiting for something else, oldest first.
    backlog: VecDeque<Pdu>,
    user_id: Option<u32>,
}

impl Client {
    /// Opens a TCP connection to a msg_server.
    ///
    /// # Errors
    /// The connect error.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ClientError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            codec: PduCodec::default(),
            rx: BytesMut::with_capacity(4096),
            seq: 0,
            backlog: VecDeque::new(),
            user_id: None,
        })
    }

    /// The user id the server assigned at login.
    #[must_use]
    pub fn user_id(&self) -> Option<u32> {
        self.user_id
    }

    /// Local address of the connection.
    ///
    /// # Errors
    /// The socket error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Sends a typed message under a fresh seq, returning the seq.
    ///
    /// # Errors
    /// The write error.
    pub fn send(
        &mut self,
        command: Command,
        msg: &impl prost::Message,
    ) -> Result<u16, ClientError> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        self.send_pdu(&command.pdu(seq, msg))?;
        Ok(seq)
    }

    /// Sends a PDU as it is.
    ///
    /// # Errors
    /// The write error.
    pub fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), ClientError> {
        self.send_raw(&pdu.to_bytes())
    }

    /// Writes raw bytes (tests use it to send malformed frames).
    ///
    /// # Errors
    /// The write error.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next PDU, from the backlog first, waiting at most `timeout`.
    /// `Ok(None)` on timeout.
    ///
    /// # Errors
    /// Socket or frame errors; [`ClientError::Closed`] on EOF.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Pdu>, ClientError> {
        if let Some(p) = self.backlog.pop_front() {
            return Ok(Some(p));
        }
        self.read_pdu(clock::now() + timeout)
    }

    fn read_pdu(&mut self, deadline: Instant) -> Result<Option<Pdu>, ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(pdu) = self.codec.decode(&mut self.rx)? {
                return Ok(Some(pdu));
            }
            let left = deadline.saturating_duration_since(clock::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.rx.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for the first PDU matching `pred`, keeping the others in the
    /// backlog for later [`recv`](Self::recv) calls.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when nothing matches in time.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &'static str,
        mut pred: impl FnMut(&Pdu) -> bool,
    ) -> Result<Pdu, ClientError> {
        if let Some(i) = self.backlog.iter().position(&mut pred)
            && let Some(p) = self.backlog.remove(i)
        {
            return Ok(p);
        }
        let deadline = clock::now() + timeout;
        loop {
            match self.read_pdu(deadline)? {
                Some(p) if pred(&p) => return Ok(p),
                Some(p) => self.backlog.push_back(p),
                None => return Err(ClientError::Timeout(timeout, what)),
            }
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
    /// As [`wait_for`](Self::wait_for).
    pub fn request(
        &mut self,
        command: Command,
        msg: &impl prost::Message,
        reply: Command,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        let seq = self.send(command, msg)?;
        let pdu = self.wait_for(timeout, reply.name(), |p| {
            p.is(reply.key()) && p.seq() == seq
        })?;
        Ok(Message::decode(&pdu)?)
    }

    /// Logs in with a plaintext password, sent as its md5hex like TeamTalk
    /// clients do.
    ///
    /// # Errors
    /// [`ClientError::LoginRefused`] with the server's result code.
    pub fn login(
        &mut self,
        user_name: &str,
        password: &str,
        client_type: ClientType,
        timeout: Duration,
    ) -> Result<ImLoginRes, ClientError> {
        let req = ImLoginReq {
            user_name: user_name.to_owned(),
            password: md5_hex(password.as_bytes()),
            online_status: UserStatType::UserStatusOnline as i32,
            client_type: client_type as i32,
            client_version: Some("teamtalk-rs".to_owned()),
        };
        let Message::LoginResUserlogin(res) = self.request(
            Command::LoginReqUserlogin,
            &req,
            Command::LoginResUserlogin,
            timeout,
        )?
        else {
            return Err(ClientError::Unexpected("login reply of another type"));
        };
        if res.result_code != 0 {
            return Err(ClientError::LoginRefused {
                code: res.result_code,
                text: res.result_string.clone().unwrap_or_default(),
            });
        }
        self.user_id = res.user_info.as_ref().map(|u| u.user_id);
        Ok(res)
    }
}
