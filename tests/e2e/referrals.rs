//! Referral ingest over HTTP: idempotency for good, duplicate detection through keyed hashes,
//! batches with per-item results, and retries of a batch whose connection was dropped.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use funnel_api::auth::{NewToken, Role};
use funnel_api::commands::journey_key;
use funnel_domain::{
    CampaignId, CandidateId, JourneyCommand, JourneyId, Language, SealedContact, SiteId,
    SourceChannel, Stage, StudyCommand, StudyId,
};
use futures::TryStreamExt as _;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::helpers::fixtures::{at, contact, create_study, referral};
use crate::helpers::{TestApp, spawn_app};

const WAIT: Duration = Duration::from_secs(30);

/// A study with one site and one registered campaign, and that campaign's token.
pub(crate) struct Campaign {
    pub(crate) study: StudyId,
    pub(crate) site: SiteId,
    pub(crate) campaign: CampaignId,
    pub(crate) token: String,
}

pub(crate) async fn campaign(app: &TestApp) -> Campaign {
    let study = StudyId::new();
    let site = SiteId::new();
    let campaign = CampaignId::new();
    app.commands
        .execute_study(study, None, &create_study(study))
        .await
        .unwrap();
    app.commands
        .execute_study(
            study,
            None,
            &StudyCommand::AddSite {
                at: at(0),
                site_id: site,
                name: "Hospital Clínic".to_owned(),
                country: "ES".parse().unwrap(),
                languages: vec!["es".parse().unwrap()],
                monthly_target_randomized: 2.0,
            },
        )
        .await
        .unwrap();
    app.commands
        .execute_study(
            study,
            None,
            &StudyCommand::RegisterCampaign {
                at: at(0),
                campaign_id: campaign,
                name: "Spring ads".to_owned(),
                channel: SourceChannel::Ads,
            },
        )
        .await
        .unwrap();
    let token = app
        .token(NewToken {
            name: "campaign".to_owned(),
            role: Some(Role::Campaign),
            campaign_id: Some(campaign),
            study_ids: vec![study],
            ..NewToken::default()
        })
        .await;
    Campaign {
        study,
        site,
        campaign,
        token,
    }
}

pub(crate) fn body(
    c: &Campaign,
    external_id: &str,
    name: &str,
    phone: Option<&str>,
    email: Option<&str>,
) -> Value {
    let mut contact = json!({ "name": name, "notes": format!("{name} prefers calls after 18:00") });
    if let Some(phone) = phone {
        contact["phone"] = json!(phone);
    }
    if let Some(email) = email {
        contact["email"] = json!(email);
    }
    json!({
        "study_id": c.study,
        "campaign_id": c.campaign,
        "external_id": external_id,
        "source": "ads",
        "language": "es",
        "country": "ES",
        "preferred_site_id": c.site,
        "consent_to_contact": true,
        "time_zone": "Europe/Madrid",
        "contact": contact,
    })
}

/// A distinct person per number.
fn person(c: &Campaign, n: usize) -> Value {
    body(
        c,
        &format!("ext-{n}"),
        &format!("Person {n}"),
        Some(&format!("+34 6{n:08}")),
        Some(&format!("person{n}@example.org")),
    )
}

async fn rows(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// Every journey subject on the stream and how many messages it holds.
async fn journey_subjects(app: &TestApp) -> HashMap<String, usize> {
    let client = async_nats::connect(&app.nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(&app.eventlog.stream_name).await.unwrap();
    let subjects = stream
        .info_with_subjects(format!("{}.journey.>", app.eventlog.subject_prefix))
        .await
        .unwrap();
    subjects.try_collect().await.unwrap()
}

/// How many `referral_received` events a journey's stream holds.
async fn referrals_on(app: &TestApp, journey: JourneyId) -> usize {
    app.log
        .read(&journey_key(journey))
        .await
        .unwrap()
        .iter()
        .filter(|event| {
            event
                .event_type
                .starts_with("funnel.journey.referral_received")
        })
        .count()
}

fn journey_id(value: &Value) -> JourneyId {
    value["journey_id"].as_str().unwrap().parse().unwrap()
}

async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "a {status} is a problem document"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status);
    problem
}

