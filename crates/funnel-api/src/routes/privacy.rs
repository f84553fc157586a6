//! Data-protection requests: the right to erasure, by crypto-shredding.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use funnel_domain::{CandidateId, DomainError, JourneyCommand, JourneyId};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::setup::path_rejection;
use crate::app::AppState;
use crate::auth::Principal;
use crate::commands::CommandError;
use crate::problem::{ApiError, Problem};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(erase_candidate))
}

/// What an erasure request did.
#[derive(Debug, Serialize, ToSchema)]
struct ErasureOutcome {
    candidate_id: Uuid,
    /// Journeys that got a `personal_data_erased` event in this request (none on a repeat).
    erased_journeys: Vec<Uuid>,
    /// The candidate's key had already been erased before this request.
    already_erased: bool,
}

fn sql_error(error: sqlx::Error) -> ApiError {
    ApiError::internal(error)
}

/// Erase a candidate's personal data (right to erasure).
///
/// Destroys the candidate's key, so every sealed copy of their contact data on the immutable
/// stream becomes unreadable; deletes their contact fingerprints (duplicate detection); and
/// appends `personal_data_erased` to each of their journeys. Stages and funnel counts stay.
/// Idempotent: a repeat answers 200 with nothing new.
#[utoipa::path(post, path = "/v1/candidates/{candidate_id}/erasure", tag = "privacy",
    security(("bearer" = [])),
    params(("candidate_id" = Uuid, Path, description = "The candidate")),
    responses(
        (status = OK, description = "The candidate's personal data is erased", body = ErasureOutcome),
        (status = BAD_REQUEST, description = "The candidate id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such candidate (no key and no journey)", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "A journey kept changing concurrently; repeating the request is safe", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering; repeating the request is safe", body = Problem, content_type = "application/problem+json"),
    ))]
async fn erase_candidate(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let Path(candidate_uuid) = path.map_err(|rejection| path_rejection(&rejection))?;
    let candidate = CandidateId::from(candidate_uuid);

    let journeys: Vec<Uuid> = sqlx::query_scalar(
        "SELECT journey_id FROM candidate_journeys WHERE candidate_id = $1
         ORDER BY created_at, journey_id",
    )
    .bind(candidate_uuid)
    .fetch_all(&state.db)
    .await
    .map_err(sql_error)?;
    let has_key: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM candidate_keys WHERE candidate_id = $1)")
            .bind(candidate_uuid)
            .fetch_one(&state.db)
            .await
            .map_err(sql_error)?;
    if journeys.is_empty() && !has_key {
        return Err(ApiError::NotFound(format!("no candidate {candidate}")));
    }

    // The key first: once it is gone the data is unreadable everywhere, whatever happens next.
    let newly_erased = state
        .keys
        .erase(candidate)
        .await
        .map_err(ApiError::internal)?;
    sqlx::query("DELETE FROM contact_fingerprints WHERE candidate_id = $1")
        .bind(candidate_uuid)
        .execute(&state.db)
        .await
        .map_err(sql_error)?;

    let at = state.clock.now();
    let mut erased_journeys = Vec::new();
    for journey in journeys {
        let command = JourneyCommand::ErasePersonalData { at };
        match state
            .commands
            .execute_journey(JourneyId::from(journey), None, &command)
            .await
        {
            Ok(_) => erased_journeys.push(journey),
            // Already erased by an earlier request, or a journey whose referral never made it
            // to the stream: nothing to record.
            Err(CommandError::Domain(DomainError::AlreadyErased | DomainError::NotStarted)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    tracing::info!(
        candidate_id = %candidate,
        journeys = erased_journeys.len(),
        newly_erased,
        "personal data erased"
    );
    Ok((
        StatusCode::OK,
        Json(ErasureOutcome {
            candidate_id: candidate_uuid,
            erased_journeys,
            already_erased: !newly_erased,
        }),
    )
        .into_response())
}
