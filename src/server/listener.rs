//! Binding listeners, the accept loop with the per-listener connection
//! limit, and what a reload does to the set of listeners.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::connection::{self, Shared};
use crate::config;
use crate::metrics::ListenerCounters;

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

/// The listeners serving now, and what a reload does to them.
pub(super) struct Listeners {
    running: Vec<Running>,
    shared: Arc<Shared>,
}

/// One listener's accept loop.
struct Running {
    /// As configured (the address may have port 0).
    config: config::Listener,
    /// The address actually bound.
    local: SocketAddr,
    /// What the accept loop admits connections with; replaced on reload.
    gate: Arc<ArcSwap<Gate>>,
}

/// What a reload will do to the listeners, with the sockets it needs
/// already bound, so that applying it cannot fail.
pub(super) struct Plan {
    /// New listeners (or ones moved to a new address), bound.
    add: Vec<(config::Listener, TcpListener)>,
    /// Running listeners that stay, by index, with their new settings.
    keep: Vec<(usize, config::Listener)>,
}

/// What applying a [`Plan`] did, by listener name.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub added: Vec<String>,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

impl Listeners {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Listeners {
            running: Vec::new(),
            shared,
        }
    }

    /// Starts accepting on `socket` for `listener`.
    pub(super) fn start(&mut self, listener: config::Listener, socket: TcpListener) {
        let local = socket.local_addr().unwrap_or(listener.address);
        let stop = self.shared.shutdown.child_token();
        let gate = Arc::new(ArcSwap::from_pointee(Gate::new(
            &listener,
            &self.shared,
            stop.clone(),
            None,
        )));
        self.shared
            .tasks
            .spawn(accept_loop(socket, gate.clone(), stop, self.shared.clone()));
        self.running.push(Running {
            config: listener,
            local,
            gate,
        });
    }

    /// Each listener's name and bound address.
    pub(super) fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.running.iter().map(|r| (r.config.name.clone(), r.local)).collect()
    }

    /// Binds what `wanted` adds. A listener whose address is unchanged
    /// (for port 0: whose name and address are) keeps its socket; any other
    /// is new. Nothing changes if a bind fails.
    pub(super) fn plan(&self, wanted: &[config::Listener], reuse_port: bool) -> Result<Plan, super::BindError> {
        let mut plan = Plan {
            add: Vec::new(),
            keep: Vec::new(),
        };
        for listener in wanted {
            let same = self.running.iter().position(|r| {
                r.config.address == listener.address && (listener.address.port() != 0 || r.config.name == listener.name)
            });
            match same {
                Some(index) => plan.keep.push((index, listener.clone())),
                None => {
                    let socket = super::bind_listener(listener, reuse_port)?;
                    plan.add.push((listener.clone(), socket));
                }
            }
        }
        Ok(plan)
    }

    /// Carries out `plan`: kept listeners take their new settings (limit,
    /// TLS certificates) for the connections they accept from now on;
    /// listeners not in the plan stop accepting and drain their connections;
    /// new ones start.
    pub(super) fn apply(&mut self, plan: Plan) -> Applied {
        let mut applied = Applied::default();
        let mut settings: Vec<Option<config::Listener>> = vec![None; self.running.len()];
        for (index, listener) in plan.keep {
            let running = &self.running[index];
            let previous = running.gate.load();
            let gate = Gate::new(&listener, &self.shared, previous.stop.clone(), Some(&previous));
            running.gate.store(Arc::new(gate));
            applied.kept.push(listener.name.clone());
            settings[index] = Some(listener);
        }
        let running = std::mem::take(&mut self.running);
        for (mut listener, settings) in running.into_iter().zip(settings) {
            match settings {
                Some(config) => {
                    listener.config = config;
                    self.running.push(listener);
                }
                None => {
                    applied.removed.push(listener.config.name.clone());
                    // Stops its accept loop and shuts its connections down gracefully.
                    listener.gate.load().stop.cancel();
                }
            }
        }
        for (listener, socket) in plan.add {
            applied.added.push(listener.name.clone());
            self.start(listener, socket);
        }
        applied
    }
}

