//! Upload and download throughput through msfs on loopback, next to a
//! plain file write and read of the same bytes on the same disk.
//!
//! ```sh
//! cargo run --release -p teamtalk-daemons --example msfs_bench -- \
//!     [--dir DIR] [--files 200] [--size-kib 1024] [--conns 4]
//! ```
//!
//! An msfs is started in this process on 127.0.0.1 with its files in a
//! fresh directory under `--dir` (default: the current directory, so the
//! disk is the one you run it on). `--conns` clients, each on one
//! keep-alive connection, upload `--files` distinct files as TeamTalk's
//! Windows client forms them, then download every one by its returned
//! path. The baseline writes the same files with `write` + `fsync` into
//! another fresh directory (what msfs does for each new file, without the
//! hash, the link and the directory flush) and reads them back, with the
//! same number of threads. Reads come from the page cache in both cases.
//! Times are wall-clock for the whole batch.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use daemons::msfs::{self, MsfsConfig};

#[derive(Debug, Parser)]
struct Args {
    /// Directory to run in (a fresh subdirectory is made and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Files to upload.
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// Size of each file, in KiB.
    #[arg(long, default_value_t = 1024)]
    size_kib: usize,
    /// Concurrent clients (and msfs upload/download workers).
    #[arg(long, default_value_t = 4)]
    conns: usize,
}

/// Distinct pseudo-random bytes (xorshift), so no file is a duplicate.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

const BOUNDARY: &str = "------__BenchBoundary1";

fn upload_request(data: &[u8], i: usize) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; \
         filename=\"bench{i}.png_640x480.png\"\r\nContent-Type: image/.png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut req = format!(
        "POST /upload/ HTTP/1.1\r\nHost: bench\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// Reads one response on a keep-alive connection: (status, body).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut chunk = vec![0u8; 256 << 10];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[end..end + len].to_vec();
    buf.drain(..end + len);
    Ok((status, body))
}

/// Runs `work(i)` for every `i < n` on `threads` threads; returns the
/// wall time and every result in order.
fn parallel<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(usize, &mut Option<TcpStream>) -> T + Sync,
) -> (Duration, Vec<T>) {
    let start = daemons::clock::now();
    let mut results: Vec<(usize, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                s.spawn(move || {
                    let mut conn = None;
                    (t..n)
                        .step_by(threads)
                        .map(|i| (i, work(i, &mut conn)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    });
    let elapsed = start.elapsed();
    results.sort_by_key(|(i, _)| *i);
    (elapsed, results.into_iter().map(|(_, r)| r).collect())
}

fn connect(addr: SocketAddr, conn: &mut Option<TcpStream>) -> &mut TcpStream {
    conn.get_or_insert_with(|| {
        let s = TcpStream::connect(addr).expect("connect to msfs");
        s.set_nodelay(true).ok();
        s
    })
}

fn rate(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

fn fresh_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the run directory");
    dir
}

fn main() {
    let args = Args::parse();
    let size = args.size_kib << 10;
    let conns = args.conns.max(1);
    let total = size * args.files;
    eprintln!("generating {} files of {} KiB", args.files, args.size_kib);
    let files: Vec<Vec<u8>> = (0..args.files)
        .map(|i| payload(size, i as u64 + 1))
        .collect();

    let run = fresh_dir(&args.dir, "msfs-bench");
    let mut cfg = MsfsConfig::loopback(run.join("msfs"));
    cfg.max_upload_bytes = cfg.max_upload_bytes.max(size);
    cfg.uploads_per_minute = 0;
    cfg.get_threads = conns;
    cfg.post_threads = conns;
    cfg.max_per_source = conns + 1;
    let m = msfs::spawn(cfg).expect("msfs starts");
    let addr = m.addr();

    let (up, paths) = parallel(args.files, conns, |i, conn| {
        let s = connect(addr, conn);
        s.write_all(&upload_request(&files[i], i))
            .expect("send upload");
        let mut buf = Vec::new();
        let (status, body) = read_response(s, &mut buf).expect("upload answer");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
        assert!(status == 200 && v["error_code"] == 0, "upload refused: {v}");
        v["path"].as_str().expect("path").to_owned()
    });
    let (down, ok) = parallel(args.files, conns, |i, conn| {
        let s = connect(addr, conn);
        write!(s, "GET /{} HTTP/1.1\r\nHost: bench\r\n\r\n", paths[i]).expect("send get");
        let mut buf = Vec::new();
        let (status, body) = read_response(s, &mut buf).expect("download answer");
        status == 200 && body == files[i]
    });
    assert!(ok.iter().all(|&b| b), "every download byte-identical");
    m.stop();

    let plain = run.join("plain");
    std::fs::create_dir_all(&plain).expect("plain dir");
    let (write, _) = parallel(args.files, conns, |i, _| {
        let mut f = std::fs::File::create(plain.join(i.to_string())).expect("create");
        f.write_all(&files[i]).expect("write");
        f.sync_all().expect("fsync");
    });
    let (read, _) = parallel(args.files, conns, |i, _| {
        std::fs::read(plain.join(i.to_string()))
            .expect("read")
            .len()
    });
    let _ = std::fs::remove_dir_all(&run);

    println!(
        "{} files x {} KiB, {conns} clients/threads, in {}",
        args.files,
        args.size_kib,
        args.dir.display()
    );
    println!(
        "msfs upload (multipart POST, sha256, write+fsync+link): {:8.1} MB/s",
        rate(total, up)
    );
    println!(
        "msfs download (GET over loopback):                     {:8.1} MB/s",
        rate(total, down)
    );
    println!(
        "plain file write + fsync:                              {:8.1} MB/s",
        rate(total, write)
    );
    println!(
        "plain file read:                                       {:8.1} MB/s",
        rate(total, read)
    );
}
