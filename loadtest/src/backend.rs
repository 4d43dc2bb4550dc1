//! `tailcut-load backend`: a fast upstream for experiments, with a chosen
//! response size, status and service-time distribution.
//!
//! With `--capacity N` it has a real capacity, as a backend with a
//! thread pool has: N requests are served at once (each for its service
//! time), and the others wait inside it, in arrival order, for a free
//! slot; their wait adds to their latency, as it would behind any queue.
//!
//! For balancing experiments the chosen status and delay can apply only
//! within a window (`--window 4s..8s`), counted from the backend's epoch:
//! its start, or the last request to [`EPOCH_PATH`] (plus its `after`
//! query, a duration, so that the epoch can match a run's schedule). Outside the window it
//! answers 200 at once. [`SERVED_PATH`] answers how many requests (other
//! than these two) it has served, so that a comparison can tell each
//! backend's share of a trial.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use tokio::net::TcpListener;

use crate::timing::wait_until;

/// The z-score of the 99th percentile of a standard normal distribution.
const Z_99: f64 = 2.326_347_874;

/// How long the backend takes before answering.
#[derive(Debug, Clone, PartialEq)]
pub enum Delay {
    /// Always the same: `fixed:200us` (`none` is `fixed:0`).
    Fixed(Duration),
    /// Evenly spread: `uniform:100us..1ms`.
    Uniform(Duration, Duration),
    /// Log-normal with the given median and p99: `lognormal:median=300us,p99=5ms`.
    LogNormal {
        /// Median service time.
        median: Duration,
        /// 99th percentile service time.
        p99: Duration,
    },
    /// Mostly fast, sometimes slow: `bimodal:99%=200us,1%=50ms`.
    Bimodal {
        /// Share of slow responses (0..1).
        slow_share: f64,
        /// The fast time.
        fast: Duration,
        /// The slow time.
        slow: Duration,
    },
}

impl Delay {
    /// Draws one service time.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match self {
            Delay::Fixed(d) => *d,
            Delay::Uniform(low, high) => {
                if high <= low {
                    *low
                } else {
                    Duration::from_secs_f64(rng.gen_range(low.as_secs_f64()..high.as_secs_f64()))
                }
            }
            Delay::LogNormal { median, p99 } => {
                let mu = median.as_secs_f64().ln();
                let sigma = ((p99.as_secs_f64() / median.as_secs_f64()).ln() / Z_99).max(0.0);
                match LogNormal::new(mu, sigma) {
                    Ok(dist) => Duration::from_secs_f64(dist.sample(rng).min(3600.0)),
                    Err(_) => *median,
                }
            }
            Delay::Bimodal { slow_share, fast, slow } => {
                if rng.gen_bool(slow_share.clamp(0.0, 1.0)) {
                    *slow
                } else {
                    *fast
                }
            }
        }
    }
}

/// Why a delay specification was not understood.
#[derive(Debug, thiserror::Error)]
#[error("{spec:?}: {problem} (examples: none, fixed:200us, uniform:100us..1ms, lognormal:median=300us,p99=5ms, bimodal:99%=200us,1%=50ms)")]
pub struct DelayError {
    spec: String,
    problem: String,
}

impl FromStr for Delay {
    type Err = DelayError;

