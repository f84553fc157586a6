//! `POST /v1/cloudevents`: partner systems send what happened as CloudEvents 1.0 (structured,
//! batched or binary HTTP mode) instead of the native JSON. The data of each event is the same
//! JSON the native route takes, so both paths share validation, authorisation and decisions.
//!
//! Redelivery is safe: a referral's idempotency key and a journey event's id are derived from
//! the CloudEvent's `source` and `id`, so the same event sent twice is recorded once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use funnel_domain::JourneyId;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::journeys::{JourneyStep, record_step, started};
use crate::app::AppState;
use crate::auth::Principal;
use crate::cloudevents::{self, IncomingEvent, Mode};
use crate::commands::journey_key;
use crate::ingest::{Ingest, ReferralRequest};
use crate::problem::{ApiError, Problem};

/// The CloudEvents type of a referral; its data is a referral as `POST /v1/referrals` takes it.
const REFERRAL_TYPE: &str = "funnel.referral.submitted.v1";
/// Journey events are `funnel.journey.<step>.v1`, `<step>` being a `type` of
/// `POST /v1/journeys/{journey_id}/events`, with the journey id as `subject`.
const JOURNEY_PREFIX: &str = "funnel.journey.";
const JOURNEY_SUFFIX: &str = ".v1";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_cloudevents))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// Recorded now.
    Accepted,
    /// Recorded by an earlier delivery of the same event.
    Replayed,
    /// Refused; `error` says why.
    Rejected,
}

/// What became of one CloudEvent.
#[derive(Debug, Serialize, ToSchema)]
struct CloudEventResult {
    id: String,
    source: String,
    status: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    journey_id: Option<Uuid>,
    /// The journey's version after the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Problem>,
}

/// The results of a batched-mode request, in the order sent.
#[derive(Debug, Serialize, ToSchema)]
struct CloudEventResults {
    results: Vec<CloudEventResult>,
}

/// A 200 answers either a redelivered single event or a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum CloudEventsAnswer {
    /// Structured or binary mode: the one event, recorded by an earlier delivery.
    One(CloudEventResult),
    /// Batched mode: one result per event, in order.
    Many(CloudEventResults),
}

/// Accept CloudEvents 1.0 from partner systems.
///
/// Structured mode (`application/cloudevents+json`), batched mode
/// (`application/cloudevents-batch+json`, up to 1,000 events) or binary mode (`ce-*` headers with
/// `application/json` data). Types: `funnel.referral.submitted.v1` (data: a referral as
/// `POST /v1/referrals` takes it; the event's `source` and `id` make its idempotency key) and
/// `funnel.journey.<step>.v1` (data: the fields of that step of
/// `POST /v1/journeys/{journey_id}/events` without `type`; `subject`: the journey id; `time` is
/// the step's `at` when the data has none). The same event delivered again is recorded once.
#[utoipa::path(post, path = "/v1/cloudevents", tag = "referrals",
    security(("bearer" = [])),
    request_body(content(
        (IncomingEvent = "application/cloudevents+json"),
        (Vec<IncomingEvent> = "application/cloudevents-batch+json"),
        (Object = "application/json"),
    ), description = "One CloudEvent (structured), a batch, or the data of one (binary mode, with ce-* headers)"),
    responses(
        (status = CREATED, description = "The event was recorded", body = CloudEventResult),
        (status = OK, description = "A redelivery of a recorded event, or the results of a batch", body = CloudEventsAnswer),
        (status = BAD_REQUEST, description = "Not JSON or a malformed header", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The token may not record this event", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such journey", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "Not allowed in the journey's current stage, or the key was used for another event", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Not a CloudEvents HTTP mode", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Not a valid CloudEvent, an unknown type, or invalid data", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "The token's request budget is spent", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering; resending is safe", body = Problem, content_type = "application/problem+json"),
    ))]
async fn post_cloudevents(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("the request body is larger than allowed".to_owned())
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let (mode, events) = cloudevents::parse(&headers, &body)?;
    // Run to completion even if the caller goes away, so a redelivery finds the work done.
    let task = tokio::spawn(async move {
        let ingest = Ingest::new(state.clone());
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let outcome = record(&state, &ingest, &principal, &event).await;
            results.push((event, outcome));
        }
        results
    });
    let mut results = task.await.map_err(ApiError::internal)?;
    if mode != Mode::Batched
        && let Some((event, outcome)) = results.pop()
    {
        let (status, journey, version) = outcome?;
        let answer = result(&event, status, journey, version);
        return Ok(if status == Outcome::Accepted {
            (StatusCode::CREATED, Json(answer)).into_response()
        } else {
            Json(CloudEventsAnswer::One(answer)).into_response()
        });
    }
    let results = results
        .into_iter()
        .map(|(event, outcome)| match outcome {
            Ok((status, journey, version)) => result(&event, status, journey, version),
            Err(error) => CloudEventResult {
                error: Some(error.to_problem()),
                ..result(&event, Outcome::Rejected, None, None)
            },
        })
        .collect();
    Ok(Json(CloudEventsAnswer::Many(CloudEventResults { results })).into_response())
}

