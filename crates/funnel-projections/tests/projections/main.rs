//! The projector runtime and the read models against a real nats-server and PostgreSQL.

mod dashboard;
mod rebuild;
mod runtime;
mod support;
mod work_queue;
