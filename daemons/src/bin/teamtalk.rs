//! `teamtalk`: run the whole system on loopback, manage users, and more.

use clap::Parser;
use daemons::cli::{Cli, init_logging, run};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teamtalk: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
