//! Groups on TeamTalk's `IMGroup`, `IMGroupMember` and
//! `IMGroupMessage_<gid % 8>`, with its Redis keys, under the model of
//! [`crate::store::groups`].
//!
//! - Ids: `INCR group_msg_id_<gid>`; the counter is the group's last id.
//! - Unread: `<gid>_im_group_msg {count}` (messages posted) minus the
//!   member's snapshot `<uid>_<gid>_im_user_group {count}`, which a read ack,
//!   a post and (ours) joining set to the total.
//! - Members: `IMGroupMember.status = 0`; Redis `group_member_<gid>` (uid →
//!   join time) is kept beside it for the C++ db_proxy, which reads it; we
//!   read MySQL, in the transaction that stores a message.
//! - Shields: Redis `group_set_<gid>`, field `<uid>_1`.
//! - Join and hide points: our `rs_group_member`.

use mysql::prelude::Queryable;
use mysql::{PooledConn, Row, Transaction};

use super::{MysqlStore, latest_from_row, my, shard, take, tx};
use crate::store::groups::{self as model, MAX_GROUPS_PER_USER, check_member_change};
use crate::store::{
    Actor, Group, GroupId, GroupMember, GroupType, GroupVersion, LatestMessage, MAX_GROUP_MEMBERS,
    MAX_LIST_BODY_BYTES, MAX_MSG_LIST, MAX_MSGS_BY_ID, MemberChange, MembersChanged, MsgId,
    NewGroup, NewMessage, StoreError, StoreResult, StoredMessage, UserId,
};

/// The shield type in `group_set_<gid>` fields (TeamTalk's push shield).
const SHIELD_TYPE: u32 = 1;

/// The group's message total (`<gid>_im_group_msg`).
pub(super) fn total_key(group: GroupId) -> String {
    format!("{group}_im_group_msg")
}

/// A member's snapshot of the total (`<uid>_<gid>_im_user_group`).
pub(super) fn snapshot_key(user: UserId, group: GroupId) -> String {
    format!("{user}_{group}_im_user_group")
}

fn counter_key(group: GroupId) -> String {
    format!("group_msg_id_{group}")
}

/// What a member may read: after `floor` (their join point) up to `last`.
struct Readable {
    last: MsgId,
    floor: MsgId,
}

/// The group's last id (its counter), 0 before the first message.
fn last_id(store: &MysqlStore, group: GroupId) -> StoreResult<MsgId> {
    let v: Option<i64> = store.cache.unread.run("reading a group's last id", |c| {
        redis::cmd("GET").arg(counter_key(group)).query(c)
    })?;
    Ok(v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))
}

/// Whether the group exists (status 0) and whether `user` is a member:
/// `None` when no group, `Some(false)` for a non-member.
fn membership<Q: Queryable>(q: &mut Q, user: UserId, group: GroupId) -> StoreResult<Option<bool>> {
    let live: Option<u32> = q
        .exec_first("SELECT status FROM IMGroup WHERE id = ?", (group,))
        .map_err(my("reading a group"))?;
    if live != Some(0) {
        return Ok(None);
    }
    let member: Option<u32> = q
        .exec_first(
            "SELECT 1 FROM IMGroupMember WHERE groupId = ? AND userId = ? AND status = 0 LIMIT 1",
            (group, user),
        )
        .map_err(my("reading a group membership"))?;
    Ok(Some(member.is_some()))
}

/// The member's join point (0 for members TeamTalk added).
fn floor<Q: Queryable>(q: &mut Q, user: UserId, group: GroupId) -> StoreResult<MsgId> {
    let v: Option<u32> = q
        .exec_first(
            "SELECT joinedMsgId FROM rs_group_member WHERE groupId = ? AND userId = ?",
            (group, user),
        )
        .map_err(my("reading a join point"))?;
    Ok(v.unwrap_or(0))
}

fn readable(store: &MysqlStore, user: UserId, group: GroupId) -> StoreResult<Readable> {
    let mut conn = store.conn()?;
    if membership(&mut conn, user, group)? != Some(true) {
        return Err(StoreError::NotMember { user, group });
    }
    Ok(Readable {
        floor: floor(&mut conn, user, group)?,
        last: last_id(store, group)?,
    })
}

