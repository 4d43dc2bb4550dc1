//! HTTP/1.1 to backends: one exchange at a time on one pooled connection,
//! driven by the request's own task.
//!
//! Why not hyper's client connection: it runs the connection as a state
//! machine fed through a request channel, answers through a oneshot, and
//! hands the response body over a third channel. A profile of tailcut at
//! saturation built on it put about a fifth of all CPU samples (two fifths
//! of tailcut's user-space time) in that client, its channels and its body;
//! a proxy doing nginx's work on nginx's budget cannot spend that. Here the
//! request head is serialized once into a buffer the connection keeps, the
//! response head is parsed with `httparse` (the parser hyper itself uses),
//! and response body frames are `Bytes` split off the read buffer: nothing is
//! copied and nothing crosses a channel.
//!
//! What it implements of RFC 9112, and no more: a request body goes with its
//! `Content-Length`, or chunked (with trailers) when it has none; informational
//! responses (1xx but 101) are skipped; the response body is framed by HEAD,
//! 204 and 304 (none), `Transfer-Encoding` (chunked, else until close),
//! `Content-Length`, or the connection closing (section 6.3). Upgrades do not
//! come here: WebSocket tunnels use hyper's client, where their rarity makes
//! its cost irrelevant.
//!
//! The request body keeps streaming while the response is read, so a backend
//! that answers early, or streams both ways at once, is served as it would
//! be by hyper. A connection goes back to its pool only after a complete
//! exchange that left nothing unsent and nothing unread.

#[cfg(test)]
mod properties;
mod request;
mod response;

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};

use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::upload::{UploadBody, UploadError};
pub use request::{is_idempotent, EncodedRequest};
use response::{Head, ResponseBody, Step};

/// Read buffer reserved for a response head, and the most bytes read at once
/// while no body is streaming.
const HEAD_CHUNK: usize = 8 * 1024;

/// The most bytes read at once while a response body streams, and the
/// largest response head accepted. hyper's default lets a connection's buffer
/// grow to about 400 KiB; 64 KiB keeps pooled connections small while still
/// reading large bodies in few system calls.
const BODY_CHUNK: usize = 64 * 1024;

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The backend closed the connection before a complete response head.
    #[error("connection closed before a response")]
    Closed,
    /// The backend closed the connection in the middle of the response body.
    #[error("connection closed before the end of the response body")]
    ClosedEarly,
    /// Reading from or writing to the backend failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The backend's response was not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    InvalidResponse(&'static str),
    /// The client's request cannot be sent as HTTP/1.1 as it is.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// Reading the client's request body failed (it went away, or sent more
    /// than the route allows).
    /// (Said in the text, not as a `source`, so that a chain of causes
    /// does not print it twice.)
    #[error("request body: {0}")]
    Upload(UploadError),
}

/// The request's side of the exchange in progress.
enum Sending {
    /// The head, then the body (while there is more of it), being written.
    Request(Option<request::BodyWriter>),
    /// Head and body written and flushed.
    Sent,
    /// Writing failed: nothing more is sent, but the response may still be
    /// read (a backend may answer an upload it refuses, then close). The
    /// error, until the exchange reports it.
    Failed(Option<io::Error>),
}

/// The response's side of the exchange in progress.
enum Receiving {
    /// Until the final response head.
    Head,
    /// What remains of its body.
    Body(ResponseBody),
}

