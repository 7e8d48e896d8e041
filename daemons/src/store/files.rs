//! Offline files waiting for their receiver: TeamTalk's `IMTransmitFile`
//! (`from, to, task_id, file_name, size, status`), as a `transmit_file`
//! table in the SQLite store.
//!
//! A row says "the sender uploaded this task to a file_server; the
//! receiver may fetch it". The file itself lives on the file_server; the
//! row only lets the receiver learn the task id after a reconnect (0x0509).
//! The store checks what it is given (a well-formed task id, a bounded name,
//! at most [`MAX_OFFLINE_FILES`] rows waiting per receiver); who may add
//! or delete a row is msg_server's decision.

use rusqlite::{Connection, params};

use super::{StoreError, StoreResult, UserId};
use crate::rules::files::{MAX_FILE_NAME_LEN, MAX_OFFLINE_FILES, is_task_id};

/// An offline file to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOfflineFile {
    /// Sender (the authenticated user).
    pub from: UserId,
    /// Receiver.
    pub to: UserId,
    /// The transfer's task id (see [`crate::rules::files`]).
    pub task_id: String,
    /// The name the receiver sees, at most
    /// [`MAX_FILE_NAME_LEN`] bytes.
    pub file_name: String,
    /// Size in bytes.
    pub size: u32,
}

/// A recorded offline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineFile {
    /// Sender.
    pub from: UserId,
    /// Receiver.
    pub to: UserId,
    /// The transfer's task id.
    pub task_id: String,
    /// File name.
    pub file_name: String,
    /// Size in bytes.
    pub size: u32,
    /// When it was recorded (Unix seconds).
    pub created: u32,
}

/// The schema migration adding the table (appended to the store's list).
pub(super) const MIGRATION: &str = "
    CREATE TABLE transmit_file (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        from_id     INTEGER NOT NULL,
        to_id       INTEGER NOT NULL,
        task_id     TEXT    NOT NULL UNIQUE,
        file_name   TEXT    NOT NULL,
        size        INTEGER NOT NULL,
        -- TeamTalk's IMTransmitFile.status: 0 waiting.
        status      INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL,
        updated     INTEGER NOT NULL
    );
    CREATE INDEX transmit_file_to ON transmit_file(to_id, status, id);
";

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { context, source }
}

/// Rejects rows that are never stored, before touching the database.
pub(super) fn check(file: &NewOfflineFile) -> StoreResult<()> {
    if file.from == 0 || file.to == 0 {
        return Err(StoreError::Invalid("user id 0 is not a user"));
    }
    if file.from == file.to {
        return Err(StoreError::Invalid("an offline file to oneself"));
    }
    if !is_task_id(&file.task_id) {
        return Err(StoreError::Invalid("malformed task id"));
    }
    if file.file_name.len() > MAX_FILE_NAME_LEN {
        return Err(StoreError::Invalid("file name too long"));
    }
    Ok(())
}

/// Records `file` in one transaction: `Ok(false)` when its task id is
/// recorded already (a resent 0x050b), [`StoreError::Invalid`] when the
/// receiver has [`MAX_OFFLINE_FILES`] files waiting.
pub(super) fn add(conn: &mut Connection, file: &NewOfflineFile, now: u32) -> StoreResult<bool> {
    check(file)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql("recording an offline file"))?;
    let waiting: i64 = tx
        .prepare_cached("SELECT count(*) FROM transmit_file WHERE to_id = ?1 AND status = 0")
        .and_then(|mut s| s.query_row(params![file.to], |r| r.get(0)))
        .map_err(sql("counting offline files"))?;
    if usize::try_from(waiting).unwrap_or(usize::MAX) >= MAX_OFFLINE_FILES {
        return Err(StoreError::Invalid(
            "the receiver has too many offline files waiting",
        ));
    }
    let inserted = tx
        .prepare_cached(
            "INSERT INTO transmit_file (from_id, to_id, task_id, file_name, size, status,
                                        created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6)
             ON CONFLICT (task_id) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                file.from,
                file.to,
                file.task_id,
                file.file_name,
                file.size,
                now
            ])
        })
        .map_err(sql("recording an offline file"))?;
    tx.commit().map_err(sql("committing an offline file"))?;
    Ok(inserted == 1)
}

/// The files waiting for a user.
pub(super) const LIST_SQL: &str =
    "SELECT from_id, to_id, task_id, file_name, size, created FROM transmit_file
     WHERE to_id = ?1 AND status = 0 ORDER BY id LIMIT ?2";

