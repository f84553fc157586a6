use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use funnel_domain::{
    CampaignId, CandidateId, ContactChannel, ContactOutcome, Country, JourneyCommand, JourneyEvent,
    JourneyId, JourneyState, Language, SealedContact, SiteId, SourceChannel, StudyId, decide,
    evolve,
};
use funnel_eventlog::{EventLog, EventLogSettings, ExpectedVersion, NewEvent, StreamKey};
use funnel_projections::study_funnel::NO_SITE;
use funnel_projections::{
    ProjectedEvent, Projection, Projector, ProjectorSettings, ReadModels, StudyFunnel,
};
use funnel_testkit::eventually;
use futures::StreamExt;
use prometheus::Registry;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// Logs to the test output when `RUST_LOG` is set.
pub(crate) fn init_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// An event log on a stream and prefix of its own, provisioned.
pub(crate) async fn provisioned_log(url: &str) -> EventLog {
    init_tracing();
    let name = funnel_testkit::unique_prefix();
    let log = EventLog::connect(EventLogSettings::new(url, name.clone(), name))
        .await
        .expect("connect");
    log.provision().await.expect("provision");
    log
}

/// One generated journey: its key and its legal history.
#[derive(Clone, Debug)]
pub(crate) struct History {
    pub(crate) key: StreamKey,
    pub(crate) events: Vec<JourneyEvent>,
}

fn contact() -> SealedContact {
    SealedContact {
        alg: "xchacha20poly1305".into(),
        nonce: "bm9uY2U=".into(),
        ciphertext: "c2VhbGVk".into(),
    }
}

/// Realistic journeys through `decide`: every history is one the domain accepts.
pub(crate) fn generate(seed: u64, journeys: usize) -> Vec<History> {
    let mut rng = StdRng::seed_from_u64(seed);
    let studies: Vec<(StudyId, Vec<SiteId>)> = (0..2)
        .map(|_| (StudyId::new(), (0..3).map(|_| SiteId::new()).collect()))
        .collect();
    let start: DateTime<Utc> = "2025-01-06T09:00:00Z".parse().expect("time");
    let mut ids: Vec<JourneyId> = Vec::new();
    let mut histories = Vec::with_capacity(journeys);
    for n in 0..journeys {
        let (study_id, sites) = &studies[rng.gen_range(0..studies.len())];
        let journey_id = JourneyId::new();
        let mut at = start + TimeDelta::hours(i64::try_from(n).expect("small"));
        let referral = JourneyCommand::ReceiveReferral {
            at,
            journey_id,
            candidate_id: CandidateId::new(),
            study_id: *study_id,
            campaign_id: CampaignId::new(),
            source: *SourceChannel::ALL.choose(&mut rng).expect("channels"),
            language: Language::parse("es").expect("language"),
            country: Country::parse("es").expect("country"),
            preferred_site: None,
            consent_to_contact: rng.gen_bool(0.9),
            contact: contact(),
            external_ref: None,
            time_zone: Some("Europe/Madrid".into()),
        };
        let mut state = JourneyState::NotStarted;
        let mut events = Vec::new();
        for event in decide(&state, &referral).expect("referral") {
            state = evolve(state, &event);
            events.push(event);
        }
        let steps = rng.gen_range(0..14);
        for _ in 0..steps {
            at += TimeDelta::hours(rng.gen_range(1..48));
            let mut done = false;
            for _ in 0..25 {
                let command = random_command(&mut rng, at, sites, &ids);
                if let Ok(new) = decide(&state, &command) {
                    for event in new {
                        state = evolve(state, &event);
                        events.push(event);
                    }
                    done = true;
                    break;
                }
            }
            if !done {
                break;
            }
        }
        ids.push(journey_id);
        histories.push(History {
            key: StreamKey::new("journey", *journey_id.as_uuid()).expect("key"),
            events,
        });
    }
    histories
}

