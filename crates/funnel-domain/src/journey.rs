//! The journey aggregate: one candidate's path through one study's funnel.
//!
//! The aggregate follows the functional event-sourcing shape:
//!
//! * [`decide`] looks at the current [`JourneyState`] and a [`JourneyCommand`] and either
//!   refuses (a [`DomainError`], nothing is appended) or returns the events to append;
//! * [`evolve`] applies one stored event to a state. It is total: it never panics and never
//!   refuses, because stored events are facts, whatever order a replay meets them in;
//! * [`fold`] replays a stream from the beginning.
//!
//! All the funnel's rules live in `decide`; `evolve` only records what the events say.
//!
//! ```text
//! referred ─► prescreen passed / failed
//!    ▼
//! contacting ─► contacted            unreachable (re-opens on call-back or a reached call)
//!    ▼
//! referred to site ─► site contacted ─► appointment scheduled ─► attended / no-show
//!    ▼                                   (reallocation to another site before consent)
//! consented ─► screening ─► screen failed | randomized ─► withdrawn
//! ```

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::events::{
    AppointmentAttended, AppointmentRescheduled, AppointmentScheduled, CallbackRequested,
    Consented, ContactAttempted, Disqualified, DuplicateLinked, JourneyEvent, NoShow,
    NotInterested, OptedOut, PersonalDataErased, PrescreenCompleted, Randomized, Reallocated,
    ReferralReceived, ReferredToSite, ScreenFailed, ScreeningStarted, SiteContacted, Unreachable,
    Withdrawn,
};
use crate::ids::{AgentId, CampaignId, CandidateId, JourneyId, SiteId, StudyId};
use crate::privacy::SealedContact;
use crate::validate::{require_optional_text, require_text, require_time_zone};
use crate::values::{ContactChannel, ContactOutcome, Country, Language, SourceChannel};

/// Where a journey stands in the funnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Referred by a campaign; nothing else has happened yet.
    Referred,
    PrescreenPassed,
    /// Ineligible by the pre-screen. Closed.
    PrescreenFailed,
    /// Contact attempts made, the candidate not reached yet.
    Contacting,
    /// The Enrollment Support Team spoke to the candidate.
    Contacted,
    /// The contact cadence ran out. Parked rather than closed: a call-back request or a
    /// reached call re-opens it.
    Unreachable,
    ReferredToSite,
    /// The site acted on the referral.
    SiteContacted,
    AppointmentScheduled,
    Attended,
    NoShow,
    Consented,
    Screening,
    /// Closed.
    ScreenFailed,
    /// Enrolled: the funnel's success. Closed, except that the candidate can still withdraw.
    Randomized,
    /// Closed.
    Withdrawn,
    /// Closed.
    Disqualified,
    /// Closed.
    NotInterested,
    /// Closed.
    OptedOut,
    /// Merged into another journey. Closed.
    Duplicate,
}

impl Stage {
    /// Every stage, in funnel order.
    pub const ALL: [Self; 20] = [
        Self::Referred,
        Self::PrescreenPassed,
        Self::PrescreenFailed,
        Self::Contacting,
        Self::Contacted,
        Self::Unreachable,
        Self::ReferredToSite,
        Self::SiteContacted,
        Self::AppointmentScheduled,
        Self::Attended,
        Self::NoShow,
        Self::Consented,
        Self::Screening,
        Self::ScreenFailed,
        Self::Randomized,
        Self::Withdrawn,
        Self::Disqualified,
        Self::NotInterested,
        Self::OptedOut,
        Self::Duplicate,
    ];

