use funnel_api::commands::{CommandError, journey_key};
use funnel_domain::{
    CandidateId, ContactChannel, ContactOutcome, DomainError, JourneyCommand, JourneyId, SiteId,
    Stage, StudyCommand, StudyId,
};

use crate::helpers::fixtures::{at, contact, create_study, referral};
use crate::helpers::{TestApp, spawn_app};

async fn started_journey(app: &TestApp) -> (StudyId, SiteId, JourneyId) {
    let study = StudyId::new();
    let site = SiteId::new();
    app.commands
        .execute_study(study, None, &create_study(study))
        .await
        .unwrap();
    app.commands
        .execute_study(
            study,
            None,
            &StudyCommand::AddSite {
                at: at(0),
                site_id: site,
                name: "Hospital Clínic".to_owned(),
                country: "ES".parse().unwrap(),
                languages: vec!["es".parse().unwrap()],
                monthly_target_randomized: 2.0,
            },
        )
        .await
        .unwrap();
    let candidate = CandidateId::new();
    let journey = JourneyId::new();
    app.commands
        .receive_referral(
            &app.keys,
            candidate,
            &contact("Ana", "+34 600 000 001", "ana@example.es"),
            referral(journey, candidate, study),
        )
        .await
        .unwrap();
    (study, site, journey)
}

#[tokio::test]
async fn a_journey_walks_from_referral_to_randomized_through_the_stream() {
    let app = spawn_app().await;
    let (_, site, journey) = started_journey(&app).await;
    let steps = [
        JourneyCommand::CompletePrescreen {
            at: at(5),
            passed: true,
            reasons: vec![],
        },
        JourneyCommand::RecordContactAttempt {
            at: at(30),
            channel: ContactChannel::Phone,
            outcome: ContactOutcome::Reached,
            agent: None,
        },
        JourneyCommand::ReferToSite {
            at: at(40),
            site_id: site,
        },
        JourneyCommand::RecordSiteContact { at: at(600) },
        JourneyCommand::ScheduleAppointment {
            at: at(700),
            appointment_at: at(7 * 24 * 60),
        },
        JourneyCommand::RecordAttendance {
            at: at(7 * 24 * 60),
        },
        JourneyCommand::RecordConsent {
            at: at(7 * 24 * 60 + 30),
        },
        JourneyCommand::StartScreening {
            at: at(7 * 24 * 60 + 60),
        },
        JourneyCommand::Randomize {
            at: at(21 * 24 * 60),
            arm: Some("B".to_owned()),
        },
    ];
    let mut version = app.commands.load_journey(journey).await.unwrap().version;
    for step in &steps {
        let executed = app
            .commands
            .execute_journey(journey, version, step)
            .await
            .unwrap();
        assert!(
            Some(executed.version) > version,
            "each step moves the version on"
        );
        version = Some(executed.version);
    }
    let loaded = app.commands.load_journey(journey).await.unwrap();
    assert_eq!(loaded.state.stage(), Some(Stage::Randomized));
    assert_eq!(loaded.version, version);
    let stored = app.log.read(&journey_key(journey)).await.unwrap();
    assert_eq!(stored.len(), steps.len() + 1);
    app.stop().await;
}

