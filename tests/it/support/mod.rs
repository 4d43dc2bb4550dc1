//! Helpers shared by the integration tests: a scriptable upstream, a handle
//! on a running proxy process (tailcut or the Go proxy), HTTP clients, and
//! config builders.

pub mod client;
pub mod proxy;
pub mod upstream;

use std::net::SocketAddr;

pub use client::{body_bytes, empty, full, h1_client, h2_client, raw_exchange, status_of, Body};
pub use proxy::{Kind, Proxy};
pub use upstream::Upstream;

/// A 64 KiB block of deterministic, non-repeating-looking bytes.
pub fn pattern_block() -> bytes::Bytes {
    (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A configuration with one listener on a free port and one catch-all route
/// to the upstream `app` at `backends`, plus `extra` TOML tables.
pub fn config(backends: &[SocketAddr], extra: &str) -> String {
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
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

{extra}
"#,
        backends.join(", ")
    )
}