    /// The stable snake_case name, as serialised.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Referred => "referred",
            Self::PrescreenPassed => "prescreen_passed",
            Self::PrescreenFailed => "prescreen_failed",
            Self::Contacting => "contacting",
            Self::Contacted => "contacted",
            Self::Unreachable => "unreachable",
            Self::ReferredToSite => "referred_to_site",
            Self::SiteContacted => "site_contacted",
            Self::AppointmentScheduled => "appointment_scheduled",
            Self::Attended => "attended",
            Self::NoShow => "no_show",
            Self::Consented => "consented",
            Self::Screening => "screening",
            Self::ScreenFailed => "screen_failed",
            Self::Randomized => "randomized",
            Self::Withdrawn => "withdrawn",
            Self::Disqualified => "disqualified",
            Self::NotInterested => "not_interested",
            Self::OptedOut => "opted_out",
            Self::Duplicate => "duplicate",
        }
    }

    /// Whether the journey has ended. Closed journeys leave every work queue and refuse every
    /// command except erasure, and withdrawal after randomization.
    ///
    /// [`Stage::Randomized`] counts as closed: recruitment is done. [`Stage::Unreachable`]
    /// does not: it is parked until the candidate calls back.
    #[must_use]
    pub const fn is_closed(self) -> bool {
        matches!(
            self,
            Self::PrescreenFailed
                | Self::ScreenFailed
                | Self::Randomized
                | Self::Withdrawn
                | Self::Disqualified
                | Self::NotInterested
                | Self::OptedOut
                | Self::Duplicate
        )
    }

    /// Whether the journey is still in progress.
    #[must_use]
    pub const fn is_open(self) -> bool {
        !self.is_closed()
    }

    /// Whether a site is handling the candidate and consent has not been given yet: the
    /// stages in which a reallocation to another site is possible.
    #[must_use]
    pub const fn is_at_site_before_consent(self) -> bool {
        matches!(
            self,
            Self::ReferredToSite
                | Self::SiteContacted
                | Self::AppointmentScheduled
                | Self::Attended
                | Self::NoShow
        )
    }

    /// The HL7 FHIR R5 `ResearchSubject.progress.subjectState` that best describes the stage.
    ///
    /// Only the stage is considered; [`Journey::fhir_subject_state`] also knows whether a
    /// withdrawn candidate had been randomized (then `off-study`, not `withdrawn`).
    #[must_use]
    pub const fn fhir_subject_state(self) -> FhirSubjectState {
        match self {
            // Referred by a campaign: potentially eligible, nobody has checked yet.
            Self::Referred => FhirSubjectState::PotentialCandidate,
            // Identified and being worked on by the recruitment team and the site.
            Self::PrescreenPassed
            | Self::Contacting
            | Self::Contacted
            | Self::Unreachable
            | Self::ReferredToSite
            | Self::SiteContacted
            | Self::AppointmentScheduled
            | Self::Attended
            | Self::NoShow => FhirSubjectState::Candidate,
            // Consent (milestone SignedUp) opens formal eligibility evaluation.
            Self::Consented | Self::Screening => FhirSubjectState::Screening,
            Self::PrescreenFailed | Self::ScreenFailed | Self::Disqualified => {
                FhirSubjectState::Ineligible
            }
            Self::Randomized => FhirSubjectState::OnStudy,
            Self::Withdrawn => FhirSubjectState::Withdrawn,
            Self::NotInterested | Self::OptedOut | Self::Duplicate => {
                FhirSubjectState::NotRegistered
            }
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HL7 FHIR R5 ResearchSubject `subjectState` codes
/// (<http://terminology.hl7.org/CodeSystem/research-subject-state>).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FhirSubjectState {
    Candidate,
    Eligible,
    FollowUp,
    Ineligible,
    NotRegistered,
    OffStudy,
    OnStudy,
    OnStudyIntervention,
    OnStudyObservation,
    PendingOnStudy,
    PotentialCandidate,
    Screening,
    Withdrawn,
}

impl FhirSubjectState {
    /// The FHIR code, e.g. `potential-candidate`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Eligible => "eligible",
            Self::FollowUp => "follow-up",
            Self::Ineligible => "ineligible",
            Self::NotRegistered => "not-registered",
            Self::OffStudy => "off-study",
            Self::OnStudy => "on-study",
            Self::OnStudyIntervention => "on-study-intervention",
            Self::OnStudyObservation => "on-study-observation",
            Self::PendingOnStudy => "pending-on-study",
            Self::PotentialCandidate => "potential-candidate",
            Self::Screening => "screening",
            Self::Withdrawn => "withdrawn",
        }
    }
}

impl fmt::Display for FhirSubjectState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A call-back the candidate asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub requested_at: DateTime<Utc>,
    pub callback_at: DateTime<Utc>,
    /// The candidate's IANA time zone.
    pub time_zone: String,
}

