//! One request on one pooled connection: sending it, the response-header
//! timeout, the response body, and reporting the outcome and its timing to
//! the backend's load.
//!
//! The request's own task drives its connection: the request is written,
//! the response read and its body streamed without waking another task (see
//! [`super::h1`] for why not hyper's client). When the response body ends,
//! the connection goes back to its pool.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::error::UpstreamError;
use super::h1::{EncodedRequest, H1Error};
use super::pool::{Pool, PooledConn};
use super::upload::UploadBody;
use crate::balance::InFlight;

/// Sends an encoded request and its body on an idle connection of `pool`,
/// or a new one when none is idle, and reads the response head into
/// `headers` (an emptied map, whose storage is reused). `sent` is when the
/// caller handed the request over (the clock read just before): the pool's
/// idle check and the response timer use it instead of reading the clock
/// again, and the latency sample counts from it.
///
/// The returned [`Exchange`] must travel with the response: it streams the
/// body, drives the connection and returns it to the pool when the body
/// ends. A body over its route's limit fails the exchange with
/// [`UpstreamError::Http`] caused by [`super::upload::TooLarge`].
///
/// The outcome goes to `in_flight`, the backend's load: the time to the
/// response head as a latency sample, or a failure (a 5xx, or an error that
/// is not the client's) toward outlier ejection. The request stays counted
/// in flight until the body ends or the exchange is dropped.
///
/// A plain function returning an `async` block rather than an `async fn`,
/// which would keep each argument twice (as argument, and as the local it
/// is moved into) in a future that every request moves.
#[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
pub fn send(
    pool: Arc<Pool>,
    request: EncodedRequest,
    headers: http::HeaderMap,
    body: Option<UploadBody>,
    sent: std::time::Instant,
    response_timeout: Duration,
    in_flight: InFlight,
) -> impl Future<Output = Result<(Response<()>, Exchange), UpstreamError>> + Send + 'static {
    async move {
        let now = Instant::from_std(sent);
        let outcome = async {
            let (conn, reused) = match pool.checkout(now).await {
                Some(conn) => (conn, true),
                // Connecting is the rare path: boxing it keeps the future
                // that every request builds and moves small.
                None => (Box::pin(pool.connect()).await?, false),
            };
            let mut exchange = Exchange::new(conn, pool.clone());
            let timing = exchange.start(request, headers, body)?;
            let response = match exchange.response(now, timing, response_timeout).await {
                Ok(response) => response,
                // A pooled connection the backend closed as it was taken (its
                // idle timeout racing ours): no response came, so a fresh
                // connection may try once, if the request can be sent again.
                Err(err @ UpstreamError::Http(H1Error::Closed | H1Error::Io(_))) if reused && !exchange.answered() => {
                    let Some(request) = exchange.take_request() else {
                        return Err(err);
                    };
                    exchange = Exchange::new(Box::pin(pool.connect()).await?, pool);
                    let timing = exchange.start(request, http::HeaderMap::new(), None)?;
                    exchange.response(Instant::now(), timing, response_timeout).await?
                }
                Err(err) => return Err(err),
            };
            Ok((response, exchange))
        };
        match outcome.await {
            Ok((response, mut exchange)) => {
                if response.status().is_server_error() {
                    in_flight.failed();
                } else {
                    let now = std::time::Instant::now();
                    in_flight.answered(now.saturating_duration_since(sent), now.into());
                }
                if exchange.conn.is_some() {
                    exchange.in_flight = Some(in_flight);
                }
                Ok((response, exchange))
            }
            Err(err) => {
                if err.client_body().is_none() {
                    in_flight.failed();
                }
                Err(err)
            }
        }
    }
}

