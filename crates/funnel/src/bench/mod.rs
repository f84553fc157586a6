//! `funnel bench append`: the event log's durable append rate, with and without group commit,
//! each run on a stream of its own that is deleted afterwards. `funnel bench ingest` is in
//! [`ingest`].

mod dashboard;
mod ingest;
mod memory;
mod procfs;
mod projections;
mod queue;
mod scratch;

pub(crate) use dashboard::{DashboardBenchArgs, dashboard};
pub(crate) use ingest::{IngestBenchArgs, ingest};
pub(crate) use memory::{MemoryBenchArgs, memory};
pub(crate) use projections::{ProjectionsBenchArgs, projections};
pub(crate) use queue::{QueueBenchArgs, queue};

use std::io::Write as _;

use clap::{Args, ValueEnum};
use funnel_eventlog::bench::{AppendBenchmark, BenchmarkReport, run_append_benchmark};
use funnel_eventlog::{EventLog, EventLogSettings};

#[derive(Debug, Args)]
pub(crate) struct AppendBenchArgs {
    /// NATS server URL (a secret: never printed).
    #[arg(
        long,
        env = "FUNNEL_NATS_URL",
        default_value = "nats://127.0.0.1:14222",
        hide_env_values = true
    )]
    nats_url: String,
    /// Concurrent writers, each appending to aggregates of its own with a concurrency check.
    #[arg(long, default_value_t = 256)]
    writers: usize,
    /// Appends per writer.
    #[arg(long, default_value_t = 40)]
    appends: usize,
    /// Events per append.
    #[arg(long, default_value_t = 1)]
    events_per_append: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 300)]
    payload: usize,
    /// Which append paths to measure.
    #[arg(long, value_enum, default_value_t = Paths::Both)]
    paths: Paths,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Paths {
    Both,
    GroupCommit,
    Single,
}

pub(crate) async fn append(args: AppendBenchArgs) -> anyhow::Result<()> {
    let plan = AppendBenchmark {
        writers: args.writers,
        appends_per_writer: args.appends,
        events_per_append: args.events_per_append,
        payload_bytes: args.payload,
    };
    let mut runs = Vec::new();
    if args.paths != Paths::Single {
        runs.push(true);
    }
    if args.paths != Paths::GroupCommit {
        runs.push(false);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "append benchmark: {} writers x {} appends x {} event(s) of {} bytes, every append with a \
         per-subject concurrency check; file storage, 1 replica; {} cores",
        plan.writers,
        plan.appends_per_writer,
        plan.events_per_append,
        plan.payload_bytes,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    )?;
    for group_commit in runs {
        let name = format!("BENCH_{}", uuid::Uuid::new_v4().simple());
        let mut settings =
            EventLogSettings::new(args.nats_url.clone(), name.clone(), name.to_lowercase());
        settings.group_commit.enabled = group_commit;
        let log = EventLog::connect(settings).await?;
        log.provision().await?;
        let report = run_append_benchmark(&log, &plan).await;
        log.shutdown().await;
        print_report(&mut out, &log, group_commit, &report)?;
        delete_stream(&args.nats_url, &name).await?;
    }
    writeln!(
        out,
        "durability is the server's: deploy/dev.sh and deploy/test.sh run nats-server with \
         sync_interval: always (every acknowledged event fsynced)"
    )?;
    Ok(())
}

fn print_report(
    out: &mut impl std::io::Write,
    log: &EventLog,
    group_commit: bool,
    report: &BenchmarkReport,
) -> std::io::Result<()> {
    let path = if group_commit && log.group_commit_active() {
        "group commit (atomic batches)"
    } else {
        "single publishes"
    };
    writeln!(
        out,
        "  {path:<30} {:>9.0} events/s  ({} events in {:.2} s, {} failed appends; nats-server {}; \
         batches {} holding {} appends, {} refused, {} appends alone)",
        report.events_per_second,
        report.events,
        report.elapsed.as_secs_f64(),
        report.failed_appends,
        log.capabilities().version,
        report.stats.batches_committed,
        report.stats.appends_in_batches,
        report.stats.batches_refused,
        report.stats.appends_committed_alone,
    )
}

/// Benchmark streams are scratch: deleted whole (the service's own stream denies deletes).
async fn delete_stream(url: &str, name: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    async_nats::jetstream::new(client)
        .delete_stream(name)
        .await
        .map_err(|err| anyhow::anyhow!("deleting benchmark stream {name}: {err}"))?;
    Ok(())
}
