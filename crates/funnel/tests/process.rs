//! The `funnel` binary as a process: killed with SIGKILL while its projector is applying
//! batches, started again, it ends with read models equal to a fold of the stream.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use funnel_domain::{
    CampaignId, CandidateId, ContactChannel, ContactOutcome, Country, JourneyCommand, JourneyId,
    JourneyState, Language, SealedContact, SiteId, SourceChannel, StudyId, decide, evolve,
};
use funnel_eventlog::{EventLog, EventLogSettings, ExpectedVersion, NewEvent, StreamKey};
use funnel_projections::dashboard::{self, DashboardModel};
use funnel_projections::{ProjectedEvent, ReadModels, SponsorDashboard};
use funnel_testkit::{eventually, test_database, test_nats, unique_prefix};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(120);

/// Journeys that stop at every step of the funnel, as the domain accepts them.
fn journeys(count: usize) -> Vec<(StreamKey, Vec<NewEvent>)> {
    let study = StudyId::new();
    let sites: Vec<SiteId> = (0..4).map(|_| SiteId::new()).collect();
    let start: DateTime<Utc> = "2025-03-03T09:00:00Z".parse().expect("time");
    (0..count)
        .map(|n| {
            let journey_id = JourneyId::new();
            let mut at = start + TimeDelta::minutes(i64::try_from(n).expect("small"));
            let site = sites[n % sites.len()];
            let mut commands = vec![JourneyCommand::ReceiveReferral {
                at,
                journey_id,
                candidate_id: CandidateId::new(),
                study_id: study,
                campaign_id: CampaignId::new(),
                source: SourceChannel::ALL[n % SourceChannel::ALL.len()],
                language: Language::parse("es").expect("language"),
                country: Country::parse("es").expect("country"),
                preferred_site: None,
                consent_to_contact: true,
                contact: SealedContact {
                    alg: "xchacha20poly1305".into(),
                    nonce: "bm9uY2U=".into(),
                    ciphertext: "c2VhbGVk".into(),
                },
                external_ref: None,
                time_zone: None,
            }];
            let steps: Vec<fn(DateTime<Utc>, SiteId) -> JourneyCommand> = vec![
                |at, _| JourneyCommand::CompletePrescreen {
                    at,
                    passed: true,
                    reasons: vec![],
                },
                |at, _| JourneyCommand::RecordContactAttempt {
                    at,
                    channel: ContactChannel::ALL[0],
                    outcome: ContactOutcome::ALL
                        .into_iter()
                        .find(|outcome| outcome.is_reached())
                        .expect("a reached outcome"),
                    agent: None,
                },
                |at, site_id| JourneyCommand::ReferToSite { at, site_id },
                |at, _| JourneyCommand::RecordSiteContact { at },
                |at, _| JourneyCommand::ScheduleAppointment {
                    at,
                    appointment_at: at + TimeDelta::days(3),
                },
                |at, _| JourneyCommand::RecordAttendance { at },
                |at, _| JourneyCommand::RecordConsent { at },
                |at, _| JourneyCommand::StartScreening { at },
                |at, _| JourneyCommand::Randomize { at, arm: None },
            ];
            for step in steps.iter().take(n % (steps.len() + 1)) {
                at += TimeDelta::hours(5);
                commands.push(step(at, site));
            }
            let key = StreamKey::new("journey", *journey_id.as_uuid()).expect("key");
            let mut state = JourneyState::NotStarted;
            let mut events = Vec::new();
            for command in &commands {
                for event in decide(&state, command).expect("a legal step") {
                    state = evolve(state, &event);
                    let encoded = funnel_domain::encode_journey(&event);
                    events.push(NewEvent {
                        id: Uuid::now_v7(),
                        event_type: encoded.cloud_event_type(),
                        time: event.at(),
                        subject: key.id().to_string(),
                        data: Bytes::from(serde_json::to_vec(&encoded.data).expect("JSON")),
                    });
                }
            }
            (key, events)
        })
        .collect()
}

