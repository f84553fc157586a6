//! What a read model implements, and what it is given.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use funnel_domain::DomainEvent;
use funnel_eventlog::StreamKey;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// One decoded event of the stream, as a projection sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectedEvent {
    /// The stream sequence (the projection's position once applied).
    pub seq: u64,
    /// The aggregate (`journey` or `study` and its id) the event belongs to.
    pub key: StreamKey,
    /// The event id (`ce-id`).
    pub id: Uuid,
    /// The CloudEvents time.
    pub time: DateTime<Utc>,
    /// The event, upcast to its current shape.
    pub event: DomainEvent,
}

impl ProjectedEvent {
    /// Decodes a stored event (upcast to its current shape), as the runtime does before
    /// `apply`: for folds in tests and tools that compare a read model with the stream.
    ///
    /// # Errors
    /// When the payload is not JSON or not a known event.
    pub fn decode(event: &funnel_eventlog::RecordedEvent) -> Result<Self, ProjectionError> {
        crate::runtime::decode(event)
    }
}

/// The aggregates (stream key ids) of `events`, each once, in order of first appearance: what
/// a batch apply loads in one query.
pub(crate) fn distinct_aggregates(events: &[ProjectedEvent]) -> Vec<Uuid> {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    events
        .iter()
        .map(|event| event.key.id())
        .filter(|id| seen.insert(*id))
        .collect()
}

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A PostgreSQL error. Connection-level failures are retried ([`Self::is_transient`]);
    /// anything else stops the projection.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The stored event's payload is not JSON.
    #[error("event {seq} (`{event_type}`): the payload is not JSON")]
    Payload {
        seq: u64,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    /// The stored event does not decode into a domain event.
    #[error("event {seq} (`{event_type}`) cannot be decoded")]
    Decode {
        seq: u64,
        event_type: String,
        #[source]
        source: funnel_domain::DecodeError,
    },
    /// The projection found the event inconsistent with what it already knows.
    #[error("{0}")]
    Invalid(String),
}

impl ProjectionError {
    /// Whether retrying later can succeed: a lost connection, a pool timeout, a server shutting
    /// down, a serialization failure or deadlock. Anything else is a property of the event or of
    /// the projection's logic and stops the projection.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(error) => is_transient_sqlx(error),
            _ => false,
        }
    }
}

pub(crate) fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception, 57P0x: operator intervention (shutdown), 40001:
            // serialization failure, 40P01: deadlock, 53: insufficient resources.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// A read model built from the stream.
///
/// The runtime calls [`Projection::apply_batch`] with each batch of events, in stream order,
/// inside a transaction that also stores the projection's new position; the transaction
/// commits once per batch. When the batch fails for good, the runtime rolls it back and
/// applies the same events one by one with [`Projection::apply`] to find the event that
/// fails: the events before it are committed. Both must only write through `tx`, must be
/// deterministic (after a transient failure the batch is rolled back and applied again), and
/// must leave the same rows as each other.
pub trait Projection: Send + Sync + 'static {
    /// A stable name, e.g. `study_funnel`: the checkpoint's key and the metrics' label.
    fn name(&self) -> &'static str;

    /// The logic version: bump it when what `apply` writes changes, so that the new version is
    /// built from the start of the stream (in tables of its own) instead of continuing the old.
    fn version(&self) -> u32;

    /// The DDL creating the read model's tables (and indexes), with unqualified names. It runs
    /// once per generation, in a new empty schema of that generation (`search_path` set to
    /// it), so a rebuild fills fresh tables beside the live ones. Keep it in a `.sql` file
    /// under `sql/` and `include_str!` it.
    fn schema(&self) -> &'static str;

    /// Applies one event. Events the projection does not care about return `Ok(())`.
    /// `search_path` is set to the generation's schema: use unqualified table names.
    fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &ProjectedEvent,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Applies a batch of events, in order, with the same effect as [`Projection::apply`] on
    /// each. The default does exactly that; a read model overrides it to read and write the
    /// rows a batch touches with a few statements instead of a few per event.
    fn apply_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[ProjectedEvent],
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send {
        async move {
            for event in events {
                self.apply(tx, event).await?;
            }
            Ok(())
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`Projection`] the runtime keeps in a list.
pub(crate) trait DynProjection: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn version(&self) -> u32;
    fn schema(&self) -> &'static str;
    fn apply_boxed<'a, 'c>(
        &'a self,
        tx: &'a mut Transaction<'c, Postgres>,
        event: &'a ProjectedEvent,
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
    fn apply_batch_boxed<'a, 'c>(
        &'a self,
        tx: &'a mut Transaction<'c, Postgres>,
        events: &'a [ProjectedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

impl<P: Projection> DynProjection for P {
    fn name(&self) -> &'static str {
        Projection::name(self)
    }

    fn version(&self) -> u32 {
        Projection::version(self)
    }

    fn schema(&self) -> &'static str {
        Projection::schema(self)
    }

    fn apply_boxed<'a, 'c>(
        &'a self,
        tx: &'a mut Transaction<'c, Postgres>,
        event: &'a ProjectedEvent,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(self.apply(tx, event))
    }

    fn apply_batch_boxed<'a, 'c>(
        &'a self,
        tx: &'a mut Transaction<'c, Postgres>,
        events: &'a [ProjectedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(self.apply_batch(tx, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_transient_and_logic_errors_are_not() {
        assert!(ProjectionError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(
            ProjectionError::Database(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset
            )))
            .is_transient()
        );
        assert!(!ProjectionError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!ProjectionError::Invalid("bad".into()).is_transient());
    }
}
