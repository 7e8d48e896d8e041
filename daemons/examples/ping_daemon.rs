//! A whole daemon on the shared runtime in a few dozen lines: it answers
//! every `CID_MSG_TIME_REQUEST` with the server time, counts what it did,
//! and serves `/metrics` and `/healthz` on an admin port.
//!
//! ```sh
//! cargo run -p teamtalk-daemons --example ping_daemon -- 127.0.0.1:9000 127.0.0.1:9001
//! ```
//!
//! Then any TeamTalk-protocol client (or `nc`) can send PDUs to the first
//! address, and `curl 127.0.0.1:9001/metrics` shows `ping_answered_total`
//! next to the transport counters every daemon has.

use daemons::metrics::Scrape;
use daemons::runtime::{self, App, Input, NoJob, NoWorker, Now, Out, Plan, PortKind};
use teamtalk_conn::SessionConfig;
use teamtalk_proto::pb::im::message::ImClientTimeRsp;
use teamtalk_proto::{Command, Message};

/// The App: all decisions, no I/O.
#[derive(Default)]
struct Ping {
    answered: u64,
    ignored: u64,
}

impl App for Ping {
    type Job = NoJob;
    type Done = NoJob;

    fn name(&self) -> &'static str {
        "ping_daemon"
    }

    fn handle(&mut self, now: Now, input: Input<'_, NoJob>, out: &mut Out<NoJob>) {
        let Input::Pdu { conn, pdu } = input else {
            return;
        };
        if let Ok(Message::MsgTimeRequest(_)) = Message::decode(pdu) {
            let rsp = ImClientTimeRsp {
                server_time: now.unix(),
            };
            out.send(conn, Command::MsgTimeResponse.pdu(pdu.seq(), &rsp));
            self.answered += 1;
        } else {
            self.ignored += 1;
        }
    }

    fn collect(&self, scrape: &mut Scrape) {
        scrape.counter(
            "ping_answered_total",
            "Time requests answered.",
            &[],
            self.answered,
        );
        scrape.counter(
            "ping_ignored_total",
            "Other PDUs ignored.",
            &[],
            self.ignored,
        );
    }

    fn health(&self, _problems: &mut Vec<String>) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()?;
    let admin = args.next().map(|a| a.parse()).transpose()?;

    // The glue: what to listen on, then start.
    let mut plan = Plan::<NoWorker>::new();
    plan.listen(
        "peers",
        "peer",
        listen,
        PortKind::Peers(SessionConfig::server_peer()),
    );
    plan.admin(admin.map(daemons::runtime::AdminSettings::local));
    let running = runtime::start(Ping::default(), plan)?;
    println!("ping_daemon on {}", running.addr());
    if let Some(a) = running.admin_addr() {
        println!("metrics on http://{a}/metrics");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })?;
    let _ = rx.recv();
    running.stop();
    Ok(())
}
