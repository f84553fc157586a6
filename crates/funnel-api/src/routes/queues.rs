//! Enrollment Support Team work queues over HTTP: agents claim, extend, release and complete
//! work items; team leads (admin tokens) read queue depth and completions per agent.
//!
//! Lease semantics, for every item route: only the agent holding a live lease on the item may
//! act on it. Anything else that concerns the item's state is a **409** whose detail says which
//! case it is (the lease lapsed, and the item went back to the queue, whether or not another
//! agent has claimed it since; another agent holds it; the item is no longer open because the
//! journey moved on; it was already completed). 409 rather than 410: the item may well be
//! claimable again, and claiming is how the caller resolves each of these. An item that is
//! neither open nor leased is a 404; a token that is not an agent's is a 403.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use funnel_domain::{Country, JourneyId, StudyId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::journeys::started;
use super::setup::{AppendedEvent, path_rejection};
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::commands::{CommandError, Executed, Loaded};
use crate::extract::ApiJson;
use crate::problem::{ApiError, Problem};
use crate::queue::outcome::Outcome;
use crate::queue::{AgentScope, ClaimFilter, Completed, KINDS, Leased};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(claim))
        .routes(routes!(extend))
        .routes(routes!(release))
        .routes(routes!(complete))
        .routes(routes!(depth))
        .routes(routes!(agents))
}

/// How often a completion is decided again after another writer changed the journey between
/// loading it and appending.
const RACE_RETRIES: usize = 3;

/// The default range of the agents report when `from` is left out.
const DEFAULT_REPORT_RANGE: TimeDelta = TimeDelta::days(1);

// ---------------------------------------------------------------------------------------------
// Wire types.

/// Narrows a claim to some of the agent's own queues. Every parameter is optional.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ClaimParams {
    /// Only items of this kind: first_contact, next_attempt, callback, schedule, re_engage or
    /// site_escalation.
    #[param(example = "callback")]
    kind: Option<String>,
    /// Only items of this study (one of the agent's).
    study: Option<Uuid>,
    /// Only candidates of this country (ISO 3166-1 alpha-2).
    #[param(example = "ES")]
    country: Option<String>,
}

/// The lease an agent holds on an item.
#[derive(Debug, Serialize, ToSchema)]
struct LeaseView {
    claimed_at: DateTime<Utc>,
    /// The item returns to the queue at this instant unless the lease is extended.
    expires_at: DateTime<Utc>,
}

/// Where to go next with a claimed item.
#[derive(Debug, Serialize, ToSchema)]
struct ItemLinks {
    /// The journey's history, with the candidate's contact data for the agent to call.
    #[schema(example = "/v1/journeys/0195f3a2-7c1e-7d1a-9b7e-3f2a1c0d4e5f/timeline")]
    timeline: String,
    journey: String,
    extend: String,
    release: String,
    complete: String,
}

/// A work item under the caller's lease. No contact data: it comes from the timeline link,
/// which checks the caller's access again and is audited like every journey read.
#[derive(Debug, Serialize, ToSchema)]
struct ClaimedItem {
    item_id: Uuid,
    journey_id: Uuid,
    study_id: Uuid,
    #[schema(example = "first_contact")]
    kind: String,
    #[schema(example = "ES")]
    country: String,
    #[schema(example = "es")]
    language: String,
    /// The site concerned (scheduling at a site, site escalation).
    site_id: Option<Uuid>,
    /// When the work is due; queues are worked in this order.
    due_at: DateTime<Utc>,
    /// When the item breaches its service level, for kinds that have one.
    overdue_at: Option<DateTime<Utc>>,
    /// `due` or `overdue`, at the service's clock when answered.
    #[schema(example = "overdue")]
    due_state: &'static str,
    opened_at: DateTime<Utc>,
    /// For contact items, which attempt of the cadence this call is (1-based); else 0.
    attempt: i32,
    /// The study's cadence length.
    max_attempts: i32,
    /// The candidate's IANA time zone, when known.
    time_zone: Option<String>,
    lease: LeaseView,
    links: ItemLinks,
}