/// A started journey: what `decide` needs to judge the next command, plus what work queues and
/// timelines commonly ask. Sealed contact data is deliberately not kept here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journey {
    pub journey_id: JourneyId,
    pub candidate_id: CandidateId,
    pub study_id: StudyId,
    pub campaign_id: CampaignId,
    pub source: SourceChannel,
    pub language: Language,
    pub country: Country,
    pub preferred_site: Option<SiteId>,
    pub consent_to_contact: bool,
    /// Cleared on erasure: a campaign's own reference can identify the person.
    pub external_ref: Option<String>,
    pub time_zone: Option<String>,
    pub referred_at: DateTime<Utc>,
    pub stage: Stage,
    /// When the journey entered its current stage ("days in stage").
    pub stage_entered_at: DateTime<Utc>,
    /// The pre-screen result, once there is one.
    pub prescreen_passed: Option<bool>,
    pub prescreen_reasons: Vec<String>,
    /// Every contact attempt ever made.
    pub contact_attempts: u32,
    /// Unanswered attempts in the current cadence. Reset when the candidate is reached, asks
    /// for a call-back, is referred to a site, or misses an appointment (a new re-engagement
    /// cadence starts).
    pub unanswered_attempts: u32,
    pub first_contact_attempt_at: Option<DateTime<Utc>>,
    pub last_reached_at: Option<DateTime<Utc>>,
    /// The pending call-back, cleared when the candidate is reached.
    pub callback: Option<Callback>,
    /// The site currently handling the candidate.
    pub site_id: Option<SiteId>,
    pub appointment_at: Option<DateTime<Utc>>,
    pub no_shows: u32,
    pub consented_at: Option<DateTime<Utc>>,
    pub randomized_at: Option<DateTime<Utc>>,
    pub arm: Option<String>,
    /// The reason given by the event that closed the journey, if it gave one.
    pub closed_reason: Option<String>,
    /// The journey this one duplicates.
    pub duplicate_of: Option<JourneyId>,
    /// The candidate's personal data (key) has been erased. Does not close the journey.
    pub erased: bool,
}

impl Journey {
    fn from_referral(referral: &ReferralReceived) -> Self {
        Self {
            journey_id: referral.journey_id,
            candidate_id: referral.candidate_id,
            study_id: referral.study_id,
            campaign_id: referral.campaign_id,
            source: referral.source,
            language: referral.language.clone(),
            country: referral.country.clone(),
            preferred_site: referral.preferred_site,
            consent_to_contact: referral.consent_to_contact,
            external_ref: referral.external_ref.clone(),
            time_zone: referral.time_zone.clone(),
            referred_at: referral.at,
            stage: Stage::Referred,
            stage_entered_at: referral.at,
            prescreen_passed: None,
            prescreen_reasons: Vec::new(),
            contact_attempts: 0,
            unanswered_attempts: 0,
            first_contact_attempt_at: None,
            last_reached_at: None,
            callback: None,
            site_id: None,
            appointment_at: None,
            no_shows: 0,
            consented_at: None,
            randomized_at: None,
            arm: None,
            closed_reason: None,
            duplicate_of: None,
            erased: false,
        }
    }

    /// Whether the journey belongs in Enrollment Support Team work queues: open, not erased.
    #[must_use]
    pub const fn is_workable(&self) -> bool {
        self.stage.is_open() && !self.erased
    }

    /// Whether the Enrollment Support Team may call the candidate: consent given, contact
    /// data not erased.
    #[must_use]
    pub const fn may_contact(&self) -> bool {
        self.consent_to_contact && !self.erased
    }

    /// The FHIR subject state, distinguishing a withdrawal after randomization (`off-study`)
    /// from one before it (`withdrawn`).
    #[must_use]
    pub const fn fhir_subject_state(&self) -> FhirSubjectState {
        match self.stage {
            Stage::Withdrawn if self.randomized_at.is_some() => FhirSubjectState::OffStudy,
            stage => stage.fhir_subject_state(),
        }
    }

    /// Moves to `stage`; re-entering the current stage keeps its entry time.
    fn enter(&mut self, stage: Stage, at: DateTime<Utc>) {
        if self.stage != stage {
            self.stage = stage;
            self.stage_entered_at = at;
        }
    }

