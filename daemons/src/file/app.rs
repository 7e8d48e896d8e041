//! [`FileApp`]: file_server's logic as a pure state machine over the
//! shared runtime's inputs. No socket, thread or clock: disk work is a
//! [`DiskJob`] for a worker, time comes with every input, so every rule
//! (timeouts included) is unit-tested with `Conn::test(n)` ids and
//! made-up times (`file/tests.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use teamtalk_proto::pb::im::base_define::{ClientFileRole, ClientFileState, IpAddr};
use teamtalk_proto::pb::im::ext::{ImFileTaskDelete, RequestFailedCode};
use teamtalk_proto::pb::im::file::{
    ImFileLoginReq, ImFileLoginRsp, ImFilePullDataReq, ImFilePullDataRsp, ImFileState,
};
use teamtalk_proto::pb::im::server::{ImFileServerIpRsp, ImFileTransferReq, ImFileTransferRsp};
use teamtalk_proto::{Command, Message, Pdu};
use tracing::{debug, info, warn};

use super::config::Limits;
use super::disk::{DiskDone, DiskJob, TaskMeta};
use crate::clip::clip;
use crate::metrics::{CounterMap, Scrape};
use crate::rules::failure::{RESULT_FAILED, request_failed};
use crate::rules::files::{MAX_FILE_NAME_LEN, SEGMENT_SIZE, is_task_id, is_trans_mode};
use crate::runtime::{Action, App, Conn, Input, Now, Out, PortId};

/// `TransferFileType::FileTypeOffline` (online is 1).
const OFFLINE: i32 = 2;
/// The client type file sessions are accepted as: a PC, so the session's
/// idle limit is TeamTalk's `CLIENT_TIMEOUT` (120 s).
const FILE_CLIENT_TYPE: u32 = 1;
/// Pull requests a receiver may have waiting for the sender's data in an
/// online transfer (TeamTalk's clients send one at a time); one more
/// closes its connection.
pub const MAX_PULLS_IN_FLIGHT: usize = 4;
/// Disk reads one downloader may have waiting.
pub const MAX_READS_IN_FLIGHT: u32 = 4;
/// Largest piece one online pull may ask for (TeamTalk's PC client asks
/// for 34 KiB).
pub const MAX_RELAY_CHUNK: u32 = 256 * 1024;
/// Bytes of an upload received but not yet on disk before file_server
/// stops asking for more until the writes catch up.
pub const MAX_UNWRITTEN: u32 = 1 << 20;

/// What a client logged in as (`ClientFileRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Online sender (1).
    Sender,
    /// Online receiver (2).
    Receiver,
    /// Offline uploader (3).
    Uploader,
    /// Offline downloader (4).
    Downloader,
}

impl Role {
    fn from_wire(v: i32) -> Option<Self> {
        Some(match ClientFileRole::try_from(v).ok()? {
            ClientFileRole::ClientRealtimeSender => Self::Sender,
            ClientFileRole::ClientRealtimeRecver => Self::Receiver,
            ClientFileRole::ClientOfflineUpload => Self::Uploader,
            ClientFileRole::ClientOfflineDownload => Self::Downloader,
        })
    }

    /// The sender's side of the task (else the receiver's).
    const fn is_from(self) -> bool {
        matches!(self, Self::Sender | Self::Uploader)
    }
}

/// A relayed pull request waiting for the sender's answer.
#[derive(Debug, Clone, Copy)]
struct Pull {
    offset: u32,
    size: u32,
    seq: u16,
    at: Instant,
}

/// An offline upload under way.
#[derive(Debug, Clone, Default)]
struct Upload {
    /// Bytes received from the uploader (and handed to the writer).
    received: u32,
    /// Bytes on disk.
    written: u32,
    /// The pull sent to the uploader and not answered yet: offset, size,
    /// when.
    pull: Option<(u32, u32, Instant)>,
    /// The next pull waits for writes to catch up.
    next_due: bool,
    /// Every byte is written and the commit is under way.
    committing: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Relayed live between two connected clients.
    Online { pulls: VecDeque<Pull> },
    /// Being uploaded.
    Upload(Upload),
    /// On disk, waiting for its receiver since `stored` (Unix seconds).
    Stored { stored: u32 },
}

/// One transfer.
#[derive(Debug, Clone)]
struct Task {
    from: u32,
    to: u32,
    name: String,
    size: u32,
    created: u32,
    kind: Kind,
    /// The sender's and the receiver's connection.
    from_conn: Option<Conn>,
    to_conn: Option<Conn>,
    /// Since when the task waits for a party (an online task for both to
    /// log in, an upload for its uploader); `None` while it does not.
    waiting_since: Option<Instant>,
}

impl Task {
    fn offline(&self) -> bool {
        !matches!(self.kind, Kind::Online { .. })
    }

    fn stored(&self) -> bool {
        matches!(self.kind, Kind::Stored { .. })
    }

    /// Every byte is with file_server (written or being written), so the
    /// receiver may start downloading.
    fn downloadable(&self) -> bool {
        match &self.kind {
            Kind::Stored { .. } => true,
            Kind::Upload(u) => u.received == self.size,
            Kind::Online { .. } => false,
        }
    }

    fn slot(&mut self, role: Role) -> &mut Option<Conn> {
        if role.is_from() {
            &mut self.from_conn
        } else {
            &mut self.to_conn
        }
    }
}

/// Who a client connection is, once logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Login {
    task: String,
    user: u32,
    role: Role,
}

