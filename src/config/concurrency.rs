//! A cluster's admission control, `[upstreams.NAME.concurrency]`: the
//! adaptive limit on its requests in flight, and the short queue in front
//! of it.

use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use super::{as_humantime, schema, Validator};

/// The adaptive concurrency limit and its admission queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concurrency {
    /// Whether requests to the cluster pass through admission at all
    /// (default false: every request goes at once, as without the section).
    pub enabled: bool,
    /// How the limit adapts.
    pub algorithm: LimitAlgorithm,
    /// The limit never goes below this.
    pub min_limit: usize,
    /// Nor above this (nor does it start above it).
    pub max_limit: usize,
    /// The limit is recomputed once per window, from the latencies
    /// (time to response headers) of the requests answered in it.
    #[serde(serialize_with = "as_humantime")]
    pub sample_window: Duration,
    /// The percentile of a window's latencies compared with the minimum.
    pub sample_percentile: f64,
    /// The minimum latency is the lowest seen over the last one to two of
    /// these periods: older lows are forgotten, so the baseline follows a
    /// backend that became slower for good.
    #[serde(serialize_with = "as_humantime")]
    pub min_rtt_every: Duration,
    /// Latency above the minimum tolerated before the limit shrinks, in
    /// percent of the minimum.
    pub buffer_percent: u32,
    /// The queueing delay CoDel tolerates standing.
    #[serde(serialize_with = "as_humantime")]
    pub queue_target: Duration,
    /// How long the queue may stand above `queue_target` before the
    /// cluster counts as overloaded; also the longest any request waits.
    #[serde(serialize_with = "as_humantime")]
    pub queue_interval: Duration,
    /// The most requests waiting; 0: none wait, a request over the limit
    /// is refused at once.
    pub max_queue: usize,
}

/// The published algorithm a limit follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAlgorithm {
    /// Envoy's adaptive concurrency gradient.
    Gradient,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency {
            enabled: false,
            algorithm: LimitAlgorithm::Gradient,
            min_limit: 3,
            max_limit: 1000,
            sample_window: Duration::from_millis(100),
            sample_percentile: 90.0,
            min_rtt_every: Duration::from_secs(30),
            buffer_percent: 25,
            queue_target: Duration::from_millis(5),
            queue_interval: Duration::from_millis(100),
            max_queue: 100,
        }
    }
}

