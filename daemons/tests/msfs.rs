//! msfs over real sockets: images uploaded the way TeamTalk's clients do
//! and fetched back by the URL they get, refusals in TeamTalk's JSON,
//! traversal, ranges, the same bytes stored once, and msfs under
//! `teamtalk up`'s system with login_server handing out its URL.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::Duration;

use daemons::msfs::{self, MsfsConfig, RunningMsfs};
use daemons::password::HashParams;
use daemons::system::{self, SystemConfig};

/// A safety net against a hung test, not a measurement.
const PATIENCE: Duration = Duration::from_secs(30);

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        let line = self.body.split(|&b| b == b'\n').next().unwrap_or(&[]);
        serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!("{e}: {:?}", String::from_utf8_lossy(&self.body));
        })
    }
}

/// Sends `request` on a new connection and reads one answer: the head,
/// then `Content-Length` bytes (none for `HEAD`).
fn exchange(addr: SocketAddr, request: &[u8], head: bool) -> Answer {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    exchange_on(s, request, head)
}

/// [`exchange`] on a connection already open.
fn exchange_on(mut s: TcpStream, request: &[u8], head: bool) -> Answer {
    s.write_all(request).expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read head");
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8(buf[..end].to_vec()).expect("ASCII head");
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().expect("length"));
    let mut body = buf[end..].to_vec();
    let want = if head { 0 } else { len };
    while body.len() < want {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(want);
    Answer {
        status,
        headers,
        body,
    }
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    exchange(addr, req.as_bytes(), false)
}

/// The path part of an `http://host/path` URL, and its host.
fn split_url(url: &str) -> (&str, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let slash = rest.find('/').expect("path");
    (&rest[..slash], rest[slash..].to_owned())
}

/// An upload exactly as the Windows client's HTTP library writes it: POST
/// `<msfs>upload/`, a `------__` boundary, `Content-Type: image/.png`.
fn windows_upload(host: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    let boundary = "------__Q8wRt5Yu1Io3Pa";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n\
         Content-Type: image/.png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut req = format!(
        "POST /upload/ HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// An upload exactly as Android's `MoGuHttpClient.uploadImage3` writes it,
/// posted to the msfs URL as login_server gave it.
fn android_upload(host: &str, path: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    let boundary = "---------7d4a6d158c9";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data;name=\"file0\";filename=\"{filename}\"\r\n\
         Content-Type:application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nconnection: Keep-Alive\r\n\
         user-agent: Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)\r\nCharsert: UTF-8\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nHost: {host}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// A made-up PNG of `len` bytes (signature, then a pattern).
fn png(len: usize, seed: u8) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend((0..len.saturating_sub(8)).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

fn start(dir: &Path, tweak: impl FnOnce(&mut MsfsConfig)) -> RunningMsfs {
    let mut cfg = MsfsConfig::loopback(dir);
    tweak(&mut cfg);
    msfs::spawn(cfg).expect("msfs starts")
}

fn stored_files(dir: &Path) -> usize {
    walk(&dir.join("sha256"))
}

fn walk(p: &Path) -> usize {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| {
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn an_image_uploaded_as_clients_do_comes_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), |_| {});
    let addr = m.addr();
    let host = format!("msfs.example:{}", addr.port());
    let image = png(300 << 10, 1);
    let a = exchange(
        addr,
        &windows_upload(&host, "shot.png_640x480.png", &image),
        false,
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/html;charset=utf-8"));
    assert!(!a.body.contains(&b'\n'), "one line for Android's readLine");
    let v = a.json();
    assert_eq!(v["error_code"], 0, "{v}");
    assert_eq!(v["error_msg"], "成功");
    let path = v["path"].as_str().unwrap().to_owned();
    assert!(
        path.starts_with("g0/") && path.ends_with("_640x480.png"),
        "{path}"
    );
    let url = v["url"].as_str().unwrap();
    assert_eq!(url, format!("http://{host}/{path}"));

    // Fetched by the URL's path (the host is the client's name for msfs).
    let (_, url_path) = split_url(url);
    let got = get(addr, &url_path, "");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.body, image, "byte-identical");
    // Windows builds its URL from `path`: the same file.
    assert_eq!(get(addr, &format!("/{path}"), "").body, image);

    // Android's form keeps the blank line it writes after the file, as
    // TeamTalk's msfs did.
    let photo = png(20 << 10, 2);
    let a = exchange(
        addr,
        &android_upload(&addr.to_string(), "/", "IMG_20150101_123456.jpg", &photo),
        false,
    );
    let v = a.json();
    assert_eq!(v["error_code"], 0, "{v}");
    let path = v["path"].as_str().unwrap();
    assert!(
        path.ends_with(".jpg") && !path.contains("_123456"),
        "{path}"
    );
    let got = get(addr, &format!("/{path}"), "");
    assert_eq!(got.header("content-type"), Some("image/jpeg"));
    let mut want = photo.clone();
    want.extend_from_slice(b"\r\n");
    assert_eq!(got.body, want);

    // A restart finds every file where it was.
    drop(m);
    let m = start(dir.path(), |_| {});
    assert_eq!(m.usage().files, 2);
    let got = get(m.addr(), &url_path, "");
    assert_eq!(got.body, image);
}

#[test]
fn oversized_uploads_get_teamtalks_error_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), |_| {});
    let addr = m.addr();
    // TeamTalk's limit: 10 MiB. One byte more is error 1.
    let big = png((10 << 20) + 1, 3);
    let a = exchange(addr, &windows_upload("h", "big.png", &big), false);
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["error_code"], 1, "{v}");
    assert_eq!(v["error_msg"], "上传文件过大");
    assert_eq!(v["url"], "");
    // Exactly 10 MiB is stored.
    let a = exchange(
        addr,
        &windows_upload("h", "max.png", &big[..10 << 20]),
        false,
    );
    assert_eq!(a.json()["error_code"], 0);

    // A body far over the limit is read and dropped, and still answered
    // with the JSON clients show.
    let small = start(&dir.path().join("small"), |c| c.max_upload_bytes = 16 << 10);
    let a = exchange(
        small.addr(),
        &windows_upload("h", "a.png", &png(200 << 10, 4)),
        false,
    );
    assert_eq!((a.status, a.json()["error_code"].as_u64()), (200, Some(1)));
    assert_eq!(a.header("connection"), Some("close"));
    assert_eq!(stored_files(&dir.path().join("small")), 0);
    let mut s = daemons::metrics::Scrape::new();
    small.metrics().collect(&mut s);
    assert!(
        s.render()
            .contains("teamtalk_msfs_refused_total{reason=\"too_large\"} 1"),
        "{}",
        s.render()
    );
}

