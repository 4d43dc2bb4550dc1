//! Upstream connections are pooled and reused; backends share the load.

use http::StatusCode;

use crate::support::Kind;
use crate::support::{config, h1_client, Proxy, Upstream};

async fn reuses_upstream_connections_across_requests(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
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

async fn spreads_requests_round_robin_across_backends(kind: Kind) {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let round_robin = config(&[a.addr, b.addr], "").replace("backends = [", "balance = \"round_robin\"\nbackends = [");
    let proxy = Proxy::start(kind, &round_robin);
    let client = h1_client();
    for _ in 0..10 {
        let response = client.get(proxy.url("/").parse().expect("uri")).await.expect("send");
        crate::support::body_bytes(response.into_body()).await;
    }
    assert_eq!((a.seen().len(), b.seen().len()), (5, 5));
}

async fn does_not_reuse_a_connection_the_backend_closes(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let client = h1_client();
    for _ in 0..3 {
        let response = client
            .get(proxy.url("/close").parse().expect("uri"))
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(crate::support::body_bytes(response.into_body()).await, "hello");
    }
    assert_eq!(
        upstream.accepts(),
        3,
        "each `Connection: close` response needs a new upstream connection"
    );
}

async fn a_client_that_disconnects_mid_body_does_not_poison_the_pool(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    crate::support::hang_up_mid_body(&proxy).await;
    let response = h1_client()
        .get(proxy.url("/").parse().expect("uri"))
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(crate::support::body_bytes(response.into_body()).await, "hello");
    assert_eq!(upstream.accepts(), 2, "the half-read connection is closed, not reused");
}

conformance!(
    reuses_upstream_connections_across_requests,
    spreads_requests_round_robin_across_backends,
    does_not_reuse_a_connection_the_backend_closes,
    a_client_that_disconnects_mid_body_does_not_poison_the_pool,
);
