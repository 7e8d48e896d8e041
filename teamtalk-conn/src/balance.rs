//! login_server's choice of a msg_server for a new client.
//!
//! Every msg_server registers with login_server (`CID_OTHER_MSG_SERV_INFO`)
//! and reports each client connection opened or closed
//! (`CID_OTHER_USER_CNT_UPDATE`). A client first asks login_server
//! (HTTP `GET /msg_server`) where to connect and gets the least-loaded
//! msg_server that still has room. [`LoadTable`] is that bookkeeping,
//! with no I/O, keyed by whatever identifies a msg_server connection in
//! the daemon.
//!
//! # Assignments in flight
//!
//! A msg_server reports a client only once it has logged in, a round trip
//! or more after login_server named it. Choosing by the reported counts
//! alone (as TeamTalk does) sends every client that asks in that interval
//! to the same msg_server: a burst of thousands of clients (a restart, a
//! load test) lands on one or two of them. So [`LoadTable::assign`]
//! remembers each answer as *pending* on the msg_server it named and
//! chooses by reported plus pending; the msg_server's next reported login
//! settles the oldest pending one, and one not settled within
//! [`ASSIGNMENT_TTL`] (a client that never came) is forgotten.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How long an answer counts against the msg_server it named before that
/// msg_server reports a login: far longer than a connect and login take,
/// short enough that clients who never came stop skewing the choice soon.
pub const ASSIGNMENT_TTL: Duration = Duration::from_secs(10);

/// Pending assignments remembered per msg_server at most (the oldest are
/// forgotten first), so a flood of HTTP queries cannot grow the table.
pub const MAX_PENDING_ASSIGNMENTS: usize = 1 << 16;

/// What a msg_server announced about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgServerLoad {
    /// Address advertised first (TeamTalk's `ip1`, meant for China
    /// Telecom clients; in practice every client gets it first).
    pub ip1: String,
    /// Alternative address (`ip2`).
    pub ip2: String,
    /// Client port.
    pub port: u16,
    /// Connections it accepts at most.
    pub max_conn_cnt: u32,
    /// Client connections it has now.
    pub cur_conn_cnt: u32,
    /// Host name, for logs and the admin view.
    pub host_name: String,
    /// Its WebSocket port for browsers, if it has one (teamtalk-rs
    /// msg_servers only).
    pub ws_port: Option<u16>,
    /// Whether that port is wss.
    pub ws_tls: bool,
}

/// Why no msg_server can be offered; `code()` is TeamTalk's `ResultType`
/// value that clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No msg_server is registered (`REFUSE_REASON_NO_MSG_SERVER`, 1).
    #[error("no msg_server registered")]
    NoMsgServer,
    /// Every msg_server is at its maximum (`REFUSE_REASON_MSG_SERVER_FULL`,
    /// 2).
    #[error("all msg_servers are full")]
    MsgServerFull,
}

impl Refusal {
    /// The numeric code sent to clients.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::NoMsgServer => 1,
            Self::MsgServerFull => 2,
        }
    }
}

/// The URLs login_server hands out alongside the chosen msg_server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceUrls {
    /// msfs (file store) URL, first choice.
    pub msfs_prior: String,
    /// msfs URL, fallback.
    pub msfs_backup: String,
    /// The "discovery" page URL.
    pub discovery: String,
}

/// Registered msg_servers and their load. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct LoadTable<Id> {
    servers: BTreeMap<Id, MsgServerLoad>,
    /// Per msg_server, when each answer naming it that no reported login
    /// has settled yet was given, oldest first.
    pending: BTreeMap<Id, VecDeque<Instant>>,
}

impl<Id> Default for LoadTable<Id> {
    fn default() -> Self {
        Self {
            servers: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }
}

impl<Id: Ord + Copy> LoadTable<Id> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a msg_server or replaces what it announced.
    pub fn upsert(&mut self, id: Id, load: MsgServerLoad) {
        self.servers.insert(id, load);
    }

    /// Forgets a msg_server whose connection closed, with its users and
    /// the assignments to it in flight.
    pub fn remove(&mut self, id: Id) -> Option<MsgServerLoad> {
        self.pending.remove(&id);
        self.servers.remove(&id)
    }

