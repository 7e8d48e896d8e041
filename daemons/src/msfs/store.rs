//! [`BlobStore`]: content-addressed files under `BaseDir`, written so that
//! a crash never leaves a half file under a name a client can fetch.
//!
//! Blocking file IO: only the daemon's workers call into it, never the
//! App's thread.
//!
//! # Writing
//!
//! 1. The SHA-256 of the bytes names the file; if a file of that name and
//!    length exists, nothing is written (the same bytes are stored once).
//! 2. The bytes go to a new file in `BaseDir/tmp` (same file system), which
//!    is flushed to the disk (`fsync`).
//! 3. The file is hard-linked to its final name: the link either appears
//!    whole or not at all, and fails if another writer got there first,
//!    so two uploads of the same bytes at once are counted once. (Where
//!    the file system has no hard links, a rename is used.)
//! 4. The temporary name is removed and the final directory is flushed, so
//!    the name survives a power cut once the client has its answer.
//!    Directories created on the way are flushed into their parents.
//!
//! Temporary files left by a crash are removed when the store opens.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tracing::{info, warn};

use super::name::{BLOB_DIR, Digest, blob_path};

/// Directory under `BaseDir` for files being written.
pub const TMP_DIR: &str = "tmp";

/// Files and bytes stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What [`BlobStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    /// The file's name.
    pub digest: Digest,
    /// Its length.
    pub len: u64,
    /// True if this call stored it; false if the same bytes were there.
    pub created: bool,
}

/// Content-addressed files under one base directory.
#[derive(Debug)]
pub struct BlobStore {
    base: PathBuf,
    tmp: PathBuf,
    seq: AtomicU64,
}

impl BlobStore {
    /// Opens (creating) the store under `base`, removes temporary files a
    /// crash left, and counts what is stored. Counting reads every
    /// directory once: a million files take a few seconds.
    ///
    /// # Errors
    /// When `base` cannot be created or read.
    pub fn open(base: &Path) -> io::Result<(Self, Usage)> {
        fs::create_dir_all(base)?;
        let tmp = base.join(TMP_DIR);
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(base.join(BLOB_DIR))?;
        let mut stale = 0u64;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() && fs::remove_file(entry.path()).is_ok() {
                stale += 1;
            }
        }
        if stale > 0 {
            info!(dir = %tmp.display(), files = stale, "removed unfinished uploads");
        }
        let usage = scan(&base.join(BLOB_DIR))?;
        Ok((
            Self {
                base: base.to_owned(),
                tmp,
                seq: AtomicU64::new(0),
            },
            usage,
        ))
    }

    /// The base directory.
    #[must_use]
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Stores `data` (see the [module docs](self)).
    ///
    /// # Errors
    /// The file system's; nothing is left under the final name then.
    pub fn put(&self, data: &[u8]) -> io::Result<Put> {
        let digest = Digest::of(data);
        let len = data.len() as u64;
        let path = blob_path(&self.base, &digest);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == len => {
                return Ok(Put {
                    digest,
                    len,
                    created: false,
                });
            }
            Ok(m) => warn!(path = %path.display(), len = m.len(), want = len,
                "stored file has the wrong length; replacing it"),
            Err(_) => {}
        }
        let Some(dir) = path.parent() else {
            return Err(io::Error::other("blob path without a directory"));
        };
        ensure_dirs(&self.base.join(BLOB_DIR), dir)?;
        let tmp = self.tmp.join(format!(
            "{}.{}.{}",
            digest.hex(),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_new(&tmp, data).and_then(|()| publish(&tmp, &path));
        let _ = fs::remove_file(&tmp);
        let created = result?;
        sync_dir(dir)?;
        Ok(Put {
            digest,
            len,
            created,
        })
    }

    /// Opens a stored file for reading: the file and its length.
    ///
    /// # Errors
    /// `NotFound` when there is no such file (or it is not a regular
    /// file); the file system's otherwise.
    pub fn open_file(path: &Path) -> io::Result<(File, u64)> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok((file, meta.len()))
    }

    /// Reads `range` of an open file.
    ///
    /// # Errors
    /// The file system's, or `UnexpectedEof` when the file shrank.
    pub fn read_range(file: &mut File, range: Range<u64>) -> io::Result<Bytes> {
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| io::Error::other("range too large"))?;
        file.seek(SeekFrom::Start(range.start))?;
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }
}

/// Writes `data` to a new file at `path` and flushes it to the disk.
fn write_new(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Gives the finished temporary file its final name. True if this call
/// created it, false if an identical file got there first.
fn publish(tmp: &Path, path: &Path) -> io::Result<bool> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Another writer stored the same bytes meanwhile, or a file of
            // the wrong length is there (checked before): replace the
            // latter atomically.
            if fs::metadata(path).is_ok_and(|m| m.len() == fs::metadata(tmp).map_or(0, |t| t.len()))
            {
                Ok(false)
            } else {
                fs::rename(tmp, path).map(|()| true)
            }
        }
        // No hard links here (some network and FAT file systems).
        Err(_) => fs::rename(tmp, path).map(|()| true),
    }
}

