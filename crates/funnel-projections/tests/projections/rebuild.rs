//! Rebuilds: a new generation fills beside the live one and readers switch over without a
//! failed or empty read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use funnel_projections::{
    GenerationError, ProjectedEvent, Projection, ProjectionError, Projector, ReadModels,
    StudyFunnel, status,
};
use funnel_testkit::{eventually, test_database, test_nats};
use prometheus::Registry;
use sqlx::PgPool;

use crate::support::{
    WAIT, append_all, fast_settings, fold_counts, generate, provisioned_log, read_model,
    wait_caught_up,
};

/// `(generation, version, state)` of every generation whose schema still exists.
async fn generations(pool: &PgPool) -> Vec<(i32, u32, String)> {
    status(pool, None)
        .await
        .expect("status")
        .into_iter()
        .filter(|row| row.name == StudyFunnel::NAME)
        .map(|row| (row.generation, row.version, row.state))
        .collect()
}

async fn schema_exists(pool: &PgPool, schema: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .expect("pg_namespace")
}

fn projector(log: &funnel_eventlog::EventLog, pool: &PgPool) -> Projector {
    let settings = funnel_projections::ProjectorSettings {
        retired_grace: Duration::from_millis(200),
        // Small batches: the rebuild takes many transactions, so readers meet it mid-way.
        max_batch_events: 20,
        ..fast_settings()
    };
    Projector::new(log.clone(), pool.clone(), &Registry::new(), settings).expect("metrics")
}

fn spawn(
    projector: Projector,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test]
async fn a_rebuild_switches_readers_over_without_a_failed_or_empty_read() {
    let nats = test_nats().await;
    let log = provisioned_log(&nats.url).await;
    let db = test_database().await;
    let histories = generate(91, 240);
    let (first, second) = histories.split_at(160);
    let (stop, task) = spawn(projector(&log, &db.pool).with(StudyFunnel));
    append_all(&log, first, 2).await;
    wait_caught_up(&log, &db.pool).await;
    let before = read_model(&db.pool).await;
    assert_eq!(before, fold_counts(first));

    // Readers keep reading while the rebuild runs and new events keep arriving.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let pool = db.pool.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut reads = 0_u32;
            let mut last_position = 0_i64;
            let models = ReadModels::new(pool);
            while !done.load(Ordering::Relaxed) {
                let mut tx = models
                    .read(StudyFunnel::NAME)
                    .await
                    .expect("a live generation");
                let journeys: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(sum(journeys), 0)::bigint FROM stage_counts",
                )
                .fetch_one(&mut *tx)
                .await
                .expect("stage counts");
                // The position of the generation read, in the same snapshot.
                let position: i64 = sqlx::query_scalar(
                    "SELECT position FROM public.projection_generations \
                     WHERE name = 'study_funnel' AND state = 'live'",
                )
                .fetch_one(&mut *tx)
                .await
                .expect("position");
                assert!(journeys > 0, "an empty dashboard during the rebuild");
                // Never back in time: the switch waits until the new generation has caught up
                // with the live one.
                assert!(
                    position >= last_position,
                    "position {position} after {last_position}"
                );
                last_position = position;
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    let rebuilder = projector(&log, &db.pool).with(StudyFunnel);
    let started = rebuilder
        .start_rebuild(StudyFunnel::NAME)
        .await
        .expect("rebuild");
    assert_eq!(started.generation, 2);
    assert!(matches!(
        rebuilder.start_rebuild(StudyFunnel::NAME).await,
        Err(GenerationError::AlreadyBuilding { generation: 2, .. })
    ));
    append_all(&log, second, 2).await;
    eventually("generation 2 to go live", WAIT, || async {
        generations(&db.pool)
            .await
            .contains(&(2, StudyFunnel::VERSION, "live".to_owned()))
            .then_some(())
    })
    .await;
    wait_caught_up(&log, &db.pool).await;
    done.store(true, Ordering::Relaxed);
    let reads = reader.await.expect("every read succeeded");
    assert!(reads > 0);
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));
    // The old generation is retired and its schema dropped after the grace period.
    eventually("generation 1's schema to be dropped", WAIT, || async {
        (!schema_exists(&db.pool, "rm_study_funnel_g1").await).then_some(())
    })
    .await;
    assert_eq!(
        generations(&db.pool).await,
        vec![(2, StudyFunnel::VERSION, "live".to_owned())]
    );
    let _ = stop.send(());
    task.await.expect("projector");
}

/// The same logic under a bumped version, as a release that changed it would ship.
struct StudyFunnelNext;

impl Projection for StudyFunnelNext {
    fn name(&self) -> &'static str {
        StudyFunnel::NAME
    }

    fn version(&self) -> u32 {
        StudyFunnel::VERSION + 1
    }

    fn schema(&self) -> &'static str {
        Projection::schema(&StudyFunnel)
    }

    async fn apply(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        event: &ProjectedEvent,
    ) -> Result<(), ProjectionError> {
        StudyFunnel.apply(tx, event).await
    }
}

#[tokio::test]
async fn a_new_logic_version_is_built_beside_the_old_and_replaces_it() {
    let nats = test_nats().await;
    let log = provisioned_log(&nats.url).await;
    let db = test_database().await;
    let histories = generate(93, 120);
    append_all(&log, &histories, 2).await;
    let (stop, task) = spawn(projector(&log, &db.pool).with(StudyFunnel));
    wait_caught_up(&log, &db.pool).await;
    let _ = stop.send(());
    task.await.expect("projector");

    // The new release starts: the old generation stays readable until the new one is live.
    let (stop, task) = spawn(projector(&log, &db.pool).with(StudyFunnelNext));
    let next = StudyFunnel::VERSION + 1;
    eventually("the new version to go live", WAIT, || async {
        generations(&db.pool)
            .await
            .iter()
            .any(|(generation, version, state)| {
                *generation == 2 && *version == next && state == "live"
            })
            .then_some(())
    })
    .await;
    assert_eq!(read_model(&db.pool).await, fold_counts(&histories));
    let _ = stop.send(());
    task.await.expect("projector");
}
