//! Header hygiene on the wire: hop-by-hop headers never cross, forwarding
//! headers are added.

use http::Request;

use crate::support::Kind;
use crate::support::{body_bytes, config, empty, h1_client, Proxy, Upstream};

async fn strips_every_hop_by_hop_request_header(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let request = Request::get(proxy.url("/"))
        .header("connection", "x-named-one, X-Named-Two")
        .header("x-named-one", "1")
        .header("x-named-two", "2")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("upgrade", "h2c")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "kept")
        .body(empty())
        .expect("request");
    let response = h1_client().request(request).await.expect("send");
    assert_eq!(response.status(), 200);
    let seen = upstream.last().headers;
    for name in [
        "x-named-one",
        "x-named-two",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(seen.get(name).is_none(), "{name} reached the upstream: {seen:?}");
    }
    // hyper's client adds its own `connection` only when it needs one; the client's never crosses.
    assert!(seen
        .get_all("connection")
        .iter()
        .all(|v| !v.to_str().unwrap_or("").contains("x-named")));
    assert_eq!(seen["x-end-to-end"], "kept");
}

async fn strips_hop_by_hop_response_headers_and_adds_via(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let response = h1_client()
        .get(proxy.url("/hop-response").parse().expect("uri"))
        .await
        .expect("send");
    let headers = response.headers().clone();
    assert_eq!(body_bytes(response.into_body()).await, "hop");
    for name in ["x-private", "keep-alive", "proxy-authenticate"] {
        assert!(headers.get(name).is_none(), "{name} reached the client: {headers:?}");
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["via"], proxy.via("1.1"));
}

async fn sets_forwarding_headers(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let request = Request::get(proxy.url("/"))
        .header("host", "shop.test:8443")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("via", "1.0 edge")
        .body(empty())
        .expect("request");
    h1_client().request(request).await.expect("send");
    let seen = upstream.last().headers;
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http", "the proxy states the scheme it saw");
    assert_eq!(seen["x-forwarded-host"], "shop.test:8443");
    assert_eq!(
        seen["host"], "shop.test:8443",
        "Host is preserved, not replaced by the backend's address"
    );
    let via: Vec<_> = seen.get_all("via").iter().collect();
    assert_eq!(via, ["1.0 edge", proxy.via("1.1").as_str()]);
}

async fn starts_x_forwarded_for_when_absent(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    h1_client()
        .get(proxy.url("/").parse().expect("uri"))
        .await
        .expect("send");
    assert_eq!(upstream.last().headers["x-forwarded-for"], "127.0.0.1");
}

async fn an_absolute_form_target_wins_over_host(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let response = crate::support::raw_exchange(
        proxy.addr,
        b"GET http://target.test/p?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let seen = upstream.last();
    assert_eq!(seen.target, "/p?q=1", "the backend gets origin-form");
    assert_eq!(seen.headers["host"], "target.test");
    assert_eq!(seen.headers["x-forwarded-host"], "target.test");
}

conformance!(
    strips_every_hop_by_hop_request_header,
    strips_hop_by_hop_response_headers_and_adds_via,
    sets_forwarding_headers,
    starts_x_forwarded_for_when_absent,
    an_absolute_form_target_wins_over_host,
);
