//! Prometheus metrics of the event log, registered on a registry the caller owns (no global
//! registry): appends by outcome and their latency, events appended, and whether the NATS
//! connection is up.

use std::time::Duration;

use async_nats::connection::State;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, PullingGauge, Registry,
};

use crate::error::AppendError;

/// The append metrics, shared by every clone of the [`crate::EventLog`].
#[derive(Clone, Debug)]
pub(crate) struct AppendMetrics {
    appends: IntCounterVec,
    duration: HistogramVec,
    events: IntCounter,
}

impl AppendMetrics {
    /// Registers the append metrics and `funnel_nats_connected`, read from the client's
    /// connection state at every scrape.
    pub(crate) fn register(
        registry: &Registry,
        client: async_nats::Client,
    ) -> prometheus::Result<Self> {
        let appends = IntCounterVec::new(
            Opts::new(
                "funnel_eventlog_appends_total",
                "Appends by outcome: ok, conflict (the optimistic-concurrency check failed), \
                 unavailable (no ack: outcome unknown), error (refused, invalid, shut down)",
            ),
            &["outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "funnel_eventlog_append_duration_seconds",
                "Time from an append's call to its answer (the durable ack), by outcome",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["outcome"],
        )?;
        let events = IntCounter::new(
            "funnel_eventlog_events_appended_total",
            "Events stored by successful appends",
        )?;
        let connected = PullingGauge::new(
            "funnel_nats_connected",
            "1 while the NATS connection is up, 0 while it is down or reconnecting",
            Box::new(move || match client.connection_state() {
                State::Connected => 1.0,
                State::Pending | State::Disconnected => 0.0,
            }),
        )?;
        registry.register(Box::new(appends.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(connected))?;
        // Every outcome is exported from the start (at 0), so rates and alerts see a series
        // before the first conflict.
        for outcome in OUTCOMES {
            appends.with_label_values(&[outcome]);
            duration.with_label_values(&[outcome]);
        }
        Ok(Self {
            appends,
            duration,
            events,
        })
    }

    pub(crate) fn record(
        &self,
        events: usize,
        elapsed: Duration,
        result: Result<(), &AppendError>,
    ) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(AppendError::Conflict { .. }) => "conflict",
            Err(AppendError::Unavailable { .. }) => "unavailable",
            Err(AppendError::Rejected { .. } | AppendError::Invalid(_) | AppendError::ShutDown) => {
                "error"
            }
        };
        self.appends.with_label_values(&[outcome]).inc();
        self.duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
        if result.is_ok() {
            self.events.inc_by(events as u64);
        }
    }
}

const OUTCOMES: [&str; 4] = ["ok", "conflict", "unavailable", "error"];
