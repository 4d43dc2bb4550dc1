//! Reloading the configuration while serving (tailcut only: the Go proxy
//! reads its config once). SIGHUP, or a change of the file with
//! `--watch-config`, re-reads it: a valid config switches routing for new
//! requests with no request failing, an invalid one changes nothing and its
//! error is logged, and listeners are kept, added and removed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::{
    body_bytes, get_text, h1_client, metric, raw_exchange, status_of, Kind, Proxy, Upstream, RELOADED, RELOAD_FAILED,
};

/// A listener on a free port, a route `all` to `route_to`, and clusters `a`
/// and `b` at the two upstreams; then `extra` TOML.
fn two_cluster_config(a: SocketAddr, b: SocketAddr, route_to: &str, extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"{route_to}\"\n\n\
         [upstreams.a]\nbackends = [\"{a}\"]\n\n\
         [upstreams.b]\nbackends = [\"{b}\"]\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n{extra}"
    )
}

/// What the clients under load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
}

/// Clients sending GETs to `addr` until `stop` is set (or 20 s pass, or
/// 50,000 requests): half on pooled keep-alive connections, half on a new
/// connection per request. Anything but a 200 with the upstream's body is
/// a failure.
fn load(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> Vec<tokio::task::JoinHandle<()>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let limit = 50_000;
    (0..6)
        .map(|i| {
            let (stop, tally) = (stop.clone(), tally.clone());
            tokio::spawn(async move {
                let client = h1_client();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if tally.ok.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) >= limit {
                        break;
                    }
                    let good = if i % 2 == 0 {
                        let uri = format!("http://{addr}/").parse().expect("uri");
                        match client.get(uri).await {
                            Ok(response) => {
                                response.status() == StatusCode::OK && body_bytes(response.into_body()).await == "hello"
                            }
                            Err(err) => {
                                eprintln!("keep-alive request failed: {err}");
                                false
                            }
                        }
                    } else {
                        let response =
                            raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n").await;
                        let good = status_of(&response) == Some(200) && response.ends_with("hello");
                        if !good {
                            eprintln!("new-connection request failed: {response:?}");
                        }
                        good
                    };
                    let counter = if good { &tally.ok } else { &tally.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// A GET of `/` on `sender`'s connection, once it is ready for one.
async fn get(sender: &mut hyper::client::conn::http1::SendRequest<crate::support::Body>) {
    sender.ready().await.expect("connection ready for the next request");
    let request = http::Request::get("/")
        .header("host", "reload.test")
        .body(crate::support::empty())
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .expect("request on the connection opened before");
    assert_eq!(response.status(), StatusCode::OK);
    body_bytes(response.into_body()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_switches_routing_with_no_failed_request() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let proxy = Proxy::start(Kind::Tailcut, &two_cluster_config(a.addr, b.addr, "a", ""));
    let admin = proxy.admin.expect("admin");
    // One keep-alive connection opened before the reload, used after it.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    get(&mut sender).await;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(proxy.addr, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.rewrite_config(&two_cluster_config(a.addr, b.addr, "b", ""));
    let outcome = tokio::task::block_in_place(|| proxy.reload());
    assert_eq!(outcome["message"], RELOADED, "{outcome}");
    assert_eq!(outcome["trigger"], "SIGHUP");
    // Both clusters are defined as before: their pools are kept.
    assert_eq!(outcome["clusters_kept"], "a,b");
    assert_eq!(outcome["clusters_new"], "");
    assert_eq!(outcome["routes"], "all=*/->b");
    let a_at_reload = a.seen().len();

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    eprintln!(
        "under load: {ok} answered, {failed} failed; a saw {a_at_reload}, b saw {}",
        b.seen().len()
    );
    assert_eq!(failed, 0, "requests failed across the reload");
    assert!(a_at_reload > 0, "the load reached cluster a before the reload");
    assert!(!b.seen().is_empty(), "the load reached cluster b after the reload");
    // Requests in flight at the reload may have finished on a; none started after it.
    assert!(
        a.seen().len() - a_at_reload <= 6,
        "a kept receiving requests after the reload"
    );

    // From now on every request goes to b, also on the connection opened
    // before the reload: routes are read per request, not per connection.
    let (a_before, b_before) = (a.seen().len(), b.seen().len());
    for _ in 0..20 {
        get(&mut sender).await;
    }
    assert_eq!(a.seen().len(), a_before);
    assert_eq!(b.seen().len(), b_before + 20);
    let (_, text) = get_text(admin, "/metrics", None).await;
    assert_eq!(
        metric(&text, "tailcut_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    // The route keeps its metrics per cluster: both pairs are exported.
    for cluster in ["a", "b"] {
        let answered = metric(
            &text,
            "tailcut_requests_total",
            &[("route", "all"), ("cluster", cluster), ("status_class", "2xx")],
        );
        assert!(
            answered.is_some_and(|n| n > 0.0),
            "route all to {cluster}: {answered:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_pooled_connections_of_unchanged_clusters() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let proxy = Proxy::start(Kind::Tailcut, &two_cluster_config(a.addr, b.addr, "a", ""));
    let client = h1_client();
    let get = |path: &'static str| {
        let client = client.clone();
        let url = proxy.url(path);
        async move {
            let response = client.get(url.parse().expect("uri")).await.expect("request");
            assert_eq!(response.status(), StatusCode::OK);
            body_bytes(response.into_body()).await;
        }
    };
    get("/").await;
    assert_eq!(a.accepts(), 1);

    // A new timeout for requests, cluster a untouched: its pool stays.
    let kept = two_cluster_config(a.addr, b.addr, "a", "[timeouts]\nupstream_response_header = \"20s\"\n");
    proxy.rewrite_config(&kept);
    let outcome = tokio::task::block_in_place(|| proxy.reload());
    assert_eq!(outcome["clusters_kept"], "a,b", "{outcome}");
    get("/").await;
    assert_eq!(a.accepts(), 1, "the pooled connection to a was not reused");

    // A changed connect timeout changes how a's connections are made: new pool.
    let changed = two_cluster_config(a.addr, b.addr, "a", "[timeouts]\nconnect = \"2s\"\n");
    proxy.rewrite_config(&changed);
    let outcome = tokio::task::block_in_place(|| proxy.reload());
    assert_eq!(outcome["clusters_new"], "a,b", "{outcome}");
    get("/").await;
    assert_eq!(a.accepts(), 2);
}

/// Line and column (1-based) of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).expect("needle in text");
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    (text[..offset].matches('\n').count() + 1, offset - line_start + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_changes_nothing_and_logs_the_exact_error() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let proxy = Proxy::start(Kind::Tailcut, &two_cluster_config(a.addr, b.addr, "a", ""));
    let bad = two_cluster_config(a.addr, "127.0.0.1:1".parse().expect("addr"), "b", "")
        .replace("\"127.0.0.1:1\"", "\"127.0.0.1:99999\"");
    proxy.rewrite_config(&bad);
    let outcome = tokio::task::block_in_place(|| proxy.reload());
    assert_eq!(outcome["message"], RELOAD_FAILED, "{outcome}");
    assert_eq!(outcome["level"], "ERROR");
    let (line, column) = position(&bad, "\"127.0.0.1:99999\"");
    let path = proxy.config_path();
    assert_eq!(
        outcome["cause"],
        format!(
            "{}:{line}:{column}: upstreams.b.backends[0]: \"127.0.0.1:99999\" has no valid port (1-65535)",
            path.display()
        )
    );

    // A listener that cannot bind fails the whole reload, routes included.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let unbindable = two_cluster_config(a.addr, b.addr, "b", "")
        + &format!("\n[[listeners]]\nname = \"second\"\naddress = \"127.0.0.1:{port}\"\n");
    proxy.rewrite_config(&unbindable);
    let outcome = tokio::task::block_in_place(|| proxy.reload());
    assert_eq!(outcome["message"], RELOAD_FAILED, "{outcome}");
    let cause = outcome["cause"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with(&format!("listener second: cannot bind 127.0.0.1:{port}: ")),
        "{cause}"
    );

    // Still routed to a, still serving.
    let client = h1_client();
    let response = client.get(proxy.url("/").parse().expect("uri")).await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    body_bytes(response.into_body()).await;
    assert_eq!((a.seen().len(), b.seen().len()), (1, 0));
    let (_, text) = get_text(proxy.admin.expect("admin"), "/metrics", None).await;
    assert_eq!(
        metric(&text, "tailcut_config_reloads_total", &[("result", "failed")]),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "tailcut_config_reloads_total", &[("result", "ok")]),
        Some(0.0)
    );
}

/// `name=address` pairs of a `listeners` log field.
fn listener_addrs(field: &serde_json::Value) -> Vec<(String, SocketAddr)> {
    field
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, addr)| (name.to_owned(), addr.parse().expect("listener address")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_kept_added_and_removed_and_removed_ones_drain() {
    let upstream = Upstream::start().await;
    let listeners = |names: &[&str]| -> String {
        names
            .iter()
            .map(|name| format!("[[listeners]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\n\n"))
            .collect()
    };
    let rest = format!(
        "[[routes]]\nname = \"all\"\nupstream = \"app\"\n\n[upstreams.app]\nbackends = [\"{}\"]\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n",
        upstream.addr
    );
    let proxy = Proxy::start(Kind::Tailcut, &(listeners(&["kept", "gone"]) + &rest));
    let started = proxy
        .wait_for_log(|l| l["message"] == "tailcut started")
        .expect("start-up line");
    let before = listener_addrs(&started["listeners"]);
    let (kept, gone) = (before[0].1, before[1].1);

    // A slow request in flight on the listener about to be removed.
    let slow = tokio::spawn(raw_exchange(
        gone,
        b"GET /delay/800 HTTP/1.1\r\nHost: slow\r\nConnection: close\r\n\r\n",
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;

    proxy.rewrite_config(&(listeners(&["kept", "added"]) + &rest));
    let outcome = tokio::task::block_in_place(|| proxy.reload());
    assert_eq!(outcome["message"], RELOADED, "{outcome}");
    assert_eq!(outcome["listeners_added"], "added");
    assert_eq!(outcome["listeners_removed"], "gone");
    let after = listener_addrs(&outcome["listeners"]);
    assert_eq!(
        after[0],
        ("kept".to_owned(), kept),
        "the kept listener changed its socket"
    );
    let added = after[1].1;

    // The request in flight on the removed listener finishes.
    let response = slow.await.expect("slow request");
    assert_eq!(status_of(&response), Some(200), "{response:?}");
    assert!(response.ends_with("slow"));
    // The removed listener's socket is closed; the others serve.
    let refused = tokio::net::TcpStream::connect(gone).await;
    assert!(refused.is_err(), "the removed listener still accepts");
    for addr in [kept, added] {
        let response = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status_of(&response), Some(200), "{addr}: {response:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_config_a_changed_file_is_reloaded_without_a_signal() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let config = two_cluster_config(a.addr, b.addr, "a", "");
    let proxy = Proxy::start_with(Kind::Tailcut, &config, &["--watch-config"]);
    // Rewriting the same bytes is not a change.
    proxy.rewrite_config(&config);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(proxy.reload_outcomes().is_empty(), "{:?}", proxy.reload_outcomes());

    proxy.rewrite_config(&two_cluster_config(a.addr, b.addr, "b", ""));
    let outcome = tokio::task::block_in_place(|| proxy.next_reload_outcome(0));
    assert_eq!(outcome["message"], RELOADED, "{outcome}");
    assert_eq!(outcome["trigger"], "file changed");
    let response = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&response), Some(200));
    assert_eq!((a.seen().len(), b.seen().len()), (0, 1));
}