/// One connection to a backend over `Io`, and the exchange in progress on it.
///
/// The exchange is full duplex (a request body keeps streaming while the
/// response is read), so its state is two enums, one per direction, not
/// one: [`Sending`] and [`Receiving`].
pub struct Conn<Io> {
    io: Io,
    read: BytesMut,
    out: Outgoing,
    sending: Sending,
    receiving: Receiving,
    /// The exchange was a HEAD request, whose response has no body.
    head_request: bool,
    /// The request may be sent again on another connection
    /// ([`EncodedRequest::resendable`]); its encoded head is then kept.
    resendable: bool,
    /// The backend's response allows another exchange on this connection.
    keep_alive: bool,
    /// A byte of a response arrived for the exchange in progress.
    answered: bool,
    /// The exchange has yielded once to let the client side send
    /// `100 Continue` (see `poll_head`).
    yielded_for_continue: bool,
    /// Reused by every response head parsed on this connection.
    scratch: response::Scratch,
    /// The response timer, made for the connection's first exchange and
    /// moved to each later one's deadline (see `poll_timer`).
    timer: Option<Pin<Box<Sleep>>>,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Conn<Io> {
    /// A connection with no exchange yet.
    pub fn new(io: Io) -> Self {
        Conn {
            io,
            read: BytesMut::new(),
            out: Outgoing::default(),
            sending: Sending::Sent,
            receiving: Receiving::Head,
            head_request: false,
            resendable: false,
            keep_alive: true,
            answered: false,
            yielded_for_continue: false,
            scratch: response::Scratch::default(),
            timer: None,
        }
    }

    /// Keeps `headers` (the request's map, emptied) to parse the response
    /// head into.
    pub fn recycle(&mut self, headers: http::HeaderMap) {
        debug_assert!(headers.is_empty());
        self.scratch.headers = Some(headers);
    }

    /// Starts an exchange: `request`'s head is written on the next poll,
    /// then `body` (`None` for a request without one). Returns the buffer
    /// of the last exchange's head, for another request to encode into.
    pub fn start(&mut self, request: EncodedRequest, body: Option<UploadBody>) -> Vec<u8> {
        self.out.clear();
        let spare = std::mem::replace(&mut self.out.encoded, request.head);
        self.sending = Sending::Request(body.map(|body| request::BodyWriter::new(body, request.framing)));
        self.receiving = Receiving::Head;
        self.head_request = request.head_request;
        self.resendable = request.resendable;
        self.keep_alive = true;
        self.answered = false;
        self.yielded_for_continue = false;
        spare
    }

    /// Takes back the request `start` was given, to send it on another
    /// connection; `None` if it had a body (whose bytes are gone).
    pub fn take_request(&mut self) -> Option<EncodedRequest> {
        if !self.resendable {
            return None;
        }
        Some(EncodedRequest {
            head: std::mem::take(&mut self.out.encoded),
            framing: request::Framing::Empty,
            head_request: self.head_request,
            resendable: true,
        })
    }

    /// Polls the response timer, set to `deadline`.
    ///
    /// One timer serves every exchange on the connection: moving a tokio
    /// timer that is registered to a later deadline is one atomic operation,
    /// where a timer per exchange would be registered with the runtime's
    /// timer wheel and removed from it again each time, under its lock. The
    /// price: the timer of a connection idle in the pool past its last
    /// deadline fires once, waking the task of the exchange that set it for
    /// nothing.
    pub fn poll_timer(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx)
    }

    /// Whether the request, body included, has been handed to the backend.
    pub fn request_sent(&self) -> bool {
        !matches!(self.sending, Sending::Request(_))
    }

    /// Whether any byte of a response arrived: until one does, a failed
    /// exchange left no trace of a response and may be retried.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Sends the request while reading until the response head (the first
    /// final one: informational responses are skipped).
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<http::Response<()>, H1Error>> {
        loop {
            self.poll_send(cx)?;
            // A client that sent `Expect: 100-continue` gets its interim
            // response from hyper's server once this task has asked for the
            // body, on the connection's next turn. A backend quick enough to
            // answer within this turn would have its final head written first
            // and the 100 never sent; yielding once lets hyper send it.
            if matches!(self.sending, Sending::Request(Some(_))) && !self.yielded_for_continue {
                self.yielded_for_continue = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            while !self.read.is_empty() {
                match response::parse_head(&mut self.read, self.head_request, BODY_CHUNK, &mut self.scratch)? {
                    None => break,
                    Some(Head::Informational) => continue,
                    Some(Head::Final {
                        response,
                        body,
                        keep_alive,
                    }) => {
                        self.receiving = Receiving::Body(body);
                        self.keep_alive = keep_alive;
                        return Poll::Ready(Ok(response));
                    }
                }
            }
            if ready!(self.poll_fill(cx, HEAD_CHUNK))? == 0 {
                return Poll::Ready(Err(match &mut self.sending {
                    Sending::Failed(err) => err.take().map_or(H1Error::Closed, H1Error::Io),
                    _ => H1Error::Closed,
                }));
            }
        }
    }

    /// The next frame of the response body, sending what remains of the
    /// request body meanwhile.
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            if let Err(err) = self.poll_send(cx) {
                return Poll::Ready(Some(Err(err)));
            }
            let Receiving::Body(body) = &mut self.receiving else {
                return Poll::Ready(None);
            };
            match body.decode(&mut self.read)? {
                Step::Frame(frame) => return Poll::Ready(Some(Ok(frame))),
                Step::End => return Poll::Ready(None),
                Step::More => {}
            }
            let (want, ends_at_close) = (body.read_hint(HEAD_CHUNK, BODY_CHUNK), body.ends_at_close());
            if ready!(self.poll_fill(cx, want))? == 0 {
                if !ends_at_close {
                    return Poll::Ready(Some(Err(H1Error::ClosedEarly)));
                }
                self.receiving = Receiving::Body(ResponseBody::Done);
                self.keep_alive = false;
                return Poll::Ready(None);
            }
        }
    }

    /// Whether the response body has been read to its end.
    pub fn body_ended(&self) -> bool {
        matches!(&self.receiving, Receiving::Body(body) if body.is_end())
    }

    /// What is known of the response body's remaining length.
    pub fn body_size_hint(&self) -> SizeHint {
        match &self.receiving {
            Receiving::Body(body) => body.size_hint(),
            Receiving::Head => SizeHint::with_exact(0),
        }
    }

    /// Whether another exchange may use this connection: the last one
    /// completed both ways, the backend keeps the connection alive, and
    /// nothing unexpected is waiting to be read.
    pub fn reusable(&self) -> bool {
        self.keep_alive && matches!(self.sending, Sending::Sent) && self.body_ended() && self.read.is_empty()
    }

    /// For an idle connection: whether it still looks usable. A backend that
    /// closed it (or sent something unasked) makes it unusable. Never waits.
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        self.poll_fill(cx, HEAD_CHUNK).is_pending()
    }

    /// Writes what is waiting, then what the request body has ready, until
    /// all is sent or the socket or the client's body is not ready. A failed
    /// write stops the sending but not the exchange: the backend may still
    /// answer (say, a 413 before it closed). A failed request body ends it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Result<(), H1Error> {
        while let Sending::Request(_) = self.sending {
            match self.out.poll_write(&mut self.io, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => {
                    self.stop_sending(err);
                    return Ok(());
                }
                Poll::Pending => return Ok(()),
            }
            let Sending::Request(Some(upload)) = &mut self.sending else {
                // Everything queued is written and flushed, and no body
                // remains to encode.
                self.sending = Sending::Sent;
                return Ok(());
            };
            match upload.poll_encode(cx, &mut self.out) {
                Poll::Ready(Ok(true)) => self.sending = Sending::Request(None),
                Poll::Ready(Ok(false)) => {}
                Poll::Ready(Err(err)) => {
                    self.stop_sending(io::Error::other("request body failed"));
                    return Err(err);
                }
                Poll::Pending => return Ok(()),
            }
        }
        Ok(())
    }

    fn stop_sending(&mut self, err: io::Error) {
        self.sending = Sending::Failed(Some(err));
        self.out.clear();
        self.keep_alive = false;
    }

    /// Reads what the backend sent into the read buffer, reserving `want`
    /// bytes when little room is left; `Ok(0)` means the backend closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < want / 4 {
            self.read.reserve(want);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        if n > 0 {
            self.answered = true;
        }
        Poll::Ready(Ok(n))
    }
}

