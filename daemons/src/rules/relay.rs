//! Who receives a PDU that one msg_server hands to route_server for the
//! others, written once for both ends.
//!
//! route_server uses it to pick the msg_servers a relayed PDU goes to
//! (only those hosting a recipient, never back to the sender's own
//! msg_server); each msg_server uses it to pick the local sessions that
//! get the PDU when it comes back out of route_server. TeamTalk sends
//! every relayed PDU to every msg_server and has each decide on its own,
//! with rules spread over three files.
//!
//! | relayed PDU | audience |
//! |---|---|
//! | `CID_MSG_DATA` (single chat) | the recipient and the sender (the sender's other devices) |
//! | `CID_MSG_DATA` (group chat) | the msg_servers hosting a member online (their `IMGroupSubscription`); each delivers to its members |
//! | `CID_GROUP_CHANGE_MEMBER_NOTIFY` | the group's members and the changed users, wherever they are online |
//! | `CID_MSG_READ_NOTIFY` | the reader's other devices |
//! | `CID_SWITCH_P2P_CMD` | the recipient and the sender's other devices |
//! | `CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY` | the user's other devices |
//! | `CID_OTHER_SERVER_KICK_USER` | the user (the session of the kicked client class) |
//! | `CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY` | everyone, the sender's msg_server included |
//! | `CID_BUDDY_LIST_STATUS_NOTIFY` | PC sessions watching presence |
//! | `CID_OTHER_LOGIN_STATUS_NOTIFY` | the user's mobile sessions |
//! | `CID_FILE_NOTIFY` | the receiver's PC sessions (TeamTalk's mobile clients have no file transfer) |

use teamtalk_proto::Message;
use teamtalk_proto::pb::im::base_define::MsgType;

use super::sessions::is_group_message;

/// The users (or the whole directory) a relayed PDU is for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// These users, on whatever msg_server hosts them (a user may appear
    /// twice; receivers deliver once per session).
    Users([u32; 2]),
    /// One user.
    User(u32),
    /// The members of this group online anywhere: route_server sends it
    /// to the msg_servers subscribed to the group, each delivers to its
    /// members.
    Group(u32),
    /// The members of this group and these users (a change of members:
    /// the removed are no longer members but must hear of it).
    GroupAndUsers(u32, Vec<u32>),
    /// Every msg_server, the sender's own included; every logged-in
    /// session.
    Everyone,
    /// Every msg_server but the sender's; PC sessions that watch presence.
    PresenceWatchers,
    /// The mobile sessions of this user.
    MobilesOf(u32),
    /// The PC sessions of this user.
    PcsOf(u32),
}

impl Audience {
    /// The users named, for the route_server's targeting.
    #[must_use]
    pub fn users(&self) -> &[u32] {
        match self {
            Self::Users(u) => u,
            Self::GroupAndUsers(_, u) => u,
            Self::User(u) | Self::MobilesOf(u) | Self::PcsOf(u) => std::slice::from_ref(u),
            Self::Group(_) | Self::Everyone | Self::PresenceWatchers => &[],
        }
    }
}

/// The audience of a PDU relayed between msg_servers, or `None` for
/// messages that are never relayed.
#[must_use]
pub fn audience(msg: &Message) -> Option<Audience> {
    Some(match msg {
        Message::MsgData(m) => {
            if is_group_message(m.msg_type) {
                Audience::Group(m.to_session_id)
            } else if MsgType::try_from(m.msg_type).is_ok() {
                Audience::Users([m.to_session_id, m.from_user_id])
            } else {
                return None;
            }
        }
        Message::MsgReadNotify(n) => Audience::User(n.user_id),
        Message::SwitchP2pCmd(p) => Audience::Users([p.to_user_id, p.from_user_id]),
        Message::BuddyListRemoveSessionNotify(n) => Audience::User(n.user_id),
        Message::OtherServerKickUser(k) => Audience::User(k.user_id),
        Message::BuddyListSignInfoChangedNotify(_) => Audience::Everyone,
        Message::BuddyListStatusNotify(_) => Audience::PresenceWatchers,
        Message::OtherLoginStatusNotify(n) => Audience::MobilesOf(n.user_id),
        Message::GroupChangeMemberNotify(n) => {
            Audience::GroupAndUsers(n.group_id, n.chg_user_id_list.clone())
        }
        Message::FileNotify(n) => Audience::PcsOf(n.to_user_id),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use teamtalk_proto::pb::im::message::ImMsgData;

    use super::*;

    fn data(msg_type: i32) -> Message {
        Message::MsgData(ImMsgData {
            from_user_id: 1,
            to_session_id: 2,
            msg_id: 0,
            create_time: 0,
            msg_type,
            msg_data: Bytes::from_static(b"x"),
            attach_data: None,
            dedupe_key: None,
            duplicate: None,
        })
    }

    #[test]
    fn messages_by_type() {
        assert_eq!(audience(&data(1)), Some(Audience::Users([2, 1])));
        assert_eq!(audience(&data(2)), Some(Audience::Users([2, 1])));
        assert_eq!(audience(&data(0x11)), Some(Audience::Group(2)));
        assert_eq!(audience(&data(0x12)), Some(Audience::Group(2)));
        assert_eq!(audience(&data(7)), None);
        assert_eq!(Audience::Users([2, 1]).users(), [2, 1]);
        assert_eq!(Audience::PcsOf(4).users(), [4]);
        assert!(Audience::Everyone.users().is_empty());
    }
}
