//! Each failure gets its status, a short body, and leaves other clients alone.

use std::time::Duration;

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::Kind;
use crate::support::{body_bytes, config, h1_client, raw_exchange, status_of, Proxy, Upstream};

async fn no_matching_route_is_404(kind: Kind) {
    let upstream = Upstream::start().await;
    let toml = format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[[routes]]
name = "known"
host = "known.test"
upstream = "app"

[upstreams.app]
backends = ["{}"]
"#,
        upstream.addr
    );
    let proxy = Proxy::start(kind, &toml);
    let response = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404 Not Found\r\n"), "{response}");
    assert!(response.ends_with("no route\n"), "{response}");
    let ok = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: KNOWN.test:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert_eq!(
        upstream.seen().len(),
        1,
        "the unrouted request never reached the upstream"
    );
}

async fn refused_backend_is_502_and_logged_with_its_cause(kind: Kind) {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let proxy = Proxy::start(kind, &config(&[closed], ""));
    let response = h1_client()
        .get(proxy.url("/").parse().expect("uri"))
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(body_bytes(response.into_body()).await, "bad gateway: upstream failed\n");
    let line = proxy
        .wait_for_log(|l| l["message"] == "request failed")
        .expect("a log line for the failure");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["status"], 502);
    let cause = line["cause"].as_str().unwrap_or("").to_ascii_lowercase();
    assert!(cause.contains(&closed.to_string()), "{line}");
    assert_eq!(cause.matches("refused").count(), 1, "the cause, said once: {line}");
}

async fn backend_closing_before_a_response_is_502(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let response = h1_client()
        .get(proxy.url("/reset").parse().expect("uri"))
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

async fn slow_backend_headers_are_504(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &config(&[upstream.addr], "[timeouts]\nupstream_response_header = \"200ms\"\n"),
    );
    let response = h1_client()
        .get(proxy.url("/delay/3000").parse().expect("uri"))
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body_bytes(response.into_body()).await,
        "gateway timeout: upstream too slow\n"
    );
    // Within the limit the same backend answers normally.
    let response = h1_client()
        .get(proxy.url("/delay/10").parse().expect("uri"))
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn over_the_connection_limit_is_503_with_retry_after(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &config(&[upstream.addr], "[limits]\nmax_connections_per_listener = 1\n"),
    );
    // The one allowed connection, held open.
    let held = TcpStream::connect(proxy.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{response}"
    );
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{response}"
    );
    drop(held);
    // Once the held connection closes, there is room again.
    let mut ok = String::new();
    for _ in 0..50 {
        ok = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        if ok.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
}

async fn malformed_requests_get_4xx_and_other_clients_are_unaffected(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    // A healthy keep-alive client, before and after the bad ones.
    let client = h1_client();
    let before = client.get(proxy.url("/").parse().expect("uri")).await.expect("send");
    assert_eq!(before.status(), StatusCode::OK);

    let garbage = raw_exchange(proxy.addr, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert_eq!(status_of(&garbage), Some(400), "{garbage:?}");

    let no_host = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_of(&no_host), Some(400), "{no_host:?}");
    assert!(
        no_host.to_ascii_lowercase().contains("connection: close"),
        "{no_host:?}"
    );

    let two_hosts = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert_eq!(status_of(&two_hosts), Some(400), "{two_hosts:?}");

    let huge = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(40 * 1024));
    let too_large = raw_exchange(proxy.addr, huge.as_bytes()).await;
    assert!(
        too_large.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{too_large:?}"
    );

    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let too_many = raw_exchange(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(too_many.starts_with("HTTP/1.1 431"), "{too_many:?}");

    let after = client.get(proxy.url("/").parse().expect("uri")).await.expect("send");
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(
        upstream.accepts(),
        1,
        "the healthy client kept its one pooled upstream connection"
    );
    assert_eq!(upstream.seen().len(), 2, "no malformed request reached the upstream");
}

async fn a_client_that_never_finishes_its_headers_is_cut_off(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &config(&[upstream.addr], "[timeouts]\nrequest_header = \"300ms\"\n"),
    );
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    // A slowloris client: the head never ends, but a byte arrives every
    // 50 ms, for up to 10 s, so a timer reset by reads would never fire.
    let trickle = tokio::spawn(async move {
        if writer
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut rest = Vec::new();
    // The proxy, not this 10 s guard, must end the exchange.
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut rest),
    )
    .await;
    trickle.abort();
    assert!(read.is_ok(), "the connection was still open after 10 s");
    assert!(upstream.seen().is_empty());
}

async fn idle_client_connections_are_closed_after_the_idle_timeout(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], "[timeouts]\nidle = \"300ms\"\n"));
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut received = Vec::new();
    // The proxy, not this 10 s guard, must close the connection; the default
    // 10 s header timeout cannot be what closes it first.
    let read = tokio::time::timeout(
        Duration::from_secs(9),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut received),
    )
    .await;
    assert!(read.is_ok(), "the idle connection was still open after 9 s");
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200 OK"));
}

async fn a_slow_upload_does_not_count_against_the_backends_response_timeout(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &config(&[upstream.addr], "[timeouts]\nupstream_response_header = \"300ms\"\n"),
    );
    // Eight chunks 150 ms apart: the upload alone takes four times the timeout.
    let chunks = futures_util::stream::unfold(0u8, |i| async move {
        if i == 8 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(b"0123456789"))),
            i + 1,
        ))
    });
    let body: crate::support::Body = http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
        http_body_util::StreamBody::new(chunks),
        |never| match never {},
    ));
    let request = http::Request::post(proxy.url("/sink")).body(body).expect("request");
    let response = h1_client().request(request).await.expect("send");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the backend answered at once once the body was in"
    );
    let answer = body_bytes(response.into_body()).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("80 "), "{answer:?}");
}

conformance!(
    no_matching_route_is_404,
    refused_backend_is_502_and_logged_with_its_cause,
    backend_closing_before_a_response_is_502,
    slow_backend_headers_are_504,
    over_the_connection_limit_is_503_with_retry_after,
    malformed_requests_get_4xx_and_other_clients_are_unaffected,
    a_client_that_never_finishes_its_headers_is_cut_off,
    idle_client_connections_are_closed_after_the_idle_timeout,
    a_slow_upload_does_not_count_against_the_backends_response_timeout,
);
