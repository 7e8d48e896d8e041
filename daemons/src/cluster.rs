//! The cluster secret and who may connect to a server port: one reading
//! of the conf keys every daemon shares.
//!
//! | key | meaning |
//! |---|---|
//! | `ClusterSecret=` | the shared secret itself (at least 16 bytes; e.g. `openssl rand -hex 32`) |
//! | `ClusterSecretFile=` | a file holding it (surrounding whitespace trimmed); keeps it out of the conf |
//! | `AllowUnauthenticatedPeers=` | CIDRs (`10.0.0.0/8;192.0.2.7/32`) whose peers may skip authentication: C++ TeamTalk daemons in a mixed cluster |
//!
//! Every server-to-server connection then proves knowledge of the secret
//! before anything else (teamtalk-conn's link authentication): our links
//! authenticate, and our server ports ([`PeerPolicy`]) admit a peer only
//! after its proof, or unauthenticated when its address is listed.
//!
//! Without a secret, a daemon refuses to start when a server port listens
//! beyond loopback, unless `AllowUnauthenticatedPeers=` says who may
//! connect (then only those may, with a loud warning): a server port open
//! to anyone is TeamTalk's hole, not ours.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use teamtalk_conn::{ClusterAuth, ClusterKey, NonceSource};

use crate::conf::{Conf, ConfError};

/// The conf keys of this module, for each daemon's list of known keys.
pub const KEYS: &[&str] = &[
    "ClusterSecret",
    "ClusterSecretFile",
    "AllowUnauthenticatedPeers",
];

/// Largest secret file read; a secret is a few dozen bytes.
const MAX_SECRET_FILE: u64 = 4096;

/// Why the cluster settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A key does not parse.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// Both `ClusterSecret` and `ClusterSecretFile` are set.
    #[error("{origin}: set ClusterSecret or ClusterSecretFile, not both")]
    BothSecrets {
        /// The conf file.
        origin: String,
    },
    /// The secret file cannot be read.
    #[error("{origin}: ClusterSecretFile={path}: {source}")]
    SecretFile {
        /// The conf file.
        origin: String,
        /// The secret file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secret is too short (or otherwise unusable).
    #[error("{origin}: the cluster secret is unusable: {reason}")]
    Secret {
        /// The conf file.
        origin: String,
        /// Why.
        reason: String,
    },
    /// An entry of `AllowUnauthenticatedPeers` is not a CIDR or address.
    #[error(
        "{origin}: AllowUnauthenticatedPeers: {value:?} is not an address or CIDR (e.g. 10.0.0.0/8)"
    )]
    Cidr {
        /// The conf file.
        origin: String,
        /// The entry.
        value: String,
    },
}

/// The cluster secret (if any) and the peers that may skip it.
#[derive(Clone, Default)]
pub struct PeerPolicy {
    key: Option<ClusterKey>,
    allow: Vec<IpNet>,
}

impl std::fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerPolicy")
            .field("key", &self.key.as_ref().map(ClusterKey::id_hex))
            .field("allow", &self.allow)
            .finish()
    }
}

impl PeerPolicy {
    /// No secret, nobody listed: what daemons on loopback run with when
    /// nothing is configured.
    #[must_use]
    pub fn open() -> Self {
        Self::default()
    }

    /// Authentication with `secret`.
    ///
    /// # Errors
    /// A secret shorter than teamtalk-conn's minimum.
    pub fn with_secret(secret: &[u8]) -> Result<Self, teamtalk_conn::KeyError> {
        Ok(Self {
            key: Some(ClusterKey::new(secret)?),
            allow: Vec::new(),
        })
    }

    /// Also lets `nets` in without authenticating.
    #[must_use]
    pub fn allowing(mut self, nets: Vec<IpNet>) -> Self {
        self.allow = nets;
        self
    }

