//! Binding listeners and the accept loop, with the per-listener connection limit.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::connection::{self, Shared};
use crate::config;

/// Pending-connection queue length; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// Connections over the limit that may be answered with 503 at once. Beyond
/// these, excess connections are closed without a response, so a flood cannot
/// make tailcut spend unbounded effort on refusing it.
const REJECTING_AT_ONCE: usize = 64;

/// Binds `address` with `SO_REUSEADDR` (restart without waiting out
/// TIME_WAIT) and a deep backlog.
pub(super) fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `socket` until shutdown.
/// `index` is the listener's place in the config, for its metrics.
pub(super) async fn accept_loop(listener: config::Listener, index: usize, socket: TcpListener, shared: Arc<Shared>) {
    let limit = listener.max_connections.get();
    let admitted = Arc::new(Semaphore::new(limit));
    let rejecting = Arc::new(Semaphore::new(REJECTING_AT_ONCE));
    let name: Arc<str> = listener.name.into();
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors or similar: back off briefly rather
                // than spin, and keep serving the connections already open.
                tracing::warn!(listener = %name, cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Best effort: without NODELAY small responses wait for Nagle, but still arrive.
        let _ = stream.set_nodelay(true);
        if let Ok(permit) = admitted.clone().try_acquire_owned() {
            let counted = shared.metrics.connection(index);
            shared.tasks.spawn(connection::serve(
                stream,
                peer,
                name.clone(),
                shared.clone(),
                permit,
                counted,
            ));
        } else if let Ok(permit) = rejecting.clone().try_acquire_owned() {
            shared
                .tasks
                .spawn(connection::reject(stream, name.clone(), limit, shared.clone(), permit));
        } else {
            tracing::debug!(listener = %name, %peer, "over the connection limit; closed without response");
        }
    }
    tracing::debug!(listener = %name, "stopped accepting");
}
