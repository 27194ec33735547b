//! TLS for the client: rustls with the `ring` provider, trusting one certificate authority.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::ClientError;

/// How a client checks the servers it speaks TLS to.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM of the certificate authority that signed the servers' certificates (or of a
    /// self-signed server certificate).
    pub ca_pem: Vec<u8>,
    /// The name the server certificates must carry; by default the host of each address
    /// (a DNS name or an IP address).
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Trusts the CA certificate(s) in the PEM file at `path`.
    pub fn from_ca_file(
        path: &Path,
        server_name: Option<String>,
    ) -> Result<TlsConfig, ClientError> {
        let ca_pem = std::fs::read(path).map_err(|err| {
            ClientError::Tls(format!("cannot read the CA file {}: {err}", path.display()))
        })?;
        let config = TlsConfig {
            ca_pem,
            server_name,
        };
        config
            .certificates()
            .map_err(|err| ClientError::Tls(format!("{}: {err}", path.display())))?;
        Ok(config)
    }

    pub(crate) fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let certificates = CertificateDer::pem_slice_iter(&self.ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("not a PEM certificate: {err}"))?;
        if certificates.is_empty() {
            return Err("holds no PEM certificate".to_string());
        }
        Ok(certificates)
    }

    /// The name to check `address`'s certificate against.
    pub(crate) fn server_name(&self, address: &str) -> Result<ServerName<'static>, ClientError> {
        let name = self.server_name.as_deref().unwrap_or_else(|| host(address));
        ServerName::try_from(name.to_string())
            .map_err(|err| ClientError::Tls(format!("`{name}` is not a server name: {err}")))
    }

    /// A connector for the binary protocol.
    pub(crate) fn connector(&self) -> Result<TlsConnector, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in self.certificates().map_err(ClientError::Tls)? {
            roots
                .add(certificate)
                .map_err(|err| ClientError::Tls(format!("unusable CA certificate: {err}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| ClientError::Tls(err.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The host part of `host:port` or `[v6]:port`.
pub(crate) fn host(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_address_without_its_port() {
        assert_eq!(host("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host("chat.example.org:7071"), "chat.example.org");
        assert_eq!(host("[::1]:7070"), "::1");
        assert_eq!(host("localhost"), "localhost");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let config = TlsConfig {
            ca_pem: b"not pem".to_vec(),
            server_name: None,
        };
        assert!(config.certificates().is_err());
        assert!(config.connector().is_err());
        let named = TlsConfig {
            ca_pem: Vec::new(),
            server_name: Some("chat.example.org".into()),
        };
        assert!(named.server_name("10.0.0.1:7070").is_ok());
        assert!(matches!(
            TlsConfig::from_ca_file(Path::new("/nonexistent/ca.pem"), None),
            Err(ClientError::Tls(_))
        ));
    }
}
