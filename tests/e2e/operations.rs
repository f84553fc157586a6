use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with};
use crate::setup::problem;

#[tokio::test]
async fn health_answers_and_ready_reports_both_dependencies() {
    let app = spawn_app().await;

    let health = app.get("/health").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");

    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["stream_head"], 0, "a new stream holds no events");
    app.stop().await;
}

#[tokio::test]
async fn ready_turns_unavailable_when_nats_goes_away_and_back_when_it_returns() {
    let mut server = funnel_testkit::NatsServer::start().await;
    let nats = funnel_testkit::TestNats::from_url(server.url());
    let app = spawn_app_with(nats).await;
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);

    server.kill().await;
    let problem = problem(app.get("/ready").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("NATS"),
        "{problem}"
    );
    assert_eq!(
        app.get("/health").await.status(),
        StatusCode::OK,
        "liveness does not depend on NATS"
    );

    server.restart().await;
    funnel_testkit::eventually(
        "readiness after NATS restarts",
        std::time::Duration::from_secs(20),
        || async { (app.get("/ready").await.status() == StatusCode::OK).then_some(()) },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn shutdown_ends_within_its_grace_while_nats_is_down() {
    let mut server = funnel_testkit::NatsServer::start().await;
    let nats = funnel_testkit::TestNats::from_url(server.url());
    let app = crate::helpers::spawn_app_configured(nats, |settings| {
        settings.shutdown_grace = std::time::Duration::from_secs(2);
    })
    .await;
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    server.kill().await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(60), app.stop()).await;
    assert!(stopped.is_ok(), "the service did not stop with NATS down");
}

#[tokio::test]
async fn metrics_are_prometheus_text_labelled_by_route_template() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"funnel_http_requests_total{method="GET",route="/health",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("funnel_http_request_duration_seconds_bucket"));
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_is_3_1_and_lists_every_route() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for path in ["/health", "/ready", "/metrics"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let app = spawn_app().await;
    let response = app.get("/no-such-thing").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("/no-such-thing")
    );
    app.stop().await;
}

/// SIGTERM while a batch is being ingested: the service stops taking new connections but
/// finishes the batch, and every referral it answered for is on the stream.
#[tokio::test]
async fn shutdown_finishes_in_flight_appends() {
    let mut app = spawn_app().await;
    let campaign = crate::referrals::campaign(&app).await;
    let head = app.log.stream_head().await.unwrap();
    let referrals: Vec<Value> = (0..200)
        .map(|i| {
            crate::referrals::body(
                &campaign,
                &format!("drain-{i}"),
                "Drain Test",
                Some(&format!("+34 600 {i:06}")),
                None,
            )
        })
        .collect();
    let request = app
        .http
        .post(app.url("/v1/referrals/batch"))
        .bearer_auth(&campaign.token)
        .json(&serde_json::json!({ "referrals": referrals }))
        .send();
    let in_flight = tokio::spawn(request);
    funnel_testkit::eventually(
        "the batch to start appending",
        std::time::Duration::from_secs(30),
        || async { (app.log.stream_head().await.unwrap() > head).then_some(()) },
    )
    .await;
    app.request_shutdown();

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight batch is answered");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 200);
    assert!(
        results.iter().all(|result| result["status"] == "created"),
        "{body}"
    );
    for result in results {
        let journey: funnel_domain::JourneyId =
            result["journey_id"].as_str().unwrap().parse().unwrap();
        let stored = app
            .log
            .read(&funnel_api::commands::journey_key(journey))
            .await
            .unwrap();
        assert_eq!(
            stored.len(),
            1,
            "the referral of {journey} is on the stream"
        );
    }
    app.stop().await;
}

