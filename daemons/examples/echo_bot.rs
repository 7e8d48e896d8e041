//! A TeamTalk bot built directly on the sans-IO client machine: it logs in
//! and sends every message it receives back to its sender.
//!
//! ```sh
//! teamtalk up --data-dir /tmp/tt &            # or any TeamTalk cluster
//! teamtalk user add --data-dir /tmp/tt echo --password pw
//! cargo run -p teamtalk-daemons --example echo_bot -- http://127.0.0.1:8080 echo pw
//! teamtalk chat --user alice --password pw --send echo "hello" --receive 1
//! ```
//!
//! Everything TeamTalk-specific (the login_server assignment asked for
//! before each connect, the login with the md5hex of the password,
//! heartbeats, silence detection, reconnects with backoff, delivery acks,
//! request deadlines) is the [`teamtalk_conn::Client`] machine's. The bot
//! is the loop below: `teamtalk-net`'s reactor runs the machine over a real
//! socket, the bot reads its events and answers with closures run on the
//! machine. Stop it with Ctrl-C.

use std::time::Duration;

use daemons::clock;
use daemons::tools::addr::ServerAddr;
use daemons::tools::client::{query_msg_server, text};
use teamtalk_conn::client::Credentials;
use teamtalk_conn::{Client, ClientConfig, ClientEvent};
use teamtalk_net::{NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::{Message, Pdu};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let usage = "usage: echo_bot LOGIN_SERVER_URL USER PASSWORD";
    let login: ServerAddr = args.next().ok_or(usage)?.parse()?;
    let user = args.next().ok_or(usage)?;
    let password = args.next().ok_or(usage)?;

    let reactor = Reactor::<Client>::new(ReactorConfig {
        threads: 1,
        ..ReactorConfig::default()
    })?;
    let handle = reactor.handle();
    let creds = Credentials::new(&user, &password, ClientType::Windows);
    let bot = handle.open(Client::new(ClientConfig::new(creds), clock::now()))?;
    let mut me = 0;

    for (_, event) in reactor.events() {
        let event = match event {
            NetEvent::Machine(e) => e,
            NetEvent::Finished => break,
            _ => continue,
        };
        match event {
            // Which msg_server? Ask login_server, as TeamTalk clients do.
            ClientEvent::AssignmentNeeded => {
                match query_msg_server(login.clone(), Duration::from_secs(10))
                    .and_then(|a| a.addr())
                {
                    Ok(addr) => handle.exec(bot, move |c| c.assigned(clock::now(), addr))?,
                    Err(e) => {
                        eprintln!("assignment failed: {e}");
                        let why = e.to_string();
                        handle.exec(bot, move |c| c.assignment_failed(clock::now(), &why))?;
                    }
                }
            }
            ClientEvent::LoggedIn(res) => {
                me = res.user_info.map_or(0, |u| u.user_id);
                println!("logged in as {user} (id {me})");
            }
            ClientEvent::Push(pdu) => {
                if let Some(echo) = echo(&pdu, me) {
                    handle.exec(bot, move |c| {
                        if let Err(e) = c.request(clock::now(), &echo) {
                            eprintln!("echo not sent: {e}");
                        }
                    })?;
                }
            }
            ClientEvent::Reply { seq, .. } => println!("echo {seq} stored by the server"),
            ClientEvent::Disconnected(reason) => println!("disconnected: {reason}"),
            ClientEvent::Reconnecting { after } => println!("reconnecting in {after:?}"),
            ClientEvent::Stopped(why) => println!("stopped: {why:?}"),
            other => tracing::debug!(?other, "event"),
        }
    }
    Ok(())
}

/// The echo of a message sent to the bot: same body, back to its sender.
fn echo(pdu: &Pdu, me: u32) -> Option<Pdu> {
    let Ok(Message::MsgData(m)) = Message::decode(pdu) else {
        return None;
    };
    if m.from_user_id == me {
        return None;
    }
    let shown = text::decode(&m.msg_data, text::DEFAULT_KEY)
        .unwrap_or_else(|| String::from_utf8_lossy(&m.msg_data).into_owned());
    println!("#{} from {}: {shown}", m.msg_id, m.from_user_id);
    let reply = ImMsgData {
        from_user_id: me,
        to_session_id: m.from_user_id,
        msg_id: 0,
        create_time: clock::unix_secs(),
        ..m
    };
    Some(reply.to_pdu(0))
}
