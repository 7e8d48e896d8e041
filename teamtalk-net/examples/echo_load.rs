//! Load generator for the echo benchmark: many connections keep a fixed
//! number of 100-byte PDUs in flight against `echo_server` and count the
//! echoes.
//!
//! Run it in its own process next to the server:
//!
//! ```text
//! cargo run --release -p teamtalk-net --example echo_server -- 127.0.0.1:8008 1 1
//! cargo run --release -p teamtalk-net --example echo_load -- 127.0.0.1:8008 64 32 10 1
//! ```
//! Arguments: address, connections, PDUs in flight per connection,
//! seconds to measure (after one second of warm-up), generator threads.
//!
//! The generator is deliberately thin (plain mio, no machines): every PDU
//! is identical, so it only counts bytes and refills the window, leaving
//! the CPU to the server under test.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use teamtalk_proto::{Command, Pdu};

/// Every PDU on the wire is this long, header included.
const PDU_LEN: usize = 100;

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

struct Conn {
    stream: TcpStream,
    /// Bytes of the window still to write.
    to_write: usize,
    /// Position in the periodic PDU stream of the next byte to write.
    write_pos: usize,
    /// Bytes of the PDU currently being received.
    partial: usize,
}

/// Writes as much of the window as the socket takes.
fn pump(c: &mut Conn, pattern: &[u8]) -> io::Result<()> {
    while c.to_write > 0 {
        let off = c.write_pos % PDU_LEN;
        let n = c.to_write.min(pattern.len() - off);
        match c.stream.write(&pattern[off..off + n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                c.to_write -= k;
                c.write_pos += k;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn generator(
    addr: SocketAddr,
    conns: usize,
    window: usize,
    echoed: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<()> {
    let body = Bytes::from(vec![b'x'; PDU_LEN - 16]);
    let one = Pdu::new(Command::MsgData.key(), 1, body).to_bytes();
    assert_eq!(one.len(), PDU_LEN);
    let pattern: Vec<u8> = one.iter().copied().cycle().take(PDU_LEN * window).collect();

    let mut poll = Poll::new()?;
    let mut all = Vec::with_capacity(conns);
    for i in 0..conns {
        let std = std::net::TcpStream::connect(addr)?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        all.push(Conn {
            stream,
            to_write: PDU_LEN * window,
            write_pos: 0,
            partial: 0,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        let mut done = 0;
        for ev in &events {
            let c = &mut all[ev.token().0];
            if ev.is_readable() {
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => {
                            let total = c.partial + n;
                            let complete = total / PDU_LEN;
                            c.partial = total % PDU_LEN;
                            c.to_write += complete * PDU_LEN;
                            done += complete as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            pump(c, &pattern)?;
        }
        echoed.fetch_add(done, Ordering::Relaxed);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8008").parse()?;
    let conns: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let window: usize = args.next().map_or(Ok(32), |s| s.parse())?;
    let secs: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let threads: usize = args.next().map_or(Ok(1), |s| s.parse())?;

    let echoed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (echoed, stop) = (Arc::clone(&echoed), Arc::clone(&stop));
            let share = conns / threads + usize::from(t < conns % threads);
            std::thread::spawn(move || generator(addr, share, window, &echoed, &stop))
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    let (start, base) = (now(), echoed.load(Ordering::Relaxed));
    let mut last = base;
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        let n = echoed.load(Ordering::Relaxed);
        println!("{:>10} PDUs/s", n - last);
        last = n;
    }
    let elapsed = (now() - start).as_secs_f64();
    let total = echoed.load(Ordering::Relaxed) - base;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "generator thread panicked")??;
    }
    println!(
        "{conns} connections x {window} in flight, {PDU_LEN}-byte PDUs: {total} echoed in {elapsed:.2} s = {:.0} PDUs/s",
        total as f64 / elapsed
    );
    Ok(())
}
