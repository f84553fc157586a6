//! Reading: one aggregate by direct gets (no consumer per read), the leader's view for
//! resolving refused appends, and subscriptions by an ordered consumer.

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::error::ReadError;
use crate::event::{RecordedEvent, stored_event_id};
use crate::log::Shared;

/// Messages per batched direct get (ADR-31, server 2.11+): one request returns up to this many
/// of a subject's messages, so an aggregate of typical size reads in one round trip.
const DIRECT_GET_BATCH: u64 = 256;

/// The subject's events after stream sequence `after_seq`, in order. Direct gets may be served
/// by any replica (`allow_direct`), so on R3 a just-written event can be missing for a moment;
/// an append against a stale version then fails with a conflict, never corrupts.
#[tracing::instrument(skip(shared), fields(events))]
pub(crate) async fn read_subject(
    shared: &Shared,
    subject: &str,
    after_seq: u64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let mut events = Vec::new();
    let mut next = after_seq + 1;
    loop {
        let (messages, more) = direct_get_batch(shared, subject, next).await?;
        for message in messages {
            next = message.sequence + 1;
            events.push(RecordedEvent::from_stored(
                &shared.settings.subject_prefix,
                message.subject.as_str(),
                message.sequence,
                &message.headers,
                message.payload,
            )?);
        }
        if !more {
            break;
        }
    }
    tracing::Span::current().record("events", events.len());
    Ok(events)
}

/// One batched direct get from `from_seq`: the messages, and whether more are pending.
async fn direct_get_batch(
    shared: &Shared,
    subject: &str,
    from_seq: u64,
) -> Result<(Vec<StreamMessage>, bool), ReadError> {
    let failed = |reason: String| ReadError::Request {
        subject: subject.to_owned(),
        reason,
    };
    let client = &shared.client;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| failed(err.to_string()))?;
    let request = serde_json::json!({
        "seq": from_seq,
        "next_by_subj": subject,
        "batch": DIRECT_GET_BATCH,
    });
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{}", shared.settings.stream_name),
            inbox,
            request.to_string().into(),
        )
        .await
        .map_err(|err| failed(err.to_string()))?;
    let mut messages = Vec::new();
    loop {
        let reply = tokio::time::timeout(shared.settings.ack_timeout, replies.next())
            .await
            .map_err(|_| failed("direct get timed out".to_owned()))?
            .ok_or_else(|| failed("the connection closed".to_owned()))?;
        match reply.status.map(|status| status.as_u16()) {
            None | Some(200) => {
                let message = StreamMessage::try_from(reply)
                    .map_err(|err| failed(format!("bad direct get reply: {err}")))?;
                messages.push(message);
            }
            // End of batch: `Nats-Num-Pending` says how many matching messages are left.
            Some(204) => {
                let pending = reply
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get("Nats-Num-Pending"))
                    .and_then(|value| value.as_str().parse::<u64>().ok())
                    .unwrap_or(0);
                let more = pending > 0 && !messages.is_empty();
                return Ok((messages, more));
            }
            Some(404) => return Ok((messages, false)),
            Some(status) => {
                return Err(failed(format!(
                    "direct get refused: {status} {}",
                    reply.description.unwrap_or_default()
                )));
            }
        }
    }
}

/// `(stream sequence, event id)` of the subject's messages after `after_seq` (at most `limit`),
/// read from the stream leader (not a replica): deciding whether a refused append is already
/// stored must see every acknowledged write.
#[tracing::instrument(skip(shared), fields(found))]
pub(crate) async fn stored_ids_after(
    shared: &Shared,
    subject: &str,
    after_seq: u64,
    limit: Option<usize>,
) -> Result<Vec<(u64, Option<Uuid>)>, ReadError> {
    let mut stored = Vec::new();
    let mut next = after_seq + 1;
    while limit.is_none_or(|limit| stored.len() < limit) {
        let result = shared
            .stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subject)
            .send()
            .await;
        match result {
            Ok(message) => {
                stored.push((message.sequence, stored_event_id(&message.headers)));
                next = message.sequence + 1;
            }
            Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                return Ok(stored);
            }
            Err(err) => {
                return Err(ReadError::Request {
                    subject: subject.to_owned(),
                    reason: err.to_string(),
                });
            }
        }
    }
    tracing::Span::current().record("found", stored.len());
    Ok(stored)
}

/// The stream sequence of the subject's last message, from the leader.
#[tracing::instrument(skip(shared))]
pub(crate) async fn last_sequence(
    shared: &Shared,
    subject: &str,
) -> Result<Option<u64>, ReadError> {
    match shared.stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message.sequence)),
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(err) => Err(ReadError::Request {
            subject: subject.to_owned(),
            reason: err.to_string(),
        }),
    }
}

/// Every event of the stream from `from_seq` on (0 or 1: from the start), in stream order, by an
/// ephemeral ordered pull consumer (it recreates itself after gaps or reconnects).
#[tracing::instrument(skip(shared))]
pub(crate) async fn subscribe(
    shared: &Shared,
    from_seq: u64,
) -> Result<impl Stream<Item = Result<RecordedEvent, ReadError>> + Send + 'static, ReadError> {
    let deliver_policy = if from_seq <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: from_seq,
        }
    };
    let consumer = shared
        .stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{}.>", shared.settings.subject_prefix),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|err| ReadError::Subscription(err.to_string()))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|err| ReadError::Subscription(err.to_string()))?;
    let prefix = shared.settings.subject_prefix.clone();
    Ok(messages.map(move |message| {
        let message = message.map_err(|err| ReadError::Subscription(err.to_string()))?;
        let seq = message
            .info()
            .map_err(|err| ReadError::Subscription(format!("no stream sequence: {err}")))?
            .stream_sequence;
        let empty = HeaderMap::new();
        let headers = message.headers.as_ref().unwrap_or(&empty);
        RecordedEvent::from_stored(
            &prefix,
            message.subject.as_str(),
            seq,
            headers,
            message.payload.clone(),
        )
    }))
}
