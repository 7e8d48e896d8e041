//! `msg_server`: TeamTalk's msg_server, reading TeamTalk's own `.conf` (`-c FILE`,
//! or `msgserver.conf` in the working directory).

fn main() -> std::process::ExitCode {
    daemons::cli::daemon_main(daemons::cli::Daemon::Msg)
}