    /// Records one event. Total: applies what the event says, whatever the current stage.
    fn apply(&mut self, event: &JourneyEvent) {
        match event {
            // The first referral defines the journey; a second one on the same stream cannot
            // change who or what it is about.
            JourneyEvent::ReferralReceived(_) => {}
            JourneyEvent::PrescreenCompleted(e) => {
                self.prescreen_passed = Some(e.passed);
                self.prescreen_reasons.clone_from(&e.reasons);
                if e.passed {
                    self.enter(Stage::PrescreenPassed, e.at);
                } else {
                    self.enter(Stage::PrescreenFailed, e.at);
                    self.closed_reason = (!e.reasons.is_empty()).then(|| e.reasons.join("; "));
                }
            }
            JourneyEvent::ContactAttempted(e) => {
                self.contact_attempts = self.contact_attempts.saturating_add(1);
                self.first_contact_attempt_at.get_or_insert(e.at);
                if e.outcome.is_reached() {
                    self.unanswered_attempts = 0;
                    self.last_reached_at = Some(e.at);
                    self.callback = None;
                    if matches!(
                        self.stage,
                        Stage::Referred
                            | Stage::PrescreenPassed
                            | Stage::Contacting
                            | Stage::Unreachable
                    ) {
                        self.enter(Stage::Contacted, e.at);
                    }
                } else {
                    self.unanswered_attempts = self.unanswered_attempts.saturating_add(1);
                    if matches!(self.stage, Stage::Referred | Stage::PrescreenPassed) {
                        self.enter(Stage::Contacting, e.at);
                    }
                }
            }
            JourneyEvent::CallbackRequested(e) => {
                self.callback = Some(Callback {
                    requested_at: e.at,
                    callback_at: e.callback_at,
                    time_zone: e.time_zone.clone(),
                });
                self.unanswered_attempts = 0;
                if self.stage == Stage::Unreachable {
                    self.enter(Stage::Contacting, e.at);
                }
            }
            JourneyEvent::ReferredToSite(e) => {
                self.site_id = Some(e.site_id);
                self.appointment_at = None;
                self.unanswered_attempts = 0;
                self.enter(Stage::ReferredToSite, e.at);
            }
            JourneyEvent::Reallocated(e) => {
                self.site_id = Some(e.to_site);
                self.appointment_at = None;
                self.enter(Stage::ReferredToSite, e.at);
            }
            JourneyEvent::SiteContacted(e) => {
                self.site_id = Some(e.site_id);
                self.enter(Stage::SiteContacted, e.at);
            }
            JourneyEvent::AppointmentScheduled(e) => {
                self.site_id = Some(e.site_id);
                self.appointment_at = Some(e.appointment_at);
                self.enter(Stage::AppointmentScheduled, e.at);
            }
            JourneyEvent::AppointmentRescheduled(e) => {
                self.appointment_at = Some(e.appointment_at);
                self.enter(Stage::AppointmentScheduled, e.at);
            }
            JourneyEvent::AppointmentAttended(e) => self.enter(Stage::Attended, e.at),
            JourneyEvent::NoShow(e) => {
                self.no_shows = self.no_shows.saturating_add(1);
                self.unanswered_attempts = 0;
                self.enter(Stage::NoShow, e.at);
            }
            JourneyEvent::Consented(e) => {
                self.consented_at = Some(e.at);
                self.enter(Stage::Consented, e.at);
            }
            JourneyEvent::ScreeningStarted(e) => self.enter(Stage::Screening, e.at),
            JourneyEvent::ScreenFailed(e) => {
                self.closed_reason = Some(e.reason.clone());
                self.enter(Stage::ScreenFailed, e.at);
            }
            JourneyEvent::Randomized(e) => {
                self.randomized_at = Some(e.at);
                self.arm.clone_from(&e.arm);
                self.enter(Stage::Randomized, e.at);
            }
            JourneyEvent::Withdrawn(e) => {
                self.closed_reason = Some(e.reason.clone());
                self.enter(Stage::Withdrawn, e.at);
            }
            JourneyEvent::Disqualified(e) => {
                self.closed_reason = Some(e.reason.clone());
                self.enter(Stage::Disqualified, e.at);
            }
            JourneyEvent::NotInterested(e) => {
                self.closed_reason.clone_from(&e.reason);
                self.enter(Stage::NotInterested, e.at);
            }
            JourneyEvent::Unreachable(e) => self.enter(Stage::Unreachable, e.at),
            JourneyEvent::OptedOut(e) => self.enter(Stage::OptedOut, e.at),
            JourneyEvent::DuplicateLinked(e) => {
                self.duplicate_of = Some(e.primary);
                self.enter(Stage::Duplicate, e.at);
            }
            JourneyEvent::PersonalDataErased(_) => {
                self.erased = true;
                self.external_ref = None;
            }
        }
    }
}