    fn from_str(spec: &str) -> Result<Self, DelayError> {
        let fail = |problem: &str| DelayError {
            spec: spec.to_owned(),
            problem: problem.to_owned(),
        };
        let duration = |text: &str| {
            humantime::parse_duration(text.trim()).map_err(|_| fail(&format!("{text:?} is not a duration")))
        };
        if spec == "none" {
            return Ok(Delay::Fixed(Duration::ZERO));
        }
        let (kind, args) = spec.split_once(':').ok_or_else(|| fail("expected KIND:ARGS"))?;
        match kind {
            "fixed" => Ok(Delay::Fixed(duration(args)?)),
            "uniform" => {
                let (low, high) = args.split_once("..").ok_or_else(|| fail("expected LOW..HIGH"))?;
                let (low, high) = (duration(low)?, duration(high)?);
                if high < low {
                    return Err(fail("HIGH is below LOW"));
                }
                Ok(Delay::Uniform(low, high))
            }
            "lognormal" => {
                let (mut median, mut p99) = (None, None);
                for part in args.split(',') {
                    match part.split_once('=') {
                        Some(("median", v)) => median = Some(duration(v)?),
                        Some(("p99", v)) => p99 = Some(duration(v)?),
                        _ => return Err(fail("expected median=..,p99=..")),
                    }
                }
                let (median, p99) = (
                    median.ok_or_else(|| fail("no median"))?,
                    p99.ok_or_else(|| fail("no p99"))?,
                );
                if median.is_zero() || p99 < median {
                    return Err(fail("need 0 < median <= p99"));
                }
                Ok(Delay::LogNormal { median, p99 })
            }
            "bimodal" => {
                let mut modes = Vec::new();
                for part in args.split(',') {
                    let (share, value) = part.split_once("%=").ok_or_else(|| fail("expected SHARE%=DURATION"))?;
                    let share: f64 = share.trim().parse().map_err(|_| fail("share is not a number"))?;
                    modes.push((share / 100.0, duration(value)?));
                }
                match modes.as_slice() {
                    [(fast_share, fast), (slow_share, slow)] if ((fast_share + slow_share) - 1.0).abs() < 1e-9 => {
                        Ok(Delay::Bimodal {
                            slow_share: *slow_share,
                            fast: *fast,
                            slow: *slow,
                        })
                    }
                    _ => Err(fail("expected two modes whose shares add up to 100%")),
                }
            }
            _ => Err(fail("unknown kind")),
        }
    }
}

/// A request to this path restarts the backend's epoch (see `--window`).
pub const EPOCH_PATH: &str = "/_tailcut-load/epoch";
/// A request to this path answers the count of requests served so far.
pub const SERVED_PATH: &str = "/_tailcut-load/served";

/// What the backend answers.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Response body size in bytes.
    pub size: usize,
    /// Response status.
    pub status: StatusCode,
    /// Service time before answering.
    pub delay: Delay,
    /// When set, `status` and `delay` apply only from the first to the
    /// second offset after the epoch; 200 at once otherwise.
    pub window: Option<(Duration, Duration)>,
    /// The share of requests (0 to 1) that get `status` and `delay`, drawn
    /// at random; the others get 200 at once.
    pub share: f64,
    /// Requests served at once; the others wait in arrival order. `None`:
    /// no limit, every request is served as it arrives.
    pub capacity: Option<usize>,
}

/// Parses `--window START..END`, e.g. `4s..8s`.
pub fn parse_window(spec: &str) -> Result<(Duration, Duration), String> {
    let (start, end) = spec
        .split_once("..")
        .ok_or_else(|| format!("{spec:?}: expected START..END, e.g. 4s..8s"))?;
    let parse = |text: &str| {
        humantime::parse_duration(text.trim()).map_err(|_| format!("{spec:?}: {text:?} is not a duration"))
    };
    let (start, end) = (parse(start)?, parse(end)?);
    if end <= start {
        return Err(format!("{spec:?}: END must be after START"));
    }
    Ok((start, end))
}

/// What the backend's requests share: its epoch and its count.
struct State {
    config: BackendConfig,
    epoch: Mutex<Instant>,
    served: AtomicU64,
    /// One permit per request served at once (tokio's semaphore is fair:
    /// waiters are served in arrival order).
    slots: Option<tokio::sync::Semaphore>,
}

impl State {
    fn new(config: BackendConfig) -> Self {
        let slots = config.capacity.map(tokio::sync::Semaphore::new);
        State {
            config,
            epoch: Mutex::new(Instant::now()),
            served: AtomicU64::new(0),
            slots,
        }
    }

