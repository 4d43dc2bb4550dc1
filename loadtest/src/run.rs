//! The open-loop run.
//!
//! Each generator thread runs a single-threaded tokio runtime holding its
//! share of the connections. Whenever a connection is free it takes the next
//! intended send time from the thread's [`Schedule`] and waits for it (or
//! sends at once if that time has passed). When every connection is busy,
//! the next intended times simply wait to be taken, and that wait counts as
//! latency: a request is never skipped, and a late send shows up in the
//! send-lag histogram. Nothing is queued, so memory does not grow with a
//! backlog.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::histograms::new_histogram;
use crate::http1;
use crate::result::{Decoded, Errors, Measured, RunResult, Second, StatusClasses, Thresholds};
use crate::schedule::{Arrivals, Schedule};
use crate::timing::{micros, wait_until, StallMonitor};

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The URL to drive (`http://` only).
    pub target: Uri,
    /// Requests per second, all threads together.
    pub rate: f64,
    /// Measured window.
    pub duration: Duration,
    /// Warm-up before the window: measured, then discarded.
    pub warmup: Duration,
    /// Connections, all threads together.
    pub connections: usize,
    /// Generator threads.
    pub threads: usize,
    /// Arrival process.
    pub arrivals: Arrivals,
    /// Request method.
    pub method: Method,
    /// Extra request headers.
    pub headers: HeaderMap,
    /// Request body (empty for none).
    pub body: Bytes,
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    pub streams: usize,
    /// A request with no complete response this long after its intended
    /// send time counts as a timeout.
    pub timeout: Duration,
    /// Seed of the Poisson schedule.
    pub seed: u64,
    /// Verdict thresholds.
    pub thresholds: Thresholds,
    /// How to show progress.
    pub progress: Progress,
    /// Where to write one histogram per second, if anywhere.
    pub interval_log: Option<PathBuf>,
}

/// How a run shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A live progress bar (a terminal).
    Bar,
    /// One plain line per second (a pipe or file).
    Lines,
    /// Nothing.
    Quiet,
}

/// Why a run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The target could not be reached before the run started.
    #[error("target {target} unreachable: {cause}")]
    Unreachable {
        /// The target's address.
        target: String,
        /// Why.
        cause: String,
    },
    /// The interval log could not be written.
    #[error("interval log {}: {source}", path.display())]
    IntervalLog {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The generator itself failed (thread or runtime).
    #[error("generator: {0}")]
    Generator(String),
}

/// How long after [`execute`] is called (and the target probed) the
/// schedule starts, so every thread is ready for its first send.
pub const SCHEDULE_LEAD: Duration = Duration::from_millis(50);

/// Runs the load described by `config` and returns what it measured.
pub fn execute(config: &RunConfig) -> Result<RunResult, RunError> {
    let addr = resolve_and_probe(&config.target, config.timeout)?;
    let config = Arc::new(config.clone());
    let threads = config.threads.max(1);
    let monitor = StallMonitor::start();
    // A common start shortly ahead, so every thread is ready for its first send.
    let start = Instant::now() + SCHEDULE_LEAD;
    let (tx, rx) = mpsc::channel::<Message>();
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let (config, tx) = (config.clone(), tx.clone());
            std::thread::Builder::new()
                .name(format!("load-{k}"))
                .spawn(move || generator_thread(k, threads, addr, start, config, tx))
                .map_err(|err| RunError::Generator(err.to_string()))
        })
        .collect::<Result<_, _>>()?;
    drop(tx);

    let mut intervals = Intervals::new(config.as_ref(), threads, start)?;
    let mut finals = Vec::new();
    while let Ok(message) = rx.recv() {
        match message {
            Message::Interval { second, interval } => intervals.add(second, *interval),
            Message::Done(recorder) => finals.push(*recorder),
        }
    }
    for handle in handles {
        handle
            .join()
            .map_err(|_| RunError::Generator("a generator thread panicked".into()))?;
    }
    intervals.finish();
    let mut seconds = std::mem::take(&mut intervals.seconds);
    seconds.sort_by_key(|s| s.second);
    let stalls = monitor.stop();

    let mut histograms = Decoded::new();
    histograms.stalls = stalls;
    let (mut errors, mut status, mut sent) = (Errors::default(), StatusClasses::default(), 0);
    let mut waited_for_connection = 0;
    for recorder in &finals {
        for (into, from) in [
            (&mut histograms.corrected, &recorder.corrected),
            (&mut histograms.uncorrected, &recorder.uncorrected),
            (&mut histograms.send_lag, &recorder.send_lag),
            (&mut histograms.succeeded, &recorder.succeeded),
            (&mut histograms.unsuccessful, &recorder.unsuccessful),
        ] {
            into.add(from)
                .map_err(|_| RunError::Generator("histograms with different bounds".into()))?;
        }
        errors.refused += recorder.errors.refused;
        errors.reset += recorder.errors.reset;
        errors.timeout += recorder.errors.timeout;
        errors.other += recorder.errors.other;
        for class in [100u16, 200, 300, 400, 500] {
            for _ in 0..recorder.status.count_of(class) {
                status.count(class);
            }
        }
        sent += recorder.sent_in_window;
        waited_for_connection += recorder.waited_for_connection;
    }
    let measured = Measured {
        target: config.target.to_string(),
        method: config.method.to_string(),
        rate: config.rate,
        arrivals: config.arrivals,
        duration: config.duration,
        warmup: config.warmup,
        connections: config.connections,
        threads,
        http2: config.http2,
        sent,
        waited_for_connection,
        errors,
        status,
        histograms,
        seconds,
    };
    Ok(RunResult::new(measured, config.thresholds))
}

