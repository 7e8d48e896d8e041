//! `login_server`: TeamTalk's login_server, reading TeamTalk's own `.conf` (`-c FILE`,
//! or `loginserver.conf` in the working directory).

fn main() -> std::process::ExitCode {
    daemons::cli::daemon_main(daemons::cli::Daemon::Login)
}
