//! A raw-socket backend for hostile cases: it answers each request with
//! scripted bytes chosen by the request's path, and records every request as
//! it arrived on the wire (the head's exact bytes, the body decoded, the raw
//! trailer section) with the number of the connection it came on.
//!
//! It reads requests strictly: a head ends at the first empty CRLF line, a
//! body is framed by `Content-Length` or chunked. What the proxy wrote is then
//! checked by [`RawRequest::framing_faults`], so a request that a lenient
//! parser would accept but that is not canonical HTTP/1.1 still shows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One step of a scripted answer.
#[derive(Debug, Clone)]
pub enum Act {
    /// Writes these bytes as they are, flushed.
    Write(Vec<u8>),
    /// Waits this long.
    Pause(Duration),
    /// Closes the connection (FIN).
    Close,
    /// Resets the connection (RST: SO_LINGER 0, then close).
    Reset,
}

/// `Act::Write` of a string.
pub fn write(bytes: impl Into<Vec<u8>>) -> Act {
    Act::Write(bytes.into())
}

/// The answer to every path the script does not name.
pub const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A request as the backend read it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Which connection, numbered from 0 in the order they were accepted.
    pub conn: usize,
    /// The head's bytes, request line to the empty line, as sent.
    pub head: Vec<u8>,
    /// The body, decoded from its framing.
    pub body: Vec<u8>,
    /// The trailer section of a chunked body, as sent (without the final
    /// empty line).
    pub trailers: Vec<u8>,
}

impl RawRequest {
    /// The request target of the request line.
    pub fn target(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        head.split(' ').nth(1).unwrap_or_default().to_owned()
    }

    /// The values of every field named `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Vec<String> {
        fields(&self.head)
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// The trailer fields, as (name, value).
    pub fn trailer_fields(&self) -> Vec<(String, String)> {
        let mut section = self.trailers.clone();
        section.extend_from_slice(b"\r\n");
        let mut fields = fields_of_section(&section);
        fields.retain(|(name, _)| !name.is_empty());
        fields
    }

    /// What is not canonical HTTP/1.1 about the head: bare CR or LF, a line
    /// folded, more than one framing field, framing that is not one
    /// number or `chunked`, not exactly one Host. Empty when canonical.
    pub fn framing_faults(&self) -> Vec<String> {
        let mut faults = Vec::new();
        let head = &self.head;
        for (i, &b) in head.iter().enumerate() {
            let bare_lf = b == b'\n' && (i == 0 || head[i - 1] != b'\r');
            let bare_cr = b == b'\r' && head.get(i + 1) != Some(&b'\n');
            if bare_lf || bare_cr {
                faults.push(format!("bare {} at byte {i}", if bare_lf { "LF" } else { "CR" }));
            }
        }
        if head
            .windows(3)
            .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'))
        {
            faults.push("a folded line".into());
        }
        let lengths = self.header("content-length");
        let codings = self.header("transfer-encoding");
        if lengths.len() + codings.len() > 1 {
            faults.push(format!("framing fields: {lengths:?} {codings:?}"));
        }
        if lengths
            .iter()
            .any(|l| l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()))
        {
            faults.push(format!("Content-Length {lengths:?}"));
        }
        if codings.iter().any(|c| c != "chunked") {
            faults.push(format!("Transfer-Encoding {codings:?}"));
        }
        let hosts = self.header("host");
        if hosts.len() != 1 {
            faults.push(format!("Host fields: {hosts:?}"));
        }
        faults
    }
}

/// The fields of a head (request line skipped), as (name, trimmed value).
fn fields(head: &[u8]) -> Vec<(String, String)> {
    let start = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(head.len(), |at| at + 2);
    fields_of_section(&head[start..])
}

fn fields_of_section(section: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(section)
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect()
}

/// The scripted backend; stops when dropped.
pub struct RawBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

type Script = dyn Fn(&RawRequest) -> Vec<Act> + Send + Sync;

