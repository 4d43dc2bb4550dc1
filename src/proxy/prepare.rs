//! Making a request ready for its backend, synchronously, as it arrives:
//! route it (a 404 or 400 before anything else), check its framing, pick a
//! backend through the cluster's balancer, rewrite its head
//! ([`crate::headers`]) and encode it for the backend, so that the client's
//! head can go at once. What comes out is the exchange, not yet started, or
//! an upgrade for hyper's client.

use std::future::Future;
use std::pin::Pin;

use http::header::{HeaderMap, HeaderValue, HOST, TRANSFER_ENCODING};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::replay::Replay;
use super::{deadline, route, Connection, ProxyError, Shared};
use crate::admission::{Admit, Permit, Wait};
use crate::balance::InFlight;
use crate::headers;
use crate::upstream::h1::EncodedRequest;
use crate::upstream::upload::UploadBody;
use crate::upstream::{Exchange, UpstreamError};

/// A request made ready for its backend by [`Shared::prepare`].
pub(super) enum Prepared {
    /// For a pooled connection, with its exchange made (not yet started).
    Pooled(Pooled),
    /// A protocol upgrade, for hyper's client on a connection of its own.
    Upgrade(Upgrade),
    /// Kept to be sent more than once if need be (retried, hedged).
    Replay(Box<Replay>),
    /// Waiting for a permit from its cluster's admission control.
    Queued(Box<Queued>),
}

/// What routing found, for the rest of the preparation.
pub(super) struct Routed {
    /// The route's index in the router.
    route: usize,
    /// The request names its host.
    has_host: bool,
    /// The whole-request deadline, if there is one.
    deadline: Option<Instant>,
    /// The client sent the deadline (it is forwarded).
    client_sent: bool,
    /// The protocol the client asks to upgrade to, if the route allows it.
    upgrade: Option<HeaderValue>,
}

/// A request waiting in its cluster's admission queue, with everything
/// [`Shared::dispatch`] needs once it may go.
pub(super) struct Queued {
    wait: Wait,
    parts: http::request::Parts,
    body: Incoming,
    routed: Routed,
}

impl Queued {
    /// Waits for the permit, then prepares the request as if it had just
    /// arrived with it; or the refusal, if it waited in vain.
    pub(super) async fn granted(self, shared: &Shared, connection: &Connection) -> Result<Prepared, ProxyError> {
        let Queued {
            wait,
            parts,
            body,
            routed,
        } = self;
        match wait.granted().await {
            Ok(permit) => shared.dispatch(connection, parts, body, routed, Some(permit)),
            Err(reason) => Err(ProxyError::Shed {
                upstream: shared.clusters[shared.router.get(routed.route).upstream].name.clone(),
                reason,
            }),
        }
    }
}

/// An exchange on a pooled connection, and what its outcome is read with.
pub(super) struct Pooled {
    pub(super) send: SendFuture,
    pub(super) cluster: usize,
    pub(super) backend: usize,
    /// The whole-request deadline, if one is configured.
    pub(super) deadline: Option<Instant>,
    /// When the exchange was made.
    pub(super) sent: std::time::Instant,
}

pub(super) struct Upgrade {
    pub(super) cluster: usize,
    pub(super) backend: usize,
    pub(super) request: Box<Request<Incoming>>,
    pub(super) client_side: OnUpgrade,
    /// The protocols offered to the backend (the `Upgrade` value sent).
    pub(super) offered: HeaderValue,
    pub(super) header_timeout: std::time::Duration,
    /// Counted in flight to the backend until its answer.
    pub(super) in_flight: InFlight,
}

/// A pooled exchange: the response head and the exchange streaming its body.
pub(super) type SendFuture = Pin<Box<dyn Future<Output = Result<(Response<()>, Exchange), UpstreamError>> + Send>>;

