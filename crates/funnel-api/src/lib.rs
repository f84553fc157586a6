//! The HTTP face of the funnel service and the wiring that runs it.
//!
//! [`Application::build`] connects to NATS and PostgreSQL and binds the listener;
//! [`Application::run_until_stopped`] serves until the shutdown future resolves, then drains:
//! in-flight requests finish and the event log commits every queued append before returning.

mod app;
pub mod commands;
mod metrics;
pub mod problem;
mod routes;

pub use app::{Application, ServeError, ServiceSettings, run};
pub use metrics::HttpMetrics;