impl Validator<'_> {
    pub(super) fn concurrency(
        &self,
        raw: Option<schema::Concurrency>,
        key: &str,
    ) -> Result<Concurrency, super::Invalid> {
        let defaults = Concurrency::default();
        let Some(raw) = raw else { return Ok(defaults) };
        let field = |name: &str| format!("{key}.{name}");
        let algorithm = match &raw.algorithm {
            None => defaults.algorithm,
            Some(name) if name.get_ref() == "gradient" => LimitAlgorithm::Gradient,
            Some(name) => {
                return Err(self.locator.error(
                    Some(name.span()),
                    field("algorithm"),
                    format!(
                        "{:?} is not an algorithm; the one there is: \"gradient\"",
                        name.get_ref()
                    ),
                ))
            }
        };
        let min_limit = match &raw.min_limit {
            None => defaults.min_limit,
            Some(value) => self.positive(value, &field("min_limit"))?.get(),
        };
        let max_limit = match &raw.max_limit {
            None => defaults.max_limit.max(min_limit),
            Some(value) => {
                let max = self.positive(value, &field("max_limit"))?.get();
                if max < min_limit {
                    return Err(self.locator.error(
                        Some(value.span()),
                        field("max_limit"),
                        format!("{max} is below min_limit ({min_limit})"),
                    ));
                }
                max
            }
        };
        let sample_window = self.bounded(
            raw.sample_window,
            &field("sample_window"),
            defaults.sample_window,
            (Duration::from_millis(10), Duration::from_secs(10)),
        )?;
        let min_rtt_every = self.bounded(
            raw.min_rtt_every,
            &field("min_rtt_every"),
            defaults.min_rtt_every,
            (sample_window * 10, Duration::from_secs(3600)),
        )?;
        let sample_percentile = match &raw.sample_percentile {
            None => defaults.sample_percentile,
            Some(value) => self.percentile(value, &field("sample_percentile"))?,
        };
        let queue_target = self.bounded(
            raw.queue_target,
            &field("queue_target"),
            defaults.queue_target,
            (Duration::from_micros(100), Duration::from_secs(1)),
        )?;
        let queue_interval = self.bounded(
            raw.queue_interval,
            &field("queue_interval"),
            defaults.queue_interval,
            (queue_target, Duration::from_secs(10)),
        )?;
        Ok(Concurrency {
            enabled: raw.enabled.map_or(defaults.enabled, |v| *v.get_ref()),
            algorithm,
            min_limit,
            max_limit,
            sample_window,
            sample_percentile,
            min_rtt_every,
            buffer_percent: match &raw.buffer_percent {
                None => defaults.buffer_percent,
                Some(value) => self.percent(value, &field("buffer_percent"))?,
            },
            queue_target,
            queue_interval,
            max_queue: match &raw.max_queue {
                None => defaults.max_queue,
                Some(value) => self.non_negative(value, &field("max_queue"))?,
            },
        })
    }

    /// A duration between `range.0` and `range.1`, both included.
    fn bounded(
        &self,
        raw: Option<Spanned<String>>,
        key: &str,
        default: Duration,
        range: (Duration, Duration),
    ) -> Result<Duration, super::Invalid> {
        let span = raw.as_ref().map(Spanned::span);
        let default = humantime::format_duration(default).to_string();
        let value = self.duration(raw, key, &default)?;
        if value < range.0 || value > range.1 {
            return Err(self.locator.error(
                span,
                key,
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(range.0),
                    humantime::format_duration(range.1)
                ),
            ));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;

    const BASE: &str = r#"
[[listeners]]
name = "main"
address = "127.0.0.1:0"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = ["127.0.0.1:9000"]
"#;

    fn parsed(section: &str) -> Result<crate::config::Config, String> {
        parse(
            Path::new("t.toml"),
            &format!("{BASE}[upstreams.app.concurrency]\n{section}"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn off_unless_enabled_and_defaults_as_documented() {
        let config = parse(Path::new("t.toml"), BASE).expect("valid");
        assert_eq!(config.upstreams["app"].concurrency, Concurrency::default());
        assert!(!config.upstreams["app"].concurrency.enabled);
        let on = parsed("enabled = true\n").expect("valid");
        assert_eq!(
            on.upstreams["app"].concurrency,
            Concurrency {
                enabled: true,
                ..Concurrency::default()
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let config = parsed(
            "enabled = true\nalgorithm = \"gradient\"\nmin_limit = 2\nmax_limit = 50\n\
             sample_window = \"50ms\"\nsample_percentile = 99\nmin_rtt_every = \"10s\"\n\
             buffer_percent = 10\nqueue_target = \"2ms\"\nqueue_interval = \"50ms\"\nmax_queue = 0\n",
        )
        .expect("valid");
        assert_eq!(
            config.upstreams["app"].concurrency,
            Concurrency {
                enabled: true,
                algorithm: LimitAlgorithm::Gradient,
                min_limit: 2,
                max_limit: 50,
                sample_window: Duration::from_millis(50),
                sample_percentile: 99.0,
                min_rtt_every: Duration::from_secs(10),
                buffer_percent: 10,
                queue_target: Duration::from_millis(2),
                queue_interval: Duration::from_millis(50),
                max_queue: 0,
            }
        );
    }

    #[test]
    fn nonsense_is_refused_with_its_key() {
        for (section, expected) in [
            (
                "algorithm = \"vegas\"\n",
                "upstreams.app.concurrency.algorithm: \"vegas\" is not an algorithm",
            ),
            (
                "min_limit = 0\n",
                "upstreams.app.concurrency.min_limit: must be greater than zero",
            ),
            (
                "min_limit = 10\nmax_limit = 5\n",
                "upstreams.app.concurrency.max_limit: 5 is below min_limit (10)",
            ),
            (
                "sample_window = \"1ms\"\n",
                "upstreams.app.concurrency.sample_window: must be between 10ms and 10s",
            ),
            (
                "min_rtt_every = \"500ms\"\n",
                "upstreams.app.concurrency.min_rtt_every: must be between 1s and 1h",
            ),
            (
                "sample_percentile = 100.0\n",
                "upstreams.app.concurrency.sample_percentile: 100 is not above 0 and below 100",
            ),
            (
                "queue_target = \"10ms\"\nqueue_interval = \"5ms\"\n",
                "upstreams.app.concurrency.queue_interval: must be between 10ms and 10s",
            ),
            (
                "max_queue = -1\n",
                "upstreams.app.concurrency.max_queue: -1 must not be negative",
            ),
            ("limit = 3\n", "unknown field `limit`"),
        ] {
            let error = parsed(section).expect_err(section);
            assert!(error.contains(expected), "{section}: {error}");
        }
    }
}
