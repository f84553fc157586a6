//! The projector runtime: one task per projection, each holding its advisory lock, reading the
//! stream from its checkpoint and applying batches in one transaction with the new position.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use funnel_eventlog::{EventLog, ReadError, RecordedEvent};
use futures::StreamExt;
use prometheus::Registry;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::generation::{self, Generation, GenerationError, GenerationState};
use crate::metrics::Metrics;
use crate::projection::{DynProjection, ProjectedEvent, Projection, ProjectionError};
use crate::status::{ProjectionStatus, StatusError, read_status};

/// [`ProjectorSettings::max_batch_events`] unless configured otherwise.
pub const DEFAULT_MAX_BATCH_EVENTS: std::num::NonZeroUsize =
    std::num::NonZeroUsize::new(5000).expect("not zero");

/// How the runtime batches, polls and backs off.
#[derive(Clone, Debug)]
pub struct ProjectorSettings {
    /// Most events applied in one transaction. A projection far behind (a rebuild, a restart
    /// after a pause) fills whole batches; a live one applies whatever arrived within
    /// `batch_linger`, so a large maximum costs nothing in lag.
    pub max_batch_events: usize,
    /// After the first event of a batch arrives, how long to wait for more before applying.
    pub batch_linger: Duration,
    /// How often an instance that does not hold a projection's lock tries to take it.
    pub lock_poll: Duration,
    /// First pause after a transient failure; doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How often lag metrics are refreshed while no events arrive.
    pub lag_refresh: Duration,
    /// A subscription that delivers nothing for this long while the stream head is ahead of
    /// the position counts as stalled (e.g. after a nats-server restart) and is replaced.
    pub stall_timeout: Duration,
    /// How long a retired generation's schema is kept after readers switched away from it:
    /// a query that started on it just before the switch has this long to finish.
    pub retired_grace: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS.get(),
            batch_linger: Duration::from_millis(5),
            lock_poll: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            lag_refresh: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(5),
            retired_grace: Duration::from_secs(60),
        }
    }
}

/// Runs projections against the stream. See the crate documentation for the guarantees.
pub struct Projector {
    log: EventLog,
    pool: PgPool,
    projections: Vec<Arc<dyn DynProjection>>,
    metrics: Metrics,
    settings: ProjectorSettings,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field(
                "projections",
                &self
                    .projections
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A transient failure: the projection is restarted from its stored position after a pause.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("PostgreSQL")]
    Database(#[from] sqlx::Error),
    #[error("reading the stream")]
    Stream(#[from] ReadError),
    #[error("the stream subscription ended")]
    SubscriptionEnded,
    #[error(
        "the stream subscription delivered nothing for {0:?} although the stream head is at {1}"
    )]
    Stalled(Duration, u64),
    #[error("the checkpoint is no longer at {expected}: another instance applied events")]
    CheckpointMoved { expected: u64 },
    #[error("applying an event")]
    Apply(#[source] ProjectionError),
    #[error("the generation was retired: readers switched to a newer one")]
    Retired,
}

/// Why a batch stopped before its end, for good.
struct EventFailure {
    seq: u64,
    error: Box<dyn StdError + Send + Sync>,
}

enum Exit {
    Shutdown,
    /// Readers switched to a newer generation: this one is done.
    Retired,
}

/// What the read-ahead task hands the applier, in stream order.
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every delivery is an event; boxing it would allocate once per event"
)]
enum Delivery {
    Event(ProjectedEvent),
    /// The projection stops at this event for good (malformed or not decodable); nothing
    /// follows it.
    Failure(EventFailure),
    /// The subscription failed or ended; the runtime starts over from its checkpoint.
    Lost(RunError),
}

/// The read-ahead task, stopped when the applier lets go of it (on any exit of the loop).
struct ReadAhead(tokio::task::JoinHandle<()>);

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the stream after `position`, decodes each event and sends it on until the applier
/// is gone or the stream stops (a failure for good or a lost subscription ends the task).
async fn read_ahead(
    events: impl futures::Stream<Item = Result<RecordedEvent, ReadError>> + Send,
    mut position: u64,
    deliveries: tokio::sync::mpsc::Sender<Delivery>,
) {
    let mut events = std::pin::pin!(events);
    loop {
        let delivery = match events.next().await {
            // Redeliveries after a reconnect are skipped by position.
            Some(Ok(event)) if event.seq <= position => continue,
            Some(Ok(event)) => {
                position = event.seq;
                match decode(&event) {
                    Ok(projected) => Delivery::Event(projected),
                    Err(error) => Delivery::Failure(EventFailure {
                        seq: event.seq,
                        error: Box::new(error),
                    }),
                }
            }
            Some(Err(ReadError::Malformed {
                seq,
                subject,
                reason,
            })) => Delivery::Failure(EventFailure {
                seq,
                error: format!("message {seq} on {subject} is malformed: {reason}").into(),
            }),
            Some(Err(error)) => Delivery::Lost(RunError::Stream(error)),
            None => Delivery::Lost(RunError::SubscriptionEnded),
        };
        let more = matches!(delivery, Delivery::Event(_));
        if deliveries.send(delivery).await.is_err() || !more {
            return;
        }
    }
}

