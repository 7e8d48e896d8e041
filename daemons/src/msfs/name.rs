//! Names: what an upload's file name keeps, what a client gets back, what
//! it may ask for, and where that is on disk.
//!
//! A stored file is named by the SHA-256 of its bytes, so the same bytes
//! are stored once whoever uploads them. The name a client gets back is
//! `g0/<h0h1>/<h2h3>/<64 hex digits><suffix>`, where the suffix is what
//! TeamTalk keeps of the uploaded file name: `_<W>x<H>.<type>` when the
//! name ends that way (clients announce an image's size so the receiver
//! can lay it out before it is downloaded), else `.<type>`. The suffix
//! only chooses the `Content-Type` of a download; on disk the file is
//! `BaseDir/sha256/<h0h1>/<h2h3>/<64 hex digits>`.
//!
//! A request path is parsed into a [`RequestName`] before anything touches
//! the disk: a name either matches one of two strict grammars, from which
//! the disk path is built (never from the client's characters), or it is
//! refused. `..` anywhere, an encoded `/`, `\` or NUL, a drive or absolute
//! path are [`NameError::Traversal`]; anything else that does not match is
//! [`NameError::NotFound`].
//!
//! The second grammar serves files a C++ msfs stored in the same
//! `BaseDir` (`g0/<3 digits>/<3 digits>/<digits and _>[_WxH].<type>`,
//! at `BaseDir/<3 digits>/<3 digits>/<name>`), so pointing this msfs at an
//! old deployment's directory keeps the images in its message history
//! working. New uploads never go there.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The group directory TeamTalk puts in front of every path.
pub const GROUP: &str = "g0";
/// Directory under `BaseDir` holding the content-addressed files.
pub const BLOB_DIR: &str = "sha256";
/// Longest client file name TeamTalk accepts (error 11 beyond).
pub const MAX_FILENAME: usize = 255;
/// Longest type (extension) TeamTalk accepts (error 9 beyond).
pub const MAX_TYPE: usize = 15;
/// Most digits of a width or height in `_WxH` (TeamTalk's 4).
pub const MAX_DIM_DIGITS: usize = 4;
/// Longest file name of a C++ msfs file served from `BaseDir`.
const MAX_LEGACY_NAME: usize = 96;

/// The SHA-256 of a stored file's bytes: its identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// 64 lowercase hex digits.
    #[must_use]
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }

    /// Parses 64 lowercase hex digits (the only spelling this msfs hands
    /// out, so one file has one name).
    #[must_use]
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.hex())
    }
}

/// Why an upload's file name is refused, with TeamTalk's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileNameError {
    /// Longer than [`MAX_FILENAME`] bytes (TeamTalk's 11).
    #[error("file name longer than {MAX_FILENAME} bytes")]
    TooLong,
    /// No `.` (TeamTalk's 10).
    #[error("file name without a type")]
    NoType,
    /// A type longer than [`MAX_TYPE`] (TeamTalk's 9), or, stricter than
    /// TeamTalk, with characters other than ASCII letters and digits (the
    /// type becomes part of the name clients ask for).
    #[error("file type too long or not letters and digits")]
    BadType,
}

/// What TeamTalk keeps of an uploaded file name: its type and, for images
/// named `…_<W>x<H>.<type>`, the size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Suffix {
    /// Width and height from `_WxH`, when the name ends that way.
    pub size: Option<(u16, u16)>,
    /// The type: 1 to [`MAX_TYPE`] ASCII letters and digits, case kept.
    pub ext: String,
}

impl Suffix {
    /// Reads an uploaded file name as TeamTalk's msfs does: the type after
    /// the last `.`, and `_WxH` before it when the part after the last `_`
    /// is `<W>x<H>` with 1 to 4 digits each (written back without leading
    /// zeros, as TeamTalk's `atoi` did). A directory part (`C:\dir\a.png`,
    /// sent by some old browsers) is ignored.
    ///
    /// # Errors
    /// [`FileNameError`], with TeamTalk's code for each case.
    pub fn from_upload(filename: &str) -> Result<Self, FileNameError> {
        if filename.len() > MAX_FILENAME {
            return Err(FileNameError::TooLong);
        }
        let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
        let (stem, ext) = base.rsplit_once('.').ok_or(FileNameError::NoType)?;
        if !valid_type(ext) {
            return Err(FileNameError::BadType);
        }
        let size = stem.rsplit_once('_').and_then(|(_, dims)| parse_dims(dims));
        Ok(Self {
            size,
            ext: ext.to_owned(),
        })
    }

