//! A comparison scenario: the load, the backend, and the proxies' shape,
//! read from TOML (`loadtest/scenarios/*.toml`). Unknown keys are errors.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One scenario, with every default filled in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the summary and results.
    pub name: String,
    /// What it tests, in a sentence.
    #[serde(default)]
    pub description: String,
    /// The open-loop load of each trial.
    pub load: Load,
    /// What `tailcut-load backend` answers.
    #[serde(default)]
    pub backend: Backend,
    /// How many backends, and the one that misbehaves (a balancing
    /// scenario when there are several).
    #[serde(default)]
    pub backends: Backends,
    /// Tokio workers for tailcut and GOMAXPROCS for Go: always equal.
    #[serde(default = "one")]
    pub proxy_threads: usize,
    /// The rate sweep after the saturation runs.
    #[serde(default)]
    pub sweep: Sweep,
    /// The idle-connection memory phase.
    #[serde(default)]
    pub idle: Idle,
    /// The tail-control feature shown: tailcut with it off and on, nginx
    /// and HAProxy with their nearest equivalent.
    #[serde(default)]
    pub tail: Option<TailFeature>,
}

/// The rate sweep: tailcut and Go at fractions of saturation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Fractions of saturation offered (empty skips the sweep).
    #[serde(default)]
    pub fractions: Vec<f64>,
    /// Measured window of each sweep trial.
    #[serde(deserialize_with = "duration", default = "sweep_duration")]
    pub duration: Duration,
    /// Warm-up of each sweep trial.
    #[serde(deserialize_with = "duration", default = "sweep_warmup")]
    pub warmup: Duration,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            fractions: Vec::new(),
            duration: sweep_duration(),
            warmup: sweep_warmup(),
        }
    }
}

/// The idle-connection phase.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idle {
    /// Keep-alive connections held open at once per proxy (0 skips it).
    #[serde(default)]
    pub connections: usize,
}

/// The most idle connections a scenario may ask for: the proxies are
/// configured for 10,500 and every process here has 20,000 descriptors.
pub const MAX_IDLE_CONNECTIONS: usize = 10_000;

/// The load of each trial.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Offered rate of the open-loop trials, requests/s.
    pub rate: f64,
    /// Measured window of each trial.
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// Warm-up before each trial's window.
    #[serde(deserialize_with = "duration", default = "warmup")]
    pub warmup: Duration,
    /// Connections.
    #[serde(default = "connections")]
    pub connections: usize,
    /// Rounds of interleaved trials (tailcut, Go, direct in each).
    #[serde(default = "rounds")]
    pub rounds: usize,
    /// Window of each proxy's saturation run (0 skips it).
    #[serde(deserialize_with = "duration", default = "saturation")]
    pub saturation: Duration,
    /// Connections of the saturation runs.
    #[serde(default = "saturation_connections")]
    pub saturation_connections: usize,
    /// Extra request headers sent with every request, `name: value`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Share of requests that may fail before a trial is invalid (0: any
    /// error invalidates it; a failing-backend scenario measures errors).
    #[serde(default = "zero_errors")]
    pub max_error_rate: f64,
    /// The generator's p99 send lag above which a trial is invalid (its
    /// schedule slipped). Latency counts from each request's intended send
    /// time whatever the lag; the limit says when the generator, not the
    /// target, may be what was measured.
    #[serde(deserialize_with = "duration", default = "max_send_lag")]
    pub max_send_lag: Duration,
    /// The generator's longest stall above which a trial is invalid.
    #[serde(deserialize_with = "duration", default = "max_stall")]
    pub max_stall: Duration,
    /// An overload scenario's loads, as multiples of `rate`: each round
    /// runs every target at each, lightest first.
    #[serde(default = "single_load")]
    pub multiples: Vec<f64>,
}

fn single_load() -> Vec<f64> {
    vec![1.0]
}

/// `tailcut-load backend` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Response body bytes.
    #[serde(default = "size")]
    pub size: usize,
    /// Service time distribution, as `tailcut-load backend --delay` takes it.
    #[serde(default = "delay")]
    pub delay: String,
    /// The status every backend answers (200 unless set: 503 for a
    /// scenario where every backend fails).
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Requests each backend serves at once, the others waiting inside it
    /// in arrival order (`tailcut-load backend --capacity`); none: no limit.
    #[serde(default)]
    pub capacity: Option<usize>,
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            size: size(),
            delay: delay(),
            status: ok_status(),
            capacity: None,
        }
    }
}

fn ok_status() -> u16 {
    200
}

/// The tail-control feature a scenario shows: tailcut runs twice, with the
/// feature off (its defaults) and on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TailFeature {
    /// `[routes.hedge]` with its defaults.
    Hedging,
    /// `[routes.retry]` with its defaults.
    Retries,
    /// `[upstreams.NAME.concurrency]` enabled at its defaults, in front of
    /// backends with a capacity (`[backend] capacity`), offered each of
    /// `[load] multiples` of `[load] rate`.
    Overload,
}

