//! A deterministic recruitment simulator that drives the service through its public HTTP API,
//! and so doubles as its load generator (`funnel simulate`).
//!
//! Two parts, kept apart:
//!
//! * [`plan`] is pure and seeded: the studies (100–200 sites across 10–26 countries and their
//!   languages, monthly targets), the campaigns per channel with their cost per referral, and
//!   for each referral what happens to it and when (simulated time), from the brief's
//!   realistic rates, times an optional demo boost. The same seed gives the same plan.
//! * the driver performs a plan over HTTP: it creates the studies, sites and campaigns with
//!   the admin token, gets campaign, site and agent tokens from a [`TokenIssuer`] (tokens are
//!   made outside the API), posts referrals when they arrive and each step when it falls due,
//!   with the token of whoever records it. Simulated agents work the `first_contact` queue
//!   where the service has one.
//!
//! Time is compressed by [`SimSettings::time_scale`]: the service stamps each referral with
//! its clock, and the steps follow it at `simulated delay / time_scale`, with their `at`.

mod catalog;
mod client;
mod desk;
mod driver;
pub mod plan;
mod rng;
mod stats;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::Api;
use crate::desk::{AgentDesk, DirectDesk, QueueDesk};
use crate::plan::{PlanSettings, World};
pub use crate::stats::SimProgress;

/// A simulated day every two real seconds: a month of recruitment in a minute.
pub const DEFAULT_TIME_SCALE: f64 = 43_200.0;
/// The demo's odds multiplier of every forward step of the funnel (see [`plan`]): about one
/// referral in ten is randomized instead of one in a hundred, so a one-minute demo shows every
/// stage. 1.0 gives the brief's realistic rates.
pub const DEMO_BOOST: f64 = 2.5;

/// How a run goes. `Debug` leaves the admin token out.
#[derive(Clone)]
pub struct SimSettings {
    /// The service, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// An admin token: creates the studies, sites and campaigns, records spend.
    pub admin_token: String,
    /// Seeds the plan: the same seed, the same studies and journeys (the ids differ per run).
    pub seed: u64,
    pub studies: usize,
    /// Sites per study, inclusive range.
    pub sites_per_study: (usize, usize),
    /// Countries per study, inclusive range (capped by the sites and the 26 known countries).
    pub countries_per_study: (usize, usize),
    /// Referrals per real second (on average: weekday daytimes are busier); `None` posts them
    /// as fast as the service takes them.
    pub rate: Option<f64>,
    /// Stop posting referrals after this long (then drain).
    pub duration: Option<Duration>,
    /// Stop posting referrals after this many (then drain).
    pub referrals: Option<u64>,
    /// HTTP requests in flight at most.
    pub concurrency: usize,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// Odds multiplier of each forward step; 1.0 is realistic, see [`DEMO_BOOST`].
    pub boost: f64,
    /// Simulated agents (each with a token of its own).
    pub agents: usize,
    /// Let agents work the first calls through the work queues (when the service has them).
    pub use_queues: bool,
    /// Journeys in progress at most; an as-fast-as-possible run is paced by it.
    pub max_open_journeys: usize,
    /// After the last referral, how long to wait for open journeys to finish.
    pub drain_timeout: Duration,
    /// How often `run` reports progress.
    pub progress_interval: Duration,
}

impl SimSettings {
    /// The defaults of `funnel simulate`: three studies at 25 referrals a second, until stopped.
    #[must_use]
    pub fn new(base_url: impl Into<String>, admin_token: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            admin_token: admin_token.into(),
            seed: 1,
            studies: 3,
            sites_per_study: (100, 200),
            countries_per_study: (10, 26),
            rate: Some(25.0),
            duration: None,
            referrals: None,
            concurrency: 32,
            time_scale: DEFAULT_TIME_SCALE,
            boost: DEMO_BOOST,
            agents: 12,
            use_queues: true,
            max_open_journeys: 20_000,
            drain_timeout: Duration::from_secs(120),
            progress_interval: Duration::from_secs(5),
        }
    }

    /// The plan these settings give.
    #[must_use]
    pub fn plan_settings(&self) -> PlanSettings {
        PlanSettings {
            seed: self.seed,
            studies: self.studies,
            sites_per_study: self.sites_per_study,
            countries_per_study: self.countries_per_study,
            referrals_per_day: self.rate.map(|rate| rate * 86_400.0 / self.time_scale),
            boost: self.boost,
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        let invalid = |what: &str| Err(SimError::Settings(what.to_owned()));
        if self.studies == 0 {
            return invalid("at least one study");
        }
        if self.sites_per_study.0 == 0 || self.sites_per_study.0 > self.sites_per_study.1 {
            return invalid("sites per study: a range of at least one site");
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return invalid("the time scale must be positive");
        }
        if self
            .rate
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return invalid("the rate must be positive");
        }
        if !(self.boost.is_finite() && self.boost > 0.0) {
            return invalid("the boost must be positive");
        }
        if self.concurrency == 0 || self.max_open_journeys == 0 {
            return invalid("concurrency and open journeys must be at least 1");
        }
        Ok(())
    }
}