async fn append(log: &EventLog, journeys: &[(StreamKey, Vec<NewEvent>)]) {
    let appends = journeys.iter().map(|(key, events)| async move {
        log.append(key, ExpectedVersion::NoStream, events.clone())
            .await
            .expect("append");
    });
    futures::future::join_all(appends).await;
}

/// Small batches: the projector commits often, so a kill lands between commits with many
/// still to come however fast the machine is.
const BATCH_EVENTS: &str = "40";

fn spawn_service(nats_url: &str, stream: &str, database_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_funnel"))
        .arg("serve")
        .env("FUNNEL_PROJECTION_BATCH_EVENTS", BATCH_EVENTS)
        .env("FUNNEL_NATS_URL", nats_url)
        .env("FUNNEL_STREAM", stream)
        .env("FUNNEL_SUBJECT_PREFIX", stream)
        .env("FUNNEL_DATABASE_URL", database_url)
        .env("FUNNEL_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start funnel serve")
}

/// The live generation's position and contents, read in one snapshot.
async fn read_model(pool: &PgPool) -> Option<(u64, DashboardModel)> {
    let mut tx = ReadModels::new(pool.clone())
        .read(SponsorDashboard::NAME)
        .await
        .ok()?;
    let position = live_position(&mut *tx).await?;
    let model = dashboard::load(&mut tx).await.expect("load the read model");
    Some((position, model))
}

/// The live generation's position: alone it is cheap enough to poll without pausing.
async fn live_position(conn: impl sqlx::PgExecutor<'_>) -> Option<u64> {
    let position: i64 = sqlx::query_scalar(
        "SELECT position FROM public.projection_generations \
         WHERE name = 'sponsor_dashboard' AND state = 'live'",
    )
    .fetch_optional(conn)
    .await
    .ok()??;
    Some(u64::try_from(position).expect("a position is never negative"))
}

/// A fold of the stream's first `upto` events.
async fn fold(log: &EventLog, upto: u64) -> DashboardModel {
    let events: Vec<ProjectedEvent> = if upto == 0 {
        Vec::new()
    } else {
        log.subscribe(1)
            .await
            .expect("subscribe")
            .take(usize::try_from(upto).expect("small"))
            .map(|event| ProjectedEvent::decode(&event.expect("read")).expect("decode"))
            .collect()
            .await
    };
    dashboard::fold(&events)
}

#[tokio::test]
async fn a_service_killed_mid_batch_resumes_to_the_fold() {
    let nats = test_nats().await;
    let stream = unique_prefix();
    let log = EventLog::connect(EventLogSettings::new(&nats.url, &stream, &stream))
        .await
        .expect("connect");
    log.provision().await.expect("provision");
    let db = test_database().await;
    let database_url = db.settings.url.clone();

    let journeys = journeys(1_200);
    let (first, second) = journeys.split_at(900);
    append(&log, first).await;
    let head = log.stream_head().await.expect("head");

    let mut service = spawn_service(&nats.url, &stream, &database_url);
    // Killed as soon as the first batch is committed: the next is most likely in flight.
    // Polled without the growing pause of `eventually`, which could let the projector finish.
    let deadline = tokio::time::Instant::now() + WAIT;
    while live_position(&db.pool).await.unwrap_or(0) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the first batch to commit"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    service.kill().await.expect("SIGKILL");
    let (after_kill, model) = read_model(&db.pool).await.expect("read model");
    assert!(
        after_kill > 0 && after_kill < head,
        "killed at {after_kill} of {head}: not between two batches"
    );
    // What was committed is exactly a prefix of the stream, whole.
    assert_eq!(model, fold(&log, after_kill).await);

    // Started again with more events arriving: it resumes where it stopped.
    let mut service = spawn_service(&nats.url, &stream, &database_url);
    append(&log, second).await;
    let head = log.stream_head().await.expect("head");
    let (_, model) = eventually("the projector to catch up", WAIT, || async {
        read_model(&db.pool)
            .await
            .filter(|(position, _)| *position == head)
    })
    .await;
    assert_eq!(model, fold(&log, head).await);
    service.kill().await.expect("stop");
}
