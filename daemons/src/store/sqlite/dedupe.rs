//! Which messages are stored already: the dedupe keys of the latest
//! [`MAX_DEDUPE_KEYS`] messages, held in memory by the process that writes
//! messages.
//!
//! # Why in memory
//!
//! Deciding a resend from SQLite cost a B-tree lookup per message on the
//! store thread and, with the table's unique index, two B-tree inserts and
//! (once the table was full) two deletes per message on the applier: with
//! the keys taken out, the same run delivered 120,000–147,000 messages/s
//! instead of 72,000–87,000 (docs/performance.md, "The dedupe index in
//! memory"). Here a lookup is a hash-map probe, and the table
//! (`message_dedupe`) is only where the keys outlive the process: rows are
//! appended in `seq` order (one B-tree, always at its end), pruned from its
//! start, and read back into this index when the store opens.
//!
//! # What a key is here
//!
//! A message is named by a 128-bit BLAKE2b digest of its session type,
//! sender, recipient and key, so the index holds fixed-size entries (a
//! million take about 75 MiB: the map's 2 Mi buckets of 25 bytes and the
//! order's 24 bytes each) and nobody can make two names collide.
//!
//! # Who may use it
//!
//! Only the process that owns the data directory's message log stores
//! messages (another one gets [`StoreError::LogElsewhere`]), so this
//! index sees every key stored since it was loaded.

use std::collections::{HashMap, VecDeque};

use blake2::Digest as _;
use rusqlite::{Connection, params};

use super::super::{MAX_DEDUPE_KEYS, MsgId, SessionType, StoreError, StoreResult, UserId};
use super::{dedupe_cutoff, sql};

/// The name of one message in the index.
pub(crate) type Name = [u8; 16];

/// The name of the message `from` sent to `to` (a user or a group, told
/// apart by `session_type`) with idempotency key `key`.
pub(crate) fn name(session_type: SessionType, from: UserId, to: UserId, key: &[u8]) -> Name {
    let mut h = blake2::Blake2b::<blake2::digest::consts::U16>::new();
    h.update(session_type.as_u32().to_be_bytes());
    h.update(from.to_be_bytes());
    h.update(to.to_be_bytes());
    // Keys are at most MAX_DEDUPE_KEY_LEN (32) bytes, checked before this.
    h.update([u8::try_from(key.len()).unwrap_or(u8::MAX)]);
    h.update(key);
    h.finalize().into()
}

/// What the index knows of one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remembered {
    msg_id: MsgId,
    /// The store's clock when it was stored.
    created: u32,
}

/// The dedupe keys of the latest messages, newest winning.
#[derive(Debug)]
pub(crate) struct DedupeIndex {
    map: HashMap<Name, Remembered>,
    /// Every name remembered, oldest first, to forget them in that order.
    /// A name stored again after it expired is in here twice; only the
    /// entry the map still holds removes it.
    order: VecDeque<(Name, Remembered)>,
    /// Most names remembered.
    max: usize,
}

impl Default for DedupeIndex {
    fn default() -> Self {
        Self::with_max(usize::try_from(MAX_DEDUPE_KEYS).unwrap_or(usize::MAX))
    }
}

