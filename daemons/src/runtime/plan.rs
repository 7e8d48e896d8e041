//! [`Plan`]: what a daemon listens on, which links it keeps, which workers
//! it runs. The glue of each daemon builds one and hands it to
//! [`start`](super::start) with the App.

use std::net::SocketAddr;

use std::sync::Arc;

use teamtalk_conn::WsConfig;
use teamtalk_conn::tls::rustls::pki_types::ServerName;
use teamtalk_conn::tls::rustls::{ClientConfig, ServerConfig};
use teamtalk_conn::{HttpConfig, LinkConfig, SessionConfig};
use teamtalk_net::ReactorConfig;

use super::admin::AdminSettings;
use super::contract::{LinkId, PortId};
use crate::cluster::PeerPolicy;

/// Default capacity of each worker's job queue. A full queue blocks the
/// App's thread, which stops it reading, which pushes back on the peers.
pub const DEFAULT_WORKER_QUEUE: usize = 4096;
/// Default largest batch a worker takes at once.
pub const DEFAULT_BATCH_LIMIT: usize = 256;

/// What connections a listener accepts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PortKind {
    /// TeamTalk clients: sessions behind the login gate
    /// ([`Input::LoginRequest`](super::Input::LoginRequest) first).
    Clients(SessionConfig),
    /// Other servers: sessions without a login gate.
    Peers(SessionConfig),
    /// HTTP/1.1 ([`Input::Http`](super::Input::Http) per request, answered
    /// with [`Action::Respond`](super::Action::Respond)); at most
    /// `max_per_source` connections from one address at once.
    Http {
        /// Deadlines and size limits of every connection.
        config: HttpConfig,
        /// Connections one source address may hold (`None`: no limit).
        max_per_source: Option<usize>,
    },
}

/// One listener of a plan.
#[derive(Debug, Clone)]
pub(crate) struct ListenSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) kind: PortKind,
    pub(crate) side: &'static str,
    pub(crate) peer: &'static str,
    /// TLS on this listener (TeamTalk sessions only).
    pub(crate) tls: Option<Arc<ServerConfig>>,
    /// WebSocket on this listener (client sessions only; inside TLS when
    /// both are set).
    pub(crate) ws: Option<WsConfig>,
}

/// One link of a plan.
#[derive(Debug, Clone)]
pub(crate) struct LinkSpec {
    pub(crate) config: LinkConfig,
    pub(crate) peer: &'static str,
    /// TLS on this link: the client configuration and the name the
    /// server's certificate must carry.
    pub(crate) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// The side a plan's links live on (`side` label of the transport metrics).
pub(crate) const LINKS_SIDE: &str = "links";

/// A daemon's sockets and workers. Ids come back in declaration order, so
/// the glue can hand them to the App it builds next.
#[derive(Debug)]
pub struct Plan<W> {
    pub(crate) listeners: Vec<ListenSpec>,
    pub(crate) links: Vec<LinkSpec>,
    pub(crate) workers: Vec<W>,
    pub(crate) sides: Vec<(&'static str, ReactorConfig)>,
    pub(crate) worker_queue: usize,
    pub(crate) batch_limit: usize,
    pub(crate) admin: Option<AdminSettings>,
    pub(crate) peers: PeerPolicy,
    pub(crate) client_credit: Option<u32>,
    pub(crate) app_thread: bool,
}

impl<W> Default for Plan<W> {
    fn default() -> Self {
        Self {
            listeners: Vec::new(),
            links: Vec::new(),
            workers: Vec::new(),
            sides: Vec::new(),
            worker_queue: DEFAULT_WORKER_QUEUE,
            batch_limit: DEFAULT_BATCH_LIMIT,
            admin: None,
            peers: PeerPolicy::open(),
            client_credit: None,
            app_thread: false,
        }
    }
}

impl<W> Plan<W> {
    /// Nothing declared.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reactor settings for the connections of one side (`"clients"`,
    /// `"peers"`, `"links"`, …). Sides not configured run one thread with
    /// the default limits.
    pub fn side(&mut self, side: &'static str, config: ReactorConfig) -> &mut Self {
        match self.sides.iter_mut().find(|(s, _)| *s == side) {
            Some(entry) => entry.1 = config,
            None => self.sides.push((side, config)),
        }
        self
    }

    /// Declares a listener. `side` groups listeners for the transport
    /// metrics (`side` label, one reactor per side); `peer` labels the PDU
    /// counters (`teamtalk_pdus_in_total{peer}`).
    pub fn listen(
        &mut self,
        side: &'static str,
        peer: &'static str,
        addr: SocketAddr,
        kind: PortKind,
    ) -> PortId {
        let id = PortId(u8::try_from(self.listeners.len()).unwrap_or(u8::MAX));
        self.listeners.push(ListenSpec {
            addr,
            kind,
            side,
            peer,
            tls: None,
            ws: None,
        });
        id
    }

