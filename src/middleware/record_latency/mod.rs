//! Latency recording: the outermost layer, so that what it measures is what
//! a client sees of tailcut, from the request handed over by hyper to the
//! last byte of the response body.
//!
//! [`RecordLatencyLayer`] times the response headers; [`RecordedBody`] times
//! the body's end, which is either its last frame (`complete`), an error
//! (`error`), or the body being dropped unfinished because the client went
//! away (`client_gone`). The body it wraps says which route served the
//! request and how long the upstream took ([`Labelled`](crate::metrics::Labelled)); the figures go to
//! [`Metrics::record`](crate::metrics::Metrics::record), which takes no lock.

mod body;
mod layer;

pub use body::RecordedBody;
pub use layer::{RecordLatency, RecordLatencyFuture, RecordLatencyLayer};
