//! Example-based tests of the study aggregate's rules.

use funnel_domain::study::SiteStatus;
use funnel_domain::{
    CampaignId, Currency, DomainError, SlaSettings, SourceChannel, StudyCommand, StudyEvent,
    StudyState, decide_study, fold_study,
};
use uuid::Uuid;

use crate::support::*;

const CAMPAIGN_B: CampaignId = CampaignId::from_uuid(Uuid::from_u128(0x5002));

fn register_campaign(campaign_id: CampaignId) -> StudyCommand {
    StudyCommand::RegisterCampaign {
        at: t(20),
        campaign_id,
        name: "Spring newsletter".to_owned(),
        channel: SourceChannel::Newsletter,
    }
}

fn spend(campaign_id: CampaignId, amount_minor: i64) -> StudyCommand {
    StudyCommand::RecordCampaignSpend {
        at: t(30),
        campaign_id,
        amount_minor,
        currency: Currency::parse("EUR").unwrap(),
        period_start: date(2025, 1, 1),
        period_end: date(2025, 1, 31),
    }
}

fn pause(site_index: usize) -> StudyCommand {
    StudyCommand::PauseSite {
        at: t(40),
        site_id: SITES[site_index],
        reason: Some("drug supply".to_owned()),
    }
}

fn resume(site_index: usize) -> StudyCommand {
    StudyCommand::ResumeSite {
        at: t(50),
        site_id: SITES[site_index],
    }
}

fn close(site_index: usize) -> StudyCommand {
    StudyCommand::CloseSite {
        at: t(60),
        site_id: SITES[site_index],
        reason: None,
    }
}

#[test]
fn a_study_is_created_once() {
    let state = study_after(&[create_study()]);
    let study = state.study().expect("created");
    assert_eq!(study.protocol_code, "ABC-123-301");
    assert_eq!(study.sla, SlaSettings::default());
    assert_eq!(
        decide_study(&state, &create_study()),
        Err(DomainError::StudyAlreadyCreated)
    );
    assert_eq!(
        decide_study(&StudyState::default(), &add_site(SITES[0], "ES")),
        Err(DomainError::StudyNotCreated)
    );
}

#[test]
fn study_creation_is_validated() {
    let with = |change: fn(&mut StudyCommand)| {
        let mut command = create_study();
        change(&mut command);
        decide_study(&StudyState::default(), &command)
    };
    let cases: [fn(&mut StudyCommand); 5] = [
        |c| {
            if let StudyCommand::CreateStudy { title, .. } = c {
                title.clear();
            }
        },
        |c| {
            if let StudyCommand::CreateStudy {
                target_randomized, ..
            } = c
            {
                *target_randomized = 0;
            }
        },
        |c| {
            if let StudyCommand::CreateStudy { countries, .. } = c {
                countries.clear();
            }
        },
        |c| {
            if let StudyCommand::CreateStudy { languages, .. } = c {
                languages.push(language("ES"));
            }
        },
        |c| {
            if let StudyCommand::CreateStudy { sla, .. } = c {
                sla.contact_attempts = 0;
            }
        },
    ];
    for (index, case) in cases.into_iter().enumerate() {
        assert!(
            matches!(with(case), Err(DomainError::Invalid(_))),
            "case {index}"
        );
    }
}

#[test]
fn sites_are_unique_and_in_a_study_country() {
    let state = study_after(&[create_study(), add_site(SITES[0], "ES")]);
    assert_eq!(state.site_status(SITES[0]), Some(SiteStatus::Active));
    assert!(state.site_accepts_referrals(SITES[0]));
    assert_eq!(state.site_status(SITES[1]), None);
    assert_eq!(
        decide_study(&state, &add_site(SITES[0], "DE")),
        Err(DomainError::SiteAlreadyAdded(SITES[0]))
    );
    assert!(matches!(
        decide_study(&state, &add_site(SITES[1], "FR")),
        Err(DomainError::Invalid(message)) if message.contains("FR")
    ));
    let nan_target = StudyCommand::AddSite {
        at: t(10),
        site_id: SITES[1],
        name: "Klinikum".to_owned(),
        country: country("DE"),
        languages: vec![language("de")],
        monthly_target_randomized: f64::NAN,
    };
    assert!(matches!(
        decide_study(&state, &nan_target),
        Err(DomainError::Invalid(_))
    ));
}

