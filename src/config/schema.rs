//! The file schema: what serde reads from TOML, before any validation.
//!
//! Values that need checking beyond their TOML type (addresses, durations,
//! counts) are kept as [`Spanned`] so that validation can point at them.
//! Nothing outside the config module sees these types.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub access_log: AccessLog,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Dns {
    pub nameservers: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub address: Option<Spanned<String>>,
    pub window: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLog {
    pub enabled: Option<bool>,
    pub path: Option<Spanned<String>>,
    pub buffer_lines: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub drain_timeout: Option<Spanned<String>>,
    pub reuse_port: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Timeouts {
    pub connect: Option<Spanned<String>>,
    pub request_header: Option<Spanned<String>>,
    pub upstream_response_header: Option<Spanned<String>>,
    pub idle: Option<Spanned<String>>,
    pub client_write: Option<Spanned<String>>,
    pub request: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    pub max_header_bytes: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_connections_per_listener: Option<Spanned<i64>>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub max_connections: Option<Spanned<i64>>,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerTls {
    pub certificates: Vec<TlsCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsCertificate {
    pub chain: Spanned<String>,
    pub key: Spanned<String>,
    #[serde(default)]
    pub names: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub name: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub upgrades: Option<Vec<Spanned<String>>>,
    pub max_buffered_body: Option<Spanned<i64>>,
    pub retry: Option<Spanned<Retry>>,
    pub hedge: Option<Spanned<Hedge>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    pub attempts: Option<Spanned<i64>>,
    pub on: Option<Spanned<Vec<Spanned<String>>>>,
    pub backoff_base: Option<Spanned<String>>,
    pub backoff_max: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hedge {
    pub delay: Option<Spanned<String>>,
    pub percentile: Option<Spanned<Number>>,
    pub min_delay: Option<Spanned<String>>,
    pub max_delay: Option<Spanned<String>>,
    pub min_samples: Option<Spanned<i64>>,
    pub max_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Budget {
    pub percent: Option<Spanned<i64>>,
    pub window: Option<Spanned<String>>,
    pub min_per_second: Option<Spanned<i64>>,
    pub max_concurrent: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub backends: Spanned<Vec<Spanned<String>>>,
    pub resolve_every: Option<Spanned<String>>,
    pub max_idle_per_backend: Option<Spanned<i64>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub balance: Option<Spanned<String>>,
    pub ewma_decay: Option<Spanned<String>>,
    pub ewma_default_rtt: Option<Spanned<String>>,
    pub outlier: Option<Outlier>,
    pub health: Option<Health>,
    pub tls: Option<UpstreamTls>,
    pub budget: Option<Budget>,
    pub concurrency: Option<Concurrency>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Concurrency {
    pub enabled: Option<Spanned<bool>>,
    pub algorithm: Option<Spanned<String>>,
    pub min_limit: Option<Spanned<i64>>,
    pub max_limit: Option<Spanned<i64>>,
    pub sample_window: Option<Spanned<String>>,
    pub sample_percentile: Option<Spanned<Number>>,
    pub min_rtt_every: Option<Spanned<String>>,
    pub buffer_percent: Option<Spanned<i64>>,
    pub queue_target: Option<Spanned<String>>,
    pub queue_interval: Option<Spanned<String>>,
    pub max_queue: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Health {
    pub path: Spanned<String>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    pub expect_status: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outlier {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub base_ejection: Option<Spanned<String>>,
    pub max_ejection: Option<Spanned<String>>,
    pub max_ejected_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTls {
    pub ca: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
}

/// A number written with or without a fraction (`90` or `99.9`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub(crate) enum Number {
    Integer(i64),
    Float(f64),
}

impl Number {
    pub fn get(self) -> f64 {
        match self {
            Number::Integer(n) => n as f64,
            Number::Float(x) => x,
        }
    }
}
