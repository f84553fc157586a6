//! The event log: one NATS JetStream stream is the only source of truth.
//!
//! - [`EventLog::connect`] connects, checks the server version (2.11 or newer; 2.12+ enables
//!   atomic batches and so group commit) and [`EventLog::provision`] creates or updates the stream.
//! - Every aggregate instance has a subject of its own, `<prefix>.<kind>.<id>` ([`StreamKey`]), so a
//!   `Nats-Expected-Last-Subject-Sequence` check guards the whole aggregate
//!   ([`ExpectedVersion`]) and [`EventLog::append`] is an optimistic-concurrency write.
//! - Concurrent appends are gathered into ADR-50 atomic batches (group commit): with
//!   `sync_interval: always` a batch is made durable with one fsync, which is where durable
//!   throughput comes from. A refused batch falls back to committing each member on its own.
//! - Lost acks are retried with the same `Nats-Msg-Id`; when the retry meets a sequence conflict,
//!   the subject is read back to tell "our events are already there" from a real conflict.
//! - Messages carry CloudEvents 1.0 binary-mode headers (`ce-*`), so consumers in any language
//!   can read the stream.
//!
//! The crate knows nothing about the domain: events are opaque JSON payloads with a type.

mod append;
mod batcher;
pub mod bench;
mod error;
mod event;
mod key;
mod log;
mod provision;
mod read;
mod settings;
mod version;

pub use append::{Appended, ExpectedVersion};
pub use batcher::GroupCommitStats;
pub use error::{AppendError, EventLogError, ReadError};
pub use event::{NewEvent, RecordedEvent};
pub use key::{InvalidName, StreamKey};
pub use log::EventLog;
pub use provision::{ProvisionAction, ProvisionReport, StreamSummary};
pub use settings::{EventLogSettings, GroupCommitSettings};
pub use version::{ServerCapabilities, ServerVersion};
