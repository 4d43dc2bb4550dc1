//! Configuration: TOML on disk -> [`schema`] (serde) -> validated, immutable [`Config`].
//!
//! This module owns every rule about what a valid configuration is. Past
//! [`load`] nothing is a raw string: addresses are `SocketAddr`, times are
//! `Duration`, counts are non-zero. Every error names file, line, column and
//! key. It must not open sockets or touch the runtime.

mod concurrency;
mod error;
mod schema;
mod tail;
pub mod tls;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

pub use concurrency::{Concurrency, LimitAlgorithm};
use error::Locator;
pub use error::{ConfigError, Invalid};
pub use tail::{Budget, Hedge, HedgeDelay, Retry, RetryOn};

/// The longest duration accepted anywhere. Longer ones are surely typos, and
/// deadlines computed from them must not overflow the clock.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest count accepted anywhere (connections, headers, bytes): far above
/// any real limit, and below what tokio's semaphore can hold.
const MAX_COUNT: usize = 1 << 30;

/// The shortest latency window: samples reach it up to a second late.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// The smallest header limit hyper's HTTP/1 parser accepts: its read buffer
/// cannot be smaller than 8 KiB.
const MIN_HEADER_BYTES: usize = 8192;

/// A validated configuration. Cheap to share behind an `Arc`; never mutated.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file this configuration was read from.
    #[serde(skip)]
    pub source: PathBuf,
    /// Server-wide settings.
    pub server: Server,
    /// Timeouts, applied to every listener and upstream.
    pub timeouts: Timeouts,
    /// Limits on what a client may send.
    pub limits: Limits,
    /// Addresses to accept connections on.
    pub listeners: Vec<Listener>,
    /// Routes, tried in order; the first that matches wins.
    pub routes: Vec<Route>,
    /// Upstream clusters by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// The admin listener: metrics, latency, health.
    pub admin: Admin,
    /// The access log.
    pub access_log: AccessLog,
    /// How backends given by name are resolved.
    pub dns: Dns,
}

/// How backends given by name are resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dns {
    /// The name servers asked, over UDP then TCP; empty: the system's
    /// (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
}

/// A backend as the config names it: an address, or a DNS name and a port
/// (every address the name resolves to is a backend of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A DNS name (checked: letters, digits, hyphens and dots) and a port.
    Name {
        /// The name, without a trailing dot.
        host: String,
        /// The port.
        port: u16,
    },
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddr::Ip(addr) => write!(f, "{addr}"),
            BackendAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Serialize for BackendAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::str::FromStr for BackendAddr {
    type Err = &'static str;

    /// `10.0.0.7:8080`, `[::1]:8080` or `api.internal:8080`.
    fn from_str(text: &str) -> Result<Self, &'static str> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(BackendAddr::Ip(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or("is not HOST:PORT")?;
        let port: u16 = port.parse().map_err(|_| "has no valid port (1-65535)")?;
        if port == 0 {
            return Err("has no valid port (1-65535)");
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        // rustls' DNS-name grammar (RFC 1123 labels): no IP literal that
        // failed to parse above, no stray characters.
        let name_like = !host.is_empty() && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        match rustls::pki_types::DnsName::try_from(host) {
            Ok(_) if name_like && !host.contains(['[', ']']) => Ok(BackendAddr::Name {
                host: host.to_ascii_lowercase(),
                port,
            }),
            _ => Err("is neither an IP address and port nor a DNS name and port"),
        }
    }
}

impl BackendAddr {
    /// The address itself, for a backend given as one.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            BackendAddr::Ip(addr) => Some(*addr),
            BackendAddr::Name { .. } => None,
        }
    }
}

/// The admin listener, serving `/metrics`, `/latency`, `/live` and `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    /// Address to bind; loopback unless an operator chooses otherwise.
    pub address: SocketAddr,
    /// How far back the latency quantiles in `/metrics` and `/latency` look.
    #[serde(serialize_with = "as_humantime")]
    pub window: Duration,
}

/// One JSON line per request, written off the request path.
#[derive(Debug, Clone, Serialize)]
pub struct AccessLog {
    /// Whether lines are written at all.
    pub enabled: bool,
    /// The file lines are appended to; `-` is standard output.
    pub path: PathBuf,
    /// Lines that may wait for the writer; beyond them lines are dropped and counted.
    pub buffer_lines: NonZeroUsize,
}

/// Server-wide settings.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// How long in-flight requests may run after SIGTERM/SIGINT before the
    /// process exits anyway.
    #[serde(serialize_with = "as_humantime")]
    pub drain_timeout: Duration,
    /// Every listener and the admin listener are bound with `SO_REUSEPORT`,
    /// so a new tailcut can bind the same addresses while this one drains.
    pub reuse_port: bool,
}

/// Every timeout tailcut enforces.
#[derive(Debug, Clone, Serialize)]
pub struct Timeouts {
    /// Opening a TCP connection to a backend.
    #[serde(serialize_with = "as_humantime")]
    pub connect: Duration,
    /// Receiving a request's complete header block from a client. For
    /// HTTP/1.1 hyper starts this clock as soon as a connection is idle, so
    /// it also bounds how long a keep-alive connection may wait between requests.
    #[serde(serialize_with = "as_humantime")]
    pub request_header: Duration,
    /// Waiting for a backend's response headers, counted from when the
    /// request and its whole body have been sent.
    #[serde(serialize_with = "as_humantime")]
    pub upstream_response_header: Duration,
    /// Closing a client connection that has had no request in flight for this long.
    #[serde(serialize_with = "as_humantime")]
    pub idle: Duration,
    /// Closing a client connection that has accepted no bytes of its
    /// response for this long (a client that stops reading). Counted between
    /// writes, not over the whole response, so slow downloads that keep
    /// moving are not cut.
    #[serde(serialize_with = "as_humantime")]
    pub client_write: Duration,
    /// The whole exchange, from request headers to the last byte of the
    /// response body. `None`: no limit (long downloads, streams).
    #[serde(serialize_with = "as_humantime_opt")]
    pub request: Option<Duration>,
}

