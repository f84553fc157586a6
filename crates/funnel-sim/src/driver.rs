//! The I/O part: sets the world up through the admin API, posts referrals when they arrive and
//! each journey's steps when they fall due, in compressed time.
//!
//! Time: the service stamps a referral with its own clock, so simulated time runs from each
//! referral's real arrival, compressed by `time_scale`: a step planned 3 simulated days after
//! the referral is posted (with that `at`) `3 days / time_scale` after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::{Api, Request, RequestError};
use crate::desk::AgentDesk;
use crate::plan::{Action, Actor, CallOutcome, ReferralPlan, World};
use crate::stats::Stats;
use crate::{SimError, SimSettings, StopReason, StudyReport, TokenIssuer, TokenRequest, TokenRole};

/// Tokens created at once while setting up.
const TOKEN_CONCURRENCY: usize = 8;

/// One study as created on the service.
#[derive(Debug)]
pub(crate) struct StudySetup {
    pub(crate) id: Uuid,
    pub(crate) sites: Vec<Uuid>,
    site_tokens: Vec<String>,
    campaigns: Vec<Uuid>,
    campaign_tokens: Vec<String>,
    /// Referrals per campaign since spend was last recorded.
    referrals_since_spend: Vec<AtomicU64>,
}

/// What every task of a run shares.
pub(crate) struct Shared {
    pub(crate) api: Api,
    pub(crate) world: World,
    pub(crate) time_scale: f64,
    admin_token: String,
    pub(crate) studies: Vec<StudySetup>,
    /// Agent tokens by primary language subtag, for steps posted directly.
    agent_tokens: BTreeMap<String, Vec<String>>,
    /// One token per simulated agent.
    pub(crate) agents: Vec<String>,
    run_id: String,
}

impl Shared {
    pub(crate) fn site_id(&self, study: usize, site: usize) -> Option<Uuid> {
        self.studies.get(study)?.sites.get(site).copied()
    }

    /// An agent who speaks the language (spread over agents by journey).
    pub(crate) fn agent_token(&self, language: &str, spread: u64) -> String {
        let primary = primary(language);
        let tokens = self
            .agent_tokens
            .get(primary)
            .or_else(|| self.agent_tokens.values().next());
        tokens
            .and_then(|tokens| {
                let index = usize::try_from(spread).unwrap_or(0) % tokens.len().max(1);
                tokens.get(index)
            })
            .cloned()
            // Every study language has an agent; the admin token is the last resort.
            .unwrap_or_else(|| self.admin_token.clone())
    }
}

fn primary(language: &str) -> &str {
    language.split('-').next().unwrap_or(language)
}

/// One journey being performed.
#[derive(Debug)]
pub(crate) struct JourneyCtx {
    pub(crate) id: Uuid,
    pub(crate) index: u64,
    pub(crate) study: usize,
    pub(crate) language: &'static str,
    /// The journey's version, sent as `If-Match`: this run is its only writer.
    pub(crate) version: u64,
    /// The latest `at` recorded, so that steps never go back in time.
    pub(crate) last_at: DateTime<Utc>,
}

/// The real instant `sim` of simulated time after `from`.
pub(crate) fn wall_after(shared: &Shared, from: DateTime<Utc>, sim: Duration) -> DateTime<Utc> {
    let real = Duration::from_secs_f64(sim.as_secs_f64() / shared.time_scale);
    from + TimeDelta::from_std(real).unwrap_or(TimeDelta::MAX / 4)
}

fn step(kind: &'static str, at: DateTime<Utc>) -> Value {
    json!({"type": kind, "at": at})
}

