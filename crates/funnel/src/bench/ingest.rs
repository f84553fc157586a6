//! `funnel bench ingest`: the ingest figures of the benchmark suite, measured in one run on one
//! machine against the same nats-server and PostgreSQL:
//!
//! - the raw JetStream append rate (the limit): plain async-nats publishes, and ADR-50 atomic
//!   batches, every message with `Nats-Expected-Last-Subject-Sequence` and `Nats-Msg-Id`, on a
//!   stream provisioned exactly like the service's;
//! - the event log's own API (`EventLog::append`, group commit on);
//! - the whole service over HTTP, one referral per request and in batches (in-process, on port 0,
//!   with its own stream and database, projections running);
//! - the peer to beat: a plain PostgreSQL event store, one transaction per event.
//!
//! It starts no nats-server itself (`deploy/bench.sh` starts the two it needs); every scratch
//! stream and database it creates is deleted afterwards.

use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use bytes::Bytes;
use clap::Args;
use funnel_api::auth::{NewToken, Role};
use funnel_api::{Application, ServiceSettings};
use funnel_domain::{
    CampaignId, Country, Language, SiteId, SlaSettings, SourceChannel, SponsorId, StudyCommand,
    StudyId,
};
use funnel_eventlog::bench::{AppendBenchmark, run_append_benchmark};
use funnel_eventlog::{EventLog, EventLogSettings};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool};
use uuid::Uuid;

use super::procfs::CpuSpan;
use super::scratch::{Scratch, admin_pool, until_interrupted};

#[derive(Debug, Args)]
pub(crate) struct IngestBenchArgs {
    /// nats-server for the durable figures; it must run with `sync_interval: always`, as
    /// `deploy/bench.sh` starts it (a secret: never printed).
    #[arg(
        long,
        env = "FUNNEL_NATS_URL",
        default_value = "nats://127.0.0.1:14222",
        hide_env_values = true
    )]
    nats_url: String,
    /// A second nats-server with the default sync interval: when given, every NATS figure is
    /// also measured in fast mode, labelled so (a secret: never printed).
    #[arg(long, env = "FUNNEL_BENCH_FAST_NATS_URL", hide_env_values = true)]
    fast_nats_url: Option<String>,
    /// Any database on the PostgreSQL server to use, as a user that may create databases: the
    /// benchmark creates databases `funnel_bench_*` beside it and drops them afterwards (a
    /// secret: never printed).
    #[arg(
        long,
        env = "FUNNEL_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    database_url: String,
    /// Events per figure (referrals, for the HTTP figures).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Writers in flight for the raw, event-log and PostgreSQL figures, and HTTP clients for
    /// one referral per request.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Referrals per `POST /v1/referrals/batch`.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Batch requests in flight.
    #[arg(long, default_value_t = 4)]
    batch_concurrency: usize,
    /// Messages per raw atomic batch.
    #[arg(long, default_value_t = 100)]
    raw_batch: usize,
    /// Raw atomic batches in flight (the event log's group commit keeps 8).
    #[arg(long, default_value_t = 8)]
    raw_batch_publishers: usize,
    /// Payload bytes per event of the raw, event-log and PostgreSQL figures (a referral's
    /// event is about this size too, sealed contact included).
    #[arg(long, default_value_t = 300)]
    payload: usize,
    /// Measure only these figures (all by default), e.g. `--figures http-single,peer` while
    /// profiling one path.
    #[arg(long, value_enum, value_delimiter = ',')]
    figures: Vec<Kind>,
}

impl IngestBenchArgs {
    fn measures(&self, kind: Kind) -> bool {
        self.figures.is_empty() || self.figures.contains(&kind)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// An acknowledged event survives a crash of the machine.
    Durable,
    /// Acknowledged before it is on disk.
    Fast,
}

impl Mode {
    const fn label(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Fast => "fast",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    RawPublish,
    RawBatch,
    EventLog,
    HttpSingle,
    HttpBatch,
    HttpFloor,
    #[value(name = "peer")]
    Postgres,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::RawPublish => "raw JetStream publishes",
            Self::RawBatch => "raw JetStream atomic batches",
            Self::EventLog => "event log API (group commit)",
            Self::HttpSingle => "HTTP POST /v1/referrals",
            Self::HttpBatch => "HTTP POST /v1/referrals/batch",
            Self::HttpFloor => "HTTP GET /health (the floor)",
            Self::Postgres => "PostgreSQL event store (peer)",
        }
    }

