//! The client write timeout: a client socket whose writes fail once the
//! client has accepted no bytes for `timeouts.client_write`.
//!
//! A client that stops reading fills its socket's buffers; from then on
//! every write waits, and without a limit its connection (and the backend
//! connection streaming to it) would be held for as long as the client
//! likes. The clock runs only while a write is waiting and restarts with
//! every byte accepted, like nginx's `send_timeout`: a slow download that
//! keeps moving is never cut. hyper has no such setting for the server side,
//! and tokio's I/O types none at all, hence this wrapper.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// `inner`, whose writes (and flushes, and shutdown) fail with
    /// [`io::ErrorKind::TimedOut`] after waiting `limit` with no progress.
    pub(super) struct WriteTimeout<S> {
        #[pin]
        inner: S,
        limit: Duration,
        // Made on the first write that waits, then reused: a connection
        // whose writes never wait allocates nothing for it.
        timer: Option<Pin<Box<Sleep>>>,
        waiting: bool,
    }
}

impl<S> WriteTimeout<S> {
    pub(super) fn new(inner: S, limit: Duration) -> Self {
        WriteTimeout {
            inner,
            limit,
            timer: None,
            waiting: false,
        }
    }
}

/// Passes `poll` on, starting the clock when a write starts waiting and
/// stopping it when one completes; a wait that reaches `limit` is an error.
fn watch<T>(
    poll: Poll<io::Result<T>>,
    cx: &mut Context<'_>,
    limit: Duration,
    timer: &mut Option<Pin<Box<Sleep>>>,
    waiting: &mut bool,
) -> Poll<io::Result<T>> {
    if poll.is_ready() {
        *waiting = false;
        return poll;
    }
    if !*waiting {
        // The clock starts with this wait; a wait already running keeps its deadline.
        *waiting = true;
        let deadline = Instant::now() + limit;
        match timer.as_mut() {
            Some(timer) => timer.as_mut().reset(deadline),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
    match timer.as_mut().map(|timer| timer.as_mut().poll(cx)) {
        Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client accepted no bytes for {limit:?}"),
        ))),
        _ => Poll::Pending,
    }
}

impl<S: AsyncRead> AsyncRead for WriteTimeout<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for WriteTimeout<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.inner.poll_write(cx, buf);
        watch(poll, cx, *this.limit, this.timer, this.waiting)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.inner.poll_write_vectored(cx, bufs);
        watch(poll, cx, *this.limit, this.timer, this.waiting)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.inner.poll_flush(cx);
        watch(poll, cx, *this.limit, this.timer, this.waiting)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.inner.poll_shutdown(cx);
        watch(poll, cx, *this.limit, this.timer, this.waiting)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_fails_the_write_after_the_limit() {
        // A pipe holding 16 bytes, read by no one.
        let (writer, _reader) = tokio::io::duplex(16);
        let mut writer = WriteTimeout::new(writer, Duration::from_secs(5));
        let started = Instant::now();
        let err = writer
            .write_all(&[0u8; 64])
            .await
            .expect_err("a stalled write must fail");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_never_cut() {
        let (writer, mut reader) = tokio::io::duplex(16);
        let mut writer = WriteTimeout::new(writer, Duration::from_secs(5));
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 8];
            loop {
                // Each read 4 s after the last: under the limit every time,
                // while the whole transfer takes far longer than it.
                tokio::time::sleep(Duration::from_secs(4)).await;
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let started = Instant::now();
        writer.write_all(&[7u8; 64]).await.expect("a moving transfer completes");
        writer.shutdown().await.expect("shutdown");
        drop(writer);
        assert!(started.elapsed() > Duration::from_secs(20));
        assert_eq!(read.await.expect("reader"), vec![7u8; 64]);
    }
}
