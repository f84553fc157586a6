//! What team leads read: queue depth now, and completions per agent over a time range.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{QueueService, READ_MODEL};
use crate::problem::ApiError;

/// One queue (study × kind × language × country) now.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct DepthRow {
    pub(crate) study_id: Uuid,
    pub(crate) kind: String,
    pub(crate) language: String,
    pub(crate) country: String,
    pub(crate) upcoming: i64,
    pub(crate) due: i64,
    pub(crate) overdue: i64,
    pub(crate) leased: i64,
    /// The earliest instant from which a claimable item of the queue has been waiting.
    pub(crate) oldest_ready_at: Option<DateTime<Utc>>,
}

/// One agent's completions over a range.
#[derive(Clone, Debug, Default)]
pub(crate) struct AgentRow {
    pub(crate) completions: i64,
    pub(crate) by_outcome: BTreeMap<String, i64>,
    /// Mean time from claim to completion, in seconds.
    pub(crate) mean_handle_seconds: Option<f64>,
    /// Leases the agent holds now.
    pub(crate) holding: i64,
}

impl QueueService {
    /// Depth per queue at `now`, optionally of some studies only. One read-only snapshot of the
    /// live read model, so the figures add up.
    pub(crate) async fn depth(
        &self,
        now: DateTime<Utc>,
        studies: Option<&[Uuid]>,
    ) -> Result<Vec<DepthRow>, ApiError> {
        let mut tx = self.read_models().read(READ_MODEL).await?;
        let rows = sqlx::query_as(
            "SELECT i.study_id, i.kind, i.language, i.country, \
                 count(*) FILTER (WHERE i.ready_at > $1) AS upcoming, \
                 count(*) FILTER (WHERE i.ready_at <= $1 AND (i.overdue_at IS NULL OR i.overdue_at >= $1)) AS due, \
                 count(*) FILTER (WHERE i.overdue_at < $1) AS overdue, \
                 count(*) FILTER (WHERE EXISTS (SELECT 1 FROM public.work_leases l \
                     WHERE l.item_id = i.item_id AND l.completed_seq IS NULL \
                       AND l.expires_at > $1)) AS leased, \
                 min(i.ready_at) FILTER (WHERE i.ready_at <= $1) AS oldest_ready_at \
             FROM work_items i \
             WHERE ($2::uuid[] IS NULL OR i.study_id = ANY($2)) \
             GROUP BY i.study_id, i.kind, i.language, i.country \
             ORDER BY i.study_id, i.kind, i.language, i.country",
        )
        .bind(now)
        .bind(studies)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Completions per agent and outcome in `[from, to)`, and the leases each holds at `now`.
    pub(crate) async fn agents(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        studies: Option<&[Uuid]>,
    ) -> Result<BTreeMap<Uuid, AgentRow>, ApiError> {
        let pool = self.db();
        let completed: Vec<(Uuid, String, i64, f64)> = sqlx::query_as(
            "SELECT agent_id, outcome, count(*), \
                 sum(extract(epoch FROM completed_at - claimed_at))::float8 \
             FROM public.work_completions \
             WHERE completed_at >= $1 AND completed_at < $2 \
               AND ($3::uuid[] IS NULL OR study_id = ANY($3)) \
             GROUP BY agent_id, outcome",
        )
        .bind(from)
        .bind(to)
        .bind(studies)
        .fetch_all(pool)
        .await?;
        let holding: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT l.agent_id, count(*) FROM public.work_leases l \
             WHERE l.expires_at > $1 AND l.completed_seq IS NULL \
             GROUP BY l.agent_id",
        )
        .bind(now)
        .fetch_all(pool)
        .await?;
        let mut agents: BTreeMap<Uuid, AgentRow> = BTreeMap::new();
        let mut handle_seconds: BTreeMap<Uuid, f64> = BTreeMap::new();
        for (agent, outcome, count, seconds) in completed {
            let row = agents.entry(agent).or_default();
            row.completions += count;
            row.by_outcome.insert(outcome, count);
            *handle_seconds.entry(agent).or_default() += seconds;
        }
        for (agent, row) in &mut agents {
            #[allow(
                clippy::cast_precision_loss,
                reason = "a count of completions is far below 2^52"
            )]
            let count = row.completions as f64;
            row.mean_handle_seconds = handle_seconds.get(agent).map(|total| total / count);
        }
        // Agents holding work without a completion in the range are listed too (with zero),
        // unless the report is narrowed to studies: leases do not carry the study.
        if studies.is_none() {
            for (agent, count) in holding {
                agents.entry(agent).or_default().holding = count;
            }
        } else {
            for (agent, count) in holding {
                if let Some(row) = agents.get_mut(&agent) {
                    row.holding = count;
                }
            }
        }
        Ok(agents)
    }
}
