//! Reader for TeamTalk's own `.conf` files (`msgserver.conf`, `dbproxyserver.conf`, ...).
//!
//! The stock daemons ship `key=value` files that TOML and INI parsers reject or
//! misread, and operators already have them, so the daemons read the same format
//! with the same meaning. The rules, taken from the C++ reader:
//!
//! - A `#` starts a comment anywhere on a line, including after a value
//!   (`ThreadNum=48  # two per core`). There is no escape, so a value can never
//!   contain `#`.
//! - The first `=` splits the key from the value; both sides are trimmed of
//!   spaces and tabs (and, here, of a trailing `\r`, so CRLF files also work).
//! - A key whose value is empty (`Key=`) counts as absent: [`Conf::get`] returns
//!   `None` for it, as the C++ reader never stored it.
//! - Servers that come in lists use indexed keys starting at 1:
//!   `DBServerIP1`/`DBServerPort1`, `DBServerIP2`/`DBServerPort2`, ... read with
//!   [`Conf::indexed`] and [`Conf::endpoints`].
//! - A key given twice keeps its **first** value. That is what the C++ reader did
//!   (its map insert never replaced an entry), so a file means the same thing to
//!   both implementations. [`Conf::duplicates`] lists the repeats so a daemon can
//!   warn about them.
//!
//! Two deliberate differences, both turning silent surprises into messages:
//! - A line that is neither blank, a comment nor `key=value` (for example
//!   `ListenPort 8000`, or `=8000` with no key) is an error naming the file and
//!   line. The C++ reader skipped such lines without a word, leaving the daemon
//!   on a default the operator did not choose.
//! - [`Conf::endpoints`] rejects an address without its port (and the reverse)
//!   and an index gap, where the C++ reader silently stopped at the first gap.
//!
//! Parsing never panics, whatever the input; errors carry the file name, line and
//! key, e.g. `msgserver.conf:12: ListenPort: invalid value "80x": expected a port number`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Why a configuration file could not be used.
///
/// Every variant that concerns one setting names the file (`origin`), the line and
/// the key, so an operator can go straight to the mistake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// The file could not be read at all.
    #[error("{origin}: cannot read: {source}")]
    Io {
        /// The path as given to [`Conf::load`].
        origin: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A line that is neither blank, a comment nor `key=value`.
    #[error("{origin}:{line}: expected `key=value`, found {text:?}")]
    Syntax {
        /// File name (or the name given to [`Conf::parse_str`]).
        origin: String,
        /// 1-based line number.
        line: usize,
        /// The offending line, comment removed and trimmed.
        text: String,
    },
    /// A key is present but its value does not parse as the wanted type.
    #[error("{origin}:{line}: {key}: invalid value {value:?}: expected {expected}")]
    Invalid {
        /// File name.
        origin: String,
        /// 1-based line of the value that was used.
        line: usize,
        /// The key.
        key: String,
        /// The raw value.
        value: String,
        /// What a valid value looks like, e.g. "a port number".
        expected: String,
    },
    /// A key the daemon cannot run without is absent (or empty).
    #[error("{origin}: {key}: missing required setting")]
    Missing {
        /// File name.
        origin: String,
        /// The key that was looked up.
        key: String,
    },
    /// One half of an indexed address/port pair is present without the other.
    #[error("{origin}:{line}: {key} is set but {missing} is not")]
    Unpaired {
        /// File name.
        origin: String,
        /// Line of the key that is present.
        line: usize,
        /// The key that is present.
        key: String,
        /// The partner key that is absent.
        missing: String,
    },
    /// A key that differs from a known key only by letter case
    /// (`Datadir=` for `DataDir=`): an error, not a silently ignored
    /// setting (keys are case-sensitive, as in TeamTalk).
    #[error("{origin}:{line}: unknown key {key}; did you mean {known}? (keys are case-sensitive)")]
    Miscased {
        /// File name.
        origin: String,
        /// Line of the key.
        line: usize,
        /// The key as written.
        key: String,
        /// The known key it resembles.
        known: String,
    },
    /// Indexed keys skip a number, e.g. `DBServerIP3` without `DBServerIP2`.
    #[error("{origin}:{line}: {key} is set but {missing} is not (indexes must count up from 1)")]
    IndexGap {
        /// File name.
        origin: String,
        /// Line of the key after the gap.
        line: usize,
        /// The key after the gap.
        key: String,
        /// The first missing key.
        missing: String,
    },
}

