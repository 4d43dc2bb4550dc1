//! Resolving backends given by name: each name (with its port) to every
//! address its A and AAAA records give, through hickory-resolver, which,
//! unlike tokio's `lookup_host`, reports the records' TTL.
//!
//! What a name server answers is checked before use: addresses that cannot
//! be a backend (unspecified, multicast, broadcast) are dropped, and at most
//! [`MAX_ADDRESSES_PER_NAME`] are kept per name. A name with no records
//! resolves to no address (its backends go, as Envoy's strict DNS does);
//! any other failure fails the whole resolution, so that the caller keeps
//! the last good set.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{ResolveError, TokioResolver};

use super::cluster::Endpoint;
use crate::config::{BackendAddr, Dns};

/// The most addresses kept from one name's answer.
pub const MAX_ADDRESSES_PER_NAME: usize = 64;

/// How long an answer with no TTL to go by (no records) is trusted.
const NO_RECORDS_RETRY: Duration = Duration::from_secs(5);

/// A resolver for one cluster's names.
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// A resolution: every backend's endpoints, and how long they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The configured addresses, then each name's, in configuration order.
    pub endpoints: Vec<Endpoint>,
    /// Until the first of the records' TTLs runs out.
    pub valid_for: Duration,
    /// The names that resolved to no usable address.
    pub empty: Vec<String>,
}

/// Why a resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The system's resolver configuration could not be read.
    #[error("system resolver configuration: {0}")]
    SystemConfig(ResolveError),
    /// Looking a name up failed (no answer, a server failure, a timeout).
    #[error("{name}: {cause}")]
    Lookup {
        /// The name.
        name: String,
        /// What the resolver said.
        cause: ResolveError,
    },
}

impl Resolver {
    /// A resolver asking `dns.nameservers` (UDP, then TCP for a truncated
    /// answer), or the system's name servers when there are none. Nothing
    /// is cached: each resolution asks the servers again.
    pub fn new(dns: &Dns) -> Result<Self, DnsError> {
        let mut options = ResolverOpts::default();
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        let builder = if dns.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(DnsError::SystemConfig)?
        } else {
            let mut config = ResolverConfig::new();
            for &server in &dns.nameservers {
                config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        Ok(Resolver {
            inner: builder.with_options(options).build(),
        })
    }

    /// Resolves every name among `backends`.
    pub async fn resolve(&self, backends: &[BackendAddr]) -> Result<Resolved, DnsError> {
        let mut endpoints: Vec<Endpoint> = backends
            .iter()
            .filter_map(BackendAddr::ip)
            .map(|addr| Endpoint { addr, name: None })
            .collect();
        let mut valid_until: Option<Instant> = None;
        let mut empty = Vec::new();
        for backend in backends {
            let BackendAddr::Name { host, port } = backend else {
                continue;
            };
            // A fully qualified name: no search domains appended.
            let fqdn = format!("{host}.");
            let (addresses, until) = match self.inner.lookup_ip(fqdn.as_str()).await {
                Ok(lookup) => (lookup.iter().collect::<Vec<_>>(), lookup.valid_until()),
                Err(err) if no_such_records(&err) => (Vec::new(), Instant::now() + NO_RECORDS_RETRY),
                Err(cause) => {
                    return Err(DnsError::Lookup {
                        name: host.clone(),
                        cause,
                    })
                }
            };
            valid_until = Some(valid_until.map_or(until, |v| v.min(until)));
            let name: Arc<str> = Arc::from(host.as_str());
            let usable: Vec<IpAddr> = addresses
                .into_iter()
                .filter(usable)
                .take(MAX_ADDRESSES_PER_NAME)
                .collect();
            if usable.is_empty() {
                empty.push(host.clone());
            }
            for ip in usable {
                let addr = SocketAddr::new(ip, *port);
                if !endpoints.iter().any(|e| e.addr == addr) {
                    endpoints.push(Endpoint {
                        addr,
                        name: Some(name.clone()),
                    });
                }
            }
        }
        Ok(Resolved {
            endpoints,
            valid_for: valid_until.map_or(Duration::MAX, |until| until.saturating_duration_since(Instant::now())),
            empty,
        })
    }
}

/// Whether the name servers answered that the name has no address (it
/// does not exist, or has no A or AAAA records), as opposed to failing to
/// answer (hickory reports a SERVFAIL as "no records" too).
fn no_such_records(err: &ResolveError) -> bool {
    match err.proto().map(ProtoError::kind) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            matches!(*response_code, ResponseCode::NXDomain | ResponseCode::NoError)
        }
        _ => false,
    }
}

/// Whether a name server's answer can be a backend's address.
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_no_backend_can_have_are_dropped() {
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
            assert!(!usable(&bad.parse().expect("ip")), "{bad}");
        }
        for good in ["10.0.0.7", "127.0.0.1", "::1", "fd00::7"] {
            assert!(usable(&good.parse().expect("ip")), "{good}");
        }
    }
}
