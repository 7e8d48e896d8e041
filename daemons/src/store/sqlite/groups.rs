//! Groups on SQLite: tables `chat_group`, `group_member` and
//! `group_message` (migration 3 in `sqlite.rs`), with the model of
//! [`crate::store::groups`].
//!
//! Every function runs on the connection the caller locked, inside the
//! caller's transaction when it has one; those that write several rows
//! open their own.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{latest_from_row, row_id, sql};
use crate::store::groups::{self as model, MAX_GROUPS_PER_USER, check_member_change};
use crate::store::{
    Actor, Group, GroupId, GroupMember, GroupType, GroupVersion, LatestMessage, MAX_GROUP_MEMBERS,
    MAX_LIST_BODY_BYTES, MAX_MSG_LIST, MAX_MSGS_BY_ID, MemberChange, MembersChanged, MsgId,
    NewGroup, NewMessage, StoreError, StoreResult, StoredMessage, UserId,
};

/// `chat_group.status` / `group_member.status` of a live row.
const LIVE: u32 = 0;
/// `group_member.status` of a removed member.
const REMOVED: u32 = 1;

/// What a member may read of a group: everything after `floor` (their join
/// point) up to `last` (the group's last message id).
struct Readable {
    last: MsgId,
    floor: MsgId,
}

/// A member's state in a live group: `None` when the group does not exist,
/// `Some(None)` when the user is not a member now.
fn membership(
    conn: &Connection,
    user: UserId,
    group: GroupId,
) -> StoreResult<Option<Option<Readable>>> {
    let row: Option<(MsgId, Option<u32>, Option<MsgId>)> = conn
        .prepare_cached(
            "SELECT g.last_msg_id, m.status, m.joined_msg_id
             FROM chat_group g
             LEFT JOIN group_member m ON m.group_id = g.id AND m.user_id = ?2
             WHERE g.id = ?1 AND g.status = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![group, user, LIVE], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(sql("reading a group membership"))?;
    Ok(row.map(|(last, status, floor)| match (status, floor) {
        (Some(LIVE), Some(floor)) => Some(Readable { last, floor }),
        _ => None,
    }))
}

/// What `user` may read of `group`; a non-member (or a group that does not
/// exist, which a non-member cannot tell apart) reads nothing.
fn readable(conn: &Connection, user: UserId, group: GroupId) -> StoreResult<Readable> {
    match membership(conn, user, group)? {
        Some(Some(r)) => Ok(r),
        _ => Err(StoreError::NotMember { user, group }),
    }
}

/// Refuses a group message whose sender is not a member now.
pub(super) fn check_poster(conn: &Connection, from: UserId, group: GroupId) -> StoreResult<()> {
    match membership(conn, from, group)? {
        None => Err(StoreError::NoSuchGroup(group)),
        Some(None) => Err(StoreError::NotMember { user: from, group }),
        Some(Some(_)) => Ok(()),
    }
}

/// Stores a checked group message from a member inside the caller's
/// transaction: the group's next id, the message, the sender's read point.
/// Three writes whatever the group's size.
pub(super) fn insert_group_message(
    conn: &Connection,
    msg: &NewMessage,
    now: u32,
) -> StoreResult<StoredMessage> {
    let msg_id: Option<MsgId> = conn
        .prepare_cached(
            "UPDATE chat_group SET last_msg_id = last_msg_id + 1, last_chated = ?2
             WHERE id = ?1 AND last_msg_id < ?3
             RETURNING last_msg_id",
        )
        .and_then(|mut s| {
            s.query_row(params![msg.to, now, u32::MAX], |r| r.get(0))
                .optional()
        })
        .map_err(sql("assigning a group message id"))?;
    let Some(msg_id) = msg_id else {
        return Err(StoreError::GroupMsgIdsExhausted(msg.to));
    };
    conn.prepare_cached(
        "INSERT INTO group_message (group_id, msg_id, from_id, msg_type, content, status, created)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            msg.to,
            msg_id,
            msg.from,
            msg.msg_type,
            msg.data,
            msg.create_time
        ])
    })
    .map_err(sql("inserting a group message"))?;
    // The sender has read what they posted (and what came before it, as
    // TeamTalk's snapshot copy did).
    conn.prepare_cached(
        "UPDATE group_member SET read_msg_id = ?3 WHERE group_id = ?1 AND user_id = ?2",
    )
    .and_then(|mut s| s.execute(params![msg.to, msg.from, msg_id]))
    .map_err(sql("moving the sender's read point"))?;
    Ok(msg.stored_as(msg_id))
}