/// Refuses a group message whose sender is not a member now. The member's
/// row is read with a shared lock, so a removal committing meanwhile waits
/// for this message's transaction or is seen by it.
pub(super) fn check_poster(
    tx: &mut Transaction<'_>,
    from: UserId,
    group: GroupId,
) -> StoreResult<()> {
    let live: Option<u32> = tx
        .exec_first("SELECT status FROM IMGroup WHERE id = ?", (group,))
        .map_err(my("reading a group"))?;
    if live != Some(0) {
        return Err(StoreError::NoSuchGroup(group));
    }
    let member: Option<u32> = tx
        .exec_first(
            "SELECT 1 FROM IMGroupMember WHERE groupId = ? AND userId = ? AND status = 0
             LIMIT 1 LOCK IN SHARE MODE",
            (group, from),
        )
        .map_err(my("reading a group membership"))?;
    if member.is_none() {
        return Err(StoreError::NotMember { user: from, group });
    }
    Ok(())
}

/// Inserts a checked group message under its id (the group's chat time
/// moves after the commit, see `MysqlStore::apply_after`).
pub(super) fn insert_message(
    tx: &mut Transaction<'_>,
    msg: &NewMessage,
    id: MsgId,
) -> StoreResult<()> {
    tx.exec_drop(
        format!(
            "INSERT INTO IMGroupMessage_{} (groupId, userId, msgId, content, type, status,
                                            created, updated)
             VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            shard(msg.to)
        ),
        (
            msg.to,
            msg.from,
            id,
            &msg.data,
            msg.msg_type,
            msg.create_time,
            msg.create_time,
        ),
    )
    .map_err(my("inserting a group message"))?;
    Ok(())
}

/// The group's latest message if newer than `floor`; empty otherwise.
pub(super) fn latest_message(
    conn: &mut PooledConn,
    group: GroupId,
    floor: MsgId,
) -> StoreResult<LatestMessage> {
    let row: Option<Row> = conn
        .exec_first(
            format!(
                "SELECT msgId, userId, type, content FROM IMGroupMessage_{}
                 WHERE groupId = ? AND status = 0 AND msgId > ? ORDER BY msgId DESC LIMIT 1",
                shard(group)
            ),
            (group, floor),
        )
        .map_err(my("reading a group's latest message"))?;
    latest_from_row(row)
}

/// The live groups `user` is in: (group, lastChated, join time), by id.
fn memberships(conn: &mut PooledConn, user: UserId) -> StoreResult<Vec<(GroupId, u32, u32)>> {
    conn.exec(
        "SELECT g.id, g.lastChated, MAX(m.updated)
         FROM IMGroupMember m JOIN IMGroup g ON g.id = m.groupId
         WHERE m.userId = ? AND m.status = 0 AND g.status = 0
         GROUP BY g.id, g.lastChated ORDER BY g.id LIMIT ?",
        (user, u64::try_from(MAX_GROUPS_PER_USER).unwrap_or(u64::MAX)),
    )
    .map_err(my("listing a user's groups"))
}

/// `user`'s unread count per group with unread messages, by group id.
pub(super) fn unread_counts(
    store: &MysqlStore,
    conn: &mut PooledConn,
    user: UserId,
) -> StoreResult<Vec<(GroupId, u32)>> {
    let groups = memberships(conn, user)?;
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let counts: Vec<(Option<i64>, Option<i64>)> =
        store.cache.unread.run("reading group unread counts", |c| {
            let mut pipe = redis::pipe();
            for &(g, _, _) in &groups {
                pipe.cmd("HGET").arg(total_key(g)).arg("count");
                pipe.cmd("HGET").arg(snapshot_key(user, g)).arg("count");
            }
            let flat: Vec<Option<i64>> = pipe.query(c)?;
            Ok(flat
                .chunks(2)
                .map(|p| (p[0], p.get(1).copied().flatten()))
                .collect())
        })?;
    Ok(groups
        .iter()
        .zip(counts)
        .filter_map(|(&(g, _, _), (total, seen))| {
            let n = total.unwrap_or(0).saturating_sub(seen.unwrap_or(0));
            u32::try_from(n).ok().filter(|&n| n > 0).map(|n| (g, n))
        })
        .collect())
}

