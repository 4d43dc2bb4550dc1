//! WebSocket upgrades are tunnelled in both directions.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{config, Tailcut, Upstream};

#[tokio::test]
async fn tunnels_websocket_messages_both_ways() {
    let upstream = Upstream::start().await;
    let proxy = Tailcut::start(&config(&[upstream.addr], ""));
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{}/ws", proxy.addr), stream)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["via"], "1.1 tailcut");

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
    assert_eq!(seen.headers["connection"], "upgrade");
}
