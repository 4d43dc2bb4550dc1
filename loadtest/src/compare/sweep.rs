//! The rate sweep: open-loop trials of each proxy at fractions of
//! saturation, both at the same absolute rates (fractions of the slower
//! proxy's saturation, which both can be offered) and at the same fraction
//! of each proxy's own saturation. The backend alone runs at every rate
//! offered to a proxy, so the chart shows how much latency at each rate the
//! generator and backend add themselves. It draws latency against offered
//! load.

use serde::{Deserialize, Serialize};

use super::Saturation;
use crate::result::RunResult;

/// What a sweep rate is a fraction of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The proxy's own saturation rate.
    Own,
    /// The slower proxy's saturation rate: the same absolute rate for both.
    Shared,
}

/// One sweep trial to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `tailcut`, `goproxy` or `direct`.
    pub proxy: String,
    /// What `fraction` is of (for `direct`: that of the proxy step whose
    /// rate it repeats).
    pub basis: Basis,
    /// The fraction of saturation offered.
    pub fraction: f64,
    /// The offered rate, requests/s.
    pub offered: f64,
}

impl Step {
    /// What the rate is, in words.
    pub fn describe(&self) -> String {
        describe(&self.proxy, self.basis, self.fraction)
    }
}

/// What a sweep rate is, in words: `40% of its own saturation`.
pub fn describe(proxy: &str, basis: Basis, fraction: f64) -> String {
    let percent = fraction * 100.0;
    match (proxy, basis) {
        ("direct", _) => format!("the backend alone, at a rate offered to a proxy at {percent:.0}%"),
        (_, Basis::Own) => format!("{percent:.0}% of its own saturation"),
        (_, Basis::Shared) => format!("{percent:.0}% of the slower proxy's saturation"),
    }
}

/// One sweep trial, run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPoint {
    /// `tailcut`, `goproxy` or `direct`.
    pub proxy: String,
    /// What `fraction` is of.
    pub basis: Basis,
    /// The fraction of saturation offered.
    pub fraction: f64,
    /// The offered rate, requests/s.
    pub offered: f64,
    /// What the generator measured, with its verdict.
    pub result: RunResult,
}

/// The steps for `proxies` at `fractions`, lowest fraction first, proxies
/// interleaved. A proxy whose own saturation is the shared basis gets one
/// step per fraction (its own and the shared rate are the same). Proxies
/// without a saturation figure are left out.
pub fn steps(fractions: &[f64], saturation: &[Saturation], proxies: &[&str]) -> Vec<Step> {
    let own = |proxy: &str| {
        saturation
            .iter()
            .find(|s| s.proxy == proxy)
            .map(|s| s.achieved_rate)
            .filter(|&r| r > 0.0)
    };
    let measured: Vec<(&str, f64)> = proxies.iter().filter_map(|&p| Some((p, own(p)?))).collect();
    let Some(shared) = measured.iter().map(|&(_, r)| r).reduce(f64::min) else {
        return Vec::new();
    };
    let mut fractions = fractions.to_vec();
    fractions.sort_by(f64::total_cmp);
    let mut steps = Vec::new();
    for fraction in fractions {
        for &(proxy, own) in &measured {
            let mut step = |basis, rate: f64| {
                steps.push(Step {
                    proxy: proxy.to_owned(),
                    basis,
                    fraction,
                    offered: (rate * fraction).round().max(1.0),
                });
            };
            if own > shared {
                step(Basis::Shared, shared);
            }
            step(Basis::Own, own);
        }
        // The backend alone at every rate offered to a proxy: how much of
        // the latency at that rate is the generator's and backend's own.
        let shared_rate = (shared * fraction).round().max(1.0);
        let mut rates: Vec<f64> = steps
            .iter()
            .filter(|s| s.fraction == fraction)
            .map(|s| s.offered)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.dedup();
        for offered in rates {
            steps.push(Step {
                proxy: "direct".into(),
                basis: if offered == shared_rate {
                    Basis::Shared
                } else {
                    Basis::Own
                },
                fraction,
                offered,
            });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saturation(proxy: &str, rate: f64) -> Saturation {
        Saturation {
            proxy: proxy.into(),
            achieved_rate: rate,
        }
    }

    #[test]
    fn the_faster_proxy_runs_at_both_bases_the_slower_at_its_own() {
        let sat = [saturation("tailcut", 30_000.0), saturation("goproxy", 10_000.0)];
        let steps = steps(&[0.9, 0.5], &sat, &["tailcut", "goproxy"]);
        let got: Vec<(&str, Basis, f64, f64)> = steps
            .iter()
            .map(|s| (s.proxy.as_str(), s.basis, s.fraction, s.offered))
            .collect();
        assert_eq!(
            got,
            [
                ("tailcut", Basis::Shared, 0.5, 5_000.0),
                ("tailcut", Basis::Own, 0.5, 15_000.0),
                ("goproxy", Basis::Own, 0.5, 5_000.0),
                ("direct", Basis::Shared, 0.5, 5_000.0),
                ("direct", Basis::Own, 0.5, 15_000.0),
                ("tailcut", Basis::Shared, 0.9, 9_000.0),
                ("tailcut", Basis::Own, 0.9, 27_000.0),
                ("goproxy", Basis::Own, 0.9, 9_000.0),
                ("direct", Basis::Shared, 0.9, 9_000.0),
                ("direct", Basis::Own, 0.9, 27_000.0),
            ]
        );
    }

    #[test]
    fn a_proxy_without_a_saturation_figure_is_left_out() {
        let sat = [saturation("tailcut", 20_000.0), saturation("goproxy", 0.0)];
        let steps = steps(&[0.5], &sat, &["tailcut", "goproxy"]);
        assert_eq!(steps.len(), 2, "tailcut, and direct at its rate");
        assert_eq!(steps[1].proxy, "direct");
        assert_eq!((steps[0].basis, steps[0].offered), (Basis::Own, 10_000.0));
        assert!(super::steps(&[0.5], &[], &["tailcut"]).is_empty());
    }
}
