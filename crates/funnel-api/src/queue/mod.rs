//! Enrollment Support Team work queues: agents claim open work items under a lease, extend,
//! release or complete them; team leads read queue depth and completions.
//!
//! The open items are the `work_queue` read model (`work_items`, in the live generation's
//! schema), derived from the stream by its projector; this module never writes them. What agents
//! do with them is kept beside it in `public` (`work_leases`, `work_completions`, see migration
//! `20261130000300_work_queue_leases.sql`), so that a rebuild of the read model keeps every
//! lease: item ids are deterministic.
//!
//! * **One holder at a time.** A claim locks the most urgent claimable item of each of the
//!   agent's queues (`FOR UPDATE OF i SKIP LOCKED`, so concurrent claimers pass each other by
//!   instead of queueing) and upserts a lease on the earliest only where no lease holds (`ON
//!   CONFLICT ... DO UPDATE ... WHERE` the old one lapsed). The upsert is the guarantee: it
//!   sees every committed lease, even one committed after the claim's snapshot, in which case
//!   the claim looks again.
//! * **Time** is the service clock's (`AppState.clock`), never PostgreSQL's `now()`: tests move
//!   it, and every instance judges a lease by the same rule.
//! * **Completed, not yet projected.** A completion appends events; until the projector has
//!   applied them the read model still shows the item open. The lease row stays as a marker
//!   (`completed_seq`, the journey's version after the append) that keeps the item from being
//!   claimed again until the live generation's position has reached it.

pub(crate) mod maintenance;
pub(crate) mod outcome;
mod reports;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use funnel_domain::AgentId;
use funnel_projections::ReadModels;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::problem::ApiError;

pub(crate) use maintenance::QueueMetrics;

/// The read model holding the open items.
pub(crate) const READ_MODEL: &str = "work_queue";

/// The kinds of work item the read model derives (`work_items.kind`).
pub(crate) const KINDS: [&str; 6] = [
    "first_contact",
    "next_attempt",
    "callback",
    "schedule",
    "re_engage",
    "site_escalation",
];

/// How many times a claim looks again after another claimer's lease, committed after the
/// claim's snapshot, took the item it had picked.
const CLAIM_RACES: usize = 16;

/// How the queues behave.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// How long a claim holds an item, and how far from now an extension moves its end. Short,
    /// so that an abandoned item (a closed browser, a crashed client) is soon back in the queue.
    pub lease: Duration,
    /// How often the queue gauges are refreshed and stale leases pruned.
    pub maintenance_every: Duration,
    /// Months of `work_completions` partitions kept created ahead of the current one.
    pub partitions_ahead_months: u32,
    /// Completion partitions whose month ended longer ago than this are dropped.
    pub completion_retention_months: u32,
    /// How long a lapsed lease is kept, so that its former holder is told it lapsed rather than
    /// that it never held the item.
    pub keep_lapsed: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(5 * 60),
            maintenance_every: Duration::from_secs(5),
            partitions_ahead_months: 3,
            completion_retention_months: 24,
            keep_lapsed: Duration::from_secs(60 * 60),
        }
    }
}

/// Whether lease `l` keeps its item from being claimed at `$1`: it has not lapsed, or it was
/// completed by events the live read model has not applied yet. Never NULL (a lease without a
/// completion has a NULL `completed_seq`), so that `NOT` of it means "free".
macro_rules! held {
    ($l:literal) => {
        concat!(
            "(",
            $l,
            ".expires_at > $1 OR coalesce(",
            $l,
            ".completed_seq > (SELECT g.position FROM public.projection_generations g \
             WHERE g.name = 'work_queue' AND g.state = 'live'), false))"
        )
    };
}

/// The columns of an [`ItemRow`] from `work_items i`.
macro_rules! item_columns {
    () => {
        "i.item_id, i.journey_id, i.study_id, i.kind, i.country, i.language, i.site_id, \
         i.due_at, i.overdue_at, i.opened_at, i.attempt, i.max_attempts, i.time_zone"
    };
}

pub(crate) use held;

