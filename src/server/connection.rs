//! Serving one client connection: TLS termination when the listener has it,
//! HTTP/1.1 or HTTP/2, the idle and client write timeouts, and graceful
//! shutdown.
//!
//! Over TLS, ALPN chooses the protocol (`h2` or `http/1.1`). In cleartext,
//! the protocol is chosen by peeking at the HTTP/2 connection preface, then
//! hyper's HTTP/1 or HTTP/2 server runs on the plain socket. hyper-util's
//! `auto` builder does the same detection but keeps every read of the
//! connection going through its rewind wrapper and version dispatch; serving
//! the plain socket keeps the HTTP/1 request path as short as hyper allows.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::call_at_once::CallAtOnce;
use super::gated::Gated;
use super::listener::Gate;
use super::write_timeout::WriteTimeout;
use crate::metrics::{ConnectionGuard, Metrics};
use crate::middleware::{self, activity::Activity};
use crate::proxy::{Proxy, ProxyError, Tunnels};

/// The first bytes an HTTP/2 client with prior knowledge sends (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every connection of a server shares.
pub(super) struct Shared {
    /// How connections are served; a reload replaces it for connections
    /// accepted from then on.
    pub settings: ArcSwap<Settings>,
    pub proxy: Proxy,
    pub metrics: Metrics,
    /// Cancelled at shutdown; each listener's stop token is a child of it.
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// The connection-level part of a configuration: protocols, limits and
/// client timeouts. A connection keeps the settings it was accepted with.
pub(super) struct Settings {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
    /// Serves over-limit connections, whichever protocol they speak.
    pub http: auto::Builder<TokioExecutor>,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub client_write_timeout: Duration,
}

/// A client connection as accepted, with the gate of the listener it came
/// to: its name, TLS, counters and stop token.
pub(super) struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub gate: Arc<Gate>,
}

/// Serves requests on a connection: over TLS, with the protocol ALPN chose,
/// or in cleartext, HTTP/1.1 or h2c by the first bytes. `permit` holds a
/// place under the listener's connection limit, and `counted` counts the
/// connection as active, for as long as the connection lives, or a
/// WebSocket tunnel it became.
///
/// A plain function returning the connection's future rather than an
/// `async fn`, which would keep its arguments in that future (the task every
/// connection holds, idle or not) beside the copies the body works on.
pub(super) fn serve(
    accepted: Accepted,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    counted: ConnectionGuard,
) -> impl Future<Output = ()> + Send + 'static {
    let Accepted { stream, peer, gate } = accepted;
    let hold: Arc<dyn Any + Send + Sync> = Arc::new((permit, counted));
    let settings = shared.settings.load_full();
    let span = tracing::debug_span!("connection", %peer, listener = %gate.name);
    async move {
        let on = Connection {
            shared: &shared,
            settings: &settings,
            stop: &gate.stop,
            hold: &hold,
        };
        match &gate.tls {
            None => match starts_with_h2_preface(&stream, settings.header_timeout).await {
                Some(h2) => {
                    let stream = WriteTimeout::new(stream, settings.client_write_timeout);
                    serve_http(TokioIo::new(stream), h2, peer, "http", on).await;
                }
                None => tracing::debug!("closed before sending a request"),
            },
            Some(acceptor) => {
                // Under TLS, so that TLS records waiting to be sent count too.
                let stream = WriteTimeout::new(stream, settings.client_write_timeout);
                // Bounded like a request head: a client that stalls its
                // handshake must not hold the connection.
                match tokio::time::timeout(settings.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        // Boxed: TLS state makes this future several times the
                        // size of the cleartext one, and a connection's task is
                        // as large as its largest path.
                        Box::pin(serve_http(TokioIo::new(stream), h2, peer, "https", on)).await;
                    }
                    Ok(Err(err)) => {
                        gate.counters.tls_handshake_failure();
                        tracing::debug!(cause = %err, "TLS handshake failed");
                    }
                    Err(_) => {
                        gate.counters.tls_handshake_failure();
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            }
        }
    }
    .instrument(span)
}