    /// One client connection opened (`user_action` 1) or closed (2) on
    /// msg_server `id`. Returns false for an unknown id. Saturates, so a
    /// stray decrement cannot wrap the count. An opened one settles the
    /// oldest assignment in flight to `id`, if any.
    pub fn user_connected(&mut self, id: Id, connected: bool) -> bool {
        let Some(s) = self.servers.get_mut(&id) else {
            return false;
        };
        s.cur_conn_cnt = if connected {
            s.cur_conn_cnt.saturating_add(1)
        } else {
            s.cur_conn_cnt.saturating_sub(1)
        };
        if connected && let Some(p) = self.pending.get_mut(&id) {
            p.pop_front();
        }
        true
    }

    /// Assignments to `id` in flight (answered, no login reported yet, not
    /// expired as of the last [`LoadTable::assign`]).
    #[must_use]
    pub fn pending(&self, id: Id) -> usize {
        self.pending.get(&id).map_or(0, VecDeque::len)
    }

    /// Load by which msg_servers are compared: reported plus in flight.
    fn load(&self, id: Id, s: &MsgServerLoad) -> u64 {
        u64::from(s.cur_conn_cnt) + self.pending(id) as u64
    }

    /// [`LoadTable::pick`] that also counts the answer against the chosen
    /// msg_server until it reports a login or [`ASSIGNMENT_TTL`] passes
    /// (see the [module docs](self)); what login_server does for each
    /// client that asks.
    ///
    /// # Errors
    /// As [`LoadTable::pick`].
    pub fn assign(&mut self, now: Instant) -> Result<(Id, &MsgServerLoad), Refusal> {
        self.assign_where(now, |_| true)
    }

    /// [`LoadTable::assign`] among the msg_servers `eligible` accepts.
    ///
    /// # Errors
    /// As [`LoadTable::pick_where`].
    pub fn assign_where(
        &mut self,
        now: Instant,
        eligible: impl Fn(&MsgServerLoad) -> bool,
    ) -> Result<(Id, &MsgServerLoad), Refusal> {
        self.expire(now);
        let id = self.pick_where(eligible)?.0;
        let p = self.pending.entry(id).or_default();
        if p.len() >= MAX_PENDING_ASSIGNMENTS {
            p.pop_front();
        }
        p.push_back(now);
        self.servers
            .get(&id)
            .map(|s| (id, s))
            .ok_or(Refusal::NoMsgServer)
    }