#[tokio::test]
async fn a_referral_creates_one_journey_and_a_retry_days_later_replays_it_from_postgres() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let referral = body(
        &c,
        "cmp-4711",
        "Ana Pérez",
        Some("+34 612 345 678"),
        Some("ana@example.es"),
    );

    let created = app.post_json("/v1/referrals", &c.token, &referral).await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let etag = created.headers()["etag"].to_str().unwrap().to_owned();
    assert!(created.headers().get("idempotent-replayed").is_none());
    let first: Value = created.json().await.unwrap();
    assert_eq!(first["status"], "created");
    assert!(first.get("duplicate_of").is_none());
    let journey = journey_id(&first);
    assert_eq!(location, format!("/v1/journeys/{journey}"));
    assert_eq!(etag, format!("\"{}\"", first["version"]));
    let loaded = app.commands.load_journey(journey).await.unwrap();
    let state = loaded.state.journey().unwrap();
    assert_eq!(state.stage, Stage::Referred);
    assert_eq!(state.external_ref.as_deref(), Some("cmp-4711"));
    assert_eq!(state.preferred_site, Some(c.site));
    assert_eq!(
        state.candidate_id.to_string(),
        first["candidate_id"].as_str().unwrap()
    );
    let head = app.log.stream_head().await.unwrap();

    // Days later: far outside the stream's duplicate window. The answer comes from PostgreSQL.
    app.clock.advance(chrono::Duration::days(3));
    let replayed = app.post_json("/v1/referrals", &c.token, &referral).await;
    assert_eq!(replayed.status(), 200);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(replayed.headers()["location"].to_str().unwrap(), location);
    assert_eq!(replayed.headers()["etag"].to_str().unwrap(), etag);
    let second: Value = replayed.json().await.unwrap();
    assert_eq!(second, first, "a replay answers with the same body");

    // A retry with the phone in another spelling is still the same request.
    let mut respelled = referral.clone();
    respelled["contact"]["phone"] = json!("+34-612-345-678");
    let replayed = app.post_json("/v1/referrals", &c.token, &respelled).await;
    assert_eq!(replayed.status(), 200);

    // The same external id with another referral is refused.
    let mut other = referral.clone();
    other["contact"]["name"] = json!("Somebody Else");
    let refused = app.post_json("/v1/referrals", &c.token, &other).await;
    let problem = assert_problem(refused, 409).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("external_id"),
        "{problem}"
    );
    assert!(
        !problem.to_string().contains("Somebody"),
        "no contact data in problems"
    );

    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing appended by retries"
    );
    let subjects = journey_subjects(&app).await;
    assert_eq!(subjects.len(), 1, "exactly one journey on the stream");
    assert_eq!(referrals_on(&app, journey).await, 1);
    assert_eq!(rows(&app, "referral_requests").await, 1);
    assert_eq!(rows(&app, "candidate_journeys").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_stands_in_for_a_missing_external_id() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let mut referral = body(&c, "unused", "Jon", Some("+34 600 111 222"), None);
    referral.as_object_mut().unwrap().remove("external_id");

    let missing = app.post_json("/v1/referrals", &c.token, &referral).await;
    let problem = assert_problem(missing, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{problem}"
    );

    let post = || {
        app.http
            .post(app.url("/v1/referrals"))
            .bearer_auth(&c.token)
            .header("Idempotency-Key", "form-submission-81")
            .json(&referral)
            .send()
    };
    let created = post().await.unwrap();
    assert_eq!(created.status(), 201);
    let first: Value = created.json().await.unwrap();
    let replayed = post().await.unwrap();
    assert_eq!(replayed.status(), 200);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(replayed.json::<Value>().await.unwrap(), first);
    assert_eq!(journey_subjects(&app).await.len(), 1);
    let journey = app.commands.load_journey(journey_id(&first)).await.unwrap();
    assert_eq!(journey.state.journey().unwrap().external_ref, None);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_retries_of_one_referral_leave_one_journey() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let referral = body(&c, "cmp-race", "Eva", Some("+49 151 2345 6789"), None);
    let responses = futures::future::join_all(
        (0..8).map(|_| app.post_json("/v1/referrals", &c.token, &referral)),
    )
    .await;
    let mut journeys = HashSet::new();
    for response in responses {
        assert!(
            [200, 201].contains(&response.status().as_u16()),
            "{}",
            response.status()
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["status"], "created");
        journeys.insert(journey_id(&answer));
    }
    assert_eq!(journeys.len(), 1, "every retry names the same journey");
    let journey = *journeys.iter().next().unwrap();
    assert_eq!(journey_subjects(&app).await.len(), 1);
    assert_eq!(referrals_on(&app, journey).await, 1);
    app.stop().await;
}