/// The group's latest message if it is newer than `floor`; empty otherwise.
pub(super) fn latest_message(
    conn: &Connection,
    group: GroupId,
    floor: MsgId,
) -> StoreResult<LatestMessage> {
    let latest = conn
        .prepare_cached(
            "SELECT m.msg_id, m.from_id, m.msg_type, m.content
             FROM chat_group g
             JOIN group_message m ON m.group_id = g.id AND m.msg_id = g.last_msg_id
             WHERE g.id = ?1 AND g.last_msg_id > ?2 AND m.status = 0",
        )
        .and_then(|mut s| {
            s.query_row(params![group, floor], |r| latest_from_row(r, 0))
                .optional()
        })
        .map_err(sql("reading a group's latest message"))?;
    Ok(latest.unwrap_or_default())
}

/// The statement of [`unread_counts`], written so that SQLite never marks
/// it for re-preparing when its parameters are bound: the `LIMIT` is a
/// literal, and each parameter compared to a column is written `+?N`.
///
/// SQLite (3.54, `sqlite3ExprIsInteger`) marks a statement for re-preparing
/// at the next binding of a parameter it looked at while planning: a bound
/// `LIMIT`, and `column = ?N` in a join, whose truth estimate depends on
/// whether the value is 0 or 1. rusqlite clears the bindings of every
/// cached statement it takes back, which expires a marked statement, so
/// every call parsed and planned the query again: 12 % of db_proxy's CPU
/// in a login run, where [`OF_USER_SQL`] runs once per login. A unary `+`
/// hides the parameter from that look without changing the plan (the
/// index still serves `user_id = +?1 AND status = +?2`).
/// The store's connection now also has `SQLITE_DBCONFIG_ENABLE_QPSG`
/// on, which does the same for every statement; the `+` stays, harmless,
/// for a connection opened without it.
static UNREAD_COUNTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT m.group_id, g.last_msg_id - m.read_msg_id
         FROM group_member m JOIN chat_group g ON g.id = m.group_id
         WHERE m.user_id = +?1 AND m.status = +?2 AND g.status = +?2
           AND g.last_msg_id > m.read_msg_id
         ORDER BY m.group_id
         LIMIT {}",
        limit(MAX_GROUPS_PER_USER)
    )
});

/// `user`'s unread count per group with unread messages, by group id.
pub(super) fn unread_counts(conn: &Connection, user: UserId) -> StoreResult<Vec<(GroupId, u32)>> {
    conn.prepare_cached(&UNREAD_COUNTS_SQL)
        .and_then(|mut s| {
            s.query_map(params![user, LIVE], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(Iterator::collect)
        })
        .map_err(sql("reading group unread counts"))
}

/// `user`'s visible group sessions changed after `since`, newest first, at
/// most `max`: (group, updated, join point). A group session changes when
/// a message is posted or when the user joins; a hidden one shows again
/// with the next message.
pub(super) fn sessions(
    conn: &Connection,
    user: UserId,
    since: u32,
    max: u32,
) -> StoreResult<Vec<(GroupId, u32, MsgId)>> {
    conn.prepare_cached(
        "SELECT m.group_id, max(g.last_chated, m.joined) AS changed, m.joined_msg_id
         FROM group_member m JOIN chat_group g ON g.id = m.group_id
         WHERE m.user_id = ?1 AND m.status = ?3 AND g.status = ?3
           AND (m.hidden_msg_id IS NULL OR g.last_msg_id > m.hidden_msg_id)
           AND max(g.last_chated, m.joined) > ?2
         ORDER BY changed DESC, m.group_id DESC
         LIMIT ?4",
    )
    .and_then(|mut s| {
        s.query_map(params![user, since, LIVE, max], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .and_then(Iterator::collect)
    })
    .map_err(sql("listing group sessions"))
}

/// Hides `user`'s session of `group` until the next message; `false` when
/// they are not a member or it is hidden already.
pub(super) fn hide_session(
    conn: &Connection,
    user: UserId,
    group: GroupId,
    now: u32,
) -> StoreResult<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE group_member
             SET hidden_msg_id = (SELECT last_msg_id FROM chat_group WHERE id = ?2), updated = ?3
             WHERE user_id = ?1 AND group_id = ?2 AND status = ?4
               AND (hidden_msg_id IS NULL
                    OR hidden_msg_id < (SELECT last_msg_id FROM chat_group WHERE id = ?2))",
        )
        .and_then(|mut s| s.execute(params![user, group, now, LIVE]))
        .map_err(sql("removing a group session"))?;
    Ok(n > 0)
}

