//! What the proxy does with the way a backend frames, delays or breaks its
//! response, against a scripted backend that writes exact bytes: bodies
//! delimited by the close, informational responses, invalid framing, a
//! backend that fails mid-body, and a pooled connection the backend closes
//! just as a request goes out on it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{body_bytes, config, empty, full, h1_client, Kind, Proxy};

/// What the scripted backend does with one request on a connection.
#[derive(Clone, Copy)]
enum Step {
    /// Writes these bytes as they are.
    Reply(&'static str),
    /// Closes the connection without a word, as a backend whose keep-alive
    /// timeout fired just as the request arrived.
    HangUp,
}

/// A backend following a script: one list of steps per connection, in the
/// order connections arrive, one step per request. A connection closes once
/// its steps are done.
struct Scripted {
    addr: SocketAddr,
    /// (connection number, request line) of each request read.
    requests: Arc<Mutex<Vec<(usize, String)>>>,
}

impl Scripted {
    async fn start(script: Vec<Vec<Step>>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            for (number, steps) in script.into_iter().enumerate() {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, number, steps, seen.clone()));
            }
        });
        Scripted { addr, requests }
    }

    fn requests(&self) -> Vec<(usize, String)> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn serve(mut stream: TcpStream, number: usize, steps: Vec<Step>, seen: Arc<Mutex<Vec<(usize, String)>>>) {
    let mut buffer = Vec::new();
    for step in steps {
        let Some(line) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        seen.lock().expect("lock").push((number, line));
        match step {
            Step::Reply(bytes) => {
                if stream.write_all(bytes.as_bytes()).await.is_err() {
                    return;
                }
            }
            Step::HangUp => return,
        }
    }
}

/// Reads one request (head, and a body of its Content-Length) and returns
/// its request line; `None` if the connection closed first.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    buffer.drain(..head_end + length);
    Some(head.lines().next().unwrap_or_default().to_owned())
}

/// A proxy in front of a backend that answers one request with `reply` and
/// closes the connection.
async fn behind_one_reply(kind: Kind, reply: &'static str) -> (Scripted, Proxy) {
    let backend = Scripted::start(vec![vec![Step::Reply(reply)]]).await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    (backend, proxy)
}

/// A backend that answers a first request on a keep-alive connection and
/// closes that connection when the second request arrives on it; a second
/// connection answers once.
async fn closes_a_pooled_connection_under_the_second_request(kind: Kind) -> (Scripted, Proxy) {
    let backend = Scripted::start(vec![
        vec![
            Step::Reply("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"),
            Step::HangUp,
        ],
        vec![Step::Reply("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")],
    ])
    .await;
    let proxy = Proxy::start(kind, &config(&[backend.addr], ""));
    (backend, proxy)
}

async fn get(proxy: &Proxy, path: &str) -> (StatusCode, String) {
    let response = h1_client()
        .get(proxy.url(path).parse().expect("uri"))
        .await
        .expect("send");
    let status = response.status();
    (
        status,
        String::from_utf8_lossy(&body_bytes(response.into_body()).await).into_owned(),
    )
}

async fn relays_a_body_the_backend_ends_by_closing(kind: Kind) {
    let (_backend, proxy) = behind_one_reply(kind, "HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
    assert_eq!(get(&proxy, "/").await, (StatusCode::OK, "until the end".to_owned()));
}

async fn skips_informational_responses_before_the_final_one(kind: Kind) {
    let (_backend, proxy) = behind_one_reply(
        kind,
        "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert_eq!(get(&proxy, "/").await, (StatusCode::OK, "ok".to_owned()));
}

async fn conflicting_content_lengths_from_the_backend_are_502(kind: Kind) {
    let (_backend, proxy) = behind_one_reply(
        kind,
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(get(&proxy, "/").await.0, StatusCode::BAD_GATEWAY);
}

async fn a_chunked_response_with_a_stale_content_length_arrives_whole(kind: Kind) {
    // RFC 9112 section 6.3: Transfer-Encoding overrides Content-Length, and
    // the proxy must not pass the Content-Length on, or the client would
    // read 3 bytes of the 10 as the whole body.
    let (_backend, proxy) = behind_one_reply(
        kind,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(get(&proxy, "/").await, (StatusCode::OK, "0123456789".to_owned()));
}

async fn a_backend_that_dies_mid_body_cuts_the_response_short(kind: Kind) {
    let (_backend, proxy) = behind_one_reply(kind, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
    // Cut before or after the head reached the client, depending on timing:
    // either way the client must not see a complete response.
    if let Ok(response) = h1_client().get(proxy.url("/").parse().expect("uri")).await {
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.into_body().collect().await.is_err(),
            "3 bytes of 10 must not pass for a complete body"
        );
    }
}

async fn retries_a_get_once_when_a_pooled_connection_closes_under_it(kind: Kind) {
    let (backend, proxy) = closes_a_pooled_connection_under_the_second_request(kind).await;
    assert_eq!(get(&proxy, "/first").await, (StatusCode::OK, "one".to_owned()));
    assert_eq!(get(&proxy, "/second").await, (StatusCode::OK, "two".to_owned()));
    let lines: Vec<(usize, String)> = backend.requests();
    assert_eq!(
        lines,
        [
            (0, "GET /first HTTP/1.1".to_owned()),
            (0, "GET /second HTTP/1.1".to_owned()),
            (1, "GET /second HTTP/1.1".to_owned()),
        ]
    );
}

async fn does_not_resend_a_post_when_a_pooled_connection_closes_under_it(kind: Kind) {
    let (backend, proxy) = closes_a_pooled_connection_under_the_second_request(kind).await;
    let client = h1_client();
    let response = client
        .request(Request::get(proxy.url("/first")).body(empty()).expect("request"))
        .await
        .expect("send");
    body_bytes(response.into_body()).await;
    let response = client
        .request(
            Request::post(proxy.url("/order"))
                .body(full("pay once"))
                .expect("request"),
        )
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        backend.requests().len(),
        2,
        "the backend may have acted on the POST: it must not be sent again"
    );
}

conformance!(
    relays_a_body_the_backend_ends_by_closing,
    skips_informational_responses_before_the_final_one,
    conflicting_content_lengths_from_the_backend_are_502,
    a_chunked_response_with_a_stale_content_length_arrives_whole,
    a_backend_that_dies_mid_body_cuts_the_response_short,
    retries_a_get_once_when_a_pooled_connection_closes_under_it,
    does_not_resend_a_post_when_a_pooled_connection_closes_under_it,
);
