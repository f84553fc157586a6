//! The candidate timeline over HTTP: a journey's history read from the stream, in stream order
//! with the stage each event led to, and the contact data only for those who may see it.

use funnel_api::auth::{NewToken, Role};
use funnel_api::clock::Clock as _;
use funnel_api::commands::journey_key;
use funnel_domain::{
    AgentId, CampaignId, CandidateId, JourneyId, Language, SiteId, SponsorId, StudyId,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::setup::{json_with_etag, problem};

/// Sets a study up over the API the way an admin does: the study for `sponsor`, and returns it.
pub(crate) async fn create_study(
    app: &TestApp,
    admin: &str,
    sponsor: SponsorId,
    target_randomized: u32,
) -> StudyId {
    let response = app
        .post_json(
            "/v1/studies",
            admin,
            &json!({
                "sponsor_id": sponsor,
                "title": "Migraine prevention, phase III",
                "protocol_code": "MIG-301",
                "target_randomized": target_randomized,
                "countries": ["ES", "DE"],
                "languages": ["es", "de"],
            }),
        )
        .await;
    let (created, _) = json_with_etag(response, StatusCode::CREATED).await;
    created["study_id"].as_str().unwrap().parse().unwrap()
}

pub(crate) async fn add_site(
    app: &TestApp,
    admin: &str,
    study: StudyId,
    name: &str,
    country: &str,
    monthly_target_randomized: f64,
) -> SiteId {
    let response = app
        .post_json(
            &format!("/v1/studies/{study}/sites"),
            admin,
            &json!({
                "name": name,
                "country": country,
                "languages": [if country == "DE" { "de" } else { "es" }],
                "monthly_target_randomized": monthly_target_randomized,
            }),
        )
        .await;
    let (added, _) = json_with_etag(response, StatusCode::CREATED).await;
    added["site_id"].as_str().unwrap().parse().unwrap()
}

/// Registers a campaign over the API and returns it with a token that posts for it.
pub(crate) async fn register_campaign(
    app: &TestApp,
    admin: &str,
    study: StudyId,
    name: &str,
    channel: &str,
) -> (CampaignId, String) {
    let response = app
        .post_json(
            &format!("/v1/studies/{study}/campaigns"),
            admin,
            &json!({"name": name, "channel": channel}),
        )
        .await;
    let (registered, _) = json_with_etag(response, StatusCode::CREATED).await;
    let campaign: CampaignId = registered["campaign_id"].as_str().unwrap().parse().unwrap();
    let token = app
        .token(NewToken {
            name: format!("campaign {name}"),
            role: Some(Role::Campaign),
            campaign_id: Some(campaign),
            study_ids: vec![study],
            ..NewToken::default()
        })
        .await;
    (campaign, token)
}

/// One referral as a campaign posts it.
pub(crate) struct Referral<'a> {
    pub(crate) study: StudyId,
    pub(crate) campaign: CampaignId,
    pub(crate) source: &'a str,
    pub(crate) country: &'a str,
    pub(crate) language: &'a str,
    pub(crate) external_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) prescreen_passed: Option<bool>,
}

impl Referral<'_> {
    pub(crate) fn phone(&self) -> String {
        let digits: u32 = self.external_id.bytes().map(u32::from).sum();
        format!("+34 600 {digits:06}")
    }

    pub(crate) fn email(&self) -> String {
        format!("{}@example.org", self.external_id)
    }

    pub(crate) fn notes(&self) -> String {
        format!("{} prefers calls after 18:00", self.name)
    }
}

/// Posts a referral over the API and returns the journey and candidate it started.
pub(crate) async fn post_referral(
    app: &TestApp,
    campaign_token: &str,
    referral: &Referral<'_>,
) -> (JourneyId, CandidateId) {
    let mut body = json!({
        "study_id": referral.study,
        "campaign_id": referral.campaign,
        "external_id": referral.external_id,
        "source": referral.source,
        "language": referral.language,
        "country": referral.country,
        "consent_to_contact": true,
        "time_zone": "Europe/Madrid",
        "contact": {
            "name": referral.name,
            "phone": referral.phone(),
            "email": referral.email(),
            "notes": referral.notes(),
        },
    });
    if let Some(passed) = referral.prescreen_passed {
        body["prescreen"] = json!({"passed": passed, "reasons": ["age in range"]});
    }
    let response = app.post_json("/v1/referrals", campaign_token, &body).await;
    let (accepted, _) = json_with_etag(response, StatusCode::CREATED).await;
    (
        accepted["journey_id"].as_str().unwrap().parse().unwrap(),
        accepted["candidate_id"].as_str().unwrap().parse().unwrap(),
    )
}