#[derive(Debug, Default)]
struct Client {
    login: Option<Login>,
    /// Disk reads of this downloader not answered yet.
    reads: u32,
    /// The block after the last one served, read before it is asked for
    /// (a downloader asks for the next block only when it has the last,
    /// so the disk would otherwise wait on the network and back).
    ahead: Ahead,
}

/// A downloader's read-ahead block.
#[derive(Debug, Default)]
enum Ahead {
    #[default]
    None,
    /// Being read; `waiting` is the request (seq, length) that asked for
    /// it meanwhile.
    Reading {
        offset: u32,
        waiting: Option<(u16, u32)>,
    },
    /// Read, not asked for yet.
    Ready { offset: u32, data: Bytes },
}

/// file_server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Online tasks created.
    pub online_tasks: u64,
    /// Offline tasks created.
    pub offline_tasks: u64,
    /// Offline files whose upload completed (on disk with metadata).
    pub stored: u64,
    /// Bytes relayed from online senders to receivers.
    pub bytes_relayed: u64,
    /// Bytes received from uploaders.
    pub bytes_uploaded: u64,
    /// Bytes served to downloaders.
    pub bytes_downloaded: u64,
    /// Disk operations that failed.
    pub disk_errors: u64,
}

/// file_server's state. See the [module docs](super).
pub struct FileApp {
    limits: Limits,
    client_ports: HashSet<PortId>,
    /// What 0x0734 answers: the configured addresses, port 0 standing for
    /// the bound client port until it is known.
    advertised: Vec<(String, u16)>,
    disk_workers: usize,
    tasks: HashMap<String, Task>,
    /// Open (not yet stored) tasks per sender.
    per_sender: HashMap<u32, usize>,
    /// Bytes reserved by offline tasks (their announced sizes).
    reserved: u64,
    clients: HashMap<Conn, Client>,
    msg_servers: HashSet<Conn>,
    stats: FileStats,
    refusals: CounterMap,
    ended: CounterMap,
    /// The last disk operation failed.
    disk_failing: bool,
    now: Instant,
    unix: u32,
}

impl std::fmt::Debug for FileApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileApp")
            .field("tasks", &self.tasks.len())
            .field("clients", &self.clients.len())
            .field("reserved", &self.reserved)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

type Jobs = Out<DiskJob>;

impl FileApp {
    /// A file_server with `limits`, whose client ports are `client_ports`
    /// (the others are msg_server ports), advertising `advertised` (port 0:
    /// the bound client port), spreading disk work over `disk_workers`
    /// workers, with the offline files found on disk at start.
    #[must_use]
    pub fn new(
        limits: Limits,
        client_ports: impl IntoIterator<Item = PortId>,
        advertised: Vec<(String, u16)>,
        disk_workers: usize,
        stored: Vec<TaskMeta>,
        now: Instant,
    ) -> Self {
        let mut app = Self {
            limits,
            client_ports: client_ports.into_iter().collect(),
            advertised,
            disk_workers: disk_workers.max(1),
            tasks: HashMap::new(),
            per_sender: HashMap::new(),
            reserved: 0,
            clients: HashMap::new(),
            msg_servers: HashSet::new(),
            stats: FileStats::default(),
            refusals: CounterMap::new(),
            ended: CounterMap::new(),
            disk_failing: false,
            now,
            unix: 0,
        };
        for m in stored {
            app.reserved += u64::from(m.file_size);
            app.tasks.insert(
                m.task_id,
                Task {
                    from: m.from,
                    to: m.to,
                    name: m.file_name,
                    size: m.file_size,
                    created: m.created,
                    kind: Kind::Stored { stored: m.stored },
                    from_conn: None,
                    to_conn: None,
                    waiting_since: None,
                },
            );
        }
        app
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> FileStats {
        self.stats
    }

    /// Tasks held (online, uploading and stored).
    #[must_use]
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Bytes reserved by offline files (the quota in use).
    #[must_use]
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved
    }

    /// The addresses 0x0734 answers.
    #[must_use]
    pub fn advertised(&self) -> Vec<(String, u16)> {
        self.advertised.clone()
    }

    /// Refusals so far under `reason` (see the metrics).
    #[must_use]
    pub fn refusals(&self, reason: &str) -> u64 {
        self.refusals.get(reason)
    }

    /// Tasks ended so far for `reason` (see the metrics).
    #[must_use]
    pub fn ended(&self, reason: &str) -> u64 {
        self.ended.get(reason)
    }

    /// Whether `task` is stored on disk, waiting for its receiver.
    #[must_use]
    pub fn is_stored(&self, task: &str) -> bool {
        self.tasks.get(task).is_some_and(Task::stored)
    }

    /// The disk worker of `task`: one per task, so its jobs stay in order.
    fn worker(&self, task: &str) -> usize {
        // FNV-1a: stable across runs, cheap, spreads UUIDs evenly.
        let h = task.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        usize::try_from(h % self.disk_workers as u64).unwrap_or(0)
    }

    // ----- msg_server port ------------------------------------------------

