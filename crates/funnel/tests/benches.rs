//! The `funnel bench` commands end to end with tiny sizes against the real NATS and PostgreSQL:
//! every figure is printed with its conditions, the targets are judged, and nothing failed.
//! Timed figures are never asserted.

use std::process::Stdio;

use funnel_testkit::{TestDb, TestNats, test_database, test_nats};
use tokio::process::Command;

/// `funnel bench <args>` against `nats` and `db`'s PostgreSQL server.
fn bench_command(args: &[&str], nats: &TestNats, db: &TestDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_funnel"));
    command
        .arg("bench")
        .args(args)
        .arg("--nats-url")
        .arg(&nats.url)
        .arg("--database-url")
        .arg(&db.settings.url)
        .env("RUST_LOG", "warn")
        .env_remove("FUNNEL_BENCH_FAST_NATS_URL")
        .stdin(Stdio::null());
    command
}

/// Runs `funnel bench <args>` against a test NATS and a test database; its standard output,
/// once it exited successfully.
async fn run_bench(args: &[&str]) -> String {
    let nats = test_nats().await;
    let db = test_database().await;
    let output = bench_command(args, &nats, &db)
        .output()
        .await
        .expect("run funnel bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "funnel bench {args:?}: status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

/// Asserts that every one of `lines` begins some line of `stdout`.
fn assert_lines(stdout: &str, lines: &[&str]) {
    for expected in lines {
        assert!(
            stdout
                .lines()
                .any(|line| line.trim_start().starts_with(expected)),
            "no line starting `{expected}` in:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn bench_ingest_prints_every_figure_without_failures() {
    let stdout = run_bench(&[
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
    .await;
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

#[tokio::test]
async fn bench_queue_hands_no_item_out_twice_and_prints_its_cost() {
    let stdout = run_bench(&["queue", "--items", "120", "--agents", "6", "--sites", "3"]).await;
    assert_lines(
        &stdout,
        &[
            "queue benchmark: 120 open first-contact items",
            "figure  claim + complete cycles:",
            "CPU per cycle:",
            "0 failed claims, 0 failed completions",
            "check   items claimed twice: 0 (overlapping holds by two agents: 0);",
            "target  >= 2,000 claims + completions per second",
        ],
    );
    // One completion row per item completed, none twice (an agent may stop early on a 204
    // while the last items are held by others).
    let check = stdout
        .lines()
        .find(|line| line.starts_with("check "))
        .expect("a check line");
    let counts: Vec<&str> = check
        .rsplit_once("work_completions: ")
        .expect("completion counts")
        .1
        .split_whitespace()
        .collect();
    assert_eq!(counts.len(), 5, "{check}");
    assert_eq!(counts[0], counts[3], "rows and items differ: {check}");
    assert!(counts[0].parse::<u32>().expect("a count") > 0, "{check}");
}

#[tokio::test]
async fn bench_projections_rebuilds_both_read_models_and_measures_lag() {
    let stdout = run_bench(&[
        "projections",
        "--events",
        "3000",
        "--studies",
        "3",
        "--sites-per-study",
        "2",
        "--rate",
        "500",
        "--lag-seconds",
        "1",
    ])
    .await;
    assert_lines(
        &stdout,
        &[
            "stream:",
            "reading the stream from position 0 (the projector's subscription, no PostgreSQL):",
            "reading the stream from position 0 (the projector's subscription, each event decoded",
            "sponsor_dashboard ",
            "work_queue ",
            "sponsor_dashboard + work_queue",
            "live: both projections caught up",
            "sponsor_dashboard  append-to-visible lag over",
            "work_queue         append-to-visible lag over",
        ],
    );
    assert_eq!(
        stdout.matches("CPU per event:").count(),
        5,
        "the two reads and the three rebuilds say what they cost:\n{stdout}"
    );
}

#[tokio::test]
async fn bench_dashboard_times_every_query_and_judges_the_target() {
    let stdout = run_bench(&[
        "dashboard",
        "--events",
        "3000",
        "--studies",
        "5",
        "--sites",
        "20",
        "--queries",
        "3",
    ])
    .await;
    assert_lines(
        &stdout,
        &[
            "dashboard benchmark:",
            "loaded ",
            "study_funnel ",
            "site_table ",
            "studies (all, as an admin)",
            "worst p99:",
        ],
    );
}

#[tokio::test]
async fn bench_memory_samples_both_processes_at_each_size() {
    let stdout = run_bench(&["memory", "--journeys", "100,200", "--settle", "100ms"]).await;
    assert_lines(
        &stdout,
        &[
            "memory benchmark:",
            "sample          0 journeys",
            "sample        100 journeys",
            "sample        200 journeys",
            "figure  per million journeys",
        ],
    );
}

/// One variable of a running process's environment.
fn environ_var(pid: u32, name: &str) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the service's environment");
    environ
        .split(|&byte| byte == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("{name} is not set for the service"))
}

/// Whether `pid` names a process that has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn an_interrupted_bench_stops_its_service_and_deletes_its_scratch() {
    use tokio::io::AsyncBufReadExt as _;

    let nats = test_nats().await;
    let db = test_database().await;
    let mut bench = bench_command(
        &["memory", "--journeys", "10000000", "--settle", "10ms"],
        &nats,
        &db,
    )
    .env("RUST_BACKTRACE", "0")
    .stdout(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .expect("run funnel bench memory");
    let bench_pid = bench.id().expect("running").to_string();
    let mut lines = tokio::io::BufReader::new(bench.stdout.take().expect("stdout")).lines();
    let mut service_pid = None;
    // The first sample is read once the service is up and the journeys begin.
    while let Some(line) = lines.next_line().await.expect("read the output") {
        if let Some(rest) = line.strip_prefix("memory benchmark: `funnel serve` (pid ") {
            let pid = rest.split(',').next().expect("a pid");
            service_pid = Some(pid.parse::<u32>().expect("a pid"));
        }
        if line.starts_with("sample          0 journeys") {
            break;
        }
    }
    let service_pid = service_pid.expect("the benchmark names its service");
    let database_url = environ_var(service_pid, "FUNNEL_DATABASE_URL");
    let database = database_url
        .rsplit('/')
        .next()
        .expect("a database name")
        .to_owned();
    let stream = environ_var(service_pid, "FUNNEL_STREAM");
    assert!(database.starts_with("funnel_bench_"), "{database}");

    let sent = Command::new("kill")
        .args(["-TERM", &bench_pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success());
    let status = bench.wait().await.expect("the benchmark exits");
    assert!(
        !status.success(),
        "an interrupted benchmark reports failure"
    );

    funnel_testkit::eventually(
        "the service to stop",
        std::time::Duration::from_secs(30),
        || async { (!alive(service_pid)).then_some(()) },
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&db.pool)
        .await
        .expect("list databases");
    assert_eq!(left, 0, "database {database} was left behind");
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.expect("connect"));
    assert!(
        js.get_stream(&stream).await.is_err(),
        "stream {stream} was left behind"
    );
}
