use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use funnel_domain::{
    CampaignId, CandidateId, ContactChannel, ContactOutcome, Country, JourneyCommand, JourneyId,
    JourneyState, Language, SealedContact, SiteId, SourceChannel, StudyId, decide, evolve,
};

use super::*;

fn realistic(seed: u64) -> World {
    World::new(PlanSettings {
        seed,
        ..PlanSettings::default()
    })
}

#[test]
fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
    let a = realistic(7);
    let b = realistic(7);
    let c = realistic(8);
    assert_eq!(a.studies, b.studies);
    assert_ne!(a.studies, c.studies);
    for index in 0..3_000 {
        assert_eq!(a.referral(index), b.referral(index), "referral {index}");
    }
    let differ = (0..200)
        .filter(|i| a.referral(*i) != c.referral(*i))
        .count();
    assert!(differ > 190, "{differ}");
}

#[test]
fn the_world_has_the_briefs_shape() {
    let world = realistic(11);
    assert_eq!(world.studies.len(), 3);
    for study in &world.studies {
        assert!(
            (100..=200).contains(&study.sites.len()),
            "{}",
            study.sites.len()
        );
        assert!(
            (10..=26).contains(&study.countries.len()),
            "{}",
            study.countries.len()
        );
        assert!(study.languages.len() >= 5, "{:?}", study.languages);
        for country in &study.countries {
            assert!(Country::parse(country).is_ok());
            assert!(study.sites.iter().any(|site| site.country == *country));
        }
        for language in &study.languages {
            assert!(Language::parse(language).is_ok(), "{language}");
        }
        let names: BTreeSet<&str> = study.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), study.sites.len(), "site names are unique");
        let channels: BTreeSet<&str> = study.campaigns.iter().map(|c| c.channel.as_str()).collect();
        assert_eq!(
            channels,
            ["ads", "advocacy", "newsletter", "physician", "portal"].into()
        );
        assert!(study.target_randomized > 0);
    }
}

#[test]
fn arrivals_are_ordered_and_follow_the_rate() {
    let world = World::new(PlanSettings {
        referrals_per_day: Some(1_000.0),
        ..PlanSettings::default()
    });
    let mut last = Duration::ZERO;
    for index in 0..14_000 {
        let arrival = world.arrival(index);
        assert!(arrival >= last, "{index}");
        last = arrival;
    }
    // Two weeks of 1,000 a day.
    let days = last.as_secs_f64() / DAY;
    assert!((13.5..=14.0).contains(&days), "{days}");
    // Weekday daytime is busier than night.
    let in_hour = |hour: f64| {
        (0..7_000)
            .filter(|i| {
                let h = (world.arrival(*i).as_secs_f64() / HOUR) % 24.0;
                (hour..hour + 1.0).contains(&h)
            })
            .count()
    };
    assert!(in_hour(10.0) > 3 * in_hour(3.0));
    let asap = World::new(PlanSettings {
        referrals_per_day: None,
        ..PlanSettings::default()
    });
    assert_eq!(asap.arrival(12_345), Duration::ZERO);
}

#[test]
fn contact_data_stays_out_of_debug_output() {
    let plan = realistic(3).referral(5);
    let shown = format!("{plan:?}");
    assert!(!shown.contains(&plan.contact.phone));
    assert!(!shown.contains(&plan.contact.email));
    assert!(!shown.contains(&plan.contact.name));
}

/// Funnel figures over many planned journeys, counted the way the dashboards define them.
#[derive(Debug, Default)]
struct Tally {
    referrals: u32,
    prescreened: u32,
    prescreen_passed: u32,
    called: u32,
    reached: u32,
    scheduled: u32,
    no_showed: u32,
    screened: u32,
    screen_failed: u32,
    randomized: u32,
}

fn tally(plans: &[ReferralPlan]) -> Tally {
    let mut t = Tally::default();
    for plan in plans.iter().filter(|p| p.duplicate_of.is_none()) {
        t.referrals += 1;
        let mut prescreen = plan.online_prescreen;
        let (mut called, mut reached, mut scheduled, mut no_show) = (false, false, false, false);
        for step in &plan.steps {
            match &step.action {
                Action::Call(outcome) => {
                    called = true;
                    if let CallOutcome::Reached {
                        prescreen: on_call,
                        appointment_in,
                        ..
                    } = outcome
                    {
                        reached = true;
                        prescreen = prescreen.or(*on_call);
                        scheduled |= appointment_in.is_some();
                    }
                }
                Action::Schedule { .. } => scheduled = true,
                Action::NoShow => no_show = true,
                Action::ScreeningStarted => t.screened += 1,
                Action::ScreenFailed { .. } => t.screen_failed += 1,
                Action::Randomized { .. } => t.randomized += 1,
                _ => {}
            }
        }
        if let Some(passed) = prescreen {
            t.prescreened += 1;
            t.prescreen_passed += u32::from(passed);
        }
        t.called += u32::from(called);
        t.reached += u32::from(reached);
        t.scheduled += u32::from(scheduled);
        t.no_showed += u32::from(no_show);
    }
    t
}

