//! Unit tests of [`FileApp`]: the App driven with `Conn::test(n)` ids and
//! virtual time; disk jobs run on a real [`DiskWorker`] in a temporary
//! directory and come back as `Input::Done`, as the runner would do.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use teamtalk_conn::CloseReason;
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::{ClientFileRole, ClientFileState};
use teamtalk_proto::pb::im::ext::ImFileTaskDelete;
use teamtalk_proto::pb::im::file::{
    ImFileLoginReq, ImFileLoginRsp, ImFilePullDataReq, ImFilePullDataRsp, ImFileState,
};
use teamtalk_proto::pb::im::server::{
    ImFileServerIpReq, ImFileServerIpRsp, ImFileTransferReq, ImFileTransferRsp,
};
use teamtalk_proto::{Command, Pdu};

use super::config::Limits;
use super::disk::{DiskJob, DiskWorker, TaskMeta};
use super::{FileApp, MAX_PULLS_IN_FLIGHT};
use crate::rules::files::{SEGMENT_SIZE, is_task_id};
use crate::runtime::{Action, App, CloseCause, Conn, Input, Now, Out, PortId, Worker};

const CLIENT: PortId = PortId(0);
const MSG: PortId = PortId(1);
const ALICE: u32 = 10;
const BOB: u32 = 20;
const EVE: u32 = 30;
const TIMEOUT: Duration = Duration::from_secs(60);

type A = Action<DiskJob>;

struct H {
    app: FileApp,
    now: Now,
    disk: DiskWorker,
    dir: tempfile::TempDir,
    msg: Conn,
    next_conn: u32,
}

fn limits() -> Limits {
    Limits {
        task_timeout: TIMEOUT,
        max_file_bytes: 1 << 20,
        quota_bytes: 3 << 20,
        retention: Duration::from_secs(3600),
        max_tasks: 8,
        max_tasks_per_user: 4,
    }
}

fn h() -> H {
    let dir = tempfile::tempdir().unwrap();
    h_with(dir, Vec::new())
}

