//! Command-line configuration (flags and `FUNNEL_*` environment variables) and the commands.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use funnel_api::ServiceSettings;
use funnel_api::auth::{NewToken, Role, TokenStore};
use funnel_db::DbSettings;
use funnel_domain::{AgentId, CampaignId, Language, SiteId, SponsorId, StudyId};
use funnel_eventlog::{EventLog, EventLogSettings};

#[derive(Debug, Parser)]
#[command(
    name = "funnel",
    version,
    about = "Event-sourced patient-recruitment funnel for clinical trials"
)]
pub(crate) struct Cli {
    /// Log output: human-readable text or JSON lines.
    #[arg(long, env = "FUNNEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (applies migrations and provisions the stream first).
    Serve(ServeArgs),
    /// Create the database if needed and apply the embedded migrations.
    Migrate(DbArgs),
    /// Manage the JetStream stream.
    Stream {
        #[command(subcommand)]
        command: StreamCommand,
    },
    /// Measure the service's building blocks on this machine and print the figures.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Inspect and rebuild the read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Simulate recruitment against a running service: studies, sites, campaigns, referrals
    /// arriving over time, agents working the queues. Deterministic by seed; also the load
    /// generator.
    Simulate(Box<crate::simulate::SimulateArgs>),
    /// Manage API tokens (shown once when created, stored hashed).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The event log's durable append rate, with and without group commit.
    Append(crate::bench::AppendBenchArgs),
    /// The ingest figures: raw JetStream (the limit), the event log, HTTP one referral per
    /// request and in batches, and a plain PostgreSQL event store (the peer), durable and fast.
    Ingest(Box<crate::bench::IngestBenchArgs>),
    /// Work-queue claims and completions per second with many agents at once, checked for
    /// double claims.
    Queue(Box<crate::bench::QueueBenchArgs>),
    /// Read-model rebuild throughput from the stream, and append-to-visible lag under a
    /// sustained append rate.
    Projections(Box<crate::bench::ProjectionsBenchArgs>),
    /// Sponsor dashboard query latency over a large read model (loaded without NATS).
    Dashboard(Box<crate::bench::DashboardBenchArgs>),
    /// Resident memory of the service and of nats-server per million journeys.
    Memory(Box<crate::bench::MemoryBenchArgs>),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// Each read model's generations: state, logic version, position and lag.
    Status,
    /// Build a new generation of a read model from position 1 beside the live one, and switch
    /// readers over to it once it has caught up. Queries keep answering throughout.
    Rebuild {
        /// The read model, e.g. `sponsor_dashboard`.
        name: String,
        /// Start the rebuild and return: a running service builds it.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (the only time it is shown).
    Create(CreateTokenArgs),
    /// Revoke a token at once.
    Revoke {
        /// The token's id (as listed).
        id: uuid::Uuid,
    },
    /// List tokens with their role and scope (never their secrets).
    List,
}

#[derive(Debug, Args)]
struct CreateTokenArgs {
    /// admin, campaign, agent, site or sponsor.
    #[arg(long)]
    role: Role,
    /// A name that says whose token it is.
    #[arg(long, default_value = "")]
    name: String,
    /// The sponsor whose studies a sponsor token reads.
    #[arg(long)]
    sponsor: Option<SponsorId>,
    /// The campaign a campaign token posts referrals for.
    #[arg(long)]
    campaign: Option<CampaignId>,
    /// The agent an agent token acts as.
    #[arg(long)]
    agent: Option<AgentId>,
    /// The site a site token belongs to.
    #[arg(long)]
    site: Option<SiteId>,
    /// A study the token may work on (repeat for several).
    #[arg(long = "study")]
    studies: Vec<StudyId>,
    /// A language an agent calls in (repeat for several), e.g. `es`, `pt-BR`.
    #[arg(long = "language", value_parser = parse_language)]
    languages: Vec<Language>,
}

fn parse_language(text: &str) -> Result<Language, String> {
    Language::parse(text).map_err(|err| err.to_string())
}

#[derive(Debug, Subcommand)]
enum StreamCommand {
    /// Create the stream, or bring an existing one to the wanted configuration (idempotent).
    Provision(NatsArgs),
    /// Print the stream's configuration and state.
    Inspect(NatsArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "FUNNEL_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Skip applying migrations and provisioning the stream at start-up.
    #[arg(long, env = "FUNNEL_SKIP_SETUP")]
    skip_setup: bool,
    /// Most events a projector applies in one PostgreSQL transaction: larger batches rebuild
    /// faster, smaller ones hold less in memory and commit more often.
    #[arg(long, env = "FUNNEL_PROJECTION_BATCH_EVENTS", default_value_t = funnel_projections::DEFAULT_MAX_BATCH_EVENTS)]
    projection_batch_events: std::num::NonZeroUsize,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Args)]
pub(crate) struct DbArgs {
    /// PostgreSQL URL (a secret: never logged).
    #[arg(
        long,
        env = "FUNNEL_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/funnel",
        hide_env_values = true
    )]
    database_url: String,
    /// Largest number of pooled PostgreSQL connections.
    #[arg(long, env = "FUNNEL_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    database_max_connections: u32,
}

