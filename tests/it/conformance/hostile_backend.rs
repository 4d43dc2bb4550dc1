//! A hostile backend: responses framed to confuse, broken mid-way, or
//! carrying fields that must not cross the proxy, written byte for byte by
//! a raw-socket backend.
//!
//! Each case is sent by an HTTP/1.1 client and by an HTTP/2 client. For each,
//! what the client receives is checked, then a plain request follows: it
//! must be answered correctly, and after a response whose framing left the
//! connection in doubt it must come on a new backend connection (a pooled
//! connection that might hold the rest of a smuggled response is never
//! reused).

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::raw_backend::{write, Act, RawBackend};
use crate::support::{config, empty, h1_client, h2_client, status_of, Kind, Proxy};

/// What the client must receive.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A complete response with this status and body.
    Complete(u16, &'static str),
    /// A response with this status (the proxy's own error).
    Status(u16),
    /// Never a complete response: the request or its body fails.
    Broken,
    /// Either of two, where RFC 9112 leaves the proxy the choice.
    Either(&'static Expect, &'static Expect),
}

impl Expect {
    /// Whether `outcome` (status and body, or why there was none) meets it.
    fn met_by(&self, outcome: &Result<(StatusCode, bytes::Bytes), String>) -> bool {
        match (self, outcome) {
            (Expect::Complete(status, body), Ok((got, bytes))) => got == status && bytes == body.as_bytes(),
            (Expect::Status(status), Ok((got, _))) => got == status,
            (Expect::Broken, Err(_)) => true,
            (Expect::Either(one, other), outcome) => one.met_by(outcome) || other.met_by(outcome),
            _ => false,
        }
    }
}

/// Whether the backend connection may serve the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Its framing was in doubt: the next request must use a new connection.
    Never,
    /// A sound exchange: reuse is allowed, not required.
    Allowed,
}

struct Case {
    method: Method,
    acts: Vec<Act>,
    expect: Expect,
    reuse: Reuse,
    /// How long the backend goes on writing after its response.
    settle: Duration,
}

fn get(reply: &str, expect: Expect, reuse: Reuse) -> Case {
    Case {
        method: Method::GET,
        acts: vec![write(reply)],
        expect,
        reuse,
        settle: Duration::ZERO,
    }
}

/// Sends `/case` through a proxy in front of a backend following `case`,
/// over HTTP/1.1 and then HTTP/2, checking each answer and the request
/// after it.
async fn check(kind: Kind, case: Case) {
    let backend = RawBackend::answering("/case", case.acts.clone()).await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    for (protocol, client) in [("HTTP/1.1", h1_client()), ("HTTP/2", h2_client())] {
        let request = Request::builder()
            .method(case.method.clone())
            .uri(proxy.url("/case"))
            .body(empty())
            .expect("request");
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let response = client.request(request).await.map_err(|err| format!("request: {err}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|err| format!("{status} then body: {err}"))?;
            Ok::<_, String>((status, body.to_bytes()))
        })
        .await
        .expect("an answer or a failure within 10 s");
        assert!(
            case.expect.met_by(&outcome),
            "{protocol}: expected {:?}, got {outcome:?}",
            case.expect
        );

        tokio::time::sleep(case.settle).await;
        let next = h1_client()
            .get(proxy.url("/next").parse().expect("uri"))
            .await
            .expect("the next request");
        assert_eq!(next.status(), StatusCode::OK, "{protocol}: the request after");
        let body = next.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok", "{protocol}: the request after gets its own answer");
        if case.reuse == Reuse::Never {
            let (case_conn, next_conn) = (
                backend.last("/case").expect("the case reached the backend").conn,
                backend
                    .last("/next")
                    .expect("the next request reached the backend")
                    .conn,
            );
            assert_ne!(
                case_conn, next_conn,
                "{protocol}: a connection whose framing was in doubt was reused"
            );
        }
    }
}

/// Declares each case as a conformance test.
macro_rules! cases {
    ($($name:ident => $case:expr;)*) => {
        $(
            async fn $name(kind: Kind) {
                check(kind, $case).await;
            }
        )*
        conformance!($($name),*);
    };
}

