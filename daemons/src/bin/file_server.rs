//! `file_server`: TeamTalk's file_server, reading TeamTalk's own `.conf`
//! (`-c FILE`, or `fileserver.conf` in the working directory).

fn main() -> std::process::ExitCode {
    daemons::cli::daemon_main(daemons::cli::Daemon::File)
}
