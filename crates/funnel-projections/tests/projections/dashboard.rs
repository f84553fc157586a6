//! The `sponsor_dashboard` read model: the projection equals a plain fold of the same events,
//! and every report equals figures computed in plain Rust from that fold.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeDelta, Utc};
use funnel_domain::{
    CampaignId, CandidateId, ContactChannel, ContactOutcome, Country, Currency, DomainEvent,
    JourneyCommand, JourneyEvent, JourneyId, JourneyState, Language, SealedContact, SiteId,
    SourceChannel, SponsorId, Stage, StudyCommand, StudyEvent, StudyId, StudyState, decide,
    decide_study, evolve, evolve_study,
};
use funnel_eventlog::StreamKey;
use funnel_projections::dashboard::{
    self, Bucket, DashboardFilter, DashboardModel, ForecastStatus, FunnelStage, JourneyFact,
    SeriesMetric,
};
use funnel_projections::{ProjectedEvent, Projector, ReadModels, SponsorDashboard};
use funnel_testkit::{test_database, test_nats};
use prometheus::Registry;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::support::{
    append_projected, apply_batched, apply_directly, fast_settings, in_schema, provisioned_log,
    studies_after_a_third, wait_live_caught_up,
};

const COUNTRIES: [&str; 3] = ["ES", "DE", "FR"];

fn start_time() -> DateTime<Utc> {
    "2025-01-06T09:00:00Z".parse().expect("time")
}

/// After every generated event, for reports that look at "now".
fn now() -> DateTime<Utc> {
    "2025-09-01T00:00:00Z".parse().expect("time")
}

fn country(code: &str) -> Country {
    Country::parse(code).expect("country")
}

/// A generated data set: study setup and journeys, as the projection sees them.
struct DataSet {
    events: Vec<ProjectedEvent>,
    studies: Vec<StudyId>,
}

fn projected(key: &StreamKey, event: DomainEvent) -> ProjectedEvent {
    ProjectedEvent {
        seq: 0,
        key: key.clone(),
        id: Uuid::now_v7(),
        time: event.at(),
        event,
    }
}

struct StudySetup {
    id: StudyId,
    sites: Vec<SiteId>,
    campaigns: Vec<(CampaignId, SourceChannel)>,
}

/// Study streams through `decide_study`: sites (one never referred to, one paused and
/// resumed, one closed), campaigns with spend in two currencies.
fn generate_study(rng: &mut StdRng, events: &mut Vec<ProjectedEvent>) -> StudySetup {
    let id = StudyId::new();
    let key = StreamKey::new("study", *id.as_uuid()).expect("key");
    let mut state = StudyState::NotCreated;
    let mut at = start_time() - TimeDelta::days(30);
    let mut run = |state: &mut StudyState, command: StudyCommand| {
        for event in decide_study(state, &command).expect("legal study command") {
            *state = evolve_study(std::mem::take(state), &event);
            events.push(projected(&key, event.into()));
        }
    };
    run(
        &mut state,
        StudyCommand::CreateStudy {
            at,
            study_id: id,
            sponsor_id: SponsorId::new(),
            title: "A phase III study".into(),
            protocol_code: format!("ABC-{}", rng.gen_range(100..999)),
            target_randomized: rng.gen_range(5..40),
            countries: COUNTRIES.iter().map(|code| country(code)).collect(),
            languages: vec![Language::parse("es").expect("language")],
            sla: funnel_domain::SlaSettings::default(),
        },
    );
    let mut sites = Vec::new();
    for n in 0..5 {
        at += TimeDelta::hours(rng.gen_range(1..200));
        let site = SiteId::new();
        sites.push(site);
        run(
            &mut state,
            StudyCommand::AddSite {
                at,
                site_id: site,
                name: format!("Hospital {n}"),
                country: country(COUNTRIES[n % COUNTRIES.len()]),
                languages: vec![Language::parse("es").expect("language")],
                monthly_target_randomized: [0.5, 1.0, 1.5, 2.0][rng.gen_range(0..4)],
            },
        );
    }
    let late = start_time() + TimeDelta::days(60);
    run(
        &mut state,
        StudyCommand::PauseSite {
            at: late,
            site_id: sites[1],
            reason: Some("staff shortage".into()),
        },
    );
    run(
        &mut state,
        StudyCommand::ResumeSite {
            at: late + TimeDelta::days(10),
            site_id: sites[1],
        },
    );
    run(
        &mut state,
        StudyCommand::CloseSite {
            at: late + TimeDelta::days(20),
            site_id: sites[2],
            reason: None,
        },
    );
    let mut campaigns = Vec::new();
    for n in 0..4 {
        let campaign = CampaignId::new();
        let channel = SourceChannel::ALL[(n + rng.gen_range(0..2)) % SourceChannel::ALL.len()];
        campaigns.push((campaign, channel));
        run(
            &mut state,
            StudyCommand::RegisterCampaign {
                at,
                campaign_id: campaign,
                name: format!("Campaign {n}"),
                channel,
            },
        );
        // The last campaign records no spend: it must show no cost.
        for month in 0..u32::try_from(n % 4).expect("small") {
            let period_start = NaiveDate::from_ymd_opt(2025, 1 + month, 1).expect("date");
            run(
                &mut state,
                StudyCommand::RecordCampaignSpend {
                    at: at + TimeDelta::days(i64::from(month) * 30),
                    campaign_id: campaign,
                    amount_minor: rng.gen_range(10_000..500_000),
                    currency: Currency::parse(if month == 1 { "USD" } else { "EUR" })
                        .expect("currency"),
                    period_start,
                    period_end: period_start + Days::new(27),
                },
            );
        }
    }
    StudySetup {
        id,
        // The last site is never referred to: the site table must still list it.
        sites: sites[..4].to_vec(),
        campaigns,
    }
}

