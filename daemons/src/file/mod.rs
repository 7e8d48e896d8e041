//! file_server: moves files between TeamTalk clients, live (online) or
//! through its disk (offline).
//!
//! Two doors, as TeamTalk's:
//!
//! - **msg_server port** (8601, `MsgServerListenPort`): every msg_server
//!   keeps a link here. It asks for the addresses clients should use
//!   (0x0733 → 0x0734) on every (re)connect, and opens a task for each
//!   file a client offers (0x0731 → 0x0732 with the task id). Server
//!   peers: with a cluster secret they must authenticate, like every
//!   server port of these daemons.
//! - **client port** (8600, `ClientListenPort`): a client logs in to one
//!   task (0x0501 → 0x0502) with its user id, the task id and its role,
//!   then data moves in pull requests and answers (0x0504 / 0x0505):
//!   online, the receiver's pulls are relayed to the sender and the
//!   sender's data back; offline, file_server pulls the uploader's file in
//!   32 KiB segments onto disk, and later serves the receiver's pulls from
//!   it. 0x0503 reports cancel, refuse and done.
//!
//! # What is checked that TeamTalk did not check
//!
//! - **The task id is the credential** (there is no other token): 122
//!   random bits from the OS generator (a UUID v4). A login must name the
//!   task's sender as sender or uploader and its receiver as receiver or
//!   downloader, in a role matching the task's mode and state; a file is
//!   served to its receiver only. The session is gated on the login
//!   (nothing else is read before it, 15 s to send it).
//! - **Every PDU after the login** must name the connection's own task and
//!   user; data must answer a pull that was asked (same offset, the size
//!   asked, inside the file), at most 4 pulls or reads in flight per
//!   connection. Anything else closes the connection (TeamTalk wrote
//!   whatever came, reading past the client's buffer).
//! - **Bounds**: a file size limit (`MaxFileBytes`) and a disk quota
//!   (`QuotaBytes`, reserved by the announced size when the task is
//!   created), at most `MaxTasks` tasks and `MaxTasksPerUser` open tasks
//!   per sender, names of at most 512 bytes.
//! - **Time**: a task waiting for its parties (online: both to log in;
//!   offline: the uploader, also after its connection dropped) or for the
//!   answer to a pull ends after `TaskTimeout`; a stored file waits
//!   `OfflineRetentionSecs` for its receiver. TeamTalk's own expiry never
//!   fired (its condition could not be true), so its tasks lived for ever.
//! - **Resumption**: an uploader that logs in again (within `TaskTimeout`)
//!   is asked for the bytes from where it stopped; a downloader may ask
//!   for any offset again.
//! - **Durability**: a stored file survives a restart: its metadata is
//!   written next to it atomically once the data is synced
//!   ([`disk`]); files are removed when downloaded, deleted (0x050c, told
//!   by msg_server with our 0x07a0), refused, or expired.
//!
//! # Structure
//!
//! [`FileApp`] is the logic (pure, unit-tested in virtual time);
//! [`DiskWorker`]s do the file I/O as jobs of the shared runtime; [`spawn`]
//! wires them to a client and a msg_server listener.

mod app;
mod config;
pub mod disk;

#[cfg(test)]
mod tests;

use teamtalk_conn::SessionConfig;
use teamtalk_net::ReactorConfig;
use teamtalk_proto::Command;

pub use app::{
    FileApp, FileStats, MAX_PULLS_IN_FLIGHT, MAX_READS_IN_FLIGHT, MAX_RELAY_CHUNK, MAX_UNWRITTEN,
    Role,
};
pub use config::{
    DEFAULT_CLIENT_PORT, DEFAULT_DATA_DIR, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_TASKS,
    DEFAULT_MAX_TASKS_PER_USER, DEFAULT_MSG_PORT, DEFAULT_QUOTA_BYTES, DEFAULT_RETENTION,
    DEFAULT_TASK_TIMEOUT, FileConfig, KNOWN_KEYS, Limits,
};
pub use disk::{DiskDone, DiskJob, DiskWorker, TaskMeta};

use crate::runtime::{self, AdminSettings, DaemonError, Plan, PortKind, Running};

/// A running file_server.
pub type RunningFile = Running<FileApp>;

/// The client sessions of file_server: TeamTalk's client session, gated
/// on `CID_FILE_LOGIN_REQ` instead of the user login.
#[must_use]
pub fn client_session() -> SessionConfig {
    SessionConfig::client().with_login_command(Command::FileLoginReq.key())
}

/// Starts a file_server: finds the offline files stored in
/// `cfg.data_dir`, binds the client and msg_server ports, starts the disk
/// workers.
///
/// # Errors
/// [`DaemonError`] when the data directory cannot be read, a port cannot
/// be bound or a thread cannot start.
pub fn spawn(cfg: FileConfig) -> Result<RunningFile, DaemonError> {
    let scan =
        disk::scan(&cfg.data_dir, cfg.limits.max_tasks).map_err(|e| DaemonError::Config {
            daemon: "file_server",
            reason: format!("data directory {}: {e}", cfg.data_dir.display()),
        })?;
    let mut plan = Plan::new();
    plan.side(
        "clients",
        ReactorConfig {
            threads: cfg.threads.max(1),
            ..ReactorConfig::default()
        },
    );
    let mut client_ports = Vec::new();
    for ip in &cfg.client_ips {
        let addr = std::net::SocketAddr::new(*ip, cfg.client_port);
        client_ports.push(plan.listen(
            "clients",
            "client",
            addr,
            PortKind::Clients(client_session()),
        ));
    }
    for ip in &cfg.msg_ips {
        let addr = std::net::SocketAddr::new(*ip, cfg.msg_port);
        let kind = PortKind::Peers(SessionConfig::server_peer());
        match &cfg.peer_tls {
            Some(tls) => plan.listen_tls(
                "peers",
                "msg_server",
                addr,
                kind,
                std::sync::Arc::clone(tls),
            ),
            None => plan.listen("peers", "msg_server", addr, kind),
        };
    }
    for _ in 0..cfg.disk_workers.max(1) {
        plan.worker(DiskWorker::new(&cfg.data_dir));
    }
    plan.admin(
        cfg.admin
            .map(|a| AdminSettings::with_token(a, cfg.admin_token.clone())),
    );
    plan.peer_policy(cfg.peers.clone());
    let app = FileApp::new(
        cfg.limits.clone(),
        client_ports,
        cfg.advertised(0),
        cfg.disk_workers,
        scan.stored,
        crate::clock::now(),
    );
    runtime::start(app, plan)
}

impl RunningFile {
    /// The first client address (the bound port when 0 was asked).
    ///
    /// # Panics
    /// Never for a file_server started by [`spawn`], which always has a
    /// client port.
    #[must_use]
    pub fn client_addr(&self) -> std::net::SocketAddr {
        self.addrs_of("client")[0]
    }

    /// The first msg_server address.
    ///
    /// # Panics
    /// Never for a file_server started by [`spawn`].
    #[must_use]
    pub fn msg_server_addr(&self) -> std::net::SocketAddr {
        self.addrs_of("msg_server")[0]
    }

    /// Counters so far (zero when the daemon does not answer).
    #[must_use]
    pub fn stats(&self) -> FileStats {
        self.inspect(FileApp::stats).unwrap_or_default()
    }
}
