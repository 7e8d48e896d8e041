//! `msfs`: TeamTalk's msfs (HTTP file store), reading TeamTalk's own `.conf`
//! (`-c FILE`, or `msfs.conf` in the working directory).

fn main() -> std::process::ExitCode {
    daemons::cli::daemon_main(daemons::cli::Daemon::Msfs)
}
