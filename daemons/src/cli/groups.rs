//! `teamtalk group …`: NORMAL groups, made by the administration, on the
//! store.
//!
//! The operations ([`create_normal_group`], [`add_members`],
//! [`remove_members`], [`group`], [`groups`], [`resolve_users`]) take any
//! [`Store`] and return typed results, so the admin API can call them as
//! they are; the `print_*` functions are the command's output on top.
//! Changes act as [`Actor::Admin`]: the administration may change any
//! group (`crate::store::groups`).
//!
//! Like `teamtalk user`, the command opens the SQLite database the running
//! db_proxy_server uses (WAL lets both write), an existing one only, and
//! logs which ([`super::users::open`]). The msg_servers are not told
//! of a change made here: members who are online when they are added or
//! removed follow it from their next login (clients learn of NORMAL groups
//! from the 0x0401 list they ask for at login anyway).

use std::io::Write;
use std::path::Path;

use super::users::{Access, open};
use crate::store::{
    Actor, Group, GroupId, GroupType, MemberChange, MembersChanged, NewGroup, Store, StoreError,
    UserId,
};

/// What went wrong with a group command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupsError {
    /// The store refused, or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A user named on the command line does not exist.
    #[error("no user named {0:?} (see `teamtalk user list`)")]
    NoSuchUser(String),
    /// The group does not exist.
    #[error("no group {0} (see `teamtalk group list`)")]
    NoSuchGroup(GroupId),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Resolves users named by id or by login name, in order.
///
/// # Errors
/// [`GroupsError::NoSuchUser`] for the first that names nobody.
pub fn resolve_users(store: &dyn Store, names: &[String]) -> Result<Vec<UserId>, GroupsError> {
    let need_directory = names.iter().any(|n| n.parse::<UserId>().is_err());
    let directory = if need_directory {
        store.users_updated_since(0)?
    } else {
        Vec::new()
    };
    let ids: Vec<UserId> = names.iter().filter_map(|n| n.parse().ok()).collect();
    let known = store.users_by_ids(&ids)?;
    names
        .iter()
        .map(|n| {
            let found = match n.parse::<UserId>() {
                Ok(id) => known.iter().any(|u| u.id == id).then_some(id),
                Err(_) => directory.iter().find(|u| &u.name == n).map(|u| u.id),
            };
            found.ok_or_else(|| GroupsError::NoSuchUser(n.clone()))
        })
        .collect()
}

/// Creates a NORMAL group with its creator (a member) and members.
///
/// # Errors
/// What the store refuses (an empty or long name, too many members, a
/// user who does not exist).
pub fn create_normal_group(
    store: &dyn Store,
    name: &str,
    avatar: &str,
    creator: UserId,
    members: &[UserId],
) -> Result<Group, GroupsError> {
    Ok(store.create_group(&NewGroup {
        name: name.to_owned(),
        avatar: avatar.to_owned(),
        creator,
        group_type: GroupType::Normal,
        members: members.to_vec(),
    })?)
}

/// Adds members to any group (the version moves when someone was added).
///
/// # Errors
/// [`GroupsError::NoSuchGroup`], or what the store refuses.
pub fn add_members(
    store: &dyn Store,
    group: GroupId,
    users: &[UserId],
) -> Result<MembersChanged, GroupsError> {
    change(store, group, MemberChange::Add, users)
}

/// Removes members from any group.
///
/// # Errors
/// [`GroupsError::NoSuchGroup`], or what the store refuses.
pub fn remove_members(
    store: &dyn Store,
    group: GroupId,
    users: &[UserId],
) -> Result<MembersChanged, GroupsError> {
    change(store, group, MemberChange::Remove, users)
}

fn change(
    store: &dyn Store,
    group: GroupId,
    kind: MemberChange,
    users: &[UserId],
) -> Result<MembersChanged, GroupsError> {
    store
        .change_group_members(Actor::Admin, group, kind, users)
        .map_err(|e| match e {
            StoreError::NoSuchGroup(g) => GroupsError::NoSuchGroup(g),
            e => GroupsError::Store(e),
        })
}

/// One group with its members.
///
/// # Errors
/// [`GroupsError::NoSuchGroup`], or a store failure.
pub fn group(store: &dyn Store, id: GroupId) -> Result<Group, GroupsError> {
    store.group(id)?.ok_or(GroupsError::NoSuchGroup(id))
}

/// Every group, by id.
///
/// # Errors
/// A store failure.
pub fn groups(store: &dyn Store) -> Result<Vec<Group>, GroupsError> {
    Ok(store.groups()?)
}

fn type_name(t: GroupType) -> &'static str {
    match t {
        GroupType::Normal => "normal",
        GroupType::Tmp => "tmp",
    }
}

/// `teamtalk group create`: prints the new group's id and members.
///
/// # Errors
/// As [`create_normal_group`] and [`resolve_users`].
pub fn print_create(
    data_dir: &Path,
    name: &str,
    avatar: &str,
    creator: &str,
    members: &[String],
    out: &mut dyn Write,
) -> Result<GroupId, GroupsError> {
    let store = open(data_dir, Access::Write)?;
    let creator = resolve_users(&store, &[creator.to_owned()])?[0];
    let members = resolve_users(&store, members)?;
    let g = create_normal_group(&store, name, avatar, creator, &members)?;
    writeln!(
        out,
        "created group {} {:?} (normal, version {}) with members {:?}",
        g.id,
        g.name,
        g.version,
        g.member_ids()
    )?;
    Ok(g.id)
}

