//! A client's deadline (`grpc-timeout`, `x-request-timeout`): told to the
//! backend as the time that remains, enforced on the response, and a
//! passed or malformed one answered before any backend is asked.

use std::time::Duration;

use crate::support::raw_backend::{write, Act, RawBackend, OK};
use crate::support::{config, get_text, metric, raw_exchange, status_of, Kind, Proxy};

fn get_with(field: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: a\r\n{field}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_or_malformed_deadline_never_reaches_the_backend() {
    let backend = RawBackend::start(|_| vec![write(OK)]).await;
    let proxy = Proxy::start(Kind::Tailcut, &config(&[backend.addr], ""));
    let passed = raw_exchange(proxy.addr, &get_with("grpc-timeout: 0m")).await;
    assert_eq!(status_of(&passed), Some(504), "{passed}");
    assert!(passed.contains("deadline had passed"), "{passed}");
    for malformed in [
        "grpc-timeout: 123456789m",
        "grpc-timeout: 1.5S",
        "x-request-timeout: soon",
    ] {
        let answer = raw_exchange(proxy.addr, &get_with(malformed)).await;
        assert_eq!(status_of(&answer), Some(400), "{malformed}: {answer}");
    }
    assert!(backend.requests().is_empty(), "no request reached the backend");
    let (_, exposition) = get_text(proxy.admin.expect("admin listener"), "/metrics", None).await;
    let exceeded = metric(&exposition, "tailcut_deadline_exceeded_total", &[("route", "all")]);
    assert_eq!(exceeded, Some(1.0), "{exposition}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_is_told_the_time_remaining_and_the_deadline_holds() {
    let slow = RawBackend::start(|_| vec![Act::Pause(Duration::from_secs(5)), write(OK)]).await;
    let proxy = Proxy::start(Kind::Tailcut, &config(&[slow.addr], ""));
    // The response-header timeout is 30 s; the client's 200 ms wins.
    let answer = raw_exchange(proxy.addr, &get_with("grpc-timeout: 200m")).await;
    assert_eq!(status_of(&answer), Some(504), "{answer}");
    let seen = slow.requests();
    let forwarded = seen[0].header("grpc-timeout");
    let value = forwarded.first().expect("grpc-timeout forwarded");
    let (digits, unit) = value.split_at(value.len() - 1);
    let remaining = match unit {
        "u" => Duration::from_micros(digits.parse().expect("digits")),
        "m" => Duration::from_millis(digits.parse().expect("digits")),
        other => panic!("unit {other:?} in {value:?}"),
    };
    assert!(
        remaining <= Duration::from_millis(200) && remaining > Duration::ZERO,
        "{value}"
    );

    let fast = RawBackend::start(|_| vec![write(OK)]).await;
    let proxy = Proxy::start(Kind::Tailcut, &config(&[fast.addr], ""));
    let answer = raw_exchange(proxy.addr, &get_with("x-request-timeout: 2s")).await;
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    let forwarded = fast.requests()[0].header("x-request-timeout");
    let millis: u64 = forwarded[0]
        .strip_suffix("ms")
        .expect("in ms")
        .parse()
        .expect("a number");
    assert!(millis <= 2000 && millis > 0, "{forwarded:?}");
}
