//! Retries and hedged requests: which requests qualify, where the second
//! attempt goes, what the budget lets through, and what happens to the
//! attempt that loses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::raw_backend::{write, Act, RawBackend, OK};
use crate::support::{get_text, metric, raw_exchange, status_of, Kind, Proxy};

const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";

/// One route, `all`, over `backends` chosen in turn (so that the test knows
/// which backend each request meets first), never ejected; `route` and
/// `upstream` are added to the route's and the upstream's tables.
fn config(backends: &[SocketAddr], route: &str, upstream: &str) -> String {
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[[routes]]
name = "all"
upstream = "app"
{route}

[upstreams.app]
backends = [{}]
balance = "round_robin"
[upstreams.app.outlier]
consecutive_failures = 100000
{upstream}
"#,
        backends.join(", ")
    )
}

fn request(method: &str, fields: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} / HTTP/1.1\r\nHost: a\r\n{fields}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn statuses(proxy: &Proxy, raw: &[u8], n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        let answer = raw_exchange(proxy.addr, raw).await;
        statuses.push(status_of(&answer).unwrap_or(0));
    }
    statuses
}

async fn exposition(proxy: &Proxy) -> String {
    get_text(proxy.admin.expect("admin listener"), "/metrics", None).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_is_retried_on_the_other_backend() {
    let failing = RawBackend::start(|_| vec![write(UNAVAILABLE)]).await;
    let healthy = RawBackend::start(|_| vec![write(OK)]).await;
    // Nothing listens there: connections are refused.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused_addr = refused.local_addr().expect("addr");
    drop(refused);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    // A budget that refuses nothing: this test is about where retries go.
    let access_log = format!(
        "[upstreams.app.budget]\npercent = 100\nmin_per_second = 1000\n\
         [access_log]\nenabled = true\npath = \"{}\"\n",
        log.display()
    );
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(
            &[failing.addr, healthy.addr, refused_addr],
            "[routes.retry]\nattempts = 3\n",
            &access_log,
        ),
    );
    for id in 0..30 {
        let answer = raw_exchange(proxy.addr, &request("GET", &format!("X-Id: {id}\r\n"), "")).await;
        assert_eq!(status_of(&answer), Some(200), "{answer}");
    }
    // Every request ended at the healthy backend; none went twice to the
    // failing one (a retry goes to a backend not yet tried).
    assert_eq!(healthy.requests().len(), 30);
    let ids: Vec<String> = failing.requests().iter().flat_map(|r| r.header("x-id")).collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert!(ids.len() >= 5, "round robin sent {} to the failing backend", ids.len());
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    let exposition = exposition(&proxy).await;
    let retried = |reason| {
        metric(
            &exposition,
            "tailcut_retries_total",
            &[("route", "all"), ("reason", reason)],
        )
    };
    assert_eq!(retried("503"), Some(ids.len() as f64), "{exposition}");
    assert!(retried("connect-failure").is_some_and(|n| n >= 5.0), "{exposition}");
    // The access log marks each retried request with its retries.
    let marked = access_log_lines(&log, 30)
        .iter()
        .filter(|line| line["retries"].as_u64().is_some_and(|n| n >= 1))
        .count();
    assert!(marked >= ids.len(), "{marked} lines marked retried");
}

