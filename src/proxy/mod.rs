//! The forwarding service: route, rewrite headers, send upstream, stream back.
//!
//! [`Proxy`] holds what every connection shares (routes, upstream clusters
//! and their pools, timeouts), swapped whole when the config is reloaded;
//! [`ProxyService`] is its per-connection tower `Service`. Bodies stream
//! through frame by frame in both directions: the client's as hyper's
//! `Incoming`, the backend's as `Bytes` cut from the read buffer of
//! `http1`'s connection; this module never collects a body. Every failure is
//! a [`ProxyError`], turned into a response in `error.rs` alone.

mod body;
mod error;
mod resolve;
mod route;
mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use arc_swap::ArcSwap;
use http::header::{HeaderMap, HeaderValue, HOST, TRANSFER_ENCODING};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;
use tracing::Instrument;

pub use body::{BodyError, ProxyBody};
pub use error::{Fault, ProxyError};
pub use route::{Route, Router};

use crate::balance::InFlight;
use crate::config::{Config, Timeouts};
use crate::headers::{self, ClientSide};
use crate::metrics::{Metrics, RouteSlotsFull};
use crate::upstream::h1::EncodedRequest;
use crate::upstream::metrics::BackendMetrics;
use crate::upstream::{health, Cluster, Exchange, UpstreamError};

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
                    config.dns.clone(),
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
        let router = Router::new(&config.routes, &slots, |name| {
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
        let stage = match shared.prepare(&self.connection, request, &mut route) {
            Ok(Prepared::Pooled(exchange)) => Stage::Pooled {
                exchange,
                shared,
                route,
            },
            // Upgrades are rare: boxed, their state does not enlarge every
            // request's future.
            Ok(Prepared::Upgrade(upgrade)) => {
                let connection = self.connection.clone();
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
            Err(error) => Stage::Failed {
                error: Some(error),
                route,
            },
        };
        Forward { stage, head }.instrument(span)
    }
}

/// A request made ready for its backend by [`Shared::prepare`].
enum Prepared {
    /// For a pooled connection, with its exchange made (not yet started).
    Pooled(Pooled),
    /// A protocol upgrade, for hyper's client on a connection of its own.
    Upgrade(Upgrade),
}

/// An exchange on a pooled connection, and what its outcome is read with.
struct Pooled {
    send: SendFuture,
    cluster: usize,
    backend: usize,
    /// The whole-request deadline, if one is configured.
    deadline: Option<Instant>,
    /// When the exchange was made.
    sent: std::time::Instant,
}

struct Upgrade {
    cluster: usize,
    backend: usize,
    request: Box<Request<Incoming>>,
    client_side: OnUpgrade,
    /// The protocols offered to the backend (the `Upgrade` value sent).
    offered: HeaderValue,
    header_timeout: std::time::Duration,
    /// Counted in flight to the backend until its answer.
    in_flight: InFlight,
}

/// A pooled exchange: the response head and the exchange streaming its body.
type SendFuture = Pin<Box<dyn Future<Output = Result<(Response<()>, Exchange), UpstreamError>> + Send>>;

/// The response future of [`ProxyService`]: the exchange with the backend,
/// or the error that stopped the request before one.
pub struct Forward {
    stage: Stage,
    /// The request was HEAD: an error's response goes without its text
    /// (an HTTP/2 client resets a stream whose answer to HEAD has data).
    head: bool,
}

enum Stage {
    /// On a pooled connection.
    Pooled {
        exchange: Pooled,
        shared: Arc<Shared>,
        route: Option<usize>,
    },
    /// Tunnelling a protocol upgrade.
    Upgrade {
        tunnel: Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>,
        route: Option<usize>,
    },
    /// Refused before reaching a backend.
    Failed {
        error: Option<ProxyError>,
        route: Option<usize>,
    },
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = match self.stage {
            Stage::Pooled { .. } => "pooled",
            Stage::Upgrade { .. } => "upgrade",
            Stage::Failed { .. } => "failed",
        };
        f.debug_tuple("Forward").field(&stage).finish()
    }
}