    /// Forgets assignments older than [`ASSIGNMENT_TTL`] at `now`.
    fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, p| {
            while p
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= ASSIGNMENT_TTL)
            {
                p.pop_front();
            }
            !p.is_empty()
        });
    }

    /// What msg_server `id` announced, with its current count.
    #[must_use]
    pub fn get(&self, id: Id) -> Option<&MsgServerLoad> {
        self.servers.get(&id)
    }

    /// Number of registered msg_servers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether no msg_server is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Client connections over all msg_servers.
    #[must_use]
    pub fn total_online(&self) -> u64 {
        self.servers
            .values()
            .map(|s| u64::from(s.cur_conn_cnt))
            .sum()
    }

    /// The msg_server with the fewest connections (reported plus
    /// assignments in flight) among those below their maximum of reported
    /// connections; ties go to the lowest id (TeamTalk's map order).
    /// Records nothing: [`LoadTable::assign`] is the choice for a client.
    ///
    /// # Errors
    /// [`Refusal::NoMsgServer`] when the table is empty,
    /// [`Refusal::MsgServerFull`] when every server is at its maximum.
    pub fn pick(&self) -> Result<(Id, &MsgServerLoad), Refusal> {
        self.pick_where(|_| true)
    }

    /// [`LoadTable::pick`] among the msg_servers `eligible` accepts (a
    /// browser needs one with a WebSocket port); none eligible is
    /// [`Refusal::NoMsgServer`].
    ///
    /// # Errors
    /// As [`LoadTable::pick`].
    pub fn pick_where(
        &self,
        eligible: impl Fn(&MsgServerLoad) -> bool,
    ) -> Result<(Id, &MsgServerLoad), Refusal> {
        if !self.servers.values().any(&eligible) {
            return Err(Refusal::NoMsgServer);
        }
        let mut best: Option<(Id, &MsgServerLoad, u64)> = None;
        for (id, s) in self.servers.iter().filter(|(_, s)| eligible(s)) {
            let load = self.load(*id, s);
            if s.cur_conn_cnt < s.max_conn_cnt && best.is_none_or(|(_, _, b)| load < b) {
                best = Some((*id, s, load));
            }
        }
        best.map(|(id, s, _)| (id, s)).ok_or(Refusal::MsgServerFull)
    }

    /// The body of login_server's `/msg_server` HTTP reply: on success
    /// `code` 0 with `priorIP`, `backupIP`, `msfsPrior`, `msfsBackup`,
    /// `discovery` and `port` (a string, as TeamTalk clients expect);
    /// otherwise the refusal `code` and a message.
    ///
    /// For a `browser`, only msg_servers with a WebSocket port are
    /// candidates. Whoever asks, a chosen msg_server with one adds
    /// `wsPrior` and `wsBackup` (`ws://ip1:port/`, `wss://…`), which
    /// TeamTalk clients ignore.
    ///
    /// This previews the answer; [`LoadTable::assign_json`] gives it to a
    /// client.
    #[must_use]
    pub fn msg_server_json(&self, urls: &ServiceUrls, browser: bool) -> String {
        answer_json(self.pick_where(|s| !browser || s.ws_port.is_some()), urls)
    }

    /// [`LoadTable::msg_server_json`] for a client that asked at `now`: the
    /// choice is [`LoadTable::assign`]'s, counted against the msg_server
    /// it names.
    pub fn assign_json(&mut self, now: Instant, urls: &ServiceUrls, browser: bool) -> String {
        answer_json(
            self.assign_where(now, |s| !browser || s.ws_port.is_some()),
            urls,
        )
    }
}

