use funnel_eventlog::{AppendError, ExpectedVersion, NewEvent};

use crate::support::{event, journey, provisioned_log, raw_jetstream};

#[tokio::test]
async fn append_and_read_round_trip_with_cloudevents_headers() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;
    let key = journey();
    let events = vec![event("referred"), event("prescreened")];

    let appended = log
        .append(&key, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    assert_eq!(appended.last_seq, appended.first_seq + 1);
    assert_eq!(
        log.last_sequence(&key).await.unwrap(),
        Some(appended.last_seq)
    );
    assert_eq!(
        log.last_sequence(&crate::support::journey()).await.unwrap(),
        None
    );

    let read = log.read(&key).await.unwrap();
    assert_eq!(read.len(), 2);
    for (recorded, sent) in read.iter().zip(&events) {
        assert_eq!(recorded.id, sent.id);
        assert_eq!(recorded.event_type, sent.event_type);
        assert_eq!(recorded.time, sent.time);
        assert_eq!(recorded.ce_subject, sent.subject);
        assert_eq!(recorded.data, sent.data);
        assert_eq!(recorded.key, key);
        assert_eq!(recorded.subject, log.subject_of(&key));
        assert_eq!(recorded.source, "urn:funnel");
    }
    assert_eq!(
        (read[0].seq, read[1].seq),
        (appended.first_seq, appended.last_seq)
    );
    let after_first = log.read_from(&key, appended.first_seq).await.unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].id, events[1].id);

    // What a consumer in another language sees: CloudEvents binary-mode headers.
    let stream = raw_jetstream(&nats.url)
        .await
        .get_stream(&log.settings().stream_name)
        .await
        .unwrap();
    let raw = stream.direct_get(appended.first_seq).await.unwrap();
    let header = |name: &str| raw.headers.get(name).map(|value| value.as_str().to_owned());
    let id = events[0].id.to_string();
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce-id"), Some(id.clone()));
    assert_eq!(header("Nats-Msg-Id"), Some(id));
    assert_eq!(header("ce-type").as_deref(), Some("test.referred.v1"));
    assert_eq!(header("ce-source").as_deref(), Some("urn:funnel"));
    assert_eq!(header("ce-subject").as_deref(), Some("referred"));
    assert_eq!(
        header("ce-datacontenttype").as_deref(),
        Some("application/json")
    );
    let time = header("ce-time").unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&time).unwrap(),
        events[0].time
    );
}

#[tokio::test]
async fn conflicts_name_the_actual_version_with_and_without_group_commit() {
    let nats = funnel_testkit::test_nats().await;
    for group_commit in [true, false] {
        let log = provisioned_log(&nats.url, |settings| {
            settings.group_commit.enabled = group_commit;
        })
        .await;
        assert_eq!(log.group_commit_active(), group_commit);
        let key = journey();
        let created = log
            .append(&key, ExpectedVersion::NoStream, vec![event("a")])
            .await
            .unwrap();

        let again = log
            .append(&key, ExpectedVersion::NoStream, vec![event("b")])
            .await;
        assert_eq!(
            again,
            Err(AppendError::Conflict {
                subject: log.subject_of(&key),
                expected: ExpectedVersion::NoStream,
                actual: Some(created.last_seq),
            })
        );

        let next = log
            .append(
                &key,
                ExpectedVersion::At(created.last_seq),
                vec![event("c"), event("d")],
            )
            .await
            .unwrap();
        let stale = log
            .append(
                &key,
                ExpectedVersion::At(created.last_seq),
                vec![event("e")],
            )
            .await;
        match stale {
            Err(AppendError::Conflict {
                actual, expected, ..
            }) => {
                assert_eq!(actual, Some(next.last_seq));
                assert_eq!(expected, ExpectedVersion::At(created.last_seq));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let never_written = journey();
        match log
            .append(
                &never_written,
                ExpectedVersion::At(created.last_seq),
                vec![event("x")],
            )
            .await
        {
            Err(AppendError::Conflict { actual, .. }) => assert_eq!(actual, Some(0), "empty"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        log.append(&key, ExpectedVersion::Any, vec![event("f")])
            .await
            .unwrap();
        let labels: Vec<String> = log
            .read(&key)
            .await
            .unwrap()
            .into_iter()
            .map(|recorded| recorded.ce_subject)
            .collect();
        assert_eq!(labels, ["a", "c", "d", "f"]);
    }
}

#[tokio::test]
async fn reads_page_through_long_aggregates() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;
    let key = journey();
    let other = journey();
    let mut expected = ExpectedVersion::NoStream;
    let mut other_expected = ExpectedVersion::NoStream;
    for round in 0..7 {
        let events: Vec<NewEvent> = (0..100).map(|n| event(&format!("{round}-{n}"))).collect();
        let appended = log.append(&key, expected, events).await.unwrap();
        expected = ExpectedVersion::At(appended.last_seq);
        // Interleave another aggregate so the subject's sequences have gaps.
        let appended = log
            .append(&other, other_expected, vec![event("other")])
            .await
            .unwrap();
        other_expected = ExpectedVersion::At(appended.last_seq);
    }
    let read = log.read(&key).await.unwrap();
    assert_eq!(read.len(), 700);
    assert!(read.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    assert_eq!(read[699].ce_subject, "6-99");
    assert_eq!(log.read(&other).await.unwrap().len(), 7);
}

#[tokio::test]
async fn invalid_appends_are_refused_before_sending_and_shutdown_is_final() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;
    let key = journey();
    assert!(matches!(
        log.append(&key, ExpectedVersion::Any, vec![]).await,
        Err(AppendError::Invalid(_))
    ));
    let mut not_json = event("x");
    not_json.data = bytes::Bytes::from_static(b"<xml/>");
    assert!(matches!(
        log.append(&key, ExpectedVersion::Any, vec![not_json]).await,
        Err(AppendError::Invalid(_))
    ));
    let twice = event("twice");
    assert!(matches!(
        log.append(&key, ExpectedVersion::Any, vec![twice.clone(), twice])
            .await,
        Err(AppendError::Invalid(_))
    ));
    log.shutdown().await;
    assert_eq!(
        log.append(&key, ExpectedVersion::Any, vec![event("late")])
            .await,
        Err(AppendError::ShutDown)
    );
    assert_eq!(log.last_sequence(&key).await.unwrap(), None);
}
