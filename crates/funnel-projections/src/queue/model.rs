//! The work queue as plain data, and the pure derivation that defines it: [`evolve`] keeps a
//! per-journey [`JourneyQueueState`], [`items`] derives the journey's open [`WorkItem`]s from
//! that state and the study's [`SlaSettings`]. The projection runs the very same functions on
//! the rows it loads, and [`fold`] runs them in memory, so tests compare the two.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use funnel_domain::{
    Country, DomainEvent, JourneyEvent, JourneyId, Language, SiteId, SlaSettings, Stage,
    StudyEvent, StudyId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dashboard::model::{STUDY_KIND, micros};
use crate::projection::ProjectedEvent;
use crate::study_funnel::{Position, next_position};

/// What an agent has to do.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// Call a new referral for the first time.
    FirstContact,
    /// The next attempt of the contact cadence after an unanswered one.
    NextAttempt,
    /// Call back at the time the candidate asked for.
    Callback,
    /// Book the appointment of a reached candidate who is ready for a site.
    Schedule,
    /// Win back a candidate who missed the appointment.
    ReEngage,
    /// Chase a site that has not acted on a referral.
    SiteEscalation,
}

impl ItemKind {
    pub const ALL: [Self; 6] = [
        Self::FirstContact,
        Self::NextAttempt,
        Self::Callback,
        Self::Schedule,
        Self::ReEngage,
        Self::SiteEscalation,
    ];

    /// The stable name stored in `work_items.kind`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FirstContact => "first_contact",
            Self::NextAttempt => "next_attempt",
            Self::Callback => "callback",
            Self::Schedule => "schedule",
            Self::ReEngage => "re_engage",
            Self::SiteEscalation => "site_escalation",
        }
    }

    /// The kind stored as `text`, if it is one.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether the item is a call in the contact cadence (its `attempt` is then 1-based).
    #[must_use]
    pub const fn is_contact(self) -> bool {
        matches!(
            self,
            Self::FirstContact | Self::NextAttempt | Self::Callback | Self::ReEngage
        )
    }
}

/// One open work item: a row of `work_items`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct WorkItem {
    /// UUIDv5 over (journey, kind, opened_seq), see [`item_id`].
    pub item_id: Uuid,
    #[schema(value_type = uuid::Uuid)]
    pub journey_id: JourneyId,
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    pub kind: ItemKind,
    /// The candidate's country (ISO 3166-1 alpha-2).
    #[schema(value_type = String, example = "ES")]
    pub country: Country,
    /// The candidate's language (BCP 47): agents are routed by it.
    #[schema(value_type = String, example = "es")]
    pub language: Language,
    /// The site concerned (`schedule` at a site, `site_escalation`).
    #[schema(value_type = Option<uuid::Uuid>)]
    pub site_id: Option<SiteId>,
    /// When the work is due; agents take items in this order.
    pub due_at: DateTime<Utc>,
    /// From when an agent may take it: a first contact at once (its due time is the end of
    /// the first-contact SLA, but the candidate should be called as soon as the referral is
    /// in); every other kind at its due time (a call-back at the time asked for, the next
    /// attempt after the cadence's spacing, an escalation after the site's grace).
    pub ready_at: DateTime<Utc>,
    /// When the item is in breach of its service level; `None` for kinds without one
    /// (`schedule`, `re_engage`). See `docs/work-queues.md`.
    pub overdue_at: Option<DateTime<Utc>>,
    /// The business time of the event that opened the item.
    pub opened_at: DateTime<Utc>,
    /// The stream sequence of that event.
    pub opened_seq: i64,
    /// For contact items, which attempt of the cadence this call is (1-based); else 0.
    pub attempt: i32,
    /// The study's cadence length (`SlaSettings.contact_attempts`).
    pub max_attempts: i32,
    /// The candidate's IANA time zone, when known (from the referral or a call-back).
    pub time_zone: Option<String>,
}

/// An event that opened (or re-dated) something: its stream sequence and business time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub at: DateTime<Utc>,
}

