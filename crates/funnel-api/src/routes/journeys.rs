//! A candidate's journey: read it, and record what happens in it. Every recorded step is a
//! journey command decided against the journey's stream; a refused one appends nothing.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use funnel_domain::{
    AgentId, ContactChannel, ContactOutcome, DomainEvent, Journey, JourneyCommand, JourneyEvent,
    JourneyId, JourneyState, SiteId,
};
use funnel_privacy::Opened;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::setup::{AppendedEvent, path_rejection};
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::commands::{CommandError, Loaded, decode_recorded, journey_key};
use crate::extract::{ApiJson, IfMatch, etag};
use crate::problem::{ApiError, Problem};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_journey))
        .routes(routes!(record_event))
}

/// How far in the future a step's `at` may lie (clock skew between caller and service).
const MAX_FUTURE_SKEW: Duration = Duration::minutes(1);

/// How often a step is re-decided after another writer changed the journey in between (only
/// when the caller pinned no version).
const RACE_RETRIES: usize = 3;

// ---------------------------------------------------------------------------------------------
// Wire types.

/// How the Enrollment Support Team tried to reach the candidate.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum AttemptChannel {
    Phone,
    Sms,
    Email,
    Whatsapp,
}

impl From<AttemptChannel> for ContactChannel {
    fn from(channel: AttemptChannel) -> Self {
        match channel {
            AttemptChannel::Phone => Self::Phone,
            AttemptChannel::Sms => Self::Sms,
            AttemptChannel::Email => Self::Email,
            AttemptChannel::Whatsapp => Self::Whatsapp,
        }
    }
}

/// What came of a contact attempt; only `reached` counts as contact.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum AttemptOutcome {
    Reached,
    NoAnswer,
    Voicemail,
    Busy,
    WrongNumber,
}

impl From<AttemptOutcome> for ContactOutcome {
    fn from(outcome: AttemptOutcome) -> Self {
        match outcome {
            AttemptOutcome::Reached => Self::Reached,
            AttemptOutcome::NoAnswer => Self::NoAnswer,
            AttemptOutcome::Voicemail => Self::Voicemail,
            AttemptOutcome::Busy => Self::Busy,
            AttemptOutcome::WrongNumber => Self::WrongNumber,
        }
    }
}

/// One step of the funnel, tagged by `type`. Every step takes an optional `at`: when it
/// happened (RFC 3339; the service's clock when left out; at most a minute in the future).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum JourneyStep {
    /// The pre-screen questionnaire's result (agents, admin).
    PrescreenCompleted {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        passed: bool,
        /// Reason codes or short texts; no personal data.
        #[serde(default)]
        reasons: Vec<String>,
    },
    /// A call, text or e-mail to the candidate (agents, admin).
    ContactAttempted {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        channel: AttemptChannel,
        outcome: AttemptOutcome,
        /// The agent who tried; an agent token records its own id.
        #[serde(default, deserialize_with = "field::agent_id")]
        agent_id: Option<Uuid>,
    },
    /// The candidate asked to be called back (agents, admin).
    CallbackRequested {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        #[serde(deserialize_with = "field::callback_at")]
        callback_at: DateTime<Utc>,
        /// IANA time zone; the referral's when left out.
        time_zone: Option<String>,
    },
    /// Refer the candidate to an active site of the study (agents, admin).
    ReferredToSite {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        #[serde(deserialize_with = "field::site_id")]
        site_id: Uuid,
    },
    /// Move the candidate to another active site before consent (agents, admin).
    Reallocated {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        #[serde(deserialize_with = "field::to_site")]
        to_site: Uuid,
        reason: String,
    },
    /// The site acted on the referral (site, admin).
    SiteContacted {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
    },
    /// A first appointment was booked (site, agents on the site's behalf, admin).
    AppointmentScheduled {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        #[serde(deserialize_with = "field::appointment_at")]
        appointment_at: DateTime<Utc>,
    },
    /// The appointment was moved or rebooked after a no-show (site, agents, admin).
    AppointmentRescheduled {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        #[serde(deserialize_with = "field::appointment_at")]
        appointment_at: DateTime<Utc>,
    },
    /// The candidate came (site, admin).
    AppointmentAttended {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
    },
    /// The candidate did not come (site, admin).
    NoShow {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
    },
    /// Informed consent signed (site, admin).
    Consented {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
    },
    /// Protocol screening started (site, admin).
    ScreeningStarted {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
    },
    /// Not eligible by the protocol's screening (site, admin).
    ScreenFailed {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        reason: String,
    },
    /// Enrolled (site, admin).
    Randomized {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        arm: Option<String>,
    },
    /// The candidate withdrew (agents, site, admin).
    Withdrawn {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        reason: String,
    },
    /// Found ineligible outside formal screening (agents, admin).
    Disqualified {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        reason: String,
    },
    /// The candidate declined to continue (agents, admin).
    NotInterested {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
        reason: Option<String>,
    },
    /// The contact cadence ran out (agents, admin).
    Unreachable {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
    },
    /// The candidate asked never to be contacted again about this study (agents, admin).
    OptedOut {
        #[serde(default, deserialize_with = "field::at")]
        at: Option<DateTime<Utc>>,
    },
}