impl Shared {
    /// Routes `request` and asks its cluster's admission control, then
    /// (unless it must wait for a permit: [`Prepared::Queued`]) rewrites
    /// its head for the backend, encodes it and makes the exchange with
    /// the backend (not started: it is a future). `route_slot` gets the
    /// route's metrics slot once routed.
    pub(super) fn prepare(
        &self,
        connection: &Connection,
        request: Request<Incoming>,
        route_slot: &mut Option<usize>,
    ) -> Result<Prepared, ProxyError> {
        let (parts, body) = request.into_parts();
        // Only a body of unknown length can have come with a coding: a GET
        // pays nothing for the look-up.
        let unknown_length =
            !http_body::Body::is_end_stream(&body) && http_body::Body::size_hint(&body).exact().is_none();
        if unknown_length && parts.headers.contains_key(TRANSFER_ENCODING) {
            only_chunked(&parts.headers)?;
        }
        // The whole-request deadline: the client's (`grpc-timeout`,
        // `x-request-timeout`) or the configured one, whichever is sooner;
        // the clock is read only when there is one.
        let (limit, client_sent) = deadline::limit(&parts.headers, self.timeouts.request)?;
        let deadline = limit.map(|limit| Instant::now() + limit);
        let (route_index, route, has_host) = self.route(&parts)?;
        *route_slot = Some(route.metrics_slot);
        if limit.is_some_and(|limit| limit.is_zero()) {
            // Passed already: the backend is not asked.
            return Err(ProxyError::DeadlinePassed);
        }
        if let Some(limit) = route.max_body_bytes {
            // Known up front: refuse without reading the body or calling the backend.
            if http_body::Body::size_hint(&body).lower() > limit {
                return Err(ProxyError::PayloadTooLarge { limit });
            }
        }
        let upgrade = match parts.version {
            Version::HTTP_11 => headers::upgrade_protocol(&parts.headers, &route.upgrades),
            _ => None,
        };
        let routed = Routed {
            route: route_index,
            has_host,
            deadline,
            client_sent,
            upgrade,
        };
        let cluster = &self.clusters[route.upstream];
        // Tunnels, which may last hours, are not held to the limit.
        let permit = match cluster.admission().filter(|_| routed.upgrade.is_none()) {
            None => None,
            Some(admission) => match admission.admit(Instant::now(), deadline) {
                Admit::Now(permit) => Some(permit),
                Admit::Wait(wait) => {
                    return Ok(Prepared::Queued(Box::new(Queued {
                        wait,
                        parts,
                        body,
                        routed,
                    })))
                }
                Admit::Refused(reason) => {
                    return Err(ProxyError::Shed {
                        upstream: cluster.name.clone(),
                        reason,
                    })
                }
            },
        };
        self.dispatch(connection, parts, body, routed, permit)
    }

    /// The rest of [`Shared::prepare`], once the request may go: picks a
    /// backend, rewrites the head and encodes it, and makes the exchange.
    pub(super) fn dispatch(
        &self,
        connection: &Connection,
        mut parts: http::request::Parts,
        body: Incoming,
        routed: Routed,
        permit: Option<Permit>,
    ) -> Result<Prepared, ProxyError> {
        let Routed {
            route,
            has_host,
            deadline,
            client_sent,
            upgrade,
        } = routed;
        let route = self.router.get(route);
        let cluster_index = route.upstream;
        let cluster = &self.clusters[cluster_index];
        let picked = cluster
            .pick()
            .ok_or_else(|| ProxyError::NoBackend {
                upstream: cluster.name.clone(),
            })?
            .admitted(permit);
        let backend_index = picked.index;
        let backend = cluster.backend(backend_index);

        // Asked before the rewrite, which drops `Expect`.
        let replayable = match (&route.policy, &upgrade) {
            (Some(policy), None) => policy
                .eligible(&parts.method, &parts.headers, &body)
                .map(|allowed| (policy.clone(), allowed)),
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
        // What remains of the deadline (less than its length if the request
        // waited for admission).
        let remaining = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let header_timeout = match remaining {
            Some(remaining) => self.timeouts.upstream_response_header.min(remaining),
            None => self.timeouts.upstream_response_header,
        };
        if let (Some(remaining), true) = (remaining, client_sent) {
            // The backend is told the time that remains, in the client's terms.
            deadline::forward(&mut parts.headers, remaining);
        }

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
        if let Some((policy, allowed)) = replayable {
            return Ok(Prepared::Replay(Box::new(Replay {
                parts,
                added: added.to_owned(),
                body: has_body.then_some(body),
                body_bytes: None,
                needs_host: !has_host,
                forward_deadline: client_sent,
                deadline,
                cluster: cluster_index,
                first: Some(picked),
                allowed,
                policy,
            })));
        }
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
                has_body.then(|| UploadBody::new(body, route.max_body_bytes)),
                sent,
                header_timeout,
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
    fn route(&self, parts: &http::request::Parts) -> Result<(usize, &route::Route, bool), ProxyError> {
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
        let (index, route) = self
            .router
            .find(host, parts.uri.path())
            .ok_or_else(|| ProxyError::NoRoute {
                host: host.map(str::to_owned),
                path: parts.uri.path().to_owned(),
            })?;
        Ok((index, route, host.is_some()))
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
