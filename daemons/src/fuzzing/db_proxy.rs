//! [`DbProxyFuzz`]: db_proxy's request handler over a SQLite store, fed
//! arbitrary requests.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use teamtalk_proto::pb::im::buddy::ImUsersInfoReq;
use teamtalk_proto::pb::im::message::{ImGetMsgListReq, ImMsgData};
use teamtalk_proto::pb::im::server::ImValidateReq;
use teamtalk_proto::{Attach, Command, CommandKey, Message, Pdu};

use super::body::{Body, command};
use super::{addr, user_id, violated};
use crate::db_proxy::{DbProxy, DbProxyOptions, PreparedMessage};
use crate::password::{HashParams, md5_hex, teamtalk_salted};
use crate::rules::failure::reply_command;
use crate::rules::sizing::{MAX_FRAME_LEN, fits_frame};
use crate::store::{NewUser, SqliteStore, Store, StoreError, StoreOptions};

/// Requests per run at most.
const MAX_STEPS: usize = 64;
/// Users of the seeded store: `user1`..`user4` with Argon2 passwords
/// (`{i:032x}`), `user5` imported from TeamTalk (salted MD5).
const USERS: u32 = 5;
/// Mid-day UTC, where the clock starts.
const NOON: u32 = 1_795_521_600;

/// One thing db_proxy is asked.
#[derive(Debug, Arbitrary)]
enum Step {
    /// One request, handled alone.
    One(Request),
    /// Requests arriving together: consecutive storable messages are
    /// stored in one transaction, as the store worker does.
    Batch(Vec<Request>),
    /// The clock moves forward (seconds).
    Advance(u16),
}

#[derive(Debug, Arbitrary)]
struct Request {
    kind: Kind,
    seq: u16,
    attach: AttachSpec,
}

/// The request's `attach_data`.
#[derive(Debug, Arbitrary)]
enum AttachSpec {
    /// Absent.
    None,
    /// msg_server's record with this handle.
    Handle(u32),
    /// Any bytes.
    Bytes(Vec<u8>),
    /// Nearly a frame (minus `n * 256` bytes).
    Big(u8),
}

#[derive(Debug, Arbitrary)]
enum Kind {
    /// Any command with a well-formed body.
    Generic { command: u16, body: Body },
    /// Any command with arbitrary bytes.
    Raw { command: u16, bytes: Vec<u8> },
    /// A command id outside TeamTalk's table.
    Unknown {
        service: u16,
        id: u16,
        bytes: Vec<u8>,
    },
    /// A login of a seeded user, right or wrong password, maybe an
    /// over-long name.
    Login {
        user: u8,
        right: bool,
        long: u16,
        addr: Option<u8>,
    },
    /// A message between users of the pool (`len * 16` bytes of text, up
    /// to past the store's bound).
    Message {
        from: u8,
        to: u8,
        msg_type: u8,
        len: u16,
        dedupe: Option<u8>,
        time: u8,
    },
    /// A page of history.
    History {
        user: u8,
        peer: u8,
        msg_id: u32,
        count: u32,
        session_type: u8,
    },
    /// Users by id (`extra` more ids, past the bound sometimes).
    UsersInfo { user: u8, ids: Vec<u8>, extra: u16 },
}

/// db_proxy's request handler on a SQLite store in a directory, seeded
/// once; [`DbProxyFuzz::run`] feeds it a run of requests. The store and
/// the handler's tables (login limiter, credential cache) carry over from
/// run to run, as in a long-lived daemon.
pub struct DbProxyFuzz {
    proxy: DbProxy,
    clock: Arc<AtomicU32>,
}