fn random_command(
    rng: &mut StdRng,
    at: DateTime<Utc>,
    sites: &[SiteId],
    journeys: &[JourneyId],
) -> JourneyCommand {
    let site = *sites.choose(rng).expect("sites");
    let later = at + TimeDelta::days(rng.gen_range(1..10));
    match rng.gen_range(0..30) {
        0..=2 => JourneyCommand::CompletePrescreen {
            at,
            passed: rng.gen_bool(0.6),
            reasons: vec!["criteria".into()],
        },
        3..=6 => JourneyCommand::RecordContactAttempt {
            at,
            channel: *ContactChannel::ALL.choose(rng).expect("channels"),
            outcome: *ContactOutcome::ALL.choose(rng).expect("outcomes"),
            agent: None,
        },
        7 => JourneyCommand::RequestCallback {
            at,
            callback_at: later,
            time_zone: "Europe/Madrid".into(),
        },
        8..=10 => JourneyCommand::ReferToSite { at, site_id: site },
        11 => JourneyCommand::Reallocate {
            at,
            to_site: site,
            reason: "site is slow".into(),
        },
        12..=13 => JourneyCommand::RecordSiteContact { at },
        14..=15 => JourneyCommand::ScheduleAppointment {
            at,
            appointment_at: later,
        },
        16 => JourneyCommand::RescheduleAppointment {
            at,
            appointment_at: later,
        },
        17..=18 => JourneyCommand::RecordAttendance { at },
        19 => JourneyCommand::RecordNoShow { at },
        20 => JourneyCommand::RecordConsent { at },
        21 => JourneyCommand::StartScreening { at },
        22 => JourneyCommand::RecordScreenFailure {
            at,
            reason: "criteria".into(),
        },
        23 => JourneyCommand::Randomize { at, arm: None },
        24 => JourneyCommand::Withdraw {
            at,
            reason: "moved away".into(),
        },
        25 => JourneyCommand::RecordNotInterested { at, reason: None },
        26 => JourneyCommand::MarkUnreachable { at },
        27 => match journeys.choose(rng) {
            Some(primary) => JourneyCommand::LinkDuplicate {
                at,
                primary: *primary,
            },
            None => JourneyCommand::OptOut { at },
        },
        28 => JourneyCommand::ErasePersonalData { at },
        _ => JourneyCommand::OptOut { at },
    }
}

/// The stream form of a journey event, as the API writes it.
pub(crate) fn to_new_event(key: &StreamKey, event: &JourneyEvent) -> NewEvent {
    let encoded = funnel_domain::encode_journey(event);
    NewEvent {
        id: Uuid::now_v7(),
        event_type: encoded.cloud_event_type(),
        time: event.at(),
        subject: key.id().to_string(),
        data: Bytes::from(serde_json::to_vec(&encoded.data).expect("JSON")),
    }
}

/// Appends the histories in `rounds` rounds (round *r* appends the *r*-th slice of every
/// journey, journeys concurrently), so that journeys interleave on the stream. Retries an
/// append that fails (e.g. while nats-server restarts); ids make retries idempotent.
pub(crate) async fn append_all(log: &EventLog, histories: &[History], rounds: usize) {
    for round in 0..rounds {
        let appends = histories.iter().filter_map(|history| {
            let per_round = history.events.len().div_ceil(rounds);
            let from = (round * per_round).min(history.events.len());
            let to = ((round + 1) * per_round).min(history.events.len());
            (from < to).then(|| {
                let events: Vec<NewEvent> = history.events[from..to]
                    .iter()
                    .map(|event| to_new_event(&history.key, event))
                    .collect();
                append_retrying(log, &history.key, events)
            })
        });
        futures::future::join_all(appends).await;
    }
}

