//! PostgreSQL: the connection pool and the schema, whose migrations live in `migrations/` at the
//! workspace root and are embedded into the binary.

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// Every migration of the service, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("could not create database")]
    Create(#[source] sqlx::Error),
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    #[error("could not apply migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Pool settings; the URL is a secret (it may hold a password) and is never logged.
#[derive(Clone)]
pub struct DbSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSettings")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl DbSettings {
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }

    fn options(&self) -> Result<PgConnectOptions, DbError> {
        self.url.parse().map_err(DbError::InvalidUrl)
    }
}

/// Creates the database named in the URL when it does not exist yet.
#[tracing::instrument(skip_all)]
pub async fn ensure_database(settings: &DbSettings) -> Result<(), DbError> {
    if !Postgres::database_exists(&settings.url)
        .await
        .map_err(DbError::Create)?
    {
        tracing::info!("creating database");
        Postgres::create_database(&settings.url)
            .await
            .map_err(DbError::Create)?;
    }
    Ok(())
}

/// A pool that connects lazily, so the service can start (and report not-ready) while
/// PostgreSQL is down.
pub fn connect_lazy(settings: &DbSettings) -> Result<PgPool, DbError> {
    Ok(pool_options(settings).connect_lazy_with(settings.options()?))
}

/// A pool with one connection already established: fails fast when PostgreSQL is unreachable.
#[tracing::instrument(skip_all)]
pub async fn connect(settings: &DbSettings) -> Result<PgPool, DbError> {
    pool_options(settings)
        .connect_with(settings.options()?)
        .await
        .map_err(DbError::Connect)
}

fn pool_options(settings: &DbSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
}

/// Applies every pending migration.
#[tracing::instrument(skip_all)]
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
}
