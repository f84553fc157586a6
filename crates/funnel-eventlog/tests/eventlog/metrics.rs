use funnel_eventlog::{AppendError, ExpectedVersion};
use prometheus::Registry;
use prometheus::proto::MetricType;

use crate::support::{event, journey, provisioned_log};

/// The value of one sample: `name` with exactly the given labels (none: the unlabelled series).
fn sample(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let family = registry
        .gather()
        .into_iter()
        .find(|family| family.name() == name)
        .unwrap_or_else(|| panic!("{name} is not registered"));
    let metric = family
        .get_metric()
        .iter()
        .find(|metric| {
            let pairs = metric.get_label();
            pairs.len() == labels.len()
                && labels.iter().all(|(key, value)| {
                    pairs
                        .iter()
                        .any(|pair| pair.name() == *key && pair.value() == *value)
                })
        })
        .unwrap_or_else(|| panic!("{name} has no series {labels:?}"));
    match family.get_field_type() {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        // A histogram: how many observations it holds.
        _ => metric.get_histogram().get_sample_count() as f64,
    }
}

#[tokio::test]
async fn appends_are_counted_by_outcome_on_the_registry_passed_in() {
    let nats = funnel_testkit::test_nats().await;
    let log = provisioned_log(&nats.url, |_| {}).await;
    let registry = Registry::new();
    log.register_metrics(&registry).unwrap();
    assert!(
        log.clone().register_metrics(&Registry::new()).is_err(),
        "a log's metrics are registered once, for all its clones"
    );
    assert_eq!(sample(&registry, "funnel_nats_connected", &[]), 1.0);
    assert_eq!(
        sample(
            &registry,
            "funnel_eventlog_appends_total",
            &[("outcome", "conflict")]
        ),
        0.0
    );

    let key = journey();
    log.append(
        &key,
        ExpectedVersion::NoStream,
        vec![event("referred"), event("prescreened")],
    )
    .await
    .unwrap();
    let stale = log
        .clone()
        .append(&key, ExpectedVersion::NoStream, vec![event("late")])
        .await;
    assert!(matches!(stale, Err(AppendError::Conflict { .. })));

    let appends = |outcome| {
        sample(
            &registry,
            "funnel_eventlog_appends_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(appends("ok"), 1.0);
    assert_eq!(appends("conflict"), 1.0);
    assert_eq!(appends("unavailable"), 0.0);
    assert_eq!(
        sample(&registry, "funnel_eventlog_events_appended_total", &[]),
        2.0
    );
    assert_eq!(
        sample(
            &registry,
            "funnel_eventlog_append_duration_seconds",
            &[("outcome", "ok")]
        ),
        1.0
    );
}
