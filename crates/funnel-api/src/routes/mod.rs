//! Routes. Each handler is annotated for the OpenAPI document, which is generated from them.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::OpenApi;
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod cloudevents;
pub(crate) mod dashboards;
mod journeys;
mod privacy;
pub(crate) mod queues;
mod referrals;
mod setup;
pub(crate) mod timeline;

use crate::app::{AppState, READINESS_TIMEOUT};
use crate::metrics::{self, HttpMetrics};
use crate::problem::{ApiError, Problem};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "funnel",
        description = "Event-sourced patient-recruitment funnel for clinical trials."
    ),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "setup", description = "Studies, sites and campaigns (admin)"),
        (name = "referrals", description = "Referral ingest for campaigns"),
        (name = "journeys", description = "What happens in a candidate's journey"),
        (name = "privacy", description = "Data-protection requests"),
        (name = "dashboards", description = "Funnel figures for sponsors, site staff and admins"),
        (name = "queues", description = "Enrollment Support Team work queues: claim, work and complete items (agents); depth and completions (team leads)")
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem))
)]
struct ApiDoc;

/// Declares the bearer-token scheme that every non-operations route requires.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            utoipa::openapi::security::SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(utoipa::openapi::security::HttpAuthScheme::Bearer)
                    .bearer_format("fnl_<id>_<secret>")
                    .build(),
            ),
        );
    }
}

pub(crate) fn router(state: AppState, http_metrics: HttpMetrics) -> axum::Router {
    // The web pages are a plain router beside the API's: no tags, not in the OpenAPI document.
    let web = crate::web::routes(state.clone());
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics_text))
        .merge(setup::routes())
        .merge(referrals::routes())
        .merge(journeys::routes())
        .merge(timeline::routes())
        .merge(cloudevents::routes())
        .merge(privacy::routes())
        .merge(dashboards::routes())
        .merge(queues::routes())
        .with_state(state)
        .split_for_parts();
    let api = std::sync::Arc::new(api);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || openapi_json(api.clone())),
        )
        .merge(web)
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            metrics::track,
        ))
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok` when the process answers.
    status: &'static str,
}

/// Liveness: the process is up and answering.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = OK, description = "The process is alive", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ready` when every dependency answered.
    status: &'static str,
    /// The stream's last sequence, i.e. how many events have been appended.
    stream_head: u64,
}

/// Readiness: PostgreSQL and the event stream both answer, and no read model has stopped at
/// an event it cannot apply.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = OK, description = "Ready to serve", body = Readiness),
        (status = SERVICE_UNAVAILABLE, description = "A dependency is not answering",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let database = tokio::time::timeout(
        READINESS_TIMEOUT,
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db),
    );
    let stream = tokio::time::timeout(READINESS_TIMEOUT, state.events.stream_head());
    // A projection that stopped at an event it cannot apply serves stale figures: say so.
    let stopped = tokio::time::timeout(
        READINESS_TIMEOUT,
        sqlx::query_scalar::<_, String>(
            "SELECT name || ' (generation ' || generation || ')' FROM projection_generations \
             WHERE status = 'failed' AND state <> 'retired' ORDER BY name, generation",
        )
        .fetch_all(&state.db),
    );
    let (database, stream, stopped) = tokio::join!(database, stream, stopped);
    let mut failing = Vec::new();
    if !matches!(database, Ok(Ok(_))) {
        failing.push("PostgreSQL".to_owned());
    }
    if let Ok(Ok(stopped)) = stopped {
        failing.extend(
            stopped
                .into_iter()
                .map(|name| format!("the projection {name}, stopped at an event it cannot apply")),
        );
    }
    let stream_head = match stream {
        Ok(Ok(head)) => head,
        _ => {
            failing.push("the NATS event stream".to_owned());
            0
        }
    };
    if failing.is_empty() {
        Ok(Json(Readiness {
            status: "ready",
            stream_head,
        }))
    } else {
        Err(ApiError::Unavailable(format!(
            "not answering: {}",
            failing.join(", ")
        )))
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = OK, description = "Prometheus text format", body = String,
        content_type = "text/plain; version=0.0.4")))]
async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&state.registry.gather(), &mut text) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        )
            .into_response(),
        Err(err) => ApiError::Internal(Box::new(err)).into_response(),
    }
}

async fn no_such_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "there is no route {}; /openapi.json lists them all",
        uri.path()
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; /openapi.json lists the methods",
            uri.path()
        ),
    )
}

async fn openapi_json(api: std::sync::Arc<OpenApi>) -> Response {
    match api.to_json() {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(err) => ApiError::Internal(Box::new(err)).into_response(),
    }
}