fn group_from_row(r: &Row<'_>) -> rusqlite::Result<(Group, u32)> {
    Ok((
        Group {
            id: r.get(0)?,
            name: r.get(1)?,
            avatar: r.get(2)?,
            creator: r.get(3)?,
            // Replaced by the caller, which can fail on an unknown value.
            group_type: GroupType::Tmp,
            version: r.get(5)?,
            last_msg_id: r.get(6)?,
            created: r.get(7)?,
            updated: r.get(8)?,
            members: Vec::new(),
        },
        r.get(4)?,
    ))
}

const GROUP_COLUMNS: &str =
    "id, name, avatar, creator, group_type, version, last_msg_id, created, updated";

/// A live group with its members.
pub(super) fn load(conn: &Connection, id: GroupId) -> StoreResult<Option<Group>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {GROUP_COLUMNS} FROM chat_group WHERE id = ?1 AND status = ?2"
        ))
        .and_then(|mut s| s.query_row(params![id, LIVE], group_from_row).optional())
        .map_err(sql("reading a group"))?;
    let Some((mut group, raw_type)) = row else {
        return Ok(None);
    };
    group.group_type = GroupType::from_u32(raw_type)
        .ok_or(StoreError::Invalid("a stored group has an unknown type"))?;
    group.members = conn
        .prepare_cached(
            "SELECT user_id, shield, joined FROM group_member
             WHERE group_id = ?1 AND status = ?2 ORDER BY user_id",
        )
        .and_then(|mut s| {
            s.query_map(params![id, LIVE], |r| {
                Ok(GroupMember {
                    user_id: r.get(0)?,
                    shield: r.get::<_, i64>(1)? != 0,
                    joined: r.get(2)?,
                })
            })
            .and_then(Iterator::collect)
        })
        .map_err(sql("reading group members"))?;
    Ok(Some(group))
}

/// Every live group, by id.
pub(super) fn load_all(conn: &Connection) -> StoreResult<Vec<Group>> {
    let ids: Vec<GroupId> = conn
        .prepare_cached("SELECT id FROM chat_group WHERE status = ?1 ORDER BY id")
        .and_then(|mut s| {
            s.query_map(params![LIVE], |r| r.get(0))
                .and_then(Iterator::collect)
        })
        .map_err(sql("listing groups"))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(g) = load(conn, id)? {
            out.push(g);
        }
    }
    Ok(out)
}

/// The statement of [`of_user`], asked at every login (msg_server loads
/// the groups of each user who logs in), prepared once as
/// [`UNREAD_COUNTS_SQL`] explains. Ordered by the member row's group id,
/// which the index already yields in order (no sort).
static OF_USER_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT g.id, g.version
         FROM group_member m JOIN chat_group g ON g.id = m.group_id
         WHERE m.user_id = +?1 AND m.status = +?2 AND g.status = +?2
           AND (?3 IS NULL OR g.group_type = +?3)
         ORDER BY m.group_id
         LIMIT {}",
        limit(MAX_GROUPS_PER_USER)
    )
});

/// The live groups `user` is in, by id, optionally of one type.
pub(super) fn of_user(
    conn: &Connection,
    user: UserId,
    group_type: Option<GroupType>,
) -> StoreResult<Vec<GroupVersion>> {
    conn.prepare_cached(&OF_USER_SQL)
        .and_then(|mut s| {
            s.query_map(
                params![user, LIVE, group_type.map(GroupType::as_u32)],
                |r| {
                    Ok(GroupVersion {
                        id: r.get(0)?,
                        version: r.get(1)?,
                    })
                },
            )
            .and_then(Iterator::collect)
        })
        .map_err(sql("listing a user's groups"))
}

