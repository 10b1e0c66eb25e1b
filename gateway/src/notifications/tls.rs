//! TLS for https webhooks: rustls (the `ring` provider, no C/cmake build
//! beyond ring's own) over the TCP stream that the SSRF guard already
//! connected to the vetted address. Certificates are verified normally
//! (chain to a trusted root, name or IP in the certificate, validity);
//! there is no switch to turn verification off.
//!
//! Trusted roots: the Mozilla set compiled in (`webpki-roots`, so the
//! result does not depend on the host's CA files), plus the certificates
//! of `http.webhook_extra_ca_file` (PEM) when set: a private CA of the
//! operator's, or a test's self-signed certificate.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Why the TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("http.webhook_extra_ca_file {path}: {reason}")]
    ExtraCa { path: String, reason: String },
    #[error("TLS client: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client configuration of webhook deliveries: the compiled-in roots
/// and, when given, every certificate of the PEM file `extra_ca_file`.
pub fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_file {
        let bad = |reason: String| TlsConfigError::ExtraCa {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in the file".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The TLS handshake over `tcp` (already connected to the vetted
/// address) for `host`: SNI and certificate name check against `host`
/// (an IP literal is checked against the certificate's IP addresses and
/// sends no SNI, as RFC 6066 asks).
pub async fn connect(
    cfg: &Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("refused: host is not a TLS server name: {e}"))?;
    TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}
