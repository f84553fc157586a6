//! The wire codec: events to `(type, version, JSON)` and back.
//!
//! The stored form of an event is its type name, its schema version and the JSON of its own
//! struct (no enum tag: the type name is the tag, kept in a header or envelope by the event
//! log). Decoding looks the type up in the catalogue, runs the [upcaster chain](crate::upcast)
//! from the stored version to the current one, and only then deserialises, so the domain only
//! ever sees current shapes.
//!
//! The same envelope (`{"event_type", "version", "data"}`) is what [`DomainEvent`],
//! [`JourneyEvent`] and [`StudyEvent`] use with serde, so a serialised event always says which
//! version it is and goes through upcasting when read back.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::events::{DomainEvent, JourneyEvent, StudyEvent};
use crate::upcast;

/// An event in its stored form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EncodedEvent {
    /// The stable type name, e.g. `funnel.journey.referral_received`.
    pub event_type: &'static str,
    /// The schema version of `data`.
    pub version: u16,
    /// The event's own struct as JSON.
    pub data: Value,
}

impl EncodedEvent {
    /// The CloudEvents `type` attribute, e.g. `funnel.journey.referral_received.v1`.
    #[must_use]
    pub fn cloud_event_type(&self) -> String {
        cloud_event_type(self.event_type, self.version)
    }
}

/// Why stored data could not be turned back into an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The type name is not in the catalogue (perhaps written by a newer release).
    #[error("unknown event type `{event_type}`")]
    UnknownType { event_type: String },
    /// The version is newer than this release knows, or older than any upcaster reaches.
    #[error("unsupported version {version} of `{event_type}` (current is {current})")]
    UnsupportedVersion {
        event_type: String,
        version: u16,
        current: u16,
    },
    /// The JSON does not have the shape its type and version promise.
    #[error("invalid payload for `{event_type}` v{version}: {source}")]
    InvalidPayload {
        event_type: String,
        version: u16,
        #[source]
        source: serde_json::Error,
    },
    /// A CloudEvents `type` that is not `{event_type}.v{version}`.
    #[error("malformed CloudEvents type `{0}`: expected `{{event_type}}.v{{version}}`")]
    MalformedCloudEventType(String),
}

/// Encodes an event for storage.
#[must_use]
pub fn encode(event: &DomainEvent) -> EncodedEvent {
    match event {
        DomainEvent::Journey(event) => encode_journey(event),
        DomainEvent::Study(event) => encode_study(event),
    }
}

/// Encodes a journey event for storage (same as [`encode`], without wrapping it first).
#[must_use]
pub fn encode_journey(event: &JourneyEvent) -> EncodedEvent {
    EncodedEvent {
        event_type: event.event_type(),
        version: event.version(),
        data: event.to_data(),
    }
}

/// Encodes a study event for storage (same as [`encode`], without wrapping it first).
#[must_use]
pub fn encode_study(event: &StudyEvent) -> EncodedEvent {
    EncodedEvent {
        event_type: event.event_type(),
        version: event.version(),
        data: event.to_data(),
    }
}

/// Decodes a stored event, upcasting older versions to the current one.
///
/// # Errors
/// [`DecodeError::UnknownType`], [`DecodeError::UnsupportedVersion`] or
/// [`DecodeError::InvalidPayload`].
pub fn decode(event_type: &str, version: u16, data: Value) -> Result<DomainEvent, DecodeError> {
    let current =
        DomainEvent::current_version(event_type).ok_or_else(|| DecodeError::UnknownType {
            event_type: event_type.to_owned(),
        })?;
    let data = upcast::upcast(event_type, version, current, data)?;
    let invalid = |source| DecodeError::InvalidPayload {
        event_type: event_type.to_owned(),
        version,
        source,
    };
    let is_journey_type = JourneyEvent::CATALOGUE
        .iter()
        .any(|&(name, _)| name == event_type);
    let decoded = if is_journey_type {
        JourneyEvent::from_data(event_type, data).map(|result| result.map(DomainEvent::Journey))
    } else {
        StudyEvent::from_data(event_type, data).map(|result| result.map(DomainEvent::Study))
    };
    match decoded {
        Some(result) => result.map_err(invalid),
        // Unreachable while the catalogue and the enums come from the same macro lists, but
        // answered properly rather than trusted.
        None => Err(DecodeError::UnknownType {
            event_type: event_type.to_owned(),
        }),
    }
}

/// Decodes a stored event whose type and version travel as a CloudEvents `type` attribute.
///
/// # Errors
/// As [`decode`], plus [`DecodeError::MalformedCloudEventType`].
pub fn decode_cloud_event(ce_type: &str, data: Value) -> Result<DomainEvent, DecodeError> {
    let (event_type, version) = parse_cloud_event_type(ce_type)?;
    decode(event_type, version, data)
}

/// Renders the CloudEvents `type` attribute: `{event_type}.v{version}`.
#[must_use]
pub fn cloud_event_type(event_type: &str, version: u16) -> String {
    format!("{event_type}.v{version}")
}

/// Splits a CloudEvents `type` attribute into the event type name and version. The name is not
/// checked against the catalogue here; [`decode`] does that.
///
/// # Errors
/// [`DecodeError::MalformedCloudEventType`] unless the text ends in `.v` and a decimal `u16`
/// after a non-empty name.
pub fn parse_cloud_event_type(ce_type: &str) -> Result<(&str, u16), DecodeError> {
    let malformed = || DecodeError::MalformedCloudEventType(ce_type.to_owned());
    let (event_type, version) = ce_type.rsplit_once(".v").ok_or_else(malformed)?;
    if event_type.is_empty() || version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let version = version.parse().map_err(|_| malformed())?;
    Ok((event_type, version))
}

/// The envelope as read back: like [`EncodedEvent`] but owning its type name.
#[derive(Deserialize)]
struct StoredEnvelope {
    event_type: String,
    version: u16,
    data: Value,
}

impl StoredEnvelope {
    fn decode<E: serde::de::Error>(self) -> Result<DomainEvent, E> {
        decode(&self.event_type, self.version, self.data).map_err(E::custom)
    }
}

impl Serialize for DomainEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        encode(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DomainEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StoredEnvelope::deserialize(deserializer)?.decode()
    }
}

impl Serialize for JourneyEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        encode_journey(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JourneyEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match StoredEnvelope::deserialize(deserializer)?.decode()? {
            DomainEvent::Journey(event) => Ok(event),
            DomainEvent::Study(event) => Err(serde::de::Error::custom(format!(
                "expected a journey event, found `{}`",
                event.event_type()
            ))),
        }
    }
}

impl Serialize for StudyEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        encode_study(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StudyEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match StoredEnvelope::deserialize(deserializer)?.decode()? {
            DomainEvent::Study(event) => Ok(event),
            DomainEvent::Journey(event) => Err(serde::de::Error::custom(format!(
                "expected a study event, found `{}`",
                event.event_type()
            ))),
        }
    }
}
