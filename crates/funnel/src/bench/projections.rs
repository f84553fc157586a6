//! `funnel bench projections`: how fast the read models are rebuilt from the stream, and how
//! long an appended event takes to become visible in them under a sustained append rate.
//!
//! Both run on a scratch stream and scratch databases, deleted at the end. The events are
//! synthetic but legal: studies with sites and campaigns, then journeys walked through the
//! funnel by the domain's own `decide`/`evolve` ([`Synthetic`], shared with
//! `funnel bench dashboard`). They are written with pipelined raw JetStream publishes carrying
//! the same CloudEvents headers as the event log's appends, so the projector reads exactly
//! what it reads in service.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::Args;
use funnel_domain::{
    CampaignId, CandidateId, ContactChannel, ContactOutcome, Country, Currency, DomainEvent,
    JourneyCommand, JourneyEvent, JourneyId, JourneyState, Language, SealedContact, SiteId,
    SlaSettings, SourceChannel, SponsorId, StudyCommand, StudyId, StudyState, decide, decide_study,
    evolve, evolve_study,
};
use funnel_eventlog::{EventLog, StreamKey};
use funnel_projections::{
    ProjectedEvent, Projector, ProjectorSettings, SponsorDashboard, WorkQueue,
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::procfs::CpuSpan;
use super::scratch::{Scratch, until_interrupted};

#[derive(Debug, Args)]
pub(crate) struct ProjectionsBenchArgs {
    /// NATS server URL (a secret: never printed).
    #[arg(
        long,
        env = "FUNNEL_NATS_URL",
        default_value = "nats://127.0.0.1:14222",
        hide_env_values = true
    )]
    pub(crate) nats_url: String,
    /// A PostgreSQL database URL; the benchmark creates (and drops) scratch databases beside
    /// it (a secret: never printed).
    #[arg(
        long,
        env = "FUNNEL_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub(crate) database_url: String,
    /// Events written to the stream before the rebuilds (at least; whole journeys).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Studies the events belong to.
    #[arg(long, default_value_t = 100)]
    studies: usize,
    /// Sites per study.
    #[arg(long, default_value_t = 7)]
    sites_per_study: usize,
    /// Appended events per second while measuring the lag.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// How long to append at `--rate` while measuring the lag.
    #[arg(long, default_value_t = 30)]
    lag_seconds: u64,
    /// One event in this many is a lag sample.
    #[arg(long, default_value_t = 10)]
    sample_every: usize,
    /// Seed of the synthetic events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip the rebuild figures (lag only).
    #[arg(long)]
    skip_rebuild: bool,
}

// ---------------------------------------------------------------------------------------
// Synthetic, legal events.

