//! A hostile client: request smuggling payloads, malformed framing and
//! fields that must not be routed by or forwarded, written byte for byte on
//! a raw socket, in front of a raw-socket backend that records what reached
//! it.
//!
//! Whatever the payload, two things hold for every case: each request that
//! reaches the backend is canonical HTTP/1.1 (CRLF lines, one framing field,
//! one Host), and the backend gets exactly one request per successful
//! response the client reads, so that no bytes the client wrote become a
//! request the proxy did not see. Each case then says what it expects
//! beyond that: refused (a 4xx or 501, nothing forwarded), or forwarded as
//! so many requests.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::raw_backend::{write, RawBackend, RawRequest, OK};
use crate::support::{config, empty, h2_client, Kind, Proxy};

/// What a payload must lead to, beyond the invariants every case checks.
#[derive(Clone, Copy)]
enum Expect {
    /// A 4xx or 501 first, and nothing forwarded.
    Refused,
    /// This many requests forwarded and answered.
    Forwarded(usize),
    /// Refused, or forwarded as this many requests: RFC 9112 lets a
    /// server choose.
    RefusedOr(usize),
    /// Exactly this status, and nothing answered by the backend.
    Status(u16),
}

/// Writes `payload` on a new connection to `proxy` and reads what comes back
/// until the proxy closes, or has been quiet for half a second after
/// answering (5 s before anything arrives).
async fn exchange(proxy: &Proxy, payload: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    // A proxy may answer and close before reading all of a large payload.
    let _ = stream.write_all(payload).await;
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let wait = if received.is_empty() {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(500)
        };
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&chunk[..n]),
            _ => return String::from_utf8_lossy(&received).into_owned(),
        }
    }
}

/// The status of each response in `received`, in order, read as a client
/// would: a head, then a body of its Content-Length.
fn statuses(received: &str) -> Vec<u16> {
    let mut found = Vec::new();
    let mut rest = received;
    while rest.starts_with("HTTP/1.") {
        let Some(code) = rest.get(9..12).and_then(|c| c.parse().ok()) else {
            break;
        };
        found.push(code);
        let Some(head_end) = rest.find("\r\n\r\n") else {
            break;
        };
        let length: usize = rest[..head_end]
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0);
        rest = rest.get(head_end + 4 + length..).unwrap_or_default();
    }
    found
}

/// Sends `payload` through a proxy to a backend answering every request
/// with [`OK`]; checks the invariants and `expect`; returns what the
/// backend read.
async fn check(kind: Kind, payload: &[u8], expect: Expect) -> Vec<RawRequest> {
    let backend = RawBackend::start(|_| vec![write(OK)]).await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    let received = exchange(&proxy, payload).await;
    // Let a request that is still on its way to the backend arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let forwarded = backend.requests();
    let statuses = statuses(&received);
    let context = format!("sent {:?}\nreceived {received:?}", String::from_utf8_lossy(payload));

    for request in &forwarded {
        let faults = request.framing_faults();
        assert!(
            faults.is_empty(),
            "not canonical upstream: {faults:?} in {:?}\n{context}",
            String::from_utf8_lossy(&request.head)
        );
    }
    let answered = statuses.iter().filter(|s| (200..300).contains(*s)).count();
    assert_eq!(
        forwarded.len(),
        answered,
        "requests forwarded and successful responses differ\n{context}"
    );
    let refused = matches!(statuses.first(), Some(400..=499 | 501)) && forwarded.is_empty();
    match expect {
        Expect::Refused => assert!(refused, "expected a 4xx or 501 and nothing forwarded\n{context}"),
        Expect::Forwarded(n) => assert_eq!(forwarded.len(), n, "requests forwarded\n{context}"),
        Expect::RefusedOr(n) => assert!(
            refused || forwarded.len() == n,
            "expected a refusal or {n} requests forwarded\n{context}"
        ),
        Expect::Status(status) => {
            assert_eq!(statuses.first(), Some(&status), "{context}");
            assert!(forwarded.is_empty(), "{context}");
        }
    }
    forwarded
}

/// Declares each case as a conformance test.
macro_rules! cases {
    ($($name:ident => $payload:expr, $expect:expr;)*) => {
        $(
            async fn $name(kind: Kind) {
                check(kind, $payload.as_ref(), $expect).await;
            }
        )*
        conformance!($($name),*);
    };
}

/// `n` bytes of `a`, for over-long lines.
fn long(n: usize) -> String {
    "a".repeat(n)
}

