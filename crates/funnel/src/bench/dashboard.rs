//! `funnel bench dashboard`: the sponsor dashboard's query latency over a large read model.
//!
//! The read model is filled without NATS: synthetic, legal events (the generator of
//! `funnel bench projections`) are made in memory from a fixed seed and applied through the
//! projection's own batched apply (`SponsorDashboard::apply_batch`, what the projector runs)
//! in large transactions into the live generation's schema, which a projector on an empty
//! scratch stream created. The queries then run as the API runs them: a read transaction from
//! `ReadModels::read`, then the query function, for random studies, with and without filters.

use std::io::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use funnel_domain::SourceChannel;
use funnel_projections::dashboard::{self, Bucket, DashboardFilter, SeriesMetric};
use funnel_projections::{ProjectedEvent, Projection, ReadModels, SponsorDashboard};
use sqlx::{Connection as _, PgPool};
use tokio::sync::mpsc;

use super::projections::{Rng, Running, Synthetic, millis, percentile};
use super::scratch::{Scratch, until_interrupted};

#[derive(Debug, Args)]
pub(crate) struct DashboardBenchArgs {
    /// NATS server URL (a secret: never printed): only for the scratch stream whose projector
    /// creates the read model's generation.
    #[arg(
        long,
        env = "FUNNEL_NATS_URL",
        default_value = "nats://127.0.0.1:14222",
        hide_env_values = true
    )]
    nats_url: String,
    /// A PostgreSQL database URL; the benchmark creates (and drops) a scratch database beside
    /// it (a secret: never printed).
    #[arg(
        long,
        env = "FUNNEL_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    database_url: String,
    /// Events in the read model (at least; whole journeys).
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    #[arg(long, default_value_t = 1000)]
    studies: usize,
    /// Sites in all (spread evenly over the studies).
    #[arg(long, default_value_t = 7000)]
    sites: usize,
    /// Timed runs of each query (each on a random study).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Events per transaction while loading.
    #[arg(long, default_value_t = 100_000)]
    load_transaction: usize,
    /// Seed of the synthetic events and of the studies picked.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub(crate) async fn dashboard(args: DashboardBenchArgs) -> anyhow::Result<()> {
    let mut scratch = Scratch::default();
    let result = until_interrupted(run(&args, &mut scratch)).await;
    scratch.cleanup(&args.database_url).await;
    result
}

