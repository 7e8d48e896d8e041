//! file_server's disk: where offline files live, the worker that reads and
//! writes them, and the scan that finds the stored ones at start.
//!
//! Layout (TeamTalk kept `<cwd>/offline_file/<first 2 chars>/<task id>`,
//! the task's metadata in a binary header inside the file):
//!
//! ```text
//! <DataDir>/<aa>/<task id>.data   the file's bytes, nothing else
//! <DataDir>/<aa>/<task id>.meta   JSON: who sent it to whom, name, size, times
//! ```
//!
//! An upload writes `.data` only. When its last byte is written the data
//! is synced, then `.meta` is written to a temporary name, synced, renamed
//! over `.meta` and the directory synced: a `.meta` exists exactly when
//! the whole file is on disk, so a crash at any moment leaves either a
//! stored file or debris the start-up scan removes (`.data` without
//! `.meta`, `.tmp` files, a `.meta` whose `.data` has the wrong size).
//! Paths are built from task ids only, which are checked to be UUIDs
//! before any path is made ([`crate::rules::files::is_task_id`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::rules::files::is_task_id;
use crate::runtime::{Conn, Worker};

/// Version of the `.meta` format.
const META_VERSION: u32 = 1;
/// Largest `.meta` file read: a task id, two user ids, a name of at most
/// 512 bytes and a few numbers; anything bigger is not ours.
const MAX_META_BYTES: u64 = 8 * 1024;
/// Open file handles one worker keeps between jobs.
const MAX_OPEN_FILES: usize = 64;

/// What `.meta` holds: everything needed to serve the file after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMeta {
    /// Format version (1).
    pub version: u32,
    /// The task id (also the file name).
    pub task_id: String,
    /// Sender.
    pub from: u32,
    /// Receiver: the only user it is served to.
    pub to: u32,
    /// The name the sender gave.
    pub file_name: String,
    /// Size in bytes.
    pub file_size: u32,
    /// When the task was created (Unix seconds).
    pub created: u32,
    /// When the upload completed (Unix seconds); retention counts from it.
    pub stored: u32,
}

impl TaskMeta {
    /// A `.meta` for a task stored at `stored`.
    #[must_use]
    pub fn new(
        task_id: &str,
        from: u32,
        to: u32,
        file_name: &str,
        file_size: u32,
        created: u32,
        stored: u32,
    ) -> Self {
        Self {
            version: META_VERSION,
            task_id: task_id.to_owned(),
            from,
            to,
            file_name: file_name.to_owned(),
            file_size,
            created,
            stored,
        }
    }
}

/// The directory of `task_id`'s files (its first two characters, as
/// TeamTalk did, so no directory holds too many entries).
fn shard_dir(root: &Path, task_id: &str) -> PathBuf {
    root.join(task_id.get(..2).unwrap_or("__"))
}

/// `<root>/<aa>/<task id>.data`.
#[must_use]
pub fn data_path(root: &Path, task_id: &str) -> PathBuf {
    shard_dir(root, task_id).join(format!("{task_id}.data"))
}

/// `<root>/<aa>/<task id>.meta`.
#[must_use]
pub fn meta_path(root: &Path, task_id: &str) -> PathBuf {
    shard_dir(root, task_id).join(format!("{task_id}.meta"))
}

/// Work for a disk worker. Jobs of one task always go to the same worker,
/// so they run in the order the App gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskJob {
    /// Write `data` at `offset` of the task's `.data` (created on the
    /// first write at offset 0).
    Write {
        /// The task.
        task: String,
        /// Where in the file.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The upload is complete: sync the data, write `.meta` atomically.
    Commit(TaskMeta),
    /// Read `len` bytes at `offset` for a download request.
    Read {
        /// The task.
        task: String,
        /// Where in the file.
        offset: u64,
        /// How many bytes.
        len: u32,
        /// The connection that asked.
        conn: Conn,
        /// Its request's seq.
        seq: u16,
        /// A read ahead of the downloader's next request, not asked yet.
        ahead: bool,
    },
    /// Remove the task's files (finished, deleted, expired or abandoned).
    Remove {
        /// The task.
        task: String,
    },
}

