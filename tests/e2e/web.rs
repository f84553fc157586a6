//! The web pages over HTTP: signing in with a token, the session cookie, pages that show the
//! API's own figures for the same query, and the API's access rules on every page.
//!
//! Figures are read from the pages' `data-metric` / `data-value` attributes, which carry the
//! API's raw values, and compared with the JSON routes asked the same question.

use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use funnel_api::auth::{NewToken, Role};
use funnel_domain::{AgentId, CampaignId, JourneyId, Language, SiteId, SponsorId, StudyId};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::setup::json_with_etag;
use crate::timeline::{Referral, add_site, create_study, post_referral, register_campaign, step};

/// How long the projector may take to catch up with what a test posted.
pub(crate) const CATCH_UP: Duration = Duration::from_secs(30);

fn utc(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0)
        .single()
        .expect("a valid March 2026 time")
}

/// A study with a Spanish and a German site, an ads campaign with spend and three journeys
/// (one randomized at the Spanish site, one at the Spanish site after its first contact, one
/// referred to the German site); a second study of another sponsor.
pub(crate) struct World {
    pub(crate) study: StudyId,
    pub(crate) other_study: StudyId,
    pub(crate) site_es: SiteId,
    pub(crate) site_de: SiteId,
    pub(crate) ads: CampaignId,
    /// Posts referrals for `ads`.
    pub(crate) ads_token: String,
    pub(crate) randomized: JourneyId,
    pub(crate) admin: String,
    pub(crate) sponsor: String,
    pub(crate) other_sponsor: String,
    pub(crate) site_es_staff: String,
    pub(crate) agent: String,
}

pub(crate) const CANDIDATE: &str = "Lucía Web-Candidate";

pub(crate) async fn setup(app: &TestApp) -> World {
    app.clock.set(utc(2, 8));
    let admin = app.admin_token().await;
    let (sponsor, other_sponsor) = (SponsorId::new(), SponsorId::new());
    let study = create_study(app, &admin, sponsor, 10).await;
    let other_study = create_study(app, &admin, other_sponsor, 10).await;
    let site_es = add_site(app, &admin, study, "Hospital La Paz", "ES", 2.0).await;
    let site_de = add_site(app, &admin, study, "Charité Berlin", "DE", 1.0).await;
    let (ads, ads_token) = register_campaign(app, &admin, study, "Spring ads", "ads").await;
    let response = app
        .post_json(
            &format!("/v1/studies/{study}/campaigns/{ads}/spend"),
            &admin,
            &json!({"amount_minor": 60_000, "currency": "EUR",
                "period_start": "2026-03-01", "period_end": "2026-03-31"}),
        )
        .await;
    json_with_etag(response, StatusCode::CREATED).await;
    let sponsor_token = |sponsor| NewToken {
        role: Some(Role::Sponsor),
        sponsor_id: Some(sponsor),
        ..NewToken::default()
    };
    let agent = app
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
        .await;
    let site_es_staff = app
        .token(NewToken {
            role: Some(Role::Site),
            site_id: Some(site_es),
            ..NewToken::default()
        })
        .await;

    app.clock.set(utc(2, 9));
    let refer = |external_id, country| Referral {
        study,
        campaign: ads,
        source: "ads",
        country,
        language: if country == "DE" { "de" } else { "es" },
        external_id,
        name: CANDIDATE,
        prescreen_passed: Some(true),
    };
    let (j1, _) = post_referral(app, &ads_token, &refer("web-1", "ES")).await;
    let (j2, _) = post_referral(app, &ads_token, &refer("web-2", "ES")).await;
    let (j3, _) = post_referral(app, &ads_token, &refer("web-3", "DE")).await;
    app.clock.set(utc(3, 10));
    for (journey, site) in [(j1, site_es), (j2, site_es), (j3, site_de)] {
        step(
            app,
            &agent,
            journey,
            &json!({"type": "contact_attempted", "channel": "phone", "outcome": "reached"}),
        )
        .await;
        step(
            app,
            &agent,
            journey,
            &json!({"type": "referred_to_site", "site_id": site}),
        )
        .await;
    }
    app.clock.set(utc(5, 11));
    for body in [
        json!({"type": "site_contacted"}),
        json!({"type": "appointment_scheduled", "appointment_at": utc(7, 9)}),
        json!({"type": "appointment_attended"}),
        json!({"type": "consented"}),
        json!({"type": "screening_started"}),
        json!({"type": "randomized"}),
    ] {
        step(app, &site_es_staff, j1, &body).await;
    }
    step(app, &site_es_staff, j2, &json!({"type": "site_contacted"})).await;
    app.clock.set(utc(12, 9));
    World {
        study,
        other_study,
        site_es,
        site_de,
        ads,
        ads_token,
        randomized: j1,
        sponsor: app.token(sponsor_token(sponsor)).await,
        other_sponsor: app.token(sponsor_token(other_sponsor)).await,
        site_es_staff,
        agent,
        admin,
    }
}

