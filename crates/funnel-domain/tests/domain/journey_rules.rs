//! Example-based tests of the journey's rules: what each stage accepts and refuses.

use funnel_domain::journey::JourneyState;
use funnel_domain::{
    ContactOutcome, DomainError, FhirSubjectState, JourneyCommand, JourneyEvent, Stage, decide,
    evolve, fold,
};

use crate::support::*;

#[test]
fn the_happy_path_reaches_randomized_and_replays_to_the_same_state() {
    let (state, log) = run(&happy_path()).expect("happy path accepted");
    assert_eq!(state.stage(), Some(Stage::Randomized));
    assert_eq!(log.len(), happy_path().len());
    assert_eq!(fold(&log), state);

    let journey = state.journey().expect("started");
    assert_eq!(journey.site_id, Some(SITES[0]));
    assert_eq!(journey.contact_attempts, 1);
    assert_eq!(journey.consented_at, Some(t(10_030)));
    assert_eq!(journey.randomized_at, Some(t(20_000)));
    assert_eq!(journey.stage_entered_at, t(20_000));
    assert_eq!(journey.fhir_subject_state(), FhirSubjectState::OnStudy);
    assert!(!journey.is_workable());
}

#[test]
fn every_accepted_command_yields_one_event_with_its_time() {
    let mut state = JourneyState::default();
    for command in happy_path() {
        let events = decide(&state, &command).expect("accepted");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].at(), command.at());
        state = evolve(state, &events[0]);
    }
}

#[test]
fn nothing_but_a_referral_starts_a_journey() {
    for command in happy_path().iter().skip(1) {
        assert_eq!(
            decide(&JourneyState::default(), command),
            Err(DomainError::NotStarted)
        );
    }
    let erase = JourneyCommand::ErasePersonalData { at: t(5) };
    assert_eq!(
        decide(&JourneyState::default(), &erase),
        Err(DomainError::NotStarted)
    );
}

#[test]
fn a_second_referral_is_refused() {
    let state = state_after(&[referral(true)]);
    assert_eq!(
        decide(&state, &referral(true)),
        Err(DomainError::AlreadyStarted)
    );
}

#[test]
fn randomizing_before_consent_is_an_illegal_transition_naming_the_stage() {
    let state = state_at(Stage::Attended);
    let randomize = JourneyCommand::Randomize {
        at: t(10_020),
        arm: None,
    };
    let error = decide(&state, &randomize).unwrap_err();
    assert_eq!(
        error,
        DomainError::IllegalTransition {
            stage: Stage::Attended,
            command: "randomize",
        }
    );
    assert_eq!(
        error.to_string(),
        "`randomize` is not allowed in stage `attended`"
    );

    // Consent alone is not enough either: screening comes first.
    let error = decide(&state_at(Stage::Consented), &randomize).unwrap_err();
    assert!(error.to_string().contains("consented"), "{error}");
}

#[test]
fn scheduling_a_closed_journey_is_refused_naming_the_stage() {
    let state = step(
        &state_at(Stage::Contacted),
        &JourneyCommand::RecordNotInterested {
            at: t(100),
            reason: Some("too far to travel".to_owned()),
        },
    )
    .expect("not interested accepted");
    let schedule = JourneyCommand::ScheduleAppointment {
        at: t(200),
        appointment_at: t(5_000),
    };
    let error = decide(&state, &schedule).unwrap_err();
    assert_eq!(
        error,
        DomainError::Closed {
            stage: Stage::NotInterested
        }
    );
    assert_eq!(
        error.to_string(),
        "the journey is closed in stage `not_interested`"
    );
}

#[test]
fn prescreen_failure_closes_the_journey() {
    let state = state_after(&[
        referral(true),
        JourneyCommand::CompletePrescreen {
            at: t(1),
            passed: false,
            reasons: vec!["age".to_owned(), "bmi".to_owned()],
        },
    ]);
    assert_eq!(stage_of(&state), Stage::PrescreenFailed);
    assert_eq!(
        state.journey().unwrap().closed_reason.as_deref(),
        Some("age; bmi")
    );
    let refer = JourneyCommand::ReferToSite {
        at: t(2),
        site_id: SITES[0],
    };
    assert_eq!(
        decide(&state, &refer),
        Err(DomainError::Closed {
            stage: Stage::PrescreenFailed
        })
    );
}

