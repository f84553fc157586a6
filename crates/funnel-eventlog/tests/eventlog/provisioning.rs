use std::time::Duration;

use async_nats::jetstream::stream::Config;
use funnel_eventlog::{EventLog, EventLogSettings, ExpectedVersion, ProvisionAction};

use crate::support::{event, journey, raw_jetstream};

#[tokio::test]
async fn provisioning_twice_is_idempotent_and_the_stream_refuses_deletes() {
    let nats = funnel_testkit::test_nats().await;
    let name = funnel_testkit::unique_prefix();
    let log = EventLog::connect(EventLogSettings::new(&nats.url, &name, &name))
        .await
        .unwrap();
    assert!(
        log.capabilities().atomic_batch_publish,
        "the pinned server is 2.12+"
    );

    let first = log.provision().await.unwrap();
    assert_eq!(first.action, ProvisionAction::Created);
    let second = log.provision().await.unwrap();
    assert_eq!(
        second.action,
        ProvisionAction::Unchanged,
        "{:?}",
        second.changes
    );
    assert!(second.changes.is_empty());

    let summary = log.inspect().await.unwrap();
    assert_eq!(summary.subjects, vec![format!("{name}.>")]);
    assert_eq!(summary.storage, "file");
    assert!(summary.deny_delete && summary.deny_purge && summary.allow_direct);
    assert!(summary.allow_atomic_publish);
    assert_eq!(summary.duplicate_window, Duration::from_secs(120));

    let key = journey();
    let appended = log
        .append(&key, ExpectedVersion::NoStream, vec![event("a")])
        .await
        .unwrap();
    let summary = log.inspect().await.unwrap();
    assert_eq!((summary.messages, summary.subjects_count), (1, 1));
    assert_eq!(summary.last_seq, appended.last_seq);
    assert_eq!(log.stream_head().await.unwrap(), appended.last_seq);

    let stream = raw_jetstream(&nats.url)
        .await
        .get_stream(&name)
        .await
        .unwrap();
    assert!(
        stream.delete_message(appended.last_seq).await.is_err(),
        "deny_delete"
    );
    assert!(stream.purge().await.is_err(), "deny_purge");
    assert_eq!(log.read(&key).await.unwrap().len(), 1);
}

#[tokio::test]
async fn provisioning_brings_a_drifted_stream_back_and_says_what_changed() {
    let nats = funnel_testkit::test_nats().await;
    let name = funnel_testkit::unique_prefix();
    raw_jetstream(&nats.url)
        .await
        .create_stream(Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            duplicate_window: Duration::from_secs(30),
            max_messages: 1000,
            ..Default::default()
        })
        .await
        .unwrap();

    let log = EventLog::connect(EventLogSettings::new(&nats.url, &name, &name))
        .await
        .unwrap();
    let report = log.provision().await.unwrap();
    assert_eq!(report.action, ProvisionAction::Updated);
    for setting in [
        "duplicate_window",
        "deny_delete",
        "deny_purge",
        "allow_direct",
        "allow_atomic_publish",
        "max_msgs",
    ] {
        assert!(
            report
                .changes
                .iter()
                .any(|change| change.starts_with(setting)),
            "{setting} missing from {:?}",
            report.changes
        );
    }
    assert_eq!(
        log.provision().await.unwrap().action,
        ProvisionAction::Unchanged
    );
}

#[tokio::test]
async fn connect_names_the_server_version_and_refuses_bad_settings() {
    let nats = funnel_testkit::test_nats().await;
    let name = funnel_testkit::unique_prefix();
    let log = EventLog::connect(EventLogSettings::new(&nats.url, &name, &name))
        .await
        .unwrap();
    assert!(log.capabilities().version >= funnel_eventlog::ServerVersion::new(2, 12, 0));
    assert!(log.group_commit_active());

    let bad = EventLog::connect(EventLogSettings::new(&nats.url, "has.dot", &name)).await;
    assert!(matches!(
        bad,
        Err(funnel_eventlog::EventLogError::InvalidSettings(_))
    ));
}