#[test]
fn traversal_is_refused_and_nothing_outside_is_served() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"do not serve").unwrap();
    let m = start(&dir.path().join("store"), |_| {});
    let addr = m.addr();
    for path in [
        "/g0/../../secret.txt",
        "/../secret.txt",
        "/g0/%2e%2e/%2e%2e/secret.txt",
        "/g0/..%2f..%2fsecret.txt",
        "/g0/000/000/..%5c..%5csecret.txt",
        "//etc/passwd",
        "/g0/000/000/%00.png",
    ] {
        let a = get(addr, path, "");
        assert_eq!(a.status, 400, "{path}");
        assert!(!a.body.windows(12).any(|w| w == b"do not serve"));
    }
    for path in ["/secret.txt", "/etc/passwd", "/g0/tmp/x", "/sha256"] {
        assert_eq!(get(addr, path, "").status, 404, "{path}");
    }
    let mut s = daemons::metrics::Scrape::new();
    m.metrics().collect(&mut s);
    assert!(
        s.render()
            .contains("teamtalk_msfs_refused_total{reason=\"traversal\"} 7"),
        "{}",
        s.render()
    );
}

#[test]
fn ranges_heads_and_revalidation() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), |_| {});
    let addr = m.addr();
    let voice = (0..50_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    let req = windows_upload("h", "memo.amr", &voice);
    let path = format!(
        "/{}",
        exchange(addr, &req, false).json()["path"].as_str().unwrap()
    );

    let a = get(addr, &path, "Range: bytes=100-199\r\n");
    assert_eq!(a.status, 206);
    assert_eq!(a.header("content-range"), Some("bytes 100-199/50000"));
    assert_eq!(a.header("content-type"), Some("audio/amr"));
    assert_eq!(a.body, &voice[100..200]);
    let a = get(addr, &path, "Range: bytes=-10\r\n");
    assert_eq!(a.body, &voice[49_990..]);
    let a = get(addr, &path, "Range: bytes=50000-\r\n");
    assert_eq!(a.status, 416);
    assert_eq!(a.header("content-range"), Some("bytes */50000"));

    let head = format!("HEAD {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let a = exchange(addr, head.as_bytes(), true);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some("50000"));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));

    let etag = get(addr, &path, "").header("etag").unwrap().to_owned();
    let a = get(addr, &path, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(a.status, 304);
    assert!(a.body.is_empty());
}

#[test]
fn the_same_bytes_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), |_| {});
    let addr = m.addr();
    let image = png(64 << 10, 5);
    let first = exchange(addr, &windows_upload("h", "a.png_10x20.png", &image), false).json();
    let second = exchange(addr, &windows_upload("h", "b.png", &image), false).json();
    let (p1, p2) = (
        first["path"].as_str().unwrap(),
        second["path"].as_str().unwrap(),
    );
    assert!(p1.ends_with("_10x20.png") && p2.ends_with(".png"));
    assert_eq!(
        p1.split('_').next(),
        p2.strip_suffix(".png"),
        "one name for one content"
    );
    assert_eq!(stored_files(dir.path()), 1);
    assert_eq!(m.usage().files, 1);
    assert_eq!(m.usage().bytes, image.len() as u64);
    let c = m.counts();
    assert_eq!((c.stored, c.duplicates), (1, 1));
    for p in [p1, p2] {
        assert_eq!(get(addr, &format!("/{p}"), "").body, image);
    }
}

