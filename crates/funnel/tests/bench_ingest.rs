//! `funnel bench ingest` end to end with tiny sizes: every figure is printed, in both modes for
//! PostgreSQL, the targets are judged, and nothing failed. Timed figures are never asserted.

use std::process::Stdio;

use funnel_testkit::{test_database, test_nats};
use tokio::process::Command;

#[tokio::test]
async fn bench_ingest_prints_every_figure_without_failures() {
    let nats = test_nats().await;
    let db = test_database().await;
    let output = Command::new(env!("CARGO_BIN_EXE_funnel"))
        .args([
            "bench",
            "ingest",
            "--events",
            "120",
            "--concurrency",
            "8",
            "--batch-size",
            "25",
            "--batch-concurrency",
            "2",
            "--raw-batch",
            "10",
            "--raw-batch-publishers",
            "2",
        ])
        .arg("--nats-url")
        .arg(&nats.url)
        .arg("--database-url")
        .arg(&db.settings.url)
        .env("RUST_LOG", "warn")
        .env_remove("FUNNEL_BENCH_FAST_NATS_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run funnel bench ingest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for figure in [
        "figure  raw JetStream publishes [durable]",
        "figure  raw JetStream atomic batches [durable]",
        "figure  event log API (group commit) [durable]",
        "figure  HTTP POST /v1/referrals [durable]",
        "figure  HTTP POST /v1/referrals/batch [durable]",
        "figure  HTTP GET /health (the floor) [durable]",
        "figure  PostgreSQL event store (peer) [durable]",
        "figure  PostgreSQL event store (peer) [fast]",
        "target  durable single-referral HTTP ingest",
        "bound   2x the peer is",
        "target  durable batch ingest",
    ] {
        assert!(stdout.contains(figure), "no `{figure}` in:\n{stdout}");
    }
    let figures: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("figure  "))
        .collect();
    assert_eq!(figures.len(), 8, "{stdout}");
    for line in figures {
        assert!(line.contains(", 0 failed;"), "a failure: {line}");
        // Every figure that stores something says what it cost, where /proc can be read.
        assert!(
            line.contains("HTTP GET /health") || line.contains("CPU per "),
            "no CPU cost: {line}"
        );
    }
}
