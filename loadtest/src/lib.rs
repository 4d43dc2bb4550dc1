//! tailcut-load: an open-loop HTTP load generator that measures tail latency
//! without coordinated omission, and a fast configurable backend.
//!
//! # Layout
//!
//! - [`cli`]: command-line definitions.
//! - [`schedule`]: intended send times, fixed before the run (uniform or Poisson).
//! - [`timing`]: sleeping coarsely then spinning to each send time; the stall monitor.
//! - [`run`]: the open-loop run: threads, connections, taking send times off the schedule.
//! - [`http1`]: the lean HTTP/1.1 client connection of the hot loop.
//! - [`histograms`]: the latency histograms and their serialized forms
//!   (`.hgrm` text, HdrHistogram V2 compressed + base64).
//! - [`result`]: what a run measured, its verdict, the terminal summary,
//!   JSON output and `merge`.
//! - [`backend`]: `tailcut-load backend`, an upstream with a chosen response
//!   size, status and service-time distribution.
//! - [`compare`]: `tailcut-load compare`, tailcut against the Go proxy under
//!   one scenario, with bootstrap intervals on every percentile difference.
//!
//! Latency is measured from each request's *intended* send time to the end of
//! its response body, so a stall anywhere (target, network or generator)
//! shows up in the figures instead of silently delaying the requests that
//! would have seen it.

pub mod backend;
pub mod cli;
pub mod compare;
pub mod histograms;
pub mod http1;
pub mod result;
pub mod run;
pub mod schedule;
pub mod timing;
