//! Enrollment Support Team work queues over HTTP: claims under leases, completions that append
//! the outcome's events, lease expiry, call-backs across time zones, cadence exhaustion,
//! opt-out, authorisation, and team-lead views. Time moves only by the service's clock.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use funnel_api::auth::{NewToken, Role};
use funnel_api::clock::Clock as _;
use funnel_api::commands::journey_key;
use funnel_domain::{
    AgentId, CampaignId, Country, JourneyId, Language, SiteId, SlaSettings, SourceChannel,
    SponsorId, Stage, StudyCommand, StudyId,
};
use funnel_projections::ReadModels;
use funnel_projections::queue::{ItemKind, WorkItem, items_for_journey};
use funnel_testkit::eventually;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with_settings};
use crate::setup::problem;

const WAIT: Duration = Duration::from_secs(30);

/// The lease the service grants by default.
const LEASE: TimeDelta = TimeDelta::minutes(5);

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("an RFC 3339 instant")
        .to_utc()
}

/// A study of the test's own: sites, a registered campaign and its token.
struct Study {
    id: StudyId,
    sites: Vec<SiteId>,
    campaign: CampaignId,
    campaign_token: String,
}

async fn study(app: &TestApp, languages: &[&str], countries: &[&str], sla: SlaSettings) -> Study {
    let id = StudyId::new();
    let now = app.clock.now();
    app.commands
        .execute_study(
            id,
            None,
            &StudyCommand::CreateStudy {
                at: now,
                study_id: id,
                sponsor_id: SponsorId::new(),
                title: "Migraine prevention, phase III".to_owned(),
                protocol_code: "MIG-301".to_owned(),
                target_randomized: 120,
                countries: countries
                    .iter()
                    .map(|c| Country::parse(c).unwrap())
                    .collect(),
                languages: languages
                    .iter()
                    .map(|l| Language::parse(l).unwrap())
                    .collect(),
                sla,
            },
        )
        .await
        .expect("study");
    let sites = vec![SiteId::new(), SiteId::new()];
    for (n, site) in sites.iter().enumerate() {
        app.commands
            .execute_study(
                id,
                None,
                &StudyCommand::AddSite {
                    at: now,
                    site_id: *site,
                    name: format!("Hospital {n}"),
                    country: countries[0].parse().unwrap(),
                    languages: languages.iter().map(|l| l.parse().unwrap()).collect(),
                    monthly_target_randomized: 1.0,
                },
            )
            .await
            .expect("site");
    }
    let campaign = CampaignId::new();
    app.commands
        .execute_study(
            id,
            None,
            &StudyCommand::RegisterCampaign {
                at: now,
                campaign_id: campaign,
                name: "Spring ads".to_owned(),
                channel: SourceChannel::Ads,
            },
        )
        .await
        .expect("campaign");
    let campaign_token = app
        .token(NewToken {
            name: "campaign".to_owned(),
            role: Some(Role::Campaign),
            campaign_id: Some(campaign),
            study_ids: vec![id],
            ..NewToken::default()
        })
        .await;
    Study {
        id,
        sites,
        campaign,
        campaign_token,
    }
}

async fn agent(app: &TestApp, studies: &[StudyId], languages: &[&str]) -> (AgentId, String) {
    let agent = AgentId::new();
    let token = app
        .token(NewToken {
            name: format!("agent {}", languages.join("+")),
            role: Some(Role::Agent),
            agent_id: Some(agent),
            study_ids: studies.to_vec(),
            languages: languages
                .iter()
                .map(|l| Language::parse(l).unwrap())
                .collect(),
            ..NewToken::default()
        })
        .await;
    (agent, token)
}

/// One referral body; `n` makes the person (and so the contact fingerprint) distinct.
fn referral(s: &Study, n: usize, language: &str, country: &str, time_zone: &str) -> Value {
    json!({
        "study_id": s.id,
        "campaign_id": s.campaign,
        "external_id": format!("ext-{n}"),
        "source": "ads",
        "language": language,
        "country": country,
        "consent_to_contact": true,
        "time_zone": time_zone,
        "contact": {
            "name": format!("Person {n}"),
            "phone": format!("+34 6{n:08}"),
            "email": format!("person{n}@example.org"),
        },
    })
}