fn sealed() -> SealedContact {
    SealedContact {
        alg: "xchacha20poly1305".into(),
        nonce: "bm9uY2U=".into(),
        ciphertext: "c2VhbGVk".into(),
    }
}

/// The next step of a typical journey, so that many journeys get far down the funnel.
fn forward(rng: &mut StdRng, stage: Stage, at: DateTime<Utc>, site: SiteId) -> JourneyCommand {
    let later = at + TimeDelta::days(rng.gen_range(1..10));
    match stage {
        Stage::Referred => JourneyCommand::CompletePrescreen {
            at,
            passed: rng.gen_bool(0.7),
            reasons: Vec::new(),
        },
        Stage::PrescreenPassed | Stage::Contacting | Stage::Unreachable => {
            JourneyCommand::RecordContactAttempt {
                at,
                channel: ContactChannel::Phone,
                outcome: if rng.gen_bool(0.6) {
                    ContactOutcome::Reached
                } else {
                    ContactOutcome::NoAnswer
                },
                agent: None,
            }
        }
        Stage::Contacted => JourneyCommand::ReferToSite { at, site_id: site },
        Stage::ReferredToSite => JourneyCommand::RecordSiteContact { at },
        Stage::SiteContacted => JourneyCommand::ScheduleAppointment {
            at,
            appointment_at: later,
        },
        Stage::AppointmentScheduled => {
            if rng.gen_bool(0.75) {
                JourneyCommand::RecordAttendance { at }
            } else {
                JourneyCommand::RecordNoShow { at }
            }
        }
        Stage::NoShow => JourneyCommand::RescheduleAppointment {
            at,
            appointment_at: later,
        },
        Stage::Attended => JourneyCommand::RecordConsent { at },
        Stage::Consented => JourneyCommand::StartScreening { at },
        Stage::Screening => {
            if rng.gen_bool(0.5) {
                JourneyCommand::Randomize { at, arm: None }
            } else {
                JourneyCommand::RecordScreenFailure {
                    at,
                    reason: "criteria".into(),
                }
            }
        }
        _ => JourneyCommand::ErasePersonalData { at },
    }
}

/// Any command: most are refused by `decide` in a given stage, the others make detours.
fn detour(
    rng: &mut StdRng,
    at: DateTime<Utc>,
    site: SiteId,
    journeys: &[JourneyId],
) -> JourneyCommand {
    match rng.gen_range(0..12) {
        0 => JourneyCommand::Reallocate {
            at,
            to_site: site,
            reason: "site is slow".into(),
        },
        1 => JourneyCommand::RecordNotInterested { at, reason: None },
        2 => JourneyCommand::MarkUnreachable { at },
        3 => JourneyCommand::RequestCallback {
            at,
            callback_at: at + TimeDelta::days(1),
            time_zone: "Europe/Madrid".into(),
        },
        4 => match journeys.choose(rng) {
            Some(primary) => JourneyCommand::LinkDuplicate {
                at,
                primary: *primary,
            },
            None => JourneyCommand::OptOut { at },
        },
        5 => JourneyCommand::ErasePersonalData { at },
        6 => JourneyCommand::Withdraw {
            at,
            reason: "moved away".into(),
        },
        7 => JourneyCommand::RecordContactAttempt {
            at,
            channel: ContactChannel::Sms,
            outcome: *ContactOutcome::ALL.choose(rng).expect("outcomes"),
            agent: None,
        },
        8 => JourneyCommand::Disqualify {
            at,
            reason: "criteria".into(),
        },
        9 => JourneyCommand::ReferToSite { at, site_id: site },
        10 => JourneyCommand::RecordNoShow { at },
        _ => JourneyCommand::OptOut { at },
    }
}

