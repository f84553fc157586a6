//! Authentication and its edges over HTTP: tokens stored hashed, revocation at once, malformed
//! and tampered tokens, per-token rate limits; the token store behind the `funnel token` CLI; and
//! the security the OpenAPI document declares.

use std::num::NonZeroU32;

use funnel_api::auth::{NewToken, Role, TokenError};
use funnel_domain::{AgentId, CampaignId, Language, SiteId, SponsorId, StudyId};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::fixtures::create_study;
use crate::helpers::{TestApp, spawn_app, spawn_app_with_settings};
use crate::setup::problem;

/// The id and secret of a token `fnl_<id>_<secret>`.
fn split(token: &str) -> (&str, &str) {
    let rest = token.strip_prefix("fnl_").expect("a funnel token");
    rest.split_once('_').expect("fnl_<id>_<secret>")
}

/// Decodes unpadded base64url (the token secret's alphabet).
fn base64url(text: &str) -> Vec<u8> {
    let mut bits = 0_u32;
    let mut held = 0;
    let mut bytes = Vec::new();
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            other => panic!("not base64url: {}", other as char),
        };
        bits = (bits << 6) | u32::from(value);
        held += 6;
        if held >= 8 {
            held -= 8;
            bytes.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn study(app: &TestApp) -> StudyId {
    let study = StudyId::new();
    app.commands
        .execute_study(study, None, &create_study(study))
        .await
        .unwrap();
    study
}

async fn get_study(app: &TestApp, token: &str, study: StudyId) -> reqwest::Response {
    app.get_with(&format!("/v1/studies/{study}"), token).await
}

/// Asserts a 401 with a bearer challenge and a problem document.
async fn unauthorized(response: reqwest::Response) -> Value {
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|value| value.to_str().unwrap()),
        Some("Bearer")
    );
    problem(response, StatusCode::UNAUTHORIZED).await
}