#[test]
fn a_prescreen_can_follow_first_contact_but_only_once() {
    let contacted = state_after(&[referral(true), attempt(10, ContactOutcome::Reached)]);
    assert_eq!(stage_of(&contacted), Stage::Contacted);
    let prescreen = JourneyCommand::CompletePrescreen {
        at: t(20),
        passed: true,
        reasons: vec![],
    };
    let passed = step(&contacted, &prescreen).expect("phone pre-screen accepted");
    assert_eq!(stage_of(&passed), Stage::PrescreenPassed);

    let again = step(&passed, &attempt(30, ContactOutcome::Reached)).expect("reached");
    assert!(matches!(
        decide(&again, &prescreen),
        Err(DomainError::Invalid(_))
    ));
}

#[test]
fn a_referral_without_consent_to_contact_is_recorded_but_never_called() {
    let state = state_after(&[referral(false)]);
    assert!(!state.journey().unwrap().consent_to_contact);
    for command in [
        attempt(10, ContactOutcome::Reached),
        JourneyCommand::RequestCallback {
            at: t(10),
            callback_at: t(100),
            time_zone: "Europe/Madrid".to_owned(),
        },
    ] {
        let error = decide(&state, &command).unwrap_err();
        assert!(
            matches!(&error, DomainError::Invalid(message) if message.contains("consent")),
            "{error}"
        );
    }
}

#[test]
fn the_contact_cadence_runs_out_into_unreachable_and_a_callback_reopens_it() {
    let mut state = state_at(Stage::PrescreenPassed);
    state = step(&state, &attempt(10, ContactOutcome::NoAnswer)).unwrap();
    assert_eq!(stage_of(&state), Stage::Contacting);
    state = step(&state, &attempt(20, ContactOutcome::Voicemail)).unwrap();
    state = step(&state, &attempt(30, ContactOutcome::Busy)).unwrap();
    assert_eq!(state.journey().unwrap().unanswered_attempts, 3);

    let events = decide(&state, &JourneyCommand::MarkUnreachable { at: t(40) }).unwrap();
    assert!(matches!(
        events.as_slice(),
        [JourneyEvent::Unreachable(unreachable)] if unreachable.attempts == 3
    ));
    state = events.iter().fold(state, evolve);
    assert_eq!(stage_of(&state), Stage::Unreachable);
    assert!(!Stage::Unreachable.is_closed());

    // Re-engagement attempts that fail leave it parked.
    state = step(&state, &attempt(50, ContactOutcome::NoAnswer)).unwrap();
    assert_eq!(stage_of(&state), Stage::Unreachable);

    let callback = JourneyCommand::RequestCallback {
        at: t(60),
        callback_at: t(1_000),
        time_zone: "Europe/Madrid".to_owned(),
    };
    state = step(&state, &callback).unwrap();
    assert_eq!(stage_of(&state), Stage::Contacting);
    let journey = state.journey().unwrap();
    assert_eq!(journey.unanswered_attempts, 0);
    assert_eq!(journey.callback.as_ref().unwrap().callback_at, t(1_000));

    state = step(&state, &attempt(1_000, ContactOutcome::Reached)).unwrap();
    assert_eq!(stage_of(&state), Stage::Contacted);
    assert_eq!(state.journey().unwrap().callback, None);
    assert_eq!(state.journey().unwrap().contact_attempts, 5);
}

#[test]
fn a_reached_call_reopens_an_unreachable_journey() {
    let state = state_after(&[
        referral(true),
        attempt(10, ContactOutcome::NoAnswer),
        JourneyCommand::MarkUnreachable { at: t(20) },
        attempt(30, ContactOutcome::Reached),
    ]);
    assert_eq!(stage_of(&state), Stage::Contacted);
}