#[tokio::test]
async fn an_illegal_transition_names_the_stage_and_appends_nothing() {
    let app = spawn_app().await;
    let (_, _, journey) = started_journey(&app).await;
    let head = app.log.stream_head().await.unwrap();

    let refused = app
        .commands
        .execute_journey(
            journey,
            None,
            &JourneyCommand::Randomize {
                at: at(10),
                arm: None,
            },
        )
        .await
        .unwrap_err();
    match &refused {
        CommandError::Domain(DomainError::IllegalTransition { stage, command }) => {
            assert_eq!(*stage, Stage::Referred);
            assert_eq!(*command, "randomize");
        }
        other => panic!("expected an illegal transition, got {other:?}"),
    }
    assert!(refused.to_string().contains("referred"), "{refused}");
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stale_expected_version_is_refused_and_appends_nothing() {
    let app = spawn_app().await;
    let (_, _, journey) = started_journey(&app).await;
    let version = app
        .commands
        .load_journey(journey)
        .await
        .unwrap()
        .version
        .unwrap();
    app.commands
        .execute_journey(
            journey,
            Some(version),
            &JourneyCommand::CompletePrescreen {
                at: at(5),
                passed: true,
                reasons: vec![],
            },
        )
        .await
        .unwrap();
    let head = app.log.stream_head().await.unwrap();

    let refused = app
        .commands
        .execute_journey(
            journey,
            Some(version),
            &JourneyCommand::RecordContactAttempt {
                at: at(6),
                channel: ContactChannel::Phone,
                outcome: ContactOutcome::NoAnswer,
                agent: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, CommandError::StaleVersion { expected, actual: Some(actual) } if expected == version && actual > version),
        "{refused:?}"
    );
    assert_eq!(app.log.stream_head().await.unwrap(), head);
    app.stop().await;
}

/// Two agents record an outcome for the same journey at the same version: the stream takes
/// exactly one, the other is told the journey moved on.
#[tokio::test]
async fn concurrent_commands_at_the_same_version_let_exactly_one_through() {
    let app = spawn_app().await;
    let (_, _, journey) = started_journey(&app).await;
    for round in 0..20_i64 {
        let version = app.commands.load_journey(journey).await.unwrap().version;
        let attempt = |minute| JourneyCommand::RecordContactAttempt {
            at: at(100 + round * 10 + minute),
            channel: ContactChannel::Phone,
            outcome: ContactOutcome::NoAnswer,
            agent: None,
        };
        let (one, two) = (attempt(1), attempt(2));
        let (first, second) = tokio::join!(
            app.commands.execute_journey(journey, version, &one),
            app.commands.execute_journey(journey, version, &two),
        );
        assert_eq!(
            usize::from(first.is_ok()) + usize::from(second.is_ok()),
            1,
            "round {round}: {first:?} / {second:?}"
        );
        let loser = if first.is_ok() { second } else { first };
        assert!(
            matches!(loser, Err(CommandError::StaleVersion { .. })),
            "{loser:?}"
        );
    }
    let stored = app.log.read(&journey_key(journey)).await.unwrap();
    assert_eq!(
        stored.len(),
        1 + 20,
        "the referral and one attempt per round"
    );
    app.stop().await;
}

/// Events carry CloudEvents 1.0 attributes as headers so any NATS client can read the stream.
#[tokio::test]
async fn stored_events_carry_cloudevents_headers() {
    let app = spawn_app().await;
    let (_, _, journey) = started_journey(&app).await;
    let client = async_nats::connect(&app.nats.url).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream(&app.eventlog.stream_name)
        .await
        .unwrap();
    let last = app
        .log
        .last_sequence(&journey_key(journey))
        .await
        .unwrap()
        .unwrap();
    let message = stream.get_raw_message(last).await.unwrap();
    let header = |name: &str| {
        message
            .headers
            .get(name)
            .map(|value| value.as_str().to_owned())
    };
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(
        header("ce-type").as_deref(),
        Some("funnel.journey.referral_received.v1")
    );
    assert_eq!(header("ce-subject"), Some(journey.to_string()));
    assert_eq!(
        header("ce-datacontenttype").as_deref(),
        Some("application/json")
    );
    assert!(header("ce-source").is_some_and(|source| !source.is_empty()));
    let id = header("ce-id").unwrap();
    assert_eq!(
        header("Nats-Msg-Id"),
        Some(id.clone()),
        "the event id is also the dedupe key"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(&header("ce-time").unwrap()).is_ok());
    assert_eq!(
        message.subject.as_str(),
        format!("{}.journey.{journey}", app.eventlog.subject_prefix)
    );
    let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(payload["journey_id"], journey.to_string());
    app.stop().await;
}
