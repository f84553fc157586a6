//! `funnel bench queue`: claims and completions per second through the work-queue API, with
//! many agents working one study's first contacts at once, and a check that no item was ever
//! handed to two agents.
//!
//! The service runs in this process (`funnel_api::Application` on 127.0.0.1 port 0, its own
//! stream and scratch database, projections running, the system clock). The open items are put
//! in place first: referrals appended straight through the service's command layer (the
//! journey's `ReferralReceived` event, with a placeholder sealed contact: nobody reads it
//! here), then the benchmark waits until the `work_queue` read model shows every one. Each
//! agent then loops `POST /v1/queues/claim` and `POST /v1/queues/items/{id}/complete` with
//! `no_answer` (a contact attempt appended to the journey) until the queue is empty or the
//! cycles are done. Every stream and database it creates is deleted afterwards.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use funnel_api::auth::{NewToken, Role};
use funnel_api::commands::CommandService;
use funnel_api::{Application, ServiceSettings};
use funnel_db::DbSettings;
use funnel_domain::{
    AgentId, CampaignId, CandidateId, Country, JourneyCommand, JourneyId, Language, SealedContact,
    SiteId, SlaSettings, SourceChannel, SponsorId, StudyCommand, StudyId,
};
use funnel_eventlog::{EventLog, EventLogSettings};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::procfs::{CpuSpan, CpuSpent};
use super::scratch::{Scratch, admin_pool, until_interrupted};

/// The servers a benchmark runs against.
#[derive(Debug, Args)]
pub(super) struct Servers {
    /// nats-server on this machine; it must run with `sync_interval: always`, as
    /// `deploy/bench.sh` starts it (a secret: never printed).
    #[arg(
        long,
        env = "FUNNEL_NATS_URL",
        default_value = "nats://127.0.0.1:14222",
        hide_env_values = true
    )]
    pub(super) nats_url: String,
    /// Any database on the PostgreSQL server, as a user that may create databases: the
    /// benchmark creates a database `funnel_bench_*` beside it and drops it afterwards (a
    /// secret: never printed).
    #[arg(
        long,
        env = "FUNNEL_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub(super) database_url: String,
}

#[derive(Debug, Args)]
pub(crate) struct QueueBenchArgs {
    #[command(flatten)]
    servers: Servers,
    /// Open first-contact items put in the queue before the agents start.
    #[arg(long, default_value_t = 20_000)]
    items: usize,
    /// Agents working the queue at once, each with a token of its own.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Stop after this many claim + complete cycles in all (default: until the queue is empty).
    #[arg(long)]
    cycles: Option<usize>,
    /// Sites of the study.
    #[arg(long, default_value_t = 20)]
    sites: usize,
    /// Referral appends in flight while the queue is filled.
    #[arg(long, default_value_t = 128)]
    fill_concurrency: usize,
    /// PostgreSQL connections of the service's pool (`FUNNEL_DATABASE_MAX_CONNECTIONS`).
    #[arg(long, default_value_t = 16)]
    database_max_connections: u32,
}

/// The PostgreSQL server's version and durability settings, for the conditions line.
pub(super) async fn postgres_conditions(url: &str) -> anyhow::Result<String> {
    let pool = admin_pool(url).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&pool).await?;
    let commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(format!(
        "PostgreSQL {version} (fsync = {fsync}, synchronous_commit = {commit})"
    ))
}

