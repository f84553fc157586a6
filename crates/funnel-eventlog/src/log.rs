use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::Stream;

use crate::append::{Appended, ExpectedVersion, PreparedAppend, commit_alone};
use crate::batcher::{GroupCommitStats, GroupCommitter, StatsCounters};
use crate::error::{AppendError, EventLogError, ReadError};
use crate::event::{NewEvent, RecordedEvent};
use crate::key::StreamKey;
use crate::metrics::AppendMetrics;
use crate::provision::{ProvisionReport, StreamSummary};
use crate::settings::{EventLogSettings, redact_url};
use crate::version::{ServerCapabilities, ServerVersion};
use crate::{provision, read};

/// What the append, read and batch paths share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) stream: jetstream::stream::Stream<()>,
    pub(crate) settings: EventLogSettings,
    pub(crate) capabilities: ServerCapabilities,
    pub(crate) stats: StatsCounters,
    /// Bounds the atomic batches sent outside group commit (a multi-event append on its own,
    /// or the members of a refused batch): the server refuses more than 50 in flight per
    /// stream (10210), and the group-commit task keeps its own slots beside these.
    pub(crate) lone_batch_slots: tokio::sync::Semaphore,
    closed: AtomicBool,
}

/// Atomic batches one instance sends outside group commit at once. With the group-commit
/// task's own (8 by default) this stays well under the server's 50 per stream, even with two
/// instances.
const LONE_BATCHES_IN_FLIGHT: usize = 16;

/// The event log: cheap to clone, all clones share one connection and one group-commit task.
#[derive(Clone, Debug)]
pub struct EventLog {
    shared: Arc<Shared>,
    group_commit: Option<Arc<GroupCommitter>>,
    /// Set once by [`EventLog::register_metrics`]; shared by every clone.
    metrics: Arc<OnceLock<AppendMetrics>>,
}

impl EventLog {
    /// Connects, refuses servers older than 2.11 or without JetStream, and starts group commit
    /// when it is enabled and the server has atomic batches (2.12+). Does not touch the stream:
    /// call [`EventLog::provision`] for that.
    #[tracing::instrument(skip_all, fields(url = %redact_url(&settings.url), stream = %settings.stream_name))]
    pub async fn connect(settings: EventLogSettings) -> Result<Self, EventLogError> {
        settings.validate()?;
        let connect_error = |source| EventLogError::Connect {
            url: redact_url(&settings.url),
            source,
        };
        let addresses = settings
            .url
            .split(',')
            .map(|url| url.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| EventLogError::InvalidSettings(format!("bad NATS URL: {err}")))?;
        let client = async_nats::ConnectOptions::new()
            .name("funnel-eventlog")
            .connection_timeout(Duration::from_secs(5))
            .connect(addresses)
            .await
            .map_err(connect_error)?;
        let server = client.server_info();
        let capabilities = ServerVersion::capabilities(&server.version)?;
        if !server.jetstream {
            return Err(EventLogError::JetStreamDisabled);
        }
        tracing::info!(
            version = %capabilities.version,
            atomic_batch_publish = capabilities.atomic_batch_publish,
            "connected to nats-server"
        );
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(settings.ack_timeout)
            .build(client.clone());
        let stream = jetstream
            .get_stream_no_info(&settings.stream_name)
            .await
            .map_err(|err| EventLogError::InvalidSettings(err.to_string()))?;
        let group_commit_on = settings.group_commit.enabled && capabilities.atomic_batch_publish;
        let shared = Arc::new(Shared {
            client,
            jetstream,
            stream,
            settings,
            capabilities,
            stats: StatsCounters::default(),
            lone_batch_slots: tokio::sync::Semaphore::new(LONE_BATCHES_IN_FLIGHT),
            closed: AtomicBool::new(false),
        });
        let group_commit =
            group_commit_on.then(|| Arc::new(GroupCommitter::start(Arc::clone(&shared))));
        Ok(Self {
            shared,
            group_commit,
            metrics: Arc::new(OnceLock::new()),
        })
    }