/// The steps of one call, as `POST /v1/journeys/{id}/events` bodies.
pub(crate) fn call_bodies(
    shared: &Shared,
    study: usize,
    outcome: &CallOutcome,
    at: DateTime<Utc>,
) -> Vec<Value> {
    let attempt = |result: &str| {
        let mut body = step("contact_attempted", at);
        body["channel"] = json!("phone");
        body["outcome"] = json!(result);
        body
    };
    match outcome {
        CallOutcome::NoAnswer { ends_cadence } => {
            let mut bodies = vec![attempt("no_answer")];
            if *ends_cadence {
                bodies.push(step("unreachable", at));
            }
            bodies
        }
        CallOutcome::WrongNumber => vec![attempt("wrong_number"), step("unreachable", at)],
        CallOutcome::Reached {
            prescreen,
            refer_to,
            appointment_in,
        } => {
            let mut bodies = vec![attempt("reached")];
            if let Some(passed) = prescreen {
                let mut body = step("prescreen_completed", at);
                body["passed"] = json!(passed);
                bodies.push(body);
            }
            if let Some(site) = refer_to.and_then(|site| shared.site_id(study, site)) {
                let mut body = step("referred_to_site", at);
                body["site_id"] = json!(site);
                bodies.push(body);
            }
            if let Some(wait) = appointment_in {
                let mut body = step("appointment_scheduled", at);
                body["appointment_at"] = json!(wall_after(shared, at, *wait));
                bodies.push(body);
            }
            bodies
        }
    }
}

/// A step other than a call, as a request body.
fn action_body(shared: &Shared, study: usize, action: &Action, at: DateTime<Utc>) -> Option<Value> {
    let with = |kind: &'static str, field: &str, value: Value| {
        let mut body = step(kind, at);
        body[field] = value;
        body
    };
    Some(match action {
        Action::Call(_) => return None,
        Action::NotInterested { reason } => with("not_interested", "reason", json!(reason)),
        Action::OptedOut => step("opted_out", at),
        Action::Disqualified { reason } => with("disqualified", "reason", json!(reason)),
        Action::Reallocate { to_site, reason } => {
            let mut body = with(
                "reallocated",
                "to_site",
                json!(shared.site_id(study, *to_site)?),
            );
            body["reason"] = json!(reason);
            body
        }
        Action::SiteContacted => step("site_contacted", at),
        Action::Schedule { appointment_in } => with(
            "appointment_scheduled",
            "appointment_at",
            json!(wall_after(shared, at, *appointment_in)),
        ),
        Action::Reschedule { appointment_in } => with(
            "appointment_rescheduled",
            "appointment_at",
            json!(wall_after(shared, at, *appointment_in)),
        ),
        Action::Attended => step("appointment_attended", at),
        Action::NoShow => step("no_show", at),
        Action::Consented => step("consented", at),
        Action::ScreeningStarted => step("screening_started", at),
        Action::ScreenFailed { reason } => with("screen_failed", "reason", json!(reason)),
        Action::Randomized { arm } => with("randomized", "arm", json!(arm)),
        Action::Withdrawn { reason } => with("withdrawn", "reason", json!(reason)),
    })
}

/// Posts steps in order, each against the version the previous one left.
pub(crate) async fn post_steps(
    shared: &Shared,
    journey: &mut JourneyCtx,
    token: &str,
    bodies: Vec<Value>,
) -> Result<(), RequestError> {
    let path = format!("/v1/journeys/{}/events", journey.id);
    for body in bodies {
        let kind = body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("step")
            .to_owned();
        let answer = shared
            .api
            .send(&Request {
                method: Method::POST,
                path: &path,
                token,
                body: Some(&body),
                if_match: Some(journey.version),
                what: &kind,
            })
            .await;
        match answer {
            Ok(answer) => {
                journey.version = answer
                    .body
                    .get("version")
                    .and_then(Value::as_u64)
                    .unwrap_or(journey.version + 1);
            }
            // Only this run writes the journey, so a stale version means a retried request
            // had been applied after all: carry on from the journey's current version.
            Err(RequestError::Status { status, .. })
                if status == StatusCode::PRECONDITION_FAILED =>
            {
                journey.version = current_version(shared, journey.id).await?;
            }
            Err(error) => {
                if !matches!(error, RequestError::Cancelled) {
                    shared.api.stats.failure(format!("{kind}: {error}"));
                }
                return Err(error);
            }
        }
        Stats::add(&shared.api.stats.steps, 1);
    }
    Ok(())
}

async fn current_version(shared: &Shared, journey: Uuid) -> Result<u64, RequestError> {
    let path = format!("/v1/journeys/{journey}");
    let answer = shared
        .api
        .send(&Request {
            method: Method::GET,
            path: &path,
            token: &shared.admin_token,
            body: None,
            if_match: None,
            what: "read journey",
        })
        .await?;
    answer
        .body
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| RequestError::Transport("journey without a version".to_owned()))
}

