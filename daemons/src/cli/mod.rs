//! The `teamtalk` command and the per-daemon binaries' shared `main`.
//!
//! Binaries stay a few lines: they parse arguments with the types here and
//! call [`run`] or [`run_daemon`], which return typed errors the binary
//! prints.

pub mod daemon;
pub mod groups;
pub mod remote;
pub mod users;

pub use daemon::{Daemon, DaemonArgs, daemon_main, run_daemon};

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use crossbeam_channel::Receiver;
use tracing::{info, warn};

use crate::conf::ConfError;
use crate::store::directory;
use crate::system::{self, SystemConfig, SystemError};

/// `teamtalk`: run and administer a TeamTalk-compatible system.
#[derive(Debug, Parser)]
#[command(name = "teamtalk", version = VERSION, about)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
}

/// The version string every binary prints: crate version and the git
/// commit it was built from (when built from a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TEAMTALK_GIT_HASH"),
    ")"
);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines; coloured only on a terminal and without
    /// `NO_COLOR`.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `teamtalk` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Commands {
    /// Run every daemon in this process on loopback, with the embedded store
    /// (db_proxy, route, login, file and msg servers).
    Up(UpArgs),
    /// A terminal TeamTalk client: chat interactively or run scripted steps.
    Chat(crate::tools::chat::ChatArgs),
    /// Manage users in the store.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage departments in the store.
    #[command(subcommand)]
    Dept(DeptCommand),
    /// Manage groups in the store (NORMAL groups, made by the administration).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Load-test a TeamTalk cluster (ours or the C++ one) over the client protocol.
    Bench(crate::tools::bench::BenchArgs),
    /// Copy a TeamTalk deployment (its MySQL and Redis) into the embedded
    /// store: users with their passwords, departments, groups, all history,
    /// sessions and unread counts. Resumable: run it again after a stop.
    Import(ImportArgs),
}

/// Arguments of `teamtalk import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The deployment's MySQL (`mysql://user:pw@host:port/dbname`, as its
    /// dbproxyserver.conf's teamtalk_master_* keys say). Only read.
    #[arg(long, env = "TEAMTALK_MYSQL")]
    pub mysql: String,
    /// Its Redis (`redis://host:port/db`, the `unread_*` keys; TeamTalk
    /// keeps every role in one database by default). Only read.
    #[arg(long, env = "TEAMTALK_REDIS")]
    pub redis: String,
    /// The embedded store to fill (created if missing; not while a
    /// `teamtalk up` or db_proxy_server serves it).
    #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
    pub data_dir: PathBuf,
}

/// Arguments of `teamtalk up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Directory of the SQLite store (and, with --mysql, of the cluster
    /// secret, msfs's images and file_server's files).
    #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
    pub data_dir: PathBuf,
    /// Keep the data in this MySQL/MariaDB database on TeamTalk's schema
    /// (`mysql://user:pw@host:port/dbname`, created if missing) instead of
    /// SQLite; needs --redis.
    #[arg(long, requires = "redis", env = "TEAMTALK_MYSQL")]
    pub mysql: Option<String>,
    /// The Redis TeamTalk keeps counters and tokens in
    /// (`redis://host:port/db`), with --mysql.
    #[arg(long, requires = "mysql", env = "TEAMTALK_REDIS")]
    pub redis: Option<String>,
    /// Address every daemon listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// How many msg_servers (ports 8000, 8001, …); file_server listens on
    /// 8600 (clients) and 8601 (msg_servers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub msg_servers: u16,
    /// Let the kernel pick every port (prints them) instead of TeamTalk's.
    #[arg(long)]
    pub any_ports: bool,
    /// Add N to every TeamTalk port, the admin port included (TeamTalk's
    /// test scripts run a second cluster at +10000; may be negative).
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        conflicts_with = "any_ports"
    )]
    pub port_offset: Option<i32>,
    /// One daemon's port, after `--port-offset`: `NAME=PORT`, repeatable.
    /// Names: db_proxy, route, login_msg, login_http, login_client, msg
    /// (the first msg_server; the others follow), ws, msfs, file_client,
    /// file_msg, push, http_msg. Port 0 lets the kernel pick.
    #[arg(long = "port", value_name = "NAME=PORT", value_parser = parse_port_setting)]
    pub ports: Vec<(String, u16)>,
    /// Admin endpoint for all daemons: `/metrics` (Prometheus) and
    /// `/healthz`. Default: the host's port 8090 (a free port with
    /// `--any-ports`).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Serve no admin endpoint.
    #[arg(long, conflicts_with = "admin")]
    pub no_admin: bool,
    /// File holding the bearer token the admin endpoint requires
    /// (`Authorization: Bearer <token>`); needed when `--admin` is not a
    /// loopback address. A file, not an argument, so the token does not
    /// show in process listings.
    #[arg(long, conflicts_with = "no_admin")]
    pub admin_token_file: Option<PathBuf>,
    /// The msfs URL handed to clients (images, avatars), when they reach
    /// it by another name than `--host`, e.g. `http://chat.example:8700/`.
    /// Default: msfs's own address.
    #[arg(long)]
    pub msfs_url: Option<String>,
    /// push_server's sink: a webhook every push is POSTed to as JSON
    /// (docs/protocol.md, "Push notifications"). Without it push_server
    /// runs with no sink and the msg_servers do not push (every token
    /// would be answered "no sink"); FCM and APNs need credentials: run
    /// push_server with a pushserver.conf for them.
    #[arg(long, value_name = "URL")]
    pub push_webhook: Option<String>,
    /// File holding the webhook's bearer token (`Authorization: Bearer`).
    #[arg(long, requires = "push_webhook")]
    pub push_webhook_token_file: Option<PathBuf>,
    /// An app key http_msg_server accepts in `app_key` (repeatable).
    /// Without one, a random key is generated and printed.
    #[arg(long = "app-key", value_name = "KEY")]
    pub app_keys: Vec<String>,
    /// Argon2id cost of the passwords the admin API sets.
    #[command(flatten)]
    pub argon2: Argon2Args,
}

