//! Example-based tests of the stored form: type names, versions, the codec and CloudEvents.

use std::collections::HashSet;

use funnel_domain::events::{PrescreenCompleted, SiteAdded};
use funnel_domain::{
    DecodeError, DomainEvent, EventPayload, JourneyEvent, StudyEvent, cloud_event_type, decode,
    decode_cloud_event, encode, parse_cloud_event_type,
};
use serde_json::json;

use crate::support::*;

fn referral_event() -> DomainEvent {
    let (_, log) = run(&happy_path()[..1]).unwrap();
    DomainEvent::Journey(log[0].clone())
}

#[test]
fn type_names_are_unique_dotted_lowercase_and_versioned() {
    let mut seen = HashSet::new();
    for (event_type, version) in DomainEvent::catalogue() {
        assert!(seen.insert(event_type), "duplicate {event_type}");
        assert_eq!(version, 1, "{event_type}");
        let mut parts = event_type.split('.');
        assert_eq!(parts.next(), Some("funnel"));
        assert!(
            matches!(parts.next(), Some("journey" | "study")),
            "{event_type}"
        );
        let name = parts.next().unwrap_or_default();
        assert!(!name.is_empty() && parts.next().is_none(), "{event_type}");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{event_type}"
        );
    }
    assert_eq!(seen.len(), 22 + 7);
    assert!(
        JourneyEvent::CATALOGUE
            .iter()
            .all(|(name, _)| name.starts_with("funnel.journey."))
    );
    assert!(
        StudyEvent::CATALOGUE
            .iter()
            .all(|(name, _)| name.starts_with("funnel.study."))
    );
    assert_eq!(
        PrescreenCompleted::EVENT_TYPE,
        "funnel.journey.prescreen_completed"
    );
    assert_eq!(SiteAdded::EVENT_TYPE, "funnel.study.site_added");
}

#[test]
fn encode_writes_the_event_struct_without_a_tag() {
    let encoded = encode(&referral_event());
    assert_eq!(encoded.event_type, "funnel.journey.referral_received");
    assert_eq!(encoded.version, 1);
    assert_eq!(
        encoded.data,
        json!({
            "at": "2025-01-06T09:00:00Z",
            "journey_id": JOURNEY.to_string(),
            "candidate_id": CANDIDATE.to_string(),
            "study_id": STUDY.to_string(),
            "campaign_id": CAMPAIGN.to_string(),
            "source": "ads",
            "language": "es",
            "country": "ES",
            "preferred_site": SITES[0].to_string(),
            "consent_to_contact": true,
            "contact": {
                "alg": "xchacha20poly1305",
                "nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "ciphertext": "c2VhbGVk",
            },
            "external_ref": "fb-lead-42",
            "time_zone": "Europe/Madrid",
        })
    );
    assert_eq!(
        encoded.cloud_event_type(),
        "funnel.journey.referral_received.v1"
    );
    let decoded = decode(encoded.event_type, encoded.version, encoded.data).unwrap();
    assert_eq!(decoded, referral_event());
}

#[test]
fn decode_names_what_is_wrong() {
    let error = decode("funnel.journey.teleported", 1, json!({})).unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnknownType { event_type } if event_type == "funnel.journey.teleported")
    );
    assert_eq!(
        error.to_string(),
        "unknown event type `funnel.journey.teleported`"
    );

    let error = decode("funnel.journey.consented", 7, json!({})).unwrap_err();
    assert!(matches!(
        error,
        DecodeError::UnsupportedVersion {
            version: 7,
            current: 1,
            ..
        }
    ));

    let error = decode("funnel.journey.consented", 1, json!({"at": "yesterday"})).unwrap_err();
    assert!(matches!(
        error,
        DecodeError::InvalidPayload { version: 1, .. }
    ));
    assert!(
        error
            .to_string()
            .starts_with("invalid payload for `funnel.journey.consented` v1")
    );

    // Validation of value types happens while decoding, too.
    let mut data = encode(&referral_event()).data;
    data["country"] = json!("XX");
    assert!(matches!(
        decode("funnel.journey.referral_received", 1, data),
        Err(DecodeError::InvalidPayload { .. })
    ));
}

#[test]
fn cloud_event_types_render_and_parse() {
    assert_eq!(
        cloud_event_type("funnel.study.site_added", 1),
        "funnel.study.site_added.v1"
    );
    assert_eq!(
        parse_cloud_event_type("funnel.journey.referral_received.v1").unwrap(),
        ("funnel.journey.referral_received", 1)
    );
    assert_eq!(
        parse_cloud_event_type("funnel.journey.prescreen_completed.v12").unwrap(),
        ("funnel.journey.prescreen_completed", 12)
    );
    for bad in [
        "funnel.journey.consented",
        "funnel.journey.consented.v",
        "funnel.journey.consented.vx",
        "funnel.journey.consented.v+1",
        "funnel.journey.consented.v70000",
        ".v1",
    ] {
        assert!(
            matches!(
                parse_cloud_event_type(bad),
                Err(DecodeError::MalformedCloudEventType(_))
            ),
            "{bad}"
        );
    }
    let event = referral_event();
    let data = encode(&event).data;
    assert_eq!(
        decode_cloud_event(&event.cloud_event_type(), data).unwrap(),
        event
    );
}

#[test]
fn serde_uses_the_versioned_envelope_and_upcasts() {
    let event = referral_event();
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["event_type"], "funnel.journey.referral_received");
    assert_eq!(json["version"], 1);
    assert_eq!(
        serde_json::from_value::<DomainEvent>(json.clone()).unwrap(),
        event
    );
    let DomainEvent::Journey(journey_event) = &event else {
        unreachable!("a referral is a journey event")
    };
    assert_eq!(
        &serde_json::from_value::<JourneyEvent>(json.clone()).unwrap(),
        journey_event
    );
    assert!(serde_json::from_value::<StudyEvent>(json).is_err());

    let stored_v0 = json!({
        "event_type": "funnel.journey.prescreen_completed",
        "version": 0,
        "data": {"at": "2025-01-06T09:00:00Z", "result": "fail", "reason": "pregnant"},
    });
    let event: JourneyEvent = serde_json::from_value(stored_v0).unwrap();
    assert_eq!(
        event,
        JourneyEvent::PrescreenCompleted(PrescreenCompleted {
            at: t(0),
            passed: false,
            reasons: vec!["pregnant".to_owned()],
        })
    );
}