/// `user`'s visible group sessions changed after `since`, newest first, at
/// most `max`: (group, updated, join point).
pub(super) fn sessions(
    store: &MysqlStore,
    conn: &mut PooledConn,
    user: UserId,
    since: u32,
    max: u32,
) -> StoreResult<Vec<(GroupId, u32, MsgId)>> {
    let mut out = Vec::new();
    for (group, chated, joined) in memberships(conn, user)? {
        let changed = chated.max(joined);
        if changed <= since {
            continue;
        }
        let points: Option<(u32, Option<u32>)> = conn
            .exec_first(
                "SELECT joinedMsgId, hiddenMsgId FROM rs_group_member
                 WHERE groupId = ? AND userId = ?",
                (group, user),
            )
            .map_err(my("reading a group session"))?;
        let (floor, hidden) = points.unwrap_or((0, None));
        if let Some(hidden) = hidden
            && last_id(store, group)? <= hidden
        {
            continue;
        }
        out.push((group, changed, floor));
    }
    out.sort_by_key(|&(g, changed, _)| std::cmp::Reverse((changed, g)));
    out.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    Ok(out)
}

/// Hides the group's session for `user` until the next message; `false`
/// when not a member or already hidden.
pub(super) fn hide_session(
    store: &MysqlStore,
    conn: &mut PooledConn,
    user: UserId,
    group: GroupId,
) -> StoreResult<bool> {
    if membership(conn, user, group)? != Some(true) {
        return Ok(false);
    }
    let last = last_id(store, group)?;
    conn.exec_drop(
        "UPDATE rs_group_member SET hiddenMsgId = ?
         WHERE groupId = ? AND userId = ? AND (hiddenMsgId IS NULL OR hiddenMsgId < ?)",
        (last, group, user, last),
    )
    .map_err(my("removing a group session"))?;
    if conn.affected_rows() > 0 {
        return Ok(true);
    }
    // A member TeamTalk added has no row of ours yet.
    conn.exec_drop(
        "INSERT IGNORE INTO rs_group_member (groupId, userId, joinedMsgId, hiddenMsgId)
         VALUES (?, ?, 0, ?)",
        (group, user, last),
    )
    .map_err(my("removing a group session"))?;
    Ok(conn.affected_rows() > 0)
}

/// A live group with its members.
pub(super) fn load(
    store: &MysqlStore,
    conn: &mut PooledConn,
    id: GroupId,
) -> StoreResult<Option<Group>> {
    let row: Option<Row> = conn
        .exec_first(
            "SELECT id, name, avatar, creator, type, version, created, updated FROM IMGroup
             WHERE id = ? AND status = 0",
            (id,),
        )
        .map_err(my("reading a group"))?;
    let Some(mut row) = row else {
        return Ok(None);
    };
    let raw_type: u32 = take(&mut row, 4)?;
    let mut group = Group {
        id: take(&mut row, 0)?,
        name: take(&mut row, 1)?,
        avatar: take(&mut row, 2)?,
        creator: take(&mut row, 3)?,
        group_type: GroupType::from_u32(raw_type)
            .ok_or(StoreError::Invalid("a stored group has an unknown type"))?,
        version: take(&mut row, 5)?,
        last_msg_id: last_id(store, id)?,
        created: take(&mut row, 6)?,
        updated: take(&mut row, 7)?,
        members: Vec::new(),
    };
    let members: Vec<(UserId, u32)> = conn
        .exec(
            "SELECT userId, MAX(updated) FROM IMGroupMember WHERE groupId = ? AND status = 0
             GROUP BY userId ORDER BY userId",
            (id,),
        )
        .map_err(my("reading group members"))?;
    let shields = shield_values(store, id, members.iter().map(|m| m.0))?;
    group.members = members
        .into_iter()
        .zip(shields)
        .map(|((user_id, joined), shield)| GroupMember {
            user_id,
            shield,
            joined,
        })
        .collect();
    Ok(Some(group))
}

