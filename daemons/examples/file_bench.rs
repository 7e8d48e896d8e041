//! Throughput of file_server on loopback: an offline upload (the client
//! answers file_server's 32 KiB pulls, file_server writes them to disk and
//! syncs at the end), the download of the same file (34 KiB pulls, as
//! TeamTalk's PC client asks), and an online relay between two clients.
//!
//! ```sh
//! cargo run --release -p teamtalk-daemons --example file_bench -- --size-mb 256 --dir /some/dir
//! ```
//!
//! `--dir` is where file_server keeps the offline file: put it on the disk
//! whose plain copy speed you compare with (`dd … conv=fsync`, see
//! `docs/performance.md`). The tool plays msg_server itself (it asks for
//! the tasks on file_server's msg_server port) and both clients, each on
//! its own thread.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use daemons::client::Client;
use daemons::file::{self, FileConfig};
use teamtalk_proto::pb::im::base_define::ClientFileRole;
use teamtalk_proto::pb::im::file::{
    ImFileLoginReq, ImFilePullDataReq, ImFilePullDataRsp, ImFileState,
};
use teamtalk_proto::pb::im::server::{ImFileTransferReq, ImFileTransferRsp};
use teamtalk_proto::{Command, Message};

const T: Duration = Duration::from_secs(30);
const SENDER: u32 = 1;
const RECEIVER: u32 = 2;
const PC_BLOCK: u32 = 34 * 1024;

#[derive(Debug, Parser)]
#[command(about = "file_server upload, download and relay throughput on loopback")]
struct Args {
    /// File size in MiB.
    #[arg(long, default_value_t = 256)]
    size_mb: u32,
    /// Directory for file_server's offline files (a fresh subdirectory
    /// is made and removed).
    #[arg(long, default_value = "target/file-bench")]
    dir: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let size = args.size_mb.checked_mul(1 << 20).ok_or("size too large")?;
    std::fs::create_dir_all(&args.dir)?;
    let dir = tempfile::tempdir_in(&args.dir)?;
    let mut cfg = FileConfig::loopback(dir.path());
    cfg.limits.max_file_bytes = u64::from(size);
    cfg.limits.quota_bytes = u64::from(size) * 2;
    let server = file::spawn(cfg)?;
    let body = Bytes::from(
        (0..size)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect::<Vec<u8>>(),
    );
    let mib = f64::from(size) / f64::from(1 << 20);
    let mut msg = Client::connect(server.msg_server_addr(), T)?;

    // Offline upload.
    let task = new_task(&mut msg, size, 2)?;
    let start = daemons::clock::now();
    upload(server.client_addr(), &task, &body)?;
    let up = start.elapsed();
    println!(
        "offline upload   {mib:.0} MiB in {:.2} s = {:.0} MiB/s (written and synced)",
        up.as_secs_f64(),
        mib / up.as_secs_f64()
    );

    // Download of the same file.
    let start = daemons::clock::now();
    let got = download(server.client_addr(), &task, size, 1)?;
    let down = start.elapsed();
    assert_eq!(got, body.len());
    println!(
        "offline download {mib:.0} MiB in {:.2} s = {:.0} MiB/s (one pull at a time, as TeamTalk's client)",
        down.as_secs_f64(),
        mib / down.as_secs_f64()
    );

    // Online relay: the receiver pulls, file_server relays to the sender.
    let task = new_task(&mut msg, size, 1)?;
    let addr = server.client_addr();
    let sender = {
        let (task, body) = (task.clone(), body.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut c = login(addr, SENDER, &task, ClientFileRole::ClientRealtimeSender)
                .map_err(|e| e.to_string())?;
            loop {
                match c.recv(T).map_err(|e| e.to_string())? {
                    Some(p) if p.is(Command::FilePullDataReq.key()) => {
                        let req: ImFilePullDataReq = p.decode_body().map_err(|e| e.to_string())?;
                        let (a, b) = (req.offset as usize, (req.offset + req.data_size) as usize);
                        let rsp = ImFilePullDataRsp {
                            result_code: 0,
                            task_id: task.clone(),
                            user_id: SENDER,
                            offset: req.offset,
                            file_data: body.slice(a..b),
                        };
                        c.send(Command::FilePullDataRsp, &rsp)
                            .map_err(|e| e.to_string())?;
                    }
                    Some(p) if p.is(Command::FileState.key()) => return Ok(()),
                    Some(_) => {}
                    None => return Err("sender timed out".into()),
                }
            }
        })
    };
    // Give the sender its login before the receiver's, as order does not
    // matter to file_server but a pull needs the sender connected.
    std::thread::sleep(Duration::from_millis(200));
    let start = daemons::clock::now();
    let mut rx = login(addr, RECEIVER, &task, ClientFileRole::ClientRealtimeRecver)?;
    let got = pull_loop(&mut rx, &task, size, 1, 1)?;
    let relay = start.elapsed();
    rx.send(
        Command::FileState,
        &ImFileState {
            state: 3,
            task_id: task.clone(),
            user_id: RECEIVER,
        },
    )?;
    sender.join().map_err(|_| "sender panicked")??;
    assert_eq!(got, body.len());
    println!(
        "online relay     {mib:.0} MiB in {:.2} s = {:.0} MiB/s (one pull of 34 KiB at a time, as TeamTalk's client)",
        relay.as_secs_f64(),
        mib / relay.as_secs_f64()
    );
    server.stop();
    Ok(())
}

