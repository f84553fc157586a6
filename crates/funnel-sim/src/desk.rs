//! How the Enrollment Support Team's calls get recorded: one small interface, two paths.
//!
//! * [`DirectDesk`] posts each step with an agent token (`POST /v1/journeys/{id}/events`).
//! * [`QueueDesk`] has simulated agents work the `first_contact` queue: claim the next item,
//!   hold the lease until the planned call is due, complete it with the planned outcome. Later
//!   calls go direct: the service makes a next attempt claimable only after the study's
//!   spacing (hours of real time), longer than a compressed demo lasts.
//!
//! A journey whose first call no agent takes within the desk's patience is recorded directly
//! (counted as a queue fallback), so a short-staffed or missing queue never stalls a run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::{Request, RequestError};
use crate::driver::{JourneyCtx, Shared, call_bodies, post_steps, wall_after};
use crate::plan::CallOutcome;
use crate::stats::Stats;

/// How long an agent waits before asking again when its queues are empty.
const POLL: Duration = Duration::from_millis(150);

/// Records the team's calls. `first` marks the journey's first call, the one its
/// `first_contact` work item stands for.
pub(crate) trait AgentDesk: Send + Sync {
    fn call<'a>(
        &'a self,
        shared: &'a Shared,
        journey: &'a mut JourneyCtx,
        outcome: &'a CallOutcome,
        at: DateTime<Utc>,
        first: bool,
    ) -> BoxFuture<'a, Result<(), RequestError>>;

    /// A journey whose first call is planned has been referred.
    fn expect_first_call(&self, _journey: Uuid) {}

    /// The journey is done with the desk (performed, failed or cancelled).
    fn forget(&self, _journey: Uuid) {}
}

/// Every call posted directly, step by step, with an agent token.
#[derive(Debug, Default)]
pub(crate) struct DirectDesk;

impl AgentDesk for DirectDesk {
    fn call<'a>(
        &'a self,
        shared: &'a Shared,
        journey: &'a mut JourneyCtx,
        outcome: &'a CallOutcome,
        at: DateTime<Utc>,
        _first: bool,
    ) -> BoxFuture<'a, Result<(), RequestError>> {
        Box::pin(async move {
            let bodies = call_bodies(shared, journey.study, outcome, at);
            let token = shared.agent_token(journey.language, journey.index);
            post_steps(shared, journey, &token, bodies).await
        })
    }
}

/// What a journey hands to the agent holding its work item.
struct Offer {
    study: usize,
    outcome: CallOutcome,
    /// `OFFERED`, then `TAKEN` by the agent or `WITHDRAWN` by the journey, whichever is first.
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<Result<u64, RequestError>>,
}

const OFFERED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

/// Both ends of a journey's offer channel until each side has taken its own.
#[derive(Default)]
struct Slot {
    sender: Option<oneshot::Sender<Offer>>,
    receiver: Option<oneshot::Receiver<Offer>>,
}

/// What an agent finds for the journey of an item it claimed.
enum Waiting {
    /// The journey waits for this agent's call.
    Yes(oneshot::Receiver<Offer>),
    /// The journey is past its first call (or another agent holds it): the item is stale.
    Past,
    /// Not a journey of this run's, or not registered yet.
    Unknown,
}

/// Simulated agents working the `first_contact` queue.
pub(crate) struct QueueDesk {
    slots: Mutex<HashMap<Uuid, Slot>>,
    /// How long a due first call waits for an agent before it is recorded directly.
    patience: Duration,
    /// Cleared when the service has no queue routes (404): every call goes direct.
    available: AtomicBool,
}

