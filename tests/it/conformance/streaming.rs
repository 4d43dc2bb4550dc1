//! Bodies stream through as they arrive, in both directions, and a large
//! transfer does not grow the proxy's memory with its size.
//!
//! The first two tests cannot pass if the proxy holds a body back: the far
//! end produces the rest only after the near end has seen the first chunk.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::support::{
    body_bytes, config, digest_body, h1_client, pattern_block, pattern_digest, Body, Kind, Proxy, Upstream,
};

/// How long a step may take before the test gives up; not a performance
/// bound, only a guard so that a proxy that buffers fails instead of hanging.
const GUARD: Duration = Duration::from_secs(10);

/// 64 MiB in 64 KiB blocks.
const BLOCKS: usize = 1024;

/// Far above what a streaming proxy needs, far below one buffered body.
const PEAK_RSS_GROWTH_LIMIT: u64 = 32 * 1024 * 1024;

async fn relays_the_first_response_chunk_before_the_backend_sends_the_rest(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let response = h1_client()
        .get(proxy.url("/gate").parse().expect("uri"))
        .await
        .expect("send");
    let mut body = response.into_body();
    let first = tokio::time::timeout(GUARD, body.frame())
        .await
        .expect("the first chunk arrived while the backend held the rest")
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    assert_eq!(first, "first");
    upstream.open_gate();
    let rest = tokio::time::timeout(GUARD, body.collect())
        .await
        .expect("the rest arrived")
        .expect("no error")
        .to_bytes();
    assert_eq!(rest, "last");
}

async fn relays_the_first_request_chunk_before_the_client_sends_the_rest(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let (chunks, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(chunk)), rx))
    });
    let upload: Body = StreamBody::new(frames).map_err(|never| match never {}).boxed();
    let request = Request::post(proxy.url("/gate-sink")).body(upload).expect("request");
    let exchange = tokio::spawn(h1_client().request(request));

    chunks.send(Bytes::from_static(b"first")).await.expect("send first");
    tokio::time::timeout(GUARD, async {
        while upstream.received() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the backend read the first chunk while the client held the rest");
    chunks.send(Bytes::from_static(b"last")).await.expect("send last");
    drop(chunks);

    let response = tokio::time::timeout(GUARD, exchange)
        .await
        .expect("a response")
        .expect("task")
        .expect("send");
    assert_eq!(body_bytes(response.into_body()).await, "9");
}

async fn streams_64_mib_each_way_with_bounded_memory(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let client = h1_client();
    let block = pattern_block();
    let expected = pattern_digest(BLOCKS);

    // Warm up, so that pooled connections and buffers exist before measuring.
    let warm = client
        .get(proxy.url("/stream/1").parse().expect("uri"))
        .await
        .expect("warm-up");
    body_bytes(warm.into_body()).await;
    let before = proxy.memory("VmRSS");

    let response = client
        .get(proxy.url(&format!("/stream/{BLOCKS}")).parse().expect("uri"))
        .await
        .expect("download");
    let (len, digest) = digest_body(response.into_body()).await;
    assert_eq!(len, BLOCKS * block.len());
    assert_eq!(digest, expected);

    let frames = futures_util::stream::iter(
        (0..BLOCKS).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(block.clone()))),
    );
    let upload: Body = StreamBody::new(frames).map_err(|never| match never {}).boxed();
    let request = Request::post(proxy.url("/sink")).body(upload).expect("request");
    let response = client.request(request).await.expect("upload");
    let answer = body_bytes(response.into_body()).await;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{} {expected}", BLOCKS * 64 * 1024)
    );

    // VmHWM is the process's peak resident size: any moment at which a
    // large part of a 64 MiB body sat in memory shows up in it.
    let growth = proxy.memory("VmHWM").saturating_sub(before);
    println!("{}: peak RSS grew by {growth} B over 128 MiB streamed", kind.name());
    assert!(
        growth < PEAK_RSS_GROWTH_LIMIT,
        "{} peak RSS grew by {growth} B while streaming",
        kind.name()
    );
}

conformance!(
    relays_the_first_response_chunk_before_the_backend_sends_the_rest,
    relays_the_first_request_chunk_before_the_client_sends_the_rest,
    streams_64_mib_each_way_with_bounded_memory,
);