/// The access log's first `n` lines, parsed, waiting up to 5 s for them.
fn access_log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_and_large_bodies_are_sent_once() {
    let failing = RawBackend::start(|_| vec![write(UNAVAILABLE)]).await;
    let healthy = RawBackend::start(|_| vec![write(OK)]).await;
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(
            &[failing.addr, healthy.addr],
            "max_buffered_body = 16\n[routes.retry]\n",
            // A budget that refuses nothing: this test is about eligibility.
            "[upstreams.app.budget]\npercent = 100\nmin_per_second = 1000\n",
        ),
    );
    // POST without Idempotency-Key: the failing backend's 503 goes to the client.
    let posts = statuses(&proxy, &request("POST", "", "{\"order\":1}"), 10).await;
    assert_eq!(posts.iter().filter(|&&s| s == 503).count(), 5, "{posts:?}");
    // With one, it is retried, with the same body, byte for byte.
    let keyed = statuses(&proxy, &request("POST", "Idempotency-Key: k1\r\n", "{\"order\":2}"), 10).await;
    assert!(keyed.iter().all(|&s| s == 200), "{keyed:?}");
    let bodies: Vec<Vec<u8>> = healthy.requests().iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies.iter().filter(|b| b.as_slice() == b"{\"order\":2}").count(), 10);
    // A PUT over max_buffered_body streams, and is sent once.
    let large = statuses(&proxy, &request("PUT", "", &"x".repeat(17)), 10).await;
    assert_eq!(large.iter().filter(|&&s| s == 503).count(), 5, "{large:?}");
    // So is a chunked one, whose length is not known up front.
    let chunked =
        b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    let chunked = statuses(&proxy, chunked, 10).await;
    assert_eq!(chunked.iter().filter(|&&s| s == 503).count(), 5, "{chunked:?}");
    // A small PUT is idempotent: retried.
    let small = statuses(&proxy, &request("PUT", "", "small"), 10).await;
    assert!(small.iter().all(|&s| s == 200), "{small:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_says_do_not_retry_is_not_retried() {
    let pushing_back = RawBackend::start(|_| {
        vec![write(
            "HTTP/1.1 503 Service Unavailable\r\ngrpc-retry-pushback-ms: -1\r\nContent-Length: 0\r\n\r\n",
        )]
    })
    .await;
    let healthy = RawBackend::start(|_| vec![write(OK)]).await;
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(&[pushing_back.addr, healthy.addr], "[routes.retry]\n", ""),
    );
    let got = statuses(&proxy, &request("GET", "", ""), 10).await;
    assert_eq!(got.iter().filter(|&&s| s == 503).count(), 5, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_failing_retries_stay_within_the_budget() {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let script = move |_: &_| {
        count.fetch_add(1, Ordering::SeqCst);
        vec![write(UNAVAILABLE)]
    };
    let a = RawBackend::start(script.clone()).await;
    let b = RawBackend::start(script).await;
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(
            &[a.addr, b.addr],
            "[routes.retry]\nattempts = 3\nbackoff_base = \"1ms\"\nbackoff_max = \"1ms\"\n",
            "[upstreams.app.budget]\npercent = 20\nmin_per_second = 0\n",
        ),
    );
    let got = statuses(&proxy, &request("GET", "", ""), 100).await;
    assert!(got.iter().all(|&s| s == 503), "{got:?}");
    // Up to two retries each without a budget (300 requests upstream);
    // 20% of 100 with it.
    let upstream = seen.load(Ordering::SeqCst);
    assert!(
        (100..=120).contains(&upstream),
        "{upstream} requests reached the backends"
    );
    let exposition = exposition(&proxy).await;
    let retried = metric(
        &exposition,
        "tailcut_retries_total",
        &[("route", "all"), ("reason", "503")],
    );
    assert_eq!(retried, Some((upstream - 100) as f64), "{exposition}");
    let refused = metric(&exposition, "tailcut_budget_refused_total", &[("cluster", "app")]).unwrap_or(0.0);
    assert!(refused >= 80.0, "{exposition}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_wins_over_a_slow_backend_whose_connection_is_then_closed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    // The first request it sees is slow; later ones are not.
    let sometimes_slow = RawBackend::start(move |_| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            vec![Act::Pause(Duration::from_secs(2)), write(OK)]
        } else {
            vec![write(OK)]
        }
    })
    .await;
    let fast = RawBackend::start(|_| vec![write(OK)]).await;
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(
            &[sometimes_slow.addr, fast.addr],
            "[routes.hedge]\ndelay = \"20ms\"\nmax_percent = 100\n",
            "",
        ),
    );
    let keep_alive = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let started = std::time::Instant::now();
    let got = statuses(&proxy, keep_alive, 6).await;
    assert!(got.iter().all(|&s| s == 200), "{got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the slow answer was not waited for"
    );
    let exposition = exposition(&proxy).await;
    assert_eq!(
        metric(&exposition, "tailcut_hedges_total", &[("route", "all")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&exposition, "tailcut_hedge_wins_total", &[("route", "all")]),
        Some(1.0)
    );
    // The slow backend's first connection was closed when its attempt lost:
    // its later requests came on new connections.
    let slow_conns: Vec<usize> = sometimes_slow.requests().iter().map(|r| r.conn).collect();
    assert_eq!(slow_conns.iter().filter(|&&c| c == 0).count(), 1, "{slow_conns:?}");
    assert!(slow_conns.len() >= 3, "{slow_conns:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_and_upgrades_are_never_hedged() {
    let slow = |_: &_| vec![Act::Pause(Duration::from_millis(300)), write(OK)];
    let a = RawBackend::start(slow).await;
    let b = RawBackend::start(slow).await;
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(
            &[a.addr, b.addr],
            "[routes.hedge]\ndelay = \"5ms\"\nmax_percent = 100\n",
            "",
        ),
    );
    let post = statuses(&proxy, &request("POST", "", "x"), 2).await;
    let upgrade = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let upgrades = statuses(&proxy, upgrade, 2).await;
    assert_eq!([post, upgrades].concat(), [200; 4]);
    assert_eq!(a.requests().len() + b.requests().len(), 4, "one attempt each");
    let exposition = exposition(&proxy).await;
    assert_eq!(
        metric(&exposition, "tailcut_hedges_total", &[("route", "all")]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_delay_does_not_fall_when_hedges_win() {
    // Of five backends taken in turn, two answer at once, one in 30 ms and
    // two in 200 ms: the median first attempt takes 30 ms. A request sent
    // to a slow one is hedged then, and its hedge wins unless it too goes
    // to a slow one. Were the winners timed from their own start, as
    // tower's hedge does, three in five requests would be timed at about
    // 1 ms, the median would fall to the 2 ms floor, and hedging would
    // start ever earlier.
    let pause = |ms| move |_: &_| vec![Act::Pause(Duration::from_millis(ms)), write(OK)];
    let mut backends = Vec::new();
    for ms in [0, 0, 30, 200, 200] {
        backends.push(RawBackend::start(pause(ms)).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(
            &addrs,
            "[routes.hedge]\npercentile = 50.0\nmin_samples = 20\nmax_percent = 100\n",
            "[upstreams.app.budget]\npercent = 100\nmin_per_second = 100\n",
        ),
    );
    let get = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let delay = |exposition: &str| metric(exposition, "tailcut_hedge_delay_seconds", &[("route", "all")]);
    statuses(&proxy, get, 33).await;
    let before = delay(&exposition(&proxy).await).expect("a delay");
    assert!(before >= 0.030, "the median first attempt takes 30 ms: {before}");
    statuses(&proxy, get, 96).await;
    let exposition = exposition(&proxy).await;
    let wins = metric(&exposition, "tailcut_hedge_wins_total", &[("route", "all")]).unwrap_or(0.0);
    assert!(wins >= 5.0, "{exposition}");
    let after = delay(&exposition).expect("a delay");
    assert!(after >= before * 0.9, "the delay fell from {before} to {after}");
}