impl std::fmt::Debug for DbProxyFuzz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbProxyFuzz")
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl DbProxyFuzz {
    /// Opens (creates) the store in `dir`, with cheap password hashes and
    /// a clock the runs move, and seeds a department and five users.
    ///
    /// # Errors
    /// The store's, when it cannot be opened or seeded.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::seeded(|options| SqliteStore::open_with(dir, options))
    }

    /// [`DbProxyFuzz::open`] on an in-memory SQLite database: no disk,
    /// no fsync, for quick property tests.
    ///
    /// # Errors
    /// The store's, when it cannot be opened or seeded.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::seeded(SqliteStore::open_in_memory)
    }

    fn seeded(
        open: impl FnOnce(StoreOptions) -> Result<SqliteStore, StoreError>,
    ) -> Result<Self, StoreError> {
        let clock = Arc::new(AtomicU32::new(NOON));
        let c = Arc::clone(&clock);
        let options = StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            clock: Arc::new(move || c.load(Ordering::Relaxed)),
            applier_nice: 0,
        };
        let store = open(options)?;
        if store.user_count()? == 0 {
            store.add_department("dev", 0, 0)?;
            for i in 1..USERS {
                store.add_user(&new_user(i), &password(i))?;
            }
            let salt = "4567";
            let stored = teamtalk_salted(&password(USERS), salt);
            store.import_teamtalk_user(&new_user(USERS), &stored, salt)?;
        }
        let c = Arc::clone(&clock);
        let proxy = DbProxy::with_options(
            Arc::new(store) as Arc<dyn Store>,
            DbProxyOptions {
                clock: Arc::new(move || c.load(Ordering::Relaxed)),
                utc_offset_secs: 8 * 3600,
            },
        );
        Ok(Self { proxy, clock })
    }

    /// Feeds the requests `data` encodes and checks every answer: no panic;
    /// exactly one answer per request, none only for heartbeats,
    /// `IMRequestFailed` and one-way requests (read acks, offline files
    /// added or deleted) that were applied; the answer
    /// carries the request's seq and its `attach_data` (present, maybe
    /// empty), is the request's reply or `IMRequestFailed`, decodes, and
    /// fits the frame limit.
    ///
    /// # Panics
    /// On the first broken invariant.
    pub fn run(&self, data: &[u8]) {
        let mut u = Unstructured::new(data);
        let mut history = Vec::new();
        for _ in 0..MAX_STEPS {
            if u.is_empty() {
                break;
            }
            let Ok(step) = u.arbitrary::<Step>() else {
                break;
            };
            history.push(format!("{step:?}"));
            match step {
                Step::One(r) => {
                    if let Some(pdu) = request(&r) {
                        let reply = self.proxy.handle(&pdu);
                        check(&pdu, reply.as_ref(), &history);
                    }
                }
                Step::Batch(rs) => self.batch(&rs, &history),
                Step::Advance(secs) => {
                    self.clock.fetch_add(u32::from(secs), Ordering::Relaxed);
                }
            }
        }
    }

    /// A batch as the store worker runs it.
    fn batch(&self, requests: &[Request], history: &[String]) {
        let mut run: Vec<(Pdu, PreparedMessage)> = Vec::new();
        let flush = |run: &mut Vec<(Pdu, PreparedMessage)>| {
            let (pdus, prepared): (Vec<Pdu>, Vec<PreparedMessage>) = run.drain(..).unzip();
            let replies = self.proxy.store_prepared(prepared);
            if replies.len() != pdus.len() {
                violated(
                    format!("{} messages stored, {} answers", pdus.len(), replies.len()),
                    history,
                );
            }
            for (pdu, reply) in pdus.iter().zip(&replies) {
                check(pdu, Some(reply), history);
            }
        };
        for pdu in requests.iter().take(16).filter_map(request) {
            if let Some(prepared) = self.proxy.prepare_message(&pdu) {
                run.push((pdu, prepared));
                continue;
            }
            flush(&mut run);
            let reply = self.proxy.handle(&pdu);
            check(&pdu, reply.as_ref(), history);
        }
        flush(&mut run);
    }
}

fn password(i: u32) -> String {
    format!("{i:032x}")
}

fn new_user(i: u32) -> NewUser {
    NewUser {
        name: format!("user{i}"),
        nick: format!("nick{i}"),
        sex: i % 3,
        dept_id: 1,
        avatar: String::new(),
        email: format!("user{i}@example.com"),
        phone: format!("1380000000{i}"),
        domain: format!("user{i}"),
        status: 0,
        sign_info: String::new(),
    }
}

