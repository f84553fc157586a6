//! Events of one candidate's journey in one study.
//!
//! Only [`ReferralReceived`] carries the journey's identity (journey, candidate, study,
//! campaign): every later event is stored on the journey's own subject, so repeating the ids
//! would only add bytes. Personal data appears only sealed ([`SealedContact`]); every other
//! field is safe for logs and metrics.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event_catalogue;
use crate::ids::{AgentId, CampaignId, CandidateId, JourneyId, SiteId, StudyId};
use crate::privacy::SealedContact;
use crate::values::{ContactChannel, ContactOutcome, Country, Language, SourceChannel};

event_catalogue! {
    /// Any event of a candidate's journey.
    pub enum JourneyEvent {
        ReferralReceived(ReferralReceived) = ("funnel.journey.referral_received", 1),
        PrescreenCompleted(PrescreenCompleted) = ("funnel.journey.prescreen_completed", 1),
        ContactAttempted(ContactAttempted) = ("funnel.journey.contact_attempted", 1),
        CallbackRequested(CallbackRequested) = ("funnel.journey.callback_requested", 1),
        ReferredToSite(ReferredToSite) = ("funnel.journey.referred_to_site", 1),
        Reallocated(Reallocated) = ("funnel.journey.reallocated", 1),
        SiteContacted(SiteContacted) = ("funnel.journey.site_contacted", 1),
        AppointmentScheduled(AppointmentScheduled) = ("funnel.journey.appointment_scheduled", 1),
        AppointmentRescheduled(AppointmentRescheduled) =
            ("funnel.journey.appointment_rescheduled", 1),
        AppointmentAttended(AppointmentAttended) = ("funnel.journey.appointment_attended", 1),
        NoShow(NoShow) = ("funnel.journey.no_show", 1),
        Consented(Consented) = ("funnel.journey.consented", 1),
        ScreeningStarted(ScreeningStarted) = ("funnel.journey.screening_started", 1),
        ScreenFailed(ScreenFailed) = ("funnel.journey.screen_failed", 1),
        Randomized(Randomized) = ("funnel.journey.randomized", 1),
        Withdrawn(Withdrawn) = ("funnel.journey.withdrawn", 1),
        Disqualified(Disqualified) = ("funnel.journey.disqualified", 1),
        NotInterested(NotInterested) = ("funnel.journey.not_interested", 1),
        Unreachable(Unreachable) = ("funnel.journey.unreachable", 1),
        OptedOut(OptedOut) = ("funnel.journey.opted_out", 1),
        DuplicateLinked(DuplicateLinked) = ("funnel.journey.duplicate_linked", 1),
        PersonalDataErased(PersonalDataErased) = ("funnel.journey.personal_data_erased", 1),
    }
}

/// A campaign referred a candidate to a study: the journey starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferralReceived {
    pub at: DateTime<Utc>,
    pub journey_id: JourneyId,
    pub candidate_id: CandidateId,
    pub study_id: StudyId,
    pub campaign_id: CampaignId,
    pub source: SourceChannel,
    /// The language the candidate wants to be called in; agents are routed by it.
    pub language: Language,
    pub country: Country,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_site: Option<SiteId>,
    /// Whether the candidate agreed to be contacted. A referral without it is still recorded
    /// (it counts in source attribution), but nobody may call.
    pub consent_to_contact: bool,
    /// Name, phone, e-mail and notes, sealed under the candidate's key.
    pub contact: SealedContact,
    /// The campaign's own id for this referral, for reconciliation with the campaign's reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    /// The candidate's IANA time zone (`Europe/Madrid`), for calling at sensible hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// The candidate completed the online (or phone) pre-screen questionnaire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrescreenCompleted {
    pub at: DateTime<Utc>,
    pub passed: bool,
    /// Why the pre-screen failed (or notes on a pass); codes or short texts, no personal data.
    pub reasons: Vec<String>,
}

/// The Enrollment Support Team tried to reach the candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactAttempted {
    pub at: DateTime<Utc>,
    pub channel: ContactChannel,
    pub outcome: ContactOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// The candidate asked to be called back at a given time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRequested {
    pub at: DateTime<Utc>,
    /// When to call, as an instant.
    pub callback_at: DateTime<Utc>,
    /// The candidate's IANA time zone, so that agents see the time the candidate asked for.
    pub time_zone: String,
}

/// The candidate was referred to an investigative site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferredToSite {
    pub at: DateTime<Utc>,
    pub site_id: SiteId,
}

/// The candidate was moved to another site (the first was slow, paused or closed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reallocated {
    pub at: DateTime<Utc>,
    pub from_site: SiteId,
    pub to_site: SiteId,
    pub reason: String,
}

/// The site acted on the referral and contacted the candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteContacted {
    pub at: DateTime<Utc>,
    pub site_id: SiteId,
}

/// A first appointment at the site was booked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentScheduled {
    pub at: DateTime<Utc>,
    pub site_id: SiteId,
    pub appointment_at: DateTime<Utc>,
}

/// The appointment was moved (also used to rebook after a no-show).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentRescheduled {
    pub at: DateTime<Utc>,
    pub appointment_at: DateTime<Utc>,
}

/// The candidate came to the appointment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentAttended {
    pub at: DateTime<Utc>,
}

/// The candidate did not come to the appointment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoShow {
    pub at: DateTime<Utc>,
}

/// The candidate signed informed consent (FHIR milestone `SignedUp`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consented {
    pub at: DateTime<Utc>,
}

/// Protocol screening procedures started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreeningStarted {
    pub at: DateTime<Utc>,
}

/// The candidate did not meet the protocol's eligibility criteria (FHIR reason
/// `screenFailure`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenFailed {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// The candidate was randomized, i.e. enrolled: the funnel's success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Randomized {
    pub at: DateTime<Utc>,
    /// The treatment arm, if the study is unblinded to the recruiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}

/// The candidate withdrew their participation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// The candidate was found ineligible outside formal screening (e.g. on the phone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disqualified {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// The candidate declined to continue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotInterested {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The contact cadence ran out without reaching the candidate. A call-back request or a
/// reached contact re-opens the journey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreachable {
    pub at: DateTime<Utc>,
    /// Unanswered attempts since the candidate was last reached (or since a call-back request).
    pub attempts: u32,
}

/// The candidate asked never to be contacted again about this study.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptedOut {
    pub at: DateTime<Utc>,
}

/// This journey duplicates another journey of the same patient in the same study; the other
/// one carries on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateLinked {
    pub at: DateTime<Utc>,
    pub primary: JourneyId,
}

/// The candidate's personal data was erased (their key destroyed). The funnel facts stay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalDataErased {
    pub at: DateTime<Utc>,
}
