//! Entry points of the daemons' fuzz targets, shared by the libFuzzer
//! binaries and the corpus replay test.

use std::path::{Component, Path};

use bytes::Bytes;
use daemons::msfs::name::{MAX_FILENAME, parse_request_path};
use daemons::msfs::upload::parse_upload;
use http::HeaderValue;

/// Largest file the harness lets through, small so limits are hit.
const LIMIT: usize = 256;

/// Input: one byte choosing the boundary, a path line, then the body.
/// The body goes through [`parse_upload`] under a `multipart/form-data`
/// content type with that boundary; the path through
/// [`parse_request_path`]. Neither may panic; an accepted file is within
/// the limit with a type TeamTalk accepts; an accepted path leads to a
/// plain file below the base directory.
pub fn run_msfs_upload(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let boundary = match pick % 4 {
        0 => "B",
        1 => "------__Q8wRt5Yu1Io3Pa",
        2 => "---------7d4a6d158c9",
        _ => "Boundary+0xAbCdEfGbOuNdArY",
    };
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let ct = HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
        .expect("a valid header");
    if let Ok(file) = parse_upload(Some(&ct), Bytes::copy_from_slice(body), LIMIT) {
        assert!(file.data.len() <= LIMIT);
        assert!((1..=15).contains(&file.suffix.ext.len()));
        assert!(file.suffix.ext.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(file.suffix.render().len() <= MAX_FILENAME);
    }
    if let Ok(path) = std::str::from_utf8(path)
        && let Ok(name) = parse_request_path(path)
    {
        let base = Path::new("/srv/msfs");
        let disk = name.disk_path(base);
        let under = disk.strip_prefix(base).expect("below the base");
        assert!(
            under
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        );
        assert!(matches!(under.components().count(), 3 | 4));
    }
}
