use std::collections::HashMap;
use std::time::Duration;

use funnel_eventlog::{AppendError, ExpectedVersion, StreamKey};
use futures::StreamExt;
use futures::future::join_all;

use crate::support::{PATIENCE, event, journey, provisioned_log};

/// 300 pairs of appends race for the same aggregate at the same version, amid a flood of other
/// appends so that real batches form (and get refused, and fall back). Exactly one of each pair
/// wins, the loser learns the winner's version, and each aggregate holds exactly the winner.
#[tokio::test]
async fn racing_appends_at_the_same_version_have_exactly_one_winner() {
    const PAIRS: usize = 300;
    const OTHER_APPENDS: usize = 1500;
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;

    let keys: Vec<StreamKey> = (0..PAIRS).map(|_| journey()).collect();
    let created = join_all(
        keys.iter()
            .map(|key| log.append(key, ExpectedVersion::NoStream, vec![event("created")])),
    )
    .await;
    let versions: Vec<u64> = created
        .into_iter()
        .map(|result| result.unwrap().last_seq)
        .collect();

    // Pair members 0 and 1 of aggregate i; odd aggregates get two-event appends.
    let contenders = keys
        .iter()
        .zip(&versions)
        .enumerate()
        .flat_map(|(i, (key, version))| {
            let log = &log;
            (0..2).map(move |side| async move {
                let mut events = vec![event(&format!("{i}-{side}"))];
                if i % 2 == 1 {
                    events.push(event(&format!("{i}-{side}-more")));
                }
                let ids: Vec<_> = events.iter().map(|event| event.id).collect();
                let result = log.append(key, ExpectedVersion::At(*version), events).await;
                (i, ids, result)
            })
        });
    let traffic = (0..OTHER_APPENDS).map(|n| {
        let log = &log;
        async move {
            let key = journey();
            log.append(
                &key,
                ExpectedVersion::NoStream,
                vec![event(&format!("other-{n}"))],
            )
            .await
        }
    });
    let (contended, others) = tokio::join!(
        futures::stream::iter(contenders)
            .buffer_unordered(usize::MAX)
            .collect::<Vec<_>>(),
        join_all(traffic),
    );
    assert!(
        others.iter().all(Result::is_ok),
        "background appends failed"
    );

    let mut by_aggregate: HashMap<usize, Vec<_>> = HashMap::new();
    for (i, ids, result) in contended {
        by_aggregate.entry(i).or_default().push((ids, result));
    }
    for (i, outcomes) in by_aggregate {
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|(_, result)| result.is_ok())
            .collect();
        assert_eq!(winners.len(), 1, "aggregate {i}: {outcomes:?}");
        let (winner_ids, winner) = winners[0];
        let winner = winner.as_ref().unwrap();
        let (_, loser) = outcomes.iter().find(|(_, result)| result.is_err()).unwrap();
        match loser {
            Err(AppendError::Conflict { actual, .. }) => assert_eq!(*actual, Some(winner.last_seq)),
            other => panic!("aggregate {i}: the loser got {other:?}"),
        }
        let stored = log.read(&keys[i]).await.unwrap();
        let stored_ids: Vec<_> = stored.iter().skip(1).map(|recorded| recorded.id).collect();
        assert_eq!(
            &stored_ids, winner_ids,
            "aggregate {i} holds exactly the winner"
        );
        assert_eq!(stored.last().unwrap().seq, winner.last_seq);
    }

    let stats = log.stats();
    assert!(stats.batches_committed > 0, "{stats:?}");
    assert!(
        stats.appends_in_batches >= 2 * stats.batches_committed,
        "batches hold several appends: {stats:?}"
    );
    let summary = log.inspect().await.unwrap();
    let winner_events = (PAIRS / 2) as u64 + 2 * (PAIRS / 2) as u64;
    assert_eq!(
        summary.messages,
        PAIRS as u64 + winner_events + OTHER_APPENDS as u64
    );
    log.shutdown().await;
}

/// One batch in flight and a linger, so concurrent appends share a batch for sure.
fn one_lingering_batch(settings: &mut funnel_eventlog::EventLogSettings) {
    settings.group_commit.max_batches_in_flight = 1;
    settings.group_commit.linger = Duration::from_millis(300);
}

#[tokio::test]
async fn concurrent_appends_share_atomic_batches() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, one_lingering_batch).await;
    let keys: Vec<_> = (0..40).map(|_| journey()).collect();
    let results = join_all(
        keys.iter()
            .map(|key| log.append(key, ExpectedVersion::NoStream, vec![event("a"), event("b")])),
    )
    .await;
    assert!(results.iter().all(Result::is_ok));
    let stats = log.stats();
    assert!(stats.batches_committed >= 1, "{stats:?}");
    assert_eq!(stats.appends_in_batches + stats.appends_committed_alone, 40);
    assert!(stats.appends_in_batches >= 20, "{stats:?}");
    assert_eq!(stats.messages_in_batches, 2 * stats.appends_in_batches);

    // The server's view: the messages carry a shared Nats-Batch-Id.
    let stream = crate::support::raw_jetstream(&nats.url)
        .await
        .get_stream(&log.settings().stream_name)
        .await
        .unwrap();
    let mut per_batch: HashMap<String, usize> = HashMap::new();
    for seq in 1..=80 {
        let message = stream.direct_get(seq).await.unwrap();
        if let Some(batch) = message.headers.get("Nats-Batch-Id") {
            *per_batch.entry(batch.as_str().to_owned()).or_default() += 1;
        }
    }
    assert!(
        per_batch.values().any(|&messages| messages >= 40),
        "{per_batch:?}"
    );
    // Each append's sequences are its own, consecutive and in the aggregate.
    for (key, result) in keys.iter().zip(results) {
        let appended = result.unwrap();
        let read = log.read(key).await.unwrap();
        assert_eq!(
            (read[0].seq, read[1].seq),
            (appended.first_seq, appended.last_seq)
        );
    }
}