#[tokio::test]
async fn tokens_are_stored_hashed_never_as_their_secret() {
    let app = spawn_app().await;
    let study = study(&app).await;
    let mut tokens = vec![app.admin_token().await];
    tokens.push(
        app.token(NewToken {
            name: "agent".to_owned(),
            role: Some(Role::Agent),
            agent_id: Some(AgentId::new()),
            study_ids: vec![study],
            languages: vec![Language::parse("es").unwrap()],
            ..NewToken::default()
        })
        .await,
    );
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id::text, row_to_json(t)::text || encode(secret_hash, 'hex')
           || encode(secret_hash, 'escape') FROM api_tokens t",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), tokens.len());
    for token in &tokens {
        let (id, secret) = split(token);
        assert!(secret.len() >= 43, "256 random bits: {secret}");
        let raw = hex(&base64url(secret));
        assert_eq!(raw.len(), 64);
        let (_, columns) = rows
            .iter()
            .find(|(row, _)| row.replace('-', "") == id)
            .expect("the token's row");
        assert!(!columns.contains(secret), "the secret is stored: {columns}");
        assert!(
            !columns.to_lowercase().contains(&raw),
            "the secret's bytes are stored: {columns}"
        );
        assert!(!columns.contains(token.as_str()));
    }
    // And the stored token still authenticates.
    assert_eq!(
        get_study(&app, &tokens[0], study).await.status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_or_tampered_token_is_401_at_once() {
    let app = spawn_app().await;
    let study = study(&app).await;
    let token = app.admin_token().await;
    let other = app.admin_token().await;
    assert_eq!(
        get_study(&app, &token, study).await.status(),
        StatusCode::OK
    );

    // The same id with another secret, a secret cut short or lengthened, another id.
    let (id, secret) = split(&token);
    let (other_id, other_secret) = split(&other);
    let mut flipped = secret.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for tampered in [
        format!("fnl_{id}_{other_secret}"),
        format!("fnl_{id}_{flipped}"),
        format!("fnl_{id}_{}", &secret[..secret.len() - 1]),
        format!("fnl_{id}_{secret}x"),
        format!("fnl_{other_id}_{secret}"),
        format!("fnl_{}_{secret}", uuid::Uuid::new_v4().simple()),
    ] {
        let refused = unauthorized(get_study(&app, &tampered, study).await).await;
        assert!(
            !refused.to_string().contains(secret),
            "the secret is not echoed: {refused}"
        );
    }

    let token_id: uuid::Uuid = id.parse().unwrap();
    assert!(app.tokens.revoke(token_id).await.unwrap());
    unauthorized(get_study(&app, &token, study).await).await;
    unauthorized(
        app.post_json(
            "/v1/studies",
            &token,
            &serde_json::json!({"title": "anything"}),
        )
        .await,
    )
    .await;
    assert!(
        !app.tokens.revoke(token_id).await.unwrap(),
        "revoked already"
    );
    assert_eq!(
        get_study(&app, &other, study).await.status(),
        StatusCode::OK,
        "other tokens keep working"
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_authorization_headers_are_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let study = study(&app).await;
    let token = app.admin_token().await;
    let path = app.url(&format!("/v1/studies/{study}"));

    unauthorized(app.http.get(&path).send().await.unwrap()).await;
    for header in [
        "Basic YWRtaW46c2VjcmV0".to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer garbage".to_owned(),
        "Bearer fnl_".to_owned(),
        "Bearer fnl_not-a-uuid_secret".to_owned(),
        "Bearer ���".to_owned(),
        format!("Token {token}"),
        format!("Bearer{token}"),
        token.clone(),
    ] {
        let response = app
            .http
            .get(&path)
            .header("authorization", header.as_str())
            .send()
            .await
            .unwrap();
        let refused = unauthorized(response).await;
        assert!(refused["detail"].is_string(), "{header}: {refused}");
    }
    assert_eq!(
        app.http
            .get(&path)
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn each_token_has_its_own_request_budget() {
    const BURST: u32 = 5;
    let app = spawn_app_with_settings(|settings| {
        settings.rate_limit_per_second = NonZeroU32::new(1).unwrap();
        settings.rate_limit_burst = NonZeroU32::new(BURST).unwrap();
    })
    .await;
    let study = study(&app).await;
    let busy = app.admin_token().await;
    let calm = app.admin_token().await;

    // A fresh token has its whole burst; one more at once is refused (one request a second
    // comes back, far slower than these follow each other).
    for n in 1..=BURST {
        let response = get_study(&app, &busy, study).await;
        assert_eq!(response.status(), StatusCode::OK, "request {n}");
    }
    let refused = get_study(&app, &busy, study).await;
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let detail = problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(detail["detail"].is_string(), "{detail}");
    for _ in 0..3 {
        assert_eq!(
            get_study(&app, &busy, study).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    // Another token is served all the while.
    for _ in 0..BURST {
        assert_eq!(get_study(&app, &calm, study).await.status(), StatusCode::OK);
    }
    // Unauthenticated requests are refused as such, not counted against anyone.
    unauthorized(
        app.http
            .get(app.url(&format!("/v1/studies/{study}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // The budget comes back with time.
    funnel_testkit::eventually(
        "the busy token's budget to refill",
        std::time::Duration::from_secs(10),
        || async { (get_study(&app, &busy, study).await.status() == StatusCode::OK).then_some(()) },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_token_store_behind_the_cli_refuses_missing_scope_and_never_lists_secrets() {
    let app = spawn_app().await;
    let study = StudyId::new();
    let es = Language::parse("es").unwrap();
    let refused = [
        (NewToken::default(), "role"),
        (
            NewToken {
                role: Some(Role::Campaign),
                study_ids: vec![study],
                ..NewToken::default()
            },
            "campaign id",
        ),
        (
            NewToken {
                role: Some(Role::Campaign),
                campaign_id: Some(CampaignId::new()),
                ..NewToken::default()
            },
            "study",
        ),
        (
            NewToken {
                role: Some(Role::Agent),
                study_ids: vec![study],
                languages: vec![es.clone()],
                ..NewToken::default()
            },
            "agent id",
        ),
        (
            NewToken {
                role: Some(Role::Agent),
                agent_id: Some(AgentId::new()),
                languages: vec![es.clone()],
                ..NewToken::default()
            },
            "study",
        ),
        (
            NewToken {
                role: Some(Role::Agent),
                agent_id: Some(AgentId::new()),
                study_ids: vec![study],
                ..NewToken::default()
            },
            "language",
        ),
        (
            NewToken {
                role: Some(Role::Site),
                ..NewToken::default()
            },
            "site id",
        ),
        (
            NewToken {
                role: Some(Role::Sponsor),
                ..NewToken::default()
            },
            "sponsor id",
        ),
    ];
    for (new, missing) in refused {
        match app.tokens.create(&new).await {
            Err(TokenError::Invalid(message)) => {
                assert!(message.contains(missing), "{missing}: {message}");
            }
            other => panic!("{new:?} must be refused, got {other:?}"),
        }
    }
    assert!(
        app.tokens.list().await.unwrap().is_empty(),
        "none was stored"
    );

    let scopes = [
        NewToken {
            name: "  ".to_owned(),
            role: Some(Role::Admin),
            ..NewToken::default()
        },
        NewToken {
            name: "Spring ads".to_owned(),
            role: Some(Role::Campaign),
            campaign_id: Some(CampaignId::new()),
            study_ids: vec![study],
            ..NewToken::default()
        },
        NewToken {
            name: "Lucía".to_owned(),
            role: Some(Role::Agent),
            agent_id: Some(AgentId::new()),
            study_ids: vec![study],
            languages: vec![es.clone()],
            ..NewToken::default()
        },
        NewToken {
            name: "La Paz".to_owned(),
            role: Some(Role::Site),
            site_id: Some(SiteId::new()),
            ..NewToken::default()
        },
        NewToken {
            name: "Sponsor".to_owned(),
            role: Some(Role::Sponsor),
            sponsor_id: Some(SponsorId::new()),
            ..NewToken::default()
        },
    ];
    let mut created = Vec::new();
    for new in &scopes {
        let (info, token) = app.tokens.create(new).await.unwrap();
        let (id, _) = split(&token);
        assert_eq!(id, info.id.simple().to_string());
        assert_eq!(Some(info.principal.role), new.role);
        assert_eq!(info.principal.token_id, info.id);
        assert_eq!(info.principal.campaign_id, new.campaign_id);
        assert_eq!(info.principal.agent_id, new.agent_id);
        assert_eq!(info.principal.site_id, new.site_id);
        assert_eq!(info.principal.sponsor_id, new.sponsor_id);
        assert_eq!(info.principal.study_ids, new.study_ids);
        assert_eq!(info.principal.languages, new.languages);
        assert!(info.revoked_at.is_none());
        created.push((info.id, token));
    }
    let listed = app.tokens.list().await.unwrap();
    assert_eq!(listed.len(), scopes.len());
    assert_eq!(listed[0].name, "admin token", "a blank name gets a default");
    assert!(app.tokens.revoke(created[1].0).await.unwrap());
    assert!(!app.tokens.revoke(uuid::Uuid::new_v4()).await.unwrap());

    let listed = app.tokens.list().await.unwrap();
    for (id, token) in &created {
        let info = listed.iter().find(|info| info.id == *id).expect("listed");
        assert_eq!(info.revoked_at.is_some(), *id == created[1].0);
        // What `funnel token list` prints: the principal as JSON, and everything else.
        let (_, secret) = split(token);
        let shown = format!(
            "{} {:?} {}",
            serde_json::to_string(info).unwrap(),
            info,
            serde_json::to_string(&info.principal).unwrap()
        );
        assert!(!shown.contains(secret), "a secret is listed: {shown}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_declares_cloudevents_and_bearer_security() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");

    let cloudevents = &doc["paths"]["/v1/cloudevents"]["post"];
    let content = cloudevents["requestBody"]["content"]
        .as_object()
        .expect("/v1/cloudevents takes a request body");
    for content_type in [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
    ] {
        assert!(
            content.contains_key(content_type),
            "{content_type} missing: {:?}",
            content.keys()
        );
    }
    for status in ["200", "201", "401", "403", "409", "415", "422", "429"] {
        assert!(
            cloudevents["responses"].get(status).is_some(),
            "/v1/cloudevents declares no {status}"
        );
    }

    let open = ["/health", "/ready", "/metrics"];
    let mut operations = 0;
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            if open.contains(&path.as_str()) {
                assert!(
                    operation.get("security").is_none(),
                    "{method} {path} needs no token"
                );
                continue;
            }
            operations += 1;
            let security = operation
                .get("security")
                .or_else(|| doc.get("security"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !security
                .iter()
                .any(|requirement| requirement.get("bearer").is_some())
            {
                missing.push(format!("{method} {path}: no bearer security"));
            }
            if operation["responses"].get("401").is_none() {
                missing.push(format!("{method} {path}: no 401 response"));
            }
        }
    }
    assert!(operations >= 10, "{operations} authenticated operations");
    assert!(missing.is_empty(), "{missing:#?}");
    for path in open {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    app.stop().await;
}
