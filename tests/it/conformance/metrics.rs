//! The admin listener: request counts, latency figures, health, and the
//! access log, under the same names and paths in both proxies.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{body_bytes, config, get_text, h1_client, metric, raw_exchange, Body, Kind, Proxy, Upstream};

type HttpClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// Long enough for any recording to land; never a performance bound.
const GUARD: Duration = Duration::from_secs(10);

fn admin(proxy: &Proxy) -> SocketAddr {
    proxy.admin.expect("the start-up log names the admin address")
}

/// GETs `path` through the proxy on `client`.
async fn get(client: &HttpClient, proxy: &Proxy, path: &str) -> u16 {
    let response = client.get(proxy.url(path).parse().expect("uri")).await.expect("send");
    let status = response.status().as_u16();
    body_bytes(response.into_body()).await;
    status
}

/// Polls `/metrics` until `name{labels}` reads `want` (recording happens
/// when a body ends, a moment after the client has it), then returns the text.
async fn metrics_once(proxy: &Proxy, name: &str, labels: &[(&str, &str)], want: f64) -> String {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let (status, text) = get_text(admin(proxy), "/metrics", None).await;
        assert_eq!(status, 200);
        if metric(&text, name, labels) == Some(want) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn requests(class: &'static str) -> [(&'static str, &'static str); 3] {
    [("route", "all"), ("cluster", "app"), ("status_class", class)]
}

async fn counts_every_request_by_route_cluster_and_status_class(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let client = h1_client();
    for _ in 0..7 {
        assert_eq!(get(&client, &proxy, "/").await, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&client, &proxy, "/status/404").await, 404);
    }
    assert_eq!(get(&client, &proxy, "/status/503").await, 503);

    let text = metrics_once(&proxy, "tailcut_requests_total", &requests("5xx"), 1.0).await;
    assert_eq!(
        metric(&text, "tailcut_requests_total", &requests("2xx")),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tailcut_requests_total", &requests("4xx")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tailcut_requests_total", &requests("5xx")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "tailcut_latency_window_samples",
            &[("route", "all"), ("figure", "total")]
        ),
        Some(11.0),
        "{text}"
    );
    for quantile in ["0.5", "0.9", "0.99", "0.999", "0.9999", "1"] {
        let labels = [("route", "all"), ("figure", "total"), ("quantile", quantile)];
        let value = metric(&text, "tailcut_latency_seconds", &labels);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "quantile {quantile}: {value:?} in {text}"
        );
    }
}

async fn counts_client_connections(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    for _ in 0..3 {
        let response = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        assert!(response.ends_with("hello"), "{response}");
    }
    let listener = [("listener", "test")];
    let text = metrics_once(&proxy, "tailcut_connections_active", &listener, 0.0).await;
    assert_eq!(
        metric(&text, "tailcut_connections_total", &listener),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tailcut_connections_active", &listener),
        Some(0.0),
        "{text}"
    );
}

async fn counts_upstream_connect_errors(kind: Kind) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let proxy = Proxy::start(kind, &config(&[closed], ""));
    let client = h1_client();
    for _ in 0..2 {
        assert_eq!(get(&client, &proxy, "/").await, 502);
    }
    let text = metrics_once(
        &proxy,
        "tailcut_upstream_connect_errors_total",
        &[("cluster", "app")],
        2.0,
    )
    .await;
    assert_eq!(
        metric(&text, "tailcut_upstream_connect_errors_total", &[("cluster", "app")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tailcut_requests_total", &requests("5xx")),
        Some(2.0),
        "{text}"
    );
}

/// `/latency` as JSON: the value at `quantile` in microseconds, and the count.
async fn latency_json(proxy: &Proxy, query: &str, quantile: f64) -> (u64, u64) {
    let (status, body) = get_text(admin(proxy), &format!("/latency?{query}"), Some("application/json")).await;
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let count = value["count"].as_u64().expect("count");
    let at = value["percentiles"]
        .as_array()
        .expect("percentiles")
        .iter()
        .find(|p| p["quantile"].as_f64().is_some_and(|q| q >= quantile))
        .and_then(|p| p["value_us"].as_u64())
        .unwrap_or(0);
    (at, count)
}

async fn records_upstream_time_and_the_little_the_proxy_adds(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let client = h1_client();
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy, "/delay/50").await, 200);
    }
    metrics_once(
        &proxy,
        "tailcut_latency_window_samples",
        &[("route", "all"), ("figure", "upstream")],
        20.0,
    )
    .await;
    let (upstream_p50, count) = latency_json(&proxy, "route=all&figure=upstream", 0.5).await;
    assert_eq!(count, 20);
    // The backend sleeps 50 ms; scheduling on a busy machine can only add.
    assert!(
        (50_000..150_000).contains(&upstream_p50),
        "upstream p50 {upstream_p50} us for a 50 ms backend"
    );
    let (proxy_p50, count) = latency_json(&proxy, "route=all&figure=proxy", 0.5).await;
    assert_eq!(count, 20);
    assert!(
        proxy_p50 < 10_000,
        "proxy-added p50 {proxy_p50} us should be far below the 50 ms upstream"
    );
}

