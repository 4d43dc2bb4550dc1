//! A request kept so that it can be sent more than once: retried after a
//! failure ([`super::retry`]) or hedged while slow ([`super::hedge`]).
//!
//! Only a route with a retry or hedge policy keeps one, and only for a
//! request that may be sent twice ([`Policy::eligible`]): an idempotent
//! method (RFC 9110 section 9.2.2), or, for retries, one carrying
//! `Idempotency-Key`; no upgrade, no `Expect: 100-continue`; no body, or
//! one whose `Content-Length` is at most the route's `max_buffered_body`.
//! The body is then received whole before the first attempt (a retry sent
//! while the body still streams could send the backend a body twice as
//! long), and each attempt sends the same bytes. Every other request
//! streams and is sent once, as on a route without a policy.
//!
//! Each attempt encodes the head again: the time left before the deadline,
//! forwarded to the backend, is less at each one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, EXPECT, HOST};
use http::{Method, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::hedge::Hedging;
use super::prepare::SendFuture;
use super::{deadline, ProxyError, Shared};
use crate::config;
use crate::headers::OwnedAdded;
use crate::metrics::RouteTail;
use crate::upstream::h1::{is_idempotent, EncodedRequest};
use crate::upstream::upload::UploadBody;
use crate::upstream::{Exchange, Picked, UpstreamError};

/// `Idempotency-Key`: the client says a request that is not idempotent by
/// its method may be sent again (draft-ietf-httpapi-idempotency-key-header).
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `grpc-retry-pushback-ms`: a backend's word on retrying; negative means
/// do not.
static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// A route's retry and hedge policies, with what they keep between
/// requests.
#[derive(Debug)]
pub struct Policy {
    /// Retries, when configured with more than one attempt.
    pub retry: Option<config::Retry>,
    /// Hedging and its delay, when configured.
    pub hedge: Option<Hedging>,
    /// The largest body buffered to be sent again.
    pub max_buffered_body: u64,
    /// The route's counters.
    pub counters: RouteTail,
}

/// What a request may have: retries, a hedge, or both.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    pub retry: bool,
    pub hedge: bool,
    /// Its method is idempotent: a timeout or a 504 may be retried too.
    pub idempotent: bool,
}

impl Policy {
    /// The policy of `route`, if it has one; `counters` are its counters.
    pub fn for_route(route: &config::Route, counters: RouteTail) -> Option<Arc<Policy>> {
        let retry = route.retry.clone().filter(|retry| retry.attempts > 1);
        if retry.is_none() && route.hedge.is_none() {
            return None;
        }
        let hedge = route
            .hedge
            .as_ref()
            .map(|hedge| Hedging::new(hedge, counters.hedge_delay.clone()));
        Some(Arc::new(Policy {
            retry,
            hedge,
            max_buffered_body: route.max_buffered_body,
            counters,
        }))
    }

    /// What the policy allows a request with `method`, `headers` (as the
    /// client sent them) and `body`: `None` when it may be sent only once.
    pub fn eligible(&self, method: &Method, headers: &HeaderMap, body: &Incoming) -> Option<Allowed> {
        let idempotent = is_idempotent(method);
        let retry = self.retry.is_some() && (idempotent || headers.contains_key(&IDEMPOTENCY_KEY));
        let hedge = self.hedge.is_some() && idempotent;
        if !(retry || hedge) || headers.contains_key(EXPECT) {
            return None;
        }
        let small = http_body::Body::is_end_stream(body)
            || http_body::Body::size_hint(body)
                .exact()
                .is_some_and(|length| length <= self.max_buffered_body);
        small.then_some(Allowed {
            retry,
            hedge,
            idempotent,
        })
    }
}

/// A request made ready to be sent, possibly more than once.
pub struct Replay {
    /// Its head, rewritten for the backends; fields the proxy adds apart.
    pub parts: http::request::Parts,
    pub added: OwnedAdded,
    /// The body as it arrives; `body_bytes` once received.
    pub body: Option<Incoming>,
    pub body_bytes: Option<Bytes>,
    /// The request named no host: each backend's own goes in `Host`.
    pub needs_host: bool,
    /// The client sent a deadline: each attempt forwards the time left.
    pub forward_deadline: bool,
    pub deadline: Option<Instant>,
    pub cluster: usize,
    /// The backend the balancer picked first, until the first attempt.
    pub first: Option<Picked>,
    pub allowed: Allowed,
    pub policy: Arc<Policy>,
}

/// One attempt in flight.
pub struct Attempt {
    /// The backend it went to.
    pub backend: usize,
    /// When it was sent.
    pub sent: std::time::Instant,
    pub future: SendFuture,
}

/// How an attempt ended.
pub enum Tried {
    /// Response headers arrived (any status).
    Answered {
        response: Response<()>,
        exchange: Exchange,
        sent: std::time::Instant,
    },
    /// No response: the failure, counted against its backend already.
    Failed(ProxyError),
}

