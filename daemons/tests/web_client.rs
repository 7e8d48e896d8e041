//! The web client in a real headless Chromium, end to end: the system
//! starts as `teamtalk up` runs it (login_server serving the page, one
//! WebSocket port per msg_server), each person is a browser that opens
//! login_server's address and signs in through the page, and a TeamTalk
//! desktop client is the blocking TCP client speaking TeamTalk's text
//! encoding.
//!
//! Chromium comes from Debian (`.ci/install-browser`). Without it these
//! tests fail and say how to get it; `TEAMTALK_SKIP_BROWSER=1` skips
//! them. `TEAMTALK_WEB_SCREENSHOTS=DIR` saves the screenshots the docs
//! show.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use daemons::client::text;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use teamtalk_proto::pb::im::base_define::ClientType;

/// Longest wait for anything a person would see.
const SEE: Duration = Duration::from_secs(20);

/// A person at a browser window.
struct Person {
    _browser: Browser,
    tab: Arc<Tab>,
    name: &'static str,
}

/// The Chromium to drive: `CHROME` if set, else Debian's.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROME") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Whether to run: false (with a note) only when skipping was asked for.
fn browser_wanted() -> bool {
    if std::env::var_os("TEAMTALK_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("TEAMTALK_SKIP_BROWSER=1: browser test skipped");
        return false;
    }
    assert!(
        chromium().is_some(),
        "no Chromium: run `sudo .ci/install-browser` (Debian's chromium), set CHROME=path, \
         or TEAMTALK_SKIP_BROWSER=1 to skip the browser tests"
    );
    true
}

/// The daemons' logs on stderr when `RUST_LOG` asks for them.
fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

fn launch() -> Browser {
    logs();
    let options = LaunchOptions {
        headless: true,
        // CI runs as root, where Chromium's sandbox cannot start.
        sandbox: false,
        window_size: Some((1200, 760)),
        path: chromium(),
        idle_browser_timeout: Duration::from_secs(600),
        ..LaunchOptions::default()
    };
    Browser::new(options).expect("Chromium starts")
}

/// The system for a browser test. Server links keep their production
/// timers (5 s heartbeats, 30 s silence), not the other e2e tests' 3 s:
/// Chromium starting on a busy two-core machine can starve the daemons'
/// threads for seconds, and a link declared dead then is not what these
/// tests are about.
fn browser_world() -> World {
    world_with(|_| {})
}

fn page_url(w: &World) -> String {
    format!("http://{}/", w.sys.http_addr())
}

impl Person {
    /// Opens the page in a browser of its own and signs in as `name`.
    fn sign_in(w: &World, name: &'static str) -> Self {
        let browser = launch();
        let tab = browser.new_tab().expect("tab");
        tab.set_default_timeout(SEE);
        tab.navigate_to(&page_url(w)).expect("navigate");
        tab.wait_until_navigated().expect("loaded");
        let p = Self {
            _browser: browser,
            tab,
            name,
        };
        p.wait(
            "the sign-in form",
            "!document.getElementById('login-view').hidden",
        );
        p.tab
            .wait_for_element("#user")
            .expect("#user")
            .click()
            .expect("click");
        p.tab.type_str(name).expect("type");
        p.tab
            .wait_for_element("#password")
            .expect("#password")
            .click()
            .expect("click");
        p.tab.type_str("secret").expect("type");
        p.tab.press_key("Enter").expect("submit");
        p.wait_online();
        p
    }

    /// Signed in, directory and presence loaded (which also tells
    /// route_server where this user is, before anyone writes to them).
    fn wait_online(&self) {
        self.wait(
            "signed in with the directory loaded",
            "document.getElementById('conn-state').textContent === 'Online' \
             && window.teamtalk.ready",
        );
    }