impl QueueDesk {
    pub(crate) fn new(patience: Duration) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            patience,
            available: AtomicBool::new(true),
        }
    }

    fn with_slots<T>(&self, f: impl FnOnce(&mut HashMap<Uuid, Slot>) -> T) -> T {
        // A poisoned lock only means another task panicked mid-update of plain channel ends.
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut slots)
    }

    fn take_sender(&self, journey: Uuid) -> Option<oneshot::Sender<Offer>> {
        self.with_slots(|slots| slots.get_mut(&journey).and_then(|slot| slot.sender.take()))
    }

    fn take_receiver(&self, journey: Uuid) -> Waiting {
        self.with_slots(|slots| match slots.get_mut(&journey) {
            Some(slot) => slot.receiver.take().map_or(Waiting::Past, Waiting::Yes),
            None => Waiting::Unknown,
        })
    }

    /// The first call is recorded: the slot stays, empty, until the journey ends, so that an
    /// agent claiming its stale item knows to leave it.
    fn first_call_done(&self, journey: Uuid) {
        self.with_slots(|slots| {
            if let Some(slot) = slots.get_mut(&journey) {
                *slot = Slot::default();
            }
        });
    }

    async fn offer(
        &self,
        shared: &Shared,
        journey: &mut JourneyCtx,
        outcome: &CallOutcome,
        at: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let Some(sender) = self.take_sender(journey.id) else {
            return DirectDesk.call(shared, journey, outcome, at, true).await;
        };
        let state = Arc::new(AtomicU8::new(OFFERED));
        let (reply, answer) = oneshot::channel();
        let offer = Offer {
            study: journey.study,
            outcome: outcome.clone(),
            state: state.clone(),
            reply,
        };
        if sender.send(offer).is_err() {
            // The agent that held the receiver gave the item up.
            self.first_call_done(journey.id);
            Stats::add(&shared.api.stats.queue_fallbacks, 1);
            return DirectDesk.call(shared, journey, outcome, at, true).await;
        }
        let mut answer = answer;
        let result = tokio::select! {
            result = &mut answer => result,
            () = tokio::time::sleep(self.patience) => {
                if state
                    .compare_exchange(OFFERED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.first_call_done(journey.id);
                    Stats::add(&shared.api.stats.queue_fallbacks, 1);
                    return DirectDesk.call(shared, journey, outcome, at, true).await;
                }
                // An agent is completing it right now: its answer is coming.
                answer.await
            }
        };
        self.first_call_done(journey.id);
        match result {
            Ok(Ok(version)) => {
                journey.version = version;
                journey.last_at = journey.last_at.max(Utc::now());
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            // The agent went away without answering (the run is stopping).
            Err(_) => Err(RequestError::Cancelled),
        }
    }
}

impl AgentDesk for QueueDesk {
    fn call<'a>(
        &'a self,
        shared: &'a Shared,
        journey: &'a mut JourneyCtx,
        outcome: &'a CallOutcome,
        at: DateTime<Utc>,
        first: bool,
    ) -> BoxFuture<'a, Result<(), RequestError>> {
        Box::pin(async move {
            if first && self.available.load(Ordering::Relaxed) {
                self.offer(shared, journey, outcome, at).await
            } else {
                self.first_call_done(journey.id);
                DirectDesk.call(shared, journey, outcome, at, first).await
            }
        })
    }

    fn expect_first_call(&self, journey: Uuid) {
        let (sender, receiver) = oneshot::channel();
        self.with_slots(|slots| {
            slots.insert(
                journey,
                Slot {
                    sender: Some(sender),
                    receiver: Some(receiver),
                },
            );
        });
    }

    fn forget(&self, journey: Uuid) {
        self.with_slots(|slots| slots.remove(&journey));
    }
}

/// One simulated agent: claims `first_contact` items of its studies and languages until the
/// run stops, and releases whatever it holds when it does.
pub(crate) async fn agent_worker(
    shared: Arc<Shared>,
    desk: Arc<QueueDesk>,
    token: String,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() && desk.available.load(Ordering::Relaxed) {
        let claimed = shared
            .api
            .send(&Request {
                method: Method::POST,
                path: "/v1/queues/claim?kind=first_contact",
                token: &token,
                body: None,
                if_match: None,
                what: "claim",
            })
            .await;
        let item = match claimed {
            Ok(answer) if answer.status == StatusCode::OK => answer.body,
            Ok(_) => {
                pause(&cancel, POLL).await;
                continue;
            }
            Err(RequestError::Cancelled) => return,
            Err(RequestError::Status { status, .. })
                if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED =>
            {
                if desk.available.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "the service has no work-queue routes; agents record calls directly"
                    );
                }
                return;
            }
            Err(error) => {
                shared.api.stats.failure(format!("claim: {error}"));
                pause(&cancel, POLL * 4).await;
                continue;
            }
        };
        let Some((item_id, journey_id)) = ids(&item) else {
            shared
                .api
                .stats
                .failure("claim: answer without item or journey id".to_owned());
            pause(&cancel, POLL).await;
            continue;
        };
        let lease_end = item
            .pointer("/lease/expires_at")
            .and_then(Value::as_str)
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.to_utc());
        match desk.take_receiver(journey_id) {
            Waiting::Yes(receiver) => {
                work(&shared, &token, item_id, lease_end, receiver, &cancel).await;
            }
            // The read model still shows an item the journey has moved past. Keeping the
            // lease (it lapses, or the item goes when the read model catches up) lets the agent
            // claim the next item at once instead of this one again.
            Waiting::Past => {}
            Waiting::Unknown => {
                release(&shared, &token, item_id).await;
                pause(&cancel, POLL).await;
            }
        }
    }
}

