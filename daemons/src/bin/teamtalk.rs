//! `teamtalk`: run the whole system on loopback, manage users, and more.

use clap::Parser;
use daemons::cli::{Cli, init_logging, run};

fn main() -> std::process::ExitCode {
    init_logging();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teamtalk: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