/// What serving one connection needs: the server's shared state, the
/// settings the connection was accepted with, its listener's stop token, and
/// its hold on the listener's limit (lent to WebSocket tunnels).
#[derive(Clone, Copy)]
struct Connection<'a> {
    shared: &'a Shared,
    settings: &'a Settings,
    stop: &'a CancellationToken,
    hold: &'a Arc<dyn Any + Send + Sync>,
}

/// Serves HTTP/2 (`h2`) or HTTP/1.1 on `io`; `proto` is the scheme the
/// client used, for `X-Forwarded-Proto`.
async fn serve_http<I>(io: TokioIo<I>, h2: bool, peer: SocketAddr, proto: &'static str, on: Connection<'_>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let service = CallAtOnce(middleware::stack(
        on.shared
            .proxy
            .service_for(peer, proto, Tunnels::new(on.shared.tasks.clone(), on.hold.clone())),
        activity.clone(),
        on.shared.metrics.clone(),
    ));
    if h2 {
        let connection = on.settings.http2.serve_connection(io, service);
        // Boxed, so that HTTP/1.1 connections do not carry the size of an
        // HTTP/2 connection's state in their task.
        Box::pin(drive(
            connection,
            http2::Connection::graceful_shutdown,
            &activity,
            on,
            FirstRequest::NotAwaited,
            // hyper's HTTP/2 server bounds each stream's headers itself.
            None,
        ))
        .await;
    } else {
        let connection = on.settings.http1.serve_connection(io, service).with_upgrades();
        drive(
            connection,
            http1::UpgradeableConnection::graceful_shutdown,
            &activity,
            on,
            FirstRequest::Awaited,
            Some(on.settings.header_timeout),
        )
        .await;
    }
}

/// What shutdown does to a connection whose first request has not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstRequest {
    /// HTTP/1.1: the client has sent the first bytes of its first request
    /// (`serve` peeked them), but hyper treats a connection with no request
    /// parsed yet as idle and would close it unanswered. Shutdown waits for
    /// that request to start (up to the header timeout), answers it, then
    /// closes. This covers connections accepted just before or during the
    /// drain, as in a zero-downtime restart.
    Awaited,
    /// HTTP/2: graceful shutdown already finishes the streams the client
    /// opened.
    NotAwaited,
}

