//! End-to-end tests: the whole service on a free port against real NATS and PostgreSQL, each
//! test with a stream, subject prefix and database of its own.

mod helpers;

mod auth;
mod browser;
mod cloudevents;
mod commands;
mod dashboards;
mod journeys;
mod operations;
mod privacy;
mod queues;
mod rebuild;
mod referrals;
mod setup;
mod timeline;
mod web;