    /// `_<W>x<H>.<type>` or `.<type>`.
    #[must_use]
    pub fn render(&self) -> String {
        match self.size {
            Some((w, h)) => format!("_{w}x{h}.{}", self.ext),
            None => format!(".{}", self.ext),
        }
    }

    /// Parses what [`Suffix::render`] writes, and nothing else.
    fn parse(s: &str) -> Option<Self> {
        let (head, ext) = s.rsplit_once('.')?;
        if !valid_type(ext) {
            return None;
        }
        let size = match head {
            "" => None,
            dims => Some(parse_dims(dims.strip_prefix('_')?)?),
        };
        let suffix = Self {
            size,
            ext: ext.to_owned(),
        };
        // One spelling per name: `_007x1.png` is not `_7x1.png`.
        (suffix.render() == s).then_some(suffix)
    }
}

fn valid_type(ext: &str) -> bool {
    (1..=MAX_TYPE).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `<W>x<H>`, 1 to [`MAX_DIM_DIGITS`] digits each.
fn parse_dims(s: &str) -> Option<(u16, u16)> {
    let (w, h) = s.split_once('x')?;
    let dim = |d: &str| {
        ((1..=MAX_DIM_DIGITS).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
            .then(|| d.parse::<u16>().ok())
            .flatten()
    };
    Some((dim(w)?, dim(h)?))
}

/// A file this msfs stored: its digest and the suffix its uploader's name
/// gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoredName {
    /// What the file is.
    pub digest: Digest,
    /// How it is called.
    pub suffix: Suffix,
}

impl StoredName {
    /// The path clients get back and ask for (no leading `/`):
    /// `g0/ab/cd/abcd…<suffix>`.
    #[must_use]
    pub fn path(&self) -> String {
        let hex = self.digest.hex();
        format!(
            "{GROUP}/{}/{}/{hex}{}",
            &hex[..2],
            &hex[2..4],
            self.suffix.render()
        )
    }
}

/// Where a stored file lives under `base`: `sha256/ab/cd/<hex>`.
#[must_use]
pub fn blob_path(base: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    base.join(BLOB_DIR)
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex)
}

/// What a download asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestName {
    /// A file this msfs stored.
    Stored(StoredName),
    /// A file a C++ msfs stored in the same `BaseDir`.
    Legacy {
        /// First directory, `000`–`999`.
        first: u16,
        /// Second directory.
        second: u16,
        /// The file name, checked against the C++ daemon's grammar.
        file: String,
    },
}

impl RequestName {
    /// The file type, which chooses the `Content-Type`.
    #[must_use]
    pub fn ext(&self) -> &str {
        match self {
            Self::Stored(s) => &s.suffix.ext,
            Self::Legacy { file, .. } => file.rsplit_once('.').map_or("", |(_, e)| e),
        }
    }

    /// The file on disk under `base`. Built from the parsed parts only.
    #[must_use]
    pub fn disk_path(&self, base: &Path) -> PathBuf {
        match self {
            Self::Stored(s) => blob_path(base, &s.digest),
            Self::Legacy {
                first,
                second,
                file,
            } => base
                .join(format!("{first:03}"))
                .join(format!("{second:03}"))
                .join(file),
        }
    }
}

/// Why a download path names no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The path tries to leave the store (`..`, encoded separators, NUL,
    /// backslashes, absolute paths): 400, counted apart.
    #[error("path tries to leave the store")]
    Traversal,
    /// The path is not a name this msfs hands out: 404.
    #[error("no such file")]
    NotFound,
}

/// Longest request path considered.
const MAX_PATH: usize = 512;