async fn refer(
    app: &TestApp,
    s: &Study,
    n: usize,
    language: &str,
    country: &str,
    zone: &str,
) -> JourneyId {
    let response = app
        .post_json(
            "/v1/referrals",
            &s.campaign_token,
            &referral(s, n, language, country, zone),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["journey_id"].as_str().unwrap().parse().unwrap()
}

/// The journey's open items as the live read model has them (none while it is not built).
async fn items(app: &TestApp, journey: JourneyId) -> Vec<WorkItem> {
    let models = ReadModels::new(app.db.pool.clone());
    let Ok(mut tx) = models.read("work_queue").await else {
        return Vec::new();
    };
    items_for_journey(&mut tx, journey).await.expect("items")
}

/// Waits until the journey's open items are exactly `kinds` (in due order) and returns them.
async fn wait_items(app: &TestApp, journey: JourneyId, kinds: &[ItemKind]) -> Vec<WorkItem> {
    eventually(
        &format!("journey {journey} to have items {kinds:?}"),
        WAIT,
        || async {
            let items = items(app, journey).await;
            let mut have: Vec<ItemKind> = items.iter().map(|item| item.kind).collect();
            let mut want = kinds.to_vec();
            have.sort();
            want.sort();
            (have == want).then_some(items)
        },
    )
    .await
}

fn item_of(items: &[WorkItem], kind: ItemKind) -> WorkItem {
    items
        .iter()
        .find(|item| item.kind == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind:?} item in {items:?}"))
}

/// Claims; `None` on 204.
async fn claim(app: &TestApp, token: &str, query: &str) -> Option<Value> {
    let response = app
        .http
        .post(app.url(&format!("/v1/queues/claim{query}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("answered");
    match response.status() {
        StatusCode::NO_CONTENT => None,
        StatusCode::OK => Some(response.json().await.unwrap()),
        other => panic!("claim answered {other}: {}", response.text().await.unwrap()),
    }
}

async fn claim_item(app: &TestApp, token: &str) -> Value {
    claim(app, token, "").await.expect("an item to claim")
}

async fn item_action(
    app: &TestApp,
    token: &str,
    item: &Value,
    action: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(&format!(
            "/v1/queues/items/{}/{action}",
            item["item_id"].as_str().unwrap()
        )))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("answered")
}

/// Completes an item that must complete; returns the completion.
async fn complete(app: &TestApp, token: &str, item: &Value, outcome: &Value) -> Value {
    let response = item_action(app, token, item, "complete", Some(outcome)).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{outcome} -> {body}");
    body
}

fn event_types(completion: &Value) -> Vec<&str> {
    completion["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect()
}

fn journey_of(item: &Value) -> JourneyId {
    item["journey_id"].as_str().unwrap().parse().unwrap()
}

async fn stream_len(app: &TestApp, journey: JourneyId) -> usize {
    app.log.read(&journey_key(journey)).await.unwrap().len()
}

async fn site_step(app: &TestApp, token: &str, journey: JourneyId, body: Value) {
    let response = app
        .post_json(&format!("/v1/journeys/{journey}/events"), token, &body)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{body}: {}",
        response.text().await.unwrap()
    );
}

async fn stage(app: &TestApp, journey: JourneyId) -> Stage {
    app.commands
        .load_journey(journey)
        .await
        .unwrap()
        .state
        .stage()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------

/// Referrals to randomized: agents work the queues (no answer, call-back, reached with
/// pre-screen, referral and booking in one call, not interested), sites take over over the API.
#[tokio::test]
async fn agents_work_referrals_through_the_queues_to_randomization() {
    let app = spawn_app().await;
    app.clock.set(instant("2026-03-02T09:00:00Z"));
    let s = study(&app, &["es", "de"], &["ES", "DE"], SlaSettings::default()).await;
    let (_, es_agent) = agent(&app, &[s.id], &["es-ES"]).await;
    let (_, de_agent) = agent(&app, &[s.id], &["de"]).await;
    let site = s.sites[0];
    let site_staff = app
        .token(NewToken {
            role: Some(Role::Site),
            site_id: Some(site),
            ..NewToken::default()
        })
        .await;

    let spanish: Vec<JourneyId> = {
        let mut journeys = Vec::new();
        for n in 0..3 {
            journeys.push(refer(&app, &s, n, "es", "ES", "Europe/Madrid").await);
        }
        journeys
    };
    let german = refer(&app, &s, 10, "de", "DE", "Europe/Berlin").await;
    for journey in spanish.iter().chain([&german]) {
        wait_items(&app, *journey, &[ItemKind::FirstContact]).await;
    }

    // The Spanish agent gets the three Spanish first contacts and nothing else.
    let mut claimed = BTreeMap::new();
    for _ in 0..3 {
        let item = claim_item(&app, &es_agent).await;
        assert_eq!(item["kind"], "first_contact");
        assert_eq!(item["language"], "es");
        assert_eq!(item["attempt"], 1);
        assert_eq!(
            item["links"]["timeline"],
            format!(
                "/v1/journeys/{}/timeline",
                item["journey_id"].as_str().unwrap()
            )
        );
        assert!(
            item.get("contact").is_none(),
            "no contact data in a claim: {item}"
        );
        claimed.insert(journey_of(&item), item);
    }
    assert!(
        claim(&app, &es_agent, "").await.is_none(),
        "the German referral is not for them"
    );
    let [a, b, c] = [spanish[0], spanish[1], spanish[2]];

    // a: nobody answers; the next attempt of the cadence is queued for later.
    let done = complete(
        &app,
        &es_agent,
        &claimed[&a],
        &json!({"outcome": "no_answer"}),
    )
    .await;
    assert_eq!(event_types(&done), ["contact_attempted"]);
    assert_eq!(done["stage"], "contacting");
    let next = item_of(
        &wait_items(&app, a, &[ItemKind::NextAttempt]).await,
        ItemKind::NextAttempt,
    );
    assert_eq!(next.attempt, 2);
    assert!(next.due_at > app.clock.now());

    // b: asks to be called back tomorrow at 10:00 Madrid time (09:00 UTC in winter).
    let done = complete(
        &app,
        &es_agent,
        &claimed[&b],
        &json!({"outcome": "callback", "local_time": "2026-03-03T10:00"}),
    )
    .await;
    assert_eq!(event_types(&done), ["callback_requested"]);
    assert_eq!(done["events"][0]["callback_at"], "2026-03-03T09:00:00Z");
    let callback = item_of(
        &wait_items(&app, b, &[ItemKind::Callback]).await,
        ItemKind::Callback,
    );
    assert_eq!(callback.due_at, instant("2026-03-03T09:00:00Z"));

    // c: not interested; the journey closes and leaves the queues.
    let done = complete(
        &app,
        &es_agent,
        &claimed[&c],
        &json!({"outcome": "not_interested"}),
    )
    .await;
    assert_eq!(done["stage"], "not_interested");
    wait_items(&app, c, &[]).await;

    // The German agent fails the German candidate on the pre-screen.
    let item = claim_item(&app, &de_agent).await;
    assert_eq!(journey_of(&item), german);
    let done = complete(
        &app,
        &de_agent,
        &item,
        &json!({"outcome": "reached", "prescreen": {"passed": false, "reasons": ["age"]}}),
    )
    .await;
    assert_eq!(
        event_types(&done),
        ["contact_attempted", "prescreen_completed"]
    );
    assert_eq!(done["stage"], "prescreen_failed");
    wait_items(&app, german, &[]).await;

    // Nothing is due now; the next morning the call-back and the next attempt are.
    assert!(claim(&app, &es_agent, "").await.is_none());
    app.clock.set(next.due_at.max(callback.due_at));
    let mut due = BTreeMap::new();
    for _ in 0..2 {
        let item = claim_item(&app, &es_agent).await;
        due.insert(journey_of(&item), item);
    }
    assert_eq!(due[&a]["kind"], "next_attempt");
    assert_eq!(due[&b]["kind"], "callback");

    // a is reached: pre-screen passed, referred to the site and booked, in one atomic append.
    let appointment = app.clock.now() + TimeDelta::days(3);
    let before = stream_len(&app, a).await;
    let done = complete(
        &app,
        &es_agent,
        &due[&a],
        &json!({
            "outcome": "reached",
            "prescreen": {"passed": true},
            "refer_to_site": {"site_id": site},
            "appointment": {"site_id": site, "appointment_at": appointment},
        }),
    )
    .await;
    assert_eq!(
        event_types(&done),
        [
            "contact_attempted",
            "prescreen_completed",
            "referred_to_site",
            "appointment_scheduled"
        ]
    );
    assert_eq!(done["stage"], "appointment_scheduled");
    let stored = app.log.read(&journey_key(a)).await.unwrap();
    assert_eq!(stored.len(), before + 4);
    assert_eq!(
        stored[before + 3].seq,
        stored[before].seq + 3,
        "one atomic append"
    );
    wait_items(&app, a, &[]).await;

    // b is reached on the call-back and referred to the site; booking waits in the queue.
    let done = complete(
        &app,
        &es_agent,
        &due[&b],
        &json!({"outcome": "reached", "prescreen": {"passed": true}, "refer_to_site": {"site_id": site}}),
    )
    .await;
    assert_eq!(done["stage"], "referred_to_site");
    let items_b = wait_items(&app, b, &[ItemKind::Schedule, ItemKind::SiteEscalation]).await;
    assert_eq!(item_of(&items_b, ItemKind::Schedule).site_id, Some(site));
    let schedule = claim_item(&app, &es_agent).await;
    assert_eq!(schedule["kind"], "schedule");
    assert_eq!(journey_of(&schedule), b);
    // Not yet due: the escalation waits for the site's grace.
    assert!(claim(&app, &es_agent, "").await.is_none());
    // A reached call is not a step at a site: the stage is named, nothing is appended.
    let before = stream_len(&app, b).await;
    let refused = item_action(
        &app,
        &es_agent,
        &schedule,
        "complete",
        Some(&json!({"outcome": "reached"})),
    )
    .await;
    let detail = problem(refused, StatusCode::CONFLICT).await;
    assert!(
        detail["detail"]
            .as_str()
            .unwrap()
            .contains("referred_to_site"),
        "{detail}"
    );
    assert_eq!(stream_len(&app, b).await, before);
    let done = complete(
        &app,
        &es_agent,
        &schedule,
        &json!({"outcome": "scheduled", "appointment_at": appointment}),
    )
    .await;
    assert_eq!(event_types(&done), ["appointment_scheduled"]);
    wait_items(&app, b, &[]).await;

    // The site takes both to randomization over the API.
    app.clock.set(appointment);
    for journey in [a, b] {
        for step in [
            json!({"type": "appointment_attended"}),
            json!({"type": "consented"}),
            json!({"type": "screening_started"}),
            json!({"type": "randomized", "arm": "A"}),
        ] {
            site_step(&app, &site_staff, journey, step).await;
        }
        assert_eq!(stage(&app, journey).await, Stage::Randomized);
        wait_items(&app, journey, &[]).await;
    }
    assert!(claim(&app, &es_agent, "").await.is_none());
    assert!(claim(&app, &de_agent, "").await.is_none());
    app.stop().await;
}

/// 50 agents claim from one queue of 200 items at once, completing some and holding the
/// rest: every item is handed out exactly once, none is lost.
#[tokio::test]
async fn fifty_concurrent_claimers_never_share_an_item_and_lose_none() {
    const ITEMS: usize = 200;
    const CLAIMERS: usize = 50;
    let app = Arc::new(spawn_app().await);
    let s = study(&app, &["es"], &["ES"], SlaSettings::default()).await;
    let batch: Vec<Value> = (0..ITEMS)
        .map(|n| referral(&s, n, "es", "ES", "Europe/Madrid"))
        .collect();
    let response = app
        .post_json(
            "/v1/referrals/batch",
            &s.campaign_token,
            &json!({"referrals": batch}),
        )
        .await;
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    let expected: HashSet<Uuid> = eventually("200 first contacts", WAIT, || async {
        let models = ReadModels::new(app.db.pool.clone());
        let mut tx = models.read("work_queue").await.ok()?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT item_id FROM work_items WHERE study_id = $1 AND kind = 'first_contact'",
        )
        .bind(s.id.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .ok()?;
        (ids.len() == ITEMS).then(|| ids.into_iter().collect())
    })
    .await;

    let mut agents = Vec::new();
    for _ in 0..CLAIMERS {
        agents.push(agent(&app, &[s.id], &["es"]).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
    let tasks: Vec<_> = agents
        .into_iter()
        .enumerate()
        .map(|(n, (agent_id, token))| {
            let app = Arc::clone(&app);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut claimed = Vec::new();
                while let Some(item) = claim(&app, &token, "").await {
                    let id: Uuid = item["item_id"].as_str().unwrap().parse().unwrap();
                    // Even claimers complete what they claim (the item stays in the read model
                    // until projected, and must not be handed out again meanwhile); odd ones
                    // hold theirs.
                    if n % 2 == 0 {
                        complete(&app, &token, &item, &json!({"outcome": "no_answer"})).await;
                    }
                    claimed.push(id);
                }
                (agent_id, claimed)
            })
        })
        .collect();
    let mut handed_out = Vec::new();
    let mut holders: BTreeMap<Uuid, AgentId> = BTreeMap::new();
    for task in tasks {
        let (agent_id, claimed) = task.await.expect("a claimer");
        for id in &claimed {
            holders.insert(*id, agent_id);
        }
        handed_out.extend(claimed);
    }
    let distinct: HashSet<Uuid> = handed_out.iter().copied().collect();
    assert_eq!(
        handed_out.len(),
        distinct.len(),
        "an item was handed out twice"
    );
    assert_eq!(distinct, expected, "every item is handed out, none lost");
    // The leases still held are exactly the held items, each with the agent that claimed it.
    let leases: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT item_id, agent_id FROM work_leases WHERE completed_seq IS NULL")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    for (item, holder) in &leases {
        assert_eq!(
            holders.get(item).map(|agent| *agent.as_uuid()),
            Some(*holder)
        );
    }
    let completions: i64 = sqlx::query_scalar("SELECT count(*) FROM work_completions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(completions as usize + leases.len(), ITEMS);
    assert!(completions > 0 && !leases.is_empty());
    // Nothing claimable is left: completed items became next attempts due tomorrow.
    let (_, late) = agent(&app, &[s.id], &["es"]).await;
    assert!(claim(&app, &late, "").await.is_none());
    Arc::into_inner(app)
        .expect("every claimer is done")
        .stop()
        .await;
}

/// A lease that runs out puts the item back; its old holder can no longer act on it.
#[tokio::test]
async fn a_lapsed_lease_returns_the_item_and_its_old_holder_cannot_complete_it() {
    let app = spawn_app().await;
    // Whole seconds: lease ends read back from PostgreSQL are microsecond-precise.
    app.clock.set(instant("2026-03-02T09:00:00Z"));
    let s = study(&app, &["es"], &["ES"], SlaSettings::default()).await;
    let (_, ana) = agent(&app, &[s.id], &["es"]).await;
    let (_, ben) = agent(&app, &[s.id], &["es"]).await;
    let journey = refer(&app, &s, 1, "es", "ES", "Europe/Madrid").await;
    wait_items(&app, journey, &[ItemKind::FirstContact]).await;

    let item = claim_item(&app, &ana).await;
    let claimed_at = app.clock.now();
    assert_eq!(
        item["lease"]["expires_at"].as_str().map(instant),
        Some(claimed_at + LEASE)
    );
    assert!(claim(&app, &ben, "").await.is_none(), "held by Ana");

    // Ana extends before it runs out: the lease now ends a full lease time from then.
    app.clock.advance(TimeDelta::minutes(4));
    let response = item_action(&app, &ana, &item, "extend", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let extended: Value = response.json().await.unwrap();
    assert_eq!(
        extended["lease"]["expires_at"].as_str().map(instant),
        Some(app.clock.now() + LEASE)
    );
    app.clock.advance(TimeDelta::minutes(4));
    assert!(
        claim(&app, &ben, "").await.is_none(),
        "still held after the extension"
    );
    // Ben cannot act on Ana's item.
    let refused = item_action(
        &app,
        &ben,
        &item,
        "complete",
        Some(&json!({"outcome": "no_answer"})),
    )
    .await;
    let body = problem(refused, StatusCode::CONFLICT).await;
    assert!(
        body["detail"].as_str().unwrap().contains("another agent"),
        "{body}"
    );

    // Ana walks away; the lease lapses: she is told so, and the item is Ben's to claim.
    app.clock
        .advance(TimeDelta::minutes(1) + TimeDelta::seconds(1));
    let before = stream_len(&app, journey).await;
    let response = item_action(
        &app,
        &ana,
        &item,
        "complete",
        Some(&json!({"outcome": "no_answer"})),
    )
    .await;
    let body = problem(response, StatusCode::CONFLICT).await;
    assert!(
        body["detail"].as_str().unwrap().contains("lapsed"),
        "{body}"
    );
    let again = claim_item(&app, &ben).await;
    assert_eq!(again["item_id"], item["item_id"]);
    for action in ["extend", "release", "complete"] {
        let response = item_action(
            &app,
            &ana,
            &item,
            action,
            Some(&json!({"outcome": "no_answer"})),
        )
        .await;
        let body = problem(response, StatusCode::CONFLICT).await;
        assert!(
            body["detail"].as_str().unwrap().contains("another agent"),
            "{action}: {body}"
        );
    }
    assert_eq!(
        stream_len(&app, journey).await,
        before,
        "Ana appended nothing"
    );

    // Ben releases it: back in the queue at once; he claims and completes it.
    let response = item_action(&app, &ben, &again, "release", None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let third = claim_item(&app, &ben).await;
    assert_eq!(third["item_id"], item["item_id"]);
    complete(&app, &ben, &third, &json!({"outcome": "no_answer"})).await;
    // Completed: not handed out again, even before the read model has caught up.
    assert!(claim(&app, &ana, "").await.is_none());
    let response = item_action(
        &app,
        &ben,
        &third,
        "complete",
        Some(&json!({"outcome": "no_answer"})),
    )
    .await;
    assert!(matches!(
        response.status(),
        StatusCode::CONFLICT | StatusCode::NOT_FOUND
    ));
    assert_eq!(stream_len(&app, journey).await, before + 1);
    app.stop().await;
}

/// Call-backs at 18:00 local time in São Paulo (UTC−3) and Tokyo (UTC+9) fall due at their
/// own UTC instants, and not a second before.
#[tokio::test]
async fn call_backs_fall_due_at_the_patients_local_time() {
    let app = spawn_app().await;
    // 06:00 in São Paulo, 18:00 in Tokyo.
    app.clock.set(instant("2026-03-02T09:00:00Z"));
    let s = study(&app, &["pt", "ja"], &["BR", "JP"], SlaSettings::default()).await;
    let (_, agent_token) = agent(&app, &[s.id], &["pt-BR", "ja"]).await;
    let sao_paulo = refer(&app, &s, 1, "pt-BR", "BR", "America/Sao_Paulo").await;
    let tokyo = refer(&app, &s, 2, "ja", "JP", "Asia/Tokyo").await;
    for journey in [sao_paulo, tokyo] {
        wait_items(&app, journey, &[ItemKind::FirstContact]).await;
    }
    let mut claimed = BTreeMap::new();
    for _ in 0..2 {
        let item = claim_item(&app, &agent_token).await;
        claimed.insert(journey_of(&item), item);
    }
    // A time the clocks skip is refused, nothing is appended.
    let refused = item_action(
        &app,
        &agent_token,
        &claimed[&tokyo],
        "complete",
        Some(&json!({"outcome": "callback", "local_time": "2026-03-08T02:30", "time_zone": "America/New_York"})),
    )
    .await;
    problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    // 18:00 today in São Paulo (the zone from the referral) and 18:00 tomorrow in Tokyo (given).
    let done = complete(
        &app,
        &agent_token,
        &claimed[&sao_paulo],
        &json!({"outcome": "callback", "local_time": "2026-03-02T18:00"}),
    )
    .await;
    assert_eq!(done["events"][0]["callback_at"], "2026-03-02T21:00:00Z");
    assert_eq!(done["events"][0]["time_zone"], "America/Sao_Paulo");
    let done = complete(
        &app,
        &agent_token,
        &claimed[&tokyo],
        &json!({"outcome": "callback", "local_time": "2026-03-03T18:00:00", "time_zone": "Asia/Tokyo"}),
    )
    .await;
    assert_eq!(done["events"][0]["callback_at"], "2026-03-03T09:00:00Z");
    let sp_item = item_of(
        &wait_items(&app, sao_paulo, &[ItemKind::Callback]).await,
        ItemKind::Callback,
    );
    let tk_item = item_of(
        &wait_items(&app, tokyo, &[ItemKind::Callback]).await,
        ItemKind::Callback,
    );
    assert_eq!(sp_item.due_at, instant("2026-03-02T21:00:00Z"));
    assert_eq!(tk_item.due_at, instant("2026-03-03T09:00:00Z"));

    app.clock.set(instant("2026-03-02T20:59:59Z"));
    assert!(
        claim(&app, &agent_token, "").await.is_none(),
        "São Paulo is not due before 18:00 local"
    );
    app.clock.set(instant("2026-03-02T21:00:00Z"));
    let item = claim_item(&app, &agent_token).await;
    assert_eq!(journey_of(&item), sao_paulo);
    assert_eq!(item["kind"], "callback");
    assert_eq!(item["time_zone"], "America/Sao_Paulo");
    complete(&app, &agent_token, &item, &json!({"outcome": "reached"})).await;

    app.clock.set(instant("2026-03-03T08:59:59Z"));
    assert!(
        claim(&app, &agent_token, "").await.is_none(),
        "Tokyo is not due before 18:00 local"
    );
    app.clock.set(instant("2026-03-03T09:00:00Z"));
    let item = claim_item(&app, &agent_token).await;
    assert_eq!(journey_of(&item), tokyo);
    assert_eq!(item["kind"], "callback");
    app.stop().await;
}

/// The last unanswered attempt of the cadence marks the journey unreachable: no further item.
#[tokio::test]
async fn the_last_no_answer_of_the_cadence_marks_the_journey_unreachable() {
    let app = spawn_app().await;
    let sla = SlaSettings {
        contact_attempts: 3,
        attempt_spacing_hours: 24,
        ..SlaSettings::default()
    };
    let s = study(&app, &["es"], &["ES"], sla).await;
    let (_, token) = agent(&app, &[s.id], &["es"]).await;
    let journey = refer(&app, &s, 1, "es", "ES", "Europe/Madrid").await;
    wait_items(&app, journey, &[ItemKind::FirstContact]).await;

    for attempt in 1..=3 {
        let item = claim_item(&app, &token).await;
        assert_eq!(item["attempt"], attempt, "{item}");
        assert_eq!(item["max_attempts"], 3);
        let done = complete(
            &app,
            &token,
            &item,
            &json!({"outcome": "no_answer", "channel": "phone"}),
        )
        .await;
        if attempt < 3 {
            assert_eq!(event_types(&done), ["contact_attempted"]);
            // The new attempt's item replaces the one just worked (a new id, a later due).
            let next = eventually("the next attempt's item", WAIT, || async {
                items(&app, journey)
                    .await
                    .into_iter()
                    .find(|item| item.kind == ItemKind::NextAttempt && item.attempt == attempt + 1)
            })
            .await;
            assert_ne!(next.item_id.to_string(), item["item_id"].as_str().unwrap());
            // Not before the cadence's spacing.
            assert!(claim(&app, &token, "").await.is_none());
            app.clock.set(next.due_at);
        } else {
            assert_eq!(event_types(&done), ["contact_attempted", "unreachable"]);
            assert_eq!(done["stage"], "unreachable");
        }
    }
    wait_items(&app, journey, &[]).await;
    app.clock.advance(TimeDelta::days(30));
    assert!(claim(&app, &token, "").await.is_none());
    assert_eq!(stage(&app, journey).await, Stage::Unreachable);
    app.stop().await;
}

/// Opting out takes the journey out of every queue; a lease on its item cannot complete it.
#[tokio::test]
async fn an_opt_out_removes_the_item_and_a_held_lease_cannot_complete_it() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let s = study(&app, &["es"], &["ES"], SlaSettings::default()).await;
    let (_, token) = agent(&app, &[s.id], &["es"]).await;
    let by_phone = refer(&app, &s, 1, "es", "ES", "Europe/Madrid").await;
    let by_letter = refer(&app, &s, 2, "es", "ES", "Europe/Madrid").await;
    for journey in [by_phone, by_letter] {
        wait_items(&app, journey, &[ItemKind::FirstContact]).await;
    }
    let mut claimed = BTreeMap::new();
    for _ in 0..2 {
        let item = claim_item(&app, &token).await;
        claimed.insert(journey_of(&item), item);
    }
    // On the phone: the outcome is the opt-out.
    let done = complete(
        &app,
        &token,
        &claimed[&by_phone],
        &json!({"outcome": "opted_out"}),
    )
    .await;
    assert_eq!(event_types(&done), ["opted_out"]);
    wait_items(&app, by_phone, &[]).await;

    // By letter, recorded elsewhere while the agent holds the item.
    site_step(&app, &admin, by_letter, json!({"type": "opted_out"})).await;
    wait_items(&app, by_letter, &[]).await;
    let before = stream_len(&app, by_letter).await;
    let response = item_action(
        &app,
        &token,
        &claimed[&by_letter],
        "complete",
        Some(&json!({"outcome": "no_answer"})),
    )
    .await;
    // 409 while the lease row remains, 404 once pruned: either way nothing is appended.
    assert!(
        matches!(
            response.status(),
            StatusCode::CONFLICT | StatusCode::NOT_FOUND
        ),
        "{}",
        response.status()
    );
    assert_eq!(stream_len(&app, by_letter).await, before);
    assert_eq!(stage(&app, by_letter).await, Stage::OptedOut);
    app.clock.advance(TimeDelta::days(10));
    assert!(claim(&app, &token, "").await.is_none());
    app.stop().await;
}

/// Agents see only their studies and languages; only agents claim; only team leads (admins)
/// read depth and agent reports.
#[tokio::test]
async fn agents_see_only_their_queues_and_other_roles_are_refused() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let s = study(&app, &["es", "de"], &["ES", "DE"], SlaSettings::default()).await;
    let other = study(&app, &["es"], &["ES"], SlaSettings::default()).await;
    let (_, right) = agent(&app, &[s.id], &["es"]).await;
    let (_, wrong_language) = agent(&app, &[s.id], &["de"]).await;
    let (_, wrong_study) = agent(&app, &[other.id], &["es"]).await;
    let journey = refer(&app, &s, 1, "es-MX", "ES", "Europe/Madrid").await;
    wait_items(&app, journey, &[ItemKind::FirstContact]).await;

    assert!(claim(&app, &wrong_language, "").await.is_none());
    assert!(claim(&app, &wrong_study, "").await.is_none());
    let response = app
        .http
        .post(app.url(&format!("/v1/queues/claim?study={}", s.id)))
        .bearer_auth(&wrong_study)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .http
        .post(app.url("/v1/queues/claim?kind=lunch"))
        .bearer_auth(&right)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::BAD_REQUEST).await;
    // Narrowed to another kind or country: nothing; to its own: the item (es-MX matches es).
    assert!(claim(&app, &right, "?kind=callback").await.is_none());
    assert!(claim(&app, &right, "?country=DE").await.is_none());
    let item = claim(
        &app,
        &right,
        &format!("?kind=first_contact&country=es&study={}", s.id),
    )
    .await
    .expect("the item");
    assert_eq!(journey_of(&item), journey);

    let site = app
        .token(NewToken {
            role: Some(Role::Site),
            site_id: Some(s.sites[0]),
            ..NewToken::default()
        })
        .await;
    let sponsor = app
        .token(NewToken {
            role: Some(Role::Sponsor),
            sponsor_id: Some(SponsorId::new()),
            ..NewToken::default()
        })
        .await;
    for token in [&admin, &site, &sponsor, &s.campaign_token] {
        let response = app
            .http
            .post(app.url("/v1/queues/claim"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
        let response = item_action(
            &app,
            token,
            &item,
            "complete",
            Some(&json!({"outcome": "no_answer"})),
        )
        .await;
        problem(response, StatusCode::FORBIDDEN).await;
    }
    for path in ["/v1/queues/depth", "/v1/queues/agents"] {
        for token in [&right, &site, &sponsor, &s.campaign_token] {
            problem(app.get_with(path, token).await, StatusCode::FORBIDDEN).await;
        }
        assert_eq!(app.get_with(path, &admin).await.status(), StatusCode::OK);
        problem(app.get(path).await, StatusCode::UNAUTHORIZED).await;
    }
    let response = app
        .http
        .post(app.url("/v1/queues/claim"))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    // Another agent of the same queue cannot act on the holder's item.
    let (_, colleague) = agent(&app, &[s.id], &["es"]).await;
    for action in ["extend", "release", "complete"] {
        let response = item_action(
            &app,
            &colleague,
            &item,
            action,
            Some(&json!({"outcome": "no_answer"})),
        )
        .await;
        problem(response, StatusCode::CONFLICT).await;
    }
    let response = app
        .http
        .post(app.url(&format!("/v1/queues/items/{}/extend", Uuid::new_v4())))
        .bearer_auth(&right)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::NOT_FOUND).await;
    app.stop().await;
}

/// Team leads see depth by due state, breaches as they happen, and completions per agent;
/// Prometheus shows the same depth.
#[tokio::test]
async fn team_leads_see_depth_breaches_and_completions_per_agent() {
    let app = spawn_app_with_settings(|settings| {
        settings.queue.maintenance_every = Duration::from_millis(50);
    })
    .await;
    app.clock.set(instant("2026-03-02T09:00:00Z"));
    let admin = app.admin_token().await;
    let s = study(&app, &["es"], &["ES"], SlaSettings::default()).await;
    let (agent_id, token) = agent(&app, &[s.id], &["es"]).await;
    let mut journeys = Vec::new();
    for n in 0..3 {
        journeys.push(refer(&app, &s, n, "es", "ES", "Europe/Madrid").await);
    }
    for journey in &journeys {
        wait_items(&app, *journey, &[ItemKind::FirstContact]).await;
    }
    let depth = |body: &Value| -> (i64, i64, i64, i64) {
        let queues = body["queues"].as_array().unwrap();
        let row = queues
            .iter()
            .find(|row| row["kind"] == "first_contact")
            .cloned()
            .unwrap_or_else(|| json!({"due": 0, "overdue": 0, "upcoming": 0, "leased": 0}));
        (
            row["due"].as_i64().unwrap(),
            row["overdue"].as_i64().unwrap(),
            row["upcoming"].as_i64().unwrap(),
            row["leased"].as_i64().unwrap(),
        )
    };
    let path = format!("/v1/queues/depth?study={}", s.id);
    let body: Value = app.get_with(&path, &admin).await.json().await.unwrap();
    assert_eq!(depth(&body), (3, 0, 0, 0), "{body}");
    let held = claim_item(&app, &token).await;
    let body: Value = app.get_with(&path, &admin).await.json().await.unwrap();
    assert_eq!(depth(&body), (3, 0, 0, 1), "{body}");
    let done = claim_item(&app, &token).await;
    complete(&app, &token, &done, &json!({"outcome": "no_answer"})).await;
    wait_items(&app, journey_of(&done), &[ItemKind::NextAttempt]).await;

    // A day later the two first contacts left breach their 24-hour service level.
    app.clock.advance(TimeDelta::hours(25));
    let body: Value = app.get_with(&path, &admin).await.json().await.unwrap();
    assert_eq!(depth(&body).1, 2, "{body}");
    assert!(
        body["queues"][0]["oldest_age_seconds"].as_i64().unwrap() >= 25 * 3600,
        "{body}"
    );
    eventually("the breach gauges", WAIT, || async {
        let text = app.get("/metrics").await.text().await.ok()?;
        (text.contains(r#"funnel_queue_sla_breaches{kind="first_contact"} 2"#)
            && text.contains(r#"funnel_queue_depth{kind="first_contact",state="overdue"} 2"#)
            && text.contains(r#"funnel_queue_depth{kind="callback",state="due"} 0"#))
        .then_some(())
    })
    .await;

    let report: Value = app
        .get_with(
            "/v1/queues/agents?from=2026-03-02T00:00:00Z&to=2026-03-04T00:00:00Z",
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    let agents = report["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "{report}");
    assert_eq!(agents[0]["agent_id"], agent_id.to_string());
    assert_eq!(agents[0]["completions"], 1);
    assert_eq!(agents[0]["by_outcome"]["no_answer"], 1);
    // The held lease lapsed with the day that passed.
    assert_eq!(agents[0]["holding"], 0);
    let _ = held;
    let response = app
        .get_with(
            "/v1/queues/agents?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            &admin,
        )
        .await;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    app.stop().await;
}

/// Every queue route is in the OpenAPI document under the `queues` tag, with its outcome schema.
#[tokio::test]
async fn the_queue_routes_are_documented() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for (path, method) in [
        ("/v1/queues/claim", "post"),
        ("/v1/queues/items/{item_id}/extend", "post"),
        ("/v1/queues/items/{item_id}/release", "post"),
        ("/v1/queues/items/{item_id}/complete", "post"),
        ("/v1/queues/depth", "get"),
        ("/v1/queues/agents", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert_eq!(operation["tags"][0], "queues", "{path}");
        assert!(
            operation["responses"]["403"]["content"]["application/problem+json"].is_object(),
            "{path}: {operation}"
        );
    }
    assert!(doc["components"]["schemas"]["Outcome"].is_object());
    app.stop().await;
}
