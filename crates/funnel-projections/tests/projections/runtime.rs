use std::time::Duration;

use chrono::Utc;
use funnel_domain::JourneyEvent;
use funnel_eventlog::{EventLog, NewEvent};
use funnel_projections::{ProjectedEvent, Projection, ProjectionError, Projector, StudyFunnel};
use funnel_testkit::{NatsServer, PostgresServer, TestNats, eventually, test_database, test_nats};
use prometheus::Registry;
use uuid::Uuid;

use crate::support::{
    WAIT, append_all, append_retrying, checkpoint, event_count, fast_settings, fold_counts,
    generate, metric, provisioned_log, read_model, start, wait_caught_up,
};

async fn setup() -> (TestNats, EventLog, funnel_testkit::TestDb) {
    let nats = test_nats().await;
    let log = provisioned_log(&nats.url).await;
    let db = test_database().await;
    (nats, log, db)
}

#[tokio::test]
async fn the_read_model_equals_a_fold_of_the_same_events() {
    let (_nats, log, db) = setup().await;
    let histories = generate(7, 200);
    let (stages, referrals) = fold_counts(&histories);
    // The generated journeys cover the funnel: many stages, sites, duplicates, erasures.
    let stage_names: std::collections::BTreeSet<_> =
        stages.keys().map(|(_, _, stage)| stage.clone()).collect();
    assert!(stage_names.len() >= 8, "{stage_names:?}");
    assert!(stages.keys().any(|(_, site, _)| !site.is_nil()));
    assert!(referrals.len() >= 6);
    let all_events = || histories.iter().flat_map(|history| &history.events);
    assert!(all_events().any(|event| matches!(event, JourneyEvent::DuplicateLinked(_))));
    assert!(all_events().any(|event| matches!(event, JourneyEvent::PersonalDataErased(_))));
    assert!(all_events().any(|event| matches!(event, JourneyEvent::Reallocated(_))));
    let running = start(&log, &db.pool);
    append_all(&log, &histories, 3).await;
    let head = wait_caught_up(&log, &db.pool).await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));

    // Metrics and status agree with the stream.
    assert_eq!(head as usize, event_count(&histories));
    let registry = running.registry.clone();
    eventually("lag metrics to reach zero", WAIT, || async {
        (metric(&registry, "funnel_projection_lag_events") == 0.0
            && metric(&registry, "funnel_projection_position") == head as f64)
            .then_some(())
    })
    .await;
    assert_eq!(
        metric(&registry, "funnel_projection_events_applied_total"),
        head as f64
    );
    assert_eq!(metric(&registry, "funnel_projection_failed"), 0.0);
    assert_eq!(metric(&registry, "funnel_projection_lag_seconds"), 0.0);
    let status = funnel_projections::status(&db.pool, Some(&log))
        .await
        .expect("status");
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].name, "study_funnel");
    assert_eq!(status[0].version, 1);
    assert_eq!(status[0].position, head);
    assert_eq!(status[0].status, "running");
    assert_eq!(status[0].lag_events, Some(0));
    assert!(status[0].active, "the running instance holds the lock");
    running.stop().await;
}

#[tokio::test]
async fn other_seeds_fold_the_same() {
    let (_nats, log, db) = setup().await;
    let mut all = Vec::new();
    for seed in [11_u64, 12, 13] {
        all.extend(generate(seed, 60));
    }
    append_all(&log, &all, 2).await;
    // Started after the events: it catches up from position 0.
    let running = start(&log, &db.pool);
    wait_caught_up(&log, &db.pool).await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&all));
    running.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint_without_double_counting() {
    let (_nats, log, db) = setup().await;
    let histories = generate(21, 160);
    let (first, second) = histories.split_at(80);

    let running = start(&log, &db.pool);
    append_all(&log, first, 2).await;
    let head = wait_caught_up(&log, &db.pool).await;
    running.stop().await;
    assert_eq!(checkpoint(&db.pool).await.expect("checkpoint").0, head);

    append_all(&log, second, 2).await;
    // Stopped and behind: status shows the lag and that nobody runs it.
    let status = funnel_projections::status(&db.pool, Some(&log))
        .await
        .expect("status");
    let behind = log.stream_head().await.expect("head") - head;
    assert_eq!(status[0].lag_events, Some(behind));
    assert!(status[0].lag_seconds.expect("lag seconds") > 0.0);
    assert!(!status[0].active);
    let running = start(&log, &db.pool);
    let new_head = wait_caught_up(&log, &db.pool).await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));
    assert_eq!(
        metric(&running.registry, "funnel_projection_events_applied_total"),
        (new_head - head) as f64,
        "the second run applies only the events after the checkpoint"
    );
    running.stop().await;
}

