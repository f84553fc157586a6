//! Typed identifiers. Each wraps a UUID so that a site id can never be passed where a study id
//! is expected; none of them carries personal data, so they are safe in subjects, logs and metrics.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random (time-ordered, v7) id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.as_hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

typed_id!(
    /// The organisation paying for a study.
    SponsorId
);
typed_id!(
    /// One clinical study (trial).
    StudyId
);
typed_id!(
    /// One investigative site of a study.
    SiteId
);
typed_id!(
    /// One patient, across studies. Personal data is keyed (and crypto-shredded) by this id.
    CandidateId
);
typed_id!(
    /// One candidate's journey in one study: the event-sourced aggregate.
    JourneyId
);
typed_id!(
    /// A recruitment campaign (a source of referrals).
    CampaignId
);
typed_id!(
    /// A member of the Enrollment Support Team.
    AgentId
);
typed_id!(
    /// The unique id of one stored event (also its idempotency key on the stream).
    EventId
);
