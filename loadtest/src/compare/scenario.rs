//! A comparison scenario: the load, the backend, and the proxies' shape,
//! read from TOML (`loadtest/scenarios/*.toml`). Unknown keys are errors.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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
    /// Tokio workers for tailcut and GOMAXPROCS for Go: always equal.
    #[serde(default = "one")]
    pub proxy_threads: usize,
    /// The rate sweep after the saturation runs.
    #[serde(default)]
    pub sweep: Sweep,
    /// The idle-connection memory phase.
    #[serde(default)]
    pub idle: Idle,
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
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            size: size(),
            delay: delay(),
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
    fn unknown_keys_are_errors_with_a_position() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "name = \"x\"\n[load]\nrate = 10\nduration = \"1s\"\nratee = 5\n").expect("write");
        let err = Scenario::load(&path).expect_err("unknown key").to_string();
        assert!(err.contains("line 5") && err.contains("ratee"), "{err}");
    }
}