/// Field parsers that name the field in their errors: serde's internally tagged enums lose the
/// field and position, which would leave a caller with "input contains invalid characters".
mod field {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;
    use uuid::Uuid;

    fn time<E: serde::de::Error>(name: &str, value: &Value) -> Result<DateTime<Utc>, E> {
        value
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.to_utc())
            .ok_or_else(|| {
                E::custom(format!(
                    "`{name}` must be an RFC 3339 time like 2026-03-02T09:00:00Z, not {value}"
                ))
            })
    }

    fn id<E: serde::de::Error>(name: &str, value: &Value) -> Result<Uuid, E> {
        value
            .as_str()
            .and_then(|text| Uuid::try_parse(text).ok())
            .ok_or_else(|| E::custom(format!("`{name}` must be a UUID, not {value}")))
    }

    fn optional<'de, D: Deserializer<'de>, T>(
        deserializer: D,
        parse: impl FnOnce(&Value) -> Result<T, D::Error>,
    ) -> Result<Option<T>, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null => Ok(None),
            value => parse(&value).map(Some),
        }
    }

    pub(super) fn at<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        optional(d, |value| time("at", value))
    }

    pub(super) fn callback_at<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        time("callback_at", &Value::deserialize(d)?)
    }

    pub(super) fn appointment_at<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        time("appointment_at", &Value::deserialize(d)?)
    }

    pub(super) fn site_id<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        id("site_id", &Value::deserialize(d)?)
    }

    pub(super) fn to_site<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        id("to_site", &Value::deserialize(d)?)
    }

    pub(super) fn agent_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
        optional(d, |value| id("agent_id", value))
    }
}

/// Who may record a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recorders {
    agent: bool,
    site: bool,
}

