//! What a response body tells the layers that measure it: the route that
//! served it, how long the upstream took, and when it ended.
//!
//! A trait the body implements rather than values in the response's
//! extensions: the first value inserted into `http::Extensions` allocates
//! its map, one allocation more per request on a path that makes one in
//! all, and the upstream time and end are known only when the body ends,
//! long after the response head (and its extensions) went to the client.
//! It lives here, beside the metrics it feeds, so that the innermost body
//! and the outermost layer both depend on it and not on each other.

use std::time::{Duration, Instant};

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

    /// What tail control did to the request (retries, a hedge, its
    /// deadline passing). No default: a wrapper that forgot to forward it
    /// would silently lose the marks.
    fn marks(&self) -> super::Marks;
}

/// A response body that is also [`Labelled`] (one bound, for `pin_project!`).
pub trait LabelledBody: http_body::Body + Labelled {}

impl<B: http_body::Body + Labelled> LabelledBody for B {}
