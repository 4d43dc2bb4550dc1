//! Load-aware balancing with real backends: five backends, one of them
//! answering every request 50 ms late, and one client sending requests one
//! at a time (the hardest case for the power of two choices: nothing is in
//! flight when a choice is made, so only the latency estimate tells the
//! slow backend apart).

use std::time::Duration;

use crate::support::raw_backend::{write, Act, RawBackend, OK};
use crate::support::{config, get_text, h1_client, metric, Kind, Proxy};

/// How many of `requests` sequential requests each of five backends
/// served, the first answering 50 ms late, under `policy`.
async fn shares(policy: &str, requests: usize) -> Vec<usize> {
    let slow = RawBackend::start(|_| vec![Act::Pause(Duration::from_millis(50)), write(OK)]).await;
    let mut backends = vec![slow];
    for _ in 0..4 {
        backends.push(RawBackend::start(|_| vec![write(OK)]).await);
    }
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(&addrs, "").replace("backends = [", &format!("balance = \"{policy}\"\nbackends = [")),
    );
    let client = h1_client();
    for _ in 0..requests {
        let response = client.get(proxy.url("/").parse().expect("uri")).await.expect("send");
        assert_eq!(response.status(), 200);
        crate::support::body_bytes(response.into_body()).await;
    }
    backends.iter().map(|b| b.requests().len()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_a_slow_backend_few_requests() {
    let round_robin = shares("round_robin", 200).await;
    let least_request = shares("least_request", 200).await;
    let peak_ewma = shares("peak_ewma", 200).await;
    eprintln!("requests served by [slow, fast x4]: round_robin {round_robin:?}, least_request {least_request:?}, peak_ewma {peak_ewma:?}");
    assert_eq!(round_robin, [40, 40, 40, 40, 40]);
    // Its first answer sets its estimate to 50 ms, against well under 1 ms
    // for the others: it is drawn in 40% of the pairs, and loses each.
    assert!(peak_ewma[0] < 10, "the slow backend served {peak_ewma:?}");
    assert_eq!(peak_ewma.iter().sum::<usize>(), 200);
}

/// Sends `n` requests one at a time; how many got 502.
async fn bad_gateways(proxy: &Proxy, n: usize) -> usize {
    let client = h1_client();
    let mut failed = 0;
    for _ in 0..n {
        let response = client.get(proxy.url("/").parse().expect("uri")).await.expect("send");
        if response.status() == 502 {
            failed += 1;
        }
        crate::support::body_bytes(response.into_body()).await;
    }
    failed
}

/// An address that refuses connections (a port bound, then let go) and
/// two backends that answer.
async fn refusing_and_two_healthy() -> (std::net::SocketAddr, RawBackend, RawBackend) {
    let refusing = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let a = RawBackend::start(|_| vec![write(OK)]).await;
    let b = RawBackend::start(|_| vec![write(OK)]).await;
    (refusing, a, b)
}

/// A backend that refuses connections is ejected after
/// `consecutive_failures` of them, comes back after `base_ejection`, and is
/// ejected again after as many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_ejected_and_comes_back_after_its_ejection() {
    let (refusing, a, b) = refusing_and_two_healthy().await;
    for policy in ["round_robin", "peak_ewma"] {
        let upstream = format!(
            "balance = \"{policy}\"\nbackends = [\"{}\", \"{}\", \"{refusing}\"]\n\
             [upstreams.app.outlier]\nconsecutive_failures = 2\nbase_ejection = \"1s\"\n",
            a.addr, b.addr
        );
        let config = config(&[a.addr], "").replace(&format!("backends = [\"{}\"]\n", a.addr), &upstream);
        let proxy = Proxy::start(Kind::Tailcut, &config);
        let first = bad_gateways(&proxy, 30).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let after_ejection = bad_gateways(&proxy, 30).await;
        eprintln!("{policy}: 502s in 30 requests: {first}; after the first ejection ended: {after_ejection}");
        assert!(first <= 2, "{policy}: {first} failures before ejection");
        assert!(
            after_ejection <= 2,
            "{policy}: {after_ejection} failures after re-admission"
        );
        if policy == "round_robin" {
            assert_eq!(
                (first, after_ejection),
                (2, 2),
                "round-robin reaches it every third request"
            );
        }
    }
}