cases! {
    // RFC 9112 section 6.1: refuse, or frame by the chunked coding and
    // close the connection after answering; never a second request.
    content_length_then_chunked_cannot_smuggle => b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n", Expect::RefusedOr(1);
    chunked_then_content_length_cannot_smuggle => b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
        Content-Length: 3\r\n\r\n23\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n\r\n0\r\n\r\n", Expect::RefusedOr(1);
    transfer_encoding_with_a_space_before_the_colon_is_refused => b"POST / HTTP/1.1\r\nHost: h\r\n\
        Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", Expect::Refused;
    transfer_encoding_after_a_tab_is_chunked => b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n", Expect::Forwarded(1);
    transfer_encoding_in_capitals_is_chunked => b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n", Expect::Forwarded(1);
    identity_then_chunked_is_refused => b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n", Expect::Refused;
    chunked_then_identity_is_refused => b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n", Expect::Refused;
    gzip_then_chunked_is_refused_not_forwarded_without_its_coding => b"POST / HTTP/1.1\r\nHost: h\r\n\
        Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Expect::Refused;
    an_unknown_coding_is_refused => b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n", Expect::Refused;
    chunked_twice_is_refused => b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
        Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Expect::Refused;
    a_vertical_tab_before_chunked_is_refused => b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x0bchunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n", Expect::Refused;
    two_different_content_lengths_are_refused => b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\
        Content-Length: 6\r\n\r\nhello!", Expect::Refused;
    a_list_of_different_content_lengths_is_refused => b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n\
        hello!", Expect::Refused;
    a_list_of_equal_content_lengths_is_refused_or_sent_as_one => b"POST / HTTP/1.1\r\nHost: h\r\n\
        Content-Length: 5, 5\r\n\r\nhello", Expect::RefusedOr(1);
    a_content_length_with_a_sign_is_refused => b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello",
        Expect::Refused;
    bare_lf_line_ends_are_refused_or_sent_as_crlf => b"GET / HTTP/1.1\nHost: h\n\n", Expect::RefusedOr(1);
    a_bare_cr_is_refused => b"GET / HTTP/1.1\rHost: h\r\n\r\n", Expect::Refused;
    http_0_9_is_refused => b"GET /\r\n\r\n", Expect::Refused;
    an_over_long_request_line_is_refused => format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", long(70_000)),
        Expect::Refused;
    an_over_long_header_is_refused => format!("GET / HTTP/1.1\r\nHost: h\r\nX-Long: {}\r\n\r\n", long(70_000)),
        Expect::Refused;
    a_nul_in_a_header_value_is_refused => b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n", Expect::Refused;
    a_space_in_a_header_name_is_refused => b"GET / HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n", Expect::Refused;
    pipelined_requests_are_forwarded_one_by_one => b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
        GET /b HTTP/1.1\r\nHost: h\r\n\r\n", Expect::Forwarded(2);
    a_chunk_size_with_a_letter_is_the_clients_fault => b"POST / HTTP/1.1\r\nHost: h\r\n\
        Transfer-Encoding: chunked\r\n\r\n5g\r\nhello\r\n0\r\n\r\n", Expect::Status(400);
    a_negative_chunk_size_is_the_clients_fault => b"POST / HTTP/1.1\r\nHost: h\r\n\
        Transfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n", Expect::Status(400);
    a_hexadecimal_prefix_on_a_chunk_size_is_the_clients_fault => b"POST / HTTP/1.1\r\nHost: h\r\n\
        Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", Expect::Status(400);
    an_overflowing_chunk_size_is_the_clients_fault => b"POST / HTTP/1.1\r\nHost: h\r\n\
        Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff5\r\nhello\r\n0\r\n\r\n", Expect::Status(400);
    a_host_with_a_path_is_refused => b"GET / HTTP/1.1\r\nHost: echo/../x\r\n\r\n", Expect::Refused;
    a_host_with_user_information_is_refused => b"GET / HTTP/1.1\r\nHost: evil@echo\r\n\r\n", Expect::Refused;
}

/// `Connection` may name hop-by-hop fields, never Host: the request is
/// routed by it, so the backend must see it too.
async fn connection_cannot_remove_host(kind: Kind) {
    let forwarded = check(
        kind,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Host\r\n\r\n",
        Expect::Forwarded(1),
    )
    .await;
    assert_eq!(forwarded[0].header("host"), ["h"]);
    assert_eq!(forwarded[0].header("x-forwarded-host"), ["h"]);
}