/// An open work item as the read model has it. No personal data: ids, codes and times.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct ItemRow {
    pub(crate) item_id: Uuid,
    pub(crate) journey_id: Uuid,
    pub(crate) study_id: Uuid,
    pub(crate) kind: String,
    pub(crate) country: String,
    pub(crate) language: String,
    pub(crate) site_id: Option<Uuid>,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) overdue_at: Option<DateTime<Utc>>,
    pub(crate) opened_at: DateTime<Utc>,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) time_zone: Option<String>,
}

/// An item and the lease on it.
#[derive(Clone, Debug)]
pub(crate) struct Leased {
    pub(crate) item: ItemRow,
    pub(crate) claimed_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
}

/// Which queues an agent works: its studies, and the primary subtags of its languages.
#[derive(Clone, Debug)]
pub(crate) struct AgentScope {
    pub(crate) agent: AgentId,
    pub(crate) studies: Vec<Uuid>,
    pub(crate) languages: Vec<String>,
}

/// An agent's narrowing of its own queues.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClaimFilter {
    pub(crate) kind: Option<String>,
    pub(crate) study: Option<Uuid>,
    pub(crate) country: Option<String>,
}

/// An item whose lease the caller holds, locked for completion. The transaction keeps the
/// lease row locked: no claim, prune or second completion gets past it until the completion is
/// recorded or abandoned.
#[derive(Debug)]
pub(crate) struct Completing {
    tx: Transaction<'static, Postgres>,
    pub(crate) leased: Leased,
}

/// What a completion appended, for its bookkeeping row.
#[derive(Debug)]
pub(crate) struct Completed<'a> {
    pub(crate) agent: AgentId,
    pub(crate) outcome: &'a str,
    pub(crate) events: Vec<String>,
    pub(crate) journey_version: u64,
    pub(crate) at: DateTime<Utc>,
}

