//! Fixtures shared by the example-based tests: fixed ids, a clock, and the happy path.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use funnel_domain::{
    CampaignId, CandidateId, ContactChannel, ContactOutcome, Country, DomainError, JourneyCommand,
    JourneyEvent, JourneyId, JourneyState, Language, SealedContact, SiteId, SlaSettings,
    SourceChannel, SponsorId, Stage, StudyCommand, StudyId, StudyState, decide, decide_study,
    evolve, evolve_study,
};
use uuid::Uuid;

pub(crate) const JOURNEY: JourneyId = JourneyId::from_uuid(Uuid::from_u128(0x1001));
pub(crate) const CANDIDATE: CandidateId = CandidateId::from_uuid(Uuid::from_u128(0x2001));
pub(crate) const STUDY: StudyId = StudyId::from_uuid(Uuid::from_u128(0x3001));
pub(crate) const SPONSOR: SponsorId = SponsorId::from_uuid(Uuid::from_u128(0x4001));
pub(crate) const CAMPAIGN: CampaignId = CampaignId::from_uuid(Uuid::from_u128(0x5001));
pub(crate) const SITES: [SiteId; 3] = [
    SiteId::from_uuid(Uuid::from_u128(0x6001)),
    SiteId::from_uuid(Uuid::from_u128(0x6002)),
    SiteId::from_uuid(Uuid::from_u128(0x6003)),
];
pub(crate) const OTHER_JOURNEY: JourneyId = JourneyId::from_uuid(Uuid::from_u128(0x1002));

/// Monday 6 January 2025, 09:00 UTC, plus `minutes`.
pub(crate) fn t(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_736_154_000, 0).expect("valid timestamp")
        + Duration::minutes(minutes)
}

pub(crate) fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
}

pub(crate) fn country(code: &str) -> Country {
    Country::parse(code).expect("valid country")
}

pub(crate) fn language(tag: &str) -> Language {
    Language::parse(tag).expect("valid language")
}

pub(crate) fn sealed_contact() -> SealedContact {
    SealedContact {
        alg: "xchacha20poly1305".to_owned(),
        nonce: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        ciphertext: "c2VhbGVk".to_owned(),
    }
}

pub(crate) fn referral(consent_to_contact: bool) -> JourneyCommand {
    JourneyCommand::ReceiveReferral {
        at: t(0),
        journey_id: JOURNEY,
        candidate_id: CANDIDATE,
        study_id: STUDY,
        campaign_id: CAMPAIGN,
        source: SourceChannel::Ads,
        language: language("es"),
        country: country("ES"),
        preferred_site: Some(SITES[0]),
        consent_to_contact,
        contact: sealed_contact(),
        external_ref: Some("fb-lead-42".to_owned()),
        time_zone: Some("Europe/Madrid".to_owned()),
    }
}

pub(crate) fn attempt(minutes: i64, outcome: ContactOutcome) -> JourneyCommand {
    JourneyCommand::RecordContactAttempt {
        at: t(minutes),
        channel: ContactChannel::Phone,
        outcome,
        agent: None,
    }
}

/// The commands of a journey from referral to randomization, in order.
pub(crate) fn happy_path() -> Vec<JourneyCommand> {
    vec![
        referral(true),
        JourneyCommand::CompletePrescreen {
            at: t(1),
            passed: true,
            reasons: vec![],
        },
        attempt(60, ContactOutcome::Reached),
        JourneyCommand::ReferToSite {
            at: t(70),
            site_id: SITES[0],
        },
        JourneyCommand::RecordSiteContact { at: t(2_000) },
        JourneyCommand::ScheduleAppointment {
            at: t(2_010),
            appointment_at: t(10_000),
        },
        JourneyCommand::RecordAttendance { at: t(10_000) },
        JourneyCommand::RecordConsent { at: t(10_030) },
        JourneyCommand::StartScreening { at: t(10_040) },
        JourneyCommand::Randomize {
            at: t(20_000),
            arm: None,
        },
    ]
}

/// Decides and applies each command in turn; fails on the first refusal.
pub(crate) fn run(
    commands: &[JourneyCommand],
) -> Result<(JourneyState, Vec<JourneyEvent>), (usize, DomainError)> {
    let mut state = JourneyState::default();
    let mut log = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        let events = decide(&state, command).map_err(|error| (index, error))?;
        for event in &events {
            state = evolve(state, event);
        }
        log.extend(events);
    }
    Ok((state, log))
}

/// The state after running commands that must all be accepted.
pub(crate) fn state_after(commands: &[JourneyCommand]) -> JourneyState {
    match run(commands) {
        Ok((state, _)) => state,
        Err((index, error)) => panic!("command {index} ({:?}) refused: {error}", commands[index]),
    }
}

/// The happy path's state once it has reached `stage`.
pub(crate) fn state_at(stage: Stage) -> JourneyState {
    let path = happy_path();
    for length in 1..=path.len() {
        let state = state_after(&path[..length]);
        if state.stage() == Some(stage) {
            return state;
        }
    }
    panic!("the happy path never reaches {stage}");
}

/// Decides one command and applies its events.
pub(crate) fn step(
    state: &JourneyState,
    command: &JourneyCommand,
) -> Result<JourneyState, DomainError> {
    let events = decide(state, command)?;
    Ok(events.iter().fold(state.clone(), evolve))
}

pub(crate) fn stage_of(state: &JourneyState) -> Stage {
    state.stage().expect("journey started")
}

pub(crate) fn create_study() -> StudyCommand {
    StudyCommand::CreateStudy {
        at: t(0),
        study_id: STUDY,
        sponsor_id: SPONSOR,
        title: "A phase III study of something promising".to_owned(),
        protocol_code: "ABC-123-301".to_owned(),
        target_randomized: 400,
        countries: vec![country("ES"), country("DE")],
        languages: vec![language("es"), language("de"), language("en")],
        sla: SlaSettings::default(),
    }
}

pub(crate) fn add_site(site_id: SiteId, code: &str) -> StudyCommand {
    StudyCommand::AddSite {
        at: t(10),
        site_id,
        name: "Hospital Universitario".to_owned(),
        country: country(code),
        languages: vec![language("es")],
        monthly_target_randomized: 0.5,
    }
}

/// Decides and applies study commands that must all be accepted.
pub(crate) fn study_after(commands: &[StudyCommand]) -> StudyState {
    commands
        .iter()
        .fold(StudyState::default(), |state, command| {
            let events = decide_study(&state, command)
                .unwrap_or_else(|error| panic!("{} refused: {error}", command.name()));
            events.iter().fold(state, evolve_study)
        })
}
