//! login_server over real sockets: raw TCP msg_servers register, HTTP and
//! legacy TCP clients ask where to go.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use daemons::clock;
use daemons::login::{self, LoginConfig, RunningLogin};
use teamtalk_conn::ServiceUrls;
use teamtalk_proto::pb::im::login::ImMsgServReq;
use teamtalk_proto::pb::im::server::{ImMsgServInfo, ImUserCntUpdate};
use teamtalk_proto::{Command, Message, Pdu, PduCodec};

/// A safety net against a hung test, not a measurement.
const PATIENCE: Duration = Duration::from_secs(20);

fn start() -> RunningLogin {
    let mut cfg = LoginConfig::loopback();
    cfg.urls = ServiceUrls {
        msfs_prior: "http://127.0.0.1:8700/".into(),
        msfs_backup: "http://127.0.0.1:8700/".into(),
        discovery: "http://127.0.0.1/api/discovery".into(),
    };
    login::spawn(cfg).expect("login_server starts")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

fn register(addr: SocketAddr, ip: &str, port: u32, cur: u32) -> TcpStream {
    let mut s = connect(addr);
    let info = ImMsgServInfo {
        ip1: ip.to_owned(),
        ip2: format!("{ip}0"),
        port,
        max_conn_cnt: 100,
        cur_conn_cnt: cur,
        host_name: format!("ms-{ip}"),
        ..Default::default()
    };
    s.write_all(&Command::OtherMsgServInfo.pdu(0, &info).to_bytes())
        .unwrap();
    s
}

/// Waits until login_server's table satisfies `cond` (it has no reply to a
/// registration to wait for instead).
fn wait_for(login: &RunningLogin, what: &str, cond: impl Fn(&RunningLogin) -> bool) {
    let deadline = clock::now() + PATIENCE;
    while !cond(login) {
        assert!(clock::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends raw bytes, returns everything the server sends before closing.
fn http_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    out
}

/// `GET path`: status line, headers, body.
fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = String::from_utf8(http_raw(addr, req.as_bytes())).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

fn assignment(addr: SocketAddr) -> serde_json::Value {
    let (status, _, body) = get(addr, "/msg_server");
    assert_eq!(status, "HTTP/1.1 200 OK");
    serde_json::from_str(&body).expect("JSON body")
}

#[test]
fn http_offers_the_least_loaded_live_msg_server() {
    let login = start();
    let http = login.http_addr();

    let v = assignment(http);
    assert_eq!(v["code"], 1, "{v}");

    let m1 = register(login.msg_server_addr(), "10.0.0.1", 8000, 5);
    wait_for(&login, "m1", |l| l.msg_servers().len() == 1);
    let (status, headers, body) = get(http, "/msg_server");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/html;charset=utf-8"),
        "{headers}"
    );
    assert!(headers.contains("Connection: close"), "{headers}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 0);
    assert_eq!(v["priorIP"], "10.0.0.1");
    assert_eq!(v["backupIP"], "10.0.0.10");
    assert_eq!(v["port"], "8000", "the port is a string");
    assert_eq!(v["msfsPrior"], "http://127.0.0.1:8700/");
    assert_eq!(v["msfsBackup"], "http://127.0.0.1:8700/");
    assert_eq!(v["discovery"], "http://127.0.0.1/api/discovery");

    // A second, less loaded msg_server wins...
    let mut m2 = register(login.msg_server_addr(), "10.0.0.2", 8001, 1);
    wait_for(&login, "m2", |l| l.msg_servers().len() == 2);
    assert_eq!(assignment(http)["priorIP"], "10.0.0.2");
    // ...until its clients make it the busier one. Each answer counts
    // against the msg_server it names until that one reports the login
    // (m1, a stand-in, never does): m1 is at 5 + 1 answered, so m2 needs
    // more than 5 more clients.
    for _ in 0..7 {
        let up = ImUserCntUpdate {
            user_action: 1,
            user_id: 3,
        };
        m2.write_all(&Command::OtherUserCntUpdate.pdu(0, &up).to_bytes())
            .unwrap();
    }
    wait_for(&login, "m2's clients", |l| l.total_online() == 5 + 8);
    let v = assignment(http);
    assert_eq!(
        (&v["priorIP"], &v["port"]),
        (&"10.0.0.1".into(), &"8000".into())
    );

    // Our own client library reads the answer the way TeamTalk clients do.
    let a = daemons::client::query_msg_server(http, PATIENCE).expect("assignment");
    assert_eq!(a.addr().unwrap(), "10.0.0.1:8000".parse().unwrap());
    assert_eq!(a.backup_ip, "10.0.0.10");

    // m1 goes away: only m2 is offered.
    m1.shutdown(std::net::Shutdown::Both).unwrap();
    drop(m1);
    wait_for(&login, "m1 gone", |l| l.msg_servers().len() == 1);
    assert_eq!(assignment(http)["priorIP"], "10.0.0.2");

    drop(m2);
    wait_for(&login, "m2 gone", |l| l.msg_servers().is_empty());
    assert_eq!(assignment(http)["code"], 1);
    login.stop();
}

#[test]
fn http_rejects_other_paths_and_oversized_requests() {
    let login = start();
    let http = login.http_addr();
    let (status, _, _) = get(http, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // A browser's head with a few cookies (over TeamTalk's 1024 bytes) is
    // served; over the 8 KiB head limit: answered 431, then closed.
    let mut cookies = b"GET /msg_server HTTP/1.1\r\nCookie: ".to_vec();
    cookies.extend(std::iter::repeat_n(b'x', 3000));
    cookies.extend_from_slice(b"\r\n\r\n");
    let got = http_raw(http, &cookies);
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let mut big = b"GET /msg_server HTTP/1.1\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'x', 8300));
    big.extend_from_slice(b"\r\n\r\n");
    let got = http_raw(http, &big);
    assert!(
        got.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    let bad = http_raw(http, b"HELLO\r\n\r\n");
    assert!(bad.starts_with(b"HTTP/1.1 400"), "{bad:?}");
    login.stop();
}

#[test]
fn legacy_tcp_query_is_answered_then_closed() {
    let login = start();
    let _m = register(login.msg_server_addr(), "192.0.2.7", 8000, 0);
    wait_for(&login, "registration", |l| l.msg_servers().len() == 1);

    let mut client = connect(login.client_addr().expect("legacy port open"));
    client
        .write_all(
            &Command::LoginReqMsgserver
                .pdu(9, &ImMsgServReq {})
                .to_bytes(),
        )
        .unwrap();
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).expect("answer, then EOF");
    let mut buf = BytesMut::from(&raw[..]);
    let mut codec = PduCodec::default();
    let pdu: Pdu = codec.decode(&mut buf).unwrap().expect("one PDU");
    assert!(buf.is_empty(), "nothing after the answer");
    assert_eq!(pdu.seq(), 9);
    let Message::LoginResMsgserver(rsp) = Message::decode(&pdu).unwrap() else {
        panic!("{pdu:?}")
    };
    assert_eq!(rsp.result_code, 0);
    assert_eq!(rsp.prior_ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(rsp.backip_ip.as_deref(), Some("192.0.2.70"));
    assert_eq!(rsp.port, Some(8000));
    wait_for(&login, "the counter", |l| l.counters().tcp_queries == 1);
    login.stop();
}

#[test]
fn silent_http_clients_are_dropped_after_the_timeout() {
    let mut cfg = LoginConfig::loopback();
    cfg.http_timeout = Duration::from_millis(100);
    let login = login::spawn(cfg).expect("login_server starts");
    // Half a request, then silence: 408 at the deadline, then closed.
    let got = http_raw(login.http_addr(), b"GET /msg_server HTTP/1.1\r\n");
    assert!(got.starts_with(b"HTTP/1.1 408"), "{got:?}");
    // Nothing at all: closed without a word.
    let got = http_raw(login.http_addr(), b"");
    assert!(got.is_empty(), "{got:?}");
    login.stop();
}
