use std::time::Duration;

use async_nats::HeaderMap;
use funnel_eventlog::{Appended, EventLogSettings, ExpectedVersion};
use futures::future::join_all;

use crate::support::{
    AckSwallowingProxy, PATIENCE, event, journey, provisioned_log, raw_jetstream,
};

/// Short ack timeouts so a swallowed ack is noticed quickly; enough attempts to outlast the
/// client's reconnect.
fn impatient(settings: &mut EventLogSettings) {
    settings.ack_timeout = Duration::from_millis(750);
    settings.max_append_attempts = 10;
}

#[tokio::test]
async fn a_lost_ack_on_a_single_publish_is_retried_and_the_event_stored_once() {
    let nats = funnel_testkit::test_nats().await;
    let proxy = AckSwallowingProxy::start(&nats.url).await;
    for group_commit in [false, true] {
        let log = provisioned_log(&proxy.url, |settings| {
            impatient(settings);
            settings.group_commit.enabled = group_commit;
        })
        .await;
        let key = journey();
        let lost = event("lost ack");
        let swallowed_before = proxy.swallowed();
        proxy.arm(r#""seq":"#);
        let appended = tokio::time::timeout(
            PATIENCE,
            log.append(&key, ExpectedVersion::NoStream, vec![lost.clone()]),
        )
        .await
        .expect("the append finishes")
        .expect("the retry recognises the stored event");
        assert_eq!(
            proxy.swallowed(),
            swallowed_before + 1,
            "an ack was really lost"
        );

        let stored = log.read(&key).await.unwrap();
        assert_eq!(stored.len(), 1, "stored exactly once");
        assert_eq!(stored[0].id, lost.id);
        assert_eq!(
            appended,
            Appended {
                first_seq: stored[0].seq,
                last_seq: stored[0].seq
            }
        );
        assert_eq!(log.inspect().await.unwrap().messages, 1);
    }
}

#[tokio::test]
async fn a_lost_ack_on_a_multi_event_atomic_append_is_recognised() {
    let nats = funnel_testkit::test_nats().await;
    let proxy = AckSwallowingProxy::start(&nats.url).await;
    let log = provisioned_log(&proxy.url, |settings| {
        impatient(settings);
        settings.group_commit.enabled = false;
    })
    .await;
    let key = journey();
    let first = log
        .append(&key, ExpectedVersion::NoStream, vec![event("created")])
        .await
        .unwrap();
    let events = vec![event("a"), event("b"), event("c")];
    // The commit's ack of an atomic batch carries the count.
    proxy.arm(r#""count":"#);
    let appended = tokio::time::timeout(
        PATIENCE,
        log.append(&key, ExpectedVersion::At(first.last_seq), events.clone()),
    )
    .await
    .expect("the append finishes")
    .expect("the retry recognises the stored batch");
    assert_eq!(proxy.swallowed(), 1);
    let stored = log.read(&key).await.unwrap();
    let ids: Vec<_> = stored.iter().skip(1).map(|recorded| recorded.id).collect();
    assert_eq!(ids, events.iter().map(|event| event.id).collect::<Vec<_>>());
    assert_eq!(
        (appended.first_seq, appended.last_seq),
        (stored[1].seq, stored[3].seq)
    );
}

#[tokio::test]
async fn a_lost_ack_on_a_group_commit_falls_back_and_stores_each_append_once() {
    let nats = funnel_testkit::test_nats().await;
    let proxy = AckSwallowingProxy::start(&nats.url).await;
    let log = provisioned_log(&proxy.url, |settings| {
        impatient(settings);
        settings.group_commit.max_batches_in_flight = 1;
        settings.group_commit.linger = Duration::from_millis(300);
    })
    .await;
    let keys: Vec<_> = (0..10).map(|_| journey()).collect();
    proxy.arm(r#""count":"#);
    let results = tokio::time::timeout(
        PATIENCE,
        join_all(
            keys.iter()
                .map(|key| log.append(key, ExpectedVersion::NoStream, vec![event("x")])),
        ),
    )
    .await
    .expect("the appends finish");
    assert_eq!(proxy.swallowed(), 1);
    for (key, result) in keys.iter().zip(results) {
        let appended = result.expect("every member recognised after the lost batch ack");
        let stored = log.read(key).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].seq, appended.last_seq);
    }
    assert_eq!(log.inspect().await.unwrap().messages, 10);
    assert!(log.stats().batches_refused >= 1);
}

/// The duplicate window has passed, so the server no longer knows the id: the retry meets a
/// sequence conflict, and reading the subject shows the event is ours.
#[tokio::test]
async fn a_retry_after_the_duplicate_window_is_recognised_by_reading_the_subject() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |settings| {
        settings.duplicate_window = Duration::from_millis(200);
    })
    .await;
    let js = raw_jetstream(&nats.url).await;
    let key = journey();
    let original = event("published earlier");
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", original.id.to_string().as_str());
    headers.insert("ce-id", original.id.to_string().as_str());
    headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
    let stored_seq = js
        .publish_with_headers(log.subject_of(&key), headers, original.data.clone())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;

    // Wait until a probe id published after the original is forgotten: then so is the original.
    let probe_subject = format!(
        "{}.probe.{}",
        log.settings().subject_prefix,
        uuid::Uuid::new_v4()
    );
    let probe_id = uuid::Uuid::new_v4().to_string();
    let publish_probe = || {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", probe_id.as_str());
        js.publish_with_headers(probe_subject.clone(), headers, "{}".into())
    };
    publish_probe().await.unwrap().await.unwrap();
    funnel_testkit::eventually("the duplicate window to pass", PATIENCE, || async {
        let ack = publish_probe().await.ok()?.await.ok()?;
        (!ack.duplicate).then_some(())
    })
    .await;

    let appended = log
        .append(&key, ExpectedVersion::NoStream, vec![original])
        .await
        .expect("recognised as already stored, not a conflict");
    assert_eq!(
        appended,
        Appended {
            first_seq: stored_seq,
            last_seq: stored_seq
        }
    );
    assert_eq!(log.last_sequence(&key).await.unwrap(), Some(stored_seq));
}
