//! TLS settings from a daemon's `.conf`: PEM files in, rustls configs out
//! for `teamtalk_conn::Tls` (which itself never touches a file).
//!
//! # Keys
//!
//! Each TLS context of a daemon has its own key prefix, so one file can
//! configure, say, a client listener and a link to route_server apart.
//! With prefix `P` (possibly empty):
//!
//! | key | meaning | needed for |
//! |---|---|---|
//! | `PTlsCertFile` | PEM certificate chain, leaf first | a server; a client presenting a certificate |
//! | `PTlsKeyFile` | PEM private key (PKCS#8, PKCS#1 or SEC1) of that leaf | with `PTlsCertFile` |
//! | `PTlsCaFile` | PEM bundle of CA certificates to verify the peer with | a client; a server with `PTlsClientAuth=true` |
//! | `PTlsClientAuth` | `true`: a server demands a client certificate signed by `PTlsCaFile` (server links between hosts); default `false` | a server |
//! | `PTlsServerName` | the name (or IP address) the server's certificate must carry; default: the host the link connects to | a client |
//!
//! TLS is off for a context when none of its keys is set
//! ([`TlsSettings::from_conf`] returns `None`): plain TCP stays the
//! default, as TeamTalk clients cannot speak TLS.
//!
//! Errors name the conf file, the key and the file it points to, e.g.
//! `msgserver.conf: TlsKeyFile=/etc/tt/key.pem: no private key found`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use teamtalk_conn::tls::crypto_provider;
use teamtalk_conn::tls::rustls::pki_types::pem::{self, PemObject};
use teamtalk_conn::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use teamtalk_conn::tls::rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use teamtalk_conn::tls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

use crate::conf::{Conf, ConfError};

/// PEM files larger than this are refused: real chains and bundles are a
/// few hundred KiB at most, and the file is read whole.
pub const MAX_PEM_FILE_BYTES: u64 = 4 << 20;

/// The key suffixes, after the prefix.
const CERT: &str = "TlsCertFile";
const KEY: &str = "TlsKeyFile";
const CA: &str = "TlsCaFile";
const CLIENT_AUTH: &str = "TlsClientAuth";
const SERVER_NAME: &str = "TlsServerName";

/// Why TLS settings could not be turned into a rustls config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfError {
    /// A TLS key has a malformed value (`TlsClientAuth=maybe`).
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// A setting this use of the context needs is absent.
    #[error("{origin}: {key}: missing required setting ({why})")]
    Missing {
        /// The conf file.
        origin: String,
        /// The absent key, prefix included.
        key: String,
        /// What needs it.
        why: &'static str,
    },
    /// A file named by a key could not be read.
    #[error("{origin}: {key}={path}: cannot read: {source}", path = path.display())]
    Read {
        /// The conf file.
        origin: String,
        /// The key, prefix included.
        key: String,
        /// The file it names.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file is over [`MAX_PEM_FILE_BYTES`].
    #[error("{origin}: {key}={path}: larger than {MAX_PEM_FILE_BYTES} bytes", path = path.display())]
    TooLarge {
        /// The conf file.
        origin: String,
        /// The key, prefix included.
        key: String,
        /// The file it names.
        path: PathBuf,
    },
    /// A file is not valid PEM, or holds none of what the key wants.
    #[error("{origin}: {key}={path}: {what}", path = path.display())]
    Pem {
        /// The conf file.
        origin: String,
        /// The key, prefix included.
        key: String,
        /// The file it names.
        path: PathBuf,
        /// What is wrong ("no certificate found", or the PEM parser's
        /// message, which never quotes key material).
        what: String,
    },
    /// rustls refused what the files hold (a key that does not match the
    /// certificate, an unsupported key type, a CA certificate it cannot
    /// parse).
    #[error("{origin}: {key}: rejected by rustls: {source}")]
    Rejected {
        /// The conf file.
        origin: String,
        /// The key whose content was refused.
        key: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA
    /// bundle.
    #[error("{origin}: {key}: cannot verify client certificates: {source}")]
    Verifier {
        /// The conf file.
        origin: String,
        /// The CA key, prefix included.
        key: String,
        /// rustls's reason.
        source: VerifierBuilderError,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("{origin}: {key}: invalid server name {value:?}")]
    ServerName {
        /// The conf file.
        origin: String,
        /// The key (or "link host" for the default).
        key: String,
        /// The value.
        value: String,
    },
}

/// One TLS context's settings, as read from a conf (see the
/// [module docs](self) for the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The conf file, for messages.
    origin: String,
    /// The key prefix.
    prefix: String,
    /// `TlsCertFile`.
    pub cert_file: Option<PathBuf>,
    /// `TlsKeyFile`.
    pub key_file: Option<PathBuf>,
    /// `TlsCaFile`.
    pub ca_file: Option<PathBuf>,
    /// `TlsClientAuth`.
    pub client_auth: bool,
    /// `TlsServerName`.
    pub server_name: Option<String>,
}

