//! Prometheus metrics of the projector runtime, registered on a registry the caller owns.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Per projection and generation: during a rebuild the new generation catches up beside the
/// live one, and both are worth watching.
const LABELS: &[&str] = &["projection", "generation"];
/// Restarts are counted per projection.
const LABEL: &[&str] = &["projection"];

/// The runtime's metrics, one series per projection and generation.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    pub(crate) position: IntGaugeVec,
    pub(crate) lag_events: IntGaugeVec,
    pub(crate) lag_seconds: GaugeVec,
    pub(crate) applied: IntCounterVec,
    pub(crate) failed: IntGaugeVec,
    pub(crate) retries: IntCounterVec,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            position: IntGaugeVec::new(
                Opts::new(
                    "funnel_projection_position",
                    "Stream sequence of the last event the projection applied.",
                ),
                LABELS,
            )?,
            lag_events: IntGaugeVec::new(
                Opts::new(
                    "funnel_projection_lag_events",
                    "Events in the stream the projection has not applied yet (stream head - position).",
                ),
                LABELS,
            )?,
            lag_seconds: GaugeVec::new(
                Opts::new(
                    "funnel_projection_lag_seconds",
                    "Now minus the time of the last event applied, while the projection is behind; 0 when caught up.",
                ),
                LABELS,
            )?,
            applied: IntCounterVec::new(
                Opts::new(
                    "funnel_projection_events_applied_total",
                    "Events applied (committed) by this process.",
                ),
                LABELS,
            )?,
            failed: IntGaugeVec::new(
                Opts::new(
                    "funnel_projection_failed",
                    "1 when the projection stopped at an event it cannot apply, else 0.",
                ),
                LABELS,
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "funnel_projection_retries_total",
                    "Restarts of a projection after a transient NATS or PostgreSQL failure.",
                ),
                LABEL,
            )?,
        };
        registry.register(Box::new(metrics.position.clone()))?;
        registry.register(Box::new(metrics.lag_events.clone()))?;
        registry.register(Box::new(metrics.lag_seconds.clone()))?;
        registry.register(Box::new(metrics.applied.clone()))?;
        registry.register(Box::new(metrics.failed.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        Ok(metrics)
    }

    /// Drops a generation's series once it is retired, so that dashboards show only the
    /// generations that still run.
    pub(crate) fn forget(&self, labels: &[&str; 2]) {
        let _ = self.position.remove_label_values(labels);
        let _ = self.lag_events.remove_label_values(labels);
        let _ = self.lag_seconds.remove_label_values(labels);
        let _ = self.applied.remove_label_values(labels);
        let _ = self.failed.remove_label_values(labels);
    }
}
