//! Referral ingest for campaigns: one referral, or a batch of up to 1,000 with a result per item.
//! The work is done in [`crate::ingest`]; here are HTTP shapes, status codes and headers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use funnel_domain::{CandidateId, JourneyId};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::extract::{ApiJson, etag};
use crate::ingest::{Ingest, Ingested, ReferralRequest, check_idempotency_key};
use crate::problem::{ApiError, Problem, error_chain};

/// Most referrals in one batch.
pub(crate) const MAX_BATCH: usize = 1_000;
/// Referrals of one batch in progress at once: they share PostgreSQL transactions and the
/// event log's atomic batches, so the more wait together the fewer commits they cost; a waiting
/// item holds no database connection.
const BATCH_CONCURRENCY: usize = 128;
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_referral))
        .routes(routes!(post_referral_batch))
}

/// Whether a referral started a journey of its own or was linked to the same person's earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ReferralStatus {
    /// A new journey.
    Created,
    /// A new journey, linked as a duplicate of `duplicate_of` (same phone or e-mail in this
    /// study) and closed; it is not counted twice.
    Duplicate,
}

/// The journey a referral created (or created earlier, on a replay).
#[derive(Debug, Serialize, ToSchema)]
struct ReferralAccepted {
    #[schema(value_type = uuid::Uuid)]
    journey_id: JourneyId,
    /// For a duplicate, the candidate of the primary journey: one person, one key.
    #[schema(value_type = uuid::Uuid)]
    candidate_id: CandidateId,
    status: ReferralStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    duplicate_of: Option<JourneyId>,
    /// The journey's version after the referral (as in `ETag`).
    version: u64,
}

impl From<&Ingested> for ReferralAccepted {
    fn from(ingested: &Ingested) -> Self {
        Self {
            journey_id: ingested.journey_id,
            candidate_id: ingested.candidate_id,
            status: if ingested.duplicate_of.is_some() {
                ReferralStatus::Duplicate
            } else {
                ReferralStatus::Created
            },
            duplicate_of: ingested.duplicate_of,
            version: ingested.version,
        }
    }
}