/// Records a step that must succeed and returns the answer.
pub(crate) async fn step(app: &TestApp, token: &str, journey: JourneyId, body: &Value) -> Value {
    let response = app
        .post_json(&format!("/v1/journeys/{journey}/events"), token, body)
        .await;
    json_with_etag(response, StatusCode::CREATED).await.0
}

/// A study with two sites and a campaign, its sponsor, and a token of every role and scope.
struct World {
    study: StudyId,
    site_a: SiteId,
    campaign: CampaignId,
    campaign_token: String,
    admin: String,
    /// The study's Spanish-speaking agent: the journeys here are in Spanish.
    agent: String,
    /// The study's German-speaking agent: wrong language.
    agent_de: String,
    /// A Spanish-speaking agent of another study.
    agent_other_study: String,
    site_a_staff: String,
    /// Staff of the study's other site.
    site_b_staff: String,
    sponsor: String,
    /// The sponsor of another study.
    other_sponsor: String,
}

async fn world(app: &TestApp) -> World {
    let admin = app.admin_token().await;
    let sponsor = SponsorId::new();
    let other_sponsor = SponsorId::new();
    let study = create_study(app, &admin, sponsor, 40).await;
    let other_study = create_study(app, &admin, other_sponsor, 40).await;
    let site_a = add_site(app, &admin, study, "Hospital La Paz", "ES", 1.0).await;
    let site_b = add_site(app, &admin, study, "Hospital Clínic", "ES", 1.0).await;
    let (campaign, campaign_token) =
        register_campaign(app, &admin, study, "Spring ads", "ads").await;
    let agent = |study: StudyId, language: &str| NewToken {
        name: format!("agent {language}"),
        role: Some(Role::Agent),
        agent_id: Some(AgentId::new()),
        study_ids: vec![study],
        languages: vec![Language::parse(language).unwrap()],
        ..NewToken::default()
    };
    let site = |site: SiteId| NewToken {
        role: Some(Role::Site),
        site_id: Some(site),
        ..NewToken::default()
    };
    let sponsor_token = |sponsor: SponsorId| NewToken {
        role: Some(Role::Sponsor),
        sponsor_id: Some(sponsor),
        ..NewToken::default()
    };
    World {
        study,
        site_a,
        campaign,
        campaign_token,
        agent: app.token(agent(study, "es")).await,
        agent_de: app.token(agent(study, "de")).await,
        agent_other_study: app.token(agent(other_study, "es")).await,
        site_a_staff: app.token(site(site_a)).await,
        site_b_staff: app.token(site(site_b)).await,
        sponsor: app.token(sponsor_token(sponsor)).await,
        other_sponsor: app.token(sponsor_token(other_sponsor)).await,
        admin,
    }
}

impl World {
    fn referral<'a>(&self, external_id: &'a str, name: &'a str) -> Referral<'a> {
        Referral {
            study: self.study,
            campaign: self.campaign,
            source: "ads",
            country: "ES",
            language: "es",
            external_id,
            name,
            prescreen_passed: Some(true),
        }
    }
}

async fn timeline(app: &TestApp, token: &str, journey: JourneyId) -> Value {
    let (body, etag) = json_with_etag(
        app.get_with(&format!("/v1/journeys/{journey}/timeline"), token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(etag, Some(format!("\"{}\"", body["version"])), "{body}");
    body
}

fn entries(timeline: &Value) -> &Vec<Value> {
    timeline["entries"].as_array().expect("entries")
}

fn column<'a>(timeline: &'a Value, field: &str) -> Vec<&'a Value> {
    entries(timeline)
        .iter()
        .map(|entry| &entry[field])
        .collect()
}

fn time_of(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("an RFC 3339 timestamp")
        .to_utc()
}

