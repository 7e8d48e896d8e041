//! [`GroupIndex`]: which of this msg_server's online users are in which
//! group, so a group message is delivered from memory and route_server
//! only sends it here when a member is online here.
//!
//! TeamTalk's msg_server asked db_proxy for a group's whole member list on
//! every group message, on every msg_server. Here each msg_server learns a
//! user's groups once, when the user logs in (`IMUserGroupsReq`), keeps
//! them current from the change-member notices that pass through it, and
//! forgets them when the user's last session here ends. Delivering a group
//! message then costs one lookup and one send per local member online.
//!
//! The index also says when this msg_server starts or stops hosting a
//! member of a group: those are the subscriptions it reports to
//! route_server (`IMGroupSubscription`).
//!
//! Our db_proxy sends the groups with the login's answer (`IMValidateRsp`
//! field `groups`), so most logins need no `IMUserGroupsReq`. Those groups
//! were read before the user was online here, when a change-member notice
//! about them would not have been applied: [`ChangeLog`] remembers whose
//! membership changed while logins were under way, and such a login asks
//! again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// Most groups one user is indexed in; a user in more (a hostile or broken
/// store) gets the first this many.
pub const MAX_GROUPS_PER_USER: usize = 10_000;

/// Groups whose local membership went from none to some (`joined`) or
/// from some to none (`left`): the subscription changes to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Groups this msg_server now hosts members of.
    pub joined: Vec<u32>,
    /// Groups this msg_server no longer hosts members of.
    pub left: Vec<u32>,
}

impl Changes {
    /// Whether nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

/// Local online users and their groups. See the [module docs](self).
#[derive(Debug, Default)]
pub struct GroupIndex {
    /// Online user -> the groups they are in (loaded at login). Every
    /// user online here has an entry, most of them with few groups or
    /// none, so the set is a sorted boxed slice (16 bytes) rather than a
    /// hash set (48 bytes even when empty).
    groups_of: HashMap<u32, GroupSet>,
    /// Group -> its members online here.
    members: HashMap<u32, HashSet<u32>>,
}

impl GroupIndex {
    /// Nobody indexed.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The user's groups arrived (at login): index them. A user already
    /// indexed gets the new set in place of the old.
    pub fn load(&mut self, user: u32, groups: impl IntoIterator<Item = u32>) -> Changes {
        let new = GroupSet::from_iter(groups.into_iter().take(MAX_GROUPS_PER_USER));
        let mut changes = self.forget(user);
        for &g in new.iter() {
            let m = self.members.entry(g).or_default();
            if m.is_empty() {
                changes.joined.push(g);
            }
            m.insert(user);
        }
        self.groups_of.insert(user, new);
        normalize(&mut changes);
        changes
    }

    /// The user's last session here ended: forget them.
    pub fn forget(&mut self, user: u32) -> Changes {
        let mut changes = Changes::default();
        let Some(groups) = self.groups_of.remove(&user) else {
            return changes;
        };
        for &g in groups.iter() {
            if let Some(m) = self.members.get_mut(&g) {
                m.remove(&user);
                if m.is_empty() {
                    self.members.remove(&g);
                    changes.left.push(g);
                }
            }
        }
        changes
    }

    /// Members were added to or removed from `group`: users indexed here
    /// (online here) follow. Users not online here are ignored: they load
    /// their groups when they log in.
    pub fn change(&mut self, group: u32, added: &[u32], removed: &[u32]) -> Changes {
        let mut changes = Changes::default();
        for &u in added {
            let Some(gs) = self.groups_of.get_mut(&u) else {
                continue;
            };
            if gs.len() >= MAX_GROUPS_PER_USER || !gs.insert(group) {
                continue;
            }
            let m = self.members.entry(group).or_default();
            if m.is_empty() {
                changes.joined.push(group);
            }
            m.insert(u);
        }
        for &u in removed {
            let Some(gs) = self.groups_of.get_mut(&u) else {
                continue;
            };
            if !gs.remove(&group) {
                continue;
            }
            if let Some(m) = self.members.get_mut(&group) {
                m.remove(&u);
                if m.is_empty() {
                    self.members.remove(&group);
                    changes.left.push(group);
                }
            }
        }
        normalize(&mut changes);
        changes
    }

    /// Members of `group` online here.
    pub fn members(&self, group: u32) -> impl Iterator<Item = u32> + '_ {
        self.members.get(&group).into_iter().flatten().copied()
    }

    /// Whether `user` is indexed (their groups arrived).
    #[must_use]
    pub fn is_loaded(&self, user: u32) -> bool {
        self.groups_of.contains_key(&user)
    }

    /// Whether `user` is, as far as this index knows, in `group`.
    #[must_use]
    pub fn is_member(&self, user: u32, group: u32) -> bool {
        self.groups_of.get(&user).is_some_and(|g| g.contains(group))
    }