/// SplitMix64: a small deterministic generator (the figures need no better).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % n.max(1) as u64).unwrap_or(0)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64) < p
    }

    pub(crate) fn uuid(&mut self) -> Uuid {
        let mut bytes = [0_u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    fn hours(&mut self, from: i64, to: i64) -> TimeDelta {
        let span = u64::try_from(to - from).unwrap_or(1).max(1) * 3600;
        TimeDelta::seconds(from * 3600 + i64::try_from(self.next_u64() % span).unwrap_or(0))
    }
}

/// A journey's business time, moving forward step by step.
struct Clock(DateTime<Utc>);

impl Clock {
    fn step(&mut self, rng: &mut Rng, from_hours: i64, to_hours: i64) -> DateTime<Utc> {
        self.0 += rng.hours(from_hours, to_hours);
        self.0
    }
}

const COUNTRIES: [&str; 7] = ["ES", "DE", "FR", "IT", "PL", "GB", "US"];
const LANGUAGES: [&str; 7] = ["es", "de", "fr", "it", "pl", "en", "pt"];

/// One study as the journeys see it.
pub(crate) struct StudySetup {
    pub(crate) id: StudyId,
    pub(crate) sponsor: SponsorId,
    pub(crate) sites: Vec<SiteId>,
    campaigns: Vec<(CampaignId, SourceChannel)>,
}

/// Studies with sites, campaigns and spend, then journeys walked through the funnel, every
/// event produced by the domain's `decide` (so every history is one the service accepts).
pub(crate) struct Synthetic {
    rng: Rng,
    pub(crate) studies: Vec<StudySetup>,
    start: DateTime<Utc>,
    /// Business time between consecutive referrals.
    spacing: TimeDelta,
    journeys: u64,
    seq: u64,
}

fn sealed() -> SealedContact {
    SealedContact {
        alg: "xchacha20poly1305".into(),
        nonce: "bm9uY2U=".into(),
        ciphertext: "c2VhbGVkIGNvbnRhY3QgZGF0YSBvZiB0aGUgY2FuZGlkYXRl".into(),
    }
}

fn country(index: usize) -> Country {
    Country::parse(COUNTRIES[index % COUNTRIES.len()]).expect("a known country code")
}

fn language(index: usize) -> Language {
    Language::parse(LANGUAGES[index % LANGUAGES.len()]).expect("a known language tag")
}

impl Synthetic {
    /// `expected_journeys` spreads the referrals over about a year of business time.
    pub(crate) fn new(seed: u64, expected_journeys: u64) -> Self {
        let year = TimeDelta::days(365).num_milliseconds();
        let spacing = year / i64::try_from(expected_journeys.max(1)).unwrap_or(i64::MAX);
        Self {
            rng: Rng::new(seed),
            studies: Vec::new(),
            start: "2025-01-06T08:00:00Z".parse().expect("a time"),
            spacing: TimeDelta::milliseconds(spacing.max(1)),
            journeys: 0,
            seq: 0,
        }
    }

    /// The business time of the latest referral so far.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.start + self.spacing * i32::try_from(self.journeys).unwrap_or(i32::MAX)
    }

    fn projected(&mut self, key: &StreamKey, event: DomainEvent) -> ProjectedEvent {
        self.seq += 1;
        ProjectedEvent {
            seq: self.seq,
            key: key.clone(),
            id: self.rng.uuid(),
            time: event.at(),
            event,
        }
    }

    /// The study streams of `studies` studies with `sites` sites each, three campaigns and a
    /// few months of spend.
    pub(crate) fn setup(&mut self, studies: usize, sites: usize) -> Vec<ProjectedEvent> {
        let mut events = Vec::new();
        for n in 0..studies {
            let id = StudyId::from_uuid(self.rng.uuid());
            let sponsor = SponsorId::from_uuid(self.rng.uuid());
            let key = StreamKey::new("study", *id.as_uuid()).expect("a study key");
            let at = self.start - TimeDelta::days(30);
            let mut commands = vec![StudyCommand::CreateStudy {
                at,
                study_id: id,
                sponsor_id: sponsor,
                title: format!("Synthetic study {n}"),
                protocol_code: format!("SYN-{n:04}"),
                target_randomized: 40 + u32::try_from(self.rng.below(200)).unwrap_or(0),
                countries: (0..3).map(|c| country(n + c)).collect(),
                languages: (0..3).map(|c| language(n + c)).collect(),
                sla: SlaSettings::default(),
            }];
            let mut site_ids = Vec::new();
            for s in 0..sites {
                let site = SiteId::from_uuid(self.rng.uuid());
                site_ids.push(site);
                commands.push(StudyCommand::AddSite {
                    at: at + TimeDelta::hours(i64::try_from(s).unwrap_or(0)),
                    site_id: site,
                    name: format!("Site {n}-{s}"),
                    country: country(n + s % 3),
                    languages: vec![language(n + s % 3)],
                    monthly_target_randomized: 0.5 + f64::from(u32::try_from(s % 4).unwrap_or(0)),
                });
            }
            let mut campaigns = Vec::new();
            for c in 0..3 {
                let campaign = CampaignId::from_uuid(self.rng.uuid());
                let channel = SourceChannel::ALL[(n + c) % SourceChannel::ALL.len()];
                campaigns.push((campaign, channel));
                commands.push(StudyCommand::RegisterCampaign {
                    at,
                    campaign_id: campaign,
                    name: format!("Campaign {n}-{c}"),
                    channel,
                });
                for month in 0..3_u32 {
                    let period_start =
                        chrono::NaiveDate::from_ymd_opt(2025, 1 + month, 1).expect("a date");
                    commands.push(StudyCommand::RecordCampaignSpend {
                        at: at + TimeDelta::days(i64::from(month) * 30 + 30),
                        campaign_id: campaign,
                        amount_minor: 10_000 + i64::try_from(self.rng.below(500_000)).unwrap_or(0),
                        currency: Currency::parse("EUR").expect("a currency"),
                        period_start,
                        period_end: period_start + chrono::Days::new(27),
                    });
                }
            }
            let mut state = StudyState::NotCreated;
            for command in commands {
                for event in decide_study(&state, &command).expect("a legal study command") {
                    state = evolve_study(std::mem::take(&mut state), &event);
                    let projected = self.projected(&key, event.into());
                    events.push(projected);
                }
            }
            self.studies.push(StudySetup {
                id,
                sponsor,
                sites: site_ids,
                campaigns,
            });
        }
        events
    }

    /// One journey's history: referral, pre-screen, calls, the site, the appointment,
    /// consent, screening, randomization, with drop-outs at every step.
    fn journey(&mut self, referred_at: DateTime<Utc>) -> (StreamKey, Vec<JourneyEvent>) {
        let study = self.rng.below(self.studies.len());
        let journey_id = JourneyId::from_uuid(self.rng.uuid());
        let key = StreamKey::new("journey", *journey_id.as_uuid()).expect("a journey key");
        let setup = &self.studies[study];
        let (campaign_id, source) = setup.campaigns[self.rng.below(setup.campaigns.len())];
        let site = setup.sites[self.rng.below(setup.sites.len())];
        let other_site = setup.sites[self.rng.below(setup.sites.len())];
        let place = self.rng.below(3) + study;
        let mut commands = vec![JourneyCommand::ReceiveReferral {
            at: referred_at,
            journey_id,
            candidate_id: CandidateId::from_uuid(self.rng.uuid()),
            study_id: setup.id,
            campaign_id,
            source,
            language: language(place),
            country: country(place),
            preferred_site: None,
            consent_to_contact: true,
            contact: sealed(),
            external_ref: None,
            time_zone: Some("Europe/Madrid".into()),
        }];
        let rng = &mut self.rng;
        let mut clock = Clock(referred_at);
        'walk: {
            let passed = rng.chance(0.75);
            commands.push(JourneyCommand::CompletePrescreen {
                at: clock.step(rng, 0, 2),
                passed,
                reasons: Vec::new(),
            });
            if !passed {
                break 'walk;
            }
            let mut reached = false;
            for _ in 0..3 {
                reached = rng.chance(0.55);
                commands.push(JourneyCommand::RecordContactAttempt {
                    at: clock.step(rng, 1, 30),
                    channel: ContactChannel::Phone,
                    outcome: if reached {
                        ContactOutcome::Reached
                    } else {
                        ContactOutcome::NoAnswer
                    },
                    agent: None,
                });
                if reached {
                    break;
                }
            }
            if !reached {
                commands.push(JourneyCommand::MarkUnreachable {
                    at: clock.step(rng, 24, 48),
                });
                break 'walk;
            }
            commands.push(JourneyCommand::ReferToSite {
                at: clock.step(rng, 1, 24),
                site_id: site,
            });
            if rng.chance(0.15) {
                break 'walk;
            }
            if rng.chance(0.05) {
                commands.push(JourneyCommand::Reallocate {
                    at: clock.step(rng, 72, 200),
                    to_site: other_site,
                    reason: "the site is slow".into(),
                });
            }
            commands.push(JourneyCommand::RecordSiteContact {
                at: clock.step(rng, 2, 120),
            });
            let booked = clock.step(rng, 1, 24);
            commands.push(JourneyCommand::ScheduleAppointment {
                at: booked,
                appointment_at: clock.step(rng, 24, 300),
            });
            if rng.chance(0.2) {
                commands.push(JourneyCommand::RecordNoShow {
                    at: clock.step(rng, 1, 2),
                });
                if rng.chance(0.5) {
                    break 'walk;
                }
                let rebooked = clock.step(rng, 1, 24);
                commands.push(JourneyCommand::RescheduleAppointment {
                    at: rebooked,
                    appointment_at: clock.step(rng, 48, 200),
                });
            }
            commands.push(JourneyCommand::RecordAttendance {
                at: clock.step(rng, 0, 2),
            });
            if rng.chance(0.2) {
                break 'walk;
            }
            commands.push(JourneyCommand::RecordConsent {
                at: clock.step(rng, 0, 48),
            });
            commands.push(JourneyCommand::StartScreening {
                at: clock.step(rng, 24, 200),
            });
            if rng.chance(0.5) {
                commands.push(JourneyCommand::Randomize {
                    at: clock.step(rng, 48, 400),
                    arm: None,
                });
            } else {
                commands.push(JourneyCommand::RecordScreenFailure {
                    at: clock.step(rng, 48, 400),
                    reason: "inclusion criteria".into(),
                });
            }
        }
        let mut state = JourneyState::NotStarted;
        let mut history = Vec::with_capacity(commands.len());
        for command in &commands {
            // A command the domain refuses ends the walk (none should).
            let Ok(events) = decide(&state, command) else {
                break;
            };
            for event in events {
                state = evolve(state, &event);
                history.push(event);
            }
        }
        (key, history)
    }

    /// The events of `journeys` more journeys, interleaved in business-time order as they
    /// would arrive, numbered in that order.
    pub(crate) fn journeys(&mut self, journeys: usize) -> Vec<ProjectedEvent> {
        let mut timed: Vec<(DateTime<Utc>, StreamKey, JourneyEvent)> = Vec::new();
        for _ in 0..journeys {
            self.journeys += 1;
            let referred_at = self.now();
            let (key, history) = self.journey(referred_at);
            timed.extend(
                history
                    .into_iter()
                    .map(|event| (event.at(), key.clone(), event)),
            );
        }
        // Stable: a journey's own events keep their order.
        timed.sort_by_key(|(at, _, _)| *at);
        timed
            .into_iter()
            .map(|(_, key, event)| self.projected(&key, event.into()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Writing the stream.

/// The headers the event log's appends carry (`Nats-Msg-Id` and the CloudEvents attributes).
fn headers(event: &ProjectedEvent, event_type: &str) -> HeaderMap {
    let id = event.id.as_hyphenated().to_string();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", id.as_str());
    headers.insert("ce-type", event_type);
    headers.insert("ce-source", "/funnel/bench");
    headers.insert(
        "ce-time",
        event
            .time
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
            .as_str(),
    );
    headers.insert("ce-subject", event.key.id().to_string().as_str());
    headers.insert("ce-datacontenttype", "application/json");
    headers
}

/// Most events in one atomic batch (the server's limit is 1,000).
const BATCH: usize = 500;

/// Writes events to the log's stream in order, as atomic batches (one fsync per batch, as
/// the event log's group commit does), one batch at a time.
pub(crate) struct Writer {
    client: async_nats::Client,
    log: EventLog,
}

impl Writer {
    pub(crate) async fn new(url: &str, log: EventLog) -> anyhow::Result<Self> {
        Ok(Self {
            client: async_nats::connect(url).await?,
            log,
        })
    }

    /// One atomic batch of up to 1,000 events; returns the last stored sequence once the
    /// server has acknowledged the batch.
    async fn batch(&self, events: &[ProjectedEvent]) -> anyhow::Result<u64> {
        let batch_id = Uuid::new_v4().simple().to_string();
        let total = events.len();
        for (position, event) in (1..).zip(events) {
            let encoded = funnel_domain::encode(&event.event);
            let data = Bytes::from(serde_json::to_vec(&encoded.data)?);
            let mut headers = headers(event, &encoded.cloud_event_type());
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", position.to_string().as_str());
            if position == total {
                headers.insert("Nats-Batch-Commit", "1");
            }
            let subject = self.log.subject_of(&event.key);
            if position == 1 || position == total {
                let reply = self
                    .client
                    .request_with_headers(subject, headers, data)
                    .await
                    .context("an atomic batch")?;
                if position == total {
                    let ack: serde_json::Value = serde_json::from_slice(&reply.payload)?;
                    return ack
                        .get("seq")
                        .and_then(serde_json::Value::as_u64)
                        .with_context(|| format!("the batch was refused: {ack}"));
                }
                // The first message is answered empty unless the server refuses the batch.
                anyhow::ensure!(
                    reply.payload.is_empty(),
                    "the batch was refused: {}",
                    String::from_utf8_lossy(&reply.payload)
                );
            } else {
                self.client
                    .publish_with_headers(subject, headers, data)
                    .await?;
            }
        }
        anyhow::bail!("an empty batch")
    }

    pub(crate) async fn write(&self, events: &[ProjectedEvent]) -> anyhow::Result<()> {
        for chunk in events.chunks(BATCH) {
            self.batch(chunk).await?;
        }
        Ok(())
    }
}

/// A projector running in the background until [`Running::stop`].
pub(crate) struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub(crate) fn start(projector: Projector) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(projector.run(async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Each named projection's furthest generation position.
async fn positions(pool: &PgPool, names: &[&str]) -> anyhow::Result<Vec<u64>> {
    let mut result = Vec::with_capacity(names.len());
    for name in names {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT max(position) FROM projection_generations WHERE name = $1")
                .bind(*name)
                .fetch_one(pool)
                .await?;
        result.push(u64::try_from(position.unwrap_or(0)).unwrap_or(0));
    }
    Ok(result)
}

fn projector(log: &EventLog, pool: &PgPool, names: &[&str]) -> anyhow::Result<Projector> {
    let mut projector = Projector::new(
        log.clone(),
        pool.clone(),
        &prometheus::Registry::new(),
        ProjectorSettings::default(),
    )?;
    for name in names {
        projector = match *name {
            SponsorDashboard::NAME => projector.with(SponsorDashboard),
            _ => projector.with(WorkQueue),
        };
    }
    Ok(projector)
}

/// How long the event log's subscription takes to deliver events 1 to `head`, decoded into
/// domain events if `decoding`.
async fn read_stream(log: &EventLog, head: u64, decoding: bool) -> anyhow::Result<Duration> {
    use futures::StreamExt as _;
    let started = Instant::now();
    let mut events = std::pin::pin!(log.subscribe(0).await?);
    while let Some(event) = events.next().await {
        let event = event?;
        if decoding {
            let data: serde_json::Value = serde_json::from_slice(&event.data)?;
            funnel_domain::decode_cloud_event(&event.event_type, data)?;
        }
        if event.seq >= head {
            return Ok(started.elapsed());
        }
    }
    anyhow::bail!("the subscription ended before the stream head {head}")
}

/// Runs `names` from position 0 to `head` in a fresh database; returns each projection's
/// time to reach the head (they run side by side), and the CPU it all cost per event.
async fn rebuild(
    args: &ProjectionsBenchArgs,
    scratch: &mut Scratch,
    log: &EventLog,
    names: &[&str],
    head: u64,
) -> anyhow::Result<(Vec<Duration>, String)> {
    let pool = scratch.migrated_pool(&args.database_url).await?;
    let cpu = CpuSpan::start(&args.nats_url);
    let started = Instant::now();
    let running = Running::start(projector(log, &pool, names)?);
    let mut done: Vec<Option<Duration>> = vec![None; names.len()];
    while done.iter().any(Option::is_none) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (slot, position) in done.iter_mut().zip(positions(&pool, names).await?) {
            if slot.is_none() && position >= head {
                *slot = Some(started.elapsed());
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the rebuild did not finish within 30 minutes"
        );
    }
    let cpu = cpu.end().per(head, "event");
    running.stop().await;
    pool.close().await;
    Ok((done.into_iter().flatten().collect(), cpu))
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub(crate) async fn projections(args: ProjectionsBenchArgs) -> anyhow::Result<()> {
    let mut scratch = Scratch::default();
    let result = until_interrupted(run(&args, &mut scratch)).await;
    scratch.cleanup(&args.database_url).await;
    result
}

async fn run(args: &ProjectionsBenchArgs, scratch: &mut Scratch) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let log = scratch.event_log(&args.nats_url, "PROJ").await?;
    writeln!(
        out,
        "projection benchmark: nats-server {}, {} cores; scratch stream and databases, deleted \
         at the end",
        log.capabilities().version,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    )?;
    let mut synthetic = Synthetic::new(args.seed, (args.events / 6) as u64);
    let writer = Writer::new(&args.nats_url, log.clone()).await?;

    // The stream: study setup, then waves of journeys until `--events`.
    let started = Instant::now();
    let setup = synthetic.setup(args.studies, args.sites_per_study);
    writer.write(&setup).await?;
    let mut written = setup.len();
    let mut journeys = 0_usize;
    while written < args.events {
        let wave = synthetic.journeys(2000);
        journeys += 2000;
        written += wave.len();
        writer.write(&wave).await?;
    }
    let head = log.stream_head().await?;
    writeln!(
        out,
        "stream: {head} events ({} studies x {} sites, {journeys} journeys, {:.1} events per \
         journey) written in {:.1} s ({:.0} events/s, atomic batches of {BATCH}, one at a time)",
        args.studies,
        args.sites_per_study,
        (written - setup.len()) as f64 / journeys.max(1) as f64,
        started.elapsed().as_secs_f64(),
        rate(head, started.elapsed()),
    )?;

    if !args.skip_rebuild {
        // The ceiling of any rebuild on this machine: the projector's own subscription with
        // nothing behind it, then with the decoding every projection needs.
        for decoding in [false, true] {
            let cpu = CpuSpan::start(&args.nats_url);
            let elapsed = read_stream(&log, head, decoding).await?;
            writeln!(
                out,
                "reading the stream from position 0 (the projector's subscription{}, no \
                 PostgreSQL): {:.0} events/s ({:.1} s); {}",
                if decoding { ", each event decoded" } else { "" },
                rate(head, elapsed),
                elapsed.as_secs_f64(),
                cpu.end().per(head, "event"),
            )?;
        }
        writeln!(
            out,
            "rebuild from position 0 in a fresh database (projector defaults: batches up to \
             {} events, {:?} linger):",
            ProjectorSettings::default().max_batch_events,
            ProjectorSettings::default().batch_linger,
        )?;
        for names in [
            &[SponsorDashboard::NAME][..],
            &[WorkQueue::NAME][..],
            &[SponsorDashboard::NAME, WorkQueue::NAME][..],
        ] {
            let (times, cpu) = rebuild(args, scratch, &log, names, head).await?;
            let together = times.iter().max().copied().unwrap_or_default();
            let each: Vec<String> = names
                .iter()
                .zip(&times)
                .map(|(name, time)| {
                    format!(
                        "{name} {:.0} events/s ({:.1} s)",
                        rate(head, *time),
                        time.as_secs_f64()
                    )
                })
                .collect();
            writeln!(
                out,
                "  {:<34} {}{}",
                names.join(" + "),
                each.join(", "),
                if names.len() > 1 {
                    format!("; both done: {:.0} events/s", rate(head, together))
                } else {
                    String::new()
                },
            )?;
            writeln!(out, "  {:<34} {cpu}", "")?;
        }
    }

    lag(args, scratch, &log, &mut synthetic, &writer, head, &mut out).await
}

/// Appends at `--rate` for `--lag-seconds` while both projections run live, and measures
/// the time from each sampled append's acknowledgement to the read model's checkpoint
/// passing its sequence.
async fn lag(
    args: &ProjectionsBenchArgs,
    scratch: &mut Scratch,
    log: &EventLog,
    synthetic: &mut Synthetic,
    writer: &Writer,
    head: u64,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let names = [SponsorDashboard::NAME, WorkQueue::NAME];
    let pool = scratch.migrated_pool(&args.database_url).await?;
    let running = Running::start(projector(log, &pool, &names)?);
    // Caught up with what is there first.
    let started = Instant::now();
    while positions(&pool, &names).await?.iter().any(|p| *p < head) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writeln!(
        out,
        "live: both projections caught up with {head} events in {:.1} s; appending at {} \
         events/s for {} s, one event in {} sampled",
        started.elapsed().as_secs_f64(),
        args.rate,
        args.lag_seconds,
        args.sample_every,
    )?;
    let total = usize::try_from(args.rate * args.lag_seconds).unwrap_or(usize::MAX);
    let mut events = Vec::with_capacity(total + 2000);
    while events.len() < total {
        events.extend(synthetic.journeys(2000));
    }
    events.truncate(total);
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    // Visibility: every few milliseconds, which samples each checkpoint has passed.
    let poll_pool = pool.clone();
    let watcher = tokio::spawn(async move {
        let mut pending: Vec<VecDeque<(u64, Instant)>> = vec![VecDeque::new(); 2];
        let mut lags: Vec<Vec<Duration>> = vec![Vec::new(); 2];
        let mut open = true;
        loop {
            while let Ok(sample) = samples_rx.try_recv() {
                for queue in &mut pending {
                    queue.push_back(sample);
                }
            }
            if open && samples_rx.is_closed() && samples_rx.is_empty() {
                open = false;
            }
            if !open && pending.iter().all(VecDeque::is_empty) {
                break;
            }
            if let Ok(now_at) = positions(&poll_pool, &names).await {
                let seen = Instant::now();
                for ((queue, lag), position) in pending.iter_mut().zip(&mut lags).zip(now_at) {
                    while queue.front().is_some_and(|(seq, _)| *seq <= position) {
                        if let Some((_, acked)) = queue.pop_front() {
                            lag.push(seen.saturating_duration_since(acked));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lags
    });
    // Every 5 ms, what is due at the rate goes out as one atomic batch (a larger one when
    // the previous batch took longer), as the service's group commit gathers appends.
    let sample_every = args.sample_every.max(1);
    let started = Instant::now();
    let mut sent = 0_usize;
    let mut batches = 0_usize;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while sent < events.len() {
        tick.tick().await;
        let due = usize::try_from((started.elapsed().as_secs_f64() * args.rate as f64) as u64)
            .unwrap_or(usize::MAX)
            .min(events.len());
        for chunk in events[sent..due].chunks(BATCH) {
            let last = writer.batch(chunk).await?;
            let acked = Instant::now();
            let first = last + 1 - chunk.len() as u64;
            for (offset, _) in chunk.iter().enumerate() {
                if (sent + offset).is_multiple_of(sample_every) {
                    let _ = samples_tx.send((first + offset as u64, acked));
                }
            }
            sent += chunk.len();
            batches += 1;
        }
    }
    let append_time = started.elapsed();
    drop(samples_tx);
    let lags = tokio::time::timeout(Duration::from_secs(120), watcher)
        .await
        .context("the projections did not catch up within 2 minutes")??;
    running.stop().await;
    pool.close().await;
    writeln!(
        out,
        "  appended {sent} events in {:.1} s: {:.0} events/s achieved, in {batches} atomic \
         batches",
        append_time.as_secs_f64(),
        rate(sent as u64, append_time),
    )?;
    for (name, mut lag) in names.iter().zip(lags) {
        lag.sort_unstable();
        writeln!(
            out,
            "  {name:<18} append-to-visible lag over {} samples: p50 {:.1} ms, p99 {:.1} ms, \
             max {:.1} ms",
            lag.len(),
            millis(percentile(&lag, 50.0)),
            millis(percentile(&lag, 99.0)),
            millis(lag.last().copied().unwrap_or_default()),
        )?;
    }
    writeln!(
        out,
        "  (acknowledged = the server's acknowledgement of the event's batch; visible = the read model's \
         checkpoint in projection_generations at or past the event, polled every 2 ms)"
    )?;
    Ok(())
}
