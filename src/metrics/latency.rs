//! Latency histograms recorded without a lock on the request path.
//!
//! Each worker thread records into its own histograms (a thread-local
//! [`Local`]); nothing is shared while recording. A thread ships what it has
//! recorded to the reader through a channel once a second (checked as it
//! records) and whenever it goes idle (the runtime's park hook calls
//! [`flush_thread`]). The reader side ([`Latency::read`]) adds shipped
//! batches into a ring of [`SLOTS`] interval slots covering the window, and
//! into a since-start total. A slot is only ever whole intervals of shipped
//! batches, so a reader sees a consistent window, and rotating the ring
//! forgets the oldest interval at once.
//!
//! Values are microseconds, from 1 us to 60 s at 3 significant digits;
//! longer values are clamped to 60 s, not lost.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest recorded value: 60 s in microseconds.
pub const HIGHEST_MICROS: u64 = 60_000_000;

/// Slots the window is divided into; it moves in steps of window / SLOTS.
pub const SLOTS: u32 = 6;

/// How often a busy thread ships its samples.
const SHIP_EVERY: Duration = Duration::from_secs(1);

/// What was measured for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Request received to response headers sent.
    Headers = 0,
    /// Request received to the end of the response body.
    Total = 1,
    /// Request sent upstream to the end of the upstream response.
    Upstream = 2,
    /// Total minus upstream: what the proxy itself added.
    Proxy = 3,
}

impl Figure {
    /// Every figure, in index order.
    pub const ALL: [Figure; 4] = [Figure::Headers, Figure::Total, Figure::Upstream, Figure::Proxy];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            Figure::Headers => "headers",
            Figure::Total => "total",
            Figure::Upstream => "upstream",
            Figure::Proxy => "proxy",
        }
    }

    /// The figure named `name`.
    pub fn from_name(name: &str) -> Option<Figure> {
        Figure::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The last frame was sent.
    Complete = 0,
    /// The body failed (upstream reset, deadline).
    Error = 1,
    /// The client went away before the end.
    ClientGone = 2,
}

impl End {
    /// Every end, in index order.
    pub const ALL: [End; 3] = [End::Complete, End::Error, End::ClientGone];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::Error => "error",
            End::ClientGone => "client_gone",
        }
    }
}

const FIGURES: usize = Figure::ALL.len();
const ENDS: usize = End::ALL.len();

/// Which histogram: one per (route slot, end, figure).
fn series(route: usize, end: End, figure: Figure) -> usize {
    (route * ENDS + end as usize) * FIGURES + figure as usize
}

/// A histogram for microsecond latencies, 1 us to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("constant bounds that hdrhistogram accepts")
}

/// One shipment from a thread: (series, samples) pairs.
type Batch = Vec<(usize, Histogram<u64>)>;

/// The latency recorder shared by every connection, and its reader side.
#[derive(Debug)]
pub struct Latency {
    id: u64,
    series_count: usize,
    sender: Mutex<Sender<Batch>>,
    reader: Mutex<Reader>,
}

#[derive(Debug)]
struct Reader {
    receiver: Receiver<Batch>,
    slot_length: Duration,
    /// Newest first; each slot covers `slot_length` from its start.
    slots: VecDeque<(Instant, Vec<Option<Histogram<u64>>>)>,
    total: Vec<Option<Histogram<u64>>>,
}

/// Distinguishes recorders in thread-locals (tests run several in one process).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// One thread's unshipped samples for one recorder.
struct Local {
    id: u64,
    sender: Sender<Batch>,
    histograms: Vec<Option<Histogram<u64>>>,
    dirty: bool,
    ship_at: Instant,
}

impl Local {
    fn ship(&mut self) {
        if !self.dirty {
            return;
        }
        let batch: Batch = self
            .histograms
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| h.take().filter(|h| !h.is_empty()).map(|h| (i, h)))
            .collect();
        self.dirty = false;
        // The reader is gone only when the proxy is shutting down.
        let _ = self.sender.send(batch);
    }
}