/// Limits on what clients may send and how many may connect.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Largest HTTP/1 request head (request line and headers), in bytes.
    pub max_header_bytes: NonZeroUsize,
    /// Most header fields in one request.
    pub max_headers: NonZeroUsize,
    /// Most HTTP/2 streams a client may have open at once on one connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: NonZeroUsize,
    /// Default connection limit of a listener; over it, clients get 503.
    pub max_connections_per_listener: NonZeroUsize,
}

/// One listening socket.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// Name used in logs.
    pub name: String,
    /// Address to bind.
    pub address: SocketAddr,
    /// Concurrent connections accepted before new ones get 503.
    pub max_connections: NonZeroUsize,
    /// TLS termination; `None`: cleartext HTTP/1.1 and h2c.
    pub tls: Option<tls::Tls>,
}

/// A rule sending matching requests to an upstream cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Name used in logs and metrics.
    pub name: String,
    /// Lower-case host to match (port ignored); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix to match; `/` matches every path.
    pub path_prefix: String,
    /// Name of the upstream cluster; validated to exist.
    pub upstream: String,
    /// Largest request body accepted, in bytes; `None`: no limit. Over it:
    /// 413, decided from Content-Length when there is one, otherwise as the
    /// body streams.
    pub max_body_bytes: Option<u64>,
    /// Protocols a client may switch to through this route (`Upgrade`),
    /// lower-case; the connection is then tunnelled. Any other `Upgrade`
    /// is dropped and the request forwarded as a plain one.
    pub upgrades: Vec<String>,
    /// Retries of failed requests; `None`: none.
    pub retry: Option<Retry>,
    /// Hedged requests; `None`: none.
    pub hedge: Option<Hedge>,
    /// The largest request body buffered so that the request can be sent
    /// again (retried or hedged); a larger one streams, and is sent once.
    pub max_buffered_body: u64,
}

/// A cluster of interchangeable backends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    /// Backends: addresses, or names resolved to addresses.
    pub backends: Vec<BackendAddr>,
    /// How often names among `backends` are resolved again (sooner when
    /// their records' TTL runs out first).
    #[serde(serialize_with = "as_humantime")]
    pub resolve_every: Duration,
    /// How its names are resolved: `[dns]`, copied here when it has names
    /// (the default otherwise), so that a reload changing `[dns]` rebuilds
    /// the clusters it concerns and no others.
    #[serde(skip)]
    pub dns: Dns,
    /// Idle keep-alive connections kept per backend.
    pub max_idle_per_backend: usize,
    /// How long an idle pooled connection is kept.
    #[serde(serialize_with = "as_humantime")]
    pub pool_idle_timeout: Duration,
    /// How a backend is chosen for each request.
    pub balance: BalancePolicy,
    /// How fast a backend's latency estimate forgets (peak-EWMA's time
    /// constant).
    #[serde(serialize_with = "as_humantime")]
    pub ewma_decay: Duration,
    /// The latency estimate of a backend that has answered nothing yet.
    #[serde(serialize_with = "as_humantime")]
    pub ewma_default_rtt: Duration,
    /// Passive outlier ejection: when a backend that keeps failing is
    /// taken out of the rotation, and for how long.
    pub outlier: Outlier,
    /// Active health checks, when configured.
    pub health: Option<Health>,
    /// TLS to the backends; `None`: cleartext.
    pub tls: Option<tls::UpstreamTls>,
    /// The extra attempts (retries and hedges) its routes may add.
    pub budget: Budget,
    /// Its adaptive concurrency limit and admission queue.
    pub concurrency: Concurrency,
}

/// Passive outlier ejection (`[upstreams.NAME.outlier]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outlier {
    /// Failures in a row (gateway errors and 5xx answers) that eject a backend.
    pub consecutive_failures: NonZeroUsize,
    /// How long a first ejection lasts; the n-th lasts n times as long.
    #[serde(serialize_with = "as_humantime")]
    pub base_ejection: Duration,
    /// The longest an ejection lasts.
    #[serde(serialize_with = "as_humantime")]
    pub max_ejection: Duration,
    /// The most backends of the cluster ejected at once, in percent,
    /// counting the one about to be; the last healthy one never is.
    pub max_ejected_percent: usize,
}

/// Active health checks (`[upstreams.NAME.health]`): a request to each
/// backend every `interval`, off the request path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// The path requested (`GET`), starting with `/`.
    pub path: String,
    /// Time between two checks of a backend (each start jittered by up to
    /// a tenth).
    #[serde(serialize_with = "as_humantime")]
    pub interval: Duration,
    /// How long a check may take, connecting included.
    #[serde(serialize_with = "as_humantime")]
    pub timeout: Duration,
    /// Passing checks in a row that put an unhealthy backend back.
    pub healthy_threshold: NonZeroUsize,
    /// Failing checks in a row that take a backend out.
    pub unhealthy_threshold: NonZeroUsize,
    /// The statuses that pass, inclusive.
    pub expect_status: (u16, u16),
}

/// How an upstream cluster chooses a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// Of two backends drawn at random, the one whose latency estimate
    /// times (requests in flight + 1) is lower.
    PeakEwma,
    /// Of two backends drawn at random, the one with fewer requests in flight.
    LeastRequest,
    /// Each backend in turn.
    RoundRobin,
}

impl Config {
    /// The effective configuration, defaults filled in, as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|err| format!("# cannot render config: {err}\n"))
    }
}

/// Reads and validates the configuration at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse(path, &source)?)
}

