//! TLS behaviour of tailcut's own: every certificate-file error gives its
//! exact message and exit code, and a reload serves rotated certificates.
//! (What both proxies must do with TLS is in `conformance/tls.rs`.)

use std::path::Path;

use http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::support::tls::{presented, tls_proxy, verifying_client, Certificates};
use crate::support::{empty, Kind, Upstream, RELOADED, RELOAD_FAILED};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_rotated_certificates_to_new_connections() {
    let mut certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let upstream = Upstream::start().await;
    let proxy = tls_proxy(Kind::Tailcut, &certs, upstream.addr);
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
