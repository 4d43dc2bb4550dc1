//! Idle keep-alive connections to one backend, and spare buffers.
//!
//! Connections wait on a LIFO stack: the most recently used (warmest) one is
//! taken first, and the oldest close once idle past the pool's timeout.
//! Request-head buffers are kept beside them, so that once there is one
//! per connection, encoding a request allocates nothing.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::connect::{Connector, UpstreamIo};
use super::error::UpstreamError;
use super::h1::Conn;

/// A pooled connection to a backend, boxed: a connection with its buffers
/// and exchange state is a few hundred bytes, and the exchange that holds it
/// moves several times per request (pool, response, body); a box moves as
/// one pointer and is allocated once per connection, not per request.
pub type PooledConn = Box<Conn<UpstreamIo>>;

struct Idle {
    conn: PooledConn,
    since: Instant,
}

/// Idle connections to one backend, and how to open more.
pub struct Pool {
    connector: Connector,
    /// Oldest at the front, most recently used at the back.
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    /// Emptied buffers to encode request heads into. Each exchange hands
    /// its connection a buffer and takes back the one the connection had,
    /// so once there is one per connection, none is allocated.
    head_buffers: Mutex<Vec<Vec<u8>>>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("connector", &self.connector)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool keeping at most `max_idle` connections, each for at
    /// most `idle_timeout`; new ones come from `connector`.
    pub fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            connector,
            idle: Mutex::new(VecDeque::new()),
            head_buffers: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// How new connections are opened.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The most recently used idle connection that is still open at `now`.
    pub async fn checkout(&self, now: Instant) -> Option<PooledConn> {
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

    /// A new connection, for when none is idle.
    pub async fn connect(&self) -> Result<PooledConn, UpstreamError> {
        Ok(Box::new(Conn::new(self.connector.open().await?)))
    }

    /// A buffer to encode a request head into: a spare one, or a new one.
    pub fn head_buffer(&self) -> Vec<u8> {
        self.head_buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    /// Keeps `buffer` for another request head, unless enough are kept or
    /// it grew large (a head with big cookies): kept ones stay allocated.
    pub fn keep_head_buffer(&self, mut buffer: Vec<u8>) {
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
    pub fn put(&self, conn: PooledConn, now: Instant) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_buffers_are_reused_within_bounds() {
        let connector = Connector::new("127.0.0.1:9".parse().expect("address"), Duration::from_secs(1), None);
        let pool = Pool::new(connector, 2, Duration::from_secs(1));
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
}
