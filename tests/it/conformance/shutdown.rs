//! SIGTERM drains: in-flight requests finish, idle connections close, exit 0.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Kind;
use crate::support::{body_bytes, config, h1_client, Proxy, Upstream};

async fn sigterm_lets_in_flight_requests_finish_then_exits_zero(kind: Kind) {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(kind, &config(&[upstream.addr], "[server]\ndrain_timeout = \"20s\"\n"));

    // An idle keep-alive connection: one request done, then silence.
    let mut idle = TcpStream::connect(proxy.addr).await.expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let mut first = Vec::new();
    while !first.ends_with(b"hello") {
        let n = idle.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&buf[..n]);
    }
    assert!(first.starts_with(b"HTTP/1.1 200"));

    let client = h1_client();
    let in_flight: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let uri = proxy.url("/delay/1000").parse().expect("uri");
            tokio::spawn(async move {
                let response = client.get(uri).await.expect("in-flight request survives the drain");
                (response.status(), body_bytes(response.into_body()).await)
            })
        })
        .collect();
    while upstream.seen().iter().filter(|s| s.target == "/delay/1000").count() < 8 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    proxy.terminate();

    // The idle connection is closed promptly, without waiting for the drain.
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "idle keep-alive connection should be closed: {closed:?}"
    );

    for request in in_flight {
        let (status, body) = request.await.expect("task");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "slow");
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.wait_exit(Duration::from_secs(10));
        (status, proxy.addr)
    })
    .await
    .expect("join");
    let (status, addr) = status;
    assert!(status.expect("the proxy exited").success(), "exit status {status:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting after exit"
    );
}

conformance!(sigterm_lets_in_flight_requests_finish_then_exits_zero,);