    fn msg_server_pdu(&mut self, conn: Conn, pdu: &Pdu, out: &mut Jobs) {
        match Message::decode(pdu) {
            Ok(Message::OtherFileTransferReq(req)) => {
                let rsp = self.create(req);
                out.send(conn, Command::OtherFileTransferRsp.pdu(pdu.seq(), &rsp));
            }
            Ok(Message::OtherFileServerIpReq(_)) => {
                let rsp = ImFileServerIpRsp {
                    ip_addr_list: self
                        .advertised
                        .iter()
                        .map(|(ip, port)| IpAddr {
                            ip: ip.clone(),
                            port: u32::from(*port),
                        })
                        .collect(),
                };
                out.send(conn, Command::OtherFileServerIpRsp.pdu(pdu.seq(), &rsp));
            }
            Ok(Message::OtherFileTaskDelete(d)) => self.delete(&d, out),
            Ok(Message::OtherRequestFailed(_)) => {}
            Ok(other) => {
                warn!(%conn, key = %pdu.key(), "command file_server does not serve");
                if crate::rules::failure::failure_reply(&other, 0, pdu.seq()).is_some() {
                    out.send(
                        conn,
                        request_failed(
                            pdu.key(),
                            None,
                            RequestFailedCode::RequestFailedUnsupported,
                            "file_server does not serve this command",
                            pdu.seq(),
                        ),
                    );
                }
            }
            Err(e) => {
                warn!(%conn, error = %e, "undecodable PDU from msg_server");
                self.refusals.inc("bad_request");
                out.send(
                    conn,
                    request_failed(
                        pdu.key(),
                        None,
                        RequestFailedCode::RequestFailedBadRequest,
                        "undecodable body",
                        pdu.seq(),
                    ),
                );
            }
        }
    }

    /// 0x0731: a new task, or the reason it cannot be.
    fn create(&mut self, req: ImFileTransferReq) -> ImFileTransferRsp {
        let mut rsp = ImFileTransferRsp {
            result_code: RESULT_FAILED,
            from_user_id: req.from_user_id,
            to_user_id: req.to_user_id,
            file_name: Some(req.file_name.clone()),
            file_size: Some(req.file_size),
            task_id: Some(String::new()),
            trans_mode: Some(req.trans_mode),
            attach_data: req.attach_data.clone(),
        };
        let offline = req.trans_mode == OFFLINE;
        let refusal = if req.from_user_id == 0
            || req.to_user_id == 0
            || req.from_user_id == req.to_user_id
            || !is_trans_mode(req.trans_mode)
            || req.file_name.len() > MAX_FILE_NAME_LEN
            || req.file_size == 0
        {
            Some("bad_request")
        } else if self.tasks.len() >= self.limits.max_tasks
            || self.per_sender.get(&req.from_user_id).copied().unwrap_or(0)
                >= self.limits.max_tasks_per_user
        {
            Some("too_many_tasks")
        } else if offline && u64::from(req.file_size) > self.limits.max_file_bytes {
            Some("too_large")
        } else if offline && self.reserved + u64::from(req.file_size) > self.limits.quota_bytes {
            Some("quota")
        } else {
            None
        };
        if let Some(reason) = refusal {
            info!(
                from = req.from_user_id,
                to = req.to_user_id,
                size = req.file_size,
                mode = req.trans_mode,
                reason,
                "task refused"
            );
            self.refusals.inc(reason);
            return rsp;
        }
        let id = match crate::rules::files::new_task_id() {
            Ok(id) if !self.tasks.contains_key(&id) => id,
            Ok(_) => {
                // 2^-122: the generator is broken.
                self.refusals.inc("no_randomness");
                return rsp;
            }
            Err(e) => {
                warn!(error = %e, "no randomness for a task id");
                self.refusals.inc("no_randomness");
                return rsp;
            }
        };
        let kind = if offline {
            self.reserved += u64::from(req.file_size);
            self.stats.offline_tasks += 1;
            Kind::Upload(Upload::default())
        } else {
            self.stats.online_tasks += 1;
            Kind::Online {
                pulls: VecDeque::new(),
            }
        };
        *self.per_sender.entry(req.from_user_id).or_default() += 1;
        info!(task = %id, from = req.from_user_id, to = req.to_user_id, size = req.file_size,
            mode = req.trans_mode, "task created");
        self.tasks.insert(
            id.clone(),
            Task {
                from: req.from_user_id,
                to: req.to_user_id,
                name: req.file_name,
                size: req.file_size,
                created: self.unix,
                kind,
                from_conn: None,
                to_conn: None,
                waiting_since: Some(self.now),
            },
        );
        rsp.result_code = 0;
        rsp.task_id = Some(id);
        rsp
    }

    /// Our 0x07a0: a party deleted the offline file (0x050c).
    fn delete(&mut self, d: &ImFileTaskDelete, out: &mut Jobs) {
        let Some(task) = self.tasks.get(&d.task_id) else {
            debug!(task = %clip(&d.task_id), "delete of an unknown task");
            return;
        };
        if !task.offline() || (d.user_id != task.from && d.user_id != task.to) {
            warn!(task = %clip(&d.task_id), user = d.user_id, "delete by someone not a party; ignored");
            self.refusals.inc("wrong_user");
            return;
        }
        self.end(&d.task_id, "deleted", None, out);
    }

    // ----- client port: login ----------------------------------------------