/// User information in an absolute-form target is refused, or dropped:
/// never routed by nor forwarded.
async fn credentials_in_the_target_are_never_forwarded(kind: Kind) {
    let forwarded = check(
        kind,
        b"GET http://user:pw@h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        Expect::RefusedOr(1),
    )
    .await;
    for request in forwarded {
        let head = String::from_utf8_lossy(&request.head).into_owned();
        assert!(!head.contains('@'), "{head}");
    }
}

/// Trailer fields that frame or route a request, or that the proxy itself
/// owns, never reach the backend from a client's trailers.
async fn request_trailers_lose_framing_routing_and_the_proxys_fields(kind: Kind) {
    let forwarded = check(
        kind,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\
          Content-Length: 50\r\nHost: evil\r\nX-Forwarded-For: 1.2.3.4\r\nVia: 1.1 spoofed\r\nx-checksum: 42\r\n\r\n",
        Expect::Forwarded(1),
    )
    .await;
    assert_eq!(forwarded[0].body, b"hello");
    for (name, value) in forwarded[0].trailer_fields() {
        assert!(
            !["content-length", "host", "x-forwarded-for", "via"].contains(&name.to_ascii_lowercase().as_str()),
            "trailer {name}: {value} reached the backend"
        );
    }
}

/// An HTTP/2 client may send each cookie in a field of its own (RFC 9113
/// section 8.2.3); the HTTP/1.1 backend gets one Cookie field.
async fn http2_cookies_reach_the_backend_as_one_field(kind: Kind) {
    let backend = RawBackend::start(|_| vec![write(OK)]).await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    let request = Request::get(proxy.url("/"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(empty())
        .expect("request");
    let response = h2_client().request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.expect("body");
    let seen = backend.last("/").expect("forwarded");
    assert_eq!(seen.header("cookie"), ["a=1; b=2"]);
}

/// An HTTP/2 `:authority` with user information is refused, or forwarded
/// without it.
async fn http2_authority_with_user_information_is_never_forwarded(kind: Kind) {
    let backend = RawBackend::start(|_| vec![write(OK)]).await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    let uri = format!("http://evil@{}/", proxy.addr);
    // Refused with a 400, or with the stream reset, or forwarded without it.
    let status = match h2_client()
        .request(Request::get(uri).body(empty()).expect("request"))
        .await
    {
        Ok(response) => {
            let status = response.status();
            response.into_body().collect().await.expect("body");
            Some(status)
        }
        Err(_) => None,
    };
    for request in backend.requests() {
        let head = String::from_utf8_lossy(&request.head).into_owned();
        assert!(!head.contains("evil"), "{head}");
    }
    let refused = status.is_none_or(|status| status == StatusCode::BAD_REQUEST);
    assert!(refused || backend.requests().len() == 1, "{status:?}");
}

/// An HTTP/2 client that opens a connection and then never reads or answers
/// again (not even the PING of a graceful close) is closed once idle, and
/// its place under the connection limit goes to the next client.
async fn a_silent_http2_connection_is_closed_once_idle(kind: Kind) {
    let backend = RawBackend::start(|_| vec![write(OK)]).await;
    let extra = "[limits]\nmax_connections_per_listener = 1\n[timeouts]\nidle = \"1s\"\nrequest_header = \"1s\"\n";
    let proxy = Proxy::start(kind, &config(&[backend.addr], extra));
    let mut silent = TcpStream::connect(proxy.addr).await.expect("connect");
    let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    let settings_ack = [0, 0, 0, 4, 1, 0, 0, 0, 0];
    silent
        .write_all(&[&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &settings, &settings_ack].concat())
        .await
        .expect("write");
    // Whatever the proxy sends is read and never answered, until it closes.
    let mut chunk = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(n) = silent.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent connection was still open after 20 s");
    // Its place is handed back as the proxy's side of it winds down, which
    // may trail the close the client saw by a moment.
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let response = crate::support::h1_client()
            .get(proxy.url("/").parse().expect("uri"))
            .await
            .expect("an answer");
        statuses.push(response.status());
        if response.status() == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the next client was not served within 5 s of the close: {statuses:?}");
}

conformance!(
    a_silent_http2_connection_is_closed_once_idle,
    connection_cannot_remove_host,
    credentials_in_the_target_are_never_forwarded,
    request_trailers_lose_framing_routing_and_the_proxys_fields,
    http2_cookies_reach_the_backend_as_one_field,
    http2_authority_with_user_information_is_never_forwarded,
);
