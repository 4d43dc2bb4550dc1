//! Client limits: a route's request-body limit (413), concurrent HTTP/2
//! streams per connection, a client trickling its headers one byte at a
//! time (cut off at the header timeout, at a bounded memory cost), and a
//! client that stops reading its response (cut off at the write timeout).

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Kind;
use crate::support::{body_bytes, empty, full, h1_client, h2_client, raw_exchange, Proxy, Upstream};

/// A proxy whose route `/sink` (the upstream reads the whole body, then
/// answers its length) accepts bodies of at most 1000 bytes; everything
/// else goes to an unlimited route.
fn limited_body_config(upstream: SocketAddr) -> String {
    format!(
        "[[listeners]]\nname = \"test\"\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"small\"\npath_prefix = \"/sink\"\nupstream = \"app\"\nmax_body_bytes = 1000\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [\"{upstream}\"]\n\n[admin]\naddress = \"127.0.0.1:0\"\n"
    )
}

async fn a_body_over_the_routes_limit_is_413_whether_declared_or_streamed(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &limited_body_config(upstream.addr));
    let client = h1_client();
    let post = |path: &str, body: Vec<u8>| {
        Request::builder()
            .method(Method::POST)
            .uri(proxy.url(path))
            .body(full(body))
            .expect("request")
    };

    // Within the limit: forwarded whole.
    let response = client.request(post("/sink", vec![b'a'; 1000])).await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_bytes(response.into_body()).await.starts_with(b"1000 "));

    // Declared over it: refused before the backend hears of it.
    let before = upstream.seen().len();
    let response = client.request(post("/sink", vec![b'a'; 2000])).await.expect("send");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(upstream.seen().len(), before, "the backend saw an over-limit request");

    // Chunked, so the size is only known as it streams: three chunks of 400.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write head");
    let chunk = [b"190\r\n".as_slice(), &[b'b'; 400], b"\r\n"].concat();
    for _ in 0..3 {
        // The proxy may close as soon as the limit is crossed.
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");

    // Other routes have no limit.
    let response = client.request(post("/other", vec![b'c'; 5000])).await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await.len(), 5000);
}

async fn http2_streams_beyond_the_limit_wait_for_a_free_one(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &crate::support::config(&[upstream.addr], "[limits]\nmax_concurrent_streams = 2\n"),
    );
    let client = h2_client();
    // One request first, so the client has the server's SETTINGS (and its
    // limit) before it opens more: streams opened before that would be
    // refused with REFUSED_STREAM, which is correct but not what is tested.
    let warm = client
        .request(Request::get(proxy.url("/")).body(empty()).expect("request"))
        .await
        .expect("h2 request");
    assert_eq!(warm.status(), StatusCode::OK);
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            let request = Request::get(proxy.url("/gate")).body(empty()).expect("request");
            tokio::spawn(async move {
                let response = client.request(request).await.expect("h2 request");
                (response.status(), body_bytes(response.into_body()).await)
            })
        })
        .collect();
    let gates = || upstream.seen().iter().filter(|s| s.target == "/gate").count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gates() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every stream is held at the backend until its gate opens; the client
    // may have only two open, so no third request can have reached it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gates(), 2, "streams in flight with a limit of 2");
    for _ in 0..6 {
        upstream.open_gate();
    }
    for request in requests {
        let (status, body) = request.await.expect("task");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"firstlast");
    }
    assert_eq!(gates(), 6);
}

async fn a_client_trickling_its_headers_is_cut_off_at_a_bounded_cost(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &crate::support::config(&[upstream.addr], "[timeouts]\nrequest_header = \"1s\"\n"),
    );
    // Every client sends one byte every 100 ms: 400 bytes would take 40 s.
    const CLIENTS: usize = 100;
    const BYTES: usize = 400;
    let rss_before = proxy.memory("VmRSS");
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").await.expect("write");
        streams.push(stream);
    }
    let mut rss_peak = rss_before;
    let mut sent = 0;
    let mut open = CLIENTS;
    while open > 0 && sent < BYTES {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sent += 1;
        rss_peak = rss_peak.max(proxy.memory("VmRSS"));
        open = 0;
        for stream in &mut streams {
            // A closed connection fails the write (at the latest the second
            // one after the close) or reads an end of stream.
            let mut probe = [0u8; 512];
            let closed = match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(_)) | Err(_) => stream.write_all(b"a").await.is_err(),
            };
            if !closed {
                open += 1;
            }
        }
    }
    assert_eq!(open, 0, "{open} trickling clients still connected after {sent} bytes");
    assert!(sent < BYTES, "cut off only when the clients had sent everything");
    let per_client = rss_peak.saturating_sub(rss_before) / CLIENTS as u64;
    eprintln!(
        "{}: {CLIENTS} trickling clients cut off after {sent} bytes each; RSS grew {per_client} bytes per client at most",
        kind.name()
    );
    // hyper's read buffer holds at most 64 KiB (max_buf_size); net/http's is 4 KiB.
    assert!(per_client < 64 * 1024, "{per_client} bytes per trickling client");
    assert!(upstream.seen().is_empty(), "a trickled request reached the backend");
    // The proxy still serves others.
    let ok = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");
}

/// A connection to `addr` with a 4 KiB receive buffer, so that a response
/// its client does not read soon fills the buffers between them.
async fn small_window_connection(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    socket.connect(addr).await.expect("connect")
}

async fn a_client_that_stops_reading_is_cut_off_at_the_write_timeout(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &crate::support::config(&[upstream.addr], "[timeouts]\nclient_write = \"1s\"\n"),
    );

    // Asks for 64 MiB, then reads nothing for 3 s.
    let mut stalled = small_window_connection(proxy.addr).await;
    stalled
        .write_all(b"GET /stream/1024 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // What was buffered arrives, then the end: the proxy gave up.
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0;
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "still sending to a client that had stopped reading");
    assert!(received < 64 << 20, "the whole 64 MiB arrived ({received} bytes)");

    // Slow but moving: 4 MiB read 256 KiB at a time, 100 ms apart, which
    // takes longer than the timeout in all but never stalls for that long.
    let mut slow = small_window_connection(proxy.addr).await;
    slow.write_all(b"GET /stream/64 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut response = Vec::new();
    let mut since_pause = 0;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
            .await
            .expect("the slow download stalled")
            .expect("the slow download was cut off");
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        since_pause += n;
        if since_pause >= 256 * 1024 {
            since_pause = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(started.elapsed() > Duration::from_secs(1), "too fast to show anything");
    assert!(response.starts_with(b"HTTP/1.1 200"));
    // Chunked: complete when the last chunk arrived.
    assert!(response.ends_with(b"0\r\n\r\n"), "the slow download ended early");
    assert!(response.len() > 64 * 64 * 1024);
}

conformance!(
    a_body_over_the_routes_limit_is_413_whether_declared_or_streamed,
    http2_streams_beyond_the_limit_wait_for_a_free_one,
    a_client_trickling_its_headers_is_cut_off_at_a_bounded_cost,
    a_client_that_stops_reading_is_cut_off_at_the_write_timeout,
);