/// One `key=value` setting as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

/// One server address from an indexed pair such as `DBServerIP2` / `DBServerPort2`.
///
/// The host stays a string because the stock files use names (`localhost`) as
/// well as addresses; resolving is the caller's business (`(host, port)` works
/// with [`std::net::ToSocketAddrs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The number after the key prefix (1 for `DBServerIP1`).
    pub index: u32,
    /// Host name or IP address, as written.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed TeamTalk configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    origin: String,
    /// Settings in file order, first occurrence of each key only.
    entries: Vec<Entry>,
    /// Key -> position in `entries`.
    index: HashMap<String, usize>,
    /// Later occurrences of keys already set, in file order.
    dups: Vec<Entry>,
}

impl Conf {
    /// Reads and parses the file at `path`.
    ///
    /// Error messages use the file name (not the full path) as the origin, the way
    /// operators refer to these files.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfError> {
        let path = path.as_ref();
        let origin = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let bytes = std::fs::read(path).map_err(|source| ConfError::Io {
            origin: origin.clone(),
            source,
        })?;
        // The stock files carry UTF-8 (Chinese) comments; tolerate any bytes in
        // comments rather than refusing the whole file.
        let text = String::from_utf8_lossy(&bytes);
        Self::parse_str(&text, &origin)
    }

    /// Parses configuration text; `origin` names it in error messages.
    pub fn parse_str(text: &str, origin: &str) -> Result<Self, ConfError> {
        let mut conf = Self {
            origin: origin.to_owned(),
            entries: Vec::new(),
            index: HashMap::new(),
            dups: Vec::new(),
        };
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let content = match raw.find('#') {
                Some(pos) => &raw[..pos],
                None => raw,
            };
            let content = trim(content);
            if content.is_empty() {
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                return Err(conf.syntax(line, content));
            };
            let key = trim(key);
            if key.is_empty() {
                return Err(conf.syntax(line, content));
            }
            let entry = Entry {
                key: key.to_owned(),
                value: trim(value).to_owned(),
                line,
            };
            if conf.index.contains_key(key) {
                conf.dups.push(entry);
            } else {
                conf.index.insert(entry.key.clone(), conf.entries.len());
                conf.entries.push(entry);
            }
        }
        Ok(conf)
    }

    /// The name used in error messages (the file name for [`Conf::load`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The value of `key`, or `None` if it is absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// The value of `key` parsed as `T`; `Ok(None)` if absent, so the caller picks
    /// the default.
    ///
    /// The error names the file, line and key, and describes `T` by its type
    /// name ("a port number" for `u16`, "a number" for other integers, ...).
    pub fn get_parsed<T: FromStr>(&self, key: &str) -> Result<Option<T>, ConfError> {
        let Some(entry) = self.entry(key) else {
            return Ok(None);
        };
        entry
            .value
            .parse::<T>()
            .map(Some)
            .map_err(|_| self.invalid(entry, expected_for::<T>()))
    }

    /// Like [`Conf::get_parsed`], but an absent key is an error.
    pub fn require<T: FromStr>(&self, key: &str) -> Result<T, ConfError> {
        self.get_parsed(key)?.ok_or_else(|| ConfError::Missing {
            origin: self.origin.clone(),
            key: key.to_owned(),
        })
    }

    /// Every non-empty key of the form `prefix` + decimal index (`DBServerIP1`,
    /// `DBServerIP2`, ...), sorted by index.
    ///
    /// Only canonical numbers count (`DBServerIP01` does not, as the C++ daemons
    /// would never look it up), and index 0 is allowed here so callers can report
    /// it; [`Conf::endpoints`] starts at 1.
    pub fn indexed(&self, prefix: &str) -> Vec<(u32, &str)> {
        let mut out: Vec<(u32, &str)> = self
            .entries
            .iter()
            .filter(|e| !e.value.is_empty())
            .filter_map(|e| index_of(&e.key, prefix).map(|i| (i, e.value.as_str())))
            .collect();
        out.sort_unstable_by_key(|&(i, _)| i);
        out
    }

    /// The server list described by `host_prefix`N / `port_prefix`N pairs, N = 1, 2, ...
    ///
    /// For example `endpoints("DBServerIP", "DBServerPort")`. An empty list is not
    /// an error here; a daemon that needs at least one (or, like the stock
    /// msg_server, two) checks the length itself.
    pub fn endpoints(
        &self,
        host_prefix: &str,
        port_prefix: &str,
    ) -> Result<Vec<Endpoint>, ConfError> {
        let hosts = self.indexed(host_prefix);
        let ports = self.indexed(port_prefix);
        // Every port needs its host.
        for &(i, _) in &ports {
            if !hosts.iter().any(|&(h, _)| h == i) {
                let key = format!("{port_prefix}{i}");
                return Err(ConfError::Unpaired {
                    origin: self.origin.clone(),
                    line: self.line_of(&key),
                    key,
                    missing: format!("{host_prefix}{i}"),
                });
            }
        }
        let mut out = Vec::with_capacity(hosts.len());
        let mut expected = 1u32;
        for &(i, host) in &hosts {
            let host_key = format!("{host_prefix}{i}");
            if i != expected {
                return Err(ConfError::IndexGap {
                    origin: self.origin.clone(),
                    line: self.line_of(&host_key),
                    key: host_key,
                    missing: format!("{host_prefix}{expected}"),
                });
            }
            let port_key = format!("{port_prefix}{i}");
            let Some(port) = self.get_parsed::<u16>(&port_key)? else {
                return Err(ConfError::Unpaired {
                    origin: self.origin.clone(),
                    line: self.line_of(&host_key),
                    key: host_key,
                    missing: port_key,
                });
            };
            out.push(Endpoint {
                index: i,
                host: host.to_owned(),
                port,
            });
            expected = expected.saturating_add(1);
        }
        Ok(out)
    }

    /// Settings whose key is not in `known`, as `(line, key)` in file order, so a
    /// daemon can warn about typos.
    ///
    /// An entry of `known` ending in `*` is a prefix for indexed keys:
    /// `"DBServerIP*"` accepts `DBServerIP1`, `DBServerIP2`, ... (digits only).
    /// Repeated keys are reported by [`Conf::duplicates`], not here.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<(usize, String)> {
        self.entries
            .iter()
            .filter(|e| !is_known(&e.key, known))
            .map(|e| (e.line, e.key.clone()))
            .collect()
    }

    /// Checks the keys against `known` (as for
    /// [`unknown_keys`](Self::unknown_keys)): a key that is a known key
    /// in another letter case is an error ([`ConfError::Miscased`]); other
    /// unknown keys (probable typos) and repeated keys (only the first
    /// counts) are logged, so an operator sees why a setting seems
    /// ignored.
    ///
    /// # Errors
    /// [`ConfError::Miscased`] for the first such key.
    pub fn check_keys(&self, known: &[&str]) -> Result<(), ConfError> {
        for (line, key) in self.unknown_keys(known) {
            if let Some(k) = miscased(&key, known) {
                return Err(ConfError::Miscased {
                    origin: self.origin.clone(),
                    line,
                    key,
                    known: k,
                });
            }
            tracing::warn!(file = self.origin(), line, key, "unknown setting ignored");
        }
        for (line, key) in self.duplicates() {
            tracing::warn!(
                file = self.origin(),
                line,
                key,
                "setting repeated; the first value is used"
            );
        }
        Ok(())
    }

    /// Keys set more than once, as `(line, key)` of each ignored repeat.
    ///
    /// The first value is the one in effect (see the module docs).
    pub fn duplicates(&self) -> Vec<(usize, String)> {
        self.dups.iter().map(|e| (e.line, e.key.clone())).collect()
    }

    /// All settings in effect, in file order, as `(key, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
    }

    fn entry(&self, key: &str) -> Option<&Entry> {
        let &pos = self.index.get(key)?;
        self.entries.get(pos).filter(|e| !e.value.is_empty())
    }

    fn line_of(&self, key: &str) -> usize {
        self.index
            .get(key)
            .and_then(|&p| self.entries.get(p))
            .map_or(0, |e| e.line)
    }

    fn syntax(&self, line: usize, text: &str) -> ConfError {
        ConfError::Syntax {
            origin: self.origin.clone(),
            line,
            text: text.to_owned(),
        }
    }

    /// The error for `key`'s value when a daemon checks it beyond its type
    /// (a list whose entries must each parse), naming file, line and key
    /// like the errors of [`Conf::get_parsed`]. `expected` says what a valid
    /// value looks like.
    #[must_use]
    pub fn invalid_value(&self, key: &str, expected: &str) -> ConfError {
        ConfError::Invalid {
            origin: self.origin.clone(),
            line: self.line_of(key),
            key: key.to_owned(),
            value: self.get(key).unwrap_or_default().to_owned(),
            expected: expected.to_owned(),
        }
    }

    fn invalid(&self, entry: &Entry, expected: &str) -> ConfError {
        ConfError::Invalid {
            origin: self.origin.clone(),
            line: entry.line,
            key: entry.key.clone(),
            value: entry.value.clone(),
            expected: expected.to_owned(),
        }
    }
}