    /// Declares a listener whose TeamTalk sessions ([`PortKind::Clients`]
    /// or [`PortKind::Peers`]) run over TLS with `tls`.
    pub fn listen_tls(
        &mut self,
        side: &'static str,
        peer: &'static str,
        addr: SocketAddr,
        kind: PortKind,
        tls: Arc<ServerConfig>,
    ) -> PortId {
        let id = self.listen(side, peer, addr, kind);
        if let Some(l) = self.listeners.last_mut() {
            l.tls = Some(tls);
        }
        id
    }

    /// Declares a listener for browsers: each TeamTalk session of `kind`
    /// (normally [`PortKind::Clients`]) runs over WebSocket with `ws`, and
    /// over TLS too (wss) when `tls` is given.
    pub fn listen_ws(
        &mut self,
        side: &'static str,
        peer: &'static str,
        addr: SocketAddr,
        kind: PortKind,
        ws: WsConfig,
        tls: Option<Arc<ServerConfig>>,
    ) -> PortId {
        let id = self.listen(side, peer, addr, kind);
        if let Some(l) = self.listeners.last_mut() {
            l.ws = Some(ws);
            l.tls = tls;
        }
        id
    }

    /// Declares an outbound link; `peer` labels its PDU counters.
    pub fn link(&mut self, peer: &'static str, config: LinkConfig) -> LinkId {
        let id = LinkId(u16::try_from(self.links.len()).unwrap_or(u16::MAX));
        self.links.push(LinkSpec {
            config,
            peer,
            tls: None,
        });
        id
    }

    /// Declares an outbound link over TLS: `tls` verifies the server, whose
    /// certificate must name `server_name`.
    pub fn link_tls(
        &mut self,
        peer: &'static str,
        config: LinkConfig,
        tls: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> LinkId {
        let id = self.link(peer, config);
        if let Some(l) = self.links.last_mut() {
            l.tls = Some((tls, server_name));
        }
        id
    }

    /// Declares an outbound link to `config.addr`, over TLS with `tls` (a
    /// daemon's `LinkTls*`), in the clear without.
    ///
    /// # Errors
    /// The settings give no usable server name for this link.
    pub fn link_over(
        &mut self,
        peer: &'static str,
        config: LinkConfig,
        tls: Option<&crate::tls::LinkTls>,
    ) -> Result<LinkId, crate::tls::TlsConfError> {
        Ok(match tls {
            Some(tls) => {
                let (client, name) = tls.for_link(config.addr)?;
                self.link_tls(peer, config, client, name)
            }
            None => self.link(peer, config),
        })
    }

    /// Declares a worker thread; returns its index for
    /// [`Action::Job`](super::Action::Job).
    pub fn worker(&mut self, worker: W) -> usize {
        self.workers.push(worker);
        self.workers.len() - 1
    }

    /// Capacity of each worker's queue and its largest batch.
    pub fn worker_limits(&mut self, queue: usize, batch: usize) -> &mut Self {
        self.worker_queue = queue.max(1);
        self.batch_limit = batch.max(1);
        self
    }

    /// Serves the daemon's `/metrics` and `/healthz` as `settings` say
    /// (port 0 picks one); `None` serves none.
    pub fn admin(&mut self, settings: Option<AdminSettings>) -> &mut Self {
        self.admin = settings;
        self
    }

    /// Who may use the daemon's server ports ([`PortKind::Peers`]) and how
    /// its links prove themselves: with a cluster secret, every link
    /// authenticates and every server-port peer must, except those
    /// `AllowUnauthenticatedPeers` lists. Without one, server ports must
    /// listen on loopback only, or name who may connect.
    pub fn peer_policy(&mut self, policy: PeerPolicy) -> &mut Self {
        self.peers = policy;
        self
    }

    /// Every client session ([`PortKind::Clients`]) starts with this many
    /// PDUs it may send before the App grants more
    /// ([`Action::Grant`](super::Action::Grant)); at zero its socket is not
    /// read, so a client that sends faster than the App deals with its
    /// requests is held back by TCP, alone. `None`: no limit.
    pub fn client_credit(&mut self, credit: Option<u32>) -> &mut Self {
        self.client_credit = credit;
        self
    }

    /// Runs the App on a thread of its own even when every side has one
    /// reactor thread (where it would otherwise run on that thread, as the
    /// reactor's pump: see [`start`](super::start)). The environment
    /// variable [`APP_THREAD_ENV`](super::APP_THREAD_ENV) does the same
    /// for every daemon of a process.
    pub fn app_thread(&mut self, on: bool) -> &mut Self {
        self.app_thread = on;
        self
    }

    /// Number of links declared.
    #[must_use]
    pub fn link_count(&self) -> usize {
        self.links.len()
    }
}