/// The mechanism under a resumed referral: the same events (same ids) appended again to a
/// journey that has them already are recognised as the earlier append, not a second journey.
#[tokio::test]
async fn re_appending_a_referral_with_the_same_event_ids_is_recognised_as_done() {
    let app = spawn_app().await;
    let study = StudyId::new();
    app.commands
        .execute_study(study, None, &create_study(study))
        .await
        .unwrap();
    let journey = JourneyId::new();
    let candidate = CandidateId::new();
    let ids = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
    let person = contact("Ana", "+34 600 000 001", "ana@example.es");
    // Sealed afresh each time (another nonce), as a retry after a crash would.
    let commands = |sealed: SealedContact| {
        let mut referral = referral(journey, candidate, study);
        if let JourneyCommand::ReceiveReferral { contact, .. } = &mut referral {
            *contact = sealed;
        }
        vec![
            (ids[0], referral),
            (
                ids[1],
                JourneyCommand::CompletePrescreen {
                    at: at(2),
                    passed: true,
                    reasons: vec![],
                },
            ),
        ]
    };
    let first = app
        .commands
        .start_journey_with_ids(
            journey,
            &commands(app.keys.seal(candidate, &person).await.unwrap()),
        )
        .await
        .unwrap();
    // Freshly sealed and decided again, like a retry after a crash.
    let again = app
        .commands
        .start_journey_with_ids(
            journey,
            &commands(app.keys.seal(candidate, &person).await.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(again.version, first.version);
    let stored = app.log.read(&journey_key(journey)).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    let loaded = app.commands.load_journey(journey).await.unwrap();
    assert_eq!(loaded.state.stage(), Some(Stage::PrescreenPassed));
    app.stop().await;
}

#[tokio::test]
async fn a_prescreen_result_arrives_with_the_referral_in_one_append() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let mut referral = body(&c, "cmp-ps", "Lia", None, Some("lia@example.es"));
    referral["prescreen"] = json!({ "passed": false, "reasons": ["age_out_of_range"] });
    let created = app.post_json("/v1/referrals", &c.token, &referral).await;
    assert_eq!(created.status(), 201);
    let answer: Value = created.json().await.unwrap();
    let journey = journey_id(&answer);
    let stored = app.log.read(&journey_key(journey)).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].seq, stored[0].seq + 1, "one atomic append");
    assert_eq!(answer["version"], stored[1].seq);
    let loaded = app.commands.load_journey(journey).await.unwrap();
    let state = loaded.state.journey().unwrap();
    assert_eq!(state.stage, Stage::PrescreenFailed);
    assert_eq!(state.prescreen_reasons, vec!["age_out_of_range".to_owned()]);
    app.stop().await;
}

