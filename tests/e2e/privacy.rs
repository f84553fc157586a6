use funnel_domain::{CandidateId, JourneyCommand, JourneyEvent, JourneyId, StudyId};
use funnel_privacy::Opened;

use crate::helpers::fixtures::{at, contact, create_study, referral};
use crate::helpers::spawn_app;

/// Personal data never reaches the stream in plaintext: dump every byte of every message
/// (subjects, headers, payloads) and look for the names, phones and e-mails that went in.
#[tokio::test]
async fn the_raw_stream_holds_no_plaintext_personal_data() {
    let app = spawn_app().await;
    let study = StudyId::new();
    app.commands
        .execute_study(study, None, &create_study(study))
        .await
        .unwrap();

    let people = [
        (
            "María José Fernández",
            "+34 612 345 678",
            "mj.fernandez@example.es",
        ),
        ("Günther Weiß", "+49 151 2345 6789", "g.weiss@example.de"),
        ("Zoë O'Brien", "+353 87 123 4567", "zoe.obrien@example.ie"),
    ];
    let mut journeys = Vec::new();
    for (name, phone, email) in people {
        let candidate = CandidateId::new();
        let journey = JourneyId::new();
        app.commands
            .receive_referral(
                &app.keys,
                candidate,
                &contact(name, phone, email),
                referral(journey, candidate, study),
            )
            .await
            .unwrap();
        journeys.push((journey, candidate, contact(name, phone, email)));
    }

    let dump = app.raw_stream_dump().await;
    let text = String::from_utf8_lossy(&dump);
    assert!(
        text.contains("funnel.journey.referral_received.v1"),
        "the dump holds the referrals"
    );
    for (name, phone, email) in people {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        for needle in [name, phone, digits.as_str(), email, "prefers calls"] {
            assert!(
                !text.contains(needle),
                "{needle:?} found in plaintext on the stream"
            );
        }
        for part in name.split_whitespace() {
            assert!(
                !text.contains(part),
                "{part:?} found in plaintext on the stream"
            );
        }
    }

    // The sealed data on the stream opens with the candidate's key, and only until it is erased.
    for (journey, candidate, expected) in &journeys {
        let sealed = sealed_contact_of(&app, *journey).await;
        assert_eq!(
            app.keys.open(*candidate, &sealed).await.unwrap(),
            Opened::Contact(expected.clone())
        );
    }
    let (journey, candidate, _) = &journeys[0];
    let erased = app
        .commands
        .execute_journey(
            *journey,
            None,
            &JourneyCommand::ErasePersonalData { at: at(60) },
        )
        .await
        .unwrap();
    assert!(matches!(
        erased.events[..],
        [JourneyEvent::PersonalDataErased(_)]
    ));
    assert!(app.keys.erase(*candidate).await.unwrap());
    let sealed = sealed_contact_of(&app, *journey).await;
    assert_eq!(
        app.keys.open(*candidate, &sealed).await.unwrap(),
        Opened::Erased,
        "the copy on the stream is unreadable now"
    );
    let (other_journey, other_candidate, other_contact) = &journeys[1];
    let sealed = sealed_contact_of(&app, *other_journey).await;
    assert_eq!(
        app.keys.open(*other_candidate, &sealed).await.unwrap(),
        Opened::Contact(other_contact.clone()),
        "erasing one candidate leaves the others readable"
    );
    app.stop().await;
}

async fn sealed_contact_of(
    app: &crate::helpers::TestApp,
    journey: JourneyId,
) -> funnel_domain::SealedContact {
    let loaded = app.commands.load_journey(journey).await.unwrap();
    let stored = app
        .log
        .read(&funnel_api::commands::journey_key(journey))
        .await
        .unwrap();
    assert!(loaded.state.is_started());
    let first = funnel_api::commands::decode_recorded(&stored[0]).unwrap();
    match first {
        funnel_domain::DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) => {
            referral.contact
        }
        other => panic!("the first event is the referral, not {other:?}"),
    }
}