impl Future for Forward {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the futures are boxed).
        let this = self.get_mut();
        let (result, route) = match &mut this.stage {
            Stage::Pooled {
                exchange,
                shared,
                route,
            } => {
                let outcome = ready!(exchange.send.as_mut().poll(cx)).map(|(response, upstream)| {
                    let (mut parts, ()) = response.into_parts();
                    headers::rewrite_response(&mut parts.headers, false);
                    let body = ProxyBody::upstream(upstream, exchange.deadline, exchange.sent);
                    Response::from_parts(parts, body)
                });
                (shared.outcome(exchange.cluster, exchange.backend, outcome), *route)
            }
            Stage::Upgrade { tunnel, route } => (ready!(tunnel.as_mut().poll(cx)), *route),
            Stage::Failed { error, route } => match error.take() {
                Some(error) => (Err(error), *route),
                // Polled again after completing: there is nothing more.
                None => return Poll::Pending,
            },
        };
        let mut response = result.unwrap_or_else(|error| {
            let mut response = error.into_response();
            if this.head {
                *response.body_mut() = ProxyBody::empty();
            }
            response
        });
        response.body_mut().set_route(route);
        tracing::debug!(status = response.status().as_u16(), "response headers");
        Poll::Ready(Ok(response))
    }
}

impl Shared {
    /// Routes `request`, rewrites its head for the backend and encodes it,
    /// then makes the exchange with the backend (not started: it is a
    /// future). `route_slot` gets the route's metrics slot once routed.
    fn prepare(
        &self,
        connection: &Connection,
        request: Request<Incoming>,
        route_slot: &mut Option<usize>,
    ) -> Result<Prepared, ProxyError> {
        let (mut parts, body) = request.into_parts();
        // Only a body of unknown length can have come with a coding: a GET
        // pays nothing for the look-up.
        let unknown_length =
            !http_body::Body::is_end_stream(&body) && http_body::Body::size_hint(&body).exact().is_none();
        if unknown_length && parts.headers.contains_key(TRANSFER_ENCODING) {
            only_chunked(&parts.headers)?;
        }
        // The whole-request deadline, when one is configured (the clock is
        // read only then).
        let deadline = self.timeouts.request.map(|limit| Instant::now() + limit);
        let (route, has_host) = self.route(&parts)?;
        *route_slot = Some(route.metrics_slot);
        if let Some(limit) = route.max_body_bytes {
            // Known up front: refuse without reading the body or calling the backend.
            if http_body::Body::size_hint(&body).lower() > limit {
                return Err(ProxyError::PayloadTooLarge { limit });
            }
        }
        let cluster_index = route.upstream;
        let cluster = &self.clusters[cluster_index];
        let picked = cluster.pick().ok_or_else(|| ProxyError::NoBackend {
            upstream: cluster.name.clone(),
        })?;
        let backend_index = picked.index;
        let backend = cluster.backend(backend_index);

        let upgrade = match parts.version {
            Version::HTTP_11 => headers::upgrade_protocol(&parts.headers, &route.upgrades),
            _ => None,
        };
        let added = headers::rewrite_request(
            &mut parts.headers,
            parts.version,
            parts.uri.authority(),
            &connection.client,
            upgrade.clone(),
        );
        parts.version = Version::HTTP_11;
        let path_and_query = std::mem::take(&mut parts.uri).into_parts().path_and_query;
        parts.uri = path_and_query.map_or_else(|| http::Uri::from_static("/"), http::Uri::from);
        if !has_host {
            // An HTTP/1.0 client may send no Host; the backend's HTTP/1.1 needs one.
            parts.headers.insert(HOST, backend.host_header());
        }
        let header_timeout = match self.timeouts.request {
            Some(limit) => self.timeouts.upstream_response_header.min(limit),
            None => self.timeouts.upstream_response_header,
        };

        if let Some(offered) = upgrade {
            if let Some(client_side) = parts.extensions.remove::<OnUpgrade>() {
                // hyper's client sends it: the added fields go into the map.
                added.insert_into(&mut parts.headers);
                return Ok(Prepared::Upgrade(Upgrade {
                    cluster: cluster_index,
                    backend: backend_index,
                    request: Box::new(Request::from_parts(parts, body)),
                    client_side,
                    offered,
                    header_timeout,
                    in_flight: picked.in_flight,
                }));
            }
        }

        let has_body = !http_body::Body::is_end_stream(&body);
        let request = EncodedRequest::new(&parts, added, has_body, backend.head_buffer())
            .map_err(|err| self.failed(cluster_index, backend_index, err.into()))?;
        // The head is encoded: its values (slices of hyper's read buffer) go,
        // and the emptied map will hold the response's.
        let mut headers = parts.headers;
        headers.clear();
        let sent = std::time::Instant::now();
        Ok(Prepared::Pooled(Pooled {
            send: Box::pin(backend.send(
                request,
                headers,
                body,
                sent,
                header_timeout,
                route.max_body_bytes,
                picked.in_flight,
            )),
            cluster: cluster_index,
            backend: backend_index,
            deadline,
            sent,
        }))
    }

