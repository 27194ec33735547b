//! TLS for the listeners: rustls with the `ring` provider, from the PEM files of `[tls]`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;

/// The ALPN protocol of gRPC; HTTP/2 clients insist on it.
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol of the HTTP listener, which speaks HTTP/1.1 (WebSocket needs it).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The acceptor for a listener, or `None` when TLS is off. `alpn` lists the application
/// protocols the listener speaks (gRPC's is [`ALPN_H2`]; the binary protocol needs none).
pub fn acceptor(tls: &Tls, alpn: &[&[u8]]) -> anyhow::Result<Option<TlsAcceptor>> {
    let Some((cert, key)) = tls.files() else {
        return Ok(None);
    };
    let certs = read_certs(cert)?;
    let key = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{} does not suit {}", key_name(tls), cert.display()))?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn key_name(tls: &Tls) -> String {
    tls.key
        .as_deref()
        .map_or_else(|| "the key".to_string(), |key| key.display().to_string())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS key {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .with_context(|| format!("{} holds no PEM private key", path.display()))
}
