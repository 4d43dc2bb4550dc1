//! Helpers shared by the integration tests: a scriptable upstream, a handle
//! on a running proxy process (tailcut or the Go proxy), HTTP clients, and
//! config builders.

pub mod client;
pub mod dns;
pub mod proxy;
pub mod raw_backend;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;

pub use client::{body_bytes, empty, full, get_text, h1_client, h2_client, metric, raw_exchange, status_of, Body};
pub use proxy::{Kind, Proxy, RELOADED, RELOAD_FAILED};
pub use upstream::Upstream;

/// A 64 KiB block of deterministic, non-repeating-looking bytes.
pub fn pattern_block() -> bytes::Bytes {
    (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The SHA-256 (hex) of `blocks` [`pattern_block`]s in a row: what `/stream/N`
/// sends and what `/sink` reports for such an upload.
pub fn pattern_digest(blocks: usize) -> String {
    use sha2::Digest;
    let block = pattern_block();
    let mut hash = sha2::Sha256::new();
    for _ in 0..blocks {
        hash.update(&block);
    }
    format!("{:x}", hash.finalize())
}

/// Reads a response body frame by frame, as it streams, into its length and
/// SHA-256 (hex), without holding more than one frame.
pub async fn digest_body(mut body: hyper::body::Incoming) -> (usize, String) {
    use http_body_util::BodyExt;
    use sha2::Digest;
    let (mut len, mut hash) = (0usize, sha2::Sha256::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("response frame").into_data() {
            len += data.len();
            hash.update(&data);
        }
    }
    (len, format!("{:x}", hash.finalize()))
}

/// A configuration with one listener on a free port and one catch-all route
/// to the upstream `app` at `backends`, plus `extra` TOML tables. The admin
/// listener takes a free port too, unless `extra` has an `[admin]` table.
pub fn config(backends: &[SocketAddr], extra: &str) -> String {
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let admin = if extra.contains("[admin]") {
        ""
    } else {
        "[admin]\naddress = \"127.0.0.1:0\"\n"
    };
    format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = [{}]

{admin}
{extra}
"#,
        backends.join(", ")
    )
}

/// Asks `proxy` for 64 MiB (`/stream/1024`), reads the head and one frame of
/// the body, then hangs up: a client that goes away mid-body.
pub async fn hang_up_mid_body(proxy: &Proxy) {
    let response = h1_client()
        .get(proxy.url("/stream/1024").parse().expect("uri"))
        .await
        .expect("send");
    let mut body = response.into_body();
    http_body_util::BodyExt::frame(&mut body)
        .await
        .expect("a first frame")
        .expect("data");
}
