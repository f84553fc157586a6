//! A candidate's timeline: the whole history of one journey, read from the stream (the source of
//! truth), each event in a readable form with the stage it led to.
//!
//! Personal data stays behind the same line as everywhere else: the sealed contact in the
//! referral is opened only for callers who may see it, shows as erased once the candidate's key
//! is gone, and is never shown to sponsors, who get the pseudonymised history.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use funnel_domain::{
    CandidateId, DomainEvent, Journey, JourneyEvent, JourneyId, JourneyState, SealedContact,
    StudyState,
};
use funnel_eventlog::RecordedEvent;
use funnel_privacy::Opened;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::setup::path_rejection;
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::commands::{CommandError, decode_recorded, journey_key};
use crate::extract::etag;
use crate::problem::{ApiError, Problem};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_timeline))
}

/// What the caller may see of the candidate as a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Admins, the study's agents in the journey's language, the staff of the journey's site:
    /// the contact data (until erased) and the campaign's reference.
    Personal,
    /// The study's sponsor: the funnel facts under the candidate's pseudonymous id, nothing that
    /// identifies the person.
    Pseudonymised,
}

/// The candidate's contact data as of now: decrypted, or `{"erased": true, "erased_at": ...}`
/// once the candidate's key is gone.
#[derive(Debug, Serialize, ToSchema)]
struct TimelineContact {
    erased: bool,
    /// When the personal data was erased (only when `erased`).
    #[serde(skip_serializing_if = "Option::is_none")]
    erased_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    /// Free text the campaign sent with the referral.
    #[serde(skip_serializing_if = "Option::is_none")]
    notes: Option<String>,
}

impl TimelineContact {
    const fn erased(erased_at: Option<DateTime<Utc>>) -> Self {
        Self {
            erased: true,
            erased_at,
            name: None,
            phone: None,
            email: None,
            notes: None,
        }
    }
}

/// One event of the journey.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TimelineEntry {
    /// The event's position in the stream: entries are in this order, and the last one is the
    /// journey's version.
    pub(crate) sequence: u64,
    /// The event type, short (`contact_attempted`).
    #[serde(rename = "type")]
    #[schema(example = "contact_attempted")]
    pub(crate) kind: String,
    /// The CloudEvents `type` it is stored with (`funnel.journey.contact_attempted.v1`).
    #[schema(example = "funnel.journey.contact_attempted.v1")]
    pub(crate) cloud_event_type: String,
    /// When it happened (business time).
    pub(crate) at: DateTime<Utc>,
    /// When it was appended to the stream.
    pub(crate) recorded_at: DateTime<Utc>,
    /// The journey's stage after this event.
    #[schema(example = "contacting")]
    pub(crate) stage: String,
    /// HL7 FHIR R5 `ResearchSubject.progress.subjectState` after this event.
    #[schema(example = "candidate")]
    pub(crate) fhir_subject_state: String,
    /// The event's own fields (its current schema version; `at` is above). In the referral,
    /// `contact` is the decrypted contact data, or `{"erased": true, ...}`; for sponsors it and
    /// `external_ref` are left out.
    #[schema(value_type = Object, example = json!({"channel": "phone", "outcome": "no_answer",
        "agent": "0195f3a2-7c1e-7d1a-9b7e-3f2a1c0d4e5f"}))]
    pub(crate) data: Map<String, Value>,
}

/// A journey's history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Timeline {
    pub(crate) journey_id: Uuid,
    pub(crate) study_id: Uuid,
    /// The candidate's pseudonymous id.
    pub(crate) candidate_id: Uuid,
    /// The journey's current stage.
    #[schema(example = "referred_to_site")]
    pub(crate) stage: String,
    /// The candidate's personal data has been erased (the funnel facts stay).
    pub(crate) erased: bool,
    /// The journey's version (also the `ETag`): the sequence of the last entry.
    pub(crate) version: u64,
    pub(crate) entries: Vec<TimelineEntry>,
}

/// A journey's events decoded, each with the state it led to.
struct History {
    entries: Vec<(RecordedEvent, JourneyEvent, JourneyState)>,
    sealed: Option<SealedContact>,
    erased_at: Option<DateTime<Utc>>,
}

impl History {
    fn current(&self) -> Option<(&Journey, u64)> {
        let (recorded, _, state) = self.entries.last()?;
        Some((state.journey()?, recorded.seq))
    }
}

async fn read_history(state: &AppState, id: JourneyId) -> Result<History, ApiError> {
    let recorded = state
        .events
        .read(&journey_key(id))
        .await
        .map_err(|error| ApiError::from(CommandError::from(error)))?;
    let mut journey_state = JourneyState::NotStarted;
    let mut history = History {
        entries: Vec::with_capacity(recorded.len()),
        sealed: None,
        erased_at: None,
    };
    for event in recorded {
        let decoded = match decode_recorded(&event).map_err(CommandError::from)? {
            DomainEvent::Journey(decoded) => decoded,
            DomainEvent::Study(_) => {
                return Err(CommandError::WrongAggregate(event.event_type.clone()).into());
            }
        };
        match &decoded {
            JourneyEvent::ReferralReceived(referral) => {
                history
                    .sealed
                    .get_or_insert_with(|| referral.contact.clone());
            }
            JourneyEvent::PersonalDataErased(erased) => {
                history.erased_at.get_or_insert(erased.at);
            }
            _ => {}
        }
        journey_state = funnel_domain::evolve(journey_state, &decoded);
        history
            .entries
            .push((event, decoded, journey_state.clone()));
    }
    Ok(history)
}