#[tokio::test]
async fn a_batch_refused_for_one_stale_member_still_commits_the_others() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, one_lingering_batch).await;
    let contested = journey();
    let current = log
        .append(&contested, ExpectedVersion::NoStream, vec![event("first")])
        .await
        .unwrap();
    let already_stored = event("already stored");
    let retried = journey();
    let stored = log
        .append(
            &retried,
            ExpectedVersion::NoStream,
            vec![already_stored.clone()],
        )
        .await
        .unwrap();
    let before = log.stats();

    let fresh: Vec<_> = (0..20).map(|_| journey()).collect();
    let stale = log.append(&contested, ExpectedVersion::NoStream, vec![event("stale")]);
    // A retry of an append that already happened: its Nats-Msg-Id is stored (10201 for a batch).
    let retry = log.append(&retried, ExpectedVersion::NoStream, vec![already_stored]);
    let good = join_all(
        fresh
            .iter()
            .map(|key| log.append(key, ExpectedVersion::NoStream, vec![event("good")])),
    );
    let (stale, retry, good) = tokio::join!(stale, retry, good);

    assert!(
        matches!(stale, Err(AppendError::Conflict { actual: Some(seq), .. }) if seq == current.last_seq),
        "{stale:?}"
    );
    assert_eq!(
        retry,
        Ok(stored),
        "the retried append is recognised, not stored twice"
    );
    assert!(good.iter().all(Result::is_ok), "{good:?}");
    for key in &fresh {
        assert_eq!(log.read(key).await.unwrap().len(), 1);
    }
    assert_eq!(log.read(&retried).await.unwrap().len(), 1);
    assert_eq!(log.read(&contested).await.unwrap().len(), 1);
    let stats = log.stats();
    assert!(stats.batches_refused > before.batches_refused, "{stats:?}");
}

#[tokio::test]
async fn dropped_callers_do_not_wedge_the_batcher_and_shutdown_drains() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;

    // Callers that give up at once, at every possible point.
    for _ in 0..200 {
        let key = journey();
        let _ = tokio::time::timeout(
            Duration::from_micros(50),
            log.append(&key, ExpectedVersion::NoStream, vec![event("abandoned")]),
        )
        .await;
    }
    // The batcher still serves everyone else.
    let keys: Vec<_> = (0..200).map(|_| journey()).collect();
    let results = tokio::time::timeout(
        PATIENCE,
        join_all(
            keys.iter()
                .map(|key| log.append(key, ExpectedVersion::NoStream, vec![event("kept")])),
        ),
    )
    .await
    .expect("appends after abandoned ones complete");
    assert!(results.iter().all(Result::is_ok));

    // Shutdown while appends are queued: each either lands (and is stored) or is refused.
    let queued: Vec<_> = (0..300)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                let key = journey();
                let result = log
                    .append(&key, ExpectedVersion::NoStream, vec![event("late")])
                    .await;
                (key, result)
            })
        })
        .collect();
    tokio::task::yield_now().await;
    tokio::time::timeout(PATIENCE, log.shutdown())
        .await
        .expect("shutdown drains");
    for task in queued {
        let (key, result) = task.await.unwrap();
        match result {
            Ok(appended) => assert_eq!(
                log.last_sequence(&key).await.unwrap(),
                Some(appended.last_seq)
            ),
            Err(AppendError::ShutDown) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
}

/// Many multi-event appends at once outside group commit each need an atomic batch of their
/// own; the server refuses more than 50 in flight per stream (10210), so the log must queue
/// them rather than fail them.
#[tokio::test]
async fn many_concurrent_multi_event_appends_without_group_commit_all_succeed() {
    let nats = funnel_testkit::test_nats().await;
    // One attempt: a refusal for too many batches in flight would surface instead of being
    // retried away.
    let log = provisioned_log(&nats.url, |settings| {
        settings.group_commit.enabled = false;
        settings.max_append_attempts = 1;
    })
    .await;
    let appends: Vec<_> = (0..300)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                let key = journey();
                let events = vec![event("one"), event("two"), event("three")];
                log.append(&key, ExpectedVersion::NoStream, events).await
            })
        })
        .collect();
    for append in appends {
        let appended = append.await.unwrap().expect("every append is stored");
        assert_eq!(appended.last_seq - appended.first_seq, 2);
    }
    assert_eq!(log.stream_head().await.unwrap(), 900);
}
