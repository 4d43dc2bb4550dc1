//! Binding listeners and the accept loop, with the per-listener connection limit.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::connection::{self, Shared};
use crate::config;

/// Pending-connection queue length; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// Connections over the limit that may be answered with 503 at once. Beyond
/// these, excess connections are closed without a response, so a flood cannot
/// make tailcut spend unbounded effort on refusing it.
const REJECTING_AT_ONCE: usize = 64;

/// Binds `address` with `SO_REUSEADDR` (restart without waiting out
/// TIME_WAIT) and a deep backlog; with `reuse_port`, also `SO_REUSEPORT`, so
/// another process can bind the same address and share new connections
/// (the zero-downtime restart).
pub(super) fn bind(address: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `socket` until shutdown.
/// `index` is the listener's place in the config, for its metrics.
pub(super) async fn accept_loop(listener: config::Listener, index: usize, socket: TcpListener, shared: Arc<Shared>) {
    let gate = Gate {
        limit: listener.max_connections.get(),
        admitted: Arc::new(Semaphore::new(listener.max_connections.get())),
        rejecting: Arc::new(Semaphore::new(REJECTING_AT_ONCE)),
        tls: listener
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.server_config.clone())),
        name: listener.name.into(),
        index,
    };
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => gate.admit(stream, peer, &shared),
            Err(err) => {
                // Out of file descriptors or similar: back off briefly rather
                // than spin, and keep serving the connections already open.
                tracing::warn!(listener = %gate.name, cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    take_queued(socket, &gate, &shared);
    tracing::debug!(listener = %gate.name, "stopped accepting");
}

/// One listener's connection limit.
struct Gate {
    limit: usize,
    admitted: Arc<Semaphore>,
    rejecting: Arc<Semaphore>,
    name: Arc<str>,
    /// The listener's place in the config, for its metrics.
    index: usize,
    /// TLS termination, when the listener has it.
    tls: Option<TlsAcceptor>,
}

impl Gate {
    /// Serves `stream` if the listener is under its limit, answers 503 if
    /// not (a bounded number at once), or closes it.
    fn admit(&self, stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
        // Best effort: without NODELAY small responses wait for Nagle, but still arrive.
        let _ = stream.set_nodelay(true);
        if let Ok(permit) = self.admitted.clone().try_acquire_owned() {
            let counted = shared.metrics.connection(self.index);
            let accepted = connection::Accepted {
                stream,
                peer,
                listener: self.name.clone(),
                index: self.index,
                tls: self.tls.clone(),
            };
            shared
                .tasks
                .spawn(connection::serve(accepted, shared.clone(), permit, counted));
        } else if let Ok(permit) = self.rejecting.clone().try_acquire_owned() {
            shared.tasks.spawn(connection::reject(
                stream,
                self.name.clone(),
                self.limit,
                shared.clone(),
                permit,
            ));
        } else {
            tracing::debug!(listener = %self.name, %peer, "over the connection limit; closed without response");
        }
    }
}

/// At shutdown: accepts the connections already queued on `socket` and
/// answers them instead of letting the close reset them. With
/// `SO_REUSEPORT` another tailcut may be taking new connections on the same
/// address; those the kernel already queued here are this process's to
/// answer. (One queued between this sweep and the close is still reset,
/// unless `net.ipv4.tcp_migrate_req = 1` lets the kernel hand it to the
/// other process.)
///
/// The socket is taken out of tokio and accepted from directly until the
/// queue is empty: tokio's readiness may not have seen the last arrivals.
fn take_queued(socket: TcpListener, gate: &Gate, shared: &Arc<Shared>) {
    let Ok(socket) = socket.into_std() else {
        return;
    };
    // Still non-blocking: accept returns WouldBlock once the queue is empty.
    while let Ok((stream, peer)) = socket.accept() {
        let Ok(stream) = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) else {
            continue;
        };
        tracing::debug!(listener = %gate.name, %peer, "accepted while shutting down");
        gate.admit(stream, peer, shared);
    }
}