/// Asks file_server for a task, as msg_server does.
fn new_task(msg: &mut Client, size: u32, mode: i32) -> Result<String, Box<dyn std::error::Error>> {
    let req = ImFileTransferReq {
        from_user_id: SENDER,
        to_user_id: RECEIVER,
        file_name: "bench.bin".into(),
        file_size: size,
        trans_mode: mode,
        attach_data: None,
    };
    let Message::OtherFileTransferRsp(ImFileTransferRsp {
        result_code: 0,
        task_id: Some(task),
        ..
    }) = msg.request(
        Command::OtherFileTransferReq,
        &req,
        Command::OtherFileTransferRsp,
        T,
    )?
    else {
        return Err("task refused".into());
    };
    Ok(task)
}

fn login(
    addr: SocketAddr,
    user: u32,
    task: &str,
    role: ClientFileRole,
) -> Result<Client, Box<dyn std::error::Error>> {
    let mut c = Client::connect(addr, T)?;
    let req = ImFileLoginReq {
        user_id: user,
        task_id: task.to_owned(),
        file_role: role as i32,
    };
    match c.request(Command::FileLoginReq, &req, Command::FileLoginRes, T)? {
        Message::FileLoginRes(r) if r.result_code == 0 => Ok(c),
        other => Err(format!("login refused: {other:?}").into()),
    }
}

fn upload(addr: SocketAddr, task: &str, body: &Bytes) -> Result<(), Box<dyn std::error::Error>> {
    let mut c = login(addr, SENDER, task, ClientFileRole::ClientOfflineUpload)?;
    loop {
        let p = c.recv(T)?.ok_or("upload timed out")?;
        if p.is(Command::FilePullDataReq.key()) {
            let req: ImFilePullDataReq = p.decode_body()?;
            let (a, b) = (req.offset as usize, (req.offset + req.data_size) as usize);
            let rsp = ImFilePullDataRsp {
                result_code: 0,
                task_id: task.to_owned(),
                user_id: SENDER,
                offset: req.offset,
                file_data: body.slice(a..b),
            };
            c.send(Command::FilePullDataRsp, &rsp)?;
        } else if p.is(Command::FileState.key()) {
            return Ok(());
        }
    }
}

fn download(
    addr: SocketAddr,
    task: &str,
    size: u32,
    window: u32,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut c = login(addr, RECEIVER, task, ClientFileRole::ClientOfflineDownload)?;
    pull_loop(&mut c, task, size, 2, window)
}

/// Pulls `size` bytes with up to `window` pulls in flight; the bytes got.
fn pull_loop(
    c: &mut Client,
    task: &str,
    size: u32,
    mode: i32,
    window: u32,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut asked = 0u32;
    let mut in_flight = 0u32;
    let mut got = 0usize;
    let block = if mode == 2 {
        daemons::rules::files::SEGMENT_SIZE
    } else {
        PC_BLOCK
    };
    while got < size as usize {
        while in_flight < window && asked < size {
            let n = block.min(size - asked);
            let req = ImFilePullDataReq {
                task_id: task.to_owned(),
                user_id: RECEIVER,
                trans_mode: mode,
                offset: asked,
                data_size: n,
            };
            c.send(Command::FilePullDataReq, &req)?;
            asked += n;
            in_flight += 1;
        }
        let p = c.recv(T)?.ok_or("download timed out")?;
        if p.is(Command::FilePullDataRsp.key()) {
            let rsp: ImFilePullDataRsp = p.decode_body()?;
            if rsp.result_code != 0 {
                return Err("pull refused".into());
            }
            got += rsp.file_data.len();
            in_flight -= 1;
        }
    }
    Ok(got)
}