/// What the queue needs to know about one journey. No personal data: ids, codes, times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JourneyQueueState {
    pub journey_id: JourneyId,
    pub study_id: StudyId,
    pub country: Country,
    pub language: Language,
    /// The latest time zone known: the referral's, replaced by a call-back's.
    pub time_zone: Option<String>,
    pub consent_to_contact: bool,
    pub erased: bool,
    pub stage: Stage,
    /// The site handling the candidate now.
    pub site_id: Option<SiteId>,
    pub prescreen_passed: Option<bool>,
    pub referral: Mark,
    /// Every contact attempt ever made.
    pub attempts: u32,
    /// Whether the candidate was ever reached.
    pub reached: bool,
    /// Unanswered attempts in the current cadence. Reset (as by the domain) when the
    /// candidate is reached, asks for a call-back, is sent to a site or misses an appointment.
    pub unanswered: u32,
    /// When the current cadence's first unanswered attempt was made: the anchor of the
    /// time-of-day rotation.
    pub cadence_started_at: Option<DateTime<Utc>>,
    /// The latest unanswered attempt of the current cadence.
    pub last_attempt: Option<Mark>,
    /// A call-back not yet made: the request and the time asked for.
    pub callback: Option<(Mark, DateTime<Utc>)>,
    /// A no-show nobody has called about yet.
    pub no_show: Option<Mark>,
    /// The referral or reallocation that sent the candidate to the current site.
    pub at_site: Option<Mark>,
    /// Since when the journey has been waiting for an appointment to be booked (the
    /// `schedule` item); `None` while it is not.
    pub schedule: Option<Mark>,
}

/// Hours of grace after a call-back's time before it counts as overdue.
pub const CALLBACK_GRACE_HOURS: i64 = 1;
/// Hours of grace after a site escalation falls due before it counts as overdue.
pub const ESCALATION_GRACE_HOURS: i64 = 24;
/// How far apart (in time of day) consecutive attempts of a cadence are.
pub const ATTEMPT_SLOT_HOURS: i64 = 3;
/// How many time-of-day slots a cadence rotates through.
pub const ATTEMPT_SLOTS: u32 = 3;

const DAY_MICROS: i64 = 86_400_000_000;

/// The stages in which the Enrollment Support Team calls the candidate (the domain also
/// accepts attempts in `unreachable`, but an unreachable journey is parked until it re-opens).
const CALLING_STAGES: [Stage; 5] = [
    Stage::Referred,
    Stage::PrescreenPassed,
    Stage::Contacting,
    Stage::Contacted,
    Stage::NoShow,
];

impl JourneyQueueState {
    /// The state right after the referral.
    #[must_use]
    pub fn new(referral: &funnel_domain::events::ReferralReceived, seq: u64) -> Self {
        Self {
            journey_id: referral.journey_id,
            study_id: referral.study_id,
            country: referral.country.clone(),
            language: referral.language.clone(),
            time_zone: referral.time_zone.clone(),
            consent_to_contact: referral.consent_to_contact,
            erased: false,
            stage: Stage::Referred,
            site_id: None,
            prescreen_passed: None,
            referral: Mark {
                seq,
                at: micros(referral.at),
            },
            attempts: 0,
            reached: false,
            unanswered: 0,
            cadence_started_at: None,
            last_attempt: None,
            callback: None,
            no_show: None,
            at_site: None,
            schedule: None,
        }
    }

    /// Whether any item may exist at all.
    const fn workable(&self) -> bool {
        self.stage.is_open() && !self.erased
    }

    /// Whether the candidate may be called (consent given, data not erased, journey open).
    const fn callable(&self) -> bool {
        self.workable() && self.consent_to_contact
    }

    fn calling(&self) -> bool {
        CALLING_STAGES.contains(&self.stage)
    }

    fn reset_cadence(&mut self) {
        self.unanswered = 0;
        self.cadence_started_at = None;
        self.last_attempt = None;
    }