/// Several backends behind every proxy, the first of them faulty: a
/// balancing scenario. Each proxy then balances as its users would have
/// it: tailcut once per policy, the Go proxy round-robin, nginx
/// `least_conn` with `max_fails`, HAProxy `leastconn` with health checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    /// Backends (1: the single-backend comparison).
    #[serde(default = "one")]
    pub count: usize,
    /// How the first backend misbehaves (none: all alike).
    #[serde(default)]
    pub faulty: Option<Faulty>,
}

impl Default for Backends {
    fn default() -> Self {
        Backends { count: 1, faulty: None }
    }
}

impl Backends {
    /// Whether this is a balancing scenario.
    pub fn balancing(&self) -> bool {
        self.count > 1
    }
}

/// The faulty backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faulty {
    /// `slow` (answers after `delay`), `failing` (answers `status` at
    /// once) or `refusing` (nothing listens on its address).
    pub mode: FaultMode,
    /// For `slow`: its service time, as `[backend] delay` takes it.
    #[serde(default = "slow_delay")]
    pub delay: String,
    /// For `failing`: the status it answers.
    #[serde(default = "failing_status")]
    pub status: u16,
    /// For `slow` and `failing`: misbehave only in this window of each
    /// trial, counted from the trial's start (warm-up included), e.g.
    /// "4s..7s"; the whole trial when absent.
    #[serde(default)]
    pub window: Option<String>,
    /// For `slow` and `failing`: the share of its requests (0 to 1, drawn
    /// at random) that get the delay or the status; all of them unless set.
    #[serde(default = "all")]
    pub share: f64,
}

fn all() -> f64 {
    1.0
}

/// How the faulty backend misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultMode {
    /// Answers late.
    Slow,
    /// Answers an error status.
    Failing,
    /// Refuses connections.
    Refusing,
}

impl Faulty {
    /// The window, parsed.
    pub fn window(&self) -> Option<(Duration, Duration)> {
        self.window
            .as_deref()
            .and_then(|w| crate::backend::parse_window(w).ok())
    }

    /// What it does, in words.
    pub fn describe(&self) -> String {
        let what = match self.mode {
            FaultMode::Slow => format!("answers after {}", self.delay.trim_start_matches("fixed:")),
            FaultMode::Failing if self.share < 1.0 => {
                format!(
                    "answers {} at once to {:.0}% of requests",
                    self.status,
                    self.share * 100.0
                )
            }
            FaultMode::Failing => format!("answers {} at once", self.status),
            FaultMode::Refusing => "refuses connections".to_owned(),
        };
        match &self.window {
            Some(window) => format!("{what} from {} of each trial", window.replace("..", " to ")),
            None => what,
        }
    }
}

/// Durations are written like "10s", "500ms", "2m".
fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|err| serde::de::Error::custom(format!("{text:?} is not a duration ({err}); write e.g. 10s, 500ms")))
}

fn one() -> usize {
    1
}
fn warmup() -> Duration {
    Duration::from_secs(2)
}
fn connections() -> usize {
    16
}
fn rounds() -> usize {
    3
}
fn saturation() -> Duration {
    Duration::from_secs(5)
}
fn saturation_connections() -> usize {
    64
}
fn sweep_duration() -> Duration {
    Duration::from_secs(3)
}
fn sweep_warmup() -> Duration {
    Duration::from_secs(1)
}
fn size() -> usize {
    12
}
fn delay() -> String {
    "none".into()
}
fn slow_delay() -> String {
    "fixed:50ms".into()
}
fn failing_status() -> u16 {
    503
}
fn zero_errors() -> f64 {
    0.0
}
fn max_send_lag() -> Duration {
    Duration::from_millis(1)
}
fn max_stall() -> Duration {
    Duration::from_millis(10)
}

/// Why a scenario could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
}

