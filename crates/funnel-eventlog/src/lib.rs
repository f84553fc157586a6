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
//!
//! # Server behaviour this relies on (observed on nats-server 2.15.1, see `tests/eventlog/server_behaviour.rs`)
//!
//! - An atomic batch's first message (a request) is answered with an empty reply; the commit
//!   with a pub ack carrying `batch` and `count`, `seq` being the last message's sequence.
//! - `Nats-Msg-Id` is accepted inside batches (2.12 refused it with 10177). A batch holding an id
//!   that is already stored, or twice, is refused whole with 10201.
//! - One stale `Nats-Expected-Last-Subject-Sequence` refuses the whole batch with 10071
//!   (`wrong last sequence: N`, N being that subject's last sequence); a second write to the
//!   same subject in one batch cannot carry the check (10164). Refused batches store nothing.
//! - A retried publish with the same `Nats-Msg-Id` *and* a now-stale subject check gets 10071,
//!   not `duplicate: true`: the sequence check runs before the duplicate window. Without a
//!   check the server answers `duplicate: true` with the original sequence.
//! - Stored messages keep the batch and expectation headers (`Nats-Batch-Id`, ...).

mod append;
mod batcher;
pub mod bench;
mod error;
mod event;
mod key;
mod log;
mod metrics;
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
