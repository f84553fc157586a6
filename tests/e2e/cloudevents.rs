//! CloudEvents input over HTTP (`POST /v1/cloudevents`): structured, binary and batched mode,
//! redelivery recorded once, the event's `time` as the step's `at`, and problem documents that
//! append nothing.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use funnel_api::auth::{NewToken, Role};
use funnel_api::clock::Clock as _;
use funnel_api::commands::journey_key;
use funnel_domain::{
    AgentId, CampaignId, JourneyId, Language, SiteId, SourceChannel, StudyCommand, StudyId,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::fixtures::{at, create_study};
use crate::helpers::{TestApp, spawn_app};
use crate::setup::{post_raw, problem};

const PATH: &str = "/v1/cloudevents";
const STRUCTURED: &str = "application/cloudevents+json";
const BATCHED: &str = "application/cloudevents-batch+json";
const REFERRAL: &str = "funnel.referral.submitted.v1";

/// A study with a site and a registered campaign, and the tokens that work it.
struct World {
    study: StudyId,
    site: SiteId,
    campaign_id: CampaignId,
    campaign: String,
    /// A Spanish-speaking agent of the study.
    agent: String,
    admin: String,
}

async fn world(app: &TestApp) -> World {
    let study = StudyId::new();
    let site = SiteId::new();
    let campaign_id = CampaignId::new();
    for command in [
        create_study(study),
        StudyCommand::AddSite {
            at: at(0),
            site_id: site,
            name: "Hospital Clínic".to_owned(),
            country: "ES".parse().unwrap(),
            languages: vec!["es".parse().unwrap()],
            monthly_target_randomized: 2.0,
        },
        StudyCommand::RegisterCampaign {
            at: at(0),
            campaign_id,
            name: "Spring ads".to_owned(),
            channel: SourceChannel::Ads,
        },
    ] {
        app.commands
            .execute_study(study, None, &command)
            .await
            .unwrap();
    }
    World {
        study,
        site,
        campaign_id,
        campaign: app
            .token(NewToken {
                name: "campaign".to_owned(),
                role: Some(Role::Campaign),
                campaign_id: Some(campaign_id),
                study_ids: vec![study],
                ..NewToken::default()
            })
            .await,
        agent: app
            .token(NewToken {
                name: "agent".to_owned(),
                role: Some(Role::Agent),
                agent_id: Some(AgentId::new()),
                study_ids: vec![study],
                languages: vec![Language::parse("es").unwrap()],
                ..NewToken::default()
            })
            .await,
        admin: app.admin_token().await,
    }
}

/// A referral as `POST /v1/referrals` takes it, without `external_id`: the CloudEvent's
/// `source` and `id` are its idempotency key.
fn referral_data(w: &World, n: u32) -> Value {
    json!({
        "study_id": w.study,
        "campaign_id": w.campaign_id,
        "source": "ads",
        "language": "es",
        "country": "ES",
        "preferred_site_id": w.site,
        "consent_to_contact": true,
        "time_zone": "Europe/Madrid",
        "contact": {
            "name": format!("Person {n}"),
            "phone": format!("+34 6{n:08}"),
            "email": format!("person{n}@example.org"),
        },
    })
}

fn referral_event(w: &World, source: &str, id: &str, n: u32) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": REFERRAL,
        "time": "2026-03-02T09:00:00Z",
        "datacontenttype": "application/json",
        "data": referral_data(w, n),
    })
}

/// A journey step as a structured-mode CloudEvent.
fn step_event(id: &str, source: &str, step: &str, journey: &str, data: &Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": format!("funnel.journey.{step}.v1"),
        "subject": journey,
        "data": data,
    })
}

async fn post_structured(app: &TestApp, token: &str, event: &Value) -> reqwest::Response {
    post_raw(
        app,
        PATH,
        Some(token),
        None,
        Some(STRUCTURED),
        event.to_string(),
    )
    .await
}

async fn post_batch(app: &TestApp, token: &str, events: &Value) -> reqwest::Response {
    post_raw(
        app,
        PATH,
        Some(token),
        None,
        Some(BATCHED),
        events.to_string(),
    )
    .await
}

