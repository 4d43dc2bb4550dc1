//! A listener's `tls` section, loaded: PEM certificate chains and keys read
//! and checked against each other, and the rustls server configuration that
//! serves them (TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, the certificate
//! chosen by SNI, the first one for names no certificate claims).
//!
//! Also an upstream cluster's `tls` section: the roots its backends'
//! certificates are verified against (a CA bundle, or the system's), and the
//! name they must carry.
//!
//! Certificate and key paths are relative to the config file's folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;

/// A listener's TLS settings, loaded and ready to serve.
#[derive(Clone, Serialize)]
pub struct Tls {
    /// The certificates, in config order; the first is the default.
    pub certificates: Vec<CertificateFiles>,
    /// What the listener's handshakes use.
    #[serde(skip)]
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("certificates", &self.certificates).finish()
    }
}

/// Where one certificate came from, and the names it answers for.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateFiles {
    /// PEM file with the certificate chain, leaf first.
    pub chain: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// SNI names this certificate is chosen for (lower case).
    pub names: Vec<String>,
}

/// Why a certificate could not be loaded, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no PEM item of the right kind.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the key or the pair.
    #[error("{}: {problem}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        problem: String,
    },
}

/// The crypto provider every listener uses: *ring*.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads `chain` and `key` (relative to `base`) into a certificate rustls
/// can serve, checking that the key belongs to the leaf certificate.
pub fn load_certificate(base: &Path, chain: &str, key: &str) -> Result<(CertifiedKey, PathBuf, PathBuf), TlsError> {
    let chain_path = base.join(chain);
    let key_path = base.join(key);
    let file_error = |path: &Path, problem: String| TlsError::File {
        path: path.to_path_buf(),
        problem,
    };
    let chain_pem = std::fs::read(&chain_path).map_err(|err| file_error(&chain_path, format!("cannot read: {err}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|err| file_error(&chain_path, format!("not a PEM certificate chain: {err}")))?;
    if certs.is_empty() {
        return Err(file_error(&chain_path, "holds no PEM certificate".into()));
    }
    let key_pem = std::fs::read(&key_path).map_err(|err| file_error(&key_path, format!("cannot read: {err}")))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|err| file_error(&key_path, format!("holds no PEM private key: {err}")))?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| TlsError::Key {
            path: key_path.clone(),
            problem: format!("unusable private key: {err}"),
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|err| TlsError::Key {
        path: key_path.clone(),
        problem: match err {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                format!("does not match the certificate in {}", chain_path.display())
            }
            other => format!(
                "cannot be checked against the certificate in {}: {other}",
                chain_path.display()
            ),
        },
    })?;
    Ok((certified, chain_path, key_path))
}

/// The rustls server configuration for `certificates` (config order, the
/// first the default), each with the SNI names it answers for.
pub fn server_config(certificates: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut by_name = HashMap::new();
    for (certified, names) in &certificates {
        for name in names {
            by_name.entry(name.clone()).or_insert_with(|| certified.clone());
        }
    }
    let default = certificates
        .first()
        .map(|(c, _)| c.clone())
        .ok_or("at least one certificate is required")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| err.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { by_name, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Chooses the certificate by the client's SNI name, and the default for a
/// name no certificate claims or no name at all. rustls's own
/// `ResolvesServerCertUsingSni` has no default and aborts those handshakes,
/// which is not what an edge proxy with a catch-all certificate wants.
#[derive(Debug)]
struct BySni {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = client_hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()))
            .unwrap_or(&self.default);
        Some(chosen.clone())
    }
}

/// TLS to an upstream cluster's backends, verified.
#[derive(Clone, Serialize)]
pub struct UpstreamTls {
    /// PEM CA bundle the backends' certificates are checked against;
    /// `None`: the system's root store.
    pub ca: Option<PathBuf>,
    /// The name the backends' certificates must carry (and the SNI sent);
    /// `None`: each backend's IP address.
    pub server_name: Option<String>,
    /// The certificates read from `ca` (empty for the system's roots), so
    /// that a reload can tell whether the bundle changed.
    #[serde(skip)]
    pub ca_certificates: Vec<CertificateDer<'static>>,
    /// What the handshakes use.
    #[serde(skip)]
    pub client_config: Arc<rustls::ClientConfig>,
}

/// Equal when built from the same settings and the same CA certificates.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca && self.server_name == other.server_name && self.ca_certificates == other.ca_certificates
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The client configuration for an upstream: TLS 1.2 and 1.3, roots from
/// `ca` (relative to `base`) or the system store, ALPN `http/1.1` (the pool
/// speaks HTTP/1.1).
pub fn upstream(base: &Path, ca: Option<&str>, server_name: Option<String>) -> Result<UpstreamTls, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut ca_certificates = Vec::new();
    let ca_path = ca.map(|ca| base.join(ca));
    match &ca_path {
        Some(path) => {
            let file_error = |problem: String| TlsError::File {
                path: path.clone(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|err| file_error(format!("cannot read: {err}")))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|err| file_error(format!("not a PEM certificate bundle: {err}")))?;
            if certs.is_empty() {
                return Err(file_error("holds no PEM certificate".into()));
            }
            for cert in &certs {
                roots
                    .add(cert.clone())
                    .map_err(|err| file_error(format!("unusable CA certificate: {err}")))?;
            }
            ca_certificates = certs;
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store may hold a certificate rustls cannot use; skip it.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::File {
                    path: PathBuf::from("(system root store)"),
                    problem: "no usable root certificates; set `ca` to a CA bundle".into(),
                });
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| TlsError::File {
            path: ca_path.clone().unwrap_or_default(),
            problem: err.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(UpstreamTls {
        ca: ca_path,
        server_name,
        ca_certificates,
        client_config: Arc::new(config),
    })
}
