//! Multi-login policy: at most one PC and one mobile session per user.
//!
//! TeamTalk lets a user be logged in from one PC client (Windows, Mac) and
//! one mobile client (iOS, Android) at the same time. A new login kicks the
//! older session of the same class (`KICK_REASON_DUPLICATE_USER`), and a
//! mobile client may explicitly push the PC session out
//! (`KICK_REASON_MOBILE_KICK`). [`Presence`] is that table, with no I/O,
//! keyed by whatever identifies a session in the daemon; sending the kick
//! notice is the caller's job.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use crate::is_mobile;

/// The two classes of client that may be online together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientClass {
    /// Windows (0x01) and Mac (0x02).
    Pc,
    /// iOS (0x11) and Android (0x12): bit 0x10 set.
    Mobile,
}

impl ClientClass {
    /// The class of a TeamTalk `ClientType` value.
    #[must_use]
    pub const fn of(client_type: u32) -> Self {
        if is_mobile(client_type) {
            Self::Mobile
        } else {
            Self::Pc
        }
    }
}

/// Why a session is kicked; `code()` is TeamTalk's `KickReasonType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KickReason {
    /// The same user logged in again from the same class of client (1).
    DuplicateUser,
    /// The user's mobile client asked the PC session to leave (2).
    MobileKick,
}

impl KickReason {
    /// The numeric value sent in `IMKickUser`.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::DuplicateUser => 1,
            Self::MobileKick => 2,
        }
    }
}

/// A session the caller must notify and let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kick<S> {
    /// The displaced session.
    pub session: S,
    /// Why.
    pub reason: KickReason,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slots<S> {
    pc: Option<S>,
    mobile: Option<S>,
}

impl<S> Slots<S> {
    fn slot(&mut self, class: ClientClass) -> &mut Option<S> {
        match class {
            ClientClass::Pc => &mut self.pc,
            ClientClass::Mobile => &mut self.mobile,
        }
    }
}

/// Who is logged in where. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Presence<S> {
    users: HashMap<u32, Slots<S>>,
}

impl<S> Default for Presence<S> {
    fn default() -> Self {
        Self {
            users: HashMap::new(),
        }
    }
}

impl<S: Copy + Eq> Presence<S> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `session` logged in as `user_id` with `client_type`.
    /// Returns the older session of the same class, which the caller must
    /// kick with [`KickReason::DuplicateUser`]; it is no longer in the
    /// table.
    pub fn login(&mut self, user_id: u32, client_type: u32, session: S) -> Option<Kick<S>> {
        let slot = self
            .users
            .entry(user_id)
            .or_insert(Slots {
                pc: None,
                mobile: None,
            })
            .slot(ClientClass::of(client_type));
        let old = slot.replace(session)?;
        (old != session).then_some(Kick {
            session: old,
            reason: KickReason::DuplicateUser,
        })
    }

    /// Forgets `session` when it closes. A session already displaced by a
    /// newer login is not in the table and leaves it unchanged; returns
    /// whether something was removed.
    pub fn logout(&mut self, user_id: u32, session: S) -> bool {
        let Entry::Occupied(mut entry) = self.users.entry(user_id) else {
            return false;
        };
        let slots = entry.get_mut();
        let removed = [&mut slots.pc, &mut slots.mobile].into_iter().any(|slot| {
            if *slot == Some(session) {
                *slot = None;
                true
            } else {
                false
            }
        });
        if slots.pc.is_none() && slots.mobile.is_none() {
            entry.remove();
        }
        removed
    }

    /// The mobile session `by` of `user_id` asks the PC session to leave.
    /// Returns it (now removed) for the caller to kick with
    /// [`KickReason::MobileKick`]; `None` when `by` is not that user's
    /// mobile session or no PC session is online.
    pub fn mobile_kick_pc(&mut self, user_id: u32, by: S) -> Option<Kick<S>> {
        let slots = self.users.get_mut(&user_id)?;
        if slots.mobile != Some(by) {
            return None;
        }
        let session = slots.pc.take()?;
        Some(Kick {
            session,
            reason: KickReason::MobileKick,
        })
    }

    /// The session of `user_id` in `class`, if online.
    #[must_use]
    pub fn session(&self, user_id: u32, class: ClientClass) -> Option<S> {
        let slots = self.users.get(&user_id)?;
        match class {
            ClientClass::Pc => slots.pc,
            ClientClass::Mobile => slots.mobile,
        }
    }

    /// Every online session of `user_id` (zero to two).
    pub fn sessions(&self, user_id: u32) -> impl Iterator<Item = S> + '_ {
        self.users
            .get(&user_id)
            .into_iter()
            .flat_map(|s| [s.pc, s.mobile])
            .flatten()
    }

    /// Whether `user_id` has any session.
    #[must_use]
    pub fn is_online(&self, user_id: u32) -> bool {
        self.users.contains_key(&user_id)
    }

    /// Number of users with at least one session.
    #[must_use]
    pub fn users_online(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOWS: u32 = 0x01;
    const MAC: u32 = 0x02;
    const IOS: u32 = 0x11;
    const ANDROID: u32 = 0x12;

    #[test]
    fn one_pc_and_one_mobile_per_user() {
        let mut p = Presence::new();
        assert_eq!(p.login(7, WINDOWS, 'a'), None);
        assert_eq!(p.login(7, IOS, 'b'), None);
        assert_eq!(p.sessions(7).collect::<Vec<_>>(), ['a', 'b']);
        // Mac displaces Windows (same class), Android displaces iOS.
        assert_eq!(
            p.login(7, MAC, 'c'),
            Some(Kick {
                session: 'a',
                reason: KickReason::DuplicateUser
            })
        );
        assert_eq!(p.login(7, ANDROID, 'd').unwrap().session, 'b');
        assert_eq!(p.session(7, ClientClass::Pc), Some('c'));
        assert_eq!(p.session(7, ClientClass::Mobile), Some('d'));
        // Other users are independent.
        assert_eq!(p.login(8, WINDOWS, 'e'), None);
        assert_eq!(p.users_online(), 2);
    }

    #[test]
    fn logout_of_a_kicked_session_is_a_no_op() {
        let mut p = Presence::new();
        p.login(7, WINDOWS, 1u64);
        p.login(7, WINDOWS, 2);
        assert!(!p.logout(7, 1));
        assert_eq!(p.session(7, ClientClass::Pc), Some(2));
        assert!(p.logout(7, 2));
        assert!(!p.is_online(7));
        assert!(!p.logout(7, 2));
    }

    #[test]
    fn same_session_logging_in_twice_kicks_nobody() {
        let mut p = Presence::new();
        p.login(1, WINDOWS, 5u8);
        assert_eq!(p.login(1, WINDOWS, 5), None);
    }

    #[test]
    fn only_the_users_mobile_session_may_kick_the_pc_one() {
        let mut p = Presence::new();
        p.login(7, WINDOWS, 1u32);
        p.login(7, IOS, 2);
        p.login(8, IOS, 3);
        assert_eq!(
            p.mobile_kick_pc(7, 1),
            None,
            "PC cannot use the mobile kick"
        );
        assert_eq!(p.mobile_kick_pc(7, 3), None, "another user's phone cannot");
        let kick = p.mobile_kick_pc(7, 2).unwrap();
        assert_eq!((kick.session, kick.reason.code()), (1, 2));
        assert_eq!(p.session(7, ClientClass::Pc), None);
        assert_eq!(p.mobile_kick_pc(7, 2), None);
        assert_eq!(KickReason::DuplicateUser.code(), 1);
    }
}