/// The Argon2id cost of passwords a command hashes: the CPU and memory
/// each later login of such a user costs db_proxy when its credential
/// cache does not know the login (the first after a restart, or after 10
/// minutes), and what each guess costs whoever steals the store. Stored
/// hashes keep their own cost; only passwords set from now on follow.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Argon2Args {
    /// Argon2id memory per password, in KiB (8 to 1048576; default 19456,
    /// OWASP's 19 MiB): a check takes about a quarter of a millisecond of
    /// a core per MiB and pass (10.5 ms at the default).
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(8..=1_048_576))]
    pub argon2_memory_kib: Option<u32>,
    /// Argon2id passes over that memory (1 to 64; default 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub argon2_passes: Option<u32>,
}

impl Argon2Args {
    /// Whether either setting was given.
    #[must_use]
    pub fn given(&self) -> bool {
        self.argon2_memory_kib.is_some() || self.argon2_passes.is_some()
    }

    /// The settings, each defaulting to
    /// [`HashParams::RECOMMENDED`](crate::password::HashParams::RECOMMENDED)'s;
    /// a warning when they are weaker than OWASP's recommendation.
    ///
    /// # Errors
    /// [`CliError::Usage`] for values out of range.
    pub fn params(&self) -> Result<crate::password::HashParams, CliError> {
        let params =
            crate::password::HashParams::with_overrides(self.argon2_memory_kib, self.argon2_passes)
                .map_err(|e| CliError::Usage(e.to_string()))?;
        if params.weaker_than_owasp() {
            warn!(%params, "Argon2 settings weaker than OWASP's recommendation: a leaked store is cheaper to attack");
        }
        Ok(params)
    }
}

