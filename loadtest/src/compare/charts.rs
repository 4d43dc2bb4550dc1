//! The report's SVG charts, drawn as text: the latency spectrum, latency
//! over time with the Go proxy's GC cycles, and latency against offered
//! rate from the sweep. Latency is always on a logarithmic axis.
//!
//! Written by hand rather than with a plotting crate: the charts are a few
//! lines and rectangles, and the page must carry them inline with no
//! scripts or fonts, which plotting crates' SVG back-ends do not promise.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::summary::{merged, targets};
use super::sweep::Basis;
use super::{Results, Trial};

/// The colour of each target's lines.
pub fn colour(target: &str) -> &'static str {
    match target {
        "tailcut" => "#c0392b",
        "goproxy" => "#2471a3",
        "direct" => "#7f8c8d",
        "nginx" => "#27ae60",
        "haproxy" => "#8e44ad",
        "tailcut-least_request" => "#e67e22",
        "tailcut-round_robin" => "#f5b7b1",
        "tailcut-limit" => "#d68910",
        _ => "#d68910",
    }
}

// Canvas, and the margins around the plot (the legend sits on the right).
const W: f64 = 900.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 15.0;
const RIGHT: f64 = 150.0;

/// A plot area: a linear horizontal axis and a logarithmic latency axis.
struct Plot {
    svg: String,
    x_lo: f64,
    x_hi: f64,
    /// Decades of microseconds.
    y_lo: f64,
    y_hi: f64,
    legend_rows: usize,
}

impl Plot {
    /// A plot for x in `x_lo..x_hi` and latencies (us) spanning `latencies`.
    fn new(label: &str, x_lo: f64, x_hi: f64, latencies: impl Iterator<Item = u64>) -> Plot {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for us in latencies {
            let v = (us.max(1) as f64).log10();
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            (lo, hi) = (1.0, 4.0);
        }
        let (y_lo, y_hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
             role=\"img\" aria-label=\"{label}\" font-size=\"12\" font-family=\"sans-serif\">\n\
             <rect width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>\n"
        );
        let mut decade = y_lo;
        while decade <= y_hi {
            let us = 10f64.powf(decade);
            let text = if us >= 1000.0 {
                format!("{} ms", us / 1000.0)
            } else {
                format!("{us} us")
            };
            let y = TOP + (y_hi - decade) / (y_hi - y_lo) * (H - TOP - BOTTOM);
            let _ = writeln!(
                svg,
                "<line x1=\"{LEFT}\" x2=\"{0:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{1:.1}\" y=\"{2:.1}\" text-anchor=\"end\">{text}</text>",
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0
            );
            decade += 1.0;
        }
        Plot {
            svg,
            x_lo,
            x_hi: if x_hi > x_lo { x_hi } else { x_lo + 1.0 },
            y_lo,
            y_hi,
            legend_rows: 0,
        }
    }

    fn x(&self, v: f64) -> f64 {
        LEFT + (v.clamp(self.x_lo, self.x_hi) - self.x_lo) / (self.x_hi - self.x_lo) * (W - LEFT - RIGHT)
    }

    fn y(&self, us: u64) -> f64 {
        let v = (us.max(1) as f64).log10();
        TOP + (self.y_hi - v) / (self.y_hi - self.y_lo) * (H - TOP - BOTTOM)
    }