/// What a disk worker hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskDone {
    /// A [`DiskJob::Write`] finished.
    Written {
        /// The task.
        task: String,
        /// Bytes it wrote (or tried to).
        bytes: u32,
        /// `Err(reason)` when it failed.
        result: Result<(), String>,
    },
    /// A [`DiskJob::Commit`] finished.
    Committed {
        /// The task.
        task: String,
        /// `Err(reason)` when it failed.
        result: Result<(), String>,
    },
    /// A [`DiskJob::Read`] finished.
    Read {
        /// The task.
        task: String,
        /// The connection that asked.
        conn: Conn,
        /// Its request's seq.
        seq: u16,
        /// Where the bytes start.
        offset: u64,
        /// The job's `ahead`.
        ahead: bool,
        /// The bytes, or why not.
        result: Result<Bytes, String>,
    },
    /// A [`DiskJob::Remove`] finished.
    Removed {
        /// The task.
        task: String,
        /// `Err(reason)` when something could not be removed.
        result: Result<(), String>,
    },
}

/// A disk worker: one thread of file I/O under `root`.
#[derive(Debug)]
pub struct DiskWorker {
    root: PathBuf,
    /// Open handles by task id (writes and reads of a transfer under way
    /// skip the open); bounded, dropped on commit and removal.
    open: HashMap<String, File>,
}

impl DiskWorker {
    /// A worker for the files under `root`.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            open: HashMap::new(),
        }
    }

    /// The open handle of `task`, opening it (for writing when `create`,
    /// which also makes its directory) if needed.
    fn handle(&mut self, task: &str, create: bool) -> io::Result<&File> {
        if !self.open.contains_key(task) {
            if !is_task_id(task) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a task id"));
            }
            if self.open.len() >= MAX_OPEN_FILES
                && let Some(victim) = self.open.keys().next().cloned()
            {
                self.open.remove(&victim);
            }
            let path = data_path(&self.root, task);
            let file = if create {
                fs::create_dir_all(shard_dir(&self.root, task))?;
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?
            } else {
                OpenOptions::new().read(true).write(true).open(&path)?
            };
            self.open.insert(task.to_owned(), file);
        }
        self.open
            .get(task)
            .ok_or_else(|| io::Error::other("handle vanished"))
    }

    fn write(&mut self, task: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset == 0 {
            // A fresh upload: whatever a crashed earlier attempt left goes.
            self.open.remove(task);
            let file = self.handle(task, true)?;
            file.set_len(0)?;
        }
        let file = self.handle(task, true)?;
        file.write_all_at(data, offset)
    }

    fn read(&mut self, task: &str, offset: u64, len: u32) -> io::Result<Bytes> {
        let file = self.handle(task, false)?;
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    }

    fn commit(&mut self, meta: &TaskMeta) -> io::Result<()> {
        let file = self.handle(&meta.task_id, false)?;
        let len = file.metadata()?.len();
        if len != u64::from(meta.file_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{len} bytes on disk, {} announced", meta.file_size),
            ));
        }
        file.sync_all()?;
        self.open.remove(&meta.task_id);
        let path = meta_path(&self.root, &meta.task_id);
        let tmp = path.with_extension("meta.tmp");
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(shard_dir(&self.root, &meta.task_id))?.sync_all()
    }

    fn remove(&mut self, task: &str) -> io::Result<()> {
        self.open.remove(task);
        if !is_task_id(task) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a task id"));
        }
        // The metadata first: without it, a leftover .data is debris the
        // next start-up removes, never a file served again.
        for path in [meta_path(&self.root, task), data_path(&self.root, task)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Worker for DiskWorker {
    type Job = DiskJob;
    type Done = DiskDone;

    fn run(&mut self, jobs: Vec<DiskJob>, done: &mut Vec<DiskDone>) {
        for job in jobs {
            done.push(match job {
                DiskJob::Write { task, offset, data } => {
                    let result = self.write(&task, offset, &data).map_err(|e| e.to_string());
                    DiskDone::Written {
                        task,
                        bytes: u32::try_from(data.len()).unwrap_or(u32::MAX),
                        result,
                    }
                }
                DiskJob::Commit(meta) => {
                    let result = self.commit(&meta).map_err(|e| e.to_string());
                    DiskDone::Committed {
                        task: meta.task_id,
                        result,
                    }
                }
                DiskJob::Read {
                    task,
                    offset,
                    len,
                    conn,
                    seq,
                    ahead,
                } => {
                    let result = self.read(&task, offset, len).map_err(|e| e.to_string());
                    DiskDone::Read {
                        task,
                        conn,
                        seq,
                        offset,
                        ahead,
                        result,
                    }
                }
                DiskJob::Remove { task } => {
                    let result = self.remove(&task).map_err(|e| e.to_string());
                    DiskDone::Removed { task, result }
                }
            });
        }
    }
}

/// What the start-up scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Offline files stored completely, ready to be downloaded.
    pub stored: Vec<TaskMeta>,
    /// Debris removed: partial uploads, temporaries, broken metadata.
    pub removed: usize,
}

