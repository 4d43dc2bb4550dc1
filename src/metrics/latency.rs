//! Latency histograms and request counts, recorded without a lock or a
//! shared write on the request path.
//!
//! Each worker thread records into a [`Shard`] of its own: HdrHistogram
//! buckets and counters held in atomics that only that thread writes (a
//! plain load and store, no read-modify-write, no lock), so two workers
//! recording at once never contend for a cache line. The reader
//! ([`Latency::read`]) loads every shard's buckets, turns what grew since
//! its last read into samples of the current window slot and of the
//! since-start total, and keeps a ring of [`SLOTS`] slots covering the
//! window; rotating the ring forgets the oldest slot at once. A sample is
//! visible to the next read as soon as it is recorded.
//!
//! The shards use hdrhistogram's bucket layout ([`bucket`]), checked against
//! the crate in the tests, so that what the reader rebuilds is exactly the
//! histogram the crate would have recorded. (The crate's own `sync`
//! recorder hands histograms over when a recorder next records, which an
//! idle worker never does; its plain `Histogram` cannot be read while
//! another thread writes it.)
//!
//! Route slots are numbered by the caller ([`crate::metrics`] hands them
//! out, one per route and cluster pair). A shard allocates them in chunks on
//! its first sample in a chunk, and the reader's tables grow to the highest
//! chunk recorded, so slots added by a config reload cost nothing until used.
//!
//! Values are microseconds, from 1 us to 60 s at 3 significant digits;
//! longer values are clamped to 60 s, not lost.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest recorded value: 60 s in microseconds.
pub const HIGHEST_MICROS: u64 = 60_000_000;

/// Slots the window is divided into; it moves in steps of window / SLOTS.
pub const SLOTS: u32 = 6;

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

/// Status classes counted: 1xx to 5xx.
pub const STATUS_CLASSES: usize = 5;

/// Counters per route slot: one per status class, then one per end.
const COUNTS: usize = STATUS_CLASSES + ENDS;

/// Which histogram: one per (route slot, end, figure).
fn series(route: usize, end: End, figure: Figure) -> usize {
    (route * ENDS + end as usize) * FIGURES + figure as usize
}

/// A histogram for microsecond latencies, 1 us to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("constant bounds that hdrhistogram accepts")
}

/// hdrhistogram's bucket layout for 1 us to 60 s at 3 significant digits:
/// 2048 sub-buckets per bucket, the lower half of each bucket after the
/// first overlapping the previous one.
pub mod bucket {
    use super::HIGHEST_MICROS;

    const SUB_BUCKET_HALF_MAGNITUDE: u32 = 10;
    const SUB_BUCKET_HALF: usize = 1 << SUB_BUCKET_HALF_MAGNITUDE;
    const SUB_BUCKET_MASK: u64 = (1 << (SUB_BUCKET_HALF_MAGNITUDE + 1)) - 1;
    /// 64 - unit magnitude (0) - half magnitude - 1.
    const LEADING_ZERO_BASE: u32 = 64 - SUB_BUCKET_HALF_MAGNITUDE - 1;

    /// The index of the bucket holding `value` (1 ..= [`HIGHEST_MICROS`]).
    pub const fn index(value: u64) -> usize {
        let bucket = LEADING_ZERO_BASE - (value | SUB_BUCKET_MASK).leading_zeros();
        let sub_bucket = (value >> bucket) as usize;
        ((bucket as usize + 1) << SUB_BUCKET_HALF_MAGNITUDE) + sub_bucket - SUB_BUCKET_HALF
    }

    /// The lowest value the bucket at `index` holds.
    pub const fn value(index: usize) -> u64 {
        let bucket = (index >> SUB_BUCKET_HALF_MAGNITUDE) as u32;
        let sub_bucket = (index & (SUB_BUCKET_HALF - 1)) + SUB_BUCKET_HALF;
        if bucket == 0 {
            (sub_bucket - SUB_BUCKET_HALF) as u64
        } else {
            (sub_bucket as u64) << (bucket - 1)
        }
    }

    /// Buckets from 0 to the one holding [`HIGHEST_MICROS`].
    pub const LEN: usize = index(HIGHEST_MICROS) + 1;
}