async fn sleep_until(at: DateTime<Utc>, cancel: &CancellationToken) -> bool {
    let wait = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// Performs one referral's plan from its arrival to its last step.
async fn journey(
    shared: Arc<Shared>,
    desk: Arc<dyn AgentDesk>,
    plan: ReferralPlan,
    cancel: CancellationToken,
) {
    let stats = &shared.api.stats;
    let mut ctx = match refer(&shared, &plan).await {
        Referred::Journey(ctx) => ctx,
        Referred::Duplicate => {
            // Linked to the same person's earlier journey and closed: nothing more happens.
            Stats::add(&stats.duplicates, 1);
            Stats::add(&stats.journeys_done, 1);
            return;
        }
        Referred::Failed => {
            if !cancel.is_cancelled() {
                Stats::add(&stats.journeys_failed, 1);
            }
            return;
        }
    };
    if plan.steps.is_empty() {
        Stats::add(&stats.journeys_done, 1);
        return;
    }
    if matches!(plan.steps.first(), Some(step) if matches!(step.action, Action::Call(_))) {
        desk.expect_first_call(ctx.id);
    }
    let referred_at = ctx.last_at;
    let mut first_call = true;
    for planned in &plan.steps {
        let at = wall_after(&shared, referred_at, planned.after).max(ctx.last_at);
        if !sleep_until(at, &cancel).await {
            desk.forget(ctx.id);
            return;
        }
        let result = match (&planned.action, planned.actor) {
            (Action::Call(outcome), _) => {
                let first = std::mem::replace(&mut first_call, false);
                desk.call(&shared, &mut ctx, outcome, at, first).await
            }
            (action, actor) => {
                let token = match actor {
                    Actor::Agent => shared.agent_token(plan.language, plan.index),
                    Actor::Site(site) => shared
                        .studies
                        .get(plan.study)
                        .and_then(|study| study.site_tokens.get(site))
                        .cloned()
                        .unwrap_or_default(),
                };
                let bodies = action_body(&shared, plan.study, action, at)
                    .into_iter()
                    .collect();
                post_steps(&shared, &mut ctx, &token, bodies).await
            }
        };
        ctx.last_at = ctx.last_at.max(at);
        if result.is_err() {
            desk.forget(ctx.id);
            if !cancel.is_cancelled() {
                Stats::add(&stats.journeys_failed, 1);
            }
            return;
        }
    }
    desk.forget(ctx.id);
    Stats::add(&stats.journeys_done, 1);
}

enum Referred {
    Journey(JourneyCtx),
    Duplicate,
    Failed,
}

/// Posts the referral with its campaign's token.
async fn refer(shared: &Shared, plan: &ReferralPlan) -> Referred {
    match try_refer(shared, plan).await {
        Ok(referred) => referred,
        Err(RequestError::Cancelled) => Referred::Failed,
        Err(error) => {
            shared.api.stats.failure(format!("referral: {error}"));
            Referred::Failed
        }
    }
}

async fn try_refer(shared: &Shared, plan: &ReferralPlan) -> Result<Referred, RequestError> {
    let missing =
        || RequestError::Transport("the plan names a study or campaign not set up".to_owned());
    let study = shared.studies.get(plan.study).ok_or_else(missing)?;
    let campaign = shared
        .world
        .studies
        .get(plan.study)
        .and_then(|study| study.campaigns.get(plan.campaign))
        .ok_or_else(missing)?;
    let mut body = json!({
        "study_id": study.id,
        "campaign_id": study.campaigns.get(plan.campaign).ok_or_else(missing)?,
        "external_id": format!("sim-{}-{}", shared.run_id, plan.index),
        "source": campaign.channel,
        "language": plan.language,
        "country": plan.country,
        "consent_to_contact": plan.consent_to_contact,
        "time_zone": plan.time_zone,
        "contact": {
            "name": plan.contact.name,
            "phone": plan.contact.phone,
            "email": plan.contact.email,
        },
    });
    if let Some(site) = plan.preferred_site.and_then(|site| study.sites.get(site)) {
        body["preferred_site_id"] = json!(site);
    }
    if let Some(passed) = plan.online_prescreen {
        body["prescreen"] = json!({"passed": passed, "reasons": []});
    }
    let token = study
        .campaign_tokens
        .get(plan.campaign)
        .ok_or_else(missing)?;
    let answer = shared
        .api
        .send(&Request {
            method: Method::POST,
            path: "/v1/referrals",
            token,
            body: Some(&body),
            if_match: None,
            what: "referral",
        })
        .await?;
    Stats::add(&shared.api.stats.referrals, 1);
    if let Some(counter) = study.referrals_since_spend.get(plan.campaign) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if answer.body.get("status").and_then(Value::as_str) == Some("duplicate") {
        return Ok(Referred::Duplicate);
    }
    let malformed =
        || RequestError::Transport("referral answer without journey id or version".to_owned());
    let id = answer
        .body
        .get("journey_id")
        .and_then(Value::as_str)
        .and_then(|text| Uuid::parse_str(text).ok())
        .ok_or_else(malformed)?;
    let version = answer
        .body
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(malformed)?;
    Ok(Referred::Journey(JourneyCtx {
        id,
        index: plan.index,
        study: plan.study,
        language: plan.language,
        version,
        last_at: Utc::now(),
    }))
}

/// Creates the studies, their sites and campaigns, and the tokens the run acts with.
pub(crate) async fn setup(
    api: &Api,
    world: World,
    settings: &SimSettings,
    issuer: &dyn TokenIssuer,
) -> Result<Shared, SimError> {
    let sponsors: Vec<Uuid> = (0..2).map(|_| Uuid::new_v4()).collect();
    let admin = settings.admin_token.as_str();
    let created = futures::future::join_all(
        world
            .studies
            .iter()
            .map(|study| create_study(api, admin, study, &sponsors)),
    )
    .await;
    let mut ids = Vec::with_capacity(created.len());
    for study in created {
        ids.push(study?);
    }
    let all_studies: Vec<Uuid> = ids.iter().map(|(study, _, _)| *study).collect();

    let mut requests = Vec::new();
    for (plan, (study, sites, campaigns)) in world.studies.iter().zip(&ids) {
        for (campaign, id) in plan.campaigns.iter().zip(campaigns) {
            requests.push(TokenRequest {
                role: TokenRole::Campaign,
                name: format!("simulator campaign {}", campaign.name),
                campaign_id: Some(*id),
                study_ids: vec![*study],
                ..TokenRequest::default()
            });
        }
        for (site, id) in plan.sites.iter().zip(sites) {
            requests.push(TokenRequest {
                role: TokenRole::Site,
                name: format!("simulator site {}", site.name),
                site_id: Some(*id),
                study_ids: vec![*study],
                ..TokenRequest::default()
            });
        }
    }
    let agents = agent_languages(&world, settings.agents);
    for (number, languages) in agents.iter().enumerate() {
        requests.push(TokenRequest {
            role: TokenRole::Agent,
            name: format!("simulator agent {}", number + 1),
            agent_id: Some(Uuid::new_v4()),
            study_ids: all_studies.clone(),
            languages: languages.clone(),
            ..TokenRequest::default()
        });
    }
    let mut tokens = futures::stream::iter(&requests)
        .map(|request| issuer.issue(request))
        .buffered(TOKEN_CONCURRENCY);
    let mut issued = Vec::with_capacity(requests.len());
    while let Some(token) = tokens.next().await {
        issued.push(token.map_err(SimError::Token)?);
    }
    drop(tokens);

    let mut issued = issued.into_iter();
    let mut studies = Vec::with_capacity(ids.len());
    for (plan, (id, sites, campaigns)) in world.studies.iter().zip(ids) {
        let campaign_tokens: Vec<String> = issued.by_ref().take(plan.campaigns.len()).collect();
        let site_tokens: Vec<String> = issued.by_ref().take(plan.sites.len()).collect();
        studies.push(StudySetup {
            id,
            referrals_since_spend: campaigns.iter().map(|_| AtomicU64::new(0)).collect(),
            sites,
            site_tokens,
            campaigns,
            campaign_tokens,
        });
    }
    let agent_list: Vec<String> = issued.collect();
    let mut agent_tokens: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (languages, token) in agents.iter().zip(&agent_list) {
        for language in languages {
            agent_tokens
                .entry(primary(language).to_owned())
                .or_default()
                .push(token.clone());
        }
    }
    Ok(Shared {
        api: api.clone(),
        time_scale: settings.time_scale,
        admin_token: settings.admin_token.clone(),
        studies,
        agent_tokens,
        agents: agent_list,
        run_id: Uuid::new_v4().simple().to_string()[..12].to_owned(),
        world,
    })
}

/// The languages of each agent: every study language has at least one agent (two when there
/// are enough), and everyone speaks English where a study has it.
fn agent_languages(world: &World, agents: usize) -> Vec<Vec<String>> {
    let agents = agents.max(1);
    let languages: std::collections::BTreeSet<&str> = world
        .studies
        .iter()
        .flat_map(|study| study.languages.iter().copied())
        .collect();
    let mut assigned: Vec<Vec<String>> = vec![Vec::new(); agents];
    for (index, language) in languages.iter().enumerate() {
        for agent in [index % agents, (index + agents / 2) % agents] {
            if !assigned[agent].iter().any(|known| known == language) {
                assigned[agent].push((*language).to_owned());
            }
        }
    }
    if languages.contains("en") {
        for known in &mut assigned {
            if !known.iter().any(|language| language == "en") {
                known.push("en".to_owned());
            }
        }
    }
    assigned
}

type CreatedStudy = (Uuid, Vec<Uuid>, Vec<Uuid>);

/// One study with its sites and campaigns, one command after the other (they all append to
/// the study's stream).
async fn create_study(
    api: &Api,
    admin: &str,
    study: &crate::plan::StudyPlan,
    sponsors: &[Uuid],
) -> Result<CreatedStudy, SimError> {
    let body = json!({
        "sponsor_id": sponsors.get(study.sponsor % sponsors.len().max(1)),
        "title": study.title,
        "protocol_code": study.protocol_code,
        "target_randomized": study.target_randomized,
        "countries": study.countries,
        "languages": study.languages,
    });
    let created = admin_post(api, admin, "/v1/studies", &body, "create study").await?;
    let id = answer_id(&created, "study_id")?;
    let mut sites = Vec::with_capacity(study.sites.len());
    let path = format!("/v1/studies/{id}/sites");
    for site in &study.sites {
        let body = json!({
            "name": site.name,
            "country": site.country,
            "languages": site.languages,
            "monthly_target_randomized": site.monthly_target,
        });
        let added = admin_post(api, admin, &path, &body, "add site").await?;
        sites.push(answer_id(&added, "site_id")?);
    }
    let mut campaigns = Vec::with_capacity(study.campaigns.len());
    let path = format!("/v1/studies/{id}/campaigns");
    for campaign in &study.campaigns {
        let body = json!({"name": campaign.name, "channel": campaign.channel});
        let registered = admin_post(api, admin, &path, &body, "register campaign").await?;
        campaigns.push(answer_id(&registered, "campaign_id")?);
    }
    Ok((id, sites, campaigns))
}

async fn admin_post(
    api: &Api,
    admin: &str,
    path: &str,
    body: &Value,
    what: &str,
) -> Result<Value, SimError> {
    api.send(&Request {
        method: Method::POST,
        path,
        token: admin,
        body: Some(body),
        if_match: None,
        what,
    })
    .await
    .map(|answer| answer.body)
    .map_err(|error| SimError::Setup(format!("{what}: {error}")))
}

fn answer_id(body: &Value, field: &str) -> Result<Uuid, SimError> {
    body.get(field)
        .and_then(Value::as_str)
        .and_then(|text| Uuid::parse_str(text).ok())
        .ok_or_else(|| SimError::Setup(format!("the answer has no `{field}`")))
}

/// Records each campaign's spend for the referrals it brought since the last time: what the
/// sources dashboard turns into cost per referral and per randomized patient.
pub(crate) async fn record_spend(shared: &Shared) {
    let today = Utc::now().date_naive();
    for (plan, study) in shared.world.studies.iter().zip(&shared.studies) {
        let path = format!("/v1/studies/{}/campaigns", study.id);
        for ((campaign, id), counter) in plan
            .campaigns
            .iter()
            .zip(&study.campaigns)
            .zip(&study.referrals_since_spend)
        {
            let referrals = counter.swap(0, Ordering::Relaxed);
            if referrals == 0 {
                continue;
            }
            let amount = campaign
                .cost_per_referral_minor
                .saturating_mul(i64::try_from(referrals).unwrap_or(i64::MAX));
            let body = json!({
                "amount_minor": amount,
                "currency": plan.currency,
                "period_start": today,
                "period_end": today,
            });
            let spend_path = format!("{path}/{id}/spend");
            let recorded = shared
                .api
                .send(&Request {
                    method: Method::POST,
                    path: &spend_path,
                    token: &shared.admin_token,
                    body: Some(&body),
                    if_match: None,
                    what: "campaign spend",
                })
                .await;
            match recorded {
                Ok(_) | Err(RequestError::Cancelled) => {}
                Err(error) => shared.api.stats.failure(format!("campaign spend: {error}")),
            }
        }
    }
}

/// Spend every simulated week until `stop`.
pub(crate) async fn spend_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let week = Duration::from_secs_f64((7.0 * 86_400.0 / shared.time_scale).max(1.0));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(week) => record_spend(&shared).await,
        }
    }
}

