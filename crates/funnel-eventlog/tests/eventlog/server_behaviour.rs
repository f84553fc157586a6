//! What the pinned nats-server does with the headers this crate relies on, observed directly
//! (no event-log code involved). If a server upgrade changes any of it, these fail first.

use async_nats::HeaderMap;

use crate::support::provisioned_log;

async fn send(client: &async_nats::Client, subject: &str, headers: &[(&str, &str)]) -> String {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, *value);
    }
    let reply = client
        .request_with_headers(subject.to_owned(), map, "{}".into())
        .await
        .expect("reply");
    String::from_utf8(reply.payload.to_vec()).expect("utf-8 reply")
}

#[tokio::test]
async fn atomic_batches_on_the_pinned_server() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;
    let client = async_nats::connect(&nats.url).await.unwrap();
    let prefix = log.settings().subject_prefix.clone();
    let (a, b, c) = (
        format!("{prefix}.k.a"),
        format!("{prefix}.k.b"),
        format!("{prefix}.k.c"),
    );

    // Nats-Msg-Id is accepted inside a batch (2.12 refused it with 10177); the batch start
    // gets an empty reply and the commit a pub ack with the batch id and count.
    let start = send(
        &client,
        &a,
        &[
            ("Nats-Batch-Id", "b1"),
            ("Nats-Batch-Sequence", "1"),
            ("Nats-Msg-Id", "m1"),
            ("Nats-Expected-Last-Subject-Sequence", "0"),
        ],
    )
    .await;
    assert_eq!(start, "");
    let commit = send(
        &client,
        &b,
        &[
            ("Nats-Batch-Id", "b1"),
            ("Nats-Batch-Sequence", "2"),
            ("Nats-Batch-Commit", "1"),
            ("Nats-Msg-Id", "m2"),
            ("Nats-Expected-Last-Subject-Sequence", "0"),
        ],
    )
    .await;
    assert!(
        commit.contains(r#""seq":2"#) && commit.contains(r#""count":2"#),
        "{commit}"
    );

    // A batch holding an already stored Nats-Msg-Id is refused whole: 10201.
    send(
        &client,
        &c,
        &[
            ("Nats-Batch-Id", "b2"),
            ("Nats-Batch-Sequence", "1"),
            ("Nats-Msg-Id", "m3"),
        ],
    )
    .await;
    let refused = send(
        &client,
        &a,
        &[
            ("Nats-Batch-Id", "b2"),
            ("Nats-Batch-Sequence", "2"),
            ("Nats-Batch-Commit", "1"),
            ("Nats-Msg-Id", "m1"),
        ],
    )
    .await;
    assert!(refused.contains("10201"), "{refused}");

    // One stale member refuses the batch whole: 10071, naming the subject's last sequence.
    send(
        &client,
        &c,
        &[
            ("Nats-Batch-Id", "b3"),
            ("Nats-Batch-Sequence", "1"),
            ("Nats-Expected-Last-Subject-Sequence", "0"),
        ],
    )
    .await;
    let stale = send(
        &client,
        &a,
        &[
            ("Nats-Batch-Id", "b3"),
            ("Nats-Batch-Sequence", "2"),
            ("Nats-Batch-Commit", "1"),
            ("Nats-Expected-Last-Subject-Sequence", "0"),
        ],
    )
    .await;
    assert!(
        stale.contains("10071") && stale.contains("wrong last sequence: 1"),
        "{stale}"
    );

    // A second write to the same subject in one batch cannot carry a subject check: 10164.
    send(
        &client,
        &c,
        &[
            ("Nats-Batch-Id", "b4"),
            ("Nats-Batch-Sequence", "1"),
            ("Nats-Expected-Last-Subject-Sequence", "0"),
        ],
    )
    .await;
    let same_subject = send(
        &client,
        &c,
        &[
            ("Nats-Batch-Id", "b4"),
            ("Nats-Batch-Sequence", "2"),
            ("Nats-Batch-Commit", "1"),
            ("Nats-Expected-Last-Subject-Sequence", "0"),
        ],
    )
    .await;
    assert!(same_subject.contains("10164"), "{same_subject}");

    assert_eq!(
        log.inspect().await.unwrap().messages,
        2,
        "refused batches stored nothing"
    );
}

#[tokio::test]
async fn a_retried_checked_publish_meets_the_sequence_check_before_the_duplicate_window() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;
    let client = async_nats::connect(&nats.url).await.unwrap();
    let subject = format!("{}.k.a", log.settings().subject_prefix);
    let checked = [
        ("Nats-Msg-Id", "p1"),
        ("Nats-Expected-Last-Subject-Sequence", "0"),
    ];

    assert!(
        send(&client, &subject, &checked)
            .await
            .contains(r#""seq":1"#)
    );
    // Same id, same (now stale) check: a sequence error, not `duplicate`.
    let retried = send(&client, &subject, &checked).await;
    assert!(retried.contains("10071"), "{retried}");
    // Without the check the duplicate window answers with the original sequence.
    let unchecked = send(&client, &subject, &[("Nats-Msg-Id", "p1")]).await;
    assert!(
        unchecked.contains(r#""duplicate": true"#) || unchecked.contains(r#""duplicate":true"#),
        "{unchecked}"
    );
    assert!(unchecked.contains(r#""seq":1"#), "{unchecked}");
}