/// `teamtalk user …`. Users are named by login name or id. The store is
/// `--data-dir`, else `$TEAMTALK_DATA_DIR`, else `./teamtalk-data`; no
/// command creates one without `--create`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum UserCommand {
    /// Add one user.
    Add {
        /// Login name (no spaces or control characters).
        name: String,
        /// Password in plain text (stored as Argon2id of its md5hex).
        #[arg(long)]
        password: String,
        /// Display name (defaults to the login name).
        #[arg(long)]
        nick: Option<String>,
        /// Department name or id (`teamtalk dept list`).
        #[arg(long)]
        dept: Option<String>,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
        /// Create the store if there is none in the data directory.
        #[arg(long)]
        create: bool,
        /// The password's hashing cost (the local store only: a running
        /// system hashes with its own).
        #[command(flatten)]
        argon2: Argon2Args,
    },
    /// Add users `<prefix>1` … `<prefix><count>` in one go, for load tests.
    Seed {
        /// Name prefix.
        #[arg(long)]
        prefix: String,
        /// How many.
        #[arg(long)]
        count: u32,
        /// Password of every seeded user.
        #[arg(long)]
        password: String,
        /// Store TeamTalk's salted-MD5 form instead of Argon2id (as users
        /// imported from a C++ deployment): logins cost no password hash.
        /// For load-test accounts only.
        #[arg(long)]
        teamtalk_md5: bool,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// Seed a MySQL store instead (`mysql://user:pw@host:port/dbname`,
        /// with --redis), as `teamtalk up --mysql` uses.
        #[arg(long, requires = "redis")]
        mysql: Option<String>,
        /// The MySQL store's Redis (`redis://host:port/db`).
        #[arg(long, requires = "mysql")]
        redis: Option<String>,
        /// Create the store if there is none in the data directory.
        #[arg(long)]
        create: bool,
        /// The hashing cost of the shared password (without
        /// `--teamtalk-md5`).
        #[command(flatten)]
        argon2: Argon2Args,
    },
    /// List users, disabled ones included (opens the store read-only).
    List {
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// Change a user's password; the old one stops working at once, even
    /// while the system runs.
    Passwd {
        /// Login name or id.
        user: String,
        /// The new password in plain text.
        #[arg(long)]
        password: String,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
        /// The new password's hashing cost (the local store only: a
        /// running system hashes with its own).
        #[command(flatten)]
        argon2: Argon2Args,
    },
    /// Refuse a user's logins from now on (TeamTalk's "departed" status);
    /// `user enable` undoes it.
    Disable {
        /// Login name or id.
        user: String,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// Let a disabled user log in again.
    Enable {
        /// Login name or id.
        user: String,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// Delete a user (their groups lose them; what they sent stays in the
    /// others' history).
    Del {
        /// Login name or id.
        user: String,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
}

/// `teamtalk dept …`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum DeptCommand {
    /// Add a department (names are unique).
    Add {
        /// Name.
        name: String,
        /// Parent department, by name or id (0 or none: top level).
        #[arg(long)]
        parent: Option<String>,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
        /// Create the store if there is none in the data directory.
        #[arg(long)]
        create: bool,
    },
    /// List departments (opens the store read-only).
    List {
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// Rename a department.
    Rename {
        /// Department name or id.
        dept: String,
        /// The new name.
        name: String,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// Delete an empty department (clients see it deleted at their next
    /// directory sync).
    Del {
        /// Department name or id.
        dept: String,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
}

/// `teamtalk group …`. Users are named by id or login name.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum GroupCommand {
    /// Create a NORMAL group; the creator is a member.
    Create {
        /// Group name.
        name: String,
        /// The creator (who alone may change it from a client).
        #[arg(long)]
        creator: String,
        /// Members besides the creator (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// Avatar URL.
        #[arg(long, default_value = "")]
        avatar: String,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// List every group.
    List {
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// Show a group and its members.
    Show {
        /// Group id.
        group: u32,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// Add members to a group.
    Add {
        /// Group id.
        group: u32,
        /// Users to add.
        #[arg(required = true)]
        users: Vec<String>,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
    /// Remove members from a group.
    Remove {
        /// Group id.
        group: u32,
        /// Users to remove.
        #[arg(required = true)]
        users: Vec<String>,
        /// Directory of the SQLite store.
        #[arg(long, env = "TEAMTALK_DATA_DIR", default_value = "teamtalk-data")]
        data_dir: PathBuf,
        /// The admin API of a running system (see `--admin`).
        #[command(flatten)]
        api: remote::ApiArgs,
    },
}

impl UserCommand {
    /// Where the command may go over the admin API: its API arguments and
    /// data directory (`user seed` works on the store only).
    fn api_target(&self) -> Option<(&remote::ApiArgs, &Path)> {
        match self {
            Self::Add { api, data_dir, .. }
            | Self::List { api, data_dir }
            | Self::Passwd { api, data_dir, .. }
            | Self::Disable { api, data_dir, .. }
            | Self::Enable { api, data_dir, .. }
            | Self::Del { api, data_dir, .. } => Some((api, data_dir)),
            Self::Seed { .. } => None,
        }
    }

    /// The hashing cost asked for, if the command hashes a password.
    fn argon2(&self) -> Option<&Argon2Args> {
        match self {
            Self::Add { argon2, .. } | Self::Seed { argon2, .. } | Self::Passwd { argon2, .. } => {
                Some(argon2)
            }
            Self::List { .. } | Self::Disable { .. } | Self::Enable { .. } | Self::Del { .. } => {
                None
            }
        }
    }
}

impl DeptCommand {
    fn api_target(&self) -> (&remote::ApiArgs, &Path) {
        match self {
            Self::Add { api, data_dir, .. }
            | Self::List { api, data_dir }
            | Self::Rename { api, data_dir, .. }
            | Self::Del { api, data_dir, .. } => (api, data_dir),
        }
    }
}

impl GroupCommand {
    fn api_target(&self) -> (&remote::ApiArgs, &Path) {
        match self {
            Self::Create { api, data_dir, .. }
            | Self::List { api, data_dir }
            | Self::Show { api, data_dir, .. }
            | Self::Add { api, data_dir, .. }
            | Self::Remove { api, data_dir, .. } => (api, data_dir),
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Starting the system failed.
    #[error(transparent)]
    System(#[from] SystemError),
    /// A chat failed.
    #[error(transparent)]
    Chat(#[from] crate::tools::chat::ChatError),
    /// A directory command failed.
    #[error(transparent)]
    Users(#[from] users::UsersError),
    /// A directory operation refused.
    #[error(transparent)]
    Directory(#[from] directory::DirectoryError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A group command failed.
    #[error(transparent)]
    Groups(#[from] groups::GroupsError),
    /// The configuration file is unusable.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// A daemon could not be configured or started.
    #[error("{0}")]
    Daemon(String),
    /// Installing the Ctrl-C handler failed.
    #[error("cannot handle signals: {0}")]
    Signal(#[from] ctrlc::Error),
    /// Writing to the terminal failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    /// A benchmark could not run.
    #[error(transparent)]
    Bench(#[from] crate::tools::bench::BenchError),
    /// The admin API refused, or could not be reached.
    #[error(transparent)]
    Remote(remote::RemoteError),
    /// Arguments that cannot work together, or a clash they caused.
    #[error("{0}")]
    Usage(String),
}

/// `teamtalk import`: progress lines while it runs, a summary at the end.
fn import(args: &ImportArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let fail = |e: &dyn std::fmt::Display| CliError::Daemon(e.to_string());
    let config = crate::store::MysqlConfig::new(&args.mysql, &args.redis);
    let source = crate::store::MysqlStore::open_existing(&config).map_err(|e| fail(&e))?;
    let _lock = crate::store::ServeLock::acquire(&args.data_dir).map_err(|e| fail(&e))?;
    let target = crate::store::SqliteStore::open(&args.data_dir).map_err(|e| fail(&e))?;
    writeln!(
        out,
        "importing {} into {}",
        source.describe(),
        args.data_dir.display()
    )?;
    let mut io_error = None;
    let report = crate::store::mysql_redis::import::import(&source, &target, &mut |stage, n| {
        if let Err(e) = writeln!(out, "  {stage}: {n}") {
            io_error.get_or_insert(e);
        }
    })
    .map_err(|e| {
        fail(&format!(
            "{e} (what was copied stays; run the same command again to resume)"
        ))
    })?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    writeln!(
        out,
        "imported {} users, {} departments, {} messages in {} conversations, {} groups \
         ({} members, {} messages), {} sessions, {} unread counters, {} offline files",
        report.users,
        report.departments,
        report.messages,
        report.conversations,
        report.groups,
        report.group_members,
        report.group_messages,
        report.sessions,
        report.unread,
        report.offline_files
    )?;
    Ok(())
}

/// `NAME=PORT` of `teamtalk up --port`.
fn parse_port_setting(s: &str) -> Result<(String, u16), String> {
    let (name, port) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PORT"))?;
    if !matches!(name, "push" | "http_msg") && !system::PORT_NAMES.contains(&name) {
        return Err(format!(
            "no port named {name:?}; the names are {}, push, http_msg",
            system::PORT_NAMES.join(", ")
        ));
    }
    let port = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number (0-65535)"))?;
    Ok((name.to_owned(), port))
}

/// Sets up logging: `RUST_LOG` decides the level (default `info`).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let (filter, rejected) = match std::env::var("RUST_LOG") {
        Ok(value) => match EnvFilter::try_new(&value) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new("info"), Some((value, e))),
        },
        Err(_) => (EnvFilter::new("info"), None),
    };
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // A log reader that goes away (a closed pipe, a restarted journal) must
    // not take the daemon with it: tracing-subscriber would report the
    // failed write on stderr with `eprintln!`, which panics on the same
    // broken pipe, and a panic there aborts.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    if let Some((value, e)) = rejected {
        warn!(value = %crate::clip::clip(&value), error = %e, "RUST_LOG is not a valid filter; logging at info");
    }
}

/// Runs a `teamtalk` command.
///
/// # Errors
/// [`CliError`] describing what failed.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Commands::Up(args) => up(&args, &mut out),
        Commands::Import(args) => import(&args, &mut out),
        Commands::Bench(args) => {
            // Ctrl-C stops the run; the summary of what ran so far is
            // still written (a second Ctrl-C while it is written has no
            // further effect: the process ends with the run).
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = std::sync::Arc::clone(&stop);
            ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::Relaxed))?;
            Ok(crate::tools::bench::run_until(&args, &mut out, &stop)?)
        }
        Commands::Chat(args) => Ok(crate::tools::chat::run(&args, &mut out)?),
        Commands::User(cmd) => user_command(cmd, &mut out),
        Commands::Dept(cmd) => dept_command(cmd, &mut out),
        Commands::Group(cmd) => group_command(cmd, &mut out),
    }
}

/// The store directory when none is given: `$TEAMTALK_DATA_DIR`, else
/// `./teamtalk-data` (the same for `teamtalk up`, `teamtalk user …` and
/// `db_proxy_server` without `DataDir`).
#[must_use]
pub fn default_data_dir() -> PathBuf {
    std::env::var_os(DATA_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(crate::db_proxy::DEFAULT_DATA_DIR),
            PathBuf::from,
        )
}

/// The environment variable naming the default store directory.
pub const DATA_DIR_ENV: &str = "TEAMTALK_DATA_DIR";

fn write_access(create: bool) -> users::Access {
    if create {
        users::Access::Create
    } else {
        users::Access::Write
    }
}

fn user_command(cmd: UserCommand, out: &mut dyn Write) -> Result<(), CliError> {
    use users::Access;
    if let Some((api, dir)) = cmd.api_target()
        && let Some(client) = remote::client(api, dir)?
    {
        if cmd.argon2().is_some_and(Argon2Args::given) {
            return Err(CliError::Usage(
                "--argon2-memory-kib and --argon2-passes apply to the store itself; this change \
                 goes through the running system's admin API, which hashes with its own settings \
                 (teamtalk up --argon2-…, or Argon2MemoryKiB/Argon2Passes in \
                 dbproxyserver.conf)"
                    .into(),
            ));
        }
        return remote::user(&cmd, &client, out);
    }
    let hash_params = cmd
        .argon2()
        .map(Argon2Args::params)
        .transpose()?
        .unwrap_or_default();
    match cmd {
        UserCommand::Add {
            name,
            password,
            nick,
            dept,
            data_dir,
            create,
            ..
        } => {
            // Checked before the store is opened: a typo is reported as a
            // typo, not as a missing store.
            directory::check_name(&name)?;
            directory::check_password(&password)?;
            let store = users::open_with(&data_dir, write_access(create), hash_params)?;
            let id =
                directory::add_user(&store, &name, &password, nick.as_deref(), dept.as_deref())?;
            writeln!(out, "added user {name} with id {id}")?;
        }
        UserCommand::Seed {
            prefix,
            count,
            password,
            teamtalk_md5,
            data_dir,
            mysql,
            redis,
            create,
            ..
        } => {
            let ids = match (mysql, redis) {
                (Some(mysql), Some(redis)) => {
                    let config = crate::store::MysqlConfig::new(&mysql, &redis);
                    let options = crate::store::StoreOptions {
                        hash_params,
                        ..crate::store::StoreOptions::default()
                    };
                    let store = crate::store::MysqlStore::open(&config, options)
                        .map_err(|e| CliError::Daemon(e.to_string()))?;
                    directory::seed_users(&store, &prefix, count, &password, teamtalk_md5)?
                }
                _ => {
                    let store = users::open_with(&data_dir, write_access(create), hash_params)?;
                    directory::seed_users(&store, &prefix, count, &password, teamtalk_md5)?
                }
            };
            match (ids.first(), ids.last()) {
                (Some(first), Some(last)) => writeln!(
                    out,
                    "added {} users {prefix}1..{prefix}{count} (ids {first}..{last})",
                    ids.len()
                )?,
                _ => writeln!(out, "added no users")?,
            }
        }
        UserCommand::List { data_dir, .. } => {
            let store = users::open(&data_dir, Access::Read)?;
            let n = users::print_users(&store, out)?;
            writeln!(out, "{n} users")?;
        }
        UserCommand::Passwd {
            user,
            password,
            data_dir,
            ..
        } => {
            directory::check_password(&password)?;
            let store = users::open_with(&data_dir, Access::Write, hash_params)?;
            let u = directory::set_password(&store, &user, &password)?;
            writeln!(
                out,
                "changed the password of {} (id {}); the old one is refused from now on",
                u.name, u.id
            )?;
        }
        UserCommand::Disable { user, data_dir, .. } => {
            let store = users::open(&data_dir, Access::Write)?;
            let u = directory::set_disabled(&store, &user, true)?;
            writeln!(
                out,
                "disabled {} (id {}): logins are refused from now on (`teamtalk user enable {}` undoes it)",
                u.name, u.id, u.name
            )?;
        }
        UserCommand::Enable { user, data_dir, .. } => {
            let store = users::open(&data_dir, Access::Write)?;
            let u = directory::set_disabled(&store, &user, false)?;
            writeln!(out, "enabled {} (id {})", u.name, u.id)?;
        }
        UserCommand::Del { user, data_dir, .. } => {
            let store = users::open(&data_dir, Access::Write)?;
            let u = directory::delete_user(&store, &user)?;
            writeln!(out, "deleted user {} (id {})", u.name, u.id)?;
        }
    }
    Ok(())
}

fn dept_command(cmd: DeptCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let (api, dir) = cmd.api_target();
    if let Some(client) = remote::client(api, dir)? {
        return remote::dept(&cmd, &client, out);
    }
    match cmd {
        DeptCommand::Add {
            name,
            parent,
            data_dir,
            create,
            ..
        } => {
            let store = users::open(&data_dir, write_access(create))?;
            let parent = parent.filter(|p| p != "0");
            let id = directory::add_dept(&store, &name, parent.as_deref())?;
            writeln!(out, "added department {name} with id {id}")?;
        }
        DeptCommand::Rename {
            dept,
            name,
            data_dir,
            ..
        } => {
            directory::check_dept_name(&name)?;
            let store = users::open(&data_dir, users::Access::Write)?;
            let d = directory::rename_dept(&store, &dept, &name)?;
            writeln!(out, "renamed department {} (id {}) to {name}", d.name, d.id)?;
        }
        DeptCommand::Del { dept, data_dir, .. } => {
            let store = users::open(&data_dir, users::Access::Write)?;
            let d = directory::delete_dept(&store, &dept)?;
            writeln!(out, "deleted department {} (id {})", d.name, d.id)?;
        }
        DeptCommand::List { data_dir, .. } => {
            let store = users::open(&data_dir, users::Access::Read)?;
            let n = users::print_depts(&store, out)?;
            writeln!(out, "{n} departments")?;
        }
    }
    Ok(())
}

fn group_command(cmd: GroupCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let (api, dir) = cmd.api_target();
    if let Some(client) = remote::client(api, dir)? {
        return remote::group(&cmd, &client, out);
    }
    match cmd {
        GroupCommand::Create {
            name,
            creator,
            members,
            avatar,
            data_dir,
            ..
        } => {
            groups::print_create(&data_dir, &name, &avatar, &creator, &members, out)?;
        }
        GroupCommand::List { data_dir, .. } => {
            let n = groups::print_list(&data_dir, out)?;
            writeln!(out, "{n} groups")?;
        }
        GroupCommand::Show {
            group, data_dir, ..
        } => groups::print_show(&data_dir, group, out)?,
        GroupCommand::Add {
            group,
            users,
            data_dir,
            ..
        } => {
            groups::print_change(&data_dir, group, true, &users, out)?;
        }
        GroupCommand::Remove {
            group,
            users,
            data_dir,
            ..
        } => {
            groups::print_change(&data_dir, group, false, &users, out)?;
        }
    }
    Ok(())
}

/// Largest admin token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// Reads a bearer token: the file's first line, trimmed, non-empty.
fn read_token(path: &Path) -> Result<String, CliError> {
    use std::io::Read as _;
    let bad = |why: String| CliError::Daemon(format!("admin token file {}: {why}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE).read_to_string(&mut text))
        .map_err(|e| bad(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(bad("empty".to_owned()));
    }
    Ok(token.to_owned())
}

/// A channel that receives one message on Ctrl-C or SIGTERM.
pub(crate) fn stop_signal() -> Result<Receiver<()>, CliError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })?;
    Ok(rx)
}

fn up(args: &UpArgs, out: &mut dyn Write) -> Result<(), CliError> {
    // The banner names every daemon's addresses and the summary says how
    // they stopped: their own lines would say it twice.
    crate::runtime::log_lifecycle_at_debug(true);
    // Every client is a descriptor; the default soft limit (often 1024) would cap connections.
    let _ = teamtalk_net::raise_fd_limit();
    let cfg = if args.any_ports {
        SystemConfig::ephemeral(&args.data_dir, args.msg_servers)
    } else {
        SystemConfig::teamtalk_ports(&args.data_dir, args.msg_servers)
    };
    let mut cfg = cfg;
    cfg.host = args.host;
    cfg.hash_params = args.argon2.params()?;
    let offset = args.port_offset.unwrap_or(0);
    cfg.ports.shift(offset).map_err(CliError::Usage)?;
    if cfg.push.port != 0 {
        cfg.push.port = u16::try_from(i32::from(cfg.push.port) + offset)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "push_server port moved by {offset} is out of range"
                ))
            })?;
    }
    if cfg.http_msg.port != 0 {
        cfg.http_msg.port = u16::try_from(i32::from(cfg.http_msg.port) + offset)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "http_msg_server port moved by {offset} is out of range"
                ))
            })?;
    }
    for (name, port) in &args.ports {
        if name == "push" {
            cfg.push.port = *port;
            continue;
        }
        if name == "http_msg" {
            cfg.http_msg.port = *port;
            continue;
        }
        cfg.ports.set(name, *port).map_err(CliError::Usage)?;
    }
    let admin_port = if args.any_ports {
        0
    } else {
        u16::try_from(i32::from(system::DEFAULT_ADMIN_PORT) + offset).map_err(|_| {
            CliError::Usage(format!(
                "admin port {} moved by {offset} is out of range",
                system::DEFAULT_ADMIN_PORT
            ))
        })?
    };
    cfg.admin = match (args.no_admin, args.admin) {
        (true, _) => None,
        (false, Some(addr)) => Some(addr),
        (false, None) => Some(SocketAddr::new(args.host, admin_port)),
    };
    if let Some(path) = &args.admin_token_file {
        cfg.admin_token = Some(read_token(path)?);
    }
    cfg.msfs_url.clone_from(&args.msfs_url);
    if args.app_keys.iter().any(|k| k.trim().is_empty()) {
        return Err(CliError::Usage(
            "--app-key: a key cannot be empty".to_owned(),
        ));
    }
    cfg.http_msg.app_keys.clone_from(&args.app_keys);
    if let (Some(mysql), Some(redis)) = (&args.mysql, &args.redis) {
        cfg.mysql = Some(crate::store::MysqlConfig::new(mysql, redis));
    }
    let cfg_store = cfg.mysql.as_ref().map(crate::store::MysqlConfig::describe);
    if let Some(url) = &args.push_webhook {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CliError::Daemon(format!(
                "--push-webhook {url:?}: not an http(s) URL"
            )));
        }
        let bearer = match &args.push_webhook_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        cfg.push.sinks.webhook = Some(crate::push::WebhookSettings {
            url: url.clone(),
            bearer,
        });
        cfg.push.routes = crate::push::default_routes(&cfg.push.sinks);
    }
    let stop = stop_signal()?;
    let sys = system::start(cfg).map_err(|e| match e {
        SystemError::Daemon(ref d) if d.is_addr_in_use() => CliError::Usage(format!(
            "{e}\n  another teamtalk up or a TeamTalk cluster is using it: stop it, or run with \
             --any-ports (free ports, printed), --port-offset N or --port NAME=PORT"
        )),
        other => CliError::System(other),
    })?;
    if !sys.wait_ready(Duration::from_secs(10)) {
        warn!("not every msg_server registered with login_server within 10 s");
    }
    let msgs: Vec<String> = sys.msg_addrs().iter().map(ToString::to_string).collect();
    let at = match &cfg_store {
        Some(describe) => describe.clone(),
        None => args.data_dir.display().to_string(),
    };
    writeln!(out, "teamtalk-rs is up; store in {at}")?;
    writeln!(
        out,
        "  clients start at   http://{}/msg_server  (then TCP to the msg_server it names)",
        sys.http_addr()
    )?;
    writeln!(
        out,
        "  web client         http://{}/  (open it in a browser)",
        sys.http_addr()
    )?;
    writeln!(out, "  msg_server         {}", msgs.join(", "))?;
    let ws: Vec<String> = sys
        .ws_addrs()
        .iter()
        .map(|a| format!("ws://{a}/"))
        .collect();
    if !ws.is_empty() {
        writeln!(out, "  browsers           {}", ws.join(", "))?;
    }
    writeln!(
        out,
        "  msfs               {}  (images, avatars; files in {})",
        sys.msfs_url(),
        args.data_dir.join("msfs").display()
    )?;
    if let Some(c) = sys.login_client_addr() {
        writeln!(out, "  login_server       legacy TCP {c}")?;
    }
    writeln!(out, "  route_server       {}", sys.route_addr())?;
    writeln!(out, "  db_proxy_server    {}", sys.db_addr())?;
    writeln!(
        out,
        "  file_server        clients {}, msg_servers {}; offline files in {}",
        sys.file_client_addr(),
        sys.file_msg_addr(),
        args.data_dir.join(crate::file::DEFAULT_DATA_DIR).display()
    )?;
    let sink = args.push_webhook.as_deref().map_or_else(
        || "no sink: msg_servers do not push".to_owned(),
        |u| format!("webhook {u}"),
    );
    writeln!(out, "  push_server        {}  ({sink})", sys.push_addr())?;
    let keys = if args.app_keys.is_empty() {
        format!(
            "app_key {} (generated; --app-key KEY to choose)",
            sys.http_msg_app_keys().join(", ")
        )
    } else {
        format!("{} app key(s) from --app-key", args.app_keys.len())
    };
    writeln!(
        out,
        "  http_msg_server    http://{}  ({keys})",
        sys.http_msg_addr()
    )?;
    if let Some(a) = sys.admin_addr() {
        writeln!(
            out,
            "  admin              http://{a}/metrics  http://{a}/healthz"
        )?;
        writeln!(
            out,
            "  admin console      http://{a}/  (REST API under http://{a}/api/, \
             described at /api/openapi.json)"
        )?;
        // `teamtalk user|dept|group` find the API here while we run.
        let reachable = match a.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => {
                SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.port())
            }
            IpAddr::V6(v6) if v6.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), a.port())
            }
            _ => a,
        };
        let ad = remote::Advertised {
            url: format!("http://{reachable}"),
            token_file: args
                .admin_token_file
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        };
        if let Err(e) = remote::advertise(&args.data_dir, &ad) {
            warn!(error = %e, "cannot write {} in the data directory", remote::ADMIN_FILE);
        }
    }
    writeln!(
        out,
        "Add a user with `teamtalk user add NAME --password PW --data-dir {}`. Ctrl-C stops.",
        args.data_dir.display()
    )?;
    out.flush()?;
    let _ = stop.recv();
    info!("stopping");
    let stats: Vec<_> = sys
        .msg_servers()
        .iter()
        .map(|m| m.inspect(crate::msg::MsgApp::stats).unwrap_or_default())
        .collect();
    sys.shutdown();
    remote::withdraw(&args.data_dir);
    for (addr, s) in msgs.iter().zip(stats) {
        writeln!(
            out,
            "msg_server {addr}: {} logins, {} refused, {} messages acknowledged",
            s.logins_ok, s.logins_refused, s.messages_acked
        )?;
    }
    writeln!(out, "stopped cleanly")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commands_parse() {
        let cli = Cli::try_parse_from([
            "teamtalk",
            "group",
            "create",
            "eng",
            "--creator",
            "alice",
            "--members",
            "bob,3",
            "--members",
            "carol",
        ])
        .unwrap();
        let Commands::Group(GroupCommand::Create {
            name,
            creator,
            members,
            ..
        }) = cli.command
        else {
            panic!("{cli:?}")
        };
        assert_eq!((name.as_str(), creator.as_str()), ("eng", "alice"));
        assert_eq!(members, ["bob", "3", "carol"]);
        let cli =
            Cli::try_parse_from(["teamtalk", "group", "remove", "7", "bob", "carol"]).unwrap();
        assert!(matches!(
            cli.command,
            Commands::Group(GroupCommand::Remove { group: 7, ref users, .. }) if users.len() == 2
        ));
        assert!(
            Cli::try_parse_from(["teamtalk", "group", "add", "7"]).is_err(),
            "users required"
        );
        assert!(
            Cli::try_parse_from(["teamtalk", "group", "create", "eng"]).is_err(),
            "creator required"
        );
    }

    #[test]
    fn admin_token_is_the_first_line_trimmed_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret \nignored\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(&path).unwrap_err().to_string().contains("empty"));
        assert!(read_token(&dir.path().join("missing")).is_err());
    }
}
