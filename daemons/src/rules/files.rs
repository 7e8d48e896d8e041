//! File transfer rules shared by msg_server, file_server and db_proxy:
//! what a task id looks like and where it comes from, the bounds on what a
//! client names about a file, and the segment size of offline transfers.
//!
//! A task id is the only credential of a transfer (a client logs in to
//! file_server with its user id and the task id, nothing else), so it must
//! be unguessable: 122 random bits from the operating system's generator,
//! written as a version-4 UUID, the 36-character form TeamTalk's libuuid
//! produced and its clients expect.

/// Length of a task id: a UUID in its canonical text form.
pub const TASK_ID_LEN: usize = 36;

/// Longest file name accepted from a client, in bytes. TeamTalk's offline
/// file header had 512 bytes for it; PC clients send a full path in
/// 0x0506 and the base name in 0x050b, both far shorter.
pub const MAX_FILE_NAME_LEN: usize = 512;

/// Offline transfers move the file in segments of this many bytes: the
/// size file_server asks an uploader for, and the most it returns to one
/// download request (TeamTalk's `SEGMENT_SIZE`).
pub const SEGMENT_SIZE: u32 = 32 * 1024;

/// Most offline files one receiver may have waiting in db_proxy; more are
/// refused until the receiver deletes some. Also the most one 0x050a
/// reply lists.
pub const MAX_OFFLINE_FILES: usize = 100;

/// Most addresses a file_server may advertise (0x0734), and so the most
/// msg_server puts in a 0x0507, 0x0508 or 0x050a.
pub const MAX_FILE_SERVER_ADDRS: usize = 8;

/// Longest address text accepted in a file_server's 0x0734.
pub const MAX_ADDR_LEN: usize = 255;

/// Whether `s` is a task id in the form [`new_task_id`] writes: 36
/// characters, hex digits with dashes at positions 8, 13, 18 and 23
/// (either case, as libuuid parses). Anything else is refused before it
/// reaches a table, a log line or a file name.
#[must_use]
pub fn is_task_id(s: &str) -> bool {
    s.len() == TASK_ID_LEN
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A fresh task id: a version-4 UUID from the operating system's random
/// generator, lower case.
///
/// # Errors
/// The generator failed; no id is made up instead.
pub fn new_task_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(format_uuid_v4(b))
}

/// `bytes` as a version-4, variant-1 UUID (RFC 9562): the version and
/// variant bits are set, the other 122 bits are `bytes`'.
#[must_use]
pub fn format_uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(TASK_ID_LEN);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Whether `mode` is a `TransferFileType` (1 online, 2 offline).
#[must_use]
pub const fn is_trans_mode(mode: i32) -> bool {
    mode == 1 || mode == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_uuid_v4_and_checked() {
        let id = new_task_id().unwrap();
        assert!(is_task_id(&id), "{id}");
        assert_eq!(&id[14..15], "4", "version 4: {id}");
        assert!(
            matches!(&id[19..20], "8" | "9" | "a" | "b"),
            "variant: {id}"
        );
        assert_ne!(new_task_id().unwrap(), id);
        assert_eq!(
            format_uuid_v4([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(
            format_uuid_v4([0; 16]),
            "00000000-0000-4000-8000-000000000000"
        );
        assert!(is_task_id("0A1B2C3D-0000-4000-8000-000000000000"));
        for bad in [
            "",
            "0a1b2c3d",
            "0a1b2c3d-0000-4000-8000-00000000000",
            "0a1b2c3d-0000-4000-8000-0000000000000",
            "0a1b2c3d00000-4000-8000-000000000000",
            "0a1b2c3d-0000-4000-8000-00000000000g",
            "../../../../../../../../../etc/passwd",
            "0a1b2c3d-0000-4000-8000-00000000000\u{e9}",
        ] {
            assert!(!is_task_id(bad), "{bad:?}");
        }
    }
}