    /// Whether the journey waits for an appointment and nothing more urgent (a call-back, an
    /// unanswered cadence, an unworked no-show) stands in front of it.
    fn wants_schedule(&self) -> bool {
        if !self.callable() || !self.reached || self.callback.is_some() {
            return false;
        }
        match self.stage {
            Stage::PrescreenPassed | Stage::Contacting | Stage::Contacted => {
                self.unanswered == 0
                    && (self.prescreen_passed == Some(true) || self.site_id.is_some())
            }
            Stage::ReferredToSite | Stage::SiteContacted => true,
            // Reached again after the no-show: the appointment needs re-booking.
            Stage::NoShow => self.no_show.is_none() && self.unanswered == 0,
            _ => false,
        }
    }
}

/// Applies one event (other than the first referral) to a started journey, at stream
/// sequence `seq`. Mirrors `funnel_domain::evolve` where it matters (stage, site, cadence
/// resets); only records what the events say.
pub fn evolve(state: &mut JourneyQueueState, event: &JourneyEvent, seq: u64) {
    use JourneyEvent as E;
    let mark = Mark {
        seq,
        at: micros(event.at()),
    };
    let scheduling_before = state.wants_schedule().then_some(state.site_id);
    match event {
        // The first referral defines the journey.
        E::ReferralReceived(_)
        | E::AppointmentAttended(_)
        | E::Consented(_)
        | E::ScreeningStarted(_)
        | E::ScreenFailed(_)
        | E::Randomized(_)
        | E::Withdrawn(_)
        | E::Disqualified(_)
        | E::NotInterested(_)
        | E::OptedOut(_)
        | E::DuplicateLinked(_) => {}
        E::PrescreenCompleted(e) => state.prescreen_passed = Some(e.passed),
        E::ContactAttempted(e) => {
            state.attempts = state.attempts.saturating_add(1);
            // Any call works the pending call-back or no-show, answered or not.
            state.callback = None;
            state.no_show = None;
            if e.outcome.is_reached() {
                state.reached = true;
                state.reset_cadence();
            } else {
                state.unanswered = state.unanswered.saturating_add(1);
                state.cadence_started_at.get_or_insert(mark.at);
                state.last_attempt = Some(mark);
            }
        }
        E::CallbackRequested(e) => {
            state.callback = Some((mark, micros(e.callback_at)));
            state.time_zone = Some(e.time_zone.clone());
            state.no_show = None;
            state.reset_cadence();
        }
        E::ReferredToSite(_) | E::Reallocated(_) => {
            state.at_site = Some(mark);
            state.callback = None;
            state.no_show = None;
            state.reset_cadence();
        }
        E::SiteContacted(_) | E::AppointmentScheduled(_) | E::AppointmentRescheduled(_) => {
            state.callback = None;
            state.no_show = None;
        }
        E::NoShow(_) => {
            state.no_show = Some(mark);
            state.callback = None;
            state.reset_cadence();
        }
        E::Unreachable(_) => state.callback = None,
        E::PersonalDataErased(_) => state.erased = true,
    }
    let after = next_position(
        Position {
            stage: state.stage,
            site: state.site_id,
        },
        event,
    );
    state.stage = after.stage;
    state.site_id = after.site;
    // The schedule item re-opens when it appears, and when the site it is for changes.
    let scheduling_after = state.wants_schedule().then_some(state.site_id);
    if scheduling_after.is_none() {
        state.schedule = None;
    } else if scheduling_after != scheduling_before {
        state.schedule = Some(mark);
    }
}

/// The deterministic id of an item: UUIDv5 (RFC 9562) in [`ITEM_NAMESPACE`] over the
/// journey id's 16 bytes, the kind's name and the opening sequence (8 bytes, big-endian).
#[must_use]
pub fn item_id(journey_id: JourneyId, kind: ItemKind, opened_seq: u64) -> Uuid {
    let mut name = Vec::with_capacity(16 + 15 + 8);
    name.extend_from_slice(journey_id.as_uuid().as_bytes());
    name.extend_from_slice(kind.as_str().as_bytes());
    name.extend_from_slice(&opened_seq.to_be_bytes());
    Uuid::new_v5(&ITEM_NAMESPACE, &name)
}

/// The namespace of work item ids. Fixed forever: changing it changes every id.
pub const ITEM_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_7b0a_3f2d_4c6e_9a41_0d8f_2b7e_6a13);

