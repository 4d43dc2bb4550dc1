//! WebSocket upgrades are tunnelled in both directions.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::Kind;
use crate::support::{config, raw_exchange, status_of, Proxy, Upstream};

async fn tunnels_websocket_messages_both_ways(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{}/ws", proxy.addr), stream)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["via"], proxy.via("1.1").as_str());

    for text in ["hello", "second message"] {
        ws.send(Message::text(text)).await.expect("send text");
        let echoed = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(echoed, Message::text(text));
    }
    let binary = vec![0u8, 1, 2, 255];
    ws.send(Message::binary(binary.clone())).await.expect("send binary");
    assert_eq!(
        ws.next().await.expect("reply").expect("message"),
        Message::binary(binary)
    );
    ws.close(None).await.expect("close");

    let seen = upstream.last();
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert!(seen.headers["connection"]
        .to_str()
        .is_ok_and(|v| v.eq_ignore_ascii_case("upgrade")));
}

/// A WebSocket through `proxy` to the upstream's echo, after one round trip.
async fn open_tunnel(proxy: &Proxy) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{}/ws", proxy.addr), stream)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    echo(&mut ws, "open").await;
    ws
}

/// Sends `text` and expects it back.
async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let echoed = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(echoed, Message::text(text));
}

async fn a_tunnel_counts_against_the_listeners_connection_limit(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &config(&[upstream.addr], "[limits]\nmax_connections_per_listener = 1\n"),
    );
    let mut ws = open_tunnel(&proxy).await;
    // The tunnel is the one connection allowed: another client gets 503.
    let refused = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&refused), Some(503), "{refused:?}");
    echo(&mut ws, "still open").await;

    // Closed, it gives its place back.
    ws.close(None).await.expect("close");
    while ws.next().await.is_some() {}
    drop(ws);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        if status_of(&answer) == Some(200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the closed tunnel kept its place: {answer:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn sigterm_lets_an_open_tunnel_finish_within_the_drain(kind: Kind) {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(kind, &config(&[upstream.addr], "[server]\ndrain_timeout = \"20s\"\n"));
    let mut ws = open_tunnel(&proxy).await;
    proxy.terminate();
    // The drain has begun (the listener closes), and the tunnel still carries messages.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Past the moment a drain that ignored tunnels would have ended.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    echo(&mut ws, "during the drain").await;
    ws.close(None).await.expect("close");
    while ws.next().await.is_some() {}
    drop(ws);
    // The last tunnel closed: the drain ends long before its timeout.
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit(std::time::Duration::from_secs(10)))
        .await
        .expect("wait");
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?}");
}

conformance!(
    tunnels_websocket_messages_both_ways,
    a_tunnel_counts_against_the_listeners_connection_limit,
    sigterm_lets_an_open_tunnel_finish_within_the_drain,
);
