//! WebSocket upgrades are tunnelled in both directions.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::Kind;
use crate::support::{config, Proxy, Upstream};

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

conformance!(tunnels_websocket_messages_both_ways,);
