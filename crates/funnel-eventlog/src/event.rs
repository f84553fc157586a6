use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::error::{AppendError, ReadError};
use crate::key::StreamKey;
use crate::settings::has_control_chars;

/// CloudEvents 1.0 binary content mode over NATS: attributes are `ce-` headers.
pub(crate) mod ce {
    pub(crate) const SPECVERSION: &str = "ce-specversion";
    pub(crate) const ID: &str = "ce-id";
    pub(crate) const TYPE: &str = "ce-type";
    pub(crate) const SOURCE: &str = "ce-source";
    pub(crate) const TIME: &str = "ce-time";
    pub(crate) const SUBJECT: &str = "ce-subject";
    pub(crate) const DATACONTENTTYPE: &str = "ce-datacontenttype";
    pub(crate) const SPECVERSION_1_0: &str = "1.0";
    pub(crate) const JSON: &str = "application/json";
}

pub(crate) const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// An event to append. The payload is opaque JSON; the crate only checks that it parses.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Unique per event; becomes `Nats-Msg-Id` (server-side deduplication of retries) and `ce-id`.
    pub id: Uuid,
    /// The CloudEvents `type`, e.g. `com.example.funnel.referred.v1`.
    pub event_type: String,
    /// When it happened (CloudEvents `time`).
    pub time: DateTime<Utc>,
    /// The CloudEvents `subject`, e.g. the aggregate id.
    pub subject: String,
    /// The JSON payload.
    pub data: Bytes,
}

/// An event read back from the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// The stream sequence: the position in the whole log and the aggregate's version.
    pub seq: u64,
    /// The NATS subject it is stored on.
    pub subject: String,
    /// The aggregate the subject belongs to.
    pub key: StreamKey,
    pub id: Uuid,
    pub event_type: String,
    pub time: DateTime<Utc>,
    /// The CloudEvents `subject`.
    pub ce_subject: String,
    /// The CloudEvents `source`.
    pub source: String,
    pub data: Bytes,
}

impl NewEvent {
    pub(crate) fn validate(&self) -> Result<(), AppendError> {
        let invalid = |what: &str| Err(AppendError::Invalid(format!("event {}: {what}", self.id)));
        if self.event_type.is_empty() || has_control_chars(&self.event_type) {
            return invalid("the type must be a non-empty single line");
        }
        if has_control_chars(&self.subject) {
            return invalid("the subject must be a single line");
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&self.data).is_err() {
            return invalid("the data is not JSON");
        }
        Ok(())
    }

    /// `Nats-Msg-Id` plus the CloudEvents attributes; sequence checks and batch headers are added
    /// per send, since they depend on how the event is sent.
    pub(crate) fn headers(&self, source: &str) -> HeaderMap {
        let id = self.id.as_hyphenated().to_string();
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MSG_ID, id.as_str());
        headers.insert(ce::SPECVERSION, ce::SPECVERSION_1_0);
        headers.insert(ce::ID, id.as_str());
        headers.insert(ce::TYPE, self.event_type.as_str());
        headers.insert(ce::SOURCE, source);
        headers.insert(
            ce::TIME,
            self.time
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
                .as_str(),
        );
        if !self.subject.is_empty() {
            headers.insert(ce::SUBJECT, self.subject.as_str());
        }
        headers.insert(ce::DATACONTENTTYPE, ce::JSON);
        headers
    }
}

/// The event id a stored message carries (`Nats-Msg-Id`, else `ce-id`).
pub(crate) fn stored_event_id(headers: &HeaderMap) -> Option<Uuid> {
    headers
        .get(NATS_MSG_ID)
        .or_else(|| headers.get(ce::ID))
        .and_then(|value| Uuid::parse_str(value.as_str()).ok())
}

impl RecordedEvent {
    pub(crate) fn from_stored(
        prefix: &str,
        subject: &str,
        seq: u64,
        headers: &HeaderMap,
        data: Bytes,
    ) -> Result<Self, ReadError> {
        let malformed = |reason: &str| ReadError::Malformed {
            seq,
            subject: subject.to_owned(),
            reason: reason.to_owned(),
        };
        let text = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        let key = StreamKey::from_subject(prefix, subject)
            .ok_or_else(|| malformed("the subject is not <prefix>.<kind>.<uuid>"))?;
        let id = stored_event_id(headers).ok_or_else(|| malformed("no event id"))?;
        let event_type = text(ce::TYPE).ok_or_else(|| malformed("no ce-type"))?;
        let time = text(ce::TIME)
            .and_then(|time| DateTime::parse_from_rfc3339(&time).ok())
            .ok_or_else(|| malformed("no RFC 3339 ce-time"))?
            .with_timezone(&Utc);
        Ok(Self {
            seq,
            subject: subject.to_owned(),
            key,
            id,
            event_type,
            time,
            ce_subject: text(ce::SUBJECT).unwrap_or_default(),
            source: text(ce::SOURCE).unwrap_or_default(),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> NewEvent {
        NewEvent {
            id: Uuid::new_v4(),
            event_type: "funnel.referred.v1".to_owned(),
            time: Utc::now(),
            subject: "journey-1".to_owned(),
            data: Bytes::from_static(br#"{"a":1}"#),
        }
    }

    #[test]
    fn headers_round_trip_into_a_recorded_event() {
        let event = event();
        let key = StreamKey::new("journey", Uuid::new_v4()).unwrap();
        let subject = key.subject("p");
        let headers = event.headers("urn:test");
        assert_eq!(headers.get(ce::SPECVERSION).unwrap().as_str(), "1.0");
        assert_eq!(
            headers.get(ce::DATACONTENTTYPE).unwrap().as_str(),
            "application/json"
        );
        let recorded =
            RecordedEvent::from_stored("p", &subject, 7, &headers, event.data.clone()).unwrap();
        assert_eq!(recorded.key, key);
        assert_eq!(recorded.id, event.id);
        assert_eq!(recorded.time, event.time);
        assert_eq!(recorded.ce_subject, "journey-1");
        assert_eq!(recorded.source, "urn:test");
    }

    #[test]
    fn refuses_multi_line_types_and_non_json() {
        let mut bad = event();
        bad.event_type = "a\r\nb".to_owned();
        assert!(bad.validate().is_err());
        let mut bad = event();
        bad.data = Bytes::from_static(b"not json");
        assert!(bad.validate().is_err());
        assert!(event().validate().is_ok());
    }
}
