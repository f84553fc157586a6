//! Queries on the work queue for the API. Each takes a connection whose `search_path` is the
//! live generation's schema (from [`crate::ReadModels::read`] or
//! [`crate::ReadModels::read_write`]). Time is always a parameter: nothing here reads a clock.

use chrono::{DateTime, Utc};
use funnel_domain::{Country, JourneyId, Language, StudyId};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::{ItemKind, WorkItem};
use super::store::work_item;

/// How much work waits in one queue (study × kind × language × country) at `now`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct QueueDepth {
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    pub kind: ItemKind,
    #[schema(value_type = String, example = "es")]
    pub language: Language,
    #[schema(value_type = String, example = "ES")]
    pub country: Country,
    /// Items an agent may take now: `ready_at <= now` (a first contact from the referral on,
    /// every other kind from its due time).
    pub due: i64,
    /// Items in breach of their service level: `overdue_at < now` (a subset of `due`). For
    /// `first_contact` that is the first-contact SLA itself (`due_at`); `callback` one hour
    /// after the time asked for; `next_attempt` one attempt spacing after `due_at`;
    /// `site_escalation` one day after `due_at`. `schedule` and `re_engage` are never overdue.
    pub overdue: i64,
    /// Items not to be taken yet: `ready_at > now`.
    pub upcoming: i64,
    /// How long the longest-waiting item has been ready (`now − min(ready_at)` over the due
    /// items), in whole seconds; `None` when nothing is due.
    pub oldest_age_seconds: Option<i64>,
}

/// Queue depths at `now`, per study, kind, language and country (in that order), for the
/// given studies (`None`: every study; an empty list: none). Only queues with at least one
/// item appear.
///
/// # Errors
/// PostgreSQL errors, or a stored value the model cannot hold.
pub async fn depth(
    conn: &mut PgConnection,
    studies: Option<&[StudyId]>,
    now: DateTime<Utc>,
) -> Result<Vec<QueueDepth>, sqlx::Error> {
    let studies: Option<Vec<Uuid>> =
        studies.map(|studies| studies.iter().map(|study| *study.as_uuid()).collect());
    let rows = sqlx::query(
        "SELECT study_id, kind, language, country, \
         count(*) FILTER (WHERE ready_at <= $2) AS due, \
         count(*) FILTER (WHERE overdue_at < $2) AS overdue, \
         count(*) FILTER (WHERE ready_at > $2) AS upcoming, \
         floor(extract(epoch FROM $2 - min(ready_at) FILTER (WHERE ready_at <= $2)))::bigint \
           AS oldest_age_seconds \
         FROM work_items \
         WHERE $1::uuid[] IS NULL OR study_id = ANY($1::uuid[]) \
         GROUP BY study_id, kind, language, country \
         ORDER BY study_id, kind, language, country",
    )
    .bind(studies)
    .bind(now)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let language: String = row.try_get("language")?;
            let country: String = row.try_get("country")?;
            let corrupt = |what: &str, value: &str| {
                sqlx::Error::Decode(format!("work_queue: unexpected {what} `{value}`").into())
            };
            Ok(QueueDepth {
                study_id: StudyId::from_uuid(row.try_get("study_id")?),
                kind: ItemKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
                language: Language::parse(&language).map_err(|_| corrupt("language", &language))?,
                country: Country::parse(&country).map_err(|_| corrupt("country", &country))?,
                due: row.try_get("due")?,
                overdue: row.try_get("overdue")?,
                upcoming: row.try_get("upcoming")?,
                oldest_age_seconds: row.try_get("oldest_age_seconds")?,
            })
        })
        .collect()
}

/// One open item, if it is (still) open.
///
/// # Errors
/// PostgreSQL errors, or a stored value the model cannot hold.
pub async fn item(conn: &mut PgConnection, item_id: Uuid) -> Result<Option<WorkItem>, sqlx::Error> {
    sqlx::query("SELECT * FROM work_items WHERE item_id = $1")
        .bind(item_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(work_item)
        .transpose()
}

/// The open items of one journey, soonest due first.
///
/// # Errors
/// PostgreSQL errors, or a stored value the model cannot hold.
pub async fn items_for_journey(
    conn: &mut PgConnection,
    journey_id: JourneyId,
) -> Result<Vec<WorkItem>, sqlx::Error> {
    sqlx::query("SELECT * FROM work_items WHERE journey_id = $1 ORDER BY due_at, kind")
        .bind(*journey_id.as_uuid())
        .fetch_all(conn)
        .await?
        .iter()
        .map(work_item)
        .collect()
}
