use funnel_eventlog::bench::{AppendBenchmark, run_append_benchmark};

use crate::support::provisioned_log;

/// Durable ingest throughput with and without group commit; run with
/// `cargo test -p funnel-eventlog --release -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn throughput_with_and_without_group_commit() {
    let nats = funnel_testkit::test_nats().await;
    let plan = AppendBenchmark {
        writers: 256,
        appends_per_writer: 40,
        ..AppendBenchmark::default()
    };
    for group_commit in [false, true] {
        let log = provisioned_log(&nats.url, |settings| {
            settings.group_commit.enabled = group_commit;
        })
        .await;
        let report = run_append_benchmark(&log, &plan).await;
        eprintln!(
            "group commit {group_commit}: {:.0} events/s ({} events, {} failed, {:?}) {:?}",
            report.events_per_second,
            report.events,
            report.failed_appends,
            report.elapsed,
            report.stats
        );
        assert_eq!(report.failed_appends, 0);
        log.shutdown().await;
    }
}
