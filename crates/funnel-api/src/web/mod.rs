//! Web pages served by the service: server-rendered HTML for sponsors, site staff and team leads
//! (`/ui/...`), beside the JSON API and outside its OpenAPI document.
//!
//! The pages hold no rules of their own: every figure comes from the same query function, and
//! every access decision from the same authorisation, as the matching API route
//! (`routes::dashboards`, `routes::queues`, `routes::timeline`), with the caller's principal
//! resolved from a session cookie instead of a bearer header (`session`). They work without
//! JavaScript; a small script (`assets/live.js`) refreshes the figures every few seconds while
//! the tab is visible.

mod charts;
mod session;
mod views;

use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use funnel_domain::{JourneyId, SiteId, StudyId};
use funnel_projections::dashboard::{self, Bucket, DashboardFilter, SeriesMetric};
use maud::Markup;
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Role;
use crate::problem::{ApiError, error_chain};
use crate::routes::{dashboards, queues, timeline};
use session::WebSession;

const SIGN_IN: &str = "/ui/sign-in";

pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/ui/", get(index))
        .route(SIGN_IN, get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/studies/{study}", get(study_page))
        .route("/ui/studies/{study}/sites/{site}", get(site_page))
        .route("/ui/queues", get(queues_page))
        .route("/ui/journeys/{journey}", get(journey_page))
        .route("/ui/assets/app.css", get(stylesheet))
        .route("/ui/assets/live.js", get(script))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// What a page answers instead of itself.
#[derive(Debug)]
pub(crate) enum WebError {
    /// No live session: to the sign-in form (the stale cookie is cleared).
    SignIn,
    /// The API's refusal or failure, as an HTML page with the same status and detail.
    Api(ApiError),
}

impl From<ApiError> for WebError {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<sqlx::Error> for WebError {
    fn from(error: sqlx::Error) -> Self {
        Self::Api(error.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, HeaderValue::from_static(SIGN_IN)),
                    (header::SET_COOKIE, session::cleared_cookie()),
                ],
            )
                .into_response(),
            Self::Api(error) => {
                if let ApiError::Internal(source) = &error {
                    tracing::error!(error = %error_chain(source.as_ref()), "internal error");
                }
                let status = error.status();
                // The problem document's detail: written for callers, never internals.
                let detail = error.to_problem().detail.unwrap_or_default();
                let mut response = (status, views::error_page(status, &detail)).into_response();
                if let ApiError::TooManyRequests { retry_after_secs }
                | ApiError::NotReady {
                    retry_after_secs, ..
                } = error
                {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                }
                response
            }
        }
    }
}

/// Pages are personal and live: never cached, never framed, scripts and styles from here only
/// (so no inline script can run even if markup were ever injected).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: page addresses (with study and journey ids) never go to
    // another site, while the browser still names this origin in `Origin` on the pages' own
    // forms (under `no-referrer` it sends `Origin: null`, which the form check refuses).
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

fn id_path(path: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, WebError> {
    path.map(|Path(id)| id)
        .map_err(|_| ApiError::BadRequest("the address names no valid id".to_owned()).into())
}

/// The filter form's fields: a field left empty means "any", as if it were not sent.
fn filter_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, WebError> {
    let Query(pairs) = query.map_err(|rejection| {
        ApiError::BadRequest(format!("bad query string: {}", rejection.body_text()))
    })?;
    Ok(pairs
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Signing in and out.

async fn sign_in_page() -> Markup {
    views::sign_in(None)
}

#[derive(Debug, Default, Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, WebError> {
    session::require_same_origin(&headers)?;
    let form = form.map(|Form(form)| form).unwrap_or_default();
    let principal = state
        .tokens
        .authenticate(form.token.trim())
        .await
        .map_err(ApiError::from)?;
    let Some(principal) = principal else {
        return Ok((
            StatusCode::UNAUTHORIZED,
            views::sign_in(Some(
                "That token is unknown or revoked. Check that it was pasted whole.",
            )),
        )
            .into_response());
    };
    state.rate_limits.check(principal.token_id)?;
    let cookie = session::open(&state, principal.token_id, state.clock.now()).await?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, HeaderValue::from_static("/ui/")),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response())
}

async fn sign_out(
    session: WebSession,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    session::require_same_origin(&headers)?;
    session::end(&state, &session).await?;
    Err(WebError::SignIn)
}

// ---------------------------------------------------------------------------------------------
// Pages.

async fn index(session: WebSession, State(state): State<AppState>) -> Result<Markup, WebError> {
    let studies = dashboards::visible_studies(&state, &session.principal).await?;
    Ok(views::study_list(&session.principal, &studies))
}