/// Route slots a recorder holds. Slots are handed out as routes appear
/// (reloads add some), and never reused, so that a slot's counts stay one
/// route's; a thread allocates a chunk of them on its first sample in it.
pub const MAX_ROUTE_SLOTS: usize = CHUNKS * CHUNK;
const CHUNK: usize = 32;
const CHUNKS: usize = 128;

/// Series (histograms) per route slot.
const SERIES_PER_SLOT: usize = ENDS * FIGURES;

/// One route slot of one thread.
#[derive(Debug, Default)]
struct SlotShard {
    /// [`COUNTS`] counters.
    counts: [AtomicU64; COUNTS],
    /// Per (end, figure), allocated on the thread's first sample in it.
    series: [OnceLock<Box<[AtomicU64]>>; SERIES_PER_SLOT],
}

/// One thread's buckets and counters; only the owning thread writes them.
#[derive(Debug)]
struct Shard {
    chunks: [OnceLock<Box<[SlotShard]>>; CHUNKS],
}

impl Shard {
    /// The slots of chunk `c` this thread has recorded into, if any.
    fn chunk(&self, c: usize) -> Option<&[SlotShard]> {
        self.chunks.get(c).and_then(OnceLock::get).map(|chunk| &chunk[..])
    }
}

/// Adds one to a counter only this thread writes: a load and a store, which
/// compile to plain moves, where `fetch_add` would lock the cache line.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

fn zeroed(len: usize) -> Box<[AtomicU64]> {
    std::iter::repeat_with(|| AtomicU64::new(0)).take(len).collect()
}

/// The recorder shared by every connection, and its reader side.
#[derive(Debug)]
pub struct Latency {
    id: u64,
    /// Every thread's shard; locked only when a thread records for the first time.
    shards: Mutex<Vec<Arc<Shard>>>,
    reader: Mutex<Reader>,
}

/// What the reader has taken in. Its vectors grow with the highest route
/// slot any thread has recorded into.
#[derive(Debug)]
struct Reader {
    slot_length: Duration,
    /// Newest first; each slot covers `slot_length` from its start.
    slots: VecDeque<(Instant, Vec<Option<Histogram<u64>>>)>,
    total: Vec<Option<Histogram<u64>>>,
    /// What each shard's buckets held at the last read, by shard and series.
    seen: Vec<Vec<Option<Box<[u64]>>>>,
    /// Since start, per route slot: [`COUNTS`] counters.
    counts: Vec<u64>,
}

/// Distinguishes recorders in thread-locals (tests run several in one process).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's shard of the recorder it last recorded into.
    static LOCAL: RefCell<Option<(u64, Arc<Shard>)>> = const { RefCell::new(None) };
}

impl Latency {
    /// A recorder of up to [`MAX_ROUTE_SLOTS`] route slots, whose window is `window` long.
    pub fn new(window: Duration) -> Latency {
        Latency {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::new(Vec::new()),
            reader: Mutex::new(Reader {
                slot_length: window / SLOTS,
                slots: VecDeque::new(),
                total: Vec::new(),
                seen: Vec::new(),
                counts: Vec::new(),
            }),
        }
    }

    /// Records one request in route slot `route` (below [`MAX_ROUTE_SLOTS`];
    /// others are ignored): its status class (0 for 1xx .. 4 for 5xx), how
    /// it ended, and its figures, into this thread's shard.
    pub fn record(&self, route: usize, class: usize, end: End, figures: &[(Figure, Duration)]) {
        if route >= MAX_ROUTE_SLOTS {
            return;
        }
        LOCAL.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().is_none_or(|(id, _)| *id != self.id) {
                *cell = Some((self.id, self.new_shard()));
            }
            let Some((_, shard)) = cell.as_ref() else { return };
            let chunk = shard.chunks[route / CHUNK]
                .get_or_init(|| std::iter::repeat_with(SlotShard::default).take(CHUNK).collect());
            let slot = &chunk[route % CHUNK];
            bump(&slot.counts[class.min(STATUS_CLASSES - 1)]);
            bump(&slot.counts[STATUS_CLASSES + end as usize]);
            for &(figure, value) in figures {
                let micros = u64::try_from(value.as_micros())
                    .unwrap_or(u64::MAX)
                    .clamp(1, HIGHEST_MICROS);
                let series = &slot.series[end as usize * FIGURES + figure as usize];
                bump(&series.get_or_init(|| zeroed(bucket::LEN))[bucket::index(micros)]);
            }
        });
    }

    /// A thread's first sample: the only time a worker takes a lock here.
    fn new_shard(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard {
            chunks: std::array::from_fn(|_| OnceLock::new()),
        });
        self.shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shard.clone());
        shard
    }

    /// Takes in what every shard recorded since the last read and moves the
    /// window; the result reads a consistent view until dropped.
    pub fn read(&self) -> View<'_> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let shards: Vec<Arc<Shard>> = self.shards.lock().unwrap_or_else(|p| p.into_inner()).clone();
        reader.absorb(Instant::now(), &shards);
        View { reader }
    }
}

