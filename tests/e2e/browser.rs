//! The web pages in a real browser: Debian's headless Chromium driven over W3C WebDriver by
//! `chromedriver`. Signs in through the form, compares the figures the browser shows with the
//! API's, watches the live refresh move a figure without a reload, checks that a sponsor cannot
//! open another sponsor's study, and saves screenshots under `target/screenshots/`.
//!
//! The WebDriver client is the few JSON-over-HTTP commands these tests use, over the suite's
//! own `reqwest`: a client crate would add its own HTTP and TLS stacks to build for nothing.
//!
//! Chromium and chromedriver are required, not optional: without them these tests fail with
//! the command that installs them (`deploy/test.sh` runs it on a fresh machine).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::timeline::{Referral, post_referral};
use crate::web::{CATCH_UP, World, api, caught_up, setup};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver, ended when dropped.
struct Driver {
    url: String,
    http: reqwest::Client,
    _process: tokio::process::Child,
}

impl Driver {
    async fn start() -> Self {
        for binary in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(binary).exists(),
                "the browser tests need {binary}: `apt-get install -y chromium chromium-driver` \
                 (deploy/test.sh installs them when missing)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let process = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _process: process,
        };
        funnel_testkit::eventually("chromedriver to be ready", CATCH_UP, || async {
            let status: Value = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }

    /// A fresh headless browser (its own profile, so its own cookies).
    async fn browser(&self) -> Browser<'_> {
        let answer: Value = self
            .http
            .post(format!("{}/session", self.url))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    // --no-sandbox: the suite runs as root in CI, where Chromium's sandbox
                    // refuses to start.
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1600"]
                }
            }}}))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a browser session: {answer}"))
            .to_owned();
        Browser {
            driver: self,
            base: format!("{}/session/{session}", self.url),
        }
    }
}

/// One browser session.
struct Browser<'a> {
    driver: &'a Driver,
    base: String,
}

