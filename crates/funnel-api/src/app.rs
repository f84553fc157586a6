use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use funnel_db::DbSettings;
use funnel_eventlog::{EventLog, EventLogError, EventLogSettings};
use funnel_privacy::KeyStore;
use funnel_projections::{Projector, ProjectorSettings, ReadModels};
use prometheus::Registry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::auth::TokenStore;
use crate::clock::{Clock, SystemClock};
use crate::commands::CommandService;
use crate::metrics::HttpMetrics;
use crate::problem::ApiError;
use crate::queue::{QueueMetrics, QueueService, QueueSettings};
use crate::rate_limit::RateLimits;
use crate::routes;

/// Everything the service needs to run. Secrets (database and NATS URLs) are redacted in `Debug`.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// Where to listen; port 0 picks a free port (tests).
    pub http_addr: SocketAddr,
    pub db: DbSettings,
    pub eventlog: EventLogSettings,
    /// Apply migrations and provision the stream at start-up (both idempotent).
    pub setup: bool,
    /// Largest request body accepted (a batch of 1,000 referrals fits).
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered with 504.
    pub request_timeout: Duration,
    /// Sustained requests per second per API token, and the burst above it.
    pub rate_limit_per_second: NonZeroU32,
    pub rate_limit_burst: NonZeroU32,
    /// Run the projectors that build the read models in this process. Several instances may
    /// all run them: one instance at a time applies each read model's events.
    pub run_projections: bool,
    pub projector: ProjectorSettings,
    /// Work-queue leases, gauges and completion history.
    pub queue: QueueSettings,
    /// How long shutdown waits, after HTTP has stopped, for the projections' batches in flight
    /// and the event log's queued appends. With NATS or PostgreSQL down they may never finish;
    /// the process then stops anyway (an append never acknowledged was never reported as done).
    pub shutdown_grace: Duration,
}

impl ServiceSettings {
    #[must_use]
    pub fn new(http_addr: SocketAddr, db: DbSettings, eventlog: EventLogSettings) -> Self {
        Self {
            http_addr,
            db,
            eventlog,
            setup: true,
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            rate_limit_per_second: NonZeroU32::new(1_000).expect("non-zero"),
            rate_limit_burst: NonZeroU32::new(2_000).expect("non-zero"),
            run_projections: true,
            projector: ProjectorSettings::default(),
            queue: QueueSettings::default(),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind the HTTP listener to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] funnel_db::DbError),
    #[error(transparent)]
    EventLog(#[from] EventLogError),
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Shared by every request handler; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) db: PgPool,
    pub(crate) events: EventLog,
    pub(crate) registry: Registry,
    pub(crate) commands: CommandService,
    pub(crate) keys: KeyStore,
    pub(crate) tokens: TokenStore,
    pub(crate) rate_limits: RateLimits,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) fingerprints: crate::ingest::Fingerprinter,
    pub(crate) referrals: crate::ingest::ReferralStore,
    pub(crate) studies: crate::ingest::StudyCache,
    pub(crate) read_models: ReadModels,
    pub(crate) queue: QueueService,
}

/// A built, bound, not yet serving service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    projector: Option<Projector>,
    queue_metrics: QueueMetrics,
    shutdown_grace: Duration,
}