    fn login(&mut self, conn: Conn, pdu: &Pdu, out: &mut Jobs) {
        let seq = pdu.seq();
        let req: ImFileLoginReq = match pdu.decode_body() {
            Ok(r) => r,
            Err(e) => {
                warn!(%conn, error = %e, "undecodable file login");
                return self.refuse(conn, seq, String::new(), "bad_request", out);
            }
        };
        let task_id = req.task_id.clone();
        if !is_task_id(&task_id) {
            return self.refuse(conn, seq, String::new(), "bad_request", out);
        }
        let Some(role) = Role::from_wire(req.file_role) else {
            return self.refuse(conn, seq, task_id, "bad_request", out);
        };
        let Some(task) = self.tasks.get(&task_id) else {
            info!(%conn, task = %task_id, user = req.user_id, "login to an unknown task");
            return self.refuse(conn, seq, task_id, "unknown_task", out);
        };
        let user_ok = if role.is_from() {
            req.user_id == task.from
        } else {
            req.user_id == task.to
        };
        if !user_ok {
            warn!(%conn, task = %task_id, user = req.user_id, ?role,
                "login by a user who is not this task's party in that role");
            return self.refuse(conn, seq, task_id, "wrong_user", out);
        }
        let state_ok = match (role, &task.kind) {
            (Role::Sender | Role::Receiver, Kind::Online { .. })
            | (Role::Uploader, Kind::Upload(_)) => true,
            (Role::Downloader, _) => task.downloadable(),
            _ => false,
        };
        if !state_ok {
            info!(%conn, task = %task_id, ?role, "login in a role the task is not in");
            return self.refuse(conn, seq, task_id, "wrong_state", out);
        }
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        // A second connection in the same role takes over (a client coming
        // back after its connection dropped, before the old one timed out).
        let old = task.slot(role).replace(conn);
        if let Some(old) = old.filter(|o| *o != conn) {
            info!(%conn, %old, task = %task_id, "connection replaced by a new login");
            if let Some(c) = self.clients.get_mut(&old) {
                c.login = None;
            }
            out.close(old, None);
        }
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let (from, both) = (
            task.from,
            task.from_conn.is_some() && task.to_conn.is_some(),
        );
        let to_conn = task.to_conn;
        match &mut task.kind {
            Kind::Online { .. } if both => task.waiting_since = None,
            Kind::Upload(u) => {
                task.waiting_since = None;
                u.pull = None;
                u.next_due = false;
            }
            _ => {}
        }
        self.clients.entry(conn).or_default().login = Some(Login {
            task: task_id.clone(),
            user: req.user_id,
            role,
        });
        debug!(%conn, task = %task_id, user = req.user_id, ?role, "file login");
        out.push(Action::Accept {
            conn,
            user_id: req.user_id,
            client_type: FILE_CLIENT_TYPE,
            reply: Command::FileLoginRes.pdu(
                seq,
                &ImFileLoginRsp {
                    result_code: 0,
                    task_id: task_id.clone(),
                },
            ),
        });
        match role {
            Role::Sender | Role::Receiver if both => {
                // As TeamTalk: the receiver hears that the sender is there.
                if let Some(to) = to_conn {
                    out.send(
                        to,
                        state_pdu(ClientFileState::ClientFilePeerReady, &task_id, from),
                    );
                }
            }
            Role::Uploader => self.next_pull(&task_id, out),
            _ => {}
        }
    }

    fn refuse(
        &mut self,
        conn: Conn,
        seq: u16,
        task_id: String,
        reason: &'static str,
        out: &mut Jobs,
    ) {
        self.refusals.inc(reason);
        out.push(Action::Refuse {
            conn,
            reply: Command::FileLoginRes.pdu(
                seq,
                &ImFileLoginRsp {
                    result_code: RESULT_FAILED,
                    task_id,
                },
            ),
        });
    }

    // ----- client port: transfer ---------------------------------------------

    fn client_pdu(&mut self, conn: Conn, pdu: &Pdu, out: &mut Jobs) {
        let Some(login) = self.clients.get(&conn).and_then(|c| c.login.clone()) else {
            // Its task ended, or another connection took its place.
            debug!(%conn, key = %pdu.key(), "PDU from a connection without a task; closing");
            out.close(conn, None);
            return;
        };
        match Message::decode(pdu) {
            Ok(Message::FilePullDataReq(req)) => self.pull_request(conn, &login, pdu, &req, out),
            Ok(Message::FilePullDataRsp(rsp)) => self.pull_data(conn, &login, pdu, rsp, out),
            Ok(Message::FileState(st)) => self.client_state(conn, &login, pdu, &st, out),
            Ok(_) => self.violation(conn, &login, "command not expected on file_server", out),
            Err(e) => {
                debug!(%conn, error = %e, "undecodable PDU");
                self.violation(conn, &login, "undecodable body", out);
            }
        }
    }

    /// A client broke the protocol: its connection is closed (which, for
    /// an online transfer, ends the task).
    fn violation(&mut self, conn: Conn, login: &Login, what: &'static str, out: &mut Jobs) {
        warn!(%conn, task = %login.task, user = login.user, role = ?login.role, what,
            "file client broke the protocol; closing");
        self.refusals.inc("protocol");
        self.detach(conn, out);
        out.close(conn, None);
    }