#[test]
fn unreachable_needs_an_unanswered_attempt() {
    let state = state_at(Stage::Contacted);
    assert!(matches!(
        decide(&state, &JourneyCommand::MarkUnreachable { at: t(100) }),
        Err(DomainError::Invalid(_))
    ));
    assert_eq!(
        decide(
            &state_at(Stage::Referred),
            &JourneyCommand::MarkUnreachable { at: t(100) }
        ),
        Err(DomainError::IllegalTransition {
            stage: Stage::Referred,
            command: "mark_unreachable"
        })
    );
}

#[test]
fn callbacks_need_a_future_time_and_a_time_zone() {
    let state = state_at(Stage::Contacted);
    for (callback_at, time_zone) in [(t(50), "Europe/Madrid"), (t(500), "somewhere nice")] {
        let command = JourneyCommand::RequestCallback {
            at: t(100),
            callback_at,
            time_zone: time_zone.to_owned(),
        };
        assert!(matches!(
            decide(&state, &command),
            Err(DomainError::Invalid(_))
        ));
    }
}

#[test]
fn contact_attempts_stop_once_the_site_has_the_candidate() {
    let state = state_at(Stage::ReferredToSite);
    assert_eq!(
        decide(&state, &attempt(100, ContactOutcome::Reached)),
        Err(DomainError::IllegalTransition {
            stage: Stage::ReferredToSite,
            command: "record_contact_attempt"
        })
    );
}

#[test]
fn referral_to_a_site_needs_contact_or_a_passed_prescreen() {
    let refer = JourneyCommand::ReferToSite {
        at: t(100),
        site_id: SITES[1],
    };
    assert_eq!(
        decide(&state_at(Stage::Referred), &refer),
        Err(DomainError::IllegalTransition {
            stage: Stage::Referred,
            command: "refer_to_site"
        })
    );
    let contacting = state_after(&[referral(true), attempt(10, ContactOutcome::NoAnswer)]);
    assert!(matches!(
        decide(&contacting, &refer),
        Err(DomainError::IllegalTransition { .. })
    ));
    assert!(decide(&state_at(Stage::PrescreenPassed), &refer).is_ok());
    assert!(decide(&state_at(Stage::Contacted), &refer).is_ok());
}

#[test]
fn reallocation_moves_to_another_site_before_consent() {
    let reallocate = |to_site| JourneyCommand::Reallocate {
        at: t(3_000),
        to_site,
        reason: "site paused".to_owned(),
    };
    for stage in [
        Stage::ReferredToSite,
        Stage::SiteContacted,
        Stage::AppointmentScheduled,
        Stage::Attended,
    ] {
        let state = step(&state_at(stage), &reallocate(SITES[1])).expect("reallocated");
        let journey = state.journey().unwrap();
        assert_eq!(journey.stage, Stage::ReferredToSite);
        assert_eq!(journey.site_id, Some(SITES[1]));
        assert_eq!(journey.appointment_at, None);
    }

    let events = decide(&state_at(Stage::SiteContacted), &reallocate(SITES[2])).unwrap();
    assert!(matches!(
        events.as_slice(),
        [JourneyEvent::Reallocated(e)] if e.from_site == SITES[0] && e.to_site == SITES[2]
    ));

    assert!(matches!(
        decide(&state_at(Stage::ReferredToSite), &reallocate(SITES[0])),
        Err(DomainError::Invalid(message)) if message.contains("current site")
    ));
    assert_eq!(
        decide(&state_at(Stage::Consented), &reallocate(SITES[1])),
        Err(DomainError::IllegalTransition {
            stage: Stage::Consented,
            command: "reallocate"
        })
    );
    let blank = JourneyCommand::Reallocate {
        at: t(3_000),
        to_site: SITES[1],
        reason: "  ".to_owned(),
    };
    assert!(matches!(
        decide(&state_at(Stage::ReferredToSite), &blank),
        Err(DomainError::Invalid(_))
    ));
}