/// `teamtalk group list`: a table of every group.
///
/// # Errors
/// Store or output errors.
pub fn print_list(data_dir: &Path, out: &mut dyn Write) -> Result<usize, GroupsError> {
    let store = open(data_dir, Access::Read)?;
    let all = groups(&store)?;
    writeln!(
        out,
        "{:>8}  {:<24} {:<6} {:>8} {:>8} {:>8}",
        "id", "name", "type", "creator", "members", "version"
    )?;
    for g in &all {
        writeln!(
            out,
            "{:>8}  {:<24} {:<6} {:>8} {:>8} {:>8}",
            g.id,
            g.name,
            type_name(g.group_type),
            g.creator,
            g.members.len(),
            g.version
        )?;
    }
    Ok(all.len())
}

/// `teamtalk group show`: a group and its members.
///
/// # Errors
/// [`GroupsError::NoSuchGroup`], store or output errors.
pub fn print_show(data_dir: &Path, id: GroupId, out: &mut dyn Write) -> Result<(), GroupsError> {
    let store = open(data_dir, Access::Read)?;
    let g = group(&store, id)?;
    writeln!(
        out,
        "group {} {:?}: {}, creator {}, version {}, {} members, last message {}",
        g.id,
        g.name,
        type_name(g.group_type),
        g.creator,
        g.version,
        g.members.len(),
        g.last_msg_id
    )?;
    let users = store.users_by_ids(&g.member_ids())?;
    writeln!(out, "{:>8}  {:<24} {:<6}", "id", "name", "muted")?;
    for m in &g.members {
        let name = users
            .iter()
            .find(|u| u.id == m.user_id)
            .map_or("", |u| u.name.as_str());
        let muted = if m.shield { "yes" } else { "no" };
        writeln!(out, "{:>8}  {:<24} {:<6}", m.user_id, name, muted)?;
    }
    Ok(())
}

/// `teamtalk group add` / `remove`: prints who changed and the version.
///
/// # Errors
/// As [`add_members`] and [`resolve_users`].
pub fn print_change(
    data_dir: &Path,
    id: GroupId,
    add: bool,
    users: &[String],
    out: &mut dyn Write,
) -> Result<MembersChanged, GroupsError> {
    let store = open(data_dir, Access::Write)?;
    let users = resolve_users(&store, users)?;
    let c = if add {
        add_members(&store, id, &users)?
    } else {
        remove_members(&store, id, &users)?
    };
    let verb = if add { "added" } else { "removed" };
    writeln!(
        out,
        "group {id}: {verb} {:?}; now version {} with {} members",
        c.changed,
        c.version,
        c.members.len()
    )?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::md5_hex;
    use crate::store::{NewUser, SqliteStore};

    fn seeded(dir: &Path) {
        let store = SqliteStore::open(dir).unwrap();
        for name in ["alice", "bob", "carol"] {
            let user = NewUser {
                name: name.into(),
                ..NewUser::default()
            };
            store.add_user(&user, &md5_hex(b"pw")).unwrap();
        }
    }

    #[test]
    fn normal_groups_round_trip_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        seeded(dir.path());
        let mut out = Vec::new();
        let id = print_create(
            dir.path(),
            "engineering",
            "",
            "alice",
            &["bob".into(), "2".into()],
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(std::mem::take(&mut out)).unwrap();
        assert!(
            text.contains("created group") && text.contains("[1, 2]"),
            "{text}"
        );

        let c = print_change(dir.path(), id, true, &["carol".into()], &mut out).unwrap();
        assert_eq!((c.changed, c.version), (vec![3], 2));
        let c = print_change(dir.path(), id, false, &["bob".into()], &mut out).unwrap();
        assert_eq!((c.members, c.version), (vec![1, 3], 3));
        out.clear();
        assert_eq!(print_list(dir.path(), &mut out).unwrap(), 1);
        let text = String::from_utf8(std::mem::take(&mut out)).unwrap();
        assert!(
            text.contains("engineering") && text.contains("normal"),
            "{text}"
        );
        print_show(dir.path(), id, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("alice") && text.contains("carol") && !text.contains("bob"),
            "{text}"
        );

        let store = SqliteStore::open(dir.path()).unwrap();
        let g = group(&store, id).unwrap();
        assert_eq!(
            (g.group_type, g.version, g.creator),
            (GroupType::Normal, 3, 1)
        );
        assert_eq!(
            store.user_groups(3, Some(GroupType::Normal)).unwrap().len(),
            1
        );
    }

    #[test]
    fn unknown_users_and_groups_are_named() {
        let dir = tempfile::tempdir().unwrap();
        seeded(dir.path());
        let mut out = Vec::new();
        let e = print_create(dir.path(), "x", "", "alice", &["dave".into()], &mut out).unwrap_err();
        assert!(
            matches!(&e, GroupsError::NoSuchUser(n) if n == "dave"),
            "{e}"
        );
        let e = print_create(dir.path(), "x", "", "99", &[], &mut out).unwrap_err();
        assert!(matches!(&e, GroupsError::NoSuchUser(n) if n == "99"), "{e}");
        let e = print_change(dir.path(), 7, true, &["bob".into()], &mut out).unwrap_err();
        assert!(matches!(e, GroupsError::NoSuchGroup(7)), "{e}");
        assert!(matches!(
            print_show(dir.path(), 7, &mut out),
            Err(GroupsError::NoSuchGroup(7))
        ));
        let store = SqliteStore::open(dir.path()).unwrap();
        assert!(groups(&store).unwrap().is_empty());
    }
}
