//! The tail-control sections: a route's `[routes.retry]` and
//! `[routes.hedge]`, and a cluster's `[upstreams.NAME.budget]`, which
//! bounds the extra requests both may add.
//!
//! Combinations that would do nothing are refused rather than accepted
//! silently: an empty `on` list, a hedge on a cluster of one address (a
//! hedge goes to a different backend), a `min_delay` above `max_delay`.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use super::{as_humantime, schema, Validator};

/// Retries of a route's failed requests (`[routes.retry]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Attempts in all, the first included: 2 is one retry, 1 none.
    pub attempts: u32,
    /// What is retried.
    pub on: RetryOn,
    /// The first backoff's ceiling; each retry doubles it (full jitter: the
    /// wait is drawn uniformly below it).
    #[serde(serialize_with = "as_humantime")]
    pub backoff_base: Duration,
    /// The ceiling of every backoff.
    #[serde(serialize_with = "as_humantime")]
    pub backoff_max: Duration,
}

/// The failures a route retries. 504 and response timeouts are retried only
/// for idempotent methods, whatever this says: the backend may still be
/// acting on the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// `connect-failure`: refused, unreachable, connect or TLS timeout.
    pub connect_failure: bool,
    /// `reset`: the connection reset or closed before response headers.
    pub reset: bool,
    /// `502`, `503`, `504`: the backend's own answer.
    pub status_502: bool,
    /// See `status_502`.
    pub status_503: bool,
    /// See `status_502`.
    pub status_504: bool,
    /// `response-timeout`: no response headers in time.
    pub response_timeout: bool,
}

impl RetryOn {
    /// Every condition's name, with its flag.
    fn fields(&mut self) -> [(&'static str, &mut bool); 6] {
        [
            ("connect-failure", &mut self.connect_failure),
            ("reset", &mut self.reset),
            ("502", &mut self.status_502),
            ("503", &mut self.status_503),
            ("504", &mut self.status_504),
            ("response-timeout", &mut self.response_timeout),
        ]
    }

    /// Everything, the default.
    pub fn all() -> Self {
        let mut on = RetryOn::default();
        for (_, flag) in on.fields() {
            *flag = true;
        }
        on
    }

    /// Whether a response with `status` from the backend is retried.
    pub fn status(&self, status: u16) -> bool {
        match status {
            502 => self.status_502,
            503 => self.status_503,
            504 => self.status_504,
            _ => false,
        }
    }
}

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut copy = *self;
        let names: Vec<&str> = copy
            .fields()
            .into_iter()
            .filter(|(_, on)| **on)
            .map(|(n, _)| n)
            .collect();
        names.serialize(s)
    }
}

/// Hedged requests of a route (`[routes.hedge]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Hedge {
    /// When the second attempt starts.
    pub delay: HedgeDelay,
    /// The most requests hedged, in percent of the route's requests over
    /// the cluster's budget window.
    pub max_percent: u32,
}

/// Printed as it is written: `delay = "auto"` (or a duration) beside the
/// other keys.
impl Serialize for Hedge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat {
            delay: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            percentile: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            min_delay: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            max_delay: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            min_samples: Option<u64>,
            max_percent: u32,
        }
        let text = |d: Duration| humantime::format_duration(d).to_string();
        let flat = match &self.delay {
            HedgeDelay::Fixed(delay) => Flat {
                delay: text(*delay),
                percentile: None,
                min_delay: None,
                max_delay: None,
                min_samples: None,
                max_percent: self.max_percent,
            },
            HedgeDelay::Auto {
                percentile,
                min_delay,
                max_delay,
                min_samples,
            } => Flat {
                delay: "auto".to_owned(),
                percentile: Some(*percentile),
                min_delay: Some(text(*min_delay)),
                max_delay: Some(text(*max_delay)),
                min_samples: Some(*min_samples),
                max_percent: self.max_percent,
            },
        };
        flat.serialize(s)
    }
}

/// How long a request waits for response headers before it is hedged.
#[derive(Debug, Clone, PartialEq)]
pub enum HedgeDelay {
    /// Always the same.
    Fixed(Duration),
    /// A percentile of the route's first attempts' times to response
    /// headers, over the last seconds.
    Auto {
        /// The percentile, above 0 and below 100.
        percentile: f64,
        /// The shortest delay.
        min_delay: Duration,
        /// The longest delay.
        max_delay: Duration,
        /// No hedge before this many first attempts were timed.
        min_samples: u64,
    },
}