    const fn is_raw(self) -> bool {
        matches!(self, Self::RawPublish | Self::RawBatch)
    }
}

/// One measured figure.
#[derive(Debug)]
struct Figure {
    kind: Kind,
    mode: Mode,
    /// Events stored.
    events: u64,
    /// Referrals accepted, for the HTTP figures.
    referrals: Option<u64>,
    /// Appends, requests or batch items that did not succeed.
    failed: u64,
    elapsed: Duration,
    conditions: String,
}

impl Figure {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

pub(crate) async fn ingest(args: IngestBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.events > 0
            && args.concurrency > 0
            && args.batch_size > 0
            && args.batch_concurrency > 0
            && args.raw_batch > 0
            && args.raw_batch_publishers > 0,
        "sizes and concurrencies must be positive"
    );
    anyhow::ensure!(
        args.batch_size <= 1000 && args.raw_batch <= 1000,
        "a batch holds at most 1,000 referrals or messages"
    );
    let mut scratch = Scratch::default();
    let result = until_interrupted(run(&args, &mut scratch)).await;
    scratch.cleanup(&args.database_url).await;
    let figures = result?;
    let failed: u64 = figures.iter().map(|figure| figure.failed).sum();
    anyhow::ensure!(failed == 0, "{failed} appends or requests failed");
    Ok(())
}

async fn run(args: &IngestBenchArgs, scratch: &mut Scratch) -> anyhow::Result<Vec<Figure>> {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let nats_version = async_nats::connect(args.nats_url.as_str())
        .await
        .context("connecting to the durable nats-server")?
        .server_info()
        .version;
    let pg_conditions = postgres_conditions(&args.database_url).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ingest benchmark: {} events per figure, {} writers/clients in flight, {} bytes per \
         event, {cores} cores; nats-server {nats_version} (file storage, 1 replica) and \
         {pg_conditions} on this machine; the service runs in this process (HTTP on \
         127.0.0.1, projections running, rate limit raised out of the way)",
        args.events, args.concurrency, args.payload,
    )?;
    writeln!(
        out,
        "durable: nats-server with sync_interval: always, PostgreSQL with synchronous_commit = on \
         (an acknowledged event survives a crash of the machine); fast: the default sync \
         interval, synchronous_commit = off (it may not)"
    )?;
    drop(out);
    let mut figures = Vec::new();
    let mut modes = vec![(Mode::Durable, args.nats_url.clone())];
    if let Some(url) = &args.fast_nats_url {
        modes.push((Mode::Fast, url.clone()));
    }
    for (mode, url) in &modes {
        // Printed as each is measured: a long run shows its progress.
        for kind in [
            Kind::RawPublish,
            Kind::RawBatch,
            Kind::EventLog,
            Kind::HttpSingle,
            Kind::HttpBatch,
        ]
        .into_iter()
        .filter(|kind| args.measures(*kind))
        {
            let figure = match kind {
                Kind::RawPublish => raw_publishes(args, url, *mode, scratch).await?,
                Kind::RawBatch => raw_batches(args, url, *mode, scratch).await?,
                Kind::EventLog => event_log(args, url, *mode, scratch).await?,
                Kind::HttpSingle => http_single(args, url, *mode, scratch).await?,
                Kind::HttpBatch => http_batch(args, url, *mode, scratch).await?,
                Kind::Postgres | Kind::HttpFloor => unreachable!("measured once, below"),
            };
            print_figure(&figure)?;
            figures.push(figure);
        }
    }
    if args.measures(Kind::HttpFloor) {
        let figure = http_floor(args, &args.nats_url, scratch).await?;
        print_figure(&figure)?;
        figures.push(figure);
    }
    for mode in [Mode::Durable, Mode::Fast] {
        if !args.measures(Kind::Postgres) {
            break;
        }
        let figure = postgres_peer(args, mode, scratch).await?;
        print_figure(&figure)?;
        figures.push(figure);
    }
    print_summary(&figures)?;
    Ok(figures)
}

