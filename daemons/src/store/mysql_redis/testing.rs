//! Private MariaDB and Redis servers for tests, from `.ci/services`.
//!
//! [`services`] gives the servers of this test process: those named by
//! `TEAMTALK_TEST_MYSQL` (`mysql://user:pw@host:port/`) and
//! `TEAMTALK_TEST_REDIS` (`redis://host:port`) when both are set, else a
//! pair `.ci/services` starts once per process (installing Debian's
//! packages when missing) and tears down after the process exits. When
//! neither works the calling test fails with the reason, unless
//! `TEAMTALK_SKIP_MYSQL=1` says to skip the MySQL tests (then each one
//! prints that it was skipped and passes).
//!
//! [`fresh_config`] gives each test its own database and Redis database
//! number, so tests run in parallel on one pair of servers.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::MysqlConfig;

/// The servers a test process uses.
#[derive(Debug, Clone)]
pub struct Services {
    /// `mysql://user:pw@host:port/` (no database).
    pub mysql: String,
    /// `redis://host:port` (no database number).
    pub redis: String,
}

/// `.ci/services` of this source tree.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/services");

fn start() -> Result<Services, String> {
    if let (Ok(mysql), Ok(redis)) = (
        std::env::var("TEAMTALK_TEST_MYSQL"),
        std::env::var("TEAMTALK_TEST_REDIS"),
    ) {
        return Ok(Services { mysql, redis });
    }
    let dir = std::env::temp_dir().join(format!("teamtalk-services-{}", std::process::id()));
    start_in(&dir)
}

/// Starts a pair in `dir`, torn down when this process exits.
fn start_in(dir: &std::path::Path) -> Result<Services, String> {
    let script = SCRIPT;
    let out = std::process::Command::new(script)
        .arg("start")
        .arg(dir)
        .arg("")
        .arg("")
        .arg(std::process::id().to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{script} start failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
            .ok_or_else(|| format!("{script} printed no {key}: {text}"))
    };
    Ok(Services {
        mysql: get("TEAMTALK_TEST_MYSQL=")?,
        redis: get("TEAMTALK_TEST_REDIS=")?,
    })
}

/// This process's servers; `None` when `TEAMTALK_SKIP_MYSQL=1`.
///
/// # Panics
/// When the servers cannot be had, with the reason and the ways out.
pub fn services() -> Option<&'static Services> {
    static SERVICES: OnceLock<Result<Services, String>> = OnceLock::new();
    if std::env::var("TEAMTALK_SKIP_MYSQL").is_ok_and(|v| v == "1") {
        eprintln!("TEAMTALK_SKIP_MYSQL=1: MySQL store test skipped");
        return None;
    }
    match SERVICES.get_or_init(start) {
        Ok(s) => Some(s),
        Err(e) => panic!(
            "MariaDB and Redis for the MySQL store tests: {e}. Run .ci/services as root to \
             install them, point TEAMTALK_TEST_MYSQL and TEAMTALK_TEST_REDIS at servers, or \
             set TEAMTALK_SKIP_MYSQL=1 to skip these tests"
        ),
    }
}

/// A configuration on a database and Redis database number no other test
/// of this process uses (the Redis one emptied first).
pub fn fresh_config() -> Option<MysqlConfig> {
    Some(config_on(services()?))
}

/// [`fresh_config`] on the servers `s`.
///
/// # Panics
/// When Redis cannot be reached.
pub fn config_on(s: &Services) -> MysqlConfig {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    // Redis databases 1..=4095 (`.ci/services` makes 4096); 0 is left to
    // people looking around with redis-cli.
    let db = (std::process::id().wrapping_mul(131).wrapping_add(n)) % 4095 + 1;
    let redis = format!("{}/{db}", s.redis.trim_end_matches('/'));
    let client = redis::Client::open(redis.as_str()).expect("Redis URL");
    let mut conn = client
        .get_connection()
        .unwrap_or_else(|e| panic!("Redis at {redis}: {e}"));
    redis::cmd("FLUSHDB")
        .query::<()>(&mut conn)
        .unwrap_or_else(|e| panic!("Redis at {redis}: {e}"));
    let mysql = format!(
        "{}/tt_{}_{n}",
        s.mysql.trim_end_matches('/'),
        std::process::id()
    );
    MysqlConfig::new(&mysql, &redis)
}

/// The `dbproxyserver.conf` lines (TeamTalk's keys) naming `config`'s
/// MySQL and Redis, for tests that start db_proxy_server from a conf.
///
/// # Panics
/// On URLs [`fresh_config`] does not make.
#[must_use]
pub fn conf_keys(config: &MysqlConfig) -> String {
    let opts = mysql::Opts::from_url(&config.mysql_url).expect("MySQL URL");
    let (redis_host, rest) = config
        .redis
        .unread
        .trim_start_matches("redis://")
        .split_once(':')
        .expect("redis://host:port/db");
    let (redis_port, redis_db) = rest.split_once('/').expect("redis://host:port/db");
    let mut out = format!(
        "DBInstances=teamtalk_master,teamtalk_slave\n\
         teamtalk_master_host={}\nteamtalk_master_port={}\nteamtalk_master_dbname={}\n\
         teamtalk_master_username={}\nteamtalk_master_password={}\nteamtalk_master_maxconncnt=16\n\
         CacheInstances=unread,group_set,token,sync,group_member\n",
        opts.get_ip_or_hostname(),
        opts.get_tcp_port(),
        opts.get_db_name().unwrap_or(""),
        opts.get_user().unwrap_or(""),
        opts.get_pass().unwrap_or(""),
    );
    for role in ["unread", "group_set", "token", "sync", "group_member"] {
        out.push_str(&format!(
            "{role}_host={redis_host}\n{role}_port={redis_port}\n{role}_db={redis_db}\n"
        ));
    }
    out
}

/// A pair of servers for this caller alone (not shared with other tests):
/// for a test that restarts MariaDB. `None` when `TEAMTALK_SKIP_MYSQL=1`.
///
/// # Panics
/// When the servers cannot be started, as [`services`].
pub fn private_services(name: &str) -> Option<(std::path::PathBuf, Services)> {
    if std::env::var("TEAMTALK_SKIP_MYSQL").is_ok_and(|v| v == "1") {
        eprintln!("TEAMTALK_SKIP_MYSQL=1: MySQL store test skipped");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("teamtalk-services-{}-{name}", std::process::id()));
    match start_in(&dir) {
        Ok(s) => Some((dir, s)),
        Err(e) => panic!("MariaDB and Redis for the MySQL store tests: {e}"),
    }
}

/// Kills the MariaDB of a [`private_services`] pair with SIGKILL, waits
/// `pause_secs` and starts it again on the same port and data.
///
/// # Panics
/// When the script fails.
pub fn restart_mysql(dir: &std::path::Path, pause_secs: u32) {
    let status = std::process::Command::new(SCRIPT)
        .arg("restart-mysql")
        .arg(dir)
        .arg(pause_secs.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run .ci/services");
    assert!(status.success(), ".ci/services restart-mysql failed");
}
