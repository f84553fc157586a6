use crate::append::ExpectedVersion;

/// Connecting, provisioning and inspecting the stream.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("invalid event log settings: {0}")]
    InvalidSettings(String),
    /// The URL is shown redacted.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(
        "nats-server {found} is too old: the event log needs {minimum} or newer (2.12+ for group commit)"
    )]
    ServerTooOld { found: String, minimum: String },
    #[error("cannot make sense of the nats-server version {0:?}")]
    UnknownServerVersion(String),
    #[error("the NATS server does not have JetStream enabled")]
    JetStreamDisabled,
    /// A JetStream API call failed; `message` carries the server's error code when there is one.
    #[error("stream {stream}: {operation} failed: {message}")]
    Stream {
        stream: String,
        operation: &'static str,
        message: String,
    },
}

/// Why an append did not happen (or, for `Unavailable`, may not have happened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The optimistic-concurrency check failed: someone else wrote first. `actual` is the
    /// subject's last stream sequence as the server saw it (`Some(0)`: the subject is empty;
    /// `None`: unknown).
    #[error("version conflict on {subject}: expected {expected}, found {}", describe_actual(*.actual))]
    Conflict {
        subject: String,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    /// No ack after all attempts: the outcome is unknown. Retrying the same append (same event
    /// ids) is safe.
    #[error("event log unavailable after {attempts} attempts: {reason}")]
    Unavailable { attempts: u32, reason: String },
    /// The server refused the append for a reason other than a version conflict.
    #[error("the server refused the append (error {code}): {description}")]
    Rejected { code: u64, description: String },
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error("the event log is shut down")]
    ShutDown,
}

fn describe_actual(actual: Option<u64>) -> String {
    actual.map_or_else(
        || "an unknown last sequence".to_owned(),
        |seq| match seq {
            0 => "an empty subject".to_owned(),
            seq => format!("last sequence {seq}"),
        },
    )
}

/// Reading an aggregate, the stream head, or a subscription.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {subject} failed: {reason}")]
    Request { subject: String, reason: String },
    /// A stored message lacks what this crate writes (foreign writer or corrupt headers).
    #[error("message {seq} on {subject} is malformed: {reason}")]
    Malformed {
        seq: u64,
        subject: String,
        reason: String,
    },
    #[error("subscription failed: {0}")]
    Subscription(String),
}