impl TlsSettings {
    /// The five keys of the context with this prefix, for
    /// [`Conf::check_keys`]' list of known keys.
    #[must_use]
    pub fn keys(prefix: &str) -> [String; 5] {
        [CERT, KEY, CA, CLIENT_AUTH, SERVER_NAME].map(|k| format!("{prefix}{k}"))
    }

    /// Reads the context with key prefix `prefix`. `Ok(None)` when none
    /// of its keys is set: TLS is off and the connection stays plain.
    ///
    /// Only the conf is read here; the files are read by
    /// [`TlsSettings::server_config`] and [`TlsSettings::client_config`].
    ///
    /// # Errors
    /// [`TlsConfError::Conf`] for a `TlsClientAuth` that is not `true` or
    /// `false`.
    pub fn from_conf(conf: &Conf, prefix: &str) -> Result<Option<Self>, TlsConfError> {
        let path = |k: &str| conf.get(&format!("{prefix}{k}")).map(PathBuf::from);
        let client_auth: Option<bool> = conf.get_parsed(&format!("{prefix}{CLIENT_AUTH}"))?;
        let settings = Self {
            origin: conf.origin().to_owned(),
            prefix: prefix.to_owned(),
            cert_file: path(CERT),
            key_file: path(KEY),
            ca_file: path(CA),
            client_auth: client_auth.unwrap_or(false),
            server_name: conf
                .get(&format!("{prefix}{SERVER_NAME}"))
                .map(str::to_owned),
        };
        let any = settings.cert_file.is_some()
            || settings.key_file.is_some()
            || settings.ca_file.is_some()
            || client_auth.is_some()
            || settings.server_name.is_some();
        Ok(any.then_some(settings))
    }

