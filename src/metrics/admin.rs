//! The admin listener: what operators and scrapers read while tailcut runs.
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric, Prometheus text format 0.0.4 |
//! | `GET /latency?route=NAME&figure=FIGURE` | one latency distribution as `.hgrm` text, or JSON with `Accept: application/json`; optional `end=complete\|error\|client_gone` (default: all) and `scope=window\|total` (default: window) |
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200 once the listeners are bound, 503 before and while draining |
//!
//! It runs beside the proxy listeners on its own address (loopback by
//! default) and shares nothing with the request path but [`Metrics`].

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::hgrm::hgrm;
use super::latency::{End, Figure, Scope};
use super::Metrics;

/// How often the latency window is moved forward when nobody reads it.
const TICK: Duration = Duration::from_secs(1);

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: CancellationToken) {
    let ticker = {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = interval.tick() => metrics.tick(),
                    () = shutdown.cancelled() => return,
                }
            }
        })
    };
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(cause = %err, "admin accept failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                std::future::ready(Ok::<_, Infallible>(answer(&metrics, &request)))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(cause = %err, "admin connection failed");
            }
        });
    }
    ticker.abort();
}

fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/latency" => latency(metrics, request),
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/ready" if metrics.is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /latency, /live, /ready\n".into(),
        ),
    }
}

fn latency(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let query = request.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    let Some(route_name) = param("route") else {
        return text(StatusCode::BAD_REQUEST, "route=NAME is required\n".into());
    };
    let Some(slot) = metrics.route_slot(route_name) else {
        return text(StatusCode::NOT_FOUND, format!("no route named {route_name:?}\n"));
    };
    let figure_name = param("figure").unwrap_or("total");
    let Some(figure) = Figure::from_name(figure_name) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("figure {figure_name:?} is not one of headers, total, upstream, proxy\n"),
        );
    };
    let ends: &[End] = match param("end") {
        None => &End::ALL,
        Some(name) => match End::ALL.iter().find(|e| e.name() == name) {
            Some(end) => std::slice::from_ref(end),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("end {name:?} is not one of complete, error, client_gone\n"),
                )
            }
        },
    };
    let scope = match param("scope") {
        None | Some("window") => Scope::Window,
        Some("total") => Scope::Total,
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("scope {other:?} is not window or total\n"),
            )
        }
    };
    let histogram = metrics
        .latency(slot, figure, ends, scope)
        .unwrap_or_else(super::latency::new_histogram);
    let wants_json = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !wants_json {
        return text(StatusCode::OK, hgrm(&histogram));
    }
    let percentiles: Vec<serde_json::Value> = if histogram.is_empty() {
        Vec::new()
    } else {
        histogram
            .iter_quantiles(5)
            .map(|v| serde_json::json!({ "quantile": v.quantile_iterated_to(), "value_us": v.value_iterated_to() }))
            .collect()
    };
    let body = serde_json::json!({
        "route": route_name,
        "figure": figure.name(),
        "scope": if scope == Scope::Window { "window" } else { "total" },
        "count": histogram.len(),
        "min_us": histogram.min(),
        "max_us": histogram.max(),
        "mean_us": histogram.mean(),
        "percentiles": percentiles,
    });
    let mut response = text(StatusCode::OK, format!("{body}\n"));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