/// Bytes waiting to be written: an encoded part (a request head, a chunk
/// size line, trailers), then a body frame as it came, then a fixed suffix
/// (a chunk's CRLF). Written with one vectored write when the socket takes
/// it all. The encoded part's buffer is kept for the connection's life.
#[derive(Default)]
struct Outgoing {
    encoded: Vec<u8>,
    encoded_at: usize,
    data: Bytes,
    suffix: &'static [u8],
    /// Written but not yet flushed (TLS may hold a record back).
    unflushed: bool,
}

impl Outgoing {
    /// Empties the queue and returns the encoded part's buffer to fill.
    fn begin(&mut self) -> &mut Vec<u8> {
        self.clear();
        &mut self.encoded
    }

    fn clear(&mut self) {
        self.encoded.clear();
        self.encoded_at = 0;
        self.data = Bytes::new();
        self.suffix = b"";
    }

    fn is_empty(&self) -> bool {
        self.encoded_at == self.encoded.len() && self.data.is_empty() && self.suffix.is_empty()
    }

    fn advance(&mut self, mut n: usize) {
        let encoded = (self.encoded.len() - self.encoded_at).min(n);
        self.encoded_at += encoded;
        n -= encoded;
        let data = self.data.len().min(n);
        bytes::Buf::advance(&mut self.data, data);
        n -= data;
        self.suffix = &self.suffix[n.min(self.suffix.len())..];
    }

    /// Writes everything queued, then flushes.
    fn poll_write(&mut self, io: &mut (impl AsyncWrite + Unpin), cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let slices = [
                IoSlice::new(&self.encoded[self.encoded_at..]),
                IoSlice::new(&self.data),
                IoSlice::new(self.suffix),
            ];
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_advances_across_its_three_parts() {
        let mut out = Outgoing::default();
        out.begin().extend_from_slice(b"5\r\n");
        out.data = Bytes::from_static(b"hello");
        out.suffix = b"\r\n";
        out.advance(1);
        assert_eq!(&out.encoded[out.encoded_at..], b"\r\n");
        out.advance(4);
        assert_eq!(&out.data[..], b"llo");
        out.advance(4);
        assert_eq!(out.suffix, b"\n");
        assert!(!out.is_empty());
        out.advance(1);
        assert!(out.is_empty());
    }
}