#[test]
fn no_shows_are_re_engaged_and_rebooked() {
    let scheduled = state_at(Stage::AppointmentScheduled);
    let mut state = step(&scheduled, &JourneyCommand::RecordNoShow { at: t(10_000) }).unwrap();
    assert_eq!(stage_of(&state), Stage::NoShow);
    assert_eq!(state.journey().unwrap().no_shows, 1);

    // The team calls the candidate; the site stays in charge.
    state = step(&state, &attempt(10_100, ContactOutcome::Reached)).unwrap();
    assert_eq!(stage_of(&state), Stage::NoShow);

    let reschedule = JourneyCommand::RescheduleAppointment {
        at: t(10_200),
        appointment_at: t(15_000),
    };
    let rebooked = step(&state, &reschedule).unwrap();
    assert_eq!(stage_of(&rebooked), Stage::AppointmentScheduled);
    assert_eq!(rebooked.journey().unwrap().appointment_at, Some(t(15_000)));

    let schedule = JourneyCommand::ScheduleAppointment {
        at: t(10_200),
        appointment_at: t(15_000),
    };
    assert!(decide(&state, &schedule).is_ok());
}

#[test]
fn appointments_follow_the_site() {
    let attended = JourneyCommand::RecordAttendance { at: t(10_000) };
    assert_eq!(
        decide(&state_at(Stage::SiteContacted), &attended),
        Err(DomainError::IllegalTransition {
            stage: Stage::SiteContacted,
            command: "record_attendance"
        })
    );
    let reschedule = JourneyCommand::RescheduleAppointment {
        at: t(3_000),
        appointment_at: t(4_000),
    };
    assert!(matches!(
        decide(&state_at(Stage::SiteContacted), &reschedule),
        Err(DomainError::IllegalTransition { .. })
    ));
    let backdated = JourneyCommand::ScheduleAppointment {
        at: t(3_000),
        appointment_at: t(2_000),
    };
    assert!(matches!(
        decide(&state_at(Stage::SiteContacted), &backdated),
        Err(DomainError::Invalid(_))
    ));
    let early_consent = JourneyCommand::RecordConsent { at: t(3_000) };
    assert!(matches!(
        decide(&state_at(Stage::AppointmentScheduled), &early_consent),
        Err(DomainError::IllegalTransition { .. })
    ));
}

#[test]
fn screening_ends_in_failure_or_randomization() {
    let screening = state_at(Stage::Screening);
    let failed = step(
        &screening,
        &JourneyCommand::RecordScreenFailure {
            at: t(15_000),
            reason: "HbA1c out of range".to_owned(),
        },
    )
    .unwrap();
    assert_eq!(stage_of(&failed), Stage::ScreenFailed);
    assert!(Stage::ScreenFailed.is_closed());
    assert_eq!(
        failed.journey().unwrap().fhir_subject_state(),
        FhirSubjectState::Ineligible
    );

    let randomized = step(
        &screening,
        &JourneyCommand::Randomize {
            at: t(15_000),
            arm: Some("B".to_owned()),
        },
    )
    .unwrap();
    assert_eq!(randomized.journey().unwrap().arm.as_deref(), Some("B"));
}

#[test]
fn a_randomized_patient_can_withdraw_but_nothing_else() {
    let randomized = state_at(Stage::Randomized);
    let withdrawn = step(
        &randomized,
        &JourneyCommand::Withdraw {
            at: t(30_000),
            reason: "moved abroad".to_owned(),
        },
    )
    .unwrap();
    let journey = withdrawn.journey().unwrap();
    assert_eq!(journey.stage, Stage::Withdrawn);
    assert_eq!(journey.closed_reason.as_deref(), Some("moved abroad"));
    assert_eq!(journey.fhir_subject_state(), FhirSubjectState::OffStudy);

    for command in [
        JourneyCommand::Disqualify {
            at: t(30_000),
            reason: "protocol deviation".to_owned(),
        },
        JourneyCommand::OptOut { at: t(30_000) },
        JourneyCommand::RecordNotInterested {
            at: t(30_000),
            reason: None,
        },
        JourneyCommand::LinkDuplicate {
            at: t(30_000),
            primary: OTHER_JOURNEY,
        },
    ] {
        assert_eq!(
            decide(&randomized, &command),
            Err(DomainError::Closed {
                stage: Stage::Randomized
            }),
            "{}",
            command.name()
        );
    }
    // Withdrawn is final.
    let again = JourneyCommand::Withdraw {
        at: t(40_000),
        reason: "again".to_owned(),
    };
    assert_eq!(
        decide(&withdrawn, &again),
        Err(DomainError::Closed {
            stage: Stage::Withdrawn
        })
    );
}