/// Trims what the C++ reader trimmed (spaces and tabs) plus `\r` from CRLF files.
fn trim(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t' || c == '\r')
}

/// `Some(n)` if `key` is `prefix` followed by a canonical decimal number.
fn index_of(key: &str, prefix: &str) -> Option<u32> {
    let digits = key.strip_prefix(prefix)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// The known key `key` spells in another letter case, if any (for an
/// indexed prefix, the prefix with `key`'s index).
fn miscased(key: &str, known: &[&str]) -> Option<String> {
    known.iter().find_map(|k| match k.strip_suffix('*') {
        Some(prefix) => {
            let head = key.get(..prefix.len())?;
            let digits = key.get(prefix.len()..)?;
            (head.eq_ignore_ascii_case(prefix)
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("{prefix}{digits}"))
        }
        None => key.eq_ignore_ascii_case(k).then(|| (*k).to_owned()),
    })
}

fn is_known(key: &str, known: &[&str]) -> bool {
    known.iter().any(|k| match k.strip_suffix('*') {
        Some(prefix) => index_of(key, prefix).is_some(),
        None => *k == key,
    })
}

/// A human description of what a `T` looks like, for error messages.
fn expected_for<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    match name {
        "u16" => "a port number",
        "u8" | "u32" | "u64" | "u128" | "usize" => "a non-negative whole number",
        "core::num::nonzero::NonZero<u32>"
        | "core::num::nonzero::NonZero<u64>"
        | "core::num::nonzero::NonZero<usize>" => "a positive whole number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        "core::net::ip_addr::IpAddr" | "std::net::IpAddr" => "an IP address",
        "core::net::ip_addr::Ipv4Addr" => "an IPv4 address",
        "core::net::ip_addr::Ipv6Addr" => "an IPv6 address",
        "core::net::socket_addr::SocketAddr" => "an address:port",
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Written for these tests in the shape of a stock msg_server file (the key
    /// names are TeamTalk's).
    const MSG: &str = "\
# msg_server settings
ListenIP=0.0.0.0
ListenPort=8000\t\t# client port

ConcurrentDBConnCnt=2
DBServerIP1=10.0.0.5
DBServerPort1=10600
DBServerIP2 = db2.example \t
DBServerPort2=10601

LoginServerIP1=localhost
LoginServerPort1=8100
#LoginServerIP2=localhost
#LoginServerPort2=8101
IpAddr1=192.0.2.1\t# telecom address
IpAddr2=192.0.2.2
MaxConnCnt=100000
aesKey=abcdefghabcdefghabcdefghabcdefgh
";

    fn msg() -> Conf {
        Conf::parse_str(MSG, "msgserver.conf").expect("sample parses")
    }

    #[test]
    fn reads_plain_and_commented_values() {
        let c = msg();
        assert_eq!(c.get("ListenIP"), Some("0.0.0.0"));
        assert_eq!(c.get("ListenPort"), Some("8000"));
        assert_eq!(c.get("IpAddr1"), Some("192.0.2.1"));
        assert_eq!(c.get("DBServerIP2"), Some("db2.example"));
        assert_eq!(c.get("LoginServerIP2"), None);
        assert_eq!(c.get("NoSuchKey"), None);
        assert_eq!(c.require::<u16>("ListenPort").unwrap(), 8000);
        assert_eq!(c.get_parsed::<u32>("MaxConnCnt").unwrap(), Some(100_000));
        assert_eq!(c.get_parsed::<u32>("Absent").unwrap(), None);
        assert_eq!(c.origin(), "msgserver.conf");
        assert_eq!(c.iter().count(), 13);
    }

    #[test]
    fn invalid_value_names_file_line_and_key() {
        let c = Conf::parse_str("A=1\n\nListenPort=80x # oops\n", "msgserver.conf").unwrap();
        let err = c.require::<u16>("ListenPort").unwrap_err();
        assert_eq!(
            err.to_string(),
            "msgserver.conf:3: ListenPort: invalid value \"80x\": expected a port number"
        );
        let err = c.get_parsed::<u16>("A").map(|v| v.unwrap_or_default());
        assert_eq!(err.unwrap(), 1);
        let big = Conf::parse_str("ListenPort=70000", "x.conf").unwrap();
        assert!(matches!(
            big.require::<u16>("ListenPort"),
            Err(ConfError::Invalid { line: 1, .. })
        ));
    }

    #[test]
    fn missing_required_key() {
        let c = Conf::parse_str("Other=1\nEmpty=\n", "route.conf").unwrap();
        let err = c.require::<u16>("ListenMsgPort").unwrap_err();
        assert_eq!(
            err.to_string(),
            "route.conf: ListenMsgPort: missing required setting"
        );
        // An empty value is treated as absent, as in the C++ reader.
        assert_eq!(c.get("Empty"), None);
        assert!(matches!(
            c.require::<String>("Empty"),
            Err(ConfError::Missing { .. })
        ));
    }

    #[test]
    fn line_without_equals_is_an_error() {
        let err = Conf::parse_str("A=1\nListenPort 8000\n", "login.conf").unwrap_err();
        assert_eq!(
            err.to_string(),
            "login.conf:2: expected `key=value`, found \"ListenPort 8000\""
        );
        let err = Conf::parse_str("  = 5 # no key", "login.conf").unwrap_err();
        assert!(matches!(err, ConfError::Syntax { line: 1, .. }));
    }

    #[test]
    fn hash_always_starts_a_comment_and_first_equals_splits() {
        let c = Conf::parse_str("KeyPassword=tt#secret\nUrl=http://h/?a=b\r\n", "p.conf").unwrap();
        assert_eq!(c.get("KeyPassword"), Some("tt"));
        assert_eq!(c.get("Url"), Some("http://h/?a=b"));
    }

    #[test]
    fn duplicates_keep_the_first_value_and_are_reported() {
        let c = Conf::parse_str(
            "ListenPort=8000\nX=1\nListenPort=9000\nListenPort=9001",
            "m.conf",
        )
        .unwrap();
        assert_eq!(c.get("ListenPort"), Some("8000"));
        assert_eq!(
            c.duplicates(),
            vec![(3, "ListenPort".to_owned()), (4, "ListenPort".to_owned())]
        );
        assert!(msg().duplicates().is_empty());
    }

    #[test]
    fn indexed_keys_sorted_and_canonical_only() {
        let c = Conf::parse_str("S3=c\nS1=a\nS01=x\nS=y\nS2x=z\nS10=j\nS2=\n", "i.conf").unwrap();
        assert_eq!(c.indexed("S"), vec![(1, "a"), (3, "c"), (10, "j")]);
    }

    #[test]
    fn endpoints_from_pairs() {
        let c = msg();
        let db = c.endpoints("DBServerIP", "DBServerPort").unwrap();
        assert_eq!(
            db,
            vec![
                Endpoint {
                    index: 1,
                    host: "10.0.0.5".into(),
                    port: 10600
                },
                Endpoint {
                    index: 2,
                    host: "db2.example".into(),
                    port: 10601
                },
            ]
        );
        assert_eq!(db[0].to_string(), "10.0.0.5:10600");
        let login = c.endpoints("LoginServerIP", "LoginServerPort").unwrap();
        assert_eq!(login.len(), 1);
        assert!(
            c.endpoints("PushServerIP", "PushServerPort")
                .unwrap()
                .is_empty()
        );
        let v6 = Endpoint {
            index: 1,
            host: "::1".into(),
            port: 1,
        };
        assert_eq!(v6.to_string(), "[::1]:1");
    }

    #[test]
    fn endpoints_reject_unpaired_gaps_and_bad_ports() {
        let c = Conf::parse_str("IP1=a\nPort1=1\nIP2=b\n", "e.conf").unwrap();
        let err = c.endpoints("IP", "Port").unwrap_err();
        assert_eq!(err.to_string(), "e.conf:3: IP2 is set but Port2 is not");

        let c = Conf::parse_str("IP1=a\nPort1=1\nPort2=2\n", "e.conf").unwrap();
        assert!(matches!(
            c.endpoints("IP", "Port"),
            Err(ConfError::Unpaired { line: 3, .. })
        ));

        let c = Conf::parse_str("IP1=a\nPort1=1\nIP3=c\nPort3=3\n", "e.conf").unwrap();
        let err = c.endpoints("IP", "Port").unwrap_err();
        assert!(matches!(err, ConfError::IndexGap { line: 3, .. }), "{err}");

        let c = Conf::parse_str("IP1=a\nPort1=http\n", "e.conf").unwrap();
        assert!(matches!(
            c.endpoints("IP", "Port"),
            Err(ConfError::Invalid { line: 2, .. })
        ));
    }

    #[test]
    fn unknown_keys_with_indexed_prefixes() {
        let c = msg();
        let known = [
            "ListenIP",
            "ListenPort",
            "ConcurrentDBConnCnt",
            "DBServerIP*",
            "DBServerPort*",
            "LoginServerIP*",
            "LoginServerPort*",
            "IpAddr1",
            "IpAddr2",
            "MaxConnCnt",
        ];
        assert_eq!(c.unknown_keys(&known), vec![(18, "aesKey".to_owned())]);
        let c = Conf::parse_str("DBServerIPx=1\nDBServerIP=2\n", "u.conf").unwrap();
        assert_eq!(
            c.unknown_keys(&["DBServerIP*"]),
            vec![(1, "DBServerIPx".to_owned()), (2, "DBServerIP".to_owned())]
        );
    }

    #[test]
    fn load_from_disk_and_report_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routeserver.conf");
        std::fs::write(
            &path,
            b"ListenIP=0.0.0.0\nListenMsgPort=8200\t# \xe4\xb8\xad\n",
        )
        .unwrap();
        let c = Conf::load(&path).unwrap();
        assert_eq!(c.require::<u16>("ListenMsgPort").unwrap(), 8200);
        assert_eq!(c.origin(), "routeserver.conf");

        let err = Conf::load(dir.path().join("nope.conf")).unwrap_err();
        assert!(matches!(err, ConfError::Io { .. }));
        assert!(
            err.to_string().starts_with("nope.conf: cannot read"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if let Ok(c) = Conf::parse_str(&text, "fuzz.conf") {
                for (k, _) in c.iter() {
                    let _ = c.get_parsed::<u16>(k);
                    let _ = c.require::<i64>(k);
                }
                let _ = c.endpoints("IP", "Port");
                let _ = c.unknown_keys(&["A", "IP*"]);
                let _ = c.duplicates();
            }
        }

        #[test]
        fn structured_lines_never_panic_and_round_trip(
            lines in proptest::collection::vec(
                ("[A-Za-z]{1,6}[0-9]{0,2}", "[ \t]{0,2}", "[^#\r\n]{0,12}", "(#.{0,5})?"),
                0..20,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(k, ws, v, c)| format!("{ws}{k}{ws}={v}{c}\n"))
                .collect();
            let c = Conf::parse_str(&text, "gen.conf").unwrap();
            // The first occurrence of each key wins.
            let mut seen = std::collections::HashSet::new();
            for (k, _, v, _) in &lines {
                if seen.insert(k.clone()) {
                    let want = trim(v);
                    let got = c.get(k);
                    if want.is_empty() {
                        prop_assert_eq!(got, None);
                    } else {
                        prop_assert_eq!(got, Some(want));
                    }
                }
            }
            prop_assert_eq!(c.duplicates().len(), lines.len() - seen.len());
            let _ = c.endpoints("A", "B");
        }
    }

    #[test]
    fn a_key_in_another_case_is_an_error_naming_the_known_key() {
        let conf = Conf::parse_str("ListenPort=1\nDatadir=/tmp/x\n", "db.conf").unwrap();
        let err = conf.check_keys(&["ListenPort", "DataDir"]).unwrap_err();
        assert!(
            matches!(&err, ConfError::Miscased { line: 2, key, known, .. } if key == "Datadir" && known == "DataDir"),
            "{err:?}"
        );
        assert!(err.to_string().contains("did you mean DataDir"), "{err}");
        let conf = Conf::parse_str("dbserverip1=x\n", "msg.conf").unwrap();
        let err = conf.check_keys(&["DBServerIP*"]).unwrap_err();
        assert!(err.to_string().contains("DBServerIP1"), "{err}");
        // A plain typo stays a warning; the right case passes.
        let conf = Conf::parse_str("DataDri=x\nDataDir=y\n", "db.conf").unwrap();
        assert!(conf.check_keys(&["DataDir"]).is_ok());
    }
}