impl StatusClasses {
    fn count_of(&self, class: u16) -> u64 {
        match class / 100 {
            1 => self.informational,
            2 => self.success,
            3 => self.redirect,
            4 => self.client_error,
            _ => self.server_error,
        }
    }
}

/// Resolves the target and opens (then closes) one TCP connection, so an
/// unreachable target fails fast with its own exit code instead of a run of
/// errors.
fn resolve_and_probe(target: &Uri, timeout: Duration) -> Result<SocketAddr, RunError> {
    let unreachable = |cause: String| RunError::Unreachable {
        target: target.to_string(),
        cause,
    };
    if target.scheme_str() != Some("http") {
        return Err(unreachable("only http:// targets are supported".into()));
    }
    let host = target.host().ok_or_else(|| unreachable("no host in the URL".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = target.port_u16().unwrap_or(80);
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|err| unreachable(err.to_string()))?
        .next()
        .ok_or_else(|| unreachable("the host resolves to no address".into()))?;
    StdTcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))
        .map_err(|err| unreachable(err.to_string()))?;
    Ok(addr)
}

enum Message {
    Interval { second: u64, interval: Box<Interval> },
    Done(Box<Recorder>),
}

/// What completed in one second of a run (warm-up included): the corrected
/// latency of every response and timeout, and of each outcome apart.
struct Interval {
    /// Responses completed.
    completed: u64,
    all: Histogram<u64>,
    /// Successful responses (2xx, 3xx).
    succeeded: Histogram<u64>,
    /// Other responses (refused with a status, failed) and timeouts.
    unsuccessful: Histogram<u64>,
}

impl Interval {
    fn new() -> Self {
        Interval {
            completed: 0,
            all: new_histogram(),
            succeeded: new_histogram(),
            unsuccessful: new_histogram(),
        }
    }

    fn add(&mut self, other: &Interval) {
        self.completed += other.completed;
        let _ = self.all.add(&other.all);
        let _ = self.succeeded.add(&other.succeeded);
        let _ = self.unsuccessful.add(&other.unsuccessful);
    }
}

/// What one thread recorded.
struct Recorder {
    window: (Instant, Instant),
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    send_lag: Histogram<u64>,
    /// `corrected`, of successful responses (2xx, 3xx) only.
    succeeded: Histogram<u64>,
    /// `corrected`, of the other responses and timeouts only.
    unsuccessful: Histogram<u64>,
    errors: Errors,
    status: StatusClasses,
    sent_in_window: u64,
    waited_for_connection: u64,
    interval: Interval,
}

enum Outcome {
    Response(u16),
    Refused,
    Reset,
    Timeout,
    Other,
}

impl Recorder {
    fn new(window: (Instant, Instant)) -> Self {
        Self {
            window,
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            send_lag: new_histogram(),
            succeeded: new_histogram(),
            unsuccessful: new_histogram(),
            errors: Errors::default(),
            status: StatusClasses::default(),
            sent_in_window: 0,
            waited_for_connection: 0,
            interval: Interval::new(),
        }
    }

    fn in_window(&self, t: Instant) -> bool {
        t >= self.window.0 && t < self.window.1
    }

