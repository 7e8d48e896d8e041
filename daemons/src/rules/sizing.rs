//! How big a reply may be: every reply that carries a list is a page that
//! stops before the frame limit, and every request whose answer could not
//! fit is refused with a failure answer, never dropped.
//!
//! Every TeamTalk peer refuses a PDU longer than its frame limit
//! ([`MAX_FRAME_LEN`], 1 MiB header included), and a sender cannot send one
//! either: the runtime drops it with a log line. Before this rule a list
//! reply was sized by count only (history: up to 200 messages), so one user
//! could make another's history unanswerable by sending eight 200 KB
//! messages: the 0x030a page would have been 1.6 MB, db_proxy dropped it,
//! and the client waited for an answer that never came.
//!
//! The rule, for every reply with a list (db_proxy's 0x0202, 0x0205, 0x0209,
//! 0x0211, 0x0308, 0x030a, 0x030e, 0x0706; route_server's 0x020b):
//!
//! - entries are taken in the reply's order while the whole PDU stays
//!   [`PAGE_SLACK`] bytes under the frame limit (the header, every other
//!   field and `attach_data` counted), so a msg_server forwarding it has
//!   room to spare;
//! - a page is never empty when entries exist: the first entry is taken
//!   whenever it fits the frame at all. Message bodies are stored only up
//!   to [`crate::store::MAX_MSG_DATA_LEN`], a few KiB under the frame, so a
//!   page holding one message always fits;
//! - when not even that fits (an entry stored before the bound, or an
//!   `attach_data` of nearly a frame), the request gets its failure answer
//!   ([`crate::rules::failure`]).
//!
//! What "the next page" is depends on the request (each handler documents
//! it): history continues below the last `msg_id` returned; incremental
//! lists (recent sessions, departments, changed users) are filled oldest
//! change first, so the watermark a client keeps (the newest `updated` it
//! got) never passes an entry it did not get, and the next request with that
//! watermark returns the rest.

use teamtalk_proto::{DEFAULT_MAX_PDU_LEN, Header};

/// Longest user name or password a login may carry, in bytes. TeamTalk's
/// user table holds names of 32 characters and clients send passwords as
/// 32 hex digits, so nothing legitimate comes close; longer ones are
/// refused before any table or log line sees them.
pub const MAX_CREDENTIAL_LEN: usize = 256;
/// Longest signature line stored, in bytes (TeamTalk's column holds 128
/// characters of up to 4 bytes).
pub const MAX_SIGN_INFO_LEN: usize = 512;
/// Longest push token stored, in bytes (APNs tokens are 64 hex digits, FCM
/// tokens about 160 characters).
pub const MAX_DEVICE_TOKEN_LEN: usize = 512;
/// Most user ids one 0x0204 users-info or 0x0705 device-tokens request may
/// name; more is refused with the failure answer, not truncated (a shorter
/// list would read as "those users do not exist").
pub const MAX_USERS_INFO_IDS: usize = 10_000;
/// Most user ids one 0x020a users-status request may name. A status entry
/// takes at most 10 bytes on the wire, so the reply stays near half a frame.
pub const MAX_STATUS_IDS: usize = 50_000;

/// The largest PDU a TeamTalk peer accepts, header included.
pub const MAX_FRAME_LEN: usize = DEFAULT_MAX_PDU_LEN as usize;

/// Bytes a page leaves unused below [`MAX_FRAME_LEN`]: room for whatever a
/// msg_server changes when it forwards a reply (its own seq, a different
/// `attach_data`), so a page that fits here fits every hop.
pub const PAGE_SLACK: usize = 1024;

/// The reply would not fit in a frame even with a single entry, or with
/// none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a reply of {needed} bytes cannot fit the {MAX_FRAME_LEN}-byte frame limit")]
pub struct TooLarge {
    /// Bytes the smallest possible reply would take, header included.
    pub needed: usize,
}

/// Whether a PDU with a body of `body_len` bytes fits in a frame.
#[must_use]
pub const fn fits_frame(body_len: usize) -> bool {
    Header::LEN + body_len <= MAX_FRAME_LEN
}

/// A page being filled: list entries are admitted in order while they fit.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// PDU bytes so far: header and every field but the list's entries.
    used: usize,
    /// Entries admitted.
    taken: usize,
}

impl Page {
    /// A page for a reply whose fields other than the list (`attach_data`
    /// included) encode to `base_len` bytes.
    #[must_use]
    pub const fn new(base_len: usize) -> Self {
        Self {
            used: Header::LEN + base_len,
            taken: 0,
        }
    }

    /// Admits `item`, an entry of the list field numbered `tag`, if it fits:
    /// within [`PAGE_SLACK`] of the frame limit, or, as the first entry,
    /// within the frame. `false` means the page is full: stop there.
    pub fn admit<M: prost::Message>(&mut self, tag: u32, item: &M) -> bool {
        let cost = prost::encoding::message::encoded_len(tag, item);
        let total = self.used.saturating_add(cost);
        let limit = if self.taken == 0 {
            MAX_FRAME_LEN
        } else {
            MAX_FRAME_LEN - PAGE_SLACK
        };
        if total > limit {
            return false;
        }
        self.used = total;
        self.taken += 1;
        true
    }