impl Reader {
    fn absorb(&mut self, now: Instant, shards: &[Arc<Shard>]) {
        // Room for every chunk any thread has recorded into.
        let chunks = shards
            .iter()
            .filter_map(|shard| (0..CHUNKS).rev().find(|&c| shard.chunk(c).is_some()))
            .max()
            .map_or(0, |c| c + 1);
        let series_count = chunks * CHUNK * SERIES_PER_SLOT;
        if self.total.len() < series_count {
            self.total.resize(series_count, None);
            self.counts.resize(chunks * CHUNK * COUNTS, 0);
            for (_, slot) in &mut self.slots {
                slot.resize(series_count, None);
            }
            for seen in &mut self.seen {
                seen.resize(series_count, None);
            }
        }

        // Forget the slots that began a whole window ago or earlier.
        let window = self.slot_length * SLOTS;
        self.slots.retain(|(start, _)| now.duration_since(*start) < window);
        let starts_new_slot = self
            .slots
            .front()
            .is_none_or(|(start, _)| now.duration_since(*start) >= self.slot_length);
        if starts_new_slot {
            self.slots.push_front((now, vec![None; self.total.len()]));
        }

        self.counts.iter_mut().for_each(|c| *c = 0);
        for (k, shard) in shards.iter().enumerate() {
            if self.seen.len() <= k {
                self.seen.push(vec![None; self.total.len()]);
            }
            for c in 0..chunks {
                let Some(chunk) = shard.chunk(c) else { continue };
                for (i, slot) in chunk.iter().enumerate() {
                    let route = c * CHUNK + i;
                    for (j, count) in slot.counts.iter().enumerate() {
                        self.counts[route * COUNTS + j] += count.load(Ordering::Relaxed);
                    }
                    for (offset, buckets) in slot.series.iter().enumerate() {
                        let Some(buckets) = buckets.get() else { continue };
                        self.take_in(k, route * SERIES_PER_SLOT + offset, buckets);
                    }
                }
            }
        }
    }

    /// Adds what shard `k`'s buckets of series `s` gained since the last
    /// read to the current window slot and to the total.
    fn take_in(&mut self, k: usize, s: usize, buckets: &[AtomicU64]) {
        let seen = self.seen[k][s].get_or_insert_with(|| vec![0; bucket::LEN].into_boxed_slice());
        for (i, (now_count, seen_count)) in buckets.iter().zip(seen.iter_mut()).enumerate() {
            let count = now_count.load(Ordering::Relaxed);
            if count == *seen_count {
                continue;
            }
            let grown = count - *seen_count;
            *seen_count = count;
            for target in [&mut self.slots[0].1[s], &mut self.total[s]] {
                // Same bounds as the buckets, so recording cannot fail.
                let _ = target
                    .get_or_insert_with(new_histogram)
                    .record_n(bucket::value(i).max(1), grown);
            }
        }
    }
}

/// The counts of a route slot nothing was recorded in.
const NOTHING: [u64; COUNTS] = [0; COUNTS];

