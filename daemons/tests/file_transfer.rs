//! End to end: file transfer through `teamtalk up`'s file_server between
//! two clients on different msg_servers, online (relayed live) and
//! offline (stored, fetched later), with the steps TeamTalk's PC client
//! takes, as raw PDUs on TCP.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use daemons::client::{Client, ClientError};
use sha2::{Digest, Sha256};
use teamtalk_proto::pb::im::base_define::{ClientFileRole, ClientFileState, ClientType};
use teamtalk_proto::pb::im::file::{
    ImFileAddOfflineReq, ImFileDelOfflineReq, ImFileHasOfflineReq, ImFileLoginReq, ImFileNotify,
    ImFilePullDataReq, ImFilePullDataRsp, ImFileReq, ImFileRsp, ImFileState,
};
use teamtalk_proto::{Command, Message};

const ONLINE: i32 = 1;
const OFFLINE: i32 = 2;
/// What TeamTalk's PC client asks for in one pull.
const PC_BLOCK: u32 = 34 * 1024;
const TEN_MB: usize = 10 * 1024 * 1024;

fn file_body(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// The sender offers a file to `to`; the 0x0507.
fn offer(c: &mut Client, to: u32, size: usize, mode: i32) -> ImFileRsp {
    let req = ImFileReq {
        from_user_id: 0,
        to_user_id: to,
        file_name: "C:/Users/alice/Documents/big.bin".into(),
        file_size: u32::try_from(size).unwrap(),
        trans_mode: mode,
    };
    let Message::FileResponse(rsp) = c
        .request(Command::FileRequest, &req, Command::FileResponse, T)
        .expect("file response")
    else {
        panic!()
    };
    assert_eq!(rsp.result_code, 0, "{rsp:?}");
    assert_eq!(rsp.task_id.len(), 36);
    rsp
}

fn notified(c: &mut Client) -> ImFileNotify {
    match c.wait_command(Command::FileNotify, T).expect("file notify") {
        Message::FileNotify(n) => n,
        other => panic!("{other:?}"),
    }
}

fn file_server(addrs: &[teamtalk_proto::pb::im::base_define::IpAddr]) -> SocketAddr {
    let a = addrs.first().expect("a file_server address");
    format!("{}:{}", a.ip, a.port).parse().expect("address")
}

/// A connection to file_server logged in to `task`; the login's result.
fn file_login(addr: SocketAddr, user: u32, task: &str, role: ClientFileRole) -> (Client, u32) {
    let mut c = Client::connect(addr, T).expect("connect to file_server");
    let req = ImFileLoginReq {
        user_id: user,
        task_id: task.to_owned(),
        file_role: role as i32,
    };
    let Message::FileLoginRes(rsp) = c
        .request(Command::FileLoginReq, &req, Command::FileLoginRes, T)
        .expect("file login answered")
    else {
        panic!()
    };
    assert_eq!(rsp.task_id, task);
    (c, rsp.result_code)
}

fn state(c: &mut Client) -> ImFileState {
    match c.wait_command(Command::FileState, T).expect("file state") {
        Message::FileState(s) => s,
        other => panic!("{other:?}"),
    }
}

/// Answers one pull from `body` as the sender `user` (TeamTalk's client
/// reads the block at the offset asked and names itself); `asked_by` is
/// the user the pull names (file_server itself names the uploader; an
/// online pull is the receiver's, relayed). The end of the block sent.
fn answer_pull(
    c: &mut Client,
    task: &str,
    user: u32,
    asked_by: u32,
    body: &[u8],
) -> (usize, usize) {
    let Message::FilePullDataReq(req) = c.wait_command(Command::FilePullDataReq, T).unwrap() else {
        panic!()
    };
    assert_eq!((req.task_id.as_str(), req.user_id), (task, asked_by));
    let (start, end) = (
        req.offset as usize,
        req.offset as usize + req.data_size as usize,
    );
    let rsp = ImFilePullDataRsp {
        result_code: 0,
        task_id: task.to_owned(),
        user_id: user,
        offset: req.offset,
        file_data: bytes::Bytes::copy_from_slice(&body[start..end]),
    };
    c.send(Command::FilePullDataRsp, &rsp).unwrap();
    (start, end)
}

/// Answers file_server's pulls of an upload from `from` until at least
/// `stop` bytes are sent; the bytes sent.
fn serve_pulls(
    c: &mut Client,
    task: &str,
    user: u32,
    body: &[u8],
    from: usize,
    stop: usize,
) -> usize {
    let mut sent = from;
    while sent < stop {
        let (start, end) = answer_pull(c, task, user, user, body);
        assert_eq!(start, sent, "asked in order, from where it stopped");
        sent = end;
    }
    sent
}

/// Pulls a whole file as TeamTalk's PC client does; the bytes.
fn pull_all(c: &mut Client, task: &str, user: u32, size: usize, mode: i32) -> Vec<u8> {
    let mut got = Vec::with_capacity(size);
    while got.len() < size {
        let offset = u32::try_from(got.len()).unwrap();
        let want = PC_BLOCK.min(u32::try_from(size).unwrap() - offset);
        let req = ImFilePullDataReq {
            task_id: task.to_owned(),
            user_id: user,
            trans_mode: mode,
            offset,
            data_size: want,
        };
        let Message::FilePullDataRsp(rsp) = c
            .request(Command::FilePullDataReq, &req, Command::FilePullDataRsp, T)
            .expect("data")
        else {
            panic!()
        };
        assert_eq!((rsp.result_code, rsp.offset), (0, offset));
        assert!(!rsp.file_data.is_empty());
        got.extend_from_slice(&rsp.file_data);
    }
    got
}

#[test]
fn ten_megabytes_online_between_clients_on_two_msg_servers() {
    let w = world();
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let body = file_body(TEN_MB);

    // Bob's PC is online on the other msg_server: route_server says so,
    // and the transfer is online.
    let rsp = offer(&mut alice, bob_id, body.len(), ONLINE);
    assert_eq!(rsp.trans_mode, ONLINE);
    let n = notified(&mut bob);
    assert_eq!(
        (
            n.from_user_id,
            n.task_id.as_str(),
            n.trans_mode,
            n.offline_ready
        ),
        (alice_id, rsp.task_id.as_str(), ONLINE, 0)
    );
    let addr = file_server(&n.ip_addr_list);
    assert_eq!(addr, file_server(&rsp.ip_addr_list));
    let task = rsp.task_id;

    let (mut rx, code) = file_login(addr, bob_id, &task, ClientFileRole::ClientRealtimeRecver);
    assert_eq!(code, 0);
    let (mut tx, code) = file_login(addr, alice_id, &task, ClientFileRole::ClientRealtimeSender);
    assert_eq!(code, 0);
    let ready = state(&mut rx);
    assert_eq!(ready.state, ClientFileState::ClientFilePeerReady as i32);

    // Bob pulls, file_server relays to Alice, Alice answers, back to Bob.
    let mut got = Vec::with_capacity(body.len());
    while got.len() < body.len() {
        let offset = u32::try_from(got.len()).unwrap();
        let want = PC_BLOCK.min(u32::try_from(body.len()).unwrap() - offset);
        let req = ImFilePullDataReq {
            task_id: task.clone(),
            user_id: bob_id,
            trans_mode: ONLINE,
            offset,
            data_size: want,
        };
        let seq = rx.send(Command::FilePullDataReq, &req).unwrap();
        let (start, end) = answer_pull(&mut tx, &task, alice_id, bob_id, &body);
        assert_eq!((start, end), (offset as usize, (offset + want) as usize));
        let pdu = rx
            .wait_for(T, "data", |p| p.is(Command::FilePullDataRsp.key()))
            .unwrap();
        assert_eq!(pdu.seq(), seq, "the receiver's own seq back");
        let rsp: ImFilePullDataRsp = pdu.decode_body().unwrap();
        assert_eq!((rsp.result_code, rsp.offset), (0, offset));
        got.extend_from_slice(&rsp.file_data);
    }
    assert_eq!(sha(&got), sha(&body));
    rx.send(
        Command::FileState,
        &ImFileState {
            state: ClientFileState::ClientFileDone as i32,
            task_id: task.clone(),
            user_id: bob_id,
        },
    )
    .unwrap();
    let done = state(&mut tx);
    assert_eq!(
        (done.state, done.user_id),
        (ClientFileState::ClientFileDone as i32, bob_id)
    );
    assert!(closed(&mut tx));
    let stats = w.sys.file_server().expect("file_server").stats();
    assert_eq!(stats.bytes_relayed, TEN_MB as u64);
    // The same counters on the system's /metrics.
    let metrics = scrape(w.sys.admin_addr().expect("admin endpoint"));
    let line = |name: &str, label: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains("daemon=\"file_server\"")
                    && l.contains(label)
            })
            .unwrap_or_else(|| panic!("no {name} {label} in /metrics"))
            .rsplit_once(' ')
            .map(|(_, v)| v.to_owned())
            .unwrap()
    };
    assert_eq!(
        line("teamtalk_file_bytes_total", "direction=\"relayed\""),
        TEN_MB.to_string()
    );
    assert_eq!(
        line("teamtalk_file_tasks_created_total", "mode=\"online\""),
        "1"
    );
    assert_eq!(
        line("teamtalk_file_tasks_ended_total", "reason=\"done\""),
        "1"
    );
}

