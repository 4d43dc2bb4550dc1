//! Pooled keep-alive HTTP/1.1 connections to one backend, driven inline.
//!
//! hyper's own pooled client (hyper-util's legacy `Client`) runs each
//! upstream connection as a separate task and hands it every request through
//! a channel, with a pool keyed by a hashed authority. Profiles of a proxy
//! built on it show that hand-off among the largest user-space costs. Here
//! the request's own task polls the connection (`Lease::drive`): the request
//! is written, the response read and its body streamed without waking another
//! task. When the response body ends, the connection goes back to a LIFO
//! stack of idle connections, so the most recently used (warmest) one is
//! reused first.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;

use super::upload::{UploadBody, UploadProgress};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::either::Either;

/// Largest read buffer of one upstream connection. hyper's default lets it
/// grow to about 400 KiB; 64 KiB keeps memory per pooled connection small
/// while still reading large bodies in few system calls.
const READ_BUFFER: usize = 64 * 1024;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Opening the TCP connection failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// Opening the TCP connection (and the TLS session, for a TLS
    /// upstream) took longer than the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TLS handshake with the backend failed (its certificate did not
    /// verify, among other causes).
    /// (Not a `source`: the I/O error's own source is the same rustls error,
    /// which log lines would print twice.)
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// No response head within the response-header timeout, counted from
    /// when the request (and its body) had been sent.
    #[error("no response within {0:?}")]
    ResponseTimeout(Duration),
    /// A new connection closed before the request could be written.
    #[error("connection closed before the request was sent")]
    ClosedBeforeSend,
    /// The connection failed before a complete response head arrived.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// One upstream HTTP/1.1 connection: the request side and the connection
/// state machine that must be polled for any I/O to happen.
struct Conn {
    sender: SendRequest<UploadBody>,
    driver: Connection<TokioIo<UpstreamIo>, UploadBody>,
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
            max_idle,
            idle_timeout,
            connect_timeout,
            tls,
        }
    }

    /// Sends `request` (origin-form URI) on an idle connection, or a new one
    /// when none is idle. The returned [`Lease`] must travel with the
    /// response body: it drives the connection and returns it to the pool
    /// when the body ends.
    /// A body over `max_body` bytes fails the exchange with
    /// [`SendError::Http`] caused by [`super::upload::TooLarge`].
    pub(super) async fn send(
        self: &Arc<Self>,
        request: Request<Incoming>,
        response_timeout: Duration,
        max_body: Option<u64>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let (parts, body) = request.into_parts();
        let (body, upload) = UploadBody::new(body, max_body);
        let request = Request::from_parts(parts, body);
        let (conn, reused) = match self.checkout().await {
            Some(conn) => (conn, true),
            // Connecting is the rare path: boxing it keeps the future that
            // every request builds and moves small.
            None => (Box::pin(self.connect()).await?, false),
        };
        match Lease::new(conn, self.clone())
            .send(request, &upload, response_timeout)
            .await
        {
            Ok(exchange) => Ok(exchange),
            // The pooled connection closed before the request was written:
            // nothing reached the backend, so a fresh connection may try.
            Err(RetryableOr::Retry(unsent)) if reused => {
                Box::pin(self.send_on_new_connection(unsent, &upload, response_timeout)).await
            }
            Err(RetryableOr::Retry(_)) => Err(SendError::ClosedBeforeSend),
            Err(RetryableOr::Failed(err)) => Err(err),
        }
    }

    async fn send_on_new_connection(
        self: &Arc<Self>,
        request: Request<UploadBody>,
        upload: &UploadProgress,
        response_timeout: Duration,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let conn = self.connect().await?;
        match Lease::new(conn, self.clone())
            .send(request, upload, response_timeout)
            .await
        {
            Ok(exchange) => Ok(exchange),
            Err(RetryableOr::Retry(_)) => Err(SendError::ClosedBeforeSend),
            Err(RetryableOr::Failed(err)) => Err(err),
        }
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<Box<Conn>> {
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let top = idle.pop_back()?;
                if top.since.elapsed() >= self.idle_timeout {
                    // Everything below the top is older still.
                    idle.clear();
                    return None;
                }
                top.conn
            };
            // Poll once, never wait: let the connection notice a close from
            // the backend and settle its previous exchange, then ask whether
            // it takes a request now. One that is still busy (say, writing a
            // request body the backend answered early) is closed, not waited for.
            let ready = poll_fn(|cx| {
                Poll::Ready(match Pin::new(&mut conn.driver).poll(cx) {
                    Poll::Ready(_) => false,
                    Poll::Pending => matches!(conn.sender.poll_ready(cx), Poll::Ready(Ok(()))),
                })
            })
            .await;
            if ready {
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
        let stream = self.open().await?;
        let (sender, driver) = http1::Builder::new()
            .max_buf_size(READ_BUFFER)
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Box::new(Conn { sender, driver }))
    }

    fn put(&self, conn: Box<Conn>) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
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