    /// Registers the event log's metrics on `registry` (for every clone of this log):
    /// `funnel_eventlog_appends_total{outcome}`, `funnel_eventlog_append_duration_seconds{outcome}`,
    /// `funnel_eventlog_events_appended_total` and `funnel_nats_connected`. Fails with
    /// [`prometheus::Error::AlreadyReg`] when called twice.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        if self.metrics.get().is_some() {
            return Err(prometheus::Error::AlreadyReg);
        }
        let metrics = AppendMetrics::register(registry, self.shared.client.clone())?;
        self.metrics
            .set(metrics)
            .map_err(|_| prometheus::Error::AlreadyReg)
    }

    /// Creates the stream, or brings an existing one to the wanted configuration and reports
    /// what changed. Safe to run at every start-up, and by several instances at once.
    pub async fn provision(&self) -> Result<ProvisionReport, EventLogError> {
        provision::provision(&self.shared).await
    }

    /// The stream's configuration and state.
    pub async fn inspect(&self) -> Result<StreamSummary, EventLogError> {
        provision::inspect(&self.shared).await
    }

    /// The stream's last sequence (0 when empty), to compute a subscriber's lag.
    pub async fn stream_head(&self) -> Result<u64, EventLogError> {
        provision::stream_head(&self.shared).await
    }

    #[must_use]
    pub fn capabilities(&self) -> ServerCapabilities {
        self.shared.capabilities
    }

    #[must_use]
    pub fn settings(&self) -> &EventLogSettings {
        &self.shared.settings
    }

    /// Whether appends are gathered into atomic batches.
    #[must_use]
    pub fn group_commit_active(&self) -> bool {
        self.group_commit.is_some()
    }

    #[must_use]
    pub fn stats(&self) -> GroupCommitStats {
        self.shared.stats.snapshot()
    }

    /// The NATS subject of an aggregate.
    #[must_use]
    pub fn subject_of(&self, key: &StreamKey) -> String {
        key.subject(&self.shared.settings.subject_prefix)
    }

    /// Appends `events` to the aggregate atomically if its last sequence is still `expected`.
    ///
    /// Returns once the server has acknowledged (durably, with `sync_interval: always`). On
    /// [`AppendError::Unavailable`], or if this future is dropped, the outcome is unknown;
    /// appending the same events (same ids) again is safe: a stored event is recognised, not
    /// stored twice (with `ExpectedVersion::Any`, only within the duplicate window).
    #[tracing::instrument(skip_all, fields(aggregate = %key, events = events.len(), expected = %expected))]
    pub async fn append(
        &self,
        key: &StreamKey,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, AppendError> {
        let started = Instant::now();
        let count = events.len();
        let result = self.append_unmeasured(key, expected, events).await;
        if let Some(metrics) = self.metrics.get() {
            metrics.record(count, started.elapsed(), result.as_ref().map(|_| ()));
        }
        result
    }

    async fn append_unmeasured(
        &self,
        key: &StreamKey,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, AppendError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(AppendError::ShutDown);
        }
        let append = PreparedAppend::new(&self.shared, key, expected, events)?;
        match &self.group_commit {
            Some(group_commit) => group_commit.submit(append).await,
            None => commit_alone(&self.shared, &append).await,
        }
    }

    /// All events of one aggregate, in order.
    pub async fn read(&self, key: &StreamKey) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_from(key, 0).await
    }

    /// The aggregate's events after stream sequence `after_seq` (e.g. after a snapshot).
    pub async fn read_from(
        &self,
        key: &StreamKey,
        after_seq: u64,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        read::read_subject(&self.shared, &self.subject_of(key), after_seq).await
    }

    /// The aggregate's version: the stream sequence of its last event, `None` if it has none.
    pub async fn last_sequence(&self, key: &StreamKey) -> Result<Option<u64>, ReadError> {
        read::last_sequence(&self.shared, &self.subject_of(key)).await
    }

    /// Every event from stream sequence `from_seq` on (0: from the start), in stream order,
    /// live after catching up. Backed by an ephemeral ordered consumer the server removes
    /// once the stream is dropped.
    pub async fn subscribe(
        &self,
        from_seq: u64,
    ) -> Result<impl Stream<Item = Result<RecordedEvent, ReadError>> + Send + 'static, ReadError>
    {
        read::subscribe(&self.shared, from_seq).await
    }

    /// Stops taking appends, commits the ones already queued, waits for every batch in flight
    /// and flushes the connection. Later appends fail with [`AppendError::ShutDown`].
    pub async fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(group_commit) = &self.group_commit {
            group_commit.shutdown().await;
        }
        if let Err(err) = self.shared.client.flush().await {
            tracing::warn!(%err, "flushing the NATS connection at shutdown failed");
        }
    }
}