    /// Whether the configured status and delay apply now.
    fn faulty(&self) -> bool {
        let Some((start, end)) = self.config.window else {
            return true;
        };
        let epoch = *self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        // Before an epoch set ahead: not yet in the window.
        let Some(since) = Instant::now().checked_duration_since(epoch) else {
            return false;
        };
        since >= start && since < end
    }
}

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_entropy());
}

/// Serves `listener` until the task is dropped: HTTP/1.1 and h2c.
pub async fn serve(listener: TcpListener, config: Arc<BackendConfig>) {
    let body = Bytes::from(vec![b'x'; config.size]);
    let state = Arc::new(State::new((*config).clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (state, body, builder) = (state.clone(), body.clone(), builder.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let (state, body) = (state.clone(), body.clone());
                async move { Ok::<_, Infallible>(answer(&state, request.uri(), body).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// The answer to a request for `uri`.
async fn answer(state: &State, uri: &http::Uri, body: Bytes) -> Response<Full<Bytes>> {
    match uri.path() {
        EPOCH_PATH => {
            let after = uri
                .query()
                .and_then(|q| q.strip_prefix("after="))
                .and_then(|d| humantime::parse_duration(d).ok())
                .unwrap_or_default();
            *state.epoch.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now() + after;
            return Response::new(Full::new(Bytes::from_static(b"epoch\n")));
        }
        SERVED_PATH => {
            let served = state.served.load(Ordering::Relaxed);
            return Response::new(Full::new(Bytes::from(format!("{served}\n"))));
        }
        _ => {}
    }
    // Held while the request is served: its service time and answer.
    let _slot = match &state.slots {
        Some(slots) => slots.acquire().await.ok(),
        None => None,
    };
    state.served.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Full::new(body));
    let drawn = state.config.share >= 1.0 || RNG.with(|rng| rng.borrow_mut().gen_bool(state.config.share));
    if drawn && state.faulty() {
        let delay = RNG.with(|rng| state.config.delay.sample(&mut *rng.borrow_mut()));
        if !delay.is_zero() && state.slots.is_some() {
            // With a capacity, many requests are in service at once, and
            // `wait_until`'s precise final spin would keep a core busy (the
            // load generator's); a sleeping thread is as precise (tens of
            // microseconds late) and costs nothing while it waits.
            let _ = tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await;
        } else if !delay.is_zero() {
            wait_until(Instant::now() + delay).await;
        }
        *response.status_mut() = state.config.status;
    }
    response
}

/// Runs the backend on `listen` with `workers` threads until interrupted.
pub fn run(listen: SocketAddr, workers: usize, config: BackendConfig) -> std::io::Result<()> {
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        eprintln!("tailcut-load backend listening on {}", listener.local_addr()?);
        tokio::select! {
            () = serve(listener, Arc::new(config)) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_two_ordered_durations() {
        assert_eq!(
            parse_window("4s..8s"),
            Ok((Duration::from_secs(4), Duration::from_secs(8)))
        );
        for bad in ["4s", "8s..4s", "4s..4s", "soon..8s"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_fault_applies_only_within_the_window_from_the_epoch() {
        let state = State::new(BackendConfig {
            size: 1,
            status: StatusCode::SERVICE_UNAVAILABLE,
            delay: Delay::Fixed(Duration::ZERO),
            window: Some((Duration::from_secs(1), Duration::from_secs(2))),
            share: 1.0,
            capacity: None,
        });
        let uri = |text: &'static str| http::Uri::from_static(text);
        assert_eq!(answer(&state, &uri("/"), Bytes::new()).await.status(), StatusCode::OK);
        *state.epoch.lock().expect("lock") = Instant::now() - Duration::from_millis(1500);
        assert_eq!(
            answer(&state, &uri("/"), Bytes::new()).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        answer(&state, &uri(EPOCH_PATH), Bytes::new()).await;
        assert_eq!(answer(&state, &uri("/"), Bytes::new()).await.status(), StatusCode::OK);
        // An epoch ahead: the window is further away still.
        answer(&state, &uri("/_tailcut-load/epoch?after=10s"), Bytes::new()).await;
        *state.epoch.lock().expect("lock") -= Duration::from_millis(1500);
        assert_eq!(answer(&state, &uri("/"), Bytes::new()).await.status(), StatusCode::OK);
        assert_eq!(
            state.served.load(Ordering::Relaxed),
            4,
            "control requests are not counted"
        );
    }

    #[tokio::test]
    async fn over_capacity_requests_wait_in_arrival_order() {
        let state = Arc::new(State::new(BackendConfig {
            size: 1,
            status: StatusCode::OK,
            delay: Delay::Fixed(Duration::from_millis(20)),
            window: None,
            share: 1.0,
            capacity: Some(2),
        }));
        let order = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let (state, order) = (state.clone(), order.clone());
                tokio::spawn(async move {
                    let response = answer(&state, &http::Uri::from_static("/"), Bytes::new()).await;
                    order.lock().expect("lock").push(i);
                    response.status()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), StatusCode::OK);
        }
        // Two at a time, first come first served: the first two finish
        // first (in either order), then the next two, then the last.
        let mut order = order.lock().expect("lock").clone();
        order[..2].sort_unstable();
        order[2..4].sort_unstable();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        assert_eq!(state.served.load(Ordering::Relaxed), 5);
        // Three rounds of service one after another, not one round of five
        // (a lower bound the service time guarantees, not a speed).
        assert!(start.elapsed() >= Duration::from_millis(60), "{:?}", start.elapsed());
    }

    #[test]
    fn parses_every_documented_form() {
        let us = Duration::from_micros;
        assert_eq!("none".parse::<Delay>().expect("none"), Delay::Fixed(Duration::ZERO));
        assert_eq!("fixed:200us".parse::<Delay>().expect("fixed"), Delay::Fixed(us(200)));
        assert_eq!(
            "uniform:100us..1ms".parse::<Delay>().expect("uniform"),
            Delay::Uniform(us(100), us(1000))
        );
        assert_eq!(
            "lognormal:median=300us,p99=5ms".parse::<Delay>().expect("lognormal"),
            Delay::LogNormal {
                median: us(300),
                p99: us(5000)
            }
        );
        assert_eq!(
            "bimodal:99%=200us,1%=50ms".parse::<Delay>().expect("bimodal"),
            Delay::Bimodal {
                slow_share: 0.01,
                fast: us(200),
                slow: us(50_000)
            }
        );
        for bad in [
            "fixed",
            "fixed:soon",
            "uniform:1ms..100us",
            "bimodal:90%=1ms,5%=2ms",
            "gamma:1",
        ] {
            assert!(bad.parse::<Delay>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn lognormal_samples_have_the_asked_median_and_p99() {
        let delay: Delay = "lognormal:median=300us,p99=5ms".parse().expect("parses");
        let mut rng = SmallRng::seed_from_u64(1);
        let mut samples: Vec<f64> = (0..100_000).map(|_| delay.sample(&mut rng).as_secs_f64()).collect();
        samples.sort_by(f64::total_cmp);
        let (median, p99) = (samples[50_000], samples[99_000]);
        assert!((median - 300e-6).abs() / 300e-6 < 0.03, "median {median}");
        assert!((p99 - 5e-3).abs() / 5e-3 < 0.05, "p99 {p99}");
    }

    #[test]
    fn bimodal_slow_share_matches() {
        let delay: Delay = "bimodal:99%=200us,1%=50ms".parse().expect("parses");
        let mut rng = SmallRng::seed_from_u64(2);
        let slow = (0..100_000)
            .filter(|_| delay.sample(&mut rng) == Duration::from_millis(50))
            .count();
        assert!((800..1200).contains(&slow), "{slow} slow of 100000");
    }
}
