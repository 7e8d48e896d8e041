//! The heartbeat-echo server of `echo_server`, on the tokio adapter:
//! same `Session`, same behaviour, one task per connection.
//!
//! ```text
//! cargo run -p teamtalk-net --features tokio --example tokio_echo -- [addr]
//! ```
//! `link_ping` works against it unchanged.

use std::net::SocketAddr;
use std::time::Duration;

use teamtalk_conn::{Session, SessionConfig, SessionEvent};
use teamtalk_net::NetEvent;
use teamtalk_net::tokio::{DriveConfig, Driver};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8008")
        .parse()?;
    let (driver, mut events) = Driver::<Session>::new(DriveConfig::default());
    let mut cfg = SessionConfig::client();
    cfg.login_timeout = None;
    let local = driver.listen(addr, move |peer, now| Session::new(cfg.clone(), peer, now))?;
    println!("tokio_echo on {local}");

    let stats = driver.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            println!("{:?}", stats.stats());
        }
    });

    while let Some((id, ev)) = events.recv().await {
        match ev {
            NetEvent::Machine(SessionEvent::Pdu(pdu)) => {
                // A send error closes the session; nothing to do here.
                driver.exec(id, move |s| {
                    let _ = s.send(&pdu);
                })?;
            }
            other => println!("{id}: {other:?}"),
        }
    }
    Ok(())
}
