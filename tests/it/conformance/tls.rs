//! TLS, on both sides of the proxy: SNI picks the certificate and ALPN the
//! protocol; a failed handshake is counted and harms no one else; a backend's
//! certificate is verified, and a wrong or expired one refused.

use http::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::support::tls::{
    h1_get_over_tls, presented, proxy_to_tls_backend, tls_backend, tls_proxy, verifying_client, Certificates,
};
use crate::support::{body_bytes, empty, get_text, metric, Kind, Upstream};

conformance!(
    sni_picks_each_names_certificate_and_the_default_for_others,
    alpn_negotiates_h2_and_http11_and_requests_are_forwarded_as_https,
    a_failed_handshake_is_counted_and_others_are_served,
    upstream_tls_is_verified_and_a_wrong_or_expired_certificate_is_refused,
);

async fn sni_picks_each_names_certificate_and_the_default_for_others(kind: Kind) {
    let certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let upstream = Upstream::start().await;
    let proxy = tls_proxy(kind, &certs, upstream.addr);
    assert_eq!(&presented(&proxy, "a.test").await, certs.leaf("a.test"));
    // Names match case-insensitively (the config says "B.test").
    assert_eq!(&presented(&proxy, "b.test").await, certs.leaf("b.test"));
    assert_eq!(&presented(&proxy, "unknown.test").await, certs.leaf("default.test"));
    // An IP address sends no SNI at all.
    assert_eq!(&presented(&proxy, "127.0.0.1").await, certs.leaf("default.test"));
}

async fn alpn_negotiates_h2_and_http11_and_requests_are_forwarded_as_https(kind: Kind) {
    let certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let upstream = Upstream::start().await;
    let proxy = tls_proxy(kind, &certs, upstream.addr);
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
    assert_eq!(seen.headers["via"], proxy.via("2"), "the client's hop was HTTP/2");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // Only http/1.1 offered: HTTP/1.1.
    assert_eq!(h1_get_over_tls(&proxy, &certs, "a.test", "/h1").await, StatusCode::OK);
    assert_eq!(upstream.last().headers["via"], proxy.via("1.1"));
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");
}

async fn a_failed_handshake_is_counted_and_others_are_served(kind: Kind) {
    let certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let upstream = Upstream::start().await;
    let proxy = tls_proxy(kind, &certs, upstream.addr);
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

async fn upstream_tls_is_verified_and_a_wrong_or_expired_certificate_is_refused(kind: Kind) {
    let mut certs = Certificates::new(&["a.test", "b.test"]);
    certs.add_leaf("a.test", "a.test-expired", true);
    let ca = certs.path("ca.pem");
    // Each proxy words the reasons its own way (rustls, crypto/x509).
    let (wrong_name, expired) = match kind {
        Kind::Tailcut => ("not valid for name", "certificate expired"),
        Kind::Go => (
            "tls: failed to verify certificate: x509: certificate is valid for b.test, not a.test",
            "x509: certificate has expired",
        ),
    };

    // Trusted CA, matching name: forwarded over TLS.
    let good = proxy_to_tls_backend(kind, tls_backend(&certs, "a.test").await, &ca, "a.test");
    assert_eq!(get_text(good.addr, "/", None).await, (200, "secure".to_owned()));

    // The certificate names b.test, the proxy expects a.test: 502, and why.
    let wrong = proxy_to_tls_backend(kind, tls_backend(&certs, "b.test").await, &ca, "a.test");
    assert_eq!(get_text(wrong.addr, "/", None).await.0, 502);
    let line = wrong
        .wait_for_log(|l| l["message"] == "request failed")
        .expect("logged failure");
    let cause = line["cause"].as_str().unwrap_or_default();
    assert!(cause.contains(wrong_name), "{line}");

    // Expired, from the same CA: 502.
    let stale = proxy_to_tls_backend(kind, tls_backend(&certs, "a.test-expired").await, &ca, "a.test");
    assert_eq!(get_text(stale.addr, "/", None).await.0, 502);
    let line = stale
        .wait_for_log(|l| l["message"] == "request failed")
        .expect("logged failure");
    assert!(line["cause"].as_str().unwrap_or_default().contains(expired), "{line}");
}