    /// 0x0504 from a receiver (online: relayed to the sender) or a
    /// downloader (offline: read from disk).
    fn pull_request(
        &mut self,
        conn: Conn,
        login: &Login,
        pdu: &Pdu,
        req: &ImFilePullDataReq,
        out: &mut Jobs,
    ) {
        if req.task_id != login.task || req.user_id != login.user {
            return self.violation(conn, login, "pull for another task or user", out);
        }
        let now = self.now;
        let Some(task) = self.tasks.get_mut(&login.task) else {
            return self.violation(conn, login, "task gone", out);
        };
        let end = u64::from(req.offset) + u64::from(req.data_size);
        match (login.role, &mut task.kind) {
            (Role::Receiver, Kind::Online { pulls }) => {
                if req.data_size == 0
                    || req.data_size > MAX_RELAY_CHUNK
                    || end > u64::from(task.size)
                {
                    return self.violation(conn, login, "pull outside the file", out);
                }
                if pulls.len() >= MAX_PULLS_IN_FLIGHT {
                    return self.violation(conn, login, "too many pulls in flight", out);
                }
                let Some(sender) = task.from_conn else {
                    out.send(conn, failed_data(req, login.user, pdu.seq()));
                    return;
                };
                pulls.push_back(Pull {
                    offset: req.offset,
                    size: req.data_size,
                    seq: pdu.seq(),
                    at: now,
                });
                out.send(sender, pdu.clone());
            }
            (Role::Downloader, _) => {
                if req.offset >= task.size {
                    out.send(conn, failed_data(req, login.user, pdu.seq()));
                    return;
                }
                let want = if req.data_size == 0 {
                    SEGMENT_SIZE
                } else {
                    req.data_size.min(SEGMENT_SIZE)
                };
                let len = want.min(task.size - req.offset);
                let client = self.clients.entry(conn).or_default();
                if client.reads >= MAX_READS_IN_FLIGHT {
                    return self.violation(conn, login, "too many pulls in flight", out);
                }
                match std::mem::take(&mut client.ahead) {
                    Ahead::Ready { offset, data }
                        if offset == req.offset && data.len() >= len as usize =>
                    {
                        let block = data.slice(..len as usize);
                        self.serve_block(&login.task, conn, pdu.seq(), req.offset, block, out);
                        return;
                    }
                    Ahead::Reading {
                        offset,
                        waiting: None,
                    } if offset == req.offset => {
                        client.reads += 1;
                        client.ahead = Ahead::Reading {
                            offset,
                            waiting: Some((pdu.seq(), len)),
                        };
                        return;
                    }
                    // Another offset (a client starting over elsewhere): a
                    // read under way is left to finish unused.
                    Ahead::Reading { offset, waiting } => {
                        client.ahead = Ahead::Reading { offset, waiting };
                    }
                    Ahead::Ready { .. } | Ahead::None => {}
                }
                client.reads += 1;
                let worker = self.worker(&login.task);
                out.job(
                    worker,
                    DiskJob::Read {
                        task: login.task.clone(),
                        offset: u64::from(req.offset),
                        len,
                        conn,
                        seq: pdu.seq(),
                        ahead: false,
                    },
                );
            }
            _ => self.violation(conn, login, "pull request from the sending side", out),
        }
    }

    /// 0x0505 from a sender (online: relayed to the receiver) or an
    /// uploader (offline: written to disk).
    fn pull_data(
        &mut self,
        conn: Conn,
        login: &Login,
        pdu: &Pdu,
        rsp: ImFilePullDataRsp,
        out: &mut Jobs,
    ) {
        if rsp.task_id != login.task || rsp.user_id != login.user {
            return self.violation(conn, login, "data for another task or user", out);
        }
        let Some(task) = self.tasks.get_mut(&login.task) else {
            return self.violation(conn, login, "task gone", out);
        };
        let len = u32::try_from(rsp.file_data.len()).unwrap_or(u32::MAX);
        match (login.role, &mut task.kind) {
            (Role::Sender, Kind::Online { pulls }) => {
                let Some(front) = pulls.front().copied() else {
                    return self.violation(conn, login, "data nobody asked for", out);
                };
                if rsp.offset != front.offset || len > front.size {
                    return self.violation(conn, login, "data not matching the pull", out);
                }
                pulls.pop_front();
                self.stats.bytes_relayed += u64::from(len);
                if let Some(receiver) = task.to_conn {
                    // The receiver's own seq, as TeamTalk restores it for
                    // Mac clients.
                    out.send(receiver, Pdu::new(pdu.key(), front.seq, pdu.body.clone()));
                }
            }
            (Role::Uploader, Kind::Upload(up)) => {
                let Some((offset, size, _)) = up.pull else {
                    return self.violation(conn, login, "data nobody asked for", out);
                };
                if rsp.result_code != 0 || rsp.offset != offset || len != size {
                    return self.violation(conn, login, "data not matching the pull", out);
                }
                up.pull = None;
                up.received += len;
                self.stats.bytes_uploaded += u64::from(len);
                let worker = self.worker(&login.task);
                out.job(
                    worker,
                    DiskJob::Write {
                        task: login.task.clone(),
                        offset: u64::from(offset),
                        data: rsp.file_data,
                    },
                );
                self.next_pull(&login.task, out);
            }
            _ => self.violation(conn, login, "data from the receiving side", out),
        }
    }

    /// Asks the uploader of `task` for its next segment, unless one is
    /// asked already, everything has come, there is no uploader, or too
    /// much waits for the disk (then the last write's completion asks).
    fn next_pull(&mut self, task_id: &str, out: &mut Jobs) {
        let now = self.now;
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        let (Some(conn), size, from) = (task.from_conn, task.size, task.from) else {
            return;
        };
        let Kind::Upload(up) = &mut task.kind else {
            return;
        };
        if up.pull.is_some() || up.received >= size {
            return;
        }
        if up.received - up.written >= MAX_UNWRITTEN {
            up.next_due = true;
            return;
        }
        up.next_due = false;
        let len = SEGMENT_SIZE.min(size - up.received);
        up.pull = Some((up.received, len, now));
        let req = ImFilePullDataReq {
            task_id: task_id.to_owned(),
            user_id: from,
            trans_mode: OFFLINE,
            offset: up.received,
            data_size: len,
        };
        out.send(conn, Command::FilePullDataReq.pdu(0, &req));
    }

