//! `db_proxy_server`: TeamTalk's db_proxy_server, reading TeamTalk's own `.conf` (`-c FILE`).

use clap::Parser;
use daemons::cli::{Daemon, DaemonArgs, init_logging, run_daemon};

fn main() -> std::process::ExitCode {
    init_logging();
    let args = DaemonArgs::parse();
    match run_daemon(Daemon::DbProxy, &args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("db_proxy_server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