/// Waits until every live read model has applied the stream up to `head`; how long it took.
pub(super) async fn wait_for_projections(
    db: &PgPool,
    head: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let head = i64::try_from(head)?;
    loop {
        let behind: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT name, position, status FROM projection_generations \
             WHERE state = 'live' AND (position < $1 OR status <> 'running') ORDER BY name",
        )
        .bind(head)
        .fetch_all(db)
        .await?;
        if let Some((name, _, _)) = behind.iter().find(|(_, _, status)| status != "running") {
            anyhow::bail!("the read model {name} failed");
        }
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM projection_generations WHERE state = 'live'")
                .fetch_one(db)
                .await?;
        if behind.is_empty() && live > 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "read models still behind stream sequence {head} after {timeout:?}: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A study with `sites` sites in Spain and Germany, Spanish and German speaking, and a campaign.
pub(super) struct Study {
    pub(super) id: StudyId,
    pub(super) sites: Vec<SiteId>,
    pub(super) campaign: CampaignId,
    pub(super) languages: Vec<Language>,
}

impl Study {
    pub(super) async fn create(commands: &CommandService, sites: usize) -> anyhow::Result<Self> {
        let (es, de) = (Language::parse("es")?, Language::parse("de")?);
        let (spain, germany) = (Country::parse("ES")?, Country::parse("DE")?);
        let study = Self {
            id: StudyId::new(),
            sites: (0..sites.max(1)).map(|_| SiteId::new()).collect(),
            campaign: CampaignId::new(),
            languages: vec![es.clone(), de.clone()],
        };
        let now = chrono::Utc::now();
        let mut setup = vec![StudyCommand::CreateStudy {
            at: now,
            study_id: study.id,
            sponsor_id: SponsorId::new(),
            title: "Benchmark study".to_owned(),
            protocol_code: "BENCH-1".to_owned(),
            target_randomized: 500,
            countries: vec![spain.clone(), germany.clone()],
            languages: study.languages.clone(),
            sla: SlaSettings::default(),
        }];
        for (n, site) in study.sites.iter().enumerate() {
            let (country, language) = if n.is_multiple_of(2) {
                (spain.clone(), es.clone())
            } else {
                (germany.clone(), de.clone())
            };
            setup.push(StudyCommand::AddSite {
                at: now,
                site_id: *site,
                name: format!("Benchmark site {n}"),
                country,
                languages: vec![language],
                monthly_target_randomized: 2.0,
            });
        }
        setup.push(StudyCommand::RegisterCampaign {
            at: now,
            campaign_id: study.campaign,
            name: "Benchmark campaign".to_owned(),
            channel: SourceChannel::Ads,
        });
        for command in &setup {
            commands
                .execute_study(study.id, None, command)
                .await
                .map_err(|err| anyhow::anyhow!("setting up the benchmark study: {err}"))?;
        }
        Ok(study)
    }

    /// Referral `n` of a made-up candidate with consent to contact: Spanish or German, every
    /// other one, preferring one of the study's sites. The contact is a placeholder of the
    /// sealed form's size (the benchmark never opens it).
    pub(super) fn referral(&self, n: usize, journey: JourneyId) -> anyhow::Result<JourneyCommand> {
        let (language, country, zone) = if n.is_multiple_of(2) {
            ("es", "ES", "Europe/Madrid")
        } else {
            ("de", "DE", "Europe/Berlin")
        };
        Ok(JourneyCommand::ReceiveReferral {
            at: chrono::Utc::now(),
            journey_id: journey,
            candidate_id: CandidateId::new(),
            study_id: self.id,
            campaign_id: self.campaign,
            source: SourceChannel::Ads,
            language: Language::parse(language)?,
            country: Country::parse(country)?,
            preferred_site: Some(self.sites[n % self.sites.len()]),
            consent_to_contact: true,
            contact: SealedContact {
                alg: "xchacha20poly1305".to_owned(),
                nonce: "A".repeat(32),
                ciphertext: "B".repeat(160),
            },
            external_ref: Some(format!("bench-{n}")),
            time_zone: Some(zone.to_owned()),
        })
    }
}

/// Appends `count` journeys through `commands`, `concurrency` at a time, each started by
/// `journey(n, id)`'s commands in one atomic append; how many appends failed.
pub(super) async fn append_journeys<F>(
    commands: &CommandService,
    range: std::ops::Range<usize>,
    concurrency: usize,
    journey: F,
) -> u64
where
    F: Fn(usize, JourneyId) -> anyhow::Result<Vec<JourneyCommand>> + Send + Sync + 'static,
{
    let journey = Arc::new(journey);
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (commands, next, journey) = (commands.clone(), Arc::clone(&next), Arc::clone(&journey));
        tasks.spawn(async move {
            let mut failed = 0_u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    break;
                }
                let id = JourneyId::new();
                let appended = match journey(n, id) {
                    Ok(steps) => commands
                        .execute_journey_commands(id, None, &steps)
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from),
                    Err(err) => Err(err),
                };
                if let Err(err) = appended {
                    if failed == 0 {
                        tracing::warn!(%err, "a benchmark journey was not appended");
                    }
                    failed += 1;
                }
            }
            failed
        });
    }
    let mut failed = 0;
    while let Some(result) = tasks.join_next().await {
        failed += result.unwrap_or(1);
    }
    failed
}

