//! A throw-away PKI for tests (feature `testing`): certificates are made
//! at run time with `rcgen`, so no key is ever committed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::crypto_provider;

/// A throw-away PKI made at run time: a CA, a server certificate for
/// `localhost` and 127.0.0.1, and a client certificate, all signed by the
/// CA. Nothing secret is ever committed.
pub struct TestPki {
    /// The CA certificate (the trust anchor).
    pub ca: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: PrivatePkcs8KeyDer<'static>,
    /// PEM texts: CA, server chain and key, client chain and key.
    pems: [String; 5],
}

impl TestPki {
    /// Generates a new CA and its two leaves.
    pub fn generate() -> Self {
        // Every CA gets its own name, so a certificate from another one is
        // an unknown issuer, not a bad signature.
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let mut ca_params = CertificateParams::new(Vec::new()).expect("no names");
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("teamtalk test CA {serial}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<SanType>| {
            let mut params = CertificateParams::new(Vec::new()).expect("no names");
            params.subject_alt_names = names;
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            (
                vec![cert.der().clone()],
                PrivatePkcs8KeyDer::from(key.serialize_der()),
                cert.pem(),
                key.serialize_pem(),
            )
        };
        let (server_chain, server_key, server_cert_pem, server_key_pem) = leaf(vec![
            SanType::DnsName("localhost".try_into().expect("dns name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ]);
        let (client_chain, client_key, client_cert_pem, client_key_pem) =
            leaf(vec![SanType::DnsName(
                "client.localhost".try_into().expect("dns name"),
            )]);
        Self {
            ca: ca.der().clone(),
            server_chain,
            server_key,
            client_chain,
            client_key,
            pems: [
                ca.pem(),
                server_cert_pem,
                server_key_pem,
                client_cert_pem,
                client_key_pem,
            ],
        }
    }

    /// One PKI per process: key generation is the slow part.
    pub fn shared() -> &'static Self {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(Self::generate)
    }

    /// The CA certificate as PEM (a `TlsCaFile`).
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.pems[0]
    }

    /// The server's certificate chain as PEM (a `TlsCertFile`).
    #[must_use]
    pub fn server_cert_pem(&self) -> &str {
        &self.pems[1]
    }

    /// The server's PKCS#8 private key as PEM (a `TlsKeyFile`).
    #[must_use]
    pub fn server_key_pem(&self) -> &str {
        &self.pems[2]
    }

    /// The client's certificate chain as PEM.
    #[must_use]
    pub fn client_cert_pem(&self) -> &str {
        &self.pems[3]
    }

    /// The client's PKCS#8 private key as PEM.
    #[must_use]
    pub fn client_key_pem(&self) -> &str {
        &self.pems[4]
    }

    /// The chain the client presents.
    pub fn client_chain(&self) -> &[CertificateDer<'static>] {
        &self.client_chain
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).expect("ca accepted");
        Arc::new(roots)
    }

    /// A server config; with `client_auth`, clients must present a
    /// certificate signed by this CA.
    pub fn server_config(&self, client_auth: bool) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if client_auth {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(self.roots(), crypto_provider())
                    .build()
                    .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(self.server_key.clone_key());
        Arc::new(
            builder
                .with_single_cert(self.server_chain.clone(), key)
                .expect("server cert"),
        )
    }

    /// A client config trusting `trusted`'s CA; with `with_cert`, it
    /// presents this PKI's client certificate.
    pub fn client_config(&self, trusted: &Self, with_cert: bool) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(trusted.roots());
        let config = if with_cert {
            let key = PrivateKeyDer::Pkcs8(self.client_key.clone_key());
            builder
                .with_client_auth_cert(self.client_chain.clone(), key)
                .expect("client cert")
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }
}