/// A server that speaks just enough of the NATS protocol to introduce itself as 2.9.10, the
/// version Debian ships (with a known bug under concurrent optimistic-concurrency publishes).
async fn fake_old_nats_server() -> String {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let info = r#"INFO {"server_id":"OLD","server_name":"old","version":"2.9.10","go":"go1.19","host":"127.0.0.1","port":4222,"headers":true,"max_payload":1048576,"proto":1,"jetstream":true}"#;
                if write
                    .write_all(format!("{info}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn the_service_refuses_a_nats_server_older_than_2_11() {
    let url = fake_old_nats_server().await;
    let db = funnel_testkit::test_database().await;
    let prefix = funnel_testkit::unique_prefix();
    let settings = funnel_api::ServiceSettings::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        db.settings.clone(),
        funnel_eventlog::EventLogSettings::new(url, prefix.to_uppercase(), prefix),
    );
    let refused = funnel_api::Application::build(settings, prometheus::Registry::new())
        .await
        .expect_err("an old server is refused");
    let message = refused.to_string();
    assert!(
        message.contains("2.9.10") && message.contains("2.11"),
        "{message}"
    );
}

/// A body over the configured limit is refused with 413 before anything is decided.
#[tokio::test]
async fn an_oversized_body_is_413_and_appends_nothing() {
    let app =
        crate::helpers::spawn_app_with_settings(|settings| settings.max_body_bytes = 1024).await;
    let token = app.admin_token().await;
    let head = app.log.stream_head().await.unwrap();
    let body = serde_json::json!({
        "sponsor_id": uuid::Uuid::new_v4(),
        "title": "x".repeat(4096),
        "protocol_code": "BIG-1",
        "target_randomized": 10,
        "countries": ["ES"],
        "languages": ["es"],
    });
    let response = app.post_json("/v1/studies", &token, &body).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(app.log.stream_head().await.unwrap(), head);
    app.stop().await;
}

/// A request that outlives its budget is answered 504 with a problem document; the work it
/// started is not cut off half-way (a batch runs to completion), so a retry is safe.
#[tokio::test]
async fn a_request_over_its_time_budget_is_504() {
    let app = crate::helpers::spawn_app_with_settings(|settings| {
        settings.request_timeout = std::time::Duration::from_millis(50);
    })
    .await;
    let campaign = crate::referrals::campaign(&app).await;
    let referrals: Vec<Value> = (0..1000)
        .map(|i| {
            crate::referrals::body(
                &campaign,
                &format!("slow-{i}"),
                "Slow Test",
                Some(&format!("+34 611 {i:06}")),
                None,
            )
        })
        .collect();
    let response = app
        .post_json(
            "/v1/referrals/batch",
            &campaign.token,
            &serde_json::json!({ "referrals": referrals }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 504);
    app.stop().await;
}

#[tokio::test]
async fn an_authenticated_request_is_503_while_postgresql_is_down_and_served_once_it_is_back() {
    let mut postgres = funnel_testkit::PostgresServer::start().await;
    let mut database = postgres.database().await;
    database.acquire_timeout = std::time::Duration::from_secs(1);
    let app = crate::helpers::spawn_app_configured(funnel_testkit::test_nats().await, |settings| {
        settings.db = database;
    })
    .await;
    let token = app.admin_token().await;
    let unknown_study = format!("/v1/studies/{}", uuid::Uuid::new_v4());
    assert_eq!(
        app.get_with(&unknown_study, &token).await.status(),
        StatusCode::NOT_FOUND,
        "the token is good and the study unknown"
    );

    // The token cannot be checked: that is the service's trouble, not a bad token.
    postgres.kill().await;
    let problem = problem(
        app.get_with(&unknown_study, &token).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("PostgreSQL"), "{problem}");
    assert!(!detail.contains("Connection"), "no cause leaks: {problem}");

    postgres.restart().await;
    funnel_testkit::eventually(
        "requests served after PostgreSQL restarts",
        std::time::Duration::from_secs(30),
        || async {
            (app.get_with(&unknown_study, &token).await.status() == StatusCode::NOT_FOUND)
                .then_some(())
        },
    )
    .await;
    app.stop().await;
}
