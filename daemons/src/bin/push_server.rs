//! `push_server`: notifications for offline phones (FCM, APNs HTTP/2, a
//! webhook), reading TeamTalk's own `.conf` (`-c FILE`, or
//! `pushserver.conf` in the working directory).

fn main() -> std::process::ExitCode {
    daemons::cli::daemon_main(daemons::cli::Daemon::Push)
}
