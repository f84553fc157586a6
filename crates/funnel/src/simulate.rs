//! `funnel simulate`: runs the recruitment simulator against a running service, creating the
//! tokens it needs in the database (tokens are never made over the API) and revoking them when
//! it ends.

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use funnel_api::auth::{NewToken, Role, TokenStore};
use funnel_domain::{AgentId, CampaignId, Language, SiteId, StudyId};
use funnel_sim::{
    BoxError, SimProgress, SimReport, SimSettings, TokenIssuer, TokenRequest, TokenRole,
};
use tokio_util::sync::CancellationToken;

use crate::cli::DbArgs;

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// The running service.
    #[arg(long, env = "FUNNEL_SIM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Seeds the plan: the same seed gives the same studies, sites and journeys.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Referrals per second on average, or `max` for as fast as the service takes them.
    #[arg(long, default_value = "25", value_parser = parse_rate)]
    rate: Rate,
    /// Studies to simulate.
    #[arg(long, default_value_t = 3)]
    studies: usize,
    /// Sites per study, as `MIN-MAX` (or one number).
    #[arg(long, default_value = "100-200", value_parser = parse_range)]
    sites: (usize, usize),
    /// Stop posting referrals after this long (e.g. `90s`, `10m`); runs until Ctrl-C otherwise.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop posting referrals after this many.
    #[arg(long)]
    referrals: Option<u64>,
    /// Simulated seconds per real second (43200: a simulated day every two seconds).
    #[arg(long, default_value_t = funnel_sim::DEFAULT_TIME_SCALE)]
    time_scale: f64,
    /// Odds multiplier of each forward step of the funnel: 1 gives the brief's realistic rates
    /// (0.4–2% of referrals randomized), the default about 10%, so a short demo shows every stage.
    #[arg(long, default_value_t = funnel_sim::DEMO_BOOST)]
    boost: f64,
    /// HTTP requests in flight at most.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Simulated agents working the queues.
    #[arg(long, default_value_t = 12)]
    agents: usize,
    /// Record every call directly instead of having agents claim first calls from the queues.
    #[arg(long)]
    no_queues: bool,
    /// After the last referral, how long to wait for open journeys to finish.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// How often progress is printed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    progress_every: Duration,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Rate {
    PerSecond(f64),
    Max,
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Rate::PerSecond(rate)),
        _ => Err(format!("`{text}` is neither a positive number nor `max`")),
    }
}

fn parse_range(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{text}` is not a range like 100-200");
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: usize = low.trim().parse().map_err(|_| bad())?;
    let high: usize = high.trim().parse().map_err(|_| bad())?;
    if low == 0 || low > high {
        return Err(bad());
    }
    Ok((low, high))
}

/// Creates tokens in the database and remembers them, to revoke them when the run ends.
struct StoreIssuer {
    store: TokenStore,
    created: Mutex<Vec<uuid::Uuid>>,
}

impl StoreIssuer {
    async fn create(&self, token: NewToken) -> Result<String, BoxError> {
        let (info, secret) = self.store.create(&token).await?;
        self.created
            .lock()
            .map_err(|_| "the token list lock is poisoned")?
            .push(info.id);
        Ok(secret)
    }

    async fn revoke_all(&self) -> usize {
        let ids = self
            .created
            .lock()
            .map(|mut ids| std::mem::take(&mut *ids))
            .unwrap_or_default();
        let mut revoked = 0;
        for id in ids {
            match self.store.revoke(id).await {
                Ok(_) => revoked += 1,
                Err(err) => tracing::warn!(%id, error = %err, "cannot revoke a simulator token"),
            }
        }
        revoked
    }
}

impl TokenIssuer for StoreIssuer {
    fn issue<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send + 'a>> {
        Box::pin(async move {
            let languages = request
                .languages
                .iter()
                .map(|language| Language::parse(language))
                .collect::<Result<Vec<_>, _>>()?;
            self.create(NewToken {
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
                languages,
            })
            .await
        })
    }
}

pub(crate) async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let settings = args.db.settings();
    funnel_db::ensure_database(&settings).await?;
    let pool = funnel_db::connect(&settings).await?;
    funnel_db::migrate(&pool).await?;
    let issuer = StoreIssuer {
        store: TokenStore::new(pool),
        created: Mutex::new(Vec::new()),
    };
    let admin = issuer
        .create(NewToken {
            name: "simulator admin".to_owned(),
            role: Some(Role::Admin),
            ..NewToken::default()
        })
        .await
        .map_err(|err| anyhow::anyhow!("cannot create the simulator's admin token: {err}"))?;

    let mut sim = SimSettings::new(args.url.clone(), admin);
    sim.seed = args.seed;
    sim.studies = args.studies;
    sim.sites_per_study = args.sites;
    sim.rate = match args.rate {
        Rate::PerSecond(rate) => Some(rate),
        Rate::Max => None,
    };
    sim.duration = args.duration;
    sim.referrals = args.referrals;
    sim.time_scale = args.time_scale;
    sim.boost = args.boost;
    sim.concurrency = args.concurrency;
    sim.agents = args.agents;
    sim.use_queues = !args.no_queues;
    sim.drain_timeout = args.drain;
    sim.progress_interval = args.progress_every;

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        crate::cli::shutdown_signal().await;
        on_signal.cancel();
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "simulating {} studies against {} (seed {}, {}, a simulated day every {:.1} s, boost {}); \
             Ctrl-C stops",
            sim.studies,
            sim.base_url,
            sim.seed,
            sim.rate.map_or_else(
                || "as fast as possible".to_owned(),
                |rate| format!("{rate} referrals/s")
            ),
            86_400.0 / sim.time_scale,
            sim.boost,
        )?;
    }
    let result = funnel_sim::run(sim, &issuer, shutdown, print_progress).await;
    let revoked = issuer.revoke_all().await;
    let report = result.context("the simulation could not run")?;
    print_summary(&report, &args.url, revoked)?;
    Ok(())
}

fn print_progress(progress: &SimProgress) {
    let mut out = std::io::stdout().lock();
    // Progress is best effort: a closed stdout must not stop the run.
    let _ = writeln!(
        out,
        "{:>7.1}s  referrals {:>7} ({:>6.1}/s)  steps {:>8}  by agents from queues {:>6} (direct after waiting {})  \
         open journeys {:>6}  requests {:>6.1}/s  failed {}  throttled {}",
        progress.elapsed.as_secs_f64(),
        progress.referrals,
        progress.referral_rate(),
        progress.steps,
        progress.queue_completions,
        progress.queue_fallbacks,
        progress.open_journeys,
        progress.request_rate(),
        progress.failed,
        progress.throttled,
    );
}

fn print_summary(report: &SimReport, url: &str, revoked: usize) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let p = &report.progress;
    writeln!(
        out,
        "stopped ({:?}) after {:.1} s: {} referrals ({} duplicates), {} steps, {} journeys performed, \
         {} abandoned, {} failed requests, {} throttled, {} retried; {} simulator tokens revoked",
        report.stopped,
        p.elapsed.as_secs_f64(),
        p.referrals,
        p.duplicates,
        p.steps,
        p.journeys_done,
        p.journeys_failed,
        p.failed,
        p.throttled,
        p.retried,
        revoked,
    )?;
    for study in &report.studies {
        writeln!(
            out,
            "  {} {} ({} sites in {} countries): {url}/v1/dashboards/studies/{}/funnel",
            study.protocol_code, study.title, study.sites, study.countries, study.study_id
        )?;
    }
    for failure in &report.failures {
        writeln!(out, "  failed: {failure}")?;
    }
    Ok(())
}
