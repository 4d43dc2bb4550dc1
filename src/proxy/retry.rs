//! Retries: a request whose attempt failed in a way the route's `on` list
//! names is sent again, to another backend when there is one, after a
//! backoff, while attempts, the deadline and the cluster's budget allow.
//!
//! - **What is retried** is decided from the typed upstream error
//!   ([`Replay::ended`]): connect failures and resets before response
//!   headers for any request kept for replay; 504 and response timeouts
//!   only for idempotent methods, since the backend may still be acting.
//! - **Backoff** is full jitter: a wait drawn uniformly below
//!   `backoff_base` x 2^n, capped at `backoff_max`; a retry whose backoff
//!   would end past the deadline is not made.
//! - **The concurrency limit**, where the cluster has one, must have a
//!   permit free for the retry (taken at once, never waited for, and held
//!   through the backoff): an overloaded cluster gets no extra attempts.
//! - **The budget** ([`crate::upstream::budget`]) is asked before each
//!   retry, and holds the retry in its count from then, through its backoff,
//!   to its end. Refusals are counted per cluster.
//! - The silent resend of a GET whose pooled connection turned out closed
//!   happens below, inside one attempt ([`crate::upstream::exchange`]),
//!   and is neither a retry nor counted against the budget.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use rand::Rng;
use tokio::time::Instant;

use super::replay::{Ended, Replay, Tried};
use super::{hedge, ProxyBody, ProxyError, Shared};
use crate::headers;
use crate::metrics::Marks;

/// Sends `replay` until it settles: the response for the client, or the
/// error it gets, and what tail control did to it.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut replay: Box<Replay>,
) -> (Result<Response<ProxyBody>, ProxyError>, Marks) {
    let mut marks = Marks::default();
    if let Err(error) = replay.receive_body().await {
        return (Err(error), marks);
    }
    let shared = &*shared;
    let cluster = &shared.clusters[replay.cluster];
    let now = Instant::now();
    cluster.budget.deposit(now);
    let retry = replay.policy.retry.clone().filter(|_| replay.allowed.retry);
    let attempts = retry.as_ref().map_or(1, |retry| retry.attempts);

    let mut tried = Vec::with_capacity(attempts as usize + 1);
    let mut picked = replay.first.take();
    let mut extra = None;
    let mut attempt = 0;
    let ended = loop {
        let Some(this) = picked.take() else {
            break Ended {
                tried: Tried::Failed(ProxyError::NoBackend {
                    upstream: cluster.name.clone(),
                }),
                reason: None,
            };
        };
        tried.push(this.index);
        let sending = match replay.attempt(shared, this) {
            Ok(sending) => sending,
            Err(error) => {
                break Ended {
                    tried: Tried::Failed(error),
                    reason: None,
                }
            }
        };
        let policy = replay.policy.clone();
        let hedging = policy.hedge.as_ref().filter(|_| attempt == 0 && replay.allowed.hedge);
        let ended = match hedging {
            Some(hedging) => hedge::first(shared, &mut replay, hedging, sending, &mut marks, &mut tried).await,
            None => replay.finish(shared, sending).await,
        };
        // The retry this attempt was, if it was one, has ended.
        drop(extra.take());
        attempt += 1;
        let (Some(retry), Some(reason)) = (&retry, ended.reason) else {
            break ended;
        };
        if attempt >= retry.attempts {
            break ended;
        }
        let wait = backoff(retry.backoff_base, retry.backoff_max, attempt - 1);
        let now = Instant::now();
        if replay.deadline.is_some_and(|deadline| now + wait >= deadline) {
            break ended;
        }
        let Some(permit) = cluster.extra_permit() else {
            break ended;
        };
        let Some(allowed) = cluster.budget.withdraw(now) else {
            cluster.counters.budget_refused();
            break ended;
        };
        extra = Some(allowed);
        replay.policy.counters.retried(reason);
        marks.retries += 1;
        tracing::debug!(reason, attempt, wait_ms = wait.as_millis() as u64, "retrying");
        // A retried answer's connection goes (the body is not read).
        drop(ended);
        tokio::time::sleep(wait).await;
        picked = cluster.pick_other(&tried, true).map(|picked| picked.admitted(permit));
    };
    let result = match ended.tried {
        Tried::Answered {
            response,
            exchange,
            sent,
            ..
        } => {
            let (mut parts, ()) = response.into_parts();
            headers::rewrite_response(&mut parts.headers, false);
            Ok(Response::from_parts(
                parts,
                ProxyBody::upstream(exchange, replay.deadline, sent),
            ))
        }
        Tried::Failed(error) => {
            if replay.deadline.is_some_and(|deadline| deadline <= Instant::now()) && error.status() == 504 {
                marks.deadline_exceeded = true;
            }
            Err(error)
        }
    };
    (result, marks)
}

/// The wait before retry `n` (0 for the first): full jitter below
/// `base` x 2^n, at most `max`.
fn backoff(base: Duration, max: Duration, n: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32 << n.min(16)).min(max);
    let micros = ceiling.as_micros() as u64;
    if micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::thread_rng().gen_range(0..=micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_doubling_capped_ceiling() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        for n in 0..8 {
            let ceiling = Duration::from_millis(25 << n).min(max);
            for _ in 0..200 {
                assert!(backoff(base, max, n) <= ceiling, "retry {n}");
            }
        }
        // Jittered: not every draw is the same.
        let draws: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(base, max, 3)).collect();
        assert!(draws.len() > 1);
    }
}
