//! Pooled keep-alive HTTP/1.1 connections to one backend, driven inline.
//!
//! The request's own task drives its connection (`Lease`): the request is
//! written, the response read and its body streamed without waking another
//! task (see [`super::http1`] for why not hyper's client). When the response
//! body ends, the connection goes back to a LIFO stack of idle connections,
//! so the most recently used (warmest) one is reused first.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::either::Either;

use super::http1::{ClientError, Conn, EncodedRequest};
use super::upload::UploadBody;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Opening the TCP connection failed.
    /// (Errors here say their cause in their own text and do not repeat it
    /// as a `source`, which log lines would print twice.)
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Opening the TCP connection (and the TLS session, for a TLS
    /// upstream) took longer than the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TLS handshake with the backend failed (its certificate did not
    /// verify, among other causes).
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// No response head within the response-header timeout, counted from
    /// when the request (and its body) had been sent.
    #[error("no response within {0:?}")]
    ResponseTimeout(Duration),
    /// The exchange failed before a complete response head arrived.
    #[error(transparent)]
    Http(#[from] ClientError),
}

/// A connection to a backend: plain TCP, or TLS over it.
pub(super) type UpstreamIo = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// How to reach a backend over TLS: the connector and the name its
/// certificate must carry.
#[derive(Clone)]
pub(super) struct UpstreamTls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Idle connections to one backend.
pub(super) struct Pool {
    addr: SocketAddr,
    /// Oldest at the front, most recently used at the back.
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    /// Emptied buffers to encode request heads into. Each exchange hands
    /// its connection a buffer and takes back the one the connection had,
    /// so once there is one per connection, none is allocated.
    head_buffers: Mutex<Vec<Vec<u8>>>,
    idle_timeout: Duration,
    connect_timeout: Duration,
    tls: Option<UpstreamTls>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(super) fn new(
        addr: SocketAddr,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Self {
        Self {
            addr,
            idle: Mutex::new(VecDeque::new()),
            head_buffers: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
            tls,
        }
    }

    /// Sends an encoded request and its body on an idle connection, or a new
    /// one when none is idle, and reads the response head into `headers`
    /// (an emptied map, whose storage is reused). The returned [`Lease`]
    /// must travel with the response: it streams the body, drives the
    /// connection and returns it to the pool when the body ends. A body over
    /// `max_body` bytes fails the exchange with [`SendError::Http`] caused by
    /// [`super::upload::TooLarge`].
    ///
    /// A plain function returning an `async` block rather than an `async fn`,
    /// which would keep each argument twice (as argument, and as the local
    /// it is moved into) in a future that every request moves.
    pub(super) fn send(
        self: &Arc<Self>,
        request: EncodedRequest,
        headers: http::HeaderMap,
        body: Incoming,
        now: Instant,
        response_timeout: Duration,
        max_body: Option<u64>,
    ) -> impl Future<Output = Result<(Response<()>, Lease), SendError>> + Send + 'static {
        let body = (!body.is_end_stream()).then(|| UploadBody::new(body, max_body));
        let pool = self.clone();
        async move {
            let (conn, reused) = match pool.checkout(now).await {
                Some(conn) => (conn, true),
                // Connecting is the rare path: boxing it keeps the future that
                // every request builds and moves small.
                None => (Box::pin(pool.connect()).await?, false),
            };
            let mut lease = Lease::new(conn, pool.clone());
            let timing = lease.start(request, headers, body)?;
            let response = match lease.response(now, timing, response_timeout).await {
                Ok(response) => response,
                // A pooled connection the backend closed as it was taken (its
                // idle timeout racing ours): no response came, so a fresh
                // connection may try once, if the request can be sent again.
                Err(err @ SendError::Http(ClientError::Closed | ClientError::Io(_))) if reused && !lease.answered() => {
                    let Some(request) = lease.take_request() else {
                        return Err(err);
                    };
                    lease = Lease::new(Box::pin(pool.connect()).await?, pool);
                    let timing = lease.start(request, http::HeaderMap::new(), None)?;
                    lease.response(Instant::now(), timing, response_timeout).await?
                }
                Err(err) => return Err(err),
            };
            Ok((response, lease))
        }
    }

    /// The most recently used idle connection that is still open at `now`.
    async fn checkout(&self, now: Instant) -> Option<Box<Conn>> {
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let top = idle.pop_back()?;
                if now.saturating_duration_since(top.since) >= self.idle_timeout {
                    // Everything below the top is older still.
                    idle.clear();
                    return None;
                }
                top.conn
            };
            // Poll once, never wait: a backend that closed the connection
            // (or sent something unasked) makes it unusable.
            if poll_fn(|cx| Poll::Ready(conn.poll_idle(cx))).await {
                return Some(conn);
            }
        }
    }

    /// Opens a connection to the backend: TCP, then TLS for a TLS upstream,
    /// both within the connect timeout.
    pub(super) async fn open(&self) -> Result<UpstreamIo, SendError> {
        let open = async {
            let stream = TcpStream::connect(self.addr).await.map_err(SendError::Connect)?;
            // Best effort: without NODELAY small requests wait for Nagle, but still arrive.
            let _ = stream.set_nodelay(true);
            match &self.tls {
                None => Ok(Either::Left(stream)),
                Some(tls) => tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map(Either::Right)
                    .map_err(SendError::Tls),
            }
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| SendError::ConnectTimeout)?
    }

    async fn connect(&self) -> Result<Box<Conn>, SendError> {
        Ok(Box::new(Conn::new(self.open().await?)))
    }

    /// A buffer to encode a request head into: a spare one, or a new one.
    pub(super) fn head_buffer(&self) -> Vec<u8> {
        self.head_buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    /// Keeps `buffer` for another request head, unless enough are kept or
    /// it grew large (a head with big cookies): kept ones stay allocated.
    fn keep_head_buffer(&self, mut buffer: Vec<u8>) {
        const LARGEST_KEPT: usize = 4096;
        if buffer.capacity() == 0 || buffer.capacity() > LARGEST_KEPT {
            return;
        }
        buffer.clear();
        let mut spare = self.head_buffers.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < self.max_idle {
            spare.push(buffer);
        }
    }

    /// Keeps `conn`, idle since `now`, for the next request.
    fn put(&self, conn: Box<Conn>, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Connections at the front have waited longest; close those past the
        // idle timeout here, so a pool that is always busy at the back still
        // sheds the ones it no longer needs.
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back(Idle { conn, since: now });
        }
    }
}