/// The groups of `known` that `user` is in and that changed since the
/// version given, in the order asked.
pub(super) fn newer_than(
    conn: &Connection,
    user: UserId,
    known: &[GroupVersion],
) -> StoreResult<Vec<Group>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for k in known {
        if !seen.insert(k.id) {
            continue;
        }
        let version: Option<u32> = conn
            .prepare_cached(
                "SELECT g.version FROM chat_group g
                 JOIN group_member m ON m.group_id = g.id AND m.user_id = ?2
                 WHERE g.id = ?1 AND g.status = ?3 AND m.status = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![k.id, user, LIVE], |r| r.get(0))
                    .optional()
            })
            .map_err(sql("reading a group version"))?;
        if version.is_some_and(|v| v > k.version)
            && let Some(g) = load(conn, k.id)?
        {
            out.push(g);
        }
    }
    Ok(out)
}

/// Fails with [`StoreError::NoSuchUser`] for the first of `users` who does
/// not exist.
fn check_users_exist(conn: &Connection, users: &[UserId]) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM user WHERE id = ?1")
        .map_err(sql("checking users"))?;
    for &u in users {
        let found: Option<i64> = stmt
            .query_row(params![u], |r| r.get(0))
            .optional()
            .map_err(sql("checking users"))?;
        if found.is_none() {
            return Err(StoreError::NoSuchUser(u));
        }
    }
    Ok(())
}

/// Makes `user` a member of `group` from `now`: a new row, or a former
/// member's row revived. They start with nothing unread, read only what is
/// posted from now on, see the group's session and have no shield.
fn join(conn: &Connection, group: GroupId, user: UserId, last: MsgId, now: u32) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO group_member
             (group_id, user_id, status, shield, read_msg_id, joined_msg_id, hidden_msg_id,
              joined, updated)
         VALUES (?1, ?2, ?3, 0, ?4, ?4, NULL, ?5, ?5)
         ON CONFLICT (group_id, user_id) DO UPDATE
         SET status = excluded.status, shield = 0, read_msg_id = excluded.read_msg_id,
             joined_msg_id = excluded.joined_msg_id, hidden_msg_id = NULL,
             joined = excluded.joined, updated = excluded.updated",
    )
    .and_then(|mut s| s.execute(params![group, user, LIVE, last, now]))
    .map_err(sql("adding a group member"))?;
    Ok(())
}

fn member_ids(conn: &Connection, group: GroupId) -> StoreResult<Vec<UserId>> {
    conn.prepare_cached(
        "SELECT user_id FROM group_member WHERE group_id = ?1 AND status = ?2 ORDER BY user_id",
    )
    .and_then(|mut s| {
        s.query_map(params![group, LIVE], |r| r.get(0))
            .and_then(Iterator::collect)
    })
    .map_err(sql("reading group members"))
}

/// Creates a group and its members in one transaction.
pub(super) fn create(conn: &mut Connection, group: &NewGroup, now: u32) -> StoreResult<Group> {
    let members = model::normalize_new_group(group).map_err(StoreError::Invalid)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting group creation"))?;
    check_users_exist(&tx, &members)?;
    tx.prepare_cached(
        "INSERT INTO chat_group (name, avatar, creator, group_type, status, version,
                                 last_msg_id, last_chated, created, updated)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, 0, ?6, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            group.name,
            group.avatar,
            group.creator,
            group.group_type.as_u32(),
            LIVE,
            now
        ])
    })
    .map_err(sql("inserting a group"))?;
    let id = row_id(tx.last_insert_rowid())?;
    for &u in &members {
        join(&tx, id, u, 0, now)?;
    }
    let created = load(&tx, id)?.ok_or(StoreError::NoSuchGroup(id))?;
    tx.commit().map_err(sql("committing a new group"))?;
    Ok(created)
}

