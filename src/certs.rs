//! Certificate files: reading a PEM chain and its private key into a
//! rustls `CertifiedKey`, with the host names the certificate is valid for.
//!
//! Every failure is an error naming the file (unreadable, no certificate,
//! no key, unsupported key, key not matching the certificate), never a
//! panic. Knows nothing of the configuration: `config` checks files with
//! it, `tls` serves them.

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// A certificate chain with its key, ready for handshakes.
#[derive(Clone)]
pub struct LoadedCert {
    /// The chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// DNS names of the end-entity certificate, lowercase: its
    /// subjectAltName DNS entries, or its CN when it has none (RFC 6125
    /// §6.4.4). Wildcards are kept as written (`*.example.com`).
    pub names: Vec<String>,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("names", &self.names)
            .finish()
    }
}

/// Why a certificate pair could not be loaded; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    message: String,
    /// The key file is at fault (unreadable, not a key, or not the
    /// certificate's), not the certificate file.
    pub key: bool,
}

impl CertError {
    fn cert(message: String) -> CertError {
        CertError {
            message,
            key: false,
        }
    }

    fn key(message: String) -> CertError {
        CertError { message, key: true }
    }
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CertError {}

/// Reads the PEM chain at `cert` and the PEM key at `key` and checks that
/// they belong together.
pub fn load(cert: &str, key: &str) -> Result<LoadedCert, CertError> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| CertError::cert(format!("cannot read {cert}: {e}")))?;
    let key_pem =
        std::fs::read(key).map_err(|e| CertError::key(format!("cannot read {key}: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::cert(format!("{cert}: malformed PEM: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::cert(format!("{cert}: no PEM certificate found")));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| CertError::key(format!("{key}: no usable PEM private key: {e}")))?;
    let names = names(&chain[0]).map_err(|e| CertError::cert(format!("{cert}: {e}")))?;
    let certified = CertifiedKey::from_der(chain, private, &default_provider()).map_err(|e| {
        CertError::key(format!(
            "{key} does not fit {cert} (or is of an unsupported type): {e}"
        ))
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
    })
}

/// Reads a PEM bundle of CA certificates (DER of each, checked to parse as
/// X.509).
pub fn load_ca(path: &str) -> Result<Vec<Vec<u8>>, CertError> {
    let pem =
        std::fs::read(path).map_err(|e| CertError::cert(format!("cannot read {path}: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::cert(format!("{path}: malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CertError::cert(format!("{path}: no PEM certificate found")));
    }
    certs
        .into_iter()
        .map(|c| {
            x509_parser::parse_x509_certificate(c.as_ref())
                .map_err(|e| CertError::cert(format!("{path}: not an X.509 certificate: {e}")))?;
            Ok(c.to_vec())
        })
        .collect()
}

/// The DNS names `der` is valid for (see [`LoadedCert::names`]).
fn names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !x509.validity().is_valid() {
        log::warn!(
            "certificate for {} is outside its validity period ({} to {})",
            x509.subject(),
            x509.validity().not_before,
            x509.validity().not_after
        );
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            x509.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| cn.trim_end_matches('.').to_ascii_lowercase()),
        );
    }
    Ok(names)
}