    /// A request went out at `sent`; the generator owed it at `due` (its
    /// intended time, or later if no connection was free until then).
    fn sent(&mut self, intended: Instant, due: Instant, sent: Instant) {
        if self.in_window(sent) {
            self.sent_in_window += 1;
        }
        if self.in_window(intended) {
            self.send_lag
                .saturating_record(micros(sent.saturating_duration_since(due)));
            if due > intended {
                self.waited_for_connection += 1;
            }
        }
    }

    /// Records the end of one request. Responses and timeouts enter the
    /// latency histograms: a timeout's latency is at least the timeout, and
    /// leaving it out would hide exactly the worst of the tail. Fast failures
    /// (refused, reset) are counted but not recorded as latencies, where
    /// they would make a failing target look quick.
    ///
    /// Successful responses (2xx, 3xx) are also recorded apart from the
    /// rest (other statuses, timeouts): a proxy that sheds load answers
    /// its refusals fast, and one histogram would mix them with the
    /// requests it served.
    fn finished(&mut self, intended: Instant, sent: Option<Instant>, end: Instant, outcome: Outcome) {
        let corrected = micros(end.saturating_duration_since(intended));
        let waited = matches!(outcome, Outcome::Response(_) | Outcome::Timeout);
        let succeeded = matches!(outcome, Outcome::Response(status) if (200..400).contains(&status));
        if waited {
            self.interval.all.saturating_record(corrected);
            if succeeded {
                self.interval.succeeded.saturating_record(corrected);
            } else {
                self.interval.unsuccessful.saturating_record(corrected);
            }
        }
        if let Outcome::Response(_) = outcome {
            self.interval.completed += 1;
        }
        if !self.in_window(intended) {
            return;
        }
        if waited {
            self.corrected.saturating_record(corrected);
            if succeeded {
                self.succeeded.saturating_record(corrected);
            } else {
                self.unsuccessful.saturating_record(corrected);
            }
            // Never sent (None): it waited its whole timeout for a connection
            // the target held. That is the target's latency, recorded above,
            // and a timeout, counted below; not generator lag.
            if let Some(sent) = sent {
                self.uncorrected
                    .saturating_record(micros(end.saturating_duration_since(sent)));
            }
        }
        match outcome {
            Outcome::Response(status) => self.status.count(status),
            Outcome::Refused => self.errors.refused += 1,
            Outcome::Reset => self.errors.reset += 1,
            Outcome::Timeout => self.errors.timeout += 1,
            Outcome::Other => self.errors.other += 1,
        }
    }
}

/// State shared by one thread's tasks (single-threaded: `Rc`, `RefCell`).
struct ThreadState {
    start: Instant,
    end: Duration,
    schedule: RefCell<Schedule>,
    finished: Cell<bool>,
    recorder: RefCell<Recorder>,
}

impl ThreadState {
    /// The next intended send time, when this connection could first send
    /// it, and the time it was reached (now); `None` when the schedule is over.
    ///
    /// A connection that asks after the intended time was busy until then:
    /// the target held it, as a slow server holds its clients. That wait is
    /// the target's latency and is already in the corrected figure (measured
    /// from the intended time); send lag counts only the generator's own
    /// lateness once a connection was free, which is what makes a run invalid.
    async fn next(&self) -> Option<(Instant, Instant, Instant)> {
        if self.finished.get() {
            return None;
        }
        let offset = self.schedule.borrow_mut().next().filter(|offset| *offset < self.end);
        let Some(offset) = offset else {
            self.finished.set(true);
            return None;
        };
        let intended = self.start + offset;
        let due = Instant::now().max(intended);
        Some((intended, due, wait_until(intended).await))
    }
}

