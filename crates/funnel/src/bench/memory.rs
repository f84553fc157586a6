//! `funnel bench memory`: the resident memory of the service and of nats-server as journeys
//! accumulate, per million journeys.
//!
//! The service runs as `funnel serve`, a child process of this one (this same binary), with
//! its own stream and scratch database, projections running; nats-server is the one
//! `--nats-url` names, which must listen on this machine (its process is found by the port it
//! listens on; `deploy/bench.sh` starts a scratch one for the benchmark alone). Journeys are
//! appended straight through the service's command layer from this process: a referral and a
//! few steps each, in one atomic append per journey. At each size the benchmark waits until
//! every read model has caught up, then reads `VmRSS` and `VmHWM` from `/proc/<pid>/status` of
//! both processes and the stream's stored bytes. The stream and database are deleted
//! afterwards.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use clap::Args;
use funnel_api::commands::CommandService;
use funnel_domain::{ContactChannel, ContactOutcome, JourneyCommand};
use funnel_eventlog::{EventLog, EventLogSettings};
use sqlx::PgPool;

use super::procfs::{listening_pid, port_of};
use super::queue::{Servers, Study, append_journeys, postgres_conditions, wait_for_projections};
use super::scratch::{Scratch, until_interrupted};

#[derive(Debug, Args)]
pub(crate) struct MemoryBenchArgs {
    #[command(flatten)]
    servers: Servers,
    /// The sizes, in journeys, at which memory is read (besides 0), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100000,250000,500000")]
    journeys: Vec<usize>,
    /// Journey appends in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// How long to let the processes settle after the read models caught up, before reading.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

/// Resident memory of one process, in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Resident {
    rss: u64,
    hwm: u64,
}

impl Resident {
    fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Self {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }
}

/// One reading.
#[derive(Debug)]
struct Sample {
    journeys: usize,
    events: u64,
    stream_bytes: u64,
    service: Resident,
    nats: Resident,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(crate) async fn memory(args: MemoryBenchArgs) -> anyhow::Result<()> {
    let mut sizes = args.journeys.clone();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.retain(|&size| size > 0);
    anyhow::ensure!(
        !sizes.is_empty() && args.concurrency > 0,
        "give at least one positive size and a positive concurrency"
    );
    let mut scratch = Scratch::default();
    let result = until_interrupted(run(&args, &sizes, &mut scratch)).await;
    scratch.cleanup(&args.servers.database_url).await;
    result
}

async fn run(args: &MemoryBenchArgs, sizes: &[usize], scratch: &mut Scratch) -> anyhow::Result<()> {
    let nats_pid = listening_pid(port_of(&args.servers.nats_url)?)?;
    let (stream, prefix) = scratch.stream(&args.servers.nats_url, "MEMORY");
    let db = scratch.database(&args.servers.database_url).await?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut service = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .env("FUNNEL_NATS_URL", &args.servers.nats_url)
        .env("FUNNEL_DATABASE_URL", &db.url)
        .env("FUNNEL_HTTP_ADDR", http.to_string())
        .env("FUNNEL_STREAM", &stream)
        .env("FUNNEL_SUBJECT_PREFIX", &prefix)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting funnel serve")?;
    let service_pid = service.id().context("the service has exited")?;
    let outcome = async {
        wait_until_ready(&format!("http://{http}/ready")).await?;
        measure(args, sizes, &stream, &prefix, &db, service_pid, nats_pid).await
    }
    .await;
    // SIGTERM: the service drains and stops; a kill if it does not within the grace time.
    let _ = std::process::Command::new("kill")
        .arg(service_pid.to_string())
        .status();
    if tokio::time::timeout(Duration::from_secs(30), service.wait())
        .await
        .is_err()
    {
        service.start_kill()?;
        service.wait().await?;
    }
    outcome
}

async fn measure(
    args: &MemoryBenchArgs,
    sizes: &[usize],
    stream: &str,
    prefix: &str,
    db: &funnel_db::DbSettings,
    service_pid: u32,
    nats_pid: u32,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let pg_conditions = postgres_conditions(&args.servers.database_url).await?;
    let log = EventLog::connect(EventLogSettings::new(
        args.servers.nats_url.clone(),
        stream.to_owned(),
        prefix.to_owned(),
    ))
    .await?;
    let nats_version = log.capabilities().version.to_string();
    let commands = CommandService::new(log.clone());
    let pool = funnel_db::connect(db).await?;
    let js = async_nats::jetstream::new(async_nats::connect(args.servers.nats_url.as_str()).await?);
    let study = Arc::new(Study::create(&commands, 20).await?);
    writeln!(
        std::io::stdout().lock(),
        "memory benchmark: `funnel serve` (pid {service_pid}, this binary, projections running) \
         and nats-server {nats_version} (pid {nats_pid}, file storage, 1 replica) with \
         {pg_conditions} on this machine, {cores} cores; each journey is a referral, an \
         unanswered call, a reached call, a passed pre-screen and a referral to a site (5 \
         events, one atomic append), {} appends in flight",
        args.concurrency
    )?;
    let probe = Probe {
        log: &log,
        pool: &pool,
        js,
        stream,
        settle: args.settle,
        service_pid,
        nats_pid,
    };
    let mut samples = vec![probe.sample(0).await?];
    print_sample(&samples[0], None)?;
    let mut done = 0;
    for &size in sizes {
        let started = Instant::now();
        let journey = Arc::clone(&study);
        let failed = append_journeys(&commands, done..size, args.concurrency, move |n, id| {
            journey_steps(&journey, n, id)
        })
        .await;
        anyhow::ensure!(failed == 0, "{failed} journeys were not appended");
        let appended = started.elapsed();
        let rate = (size - done) as f64 / appended.as_secs_f64().max(f64::EPSILON);
        done = size;
        let reading = probe.sample(size).await?;
        print_sample(&reading, Some((rate, started.elapsed())))?;
        samples.push(reading);
    }
    log.shutdown().await;
    pool.close().await;
    print_slopes(&samples)?;
    Ok(())
}

/// A referral, then an unanswered call, a reached call, a passed pre-screen and a referral to
/// a site, an hour apart.
fn journey_steps(
    study: &Study,
    n: usize,
    id: funnel_domain::JourneyId,
) -> anyhow::Result<Vec<JourneyCommand>> {
    let at = Utc::now() - TimeDelta::hours(4);
    let hour = TimeDelta::hours(1);
    let call = |at, outcome| JourneyCommand::RecordContactAttempt {
        at,
        channel: ContactChannel::Phone,
        outcome,
        agent: None,
    };
    let mut referral = study.referral(n, id)?;
    if let JourneyCommand::ReceiveReferral { at: referred, .. } = &mut referral {
        *referred = at;
    }
    Ok(vec![
        referral,
        call(at + hour, ContactOutcome::NoAnswer),
        call(at + hour * 2, ContactOutcome::Reached),
        JourneyCommand::CompletePrescreen {
            at: at + hour * 3,
            passed: true,
            reasons: Vec::new(),
        },
        JourneyCommand::ReferToSite {
            at: at + hour * 4,
            site_id: study.sites[n % study.sites.len()],
        },
    ])
}

/// What a reading looks at.
struct Probe<'a> {
    log: &'a EventLog,
    pool: &'a PgPool,
    js: async_nats::jetstream::Context,
    stream: &'a str,
    settle: Duration,
    service_pid: u32,
    nats_pid: u32,
}