impl DedupeIndex {
    /// An empty index remembering at most `max` names.
    pub(crate) fn with_max(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    /// The index of what `message_dedupe` holds: its newest `max` rows, in
    /// the order they were stored.
    pub(crate) fn load(conn: &Connection, max: usize) -> StoreResult<Self> {
        let mut index = Self::with_max(max);
        let mut stmt = conn
            .prepare(
                "SELECT session_type, from_id, to_id, key, msg_id, created FROM message_dedupe
                 WHERE seq > (SELECT coalesce(max(seq), 0) FROM message_dedupe) - ?1
                 ORDER BY seq",
            )
            .map_err(sql("loading dedupe keys"))?;
        let mut rows = stmt
            .query(params![i64::try_from(max).unwrap_or(i64::MAX)])
            .map_err(sql("loading dedupe keys"))?;
        while let Some(row) = rows.next().map_err(sql("loading dedupe keys"))? {
            let kind: u32 = row.get(0).map_err(sql("loading dedupe keys"))?;
            let session_type = SessionType::from_u32(kind).ok_or(StoreError::Invalid(
                "a dedupe key of an unknown session type",
            ))?;
            let from: UserId = row.get(1).map_err(sql("loading dedupe keys"))?;
            let to: UserId = row.get(2).map_err(sql("loading dedupe keys"))?;
            let key: Vec<u8> = row.get(3).map_err(sql("loading dedupe keys"))?;
            let msg_id: MsgId = row.get(4).map_err(sql("loading dedupe keys"))?;
            let created: u32 = row.get(5).map_err(sql("loading dedupe keys"))?;
            index.remember(name(session_type, from, to, &key), msg_id, created);
        }
        Ok(index)
    }

    /// The id the message named `name` was stored under, if that was within
    /// the dedupe window before `now`.
    pub(crate) fn find(&self, name: &Name, now: u32) -> Option<MsgId> {
        self.map
            .get(name)
            .filter(|r| r.created >= dedupe_cutoff(now))
            .map(|r| r.msg_id)
    }

    /// Remembers that the message named `name` was stored under `msg_id` at
    /// `created`, forgetting the oldest names beyond the bound and those
    /// that expired by then.
    pub(crate) fn remember(&mut self, name: Name, msg_id: MsgId, created: u32) {
        let entry = Remembered { msg_id, created };
        self.map.insert(name, entry);
        self.order.push_back((name, entry));
        let cutoff = dedupe_cutoff(created);
        while let Some(&(oldest, at)) = self.order.front() {
            if self.order.len() <= self.max && at.created >= cutoff {
                break;
            }
            self.order.pop_front();
            if self.map.get(&oldest) == Some(&at) {
                self.map.remove(&oldest);
            }
        }
    }

    /// Names remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DEDUPE_WINDOW_SECS;

    fn n(i: u32) -> Name {
        name(SessionType::Single, i, i + 1, &i.to_be_bytes())
    }

    #[test]
    fn names_differ_by_every_part() {
        let base = name(SessionType::Single, 1, 2, b"k");
        assert_ne!(base, name(SessionType::Group, 1, 2, b"k"));
        assert_ne!(base, name(SessionType::Single, 2, 1, b"k"));
        assert_ne!(base, name(SessionType::Single, 1, 3, b"k"));
        assert_ne!(base, name(SessionType::Single, 1, 2, b"K"));
        // The key's length is part of the name: no two splits collide.
        assert_ne!(
            name(SessionType::Single, 1, 2, b""),
            name(SessionType::Single, 1, 2, b"\0")
        );
        assert_eq!(base, name(SessionType::Single, 1, 2, b"k"));
    }

    #[test]
    fn finds_within_the_window_only() {
        let mut index = DedupeIndex::with_max(10);
        index.remember(n(1), 7, 1_000);
        assert_eq!(index.find(&n(1), 1_000), Some(7));
        assert_eq!(index.find(&n(1), 1_000 + DEDUPE_WINDOW_SECS), Some(7));
        assert_eq!(index.find(&n(1), 1_001 + DEDUPE_WINDOW_SECS), None);
        assert_eq!(index.find(&n(2), 1_000), None);
    }

    #[test]
    fn forgets_the_oldest_beyond_the_bound() {
        let mut index = DedupeIndex::with_max(3);
        for i in 0..5 {
            index.remember(n(i), i, 100);
        }
        assert_eq!(index.len(), 3);
        assert_eq!(index.find(&n(0), 100), None);
        assert_eq!(index.find(&n(1), 100), None);
        for i in 2..5 {
            assert_eq!(index.find(&n(i), 100), Some(i));
        }
    }

    #[test]
    fn forgets_expired_names_as_newer_ones_come() {
        let mut index = DedupeIndex::with_max(100);
        index.remember(n(1), 1, 100);
        index.remember(n(2), 2, 100 + DEDUPE_WINDOW_SECS + 1);
        assert_eq!(index.len(), 1);
        assert_eq!(index.order.len(), 1);
    }

    #[test]
    fn a_name_stored_again_survives_its_first_entry() {
        let mut index = DedupeIndex::with_max(2);
        index.remember(n(1), 1, 100);
        // Expired, then stored again under a new id.
        let later = 200 + DEDUPE_WINDOW_SECS;
        index.remember(n(1), 9, later);
        assert_eq!(index.find(&n(1), later), Some(9));
        // Pushing the first entry out leaves the second.
        index.remember(n(2), 2, later);
        assert_eq!(index.find(&n(1), later), Some(9));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn loads_the_newest_rows_in_order() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE message_dedupe (seq INTEGER PRIMARY KEY, session_type, from_id,
                 to_id, key, msg_id, created);",
        )
        .unwrap();
        for (i, (id, key)) in [(1, b"a"), (2, b"b"), (3, b"a")].iter().enumerate() {
            conn.execute(
                "INSERT INTO message_dedupe VALUES (?1, 1, 5, 6, ?2, ?3, 100)",
                params![i64::try_from(i).unwrap() + 1, &key[..], id],
            )
            .unwrap();
        }
        let all = DedupeIndex::load(&conn, 10).unwrap();
        let a = name(SessionType::Single, 5, 6, b"a");
        let b = name(SessionType::Single, 5, 6, b"b");
        assert_eq!(all.find(&a, 100), Some(3), "the later row wins");
        assert_eq!(all.find(&b, 100), Some(2));
        let newest = DedupeIndex::load(&conn, 1).unwrap();
        assert_eq!(newest.find(&a, 100), Some(3));
        assert_eq!(newest.find(&b, 100), None);
    }
}