/// The state of one journey: not started until its referral is received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JourneyState {
    #[default]
    NotStarted,
    /// Boxed: a started journey is a few hundred bytes, and states are moved through `evolve`
    /// once per event.
    Started(Box<Journey>),
}

impl JourneyState {
    /// The started journey, if any.
    #[must_use]
    pub fn journey(&self) -> Option<&Journey> {
        match self {
            Self::NotStarted => None,
            Self::Started(journey) => Some(journey),
        }
    }

    /// The current stage, if the journey has started.
    #[must_use]
    pub fn stage(&self) -> Option<Stage> {
        self.journey().map(|journey| journey.stage)
    }

    #[must_use]
    pub const fn is_started(&self) -> bool {
        matches!(self, Self::Started(_))
    }
}

/// An intention to change a journey, checked by [`decide`]. Each carries `at`, the business
/// time it happened (the domain never reads a clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "commands are built once and decided once; boxing the referral would only make \
              constructing and matching clumsier"
)]
pub enum JourneyCommand {
    /// Start the journey from a campaign's referral.
    ReceiveReferral {
        at: DateTime<Utc>,
        journey_id: JourneyId,
        candidate_id: CandidateId,
        study_id: StudyId,
        campaign_id: CampaignId,
        source: SourceChannel,
        language: Language,
        country: Country,
        preferred_site: Option<SiteId>,
        consent_to_contact: bool,
        contact: SealedContact,
        external_ref: Option<String>,
        time_zone: Option<String>,
    },
    CompletePrescreen {
        at: DateTime<Utc>,
        passed: bool,
        reasons: Vec<String>,
    },
    RecordContactAttempt {
        at: DateTime<Utc>,
        channel: ContactChannel,
        outcome: ContactOutcome,
        agent: Option<AgentId>,
    },
    RequestCallback {
        at: DateTime<Utc>,
        callback_at: DateTime<Utc>,
        time_zone: String,
    },
    ReferToSite {
        at: DateTime<Utc>,
        site_id: SiteId,
    },
    Reallocate {
        at: DateTime<Utc>,
        to_site: SiteId,
        reason: String,
    },
    RecordSiteContact {
        at: DateTime<Utc>,
    },
    ScheduleAppointment {
        at: DateTime<Utc>,
        appointment_at: DateTime<Utc>,
    },
    RescheduleAppointment {
        at: DateTime<Utc>,
        appointment_at: DateTime<Utc>,
    },
    RecordAttendance {
        at: DateTime<Utc>,
    },
    RecordNoShow {
        at: DateTime<Utc>,
    },
    RecordConsent {
        at: DateTime<Utc>,
    },
    StartScreening {
        at: DateTime<Utc>,
    },
    RecordScreenFailure {
        at: DateTime<Utc>,
        reason: String,
    },
    Randomize {
        at: DateTime<Utc>,
        arm: Option<String>,
    },
    Withdraw {
        at: DateTime<Utc>,
        reason: String,
    },
    Disqualify {
        at: DateTime<Utc>,
        reason: String,
    },
    RecordNotInterested {
        at: DateTime<Utc>,
        reason: Option<String>,
    },
    /// Close the contact cadence: the unanswered attempt count comes from the state.
    MarkUnreachable {
        at: DateTime<Utc>,
    },
    OptOut {
        at: DateTime<Utc>,
    },
    LinkDuplicate {
        at: DateTime<Utc>,
        primary: JourneyId,
    },
    ErasePersonalData {
        at: DateTime<Utc>,
    },
}