#[tokio::test]
async fn the_same_person_referred_again_is_linked_as_a_duplicate_through_keyed_hashes() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let first = app
        .post_json(
            "/v1/referrals",
            &c.token,
            &body(
                &c,
                "a-1",
                "Ana Pérez",
                Some("+34 612 345 678"),
                Some("ana@example.es"),
            ),
        )
        .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let primary = journey_id(&first);

    // The phone in other formatting, a new e-mail.
    let by_phone = app
        .post_json(
            "/v1/referrals",
            &c.token,
            &body(
                &c,
                "a-2",
                "Ana P.",
                Some("(+34) 612-345-678"),
                Some("ana.p@work.example"),
            ),
        )
        .await;
    assert_eq!(by_phone.status(), 201);
    let by_phone: Value = by_phone.json().await.unwrap();
    assert_eq!(by_phone["status"], "duplicate");
    assert_eq!(by_phone["duplicate_of"], first["journey_id"]);
    assert_eq!(
        by_phone["candidate_id"], first["candidate_id"],
        "one person, one candidate"
    );
    assert_ne!(by_phone["journey_id"], first["journey_id"]);

    // The e-mail in other case and spacing, no phone.
    let by_email = app
        .post_json(
            "/v1/referrals",
            &c.token,
            &body(&c, "a-3", "ANA", None, Some("  ANA@Example.ES ")),
        )
        .await;
    let by_email: Value = by_email.json().await.unwrap();
    assert_eq!(by_email["status"], "duplicate");
    assert_eq!(by_email["duplicate_of"], first["journey_id"]);

    // The e-mail only the second referral brought is the same person too.
    let by_new_email = app
        .post_json(
            "/v1/referrals",
            &c.token,
            &body(&c, "a-4", "A", None, Some("Ana.P@work.example")),
        )
        .await;
    let by_new_email: Value = by_new_email.json().await.unwrap();
    assert_eq!(by_new_email["duplicate_of"], first["journey_id"]);

    // Somebody else is not.
    let other = app
        .post_json(
            "/v1/referrals",
            &c.token,
            &body(
                &c,
                "b-1",
                "Bea",
                Some("+34 612 345 679"),
                Some("bea@example.es"),
            ),
        )
        .await;
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["status"], "created");

    // A replay of a duplicate says so again.
    let replay = app
        .post_json(
            "/v1/referrals",
            &c.token,
            &body(
                &c,
                "a-2",
                "Ana P.",
                Some("(+34) 612-345-678"),
                Some("ana.p@work.example"),
            ),
        )
        .await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.json::<Value>().await.unwrap(), by_phone);

    let duplicate = app
        .commands
        .load_journey(journey_id(&by_phone))
        .await
        .unwrap();
    let duplicate = duplicate.state.journey().unwrap();
    assert_eq!(duplicate.stage, Stage::Duplicate);
    assert_eq!(duplicate.duplicate_of, Some(primary));
    let stored = app
        .log
        .read(&journey_key(journey_id(&by_phone)))
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "referral and link");
    assert_eq!(stored[1].seq, stored[0].seq + 1, "in one atomic append");
    let primary_state = app.commands.load_journey(primary).await.unwrap();
    assert_eq!(
        primary_state.state.stage(),
        Some(Stage::Referred),
        "the primary carries on"
    );

    // Fingerprints: the primary holds its phone, its e-mail and the new e-mail; Bea two.
    let owners: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT journey_id FROM contact_fingerprints")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(owners.len(), 5);
    assert_eq!(
        owners
            .iter()
            .filter(|(owner,)| *owner == *primary.as_uuid())
            .count(),
        3
    );

    // Nothing in plaintext in PostgreSQL: not the digits, not the e-mails, not the names.
    let needles: [&[u8]; 8] = [
        b"612345678",
        b"+34612345678",
        b"612 345",
        b"ana@example.es",
        b"ana.p@work.example",
        b"bea@example.es",
        b"Ana",
        b"prefers calls",
    ];
    for table in [
        "contact_fingerprints",
        "referral_requests",
        "candidate_journeys",
        "service_secrets",
    ] {
        let texts: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM {table} t"
        )))
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        for (text,) in &texts {
            for needle in needles {
                assert!(
                    !text.as_bytes().windows(needle.len()).any(|w| w == needle),
                    "{} found in {table}",
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
    // The campaigns' own references are kept only as keyed hashes.
    let keys: Vec<(String,)> = sqlx::query_as("SELECT idempotency_key FROM referral_requests")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for (key,) in &keys {
        assert!(
            key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key} is not a keyed hash"
        );
    }
    let prints: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT fingerprint FROM contact_fingerprints")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    for (print,) in &prints {
        assert_eq!(print.len(), 32);
        for needle in needles {
            assert!(!print.windows(needle.len()).any(|w| w == needle));
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn two_concurrent_referrals_of_one_person_give_one_primary() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let responses = futures::future::join_all((0..6).map(|n| {
        let referral = body(
            &c,
            &format!("race-{n}"),
            "Ana",
            Some("+34 612 345 678"),
            Some(&format!("ana{n}@example.es")),
        );
        let app = &app;
        let token = c.token.clone();
        async move { app.post_json("/v1/referrals", &token, &referral).await }
    }))
    .await;
    let mut answers = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 201);
        answers.push(response.json::<Value>().await.unwrap());
    }
    let primaries: Vec<&Value> = answers
        .iter()
        .filter(|a| a["status"] == "created")
        .collect();
    assert_eq!(primaries.len(), 1, "exactly one primary: {answers:?}");
    let primary = &primaries[0]["journey_id"];
    for answer in answers.iter().filter(|a| a["status"] == "duplicate") {
        assert_eq!(&answer["duplicate_of"], primary);
    }
    app.stop().await;
}

