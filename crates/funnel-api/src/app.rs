use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use funnel_db::DbSettings;
use funnel_eventlog::{EventLog, EventLogError, EventLogSettings};
use prometheus::Registry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::commands::CommandService;
use crate::metrics::HttpMetrics;
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
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

impl ServiceSettings {
    #[must_use]
    pub const fn new(http_addr: SocketAddr, db: DbSettings, eventlog: EventLogSettings) -> Self {
        Self {
            http_addr,
            db,
            eventlog,
            setup: true,
            max_body_bytes: 2 * 1024 * 1024,
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
}

/// A built, bound, not yet serving service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    commands: CommandService,
}

impl Application {
    /// Connects to NATS (refusing a server older than 2.11) and PostgreSQL, optionally applies
    /// migrations and provisions the stream, and binds the listener.
    pub async fn build(settings: ServiceSettings, registry: Registry) -> Result<Self, ServeError> {
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
        let http_metrics = HttpMetrics::register(&registry)?;
        let state = AppState {
            db,
            events,
            registry,
        };
        let commands = CommandService::new(state.events.clone());
        let router = routes::router(state.clone(), http_metrics)
            .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
            .layer(TraceLayer::new_for_http());
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
            commands,
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
        &self.commands
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish,
    /// and commits every append already queued in the event log.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.local_addr();
        tracing::info!(%addr, "serving HTTP");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve);
        tracing::info!("HTTP stopped; draining the event log");
        self.state.events.shutdown().await;
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

/// How long a readiness probe waits for each dependency.
pub(crate) const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