/// Finds the stored offline files under `root` (created if missing) and
/// removes what is not a complete one. At most `max` files are kept; more
/// (a directory filled by another program, or a lower `MaxTasks` than
/// before) are left untouched on disk and logged.
///
/// Runs once, before the daemon serves anyone (`file::spawn`), so the
/// App starts with every stored task known.
///
/// # Errors
/// `root` cannot be created or read.
pub fn scan(root: &Path, max: usize) -> io::Result<Scan> {
    fs::create_dir_all(root)?;
    let mut scan = Scan::default();
    let mut skipped = 0usize;
    for shard in fs::read_dir(root)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        let mut metas = Vec::new();
        let mut datas = Vec::new();
        for entry in fs::read_dir(shard.path())? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(task) = name.strip_suffix(".meta") {
                metas.push(task.to_owned());
            } else if let Some(task) = name.strip_suffix(".data") {
                datas.push(task.to_owned());
            } else if name.strip_suffix(".meta.tmp").is_some_and(is_task_id) {
                remove_quietly(&entry.path(), &mut scan.removed);
            }
        }
        for task in &metas {
            if !is_task_id(task) {
                continue;
            }
            match read_meta(root, task) {
                Ok(meta) if scan.stored.len() < max => scan.stored.push(meta),
                Ok(_) => skipped += 1,
                Err(why) => {
                    warn!(task = %task, why, "offline file unusable; removed");
                    remove_quietly(&meta_path(root, task), &mut scan.removed);
                    remove_quietly(&data_path(root, task), &mut scan.removed);
                }
            }
        }
        for task in datas {
            if is_task_id(&task) && !metas.contains(&task) {
                // An upload that never completed.
                remove_quietly(&data_path(root, &task), &mut scan.removed);
            }
        }
    }
    if skipped > 0 {
        warn!(
            skipped,
            max, "more stored offline files than MaxTasks; the rest are not served"
        );
    }
    info!(stored = scan.stored.len(), removed = scan.removed, dir = %root.display(),
        "offline files found");
    Ok(scan)
}

/// Reads and checks one `.meta` against its `.data`.
fn read_meta(root: &Path, task: &str) -> Result<TaskMeta, String> {
    let path = meta_path(root, task);
    let len = fs::metadata(&path).map_err(|e| e.to_string())?.len();
    if len > MAX_META_BYTES {
        return Err(format!("metadata of {len} bytes"));
    }
    let raw = fs::read(&path).map_err(|e| e.to_string())?;
    let meta: TaskMeta = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    if meta.version != META_VERSION || meta.task_id != task {
        return Err("metadata of another version or task".to_owned());
    }
    let data = fs::metadata(data_path(root, task))
        .map_err(|e| e.to_string())?
        .len();
    if data != u64::from(meta.file_size) {
        return Err(format!("{data} bytes, {} announced", meta.file_size));
    }
    Ok(meta)
}