/// Every live group, by id.
pub(super) fn load_all(store: &MysqlStore) -> StoreResult<Vec<Group>> {
    let mut conn = store.conn()?;
    let ids: Vec<GroupId> = conn
        .exec("SELECT id FROM IMGroup WHERE status = 0 ORDER BY id", ())
        .map_err(my("listing groups"))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(g) = load(store, &mut conn, id)? {
            out.push(g);
        }
    }
    Ok(out)
}

/// The live groups `user` is in, by id, optionally of one type.
pub(super) fn of_user(
    conn: &mut PooledConn,
    user: UserId,
    group_type: Option<GroupType>,
) -> StoreResult<Vec<GroupVersion>> {
    let rows: Vec<(GroupId, u32, u32)> = conn
        .exec(
            "SELECT DISTINCT g.id, g.version, g.type
             FROM IMGroupMember m JOIN IMGroup g ON g.id = m.groupId
             WHERE m.userId = ? AND m.status = 0 AND g.status = 0
             ORDER BY g.id",
            (user,),
        )
        .map_err(my("listing a user's groups"))?;
    Ok(rows
        .into_iter()
        .filter(|&(_, _, t)| group_type.is_none_or(|want| want.as_u32() == t))
        .take(MAX_GROUPS_PER_USER)
        .map(|(id, version, _)| GroupVersion { id, version })
        .collect())
}

/// The groups of `known` that `user` is in and that changed since the
/// version given, in the order asked.
pub(super) fn newer_than(
    store: &MysqlStore,
    user: UserId,
    known: &[GroupVersion],
) -> StoreResult<Vec<Group>> {
    let mut conn = store.conn()?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for k in known {
        if !seen.insert(k.id) || membership(&mut conn, user, k.id)? != Some(true) {
            continue;
        }
        let version: Option<u32> = conn
            .exec_first("SELECT version FROM IMGroup WHERE id = ?", (k.id,))
            .map_err(my("reading a group version"))?;
        if version.is_some_and(|v| v > k.version)
            && let Some(g) = load(store, &mut conn, k.id)?
        {
            out.push(g);
        }
    }
    Ok(out)
}

fn check_users_exist(tx: &mut Transaction<'_>, users: &[UserId]) -> StoreResult<()> {
    for &u in users {
        let found: Option<u32> = tx
            .exec_first("SELECT 1 FROM IMUser WHERE id = ?", (u,))
            .map_err(my("checking users"))?;
        if found.is_none() {
            return Err(StoreError::NoSuchUser(u));
        }
    }
    Ok(())
}

/// Makes `user` a member from `now` inside `tx`: a former member's row
/// revived or a new one, with the join point `last` and the session shown.
fn join(
    tx: &mut Transaction<'_>,
    group: GroupId,
    user: UserId,
    last: MsgId,
    now: u32,
) -> StoreResult<()> {
    tx.exec_drop(
        "UPDATE IMGroupMember SET status = 0, updated = ? WHERE groupId = ? AND userId = ?",
        (now, group, user),
    )
    .map_err(my("adding a group member"))?;
    if tx.affected_rows() == 0 {
        tx.exec_drop(
            "INSERT INTO IMGroupMember (groupId, userId, status, created, updated)
             VALUES (?, ?, 0, ?, ?)",
            (group, user, now, now),
        )
        .map_err(my("adding a group member"))?;
    }
    tx.exec_drop(
        "INSERT INTO rs_group_member (groupId, userId, joinedMsgId, hiddenMsgId)
         VALUES (?, ?, ?, NULL)
         ON DUPLICATE KEY UPDATE joinedMsgId = VALUES(joinedMsgId), hiddenMsgId = NULL",
        (group, user, last),
    )
    .map_err(my("recording a join point"))?;
    Ok(())
}

fn member_ids(tx: &mut Transaction<'_>, group: GroupId) -> StoreResult<Vec<UserId>> {
    tx.exec(
        "SELECT DISTINCT userId FROM IMGroupMember WHERE groupId = ? AND status = 0
         ORDER BY userId",
        (group,),
    )
    .map_err(my("reading group members"))
}

