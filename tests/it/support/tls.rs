//! TLS for tests: a test CA made at test time (rcgen) and the certificates
//! it signs, clients that verify against it (or accept anything, to see
//! which certificate was presented), an HTTPS backend, and proxies with a
//! TLS listener or a TLS upstream.

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{empty, Kind, Proxy};

/// A test CA and the PEM files of the certificates it signed, in a folder
/// (the CA's own as `ca.pem`).
pub struct Certificates {
    pub dir: tempfile::TempDir,
    pub ca: CertificateDer<'static>,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    /// DER of each leaf, by name.
    leaves: Vec<(String, CertificateDer<'static>)>,
}

impl Certificates {
    /// A CA, and a leaf for each of `names` written as `NAME.pem` / `NAME.key`.
    pub fn new(names: &[&str]) -> Certificates {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tailcut test CA");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&ca_key).expect("CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        let mut certs = Certificates {
            dir,
            ca: ca.der().clone(),
            ca_cert: ca,
            ca_key,
            leaves: Vec::new(),
        };
        for name in names {
            certs.add_leaf(name, name, false);
        }
        certs
    }

    /// Signs a certificate for `name`, written as `FILE.pem` / `FILE.key`;
    /// `expired` makes it valid only in 2020.
    pub fn add_leaf(&mut self, name: &str, file: &str, expired: bool) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let leaf = params.signed_by(&key, &self.ca_cert, &self.ca_key).expect("leaf");
        std::fs::write(self.dir.path().join(format!("{file}.pem")), leaf.pem()).expect("write chain");
        std::fs::write(self.dir.path().join(format!("{file}.key")), key.serialize_pem()).expect("write key");
        self.leaves.push((file.to_owned(), leaf.der().clone()));
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// The newest leaf written as `name`.
    pub fn leaf(&self, name: &str) -> &CertificateDer<'static> {
        &self.leaves.iter().rev().find(|(n, _)| n == name).expect("leaf").1
    }
}

/// A proxy with a TLS listener: `default.test` first (the default), then
/// `a.test` and `b.test` for their names.
pub fn tls_proxy(kind: Kind, certs: &Certificates, upstream: std::net::SocketAddr) -> Proxy {
    let certificate = |name: &str, names: &str| {
        format!(
            "[[listeners.tls.certificates]]\nchain = \"{}\"\nkey = \"{}\"\nnames = [{names}]\n",
            certs.path(&format!("{name}.pem")),
            certs.path(&format!("{name}.key"))
        )
    };
    let config = format!(
        "[[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\n{}{}{}\n\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [\"{}\"]\n\n[admin]\naddress = \"127.0.0.1:0\"\n",
        certificate("default.test", ""),
        certificate("a.test", "\"a.test\""),
        certificate("b.test", "\"B.test\""),
        upstream
    );
    Proxy::start(kind, &config)
}

/// Accepts any server certificate: lets a test see which one an unknown
/// name gets. Signatures are still checked by the provider.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that verifies against the test CA and offers `alpn`.
pub fn verifying_client(certs: &Certificates, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(certs.ca.clone()).expect("CA as root");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// The certificate the proxy presents for `sni`, whatever it is.
pub async fn presented(proxy: &Proxy, sni: &str) -> CertificateDer<'static> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certificates")[0].clone()
}

/// GET `path` with Host `name` over a verified TLS connection offering only
/// http/1.1, which ALPN must choose.
pub async fn h1_get_over_tls(proxy: &Proxy, certs: &Certificates, name: &str, path: &str) -> StatusCode {
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let tls = verifying_client(certs, &[b"http/1.1"])
        .connect(ServerName::try_from(name.to_owned()).expect("name"), tcp)
        .await
        .expect("verified handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(connection);
    let request = Request::get(path).header("host", name).body(empty()).expect("request");
    sender.send_request(request).await.expect("h1 request").status()
}

/// A backend that speaks HTTPS with `name`'s certificate from `certs` and
/// answers `secure` to everything.
pub async fn tls_backend(certs: &Certificates, name: &str) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.path(&format!("{name}.pem")))
        .expect("chain")
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(certs.path(&format!("{name}.key"))).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"secure"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// A plain-HTTP proxy whose one upstream is `backend` over TLS, verified
/// against `ca` with the name `server_name`.
pub fn proxy_to_tls_backend(kind: Kind, backend: std::net::SocketAddr, ca: &str, server_name: &str) -> Proxy {
    let config = super::config(&[backend], "")
        .replace(
            "[upstreams.app]",
            "[upstreams.app]\ntls = { ca = \"CA\", server_name = \"NAME\" }",
        )
        .replace("CA", ca)
        .replace("NAME", server_name);
    Proxy::start(kind, &config)
}