/// Creates the live generation with a projector on an empty stream, then returns its schema.
async fn live_schema(
    args: &DashboardBenchArgs,
    scratch: &mut Scratch,
    pool: &PgPool,
) -> anyhow::Result<String> {
    let log = scratch.event_log(&args.nats_url, "DASH").await?;
    let projector = funnel_projections::Projector::new(
        log,
        pool.clone(),
        &prometheus::Registry::new(),
        funnel_projections::ProjectorSettings::default(),
    )?
    .with(SponsorDashboard);
    let running = Running::start(projector);
    let started = Instant::now();
    let schema = loop {
        let schema: Option<String> = sqlx::query_scalar(
            "SELECT schema_name FROM projection_generations WHERE name = $1 AND state = 'live'",
        )
        .bind(SponsorDashboard::NAME)
        .fetch_optional(pool)
        .await?;
        if let Some(schema) = schema {
            break schema;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no live generation after a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.stop().await;
    Ok(schema)
}

async fn run(args: &DashboardBenchArgs, scratch: &mut Scratch) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let pool = scratch.migrated_pool(&args.database_url).await?;
    let schema = live_schema(args, scratch, &pool).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    writeln!(
        out,
        "dashboard benchmark: PostgreSQL {version}, {} cores; {} events over {} studies and {} \
         sites, generated in memory (seed {}) and applied with SponsorDashboard::apply_batch \
         in transactions of {} events into the live generation `{schema}` (not through NATS)",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        args.events,
        args.studies,
        args.sites,
        args.seed,
        args.load_transaction,
    )?;

    // Generation on a thread of its own, applying here: both cores busy.
    let studies = args.studies.max(1);
    let sites_per_study = (args.sites / studies).max(1);
    let (waves_tx, mut waves_rx) = mpsc::channel::<Vec<ProjectedEvent>>(4);
    let (events, seed) = (args.events, args.seed);
    let generator = tokio::task::spawn_blocking(move || {
        let mut synthetic = Synthetic::new(seed, (events / 6) as u64);
        let mut written = 0;
        let setup = synthetic.setup(studies, sites_per_study);
        written += setup.len();
        if waves_tx.blocking_send(setup).is_err() {
            return synthetic;
        }
        while written < events {
            let wave = synthetic.journeys(5000);
            written += wave.len();
            if waves_tx.blocking_send(wave).is_err() {
                break;
            }
        }
        synthetic
    });
    let started = Instant::now();
    let mut conn = pool.acquire().await?.detach();
    let mut applied = 0_usize;
    let mut in_tx = 0_usize;
    let mut tx = conn.begin().await?;
    let set_path = "SELECT set_config('search_path', $1, true)";
    sqlx::query(set_path)
        .bind(&schema)
        .execute(&mut *tx)
        .await?;
    let mut last_report = Instant::now();
    while let Some(wave) = waves_rx.recv().await {
        for chunk in wave.chunks(5000) {
            SponsorDashboard.apply_batch(&mut tx, chunk).await?;
            applied += chunk.len();
            in_tx += chunk.len();
        }
        if in_tx >= args.load_transaction {
            tx.commit().await?;
            tx = conn.begin().await?;
            sqlx::query(set_path)
                .bind(&schema)
                .execute(&mut *tx)
                .await?;
            in_tx = 0;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            tracing::warn!(applied, "loading the dashboard read model");
        }
    }
    tx.commit().await?;
    let synthetic = generator.await?;
    let load_time = started.elapsed();
    let analyze = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM ANALYZE {schema}.journeys"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM ANALYZE {schema}.journey_sites"
    )))
    .execute(&mut conn)
    .await?;
    let counts: (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM {schema}.journeys), \
         (SELECT count(*) FROM {schema}.journey_sites), (SELECT count(*) FROM {schema}.sites)"
    )))
    .fetch_one(&mut conn)
    .await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_database_size(current_database()))")
            .fetch_one(&mut conn)
            .await?;
    conn.close().await?;
    writeln!(
        out,
        "loaded {applied} events in {:.0} s ({:.0} events/s, generation included); VACUUM \
         ANALYZE {:.0} s; {} journeys, {} journey-site rows, {} sites; database {size}",
        load_time.as_secs_f64(),
        applied as f64 / load_time.as_secs_f64(),
        analyze.elapsed().as_secs_f64(),
        counts.0,
        counts.1,
        counts.2,
    )?;

    measure(args, &pool, &synthetic, &mut out).await
}

/// What one timed run reads.
#[derive(Clone, Copy, Debug)]
enum Query {
    Funnel,
    SiteTable,
    TimeSeries,
    TimeSeriesBySite,
    Cohorts,
    Sources,
    Forecast,
    StudiesOfSponsor,
    AllStudies,
}

impl Query {
    const ALL: [Self; 9] = [
        Self::Funnel,
        Self::SiteTable,
        Self::TimeSeries,
        Self::TimeSeriesBySite,
        Self::Cohorts,
        Self::Sources,
        Self::Forecast,
        Self::StudiesOfSponsor,
        Self::AllStudies,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::Funnel => "study_funnel",
            Self::SiteTable => "site_table",
            Self::TimeSeries => "time_series (week, randomized)",
            Self::TimeSeriesBySite => "time_series (week, randomized, by site)",
            Self::Cohorts => "cohorts",
            Self::Sources => "source_attribution",
            Self::Forecast => "target_forecast",
            Self::StudiesOfSponsor => "studies (of one sponsor)",
            Self::AllStudies => "studies (all, as an admin)",
        }
    }

    /// Whether the query takes the filter.
    const fn filtered(self) -> bool {
        !matches!(
            self,
            Self::Forecast | Self::StudiesOfSponsor | Self::AllStudies
        )
    }
}