    /// 0x0503 from a client: cancel, refuse or done. TeamTalk relays it to
    /// the other party and closes the connection.
    fn client_state(
        &mut self,
        conn: Conn,
        login: &Login,
        pdu: &Pdu,
        st: &ImFileState,
        out: &mut Jobs,
    ) {
        if st.task_id != login.task || st.user_id != login.user {
            return self.violation(conn, login, "state for another task or user", out);
        }
        let Ok(state) = ClientFileState::try_from(st.state) else {
            return self.violation(conn, login, "unknown state", out);
        };
        if state == ClientFileState::ClientFilePeerReady {
            debug!(%conn, task = %login.task, "peer-ready from a client ignored");
            return;
        }
        if !self.tasks.contains_key(&login.task) {
            out.close(conn, None);
            return;
        }
        let reason = match state {
            ClientFileState::ClientFileCancel => "cancelled",
            ClientFileState::ClientFileRefuse => "refused",
            _ => "done",
        };
        let ends = match login.role {
            Role::Sender | Role::Receiver => true,
            Role::Uploader => state != ClientFileState::ClientFileDone,
            Role::Downloader => state == ClientFileState::ClientFileRefuse,
        };
        info!(%conn, task = %login.task, user = login.user, role = ?login.role, reason,
            ends, "client state");
        if let Some(login) = self.release(conn) {
            if ends {
                // Relayed to the other party, if connected, whose
                // connection then closes too (as TeamTalk).
                self.end(&login.task, reason, Some(pdu.clone()), out);
            } else {
                self.after_leave(&login, out);
            }
        }
        out.close(conn, None);
    }

    // ----- disk results -------------------------------------------------------

    fn disk_done(&mut self, done: DiskDone, out: &mut Jobs) {
        match done {
            DiskDone::Written {
                task,
                bytes,
                result,
            } => {
                if let Err(e) = result {
                    return self.disk_failed(&task, "writing", &e, out);
                }
                self.disk_failing = false;
                let Some(t) = self.tasks.get_mut(&task) else {
                    return;
                };
                let Kind::Upload(up) = &mut t.kind else {
                    return;
                };
                up.written = up.written.saturating_add(bytes);
                if up.written >= t.size && !up.committing {
                    up.committing = true;
                    let meta =
                        TaskMeta::new(&task, t.from, t.to, &t.name, t.size, t.created, self.unix);
                    let worker = self.worker(&task);
                    out.job(worker, DiskJob::Commit(meta));
                } else if up.next_due {
                    self.next_pull(&task, out);
                }
            }
            DiskDone::Committed { task, result } => {
                if let Err(e) = result {
                    return self.disk_failed(&task, "storing", &e, out);
                }
                self.disk_failing = false;
                let Some(t) = self.tasks.get_mut(&task) else {
                    // Deleted while committing: its removal was queued
                    // after the commit, so nothing is left behind.
                    return;
                };
                t.kind = Kind::Stored { stored: self.unix };
                t.waiting_since = None;
                let (from, uploader, size) = (t.from, t.from_conn.take(), t.size);
                self.stats.stored += 1;
                self.open_task_done(from);
                info!(task = %task, size, "offline file stored");
                if let Some(conn) = uploader {
                    // As TeamTalk: DONE to the uploader, whose connection
                    // then closes.
                    if let Some(c) = self.clients.get_mut(&conn) {
                        c.login = None;
                    }
                    let done = state_pdu(ClientFileState::ClientFileDone, &task, from);
                    out.close(conn, Some(done));
                }
            }
            DiskDone::Read {
                task,
                conn,
                seq,
                offset,
                ahead,
                result,
            } => self.read_done(&task, conn, seq, offset, ahead, result, out),
            DiskDone::Removed { task, result } => {
                if let Err(e) = result {
                    self.stats.disk_errors += 1;
                    warn!(task = %task, error = %e, "offline file not removed");
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_done(
        &mut self,
        task_id: &str,
        conn: Conn,
        seq: u16,
        offset: u64,
        ahead: bool,
        result: Result<Bytes, String>,
        out: &mut Jobs,
    ) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        let Some(login) = client.login.clone().filter(|l| l.task == task_id) else {
            return;
        };
        let offset = u32::try_from(offset).unwrap_or(u32::MAX);
        let (seq, len) = if ahead {
            match std::mem::take(&mut client.ahead) {
                Ahead::Reading {
                    offset: o,
                    waiting: Some((seq, len)),
                } if o == offset => {
                    client.reads = client.reads.saturating_sub(1);
                    (seq, len)
                }
                Ahead::Reading {
                    offset: o,
                    waiting: None,
                } if o == offset => {
                    if let Ok(data) = result {
                        client.ahead = Ahead::Ready { offset, data };
                    }
                    return;
                }
                // Superseded by a request elsewhere in the file.
                other => {
                    client.ahead = other;
                    return;
                }
            }
        } else {
            client.reads = client.reads.saturating_sub(1);
            (seq, u32::MAX)
        };
        match result {
            Ok(data) => {
                self.disk_failing = false;
                let data = data.slice(..data.len().min(len as usize));
                self.serve_block(task_id, conn, seq, offset, data, out);
            }
            Err(e) => {
                self.stats.disk_errors += 1;
                self.disk_failing = true;
                warn!(task = %task_id, error = %e, "reading an offline file failed");
                let req = ImFilePullDataReq {
                    task_id: task_id.to_owned(),
                    user_id: login.user,
                    trans_mode: OFFLINE,
                    offset,
                    data_size: 0,
                };
                out.send(conn, failed_data(&req, login.user, seq));
            }
        }
    }

    /// Sends a downloader the block at `offset`; after the last one, DONE
    /// and the task is finished; else the next block is read ahead.
    fn serve_block(
        &mut self,
        task_id: &str,
        conn: Conn,
        seq: u16,
        offset: u32,
        data: Bytes,
        out: &mut Jobs,
    ) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let (from, to, size) = (task.from, task.to, task.size);
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.stats.bytes_downloaded += u64::from(len);
        let next = u64::from(offset) + u64::from(len);
        let rsp = ImFilePullDataRsp {
            result_code: 0,
            task_id: task_id.to_owned(),
            user_id: to,
            offset,
            file_data: data,
        };
        out.send(conn, Command::FilePullDataRsp.pdu(seq, &rsp));
        if next >= u64::from(size) {
            // The whole file was served: as TeamTalk, DONE and the
            // connection closes; the file is finished and removed.
            info!(task = %task_id, "offline file downloaded");
            let done = state_pdu(ClientFileState::ClientFileDone, task_id, from);
            self.release(conn);
            self.end(task_id, "done", None, out);
            out.close(conn, Some(done));
            return;
        }
        let next = u32::try_from(next).unwrap_or(u32::MAX);
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        if !matches!(client.ahead, Ahead::None) {
            return;
        }
        client.ahead = Ahead::Reading {
            offset: next,
            waiting: None,
        };
        let worker = self.worker(task_id);
        out.job(
            worker,
            DiskJob::Read {
                task: task_id.to_owned(),
                offset: u64::from(next),
                len: SEGMENT_SIZE.min(size - next),
                conn,
                seq: 0,
                ahead: true,
            },
        );
    }

    fn disk_failed(&mut self, task: &str, what: &str, error: &str, out: &mut Jobs) {
        self.stats.disk_errors += 1;
        self.disk_failing = true;
        warn!(task = %task, error, "{what} an offline file failed; task abandoned");
        let cancel = self
            .tasks
            .get(task)
            .map(|t| state_pdu(ClientFileState::ClientFileCancel, task, t.from));
        self.end(task, "disk_error", cancel, out);
    }

    // ----- connections and time -------------------------------------------------

    /// Takes `conn`'s login and its place in its task, nothing more.
    fn release(&mut self, conn: Conn) -> Option<Login> {
        let login = self.clients.get_mut(&conn).and_then(|c| c.login.take())?;
        if let Some(task) = self.tasks.get_mut(&login.task)
            && *task.slot(login.role) == Some(conn)
        {
            *task.slot(login.role) = None;
        }
        Some(login)
    }

    /// What a party leaving does to its task: an online transfer ends (the
    /// other party hears CANCEL), an upload waits for its uploader to come
    /// back and resume, a stored file keeps waiting for its receiver.
    fn after_leave(&mut self, login: &Login, out: &mut Jobs) {
        let now = self.now;
        let Some(task) = self.tasks.get_mut(&login.task) else {
            return;
        };
        match &mut task.kind {
            Kind::Online { .. } => {
                let cancel = state_pdu(ClientFileState::ClientFileCancel, &login.task, login.user);
                self.end(&login.task, "peer_left", Some(cancel), out);
            }
            Kind::Upload(up) if login.role == Role::Uploader => {
                up.pull = None;
                up.next_due = false;
                task.waiting_since = Some(now);
            }
            Kind::Upload(_) | Kind::Stored { .. } => {}
        }
    }

    /// Forgets `conn`'s place in its task, as if it had closed
    /// ([`Self::after_leave`]).
    fn detach(&mut self, conn: Conn, out: &mut Jobs) {
        if let Some(login) = self.release(conn) {
            self.after_leave(&login, out);
        }
    }

    /// Ends a task: its connections close (after `notice`, if any), its
    /// disk reservation is given back and its file removed.
    fn end(&mut self, task_id: &str, reason: &'static str, notice: Option<Pdu>, out: &mut Jobs) {
        let Some(task) = self.tasks.remove(task_id) else {
            return;
        };
        for conn in [task.from_conn, task.to_conn].into_iter().flatten() {
            if let Some(c) = self.clients.get_mut(&conn) {
                c.login = None;
            }
            out.close(conn, notice.clone());
        }
        if !task.stored() {
            self.open_task_done(task.from);
        }
        if task.offline() {
            self.reserved = self.reserved.saturating_sub(u64::from(task.size));
            let worker = self.worker(task_id);
            out.job(
                worker,
                DiskJob::Remove {
                    task: task_id.to_owned(),
                },
            );
        }
        self.ended.inc(reason);
        info!(task = %task_id, reason, "task ended");
    }

    /// A sender's open task became stored or ended.
    fn open_task_done(&mut self, from: u32) {
        if let Some(n) = self.per_sender.get_mut(&from) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_sender.remove(&from);
            }
        }
    }