impl JourneyCommand {
    /// The command's stable snake_case name, used in error messages and metrics.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::ReceiveReferral { .. } => "receive_referral",
            Self::CompletePrescreen { .. } => "complete_prescreen",
            Self::RecordContactAttempt { .. } => "record_contact_attempt",
            Self::RequestCallback { .. } => "request_callback",
            Self::ReferToSite { .. } => "refer_to_site",
            Self::Reallocate { .. } => "reallocate",
            Self::RecordSiteContact { .. } => "record_site_contact",
            Self::ScheduleAppointment { .. } => "schedule_appointment",
            Self::RescheduleAppointment { .. } => "reschedule_appointment",
            Self::RecordAttendance { .. } => "record_attendance",
            Self::RecordNoShow { .. } => "record_no_show",
            Self::RecordConsent { .. } => "record_consent",
            Self::StartScreening { .. } => "start_screening",
            Self::RecordScreenFailure { .. } => "record_screen_failure",
            Self::Randomize { .. } => "randomize",
            Self::Withdraw { .. } => "withdraw",
            Self::Disqualify { .. } => "disqualify",
            Self::RecordNotInterested { .. } => "record_not_interested",
            Self::MarkUnreachable { .. } => "mark_unreachable",
            Self::OptOut { .. } => "opt_out",
            Self::LinkDuplicate { .. } => "link_duplicate",
            Self::ErasePersonalData { .. } => "erase_personal_data",
        }
    }

    /// When the command's fact happened.
    #[must_use]
    pub const fn at(&self) -> DateTime<Utc> {
        match self {
            Self::ReceiveReferral { at, .. }
            | Self::CompletePrescreen { at, .. }
            | Self::RecordContactAttempt { at, .. }
            | Self::RequestCallback { at, .. }
            | Self::ReferToSite { at, .. }
            | Self::Reallocate { at, .. }
            | Self::RecordSiteContact { at }
            | Self::ScheduleAppointment { at, .. }
            | Self::RescheduleAppointment { at, .. }
            | Self::RecordAttendance { at }
            | Self::RecordNoShow { at }
            | Self::RecordConsent { at }
            | Self::StartScreening { at }
            | Self::RecordScreenFailure { at, .. }
            | Self::Randomize { at, .. }
            | Self::Withdraw { at, .. }
            | Self::Disqualify { at, .. }
            | Self::RecordNotInterested { at, .. }
            | Self::MarkUnreachable { at }
            | Self::OptOut { at }
            | Self::LinkDuplicate { at, .. }
            | Self::ErasePersonalData { at } => *at,
        }
    }
}

/// Stages in which the Enrollment Support Team works the phone: before the site takes over,
/// plus re-engagement of no-shows and unreachable candidates.
const CONTACT_STAGES: &[Stage] = &[
    Stage::Referred,
    Stage::PrescreenPassed,
    Stage::Contacting,
    Stage::Contacted,
    Stage::Unreachable,
    Stage::NoShow,
];

/// Decides what a command means for a journey: the events to append, or why not.
///
/// Every accepted command yields exactly one event. Checks run from the general to the
/// specific: started or not, erasure, closed journeys, the stage, then the command's fields.
///
/// # Errors
/// [`DomainError::NotStarted`], [`DomainError::AlreadyStarted`], [`DomainError::Closed`],
/// [`DomainError::IllegalTransition`], [`DomainError::AlreadyErased`] or
/// [`DomainError::Invalid`]; a refused command changes nothing.
pub fn decide(
    state: &JourneyState,
    command: &JourneyCommand,
) -> Result<Vec<JourneyEvent>, DomainError> {
    let event = match (state, command) {
        (JourneyState::NotStarted, JourneyCommand::ReceiveReferral { .. }) => {
            receive_referral(command)?
        }
        (JourneyState::NotStarted, _) => return Err(DomainError::NotStarted),
        (JourneyState::Started(_), JourneyCommand::ReceiveReferral { .. }) => {
            return Err(DomainError::AlreadyStarted);
        }
        (JourneyState::Started(journey), _) => decide_started(journey, command)?,
    };
    Ok(vec![event])
}

/// Applies one event to a state. Total: unknown orders are recorded as the events say, events
/// before the referral are ignored (there is no journey to apply them to yet).
#[must_use]
pub fn evolve(state: JourneyState, event: &JourneyEvent) -> JourneyState {
    match (state, event) {
        (JourneyState::NotStarted, JourneyEvent::ReferralReceived(referral)) => {
            JourneyState::Started(Box::new(Journey::from_referral(referral)))
        }
        (JourneyState::NotStarted, _) => JourneyState::NotStarted,
        (JourneyState::Started(mut journey), event) => {
            journey.apply(event);
            JourneyState::Started(journey)
        }
    }
}

/// Replays a journey's events from the beginning.
#[must_use]
pub fn fold<'a>(events: impl IntoIterator<Item = &'a JourneyEvent>) -> JourneyState {
    events.into_iter().fold(JourneyState::NotStarted, evolve)
}