/// Posts one referral. Idempotent for good by `(campaign, external_id)` (or
/// `(campaign, Idempotency-Key)`): a retry at any later time returns the same journey with 200
/// and `Idempotent-Replayed: true`; the same key with a different referral is refused with 409.
/// Runs to completion even if the client goes away.
#[utoipa::path(post, path = "/v1/referrals", tag = "referrals",
    request_body = ReferralRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Idempotency key (at most 200 characters) when the referral has no external_id")),
    responses(
        (status = CREATED, description = "A journey was started (status `created`, or `duplicate` \
            when the same person was already referred to the study)", body = ReferralAccepted,
            headers(("Location" = String, description = "/v1/journeys/{journey_id}"),
                ("ETag" = String, description = "The journey's version"))),
        (status = OK, description = "A replay: this key was seen before; the original answer",
            body = ReferralAccepted,
            headers(("Location" = String, description = "/v1/journeys/{journey_id}"),
                ("ETag" = String, description = "The journey's version after the referral"),
                ("Idempotent-Replayed" = String, description = "`true`"))),
        (status = BAD_REQUEST, description = "Not JSON, or a bad Idempotency-Key",
            body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid token",
            body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not a campaign (or admin) token, or another \
            campaign's or study's referral", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The key was used for a different referral",
            body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "The body is too large",
            body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Not `application/json`",
            body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "A field is missing or invalid (named in \
            the detail), the study does not exist, the campaign is not registered for it, or the \
            preferred site is not one of its sites", body = Problem,
            content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit; see Retry-After",
            body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering; retrying \
            the same request is safe", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn post_referral(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ReferralRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    // Spawned: a client that disconnects does not cut the referral off half-way.
    let ingested = tokio::spawn(async move {
        Ingest::new(state)
            .referral(&principal, request, key.as_deref())
            .await
    })
    .await
    .map_err(ApiError::internal)??;
    let body = ReferralAccepted::from(&ingested);
    let status = if ingested.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let location = HeaderValue::from_str(&format!("/v1/journeys/{}", ingested.journey_id))
        .expect("a UUID path is a valid header");
    let mut response = (
        status,
        [(LOCATION, location), etag(ingested.version)],
        axum::Json(body),
    )
        .into_response();
    if ingested.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Up to 1,000 referrals, each in the shape of `POST /v1/referrals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReferralBatch {
    /// Items are checked one by one: a bad item is rejected in its result, the others go on.
    #[schema(value_type = Vec<ReferralRequest>, min_items = 1, max_items = 1000)]
    referrals: Vec<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum BatchItemStatus {
    Created,
    Duplicate,
    /// Seen before (same external id): the original journey, nothing new appended.
    Replayed,
    /// Refused; `error` says why. Nothing was appended for it.
    Rejected,
}

#[derive(Debug, Serialize, ToSchema)]
struct BatchItemResult {
    /// The item's position in `referrals`, from 0.
    index: usize,
    status: BatchItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    journey_id: Option<JourneyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    candidate_id: Option<CandidateId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    duplicate_of: Option<JourneyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Problem>,
}

impl BatchItemResult {
    fn from_outcome(index: usize, outcome: Result<Ingested, ApiError>) -> Self {
        match outcome {
            Ok(ingested) => Self {
                index,
                status: if ingested.replayed {
                    BatchItemStatus::Replayed
                } else if ingested.duplicate_of.is_some() {
                    BatchItemStatus::Duplicate
                } else {
                    BatchItemStatus::Created
                },
                journey_id: Some(ingested.journey_id),
                candidate_id: Some(ingested.candidate_id),
                duplicate_of: ingested.duplicate_of,
                version: Some(ingested.version),
                error: None,
            },
            Err(error) => {
                if let ApiError::Internal(source) = &error {
                    tracing::error!(index, error = %error_chain(source.as_ref()), "batch item failed");
                }
                Self {
                    index,
                    status: BatchItemStatus::Rejected,
                    journey_id: None,
                    candidate_id: None,
                    duplicate_of: None,
                    version: None,
                    error: Some(error.to_problem()),
                }
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct BatchResults {
    /// One result per referral, in input order.
    results: Vec<BatchItemResult>,
}

/// Posts up to 1,000 referrals at once; each is handled like `POST /v1/referrals` (idempotent by
/// its external id) and gets its own result, in input order. The batch runs to completion even
/// if the client disconnects, so a retry of the same batch finds every item done (replayed) or
/// finishes it: one journey per referral however often a batch is retried.
#[utoipa::path(post, path = "/v1/referrals/batch", tag = "referrals",
    request_body = ReferralBatch,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Key for items without external_id: item i gets `<key>/<i>`")),
    responses(
        (status = OK, description = "One result per item, in input order", body = BatchResults),
        (status = BAD_REQUEST, description = "Not JSON, or a bad Idempotency-Key",
            body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid token",
            body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not a campaign (or admin) token",
            body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "More than 1,000 referrals, or too large a body",
            body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Not `application/json`",
            body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "No `referrals` list, or an empty one",
            body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit; see Retry-After",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn post_referral_batch(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<ReferralBatch>,
) -> Result<axum::Json<BatchResults>, ApiError> {
    if !matches!(principal.role, Role::Campaign | Role::Admin) {
        return Err(ApiError::Forbidden(format!(
            "only campaign tokens post referrals; yours has the role `{}`",
            principal.role
        )));
    }
    let count = batch.referrals.len();
    if count > MAX_BATCH {
        return Err(ApiError::PayloadTooLarge(format!(
            "a batch holds at most {MAX_BATCH} referrals, not {count}; split it"
        )));
    }
    if count == 0 {
        return Err(ApiError::Unprocessable(
            "referrals: a batch needs at least one referral".to_owned(),
        ));
    }
    let key = idempotency_key(&headers)?;
    // Spawned and awaited: when the client disconnects, this handler is dropped but the batch
    // goes on to the end, so a retry finds everything done (or resumable).
    let results = tokio::spawn(async move {
        let ingest = Arc::new(Ingest::new(state));
        futures::stream::iter(batch.referrals.into_iter().enumerate())
            .map(|(index, item)| {
                let ingest = ingest.clone();
                let principal = principal.clone();
                let key = key.as_ref().map(|key| format!("{key}/{index}"));
                async move {
                    let outcome = match serde_json::from_value::<ReferralRequest>(item) {
                        Ok(request) => ingest.referral(&principal, request, key.as_deref()).await,
                        Err(err) => Err(ApiError::Unprocessable(format!(
                            "referrals[{index}]: {err}"
                        ))),
                    };
                    BatchItemResult::from_outcome(index, outcome)
                }
            })
            .buffered(BATCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(axum::Json(BatchResults { results }))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be ASCII".to_owned()))?
        .trim();
    check_idempotency_key(key)?;
    Ok(Some(key.to_owned()))
}