/// Who may read the timeline: whoever may see the journey (admins, the study's agents in its
/// language, its site's staff) in full, and the study's sponsor pseudonymised.
async fn audience(
    state: &AppState,
    principal: &Principal,
    journey: &Journey,
) -> Result<Audience, ApiError> {
    if principal.role != Role::Sponsor {
        principal.require_journey_access(journey)?;
        return Ok(Audience::Personal);
    }
    let study = state.commands.load_study(journey.study_id).await?;
    match study.state {
        StudyState::Created(study) if principal.sponsor_id == Some(study.sponsor_id) => {
            Ok(Audience::Pseudonymised)
        }
        _ => Err(ApiError::Forbidden(
            "this token has no access to that journey".to_owned(),
        )),
    }
}

/// Opens the referral's contact data for a caller who may see it.
async fn open_contact(
    state: &AppState,
    candidate: CandidateId,
    history: &History,
    journey: &Journey,
) -> Result<TimelineContact, ApiError> {
    // Once erasure is on the stream the data is not opened even if the key were still there:
    // the event is the journey's own record that the candidate asked to be forgotten.
    if journey.erased {
        return Ok(TimelineContact::erased(history.erased_at));
    }
    let Some(sealed) = &history.sealed else {
        return Ok(TimelineContact::erased(None));
    };
    match state.keys.open(candidate, sealed).await {
        Ok(Opened::Contact(contact)) => Ok(TimelineContact {
            erased: false,
            erased_at: None,
            name: Some(contact.name),
            phone: contact.phone,
            email: contact.email,
            notes: contact.notes,
        }),
        // The key went first and the event is not (yet) on the stream: the key's own record
        // says when.
        Ok(Opened::Erased) => {
            let erased_at: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT erased_at FROM candidate_keys WHERE candidate_id = $1")
                    .bind(candidate.as_uuid())
                    .fetch_optional(&state.db)
                    .await?
                    .flatten();
            Ok(TimelineContact::erased(erased_at))
        }
        Err(error) => Err(ApiError::internal(error)),
    }
}

/// The event's fields as a caller may see them.
fn entry_data(
    event: &JourneyEvent,
    audience: Audience,
    contact: &mut Option<TimelineContact>,
    erased: bool,
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut data) = funnel_domain::encode_journey(event).data else {
        return Ok(Map::new());
    };
    data.remove("at");
    if matches!(event, JourneyEvent::ReferralReceived(_)) {
        // The sealed box is useless to every caller; it is replaced, never passed on.
        data.remove("contact");
        // The campaign's reference identifies the person in the campaign's own records.
        if audience == Audience::Pseudonymised || erased {
            data.remove("external_ref");
        }
        if let Some(contact) = contact.take() {
            data.insert(
                "contact".to_owned(),
                serde_json::to_value(contact).map_err(ApiError::internal)?,
            );
        }
    }
    Ok(data)
}

/// A journey's history: every event in stream order, with the stage it led to.
///
/// Read from the event stream, so it is complete and current the moment a step is recorded.
/// Admins, agents of the journey's study and language, and the staff of the site the journey is
/// at see the referral's contact data decrypted (`{"erased": true, "erased_at": ...}` once
/// erased). The study's sponsor sees the same history pseudonymised: no contact data, no
/// campaign reference.
#[utoipa::path(get, path = "/v1/journeys/{journey_id}/timeline", tag = "journeys",
    security(("bearer" = [])),
    params(("journey_id" = Uuid, Path, description = "The journey")),
    responses(
        (status = OK, description = "The journey's history, oldest first", body = Timeline,
            headers(("ETag" = String, description = "The journey's version"))),
        (status = BAD_REQUEST, description = "The journey id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The token has no access to this journey", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such journey", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_timeline(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|rejection| path_rejection(&rejection))?;
    let timeline = timeline(&state, &principal, JourneyId::from(id)).await?;
    Ok((StatusCode::OK, [etag(timeline.version)], Json(timeline)).into_response())
}

/// A journey's history as `principal` may see it: the one place that decides who sees the
/// contact data (the API's timeline and the web's journey page).
pub(crate) async fn timeline(
    state: &AppState,
    principal: &Principal,
    id: JourneyId,
) -> Result<Timeline, ApiError> {
    let history = read_history(state, id).await?;
    let Some((journey, version)) = history.current() else {
        return Err(ApiError::NotFound(format!("no journey {id}")));
    };
    let audience = audience(state, principal, journey).await?;
    let mut contact = match audience {
        Audience::Personal => {
            Some(open_contact(state, journey.candidate_id, &history, journey).await?)
        }
        Audience::Pseudonymised => None,
    };
    // Erased by the stream's event or by the key alone: either way nothing personal is shown.
    let erased = journey.erased || contact.as_ref().is_some_and(|contact| contact.erased);
    let mut entries = Vec::with_capacity(history.entries.len());
    for (recorded, event, after) in &history.entries {
        let (stage, fhir) = after.journey().map_or_else(
            || (String::new(), String::new()),
            |after| {
                (
                    after.stage.as_str().to_owned(),
                    after.fhir_subject_state().code().to_owned(),
                )
            },
        );
        entries.push(TimelineEntry {
            sequence: recorded.seq,
            kind: event
                .event_type()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_owned(),
            cloud_event_type: recorded.event_type.clone(),
            at: event.at(),
            recorded_at: recorded.time,
            stage,
            fhir_subject_state: fhir,
            data: entry_data(event, audience, &mut contact, erased)?,
        });
    }
    let timeline = Timeline {
        journey_id: *id.as_uuid(),
        study_id: *journey.study_id.as_uuid(),
        candidate_id: *journey.candidate_id.as_uuid(),
        stage: journey.stage.as_str().to_owned(),
        erased: journey.erased,
        version,
        entries,
    };
    Ok(timeline)
}
