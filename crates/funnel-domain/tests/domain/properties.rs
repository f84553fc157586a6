//! Property tests: replay equals live state, refusals change nothing, events round-trip.

use funnel_domain::{
    DomainEvent, JourneyCommand, JourneyEvent, JourneyState, Stage, StudyEvent, StudyState, decide,
    decide_study, decode, encode, evolve, evolve_study, fold, fold_study,
};
use proptest::prelude::*;

use crate::strategies::{any_journey_event, any_study_event, journey_commands, study_command};

/// Runs commands live, step by step, checking per-step properties; returns the final state
/// and the log of accepted events.
fn run_live(
    commands: &[JourneyCommand],
) -> Result<(JourneyState, Vec<JourneyEvent>), TestCaseError> {
    let mut state = JourneyState::default();
    let mut log = Vec::new();
    for command in commands {
        let before = state.clone();
        let decided = decide(&state, command);
        // Decisions are pure: the same question gets the same answer.
        prop_assert_eq!(&decided, &decide(&state, command));
        match decided {
            Ok(events) => {
                prop_assert_eq!(events.len(), 1, "{}", command.name());
                for event in &events {
                    state = evolve(state, event);
                }
                check_accepted(&before, command, &state)?;
                log.extend(events);
            }
            // (c) A refusal is the absence of events, and the state is untouched.
            Err(_) => prop_assert_eq!(&state, &before),
        }
    }
    Ok((state, log))
}

/// Invariants of every accepted command.
fn check_accepted(
    before: &JourneyState,
    command: &JourneyCommand,
    after: &JourneyState,
) -> Result<(), TestCaseError> {
    prop_assert!(after.is_started());
    let Some(previous) = before.journey() else {
        let is_referral = matches!(command, JourneyCommand::ReceiveReferral { .. });
        prop_assert!(is_referral, "{} started a journey", command.name());
        return Ok(());
    };
    let current = after.journey().expect("started");
    // Identity never changes after the referral.
    prop_assert_eq!(previous.journey_id, current.journey_id);
    prop_assert_eq!(previous.candidate_id, current.candidate_id);
    // Erasure is once and for all, and touches no stage.
    prop_assert!(!previous.erased || current.erased);
    if matches!(command, JourneyCommand::ErasePersonalData { .. }) {
        prop_assert!(!previous.erased);
        prop_assert_eq!(previous.stage, current.stage);
    }
    // Closed journeys accept only erasure, and withdrawal after randomization.
    if previous.stage.is_closed() {
        let allowed = matches!(command, JourneyCommand::ErasePersonalData { .. })
            || (previous.stage == Stage::Randomized
                && matches!(command, JourneyCommand::Withdraw { .. }));
        prop_assert!(
            allowed,
            "{} accepted in closed stage {}",
            command.name(),
            previous.stage
        );
    }
    // Nobody is called without consent or after erasure.
    if matches!(command, JourneyCommand::RecordContactAttempt { .. }) {
        prop_assert!(previous.may_contact());
    }
    // Randomization only ever follows screening, which only follows consent.
    if current.stage == Stage::Randomized && previous.stage != Stage::Randomized {
        prop_assert_eq!(previous.stage, Stage::Screening);
        prop_assert!(current.consented_at.is_some());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Replaying the accepted events gives the state reached live, also after a trip
    /// through the codec; and `decide` never panics, whatever the sequence.
    #[test]
    fn replay_equals_live_state(commands in journey_commands()) {
        let (state, log) = run_live(&commands)?;
        prop_assert_eq!(&fold(&log), &state);

        let stored: Vec<JourneyEvent> = log
            .iter()
            .map(|event| {
                let encoded = encode(&DomainEvent::Journey(event.clone()));
                match decode(encoded.event_type, encoded.version, encoded.data) {
                    Ok(DomainEvent::Journey(event)) => event,
                    other => panic!("journey event decoded as {other:?}"),
                }
            })
            .collect();
        prop_assert_eq!(&fold(&stored), &state);
    }

    /// (c) From any reachable state, a refused command leaves the state as it was, and an
    /// accepted one yields exactly one event.
    #[test]
    fn refusals_change_nothing(
        commands in journey_commands(),
        probe in crate::strategies::journey_command(),
    ) {
        let (state, _) = run_live(&commands)?;
        let snapshot = state.clone();
        match decide(&state, &probe) {
            Ok(events) => prop_assert_eq!(events.len(), 1),
            Err(error) => {
                prop_assert_eq!(&state, &snapshot);
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    /// `evolve` is total: any events in any order, even nonsense, never panic.
    #[test]
    fn evolve_is_total(events in proptest::collection::vec(any_journey_event(), 0..30)) {
        let state = fold(&events);
        let step_by_step = events.iter().fold(JourneyState::default(), evolve);
        prop_assert_eq!(state, step_by_step);
    }

    /// (b) Every journey event round-trips through the codec and through serde_json.
    #[test]
    fn journey_events_round_trip(event in any_journey_event()) {
        let domain = DomainEvent::Journey(event.clone());
        let encoded = encode(&domain);
        prop_assert_eq!(encoded.event_type, event.event_type());
        prop_assert_eq!(encoded.version, event.version());
        prop_assert!(encoded.data.is_object());
        prop_assert!(encoded.data.get("at").is_some());
        let decoded = decode(encoded.event_type, encoded.version, encoded.data.clone());
        prop_assert_eq!(decoded.ok(), Some(domain.clone()));

        let text = serde_json::to_string(&domain).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<DomainEvent>(&text).ok(), Some(domain));
        let text = serde_json::to_string(&event).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<JourneyEvent>(&text).ok(), Some(event));

        // The CloudEvents type carries the same name and version.
        let cloud_event_type = encoded.cloud_event_type();
        let (event_type, version) =
            funnel_domain::parse_cloud_event_type(&cloud_event_type).expect("parses");
        prop_assert_eq!((event_type, version), (encoded.event_type, encoded.version));
    }

    /// (b) Every study event round-trips through the codec and through serde_json.
    #[test]
    fn study_events_round_trip(event in any_study_event()) {
        let domain = DomainEvent::Study(event.clone());
        let encoded = encode(&domain);
        prop_assert_eq!(encoded.event_type, event.event_type());
        let decoded = decode(encoded.event_type, encoded.version, encoded.data);
        prop_assert_eq!(decoded.ok(), Some(domain.clone()));

        let text = serde_json::to_string(&domain).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<DomainEvent>(&text).ok(), Some(domain));
        let text = serde_json::to_string(&event).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<StudyEvent>(&text).ok(), Some(event));
    }

    /// (a) and (c) for the study aggregate.
    #[test]
    fn study_replay_equals_live_state(
        commands in proptest::collection::vec(study_command(), 0..40),
    ) {
        let mut state = StudyState::default();
        let mut log: Vec<StudyEvent> = Vec::new();
        for command in &commands {
            let before = state.clone();
            match decide_study(&state, command) {
                Ok(events) => {
                    prop_assert_eq!(events.len(), 1);
                    state = events.iter().fold(state, evolve_study);
                    log.extend(events);
                }
                Err(_) => prop_assert_eq!(&state, &before),
            }
            // Closed sites stay closed.
            if let Some(study) = before.study() {
                for (site_id, site) in &study.sites {
                    if site.status == funnel_domain::SiteStatus::Closed {
                        prop_assert_eq!(state.site_status(*site_id), Some(funnel_domain::SiteStatus::Closed));
                    }
                }
            }
        }
        prop_assert_eq!(fold_study(&log), state);
    }
}