#[tokio::test]
async fn two_runtimes_on_one_database_apply_each_event_once() {
    let (_nats, log, db) = setup().await;
    let histories = generate(33, 200);
    let (first, second) = histories.split_at(100);
    let a = start(&log, &db.pool);
    let b = start(&log, &db.pool);
    append_all(&log, first, 3).await;
    wait_caught_up(&log, &db.pool).await;
    let applied = |running: &crate::support::Running| {
        metric(&running.registry, "funnel_projection_events_applied_total")
    };
    // Exactly one of them holds the lock and applies.
    let (holder, standby) = if applied(&a) > 0.0 { (a, b) } else { (b, a) };
    assert_eq!(applied(&standby), 0.0, "the standby applied nothing");
    let by_holder = applied(&holder);

    // The holder stops; the standby takes over from the checkpoint.
    holder.stop().await;
    append_all(&log, second, 3).await;
    let head = wait_caught_up(&log, &db.pool).await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));
    assert_eq!(
        by_holder + applied(&standby),
        head as f64,
        "every event applied exactly once"
    );
    standby.stop().await;
}

#[tokio::test]
async fn two_runtimes_started_together_count_each_event_once() {
    let (_nats, log, db) = setup().await;
    let histories = generate(34, 150);
    let a = start(&log, &db.pool);
    let b = start(&log, &db.pool);
    append_all(&log, &histories, 4).await;
    let head = wait_caught_up(&log, &db.pool).await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));
    let total = metric(&a.registry, "funnel_projection_events_applied_total")
        + metric(&b.registry, "funnel_projection_events_applied_total");
    assert_eq!(total, head as f64);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_undecodable_event_stops_the_projection_before_it() {
    let (_nats, log, db) = setup().await;
    let histories = generate(45, 60);
    let (before, after) = histories.split_at(30);
    append_all(&log, before, 2).await;
    let bad_key = before[0].key.clone();
    append_retrying(
        &log,
        &bad_key,
        vec![NewEvent {
            id: Uuid::now_v7(),
            event_type: "funnel.journey.teleported.v1".to_owned(),
            time: Utc::now(),
            subject: bad_key.id().to_string(),
            data: bytes::Bytes::from_static(br#"{"at":"2025-01-01T00:00:00Z"}"#),
        }],
    )
    .await;
    let bad_seq = log.stream_head().await.expect("head");
    append_all(&log, after, 2).await;

    let running = start(&log, &db.pool);
    let (position, _, error) = eventually("the projection to fail", WAIT, || async {
        checkpoint(&db.pool)
            .await
            .filter(|(_, status, _)| status == "failed")
    })
    .await;
    assert_eq!(position, bad_seq - 1, "stopped right before the bad event");
    let error = error.expect("last_error");
    assert!(error.contains("teleported"), "{error}");
    assert!(error.contains(&format!("event {bad_seq}")), "{error}");
    assert_eq!(metric(&running.registry, "funnel_projection_failed"), 1.0);
    // Nothing after it: the read model is exactly the events before it.
    assert_eq!(read_model(&db.pool).await, fold_counts(before));
    assert_eq!(
        metric(&running.registry, "funnel_projection_events_applied_total"),
        (bad_seq - 1) as f64
    );
    running.stop().await;

    // A restart tries the same event again, and stops at it again: it is never skipped.
    let running = start(&log, &db.pool);
    eventually("the retried projection to fail again", WAIT, || async {
        (metric(&running.registry, "funnel_projection_failed") == 1.0).then_some(())
    })
    .await;
    let (position, status, _) = checkpoint(&db.pool).await.expect("checkpoint");
    assert_eq!((position, status.as_str()), (bad_seq - 1, "failed"));
    assert_eq!(read_model(&db.pool).await, fold_counts(before));
    running.stop().await;
}

#[tokio::test]
async fn a_nats_restart_in_the_middle_ends_with_the_fold() {
    let mut server = NatsServer::start().await;
    let log = provisioned_log(&server.url()).await;
    let db = test_database().await;
    let histories = generate(57, 160);
    let (first, second) = histories.split_at(80);

    let running = start(&log, &db.pool);
    append_all(&log, first, 2).await;
    // Killed while the projector is (most likely) still catching up.
    server.kill().await;
    server.restart().await;
    append_all(&log, second, 2).await;
    wait_caught_up(&log, &db.pool).await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));
    running.stop().await;
}

#[tokio::test]
async fn status_lists_projections_not_started_yet() {
    let (_nats, log, db) = setup().await;
    let projector = Projector::new(log, db.pool.clone(), &Registry::new(), fast_settings())
        .expect("metrics")
        .with(StudyFunnel);
    let status = projector.status().await.expect("status");
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].state, "not_started");
    assert_eq!(status[0].position, 0);
}