impl Probe<'_> {
    /// Waits until the read models have caught up with the stream and the processes settled,
    /// then reads both processes' memory and the stream's size.
    async fn sample(&self, journeys: usize) -> anyhow::Result<Sample> {
        let events = self.log.stream_head().await?;
        wait_for_projections(self.pool, events, Duration::from_secs(3600)).await?;
        tokio::time::sleep(self.settle).await;
        let stream_bytes = self
            .js
            .get_stream(self.stream)
            .await
            .map_err(|err| anyhow::anyhow!("reading the stream's state: {err}"))?
            .info()
            .await
            .map_err(|err| anyhow::anyhow!("reading the stream's state: {err}"))?
            .state
            .bytes;
        Ok(Sample {
            journeys,
            events,
            stream_bytes,
            service: Resident::read(self.service_pid)?,
            nats: Resident::read(self.nats_pid)?,
        })
    }
}

fn print_sample(sample: &Sample, appended: Option<(f64, Duration)>) -> std::io::Result<()> {
    let appended = appended.map_or_else(String::new, |(rate, took)| {
        format!(
            "; appended at {rate:.0} journeys/s, read models caught up and sampled {:.0} s \
             after the first append",
            took.as_secs_f64()
        )
    });
    writeln!(
        std::io::stdout().lock(),
        "sample  {:>9} journeys ({} events, stream {:.1} MB): service RSS {:.1} MB (peak {:.1}), \
         nats-server RSS {:.1} MB (peak {:.1}){appended}",
        sample.journeys,
        sample.events,
        mb(sample.stream_bytes),
        mb(sample.service.rss),
        mb(sample.service.hwm),
        mb(sample.nats.rss),
        mb(sample.nats.hwm),
    )
}

/// Least-squares slope of `y` over journeys, per million journeys.
fn slope(samples: &[Sample], y: impl Fn(&Sample) -> f64) -> f64 {
    let n = samples.len() as f64;
    let x = |sample: &Sample| sample.journeys as f64 / 1e6;
    let (mean_x, mean_y) = (
        samples.iter().map(x).sum::<f64>() / n,
        samples.iter().map(&y).sum::<f64>() / n,
    );
    let (mut covariance, mut variance) = (0.0, 0.0);
    for sample in samples {
        covariance += (x(sample) - mean_x) * (y(sample) - mean_y);
        variance += (x(sample) - mean_x).powi(2);
    }
    if variance > 0.0 {
        covariance / variance
    } else {
        0.0
    }
}

fn print_slopes(samples: &[Sample]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "figure  per million journeys (least-squares slope over the samples): service RSS \
         {:.0} MB, nats-server RSS {:.0} MB, stream {:.0} MB",
        slope(samples, |sample| mb(sample.service.rss)),
        slope(samples, |sample| mb(sample.nats.rss)),
        slope(samples, |sample| mb(sample.stream_bytes)),
    )?;
    writeln!(
        out,
        "figure  peaks per million journeys (slope of VmHWM): service {:.0} MB, nats-server \
         {:.0} MB",
        slope(samples, |sample| mb(sample.service.hwm)),
        slope(samples, |sample| mb(sample.nats.hwm)),
    )?;
    // Without the empty start, whose first allocations (pools, caches, buffers) are not per
    // journey.
    if samples.len() > 2 {
        let grown = &samples[1..];
        writeln!(
            out,
            "figure  per million journeys from {} journeys on (slope without the empty start): \
             service RSS {:.0} MB, nats-server RSS {:.0} MB",
            grown[0].journeys,
            slope(grown, |sample| mb(sample.service.rss)),
            slope(grown, |sample| mb(sample.nats.rss)),
        )?;
    }
    Ok(())
}

/// Polls the service's readiness until it answers 200 (migrations applied, stream provisioned).
async fn wait_until_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status() == reqwest::StatusCode::OK
        {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the service was not ready within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
