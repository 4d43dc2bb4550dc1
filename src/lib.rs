//! tailcut: an HTTP reverse proxy built to keep p99 and p99.9 latency low and predictable.
//!
//! # Layout
//!
//! The modules follow a request from the socket to the backend and back:
//!
//! - [`cli`]: command-line definitions (clap); nothing else.
//! - [`config`]: TOML on disk -> validated, typed, immutable [`config::Config`].
//!   Every error names file, line, column and key. [`config::tls`] loads
//!   certificates into rustls configurations, for listeners and upstreams.
//! - [`server`]: binds listeners, accepts connections (with a per-listener
//!   limit), terminates TLS where configured, serves HTTP/1.1 and HTTP/2 on
//!   each, closes idle connections, reloads the config on SIGHUP and drains
//!   on shutdown.
//! - [`middleware`]: tower layers that wrap the forwarding service; the stack
//!   is composed once, in [`middleware::stack`].
//! - [`proxy`]: the forwarding service, as its phases: route, rewrite, pick
//!   a backend, send, respond; WebSocket tunnels; and the one place where
//!   errors become HTTP statuses.
//! - [`headers`]: header hygiene (hop-by-hop fields, `X-Forwarded-*`,
//!   `Via`, trailers), pure functions shared by both sides.
//! - [`admission`]: whether a request may go to its cluster now, wait in
//!   a short queue, or be refused at once: an adaptive concurrency limit
//!   per cluster, CoDel's test for a standing queue, and adaptive LIFO.
//! - [`upstream`]: clusters of backends with their load, one exchange on
//!   one pooled connection, the pool, connecting (TCP, TLS), the lean
//!   HTTP/1.1 client codec (see `upstream/h1`), typed upstream errors, and
//!   active health checks.
//! - [`balance`]: choosing a backend within an upstream cluster by its load
//!   (requests in flight, peak-EWMA latency estimate), among those passive
//!   outlier ejection and active health checks leave in rotation.
//! - [`metrics`]: counters and latency histograms recorded without a lock on
//!   the request path, the access log, and the admin listener that serves
//!   `/metrics`, `/latency`, `/live` and `/ready`.
//!
//! A request's path: `server` accepts a connection and hands each request to
//! the `middleware` stack as soon as hyper has read it; the stack's innermost
//! service is [`proxy::Proxy`]'s. At once, the proxy picks a route, asks
//! the cluster's `admission` (where configured), picks a backend through
//! `balance`, rewrites the headers and encodes the request
//! for the backend; the request's future then sends it on a pooled
//! connection (`upstream::exchange`) and streams the response body back
//! frame by frame, without collecting or copying it.

pub mod admission;
pub mod balance;
pub mod cli;
pub mod config;
pub mod headers;
pub mod metrics;
pub mod middleware;
pub mod proxy;
pub mod server;
pub mod upstream;
