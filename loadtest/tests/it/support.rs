//! Backends for the tests, each on its own runtime thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tailcut_load::backend::{self, BackendConfig, Delay};
use tailcut_load::result::Thresholds;
use tailcut_load::run::{Progress, RunConfig};
use tailcut_load::schedule::Arrivals;

/// Held by tests whose assertions depend on timing and by tests that keep
/// every core busy (the compare run, Chromium), so that the two never
/// overlap: a generator starved of CPU reports latency that is its own, not
/// the target's, and a timing assertion would fail for that reason alone.
pub fn exclusive_cpu() -> std::sync::MutexGuard<'static, ()> {
    static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CPU.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts `tailcut-load`'s own backend on a background thread.
pub fn backend(status: u16, delay: &str) -> SocketAddr {
    let config = BackendConfig {
        size: 12,
        status: http::StatusCode::from_u16(status).expect("status"),
        delay: delay.parse::<Delay>().expect("delay"),
        window: None,
        share: 1.0,
        capacity: None,
    };
    serve_on_thread(move |listener| backend::serve(listener, Arc::new(config)))
}

/// A backend that answers at once, except that every request arriving in
/// `[freeze_at, freeze_at + length)` after the first request waits until
/// the freeze ends: a target that stops for `length`.
pub fn freezing_backend(freeze_at: Duration, length: Duration) -> SocketAddr {
    serve_on_thread(move |listener| async move {
        let first = Arc::new(std::sync::OnceLock::<Instant>::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let first = first.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let first = *first.get_or_init(Instant::now);
                    async move {
                        let (from, until) = (first + freeze_at, first + freeze_at + length);
                        let now = Instant::now();
                        if now >= from && now < until {
                            tokio::time::sleep_until(until.into()).await;
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn serve_on_thread<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send addr");
            serve(listener).await;
        });
    });
    rx.recv().expect("backend address")
}

/// A port with nothing listening.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A backend that closes keep-alive connections idle for more than `idle`
/// (as tailcut, nginx and most servers do).
pub fn idle_closing_backend(idle: Duration) -> SocketAddr {
    serve_on_thread(move |listener| async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(idle)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A quiet uniform GET run against `addr`, with strict thresholds; tests
/// override what they are about.
pub fn run_config(addr: SocketAddr, rate: f64, duration: Duration, connections: usize) -> RunConfig {
    RunConfig {
        target: format!("http://{addr}/").parse().expect("url"),
        rate,
        duration,
        warmup: Duration::ZERO,
        connections,
        threads: 1,
        arrivals: Arrivals::Uniform,
        method: http::Method::GET,
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::new(),
        http2: false,
        streams: 1,
        timeout: Duration::from_secs(10),
        seed: 1,
        thresholds: Thresholds {
            rate_tolerance: 0.01,
            max_send_lag_us: 1_000,
            max_stall_us: 10_000,
            max_error_rate: 0.0,
        },
        progress: Progress::Quiet,
        interval_log: None,
    }
}

/// Runs the `tailcut-load` binary with `args` and waits for it.
pub fn tailcut_load(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tailcut-load"))
        .args(args)
        .output()
        .expect("run tailcut-load")
}