#[tokio::test]
async fn the_timeline_lists_the_journey_in_stream_order_with_the_stage_each_event_led_to() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let referred_at = app.clock.now();
    let (journey, candidate) =
        post_referral(&app, &w.campaign_token, &w.referral("tl-1", "Ana Pérez")).await;
    // Other journeys' events in between: the timeline's sequences are the stream's, with gaps.
    post_referral(&app, &w.campaign_token, &w.referral("tl-2", "Luis García")).await;
    step(
        &app,
        &w.agent,
        journey,
        &json!({"type": "contact_attempted", "channel": "phone", "outcome": "no_answer"}),
    )
    .await;
    post_referral(&app, &w.campaign_token, &w.referral("tl-3", "Eva Ruiz")).await;
    step(
        &app,
        &w.agent,
        journey,
        &json!({"type": "contact_attempted", "channel": "whatsapp", "outcome": "reached"}),
    )
    .await;
    step(
        &app,
        &w.agent,
        journey,
        &json!({"type": "referred_to_site", "site_id": w.site_a}),
    )
    .await;
    step(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "site_contacted"}),
    )
    .await;

    let body = timeline(&app, &w.admin, journey).await;
    assert_eq!(body["journey_id"], journey.to_string());
    assert_eq!(body["study_id"], w.study.to_string());
    assert_eq!(body["candidate_id"], candidate.to_string());
    assert_eq!(body["stage"], "site_contacted");
    assert_eq!(body["erased"], false);
    assert_eq!(
        column(&body, "type"),
        [
            "referral_received",
            "prescreen_completed",
            "contact_attempted",
            "contact_attempted",
            "referred_to_site",
            "site_contacted",
        ]
    );
    assert_eq!(
        column(&body, "stage"),
        [
            "referred",
            "prescreen_passed",
            "contacting",
            "contacted",
            "referred_to_site",
            "site_contacted",
        ]
    );
    assert_eq!(
        column(&body, "cloud_event_type")[2],
        "funnel.journey.contact_attempted.v1"
    );
    assert_eq!(
        column(&body, "fhir_subject_state")[0],
        "potential-candidate"
    );

    // The sequences are the stream's own, in its order, and the last is the version.
    let stored: Vec<u64> = app
        .log
        .read(&journey_key(journey))
        .await
        .unwrap()
        .iter()
        .map(|event| event.seq)
        .collect();
    let sequences: Vec<u64> = column(&body, "sequence")
        .iter()
        .map(|seq| seq.as_u64().unwrap())
        .collect();
    assert_eq!(sequences, stored);
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(
        sequences.windows(2).any(|pair| pair[1] > pair[0] + 1),
        "other journeys' events lie in between: {sequences:?}"
    );
    assert_eq!(body["version"].as_u64(), sequences.last().copied());

    // The fields, readable.
    let entries = entries(&body);
    assert_eq!(time_of(&entries[0]["at"]), referred_at);
    assert_eq!(entries[0]["data"]["source"], "ads");
    assert_eq!(entries[0]["data"]["country"], "ES");
    assert_eq!(entries[0]["data"]["external_ref"], "tl-1");
    assert_eq!(entries[1]["data"]["passed"], true);
    assert_eq!(entries[1]["data"]["reasons"], json!(["age in range"]));
    assert_eq!(entries[2]["data"]["channel"], "phone");
    assert_eq!(entries[2]["data"]["outcome"], "no_answer");
    assert_eq!(entries[3]["data"]["outcome"], "reached");
    assert_eq!(entries[4]["data"]["site_id"], w.site_a.to_string());
    assert_eq!(entries[5]["data"]["site_id"], w.site_a.to_string());
    for entry in entries {
        assert!(
            entry["data"].get("at").is_none(),
            "`at` is the entry's own: {entry}"
        );
        assert!(entry["recorded_at"].is_string(), "{entry}");
    }
    app.stop().await;
}