fn rate(part: u32, whole: u32) -> f64 {
    f64::from(part) / f64::from(whole.max(1))
}

#[test]
fn realistic_rates_fall_in_the_briefs_ranges() {
    for seed in [1, 2] {
        let world = realistic(seed);
        let plans: Vec<ReferralPlan> = (0..45_000).map(|i| world.referral(i)).collect();
        for (index, study) in world.studies.iter().enumerate() {
            let mine: Vec<ReferralPlan> =
                plans.iter().filter(|p| p.study == index).cloned().collect();
            let t = tally(&mine);
            let figures = format!("seed {seed} study {index} ({}): {t:?}", study.protocol_code);
            assert!(
                (0.25..=0.5).contains(&rate(t.prescreen_passed, t.prescreened)),
                "pre-screen pass {figures}"
            );
            assert!(
                (0.6..=0.9).contains(&rate(t.reached, t.called)),
                "contact success {figures}"
            );
            assert!(
                (0.2..=0.35).contains(&rate(t.no_showed, t.scheduled)),
                "no-show {figures}"
            );
            assert!(
                (0.3..=0.8).contains(&rate(t.screen_failed, t.screened)),
                "screen fail {figures}"
            );
            let conversion = rate(t.randomized, t.referrals);
            assert!(
                (0.004..=0.02).contains(&conversion),
                "conversion {conversion} {figures}"
            );
        }
    }
}

/// 10–50% of sites randomize 0–1 patients: with the brief's busier trials (25k referrals over
/// about 100 sites); a quiet trial leaves more sites empty, as in the industry figures.
#[test]
fn a_busy_trial_leaves_a_minority_of_sites_with_0_or_1_randomized() {
    for seed in [1, 2, 3] {
        let world = World::new(PlanSettings {
            seed,
            studies: 1,
            sites_per_study: (100, 100),
            ..PlanSettings::default()
        });
        let mut per_site: HashMap<usize, u32> = HashMap::new();
        for plan in (0..25_000).map(|i| world.referral(i)) {
            for step in &plan.steps {
                if let (Actor::Site(site), Action::Randomized { .. }) = (step.actor, &step.action) {
                    *per_site.entry(site).or_default() += 1;
                }
            }
        }
        let sites = world.studies[0].sites.len();
        let weak = (0..sites)
            .filter(|site| per_site.get(site).copied().unwrap_or(0) <= 1)
            .count();
        #[allow(clippy::cast_precision_loss)]
        let weak_share = weak as f64 / sites as f64;
        let randomized: u32 = per_site.values().sum();
        assert!(
            (0.1..=0.5).contains(&weak_share),
            "seed {seed}: {weak_share} of {sites} sites with 0-1 randomized, {randomized} in all"
        );
    }
}

#[test]
fn some_sites_never_act_on_their_referrals() {
    let world = realistic(5);
    let study = &world.studies[0];
    let never: Vec<usize> = (0..study.sites.len())
        .filter(|site| study.sites[*site].responsiveness == Responsiveness::Never)
        .collect();
    assert!(!never.is_empty());
    let mut referred_to_never = 0;
    for plan in (0..20_000)
        .map(|i| world.referral(i))
        .filter(|p| p.study == 0)
    {
        for step in &plan.steps {
            if let Actor::Site(site) = step.actor {
                assert!(!never.contains(&site), "a never-acting site acted");
            }
            if let Action::Call(CallOutcome::Reached {
                refer_to: Some(site),
                ..
            }) = step.action
                && never.contains(&site)
            {
                referred_to_never += 1;
            }
        }
    }
    assert!(referred_to_never > 10, "{referred_to_never}");
}

#[test]
fn the_demo_boost_makes_later_stages_common() {
    let world = World::new(PlanSettings {
        boost: 3.0,
        ..PlanSettings::default()
    });
    let plans: Vec<ReferralPlan> = (0..5_000).map(|i| world.referral(i)).collect();
    let t = tally(&plans);
    let conversion = rate(t.randomized, t.referrals);
    assert!(conversion > 0.05, "{conversion} {t:?}");
}

/// Every planned history, turned into the domain's commands, is accepted by `decide` in order,
/// and site steps are recorded by the site the journey is at.
#[test]
fn every_planned_history_is_legal() {
    for boost in [1.0, 3.0] {
        let world = World::new(PlanSettings {
            seed: 9,
            boost,
            ..PlanSettings::default()
        });
        let site_ids: Vec<Vec<SiteId>> = world
            .studies
            .iter()
            .map(|study| study.sites.iter().map(|_| SiteId::new()).collect())
            .collect();
        for index in 0..20_000 {
            let plan = world.referral(index);
            check_legal(&world, &site_ids, &plan);
        }
    }
}