/// The text of an error and all its sources, `outer: inner: innermost`.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Projector {
    /// A runtime over `log` and `pool`, with its metrics registered on `registry`.
    ///
    /// # Errors
    /// When the metrics are already registered on `registry`.
    pub fn new(
        log: EventLog,
        pool: PgPool,
        registry: &Registry,
        settings: ProjectorSettings,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            log,
            pool,
            projections: Vec::new(),
            metrics: Metrics::register(registry)?,
            settings,
        })
    }

    /// Adds every read model the service serves.
    #[must_use]
    pub fn with_read_models(self) -> Self {
        self.with(crate::SponsorDashboard).with(crate::WorkQueue)
    }

    /// Adds a projection. Names must be unique: a second projection with a name already added
    /// replaces the first.
    #[must_use]
    pub fn with<P: Projection>(mut self, projection: P) -> Self {
        let name = Projection::name(&projection);
        self.projections.retain(|p| p.name() != name);
        self.projections.push(Arc::new(projection));
        self
    }

    /// The checkpoints of this runtime's projections (those never started show position 0),
    /// with their lag against the stream head.
    ///
    /// # Errors
    /// When PostgreSQL cannot be read (the stream head is optional: lag is then unknown).
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, StatusError> {
        let rows = read_status(&self.pool, Some(&self.log)).await?;
        let mut result = Vec::new();
        for projection in &self.projections {
            let (name, version) = (projection.name(), projection.version());
            let before = result.len();
            result.extend(rows.iter().filter(|row| row.name == name).cloned());
            if result.len() == before {
                result.push(ProjectionStatus::not_started(name, version));
            }
        }
        Ok(result)
    }

    /// Starts a rebuild of the projection called `name`: a new generation built from position
    /// 1 beside the live one, which becomes live once it has caught up. A running projector
    /// (this one, or any instance's) builds it.
    ///
    /// # Errors
    /// An unknown name, a rebuild already under way, PostgreSQL errors.
    pub async fn start_rebuild(&self, name: &str) -> Result<Generation, GenerationError> {
        let projection = self
            .projections
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| GenerationError::Unknown(name.to_owned()))?;
        generation::start_rebuild(&self.pool, projection.as_ref()).await
    }

    /// The names of this runtime's projections.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    /// Runs every projection until `shutdown` completes, then lets each finish the batch in
    /// flight and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let token = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for projection in &self.projections {
            let supervisor = Supervisor {
                log: self.log.clone(),
                pool: self.pool.clone(),
                projection: Arc::clone(projection),
                metrics: self.metrics.clone(),
                settings: self.settings.clone(),
            };
            tasks.spawn(supervisor.run(token.clone()));
        }
        shutdown.await;
        tracing::info!("projector shutting down");
        token.cancel();
        while let Some(result) = tasks.join_next().await {
            if let Err(error) = result {
                tracing::error!(error = %error, "a projection task panicked");
            }
        }
    }
}

/// Keeps one projection's generations running: creates the first (or, after a logic change,
/// a new) generation, runs a worker per generation of the current version, and drops the
/// schemas of retired ones.
struct Supervisor {
    log: EventLog,
    pool: PgPool,
    projection: Arc<dyn DynProjection>,
    metrics: Metrics,
    settings: ProjectorSettings,
}