/// One request on a connection checked out for it; as the response body,
/// it streams what the backend sends.
pub struct Exchange {
    conn: Option<PooledConn>,
    pool: Arc<Pool>,
    /// When the response body was read to its end.
    ended_at: Option<std::time::Instant>,
    /// The request counted in flight to its backend, until the body ends
    /// or is dropped.
    in_flight: Option<InFlight>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("backend", &self.pool.connector().addr())
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl Exchange {
    fn new(conn: PooledConn, pool: Arc<Pool>) -> Self {
        Self {
            conn: Some(conn),
            pool,
            ended_at: None,
            in_flight: None,
        }
    }

    fn answered(&self) -> bool {
        self.conn.as_ref().is_some_and(|conn| conn.answered())
    }

    /// The request back from a connection that failed, to send it on
    /// another (see `Conn::take_request`).
    fn take_request(&mut self) -> Option<EncodedRequest> {
        self.conn.as_mut().and_then(|conn| conn.take_request())
    }

    /// Starts sending the request (see `Conn::start`), with `headers` (an
    /// emptied map) to read the response head into; returns whether the
    /// response timeout may start at once (a request without a body).
    fn start(
        &mut self,
        request: EncodedRequest,
        headers: http::HeaderMap,
        body: Option<UploadBody>,
    ) -> Result<bool, UpstreamError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(UpstreamError::Http(H1Error::Closed));
        };
        let timing = body.is_none();
        conn.recycle(headers);
        let spare = conn.start(request, body);
        self.pool.keep_head_buffer(spare);
        Ok(timing)
    }

    /// Drives the exchange `start` began until the response head. The
    /// response timeout runs from when the request body has been sent (from
    /// `now` if `timing`, for a request without one): it measures the
    /// backend, not the client's upload.
    async fn response(
        &mut self,
        now: Instant,
        timing: bool,
        response_timeout: Duration,
    ) -> Result<Response<()>, UpstreamError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(UpstreamError::Http(H1Error::Closed));
        };
        let mut deadline = timing.then(|| now + response_timeout);
        let result = poll_fn(|cx| {
            if let Poll::Ready(result) = conn.poll_head(cx) {
                return Poll::Ready(Some(result));
            }
            if deadline.is_none() && conn.request_sent() {
                deadline = Some(Instant::now() + response_timeout);
            }
            match deadline {
                Some(deadline) if conn.poll_timer(cx, deadline).is_ready() => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await;
        match result {
            Some(Ok(response)) => {
                if conn.body_ended() {
                    // Nothing to stream (HEAD, 204, empty body): the body
                    // may never be polled, so hand the connection back now.
                    self.release();
                }
                Ok(response)
            }
            Some(Err(err)) => Err(UpstreamError::Http(err)),
            None => Err(UpstreamError::ResponseTimeout(response_timeout)),
        }
    }

    /// The response body has been read to its end: notes when, and returns
    /// the connection to the pool if its exchange completed cleanly (closes
    /// it otherwise).
    fn release(&mut self) {
        let now = std::time::Instant::now();
        self.ended_at = Some(now);
        self.in_flight = None;
        if let Some(conn) = self.conn.take() {
            if conn.reusable() {
                self.pool.put(conn, now.into());
            }
        }
    }

    /// When the response body was read to its end; `None` before, or if it
    /// failed. Read once here, for the pool and for the layers above that
    /// time the exchange.
    pub fn ended_at(&self) -> Option<std::time::Instant> {
        self.ended_at
    }
}

impl Body for Exchange {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = conn.poll_body(cx);
        match &frame {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if conn.body_ended() => self.release(),
            Poll::Ready(Some(Err(err))) => {
                tracing::debug!(backend = %self.pool.connector().addr(), cause = %err, "upstream connection failed");
                self.conn = None;
                self.in_flight = None;
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.conn.as_ref().is_none_or(|conn| conn.body_ended())
    }

    fn size_hint(&self) -> SizeHint {
        self.conn
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |conn| conn.body_size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exchange_is_small_enough_to_move_cheaply() {
        // The reason connections are boxed; see `PooledConn`.
        let conn = std::mem::size_of::<super::super::h1::Conn<super::super::connect::UpstreamIo>>();
        assert!(conn > 128, "Conn is {conn} bytes");
        // Its request in flight holds the backend's load and, where the
        // cluster has a concurrency limit, the permit: a pointer each.
        let exchange = std::mem::size_of::<Exchange>();
        assert!(exchange <= 48, "Exchange is {exchange} bytes");
    }
}
