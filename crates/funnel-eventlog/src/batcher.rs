//! Group commit: a background task gathers concurrent appends into ADR-50 atomic batches.
//!
//! With `sync_interval: always` every stored message costs an fsync unless it shares it with
//! others; an atomic batch is made durable at once. The task takes a free in-flight slot, then
//! takes whatever appends are queued (no linger by default): while all slots are busy, appends
//! pile up and the next batch is larger, so batches grow exactly when load does.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::append::{
    Appended, PreparedAppend, SendOutcome, commit_alone, distribute_batch_ack, send_atomic_batch,
};
use crate::error::AppendError;
use crate::log::Shared;

/// How many batches' worth of appends may wait because their subject was already in the batch
/// being formed, before the task stops taking more from the queue (a hot subject must not make
/// the deferred list grow without bound).
const DEFERRED_BATCHES: usize = 4;

/// Counters of the append paths, to see whether batches really form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Atomic batches of two or more appends that the server committed.
    pub batches_committed: u64,
    /// Appends committed as members of those batches.
    pub appends_in_batches: u64,
    /// Messages (events) committed in those batches.
    pub messages_in_batches: u64,
    /// Batches the server refused (or left unanswered), whose members were then sent one by one.
    pub batches_refused: u64,
    /// Appends sent on their own: group commit off or unsupported, a batch of one, or the
    /// fallback for a refused batch.
    pub appends_committed_alone: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    batches_committed: AtomicU64,
    appends_in_batches: AtomicU64,
    messages_in_batches: AtomicU64,
    batches_refused: AtomicU64,
    appends_committed_alone: AtomicU64,
}

impl StatsCounters {
    pub(crate) fn record_alone(&self) {
        self.appends_committed_alone.fetch_add(1, Ordering::Relaxed);
    }

    fn record_batch(&self, appends: usize, messages: usize) {
        self.batches_committed.fetch_add(1, Ordering::Relaxed);
        self.appends_in_batches
            .fetch_add(appends as u64, Ordering::Relaxed);
        self.messages_in_batches
            .fetch_add(messages as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> GroupCommitStats {
        GroupCommitStats {
            batches_committed: self.batches_committed.load(Ordering::Relaxed),
            appends_in_batches: self.appends_in_batches.load(Ordering::Relaxed),
            messages_in_batches: self.messages_in_batches.load(Ordering::Relaxed),
            batches_refused: self.batches_refused.load(Ordering::Relaxed),
            appends_committed_alone: self.appends_committed_alone.load(Ordering::Relaxed),
        }
    }
}

struct QueuedAppend {
    append: PreparedAppend,
    /// Dropped by a caller that stopped waiting; the append still goes out (like a lost ack,
    /// its outcome is then unknown to the caller, and a retry with the same ids is safe).
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// The handle appends go through when group commit is on.
#[derive(Debug)]
pub(crate) struct GroupCommitter {
    queue: mpsc::Sender<QueuedAppend>,
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for QueuedAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedAppend")
            .field("subject", &self.append.subject)
            .field("events", &self.append.len())
            .finish_non_exhaustive()
    }
}

impl GroupCommitter {
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        let settings = &shared.settings.group_commit;
        let capacity = settings.max_batch_messages * settings.max_batches_in_flight * 2;
        let (queue, receiver) = mpsc::channel(capacity);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shared, receiver, shutdown.clone()));
        Self {
            queue,
            shutdown,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues an append and waits for its outcome. Dropping the future is safe at any point.
    pub(crate) async fn submit(&self, append: PreparedAppend) -> Result<Appended, AppendError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(QueuedAppend { append, reply })
            .await
            .map_err(|_| AppendError::ShutDown)?;
        outcome.await.unwrap_or_else(|_| {
            Err(AppendError::Unavailable {
                attempts: 0,
                reason: "the group commit task stopped".to_owned(),
            })
        })
    }

    /// Stops taking appends, commits everything already queued and waits for all batches in
    /// flight. Appends after this fail with [`AppendError::ShutDown`].
    pub(crate) async fn shutdown(&self) {
        self.shutdown.cancel();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(err) = task.await
        {
            tracing::error!(%err, "the group commit task failed");
        }
    }
}

/// The appends of one batch: distinct subjects, bounded size.
struct Batch {
    members: Vec<QueuedAppend>,
    subjects: HashSet<String>,
    messages: usize,
    max_messages: usize,
}

impl Batch {
    fn new(max_messages: usize) -> Self {
        Self {
            members: Vec::new(),
            subjects: HashSet::new(),
            messages: 0,
            max_messages,
        }
    }