/// Posts referrals as they arrive until a limit, the duration or `cancel`; then waits for the
/// open journeys up to the drain time. Journeys run as tasks of their own, at most
/// `max_open_journeys` at once, which is what paces an as-fast-as-possible run.
pub(crate) async fn schedule(
    shared: Arc<Shared>,
    desk: Arc<dyn AgentDesk>,
    settings: Arc<SimSettings>,
    open: Arc<Semaphore>,
    cancel: CancellationToken,
) -> StopReason {
    let started = Instant::now();
    let deadline = settings.duration.map(|duration| started + duration);
    let mut journeys = JoinSet::new();
    let mut index: u64 = 0;
    let reason = loop {
        while journeys.try_join_next().is_some() {}
        if settings.referrals.is_some_and(|limit| index >= limit) {
            break StopReason::ReferralLimit;
        }
        let plan = shared.world.referral(index);
        let due =
            started + Duration::from_secs_f64(plan.arrival.as_secs_f64() / settings.time_scale);
        let stop_at = deadline.unwrap_or(due + Duration::from_secs(3_600));
        if deadline.is_some_and(|deadline| due >= deadline) {
            tokio::select! {
                () = cancel.cancelled() => break StopReason::Shutdown,
                () = tokio::time::sleep_until(stop_at.into()) => break StopReason::Duration,
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break StopReason::Shutdown,
            () = tokio::time::sleep_until(due.into()) => {}
        }
        let permit = tokio::select! {
            () = cancel.cancelled() => break StopReason::Shutdown,
            () = tokio::time::sleep_until(stop_at.into()), if deadline.is_some() => break StopReason::Duration,
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break StopReason::Shutdown,
            },
        };
        let (shared, desk, cancel) = (shared.clone(), desk.clone(), cancel.clone());
        journeys.spawn(async move {
            journey(shared, desk, plan, cancel).await;
            drop(permit);
        });
        index += 1;
    };
    if reason != StopReason::Shutdown {
        let drained = async { while journeys.join_next().await.is_some() {} };
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(settings.drain_timeout) => {}
            () = drained => {}
        }
    }
    journeys.abort_all();
    while journeys.join_next().await.is_some() {}
    reason
}

/// What the report says about each study.
pub(crate) fn study_reports(shared: &Shared) -> Vec<StudyReport> {
    shared
        .world
        .studies
        .iter()
        .zip(&shared.studies)
        .map(|(plan, study)| StudyReport {
            study_id: study.id,
            title: plan.title.clone(),
            protocol_code: plan.protocol_code.clone(),
            sites: study.sites.len(),
            countries: plan.countries.len(),
            campaigns: study.campaigns.len(),
        })
        .collect()
}
