//! The benchmarks' scratch streams and databases, deleted at the end of a run whether it
//! succeeded or not.

use anyhow::Context as _;
use funnel_db::DbSettings;
use funnel_eventlog::{EventLog, EventLogSettings};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool};
use uuid::Uuid;

/// Runs a benchmark until it ends or Ctrl-C / SIGTERM arrives. On a signal the run is dropped
/// (a child it started is killed with it) so that the caller can still delete its scratch
/// streams and databases. The run is boxed: a benchmark's future is tens of kilobytes.
pub(super) fn until_interrupted<T>(
    run: impl Future<Output = anyhow::Result<T>>,
) -> impl Future<Output = anyhow::Result<T>> {
    let run = Box::pin(run);
    async move {
        tokio::select! {
            result = run => result,
            () = crate::cli::shutdown_signal() => {
                anyhow::bail!(
                    "interrupted; the benchmark's scratch streams and databases are deleted"
                )
            }
        }
    }
}

/// Every stream and database a benchmark created.
#[derive(Default)]
pub(super) struct Scratch {
    /// (NATS URL, stream name)
    pub(super) streams: Vec<(String, String)>,
    pub(super) databases: Vec<String>,
}

impl Scratch {
    /// A new database beside the one `admin_url` names.
    pub(super) async fn database(&mut self, admin_url: &str) -> anyhow::Result<DbSettings> {
        let name = format!("funnel_bench_{}", Uuid::new_v4().simple());
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        let settings = DbSettings::new(format!("{base}/{name}"));
        self.databases.push(name);
        funnel_db::ensure_database(&settings).await?;
        Ok(settings)
    }

    /// A new, migrated database beside the one `admin_url` names, with a pool of 8.
    pub(super) async fn migrated_pool(&mut self, admin_url: &str) -> anyhow::Result<PgPool> {
        let mut settings = self.database(admin_url).await?;
        settings.max_connections = 8;
        let pool = funnel_db::connect(&settings).await?;
        funnel_db::migrate(&pool).await?;
        Ok(pool)
    }

    /// A stream name (upper case) and subject prefix (lower case) of its own.
    pub(super) fn stream(&mut self, url: &str, tag: &str) -> (String, String) {
        let name = format!("BENCH_{tag}_{}", Uuid::new_v4().simple()).to_uppercase();
        self.streams.push((url.to_owned(), name.clone()));
        let prefix = name.to_lowercase();
        (name, prefix)
    }

    /// A fresh stream of its own, provisioned exactly like the service's.
    pub(super) async fn event_log(&mut self, url: &str, tag: &str) -> anyhow::Result<EventLog> {
        let (name, prefix) = self.stream(url, tag);
        let log = EventLog::connect(EventLogSettings::new(url, name, prefix)).await?;
        log.provision().await?;
        Ok(log)
    }

    /// Deletes the streams and databases; a failure is reported and the rest goes on.
    pub(super) async fn cleanup(self, admin_url: &str) {
        for (url, name) in self.streams {
            let deleted = match async_nats::connect(url.as_str()).await {
                Ok(client) => async_nats::jetstream::new(client)
                    .delete_stream(&name)
                    .await
                    .map(|_| ())
                    .map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = deleted
                && !err.contains("not found")
            {
                tracing::warn!(stream = %name, %err, "cannot delete a benchmark stream");
            }
        }
        if self.databases.is_empty() {
            return;
        }
        let pool = match admin_pool(admin_url).await {
            Ok(pool) => pool,
            Err(err) => {
                tracing::warn!(%err, "cannot drop the benchmark databases");
                return;
            }
        };
        for name in self.databases {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&pool).await {
                tracing::warn!(database = %name, %err, "cannot drop a benchmark database");
            }
        }
        pool.close().await;
    }
}

/// One connection to `url`, statements not logged.
pub(super) async fn admin_pool(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(url.parse::<PgConnectOptions>()?.disable_statement_logging())
        .await
        .context("connecting to PostgreSQL")
}