#[tokio::test]
async fn a_lost_postgresql_session_is_retried_from_the_checkpoint() {
    let (_nats, log, db) = setup().await;
    let histories = generate(68, 160);
    let (first, second) = histories.split_at(80);
    let running = start(&log, &db.pool);
    append_all(&log, first, 2).await;
    // PostgreSQL ends the projector's session (as on a server restart): the lock goes with it.
    // The session is the one holding generation 1's lock, once the projector has taken it.
    eventually("the projector to hold its lock", WAIT, || async {
        let terminated: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((classid::bigint << 32) | objid::bigint) = \
             hashtextextended('funnel.projection.study_funnel.g1', 0)) AS t",
        )
        .fetch_one(&db.pool)
        .await
        .expect("terminate");
        assert!(terminated <= 1, "one session at most holds the lock");
        (terminated == 1).then_some(())
    })
    .await;
    append_all(&log, second, 2).await;
    wait_caught_up(&log, &db.pool).await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));
    assert!(metric(&running.registry, "funnel_projection_retries_total") >= 1.0);
    running.stop().await;
}

/// A projection of the test's own that refuses one event: apply errors stop the projection
/// like decode errors, with the events before it in the same batch committed.
struct Picky {
    refuse: u64,
}

impl Projection for Picky {
    fn name(&self) -> &'static str {
        "picky"
    }

    fn version(&self) -> u32 {
        3
    }

    fn schema(&self) -> &'static str {
        "CREATE TABLE seen (seq bigint PRIMARY KEY);"
    }

    async fn apply(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        event: &ProjectedEvent,
    ) -> Result<(), ProjectionError> {
        if event.seq == self.refuse {
            return Err(ProjectionError::Invalid(format!(
                "refusing {}",
                event.event.event_type()
            )));
        }
        sqlx::query("INSERT INTO seen (seq) VALUES ($1)")
            .bind(i64::try_from(event.seq).expect("seq"))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn an_apply_error_stops_only_that_projection() {
    let (_nats, log, db) = setup().await;
    let histories = generate(79, 40);
    append_all(&log, &histories, 1).await;
    let head = log.stream_head().await.expect("head");
    let refuse = head / 2;
    let registry = Registry::new();
    let projector = Projector::new(log.clone(), db.pool.clone(), &registry, fast_settings())
        .expect("metrics")
        .with(StudyFunnel)
        .with(Picky { refuse });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    let picky = eventually("picky to fail", WAIT, || async {
        funnel_projections::status(&db.pool, None)
            .await
            .expect("status")
            .into_iter()
            .find(|status| status.name == "picky" && status.status == "failed")
    })
    .await;
    assert_eq!(picky.version, 3);
    assert_eq!(picky.position, refuse - 1);
    // Its own table, in its own schema, holds exactly the events before the refused one.
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_picky_g1.seen")
        .fetch_one(&db.pool)
        .await
        .expect("seen");
    assert_eq!(seen, i64::try_from(refuse - 1).expect("small"));
    let error = picky.last_error.expect("last_error");
    assert!(
        error.contains(&format!("event {refuse}: refusing funnel.journey.")),
        "{error}"
    );
    // The other projection carries on to the head.
    wait_caught_up(&log, &db.pool).await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));
    let _ = stop.send(());
    task.await.expect("projector");
}

#[tokio::test]
async fn a_postgresql_crash_and_restart_in_the_middle_ends_with_the_fold() {
    let nats = test_nats().await;
    let log = provisioned_log(&nats.url).await;
    let mut postgres = PostgresServer::start().await;
    let settings = postgres.database().await;
    let pool = funnel_db::connect(&settings).await.expect("connect");
    let histories = generate(83, 200);
    let (first, second) = histories.split_at(100);

    let running = start(&log, &pool);
    append_all(&log, first, 2).await;
    eventually(
        "the projector applies events",
        Duration::from_secs(30),
        || async {
            (metric(&running.registry, "funnel_projection_events_applied_total") > 0.0)
                .then_some(())
        },
    )
    .await;
    // Crashed while the projector is (most likely) in the middle of a batch.
    postgres.kill().await;
    append_all(&log, second, 1).await;
    // It runs into the crash (however busy the machine) before PostgreSQL comes back.
    eventually("the projector retries", Duration::from_secs(30), || async {
        (metric(&running.registry, "funnel_projection_retries_total") >= 1.0).then_some(())
    })
    .await;
    postgres.restart().await;
    wait_caught_up(&log, &pool).await;
    assert_eq!(read_model(&pool).await, fold_counts(&histories));
    assert!(metric(&running.registry, "funnel_projection_retries_total") >= 1.0);
    running.stop().await;
}
