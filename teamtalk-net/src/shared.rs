//! One thread that runs the shards of several one-thread reactors.
//!
//! Co-located daemons that talk to each other (`teamtalk up`'s
//! msg_server, db_proxy, route and login servers) each have a reactor
//! with the App as its pump. On threads of their own, every PDU one of
//! them sends another wakes the receiver's thread: a login crosses four
//! daemons and so puts threads to sleep and wakes them several times, and
//! on a small box those context switches, not the work, are most of its
//! cost. A [`SharedThread`] given to several reactors
//! ([`ReactorConfig::thread`](crate::ReactorConfig::thread)) runs all
//! their shards on one thread: each shard keeps its own poller, sockets,
//! timers and pump, and the thread waits on all the pollers at once (an
//! epoll set of epoll sets). A PDU written to a co-located daemon's socket
//! makes that daemon's poller ready, which the thread finds before it next
//! sleeps, so the hop costs a round, not a wake-up.
//!
//! The shards stay independent: a reactor on a shared thread is started,
//! used and shut down as one on a thread of its own, and a shard that
//! stops leaves the others running. The thread ends when every reactor
//! placed on it has shut down and every [`SharedThread`] handle is gone.
//!
//! What it costs: one more `epoll_wait` per round of a shard, and the
//! shards share one core's time. Put on one thread only what a single
//! core can carry; work that takes long belongs on workers anyway.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::clock;
use crate::handle::ON_SHARD;

/// Token of the thread's own waker (a shard was placed on it).
const ADOPT: Token = Token(usize::MAX);

/// A shard as the shared thread sees it, whatever its machine type.
pub(crate) trait Hosted: Send {
    /// The shard's poller, which the thread waits on.
    fn fd(&self) -> RawFd;
    /// How long the shard may wait before its next round (`None`: until
    /// something happens), as its own loop would poll.
    fn timeout(&self, now: Instant) -> Option<Duration>;
    /// One round without waiting. `Ok(true)`: the shard goes on;
    /// `Ok(false)`: it has stopped.
    fn round(&mut self) -> io::Result<bool>;
    /// Whether its last round left readiness events unread (its event
    /// buffer was full), so it must run again without waiting for a new
    /// edge of its poller.
    fn events_left(&self) -> bool;
    /// Drops every connection; the reactor's owner learns it stopped.
    fn finish(self: Box<Self>);
}

/// A thread that runs the shards of several reactors (see the module
/// docs). Cloning it gives another handle to the same thread.
#[derive(Clone)]
pub struct SharedThread {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    tx: Sender<Box<dyn Hosted>>,
    waker: Waker,
}

impl std::fmt::Debug for SharedThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedThread")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl SharedThread {
    /// Starts the thread, named `name`, with no shard on it yet.
    ///
    /// # Errors
    ///
    /// Creating its poller, its waker or the thread failed.
    pub fn new(name: &str) -> io::Result<Self> {
        let mut poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), ADOPT)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&mut poll, &rx))?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                tx,
                waker,
            }),
        })
    }

    /// The thread's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Hands a shard to the thread.
    pub(crate) fn host(&self, shard: Box<dyn Hosted>) -> io::Result<()> {
        self.inner
            .tx
            .send(shard)
            .map_err(|_| io::Error::other("the shared reactor thread has stopped"))?;
        self.inner.waker.wake()
    }
}

/// A shard on the thread.
struct Guest {
    shard: Box<dyn Hosted>,
    /// Its poller reported readiness, or its last round left work.
    ready: bool,
}

/// The thread: wait on every shard's poller, run a round of each that is
/// ready or due, until the handles are gone and no shard is left.
fn run(poll: &mut Poll, rx: &Receiver<Box<dyn Hosted>>) {
    ON_SHARD.with(|c| c.set(true));
    let mut guests: Slab<Guest> = Slab::new();
    let mut events = Events::with_capacity(256);
    let mut handles_gone = false;
    loop {
        let now = clock::now();
        let timeout = guests
            .iter()
            .map(|(_, g)| {
                if g.ready {
                    Some(Duration::ZERO)
                } else {
                    g.shard.timeout(now)
                }
            })
            .fold(None, |acc: Option<Duration>, t| match (acc, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            });
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "shared reactor thread: poll failed; its shards stop");
            break;
        }
        for ev in &events {
            if ev.token() == ADOPT {
                continue;
            }
            if let Some(g) = guests.get_mut(ev.token().0) {
                g.ready = true;
            }
        }
        // New shards: also checked when no wake-up came, so one placed
        // while the thread was busy is not left waiting for the next.
        loop {
            match rx.try_recv() {
                Ok(shard) => adopt(poll, &mut guests, shard),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    handles_gone = true;
                    break;
                }
            }
        }
        let now = clock::now();
        let keys: Vec<usize> = guests.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(g) = guests.get_mut(key) else {
                continue;
            };
            let due = g.ready || g.shard.timeout(now) == Some(Duration::ZERO);
            if !due {
                continue;
            }
            let goes_on = match g.shard.round() {
                Ok(goes_on) => goes_on,
                Err(e) => {
                    tracing::error!(error = %e, "reactor shard: poll failed; shard stops");
                    false
                }
            };
            g.ready = g.shard.events_left();
            if !goes_on {
                let g = guests.remove(key);
                let fd = g.shard.fd();
                // The shard closes its poller as it finishes; take it out
                // of the set first.
                let _ = poll.registry().deregister(&mut SourceFd(&fd));
                g.shard.finish();
            }
        }
        if handles_gone && guests.is_empty() {
            break;
        }
    }
    for g in guests.drain() {
        g.shard.finish();
    }
}

fn adopt(poll: &Poll, guests: &mut Slab<Guest>, shard: Box<dyn Hosted>) {
    let entry = guests.vacant_entry();
    let fd = shard.fd();
    if let Err(e) =
        poll.registry()
            .register(&mut SourceFd(&fd), Token(entry.key()), Interest::READABLE)
    {
        tracing::error!(error = %e, "shared reactor thread: cannot watch a shard; it stops");
        shard.finish();
        return;
    }
    // Its first round runs at once: commands may be queued already.
    entry.insert(Guest { shard, ready: true });
}

/// The raw descriptor of a poller.
pub(crate) fn poll_fd(poll: &Poll) -> RawFd {
    poll.as_raw_fd()
}
