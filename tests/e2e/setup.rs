//! Study and site setup routes over HTTP: studies, sites (add, pause, resume, close),
//! campaigns and their spend, all as events on the study's subject.

use funnel_api::auth::{NewToken, Role};
use funnel_api::commands::study_key;
use funnel_domain::{
    CampaignId, DomainEvent, Language, SiteId, SiteStatus, SponsorId, StudyEvent, StudyId,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// POST with full control over headers: `content_type` `None` sends none at all.
pub(crate) async fn post_raw(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    if_match: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.http.post(app.url(path)).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(if_match) = if_match {
        request = request.header("If-Match", if_match);
    }
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    request.send().await.expect("the request is answered")
}

/// POST JSON with an `If-Match` header.
pub(crate) async fn post_if_match(
    app: &TestApp,
    path: &str,
    token: &str,
    if_match: &str,
    body: &Value,
) -> reqwest::Response {
    post_raw(
        app,
        path,
        Some(token),
        Some(if_match),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// Asserts a problem document with `status` and returns it.
pub(crate) async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    let actual = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("a JSON problem document");
    assert_eq!(actual, status, "{body}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["title"].is_string(), "{body}");
    body
}

/// Asserts `status` and returns the JSON body and the ETag.
pub(crate) async fn json_with_etag(
    response: reqwest::Response,
    status: StatusCode,
) -> (Value, Option<String>) {
    let actual = response.status();
    let etag = response
        .headers()
        .get("etag")
        .map(|value| value.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(actual, status, "{body}");
    (body, etag)
}

fn new_study_body(sponsor: SponsorId) -> Value {
    json!({
        "sponsor_id": sponsor.to_string(),
        "title": "Migraine prevention, phase III",
        "protocol_code": "MIG-301",
        "target_randomized": 120,
        "countries": ["es", "DE"],
        "languages": ["es", "de"],
        "sla": {"first_contact_hours": 12, "contact_attempts": 4}
    })
}

fn site_body(name: &str, country: &str) -> Value {
    json!({
        "name": name,
        "country": country,
        "languages": ["es"],
        "monthly_target_randomized": 0.5
    })
}

/// Creates a study over HTTP and returns its id.
async fn create_study(app: &TestApp, admin: &str, sponsor: SponsorId) -> StudyId {
    let (body, _) = json_with_etag(
        app.post_json("/v1/studies", admin, &new_study_body(sponsor))
            .await,
        StatusCode::CREATED,
    )
    .await;
    body["study_id"].as_str().unwrap().parse().unwrap()
}

async fn add_site(app: &TestApp, admin: &str, study: StudyId, name: &str) -> SiteId {
    let (body, _) = json_with_etag(
        app.post_json(
            &format!("/v1/studies/{study}/sites"),
            admin,
            &site_body(name, "ES"),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    body["site_id"].as_str().unwrap().parse().unwrap()
}

async fn study_events(app: &TestApp, study: StudyId) -> Vec<StudyEvent> {
    app.log
        .read(&study_key(study))
        .await
        .unwrap()
        .iter()
        .map(
            |recorded| match funnel_api::commands::decode_recorded(recorded).unwrap() {
                DomainEvent::Study(event) => event,
                DomainEvent::Journey(event) => {
                    panic!("a journey event on a study subject: {event:?}")
                }
            },
        )
        .collect()
}

#[tokio::test]
async fn an_admin_sets_up_a_study_with_sites_campaigns_and_spend() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let sponsor = SponsorId::new();

    // The study: the id is generated, the answer says where it lives and at which version.
    let response = app
        .post_json("/v1/studies", &admin, &new_study_body(sponsor))
        .await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (created, etag) = json_with_etag(response, StatusCode::CREATED).await;
    let study: StudyId = created["study_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/v1/studies/{study}"));
    assert_eq!(etag, Some(format!("\"{}\"", created["version"])));
    assert_eq!(created["events"][0]["type"], "study_created");
    assert_eq!(created["events"][0]["countries"], json!(["ES", "DE"]));

    // A study id given by the caller is kept.
    let chosen = StudyId::new();
    let mut body = new_study_body(sponsor);
    body["study_id"] = json!(chosen.to_string());
    let (created, _) = json_with_etag(
        app.post_json("/v1/studies", &admin, &body).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["study_id"], chosen.to_string());

    // Two sites, one with an id of the caller's.
    let madrid = add_site(&app, &admin, study, "Hospital La Paz").await;
    let given = SiteId::new();
    let mut body = site_body("Hospital Clínic", "es");
    body["site_id"] = json!(given.to_string());
    let (added, _) = json_with_etag(
        app.post_json(&format!("/v1/studies/{study}/sites"), &admin, &body)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(added["site_id"], given.to_string());
    assert_eq!(added["events"][0]["type"], "site_added");
    assert_eq!(added["events"][0]["country"], "ES");

    // Pause with a reason, resume without a body, pause again with no body, close with a reason.
    let (paused, _) = json_with_etag(
        app.post_json(
            &format!("/v1/studies/{study}/sites/{madrid}/pause"),
            &admin,
            &json!({"reason": "pharmacy closed for renovation"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(paused["events"][0]["type"], "site_paused");
    assert_eq!(
        paused["events"][0]["reason"],
        "pharmacy closed for renovation"
    );
    let resume = post_raw(
        &app,
        &format!("/v1/studies/{study}/sites/{madrid}/resume"),
        Some(&admin),
        None,
        None,
        "",
    )
    .await;
    let (resumed, _) = json_with_etag(resume, StatusCode::OK).await;
    assert_eq!(resumed["events"][0]["type"], "site_resumed");
    let (closed, _) = json_with_etag(
        app.post_json(
            &format!("/v1/studies/{study}/sites/{given}/close"),
            &admin,
            &json!({"reason": "investigator left"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(closed["events"][0]["type"], "site_closed");

    // A campaign and two spend records in two currencies.
    let (registered, _) = json_with_etag(
        app.post_json(
            &format!("/v1/studies/{study}/campaigns"),
            &admin,
            &json!({"name": "Spring ads", "channel": "ads"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(registered["events"][0]["type"], "campaign_registered");
    let campaign: CampaignId = registered["campaign_id"].as_str().unwrap().parse().unwrap();
    for (amount, currency) in [(150_000, "eur"), (50_000, "EUR"), (20_000, "USD")] {
        let (spent, _) = json_with_etag(
            app.post_json(
                &format!("/v1/studies/{study}/campaigns/{campaign}/spend"),
                &admin,
                &json!({
                    "amount_minor": amount,
                    "currency": currency,
                    "period_start": "2026-03-01",
                    "period_end": "2026-03-31"
                }),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(spent["events"][0]["type"], "campaign_spend_recorded");
    }

    // The read side shows all of it, at the version of the last change.
    let response = app.get_with(&format!("/v1/studies/{study}"), &admin).await;
    let (view, etag) = json_with_etag(response, StatusCode::OK).await;
    assert_eq!(etag, Some(format!("\"{}\"", view["version"])));
    assert_eq!(view["title"], "Migraine prevention, phase III");
    assert_eq!(view["sponsor_id"], sponsor.to_string());
    assert_eq!(view["countries"], json!(["ES", "DE"]));
    assert_eq!(view["sla"]["first_contact_hours"], 12);
    assert_eq!(view["sla"]["contact_attempts"], 4);
    assert_eq!(
        view["sla"]["site_escalation_days"], 5,
        "defaults fill the rest"
    );
    let status_of = |site: SiteId| {
        view["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site_id"] == site.to_string())
            .map(|s| s["status"].clone())
    };
    assert_eq!(status_of(madrid), Some(json!("active")));
    assert_eq!(status_of(given), Some(json!("closed")));
    let spend = &view["campaigns"][0]["spend"];
    assert_eq!(
        spend,
        &json!([{"currency": "EUR", "amount_minor": 200_000}, {"currency": "USD", "amount_minor": 20_000}])
    );
    assert_eq!(view["campaigns"][0]["channel"], "ads");

    // Every change is an event on the study's own subject.
    let events = study_events(&app, study).await;
    let types: Vec<_> = events.iter().map(StudyEvent::event_type).collect();
    assert_eq!(
        types,
        [
            "funnel.study.created",
            "funnel.study.site_added",
            "funnel.study.site_added",
            "funnel.study.site_paused",
            "funnel.study.site_resumed",
            "funnel.study.site_closed",
            "funnel.study.campaign_registered",
            "funnel.study.campaign_spend_recorded",
            "funnel.study.campaign_spend_recorded",
            "funnel.study.campaign_spend_recorded",
        ]
    );
    let loaded = app.commands.load_study(study).await.unwrap();
    assert_eq!(loaded.state.site_status(madrid), Some(SiteStatus::Active));
    assert_eq!(
        view["version"].as_u64(),
        loaded.version,
        "the ETag is the study's stream version"
    );
    app.stop().await;
}

#[tokio::test]
async fn illegal_site_transitions_are_409_naming_the_status_and_append_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let study = create_study(&app, &admin, SponsorId::new()).await;
    let site = add_site(&app, &admin, study, "Hospital La Paz").await;
    let head = app.log.stream_head().await.unwrap();

    // Resuming an active site.
    let refused = problem(
        app.post_json(
            &format!("/v1/studies/{study}/sites/{site}/resume"),
            &admin,
            &json!({}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("`active`") && detail.contains("resume_site"),
        "{detail}"
    );
    assert_eq!(app.log.stream_head().await.unwrap(), head);

    // Closed is for good: neither pause nor resume nor a second close. (`null` is no body.)
    json_with_etag(
        post_raw(
            &app,
            &format!("/v1/studies/{study}/sites/{site}/close"),
            Some(&admin),
            None,
            Some("application/json"),
            "null",
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let head = app.log.stream_head().await.unwrap();
    for action in ["pause", "resume", "close"] {
        let refused = problem(
            app.post_json(
                &format!("/v1/studies/{study}/sites/{site}/{action}"),
                &admin,
                &json!({}),
            )
            .await,
            StatusCode::CONFLICT,
        )
        .await;
        assert!(
            refused["detail"].as_str().unwrap().contains("`closed`"),
            "{refused}"
        );
    }
    // The same study or site or campaign twice.
    let mut again = new_study_body(SponsorId::new());
    again["study_id"] = json!(study.to_string());
    problem(
        app.post_json("/v1/studies", &admin, &again).await,
        StatusCode::CONFLICT,
    )
    .await;
    let mut twice = site_body("Again", "ES");
    twice["site_id"] = json!(site.to_string());
    problem(
        app.post_json(&format!("/v1/studies/{study}/sites"), &admin, &twice)
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing appended"
    );

    // Unknown study, site or campaign: 404 and nothing appended.
    let unknown = StudyId::new();
    problem(
        app.post_json(
            &format!("/v1/studies/{unknown}/sites"),
            &admin,
            &site_body("Nowhere", "ES"),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.get_with(&format!("/v1/studies/{unknown}"), &admin)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let other_site = SiteId::new();
    problem(
        app.post_json(
            &format!("/v1/studies/{study}/sites/{other_site}/pause"),
            &admin,
            &json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let other_campaign = CampaignId::new();
    problem(
        app.post_json(
            &format!("/v1/studies/{study}/campaigns/{other_campaign}/spend"),
            &admin,
            &json!({"amount_minor": 100, "currency": "EUR",
                    "period_start": "2026-03-01", "period_end": "2026-03-31"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.get_with("/v1/studies/not-a-uuid", &admin).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing appended"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_appends_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;

    // `If-Match: "0"` creates only a new study.
    let study = StudyId::new();
    let mut body = new_study_body(SponsorId::new());
    body["study_id"] = json!(study.to_string());
    let (created, etag) = json_with_etag(
        post_if_match(&app, "/v1/studies", &admin, "\"0\"", &body).await,
        StatusCode::CREATED,
    )
    .await;
    let first = etag.unwrap();
    assert_eq!(first, format!("\"{}\"", created["version"]));

    let (_, second) = json_with_etag(
        post_if_match(
            &app,
            &format!("/v1/studies/{study}/sites"),
            &admin,
            &first,
            &site_body("Hospital La Paz", "ES"),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let second = second.unwrap();
    assert_ne!(first, second);

    // Every write route refuses the stale version and appends nothing.
    let head = app.log.stream_head().await.unwrap();
    let site = study_events(&app, study)
        .await
        .iter()
        .find_map(|event| match event {
            StudyEvent::SiteAdded(added) => Some(added.site_id),
            _ => None,
        })
        .unwrap();
    for (path, body) in [
        ("/v1/studies".to_owned(), new_study_body(SponsorId::new())),
        (
            format!("/v1/studies/{study}/sites"),
            site_body("Hospital Clínic", "ES"),
        ),
        (format!("/v1/studies/{study}/sites/{site}/pause"), json!({})),
        (
            format!("/v1/studies/{study}/campaigns"),
            json!({"name": "Newsletter", "channel": "newsletter"}),
        ),
    ] {
        let stale = if path == "/v1/studies" {
            "\"7\""
        } else {
            first.as_str()
        };
        let refused = problem(
            post_if_match(&app, &path, &admin, stale, &body).await,
            StatusCode::PRECONDITION_FAILED,
        )
        .await;
        assert!(
            refused["detail"].as_str().unwrap().contains("version"),
            "{refused}"
        );
    }
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );

    // With the current version it goes through.
    json_with_etag(
        post_if_match(
            &app,
            &format!("/v1/studies/{study}/sites/{site}/pause"),
            &admin,
            &second,
            &json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    // A malformed If-Match is a bad request.
    problem(
        post_if_match(
            &app,
            &format!("/v1/studies/{study}/sites/{site}/resume"),
            &admin,
            "\"yesterday\"",
            &json!({}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_invalid_bodies_are_problem_documents_and_append_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let study = create_study(&app, &admin, SponsorId::new()).await;
    let site = add_site(&app, &admin, study, "Hospital La Paz").await;
    let (registered, _) = json_with_etag(
        app.post_json(
            &format!("/v1/studies/{study}/campaigns"),
            &admin,
            &json!({"name": "Spring ads", "channel": "ads"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let campaign = registered["campaign_id"].as_str().unwrap().to_owned();
    let head = app.log.stream_head().await.unwrap();
    let sites = format!("/v1/studies/{study}/sites");
    let spend = format!("/v1/studies/{study}/campaigns/{campaign}/spend");
    let pause = format!("/v1/studies/{study}/sites/{site}/pause");
    let campaigns = format!("/v1/studies/{study}/campaigns");

    // Not JSON at all: 400.
    for path in [
        "/v1/studies",
        sites.as_str(),
        spend.as_str(),
        pause.as_str(),
    ] {
        problem(
            post_raw(
                &app,
                path,
                Some(&admin),
                None,
                Some("application/json"),
                "{ not json",
            )
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        // JSON under the wrong content type: 415.
        problem(
            post_raw(&app, path, Some(&admin), None, Some("text/plain"), "{}").await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    }

    let mut unknown_field = new_study_body(SponsorId::new());
    unknown_field["budget"] = json!(1_000_000);
    let mut missing_field = new_study_body(SponsorId::new());
    missing_field.as_object_mut().unwrap().remove("sponsor_id");
    let mut bad_country = new_study_body(SponsorId::new());
    bad_country["countries"] = json!(["ES", "XX"]);
    let mut bad_language = new_study_body(SponsorId::new());
    bad_language["languages"] = json!(["es_ES"]);
    let mut zero_target = new_study_body(SponsorId::new());
    zero_target["target_randomized"] = json!(0);
    let mut unknown_sla = new_study_body(SponsorId::new());
    unknown_sla["sla"] = json!({"first_contact_minutes": 5});
    let mut no_countries = new_study_body(SponsorId::new());
    no_countries["countries"] = json!([]);
    let cases = [
        ("/v1/studies", unknown_field, "budget"),
        ("/v1/studies", missing_field, "sponsor_id"),
        ("/v1/studies", bad_country, "XX"),
        ("/v1/studies", bad_language, "es_ES"),
        ("/v1/studies", zero_target, "target_randomized"),
        ("/v1/studies", unknown_sla, "first_contact_minutes"),
        ("/v1/studies", no_countries, "countries"),
        (sites.as_str(), site_body("Charité", "ZZ"), "ZZ"),
        (sites.as_str(), site_body("Mayo Clinic", "US"), "US"),
        (
            sites.as_str(),
            json!({"name": "No country", "languages": ["es"], "monthly_target_randomized": 1.0}),
            "country",
        ),
        (
            sites.as_str(),
            {
                let mut body = site_body("Blank", "ES");
                body["name"] = json!("   ");
                body
            },
            "name",
        ),
        (
            spend.as_str(),
            json!({"amount_minor": 0, "currency": "EUR", "period_start": "2026-03-01", "period_end": "2026-03-31"}),
            "positive",
        ),
        (
            spend.as_str(),
            json!({"amount_minor": 100, "currency": "EURO", "period_start": "2026-03-01", "period_end": "2026-03-31"}),
            "EURO",
        ),
        (
            spend.as_str(),
            json!({"amount_minor": 100, "currency": "EUR", "period_start": "2026-03-31", "period_end": "2026-03-01"}),
            "period",
        ),
        (pause.as_str(), json!({"why": "no reason"}), "why"),
        (
            campaigns.as_str(),
            json!({"name": "Radio", "channel": "radio"}),
            "radio",
        ),
    ];
    for (path, body, mentioned) in &cases {
        let refused = problem(
            app.post_json(path, &admin, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            refused["detail"].as_str().unwrap().contains(mentioned),
            "{path}: {refused} should mention {mentioned}"
        );
    }
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "nothing was appended"
    );
    app.stop().await;
}

#[tokio::test]
async fn setup_routes_refuse_every_role_but_admin_and_reads_respect_scope() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let sponsor = SponsorId::new();
    let study = create_study(&app, &admin, sponsor).await;
    let other_study = create_study(&app, &admin, SponsorId::new()).await;
    let site = add_site(&app, &admin, study, "Hospital La Paz").await;
    let (registered, _) = json_with_etag(
        app.post_json(
            &format!("/v1/studies/{study}/campaigns"),
            &admin,
            &json!({"name": "Spring ads", "channel": "ads"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let campaign: CampaignId = registered["campaign_id"].as_str().unwrap().parse().unwrap();

    let es = Language::parse("es").unwrap();
    let agent = app
        .token(NewToken {
            role: Some(Role::Agent),
            agent_id: Some(funnel_domain::AgentId::new()),
            study_ids: vec![study],
            languages: vec![es.clone()],
            ..NewToken::default()
        })
        .await;
    let agent_other_study = app
        .token(NewToken {
            role: Some(Role::Agent),
            agent_id: Some(funnel_domain::AgentId::new()),
            study_ids: vec![other_study],
            languages: vec![es.clone()],
            ..NewToken::default()
        })
        .await;
    let site_staff = app
        .token(NewToken {
            role: Some(Role::Site),
            site_id: Some(site),
            ..NewToken::default()
        })
        .await;
    let other_site_staff = app
        .token(NewToken {
            role: Some(Role::Site),
            site_id: Some(SiteId::new()),
            ..NewToken::default()
        })
        .await;
    let own_sponsor = app
        .token(NewToken {
            role: Some(Role::Sponsor),
            sponsor_id: Some(sponsor),
            ..NewToken::default()
        })
        .await;
    let other_sponsor = app
        .token(NewToken {
            role: Some(Role::Sponsor),
            sponsor_id: Some(SponsorId::new()),
            ..NewToken::default()
        })
        .await;
    let campaign_token = app
        .token(NewToken {
            role: Some(Role::Campaign),
            campaign_id: Some(campaign),
            study_ids: vec![study],
            ..NewToken::default()
        })
        .await;

    let writes = [
        ("/v1/studies".to_owned(), new_study_body(sponsor)),
        (
            format!("/v1/studies/{study}/sites"),
            site_body("Hospital Clínic", "ES"),
        ),
        (format!("/v1/studies/{study}/sites/{site}/pause"), json!({})),
        (format!("/v1/studies/{study}/sites/{site}/close"), json!({})),
        (
            format!("/v1/studies/{study}/campaigns"),
            json!({"name": "Newsletter", "channel": "newsletter"}),
        ),
        (
            format!("/v1/studies/{study}/campaigns/{campaign}/spend"),
            json!({"amount_minor": 100, "currency": "EUR",
                   "period_start": "2026-03-01", "period_end": "2026-03-31"}),
        ),
    ];
    let head = app.log.stream_head().await.unwrap();
    for token in [
        &agent,
        &agent_other_study,
        &site_staff,
        &other_site_staff,
        &own_sponsor,
        &other_sponsor,
        &campaign_token,
    ] {
        for (path, body) in &writes {
            let refused = problem(
                app.post_json(path, token, body).await,
                StatusCode::FORBIDDEN,
            )
            .await;
            assert!(
                refused["detail"].as_str().unwrap().contains("admin"),
                "{path}: {refused}"
            );
        }
        // Even a broken body is refused for the role first: nothing about the study leaks.
        problem(
            post_raw(
                &app,
                "/v1/studies",
                Some(token),
                None,
                Some("application/json"),
                "{",
            )
            .await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    // Resuming the (active) site would be a 409 for an admin; any other role hears 403 first.
    problem(
        app.post_json(
            &format!("/v1/studies/{study}/sites/{site}/resume"),
            &agent,
            &json!({}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        app.log.stream_head().await.unwrap(),
        head,
        "no refused request appended anything"
    );

    // Reading the study: its sponsor, its agents, its sites, its campaigns; nobody else.
    let path = format!("/v1/studies/{study}");
    for token in [&admin, &own_sponsor, &agent, &site_staff, &campaign_token] {
        json_with_etag(app.get_with(&path, token).await, StatusCode::OK).await;
    }
    for token in [&other_sponsor, &agent_other_study, &other_site_staff] {
        problem(app.get_with(&path, token).await, StatusCode::FORBIDDEN).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn setup_routes_without_a_valid_token_are_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let study = create_study(&app, &admin, SponsorId::new()).await;
    let site = add_site(&app, &admin, study, "Hospital La Paz").await;
    let campaign = CampaignId::new();
    let head = app.log.stream_head().await.unwrap();
    let posts = [
        "/v1/studies".to_owned(),
        format!("/v1/studies/{study}/sites"),
        format!("/v1/studies/{study}/sites/{site}/pause"),
        format!("/v1/studies/{study}/sites/{site}/resume"),
        format!("/v1/studies/{study}/sites/{site}/close"),
        format!("/v1/studies/{study}/campaigns"),
        format!("/v1/studies/{study}/campaigns/{campaign}/spend"),
    ];
    for token in [None, Some("fnl_0000_not-a-token")] {
        for path in &posts {
            let response = post_raw(&app, path, token, None, Some("application/json"), "{}").await;
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{path}");
            problem(response, StatusCode::UNAUTHORIZED).await;
        }
        let mut request = app.http.get(app.url(&format!("/v1/studies/{study}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(app.log.stream_head().await.unwrap(), head);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_setup_route_with_its_problems() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let routes = [
        ("/v1/studies", "post"),
        ("/v1/studies/{study_id}", "get"),
        ("/v1/studies/{study_id}/sites", "post"),
        ("/v1/studies/{study_id}/sites/{site_id}/pause", "post"),
        ("/v1/studies/{study_id}/sites/{site_id}/resume", "post"),
        ("/v1/studies/{study_id}/sites/{site_id}/close", "post"),
        ("/v1/studies/{study_id}/campaigns", "post"),
        (
            "/v1/studies/{study_id}/campaigns/{campaign_id}/spend",
            "post",
        ),
        ("/v1/journeys/{journey_id}", "get"),
        ("/v1/journeys/{journey_id}/events", "post"),
        ("/v1/candidates/{candidate_id}/erasure", "post"),
    ];
    for (path, method) in routes {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is missing");
        assert_eq!(operation["security"], json!([{"bearer": []}]), "{path}");
        for status in ["400", "401", "403", "429"] {
            assert_eq!(
                operation["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{method} {path} {status}"
            );
        }
        if method == "post" && !path.ends_with("erasure") {
            for status in ["404", "412", "413", "415", "422"] {
                if path == "/v1/studies" && status == "404" {
                    continue;
                }
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    app.stop().await;
}
