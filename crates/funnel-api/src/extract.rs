//! Request extractors whose rejections are problem documents like every other error.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// `Json<T>` whose rejections say what was wrong: 415 without a JSON content type, 413 over the
/// body limit, 400 for broken JSON, 422 for JSON of the wrong shape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

pub(crate) fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "the body must be JSON with `Content-Type: application/json`".to_owned(),
        ),
        JsonRejection::JsonDataError(err) => ApiError::Unprocessable(body_text(&err.body_text())),
        JsonRejection::JsonSyntaxError(err) => ApiError::BadRequest(body_text(&err.body_text())),
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is larger than allowed".to_owned())
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// serde's messages name the field and the problem; axum prefixes them with its own wording.
fn body_text(text: &str) -> String {
    text.replace(
        "Failed to deserialize the JSON body into the target type: ",
        "",
    )
    .replace(
        "Failed to parse the request body as JSON: ",
        "the body is not valid JSON: ",
    )
}

/// The `If-Match` precondition: the aggregate version (stream sequence) the caller last saw,
/// written as an entity tag, `"42"` (or bare `42`). `*` and absence mean "any version".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_if_match(&parts.headers).map(Self)
    }
}

pub(crate) fn parse_if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("If-Match must be ASCII".to_owned()))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    tag.parse().map(Some).map_err(|_| {
        ApiError::BadRequest(format!(
            "If-Match must be a version as returned in ETag (e.g. \"42\"), not {text}"
        ))
    })
}

/// The `ETag` header for an aggregate version.
#[must_use]
pub(crate) fn etag(version: u64) -> (axum::http::HeaderName, HeaderValue) {
    (
        ETAG,
        HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(if_match: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IF_MATCH, HeaderValue::from_str(if_match).unwrap());
        headers
    }

    #[test]
    fn if_match_accepts_entity_tags_and_bare_numbers() {
        assert_eq!(parse_if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(parse_if_match(&headers("\"42\"")).unwrap(), Some(42));
        assert_eq!(parse_if_match(&headers("W/\"7\"")).unwrap(), Some(7));
        assert_eq!(parse_if_match(&headers("13")).unwrap(), Some(13));
        assert_eq!(parse_if_match(&headers("*")).unwrap(), None);
        assert!(matches!(
            parse_if_match(&headers("\"abc\"")),
            Err(ApiError::BadRequest(_))
        ));
    }
}