impl RawBackend {
    /// A backend answering each request with what `script` returns for it.
    pub async fn start(script: impl Fn(&RawRequest) -> Vec<Act> + Send + Sync + 'static) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        RawBackend::serve_on(listener, script)
    }

    /// The same on `addr`; `None` if it cannot be bound (taken).
    pub async fn start_on(
        addr: SocketAddr,
        script: impl Fn(&RawRequest) -> Vec<Act> + Send + Sync + 'static,
    ) -> Option<RawBackend> {
        let listener = TcpListener::bind(addr).await.ok()?;
        Some(RawBackend::serve_on(listener, script))
    }

    fn serve_on(listener: TcpListener, script: impl Fn(&RawRequest) -> Vec<Act> + Send + Sync + 'static) -> RawBackend {
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let task = tokio::spawn({
            let requests = requests.clone();
            async move {
                let mut conn = 0;
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, conn, script.clone(), requests.clone()));
                    conn += 1;
                }
            }
        });
        RawBackend { addr, requests, task }
    }

    /// A backend answering the path `path` with `acts` and any other with [`OK`].
    pub async fn answering(path: &'static str, acts: Vec<Act>) -> RawBackend {
        RawBackend::start(move |request| {
            if request.target() == path {
                acts.clone()
            } else {
                vec![write(OK)]
            }
        })
        .await
    }

    /// Every request read so far, in order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().expect("lock").clone()
    }

    /// The last request read for `target`.
    pub fn last(&self, target: &str) -> Option<RawRequest> {
        self.requests().into_iter().rev().find(|r| r.target() == target)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, conn: usize, script: Arc<Script>, seen: Arc<Mutex<Vec<RawRequest>>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer, conn).await else {
            return;
        };
        let acts = script(&request);
        seen.lock().expect("lock").push(request);
        for act in acts {
            match act {
                Act::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
                Act::Pause(time) => tokio::time::sleep(time).await,
                Act::Close => return,
                Act::Reset => {
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    return;
                }
            }
        }
    }
}

/// Reads from `stream` into `buffer` until it holds `until` bytes; false if
/// the connection ended first.
async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>, until: usize) -> bool {
    while buffer.len() < until {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Reads until `needle` appears at or after `from`; its position.
async fn find(stream: &mut TcpStream, buffer: &mut Vec<u8>, from: usize, needle: &[u8]) -> Option<usize> {
    loop {
        if let Some(at) = buffer[from..].windows(needle.len()).position(|w| w == needle) {
            return Some(from + at);
        }
        let len = buffer.len();
        if !fill(stream, buffer, len + 1).await {
            return None;
        }
    }
}

async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>, conn: usize) -> Option<RawRequest> {
    let head_end = find(stream, buffer, 0, b"\r\n\r\n").await? + 4;
    let head = buffer[..head_end].to_vec();
    let mut request = RawRequest {
        conn,
        head,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let chunked = request
        .header("transfer-encoding")
        .iter()
        .any(|c| c.eq_ignore_ascii_case("chunked"));
    let length: Option<usize> = request.header("content-length").first().and_then(|l| l.parse().ok());
    let mut at = head_end;
    if chunked {
        loop {
            let line_end = find(stream, buffer, at, b"\r\n").await?;
            let line = String::from_utf8_lossy(&buffer[at..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                break;
            }
            if !fill(stream, buffer, at + size + 2).await {
                return None;
            }
            request.body.extend_from_slice(&buffer[at..at + size]);
            at += size + 2;
        }
        // Trailers, then the empty line.
        if fill(stream, buffer, at + 2).await && buffer[at..].starts_with(b"\r\n") {
            at += 2;
        } else {
            let end = find(stream, buffer, at, b"\r\n\r\n").await?;
            request.trailers = buffer[at..end].to_vec();
            at = end + 4;
        }
    } else if let Some(length) = length {
        if !fill(stream, buffer, at + length).await {
            return None;
        }
        request.body = buffer[at..at + length].to_vec();
        at += length;
    }
    buffer.drain(..at);
    Some(request)
}