fn print_figure(figure: &Figure) -> std::io::Result<()> {
    let referrals = figure.referrals.map_or_else(String::new, |referrals| {
        format!(
            ", {:.0} referrals/s",
            referrals as f64 / figure.elapsed.as_secs_f64().max(f64::EPSILON)
        )
    });
    writeln!(
        std::io::stdout().lock(),
        "figure  {} [{}]: {:.0} events/s{referrals} ({} events in {:.2} s, {} failed; {})",
        figure.kind.name(),
        figure.mode.label(),
        figure.events_per_second(),
        figure.events,
        figure.elapsed.as_secs_f64(),
        figure.failed,
        figure.conditions,
    )
}

/// The limit of a mode: the faster of the two raw JetStream ways to append.
fn limit(figures: &[Figure], mode: Mode) -> Option<f64> {
    figures
        .iter()
        .filter(|figure| figure.mode == mode && figure.kind.is_raw())
        .map(Figure::events_per_second)
        .reduce(f64::max)
}

fn rate(figures: &[Figure], kind: Kind, mode: Mode) -> Option<f64> {
    figures
        .iter()
        .find(|figure| figure.kind == kind && figure.mode == mode)
        .map(Figure::events_per_second)
}

fn print_summary(figures: &[Figure]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nsummary (ratio: to the raw JetStream limit of the same mode)"
    )?;
    writeln!(
        out,
        "  {:<32} {:<8} {:>12} {:>8} {:>7}",
        "figure", "mode", "events/s", "ratio", "failed"
    )?;
    for figure in figures {
        let ratio = limit(figures, figure.mode)
            .filter(|_| figure.kind != Kind::HttpFloor)
            .map_or_else(
                || "-".to_owned(),
                |limit| format!("{:.2}", figure.events_per_second() / limit),
            );
        writeln!(
            out,
            "  {:<32} {:<8} {:>12.0} {:>8} {:>7}",
            figure.kind.name(),
            figure.mode.label(),
            figure.events_per_second(),
            ratio,
            figure.failed,
        )?;
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    if let (Some(http), Some(peer)) = (
        rate(figures, Kind::HttpSingle, Mode::Durable),
        rate(figures, Kind::Postgres, Mode::Durable),
    ) {
        writeln!(
            out,
            "target  durable single-referral HTTP ingest >= 2x the PostgreSQL event store: \
             {:.2}x, {}",
            http / peer,
            verdict(http >= 2.0 * peer)
        )?;
        if let Some(floor) = rate(figures, Kind::HttpFloor, Mode::Durable) {
            writeln!(
                out,
                "bound   2x the peer is {:.0} requests/s; the same clients get {floor:.0} \
                 requests/s from GET /health, which does nothing: the target asks for {:.0}% of \
                 what HTTP alone costs on this machine",
                2.0 * peer,
                100.0 * 2.0 * peer / floor
            )?;
        }
    }
    if let (Some(batch), Some(limit)) = (
        rate(figures, Kind::HttpBatch, Mode::Durable),
        limit(figures, Mode::Durable),
    ) {
        writeln!(
            out,
            "target  durable batch ingest >= 50% of the raw append rate: {:.0}%, {}",
            100.0 * batch / limit,
            verdict(batch >= 0.5 * limit)
        )?;
    }
    Ok(())
}

/// A fresh stream provisioned exactly like the service's (file storage, deny delete and purge,
/// atomic publish, duplicate window), so the raw figures pay what the service pays.
async fn scratch_log(
    url: &str,
    tag: &str,
    group_commit: bool,
    scratch: &mut Scratch,
) -> anyhow::Result<EventLog> {
    let name = format!("BENCH_{tag}_{}", Uuid::new_v4().simple()).to_uppercase();
    let mut settings = EventLogSettings::new(url.to_owned(), name.clone(), name.to_lowercase());
    settings.group_commit.enabled = group_commit;
    let log = EventLog::connect(settings).await?;
    scratch.streams.push((url.to_owned(), name));
    log.provision().await?;
    Ok(log)
}

fn payload(bytes: usize) -> Bytes {
    Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(bytes)))
}

fn raw_headers(expected: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        Uuid::now_v7().as_hyphenated().to_string().as_str(),
    );
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        expected.to_string().as_str(),
    );
    headers
}

/// Splits `total` among `writers` as evenly as possible.
fn share(total: usize, writers: usize, index: usize) -> usize {
    total / writers + usize::from(index < total % writers)
}

