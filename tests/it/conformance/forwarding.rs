//! Requests and bodies go through unchanged in every method and framing.

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Kind;
use crate::support::{body_bytes, config, empty, full, h1_client, h2_client, Body, Proxy, Upstream};

async fn forwards_get_head_post_and_put(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let client = h1_client();

    let response = client
        .get(proxy.url("/a/b?x=1&y=%20").parse().expect("uri"))
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await, "hello");
    let seen = upstream.last();
    assert_eq!((seen.method, seen.target.as_str()), (Method::GET, "/a/b?x=1&y=%20"));

    let head = Request::head(proxy.url("/h")).body(empty()).expect("request");
    let response = client.request(head).await.expect("HEAD");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_bytes(response.into_body()).await.is_empty());
    assert_eq!(upstream.last().method, Method::HEAD);

    for method in [Method::POST, Method::PUT] {
        let request = Request::builder()
            .method(method.clone())
            .uri(proxy.url("/echo"))
            .body(full(format!("body of {method}")))
            .expect("request");
        let response = client.request(request).await.expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_bytes(response.into_body()).await, format!("body of {method}"));
        let seen = upstream.last();
        assert_eq!(seen.method, method);
        assert_eq!(
            seen.headers["content-length"],
            format!("body of {method}").len().to_string()
        );
    }
}

async fn streams_chunked_request_bodies_as_chunked(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let chunks = ["one,", "two,", "three"].map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
    let body: Body = StreamBody::new(futures_util::stream::iter(chunks))
        .map_err(|never| match never {})
        .boxed();
    let request = Request::post(proxy.url("/echo")).body(body).expect("request");
    let response = h1_client().request(request).await.expect("send");
    assert_eq!(body_bytes(response.into_body()).await, "one,two,three");
    let seen = upstream.last();
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(seen.headers.get("content-length").is_none());
}

async fn relays_response_trailers_to_clients_that_accept_them(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let request = Request::get(proxy.url("/trailers"))
        .header("te", "trailers")
        .body(empty())
        .expect("request");
    let response = h1_client().request(request).await.expect("send");
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers relayed");
    assert_eq!(trailers["x-checksum"], "42");
    assert_eq!(collected.to_bytes(), "data");
    assert_eq!(upstream.last().headers["te"], "trailers");
}

async fn relays_request_trailers_to_the_upstream(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "7".parse().expect("value"));
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from("abc"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body: Body = StreamBody::new(futures_util::stream::iter(frames))
        .map_err(|never| match never {})
        .boxed();
    let request = Request::post(proxy.url("/request-trailers"))
        .header("trailer", "x-checksum")
        .body(body)
        .expect("request");
    let response = h1_client().request(request).await.expect("send");
    assert_eq!(response.headers()["x-got-trailer"], "7");
}

async fn answers_expect_100_continue_before_the_body_is_sent(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("write head");
    let mut buf = vec![0u8; 1024];
    // TCP may deliver the interim response in pieces: read a whole head.
    let mut exchange = Vec::new();
    while !exchange.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read interim response");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&exchange));
        exchange.extend_from_slice(&buf[..n]);
    }
    assert!(
        exchange.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&exchange)
    );
    // The echoing upstream may answer its head before reading the body, so
    // the final head can arrive with the 100; only the body must wait.
    stream.write_all(b"hello").await.expect("write body");
    while !exchange.ends_with(b"hello") {
        let n = stream.read(&mut buf).await.expect("read response");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&exchange));
        exchange.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&exchange);
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{text:?}"
    );
    assert!(upstream.last().headers.get("expect").is_none());
}

async fn serves_cleartext_http2_and_forwards_as_http11_with_host(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let response = h2_client()
        .get(proxy.url("/h2").parse().expect("uri"))
        .await
        .expect("h2c GET");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(body_bytes(response.into_body()).await, "hello");
    let seen = upstream.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["host"], proxy.addr.to_string());
    assert_eq!(seen.headers["via"], proxy.via("2"));
}

async fn streams_an_http2_upload_of_unknown_length_to_the_backend_chunked(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    // Three DATA frames and no content-length: the HTTP/1.1 hop must frame
    // the body itself.
    let frames =
        ["first ", "second ", "third"].map(|part| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(part))));
    let body = StreamBody::new(futures_util::stream::iter(frames))
        .map_err(|never| match never {})
        .boxed();
    let response = h2_client()
        .request(Request::post(proxy.url("/echo")).body(body).expect("request"))
        .await
        .expect("h2c POST");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await, "first second third");
    let seen = upstream.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(seen.headers.get("content-length").is_none());
}

async fn http10_request_without_host_reaches_the_backend_with_one(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let response = crate::support::raw_exchange(proxy.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.0 200 OK"), "{response}");
    assert!(response.ends_with("hello"), "{response}");
    let seen = upstream.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
    assert_eq!(seen.headers["via"], proxy.via("1.0"));
}

async fn a_request_with_both_content_length_and_chunked_cannot_smuggle_a_second_request(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    // The classic CL.TE desync: Transfer-Encoding wins, the 0-chunk ends the
    // body, and what follows must not be read as a request on this connection.
    let attack = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let response = crate::support::raw_exchange(proxy.addr, attack).await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert_eq!(response.matches("HTTP/1.1").count(), 1, "one response only: {response}");
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|s| s.target != "/smuggled"),
        "smuggled request reached the upstream"
    );
    assert!(
        seen.iter().all(|s| s.headers.get("content-length").is_none()),
        "Content-Length must not be forwarded"
    );
}

conformance!(
    forwards_get_head_post_and_put,
    streams_chunked_request_bodies_as_chunked,
    relays_response_trailers_to_clients_that_accept_them,
    relays_request_trailers_to_the_upstream,
    answers_expect_100_continue_before_the_body_is_sent,
    serves_cleartext_http2_and_forwards_as_http11_with_host,
    streams_an_http2_upload_of_unknown_length_to_the_backend_chunked,
    http10_request_without_host_reaches_the_backend_with_one,
    a_request_with_both_content_length_and_chunked_cannot_smuggle_a_second_request,
);