/// The `/msg_server` JSON for a choice (see [`LoadTable::msg_server_json`]).
fn answer_json<Id>(choice: Result<(Id, &MsgServerLoad), Refusal>, urls: &ServiceUrls) -> String {
    let mut out = String::from("{");
    match choice {
        Ok((_, s)) => {
            out.push_str("\"code\":0,\"msg\":\"\"");
            for (key, value) in [
                ("priorIP", s.ip1.as_str()),
                ("backupIP", s.ip2.as_str()),
                ("msfsPrior", urls.msfs_prior.as_str()),
                ("msfsBackup", urls.msfs_backup.as_str()),
                ("discovery", urls.discovery.as_str()),
                ("port", s.port.to_string().as_str()),
            ] {
                let _ = write!(out, ",\"{key}\":");
                push_json_string(&mut out, value);
            }
            if let Some(port) = s.ws_port {
                let scheme = if s.ws_tls { "wss" } else { "ws" };
                for (key, ip) in [("wsPrior", &s.ip1), ("wsBackup", &s.ip2)] {
                    let host = if ip.contains(':') {
                        format!("[{ip}]")
                    } else {
                        ip.clone()
                    };
                    let _ = write!(out, ",\"{key}\":");
                    push_json_string(&mut out, &format!("{scheme}://{host}:{port}/"));
                }
            }
        }
        Err(refusal) => {
            let _ = write!(out, "\"code\":{},\"msg\":", refusal.code());
            push_json_string(&mut out, &refusal.to_string());
        }
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal (RFC 8259 §7): quotes, backslashes
/// and control characters escaped, everything else verbatim UTF-8.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(ip: &str, cur: u32, max: u32) -> MsgServerLoad {
        MsgServerLoad {
            ip1: ip.to_owned(),
            ip2: format!("{ip}-backup"),
            port: 8000,
            max_conn_cnt: max,
            cur_conn_cnt: cur,
            host_name: "h".to_owned(),
            ws_port: None,
            ws_tls: false,
        }
    }

    #[test]
    fn picks_least_loaded_below_max_with_ties_to_lowest_id() {
        let mut t = LoadTable::new();
        assert_eq!(t.pick().unwrap_err(), Refusal::NoMsgServer);
        t.upsert(5u32, server("a", 10, 100));
        t.upsert(3, server("b", 10, 100));
        t.upsert(9, server("c", 2, 2)); // full, though least loaded
        assert_eq!(t.pick().unwrap().0, 3);
        assert!(t.user_connected(3, true));
        assert_eq!(t.pick().unwrap().0, 5);
        assert!(t.user_connected(3, false));
        assert!(t.user_connected(3, false));
        assert_eq!(t.pick().unwrap().0, 3);
        assert!(!t.user_connected(77, true));
        assert_eq!(t.total_online(), 9 + 10 + 2);
        t.remove(3);
        t.remove(5);
        assert_eq!(t.pick().unwrap_err(), Refusal::MsgServerFull);
        assert_eq!(Refusal::MsgServerFull.code(), 2);
        assert_eq!(Refusal::NoMsgServer.code(), 1);
    }

    #[test]
    fn a_burst_of_answers_spreads_before_any_login_is_reported() {
        let now = crate::tests::t0();
        let mut t = LoadTable::new();
        for id in 1u32..=3 {
            t.upsert(id, server("a", 0, 100));
        }
        // Nine clients ask before any has logged in: three each, where
        // the reported counts alone would send all nine to server 1.
        let mut got = BTreeMap::<u32, u32>::new();
        for _ in 0..9 {
            *got.entry(t.assign(now).unwrap().0).or_default() += 1;
        }
        assert_eq!(got.values().copied().collect::<Vec<_>>(), [3, 3, 3]);
        assert_eq!(t.pending(2), 3);
        // A reported login settles one in flight: it is counted once.
        assert!(t.user_connected(2, true));
        assert_eq!((t.pending(2), t.get(2).unwrap().cur_conn_cnt), (2, 1));
        assert_eq!(t.pick().unwrap().0, 1, "3 + 0 everywhere: the lowest id");
        // A logout settles nothing.
        assert!(t.user_connected(2, false));
        assert_eq!(t.pending(2), 2);
        // Clients that never came stop counting after the TTL.
        let later = now + ASSIGNMENT_TTL;
        t.user_connected(3, true);
        assert_eq!(t.assign(later).unwrap().0, 1);
        assert_eq!((t.pending(1), t.pending(2), t.pending(3)), (1, 0, 0));
        assert_eq!(t.pick().unwrap().0, 2, "server 3 has one login reported");
        // A msg_server that leaves takes its assignments along.
        t.remove(1);
        assert_eq!(t.pending(1), 0);
    }

    #[test]
    fn answers_in_flight_never_refuse_a_client() {
        let now = crate::tests::t0();
        let mut t = LoadTable::new();
        t.upsert(1u32, server("a", 0, 2));
        // Eligibility is by reported connections (as TeamTalk's): answers
        // in flight only order the choice and never refuse a client.
        for _ in 0..5 {
            assert_eq!(t.assign(now).unwrap().0, 1);
        }
        t.user_connected(1, true);
        t.user_connected(1, true);
        assert_eq!(t.assign(now).unwrap_err(), Refusal::MsgServerFull);
        let empty: &mut LoadTable<u32> = &mut LoadTable::new();
        assert_eq!(empty.assign(now).unwrap_err(), Refusal::NoMsgServer);
    }

    #[test]
    fn assignments_in_flight_are_bounded() {
        let now = crate::tests::t0();
        let mut t = LoadTable::new();
        t.upsert(1u32, server("a", 0, u32::MAX));
        for _ in 0..MAX_PENDING_ASSIGNMENTS + 10 {
            t.assign(now).unwrap();
        }
        assert_eq!(t.pending(1), MAX_PENDING_ASSIGNMENTS);
    }

    proptest::proptest! {
        /// Answers to clients that have not logged in yet keep equally
        /// loaded msg_servers within one of each other, whatever logins
        /// are reported in between.
        #[test]
        fn answers_in_flight_stay_even(servers in 1u32..8, steps in proptest::collection::vec(proptest::option::of(0u32..8), 1..200)) {
            let now = crate::tests::t0();
            let mut t = LoadTable::new();
            for id in 0..servers {
                t.upsert(id, server("a", 0, u32::MAX));
            }
            for step in steps {
                match step {
                    // A login reported on a server that was assigned one.
                    Some(id) if t.pending(id % servers) > 0 => {
                        t.user_connected(id % servers, true);
                    }
                    _ => {
                        t.assign(now).unwrap();
                    }
                }
                let loads: Vec<u64> = (0..servers)
                    .map(|id| u64::from(t.get(id).unwrap().cur_conn_cnt) + t.pending(id) as u64)
                    .collect();
                let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
                proptest::prop_assert!(hi - lo <= 1, "{loads:?}");
            }
        }
    }

    #[test]
    fn user_count_saturates_at_zero() {
        let mut t = LoadTable::new();
        t.upsert(1u8, server("a", 0, 1));
        t.user_connected(1, false);
        assert_eq!(t.get(1).unwrap().cur_conn_cnt, 0);
    }

    #[test]
    fn json_has_teamtalk_fields_port_as_string_and_escapes() {
        let mut t = LoadTable::new();
        t.upsert(1u32, server("10.0.0.1\"\\\n\u{1}é", 0, 10));
        let urls = ServiceUrls {
            msfs_prior: "http://msfs:8700/".into(),
            msfs_backup: "http://msfs2:8700/".into(),
            discovery: "http://d/discovery".into(),
        };
        let json = t.msg_server_json(&urls, false);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["code"], 0);
        assert_eq!(v["msg"], "");
        assert_eq!(v["priorIP"], "10.0.0.1\"\\\n\u{1}é");
        assert_eq!(v["backupIP"], "10.0.0.1\"\\\n\u{1}é-backup");
        assert_eq!(v["msfsPrior"], "http://msfs:8700/");
        assert_eq!(v["msfsBackup"], "http://msfs2:8700/");
        assert_eq!(v["discovery"], "http://d/discovery");
        assert_eq!(v["port"], "8000");

        let empty: LoadTable<u32> = LoadTable::new();
        let v: serde_json::Value =
            serde_json::from_str(&empty.msg_server_json(&urls, false)).unwrap();
        assert_eq!(v["code"], 1);
        t.upsert(1, server("x", 10, 10));
        let v: serde_json::Value = serde_json::from_str(&t.msg_server_json(&urls, false)).unwrap();
        assert_eq!(v["code"], 2);
        assert!(v.get("priorIP").is_none());
    }

    #[test]
    fn a_browser_gets_a_msg_server_with_a_websocket_port_and_its_urls() {
        let urls = ServiceUrls {
            msfs_prior: String::new(),
            msfs_backup: String::new(),
            discovery: String::new(),
        };
        let mut t = LoadTable::new();
        t.upsert(1u32, server("10.0.0.1", 0, 10));
        let v: serde_json::Value = serde_json::from_str(&t.msg_server_json(&urls, true)).unwrap();
        assert_eq!(v["code"], 1, "no msg_server speaks WebSocket");
        let v: serde_json::Value = serde_json::from_str(&t.msg_server_json(&urls, false)).unwrap();
        assert!(v.get("wsPrior").is_none());

        let mut ws = server("10.0.0.2", 5, 10);
        ws.ws_port = Some(8800);
        t.upsert(2, ws);
        let v: serde_json::Value = serde_json::from_str(&t.msg_server_json(&urls, true)).unwrap();
        assert_eq!(
            v["priorIP"], "10.0.0.2",
            "the busier one, but it has WebSocket"
        );
        assert_eq!(v["wsPrior"], "ws://10.0.0.2:8800/");
        assert_eq!(v["wsBackup"], "ws://10.0.0.2-backup:8800/");

        let mut wss = server("2001:db8::1", 0, 10);
        wss.ws_port = Some(443);
        wss.ws_tls = true;
        t.upsert(3, wss);
        let v: serde_json::Value = serde_json::from_str(&t.msg_server_json(&urls, true)).unwrap();
        assert_eq!(v["wsPrior"], "wss://[2001:db8::1]:443/");
    }
}