pub(crate) async fn append_retrying(log: &EventLog, key: &StreamKey, events: Vec<NewEvent>) {
    eventually("an append to succeed", WAIT, || {
        let events = events.clone();
        async move {
            log.append(key, ExpectedVersion::Any, events)
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
}

pub(crate) type StageCounts = BTreeMap<(Uuid, Uuid, String), i64>;
pub(crate) type ReferralCounts = BTreeMap<(Uuid, String), i64>;

/// The read model as a plain in-memory fold of the same events through the domain.
pub(crate) fn fold_counts(histories: &[History]) -> (StageCounts, ReferralCounts) {
    let mut stages = StageCounts::new();
    let mut referrals = ReferralCounts::new();
    for history in histories {
        let state = funnel_domain::fold(&history.events);
        let Some(journey) = state.journey() else {
            continue;
        };
        if journey.duplicate_of.is_some() {
            continue;
        }
        let site = journey.site_id.map_or(NO_SITE, |site| *site.as_uuid());
        *stages
            .entry((
                *journey.study_id.as_uuid(),
                site,
                journey.stage.as_str().to_owned(),
            ))
            .or_default() += 1;
        *referrals
            .entry((
                *journey.study_id.as_uuid(),
                journey.source.as_str().to_owned(),
            ))
            .or_default() += 1;
    }
    (stages, referrals)
}

pub(crate) async fn read_model(pool: &PgPool) -> (StageCounts, ReferralCounts) {
    let mut tx = ReadModels::new(pool.clone())
        .read(StudyFunnel::NAME)
        .await
        .expect("a live generation");
    let stages = sqlx::query(
        "SELECT study_id, site_id, stage, journeys FROM stage_counts WHERE journeys > 0",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("stage counts")
    .into_iter()
    .map(|row| {
        (
            (row.get("study_id"), row.get("site_id"), row.get("stage")),
            row.get("journeys"),
        )
    })
    .collect();
    let referrals =
        sqlx::query("SELECT study_id, source, referrals FROM referrals WHERE referrals > 0")
            .fetch_all(&mut *tx)
            .await
            .expect("referrals")
            .into_iter()
            .map(|row| {
                (
                    (row.get("study_id"), row.get("source")),
                    row.get("referrals"),
                )
            })
            .collect();
    (stages, referrals)
}

/// `(position, status, last_error)` of the live study_funnel generation, if there is one.
pub(crate) async fn checkpoint(pool: &PgPool) -> Option<(u64, String, Option<String>)> {
    sqlx::query(
        "SELECT position, status, last_error FROM projection_generations \
         WHERE name = 'study_funnel' AND state = 'live'",
    )
    .fetch_optional(pool)
    .await
    .expect("checkpoint")
    .map(|row| {
        (
            u64::try_from(row.get::<i64, _>("position")).expect("position"),
            row.get("status"),
            row.get("last_error"),
        )
    })
}

/// Waits until the projection's stored position reaches the stream head.
pub(crate) async fn wait_caught_up(log: &EventLog, pool: &PgPool) -> u64 {
    let head = log.stream_head().await.expect("head");
    eventually("the projection to reach the stream head", WAIT, || async {
        checkpoint(pool)
            .await
            .and_then(|(position, _, _)| (position >= head).then_some(head))
    })
    .await
}

/// A projector running in a task of its own, stopped by [`Running::stop`].
pub(crate) struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
    pub(crate) registry: Registry,
}

impl Running {
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task.await.expect("projector task");
    }
}

pub(crate) fn fast_settings() -> ProjectorSettings {
    ProjectorSettings {
        lock_poll: Duration::from_millis(50),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        lag_refresh: Duration::from_millis(100),
        stall_timeout: Duration::from_secs(1),
        ..ProjectorSettings::default()
    }
}

pub(crate) fn start(log: &EventLog, pool: &PgPool) -> Running {
    let registry = Registry::new();
    let projector = Projector::new(log.clone(), pool.clone(), &registry, fast_settings())
        .expect("metrics")
        .with(StudyFunnel);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    Running {
        shutdown,
        task,
        registry,
    }
}

/// The value of a `projection="study_funnel"` series in `registry` (0 when absent).
pub(crate) fn metric(registry: &Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|label| label.name() == "projection" && label.value() == "study_funnel")
        })
        .map(|metric| metric.get_counter().get_value() + metric.get_gauge().get_value())
        .sum()
}

pub(crate) fn event_count(histories: &[History]) -> usize {
    histories.iter().map(|history| history.events.len()).sum()
}

// ---------------------------------------------------------------------------------------
// Applying a projection directly, in a schema of the test's own (no runtime involved).

/// A transaction whose `search_path` is `schema`.
pub(crate) async fn in_schema(pool: &PgPool, schema: &str) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(schema)
        .execute(&mut *tx)
        .await
        .expect("search path");
    tx
}

