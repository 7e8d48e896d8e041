//! `teamtalk import`: a TeamTalk deployment (MySQL + Redis, as the C++
//! db_proxy or a [`MysqlStore`] keeps it) copied into the embedded SQLite
//! store, ids kept: users with their password form, departments, every
//! conversation and its messages, recent sessions, unread counts, groups
//! with their members, read points, shields and messages, offline files.
//!
//! Resumable: every row goes in with `INSERT OR IGNORE` (or an upsert that
//! only moves counters forward) in transactions of a bounded size, so a run
//! that stopped leaves what it committed and the next run skips it.
//! Message ids continue after the larger of the last row and TeamTalk's
//! Redis counter, so no id the C++ servers handed out is given again.

use std::collections::HashMap;

use mysql::Row;
use mysql::prelude::Queryable;
use rusqlite::params;

use super::{MysqlStore, groups, my, shard, take};
use crate::store::{SqliteStore, StoreError, StoreResult};

/// Rows per SQLite transaction.
const CHUNK: usize = 1000;

/// `IMMessage_N`: msgId, fromId, toId, type, content, status, created.
type MessageRow = (u32, u32, u32, u32, Vec<u8>, u32, u32);
/// `IMTransmitFile`: fromId, toId, taskId, fileName, size, status, created,
/// updated.
type FileRow = (u32, u32, String, String, u32, u32, u32, u32);
/// `IMGroup`: id, name, avatar, creator, type, status, version, lastChated,
/// created, updated.
type GroupRow = (u32, String, String, u32, u32, u32, u32, u32, u32, u32);

/// What an import copied (rows already present count too: a resumed run
/// reports the whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Departments.
    pub departments: u64,
    /// Users.
    pub users: u64,
    /// Conversations (pairs of users who talked).
    pub conversations: u64,
    /// Single-chat messages.
    pub messages: u64,
    /// Recent-session rows.
    pub sessions: u64,
    /// (reader, peer) unread counters.
    pub unread: u64,
    /// Groups.
    pub groups: u64,
    /// Group members (current and former).
    pub group_members: u64,
    /// Group messages.
    pub group_messages: u64,
    /// Offline files.
    pub offline_files: u64,
}

fn sq(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { context, source }
}

fn table_exists(conn: &mut mysql::PooledConn, name: &str) -> StoreResult<bool> {
    let n: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = DATABASE() AND table_name = ?",
            (name,),
        )
        .map_err(my("reading the schema"))?;
    Ok(n.unwrap_or(0) > 0)
}

