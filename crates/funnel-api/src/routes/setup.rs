//! Study and site setup (admin): studies, their sites and campaigns, campaign spend. Every change
//! is a study command decided against the study's stream and appended as an event.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use funnel_domain::{
    CampaignId, Country, Currency, DomainError, SiteId, SiteStatus, SlaSettings, SourceChannel,
    SponsorId, Study, StudyCommand, StudyEvent, StudyId, StudyState,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::commands::CommandError;
use crate::extract::{ApiJson, IfMatch, etag, json_rejection};
use crate::problem::{ApiError, Problem};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_study))
        .routes(routes!(get_study))
        .routes(routes!(add_site))
        .routes(routes!(pause_site))
        .routes(routes!(resume_site))
        .routes(routes!(close_site))
        .routes(routes!(register_campaign))
        .routes(routes!(record_spend))
}

// ---------------------------------------------------------------------------------------------
// Shared by the routes of this module and its siblings.

/// Path parameters whose rejection is a problem document (400), like every other error.
pub(super) fn path_rejection(rejection: &PathRejection) -> ApiError {
    ApiError::BadRequest(format!(
        "bad path parameter: {}",
        rejection
            .body_text()
            .replace("Invalid URL: ", "")
            .replace("Cannot parse ", "")
    ))
}

/// One appended event as a caller sees it: `type` (e.g. `site_added`, `appointment_scheduled`)
/// and the event's own fields.
#[derive(Debug, Serialize, ToSchema)]
#[schema(value_type = Object, example = json!({"type": "site_paused", "at": "2026-03-02T09:00:00Z",
    "site_id": "0195f3a2-7c1e-7d1a-9b7e-3f2a1c0d4e5f", "reason": "staff shortage"}))]
pub(super) struct AppendedEvent(serde_json::Map<String, Value>);

impl AppendedEvent {
    /// `funnel.study.site_added` becomes `site_added`; `funnel.study.created` `study_created`.
    pub(super) fn new(event_type: &str, data: Value) -> Self {
        let short = event_type.rsplit('.').next().unwrap_or(event_type);
        let short = if short == "created" {
            "study_created"
        } else {
            short
        };
        let mut map = serde_json::Map::new();
        map.insert("type".to_owned(), Value::String(short.to_owned()));
        if let Value::Object(fields) = data {
            map.extend(fields);
        }
        Self(map)
    }

    fn study(event: &StudyEvent) -> Self {
        let encoded = funnel_domain::encode_study(event);
        Self::new(encoded.event_type, encoded.data)
    }
}

/// A body that may be left out entirely; when present it must be JSON of the right shape.
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be JSON with `Content-Type: application/json`".to_owned(),
        ));
    }
    // `null` is "no body" too, as the document says (`oneOf: [..., null]`).
    axum::Json::<Option<T>>::from_bytes(body)
        .map(|axum::Json(value)| value.unwrap_or_default())
        .map_err(|rejection| json_rejection(&rejection))
}

// ---------------------------------------------------------------------------------------------
// Wire types.

/// A study's service levels for the Enrollment Support Team. Every field is optional on input
/// and defaults to the house standard.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
struct StudySla {
    /// Hours from referral to the first contact attempt (default 24).
    first_contact_hours: u32,
    /// Attempts in the contact cadence before a candidate is marked unreachable (default 5).
    contact_attempts: u32,
    /// Minimum hours between two attempts (default 24).
    attempt_spacing_hours: u32,
    /// Days a site may sit on a referral before it is escalated (default 5).
    site_escalation_days: u32,
}

impl Default for StudySla {
    fn default() -> Self {
        SlaSettings::default().into()
    }
}

impl From<SlaSettings> for StudySla {
    fn from(sla: SlaSettings) -> Self {
        Self {
            first_contact_hours: sla.first_contact_hours,
            contact_attempts: sla.contact_attempts,
            attempt_spacing_hours: sla.attempt_spacing_hours,
            site_escalation_days: sla.site_escalation_days,
        }
    }
}