impl fmt::Debug for SimSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSettings")
            .field("base_url", &self.base_url)
            .field("admin_token", &"<redacted>")
            .field("seed", &self.seed)
            .field("studies", &self.studies)
            .field("sites_per_study", &self.sites_per_study)
            .field("rate", &self.rate)
            .field("duration", &self.duration)
            .field("referrals", &self.referrals)
            .field("concurrency", &self.concurrency)
            .field("time_scale", &self.time_scale)
            .field("boost", &self.boost)
            .field("agents", &self.agents)
            .field("use_queues", &self.use_queues)
            .finish_non_exhaustive()
    }
}

/// The roles the simulator needs tokens for (admin comes with the settings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenRole {
    #[default]
    Campaign,
    Agent,
    Site,
}

/// A token to create, in the terms of `funnel token create`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub role: TokenRole,
    pub name: String,
    pub campaign_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub site_id: Option<Uuid>,
    pub study_ids: Vec<Uuid>,
    /// BCP 47 tags, for agents.
    pub languages: Vec<String>,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Makes API tokens. The API cannot: tokens are made next to the database (`TokenStore`).
pub trait TokenIssuer: Send + Sync {
    /// The token's secret (`fnl_...`).
    fn issue<'a>(&'a self, request: &'a TokenRequest) -> BoxFuture<'a, Result<String, BoxError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation settings: {0}")]
    Settings(String),
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("setting up the simulated studies failed: {0}")]
    Setup(String),
    #[error("creating a token failed")]
    Token(#[source] BoxError),
    #[error("the referral scheduler stopped unexpectedly")]
    Scheduler(#[source] tokio::task::JoinError),
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    ReferralLimit,
    Duration,
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StudyReport {
    pub study_id: Uuid,
    pub title: String,
    pub protocol_code: String,
    pub sites: usize,
    pub countries: usize,
    pub campaigns: usize,
}

/// How a run went.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub studies: Vec<StudyReport>,
    pub progress: SimProgress,
    pub stopped: StopReason,
    /// The first failed requests: what and why (never personal data).
    pub failures: Vec<String>,
}

/// Runs a simulation until a limit, the duration or `shutdown`, reporting progress every
/// `progress_interval` to `on_progress`.
///
/// # Errors
/// Invalid settings, or a failed setup (the service unreachable, a token refused). Failed
/// requests during the run are counted in the report, not returned.
pub async fn run(
    settings: SimSettings,
    tokens: &dyn TokenIssuer,
    shutdown: CancellationToken,
    mut on_progress: impl FnMut(&SimProgress) + Send,
) -> Result<SimReport, SimError> {
    settings.validate()?;
    let started = Instant::now();
    let stats = Arc::new(stats::Stats::default());
    // Requests stop for good only after the agents have handed back their items.
    let requests_stop = CancellationToken::new();
    let api = Api::new(
        &settings.base_url,
        settings.concurrency,
        stats.clone(),
        requests_stop.clone(),
    )
    .map_err(SimError::Client)?;
    let world = World::new(settings.plan_settings());
    let shared = tokio::select! {
        shared = driver::setup(&api, world, &settings, tokens) => Arc::new(shared?),
        () = shutdown.cancelled() => {
            return Err(SimError::Setup("stopped before the setup finished".to_owned()));
        }
    };
    tracing::info!(
        studies = shared.studies.len(),
        sites = shared.studies.iter().map(|s| s.sites.len()).sum::<usize>(),
        seed = settings.seed,
        "simulated studies set up"
    );

    let agents_stop = CancellationToken::new();
    let mut agents = JoinSet::new();
    let desk: Arc<dyn AgentDesk> = if settings.use_queues {
        // Wait for an agent about a simulated day, and never less than the read model's lag.
        let patience = Duration::from_secs_f64((86_400.0 / settings.time_scale).max(2.0));
        let queue = Arc::new(QueueDesk::new(patience));
        for token in &shared.agents {
            agents.spawn(desk::agent_worker(
                shared.clone(),
                queue.clone(),
                token.clone(),
                agents_stop.clone(),
            ));
        }
        queue
    } else {
        Arc::new(DirectDesk)
    };
    let spend = tokio::spawn(driver::spend_loop(shared.clone(), agents_stop.clone()));

    let settings = Arc::new(settings);
    let open = Arc::new(Semaphore::new(settings.max_open_journeys));
    let mut scheduler = tokio::spawn(driver::schedule(
        shared.clone(),
        desk.clone(),
        settings.clone(),
        open.clone(),
        shutdown.clone(),
    ));
    let open_now = || {
        let free = open.available_permits();
        u64::try_from(settings.max_open_journeys.saturating_sub(free)).unwrap_or(0)
    };
    let mut ticker = tokio::time::interval(settings.progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let stopped = loop {
        tokio::select! {
            stopped = &mut scheduler => break stopped.map_err(SimError::Scheduler)?,
            _ = ticker.tick() => on_progress(&stats.progress(started.elapsed(), open_now())),
        }
    };
    agents_stop.cancel();
    while agents.join_next().await.is_some() {}
    let _ = spend.await;
    if stopped != StopReason::Shutdown {
        driver::record_spend(&shared).await;
    }
    requests_stop.cancel();
    let progress = stats.progress(started.elapsed(), open_now());
    on_progress(&progress);
    Ok(SimReport {
        studies: driver::study_reports(&shared),
        progress,
        stopped,
        failures: stats.failures(),
    })
}
