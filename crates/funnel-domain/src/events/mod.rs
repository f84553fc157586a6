//! The event catalogue: every fact the funnel records, with its stable type name and schema
//! version.
//!
//! Each event is its own struct carrying an `at` business timestamp (when it happened in the
//! world, which is not when it was stored). The structs are grouped into [`JourneyEvent`] (one
//! candidate's journey in one study) and [`StudyEvent`] (study and site setup), and both into
//! [`DomainEvent`].
//!
//! Type names (`funnel.journey.referral_received`) and versions are part of the stored data:
//! they never change once published. A change to an event's shape bumps its version and adds an
//! upcaster (see [`crate::upcast`]) so that the old shape keeps decoding.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod journey;
pub mod study;

pub use journey::*;
pub use study::*;

/// Implemented by every event struct: its stable type name and current schema version.
pub trait EventPayload: Serialize + DeserializeOwned {
    /// The stable, dotted, lowercase type name, e.g. `funnel.journey.referral_received`.
    const EVENT_TYPE: &'static str;
    /// The current schema version of this event's payload.
    const VERSION: u16;

    /// When the fact happened (business time).
    fn at(&self) -> DateTime<Utc>;
}

/// Serialises an event struct to JSON. Event structs contain only strings, numbers, booleans,
/// timestamps, ids and lists of those, which always serialise; a failure here is a bug in the
/// catalogue itself, caught by the round-trip tests.
fn payload_to_json<T: Serialize>(payload: &T) -> serde_json::Value {
    serde_json::to_value(payload).expect("event payloads always serialise to JSON")
}

/// Declares an event enum from `Variant(PayloadStruct) = ("type.name", version)` lines and
/// derives, from that single list, the `EventPayload` impls, `From` conversions, the type
/// registry and the codec's per-type dispatch, so that a name or version cannot drift between
/// them.
macro_rules! event_catalogue {
    (
        $(#[$enum_meta:meta])*
        pub enum $enum:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident($payload:ident) = ($event_type:literal, $version:literal),
            )+
        }
    ) => {
        $(#[$enum_meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub enum $enum {
            $(
                $(#[$variant_meta])*
                $variant($payload),
            )+
        }

        $(
            impl $crate::events::EventPayload for $payload {
                const EVENT_TYPE: &'static str = $event_type;
                const VERSION: u16 = $version;

                fn at(&self) -> ::chrono::DateTime<::chrono::Utc> {
                    self.at
                }
            }

            impl From<$payload> for $enum {
                fn from(event: $payload) -> Self {
                    Self::$variant(event)
                }
            }
        )+

        impl $enum {
            /// Every `(type name, current version)` of this enum, in catalogue order.
            pub const CATALOGUE: &'static [(&'static str, u16)] = &[$(($event_type, $version),)+];

            /// The stable type name of this event.
            #[must_use]
            pub const fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $event_type,)+
                }
            }

            /// The schema version this event is written with.
            #[must_use]
            pub const fn version(&self) -> u16 {
                match self {
                    $(Self::$variant(_) => $version,)+
                }
            }

            /// When the fact happened (business time).
            #[must_use]
            pub fn at(&self) -> ::chrono::DateTime<::chrono::Utc> {
                match self {
                    $(Self::$variant(event) => event.at,)+
                }
            }

            /// The event's own struct as JSON, without any tag.
            pub(crate) fn to_data(&self) -> ::serde_json::Value {
                match self {
                    $(Self::$variant(event) => $crate::events::payload_to_json(event),)+
                }
            }

            /// Deserialises current-version JSON for `event_type`; `None` if the type is not
            /// one of this enum's.
            pub(crate) fn from_data(
                event_type: &str,
                data: ::serde_json::Value,
            ) -> Option<Result<Self, ::serde_json::Error>> {
                match event_type {
                    $($event_type => Some(::serde_json::from_value(data).map(Self::$variant)),)+
                    _ => None,
                }
            }
        }
    };
}

pub(crate) use event_catalogue;

/// Any event of the funnel.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainEvent {
    Journey(JourneyEvent),
    Study(StudyEvent),
}

impl DomainEvent {
    /// The stable type name, e.g. `funnel.study.site_added`.
    #[must_use]
    pub const fn event_type(&self) -> &'static str {
        match self {
            Self::Journey(event) => event.event_type(),
            Self::Study(event) => event.event_type(),
        }
    }

    /// The schema version this event is written with.
    #[must_use]
    pub const fn version(&self) -> u16 {
        match self {
            Self::Journey(event) => event.version(),
            Self::Study(event) => event.version(),
        }
    }

    /// When the fact happened (business time).
    #[must_use]
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Journey(event) => event.at(),
            Self::Study(event) => event.at(),
        }
    }

    /// The CloudEvents `type` attribute, e.g. `funnel.journey.referral_received.v1`.
    #[must_use]
    pub fn cloud_event_type(&self) -> String {
        crate::codec::cloud_event_type(self.event_type(), self.version())
    }

    /// Every `(type name, current version)` in the catalogue.
    pub fn catalogue() -> impl Iterator<Item = (&'static str, u16)> {
        JourneyEvent::CATALOGUE
            .iter()
            .chain(StudyEvent::CATALOGUE)
            .copied()
    }

    /// The current version of a type name, or `None` if the name is not in the catalogue.
    #[must_use]
    pub fn current_version(event_type: &str) -> Option<u16> {
        Self::catalogue().find_map(|(name, version)| (name == event_type).then_some(version))
    }
}

impl From<JourneyEvent> for DomainEvent {
    fn from(event: JourneyEvent) -> Self {
        Self::Journey(event)
    }
}

impl From<StudyEvent> for DomainEvent {
    fn from(event: StudyEvent) -> Self {
        Self::Study(event)
    }
}