/// Creates `dir` and the directories between `root` and it, flushing each
/// new one into its parent.
fn ensure_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let Ok(rest) = dir.strip_prefix(root) else {
        return Err(io::Error::other("blob directory outside the store"));
    };
    let mut at = root.to_owned();
    for part in rest.components() {
        at.push(part);
        match fs::create_dir(&at) {
            Ok(()) => {
                if let Some(parent) = at.parent() {
                    sync_dir(parent)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Flushes a directory's entries to the disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Counts the stored files (names of 64 hex digits two levels down).
fn scan(root: &Path) -> io::Result<Usage> {
    let mut usage = Usage::default();
    for first in fs::read_dir(root)? {
        let first = first?;
        if !first.file_type()?.is_dir() {
            continue;
        }
        for second in fs::read_dir(first.path())? {
            let second = second?;
            if !second.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(second.path())? {
                let file = file?;
                let named = file
                    .file_name()
                    .to_str()
                    .is_some_and(|n| Digest::from_hex(n).is_some());
                if named && file.file_type()?.is_file() {
                    usage.files += 1;
                    usage.bytes += file.metadata()?.len();
                }
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, usage) = BlobStore::open(dir.path()).unwrap();
        assert_eq!(usage, Usage::default());
        let a = store.put(b"picture").unwrap();
        assert!(a.created);
        assert_eq!(a.len, 7);
        assert_eq!(a.digest, Digest::of(b"picture"));
        let again = store.put(b"picture").unwrap();
        assert_eq!(
            again,
            Put {
                created: false,
                ..a
            }
        );
        let b = store.put(b"another").unwrap();
        assert!(b.created);
        let path = blob_path(dir.path(), &a.digest);
        assert_eq!(fs::read(&path).unwrap(), b"picture");
        assert!(
            fs::read_dir(dir.path().join(TMP_DIR))
                .unwrap()
                .next()
                .is_none(),
            "no temporary file left"
        );
        let (_, usage) = BlobStore::open(dir.path()).unwrap();
        assert_eq!(
            usage,
            Usage {
                files: 2,
                bytes: 14
            }
        );
    }

    #[test]
    fn a_crash_mid_write_leaves_no_file_under_a_fetchable_name() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlobStore::open(dir.path()).unwrap();
        // What a crash between write and link leaves: a temporary file.
        let half = dir.path().join(TMP_DIR).join("abc.1.0");
        fs::write(&half, b"half an ima").unwrap();
        drop(store);
        let (_, usage) = BlobStore::open(dir.path()).unwrap();
        assert!(!half.exists(), "unfinished uploads are removed at open");
        assert_eq!(usage, Usage::default());
        assert_eq!(fs::read_dir(dir.path().join(BLOB_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn a_damaged_file_is_replaced_by_the_next_upload() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlobStore::open(dir.path()).unwrap();
        let put = store.put(b"0123456789").unwrap();
        let path = blob_path(dir.path(), &put.digest);
        fs::write(&path, b"01234").unwrap();
        let again = store.put(b"0123456789").unwrap();
        assert!(again.created);
        assert_eq!(fs::read(&path).unwrap(), b"0123456789");
    }

    #[test]
    fn concurrent_writers_of_the_same_bytes_count_one_creation() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlobStore::open(dir.path()).unwrap();
        let store = std::sync::Arc::new(store);
        let data = vec![7u8; 256 << 10];
        let created: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let store = &store;
                    let data = &data;
                    s.spawn(move || store.put(data).unwrap().created)
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(created, 1);
        let (_, usage) = BlobStore::open(dir.path()).unwrap();
        assert_eq!(usage.files, 1);
    }

    #[test]
    fn ranges_are_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlobStore::open(dir.path()).unwrap();
        let put = store.put(b"0123456789").unwrap();
        let (mut f, len) = BlobStore::open_file(&blob_path(dir.path(), &put.digest)).unwrap();
        assert_eq!(len, 10);
        assert_eq!(&BlobStore::read_range(&mut f, 2..5).unwrap()[..], b"234");
        assert_eq!(
            &BlobStore::read_range(&mut f, 0..10).unwrap()[..],
            b"0123456789"
        );
        assert!(BlobStore::read_range(&mut f, 8..12).is_err());
        let missing = BlobStore::open_file(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let dir_err = BlobStore::open_file(dir.path()).unwrap_err();
        assert_eq!(dir_err.kind(), io::ErrorKind::NotFound);
    }
}
