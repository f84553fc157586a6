//! The sponsor dashboard over HTTP: a study set up, referred and worked through the API, the
//! projector running inside the service, and the figures checked against what was posted.

use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use funnel_api::auth::{NewToken, Role};
use funnel_domain::{AgentId, CampaignId, JourneyId, Language, SiteId, SponsorId, StudyId};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with_settings};
use crate::setup::{json_with_etag, problem};
use crate::timeline::{Referral, add_site, create_study, post_referral, register_campaign, step};

/// How long the projector may take to catch up with what a test posted.
const CATCH_UP: Duration = Duration::from_secs(30);

fn utc(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0)
        .single()
        .expect("a valid March 2026 time")
}

/// A study with a Spanish and a German site and two campaigns with spend, worked through the
/// API; a second study of another sponsor; tokens of every role.
struct World {
    study: StudyId,
    other_study: StudyId,
    site_es: SiteId,
    site_de: SiteId,
    ads: CampaignId,
    newsletter: CampaignId,
    admin: String,
    sponsor: String,
    other_sponsor: String,
    site_es_staff: String,
    site_de_staff: String,
    other_study_site_staff: String,
    agent: String,
    ads_token: String,
}

async fn setup(app: &TestApp) -> World {
    app.clock.set(utc(2, 8));
    let admin = app.admin_token().await;
    let sponsor = SponsorId::new();
    let other_sponsor = SponsorId::new();
    let study = create_study(app, &admin, sponsor, 10).await;
    let other_study = create_study(app, &admin, other_sponsor, 10).await;
    let site_es = add_site(app, &admin, study, "Hospital La Paz", "ES", 2.0).await;
    let site_de = add_site(app, &admin, study, "Charité Berlin", "DE", 1.0).await;
    let other_study_site = add_site(app, &admin, other_study, "Hospital Clínic", "ES", 1.0).await;
    let (ads, ads_token) = register_campaign(app, &admin, study, "Spring ads", "ads").await;
    let (newsletter, _) =
        register_campaign(app, &admin, study, "Patient newsletter", "newsletter").await;
    for (campaign, amount) in [(ads, 60_000), (newsletter, 10_000)] {
        let response = app
            .post_json(
                &format!("/v1/studies/{study}/campaigns/{campaign}/spend"),
                &admin,
                &json!({"amount_minor": amount, "currency": "EUR",
                    "period_start": "2026-03-01", "period_end": "2026-03-31"}),
            )
            .await;
        json_with_etag(response, StatusCode::CREATED).await;
    }
    let sponsor_token = |sponsor| NewToken {
        role: Some(Role::Sponsor),
        sponsor_id: Some(sponsor),
        ..NewToken::default()
    };
    let site_token = |site| NewToken {
        role: Some(Role::Site),
        site_id: Some(site),
        ..NewToken::default()
    };
    World {
        study,
        other_study,
        site_es,
        site_de,
        ads,
        newsletter,
        sponsor: app.token(sponsor_token(sponsor)).await,
        other_sponsor: app.token(sponsor_token(other_sponsor)).await,
        site_es_staff: app.token(site_token(site_es)).await,
        site_de_staff: app.token(site_token(site_de)).await,
        other_study_site_staff: app.token(site_token(other_study_site)).await,
        agent: app
            .token(NewToken {
                role: Some(Role::Agent),
                agent_id: Some(AgentId::new()),
                study_ids: vec![study],
                languages: vec![
                    Language::parse("es").unwrap(),
                    Language::parse("de").unwrap(),
                ],
                ..NewToken::default()
            })
            .await,
        ads_token,
        admin,
    }
}

impl World {
    async fn refer(
        &self,
        app: &TestApp,
        external_id: &str,
        newsletter: bool,
        country: &str,
        prescreen_passed: bool,
    ) -> JourneyId {
        // The newsletter has no token of its own here; an admin posts for any campaign.
        let (campaign, source, token) = if newsletter {
            (self.newsletter, "newsletter", &self.admin)
        } else {
            (self.ads, "ads", &self.ads_token)
        };
        let referral = Referral {
            study: self.study,
            campaign,
            source,
            country,
            language: if country == "DE" { "de" } else { "es" },
            external_id,
            name: "Dashboard Candidate",
            prescreen_passed: Some(prescreen_passed),
        };
        post_referral(app, token, &referral).await.0
    }