/// A connection checked out for one exchange.
pub struct Lease {
    // Boxed: a hyper connection with its buffers is about a kilobyte, and a
    // lease moves several times per request (pool, response, body); a box
    // moves as one pointer and is allocated once per connection, not per request.
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.pool.addr)
            .field("open", &self.conn.is_some())
            .finish()
    }
}

// The request travels by value either way; boxing it would cost an
// allocation on every request to shrink a value that lives for one return.
#[allow(clippy::large_enum_variant)]
enum RetryableOr {
    Retry(Request<UploadBody>),
    Failed(SendError),
}

impl Lease {
    fn new(conn: Box<Conn>, pool: Arc<Pool>) -> Self {
        Self { conn: Some(conn), pool }
    }

    /// Writes `request` and reads the response head, polling the connection
    /// in this task. The response timeout runs from when `upload` is done
    /// (at once for a request without a body).
    async fn send(
        mut self,
        request: Request<UploadBody>,
        upload: &UploadProgress,
        response_timeout: Duration,
    ) -> Result<(Response<Incoming>, Lease), RetryableOr> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(RetryableOr::Retry(request));
        };
        let response = conn.sender.try_send_request(request);
        tokio::pin!(response);
        let timer = tokio::time::sleep(response_timeout);
        tokio::pin!(timer);
        let mut timing = upload.is_done();
        let result = poll_fn(|cx| {
            self.drive(cx);
            if let Poll::Ready(result) = response.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            if !timing && upload.is_done() {
                timer.as_mut().reset(tokio::time::Instant::now() + response_timeout);
                timing = true;
            }
            if timing && timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        match result {
            Some(Ok(response)) => Ok((response, self)),
            Some(Err(mut err)) => match err.take_message() {
                Some(request) => Err(RetryableOr::Retry(request)),
                None => Err(RetryableOr::Failed(SendError::Http(err.into_error()))),
            },
            None => Err(RetryableOr::Failed(SendError::ResponseTimeout(response_timeout))),
        }
    }

    /// Polls the connection so it makes progress (reads the response body,
    /// writes the request body). Call before polling the response body.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.as_mut() {
            if let Poll::Ready(result) = Pin::new(&mut conn.driver).poll(cx) {
                if let Err(err) = result {
                    tracing::debug!(backend = %self.pool.addr, cause = %err, "upstream connection failed");
                }
                self.conn = None;
            }
        }
    }

    /// The exchange completed: the connection may serve the next request.
    /// The response has ended. The connection goes back to the pool only if
    /// one poll shows it idle and ready for the next request: a backend may
    /// answer early (401, 413) while the request body is still being written,
    /// and such a connection must be closed, not parked half-way through a
    /// request where nothing would drive it.
    pub(super) fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut conn) = self.conn.take() else { return };
        if Pin::new(&mut conn.driver).poll(cx).is_ready() {
            return;
        }
        if let Poll::Ready(Ok(())) = conn.sender.poll_ready(cx) {
            self.pool.put(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_small_enough_to_move_cheaply() {
        // The reason `Conn` is boxed; see `Lease`.
        assert!(
            std::mem::size_of::<Conn>() > 256,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
        assert!(
            std::mem::size_of::<Lease>() <= 16,
            "Lease is {} bytes",
            std::mem::size_of::<Lease>()
        );
    }
}