    /// About once a second: tasks that waited too long end.
    fn tick(&mut self, out: &mut Jobs) {
        let now = self.now;
        let timeout = self.limits.task_timeout;
        let retention = u32::try_from(self.limits.retention.as_secs()).unwrap_or(u32::MAX);
        let late = |since: Instant| now.saturating_duration_since(since) >= timeout;
        let mut expired = Vec::new();
        let mut stalled = Vec::new();
        for (id, t) in &self.tasks {
            match &t.kind {
                Kind::Online { pulls } => {
                    if t.waiting_since.is_some_and(late) {
                        expired.push((id.clone(), "expired"));
                    } else if pulls.front().is_some_and(|p| late(p.at)) {
                        expired.push((id.clone(), "stalled"));
                    }
                }
                Kind::Upload(up) => {
                    if t.waiting_since.is_some_and(late) {
                        expired.push((id.clone(), "expired"));
                    } else if let (Some((_, _, at)), Some(conn)) = (up.pull, t.from_conn)
                        && late(at)
                    {
                        stalled.push(conn);
                    }
                }
                Kind::Stored { stored } => {
                    if t.to_conn.is_none() && self.unix.saturating_sub(*stored) >= retention {
                        expired.push((id.clone(), "retention"));
                    }
                }
            }
        }
        for (id, reason) in expired {
            self.end(&id, reason, None, out);
        }
        for conn in stalled {
            // The upload waits for its uploader to come back and resume.
            info!(%conn, "uploader did not answer a pull in time; closing");
            self.refusals.inc("stalled");
            self.detach(conn, out);
            out.close(conn, None);
        }
    }
}

