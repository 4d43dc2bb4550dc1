//! The Go proxy's garbage collections, read from the runtime's own trace:
//! the proxy runs with `GODEBUG=gctrace=1`, which prints one line per cycle
//! on stderr, and compare lines those cycles up with each second's latency.
//!
//! A line looks like (the format `runtime/mgc.go` documents):
//!
//! ```text
//! gc 12 @3.104s 2%: 0.021+1.2+0.018 ms clock, 0.021+0.40/0.31/0+0.018 ms cpu, 4->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 1 P
//! ```
//!
//! `@3.104s` is the time since the program started; of the three clock
//! phases, the first (sweep termination) and the last (mark termination)
//! stop the world, the middle one (concurrent mark) shares the CPU with the
//! program.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One garbage-collection cycle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GcCycle {
    /// Seconds since the start of the trial it fell in (warm-up included).
    pub at_s: f64,
    /// Stop-the-world time: sweep termination plus mark termination, ms.
    pub pause_ms: f64,
    /// Concurrent mark, wall-clock ms.
    pub mark_ms: f64,
    /// Live heap after the cycle, MB.
    pub heap_after_mb: f64,
}

/// The cycles of one trial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GcActivity {
    /// Every cycle, in order.
    pub cycles: Vec<GcCycle>,
}

impl GcActivity {
    /// Total stop-the-world time, ms.
    pub fn pause_total_ms(&self) -> f64 {
        self.cycles.iter().map(|c| c.pause_ms).sum()
    }

    /// Longest stop-the-world time, ms.
    pub fn pause_max_ms(&self) -> f64 {
        self.cycles.iter().map(|c| c.pause_ms).fold(0.0, f64::max)
    }

    /// Total concurrent-mark time, ms.
    pub fn mark_total_ms(&self) -> f64 {
        self.cycles.iter().map(|c| c.mark_ms).sum()
    }
}

/// A cycle as the trace gives it: seconds since the program started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracedCycle {
    /// Seconds since the program started.
    pub since_start_s: f64,
    /// Stop-the-world ms.
    pub pause_ms: f64,
    /// Concurrent mark ms.
    pub mark_ms: f64,
    /// Live heap after, MB.
    pub heap_after_mb: f64,
}

/// Parses one `gctrace` line; anything else is `None`.
pub fn parse_line(line: &str) -> Option<TracedCycle> {
    let mut words = line.split_whitespace();
    if words.next()? != "gc" {
        return None;
    }
    words.next()?.parse::<u64>().ok()?;
    let since_start_s = words.next()?.strip_prefix('@')?.strip_suffix('s')?.parse().ok()?;
    words.next()?; // "2%:"
    let clock: Vec<f64> = words
        .next()?
        .split('+')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [sweep_term, mark, mark_term] = clock[..] else {
        return None;
    };
    // "4->4->1 MB,": heap at start, at the end of mark, live after.
    let heap_after_mb = line
        .split_whitespace()
        .find(|w| w.matches("->").count() == 2)
        .and_then(|w| w.rsplit("->").next()?.parse().ok())
        .unwrap_or(0.0);
    Some(TracedCycle {
        since_start_s,
        pause_ms: sweep_term + mark_term,
        mark_ms: mark,
        heap_after_mb,
    })
}

/// Follows a growing trace file: each call returns the cycles written since
/// the last.
#[derive(Debug, Default)]
pub struct TraceReader {
    offset: u64,
    partial: String,
}

impl TraceReader {
    /// The cycles added to `path` since the last call (none if unreadable).
    pub fn read_new(&mut self, path: &Path) -> Vec<TracedCycle> {
        let Ok(mut file) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        // Keep an unfinished last line for the next call.
        let complete = self.partial.rfind('\n').map_or(0, |i| i + 1);
        let lines: String = self.partial.drain(..complete).collect();
        lines.lines().filter_map(parse_line).collect()
    }
}

/// The cycles that fell within a trial that started `trial_start_s` seconds
/// after the program and lasted `length_s`, timed from the trial's start.
pub fn within(cycles: &[TracedCycle], trial_start_s: f64, length_s: f64) -> GcActivity {
    GcActivity {
        cycles: cycles
            .iter()
            .filter(|c| c.since_start_s >= trial_start_s && c.since_start_s < trial_start_s + length_s)
            .map(|c| GcCycle {
                at_s: c.since_start_s - trial_start_s,
                pause_ms: c.pause_ms,
                mark_ms: c.mark_ms,
                heap_after_mb: c.heap_after_mb,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "gc 12 @3.104s 2%: 0.021+1.2+0.018 ms clock, 0.021+0.40/0.31/0+0.018 ms cpu, \
                        4->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 1 P";

    #[test]
    fn a_trace_line_gives_its_time_pause_mark_and_heap() {
        let cycle = parse_line(LINE).expect("parses");
        assert_eq!(cycle.since_start_s, 3.104);
        assert!((cycle.pause_ms - 0.039).abs() < 1e-9);
        assert_eq!(cycle.mark_ms, 1.2);
        assert_eq!(cycle.heap_after_mb, 1.0);
        let forced = LINE.replace("1 P", "1 P (forced)");
        assert!(parse_line(&forced).is_some());
    }

    #[test]
    fn other_lines_are_not_cycles() {
        for line in [
            "",
            "{\"level\":\"INFO\",\"message\":\"goproxy started\"}",
            "gc 1 @x 2%: 0.1+0.2+0.3 ms clock",
            "gc 1 @1.0s 2%: 0.1+0.2 ms clock",
            "scvg: 0 MB released",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_reader_returns_only_new_complete_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stderr");
        let mut reader = TraceReader::default();
        std::fs::write(&path, format!("{LINE}\ngc 13 @4.0")).expect("write");
        assert_eq!(reader.read_new(&path).len(), 1);
        let rest = "00s 1%: 0.1+0.2+0.3 ms clock, 0+0/0/0+0 ms cpu, 5->6->2 MB, 8 MB goal, 1 P\n";
        std::fs::write(&path, format!("{LINE}\ngc 13 @4.0{rest}")).expect("write");
        let new = reader.read_new(&path);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].since_start_s, 4.0);
        assert!(reader.read_new(&path).is_empty());
    }

    #[test]
    fn cycles_are_timed_from_the_trial_start() {
        let cycles: Vec<TracedCycle> = [1.0, 2.5, 3.0, 9.0]
            .iter()
            .map(|&t| TracedCycle {
                since_start_s: t,
                pause_ms: 0.1,
                mark_ms: 1.0,
                heap_after_mb: 2.0,
            })
            .collect();
        let trial = within(&cycles, 2.0, 5.0);
        let at: Vec<f64> = trial.cycles.iter().map(|c| c.at_s).collect();
        assert_eq!(at, [0.5, 1.0]);
        assert!((trial.pause_total_ms() - 0.2).abs() < 1e-9);
        assert_eq!(trial.pause_max_ms(), 0.1);
        assert_eq!(trial.mark_total_ms(), 2.0);
    }
}