impl Supervisor {
    async fn run(self, token: CancellationToken) {
        let name = self.projection.name();
        let mut workers: HashMap<i32, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(self.settings.lock_poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            workers.retain(|_, task| !task.is_finished());
            match generation::ensure(&self.pool, self.projection.as_ref()).await {
                Ok(generations) => {
                    for generation in generations {
                        // A generation of another logic version is not ours to build: an
                        // older one stays readable until ours replaces it, a newer one
                        // belongs to a newer release.
                        if generation.version != self.projection.version()
                            || workers.contains_key(&generation.generation)
                        {
                            continue;
                        }
                        let worker = Worker {
                            log: self.log.clone(),
                            pool: self.pool.clone(),
                            name,
                            version: generation.version,
                            generation_label: generation.generation.to_string(),
                            generation,
                            projection: Arc::clone(&self.projection),
                            metrics: self.metrics.clone(),
                            settings: self.settings.clone(),
                        };
                        let number = worker.generation.generation;
                        workers.insert(number, tokio::spawn(worker.run(token.clone())));
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        projection = name,
                        error = %error_chain(&error),
                        "cannot read or create the projection's generations; retrying"
                    );
                }
            }
            if let Err(error) =
                generation::drop_retired(&self.pool, name, self.settings.retired_grace).await
            {
                tracing::warn!(
                    projection = name,
                    error = %error_chain(&error),
                    "cannot drop a retired generation yet; retrying"
                );
            }
        }
        for (_, task) in workers {
            if let Err(error) = task.await {
                tracing::error!(projection = name, error = %error, "a projection task panicked");
            }
        }
    }
}

struct Worker {
    log: EventLog,
    pool: PgPool,
    name: &'static str,
    version: u32,
    generation: Generation,
    generation_label: String,
    projection: Arc<dyn DynProjection>,
    metrics: Metrics,
    settings: ProjectorSettings,
}

