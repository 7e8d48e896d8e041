//! The administration's writes on SQLite (the admin API): profile
//! changes, department renames and deletions, group deletions.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{USER_COLUMNS, groups, is_unique_violation, sql, user_from_row};
use crate::store::{DeptId, Group, GroupId, StoreError, StoreResult, User, UserId, UserUpdate};

/// `department.status` of a live department, and of a deleted one.
const DEPT_LIVE: u32 = 0;
const DEPT_DELETED: u32 = 1;

pub(super) fn update_user(
    conn: &mut Connection,
    user: UserId,
    u: &UserUpdate,
    now: u32,
) -> StoreResult<Option<User>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting a profile change"))?;
    let n = tx
        .execute(
            "UPDATE user SET
                nick = coalesce(?2, nick), dept_id = coalesce(?3, dept_id),
                sex = coalesce(?4, sex), avatar = coalesce(?5, avatar),
                email = coalesce(?6, email), phone = coalesce(?7, phone),
                domain = coalesce(?8, domain), sign_info = coalesce(?9, sign_info),
                updated = max(updated, ?10)
             WHERE id = ?1",
            params![
                user,
                u.nick,
                u.dept_id,
                u.sex,
                u.avatar,
                u.email,
                u.phone,
                u.domain,
                u.sign_info,
                now
            ],
        )
        .map_err(sql("changing a profile"))?;
    if n == 0 {
        return Ok(None);
    }
    let row = tx
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM user WHERE id = ?1"),
            params![user],
            user_from_row,
        )
        .optional()
        .map_err(sql("reading a changed profile"))?;
    tx.commit().map_err(sql("committing a profile change"))?;
    Ok(row)
}

pub(super) fn rename_department(
    conn: &Connection,
    id: DeptId,
    name: &str,
    now: u32,
) -> StoreResult<bool> {
    match conn.execute(
        "UPDATE department SET name = ?2, updated = max(updated + 1, ?3)
         WHERE id = ?1 AND status = ?4",
        params![id, name, now, DEPT_LIVE],
    ) {
        Ok(n) => Ok(n > 0),
        Err(e) if is_unique_violation(&e) => Err(StoreError::DeptNameTaken(name.to_owned())),
        Err(e) => Err(sql("renaming a department")(e)),
    }
}

pub(super) fn delete_department(conn: &mut Connection, id: DeptId, now: u32) -> StoreResult<bool> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting a department deletion"))?;
    let users: i64 = tx
        .query_row(
            "SELECT count(*) FROM user WHERE dept_id = ?1 AND status != ?2",
            params![id, crate::store::USER_STATUS_DEPARTED],
            |r| r.get(0),
        )
        .map_err(sql("counting a department's users"))?;
    let children: i64 = tx
        .query_row(
            "SELECT count(*) FROM department WHERE parent_id = ?1 AND status = ?2",
            params![id, DEPT_LIVE],
            |r| r.get(0),
        )
        .map_err(sql("counting a department's departments"))?;
    let live: bool = tx
        .query_row(
            "SELECT count(*) FROM department WHERE id = ?1 AND status = ?2",
            params![id, DEPT_LIVE],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql("reading a department"))?
        > 0;
    if !live {
        return Ok(false);
    }
    if users > 0 || children > 0 {
        return Err(StoreError::DeptNotEmpty(id));
    }
    // Names are unique over every row: a deleted department's name is
    // freed for a new one.
    tx.execute(
        "UPDATE department SET status = ?2, updated = max(updated + 1, ?3),
             name = name || ' (deleted #' || id || ')'
         WHERE id = ?1",
        params![id, DEPT_DELETED, now],
    )
    .map_err(sql("deleting a department"))?;
    tx.commit()
        .map_err(sql("committing a department deletion"))?;
    Ok(true)
}

pub(super) fn delete_group(
    conn: &mut Connection,
    id: GroupId,
    now: u32,
) -> StoreResult<Option<Group>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting a group deletion"))?;
    let Some(group) = groups::load(&tx, id)? else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE chat_group SET status = 1, version = version + 1, updated = ?2 WHERE id = ?1",
        params![id, now],
    )
    .map_err(sql("deleting a group"))?;
    tx.commit().map_err(sql("committing a group deletion"))?;
    Ok(Some(group))
}