impl JourneyStep {
    const fn name(&self) -> &'static str {
        match self {
            Self::PrescreenCompleted { .. } => "prescreen_completed",
            Self::ContactAttempted { .. } => "contact_attempted",
            Self::CallbackRequested { .. } => "callback_requested",
            Self::ReferredToSite { .. } => "referred_to_site",
            Self::Reallocated { .. } => "reallocated",
            Self::SiteContacted { .. } => "site_contacted",
            Self::AppointmentScheduled { .. } => "appointment_scheduled",
            Self::AppointmentRescheduled { .. } => "appointment_rescheduled",
            Self::AppointmentAttended { .. } => "appointment_attended",
            Self::NoShow { .. } => "no_show",
            Self::Consented { .. } => "consented",
            Self::ScreeningStarted { .. } => "screening_started",
            Self::ScreenFailed { .. } => "screen_failed",
            Self::Randomized { .. } => "randomized",
            Self::Withdrawn { .. } => "withdrawn",
            Self::Disqualified { .. } => "disqualified",
            Self::NotInterested { .. } => "not_interested",
            Self::Unreachable { .. } => "unreachable",
            Self::OptedOut { .. } => "opted_out",
        }
    }

    /// Agents work the phone before the site takes over (and book appointments on a site's
    /// behalf); site staff record what happens at their site; admins record anything.
    const fn recorders(&self) -> Recorders {
        let (agent, site) = match self {
            Self::PrescreenCompleted { .. }
            | Self::ContactAttempted { .. }
            | Self::CallbackRequested { .. }
            | Self::ReferredToSite { .. }
            | Self::Reallocated { .. }
            | Self::Disqualified { .. }
            | Self::NotInterested { .. }
            | Self::Unreachable { .. }
            | Self::OptedOut { .. } => (true, false),
            Self::AppointmentScheduled { .. } | Self::AppointmentRescheduled { .. } => (true, true),
            Self::Withdrawn { .. } => (true, true),
            Self::SiteContacted { .. }
            | Self::AppointmentAttended { .. }
            | Self::NoShow { .. }
            | Self::Consented { .. }
            | Self::ScreeningStarted { .. }
            | Self::ScreenFailed { .. }
            | Self::Randomized { .. } => (false, true),
        };
        Recorders { agent, site }
    }

    const fn at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::PrescreenCompleted { at, .. }
            | Self::ContactAttempted { at, .. }
            | Self::CallbackRequested { at, .. }
            | Self::ReferredToSite { at, .. }
            | Self::Reallocated { at, .. }
            | Self::SiteContacted { at }
            | Self::AppointmentScheduled { at, .. }
            | Self::AppointmentRescheduled { at, .. }
            | Self::AppointmentAttended { at }
            | Self::NoShow { at }
            | Self::Consented { at }
            | Self::ScreeningStarted { at }
            | Self::ScreenFailed { at, .. }
            | Self::Randomized { at, .. }
            | Self::Withdrawn { at, .. }
            | Self::Disqualified { at, .. }
            | Self::NotInterested { at, .. }
            | Self::Unreachable { at }
            | Self::OptedOut { at } => *at,
        }
    }

    /// The site a referral or reallocation sends the candidate to.
    fn target_site(&self) -> Option<SiteId> {
        match self {
            Self::ReferredToSite { site_id, .. } => Some(SiteId::from(*site_id)),
            Self::Reallocated { to_site, .. } => Some(SiteId::from(*to_site)),
            _ => None,
        }
    }

    /// The domain command, with `at` resolved and defaults taken from the journey.
    fn to_command(
        &self,
        at: DateTime<Utc>,
        journey: &Journey,
        principal: &Principal,
    ) -> Result<JourneyCommand, ApiError> {
        use JourneyCommand as C;
        Ok(match self {
            Self::PrescreenCompleted {
                passed, reasons, ..
            } => C::CompletePrescreen {
                at,
                passed: *passed,
                reasons: reasons.clone(),
            },
            Self::ContactAttempted {
                channel,
                outcome,
                agent_id,
                ..
            } => C::RecordContactAttempt {
                at,
                channel: (*channel).into(),
                outcome: (*outcome).into(),
                agent: contact_agent(*agent_id, principal)?,
            },
            Self::CallbackRequested {
                callback_at,
                time_zone,
                ..
            } => C::RequestCallback {
                at,
                callback_at: *callback_at,
                time_zone: time_zone
                    .clone()
                    .or_else(|| journey.time_zone.clone())
                    .ok_or_else(|| {
                        ApiError::Unprocessable(
                            "time_zone is required: the referral did not give one".to_owned(),
                        )
                    })?,
            },
            Self::ReferredToSite { site_id, .. } => C::ReferToSite {
                at,
                site_id: SiteId::from(*site_id),
            },
            Self::Reallocated {
                to_site, reason, ..
            } => C::Reallocate {
                at,
                to_site: SiteId::from(*to_site),
                reason: reason.clone(),
            },
            Self::SiteContacted { .. } => C::RecordSiteContact { at },
            Self::AppointmentScheduled { appointment_at, .. } => C::ScheduleAppointment {
                at,
                appointment_at: *appointment_at,
            },
            Self::AppointmentRescheduled { appointment_at, .. } => C::RescheduleAppointment {
                at,
                appointment_at: *appointment_at,
            },
            Self::AppointmentAttended { .. } => C::RecordAttendance { at },
            Self::NoShow { .. } => C::RecordNoShow { at },
            Self::Consented { .. } => C::RecordConsent { at },
            Self::ScreeningStarted { .. } => C::StartScreening { at },
            Self::ScreenFailed { reason, .. } => C::RecordScreenFailure {
                at,
                reason: reason.clone(),
            },
            Self::Randomized { arm, .. } => C::Randomize {
                at,
                arm: arm.clone(),
            },
            Self::Withdrawn { reason, .. } => C::Withdraw {
                at,
                reason: reason.clone(),
            },
            Self::Disqualified { reason, .. } => C::Disqualify {
                at,
                reason: reason.clone(),
            },
            Self::NotInterested { reason, .. } => C::RecordNotInterested {
                at,
                reason: reason.clone(),
            },
            Self::Unreachable { .. } => C::MarkUnreachable { at },
            Self::OptedOut { .. } => C::OptOut { at },
        })
    }
}