/// What one agent saw.
#[derive(Default)]
struct AgentLog {
    claims: Vec<Duration>,
    completions: Vec<Duration>,
    /// item, holder, when the claim was sent, when the completion was answered.
    held: Vec<(Uuid, usize, Instant, Instant)>,
    empty: u64,
    failed_claims: u64,
    failed_completions: u64,
    first_error: Option<String>,
}

pub(crate) async fn queue(args: QueueBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.items > 0 && args.agents > 0 && args.fill_concurrency > 0,
        "sizes and concurrencies must be positive"
    );
    let mut scratch = Scratch::default();
    let result = until_interrupted(run(&args, &mut scratch)).await;
    scratch.cleanup(&args.servers.database_url).await;
    result
}

async fn run(args: &QueueBenchArgs, scratch: &mut Scratch) -> anyhow::Result<()> {
    let (stream, prefix) = scratch.stream(&args.servers.nats_url, "QUEUE");
    let eventlog = EventLogSettings::new(args.servers.nats_url.clone(), stream, prefix);
    let mut db = scratch.database(&args.servers.database_url).await?;
    db.max_connections = args.database_max_connections;
    let mut settings = ServiceSettings::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        db.clone(),
        eventlog.clone(),
    );
    // The per-token limit would measure itself instead of the queue.
    settings.rate_limit_per_second = NonZeroU32::MAX;
    settings.rate_limit_burst = NonZeroU32::MAX;
    settings.run_projections = true;
    let lease = settings.queue.lease;
    let app = Application::build(settings, prometheus::Registry::new()).await?;
    let setup = Setup {
        commands: app.commands().clone(),
        tokens: app.tokens().clone(),
        base: format!("http://{}", app.local_addr()),
        db,
        eventlog,
        lease,
    };
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let outcome = measure(args, &setup).await;
    let _ = shutdown.send(());
    server.await??;
    outcome
}

/// The service under measurement.
struct Setup {
    commands: CommandService,
    tokens: funnel_api::auth::TokenStore,
    base: String,
    db: DbSettings,
    eventlog: EventLogSettings,
    lease: Duration,
}

