//! Criterion benchmarks of the per-request pieces that run on every request:
//! route matching, header rewriting, and recording a finished request's
//! metrics (on one thread, and on two threads at once).
//!
//! `cargo bench --bench hot_path`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Version;
use std::time::{Duration, Instant};

use tailcut::config::Route;
use tailcut::headers::{self, ClientSide};
use tailcut::metrics::latency::End;
use tailcut::metrics::{Exchange, Metrics};
use tailcut::proxy::Router;

fn routes(n: usize) -> Vec<Route> {
    (0..n)
        .map(|i| Route {
            name: format!("r{i}"),
            host: Some(format!("service-{i}.example.com")),
            path_prefix: format!("/api/v{i}/"),
            upstream: "u".into(),
            max_body_bytes: None,
            upgrades: Vec::new(),
            retry: None,
            hedge: None,
            max_buffered_body: 0,
        })
        .chain(std::iter::once(Route {
            name: "fallback".into(),
            host: None,
            path_prefix: "/".into(),
            upstream: "u".into(),
            max_body_bytes: None,
            upgrades: Vec::new(),
            retry: None,
            hedge: None,
            max_buffered_body: 0,
        }))
        .collect()
}

fn route_match(c: &mut Criterion) {
    let router = Router::new(&routes(10), &[], Vec::new(), |_| 0);
    c.bench_function("route/first of 11", |b| {
        b.iter(|| {
            router.find(
                black_box(Some("service-0.example.com:443")),
                black_box("/api/v0/users/42"),
            )
        })
    });
    c.bench_function("route/fallback after 10 misses", |b| {
        b.iter(|| router.find(black_box(Some("www.example.com")), black_box("/index.html")))
    });
}

/// A browser-like request: 12 headers, one of them a hop-by-hop `Connection`.
///
/// Built with spare capacity, as in the proxy: hyper recycles each
/// connection's header maps, so after the first requests a map has room for
/// the headers tailcut adds. (A `clone` would be sized exactly, and the bench
/// would time the map's growth instead.)
fn browser_headers() -> HeaderMap {
    let pairs = [
        ("host", "www.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("connection", "keep-alive"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "none"),
        ("priority", "u=0, i"),
    ];
    let mut map = HeaderMap::with_capacity(32);
    for (k, v) in pairs {
        map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    map
}

fn header_rewrite(c: &mut Criterion) {
    let client = ClientSide {
        ip: HeaderValue::from_static("192.0.2.10"),
        proto: "http",
    };
    c.bench_function("headers/rewrite_request (12 headers)", |b| {
        b.iter_batched_ref(
            browser_headers,
            |map| headers::rewrite_request(map, Version::HTTP_11, None, &client, None),
            criterion::BatchSize::SmallInput,
        )
    });
    let response = || {
        let mut map = HeaderMap::with_capacity(16);
        map.insert("content-type", HeaderValue::from_static("text/html"));
        map.insert("content-length", HeaderValue::from_static("1234"));
        map.insert("date", HeaderValue::from_static("Thu, 26 Nov 2026 19:00:00 GMT"));
        map.insert("connection", HeaderValue::from_static("keep-alive"));
        map
    };
    c.bench_function("headers/rewrite_response (4 headers)", |b| {
        b.iter_batched_ref(
            response,
            |map| headers::rewrite_response(map, false),
            criterion::BatchSize::SmallInput,
        )
    });
}

/// A finished 200 with an upstream time: the common case, all four figures.
fn exchange() -> Exchange {
    Exchange {
        // Slot 1: the config's first route (slot 0 counts requests no route matched).
        route: Some(1),
        status: 200,
        end: End::Complete,
        headers: Duration::from_micros(180),
        total: Duration::from_micros(210),
        upstream: Some(Duration::from_micros(150)),
        bytes: 12,
        marks: Default::default(),
    }
}

fn metrics_record(c: &mut Criterion) {
    let toml = "[[listeners]]\nname = \"bench\"\naddress = \"127.0.0.1:0\"\n[[routes]]\nname = \"all\"\n\
                upstream = \"app\"\n[upstreams.app]\nbackends = [\"127.0.0.1:9\"]\n";
    let config = tailcut::config::parse(std::path::Path::new("bench.toml"), toml).expect("config");
    let metrics = Metrics::new(&config);
    let mut group = c.benchmark_group("metrics_record");
    group.bench_function("one thread", |b| {
        let exchange = exchange();
        b.iter(|| metrics.record(black_box(&exchange)));
    });
    // Both threads record the same route (the same counters and series):
    // the case where sharing would show. Time per call, per thread.
    group.bench_function("two threads at once", |b| {
        b.iter_custom(|iters| {
            let barrier = std::sync::Barrier::new(2);
            let worker = || {
                let exchange = exchange();
                barrier.wait();
                let started = Instant::now();
                for _ in 0..iters {
                    metrics.record(black_box(&exchange));
                }
                started.elapsed()
            };
            std::thread::scope(|scope| {
                let other = scope.spawn(worker);
                let mine = worker();
                mine.max(other.join().expect("recording thread"))
            })
        });
    });
    // Control: the same two-thread harness on work that shares nothing at
    // all (each thread records four values into a histogram it owns). If
    // this slows down as much, the slowdown is the machine's (two busy
    // vCPUs), not sharing in the recorder.
    group.bench_function("control: one thread, owned histogram", |b| {
        let mut histogram = tailcut::metrics::latency::new_histogram();
        b.iter(|| record_owned(&mut histogram));
    });
    group.bench_function("control: two threads at once, owned histograms", |b| {
        b.iter_custom(|iters| {
            let barrier = std::sync::Barrier::new(2);
            let worker = || {
                let mut histogram = tailcut::metrics::latency::new_histogram();
                barrier.wait();
                let started = Instant::now();
                for _ in 0..iters {
                    record_owned(&mut histogram);
                }
                started.elapsed()
            };
            std::thread::scope(|scope| {
                let other = scope.spawn(worker);
                let mine = worker();
                mine.max(other.join().expect("recording thread"))
            })
        });
    });
    group.finish();
}

fn record_owned(histogram: &mut hdrhistogram::Histogram<u64>) {
    for value in [180, 210, 150, 60] {
        histogram.saturating_record(black_box(value));
    }
}

criterion_group!(benches, route_match, header_rewrite, metrics_record);
criterion_main!(benches);
