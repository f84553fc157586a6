//! Journey routes over HTTP (read a journey, record funnel steps) and the erasure route.

use std::collections::BTreeMap;

use chrono::{Duration, SecondsFormat};
use funnel_api::auth::{NewToken, Role};
use funnel_api::clock::Clock as _;
use funnel_api::commands::{decode_recorded, journey_key};
use funnel_domain::{
    AgentId, CampaignId, CandidateId, DomainEvent, JourneyEvent, JourneyId, Language, SiteId,
    SponsorId, StudyCommand, StudyId,
};
use funnel_privacy::Opened;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::fixtures::{at, contact, create_study, referral};
use crate::helpers::{TestApp, spawn_app};
use crate::setup::{json_with_etag, post_if_match, post_raw, problem};

/// A study with sites in every status, a second study, and a token of every role and scope.
struct World {
    study: StudyId,
    other_study: StudyId,
    site_a: SiteId,
    site_b: SiteId,
    paused_site: SiteId,
    closed_site: SiteId,
    admin: String,
    agent_id: AgentId,
    /// The study's Spanish-speaking agent: the journeys here are in Spanish.
    agent: String,
    /// The study's German-speaking agent: wrong language.
    agent_de: String,
    /// A Spanish-speaking agent of another study: wrong study.
    agent_other_study: String,
    site_a_staff: String,
    /// Staff of another site of the same study: wrong site.
    site_b_staff: String,
    sponsor: String,
    campaign: String,
}

async fn world(app: &TestApp) -> World {
    let study = StudyId::new();
    let other_study = StudyId::new();
    for id in [study, other_study] {
        app.commands
            .execute_study(id, None, &create_study(id))
            .await
            .unwrap();
    }
    let [site_a, site_b, paused_site, closed_site] = [(); 4].map(|()| SiteId::new());
    for (site, name) in [
        (site_a, "Hospital La Paz"),
        (site_b, "Hospital Clínic"),
        (paused_site, "Hospital del Mar"),
        (closed_site, "Hospital Sant Pau"),
    ] {
        app.commands
            .execute_study(
                study,
                None,
                &StudyCommand::AddSite {
                    at: at(0),
                    site_id: site,
                    name: name.to_owned(),
                    country: "ES".parse().unwrap(),
                    languages: vec!["es".parse().unwrap()],
                    monthly_target_randomized: 1.0,
                },
            )
            .await
            .unwrap();
    }
    app.commands
        .execute_study(
            study,
            None,
            &StudyCommand::PauseSite {
                at: at(0),
                site_id: paused_site,
                reason: None,
            },
        )
        .await
        .unwrap();
    app.commands
        .execute_study(
            study,
            None,
            &StudyCommand::CloseSite {
                at: at(0),
                site_id: closed_site,
                reason: None,
            },
        )
        .await
        .unwrap();

    let agent_id = AgentId::new();
    let agent_token = |agent: AgentId, study: StudyId, language: &str| NewToken {
        name: format!("agent {language}"),
        role: Some(Role::Agent),
        agent_id: Some(agent),
        study_ids: vec![study],
        languages: vec![Language::parse(language).unwrap()],
        ..NewToken::default()
    };
    let site_token = |site: SiteId| NewToken {
        role: Some(Role::Site),
        site_id: Some(site),
        ..NewToken::default()
    };
    World {
        study,
        other_study,
        site_a,
        site_b,
        paused_site,
        closed_site,
        admin: app.admin_token().await,
        agent_id,
        agent: app.token(agent_token(agent_id, study, "es-ES")).await,
        agent_de: app.token(agent_token(AgentId::new(), study, "de")).await,
        agent_other_study: app
            .token(agent_token(AgentId::new(), other_study, "es"))
            .await,
        site_a_staff: app.token(site_token(site_a)).await,
        site_b_staff: app.token(site_token(site_b)).await,
        sponsor: app
            .token(NewToken {
                role: Some(Role::Sponsor),
                sponsor_id: Some(SponsorId::new()),
                ..NewToken::default()
            })
            .await,
        campaign: app
            .token(NewToken {
                role: Some(Role::Campaign),
                campaign_id: Some(CampaignId::new()),
                study_ids: vec![study],
                ..NewToken::default()
            })
            .await,
    }
}

