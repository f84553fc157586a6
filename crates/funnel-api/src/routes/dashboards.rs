//! The sponsor dashboard: funnel, site leaderboard, time series, cohorts, source attribution
//! and target forecast of a study, read from the `sponsor_dashboard` read model.
//!
//! Every report of one request reads one snapshot of the live generation (one read-only
//! transaction), which also answers who owns the study, so authorisation and figures agree.
//! The read model trails the stream by the projector's lag: a step recorded a moment ago may
//! not be counted yet.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono::NaiveDate;
use funnel_domain::{Country, SiteId, SourceChannel, StudyId};
use funnel_projections::dashboard::{
    self, Bucket, CohortTable, DashboardFilter, SeriesMetric, SiteTable, SourceAttribution,
    StudyFunnelReport, StudySummary, TargetForecast, TimeSeries,
};
use serde::Serialize;
use serde::de::IntoDeserializer as _;
use sqlx::{Postgres, Transaction};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::setup::path_rejection;
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::problem::{ApiError, Problem};

/// The read model every route here reads.
const READ_MODEL: &str = "sponsor_dashboard";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_studies))
        .routes(routes!(funnel))
        .routes(routes!(sites))
        .routes(routes!(timeseries))
        .routes(routes!(cohorts))
        .routes(routes!(sources))
        .routes(routes!(forecast))
}

// ---------------------------------------------------------------------------------------------
// Query parameters.

/// Which journeys a report covers. Every parameter is optional; a repeated one (`site`,
/// `country`, `source`) keeps journeys matching any of its values.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct FilterParams {
    /// First day (UTC, `YYYY-MM-DD`), inclusive: of the referral, or of the counted event in a
    /// time series.
    from: Option<NaiveDate>,
    /// Last day (UTC, `YYYY-MM-DD`), inclusive; not before `from`.
    to: Option<NaiveDate>,
    /// A site of the study (repeatable): journeys handled by it now. Site tokens see their own
    /// site only, whether they ask for it or not.
    #[param(style = Form, explode, required = false)]
    site: Vec<Uuid>,
    // Described in `country_schema`.
    #[param(style = Form, explode, required = false, schema_with = country_schema)]
    country: Vec<Country>,
    // Described in `source_schema`.
    #[param(style = Form, explode, required = false, schema_with = source_schema)]
    source: Vec<SourceChannel>,
}

/// Countries as two letters, so that generated requests (and readers) know the shape. (A
/// schema of one's own replaces the field's doc comment, so the description lives here.)
fn country_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .description(Some(
            "The candidate's country, ISO 3166-1 alpha-2 (repeatable).",
        ))
        .items(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .pattern(Some("^[A-Za-z]{2}$"))
                .examples(["ES"]),
        )
        .build()
}

/// The source channels by their wire names, from the domain's own list.
fn source_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .description(Some("The referral's source channel (repeatable)."))
        .items(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .enum_values(Some(SourceChannel::ALL.map(SourceChannel::as_str))),
        )
        .build()
}

/// What a time series counts and how it is cut.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
struct SeriesParams {
    /// Bucket width: `day`, `week` (ISO, from Monday) or `month`; `month` when left out.
    #[param(value_type = Option<Bucket>)]
    bucket: Bucket,
    /// The milestone counted on its own date: `referrals`, `contacted`, `scheduled`,
    /// `attended`, `screenings` or `randomized`; `referrals` when left out.
    #[param(value_type = Option<SeriesMetric>)]
    metric: SeriesMetric,
    /// One series per site instead of one for the study; `false` when left out.
    #[param(value_type = Option<bool>)]
    by_site: bool,
}

impl Default for SeriesParams {
    fn default() -> Self {
        Self {
            bucket: Bucket::Month,
            metric: SeriesMetric::Referrals,
            by_site: false,
        }
    }
}

/// The query string as name-value pairs: repeated names stay, which a struct cannot express.
type RawPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

const FILTER_NAMES: &[&str] = &["from", "to", "site", "country", "source"];
const SERIES_NAMES: &[&str] = &["bucket", "metric", "by_site"];