impl std::fmt::Debug for DbArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbArgs")
            .field("database_url", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl DbArgs {
    pub(crate) fn settings(&self) -> DbSettings {
        let mut settings = DbSettings::new(self.database_url.clone());
        settings.max_connections = self.database_max_connections;
        settings
    }
}

#[derive(Args)]
struct NatsArgs {
    /// NATS server URL(s), comma-separated (may hold credentials: never logged).
    #[arg(
        long,
        env = "FUNNEL_NATS_URL",
        default_value = "nats://127.0.0.1:14222",
        hide_env_values = true
    )]
    nats_url: String,
    /// JetStream stream holding every event.
    #[arg(long, env = "FUNNEL_STREAM", default_value = "FUNNEL")]
    stream: String,
    /// Subjects are `<prefix>.<kind>.<id>`.
    #[arg(long, env = "FUNNEL_SUBJECT_PREFIX", default_value = "funnel")]
    subject_prefix: String,
    /// Stream replicas: 1 on a single node, 3 in a cluster.
    #[arg(long, env = "FUNNEL_STREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// How long the server remembers event ids to drop duplicate publishes.
    #[arg(long, env = "FUNNEL_DUPLICATE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    duplicate_window: Duration,
    /// Gather concurrent appends into atomic batches (needs nats-server 2.12+).
    #[arg(long, env = "FUNNEL_GROUP_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    group_commit: bool,
}

impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsArgs")
            .field("nats_url", &"<redacted>")
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsArgs {
    fn settings(&self) -> EventLogSettings {
        let mut settings = EventLogSettings::new(
            self.nats_url.clone(),
            self.stream.clone(),
            self.subject_prefix.clone(),
        );
        settings.replicas = self.replicas;
        settings.duplicate_window = self.duplicate_window;
        settings.group_commit.enabled = self.group_commit;
        settings
    }
}

pub(crate) fn init_tracing(format: &LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let settings = args.settings();
            funnel_db::ensure_database(&settings).await?;
            let pool = funnel_db::connect(&settings).await?;
            funnel_db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token { command, db } => token(command, &db).await,
        Command::Simulate(args) => crate::simulate::run(*args).await,
        Command::Projections { command, db, nats } => {
            crate::projections::run(command, db.settings(), nats.settings()).await
        }
        Command::Bench {
            command: BenchCommand::Append(args),
        } => crate::bench::append(args).await,
        Command::Bench {
            command: BenchCommand::Ingest(args),
        } => crate::bench::ingest(*args).await,
        Command::Bench {
            command: BenchCommand::Queue(args),
        } => crate::bench::queue(*args).await,
        Command::Bench {
            command: BenchCommand::Projections(args),
        } => crate::bench::projections(*args).await,
        Command::Bench {
            command: BenchCommand::Dashboard(args),
        } => crate::bench::dashboard(*args).await,
        Command::Bench {
            command: BenchCommand::Memory(args),
        } => crate::bench::memory(*args).await,
        Command::Stream {
            command: StreamCommand::Provision(args),
        } => {
            let log = EventLog::connect(args.settings()).await?;
            let report = log.provision().await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "stream {}: {:?}", report.stream, report.action)?;
            for change in &report.changes {
                writeln!(out, "  {change}")?;
            }
            Ok(())
        }
        Command::Stream {
            command: StreamCommand::Inspect(args),
        } => {
            let log = EventLog::connect(args.settings()).await?;
            let summary = log.inspect().await?;
            write!(std::io::stdout().lock(), "{summary}")?;
            Ok(())
        }
    }
}

async fn token(command: TokenCommand, db: &DbArgs) -> anyhow::Result<()> {
    let settings = db.settings();
    funnel_db::ensure_database(&settings).await?;
    let pool = funnel_db::connect(&settings).await?;
    funnel_db::migrate(&pool).await?;
    let tokens = TokenStore::new(pool);
    let mut out = std::io::stdout().lock();
    match command {
        TokenCommand::Create(args) => {
            let (info, token) = tokens
                .create(&NewToken {
                    name: args.name,
                    role: Some(args.role),
                    sponsor_id: args.sponsor,
                    campaign_id: args.campaign,
                    agent_id: args.agent,
                    site_id: args.site,
                    study_ids: args.studies,
                    languages: args.languages,
                })
                .await?;
            writeln!(out, "{token}")?;
            tracing::info!(id = %info.id, role = %info.principal.role, "token created; it is shown only once");
        }
        TokenCommand::Revoke { id } => {
            if tokens.revoke(id).await? {
                writeln!(out, "revoked {id}")?;
            } else {
                anyhow::bail!("no active token with id {id}");
            }
        }
        TokenCommand::List => {
            for info in tokens.list().await? {
                let state = info
                    .revoked_at
                    .map_or_else(|| "active".to_owned(), |at| format!("revoked {at}"));
                writeln!(
                    out,
                    "{}  {:<8}  {:<24}  {}  {}",
                    info.id,
                    info.principal.role,
                    info.name,
                    state,
                    serde_json::to_string(&info.principal)?
                )?;
            }
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings =
        ServiceSettings::new(args.http_addr, args.db.settings(), args.nats.settings());
    settings.setup = !args.skip_setup;
    settings.projector.max_batch_events = args.projection_batch_events.get();
    let registry = prometheus::Registry::new();
    funnel_api::run(settings, registry, shutdown_signal())
        .await
        .context("the service stopped with an error")
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
