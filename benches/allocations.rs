//! Heap allocations per proxied request, counted on the proxy's threads only.
//!
//! The proxy runs in-process on a one-worker runtime whose thread the counting
//! allocator tracks; a minimal upstream and the client run on another runtime
//! that is not counted. Prints allocations per request for HTTP/1.1 GET,
//! HTTP/1.1 POST with a small body, and HTTP/2 (h2c) GET.
//!
//! `cargo bench --bench allocations`

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static ALLOCATOR: alloc_counter::CountingAllocator = alloc_counter::CountingAllocator;

const WARMUP: u64 = 2_000;
const MEASURED: u64 = 20_000;

fn main() {
    let outside = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let proxy = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(alloc_counter::track_current_thread)
        .enable_all()
        .build()
        .expect("runtime");

    let upstream = outside.block_on(start_upstream());
    let toml = format!(
        "[[listeners]]\nname = \"bench\"\naddress = \"127.0.0.1:0\"\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n\
         [upstreams.app]\nbackends = [\"{upstream}\"]\n[admin]\naddress = \"127.0.0.1:0\"\n"
    );
    let config = tailcut::config::parse(Path::new("bench.toml"), &toml).expect("config");
    let server = proxy
        .block_on(tailcut::server::Server::bind(Arc::new(config)))
        .expect("bind");
    let addr = server.local_addrs()[0].1;
    // No reloads: the sender is dropped at once.
    let (_, reloads) = tokio::sync::mpsc::channel(1);
    proxy.spawn(server.run(std::future::pending(), reloads));

    outside.block_on(async {
        let uri: http::Uri = format!("http://{addr}/bench?q=1").parse().expect("uri");
        let h1 = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let per_request = measure(|| {
            let (h1, uri) = (h1.clone(), uri.clone());
            async move {
                let response = h1.get(uri).await.expect("GET");
                response.into_body().collect().await.expect("body");
            }
        })
        .await;
        println!("HTTP/1.1 GET, 5-byte response:          {per_request:.2} allocations per request");

        let post = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let per_request = measure(|| {
            let (post, uri) = (post.clone(), uri.clone());
            async move {
                let request = Request::post(uri)
                    .body(Full::new(Bytes::from_static(b"0123456789abcdef")))
                    .expect("request");
                let response = post.request(request).await.expect("POST");
                response.into_body().collect().await.expect("body");
            }
        })
        .await;
        println!("HTTP/1.1 POST, 16-byte body:            {per_request:.2} allocations per request");

        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Empty<Bytes>>();
        let per_request = measure(|| {
            let (h2, uri) = (h2.clone(), uri.clone());
            async move {
                let response = h2.get(uri).await.expect("h2 GET");
                response.into_body().collect().await.expect("body");
            }
        })
        .await;
        println!("HTTP/2 (h2c) GET, 5-byte response:      {per_request:.2} allocations per request");
    });
}

/// Runs `request` WARMUP times, then MEASURED times, one at a time; returns
/// the proxy's allocations per measured request.
async fn measure<F, Fut>(mut request: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..WARMUP {
        request().await;
    }
    let before = alloc_counter::snapshot().allocations;
    for _ in 0..MEASURED {
        request().await;
    }
    let after = alloc_counter::snapshot().allocations;
    (after - before) as f64 / MEASURED as f64
}

/// A minimal keep-alive upstream answering `hello` (not counted).
async fn start_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
