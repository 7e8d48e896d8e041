//! `http_msg_server`: TeamTalk's back-office HTTP API (create groups,
//! change members), reading TeamTalk's own `.conf` (`-c FILE`, or
//! `httpmsgserver.conf` in the working directory).

fn main() -> std::process::ExitCode {
    daemons::cli::daemon_main(daemons::cli::Daemon::HttpMsg)
}