    /// Every group with a member online here, sorted: the whole
    /// subscription sent to route_server when its link (re)connects.
    #[must_use]
    pub fn hosted(&self) -> Vec<u32> {
        let set: BTreeSet<u32> = self.members.keys().copied().collect();
        set.into_iter().collect()
    }

    /// Groups with a member online here.
    #[must_use]
    pub fn group_count(&self) -> usize {
        self.members.len()
    }

    /// Users whose groups are indexed.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn indexed_users(&self) -> impl Iterator<Item = u32> + '_ {
        self.groups_of.keys().copied()
    }

    /// Checks that the two maps say the same thing: a user is a member of
    /// a group in one exactly when the group lists the user in the other,
    /// no group is listed without members, and no user in more than
    /// [`MAX_GROUPS_PER_USER`] groups.
    ///
    /// # Errors
    /// A description of the first disagreement.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        for (user, groups) in &self.groups_of {
            if groups.len() > MAX_GROUPS_PER_USER {
                return Err(format!("user {user} indexed in {} groups", groups.len()));
            }
            for g in groups.iter() {
                if !self.members.get(g).is_some_and(|m| m.contains(user)) {
                    return Err(format!(
                        "user {user} in group {g} but not among its members"
                    ));
                }
            }
        }
        for (g, members) in &self.members {
            if members.is_empty() {
                return Err(format!("group {g} listed with no member"));
            }
            for user in members {
                if !self.groups_of.get(user).is_some_and(|gs| gs.contains(*g)) {
                    return Err(format!("group {g} lists user {user}, who is not in it"));
                }
            }
        }
        Ok(())
    }
}

/// A group both joined and left in one change is neither.
fn normalize(c: &mut Changes) {
    let joined: HashSet<u32> = c.joined.iter().copied().collect();
    let left: HashSet<u32> = c.left.iter().copied().collect();
    c.joined.retain(|g| !left.contains(g));
    c.left.retain(|g| !joined.contains(g));
    c.joined.sort_unstable();
    c.left.sort_unstable();
    c.joined.dedup();
    c.left.dedup();
}

/// A user's groups: sorted, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupSet(Box<[u32]>);

impl GroupSet {
    fn from_iter(groups: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = groups.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self(v.into_boxed_slice())
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> std::slice::Iter<'_, u32> {
        self.0.iter()
    }

    fn contains(&self, group: u32) -> bool {
        self.0.binary_search(&group).is_ok()
    }

    /// Adds `group`; false if it was there.
    fn insert(&mut self, group: u32) -> bool {
        let Err(at) = self.0.binary_search(&group) else {
            return false;
        };
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.insert(at, group);
        self.0 = v.into_boxed_slice();
        true
    }

    /// Removes `group`; false if it was not there.
    fn remove(&mut self, group: &u32) -> bool {
        let Ok(at) = self.0.binary_search(group) else {
            return false;
        };
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.remove(at);
        self.0 = v.into_boxed_slice();
        true
    }
}

/// Most changes [`ChangeLog`] remembers; older ones are summed up by its
/// floor (a login older than the floor asks for its groups again).
pub const CHANGE_LOG_CAPACITY: usize = 8192;

/// Whose group membership changed, and when, while logins were under way:
/// groups read with a login (in db_proxy, before the user was online here)
/// are used only if no change-member notice about that user passed since
/// the login was sent. Entries older than a login can be pending are
/// pruned ([`ChangeLog::prune`]), so the log stays empty while groups do
/// not change; under a storm of changes it keeps the last
/// [`CHANGE_LOG_CAPACITY`] and answers "changed" for anything older.
#[derive(Debug, Default)]
pub struct ChangeLog {
    /// Sequence number of the last change recorded.
    seq: u64,
    /// `(seq, user, wall-clock second)`, oldest first.
    entries: VecDeque<(u64, u32, u32)>,
    /// The newest sequence number dropped for room (not by age): what
    /// happened up to it is no longer known.
    floor: u64,
}

impl ChangeLog {
    /// Where the log stands: a login remembers it when it is sent.
    #[must_use]
    pub fn mark(&self) -> u64 {
        self.seq
    }

    /// `users`' membership changed at `now`.
    pub fn record(&mut self, users: impl IntoIterator<Item = u32>, now: u32) {
        for user in users {
            self.seq += 1;
            if self.entries.len() == CHANGE_LOG_CAPACITY
                && let Some((dropped, _, _)) = self.entries.pop_front()
            {
                self.floor = dropped;
            }
            self.entries.push_back((self.seq, user, now));
        }
    }

    /// Whether `user`'s membership may have changed since `mark`: a
    /// change recorded after it, or one the log no longer holds.
    #[must_use]
    pub fn changed_since(&self, user: u32, mark: u64) -> bool {
        mark < self.floor
            || self
                .entries
                .iter()
                .rev()
                .take_while(|(seq, _, _)| *seq > mark)
                .any(|(_, u, _)| *u == user)
    }