fn hours(n: u32) -> TimeDelta {
    TimeDelta::hours(i64::from(n))
}

/// When attempt `attempt` (≥ 2) of a cadence is due: never before `last_attempt_at +
/// spacing`, and at the first such instant whose time of day is the cadence's first attempt's
/// plus [`ATTEMPT_SLOT_HOURS`] × ((attempt − 1) mod [`ATTEMPT_SLOTS`]). Consecutive attempts
/// thus fall at different times of day (3 h apart), within a 6-hour band of the day the
/// cadence started in. Time of day is taken in UTC: only differences matter, and those are
/// the same in the candidate's zone (but for a DST change within the cadence).
#[must_use]
pub fn next_attempt_due(
    cadence_started_at: DateTime<Utc>,
    last_attempt_at: DateTime<Utc>,
    attempt: u32,
    spacing_hours: u32,
) -> DateTime<Utc> {
    let earliest = last_attempt_at + hours(spacing_hours);
    let slot = i64::from(attempt.saturating_sub(1) % ATTEMPT_SLOTS);
    let target = (cadence_started_at.timestamp_micros()
        + slot * ATTEMPT_SLOT_HOURS * 3_600_000_000)
        .rem_euclid(DAY_MICROS);
    let shift =
        (target - earliest.timestamp_micros().rem_euclid(DAY_MICROS)).rem_euclid(DAY_MICROS);
    earliest + TimeDelta::microseconds(shift)
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The journey's open work items under the study's service levels (see the module docs and
/// `docs/work-queues.md` for the rules). At most one call (first contact, next attempt,
/// call-back, re-engagement or scheduling) plus a site escalation.
#[must_use]
pub fn items(state: &JourneyQueueState, sla: &SlaSettings) -> Vec<WorkItem> {
    let mut out = Vec::new();
    if !state.workable() {
        return out;
    }
    let item = |kind: ItemKind,
                opened: Mark,
                due_at: DateTime<Utc>,
                overdue_at: Option<DateTime<Utc>>,
                attempt: u32,
                site_id: Option<SiteId>| WorkItem {
        item_id: item_id(state.journey_id, kind, opened.seq),
        journey_id: state.journey_id,
        study_id: state.study_id,
        kind,
        country: state.country.clone(),
        language: state.language.clone(),
        site_id,
        due_at,
        ready_at: if kind == ItemKind::FirstContact {
            opened.at.min(due_at)
        } else {
            due_at
        },
        overdue_at,
        opened_at: opened.at,
        opened_seq: to_i64(opened.seq),
        attempt: to_i32(attempt),
        max_attempts: to_i32(sla.contact_attempts),
        time_zone: state.time_zone.clone(),
    };
    if state.callable() && state.calling() {
        let next = state.unanswered.saturating_add(1);
        if let Some((requested, callback_at)) = state.callback {
            out.push(item(
                ItemKind::Callback,
                requested,
                callback_at,
                Some(callback_at + TimeDelta::hours(CALLBACK_GRACE_HOURS)),
                next,
                None,
            ));
        } else if let (Some(last), Some(started)) = (state.last_attempt, state.cadence_started_at) {
            // After the last attempt of the cadence nothing: the agent's outcome marks the
            // journey unreachable.
            if state.unanswered < sla.contact_attempts {
                let due = next_attempt_due(started, last.at, next, sla.attempt_spacing_hours);
                out.push(item(
                    ItemKind::NextAttempt,
                    last,
                    due,
                    Some(due + hours(sla.attempt_spacing_hours)),
                    next,
                    None,
                ));
            }
        } else if state.attempts == 0 && state.stage != Stage::NoShow {
            let due = state.referral.at + hours(sla.first_contact_hours);
            out.push(item(
                ItemKind::FirstContact,
                state.referral,
                due,
                Some(due),
                1,
                None,
            ));
        } else if let (Stage::NoShow, Some(no_show)) = (state.stage, state.no_show) {
            out.push(item(ItemKind::ReEngage, no_show, no_show.at, None, 1, None));
        }
    }
    if let Some(since) = state.schedule {
        out.push(item(
            ItemKind::Schedule,
            since,
            since.at,
            None,
            0,
            state.site_id,
        ));
    }
    if let (Stage::ReferredToSite, Some(at_site)) = (state.stage, state.at_site) {
        let due = at_site.at + TimeDelta::days(i64::from(sla.site_escalation_days));
        out.push(item(
            ItemKind::SiteEscalation,
            at_site,
            due,
            Some(due + TimeDelta::hours(ESCALATION_GRACE_HOURS)),
            0,
            state.site_id,
        ));
    }
    out
}

/// The whole read model: study service levels, journey states and open items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueModel {
    pub studies: BTreeMap<StudyId, SlaSettings>,
    pub journeys: BTreeMap<JourneyId, JourneyQueueState>,
    /// Keyed as the table's `UNIQUE (journey_id, kind)`.
    pub items: BTreeMap<(JourneyId, ItemKind), WorkItem>,
}

/// The read model of `events`, in stream order (their `seq` is used for item ids).
#[must_use]
pub fn fold(events: &[ProjectedEvent]) -> QueueModel {
    let mut model = QueueModel::default();
    for event in events {
        model.apply(event);
    }
    model
}

impl QueueModel {
    /// The service levels of `study`; the house defaults while the study is unknown.
    #[must_use]
    pub fn sla(&self, study: StudyId) -> SlaSettings {
        self.studies.get(&study).copied().unwrap_or_default()
    }

    /// Applies one event, as the projection does.
    pub fn apply(&mut self, event: &ProjectedEvent) {
        match &event.event {
            DomainEvent::Study(StudyEvent::StudyCreated(created)) => {
                if event.key.kind() != STUDY_KIND {
                    return;
                }
                let study = StudyId::from_uuid(event.key.id());
                // A study is created once; a repeated creation cannot change its levels.
                if self.studies.contains_key(&study) {
                    return;
                }
                self.studies.insert(study, created.sla);
                // Journeys referred before their study was known were derived with the
                // defaults: derive them again under the study's own levels.
                let journeys: Vec<JourneyId> = self
                    .journeys
                    .iter()
                    .filter(|(_, state)| state.study_id == study)
                    .map(|(id, _)| *id)
                    .collect();
                for journey in journeys {
                    self.resync(journey);
                }
            }
            DomainEvent::Study(_) => {}
            DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) => {
                let journey = JourneyId::from_uuid(event.key.id());
                if self.journeys.contains_key(&journey) {
                    return;
                }
                let mut state = JourneyQueueState::new(referral, event.seq);
                // The stream key, not the payload, is what later events find the journey by.
                state.journey_id = journey;
                self.journeys.insert(journey, state);
                self.resync(journey);
            }
            DomainEvent::Journey(journey_event) => {
                let journey = JourneyId::from_uuid(event.key.id());
                let Some(state) = self.journeys.get_mut(&journey) else {
                    return;
                };
                evolve(state, journey_event, event.seq);
                self.resync(journey);
            }
        }
    }

    /// Replaces the journey's items with those its state derives.
    fn resync(&mut self, journey: JourneyId) {
        let Some(state) = self.journeys.get(&journey) else {
            return;
        };
        let wanted = items(state, &self.sla(state.study_id));
        for kind in ItemKind::ALL {
            self.items.remove(&(journey, kind));
        }
        for item in wanted {
            self.items.insert((journey, item.kind), item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_ids_are_uuid_v5_and_differ_by_every_part() {
        let journey = JourneyId::new();
        let id = item_id(journey, ItemKind::FirstContact, 7);
        assert_eq!(id.get_version_num(), 5);
        assert_eq!(id, item_id(journey, ItemKind::FirstContact, 7));
        assert_ne!(id, item_id(journey, ItemKind::FirstContact, 8));
        assert_ne!(id, item_id(journey, ItemKind::Callback, 7));
        assert_ne!(id, item_id(JourneyId::new(), ItemKind::FirstContact, 7));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ItemKind::ALL {
            assert_eq!(ItemKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_string(&kind).expect("json"),
                format!("\"{}\"", kind.as_str())
            );
        }
        assert_eq!(ItemKind::parse("other"), None);
    }
}
