use funnel_eventlog::ExpectedVersion;
use futures::StreamExt;

use crate::support::{PATIENCE, event, journey, provisioned_log};

#[tokio::test]
async fn subscribe_from_a_position_yields_the_rest_in_order_then_live_events() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;
    let keys = [journey(), journey(), journey()];
    let mut written = Vec::new();
    for round in 0..4 {
        for key in &keys {
            let event = event(&format!("{round}"));
            let appended = log
                .append(key, ExpectedVersion::Any, vec![event.clone()])
                .await
                .unwrap();
            written.push((appended.last_seq, event.id, key.clone()));
        }
    }
    let from = written[4].0;
    let head = log.stream_head().await.unwrap();
    assert_eq!(head, written.last().unwrap().0);

    let mut events = Box::pin(log.subscribe(from).await.unwrap());
    for (seq, id, key) in written.iter().filter(|(seq, ..)| *seq >= from) {
        let recorded = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("catching up")
            .expect("stream open")
            .expect("event");
        assert_eq!((recorded.seq, recorded.id, &recorded.key), (*seq, *id, key));
    }
    let live = event("live");
    let appended = log
        .append(&keys[0], ExpectedVersion::Any, vec![live.clone()])
        .await
        .unwrap();
    let recorded = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("live event")
        .expect("stream open")
        .expect("event");
    assert_eq!((recorded.seq, recorded.id), (appended.last_seq, live.id));
}
