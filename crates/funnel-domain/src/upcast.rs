//! The upcaster chain: how old event shapes keep decoding after a schema change.
//!
//! Events are immutable, so a stream written years ago still holds every old shape. Instead of
//! teaching the current structs every historic shape (a tangle of `Option`s and aliases),
//! each schema change registers one [`Upcaster`] that turns version `n` JSON into version
//! `n + 1` JSON. Decoding applies the steps in order until it reaches the current version and
//! then deserialises once, into the current struct. A missing step is an
//! [`DecodeError::UnsupportedVersion`], never a guess.
//!
//! Adding a version: bump the version in the catalogue (`events::journey` or `events::study`),
//! change the struct, add the upcaster from the previous version here, and add a test that a
//! stored payload of the previous version still decodes.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::codec::DecodeError;
use crate::events::{EventPayload, PrescreenCompleted};

/// One step of the chain: turns `event_type` JSON of `from_version` into `from_version + 1`.
#[derive(Clone, Copy, Debug)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: u16,
    /// The transformation. It fails (with a serde error) if the old JSON is not the shape that
    /// version promised.
    pub upcast: fn(Value) -> Result<Value, serde_json::Error>,
}

/// Every registered step. Order does not matter; steps are looked up by type and version.
pub const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: PrescreenCompleted::EVENT_TYPE,
    from_version: 0,
    upcast: prescreen_completed_v0_to_v1,
}];

/// Brings `data` of `event_type` from `version` up to `target` by applying the registered steps
/// in order.
///
/// # Errors
/// [`DecodeError::UnsupportedVersion`] if `version` is newer than `target` or a step is
/// missing, [`DecodeError::InvalidPayload`] if a step rejects the old JSON.
pub fn upcast(
    event_type: &str,
    version: u16,
    target: u16,
    mut data: Value,
) -> Result<Value, DecodeError> {
    let unsupported = || DecodeError::UnsupportedVersion {
        event_type: event_type.to_owned(),
        version,
        current: target,
    };
    if version > target {
        return Err(unsupported());
    }
    for step_version in version..target {
        let step = UPCASTERS
            .iter()
            .find(|step| step.event_type == event_type && step.from_version == step_version)
            .ok_or_else(unsupported)?;
        data = (step.upcast)(data).map_err(|source| DecodeError::InvalidPayload {
            event_type: event_type.to_owned(),
            version: step_version,
            source,
        })?;
    }
    Ok(data)
}

/// `funnel.journey.prescreen_completed` v0 → v1.
///
/// v0 is the shape the pilot intake wrote before the catalogue was frozen at v1: the outcome
/// as a `result` string (`"pass"` or `"fail"`) and at most one free-text `reason`. v1 records
/// a `passed` flag and a list of `reasons`, because a failed pre-screen usually fails on
/// several criteria at once and the screen-failure report counts each.
///
/// The timestamp is passed through untouched; the v1 deserialiser validates it.
fn prescreen_completed_v0_to_v1(data: Value) -> Result<Value, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum ResultV0 {
        Pass,
        Fail,
    }

    #[derive(Deserialize)]
    struct PrescreenCompletedV0 {
        at: Value,
        result: ResultV0,
        #[serde(default)]
        reason: Option<String>,
    }

    let old = PrescreenCompletedV0::deserialize(data)?;
    let reasons: Vec<String> = old
        .reason
        .filter(|reason| !reason.trim().is_empty())
        .into_iter()
        .collect();
    Ok(json!({
        "at": old.at,
        "passed": matches!(old.result, ResultV0::Pass),
        "reasons": reasons,
    }))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::codec::decode;
    use crate::events::{DomainEvent, JourneyEvent};

    fn at() -> DateTime<Utc> {
        "2025-03-04T10:15:00Z".parse().unwrap()
    }

    fn decoded_prescreen(version: u16, data: Value) -> PrescreenCompleted {
        match decode(PrescreenCompleted::EVENT_TYPE, version, data).unwrap() {
            DomainEvent::Journey(JourneyEvent::PrescreenCompleted(event)) => event,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn v0_failed_prescreen_becomes_v1_with_one_reason() {
        let v0 = json!({"at": "2025-03-04T10:15:00Z", "result": "fail", "reason": "age < 18"});
        assert_eq!(
            decoded_prescreen(0, v0),
            PrescreenCompleted {
                at: at(),
                passed: false,
                reasons: vec!["age < 18".to_owned()],
            }
        );
    }

    #[test]
    fn v0_passed_prescreen_without_reason_becomes_v1_with_no_reasons() {
        let v0 = json!({"at": "2025-03-04T10:15:00Z", "result": "pass"});
        assert_eq!(
            decoded_prescreen(0, v0),
            PrescreenCompleted {
                at: at(),
                passed: true,
                reasons: vec![],
            }
        );
        let blank_reason = json!({"at": "2025-03-04T10:15:00Z", "result": "pass", "reason": " "});
        assert!(decoded_prescreen(0, blank_reason).reasons.is_empty());
    }

    #[test]
    fn current_version_is_not_upcast() {
        let v1 = json!({"at": "2025-03-04T10:15:00Z", "passed": true, "reasons": ["bmi ok"]});
        assert_eq!(decoded_prescreen(1, v1.clone()).reasons, vec!["bmi ok"]);
        assert_eq!(
            upcast(PrescreenCompleted::EVENT_TYPE, 1, 1, v1.clone()).unwrap(),
            v1
        );
    }

    #[test]
    fn malformed_v0_is_an_invalid_payload_of_v0() {
        let v0 = json!({"at": "2025-03-04T10:15:00Z", "result": "maybe"});
        let error = decode(PrescreenCompleted::EVENT_TYPE, 0, v0).unwrap_err();
        assert!(
            matches!(error, DecodeError::InvalidPayload { version: 0, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_version_without_a_step_is_unsupported() {
        let error = decode(
            "funnel.journey.consented",
            0,
            json!({"at": "2025-03-04T10:15:00Z"}),
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::UnsupportedVersion {
                    version: 0,
                    current: 1,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_newer_version_is_unsupported() {
        let v2 = json!({"at": "2025-03-04T10:15:00Z", "passed": true, "reasons": []});
        let error = decode(PrescreenCompleted::EVENT_TYPE, 2, v2).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unsupported version 2 of `funnel.journey.prescreen_completed` (current is 1)"
        );
    }

    #[test]
    fn every_step_targets_a_catalogued_type_below_its_current_version() {
        for step in UPCASTERS {
            let current = DomainEvent::current_version(step.event_type)
                .unwrap_or_else(|| panic!("upcaster for unknown type {}", step.event_type));
            assert!(step.from_version < current, "{step:?}");
            let duplicates = UPCASTERS
                .iter()
                .filter(|other| {
                    other.event_type == step.event_type && other.from_version == step.from_version
                })
                .count();
            assert_eq!(duplicates, 1, "{step:?}");
        }
    }
}