/// Creates `schema`, runs `projection`'s DDL in it and applies `events` through
/// [`Projection::apply`], committing every 50 events, as the runtime would.
pub(crate) async fn apply_directly<P: Projection>(
    pool: &PgPool,
    projection: &P,
    schema: &str,
    events: &[ProjectedEvent],
) {
    create_schema(pool, projection, schema).await;
    for chunk in events.chunks(50) {
        let mut tx = in_schema(pool, schema).await;
        for event in chunk {
            projection.apply(&mut tx, event).await.expect("apply");
        }
        tx.commit().await.expect("commit");
    }
}

async fn create_schema<P: Projection>(pool: &PgPool, projection: &P, schema: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(pool)
        .await
        .expect("schema");
    let mut tx = in_schema(pool, schema).await;
    sqlx::raw_sql(projection.schema())
        .execute(&mut *tx)
        .await
        .expect("DDL");
    tx.commit().await.expect("commit");
}

/// The events with the study events moved after the first third of the journey events: study
/// events in the middle of runs of journey events, some studies created after referrals.
pub(crate) fn studies_after_a_third(events: Vec<ProjectedEvent>) -> Vec<ProjectedEvent> {
    let (study, journeys): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|event| matches!(event.event, funnel_domain::DomainEvent::Study(_)));
    let third = journeys.len() / 3;
    let mut mixed = journeys[..third].to_vec();
    mixed.extend(study);
    mixed.extend_from_slice(&journeys[third..]);
    mixed
}

/// As [`apply_directly`], but through [`Projection::apply_batch`], `batch` events per
/// transaction.
pub(crate) async fn apply_batched<P: Projection>(
    pool: &PgPool,
    projection: &P,
    schema: &str,
    events: &[ProjectedEvent],
    batch: usize,
) {
    create_schema(pool, projection, schema).await;
    for chunk in events.chunks(batch) {
        let mut tx = in_schema(pool, schema).await;
        projection.apply_batch(&mut tx, chunk).await.expect("apply");
        tx.commit().await.expect("commit");
    }
}

// ---------------------------------------------------------------------------------------
// Through the runtime: NATS stream → projector → live generation.

/// Appends every event, each aggregate's in order, aggregates concurrently. Retries an append
/// that fails; ids make retries idempotent.
pub(crate) async fn append_projected(log: &EventLog, events: &[ProjectedEvent]) {
    let mut streams: BTreeMap<(String, Uuid), (StreamKey, Vec<NewEvent>)> = BTreeMap::new();
    for event in events {
        let encoded = funnel_domain::encode(&event.event);
        streams
            .entry((event.key.kind().to_owned(), event.key.id()))
            .or_insert_with(|| (event.key.clone(), Vec::new()))
            .1
            .push(NewEvent {
                id: event.id,
                event_type: encoded.cloud_event_type(),
                time: event.time,
                subject: event.key.id().to_string(),
                data: Bytes::from(serde_json::to_vec(&encoded.data).expect("JSON")),
            });
    }
    let appends = streams
        .values()
        .map(|(key, new)| append_retrying(log, key, new.clone()));
    futures::future::join_all(appends).await;
}

/// Waits until the live generation of the projection `name` reaches the stream head, and
/// returns that head.
pub(crate) async fn wait_live_caught_up(log: &EventLog, pool: &PgPool, name: &str) -> u64 {
    let head = log.stream_head().await.expect("head");
    eventually(
        &format!("{name} to reach the stream head"),
        WAIT,
        || async {
            let position: Option<i64> = sqlx::query_scalar(
                "SELECT position FROM projection_generations WHERE name = $1 AND state = 'live'",
            )
            .bind(name)
            .fetch_optional(pool)
            .await
            .expect("generation");
            position
                .and_then(|position| u64::try_from(position).ok())
                .filter(|&position| position >= head)
        },
    )
    .await;
    head
}

/// The stream's first `upto` events, decoded as the runtime decodes them.
pub(crate) async fn read_back(log: &EventLog, upto: u64) -> Vec<ProjectedEvent> {
    log.subscribe(1)
        .await
        .expect("subscribe")
        .take(usize::try_from(upto).expect("small"))
        .map(|event| ProjectedEvent::decode(&event.expect("read")).expect("decode"))
        .collect()
        .await
}
