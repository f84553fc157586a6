//! The read model as plain data, and the pure fold that defines it. The projection applies the
//! same transitions ([`evolve_journey`]) to rows it loads from PostgreSQL, and the tests
//! compare [`fold`] with what [`super::load`] reads back.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use funnel_domain::{
    CampaignId, Country, Currency, DomainEvent, JourneyEvent, JourneyId, Language, SiteId,
    SiteStatus, SourceChannel, SponsorId, Stage, StudyEvent, StudyId,
};
use uuid::Uuid;

use crate::projection::ProjectedEvent;
use crate::study_funnel::{Position, next_position};

/// The aggregate kind of a study's stream (`study.<id>`).
pub(crate) const STUDY_KIND: &str = "study";

/// PostgreSQL keeps microseconds; truncating here keeps the fold equal to what is stored.
pub(crate) fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

#[derive(Clone, Debug, PartialEq)]
pub struct StudyRecord {
    pub sponsor_id: SponsorId,
    pub title: String,
    pub protocol_code: String,
    pub target_randomized: u32,
    pub countries: Vec<Country>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SiteRecord {
    pub name: String,
    pub country: Country,
    pub monthly_target_randomized: f64,
    pub status: SiteStatus,
    pub added_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignRecord {
    pub name: String,
    pub channel: SourceChannel,
    pub registered_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendRecord {
    pub study_id: StudyId,
    pub campaign_id: CampaignId,
    pub amount_minor: i64,
    pub currency: Currency,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub recorded_at: DateTime<Utc>,
}

/// The funnel steps, in order. A journey has reached a step when it has the step's milestone
/// or any later one (see [`JourneyFact::funnel_step`]).
pub(crate) const STEP_PRESCREEN_PASSED: i16 = 1;
pub(crate) const STEP_CONTACTED: i16 = 2;
pub(crate) const STEP_REFERRED_TO_SITE: i16 = 3;
pub(crate) const STEP_SITE_CONTACTED: i16 = 4;
pub(crate) const STEP_SCHEDULED: i16 = 5;
pub(crate) const STEP_ATTENDED: i16 = 6;
pub(crate) const STEP_CONSENTED: i16 = 7;
pub(crate) const STEP_SCREENING: i16 = 8;
pub(crate) const STEP_RANDOMIZED: i16 = 9;

/// One journey's facts: identity, where it is now, and when it first reached each milestone.
#[derive(Clone, Debug, PartialEq)]
pub struct JourneyFact {
    pub study_id: StudyId,
    pub campaign_id: CampaignId,
    pub source: SourceChannel,
    pub country: Country,
    pub language: Language,
    pub site_id: Option<SiteId>,
    pub stage: Stage,
    pub stage_entered_at: DateTime<Utc>,
    /// False once linked as a duplicate: the journey then leaves every count.
    pub counted: bool,
    pub referred_at: DateTime<Utc>,
    pub prescreened_at: Option<DateTime<Utc>>,
    /// The latest pre-screen result.
    pub prescreen_passed: Option<bool>,
    pub first_contact_attempt_at: Option<DateTime<Utc>>,
    pub contact_attempts: i32,
    pub contacted_at: Option<DateTime<Utc>>,
    pub referred_to_site_at: Option<DateTime<Utc>>,
    pub reallocations: i32,
    pub site_contacted_at: Option<DateTime<Utc>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub first_appointment_at: Option<DateTime<Utc>>,
    pub attended_at: Option<DateTime<Utc>>,
    pub no_shows: i32,
    pub first_no_show_at: Option<DateTime<Utc>>,
    pub consented_at: Option<DateTime<Utc>>,
    pub screening_started_at: Option<DateTime<Utc>>,
    pub screen_failed_at: Option<DateTime<Utc>>,
    pub randomized_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl JourneyFact {
    /// The furthest funnel step reached: 0 referred, 1 pre-screen passed, 2 contacted, 3
    /// referred to site, 4 site contacted, 5 scheduled, 6 attended, 7 consented, 8 screening
    /// (a screen failure implies screening), 9 randomized.
    #[must_use]
    pub fn funnel_step(&self) -> i16 {
        [
            (self.randomized_at.is_some(), STEP_RANDOMIZED),
            (
                self.screening_started_at.is_some() || self.screen_failed_at.is_some(),
                STEP_SCREENING,
            ),
            (self.consented_at.is_some(), STEP_CONSENTED),
            (self.attended_at.is_some(), STEP_ATTENDED),
            (self.scheduled_at.is_some(), STEP_SCHEDULED),
            (self.site_contacted_at.is_some(), STEP_SITE_CONTACTED),
            (self.referred_to_site_at.is_some(), STEP_REFERRED_TO_SITE),
            (self.contacted_at.is_some(), STEP_CONTACTED),
            (self.prescreen_passed == Some(true), STEP_PRESCREEN_PASSED),
        ]
        .into_iter()
        .find_map(|(reached, step)| reached.then_some(step))
        .unwrap_or(0)
    }
}

/// What happened while one site handled the candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteVisit {
    pub referred_at: DateTime<Utc>,
    pub left_at: Option<DateTime<Utc>>,
    pub site_contacted_at: Option<DateTime<Utc>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub attended_at: Option<DateTime<Utc>>,
    pub no_shows: i32,
    pub consented_at: Option<DateTime<Utc>>,
    pub screening_started_at: Option<DateTime<Utc>>,
    pub screen_failed_at: Option<DateTime<Utc>>,
    pub randomized_at: Option<DateTime<Utc>>,
}

/// A journey with every site it was referred to.
#[derive(Clone, Debug, PartialEq)]
pub struct JourneyRecord {
    pub fact: JourneyFact,
    pub visits: BTreeMap<SiteId, SiteVisit>,
}

/// The whole read model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DashboardModel {
    pub studies: BTreeMap<StudyId, StudyRecord>,
    pub sites: BTreeMap<(StudyId, SiteId), SiteRecord>,
    pub campaigns: BTreeMap<(StudyId, CampaignId), CampaignRecord>,
    /// Keyed by the spend event's id.
    pub spend: BTreeMap<Uuid, SpendRecord>,
    pub journeys: BTreeMap<JourneyId, JourneyRecord>,
}

/// The read model of `events`, in stream order.
#[must_use]
pub fn fold(events: &[ProjectedEvent]) -> DashboardModel {
    let mut model = DashboardModel::default();
    for event in events {
        model.apply(event);
    }
    model
}

impl DashboardModel {
    /// Applies one event, as the projection does.
    pub fn apply(&mut self, event: &ProjectedEvent) {
        match &event.event {
            DomainEvent::Study(study_event) => {
                if event.key.kind() == STUDY_KIND {
                    self.apply_study(StudyId::from_uuid(event.key.id()), event.id, study_event);
                }
            }
            DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) => {
                let journey_id = JourneyId::from_uuid(event.key.id());
                self.journeys
                    .entry(journey_id)
                    .or_insert_with(|| new_journey(referral));
            }
            DomainEvent::Journey(journey_event) => {
                if let Some(record) = self.journeys.get_mut(&JourneyId::from_uuid(event.key.id())) {
                    evolve_journey(record, journey_event);
                }
            }
        }
    }

    fn apply_study(&mut self, study_id: StudyId, event_id: Uuid, event: &StudyEvent) {
        if let StudyEvent::StudyCreated(created) = event {
            self.studies.entry(study_id).or_insert_with(|| StudyRecord {
                sponsor_id: created.sponsor_id,
                title: created.title.clone(),
                protocol_code: created.protocol_code.clone(),
                target_randomized: created.target_randomized,
                countries: created.countries.clone(),
                created_at: micros(created.at),
            });
            return;
        }
        // As in `evolve_study`: nothing happens to a study before it is created.
        if !self.studies.contains_key(&study_id) {
            return;
        }
        match event {
            StudyEvent::StudyCreated(_) => {}
            StudyEvent::SiteAdded(e) => {
                self.sites
                    .entry((study_id, e.site_id))
                    .or_insert_with(|| SiteRecord {
                        name: e.name.clone(),
                        country: e.country.clone(),
                        monthly_target_randomized: e.monthly_target_randomized,
                        status: SiteStatus::Active,
                        added_at: micros(e.at),
                        closed_at: None,
                    });
            }
            StudyEvent::SitePaused(e) => {
                if let Some(site) = self.sites.get_mut(&(study_id, e.site_id)) {
                    site.status = SiteStatus::Paused;
                }
            }
            StudyEvent::SiteResumed(e) => {
                if let Some(site) = self.sites.get_mut(&(study_id, e.site_id)) {
                    site.status = SiteStatus::Active;
                    site.closed_at = None;
                }
            }
            StudyEvent::SiteClosed(e) => {
                if let Some(site) = self.sites.get_mut(&(study_id, e.site_id)) {
                    site.status = SiteStatus::Closed;
                    site.closed_at = Some(micros(e.at));
                }
            }
            StudyEvent::CampaignRegistered(e) => {
                self.campaigns
                    .entry((study_id, e.campaign_id))
                    .or_insert_with(|| CampaignRecord {
                        name: e.name.clone(),
                        channel: e.channel,
                        registered_at: micros(e.at),
                    });
            }
            StudyEvent::CampaignSpendRecorded(e) => {
                if self.campaigns.contains_key(&(study_id, e.campaign_id)) {
                    self.spend.entry(event_id).or_insert_with(|| SpendRecord {
                        study_id,
                        campaign_id: e.campaign_id,
                        amount_minor: e.amount_minor,
                        currency: e.currency.clone(),
                        period_start: e.period_start,
                        period_end: e.period_end,
                        recorded_at: micros(e.at),
                    });
                }
            }
        }
    }
}

pub(crate) fn new_journey(referral: &funnel_domain::events::ReferralReceived) -> JourneyRecord {
    let at = micros(referral.at);
    JourneyRecord {
        fact: JourneyFact {
            study_id: referral.study_id,
            campaign_id: referral.campaign_id,
            source: referral.source,
            country: referral.country.clone(),
            language: referral.language.clone(),
            site_id: None,
            stage: Stage::Referred,
            stage_entered_at: at,
            counted: true,
            referred_at: at,
            prescreened_at: None,
            prescreen_passed: None,
            first_contact_attempt_at: None,
            contact_attempts: 0,
            contacted_at: None,
            referred_to_site_at: None,
            reallocations: 0,
            site_contacted_at: None,
            scheduled_at: None,
            first_appointment_at: None,
            attended_at: None,
            no_shows: 0,
            first_no_show_at: None,
            consented_at: None,
            screening_started_at: None,
            screen_failed_at: None,
            randomized_at: None,
            closed_at: None,
        },
        visits: BTreeMap::new(),
    }
}

/// Moves the candidate to `site` (if not there already): the previous site's visit ends, and
/// the new site's visit starts (or resumes, when the candidate comes back to it).
fn move_to(record: &mut JourneyRecord, site: SiteId, at: DateTime<Utc>) {
    if record.fact.site_id == Some(site) && record.visits.contains_key(&site) {
        return;
    }
    if let Some(previous) = record.fact.site_id
        && previous != site
        && let Some(visit) = record.visits.get_mut(&previous)
    {
        visit.left_at = Some(at);
    }
    let visit = record.visits.entry(site).or_insert_with(|| SiteVisit {
        referred_at: at,
        ..SiteVisit::default()
    });
    visit.left_at = None;
}

/// Applies one event (other than the referral) to a started journey. Milestones keep the
/// first time they were reached; the stage and site follow `funnel_domain::evolve`.
pub fn evolve_journey(record: &mut JourneyRecord, event: &JourneyEvent) {
    use JourneyEvent as E;
    let at = micros(event.at());
    let first = |slot: &mut Option<DateTime<Utc>>| {
        slot.get_or_insert(at);
    };
    match event {
        E::ReferralReceived(_)
        | E::PersonalDataErased(_)
        | E::CallbackRequested(_)
        | E::AppointmentRescheduled(_)
        | E::Withdrawn(_)
        | E::Disqualified(_)
        | E::NotInterested(_)
        | E::Unreachable(_)
        | E::OptedOut(_) => {}
        E::PrescreenCompleted(e) => {
            first(&mut record.fact.prescreened_at);
            record.fact.prescreen_passed = Some(e.passed);
        }
        E::ContactAttempted(e) => {
            first(&mut record.fact.first_contact_attempt_at);
            record.fact.contact_attempts = record.fact.contact_attempts.saturating_add(1);
            if e.outcome.is_reached() {
                first(&mut record.fact.contacted_at);
            }
        }
        E::ReferredToSite(e) => {
            move_to(record, e.site_id, at);
            first(&mut record.fact.referred_to_site_at);
        }
        E::Reallocated(e) => {
            move_to(record, e.to_site, at);
            first(&mut record.fact.referred_to_site_at);
            record.fact.reallocations = record.fact.reallocations.saturating_add(1);
        }
        E::SiteContacted(e) => {
            move_to(record, e.site_id, at);
            first(&mut record.fact.site_contacted_at);
            if let Some(visit) = record.visits.get_mut(&e.site_id) {
                first(&mut visit.site_contacted_at);
            }
        }
        E::AppointmentScheduled(e) => {
            move_to(record, e.site_id, at);
            first(&mut record.fact.scheduled_at);
            record
                .fact
                .first_appointment_at
                .get_or_insert(micros(e.appointment_at));
            if let Some(visit) = record.visits.get_mut(&e.site_id) {
                first(&mut visit.scheduled_at);
            }
        }
        E::AppointmentAttended(_) => {
            first(&mut record.fact.attended_at);
            if let Some(visit) = current_visit(record) {
                first(&mut visit.attended_at);
            }
        }
        E::NoShow(_) => {
            record.fact.no_shows = record.fact.no_shows.saturating_add(1);
            first(&mut record.fact.first_no_show_at);
            if let Some(visit) = current_visit(record) {
                visit.no_shows = visit.no_shows.saturating_add(1);
            }
        }
        E::Consented(_) => {
            first(&mut record.fact.consented_at);
            if let Some(visit) = current_visit(record) {
                first(&mut visit.consented_at);
            }
        }
        E::ScreeningStarted(_) => {
            first(&mut record.fact.screening_started_at);
            if let Some(visit) = current_visit(record) {
                first(&mut visit.screening_started_at);
            }
        }
        E::ScreenFailed(_) => {
            first(&mut record.fact.screen_failed_at);
            if let Some(visit) = current_visit(record) {
                first(&mut visit.screen_failed_at);
            }
        }
        E::Randomized(_) => {
            first(&mut record.fact.randomized_at);
            if let Some(visit) = current_visit(record) {
                first(&mut visit.randomized_at);
            }
        }
        E::DuplicateLinked(_) => record.fact.counted = false,
    }
    let before = Position {
        stage: record.fact.stage,
        site: record.fact.site_id,
    };
    let after = next_position(before, event);
    if after.stage != before.stage {
        record.fact.stage_entered_at = at;
        record.fact.closed_at = match (before.stage.is_closed(), after.stage.is_closed()) {
            (false, true) => Some(at),
            (true, true) => record.fact.closed_at,
            (_, false) => None,
        };
    }
    record.fact.stage = after.stage;
    record.fact.site_id = after.site;
}

fn current_visit(record: &mut JourneyRecord) -> Option<&mut SiteVisit> {
    let site = record.fact.site_id?;
    record.visits.get_mut(&site)
}
