//! Creating the stream, bringing an existing one to the wanted configuration, and describing it.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, Info, RetentionPolicy, StorageType};

use crate::error::EventLogError;
use crate::log::Shared;

/// What provisioning did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisionAction {
    Created,
    Updated,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionReport {
    pub stream: String,
    pub action: ProvisionAction,
    /// One line per setting changed on an existing stream, e.g. `duplicate_window: 30s -> 120s`.
    pub changes: Vec<String>,
}

/// The stream as a CLI would show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub name: String,
    pub subjects: Vec<String>,
    pub storage: String,
    pub replicas: usize,
    pub duplicate_window: Duration,
    pub deny_delete: bool,
    pub deny_purge: bool,
    pub allow_direct: bool,
    pub allow_atomic_publish: bool,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Distinct subjects, i.e. aggregates.
    pub subjects_count: u64,
    pub consumers: usize,
}

impl fmt::Display for StreamSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "stream          {}", self.name)?;
        writeln!(f, "subjects        {}", self.subjects.join(", "))?;
        writeln!(f, "storage         {} x{}", self.storage, self.replicas)?;
        writeln!(f, "dedupe window   {:?}", self.duplicate_window)?;
        writeln!(
            f,
            "deny delete     {}  deny purge {}  direct get {}  atomic publish {}",
            self.deny_delete, self.deny_purge, self.allow_direct, self.allow_atomic_publish
        )?;
        writeln!(
            f,
            "messages        {} ({} bytes)",
            self.messages, self.bytes
        )?;
        writeln!(f, "sequences       {}..={}", self.first_seq, self.last_seq)?;
        writeln!(f, "aggregates      {}", self.subjects_count)?;
        write!(f, "consumers       {}", self.consumers)
    }
}

impl StreamSummary {
    fn from_info(info: &Info) -> Self {
        let config = &info.config;
        Self {
            name: config.name.clone(),
            subjects: config.subjects.clone(),
            storage: format!("{:?}", config.storage).to_lowercase(),
            replicas: config.num_replicas,
            duplicate_window: config.duplicate_window,
            deny_delete: config.deny_delete,
            deny_purge: config.deny_purge,
            allow_direct: config.allow_direct,
            allow_atomic_publish: config.allow_atomic_publish,
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            subjects_count: info.state.subjects_count,
            consumers: info.state.consumer_count,
        }
    }
}

fn stream_error(shared: &Shared, operation: &'static str, err: impl fmt::Display) -> EventLogError {
    EventLogError::Stream {
        stream: shared.settings.stream_name.clone(),
        operation,
        message: err.to_string(),
    }
}

#[tracing::instrument(skip_all, fields(stream = %shared.settings.stream_name))]
pub(crate) async fn provision(shared: &Shared) -> Result<ProvisionReport, EventLogError> {
    // Two instances may provision at once: the loser of a create race updates instead.
    for _ in 0..2 {
        match shared
            .jetstream
            .get_stream(&shared.settings.stream_name)
            .await
        {
            Ok(stream) => {
                let current = stream.cached_info().config.clone();
                let (wanted, changes) = apply_wanted(shared, current);
                if changes.is_empty() {
                    return Ok(report(shared, ProvisionAction::Unchanged, changes));
                }
                tracing::info!(?changes, "updating the stream configuration");
                shared
                    .jetstream
                    .update_stream(wanted)
                    .await
                    .map_err(|err| stream_error(shared, "update", err))?;
                return Ok(report(shared, ProvisionAction::Updated, changes));
            }
            Err(err) if is_stream_not_found(err.kind()) => {
                let config = Config {
                    name: shared.settings.stream_name.clone(),
                    ..Config::default()
                };
                let (wanted, _) = apply_wanted(shared, config);
                match shared.jetstream.create_stream(wanted).await {
                    Ok(_) => {
                        tracing::info!("created the stream");
                        return Ok(report(shared, ProvisionAction::Created, Vec::new()));
                    }
                    Err(err) if is_name_in_use(err.kind()) => continue,
                    Err(err) => return Err(stream_error(shared, "create", err)),
                }
            }
            Err(err) => return Err(stream_error(shared, "look up", err)),
        }
    }
    Err(stream_error(
        shared,
        "provision",
        "created and changed concurrently; try again",
    ))
}

