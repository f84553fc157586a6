//! Throughput measurement for later tuning: many concurrent writers appending small events
//! to many aggregates, reporting events per second. Meant for a CLI subcommand or an ignored
//! test; it writes to whatever stream the [`EventLog`] points at.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;

use crate::{AppendError, EventLog, ExpectedVersion, GroupCommitStats, NewEvent, StreamKey};

/// What to write.
#[derive(Clone, Debug)]
pub struct AppendBenchmark {
    /// Concurrent writers (each awaits its own appends, like request handlers do).
    pub writers: usize,
    /// Appends per writer; each append goes to a fresh aggregate, then continues it.
    pub appends_per_writer: usize,
    /// Events per append.
    pub events_per_append: usize,
    /// Payload size in bytes (a JSON string of this length, roughly).
    pub payload_bytes: usize,
}

impl Default for AppendBenchmark {
    fn default() -> Self {
        Self {
            writers: 256,
            appends_per_writer: 100,
            events_per_append: 1,
            payload_bytes: 300,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchmarkReport {
    pub events: u64,
    pub appends: u64,
    pub failed_appends: u64,
    pub elapsed: Duration,
    pub events_per_second: f64,
    /// The group-commit counters over the run.
    pub stats: GroupCommitStats,
}

/// Runs the benchmark: every writer creates an aggregate (`NoStream`) and keeps appending to it
/// with the version it got back, so every append carries a concurrency check.
pub async fn run_append_benchmark(log: &EventLog, plan: &AppendBenchmark) -> BenchmarkReport {
    let payload = Bytes::from(format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(plan.payload_bytes)
    ));
    let before = log.stats();
    let started = Instant::now();
    let plan = Arc::new(plan.clone());
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..plan.writers {
        let log = log.clone();
        let plan = Arc::clone(&plan);
        let payload = payload.clone();
        writers.spawn(async move { write_one_aggregate(&log, &plan, &payload).await });
    }
    let (mut appends, mut failed) = (0, 0);
    while let Some(result) = writers.join_next().await {
        let (ok, errors) = result.unwrap_or((0, 1));
        appends += ok;
        failed += errors;
    }
    let elapsed = started.elapsed();
    let after = log.stats();
    let events = appends * plan.events_per_append as u64;
    BenchmarkReport {
        events,
        appends,
        failed_appends: failed,
        elapsed,
        events_per_second: events as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        stats: GroupCommitStats {
            batches_committed: after.batches_committed - before.batches_committed,
            appends_in_batches: after.appends_in_batches - before.appends_in_batches,
            messages_in_batches: after.messages_in_batches - before.messages_in_batches,
            batches_refused: after.batches_refused - before.batches_refused,
            appends_committed_alone: after.appends_committed_alone - before.appends_committed_alone,
        },
    }
}

async fn write_one_aggregate(
    log: &EventLog,
    plan: &AppendBenchmark,
    payload: &Bytes,
) -> (u64, u64) {
    let Ok(key) = StreamKey::new("bench", Uuid::now_v7()) else {
        return (0, 1);
    };
    let mut expected = ExpectedVersion::NoStream;
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..plan.appends_per_writer {
        let events = (0..plan.events_per_append)
            .map(|_| NewEvent {
                id: Uuid::now_v7(),
                event_type: "bench.appended.v1".to_owned(),
                time: Utc::now(),
                subject: key.id().to_string(),
                data: payload.clone(),
            })
            .collect();
        match log.append(&key, expected, events).await {
            Ok(appended) => {
                expected = ExpectedVersion::At(appended.last_seq);
                ok += 1;
            }
            Err(AppendError::Conflict { actual, .. }) => {
                expected = actual.map_or(ExpectedVersion::NoStream, ExpectedVersion::At);
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}
