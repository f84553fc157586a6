//! The projections' state as stored, for operators (`funnel projections status`).

use chrono::{DateTime, Utc};
use funnel_eventlog::{EventLog, EventLogError};
use sqlx::{PgPool, Row};

/// One generation's checkpoint and lag.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionStatus {
    pub name: String,
    /// 0 when the projection has no generation yet.
    pub generation: i32,
    /// The logic version that builds it.
    pub version: u32,
    /// `building`, `live`, `retired`, or `not_started` when it has no generation yet.
    pub state: String,
    /// Stream sequence of the last event applied (0: none yet).
    pub position: u64,
    /// `running` or `failed` (stopped at an event it cannot apply).
    pub status: String,
    pub last_error: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Time of the last event applied.
    pub last_event_time: Option<DateTime<Utc>>,
    /// Stream head − position, when the head could be read.
    pub lag_events: Option<u64>,
    /// Now − time of the last event applied, when behind (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// Whether some instance holds the generation's lock, i.e. runs it, right now.
    pub active: bool,
}

impl ProjectionStatus {
    pub(crate) fn not_started(name: &str, version: u32) -> Self {
        Self {
            name: name.to_owned(),
            generation: 0,
            version,
            state: "not_started".to_owned(),
            position: 0,
            status: "running".to_owned(),
            last_error: None,
            updated_at: None,
            last_event_time: None,
            lag_events: None,
            lag_seconds: None,
            active: false,
        }
    }

    fn with_head(mut self, head: Option<u64>) -> Self {
        if let Some(head) = head {
            let behind = head.saturating_sub(self.position);
            self.lag_events = Some(behind);
            self.lag_seconds = Some(match self.last_event_time {
                Some(time) if behind > 0 => {
                    ((Utc::now() - time).num_milliseconds().max(0) as f64) / 1000.0
                }
                _ => 0.0,
            });
        }
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("reading projection generations failed")]
    Database(#[from] sqlx::Error),
    #[error("reading the stream head failed")]
    Stream(#[from] EventLogError),
}

/// Every generation whose schema still exists (building, live, and retired ones not dropped
/// yet), by name and generation, with lag against the stream head when `log` is given (a head
/// that cannot be read leaves lag unknown).
///
/// # Errors
/// When the generations cannot be read.
pub async fn status(
    pool: &PgPool,
    log: Option<&EventLog>,
) -> Result<Vec<ProjectionStatus>, StatusError> {
    read_status(pool, log).await
}

pub(crate) async fn read_status(
    pool: &PgPool,
    log: Option<&EventLog>,
) -> Result<Vec<ProjectionStatus>, StatusError> {
    let head = match log {
        Some(log) => log.stream_head().await.ok(),
        None => None,
    };
    let rows = sqlx::query(
        "SELECT name, generation, version, state, position, status, last_error, updated_at, \
         last_event_time, \
         EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.objsubid = 1 \
           AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended( \
             'funnel.projection.' || g.name || '.g' || g.generation, 0)) AS active \
         FROM projection_generations g WHERE g.dropped_at IS NULL ORDER BY name, generation",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(ProjectionStatus {
                name: row.try_get("name")?,
                generation: row.try_get("generation")?,
                version: u32::try_from(row.try_get::<i32, _>("version")?).unwrap_or(0),
                state: row.try_get("state")?,
                position: u64::try_from(row.try_get::<i64, _>("position")?).unwrap_or(0),
                status: row.try_get("status")?,
                last_error: row.try_get("last_error")?,
                updated_at: row.try_get("updated_at")?,
                last_event_time: row.try_get("last_event_time")?,
                lag_events: None,
                lag_seconds: None,
                active: row.try_get("active")?,
            }
            .with_head(head))
        })
        .collect()
}