/// The metric `name{cluster="app", backend=addr, ...labels}` as scraped now.
async fn backend_metric(proxy: &Proxy, name: &str, addr: std::net::SocketAddr, labels: &[(&str, &str)]) -> f64 {
    let (status, exposition) = get_text(proxy.admin.expect("admin listener"), "/metrics", None).await;
    assert_eq!(status, 200);
    let backend = addr.to_string();
    let mut all = vec![("cluster", "app"), ("backend", backend.as_str())];
    all.extend_from_slice(labels);
    metric(&exposition, name, &all).unwrap_or_else(|| panic!("no {name} {all:?} in\n{exposition}"))
}

/// Each backend's state is in `/metrics`, and a reload that rebuilds the
/// cluster (a backend added) keeps the state of the backends that remain:
/// an ejected one stays ejected, counts go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_state_is_exported_and_survives_a_reload() {
    let (refusing, a, b) = refusing_and_two_healthy().await;
    let cluster = |backends: &[std::net::SocketAddr]| {
        let list: Vec<String> = backends.iter().map(|addr| format!("\"{addr}\"")).collect();
        config(&[a.addr], "").replace(
            &format!("backends = [\"{}\"]\n", a.addr),
            &format!(
                "balance = \"round_robin\"\nbackends = [{}]\n\
                 [upstreams.app.outlier]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\n",
                list.join(", ")
            ),
        )
    };
    let proxy = Proxy::start(Kind::Tailcut, &cluster(&[a.addr, b.addr, refusing]));
    assert_eq!(bad_gateways(&proxy, 12).await, 2);

    let scrape = |name, addr, labels: &'static [(&'static str, &'static str)]| {
        let proxy = &proxy;
        async move { backend_metric(proxy, name, addr, labels).await }
    };
    assert_eq!(scrape("tailcut_backend_ejected", refusing, &[]).await, 1.0);
    assert_eq!(scrape("tailcut_backend_ejections_total", refusing, &[]).await, 1.0);
    assert_eq!(
        scrape("tailcut_backend_requests_total", refusing, &[("status_class", "5xx")]).await,
        2.0
    );
    assert_eq!(scrape("tailcut_backend_ejected", a.addr, &[]).await, 0.0);
    assert_eq!(scrape("tailcut_backend_in_flight", a.addr, &[]).await, 0.0);
    let served_by_a = scrape("tailcut_backend_requests_total", a.addr, &[("status_class", "2xx")]).await;
    assert_eq!(served_by_a, a.requests().len() as f64);
    let estimate = scrape("tailcut_backend_latency_estimate_seconds", a.addr, &[]).await;
    assert!(estimate > 0.0 && estimate < 0.030, "a's estimate: {estimate}");

    // A backend added: the cluster is rebuilt, the others keep their state.
    let c = RawBackend::start(|_| vec![write(OK)]).await;
    proxy.rewrite_config(&cluster(&[c.addr, a.addr, b.addr, refusing]));
    assert_eq!(proxy.reload()["message"], crate::support::RELOADED);
    assert_eq!(scrape("tailcut_backend_ejected", refusing, &[]).await, 1.0);
    assert_eq!(scrape("tailcut_backend_ejections_total", refusing, &[]).await, 1.0);
    assert_eq!(
        scrape("tailcut_backend_requests_total", a.addr, &[("status_class", "2xx")]).await,
        served_by_a
    );
    let kept = scrape("tailcut_backend_latency_estimate_seconds", a.addr, &[]).await;
    assert!(kept > 0.0 && kept <= estimate, "a's estimate after the reload: {kept}");
    assert_eq!(bad_gateways(&proxy, 12).await, 0, "still ejected after the reload");
}