    /// A vertical grid line at `v` labelled `text` under the axis.
    fn x_tick(&mut self, v: f64, text: &str) {
        let x = self.x(v);
        let _ = writeln!(
            self.svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{1:.1}\" text-anchor=\"middle\">{text}</text>",
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
    }

    /// The horizontal axis' title.
    fn x_title(&mut self, text: &str) {
        let _ = writeln!(
            self.svg,
            "<text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\">{text}</text>",
            (LEFT + W - RIGHT) / 2.0,
            H - 4.0
        );
    }

    /// A line through `points` (x, latency us); `dash` draws it dashed.
    fn line(&mut self, colour: &str, dash: bool, points: &[(f64, u64)]) {
        if points.is_empty() {
            return;
        }
        let path: Vec<String> = points
            .iter()
            .map(|&(x, us)| format!("{:.1},{:.1}", self.x(x), self.y(us)))
            .collect();
        let _ = writeln!(
            self.svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{} points=\"{}\"/>",
            if dash { " stroke-dasharray=\"6 4\"" } else { "" },
            path.join(" ")
        );
    }

    /// A marker at (x, latency): a dot, or a hollow square when `hollow`.
    fn marker(&mut self, colour: &str, hollow: bool, x: f64, us: u64) {
        let (cx, cy) = (self.x(x), self.y(us));
        let _ = if hollow {
            writeln!(
                self.svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"none\" stroke=\"{colour}\"/>",
                cx - 4.0,
                cy - 4.0
            )
        } else {
            writeln!(
                self.svg,
                "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3.5\" fill=\"{colour}\"/>"
            )
        };
    }

    /// A short vertical tick rising from the bottom of the plot at `x`.
    fn bottom_tick(&mut self, colour: &str, x: f64, height: f64) {
        let x = self.x(x);
        let _ = writeln!(
            self.svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"{colour}\" stroke-width=\"1.5\"/>",
            H - BOTTOM,
            H - BOTTOM - height
        );
    }

    /// The next legend row.
    /// A horizontal axis of seconds since the trial started, up to
    /// `length`, ten ticks at most; `more` ends its title.
    fn seconds_axis(&mut self, length: f64, more: &str) {
        let step = (length / 10.0).ceil().max(1.0);
        let mut second = 0.0;
        while second <= length {
            self.x_tick(second, &format!("{second}"));
            second += step;
        }
        self.x_title(&format!("seconds since the trial started (warm-up included){more}"));
    }

    /// One value per second (`value` of each, none for a second without
    /// one), drawn as runs of consecutive seconds: a second with no value
    /// is a gap, not a zero.
    fn seconds(
        &mut self,
        colour: &str,
        seconds: &[crate::result::Second],
        value: impl Fn(&crate::result::Second) -> Option<u64>,
    ) {
        let mut run: Vec<(f64, u64)> = Vec::new();
        for s in seconds {
            match value(s) {
                Some(us) => run.push((s.second as f64 + 0.5, us)),
                None => {
                    self.line(colour, false, &run);
                    run.clear();
                }
            }
        }
        self.line(colour, false, &run);
    }

    fn legend(&mut self, colour: &str, dash: bool, text: &str) {
        let y = TOP + 10.0 + self.legend_rows as f64 * 20.0;
        let _ = writeln!(
            self.svg,
            "<line x1=\"{0:.1}\" x2=\"{1:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-width=\"3\"{2}/>\
             <text x=\"{3:.1}\" y=\"{4:.1}\">{text}</text>",
            W - RIGHT + 10.0,
            W - RIGHT + 28.0,
            if dash { " stroke-dasharray=\"4 3\"" } else { "" },
            W - RIGHT + 34.0,
            y + 4.0
        );
        self.legend_rows += 1;
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>\n");
        self.svg
    }
}

/// Percentile spectrum: x = log10(1/(1-p)) from 0 (p0) to 5 (p99.999).
pub fn spectrum(results: &Results) -> String {
    let curves: Vec<(&str, Vec<(f64, u64)>)> = targets(results)
        .into_iter()
        .map(|name| (name, spectrum_points(&merged(results, name))))
        .collect();
    let latencies = curves.iter().flat_map(|(_, p)| p.iter().map(|&(_, us)| us));
    let mut plot = Plot::new("latency by percentile", 0.0, 5.0, latencies);
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        plot.x_tick(nines, label);
    }
    for (name, points) in &curves {
        plot.line(colour(name), false, points);
        let label = if points.is_empty() {
            format!("{name} (no valid trials)")
        } else {
            (*name).to_owned()
        };
        plot.legend(colour(name), false, &label);
    }
    plot.finish()
}

/// (nines, us) along the distribution, up to the last supported percentile.
pub fn spectrum_points(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    // Beyond 1/(1-p) = samples/10 a percentile rests on fewer than 10 samples.
    let max_nines = (histogram.len() as f64 / 10.0).log10().max(0.0);
    histogram
        .iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .filter(|&(q, _)| q < 1.0)
        .map(|(q, us)| ((1.0 / (1.0 - q)).log10(), us))
        .filter(|&(nines, _)| nines <= max_nines)
        .collect()
}

/// The trials drawn over time: the first round with a valid trial of both
/// tailcut and Go.
pub fn timeline_trials(results: &Results) -> Option<(&Trial, &Trial)> {
    let valid = |target: &str, round: usize| {
        results
            .trials
            .iter()
            .find(|t| t.target == target && t.round == round && t.result.verdict.valid && !t.result.seconds.is_empty())
    };
    results
        .trials
        .iter()
        .map(|t| t.round)
        .find_map(|round| Some((valid("tailcut", round)?, valid("goproxy", round)?)))
}