/// Adds or removes members under the permission rule, in one transaction.
pub(super) fn change_members(
    conn: &mut Connection,
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
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting a member change"))?;
    let row: Option<(UserId, u32, u32, MsgId)> = tx
        .prepare_cached(
            "SELECT creator, group_type, version, last_msg_id FROM chat_group
             WHERE id = ?1 AND status = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![group, LIVE], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(sql("reading a group"))?;
    let Some((creator, raw_type, mut version, last)) = row else {
        return Err(StoreError::NoSuchGroup(group));
    };
    let group_type = GroupType::from_u32(raw_type)
        .ok_or(StoreError::Invalid("a stored group has an unknown type"))?;
    let before = member_ids(&tx, group)?;
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
    let mut changed = Vec::new();
    match change {
        MemberChange::Add => {
            let added: Vec<UserId> = users.iter().copied().filter(|&u| !is_member(u)).collect();
            check_users_exist(&tx, &added)?;
            if before.len() + added.len() > MAX_GROUP_MEMBERS {
                return Err(StoreError::Invalid("the group would have too many members"));
            }
            for &u in &added {
                join(&tx, group, u, last, now)?;
            }
            changed = added;
        }
        MemberChange::Remove => {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE group_member SET status = ?3, updated = ?4
                     WHERE group_id = ?1 AND user_id = ?2 AND status = ?5",
                )
                .map_err(sql("removing a group member"))?;
            for &u in &users {
                if stmt
                    .execute(params![group, u, REMOVED, now, LIVE])
                    .map_err(sql("removing a group member"))?
                    > 0
                {
                    changed.push(u);
                }
            }
        }
    }
    if !changed.is_empty() {
        version = tx
            .prepare_cached(
                "UPDATE chat_group SET version = version + 1, updated = ?2 WHERE id = ?1
                 RETURNING version",
            )
            .and_then(|mut s| s.query_row(params![group, now], |r| r.get(0)))
            .map_err(sql("bumping a group version"))?;
    }
    let members = member_ids(&tx, group)?;
    tx.commit().map_err(sql("committing a member change"))?;
    Ok(MembersChanged {
        group,
        version,
        changed,
        members,
    })
}

/// Takes a user out of every group they are in (a deleted user), moving
/// each group's version so members' clients fetch the new member list;
/// inside the caller's transaction.
pub(super) fn remove_everywhere(conn: &Connection, user: UserId, now: u32) -> StoreResult<()> {
    let groups: Vec<GroupId> = conn
        .prepare_cached(
            "UPDATE group_member SET status = ?2, updated = ?3
             WHERE user_id = ?1 AND status = ?4
             RETURNING group_id",
        )
        .and_then(|mut s| {
            s.query_map(params![user, REMOVED, now, LIVE], |r| r.get(0))?
                .collect()
        })
        .map_err(sql("removing a user from their groups"))?;
    let mut bump = conn
        .prepare_cached("UPDATE chat_group SET version = version + 1, updated = ?2 WHERE id = ?1")
        .map_err(sql("bumping a group version"))?;
    for g in groups {
        bump.execute(params![g, now])
            .map_err(sql("bumping a group version"))?;
    }
    Ok(())
}

/// Sets a member's push shield.
pub(super) fn set_shield(
    conn: &Connection,
    user: UserId,
    group: GroupId,
    on: bool,
    now: u32,
) -> StoreResult<()> {
    check_poster(conn, user, group)?;
    conn.prepare_cached(
        "UPDATE group_member SET shield = ?3, updated = ?4 WHERE group_id = ?1 AND user_id = ?2",
    )
    .and_then(|mut s| s.execute(params![group, user, i64::from(on), now]))
    .map_err(sql("setting a group shield"))?;
    Ok(())
}

/// The shields of those of `users` who are members, by user id.
pub(super) fn shields(
    conn: &Connection,
    group: GroupId,
    users: &[UserId],
) -> StoreResult<Vec<(UserId, bool)>> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM chat_group WHERE id = ?1 AND status = ?2")
        .and_then(|mut s| s.query_row(params![group, LIVE], |r| r.get(0)).optional())
        .map_err(sql("reading a group"))?;
    if exists.is_none() {
        return Err(StoreError::NoSuchGroup(group));
    }
    let mut users = users.to_vec();
    users.sort_unstable();
    users.dedup();
    let mut stmt = conn
        .prepare_cached(
            "SELECT shield FROM group_member WHERE group_id = ?1 AND user_id = ?2 AND status = ?3",
        )
        .map_err(sql("reading group shields"))?;
    let mut out = Vec::new();
    for u in users {
        if let Some(shield) = stmt
            .query_row(params![group, u, LIVE], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(sql("reading group shields"))?
        {
            out.push((u, shield != 0));
        }
    }
    Ok(out)
}