/// Validates configuration text; `path` is only used in error messages.
pub fn parse(path: &Path, source: &str) -> Result<Config, Invalid> {
    let locator = Locator::new(path, source);
    let deserializer = toml::Deserializer::new(source);
    let file: schema::File = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        // Spanned<T> deserializes through private helper fields; they are not
        // keys the user wrote.
        let key = err.path().to_string().replace(".$__serde_spanned_private_value", "");
        let key = if key == "." { String::new() } else { key };
        let inner = err.into_inner();
        let message = inner.message().trim_end().replace('\n', "; ");
        locator.error(inner.span(), key, message)
    })?;
    Validator { locator }.config(path, file)
}

struct Validator<'a> {
    locator: Locator<'a>,
}

impl Validator<'_> {
    fn config(&self, path: &Path, file: schema::File) -> Result<Config, Invalid> {
        let server = Server {
            drain_timeout: self.duration(file.server.drain_timeout, "server.drain_timeout", "30s")?,
            reuse_port: file.server.reuse_port.unwrap_or(false),
        };
        let t = file.timeouts;
        let timeouts = Timeouts {
            connect: self.duration(t.connect, "timeouts.connect", "1s")?,
            request_header: self.duration(t.request_header, "timeouts.request_header", "10s")?,
            upstream_response_header: self.duration(
                t.upstream_response_header,
                "timeouts.upstream_response_header",
                "30s",
            )?,
            idle: self.duration(t.idle, "timeouts.idle", "60s")?,
            client_write: self.duration(t.client_write, "timeouts.client_write", "60s")?,
            request: match t.request {
                None => None,
                Some(value) => Some(self.duration(Some(value), "timeouts.request", "")?),
            },
        };
        let l = file.limits;
        let header_bytes_span = l.max_header_bytes.as_ref().map(Spanned::span);
        let max_header_bytes = self.count(l.max_header_bytes, "limits.max_header_bytes", nz(32 * 1024))?;
        if max_header_bytes.get() < MIN_HEADER_BYTES {
            let span = header_bytes_span;
            return Err(self.locator.error(
                span,
                "limits.max_header_bytes",
                format!("{max_header_bytes} is below the minimum of {MIN_HEADER_BYTES}"),
            ));
        }
        let limits = Limits {
            max_header_bytes,
            max_headers: self.count(l.max_headers, "limits.max_headers", nz(100))?,
            max_connections_per_listener: self.count(
                l.max_connections_per_listener,
                "limits.max_connections_per_listener",
                nz(10_000),
            )?,
            max_concurrent_streams: self.count(l.max_concurrent_streams, "limits.max_concurrent_streams", nz(100))?,
        };

        // Certificate paths are relative to the config file's folder.
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let upstreams = file
            .upstreams
            .into_iter()
            .map(|(name, upstream)| Ok((name.clone(), self.upstream(&name, upstream, base)?)))
            .collect::<Result<BTreeMap<_, _>, Invalid>>()?;

        let listeners = self.listeners(file.listeners, limits.max_connections_per_listener, base)?;
        let routes = self.routes(file.routes, &upstreams)?;
        let admin = self.admin(file.admin)?;
        let access_log = AccessLog {
            enabled: file.access_log.enabled.unwrap_or(false),
            path: file
                .access_log
                .path
                .map_or_else(|| PathBuf::from("-"), |p| PathBuf::from(p.into_inner())),
            buffer_lines: self.count(file.access_log.buffer_lines, "access_log.buffer_lines", nz(4096))?,
        };

        let dns = Dns {
            nameservers: file
                .dns
                .nameservers
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, server)| self.socket_addr(server, &format!("dns.nameservers[{i}]")))
                .collect::<Result<_, _>>()?,
        };
        let mut upstreams = upstreams;
        for upstream in upstreams.values_mut() {
            if upstream.backends.iter().any(|b| b.ip().is_none()) {
                upstream.dns = dns.clone();
            }
        }
        Ok(Config {
            source: path.to_path_buf(),
            server,
            timeouts,
            limits,
            listeners,
            routes,
            upstreams,
            admin,
            access_log,
            dns,
        })
    }

    fn admin(&self, raw: schema::Admin) -> Result<Admin, Invalid> {
        let address = match raw.address {
            None => SocketAddr::from(([127, 0, 0, 1], 9901)),
            Some(address) => self.socket_addr(&address, "admin.address")?,
        };
        let span = raw.window.as_ref().map(Spanned::span);
        let window = self.duration(raw.window, "admin.window", "60s")?;
        if window < MIN_WINDOW {
            return Err(self.locator.error(
                span,
                "admin.window",
                "must be at least 1s: the window moves in steps of a sixth of it",
            ));
        }
        Ok(Admin { address, window })
    }

    fn listeners(
        &self,
        raw: Vec<schema::Listener>,
        default_max: NonZeroUsize,
        base: &Path,
    ) -> Result<Vec<Listener>, Invalid> {
        if raw.is_empty() {
            return Err(self
                .locator
                .error(None, "listeners", "at least one listener is required"));
        }
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        raw.into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let key = format!("listeners[{i}]");
                let name = self.name(&listener.name, &format!("{key}.name"), &mut names)?;
                let address = self.socket_addr(&listener.address, &format!("{key}.address"))?;
                if address.port() != 0 && !addresses.insert(address) {
                    return Err(self.locator.error(
                        Some(listener.address.span()),
                        format!("{key}.address"),
                        format!("{address} is already used by another listener"),
                    ));
                }
                let max_connections = listener
                    .max_connections
                    .map(|raw| self.positive(&raw, &format!("{key}.max_connections")))
                    .transpose()?
                    .unwrap_or(default_max);
                let tls = listener
                    .tls
                    .map(|raw| self.tls(raw, &format!("{key}.tls"), base))
                    .transpose()?;
                Ok(Listener {
                    name,
                    address,
                    max_connections,
                    tls,
                })
            })
            .collect()
    }

    /// Loads a listener's certificates (paths relative to `base`, the config
    /// file's folder) and builds its TLS configuration.
    fn tls(&self, raw: schema::ListenerTls, key: &str, base: &Path) -> Result<tls::Tls, Invalid> {
        if raw.certificates.is_empty() {
            return Err(self.locator.error(
                None,
                format!("{key}.certificates"),
                "at least one certificate is required (the first is the default)",
            ));
        }
        let mut loaded = Vec::new();
        let mut files = Vec::new();
        for (i, certificate) in raw.certificates.into_iter().enumerate() {
            let key = format!("{key}.certificates[{i}]");
            let (certified, chain, key_file) =
                tls::load_certificate(base, certificate.chain.get_ref(), certificate.key.get_ref()).map_err(|err| {
                    let (field, at) = match &err {
                        tls::TlsError::File { path, .. } if path.ends_with(certificate.chain.get_ref()) => {
                            ("chain", certificate.chain.span())
                        }
                        _ => ("key", certificate.key.span()),
                    };
                    self.locator.error(Some(at), format!("{key}.{field}"), err.to_string())
                })?;
            let names = certificate
                .names
                .iter()
                .enumerate()
                .map(|(j, name)| self.host(name, &format!("{key}.names[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            loaded.push((std::sync::Arc::new(certified), names.clone()));
            files.push(tls::CertificateFiles {
                chain,
                key: key_file,
                names,
            });
        }
        let server_config = tls::server_config(loaded).map_err(|err| self.locator.error(None, key.to_owned(), err))?;
        Ok(tls::Tls {
            certificates: files,
            server_config,
        })
    }

    fn routes(&self, raw: Vec<schema::Route>, upstreams: &BTreeMap<String, Upstream>) -> Result<Vec<Route>, Invalid> {
        if raw.is_empty() {
            return Err(self.locator.error(None, "routes", "at least one route is required"));
        }
        let mut names = HashSet::new();
        raw.into_iter()
            .enumerate()
            .map(|(i, route)| {
                let key = format!("routes[{i}]");
                let name = self.name(&route.name, &format!("{key}.name"), &mut names)?;
                let host = match route.host {
                    None => None,
                    Some(host) => Some(self.host(&host, &format!("{key}.host"))?),
                };
                let path_prefix = match route.path_prefix {
                    None => "/".to_owned(),
                    Some(prefix) if prefix.get_ref().starts_with('/') => prefix.into_inner(),
                    Some(prefix) => {
                        return Err(self.locator.error(
                            Some(prefix.span()),
                            format!("{key}.path_prefix"),
                            format!("{:?} must start with '/'", prefix.get_ref()),
                        ))
                    }
                };
                if !upstreams.contains_key(route.upstream.get_ref()) {
                    return Err(self.locator.error(
                        Some(route.upstream.span()),
                        format!("{key}.upstream"),
                        format!("no upstream named {:?} is defined", route.upstream.get_ref()),
                    ));
                }
                let max_body_bytes = route
                    .max_body_bytes
                    .map(|raw| {
                        u64::try_from(*raw.get_ref()).ok().filter(|&n| n > 0).ok_or_else(|| {
                            self.locator.error(
                                Some(raw.span()),
                                format!("{key}.max_body_bytes"),
                                format!("{} must be greater than zero", raw.get_ref()),
                            )
                        })
                    })
                    .transpose()?;
                let upgrades = match route.upgrades {
                    None => vec!["websocket".to_owned()],
                    Some(list) => list
                        .iter()
                        .enumerate()
                        .map(|(j, protocol)| self.protocol(protocol, &format!("{key}.upgrades[{j}]")))
                        .collect::<Result<_, _>>()?,
                };
                let cluster = &upstreams[route.upstream.get_ref()];
                let addresses = cluster.backends.iter().filter(|b| b.ip().is_some()).count();
                let names = addresses < cluster.backends.len();
                let retry = route
                    .retry
                    .map(|raw| self.retry(raw.into_inner(), &format!("{key}.retry")))
                    .transpose()?;
                let hedge = route
                    .hedge
                    .map(|raw| {
                        let at = raw.span();
                        self.hedge(raw.into_inner(), &format!("{key}.hedge"), at, (addresses, names))
                    })
                    .transpose()?;
                Ok(Route {
                    name,
                    host,
                    path_prefix,
                    upstream: route.upstream.into_inner(),
                    max_body_bytes,
                    upgrades,
                    retry,
                    hedge,
                    max_buffered_body: self
                        .max_buffered_body(route.max_buffered_body, &format!("{key}.max_buffered_body"))?,
                })
            })
            .collect()
    }

    fn upstream(&self, name: &str, raw: schema::Upstream, base: &Path) -> Result<Upstream, Invalid> {
        let key = format!("upstreams.{name}");
        if raw.backends.get_ref().is_empty() {
            return Err(self.locator.error(
                Some(raw.backends.span()),
                format!("{key}.backends"),
                "at least one backend is required",
            ));
        }
        let backends = raw
            .backends
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, backend)| {
                backend.get_ref().parse::<BackendAddr>().map_err(|problem| {
                    self.locator.error(
                        Some(backend.span()),
                        format!("{key}.backends[{i}]"),
                        format!("{:?} {problem}", backend.get_ref()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let resolve_every_span = raw.resolve_every.as_ref().map(Spanned::span);
        let resolve_every = self.duration(raw.resolve_every, &format!("{key}.resolve_every"), "30s")?;
        if resolve_every < Duration::from_secs(1) {
            return Err(self.locator.error(
                resolve_every_span,
                format!("{key}.resolve_every"),
                "must be at least 1s",
            ));
        }
        let max_idle_per_backend = match raw.max_idle_per_backend {
            None => 64,
            Some(value) => self.non_negative(&value, &format!("{key}.max_idle_per_backend"))?,
        };
        let tls = raw
            .tls
            .map(|raw| {
                let server_name = raw.server_name.map(|n| (n.get_ref().clone(), n.span()));
                if let Some((name, span)) = &server_name {
                    if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                        return Err(self.locator.error(
                            Some(span.clone()),
                            format!("{key}.tls.server_name"),
                            format!("{name:?} is not a DNS name or IP address"),
                        ));
                    }
                }
                let ca = raw.ca.as_ref().map(|c| c.get_ref().as_str());
                tls::upstream(base, ca, server_name.map(|(n, _)| n)).map_err(|err| {
                    let at = raw.ca.as_ref().map(Spanned::span);
                    self.locator.error(at, format!("{key}.tls.ca"), err.to_string())
                })
            })
            .transpose()?;
        let balance = match &raw.balance {
            None => BalancePolicy::PeakEwma,
            Some(policy) => match policy.get_ref().as_str() {
                "peak_ewma" => BalancePolicy::PeakEwma,
                "least_request" => BalancePolicy::LeastRequest,
                "round_robin" => BalancePolicy::RoundRobin,
                other => {
                    return Err(self.locator.error(
                        Some(policy.span()),
                        format!("{key}.balance"),
                        format!("{other:?} is not a policy: use \"peak_ewma\", \"least_request\" or \"round_robin\""),
                    ))
                }
            },
        };
        let outlier = self.outlier(raw.outlier, &format!("{key}.outlier"))?;
        let health = raw
            .health
            .map(|health| self.health(health, &format!("{key}.health")))
            .transpose()?;
        Ok(Upstream {
            backends,
            resolve_every,
            dns: Dns::default(),
            max_idle_per_backend,
            pool_idle_timeout: self.duration(raw.pool_idle_timeout, &format!("{key}.pool_idle_timeout"), "90s")?,
            balance,
            ewma_decay: self.duration(raw.ewma_decay, &format!("{key}.ewma_decay"), "10s")?,
            ewma_default_rtt: self.duration(raw.ewma_default_rtt, &format!("{key}.ewma_default_rtt"), "30ms")?,
            outlier,
            health,
            tls,
            budget: self.budget(raw.budget, &format!("{key}.budget"))?,
            concurrency: self.concurrency(raw.concurrency, &format!("{key}.concurrency"))?,
        })
    }

    fn health(&self, raw: schema::Health, key: &str) -> Result<Health, Invalid> {
        let path = raw.path.get_ref();
        let valid_path = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic());
        if !valid_path {
            return Err(self.locator.error(
                Some(raw.path.span()),
                format!("{key}.path"),
                format!("{path:?} is not a path: it starts with '/' and holds no spaces"),
            ));
        }
        let expect_status = match &raw.expect_status {
            None => (200, 399),
            Some(range) => {
                let text = range.get_ref();
                let parsed = match text.split_once('-') {
                    Some((low, high)) => low.trim().parse::<u16>().ok().zip(high.trim().parse::<u16>().ok()),
                    None => text.trim().parse::<u16>().ok().map(|code| (code, code)),
                };
                match parsed {
                    Some((low, high)) if (100..=599).contains(&low) && (low..=599).contains(&high) => (low, high),
                    _ => {
                        return Err(self.locator.error(
                            Some(range.span()),
                            format!("{key}.expect_status"),
                            format!("{text:?} is not a status or a range such as \"200-399\""),
                        ))
                    }
                }
            }
        };
        let default = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Ok(Health {
            path: path.clone(),
            interval: self.duration(raw.interval, &format!("{key}.interval"), "5s")?,
            timeout: self.duration(raw.timeout, &format!("{key}.timeout"), "1s")?,
            healthy_threshold: self.count(raw.healthy_threshold, &format!("{key}.healthy_threshold"), default(2))?,
            unhealthy_threshold: self.count(
                raw.unhealthy_threshold,
                &format!("{key}.unhealthy_threshold"),
                default(3),
            )?,
            expect_status,
        })
    }

    fn outlier(&self, raw: Option<schema::Outlier>, key: &str) -> Result<Outlier, Invalid> {
        let raw = raw.unwrap_or(schema::Outlier {
            consecutive_failures: None,
            base_ejection: None,
            max_ejection: None,
            max_ejected_percent: None,
        });
        let base_ejection = self.duration(raw.base_ejection, &format!("{key}.base_ejection"), "30s")?;
        let max_span = raw.max_ejection.as_ref().map(Spanned::span);
        let max_ejection = self.duration(raw.max_ejection, &format!("{key}.max_ejection"), "300s")?;
        if max_ejection < base_ejection {
            return Err(self.locator.error(
                max_span,
                format!("{key}.max_ejection"),
                "must not be shorter than base_ejection",
            ));
        }
        let max_ejected_percent = match raw.max_ejected_percent {
            None => 50,
            Some(percent) => self.percent(&percent, &format!("{key}.max_ejected_percent"))? as usize,
        };
        Ok(Outlier {
            consecutive_failures: self.count(
                raw.consecutive_failures,
                &format!("{key}.consecutive_failures"),
                NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
            )?,
            base_ejection,
            max_ejection,
            max_ejected_percent,
        })
    }

    fn name(&self, raw: &Spanned<String>, key: &str, seen: &mut HashSet<String>) -> Result<String, Invalid> {
        let name = raw.get_ref();
        if name.is_empty() {
            return Err(self.locator.error(Some(raw.span()), key, "must not be empty"));
        }
        if !seen.insert(name.clone()) {
            return Err(self
                .locator
                .error(Some(raw.span()), key, format!("{name:?} is used twice")));
        }
        Ok(name.clone())
    }

    fn host(&self, raw: &Spanned<String>, key: &str) -> Result<String, Invalid> {
        let host = raw.get_ref();
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
        if !valid {
            return Err(self.locator.error(
                Some(raw.span()),
                key,
                format!("{host:?} is not a host name (no scheme, path or spaces)"),
            ));
        }
        Ok(host.to_ascii_lowercase())
    }

    /// A protocol name as `Upgrade` carries it: an HTTP token (RFC 9110
    /// section 5.6.2), without a version.
    fn protocol(&self, raw: &Spanned<String>, key: &str) -> Result<String, Invalid> {
        let name = raw.get_ref();
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return Err(self.locator.error(
                Some(raw.span()),
                key,
                format!("{name:?} is not a protocol name (a token such as \"websocket\", without a version)"),
            ));
        }
        Ok(name.to_ascii_lowercase())
    }

    fn socket_addr(&self, raw: &Spanned<String>, key: &str) -> Result<SocketAddr, Invalid> {
        raw.get_ref().parse().map_err(|_| {
            self.locator.error(
                Some(raw.span()),
                key,
                format!("{:?} is not a socket address", raw.get_ref()),
            )
        })
    }

    fn duration(&self, raw: Option<Spanned<String>>, key: &str, default: &str) -> Result<Duration, Invalid> {
        let (text, span) = match &raw {
            Some(value) => (value.get_ref().as_str(), Some(value.span())),
            None => (default, None),
        };
        match humantime::parse_duration(text) {
            Ok(duration) if duration > MAX_DURATION => {
                Err(self
                    .locator
                    .error(span, key, format!("{text:?} is longer than the maximum of 365 days")))
            }
            Ok(duration) if !duration.is_zero() => Ok(duration),
            Ok(_) => Err(self
                .locator
                .error(span, key, format!("{text:?} must be longer than zero"))),
            Err(_) => Err(self.locator.error(
                span,
                key,
                format!("{text:?} is not a duration; write e.g. \"250ms\", \"10s\", \"2m\""),
            )),
        }
    }

    fn count(&self, raw: Option<Spanned<i64>>, key: &str, default: NonZeroUsize) -> Result<NonZeroUsize, Invalid> {
        raw.map(|raw| self.positive(&raw, key))
            .transpose()
            .map(|v| v.unwrap_or(default))
    }

    fn positive(&self, raw: &Spanned<i64>, key: &str) -> Result<NonZeroUsize, Invalid> {
        NonZeroUsize::new(self.non_negative(raw, key)?)
            .ok_or_else(|| self.locator.error(Some(raw.span()), key, "must be greater than zero"))
    }

    fn non_negative(&self, raw: &Spanned<i64>, key: &str) -> Result<usize, Invalid> {
        let value = usize::try_from(*raw.get_ref()).map_err(|_| {
            self.locator
                .error(Some(raw.span()), key, format!("{} must not be negative", raw.get_ref()))
        })?;
        if value > MAX_COUNT {
            return Err(self.locator.error(
                Some(raw.span()),
                key,
                format!("{value} is above the maximum of {MAX_COUNT}"),
            ));
        }
        Ok(value)
    }
}

/// A non-zero default; zero is a programming error caught by the unit tests.
const fn nz(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

fn as_humantime<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn as_humantime_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => as_humantime(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[listeners]]
name = "main"
address = "127.0.0.1:0"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = ["127.0.0.1:9000"]
"#;

    fn error(source: &str) -> String {
        match parse(Path::new("t.toml"), source) {
            Ok(_) => panic!("expected an error for:\n{source}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(Path::new("t.toml"), MINIMAL).expect("valid");
        assert_eq!(config.timeouts.connect, Duration::from_secs(1));
        assert_eq!(config.timeouts.request_header, Duration::from_secs(10));
        assert_eq!(config.timeouts.client_write, Duration::from_secs(60));
        assert_eq!(config.timeouts.request, None);
        assert_eq!(config.limits.max_headers.get(), 100);
        assert_eq!(config.listeners[0].max_connections.get(), 10_000);
        assert_eq!(config.routes[0].path_prefix, "/");
        assert_eq!(config.upstreams["app"].max_idle_per_backend, 64);
    }

    #[test]
    fn reuse_port_is_off_unless_set_and_must_be_a_boolean() {
        assert!(!parse(Path::new("t.toml"), MINIMAL).expect("valid").server.reuse_port);
        let on = format!("[server]\nreuse_port = true\n{MINIMAL}");
        assert!(parse(Path::new("t.toml"), &on).expect("valid").server.reuse_port);
        let wrong = format!("[server]\nreuse_port = \"yes\"\n{MINIMAL}");
        assert_eq!(
            error(&wrong),
            "t.toml:2:14: server.reuse_port: invalid type: string \"yes\", expected a boolean"
        );
    }

    #[test]
    fn body_and_stream_limits_have_defaults_and_must_be_positive() {
        let config = parse(Path::new("t.toml"), MINIMAL).expect("valid");
        assert_eq!(config.limits.max_concurrent_streams.get(), 100);
        assert_eq!(config.routes[0].max_body_bytes, None);
        let limited = MINIMAL.replace("upstream = \"app\"", "upstream = \"app\"\nmax_body_bytes = 1048576");
        let config = parse(Path::new("t.toml"), &limited).expect("valid");
        assert_eq!(config.routes[0].max_body_bytes, Some(1_048_576));
        let zero = MINIMAL.replace("upstream = \"app\"", "upstream = \"app\"\nmax_body_bytes = 0");
        assert_eq!(
            error(&zero),
            "t.toml:9:18: routes[0].max_body_bytes: 0 must be greater than zero"
        );
    }

    #[test]
    fn balancing_defaults_to_peak_ewma_and_names_its_policies() {
        let config = parse(Path::new("t.toml"), MINIMAL).expect("valid");
        let app = &config.upstreams["app"];
        assert_eq!(app.balance, BalancePolicy::PeakEwma);
        assert_eq!(app.ewma_decay, Duration::from_secs(10));
        assert_eq!(app.ewma_default_rtt, Duration::from_millis(30));
        let chosen = format!("{MINIMAL}balance = \"least_request\"\newma_decay = \"5s\"\n");
        let app = &parse(Path::new("t.toml"), &chosen).expect("valid").upstreams["app"];
        assert_eq!(
            (app.balance, app.ewma_decay),
            (BalancePolicy::LeastRequest, Duration::from_secs(5))
        );
        assert_eq!(
            error(&format!("{MINIMAL}balance = \"random\"\n")),
            "t.toml:12:11: upstreams.app.balance: \"random\" is not a policy: use \"peak_ewma\", \"least_request\" or \"round_robin\""
        );
    }

    #[test]
    fn outlier_ejection_has_defaults_that_fire_on_small_clusters() {
        let config = parse(Path::new("t.toml"), MINIMAL).expect("valid");
        let outlier = &config.upstreams["app"].outlier;
        assert_eq!(outlier.consecutive_failures.get(), 5);
        assert_eq!(outlier.base_ejection, Duration::from_secs(30));
        assert_eq!(outlier.max_ejection, Duration::from_secs(300));
        assert_eq!(outlier.max_ejected_percent, 50);
        let set = format!("{MINIMAL}[upstreams.app.outlier]\nconsecutive_failures = 2\nbase_ejection = \"1s\"\n");
        let outlier = parse(Path::new("t.toml"), &set).expect("valid").upstreams["app"]
            .outlier
            .clone();
        assert_eq!(
            (outlier.consecutive_failures.get(), outlier.base_ejection),
            (2, Duration::from_secs(1))
        );
        assert_eq!(
            error(&format!(
                "{MINIMAL}[upstreams.app.outlier]\nmax_ejected_percent = 101\n"
            )),
            "t.toml:13:23: upstreams.app.outlier.max_ejected_percent: 101 is over 100"
        );
        assert_eq!(
            error(&format!("{MINIMAL}[upstreams.app.outlier]\nmax_ejection = \"1s\"\n")),
            "t.toml:13:16: upstreams.app.outlier.max_ejection: must not be shorter than base_ejection"
        );
    }

    #[test]
    fn health_checks_are_off_unless_configured_and_validated() {
        let config = parse(Path::new("t.toml"), MINIMAL).expect("valid");
        assert!(config.upstreams["app"].health.is_none());
        let on = format!("{MINIMAL}[upstreams.app.health]\npath = \"/healthz\"\nexpect_status = \"204\"\n");
        let health = parse(Path::new("t.toml"), &on).expect("valid").upstreams["app"]
            .health
            .clone()
            .expect("health");
        assert_eq!(health.path, "/healthz");
        assert_eq!(
            (health.interval, health.timeout),
            (Duration::from_secs(5), Duration::from_secs(1))
        );
        assert_eq!(
            (health.healthy_threshold.get(), health.unhealthy_threshold.get()),
            (2, 3)
        );
        assert_eq!(health.expect_status, (204, 204));
        assert_eq!(
            error(&format!("{MINIMAL}[upstreams.app.health]\npath = \"healthz\"\n")),
            "t.toml:13:8: upstreams.app.health.path: \"healthz\" is not a path: it starts with '/' and holds no spaces"
        );
        assert_eq!(
            error(&format!("{MINIMAL}[upstreams.app.health]\npath = \"/\"\nexpect_status = \"400-200\"\n")),
            "t.toml:14:17: upstreams.app.health.expect_status: \"400-200\" is not a status or a range such as \"200-399\""
        );
    }

    #[test]
    fn upgrades_default_to_websocket_and_must_be_tokens() {
        let config = parse(Path::new("t.toml"), MINIMAL).expect("valid");
        assert_eq!(config.routes[0].upgrades, ["websocket"]);
        let listed = MINIMAL.replace(
            "upstream = \"app\"",
            "upstream = \"app\"\nupgrades = [\"WebSocket\", \"x-feed\"]",
        );
        let config = parse(Path::new("t.toml"), &listed).expect("valid");
        assert_eq!(config.routes[0].upgrades, ["websocket", "x-feed"]);
        let none = MINIMAL.replace("upstream = \"app\"", "upstream = \"app\"\nupgrades = []");
        assert!(parse(Path::new("t.toml"), &none).expect("valid").routes[0]
            .upgrades
            .is_empty());
        let versioned = MINIMAL.replace(
            "upstream = \"app\"",
            "upstream = \"app\"\nupgrades = [\"h2c\", \"websocket/13\"]",
        );
        assert_eq!(
            error(&versioned),
            "t.toml:9:20: routes[0].upgrades[1]: \"websocket/13\" is not a protocol name (a token such as \"websocket\", without a version)"
        );
    }

    #[test]
    fn backends_are_addresses_or_dns_names_with_a_port() {
        let with = |backends: &str| MINIMAL.replace(r#"["127.0.0.1:9000"]"#, backends);
        let config = parse(
            Path::new("t.toml"),
            &with(r#"["api.internal:8080", "10.0.0.7:8080", "[::1]:80", "Svc.NS.svc.cluster.local.:443"]"#),
        )
        .expect("valid");
        let backends: Vec<String> = config.upstreams["app"]
            .backends
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            backends,
            [
                "api.internal:8080",
                "10.0.0.7:8080",
                "[::1]:80",
                "svc.ns.svc.cluster.local:443"
            ]
        );
        assert_eq!(config.upstreams["app"].resolve_every, Duration::from_secs(30));
        assert!(config.dns.nameservers.is_empty());
        for (bad, says) in [
            (r#"["api.internal"]"#, "is not HOST:PORT"),
            (r#"["api.internal:0"]"#, "has no valid port"),
            (r#"["api.internal:http"]"#, "has no valid port"),
            (r#"["api..internal:80"]"#, "is neither"),
            (r#"["api internal:80"]"#, "is neither"),
            (r#"["10.0.0.256:80"]"#, "is neither"),
            (r#"["-api:80"]"#, "is neither"),
        ] {
            let err = error(&with(bad));
            assert!(
                err.contains("upstreams.app.backends[0]") && err.contains(says),
                "{bad}: {err}"
            );
        }
        let too_often = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nresolve_every = \"100ms\"");
        assert!(error(&too_often).contains("upstreams.app.resolve_every: must be at least 1s"));
        let servers = format!("{MINIMAL}\n[dns]\nnameservers = [\"127.0.0.1:5353\", \"resolver\"]\n");
        assert!(error(&servers).contains("dns.nameservers[1]"), "{}", error(&servers));
        // [dns] goes with the clusters that have names, so that a reload
        // changing it rebuilds them and no others.
        let named = format!(
            "{}\n[upstreams.byname]\nbackends = [\"api.internal:80\"]\n[dns]\nnameservers = [\"127.0.0.1:5353\"]\n",
            MINIMAL
        );
        let config = parse(Path::new("t.toml"), &named).expect("valid");
        let server: SocketAddr = "127.0.0.1:5353".parse().expect("addr");
        assert_eq!(config.upstreams["byname"].dns.nameservers, [server]);
        assert!(config.upstreams["app"].dns.nameservers.is_empty());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let source = include_str!("../../config/tailcut.toml");
        let config = parse(Path::new("config/tailcut.toml"), source).expect("example config is valid");
        assert_eq!(config.routes.len(), 2);
    }

    #[test]
    fn bad_backend_names_file_line_column_and_key() {
        let source = MINIMAL.replace(r#"["127.0.0.1:9000"]"#, r#"["127.0.0.1:9000", "127.0.0.1:99999"]"#);
        assert_eq!(
            error(&source),
            r#"t.toml:11:31: upstreams.app.backends[1]: "127.0.0.1:99999" has no valid port (1-65535)"#
        );
    }

    #[test]
    fn unknown_key_is_an_error_at_the_key() {
        let source = MINIMAL.replace("name = \"main\"", "name = \"main\"\nport = 80");
        assert_eq!(
            error(&source),
            "t.toml:4:1: listeners[0].port: unknown field `port`, expected one of `name`, `address`, `max_connections`, `tls`"
        );
    }

    #[test]
    fn wrong_type_names_the_key_without_internal_helpers() {
        let source = format!("[timeouts]\nconnect = 5\n{MINIMAL}");
        assert_eq!(
            error(&source),
            "t.toml:2:11: timeouts.connect: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn durations_must_parse_and_be_positive() {
        let bad = error(&format!("[timeouts]\nidle = \"soon\"\n{MINIMAL}"));
        assert!(
            bad.starts_with(r#"t.toml:2:8: timeouts.idle: "soon" is not a duration"#),
            "{bad}"
        );
        let zero = error(&format!("[timeouts]\nidle = \"0s\"\n{MINIMAL}"));
        assert_eq!(zero, r#"t.toml:2:8: timeouts.idle: "0s" must be longer than zero"#);
    }

    #[test]
    fn counts_must_be_positive_and_header_limit_at_least_8k() {
        let zero = error(&format!("[limits]\nmax_headers = 0\n{MINIMAL}"));
        assert_eq!(zero, "t.toml:2:15: limits.max_headers: must be greater than zero");
        let small = error(&format!("[limits]\nmax_header_bytes = 100\n{MINIMAL}"));
        assert_eq!(
            small,
            "t.toml:2:20: limits.max_header_bytes: 100 is below the minimum of 8192"
        );
        let negative = error(&format!("[limits]\nmax_headers = -3\n{MINIMAL}"));
        assert_eq!(negative, "t.toml:2:15: limits.max_headers: -3 must not be negative");
    }

    #[test]
    fn absurd_durations_and_counts_are_refused_not_overflowed() {
        let long = error(&format!("[timeouts]\nrequest = \"300000000000y\"\n{MINIMAL}"));
        assert_eq!(
            long,
            r#"t.toml:2:11: timeouts.request: "300000000000y" is longer than the maximum of 365 days"#
        );
        let many = error(&format!(
            "[limits]\nmax_connections_per_listener = 4611686018427387904\n{MINIMAL}"
        ));
        assert_eq!(
            many,
            "t.toml:2:32: limits.max_connections_per_listener: 4611686018427387904 is above the maximum of 1073741824"
        );
    }

    #[test]
    fn route_to_an_undefined_upstream_is_an_error() {
        let source = MINIMAL.replace("upstream = \"app\"", "upstream = \"nope\"");
        assert_eq!(
            error(&source),
            r#"t.toml:8:12: routes[0].upstream: no upstream named "nope" is defined"#
        );
    }

    #[test]
    fn path_prefix_must_be_absolute_and_names_unique() {
        let source = MINIMAL.replace("name = \"all\"", "name = \"all\"\npath_prefix = \"api\"");
        assert_eq!(
            error(&source),
            r#"t.toml:8:15: routes[0].path_prefix: "api" must start with '/'"#
        );
        let twice = format!("{MINIMAL}\n[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:1\"\n");
        assert_eq!(error(&twice), r#"t.toml:14:8: listeners[1].name: "main" is used twice"#);
    }

    #[test]
    fn missing_sections_are_reported() {
        assert_eq!(error(""), "t.toml: listeners: at least one listener is required");
        let no_backends = MINIMAL.replace(r#"["127.0.0.1:9000"]"#, "[]");
        assert_eq!(
            error(&no_backends),
            "t.toml:11:12: upstreams.app.backends: at least one backend is required"
        );
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let err = error("x = [\n");
        assert!(err.starts_with("t.toml:2:1: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn effective_config_round_trips() {
        let config = parse(Path::new("t.toml"), MINIMAL).expect("valid");
        let again = parse(Path::new("t2.toml"), &config.to_toml()).expect("printed config parses");
        assert_eq!(again.to_toml(), config.to_toml());
    }
}
