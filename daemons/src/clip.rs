//! [`clip`]: client-supplied strings in log lines, bounded.
//!
//! A user name, a reason or a token comes from whoever is on the other end
//! of a socket and may be a megabyte long. Logged whole, every refused
//! login with such a name writes a megabyte to the logs (150 attempts wrote
//! 143 MB before this existed). Every log line that shows a string a client
//! or peer chose goes through [`clip`]: at most [`CLIP_CHARS`] characters,
//! then `…(N bytes)` with the full length, so the line says what was sent
//! without carrying it. Control characters are escaped the way `{:?}`
//! escapes them, so a name cannot forge a log line either.

use std::fmt;

/// Characters of a clipped string shown before the ellipsis.
pub const CLIP_CHARS: usize = 64;

/// A string shown at most [`CLIP_CHARS`] characters long; see the
/// [module docs](self).
#[derive(Clone, Copy)]
pub struct Clipped<'a>(&'a str);

/// `s` for a log line: the first [`CLIP_CHARS`] characters (escaped like
/// `{:?}` without the quotes), then `…(N bytes)` when it was longer.
#[must_use]
pub fn clip(s: &str) -> Clipped<'_> {
    Clipped(s)
}

/// Bytes a client sent, for a log line: as text when they are UTF-8, else
/// only their length (`<N bytes>`).
#[must_use]
pub fn clip_bytes(b: &[u8]) -> ClippedBytes<'_> {
    ClippedBytes(b)
}

/// See [`clip_bytes`].
#[derive(Clone, Copy)]
pub struct ClippedBytes<'a>(&'a [u8]);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.char_indices();
        let mut end = self.0.len();
        for (n, (i, _)) in chars.by_ref().enumerate() {
            if n == CLIP_CHARS {
                end = i;
                break;
            }
        }
        for c in self.0[..end].chars() {
            fmt::Display::fmt(&c.escape_debug(), f)?;
        }
        if end < self.0.len() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl fmt::Display for ClippedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => fmt::Display::fmt(&clip(s), f),
            Err(_) => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

impl fmt::Debug for ClippedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_shown_whole() {
        assert_eq!(clip("alice").to_string(), "alice");
        assert_eq!(clip("").to_string(), "");
        let exactly = "x".repeat(CLIP_CHARS);
        assert_eq!(clip(&exactly).to_string(), exactly);
    }

    #[test]
    fn long_strings_show_a_prefix_and_the_length() {
        let name = "a".repeat(1 << 20);
        let shown = clip(&name).to_string();
        assert_eq!(
            shown,
            format!("{}…({} bytes)", "a".repeat(CLIP_CHARS), 1 << 20)
        );
        assert!(shown.len() < 100);
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let name = "中".repeat(100);
        let shown = clip(&name).to_string();
        assert_eq!(shown, format!("{}…(300 bytes)", "中".repeat(CLIP_CHARS)));
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let shown = clip("bob\nINFO admin logged in").to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert_eq!(shown, "bob\\nINFO admin logged in");
        assert_eq!(format!("{:?}", clip("x\"y")), "\"x\\\"y\"");
    }

    #[test]
    fn bytes_are_shown_as_text_or_by_length() {
        assert_eq!(clip_bytes(b"tok").to_string(), "tok");
        assert_eq!(clip_bytes(&[0xff, 0xfe]).to_string(), "<2 bytes>");
        assert!(
            clip_bytes(&vec![b'z'; 5000])
                .to_string()
                .ends_with("…(5000 bytes)")
        );
    }
}
