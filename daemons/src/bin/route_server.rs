//! `route_server`: TeamTalk's route_server, reading TeamTalk's own `.conf` (`-c FILE`,
//! or `routeserver.conf` in the working directory).

fn main() -> std::process::ExitCode {
    daemons::cli::daemon_main(daemons::cli::Daemon::Route)
}
