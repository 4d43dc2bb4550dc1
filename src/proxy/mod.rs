//! The forwarding service, in the order a request meets it:
//!
//! 1. **route**: [`route`] finds the first route matching host and path
//!    prefix, after [`prepare`] checked `Host`, the framing and the
//!    client's [`deadline`] (404, 400, 501, 504 before anything else);
//! 2. **rewrite**: [`crate::headers`] drops hop-by-hop fields and adds
//!    `X-Forwarded-*` and `Via`;
//! 3. **admit and pick**: the cluster's admission control
//!    ([`crate::admission`], where enabled) lets the request go, makes it
//!    wait, or refuses it (503); then the route's [`Cluster`] chooses a
//!    backend by its load;
//! 4. **send**: the head is encoded at once and the exchange made
//!    ([`crate::upstream::exchange`]), or for an upgrade a tunnel
//!    ([`upgrade`]); on a route with a retry or hedge policy, a request
//!    that may be sent twice is kept ([`replay`]) and sent again after a
//!    failure ([`retry`]) or while slow ([`hedge`]);
//! 5. **respond**: [`respond`]'s future counts the outcome and hands the
//!    response over, its body streamed by [`ProxyBody`]; every failure is a
//!    [`ProxyError`], turned into a response in `error.rs` alone.
//!
//! [`Proxy`] holds what every connection shares (routes, upstream clusters
//! and their pools, timeouts), swapped whole when the config is reloaded or
//! a cluster's names resolve to new addresses ([`resolve`]);
//! [`ProxyService`] is its per-connection tower `Service`. Bodies stream
//! through frame by frame in both directions; this module never collects a
//! body.

mod body;
mod deadline;
mod error;
mod hedge;
mod prepare;
mod replay;
mod resolve;
mod respond;
mod retry;
mod route;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

pub use body::{BodyError, ProxyBody};
pub use error::{Fault, ProxyError};
use prepare::{Prepared, Upgrade};
pub use replay::Policy;
pub use respond::Forward;
use respond::Stage;
pub use route::{Route, Router};

use crate::config::{Config, Timeouts};
use crate::headers::ClientSide;
use crate::metrics::{Metrics, RouteSlotsFull};
use crate::upstream::metrics::BackendMetrics;
use crate::upstream::{health, Cluster};

/// Everything the forwarding path shares across connections: the routes and
/// clusters of the current configuration, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Proxy {
    current: Arc<ArcSwap<Shared>>,
    metrics: Metrics,
    /// Held while a new configuration is built from the current one and
    /// stored (a reload, a cluster rebuilt with newly resolved addresses),
    /// so that neither stores over what the other just stored.
    swapping: Arc<std::sync::Mutex<()>>,
}

/// What one configuration builds. A request loads the current one when it
/// starts and keeps it to the end, so a reload never changes a request
/// half-way.
#[derive(Debug)]
struct Shared {
    router: Arc<Router>,
    clusters: Vec<Arc<Cluster>>,
    timeouts: Timeouts,
}

/// What a reload did to the upstream clusters.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Clusters whose definition did not change: their pools, with the
    /// connections in them, carried over.
    pub kept: Vec<String>,
    /// Clusters that are new or changed, with new, empty pools.
    pub built: Vec<String>,
}

impl Proxy {
    /// Builds routes and upstream clusters (with empty pools) from `config`;
    /// requests and upstream failures are counted in `metrics`.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, RouteSlotsFull> {
        let (shared, reloaded) = Shared::build(config, &metrics, &[])?;
        let current = Arc::new(ArcSwap::from_pointee(shared));
        let clusters = current.clone();
        metrics.collect_backends(Box::new(BackendMetrics::new(Box::new(move || {
            clusters.load().clusters.clone()
        }))));
        let proxy = Self {
            current,
            metrics,
            swapping: Arc::default(),
        };
        proxy.resolve_names(config, &reloaded.built);
        Ok(proxy)
    }

    /// Starts resolving the names among the backends of each of `built`
    /// (clusters just built), when there is a runtime to run on (there
    /// always is in the server; a unit test building a proxy outside one
    /// gets none).
    fn resolve_names(&self, config: &Config, built: &[String]) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for name in built {
            let has_names = config
                .upstreams
                .get(name)
                .is_some_and(|u| u.backends.iter().any(|b| b.ip().is_none()));
            if has_names {
                runtime.spawn(resolve::watch(
                    self.current.clone(),
                    self.swapping.clone(),
                    self.metrics.clone(),
                    name.clone(),
                ));
            }
        }
    }

    /// Switches to `config`'s routes, clusters and timeouts for every request
    /// that starts from now on; requests in flight finish on the ones they
    /// started with. Clusters defined as before keep their pools.
    pub fn reload(&self, config: &Config) -> Result<Reloaded, RouteSlotsFull> {
        let swapping = self.swapping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = self.current.load();
        let (shared, reloaded) = Shared::build(config, &self.metrics, &previous.clusters)?;
        self.current.store(Arc::new(shared));
        drop(swapping);
        self.resolve_names(config, &reloaded.built);
        Ok(reloaded)
    }

    /// The service for one client connection from `peer`, reached over `proto`
    /// (`http` or `https`); WebSocket tunnels it upgrades into run in `tunnels`.
    pub fn service_for(&self, peer: SocketAddr, proto: &'static str, tunnels: Tunnels) -> ProxyService {
        // Computed once per connection, not per request.
        let ip = HeaderValue::from_str(&peer.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ProxyService {
            current: self.current.clone(),
            connection: Arc::new(Connection {
                client: ClientSide { ip, proto },
                tunnels,
            }),
        }
    }
}

