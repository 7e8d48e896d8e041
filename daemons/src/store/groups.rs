//! Groups as the store models them: TeamTalk's `IMGroup` and
//! `IMGroupMember`, and the rules every store applies to them.
//!
//! The types are storage-neutral, like the rest of [`Store`](super::Store):
//! the embedded SQLite store and a later store on TeamTalk's own MySQL and
//! Redis schema both implement them.
//!
//! # The model (TeamTalk's)
//!
//! - A group has an id, a name, an avatar URL, a creator, a type (NORMAL 1,
//!   made by the administration; TMP 2, made by clients), a **version** and
//!   its members. The version starts at 1 and is bumped by every change of
//!   the group or of its members, so a client that cached a group's details
//!   asks again only for groups whose version moved.
//! - Each member has a push shield (the group muted for pushes) and the time
//!   they joined.
//! - Group messages have their own id sequence per group, from 1, as
//!   TeamTalk's `group_msg_id_<gid>` counter.
//!
//! # Unread counts without a row per member and message
//!
//! Storing a group message costs the same few writes whatever the group's
//! size: the group's last message id moves, the message is inserted, and
//! the sender's read point moves. Each member keeps one **read point**, the
//! last message id they have read; their unread count in the group is
//! `last_msg_id − read_point` (TeamTalk kept the same difference in Redis:
//! the group's total minus the member's snapshot of it). A read ack moves
//! the read point to the group's last id; joining sets it there too, so a
//! new member starts with nothing unread. Reading a user's unread counts
//! costs one row per group they are in.
//!
//! # What members see
//!
//! A member reads the messages posted after they joined (TeamTalk compared
//! message times with the join time; we compare ids, which cannot tie):
//! history, messages by id, the latest id and the latest message of the
//! group's session stop at the member's **join point**, the group's last id
//! when they joined. A non-member reads nothing and cannot post; the check
//! is made in the transaction that stores the message, so a member removed
//! a moment ago cannot post through a msg_server that has not heard of it.
//!
//! # Who may change the members ([`check_member_change`])
//!
//! TeamTalk: on a TMP group anyone may add; everything else (removing, and
//! any change of a NORMAL group) only the creator; user 0 anything. Ours:
//!
//! - [`Actor::Admin`] (the `teamtalk group` command, the admin API, and
//!   `user_id` 0 in a request from a cluster server such as
//!   http_msg_server) may do anything. msg_server puts the session's own
//!   user id in every request it forwards, and no user has id 0, so a
//!   client can never act as the administration.
//! - A NORMAL group may be created with creator 0: made by the
//!   administration, which is not a member (TeamTalk's http_msg_server
//!   creates its groups so). A TMP group's creator is a user.
//! - A user must be a member of the group to change it at all (TeamTalk let
//!   strangers add people to any TMP group).
//! - TMP groups: any member may add; the creator may remove anyone; any
//!   member may remove themself (leave), which TeamTalk did not allow.
//! - NORMAL groups belong to the administration: only the creator may add
//!   or remove, and members cannot leave on their own.

use super::{MsgId, UserId};

/// A group id (`IMGroup.id`, `uint32` on the wire).
pub type GroupId = u32;

/// Most members a group may have. TeamTalk had no limit; ours keeps a
/// group's details (0x0404, every member listed) and its member-change
/// replies far below the frame limit (a member id takes at most 6 bytes on
/// the wire), and bounds what one request can make the store do.
pub const MAX_GROUP_MEMBERS: usize = 10_000;
/// Most groups one user is listed in (0x0402, 0x0792): a user in more gets
/// the first this many by group id. It matches what a msg_server indexes
/// (`crate::msg::groups::MAX_GROUPS_PER_USER`).
pub const MAX_GROUPS_PER_USER: usize = 10_000;
/// Longest group name, in bytes (TeamTalk's column holds 256 characters).
pub const MAX_GROUP_NAME_LEN: usize = 256;
/// Longest group avatar URL, in bytes.
pub const MAX_GROUP_AVATAR_LEN: usize = 1024;

/// TeamTalk's `GroupType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupType {
    /// A fixed group, made by the administration (wire value 1).
    Normal,
    /// A temporary group, made by a client (wire value 2).
    Tmp,
}

impl GroupType {
    /// The wire value.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        match self {
            Self::Normal => 1,
            Self::Tmp => 2,
        }
    }

    /// From the wire value; `None` for values TeamTalk does not define.
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Normal),
            2 => Some(Self::Tmp),
            _ => None,
        }
    }
}