async fn measure(args: &QueueBenchArgs, setup: &Setup) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let pg_conditions = postgres_conditions(&args.servers.database_url).await?;
    let pool = funnel_db::connect(&setup.db).await?;
    let events = EventLog::connect(setup.eventlog.clone()).await?;
    let nats_version = events.capabilities().version.to_string();
    let study = Arc::new(Study::create(&setup.commands, args.sites).await?);

    let started = Instant::now();
    let filler = Arc::clone(&study);
    let failed = append_journeys(
        &setup.commands,
        0..args.items,
        args.fill_concurrency,
        move |n, id| Ok(vec![filler.referral(n, id)?]),
    )
    .await;
    anyhow::ensure!(failed == 0, "{failed} referrals were not appended");
    let appended = started.elapsed();
    let head = events.stream_head().await?;
    let caught_up = wait_for_projections(&pool, head, Duration::from_secs(1800)).await?;
    let open = open_items(&pool).await?;
    anyhow::ensure!(
        open == args.items,
        "the work queue shows {open} open items, {} expected",
        args.items
    );
    writeln!(
        std::io::stdout().lock(),
        "queue benchmark: {} open first-contact items ({} referrals appended in {:.1} s, \
         {:.0}/s, {} in flight; the work queue showed them all {:.1} s later), {} agents, \
         {cores} cores; nats-server {nats_version} (file storage, 1 replica) and \
         {pg_conditions} on this machine; the service runs in this process (HTTP on 127.0.0.1, \
         projections running, {} pooled PostgreSQL connections, leases of {} s, rate limit \
         raised out of the way)",
        args.items,
        args.items,
        appended.as_secs_f64(),
        args.items as f64 / appended.as_secs_f64().max(f64::EPSILON),
        args.fill_concurrency,
        caught_up.as_secs_f64(),
        args.agents,
        setup.db.max_connections,
        setup.lease.as_secs(),
    )?;

    let mut agent_tokens = Vec::with_capacity(args.agents);
    for n in 0..args.agents {
        let (_, token) = setup
            .tokens
            .create(&NewToken {
                name: format!("bench agent {n}"),
                role: Some(Role::Agent),
                agent_id: Some(AgentId::new()),
                study_ids: vec![study.id],
                languages: study.languages.clone(),
                ..NewToken::default()
            })
            .await?;
        agent_tokens.push(token);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.agents)
        .timeout(Duration::from_secs(60))
        .build()?;
    let cycles = args.cycles.unwrap_or(args.items);
    let tickets = Arc::new(AtomicUsize::new(0));
    let head_before = events.stream_head().await?;
    let cpu = CpuSpan::start(&args.servers.nats_url);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (agent, token) in agent_tokens.into_iter().enumerate() {
        let (client, tickets) = (client.clone(), Arc::clone(&tickets));
        let base = setup.base.clone();
        tasks.spawn(async move { work(agent, &client, &base, &token, &tickets, cycles).await });
    }
    let mut logs = Vec::with_capacity(args.agents);
    while let Some(log) = tasks.join_next().await {
        logs.push(log?);
    }
    let elapsed = started.elapsed();
    let cpu = cpu.end();
    let appended_events = events.stream_head().await? - head_before;
    events.shutdown().await;
    let verdict = report(&logs, elapsed, appended_events, cpu, &pool).await;
    pool.close().await;
    verdict
}

/// Open items in the live `work_queue` generation.
async fn open_items(pool: &PgPool) -> anyhow::Result<usize> {
    let schema: String = sqlx::query_scalar(
        "SELECT schema_name FROM projection_generations \
         WHERE name = 'work_queue' AND state = 'live'",
    )
    .fetch_one(pool)
    .await
    .context("the work_queue read model has no live generation")?;
    let count = format!("SELECT count(*) FROM \"{schema}\".work_items");
    let open: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
        .fetch_one(pool)
        .await?;
    Ok(usize::try_from(open)?)
}