fn receive_referral(command: &JourneyCommand) -> Result<JourneyEvent, DomainError> {
    let JourneyCommand::ReceiveReferral {
        at,
        journey_id,
        candidate_id,
        study_id,
        campaign_id,
        source,
        language,
        country,
        preferred_site,
        consent_to_contact,
        contact,
        external_ref,
        time_zone,
    } = command
    else {
        return Err(DomainError::invalid("not a referral"));
    };
    require_optional_text("external_ref", external_ref.as_deref())?;
    if let Some(time_zone) = time_zone {
        require_time_zone(time_zone)?;
    }
    if contact.alg.trim().is_empty() || contact.ciphertext.is_empty() {
        return Err(DomainError::invalid(
            "contact must be sealed (cipher and ciphertext are required)",
        ));
    }
    Ok(ReferralReceived {
        at: *at,
        journey_id: *journey_id,
        candidate_id: *candidate_id,
        study_id: *study_id,
        campaign_id: *campaign_id,
        source: *source,
        language: language.clone(),
        country: country.clone(),
        preferred_site: *preferred_site,
        consent_to_contact: *consent_to_contact,
        contact: contact.clone(),
        external_ref: external_ref.clone(),
        time_zone: time_zone.clone(),
    }
    .into())
}

fn decide_started(
    journey: &Journey,
    command: &JourneyCommand,
) -> Result<JourneyEvent, DomainError> {
    use JourneyCommand as C;

    let stage = journey.stage;

    // Erasure is a legal obligation: accepted in every stage, open or closed, exactly once.
    if let C::ErasePersonalData { at } = command {
        return erase(journey, *at);
    }

    // Randomized is the funnel's success and closes recruitment, but a randomized patient can
    // always withdraw consent.
    let withdrawing_after_randomization =
        matches!(command, C::Withdraw { .. }) && stage == Stage::Randomized;
    if stage.is_closed() && !withdrawing_after_randomization {
        return Err(DomainError::Closed { stage });
    }

    let require_stage = |allowed: &[Stage]| {
        if allowed.contains(&stage) {
            Ok(())
        } else {
            Err(DomainError::IllegalTransition {
                stage,
                command: command.name(),
            })
        }
    };
    let current_site = || {
        journey
            .site_id
            .ok_or_else(|| DomainError::invalid("the journey has no current site"))
    };

    let event: JourneyEvent = match command {
        C::ReceiveReferral { .. } => return Err(DomainError::AlreadyStarted),
        // Decided above, before the closed check.
        C::ErasePersonalData { at } => return erase(journey, *at),
        C::CompletePrescreen {
            at,
            passed,
            reasons,
        } => {
            // The pre-screen is usually done online before the referral arrives, but for
            // physician referrals the team runs it on the phone, after first contact.
            require_stage(&[Stage::Referred, Stage::Contacting, Stage::Contacted])?;
            if journey.prescreen_passed.is_some() {
                return Err(DomainError::invalid(
                    "the pre-screen has already been completed",
                ));
            }
            for reason in reasons {
                require_text("pre-screen reason", reason)?;
            }
            PrescreenCompleted {
                at: *at,
                passed: *passed,
                reasons: reasons.clone(),
            }
            .into()
        }
        C::RecordContactAttempt {
            at,
            channel,
            outcome,
            agent,
        } => {
            require_stage(CONTACT_STAGES)?;
            require_may_contact(journey)?;
            ContactAttempted {
                at: *at,
                channel: *channel,
                outcome: *outcome,
                agent: *agent,
            }
            .into()
        }
        C::RequestCallback {
            at,
            callback_at,
            time_zone,
        } => {
            require_stage(CONTACT_STAGES)?;
            require_may_contact(journey)?;
            require_time_zone(time_zone)?;
            if callback_at <= at {
                return Err(DomainError::invalid(
                    "the call-back time must be after the request",
                ));
            }
            CallbackRequested {
                at: *at,
                callback_at: *callback_at,
                time_zone: time_zone.clone(),
            }
            .into()
        }
        C::ReferToSite { at, site_id } => {
            // Only a candidate the team has spoken to, or who passed the pre-screen, is worth
            // a site's time.
            require_stage(&[Stage::PrescreenPassed, Stage::Contacted])?;
            ReferredToSite {
                at: *at,
                site_id: *site_id,
            }
            .into()
        }
        C::Reallocate {
            at,
            to_site,
            reason,
        } => {
            if !stage.is_at_site_before_consent() {
                return Err(DomainError::IllegalTransition {
                    stage,
                    command: command.name(),
                });
            }
            let from_site = current_site()?;
            if from_site == *to_site {
                return Err(DomainError::invalid(format!(
                    "cannot reallocate to the current site {from_site}"
                )));
            }
            require_text("reason", reason)?;
            Reallocated {
                at: *at,
                from_site,
                to_site: *to_site,
                reason: reason.clone(),
            }
            .into()
        }
        C::RecordSiteContact { at } => {
            require_stage(&[Stage::ReferredToSite])?;
            SiteContacted {
                at: *at,
                site_id: current_site()?,
            }
            .into()
        }
        C::ScheduleAppointment { at, appointment_at } => {
            require_stage(&[Stage::ReferredToSite, Stage::SiteContacted, Stage::NoShow])?;
            require_appointment_after(*at, *appointment_at)?;
            AppointmentScheduled {
                at: *at,
                site_id: current_site()?,
                appointment_at: *appointment_at,
            }
            .into()
        }
        C::RescheduleAppointment { at, appointment_at } => {
            require_stage(&[Stage::AppointmentScheduled, Stage::NoShow])?;
            require_appointment_after(*at, *appointment_at)?;
            AppointmentRescheduled {
                at: *at,
                appointment_at: *appointment_at,
            }
            .into()
        }
        C::RecordAttendance { at } => {
            require_stage(&[Stage::AppointmentScheduled])?;
            AppointmentAttended { at: *at }.into()
        }
        C::RecordNoShow { at } => {
            require_stage(&[Stage::AppointmentScheduled])?;
            NoShow { at: *at }.into()
        }
        C::RecordConsent { at } => {
            require_stage(&[Stage::Attended])?;
            Consented { at: *at }.into()
        }
        C::StartScreening { at } => {
            require_stage(&[Stage::Consented])?;
            ScreeningStarted { at: *at }.into()
        }
        C::RecordScreenFailure { at, reason } => {
            require_stage(&[Stage::Screening])?;
            require_text("reason", reason)?;
            ScreenFailed {
                at: *at,
                reason: reason.clone(),
            }
            .into()
        }
        C::Randomize { at, arm } => {
            require_stage(&[Stage::Screening])?;
            require_optional_text("arm", arm.as_deref())?;
            Randomized {
                at: *at,
                arm: arm.clone(),
            }
            .into()
        }
        C::Withdraw { at, reason } => {
            // Any open stage, and randomized (let through above).
            require_text("reason", reason)?;
            Withdrawn {
                at: *at,
                reason: reason.clone(),
            }
            .into()
        }
        C::Disqualify { at, reason } => {
            require_text("reason", reason)?;
            Disqualified {
                at: *at,
                reason: reason.clone(),
            }
            .into()
        }
        C::RecordNotInterested { at, reason } => {
            require_optional_text("reason", reason.as_deref())?;
            NotInterested {
                at: *at,
                reason: reason.clone(),
            }
            .into()
        }
        C::MarkUnreachable { at } => {
            require_stage(&[Stage::Contacting, Stage::Contacted, Stage::NoShow])?;
            if journey.unanswered_attempts == 0 {
                return Err(DomainError::invalid(
                    "no unanswered contact attempt since the candidate was last reached",
                ));
            }
            Unreachable {
                at: *at,
                attempts: journey.unanswered_attempts,
            }
            .into()
        }
        C::OptOut { at } => OptedOut { at: *at }.into(),
        C::LinkDuplicate { at, primary } => {
            if *primary == journey.journey_id {
                return Err(DomainError::invalid(
                    "a journey cannot be a duplicate of itself",
                ));
            }
            DuplicateLinked {
                at: *at,
                primary: *primary,
            }
            .into()
        }
    };
    Ok(event)
}

fn erase(journey: &Journey, at: DateTime<Utc>) -> Result<JourneyEvent, DomainError> {
    if journey.erased {
        Err(DomainError::AlreadyErased)
    } else {
        Ok(PersonalDataErased { at }.into())
    }
}

fn require_may_contact(journey: &Journey) -> Result<(), DomainError> {
    if !journey.consent_to_contact {
        Err(DomainError::invalid(
            "the candidate did not consent to be contacted",
        ))
    } else if journey.erased {
        Err(DomainError::invalid(
            "the candidate's contact data has been erased",
        ))
    } else {
        Ok(())
    }
}

fn require_appointment_after(
    at: DateTime<Utc>,
    appointment_at: DateTime<Utc>,
) -> Result<(), DomainError> {
    if appointment_at < at {
        Err(DomainError::invalid(
            "the appointment cannot be before it was booked",
        ))
    } else {
        Ok(())
    }
}