/// Parses the query string's pairs at the boundary: a value that is not of its parameter's
/// type, an unknown or repeated single parameter is a 400; `from` after `to` or a country code
/// that names no country a 422. The web pages pass their form's fields here too, so that a
/// filter means the same on a page as in the API.
fn parse_pairs(
    pairs: &[(String, String)],
    filters: bool,
    series: bool,
) -> Result<(FilterParams, SeriesParams), ApiError> {
    let mut filter = FilterParams::default();
    let mut series_params = SeriesParams::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        let known = (filters && FILTER_NAMES.contains(&name.as_str()))
            || (series && SERIES_NAMES.contains(&name.as_str()));
        if !known {
            let allowed: Vec<&str> = filters
                .then_some(FILTER_NAMES)
                .into_iter()
                .chain(series.then_some(SERIES_NAMES))
                .flatten()
                .copied()
                .collect();
            return Err(ApiError::BadRequest(if allowed.is_empty() {
                format!("unknown query parameter `{name}`: this report takes none")
            } else {
                format!(
                    "unknown query parameter `{name}`; this report takes {}",
                    allowed.join(", ")
                )
            }));
        }
        let repeatable = matches!(name.as_str(), "site" | "country" | "source");
        if !repeatable {
            if seen.contains(&name.as_str()) {
                return Err(ApiError::BadRequest(format!("`{name}` may be given once")));
            }
            seen.push(name);
        }
        match name.as_str() {
            "from" => filter.from = Some(parse_date(name, value)?),
            "to" => filter.to = Some(parse_date(name, value)?),
            "site" => filter.site.push(Uuid::try_parse(value).map_err(|_| {
                ApiError::BadRequest(format!("`site` must be a site id (a UUID), not `{value}`"))
            })?),
            "country" => filter.country.push(parse_country(value)?),
            "source" => filter.source.push(
                SourceChannel::ALL
                    .into_iter()
                    .find(|source| source.as_str() == value)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`source` must be one of newsletter, ads, portal, advocacy, \
                             physician, other; not `{value}`"
                        ))
                    })?,
            ),
            "bucket" => series_params.bucket = parse_name(name, value, "day, week, month")?,
            "metric" => {
                series_params.metric = parse_name(
                    name,
                    value,
                    "referrals, contacted, scheduled, attended, screenings, randomized",
                )?;
            }
            _ => {
                series_params.by_site = value.parse().map_err(|_| {
                    ApiError::BadRequest(format!("`by_site` must be true or false, not `{value}`"))
                })?;
            }
        }
    }
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from > to
    {
        return Err(ApiError::Unprocessable(format!(
            "`from` ({from}) is after `to` ({to}); the range is inclusive and must not be empty"
        )));
    }
    Ok((filter, series_params))
}

/// Two letters that name no country are well-formed but meaningless (422, as for bodies);
/// anything else is not a country code at all (400).
fn parse_country(value: &str) -> Result<Country, ApiError> {
    Country::parse(value).map_err(|_| {
        let detail =
            format!("`country` must be an ISO 3166-1 alpha-2 code such as ES, not `{value}`");
        if value.len() == 2 && value.bytes().all(|byte| byte.is_ascii_alphabetic()) {
            ApiError::Unprocessable(detail)
        } else {
            ApiError::BadRequest(detail)
        }
    })
}

fn parse_date(name: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        ApiError::BadRequest(format!(
            "`{name}` must be a date like 2026-03-02, not `{value}`"
        ))
    })
}

/// A value of one of the read model's snake_case enums, by its wire name.
fn parse_name<T: serde::de::DeserializeOwned>(
    name: &str,
    value: &str,
    allowed: &str,
) -> Result<T, ApiError> {
    T::deserialize(value.into_deserializer()).map_err(|_: serde::de::value::Error| {
        ApiError::BadRequest(format!("`{name}` must be one of {allowed}; not `{value}`"))
    })
}

// ---------------------------------------------------------------------------------------------
// Authorisation.

