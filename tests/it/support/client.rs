//! HTTP clients for the tests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Request body type of the test clients.
pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A body of `data`.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

/// No body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A pooled HTTP/1.1 keep-alive client.
pub fn h1_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// Collects a response body (test side only; the proxy never does this).
pub async fn body_bytes(body: hyper::body::Incoming) -> Bytes {
    body.collect().await.expect("response body").to_bytes()
}

/// Writes `request` bytes as they are on a new connection and returns all
/// the bytes the server sends until it closes (or 5 s pass).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1 response, whatever its protocol version.
pub fn status_of(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let (version, rest) = line.split_once(' ')?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    rest.get(..3)?.parse().ok()
}

/// GETs `path` from `addr` (an admin listener) and returns status and body.
pub async fn get_text(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut request = http::Request::get(format!("http://{addr}{path}"));
    if let Some(accept) = accept {
        request = request.header(http::header::ACCEPT, accept);
    }
    let response = h1_client()
        .request(request.body(empty()).expect("request"))
        .await
        .expect("admin request");
    let status = response.status().as_u16();
    let body = body_bytes(response.into_body()).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the sample `name{labels}` in Prometheus text `exposition`:
/// the one line whose name is `name` and whose labels include every pair.
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}