const GROUP_MSG_COLUMNS: &str = "msg_id, from_id, group_id, msg_type, created, content";

/// History after the member's join point, newest first.
pub(super) fn message_list(
    conn: &Connection,
    user: UserId,
    group: GroupId,
    begin: MsgId,
    count: u32,
) -> StoreResult<Vec<StoredMessage>> {
    let r = readable(conn, user, group)?;
    let limit = count.min(MAX_MSG_LIST);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let begin = if begin == 0 {
        r.last
    } else {
        begin.min(r.last)
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {GROUP_MSG_COLUMNS} FROM group_message
             WHERE group_id = ?1 AND status = 0 AND msg_id <= ?2 AND msg_id > ?3
             ORDER BY msg_id DESC LIMIT ?4"
        ))
        .map_err(sql("listing group messages"))?;
    let rows = stmt
        .query_map(
            params![group, begin, r.floor, limit],
            super::message_from_row,
        )
        .map_err(sql("listing group messages"))?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let m = row.map_err(sql("listing group messages"))?;
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
    conn: &Connection,
    user: UserId,
    group: GroupId,
    ids: &[MsgId],
) -> StoreResult<Vec<StoredMessage>> {
    let r = readable(conn, user, group)?;
    let mut ids: Vec<MsgId> = ids
        .iter()
        .copied()
        .take(MAX_MSGS_BY_ID)
        .filter(|&id| id > r.floor)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {GROUP_MSG_COLUMNS} FROM group_message
             WHERE group_id = ?1 AND msg_id = ?2 AND status = 0"
        ))
        .map_err(sql("reading group messages"))?;
    let mut out = Vec::with_capacity(ids.len());
    let mut bytes = 0usize;
    for id in ids {
        if let Some(m) = stmt
            .query_row(params![group, id], super::message_from_row)
            .optional()
            .map_err(sql("reading group messages"))?
        {
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
pub(super) fn latest_msg_id(conn: &Connection, user: UserId, group: GroupId) -> StoreResult<MsgId> {
    let r = readable(conn, user, group)?;
    Ok(if r.last > r.floor { r.last } else { 0 })
}

/// Moves the member's read point to the group's last message.
pub(super) fn clear_unread(conn: &Connection, user: UserId, group: GroupId) -> StoreResult<()> {
    let r = readable(conn, user, group)?;
    conn.prepare_cached(
        "UPDATE group_member SET read_msg_id = ?3 WHERE group_id = ?1 AND user_id = ?2",
    )
    .and_then(|mut s| s.execute(params![group, user, r.last]))
    .map_err(sql("clearing a group unread count"))?;
    Ok(())
}

/// A `usize` bound as an SQL `LIMIT`.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, StoreOptions};

    /// The plan SQLite picks for `sql` with these parameters.
    fn plan(store: &SqliteStore, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let conn = store.lock().expect("store");
        let mut s = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        s.query_map(params, |r| r.get::<_, String>(3))
            .and_then(Iterator::collect)
            .expect("plan")
    }

    #[test]
    fn per_login_group_queries_are_prepared_once() {
        let store = SqliteStore::open_in_memory(StoreOptions::default()).expect("store");
        for user in 1..=5 {
            of_user(&store.lock().expect("store"), user, None).expect("groups");
            of_user(&store.lock().expect("store"), user, Some(GroupType::Normal)).expect("groups");
            unread_counts(&store.lock().expect("store"), user).expect("unread");
        }
        assert_eq!(store.reprepares(&OF_USER_SQL), 0);
        assert_eq!(store.reprepares(&UNREAD_COUNTS_SQL), 0);
        // The `+` leaves the member index in use, and its order needs no
        // sort.
        for (sql, p) in [
            (
                &*OF_USER_SQL,
                plan(&store, &OF_USER_SQL, params![1, LIVE, None::<u32>]),
            ),
            (
                &*UNREAD_COUNTS_SQL,
                plan(&store, &UNREAD_COUNTS_SQL, params![1, LIVE]),
            ),
        ] {
            assert!(
                p[0].contains("INDEX group_member_user (user_id=? AND status=?)"),
                "{sql}: {p:?}"
            );
            assert!(!p.iter().any(|s| s.contains("TEMP B-TREE")), "{sql}: {p:?}");
        }
    }
}