/// Each second's p99 (solid) and maximum (dashed) of one round's tailcut
/// and Go trials, with the Go proxy's GC cycles as ticks along the bottom
/// (taller for longer stop-the-world pauses).
pub fn timeline(results: &Results) -> Option<String> {
    let (tailcut, go) = timeline_trials(results)?;
    let length = tailcut.result.seconds.len().max(go.result.seconds.len()) as f64;
    let latencies = [tailcut, go]
        .into_iter()
        .flat_map(|t| t.result.seconds.iter().flat_map(|s| [s.p99_us, s.max_us]));
    let mut plot = Plot::new("latency over time", 0.0, length, latencies);
    plot.seconds_axis(length, "");
    for trial in [tailcut, go] {
        let c = colour(&trial.target);
        // Each second's figures are drawn at the second's middle.
        let at = |s: &crate::result::Second| s.second as f64 + 0.5;
        let p99: Vec<(f64, u64)> = trial.result.seconds.iter().map(|s| (at(s), s.p99_us)).collect();
        let max: Vec<(f64, u64)> = trial.result.seconds.iter().map(|s| (at(s), s.max_us)).collect();
        plot.line(c, false, &p99);
        plot.line(c, true, &max);
        plot.legend(c, false, &format!("{} p99", trial.target));
        plot.legend(c, true, &format!("{} max", trial.target));
    }
    if let Some(gc) = &go.gc {
        let longest = gc.pause_max_ms().max(f64::MIN_POSITIVE);
        for cycle in &gc.cycles {
            plot.bottom_tick("#111", cycle.at_s, 8.0 + 24.0 * cycle.pause_ms / longest);
        }
        plot.legend("#111", false, &format!("Go GC cycle ({})", gc.cycles.len()));
    }
    Some(plot.finish())
}

/// A balancing scenario's latency over time: each second's p99 of every
/// target in the first round where all of its trials are valid (else the
/// first round), the faulty backend's window shaded. Seconds without a
/// completed request are gaps, not zeros.
pub fn balancing_timeline(results: &Results) -> Option<String> {
    let setup = results.balancing.as_ref()?;
    let rounds = results.trials.iter().map(|t| t.round).max()?;
    let in_round = |round: usize| -> Vec<&Trial> { results.trials.iter().filter(|t| t.round == round).collect() };
    let round = (1..=rounds)
        .find(|&r| in_round(r).iter().all(|t| t.result.verdict.valid))
        .unwrap_or(1);
    let trials = in_round(round);
    let length = trials.iter().map(|t| t.result.seconds.len()).max()? as f64;
    let latencies = trials
        .iter()
        .flat_map(|t| t.result.seconds.iter().filter(|s| s.completed > 0).map(|s| s.p99_us));
    let mut plot = Plot::new("latency over time, every target", 0.0, length, latencies);
    if let Some((start, end)) = setup.faulty.as_ref().and_then(super::scenario::Faulty::window) {
        let (x0, x1) = (plot.x(start.as_secs_f64()), plot.x(end.as_secs_f64()));
        let _ = writeln!(
            plot.svg,
            "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f4d03f\" fill-opacity=\"0.25\"/>",
            x1 - x0,
            H - TOP - BOTTOM
        );
    }
    plot.seconds_axis(length, &format!(", round {round}"));
    for (target, _) in &setup.targets {
        let Some(trial) = trials.iter().find(|t| &t.target == target) else {
            continue;
        };
        let c = colour(target);
        plot.seconds(c, &trial.result.seconds, |s| (s.completed > 0).then_some(s.p99_us));
        plot.legend(c, false, &format!("{target} p99"));
    }
    Some(plot.finish())
}

/// An overload scenario's load: each second's p99 of successful
/// responses, every target, over its first trial. Seconds without a
/// successful response are gaps.
pub fn overload_timeline(load: &super::overload::LoadTrials) -> Option<String> {
    let mut firsts: Vec<&Trial> = Vec::new();
    for trial in &load.trials {
        if !firsts.iter().any(|t| t.target == trial.target) {
            firsts.push(trial);
        }
    }
    let length = firsts.iter().map(|t| t.result.seconds.len()).max()? as f64;
    let latencies = firsts.iter().flat_map(|t| {
        t.result
            .seconds
            .iter()
            .filter(|s| s.succeeded > 0)
            .map(|s| s.succeeded_p99_us)
    });
    let title = format!(
        "p99 of successful responses over time at {:.1}x capacity ({:.0} requests/s offered)",
        load.multiple, load.rate
    );
    let mut plot = Plot::new(&title, 0.0, length, latencies);
    plot.seconds_axis(length, "");
    for trial in firsts {
        let c = colour(&trial.target);
        plot.seconds(c, &trial.result.seconds, |s| {
            (s.succeeded > 0).then_some(s.succeeded_p99_us)
        });
        plot.legend(c, false, &trial.target);
    }
    Some(plot.finish())
}