/// The PDU a request spec makes; `None` when it would not fit a frame (a
/// peer could not have sent it).
fn request(r: &Request) -> Option<Pdu> {
    let attach = match &r.attach {
        AttachSpec::None => None,
        AttachSpec::Handle(h) => Some(Attach::handle(*h).encode()),
        AttachSpec::Bytes(b) => Some(Bytes::copy_from_slice(b)),
        AttachSpec::Big(n) => Some(Bytes::from(vec![
            0x5a;
            MAX_FRAME_LEN.saturating_sub(
                80 + usize::from(*n) * 256
            )
        ])),
    };
    let with_attach = |mut m: Message| {
        if let Some(a) = m.attached_mut() {
            a.set_attach_data(attach.clone());
        }
        m.to_pdu(r.seq)
    };
    let pdu = match &r.kind {
        Kind::Generic { command: c, body } => with_attach(body.message(command(*c))),
        Kind::Raw { command: c, bytes } => {
            Pdu::new(command(*c).key(), r.seq, Bytes::copy_from_slice(bytes))
        }
        Kind::Unknown { service, id, bytes } => Pdu::new(
            CommandKey::new(service | 0x100, *id),
            r.seq,
            Bytes::copy_from_slice(bytes),
        ),
        Kind::Login {
            user,
            right,
            long,
            addr: a,
        } => {
            let i = 1 + u32::from(*user) % USERS;
            let name = if long.is_multiple_of(8) {
                "n".repeat(usize::from(*long % 600))
            } else {
                format!("user{i}")
            };
            let pw = if *right {
                password(i)
            } else {
                md5_hex(&long.to_be_bytes())
            };
            with_attach(
                ImValidateReq {
                    user_name: name,
                    password: pw,
                    attach_data: None,
                    client_addr: a.map(|a| addr(a).ip().to_string()),
                }
                .into(),
            )
        }
        Kind::Message {
            from,
            to,
            msg_type,
            len,
            dedupe,
            time,
        } => with_attach(
            ImMsgData {
                from_user_id: user_id(*from),
                to_session_id: user_id(*to),
                msg_id: 0,
                create_time: u32::from(*time),
                msg_type: [1, 2, 0x11, 0x12, 7, -1][usize::from(msg_type % 6)],
                msg_data: Bytes::from(vec![b'm'; usize::from(*len) * 16]),
                attach_data: None,
                dedupe_key: dedupe.map(|d| Bytes::from(vec![d; 16])),
                duplicate: None,
            }
            .into(),
        ),
        Kind::History {
            user,
            peer,
            msg_id,
            count,
            session_type,
        } => with_attach(
            ImGetMsgListReq {
                user_id: user_id(*user),
                session_type: i32::from(*session_type % 4),
                session_id: user_id(*peer),
                msg_id_begin: *msg_id,
                msg_cnt: *count,
                attach_data: None,
            }
            .into(),
        ),
        Kind::UsersInfo { user, ids, extra } => {
            let mut list: Vec<u32> = ids.iter().map(|&i| user_id(i)).collect();
            if extra.is_multiple_of(8) {
                list.extend((0..u32::from(*extra)).map(|i| 1 + i % 9));
            }
            with_attach(
                ImUsersInfoReq {
                    user_id: user_id(*user),
                    user_id_list: list,
                    attach_data: None,
                }
                .into(),
            )
        }
    };
    (pdu.wire_len() <= MAX_FRAME_LEN).then_some(pdu)
}

/// Checks db_proxy's answer to `req`.
fn check(req: &Pdu, reply: Option<&Pdu>, history: &[String]) {
    let fail = |what: String| -> ! { violated(format!("{}: {what}", req.key()), history) };
    let decoded = Message::decode(req);
    let silent = req.is(Command::OtherHeartbeat.key()) || req.is(Command::OtherRequestFailed.key());
    let Some(reply) = reply else {
        // Read acks and offline-file records and deletions have no reply
        // in TeamTalk when they succeed.
        let no_reply_on_success = (req.is(Command::MsgReadAck.key())
            || req.is(Command::FileAddOfflineReq.key())
            || req.is(Command::FileDelOfflineReq.key()))
            && decoded.is_ok();
        if !silent && !no_reply_on_success {
            fail("no answer".into());
        }
        return;
    };
    if silent {
        fail(format!("answered with {}", reply.key()));
    }
    if reply.seq() != req.seq() {
        fail(format!(
            "answer seq {} for request seq {}",
            reply.seq(),
            req.seq()
        ));
    }
    if reply.wire_len() > MAX_FRAME_LEN {
        fail(format!(
            "answer of {} bytes over the frame limit",
            reply.wire_len()
        ));
    }
    let Ok(mut answer) = Message::decode(reply) else {
        fail(format!("undecodable answer {}", reply.key()));
    };
    let expected = match Command::from_key(req.key()) {
        Some(Command::MsgData) => Some(Command::MsgData),
        Some(c) => reply_command(c),
        None => None,
    };
    if !reply.is(Command::OtherRequestFailed.key())
        && expected.map(Command::key) != Some(reply.key())
    {
        fail(format!("answered with {}", reply.key()));
    }
    let Ok(mut request) = decoded else {
        return;
    };
    let Some(sent) = request.attached_mut().map(|a| a.attach_data().cloned()) else {
        return;
    };
    match answer.attached_mut() {
        Some(a) => {
            let back = a.attach_data().cloned();
            if back.clone().unwrap_or_default() != sent.clone().unwrap_or_default()
                && !(back.is_none() && attach_cannot_fit(reply, sent.as_ref()))
            {
                fail(format!(
                    "attach_data of {} bytes came back as {:?} bytes",
                    sent.map_or(0, |b| b.len()),
                    back.map(|b| b.len())
                ));
            }
        }
        None => {
            if sent.is_some_and(|b| !b.is_empty()) {
                fail(format!(
                    "answer {} cannot carry the attach_data",
                    reply.key()
                ));
            }
        }
    }
}

/// Whether an answer may leave the request's `attach_data` out:
/// `IMRequestFailed` when the request carried so much of it that no answer
/// with it would fit a frame.
fn attach_cannot_fit(reply: &Pdu, sent: Option<&Bytes>) -> bool {
    reply.is(Command::OtherRequestFailed.key()) && sent.is_some_and(|a| !fits_frame(a.len() + 256))
}
