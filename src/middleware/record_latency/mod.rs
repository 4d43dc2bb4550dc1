//! Latency recording: the outermost layer, so that what it measures is what
//! a client sees of tailcut, from the request handed over by hyper to the
//! last byte of the response body.
//!
//! [`RecordLatencyLayer`] times the response headers; [`RecordedBody`] times
//! the body's end, which is either its last frame (`complete`), an error
//! (`error`), or the body being dropped unfinished because the client went
//! away (`client_gone`). The body it wraps says which route served the
//! request and how long the upstream took ([`Labelled`]); the figures go to
//! [`Metrics::record`](crate::metrics::Metrics::record), which takes no lock.

mod body;
mod layer;

use std::time::{Duration, Instant};

pub use body::RecordedBody;
pub use layer::{RecordLatency, RecordLatencyFuture, RecordLatencyLayer};

/// What a response body knows about the exchange it ends.
pub trait Labelled {
    /// The index (config order) of the route that served the request, if
    /// one matched.
    fn route(&self) -> Option<usize>;

    /// From the request being sent upstream to the end of the upstream
    /// response; `None` until the upstream body has ended, or when the
    /// request never reached a backend.
    fn upstream_time(&self) -> Option<Duration>;

    /// When the body was read to its end, if it was and the time was read
    /// then: the layers use it rather than each reading the clock again.
    fn ended_at(&self) -> Option<Instant> {
        None
    }
}

/// A response body that is also [`Labelled`] (one bound, for `pin_project!`).
pub trait LabelledBody: http_body::Body + Labelled {}

impl<B: http_body::Body + Labelled> LabelledBody for B {}