/// The body of `GET /metrics`.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, T).expect("admin port");
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    raw.split_once("\r\n\r\n").expect("a head").1.to_owned()
}

/// Uploads `body` as the sender of `task`, the way TeamTalk's client
/// answers file_server's pulls, until DONE.
fn upload_rest(up: &mut Client, task: &str, user: u32, body: &[u8], from: usize) {
    let sent = serve_pulls(up, task, user, body, from, body.len());
    assert_eq!(sent, body.len());
    let done = state(up);
    assert_eq!(
        (done.state, done.user_id),
        (ClientFileState::ClientFileDone as i32, user)
    );
    assert!(closed(up));
}

/// Asks for the waiting offline files until `ready` holds (at most 20 s).
fn waiting_files(
    c: &mut Client,
    ready: impl Fn(&teamtalk_proto::pb::im::file::ImFileHasOfflineRsp) -> bool,
) -> teamtalk_proto::pb::im::file::ImFileHasOfflineRsp {
    let deadline = daemons::clock::now() + Duration::from_secs(20);
    loop {
        let waiting = has_offline(c);
        if ready(&waiting) {
            return waiting;
        }
        assert!(daemons::clock::now() < deadline, "never ready: {waiting:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_offline(c: &mut Client) -> teamtalk_proto::pb::im::file::ImFileHasOfflineRsp {
    let req = ImFileHasOfflineReq {
        user_id: 0,
        attach_data: None,
    };
    match c
        .request(
            Command::FileHasOfflineReq,
            &req,
            Command::FileHasOfflineRes,
            T,
        )
        .expect("offline files")
    {
        Message::FileHasOfflineRes(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn ten_megabytes_offline_with_an_interrupted_upload_and_a_stranger_refused() {
    let w = world();
    let (alice_id, bob_id, carol_id) = (w.user_id("alice"), w.user_id("bob"), w.user_id("carol"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let body = file_body(TEN_MB);

    let rsp = offer(&mut alice, bob_id, body.len(), OFFLINE);
    assert_eq!(rsp.trans_mode, OFFLINE);
    let task = rsp.task_id.clone();
    let addr = file_server(&rsp.ip_addr_list);

    // The upload breaks off after a third.
    let (mut up, code) = file_login(addr, alice_id, &task, ClientFileRole::ClientOfflineUpload);
    assert_eq!(code, 0);
    let cut = serve_pulls(&mut up, &task, alice_id, &body, 0, body.len() / 3);
    drop(up);
    // file_server has taken every byte sent before the connection broke.
    let deadline = daemons::clock::now() + T;
    while w
        .sys
        .file_server()
        .expect("file_server")
        .stats()
        .bytes_uploaded
        < cut as u64
    {
        assert!(daemons::clock::now() < deadline, "upload not received");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Nothing to download yet.
    let (mut early, code) = file_login(addr, bob_id, &task, ClientFileRole::ClientOfflineDownload);
    assert_eq!(code, 1);
    assert!(closed(&mut early));
    // Alice comes back and is asked for the rest, from where it stopped.
    let (mut up, code) = file_login(addr, alice_id, &task, ClientFileRole::ClientOfflineUpload);
    assert_eq!(code, 0);
    let (start, end) = answer_pull(&mut up, &task, alice_id, alice_id, &body);
    assert_eq!(start, cut, "resumed at its offset");
    upload_rest(&mut up, &task, alice_id, &body, end);

    // As TeamTalk's client: the upload is recorded, Bob is told.
    let mut bob = w.login(1, "bob", ClientType::Windows);
    alice
        .send(
            Command::FileAddOfflineReq,
            &ImFileAddOfflineReq {
                from_user_id: alice_id,
                to_user_id: bob_id,
                task_id: task.clone(),
                file_name: "big.bin".into(),
                file_size: u32::try_from(body.len()).unwrap(),
            },
        )
        .unwrap();
    let n = notified(&mut bob);
    assert_eq!((n.task_id.as_str(), n.offline_ready), (task.as_str(), 1));
    // The record goes to db_proxy on Alice's msg_server's link, Bob's
    // question on his: it may overtake the record.
    let waiting = waiting_files(&mut bob, |w| !w.offline_file_list.is_empty());
    assert_eq!(waiting.offline_file_list.len(), 1);
    assert_eq!(waiting.offline_file_list[0].task_id, task);
    assert_eq!(waiting.offline_file_list[0].from_user_id, alice_id);
    let addr = file_server(&waiting.ip_addr_list);

    // Carol has the task id: refused, in every role.
    for role in [
        ClientFileRole::ClientOfflineDownload,
        ClientFileRole::ClientOfflineUpload,
        ClientFileRole::ClientRealtimeRecver,
    ] {
        let (mut c, code) = file_login(addr, carol_id, &task, role);
        assert_eq!(code, 1, "{role:?}");
        assert!(closed(&mut c));
    }

    let (mut down, code) = file_login(addr, bob_id, &task, ClientFileRole::ClientOfflineDownload);
    assert_eq!(code, 0);
    let got = pull_all(&mut down, &task, bob_id, body.len(), OFFLINE);
    assert_eq!(sha(&got), sha(&body));
    let done = state(&mut down);
    assert_eq!(
        (done.state, done.user_id),
        (ClientFileState::ClientFileDone as i32, alice_id)
    );
    assert!(closed(&mut down));
    // Downloaded: the file is gone from file_server, and Bob forgets the
    // record as his client does.
    let (mut again, code) = file_login(addr, bob_id, &task, ClientFileRole::ClientOfflineDownload);
    assert_eq!(code, 1);
    assert!(closed(&mut again));
    bob.send(
        Command::FileDelOfflineReq,
        &ImFileDelOfflineReq {
            from_user_id: alice_id,
            to_user_id: bob_id,
            task_id: task.clone(),
        },
    )
    .unwrap();
    assert!(has_offline(&mut bob).offline_file_list.is_empty());
    let stats = w.sys.file_server().expect("file_server").stats();
    assert_eq!(stats.bytes_downloaded, TEN_MB as u64);
    assert_eq!(stats.bytes_uploaded, TEN_MB as u64);
    let refusals = scrape(w.sys.admin_addr().expect("admin endpoint"));
    assert!(
        refusals
            .lines()
            .any(|l| l.starts_with("teamtalk_file_refusals_total{")
                && l.contains("reason=\"wrong_user\"")
                && l.ends_with(" 3")),
        "Carol's three refusals counted"
    );
}

#[test]
fn an_offline_file_survives_a_file_server_restart() {
    let mut w = world();
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let body = file_body(1024 * 1024 + 17);
    let rsp = offer(&mut alice, bob_id, body.len(), OFFLINE);
    let task = rsp.task_id.clone();
    let addr = file_server(&rsp.ip_addr_list);
    let (mut up, code) = file_login(addr, alice_id, &task, ClientFileRole::ClientOfflineUpload);
    assert_eq!(code, 0);
    upload_rest(&mut up, &task, alice_id, &body, 0);
    alice
        .send(
            Command::FileAddOfflineReq,
            &ImFileAddOfflineReq {
                from_user_id: alice_id,
                to_user_id: bob_id,
                task_id: task.clone(),
                file_name: "big.bin".into(),
                file_size: u32::try_from(body.len()).unwrap(),
            },
        )
        .unwrap();

    w.sys.restart_file().expect("file_server restarts");

    // Bob logs in later, on the other msg_server: the file waits for him,
    // once the msg_servers have linked to the new file_server.
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let waiting = waiting_files(&mut bob, |w| {
        !w.ip_addr_list.is_empty() && !w.offline_file_list.is_empty()
    });
    assert_eq!(waiting.offline_file_list.len(), 1);
    let addr = file_server(&waiting.ip_addr_list);
    let (mut down, code) = file_login(addr, bob_id, &task, ClientFileRole::ClientOfflineDownload);
    assert_eq!(code, 0, "the stored file was found at start");
    let got = pull_all(&mut down, &task, bob_id, body.len(), OFFLINE);
    assert_eq!(sha(&got), sha(&body));
    match down.recv(T) {
        Ok(Some(_)) | Err(ClientError::Closed) => {}
        other => panic!("{other:?}"),
    }
}

/// file_server's msg_server port is a server port: with `teamtalk up`'s
/// cluster secret, a stranger asking for a task gets nothing but the
/// handshake's refusal, and no task exists.
#[test]
fn strangers_on_the_msg_server_port_get_no_task() {
    use std::io::{Read, Write};
    let w = world();
    let mut s = std::net::TcpStream::connect(w.sys.file_msg_addr()).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    let req = teamtalk_proto::pb::im::server::ImFileTransferReq {
        from_user_id: w.user_id("alice"),
        to_user_id: w.user_id("bob"),
        file_name: "x".into(),
        file_size: 10,
        trans_mode: OFFLINE,
        attach_data: None,
    };
    let _ = s.write_all(&Command::OtherFileTransferReq.pdu(1, &req).to_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let mut buf = bytes::BytesMut::from(&raw[..]);
    let mut codec = teamtalk_proto::PduCodec::default();
    while let Ok(Some(p)) = codec.decode(&mut buf) {
        assert_eq!(
            p.key().command_id & 0xfff0,
            0x0780,
            "a stranger got {:?}",
            p.key()
        );
    }
    let server = w.sys.file_server().expect("file_server");
    assert_eq!(
        server.inspect(daemons::file::FileApp::task_count).unwrap(),
        0
    );
}