/// A locked, consistent view of the recorded latencies and counts.
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
    /// Requests answered for `route` since start, by status class (1xx first).
    /// A slot no thread has recorded into reads as zeros.
    pub fn requests(&self, route: usize) -> &[u64] {
        self.reader
            .counts
            .get(route * COUNTS..route * COUNTS + STATUS_CLASSES)
            .unwrap_or(&NOTHING[..STATUS_CLASSES])
    }

    /// Response bodies of `route` since start, by how they ended ([`End::ALL`] order).
    pub fn ends(&self, route: usize) -> &[u64] {
        self.reader
            .counts
            .get(route * COUNTS + STATUS_CLASSES..(route + 1) * COUNTS)
            .unwrap_or(&NOTHING[STATUS_CLASSES..])
    }

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_bucket_layout_is_hdrhistograms() {
        let reference = new_histogram();
        let mut value = 1u64;
        while value <= HIGHEST_MICROS {
            let index = bucket::index(value);
            assert!(index < bucket::LEN, "{value}");
            assert_eq!(
                bucket::value(index),
                reference.lowest_equivalent(value),
                "value {value}"
            );
            // Walk every bucket edge region: small steps low, growing steps high.
            value += 1 + value / 1500;
        }
        assert_eq!(bucket::index(HIGHEST_MICROS), bucket::LEN - 1);
    }

    #[test]
    fn samples_are_read_back_without_a_hand_over() {
        let latency = Latency::new(Duration::from_secs(60));
        for value in [1, 2, 3] {
            latency.record(1, 1, End::Complete, &[(Figure::Total, ms(value))]);
        }
        latency.record(1, 1, End::ClientGone, &[(Figure::Total, ms(9))]);
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
    fn slots_added_later_are_recorded_and_read_alongside_earlier_ones() {
        let latency = Latency::new(Duration::from_secs(60));
        latency.record(1, 1, End::Complete, &[(Figure::Total, ms(1))]);
        assert_eq!(latency.read().requests(1), [0, 1, 0, 0, 0]);
        // A slot in a chunk no thread has touched yet, then the last one.
        latency.record(100, 4, End::Error, &[(Figure::Total, ms(2))]);
        latency.record(MAX_ROUTE_SLOTS - 1, 1, End::Complete, &[(Figure::Total, ms(3))]);
        latency.record(MAX_ROUTE_SLOTS, 1, End::Complete, &[(Figure::Total, ms(4))]);
        let view = latency.read();
        assert_eq!(view.requests(1), [0, 1, 0, 0, 0]);
        assert_eq!(view.requests(100), [0, 0, 0, 0, 1]);
        assert_eq!(view.ends(100), [0, 1, 0]);
        assert_eq!(view.requests(MAX_ROUTE_SLOTS - 1), [0, 1, 0, 0, 0]);
        // Slots nothing was recorded in read as zeros, in a chunk no thread
        // touched as in one some thread did.
        assert_eq!(view.requests(MAX_ROUTE_SLOTS), [0, 0, 0, 0, 0]);
        assert_eq!(view.requests(50), [0, 0, 0, 0, 0]);
        assert_eq!(view.ends(50), [0, 0, 0]);
        assert_eq!(view.requests(2), [0, 0, 0, 0, 0]);
        let late = view
            .histogram(100, Figure::Total, &End::ALL, Scope::Window)
            .expect("samples in the later slot");
        assert_eq!(late.len(), 1);
        assert_eq!(
            view.histogram(1, Figure::Total, &End::ALL, Scope::Total)
                .map(|h| h.len()),
            Some(1)
        );
    }

    #[test]
    fn samples_from_several_threads_merge() {
        let latency = Arc::new(Latency::new(Duration::from_secs(60)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let latency = latency.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        latency.record(0, 1, End::Complete, &[(Figure::Proxy, ms(1))]);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let view = latency.read();
        let merged = view.histogram(0, Figure::Proxy, &[End::Complete], Scope::Window);
        assert_eq!(merged.map(|h| h.len()), Some(4000));
        assert_eq!(view.requests(0), [0, 4000, 0, 0, 0]);
        assert_eq!(view.ends(0), [4000, 0, 0]);
    }

    #[test]
    fn the_window_forgets_old_intervals_but_the_total_keeps_them() {
        let latency = Latency::new(Duration::from_millis(60)); // slots of 10 ms
        latency.record(0, 1, End::Complete, &[(Figure::Total, ms(5))]);
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
        let latency = Latency::new(Duration::from_secs(60));
        latency.record(
            0,
            1,
            End::Complete,
            &[
                (Figure::Total, Duration::from_secs(3600)),
                (Figure::Headers, Duration::ZERO),
            ],
        );
        let view = latency.read();
        let total = view.histogram(0, Figure::Total, &End::ALL, Scope::Total).expect("kept");
        assert_eq!(total.max(), total.highest_equivalent(HIGHEST_MICROS));
        let headers = view
            .histogram(0, Figure::Headers, &End::ALL, Scope::Total)
            .expect("kept");
        assert_eq!(headers.min(), 1);
    }
}