/// A group to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    /// Name, non-empty, at most [`MAX_GROUP_NAME_LEN`] bytes.
    pub name: String,
    /// Avatar URL, at most [`MAX_GROUP_AVATAR_LEN`] bytes.
    pub avatar: String,
    /// Creator: an existing user, who is always a member (TeamTalk left the
    /// creator out unless the list named them).
    pub creator: UserId,
    /// Type.
    pub group_type: GroupType,
    /// The other members (duplicates and the creator ignored); existing
    /// users only, at most [`MAX_GROUP_MEMBERS`] with the creator.
    pub members: Vec<UserId>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The user.
    pub user_id: UserId,
    /// The group is muted for this member's pushes.
    pub shield: bool,
    /// When they last joined (Unix seconds).
    pub joined: u32,
}

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group id.
    pub id: GroupId,
    /// Name.
    pub name: String,
    /// Avatar URL.
    pub avatar: String,
    /// Creator.
    pub creator: UserId,
    /// Type.
    pub group_type: GroupType,
    /// Version: 1 at creation, bumped by every change of the group or its
    /// members.
    pub version: u32,
    /// The group's last message id (0 before the first message).
    pub last_msg_id: MsgId,
    /// Creation time (Unix seconds).
    pub created: u32,
    /// Last change of the group or its members (Unix seconds).
    pub updated: u32,
    /// Current members, by user id.
    pub members: Vec<GroupMember>,
}

impl Group {
    /// The member entry of `user`, `None` for a non-member.
    #[must_use]
    pub fn member(&self, user: UserId) -> Option<&GroupMember> {
        self.members
            .binary_search_by_key(&user, |m| m.user_id)
            .ok()
            .and_then(|i| self.members.get(i))
    }

    /// The members' user ids, in order.
    #[must_use]
    pub fn member_ids(&self) -> Vec<UserId> {
        self.members.iter().map(|m| m.user_id).collect()
    }
}

/// A group's id and version (`GroupVersionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupVersion {
    /// Group id.
    pub id: GroupId,
    /// Version.
    pub version: u32,
}

/// What a member change does (TeamTalk's `GroupModifyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberChange {
    /// Add members (wire value 1).
    Add,
    /// Remove members (wire value 2).
    Remove,
}

impl MemberChange {
    /// The wire value.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        match self {
            Self::Add => 1,
            Self::Remove => 2,
        }
    }

    /// From the wire value; `None` for values TeamTalk does not define.
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Add),
            2 => Some(Self::Remove),
            _ => None,
        }
    }
}

/// Who asks for a change of members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Actor {
    /// The administration (the `teamtalk group` command, the admin API):
    /// may change any group.
    Admin,
    /// A user, through a msg_server: bound by [`check_member_change`].
    User(UserId),
}

/// What a member change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersChanged {
    /// The group.
    pub group: GroupId,
    /// Its version after the change (unchanged when nothing changed).
    pub version: u32,
    /// The users actually added or removed (those already in, or already
    /// out, are left out), sorted.
    pub changed: Vec<UserId>,
    /// The members after the change, sorted.
    pub members: Vec<UserId>,
}

/// Why a member change is not allowed, as [`check_member_change`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeRefused {
    /// The requester is not a member of the group.
    #[error("only members may change a group's members")]
    NotMember,
    /// Adding to a NORMAL group, or removing someone else, by anyone but
    /// the creator.
    #[error("only the group's creator may do this")]
    NotCreator,
}