fn generator_thread(
    k: usize,
    threads: usize,
    addr: SocketAddr,
    start: Instant,
    config: Arc<RunConfig>,
    tx: mpsc::Sender<Message>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tailcut-load: thread {k}: cannot start a runtime: {err}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let window = (start + config.warmup, start + config.warmup + config.duration);
    let state = Rc::new(ThreadState {
        start,
        end: config.warmup + config.duration,
        schedule: RefCell::new(Schedule::new(
            config.arrivals,
            config.rate,
            threads as u64,
            k as u64,
            config.seed,
        )),
        finished: Cell::new(false),
        recorder: RefCell::new(Recorder::new(window)),
    });
    let request = Rc::new(http1::serialize_request(
        &config.method,
        &config.target,
        &config.headers,
        &config.body,
    ));
    local.block_on(&runtime, async {
        // This thread's share of the connections.
        let connections = config.connections / threads + usize::from(k < config.connections % threads);
        let mut workers = Vec::new();
        for _ in 0..connections {
            if config.http2 {
                let shared = Rc::new(RefCell::new(None::<http2::SendRequest<Full<Bytes>>>));
                for _ in 0..config.streams.max(1) {
                    workers.push(tokio::task::spawn_local(h2_worker(
                        state.clone(),
                        config.clone(),
                        addr,
                        shared.clone(),
                    )));
                }
            } else {
                workers.push(tokio::task::spawn_local(h1_worker(
                    state.clone(),
                    config.clone(),
                    addr,
                    request.clone(),
                )));
            }
        }
        let flusher = tokio::task::spawn_local(flush_intervals(state.clone(), start, tx.clone()));
        for worker in workers {
            let _ = worker.await;
        }
        flusher.abort();
    });
    let mut recorder = state.recorder.replace(Recorder::new((start, start)));
    // The last, partial second.
    let second = start.elapsed().as_secs();
    let interval = std::mem::replace(&mut recorder.interval, Interval::new());
    let _ = tx.send(Message::Interval {
        second,
        interval: Box::new(interval),
    });
    let _ = tx.send(Message::Done(Box::new(recorder)));
}

/// Sends each completed second's latency histogram to the main thread.
async fn flush_intervals(state: Rc<ThreadState>, start: Instant, tx: mpsc::Sender<Message>) {
    for second in 0.. {
        tokio::time::sleep_until((start + Duration::from_secs(second + 1)).into()).await;
        let interval = std::mem::replace(&mut state.recorder.borrow_mut().interval, Interval::new());
        if tx
            .send(Message::Interval {
                second,
                interval: Box::new(interval),
            })
            .is_err()
        {
            return;
        }
    }
}

fn request(config: &RunConfig) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(config.body.clone()));
    *request.method_mut() = config.method.clone();
    *request.uri_mut() = if config.http2 {
        config.target.clone()
    } else {
        config
            .target
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()))
    };
    let headers = request.headers_mut();
    if !config.http2 {
        if let Some(host) = config
            .target
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(http::header::HOST, host);
        }
    }
    for (name, value) in &config.headers {
        headers.append(name, value.clone());
    }
    request
}

/// Takes intended send times one exchange at a time, on its own HTTP/1.1
/// keep-alive connection (reopened after a failure or a close).
async fn h1_worker(state: Rc<ThreadState>, config: Arc<RunConfig>, addr: SocketAddr, request: Rc<Bytes>) {
    let head = config.method == Method::HEAD;
    let mut connection: Option<http1::Connection> = None;
    while let Some((intended, due, sent)) = state.next().await {
        if let Some(outcome) = expired(intended, sent, &config) {
            state.recorder.borrow_mut().finished(intended, None, sent, outcome);
            continue;
        }
        state.recorder.borrow_mut().sent(intended, due, sent);
        let exchange = async {
            // A kept-alive connection the server closed while idle fails with
            // `Stale` before anything was processed: resend once, on a new one.
            for _attempt in 0..2 {
                if !connection.as_ref().is_some_and(http1::Connection::is_open) {
                    connection = Some(http1::Connection::new(connect(addr).await?));
                }
                let Some(open) = connection.as_mut() else {
                    return Err(Outcome::Other);
                };
                match open.exchange(&request, head).await {
                    Ok(status) => return Ok(Outcome::Response(status)),
                    Err(http1::ExchangeError::Stale) => continue,
                    Err(http1::ExchangeError::Closed) => return Err(Outcome::Reset),
                    Err(http1::ExchangeError::Io(io)) => return Err(io_outcome(&io)),
                    Err(http1::ExchangeError::Invalid(_)) => return Err(Outcome::Other),
                }
            }
            Err(Outcome::Reset)
        };
        let outcome = match tokio::time::timeout_at((intended + config.timeout).into(), exchange).await {
            Ok(Ok(outcome) | Err(outcome)) => outcome,
            Err(_) => {
                connection = None;
                Outcome::Timeout
            }
        };
        state
            .recorder
            .borrow_mut()
            .finished(intended, Some(sent), Instant::now(), outcome);
    }
}