impl Application {
    /// Connects to NATS (refusing a server older than 2.11) and PostgreSQL, optionally applies
    /// migrations and provisions the stream, and binds the listener.
    pub async fn build(settings: ServiceSettings, registry: Registry) -> Result<Self, ServeError> {
        Self::build_with_clock(settings, registry, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with a clock of the caller's (tests move time with it).
    pub async fn build_with_clock(
        settings: ServiceSettings,
        registry: Registry,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServeError> {
        let db = if settings.setup {
            funnel_db::ensure_database(&settings.db).await?;
            let pool = funnel_db::connect(&settings.db).await?;
            funnel_db::migrate(&pool).await?;
            pool
        } else {
            funnel_db::connect_lazy(&settings.db)?
        };
        let events = EventLog::connect(settings.eventlog.clone()).await?;
        if settings.setup {
            let report = events.provision().await?;
            tracing::info!(stream = %report.stream, action = ?report.action, changes = ?report.changes, "stream provisioned");
        }
        events.register_metrics(&registry)?;
        let http_metrics = HttpMetrics::register(&registry)?;
        let queue_metrics = QueueMetrics::register(&registry)?;
        let projector = if settings.run_projections {
            Some(
                Projector::new(
                    events.clone(),
                    db.clone(),
                    &registry,
                    settings.projector.clone(),
                )?
                .with_read_models(),
            )
        } else {
            None
        };
        let state = AppState {
            commands: CommandService::new(events.clone()),
            keys: KeyStore::new(db.clone()),
            fingerprints: crate::ingest::Fingerprinter::new(db.clone()),
            referrals: crate::ingest::ReferralStore::start(&db),
            studies: crate::ingest::StudyCache::default(),
            read_models: ReadModels::new(db.clone()),
            queue: QueueService::new(
                ReadModels::new(db.clone()),
                db.clone(),
                settings.queue.clone(),
            ),
            tokens: TokenStore::new(db.clone()),
            rate_limits: RateLimits::new(settings.rate_limit_per_second, settings.rate_limit_burst),
            clock,
            db,
            events,
            registry,
        };
        let router = routes::router(state.clone(), http_metrics)
            .layer(axum::extract::DefaultBodyLimit::max(
                settings.max_body_bytes,
            ))
            .layer(TraceLayer::new_for_http())
            .layer(axum::middleware::from_fn_with_state(
                settings.request_timeout,
                limit_duration,
            ));
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: settings.http_addr,
                source,
            })?;
        Ok(Self {
            listener,
            router,
            state,
            projector,
            queue_metrics,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// The address actually bound (the port is real when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has a local address")
    }

    /// The command side, for callers in the same process (the CLI's tools, tests).
    #[must_use]
    pub fn commands(&self) -> &CommandService {
        &self.state.commands
    }

    /// The API token store, for the CLI's `token` commands and tests.
    #[must_use]
    pub fn tokens(&self) -> &TokenStore {
        &self.state.tokens
    }

    /// The projector this instance runs (none when `run_projections` is off).
    #[must_use]
    pub fn projector(&self) -> Option<&Projector> {
        self.projector.as_ref()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish,
    /// lets each projection commit the batch in flight, and commits every append already
    /// queued in the event log.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.local_addr();
        let stop = CancellationToken::new();
        let projector = self
            .projector
            .map(|projector| tokio::spawn(projector.run(stop.clone().cancelled_owned())));
        let queue_upkeep = tokio::spawn(crate::queue::maintenance::run(
            self.state.queue.clone(),
            self.state.db.clone(),
            self.state.clock.clone(),
            self.queue_metrics,
            stop.clone(),
        ));
        tracing::info!(%addr, "serving HTTP");
        let http_stop = stop.clone();
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                http_stop.cancel();
            })
            .await
            .map_err(ServeError::Serve);
        stop.cancel();
        let events = self.state.events.clone();
        let drain = async move {
            if let Some(task) = projector {
                tracing::info!("HTTP stopped; finishing the projections' batches in flight");
                if let Err(error) = task.await {
                    tracing::error!(error = %error, "the projector task panicked");
                }
            }
            if let Err(error) = queue_upkeep.await {
                tracing::error!(error = %error, "the work-queue upkeep task panicked");
            }
            tracing::info!("draining the event log");
            events.shutdown().await;
        };
        if tokio::time::timeout(self.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.shutdown_grace,
                "stopping without finishing the drain (is NATS or PostgreSQL down?): a batch not \
                 committed is applied again at the next start, an append never acknowledged was \
                 never reported as done"
            );
        }
        self.state.db.close().await;
        tracing::info!("stopped");
        served
    }
}

/// Builds and runs the service until `shutdown` resolves.
pub async fn run(
    settings: ServiceSettings,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Application::build(settings, registry)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// Answers 504 when a request outlives its budget. The handler future is dropped then, which is
/// safe: appends are idempotent by event id and a caller may retry.
async fn limit_duration(
    axum::extract::State(budget): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::Timeout),
    }
}

/// How long a readiness probe waits for each dependency.
pub(crate) const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