#[test]
fn open_journeys_can_end_early_in_any_stage() {
    let closers = [
        (
            JourneyCommand::Withdraw {
                at: t(50_000),
                reason: "changed mind".to_owned(),
            },
            Stage::Withdrawn,
        ),
        (
            JourneyCommand::Disqualify {
                at: t(50_000),
                reason: "exclusion criterion 4".to_owned(),
            },
            Stage::Disqualified,
        ),
        (
            JourneyCommand::RecordNotInterested {
                at: t(50_000),
                reason: None,
            },
            Stage::NotInterested,
        ),
        (JourneyCommand::OptOut { at: t(50_000) }, Stage::OptedOut),
        (
            JourneyCommand::LinkDuplicate {
                at: t(50_000),
                primary: OTHER_JOURNEY,
            },
            Stage::Duplicate,
        ),
    ];
    for stage in [
        Stage::Referred,
        Stage::PrescreenPassed,
        Stage::Contacted,
        Stage::ReferredToSite,
        Stage::AppointmentScheduled,
        Stage::Consented,
        Stage::Screening,
    ] {
        let state = state_at(stage);
        for (command, closed_stage) in &closers {
            let closed = step(&state, command)
                .unwrap_or_else(|error| panic!("{} in {stage}: {error}", command.name()));
            assert_eq!(stage_of(&closed), *closed_stage);
            assert!(closed_stage.is_closed());
        }
    }
}

#[test]
fn a_journey_cannot_duplicate_itself() {
    let command = JourneyCommand::LinkDuplicate {
        at: t(100),
        primary: JOURNEY,
    };
    assert!(matches!(
        decide(&state_at(Stage::Contacted), &command),
        Err(DomainError::Invalid(_))
    ));
    let linked = step(
        &state_at(Stage::Contacted),
        &JourneyCommand::LinkDuplicate {
            at: t(100),
            primary: OTHER_JOURNEY,
        },
    )
    .unwrap();
    assert_eq!(linked.journey().unwrap().duplicate_of, Some(OTHER_JOURNEY));
    assert_eq!(
        Stage::Duplicate.fhir_subject_state(),
        FhirSubjectState::NotRegistered
    );
}

#[test]
fn erasure_is_accepted_once_in_any_stage_and_changes_no_stage() {
    let erase = JourneyCommand::ErasePersonalData { at: t(90_000) };
    for stage in [
        Stage::Referred,
        Stage::Contacted,
        Stage::AppointmentScheduled,
        Stage::Screening,
        Stage::Randomized,
    ] {
        let state = state_at(stage);
        let erased = step(&state, &erase).expect("erasure accepted");
        let journey = erased.journey().unwrap();
        assert!(journey.erased);
        assert_eq!(journey.stage, stage);
        assert_eq!(journey.external_ref, None);
        assert_eq!(decide(&erased, &erase), Err(DomainError::AlreadyErased));
    }

    // A closed journey can still be erased; an erased open journey still progresses at the
    // site, but the team can no longer call.
    let opted_out = step(
        &state_at(Stage::Contacted),
        &JourneyCommand::OptOut { at: t(100) },
    )
    .unwrap();
    assert!(step(&opted_out, &erase).is_ok());

    let erased = step(&state_at(Stage::Contacted), &erase).unwrap();
    assert!(!erased.journey().unwrap().is_workable());
    assert!(matches!(
        decide(&erased, &attempt(100, ContactOutcome::Reached)),
        Err(DomainError::Invalid(message)) if message.contains("erased")
    ));
    let refer = JourneyCommand::ReferToSite {
        at: t(100),
        site_id: SITES[0],
    };
    assert!(decide(&erased, &refer).is_ok());
}

