//! A throwaway PKI for TLS tests: a CA of the test's own and a server certificate it signed,
//! so that a client trusts the server only when it is given that CA.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA's certificate, and a server certificate and key for the names it was issued for.
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate (PEM): what a client must trust.
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    /// The server certificate and its private key (PEM), as files for a server's config.
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestPki {
    /// A new CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn issue(names: &[&str]) -> anyhow::Result<TestPki> {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "portcullis test CA");
        let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
        let issuer = Issuer::new(ca, &ca_key);
        let key = KeyPair::generate().context("server key")?;
        let cert =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .context("server params")?
                .signed_by(&key, &issuer)
                .context("server certificate")?;
        Ok(TestPki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// A rustls server configuration with the server certificate, offering `alpn` (e.g.
    /// `h2`, `http/1.1`).
    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::try_from(self.key_der.clone())
            .map_err(|e| anyhow::anyhow!("server key: {e}"))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    /// A rustls client configuration that trusts this CA and nothing else.
    pub fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}