async fn a_client_that_leaves_mid_body_is_recorded_as_gone(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    crate::support::hang_up_mid_body(&proxy).await;
    let gone = [("route", "all"), ("cluster", "app"), ("end", "client_gone")];
    let text = metrics_once(&proxy, "tailcut_responses_ended_total", &gone, 1.0).await;
    assert_eq!(
        metric(&text, "tailcut_responses_ended_total", &gone),
        Some(1.0),
        "{text}"
    );
    let complete = [("route", "all"), ("cluster", "app"), ("end", "complete")];
    assert_eq!(
        metric(&text, "tailcut_responses_ended_total", &complete),
        Some(0.0),
        "{text}"
    );
}

async fn latency_is_served_as_hgrm_that_parses_back(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    let client = h1_client();
    for _ in 0..25 {
        get(&client, &proxy, "/").await;
    }
    metrics_once(
        &proxy,
        "tailcut_latency_window_samples",
        &[("route", "all"), ("figure", "total")],
        25.0,
    )
    .await;
    let (status, text) = get_text(admin(&proxy), "/latency?route=all&figure=total", None).await;
    assert_eq!(status, 200);
    let (lines, total) = tailcut::metrics::hgrm::parse_hgrm(&text).expect("hgrm parses");
    assert_eq!(total, 25, "{text}");
    assert_eq!(lines.last().map(|l| l.total_count), Some(25), "{text}");
    assert!(lines.windows(2).all(|w| w[0].value_ms <= w[1].value_ms), "{text}");

    let (status, _) = get_text(admin(&proxy), "/latency?route=nope&figure=total", None).await;
    assert_eq!(status, 404);
    let (status, _) = get_text(admin(&proxy), "/latency?route=all&figure=nope", None).await;
    assert_eq!(status, 400);
}

async fn the_window_forgets_samples_the_total_keeps(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        kind,
        &config(
            &[upstream.addr],
            "[admin]\naddress = \"127.0.0.1:0\"\nwindow = \"1s\"\n",
        ),
    );
    let client = h1_client();
    for _ in 0..5 {
        get(&client, &proxy, "/").await;
    }
    metrics_once(&proxy, "tailcut_requests_total", &requests("2xx"), 5.0).await;
    // A 1 s window has moved past them after 2.5 s of silence.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, window) = latency_json(&proxy, "route=all&figure=total", 0.5).await;
    let (_, total) = latency_json(&proxy, "route=all&figure=total&scope=total", 0.5).await;
    assert_eq!((window, total), (0, 5));
}

async fn live_and_ready_answer(kind: Kind) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(kind, &config(&[upstream.addr], ""));
    assert_eq!(get_text(admin(&proxy), "/live", None).await.0, 200);
    assert_eq!(get_text(admin(&proxy), "/ready", None).await.0, 200);
    assert_eq!(get_text(admin(&proxy), "/nothing-here", None).await.0, 404);
}

async fn a_stalled_access_log_drops_and_counts_lines_without_blocking(kind: Kind) {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("access.fifo");
    // A FIFO nobody reads: the writer blocks opening it, as behind a stuck disk.
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let extra = format!(
        "[access_log]\nenabled = true\npath = \"{}\"\nbuffer_lines = 4\n",
        fifo.display()
    );
    let proxy = Proxy::start(kind, &config(&[upstream.addr], &extra));
    let client = h1_client();
    for _ in 0..20 {
        let answered = tokio::time::timeout(GUARD, get(&client, &proxy, "/")).await;
        assert_eq!(answered.ok(), Some(200), "a request waited for the access log");
    }
    let text = metrics_once(&proxy, "tailcut_requests_total", &requests("2xx"), 20.0).await;
    let dropped = metric(&text, "tailcut_access_log_dropped_total", &[]).expect("dropped counter");
    // At most the buffer and the line in the writer's hands are not dropped.
    assert!(
        dropped >= 15.0,
        "dropped {dropped} of 20 lines with a 4-line buffer: {text}"
    );
}

conformance!(
    counts_every_request_by_route_cluster_and_status_class,
    counts_client_connections,
    counts_upstream_connect_errors,
    records_upstream_time_and_the_little_the_proxy_adds,
    a_client_that_leaves_mid_body_is_recorded_as_gone,
    latency_is_served_as_hgrm_that_parses_back,
    the_window_forgets_samples_the_total_keeps,
    live_and_ready_answer,
    a_stalled_access_log_drops_and_counts_lines_without_blocking,
);
