//! `db_proxy_server`: TeamTalk's db_proxy_server, reading TeamTalk's own `.conf` (`-c FILE`,
//! or `dbproxyserver.conf` in the working directory).

fn main() -> std::process::ExitCode {
    daemons::cli::daemon_main(daemons::cli::Daemon::DbProxy)
}