    /// The config of a TLS server (a listener): `TlsCertFile` and
    /// `TlsKeyFile` are required; with `TlsClientAuth=true`, clients must
    /// present a certificate signed by a CA of `TlsCaFile`.
    ///
    /// # Errors
    /// A missing key, an unreadable or malformed file, a key that does not
    /// match the certificate: each names the conf file, the key and the
    /// file.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsConfError> {
        let why = "a TLS listener";
        let chain = self.certs(CERT, self.require(CERT, self.cert_file.as_deref(), why)?)?;
        let key = self.key(self.require(KEY, self.key_file.as_deref(), why)?)?;
        let builder = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.rejected(CERT, e))?;
        let builder = if self.client_auth {
            let ca = self.require(CA, self.ca_file.as_deref(), "TlsClientAuth=true")?;
            let roots = self.roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, crypto_provider())
                .build()
                .map_err(|source| TlsConfError::Verifier {
                    origin: self.origin.clone(),
                    key: self.key_name(CA),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| self.rejected(KEY, e))?;
        Ok(Arc::new(config))
    }

    /// The config of a TLS client (a link): `TlsCaFile` is required (the
    /// CAs the server's certificate must chain to; the system's trust
    /// store is never used, as server links run inside one deployment);
    /// with `TlsCertFile` and `TlsKeyFile`, the client presents that
    /// certificate to servers that ask.
    ///
    /// # Errors
    /// As [`TlsSettings::server_config`].
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsConfError> {
        let ca = self.require(CA, self.ca_file.as_deref(), "a TLS link")?;
        let roots = self.roots(ca)?;
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.rejected(CA, e))?
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), key) => {
                let why = "a client certificate";
                let key = self.key(self.require(KEY, key.as_deref(), why)?)?;
                builder
                    .with_client_auth_cert(self.certs(CERT, cert)?, key)
                    .map_err(|e| self.rejected(KEY, e))?
            }
            (None, Some(_)) => {
                return Err(self.missing(CERT, "TlsKeyFile is set"));
            }
        };
        Ok(Arc::new(config))
    }

    /// The name a server's certificate must carry: `TlsServerName` if
    /// set, else `link_host` (the host or IP address the link connects
    /// to, as written in the conf).
    ///
    /// # Errors
    /// [`TlsConfError::ServerName`] for a value that is neither a DNS name
    /// nor an IP address.
    pub fn server_name(&self, link_host: &str) -> Result<ServerName<'static>, TlsConfError> {
        let (key, value) = match &self.server_name {
            Some(name) => (self.key_name(SERVER_NAME), name.as_str()),
            None => ("link host".to_owned(), link_host),
        };
        ServerName::try_from(value.to_owned()).map_err(|_| TlsConfError::ServerName {
            origin: self.origin.clone(),
            key,
            value: value.to_owned(),
        })
    }

    fn key_name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn missing(&self, suffix: &str, why: &'static str) -> TlsConfError {
        TlsConfError::Missing {
            origin: self.origin.clone(),
            key: self.key_name(suffix),
            why,
        }
    }

    fn require<'a>(
        &self,
        suffix: &str,
        value: Option<&'a Path>,
        why: &'static str,
    ) -> Result<&'a Path, TlsConfError> {
        value.ok_or_else(|| self.missing(suffix, why))
    }

    fn rejected(&self, suffix: &str, source: rustls::Error) -> TlsConfError {
        TlsConfError::Rejected {
            origin: self.origin.clone(),
            key: self.key_name(suffix),
            source,
        }
    }

    fn pem_error(&self, suffix: &str, path: &Path, what: String) -> TlsConfError {
        TlsConfError::Pem {
            origin: self.origin.clone(),
            key: self.key_name(suffix),
            path: path.to_owned(),
            what,
        }
    }

    /// Reads a whole file, up to [`MAX_PEM_FILE_BYTES`].
    fn read(&self, suffix: &str, path: &Path) -> Result<Vec<u8>, TlsConfError> {
        let read_error = |source| TlsConfError::Read {
            origin: self.origin.clone(),
            key: self.key_name(suffix),
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_PEM_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
            return Err(TlsConfError::TooLarge {
                origin: self.origin.clone(),
                key: self.key_name(suffix),
                path: path.to_owned(),
            });
        }
        Ok(bytes)
    }

    /// Every certificate in a PEM file (other sections are skipped).
    fn certs(
        &self,
        suffix: &str,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, TlsConfError> {
        let bytes = self.read(suffix, path)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, pem::Error>>()
            .map_err(|e| self.pem_error(suffix, path, e.to_string()))?;
        if certs.is_empty() {
            return Err(self.pem_error(suffix, path, "no certificate found".to_owned()));
        }
        Ok(certs)
    }

    /// The first private key in a PEM file.
    fn key(&self, path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfError> {
        let bytes = self.read(KEY, path)?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
            let what = match e {
                pem::Error::NoItemsFound => "no private key found".to_owned(),
                other => other.to_string(),
            };
            self.pem_error(KEY, path, what)
        })
    }

    /// The trust anchors of a CA bundle.
    fn roots(&self, path: &Path) -> Result<Arc<RootCertStore>, TlsConfError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certs(CA, path)? {
            roots.add(cert).map_err(|e| self.rejected(CA, e))?;
        }
        Ok(Arc::new(roots))
    }
}

