//! The administration's writes on SQLite (the admin API): profile
//! changes and group deletions.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{USER_COLUMNS, groups, sql, user_from_row};
use crate::store::{Group, GroupId, StoreResult, User, UserId, UserUpdate};

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