    fn eval(&self, js: &str) -> serde_json::Value {
        self.tab
            .evaluate(js, false)
            .unwrap_or_else(|e| panic!("{}: evaluating {js}: {e}", self.name))
            .value
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `js` is true; on a timeout, fails with what the page shows.
    // A browser runs in real time: the deadline is the wall clock's.
    #[allow(clippy::disallowed_methods)]
    fn wait(&self, what: &str, js: &str) {
        let end = daemons::clock::now() + SEE;
        loop {
            if self.eval(js) == serde_json::Value::Bool(true) {
                return;
            }
            if daemons::clock::now() > end {
                let body = self.eval("document.body.innerText");
                let conn = self.eval("document.getElementById('conn-state').title + ' noGroups=' + window.teamtalk.noGroups + ' ready=' + window.teamtalk.ready + ' conn=' + window.teamtalk.conn?.state");
                panic!(
                    "{}: {what} not seen within {SEE:?}; connection: {conn}; the page shows:\n{body}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks `selector` once it is on the page. The click is the DOM's
    /// (`element.click()`): lists are redrawn whenever presence or unread
    /// counts change, so a node found for a mouse click may be replaced
    /// before the click lands.
    fn click(&self, selector: &str) {
        let sel = js_str(selector);
        self.wait(
            &format!("{selector} to click"),
            &format!("(e => !!e && (e.matches('input, textarea') && e.focus(), e.click(), true))(document.querySelector({sel}))"),
        );
    }

    fn tab_named(&self, tab: &str) {
        self.click(&format!(".tabs button[data-tab='{tab}']"));
    }

    /// Opens the conversation with `key` (`u:ID` or `g:ID`) from `tab`.
    fn open(&self, tab: &str, key: &str) {
        self.tab_named(tab);
        self.click(&format!("#list li[data-session='{key}']"));
        self.wait(
            "the conversation",
            &format!(
                "window.teamtalk.current === '{key}' && !document.getElementById('composer').hidden"
            ),
        );
    }

    /// Types `text` and presses Enter; waits for the server's ack.
    fn say(&self, text: &str) {
        self.click("#text");
        self.tab.type_str(text).expect("type");
        self.tab.press_key("Enter").expect("send");
        self.wait(
            &format!("'{text}' acknowledged"),
            &format!(
                "[...document.querySelectorAll('#message-list .msg.mine')].some(m => \
                 m.dataset.msgId !== '0' && m.querySelector('.bubble').textContent === {})",
                js_str(text)
            ),
        );
    }

    /// Waits for a message with `text` in the open conversation.
    fn sees(&self, text: &str) {
        self.wait(
            &format!("message '{text}'"),
            &format!(
                "[...document.querySelectorAll('#message-list .bubble')].some(b => b.textContent === {})",
                js_str(text)
            ),
        );
    }

    /// The unread badge of `key` in the chats list, once it reads `n`.
    fn sees_unread(&self, key: &str, n: u32) {
        self.tab_named("chats");
        let badge = if n == 0 {
            format!("!document.querySelector(\"#list li[data-session='{key}'] .badge\")")
        } else {
            format!(
                "document.querySelector(\"#list li[data-session='{key}'] .badge\")?.textContent === '{n}'"
            )
        };
        self.wait(
            &format!("{n} unread from {key}"),
            &format!("!!document.querySelector(\"#list li[data-session='{key}']\") && {badge}"),
        );
    }

    fn message_count(&self) -> u64 {
        self.eval("document.querySelectorAll('#message-list .msg').length")
            .as_u64()
            .unwrap_or(0)
    }

    /// Saves a screenshot when the docs' screenshots are being made.
    fn screenshot(&self, file: &str) {
        let Some(dir) = std::env::var_os("TEAMTALK_WEB_SCREENSHOTS") else {
            return;
        };
        // Let images and the last render settle.
        std::thread::sleep(Duration::from_millis(300));
        let png = self
            .tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .expect("screenshot");
        let path = PathBuf::from(dir).join(file);
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }
}

/// `s` as a JavaScript string literal.
fn js_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn key(id: u32) -> String {
    format!("u:{id}")
}

#[test]
fn browsers_chat_with_each_other_and_with_a_desktop_client() {
    if !browser_wanted() {
        return;
    }
    let w = browser_world();
    let (alice_id, bob_id, carol_id) = (w.user_id("alice"), w.user_id("bob"), w.user_id("carol"));
    let alice = Person::sign_in(&w, "alice");
    let bob = Person::sign_in(&w, "bob");

    // alice sees bob online in the directory.
    alice.tab_named("people");
    alice.wait(
        "bob online",
        &format!("document.querySelector(\"#list li[data-session='u:{bob_id}'] .avatar\")?.dataset.status === '1'"),
    );

    // Browser to browser, both ways.
    alice.open("people", &key(bob_id));
    alice.say("hello bob, from a browser");
    bob.sees_unread(&key(alice_id), 1);
    bob.open("chats", &key(alice_id));
    bob.sees("hello bob, from a browser");
    bob.say("hi alice, ça va?");
    alice.sees("hi alice, ça va?");
    bob.sees_unread(&key(alice_id), 0);

    // A desktop client (TCP, TeamTalk's text encoding) on the other
    // msg_server writes to alice; she reads it as text.
    let mut carol = w.login(1, "carol", ClientType::Windows);
    let body = text::encode("carol on the desktop", text::DEFAULT_KEY);
    assert!(send(&mut carol, alice_id, &body) > 0);
    alice.sees_unread(&key(carol_id), 1);
    alice.open("chats", &key(carol_id));
    alice.sees("carol on the desktop");

    // An image in TeamTalk's form (its URL between the clients' markers,
    // as after an msfs upload) is shown inline and loads.
    let url = format!("{}favicon.svg", page_url(&w));
    let image = format!("look: &$#@~^@[{{:{url}:}}]&$~@#@");
    assert!(
        send(
            &mut carol,
            alice_id,
            &text::encode(&image, text::DEFAULT_KEY)
        ) > 0
    );
    alice.wait(
        "the image inline, loaded",
        &format!(
            "[...document.querySelectorAll('#message-list .bubble')].some(b => \
             b.firstChild?.textContent === 'look: ' && b.querySelector('img')?.src === {} \
             && b.querySelector('img').complete && b.querySelector('img').naturalWidth > 0)",
            js_str(&url)
        ),
    );
    alice.screenshot("web-client-chat.png");

    // alice answers: the desktop client decodes what the browser encoded.
    alice.say("browser to desktop: ünïcödé ok");
    let got = receive(&mut carol);
    assert_eq!(got.from_user_id, alice_id);
    assert_eq!(
        text::decode(&got.msg_data, text::DEFAULT_KEY).as_deref(),
        Some("browser to desktop: ünïcödé ok"),
        "the browser speaks TeamTalk's text encoding"
    );

    // alice sends an image from her disk: the page uploads it to msfs
    // (login_server's origin may read msfs's answer) and sends its URL in
    // TeamTalk's image form; the desktop client gets the URL and fetches
    // the very bytes back from msfs.
    let png = tiny_png();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dot.png");
    std::fs::write(&file, &png).unwrap();
    alice
        .tab
        .wait_for_element("#image-file")
        .expect("#image-file")
        .set_input_files(&[file.to_str().unwrap()])
        .expect("choose the file");
    let got = receive(&mut carol);
    assert_eq!(got.from_user_id, alice_id);
    let sent = text::decode(&got.msg_data, text::DEFAULT_KEY).expect("TeamTalk text");
    let url = sent
        .strip_prefix("&$#@~^@[{:")
        .and_then(|s| s.strip_suffix(":}]&$~@#@"))
        .unwrap_or_else(|| panic!("an image message, got {sent:?}"));
    assert_eq!(http_get(url), png, "msfs serves what the browser uploaded");
    alice.wait(
        "her own image shown inline",
        &format!(
            "[...document.querySelectorAll('#message-list .bubble img')].some(i => i.src === {} && i.complete && i.naturalWidth > 0)",
            js_str(url)
        ),
    );

    // Presence: carol leaves; bob's directory shows her offline.
    bob.tab_named("people");
    bob.wait(
        "carol online",
        &format!("document.querySelector(\"#list li[data-session='u:{carol_id}'] .avatar\")?.dataset.status === '1'"),
    );
    bob.screenshot("web-client-people.png");
    carol.logout().expect("logout");
    drop(carol);
    bob.wait(
        "carol offline",
        &format!("document.querySelector(\"#list li[data-session='u:{carol_id}'] .avatar\")?.dataset.status === '2'"),
    );
}

#[test]
fn history_pages_and_unread_counts_survive_a_reload() {
    if !browser_wanted() {
        return;
    }
    let w = browser_world();
    let (alice_id, carol_id) = (w.user_id("alice"), w.user_id("carol"));
    let alice = Person::sign_in(&w, "alice");

    // 25 messages from a desktop client while alice looks elsewhere.
    let mut carol = w.login(0, "carol", ClientType::Windows);
    for i in 1..=25 {
        let body = text::encode(&format!("note {i}"), text::DEFAULT_KEY);
        assert!(send(&mut carol, alice_id, &body) > 0);
    }
    alice.sees_unread(&key(carol_id), 25);

    // A reload signs in again by itself; the count comes from the server.
    alice.tab.reload(false, None).expect("reload");
    alice.wait_online();
    alice.sees_unread(&key(carol_id), 25);
    alice.wait(
        "the total in the tab",
        "document.getElementById('total-unread').textContent === '25' && document.title === '(25) TeamTalk'",
    );

    // The conversation opens on the latest page; older pages load on demand.
    alice.open("chats", &key(carol_id));
    alice.sees("note 25");
    alice.sees("note 6");
    assert_eq!(alice.message_count(), 20, "one page of 20");
    alice.click("#older");
    alice.sees("note 1");
    assert_eq!(alice.message_count(), 25);
    alice.wait("no more pages", "document.getElementById('older').hidden");
    alice.say("read them all");
    assert_eq!(
        text::decode(&receive(&mut carol).msg_data, text::DEFAULT_KEY).as_deref(),
        Some("read them all")
    );

    // Opening the conversation sent a read ack: after another reload
    // nothing is unread, and the history holds both sides.
    alice.tab.reload(false, None).expect("reload");
    alice.wait_online();
    alice.tab_named("chats");
    alice.wait(
        "carol in the recent chats",
        &format!("!!document.querySelector(\"#list li[data-session='u:{carol_id}']\")"),
    );
    alice.sees_unread(&key(carol_id), 0);
    alice.wait(
        "no unread total",
        "document.getElementById('total-unread').hidden && document.title === 'TeamTalk'",
    );
    let (total, _) = unread(&mut w.login(1, "alice", ClientType::Android));
    assert_eq!(total, 0, "the server agrees: nothing unread");
    alice.open("chats", &key(carol_id));
    alice.sees("read them all");
    alice.sees("note 25");
}

#[test]
fn a_group_made_in_the_browser_reaches_browser_and_desktop_members() {
    if !browser_wanted() {
        return;
    }
    let w = browser_world();
    let (bob_id, carol_id) = (w.user_id("bob"), w.user_id("carol"));
    let alice = Person::sign_in(&w, "alice");
    let bob = Person::sign_in(&w, "bob");
    let mut carol = w.login(1, "carol", ClientType::Windows);

    // alice makes a group of the three of them in the page.
    alice.tab_named("groups");
    alice.click("#new-group");
    alice.wait("the dialog", "document.getElementById('group-dialog').open");
    alice.click("#group-name");
    alice.tab.type_str("Release crew").expect("type");
    alice.click(&format!("#group-members input[value='{bob_id}']"));
    alice.click(&format!("#group-members input[value='{carol_id}']"));
    alice.click("#group-create");
    alice.wait(
        "the new group open",
        "(window.teamtalk.current || '').startsWith('g:') \
         && document.getElementById('conv-title').textContent === 'Release crew'",
    );
    let gid = alice
        .eval("Number(window.teamtalk.current.slice(2))")
        .as_u64()
        .and_then(|g| u32::try_from(g).ok())
        .expect("group id");
    let group = format!("g:{gid}");
    alice.say("welcome to the crew");

    // bob learns of the group from its first message.
    bob.sees_unread(&group, 1);
    bob.wait(
        "the group's name",
        &format!(
            "document.querySelector(\"#list li[data-session='{group}'] .name\")?.textContent === 'Release crew'"
        ),
    );
    bob.open("chats", &group);
    bob.sees("welcome to the crew");
    bob.say("glad to be here");
    alice.sees("glad to be here");
    alice.wait(
        "bob named as the sender",
        "[...document.querySelectorAll('#message-list .msg.theirs .from')].some(f => f.textContent === 'BOB')",
    );

    // The desktop member gets both, in TeamTalk's group form and encoding.
    for want in ["welcome to the crew", "glad to be here"] {
        let m = receive(&mut carol);
        assert_eq!(m.msg_type, 0x11, "group text");
        assert_eq!(m.to_session_id, gid);
        assert_eq!(
            text::decode(&m.msg_data, text::DEFAULT_KEY).as_deref(),
            Some(want)
        );
    }
    // ... and writes back to the group: both browsers show it.
    let mut m = common::text(gid, &text::encode("desktop says hi", text::DEFAULT_KEY));
    m.msg_type = 0x11;
    let ack = carol
        .request(
            teamtalk_proto::Command::MsgData,
            &m,
            teamtalk_proto::Command::MsgDataAck,
            T,
        )
        .expect("ack");
    assert!(matches!(ack, teamtalk_proto::Message::MsgDataAck(a) if a.msg_id > 0));
    alice.sees("desktop says hi");
    bob.sees("desktop says hi");
    alice.tab_named("groups");
    alice.wait(
        "the group listed with 3 members",
        &format!(
            "document.querySelector(\"#list li[data-session='{group}'] .preview\")?.textContent === '3 members'"
        ),
    );
    alice.screenshot("web-client-group.png");
}

#[test]
fn a_wrong_password_is_said_and_not_retried() {
    if !browser_wanted() {
        return;
    }
    let w = browser_world();
    let browser = launch();
    let tab = browser.new_tab().expect("tab");
    tab.navigate_to(&page_url(&w)).expect("navigate");
    tab.wait_until_navigated().expect("loaded");
    let p = Person {
        _browser: browser,
        tab,
        name: "mallory",
    };
    p.wait(
        "the sign-in form",
        "!document.getElementById('login-view').hidden",
    );
    p.click("#user");
    p.tab.type_str("alice").expect("type");
    p.click("#password");
    p.tab.type_str("not the password").expect("type");
    p.tab.press_key("Enter").expect("submit");
    p.wait(
        "the refusal",
        "document.getElementById('login-error').textContent === 'Wrong user name or password.'",
    );
    assert_eq!(
        p.eval("window.teamtalk.conn === null && document.getElementById('main-view').hidden"),
        serde_json::Value::Bool(true)
    );
}

/// A valid 1x1 PNG (a red dot), built here so the test has no binary file.
fn tiny_png() -> Vec<u8> {
    // Signature, IHDR (1x1, 8-bit RGB), IDAT (zlib of one filtered row),
    // IEND; CRCs precomputed.
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png.extend_from_slice(&[
        0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0, 0x90, 0x77,
        0x53, 0xde,
    ]);
    png.extend_from_slice(&[
        0, 0, 0, 12, b'I', b'D', b'A', b'T', 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00, 0x00, 0x03,
        0x01, 0x01, 0x00, 0xc9, 0xfe, 0x92, 0xef,
    ]);
    png.extend_from_slice(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]);
    png
}

/// The body of `GET url` (`http://host:port/path`), over a plain socket.
fn http_get(url: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = std::net::TcpStream::connect(host).expect("connect to msfs");
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    all[split + 4..].to_vec()
}