cases! {
    both_content_length_and_chunked_are_framed_chunked_and_not_reused => get(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Expect::Complete(200, "hello"),
        Reuse::Never,
    );
    a_second_response_smuggled_after_a_chunked_body_never_reaches_a_client => get(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        Expect::Complete(200, ""),
        Reuse::Never,
    );
    conflicting_content_lengths_are_a_bad_gateway => get(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
        Expect::Status(502),
        Reuse::Never,
    );
    a_content_length_with_a_sign_is_a_bad_gateway => get(
        "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        Expect::Status(502),
        Reuse::Never,
    );
    a_hexadecimal_content_length_is_a_bad_gateway => get(
        "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
        Expect::Status(502),
        Reuse::Never,
    );
    a_negative_content_length_is_a_bad_gateway => get(
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello",
        Expect::Status(502),
        Reuse::Never,
    );
    an_overflowing_content_length_is_a_bad_gateway => get(
        "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551617\r\n\r\nhello",
        Expect::Status(502),
        Reuse::Never,
    );
    // RFC 9110 section 8.6: collapse the list to one value, or reject it.
    a_list_of_equal_content_lengths_reaches_clients_as_one_or_not_at_all => get(
        "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
        Expect::Either(&Expect::Complete(200, "ok"), &Expect::Status(502)),
        Reuse::Allowed,
    );
    // RFC 9112 section 5.2: a proxy rejects an obs-fold (502) or unfolds it.
    a_folded_header_line_is_rejected_or_unfolded => get(
        "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        Expect::Either(&Expect::Status(502), &Expect::Complete(200, "ok")),
        // Unfolded, the exchange is sound.
        Reuse::Allowed,
    );
    a_nul_in_a_header_value_is_a_bad_gateway => get(
        "HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok",
        Expect::Status(502),
        Reuse::Never,
    );
    a_cr_in_a_header_value_is_a_bad_gateway => get(
        "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok",
        Expect::Status(502),
        Reuse::Never,
    );
    an_overflowing_chunk_size_breaks_the_body => get(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nfffffffffffffffff1\r\nxx",
        Expect::Broken,
        Reuse::Never,
    );
    chunk_data_without_its_crlf_breaks_the_body => get(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
        Expect::Broken,
        Reuse::Never,
    );
    bytes_after_the_body_in_the_same_packet_are_not_a_response => get(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
        Expect::Complete(200, "ok"),
        Reuse::Never,
    );
    bytes_after_the_body_arriving_later_are_not_a_response => Case {
        method: Method::GET,
        acts: vec![
            write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Act::Pause(Duration::from_millis(300)),
            write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"),
        ],
        expect: Expect::Complete(200, "ok"),
        reuse: Reuse::Never,
        settle: Duration::from_millis(600),
    };
    // (Their Content-Length is another case: see
    // no_content_responses_reach_http2_clients_without_content_length.)
    a_204_with_a_body_reaches_clients_without_one => get(
        "HTTP/1.1 204 No Content\r\n\r\nhello",
        Expect::Complete(204, ""),
        Reuse::Never,
    );
    a_304_with_a_body_reaches_clients_without_one => get(
        "HTTP/1.1 304 Not Modified\r\n\r\nhello",
        Expect::Complete(304, ""),
        Reuse::Never,
    );
    a_body_after_the_answer_to_head_is_not_passed_on => Case {
        method: Method::HEAD,
        ..get("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Expect::Complete(200, ""), Reuse::Never)
    };
    an_overflowing_content_length_in_the_answer_to_head_is_a_bad_gateway => Case {
        method: Method::HEAD,
        ..get(
            "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551617\r\n\r\n",
            Expect::Status(502),
            Reuse::Never,
        )
    };
    a_transfer_coding_that_is_not_text_is_a_bad_gateway => Case {
        acts: vec![Act::Write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \x80chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec())],
        ..get("", Expect::Status(502), Reuse::Never)
    };
    a_close_in_the_middle_of_the_head_is_a_bad_gateway => Case {
        acts: vec![write("HTTP/1.1 200 OK\r\nContent-Le"), Act::Close],
        ..get("", Expect::Status(502), Reuse::Never)
    };
    a_close_in_the_middle_of_the_body_breaks_it => Case {
        acts: vec![write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"), Act::Close],
        ..get("", Expect::Broken, Reuse::Never)
    };
    a_reset_during_a_body_read_to_the_close_breaks_it => Case {
        acts: vec![
            write("HTTP/1.1 200 OK\r\n\r\nhello"),
            Act::Pause(Duration::from_millis(100)),
            Act::Reset,
        ],
        ..get("", Expect::Broken, Reuse::Never)
    };
    a_101_to_a_request_that_asked_for_no_upgrade_is_a_bad_gateway => get(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        Expect::Status(502),
        Reuse::Never,
    );
}

/// A chunked response whose trailer section carries fields that frame,
/// route or describe the connection: they are dropped, and HTTP/2 clients
/// get the whole body and the trailers that are allowed.
async fn trailers_lose_the_fields_trailers_may_not_carry(kind: Kind) {
    let reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n\
                 Content-Length: 5\r\nHost: evil\r\nx-checksum: 42\r\n\r\n";
    let backend = RawBackend::answering("/case", vec![write(reply)]).await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    let request = Request::get(proxy.url("/case"))
        .header("te", "trailers")
        .body(empty())
        .expect("request");
    let response = h2_client().request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response
        .into_body()
        .collect()
        .await
        .expect("the whole body, not a reset stream");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(&collected.to_bytes()[..], b"hello");
    assert_eq!(trailers["x-checksum"], "42");
    for refused in [
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "content-length",
        "host",
    ] {
        assert!(trailers.get(refused).is_none(), "{refused} passed in trailers");
    }
}

/// Reads one response with a Content-Length body from `stream`; returns its
/// head and body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTP/1.0 backend (as `python3 -m http.server` is) closes its
/// connections; the client's HTTP/1.1 connection to the proxy must not.
async fn an_http10_backend_leaves_the_clients_connection_open(kind: Kind) {
    let backend =
        RawBackend::start(|_| vec![write("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), Act::Close]).await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    for _ in 0..2 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .expect("write");
        let (head, body) = read_response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("connection: close"), "{head}");
        assert_eq!(body, "ok");
    }
}

const WEBSOCKET_REQUEST: &str = "GET /case HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Bytes a client sends once it believes it is tunnelled: were they
/// tunnelled, the backend would take them for a request with no proxy
/// fields.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: internal.admin\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";

/// Sends `request`, then [`SMUGGLED`], on one connection; returns the status
/// of the first response.
async fn upgrade_then_smuggle(proxy: &Proxy, request: &str) -> Option<u16> {
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut bytes))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    let status = status_of(&String::from_utf8_lossy(&bytes[..n]));
    let _ = client.write_all(SMUGGLED.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    status
}

/// No request reached the backend as the client wrote it, bypassing the proxy.
fn assert_nothing_tunnelled(backend: &RawBackend) {
    for request in backend.requests() {
        assert_ne!(
            request.header("x-forwarded-for"),
            ["6.6.6.6"],
            "bytes reached the backend without passing the proxy: {:?}",
            String::from_utf8_lossy(&request.head)
        );
    }
}

/// A backend answering `/case` with a 101 to `protocol`, then `then` in
/// the new protocol, and holding the connection open a while.
async fn switching_to(protocol: &str, then: &str) -> RawBackend {
    let switch =
        format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n{then}");
    RawBackend::answering("/case", vec![write(switch), Act::Pause(Duration::from_secs(2))]).await
}

/// The client asked for WebSocket; a backend switching to anything else
/// must not get a tunnel.
async fn a_101_to_a_protocol_the_client_did_not_offer_is_a_bad_gateway(kind: Kind) {
    let backend = switching_to("h2c", "").await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    assert_eq!(upgrade_then_smuggle(&proxy, WEBSOCKET_REQUEST).await, Some(502));
    assert_nothing_tunnelled(&backend);
}

/// `Upgrade: h2c` is not among a route's protocols by default: the request
/// goes to the backend as a plain one, and a 101 answering it is a 502.
async fn an_upgrade_the_route_does_not_allow_is_not_offered_or_tunnelled(kind: Kind) {
    let backend = switching_to("h2c", "").await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    let h2c = "GET /case HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
               HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    assert_eq!(upgrade_then_smuggle(&proxy, h2c).await, Some(502));
    let seen = backend.last("/case").expect("forwarded as a plain request");
    assert!(
        seen.header("upgrade").is_empty(),
        "{:?}",
        String::from_utf8_lossy(&seen.head)
    );
    assert_nothing_tunnelled(&backend);
}

/// A route that lists a protocol tunnels it.
async fn a_protocol_the_route_lists_is_tunnelled(kind: Kind) {
    let backend = switching_to("x-feed", "from backend").await;
    let routes =
        config(&[backend.addr], "").replace("upstream = \"app\"", "upstream = \"app\"\nupgrades = [\"x-feed\"]");
    let proxy = Proxy::start(kind, &routes);
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client
        .write_all(b"GET /case HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x-feed\r\n\r\n")
        .await
        .expect("write");
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    while !bytes.ends_with(b"from backend") {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk))
            .await
            .expect("tunnel bytes within 10 s")
            .expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(status_of(&String::from_utf8_lossy(&bytes)), Some(101));
    let seen = backend.last("/case").expect("forwarded");
    assert_eq!(seen.header("upgrade"), ["x-feed"]);
}

/// A 204 or 304 has no body whatever its Content-Length says; HTTP/2
/// clients that check the field against the body would fail on it.
async fn no_content_responses_reach_http2_clients_without_content_length(kind: Kind) {
    for status in ["204 No Content", "304 Not Modified"] {
        let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 8\r\n\r\n");
        let backend = RawBackend::answering("/case", vec![write(reply)]).await;
        let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
        let response = h2_client()
            .request(Request::get(proxy.url("/case")).body(empty()).expect("request"))
            .await
            .expect("response");
        assert!(
            response.headers().get("content-length").is_none(),
            "{status}: {:?}",
            response.headers()
        );
        response.into_body().collect().await.expect("body");
    }
}

conformance!(
    no_content_responses_reach_http2_clients_without_content_length,
    trailers_lose_the_fields_trailers_may_not_carry,
    an_http10_backend_leaves_the_clients_connection_open,
    a_101_to_a_protocol_the_client_did_not_offer_is_a_bad_gateway,
    an_upgrade_the_route_does_not_allow_is_not_offered_or_tunnelled,
    a_protocol_the_route_lists_is_tunnelled,
);