/// Starts a journey the way the referral route does: sealed contact on the stream, and the
/// candidate's journey recorded for erasure.
async fn start_journey(
    app: &TestApp,
    study: StudyId,
    candidate: CandidateId,
    name: &str,
) -> JourneyId {
    let journey = JourneyId::new();
    app.commands
        .receive_referral(
            &app.keys,
            candidate,
            &contact(name, "+34 600 111 222", "paciente@example.es"),
            referral(journey, candidate, study),
        )
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO candidate_journeys (journey_id, candidate_id, study_id) VALUES ($1, $2, $3)",
    )
    .bind(journey.as_uuid())
    .bind(candidate.as_uuid())
    .bind(study.as_uuid())
    .execute(&app.db.pool)
    .await
    .unwrap();
    journey
}

async fn step(app: &TestApp, token: &str, journey: JourneyId, body: &Value) -> reqwest::Response {
    app.post_json(&format!("/v1/journeys/{journey}/events"), token, body)
        .await
}

/// Records a step that must succeed; checks the answer's shape and returns it.
async fn record(
    app: &TestApp,
    token: &str,
    journey: JourneyId,
    body: &Value,
    stage: &str,
) -> Value {
    let (change, etag) =
        json_with_etag(step(app, token, journey, body).await, StatusCode::CREATED).await;
    assert_eq!(change["journey_id"], journey.to_string());
    assert_eq!(change["stage"], stage, "{body} -> {change}");
    assert_eq!(change["events"][0]["type"], body["type"], "{change}");
    assert_eq!(etag, Some(format!("\"{}\"", change["version"])));
    change
}

/// The common start of a site's work: the pre-screen passed and the journey referred to `site`.
async fn pass_and_refer(app: &TestApp, agent: &str, journey: JourneyId, site: SiteId) {
    record(
        app,
        agent,
        journey,
        &json!({"type": "prescreen_completed", "passed": true}),
        "prescreen_passed",
    )
    .await;
    record(
        app,
        agent,
        journey,
        &json!({"type": "referred_to_site", "site_id": site.to_string()}),
        "referred_to_site",
    )
    .await;
}

async fn get_journey(app: &TestApp, token: &str, journey: JourneyId) -> (Value, Option<String>) {
    json_with_etag(
        app.get_with(&format!("/v1/journeys/{journey}"), token)
            .await,
        StatusCode::OK,
    )
    .await
}

fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time_of(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("an RFC 3339 timestamp")
        .to_utc()
}