/// Studies and journeys for `seed`: every history is one the domain accepts, plus two that
/// the fold must ignore in part (events before a referral, a second referral).
fn generate(seed: u64, journeys: usize) -> DataSet {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    let setups: Vec<StudySetup> = (0..2)
        .map(|_| generate_study(&mut rng, &mut events))
        .collect();
    // Setup of a study never created: ignored, as by `evolve_study`.
    let orphan = StreamKey::new("study", Uuid::now_v7()).expect("key");
    events.push(projected(
        &orphan,
        StudyEvent::SitePaused(funnel_domain::events::SitePaused {
            at: start_time(),
            site_id: SiteId::new(),
            reason: None,
        })
        .into(),
    ));
    let mut ids: Vec<JourneyId> = Vec::new();
    for n in 0..journeys {
        let setup = &setups[rng.gen_range(0..setups.len())];
        let journey_id = JourneyId::new();
        let key = StreamKey::new("journey", *journey_id.as_uuid()).expect("key");
        let mut at = start_time()
            + TimeDelta::hours(i64::try_from(n).expect("small") * 7)
            + TimeDelta::minutes(rng.gen_range(0..600));
        // Mostly registered campaigns; a few referrals from a campaign never registered.
        let (campaign_id, source) = if rng.gen_bool(0.9) {
            *setup.campaigns.choose(&mut rng).expect("campaigns")
        } else {
            (CampaignId::new(), SourceChannel::Other)
        };
        let code = *COUNTRIES.choose(&mut rng).expect("countries");
        let referral = JourneyCommand::ReceiveReferral {
            at,
            journey_id,
            candidate_id: CandidateId::new(),
            study_id: setup.id,
            campaign_id,
            source,
            language: Language::parse(&code.to_ascii_lowercase()).expect("language"),
            country: country(code),
            preferred_site: None,
            consent_to_contact: true,
            contact: sealed(),
            external_ref: None,
            time_zone: Some("Europe/Madrid".into()),
        };
        if n == 3 {
            // A stray event before the referral changes nothing.
            events.push(projected(
                &key,
                JourneyEvent::NoShow(funnel_domain::events::NoShow { at }).into(),
            ));
        }
        let mut state = JourneyState::NotStarted;
        let mut history = Vec::new();
        for event in decide(&state, &referral).expect("referral") {
            state = evolve(state, &event);
            history.push(event);
        }
        for _ in 0..rng.gen_range(0..16) {
            at +=
                TimeDelta::hours(rng.gen_range(1..72)) + TimeDelta::seconds(rng.gen_range(0..3600));
            let site = *setup.sites.choose(&mut rng).expect("sites");
            let mut applied = false;
            for attempt in 0..20 {
                let stage = state.stage().expect("started");
                let command = if attempt == 0 && rng.gen_bool(0.8) {
                    forward(&mut rng, stage, at, site)
                } else {
                    detour(&mut rng, at, site, &ids)
                };
                if let Ok(new) = decide(&state, &command) {
                    for event in new {
                        state = evolve(state, &event);
                        history.push(event);
                    }
                    applied = true;
                    break;
                }
            }
            if !applied {
                break;
            }
        }
        if n == 5 {
            // A second referral on the same journey changes nothing.
            let JourneyEvent::ReferralReceived(mut again) = history[0].clone() else {
                unreachable!("histories start with the referral");
            };
            again.at = at + TimeDelta::hours(1);
            again.source = SourceChannel::Physician;
            history.push(JourneyEvent::ReferralReceived(again));
        }
        ids.push(journey_id);
        events.extend(
            history
                .into_iter()
                .map(|event| projected(&key, event.into())),
        );
    }
    DataSet {
        events,
        studies: setups.iter().map(|setup| setup.id).collect(),
    }
}

// ---------------------------------------------------------------------------------------
// Applying directly, in a schema of the test's own (no runtime involved).

const SCHEMA: &str = "dashboard_direct";

async fn direct_data_set(seed: u64, journeys: usize) -> (funnel_testkit::TestDb, DataSet) {
    let db = test_database().await;
    let data = generate(seed, journeys);
    apply_directly(&db.pool, &SponsorDashboard, SCHEMA, &data.events).await;
    (db, data)
}

fn assert_covers_the_funnel(model: &DashboardModel) {
    let facts: Vec<&JourneyFact> = model.journeys.values().map(|j| &j.fact).collect();
    assert!(
        facts.iter().any(|f| f.randomized_at.is_some()),
        "some randomized"
    );
    assert!(
        facts.iter().any(|f| f.screen_failed_at.is_some()),
        "some screen failed"
    );
    assert!(facts.iter().any(|f| f.no_shows > 0), "some no-shows");
    assert!(facts.iter().any(|f| !f.counted), "some duplicates");
    assert!(
        facts.iter().any(|f| f.reallocations > 0),
        "some reallocations"
    );
    assert!(
        model.journeys.values().any(|j| j.visits.len() > 1),
        "some journeys at two sites"
    );
    assert!(!model.spend.is_empty());
}