/// Everything on a study page, read from one snapshot.
pub(crate) struct StudyFigures {
    /// The service clock's now, at which the figures were read.
    pub(crate) at: chrono::DateTime<chrono::Utc>,
    pub(crate) summary: dashboard::StudySummary,
    pub(crate) filter: DashboardFilter,
    pub(crate) funnel: dashboard::StudyFunnelReport,
    pub(crate) sites: dashboard::SiteTable,
    /// The study's sites the caller may filter by: (id, name).
    pub(crate) site_options: Vec<(SiteId, Option<String>)>,
    pub(crate) screenings: dashboard::TimeSeries,
    pub(crate) sources: dashboard::SourceAttribution,
    /// `None` for callers who may not read the study-wide forecast (site staff).
    pub(crate) forecast: Option<dashboard::TargetForecast>,
}

async fn study_figures(
    state: &AppState,
    session: &WebSession,
    study: StudyId,
    pairs: &[(String, String)],
) -> Result<StudyFigures, WebError> {
    let principal = &session.principal;
    let mut read =
        dashboards::open_study_with(state, principal, study, pairs, (true, false)).await?;
    let now = state.clock.now();
    let tx = &mut read.tx;
    let summary = dashboard::study_summary(tx, study)
        .await?
        // Found a moment ago in the same snapshot.
        .ok_or_else(|| ApiError::NotFound(format!("no study {study}")))?;
    let funnel = dashboard::study_funnel(tx, study, &read.filter).await?;
    let sites = dashboard::site_table(tx, study, &read.filter, now).await?;
    // The site picker lists the sites the caller may pick: the leaderboard's rows when no site
    // is picked (site staff see their own row only), else the rows without the pick.
    let site_options = if read.filter.site_ids.is_empty() || principal.role == Role::Site {
        sites
            .sites
            .iter()
            .map(|row| (row.site_id, row.name.clone()))
            .collect()
    } else {
        let every_site = DashboardFilter {
            site_ids: Vec::new(),
            ..read.filter.clone()
        };
        dashboard::site_table(tx, study, &every_site, now)
            .await?
            .sites
            .into_iter()
            .map(|row| (row.site_id, row.name))
            .collect()
    };
    let screenings = dashboard::time_series(
        tx,
        study,
        &read.filter,
        Bucket::Month,
        SeriesMetric::Screenings,
        false,
    )
    .await?;
    let sources = dashboard::source_attribution(tx, study, &read.filter).await?;
    let forecast = if dashboards::require_forecast_reader(principal).is_ok() {
        dashboard::target_forecast(tx, study, now).await?
    } else {
        None
    };
    Ok(StudyFigures {
        at: now,
        summary,
        filter: read.filter,
        funnel,
        sites,
        site_options,
        screenings,
        sources,
        forecast,
    })
}

async fn study_page(
    session: WebSession,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Markup, WebError> {
    let study = StudyId::from(id_path(path)?);
    let pairs = filter_pairs(query)?;
    let figures = study_figures(&state, &session, study, &pairs).await?;
    Ok(views::study_page(&session.principal, &figures))
}

async fn site_page(
    session: WebSession,
    State(state): State<AppState>,
    path: Result<Path<(Uuid, Uuid)>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Markup, WebError> {
    let Path((study, site)) =
        path.map_err(|_| ApiError::BadRequest("the address names no valid id".to_owned()))?;
    let study = StudyId::from(study);
    // The page is the study's figures cut to one site, through the API's own `site` filter
    // (which is also what keeps site staff to their own site).
    let mut pairs: Vec<(String, String)> = filter_pairs(query)?
        .into_iter()
        .filter(|(name, _)| name != "site")
        .collect();
    pairs.push(("site".to_owned(), site.to_string()));
    let figures = study_figures(&state, &session, study, &pairs).await?;
    let Some(row) = figures
        .sites
        .sites
        .iter()
        .find(|row| *row.site_id.as_uuid() == site)
    else {
        return Err(ApiError::NotFound(format!("study {study} has no site {site}")).into());
    };
    Ok(views::site_page(&session.principal, &figures, row))
}

async fn queues_page(
    session: WebSession,
    State(state): State<AppState>,
) -> Result<Markup, WebError> {
    let depth = queues::depth_report(&state, &session.principal, None).await?;
    let agents = queues::agents_report(&state, &session.principal, None, None, None).await?;
    Ok(views::queues_page(&session.principal, &depth, &agents))
}

async fn journey_page(
    session: WebSession,
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Markup, WebError> {
    let journey = JourneyId::from(id_path(path)?);
    let timeline = timeline::timeline(&state, &session.principal, journey).await?;
    Ok(views::journey_page(&session.principal, &timeline))
}