/// One agent: claim, complete with `no_answer`, again, until the queue has nothing for it or
/// the cycles are all taken.
async fn work(
    agent: usize,
    client: &reqwest::Client,
    base: &str,
    token: &str,
    tickets: &AtomicUsize,
    cycles: usize,
) -> AgentLog {
    let mut log = AgentLog::default();
    while tickets.fetch_add(1, Ordering::Relaxed) < cycles {
        let sent = Instant::now();
        let claimed = client
            .post(format!("{base}/v1/queues/claim"))
            .bearer_auth(token)
            .send()
            .await;
        let item = match claimed {
            Ok(response) if response.status() == reqwest::StatusCode::NO_CONTENT => {
                log.empty += 1;
                break;
            }
            Ok(response) if response.status() == reqwest::StatusCode::OK => {
                match response.json::<Value>().await {
                    Ok(body) => body
                        .get("item_id")
                        .and_then(Value::as_str)
                        .and_then(|id| Uuid::parse_str(id).ok()),
                    Err(_) => None,
                }
            }
            Ok(response) => {
                log.note(format!(
                    "claim: {} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ));
                None
            }
            Err(err) => {
                log.note(format!("claim: {err}"));
                None
            }
        };
        log.claims.push(sent.elapsed());
        let Some(item) = item else {
            log.failed_claims += 1;
            continue;
        };
        let completing = Instant::now();
        let completed = client
            .post(format!("{base}/v1/queues/items/{item}/complete"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "outcome": "no_answer" }))
            .send()
            .await;
        match completed {
            Ok(response) if response.status() == reqwest::StatusCode::OK => {
                let _ = response.bytes().await;
            }
            Ok(response) => {
                log.note(format!(
                    "complete: {} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ));
                log.failed_completions += 1;
            }
            Err(err) => {
                log.note(format!("complete: {err}"));
                log.failed_completions += 1;
            }
        }
        let done = Instant::now();
        log.completions.push(done - completing);
        log.held.push((item, agent, sent, done));
    }
    log
}

impl AgentLog {
    fn note(&mut self, error: String) {
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }
}

/// The `q` quantile of `samples` (sorted in place), in milliseconds.
fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index.min(samples.len() - 1)].as_secs_f64() * 1000.0
}

/// Prints the figures and checks that no item went to two agents; an error if one did or a
/// request failed.
async fn report(
    logs: &[AgentLog],
    elapsed: Duration,
    appended_events: u64,
    cpu: CpuSpent,
    pool: &PgPool,
) -> anyhow::Result<()> {
    let mut claims: Vec<Duration> = logs.iter().flat_map(|log| log.claims.clone()).collect();
    let mut completions: Vec<Duration> = logs
        .iter()
        .flat_map(|log| log.completions.clone())
        .collect();
    let failed_claims: u64 = logs.iter().map(|log| log.failed_claims).sum();
    let failed_completions: u64 = logs.iter().map(|log| log.failed_completions).sum();
    let empty: u64 = logs.iter().map(|log| log.empty).sum();
    let done = completions.len() as u64 - failed_completions;
    let claimed = claims.len() as u64 - failed_claims;
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);

    // Client side: every item claimed once; were one claimed twice, the two holds must not
    // overlap (they cannot in this run: each hold ends in a completion).
    let mut holds: HashMap<Uuid, Vec<(usize, Instant, Instant)>> = HashMap::new();
    for log in logs {
        for &(item, agent, from, to) in &log.held {
            holds.entry(item).or_default().push((agent, from, to));
        }
    }
    let twice = holds.values().filter(|holds| holds.len() > 1).count();
    let overlapping = holds
        .values()
        .filter(|holds| {
            holds.iter().enumerate().any(|(i, a)| {
                holds[i + 1..]
                    .iter()
                    .any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2)
            })
        })
        .count();
    // Server side: the completion history has one row per item, and the stream one event per
    // completion (a first unanswered call is one contact attempt).
    let (rows, items): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT item_id) FROM work_completions")
            .fetch_one(pool)
            .await?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "figure  claim + complete cycles: {:.0} cycles/s, {:.0} requests/s (claims + \
         completions), {done} cycles in {seconds:.2} s",
        done as f64 / seconds,
        (claimed + done) as f64 / seconds,
    )?;
    writeln!(
        out,
        "        claim latency p50 {:.1} ms, p99 {:.1} ms; complete latency p50 {:.1} ms, p99 \
         {:.1} ms (HTTP round trip from the client, keep-alive)",
        quantile_ms(&mut claims, 0.5),
        quantile_ms(&mut claims, 0.99),
        quantile_ms(&mut completions, 0.5),
        quantile_ms(&mut completions, 0.99),
    )?;
    writeln!(out, "        {}", cpu.per(done, "cycle"))?;
    writeln!(
        out,
        "        {failed_claims} failed claims, {failed_completions} failed completions, {empty} \
         agents stopped on 204 (nothing claimable); {appended_events} events appended"
    )?;
    writeln!(
        out,
        "check   items claimed twice: {twice} (overlapping holds by two agents: {overlapping}); \
         work_completions: {rows} rows for {items} items"
    )?;
    if let Some(error) = logs.iter().find_map(|log| log.first_error.as_ref()) {
        writeln!(out, "        first failure: {error}")?;
    }
    let rate = (claimed + done) as f64 / seconds;
    writeln!(
        out,
        "target  >= 2,000 claims + completions per second with no double claim: {:.0}/s, {}",
        rate,
        if rate >= 2000.0 && twice == 0 && rows == items {
            "met"
        } else {
            "MISSED"
        }
    )?;
    anyhow::ensure!(
        twice == 0 && overlapping == 0 && rows == items,
        "an item was handed out twice"
    );
    anyhow::ensure!(
        failed_claims == 0 && failed_completions == 0,
        "{failed_claims} claims and {failed_completions} completions failed"
    );
    anyhow::ensure!(
        u64::try_from(rows)? == done && appended_events == done,
        "{done} completions answered, {rows} recorded, {appended_events} events appended"
    );
    Ok(())
}
