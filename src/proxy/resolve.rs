//! Backends given by DNS name: a task per cluster that has them resolves
//! the names at once, then again every `resolve_every` or when the records'
//! TTL runs out, whichever comes first. When the addresses change, the
//! cluster is rebuilt with the new set and swapped into the current
//! configuration, as a reload would: backends that remain keep their pools,
//! latency estimates, ejections and counts; those that went stop getting
//! requests, and their pools close once their last requests end. A failed
//! resolution keeps the last good set, is logged and counted, and is tried
//! again within 5 s.
//!
//! The task ends when a reload replaces the cluster's definition (the
//! reload starts a task for the new one).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::Shared;
use crate::config::{BackendAddr, Upstream};
use crate::metrics::Metrics;
use crate::upstream::cluster::Endpoint;
use crate::upstream::dns::Resolver;
use crate::upstream::{health, Cluster};

/// How soon a failed resolution is tried again, at most.
const RETRY_FAILED: Duration = Duration::from_secs(5);

/// The endpoints a cluster starts with: its configured addresses, and the
/// addresses its names last resolved to in `previous` (the cluster it
/// replaces), while they are resolved again.
pub(super) fn initial_endpoints(upstream: &Upstream, previous: Option<&Cluster>) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = upstream
        .backends
        .iter()
        .filter_map(|b| b.ip())
        .map(|addr| Endpoint { addr, name: None })
        .collect();
    for endpoint in previous.map_or(&[][..], Cluster::endpoints) {
        let Some(name) = &endpoint.name else { continue };
        let still = upstream.backends.iter().any(|backend| {
            matches!(backend, BackendAddr::Name { host, port } if **name == **host && *port == endpoint.addr.port())
        });
        if still && !endpoints.iter().any(|e| e.addr == endpoint.addr) {
            endpoints.push(endpoint.clone());
        }
    }
    endpoints
}

/// Resolves the names of cluster `name` of the current configuration until
/// a reload replaces the cluster (the reload starts a task for its own).
pub(super) async fn watch(current: Arc<ArcSwap<Shared>>, swapping: Arc<Mutex<()>>, metrics: Metrics, name: String) {
    // The cluster this task keeps up to date: the one of the current
    // configuration, then each one it swaps in.
    let Some(mut mine) = cluster_named(&current, &name) else {
        return;
    };
    let resolver = match Resolver::new(&mine.definition().dns) {
        Ok(resolver) => resolver,
        Err(err) => {
            tracing::error!(upstream = %name, cause = %err, "no DNS resolver: the cluster's names stay unresolved");
            return;
        }
    };
    let definition = mine.definition().clone();
    // Names that resolved to no address last time, to log each change once.
    let mut empty: Vec<String> = Vec::new();
    loop {
        let outcome = resolver.resolve(&definition.backends).await;
        if !cluster_named(&current, &name).is_some_and(|c| Arc::ptr_eq(&c, &mine)) {
            return;
        }
        let wait = match outcome {
            Ok(resolved) => {
                if resolved.empty != empty {
                    if !resolved.empty.is_empty() {
                        tracing::warn!(upstream = %name, names = ?resolved.empty, "backend names resolve to no address; asking again");
                    }
                    empty = resolved.empty.clone();
                }
                if !same_addresses(mine.endpoints(), &resolved.endpoints) {
                    tracing::info!(
                        upstream = %name,
                        backends = ?resolved.endpoints.iter().map(|e| e.addr).collect::<Vec<_>>(),
                        "backend names resolved to a new set of addresses"
                    );
                    match replace(&current, &swapping, &metrics, &mine, &resolved.endpoints) {
                        Some(new) => mine = new,
                        None => return,
                    }
                }
                resolved.valid_for.min(definition.resolve_every)
            }
            Err(err) => {
                mine.counters.resolve_failure();
                tracing::warn!(upstream = %name, cause = %err, "resolving backend names failed; keeping the last addresses");
                definition.resolve_every.min(RETRY_FAILED)
            }
        };
        // At least a second between lookups, whatever a record's TTL says.
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
    }
}

fn cluster_named(current: &ArcSwap<Shared>, name: &str) -> Option<Arc<Cluster>> {
    current.load().clusters.iter().find(|c| c.name == name).cloned()
}

/// Whether two sets of endpoints hold the same addresses, in any order.
fn same_addresses(a: &[Endpoint], b: &[Endpoint]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| y.addr == x.addr))
}

/// Swaps a cluster of `endpoints` in for `old` in the current
/// configuration, and starts its health checks; the new cluster, or `None`
/// if `old` is no longer current (a reload replaced it). `swapping` keeps a
/// reload from storing a configuration built from the one replaced here.
fn replace(
    current: &ArcSwap<Shared>,
    swapping: &Mutex<()>,
    metrics: &Metrics,
    old: &Arc<Cluster>,
    endpoints: &[Endpoint],
) -> Option<Arc<Cluster>> {
    let _swapping = swapping.lock().unwrap_or_else(PoisonError::into_inner);
    let shared = current.load();
    let index = shared.clusters.iter().position(|c| Arc::ptr_eq(c, old))?;
    let cluster = Arc::new(Cluster::new(
        &old.name,
        old.definition(),
        &shared.timeouts,
        metrics.cluster(&old.name),
        Some(old),
        endpoints,
    ));
    let mut clusters = shared.clusters.clone();
    clusters[index] = cluster.clone();
    current.store(Arc::new(Shared {
        router: shared.router.clone(),
        clusters,
        timeouts: shared.timeouts.clone(),
    }));
    if let Some(checks) = &old.definition().health {
        health::watch(&cluster, checks);
    }
    Some(cluster)
}