/// Who reads dashboards at all: admins, sponsors and site staff. Campaigns post, agents work
/// queues; neither reads figures.
fn require_dashboard_reader(principal: &Principal) -> Result<(), ApiError> {
    match principal.role {
        Role::Admin | Role::Sponsor | Role::Site => Ok(()),
        Role::Campaign | Role::Agent => Err(ApiError::Forbidden(format!(
            "dashboards are for admins, sponsors and site staff; this token has the role `{}`",
            principal.role
        ))),
    }
}

/// Checks the caller may read `study` and narrows the filter to what it may see: a sponsor its
/// own studies, site staff their own study with every report cut to their own site.
fn authorise_study(
    principal: &Principal,
    study: &StudySummary,
    filter: &mut DashboardFilter,
) -> Result<(), ApiError> {
    let no_access = || ApiError::Forbidden("this token has no access to that study".to_owned());
    match principal.role {
        Role::Admin => Ok(()),
        Role::Sponsor if principal.sponsor_id == Some(study.sponsor_id) => Ok(()),
        Role::Site => {
            let own = principal
                .site_id
                .filter(|site| study.site_ids.contains(site))
                .ok_or_else(no_access)?;
            if filter.site_ids.iter().any(|site| *site != own) {
                return Err(ApiError::Forbidden(format!(
                    "a site token sees its own site ({own}) only"
                )));
            }
            filter.site_ids = vec![own];
            Ok(())
        }
        Role::Sponsor | Role::Campaign | Role::Agent => Err(no_access()),
    }
}

/// The forecast is study-wide: site tokens, which see their own site only, may not read it.
pub(crate) fn require_forecast_reader(principal: &Principal) -> Result<(), ApiError> {
    if principal.role == Role::Site {
        return Err(ApiError::Forbidden(
            "the forecast is study-wide; a site token sees its own site's figures only".to_owned(),
        ));
    }
    Ok(())
}

/// One request's snapshot of the read model, the study it is about, and the caller's filter.
pub(crate) struct StudyRead {
    pub(crate) tx: Transaction<'static, Postgres>,
    pub(crate) study: StudyId,
    pub(crate) filter: DashboardFilter,
    series: SeriesParams,
}

/// Authorises the caller, parses the path and query, opens the snapshot and finds the study.
async fn open_study(
    state: &AppState,
    principal: &Principal,
    path: Result<Path<Uuid>, PathRejection>,
    raw: RawPairs,
    reports: (bool, bool),
) -> Result<StudyRead, ApiError> {
    require_dashboard_reader(principal)?;
    let Path(study) = path.map_err(|rejection| path_rejection(&rejection))?;
    let Query(pairs) =
        raw.map_err(|rejection| ApiError::BadRequest(format!("bad query string: {rejection}")))?;
    open_study_with(state, principal, StudyId::from(study), &pairs, reports).await
}

/// [`open_study`] for a study and filter given as name-value pairs (`from`, `to`, `site`,
/// `country`, `source`; the series names too when `series`): the web pages read through here,
/// so they authorise and filter exactly as the API does.
pub(crate) async fn open_study_with(
    state: &AppState,
    principal: &Principal,
    study: StudyId,
    pairs: &[(String, String)],
    (filters, series): (bool, bool),
) -> Result<StudyRead, ApiError> {
    require_dashboard_reader(principal)?;
    let (params, series) = parse_pairs(pairs, filters, series)?;
    let mut filter = DashboardFilter {
        from: params.from,
        to: params.to,
        site_ids: params.site.into_iter().map(SiteId::from).collect(),
        countries: params.country,
        sources: params.source,
    };
    let mut tx = state.read_models.read(READ_MODEL).await?;
    let Some(summary) = dashboard::study_summary(&mut tx, study).await? else {
        return Err(missing_study(state, study).await);
    };
    authorise_study(principal, &summary, &mut filter)?;
    Ok(StudyRead {
        tx,
        study,
        filter,
        series,
    })
}

