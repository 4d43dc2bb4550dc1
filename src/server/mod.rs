//! Listeners, connections and shutdown.
//!
//! [`Server::bind`] opens every configured listener; [`Server::run`] accepts
//! connections until the shutdown future completes, then drains: it stops
//! accepting, lets in-flight requests finish (up to `server.drain_timeout`),
//! and closes idle keep-alive connections. Meanwhile it applies reloads of
//! the config file as they are asked for (`reload.rs`, triggered from
//! `signals.rs`). This module owns sockets and connection lifetimes; it must
//! not look inside requests (that is `proxy`).

mod call_at_once;
mod connection;
mod gated;
mod listener;
mod reload;
mod signals;
mod write_timeout;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config};
use crate::metrics::{admin, Metrics, RouteSlotsFull};
use crate::proxy::Proxy;
pub use reload::{ReloadError, Trigger};
pub use signals::{reload_signal, shutdown_signal, watch_config};

/// A listener failed to bind.
#[derive(Debug, thiserror::Error)]
#[error("listener {name}: cannot bind {address}: {source}")]
pub struct BindError {
    /// The listener's name.
    pub name: String,
    /// The address it asked for.
    pub address: SocketAddr,
    /// What the operating system said.
    #[source]
    pub source: io::Error,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener failed to bind.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The routes need more metrics slots than there are.
    #[error(transparent)]
    Metrics(#[from] RouteSlotsFull),
}

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    listeners: Vec<(config::Listener, TcpListener)>,
    admin: TcpListener,
    metrics: Metrics,
    proxy: Proxy,
}

impl Server {
    /// Binds every listener in `config`, and the admin listener.
    pub async fn bind(config: Arc<Config>) -> Result<Server, StartError> {
        let listeners = config
            .listeners
            .iter()
            .map(|l| bind_listener(l, config.server.reuse_port).map(|socket| (l.clone(), socket)))
            .collect::<Result<_, _>>()?;
        let admin = listener::bind(config.admin.address, config.server.reuse_port).map_err(|source| BindError {
            name: "admin".into(),
            address: config.admin.address,
            source,
        })?;
        let metrics = Metrics::new(&config);
        let proxy = Proxy::new(&config, metrics.clone())?;
        Ok(Server {
            config,
            listeners,
            admin,
            metrics,
            proxy,
        })
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.address)
    }

    /// The bound address of each listener, by name (the real port when the
    /// config asked for port 0).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .map(|(l, socket)| (l.name.clone(), socket.local_addr().unwrap_or(l.address)))
            .collect()
    }

    /// Serves until `shutdown` completes, then drains and returns. Each
    /// message on `reloads` re-reads the config file and applies it (see
    /// `reload.rs`); when every sender is gone, reloads stop.
    pub async fn run(self, shutdown: impl Future<Output = ()>, mut reloads: mpsc::Receiver<Trigger>) {
        let mut config = self.config.clone();
        let (addrs, admin_addr) = (self.local_addrs(), self.admin_addr());
        let metrics = self.metrics;
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(admin::serve(self.admin, metrics.clone(), admin_stop.clone()));

        let shared = Arc::new(connection::Shared {
            settings: ArcSwap::from_pointee(settings(&config)),
            proxy: self.proxy,
            metrics: metrics.clone(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let mut listeners = listener::Listeners::new(shared.clone());
        for (listener, socket) in self.listeners {
            listeners.start(listener, socket);
        }
        metrics.set_ready(true);
        // Logged once ready: whoever waits for this line (a supervisor, the
        // tests) may ask /ready at once and get 200.
        log_started(&config, &addrs, admin_addr);

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(trigger) = reloads.recv() => {
                    if let Ok(applied) = reload::reload(&config, trigger, &mut listeners, &shared).await {
                        config = applied;
                    }
                }
            }
        }

        metrics.set_ready(false);
        tracing::info!(connections = shared.tasks.len(), drain_timeout = ?config.server.drain_timeout, "draining");
        shared.shutdown.cancel();
        shared.tasks.close();
        match tokio::time::timeout(config.server.drain_timeout, shared.tasks.wait()).await {
            Ok(()) => tracing::info!("drained; stopping"),
            Err(_) => tracing::warn!(left = shared.tasks.len(), "drain timeout expired; closing what is left"),
        }
        admin_stop.cancel();
        let _ = admin_task.await;
    }
}

/// The one info line at start-up: listeners, routes, upstreams, admin.
fn log_started(config: &Config, listeners: &[(String, SocketAddr)], admin: SocketAddr) {
    tracing::info!(
        listeners = %describe_listeners(listeners),
        routes = %describe_routes(config),
        upstreams = %describe(config.upstreams.iter().map(|(name, u)| format!(
            "{name}=[{}]", describe(u.backends.iter().map(ToString::to_string))
        ))),
        %admin,
        "tailcut started"
    );
}

/// `name=address,...`
fn describe_listeners(listeners: &[(String, SocketAddr)]) -> String {
    describe(listeners.iter().map(|(n, a)| format!("{n}={a}")))
}

/// `name=host/prefix->upstream,...`
fn describe_routes(config: &Config) -> String {
    describe(config.routes.iter().map(|r| {
        format!(
            "{}={}{}->{}",
            r.name,
            r.host.as_deref().unwrap_or("*"),
            r.path_prefix,
            r.upstream
        )
    }))
}

/// Binds a configured listener, naming it in the error.
fn bind_listener(l: &config::Listener, reuse_port: bool) -> Result<TcpListener, BindError> {
    listener::bind(l.address, reuse_port).map_err(|source| BindError {
        name: l.name.clone(),
        address: l.address,
        source,
    })
}

/// How connections accepted under `config` are served.
fn settings(config: &Config) -> connection::Settings {
    connection::Settings {
        http1: http1_builder(config),
        http2: http2_builder(config),
        http: auto_builder(config),
        idle_timeout: config.timeouts.idle,
        header_timeout: config.timeouts.request_header,
        client_write_timeout: config.timeouts.client_write,
    }
}

/// The HTTP/1.1 server every connection shares.
fn http1_builder(config: &Config) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        // The request-header timeout is enforced by `connection::drive`,
        // from the connection's activity, not by hyper: hyper's allocates
        // and registers a new timer for every request. Unset here, hyper
        // would default it to 30 s once it has a timer.
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // Over either limit: 431.
        .max_header_size(config.limits.max_header_bytes.get())
        .max_headers(config.limits.max_headers.get())
        // The read buffer bounds memory per connection; it must hold a head.
        .max_buf_size(config.limits.max_header_bytes.get().max(64 * 1024))
        .keep_alive(true);
    builder
}

/// The cleartext HTTP/2 server every connection shares.
fn http2_builder(config: &Config) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.limits.max_header_bytes.get()).unwrap_or(u32::MAX))
        // Sent in SETTINGS; a client opening more streams has them refused.
        .max_concurrent_streams(u32::try_from(config.limits.max_concurrent_streams.get()).unwrap_or(u32::MAX));
    builder
}

/// Both protocols behind one builder, for answering over-limit connections.
fn auto_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.request_header)
        .max_buf_size(config.limits.max_header_bytes.get())
        .max_headers(config.limits.max_headers.get())
        .keep_alive(false);
    builder.http2().timer(TokioTimer::new());
    builder
}

fn describe(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}