    /// Reads `ClusterSecret` / `ClusterSecretFile` and
    /// `AllowUnauthenticatedPeers`.
    ///
    /// # Errors
    /// [`ClusterError`] naming the file and the key.
    pub fn from_conf(conf: &Conf) -> Result<Self, ClusterError> {
        let origin = conf.origin().to_owned();
        let secret = match (conf.get("ClusterSecret"), conf.get("ClusterSecretFile")) {
            (Some(_), Some(_)) => return Err(ClusterError::BothSecrets { origin }),
            (Some(s), None) => Some(s.as_bytes().to_vec()),
            (None, Some(path)) => Some(read_secret_file(&origin, PathBuf::from(path))?),
            (None, None) => None,
        };
        let key = match secret {
            Some(s) => Some(ClusterKey::new(&s).map_err(|e| ClusterError::Secret {
                origin: origin.clone(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let mut allow = Vec::new();
        if let Some(list) = conf.get("AllowUnauthenticatedPeers") {
            for item in list
                .split([';', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let net = item
                    .parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| ClusterError::Cidr {
                        origin: origin.clone(),
                        value: item.to_owned(),
                    })?;
                allow.push(net);
            }
        }
        Ok(Self { key, allow })
    }

    /// Whether a secret is configured.
    #[must_use]
    pub fn has_secret(&self) -> bool {
        self.key.is_some()
    }

    /// The key id (never the secret), for logs.
    #[must_use]
    pub fn key_id(&self) -> Option<String> {
        self.key.as_ref().map(ClusterKey::id_hex)
    }

    /// The listed networks.
    #[must_use]
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether `ip` is listed in `AllowUnauthenticatedPeers`.
    #[must_use]
    pub fn lists(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Whether a peer at `ip` must be turned away at once: no secret to
    /// prove, and a list of who may come that does not name it.
    #[must_use]
    pub fn refuses(&self, ip: IpAddr) -> bool {
        self.key.is_none() && !self.allow.is_empty() && !self.lists(ip)
    }

    /// The handshake settings for a link or a server-peer session, with
    /// nonces from the operating system's generator.
    #[must_use]
    pub fn auth(&self) -> Option<ClusterAuth> {
        self.key
            .clone()
            .map(|key| ClusterAuth::new(key, os_nonces()))
    }
}

/// Nonces from the operating system's random number generator.
#[must_use]
pub fn os_nonces() -> NonceSource {
    NonceSource::new(|| {
        let mut n = [0u8; 32];
        // The OS generator does not fail on the systems we run on; if it
        // ever did, a zero nonce only weakens replay protection of this
        // one handshake, and it is logged.
        if let Err(e) = getrandom::fill(&mut n) {
            tracing::error!(error = %e, "the OS random generator failed; nonce is zero");
        }
        n
    })
}

fn read_secret_file(origin: &str, path: PathBuf) -> Result<Vec<u8>, ClusterError> {
    let err = |source| ClusterError::SecretFile {
        origin: origin.to_owned(),
        path: path.clone(),
        source,
    };
    let len = std::fs::metadata(&path).map_err(err)?.len();
    if len > MAX_SECRET_FILE {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes; a secret file holds at most {MAX_SECRET_FILE}"),
        )));
    }
    let raw = std::fs::read(&path).map_err(err)?;
    Ok(raw.trim_ascii().to_vec())
}

/// Creates (once) and reads the cluster secret `teamtalk up` uses:
/// `<dir>/cluster.secret`, 32 random bytes in hex, readable by the owner
/// only.
///
/// # Errors
/// The file cannot be created or read.
pub fn ensure_secret_file(dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join("cluster.secret");
    match std::fs::read(&path) {
        Ok(raw) => return Ok(raw.trim_ascii().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&path)?;
    std::io::Write::write_all(&mut f, hex.as_bytes())?;
    f.sync_all()?;
    Ok(hex.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Conf {
        Conf::parse_str(text, "x.conf").unwrap()
    }

    #[test]
    fn secrets_from_the_conf_or_a_file() {
        assert!(!PeerPolicy::from_conf(&conf("")).unwrap().has_secret());
        let p = PeerPolicy::from_conf(&conf("ClusterSecret=0123456789abcdef0123\n")).unwrap();
        assert!(p.has_secret());
        let err = PeerPolicy::from_conf(&conf("ClusterSecret=short\n")).unwrap_err();
        assert!(
            err.to_string().starts_with("x.conf: the cluster secret"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "  0123456789abcdef0123\n").unwrap();
        let from_file =
            PeerPolicy::from_conf(&conf(&format!("ClusterSecretFile={}\n", file.display())))
                .unwrap();
        assert_eq!(from_file.key_id(), p.key_id(), "whitespace trimmed");
        let missing = PeerPolicy::from_conf(&conf("ClusterSecretFile=/nonexistent/s\n"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("ClusterSecretFile=/nonexistent/s"),
            "{missing}"
        );
        let both = PeerPolicy::from_conf(&conf(&format!(
            "ClusterSecret=0123456789abcdef0123\nClusterSecretFile={}\n",
            file.display()
        )));
        assert!(matches!(both, Err(ClusterError::BothSecrets { .. })));
    }

    #[test]
    fn allow_lists_take_cidrs_and_addresses() {
        let p = PeerPolicy::from_conf(&conf(
            "AllowUnauthenticatedPeers=10.0.0.0/8; 192.0.2.7 ,fd00::/8\n",
        ))
        .unwrap();
        assert!(p.lists("10.1.2.3".parse().unwrap()));
        assert!(p.lists("192.0.2.7".parse().unwrap()));
        assert!(p.lists("::ffff:10.0.0.1".parse().unwrap()));
        assert!(p.lists("fd12::1".parse().unwrap()));
        assert!(!p.lists("192.0.2.8".parse().unwrap()));
        assert!(
            p.refuses("192.0.2.8".parse().unwrap()),
            "no secret: only the listed"
        );
        assert!(!PeerPolicy::open().refuses("192.0.2.8".parse().unwrap()));
        let err = PeerPolicy::from_conf(&conf("AllowUnauthenticatedPeers=10.0.0.0/99\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.0/99"), "{err}");
    }

    #[test]
    fn up_creates_its_secret_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure_secret_file(dir.path()).unwrap();
        let b = ensure_secret_file(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("cluster.secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(PeerPolicy::with_secret(&a).is_ok());
    }
}
