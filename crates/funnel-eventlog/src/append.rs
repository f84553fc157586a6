//! Writing: one aggregate's events, sent alone (plain publish or a one-member atomic batch) or
//! together with other appends in an atomic batch, and what to do when the ack is lost.

use std::fmt;
use std::time::Duration;

use async_nats::{HeaderMap, Request, RequestErrorKind};
use bytes::Bytes;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::AppendError;
use crate::event::NewEvent;
use crate::key::StreamKey;
use crate::log::Shared;
use crate::settings::SERVER_MAX_BATCH_MESSAGES;

const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";

/// JetStream error codes the append path acts on.
pub(crate) mod code {
    /// `Nats-Expected-Last-Subject-Sequence` did not match ("wrong last sequence: N").
    pub(crate) const WRONG_LAST_SEQUENCE: u64 = 10071;
    /// An atomic batch holds a `Nats-Msg-Id` that is already stored (or twice in the batch).
    pub(crate) const BATCH_DUPLICATE_MSG_ID: u64 = 10201;
    /// Too many atomic batches in flight on the stream (50) or server (1000).
    pub(crate) const BATCH_TOO_MANY_IN_FLIGHT: u64 = 10210;
    /// A batch that the server dropped (for instance after a reconnect in the middle of it).
    pub(crate) const BATCH_INCOMPLETE: u64 = 10176;
}

/// The optimistic-concurrency condition of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// The aggregate must not exist yet: its subject holds no message.
    NoStream,
    /// The stream sequence of the aggregate's last event.
    At(u64),
    /// No check. Retries then rely on the server's duplicate window alone.
    Any,
}

impl ExpectedVersion {
    /// The `Nats-Expected-Last-Subject-Sequence` value, if any.
    fn check(self) -> Option<u64> {
        match self {
            Self::NoStream => Some(0),
            Self::At(seq) => Some(seq),
            Self::Any => None,
        }
    }

    /// The subject's messages after this sequence are the ones this append could have written.
    fn written_after(self) -> u64 {
        match self {
            Self::At(seq) => seq,
            Self::NoStream | Self::Any => 0,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::At(seq) => write!(f, "version {seq}"),
            Self::Any => f.write_str("any version"),
        }
    }
}

/// Where an append's events landed: consecutive stream sequences `first_seq..=last_seq`.
/// `last_seq` is the aggregate's new version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: u64,
    pub last_seq: u64,
}

/// An append checked and turned into messages (headers without per-send parts).
#[derive(Debug)]
pub(crate) struct PreparedAppend {
    pub(crate) subject: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) messages: Vec<PreparedMessage>,
}

#[derive(Debug)]
pub(crate) struct PreparedMessage {
    event_id: Uuid,
    headers: HeaderMap,
    payload: Bytes,
}