impl From<StudySla> for SlaSettings {
    fn from(sla: StudySla) -> Self {
        Self {
            first_contact_hours: sla.first_contact_hours,
            contact_attempts: sla.contact_attempts,
            attempt_spacing_hours: sla.attempt_spacing_hours,
            site_escalation_days: sla.site_escalation_days,
        }
    }
}

/// Where a campaign's referrals come from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum CampaignChannel {
    Newsletter,
    Ads,
    Portal,
    Advocacy,
    Physician,
    Other,
}

impl From<CampaignChannel> for SourceChannel {
    fn from(channel: CampaignChannel) -> Self {
        match channel {
            CampaignChannel::Newsletter => Self::Newsletter,
            CampaignChannel::Ads => Self::Ads,
            CampaignChannel::Portal => Self::Portal,
            CampaignChannel::Advocacy => Self::Advocacy,
            CampaignChannel::Physician => Self::Physician,
            CampaignChannel::Other => Self::Other,
        }
    }
}

impl From<SourceChannel> for CampaignChannel {
    fn from(channel: SourceChannel) -> Self {
        match channel {
            SourceChannel::Newsletter => Self::Newsletter,
            SourceChannel::Ads => Self::Ads,
            SourceChannel::Portal => Self::Portal,
            SourceChannel::Advocacy => Self::Advocacy,
            SourceChannel::Physician => Self::Physician,
            SourceChannel::Other => Self::Other,
        }
    }
}

/// Whether a site takes referrals.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum SiteStatusView {
    Active,
    Paused,
    Closed,
}

impl From<SiteStatus> for SiteStatusView {
    fn from(status: SiteStatus) -> Self {
        match status {
            SiteStatus::Active => Self::Active,
            SiteStatus::Paused => Self::Paused,
            SiteStatus::Closed => Self::Closed,
        }
    }
}

/// A new study.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateStudyRequest {
    /// The study's id; generated when left out.
    study_id: Option<Uuid>,
    sponsor_id: Uuid,
    title: String,
    /// The sponsor's protocol code (e.g. `MIG-301`).
    protocol_code: String,
    /// Randomized patients the study needs in total (positive).
    target_randomized: u32,
    /// ISO 3166-1 alpha-2 codes of the countries the study recruits in.
    #[schema(value_type = Vec<String>, example = json!(["ES", "DE"]))]
    countries: Vec<Country>,
    /// BCP 47 tags of the languages the study's material and agents cover.
    #[schema(value_type = Vec<String>, example = json!(["es", "de"]))]
    languages: Vec<funnel_domain::Language>,
    /// Service levels; the house standard when left out.
    sla: Option<StudySla>,
}

/// A site joining the study.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddSiteRequest {
    /// The site's id; generated when left out.
    site_id: Option<Uuid>,
    name: String,
    /// One of the study's countries (ISO 3166-1 alpha-2).
    #[schema(value_type = String, example = "ES")]
    country: Country,
    /// Languages the site's staff speak with patients (BCP 47).
    #[schema(value_type = Vec<String>, example = json!(["es"]))]
    languages: Vec<funnel_domain::Language>,
    /// Randomized patients per month the site committed to (may be fractional, e.g. 0.5).
    monthly_target_randomized: f64,
}

/// Why a site pauses or closes. The whole body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SiteStatusRequest {
    reason: Option<String>,
}

/// Resuming takes no fields; the body may be left out or be `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResumeSiteRequest {}

/// A campaign registering as a source of referrals.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterCampaignRequest {
    /// The campaign's id; generated when left out.
    campaign_id: Option<Uuid>,
    name: String,
    channel: CampaignChannel,
}

/// Money a campaign spent over a period.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RecordSpendRequest {
    /// The amount in the currency's minor unit (cents); positive.
    amount_minor: i64,
    /// ISO 4217 code (e.g. `EUR`).
    #[schema(value_type = String, example = "EUR")]
    currency: Currency,
    /// First day of the period, inclusive.
    period_start: NaiveDate,
    /// Last day of the period, inclusive.
    period_end: NaiveDate,
}