/// A connection checked out for one exchange; as the response body, it
/// streams what the backend sends.
pub struct Lease {
    // Boxed: a connection with its buffers and exchange state is a few
    // hundred bytes, and a lease moves several times per request (pool,
    // response, body); a box moves as one pointer and is allocated once per
    // connection, not per request.
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
    /// When the response body was read to its end.
    ended_at: Option<std::time::Instant>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.pool.addr)
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl Lease {
    fn new(conn: Box<Conn>, pool: Arc<Pool>) -> Self {
        Self {
            conn: Some(conn),
            pool,
            ended_at: None,
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
    ) -> Result<bool, SendError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(SendError::Http(ClientError::Closed));
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
    ) -> Result<Response<()>, SendError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(SendError::Http(ClientError::Closed));
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
            Some(Err(err)) => Err(SendError::Http(err)),
            None => Err(SendError::ResponseTimeout(response_timeout)),
        }
    }

    /// The response body has been read to its end: notes when, and returns
    /// the connection to the pool if its exchange completed cleanly (closes
    /// it otherwise).
    fn release(&mut self) {
        let now = std::time::Instant::now();
        self.ended_at = Some(now);
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

impl Body for Lease {
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = conn.poll_body(cx);
        match &frame {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if conn.body_ended() => self.release(),
            Poll::Ready(Some(Err(err))) => {
                tracing::debug!(backend = %self.pool.addr, cause = %err, "upstream connection failed");
                self.conn = None;
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
    fn head_buffers_are_reused_within_bounds() {
        let pool = Pool::new(
            "127.0.0.1:9".parse().expect("address"),
            2,
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
        );
        assert_eq!(pool.head_buffer().capacity(), 0, "none kept yet: a new one");
        let mut used = Vec::with_capacity(300);
        used.extend_from_slice(b"GET / HTTP/1.1\r\n");
        pool.keep_head_buffer(used);
        let again = pool.head_buffer();
        assert!(again.is_empty() && again.capacity() >= 300, "kept, emptied");

        // Large ones go, and no more than `max_idle` are kept.
        pool.keep_head_buffer(Vec::with_capacity(64 * 1024));
        assert_eq!(pool.head_buffer().capacity(), 0);
        for _ in 0..5 {
            pool.keep_head_buffer(Vec::with_capacity(100));
        }
        let kept = std::iter::from_fn(|| Some(pool.head_buffer()))
            .take_while(|buffer| buffer.capacity() > 0)
            .count();
        assert_eq!(kept, 2);
    }

    #[test]
    fn a_lease_is_small_enough_to_move_cheaply() {
        // The reason `Conn` is boxed; see `Lease`.
        assert!(
            std::mem::size_of::<Conn>() > 128,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
        assert!(
            std::mem::size_of::<Lease>() <= 32,
            "Lease is {} bytes",
            std::mem::size_of::<Lease>()
        );
    }
}
