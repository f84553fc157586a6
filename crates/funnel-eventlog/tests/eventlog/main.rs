//! The event log against a real, pinned nats-server (`funnel_testkit::test_nats`). Every test
//! uses a stream and subject prefix of its own, so they run in parallel on a shared server.

mod append_read;
mod bench;
mod group_commit;
mod lost_ack;
mod metrics;
mod provisioning;
mod server_behaviour;
mod subscribe;
mod support;