fn io_outcome(err: &std::io::Error) -> Outcome {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof => {
            Outcome::Reset
        }
        _ => Outcome::Other,
    }
}

/// Like [`h1_worker`], for one of several streams sharing an HTTP/2 connection.
async fn h2_worker(
    state: Rc<ThreadState>,
    config: Arc<RunConfig>,
    addr: SocketAddr,
    shared: Rc<RefCell<Option<http2::SendRequest<Full<Bytes>>>>>,
) {
    while let Some((intended, due, sent)) = state.next().await {
        if let Some(outcome) = expired(intended, sent, &config) {
            state.recorder.borrow_mut().finished(intended, None, sent, outcome);
            continue;
        }
        state.recorder.borrow_mut().sent(intended, due, sent);
        let deadline = intended + config.timeout;
        let exchange = async {
            let current = shared.borrow().clone().filter(|s| !s.is_closed());
            let mut sender = match current {
                Some(sender) => sender,
                None => {
                    let stream = match connect(addr).await {
                        Ok(stream) => stream,
                        Err(outcome) => return outcome,
                    };
                    match http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await {
                        Ok((sender, connection)) => {
                            tokio::task::spawn_local(connection);
                            *shared.borrow_mut() = Some(sender.clone());
                            sender
                        }
                        Err(_) => return Outcome::Other,
                    }
                }
            };
            if sender.ready().await.is_err() {
                return Outcome::Reset;
            }
            finish(sender.send_request(request(&config)).await).await
        };
        let outcome = tokio::time::timeout_at(deadline.into(), exchange)
            .await
            .unwrap_or(Outcome::Timeout);
        state
            .recorder
            .borrow_mut()
            .finished(intended, Some(sent), Instant::now(), outcome);
    }
}

/// A request that waited in the queue past its timeout is not sent at all:
/// it already failed, and sending it would only delay the rest.
fn expired(intended: Instant, now: Instant, config: &RunConfig) -> Option<Outcome> {
    (now.saturating_duration_since(intended) >= config.timeout).then_some(Outcome::Timeout)
}

async fn connect(addr: SocketAddr) -> Result<tokio::net::TcpStream, Outcome> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|err| io_outcome(&err))?;
    // Best effort: without NODELAY small requests may wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Reads the whole response body (counting, not keeping it): latency ends at its last byte.
async fn finish(response: hyper::Result<http::Response<hyper::body::Incoming>>) -> Outcome {
    let response = match response {
        Ok(response) => response,
        Err(err) => return classify(&err),
    };
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Err(err) = frame {
            return classify(&err);
        }
    }
    Outcome::Response(status)
}

fn classify(err: &hyper::Error) -> Outcome {
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return Outcome::Reset;
    }
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Outcome::Reset,
                std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
                _ => Outcome::Other,
            };
        }
        source = e.source();
    }
    Outcome::Other
}

/// Merges each second's histograms from every thread; writes the interval
/// log and shows progress as each second completes. Holds only seconds still
/// waiting for a thread, so memory stays flat however long the run.
struct Intervals {
    threads: usize,
    /// Seconds some threads have reported: how many, and their sum.
    pending: BTreeMap<u64, (usize, Interval)>,
    log: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    progress: Progress,
    bar: Option<indicatif::ProgressBar>,
    total_seconds: u64,
    /// Every second emitted so far, in order.
    seconds: Vec<Second>,
}

