//! A lean HTTP/1.1 client connection for the generator's hot loop.
//!
//! hyper's client runs each connection as its own task and hands it every
//! request through a channel, and builds a header map per response; measured
//! here, that capped the generator at well under half of wrk's rate on one
//! core. A load generator must not be the bottleneck, so, like wrk, this
//! client writes one request serialized once for the whole run and parses
//! responses in place with `httparse` (hyper's own parser), keeping only the
//! status. Bodies are read and discarded: latency ends at their last byte.
//!
//! Reads go through `TcpStream::try_io` for one reason: after a read that
//! returns less than the buffer holds, the socket is drained, so its
//! readiness is cleared at once (as nginx and wrk do) instead of by one more
//! `read` that fails with `EAGAIN`: a system call per request saved.

use std::io::Read;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Uri};
use socket2::SockRef;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// Most response headers parsed; more is a protocol error.
const MAX_HEADERS: usize = 64;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection closed before a complete response.
    #[error("connection closed before a complete response")]
    Closed,
    /// A socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The response was not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// A kept-alive connection turned out to be closed by the server before
    /// this request got any answer (it idled out). Nothing was processed, so
    /// the request may be sent again on a new connection.
    #[error("kept-alive connection was closed by the server")]
    Stale,
}

/// Serializes a request once, for every send of the run.
pub fn serialize_request(method: &Method, target: &Uri, headers: &HeaderMap, body: &[u8]) -> Bytes {
    let path = target.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\n").as_bytes());
    if !headers.contains_key(http::header::HOST) {
        if let Some(authority) = target.authority() {
            out.extend_from_slice(format!("host: {authority}\r\n").as_bytes());
        }
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out.into()
}

/// Bytes read per system call.
const READ_CHUNK: usize = 16 * 1024;

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    /// Where each read lands before it is appended to `buf`; allocated once
    /// per connection (a buffer on the stack would be zeroed on every read
    /// and would make every request's future 16 KiB larger to move).
    scratch: Box<[u8]>,
    open: bool,
    /// Exchanges completed on this connection.
    served: u64,
    /// Whether any byte of the current response has arrived.
    answered: bool,
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

impl Connection {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            open: true,
            served: 0,
            answered: false,
        }
    }

    /// False once the server asked to close or the connection failed.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Sends `request` and reads the whole response; returns its status.
    pub async fn exchange(&mut self, request: &[u8], head: bool) -> Result<u16, ExchangeError> {
        self.answered = false;
        let result = self.exchange_inner(request, head).await;
        match result {
            Ok(_) => self.served += 1,
            Err(ref err) => {
                self.open = false;
                let closed = match err {
                    ExchangeError::Closed => true,
                    ExchangeError::Io(io) => matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ),
                    _ => false,
                };
                if closed && self.served > 0 && !self.answered {
                    return Err(ExchangeError::Stale);
                }
            }
        }
        result
    }

    async fn exchange_inner(&mut self, request: &[u8], head: bool) -> Result<u16, ExchangeError> {
        self.stream.write_all(request).await?;
        loop {
            let (status, framing, keep_alive) = self.read_head(head).await?;
            // Interim responses (100 Continue, 103 Early Hints) precede the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            match framing {
                Framing::Length(n) => self.skip(n).await?,
                Framing::Chunked => self.skip_chunked().await?,
                Framing::UntilClose => {
                    self.buf.clear();
                    while self.read_more().await? {
                        self.buf.clear();
                    }
                    self.open = false;
                }
            }
            if !keep_alive {
                self.open = false;
            }
            return Ok(status);
        }
    }

    /// Reads what has arrived; false at end of stream.
    async fn read_more(&mut self) -> Result<bool, ExchangeError> {
        let Self {
            stream, buf, scratch, ..
        } = self;
        loop {
            stream.readable().await?;
            let mut read = None;
            let result = stream.try_io(Interest::READABLE, || {
                let n = (&*SockRef::from(&*stream)).read(scratch)?;
                read = Some(n);
                if n > 0 && n < scratch.len() {
                    // A short read drained the socket. Answering WouldBlock
                    // makes tokio clear its readiness, so the next read waits
                    // for epoll instead of failing with EAGAIN first.
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match (read, result) {
                (Some(0), _) => return Ok(false),
                (Some(n), _) => {
                    buf.extend_from_slice(&scratch[..n]);
                    self.answered = true;
                    return Ok(true);
                }
                (None, Err(err)) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                (None, Err(err)) => return Err(err.into()),
                (None, Ok(())) => continue,
            }
        }
    }

    async fn read_head(&mut self, head: bool) -> Result<(u16, Framing, bool), ExchangeError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.ok_or(ExchangeError::Invalid("no status"))?;
                    let http10 = response.version == Some(0);
                    let mut framing = if http10 {
                        Framing::UntilClose
                    } else {
                        Framing::Length(0)
                    };
                    let mut keep_alive = !http10;
                    let mut has_length = false;
                    for header in response.headers.iter() {
                        if header.name.eq_ignore_ascii_case("content-length") {
                            let n = std::str::from_utf8(header.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or(ExchangeError::Invalid("bad content-length"))?;
                            framing = Framing::Length(n);
                            has_length = true;
                        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                            framing = Framing::Chunked;
                        } else if header.name.eq_ignore_ascii_case("connection") {
                            let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
                            keep_alive = if http10 {
                                value.contains("keep-alive")
                            } else {
                                !value.contains("close")
                            };
                        }
                    }
                    if !has_length
                        && !matches!(framing, Framing::Chunked)
                        && !http10
                        && !head
                        && status >= 200
                        && status != 204
                        && status != 304
                    {
                        framing = Framing::UntilClose;
                    }
                    if head || status == 204 || status == 304 || (100..200).contains(&status) {
                        framing = Framing::Length(0);
                    }
                    self.buf.advance(len);
                    return Ok((status, framing, keep_alive));
                }
                Ok(httparse::Status::Partial) => {
                    if !self.read_more().await? {
                        return Err(ExchangeError::Closed);
                    }
                }
                Err(_) => return Err(ExchangeError::Invalid("unparsable head")),
            }
        }
    }

    async fn skip(&mut self, mut remaining: u64) -> Result<(), ExchangeError> {
        loop {
            let here = (self.buf.len() as u64).min(remaining);
            self.buf.advance(here as usize);
            remaining -= here;
            if remaining == 0 {
                return Ok(());
            }
            if !self.read_more().await? {
                return Err(ExchangeError::Closed);
            }
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), ExchangeError> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if !self.read_more().await? {
                            return Err(ExchangeError::Closed);
                        }
                    }
                    Err(_) => return Err(ExchangeError::Invalid("bad chunk size")),
                }
            };
            if size == 0 {
                // Trailer lines, if any, then the empty line.
                loop {
                    match self.buf.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            self.buf.advance(2);
                            return Ok(());
                        }
                        Some(end) => self.buf.advance(end + 2),
                        None => {
                            if !self.read_more().await? {
                                return Err(ExchangeError::Closed);
                            }
                        }
                    }
                }
            }
            let with_crlf = size
                .checked_add(2)
                .ok_or(ExchangeError::Invalid("chunk size overflows"))?;
            self.skip(with_crlf).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn serializes_host_headers_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert("x-test", "1".parse().expect("value"));
        let uri: Uri = "http://a.test:8080/p?q=1".parse().expect("uri");
        let bytes = serialize_request(&Method::POST, &uri, &headers, b"abc");
        assert_eq!(
            std::str::from_utf8(&bytes).expect("utf-8"),
            "POST /p?q=1 HTTP/1.1\r\nhost: a.test:8080\r\nx-test: 1\r\ncontent-length: 3\r\n\r\nabc"
        );
    }

    async fn exchange_with(response: &'static [u8], head: bool) -> (Result<u16, ExchangeError>, bool, usize) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            s.write_all(response).await.expect("write");
            // Leave it open: framing, not the close, must end the exchange.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        });
        let mut conn = Connection::new(TcpStream::connect(addr).await.expect("connect"));
        let result = conn.exchange(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", head).await;
        let leftover = conn.buf.len();
        let open = conn.is_open();
        server.abort();
        (result, open, leftover)
    }

    #[tokio::test]
    async fn reads_content_length_chunked_interim_and_head_responses() {
        let (r, open, left) = exchange_with(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false).await;
        assert_eq!((r.expect("ok"), open, left), (200, true, 0));
        let chunked =
            b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n";
        let (r, open, left) = exchange_with(chunked, false).await;
        assert_eq!((r.expect("ok"), open, left), (201, true, 0));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let (r, _, left) = exchange_with(interim, false).await;
        assert_eq!((r.expect("ok"), left), (204, 0));
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
        let (r, open, _) = exchange_with(head, true).await;
        assert_eq!((r.expect("ok"), open), (200, true));
        let close = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let (r, open, _) = exchange_with(close, false).await;
        assert_eq!((r.expect("ok"), open), (503, false));
    }

    #[tokio::test]
    async fn a_truncated_response_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await;
        });
        let mut conn = Connection::new(TcpStream::connect(addr).await.expect("connect"));
        let result = conn.exchange(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", false).await;
        assert!(matches!(result, Err(ExchangeError::Closed)), "{result:?}");
        assert!(!conn.is_open());
    }
}