/// The agent a contact attempt is recorded for: an agent token records its own attempts.
fn contact_agent(given: Option<Uuid>, principal: &Principal) -> Result<Option<AgentId>, ApiError> {
    let given = given.map(AgentId::from);
    match (principal.role, given, principal.agent_id) {
        (Role::Agent, Some(given), Some(own)) if given != own => Err(ApiError::Forbidden(
            "an agent records its own contact attempts, not another agent's".to_owned(),
        )),
        (Role::Agent, _, own) => Ok(own),
        (_, given, _) => Ok(given),
    }
}

/// What a recorded step appended and where the journey stands now.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct JourneyChange {
    journey_id: Uuid,
    /// The journey's version after the step; send it back as `If-Match`.
    version: u64,
    /// The events appended, in order, each with its `type`.
    events: Vec<AppendedEvent>,
    /// The journey's stage after the step.
    #[schema(example = "contacting")]
    stage: String,
    /// HL7 FHIR R5 `ResearchSubject.progress.subjectState` after the step.
    #[schema(example = "candidate")]
    fhir_subject_state: String,
}

/// The candidate's contact data, for agents and admins. `{"erased": true}` once erased.
#[derive(Debug, Serialize, ToSchema)]
struct JourneyContact {
    erased: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notes: Option<String>,
}

impl JourneyContact {
    const ERASED: Self = Self {
        erased: true,
        name: None,
        phone: None,
        email: None,
        notes: None,
    };
}

#[derive(Debug, Serialize, ToSchema)]
struct JourneyCallback {
    requested_at: DateTime<Utc>,
    callback_at: DateTime<Utc>,
    time_zone: String,
}

/// A candidate's journey in one study as of its current version.
#[derive(Debug, Serialize, ToSchema)]
struct JourneyView {
    journey_id: Uuid,
    study_id: Uuid,
    candidate_id: Uuid,
    campaign_id: Uuid,
    #[schema(example = "ads")]
    source: String,
    #[schema(example = "referred_to_site")]
    stage: String,
    stage_entered_at: DateTime<Utc>,
    /// HL7 FHIR R5 `ResearchSubject.progress.subjectState`.
    #[schema(example = "candidate")]
    fhir_subject_state: String,
    #[schema(example = "es")]
    language: String,
    #[schema(example = "ES")]
    country: String,
    time_zone: Option<String>,
    referred_at: DateTime<Utc>,
    consent_to_contact: bool,
    preferred_site: Option<Uuid>,
    /// The site currently handling the candidate.
    site_id: Option<Uuid>,
    appointment_at: Option<DateTime<Utc>>,
    prescreen_passed: Option<bool>,
    /// Every contact attempt ever made.
    contact_attempts: u32,
    /// Unanswered attempts in the current cadence.
    unanswered_attempts: u32,
    first_contact_attempt_at: Option<DateTime<Utc>>,
    last_reached_at: Option<DateTime<Utc>>,
    /// The pending call-back, if any.
    callback: Option<JourneyCallback>,
    no_shows: u32,
    consented_at: Option<DateTime<Utc>>,
    randomized_at: Option<DateTime<Utc>>,
    closed_reason: Option<String>,
    duplicate_of: Option<Uuid>,
    /// The candidate's personal data has been erased (the funnel facts stay).
    erased: bool,
    /// The journey's version (also the `ETag`).
    version: u64,
    /// The campaign's own reference for the referral (admins and agents only; gone once erased).
    #[serde(skip_serializing_if = "Option::is_none")]
    external_ref: Option<String>,
    /// The contact data (admins, agents, and the staff of the site the journey is at).
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<JourneyContact>,
}