    /// Entries admitted so far.
    #[must_use]
    pub const fn taken(&self) -> usize {
        self.taken
    }
}

/// A filled page: the entries that fit, in order, and what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Filled<M> {
    /// The entries that fit.
    pub page: Vec<M>,
    /// The first entry left out, `None` when every entry fit.
    pub next: Option<M>,
    /// How many entries were left out.
    pub left_out: usize,
}

/// Fills a page of a reply whose other fields encode to `base_len` bytes
/// with `items`, entries of the list field numbered `tag`, in order (see the
/// [module docs](self)).
///
/// # Errors
/// [`TooLarge`] when not even the first entry fits a frame (or the reply
/// without entries does not).
pub fn fill<M: prost::Message>(
    base_len: usize,
    tag: u32,
    items: impl IntoIterator<Item = M>,
) -> Result<Filled<M>, TooLarge> {
    let mut page = Page::new(base_len);
    if page.used > MAX_FRAME_LEN {
        return Err(TooLarge { needed: page.used });
    }
    let mut taken = Vec::new();
    let mut items = items.into_iter();
    for item in items.by_ref() {
        if page.admit(tag, &item) {
            taken.push(item);
            continue;
        }
        if page.taken() == 0 {
            let needed = page
                .used
                .saturating_add(prost::encoding::message::encoded_len(tag, &item));
            return Err(TooLarge { needed });
        }
        return Ok(Filled {
            page: taken,
            next: Some(item),
            left_out: 1 + items.count(),
        });
    }
    Ok(Filled {
        page: taken,
        next: None,
        left_out: 0,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message as _;
    use teamtalk_proto::pb::im::base_define::MsgInfo;
    use teamtalk_proto::pb::im::message::ImGetMsgListRsp;

    use super::*;

    fn msg(id: u32, len: usize) -> MsgInfo {
        MsgInfo {
            msg_id: id,
            from_session_id: 5,
            create_time: 1_700_000_000,
            msg_type: 1,
            msg_data: Bytes::from(vec![b'x'; len]),
        }
    }

    fn rsp(list: Vec<MsgInfo>, attach: usize) -> ImGetMsgListRsp {
        ImGetMsgListRsp {
            user_id: 8,
            session_type: 1,
            session_id: 5,
            msg_id_begin: 0,
            msg_list: list,
            attach_data: Some(Bytes::from(vec![0; attach])),
        }
    }

    /// The finding: eight 200 KB messages no longer make a 1.6 MB page; the
    /// page holds what fits, and the rest follows on the next one.
    #[test]
    fn big_messages_are_paged_below_the_frame_limit() {
        let base = rsp(Vec::new(), 12).encoded_len();
        let items: Vec<MsgInfo> = (1..=8).rev().map(|i| msg(i, 200_000)).collect();
        let filled = fill(base, 5, items).unwrap();
        assert_eq!(filled.page.len(), 5);
        assert_eq!(filled.left_out, 3);
        assert_eq!(filled.next.as_ref().map(|m| m.msg_id), Some(3));
        let body = rsp(filled.page, 12).encoded_len();
        assert!(Header::LEN + body <= MAX_FRAME_LEN - PAGE_SLACK, "{body}");
    }

    #[test]
    fn small_lists_fit_whole() {
        let base = rsp(Vec::new(), 12).encoded_len();
        let items: Vec<MsgInfo> = (1..=200).map(|i| msg(i, 100)).collect();
        let filled = fill(base, 5, items.clone()).unwrap();
        assert_eq!(filled.page, items);
        assert_eq!(filled.next, None);
        assert_eq!(filled.left_out, 0);
        assert!(
            fill(base, 5, Vec::<MsgInfo>::new())
                .unwrap()
                .page
                .is_empty()
        );
    }

    /// A page is never empty: an entry that fits the frame but not the
    /// slack goes out alone, and the exact bound is the frame.
    #[test]
    fn the_first_entry_may_use_the_slack() {
        let base = rsp(Vec::new(), 12).encoded_len();
        let fixed = rsp(vec![msg(1, 0)], 12).encoded_len() + Header::LEN;
        // msg_data's length prefix and the entry's grow from 1 to 3 bytes.
        let len = MAX_FRAME_LEN - fixed - 4;
        let filled = fill(base, 5, vec![msg(1, len), msg(2, 1)]).unwrap();
        assert_eq!(filled.page.len(), 1);
        assert_eq!(filled.left_out, 1);
        let pdu = teamtalk_proto::Command::MsgListResponse.pdu(0, &rsp(filled.page, 12));
        assert_eq!(pdu.wire_len(), MAX_FRAME_LEN);

        let err = fill(base, 5, vec![msg(1, len + 1)]).unwrap_err();
        assert_eq!(err.needed, MAX_FRAME_LEN + 1);
    }

    #[test]
    fn a_base_over_the_frame_is_too_large() {
        let base = rsp(Vec::new(), MAX_FRAME_LEN).encoded_len();
        assert!(fill(base, 5, vec![msg(1, 1)]).is_err());
        assert!(fill(base, 5, Vec::<MsgInfo>::new()).is_err());
        assert!(!fits_frame(base));
        assert!(fits_frame(MAX_FRAME_LEN - Header::LEN));
        assert!(!fits_frame(MAX_FRAME_LEN - Header::LEN + 1));
    }
}