    /// Forgets changes made before `before` (wall-clock seconds): no
    /// login sent before then is still waiting.
    pub fn prune(&mut self, before: u32) {
        while self.entries.front().is_some_and(|(_, _, at)| *at < before) {
            self.entries.pop_front();
        }
    }

    /// Changes remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn subscriptions_follow_the_first_and_last_member() {
        let mut ix = GroupIndex::new();
        let c = ix.load(1, [10, 20]);
        assert_eq!(c.joined, [10, 20]);
        let c = ix.load(2, [20, 30]);
        assert_eq!(c.joined, [30], "20 was hosted already");
        assert_eq!(ix.hosted(), [10, 20, 30]);
        let mut m: Vec<u32> = ix.members(20).collect();
        m.sort_unstable();
        assert_eq!(m, [1, 2]);

        let c = ix.forget(1);
        assert_eq!(c.left, [10]);
        assert!(c.joined.is_empty());

        // 3 is not online here: a change about them is ignored.
        let c = ix.change(30, &[3], &[2]);
        assert_eq!(c.left, [30]);
        assert_eq!(ix.hosted(), [20]);
        assert!(!ix.is_member(3, 30));

        let c = ix.change(40, &[2], &[]);
        assert_eq!(c.joined, [40]);
        assert!(ix.is_member(2, 40));
        // Reloading replaces a user's groups.
        let c = ix.load(2, [50]);
        assert_eq!((c.joined, c.left), (vec![50], vec![20, 40]));
    }

    proptest! {
        /// A group set answers as an ordered set does.
        #[test]
        fn a_group_set_is_a_set(start in proptest::collection::vec(0u32..20, 0..10), ops in proptest::collection::vec((proptest::bool::ANY, 0u32..20), 0..40)) {
            let mut set = GroupSet::from_iter(start.iter().copied());
            let mut model: BTreeSet<u32> = start.into_iter().collect();
            for (add, g) in ops {
                if add {
                    prop_assert_eq!(set.insert(g), model.insert(g));
                } else {
                    prop_assert_eq!(set.remove(&g), model.remove(&g));
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert!(set.iter().copied().eq(model.iter().copied()));
                prop_assert!((0..20).all(|g| set.contains(g) == model.contains(&g)));
            }
        }

        /// Whatever happens, `members` and `groups_of` agree, and the
        /// changes reported add up to what is hosted.
        #[test]
        fn the_two_maps_agree(ops in proptest::collection::vec((0u8..4, 0u32..5, 0u32..6), 0..60)) {
            let mut ix = GroupIndex::new();
            let mut hosted: BTreeSet<u32> = BTreeSet::new();
            for (op, user, group) in ops {
                let c = match op {
                    0 => ix.load(user, [group, group + 1]),
                    1 => ix.forget(user),
                    2 => ix.change(group, &[user], &[]),
                    _ => ix.change(group, &[], &[user]),
                };
                for g in &c.joined {
                    prop_assert!(hosted.insert(*g), "joined twice: {}", g);
                }
                for g in &c.left {
                    prop_assert!(hosted.remove(g), "left while not hosted: {}", g);
                }
                prop_assert_eq!(ix.hosted(), hosted.iter().copied().collect::<Vec<_>>());
                for (g, ms) in &ix.members {
                    prop_assert!(!ms.is_empty());
                    for u in ms {
                        prop_assert!(ix.is_member(*u, *g));
                    }
                }
                for (u, gs) in &ix.groups_of {
                    for g in gs.iter() {
                        prop_assert!(ix.members.get(g).is_some_and(|m| m.contains(u)));
                    }
                }
            }
        }
    }

    #[test]
    fn change_log_tells_which_logins_saw_a_change() {
        let mut log = ChangeLog::default();
        let before = log.mark();
        assert!(!log.changed_since(7, before));
        log.record([7, 8], 100);
        let after = log.mark();
        assert!(log.changed_since(7, before));
        assert!(log.changed_since(8, before));
        assert!(!log.changed_since(9, before), "another user");
        assert!(!log.changed_since(7, after), "sent after the change");
        // Age: pruned once no login that old can wait.
        log.prune(100);
        assert_eq!(log.len(), 2);
        log.prune(101);
        assert!(log.is_empty());
        assert!(!log.changed_since(7, before), "pruned by age: forgotten");
    }

    #[test]
    fn change_log_is_bounded_and_then_errs_on_the_side_of_asking() {
        let mut log = ChangeLog::default();
        let start = log.mark();
        log.record(1..=u32::try_from(CHANGE_LOG_CAPACITY).unwrap() + 10, 5);
        assert_eq!(log.len(), CHANGE_LOG_CAPACITY);
        // The first ten were dropped for room: a login from before them
        // cannot know, so it counts as changed, whoever the user.
        assert!(log.changed_since(999_999, start));
        let recent = log.mark();
        assert!(!log.changed_since(3, recent));
        log.record([3], 6);
        assert!(log.changed_since(3, recent));
    }
}
