//! Backends given by DNS name, against a DNS responder the test runs on
//! 127.0.0.1: every address a name resolves to is a backend; the set
//! follows the records; a failed resolution keeps the last good set and is
//! counted; a name that resolves to nothing yet gets 503, then is served.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::dns::DnsResponder;
use crate::support::raw_backend::{write, RawBackend, OK};
use crate::support::{get_text, h1_client, metric, Kind, Proxy};

/// Two backends listening on the same port of 127.0.0.1 and 127.0.0.2, as
/// two pods of one Service would.
async fn two_on_one_port() -> (RawBackend, RawBackend) {
    for _ in 0..20 {
        let Some(second) = RawBackend::start_on("127.0.0.2:0".parse().expect("addr"), |_| vec![write(OK)]).await else {
            continue;
        };
        let same_port = SocketAddr::from(([127, 0, 0, 1], second.addr.port()));
        if let Some(first) = RawBackend::start_on(same_port, |_| vec![write(OK)]).await {
            return (first, second);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// A config whose cluster is `api.test:PORT`, resolved through the name
/// server at `dns` every `every` (or sooner, at the records' TTL).
fn config_for(dns: SocketAddr, port: u16, every: &str) -> String {
    format!(
        "[[listeners]]\nname = \"test\"\naddress = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [\"api.test:{port}\"]\nresolve_every = \"{every}\"\nbalance = \"round_robin\"\n\n\
         [dns]\nnameservers = [\"{dns}\"]\n\n[admin]\naddress = \"127.0.0.1:0\"\n"
    )
}

/// A proxy of [`config_for`].
fn proxy_for(dns: &DnsResponder, port: u16, every: &str) -> Proxy {
    Proxy::start(Kind::Tailcut, &config_for(dns.addr, port, every))
}

/// Sends `n` requests one at a time; their statuses.
async fn statuses(proxy: &Proxy, n: usize) -> Vec<u16> {
    let client = h1_client();
    let mut out = Vec::new();
    for _ in 0..n {
        let response = client.get(proxy.url("/").parse().expect("uri")).await.expect("send");
        out.push(response.status().as_u16());
        crate::support::body_bytes(response.into_body()).await;
    }
    out
}

/// Sends requests until `done` says the backends' counts are as wanted
/// (10 s at most); panics with `what` otherwise.
async fn until(proxy: &Proxy, what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        statuses(proxy, 4).await;
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_follow_the_names_records_and_survive_a_failed_resolution() {
    let (first, second) = two_on_one_port().await;
    let dns = DnsResponder::start().await;
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let two = Ipv4Addr::new(127, 0, 0, 2);
    dns.set("api.test", &[one], 1);
    // Re-resolved at the records' TTL (1 s), well before `resolve_every`.
    let proxy = proxy_for(&dns, first.addr.port(), "5m");
    until(&proxy, "the first address serves", || !first.requests().is_empty()).await;
    assert!(second.requests().is_empty());

    // The record moves to the second address: requests follow it.
    dns.set("api.test", &[two], 1);
    until(&proxy, "the new address serves", || !second.requests().is_empty()).await;
    let before = first.requests().len();
    assert_eq!(statuses(&proxy, 10).await, [200; 10]);
    assert_eq!(first.requests().len(), before, "the old address gets no more requests");

    // The name server fails: the last good set stays, and the failure counts.
    dns.fail(true);
    let asked = dns.queries();
    while dns.queries() < asked + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = second.requests().len();
    assert_eq!(statuses(&proxy, 10).await, [200; 10]);
    assert_eq!(second.requests().len(), served + 10);
    let (_, exposition) = get_text(proxy.admin.expect("admin"), "/metrics", None).await;
    let failures = metric(
        &exposition,
        "tailcut_upstream_resolve_failures_total",
        &[("cluster", "app")],
    );
    assert!(failures.is_some_and(|n| n >= 1.0), "{exposition}");

    // Back, with both addresses: round-robin reaches each.
    dns.fail(false);
    dns.set("api.test", &[one, two], 1);
    let (a, b) = (first.requests().len(), second.requests().len());
    until(&proxy, "both addresses serve", || {
        first.requests().len() > a && second.requests().len() > b
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_yet_gets_503_then_is_served() {
    let backend = RawBackend::start(|_| vec![write(OK)]).await;
    let dns = DnsResponder::start().await;
    let proxy = proxy_for(&dns, backend.addr.port(), "1s");
    // Wait for the first lookups (NXDOMAIN) to have been answered.
    while dns.queries() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = statuses(&proxy, 3).await;
    assert_eq!(refused, [503; 3], "an empty cluster");
    dns.set("api.test", &[Ipv4Addr::LOCALHOST], 1);
    until(&proxy, "the name resolves and serves", || {
        !backend.requests().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_name_servers_resolves_with_the_new_ones() {
    let (first, second) = two_on_one_port().await;
    let (old, new) = (DnsResponder::start().await, DnsResponder::start().await);
    old.set("api.test", &[Ipv4Addr::new(127, 0, 0, 1)], 1);
    new.set("api.test", &[Ipv4Addr::new(127, 0, 0, 2)], 1);
    let port = first.addr.port();
    let proxy = proxy_for(&old, port, "5m");
    until(&proxy, "the old name server's address serves", || {
        !first.requests().is_empty()
    })
    .await;

    proxy.rewrite_config(&config_for(new.addr, port, "5m"));
    assert_eq!(proxy.reload()["message"], crate::support::RELOADED);
    until(&proxy, "the new name server's address serves", || {
        !second.requests().is_empty()
    })
    .await;
    let before = first.requests().len();
    assert_eq!(statuses(&proxy, 10).await, [200; 10]);
    assert_eq!(first.requests().len(), before, "the old answer is gone");
}