fn remove_quietly(path: &Path, removed: &mut usize) {
    match fs::remove_file(path) {
        Ok(()) => *removed += 1,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), error = %e, "cannot remove"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const T2: &str = "0a1b2c3d-0000-4000-8000-000000000002";
    const T3: &str = "0a1b2c3d-0000-4000-8000-000000000003";

    fn run(w: &mut DiskWorker, job: DiskJob) -> DiskDone {
        let mut done = Vec::new();
        w.run(vec![job], &mut done);
        assert_eq!(done.len(), 1);
        done.pop().unwrap()
    }

    fn meta(task: &str, size: u32) -> TaskMeta {
        TaskMeta::new(task, 1, 2, "a.bin", size, 100, 200)
    }

    #[test]
    fn write_commit_read_remove_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DiskWorker::new(dir.path());
        for (offset, data) in [(0u64, &b"hello "[..]), (6, b"world")] {
            let d = run(
                &mut w,
                DiskJob::Write {
                    task: T1.into(),
                    offset,
                    data: Bytes::copy_from_slice(data),
                },
            );
            assert!(
                matches!(d, DiskDone::Written { result: Ok(()), .. }),
                "{d:?}"
            );
        }
        let d = run(&mut w, DiskJob::Commit(meta(T1, 11)));
        assert_eq!(
            d,
            DiskDone::Committed {
                task: T1.into(),
                result: Ok(())
            }
        );
        let conn = Conn::test(1);
        let d = run(
            &mut w,
            DiskJob::Read {
                task: T1.into(),
                offset: 6,
                len: 5,
                conn,
                seq: 3,
                ahead: false,
            },
        );
        assert_eq!(
            d,
            DiskDone::Read {
                task: T1.into(),
                conn,
                seq: 3,
                offset: 6,
                ahead: false,
                result: Ok(Bytes::from_static(b"world"))
            }
        );
        // A read past the end fails, it is not padded.
        let d = run(
            &mut w,
            DiskJob::Read {
                task: T1.into(),
                offset: 8,
                len: 5,
                conn,
                seq: 4,
                ahead: false,
            },
        );
        assert!(matches!(d, DiskDone::Read { result: Err(_), .. }), "{d:?}");
        // A commit whose size does not match fails.
        run(
            &mut w,
            DiskJob::Write {
                task: T2.into(),
                offset: 0,
                data: Bytes::from_static(b"xy"),
            },
        );
        let d = run(&mut w, DiskJob::Commit(meta(T2, 3)));
        assert!(
            matches!(d, DiskDone::Committed { result: Err(_), .. }),
            "{d:?}"
        );
        // Debris: a temporary and a broken meta.
        std::fs::write(meta_path(dir.path(), T3), b"{not json").unwrap();
        std::fs::write(data_path(dir.path(), T3), b"z").unwrap();
        std::fs::write(
            meta_path(dir.path(), T1).with_extension("meta.tmp"),
            b"half",
        )
        .unwrap();
        // Names that are not ours are left alone, whatever their bytes.
        std::fs::write(
            shard_dir(dir.path(), T1).join("0a1b2c3d-0000-4000-8000-00000000000é.meta.tmp"),
            b"",
        )
        .unwrap();
        let scan = scan(dir.path(), 10).unwrap();
        assert_eq!(scan.stored, vec![meta(T1, 11)]);
        assert_eq!(scan.removed, 4, "T2's data, T3's meta and data, the tmp");
        assert!(!data_path(dir.path(), T2).exists());
        // Removal takes both files; removing again is fine.
        let mut w = DiskWorker::new(dir.path());
        for _ in 0..2 {
            let d = run(&mut w, DiskJob::Remove { task: T1.into() });
            assert!(
                matches!(d, DiskDone::Removed { result: Ok(()), .. }),
                "{d:?}"
            );
        }
        assert!(super::scan(dir.path(), 10).unwrap().stored.is_empty());
    }

    #[test]
    fn a_new_upload_at_offset_zero_starts_the_file_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DiskWorker::new(dir.path());
        for data in [&b"a long first attempt"[..], b"short"] {
            run(
                &mut w,
                DiskJob::Write {
                    task: T1.into(),
                    offset: 0,
                    data: Bytes::copy_from_slice(data),
                },
            );
        }
        assert_eq!(fs::read(data_path(dir.path(), T1)).unwrap(), b"short");
    }

    #[test]
    fn paths_come_from_task_ids_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DiskWorker::new(dir.path());
        let d = run(
            &mut w,
            DiskJob::Write {
                task: "../../escape".into(),
                offset: 0,
                data: Bytes::from_static(b"x"),
            },
        );
        assert!(matches!(d, DiskDone::Written { result: Err(_), .. }));
        let d = run(
            &mut w,
            DiskJob::Remove {
                task: "../x".into(),
            },
        );
        assert!(matches!(d, DiskDone::Removed { result: Err(_), .. }));
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