fn check_legal(world: &World, site_ids: &[Vec<SiteId>], plan: &ReferralPlan) {
    let base: DateTime<Utc> = "2026-01-05T00:00:00Z".parse().unwrap();
    let sites = &site_ids[plan.study];
    let study = &world.studies[plan.study];
    let mut state = JourneyState::NotStarted;
    let apply = |state: &mut JourneyState, command: JourneyCommand| {
        let events = decide(state, &command).unwrap_or_else(|error| {
            panic!(
                "referral {}: {} refused: {error}\n{plan:#?}",
                plan.index,
                command.name()
            )
        });
        *state = events.iter().fold(state.clone(), evolve);
    };
    apply(
        &mut state,
        JourneyCommand::ReceiveReferral {
            at: base,
            journey_id: JourneyId::new(),
            candidate_id: CandidateId::new(),
            study_id: StudyId::new(),
            campaign_id: CampaignId::new(),
            source: study.campaigns[plan.campaign].channel,
            language: Language::parse(plan.language).unwrap(),
            country: Country::parse(plan.country).unwrap(),
            preferred_site: plan.preferred_site.map(|site| sites[site]),
            consent_to_contact: plan.consent_to_contact,
            contact: SealedContact {
                alg: "test".into(),
                nonce: "bm9uY2U=".into(),
                ciphertext: "c2VhbGVk".into(),
            },
            external_ref: None,
            time_zone: Some(plan.time_zone.into()),
        },
    );
    if let Some(passed) = plan.online_prescreen {
        assert_ne!(
            study.campaigns[plan.campaign].channel,
            SourceChannel::Physician
        );
        apply(
            &mut state,
            JourneyCommand::CompletePrescreen {
                at: base,
                passed,
                reasons: vec![],
            },
        );
    }
    let mut last = Duration::ZERO;
    for step in &plan.steps {
        assert!(step.after >= last, "steps are in time order: {plan:#?}");
        last = step.after;
        let at = base + TimeDelta::from_std(step.after).unwrap();
        let later = |wait: &Duration| at + TimeDelta::from_std(*wait).unwrap();
        if let Actor::Site(site) = step.actor {
            assert_eq!(
                state.journey().and_then(|j| j.site_id),
                Some(sites[site]),
                "a site records steps only for its own candidates"
            );
        }
        use JourneyCommand as C;
        let attempt = |outcome| C::RecordContactAttempt {
            at,
            channel: ContactChannel::Phone,
            outcome,
            agent: None,
        };
        let commands = match &step.action {
            Action::Call(CallOutcome::NoAnswer { ends_cadence }) => {
                let mut commands = vec![attempt(ContactOutcome::NoAnswer)];
                if *ends_cadence {
                    commands.push(C::MarkUnreachable { at });
                }
                commands
            }
            Action::Call(CallOutcome::WrongNumber) => {
                vec![
                    attempt(ContactOutcome::WrongNumber),
                    C::MarkUnreachable { at },
                ]
            }
            Action::Call(CallOutcome::Reached {
                prescreen,
                refer_to,
                appointment_in,
            }) => {
                let mut commands = vec![attempt(ContactOutcome::Reached)];
                if let Some(passed) = prescreen {
                    commands.push(C::CompletePrescreen {
                        at,
                        passed: *passed,
                        reasons: vec![],
                    });
                }
                if let Some(site) = refer_to {
                    commands.push(C::ReferToSite {
                        at,
                        site_id: sites[*site],
                    });
                }
                if let Some(wait) = appointment_in {
                    commands.push(C::ScheduleAppointment {
                        at,
                        appointment_at: later(wait),
                    });
                }
                commands
            }
            Action::NotInterested { reason } => {
                vec![C::RecordNotInterested {
                    at,
                    reason: Some((*reason).into()),
                }]
            }
            Action::OptedOut => vec![C::OptOut { at }],
            Action::Disqualified { reason } => vec![C::Disqualify {
                at,
                reason: (*reason).into(),
            }],
            Action::Reallocate { to_site, reason } => vec![C::Reallocate {
                at,
                to_site: sites[*to_site],
                reason: (*reason).into(),
            }],
            Action::SiteContacted => vec![C::RecordSiteContact { at }],
            Action::Schedule { appointment_in } => {
                vec![C::ScheduleAppointment {
                    at,
                    appointment_at: later(appointment_in),
                }]
            }
            Action::Reschedule { appointment_in } => {
                vec![C::RescheduleAppointment {
                    at,
                    appointment_at: later(appointment_in),
                }]
            }
            Action::Attended => vec![C::RecordAttendance { at }],
            Action::NoShow => vec![C::RecordNoShow { at }],
            Action::Consented => vec![C::RecordConsent { at }],
            Action::ScreeningStarted => vec![C::StartScreening { at }],
            Action::ScreenFailed { reason } => {
                vec![C::RecordScreenFailure {
                    at,
                    reason: (*reason).into(),
                }]
            }
            Action::Randomized { arm } => vec![C::Randomize {
                at,
                arm: Some((*arm).into()),
            }],
            Action::Withdrawn { reason } => vec![C::Withdraw {
                at,
                reason: (*reason).into(),
            }],
        };
        for command in commands {
            apply(&mut state, command);
        }
    }
}