impl Drop for Local {
    /// A thread that exits ships what it still holds.
    fn drop(&mut self) {
        self.ship();
    }
}

impl Latency {
    /// A recorder for `routes` route slots whose window is `window` long.
    pub fn new(routes: usize, window: Duration) -> Latency {
        let (sender, receiver) = channel();
        let series_count = routes * ENDS * FIGURES;
        Latency {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            series_count,
            sender: Mutex::new(sender),
            reader: Mutex::new(Reader {
                receiver,
                slot_length: window / SLOTS,
                slots: VecDeque::new(),
                total: vec![None; series_count],
            }),
        }
    }

    /// Records one request's figures into this thread's histograms. `now`
    /// is the clock reading the caller already took.
    pub fn record(&self, route: usize, end: End, figures: &[(Figure, Duration)], now: Instant) {
        LOCAL.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().is_none_or(|local| local.id != self.id) {
                if let Some(previous) = cell.as_mut() {
                    previous.ship();
                }
                *cell = Some(self.local(now));
            }
            let Some(local) = cell.as_mut() else { return };
            for &(figure, value) in figures {
                let micros = u64::try_from(value.as_micros())
                    .unwrap_or(u64::MAX)
                    .clamp(1, HIGHEST_MICROS);
                if let Some(slot) = local.histograms.get_mut(series(route, end, figure)) {
                    slot.get_or_insert_with(new_histogram).saturating_record(micros);
                }
            }
            local.dirty = true;
            if now >= local.ship_at {
                local.ship();
                local.ship_at = now + SHIP_EVERY;
            }
        });
    }

    /// A thread's first contact with this recorder: the only time the
    /// sender's mutex is taken on a worker thread.
    fn local(&self, now: Instant) -> Local {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Local {
            id: self.id,
            sender,
            histograms: vec![None; self.series_count],
            dirty: false,
            ship_at: now + SHIP_EVERY,
        }
    }

    /// Takes in every shipped batch and rotates the window; the result reads
    /// a consistent view until dropped.
    pub fn read(&self) -> View<'_> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.absorb(Instant::now(), self.series_count);
        View { reader }
    }
}

impl Reader {
    fn absorb(&mut self, now: Instant, series_count: usize) {
        // Forget the slots that began a whole window ago or earlier.
        let window = self.slot_length * SLOTS;
        self.slots.retain(|(start, _)| now.duration_since(*start) < window);
        let starts_new_slot = self
            .slots
            .front()
            .is_none_or(|(start, _)| now.duration_since(*start) >= self.slot_length);
        if starts_new_slot {
            self.slots.push_front((now, vec![None; series_count]));
        }
        while let Ok(batch) = self.receiver.try_recv() {
            for (series, histogram) in batch {
                for target in [&mut self.slots[0].1, &mut self.total] {
                    if let Some(slot) = target.get_mut(series) {
                        // Same bounds on both sides, so adding cannot fail.
                        let _ = slot.get_or_insert_with(new_histogram).add(&histogram);
                    }
                }
            }
        }
    }
}

/// A locked, consistent view of the recorded latencies.
pub struct View<'a> {
    reader: MutexGuard<'a, Reader>,
}

/// Which span of time a view covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The sliding window.
    Window,
    /// Since the process started.
    Total,
}

impl View<'_> {
    /// Samples of `figure` for `route` over `scope`, merged across the ends
    /// in `ends`; `None` when nothing was recorded.
    pub fn histogram(&self, route: usize, figure: Figure, ends: &[End], scope: Scope) -> Option<Histogram<u64>> {
        let mut merged: Option<Histogram<u64>> = None;
        let mut add = |h: &Option<Histogram<u64>>| {
            if let Some(h) = h {
                let _ = merged.get_or_insert_with(new_histogram).add(h);
            }
        };
        for &end in ends {
            let index = series(route, end, figure);
            match scope {
                Scope::Total => add(self.reader.total.get(index).unwrap_or(&None)),
                Scope::Window => {
                    for (_, slot) in &self.reader.slots {
                        add(slot.get(index).unwrap_or(&None));
                    }
                }
            }
        }
        merged
    }
}