/// What a setup command appended.
#[derive(Debug, Serialize, ToSchema)]
struct StudyChange {
    study_id: Uuid,
    /// The study's version after the change; send it back as `If-Match`.
    version: u64,
    /// The site the change is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    site_id: Option<Uuid>,
    /// The campaign the change is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign_id: Option<Uuid>,
    /// The events appended, in order.
    events: Vec<AppendedEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
struct SiteView {
    site_id: Uuid,
    name: String,
    country: String,
    languages: Vec<String>,
    monthly_target_randomized: f64,
    status: SiteStatusView,
    added_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
struct SpendView {
    currency: String,
    /// Total recorded spend in this currency, in minor units.
    amount_minor: i64,
}

#[derive(Debug, Serialize, ToSchema)]
struct CampaignView {
    campaign_id: Uuid,
    name: String,
    channel: CampaignChannel,
    registered_at: DateTime<Utc>,
    /// Total spend per currency (never converted).
    spend: Vec<SpendView>,
}

/// A study's setup as of its current version.
#[derive(Debug, Serialize, ToSchema)]
struct StudyView {
    study_id: Uuid,
    sponsor_id: Uuid,
    title: String,
    protocol_code: String,
    target_randomized: u32,
    countries: Vec<String>,
    languages: Vec<String>,
    sla: StudySla,
    created_at: DateTime<Utc>,
    sites: Vec<SiteView>,
    campaigns: Vec<CampaignView>,
    /// The study's version (also the `ETag`).
    version: u64,
}

impl StudyView {
    fn new(study: &Study, version: u64) -> Self {
        Self {
            study_id: *study.study_id.as_uuid(),
            sponsor_id: *study.sponsor_id.as_uuid(),
            title: study.title.clone(),
            protocol_code: study.protocol_code.clone(),
            target_randomized: study.target_randomized,
            countries: study.countries.iter().map(ToString::to_string).collect(),
            languages: study.languages.iter().map(ToString::to_string).collect(),
            sla: study.sla.into(),
            created_at: study.created_at,
            sites: study
                .sites
                .values()
                .map(|site| SiteView {
                    site_id: *site.site_id.as_uuid(),
                    name: site.name.clone(),
                    country: site.country.to_string(),
                    languages: site.languages.iter().map(ToString::to_string).collect(),
                    monthly_target_randomized: site.monthly_target_randomized,
                    status: site.status.into(),
                    added_at: site.added_at,
                })
                .collect(),
            campaigns: study
                .campaigns
                .values()
                .map(|campaign| CampaignView {
                    campaign_id: *campaign.campaign_id.as_uuid(),
                    name: campaign.name.clone(),
                    channel: campaign.channel.into(),
                    registered_at: campaign.registered_at,
                    spend: campaign
                        .spend_minor
                        .iter()
                        .map(|(currency, amount)| SpendView {
                            currency: currency.to_string(),
                            amount_minor: *amount,
                        })
                        .collect(),
                })
                .collect(),
            version,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// Runs a study command and answers with what it appended.
async fn execute(
    state: &AppState,
    study: StudyId,
    expected: Option<u64>,
    command: &StudyCommand,
    status: StatusCode,
    site_id: Option<SiteId>,
    campaign_id: Option<CampaignId>,
) -> Result<Response, ApiError> {
    let executed = state
        .commands
        .execute_study(study, expected, command)
        .await
        .map_err(|error| addressed_not_found(error, site_id, campaign_id))?;
    state.studies.forget(study).await;
    let body = StudyChange {
        study_id: *study.as_uuid(),
        version: executed.version,
        site_id: site_id.map(Uuid::from),
        campaign_id: campaign_id.map(Uuid::from),
        events: executed.events.iter().map(AppendedEvent::study).collect(),
    };
    let mut response = (status, [etag(executed.version)], Json(body)).into_response();
    if matches!(command, StudyCommand::CreateStudy { .. }) {
        let location = HeaderValue::from_str(&format!("/v1/studies/{study}"))
            .expect("a UUID path is a valid header");
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A site or campaign named in the path that the study does not have is a missing resource.
fn addressed_not_found(
    error: CommandError,
    site_id: Option<SiteId>,
    campaign_id: Option<CampaignId>,
) -> ApiError {
    match &error {
        CommandError::Domain(DomainError::UnknownSite(site)) if Some(*site) == site_id => {
            ApiError::NotFound(error.to_string())
        }
        CommandError::Domain(DomainError::UnknownCampaign(campaign))
            if Some(*campaign) == campaign_id =>
        {
            ApiError::NotFound(error.to_string())
        }
        _ => error.into(),
    }
}

/// Create a study.
///
/// Appends `study_created`. The study id is generated unless the body gives one; creating an
/// existing study is a conflict. `If-Match: "0"` asks for "only if it does not exist yet".
#[utoipa::path(post, path = "/v1/studies", tag = "setup",
    security(("bearer" = [])),
    params(("If-Match" = Option<String>, Header, description = "Expected version; \"0\" for a new study")),
    request_body = CreateStudyRequest,
    responses(
        (status = CREATED, description = "Study created", body = StudyChange,
            headers(("ETag" = String, description = "The study's version"),
                    ("Location" = String, description = "The study's URL"))),
        (status = BAD_REQUEST, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The study already exists", body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown or missing field, invalid value", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_study(
    principal: Principal,
    State(state): State<AppState>,
    IfMatch(expected): IfMatch,
    body: Result<ApiJson<CreateStudyRequest>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let ApiJson(body) = body?;
    let study = body.study_id.map_or_else(StudyId::new, StudyId::from);
    let command = StudyCommand::CreateStudy {
        at: state.clock.now(),
        study_id: study,
        sponsor_id: SponsorId::from(body.sponsor_id),
        title: body.title,
        protocol_code: body.protocol_code,
        target_randomized: body.target_randomized,
        countries: body.countries,
        languages: body.languages,
        sla: body.sla.unwrap_or_default().into(),
    };
    execute(
        &state,
        study,
        expected,
        &command,
        StatusCode::CREATED,
        None,
        None,
    )
    .await
}

/// Read a study's setup: its sites with their status, its campaigns with their spend.
///
/// Admins, the study's sponsor, and the campaigns, agents and sites working the study.
#[utoipa::path(get, path = "/v1/studies/{study_id}", tag = "setup",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study")),
    responses(
        (status = OK, description = "The study", body = StudyView,
            headers(("ETag" = String, description = "The study's version"))),
        (status = BAD_REQUEST, description = "The study id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "The token has no access to this study", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_study(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(study_id) = path.map_err(|rejection| path_rejection(&rejection))?;
    let loaded = state.commands.load_study(StudyId::from(study_id)).await?;
    let (StudyState::Created(study), Some(version)) = (&loaded.state, loaded.version) else {
        return Err(ApiError::NotFound(format!("no study {study_id}")));
    };
    principal.require_study_read(study)?;
    Ok((
        StatusCode::OK,
        [etag(version)],
        Json(StudyView::new(study, version)),
    )
        .into_response())
}

/// Add a site to a study.
///
/// Appends `site_added`. The site must be in one of the study's countries.
#[utoipa::path(post, path = "/v1/studies/{study_id}/sites", tag = "setup",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"),
        ("If-Match" = Option<String>, Header, description = "Expected study version")),
    request_body = AddSiteRequest,
    responses(
        (status = CREATED, description = "Site added", body = StudyChange,
            headers(("ETag" = String, description = "The study's new version"))),
        (status = BAD_REQUEST, description = "Malformed JSON, header or path", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The site is already part of the study", body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown or missing field, invalid value, country outside the study", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn add_site(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected): IfMatch,
    body: Result<ApiJson<AddSiteRequest>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let Path(study_id) = path.map_err(|rejection| path_rejection(&rejection))?;
    let ApiJson(body) = body?;
    let site = body.site_id.map_or_else(SiteId::new, SiteId::from);
    let command = StudyCommand::AddSite {
        at: state.clock.now(),
        site_id: site,
        name: body.name,
        country: body.country,
        languages: body.languages,
        monthly_target_randomized: body.monthly_target_randomized,
    };
    execute(
        &state,
        StudyId::from(study_id),
        expected,
        &command,
        StatusCode::CREATED,
        Some(site),
        None,
    )
    .await
}

/// Pause a site: it takes no referrals until resumed.
///
/// Appends `site_paused`. Only an active site can pause. The body (`{"reason": ...}`) is optional.
#[utoipa::path(post, path = "/v1/studies/{study_id}/sites/{site_id}/pause", tag = "setup",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"),
        ("site_id" = Uuid, Path, description = "The site"),
        ("If-Match" = Option<String>, Header, description = "Expected study version")),
    request_body(content = Option<SiteStatusRequest>, description = "Optional reason"),
    responses(
        (status = OK, description = "Site paused", body = StudyChange,
            headers(("ETag" = String, description = "The study's new version"))),
        (status = BAD_REQUEST, description = "Malformed JSON, header or path", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study or site", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The site is not active; the detail names its status", body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown field or blank reason", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn pause_site(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<(Uuid, Uuid)>, PathRejection>,
    IfMatch(expected): IfMatch,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let site = site_path(path)?;
    let body: SiteStatusRequest = optional_json(&headers, &body)?;
    change_site_status(&state, site, expected, |at, site_id| {
        StudyCommand::PauseSite {
            at,
            site_id,
            reason: body.reason,
        }
    })
    .await
}

/// Resume a paused site.
///
/// Appends `site_resumed`. Only a paused site can resume. The body is optional.
#[utoipa::path(post, path = "/v1/studies/{study_id}/sites/{site_id}/resume", tag = "setup",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"),
        ("site_id" = Uuid, Path, description = "The site"),
        ("If-Match" = Option<String>, Header, description = "Expected study version")),
    request_body(content = Option<ResumeSiteRequest>, description = "Nothing, or `{}`"),
    responses(
        (status = OK, description = "Site resumed", body = StudyChange,
            headers(("ETag" = String, description = "The study's new version"))),
        (status = BAD_REQUEST, description = "Malformed JSON, header or path", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study or site", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The site is not paused; the detail names its status", body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown field", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn resume_site(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<(Uuid, Uuid)>, PathRejection>,
    IfMatch(expected): IfMatch,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let site = site_path(path)?;
    let ResumeSiteRequest {} = optional_json(&headers, &body)?;
    change_site_status(&state, site, expected, |at, site_id| {
        StudyCommand::ResumeSite { at, site_id }
    })
    .await
}

/// Close a site for good; its open referrals need reallocating.
///
/// Appends `site_closed`. An active or paused site can close. The body is optional.
#[utoipa::path(post, path = "/v1/studies/{study_id}/sites/{site_id}/close", tag = "setup",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"),
        ("site_id" = Uuid, Path, description = "The site"),
        ("If-Match" = Option<String>, Header, description = "Expected study version")),
    request_body(content = Option<SiteStatusRequest>, description = "Optional reason"),
    responses(
        (status = OK, description = "Site closed", body = StudyChange,
            headers(("ETag" = String, description = "The study's new version"))),
        (status = BAD_REQUEST, description = "Malformed JSON, header or path", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study or site", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The site is already closed", body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown field or blank reason", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn close_site(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<(Uuid, Uuid)>, PathRejection>,
    IfMatch(expected): IfMatch,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let site = site_path(path)?;
    let body: SiteStatusRequest = optional_json(&headers, &body)?;
    change_site_status(&state, site, expected, |at, site_id| {
        StudyCommand::CloseSite {
            at,
            site_id,
            reason: body.reason,
        }
    })
    .await
}

fn site_path(path: Result<Path<(Uuid, Uuid)>, PathRejection>) -> Result<(Uuid, SiteId), ApiError> {
    let Path((study_id, site_id)) = path.map_err(|rejection| path_rejection(&rejection))?;
    Ok((study_id, SiteId::from(site_id)))
}

/// Pause, resume and close: the same path, the same answer, a different command.
async fn change_site_status(
    state: &AppState,
    (study_id, site): (Uuid, SiteId),
    expected: Option<u64>,
    command: impl FnOnce(DateTime<Utc>, SiteId) -> StudyCommand,
) -> Result<Response, ApiError> {
    let command = command(state.clock.now(), site);
    execute(
        state,
        StudyId::from(study_id),
        expected,
        &command,
        StatusCode::OK,
        Some(site),
        None,
    )
    .await
}

/// Register a recruitment campaign for a study.
///
/// Appends `campaign_registered`. The campaign id is generated unless the body gives one.
#[utoipa::path(post, path = "/v1/studies/{study_id}/campaigns", tag = "setup",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"),
        ("If-Match" = Option<String>, Header, description = "Expected study version")),
    request_body = RegisterCampaignRequest,
    responses(
        (status = CREATED, description = "Campaign registered", body = StudyChange,
            headers(("ETag" = String, description = "The study's new version"))),
        (status = BAD_REQUEST, description = "Malformed JSON, header or path", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The campaign is already registered", body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown or missing field, invalid value", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn register_campaign(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    IfMatch(expected): IfMatch,
    body: Result<ApiJson<RegisterCampaignRequest>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let Path(study_id) = path.map_err(|rejection| path_rejection(&rejection))?;
    let ApiJson(body) = body?;
    let campaign = body
        .campaign_id
        .map_or_else(CampaignId::new, CampaignId::from);
    let command = StudyCommand::RegisterCampaign {
        at: state.clock.now(),
        campaign_id: campaign,
        name: body.name,
        channel: body.channel.into(),
    };
    execute(
        &state,
        StudyId::from(study_id),
        expected,
        &command,
        StatusCode::CREATED,
        None,
        Some(campaign),
    )
    .await
}

/// Record what a campaign spent over a period (for cost per referral and per randomized).
///
/// Appends `campaign_spend_recorded`.
#[utoipa::path(post, path = "/v1/studies/{study_id}/campaigns/{campaign_id}/spend", tag = "setup",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"),
        ("campaign_id" = Uuid, Path, description = "The campaign"),
        ("If-Match" = Option<String>, Header, description = "Expected study version")),
    request_body = RecordSpendRequest,
    responses(
        (status = CREATED, description = "Spend recorded", body = StudyChange,
            headers(("ETag" = String, description = "The study's new version"))),
        (status = BAD_REQUEST, description = "Malformed JSON, header or path", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study or campaign", body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, description = "The study kept changing concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"),
        (status = PAYLOAD_TOO_LARGE, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "Unknown or missing field, non-positive amount, bad currency or period", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The event log is not answering", body = Problem, content_type = "application/problem+json"),
    ))]
async fn record_spend(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<(Uuid, Uuid)>, PathRejection>,
    IfMatch(expected): IfMatch,
    body: Result<ApiJson<RecordSpendRequest>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let Path((study_id, campaign_id)) = path.map_err(|rejection| path_rejection(&rejection))?;
    let ApiJson(body) = body?;
    let campaign = CampaignId::from(campaign_id);
    let command = StudyCommand::RecordCampaignSpend {
        at: state.clock.now(),
        campaign_id: campaign,
        amount_minor: body.amount_minor,
        currency: body.currency,
        period_start: body.period_start,
        period_end: body.period_end,
    };
    execute(
        &state,
        StudyId::from(study_id),
        expected,
        &command,
        StatusCode::CREATED,
        None,
        Some(campaign),
    )
    .await
}