/// The TLS of a daemon's links (`LinkTls*`): the settings, and the client
/// configuration built from them once for all the links.
#[derive(Debug, Clone)]
pub struct LinkTls {
    settings: TlsSettings,
    config: Arc<ClientConfig>,
}

impl LinkTls {
    /// The links' TLS from `settings`, `None` without them.
    ///
    /// # Errors
    /// As [`TlsSettings::client_config`].
    pub fn from_settings(settings: Option<&TlsSettings>) -> Result<Option<Self>, TlsConfError> {
        settings
            .map(|s| {
                Ok(Self {
                    config: s.client_config()?,
                    settings: s.clone(),
                })
            })
            .transpose()
    }

    /// The client configuration and the name the server at `addr` must
    /// prove ([`TlsSettings::server_name`]).
    ///
    /// # Errors
    /// As [`TlsSettings::server_name`].
    pub fn for_link(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<(Arc<ClientConfig>, ServerName<'static>), TlsConfError> {
        let name = self.settings.server_name(&addr.ip().to_string())?;
        Ok((Arc::clone(&self.config), name))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use teamtalk_conn::tls::testing::TestPki;

    use super::*;

    /// Writes the shared test PKI's files into `dir`.
    fn write_pki(dir: &Path) {
        let pki = TestPki::shared();
        fs::write(dir.join("ca.pem"), pki.ca_pem()).unwrap();
        fs::write(dir.join("server.pem"), pki.server_cert_pem()).unwrap();
        fs::write(dir.join("server.key"), pki.server_key_pem()).unwrap();
        fs::write(dir.join("client.pem"), pki.client_cert_pem()).unwrap();
        fs::write(dir.join("client.key"), pki.client_key_pem()).unwrap();
    }

    fn conf(text: &str) -> Conf {
        Conf::parse_str(text, "test.conf").unwrap()
    }

    fn settings(text: &str, prefix: &str) -> TlsSettings {
        TlsSettings::from_conf(&conf(text), prefix)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn no_tls_keys_means_plain() {
        let c = conf("ListenPort=8000\nRouteTlsCaFile=/x\n");
        assert_eq!(TlsSettings::from_conf(&c, "").unwrap(), None);
        assert!(TlsSettings::from_conf(&c, "Route").unwrap().is_some());
    }

    #[test]
    fn keys_are_read_with_their_prefix() {
        let s = settings(
            "RouteTlsCertFile=/c.pem\nRouteTlsKeyFile=/k.pem\nRouteTlsCaFile=/ca.pem\n\
             RouteTlsClientAuth=true\nRouteTlsServerName=route.example\nTlsCertFile=/other\n",
            "Route",
        );
        assert_eq!(s.cert_file.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(s.key_file.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert!(s.client_auth);
        assert_eq!(s.server_name.as_deref(), Some("route.example"));
        assert_eq!(
            TlsSettings::keys("Route"),
            [
                "RouteTlsCertFile",
                "RouteTlsKeyFile",
                "RouteTlsCaFile",
                "RouteTlsClientAuth",
                "RouteTlsServerName"
            ]
        );
    }

    #[test]
    fn a_bad_client_auth_value_names_the_file_and_key() {
        let e = TlsSettings::from_conf(&conf("TlsClientAuth=maybe\n"), "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.conf:1: TlsClientAuth: invalid value \"maybe\": expected true or false"
        );
    }

    #[test]
    fn server_and_client_configs_load_from_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        write_pki(dir.path());
        let d = dir.path().display();
        let server = settings(
            &format!(
                "TlsCertFile={d}/server.pem\nTlsKeyFile={d}/server.key\n\
                 TlsCaFile={d}/ca.pem\nTlsClientAuth=true\n"
            ),
            "",
        );
        let server_config = server.server_config().unwrap();
        let client = settings(
            &format!(
                "TlsCaFile={d}/ca.pem\nTlsCertFile={d}/client.pem\nTlsKeyFile={d}/client.key\n"
            ),
            "",
        );
        let client_config = client.client_config().unwrap();
        assert!(client_config.client_auth_cert_resolver.has_certs());
        assert_eq!(
            client.server_name("127.0.0.1").unwrap(),
            ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]))
        );

        // The two configs complete a mutually authenticated handshake.
        let mut c =
            rustls::ClientConnection::new(client_config, client.server_name("localhost").unwrap())
                .unwrap();
        let mut s = rustls::ServerConnection::new(server_config).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(
            s.peer_certificates().unwrap()[..],
            TestPki::shared().client_chain()[..]
        );
    }

    #[test]
    fn errors_name_the_conf_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_pki(dir.path());
        let d = dir.path().display();
        let err = |text: String, server: bool| {
            let s = settings(&text, "Link");
            if server {
                s.server_config().unwrap_err().to_string()
            } else {
                s.client_config().unwrap_err().to_string()
            }
        };

        assert_eq!(
            err(format!("LinkTlsCertFile={d}/server.pem\n"), true),
            "test.conf: LinkTlsKeyFile: missing required setting (a TLS listener)"
        );
        assert_eq!(
            err("LinkTlsServerName=x\n".to_owned(), false),
            "test.conf: LinkTlsCaFile: missing required setting (a TLS link)"
        );
        assert_eq!(
            err(
                format!(
                    "LinkTlsCertFile={d}/server.pem\nLinkTlsKeyFile={d}/server.key\nLinkTlsClientAuth=true\n"
                ),
                true
            ),
            "test.conf: LinkTlsCaFile: missing required setting (TlsClientAuth=true)"
        );
        let gone = err(
            format!("LinkTlsCertFile={d}/nope.pem\nLinkTlsKeyFile={d}/server.key\n"),
            true,
        );
        assert!(
            gone.starts_with(&format!(
                "test.conf: LinkTlsCertFile={d}/nope.pem: cannot read: "
            )),
            "{gone}"
        );
        // A certificate where the key should be.
        assert_eq!(
            err(
                format!("LinkTlsCertFile={d}/server.pem\nLinkTlsKeyFile={d}/server.pem\n"),
                true
            ),
            format!("test.conf: LinkTlsKeyFile={d}/server.pem: no private key found")
        );
        // A key where the certificates should be.
        assert_eq!(
            err(format!("LinkTlsCaFile={d}/server.key\n"), false),
            format!("test.conf: LinkTlsCaFile={d}/server.key: no certificate found")
        );
        // A key that does not belong to the certificate.
        let mismatch = err(
            format!("LinkTlsCertFile={d}/server.pem\nLinkTlsKeyFile={d}/client.key\n"),
            true,
        );
        assert!(
            mismatch.starts_with("test.conf: LinkTlsKeyFile: rejected by rustls: "),
            "{mismatch}"
        );
        // Broken PEM.
        fs::write(
            dir.path().join("broken.pem"),
            "-----BEGIN CERTIFICATE-----\nnot base64!\n",
        )
        .unwrap();
        let broken = err(format!("LinkTlsCaFile={d}/broken.pem\n"), false);
        assert!(
            broken.starts_with(&format!("test.conf: LinkTlsCaFile={d}/broken.pem: ")),
            "{broken}"
        );
        // A key without its certificate on a client.
        assert_eq!(
            err(
                format!("LinkTlsCaFile={d}/ca.pem\nLinkTlsKeyFile={d}/client.key\n"),
                false
            ),
            "test.conf: LinkTlsCertFile: missing required setting (TlsKeyFile is set)"
        );
        // A bad server name.
        let s = settings("LinkTlsServerName=not a name\n", "Link");
        assert_eq!(
            s.server_name("h").unwrap_err().to_string(),
            "test.conf: LinkTlsServerName: invalid server name \"not a name\""
        );
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        let f = File::create(&big).unwrap();
        f.set_len(MAX_PEM_FILE_BYTES + 1).unwrap();
        let s = settings(&format!("TlsCaFile={}\n", big.display()), "");
        assert!(matches!(
            s.client_config(),
            Err(TlsConfError::TooLarge { .. })
        ));
    }
}
