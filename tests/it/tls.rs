//! TLS termination, with certificates made at test time (rcgen): a test CA
//! signs a certificate for `a.test`, one for `b.test`, and a default one.
//! SNI picks the certificate, ALPN the protocol; a failed handshake is
//! counted and harms no one else; bad certificate files are config errors
//! naming the file.

use std::path::Path;
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::{body_bytes, empty, get_text, metric, Kind, Proxy, Upstream, RELOADED, RELOAD_FAILED};

/// A test CA and the PEM files of the certificates it signed, in a folder
/// (the CA's own as `ca.pem`).
struct Certificates {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    /// DER of each leaf, by name.
    leaves: Vec<(String, CertificateDer<'static>)>,
}

impl Certificates {
    /// A CA, and a leaf for each of `names` written as `NAME.pem` / `NAME.key`.
    fn new(names: &[&str]) -> Certificates {
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
    fn add_leaf(&mut self, name: &str, file: &str, expired: bool) {
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

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// The newest leaf written as `name`.
    fn leaf(&self, name: &str) -> &CertificateDer<'static> {
        &self.leaves.iter().rev().find(|(n, _)| n == name).expect("leaf").1
    }
}

/// A proxy with a TLS listener: `default.test` first (the default), then
/// `a.test` and `b.test` for their names.
fn tls_proxy(certs: &Certificates, upstream: &Upstream) -> Proxy {
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
        upstream.addr
    );
    Proxy::start(Kind::Tailcut, &config)
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that verifies against the test CA and offers `alpn`.
fn verifying_client(certs: &Certificates, alpn: &[&[u8]]) -> TlsConnector {
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
async fn presented(proxy: &Proxy, sni: &str) -> CertificateDer<'static> {
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
async fn h1_get_over_tls(proxy: &Proxy, certs: &Certificates, name: &str, path: &str) -> StatusCode {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_each_names_certificate_and_the_default_for_others() {
    let certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let upstream = Upstream::start().await;
    let proxy = tls_proxy(&certs, &upstream);
    assert_eq!(&presented(&proxy, "a.test").await, certs.leaf("a.test"));
    // Names match case-insensitively (the config says "B.test").
    assert_eq!(&presented(&proxy, "b.test").await, certs.leaf("b.test"));
    assert_eq!(&presented(&proxy, "unknown.test").await, certs.leaf("default.test"));
    // An IP address sends no SNI at all.
    assert_eq!(&presented(&proxy, "127.0.0.1").await, certs.leaf("default.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_rotated_certificates_to_new_connections() {
    let mut certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let upstream = Upstream::start().await;
    let proxy = tls_proxy(&certs, &upstream);
    let old = certs.leaf("a.test").clone();
    assert_eq!(presented(&proxy, "a.test").await, old);
    // A connection made before the rotation.
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let tls = verifying_client(&certs, &[b"http/1.1"])
        .connect(ServerName::try_from("a.test").expect("name"), tcp)
        .await
        .expect("handshake");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(connection);

    // New files at the same paths, config unchanged: a reload reads them.
    certs.add_leaf("a.test", "a.test", false);
    let outcome = tokio::task::block_in_place(|| proxy.reload());
    assert_eq!(outcome["message"], RELOADED, "{outcome}");
    assert_ne!(certs.leaf("a.test"), &old);
    assert_eq!(&presented(&proxy, "a.test").await, certs.leaf("a.test"));
    assert_eq!(&presented(&proxy, "b.test").await, certs.leaf("b.test"));
    // The connection made before goes on, on its session.
    let request = Request::get("/")
        .header("host", "a.test")
        .body(empty())
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .expect("request on the old connection");
    assert_eq!(response.status(), StatusCode::OK);

    // A key that no longer matches its certificate: the reload fails, naming
    // the file, and the rotated certificate stays in service.
    std::fs::copy(certs.path("b.test.key"), certs.path("a.test.key")).expect("copy key");
    let outcome = tokio::task::block_in_place(|| proxy.reload());
    assert_eq!(outcome["message"], RELOAD_FAILED, "{outcome}");
    let cause = outcome["cause"].as_str().unwrap_or_default();
    assert!(cause.contains(&certs.path("a.test.key")), "{cause}");
    assert_eq!(&presented(&proxy, "a.test").await, certs.leaf("a.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_h2_and_http11_and_requests_are_forwarded_as_https() {
    let certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let upstream = Upstream::start().await;
    let proxy = tls_proxy(&certs, &upstream);
    let name = ServerName::try_from("a.test").expect("name");

    // h2 first in the client's list: HTTP/2.
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let tls = verifying_client(&certs, &[b"h2", b"http/1.1"])
        .connect(name.clone(), tcp)
        .await
        .expect("verified handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let request = Request::get("https://a.test/h2").body(empty()).expect("request");
    let response = sender.send_request(request).await.expect("h2 request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(&body_bytes(response.into_body()).await[..], b"hello");
    let seen = upstream.last();
    assert_eq!(seen.target, "/h2");
    assert_eq!(seen.headers["via"], "2 tailcut", "the client's hop was HTTP/2");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // Only http/1.1 offered: HTTP/1.1.
    assert_eq!(h1_get_over_tls(&proxy, &certs, "a.test", "/h1").await, StatusCode::OK);
    assert_eq!(upstream.last().headers["via"], "1.1 tailcut");
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handshake_is_counted_and_others_are_served() {
    let certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let upstream = Upstream::start().await;
    let proxy = tls_proxy(&certs, &upstream);
    let admin = proxy.admin.expect("admin address");

    // Cleartext HTTP to the TLS port, then a client that does not trust the
    // proxy's CA (it aborts the handshake).
    let answer = crate::support::raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let stranger = Certificates::new(&["other.test"]);
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let refused = verifying_client(&stranger, &[b"http/1.1"])
        .connect(ServerName::try_from("a.test").expect("name"), tcp)
        .await;
    assert!(refused.is_err(), "a client without the CA accepted the certificate");

    let mut failures = 0.0;
    for _ in 0..100 {
        let (_, exposition) = get_text(admin, "/metrics", None).await;
        failures = metric(
            &exposition,
            "tailcut_tls_handshake_failures_total",
            &[("listener", "tls")],
        )
        .unwrap_or(0.0);
        if failures >= 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(failures, 2.0, "handshake failures counted");

    // The listener still serves a good client.
    assert_eq!(h1_get_over_tls(&proxy, &certs, "b.test", "/").await, StatusCode::OK);
}

/// `tailcut check` on a config whose certificate files are bad.
fn check(config: &str, dir: &Path) -> (i32, String) {
    let path = dir.join("tailcut.toml");
    std::fs::write(&path, config).expect("write config");
    let output = std::process::Command::new(Kind::Tailcut.binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run tailcut check");
    let stderr = String::from_utf8_lossy(&output.stderr)
        .replace(&dir.display().to_string(), "DIR")
        .trim()
        .to_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn unusable_certificate_files_are_config_errors_naming_the_file() {
    let certs = Certificates::new(&["a.test", "b.test"]);
    let dir = certs.dir.path();
    std::fs::write(dir.join("garbage.pem"), "not a certificate\n").expect("write");
    // Relative paths are read from the config file's folder.
    let config = |chain: &str, key: &str| {
        format!(
            "[[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\n\
             [[listeners.tls.certificates]]\nchain = \"{chain}\"\nkey = \"{key}\"\n\n\
             [[routes]]\nname = \"all\"\nupstream = \"app\"\n\n[upstreams.app]\nbackends = [\"127.0.0.1:9000\"]\n"
        )
    };
    let (code, stderr) = check(&config("a.test.pem", "a.test.key"), dir);
    assert_eq!(code, 0, "{stderr}");

    for (chain, key, expected) in [
        (
            "missing.pem",
            "a.test.key",
            "tailcut: DIR/tailcut.toml:5:9: listeners[0].tls.certificates[0].chain: DIR/missing.pem: cannot read: No such file or directory (os error 2)",
        ),
        (
            "garbage.pem",
            "a.test.key",
            "tailcut: DIR/tailcut.toml:5:9: listeners[0].tls.certificates[0].chain: DIR/garbage.pem: holds no PEM certificate",
        ),
        (
            "a.test.pem",
            "garbage.pem",
            "tailcut: DIR/tailcut.toml:6:7: listeners[0].tls.certificates[0].key: DIR/garbage.pem: holds no PEM private key: no items found",
        ),
        (
            "a.test.pem",
            "b.test.key",
            "tailcut: DIR/tailcut.toml:6:7: listeners[0].tls.certificates[0].key: DIR/b.test.key: does not match the certificate in DIR/a.test.pem",
        ),
    ] {
        let (code, stderr) = check(&config(chain, key), dir);
        assert_eq!((code, stderr.as_str()), (64, expected), "chain {chain}, key {key}");
    }
}

/// A backend that speaks HTTPS with `name`'s certificate from `certs` and
/// answers `secure` to everything.
async fn tls_backend(certs: &Certificates, name: &str) -> std::net::SocketAddr {
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
fn proxy_to_tls_backend(backend: std::net::SocketAddr, ca: &str, server_name: &str) -> Proxy {
    let config = crate::support::config(&[backend], "")
        .replace(
            "[upstreams.app]",
            "[upstreams.app]\ntls = { ca = \"CA\", server_name = \"NAME\" }",
        )
        .replace("CA", ca)
        .replace("NAME", server_name);
    Proxy::start(Kind::Tailcut, &config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_is_verified_and_a_wrong_or_expired_certificate_is_refused() {
    let mut certs = Certificates::new(&["a.test", "b.test"]);
    certs.add_leaf("a.test", "a.test-expired", true);
    let ca = certs.path("ca.pem");

    // Trusted CA, matching name: forwarded over TLS.
    let good = proxy_to_tls_backend(tls_backend(&certs, "a.test").await, &ca, "a.test");
    assert_eq!(get_text(good.addr, "/", None).await, (200, "secure".to_owned()));

    // The certificate names b.test, the proxy expects a.test: 502, and why.
    let wrong = proxy_to_tls_backend(tls_backend(&certs, "b.test").await, &ca, "a.test");
    assert_eq!(get_text(wrong.addr, "/", None).await.0, 502);
    let line = wrong
        .wait_for_log(|l| l["message"] == "request failed")
        .expect("logged failure");
    let cause = line["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("TLS handshake") && cause.contains("not valid for name"),
        "{line}"
    );

    // Expired, from the same CA: 502.
    let stale = proxy_to_tls_backend(tls_backend(&certs, "a.test-expired").await, &ca, "a.test");
    assert_eq!(get_text(stale.addr, "/", None).await.0, 502);
    let line = stale
        .wait_for_log(|l| l["message"] == "request failed")
        .expect("logged failure");
    assert!(
        line["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("certificate expired"),
        "{line}"
    );
}
