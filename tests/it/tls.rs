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

use crate::support::{body_bytes, empty, get_text, metric, Kind, Proxy, Upstream};

/// A test CA and the PEM files of the certificates it signed, in a folder.
struct Certificates {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
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
        let mut leaves = Vec::new();
        for name in names {
            let key = rcgen::KeyPair::generate().expect("key");
            let leaf = rcgen::CertificateParams::new(vec![(*name).to_owned()])
                .expect("params")
                .signed_by(&key, &ca, &ca_key)
                .expect("leaf");
            std::fs::write(dir.path().join(format!("{name}.pem")), leaf.pem()).expect("write chain");
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).expect("write key");
            leaves.push(((*name).to_owned(), leaf.der().clone()));
        }
        Certificates {
            dir,
            ca: ca.der().clone(),
            leaves,
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    fn leaf(&self, name: &str) -> &CertificateDer<'static> {
        &self.leaves.iter().find(|(n, _)| n == name).expect("leaf").1
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
