//! How TeamTalk clients encode message text.
//!
//! TeamTalk's clients do not send text as it is: they encrypt it with
//! AES-256 in ECB mode under a key every deployment shares (the `aesKey`
//! of the server configs, `12345678901234567890123456789012` by default),
//! after zero-padding it to whole 16-byte blocks with the text's length in
//! the last four bytes (big-endian), and send the base64 of that. It hides
//! nothing from anyone who has a client, but a client that receives plain
//! text shows garbage, so the chat tool speaks it by default, and
//! msg_server decodes it for the text of push notifications.

use aes::Aes256;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The key TeamTalk deployments ship with.
pub const DEFAULT_KEY: &[u8; 32] = b"12345678901234567890123456789012";

/// Encodes `text` as TeamTalk clients send it.
#[must_use]
pub fn encode(text: &str, key: &[u8; 32]) -> String {
    let len = text.len();
    // Whole blocks for the text, plus one more when the last block has no
    // room for the 4-byte length (or the text fills its blocks exactly).
    let mut blocks = len.div_ceil(16);
    let rem = len % 16;
    if rem == 0 || rem > 12 {
        blocks += 1;
    }
    let mut data = vec![0u8; blocks * 16];
    data[..len].copy_from_slice(text.as_bytes());
    let tail = data.len() - 4;
    data[tail..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    let cipher = Aes256::new(GenericArray::from_slice(key));
    for block in data.chunks_exact_mut(16) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    STANDARD.encode(data)
}

/// Decodes a message body TeamTalk clients sent; `None` when it is not in
/// that form (plain text, an audio body, another key).
#[must_use]
pub fn decode(body: &[u8], key: &[u8; 32]) -> Option<String> {
    let mut data = STANDARD.decode(body).ok()?;
    if data.is_empty() || data.len() % 16 != 0 {
        return None;
    }
    let cipher = Aes256::new(GenericArray::from_slice(key));
    for block in data.chunks_exact_mut(16) {
        cipher.decrypt_block(GenericArray::from_mut_slice(block));
    }
    let tail: [u8; 4] = data[data.len() - 4..].try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(tail)).ok()?;
    if len > data.len() - 4 {
        return None;
    }
    data.truncate(len);
    String::from_utf8(data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies a TeamTalk client sent in the captures.
    #[test]
    fn matches_the_captured_client_bodies() {
        for (plain, wire) in [
            (
                "cross-server hello 1->2",
                "HMXSd3vdTyu6cZ6BED2Opzj6hflngfdSmi/XQ/39fMA=",
            ),
            (
                "hello capture-group",
                "uxNcW0Pc4xErtzVUPOCOm5HwAOqlJiGWDOIsYnIYJm0=",
            ),
        ] {
            assert_eq!(encode(plain, DEFAULT_KEY), wire);
            assert_eq!(decode(wire.as_bytes(), DEFAULT_KEY).as_deref(), Some(plain));
        }
    }

    #[test]
    fn block_sizes_follow_the_length_rule() {
        for (len, blocks) in [(0, 1), (1, 1), (12, 1), (13, 2), (16, 2), (28, 2), (29, 3)] {
            let text = "x".repeat(len);
            let raw = STANDARD.decode(encode(&text, DEFAULT_KEY)).unwrap();
            assert_eq!(raw.len(), blocks * 16, "length {len}");
            assert_eq!(
                decode(encode(&text, DEFAULT_KEY).as_bytes(), DEFAULT_KEY),
                Some(text)
            );
        }
    }

    #[test]
    fn other_bodies_are_not_text() {
        assert_eq!(decode(b"plain words", DEFAULT_KEY), None);
        assert_eq!(decode(b"", DEFAULT_KEY), None);
        assert_eq!(
            decode(b"AAAA", DEFAULT_KEY),
            None,
            "3 bytes: not whole blocks"
        );
        let other = encode("hi", b"00000000000000000000000000000000");
        assert_ne!(decode(other.as_bytes(), DEFAULT_KEY).as_deref(), Some("hi"));
    }
}