/// The Redis side of joins and leaves, after their commit: the membership
/// cache the C++ db_proxy reads, new members' snapshots (nothing unread)
/// and their shields cleared.
fn after_change(
    store: &MysqlStore,
    group: GroupId,
    joined: &[UserId],
    left: &[UserId],
    now: u32,
) -> StoreResult<()> {
    if joined.is_empty() && left.is_empty() {
        return Ok(());
    }
    let key = format!("group_member_{group}");
    store
        .cache
        .group_member
        .run("updating the group member cache", |c| {
            let mut pipe = redis::pipe();
            for u in joined {
                pipe.cmd("HSET").arg(&key).arg(u).arg(now).ignore();
            }
            for u in left {
                pipe.cmd("HDEL").arg(&key).arg(u).ignore();
            }
            pipe.query::<()>(c)
        })?;
    if !joined.is_empty() {
        store
            .cache
            .group_set
            .run("clearing new members' shields", |c| {
                let mut cmd = redis::cmd("HDEL");
                cmd.arg(format!("group_set_{group}"));
                for u in joined {
                    cmd.arg(format!("{u}_{SHIELD_TYPE}"));
                }
                cmd.query::<()>(c)
            })?;
        store
            .cache
            .unread
            .run("starting new members' unread counts", |c| {
                let total: Option<i64> = redis::cmd("HGET")
                    .arg(total_key(group))
                    .arg("count")
                    .query(c)?;
                let mut pipe = redis::pipe();
                for &u in joined {
                    pipe.cmd("HSET")
                        .arg(snapshot_key(u, group))
                        .arg("count")
                        .arg(total.unwrap_or(0))
                        .ignore();
                }
                pipe.query::<()>(c)
            })?;
    }
    Ok(())
}

/// Creates a group and its members in one transaction.
pub(super) fn create(store: &MysqlStore, group: &NewGroup, now: u32) -> StoreResult<Group> {
    let members = model::normalize_new_group(group).map_err(StoreError::Invalid)?;
    let mut conn = store.conn()?;
    let id = {
        let mut tx = tx(&mut conn)?;
        check_users_exist(&mut tx, &members)?;
        tx.exec_drop(
            "INSERT INTO IMGroup (name, avatar, creator, type, userCnt, status, version,
                                  lastChated, created, updated)
             VALUES (?, ?, ?, ?, ?, 0, 1, 0, ?, ?)",
            (
                &group.name,
                &group.avatar,
                group.creator,
                group.group_type.as_u32(),
                u32::try_from(members.len()).unwrap_or(u32::MAX),
                now,
                now,
            ),
        )
        .map_err(my("inserting a group"))?;
        let id = tx
            .last_insert_id()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or(StoreError::Invalid("id space exhausted (ids are 32-bit)"))?;
        // A group id used before (a database restored, Redis not) must not
        // inherit counters: the new group starts from nothing.
        store
            .cache
            .unread
            .run("resetting a new group's counters", |c| {
                redis::pipe()
                    .cmd("DEL")
                    .arg(counter_key(id))
                    .arg(total_key(id))
                    .ignore()
                    .query::<()>(c)
            })?;
        for &u in &members {
            join(&mut tx, id, u, 0, now)?;
        }
        tx.commit().map_err(my("committing a new group"))?;
        id
    };
    after_change(store, id, &members, &[], now)?;
    load(store, &mut conn, id)?.ok_or(StoreError::NoSuchGroup(id))
}

