//! 64 MiB each way passes through while the proxy's heap stays flat: the
//! body is streamed, never buffered.
//!
//! The proxy runs in-process on a runtime whose threads are the only ones the
//! counting allocator tracks, so the figures are the proxy's alone.

use std::path::Path;
use std::sync::Arc;

use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::support::{config, digest_body, h1_client, pattern_block, pattern_digest, Body, Upstream};

const BLOCKS: usize = 1024; // 1024 x 64 KiB = 64 MiB
const HEAP_GROWTH_LIMIT: i64 = 1024 * 1024;

#[test]
fn streams_64_mib_each_way_with_flat_proxy_heap() {
    let test_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test runtime");
    let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(alloc_counter::track_current_thread)
        .enable_all()
        .build()
        .expect("proxy runtime");

    let upstream = test_runtime.block_on(Upstream::start());
    // A window far longer than the test: the metrics reader allocates its
    // histograms once, at its first read after the warm-up, and never again
    // while the test measures.
    let toml = config(
        &[upstream.addr],
        "[admin]\naddress = \"127.0.0.1:0\"\nwindow = \"365d\"\n",
    );
    let parsed = tailcut::config::parse(Path::new("test.toml"), &toml).expect("valid config");
    let server = proxy_runtime
        .block_on(tailcut::server::Server::bind(Arc::new(parsed)))
        .expect("bind");
    let addr = server.local_addrs()[0].1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // No reloads: the sender is dropped at once.
    let (_, reloads) = tokio::sync::mpsc::channel(1);
    proxy_runtime.spawn(server.run(
        async {
            let _ = stopped.await;
        },
        reloads,
    ));

    test_runtime.block_on(async move {
        let client = h1_client();
        let url = |path: &str| format!("http://{addr}{path}");
        // Warm up: the pooled connections and buffers exist before measuring.
        let warm = client
            .get(url("/stream/1").parse().expect("uri"))
            .await
            .expect("warm-up");
        warm.into_body().collect().await.expect("warm-up body");
        // The admin listener reads the metrics every second.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

        let before = alloc_counter::snapshot();
        alloc_counter::reset_peak();
        let response = client
            .get(url(&format!("/stream/{BLOCKS}")).parse().expect("uri"))
            .await
            .expect("download");
        let (len, digest) = digest_body(response.into_body()).await;
        let download_peak = alloc_counter::snapshot().peak_bytes - before.live_bytes;
        assert_eq!(len, BLOCKS * 64 * 1024);
        assert_eq!(digest, pattern_digest(BLOCKS));

        let before = alloc_counter::snapshot();
        alloc_counter::reset_peak();
        let block = pattern_block();
        let frames = futures_util::stream::iter(
            (0..BLOCKS).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(block.clone()))),
        );
        let upload: Body = StreamBody::new(frames).map_err(|never| match never {}).boxed();
        let request = Request::post(url("/sink")).body(upload).expect("request");
        let response = client.request(request).await.expect("upload");
        let answer = response.into_body().collect().await.expect("upload answer").to_bytes();
        let upload_peak = alloc_counter::snapshot().peak_bytes - before.live_bytes;
        assert_eq!(
            String::from_utf8_lossy(&answer),
            format!("{} {}", BLOCKS * 64 * 1024, pattern_digest(BLOCKS))
        );

        println!("proxy heap growth: download {download_peak} B, upload {upload_peak} B");
        assert!(
            download_peak < HEAP_GROWTH_LIMIT,
            "download grew the proxy heap by {download_peak} B"
        );
        assert!(
            upload_peak < HEAP_GROWTH_LIMIT,
            "upload grew the proxy heap by {upload_peak} B"
        );
    });
    let _ = stop.send(());
}