#[tokio::test]
async fn dashboard_applied_directly_equals_the_fold() {
    let db = test_database().await;
    let mut all = Vec::new();
    for seed in [1_u64, 2, 3, 4] {
        all.extend(generate(seed, 120).events);
    }
    apply_directly(&db.pool, &SponsorDashboard, SCHEMA, &all).await;
    let expected = dashboard::fold(&all);
    assert_covers_the_funnel(&expected);
    // The ignored events really were ignored.
    assert_eq!(expected.studies.len(), 8);
    let mut tx = in_schema(&db.pool, SCHEMA).await;
    let stored = dashboard::load(&mut tx).await.expect("load");
    assert_eq!(stored, expected);
}

/// Batch apply (one read and a few writes per run of journey events) leaves exactly the rows
/// that applying event by event leaves, whatever the batch boundaries, with study events in
/// the middle of runs of journey events.
#[tokio::test]
async fn dashboard_applied_in_batches_equals_applied_event_by_event() {
    let db = test_database().await;
    let mut all = Vec::new();
    for seed in [5_u64, 6, 7] {
        all.extend(generate(seed, 120).events);
    }
    let mixed = studies_after_a_third(all);
    let expected = dashboard::fold(&mixed);
    apply_directly(&db.pool, &SponsorDashboard, "dashboard_one_by_one", &mixed).await;
    let mut tx = in_schema(&db.pool, "dashboard_one_by_one").await;
    let one_by_one = dashboard::load(&mut tx).await.expect("load");
    drop(tx);
    assert_eq!(one_by_one, expected);
    for batch in [7_usize, 100, 5000] {
        let schema = format!("dashboard_batched_{batch}");
        apply_batched(&db.pool, &SponsorDashboard, &schema, &mixed, batch).await;
        let mut tx = in_schema(&db.pool, &schema).await;
        assert_eq!(
            dashboard::load(&mut tx).await.expect("load"),
            one_by_one,
            "batches of {batch}"
        );
    }
}

/// The same property over histories proptest picks (and shrinks, by seed and size, when one
/// disagrees): each case is applied in a schema of its own of one database.
#[test]
fn dashboard_equals_the_fold_for_generated_histories() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(test_database());
    let cases = std::sync::atomic::AtomicU32::new(0);
    let config = ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(seed in any::<u64>(), journeys in 1_usize..60)| {
        let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let schema = format!("dashboard_case_{case}");
        let data = generate(seed, journeys);
        let (stored, expected) = runtime.block_on(async {
            apply_directly(&db.pool, &SponsorDashboard, &schema, &data.events).await;
            let mut tx = in_schema(&db.pool, &schema).await;
            let stored = dashboard::load(&mut tx).await.expect("load");
            (stored, dashboard::fold(&data.events))
        });
        prop_assert_eq!(stored, expected);
    });
}

// ---------------------------------------------------------------------------------------
// Through the runtime: NATS stream → projector → live generation.

async fn projector_equals_fold(seed: u64) {
    let nats = test_nats().await;
    let log = provisioned_log(&nats.url).await;
    let db = test_database().await;
    let data = generate(seed, 150);
    let (first, second) = data.events.split_at(data.events.len() / 2);
    append_projected(&log, first).await;
    let projector = Projector::new(
        log.clone(),
        db.pool.clone(),
        &Registry::new(),
        fast_settings(),
    )
    .expect("metrics")
    .with(SponsorDashboard);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    // Half before the projector starts (catch-up), half while it runs.
    append_projected(&log, second).await;
    wait_live_caught_up(&log, &db.pool, SponsorDashboard::NAME).await;
    let expected = dashboard::fold(&data.events);
    assert_covers_the_funnel(&expected);
    let mut tx = ReadModels::new(db.pool.clone())
        .read(SponsorDashboard::NAME)
        .await
        .expect("live generation");
    assert_eq!(dashboard::load(&mut tx).await.expect("load"), expected);
    // The reports run on the live generation too.
    let report = dashboard::study_funnel(&mut tx, data.studies[0], &DashboardFilter::default())
        .await
        .expect("funnel");
    assert_eq!(
        report.steps[0].journeys,
        counted(&expected, data.studies[0], &DashboardFilter::default()).len() as i64
    );
    drop(tx);
    let _ = stop.send(());
    task.await.expect("projector");
}

#[tokio::test]
async fn dashboard_projector_equals_the_fold_seed_11() {
    projector_equals_fold(11).await;
}

#[tokio::test]
async fn dashboard_projector_equals_the_fold_seed_12() {
    projector_equals_fold(12).await;
}

// ---------------------------------------------------------------------------------------
// Reports against figures computed from the fold.