/// Adds or removes members under the permission rule, in one transaction.
pub(super) fn change_members(
    store: &MysqlStore,
    actor: Actor,
    group: GroupId,
    change: MemberChange,
    users: &[UserId],
    now: u32,
) -> StoreResult<MembersChanged> {
    if users.len() > MAX_GROUP_MEMBERS {
        return Err(StoreError::Invalid("too many users in one member change"));
    }
    let mut users = users.to_vec();
    users.sort_unstable();
    users.dedup();
    if users.first() == Some(&0) {
        return Err(StoreError::Invalid("user id 0 is not a user"));
    }
    let last = last_id(store, group)?;
    let mut conn = store.conn()?;
    let mut tx = tx(&mut conn)?;
    // The group row locked: member changes of one group are serialised.
    let row: Option<(UserId, u32, u32)> = tx
        .exec_first(
            "SELECT creator, type, version FROM IMGroup WHERE id = ? AND status = 0 FOR UPDATE",
            (group,),
        )
        .map_err(my("reading a group"))?;
    let Some((creator, raw_type, mut version)) = row else {
        return Err(StoreError::NoSuchGroup(group));
    };
    let group_type = GroupType::from_u32(raw_type)
        .ok_or(StoreError::Invalid("a stored group has an unknown type"))?;
    let before = member_ids(&mut tx, group)?;
    let is_member = |u: UserId| before.binary_search(&u).is_ok();
    let requester_is_member = match actor {
        Actor::User(u) => is_member(u),
        Actor::Admin => false,
    };
    check_member_change(
        actor,
        group_type,
        creator,
        requester_is_member,
        change,
        &users,
    )?;
    let changed: Vec<UserId> = match change {
        MemberChange::Add => {
            let added: Vec<UserId> = users.iter().copied().filter(|&u| !is_member(u)).collect();
            check_users_exist(&mut tx, &added)?;
            if before.len() + added.len() > MAX_GROUP_MEMBERS {
                return Err(StoreError::Invalid("the group would have too many members"));
            }
            for &u in &added {
                join(&mut tx, group, u, last, now)?;
            }
            added
        }
        MemberChange::Remove => {
            let removed: Vec<UserId> = users.iter().copied().filter(|&u| is_member(u)).collect();
            for &u in &removed {
                tx.exec_drop(
                    "UPDATE IMGroupMember SET status = 1, updated = ?
                     WHERE groupId = ? AND userId = ? AND status = 0",
                    (now, group, u),
                )
                .map_err(my("removing a group member"))?;
            }
            removed
        }
    };
    let members = member_ids(&mut tx, group)?;
    if !changed.is_empty() {
        tx.exec_drop(
            "UPDATE IMGroup SET version = version + 1, userCnt = ?, updated = ? WHERE id = ?",
            (u32::try_from(members.len()).unwrap_or(u32::MAX), now, group),
        )
        .map_err(my("bumping a group version"))?;
        version = version.saturating_add(1);
    }
    tx.commit().map_err(my("committing a member change"))?;
    match change {
        MemberChange::Add => after_change(store, group, &changed, &[], now)?,
        MemberChange::Remove => after_change(store, group, &[], &changed, now)?,
    }
    Ok(MembersChanged {
        group,
        version,
        changed,
        members,
    })
}

/// The shield flags of `users` in `group`, in order.
fn shield_values(
    store: &MysqlStore,
    group: GroupId,
    users: impl Iterator<Item = UserId>,
) -> StoreResult<Vec<bool>> {
    let fields: Vec<String> = users.map(|u| format!("{u}_{SHIELD_TYPE}")).collect();
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = store.cache.group_set.run("reading group shields", |c| {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(format!("group_set_{group}"));
        for f in &fields {
            cmd.arg(f);
        }
        cmd.query(c)
    })?;
    Ok(values
        .into_iter()
        .map(|v| v.is_some_and(|v| v.trim() != "0" && !v.is_empty()))
        .collect())
}

/// Sets a member's push shield.
pub(super) fn set_shield(
    store: &MysqlStore,
    user: UserId,
    group: GroupId,
    on: bool,
) -> StoreResult<()> {
    match membership(&mut store.conn()?, user, group)? {
        None => return Err(StoreError::NoSuchGroup(group)),
        Some(false) => return Err(StoreError::NotMember { user, group }),
        Some(true) => {}
    }
    store.cache.group_set.run("setting a group shield", |c| {
        redis::cmd("HSET")
            .arg(format!("group_set_{group}"))
            .arg(format!("{user}_{SHIELD_TYPE}"))
            .arg(u32::from(on))
            .query::<()>(c)
    })
}

/// The shields of those of `users` who are members, by user id.
pub(super) fn shields(
    store: &MysqlStore,
    group: GroupId,
    users: &[UserId],
) -> StoreResult<Vec<(UserId, bool)>> {
    let mut conn = store.conn()?;
    let live: Option<u32> = conn
        .exec_first("SELECT status FROM IMGroup WHERE id = ?", (group,))
        .map_err(my("reading a group"))?;
    if live != Some(0) {
        return Err(StoreError::NoSuchGroup(group));
    }
    let mut users = users.to_vec();
    users.sort_unstable();
    users.dedup();
    let mut members = Vec::new();
    for u in users {
        if membership(&mut conn, u, group)? == Some(true) {
            members.push(u);
        }
    }
    let flags = shield_values(store, group, members.iter().copied())?;
    Ok(members.into_iter().zip(flags).collect())
}