/// Where the WebSocket tunnels of one client connection run. A tunnel
/// outlives the HTTP connection it came from, yet it is still that client's
/// connection: it runs in the server's task tracker, so a drain waits for it,
/// and it keeps `hold` (the connection's place under its listener's limit,
/// and its count as an active connection) until it closes.
#[derive(Clone)]
pub struct Tunnels {
    tasks: tokio_util::task::TaskTracker,
    hold: Arc<dyn std::any::Any + Send + Sync>,
}

impl Tunnels {
    /// Tunnels spawned in `tasks`, each keeping `hold` alive.
    pub fn new(tasks: tokio_util::task::TaskTracker, hold: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        Tunnels { tasks, hold }
    }
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnels").finish_non_exhaustive()
    }
}

/// What one client connection's requests share.
#[derive(Debug)]
struct Connection {
    client: ClientSide,
    tunnels: Tunnels,
}

impl Shared {
    /// The routes and clusters of `config`, reusing each of `previous`'s
    /// clusters whose definition is unchanged.
    fn build(
        config: &Config,
        metrics: &Metrics,
        previous: &[Arc<Cluster>],
    ) -> Result<(Self, Reloaded), RouteSlotsFull> {
        let mut reloaded = Reloaded::default();
        let clusters: Vec<Arc<Cluster>> = config
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                match previous
                    .iter()
                    .find(|c| c.name == *name && c.is_defined_as(upstream, &config.timeouts))
                {
                    Some(same) => {
                        reloaded.kept.push(name.clone());
                        same.clone()
                    }
                    None => {
                        reloaded.built.push(name.clone());
                        let replaced = previous.iter().find(|c| c.name == *name).map(|c| &**c);
                        let cluster = Arc::new(Cluster::new(
                            name,
                            upstream,
                            &config.timeouts,
                            metrics.cluster(name),
                            replaced,
                            &resolve::initial_endpoints(upstream, replaced),
                        ));
                        if let Some(checks) = &upstream.health {
                            health::watch(&cluster, checks);
                        }
                        cluster
                    }
                }
            })
            .collect();
        let slots = config
            .routes
            .iter()
            .map(|r| metrics.route_slot_for(&r.name, &r.upstream))
            .collect::<Result<Vec<_>, _>>()?;
        let policies = config
            .routes
            .iter()
            .map(|route| replay::Policy::for_route(route, metrics.route_tail(&route.name)))
            .collect();
        let router = Router::new(&config.routes, &slots, policies, |name| {
            clusters.iter().position(|c| c.name == name).unwrap_or(0)
        });
        let shared = Shared {
            router: Arc::new(router),
            clusters,
            timeouts: config.timeouts.clone(),
        };
        Ok((shared, reloaded))
    }
}

/// The forwarding service for one client connection.
#[derive(Debug, Clone)]
pub struct ProxyService {
    current: Arc<ArcSwap<Shared>>,
    connection: Arc<Connection>,
}

impl tower::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = tracing::instrument::Instrumented<Forward>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Routes the request, rewrites its head and encodes it for the
    /// backend, here, synchronously: the future returned only exchanges it.
    ///
    /// The client's request head refers to hyper's read buffer, and hyper
    /// reads ahead on the connection before it first polls this future (to
    /// notice a client that leaves). Were the head still alive then, hyper
    /// would have to allocate a new read buffer for every request; encoded
    /// and dropped here, it leaves hyper the one it has. (This relies on the
    /// server calling the service as soon as the request arrives; see
    /// `server::CallAtOnce`.)
    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let shared = self.current.load_full();
        let span = tracing::debug_span!("request", method = %request.method(), path = %request.uri().path());
        let head = request.method() == Method::HEAD;
        let mut route = None;
        let prepared = shared.prepare(&self.connection, request, &mut route);
        let stage = Stage::new(prepared, shared, &self.connection, route);
        Forward { stage, head }.instrument(span)
    }
}

impl Stage {
    /// The stage a prepared request starts in (`route`: its metrics slot).
    fn new(
        prepared: Result<Prepared, ProxyError>,
        shared: Arc<Shared>,
        connection: &Arc<Connection>,
        route: Option<usize>,
    ) -> Stage {
        match prepared {
            Ok(Prepared::Pooled(exchange)) => Stage::Pooled {
                exchange,
                shared,
                route,
            },
            // Upgrades are rare: boxed, their state does not enlarge every
            // request's future.
            Ok(Prepared::Upgrade(upgrade)) => {
                let connection = connection.clone();
                Stage::Upgrade {
                    tunnel: Box::pin(async move {
                        let cluster = &shared.clusters[upgrade.cluster];
                        let backend = cluster.backend(upgrade.backend);
                        let (cluster_index, backend_index) = (upgrade.cluster, upgrade.backend);
                        let outcome = upgrade::tunnel(cluster, backend, upgrade, &connection.tunnels).await;
                        shared.outcome(cluster_index, backend_index, outcome)
                    }),
                    route,
                }
            }
            // Kept to be sent again if need be: boxed, as upgrades are.
            Ok(Prepared::Replay(replay)) => Stage::Replayed {
                attempts: Box::pin(retry::run(shared, replay)),
                route,
            },
            // Waiting for admission, then the stage it would have started
            // in had it been admitted at once.
            Ok(Prepared::Queued(queued)) => {
                let connection = connection.clone();
                Stage::Queued {
                    next: Box::pin(async move {
                        let prepared = queued.granted(&shared, &connection).await;
                        Stage::new(prepared, shared, &connection, route)
                    }),
                }
            }
            Err(error) => Stage::Failed {
                error: Some(error),
                route,
            },
        }
    }
}