impl Intervals {
    fn new(config: &RunConfig, threads: usize, start: Instant) -> Result<Self, RunError> {
        let log = match &config.interval_log {
            None => None,
            Some(path) => {
                let failed = |source| RunError::IntervalLog {
                    path: path.clone(),
                    source,
                };
                let file = std::fs::File::create(path).map_err(failed)?;
                let mut file = std::io::BufWriter::new(file);
                let epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
                    + start.saturating_duration_since(Instant::now()).as_secs_f64();
                let header = format!(
                    "#[Latency from intended send time, milliseconds; one histogram per second]\n\
                     #[StartTime: {epoch:.3} (seconds since epoch)]\n\
                     \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
                );
                std::io::Write::write_all(&mut file, header.as_bytes()).map_err(failed)?;
                Some((path.clone(), file))
            }
        };
        let total_seconds = (config.warmup + config.duration).as_secs().max(1);
        let bar = (config.progress == Progress::Bar).then(|| {
            let bar = indicatif::ProgressBar::new(total_seconds);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        Ok(Self {
            threads,
            pending: BTreeMap::new(),
            log,
            progress: config.progress,
            bar,
            total_seconds,
            seconds: Vec::new(),
        })
    }

    fn add(&mut self, second: u64, interval: Interval) {
        let entry = self.pending.entry(second).or_insert_with(|| (0, Interval::new()));
        entry.0 += 1;
        entry.1.add(&interval);
        if entry.0 == self.threads {
            if let Some((second, (_, interval))) = self.pending.remove_entry(&second) {
                self.emit(second, &interval);
            }
        }
    }

    fn emit(&mut self, second: u64, interval: &Interval) {
        let (completed, histogram) = (interval.completed, &interval.all);
        let (succeeded, unsuccessful) = (&interval.succeeded, &interval.unsuccessful);
        self.seconds.push(Second {
            second,
            completed,
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
            succeeded: succeeded.len(),
            succeeded_p50_us: succeeded.value_at_quantile(0.5),
            succeeded_p99_us: succeeded.value_at_quantile(0.99),
            succeeded_p999_us: succeeded.value_at_quantile(0.999),
            unsuccessful: unsuccessful.len(),
            unsuccessful_p99_us: unsuccessful.value_at_quantile(0.99),
        });
        let p99 = if !histogram.is_empty() {
            crate::result::format_micros(histogram.value_at_quantile(0.99))
        } else {
            "-".into()
        };
        let message = format!("rate {completed}/s  p99 {p99}");
        match self.progress {
            Progress::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position((second + 1).min(self.total_seconds));
                    bar.set_message(message);
                }
            }
            Progress::Lines => eprintln!("t={}s {message}", second + 1),
            Progress::Quiet => {}
        }
        if let Some((_, file)) = &mut self.log {
            // HdrHistogram's interval log line: start (s, from StartTime),
            // length (s), max (ms), V2 compressed histogram in base64.
            let line = format!(
                "{second}.000,1.000,{:.3},{}\n",
                histogram.max() as f64 / 1000.0,
                crate::histograms::encode(histogram)
            );
            let _ = std::io::Write::write_all(file, line.as_bytes());
        }
    }

    fn finish(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (second, (_, interval)) in pending {
            self.emit(second, &interval);
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some((path, file)) = &mut self.log {
            if let Err(err) = std::io::Write::flush(file) {
                eprintln!("tailcut-load: interval log {}: {err}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_enter_the_latency_histograms_fast_failures_do_not() {
        let start = Instant::now();
        let mut recorder = Recorder::new((start, start + Duration::from_secs(60)));
        let intended = start + Duration::from_secs(1);
        recorder.finished(
            intended,
            Some(intended),
            intended + Duration::from_secs(10),
            Outcome::Timeout,
        );
        recorder.finished(intended, None, intended + Duration::from_secs(10), Outcome::Timeout);
        recorder.finished(
            intended,
            Some(intended),
            intended + Duration::from_millis(1),
            Outcome::Reset,
        );
        recorder.finished(
            intended,
            Some(intended),
            intended + Duration::from_millis(1),
            Outcome::Refused,
        );
        assert_eq!(recorder.corrected.len(), 2, "both timeouts, at their full wait");
        assert!(recorder.corrected.min() >= 9_990_000);
        assert_eq!(recorder.uncorrected.len(), 1, "only the one that was sent");
        assert!(
            recorder.send_lag.is_empty(),
            "the unsent one waited for a connection the target held: not generator lag"
        );
        assert_eq!(
            (recorder.errors.timeout, recorder.errors.reset, recorder.errors.refused),
            (2, 1, 1)
        );
    }

    #[test]
    fn only_requests_intended_in_the_window_are_recorded() {
        let start = Instant::now();
        let window = (start + Duration::from_secs(2), start + Duration::from_secs(4));
        let mut recorder = Recorder::new(window);
        for at in [1u64, 3, 5] {
            let intended = start + Duration::from_secs(at);
            recorder.sent(intended, intended, intended);
            recorder.finished(
                intended,
                Some(intended),
                intended + Duration::from_millis(1),
                Outcome::Response(200),
            );
        }
        assert_eq!(recorder.corrected.len(), 1);
        assert_eq!(recorder.sent_in_window, 1);
        assert_eq!(
            recorder.interval.completed, 3,
            "the interval log covers warm-up and tail too"
        );
    }
}