fn utc_day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// The documented filter, in plain Rust: counted journeys of the study, referred within the
/// dates, from the countries and sources, handled now by one of the sites.
fn counted<'a>(
    model: &'a DashboardModel,
    study: StudyId,
    filter: &DashboardFilter,
) -> Vec<(
    &'a JourneyId,
    &'a funnel_projections::dashboard::JourneyRecord,
)> {
    model
        .journeys
        .iter()
        .filter(|(_, j)| {
            let f = &j.fact;
            f.study_id == study
                && f.counted
                && filter
                    .from
                    .is_none_or(|from| utc_day(f.referred_at) >= from)
                && filter.to.is_none_or(|to| utc_day(f.referred_at) <= to)
                && (filter.countries.is_empty() || filter.countries.contains(&f.country))
                && (filter.sources.is_empty() || filter.sources.contains(&f.source))
                && (filter.site_ids.is_empty()
                    || f.site_id
                        .is_some_and(|site| filter.site_ids.contains(&site)))
        })
        .collect()
}

/// Reached step k: has that milestone or a later one (written out, not via `funnel_step`).
fn reached(f: &JourneyFact, stage: FunnelStage) -> bool {
    let milestones = [
        true,
        f.prescreen_passed == Some(true),
        f.contacted_at.is_some(),
        f.referred_to_site_at.is_some(),
        f.site_contacted_at.is_some(),
        f.scheduled_at.is_some(),
        f.attended_at.is_some(),
        f.consented_at.is_some(),
        f.screening_started_at.is_some() || f.screen_failed_at.is_some(),
        f.randomized_at.is_some(),
    ];
    let index = FunnelStage::ALL
        .iter()
        .position(|s| *s == stage)
        .expect("stage");
    milestones[index..].iter().any(|&m| m)
}

