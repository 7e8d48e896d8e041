//! Message types and the session types they belong to (TeamTalk's
//! `MsgType` 0x01/0x02 single, 0x11/0x12 group), written once.

use teamtalk_proto::pb::im::base_define::{MsgType, SessionType};

/// The session type a `MsgType` belongs to; `None` for values outside
/// TeamTalk's enum.
#[must_use]
pub fn session_type_of(msg_type: i32) -> Option<SessionType> {
    match MsgType::try_from(msg_type).ok()? {
        MsgType::SingleText | MsgType::SingleAudio => Some(SessionType::Single),
        MsgType::GroupText | MsgType::GroupAudio => Some(SessionType::Group),
    }
}

/// Whether `msg_type` is a group message type.
#[must_use]
pub fn is_group_message(msg_type: i32) -> bool {
    session_type_of(msg_type) == Some(SessionType::Group)
}

/// Whether `msg_type` is an audio message (its body starts with the
/// duration, as TeamTalk's clients send it).
#[must_use]
pub fn is_audio(msg_type: i32) -> bool {
    matches!(
        MsgType::try_from(msg_type),
        Ok(MsgType::SingleAudio | MsgType::GroupAudio)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_msg_type_has_one_session_type() {
        assert_eq!(session_type_of(1), Some(SessionType::Single));
        assert_eq!(session_type_of(2), Some(SessionType::Single));
        assert_eq!(session_type_of(0x11), Some(SessionType::Group));
        assert_eq!(session_type_of(0x12), Some(SessionType::Group));
        assert_eq!(session_type_of(0), None);
        assert_eq!(session_type_of(0x13), None);
        assert!(is_group_message(0x12) && !is_group_message(2));
        assert!(is_audio(2) && is_audio(0x12) && !is_audio(1));
    }
}
