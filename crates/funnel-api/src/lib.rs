//! The HTTP face of the funnel service and the wiring that runs it.
//!
//! [`Application::build`] connects to NATS and PostgreSQL and binds the listener;
//! [`Application::run_until_stopped`] serves until the shutdown future resolves, then drains:
//! in-flight requests finish and the event log commits every queued append before returning.

mod app;
pub mod auth;
pub mod clock;
mod cloudevents;
pub mod commands;
mod extract;
mod ingest;
mod metrics;
pub mod problem;
mod queue;
mod rate_limit;
mod routes;
mod web;

pub use app::{Application, ServeError, ServiceSettings, run};
pub use metrics::HttpMetrics;
pub use queue::QueueSettings;
