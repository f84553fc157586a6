//! CloudEvents 1.0 over HTTP as input, for partner systems: structured mode
//! (`application/cloudevents+json`), batched mode (`application/cloudevents-batch+json`) and
//! binary mode (`ce-*` headers with the data as a JSON body). All three become the same
//! [`IncomingEvent`]; what it means is decided by the route.

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::problem::ApiError;

/// Largest number of events in one batched-mode request.
pub(crate) const MAX_BATCH: usize = 1000;

/// One CloudEvent as received, with the context attributes the service uses.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncomingEvent {
    /// Must be `1.0`.
    pub(crate) specversion: String,
    /// Unique per source: together with `source`, the idempotency key of the event.
    pub(crate) id: String,
    /// The partner system, as a URI reference.
    pub(crate) source: String,
    /// e.g. `funnel.referral.submitted.v1` or `funnel.journey.appointment_scheduled.v1`.
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    /// The journey id, for journey events.
    #[serde(default)]
    pub(crate) subject: Option<String>,
    #[serde(default)]
    pub(crate) time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub(crate) datacontenttype: Option<String>,
    #[serde(default)]
    pub(crate) dataschema: Option<String>,
    /// The payload: the same JSON the native route takes.
    #[serde(default)]
    pub(crate) data: Value,
}

/// How a request carried its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Structured,
    Batched,
    Binary,
}

/// Reads the events of a request in whichever mode it used.
pub(crate) fn parse(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Mode, Vec<IncomingEvent>), ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let events = match content_type.as_str() {
        "application/cloudevents+json" => (Mode::Structured, vec![from_json(body)?]),
        "application/cloudevents-batch+json" => {
            let events: Vec<IncomingEvent> = typed(json_value(body)?)?;
            if events.is_empty() || events.len() > MAX_BATCH {
                return Err(ApiError::Unprocessable(format!(
                    "a batch holds 1 to {MAX_BATCH} events, not {}",
                    events.len()
                )));
            }
            (Mode::Batched, events)
        }
        "application/json" => (Mode::Binary, vec![from_binary(headers, body)?]),
        "" => {
            return Err(ApiError::UnsupportedMediaType(
                "a Content-Type is required: application/cloudevents+json, \
                 application/cloudevents-batch+json, or application/json with ce-* headers"
                    .to_owned(),
            ));
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "`{other}` is not a CloudEvents HTTP mode: use application/cloudevents+json, \
                 application/cloudevents-batch+json, or application/json with ce-* headers"
            )));
        }
    };
    for event in &events.1 {
        validate(event)?;
    }
    Ok(events)
}

fn from_json(body: &[u8]) -> Result<IncomingEvent, ApiError> {
    typed(json_value(body)?)
}

/// Syntax first: a body that is not JSON at all is a 400, whatever shape it started with.
fn json_value(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))
}

/// Then shape: JSON that is not a CloudEvent (or a batch of them) is a 422.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value)
        .map_err(|err| ApiError::Unprocessable(format!("not a CloudEvent: {err}")))
}

fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<IncomingEvent, ApiError> {
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|value| {
                value
                    .to_str()
                    .map(str::to_owned)
                    .map_err(|_| ApiError::BadRequest(format!("{name} must be ASCII")))
            })
            .transpose()
    };
    let required = |name: &str| -> Result<String, ApiError> {
        header(name)?.ok_or_else(|| {
            ApiError::Unprocessable(format!("binary-mode CloudEvents need the `{name}` header"))
        })
    };
    let time = header("ce-time")?
        .map(|time| {
            DateTime::parse_from_rfc3339(&time)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|_| ApiError::Unprocessable(format!("ce-time `{time}` is not RFC 3339")))
        })
        .transpose()?;
    let data = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))?
    };
    Ok(IncomingEvent {
        specversion: required("ce-specversion")?,
        id: required("ce-id")?,
        source: required("ce-source")?,
        event_type: required("ce-type")?,
        subject: header("ce-subject")?,
        time,
        datacontenttype: Some("application/json".to_owned()),
        dataschema: header("ce-dataschema")?,
        data,
    })
}

fn validate(event: &IncomingEvent) -> Result<(), ApiError> {
    if event.specversion != "1.0" {
        return Err(ApiError::Unprocessable(format!(
            "specversion `{}` is not supported; send 1.0",
            event.specversion
        )));
    }
    if event.id.trim().is_empty() || event.id.len() > 200 {
        return Err(ApiError::Unprocessable(
            "id must be 1 to 200 characters".to_owned(),
        ));
    }
    if event.source.trim().is_empty() || event.source.len() > 500 {
        return Err(ApiError::Unprocessable(
            "source must be 1 to 500 characters".to_owned(),
        ));
    }
    if let Some(content_type) = &event.datacontenttype
        && !content_type.starts_with("application/json")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "datacontenttype `{content_type}` is not supported; data must be JSON"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn structured_binary_and_batched_modes_read_the_same_event() {
        let structured = br#"{"specversion":"1.0","id":"e-1","source":"urn:ctms","type":"funnel.journey.consented.v1","subject":"j","time":"2026-03-01T10:00:00Z","datacontenttype":"application/json","data":{"at":"2026-03-01T10:00:00Z"}}"#;
        let (mode, one) = parse(
            &headers(&[(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )]),
            structured,
        )
        .unwrap();
        assert_eq!(mode, Mode::Structured);

        let binary = headers(&[
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "urn:ctms"),
            ("ce-type", "funnel.journey.consented.v1"),
            ("ce-subject", "j"),
            ("ce-time", "2026-03-01T10:00:00Z"),
        ]);
        let (mode, two) = parse(&binary, br#"{"at":"2026-03-01T10:00:00Z"}"#).unwrap();
        assert_eq!(mode, Mode::Binary);
        assert_eq!(one, two);

        let batch = format!("[{}]", String::from_utf8_lossy(structured));
        let (mode, three) = parse(
            &headers(&[("content-type", "application/cloudevents-batch+json")]),
            batch.as_bytes(),
        )
        .unwrap();
        assert_eq!(mode, Mode::Batched);
        assert_eq!(one, three);
    }

    #[test]
    fn malformed_events_are_client_errors() {
        let structured = |body: &str| {
            parse(
                &headers(&[("content-type", "application/cloudevents+json")]),
                body.as_bytes(),
            )
        };
        assert!(matches!(structured("{"), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            structured(r#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            structured(r#"{"specversion":"1.0","id":"","source":"s","type":"t"}"#),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            structured(r#"{"specversion":"1.0","source":"s","type":"t"}"#),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            structured(
                r#"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/xml"}"#
            ),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(&headers(&[("content-type", "text/plain")]), b"x"),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(
                &headers(&[
                    ("content-type", "application/json"),
                    ("ce-specversion", "1.0")
                ]),
                b"{}"
            ),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            parse(
                &headers(&[("content-type", "application/cloudevents-batch+json")]),
                b"[]"
            ),
            Err(ApiError::Unprocessable(_))
        ));
    }
}