/// Parses a request's path (as sent, percent-encoded, with its leading
/// `/`) without touching the disk. See the [module docs](self).
///
/// # Errors
/// [`NameError::Traversal`] or [`NameError::NotFound`].
pub fn parse_request_path(raw: &str) -> Result<RequestName, NameError> {
    if raw.contains("..") || raw.starts_with("//") || raw.contains('\\') {
        return Err(NameError::Traversal);
    }
    if raw.len() > MAX_PATH {
        return Err(NameError::NotFound);
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| NameError::NotFound)?;
    if decoded.contains("..")
        || decoded.contains('\\')
        || decoded.contains('\0')
        || decoded.contains(':')
        || decoded.starts_with("//")
    {
        return Err(NameError::Traversal);
    }
    if decoded.len() != raw.len() {
        // Names this msfs hands out need no escaping; an escaped one is
        // a spelling nobody was given.
        return Err(NameError::NotFound);
    }
    let path = raw.strip_prefix('/').unwrap_or(raw);
    let mut parts = path.split('/');
    let (Some(group), Some(first), Some(second), Some(file), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(NameError::NotFound);
    };
    if group != GROUP {
        return Err(NameError::NotFound);
    }
    if first.len() == 2 {
        let (hex, suffix) = (file.get(..64), file.get(64..));
        let (Some(hex), Some(suffix)) = (hex, suffix) else {
            return Err(NameError::NotFound);
        };
        let digest = Digest::from_hex(hex).ok_or(NameError::NotFound)?;
        if first != &hex[..2] || second != &hex[2..4] {
            return Err(NameError::NotFound);
        }
        let suffix = Suffix::parse(suffix).ok_or(NameError::NotFound)?;
        return Ok(RequestName::Stored(StoredName { digest, suffix }));
    }
    let dir = |d: &str| {
        (d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
            .then(|| d.parse::<u16>().ok())
            .flatten()
    };
    let (Some(first), Some(second)) = (dir(first), dir(second)) else {
        return Err(NameError::NotFound);
    };
    if !legacy_file(file) {
        return Err(NameError::NotFound);
    }
    Ok(RequestName::Legacy {
        first,
        second,
        file: file.to_owned(),
    })
}

/// The C++ msfs's names: `<usec>_<thread id>` then `.<type>` or
/// `_<W>x<H>.<type>`: digits, `_` and `x` before one `.`, letters and
/// digits after it, starting with a digit.
fn legacy_file(file: &str) -> bool {
    let Some((stem, ext)) = file.split_once('.') else {
        return false;
    };
    file.len() <= MAX_LEGACY_NAME
        && stem.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && stem
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'_' || b == b'x')
        && valid_type(ext)
}

#[cfg(test)]
mod tests {
    use std::path::Component;

    use proptest::strategy::Strategy as _;

    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn digests_are_sha256_in_lowercase_hex() {
        let d = Digest::of(b"test");
        assert_eq!(d.hex(), HEX);
        assert_eq!(Digest::from_hex(HEX), Some(d));
        assert_eq!(Digest::from_hex(&HEX.to_uppercase()), None);
        assert_eq!(Digest::from_hex(&HEX[1..]), None);
        assert_eq!(Digest::from_hex(&format!("{}g", &HEX[1..])), None);
    }

    #[test]
    fn upload_names_keep_the_size_and_type_as_teamtalk_does() {
        let ok = |name: &str, size, ext: &str| {
            assert_eq!(
                Suffix::from_upload(name),
                Ok(Suffix {
                    size,
                    ext: ext.to_owned()
                }),
                "{name}"
            );
        };
        // Windows: the file's name plus `_WxH` and the extension again.
        ok("screenshot.png_640x480.png", Some((640, 480)), "png");
        // iOS and Mac.
        ok("image.png_0x0.png", Some((0, 0)), "png");
        ok("image.jpeg", None, "jpeg");
        // Android: the photo's own name; its `_` parts are no size.
        ok("IMG_20150101_123456.jpg", None, "jpg");
        ok("cat_0640x0480.JPG", Some((640, 480)), "JPG");
        ok("C:\\Users\\me\\x_1x2.gif", Some((1, 2)), "gif");
        ok("../../etc/a_3x4.png", Some((3, 4)), "png");
        // Not a size: too many digits, no digits, signs, trailing text.
        ok("a_12345x1.png", None, "png");
        ok("a_x1.png", None, "png");
        ok("a_-1x1.png", None, "png");
        ok("a_1x1y.png", None, "png");
        ok("a_1x1x1.png", None, "png");
        ok("noext.tar.gz", None, "gz");

        assert_eq!(
            Suffix::from_upload(&"a".repeat(256)),
            Err(FileNameError::TooLong)
        );
        assert_eq!(Suffix::from_upload("noext"), Err(FileNameError::NoType));
        assert_eq!(
            Suffix::from_upload("a.0123456789abcdef"),
            Err(FileNameError::BadType)
        );
        for bad in ["a.", "a.p;g", "a.p g", "a.pn%", "a.pñg"] {
            assert_eq!(
                Suffix::from_upload(bad),
                Err(FileNameError::BadType),
                "{bad}"
            );
        }
    }