const GROUP_MSG_COLUMNS: &str = "msgId, userId, groupId, type, created, content";

fn group_message(mut row: Row) -> StoreResult<StoredMessage> {
    Ok(StoredMessage {
        msg_id: take(&mut row, 0)?,
        from: take(&mut row, 1)?,
        to: take(&mut row, 2)?,
        msg_type: take(&mut row, 3)?,
        create_time: take(&mut row, 4)?,
        data: take(&mut row, 5)?,
    })
}

/// History after the member's join point, newest first.
pub(super) fn message_list(
    store: &MysqlStore,
    user: UserId,
    group: GroupId,
    begin: MsgId,
    count: u32,
) -> StoreResult<Vec<StoredMessage>> {
    let r = readable(store, user, group)?;
    let limit = count.min(MAX_MSG_LIST);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let begin = if begin == 0 {
        r.last
    } else {
        begin.min(r.last)
    };
    let mut conn = store.conn()?;
    let iter = conn
        .exec_iter(
            format!(
                "SELECT {GROUP_MSG_COLUMNS} FROM IMGroupMessage_{}
                 WHERE groupId = ? AND status = 0 AND msgId <= ? AND msgId > ?
                 ORDER BY msgId DESC LIMIT ?",
                shard(group)
            ),
            (group, begin, r.floor, limit),
        )
        .map_err(my("listing group messages"))?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for row in iter {
        let m = group_message(row.map_err(my("listing group messages"))?)?;
        bytes = bytes.saturating_add(m.data.len());
        out.push(m);
        if bytes >= MAX_LIST_BODY_BYTES {
            break;
        }
    }
    Ok(out)
}

/// The listed messages the member may read, newest first.
pub(super) fn messages_by_ids(
    store: &MysqlStore,
    user: UserId,
    group: GroupId,
    ids: &[MsgId],
) -> StoreResult<Vec<StoredMessage>> {
    let r = readable(store, user, group)?;
    let mut ids: Vec<MsgId> = ids
        .iter()
        .copied()
        .take(MAX_MSGS_BY_ID)
        .filter(|&id| id > r.floor)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    let mut conn = store.conn()?;
    let mut out = Vec::with_capacity(ids.len());
    let mut bytes = 0usize;
    for id in ids {
        let row: Option<Row> = conn
            .exec_first(
                format!(
                    "SELECT {GROUP_MSG_COLUMNS} FROM IMGroupMessage_{}
                     WHERE groupId = ? AND msgId = ? AND status = 0 LIMIT 1",
                    shard(group)
                ),
                (group, id),
            )
            .map_err(my("reading group messages"))?;
        if let Some(row) = row {
            let m = group_message(row)?;
            bytes = bytes.saturating_add(m.data.len());
            out.push(m);
            if bytes >= MAX_LIST_BODY_BYTES {
                break;
            }
        }
    }
    Ok(out)
}

/// The group's last id as the member sees it.
pub(super) fn latest_msg_id(
    store: &MysqlStore,
    user: UserId,
    group: GroupId,
) -> StoreResult<MsgId> {
    let r = readable(store, user, group)?;
    Ok(if r.last > r.floor { r.last } else { 0 })
}

/// Sets the member's snapshot to the group's total (TeamTalk's read ack).
pub(super) fn clear_unread(store: &MysqlStore, user: UserId, group: GroupId) -> StoreResult<()> {
    readable(store, user, group)?;
    store
        .cache
        .unread
        .run("clearing a group unread count", |c| {
            let total: Option<i64> = redis::cmd("HGET")
                .arg(total_key(group))
                .arg("count")
                .query(c)?;
            redis::cmd("HSET")
                .arg(snapshot_key(user, group))
                .arg("count")
                .arg(total.unwrap_or(0))
                .query::<()>(c)
        })
}
