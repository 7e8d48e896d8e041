//! `file_server`: TeamTalk's file_server, reading TeamTalk's own `.conf` (`-c FILE`).

use clap::Parser;
use daemons::cli::{Daemon, DaemonArgs, init_logging, run_daemon};

fn main() -> std::process::ExitCode {
    init_logging();
    let args = DaemonArgs::parse();
    match run_daemon(Daemon::File, &args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file_server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