/// Referrals stored together (one batch) that are the same person only through each other:
/// B shares A's phone, C shares only B's e-mail. Whatever order they are stored in, the person
/// gets one primary journey, every other one links to it, and all carry one candidate (one key).
#[tokio::test]
async fn a_person_referred_three_times_in_one_batch_gets_one_primary_through_chained_contacts() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let items = vec![
        body(&c, "chain-a", "Ana", Some("+34 612 000 111"), None),
        body(
            &c,
            "chain-b",
            "Ana P.",
            Some("+34 612 000 111"),
            Some("ana@example.es"),
        ),
        body(&c, "chain-c", "Ana Pérez", None, Some("ana@example.es")),
        person(&c, 7),
    ];
    let response = app
        .post_json(
            "/v1/referrals/batch",
            &c.token,
            &json!({ "referrals": items }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    let results = results["results"].as_array().unwrap();
    let same_person = &results[..3];
    let primaries: Vec<&Value> = same_person
        .iter()
        .filter(|r| r["status"] == "created")
        .collect();
    assert_eq!(primaries.len(), 1, "one primary: {results:?}");
    let primary = primaries[0];
    for result in same_person.iter().filter(|r| r["status"] != "created") {
        assert_eq!(result["status"], "duplicate", "{results:?}");
        assert_eq!(result["duplicate_of"], primary["journey_id"]);
        assert_eq!(result["candidate_id"], primary["candidate_id"]);
    }
    assert_eq!(results[3]["status"], "created");
    assert_ne!(results[3]["candidate_id"], primary["candidate_id"]);

    // Every fingerprint of the person is the primary's now: a fourth referral with only the
    // e-mail is linked to it too.
    let later: Value = app
        .post_json(
            "/v1/referrals",
            &c.token,
            &body(&c, "chain-d", "A. Pérez", None, Some("ana@example.es")),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(later["status"], "duplicate");
    assert_eq!(later["duplicate_of"], primary["journey_id"]);
    let owners: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "SELECT DISTINCT journey_id FROM contact_fingerprints WHERE journey_id <> $1",
    )
    .bind(journey_id(&results[3]).as_uuid())
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(owners, [(*journey_id(primary).as_uuid(),)]);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_reports_each_item_in_order_and_a_bad_item_fails_alone() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let mut bad_country = person(&c, 2);
    bad_country["country"] = json!("XX");
    let mut missing_contact = person(&c, 3);
    missing_contact.as_object_mut().unwrap().remove("contact");
    let mut foreign_site = person(&c, 5);
    foreign_site["preferred_site_id"] = json!(SiteId::new());
    let mut items = vec![
        person(&c, 0),
        person(&c, 1),
        bad_country,
        missing_contact,
        person(&c, 4),
        foreign_site,
    ];
    let batch = json!({ "referrals": items });

    let response = app.post_json("/v1/referrals/batch", &c.token, &batch).await;
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    let results = results["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 6);
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result["index"], index);
    }
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "created", "created", "rejected", "rejected", "created", "rejected"
        ]
    );
    assert_eq!(results[2]["error"]["status"], 422);
    assert!(
        results[2]["error"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("country")
    );
    assert!(
        results[3]["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("contact")
    );
    assert!(
        results[5]["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("preferred_site_id")
    );
    assert_eq!(journey_subjects(&app).await.len(), 3);
    let head = app.log.stream_head().await.unwrap();

    // The same batch again, plus the same person as item 0 under another external id: the good
    // items replay their journeys, the newcomer is linked as a duplicate.
    items.push(body(&c, "ext-6", "Person 0", Some("+34 600000000"), None));
    let batch = json!({ "referrals": items });
    let again: Value = app
        .post_json("/v1/referrals/batch", &c.token, &batch)
        .await
        .json()
        .await
        .unwrap();
    let again = again["results"].as_array().unwrap();
    let statuses: Vec<&str> = again
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "replayed",
            "replayed",
            "rejected",
            "rejected",
            "replayed",
            "rejected",
            "duplicate"
        ]
    );
    for index in [0, 1, 4] {
        assert_eq!(again[index]["journey_id"], results[index]["journey_id"]);
    }
    assert_eq!(again[6]["duplicate_of"], results[0]["journey_id"]);
    let duplicate = journey_id(&again[6]);
    assert_eq!(journey_subjects(&app).await.len(), 4);
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head + 2,
        "only the duplicate's referral and link were appended"
    );
    assert_eq!(
        app.log.read(&journey_key(duplicate)).await.unwrap().len(),
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_or_empty_batch_is_refused_whole_and_appends_nothing() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let head = app.log.stream_head().await.unwrap();
    let batch = json!({ "referrals": (0..1001).map(|n| person(&c, n)).collect::<Vec<_>>() });
    let refused = app.post_json("/v1/referrals/batch", &c.token, &batch).await;
    let problem = assert_problem(refused, 413).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("1000"),
        "{problem}"
    );
    let empty = app
        .post_json("/v1/referrals/batch", &c.token, &json!({ "referrals": [] }))
        .await;
    assert_problem(empty, 422).await;
    assert_eq!(app.log.stream_head().await.unwrap(), head);
    assert_eq!(rows(&app, "referral_requests").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn only_the_campaign_itself_may_post_and_a_refusal_appends_nothing() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let other_study = StudyId::new();
    app.commands
        .execute_study(other_study, None, &create_study(other_study))
        .await
        .unwrap();
    let other_campaign = app
        .token(NewToken {
            role: Some(Role::Campaign),
            campaign_id: Some(CampaignId::new()),
            study_ids: vec![c.study],
            ..NewToken::default()
        })
        .await;
    let agent = app
        .token(NewToken {
            role: Some(Role::Agent),
            agent_id: Some(funnel_domain::AgentId::new()),
            study_ids: vec![c.study],
            languages: vec![Language::parse("es").unwrap()],
            ..NewToken::default()
        })
        .await;
    let head = app.log.stream_head().await.unwrap();
    let referral = person(&c, 1);

    let wrong_campaign = app
        .post_json("/v1/referrals", &other_campaign, &referral)
        .await;
    assert_problem(wrong_campaign, 403).await;
    let mut to_other_study = referral.clone();
    to_other_study["study_id"] = json!(other_study);
    let wrong_study = app
        .post_json("/v1/referrals", &c.token, &to_other_study)
        .await;
    assert_problem(wrong_study, 403).await;
    let as_agent = app.post_json("/v1/referrals", &agent, &referral).await;
    assert_problem(as_agent, 403).await;
    let batch_as_agent = app
        .post_json(
            "/v1/referrals/batch",
            &agent,
            &json!({ "referrals": [referral] }),
        )
        .await;
    assert_problem(batch_as_agent, 403).await;
    let batch = app
        .post_json(
            "/v1/referrals/batch",
            &other_campaign,
            &json!({ "referrals": [person(&c, 1)] }),
        )
        .await;
    let batch: Value = batch.json().await.unwrap();
    assert_eq!(batch["results"][0]["status"], "rejected");
    assert_eq!(batch["results"][0]["error"]["status"], 403);
    let anonymous = app
        .http
        .post(app.url("/v1/referrals"))
        .json(&referral)
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401).await;

    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing appended"
    );
    assert_eq!(rows(&app, "referral_requests").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_problem_documents() {
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let admin = app.admin_token().await;
    let head = app.log.stream_head().await.unwrap();
    let post_raw = |content_type: &'static str, body: &'static str| {
        app.http
            .post(app.url("/v1/referrals"))
            .bearer_auth(&c.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    assert_problem(
        post_raw("application/json", "{\"study_id\":")
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_problem(post_raw("text/plain", "{}").await.unwrap(), 415).await;

    let mut missing = person(&c, 1);
    missing.as_object_mut().unwrap().remove("country");
    let problem = assert_problem(
        app.post_json("/v1/referrals", &c.token, &missing).await,
        422,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("country"),
        "{problem}"
    );

    let mut unknown_field = person(&c, 1);
    unknown_field["favourite_colour"] = json!("blue");
    assert_problem(
        app.post_json("/v1/referrals", &c.token, &unknown_field)
            .await,
        422,
    )
    .await;

    let mut bad_language = person(&c, 1);
    bad_language["language"] = json!("espanol!");
    let problem = assert_problem(
        app.post_json("/v1/referrals", &c.token, &bad_language)
            .await,
        422,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().starts_with("language"),
        "{problem}"
    );

    let no_way_to_call = body(&c, "x-1", "Nobody", None, None);
    let problem = assert_problem(
        app.post_json("/v1/referrals", &c.token, &no_way_to_call)
            .await,
        422,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("phone or an email")
    );

    let bad_phone = body(&c, "x-2", "Ana", Some("call 612 345 678 after six"), None);
    let problem = assert_problem(
        app.post_json("/v1/referrals", &c.token, &bad_phone).await,
        422,
    )
    .await;
    assert!(
        !problem.to_string().contains("612"),
        "the phone is not echoed: {problem}"
    );

    let mut long_id = person(&c, 1);
    long_id["external_id"] = json!("x".repeat(201));
    assert_problem(
        app.post_json("/v1/referrals", &c.token, &long_id).await,
        422,
    )
    .await;

    // An admin may post for any campaign, but the study must exist and know the campaign.
    let mut unknown_study = person(&c, 1);
    unknown_study["study_id"] = json!(StudyId::new());
    let problem = assert_problem(
        app.post_json("/v1/referrals", &admin, &unknown_study).await,
        422,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("study_id"),
        "{problem}"
    );
    let mut unregistered = person(&c, 1);
    unregistered["campaign_id"] = json!(CampaignId::new());
    assert_problem(
        app.post_json("/v1/referrals", &admin, &unregistered).await,
        422,
    )
    .await;
    let mut foreign_site = person(&c, 1);
    foreign_site["preferred_site_id"] = json!(SiteId::new());
    assert_problem(
        app.post_json("/v1/referrals", &c.token, &foreign_site)
            .await,
        422,
    )
    .await;

    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing appended"
    );
    assert_eq!(rows(&app, "referral_requests").await, 0, "nothing reserved");

    let created = app.post_json("/v1/referrals", &admin, &person(&c, 1)).await;
    assert_eq!(created.status(), 201, "an admin may post");
    app.stop().await;
}

/// Sends the batch on a raw connection and returns the connection without reading the answer:
/// dropping it is the client going away mid-request.
async fn send_and_keep(app: &TestApp, token: &str, batch: &Value) -> tokio::net::TcpStream {
    let body = serde_json::to_vec(batch).unwrap();
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/referrals/batch HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

#[tokio::test]
async fn a_campaign_retrying_the_same_batch_three_times_with_the_connection_dropped_mid_way_leaves_exactly_one_journey_per_referral()
 {
    const REFERRALS: usize = 300;
    let app = spawn_app().await;
    let c = campaign(&app).await;
    let batch = json!({ "referrals": (0..REFERRALS).map(|n| person(&c, n)).collect::<Vec<_>>() });

    // First try: the client gives up as soon as the server has started on the batch.
    let connection = send_and_keep(&app, &c.token, &batch).await;
    funnel_testkit::eventually("the server to start on the batch", WAIT, || async {
        (rows(&app, "referral_requests").await > 0).then_some(())
    })
    .await;
    drop(connection);
    // The abandoned batch goes on: items beyond the ones in flight at the drop get started.
    let at_drop = rows(&app, "referral_requests").await;
    let beyond = (at_drop + 33).min(REFERRALS as i64);
    funnel_testkit::eventually("the abandoned batch to carry on", WAIT, || async {
        (rows(&app, "referral_requests").await >= beyond).then_some(())
    })
    .await;

    // Second try: dropped right after sending, while the first may still be running.
    drop(send_and_keep(&app, &c.token, &batch).await);

    // Third try: waits for the answer.
    let response = app
        .http
        .post(app.url("/v1/referrals/batch"))
        .bearer_auth(&c.token)
        .json(&batch)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), REFERRALS);
    let mut answered = HashSet::new();
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result["index"], index);
        assert!(
            ["created", "replayed"].contains(&result["status"].as_str().unwrap()),
            "item {index}: {result}"
        );
        answered.insert(journey_id(result));
    }
    assert_eq!(answered.len(), REFERRALS, "one journey per referral");

    // The abandoned tries ran to completion in the background and added nothing of their own.
    let subjects = funnel_testkit::eventually("the stream to settle", WAIT, || async {
        let subjects = journey_subjects(&app).await;
        (subjects.len() == REFERRALS).then_some(subjects)
    })
    .await;
    assert_eq!(rows(&app, "referral_requests").await, REFERRALS as i64);
    assert_eq!(rows(&app, "candidate_journeys").await, REFERRALS as i64);
    let reserved: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT journey_id FROM referral_requests")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let reserved: HashSet<JourneyId> = reserved.into_iter().map(|(id,)| id.into()).collect();
    assert_eq!(
        reserved, answered,
        "the answered journeys are the reserved ones"
    );
    for journey in &answered {
        let subject = journey_key(*journey).subject(&app.eventlog.subject_prefix);
        assert_eq!(
            subjects.get(&subject),
            Some(&1),
            "{subject} holds exactly its referral"
        );
        assert_eq!(referrals_on(&app, *journey).await, 1);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_both_referral_routes_with_their_problems() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let routes = [
        ("/v1/referrals", ["200", "201"].as_slice()),
        ("/v1/referrals/batch", ["200"].as_slice()),
    ];
    for (path, success) in routes {
        let operation = &doc["paths"][path]["post"];
        assert!(operation.is_object(), "POST {path} is missing");
        assert_eq!(operation["security"], json!([{"bearer": []}]), "{path}");
        assert!(operation["requestBody"].is_object(), "{path}");
        for status in success {
            assert!(
                operation["responses"][status]["content"]["application/json"].is_object(),
                "POST {path} {status}"
            );
        }
        for status in ["400", "401", "403", "413", "415", "422", "429"] {
            assert_eq!(
                operation["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "POST {path} {status}"
            );
        }
    }
    assert!(
        doc["paths"]["/v1/referrals"]["post"]["responses"]["409"].is_object(),
        "a reused key is documented"
    );
    let item = &doc["components"]["schemas"]["ReferralRequest"];
    assert!(item["properties"]["contact"].is_object(), "{item}");
    app.stop().await;
}
