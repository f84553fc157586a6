use std::fmt;
use std::time::Duration;

use crate::error::EventLogError;
use crate::key::{validate_prefix, validate_token};

/// The server's limit on messages in one atomic batch (ADR-50).
pub(crate) const SERVER_MAX_BATCH_MESSAGES: usize = 1000;
/// The server's limit on atomic batches in flight per stream (ADR-50).
pub(crate) const SERVER_MAX_BATCHES_IN_FLIGHT: usize = 50;

/// How to reach and shape the event log.
#[derive(Clone)]
pub struct EventLogSettings {
    /// NATS URL(s), comma-separated; may hold credentials (`nats://user:pass@host:4222`), which
    /// is why `Debug` redacts it.
    pub url: String,
    /// The JetStream stream name.
    pub stream_name: String,
    /// Subjects are `<subject_prefix>.<kind>.<id>`; the stream captures `<subject_prefix>.>`.
    pub subject_prefix: String,
    /// Stream replicas (1 for a single node, 3 for a cluster).
    pub replicas: usize,
    /// How long the server remembers `Nats-Msg-Id`s for deduplication.
    pub duplicate_window: Duration,
    /// How long to wait for a publish ack before the outcome counts as unknown and is retried.
    pub ack_timeout: Duration,
    /// How many times an append with an unknown outcome is sent before giving up with
    /// [`AppendError::Unavailable`](crate::AppendError::Unavailable).
    pub max_append_attempts: u32,
    /// The first pause between attempts; it doubles per attempt (capped at two seconds).
    pub retry_backoff: Duration,
    pub group_commit: GroupCommitSettings,
    /// The CloudEvents `source` attribute of every event written.
    pub cloudevents_source: String,
}

/// Group commit: concurrent appends are gathered into atomic batches (needs nats-server 2.12+).
#[derive(Clone, Debug)]
pub struct GroupCommitSettings {
    pub enabled: bool,
    /// Upper bound on messages per batch (the server allows at most 1000). An append larger than
    /// this still goes out, in a batch of its own.
    pub max_batch_messages: usize,
    /// Batches sent concurrently; while all are in flight, new appends queue up and form the
    /// next, larger batch. The server allows 50 per stream across all clients.
    pub max_batches_in_flight: usize,
    /// Extra time to wait for more appends after the first one of a batch arrives. Zero (the
    /// default) sends whatever is queued at once: batching comes from the in-flight limit.
    pub linger: Duration,
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_batch_messages: 100,
            max_batches_in_flight: 8,
            linger: Duration::ZERO,
        }
    }
}

impl EventLogSettings {
    /// Settings with the defaults: one replica, a two-minute duplicate window, a five-second ack
    /// timeout, group commit on (batches of up to 100, 8 in flight), source `urn:funnel`.
    pub fn new(
        url: impl Into<String>,
        stream_name: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            stream_name: stream_name.into(),
            subject_prefix: subject_prefix.into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            ack_timeout: Duration::from_secs(5),
            max_append_attempts: 5,
            retry_backoff: Duration::from_millis(50),
            group_commit: GroupCommitSettings::default(),
            cloudevents_source: "urn:funnel".to_owned(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), EventLogError> {
        let invalid = |reason: String| Err(EventLogError::InvalidSettings(reason));
        if let Err(err) = validate_token("stream name", &self.stream_name) {
            return invalid(err.to_string());
        }
        if let Err(err) = validate_prefix(&self.subject_prefix) {
            return invalid(err.to_string());
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!("replicas must be 1..=5, not {}", self.replicas));
        }
        if self.duplicate_window.is_zero() {
            return invalid("the duplicate window must be longer than zero".to_owned());
        }
        if self.ack_timeout.is_zero() || self.max_append_attempts == 0 {
            return invalid("the ack timeout and the attempts must be positive".to_owned());
        }
        if !(1..=SERVER_MAX_BATCH_MESSAGES).contains(&self.group_commit.max_batch_messages) {
            return invalid(format!(
                "group commit max batch size must be 1..={SERVER_MAX_BATCH_MESSAGES}, not {}",
                self.group_commit.max_batch_messages
            ));
        }
        if !(1..=SERVER_MAX_BATCHES_IN_FLIGHT).contains(&self.group_commit.max_batches_in_flight) {
            return invalid(format!(
                "group commit batches in flight must be 1..={SERVER_MAX_BATCHES_IN_FLIGHT}, not {}",
                self.group_commit.max_batches_in_flight
            ));
        }
        if self.cloudevents_source.is_empty() || has_control_chars(&self.cloudevents_source) {
            return invalid("the CloudEvents source must be a non-empty single line".to_owned());
        }
        Ok(())
    }
}

pub(crate) fn has_control_chars(value: &str) -> bool {
    value.chars().any(char::is_control)
}

impl fmt::Debug for EventLogSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLogSettings")
            .field("url", &redact_url(&self.url))
            .field("stream_name", &self.stream_name)
            .field("subject_prefix", &self.subject_prefix)
            .field("replicas", &self.replicas)
            .field("duplicate_window", &self.duplicate_window)
            .field("ack_timeout", &self.ack_timeout)
            .field("max_append_attempts", &self.max_append_attempts)
            .field("retry_backoff", &self.retry_backoff)
            .field("group_commit", &self.group_commit)
            .field("cloudevents_source", &self.cloudevents_source)
            .finish()
    }
}

/// Replaces the user-info part (`user:pass@`, `token@`) of each comma-separated URL with `***@`,
/// so settings and errors can be logged.
pub(crate) fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let (scheme, rest) = match url.find("://") {
                Some(at) => url.split_at(at + 3),
                None => ("", url),
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_credentials_in_every_url() {
        let mut settings = EventLogSettings::new("x", "EVENTS", "funnel");
        settings.url = "nats://alice:s3cret@a:4222, tls://tok3n@b:4222,nats://c:4222".to_owned();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("alice") && !shown.contains("tok3n"));
        assert!(shown.contains("nats://***@a:4222"), "{shown}");
        assert!(shown.contains("tls://***@b:4222"), "{shown}");
        assert!(shown.contains("nats://c:4222"), "{shown}");
    }

    #[test]
    fn defaults_are_valid_and_limits_are_enforced() {
        let mut settings = EventLogSettings::new("nats://x", "EVENTS", "funnel.events");
        assert!(settings.validate().is_ok());
        settings.group_commit.max_batch_messages = 1001;
        assert!(settings.validate().is_err());
        settings.group_commit.max_batch_messages = 100;
        settings.group_commit.max_batches_in_flight = 51;
        assert!(settings.validate().is_err());
        settings.group_commit.max_batches_in_flight = 8;
        settings.stream_name = "bad.name".to_owned();
        assert!(settings.validate().is_err());
    }
}