impl PreparedAppend {
    pub(crate) fn new(
        shared: &Shared,
        key: &StreamKey,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Self, AppendError> {
        if events.is_empty() {
            return Err(AppendError::Invalid(
                "an append needs at least one event".to_owned(),
            ));
        }
        if events.len() > SERVER_MAX_BATCH_MESSAGES {
            return Err(AppendError::Invalid(format!(
                "an append holds at most {SERVER_MAX_BATCH_MESSAGES} events, not {}",
                events.len()
            )));
        }
        let mut ids = std::collections::HashSet::with_capacity(events.len());
        for event in &events {
            event.validate()?;
            if !ids.insert(event.id) {
                return Err(AppendError::Invalid(format!(
                    "event id {} appears twice",
                    event.id
                )));
            }
        }
        let source = &shared.settings.cloudevents_source;
        Ok(Self {
            subject: key.subject(&shared.settings.subject_prefix),
            expected,
            messages: events
                .into_iter()
                .map(|event| PreparedMessage {
                    event_id: event.id,
                    headers: event.headers(source),
                    payload: event.data,
                })
                .collect(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }
}

/// What the server said to one send.
#[derive(Debug)]
pub(crate) enum SendOutcome {
    /// Stored (or, with `duplicate`, found stored already); `last_seq` is the last message's.
    Stored { last_seq: u64, duplicate: bool },
    Refused {
        status: u16,
        code: u64,
        description: String,
    },
    /// No answer: the message may or may not be stored.
    Unknown(String),
    /// Refused before sending (oversized, bad subject): certainly not stored.
    NotSent(String),
}

#[derive(Deserialize)]
struct PubAckReply {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    /// Set on the commit of an atomic batch: how many messages it stored.
    #[serde(default)]
    count: Option<u64>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl SendOutcome {
    fn from_reply(payload: &[u8], expected_count: Option<usize>) -> Self {
        let reply: PubAckReply = match serde_json::from_slice(payload) {
            Ok(reply) => reply,
            Err(err) => return Self::Unknown(format!("unreadable publish ack: {err}")),
        };
        if let Some(error) = reply.error {
            return Self::Refused {
                status: error.code,
                code: error.err_code,
                description: error.description,
            };
        }
        if let (Some(count), Some(expected)) = (reply.count, expected_count)
            && usize::try_from(count).ok() != Some(expected)
        {
            // Never seen; if the server ever stores a different number of messages than sent,
            // the per-member fallback sorts out what is really there.
            return Self::Unknown(format!(
                "batch ack counts {count} messages, sent {expected}"
            ));
        }
        Self::Stored {
            last_seq: reply.seq,
            duplicate: reply.duplicate,
        }
    }
}

/// Sends one message as a request and returns the raw reply payload.
async fn request(
    shared: &Shared,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<Bytes, SendOutcome> {
    let request = Request::new()
        .headers(headers)
        .payload(payload)
        .timeout(Some(shared.settings.ack_timeout));
    match shared
        .client
        .send_request(subject.to_owned(), request)
        .await
    {
        Ok(reply) => Ok(reply.payload),
        Err(err) => Err(match err.kind() {
            RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                SendOutcome::NotSent(err.to_string())
            }
            // No responders: the stream is not (yet) reachable, e.g. right after a restart.
            RequestErrorKind::TimedOut
            | RequestErrorKind::NoResponders
            | RequestErrorKind::Other => SendOutcome::Unknown(err.to_string()),
        }),
    }
}

/// One event as a plain JetStream publish.
async fn send_plain(shared: &Shared, member: &PreparedAppend) -> SendOutcome {
    let message = &member.messages[0];
    let mut headers = message.headers.clone();
    if let Some(seq) = member.expected.check() {
        headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string().as_str());
    }
    match request(shared, &member.subject, headers, message.payload.clone()).await {
        Ok(reply) => SendOutcome::from_reply(&reply, None),
        Err(outcome) => outcome,
    }
}

/// All members' events as one ADR-50 atomic batch: the first message is a request the server
/// answers with an empty reply (or an error), the middle ones are plain publishes, and the
/// commit (the last message) gets the pub ack carrying the last sequence and the count.
///
/// The caller guarantees the members' subjects are distinct: a subject-sequence check only
/// works when no earlier message of the batch writes the same subject (else error 10164).
#[tracing::instrument(name = "atomic_batch", skip_all, fields(members = members.len(), messages))]
pub(crate) async fn send_atomic_batch(shared: &Shared, members: &[&PreparedAppend]) -> SendOutcome {
    let batch_id = Uuid::new_v4().simple().to_string();
    let total: usize = members.iter().map(|member| member.len()).sum();
    tracing::Span::current().record("messages", total);
    let mut messages = Vec::with_capacity(total);
    for member in members {
        for (index, message) in member.messages.iter().enumerate() {
            messages.push((*member, index, message));
        }
    }
    for (position, (member, index, message)) in (1..).zip(messages) {
        let mut headers = message.headers.clone();
        // Within one append only the first event carries the check: the later ones write the
        // same subject, whose check would then be refused (10164).
        if index == 0
            && let Some(seq) = member.expected.check()
        {
            headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string().as_str());
        }
        headers.insert(BATCH_ID, batch_id.as_str());
        headers.insert(BATCH_SEQUENCE, position.to_string().as_str());
        let payload = message.payload.clone();
        if position == total {
            headers.insert(BATCH_COMMIT, "1");
            return match request(shared, &member.subject, headers, payload).await {
                Ok(reply) => SendOutcome::from_reply(&reply, Some(total)),
                Err(outcome) => outcome,
            };
        }
        if position == 1 {
            match request(shared, &member.subject, headers, payload).await {
                Ok(reply) if reply.is_empty() => {}
                Ok(reply) => return SendOutcome::from_reply(&reply, None),
                Err(outcome) => return outcome,
            }
        } else if let Err(err) = shared
            .client
            .publish_with_headers(member.subject.clone(), headers, payload)
            .await
        {
            // The batch stays incomplete; the server abandons it.
            return SendOutcome::Unknown(format!("batch message not sent: {err}"));
        }
    }
    SendOutcome::NotSent("empty batch".to_owned())
}

/// The sequences of a member whose messages end at `last_seq`.
fn appended_ending_at(last_seq: u64, messages: usize) -> Appended {
    Appended {
        first_seq: last_seq + 1 - messages as u64,
        last_seq,
    }
}

/// Splits a committed batch's ack among its members: a batch is stored contiguously in send
/// order, ending at `last_seq`.
pub(crate) fn distribute_batch_ack(last_seq: u64, member_sizes: &[usize]) -> Vec<Appended> {
    let total: usize = member_sizes.iter().sum();
    let mut next = last_seq + 1 - total as u64;
    member_sizes
        .iter()
        .map(|&size| {
            let appended = Appended {
                first_seq: next,
                last_seq: next + size as u64 - 1,
            };
            next += size as u64;
            appended
        })
        .collect()
}

/// Commits one append without batching it with others: one event as a plain publish, several as
/// a one-member atomic batch (or, before 2.12, as a chain of checked publishes).
///
/// A send without an answer is repeated with the same `Nats-Msg-Id`s (the server deduplicates
/// within its window); a sequence conflict or duplicate-id refusal is checked against what the
/// subject really holds, because it may be our own earlier, unacknowledged write.
#[tracing::instrument(name = "append_alone", skip_all, fields(subject = %member.subject, events = member.len(), expected = %member.expected))]
pub(crate) async fn commit_alone(
    shared: &Shared,
    member: &PreparedAppend,
) -> Result<Appended, AppendError> {
    if member.len() > 1 && !shared.capabilities.atomic_batch_publish {
        return commit_chained(shared, member).await;
    }
    shared.stats.record_alone();
    let settings = &shared.settings;
    let mut pause = settings.retry_backoff;
    let mut reason = String::new();
    for attempt in 1..=settings.max_append_attempts {
        let outcome = if member.len() == 1 {
            send_plain(shared, member).await
        } else {
            let _slot = shared
                .lone_batch_slots
                .acquire()
                .await
                .expect("the batch slots are never closed");
            send_atomic_batch(shared, &[member]).await
        };
        match outcome {
            SendOutcome::Stored {
                last_seq,
                duplicate,
            } => {
                if duplicate {
                    tracing::debug!(last_seq, "the server already held this event (retry)");
                }
                return Ok(appended_ending_at(last_seq, member.len()));
            }
            SendOutcome::Refused {
                code: code @ (code::WRONG_LAST_SEQUENCE | code::BATCH_DUPLICATE_MSG_ID),
                description,
                ..
            } => return resolve_refusal(shared, member, code, &description).await,
            SendOutcome::Refused {
                status,
                code,
                description,
            } if is_transient(status, code) => {
                reason = format!("error {code}: {description}");
            }
            SendOutcome::Refused {
                code, description, ..
            } => return Err(AppendError::Rejected { code, description }),
            SendOutcome::NotSent(why) => return Err(AppendError::Invalid(why)),
            SendOutcome::Unknown(why) => reason = why,
        }
        tracing::warn!(attempt, %reason, "append outcome unknown; retrying with the same ids");
        if attempt < settings.max_append_attempts {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
    Err(AppendError::Unavailable {
        attempts: settings.max_append_attempts,
        reason,
    })
}

fn is_transient(status: u16, code: u64) -> bool {
    status == 503 || code == code::BATCH_TOO_MANY_IN_FLIGHT || code == code::BATCH_INCOMPLETE
}

/// Before 2.12 there are no atomic batches: each event is published with a check on the one
/// before, so no other writer can slip in between, but a failure part-way (server gone after
/// the first event) leaves the first events stored. Only used with servers older than 2.12.
async fn commit_chained(shared: &Shared, member: &PreparedAppend) -> Result<Appended, AppendError> {
    let mut expected = member.expected;
    let mut first_seq = None;
    let mut last_seq = 0;
    for message in &member.messages {
        let single = PreparedAppend {
            subject: member.subject.clone(),
            expected,
            messages: vec![PreparedMessage {
                event_id: message.event_id,
                headers: message.headers.clone(),
                payload: message.payload.clone(),
            }],
        };
        let appended = Box::pin(commit_alone(shared, &single)).await?;
        first_seq.get_or_insert(appended.first_seq);
        last_seq = appended.last_seq;
        expected = ExpectedVersion::At(last_seq);
    }
    Ok(Appended {
        first_seq: first_seq.unwrap_or(last_seq),
        last_seq,
    })
}

/// A sequence conflict (10071) or duplicate id (10201) is either someone else's write or our
/// own earlier one whose ack got lost (on 2.15 the server checks the sequence before the
/// duplicate window, so a retry of a stored, checked publish gets 10071, not `duplicate`).
/// Reading the subject from the leader tells them apart by event id.
async fn resolve_refusal(
    shared: &Shared,
    member: &PreparedAppend,
    code: u64,
    description: &str,
) -> Result<Appended, AppendError> {
    let unavailable = |err: crate::error::ReadError| AppendError::Unavailable {
        attempts: 1,
        reason: format!("cannot check a refused append ({description}): {err}"),
    };
    // With a check, a stored append of ours can only be the subject's next messages after the
    // expected version: read just that many. Without one it may be anywhere.
    let limit = match member.expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream | ExpectedVersion::At(_) => Some(member.len()),
    };
    let stored = crate::read::stored_ids_after(
        shared,
        &member.subject,
        member.expected.written_after(),
        limit,
    )
    .await
    .map_err(unavailable)?;
    let ours: Vec<Uuid> = member
        .messages
        .iter()
        .map(|message| message.event_id)
        .collect();
    if let Some(start) = stored.iter().position(|(_, id)| *id == Some(ours[0])) {
        let run = &stored[start..];
        let all_ours = run.len() >= ours.len()
            && run
                .iter()
                .zip(&ours)
                .all(|((_, id), ours)| *id == Some(*ours));
        if all_ours {
            tracing::info!(subject = %member.subject, "refused append was already stored by an earlier attempt");
            return Ok(Appended {
                first_seq: run[0].0,
                last_seq: run[ours.len() - 1].0,
            });
        }
        return Err(AppendError::Rejected {
            code,
            description: format!("only part of the append's events are stored: {description}"),
        });
    }
    if code == code::WRONG_LAST_SEQUENCE {
        // "wrong last sequence: N" names the subject's last sequence when the check ran.
        let named = description
            .rsplit(':')
            .next()
            .and_then(|number| number.trim().parse::<u64>().ok());
        let actual = match named {
            Some(seq) => Some(seq),
            None => crate::read::last_sequence(shared, &member.subject)
                .await
                .map_err(unavailable)?
                .or(Some(0)),
        };
        return Err(AppendError::Conflict {
            subject: member.subject.clone(),
            expected: member.expected,
            actual,
        });
    }
    Err(AppendError::Rejected {
        code,
        description: format!("an event id of this append is stored elsewhere: {description}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ack_is_split_in_send_order() {
        assert_eq!(
            distribute_batch_ack(10, &[1, 3, 2]),
            vec![
                Appended {
                    first_seq: 5,
                    last_seq: 5
                },
                Appended {
                    first_seq: 6,
                    last_seq: 8
                },
                Appended {
                    first_seq: 9,
                    last_seq: 10
                },
            ]
        );
    }

    #[test]
    fn pub_ack_replies_are_classified() {
        assert!(matches!(
            SendOutcome::from_reply(br#"{"stream":"s","seq":4,"duplicate": true}"#, None),
            SendOutcome::Stored {
                last_seq: 4,
                duplicate: true
            }
        ));
        assert!(matches!(
            SendOutcome::from_reply(
                br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"},"stream":"s","seq":0}"#,
                None
            ),
            SendOutcome::Refused { status: 400, code: 10071, .. }
        ));
        assert!(matches!(
            SendOutcome::from_reply(br#"{"stream":"s","seq":9,"batch":"b","count":2}"#, Some(3)),
            SendOutcome::Unknown(_)
        ));
        assert!(matches!(
            SendOutcome::from_reply(b"", None),
            SendOutcome::Unknown(_)
        ));
    }
}