    /// The route for a request, and whether it names its host (in `Host`
    /// or in its target); a 400 if its `Host` fields are not as RFC 9112
    /// section 3.2 asks, a 404 if no route matches.
    fn route(&self, parts: &http::request::Parts) -> Result<(&route::Route, bool), ProxyError> {
        // An HTTP/1.1 request must carry exactly one Host. hyper lets both
        // faults through, so they are checked here.
        let mut hosts = parts.headers.get_all(HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() || (host_header.is_none() && parts.version == Version::HTTP_11) {
            return Err(ProxyError::BadRequest("HTTP/1.1 request needs exactly one Host header"));
        }
        // Neither is routed by nor forwarded unless it is a host and port
        // (no user information, path or stray characters).
        if host_header.is_some_and(|value| !headers::valid_host(value.as_bytes())) {
            return Err(ProxyError::BadRequest("Host is not a host and port"));
        }
        if parts
            .uri
            .authority()
            .is_some_and(|authority| !headers::valid_host(authority.as_str().as_bytes()))
        {
            return Err(ProxyError::BadRequest(
                "the request target's authority is not a host and port",
            ));
        }
        // The target's authority, when it has one, wins over Host (RFC 9112 section 3.2.2).
        let host = match (parts.uri.authority(), host_header) {
            (Some(authority), _) => Some(authority.as_str()),
            (None, Some(value)) => Some(
                value
                    .to_str()
                    .map_err(|_| ProxyError::BadRequest("Host is not ASCII"))?,
            ),
            (None, None) => None,
        };
        let route = self
            .router
            .find(host, parts.uri.path())
            .ok_or_else(|| ProxyError::NoRoute {
                host: host.map(str::to_owned),
                path: parts.uri.path().to_owned(),
            })?;
        Ok((route, host.is_some()))
    }

    /// Counts how an exchange with backend `backend_index` of cluster
    /// `cluster_index` ended, by the status its client gets, and maps a
    /// failure to that status (the cluster counts connect failures and
    /// timeouts too).
    fn outcome<B>(
        &self,
        cluster_index: usize,
        backend_index: usize,
        outcome: Result<Response<B>, UpstreamError>,
    ) -> Result<Response<B>, ProxyError> {
        match outcome {
            Ok(response) => {
                let backend = self.clusters[cluster_index].backend(backend_index);
                backend.count(response.status());
                Ok(response)
            }
            Err(err) => Err(self.failed(cluster_index, backend_index, err)),
        }
    }

    /// The failure half of [`Shared::outcome`].
    fn failed(&self, cluster_index: usize, backend_index: usize, err: UpstreamError) -> ProxyError {
        let cluster = &self.clusters[cluster_index];
        let backend = cluster.backend(backend_index);
        cluster.count_error(&err);
        let error = ProxyError::from_upstream(&cluster.name, backend.addr, err);
        backend.count(error.status());
        error
    }
}

/// A request's `Transfer-Encoding` must be `chunked` alone: hyper decodes
/// only that coding, and would pass a body still coded otherwise (`gzip,
/// chunked`) to the backend with its coding dropped along with the field.
/// 501, as nginx answers (RFC 9112 section 6.1).
fn only_chunked(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().flat_map(headers::tokens);
    match (codings.next(), codings.next()) {
        (Some(coding), None) if coding.eq_ignore_ascii_case("chunked") => Ok(()),
        _ => Err(ProxyError::NotImplemented("only chunked is accepted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunked_alone_is_accepted_as_a_transfer_coding() {
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(TRANSFER_ENCODING, HeaderValue::from_str(value).expect("value"));
            }
            only_chunked(&headers).is_ok()
        };
        assert!(with(&["chunked"]) && with(&["Chunked"]));
        for refused in [
            &["identity, chunked"][..],
            &["gzip, chunked"],
            &["chunked", "chunked"],
            &["xchunked"],
            &[""],
        ] {
            assert!(!with(refused), "{refused:?}");
        }
    }
}