impl ClaimedItem {
    fn new(leased: Leased, now: DateTime<Utc>) -> Self {
        let item = leased.item;
        let base = format!("/v1/queues/items/{}", item.item_id);
        let journey = format!("/v1/journeys/{}", item.journey_id);
        Self {
            item_id: item.item_id,
            journey_id: item.journey_id,
            study_id: item.study_id,
            kind: item.kind,
            country: item.country,
            language: item.language,
            site_id: item.site_id,
            due_at: item.due_at,
            overdue_at: item.overdue_at,
            due_state: if item.overdue_at.is_some_and(|at| at < now) {
                "overdue"
            } else {
                "due"
            },
            opened_at: item.opened_at,
            attempt: item.attempt,
            max_attempts: item.max_attempts,
            time_zone: item.time_zone,
            lease: LeaseView {
                claimed_at: leased.claimed_at,
                expires_at: leased.expires_at,
            },
            links: ItemLinks {
                timeline: format!("{journey}/timeline"),
                journey,
                extend: format!("{base}/extend"),
                release: format!("{base}/release"),
                complete: format!("{base}/complete"),
            },
        }
    }
}

/// What a completion appended and where the journey stands now.
#[derive(Debug, Serialize, ToSchema)]
struct CompletionView {
    item_id: Uuid,
    journey_id: Uuid,
    #[schema(example = "reached")]
    outcome: &'static str,
    /// The events appended, in order, in one atomic append.
    events: Vec<AppendedEvent>,
    /// The journey's version after them (its `ETag`).
    version: u64,
    /// The journey's stage after them.
    #[schema(example = "appointment_scheduled")]
    stage: String,
}

/// Which queues a depth report covers.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DepthParams {
    /// Only this study's queues.
    study: Option<Uuid>,
}

/// One queue: a study's items of one kind for candidates of one language and country.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueDepth {
    pub(crate) study_id: Uuid,
    #[schema(example = "first_contact")]
    pub(crate) kind: String,
    #[schema(example = "es")]
    pub(crate) language: String,
    #[schema(example = "ES")]
    pub(crate) country: String,
    /// Not claimable yet (a call-back later today, the next attempt of a cadence tomorrow).
    pub(crate) upcoming: i64,
    /// Claimable, within their service level.
    pub(crate) due: i64,
    /// Claimable and past their service level (also `funnel_queue_sla_breaches`).
    pub(crate) overdue: i64,
    /// Held under a live lease by an agent (counted in `due` or `overdue` too).
    pub(crate) leased: i64,
    /// How long the longest-waiting claimable item has been waiting, in seconds.
    pub(crate) oldest_age_seconds: Option<i64>,
}

/// Every queue's depth at one instant of the service clock.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DepthReport {
    pub(crate) at: DateTime<Utc>,
    pub(crate) queues: Vec<QueueDepth>,
}

/// The time range (and study) of an agents report.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AgentsParams {
    /// Start of the range (RFC 3339), inclusive; a day before `to` when left out.
    from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339), exclusive; now when left out.
    to: Option<DateTime<Utc>>,
    /// Only completions of this study.
    study: Option<Uuid>,
}

/// One agent's work over the range.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentReport {
    pub(crate) agent_id: Uuid,
    pub(crate) completions: i64,
    /// Completions per outcome (`no_answer`, `reached`, `callback`, ...).
    #[schema(example = json!({"no_answer": 12, "reached": 7, "callback": 2}))]
    pub(crate) by_outcome: BTreeMap<String, i64>,
    /// Mean time from claim to completion, in seconds.
    pub(crate) mean_handle_seconds: Option<f64>,
    /// Items the agent holds under a live lease now.
    pub(crate) holding: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentsReport {
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    pub(crate) agents: Vec<AgentReport>,
}

// ---------------------------------------------------------------------------------------------
// Authorisation and parsing.

/// The caller's queues: agents only, since a lease is held by an agent.
fn agent_scope(principal: &Principal) -> Result<AgentScope, ApiError> {
    match (principal.role, principal.agent_id) {
        (Role::Agent, Some(agent)) => Ok(AgentScope {
            agent,
            studies: principal
                .study_ids
                .iter()
                .copied()
                .map(Uuid::from)
                .collect(),
            languages: principal
                .languages
                .iter()
                .map(|language| language.primary().to_ascii_lowercase())
                .collect(),
        }),
        (role, _) => Err(ApiError::Forbidden(format!(
            "only agent tokens work the queues; yours has the role `{role}`"
        ))),
    }
}

/// Team-lead views: admins. Queue depth and agent performance span every agent of a study, so
/// no agent token may read them.
fn require_team_lead(principal: &Principal) -> Result<(), ApiError> {
    principal.require_admin()
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(params)| params).map_err(|rejection| {
        ApiError::BadRequest(format!("bad query string: {}", rejection.body_text()))
    })
}