impl Scenario {
    /// Reads the scenario at `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|err| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().replace('\n', "; "),
        })?;
        if scenario.load.rate <= 0.0 || scenario.load.rounds == 0 || scenario.load.connections == 0 {
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                message: "load.rate, load.rounds and load.connections must be positive".into(),
            });
        }
        if let Some(bad) = scenario.sweep.fractions.iter().find(|f| !(**f > 0.0 && **f <= 1.5)) {
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                message: format!("sweep.fractions: {bad} is not in (0, 1.5]"),
            });
        }
        if let Some(problem) = scenario.overload_problem() {
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                message: problem,
            });
        }
        if let Some(problem) = scenario.backends_problem() {
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                message: problem,
            });
        }
        if scenario.idle.connections > MAX_IDLE_CONNECTIONS {
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "idle.connections: {} is over {MAX_IDLE_CONNECTIONS}",
                    scenario.idle.connections
                ),
            });
        }
        Ok(scenario)
    }

    /// What is wrong with the overload settings, if anything.
    fn overload_problem(&self) -> Option<String> {
        if let Some(bad) = self.load.multiples.iter().find(|m| !(**m > 0.0 && **m <= 10.0)) {
            return Some(format!("load.multiples: {bad} is not in (0, 10]"));
        }
        if self.load.multiples.is_empty() {
            return Some("load.multiples: needs at least one load".into());
        }
        if self.backend.capacity == Some(0) {
            return Some("backend.capacity: must be at least 1".into());
        }
        match (self.tail, self.backend.capacity, self.load.multiples.len()) {
            (Some(TailFeature::Overload), None, _) => {
                Some("tail = \"overload\" needs backend.capacity: the load is offered in multiples of it".into())
            }
            (Some(TailFeature::Overload), _, _) | (_, _, 1) => None,
            _ => Some("load.multiples: only an overload scenario (tail = \"overload\") runs several loads".into()),
        }
    }

    /// What is wrong with `[backends]`, if anything.
    fn backends_problem(&self) -> Option<String> {
        let backends = &self.backends;
        if !(1..=16).contains(&backends.count) {
            return Some(format!("backends.count: {} is not in 1..=16", backends.count));
        }
        let faulty = backends.faulty.as_ref()?;
        if backends.count < 2 {
            return Some("backends.faulty needs backends.count of 2 or more".into());
        }
        if let Err(err) = faulty.delay.parse::<crate::backend::Delay>() {
            return Some(format!("backends.faulty.delay: {err}"));
        }
        if !(faulty.share > 0.0 && faulty.share <= 1.0) {
            return Some(format!(
                "backends.faulty.share: {} is not above 0 and at most 1",
                faulty.share
            ));
        }
        if http::StatusCode::from_u16(faulty.status).is_err() {
            return Some(format!("backends.faulty.status: {} is not a status", faulty.status));
        }
        if let Some(window) = &faulty.window {
            if faulty.mode == FaultMode::Refusing {
                return Some("backends.faulty.window: a refusing backend refuses for the whole run".into());
            }
            if let Err(err) = crate::backend::parse_window(window) {
                return Some(format!("backends.faulty.window: {err}"));
            }
        }
        if !(0.0..=1.0).contains(&self.load.max_error_rate) {
            return Some(format!(
                "load.max_error_rate: {} is not in [0, 1]",
                self.load.max_error_rate
            ));
        }
        None
    }

    /// The long version (`compare --full`): three times the rounds and
    /// three times every measured window, for tighter intervals.
    pub fn full(mut self) -> Scenario {
        self.load.rounds *= 3;
        self.load.duration *= 3;
        self.load.saturation *= 3;
        self.sweep.duration *= 3;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap_or_else(|err| panic!("{err}"));
                seen += 1;
            }
        }
        assert!(seen >= 1);
    }

    #[test]
    fn a_faulty_backend_is_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.toml");
        let with = |backends: &str| {
            std::fs::write(
                &path,
                format!("name = \"x\"\n[load]\nrate = 10\nduration = \"1s\"\n{backends}"),
            )
            .expect("write");
            Scenario::load(&path).map_err(|err| err.to_string())
        };
        let slow =
            with("[backends]\ncount = 5\n[backends.faulty]\nmode = \"slow\"\nwindow = \"4s..7s\"\n").expect("valid");
        let faulty = slow.backends.faulty.expect("faulty");
        assert_eq!(faulty.window(), Some((Duration::from_secs(4), Duration::from_secs(7))));
        assert_eq!(faulty.describe(), "answers after 50ms from 4s to 7s of each trial");
        for (bad, says) in [
            (
                "[backends]\ncount = 1\n[backends.faulty]\nmode = \"slow\"\n",
                "count of 2",
            ),
            (
                "[backends]\ncount = 3\n[backends.faulty]\nmode = \"refusing\"\nwindow = \"1s..2s\"\n",
                "whole run",
            ),
            (
                "[backends]\ncount = 3\n[backends.faulty]\nmode = \"failing\"\nstatus = 1000\n",
                "not a status",
            ),
            (
                "[backends]\ncount = 3\n[backends.faulty]\nmode = \"slow\"\nwindow = \"7s..4s\"\n",
                "window",
            ),
            (
                "[backends]\ncount = 3\n[backends.faulty]\nmode = \"sleepy\"\n",
                "sleepy",
            ),
        ] {
            let err = with(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "name = \"x\"\n[load]\nrate = 10\nduration = \"1s\"\nratee = 5\n").expect("write");
        let err = Scenario::load(&path).expect_err("unknown key").to_string();
        assert!(err.contains("line 5") && err.contains("ratee"), "{err}");
    }
}
