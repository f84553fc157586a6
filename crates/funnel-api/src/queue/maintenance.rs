//! The queues' background upkeep, run by every service instance every few seconds on the
//! service clock: the depth and SLA-breach gauges, pruning leases that no longer mean
//! anything, and the monthly partitions of `work_completions` (created ahead, dropped after
//! the retention). All of it is idempotent, so several instances doing it at once only repeat
//! each other.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike as _, Months, NaiveDate, TimeDelta, Utc};
use prometheus::{IntGaugeVec, Opts, Registry};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{KINDS, QueueService, READ_MODEL, delta, held};
use crate::clock::Clock;
use crate::problem::error_chain;

/// How often the partitions of `work_completions` are checked (on the service clock).
const PARTITION_CHECK_EVERY: TimeDelta = TimeDelta::hours(1);

/// Queue gauges on a registry passed in by the caller.
#[derive(Clone, Debug)]
pub(crate) struct QueueMetrics {
    depth: IntGaugeVec,
    breaches: IntGaugeVec,
}

impl QueueMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let depth = IntGaugeVec::new(
            Opts::new(
                "funnel_queue_depth",
                "Open work items by kind and due state: upcoming (not claimable yet), due, \
                 overdue (past their service level)",
            ),
            &["kind", "state"],
        )?;
        let breaches = IntGaugeVec::new(
            Opts::new(
                "funnel_queue_sla_breaches",
                "Open work items past their service level, by kind",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(depth.clone()))?;
        registry.register(Box::new(breaches.clone()))?;
        Ok(Self { depth, breaches })
    }

    fn set(&self, kind: &str, counts: Counts) {
        for (state, value) in [
            ("upcoming", counts.upcoming),
            ("due", counts.due),
            ("overdue", counts.overdue),
        ] {
            self.depth.with_label_values(&[kind, state]).set(value);
        }
        self.breaches.with_label_values(&[kind]).set(counts.overdue);
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    upcoming: i64,
    due: i64,
    overdue: i64,
}

/// Runs the upkeep until `stop` is cancelled. The first round runs at once, so partitions
/// exist before the first completion of a fresh database.
pub(crate) async fn run(
    queue: QueueService,
    db: PgPool,
    clock: Arc<dyn Clock>,
    metrics: QueueMetrics,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(queue.settings().maintenance_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut partitions_checked: Option<DateTime<Utc>> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = clock.now();
        // Until the read model has a live generation there is nothing to count or prune.
        match refresh_gauges(&queue, &metrics, now).await {
            Ok(()) | Err(funnel_projections::ReadModelError::NotReady(_)) => {}
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "refreshing the queue gauges failed");
            }
        }
        match prune_leases(&queue, now).await {
            Ok(0) | Err(funnel_projections::ReadModelError::NotReady(_)) => {}
            Ok(pruned) => tracing::debug!(pruned, "pruned work leases"),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "pruning work leases failed");
            }
        }
        // The clock may also have been moved back (tests): check again then.
        let due = partitions_checked
            .is_none_or(|checked| now - checked >= PARTITION_CHECK_EVERY || now < checked);
        if due {
            let settings = queue.settings();
            match maintain_partitions(
                &db,
                now,
                settings.partitions_ahead_months,
                settings.completion_retention_months,
            )
            .await
            {
                Ok(()) => partitions_checked = Some(now),
                Err(error) => tracing::warn!(
                    error = %error_chain(&error),
                    "maintaining the work_completions partitions failed"
                ),
            }
        }
    }
}

async fn refresh_gauges(
    queue: &QueueService,
    metrics: &QueueMetrics,
    now: DateTime<Utc>,
) -> Result<(), funnel_projections::ReadModelError> {
    let mut tx = queue.read_models().read(READ_MODEL).await?;
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT i.kind, \
             count(*) FILTER (WHERE i.ready_at > $1), \
             count(*) FILTER (WHERE i.ready_at <= $1 AND (i.overdue_at IS NULL OR i.overdue_at >= $1)), \
             count(*) FILTER (WHERE i.overdue_at < $1) \
         FROM work_items i GROUP BY i.kind",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // Every known kind gets a value, zero included: a series that vanishes when its queue
    // empties would read as "no data" rather than "nothing overdue".
    let mut counts: BTreeMap<String, Counts> = KINDS
        .iter()
        .map(|kind| ((*kind).to_owned(), Counts::default()))
        .collect();
    for (kind, upcoming, due, overdue) in rows {
        counts.insert(
            kind,
            Counts {
                upcoming,
                due,
                overdue,
            },
        );
    }
    for (kind, counts) in counts {
        metrics.set(&kind, counts);
    }
    Ok(())
}

/// Deletes leases of items that are no longer open, completion markers the read model has
/// caught up with, and leases that lapsed longer ago than `keep_lapsed`.
async fn prune_leases(
    queue: &QueueService,
    now: DateTime<Utc>,
) -> Result<u64, funnel_projections::ReadModelError> {
    let mut tx = queue.read_models().read_write(READ_MODEL).await?;
    let pruned = sqlx::query(concat!(
        "DELETE FROM public.work_leases l \
         WHERE NOT EXISTS (SELECT 1 FROM work_items i WHERE i.item_id = l.item_id) \
            OR (l.completed_seq IS NOT NULL AND NOT ",
        held!("l"),
        ") OR (l.completed_seq IS NULL AND l.expires_at <= $2)"
    ))
    .bind(now)
    .bind(now - delta(queue.settings().keep_lapsed))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(pruned)
}

/// The first day of the month `months` after `now`'s (negative: before).
fn month_start(now: DateTime<Utc>, months: i64) -> Option<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1)?;
    let shift = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    if months >= 0 {
        first.checked_add_months(shift)
    } else {
        first.checked_sub_months(shift)
    }
}

/// Creates the partitions of this month and `ahead` months after it, and drops those that
/// ended `retention` months or more before this month began (see the SQL functions in the
/// migration, which also move rows the default partition caught into their month).
pub(crate) async fn maintain_partitions(
    db: &PgPool,
    now: DateTime<Utc>,
    ahead: u32,
    retention: u32,
) -> Result<(), sqlx::Error> {
    for offset in 0..=i64::from(ahead) {
        let Some(start) = month_start(now, offset) else {
            continue;
        };
        let created: bool = sqlx::query_scalar("SELECT work_completions_ensure_partition($1)")
            .bind(start)
            .fetch_one(db)
            .await?;
        if created {
            tracing::info!(month = %start, "created a work_completions partition");
        }
    }
    if let Some(cutoff) = month_start(now, -i64::from(retention)) {
        let dropped: Vec<String> =
            sqlx::query_scalar("SELECT work_completions_drop_partitions($1)")
                .bind(cutoff)
                .fetch_all(db)
                .await?;
        for partition in dropped {
            tracing::info!(%partition, "dropped a work_completions partition past its retention");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_counted_from_the_first_of_the_month() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T23:59:59Z")
            .unwrap()
            .to_utc();
        assert_eq!(month_start(now, 0).unwrap().to_string(), "2026-11-01");
        assert_eq!(month_start(now, 2).unwrap().to_string(), "2027-01-01");
        assert_eq!(month_start(now, -24).unwrap().to_string(), "2024-11-01");
    }
}