#[test]
fn sites_pause_resume_and_close_for_good() {
    let setup = [
        create_study(),
        add_site(SITES[0], "ES"),
        add_site(SITES[1], "DE"),
    ];
    let paused = study_after(&[setup.as_slice(), &[pause(0)]].concat());
    assert_eq!(paused.site_status(SITES[0]), Some(SiteStatus::Paused));
    assert!(!paused.site_accepts_referrals(SITES[0]));
    assert_eq!(
        decide_study(&paused, &pause(0)),
        Err(DomainError::IllegalSiteTransition {
            site_id: SITES[0],
            status: SiteStatus::Paused,
            command: "pause_site"
        })
    );

    let resumed = study_after(&[setup.as_slice(), &[pause(0), resume(0)]].concat());
    assert_eq!(resumed.site_status(SITES[0]), Some(SiteStatus::Active));
    let error = decide_study(&resumed, &resume(0)).unwrap_err();
    assert!(error.to_string().contains("`active`"), "{error}");

    // Close from active and from paused; closed is final.
    let closed = study_after(&[setup.as_slice(), &[close(1), pause(0), close(0)]].concat());
    assert_eq!(closed.site_status(SITES[0]), Some(SiteStatus::Closed));
    assert_eq!(closed.site_status(SITES[1]), Some(SiteStatus::Closed));
    for command in [pause(0), resume(0), close(0)] {
        let error = decide_study(&closed, &command).unwrap_err();
        assert_eq!(
            error,
            DomainError::IllegalSiteTransition {
                site_id: SITES[0],
                status: SiteStatus::Closed,
                command: command.name()
            }
        );
        assert!(error.to_string().contains("`closed`"));
    }
    assert_eq!(
        decide_study(&closed, &pause(2)),
        Err(DomainError::UnknownSite(SITES[2]))
    );
}

#[test]
fn campaigns_register_once_and_record_positive_spend() {
    let state = study_after(&[create_study(), register_campaign(CAMPAIGN)]);
    assert_eq!(
        decide_study(&state, &register_campaign(CAMPAIGN)),
        Err(DomainError::CampaignAlreadyRegistered(CAMPAIGN))
    );
    assert_eq!(
        decide_study(&state, &spend(CAMPAIGN_B, 100)),
        Err(DomainError::UnknownCampaign(CAMPAIGN_B))
    );
    for amount in [0, -5] {
        assert!(matches!(
            decide_study(&state, &spend(CAMPAIGN, amount)),
            Err(DomainError::Invalid(_))
        ));
    }
    let inverted = StudyCommand::RecordCampaignSpend {
        at: t(30),
        campaign_id: CAMPAIGN,
        amount_minor: 100,
        currency: Currency::parse("EUR").unwrap(),
        period_start: date(2025, 2, 1),
        period_end: date(2025, 1, 1),
    };
    assert!(matches!(
        decide_study(&state, &inverted),
        Err(DomainError::Invalid(_))
    ));

    let spent = study_after(&[
        create_study(),
        register_campaign(CAMPAIGN),
        spend(CAMPAIGN, 150_000),
        spend(CAMPAIGN, 2_550),
    ]);
    let campaign = spent.campaign(CAMPAIGN).unwrap();
    assert_eq!(
        campaign.spend_minor.get(&Currency::parse("EUR").unwrap()),
        Some(&152_550)
    );
}

#[test]
fn study_replays_to_the_same_state() {
    let commands = [
        create_study(),
        add_site(SITES[0], "ES"),
        add_site(SITES[1], "DE"),
        pause(0),
        register_campaign(CAMPAIGN),
        spend(CAMPAIGN, 100),
        close(1),
    ];
    let mut state = StudyState::default();
    let mut log: Vec<StudyEvent> = Vec::new();
    for command in &commands {
        let events = decide_study(&state, command).unwrap();
        assert_eq!(events.len(), 1);
        state = events.iter().fold(state, funnel_domain::evolve_study);
        log.extend(events);
    }
    assert_eq!(fold_study(&log), state);
    assert_eq!(state, study_after(&commands));
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(serde_json::from_value::<StudyState>(json).unwrap(), state);
}