fn h_with(dir: tempfile::TempDir, stored: Vec<TaskMeta>) -> H {
    let t0 = crate::clock::now();
    let now = Now::new(
        t0,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    let app = FileApp::new(
        limits(),
        [CLIENT],
        vec![("127.0.0.1".to_owned(), 0)],
        2,
        stored,
        t0,
    );
    let mut h = H {
        app,
        now,
        disk: DiskWorker::new(dir.path()),
        dir,
        msg: Conn::test(1000),
        next_conn: 1,
    };
    h.step(Input::Listening {
        port: CLIENT,
        addr: "127.0.0.1:8600".parse().unwrap(),
    });
    let msg = h.msg;
    h.step(Input::Opened {
        conn: msg,
        port: MSG,
        peer: peer(),
    });
    h
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

impl H {
    /// One input; disk jobs are run and their results fed back until none
    /// is left. Returns every action that is not a job.
    fn step(&mut self, input: Input<'_, super::DiskDone>) -> Vec<A> {
        let mut out = Out::new();
        self.app.handle(self.now, input, &mut out);
        let mut actions = Vec::new();
        let mut pending: Vec<A> = out.take();
        while !pending.is_empty() {
            let mut jobs = Vec::new();
            for a in pending {
                match a {
                    Action::Job { job, .. } => jobs.push(job),
                    other => actions.push(other),
                }
            }
            pending = Vec::new();
            let mut done = Vec::new();
            self.disk.run(jobs, &mut done);
            for d in done {
                let mut out = Out::new();
                self.app.handle(self.now, Input::Done(d), &mut out);
                pending.extend(out.take());
            }
        }
        actions
    }

    /// One input; its disk jobs are returned, not run.
    fn step_hold(&mut self, input: Input<'_, super::DiskDone>) -> (Vec<A>, Vec<DiskJob>) {
        let mut out = Out::new();
        self.app.handle(self.now, input, &mut out);
        let mut actions = Vec::new();
        let mut jobs = Vec::new();
        for a in out.take() {
            match a {
                Action::Job { job, .. } => jobs.push(job),
                other => actions.push(other),
            }
        }
        (actions, jobs)
    }

    /// Runs `jobs` and hands their results in, holding the jobs that
    /// follow; the actions and those jobs.
    fn run_held(&mut self, jobs: Vec<DiskJob>) -> (Vec<A>, Vec<DiskJob>) {
        let mut done = Vec::new();
        self.disk.run(jobs, &mut done);
        let (mut actions, mut next) = (Vec::new(), Vec::new());
        for d in done {
            let (a, j) = self.step_hold(Input::Done(d));
            actions.extend(a);
            next.extend(j);
        }
        (actions, next)
    }

    fn advance(&mut self, d: Duration) -> Vec<A> {
        self.now = self.now.plus(d);
        self.step(Input::Tick)
    }

    fn open(&mut self) -> Conn {
        let c = Conn::test(self.next_conn);
        self.next_conn += 1;
        self.step(Input::Opened {
            conn: c,
            port: CLIENT,
            peer: peer(),
        });
        c
    }

    fn close(&mut self, c: Conn) -> Vec<A> {
        self.step(Input::Closed {
            conn: c,
            reason: CloseCause::Pdu(CloseReason::PeerClosed),
        })
    }

    fn msg_pdu(&mut self, pdu: &Pdu) -> Vec<A> {
        let c = self.msg;
        self.step(Input::Pdu { conn: c, pdu })
    }

    fn pdu(&mut self, c: Conn, pdu: &Pdu) -> Vec<A> {
        self.step(Input::Pdu { conn: c, pdu })
    }

    /// Asks for a task as msg_server would; the 0x0732.
    fn create(&mut self, mode: i32, size: u32) -> ImFileTransferRsp {
        let req = ImFileTransferReq {
            from_user_id: ALICE,
            to_user_id: BOB,
            file_name: "C:/docs/report.pdf".into(),
            file_size: size,
            trans_mode: mode,
            attach_data: Some(Bytes::from_static(b"\0\0\0\x01")),
        };
        let out = self.msg_pdu(&req.to_pdu(7));
        let [Action::Send(c, p)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!((*c, p.seq()), (self.msg, 7));
        let rsp: ImFileTransferRsp = p.decode_body().unwrap();
        assert_eq!(rsp.attach_data, req.attach_data, "attach echoed");
        rsp
    }

    fn task(&mut self, mode: i32, size: u32) -> String {
        let rsp = self.create(mode, size);
        assert_eq!(rsp.result_code, 0);
        rsp.task_id.unwrap()
    }

    /// A new connection logging in; the actions.
    fn login(&mut self, task: &str, user: u32, role: ClientFileRole) -> (Conn, Vec<A>) {
        let c = self.open();
        let req = ImFileLoginReq {
            user_id: user,
            task_id: task.to_owned(),
            file_role: role as i32,
        };
        let out = self.step(Input::LoginRequest {
            conn: c,
            pdu: &req.to_pdu(1),
        });
        (c, out)
    }
}

fn accepted(out: &[A], conn: Conn) -> bool {
    out.iter().any(|a| {
        matches!(a, Action::Accept { conn: c, reply, .. } if *c == conn
            && reply.decode_body::<ImFileLoginRsp>().unwrap().result_code == 0)
    })
}

fn refused(out: &[A], conn: Conn) -> bool {
    out.iter().any(|a| {
        matches!(a, Action::Refuse { conn: c, reply } if *c == conn
            && reply.decode_body::<ImFileLoginRsp>().unwrap().result_code == 1)
    })
}

fn sent(out: &[A], conn: Conn, command: Command) -> Vec<Pdu> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send(c, p) if *c == conn && p.is(command.key()) => Some(p.clone()),
            Action::Close {
                conn: c,
                notice: Some(p),
            } if *c == conn && p.is(command.key()) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn closed(out: &[A], conn: Conn) -> bool {
    out.iter()
        .any(|a| matches!(a, Action::Close { conn: c, .. } if *c == conn))
}

fn states(out: &[A], conn: Conn) -> Vec<(i32, u32)> {
    sent(out, conn, Command::FileState)
        .iter()
        .map(|p| {
            let s: ImFileState = p.decode_body().unwrap();
            (s.state, s.user_id)
        })
        .collect()
}

fn pull(task: &str, user: u32, offset: u32, size: u32, mode: i32) -> ImFilePullDataReq {
    ImFilePullDataReq {
        task_id: task.to_owned(),
        user_id: user,
        trans_mode: mode,
        offset,
        data_size: size,
    }
}

fn data(task: &str, user: u32, offset: u32, bytes: &[u8]) -> ImFilePullDataRsp {
    ImFilePullDataRsp {
        result_code: 0,
        task_id: task.to_owned(),
        user_id: user,
        offset,
        file_data: Bytes::copy_from_slice(bytes),
    }
}

fn file_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// The pulls file_server sent an uploader: (offset, size).
fn pulls(out: &[A], conn: Conn) -> Vec<(u32, u32)> {
    sent(out, conn, Command::FilePullDataReq)
        .iter()
        .map(|p| {
            let r: ImFilePullDataReq = p.decode_body().unwrap();
            (r.offset, r.data_size)
        })
        .collect()
}

#[test]
fn tasks_are_created_for_msg_servers_with_random_ids() {
    let mut h = h();
    let a = h.create(1, 100);
    let b = h.create(2, 100);
    assert_eq!((a.result_code, b.result_code), (0, 0));
    let (a, b) = (a.task_id.unwrap(), b.task_id.unwrap());
    assert!(is_task_id(&a) && is_task_id(&b) && a != b, "{a} {b}");
    let out = h.msg_pdu(&ImFileServerIpReq {}.to_pdu(3));
    let rsp: ImFileServerIpRsp = sent(&out, h.msg, Command::OtherFileServerIpRsp)[0]
        .decode_body()
        .unwrap();
    assert_eq!(rsp.ip_addr_list.len(), 1);
    assert_eq!(
        (rsp.ip_addr_list[0].ip.as_str(), rsp.ip_addr_list[0].port),
        ("127.0.0.1", 8600),
        "the bound client port"
    );
    assert_eq!(h.app.stats().online_tasks, 1);
    assert_eq!(h.app.stats().offline_tasks, 1);
    assert_eq!(h.app.reserved_bytes(), 100);
}

#[test]
fn task_creation_is_bounded() {
    let mut h = h();
    let refused = |h: &mut H, req: ImFileTransferReq| {
        let out = h.msg_pdu(&req.to_pdu(2));
        let rsp: ImFileTransferRsp = sent(&out, h.msg, Command::OtherFileTransferRsp)[0]
            .decode_body()
            .unwrap();
        assert_eq!(rsp.result_code, 1, "{req:?}");
        assert_eq!(rsp.task_id.as_deref(), Some(""));
    };
    let req = |from, to, size, mode| ImFileTransferReq {
        from_user_id: from,
        to_user_id: to,
        file_name: "f".into(),
        file_size: size,
        trans_mode: mode,
        attach_data: None,
    };
    refused(&mut h, req(ALICE, ALICE, 10, 1));
    refused(&mut h, req(0, BOB, 10, 1));
    refused(&mut h, req(ALICE, BOB, 0, 2));
    refused(&mut h, req(ALICE, BOB, 10, 3));
    refused(
        &mut h,
        ImFileTransferReq {
            file_name: "n".repeat(513),
            ..req(ALICE, BOB, 10, 2)
        },
    );
    assert_eq!(h.app.refusals("bad_request"), 5);
    // Size limit (offline only: an online relay takes no disk).
    refused(&mut h, req(ALICE, BOB, (1 << 20) + 1, 2));
    assert_eq!(h.app.refusals("too_large"), 1);
    assert_eq!(h.create(1, (1 << 20) + 1).result_code, 0);
    // Quota: 3 MiB, reserved by announced sizes.
    for _ in 0..3 {
        assert_eq!(h.create(2, 1 << 20).result_code, 0);
    }
    refused(&mut h, req(EVE, BOB, 1, 2));
    assert_eq!(h.app.refusals("quota"), 1);
    // Four open tasks per sender: Alice has four.
    refused(&mut h, req(ALICE, BOB, 1, 1));
    assert_eq!(h.app.refusals("too_many_tasks"), 1);
    // Eight tasks in all.
    for _ in 0..4 {
        let out = h.msg_pdu(&req(EVE, BOB, 1, 1).to_pdu(1));
        let rsp: ImFileTransferRsp = sent(&out, h.msg, Command::OtherFileTransferRsp)[0]
            .decode_body()
            .unwrap();
        assert_eq!(rsp.result_code, 0);
    }
    refused(&mut h, req(BOB, ALICE, 1, 1));
    assert_eq!(h.app.refusals("too_many_tasks"), 2);
    assert_eq!(h.app.task_count(), 8);
}

#[test]
fn online_transfer_is_relayed_between_the_two_clients() {
    let mut h = h();
    let task = h.task(1, 50_000);
    let (rx, out) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    assert!(accepted(&out, rx));
    assert!(states(&out, rx).is_empty(), "the sender is not there yet");
    let (tx, out) = h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    assert!(accepted(&out, tx));
    assert_eq!(
        states(&out, rx),
        [(ClientFileState::ClientFilePeerReady as i32, ALICE)],
        "the receiver hears the sender is ready"
    );
    let body = file_bytes(50_000);
    let mut offset = 0u32;
    let mut seq = 40u16;
    while offset < 50_000 {
        let size = (34 * 1024).min(50_000 - offset);
        let out = h.pdu(rx, &pull(&task, BOB, offset, size, 1).to_pdu(seq));
        let fwd = sent(&out, tx, Command::FilePullDataReq);
        assert_eq!(fwd.len(), 1, "relayed to the sender as it is");
        assert_eq!(fwd[0].seq(), seq);
        let chunk = &body[offset as usize..(offset + size) as usize];
        // The sender answers with its own seq; the receiver gets its own back.
        let out = h.pdu(tx, &data(&task, ALICE, offset, chunk).to_pdu(0));
        let back = sent(&out, rx, Command::FilePullDataRsp);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].seq(), seq);
        let rsp: ImFilePullDataRsp = back[0].decode_body().unwrap();
        assert_eq!(&rsp.file_data[..], chunk);
        offset += size;
        seq += 1;
    }
    assert_eq!(h.app.stats().bytes_relayed, 50_000);
    // The receiver is done: the sender hears it and both connections close.
    let done = ImFileState {
        state: ClientFileState::ClientFileDone as i32,
        task_id: task.clone(),
        user_id: BOB,
    };
    let out = h.pdu(rx, &done.to_pdu(9));
    assert_eq!(
        states(&out, tx),
        [(ClientFileState::ClientFileDone as i32, BOB)]
    );
    assert!(closed(&out, rx) && closed(&out, tx));
    assert_eq!(h.app.task_count(), 0);
    assert_eq!(h.app.ended("done"), 1);
}

#[test]
fn logins_are_checked_against_the_task() {
    let mut h = h();
    let online = h.task(1, 10);
    let offline = h.task(2, 10);
    for (task, user, role, reason) in [
        // Eve has the task id but is neither party.
        (
            &online,
            EVE,
            ClientFileRole::ClientRealtimeRecver,
            "wrong_user",
        ),
        (
            &online,
            EVE,
            ClientFileRole::ClientRealtimeSender,
            "wrong_user",
        ),
        // The parties, in the other's role.
        (
            &online,
            ALICE,
            ClientFileRole::ClientRealtimeRecver,
            "wrong_user",
        ),
        (
            &online,
            BOB,
            ClientFileRole::ClientRealtimeSender,
            "wrong_user",
        ),
        // A role of the other mode.
        (
            &online,
            ALICE,
            ClientFileRole::ClientOfflineUpload,
            "wrong_state",
        ),
        (
            &offline,
            ALICE,
            ClientFileRole::ClientRealtimeSender,
            "wrong_state",
        ),
        // Nothing to download before the upload.
        (
            &offline,
            BOB,
            ClientFileRole::ClientOfflineDownload,
            "wrong_state",
        ),
        (
            &offline,
            EVE,
            ClientFileRole::ClientOfflineDownload,
            "wrong_user",
        ),
    ] {
        let before = h.app.refusals(reason);
        let (c, out) = h.login(task, user, role);
        assert!(refused(&out, c), "{user} {role:?}: {out:?}");
        assert_eq!(h.app.refusals(reason), before + 1, "{user} {role:?}");
    }
    let unknown = "0a1b2c3d-0000-4000-8000-00000000abcd".to_owned();
    let (c, out) = h.login(&unknown, BOB, ClientFileRole::ClientOfflineDownload);
    assert!(refused(&out, c));
    let (c, out) = h.login(
        "../../etc/passwd",
        BOB,
        ClientFileRole::ClientOfflineDownload,
    );
    assert!(refused(&out, c));
    assert_eq!(
        (
            h.app.refusals("unknown_task"),
            h.app.refusals("bad_request")
        ),
        (1, 1)
    );
    assert_eq!(h.app.task_count(), 2);
}

#[test]
fn online_task_waits_task_timeout_for_both_parties() {
    let mut h = h();
    let task = h.task(1, 10);
    let (rx, _) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    let out = h.advance(TIMEOUT - Duration::from_millis(1));
    assert!(out.is_empty(), "{out:?}");
    let out = h.advance(Duration::from_millis(1));
    assert!(closed(&out, rx));
    assert_eq!(h.app.ended("expired"), 1);
    assert_eq!(h.app.task_count(), 0);
    // Both in: the task no longer expires by itself.
    let task = h.task(1, 10);
    h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    assert!(h.advance(TIMEOUT * 10).is_empty());
    assert_eq!(h.app.task_count(), 1);
}

#[test]
fn online_pull_unanswered_for_task_timeout_ends_the_task() {
    let mut h = h();
    let task = h.task(1, 10);
    let (rx, _) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    let (tx, _) = h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    h.pdu(rx, &pull(&task, BOB, 0, 10, 1).to_pdu(1));
    assert!(h.advance(TIMEOUT - Duration::from_secs(1)).is_empty());
    let out = h.advance(Duration::from_secs(1));
    assert!(closed(&out, rx) && closed(&out, tx));
    assert_eq!(h.app.ended("stalled"), 1);
}

#[test]
fn a_party_leaving_ends_an_online_transfer() {
    let mut h = h();
    let task = h.task(1, 10);
    let (rx, _) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    let (tx, _) = h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    let out = h.close(tx);
    assert_eq!(
        states(&out, rx),
        [(ClientFileState::ClientFileCancel as i32, ALICE)]
    );
    assert!(closed(&out, rx));
    assert_eq!(h.app.ended("peer_left"), 1);
}

#[test]
fn protocol_violations_close_the_connection() {
    let mut h = h();
    let task = h.task(1, 100);
    let (rx, _) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    let (tx, _) = h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    // Data nobody asked for.
    let out = h.pdu(tx, &data(&task, ALICE, 0, b"x").to_pdu(1));
    assert!(closed(&out, tx) && closed(&out, rx));
    assert_eq!(h.app.refusals("protocol"), 1);

    let task = h.task(1, 100);
    let (rx, _) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    // Pulls outside the file, under another user's name, in excess.
    let out = h.pdu(rx, &pull(&task, BOB, 90, 20, 1).to_pdu(1));
    assert!(closed(&out, rx));
    let task = h.task(1, 100);
    let (rx, _) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    let out = h.pdu(rx, &pull(&task, EVE, 0, 10, 1).to_pdu(1));
    assert!(closed(&out, rx));
    let task = h.task(1, 100);
    let (rx, _) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    for i in 0..MAX_PULLS_IN_FLIGHT {
        let out = h.pdu(
            rx,
            &pull(&task, BOB, 0, 10, 1).to_pdu(u16::try_from(i).unwrap()),
        );
        assert!(!closed(&out, rx));
    }
    let out = h.pdu(rx, &pull(&task, BOB, 0, 10, 1).to_pdu(99));
    assert!(closed(&out, rx));
    // The sender answering more than was asked.
    let task = h.task(1, 100);
    let (rx, _) = h.login(&task, BOB, ClientFileRole::ClientRealtimeRecver);
    let (tx, _) = h.login(&task, ALICE, ClientFileRole::ClientRealtimeSender);
    h.pdu(rx, &pull(&task, BOB, 0, 10, 1).to_pdu(1));
    let out = h.pdu(tx, &data(&task, ALICE, 0, &[0; 11]).to_pdu(1));
    assert!(closed(&out, tx) && closed(&out, rx));
    assert!(sent(&out, rx, Command::FilePullDataRsp).is_empty());
    assert_eq!(h.app.refusals("protocol"), 5);
}

/// Uploads `body` as Alice from a fresh connection, answering every pull;
/// the uploader's connection and everything it saw.
fn upload(h: &mut H, task: &str, body: &[u8]) -> (Conn, Vec<A>) {
    let (up, out) = h.login(task, ALICE, ClientFileRole::ClientOfflineUpload);
    assert!(accepted(&out, up));
    let mut asked = pulls(&out, up);
    let mut all = out;
    while let Some(&(offset, size)) = asked.first() {
        assert_eq!(asked.len(), 1, "one pull at a time");
        let chunk = &body[offset as usize..(offset + size) as usize];
        let out = h.pdu(up, &data(task, ALICE, offset, chunk).to_pdu(0));
        asked = pulls(&out, up);
        all.extend(out);
    }
    (up, all)
}

/// Downloads as Bob from a fresh connection, 34 KiB pulls as TeamTalk's
/// PC client asks; the bytes and what the connection saw last.
fn download(h: &mut H, task: &str, size: u32) -> (Vec<u8>, Vec<A>) {
    let (down, out) = h.login(task, BOB, ClientFileRole::ClientOfflineDownload);
    assert!(accepted(&out, down), "{out:?}");
    let mut got = Vec::new();
    let mut last = Vec::new();
    while got.len() < size as usize {
        let offset = u32::try_from(got.len()).unwrap();
        last = h.pdu(down, &pull(task, BOB, offset, 34 * 1024, 2).to_pdu(5));
        let rsp = sent(&last, down, Command::FilePullDataRsp);
        assert_eq!(rsp.len(), 1, "{last:?}");
        assert_eq!(rsp[0].seq(), 5);
        let rsp: ImFilePullDataRsp = rsp[0].decode_body().unwrap();
        assert_eq!((rsp.result_code, rsp.offset), (0, offset));
        assert!(rsp.file_data.len() as u32 <= SEGMENT_SIZE);
        got.extend_from_slice(&rsp.file_data);
    }
    assert_eq!(
        states(&last, down),
        [(ClientFileState::ClientFileDone as i32, ALICE)]
    );
    assert!(closed(&last, down));
    (got, last)
}

#[test]
fn offline_file_is_uploaded_stored_downloaded_and_removed() {
    let mut h = h();
    let size = 3 * SEGMENT_SIZE + 123;
    let task = h.task(2, size);
    let body = file_bytes(size as usize);
    let (up, out) = upload(&mut h, &task, &body);
    assert_eq!(
        states(&out, up),
        [(ClientFileState::ClientFileDone as i32, ALICE)],
        "DONE once the file is on disk"
    );
    assert!(closed(&out, up));
    assert!(h.app.is_stored(&task));
    assert_eq!(h.app.stats().bytes_uploaded, u64::from(size));
    assert!(super::disk::meta_path(h.dir.path(), &task).exists());
    let (got, _) = download(&mut h, &task, size);
    assert_eq!(got, body);
    assert_eq!(h.app.task_count(), 0);
    assert_eq!(h.app.reserved_bytes(), 0);
    assert!(!super::disk::data_path(h.dir.path(), &task).exists());
    assert!(!super::disk::meta_path(h.dir.path(), &task).exists());
}

#[test]
fn an_interrupted_upload_resumes_at_its_offset() {
    let mut h = h();
    let size = 4 * SEGMENT_SIZE;
    let task = h.task(2, size);
    let body = file_bytes(size as usize);
    let (up, out) = h.login(&task, ALICE, ClientFileRole::ClientOfflineUpload);
    assert_eq!(pulls(&out, up), [(0, SEGMENT_SIZE)]);
    let out = h.pdu(
        up,
        &data(&task, ALICE, 0, &body[..SEGMENT_SIZE as usize]).to_pdu(0),
    );
    assert_eq!(pulls(&out, up), [(SEGMENT_SIZE, SEGMENT_SIZE)]);
    let out = h.pdu(
        up,
        &data(
            &task,
            ALICE,
            SEGMENT_SIZE,
            &body[SEGMENT_SIZE as usize..2 * SEGMENT_SIZE as usize],
        )
        .to_pdu(0),
    );
    assert_eq!(pulls(&out, up), [(2 * SEGMENT_SIZE, SEGMENT_SIZE)]);
    // The connection drops with a pull unanswered.
    h.close(up);
    assert!(h.advance(TIMEOUT - Duration::from_secs(1)).is_empty());
    // Back in time: asked for the rest, from where it stopped.
    let (up, out) = h.login(&task, ALICE, ClientFileRole::ClientOfflineUpload);
    assert_eq!(pulls(&out, up), [(2 * SEGMENT_SIZE, SEGMENT_SIZE)]);
    let mut out = out;
    while let Some(&(offset, len)) = pulls(&out, up).first() {
        let chunk = &body[offset as usize..(offset + len) as usize];
        out = h.pdu(up, &data(&task, ALICE, offset, chunk).to_pdu(0));
    }
    assert!(h.app.is_stored(&task));
    let (got, _) = download(&mut h, &task, size);
    assert_eq!(got, body);
}

#[test]
fn an_abandoned_upload_expires_and_its_bytes_go() {
    let mut h = h();
    let task = h.task(2, 2 * SEGMENT_SIZE);
    let (up, _) = h.login(&task, ALICE, ClientFileRole::ClientOfflineUpload);
    h.pdu(
        up,
        &data(&task, ALICE, 0, &file_bytes(SEGMENT_SIZE as usize)).to_pdu(0),
    );
    assert!(super::disk::data_path(h.dir.path(), &task).exists());
    h.close(up);
    h.advance(TIMEOUT - Duration::from_millis(1));
    assert_eq!(h.app.task_count(), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.app.task_count(), 0);
    assert_eq!(h.app.ended("expired"), 1);
    assert_eq!(h.app.reserved_bytes(), 0);
    assert!(!super::disk::data_path(h.dir.path(), &task).exists());
    // A task nobody ever uploads to expires the same way.
    h.task(2, 10);
    h.advance(TIMEOUT);
    assert_eq!(h.app.task_count(), 0);
}

#[test]
fn an_uploader_that_stops_answering_is_cut_off_and_may_resume() {
    let mut h = h();
    let task = h.task(2, 2 * SEGMENT_SIZE);
    let (up, _) = h.login(&task, ALICE, ClientFileRole::ClientOfflineUpload);
    assert!(h.advance(TIMEOUT - Duration::from_secs(1)).is_empty());
    let out = h.advance(Duration::from_secs(1));
    assert!(closed(&out, up));
    assert_eq!(h.app.refusals("stalled"), 1);
    assert_eq!(h.app.task_count(), 1, "the task waits for it to come back");
    let (up, out) = h.login(&task, ALICE, ClientFileRole::ClientOfflineUpload);
    assert_eq!(pulls(&out, up), [(0, SEGMENT_SIZE)]);
}

#[test]
fn data_must_match_the_pull() {
    let mut h = h();
    let task = h.task(2, 2 * SEGMENT_SIZE);
    for bad in [
        data(&task, ALICE, 0, &file_bytes(SEGMENT_SIZE as usize - 1)),
        data(&task, ALICE, 1, &file_bytes(SEGMENT_SIZE as usize)),
        data(&task, BOB, 0, &file_bytes(SEGMENT_SIZE as usize)),
        ImFilePullDataRsp {
            result_code: 1,
            ..data(&task, ALICE, 0, &file_bytes(SEGMENT_SIZE as usize))
        },
    ] {
        let (up, _) = h.login(&task, ALICE, ClientFileRole::ClientOfflineUpload);
        let out = h.pdu(up, &bad.to_pdu(0));
        assert!(closed(&out, up), "{bad:?}");
    }
    assert_eq!(h.app.stats().bytes_uploaded, 0);
    // A pull request from the uploader's side is not its business.
    let (up, _) = h.login(&task, ALICE, ClientFileRole::ClientOfflineUpload);
    let out = h.pdu(up, &pull(&task, ALICE, 0, 10, 2).to_pdu(1));
    assert!(closed(&out, up));
}

#[test]
fn a_stored_file_is_served_only_to_its_receiver_and_waits_retention() {
    let mut h = h();
    let task = h.task(2, 100);
    upload(&mut h, &task, &file_bytes(100));
    let (c, out) = h.login(&task, EVE, ClientFileRole::ClientOfflineDownload);
    assert!(refused(&out, c));
    let (c, out) = h.login(&task, ALICE, ClientFileRole::ClientOfflineDownload);
    assert!(refused(&out, c), "not even to its sender");
    assert!(h.advance(Duration::from_secs(3599)).is_empty());
    assert!(h.app.is_stored(&task));
    h.advance(Duration::from_secs(1));
    assert!(!h.app.is_stored(&task));
    assert_eq!(h.app.ended("retention"), 1);
    assert!(!super::disk::data_path(h.dir.path(), &task).exists());
}

#[test]
fn a_download_may_start_again_at_any_offset() {
    let mut h = h();
    let size = 2 * SEGMENT_SIZE;
    let task = h.task(2, size);
    let body = file_bytes(size as usize);
    upload(&mut h, &task, &body);
    let (down, _) = h.login(&task, BOB, ClientFileRole::ClientOfflineDownload);
    let out = h.pdu(down, &pull(&task, BOB, 0, 0, 2).to_pdu(1));
    assert_eq!(sent(&out, down, Command::FilePullDataRsp).len(), 1);
    h.close(down);
    // Back after a drop, from the middle.
    let (down, _) = h.login(&task, BOB, ClientFileRole::ClientOfflineDownload);
    let out = h.pdu(down, &pull(&task, BOB, 1000, 5000, 2).to_pdu(2));
    let rsp: ImFilePullDataRsp = sent(&out, down, Command::FilePullDataRsp)[0]
        .decode_body()
        .unwrap();
    assert_eq!(&rsp.file_data[..], &body[1000..6000]);
    // Past the end: a failure answer, the file stays.
    let out = h.pdu(down, &pull(&task, BOB, size, 10, 2).to_pdu(3));
    let rsp: ImFilePullDataRsp = sent(&out, down, Command::FilePullDataRsp)[0]
        .decode_body()
        .unwrap();
    assert_eq!(rsp.result_code, 1);
    assert!(h.app.is_stored(&task));
}

/// The block after the one served is read before it is asked for; a
/// request that comes while that read is under way is answered by it.
#[test]
fn downloads_read_one_block_ahead() {
    let mut h = h();
    let size = 3 * SEGMENT_SIZE;
    let task = h.task(2, size);
    let body = file_bytes(size as usize);
    upload(&mut h, &task, &body);
    let (down, _) = h.login(&task, BOB, ClientFileRole::ClientOfflineDownload);
    let got = |out: &[A], seq: u16| -> Vec<u8> {
        let p = sent(out, down, Command::FilePullDataRsp);
        assert_eq!(p.len(), 1, "{out:?}");
        assert_eq!(p[0].seq(), seq);
        p[0].decode_body::<ImFilePullDataRsp>()
            .unwrap()
            .file_data
            .to_vec()
    };
    let seg = SEGMENT_SIZE as usize;
    let pull_pdu = |offset: u32, seq| pull(&task, BOB, offset, PC, 2).to_pdu(seq);
    const PC: u32 = 34 * 1024;
    // The first block is read on request; the next is read ahead.
    let (out, jobs) = h.step_hold(Input::Pdu {
        conn: down,
        pdu: &pull_pdu(0, 1),
    });
    assert!(out.is_empty());
    let (out, ahead) = h.run_held(jobs);
    assert_eq!(got(&out, 1), &body[..seg]);
    assert!(
        matches!(&ahead[..], [DiskJob::Read { ahead: true, offset, .. }] if *offset == u64::from(SEGMENT_SIZE))
    );
    // Asked while that read is under way: answered when it is done.
    let (out, jobs) = h.step_hold(Input::Pdu {
        conn: down,
        pdu: &pull_pdu(SEGMENT_SIZE, 2),
    });
    assert!(out.is_empty() && jobs.is_empty(), "{out:?} {jobs:?}");
    let (out, ahead) = h.run_held(ahead);
    assert_eq!(got(&out, 2), &body[seg..2 * seg]);
    // Asked after it is read: answered at once, no disk on the way.
    let (_, none) = h.run_held(ahead);
    assert!(none.is_empty());
    let (out, jobs) = h.step_hold(Input::Pdu {
        conn: down,
        pdu: &pull_pdu(2 * SEGMENT_SIZE, 3),
    });
    assert_eq!(got(&out, 3), &body[2 * seg..]);
    assert!(
        matches!(&jobs[..], [DiskJob::Remove { .. }]),
        "the last block: done"
    );
    assert!(closed(&out, down));
}

#[test]
fn deletion_by_a_party_removes_the_file() {
    let mut h = h();
    let task = h.task(2, 100);
    upload(&mut h, &task, &file_bytes(100));
    let del = |user| ImFileTaskDelete {
        task_id: task.clone(),
        user_id: user,
    };
    h.msg_pdu(&del(EVE).to_pdu(0));
    assert!(h.app.is_stored(&task), "not a party: ignored");
    h.msg_pdu(&del(BOB).to_pdu(0));
    assert!(!h.app.is_stored(&task));
    assert_eq!(h.app.ended("deleted"), 1);
    assert!(!super::disk::data_path(h.dir.path(), &task).exists());
}

#[test]
fn a_cancelled_upload_is_removed_and_a_refused_file_too() {
    let mut h = h();
    let task = h.task(2, 2 * SEGMENT_SIZE);
    let (up, _) = h.login(&task, ALICE, ClientFileRole::ClientOfflineUpload);
    let cancel = ImFileState {
        state: ClientFileState::ClientFileCancel as i32,
        task_id: task.clone(),
        user_id: ALICE,
    };
    let out = h.pdu(up, &cancel.to_pdu(1));
    assert!(closed(&out, up));
    assert_eq!(h.app.ended("cancelled"), 1);
    let task = h.task(2, 10);
    upload(&mut h, &task, &file_bytes(10));
    let (down, _) = h.login(&task, BOB, ClientFileRole::ClientOfflineDownload);
    let refuse = ImFileState {
        state: ClientFileState::ClientFileRefuse as i32,
        task_id: task.clone(),
        user_id: BOB,
    };
    h.pdu(down, &refuse.to_pdu(1));
    assert_eq!(h.app.ended("refused"), 1);
    assert_eq!(h.app.task_count(), 0);
}

/// A restart: the files the scan found are served as before.
#[test]
fn stored_files_found_at_start_are_served() {
    let mut first = h();
    let size = SEGMENT_SIZE + 7;
    let task = first.task(2, size);
    let body = file_bytes(size as usize);
    upload(&mut first, &task, &body);
    let dir = first.dir;
    let scan = super::disk::scan(dir.path(), 10).unwrap();
    assert_eq!(scan.stored.len(), 1);
    let mut h = h_with(dir, scan.stored);
    assert!(h.app.is_stored(&task));
    assert_eq!(h.app.reserved_bytes(), u64::from(size));
    let (got, _) = download(&mut h, &task, size);
    assert_eq!(got, body);
}

#[test]
fn messages_from_msg_servers_that_are_not_requests_or_not_ours() {
    let mut h = h();
    // A request file_server never serves is answered with IMRequestFailed.
    let req = teamtalk_proto::pb::im::buddy::ImUsersStatReq {
        user_id: 1,
        user_id_list: vec![2],
        attach_data: None,
    };
    let out = h.msg_pdu(&req.to_pdu(4));
    assert_eq!(sent(&out, h.msg, Command::OtherRequestFailed).len(), 1);
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    /// One thing a client, a msg_server or the clock may do.
    #[derive(Debug, Clone)]
    enum Step {
        Create {
            online: bool,
            size: u32,
        },
        Login {
            task: usize,
            user: u32,
            role: i32,
        },
        Pull {
            conn: u32,
            offset: u32,
            size: u32,
            user: u32,
        },
        Data {
            conn: u32,
            offset: u32,
            len: u32,
            user: u32,
        },
        State {
            conn: u32,
            state: i32,
            user: u32,
        },
        Close {
            conn: u32,
        },
        Delete {
            task: usize,
            user: u32,
        },
        Wait {
            secs: u64,
        },
    }

    fn user() -> impl Strategy<Value = u32> {
        prop_oneof![Just(ALICE), Just(BOB), Just(EVE)]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (any::<bool>(), 1u32..200_000).prop_map(|(online, size)| Step::Create { online, size }),
            (0usize..4, user(), 0i32..6).prop_map(|(task, user, role)| Step::Login {
                task,
                user,
                role
            }),
            (1u32..6, 0u32..200_000, 0u32..300_000, user()).prop_map(
                |(conn, offset, size, user)| Step::Pull {
                    conn,
                    offset,
                    size,
                    user
                }
            ),
            (1u32..6, 0u32..200_000, 0u32..40_000, user()).prop_map(|(conn, offset, len, user)| {
                Step::Data {
                    conn,
                    offset,
                    len,
                    user,
                }
            }),
            (1u32..6, 0i32..5, user()).prop_map(|(conn, state, user)| Step::State {
                conn,
                state,
                user
            }),
            (1u32..6).prop_map(|conn| Step::Close { conn }),
            (0usize..4, user()).prop_map(|(task, user)| Step::Delete { task, user }),
            (0u64..90).prop_map(|secs| Step::Wait { secs }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever clients and msg_servers do, the App never panics, its
        /// bounds hold, and a connection it no longer knows is never sent
        /// anything but a close.
        #[test]
        fn random_steps_keep_the_bounds(steps in proptest::collection::vec(step(), 1..60)) {
            let mut h = h();
            let mut tasks: Vec<String> = Vec::new();
            let mut logged: Vec<(Conn, usize)> = Vec::new();
            for s in steps {
                match s {
                    Step::Create { online, size } => {
                        let rsp = h.create(if online { 1 } else { 2 }, size);
                        if rsp.result_code == 0 {
                            tasks.push(rsp.task_id.unwrap());
                        }
                    }
                    Step::Login { task, user, role } => {
                        let Some(id) = tasks.get(task).cloned() else { continue };
                        let c = h.open();
                        let req = ImFileLoginReq { user_id: user, task_id: id, file_role: role };
                        h.step(Input::LoginRequest { conn: c, pdu: &req.to_pdu(1) });
                        logged.push((c, task));
                    }
                    Step::Pull { conn, offset, size, user } => {
                        let Some(&(c, t)) = logged.get(conn as usize % logged.len().max(1)) else { continue };
                        let id = tasks[t].clone();
                        h.pdu(c, &pull(&id, user, offset, size, 2).to_pdu(1));
                    }
                    Step::Data { conn, offset, len, user } => {
                        let Some(&(c, t)) = logged.get(conn as usize % logged.len().max(1)) else { continue };
                        let id = tasks[t].clone();
                        h.pdu(c, &data(&id, user, offset, &file_bytes(len as usize)).to_pdu(1));
                    }
                    Step::State { conn, state, user } => {
                        let Some(&(c, t)) = logged.get(conn as usize % logged.len().max(1)) else { continue };
                        let st = ImFileState { state, task_id: tasks[t].clone(), user_id: user };
                        h.pdu(c, &st.to_pdu(1));
                    }
                    Step::Close { conn } => {
                        if logged.is_empty() { continue }
                        let (c, _) = logged.remove(conn as usize % logged.len());
                        h.close(c);
                    }
                    Step::Delete { task, user } => {
                        let Some(id) = tasks.get(task).cloned() else { continue };
                        h.msg_pdu(&ImFileTaskDelete { task_id: id, user_id: user }.to_pdu(0));
                    }
                    Step::Wait { secs } => {
                        h.advance(Duration::from_secs(secs));
                    }
                }
                prop_assert!(h.app.task_count() <= limits().max_tasks);
                prop_assert!(h.app.reserved_bytes() <= limits().quota_bytes);
            }
            // Everyone gone, long after: every task has ended, every
            // reservation is given back.
            for (c, _) in logged {
                h.close(c);
            }
            h.advance(Duration::from_secs(4000));
            h.advance(Duration::from_secs(4000));
            prop_assert_eq!(h.app.task_count(), 0);
            prop_assert_eq!(h.app.reserved_bytes(), 0);
        }
    }
}