/// Runs `rows` through `insert` in SQLite transactions of [`CHUNK`].
fn in_chunks<T>(
    target: &SqliteStore,
    rows: Vec<T>,
    mut insert: impl FnMut(&rusqlite::Transaction<'_>, &T) -> rusqlite::Result<()>,
) -> StoreResult<u64> {
    let mut n = 0u64;
    for chunk in rows.chunks(CHUNK) {
        let mut conn = target.lock()?;
        let tx = conn.transaction().map_err(sq("starting an import batch"))?;
        for row in chunk {
            insert(&tx, row).map_err(sq("importing a row"))?;
            n += 1;
        }
        tx.commit().map_err(sq("committing an import batch"))?;
    }
    Ok(n)
}

/// Copies `source` into `target` (see the [module docs](self)), calling
/// `progress(stage, rows so far)` as it goes.
///
/// # Errors
/// The first failing read or write; what was committed stays (run again to
/// resume).
pub fn import(
    source: &MysqlStore,
    target: &SqliteStore,
    progress: &mut dyn FnMut(&str, u64),
) -> StoreResult<ImportReport> {
    let mut report = ImportReport::default();
    let mut db = source.conn()?;

    // Departments and users, ids kept.
    let depts: Vec<(u32, String, u32, u32, u32, u32, u32)> = db
        .exec(
            "SELECT id, departName, priority, parentId, status, created, updated FROM IMDepart
             ORDER BY id",
            (),
        )
        .map_err(my("reading departments"))?;
    report.departments = in_chunks(target, depts, |tx, d| {
        tx.execute(
            "INSERT OR IGNORE INTO department (id, name, priority, parent_id, status, created,
                                               updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![d.0, d.1, d.2, d.3, d.4, d.5, d.6],
        )
        .map(drop)
    })?;
    progress("departments", report.departments);

    let phc = if table_exists(&mut db, "rs_user_password")? {
        "(SELECT p.phc FROM rs_user_password p WHERE p.userId = u.id)"
    } else {
        "NULL"
    };
    let rows: Vec<Row> = db
        .exec(
            format!(
                "SELECT u.id, u.name, u.nick, u.sex, u.departId, u.avatar, u.email, u.phone,
                        u.domain, u.status, u.sign_info, u.push_shield_status, u.created,
                        u.updated, u.password, u.salt, {phc}
                 FROM IMUser u ORDER BY u.id"
            ),
            (),
        )
        .map_err(my("reading users"))?;
    let mut users = Vec::with_capacity(rows.len());
    for mut r in rows {
        let user = super::user_from_row(&mut r)?;
        let hash: String = take(&mut r, 14)?;
        let salt: String = take(&mut r, 15)?;
        let phc: Option<String> = take(&mut r, 16).ok().filter(|p: &String| !p.is_empty());
        // Ours: the Argon2 string, salt NULL; TeamTalk's: hash and salt.
        let (password, salt) = match phc {
            Some(phc) => (phc, None),
            None => (hash, Some(salt)),
        };
        users.push((user, password, salt));
    }
    let user_ids: Vec<u32> = users.iter().map(|u| u.0.id).collect();
    report.users = in_chunks(target, users, |tx, (u, password, salt)| {
        tx.execute(
            "INSERT OR IGNORE INTO user (id, name, nick, sex, dept_id, avatar, email, phone,
                 domain, status, sign_info, push_shield, password, salt, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                u.id,
                u.name,
                u.nick,
                u.sex,
                u.dept_id,
                u.avatar,
                u.email,
                u.phone,
                u.domain,
                u.status,
                u.sign_info,
                i64::from(u.push_shield),
                password,
                salt,
                u.created,
                u.updated
            ],
        )
        .map(drop)
    })?;
    progress("users", report.users);

    // Conversations and their messages, one conversation at a time.
    let relations: Vec<(u32, u32, u32, u32)> = db
        .exec(
            "SELECT MIN(id), smallId, bigId, MIN(created) FROM IMRelationShip WHERE status = 0
             GROUP BY smallId, bigId ORDER BY MIN(id)",
            (),
        )
        .map_err(my("reading conversations"))?;
    for (relate, small, big, created) in relations {
        let counter: Option<i64> = source.cache.unread.run("reading a message counter", |c| {
            redis::cmd("GET").arg(format!("msg_id_{relate}")).query(c)
        })?;
        let mut after = 0u32;
        let mut last = u32::try_from(counter.unwrap_or(0)).unwrap_or(0);
        loop {
            let page: Vec<MessageRow> = db
                .exec(
                    format!(
                        "SELECT msgId, fromId, toId, type, content, status, created
                         FROM IMMessage_{} WHERE relateId = ? AND msgId > ?
                         ORDER BY msgId LIMIT ?",
                        shard(relate)
                    ),
                    (relate, after, CHUNK),
                )
                .map_err(my("reading messages"))?;
            let Some(&(top, ..)) = page.last() else { break };
            after = top;
            last = last.max(top);
            let mut conn = target.lock()?;
            let tx = conn.transaction().map_err(sq("starting an import batch"))?;
            tx.execute(
                "INSERT INTO relation (small_id, big_id, last_msg_id, created)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (small_id, big_id)
                 DO UPDATE SET last_msg_id = max(last_msg_id, excluded.last_msg_id)",
                params![small, big, last, created],
            )
            .map_err(sq("importing a conversation"))?;
            let rel: i64 = tx
                .query_row(
                    "SELECT id FROM relation WHERE small_id = ?1 AND big_id = ?2",
                    params![small, big],
                    |r| r.get(0),
                )
                .map_err(sq("importing a conversation"))?;
            for (msg_id, from, to, kind, content, status, at) in &page {
                tx.execute(
                    "INSERT OR IGNORE INTO message (relation_id, msg_id, from_id, to_id,
                         msg_type, content, status, created)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![rel, msg_id, from, to, kind, content, status, at],
                )
                .map_err(sq("importing a message"))?;
            }
            tx.commit().map_err(sq("committing an import batch"))?;
            report.messages += page.len() as u64;
        }
        // The counter moves forward even when no row is left.
        target
            .lock()?
            .execute(
                "INSERT INTO relation (small_id, big_id, last_msg_id, created)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (small_id, big_id)
                 DO UPDATE SET last_msg_id = max(last_msg_id, excluded.last_msg_id)",
                params![small, big, last, created],
            )
            .map_err(sq("importing a conversation"))?;
        report.conversations += 1;
        if report.conversations % 100 == 0 {
            progress("messages", report.messages);
        }
    }
    progress("conversations", report.conversations);
    progress("messages", report.messages);

    // Recent sessions (single chat; group sessions come from the members).
    let sessions: Vec<(u32, u32, u32, u32, u32)> = db
        .exec(
            "SELECT userId, peerId, COALESCE(status, 0), created, MAX(updated)
             FROM IMRecentSession WHERE type = 1
             GROUP BY userId, peerId, COALESCE(status, 0), created",
            (),
        )
        .map_err(my("reading sessions"))?;
    report.sessions = in_chunks(target, sessions, |tx, s| {
        tx.execute(
            "INSERT INTO session (user_id, peer_id, session_type, status, created, updated)
             VALUES (?1, ?2, 1, ?3, ?4, ?5)
             ON CONFLICT (user_id, peer_id, session_type)
             DO UPDATE SET status = excluded.status, updated = excluded.updated
             WHERE excluded.updated >= session.updated",
            params![s.0, s.1, s.2, s.3, s.4],
        )
        .map(drop)
    })?;
    progress("sessions", report.sessions);

    // Unread counters, per user.
    let mut counters = Vec::new();
    for chunk in user_ids.chunks(CHUNK) {
        let maps: Vec<HashMap<String, i64>> =
            source.cache.unread.run("reading unread counts", |c| {
                let mut pipe = redis::pipe();
                for u in chunk {
                    pipe.cmd("HGETALL").arg(format!("unread_{u}"));
                }
                pipe.query(c)
            })?;
        for (&user, map) in chunk.iter().zip(maps) {
            for (peer, n) in map {
                if let (Ok(peer), Ok(n)) = (peer.parse::<u32>(), u32::try_from(n))
                    && n > 0
                {
                    counters.push((user, peer, n));
                }
            }
        }
    }
    report.unread = in_chunks(target, counters, |tx, c| {
        tx.execute(
            "INSERT INTO single_unread (user_id, peer_id, count) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, peer_id) DO UPDATE SET count = excluded.count",
            params![c.0, c.1, c.2],
        )
        .map(drop)
    })?;
    progress("unread", report.unread);

    import_groups(source, target, &mut db, &mut report, progress)?;

    if table_exists(&mut db, "IMTransmitFile")? {
        let files: Vec<FileRow> = db
            .exec(
                "SELECT fromId, toId, taskId, fileName, size, status, created, updated
                 FROM IMTransmitFile ORDER BY id",
                (),
            )
            .map_err(my("reading offline files"))?;
        report.offline_files = in_chunks(target, files, |tx, f| {
            tx.execute(
                "INSERT OR IGNORE INTO transmit_file (from_id, to_id, task_id, file_name, size,
                                                     status, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7],
            )
            .map(drop)
        })?;
        progress("offline files", report.offline_files);
    }
    Ok(report)
}