impl Worker {
    async fn run(self, token: CancellationToken) {
        let mut backoff = self.settings.min_backoff;
        loop {
            if token.is_cancelled() {
                return;
            }
            match self.run_once(&token, &mut backoff).await {
                Ok(Exit::Shutdown) => return,
                Ok(Exit::Retired) => {
                    self.metrics.forget(&self.label());
                    return;
                }
                Err(error) => {
                    self.metrics.retries.with_label_values(&[self.name]).inc();
                    tracing::warn!(
                        projection = self.name,
                        generation = self.generation.generation,
                        error = %error_chain(&error),
                        retry_in = ?backoff,
                        "projection interrupted; resuming from its stored position"
                    );
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
            }
        }
    }

    fn label(&self) -> [&str; 2] {
        [self.name, &self.generation_label]
    }

    /// Takes the lock, then applies batches until shutdown or a transient failure.
    async fn run_once(
        &self,
        token: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<Exit, RunError> {
        // A connection of its own, outside the pool: the session lock lives and dies with it,
        // and every transaction of this projection runs on it, so no write can happen after
        // the lock is lost.
        let mut conn = self.pool.acquire().await?.detach();
        let lock_key = generation::lock_key(self.name, self.generation.generation);
        loop {
            let taken: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(&lock_key)
                    .fetch_one(&mut conn)
                    .await?;
            if taken {
                break;
            }
            tokio::select! {
                () = token.cancelled() => {
                    let _ = conn.close().await;
                    return Ok(Exit::Shutdown);
                }
                () = tokio::time::sleep(self.settings.lock_poll) => {}
            }
        }
        tracing::info!(
            projection = self.name,
            generation = self.generation.generation,
            version = self.version,
            "took the generation's lock"
        );
        let result = self.run_locked(&mut conn, token, backoff).await;
        if result.is_ok() {
            // Graceful: closing the session releases the lock at once.
            let _ = conn.close().await;
        }
        result
    }

    async fn run_locked(
        &self,
        conn: &mut PgConnection,
        token: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<Exit, RunError> {
        let row = sqlx::query(
            "SELECT position, status, state, last_event_time FROM projection_generations \
             WHERE name = $1 AND generation = $2",
        )
        .bind(self.name)
        .bind(self.generation.generation)
        .fetch_one(&mut *conn)
        .await?;
        let state: String = row.try_get("state")?;
        if state == GenerationState::Retired.as_str() {
            return Ok(Exit::Retired);
        }
        let mut building = state == GenerationState::Building.as_str();
        let mut position = u64::try_from(row.try_get::<i64, _>("position")?).unwrap_or(0);
        let status: String = row.try_get("status")?;
        let mut last_time: Option<DateTime<Utc>> = row.try_get("last_event_time")?;
        if status == "failed" {
            tracing::warn!(
                projection = self.name,
                version = self.version,
                generation = self.generation.generation,
                position,
                "the projection had failed; trying the event after its position again"
            );
        }
        self.metrics
            .failed
            .with_label_values(&self.label())
            .set(i64::from(status == "failed"));
        self.metrics
            .position
            .with_label_values(&self.label())
            .set(to_i64(position));
        let mut head = self
            .refresh_lag(position, last_time)
            .await
            .unwrap_or(position);

        // Read and decode ahead in a task of its own, so that NATS delivery and JSON decoding
        // overlap the PostgreSQL transaction of the batch before (measured: the projector and
        // PostgreSQL otherwise take turns, and neither core is busy all the time).
        let (deliveries, mut events) =
            tokio::sync::mpsc::channel(self.settings.max_batch_events.max(1) * 2);
        let _reader = ReadAhead(tokio::spawn(read_ahead(
            self.log.subscribe(position + 1).await?,
            position,
            deliveries,
        )));
        let mut tick = tokio::time::interval(self.settings.lag_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_delivery = Instant::now();
        loop {
            // The tick comes before the events so that lag is refreshed under steady load too.
            let first = tokio::select! {
                biased;
                () = token.cancelled() => return Ok(Exit::Shutdown),
                _ = tick.tick() => {
                    if let Some(fresh) = self.refresh_lag(position, last_time).await {
                        head = fresh;
                    }
                    let quiet = last_delivery.elapsed();
                    if head > position && quiet > self.settings.stall_timeout {
                        return Err(RunError::Stalled(quiet, head));
                    }
                    if building {
                        if self.try_switch(conn, position, head).await? {
                            building = false;
                        }
                    } else if self.is_retired(conn).await? {
                        // Replaced while idle: no batch will find out, so look.
                        return Ok(Exit::Retired);
                    }
                    continue;
                }
                next = events.recv() => next,
            };
            let mut batch: Vec<ProjectedEvent> = Vec::new();
            let mut failure: Option<EventFailure> = None;
            let mut stream_error: Option<RunError> = None;
            let mut push = |item: Option<Delivery>, batch: &mut Vec<ProjectedEvent>| -> bool {
                match item {
                    Some(Delivery::Event(event)) => {
                        batch.push(event);
                        true
                    }
                    Some(Delivery::Failure(stop)) => {
                        failure = Some(stop);
                        false
                    }
                    Some(Delivery::Lost(error)) => {
                        stream_error = Some(error);
                        false
                    }
                    None => {
                        stream_error = Some(RunError::SubscriptionEnded);
                        false
                    }
                }
            };
            if push(first, &mut batch) {
                let deadline = Instant::now() + self.settings.batch_linger;
                while batch.len() < self.settings.max_batch_events {
                    // `timeout_at` polls the receive first, so what is already read goes in
                    // even past the deadline; the linger only waits for events still on their
                    // way.
                    let item = match tokio::time::timeout_at(deadline, events.recv()).await {
                        Err(_) => break,
                        Ok(item) => item,
                    };
                    if !push(item, &mut batch) {
                        break;
                    }
                }
            }
            // The batch is applied even when shutdown was asked for meanwhile.
            let (applied, failure) = match self.apply_batch(conn, position, &batch, failure).await {
                Err(RunError::Retired) => return Ok(Exit::Retired),
                other => other?,
            };
            if let Some((last_seq, time)) = applied {
                position = last_seq;
                last_time = Some(time);
                *backoff = self.settings.min_backoff;
                self.metrics
                    .position
                    .with_label_values(&self.label())
                    .set(to_i64(position));
                self.metrics.failed.with_label_values(&self.label()).set(0);
                // Against the head last seen; the tick reads the real head.
                head = head.max(position);
                self.record_lag(head, position, last_time);
                if building && self.try_switch(conn, position, head).await? {
                    building = false;
                }
            }
            if let Some(failure) = failure {
                self.mark_failed(conn, &failure).await?;
                // Stopped for good in this process; the lock stays held so that no other
                // instance starts over on the same event, until shutdown (or this session
                // dies), or until a rebuilt generation replaces this one.
                return self.wait_failed(conn, token).await;
            }
            if let Some(error) = stream_error {
                return Err(error);
            }
            // Quiet time counts from when we are ready for more, not from the batch's start.
            last_delivery = Instant::now();
        }
    }

    /// Applies `batch` after `position`. Returns the new `(position, event time)` if
    /// anything was committed, and the event the projection stopped at, if any: on a failure at
    /// event *n*, events before *n* are committed and nothing from *n* on.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        position: u64,
        batch: &[ProjectedEvent],
        mut failure: Option<EventFailure>,
    ) -> Result<(Option<(u64, DateTime<Utc>)>, Option<EventFailure>), RunError> {
        let mut good = batch;
        loop {
            match self.commit(conn, position, good).await {
                Ok(()) => break,
                Err(CommitError::Run(error)) => return Err(error),
                Err(CommitError::Event { index, error }) => {
                    failure = Some(EventFailure {
                        seq: good[index].seq,
                        error: Box::new(error),
                    });
                    good = &good[..index];
                }
            }
        }
        if !good.is_empty() {
            self.metrics
                .applied
                .with_label_values(&self.label())
                .inc_by(good.len() as u64);
        }
        Ok((good.last().map(|event| (event.seq, event.time)), failure))
    }

    /// Applies `events` and moves the checkpoint from `position` to the last one, in one
    /// transaction: the whole batch at once, or, when the batch fails for good, one event at a
    /// time (in a new transaction) to find the event the projection stops at.
    async fn commit(
        &self,
        conn: &mut PgConnection,
        position: u64,
        events: &[ProjectedEvent],
    ) -> Result<(), CommitError> {
        match self.commit_with(conn, position, events, true).await {
            Err(CommitError::Event { error, .. }) => {
                tracing::debug!(
                    projection = self.name,
                    error = %error_chain(&error),
                    "the batch failed; applying its events one by one to find the one that fails"
                );
                self.commit_with(conn, position, events, false).await
            }
            other => other,
        }
    }

    async fn commit_with(
        &self,
        conn: &mut PgConnection,
        position: u64,
        events: &[ProjectedEvent],
        batched: bool,
    ) -> Result<(), CommitError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let mut tx = conn.begin().await.map_err(RunError::from)?;
        // A plan per execution: the batch statements are prepared once per connection, and a
        // generic plan PostgreSQL settles on while a rebuild's tables are still small would
        // otherwise stay as they grow, making each event dearer the further a rebuild gets
        // (about 5x slower at 1 M events, measured). Planning a few statements per batch costs
        // far less.
        // No wait for the WAL flush at commit: a read model is derived, and its checkpoint is
        // in the same transaction, so a crash that loses the last commits loses them whole and
        // the projector applies those events again from the checkpoint that survived.
        sqlx::query(
            "SELECT set_config('search_path', $1, true), \
             set_config('plan_cache_mode', 'force_custom_plan', true), \
             set_config('synchronous_commit', 'off', true)",
        )
        .bind(&self.generation.schema)
        .execute(&mut *tx)
        .await
        .map_err(RunError::from)?;
        if batched {
            if let Err(error) = self.projection.apply_batch_boxed(&mut tx, events).await {
                // The index is unknown here: `commit` looks for it event by event.
                return Err(if error.is_transient() {
                    CommitError::Run(RunError::Apply(error))
                } else {
                    CommitError::Event { index: 0, error }
                });
            }
        } else {
            for (index, event) in events.iter().enumerate() {
                if let Err(error) = self.projection.apply_boxed(&mut tx, event).await {
                    return Err(if error.is_transient() {
                        CommitError::Run(RunError::Apply(error))
                    } else {
                        CommitError::Event { index, error }
                    });
                }
            }
        }
        // Schema-qualified: the search path is the read model's schema now.
        let moved = sqlx::query(
            "UPDATE public.projection_generations SET position = $3, last_event_time = $4, \
             updated_at = now(), status = 'running', last_error = NULL \
             WHERE name = $1 AND generation = $2 AND position = $5 AND state <> 'retired'",
        )
        .bind(self.name)
        .bind(self.generation.generation)
        .bind(to_i64(last.seq))
        .bind(last.time)
        .bind(to_i64(position))
        .execute(&mut *tx)
        .await
        .map_err(RunError::from)?;
        if moved.rows_affected() != 1 {
            drop(tx);
            return Err(if self.is_retired(conn).await.map_err(RunError::from)? {
                RunError::Retired
            } else {
                RunError::CheckpointMoved { expected: position }
            }
            .into());
        }
        tx.commit().await.map_err(RunError::from)?;
        Ok(())
    }

    async fn mark_failed(
        &self,
        conn: &mut PgConnection,
        failure: &EventFailure,
    ) -> Result<(), RunError> {
        let cause = error_chain(failure.error.as_ref());
        let text = format!("event {}: {cause}", failure.seq);
        // Before the row: whoever sees the stored status finds the gauge already raised (the
        // projection has stopped at this event whether or not recording it succeeds).
        self.metrics.failed.with_label_values(&self.label()).set(1);
        sqlx::query(
            "UPDATE projection_generations SET status = 'failed', last_error = $3, \
             updated_at = now() WHERE name = $1 AND generation = $2",
        )
        .bind(self.name)
        .bind(self.generation.generation)
        .bind(&text)
        .execute(&mut *conn)
        .await?;
        tracing::error!(
            projection = self.name,
            generation = self.generation.generation,
            version = self.version,
            seq = failure.seq,
            error = %cause,
            "projection stopped: it cannot apply this event and will not skip it"
        );
        Ok(())
    }

    async fn is_retired(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let state: String = sqlx::query_scalar(
            "SELECT state FROM projection_generations WHERE name = $1 AND generation = $2",
        )
        .bind(self.name)
        .bind(self.generation.generation)
        .fetch_one(conn)
        .await?;
        Ok(state == GenerationState::Retired.as_str())
    }

    /// A building generation close to the head asks to become live; it does once it is at
    /// least as far as the live one.
    async fn try_switch(
        &self,
        conn: &mut PgConnection,
        position: u64,
        head: u64,
    ) -> Result<bool, RunError> {
        if head.saturating_sub(position) > self.settings.max_batch_events as u64 {
            return Ok(false);
        }
        Ok(generation::try_switch(conn, self.name, self.generation.generation).await?)
    }

    /// After a failure: holds the lock until shutdown, or until a rebuilt generation has
    /// replaced this one (then its schema can go).
    async fn wait_failed(
        &self,
        conn: &mut PgConnection,
        token: &CancellationToken,
    ) -> Result<Exit, RunError> {
        loop {
            tokio::select! {
                () = token.cancelled() => return Ok(Exit::Shutdown),
                () = tokio::time::sleep(self.settings.lock_poll) => {}
            }
            if self.is_retired(conn).await? {
                return Ok(Exit::Retired);
            }
        }
    }

    /// Reads the stream head and updates the lag metrics; returns the head when it could be
    /// read.
    async fn refresh_lag(&self, position: u64, last_time: Option<DateTime<Utc>>) -> Option<u64> {
        match self.log.stream_head().await {
            Ok(head) => {
                self.record_lag(head, position, last_time);
                Some(head)
            }
            Err(error) => {
                tracing::debug!(projection = self.name, error = %error, "no stream head for lag");
                None
            }
        }
    }

    fn record_lag(&self, head: u64, position: u64, last_time: Option<DateTime<Utc>>) {
        let behind = head.saturating_sub(position);
        self.metrics
            .lag_events
            .with_label_values(&self.label())
            .set(to_i64(behind));
        let seconds = match last_time {
            Some(time) if behind > 0 => {
                ((Utc::now() - time).num_milliseconds().max(0) as f64) / 1000.0
            }
            _ => 0.0,
        };
        self.metrics
            .lag_seconds
            .with_label_values(&self.label())
            .set(seconds);
    }
}

enum CommitError {
    Run(RunError),
    Event {
        index: usize,
        error: ProjectionError,
    },
}

impl From<RunError> for CommitError {
    fn from(error: RunError) -> Self {
        Self::Run(error)
    }
}

/// Turns a stored event into what projections see.
pub(crate) fn decode(event: &RecordedEvent) -> Result<ProjectedEvent, ProjectionError> {
    let data = serde_json::from_slice(&event.data).map_err(|source| ProjectionError::Payload {
        seq: event.seq,
        event_type: event.event_type.clone(),
        source,
    })?;
    let decoded = funnel_domain::decode_cloud_event(&event.event_type, data).map_err(|source| {
        ProjectionError::Decode {
            seq: event.seq,
            event_type: event.event_type.clone(),
            source,
        }
    })?;
    Ok(ProjectedEvent {
        seq: event.seq,
        key: event.key.clone(),
        id: event.id,
        time: event.time,
        event: decoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_chain_names_every_cause() {
        let error = ProjectionError::Decode {
            seq: 7,
            event_type: "funnel.journey.teleported.v1".into(),
            source: funnel_domain::DecodeError::UnknownType {
                event_type: "funnel.journey.teleported".into(),
            },
        };
        assert_eq!(
            error_chain(&error),
            "event 7 (`funnel.journey.teleported.v1`) cannot be decoded: \
             unknown event type `funnel.journey.teleported`"
        );
    }
}
