//! Upstream connections are pooled and reused; backends share the load.

use http::StatusCode;

use crate::support::{config, h1_client, Tailcut, Upstream};

#[tokio::test]
async fn reuses_upstream_connections_across_requests() {
    let upstream = Upstream::start().await;
    let proxy = Tailcut::start(&config(&[upstream.addr], ""));
    let client = h1_client();
    for _ in 0..20 {
        let response = client.get(proxy.url("/").parse().expect("uri")).await.expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        crate::support::body_bytes(response.into_body()).await;
    }
    assert_eq!(upstream.seen().len(), 20);
    assert_eq!(
        upstream.accepts(),
        1,
        "20 sequential requests should share one upstream connection"
    );
}

#[tokio::test]
async fn spreads_requests_round_robin_across_backends() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let proxy = Tailcut::start(&config(&[a.addr, b.addr], ""));
    let client = h1_client();
    for _ in 0..10 {
        let response = client.get(proxy.url("/").parse().expect("uri")).await.expect("send");
        crate::support::body_bytes(response.into_body()).await;
    }
    assert_eq!((a.seen().len(), b.seen().len()), (5, 5));
}