    #[test]
    fn stored_names_round_trip_through_request_paths() {
        let digest = Digest::of(b"test");
        for size in [None, Some((640, 480)), Some((0, 0))] {
            let name = StoredName {
                digest,
                suffix: Suffix {
                    size,
                    ext: "png".into(),
                },
            };
            let path = name.path();
            assert!(path.starts_with("g0/9f/86/9f86d0"), "{path}");
            assert_eq!(
                parse_request_path(&format!("/{path}")),
                Ok(RequestName::Stored(name))
            );
        }
        let base = Path::new("/srv/msfs");
        assert_eq!(
            blob_path(base, &digest),
            Path::new(&format!("/srv/msfs/sha256/9f/86/{HEX}"))
        );
    }

    #[test]
    fn traversal_is_refused_before_anything_else() {
        for raw in [
            "/g0/../../etc/passwd",
            "/..",
            "/g0/9f/86/..%2f..%2fetc",
            "/g0/%2e%2e/%2e%2e/etc/passwd",
            "/g0/%2E%2E/x",
            "//etc/passwd",
            "/%2f%2fetc/passwd",
            "/g0/000/000/a%00.png",
            "/g0/000/000/..\\..\\boot.ini",
            "/g0/000/000/%5c..%5cwin.ini",
            "/C:/windows/win.ini",
            "/g0/000/000/x.png/..",
        ] {
            assert_eq!(parse_request_path(raw), Err(NameError::Traversal), "{raw}");
        }
    }

    #[test]
    fn other_names_are_not_found() {
        let good = format!("/g0/9f/86/{HEX}.png");
        assert!(parse_request_path(&good).is_ok());
        for raw in [
            "/",
            "/g0",
            "/g0/9f/86",
            "/etc/passwd",
            "/g1/9f/86/x.png",
            &format!("/g0/9f/87/{HEX}.png"),
            &format!("/g0/9F/86/{HEX}.png"),
            &format!("/g0/9f/86/{}.png", HEX.to_uppercase()),
            &format!("/g0/9f/86/{HEX}"),
            &format!("/g0/9f/86/{HEX}_1x2"),
            &format!("/g0/9f/86/{HEX}_01x2.png"),
            &format!("/g0/9f/86/{HEX}.p%6eg"),
            &format!("/g0/9f/86/{HEX}.png/x"),
            &format!("/g0/9f/86/{HEX}.html.png.x y"),
            "/g0/000/000/.png",
            "/g0/000/000/abc.png",
            "/g0/00/000/1.png",
            "/g0/0000/000/1.png",
            "/g0/000/000/1.2.png",
        ] {
            assert_eq!(parse_request_path(raw), Err(NameError::NotFound), "{raw}");
        }
    }

    #[test]
    fn files_of_a_cpp_msfs_are_found_where_it_put_them() {
        let name =
            parse_request_path("/g0/001/023/1410706133246550_140184328214_640x480.jpg").unwrap();
        assert_eq!(name.ext(), "jpg");
        assert_eq!(
            name.disk_path(Path::new("/srv/msfs")),
            Path::new("/srv/msfs/001/023/1410706133246550_140184328214_640x480.jpg")
        );
    }

    proptest::proptest! {
        /// Whatever a client asks for, a name that parses is a plain file
        /// two or three directories below the base: no `..`, no root, no
        /// prefix, nothing from outside.
        #[test]
        fn no_request_path_escapes_the_base(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![
                        "g0", "..", ".", "", "%2e%2e", "%2f", "%5c", "%00", "\\", "9f", "86",
                        "001", "023", "/", "C:", "%2E", "~",
                    ]).prop_map(str::to_owned),
                    "[0-9a-f]{64}(_[0-9]{1,4}x[0-9]{1,4})?\\.[a-zA-Z0-9]{1,15}",
                    "[0-9_x]{1,20}\\.[a-z]{1,4}",
                    "[ -~]{0,12}",
                ],
                0..7,
            ),
        ) {
            let raw = format!("/{}", parts.join("/"));
            let base = Path::new("/srv/msfs");
            if let Ok(name) = parse_request_path(&raw) {
                let path = name.disk_path(base);
                let rest = path.strip_prefix(base).expect("under the base");
                let comps: Vec<Component<'_>> = rest.components().collect();
                proptest::prop_assert!(matches!(comps.len(), 3 | 4), "{raw} -> {path:?}");
                proptest::prop_assert!(
                    comps.iter().all(|c| matches!(c, Component::Normal(_))),
                    "{raw} -> {path:?}"
                );
                for c in &comps {
                    let s = c.as_os_str().to_string_lossy();
                    proptest::prop_assert!(
                        s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'),
                        "{raw} -> {path:?}"
                    );
                    proptest::prop_assert!(!s.starts_with('.'), "{raw} -> {path:?}");
                }
            }
        }
    }
}