/// Waits until the dashboard counts every step `setup` posted.
pub(crate) async fn caught_up(app: &TestApp, w: &World) {
    let path = format!("/v1/dashboards/studies/{}/funnel", w.study);
    funnel_testkit::eventually("the dashboard to count every step", CATCH_UP, || async {
        let response = app.get_with(&path, &w.admin).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let funnel: Value = response.json().await.ok()?;
        let site_contacted = funnel["steps"][4]["journeys"].as_i64();
        let randomized = funnel["steps"][9]["journeys"].as_i64();
        (site_contacted == Some(2) && randomized == Some(1)).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// A browser, by hand: cookies and redirects are the things under test.

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

/// Signs in through the form and returns the whole `Set-Cookie` value.
async fn sign_in_raw(app: &TestApp, token: &str) -> reqwest::Response {
    browser()
        .post(app.url("/ui/sign-in"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("origin", &app.address)
        .body(format!("token={token}"))
        .send()
        .await
        .expect("the sign-in is answered")
}

/// Signs in and returns the cookie to send (`funnel_session=...`).
async fn sign_in(app: &TestApp, token: &str) -> String {
    let response = sign_in_raw(app, token).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/");
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    set_cookie
        .split(';')
        .next()
        .expect("a name=value pair")
        .to_owned()
}

async fn page(app: &TestApp, path: &str, cookie: &str) -> (StatusCode, String) {
    let response = browser()
        .get(app.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("the page is answered");
    let status = response.status();
    if status.is_redirection() {
        let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
        return (status, location);
    }
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{path} answers HTML"
    );
    (status, response.text().await.expect("a body"))
}

async fn ok_page(app: &TestApp, path: &str, cookie: &str) -> String {
    let (status, body) = page(app, path, cookie).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

pub(crate) async fn api(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.get_with(path, token).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.expect("JSON")
}

/// The `data-value` of the first `data-metric="metric"` after `anchor` in `html`.
fn figure(html: &str, anchor: &str, metric: &str) -> String {
    let start = html
        .find(anchor)
        .unwrap_or_else(|| panic!("`{anchor}` on the page"));
    let needle = format!("data-metric=\"{metric}\" data-value=\"");
    let at = html[start..]
        .find(&needle)
        .unwrap_or_else(|| panic!("`{metric}` after `{anchor}`"))
        + start
        + needle.len();
    let end = html[at..].find('"').expect("a closing quote") + at;
    html[at..end].to_owned()
}

/// Asserts that a page's `data-value` is the API's figure: numbers equal as numbers (`1` on
/// the page is `1.0` in JSON), null as an empty value, strings as they are.
#[track_caller]
fn assert_same(page: &str, api: &Value, what: &str) {
    match api {
        Value::Null => assert_eq!(page, "", "{what}"),
        Value::String(text) => assert_eq!(page, text, "{what}"),
        Value::Number(number) => {
            let page: f64 = page
                .parse()
                .unwrap_or_else(|_| panic!("{what}: `{page}` is a number"));
            assert_eq!(Some(page), number.as_f64(), "{what}");
        }
        other => panic!("{what}: unexpected {other}"),
    }
}

fn money(value: &Value) -> String {
    value
        .as_array()
        .expect("amounts")
        .iter()
        .map(|money| {
            format!(
                "{}:{}",
                money["currency"].as_str().unwrap(),
                money["amount_minor"]
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn token_id(token: &str) -> Uuid {
    let id = token.split('_').nth(1).expect("fnl_<id>_<secret>");
    Uuid::try_parse(id).expect("a token id")
}

/// Checks the study page's figures against the API's answers to the same filter.
async fn assert_study_page_matches(
    app: &TestApp,
    w: &World,
    cookie: &str,
    token: &str,
    query: &str,
) {
    let html = ok_page(app, &format!("/ui/studies/{}?{query}", w.study), cookie).await;
    let api_query = query
        .split('&')
        .filter(|pair| !pair.ends_with('=') && !pair.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    let report = |name: &str, extra: &str| {
        let sep = if api_query.is_empty() && extra.is_empty() {
            ""
        } else {
            "?"
        };
        let join = if api_query.is_empty() || extra.is_empty() {
            ""
        } else {
            "&"
        };
        format!(
            "/v1/dashboards/studies/{}/{name}{sep}{api_query}{join}{extra}",
            w.study
        )
    };

    let funnel = api(app, &report("funnel", ""), token).await;
    for step in funnel["steps"].as_array().unwrap() {
        let stage = step["stage"].as_str().unwrap();
        let anchor = format!("data-stage=\"{stage}\"");
        assert_same(
            &figure(&html, &anchor, stage),
            &step["journeys"],
            &format!("{stage} ({query})"),
        );
        assert_same(
            &figure(&html, &anchor, &format!("{stage}_conversion")),
            &step["conversion_from_previous"],
            &format!("{stage} conversion ({query})"),
        );
    }
    for rate in [
        "overall_conversion",
        "screen_fail_rate",
        "no_show_rate",
        "prescreen_pass_rate",
    ] {
        assert_same(
            &figure(&html, "id=\"funnel-rates\"", rate),
            &funnel[rate],
            rate,
        );
    }

    let sites = api(app, &report("sites", ""), token).await;
    assert_same(
        &figure(
            &html,
            "id=\"sites-heading\"",
            "study_median_hours_to_site_contact",
        ),
        &sites["study_median_hours_to_site_contact"],
        "figure",
    );
    for row in sites["sites"].as_array().unwrap() {
        let anchor = format!("data-site=\"{}\"", row["site_id"].as_str().unwrap());
        for metric in [
            "referrals",
            "scheduled",
            "randomized",
            "conversion",
            "not_acted_on",
        ] {
            assert_same(&figure(&html, &anchor, metric), &row[metric], metric);
        }
        let flags = html[html.find(&anchor).unwrap()..]
            .split("</tr>")
            .next()
            .unwrap();
        assert_eq!(
            flags.contains("data-flag=\"zero_or_one_randomized\""),
            row["zero_or_one_randomized"] == true
        );
        assert_eq!(
            flags.contains("data-flag=\"slower_than_study_median\""),
            row["slower_than_study_median"] == true
        );
    }

    let sources = api(app, &report("sources", ""), token).await;
    for channel in sources["channels"].as_array().unwrap() {
        let anchor = format!("data-channel=\"{}\"", channel["channel"].as_str().unwrap());
        // The figures sit beside the channel in the API's answer (flattened).
        let figures = channel;
        for metric in ["referrals", "randomized"] {
            assert_same(&figure(&html, &anchor, metric), &figures[metric], "figure");
        }
        for metric in ["spend", "cost_per_referral", "cost_per_randomized"] {
            assert_eq!(
                figure(&html, &anchor, metric),
                money(&figures[metric]),
                "{metric}"
            );
        }
    }

    let series = api(
        app,
        &report("timeseries", "bucket=month&metric=screenings"),
        token,
    )
    .await;
    for point in series["points"].as_array().unwrap() {
        let anchor = format!(
            "data-bucket=\"{}\"",
            point["bucket_start"].as_str().unwrap()
        );
        assert_same(
            &figure(&html, &anchor, "screenings"),
            &point["count"],
            "figure",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn a_sponsor_signs_in_and_sees_the_apis_figures() {
    let app = spawn_app().await;
    let w = setup(&app).await;
    caught_up(&app, &w).await;

    let response = sign_in_raw(&app, &w.sponsor).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
    }
    let cookie = sign_in(&app, &w.sponsor).await;
    // Not `no-referrer`: under it browsers post the pages' forms with `Origin: null`, which the
    // sign-in and sign-out check refuses.
    let response = browser().get(app.url("/ui/sign-in")).send().await.unwrap();
    assert_eq!(response.headers()["referrer-policy"], "same-origin");
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );

    // The study list: the sponsor's own study, not the other sponsor's.
    let list = ok_page(&app, "/ui/", &cookie).await;
    assert!(list.contains(&format!("href=\"/ui/studies/{}\"", w.study)));
    assert!(!list.contains(&w.other_study.to_string()));

    // The study page, unfiltered and filtered, against the API's answers.
    assert_study_page_matches(&app, &w, &cookie, &w.sponsor, "").await;
    assert_study_page_matches(
        &app,
        &w,
        &cookie,
        &w.sponsor,
        "from=&to=&country=ES&source=",
    )
    .await;
    assert_study_page_matches(
        &app,
        &w,
        &cookie,
        &w.sponsor,
        &format!("site={}&source=ads", w.site_de),
    )
    .await;
    let html = ok_page(&app, &format!("/ui/studies/{}", w.study), &cookie).await;
    assert_eq!(figure(&html, "data-stage=\"referred\"", "referred"), "3");
    assert_eq!(
        figure(&html, "data-stage=\"randomized\"", "randomized"),
        "1"
    );
    let forecast = api(
        &app,
        &format!("/v1/dashboards/studies/{}/forecast", w.study),
        &w.sponsor,
    )
    .await;
    for metric in [
        "target_randomized",
        "randomized",
        "remaining",
        "rate_per_day",
        "forecast_date",
    ] {
        assert_same(
            &figure(&html, "id=\"forecast-table\"", metric),
            &forecast[metric],
            metric,
        );
    }
    assert_same(
        &figure(&html, "id=\"forecast-heading\"", "forecast_status"),
        &forecast["status"],
        "figure",
    );
    // The channel's cost per randomized: EUR 600.00 of spend over one randomized patient.
    assert_eq!(
        figure(&html, "data-channel=\"ads\"", "cost_per_randomized"),
        "EUR:60000"
    );
    assert!(html.contains(&format!("data-campaign=\"{}\"", w.ads)));

    // Accessible markup: landmarks, skip link, labelled inputs, scoped headers, chart images.
    for needle in [
        "<html lang=\"en\">",
        "<a class=\"skip-link\" href=\"#main\">",
        "<header",
        "<nav aria-label=\"Main\">",
        "<main id=\"main\"",
        "aria-live=\"polite\"",
        "<label for=\"from\">",
        "<label for=\"country\">",
        "<label for=\"source\">",
        "<label for=\"site\">",
        "<th scope=\"col\"",
        "<th scope=\"row\"",
        "role=\"img\"",
        "<title id=\"funnel-chart-title\">",
    ] {
        assert!(html.contains(needle), "{needle}");
    }

    // The site page: the site's own row of the leaderboard.
    let site_html = ok_page(
        &app,
        &format!("/ui/studies/{}/sites/{}", w.study, w.site_es),
        &cookie,
    )
    .await;
    let sites = api(
        &app,
        &format!(
            "/v1/dashboards/studies/{}/sites?site={}",
            w.study, w.site_es
        ),
        &w.sponsor,
    )
    .await;
    let row = &sites["sites"][0];
    for metric in [
        "referrals",
        "site_contacted",
        "scheduled",
        "randomized",
        "not_acted_on",
        "open_journeys",
    ] {
        assert_same(
            &figure(&site_html, "id=\"site-table\"", metric),
            &row[metric],
            metric,
        );
    }
    assert_eq!(figure(&site_html, "id=\"site-table\"", "randomized"), "1");

    app.stop().await;
}

#[tokio::test]
async fn a_sponsor_cannot_open_another_sponsors_study() {
    let app = spawn_app().await;
    let w = setup(&app).await;
    caught_up(&app, &w).await;
    let cookie = sign_in(&app, &w.other_sponsor).await;

    for path in [
        format!("/ui/studies/{}", w.study),
        format!("/ui/studies/{}/sites/{}", w.study, w.site_es),
        format!("/ui/journeys/{}", w.randomized),
    ] {
        let (status, html) = page(&app, &path, &cookie).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            html.contains("You do not have access to this page"),
            "{path}"
        );
        assert!(!html.contains("data-metric"), "{path} shows no figures");
    }
    let list = ok_page(&app, "/ui/", &cookie).await;
    assert!(!list.contains(&w.study.to_string()));
    assert!(list.contains(&w.other_study.to_string()));

    // Site staff: their own site's page, not the other site's.
    let staff = sign_in(&app, &w.site_es_staff).await;
    ok_page(
        &app,
        &format!("/ui/studies/{}/sites/{}", w.study, w.site_es),
        &staff,
    )
    .await;
    let (status, _) = page(
        &app,
        &format!("/ui/studies/{}/sites/{}", w.study, w.site_de),
        &staff,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn pages_need_a_session_and_a_valid_token() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;

    for path in [
        "/ui/",
        "/ui/queues",
        &format!("/ui/studies/{}", Uuid::new_v4()),
    ] {
        let (status, location) = page(&app, path, "funnel_session=forged").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location, "/ui/sign-in", "{path}");
    }
    // The pages are not part of the API's contract.
    let openapi: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(
        openapi["paths"]
            .as_object()
            .unwrap()
            .keys()
            .all(|path| !path.starts_with("/ui"))
    );
    let form = ok_page(&app, "/ui/sign-in", "").await;
    assert!(form.contains("<label for=\"token\">"));
    assert!(form.contains("method=\"post\" action=\"/ui/sign-in\""));

    let response = sign_in_raw(&app, "fnl_00000000000000000000000000000000_nope").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(SET_COOKIE).is_none());
    assert!(response.text().await.unwrap().contains("role=\"alert\""));

    // A form posted from another site is refused, even with a valid token.
    let response = browser()
        .post(app.url("/ui/sign-in"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("origin", "https://elsewhere.example")
        .body(format!("token={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(SET_COOKIE).is_none());
    app.stop().await;
}

#[tokio::test]
async fn signing_out_or_revoking_the_token_ends_the_session() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let cookie = sign_in(&app, &admin).await;
    // A new service builds its read models first (the page says so with a 503 meanwhile).
    funnel_testkit::eventually("the study list to be served", CATCH_UP, || async {
        (page(&app, "/ui/", &cookie).await.0 == StatusCode::OK).then_some(())
    })
    .await;

    // Signing out from another origin is refused and leaves the session open.
    let sign_out = |origin: String| {
        browser()
            .post(app.url("/ui/sign-out"))
            .header(COOKIE, &cookie)
            .header("origin", origin)
            .send()
    };
    let refused = sign_out("https://elsewhere.example".to_owned())
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    ok_page(&app, "/ui/", &cookie).await;

    let response = sign_out(app.address.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/sign-in");
    assert!(
        response.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, location) = page(&app, "/ui/", &cookie).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/sign-in")
    );

    // Two sessions of one token both end when the token is revoked.
    let other = app.admin_token().await;
    let first = sign_in(&app, &other).await;
    let second = sign_in(&app, &other).await;
    ok_page(&app, "/ui/", &first).await;
    assert!(app.tokens.revoke(token_id(&other)).await.unwrap());
    for cookie in [&first, &second] {
        let (status, location) = page(&app, "/ui/", cookie).await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, "/ui/sign-in")
        );
    }

    // A session lasts 8 hours of the service's clock.
    let later = sign_in(&app, &admin).await;
    app.clock
        .advance(chrono::Duration::hours(8) + chrono::Duration::seconds(1));
    let (status, _) = page(&app, "/ui/", &later).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn the_team_lead_sees_the_queues_and_the_timeline_shows_what_the_api_shows() {
    let app = spawn_app().await;
    let w = setup(&app).await;
    caught_up(&app, &w).await;
    let admin = sign_in(&app, &w.admin).await;

    // The queues page's totals are the API's depth report summed.
    funnel_testkit::eventually("the queues page to match the API", CATCH_UP, || async {
        let depth = api(&app, "/v1/queues/depth", &w.admin).await;
        let html = ok_page(&app, "/ui/queues", &admin).await;
        let sum = |name: &str| -> i64 {
            depth["queues"]
                .as_array()
                .unwrap()
                .iter()
                .map(|queue| queue[name].as_i64().unwrap())
                .sum()
        };
        let matches = ["due", "overdue", "leased", "upcoming"]
            .iter()
            .all(|name| figure(&html, "id=\"queue-totals\"", name) == sum(name).to_string());
        let total: i64 = ["due", "overdue", "upcoming"]
            .iter()
            .map(|name| sum(name))
            .sum();
        (matches && total > 0).then_some(())
    })
    .await;

    // Agents work the queues but do not read the team lead's views, as in the API.
    let agent = sign_in(&app, &w.agent).await;
    let (status, _) = page(&app, "/ui/queues", &agent).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The timeline: contact data for the agent and the admin, none for the sponsor.
    let path = format!("/ui/journeys/{}", w.randomized);
    let timeline = api(
        &app,
        &format!("/v1/journeys/{}/timeline", w.randomized),
        &w.agent,
    )
    .await;
    for cookie in [&agent, &admin] {
        let html = ok_page(&app, &path, cookie).await;
        assert!(html.contains(CANDIDATE), "contact data shown");
        assert_eq!(
            figure(&html, "id=\"journey-summary\"", "stage"),
            "randomized"
        );
        assert_eq!(
            html.matches("data-sequence=").count(),
            timeline["entries"].as_array().unwrap().len()
        );
    }
    let sponsor = sign_in(&app, &w.sponsor).await;
    let html = ok_page(&app, &path, &sponsor).await;
    assert!(!html.contains(CANDIDATE), "no contact data for the sponsor");
    assert!(!html.contains("web-1@example.org"));
    assert_eq!(
        figure(&html, "id=\"journey-summary\"", "stage"),
        "randomized"
    );
    app.stop().await;
}