/// Polls `/metrics` until `name` for `addr` reads `value` (10 s at most).
async fn wait_for_metric(proxy: &Proxy, name: &str, addr: std::net::SocketAddr, value: f64) {
    for _ in 0..100 {
        if backend_metric(proxy, name, addr, &[]).await == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} of {addr} did not reach {value} within 10 s");
}

/// A backend failing its health checks gets no requests until it passes
/// them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_removes_a_backend_and_a_passing_one_returns_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let sick = Arc::new(AtomicBool::new(false));
    let a = RawBackend::start(|_| vec![write(OK)]).await;
    let b = RawBackend::start({
        let sick = sick.clone();
        move |request| {
            if request.target() == "/health" && sick.load(Ordering::SeqCst) {
                vec![write("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")]
            } else {
                vec![write(OK)]
            }
        }
    })
    .await;
    let checks = "[upstreams.app.health]\npath = \"/health\"\ninterval = \"100ms\"\n\
                  unhealthy_threshold = 2\nhealthy_threshold = 2\n";
    let config = config(&[a.addr, b.addr], checks).replace("backends = [", "balance = \"round_robin\"\nbackends = [");
    let proxy = Proxy::start(Kind::Tailcut, &config);
    let served_by_b = || b.requests().iter().filter(|r| r.target() == "/").count();

    sick.store(true, Ordering::SeqCst);
    wait_for_metric(&proxy, "tailcut_backend_healthy", b.addr, 0.0).await;
    let before = served_by_b();
    assert_eq!(bad_gateways(&proxy, 20).await, 0);
    assert_eq!(served_by_b(), before, "an unhealthy backend got requests");

    sick.store(false, Ordering::SeqCst);
    wait_for_metric(&proxy, "tailcut_backend_healthy", b.addr, 1.0).await;
    assert_eq!(bad_gateways(&proxy, 20).await, 0);
    assert_eq!(served_by_b(), before + 10, "back in the round-robin");
    let checks = b.requests().iter().filter(|r| r.target() == "/health").count();
    assert!(checks >= 4, "{checks} checks");
}

/// A WebSocket upgrade that cannot reach its backend fails as a pooled
/// request does: 502, counted against the backend (and toward its
/// ejection) and as the cluster's connect error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_counts_against_its_backend() {
    let (refusing, a, _) = refusing_and_two_healthy().await;
    let upstream = format!(
        "balance = \"round_robin\"\nbackends = [\"{refusing}\", \"{}\"]\n\
         [upstreams.app.outlier]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\n",
        a.addr
    );
    let config = config(&[a.addr], "").replace(&format!("backends = [\"{}\"]\n", a.addr), &upstream);
    let proxy = Proxy::start(Kind::Tailcut, &config);
    let upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\nUpgrade: websocket\r\n\
                    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(crate::support::status_of(
            &crate::support::raw_exchange(proxy.addr, upgrade).await,
        ));
    }
    // Round-robin alternates until the second failure ejects the refusing backend.
    assert_eq!(statuses.iter().filter(|s| **s == Some(502)).count(), 2, "{statuses:?}");
    assert_eq!(
        backend_metric(
            &proxy,
            "tailcut_backend_requests_total",
            refusing,
            &[("status_class", "5xx")]
        )
        .await,
        2.0
    );
    assert_eq!(
        backend_metric(&proxy, "tailcut_backend_ejected", refusing, &[]).await,
        1.0
    );
    assert_eq!(
        backend_metric(&proxy, "tailcut_backend_in_flight", refusing, &[]).await,
        0.0
    );
    let (_, exposition) = get_text(proxy.admin.expect("admin listener"), "/metrics", None).await;
    assert_eq!(
        metric(
            &exposition,
            "tailcut_upstream_connect_errors_total",
            &[("cluster", "app")]
        ),
        Some(2.0),
        "{exposition}"
    );
}
