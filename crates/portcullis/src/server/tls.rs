//! TLS termination with rustls (ring provider, TLS 1.2 and 1.3, ALPN h2 + http/1.1).

use std::{fs::File, io::BufReader, path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why the `server.tls` files cannot serve, with the configuration key to report it under: the
/// configuration check loads them too, so `check-config` passing means `serve` can start.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsFilesError {
    pub key: &'static str,
    pub message: String,
}

fn problem(key: &'static str, message: String) -> TlsFilesError {
    TlsFilesError { key, message }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFilesError> {
    const KEY: &str = "server.tls.cert_file";
    let file = File::open(path)
        .map_err(|e| problem(KEY, format!("cannot read {}: {e}", path.display())))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(KEY, format!("{}: invalid PEM ({e})", path.display())))?;
    if certs.is_empty() {
        return Err(problem(
            KEY,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFilesError> {
    const KEY: &str = "server.tls.key_file";
    let file = File::open(path)
        .map_err(|e| problem(KEY, format!("cannot read {}: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| problem(KEY, format!("{}: invalid PEM ({e})", path.display())))?
        .ok_or_else(|| {
            problem(
                KEY,
                format!(
                    "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    path.display()
                ),
            )
        })
}

/// Loads and checks the certificate chain and its key; every problem found, so both files are
/// fixed in one pass.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, Vec<TlsFilesError>> {
    let (certs, key) = match (certificates(&files.cert_file), private_key(&files.key_file)) {
        (Ok(certs), Ok(key)) => (certs, key),
        (certs, key) => return Err(certs.err().into_iter().chain(key.err()).collect()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![problem("server.tls", e.to_string())])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            vec![problem(
                "server.tls",
                format!(
                    "{} and {} are not a usable certificate and its key ({e})",
                    files.cert_file.display(),
                    files.key_file.display()
                ),
            )]
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let cfg = server_config(files).map_err(|problems| {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(text.join("; "))
    })?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
