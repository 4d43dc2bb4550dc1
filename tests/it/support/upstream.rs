//! A scriptable HTTP/1.1 upstream: what it does depends on the request path.
//!
//! | path | response |
//! |---|---|
//! | `/delay/MS` | waits MS milliseconds, then `slow` |
//! | `/stream/N` | N blocks of [`pattern_block`](super::pattern_block), chunked |
//! | `/sink` | reads the body as it arrives; answers `LEN SHA256HEX` |
//! | `/trailers` | body `data`, trailer `x-checksum: 42` |
//! | `/request-trailers` | header `x-got-trailer` with the request's `x-checksum` trailer |
//! | `/status/CODE` | that status |
//! | `/hop-response` | hop-by-hop headers (`Connection: x-private`, `X-Private`, `Keep-Alive`, `Proxy-Authenticate`) plus `x-end-to-end` |
//! | `/close` | `hello` with `Connection: close`, then closes |
//! | `/reset` | closes the connection without a response |
//! | `/ws` | WebSocket echo |
//! | `/gate` | `first`, then, once the test calls [`Upstream::open_gate`], `last` |
//! | `/gate-sink` | reads the body, counting bytes in [`Upstream::received`]; answers the total |
//! | anything else | GET/HEAD: `hello`; other methods: the request body echoed as it streams |
//!
//! Every request's method, path and headers are recorded in `seen`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::client::{empty, full, Body};
use super::pattern_block;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request method.
    pub method: Method,
    /// Path and query.
    pub target: String,
    /// HTTP version on the upstream hop.
    pub version: Version,
    /// Headers as received.
    pub headers: HeaderMap,
}

/// A running upstream on `127.0.0.1:0`; stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

/// What the handlers share with the test.
struct State {
    seen: Mutex<Vec<Seen>>,
    gate: tokio::sync::Semaphore,
    received: AtomicUsize,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts the upstream on the current tokio runtime.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(State {
            seen: Mutex::default(),
            gate: tokio::sync::Semaphore::new(0),
            received: AtomicUsize::new(0),
        });
        let (accepts2, state2) = (accepts.clone(), state.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepts2.fetch_add(1, Ordering::SeqCst);
                let state = state2.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| handle(request, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            accepts,
            state,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// Lets one `/gate` response send its last chunk.
    pub fn open_gate(&self) {
        self.state.gate.add_permits(1);
    }

    /// Body bytes `/gate-sink` has read so far.
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
    }

    /// The most recent request.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("upstream saw a request")
    }
}

type Reply = Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>>;

async fn handle(request: Request<Incoming>, state: Arc<State>) -> Reply {
    let target = request.uri().path_and_query().map_or("/".into(), |p| p.to_string());
    state.seen.lock().expect("seen lock").push(Seen {
        method: request.method().clone(),
        target: target.clone(),
        version: request.version(),
        headers: request.headers().clone(),
    });
    let path = request.uri().path().to_owned();
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let (first, arg) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    match first {
        "delay" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            Ok(Response::new(full("slow")))
        }
        "stream" => {
            let blocks: usize = arg.parse().unwrap_or(1);
            let block = pattern_block();
            let frames = futures_util::stream::iter((0..blocks).map(move |_| Ok(Frame::data(block.clone()))));
            Ok(Response::new(BodyExt::boxed(StreamBody::new(frames))))
        }
        "sink" => {
            let mut body = request.into_body();
            let (mut len, mut hash) = (0usize, Sha256::new());
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    len += data.len();
                    hash.update(&data);
                }
            }
            Ok(Response::new(full(format!("{len} {:x}", hash.finalize()))))
        }
        "trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", "42".parse()?);
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(b"data"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames)).map_err(|never| match never {});
            Ok(Response::builder().header("trailer", "x-checksum").body(body.boxed())?)
        }
        "request-trailers" => {
            let collected = request.into_body().collect().await?;
            let value = collected
                .trailers()
                .and_then(|t| t.get("x-checksum"))
                .map_or("none".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
            Ok(Response::builder().header("x-got-trailer", value).body(empty())?)
        }
        "status" => {
            let status = StatusCode::from_u16(arg.parse().unwrap_or(500))?;
            Ok(Response::builder().status(status).body(full("status"))?)
        }
        "hop-response" => Ok(Response::builder()
            .header("connection", "x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-end-to-end", "kept")
            .body(full("hop"))?),
        "close" => Ok(Response::builder().header("connection", "close").body(full("hello"))?),
        "reset" => Err("reset requested".into()),
        "ws" => websocket(request),
        "gate" => {
            let frames = futures_util::stream::unfold(0, move |step| {
                let state = state.clone();
                async move {
                    let chunk = match step {
                        0 => "first",
                        1 => {
                            state.gate.acquire().await.ok()?.forget();
                            "last"
                        }
                        _ => return None,
                    };
                    Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(chunk.as_bytes()))),
                        step + 1,
                    ))
                }
            });
            Ok(Response::new(
                StreamBody::new(frames).map_err(|never| match never {}).boxed(),
            ))
        }
        "gate-sink" => {
            let mut body = request.into_body();
            let mut total = 0;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    total += data.len();
                    state.received.fetch_add(data.len(), Ordering::SeqCst);
                }
            }
            Ok(Response::new(full(total.to_string())))
        }
        _ if matches!(*request.method(), Method::GET | Method::HEAD) => Ok(Response::new(full("hello"))),
        _ => Ok(Response::new(request.into_body().map_err(Into::into).boxed())),
    }
}

fn websocket(mut request: Request<Incoming>) -> Reply {
    let key = request.headers().get("sec-websocket-key").ok_or("no websocket key")?;
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() || ws.send(message).await.is_err() {
                break;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .body(empty())?)
}