#[tokio::test]
async fn a_journey_walks_the_whole_funnel_over_http() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let journey = start_journey(&app, w.study, CandidateId::new(), "Ana Pérez").await;
    let now = app.clock.now();
    let appointment = rfc3339(now + Duration::days(7));
    let earlier = rfc3339(now - Duration::hours(2));

    // The team's part: pre-screen (with an explicit time), attempts, a call-back, the referral.
    let change = record(&app, &w.agent, journey, &json!({"type": "prescreen_completed", "passed": true, "reasons": ["age ok"], "at": earlier}), "prescreen_passed").await;
    assert_eq!(
        time_of(&change["events"][0]["at"]),
        time_of(&json!(earlier))
    );
    assert_eq!(change["events"][0]["passed"], true);
    let change = record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "contact_attempted", "channel": "phone", "outcome": "no_answer"}),
        "contacting",
    )
    .await;
    assert_eq!(
        change["events"][0]["agent"],
        w.agent_id.to_string(),
        "an agent records its own attempts"
    );
    assert_eq!(
        time_of(&change["events"][0]["at"]),
        now,
        "`at` defaults to the service's clock"
    );
    record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "callback_requested", "callback_at": rfc3339(now + Duration::days(1))}),
        "contacting",
    )
    .await;
    let (view, _) = get_journey(&app, &w.agent, journey).await;
    assert_eq!(
        view["callback"]["time_zone"], "Europe/Madrid",
        "the referral's time zone"
    );
    record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "contact_attempted", "channel": "whatsapp", "outcome": "reached"}),
        "contacted",
    )
    .await;
    record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "referred_to_site", "site_id": w.site_a.to_string()}),
        "referred_to_site",
    )
    .await;

    // The site's part, with the team booking on the site's behalf.
    record(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "site_contacted"}),
        "site_contacted",
    )
    .await;
    record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "appointment_scheduled", "appointment_at": appointment}),
        "appointment_scheduled",
    )
    .await;
    record(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "no_show"}),
        "no_show",
    )
    .await;
    record(&app, &w.site_a_staff, journey, &json!({"type": "appointment_rescheduled", "appointment_at": rfc3339(now + Duration::days(9))}), "appointment_scheduled").await;
    record(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "appointment_attended"}),
        "attended",
    )
    .await;
    record(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "consented"}),
        "consented",
    )
    .await;
    record(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "screening_started"}),
        "screening",
    )
    .await;
    let change = record(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "randomized", "arm": "B"}),
        "randomized",
    )
    .await;
    assert_eq!(change["fhir_subject_state"], "on-study");
    let change = record(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "withdrawn", "reason": "moved abroad"}),
        "withdrawn",
    )
    .await;
    assert_eq!(change["fhir_subject_state"], "off-study");

    let (view, etag) = get_journey(&app, &w.admin, journey).await;
    assert_eq!(etag, Some(format!("\"{}\"", view["version"])));
    assert_eq!(view["stage"], "withdrawn");
    assert_eq!(view["site_id"], w.site_a.to_string());
    assert_eq!(view["study_id"], w.study.to_string());
    assert_eq!(view["language"], "es");
    assert_eq!(view["country"], "ES");
    assert_eq!(view["contact_attempts"], 2);
    assert_eq!(view["no_shows"], 1);
    assert_eq!(
        time_of(&view["appointment_at"]),
        time_of(&json!(rfc3339(now + Duration::days(9))))
    );
    assert_eq!(view["closed_reason"], "moved abroad");
    assert_eq!(view["erased"], false);
    let stored = app.log.read(&journey_key(journey)).await.unwrap();
    assert_eq!(stored.len(), 1 + 14, "the referral and one event per step");
    assert_eq!(
        view["version"].as_u64(),
        stored.last().map(|event| event.seq)
    );

    // A second journey: reallocated from one site to another, then screened out there.
    let second = start_journey(&app, w.study, CandidateId::new(), "Luis García").await;
    pass_and_refer(&app, &w.agent, second, w.site_a).await;
    let change = record(&app, &w.agent, second, &json!({"type": "reallocated", "to_site": w.site_b.to_string(), "reason": "site A has not called in 5 days"}), "referred_to_site").await;
    assert_eq!(change["events"][0]["from_site"], w.site_a.to_string());
    problem(
        app.get_with(&format!("/v1/journeys/{second}"), &w.site_a_staff)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let (view, _) = get_journey(&app, &w.site_b_staff, second).await;
    assert_eq!(view["site_id"], w.site_b.to_string());
    for (body, stage) in [
        (json!({"type": "site_contacted"}), "site_contacted"),
        (
            json!({"type": "appointment_scheduled", "appointment_at": appointment}),
            "appointment_scheduled",
        ),
        (json!({"type": "appointment_attended"}), "attended"),
        (json!({"type": "consented"}), "consented"),
        (json!({"type": "screening_started"}), "screening"),
        (
            json!({"type": "screen_failed", "reason": "HbA1c out of range"}),
            "screen_failed",
        ),
    ] {
        record(&app, &w.site_b_staff, second, &body, stage).await;
    }

    // The ways out before the site: each closes its own journey.
    for (body, stage) in [
        (
            json!({"type": "not_interested", "reason": "too far to travel"}),
            "not_interested",
        ),
        (json!({"type": "opted_out"}), "opted_out"),
        (
            json!({"type": "disqualified", "reason": "pregnant"}),
            "disqualified",
        ),
        (
            json!({"type": "withdrawn", "reason": "changed mind"}),
            "withdrawn",
        ),
        (
            json!({"type": "prescreen_completed", "passed": false, "reasons": ["age"]}),
            "prescreen_failed",
        ),
    ] {
        let journey = start_journey(&app, w.study, CandidateId::new(), "Someone").await;
        record(&app, &w.agent, journey, &body, stage).await;
    }
    let journey = start_journey(&app, w.study, CandidateId::new(), "Nobody Home").await;
    record(
        &app,
        &w.admin,
        journey,
        &json!({"type": "contact_attempted", "channel": "sms", "outcome": "voicemail"}),
        "contacting",
    )
    .await;
    record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "unreachable"}),
        "unreachable",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_illegal_transition_is_409_naming_the_stage_and_appends_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let journey = start_journey(&app, w.study, CandidateId::new(), "Ana Pérez").await;
    let (before, _) = get_journey(&app, &w.admin, journey).await;
    let head = app.log.stream_head().await.unwrap();

    // Randomized straight from the referral.
    let refused = problem(
        step(&app, &w.admin, journey, &json!({"type": "randomized"})).await,
        StatusCode::CONFLICT,
    )
    .await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("`referred`") && detail.contains("randomize"),
        "{detail}"
    );
    // A site referral before anyone spoke to the candidate or the pre-screen passed.
    let refused = problem(
        step(
            &app,
            &w.agent,
            journey,
            &json!({"type": "referred_to_site", "site_id": w.site_a.to_string()}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("`referred`"),
        "{refused}"
    );
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );
    let (after, _) = get_journey(&app, &w.admin, journey).await;
    assert_eq!(after["version"], before["version"]);
    assert_eq!(after["stage"], "referred");

    // A closed journey refuses everything and says where it closed.
    record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "opted_out"}),
        "opted_out",
    )
    .await;
    let head = app.log.stream_head().await.unwrap();
    for body in [
        json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached"}),
        json!({"type": "opted_out"}),
        json!({"type": "not_interested"}),
    ] {
        let refused = problem(
            step(&app, &w.agent, journey, &body).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert!(
            refused["detail"].as_str().unwrap().contains("`opted_out`"),
            "{refused}"
        );
    }
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );

    // A journey that does not exist.
    problem(
        step(
            &app,
            &w.admin,
            JourneyId::new(),
            &json!({"type": "consented"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.get_with(&format!("/v1/journeys/{}", JourneyId::new()), &w.admin)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.get_with("/v1/journeys/12345", &w.admin).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(app.log.stream_head().await.unwrap(), head);
    app.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_appends_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let journey = start_journey(&app, w.study, CandidateId::new(), "Ana Pérez").await;
    let path = format!("/v1/journeys/{journey}/events");
    let (_, read) = get_journey(&app, &w.agent, journey).await;
    let read = read.unwrap();

    let attempt = json!({"type": "contact_attempted", "channel": "phone", "outcome": "no_answer"});
    let (_, written) = json_with_etag(
        post_if_match(&app, &path, &w.agent, &read, &attempt).await,
        StatusCode::CREATED,
    )
    .await;
    let written = written.unwrap();
    assert_ne!(read, written);

    // A second agent decides on what it read before the first one wrote.
    let head = app.log.stream_head().await.unwrap();
    let refused = problem(
        post_if_match(&app, &path, &w.agent, &read, &attempt).await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("version"),
        "{refused}"
    );
    problem(
        post_if_match(&app, &path, &w.agent, "\"0\"", &attempt).await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );
    let (view, _) = get_journey(&app, &w.agent, journey).await;
    assert_eq!(view["contact_attempts"], 1);

    // Reading again and deciding on the current version works.
    let (_, current) = get_journey(&app, &w.agent, journey).await;
    assert_eq!(current.as_deref(), Some(written.as_str()));
    json_with_etag(
        post_if_match(&app, &path, &w.agent, &written, &attempt).await,
        StatusCode::CREATED,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_invalid_steps_are_problem_documents_and_append_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let journey = start_journey(&app, w.study, CandidateId::new(), "Ana Pérez").await;
    record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "prescreen_completed", "passed": true}),
        "prescreen_passed",
    )
    .await;
    let path = format!("/v1/journeys/{journey}/events");
    let head = app.log.stream_head().await.unwrap();

    problem(
        post_raw(
            &app,
            &path,
            Some(&w.agent),
            None,
            Some("application/json"),
            "{\"type\": \"opted_out\"",
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        post_raw(
            &app,
            &path,
            Some(&w.agent),
            None,
            Some("text/plain"),
            "{\"type\": \"opted_out\"}",
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    problem(
        post_raw(
            &app,
            &path,
            Some(&w.agent),
            None,
            None,
            "{\"type\": \"opted_out\"}",
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;

    let now = app.clock.now();
    let cases = [
        (json!({"type": "opted_out", "mood": "annoyed"}), "mood"),
        (json!({"type": "teleported"}), "teleported"),
        (json!({"passed": true}), "type"),
        (json!({"type": "withdrawn"}), "reason"),
        (
            json!({"type": "contact_attempted", "channel": "carrier_pigeon", "outcome": "reached"}),
            "carrier_pigeon",
        ),
        (
            json!({"type": "contact_attempted", "channel": "phone"}),
            "outcome",
        ),
        (
            json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached", "at": "yesterday"}),
            "`at` must be an RFC 3339 time",
        ),
        (
            json!({"type": "opted_out", "at": rfc3339(now + Duration::minutes(2))}),
            "future",
        ),
        (json!({"type": "withdrawn", "reason": "   "}), "reason"),
        (
            json!({"type": "callback_requested", "callback_at": rfc3339(now + Duration::days(1)), "time_zone": "madrid time"}),
            "time zone",
        ),
        (
            json!({"type": "callback_requested", "callback_at": rfc3339(now - Duration::days(1))}),
            "call-back",
        ),
        (
            json!({"type": "referred_to_site", "site_id": w.paused_site.to_string()}),
            "paused",
        ),
        (
            json!({"type": "referred_to_site", "site_id": w.closed_site.to_string()}),
            "closed",
        ),
        (
            json!({"type": "referred_to_site", "site_id": SiteId::new().to_string()}),
            "not part of study",
        ),
        (
            json!({"type": "referred_to_site", "site_id": "site-a"}),
            "UUID",
        ),
    ];
    for (body, mentioned) in &cases {
        let refused = problem(
            step(&app, &w.agent, journey, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            refused["detail"].as_str().unwrap().contains(mentioned),
            "{body}: {refused} should mention {mentioned}"
        );
    }
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );

    // Up to a minute of clock skew is tolerated.
    record(&app, &w.agent, journey, &json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached", "at": rfc3339(now + Duration::seconds(30))}), "contacted").await;
    // A reallocation needs an active target site too.
    record(
        &app,
        &w.agent,
        journey,
        &json!({"type": "referred_to_site", "site_id": w.site_a.to_string()}),
        "referred_to_site",
    )
    .await;
    let head = app.log.stream_head().await.unwrap();
    for site in [w.paused_site, w.closed_site, SiteId::new()] {
        problem(
            step(
                &app,
                &w.agent,
                journey,
                &json!({"type": "reallocated", "to_site": site.to_string(), "reason": "slow"}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    problem(
        step(
            &app,
            &w.agent,
            journey,
            &json!({"type": "reallocated", "to_site": w.site_a.to_string(), "reason": "slow"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );
    app.stop().await;
}

#[tokio::test]
async fn tokens_of_the_wrong_role_study_site_or_language_are_403_and_append_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    // One journey at site A, one not at any site yet.
    let at_site = start_journey(&app, w.study, CandidateId::new(), "Ana Pérez").await;
    pass_and_refer(&app, &w.agent, at_site, w.site_a).await;
    let unassigned = start_journey(&app, w.study, CandidateId::new(), "Luis García").await;
    let head = app.log.stream_head().await.unwrap();

    // Reading.
    let (view, _) = get_journey(&app, &w.agent, at_site).await;
    assert_eq!(view["contact"]["name"], "Ana Pérez");
    assert_eq!(view["contact"]["erased"], false);
    assert_eq!(view["external_ref"], "cmp-4711");
    let (view, _) = get_journey(&app, &w.admin, at_site).await;
    assert_eq!(view["contact"]["phone"], "+34 600 111 222");
    // The site calls the patients referred to it.
    let (view, _) = get_journey(&app, &w.site_a_staff, at_site).await;
    assert_eq!(view["contact"]["name"], "Ana Pérez", "{view}");
    assert_eq!(view["stage"], "referred_to_site");
    for token in [
        &w.site_b_staff,
        &w.agent_de,
        &w.agent_other_study,
        &w.sponsor,
        &w.campaign,
    ] {
        problem(
            app.get_with(&format!("/v1/journeys/{at_site}"), token)
                .await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    problem(
        app.get_with(&format!("/v1/journeys/{unassigned}"), &w.site_a_staff)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Writing: each step is legal in the journey's stage, so the token is the only problem.
    let site_step = json!({"type": "site_contacted"});
    let agent_step = json!({"type": "not_interested"});
    let refusals: [(&String, JourneyId, &Value); 14] = [
        // Site steps are not the team's, nor anybody's outside the site.
        (&w.agent, at_site, &site_step),
        (&w.agent_de, at_site, &site_step),
        (&w.agent_other_study, at_site, &site_step),
        (&w.site_b_staff, at_site, &site_step),
        (&w.sponsor, at_site, &site_step),
        (&w.campaign, at_site, &site_step),
        // Team steps are not the site's; the wrong language or study is refused as well.
        (&w.site_a_staff, at_site, &agent_step),
        (&w.agent_de, at_site, &agent_step),
        (&w.agent_other_study, at_site, &agent_step),
        (&w.sponsor, at_site, &agent_step),
        (&w.campaign, unassigned, &agent_step),
        (&w.agent_de, unassigned, &agent_step),
        (
            &w.site_a_staff,
            unassigned,
            &json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached"}),
        ),
        // An agent records its own attempts only.
        (
            &w.agent,
            unassigned,
            &json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached", "agent_id": AgentId::new().to_string()}),
        ),
    ];
    for (token, journey, body) in refusals {
        problem(
            step(&app, token, journey, body).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    // The role is checked before the body: a broken body from the wrong site is still 403.
    problem(
        post_raw(
            &app,
            &format!("/v1/journeys/{at_site}/events"),
            Some(&w.site_b_staff),
            None,
            Some("application/json"),
            "{",
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "no refused step appended anything"
    );

    // The right tokens go through: the site's step, then the team booking on its behalf.
    record(&app, &w.site_a_staff, at_site, &site_step, "site_contacted").await;
    record(&app, &w.agent, at_site, &json!({"type": "appointment_scheduled", "appointment_at": rfc3339(app.clock.now() + Duration::days(3))}), "appointment_scheduled").await;
    // Admins may record a contact attempt for any agent.
    let change = record(&app, &w.admin, unassigned, &json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached", "agent_id": w.agent_id.to_string()}), "contacted").await;
    assert_eq!(change["events"][0]["agent"], w.agent_id.to_string());
    app.stop().await;
}

#[tokio::test]
async fn journey_and_erasure_routes_without_a_valid_token_are_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let candidate = CandidateId::new();
    let journey = start_journey(&app, w.study, candidate, "Ana Pérez").await;
    let head = app.log.stream_head().await.unwrap();
    for token in [None, Some("fnl_00000000000000000000000000000000_wrong")] {
        for path in [
            format!("/v1/journeys/{journey}/events"),
            format!("/v1/candidates/{candidate}/erasure"),
        ] {
            let response = post_raw(
                &app,
                &path,
                token,
                None,
                Some("application/json"),
                json!({"type": "opted_out"}).to_string(),
            )
            .await;
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{path}");
            problem(response, StatusCode::UNAUTHORIZED).await;
        }
        let mut request = app.http.get(app.url(&format!("/v1/journeys/{journey}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(app.log.stream_head().await.unwrap(), head);
    let (view, _) = get_journey(&app, &w.admin, journey).await;
    assert_eq!(view["erased"], false);
    app.stop().await;
}

/// How many of the study's journeys are in each stage, as the read side reports them.
async fn stage_counts(
    app: &TestApp,
    token: &str,
    journeys: &[JourneyId],
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for journey in journeys {
        let (view, _) = get_journey(app, token, *journey).await;
        *counts
            .entry(view["stage"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

async fn fingerprints_of(app: &TestApp, candidate: CandidateId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contact_fingerprints WHERE candidate_id = $1")
        .bind(candidate.as_uuid())
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn erasure_shreds_the_contact_data_and_keeps_the_funnel() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let candidate = CandidateId::new();
    let other = CandidateId::new();
    // The same person in two studies, and somebody else.
    let journey = start_journey(&app, w.study, candidate, "Ana Pérez").await;
    let other_study_journey = start_journey(&app, w.other_study, candidate, "Ana Pérez").await;
    let bystander = start_journey(&app, w.study, other, "Luis García").await;
    for (fingerprint, who, journey, study) in [
        (&b"phone-ana"[..], candidate, journey, w.study),
        (b"email-ana", candidate, journey, w.study),
        (b"phone-ana", candidate, other_study_journey, w.other_study),
        (b"phone-luis", other, bystander, w.study),
    ] {
        sqlx::query("INSERT INTO contact_fingerprints (study_id, fingerprint, journey_id, candidate_id) VALUES ($1, $2, $3, $4)")
            .bind(study.as_uuid())
            .bind(fingerprint)
            .bind(journey.as_uuid())
            .bind(who.as_uuid())
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    pass_and_refer(&app, &w.agent, journey, w.site_a).await;
    let study_journeys = [journey, bystander];

    let (before, _) = get_journey(&app, &w.agent, journey).await;
    assert_eq!(before["contact"]["name"], "Ana Pérez");
    assert_eq!(before["contact"]["email"], "paciente@example.es");
    let counts_before = stage_counts(&app, &w.admin, &study_journeys).await;
    let path = format!("/v1/candidates/{candidate}/erasure");

    // Nobody but an admin erases.
    let head = app.log.stream_head().await.unwrap();
    for token in [&w.agent, &w.site_a_staff, &w.sponsor, &w.campaign] {
        problem(
            app.post_json(&path, token, &json!({})).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );
    let (still, _) = get_journey(&app, &w.agent, journey).await;
    assert_eq!(
        still["contact"]["name"], "Ana Pérez",
        "a refused erasure erased nothing"
    );

    // The erasure itself.
    let response = post_raw(&app, &path, Some(&w.admin), None, None, "").await;
    let (outcome, _) = json_with_etag(response, StatusCode::OK).await;
    assert_eq!(outcome["candidate_id"], candidate.to_string());
    assert_eq!(outcome["already_erased"], false);
    let mut erased: Vec<String> = outcome["erased_journeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    erased.sort();
    let mut expected = vec![journey.to_string(), other_study_journey.to_string()];
    expected.sort();
    assert_eq!(erased, expected);
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head + 2,
        "one event per journey"
    );

    // Later reads show the data as erased; the funnel is as it was.
    let (after, _) = get_journey(&app, &w.agent, journey).await;
    assert_eq!(after["contact"], json!({"erased": true}));
    assert_eq!(after["erased"], true);
    assert!(after.get("external_ref").is_none(), "{after}");
    assert_eq!(after["stage"], before["stage"]);
    assert_eq!(after["site_id"], before["site_id"]);
    assert_eq!(after["prescreen_passed"], true);
    let (other_after, _) = get_journey(&app, &w.admin, other_study_journey).await;
    assert_eq!(other_after["contact"], json!({"erased": true}));
    assert_eq!(other_after["stage"], "referred");
    assert_eq!(
        stage_counts(&app, &w.admin, &study_journeys).await,
        counts_before
    );
    let (site_view, _) = get_journey(&app, &w.site_a_staff, journey).await;
    assert_eq!(site_view["contact"], json!({"erased": true}));
    assert_eq!(site_view["erased"], true);

    // The stream still holds the referral, now unreadable, followed by the erasure.
    let stored = app.log.read(&journey_key(journey)).await.unwrap();
    assert_eq!(stored[0].event_type, "funnel.journey.referral_received.v1");
    assert_eq!(
        stored.last().unwrap().event_type,
        "funnel.journey.personal_data_erased.v1"
    );
    assert_eq!(stored.len(), 4);
    let DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) =
        decode_recorded(&stored[0]).unwrap()
    else {
        panic!("the first event is the referral");
    };
    assert_eq!(
        app.keys.open(candidate, &referral.contact).await.unwrap(),
        Opened::Erased
    );

    // Fingerprints of the erased candidate are gone; the bystander's stay, readable.
    assert_eq!(fingerprints_of(&app, candidate).await, 0);
    assert_eq!(fingerprints_of(&app, other).await, 1);
    let (bystander_view, _) = get_journey(&app, &w.agent, bystander).await;
    assert_eq!(bystander_view["contact"]["name"], "Luis García");

    // The funnel carries on, but nobody can be called any more.
    record(
        &app,
        &w.site_a_staff,
        journey,
        &json!({"type": "site_contacted"}),
        "site_contacted",
    )
    .await;
    let refused = problem(
        step(
            &app,
            &w.admin,
            other_study_journey,
            &json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("erased"),
        "{refused}"
    );

    // A repeat is harmless: 200, nothing new.
    let head = app.log.stream_head().await.unwrap();
    let (again, _) = json_with_etag(
        app.post_json(&path, &w.admin, &json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["erased_journeys"], json!([]));
    assert_eq!(again["already_erased"], true);
    assert_eq!(app.log.stream_head().await.unwrap(), head);

    // A candidate nobody knows is 404 and leaves no trace; one with only a key is erased.
    let unknown = CandidateId::new();
    problem(
        app.post_json(
            &format!("/v1/candidates/{unknown}/erasure"),
            &w.admin,
            &json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(!app.keys.is_erased(unknown).await.unwrap());
    problem(
        app.post_json("/v1/candidates/someone/erasure", &w.admin, &json!({}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let key_only = CandidateId::new();
    app.keys
        .seal(
            key_only,
            &contact("Eva", "+34 600 999 999", "eva@example.es"),
        )
        .await
        .unwrap();
    let (outcome, _) = json_with_etag(
        app.post_json(
            &format!("/v1/candidates/{key_only}/erasure"),
            &w.admin,
            &json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(outcome["erased_journeys"], json!([]));
    assert_eq!(outcome["already_erased"], false);
    assert!(app.keys.is_erased(key_only).await.unwrap());
    assert_eq!(app.log.stream_head().await.unwrap(), head);
    app.stop().await;
}
