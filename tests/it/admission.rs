//! Admission control against a backend with a real capacity: two requests
//! served at once, the rest waiting inside it in arrival order, as a
//! thread pool would. Without a limit every request is let through and the
//! backend's own queue grows; with one, the backend never holds more than
//! the limit, so the requests it serves never queue there, and the others
//! are refused with a 503 and `Retry-After`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{config, get_text, metric, raw_exchange, status_of, Kind, Proxy};

/// A keep-alive HTTP/1.1 backend serving `capacity` requests at once, each
/// for `service`; it counts the requests it holds (served or queued) and
/// the most it ever held.
struct CapacityBackend {
    addr: SocketAddr,
    held: Arc<AtomicUsize>,
    most_held: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl CapacityBackend {
    async fn start(capacity: usize, service: Duration) -> CapacityBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let slots = Arc::new(tokio::sync::Semaphore::new(capacity));
        let (held, most_held, served): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
        let counters = (Arc::clone(&held), Arc::clone(&most_held), Arc::clone(&served));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (slots, (held, most_held, served)) = (slots.clone(), counters.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Requests without bodies: a head ends the request.
                        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                        buffer.drain(..end);
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most_held.fetch_max(now, Ordering::SeqCst);
                        {
                            let _slot = slots.acquire().await.expect("semaphore");
                            tokio::time::sleep(service).await;
                        }
                        held.fetch_sub(1, Ordering::SeqCst);
                        served.fetch_add(1, Ordering::SeqCst);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        CapacityBackend {
            addr,
            held,
            most_held,
            served,
        }
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// `waves` waves of `n` requests sent at once, each on its own connection:
/// every answer, in full.
async fn waves(proxy: &Proxy, waves: usize, n: usize) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..waves {
        let wave: Vec<_> = (0..n)
            .map(|_| {
                let addr = proxy.addr;
                tokio::spawn(async move { raw_exchange(addr, GET).await })
            })
            .collect();
        for request in wave {
            answers.push(request.await.expect("client task"));
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_keeps_the_backends_queue_empty_and_refuses_the_rest_at_once() {
    let service = Duration::from_millis(20);

    // Without a limit: all served, and the backend holds many more
    // requests than it can serve at once: its queue is their latency.
    let backend = CapacityBackend::start(2, service).await;
    let unlimited = Proxy::start(Kind::Tailcut, &config(&[backend.addr], ""));
    let answers = waves(&unlimited, 3, 24).await;
    assert!(answers.iter().all(|a| status_of(a) == Some(200)), "all served");
    let unlimited_most = backend.most_held.load(Ordering::SeqCst);
    assert!(unlimited_most > 2, "the backend queued: held {unlimited_most}");

    // With a limit of at most 2 (its capacity) and a queue of 4.
    let backend = CapacityBackend::start(2, service).await;
    let limited = Proxy::start(
        Kind::Tailcut,
        &config(
            &[backend.addr],
            "[upstreams.app.concurrency]\nenabled = true\nmin_limit = 1\nmax_limit = 2\nmax_queue = 4\n",
        ),
    );
    let answers = waves(&limited, 3, 24).await;
    let most = backend.most_held.load(Ordering::SeqCst);
    assert!(most <= 2, "the backend never held more than the limit: {most}");
    let served = answers.iter().filter(|a| status_of(a) == Some(200)).count();
    let refused: Vec<&String> = answers.iter().filter(|a| status_of(a) == Some(503)).collect();
    assert_eq!(served + refused.len(), answers.len(), "only 200 and 503");
    assert!(
        served > 0 && !refused.is_empty(),
        "{served} served, {} refused",
        refused.len()
    );
    assert_eq!(backend.served.load(Ordering::SeqCst), served);
    assert_eq!(backend.held.load(Ordering::SeqCst), 0);
    for answer in &refused {
        assert!(
            answer.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
            "{answer}"
        );
    }

    // Each refusal counted by its reason, and the limit's state exported.
    let (_, exposition) = get_text(limited.admin.expect("admin"), "/metrics", None).await;
    let shed: f64 = ["queue_full", "queue_timeout", "overloaded", "deadline"]
        .iter()
        .map(|reason| {
            metric(
                &exposition,
                "tailcut_shed_total",
                &[("cluster", "app"), ("reason", reason)],
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(shed, refused.len() as f64, "{exposition}");
    let limit = metric(&exposition, "tailcut_concurrency_limit", &[("cluster", "app")]);
    assert!(limit.is_some_and(|l| (1.0..=2.0).contains(&l)), "{exposition}");
    let in_flight = metric(&exposition, "tailcut_concurrency_in_flight", &[("cluster", "app")]);
    assert_eq!(in_flight, Some(0.0), "every permit given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_sooner_than_the_backends_can_answer_is_refused_before_dialling() {
    let backend = CapacityBackend::start(4, Duration::from_millis(30)).await;
    let proxy = Proxy::start(
        Kind::Tailcut,
        &config(
            &[backend.addr],
            "[upstreams.app.concurrency]\nenabled = true\nsample_window = \"10ms\"\n",
        ),
    );
    // Enough answers, over more than one sample window, for the minimum
    // latency (30 ms or a little more) to be known.
    for _ in 0..25 {
        assert_eq!(status_of(&raw_exchange(proxy.addr, GET).await), Some(200));
    }
    let (_, exposition) = get_text(proxy.admin.expect("admin"), "/metrics", None).await;
    let min_rtt = metric(
        &exposition,
        "tailcut_concurrency_min_rtt_seconds",
        &[("cluster", "app")],
    );
    assert!(min_rtt.is_some_and(|m| m >= 0.030), "{exposition}");

    let before = backend.served.load(Ordering::SeqCst);
    let hurried = b"GET / HTTP/1.1\r\nHost: a\r\ngrpc-timeout: 5m\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(proxy.addr, hurried).await;
    assert_eq!(status_of(&answer), Some(503), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{answer}"
    );
    // A deadline the backend can meet goes through.
    let patient = b"GET / HTTP/1.1\r\nHost: a\r\ngrpc-timeout: 2S\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&raw_exchange(proxy.addr, patient).await), Some(200));
    assert_eq!(
        backend.served.load(Ordering::SeqCst),
        before + 1,
        "the hurried one never reached it"
    );
    let (_, exposition) = get_text(proxy.admin.expect("admin"), "/metrics", None).await;
    let shed = metric(
        &exposition,
        "tailcut_shed_total",
        &[("cluster", "app"), ("reason", "deadline")],
    );
    assert_eq!(shed, Some(1.0), "{exposition}");
}