/// Ships this thread's unshipped samples, for every recorder it has used.
/// Called by the runtime when a worker thread goes idle, so that a quiet
/// thread's last samples still reach the reader.
pub fn flush_thread() {
    LOCAL.with(|cell| {
        if let Ok(mut cell) = cell.try_borrow_mut() {
            if let Some(local) = cell.as_mut() {
                local.ship();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn recorded_samples_are_read_back_after_a_flush() {
        let latency = Latency::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for value in [1, 2, 3] {
            latency.record(1, End::Complete, &[(Figure::Total, ms(value))], now);
        }
        latency.record(1, End::ClientGone, &[(Figure::Total, ms(9))], now);
        flush_thread();
        let view = latency.read();
        let complete = view
            .histogram(1, Figure::Total, &[End::Complete], Scope::Window)
            .expect("samples");
        assert_eq!(complete.len(), 3);
        assert_eq!(complete.max(), complete.highest_equivalent(3000));
        let all = view
            .histogram(1, Figure::Total, &End::ALL, Scope::Total)
            .expect("samples");
        assert_eq!(all.len(), 4);
        assert!(view.histogram(0, Figure::Total, &End::ALL, Scope::Window).is_none());
        assert!(view.histogram(1, Figure::Headers, &End::ALL, Scope::Window).is_none());
    }

    #[test]
    fn samples_from_several_threads_merge() {
        let latency = Arc::new(Latency::new(1, Duration::from_secs(60)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let latency = latency.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        latency.record(0, End::Complete, &[(Figure::Proxy, ms(1))], Instant::now());
                    }
                    flush_thread();
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let view = latency.read();
        let merged = view.histogram(0, Figure::Proxy, &[End::Complete], Scope::Window);
        assert_eq!(merged.map(|h| h.len()), Some(4000));
    }

    #[test]
    fn the_window_forgets_old_intervals_but_the_total_keeps_them() {
        let latency = Latency::new(1, Duration::from_millis(60)); // slots of 10 ms
        latency.record(0, End::Complete, &[(Figure::Total, ms(5))], Instant::now());
        flush_thread();
        assert!(latency
            .read()
            .histogram(0, Figure::Total, &End::ALL, Scope::Window)
            .is_some());
        // Within the window the sample stays, however often the window is read.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(5));
            assert!(latency
                .read()
                .histogram(0, Figure::Total, &End::ALL, Scope::Window)
                .is_some());
        }
        std::thread::sleep(Duration::from_millis(70));
        let view = latency.read();
        assert!(view.histogram(0, Figure::Total, &End::ALL, Scope::Window).is_none());
        assert_eq!(
            view.histogram(0, Figure::Total, &End::ALL, Scope::Total)
                .map(|h| h.len()),
            Some(1)
        );
    }

    #[test]
    fn values_beyond_the_range_are_clamped_not_lost() {
        let latency = Latency::new(1, Duration::from_secs(60));
        latency.record(
            0,
            End::Complete,
            &[
                (Figure::Total, Duration::from_secs(3600)),
                (Figure::Headers, Duration::ZERO),
            ],
            Instant::now(),
        );
        flush_thread();
        let view = latency.read();
        let total = view.histogram(0, Figure::Total, &End::ALL, Scope::Total).expect("kept");
        assert_eq!(total.max(), total.highest_equivalent(HIGHEST_MICROS));
        let headers = view
            .histogram(0, Figure::Headers, &End::ALL, Scope::Total)
            .expect("kept");
        assert_eq!(headers.min(), 1);
    }
}