#[test]
fn blank_reasons_and_labels_are_refused() {
    let screening = state_at(Stage::Screening);
    for command in [
        JourneyCommand::RecordScreenFailure {
            at: t(15_000),
            reason: String::new(),
        },
        JourneyCommand::Randomize {
            at: t(15_000),
            arm: Some(" ".to_owned()),
        },
        JourneyCommand::Withdraw {
            at: t(15_000),
            reason: "\t".to_owned(),
        },
        JourneyCommand::RecordNotInterested {
            at: t(15_000),
            reason: Some(String::new()),
        },
    ] {
        assert!(
            matches!(decide(&screening, &command), Err(DomainError::Invalid(_))),
            "{}",
            command.name()
        );
    }
}

#[test]
fn referral_fields_are_checked() {
    let with = |change: fn(&mut JourneyCommand)| {
        let mut command = referral(true);
        change(&mut command);
        decide(&JourneyState::default(), &command)
    };
    assert!(matches!(
        with(
            |command| if let JourneyCommand::ReceiveReferral { time_zone, .. } = command {
                *time_zone = Some("Mars/Olympus Mons".to_owned());
            }
        ),
        Err(DomainError::Invalid(_))
    ));
    assert!(matches!(
        with(
            |command| if let JourneyCommand::ReceiveReferral { external_ref, .. } = command {
                *external_ref = Some(String::new());
            }
        ),
        Err(DomainError::Invalid(_))
    ));
    assert!(matches!(
        with(
            |command| if let JourneyCommand::ReceiveReferral { contact, .. } = command {
                contact.ciphertext.clear();
            }
        ),
        Err(DomainError::Invalid(_))
    ));
    assert!(with(|_| {}).is_ok());
}

#[test]
fn evolve_is_total_for_events_out_of_order() {
    let (_, log) = run(&happy_path()).unwrap();
    // Events before the referral have nothing to apply to.
    let reversed: Vec<JourneyEvent> = log.iter().rev().cloned().collect();
    let state = fold(&reversed);
    assert_eq!(state.stage(), Some(Stage::Referred));
    // A repeated referral does not reset the journey.
    let mut doubled = log.clone();
    doubled.push(log[0].clone());
    assert_eq!(fold(&doubled), fold(&log));
    // Events without a journey are ignored.
    assert_eq!(fold(&log[1..]), JourneyState::NotStarted);
}

#[test]
fn stages_have_snake_case_names_and_fhir_codes() {
    for stage in Stage::ALL {
        let json = serde_json::to_string(&stage).unwrap();
        assert_eq!(json, format!("\"{stage}\""));
        let back: Stage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stage);
        let fhir = stage.fhir_subject_state();
        assert_eq!(
            serde_json::to_string(&fhir).unwrap(),
            format!("\"{}\"", fhir.code())
        );
    }
    let closed: Vec<Stage> = Stage::ALL.into_iter().filter(|s| s.is_closed()).collect();
    assert_eq!(
        closed,
        [
            Stage::PrescreenFailed,
            Stage::ScreenFailed,
            Stage::Randomized,
            Stage::Withdrawn,
            Stage::Disqualified,
            Stage::NotInterested,
            Stage::OptedOut,
            Stage::Duplicate,
        ]
    );
    assert_eq!(
        Stage::Referred.fhir_subject_state().code(),
        "potential-candidate"
    );
    assert_eq!(Stage::Screening.fhir_subject_state().code(), "screening");
    assert_eq!(Stage::Randomized.fhir_subject_state().code(), "on-study");
    assert_eq!(
        Stage::OptedOut.fhir_subject_state().code(),
        "not-registered"
    );
}

#[test]
fn journey_state_and_commands_round_trip_through_json() {
    let (state, _) = run(&happy_path()).unwrap();
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(serde_json::from_value::<JourneyState>(json).unwrap(), state);
    for command in happy_path() {
        let json = serde_json::to_value(&command).unwrap();
        assert_eq!(json["command"], command.name());
        assert_eq!(
            serde_json::from_value::<JourneyCommand>(json).unwrap(),
            command
        );
    }
}