/// The permission rule for a member change (see the [module docs](self)),
/// written once for every store: `creator` and `group_type` describe the
/// group, `requester_is_member` whether the requester is in it now, and
/// `users` who is to be added or removed.
///
/// # Errors
/// [`ChangeRefused`] naming why the change is not allowed.
pub fn check_member_change(
    actor: Actor,
    group_type: GroupType,
    creator: UserId,
    requester_is_member: bool,
    change: MemberChange,
    users: &[UserId],
) -> Result<(), ChangeRefused> {
    let Actor::User(requester) = actor else {
        return Ok(());
    };
    if !requester_is_member {
        return Err(ChangeRefused::NotMember);
    }
    let is_creator = requester == creator;
    let allowed = match (group_type, change) {
        (GroupType::Normal, _) => is_creator,
        (GroupType::Tmp, MemberChange::Add) => true,
        (GroupType::Tmp, MemberChange::Remove) => {
            is_creator || users.iter().all(|&u| u == requester)
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(ChangeRefused::NotCreator)
    }
}

/// Checks a new group's fields that need no database: name and avatar
/// lengths, the creator, the member count. Returns the members, creator
/// included, sorted and deduplicated. Creator 0 stands for the
/// administration and is allowed for NORMAL groups only; it is no member.
///
/// # Errors
/// A reason, for [`StoreError::Invalid`](super::StoreError::Invalid).
pub fn normalize_new_group(group: &NewGroup) -> Result<Vec<UserId>, &'static str> {
    if group.name.is_empty() {
        return Err("a group needs a name");
    }
    if group.name.len() > MAX_GROUP_NAME_LEN {
        return Err("group name too long");
    }
    if group.avatar.len() > MAX_GROUP_AVATAR_LEN {
        return Err("group avatar URL too long");
    }
    // Creator 0 is the administration (TeamTalk's http_msg_server sends
    // 0): allowed for NORMAL groups only, and not a member.
    let by_administration = group.creator == 0 && group.group_type == GroupType::Normal;
    if group.creator == 0 && !by_administration {
        return Err("user id 0 is not a user");
    }
    // Bounded before sorting, so a huge list costs nothing.
    if group.members.len() > MAX_GROUP_MEMBERS {
        return Err("too many members");
    }
    let mut members = group.members.clone();
    if !by_administration {
        members.push(group.creator);
    }
    members.sort_unstable();
    members.dedup();
    if members.first() == Some(&0) {
        return Err("user id 0 is not a user");
    }
    if members.len() > MAX_GROUP_MEMBERS {
        return Err("too many members");
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values() {
        for t in [GroupType::Normal, GroupType::Tmp] {
            assert_eq!(GroupType::from_u32(t.as_u32()), Some(t));
        }
        for c in [MemberChange::Add, MemberChange::Remove] {
            assert_eq!(MemberChange::from_u32(c.as_u32()), Some(c));
        }
        assert_eq!(GroupType::from_u32(0), None);
        assert_eq!(MemberChange::from_u32(3), None);
    }

    #[test]
    fn permission_rule() {
        use Actor::{Admin, User};
        use GroupType::{Normal, Tmp};
        use MemberChange::{Add, Remove};
        let check = |actor, t, member, change, users: &[u32]| {
            check_member_change(actor, t, 1, member, change, users)
        };
        // The administration may do anything, member or not.
        for t in [Normal, Tmp] {
            for c in [Add, Remove] {
                assert_eq!(check(Admin, t, false, c, &[5]), Ok(()));
            }
        }
        // Strangers may do nothing, the creator included once they left.
        assert_eq!(
            check(User(9), Tmp, false, Add, &[5]),
            Err(ChangeRefused::NotMember)
        );
        assert_eq!(
            check(User(1), Tmp, false, Add, &[5]),
            Err(ChangeRefused::NotMember)
        );
        // TMP: any member adds; the creator removes anyone; others leave.
        assert_eq!(check(User(2), Tmp, true, Add, &[5]), Ok(()));
        assert_eq!(check(User(1), Tmp, true, Remove, &[2, 3]), Ok(()));
        assert_eq!(check(User(2), Tmp, true, Remove, &[2]), Ok(()));
        assert_eq!(
            check(User(2), Tmp, true, Remove, &[2, 3]),
            Err(ChangeRefused::NotCreator)
        );
        // NORMAL: the creator only, leaving included.
        assert_eq!(check(User(1), Normal, true, Add, &[5]), Ok(()));
        assert_eq!(check(User(1), Normal, true, Remove, &[5]), Ok(()));
        assert_eq!(
            check(User(2), Normal, true, Add, &[5]),
            Err(ChangeRefused::NotCreator)
        );
        assert_eq!(
            check(User(2), Normal, true, Remove, &[2]),
            Err(ChangeRefused::NotCreator)
        );
    }

    #[test]
    fn new_groups_are_normalized_and_bounded() {
        let g = |name: &str, creator, members: Vec<u32>| NewGroup {
            name: name.to_owned(),
            avatar: String::new(),
            creator,
            group_type: GroupType::Tmp,
            members,
        };
        assert_eq!(
            normalize_new_group(&g("x", 3, vec![5, 1, 5, 3])),
            Ok(vec![1, 3, 5])
        );
        assert!(normalize_new_group(&g("", 3, vec![])).is_err());
        assert!(normalize_new_group(&g("x", 0, vec![1])).is_err());
        assert!(normalize_new_group(&g("x", 1, vec![0])).is_err());
        assert!(normalize_new_group(&g(&"n".repeat(MAX_GROUP_NAME_LEN + 1), 1, vec![])).is_err());
        let many: Vec<u32> = (2..=u32::try_from(MAX_GROUP_MEMBERS).unwrap() + 1).collect();
        assert!(
            normalize_new_group(&g("x", 1, many)).is_err(),
            "creator makes one too many"
        );
        let just: Vec<u32> = (2..=u32::try_from(MAX_GROUP_MEMBERS).unwrap()).collect();
        assert_eq!(
            normalize_new_group(&g("x", 1, just)).unwrap().len(),
            MAX_GROUP_MEMBERS
        );
    }
}