    /// The agent reaches the candidate and refers them to `site`.
    async fn contact_and_refer(&self, app: &TestApp, journey: JourneyId, site: SiteId) {
        step(
            app,
            &self.agent,
            journey,
            &json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached"}),
        )
        .await;
        step(
            app,
            &self.agent,
            journey,
            &json!({"type": "referred_to_site", "site_id": site}),
        )
        .await;
    }

    /// The site acts: contact, an appointment two days on, and what came of it.
    async fn at_site(&self, app: &TestApp, staff: &str, journey: JourneyId, steps: &[&str]) {
        let appointment = app_now(app) + chrono::Duration::days(2);
        step(app, staff, journey, &json!({"type": "site_contacted"})).await;
        step(
            app,
            staff,
            journey,
            &json!({"type": "appointment_scheduled", "appointment_at": appointment}),
        )
        .await;
        for kind in steps {
            let body = match *kind {
                "screen_failed" => json!({"type": "screen_failed", "reason": "HbA1c out of range"}),
                other => json!({"type": other}),
            };
            step(app, staff, journey, &body).await;
        }
    }
}

fn app_now(app: &TestApp) -> DateTime<Utc> {
    use funnel_api::clock::Clock as _;
    app.clock.now()
}

/// Six journeys over two referral weeks:
///
/// | journey | week | source | country | how far |
/// | --- | --- | --- | --- | --- |
/// | J1 | 1 | ads | ES | site ES, randomized (in week 2) |
/// | J2 | 1 | ads | ES | site ES, scheduled, no-show |
/// | J3 | 1 | newsletter | DE | site DE, screen failed |
/// | J4 | 1 | ads | ES | pre-screen failed |
/// | J5 | 2 | newsletter | ES | pre-screen passed, not reached |
/// | J6 | 2 | ads | DE | referred to site DE |
async fn walk_the_funnel(app: &TestApp, w: &World) {
    app.clock.set(utc(2, 9));
    let j1 = w.refer(app, "j1", false, "ES", true).await;
    let j2 = w.refer(app, "j2", false, "ES", true).await;
    let j3 = w.refer(app, "j3", true, "DE", true).await;
    w.refer(app, "j4", false, "ES", false).await;

    app.clock.set(utc(3, 10));
    for (journey, site) in [(j1, w.site_es), (j2, w.site_es), (j3, w.site_de)] {
        w.contact_and_refer(app, journey, site).await;
    }
    app.clock.set(utc(5, 11));
    w.at_site(
        app,
        &w.site_es_staff,
        j1,
        &["appointment_attended", "consented", "screening_started"],
    )
    .await;
    w.at_site(app, &w.site_es_staff, j2, &["no_show"]).await;
    w.at_site(
        app,
        &w.site_de_staff,
        j3,
        &[
            "appointment_attended",
            "consented",
            "screening_started",
            "screen_failed",
        ],
    )
    .await;

    app.clock.set(utc(9, 9));
    let j5 = w.refer(app, "j5", true, "ES", true).await;
    let j6 = w.refer(app, "j6", false, "DE", true).await;
    step(
        app,
        &w.agent,
        j5,
        &json!({"type": "contact_attempted", "channel": "phone", "outcome": "no_answer"}),
    )
    .await;
    w.contact_and_refer(app, j6, w.site_de).await;

    // The last event: once the dashboard counts it, it has applied everything before it.
    app.clock.set(utc(10, 10));
    step(app, &w.site_es_staff, j1, &json!({"type": "randomized"})).await;
    app.clock.set(utc(12, 9));
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    json_with_etag(app.get_with(path, token).await, StatusCode::OK)
        .await
        .0
}

fn report(w: &World, name: &str, query: &str) -> String {
    format!("/v1/dashboards/studies/{}/{name}{query}", w.study)
}