/// How many extra attempts (retries and hedges) a cluster takes
/// (`[upstreams.NAME.budget]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Extra attempts allowed, in percent of the requests over `window`.
    pub percent: u32,
    /// The window requests and extra attempts are counted over.
    #[serde(serialize_with = "as_humantime")]
    pub window: Duration,
    /// Extra attempts allowed per second beyond the share (at most one
    /// second's worth at once), so that a quiet route can still retry.
    pub min_per_second: u32,
    /// The most extra attempts in flight (or waiting to retry) at once.
    pub max_concurrent: NonZeroUsize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            percent: 20,
            window: Duration::from_secs(10),
            min_per_second: 10,
            max_concurrent: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// The largest body a route may buffer to send again.
const MAX_BUFFERED_BODY: u64 = 16 * 1024 * 1024;

impl Validator<'_> {
    pub(super) fn retry(&self, raw: schema::Retry, key: &str) -> Result<Retry, super::Invalid> {
        let attempts = match raw.attempts {
            None => 2,
            Some(value) => {
                let n = self.positive(&value, &format!("{key}.attempts"))?.get();
                if n > 5 {
                    return Err(self.locator.error(
                        Some(value.span()),
                        format!("{key}.attempts"),
                        format!("{n} is above the maximum of 5"),
                    ));
                }
                n as u32
            }
        };
        let on = match raw.on {
            None => RetryOn::all(),
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.locator.error(
                        Some(list.span()),
                        format!("{key}.on"),
                        "an empty list retries nothing: remove [retry] or set attempts = 1",
                    ));
                }
                let mut on = RetryOn::default();
                for (i, name) in list.get_ref().iter().enumerate() {
                    let mut fields = on.fields();
                    let Some((_, flag)) = fields.iter_mut().find(|(n, _)| *n == name.get_ref()) else {
                        return Err(self.locator.error(
                            Some(name.span()),
                            format!("{key}.on[{i}]"),
                            format!(
                                "{:?} is not a condition: use \"connect-failure\", \"reset\", \"502\", \"503\", \"504\" or \"response-timeout\"",
                                name.get_ref()
                            ),
                        ));
                    };
                    **flag = true;
                }
                on
            }
        };
        let backoff_base = self.duration(raw.backoff_base, &format!("{key}.backoff_base"), "25ms")?;
        let max_span = raw.backoff_max.as_ref().map(Spanned::span);
        let backoff_max = self.duration(raw.backoff_max, &format!("{key}.backoff_max"), "250ms")?;
        if backoff_max < backoff_base {
            return Err(self.locator.error(
                max_span,
                format!("{key}.backoff_max"),
                "must not be shorter than backoff_base",
            ));
        }
        Ok(Retry {
            attempts,
            on,
            backoff_base,
            backoff_max,
        })
    }

    /// `backends` is how many addresses the route's cluster lists, and
    /// whether it lists names too (which may resolve to more).
    pub(super) fn hedge(
        &self,
        raw: schema::Hedge,
        key: &str,
        at: std::ops::Range<usize>,
        backends: (usize, bool),
    ) -> Result<Hedge, super::Invalid> {
        if backends == (1, false) {
            return Err(self.locator.error(
                Some(at),
                key,
                "a hedge goes to a different backend, and the route's upstream has one",
            ));
        }
        let max_percent = match raw.max_percent {
            None => 10,
            Some(value) => self.percent(&value, &format!("{key}.max_percent"))?,
        };
        let delay = match raw.delay {
            Some(fixed) if fixed.get_ref() != "auto" => {
                HedgeDelay::Fixed(self.duration(Some(fixed), &format!("{key}.delay"), "")?)
            }
            _ => {
                let percentile = match &raw.percentile {
                    None => 95.0,
                    Some(value) => self.percentile(value, &format!("{key}.percentile"))?,
                };
                let min_delay = self.duration(raw.min_delay, &format!("{key}.min_delay"), "2ms")?;
                let max_span = raw.max_delay.as_ref().map(Spanned::span);
                let max_delay = self.duration(raw.max_delay, &format!("{key}.max_delay"), "500ms")?;
                if max_delay < min_delay {
                    return Err(self.locator.error(
                        max_span,
                        format!("{key}.max_delay"),
                        "must not be shorter than min_delay",
                    ));
                }
                let min_samples = match raw.min_samples {
                    None => 100,
                    Some(value) => self.positive(&value, &format!("{key}.min_samples"))?.get() as u64,
                };
                HedgeDelay::Auto {
                    percentile,
                    min_delay,
                    max_delay,
                    min_samples,
                }
            }
        };
        Ok(Hedge { delay, max_percent })
    }

    /// A route's `max_buffered_body`: 64 KiB unless set.
    pub(super) fn max_buffered_body(&self, raw: Option<Spanned<i64>>, key: &str) -> Result<u64, super::Invalid> {
        let Some(raw) = raw else { return Ok(64 * 1024) };
        let value = self.non_negative(&raw, key)? as u64;
        if value > MAX_BUFFERED_BODY {
            return Err(self.locator.error(
                Some(raw.span()),
                key,
                format!("{value} is above the maximum of {MAX_BUFFERED_BODY}"),
            ));
        }
        Ok(value)
    }

    pub(super) fn budget(&self, raw: Option<schema::Budget>, key: &str) -> Result<Budget, super::Invalid> {
        let Some(raw) = raw else { return Ok(Budget::default()) };
        let defaults = Budget::default();
        let window_span = raw.window.as_ref().map(Spanned::span);
        let window = self.duration(raw.window, &format!("{key}.window"), "10s")?;
        if window < Duration::from_secs(1) || window > Duration::from_secs(600) {
            return Err(self
                .locator
                .error(window_span, format!("{key}.window"), "must be between 1s and 10m"));
        }
        Ok(Budget {
            percent: match raw.percent {
                None => defaults.percent,
                Some(value) => self.percent(&value, &format!("{key}.percent"))?,
            },
            window,
            min_per_second: match raw.min_per_second {
                None => defaults.min_per_second,
                Some(value) => self.non_negative(&value, &format!("{key}.min_per_second"))? as u32,
            },
            max_concurrent: self.count(
                raw.max_concurrent,
                &format!("{key}.max_concurrent"),
                defaults.max_concurrent,
            )?,
        })
    }

    /// A percentile: above 0 and below 100, written with or without a
    /// fraction.
    pub(super) fn percentile(&self, raw: &Spanned<schema::Number>, key: &str) -> Result<f64, super::Invalid> {
        let p = raw.get_ref().get();
        if !(p > 0.0 && p < 100.0) {
            return Err(self
                .locator
                .error(Some(raw.span()), key, format!("{p} is not above 0 and below 100")));
        }
        Ok(p)
    }

    pub(super) fn percent(&self, raw: &Spanned<i64>, key: &str) -> Result<u32, super::Invalid> {
        let value = self.non_negative(raw, key)?;
        if value > 100 {
            return Err(self
                .locator
                .error(Some(raw.span()), key, format!("{value} is over 100")));
        }
        Ok(value as u32)
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
"#;

    const TWO: &str = "\n[upstreams.app]\nbackends = [\"127.0.0.1:9000\", \"127.0.0.1:9001\"]\n";

    fn parsed(route_extra: &str, upstream: &str) -> Result<crate::config::Config, String> {
        parse(Path::new("t.toml"), &format!("{BASE}{route_extra}\n{upstream}")).map_err(|e| e.to_string())
    }

    #[test]
    fn retry_and_hedge_are_off_until_configured_and_get_documented_defaults() {
        let config = parsed("", TWO).expect("valid");
        assert_eq!(config.routes[0].retry, None);
        assert_eq!(config.routes[0].hedge, None);
        assert_eq!(config.routes[0].max_buffered_body, 64 * 1024);
        assert_eq!(config.upstreams["app"].budget, Budget::default());

        let config = parsed("[routes.retry]\n[routes.hedge]\n", TWO).expect("valid");
        let retry = config.routes[0].retry.clone().expect("retry");
        assert_eq!(retry.attempts, 2);
        assert_eq!(retry.on, RetryOn::all());
        assert_eq!(
            (retry.backoff_base, retry.backoff_max),
            (Duration::from_millis(25), Duration::from_millis(250))
        );
        let hedge = config.routes[0].hedge.clone().expect("hedge");
        assert_eq!(hedge.max_percent, 10);
        assert_eq!(
            hedge.delay,
            HedgeDelay::Auto {
                percentile: 95.0,
                min_delay: Duration::from_millis(2),
                max_delay: Duration::from_millis(500),
                min_samples: 100
            }
        );
    }

    #[test]
    fn retry_conditions_are_named_and_an_empty_list_is_refused() {
        let config = parsed(
            "[routes.retry]\nattempts = 3\non = [\"503\", \"connect-failure\"]\n",
            TWO,
        )
        .expect("valid");
        let retry = config.routes[0].retry.clone().expect("retry");
        assert_eq!(retry.attempts, 3);
        assert!(retry.on.status_503 && retry.on.connect_failure && !retry.on.reset && !retry.on.status(502));

        let unknown = parsed("[routes.retry]\non = [\"5xx\"]\n", TWO).expect_err("refused");
        assert!(
            unknown.starts_with("t.toml:10:7: routes[0].retry.on[0]: \"5xx\" is not a condition"),
            "{unknown}"
        );
        let empty = parsed("[routes.retry]\non = []\n", TWO).expect_err("refused");
        assert!(
            empty.contains("routes[0].retry.on: an empty list retries nothing"),
            "{empty}"
        );
        let many = parsed("[routes.retry]\nattempts = 9\n", TWO).expect_err("refused");
        assert!(
            many.contains("routes[0].retry.attempts: 9 is above the maximum of 5"),
            "{many}"
        );
    }

    #[test]
    fn hedges_that_could_do_nothing_are_refused() {
        let one = "\n[upstreams.app]\nbackends = [\"127.0.0.1:9000\"]\n";
        let alone = parsed("[routes.hedge]\n", one).expect_err("refused");
        assert!(
            alone.contains("routes[0].hedge: a hedge goes to a different backend"),
            "{alone}"
        );
        // A name may resolve to several addresses.
        let named = "\n[upstreams.app]\nbackends = [\"app.internal:9000\"]\n";
        assert!(parsed("[routes.hedge]\n", named).is_ok());

        let inverted =
            parsed("[routes.hedge]\nmin_delay = \"50ms\"\nmax_delay = \"10ms\"\n", TWO).expect_err("refused");
        assert!(
            inverted.contains("routes[0].hedge.max_delay: must not be shorter than min_delay"),
            "{inverted}"
        );
        let percentile = parsed("[routes.hedge]\npercentile = 100.0\n", TWO).expect_err("refused");
        assert!(
            percentile.contains("routes[0].hedge.percentile: 100 is not above 0 and below 100"),
            "{percentile}"
        );
        let fixed = parsed("[routes.hedge]\ndelay = \"7ms\"\n", TWO).expect("valid");
        assert_eq!(
            fixed.routes[0].hedge.clone().expect("hedge").delay,
            HedgeDelay::Fixed(Duration::from_millis(7))
        );
        let word = parsed("[routes.hedge]\ndelay = \"soon\"\n", TWO).expect_err("refused");
        assert!(
            word.contains("routes[0].hedge.delay: \"soon\" is not a duration"),
            "{word}"
        );
    }

    #[test]
    fn a_budget_is_checked_field_by_field() {
        let budget = format!(
            "{TWO}[upstreams.app.budget]\npercent = 5\nwindow = \"30s\"\nmin_per_second = 0\nmax_concurrent = 8\n"
        );
        let config = parsed("", &budget).expect("valid");
        assert_eq!(
            config.upstreams["app"].budget,
            Budget {
                percent: 5,
                window: Duration::from_secs(30),
                min_per_second: 0,
                max_concurrent: NonZeroUsize::new(8).expect("non-zero"),
            }
        );
        let over = parsed("", &format!("{TWO}[upstreams.app.budget]\npercent = 101\n")).expect_err("refused");
        assert!(over.contains("upstreams.app.budget.percent: 101 is over 100"), "{over}");
        let short = parsed("", &format!("{TWO}[upstreams.app.budget]\nwindow = \"100ms\"\n")).expect_err("refused");
        assert!(
            short.contains("upstreams.app.budget.window: must be between 1s and 10m"),
            "{short}"
        );
    }
}