/// One binary-mode CloudEvent: context attributes as `ce-*` headers, the data as the body.
struct Binary<'a> {
    id: &'a str,
    source: &'a str,
    step: &'a str,
    journey: JourneyId,
    time: Option<DateTime<Utc>>,
    data: Value,
}

impl Binary<'_> {
    async fn send(&self, app: &TestApp, token: &str) -> reqwest::Response {
        let mut request = app
            .http
            .post(app.url(PATH))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", self.id)
            .header("ce-source", self.source)
            .header("ce-type", format!("funnel.journey.{}.v1", self.step))
            .header("ce-subject", self.journey.to_string())
            .body(self.data.to_string());
        if let Some(time) = self.time {
            request = request.header("ce-time", rfc3339(time));
        }
        request.send().await.expect("the request is answered")
    }
}

/// Asserts `status` and a JSON (not problem) body, and returns the body.
async fn json(response: reqwest::Response, status: StatusCode) -> Value {
    let actual = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(actual, status, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/json"), "{body}");
    body
}

fn journey_of(result: &Value) -> JourneyId {
    result["journey_id"]
        .as_str()
        .expect("a journey id")
        .parse()
        .unwrap()
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time_of(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("an RFC 3339 timestamp")
        .to_utc()
}

/// `time` cut to whole seconds, as it travels in `ce-time`.
fn whole_seconds(time: DateTime<Utc>) -> DateTime<Utc> {
    time_of(&json!(rfc3339(time)))
}

async fn view(app: &TestApp, token: &str, journey: JourneyId) -> Value {
    json(
        app.get_with(&format!("/v1/journeys/{journey}"), token)
            .await,
        StatusCode::OK,
    )
    .await
}

/// Posts a referral as a CloudEvent and returns its journey.
async fn referred(app: &TestApp, w: &World, id: &str, n: u32) -> JourneyId {
    let created = json(
        post_structured(app, &w.campaign, &referral_event(w, "urn:cmp:ads", id, n)).await,
        StatusCode::CREATED,
    )
    .await;
    journey_of(&created)
}

async fn head(app: &TestApp) -> u64 {
    app.log.stream_head().await.unwrap()
}

#[tokio::test]
async fn a_structured_referral_is_accepted_and_its_redelivery_replayed() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let event = referral_event(&w, "urn:cmp:ads", "lead-4711", 1);

    let accepted = json(
        post_structured(&app, &w.campaign, &event).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    assert_eq!(accepted["id"], "lead-4711");
    assert_eq!(accepted["source"], "urn:cmp:ads");
    assert!(accepted.get("error").is_none(), "{accepted}");
    let journey = journey_of(&accepted);
    let version = accepted["version"].as_u64().expect("a version");
    let stored = app.log.read(&journey_key(journey)).await.unwrap();
    assert_eq!(stored.last().map(|event| event.seq), Some(version));
    let current = view(&app, &w.admin, journey).await;
    assert_eq!(current["stage"], "referred");
    assert_eq!(current["study_id"], w.study.to_string());
    assert_eq!(current["campaign_id"], w.campaign_id.to_string());
    assert_eq!(current["preferred_site"], w.site.to_string());
    assert_eq!(current["version"], version);
    assert_eq!(current["contact"]["name"], "Person 1");

    // The partner's delivery is at-least-once: the same event again changes nothing, whatever
    // the media-type parameters.
    let before = head(&app).await;
    let replayed = json(
        post_raw(
            &app,
            PATH,
            Some(&w.campaign),
            None,
            Some("application/cloudevents+json; charset=utf-8"),
            event.to_string(),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(replayed["status"], "replayed", "{replayed}");
    assert_eq!(journey_of(&replayed), journey);
    assert_eq!(replayed["version"], version);
    assert_eq!(head(&app).await, before, "a redelivery appends nothing");
    assert_eq!(
        app.log.read(&journey_key(journey)).await.unwrap().len(),
        stored.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn binary_mode_steps_are_recorded_once_and_take_the_event_time_as_at() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let journey = referred(&app, &w, "lead-1", 1).await;
    let now = app.clock.now();

    // A pre-screen without `at` in its data: the event's `time` is when it happened.
    let prescreened_at = whole_seconds(now - Duration::hours(2));
    let prescreen = Binary {
        id: "ctms-1001",
        source: "urn:ctms:eu",
        step: "prescreen_completed",
        journey,
        time: Some(prescreened_at),
        data: json!({"passed": true, "reasons": ["age ok"]}),
    };
    let accepted = json(prescreen.send(&app, &w.agent).await, StatusCode::CREATED).await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    assert_eq!(accepted["id"], "ctms-1001");
    assert_eq!(accepted["source"], "urn:ctms:eu");
    assert_eq!(journey_of(&accepted), journey);
    let current = view(&app, &w.agent, journey).await;
    assert_eq!(current["stage"], "prescreen_passed");
    assert_eq!(current["prescreen_passed"], true);
    assert_eq!(time_of(&current["stage_entered_at"]), prescreened_at);
    assert_eq!(current["version"], accepted["version"]);

    let before = head(&app).await;
    let replayed = json(prescreen.send(&app, &w.agent).await, StatusCode::OK).await;
    assert_eq!(replayed["status"], "replayed", "{replayed}");
    assert_eq!(journey_of(&replayed), journey);
    assert_eq!(replayed["version"], accepted["version"]);
    assert_eq!(head(&app).await, before, "a redelivery appends nothing");

    // A contact attempt is not idempotent by itself: recorded twice it would count twice.
    let attempted_at = whole_seconds(now - Duration::hours(1));
    let attempt = Binary {
        id: "ctms-1002",
        source: "urn:ctms:eu",
        step: "contact_attempted",
        journey,
        time: Some(attempted_at),
        data: json!({"channel": "phone", "outcome": "no_answer"}),
    };
    let accepted = json(attempt.send(&app, &w.agent).await, StatusCode::CREATED).await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    let before = head(&app).await;
    for _ in 0..2 {
        let replayed = json(attempt.send(&app, &w.agent).await, StatusCode::OK).await;
        assert_eq!(replayed["status"], "replayed", "{replayed}");
        assert_eq!(replayed["version"], accepted["version"]);
    }
    assert_eq!(head(&app).await, before, "redeliveries append nothing");
    let current = view(&app, &w.agent, journey).await;
    assert_eq!(current["stage"], "contacting");
    assert_eq!(current["contact_attempts"], 1);
    assert_eq!(time_of(&current["first_contact_attempt_at"]), attempted_at);
    assert_eq!(current["version"], accepted["version"]);

    // Two deliveries of one new event at the same time still record it once.
    let racing = Binary {
        id: "ctms-1003",
        source: "urn:ctms:eu",
        step: "contact_attempted",
        journey,
        time: Some(attempted_at + Duration::minutes(10)),
        data: json!({"channel": "sms", "outcome": "no_answer"}),
    };
    let (one, two) = tokio::join!(racing.send(&app, &w.agent), racing.send(&app, &w.agent));
    let mut statuses = Vec::new();
    for response in [one, two] {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status} {body}"
        );
        statuses.push(body["status"].as_str().unwrap().to_owned());
    }
    assert!(statuses.contains(&"accepted".to_owned()), "{statuses:?}");
    assert_eq!(head(&app).await, before + 1, "recorded once");
    assert_eq!(view(&app, &w.agent, journey).await["contact_attempts"], 2);

    // An `at` in the data is when it happened; the event's `time` is then only when it was sent.
    let reached_at = whole_seconds(now - Duration::minutes(30));
    let reached = Binary {
        id: "ctms-1004",
        source: "urn:ctms:eu",
        step: "contact_attempted",
        journey,
        time: Some(whole_seconds(now)),
        data: json!({"channel": "phone", "outcome": "reached", "at": rfc3339(reached_at)}),
    };
    json(reached.send(&app, &w.agent).await, StatusCode::CREATED).await;
    let current = view(&app, &w.agent, journey).await;
    assert_eq!(current["stage"], "contacted");
    assert_eq!(time_of(&current["last_reached_at"]), reached_at);

    // Without `time` nor `at`, the service's clock.
    let declined = Binary {
        id: "ctms-1005",
        source: "urn:ctms:eu",
        step: "not_interested",
        journey,
        time: None,
        data: json!({"reason": "too far to travel"}),
    };
    json(declined.send(&app, &w.agent).await, StatusCode::CREATED).await;
    let current = view(&app, &w.agent, journey).await;
    assert_eq!(current["stage"], "not_interested");
    assert_eq!(time_of(&current["stage_entered_at"]), now);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_answers_each_event_in_order() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let journey = referred(&app, &w, "lead-1", 1).await;
    let before = head(&app).await;
    let attempt = json!({"channel": "phone", "outcome": "no_answer"});
    let batch = json!([
        step_event(
            "b-1",
            "urn:ctms:eu",
            "contact_attempted",
            &journey.to_string(),
            &attempt
        ),
        {
            "specversion": "1.0",
            "id": "b-2",
            "source": "urn:ctms:eu",
            "type": "org.example.weather.v1",
            "subject": journey.to_string(),
            "data": {},
        },
        step_event(
            "b-3",
            "urn:ctms:eu",
            "contact_attempted",
            "not-a-journey",
            &attempt
        ),
    ]);

    let answer = json(post_batch(&app, &w.agent, &batch).await, StatusCode::OK).await;
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{answer}");
    for (result, id) in results.iter().zip(["b-1", "b-2", "b-3"]) {
        assert_eq!(result["id"], id, "in the order sent: {answer}");
        assert_eq!(result["source"], "urn:ctms:eu");
    }
    assert_eq!(results[0]["status"], "accepted", "{answer}");
    assert_eq!(journey_of(&results[0]), journey);
    assert!(results[0].get("error").is_none(), "{answer}");
    let version = results[0]["version"].as_u64().expect("a version");
    for (result, words) in [
        (&results[1], "org.example.weather.v1"),
        (&results[2], "subject"),
    ] {
        assert_eq!(result["status"], "rejected", "{answer}");
        assert!(result.get("journey_id").is_none(), "{answer}");
        let error = &result["error"];
        assert_eq!(error["status"], 422, "{answer}");
        assert!(error["title"].is_string(), "{answer}");
        assert!(
            error["detail"].as_str().unwrap().contains(words),
            "{answer}"
        );
    }
    assert_eq!(
        head(&app).await,
        before + 1,
        "only the good event was recorded"
    );
    let current = view(&app, &w.agent, journey).await;
    assert_eq!(current["contact_attempts"], 1);
    assert_eq!(current["version"], version);

    // The same batch again: the good event is a redelivery, the others still refused.
    let answer = json(post_batch(&app, &w.agent, &batch).await, StatusCode::OK).await;
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["replayed", "rejected", "rejected"], "{answer}");
    assert_eq!(head(&app).await, before + 1);
    assert_eq!(view(&app, &w.agent, journey).await["contact_attempts"], 1);
    app.stop().await;
}

#[tokio::test]
async fn malformed_unknown_illegal_and_unauthorised_events_are_problems_and_append_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let journey = referred(&app, &w, "lead-1", 1).await;
    let subject = journey.to_string();
    let attempt = step_event(
        "e-1",
        "urn:ctms:eu",
        "contact_attempted",
        &subject,
        &json!({"channel": "phone", "outcome": "no_answer"}),
    );
    let before = head(&app).await;

    // Not a CloudEvents HTTP mode.
    for content_type in [Some("text/plain"), Some("application/xml"), None] {
        problem(
            post_raw(
                &app,
                PATH,
                Some(&w.agent),
                None,
                content_type,
                attempt.to_string(),
            )
            .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    }
    // Not JSON, in each mode.
    for (content_type, body) in [
        (STRUCTURED, r#"{"specversion": "1.0", "id": "#),
        (BATCHED, r#"[{"specversion": "1.0", "id": "#),
        (BATCHED, "not json"),
    ] {
        problem(
            post_raw(&app, PATH, Some(&w.agent), None, Some(content_type), body).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let no_data = Binary {
        id: "e-2",
        source: "urn:ctms:eu",
        step: "contact_attempted",
        journey,
        time: None,
        data: json!(null),
    };
    problem(
        no_data.send(&app, &w.agent).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let broken = app
        .http
        .post(app.url(PATH))
        .bearer_auth(&w.agent)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-3")
        .header("ce-source", "urn:ctms:eu")
        .header("ce-type", "funnel.journey.contact_attempted.v1")
        .header("ce-subject", &subject)
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(broken, StatusCode::BAD_REQUEST).await;

    // An event from the future.
    let future = Binary {
        id: "e-2b",
        source: "urn:ctms:eu",
        step: "contact_attempted",
        journey,
        time: Some(app.clock.now() + Duration::hours(1)),
        data: json!({"channel": "phone", "outcome": "no_answer"}),
    };
    let refused = problem(
        future.send(&app, &w.agent).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("future"),
        "{refused}"
    );

    // Not a CloudEvent this service takes.
    let mut old = attempt.clone();
    old["specversion"] = json!("0.3");
    let refused = problem(
        post_structured(&app, &w.agent, &old).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("0.3"),
        "{refused}"
    );
    let mut anonymous = attempt.clone();
    anonymous.as_object_mut().unwrap().remove("id");
    problem(
        post_structured(&app, &w.agent, &anonymous).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let headless = app
        .http
        .post(app.url(PATH))
        .bearer_auth(&w.agent)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-source", "urn:ctms:eu")
        .header("ce-type", "funnel.journey.contact_attempted.v1")
        .header("ce-subject", &subject)
        .body(json!({"channel": "phone", "outcome": "no_answer"}).to_string())
        .send()
        .await
        .unwrap();
    let refused = problem(headless, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("ce-id"),
        "{refused}"
    );
    let mut unknown = attempt.clone();
    unknown["type"] = json!("org.example.weather.v1");
    let refused = problem(
        post_structured(&app, &w.agent, &unknown).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("org.example.weather.v1"),
        "{refused}"
    );
    let mut teleported = attempt.clone();
    teleported["type"] = json!("funnel.journey.teleported.v1");
    problem(
        post_structured(&app, &w.agent, &teleported).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mut no_subject = attempt.clone();
    no_subject.as_object_mut().unwrap().remove("subject");
    let refused = problem(
        post_structured(&app, &w.agent, &no_subject).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("subject"),
        "{refused}"
    );
    let mut typed = attempt.clone();
    typed["data"]["type"] = json!("opted_out");
    problem(
        post_structured(&app, &w.agent, &typed).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    // Well-formed, but not allowed in the journey's stage.
    let refused = problem(
        post_structured(
            &app,
            &w.admin,
            &step_event("e-4", "urn:ctms:eu", "randomized", &subject, &json!({})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("`referred`"),
        "{refused}"
    );
    // A journey that does not exist.
    problem(
        post_structured(
            &app,
            &w.admin,
            &step_event(
                "e-5",
                "urn:ctms:eu",
                "consented",
                &JourneyId::new().to_string(),
                &json!({}),
            ),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // A campaign posts referrals, not what happens afterwards.
    problem(
        post_structured(&app, &w.campaign, &attempt).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // An agent does not post referrals.
    problem(
        post_structured(&app, &w.agent, &referral_event(&w, "urn:x", "r-9", 9)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // No token, or a wrong one: 401 whatever the body.
    for token in [None, Some("fnl_nonsense")] {
        let response = post_raw(
            &app,
            PATH,
            token,
            None,
            Some(STRUCTURED),
            attempt.to_string(),
        )
        .await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }

    assert_eq!(head(&app).await, before, "nothing was appended");
    let current = view(&app, &w.admin, journey).await;
    assert_eq!(current["stage"], "referred");
    assert_eq!(current["contact_attempts"], 0);

    // A refused id is not burnt: the same event, once valid, is recorded.
    json(
        post_structured(&app, &w.agent, &attempt).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(head(&app).await, before + 1);
    app.stop().await;
}

/// A body that is not JSON is a 400 whatever shape it started to take: the JSON must not be
/// judged as a CloudEvent (422) before it has been read as JSON.
#[tokio::test]
async fn a_body_that_is_not_json_is_400_even_when_it_starts_like_the_wrong_shape() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let before = head(&app).await;
    for (content_type, body) in [
        // A batch's body that opens as one event, and is cut off.
        (BATCHED, r#"{"specversion": "1.0", "id": "#),
        (BATCHED, "{"),
        // One event's body that opens as a batch, and is cut off.
        (STRUCTURED, r#"[{"specversion": "1.0", "id": "#),
        (STRUCTURED, "[1, 2"),
    ] {
        let refused = problem(
            post_raw(&app, PATH, Some(&w.agent), None, Some(content_type), body).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("not valid JSON"),
            "{content_type} {body}: {refused}"
        );
    }
    assert_eq!(head(&app).await, before);
    app.stop().await;
}

/// The required properties of `schema`, following a `$ref` into the document's components.
fn required_of(doc: &Value, schema: &Value) -> Vec<String> {
    let schema = match schema["$ref"].as_str() {
        Some(reference) => doc
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} resolves")),
        None => schema,
    };
    schema["required"]
        .as_array()
        .map(|required| {
            required
                .iter()
                .map(|name| name.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `body` has every property the OpenAPI document requires of the route's answer
/// with `status`.
fn assert_documented(doc: &Value, status: &str, body: &Value) {
    let schema =
        &doc["paths"][PATH]["post"]["responses"][status]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{PATH} documents a JSON {status}");
    for property in required_of(doc, schema) {
        assert!(
            body.get(&property).is_some(),
            "the documented {status} requires `{property}`; the answer was {body}"
        );
    }
}

/// Clients generated from the OpenAPI document read the answers by it, including the 200 of a
/// redelivered single event.
#[tokio::test]
async fn single_event_answers_have_the_documented_shape() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let event = referral_event(&w, "urn:cmp:ads", "lead-1", 1);
    let accepted = json(
        post_structured(&app, &w.campaign, &event).await,
        StatusCode::CREATED,
    )
    .await;
    assert_documented(&doc, "201", &accepted);
    let batch = json(
        post_batch(&app, &w.campaign, &json!([event])).await,
        StatusCode::OK,
    )
    .await;
    assert_documented(&doc, "200", &batch);
    let replayed = json(
        post_structured(&app, &w.campaign, &event).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(replayed["status"], "replayed");
    assert_documented(&doc, "200", &replayed);
    app.stop().await;
}

#[tokio::test]
async fn the_same_id_from_two_sources_is_two_events() {
    let app = spawn_app().await;
    let w = world(&app).await;

    // Two partner systems happen to number their events alike.
    let from_ads = json(
        post_structured(
            &app,
            &w.campaign,
            &referral_event(&w, "urn:cmp:ads", "1", 1),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let from_forms = json(
        post_structured(
            &app,
            &w.campaign,
            &referral_event(&w, "urn:cmp:forms", "1", 2),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(from_ads["status"], "accepted");
    assert_eq!(from_forms["status"], "accepted");
    let journey = journey_of(&from_ads);
    assert_ne!(journey, journey_of(&from_forms));
    assert_eq!(
        view(&app, &w.admin, journey_of(&from_forms)).await["contact"]["name"],
        "Person 2"
    );

    let subject = journey.to_string();
    let attempt = json!({"channel": "phone", "outcome": "no_answer"});
    for source in ["urn:ctms:eu", "urn:dialer:eu"] {
        let accepted = json(
            post_structured(
                &app,
                &w.agent,
                &step_event("7", source, "contact_attempted", &subject, &attempt),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(accepted["status"], "accepted", "{accepted}");
    }
    assert_eq!(view(&app, &w.agent, journey).await["contact_attempts"], 2);
    // Each is still recognised when delivered again.
    let before = head(&app).await;
    for source in ["urn:ctms:eu", "urn:dialer:eu"] {
        let replayed = json(
            post_structured(
                &app,
                &w.agent,
                &step_event("7", source, "contact_attempted", &subject, &attempt),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(replayed["status"], "replayed", "{replayed}");
    }
    assert_eq!(head(&app).await, before);
    assert_eq!(view(&app, &w.agent, journey).await["contact_attempts"], 2);
    app.stop().await;
}