/// Runs `connection` until it ends, shutting it down gracefully when its
/// listener stops (shutdown, or removed by a reload) or once it has been
/// idle for the idle timeout; a connection still open the header timeout
/// after that, with nothing in flight, is closed.
///
/// For HTTP/1.1, `header_timeout` bounds the time from the connection's
/// start, or the end of its last response, until the next request's head has
/// been read: until then no request is in flight. A connection over it (or
/// over the idle timeout, if shorter) is closed at once, as hyper's own
/// header timeout would (a graceful shutdown would wait for a head that is
/// still arriving). This is the request-header timeout (slowloris defence),
/// kept here rather than in hyper, whose timer costs an allocation and a
/// timer registration for every request. Only a complete head counts, so a
/// client trickling a head byte by byte gains nothing.
async fn drive<C, E>(
    connection: C,
    graceful_shutdown: fn(Pin<&mut C>),
    activity: &Activity,
    on: Connection<'_>,
    first_request: FirstRequest,
    header_timeout: Option<Duration>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(connection);
    // One timer serves both limits: with nothing in flight, the shorter ends
    // the connection.
    let quiet = header_timeout.map_or(on.settings.idle_timeout, |limit| limit.min(on.settings.idle_timeout));
    // Set once a graceful shutdown has begun, to when the connection is
    // closed if it has not ended by itself: hyper's HTTP/2 shutdown sends
    // GOAWAY and a PING and waits for the PING's answer, which a client that
    // never reads would hold off forever, keeping its place under the
    // listener's connection limit. Requests still in flight, or a response
    // that ended less than `grace` ago, push it back (a drain has its own
    // limit).
    let mut close_by: Option<tokio::time::Instant> = None;
    let grace = on.settings.header_timeout;
    // Set when shutdown came before the first request: close once it starts,
    // or at this deadline.
    let mut close_after_first: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            // In order, the connection first: it is what wakes this task
            // nearly every time, and an unbiased select draws a random
            // starting branch on every poll. The signals beside it are
            // `Gated`: polled only when they woke the task.
            biased;
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(cause = %err, "connection ended with error");
                }
                return;
            }
            () = Gated::new(on.stop.cancelled()), if close_by.is_none() && close_after_first.is_none() => {
                if first_request == FirstRequest::Awaited && !activity.has_started() {
                    close_after_first = Some(tokio::time::Instant::now() + on.settings.header_timeout);
                } else {
                    graceful_shutdown(connection.as_mut());
                    close_by = Some(tokio::time::Instant::now() + grace);
                }
            }
            () = activity.first_request(), if close_by.is_none() && close_after_first.is_some() => {
                graceful_shutdown(connection.as_mut());
                close_by = Some(tokio::time::Instant::now() + grace);
            }
            () = tokio::time::sleep_until(close_after_first.unwrap_or_else(tokio::time::Instant::now)),
                if close_by.is_none() && close_after_first.is_some() => {
                tracing::debug!("no request within the header timeout while shutting down");
                graceful_shutdown(connection.as_mut());
                close_by = Some(tokio::time::Instant::now() + grace);
            }
            () = Gated::new(activity.idle_for(quiet)), if header_timeout.is_some() || close_by.is_none() => {
                if header_timeout.is_some() {
                    tracing::debug!("no request head within the header or idle timeout");
                    return;
                }
                tracing::debug!("idle timeout");
                graceful_shutdown(connection.as_mut());
                close_by = Some(tokio::time::Instant::now() + grace);
            }
            () = tokio::time::sleep_until(close_by.unwrap_or_else(tokio::time::Instant::now)), if close_by.is_some() => {
                // A response that ended lately may still be on its way out:
                // it gets the same grace to be written.
                if activity.quiet_for(grace) {
                    tracing::debug!("closed: the client did not complete the graceful close in time");
                    return;
                }
                close_by = Some(tokio::time::Instant::now() + grace);
            }
        }
    }
}

/// Whether the client opened with the HTTP/2 preface, read without consuming
/// it; `None` if it closed or sent nothing within `limit`.
async fn starts_with_h2_preface(stream: &TcpStream, limit: Duration) -> Option<bool> {
    tokio::time::timeout(limit, peek_preface(stream)).await.ok()?.ok()?
}

