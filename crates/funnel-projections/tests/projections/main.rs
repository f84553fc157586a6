//! The projector runtime and the `study_funnel` read model against a real nats-server and
//! PostgreSQL.

mod runtime;
mod support;
