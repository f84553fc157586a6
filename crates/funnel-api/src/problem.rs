//! The one place where errors become HTTP responses: RFC 9457 `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, in words a caller can act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problem {
    #[must_use]
    pub fn new(status: StatusCode, detail: impl Into<Option<String>>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Errors of the HTTP layer, each mapped to its status here and nowhere else. Internal causes
/// are logged with their chain and never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed syntax: not JSON, a bad header, a bad path parameter.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the aggregate's state (an illegal transition names the stage).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` named a version that is no longer current.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed but semantically invalid (a country that does not exist, a blank reason).
    #[error("{0}")]
    Unprocessable(String),
    #[error("too many requests; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// A read model is not built yet (first start, rebuild): the same request succeeds once
    /// its projector has caught up, so the caller is told when to retry.
    #[error("{detail}")]
    NotReady {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("the request took too long")]
    Timeout,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem document a caller sees.
    #[must_use]
    pub fn to_problem(&self) -> Problem {
        let detail = match self {
            Self::Internal(_) => {
                "The request could not be completed; it has been logged.".to_owned()
            }
            other => other.to_string(),
        };
        Problem::new(self.status(), detail)
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(source) = &self {
            tracing::error!(error = %error_chain(source.as_ref()), "internal error");
        }
        let mut response = self.to_problem().into_response();
        if let Self::TooManyRequests { retry_after_secs }
        | Self::NotReady {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `outer: inner: root` — the whole cause chain on one line for the logs.
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How long a caller waits before asking a read model that is still being built again.
const READ_MODEL_RETRY_AFTER_SECS: u64 = 5;

impl From<funnel_projections::ReadModelError> for ApiError {
    fn from(error: funnel_projections::ReadModelError) -> Self {
        match error {
            funnel_projections::ReadModelError::NotReady(name) => Self::NotReady {
                detail: format!(
                    "the `{name}` read model is still being built from the event stream; \
                     retry shortly"
                ),
                retry_after_secs: READ_MODEL_RETRY_AFTER_SECS,
            },
            funnel_projections::ReadModelError::Database(error) => error.into(),
        }
    }
}

/// Read-model queries: PostgreSQL out of reach is a 503 worth retrying, anything else a bug or
/// a broken schema (500). The cause is logged either way and never sent.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::warn!(error = %error_chain(&error), "PostgreSQL is not answering");
                Self::Unavailable("PostgreSQL is not answering; retry shortly".to_owned())
            }
            other => Self::internal(other),
        }
    }
}

/// Token checks: the token store out of reach is a 503 like any PostgreSQL outage (the
/// caller's token may be perfectly good); a stored token that no longer parses is a 500.
impl From<crate::auth::TokenError> for ApiError {
    fn from(error: crate::auth::TokenError) -> Self {
        match error {
            crate::auth::TokenError::Store(error) => error.into(),
            invalid @ crate::auth::TokenError::Invalid(_) => Self::internal(invalid),
        }
    }
}

/// Referral storage: PostgreSQL out of reach is a 503 worth retrying (the referral's retry is
/// idempotent), anything else a 500.
impl From<crate::ingest::ClaimError> for ApiError {
    fn from(error: crate::ingest::ClaimError) -> Self {
        match error {
            crate::ingest::ClaimError::Database(error)
                if matches!(
                    *error,
                    sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
                ) =>
            {
                tracing::warn!(error = %error_chain(&*error), "PostgreSQL is not answering");
                Self::Unavailable("PostgreSQL is not answering; retry shortly".to_owned())
            }
            other => Self::internal(other),
        }
    }
}

impl From<crate::commands::CommandError> for ApiError {
    fn from(error: crate::commands::CommandError) -> Self {
        use crate::commands::CommandError;
        use funnel_domain::DomainError;
        match error {
            CommandError::Domain(domain) => match domain {
                DomainError::NotStarted | DomainError::StudyNotCreated => {
                    Self::NotFound(domain.to_string())
                }
                DomainError::Invalid(_)
                | DomainError::UnknownSite(_)
                | DomainError::UnknownCampaign(_) => Self::Unprocessable(domain.to_string()),
                _ => Self::Conflict(domain.to_string()),
            },
            CommandError::StaleVersion { .. } => Self::PreconditionFailed(format!(
                "{error}; read it again and decide on its current state"
            )),
            CommandError::Contended => Self::Conflict(error.to_string()),
            CommandError::Append(
                funnel_eventlog::AppendError::Unavailable { .. }
                | funnel_eventlog::AppendError::ShutDown,
            ) => Self::Unavailable(
                "the event log is not answering; retrying the same request is safe".to_owned(),
            ),
            CommandError::Privacy(funnel_privacy::PrivacyError::Erased) => {
                Self::Conflict("the candidate's personal data has been erased".to_owned())
            }
            other => Self::internal(other),
        }
    }
}
