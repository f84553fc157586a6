//! Counters shared by every task of a run, and the snapshots shown to the caller.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many failed requests are kept, with what they were and why, for the report.
const KEPT_FAILURES: usize = 20;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) referrals: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) steps: AtomicU64,
    pub(crate) queue_completions: AtomicU64,
    pub(crate) queue_fallbacks: AtomicU64,
    pub(crate) journeys_done: AtomicU64,
    pub(crate) journeys_failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a failed request and keeps the first few descriptions. `what` never holds
    /// personal data: it names the request and the service's problem detail.
    pub(crate) fn failure(&self, what: String) {
        Self::add(&self.failed, 1);
        if let Ok(mut kept) = self.failures.lock()
            && kept.len() < KEPT_FAILURES
        {
            kept.push(what);
        }
    }

    pub(crate) fn progress(&self, elapsed: Duration, open_journeys: u64) -> SimProgress {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SimProgress {
            elapsed,
            requests: get(&self.requests),
            failed: get(&self.failed),
            throttled: get(&self.throttled),
            retried: get(&self.retried),
            referrals: get(&self.referrals),
            duplicates: get(&self.duplicates),
            steps: get(&self.steps),
            queue_completions: get(&self.queue_completions),
            queue_fallbacks: get(&self.queue_fallbacks),
            journeys_done: get(&self.journeys_done),
            journeys_failed: get(&self.journeys_failed),
            open_journeys,
        }
    }

    pub(crate) fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .map(|kept| kept.clone())
            .unwrap_or_default()
    }
}

/// Where a run stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimProgress {
    pub elapsed: Duration,
    /// HTTP requests answered (retries included).
    pub requests: u64,
    /// Requests that failed for good (after retries): each is a bug or an outage.
    pub failed: u64,
    /// 429 answers (retried after `Retry-After`).
    pub throttled: u64,
    /// Requests sent again after a 429, a 5xx or a lost connection.
    pub retried: u64,
    /// Referrals accepted (duplicates included).
    pub referrals: u64,
    /// Referrals the service linked to an earlier one of the same person.
    pub duplicates: u64,
    /// Journey steps recorded, by any path.
    pub steps: u64,
    /// Calls recorded by simulated agents working the queue.
    pub queue_completions: u64,
    /// First calls no agent claimed in time, recorded directly instead.
    pub queue_fallbacks: u64,
    /// Journeys whose whole plan was performed.
    pub journeys_done: u64,
    /// Journeys abandoned after a failed request.
    pub journeys_failed: u64,
    /// Journeys still waiting for their next step.
    pub open_journeys: u64,
}

impl SimProgress {
    /// Referrals per second over the whole run.
    #[must_use]
    pub fn referral_rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "a count shown with one decimal")]
        let referrals = self.referrals as f64;
        referrals / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// Requests per second over the whole run.
    #[must_use]
    pub fn request_rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "a count shown with one decimal")]
        let requests = self.requests as f64;
        requests / self.elapsed.as_secs_f64().max(1e-3)
    }
}
