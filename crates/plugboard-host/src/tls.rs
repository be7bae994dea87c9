//! The one HTTPS client the host uses (readiness probes of `https://`
//! endpoints), built once: rustls, webpki roots, plus the PEM bundle named
//! by `SSL_CERT_FILE` (how a private CA, or a test's own, is trusted).

use std::sync::OnceLock;

/// Why the client could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot build the HTTPS client: {0}")]
pub struct TlsError(String);

/// The shared HTTPS client.
pub fn client() -> Result<reqwest::Client, TlsError> {
    static CLIENT: OnceLock<Result<reqwest::Client, TlsError>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let mut b = reqwest::Client::builder().use_rustls_tls().https_only(true);
            if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
                let pem = std::fs::read(&path)
                    .map_err(|e| TlsError(format!("SSL_CERT_FILE {}: {e}", std::path::Path::new(&path).display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| TlsError(format!("SSL_CERT_FILE {}: {e}", std::path::Path::new(&path).display())))?;
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            b.build().map_err(|e| TlsError(e.to_string()))
        })
        .clone()
}