/// Accepts connections on `socket` until its listener stops (removed by a
/// reload, or shutdown), admitting each through the gate current at the time.
async fn accept_loop(socket: TcpListener, gate: Arc<ArcSwap<Gate>>, stop: CancellationToken, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => gate.load_full().admit(stream, peer, &shared),
            Err(err) => {
                // Out of file descriptors or similar: back off briefly rather
                // than spin, and keep serving the connections already open.
                tracing::warn!(listener = %gate.load().name, cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let gate = gate.load_full();
    take_queued(socket, &gate, &shared);
    tracing::debug!(listener = %gate.name, "stopped accepting");
}

/// One listener's admission rules: its connection limit and TLS.
pub(super) struct Gate {
    limit: usize,
    admitted: Arc<Semaphore>,
    rejecting: Arc<Semaphore>,
    pub name: Arc<str>,
    /// TLS termination, when the listener has it.
    pub tls: Option<TlsAcceptor>,
    pub counters: ListenerCounters,
    /// Cancelled when the listener stops: its connections then shut down gracefully.
    pub stop: CancellationToken,
}

impl Gate {
    /// The gate for `listener`. A reload passes the `previous` gate, whose
    /// count of open connections carries over to the new limit.
    fn new(listener: &config::Listener, shared: &Shared, stop: CancellationToken, previous: Option<&Gate>) -> Gate {
        let limit = listener.max_connections.get();
        let admitted = match previous {
            Some(previous) => {
                resize(&previous.admitted, previous.limit, limit);
                previous.admitted.clone()
            }
            None => Arc::new(Semaphore::new(limit)),
        };
        Gate {
            limit,
            admitted,
            rejecting: previous.map_or_else(|| Arc::new(Semaphore::new(REJECTING_AT_ONCE)), |p| p.rejecting.clone()),
            name: listener.name.as_str().into(),
            tls: listener
                .tls
                .as_ref()
                .map(|tls| TlsAcceptor::from(tls.server_config.clone())),
            counters: shared.metrics.listener(&listener.name, listener.tls.is_some()),
            stop,
        }
    }

    /// Serves `stream` if the listener is under its limit, answers 503 if
    /// not (a bounded number at once), or closes it.
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
        // Best effort: without NODELAY small responses wait for Nagle, but still arrive.
        let _ = stream.set_nodelay(true);
        if let Ok(permit) = self.admitted.clone().try_acquire_owned() {
            let counted = self.counters.connection();
            let accepted = connection::Accepted {
                stream,
                peer,
                gate: self.clone(),
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

/// Changes the limit of `admitted` from `from` to `to` permits in all,
/// keeping the ones open connections hold. A lower limit takes away the free
/// permits at once and, when connections hold more than the new limit, the
/// rest as those connections close: until then new ones are refused.
fn resize(admitted: &Arc<Semaphore>, from: usize, to: usize) {
    if to >= from {
        admitted.add_permits(to - from);
        return;
    }
    let owed = (from - to) - admitted.forget_permits(from - to);
    if owed == 0 {
        return;
    }
    let admitted = admitted.clone();
    // A waiting acquirer gets released permits before try_acquire can see
    // them, so the owed permits are taken as connections close. Limits are
    // at most 2^30, so `owed` fits.
    let owed = u32::try_from(owed).unwrap_or(u32::MAX);
    tokio::spawn(async move {
        if let Ok(permits) = admitted.acquire_many_owned(owed).await {
            permits.forget();
        }
    });
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
fn take_queued(socket: TcpListener, gate: &Arc<Gate>, shared: &Arc<Shared>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_limit_counts_the_connections_already_open() {
        let admitted = Arc::new(Semaphore::new(4));
        let held: Vec<_> = (0..3)
            .map(|_| admitted.clone().try_acquire_owned().expect("under the limit"))
            .collect();

        // Raised to 6 with 3 open: 3 more.
        resize(&admitted, 4, 6);
        assert_eq!(admitted.available_permits(), 3);

        // Lowered to 2 with 3 open: none free until one has closed.
        resize(&admitted, 6, 2);
        tokio::task::yield_now().await;
        assert_eq!(admitted.available_permits(), 0);
        let mut held = held.into_iter();
        drop(held.next());
        tokio::task::yield_now().await;
        assert_eq!(admitted.available_permits(), 0, "two open, limit 2");
        drop(held.next());
        tokio::task::yield_now().await;
        assert_eq!(admitted.available_permits(), 1, "one open, limit 2");
        drop(held.next());
        assert_eq!(admitted.available_permits(), 2, "none open, limit 2");
    }
}
