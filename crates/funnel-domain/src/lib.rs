//! The recruitment funnel's domain: pure data and decisions, no I/O.
//!
//! * [`events`]: the event catalogue with stable type names and versions;
//! * [`codec`] and [`upcast`]: events to and from their stored JSON form;
//! * [`journey`]: one candidate's journey in one study (`decide` / `evolve` / `fold`);
//! * [`study`]: a study's setup, sites and campaigns (`decide_study` / `evolve_study`);
//! * [`ids`], [`values`], [`privacy`]: typed ids, validated values, sealed personal data.
//!
//! Nothing here reads a clock, draws a random number or touches the network: time and ids come
//! in through commands, so every decision can be replayed and tested exactly.
//!
//! ```
//! use funnel_domain::{
//!     CampaignId, CandidateId, Country, DomainError, JourneyCommand, JourneyId, JourneyState,
//!     Language, SealedContact, SourceChannel, Stage, StudyId, decide, encode, evolve,
//! };
//!
//! let at = "2025-01-06T09:00:00Z".parse().unwrap();
//! let referral = JourneyCommand::ReceiveReferral {
//!     at,
//!     journey_id: JourneyId::new(),
//!     candidate_id: CandidateId::new(),
//!     study_id: StudyId::new(),
//!     campaign_id: CampaignId::new(),
//!     source: SourceChannel::Portal,
//!     language: Language::parse("es").unwrap(),
//!     country: Country::parse("es").unwrap(),
//!     preferred_site: None,
//!     consent_to_contact: true,
//!     contact: SealedContact {
//!         alg: "xchacha20poly1305".into(),
//!         nonce: "bm9uY2U=".into(),
//!         ciphertext: "c2VhbGVk".into(),
//!     },
//!     external_ref: None,
//!     time_zone: Some("Europe/Madrid".into()),
//! };
//! let events = decide(&JourneyState::NotStarted, &referral).unwrap();
//! let state = events.iter().fold(JourneyState::NotStarted, evolve);
//! assert_eq!(state.stage(), Some(Stage::Referred));
//!
//! // Randomizing a journey that has not even been screened appends nothing.
//! let randomize = JourneyCommand::Randomize { at, arm: None };
//! let error = decide(&state, &randomize).unwrap_err();
//! assert_eq!(error.to_string(), "`randomize` is not allowed in stage `referred`");
//!
//! let stored = encode(&events[0].clone().into());
//! assert_eq!(stored.cloud_event_type(), "funnel.journey.referral_received.v1");
//! ```

pub mod codec;
pub mod error;
pub mod events;
pub mod ids;
pub mod journey;
pub mod privacy;
pub mod study;
pub mod upcast;
mod validate;
pub mod values;

pub use codec::{
    DecodeError, EncodedEvent, cloud_event_type, decode, decode_cloud_event, encode,
    encode_journey, encode_study, parse_cloud_event_type,
};
pub use error::DomainError;
pub use events::{DomainEvent, EventPayload, JourneyEvent, StudyEvent};
pub use ids::*;
pub use journey::{
    Callback, FhirSubjectState, Journey, JourneyCommand, JourneyState, Stage, decide, evolve, fold,
};
pub use privacy::{ContactDetails, SealedContact};
pub use study::{
    Campaign, Site, SiteStatus, Study, StudyCommand, StudyState, decide_study, evolve_study,
    fold_study,
};
pub use values::{
    ContactChannel, ContactOutcome, Country, Currency, Language, SlaSettings, SourceChannel,
    ValueError,
};
