//! [`ServeLock`]: one serving process per data directory.
//!
//! Two db_proxy_servers (or `teamtalk up` and a db_proxy_server) on one
//! store would each believe they hand out message ids and keep caches of
//! it; SQLite would keep the file intact but not their promises. The
//! process that serves a store holds an exclusive lock on `serve.lock` in
//! its data directory, with its pid written inside so a second one can say
//! who has it. The operating system releases the lock when the process
//! ends, however it ends, so a crash leaves nothing to clean up.
//!
//! Commands that only read or edit the directory (`teamtalk user …`) do
//! not take it: SQLite serialises their writes with the server's.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE_NAME: &str = "serve.lock";

/// Why a store could not be locked for serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process serves this store.
    #[error(
        "{dir} is already served by another process{holder} (lock {lock}); stop it, or use \
         another data directory"
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// `" (pid N)"` when the holder wrote its pid.
        holder: String,
    },
    /// The data directory is a file (or below one).
    #[error("{0}: not a directory (the data directory must be a directory)")]
    NotADirectory(PathBuf),
    /// The lock file could not be created or locked.
    #[error("{lock}: {source}")]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// Held while this process serves the store; released on drop (or exit).
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
    path: PathBuf,
}

impl ServeLock {
    /// Takes the serving lock of `dir` (created if missing), or says who
    /// holds it.
    ///
    /// # Errors
    /// [`LockError::Held`] when another process holds it;
    /// [`LockError::Io`] when the file cannot be created or locked.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE_NAME);
        let io = |source| LockError::Io {
            lock: path.clone(),
            source,
        };
        let not_a_dir = || LockError::NotADirectory(dir.to_path_buf());
        if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
            return Err(not_a_dir());
        }
        std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => not_a_dir(),
            _ => io(e),
        })?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&file).take(32).read_to_string(&mut text);
                let holder = text
                    .trim()
                    .parse::<u32>()
                    .map_or_else(|_| String::new(), |pid| format!(" (pid {pid})"));
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    lock: path,
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_one_frees_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServeLock::acquire(dir.path()).unwrap();
        let err = ServeLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("serve.lock"), "{text}");
        drop(first);
        ServeLock::acquire(dir.path()).expect("free again");
    }

    #[test]
    fn a_file_is_not_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        for path in [file.clone(), file.join("below")] {
            let text = ServeLock::acquire(&path).unwrap_err().to_string();
            assert!(text.contains("not a directory"), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }
}