#[test]
fn the_quota_and_the_rate_limit_answer_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), |c| {
        c.quota_bytes = Some(100 << 10);
        c.uploads_per_minute = 3;
    });
    let addr = m.addr();
    let a = exchange(
        addr,
        &windows_upload("h", "a.png", &png(60 << 10, 6)),
        false,
    );
    assert_eq!(a.json()["error_code"], 0);
    let a = exchange(
        addr,
        &windows_upload("h", "b.png", &png(60 << 10, 7)),
        false,
    );
    assert_eq!(a.json()["error_code"], 12, "quota");
    let a = exchange(
        addr,
        &windows_upload("h", "c.png", &png(10 << 10, 8)),
        false,
    );
    assert_eq!(a.json()["error_code"], 0);
    let a = exchange(addr, &windows_upload("h", "d.png", &png(1, 9)), false);
    assert_eq!(a.json()["error_code"], 13, "rate");
    assert_eq!(stored_files(dir.path()), 2);
}

/// A connection from `source` (any 127.x address: all loopback on Linux).
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddrV4::new(source, 0).into()).unwrap();
    s.connect_timeout(&to.into(), PATIENCE).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

#[test]
fn one_source_holds_a_bounded_number_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), |c| c.max_per_source = 4);
    let addr = m.addr();
    // Four slow uploads from one address: heads sent, bodies never.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect_from(Ipv4Addr::LOCALHOST, addr);
            s.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // A fifth from the same address is closed without an answer.
    let mut fifth = connect_from(Ipv4Addr::LOCALHOST, addr);
    let _ = fifth.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut buf = [0u8; 64];
    assert!(matches!(fifth.read(&mut buf), Ok(0) | Err(_)), "refused");
    // Another address is served at once.
    let other = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr);
    let a = exchange_on(other, &windows_upload("h", "a.png", &png(1000, 11)), false);
    assert_eq!((a.status, a.json()["error_code"].as_u64()), (200, Some(0)));
    held.clear();
}

#[test]
fn teamtalk_up_serves_msfs_where_login_server_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SystemConfig::ephemeral(dir.path(), 1);
    cfg.hash_params = HashParams::INSECURE_FAST;
    let sys = system::start(cfg).expect("system starts");
    assert!(sys.wait_ready(PATIENCE), "msg_server registered");

    // What a client asks first.
    let a = get(sys.http_addr(), "/msg_server", "");
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["code"], 0, "{v}");
    let msfs_url = v["msfsPrior"].as_str().unwrap().to_owned();
    assert_eq!(v["msfsBackup"].as_str(), Some(msfs_url.as_str()));
    assert_eq!(msfs_url, format!("http://{}/", sys.msfs_addr()));

    // Android posts to that URL as is; the answer's URL serves the image.
    let (host, post_path) = split_url(&msfs_url);
    let addr: SocketAddr = host.parse().unwrap();
    let image = png(100 << 10, 10);
    let a = exchange(
        addr,
        &android_upload(host, &post_path, "x.jpg", &image),
        false,
    );
    let v = a.json();
    assert_eq!(v["error_code"], 0, "{v}");
    let url = v["url"].as_str().unwrap();
    assert!(url.starts_with(&msfs_url), "{url} under {msfs_url}");
    let (_, path) = split_url(url);
    let got = get(addr, &path, "");
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..image.len()], &image[..]);
    assert!(dir.path().join("msfs").join("sha256").is_dir());

    // msfs's counters are on the system's admin endpoint.
    let admin = sys.admin_addr().expect("admin endpoint");
    let metrics = String::from_utf8(get(admin, "/metrics", "").body).unwrap();
    assert!(
        metrics.contains(&format!(
            "teamtalk_msfs_uploads_total{{daemon=\"msfs\",instance=\"{}\",result=\"stored\"}} 1",
            sys.msfs_addr()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("teamtalk_msfs_used_bytes{daemon=\"msfs\""),
        "{metrics}"
    );
    sys.shutdown();
}
