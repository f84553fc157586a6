//! `funnel projections status|rebuild`.

use std::io::Write as _;
use std::time::Duration;

use funnel_db::DbSettings;
use funnel_eventlog::{EventLog, EventLogSettings};
use funnel_projections::{ProjectionStatus, Projector, ProjectorSettings};

use crate::cli::ProjectionsCommand;

pub(crate) async fn run(
    command: ProjectionsCommand,
    db: DbSettings,
    nats: EventLogSettings,
) -> anyhow::Result<()> {
    funnel_db::ensure_database(&db).await?;
    let pool = funnel_db::connect(&db).await?;
    funnel_db::migrate(&pool).await?;
    let log = EventLog::connect(nats).await?;
    let registry = prometheus::Registry::new();
    let projector = Projector::new(
        log.clone(),
        pool.clone(),
        &registry,
        ProjectorSettings::default(),
    )?
    .with_read_models();
    match command {
        ProjectionsCommand::Status => {
            print_status(&projector.status().await?)?;
            Ok(())
        }
        ProjectionsCommand::Rebuild { name, no_wait } => {
            rebuild(projector, &pool, &log, &name, no_wait).await
        }
    }
}

fn print_status(rows: &[ProjectionStatus]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20} {:>4} {:>7} {:<12} {:>10} {:>10} {:>9} {:<8} {:<6}",
        "NAME", "GEN", "VERSION", "STATE", "POSITION", "LAG", "LAG_S", "STATUS", "ACTIVE"
    )?;
    for row in rows {
        let lag = row
            .lag_events
            .map_or_else(|| "?".to_owned(), |lag| lag.to_string());
        let lag_s = row
            .lag_seconds
            .map_or_else(|| "?".to_owned(), |lag| format!("{lag:.1}"));
        writeln!(
            out,
            "{:<20} {:>4} {:>7} {:<12} {:>10} {:>10} {:>9} {:<8} {:<6}",
            row.name,
            row.generation,
            row.version,
            row.state,
            row.position,
            lag,
            lag_s,
            row.status,
            if row.active { "yes" } else { "no" }
        )?;
        if let Some(error) = &row.last_error {
            writeln!(out, "  last error: {error}")?;
        }
    }
    Ok(())
}

/// Starts the rebuild, then (unless `no_wait`) runs the projector here until the new
/// generation is live, printing progress. A running service may build it instead: the
/// generation's lock makes sure only one does, and either way the progress shows here.
async fn rebuild(
    projector: Projector,
    pool: &sqlx::PgPool,
    log: &EventLog,
    name: &str,
    no_wait: bool,
) -> anyhow::Result<()> {
    let generation = projector.start_rebuild(name).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "building generation {} of {} (logic version {}) in schema {} beside the live one",
        generation.generation, generation.name, generation.version, generation.schema
    )?;
    drop(out);
    if no_wait {
        return Ok(());
    }
    let status_of = |rows: Vec<ProjectionStatus>| {
        rows.into_iter()
            .find(|row| row.name == name && row.generation == generation.generation)
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone().cancelled_owned()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = crate::cli::shutdown_signal() => break Err(anyhow::anyhow!(
                "interrupted; generation {} keeps building wherever a projector runs",
                generation.generation
            )),
        }
        let rows = funnel_projections::status(pool, Some(log)).await?;
        let Some(row) = status_of(rows) else {
            break Err(anyhow::anyhow!(
                "generation {} is gone (replaced by a newer rebuild?)",
                generation.generation
            ));
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "  position {} of {} ({} behind), {}",
            row.position,
            row.position + row.lag_events.unwrap_or(0),
            row.lag_events
                .map_or_else(|| "?".to_owned(), |lag| lag.to_string()),
            row.state
        )?;
        if row.status == "failed" {
            break Err(anyhow::anyhow!(
                "generation {} stopped at an event it cannot apply: {}",
                generation.generation,
                row.last_error.unwrap_or_default()
            ));
        }
        if row.state == "live" {
            writeln!(
                out,
                "generation {} of {} is live; readers switched to it",
                generation.generation, name
            )?;
            break Ok(());
        }
    };
    stop.cancel();
    running.await?;
    outcome
}