async fn once(
    models: &ReadModels,
    query: Query,
    study: &super::projections::StudySetup,
    filter: &DashboardFilter,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut tx = models.read(SponsorDashboard::NAME).await?;
    let id = study.id;
    match query {
        Query::Funnel => {
            dashboard::study_funnel(&mut tx, id, filter).await?;
        }
        Query::SiteTable => {
            dashboard::site_table(&mut tx, id, filter, now).await?;
        }
        Query::TimeSeries | Query::TimeSeriesBySite => {
            let by_site = matches!(query, Query::TimeSeriesBySite);
            dashboard::time_series(
                &mut tx,
                id,
                filter,
                Bucket::Week,
                SeriesMetric::Randomized,
                by_site,
            )
            .await?;
        }
        Query::Cohorts => {
            dashboard::cohorts(&mut tx, id, filter).await?;
        }
        Query::Sources => {
            dashboard::source_attribution(&mut tx, id, filter).await?;
        }
        Query::Forecast => {
            dashboard::target_forecast(&mut tx, id, now).await?;
        }
        Query::StudiesOfSponsor => {
            dashboard::studies(&mut tx, Some(study.sponsor)).await?;
        }
        Query::AllStudies => {
            dashboard::studies(&mut tx, None).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn measure(
    args: &DashboardBenchArgs,
    pool: &PgPool,
    synthetic: &Synthetic,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let models = ReadModels::new(pool.clone());
    let now = synthetic.now();
    let mut rng = Rng::new(args.seed ^ 0x5EED);
    writeln!(
        out,
        "{} timed runs per line, each on a random study (its own read transaction, as the API \
         does; one client, nothing else running); filter = referrals of the last 90 days of \
         data, one site, two source channels",
        args.queries,
    )?;
    writeln!(
        out,
        "  {:<42} {:>9} {:>9} {:>9}",
        "query", "p50 ms", "p99 ms", "max ms"
    )?;
    let mut worst = Duration::ZERO;
    for query in Query::ALL {
        for filtered in [false, true] {
            if filtered && !query.filtered() {
                continue;
            }
            // One untimed run per line: plans cached, as in a running service.
            let study = &synthetic.studies[0];
            once(&models, query, study, &DashboardFilter::default(), now).await?;
            let mut times = Vec::with_capacity(args.queries);
            for _ in 0..args.queries {
                let study = &synthetic.studies[rng.below(synthetic.studies.len())];
                let filter = if filtered {
                    DashboardFilter {
                        from: Some((now - TimeDelta::days(90)).date_naive()),
                        to: Some(now.date_naive()),
                        site_ids: vec![study.sites[rng.below(study.sites.len())]],
                        countries: Vec::new(),
                        sources: vec![SourceChannel::ALL[0], SourceChannel::ALL[1]],
                    }
                } else {
                    DashboardFilter::default()
                };
                let started = Instant::now();
                once(&models, query, study, &filter, now).await?;
                times.push(started.elapsed());
            }
            times.sort_unstable();
            let p99 = percentile(&times, 99.0);
            worst = worst.max(p99);
            writeln!(
                out,
                "  {:<42} {:>9.1} {:>9.1} {:>9.1}",
                format!(
                    "{}{}",
                    query.name(),
                    if filtered { " + filter" } else { "" }
                ),
                millis(percentile(&times, 50.0)),
                millis(p99),
                millis(times.last().copied().unwrap_or_default()),
            )?;
        }
    }
    writeln!(
        out,
        "worst p99: {:.1} ms (target: every p99 under 50 ms)",
        millis(worst)
    )?;
    Ok(())
}