fn rate(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

async fn check_funnel(
    tx: &mut Transaction<'_, Postgres>,
    model: &DashboardModel,
    study: StudyId,
    filter: &DashboardFilter,
) -> i64 {
    let report = dashboard::study_funnel(tx, study, filter)
        .await
        .expect("funnel");
    let journeys = counted(model, study, filter);
    let count = |stage| {
        journeys
            .iter()
            .filter(|(_, j)| reached(&j.fact, stage))
            .count()
    };
    let stages: Vec<(FunnelStage, i64)> =
        report.steps.iter().map(|s| (s.stage, s.journeys)).collect();
    let expected: Vec<(FunnelStage, i64)> = FunnelStage::ALL
        .iter()
        .map(|&stage| (stage, count(stage) as i64))
        .collect();
    assert_eq!(stages, expected, "{filter:?}");
    for pair in report.steps.windows(2) {
        assert_eq!(
            pair[1].conversion_from_previous,
            rate(pair[1].journeys as usize, pair[0].journeys as usize)
        );
    }
    assert_eq!(
        report.overall_conversion,
        rate(count(FunnelStage::Randomized), count(FunnelStage::Referred))
    );
    let prescreened = journeys
        .iter()
        .filter(|(_, j)| j.fact.prescreened_at.is_some())
        .count();
    let passed = journeys
        .iter()
        .filter(|(_, j)| j.fact.prescreen_passed == Some(true))
        .count();
    assert_eq!(report.prescreen_pass_rate, rate(passed, prescreened));
    let failed = journeys
        .iter()
        .filter(|(_, j)| j.fact.screen_failed_at.is_some())
        .count();
    assert_eq!(
        report.screen_fail_rate,
        rate(failed, count(FunnelStage::Screening))
    );
    let scheduled = journeys
        .iter()
        .filter(|(_, j)| j.fact.scheduled_at.is_some())
        .count();
    let no_show = journeys
        .iter()
        .filter(|(_, j)| j.fact.scheduled_at.is_some() && j.fact.no_shows > 0)
        .count();
    assert_eq!(report.no_show_rate, rate(no_show, scheduled));
    let mut current: BTreeMap<String, i64> = BTreeMap::new();
    for (_, j) in &journeys {
        *current.entry(j.fact.stage.as_str().to_owned()).or_default() += 1;
    }
    let reported: BTreeMap<String, i64> = report
        .current_stages
        .iter()
        .map(|s| (s.stage.clone(), s.journeys))
        .collect();
    assert_eq!(reported, current);
    report.steps[0].journeys
}

/// `percentile_cont`: linear interpolation between the closest ranks.
fn percentile(mut values: Vec<f64>, p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let position = p * (values.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    Some(values[low] + (values[high] - values[low]) * (position - low as f64))
}

fn hours(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().expect("small") as f64 / 3_600_000_000.0
}

async fn check_site_table(
    tx: &mut Transaction<'_, Postgres>,
    model: &DashboardModel,
    study: StudyId,
    filter: &DashboardFilter,
) {
    let table = dashboard::site_table(tx, study, filter, now())
        .await
        .expect("site table");
    // Site rows: the visits of counted journeys matching the filter except the site filter
    // (which selects rows, not journeys).
    let unsited = DashboardFilter {
        site_ids: Vec::new(),
        ..filter.clone()
    };
    let journeys = counted(model, study, &unsited);
    let mut expected: BTreeMap<SiteId, [i64; 7]> = BTreeMap::new();
    let mut site_contact_hours: BTreeMap<SiteId, Vec<f64>> = BTreeMap::new();
    for (site, _) in model
        .sites
        .keys()
        .filter(|(s, _)| *s == study)
        .map(|(_, site)| (*site, ()))
    {
        expected.entry(site).or_default();
    }
    for (_, journey) in &journeys {
        for (site, visit) in &journey.visits {
            let row = expected.entry(*site).or_default();
            row[0] += 1;
            row[1] += i64::from(visit.site_contacted_at.is_some());
            row[2] += i64::from(visit.scheduled_at.is_some());
            row[3] += i64::from(visit.attended_at.is_some());
            row[4] += i64::from(visit.consented_at.is_some());
            row[5] += i64::from(visit.randomized_at.is_some());
            row[6] += i64::from(
                visit.left_at.is_none()
                    && journey.fact.stage.is_open()
                    && visit.site_contacted_at.is_none()
                    && visit.scheduled_at.is_none(),
            );
            if let Some(contacted) = visit.site_contacted_at {
                site_contact_hours
                    .entry(*site)
                    .or_default()
                    .push(hours(visit.referred_at, contacted));
            }
        }
    }
    if !filter.site_ids.is_empty() {
        expected.retain(|site, _| filter.site_ids.contains(site));
    }
    let reported: BTreeMap<SiteId, [i64; 7]> = table
        .sites
        .iter()
        .map(|s| {
            (
                s.site_id,
                [
                    s.referrals,
                    s.site_contacted,
                    s.scheduled,
                    s.attended,
                    s.consented,
                    s.randomized,
                    s.not_acted_on,
                ],
            )
        })
        .collect();
    assert_eq!(reported, expected, "{filter:?}");
    if filter.site_ids.is_empty() {
        assert!(
            table.sites.iter().any(|s| s.referrals == 0),
            "sites without referrals are listed"
        );
    }
    for pair in table.sites.windows(2) {
        assert!(
            pair[0].randomized >= pair[1].randomized,
            "leaderboard order"
        );
    }
    let all_hours: Vec<f64> = site_contact_hours.values().flatten().copied().collect();
    let study_median = percentile(all_hours, 0.5);
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        (a, b) => a.is_none() && b.is_none(),
    };
    if filter.site_ids.is_empty() {
        assert!(close(
            table.study_median_hours_to_site_contact,
            study_median
        ));
    }
    for site in &table.sites {
        let mine = site_contact_hours
            .get(&site.site_id)
            .cloned()
            .unwrap_or_default();
        assert!(close(
            site.hours_to_site_contact.median,
            percentile(mine.clone(), 0.5)
        ));
        assert!(close(site.hours_to_site_contact.p90, percentile(mine, 0.9)));
        assert_eq!(site.zero_or_one_randomized, site.randomized <= 1);
        if let (Some(site_median), Some(study)) = (
            site.hours_to_site_contact.median,
            table.study_median_hours_to_site_contact,
        ) {
            assert_eq!(site.slower_than_study_median, site_median > study);
        }
    }
}

async fn check_cohorts(
    tx: &mut Transaction<'_, Postgres>,
    model: &DashboardModel,
    study: StudyId,
    filter: &DashboardFilter,
) {
    let table = dashboard::cohorts(tx, study, filter)
        .await
        .expect("cohorts");
    let mut expected: BTreeMap<NaiveDate, [i64; 10]> = BTreeMap::new();
    for (_, j) in counted(model, study, filter) {
        let day = utc_day(j.fact.referred_at);
        let monday = day - Days::new(u64::from(day.weekday().num_days_from_monday()));
        let row = expected.entry(monday).or_default();
        for (n, stage) in FunnelStage::ALL.iter().enumerate() {
            row[n] += i64::from(reached(&j.fact, *stage));
        }
    }
    let reported: BTreeMap<NaiveDate, [i64; 10]> = table
        .weeks
        .iter()
        .map(|w| {
            (
                w.week_start,
                FunnelStage::ALL.map(|stage| w.reached.get(stage)),
            )
        })
        .collect();
    assert_eq!(reported, expected, "{filter:?}");
    assert!(expected.len() > 1);
}

async fn check_attribution(
    tx: &mut Transaction<'_, Postgres>,
    model: &DashboardModel,
    study: StudyId,
    filter: &DashboardFilter,
) {
    let report = dashboard::source_attribution(tx, study, filter)
        .await
        .expect("attribution");
    let journeys = counted(model, study, filter);
    let mut per_campaign: BTreeMap<CampaignId, (i64, i64)> = BTreeMap::new();
    let mut per_channel: BTreeMap<SourceChannel, (i64, i64)> = BTreeMap::new();
    for (_, j) in &journeys {
        let randomized = i64::from(j.fact.randomized_at.is_some());
        let c = per_campaign.entry(j.fact.campaign_id).or_default();
        c.0 += 1;
        c.1 += randomized;
        let s = per_channel.entry(j.fact.source).or_default();
        s.0 += 1;
        s.1 += randomized;
    }
    // Spend per campaign and currency, prorated by days of the period inside the range.
    let mut spend: BTreeMap<CampaignId, BTreeMap<String, i64>> = BTreeMap::new();
    for record in model.spend.values().filter(|r| r.study_id == study) {
        let channel = model.campaigns[&(study, record.campaign_id)].channel;
        if !filter.sources.is_empty() && !filter.sources.contains(&channel) {
            continue;
        }
        let amount = if filter.from.is_none() && filter.to.is_none() {
            record.amount_minor
        } else {
            let start = filter
                .from
                .map_or(record.period_start, |from| from.max(record.period_start));
            let end = filter
                .to
                .map_or(record.period_end, |to| to.min(record.period_end));
            let overlap = ((end - start).num_days() + 1).max(0);
            let days = (record.period_end - record.period_start).num_days() + 1;
            record.amount_minor * overlap / days
        };
        *spend
            .entry(record.campaign_id)
            .or_default()
            .entry(record.currency.as_str().to_owned())
            .or_default() += amount;
    }
    let costs_apply = filter.site_ids.is_empty() && filter.countries.is_empty();
    for campaign in &report.campaigns {
        let (referrals, randomized) = per_campaign
            .get(&campaign.campaign_id)
            .copied()
            .unwrap_or_default();
        assert_eq!(
            (campaign.figures.referrals, campaign.figures.randomized),
            (referrals, randomized),
            "{filter:?}"
        );
        let expected_spend = spend
            .get(&campaign.campaign_id)
            .cloned()
            .unwrap_or_default();
        let reported: BTreeMap<String, i64> = campaign
            .figures
            .spend
            .iter()
            .map(|m| (m.currency.clone(), m.amount_minor))
            .collect();
        assert_eq!(reported, expected_spend);
        let cost = |n: i64| -> BTreeMap<String, i64> {
            if !costs_apply || n == 0 {
                return BTreeMap::new();
            }
            expected_spend
                .iter()
                .map(|(currency, amount)| {
                    (currency.clone(), (*amount as f64 / n as f64).round() as i64)
                })
                .collect()
        };
        let reported_cost = |costs: &[dashboard::Money]| -> BTreeMap<String, i64> {
            costs
                .iter()
                .map(|m| (m.currency.clone(), m.amount_minor))
                .collect()
        };
        assert_eq!(
            reported_cost(&campaign.figures.cost_per_referral),
            cost(referrals)
        );
        assert_eq!(
            reported_cost(&campaign.figures.cost_per_randomized),
            cost(randomized)
        );
    }
    let listed: BTreeSet<CampaignId> = report.campaigns.iter().map(|c| c.campaign_id).collect();
    assert!(per_campaign.keys().all(|id| listed.contains(id)));
    for channel in &report.channels {
        let (referrals, randomized) = per_channel
            .get(&channel.channel)
            .copied()
            .unwrap_or_default();
        assert_eq!(
            (channel.figures.referrals, channel.figures.randomized),
            (referrals, randomized)
        );
    }
    if costs_apply && filter.from.is_none() {
        assert!(
            report
                .campaigns
                .iter()
                .any(|c| !c.figures.cost_per_referral.is_empty()),
            "some campaign has a cost per referral"
        );
    }
}

#[tokio::test]
async fn dashboard_reports_equal_figures_from_the_fold() {
    let (db, data) = direct_data_set(21, 400).await;
    let model = dashboard::fold(&data.events);
    let mut tx = in_schema(&db.pool, SCHEMA).await;
    let all = DashboardFilter::default();
    for &study in &data.studies {
        let referred = check_funnel(&mut tx, &model, study, &all).await;
        assert!(referred > 100);
        check_site_table(&mut tx, &model, study, &all).await;
        check_cohorts(&mut tx, &model, study, &all).await;
        check_attribution(&mut tx, &model, study, &all).await;

        // Time series: every referral in exactly one monthly bucket, zero buckets included.
        let series = dashboard::time_series(
            &mut tx,
            study,
            &all,
            Bucket::Month,
            SeriesMetric::Referrals,
            false,
        )
        .await
        .expect("series");
        let total: i64 = series.points.iter().map(|p| p.count).sum();
        assert_eq!(total, referred);
        let randomized_by_site = dashboard::time_series(
            &mut tx,
            study,
            &all,
            Bucket::Week,
            SeriesMetric::Randomized,
            true,
        )
        .await
        .expect("series");
        let mut expected: BTreeMap<(SiteId, NaiveDate), i64> = BTreeMap::new();
        for (_, j) in counted(&model, study, &all) {
            for (site, visit) in &j.visits {
                if let Some(at) = visit.randomized_at {
                    *expected
                        .entry((*site, Bucket::Week.start_of(utc_day(at))))
                        .or_default() += 1;
                }
            }
        }
        let reported: BTreeMap<(SiteId, NaiveDate), i64> = randomized_by_site
            .points
            .iter()
            .filter(|p| p.count > 0)
            .map(|p| ((p.site_id.expect("by site"), p.bucket_start), p.count))
            .collect();
        assert_eq!(reported, expected);

        // Target and forecast.
        let forecast = dashboard::target_forecast(&mut tx, study, now())
            .await
            .expect("forecast")
            .expect("study exists");
        let randomized = counted(&model, study, &all)
            .iter()
            .filter(|(_, j)| j.fact.randomized_at.is_some())
            .count() as i64;
        let target = i64::from(model.studies[&study].target_randomized);
        assert_eq!(
            (forecast.target_randomized, forecast.randomized),
            (target, randomized)
        );
        assert_eq!(forecast.remaining, (target - randomized).max(0));
        if forecast.remaining == 0 {
            assert_eq!(forecast.status, ForecastStatus::TargetReached);
        }

        // The summary the HTTP layer authorises with.
        let summary = dashboard::study_summary(&mut tx, study)
            .await
            .expect("summary")
            .expect("study exists");
        assert_eq!(summary.sponsor_id, model.studies[&study].sponsor_id);
        let sites: Vec<SiteId> = model
            .sites
            .keys()
            .filter(|(s, _)| *s == study)
            .map(|(_, site)| *site)
            .collect();
        assert_eq!(summary.site_ids, sites);
        let owned = dashboard::studies(&mut tx, Some(summary.sponsor_id))
            .await
            .expect("studies");
        assert_eq!(owned, vec![summary]);
    }
    assert_eq!(
        dashboard::studies(&mut tx, None)
            .await
            .expect("studies")
            .len(),
        data.studies.len()
    );
    assert!(
        dashboard::study_summary(&mut tx, StudyId::new())
            .await
            .expect("summary")
            .is_none()
    );
}

#[tokio::test]
async fn dashboard_filters_narrow_every_report() {
    let (db, data) = direct_data_set(22, 400).await;
    let model = dashboard::fold(&data.events);
    let mut tx = in_schema(&db.pool, SCHEMA).await;
    let study = data.studies[0];
    let sites: Vec<SiteId> = model
        .sites
        .keys()
        .filter(|(s, _)| *s == study)
        .map(|(_, site)| *site)
        .collect();
    let filters = [
        DashboardFilter {
            from: NaiveDate::from_ymd_opt(2025, 1, 20),
            to: NaiveDate::from_ymd_opt(2025, 2, 16),
            ..DashboardFilter::default()
        },
        DashboardFilter {
            countries: vec![country("DE")],
            ..DashboardFilter::default()
        },
        DashboardFilter {
            sources: vec![
                SourceChannel::Other,
                SourceChannel::Newsletter,
                SourceChannel::Ads,
            ],
            ..DashboardFilter::default()
        },
        DashboardFilter {
            site_ids: sites[..2].to_vec(),
            ..DashboardFilter::default()
        },
        DashboardFilter {
            from: NaiveDate::from_ymd_opt(2025, 1, 13),
            countries: vec![country("ES"), country("FR")],
            sources: SourceChannel::ALL.to_vec(),
            ..DashboardFilter::default()
        },
    ];
    let everything = check_funnel(&mut tx, &model, study, &DashboardFilter::default()).await;
    for filter in &filters {
        let referred = check_funnel(&mut tx, &model, study, filter).await;
        assert!(
            0 < referred && referred < everything,
            "{filter:?} narrows to {referred} of {everything}"
        );
        check_site_table(&mut tx, &model, study, filter).await;
        check_cohorts(&mut tx, &model, study, filter).await;
        check_attribution(&mut tx, &model, study, filter).await;
    }

    // Time series filter by the event's own date: only buckets within the range, zeros kept.
    let range = &filters[0];
    let series = dashboard::time_series(
        &mut tx,
        study,
        range,
        Bucket::Day,
        SeriesMetric::Contacted,
        false,
    )
    .await
    .expect("series");
    let days = (range.to.expect("to") - range.from.expect("from")).num_days() + 1;
    assert_eq!(series.points.len() as i64, days);
    let expected: i64 = counted(&model, study, &DashboardFilter::default())
        .iter()
        .filter_map(|(_, j)| j.fact.contacted_at)
        .filter(|at| (range.from.expect("from")..=range.to.expect("to")).contains(&utc_day(*at)))
        .count() as i64;
    assert_eq!(series.points.iter().map(|p| p.count).sum::<i64>(), expected);
    assert!(series.points.iter().any(|p| p.count == 0));
}