fn result(
    event: &IncomingEvent,
    status: Outcome,
    journey: Option<JourneyId>,
    version: Option<u64>,
) -> CloudEventResult {
    CloudEventResult {
        id: event.id.clone(),
        source: event.source.clone(),
        status,
        journey_id: journey.map(Uuid::from),
        version,
        error: None,
    }
}

type Recorded = (Outcome, Option<JourneyId>, Option<u64>);

async fn record(
    state: &AppState,
    ingest: &Ingest,
    principal: &Principal,
    event: &IncomingEvent,
) -> Result<Recorded, ApiError> {
    let identity = delivery_identity(event);
    if event.event_type == REFERRAL_TYPE {
        let request: ReferralRequest = serde_json::from_value(event.data.clone())
            .map_err(|err| ApiError::Unprocessable(format!("data of {REFERRAL_TYPE}: {err}")))?;
        let key = format!("ce:{}", hex(&identity[..20]));
        let ingested = ingest.referral(principal, request, Some(&key)).await?;
        let status = if ingested.replayed {
            Outcome::Replayed
        } else {
            Outcome::Accepted
        };
        return Ok((status, Some(ingested.journey_id), Some(ingested.version)));
    }
    let Some(step_name) = event
        .event_type
        .strip_prefix(JOURNEY_PREFIX)
        .and_then(|rest| rest.strip_suffix(JOURNEY_SUFFIX))
    else {
        return Err(ApiError::Unprocessable(format!(
            "unknown CloudEvents type `{}`: send {REFERRAL_TYPE} or funnel.journey.<step>.v1",
            event.event_type
        )));
    };
    let journey: JourneyId = event
        .subject
        .as_deref()
        .ok_or_else(|| {
            ApiError::Unprocessable("a journey event needs the journey id as `subject`".to_owned())
        })?
        .parse()
        .map_err(|_| {
            ApiError::Unprocessable("`subject` must be a journey id (a UUID)".to_owned())
        })?;
    let step = journey_step(step_name, event)?;
    let event_id =
        uuid::Builder::from_custom_bytes(identity[..16].try_into().expect("16 bytes")).into_uuid();

    let recorded = state
        .events
        .read(&journey_key(journey))
        .await
        .map_err(ApiError::internal)?;
    let loaded = state.commands.load_journey(journey).await?;
    let (current, version) = started(&loaded, journey)?;
    principal.require_journey_access(current)?;
    if recorded.iter().any(|stored| stored.id == event_id) {
        return Ok((Outcome::Replayed, Some(journey), Some(version)));
    }
    let (_, version) = record_step(
        state,
        principal,
        journey,
        None,
        loaded,
        &step,
        Some(event_id),
    )
    .await?;
    Ok((Outcome::Accepted, Some(journey), Some(version)))
}

/// The step as the native route would receive it: the data plus its `type`, and the event's
/// `time` as `at` when the data names none.
fn journey_step(step: &str, event: &IncomingEvent) -> Result<JourneyStep, ApiError> {
    let mut data = match &event.data {
        Value::Object(fields) => fields.clone(),
        Value::Null => serde_json::Map::new(),
        _ => {
            return Err(ApiError::Unprocessable(
                "the data of a journey event must be a JSON object".to_owned(),
            ));
        }
    };
    if data.contains_key("type") {
        return Err(ApiError::Unprocessable(
            "the step comes from the CloudEvents type; data must not name a `type`".to_owned(),
        ));
    }
    data.insert("type".to_owned(), Value::String(step.to_owned()));
    if let Some(time) = event.time
        && !data.contains_key("at")
    {
        data.insert("at".to_owned(), Value::String(time.to_rfc3339()));
    }
    serde_json::from_value(Value::Object(data))
        .map_err(|err| ApiError::Unprocessable(format!("{}: {err}", event.event_type)))
}

/// A digest of `source` and `id`, which CloudEvents makes unique per event.
fn delivery_identity(event: &IncomingEvent) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"funnel.cloudevent\0");
    hash.update(event.source.as_bytes());
    hash.update([0]);
    hash.update(event.id.as_bytes());
    hash.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