/// The funnel's step counts, in funnel order.
fn step_counts(funnel: &Value) -> Vec<i64> {
    funnel["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| step["journeys"].as_i64().expect("a count"))
        .collect()
}

/// Waits until the dashboard has applied everything `walk_the_funnel` posted.
async fn caught_up(app: &TestApp, w: &World) -> Value {
    let path = report(w, "funnel", "");
    funnel_testkit::eventually(
        "the dashboard to count every posted step",
        CATCH_UP,
        || async {
            let response = app.get_with(&path, &w.admin).await;
            if response.status() != StatusCode::OK {
                return None;
            }
            let funnel: Value = response.json().await.ok()?;
            (step_counts(&funnel) == [6, 5, 4, 4, 3, 3, 2, 2, 2, 1]).then_some(funnel)
        },
    )
    .await
}

fn approx(value: &Value, expected: f64) {
    let actual = value
        .as_f64()
        .unwrap_or_else(|| panic!("a number, not {value}"));
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

#[tokio::test]
async fn the_dashboard_shows_the_figures_of_what_was_posted() {
    let app = spawn_app().await;
    let w = setup(&app).await;
    walk_the_funnel(&app, &w).await;

    // Funnel: referred 6, pre-screen passed 5 (J4 failed), contacted 4 (J5 not reached),
    // referred to site 4, site contacted 3, scheduled 3, attended 2, consented 2,
    // screening 2 (J1, J3), randomized 1 (J1).
    let funnel = caught_up(&app, &w).await;
    assert_eq!(funnel["study_id"], w.study.to_string());
    assert_eq!(funnel["steps"][0]["stage"], "referred");
    assert_eq!(funnel["steps"][9]["stage"], "randomized");
    approx(&funnel["steps"][1]["conversion_from_previous"], 5.0 / 6.0);
    approx(&funnel["overall_conversion"], 1.0 / 6.0);
    assert_eq!(funnel["prescreened"], 6);
    assert_eq!(funnel["prescreen_passed"], 5);
    assert_eq!(funnel["screen_failed"], 1);
    approx(&funnel["screen_fail_rate"], 0.5);
    assert_eq!(funnel["scheduled"], 3);
    assert_eq!(funnel["no_showed"], 1);
    approx(&funnel["no_show_rate"], 1.0 / 3.0);
    let current: Vec<(&str, i64)> = funnel["current_stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["stage"].as_str().unwrap(),
                row["journeys"].as_i64().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("prescreen_failed", 1),
        ("contacting", 1),
        ("referred_to_site", 1),
        ("no_show", 1),
        ("screen_failed", 1),
        ("randomized", 1),
    ] {
        assert!(current.contains(&expected), "{expected:?} in {current:?}");
    }

    // Filters: by source, country, current site and referral dates.
    for (query, referred) in [
        ("?source=newsletter", 2),
        ("?source=ads&source=newsletter", 6),
        ("?country=DE", 2),
        ("?country=de&source=ads", 1),
        (&format!("?site={}", w.site_es), 2),
        (&format!("?site={}&site={}", w.site_es, w.site_de), 4),
        ("?from=2026-03-09", 2),
        ("?from=2026-03-02&to=2026-03-08", 4),
        ("?to=2026-03-01", 0),
    ] {
        let funnel = get_json(&app, &report(&w, "funnel", query), &w.admin).await;
        assert_eq!(
            funnel["steps"][0]["journeys"], referred,
            "{query}: {funnel}"
        );
    }

    // The site table: J1, J2 at the Spanish site; J3, J6 at the German one.
    let table = get_json(&app, &report(&w, "sites", ""), &w.sponsor).await;
    let sites = table["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 2, "{table}");
    let row = |site: SiteId| {
        sites
            .iter()
            .find(|row| row["site_id"] == site.to_string())
            .unwrap_or_else(|| panic!("{site} in {table}"))
    };
    let es = row(w.site_es);
    assert_eq!(es["name"], "Hospital La Paz");
    assert_eq!(es["country"], "ES");
    for (field, count) in [
        ("referrals", 2),
        ("site_contacted", 2),
        ("scheduled", 2),
        ("attended", 1),
        ("consented", 1),
        ("randomized", 1),
        ("not_acted_on", 0),
    ] {
        assert_eq!(es[field], count, "site ES {field}: {es}");
    }
    approx(&es["monthly_target_randomized"], 2.0);
    // Referred on the 3rd at 10:00, contacted by the site on the 5th at 11:00.
    approx(&es["hours_to_site_contact"]["median"], 49.0);
    let de = row(w.site_de);
    for (field, count) in [
        ("referrals", 2),
        ("site_contacted", 1),
        ("scheduled", 1),
        ("attended", 1),
        ("consented", 1),
        ("randomized", 0),
        ("not_acted_on", 1),
    ] {
        assert_eq!(de[field], count, "site DE {field}: {de}");
    }
    assert_eq!(de["zero_or_one_randomized"], true);

    // Time series: referrals per day and per week, randomizations per site.
    let series = get_json(
        &app,
        &report(&w, "timeseries", "?bucket=week&metric=referrals"),
        &w.sponsor,
    )
    .await;
    assert_eq!(series["bucket"], "week");
    assert_eq!(series["metric"], "referrals");
    assert_eq!(
        series["points"],
        json!([
            {"bucket_start": "2026-03-02", "site_id": null, "count": 4},
            {"bucket_start": "2026-03-09", "site_id": null, "count": 2},
        ])
    );
    let series = get_json(
        &app,
        &report(
            &w,
            "timeseries",
            "?bucket=day&from=2026-03-02&to=2026-03-04",
        ),
        &w.admin,
    )
    .await;
    let counts: Vec<(&str, i64)> = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| {
            (
                point["bucket_start"].as_str().unwrap(),
                point["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("2026-03-02", 4), ("2026-03-03", 0), ("2026-03-04", 0)],
        "empty days are listed with 0"
    );
    let series = get_json(
        &app,
        &report(
            &w,
            "timeseries",
            "?bucket=month&metric=randomized&by_site=true",
        ),
        &w.admin,
    )
    .await;
    assert_eq!(
        series["points"],
        json!([{"bucket_start": "2026-03-01", "site_id": w.site_es, "count": 1}]),
        "{series}"
    );

    // Cohorts by referral week.
    let cohorts = get_json(&app, &report(&w, "cohorts", ""), &w.sponsor).await;
    assert_eq!(
        cohorts["weeks"],
        json!([
            {"week_start": "2026-03-02", "reached": {"referred": 4, "prescreen_passed": 3,
                "contacted": 3, "referred_to_site": 3, "site_contacted": 3, "scheduled": 3,
                "attended": 2, "consented": 2, "screening": 2, "randomized": 1}},
            {"week_start": "2026-03-09", "reached": {"referred": 2, "prescreen_passed": 2,
                "contacted": 1, "referred_to_site": 1, "site_contacted": 0, "scheduled": 0,
                "attended": 0, "consented": 0, "screening": 0, "randomized": 0}},
        ])
    );

    // Sources: ads brought 4 referrals and the randomized patient for EUR 600.00, the
    // newsletter 2 referrals for EUR 100.00.
    let sources = get_json(&app, &report(&w, "sources", ""), &w.sponsor).await;
    let channel = |name: &str| {
        sources["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["channel"] == name)
            .unwrap_or_else(|| panic!("{name} in {sources}"))
            .clone()
    };
    let ads = channel("ads");
    assert_eq!(ads["referrals"], 4);
    assert_eq!(ads["randomized"], 1);
    assert_eq!(
        ads["spend"],
        json!([{"currency": "EUR", "amount_minor": 60_000}])
    );
    assert_eq!(
        ads["cost_per_referral"],
        json!([{"currency": "EUR", "amount_minor": 15_000}])
    );
    assert_eq!(
        ads["cost_per_randomized"],
        json!([{"currency": "EUR", "amount_minor": 60_000}])
    );
    let newsletter = channel("newsletter");
    assert_eq!(newsletter["referrals"], 2);
    assert_eq!(newsletter["randomized"], 0);
    assert_eq!(
        newsletter["cost_per_referral"],
        json!([{"currency": "EUR", "amount_minor": 5_000}])
    );
    let campaign = sources["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["campaign_id"] == w.ads.to_string())
        .unwrap_or_else(|| panic!("the ads campaign in {sources}"));
    assert_eq!(campaign["name"], "Spring ads");
    assert_eq!(campaign["referrals"], 4);

    // Forecast: 1 of 10 randomized in the 10 days since the first referral: 0.1 a day, so
    // the other 9 take 90 days from the 12th.
    let forecast = get_json(&app, &report(&w, "forecast", ""), &w.sponsor).await;
    assert_eq!(forecast["target_randomized"], 10);
    assert_eq!(forecast["randomized"], 1);
    assert_eq!(forecast["remaining"], 9);
    approx(&forecast["rate_window_days"], 10.0);
    approx(&forecast["rate_per_day"], 0.1);
    assert_eq!(forecast["status"], "forecast");
    assert_eq!(forecast["forecast_date"], "2026-06-10");
    app.stop().await;
}

#[tokio::test]
async fn each_caller_sees_only_the_studies_and_sites_it_may() {
    let app = spawn_app().await;
    let w = setup(&app).await;
    walk_the_funnel(&app, &w).await;
    caught_up(&app, &w).await;

    // Listing: admins all, a sponsor its own, site staff their study with their own site.
    let ids = |list: &Value| -> Vec<String> {
        list["studies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|study| study["study_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = get_json(&app, "/v1/dashboards/studies", &w.admin).await;
    assert_eq!(ids(&list), [w.study.to_string(), w.other_study.to_string()]);
    let list = get_json(&app, "/v1/dashboards/studies", &w.sponsor).await;
    assert_eq!(ids(&list), [w.study.to_string()]);
    assert_eq!(list["studies"][0]["target_randomized"], 10);
    let list = get_json(&app, "/v1/dashboards/studies", &w.site_de_staff).await;
    assert_eq!(ids(&list), [w.study.to_string()]);
    assert_eq!(list["studies"][0]["site_ids"], json!([w.site_de]));

    // A sponsor reads its own study only; an unknown study is 404 for anyone.
    get_json(&app, &report(&w, "funnel", ""), &w.sponsor).await;
    for name in [
        "funnel",
        "sites",
        "timeseries",
        "cohorts",
        "sources",
        "forecast",
    ] {
        problem(
            app.get_with(&report(&w, name, ""), &w.other_sponsor).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let unknown = format!("/v1/dashboards/studies/{}/funnel", StudyId::new());
    for token in [&w.admin, &w.sponsor, &w.site_es_staff] {
        problem(app.get_with(&unknown, token).await, StatusCode::NOT_FOUND).await;
    }

    // Site staff: their own site's figures, whatever they ask for; another site is refused.
    let funnel = get_json(&app, &report(&w, "funnel", ""), &w.site_de_staff).await;
    assert_eq!(
        step_counts(&funnel),
        [2, 2, 2, 2, 1, 1, 1, 1, 1, 0],
        "J3 and J6 only: {funnel}"
    );
    let funnel = get_json(
        &app,
        &report(&w, "funnel", &format!("?site={}", w.site_de)),
        &w.site_de_staff,
    )
    .await;
    assert_eq!(funnel["steps"][0]["journeys"], 2);
    let table = get_json(&app, &report(&w, "sites", ""), &w.site_de_staff).await;
    assert_eq!(table["sites"].as_array().unwrap().len(), 1, "{table}");
    assert_eq!(table["sites"][0]["site_id"], w.site_de.to_string());
    let body = problem(
        app.get_with(
            &report(
                &w,
                "funnel",
                &format!("?site={}&site={}", w.site_de, w.site_es),
            ),
            &w.site_de_staff,
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("its own site"),
        "{body}"
    );
    problem(
        app.get_with(&report(&w, "forecast", ""), &w.site_de_staff)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        app.get_with(&report(&w, "funnel", ""), &w.other_study_site_staff)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Campaigns and agents read no figures; no token, no answer.
    for token in [&w.ads_token, &w.agent] {
        problem(
            app.get_with("/v1/dashboards/studies", token).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        problem(
            app.get_with(&report(&w, "funnel", ""), token).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    problem(
        app.get(&report(&w, "funnel", "")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_refused_with_problem_documents() {
    let app = spawn_app().await;
    let w = setup(&app).await;
    for (path, status, needle) in [
        (
            report(&w, "timeseries", "?bucket=year"),
            StatusCode::BAD_REQUEST,
            "`bucket` must be one of day, week, month",
        ),
        (
            report(&w, "timeseries", "?metric=clicks"),
            StatusCode::BAD_REQUEST,
            "`metric` must be one of",
        ),
        (
            report(&w, "timeseries", "?by_site=maybe"),
            StatusCode::BAD_REQUEST,
            "`by_site`",
        ),
        (
            report(&w, "funnel", "?from=2026-03-10&to=2026-03-01"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "is after `to`",
        ),
        (
            report(&w, "funnel", "?from=2026-13-01"),
            StatusCode::BAD_REQUEST,
            "`from` must be a date",
        ),
        (
            report(&w, "sites", "?to=tomorrow"),
            StatusCode::BAD_REQUEST,
            "`to` must be a date",
        ),
        (
            report(&w, "cohorts", "?site=la-paz"),
            StatusCode::BAD_REQUEST,
            "`site` must be a site id",
        ),
        (
            report(&w, "sources", "?country=Spain"),
            StatusCode::BAD_REQUEST,
            "`country`",
        ),
        (
            report(&w, "sources", "?country=XX"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ISO 3166-1 alpha-2",
        ),
        (
            report(&w, "sources", "?source=billboard"),
            StatusCode::BAD_REQUEST,
            "`source` must be one of",
        ),
        (
            report(&w, "funnel", "?bucket=week"),
            StatusCode::BAD_REQUEST,
            "unknown query parameter `bucket`",
        ),
        (
            report(&w, "forecast", "?from=2026-03-01"),
            StatusCode::BAD_REQUEST,
            "takes none",
        ),
        (
            report(&w, "funnel", "?from=2026-03-01&from=2026-03-02"),
            StatusCode::BAD_REQUEST,
            "may be given once",
        ),
        (
            "/v1/dashboards/studies/not-a-uuid/funnel".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad path parameter",
        ),
    ] {
        let body = problem(app.get_with(&path, &w.admin).await, status).await;
        assert!(
            body["detail"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_read_model_not_built_yet_answers_503_with_retry_after() {
    // No projector runs in this instance: the read model never goes live.
    let app = spawn_app_with_settings(|settings| settings.run_projections = false).await;
    let admin = app.admin_token().await;
    let study = create_study(&app, &admin, SponsorId::new(), 10).await;
    for path in [
        "/v1/dashboards/studies".to_owned(),
        format!("/v1/dashboards/studies/{study}/funnel"),
    ] {
        let response = app.get_with(&path, &admin).await;
        let retry_after: u64 = response
            .headers()
            .get("retry-after")
            .expect("a Retry-After header")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after > 0);
        let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("sponsor_dashboard"),
            "{body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_dashboard_and_timeline_routes() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let get = |path: &str| doc["paths"][path]["get"].clone();
    assert_eq!(
        get("/v1/journeys/{journey_id}/timeline")["tags"],
        json!(["journeys"])
    );
    assert_eq!(get("/v1/dashboards/studies")["tags"], json!(["dashboards"]));
    for name in [
        "funnel",
        "sites",
        "timeseries",
        "cohorts",
        "sources",
        "forecast",
    ] {
        let operation = get(&format!("/v1/dashboards/studies/{{study_id}}/{name}"));
        assert_eq!(operation["tags"], json!(["dashboards"]), "{name}");
        let unavailable = &operation["responses"]["503"];
        assert!(
            unavailable["headers"]["Retry-After"].is_object(),
            "{name}: {unavailable}"
        );
        let parameters: Vec<&str> = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|parameter| parameter["name"].as_str().unwrap())
            .collect();
        let expected: &[&str] = match name {
            "forecast" => &["study_id"],
            "timeseries" => &[
                "study_id", "from", "to", "site", "country", "source", "bucket", "metric",
                "by_site",
            ],
            _ => &["study_id", "from", "to", "site", "country", "source"],
        };
        assert_eq!(parameters, expected, "{name}");
    }
    // Repeatable filters: optional arrays, exploded into `site=a&site=b`.
    let funnel = get("/v1/dashboards/studies/{study_id}/funnel");
    let site = funnel["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "site")
        .unwrap();
    assert_eq!(site["required"], false);
    assert_eq!(site["explode"], true);
    assert_eq!(site["schema"]["type"], "array");
    let parameter = |name: &str| {
        funnel["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == name)
            .unwrap()
            .clone()
    };
    let source = parameter("source");
    assert_eq!(
        source["schema"]["items"]["enum"],
        json!([
            "newsletter",
            "ads",
            "portal",
            "advocacy",
            "physician",
            "other"
        ]),
        "{source}"
    );
    assert!(
        source["schema"]["description"]
            .as_str()
            .unwrap()
            .contains("repeatable"),
        "{source}"
    );
    assert_eq!(source["required"], false);
    let country = parameter("country");
    assert_eq!(
        country["schema"]["items"]["pattern"], "^[A-Za-z]{2}$",
        "{country}"
    );
    assert_eq!(
        doc["components"]["schemas"]["Bucket"]["enum"],
        json!(["day", "week", "month"])
    );
    app.stop().await;
}