/// Holds the item until the journey offers its call, then completes it (or releases it).
async fn work(
    shared: &Shared,
    token: &str,
    item_id: Uuid,
    mut lease_end: Option<DateTime<Utc>>,
    receiver: oneshot::Receiver<Offer>,
    cancel: &CancellationToken,
) {
    let mut receiver = receiver;
    loop {
        // Extend a little before the lease ends; a lease of unknown length every 30 s.
        let until_extend = lease_end
            .and_then(|end| (end - Utc::now()).to_std().ok())
            .map_or(Duration::from_secs(30), |left| {
                left.saturating_sub(left / 3)
            });
        tokio::select! {
            () = cancel.cancelled() => {
                release(shared, token, item_id).await;
                return;
            }
            offer = &mut receiver => {
                let Ok(offer) = offer else {
                    release(shared, token, item_id).await;
                    return;
                };
                if offer
                    .state
                    .compare_exchange(OFFERED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    release(shared, token, item_id).await;
                    return;
                }
                let result = complete(shared, token, item_id, &offer).await;
                if result.is_err() {
                    release(shared, token, item_id).await;
                }
                // The journey may have stopped waiting (the run is stopping): nothing to tell.
                let _ = offer.reply.send(result);
                return;
            }
            () = tokio::time::sleep(until_extend) => {
                let path = format!("/v1/queues/items/{item_id}/extend");
                let extended = shared.api.send(&Request {
                    method: Method::POST,
                    path: &path,
                    token,
                    body: None,
                    if_match: None,
                    what: "extend lease",
                }).await;
                match extended {
                    Ok(answer) => {
                        lease_end = answer
                            .body
                            .pointer("/lease/expires_at")
                            .and_then(Value::as_str)
                            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                            .map(|time| time.to_utc());
                    }
                    // The lease is gone: dropping the receiver sends the journey direct.
                    Err(_) => return,
                }
            }
        }
    }
}

async fn complete(
    shared: &Shared,
    token: &str,
    item_id: Uuid,
    offer: &Offer,
) -> Result<u64, RequestError> {
    let body = completion_body(shared, offer.study, &offer.outcome);
    let path = format!("/v1/queues/items/{item_id}/complete");
    let answer = shared
        .api
        .send(&Request {
            method: Method::POST,
            path: &path,
            token,
            body: Some(&body),
            if_match: None,
            what: "complete work item",
        })
        .await;
    match answer {
        Ok(answer) => {
            let events = answer
                .body
                .get("events")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            Stats::add(&shared.api.stats.queue_completions, 1);
            Stats::add(&shared.api.stats.steps, u64::try_from(events).unwrap_or(0));
            answer
                .body
                .get("version")
                .and_then(Value::as_u64)
                .ok_or_else(|| RequestError::Transport("completion without a version".to_owned()))
        }
        Err(error) => {
            if !matches!(error, RequestError::Cancelled) {
                shared
                    .api
                    .stats
                    .failure(format!("complete work item: {error}"));
            }
            Err(error)
        }
    }
}

/// The queue's outcome for a planned call. The appointment time is counted from now: the
/// service stamps the completion with its own clock.
fn completion_body(shared: &Shared, study: usize, outcome: &CallOutcome) -> Value {
    match outcome {
        CallOutcome::NoAnswer { .. } => json!({"outcome": "no_answer", "channel": "phone"}),
        CallOutcome::WrongNumber => json!({"outcome": "wrong_number", "channel": "phone"}),
        CallOutcome::Reached {
            prescreen,
            refer_to,
            appointment_in,
        } => {
            let mut body = json!({"outcome": "reached", "channel": "phone"});
            if let Some(passed) = prescreen {
                body["prescreen"] = json!({"passed": passed, "reasons": []});
            }
            if let Some(site) = refer_to.and_then(|site| shared.site_id(study, site)) {
                body["refer_to_site"] = json!({"site_id": site});
            }
            if let Some(wait) = appointment_in {
                // A floor of a few seconds: the service's clock stamps the booking a moment
                // after ours, and an appointment may not lie before its booking.
                let at = wall_after(shared, Utc::now(), *wait)
                    .max(Utc::now() + chrono::TimeDelta::seconds(5));
                body["appointment"] = json!({"appointment_at": at});
            }
            body
        }
    }
}

fn ids(item: &Value) -> Option<(Uuid, Uuid)> {
    let id = |name: &str| {
        item.get(name)
            .and_then(Value::as_str)
            .and_then(|text| Uuid::parse_str(text).ok())
    };
    Some((id("item_id")?, id("journey_id")?))
}

async fn release(shared: &Shared, token: &str, item_id: Uuid) {
    let path = format!("/v1/queues/items/{item_id}/release");
    let released = shared
        .api
        .send(&Request {
            method: Method::POST,
            path: &path,
            token,
            body: None,
            if_match: None,
            what: "release",
        })
        .await;
    // 409/404: the lease lapsed or the item is gone already; either way it is not ours.
    if let Err(RequestError::Transport(reason)) = released {
        tracing::debug!(%item_id, %reason, "could not release a work item");
    }
}

async fn pause(cancel: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}
