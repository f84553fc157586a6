//! A small simulation against the real service (NATS, PostgreSQL, HTTP), checked through the
//! dashboards.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use funnel_api::auth::{NewToken, Role, TokenStore};
use funnel_api::{Application, ServiceSettings};
use funnel_domain::{AgentId, CampaignId, Language, SiteId, StudyId};
use funnel_eventlog::EventLogSettings;
use funnel_sim::{BoxError, SimSettings, StopReason, TokenIssuer, TokenRequest, TokenRole};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Issuer(TokenStore);

impl TokenIssuer for Issuer {
    fn issue<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send + 'a>> {
        Box::pin(async move {
            let token = NewToken {
                name: request.name.clone(),
                role: Some(match request.role {
                    TokenRole::Campaign => Role::Campaign,
                    TokenRole::Agent => Role::Agent,
                    TokenRole::Site => Role::Site,
                }),
                sponsor_id: None,
                campaign_id: request.campaign_id.map(CampaignId::from),
                agent_id: request.agent_id.map(AgentId::from),
                site_id: request.site_id.map(SiteId::from),
                study_ids: request
                    .study_ids
                    .iter()
                    .copied()
                    .map(StudyId::from)
                    .collect(),
                languages: request
                    .languages
                    .iter()
                    .map(|language| Language::parse(language))
                    .collect::<Result<_, _>>()?,
            };
            Ok(self.0.create(&token).await?.1)
        })
    }
}

fn count(funnel: &Value, stage: &str) -> i64 {
    funnel["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|step| step["stage"] == stage))
        .and_then(|step| step["journeys"].as_i64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_simulation_fills_the_funnel_without_a_failed_request() {
    let nats = funnel_testkit::test_nats().await;
    let db = funnel_testkit::test_database().await;
    let prefix = funnel_testkit::unique_prefix();
    let eventlog = EventLogSettings::new(nats.url.clone(), prefix.to_uppercase(), prefix);
    let settings = ServiceSettings::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        db.settings.clone(),
        eventlog,
    );
    // The real clock: the simulator stamps steps with times of its own, which the service
    // checks against its clock.
    let app = Application::build(settings, prometheus::Registry::new())
        .await
        .expect("the service builds");
    let tokens = app.tokens().clone();
    let base_url = format!("http://{}", app.local_addr());
    let stop_service = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop_service.clone().cancelled_owned()));

    let (_, admin) = tokens
        .create(&NewToken {
            name: "test admin".to_owned(),
            role: Some(Role::Admin),
            ..NewToken::default()
        })
        .await
        .unwrap();
    let mut sim = SimSettings::new(base_url.clone(), admin.clone());
    sim.seed = 42;
    sim.studies = 1;
    sim.sites_per_study = (10, 10);
    sim.countries_per_study = (3, 4);
    sim.rate = Some(100.0);
    sim.referrals = Some(200);
    // A simulated day every 40 ms: a journey's two months take a few seconds.
    sim.time_scale = 86_400.0 / 0.04;
    sim.boost = 3.0;
    sim.agents = 4;
    sim.concurrency = 16;
    sim.drain_timeout = Duration::from_secs(120);
    let report = funnel_sim::run(sim, &Issuer(tokens), CancellationToken::new(), |_| {})
        .await
        .expect("the simulation runs");

    let progress = &report.progress;
    eprintln!("{progress:?}");
    assert_eq!(report.stopped, StopReason::ReferralLimit);
    assert_eq!(report.failures, Vec::<String>::new());
    assert_eq!(progress.failed, 0, "{progress:?}");
    assert_eq!(progress.journeys_failed, 0, "{progress:?}");
    assert_eq!(progress.referrals, 200, "{progress:?}");
    assert_eq!(
        progress.journeys_done, 200,
        "every journey ran to its end: {progress:?}"
    );
    assert!(progress.steps > 400, "{progress:?}");
    assert!(
        progress.queue_completions > 0,
        "agents worked the queue: {progress:?}"
    );

    let study = report.studies[0].study_id;
    let http = reqwest::Client::new();
    let url = format!("{base_url}/v1/dashboards/studies/{study}/funnel");
    let funnel = funnel_testkit::eventually(
        "the funnel to show the simulation",
        Duration::from_secs(60),
        || {
            let (http, url, admin) = (&http, &url, &admin);
            async move {
                let response = http.get(url).bearer_auth(admin).send().await.ok()?;
                let funnel: Value = response.json().await.ok()?;
                (count(&funnel, "referred") == 200 && count(&funnel, "randomized") > 0)
                    .then_some(funnel)
            }
        },
    )
    .await;
    for stage in [
        "contacted",
        "referred_to_site",
        "site_contacted",
        "scheduled",
        "attended",
        "consented",
        "screening",
    ] {
        assert!(count(&funnel, stage) > 0, "{stage}: {funnel}");
    }

    stop_service.cancel();
    server.await.unwrap().unwrap();
}