    fn is_full(&self) -> bool {
        self.messages >= self.max_messages
    }

    /// Takes the append unless its subject is already in the batch (the server can check a
    /// subject's sequence only if no earlier message of the batch writes it) or it would
    /// overflow the batch. An append larger than the limit goes alone into an empty batch.
    fn try_push(&mut self, item: QueuedAppend) -> Result<(), QueuedAppend> {
        let fits =
            self.members.is_empty() || self.messages + item.append.len() <= self.max_messages;
        if !fits || self.subjects.contains(&item.append.subject) {
            return Err(item);
        }
        self.subjects.insert(item.append.subject.clone());
        self.messages += item.append.len();
        self.members.push(item);
        Ok(())
    }
}

async fn run(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<QueuedAppend>,
    shutdown: CancellationToken,
) {
    let settings = shared.settings.group_commit.clone();
    let slots = Arc::new(Semaphore::new(settings.max_batches_in_flight));
    let deferred_limit = settings.max_batch_messages * DEFERRED_BATCHES;
    let mut deferred: VecDeque<QueuedAppend> = VecDeque::new();
    let mut closing = false;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let first = match deferred.pop_front() {
            Some(item) => item,
            None => {
                let received = if closing {
                    queue.recv().await
                } else {
                    tokio::select! {
                        item = queue.recv() => item,
                        () = shutdown.cancelled() => {
                            // Refuse new appends but keep the buffered ones to commit them.
                            queue.close();
                            closing = true;
                            queue.recv().await
                        }
                    }
                };
                match received {
                    Some(item) => item,
                    None => break,
                }
            }
        };
        let mut batch = Batch::new(settings.max_batch_messages);
        // Infallible: the batch is empty.
        let _ = batch.try_push(first);
        // Earlier deferred appends first, so the appends of one subject keep their order.
        let mut passed_over = VecDeque::new();
        while let Some(item) = deferred.pop_front() {
            if batch.is_full() {
                passed_over.push_back(item);
            } else if let Err(item) = batch.try_push(item) {
                passed_over.push_back(item);
            }
        }
        deferred = passed_over;
        let linger_until =
            (!settings.linger.is_zero()).then(|| tokio::time::Instant::now() + settings.linger);
        while !batch.is_full() && deferred.len() < deferred_limit {
            let item = match queue.try_recv() {
                Ok(item) => item,
                Err(TryRecvError::Empty) => match linger_until {
                    Some(deadline) => match tokio::time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(item)) => item,
                        Ok(None) | Err(_) => break,
                    },
                    None => break,
                },
                Err(TryRecvError::Disconnected) => break,
            };
            if let Err(item) = batch.try_push(item) {
                deferred.push_back(item);
            }
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            commit_batch(&shared, batch).await;
            drop(slot);
        });
    }
    // Every queued append is in a batch now; wait until the batches in flight are done.
    let in_flight = u32::try_from(settings.max_batches_in_flight).unwrap_or(u32::MAX);
    let _all_done = slots.acquire_many(in_flight).await;
}

#[tracing::instrument(name = "group_commit", skip_all, fields(appends = batch.members.len(), messages = batch.messages))]
async fn commit_batch(shared: &Shared, batch: Batch) {
    let mut members = batch.members;
    if members.len() == 1 {
        let member = members.remove(0);
        let outcome = commit_alone(shared, &member.append).await;
        let _ = member.reply.send(outcome);
        return;
    }
    let appends: Vec<&PreparedAppend> = members.iter().map(|member| &member.append).collect();
    let outcome = send_atomic_batch(shared, &appends).await;
    if let SendOutcome::Stored { last_seq, .. } = outcome {
        let sizes: Vec<usize> = appends.iter().map(|append| append.len()).collect();
        shared.stats.record_batch(sizes.len(), batch.messages);
        for (member, appended) in members
            .into_iter()
            .zip(distribute_batch_ack(last_seq, &sizes))
        {
            let _ = member.reply.send(Ok(appended));
        }
        return;
    }
    // All-or-nothing: one stale check (10071) or stored id (10201) refuses everything, and an
    // unanswered commit may or may not have been stored. Each member on its own gets its own,
    // correct outcome (a stored one is recognised by its ids).
    shared.stats.batches_refused.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        ?outcome,
        "batch not committed; sending its appends one by one"
    );
    futures::future::join_all(members.into_iter().map(|member| async move {
        let outcome = commit_alone(shared, &member.append).await;
        let _ = member.reply.send(outcome);
    }))
    .await;
}
