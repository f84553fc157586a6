//! Rebuilding the sponsor dashboard while a client keeps asking for it.

use std::time::Duration;

use funnel_domain::{CandidateId, JourneyCommand, JourneyId, StudyId};
use funnel_projections::dashboard;
use funnel_projections::{Projector, ProjectorSettings, ReadModels, SponsorDashboard};
use funnel_testkit::eventually;

use crate::helpers::fixtures::{at, contact, create_study, referral};
use crate::helpers::spawn_app;

const JOURNEYS: usize = 30;
const WAIT: Duration = Duration::from_secs(60);

async fn live_generation(pool: &sqlx::PgPool) -> Option<i32> {
    funnel_projections::status(pool, None)
        .await
        .expect("status")
        .into_iter()
        .find(|row| row.name == SponsorDashboard::NAME && row.state == "live")
        .map(|row| row.generation)
}

#[tokio::test]
async fn a_rebuild_under_queries_never_fails_or_empties_the_dashboard_and_ends_equal() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let study = StudyId::new();
    app.commands
        .execute_study(study, None, &create_study(study))
        .await
        .expect("study");
    for n in 0..JOURNEYS {
        let (journey, candidate) = (JourneyId::new(), CandidateId::new());
        app.commands
            .receive_referral(
                &app.keys,
                candidate,
                &contact("Ana", "+34600000000", "ana@example.org"),
                referral(journey, candidate, study),
            )
            .await
            .expect("referral");
        if n % 3 == 0 {
            app.commands
                .execute_journey(
                    journey,
                    None,
                    &JourneyCommand::CompletePrescreen {
                        at: at(30),
                        passed: true,
                        reasons: vec![],
                    },
                )
                .await
                .expect("pre-screen");
        }
    }
    let path = format!("/v1/dashboards/studies/{study}/funnel");
    let referred = |body: &serde_json::Value| body["steps"][0]["journeys"].as_u64();
    let passed = |body: &serde_json::Value| body["steps"][1]["journeys"].as_u64();
    let expected_passed = JOURNEYS.div_ceil(3) as u64;
    eventually("the dashboard to show every journey", WAIT, || async {
        let response = app.get_with(&path, &admin).await;
        let body: serde_json::Value = response.json().await.ok()?;
        (referred(&body) == Some(JOURNEYS as u64) && passed(&body) == Some(expected_passed))
            .then_some(())
    })
    .await;
    let models = ReadModels::new(app.db.pool.clone());
    let before = {
        let mut tx = models.read(SponsorDashboard::NAME).await.expect("read");
        dashboard::load(&mut tx).await.expect("load")
    };
    let generation_before = live_generation(&app.db.pool).await.expect("live");

    // The operator's `funnel projections rebuild sponsor_dashboard`; the service builds it.
    let projector = Projector::new(
        app.log.clone(),
        app.db.pool.clone(),
        &prometheus::Registry::new(),
        ProjectorSettings::default(),
    )
    .expect("metrics")
    .with_read_models();
    let started = projector
        .start_rebuild(SponsorDashboard::NAME)
        .await
        .expect("start the rebuild");
    assert_eq!(started.generation, generation_before + 1);

    let mut queries = 0_u32;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = app.get_with(&path, &admin).await;
        assert_eq!(response.status(), 200, "a query failed during the rebuild");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(referred(&body), Some(JOURNEYS as u64), "{body}");
        assert_eq!(passed(&body), Some(expected_passed), "{body}");
        queries += 1;
        if live_generation(&app.db.pool).await == Some(started.generation) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuild did not go live within {WAIT:?} ({queries} queries)"
        );
    }
    // A few more on the new generation.
    for _ in 0..5 {
        let response = app.get_with(&path, &admin).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(referred(&body), Some(JOURNEYS as u64), "{body}");
    }
    assert!(queries > 0);
    let after = {
        let mut tx = models.read(SponsorDashboard::NAME).await.expect("read");
        dashboard::load(&mut tx).await.expect("load")
    };
    assert_eq!(
        after, before,
        "the rebuilt read model equals the one it replaced"
    );
    app.stop().await;
}