impl Browser<'_> {
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .driver
            .http
            .request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        assert!(
            answer["value"]["error"].is_null(),
            "WebDriver {path}: {answer}"
        );
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn path(&self) -> String {
        let url = self.command(reqwest::Method::GET, "/url", None).await;
        let url = reqwest::Url::parse(url.as_str().expect("a URL")).expect("a valid URL");
        url.path().to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let element = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        element[ELEMENT].as_str().expect("an element").to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Runs `script` in the page and returns what it returns.
    async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The `data-value` of the first `[data-metric=metric]` inside `scope` (a CSS selector).
    async fn figure(&self, scope: &str, metric: &str) -> Option<String> {
        self.script(
            "const el = document.querySelector(arguments[0] + ' [data-metric=\"' + arguments[1] + '\"]');
             return el ? el.getAttribute('data-value') : null;",
            json!([scope, metric]),
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    async fn text(&self, css: &str) -> String {
        self.script(
            "const el = document.querySelector(arguments[0]); return el ? el.textContent : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_owned()
    }

    async fn screenshot(&self, name: &str) {
        let png = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a base64 PNG");
        let directory = screenshots();
        std::fs::create_dir_all(&directory).expect("the screenshot directory");
        std::fs::write(directory.join(format!("{name}.png")), png).expect("a screenshot");
    }

    /// Signs in through the form, as a person does, and waits for the study list.
    async fn sign_in(&self, app: &TestApp, token: &str) {
        self.go(&app.url("/ui/")).await;
        assert_eq!(self.path().await, "/ui/sign-in", "signed out: to the form");
        self.type_into("#token", token).await;
        self.click("form.sign-in button[type=submit]").await;
        funnel_testkit::eventually("the study list after signing in", CATCH_UP, || async {
            (self.path().await == "/ui/").then_some(())
        })
        .await;
    }

    async fn close(self) {
        self.driver
            .http
            .delete(&self.base)
            .send()
            .await
            .expect("chromedriver answers");
    }
}

/// `target/screenshots/` of the build's target directory.
fn screenshots() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("screenshots")
}

/// The funnel the browser shows equals the API's, stage by stage.
async fn assert_funnel_matches(browser: &Browser<'_>, app: &TestApp, w: &World) {
    let funnel = api(
        app,
        &format!("/v1/dashboards/studies/{}/funnel", w.study),
        &w.sponsor,
    )
    .await;
    for step in funnel["steps"].as_array().expect("steps") {
        let stage = step["stage"].as_str().expect("a stage");
        let scope = format!("#funnel-table tr[data-stage={stage}]");
        assert_eq!(
            browser.figure(&scope, stage).await,
            Some(step["journeys"].to_string()),
            "{stage}"
        );
    }
}

#[tokio::test]
async fn a_sponsor_works_the_pages_in_a_browser() {
    let driver = Driver::start().await;
    let app = spawn_app().await;
    let w = setup(&app).await;
    caught_up(&app, &w).await;

    let browser = driver.browser().await;
    browser.sign_in(&app, &w.sponsor).await;
    browser.screenshot("study-list").await;
    browser
        .click(&format!("a[href=\"/ui/studies/{}\"]", w.study))
        .await;
    funnel_testkit::eventually("the study page", CATCH_UP, || async {
        (browser.path().await == format!("/ui/studies/{}", w.study)).then_some(())
    })
    .await;
    assert_funnel_matches(&browser, &app, &w).await;
    let sites = api(
        &app,
        &format!("/v1/dashboards/studies/{}/sites", w.study),
        &w.sponsor,
    )
    .await;
    for row in sites["sites"].as_array().expect("sites") {
        let scope = format!(
            "#sites-table tr[data-site=\"{}\"]",
            row["site_id"].as_str().unwrap()
        );
        for metric in ["referrals", "randomized", "not_acted_on"] {
            assert_eq!(
                browser.figure(&scope, metric).await,
                Some(row[metric].to_string()),
                "{metric}"
            );
        }
    }
    assert_eq!(
        browser
            .figure(
                "#channels-table tr[data-channel=ads]",
                "cost_per_randomized"
            )
            .await
            .as_deref(),
        Some("EUR:60000")
    );
    // The script ran (it shows its pause button); the skip link leads to the main region.
    assert_eq!(
        browser
            .script(
                "return document.getElementById('live-toggle').hidden;",
                json!([])
            )
            .await,
        false
    );
    assert_eq!(
        browser
            .script(
                "return document.querySelector('.skip-link').getAttribute('href');",
                json!([])
            )
            .await,
        "#main"
    );
    browser.screenshot("study").await;

    // A referral posted now shows up without a reload: the live region refreshes itself.
    let referral = Referral {
        study: w.study,
        campaign: w.ads,
        source: "ads",
        country: "ES",
        language: "es",
        external_id: "web-live",
        name: "Live Candidate",
        prescreen_passed: Some(true),
    };
    post_referral(&app, &w.ads_token, &referral).await;
    funnel_testkit::eventually("the page to count the new referral", CATCH_UP, || async {
        let shown = browser
            .figure("#funnel-table tr[data-stage=referred]", "referred")
            .await;
        (shown.as_deref() == Some("4")).then_some(())
    })
    .await;
    assert_funnel_matches(&browser, &app, &w).await;

    browser
        .go(&app.url(&format!("/ui/studies/{}/sites/{}", w.study, w.site_es)))
        .await;
    assert_eq!(
        browser.figure("#site-table", "randomized").await.as_deref(),
        Some("1")
    );
    browser.screenshot("site").await;

    browser
        .go(&app.url(&format!("/ui/journeys/{}", w.randomized)))
        .await;
    assert_eq!(
        browser.figure("#journey-summary", "stage").await.as_deref(),
        Some("randomized")
    );
    browser.screenshot("journey-sponsor").await;

    // Signing out through the button ends the session.
    browser.click("form.sign-out button[type=submit]").await;
    funnel_testkit::eventually("the sign-in form after signing out", CATCH_UP, || async {
        (browser.path().await == "/ui/sign-in").then_some(())
    })
    .await;
    browser.go(&app.url("/ui/")).await;
    assert_eq!(browser.path().await, "/ui/sign-in");
    browser.close().await;

    // The team lead's page, in a browser of its own.
    let lead = driver.browser().await;
    lead.sign_in(&app, &w.admin).await;
    lead.go(&app.url("/ui/queues")).await;
    assert_eq!(lead.text("h1").await, "Work queues");
    let depth = api(&app, "/v1/queues/depth", &w.admin).await;
    let overdue: i64 = depth["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|queue| queue["overdue"].as_i64().unwrap())
        .sum();
    assert_eq!(
        lead.figure("#queue-totals", "overdue").await,
        Some(overdue.to_string())
    );
    lead.screenshot("queues").await;
    lead.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_sponsor_cannot_open_another_sponsors_study_in_a_browser() {
    let driver = Driver::start().await;
    let app = spawn_app().await;
    let w = setup(&app).await;
    caught_up(&app, &w).await;

    let browser = driver.browser().await;
    browser.sign_in(&app, &w.other_sponsor).await;
    assert!(
        browser
            .script(
                "return document.querySelector('a[href=\"/ui/studies/' + arguments[0] + '\"]') === null;",
                json!([w.study.to_string()])
            )
            .await
            == true,
        "the other sponsor's study is not listed"
    );
    browser
        .go(&app.url(&format!("/ui/studies/{}", w.study)))
        .await;
    assert_eq!(
        browser.text("h1").await,
        "You do not have access to this page"
    );
    assert_eq!(browser.figure("main", "referred").await, None);
    browser.screenshot("forbidden").await;
    browser.close().await;
    app.stop().await;
}