fn report(shared: &Shared, action: ProvisionAction, changes: Vec<String>) -> ProvisionReport {
    ProvisionReport {
        stream: shared.settings.stream_name.clone(),
        action,
        changes,
    }
}

fn is_stream_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn is_name_in_use(kind: CreateStreamErrorKind) -> bool {
    matches!(kind, CreateStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NAME_EXIST)
}

/// Sets every setting the event log relies on, keeping the rest of an existing configuration,
/// and describes each change.
fn apply_wanted(shared: &Shared, mut config: Config) -> (Config, Vec<String>) {
    let settings = &shared.settings;
    let mut changes = Vec::new();
    let mut set = |name: &str, current: String, wanted: String| {
        if current != wanted {
            changes.push(format!("{name}: {current} -> {wanted}"));
        }
    };
    let subjects = vec![format!("{}.>", settings.subject_prefix)];
    set(
        "subjects",
        format!("{:?}", config.subjects),
        format!("{subjects:?}"),
    );
    config.subjects = subjects;
    set(
        "storage",
        format!("{:?}", config.storage),
        format!("{:?}", StorageType::File),
    );
    config.storage = StorageType::File;
    set(
        "retention",
        format!("{:?}", config.retention),
        format!("{:?}", RetentionPolicy::Limits),
    );
    config.retention = RetentionPolicy::Limits;
    set(
        "replicas",
        config.num_replicas.to_string(),
        settings.replicas.to_string(),
    );
    config.num_replicas = settings.replicas;
    set(
        "duplicate_window",
        format!("{:?}", config.duplicate_window),
        format!("{:?}", settings.duplicate_window),
    );
    config.duplicate_window = settings.duplicate_window;
    // Events are never deleted: the log is the source of truth (erasure is crypto-shredding).
    set(
        "deny_delete",
        config.deny_delete.to_string(),
        "true".to_owned(),
    );
    config.deny_delete = true;
    set(
        "deny_purge",
        config.deny_purge.to_string(),
        "true".to_owned(),
    );
    config.deny_purge = true;
    set(
        "allow_direct",
        config.allow_direct.to_string(),
        "true".to_owned(),
    );
    config.allow_direct = true;
    if shared.capabilities.atomic_batch_publish {
        set(
            "allow_atomic_publish",
            config.allow_atomic_publish.to_string(),
            "true".to_owned(),
        );
        config.allow_atomic_publish = true;
    }
    set(
        "discard",
        format!("{:?}", config.discard),
        format!("{:?}", DiscardPolicy::Old),
    );
    config.discard = DiscardPolicy::Old;
    // No limits: the server reports "unlimited" as -1 (or 0 for the age).
    let unlimited = |value: i64| {
        if value <= 0 {
            "unlimited".to_owned()
        } else {
            value.to_string()
        }
    };
    set("max_msgs", unlimited(config.max_messages), unlimited(-1));
    config.max_messages = -1;
    set("max_bytes", unlimited(config.max_bytes), unlimited(-1));
    config.max_bytes = -1;
    set(
        "max_msgs_per_subject",
        unlimited(config.max_messages_per_subject),
        unlimited(-1),
    );
    config.max_messages_per_subject = -1;
    set(
        "max_age",
        format!("{:?}", config.max_age),
        format!("{:?}", Duration::ZERO),
    );
    config.max_age = Duration::ZERO;
    (config, changes)
}

pub(crate) async fn inspect(shared: &Shared) -> Result<StreamSummary, EventLogError> {
    let info = shared
        .stream
        .get_info()
        .await
        .map_err(|err| stream_error(shared, "inspect", err))?;
    Ok(StreamSummary::from_info(&info))
}

pub(crate) async fn stream_head(shared: &Shared) -> Result<u64, EventLogError> {
    let info = shared
        .stream
        .get_info()
        .await
        .map_err(|err| stream_error(shared, "read the head of", err))?;
    Ok(info.state.last_sequence)
}