/// A 0x0503 with `state` about `task`, naming `user`.
fn state_pdu(state: ClientFileState, task: &str, user: u32) -> Pdu {
    Command::FileState.pdu(
        0,
        &ImFileState {
            state: state as i32,
            task_id: task.to_owned(),
            user_id: user,
        },
    )
}

/// The failure answer of a pull: 0x0505 with `result_code` 1 and no data.
fn failed_data(req: &ImFilePullDataReq, user: u32, seq: u16) -> Pdu {
    Command::FilePullDataRsp.pdu(
        seq,
        &ImFilePullDataRsp {
            result_code: RESULT_FAILED,
            task_id: req.task_id.clone(),
            user_id: user,
            offset: req.offset,
            file_data: Bytes::new(),
        },
    )
}

impl App for FileApp {
    type Job = DiskJob;
    type Done = DiskDone;

    fn name(&self) -> &'static str {
        "file_server"
    }

    fn handle(&mut self, now: Now, input: Input<'_, DiskDone>, out: &mut Jobs) {
        self.now = now.mono;
        self.unix = now.unix();
        match input {
            Input::Listening { port, addr } if self.client_ports.contains(&port) => {
                for (_, p) in &mut self.advertised {
                    if *p == 0 {
                        *p = addr.port();
                    }
                }
            }
            Input::Opened { conn, port, peer } => {
                if self.client_ports.contains(&port) {
                    self.clients.insert(conn, Client::default());
                } else {
                    debug!(%conn, %peer, "msg_server connected");
                    self.msg_servers.insert(conn);
                }
            }
            Input::LoginRequest { conn, pdu } => self.login(conn, pdu, out),
            Input::Pdu { conn, pdu } => {
                if self.msg_servers.contains(&conn) {
                    self.msg_server_pdu(conn, pdu, out);
                } else {
                    self.client_pdu(conn, pdu, out);
                }
            }
            Input::Closed { conn, reason } => {
                if self.msg_servers.remove(&conn) {
                    info!(%conn, %reason, "msg_server disconnected");
                } else {
                    debug!(%conn, %reason, "file client closed");
                    self.detach(conn, out);
                    self.clients.remove(&conn);
                }
            }
            Input::Done(done) => self.disk_done(done, out),
            Input::Tick => self.tick(out),
            Input::Http { conn, .. } => out.close(conn, None),
            _ => {}
        }
    }

    fn collect(&self, out: &mut Scrape) {
        let s = self.stats;
        let (mut online, mut uploading, mut stored) = (0u32, 0u32, 0u32);
        for t in self.tasks.values() {
            match t.kind {
                Kind::Online { .. } => online += 1,
                Kind::Upload(_) => uploading += 1,
                Kind::Stored { .. } => stored += 1,
            }
        }
        for (state, n) in [
            ("online", online),
            ("uploading", uploading),
            ("stored", stored),
        ] {
            out.gauge(
                "teamtalk_file_tasks",
                "Transfer tasks held, by state.",
                &[("state", state)],
                f64::from(n),
            );
        }
        for (mode, n) in [("online", s.online_tasks), ("offline", s.offline_tasks)] {
            out.counter(
                "teamtalk_file_tasks_created_total",
                "Transfer tasks created for msg_servers, by mode.",
                &[("mode", mode)],
                n,
            );
        }
        out.counter(
            "teamtalk_file_stored_total",
            "Offline uploads completed (file and metadata on disk).",
            &[],
            s.stored,
        );
        self.ended.render(
            out,
            "teamtalk_file_tasks_ended_total",
            "Transfer tasks ended, by reason (done, cancelled, refused, deleted, expired, stalled, \
             retention, peer_left, disk_error).",
            &[],
            "reason",
        );
        self.refusals.render(
            out,
            "teamtalk_file_refusals_total",
            "Requests refused, by reason (bad_request, too_many_tasks, too_large, quota, \
             unknown_task, wrong_user, wrong_state, protocol, stalled, no_randomness).",
            &[],
            "reason",
        );
        for (direction, n) in [
            ("relayed", s.bytes_relayed),
            ("uploaded", s.bytes_uploaded),
            ("downloaded", s.bytes_downloaded),
        ] {
            out.counter(
                "teamtalk_file_bytes_total",
                "File bytes moved: relayed online, received from uploaders, served to downloaders.",
                &[("direction", direction)],
                n,
            );
        }
        out.gauge(
            "teamtalk_file_reserved_bytes",
            "Disk bytes reserved by offline files (their announced sizes).",
            &[],
            self.reserved as f64,
        );
        out.gauge(
            "teamtalk_file_quota_bytes",
            "Disk quota for offline files (QuotaBytes).",
            &[],
            self.limits.quota_bytes as f64,
        );
        out.counter(
            "teamtalk_file_disk_errors_total",
            "Disk operations on offline files that failed.",
            &[],
            s.disk_errors,
        );
        out.gauge(
            "teamtalk_file_msg_servers",
            "msg_servers connected.",
            &[],
            self.msg_servers.len() as f64,
        );
    }

    fn health(&self, problems: &mut Vec<String>) {
        if self.disk_failing {
            problems.push("the last disk operation on an offline file failed".to_owned());
        }
    }
}
