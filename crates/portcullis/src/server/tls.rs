//! TLS termination with rustls (ring provider, TLS 1.2 and 1.3, ALPN h2 + http/1.1).

use std::{fs::File, io::BufReader, sync::Arc};

use anyhow::Context;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(
        File::open(&files.cert_file)
            .with_context(|| format!("opening {}", files.cert_file.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .context("reading the certificate chain")?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(
        File::open(&files.key_file)
            .with_context(|| format!("opening {}", files.key_file.display()))?,
    ))
    .context("reading the private key")?
    .context("no private key in the key file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not form a valid pair")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