/// Groups, members (read points from TeamTalk's counters, shields from
/// `group_set_`) and group messages.
fn import_groups(
    source: &MysqlStore,
    target: &SqliteStore,
    db: &mut mysql::PooledConn,
    report: &mut ImportReport,
    progress: &mut dyn FnMut(&str, u64),
) -> StoreResult<()> {
    let ours = table_exists(db, "rs_group_member")?;
    let list: Vec<GroupRow> = db
        .exec(
            "SELECT id, name, avatar, creator, type, status, version, lastChated, created,
                    updated
             FROM IMGroup ORDER BY id",
            (),
        )
        .map_err(my("reading groups"))?;
    for g in list {
        let gid = g.0;
        let (counter, total): (Option<i64>, Option<i64>) =
            source.cache.unread.run("reading a group's counters", |c| {
                redis::pipe()
                    .cmd("GET")
                    .arg(format!("group_msg_id_{gid}"))
                    .cmd("HGET")
                    .arg(groups::total_key(gid))
                    .arg("count")
                    .query(c)
            })?;
        let top: Option<Option<u32>> = db
            .exec_first(
                format!(
                    "SELECT MAX(msgId) FROM IMGroupMessage_{} WHERE groupId = ?",
                    shard(gid)
                ),
                (gid,),
            )
            .map_err(my("reading a group"))?;
        let last = top
            .flatten()
            .unwrap_or(0)
            .max(u32::try_from(counter.unwrap_or(0)).unwrap_or(0));
        let total = total.unwrap_or(0);
        {
            let conn = target.lock()?;
            conn.execute(
                "INSERT INTO chat_group (id, name, avatar, creator, group_type, status, version,
                                         last_msg_id, last_chated, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET last_msg_id = max(last_msg_id, excluded.last_msg_id)",
                params![
                    gid,
                    g.1,
                    g.2,
                    g.3,
                    g.4,
                    // TeamTalk: 0 live; anything else is gone.
                    u32::from(g.5 != 0),
                    g.6,
                    last,
                    g.7,
                    g.8,
                    g.9
                ],
            )
            .map_err(sq("importing a group"))?;
        }
        report.groups += 1;

        let members: Vec<(u32, u32, u32, u32)> = db
            .exec(
                "SELECT userId, MIN(status), MIN(created), MAX(updated) FROM IMGroupMember
                 WHERE groupId = ? GROUP BY userId ORDER BY userId",
                (gid,),
            )
            .map_err(my("reading group members"))?;
        let points: HashMap<u32, (u32, Option<u32>)> = if ours {
            let rows: Vec<(u32, u32, Option<u32>)> = db
                .exec(
                    "SELECT userId, joinedMsgId, hiddenMsgId FROM rs_group_member
                     WHERE groupId = ?",
                    (gid,),
                )
                .map_err(my("reading join points"))?;
            rows.into_iter().map(|(u, j, h)| (u, (j, h))).collect()
        } else {
            HashMap::new()
        };
        let mut member_rows = Vec::with_capacity(members.len());
        for chunk in members.chunks(CHUNK) {
            let snapshots: Vec<Option<i64>> =
                source.cache.unread.run("reading read points", |c| {
                    let mut pipe = redis::pipe();
                    for m in chunk {
                        pipe.cmd("HGET")
                            .arg(groups::snapshot_key(m.0, gid))
                            .arg("count");
                    }
                    pipe.query(c)
                })?;
            let shields: Vec<Option<String>> =
                source.cache.group_set.run("reading shields", |c| {
                    let mut cmd = redis::cmd("HMGET");
                    cmd.arg(format!("group_set_{gid}"));
                    for m in chunk {
                        cmd.arg(format!("{}_1", m.0));
                    }
                    cmd.query(c)
                })?;
            for ((m, seen), shield) in chunk.iter().zip(snapshots).zip(shields) {
                let unread = u32::try_from(total.saturating_sub(seen.unwrap_or(0)).max(0))
                    .unwrap_or(u32::MAX);
                let (joined_id, hidden) = points.get(&m.0).copied().unwrap_or((0, None));
                member_rows.push((
                    m.0,
                    u32::from(m.1 != 0),
                    shield.is_some_and(|s| s.trim() != "0" && !s.is_empty()),
                    last.saturating_sub(unread).max(joined_id),
                    joined_id,
                    hidden,
                    m.3,
                ));
            }
        }
        report.group_members += in_chunks(target, member_rows, |tx, m| {
            tx.execute(
                "INSERT OR IGNORE INTO group_member (group_id, user_id, status, shield,
                     read_msg_id, joined_msg_id, hidden_msg_id, joined, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![gid, m.0, m.1, i64::from(m.2), m.3, m.4, m.5, m.6],
            )
            .map(drop)
        })?;

        let mut after = 0u32;
        loop {
            let page: Vec<(u32, u32, u32, Vec<u8>, u32, u32)> = db
                .exec(
                    format!(
                        "SELECT msgId, userId, type, content, status, created
                         FROM IMGroupMessage_{} WHERE groupId = ? AND msgId > ?
                         ORDER BY msgId LIMIT ?",
                        shard(gid)
                    ),
                    (gid, after, CHUNK),
                )
                .map_err(my("reading group messages"))?;
            let Some(&(top, ..)) = page.last() else { break };
            after = top;
            report.group_messages += in_chunks(target, page, |tx, m| {
                tx.execute(
                    "INSERT OR IGNORE INTO group_message (group_id, msg_id, from_id, msg_type,
                                                         content, status, created)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![gid, m.0, m.1, m.2, m.3, m.4, m.5],
                )
                .map(drop)
            })?;
        }
    }
    progress("groups", report.groups);
    progress("group members", report.group_members);
    progress("group messages", report.group_messages);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::password::{HashParams, md5_hex};
    use crate::store::mysql_redis::testing;
    use crate::store::{
        Actor, GroupType, MemberChange, NewGroup, NewMessage, NewUser, SessionType, Store,
        StoreOptions,
    };

    fn options() -> StoreOptions {
        StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            clock: Arc::new(|| 1_700_000_000),
            applier_nice: 0,
        }
    }

    fn text(from: u32, to: u32, session_type: SessionType, body: &str) -> NewMessage {
        NewMessage {
            from,
            to,
            session_type,
            msg_type: 1,
            create_time: 1_700_000_000,
            data: body.as_bytes().to_vec(),
            dedupe_key: None,
        }
    }

    #[test]
    fn a_deployment_is_copied_and_a_second_run_adds_nothing() {
        let Some(config) = testing::fresh_config() else {
            return;
        };
        let src = MysqlStore::open(&config, options()).unwrap();
        let dept = src.add_department("R&D", 1, 0).unwrap();
        let new_user = |name: &str| NewUser {
            name: name.into(),
            nick: name.into(),
            dept_id: dept,
            ..NewUser::default()
        };
        let pw = md5_hex(b"pw");
        let a = src.add_user(&new_user("argon"), &pw).unwrap();
        let t = src
            .import_teamtalk_user(
                &new_user("salted"),
                &crate::password::teamtalk_salted(&pw, "42"),
                "42",
            )
            .unwrap();
        let c = src.add_user(&new_user("third"), &pw).unwrap();
        for n in 0..5 {
            src.store_message(&text(a, t, SessionType::Single, &format!("m{n}")))
                .unwrap();
        }
        src.clear_unread(t, a).unwrap();
        src.store_message(&text(a, t, SessionType::Single, "unread"))
            .unwrap();
        let g = src
            .create_group(&NewGroup {
                name: "g".into(),
                avatar: String::new(),
                creator: a,
                group_type: GroupType::Tmp,
                members: vec![t],
            })
            .unwrap();
        src.store_message(&text(a, g.id, SessionType::Group, "before c"))
            .unwrap();
        src.change_group_members(Actor::Admin, g.id, MemberChange::Add, &[c])
            .unwrap();
        src.store_message(&text(t, g.id, SessionType::Group, "after c"))
            .unwrap();
        src.set_group_shield(c, g.id, true).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let dst = SqliteStore::open_with(dir.path(), options()).unwrap();
        let mut stages = Vec::new();
        let report = import(&src, &dst, &mut |stage, _| stages.push(stage.to_owned())).unwrap();
        assert_eq!(
            (
                report.users,
                report.messages,
                report.groups,
                report.group_messages
            ),
            (3, 6, 1, 2)
        );
        assert!(stages.contains(&"messages".to_owned()), "{stages:?}");

        // Both password forms still log in, under the same ids.
        assert_eq!(dst.verify_login("argon", &pw).unwrap().unwrap().id, a);
        assert_eq!(dst.verify_login("salted", &pw).unwrap().unwrap().id, t);
        assert_eq!(dst.departments_updated_since(0).unwrap()[0].id, dept);
        // History, unread and sessions as the source has them.
        assert_eq!(
            dst.message_list(t, a, 0, 10).unwrap(),
            src.message_list(t, a, 0, 10).unwrap()
        );
        assert_eq!(dst.unread(t).unwrap(), src.unread(t).unwrap());
        assert_eq!(dst.unread(c).unwrap(), src.unread(c).unwrap());
        assert_eq!(
            dst.recent_sessions(a, 0).unwrap(),
            src.recent_sessions(a, 0).unwrap()
        );
        // Groups: members, shields, what each member sees.
        let (gs, gd) = (
            src.group(g.id).unwrap().unwrap(),
            dst.group(g.id).unwrap().unwrap(),
        );
        assert_eq!(
            (gd.member_ids(), gd.version, gd.last_msg_id),
            (gs.member_ids(), gs.version, gs.last_msg_id)
        );
        assert!(gd.member(c).unwrap().shield);
        assert_eq!(
            dst.group_message_list(c, g.id, 0, 10).unwrap(),
            src.group_message_list(c, g.id, 0, 10).unwrap(),
            "the later member sees only what came after joining"
        );
        // New messages continue the ids.
        assert_eq!(
            dst.store_message(&text(t, a, SessionType::Single, "next"))
                .unwrap()
                .msg_id(),
            7
        );

        // Run again: nothing is added twice.
        let again = import(&src, &dst, &mut |_, _| {}).unwrap();
        assert_eq!(again.users, 3);
        assert_eq!(dst.message_list(t, a, 0, 50).unwrap().len(), 7);
        assert_eq!(dst.group_message_list(a, g.id, 0, 50).unwrap().len(), 2);
    }
}