/// p99 against offered rate: every sweep trial on an absolute rate axis,
/// direct ones included (`fraction_axis` false), or the proxies' own-basis
/// trials against the fraction of their own saturation (`fraction_axis`
/// true). Valid trials are
/// dots joined by a line; invalid ones hollow squares, not joined.
pub fn sweep(results: &Results, fraction_axis: bool) -> Option<String> {
    let points: Vec<_> = results
        .sweep
        .iter()
        .filter(|p| !fraction_axis || (p.basis == Basis::Own && p.proxy != "direct"))
        .filter_map(|p| {
            let p99 = p.result.decode().ok()?.corrected.value_at_quantile(0.99);
            let x = if fraction_axis { p.fraction } else { p.offered };
            Some((p.proxy.as_str(), x, p99, p.result.verdict.valid))
        })
        .collect();
    if points.is_empty() {
        return None;
    }
    let widest = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let step = if fraction_axis { 0.2 } else { round_step(widest / 5.0) };
    let x_hi = (widest / step).ceil().max(1.0) * step;
    let mut plot = Plot::new(
        "p99 latency against offered load",
        0.0,
        x_hi,
        points.iter().map(|p| p.2),
    );
    let mut v = 0.0;
    while v <= x_hi + step / 2.0 {
        let text = if fraction_axis {
            format!("{:.0}%", v * 100.0)
        } else {
            format!("{v:.0}")
        };
        plot.x_tick(v, &text);
        v += step;
    }
    plot.x_title(if fraction_axis {
        "offered rate, as a fraction of the proxy's own saturation"
    } else {
        "offered rate, requests/s"
    });
    let mut proxies: Vec<&str> = points.iter().map(|p| p.0).collect();
    proxies.dedup();
    proxies.sort_unstable();
    proxies.dedup();
    for proxy in proxies {
        let c = colour(proxy);
        let mut valid: Vec<(f64, u64)> = points
            .iter()
            .filter(|p| p.0 == proxy && p.3)
            .map(|p| (p.1, p.2))
            .collect();
        valid.sort_by(|a, b| a.0.total_cmp(&b.0));
        plot.line(c, false, &valid);
        for p in points.iter().filter(|p| p.0 == proxy) {
            plot.marker(c, !p.3, p.1, p.2);
        }
        plot.legend(c, false, &format!("{proxy} p99"));
    }
    if points.iter().any(|p| !p.3) {
        plot.legend("#555", false, "hollow: invalid trial");
    }
    Some(plot.finish())
}

/// The smallest 1, 2 or 5 times a power of ten at least `raw`: a tick step
/// people read easily.
fn round_step(raw: f64) -> f64 {
    if raw <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spectrum_stops_where_samples_run_out() {
        let mut h = crate::histograms::new_histogram();
        for v in 1..=1000u64 {
            h.record(v).expect("in range");
        }
        let pts = spectrum_points(&h);
        // 1000 samples support percentiles up to 1/(1-p) = 100: two nines.
        assert!(pts.iter().all(|&(nines, _)| nines <= 2.0));
        assert!(pts.last().is_some_and(|&(nines, _)| nines > 1.5));
    }

    #[test]
    fn tick_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(round_step(6389.0), 10_000.0);
        assert_eq!(round_step(1500.0), 2000.0);
        assert_eq!(round_step(3.2), 5.0);
        assert_eq!(round_step(1000.0), 1000.0);
        assert_eq!(round_step(0.0), 1.0);
    }

    #[test]
    fn positions_follow_the_axes() {
        let mut plot = Plot::new("t", 0.0, 10.0, [10, 1000].into_iter());
        assert_eq!((plot.y_lo, plot.y_hi), (1.0, 3.0));
        assert_eq!(plot.x(0.0), LEFT);
        assert_eq!(plot.x(10.0), W - RIGHT);
        assert_eq!(plot.y(1000), TOP);
        assert_eq!(plot.y(10), H - BOTTOM);
        // Ten times the latency is the same distance up anywhere on the axis.
        assert!((plot.y(10) - plot.y(100) - (plot.y(100) - plot.y(1000))).abs() < 1e-9);
        plot.line("#000", false, &[(0.0, 10), (10.0, 1000)]);
        let svg = plot.finish();
        assert!(svg.contains("points=\"70.0,360.0 750.0,15.0\""), "{svg}");
        assert!(svg.ends_with("</svg>\n"));
    }
}