impl JourneyView {
    fn new(journey: &Journey, version: u64) -> Self {
        Self {
            journey_id: *journey.journey_id.as_uuid(),
            study_id: *journey.study_id.as_uuid(),
            candidate_id: *journey.candidate_id.as_uuid(),
            campaign_id: *journey.campaign_id.as_uuid(),
            source: journey.source.as_str().to_owned(),
            stage: journey.stage.as_str().to_owned(),
            stage_entered_at: journey.stage_entered_at,
            fhir_subject_state: journey.fhir_subject_state().code().to_owned(),
            language: journey.language.to_string(),
            country: journey.country.to_string(),
            time_zone: journey.time_zone.clone(),
            referred_at: journey.referred_at,
            consent_to_contact: journey.consent_to_contact,
            preferred_site: journey.preferred_site.map(Uuid::from),
            site_id: journey.site_id.map(Uuid::from),
            appointment_at: journey.appointment_at,
            prescreen_passed: journey.prescreen_passed,
            contact_attempts: journey.contact_attempts,
            unanswered_attempts: journey.unanswered_attempts,
            first_contact_attempt_at: journey.first_contact_attempt_at,
            last_reached_at: journey.last_reached_at,
            callback: journey.callback.as_ref().map(|callback| JourneyCallback {
                requested_at: callback.requested_at,
                callback_at: callback.callback_at,
                time_zone: callback.time_zone.clone(),
            }),
            no_shows: journey.no_shows,
            consented_at: journey.consented_at,
            randomized_at: journey.randomized_at,
            closed_reason: journey.closed_reason.clone(),
            duplicate_of: journey.duplicate_of.map(Uuid::from),
            erased: journey.erased,
            version,
            external_ref: None,
            contact: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

fn journey_id(path: Result<Path<Uuid>, PathRejection>) -> Result<JourneyId, ApiError> {
    path.map(|Path(id)| JourneyId::from(id))
        .map_err(|rejection| path_rejection(&rejection))
}

fn not_found(id: JourneyId) -> ApiError {
    ApiError::NotFound(format!("no journey {id}"))
}

/// Read a journey: its stage, site, appointment, contact attempts and call-back.
///
/// Agents of the journey's study and language, the staff of the site it is at, and admins; all
/// of them get the candidate's contact data, decrypted (`{"erased": true}` once erased): the
/// site calls the patients referred to it.
#[utoipa::path(get, path = "/v1/journeys/{journey_id}", tag = "journeys",
    security(("bearer" = [])),
    params(("journey_id" = Uuid, Path, description = "The journey")),
    responses(
        (status = OK, description = "The journey", body = JourneyView,
            headers(("ETag" = String, description = "The journey's version"))),
        (status = BAD_REQUEST, description = "The journey id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The token has no access to this journey", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such journey", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_journey(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = journey_id(path)?;
    // One read serves both the state and the sealed contact in the referral (the first event).
    let recorded = state
        .events
        .read(&journey_key(id))
        .await
        .map_err(|error| ApiError::from(CommandError::from(error)))?;
    let mut journey_state = JourneyState::NotStarted;
    let mut sealed = None;
    for event in &recorded {
        let event = match decode_recorded(event).map_err(CommandError::from)? {
            DomainEvent::Journey(event) => event,
            DomainEvent::Study(_) => {
                return Err(CommandError::WrongAggregate(event.event_type.clone()).into());
            }
        };
        if let JourneyEvent::ReferralReceived(referral) = &event {
            sealed.get_or_insert_with(|| referral.contact.clone());
        }
        journey_state = funnel_domain::evolve(journey_state, &event);
    }
    let (JourneyState::Started(journey), Some(version)) =
        (&journey_state, recorded.last().map(|event| event.seq))
    else {
        return Err(not_found(id));
    };
    principal.require_journey_access(journey)?;
    let mut view = JourneyView::new(journey, version);
    // `require_journey_access` above has checked the site staff's site.
    if matches!(principal.role, Role::Admin | Role::Agent | Role::Site) {
        view.external_ref.clone_from(&journey.external_ref);
        view.contact = Some(if journey.erased {
            JourneyContact::ERASED
        } else if let Some(sealed) = sealed {
            match state.keys.open(journey.candidate_id, &sealed).await {
                Ok(Opened::Contact(contact)) => JourneyContact {
                    erased: false,
                    name: Some(contact.name),
                    phone: contact.phone,
                    email: contact.email,
                    notes: contact.notes,
                },
                Ok(Opened::Erased) => JourneyContact::ERASED,
                Err(error) => return Err(ApiError::internal(error)),
            }
        } else {
            JourneyContact::ERASED
        });
    }
    Ok((StatusCode::OK, [etag(version)], Json(view)).into_response())
}

/// Record a step of the funnel: a tagged command such as `{"type": "contact_attempted", ...}`.
///
/// The step is decided against the journey's current state: an illegal transition is a 409
/// naming the current stage, a stale `If-Match` a 412, and nothing is appended on any error.
/// Agents (their studies and languages) record the steps before the site, and book
/// appointments on a site's behalf; site staff record the steps at their own site; admins
/// record anything. Referring or reallocating needs an active site of the study.
#[utoipa::path(post, path = "/v1/journeys/{journey_id}/events", tag = "journeys",
    security(("bearer" = [])),
    params(("journey_id" = Uuid, Path, description = "The journey"),
        ("If-Match" = Option<String>, Header, description = "Expected journey version (its ETag)")),
    request_body = JourneyStep,
    responses(
        (status = CREATED, description = "Step recorded", body = JourneyChange,
            headers(("ETag" = String, description = "The journey's new version"))),
        (status = BAD_REQUEST, description = "Malformed JSON, header or path", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The token may not record this step for this journey", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such journey", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "Not allowed in the journey's current stage (named in the detail), or the journey is closed", body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown type or field, missing field, invalid value, `at` in the future, site not taking referrals", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn record_event(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    IfMatch(if_match): IfMatch,
    body: Result<ApiJson<JourneyStep>, ApiError>,
) -> Result<Response, ApiError> {
    let id = journey_id(path)?;
    let loaded = state.commands.load_journey(id).await?;
    // Who may touch the journey at all comes before what the body says.
    principal.require_journey_access(started(&loaded, id)?.0)?;
    let ApiJson(step) = body?;
    let (body, version) =
        record_step(&state, &principal, id, if_match, loaded, &step, None).await?;
    Ok((StatusCode::CREATED, [etag(version)], Json(body)).into_response())
}

/// Authorises and records one step of a journey already loaded and found accessible. Shared by
/// the native route and CloudEvents input, which names the event's id (`event_id`) so that a
/// redelivery is recognised.
pub(super) async fn record_step(
    state: &AppState,
    principal: &Principal,
    id: JourneyId,
    if_match: Option<u64>,
    mut loaded: Loaded<JourneyState>,
    step: &JourneyStep,
    event_id: Option<Uuid>,
) -> Result<(JourneyChange, u64), ApiError> {
    let now = state.clock.now();
    for _ in 0..=RACE_RETRIES {
        let (journey, version) = started(&loaded, id)?;
        principal.require_journey_access(journey)?;
        let command = authorised_command(state, principal, journey, step, now).await?;
        // Decide against exactly the state just authorised: without If-Match, a journey that
        // changed in between is loaded, authorised and decided again.
        match state
            .commands
            .execute_journey_with_id(id, Some(if_match.unwrap_or(version)), &command, event_id)
            .await
        {
            Ok(executed) => {
                let after = executed
                    .events
                    .iter()
                    .fold(loaded.state.clone(), funnel_domain::evolve);
                let journey = after.journey().unwrap_or(journey);
                let body = JourneyChange {
                    journey_id: *id.as_uuid(),
                    version: executed.version,
                    events: executed
                        .events
                        .iter()
                        .map(|event| {
                            let encoded = funnel_domain::encode_journey(event);
                            AppendedEvent::new(encoded.event_type, encoded.data)
                        })
                        .collect(),
                    stage: journey.stage.as_str().to_owned(),
                    fhir_subject_state: journey.fhir_subject_state().code().to_owned(),
                };
                return Ok((body, executed.version));
            }
            Err(CommandError::StaleVersion { .. }) if if_match.is_none() => {
                loaded = state.commands.load_journey(id).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(CommandError::Contended.into())
}

/// The started journey and its version, or 404.
pub(super) fn started(
    loaded: &Loaded<JourneyState>,
    id: JourneyId,
) -> Result<(&Journey, u64), ApiError> {
    match (&loaded.state, loaded.version) {
        (JourneyState::Started(journey), Some(version)) => Ok((journey, version)),
        _ => Err(not_found(id)),
    }
}

/// Checks that the caller may record `step` for `journey`, that its time is plausible and that
/// a target site takes referrals, and builds the domain command.
async fn authorised_command(
    state: &AppState,
    principal: &Principal,
    journey: &Journey,
    step: &JourneyStep,
    now: DateTime<Utc>,
) -> Result<JourneyCommand, ApiError> {
    let recorders = step.recorders();
    let allowed = match principal.role {
        Role::Admin => true,
        Role::Agent => recorders.agent,
        Role::Site => recorders.site,
        Role::Campaign | Role::Sponsor => false,
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "a `{}` token may not record `{}`",
            principal.role,
            step.name()
        )));
    }
    let at = step.at().unwrap_or(now);
    if at > now + MAX_FUTURE_SKEW {
        return Err(ApiError::Unprocessable(format!(
            "`at` ({}) lies in the future; steps are recorded when they have happened",
            at.to_rfc3339()
        )));
    }
    if let Some(site) = step.target_site() {
        let study = state.commands.load_study(journey.study_id).await?;
        if !study.state.site_accepts_referrals(site) {
            return Err(ApiError::Unprocessable(
                match study.state.site_status(site) {
                    Some(status) => format!("site {site} is {status} and takes no referrals"),
                    None => format!("site {site} is not part of study {}", journey.study_id),
                },
            ));
        }
    }
    step.to_command(at, journey, principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_from_tagged_json_and_refuse_unknown_fields() {
        let step: JourneyStep = serde_json::from_str(
            r#"{"type": "contact_attempted", "channel": "phone", "outcome": "no_answer"}"#,
        )
        .unwrap();
        assert_eq!(step.name(), "contact_attempted");
        assert!(step.at().is_none());
        assert!(
            serde_json::from_str::<JourneyStep>(r#"{"type": "consented", "colour": "blue"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<JourneyStep>(r#"{"type": "teleported"}"#).is_err());
        assert!(serde_json::from_str::<JourneyStep>(r#"{"type": "screen_failed"}"#).is_err());
        let error = serde_json::from_str::<JourneyStep>(r#"{"type": "no_show", "at": "noon"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("`at` must be an RFC 3339 time"), "{error}");
        let step: JourneyStep = serde_json::from_str(r#"{"type": "no_show", "at": null}"#).unwrap();
        assert!(step.at().is_none());
    }

    #[test]
    fn every_step_has_a_recorder_and_stage_names_match_event_names() {
        let site_only = serde_json::from_str::<JourneyStep>(r#"{"type": "randomized"}"#).unwrap();
        assert_eq!(
            site_only.recorders(),
            Recorders {
                agent: false,
                site: true
            }
        );
        let agent_only = serde_json::from_str::<JourneyStep>(r#"{"type": "opted_out"}"#).unwrap();
        assert_eq!(
            agent_only.recorders(),
            Recorders {
                agent: true,
                site: false
            }
        );
        assert_eq!(funnel_domain::Stage::OptedOut.as_str(), agent_only.name());
    }
}