/// The files waiting for `to`, oldest first, at most [`MAX_OFFLINE_FILES`].
pub(super) fn list(conn: &Connection, to: UserId) -> StoreResult<Vec<OfflineFile>> {
    let mut stmt = conn
        .prepare_cached(LIST_SQL)
        .map_err(sql("listing offline files"))?;
    let rows = stmt
        .query_map(
            params![to, i64::try_from(MAX_OFFLINE_FILES).unwrap_or(100)],
            |r| {
                Ok(OfflineFile {
                    from: r.get(0)?,
                    to: r.get(1)?,
                    task_id: r.get(2)?,
                    file_name: r.get(3)?,
                    size: r.get(4)?,
                    created: r.get(5)?,
                })
            },
        )
        .map_err(sql("listing offline files"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("reading offline files"))
}

/// Deletes the row of `task_id` between `from` and `to`; `false` when
/// there was none.
pub(super) fn delete(
    conn: &Connection,
    task_id: &str,
    from: UserId,
    to: UserId,
) -> StoreResult<bool> {
    let n = conn
        .prepare_cached(
            "DELETE FROM transmit_file WHERE task_id = ?1 AND from_id = ?2 AND to_id = ?3",
        )
        .and_then(|mut s| s.execute(params![task_id, from, to]))
        .map_err(sql("deleting an offline file"))?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::password::HashParams;
    use crate::store::{SqliteStore, Store, StoreOptions};

    const TASK: &str = "0a1b2c3d-0000-4000-8000-000000000001";

    fn store() -> (SqliteStore, Arc<AtomicU32>) {
        let clock = Arc::new(AtomicU32::new(1_000));
        let c = Arc::clone(&clock);
        let store = SqliteStore::open_in_memory(StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            clock: Arc::new(move || c.load(Ordering::SeqCst)),
            applier_nice: 0,
        })
        .unwrap();
        (store, clock)
    }

    fn file(from: UserId, to: UserId, task: &str) -> NewOfflineFile {
        NewOfflineFile {
            from,
            to,
            task_id: task.to_owned(),
            file_name: "report.pdf".to_owned(),
            size: 12_345,
        }
    }

    fn task(n: usize) -> String {
        format!("0a1b2c3d-0000-4000-8000-{n:012x}")
    }

    #[test]
    fn add_list_delete() {
        let (store, clock) = store();
        assert!(store.add_offline_file(&file(1, 2, TASK)).unwrap());
        // A resent 0x050b records nothing new.
        assert!(!store.add_offline_file(&file(1, 2, TASK)).unwrap());
        clock.store(1_005, Ordering::SeqCst);
        assert!(store.add_offline_file(&file(3, 2, &task(2))).unwrap());
        let waiting = store.offline_files(2).unwrap();
        assert_eq!(
            waiting
                .iter()
                .map(|f| (f.from, f.task_id.as_str(), f.created))
                .collect::<Vec<_>>(),
            [(1, TASK, 1_000), (3, task(2).as_str(), 1_005)],
            "oldest first"
        );
        assert_eq!(waiting[0].file_name, "report.pdf");
        assert_eq!(waiting[0].size, 12_345);
        assert!(store.offline_files(1).unwrap().is_empty());
        // Only the exact (task, from, to) row goes.
        assert!(!store.delete_offline_file(TASK, 2, 1).unwrap());
        assert!(!store.delete_offline_file(TASK, 9, 2).unwrap());
        assert!(store.delete_offline_file(TASK, 1, 2).unwrap());
        assert!(!store.delete_offline_file(TASK, 1, 2).unwrap());
        assert_eq!(store.offline_files(2).unwrap().len(), 1);
    }

    #[test]
    fn invalid_rows_are_refused() {
        let (store, _) = store();
        for bad in [
            file(1, 1, TASK),
            file(0, 2, TASK),
            file(1, 0, TASK),
            file(1, 2, "not-a-task"),
            NewOfflineFile {
                file_name: "x".repeat(MAX_FILE_NAME_LEN + 1),
                ..file(1, 2, TASK)
            },
        ] {
            assert!(
                matches!(store.add_offline_file(&bad), Err(StoreError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(store.offline_files(2).unwrap().is_empty());
    }

    #[test]
    fn a_receiver_has_at_most_max_files_waiting() {
        let (store, _) = store();
        for n in 0..MAX_OFFLINE_FILES {
            assert!(store.add_offline_file(&file(1, 2, &task(n))).unwrap());
        }
        let over = store.add_offline_file(&file(1, 2, &task(MAX_OFFLINE_FILES)));
        assert!(matches!(over, Err(StoreError::Invalid(_))), "{over:?}");
        assert_eq!(store.offline_files(2).unwrap().len(), MAX_OFFLINE_FILES);
        // Another receiver is not affected, and a deletion makes room.
        assert!(store.add_offline_file(&file(1, 3, &task(1000))).unwrap());
        assert!(store.delete_offline_file(&task(0), 1, 2).unwrap());
        assert!(
            store
                .add_offline_file(&file(1, 2, &task(MAX_OFFLINE_FILES)))
                .unwrap()
        );
    }
}