/// Leases and completions. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct QueueService {
    read_models: ReadModels,
    db: PgPool,
    settings: QueueSettings,
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn seq(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

impl QueueService {
    pub(crate) const fn new(read_models: ReadModels, db: PgPool, settings: QueueSettings) -> Self {
        Self {
            read_models,
            db,
            settings,
        }
    }

    /// For the tables in `public` (completions), which need no read-model snapshot.
    pub(crate) const fn db(&self) -> &PgPool {
        &self.db
    }

    pub(crate) const fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub(crate) const fn read_models(&self) -> &ReadModels {
        &self.read_models
    }

    /// Leases the most urgent claimable item of the agent's queues (earliest `due_at` first), or
    /// `None` when nothing is claimable for it now.
    pub(crate) async fn claim(
        &self,
        scope: &AgentScope,
        filter: &ClaimFilter,
        now: DateTime<Utc>,
    ) -> Result<Option<Leased>, ApiError> {
        let expires_at = now + delta(self.settings.lease);
        for _ in 0..CLAIM_RACES {
            let mut tx = self.read_models.read_write(READ_MODEL).await?;
            // One index walk per (study, language) queue, in due order, each stopping at its
            // first claimable item (locked, so that a concurrent claim passes it by); the
            // earliest of those wins. A single walk over `study_id = ANY(..) AND language =
            // ANY(..)` cannot follow the index's order across several queues, and sorted every
            // ready item of the agent's queues on each claim instead.
            let candidate: Option<ItemRow> = sqlx::query_as(concat!(
                "SELECT c.* FROM unnest($2::uuid[]) AS s(study_id) \
                 CROSS JOIN unnest($3::text[]) AS q(language) \
                 CROSS JOIN LATERAL (SELECT ",
                item_columns!(),
                " FROM work_items i WHERE i.study_id = s.study_id \
                     AND lower(split_part(i.language, '-', 1)) = q.language \
                     AND i.ready_at <= $1 \
                     AND ($4::text IS NULL OR i.kind = $4) \
                     AND ($6::text IS NULL OR i.country = $6) \
                     AND NOT EXISTS (SELECT 1 FROM public.work_leases l \
                         WHERE l.item_id = i.item_id AND ",
                held!("l"),
                ") ORDER BY i.due_at LIMIT 1 FOR UPDATE OF i SKIP LOCKED) AS c \
                 WHERE $5::uuid IS NULL OR s.study_id = $5 \
                 ORDER BY c.due_at, c.item_id LIMIT 1"
            ))
            .bind(now)
            .bind(&scope.studies)
            .bind(&scope.languages)
            .bind(filter.kind.as_deref())
            .bind(filter.study)
            .bind(filter.country.as_deref())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(item) = candidate else {
                return Ok(None);
            };
            let leased = sqlx::query(concat!(
                "INSERT INTO public.work_leases AS l \
                     (item_id, journey_id, agent_id, claimed_at, expires_at) \
                 VALUES ($2, $3, $4, $1, $5) \
                 ON CONFLICT (item_id) DO UPDATE SET journey_id = EXCLUDED.journey_id, \
                     agent_id = EXCLUDED.agent_id, claimed_at = EXCLUDED.claimed_at, \
                     expires_at = EXCLUDED.expires_at, completed_seq = NULL \
                 WHERE NOT ",
                held!("l")
            ))
            .bind(now)
            .bind(item.item_id)
            .bind(item.journey_id)
            .bind(scope.agent.as_uuid())
            .bind(expires_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if leased {
                tx.commit().await?;
                return Ok(Some(Leased {
                    item,
                    claimed_at: now,
                    expires_at,
                }));
            }
            // A lease committed after this claim's snapshot holds the item: the next look sees
            // it and passes the item by.
        }
        Err(ApiError::Unavailable(
            "the queue is too contended right now; retry the claim".to_owned(),
        ))
    }

    /// Moves the end of the caller's lease to now + the lease time.
    pub(crate) async fn extend(
        &self,
        item_id: Uuid,
        agent: AgentId,
        now: DateTime<Utc>,
    ) -> Result<Leased, ApiError> {
        let mut tx = self.read_models.read_write(READ_MODEL).await?;
        let extended: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE public.work_leases l SET expires_at = $4 \
             WHERE l.item_id = $2 AND l.agent_id = $3 AND l.expires_at > $1 \
               AND l.completed_seq IS NULL \
               AND EXISTS (SELECT 1 FROM work_items i WHERE i.item_id = l.item_id) \
             RETURNING l.claimed_at, l.expires_at",
        )
        .bind(now)
        .bind(item_id)
        .bind(agent.as_uuid())
        .bind(now + delta(self.settings.lease))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((claimed_at, expires_at)) = extended else {
            return Err(lease_problem(&mut tx, item_id, agent, now).await);
        };
        let item = open_item(&mut tx, item_id)
            .await?
            .ok_or_else(|| moved_on(item_id))?;
        tx.commit().await?;
        Ok(Leased {
            item,
            claimed_at,
            expires_at,
        })
    }

    /// Gives the item back to the queue at once.
    pub(crate) async fn release(
        &self,
        item_id: Uuid,
        agent: AgentId,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let mut tx = self.read_models.read_write(READ_MODEL).await?;
        let released = sqlx::query(
            "DELETE FROM public.work_leases \
             WHERE item_id = $2 AND agent_id = $3 AND expires_at > $1 AND completed_seq IS NULL",
        )
        .bind(now)
        .bind(item_id)
        .bind(agent.as_uuid())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !released {
            return Err(lease_problem(&mut tx, item_id, agent, now).await);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Locks the caller's lease on an item for completion. An item no longer open (the journey
    /// moved on) cannot be completed: its lease is dropped and the caller told so.
    pub(crate) async fn begin_completion(
        &self,
        item_id: Uuid,
        agent: AgentId,
        now: DateTime<Utc>,
    ) -> Result<Completing, ApiError> {
        let mut tx = self.read_models.read_write(READ_MODEL).await?;
        let lease: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT claimed_at, expires_at FROM public.work_leases \
             WHERE item_id = $2 AND agent_id = $3 AND expires_at > $1 AND completed_seq IS NULL \
             FOR UPDATE",
        )
        .bind(now)
        .bind(item_id)
        .bind(agent.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((claimed_at, expires_at)) = lease else {
            return Err(lease_problem(&mut tx, item_id, agent, now).await);
        };
        let Some(item) = open_item(&mut tx, item_id).await? else {
            sqlx::query("DELETE FROM public.work_leases WHERE item_id = $1")
                .bind(item_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Err(moved_on(item_id));
        };
        Ok(Completing {
            tx,
            leased: Leased {
                item,
                claimed_at,
                expires_at,
            },
        })
    }

    /// Records a completion whose events are appended: the lease becomes the marker that keeps
    /// the item from a second claim until the read model has caught up, and the completion is
    /// kept for the team leads' reports. Bookkeeping only: the events are the record, so a
    /// failure here is logged and the completion stands.
    pub(crate) async fn finish_completion(&self, completing: Completing, done: &Completed<'_>) {
        let Completing { mut tx, leased } = completing;
        let recorded = async {
            sqlx::query(
                "UPDATE public.work_leases SET completed_seq = $2, \
                     expires_at = GREATEST(claimed_at, $3) WHERE item_id = $1",
            )
            .bind(leased.item.item_id)
            .bind(seq(done.journey_version))
            .bind(done.at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO public.work_completions (item_id, journey_id, study_id, kind, \
                     country, language, agent_id, outcome, due_at, claimed_at, completed_at, \
                     events, journey_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(leased.item.item_id)
            .bind(leased.item.journey_id)
            .bind(leased.item.study_id)
            .bind(&leased.item.kind)
            .bind(&leased.item.country)
            .bind(&leased.item.language)
            .bind(done.agent.as_uuid())
            .bind(done.outcome)
            .bind(leased.item.due_at)
            .bind(leased.claimed_at)
            .bind(done.at)
            .bind(&done.events)
            .bind(seq(done.journey_version))
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(error) = recorded {
            tracing::error!(
                item_id = %leased.item.item_id,
                error = %crate::problem::error_chain(&error),
                "the completion's events are appended but its bookkeeping failed; \
                 the lease lapses by itself"
            );
        }
    }
}

/// The item if it is still open in the live read model.
async fn open_item(
    tx: &mut Transaction<'static, Postgres>,
    item_id: Uuid,
) -> Result<Option<ItemRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        item_columns!(),
        " FROM work_items i WHERE i.item_id = $1"
    ))
    .bind(item_id)
    .fetch_optional(&mut **tx)
    .await
}

fn moved_on(item_id: Uuid) -> ApiError {
    ApiError::Conflict(format!(
        "work item {item_id} is no longer open: the journey has moved on; claim the next item"
    ))
}

/// A lease as stored: holder, end, completion marker.
type LeaseRow = (Uuid, DateTime<Utc>, Option<i64>);

/// Why the caller does not hold a live lease on the item. Every "not the holder" case is a 409
/// (the request conflicts with the item's state, and claiming again may resolve it); an item
/// that is neither open nor leased is a 404.
async fn lease_problem(
    tx: &mut Transaction<'static, Postgres>,
    item_id: Uuid,
    agent: AgentId,
    now: DateTime<Utc>,
) -> ApiError {
    let lease: Result<Option<LeaseRow>, sqlx::Error> = sqlx::query_as(
        "SELECT agent_id, expires_at, completed_seq FROM public.work_leases WHERE item_id = $1",
    )
    .bind(item_id)
    .fetch_optional(&mut **tx)
    .await;
    let open = open_item(tx, item_id).await.map(|item| item.is_some());
    let (lease, open) = match (lease, open) {
        (Ok(lease), Ok(open)) => (lease, open),
        (Err(error), _) | (_, Err(error)) => return error.into(),
    };
    let me = *agent.as_uuid();
    match lease {
        Some((holder, _, Some(_))) if holder == me => {
            ApiError::Conflict(format!("you have already completed work item {item_id}"))
        }
        Some((_, _, Some(_))) => ApiError::Conflict(format!(
            "work item {item_id} has been completed by another agent"
        )),
        Some((holder, expires_at, None)) if holder == me && expires_at <= now => {
            ApiError::Conflict(format!(
                "your lease on work item {item_id} lapsed at {}; the item went back to the \
                 queue: claim again",
                expires_at.to_rfc3339()
            ))
        }
        Some((holder, _, None)) if holder == me => moved_on(item_id),
        Some((_, expires_at, None)) if expires_at > now => {
            ApiError::Conflict(format!("work item {item_id} is leased to another agent"))
        }
        _ if open => ApiError::Conflict(format!(
            "you hold no lease on work item {item_id}; claim it first"
        )),
        _ => ApiError::NotFound(format!("no open work item {item_id}")),
    }
}
