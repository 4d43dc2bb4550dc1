//! Routing: the first route whose host and path prefix match wins.

use std::sync::Arc;

use super::replay::Policy;
use crate::config;

/// A route compiled for matching.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name, for logs and metrics.
    pub name: String,
    host: Option<String>,
    path_prefix: String,
    /// Index of the upstream cluster in the proxy's cluster list.
    pub upstream: usize,
    /// Where its requests are counted ([`crate::metrics::Metrics::route_slot_for`]).
    pub metrics_slot: usize,
    /// Largest request body accepted, bytes (`None`: no limit).
    pub max_body_bytes: Option<u64>,
    /// Protocols a client may upgrade to (lower-case).
    pub upgrades: Vec<String>,
    /// Its retry and hedge policies, if it has either.
    pub policy: Option<Arc<Policy>>,
}

/// Routes in configuration order.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Compiles `routes`; `metrics_slots` holds each one's metrics slot, in
    /// the same order (missing ones count as slot 0, no route);
    /// `upstream_index` maps an upstream name (already validated to exist)
    /// to its index.
    ///
    /// `policies` holds each one's retry and hedge policy, in the same order.
    pub fn new(
        routes: &[config::Route],
        metrics_slots: &[usize],
        mut policies: Vec<Option<Arc<Policy>>>,
        upstream_index: impl Fn(&str) -> usize,
    ) -> Self {
        policies.resize(routes.len(), None);
        let routes = routes
            .iter()
            .zip(policies)
            .enumerate()
            .map(|(i, (r, policy))| Route {
                metrics_slot: metrics_slots.get(i).copied().unwrap_or(0),
                name: r.name.clone(),
                host: r.host.as_deref().map(|h| without_port(h).to_owned()),
                path_prefix: r.path_prefix.clone(),
                upstream: upstream_index(&r.upstream),
                max_body_bytes: r.max_body_bytes,
                upgrades: r.upgrades.clone(),
                policy,
            })
            .collect();
        Self { routes }
    }

    /// The first route matching `host` (port ignored, case-insensitive) and
    /// `path` (plain byte prefix, like nginx's `location /prefix`).
    /// Its index comes along, for [`Router::get`].
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<(usize, &Route)> {
        let host = host.map(without_port);
        self.routes.iter().enumerate().find(|(_, route)| {
            let host_matches = match (&route.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_matches && path.starts_with(route.path_prefix.as_str())
        })
    }

    /// Route `index` (from [`Router::find`]).
    pub fn get(&self, index: usize) -> &Route {
        &self.routes[index]
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:8080` -> `[::1]`; a fully
/// qualified `example.com.` -> `example.com` (the same name, as nginx
/// matches it).
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    let name = match host.rfind(':') {
        Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
        _ => host,
    };
    name.strip_suffix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, prefix: &str) -> config::Route {
        config::Route {
            name: name.into(),
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            upstream: name.into(),
            max_body_bytes: None,
            upgrades: vec!["websocket".into()],
            retry: None,
            hedge: None,
            max_buffered_body: 0,
        }
    }

    fn router() -> Router {
        let routes = [
            route("api", Some("api.test"), "/v1/"),
            route("static", None, "/static/"),
            route("fallback", None, "/"),
        ];
        Router::new(&routes, &[1, 2, 3], Vec::new(), |name| {
            ["api", "static", "fallback"]
                .iter()
                .position(|n| *n == name)
                .unwrap_or(0)
        })
    }

    #[test]
    fn first_match_wins_and_host_ignores_port_and_case() {
        let r = router();
        let name = |host, path| r.find(host, path).map(|(_, route)| route.name.as_str());
        assert_eq!(name(Some("API.test:8080"), "/v1/users"), Some("api"));
        assert_eq!(name(Some("other.test"), "/v1/users"), Some("fallback"));
        assert_eq!(name(None, "/static/a.css"), Some("static"));
        assert_eq!(name(Some("api.test"), "/static/a.css"), Some("static"));
        assert_eq!(r.find(None, "/static/").map(|(_, route)| route.metrics_slot), Some(2));
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let routes = [route("api", Some("api.test"), "/")];
        let r = Router::new(&routes, &[1], Vec::new(), |_| 0);
        assert!(r.find(Some("else.test"), "/").is_none());
        assert!(r.find(None, "/").is_none());
    }

    #[test]
    fn strips_ports_from_ipv6_and_names() {
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_port("a.test:1"), "a.test");
        assert_eq!(without_port("a.test"), "a.test");
        assert_eq!(without_port("a.test.:1"), "a.test");
        assert_eq!(without_port("a.test."), "a.test");
    }

    #[test]
    fn a_fully_qualified_host_matches_its_route() {
        let r = router();
        assert_eq!(
            r.find(Some("api.test."), "/v1/x").map(|(_, route)| route.name.as_str()),
            Some("api")
        );
        assert_eq!(
            r.find(Some("API.test.:443"), "/v1/x")
                .map(|(_, route)| route.name.as_str()),
            Some("api")
        );
    }
}