#[tokio::test]
async fn contact_data_is_shown_to_the_journeys_own_people_and_never_to_the_sponsor() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let referral = w.referral("tl-contact", "María José Fernández");
    let (journey, _) = post_referral(&app, &w.campaign_token, &referral).await;
    step(
        &app,
        &w.agent,
        journey,
        &json!({"type": "referred_to_site", "site_id": w.site_a}),
    )
    .await;
    let expected = json!({
        "erased": false,
        "name": referral.name,
        "phone": referral.phone(),
        "email": referral.email(),
        "notes": referral.notes(),
    });
    for token in [&w.admin, &w.agent, &w.site_a_staff] {
        let body = timeline(&app, token, journey).await;
        let referral_data = &entries(&body)[0]["data"];
        assert_eq!(referral_data["contact"], expected, "{body}");
        assert_eq!(referral_data["external_ref"], "tl-contact");
    }

    let body = timeline(&app, &w.sponsor, journey).await;
    assert_eq!(
        column(&body, "type"),
        [
            "referral_received",
            "prescreen_completed",
            "referred_to_site"
        ],
        "the sponsor sees the whole history"
    );
    let referral_data = &entries(&body)[0]["data"];
    assert!(referral_data.get("contact").is_none(), "{body}");
    assert!(referral_data.get("external_ref").is_none(), "{body}");
    assert_eq!(referral_data["source"], "ads");
    let text = body.to_string();
    for needle in [
        "María",
        "Fernández",
        referral.phone().as_str(),
        referral.email().as_str(),
        "prefers calls",
        "tl-contact",
        "ciphertext",
        "nonce",
    ] {
        assert!(
            !text.contains(needle),
            "{needle:?} shown to the sponsor: {text}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_erased_candidate_shows_as_erased_and_the_history_stays() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let referral = w.referral("tl-erased", "Günther Weiß");
    let (journey, candidate) = post_referral(&app, &w.campaign_token, &referral).await;
    step(
        &app,
        &w.agent,
        journey,
        &json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached"}),
    )
    .await;
    let response = app
        .post_json(
            &format!("/v1/candidates/{candidate}/erasure"),
            &w.admin,
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    for token in [&w.admin, &w.agent] {
        let body = timeline(&app, token, journey).await;
        assert_eq!(body["erased"], true);
        assert_eq!(
            column(&body, "type"),
            [
                "referral_received",
                "prescreen_completed",
                "contact_attempted",
                "personal_data_erased",
            ]
        );
        assert_eq!(
            column(&body, "stage").last().copied(),
            Some(&json!("contacted")),
            "erasure keeps the funnel facts"
        );
        let erased_at = &entries(&body)[3]["at"];
        assert_eq!(
            entries(&body)[0]["data"]["contact"],
            json!({"erased": true, "erased_at": erased_at}),
            "{body}"
        );
        let text = body.to_string();
        for needle in [
            "Günther",
            "Weiß",
            referral.phone().as_str(),
            referral.email().as_str(),
            "prefers calls",
            "tl-erased",
        ] {
            assert!(
                !text.contains(needle),
                "{needle:?} shown after erasure: {text}"
            );
        }
    }
    let body = timeline(&app, &w.sponsor, journey).await;
    assert_eq!(entries(&body).len(), 4);
    assert!(entries(&body)[0]["data"].get("contact").is_none(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn only_the_journeys_own_people_and_its_sponsor_may_read_the_timeline() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let (journey, _) = post_referral(
        &app,
        &w.campaign_token,
        &w.referral("tl-access", "Zoë O'Brien"),
    )
    .await;
    step(
        &app,
        &w.agent,
        journey,
        &json!({"type": "referred_to_site", "site_id": w.site_a}),
    )
    .await;
    let path = format!("/v1/journeys/{journey}/timeline");
    for (who, token) in [
        ("an agent of another study", &w.agent_other_study),
        ("an agent without the journey's language", &w.agent_de),
        ("staff of another site", &w.site_b_staff),
        ("another study's sponsor", &w.other_sponsor),
        ("a campaign", &w.campaign_token),
    ] {
        let body = problem(app.get_with(&path, token).await, StatusCode::FORBIDDEN).await;
        assert!(
            body["detail"].as_str().unwrap().contains("no access"),
            "{who}: {body}"
        );
    }
    problem(app.get(&path).await, StatusCode::UNAUTHORIZED).await;

    let unknown = format!("/v1/journeys/{}/timeline", JourneyId::new());
    for token in [&w.admin, &w.sponsor] {
        problem(app.get_with(&unknown, token).await, StatusCode::NOT_FOUND).await;
    }
    problem(
        app.get_with("/v1/journeys/not-a-uuid/timeline", &w.admin)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // The journey's own people and its sponsor read it.
    for token in [&w.admin, &w.agent, &w.site_a_staff, &w.sponsor] {
        assert_eq!(entries(&timeline(&app, token, journey).await).len(), 3);
    }
    app.stop().await;
}