/// Peeks until the first bytes tell HTTP/2 from HTTP/1.1; `None` if the
/// client closed first.
///
/// A partial preface (`PRI * HT`) means the rest is on its way. Peeking
/// leaves the bytes in the socket, so the socket stays readable and a plain
/// wait for readability would return at once. `try_io` clears tokio's
/// readiness when told the socket would block, and the next wait then lasts
/// until more bytes arrive (epoll is edge-triggered, and bytes that came in
/// between set it again). A client that closed its side stays readable for
/// good: a partial preface then is a client that left. So a client that
/// stops mid-preface costs nothing until the timeout.
async fn peek_preface(stream: &TcpStream) -> std::io::Result<Option<bool>> {
    let mut buf = [0u8; 24];
    // The usual case: the first peek holds enough to decide.
    let n = stream.peek(&mut buf).await?;
    if let Some(decided) = preface_decided(&buf[..n]) {
        return Ok(decided);
    }
    // A std handle on a duplicate of the socket, for a peek that does not
    // wait (tokio has none). Rare: only clients that split the preface.
    let fd = std::os::fd::AsFd::as_fd(stream).try_clone_to_owned()?;
    let peeker = std::net::TcpStream::from(fd);
    let mut peek = || -> std::io::Result<Option<Option<bool>>> {
        let n = peeker.peek(&mut buf)?;
        Ok(preface_decided(&buf[..n]))
    };
    loop {
        let ready = stream.ready(tokio::io::Interest::READABLE).await?;
        if ready.is_read_closed() {
            return Ok(peek()?.unwrap_or(None));
        }
        match stream.try_io(tokio::io::Interest::READABLE, || {
            peek()?.ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
        }) {
            Ok(decided) => return Ok(decided),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
}

/// What the first `bytes` of a connection say: `Some(None)` it closed,
/// `Some(Some(h2))` decided, `None` a partial preface.
fn preface_decided(bytes: &[u8]) -> Option<Option<bool>> {
    if bytes.is_empty() {
        return Some(None);
    }
    if bytes != &H2_PREFACE[..bytes.len()] {
        return Some(Some(false));
    }
    (bytes.len() == H2_PREFACE.len()).then_some(Some(true))
}

/// Answers every request on an over-limit connection with 503 and
/// `Retry-After`, then closes it. Bounded by the header timeout so a silent
/// client cannot hold the rejection slot.
pub(super) async fn reject(
    stream: TcpStream,
    listener: Arc<str>,
    limit: usize,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |_request| {
        let error = ProxyError::Overloaded {
            listener: listener.to_string(),
            limit,
        };
        std::future::ready(Ok::<_, Infallible>(error.into_response()))
    });
    let settings = shared.settings.load_full();
    let connection = settings.http.serve_connection(TokioIo::new(stream), service);
    if tokio::time::timeout(settings.header_timeout, connection).await.is_err() {
        tracing::debug!("over-limit connection closed at the header timeout");
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    /// Runs `future` to its end, counting how often it was polled.
    async fn counting_polls<F: Future>(future: F) -> (F::Output, usize) {
        let mut future = pin!(future);
        let mut polls = 0;
        let output = std::future::poll_fn(|cx| {
            polls += 1;
            future.as_mut().poll(cx)
        })
        .await;
        (output, polls)
    }

    #[tokio::test]
    async fn the_first_bytes_tell_http2_from_http1() {
        let (mut client, server) = pair().await;
        client.write_all(H2_PREFACE).await.expect("write");
        assert_eq!(
            starts_with_h2_preface(&server, Duration::from_secs(5)).await,
            Some(true)
        );

        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        assert_eq!(
            starts_with_h2_preface(&server, Duration::from_secs(5)).await,
            Some(false)
        );

        let (client, server) = pair().await;
        drop(client);
        assert_eq!(starts_with_h2_preface(&server, Duration::from_secs(5)).await, None);
    }

    #[tokio::test]
    async fn a_partial_preface_waits_for_the_next_bytes_without_spinning() {
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..8]).await.expect("write");
        // Nothing more comes: undecided at the limit, having been woken only
        // by the bytes that came, not once per timer tick.
        let (decided, polls) = counting_polls(starts_with_h2_preface(&server, Duration::from_millis(300))).await;
        assert_eq!(decided, None);
        assert!(polls <= 5, "polled {polls} times while waiting");

        // The rest, in two parts: decided once it is all there.
        let waiting = tokio::spawn(async move {
            let decided = counting_polls(starts_with_h2_preface(&server, Duration::from_secs(10))).await;
            (decided, server)
        });
        client.write_all(&H2_PREFACE[8..16]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(&H2_PREFACE[16..]).await.expect("write");
        let ((decided, polls), _server) = waiting.await.expect("task");
        assert_eq!(decided, Some(true));
        assert!(polls <= 6, "polled {polls} times");
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_preface_is_gone_at_once() {
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..8]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        // Its side closed, the socket stays readable: no spinning until the
        // limit, and no decision either.
        let (decided, polls) = counting_polls(starts_with_h2_preface(&server, Duration::from_secs(10))).await;
        assert_eq!(decided, None);
        assert!(polls <= 5, "polled {polls} times");
    }
}