fn item_path(path: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|rejection| path_rejection(&rejection))
}

fn claim_filter(params: ClaimParams, scope: &AgentScope) -> Result<ClaimFilter, ApiError> {
    if let Some(kind) = &params.kind
        && !KINDS.contains(&kind.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "unknown `kind` `{kind}`; one of {}",
            KINDS.join(", ")
        )));
    }
    if let Some(study) = params.study
        && !scope.studies.contains(&study)
    {
        return Err(ApiError::Forbidden(format!(
            "study {study} is not one of this token's studies"
        )));
    }
    let country =
        params
            .country
            .map(|country| {
                Country::parse(&country).map(|country| country.to_string()).map_err(|_| {
                ApiError::BadRequest(format!(
                    "`country` must be an ISO 3166-1 alpha-2 code such as ES, not `{country}`"
                ))
            })
            })
            .transpose()?;
    Ok(ClaimFilter {
        kind: params.kind,
        study: params.study,
        country,
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// Claim the next work item: the most urgent claimable item (earliest due first) of the
/// caller's studies whose candidate speaks one of the caller's languages, under a lease.
///
/// Agents only. The lease holds the item for a few minutes (`lease.expires_at`); extend it
/// while working, release it to hand the item back, or complete it with an outcome. A lapsed
/// lease returns the item to the queue. Items are not claimable before they are due (a
/// call-back before its time, the next attempt of a cadence before its spacing); a first
/// contact is claimable as soon as the referral is in. 204 when nothing is claimable for the
/// caller now. No contact data: follow `links.timeline`.
#[utoipa::path(post, path = "/v1/queues/claim", tag = "queues",
    security(("bearer" = [])),
    params(ClaimParams),
    responses(
        (status = OK, description = "An item, now leased to the caller", body = ClaimedItem),
        (status = NO_CONTENT, description = "Nothing claimable for the caller now"),
        (status = BAD_REQUEST, description = "Unknown query parameter, kind or country", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an agent token, or a study not the agent's", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The work queue is still being built, or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn claim(
    principal: Principal,
    State(state): State<AppState>,
    params: Result<Query<ClaimParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = agent_scope(&principal)?;
    let filter = claim_filter(query(params)?, &scope)?;
    let now = state.clock.now();
    match state.queue.claim(&scope, &filter, now).await? {
        Some(leased) => {
            tracing::info!(
                item_id = %leased.item.item_id,
                kind = %leased.item.kind,
                agent_id = %scope.agent,
                "work item claimed"
            );
            Ok((StatusCode::OK, Json(ClaimedItem::new(leased, now))).into_response())
        }
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Extend the caller's lease on an item: it now ends a full lease time from now.
///
/// Only the holder of a live lease. A lapsed lease cannot be extended (the item went back to
/// the queue): claim again.
#[utoipa::path(post, path = "/v1/queues/items/{item_id}/extend", tag = "queues",
    security(("bearer" = [])),
    params(("item_id" = Uuid, Path, description = "The work item")),
    responses(
        (status = OK, description = "The item with its extended lease", body = ClaimedItem),
        (status = BAD_REQUEST, description = "The item id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an agent token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such open or leased item", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The caller holds no live lease on the item (lapsed, another agent's, completed, journey moved on)", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The work queue is still being built, or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn extend(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    let item_id = item_path(path)?;
    let scope = agent_scope(&principal)?;
    let now = state.clock.now();
    let leased = state.queue.extend(item_id, scope.agent, now).await?;
    Ok((StatusCode::OK, Json(ClaimedItem::new(leased, now))).into_response())
}

/// Release an item: it is back in the queue at once, for anyone to claim.
#[utoipa::path(post, path = "/v1/queues/items/{item_id}/release", tag = "queues",
    security(("bearer" = [])),
    params(("item_id" = Uuid, Path, description = "The work item")),
    responses(
        (status = NO_CONTENT, description = "Released"),
        (status = BAD_REQUEST, description = "The item id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an agent token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such open or leased item", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The caller holds no live lease on the item (lapsed, another agent's, completed)", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The work queue is still being built, or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn release(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    let item_id = item_path(path)?;
    let scope = agent_scope(&principal)?;
    state
        .queue
        .release(item_id, scope.agent, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Complete an item with its outcome, tagged by `outcome`: the matching journey events are
/// appended in one atomic append, e.g. `{"outcome": "reached", "refer_to_site": {...},
/// "appointment": {...}}` records the contact, the referral and the booking together.
///
/// Only the holder of a live lease. The outcome is decided against the journey's current
/// state: one that does not fit its stage is a 409 naming the stage, and nothing is appended
/// (the lease stays; record another outcome or release). `no_answer` on the cadence's last
/// attempt also marks the journey unreachable. `callback` takes a wall-clock time in the
/// candidate's time zone (the referral's unless given).
#[utoipa::path(post, path = "/v1/queues/items/{item_id}/complete", tag = "queues",
    security(("bearer" = [])),
    params(("item_id" = Uuid, Path, description = "The work item")),
    request_body = Outcome,
    responses(
        (status = OK, description = "Outcome recorded; the item leaves the queue", body = CompletionView),
        (status = BAD_REQUEST, description = "Malformed JSON or path", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an agent token, or no access to the journey", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such open or leased item", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The caller holds no live lease on the item, or the outcome does not fit the journey's stage (named in the detail)", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown outcome or field, invalid value, a local time that does not exist in the zone, a site not taking referrals", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The work queue is still being built, or the event log or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn complete(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    body: Result<ApiJson<Outcome>, ApiError>,
) -> Result<Response, ApiError> {
    let item_id = item_path(path)?;
    let scope = agent_scope(&principal)?;
    let ApiJson(outcome) = body?;
    let now = state.clock.now();
    // Holds the lease row locked until the completion is recorded: nobody claims or completes
    // the item meanwhile, even if the lease runs out during the append.
    let completing = state
        .queue
        .begin_completion(item_id, scope.agent, now)
        .await?;
    let item = &completing.leased.item;
    let journey_id = JourneyId::from(item.journey_id);
    let sites = outcome.target_sites();
    if !sites.is_empty() {
        let study = state
            .commands
            .load_study(StudyId::from(item.study_id))
            .await?;
        for site in sites {
            if !study.state.site_accepts_referrals(site) {
                return Err(ApiError::Unprocessable(
                    match study.state.site_status(site) {
                        Some(status) => format!("site {site} is {status} and takes no referrals"),
                        None => format!("site {site} is not part of study {}", item.study_id),
                    },
                ));
            }
        }
    }
    let max_attempts = u32::try_from(item.max_attempts).unwrap_or(0).max(1);
    let (executed, before) = record_outcome(
        &state,
        &principal,
        &outcome,
        journey_id,
        max_attempts,
        &scope,
        now,
    )
    .await?;
    let events: Vec<String> = executed
        .events
        .iter()
        .map(|event| {
            let encoded = funnel_domain::encode_journey(event);
            encoded
                .event_type
                .rsplit('.')
                .next()
                .unwrap_or(encoded.event_type)
                .to_owned()
        })
        .collect();
    state
        .queue
        .finish_completion(
            completing,
            &Completed {
                agent: scope.agent,
                outcome: outcome.name(),
                events,
                journey_version: executed.version,
                at: now,
            },
        )
        .await;
    let after = executed
        .events
        .iter()
        .fold(before.state, funnel_domain::evolve);
    tracing::info!(
        %item_id,
        journey_id = %journey_id,
        outcome = outcome.name(),
        agent_id = %scope.agent,
        "work item completed"
    );
    let body = CompletionView {
        item_id,
        journey_id: *journey_id.as_uuid(),
        outcome: outcome.name(),
        events: executed
            .events
            .iter()
            .map(|event| {
                let encoded = funnel_domain::encode_journey(event);
                AppendedEvent::new(encoded.event_type, encoded.data)
            })
            .collect(),
        version: executed.version,
        stage: after
            .stage()
            .map(|stage| stage.as_str().to_owned())
            .unwrap_or_default(),
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Decides the outcome's commands against the journey as it is and appends them at once,
/// deciding again if another writer changed the journey in between.
async fn record_outcome(
    state: &AppState,
    principal: &Principal,
    outcome: &Outcome,
    journey_id: JourneyId,
    max_attempts: u32,
    scope: &AgentScope,
    now: DateTime<Utc>,
) -> Result<
    (
        Executed<funnel_domain::JourneyEvent>,
        Loaded<funnel_domain::JourneyState>,
    ),
    ApiError,
> {
    for _ in 0..=RACE_RETRIES {
        let loaded = state.commands.load_journey(journey_id).await?;
        let (journey, version) = started(&loaded, journey_id)?;
        principal.require_journey_access(journey)?;
        let commands = outcome.commands(journey, max_attempts, scope.agent, now)?;
        match state
            .commands
            .execute_journey_commands(journey_id, Some(version), &commands)
            .await
        {
            Ok(executed) => return Ok((executed, loaded)),
            Err(CommandError::StaleVersion { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(CommandError::Contended.into())
}

/// Queue depth per study, kind, language and country: upcoming, due, overdue, leased, and
/// the age of the longest-waiting item, at the service's clock.
///
/// Team leads (admin tokens). Read from the `work_queue` read model, which trails the stream
/// by the projector's lag.
#[utoipa::path(get, path = "/v1/queues/depth", tag = "queues",
    security(("bearer" = [])),
    params(DepthParams),
    responses(
        (status = OK, description = "Every non-empty queue", body = DepthReport),
        (status = BAD_REQUEST, description = "Unknown or malformed query parameter", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The work queue is still being built, or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn depth(
    principal: Principal,
    State(state): State<AppState>,
    params: Result<Query<DepthParams>, QueryRejection>,
) -> Result<Json<DepthReport>, ApiError> {
    require_team_lead(&principal)?;
    let params = query(params)?;
    Ok(Json(depth_report(&state, &principal, params.study).await?))
}

/// Every queue's depth now, optionally of one study: the API's report and the web's
/// team-lead page.
pub(crate) async fn depth_report(
    state: &AppState,
    principal: &Principal,
    study: Option<Uuid>,
) -> Result<DepthReport, ApiError> {
    require_team_lead(principal)?;
    let now = state.clock.now();
    let studies = study.map(|study| vec![study]);
    let rows = state.queue.depth(now, studies.as_deref()).await?;
    Ok(DepthReport {
        at: now,
        queues: rows
            .into_iter()
            .map(|row| QueueDepth {
                study_id: row.study_id,
                kind: row.kind,
                language: row.language,
                country: row.country,
                upcoming: row.upcoming,
                due: row.due,
                overdue: row.overdue,
                leased: row.leased,
                oldest_age_seconds: row
                    .oldest_ready_at
                    .map(|ready| (now - ready).num_seconds().max(0)),
            })
            .collect(),
    })
}

/// Completions per agent and outcome over a time range, with mean handling time and the
/// items each agent holds now.
///
/// Team leads (admin tokens). Read from the completion history (kept for the retention
/// period, 24 months by default).
#[utoipa::path(get, path = "/v1/queues/agents", tag = "queues",
    security(("bearer" = [])),
    params(AgentsParams),
    responses(
        (status = OK, description = "Agents with completions in the range or leases now", body = AgentsReport),
        (status = BAD_REQUEST, description = "Unknown or malformed query parameter", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "`from` is not before `to`", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "PostgreSQL is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn agents(
    principal: Principal,
    State(state): State<AppState>,
    params: Result<Query<AgentsParams>, QueryRejection>,
) -> Result<Json<AgentsReport>, ApiError> {
    require_team_lead(&principal)?;
    let params = query(params)?;
    Ok(Json(
        agents_report(&state, &principal, params.from, params.to, params.study).await?,
    ))
}

/// Completions per agent over `[from, to)` (the last day by default): the API's report and the
/// web's team-lead page.
pub(crate) async fn agents_report(
    state: &AppState,
    principal: &Principal,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    study: Option<Uuid>,
) -> Result<AgentsReport, ApiError> {
    require_team_lead(principal)?;
    let now = state.clock.now();
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - DEFAULT_REPORT_RANGE);
    if from >= to {
        return Err(ApiError::Unprocessable(format!(
            "`from` ({}) must be before `to` ({})",
            from.to_rfc3339(),
            to.to_rfc3339()
        )));
    }
    let studies = study.map(|study| vec![study]);
    let rows = state
        .queue
        .agents(from, to, now, studies.as_deref())
        .await?;
    Ok(AgentsReport {
        from,
        to,
        agents: rows
            .into_iter()
            .map(|(agent_id, row)| AgentReport {
                agent_id,
                completions: row.completions,
                by_outcome: row.by_outcome,
                mean_handle_seconds: row.mean_handle_seconds,
                holding: row.holding,
            })
            .collect(),
    })
}
