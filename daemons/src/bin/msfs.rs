//! `msfs`: TeamTalk's msfs (HTTP file store), reading TeamTalk's own `.conf` (`-c FILE`).

use clap::Parser;
use daemons::cli::{Daemon, DaemonArgs, init_logging, run_daemon};

fn main() -> std::process::ExitCode {
    init_logging();
    let args = DaemonArgs::parse();
    match run_daemon(Daemon::Msfs, &args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msfs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