/// A study the read model does not know: unknown (404), or created a moment ago and not yet
/// projected, which the stream (the source of truth) tells apart.
async fn missing_study(state: &AppState, study: StudyId) -> ApiError {
    match state.commands.load_study(study).await {
        Ok(loaded) if loaded.state.study().is_some() => ApiError::NotReady {
            detail: format!("study {study} is not on the dashboard yet; retry shortly"),
            retry_after_secs: 1,
        },
        Ok(_) => ApiError::NotFound(format!("no study {study}")),
        Err(error) => error.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// The studies a caller may see.
#[derive(Debug, Serialize, ToSchema)]
struct StudyList {
    /// Oldest first. For site tokens, `site_ids` lists their own site only.
    studies: Vec<StudySummary>,
}

/// List the studies the caller may see on the dashboard.
///
/// Admins see every study, sponsors their own, site staff the studies their site is part of.
#[utoipa::path(get, path = "/v1/dashboards/studies", tag = "dashboards",
    security(("bearer" = [])),
    responses(
        (status = OK, description = "The studies, oldest first", body = StudyList),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "A campaign or agent token", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The read model is still being built (see Retry-After), or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
async fn list_studies(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Json<StudyList>, ApiError> {
    Ok(Json(StudyList {
        studies: visible_studies(&state, &principal).await?,
    }))
}

/// The studies `principal` may see on the dashboard (the API's list and the web's study list).
pub(crate) async fn visible_studies(
    state: &AppState,
    principal: &Principal,
) -> Result<Vec<StudySummary>, ApiError> {
    require_dashboard_reader(principal)?;
    let mut tx = state.read_models.read(READ_MODEL).await?;
    let studies = match principal.role {
        Role::Sponsor => {
            // A sponsor token always names its sponsor (the token store requires it); without
            // one it sees nothing rather than everything.
            let Some(sponsor) = principal.sponsor_id else {
                return Ok(Vec::new());
            };
            dashboard::studies(&mut tx, Some(sponsor)).await?
        }
        Role::Site => {
            let own = principal.site_id;
            dashboard::studies(&mut tx, None)
                .await?
                .into_iter()
                .filter_map(|mut study| {
                    let own = own.filter(|site| study.site_ids.contains(site))?;
                    study.site_ids = vec![own];
                    Some(study)
                })
                .collect()
        }
        // Admins; campaign and agent tokens were refused above.
        Role::Admin | Role::Campaign | Role::Agent => dashboard::studies(&mut tx, None).await?,
    };
    Ok(studies)
}

/// The study's funnel: journeys that reached each step, step-to-step conversion, pre-screen
/// pass, screen-failure and no-show rates, and journeys per current stage.
#[utoipa::path(get, path = "/v1/dashboards/studies/{study_id}/funnel", tag = "dashboards",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"), FilterParams),
    responses(
        (status = OK, description = "The funnel", body = StudyFunnelReport),
        (status = BAD_REQUEST, description = "A malformed or unknown query parameter, or a bad study id", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not this study's sponsor or site, another site's figures, or a campaign or agent token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "`from` is after `to`, or a country code that names no country", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The read model is still being built (see Retry-After), or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
async fn funnel(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    query: RawPairs,
) -> Result<Json<StudyFunnelReport>, ApiError> {
    let mut read = open_study(&state, &principal, path, query, (true, false)).await?;
    Ok(Json(
        dashboard::study_funnel(&mut read.tx, read.study, &read.filter).await?,
    ))
}

/// The site leaderboard: referrals and milestones per site, conversion, speed (median and p90
/// hours to first contact attempt, site contact and appointment), referrals not acted on, days
/// in process, rate vs monthly target, and flags for sites with 0–1 randomized or slower than
/// the study median. Sites without referrals are listed too.
#[utoipa::path(get, path = "/v1/dashboards/studies/{study_id}/sites", tag = "dashboards",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"), FilterParams),
    responses(
        (status = OK, description = "One row per site", body = SiteTable),
        (status = BAD_REQUEST, description = "A malformed or unknown query parameter, or a bad study id", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not this study's sponsor or site, another site's figures, or a campaign or agent token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "`from` is after `to`, or a country code that names no country", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The read model is still being built (see Retry-After), or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
async fn sites(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    query: RawPairs,
) -> Result<Json<SiteTable>, ApiError> {
    let mut read = open_study(&state, &principal, path, query, (true, false)).await?;
    let now = state.clock.now();
    Ok(Json(
        dashboard::site_table(&mut read.tx, read.study, &read.filter, now).await?,
    ))
}

/// A time series: one milestone counted per day, week or month of its own date, for the
/// study or per site. Empty buckets are included with 0.
#[utoipa::path(get, path = "/v1/dashboards/studies/{study_id}/timeseries", tag = "dashboards",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"), FilterParams, SeriesParams),
    responses(
        (status = OK, description = "The series, by site then bucket", body = TimeSeries),
        (status = BAD_REQUEST, description = "A malformed or unknown query parameter (e.g. an unknown bucket or metric), or a bad study id", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not this study's sponsor or site, another site's figures, or a campaign or agent token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "`from` is after `to`, or a country code that names no country", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The read model is still being built (see Retry-After), or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
async fn timeseries(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    query: RawPairs,
) -> Result<Json<TimeSeries>, ApiError> {
    let mut read = open_study(&state, &principal, path, query, (true, true)).await?;
    let SeriesParams {
        bucket,
        metric,
        by_site,
    } = read.series;
    Ok(Json(
        dashboard::time_series(
            &mut read.tx,
            read.study,
            &read.filter,
            bucket,
            metric,
            by_site,
        )
        .await?,
    ))
}

/// Cohorts by ISO week of referral, and how far each week's journeys got.
#[utoipa::path(get, path = "/v1/dashboards/studies/{study_id}/cohorts", tag = "dashboards",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"), FilterParams),
    responses(
        (status = OK, description = "One row per referral week, oldest first", body = CohortTable),
        (status = BAD_REQUEST, description = "A malformed or unknown query parameter, or a bad study id", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not this study's sponsor or site, another site's figures, or a campaign or agent token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "`from` is after `to`, or a country code that names no country", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The read model is still being built (see Retry-After), or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
async fn cohorts(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    query: RawPairs,
) -> Result<Json<CohortTable>, ApiError> {
    let mut read = open_study(&state, &principal, path, query, (true, false)).await?;
    Ok(Json(
        dashboard::cohorts(&mut read.tx, read.study, &read.filter).await?,
    ))
}

/// Source attribution: referrals, randomized and conversion per source channel and per
/// campaign, with spend, cost per referral and cost per randomized patient where spend was
/// recorded (per currency, in minor units).
#[utoipa::path(get, path = "/v1/dashboards/studies/{study_id}/sources", tag = "dashboards",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study"), FilterParams),
    responses(
        (status = OK, description = "Per channel and per campaign", body = SourceAttribution),
        (status = BAD_REQUEST, description = "A malformed or unknown query parameter, or a bad study id", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not this study's sponsor or site, another site's figures, or a campaign or agent token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, description = "`from` is after `to`, or a country code that names no country", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The read model is still being built (see Retry-After), or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
async fn sources(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    query: RawPairs,
) -> Result<Json<SourceAttribution>, ApiError> {
    let mut read = open_study(&state, &principal, path, query, (true, false)).await?;
    Ok(Json(
        dashboard::source_attribution(&mut read.tx, read.study, &read.filter).await?,
    ))
}

/// Target vs randomized, and the date the target is reached at the rate of the last 90 days.
///
/// Study-wide, so it takes no filters, and site tokens (which see their own site only) may
/// not read it.
#[utoipa::path(get, path = "/v1/dashboards/studies/{study_id}/forecast", tag = "dashboards",
    security(("bearer" = [])),
    params(("study_id" = Uuid, Path, description = "The study")),
    responses(
        (status = OK, description = "The forecast", body = TargetForecast),
        (status = BAD_REQUEST, description = "Any query parameter, or a bad study id", body = Problem, content_type = "application/problem+json"),
        (status = UNAUTHORIZED, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = FORBIDDEN, description = "Not this study's sponsor, or a site, campaign or agent token", body = Problem, content_type = "application/problem+json"),
        (status = NOT_FOUND, description = "No such study", body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, description = "Rate limit exceeded", body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, description = "The read model is still being built (see Retry-After), or PostgreSQL is not answering", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
async fn forecast(
    principal: Principal,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    query: RawPairs,
) -> Result<Json<TargetForecast>, ApiError> {
    require_forecast_reader(&principal)?;
    let mut read = open_study(&state, &principal, path, query, (false, false)).await?;
    let now = state.clock.now();
    dashboard::target_forecast(&mut read.tx, read.study, now)
        .await?
        .map(Json)
        // The summary was found in the same snapshot, so the study is there.
        .ok_or_else(|| ApiError::NotFound(format!("no study {}", read.study)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_params(
        raw: RawPairs,
        filters: bool,
        series: bool,
    ) -> Result<(FilterParams, SeriesParams), ApiError> {
        let Query(pairs) = raw
            .map_err(|rejection| ApiError::BadRequest(format!("bad query string: {rejection}")))?;
        parse_pairs(&pairs, filters, series)
    }

    fn pairs(query: &str) -> RawPairs {
        let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
        Query::try_from_uri(&uri)
    }

    #[test]
    fn filters_parse_with_repeated_values() {
        let site_a = Uuid::new_v4();
        let site_b = Uuid::new_v4();
        let (filter, series) = parse_params(
            pairs(&format!(
                "from=2026-03-01&to=2026-03-31&site={site_a}&site={site_b}&country=es&country=DE\
                 &source=ads&source=portal&bucket=week&metric=randomized&by_site=true"
            )),
            true,
            true,
        )
        .unwrap();
        assert_eq!(filter.from, NaiveDate::from_ymd_opt(2026, 3, 1));
        assert_eq!(filter.to, NaiveDate::from_ymd_opt(2026, 3, 31));
        assert_eq!(filter.site, [site_a, site_b]);
        assert_eq!(
            filter.country,
            [Country::parse("ES").unwrap(), Country::parse("DE").unwrap()]
        );
        assert_eq!(filter.source, [SourceChannel::Ads, SourceChannel::Portal]);
        assert_eq!(series.bucket, Bucket::Week);
        assert_eq!(series.metric, SeriesMetric::Randomized);
        assert!(series.by_site);
        let (_, series) = parse_params(pairs(""), true, true).unwrap();
        assert_eq!(
            (series.bucket, series.metric, series.by_site),
            (Bucket::Month, SeriesMetric::Referrals, false)
        );
    }

    #[test]
    fn bad_values_are_refused_with_what_was_wrong() {
        for (query, status, needle) in [
            ("from=yesterday", 400, "`from` must be a date"),
            ("to=2026-02-30", 400, "`to` must be a date"),
            ("site=hospital", 400, "`site` must be a site id"),
            ("country=XX", 422, "`country` must be an ISO"),
            ("country=Spain", 400, "`country` must be an ISO"),
            ("source=tv", 400, "`source` must be one of"),
            (
                "bucket=year",
                400,
                "`bucket` must be one of day, week, month",
            ),
            ("metric=visits", 400, "`metric` must be one of"),
            ("by_site=yes", 400, "`by_site` must be true or false"),
            ("sites=x", 400, "unknown query parameter `sites`"),
            ("from=2026-03-01&from=2026-03-02", 400, "may be given once"),
            ("from=2026-03-02&to=2026-03-01", 422, "is after `to`"),
        ] {
            let error = parse_params(pairs(query), true, true).unwrap_err();
            assert_eq!(error.status().as_u16(), status, "{query}: {error}");
            assert!(error.to_string().contains(needle), "{query}: {error}");
        }
        let error = parse_params(pairs("bucket=week"), true, false).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown query parameter `bucket`")
        );
        let error = parse_params(pairs("from=2026-03-01"), false, false).unwrap_err();
        assert!(error.to_string().contains("takes none"), "{error}");
    }
}