/// An attempt's end, and why it may be retried (a condition of
/// `[routes.retry] on`), if it may.
pub struct Ended {
    pub tried: Tried,
    pub reason: Option<&'static str>,
}

impl Replay {
    /// Receives the body whole (it is known to be small), within the
    /// request's deadline.
    pub async fn receive_body(&mut self) -> Result<(), ProxyError> {
        let Some(body) = self.body.take() else {
            return Ok(());
        };
        let limit = usize::try_from(self.policy.max_buffered_body).unwrap_or(usize::MAX);
        let collect = http_body_util::Limited::new(body, limit).collect();
        let collected = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, collect)
                .await
                .map_err(|_| ProxyError::DeadlinePassed)?,
            None => collect.await,
        };
        let collected = collected.map_err(|err| ProxyError::ClientBody {
            cause: super::error::error_chain(err.as_ref()),
        })?;
        let bytes = collected.to_bytes();
        self.body_bytes = (!bytes.is_empty()).then_some(bytes);
        Ok(())
    }

    /// The time left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Sends the request to `picked`: encodes its head for that backend and
    /// starts the exchange.
    pub fn attempt(&mut self, shared: &Shared, picked: Picked) -> Result<Attempt, ProxyError> {
        let cluster = &shared.clusters[self.cluster];
        let backend = cluster.backend(picked.index);
        if self.needs_host {
            self.parts.headers.insert(HOST, backend.host_header());
        }
        let remaining = self.remaining();
        if let (Some(remaining), true) = (remaining, self.forward_deadline) {
            deadline::forward(&mut self.parts.headers, remaining);
        }
        let header_timeout = match remaining {
            Some(remaining) => shared.timeouts.upstream_response_header.min(remaining),
            None => shared.timeouts.upstream_response_header,
        };
        let request = EncodedRequest::new(
            &self.parts,
            self.added.added(),
            self.body_bytes.is_some(),
            backend.head_buffer(),
        )
        .map_err(|err| shared.failed(self.cluster, picked.index, err.into()))?;
        let sent = std::time::Instant::now();
        let future: SendFuture = Box::pin(backend.send(
            request,
            HeaderMap::new(),
            self.body_bytes.clone().map(UploadBody::buffered),
            sent,
            header_timeout,
            picked.in_flight,
        ));
        Ok(Attempt {
            backend: picked.index,
            sent,
            future,
        })
    }

    /// Waits for `attempt` to end: [`Replay::ended`].
    pub async fn finish(&self, shared: &Shared, mut attempt: Attempt) -> Ended {
        let outcome = (&mut attempt).await;
        self.ended(shared, &attempt, outcome)
    }

    /// Counts how `attempt` ended, and whether the route's retry policy
    /// would send the request again after it.
    pub fn ended(
        &self,
        shared: &Shared,
        attempt: &Attempt,
        outcome: Result<(Response<()>, Exchange), UpstreamError>,
    ) -> Ended {
        let (backend, sent) = (attempt.backend, attempt.sent);
        let reason = self.retry_reason(&outcome);
        let tried = match outcome {
            Ok((response, exchange)) => {
                shared.clusters[self.cluster].backend(backend).count(response.status());
                Tried::Answered {
                    response,
                    exchange,
                    sent,
                }
            }
            Err(err) => Tried::Failed(shared.failed(self.cluster, backend, err)),
        };
        Ended { tried, reason }
    }

    /// Why `outcome` may be retried, by the route's `on` list; `None` if it
    /// may not (or the route does not retry).
    fn retry_reason(&self, outcome: &Result<(Response<()>, Exchange), UpstreamError>) -> Option<&'static str> {
        let on = self.policy.retry.as_ref()?.on;
        let idempotent = self.allowed.idempotent;
        match outcome {
            Ok((response, _)) => {
                let status = response.status().as_u16();
                // gRPC's "do not retry": a negative pushback (gRFC A6).
                let pushed_back = response
                    .headers()
                    .get(&GRPC_RETRY_PUSHBACK_MS)
                    .is_some_and(|value| value.as_bytes().starts_with(b"-"));
                let allowed = on.status(status) && (status != 504 || idempotent) && !pushed_back;
                allowed.then_some(match status {
                    502 => "502",
                    503 => "503",
                    _ => "504",
                })
            }
            Err(err) if err.client_body().is_some() => None,
            Err(err) if err.is_connect() => on.connect_failure.then_some("connect-failure"),
            Err(UpstreamError::ResponseTimeout(_)) => (on.response_timeout && idempotent).then_some("response-timeout"),
            Err(err) if err.retryable() => on.reset.then_some("reset"),
            Err(_) => None,
        }
    }
}

/// An attempt's future, polled in place.
impl Future for Attempt {
    type Output = Result<(Response<()>, Exchange), UpstreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}