/// Raw publishes: each writer owns one subject and publishes to it one message at a time,
/// awaiting the ack and checking the subject's last sequence, so `concurrency` are in flight.
async fn raw_publishes(
    args: &IngestBenchArgs,
    url: &str,
    mode: Mode,
    scratch: &mut Scratch,
) -> anyhow::Result<Figure> {
    let log = scratch_log(url, "raw", false, scratch).await?;
    let prefix = log.settings().subject_prefix.clone();
    let version = log.capabilities().version.to_string();
    log.shutdown().await;
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let data = payload(args.payload);
    let writers = args.concurrency.min(args.events);
    let cpu = CpuSpan::start(url);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..writers {
        let (js, data) = (js.clone(), data.clone());
        let subject = format!("{prefix}.bench.{}", Uuid::now_v7());
        let count = share(args.events, writers, index);
        tasks.spawn(async move {
            let (mut expected, mut ok, mut failed) = (0, 0_u64, 0_u64);
            for _ in 0..count {
                let acked = match js
                    .publish_with_headers(subject.clone(), raw_headers(expected), data.clone())
                    .await
                {
                    Ok(ack) => ack.await.ok(),
                    Err(_) => None,
                };
                match acked {
                    Some(ack) => {
                        expected = ack.sequence;
                        ok += 1;
                    }
                    None => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (events, failed) = join_counts(tasks).await;
    let elapsed = started.elapsed();
    let cpu = cpu.end().per(events, "event");
    Ok(Figure {
        kind: Kind::RawPublish,
        mode,
        events,
        referrals: None,
        failed,
        elapsed,
        conditions: format!(
            "{writers} in flight, each acked before its writer's next; {cpu}; nats-server \
             {version}"
        ),
    })
}

/// Raw atomic batches: each publisher owns `raw_batch` subjects and writes one message to each
/// per batch, every message checking its subject's last sequence; the first message is a
/// request and the commit carries the ack, as ADR-50 has it.
async fn raw_batches(
    args: &IngestBenchArgs,
    url: &str,
    mode: Mode,
    scratch: &mut Scratch,
) -> anyhow::Result<Figure> {
    let log = scratch_log(url, "rawbatch", false, scratch).await?;
    let prefix = log.settings().subject_prefix.clone();
    let capabilities = log.capabilities();
    log.shutdown().await;
    anyhow::ensure!(
        capabilities.atomic_batch_publish,
        "nats-server {} has no atomic batches (2.12+)",
        capabilities.version
    );
    let client = async_nats::connect(url).await?;
    let data = payload(args.payload);
    let batches = args.events.div_ceil(args.raw_batch);
    let publishers = args.raw_batch_publishers.min(batches);
    let size = args.raw_batch;
    let cpu = CpuSpan::start(url);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..publishers {
        let (client, data) = (client.clone(), data.clone());
        let subjects: Vec<String> = (0..size)
            .map(|_| format!("{prefix}.bench.{}", Uuid::now_v7()))
            .collect();
        let count = share(batches, publishers, index);
        tasks.spawn(async move {
            let mut expected = vec![0_u64; subjects.len()];
            let (mut ok, mut failed) = (0_u64, 0_u64);
            for _ in 0..count {
                match raw_batch(&client, &subjects, &expected, &data).await {
                    Some(last) => {
                        let first = last + 1 - subjects.len() as u64;
                        for (offset, version) in (0..).zip(expected.iter_mut()) {
                            *version = first + offset;
                        }
                        ok += subjects.len() as u64;
                    }
                    None => failed += subjects.len() as u64,
                }
            }
            (ok, failed)
        });
    }
    let (events, failed) = join_counts(tasks).await;
    let elapsed = started.elapsed();
    let cpu = cpu.end().per(events, "event");
    Ok(Figure {
        kind: Kind::RawBatch,
        mode,
        events,
        referrals: None,
        failed,
        elapsed,
        conditions: format!(
            "batches of {size} to {size} subjects, {publishers} in flight; {cpu}; nats-server {}",
            capabilities.version
        ),
    })
}

/// One atomic batch; the last stored sequence, or `None` when it was refused or not answered.
async fn raw_batch(
    client: &async_nats::Client,
    subjects: &[String],
    expected: &[u64],
    data: &Bytes,
) -> Option<u64> {
    let batch_id = Uuid::new_v4().simple().to_string();
    let total = subjects.len();
    for (position, (subject, &version)) in (1..).zip(subjects.iter().zip(expected)) {
        let mut headers = raw_headers(version);
        headers.insert("Nats-Batch-Id", batch_id.as_str());
        headers.insert("Nats-Batch-Sequence", position.to_string().as_str());
        if position == total {
            headers.insert("Nats-Batch-Commit", "1");
        }
        if position == 1 || position == total {
            let reply = client
                .request_with_headers(subject.clone(), headers, data.clone())
                .await
                .ok()?;
            if position == total {
                let ack: Value = serde_json::from_slice(&reply.payload).ok()?;
                return if ack.get("error").is_some() {
                    None
                } else {
                    ack.get("seq").and_then(Value::as_u64)
                };
            }
            // The first message is answered empty unless the server refuses the batch.
            if !reply.payload.is_empty() {
                return None;
            }
        } else {
            client
                .publish_with_headers(subject.clone(), headers, data.clone())
                .await
                .ok()?;
        }
    }
    None
}

async fn join_counts(mut tasks: tokio::task::JoinSet<(u64, u64)>) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        let (done, errors) = result.unwrap_or((0, 1));
        ok += done;
        failed += errors;
    }
    (ok, failed)
}

/// The event log's append, the same load as the raw publishes: `concurrency` writers, one
/// aggregate each, every append checked against the version the previous one returned.
async fn event_log(
    args: &IngestBenchArgs,
    url: &str,
    mode: Mode,
    scratch: &mut Scratch,
) -> anyhow::Result<Figure> {
    let log = scratch_log(url, "log", true, scratch).await?;
    let writers = args.concurrency.min(args.events);
    let plan = AppendBenchmark {
        writers,
        appends_per_writer: args.events.div_ceil(writers),
        events_per_append: 1,
        payload_bytes: args.payload,
    };
    let cpu = CpuSpan::start(url);
    let report = run_append_benchmark(&log, &plan).await;
    let cpu = cpu.end().per(report.events, "event");
    let conditions = format!(
        "{writers} writers, one event per append, group commit {} ({} batches holding {} \
         appends); {cpu}; nats-server {}",
        if log.group_commit_active() {
            "on"
        } else {
            "unavailable"
        },
        report.stats.batches_committed,
        report.stats.appends_in_batches,
        log.capabilities().version,
    );
    log.shutdown().await;
    Ok(Figure {
        kind: Kind::EventLog,
        mode,
        events: report.events,
        referrals: None,
        failed: report.failed_appends,
        elapsed: report.elapsed,
        conditions,
    })
}

/// The service in this process, as `funnel serve` runs it (projections on), with its own
/// stream and database, a study with a site and a registered campaign, and that campaign's token.
struct Service {
    base: String,
    token: String,
    study: StudyId,
    site: SiteId,
    campaign: CampaignId,
    /// A second connection to the service's stream, to count what it stored.
    log: EventLog,
    version: String,
    /// The service's database, whose transaction count shows what a referral costs there.
    database: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), funnel_api::ServeError>>,
}

async fn start_service(
    args: &IngestBenchArgs,
    url: &str,
    scratch: &mut Scratch,
) -> anyhow::Result<Service> {
    let name = format!("BENCH_API_{}", Uuid::new_v4().simple()).to_uppercase();
    let eventlog = EventLogSettings::new(url.to_owned(), name.clone(), name.to_lowercase());
    scratch.streams.push((url.to_owned(), name));
    let db = scratch.database(&args.database_url).await?;
    let database = scratch.databases.last().cloned().unwrap_or_default();
    let mut settings =
        ServiceSettings::new(SocketAddr::from(([127, 0, 0, 1], 0)), db, eventlog.clone());
    // The per-token limit would measure itself instead of the ingest path.
    settings.rate_limit_per_second = NonZeroU32::MAX;
    settings.rate_limit_burst = NonZeroU32::MAX;
    settings.run_projections = true;
    let app = Application::build(settings, prometheus::Registry::new()).await?;
    let (study, site, campaign) = (StudyId::new(), SiteId::new(), CampaignId::new());
    let now = chrono::Utc::now();
    let es = Language::parse("es")?;
    let spain = Country::parse("ES")?;
    let setup = [
        StudyCommand::CreateStudy {
            at: now,
            study_id: study,
            sponsor_id: SponsorId::new(),
            title: "Benchmark study".to_owned(),
            protocol_code: "BENCH-1".to_owned(),
            target_randomized: 100,
            countries: vec![spain.clone()],
            languages: vec![es.clone()],
            sla: SlaSettings::default(),
        },
        StudyCommand::AddSite {
            at: now,
            site_id: site,
            name: "Benchmark site".to_owned(),
            country: spain,
            languages: vec![es],
            monthly_target_randomized: 2.0,
        },
        StudyCommand::RegisterCampaign {
            at: now,
            campaign_id: campaign,
            name: "Benchmark campaign".to_owned(),
            channel: SourceChannel::Ads,
        },
    ];
    for command in &setup {
        app.commands()
            .execute_study(study, None, command)
            .await
            .map_err(|err| anyhow::anyhow!("setting up the benchmark study: {err}"))?;
    }
    let (_, token) = app
        .tokens()
        .create(&NewToken {
            name: "bench ingest".to_owned(),
            role: Some(Role::Campaign),
            campaign_id: Some(campaign),
            study_ids: vec![study],
            ..NewToken::default()
        })
        .await?;
    let base = format!("http://{}", app.local_addr());
    let (shutdown, stopped) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let log = EventLog::connect(eventlog).await?;
    let version = log.capabilities().version.to_string();
    Ok(Service {
        base,
        token,
        study,
        site,
        campaign,
        log,
        version,
        database,
        shutdown,
        server,
    })
}

impl Service {
    /// A referral of a made-up person, distinct per `n` (external id, phone and e-mail), so
    /// none is a replay or a duplicate.
    fn referral(&self, n: usize) -> Value {
        json!({
            "study_id": self.study,
            "campaign_id": self.campaign,
            "external_id": format!("bench-{n}"),
            "source": "ads",
            "language": "es",
            "country": "ES",
            "preferred_site_id": self.site,
            "consent_to_contact": true,
            "time_zone": "Europe/Madrid",
            "contact": {
                "name": format!("Bench Person {n}"),
                "phone": format!("+34 6{:08}", n % 100_000_000),
                "email": format!("bench{n}@example.org"),
            },
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.log.shutdown().await;
        let _ = self.shutdown.send(());
        self.server.await??;
        Ok(())
    }
}

fn http_client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn http_single(
    args: &IngestBenchArgs,
    url: &str,
    mode: Mode,
    scratch: &mut Scratch,
) -> anyhow::Result<Figure> {
    let service = Arc::new(start_service(args, url, scratch).await?);
    let client = http_client(args.concurrency)?;
    let head = service.log.stream_head().await?;
    let commits_before = commits(&args.database_url, &service.database).await?;
    let cpu = CpuSpan::start(url);
    let run = {
        let service = Arc::clone(&service);
        drive(args.concurrency, args.events, move |n| {
            let (service, client) = (Arc::clone(&service), client.clone());
            async move {
                let response = client
                    .post(format!("{}/v1/referrals", service.base))
                    .bearer_auth(&service.token)
                    .json(&service.referral(n))
                    .send()
                    .await;
                let created = match response {
                    // Read to the end so the connection goes back to the pool.
                    Ok(response) if response.status() == reqwest::StatusCode::CREATED => {
                        response.bytes().await.is_ok()
                    }
                    _ => false,
                };
                one(created)
            }
        })
        .await
    };
    let cpu = cpu.end().per(run.ok, "referral");
    let events = service.log.stream_head().await? - head;
    let service = Arc::into_inner(service).context("the HTTP clients are done")?;
    let version = service.version.clone();
    let database = service.database.clone();
    service.stop().await?;
    let per_referral =
        commits_per_referral(&args.database_url, &database, commits_before, run.ok).await?;
    Ok(Figure {
        kind: Kind::HttpSingle,
        mode,
        events,
        referrals: Some(run.ok),
        failed: run.failed,
        elapsed: run.elapsed,
        conditions: format!(
            "{} clients with keep-alive, one referral per request, event log with group commit, \
             {per_referral:.1} PostgreSQL transactions per referral (projections and reads \
             included); {cpu}; nats-server {version}",
            args.concurrency.min(args.events)
        ),
    })
}

/// What the same clients get from the same service for a request that does nothing
/// (`GET /health`: no token, no storage): what HTTP alone costs on this machine, the most any
/// one-referral-per-request figure could reach.
async fn http_floor(
    args: &IngestBenchArgs,
    url: &str,
    scratch: &mut Scratch,
) -> anyhow::Result<Figure> {
    let service = start_service(args, url, scratch).await?;
    let client = http_client(args.concurrency)?;
    let health = format!("{}/health", service.base);
    let run = drive(args.concurrency, args.events, move |_| {
        let (client, health) = (client.clone(), health.clone());
        async move {
            let answered = match client.get(health).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::OK => {
                    response.bytes().await.is_ok()
                }
                _ => false,
            };
            one(answered)
        }
    })
    .await;
    service.stop().await?;
    Ok(Figure {
        kind: Kind::HttpFloor,
        mode: Mode::Durable,
        events: run.ok,
        referrals: None,
        failed: run.failed,
        elapsed: run.elapsed,
        conditions: format!(
            "requests, not events: {} clients with keep-alive, GET /health (no token, no \
             storage), the service otherwise idle",
            args.concurrency.min(args.events)
        ),
    })
}

/// A one-item request's `(succeeded, failed)`.
const fn one(succeeded: bool) -> (u64, u64) {
    if succeeded { (1, 0) } else { (0, 1) }
}

/// How a closed-loop run of requests went.
struct Run {
    ok: u64,
    failed: u64,
    elapsed: Duration,
}

/// `total` requests from `clients` tasks, each sending its next one when the last is answered;
/// `request(n)` sends the `n`-th and says how many of its items succeeded and failed.
async fn drive<F, Fut>(clients: usize, total: usize, request: F) -> Run
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = (u64, u64)> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.min(total) {
        let (next, request) = (Arc::clone(&next), request.clone());
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let (succeeded, refused) = request(n).await;
                ok.fetch_add(succeeded, Ordering::Relaxed);
                failed.fetch_add(refused, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Run {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

async fn http_batch(
    args: &IngestBenchArgs,
    url: &str,
    mode: Mode,
    scratch: &mut Scratch,
) -> anyhow::Result<Figure> {
    let service = Arc::new(start_service(args, url, scratch).await?);
    let client = http_client(args.batch_concurrency)?;
    let batches = args.events.div_ceil(args.batch_size);
    let head = service.log.stream_head().await?;
    let commits_before = commits(&args.database_url, &service.database).await?;
    let cpu = CpuSpan::start(url);
    let run = {
        let service = Arc::clone(&service);
        let (total, size) = (args.events, args.batch_size);
        drive(args.batch_concurrency, batches, move |batch| {
            let (service, client) = (Arc::clone(&service), client.clone());
            async move {
                let from = batch * size;
                let items: Vec<Value> = (from..(from + size).min(total))
                    .map(|n| service.referral(n))
                    .collect();
                let count = items.len() as u64;
                let created = post_batch(&client, &service, items).await;
                (created, count - created)
            }
        })
        .await
    };
    let cpu = cpu.end().per(run.ok, "referral");
    let events = service.log.stream_head().await? - head;
    let service = Arc::into_inner(service).context("the HTTP clients are done")?;
    let version = service.version.clone();
    let database = service.database.clone();
    service.stop().await?;
    let per_referral =
        commits_per_referral(&args.database_url, &database, commits_before, run.ok).await?;
    Ok(Figure {
        kind: Kind::HttpBatch,
        mode,
        events,
        referrals: Some(run.ok),
        failed: run.failed,
        elapsed: run.elapsed,
        conditions: format!(
            "batches of {} referrals, {} in flight, {per_referral:.1} PostgreSQL transactions per \
             referral (projections and reads included); {cpu}; nats-server {version}",
            args.batch_size,
            args.batch_concurrency.min(batches)
        ),
    })
}

/// Posts one batch; how many of its items were created.
async fn post_batch(client: &reqwest::Client, service: &Service, items: Vec<Value>) -> u64 {
    let response = client
        .post(format!("{}/v1/referrals/batch", service.base))
        .bearer_auth(&service.token)
        .json(&json!({ "referrals": items }))
        .send()
        .await;
    let Ok(response) = response else { return 0 };
    if !response.status().is_success() {
        return 0;
    }
    let Ok(body) = response.json::<Value>().await else {
        return 0;
    };
    body.get("results")
        .and_then(Value::as_array)
        .map_or(0, |results| {
            results
                .iter()
                .filter(|item| item.get("status").and_then(Value::as_str) == Some("created"))
                .count() as u64
        })
}

/// The peer: the event-store shape most event-sourcing libraries use on PostgreSQL. One row
/// per event, the primary key `(stream_id, version)` is the optimistic-concurrency check (a
/// unique violation is a conflict), one transaction per event.
async fn postgres_peer(
    args: &IngestBenchArgs,
    mode: Mode,
    scratch: &mut Scratch,
) -> anyhow::Result<Figure> {
    let db = scratch.database(&args.database_url).await?;
    let synchronous_commit = match mode {
        Mode::Durable => "on",
        Mode::Fast => "off",
    };
    let options: PgConnectOptions = db
        .url
        .parse::<PgConnectOptions>()?
        .options([("synchronous_commit", synchronous_commit)]);
    let writers = args.concurrency.min(args.events);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(writers)?)
        .min_connections(u32::try_from(writers)?)
        .connect_with(options.disable_statement_logging())
        .await?;
    sqlx::query(
        "CREATE TABLE events (stream_id uuid NOT NULL, version int NOT NULL, type text NOT NULL, \
         data jsonb NOT NULL, PRIMARY KEY (stream_id, version))",
    )
    .execute(&pool)
    .await?;
    let data: Value = serde_json::from_slice(&payload(args.payload))?;
    let cpu = CpuSpan::start(&args.nats_url);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..writers {
        let (pool, data) = (pool.clone(), data.clone());
        let count = share(args.events, writers, index);
        tasks.spawn(async move { pg_writer(&pool, &data, count).await });
    }
    let (events, failed) = join_counts(tasks).await;
    let elapsed = started.elapsed();
    let cpu = cpu.end().per(events, "event");
    pool.close().await;
    Ok(Figure {
        kind: Kind::Postgres,
        mode,
        events,
        referrals: None,
        failed,
        elapsed,
        conditions: format!(
            "{writers} writers over a pool of {writers}, one INSERT (its own transaction) per \
             event with the expected version, synchronous_commit = {synchronous_commit}; {cpu}"
        ),
    })
}

async fn pg_writer(pool: &PgPool, data: &Value, count: usize) -> (u64, u64) {
    let stream = Uuid::now_v7();
    let (mut version, mut ok, mut failed) = (0_i32, 0_u64, 0_u64);
    for _ in 0..count {
        let inserted = sqlx::query(
            "INSERT INTO events (stream_id, version, type, data) VALUES ($1, $2, $3, $4)",
        )
        .bind(stream)
        .bind(version + 1)
        .bind("bench.appended.v1")
        .bind(data)
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => {
                version += 1;
                ok += 1;
            }
            Err(err) => {
                // A conflict here would mean the peer is broken: each writer owns its stream.
                if err
                    .as_database_error()
                    .is_some_and(|err| err.is_unique_violation())
                {
                    version += 1;
                }
                failed += 1;
            }
        }
    }
    (ok, failed)
}

/// Transactions committed in a database so far. A backend reports its counts when it ends, so
/// after the service has stopped (its pool closed) the count is complete.
async fn commits(admin_url: &str, database: &str) -> anyhow::Result<i64> {
    let pool = admin_pool(admin_url).await?;
    let commits: Option<i64> =
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(database)
            .fetch_optional(&pool)
            .await?;
    pool.close().await;
    Ok(commits.unwrap_or(0))
}

/// PostgreSQL transactions (reads too) per accepted referral during a run, waiting briefly for
/// the stopped service's backends to report theirs.
async fn commits_per_referral(
    admin_url: &str,
    database: &str,
    before: i64,
    referrals: u64,
) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = commits(admin_url, database).await?;
    Ok((after - before) as f64 / referrals.max(1) as f64)
}

/// The PostgreSQL server's version and durability settings, for the conditions line.
async fn postgres_conditions(url: &str) -> anyhow::Result<String> {
    let pool = admin_pool(url).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&pool).await?;
    pool.close().await;
    Ok(format!("PostgreSQL {version} (fsync = {fsync})"))
}
